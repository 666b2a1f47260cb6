/* The compute backend interface (ggml-style): a table of operations plus a
 * private context. The detector (detector.c, vision.c, text.c) is written once
 * against this table and never dereferences a backend pointer: all float* /
 * int32_t* arguments below live in the backend's address space (host memory
 * for the CPU backend, device memory or handles for CUDA). Operations may run
 * asynchronously; errors are sticky and reported by synchronize() (in a
 * frame scope: by frames_end). A frame is described once, as these op calls
 * in a frame scope (below); a backend computes them as they come (CPU) or
 * records them and replays the recording (CUDA).
 *
 * Matrices are row-major with explicit leading dimensions (elements).
 * Linear weights are out x in as in PyTorch: y = x W^T + b.
 *
 * Weights: import_weights returns a handle the detector passes back as the
 * weight arguments of linear (w, b), matmul (p), layernorm (w, b) and as the
 * source of copy2d. The detector may offset a handle by whole elements
 * (w + i, as into the rows of in_proj), never dereferences it, and passes it
 * nowhere else. The CPU backend returns the host f32 weights themselves; the
 * CUDA backend returns the host pointer too, as a key into its table of
 * device copies (f16 / bf16 matrices, f32 vectors), made on first use.
 */
#ifndef FAP_BACKEND_H
#define FAP_BACKEND_H

#include "fap.h"

/* What a linear layer's weight is, for a backend's reduced-precision policy
 * (the detector says what each layer is, the backend decides what its
 * precision does to it; unmarked weights stay in f32 on the CPU). */
typedef enum {
  FAP_WEIGHT_READS_LN = 1,  /* reads a LayerNorm output: the vision qkv and MLP c_fc */
  FAP_WEIGHT_RESIDUAL = 2,  /* adds into the residual stream: vision out_proj, c_proj */
} fap_weight_role;

/* Where a backend reads the values of weights it takes into a form of its
 * own (weight_role): the host memory behind their handle may not hold them.
 * read copies the f32 values of [w, w + count) (inside one weight) into dst;
 * valid while the backend lives. */
typedef struct {
  fap_status (*read)(void *user, const float *w, size_t count, float *dst);
  void *user;
} fap_weight_reader;

/* What a backend can do beyond the ops every backend has: the detector asks
 * these, never which backend it holds. */
typedef enum {
  FAP_CAP_DEVICE_FRAMES = 1 << 1, /* preprocess takes frames in FAP_MEMORY_CUDA */
  FAP_CAP_DEVICE_DRAW = 1 << 2,   /* frames_draw draws into any frame on the device */
  FAP_CAP_BATCH = 1 << 3,         /* a frame scope holds up to B frames (else one) */
} fap_backend_caps;

/* What a frame buffer holds (alloc_frames). */
typedef enum {
  FAP_BUFFER_F32 = 0,        /* f32 values */
  /* values of the backend's activation type (CPU: f32; CUDA: the precision
   * type, f16 / bf16). The detector addresses it in elements, as a float*,
   * like every backend pointer, and passes it only where an op says an
   * activation may go: the output of layernorm, im2col and linear (then the
   * result is rounded to the type), the input of linear, attention*,
   * quickgelu. The CUDA backend's handle is an address that is no memory. */
  FAP_BUFFER_ACTIVATION = 1,
  FAP_BUFFER_OUTPUT = 2,     /* f32, read on the host after frames_end (frames_output) */
} fap_buffer_kind;

typedef struct fap_backend_ops {
  const char *name;
  unsigned caps; /* fap_backend_caps */
  void (*destroy)(void *ctx);

  /* memory: called at detector creation only, never per frame */
  void *(*alloc)(void *ctx, size_t bytes);
  void (*release)(void *ctx, void *ptr);
  /* A frame buffer of total_bytes (>= B frame_bytes), released by release:
   * frame f's part starts f frame_bytes after frame 0's. Inside a frame
   * scope of `count` frames, an op whose pointer arguments lie in frame
   * buffers computes every frame f, each such argument moved f frame
   * strides on; other pointers (weights, buffers from alloc) are the same
   * for every frame. Outside a scope an op computes once, as if count = 1,
   * and may use all total_bytes. */
  void *(*alloc_frames)(void *ctx, size_t frame_bytes, size_t total_bytes, fap_buffer_kind kind);
  /* Makes host f32 weights usable by the backend (CPU: returns host as is). */
  const float *(*import_weights)(void *ctx, const float *host, size_t count);
  /* Optional: the role of the count weights at w (an import_weights handle).
   * Returns 1 when the backend takes them into a form of its own (bf16,
   * int8), their values read once through reader, and never reads the
   * memory at w: the detector then leaves the model's f32 copy unmade
   * (model.h). 0: the backend reads them at w like any weight. */
  int (*weight_role)(void *ctx, const float *w, size_t count, fap_weight_role role,
                     const fap_weight_reader *reader);
  fap_status (*upload)(void *ctx, void *dst, const void *host, size_t bytes);
  fap_status (*download)(void *ctx, void *host, const void *src, size_t bytes);
  fap_status (*synchronize)(void *ctx);

  /* One frame, outside a scope (frames go through preprocess_frames): its
   * crop (fap_frame.crop) -> normalised channel-major [3, S, S] (resize +
   * CLIP mean/std). The CPU
   * backend takes the packed formats (its preprocess_frames converts YUV
   * frames to RGB first, core/pixel.c); the CUDA backend takes every format.
   * *bytes_up (may be NULL): the frame's pixel bytes copied to the backend. */
  fap_status (*preprocess)(void *ctx, float *out, const fap_frame *frame, int size,
                           size_t *bytes_up);
  /* [3, S, S] -> patch rows [G*G, 3*P*P], column order (channel, y, x) like conv1 */
  void (*im2col)(void *ctx, float *out, const float *image, int size, int patch);

  /* y = x W^T + b (b may be NULL); accumulate: y += x W^T + b */
  void (*linear)(void *ctx, float *y, int ldy, const float *x, int ldx, const float *w,
                 const float *b, int rows, int in, int out, int accumulate);
  /* y = x P with P [in, out] */
  void (*matmul)(void *ctx, float *y, int ldy, const float *x, int ldx, const float *p, int rows,
                 int in, int out);
  void (*layernorm)(void *ctx, float *y, int ldy, const float *x, int ldx, const float *w,
                    const float *b, int rows, int dim);
  void (*quickgelu)(void *ctx, float *x, size_t n); /* x * sigmoid(1.702 x) */
  void (*relu)(void *ctx, float *x, size_t n);
  void (*add)(void *ctx, float *y, const float *x, size_t n); /* y += x */
  /* y[r] += row for r < rows */
  void (*add_row)(void *ctx, float *y, int ldy, const float *row, int rows, int dim);
  /* rows x row_bytes block copy between strided buffers (byte strides) */
  void (*copy2d)(void *ctx, void *dst, size_t ld_dst, const void *src, size_t ld_src, size_t rows,
                 size_t row_bytes);

  /* Multi-head attention, heads of dim hd side by side in each row:
   * out[i] = softmax(q[i] k^T / sqrt(hd)) v per head. q_pos0 < 0: no mask;
   * otherwise query i sits at position q_pos0 + i and sees keys j <= q_pos0 + i. */
  void (*attention)(void *ctx, float *out, int ldo, const float *q, int ldq, const float *k,
                    int ldk, const float *v, int ldv, int nq, int nk, int heads, int hd,
                    int q_pos0);

  /* scoring */
  void (*l2norm_rows)(void *ctx, float *y, int ldy, const float *x, int ldx, int rows, int dim);
  /* out[j] = softmax([x_j . t0, x_j . t1] * inv_tau)[1] */
  void (*two_way_prob)(void *ctx, float *out, const float *x, int ldx, int rows, int dim,
                       const float *t0, const float *t1, float inv_tau);
  void (*reduce_max)(void *ctx, float *out, const float *x, int n);
  /* indices of the k largest x, largest first (ties: lower index first) */
  void (*topk)(void *ctx, int32_t *idx, const float *x, int n, int k);
  void (*gather_rows)(void *ctx, float *dst, const float *src, int lds, const int32_t *idx, int n,
                      int dim);
  void (*mean_rows)(void *ctx, float *y, const float *x, int rows, int dim);
  /* out[S, S] = (up(a)[S, S] + up(b)[S, S]) / 2, bilinear, align_corners = false */
  void (*upsample_mean)(void *ctx, float *out, const float *a, const float *b, int grid, int size);
  /* separable Gaussian, half-sample symmetric borders; kernel [2r+1]; tmp [S, S] */
  void (*gaussian_blur)(void *ctx, float *out, const float *in, float *tmp, int size,
                        const float *kernel, int radius);

  /* attention_dual: a dual vision layer's two attentions over rows of
   * [q | k | v] (row stride ldqkv, heads of hd side by side):
   *   out_x[i] = softmax(q_i k^T / sqrt(hd)) v   for i < nq_std
   *   out_y[i] = softmax(v_i v^T / sqrt(hd)) v   for every row (V-V) */
  void (*attention_dual)(void *ctx, float *out_x, float *out_y, int ldo, const float *qkv,
                         int ldqkv, int rows, int nq_std, int heads, int hd);
  /* attention_cached: causal attention of `prompts` prompts whose keys and
   * values of positions < pos0 are in a cache. Prompt p's queries are rows
   * p rows .. (p+1) rows - 1 of [q | k | v] (row stride ldqkv), at positions
   * pos0 .. pos0 + rows - 1, and see keys j <= their position: j < pos0 from
   * the cache (keys at cache + p cache_stride + j dim, values values_offset
   * further, dim = heads hd), the rest from this pass's rows. store: this
   * pass's keys and values are written to the cache at positions pos0 ..
   * (the creation passes that build the cache); without store a backend may
   * leave them or use those rows as scratch (the CPU does). */
  void (*attention_cached)(void *ctx, float *out, int ldo, const float *qkv, int ldqkv,
                           int prompts, int rows, int pos0, float *cache, size_t cache_stride,
                           size_t values_offset, int store, int heads, int hd);
  /* scalars[3] = FAPrompt's score of scalars[0..2] = max1, max2, q (score.h) */
  void (*faprompt_score)(void *ctx, float *scalars);

  /* ---- the frame scope: how a frame's description (the op calls above,
   * written once in core/) reaches a backend. The detector calls
   *
   *   frames_begin(frames, count, S, blend)       the inputs of this run
   *   for (pass = 0; frames_pass(pass, &describe), describe; pass++)
   *     the description of the frame: preprocess_frames, ops, frames_mark,
   *     blend_frames when blending
   *   frames_end(results)                          run / wait, timings
   *   frames_output(buffer)                        the results on the host
   *
   * A backend that records the description (CUDA: into a graph, replayed
   * while the frames' geometry, count and blend stay) asks for it only when
   * it has none; the CPU asks once per run and computes each op as called.
   * frames are checked; count <= B with FAP_CAP_BATCH, else 1. */
  fap_status (*frames_begin)(void *ctx, const fap_frame *frames, int count, int size,
                             const fap_blend *blend);
  fap_status (*frames_pass)(void *ctx, int pass, int *describe);
  /* the scope's frames' crops -> image [3, S, S] per frame (resize + CLIP
   * mean/std); any format, any memory the backend takes
   * (FAP_CAP_DEVICE_FRAMES). Frames of a scope may share pixels (crops of
   * one frame) */
  void (*preprocess_frames)(void *ctx, float *image, int size);
  /* draws maps [S, S] per frame into the scope's frames' crops (blend of
   * frames_begin), frame after frame: where crops of one frame overlap, the
   * later is drawn over the earlier */
  void (*blend_frames)(void *ctx, const float *maps, int size);
  /* the end of a stage of fap_stage in the description (for stage_ms) */
  void (*frames_mark)(void *ctx, int stage);
  /* fills results[f].stage_ms and frame_bytes_* (the rest is the detector's) */
  fap_status (*frames_end)(void *ctx, fap_result *results);
  /* host address of frame 0's part of a FAP_BUFFER_OUTPUT buffer after
   * frames_end (frames follow at its frame stride); valid until the next run */
  const void *(*frames_output)(void *ctx, const void *buffer);

  /* Optional: draws a host map into a frame in device memory (checked). */
  fap_status (*frames_draw)(void *ctx, const fap_frame *frame, const float *map, int map_size,
                            const fap_blend *blend, size_t *pixel_bytes);
} fap_backend_ops;

/* Most frames one batch call takes (fap_detector_options.batch). */
#define FAP_MAX_BATCH 256

typedef struct fap_backend {
  const fap_backend_ops *ops;
  void *ctx;
} fap_backend;

/* Constructors exist in every build; CUDA returns FAP_ERR_UNSUPPORTED when not built. */
fap_status fap_backend_cpu_new(int threads, int reference, fap_backend *out);
/* The same with a precision for the linear layers: bf16 / int8 where the CPU
 * runs them faster than f32, else f32 (said at INFO); *runs (may be NULL)
 * gets the one used. */
fap_status fap_backend_cpu_new_precision(int threads, int reference, fap_precision precision,
                                         fap_backend *out, fap_precision *runs);
fap_status fap_backend_cuda_new(int device_id, fap_precision precision, fap_backend *out);
int fap_backend_cuda_available(void);
void fap_backend_free(fap_backend *backend);

#endif
