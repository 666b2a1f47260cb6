/* fap_log and fap_fail of the module build (cuda_log.h): formatted here,
 * routed by the host. */
#include "cuda_log.h"

#include "log.h"

#include <stdarg.h>
#include <stdio.h>

static const fap_backend_host *host;

void fap_cuda_log_host(const fap_backend_host *h) { host = h; }

static void log_v(fap_log_level level, const char *fmt, va_list ap) {
  char message[1024];
  vsnprintf(message, sizeof message, fmt, ap);
  if (host)
    host->log_message(level, message);
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
