/* Stand-in for the CUDA backend in builds without CUDA: the constructor exists
 * in every build (capability check, not #ifdef, at call sites). */
#include "backend.h"
#include "log.h"

fap_status fap_backend_cuda_new(int device_id, fap_precision precision, fap_backend *out) {
  (void)out;
  (void)precision;
  return fap_fail(FAP_ERR_UNSUPPORTED,
                  "CUDA backend requested (device %d) but this faprompt was built without CUDA; "
                  "rebuild with -Dcuda=enabled or use the CPU backend",
                  device_id);
}

int fap_backend_cuda_available(void) { return 0; }
