/* The module build's logging (cuda_log.c): the backend's files call the
 * core's fap_log / fap_fail (core/log.h); in libfaprompt-cuda.so those are
 * defined here and forward each formatted message to the core that loaded
 * the module, whose sink routing (and fap_last_error) is per thread there.
 * The builds with the backend built in link the core's own. */
#ifndef FAP_CUDA_LOG_H
#define FAP_CUDA_LOG_H

#include "backend_module.h"

/* Where messages go from now on (the module's entry point sets it). */
void fap_cuda_log_host(const fap_backend_host *host);

#endif
