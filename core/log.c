#include "log.h"

#include <stdarg.h>
#include <stdio.h>

/* process-wide sink; a thread's own; the detector whose call this thread is in */
static fap_log_fn log_fn;
static void *log_user_data;
static __thread fap_log_sink thread_sink;
static __thread fap_log_sink scope_sink;

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

void fap_log_message(fap_log_level level, const char *message) {
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

const char *fap_version(void) { return FAP_VERSION; }

const char *fap_status_string(fap_status status) {
  switch (status) {
  case FAP_OK: return "ok";
  case FAP_ERR_INVALID_ARGUMENT: return "invalid argument";
  case FAP_ERR_IO: return "i/o error";
  case FAP_ERR_FORMAT: return "not a valid safetensors file";
  case FAP_ERR_SCHEMA: return "not a valid faprompt model";
  case FAP_ERR_UNSUPPORTED: return "unsupported";
  case FAP_ERR_NO_MEMORY: return "out of memory";
  case FAP_ERR_BACKEND: return "backend failure";
  }
  return "unknown status";
}

const char *fap_dtype_name(fap_dtype dtype) {
  switch (dtype) {
  case FAP_DTYPE_F32: return "F32";
  case FAP_DTYPE_F16: return "F16";
  case FAP_DTYPE_BF16: return "BF16";
  case FAP_DTYPE_I32: return "I32";
  case FAP_DTYPE_I64: return "I64";
  case FAP_DTYPE_U8: return "U8";
  }
  return "?";
}

size_t fap_dtype_size(fap_dtype dtype) {
  switch (dtype) {
  case FAP_DTYPE_F32: case FAP_DTYPE_I32: return 4;
  case FAP_DTYPE_F16: case FAP_DTYPE_BF16: return 2;
  case FAP_DTYPE_I64: return 8;
  case FAP_DTYPE_U8: return 1;
  }
  return 0;
}
