#include "log.h"

#include <stdarg.h>
#include <stdio.h>

/* process-wide sink; a thread's own; the detector whose call this thread is in */
static fap_log_fn log_fn;
static void *log_user_data;
static __thread fap_log_sink thread_sink;
static __thread fap_log_sink scope_sink;
/* fap_last_error: the calling thread's last error-level message, whatever
 * sink it went to ("" after a public call that succeeded) */
static __thread char last_error[1024];

void fap_set_log_callback(fap_log_fn fn, void *user_data) {
  log_fn = fn;
  log_user_data = user_data;
}

void fap_set_thread_log_callback(fap_log_fn fn, void *user_data) {
  thread_sink.fn = fn;
  thread_sink.user_data = user_data;
}

void fap_log_scope_enter(const fap_log_sink *sink, fap_log_sink *saved) {
  *saved = scope_sink;
  if (sink && sink->fn)
    scope_sink = *sink;
}

void fap_log_scope_leave(const fap_log_sink *saved) { scope_sink = *saved; }

const char *fap_last_error(void) { return last_error; }

void fap_api_enter(void) { last_error[0] = '\0'; }

fap_status fap_api_return(fap_status status) {
  if (status == FAP_OK)
    last_error[0] = '\0'; /* an error logged and recovered from inside is no failure */
  else if (!last_error[0]) /* a failure nothing named: at least the status */
    snprintf(last_error, sizeof last_error, "%s", fap_status_string(status));
  return status;
}

void fap_log_message(fap_log_level level, const char *message) {
  /* every error counts, a module's included: the last one of a failing call
   * is its outermost context (callers add what they were doing around the
   * cause), which is what it reports */
  if (level == FAP_LOG_ERROR)
    snprintf(last_error, sizeof last_error, "%s", message ? message : "");
  if (scope_sink.fn) {
    scope_sink.fn(level, message, scope_sink.user_data);
  } else if (thread_sink.fn) {
    thread_sink.fn(level, message, thread_sink.user_data);
  } else if (log_fn) {
    log_fn(level, message, log_user_data);
  } else if (level <= FAP_LOG_WARNING) {
    fprintf(stderr, "faprompt %s: %s\n", level == FAP_LOG_ERROR ? "error" : "warning", message);
  }
}

static void log_v(fap_log_level level, const char *fmt, va_list ap) {
  char message[1024];
  vsnprintf(message, sizeof message, fmt, ap);
  fap_log_message(level, message);
}

void fap_log(fap_log_level level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  log_v(level, fmt, ap);
  va_end(ap);
}

fap_status fap_fail(fap_status status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  log_v(FAP_LOG_ERROR, fmt, ap);
  va_end(ap);
  return status;
}
