/* Shared by the faprompt-* tools: error messages that name the tool, a
 * progress bar on stderr when it is a terminal, and a core log sink that
 * wipes a half-drawn bar before it writes. */
#ifndef FAP_TOOLS_PROGRESS_H
#define FAP_TOOLS_PROGRESS_H

#include <glib.h>

/* Call once at start: remembers the tool name for messages, decides whether
 * to draw the bar (stderr is a terminal and FAP_NO_PROGRESS is unset) and
 * installs the log sink (errors and warnings; info too when verbose). */
void tool_init(const char *name, int verbose);
/* Prints "NAME: usage" and the option help to stderr; returns 2, the exit
 * status for a usage error. */
int tool_usage_error(const char *name, GOptionContext *octx, const char *usage);

/* "name: message\n" on stderr, after clearing the bar. */
void tool_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

/* Seconds since an arbitrary start (monotonic). */
double tool_now(void);

/* [#####.....] 12/200 6%  eta 1:52  label   -- redrawn at most 10 times a
 * second; no-op when not on a terminal. */
void progress_show(int done, int total, const char *label);
/* Removes the bar (if drawn) so that the next line starts clean. */
void progress_clear(void);

#endif
