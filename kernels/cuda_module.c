/* libfaprompt-cuda.so's entry point (core/backend_module.h): the backend's
 * constructor and device probe (backend_cuda.c) for the core that loads it;
 * in the module build it hands the host's log routing to cuda_log.c, so a
 * message reaches the sink of the detector or thread in charge. */
#include "backend_cuda.h"
#include "backend_module.h"

#ifndef FAP_CUDA_BUILTIN
#include "cuda_log.h"
#define FAP_MODULE_EXPORT __attribute__((visibility("default")))
#else
#define FAP_MODULE_EXPORT
#endif

static const fap_backend_module cuda_module = {
    .abi = FAP_BACKEND_MODULE_ABI,
    .version = FAP_VERSION,
    .shared_size = FAP_BACKEND_SHARED_SIZE,
    .device_count = fap_cuda_device_count,
    .backend_new = fap_cuda_backend_new,
};

FAP_MODULE_EXPORT const fap_backend_module *fap_backend_module_entry(const fap_backend_host *h) {
#ifndef FAP_CUDA_BUILTIN
  fap_cuda_log_host(h);
#endif
  return &cuda_module;
}
