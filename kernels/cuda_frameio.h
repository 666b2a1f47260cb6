/* Frames on their way to the CUDA backend (cuda_frameio.c): the staging
 * and device buffers of one call's frames, their bicubic tables (of each
 * frame's crop) and the descriptors the kernels read. Crops of one host
 * frame in a call share its staging: its pixels cross once each way. A layer below the backend (backend_cuda.c,
 * cuda_frames.c use it), written against fap_kernels.h only: it knows
 * frames and device memory, not the backend's state. */
#ifndef FAP_CUDA_FRAMEIO_H
#define FAP_CUDA_FRAMEIO_H

#include "fap.h"
#include "fap_kernels.h"

/* One frame's place in the io buffers and its geometry (the key that decides
 * whether the layout, tables and captured graph still hold). */
typedef struct {
  fap_frame geom; /* data pointers ignored */
  size_t offset[3], bytes[3];
  int shared; /* the frame whose staging this one uses (crops of one host frame), or its own index */
} cuda_frame_slot;

/* Frames uploaded for one call: pinned staging and device buffers with one
 * layout [results | descriptors | frame 0 planes | frame 1 planes | ...],
 * bicubic tables and resize scratch. The descriptors (where each frame's
 * planes are on the device) travel with every upload, because a frame
 * already in device memory (FAP_MEMORY_CUDA) brings new pointers each call
 * and no planes: its pixels never cross. Rebuilt only when the frame
 * geometry changes, grown only when it grows. */
typedef struct {
  int count, size;
  size_t results_bytes; /* leading part of io: defined by the owner */
  size_t frames_start;  /* frame planes from here (results_bytes rounded up) */
  size_t frames_bytes;
  size_t io_capacity, io_capacity_host;
  void *io_dev, *io_host; /* same layout; host is pinned */
  void *tables;           /* bicubic tables of every frame */
  size_t tables_capacity;
  void *tmp;              /* resize scratch */
  size_t tmp_capacity;
  cuda_frame_slot *slots; /* [capacity] */
  fap_k_frame *desc_host; /* [count], inside io_host at frames_start */
  fap_k_frame *desc_dev;  /* the same place in io_dev */
  int capacity;
  int max_width, max_height; /* of the frames' crops */
} cuda_frameio;

/* Grows a device buffer to at least `bytes`, its contents dropped (0 or a
 * FAP_RT_* code; *capacity 0 on failure). */
int fap_cuda_grow(void **buf, size_t *capacity, size_t bytes);

/* prepare lays io out for frames (only when the geometry changed; returns 1
 * then, 0 when unchanged, -1 on failure, *fail saying what); stage
 * copies host frames' planes into the pinned staging and points the
 * descriptors at every frame's planes on the device; unstage copies drawn
 * host frames back. Both fill bytes[i] (may be NULL) with the pixel bytes
 * frame i moves. */
typedef struct {
  int rc;           /* FAP_RT_* */
  const char *what; /* what failed */
} cuda_failure;
int fap_cuda_frameio_prepare(cuda_frameio *io, const fap_frame *frames, int count, int size,
                             size_t results_bytes, fap_stream stream, cuda_failure *fail);
void fap_cuda_frameio_stage(cuda_frameio *io, const fap_frame *frames, int count, size_t *bytes);
void fap_cuda_frameio_unstage(cuda_frameio *io, const fap_frame *frames, int count,
                              size_t *bytes);
void fap_cuda_frameio_free(cuda_frameio *io);

#endif
