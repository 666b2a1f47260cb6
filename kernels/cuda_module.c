/* libfaprompt-cuda.so's entry point (core/backend_module.h): the backend's
 * constructor and device probe, and, in the module build, the log functions
 * the backend's files call, forwarded to the core that loaded it (so a
 * message reaches the sink of the detector or thread in charge). */
#include "backend_cuda.h"
#include "backend_module.h"
#include "log.h"

#include <glib.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#ifndef FAP_CUDA_BUILTIN
static const fap_backend_host *host;

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
#define FAP_MODULE_EXPORT __attribute__((visibility("default")))
#else
#define FAP_MODULE_EXPORT
#endif

/* The runtime answers cudaGetDeviceCount once per process (the driver does
 * not appear later), so the answer and its reason are kept. */
int fap_cuda_device_count(const char **why) {
  static gsize once;
  static int count;
  static char reason[640];
  if (g_once_init_enter(&once)) {
    count = fap_rt_device_count();
    if (count <= 0) {
      const char *e = fap_rt_error();
      int no_driver = strstr(e, "Driver") || strstr(e, "driver") || strstr(e, "StubLibrary");
      snprintf(reason, sizeof reason,
               no_driver ? "the CUDA module loaded, but the NVIDIA driver (libcuda.so.1) is "
                           "missing or too old (%s): install or update the NVIDIA driver"
                         : "the CUDA module loaded, but no CUDA device answers (%s)",
               e && *e ? e : "no device");
    }
    g_once_init_leave(&once, 1);
  }
  if (why)
    *why = count > 0 ? NULL : reason;
  return count;
}

static const fap_backend_module cuda_module = {
    .abi = FAP_BACKEND_MODULE_ABI,
    .version = FAP_VERSION,
    .shared_size = FAP_BACKEND_SHARED_SIZE,
    .device_count = fap_cuda_device_count,
    .backend_new = fap_cuda_backend_new,
};

FAP_MODULE_EXPORT const fap_backend_module *fap_backend_module_entry(const fap_backend_host *h) {
#ifndef FAP_CUDA_BUILTIN
  host = h;
#endif
  return &cuda_module;
}
