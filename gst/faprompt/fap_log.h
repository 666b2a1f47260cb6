/* The faprompt element's debug category ("faprompt"), shared by the element
 * and its helpers, and the core's messages in it: every core call an element
 * makes (its detector's sink, the thread's sink around loads and drawing)
 * logs to the element's debug log, never to the application's process-wide
 * sink. What a failed call says (its element error, its message) is not
 * taken from the log: it is fap_last_error () of the thread that made the
 * call (fap_core_failure). */
#ifndef FAP_LOG_H
#define FAP_LOG_H

#include <gst/gst.h>
#include <fap.h>

GST_DEBUG_CATEGORY_EXTERN (fap_debug);

/* Registers the category (once; the element's class_init). */
void fap_debug_init (void);

/* A fap_log_fn: @object (a GstObject, or NULL) is what the message is
 * logged against, as "core: <message>". */
void fap_core_log (fap_log_level level, const char *message, void *object);

/* The calling thread's sink for core calls outside a detector: the debug
 * log of @object; NULL puts the thread back on the process-wide sink. */
void fap_core_log_to (GstObject * object);

/* "<status>: <message>" for the core call of this thread that just failed
 * with @st (fap_last_error: each thread reports its own, never another's);
 * g_free. Read before the thread's next core call. */
gchar *fap_core_failure (fap_status st);

#endif
