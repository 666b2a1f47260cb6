/* What every backend shares, outside any one of them (backend.h): the
 * table's constructors live with their backends (backend_cpu.c, the CUDA
 * module through backend_loader.c); releasing one goes through its table. */
#include "backend.h"

#include <stddef.h>

void fap_backend_free(fap_backend *backend) {
  if (backend && backend->ops) {
    backend->ops->destroy(backend->ctx);
    backend->ops = NULL;
    backend->ctx = NULL;
  }
}
