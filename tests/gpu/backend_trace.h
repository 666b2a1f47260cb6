/* A backend that records the op sequence a detector runs (names and shapes,
 * never data or addresses) and forwards every call to the backend it wraps:
 * what tests compare between backends running one description of a frame.
 * Test code only: a detector gets it through fap_detector_new_wrapped
 * (core/detector_internal.h). */
#ifndef FAP_BACKEND_TRACE_H
#define FAP_BACKEND_TRACE_H

#include "backend.h"

#include <glib.h>

/* A fap_backend_wrap_fn: replaces *b with a wrapper that owns the old
 * backend and appends one line per op call to log (a GString owned by the
 * caller, alive as long as the backend). */
fap_status fap_backend_trace_wrap(fap_backend *b, void *log);

#endif
