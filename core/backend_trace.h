/* A backend that records the op sequence a detector runs (names and shapes,
 * never data or addresses) and forwards every call to the backend it wraps:
 * what tests compare between backends running one description of a frame. */
#ifndef FAP_BACKEND_TRACE_H
#define FAP_BACKEND_TRACE_H

#include "backend.h"

#include <glib.h>

/* Replaces *b with a wrapper that owns the old backend and appends one line
 * per op call to log (owned by the caller, alive as long as the backend). */
fap_status fap_backend_trace_wrap(fap_backend *b, GString *log);

/* Test hook: the next detector this thread creates wraps its backend with
 * fap_backend_trace_wrap(log) (NULL: none). Consumed by that creation. */
void fap_detector_trace_next(GString *log);
/* detector.c, right after opening its backend: applies a pending hook. */
fap_status fap_detector_trace_take(fap_backend *b);

#endif
