#include "progress.h"

#include "fap.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *tool_name = "faprompt";
static int bar_on;       /* stderr is a terminal */
static int bar_shown;    /* a bar is on screen, no newline yet */
static int log_verbose;
static double bar_start, bar_last;

double tool_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void progress_clear(void) {
  if (bar_shown) {
    fputs("\r\033[K", stderr);
    fflush(stderr);
    bar_shown = 0;
  }
}

static void log_sink(fap_log_level level, const char *message, void *user_data) {
  (void)user_data;
  if (level > FAP_LOG_WARNING && !(log_verbose && level == FAP_LOG_INFO))
    return;
  progress_clear();
  const char *what = level == FAP_LOG_ERROR ? "error" : level == FAP_LOG_WARNING ? "warning" : "info";
  fprintf(stderr, "faprompt %s: %s\n", what, message);
}

void tool_init(const char *name, int verbose) {
  tool_name = name;
  log_verbose = verbose;
  bar_on = isatty(STDERR_FILENO) && !getenv("FAP_NO_PROGRESS");
  bar_start = tool_now();
  fap_set_log_callback(log_sink, NULL);
}

void tool_error(const char *fmt, ...) {
  progress_clear();
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", tool_name);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

void progress_show(int done, int total, const char *label) {
  if (!bar_on || total <= 0)
    return;
  double now = tool_now();
  if (done == 0)
    bar_start = now;
  if (bar_shown && done < total && now - bar_last < 0.1)
    return;
  bar_last = now;
  enum { WIDTH = 24 };
  char bar[WIDTH + 1];
  int fill = (int)((long long)WIDTH * done / total);
  for (int i = 0; i < WIDTH; i++)
    bar[i] = i < fill ? '#' : '.';
  bar[WIDTH] = 0;
  char eta[32] = "";
  if (done > 0 && done < total) {
    int s = (int)((now - bar_start) / done * (total - done) + 0.5);
    snprintf(eta, sizeof eta, "  eta %d:%02d", s / 60, s % 60);
  }
  /* Keep the line shorter than a narrow terminal: clip the label. */
  fprintf(stderr, "\r\033[K[%s] %d/%d %3d%%%s  %.40s", bar, done, total,
          (int)(100LL * done / total), eta, label ? label : "");
  fflush(stderr);
  bar_shown = 1;
}

int tool_usage_error(const char *name, GOptionContext *octx, const char *usage) {
  gchar *help = g_option_context_get_help(octx, TRUE, NULL);
  fprintf(stderr, "%s: %s\n\n%s", name, usage, help);
  g_free(help);
  return 2;
}
