/* The contract between the core and a backend built as a module loaded at run
 * time (kernels/ -> libfaprompt-cuda.so), in the spirit of ggml's loadable
 * backends: the core links no CUDA library, so a machine without the CUDA
 * runtime still loads the core, the plugin and the tools and runs on the CPU.
 *
 * The module is built from the same tree as the core and shares the op
 * table (backend.h) and the model's configuration, so the two must come
 * from one build: the loader refuses a module whose ABI, version or shared
 * layout differs. The module logs through the host's sink routing (the
 * calling thread's log scope lives in the core). */
#ifndef FAP_BACKEND_MODULE_H
#define FAP_BACKEND_MODULE_H

#include "backend.h"
#include "model.h"

#define FAP_BACKEND_MODULE_ABI 5 /* 5: weight_role returns, with a reader; 4: fap_frame.crop; 3: frame buffers and the frame scope */
#define FAP_BACKEND_MODULE_ENTRY "fap_backend_module_entry"
#define FAP_CUDA_MODULE_FILE "libfaprompt-cuda.so"

#define FAP_BACKEND_SHARED_SIZE                                                                    \
  (sizeof(fap_backend_ops) + sizeof(fap_result) + sizeof(fap_config))

typedef struct {
  void (*log_message)(fap_log_level level, const char *message);
} fap_backend_host;

typedef struct {
  int abi;               /* FAP_BACKEND_MODULE_ABI */
  const char *version;   /* FAP_VERSION of its build */
  /* sizeof of what the core and the module share (FAP_BACKEND_SHARED_SIZE):
   * a mismatch means another build */
  size_t shared_size;
  /* Usable devices; 0 with *why saying what is missing (driver, device).
   * Cheap after the first call. */
  int (*device_count)(const char **why);
  fap_status (*backend_new)(int device_id, fap_precision precision, fap_backend *out);
} fap_backend_module;

typedef const fap_backend_module *(*fap_backend_module_entry_fn)(const fap_backend_host *host);

/* The module's entry point (exported by libfaprompt-cuda.so; linked directly
 * into the builds that carry the backend built in: tests, emulator). */
const fap_backend_module *fap_backend_module_entry(const fap_backend_host *host);

/* Where the loader found the module (NULL when built in or not loaded). */
const char *fap_backend_cuda_module_path(void);

/* > 0: usable CUDA devices. 0: *why (may be NULL) says what is missing: the
 * module, its CUDA libraries, the driver, a device. */
int fap_backend_cuda_probe(const char **why);

#endif
