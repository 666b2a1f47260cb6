/* Internal logging: every failure path logs one message naming what is wrong,
 * then returns a fap_status. Sink: the detector's (a scope around each of its
 * calls), else the thread's, else the process-wide one (fap.h). Whatever the
 * sink, the calling thread keeps its last error message for fap_last_error. */
#ifndef FAP_LOG_H
#define FAP_LOG_H

#include "fap.h"

#if defined(__GNUC__)
#define FAP_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define FAP_PRINTF(a, b)
#endif

typedef struct {
  fap_log_fn fn;
  void *user_data;
} fap_log_sink;

/* Messages of this thread go to sink (when it has a fn) until the matching
 * leave; scopes nest (saved holds the outer one). */
void fap_log_scope_enter(const fap_log_sink *sink, fap_log_sink *saved);
void fap_log_scope_leave(const fap_log_sink *saved);

/* fap_last_error's bookkeeping, in every public fallible entry point (fap.h:
 * each FAP_API function that returns a fap_status):
 *   fap_api_enter();  ...  return fap_api_return(status);
 * enter clears the thread's message; return clears it again on success (an
 * error logged and recovered from inside is no failure) and, on a failure
 * that logged nothing, stores the status's description. Internal code calls
 * the functions behind the entry points, never the entry points. */
void fap_api_enter(void);
fap_status fap_api_return(fap_status status);

/* A formatted message to the sink in charge (what fap_log does after
 * formatting; a backend module's log goes through here). */
void fap_log_message(fap_log_level level, const char *message);

void fap_log(fap_log_level level, const char *fmt, ...) FAP_PRINTF(2, 3);

/* Logs at error level and returns status, so failure paths read
 *   return fap_fail(FAP_ERR_SCHEMA, "%s: tensor %s ...", path, name); */
fap_status fap_fail(fap_status status, const char *fmt, ...) FAP_PRINTF(2, 3);

#endif
