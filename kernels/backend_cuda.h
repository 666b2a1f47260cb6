/* The CUDA backend's private state, shared by backend_cuda.c (device,
 * weights, frame buffers, the op table) and cuda_frames.c (the frame scope:
 * staging, the recorded description's graph, drawing). Both are
 * written against kernels/fap_kernels.h only, so they build unchanged
 * against the device (nvcc) and the host emulator. */
#ifndef FAP_BACKEND_CUDA_H
#define FAP_BACKEND_CUDA_H

#include "backend.h"
#include "cuda_frameio.h"
#include "fap_kernels.h"

/* One imported weight tensor: the model's host f32 copy is the handle the
 * detector holds; device copies are made on first use, in f32 (vectors:
 * biases, LayerNorm, embeddings) and/or the precision type (matrices, and
 * the biases of products that write that type). */
typedef struct {
  const float *host;
  size_t count;
  float *dev32;
  void *dev16;
} cuda_weight;

/* One frame buffer (backend.h alloc_frames). The detector's handle is the
 * device address for f32 buffers; for activations it is an address range
 * that is no memory (mapped without access), element i of which is element
 * i of `dev` in the precision type. Outputs have a pinned host mirror. */
typedef struct {
  const char *handle;
  size_t total, frame; /* bytes as the detector counts them (4 per element) */
  fap_buffer_kind kind;
  void *dev;
  void *host;
} cuda_buffer;

/* A backend pointer resolved: device address, element type, frame stride
 * in elements (0: the same for every frame) */
typedef struct {
  char *p;
  fap_kdtype t;
  size_t stride;
} cuda_arg;

struct cuda_frames; /* cuda_frames.c */

typedef struct {
  int device;
  fap_rt_device_info info;
  fap_precision precision;
  fap_kdtype t; /* F16 or BF16 */
  fap_stream stream;
  fap_blas *blas;
  fap_status status; /* first failure, sticky until synchronize() reports it */

  cuda_weight *weights; /* sorted by host address */
  size_t n_weights, cap_weights;
  size_t weight_bytes;  /* device memory held by weight copies */

  cuda_buffer *buffers; /* sorted by handle */
  size_t n_buffers, cap_buffers;
  int scope_count; /* frames of the open scope; 1 outside one */
  /* counts every change of device memory an op may use (frame buffers,
   * scratch): a recorded graph holds only while it stays */
  unsigned memory_generation;

  void *scratch; /* x converted to the precision type for linear / matmul */
  size_t scratch_bytes;
  cuda_frameio pre_io;  /* the preprocess op's frame */
  /* fap_detector_draw, which may run while a frame runs in another thread
   * (a non-blocking element draws reused results meanwhile): its own
   * buffers [blend params | map | the frame], stream and lock */
  cuda_frameio draw_io;
  fap_stream draw_stream;
  void *draw_lock; /* GMutex */

  struct cuda_frames *frames;
} cuda_ctx;

/* The backend's constructor and the process's usable device count (0: *why
 * says what is missing): the CUDA module's table (cuda_module.c). */
fap_status fap_cuda_backend_new(int device_id, fap_precision precision, fap_backend *out);
int fap_cuda_device_count(const char **why);

/* Records the first failure (logged once); later ones are dropped. */
void fap_cuda_fail(cuda_ctx *c, int rt_code, const char *what);
#define CUDA_CHECK(c, call, what)                                                                  \
  do {                                                                                             \
    int rc_ = (call);                                                                              \
    if (rc_)                                                                                       \
      fap_cuda_fail((c), rc_, (what));                                                             \
  } while (0)

/* Device copy of a weight handle (or the pointer itself when it is not one):
 * f32 or the precision type; NULL stays NULL. */
const float *fap_cuda_weight_f32(cuda_ctx *c, const float *handle);
const void *fap_cuda_weight_t(cuda_ctx *c, const float *handle);

/* What a backend pointer is (frame buffers, weights' f32 copies, or a device
 * pointer as it is); the buffer holding it, or NULL. */
cuda_arg fap_cuda_arg(cuda_ctx *c, const void *handle);
cuda_buffer *fap_cuda_buffer_of(cuda_ctx *c, const void *handle);

/* Grows a device buffer to at least `bytes` (creation time, or the eager
 * pass of a description: never under capture), fap_cuda_grow counting the
 * change of device memory a recorded graph depends on. */
int fap_cuda_reserve(cuda_ctx *c, void **buf, size_t *capacity, size_t bytes);

/* the frame scope (cuda_frames.c, backend.h) */
fap_status fap_cuda_frames_begin(void *ctx, const fap_frame *frames, int count, int size,
                                 const fap_blend *blend);
fap_status fap_cuda_frames_pass(void *ctx, int pass, int *describe);
void fap_cuda_preprocess_frames(void *ctx, float *image, int size);
void fap_cuda_blend_frames(void *ctx, const float *maps, int size);
void fap_cuda_frames_mark(void *ctx, int stage);
fap_status fap_cuda_frames_end(void *ctx, fap_result *results);
const void *fap_cuda_frames_output(void *ctx, const void *buffer);
fap_status fap_cuda_frames_draw(void *ctx, const fap_frame *frame, const float *map, int map_size,
                                const fap_blend *blend, size_t *pixel_bytes);
void fap_cuda_frames_free(cuda_ctx *c);

#endif
