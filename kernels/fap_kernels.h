/* The C side of kernels/: a thin runtime (device memory, stream, events,
 * graphs, matrix products) and one launcher per kernel. The CUDA backend
 * (kernels/backend_cuda.c, kernels/cuda_frames.c) is written against this header
 * alone, so it builds the same against the device implementation
 * (rt_cuda.c + *.cu through nvcc) and against the host emulator (emu/), and
 * needs no CUDA header itself.
 *
 * Every pointer argument named as device memory lives on the device. Every
 * function returns 0 on success, FAP_RT_ENOMEM when memory ran out, another
 * non-zero code on any other failure; fap_rt_error() then describes it.
 * Launchers enqueue on the stream and return at once; a failure inside a
 * kernel shows at the next synchronisation.
 *
 * Shape letters as in core/fap.h; "batch" is B frames, laid out one after
 * another with the stated strides (elements). */
#ifndef FAP_KERNELS_H
#define FAP_KERNELS_H

#include "pixel_math.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { FAP_RT_OK = 0, FAP_RT_ERROR = 1, FAP_RT_ENOMEM = 2, FAP_RT_UNSUPPORTED = 3 };

typedef enum { FAP_K_F32 = 0, FAP_K_F16, FAP_K_BF16 } fap_kdtype;
size_t fap_kdtype_size(fap_kdtype t);

typedef void *fap_stream;
typedef void *fap_event;
typedef void *fap_graph;

/* ---- runtime ---------------------------------------------------------------------- */

const char *fap_rt_error(void); /* message of this thread's last failure */
int fap_rt_device_count(void);  /* 0 when there is no driver or device */
int fap_rt_is_emulated(void);

typedef struct {
  char name[256];
  int major, minor, sm_count;
  size_t total_memory, shared_per_block_optin;
} fap_rt_device_info;

int fap_rt_open(int device, fap_rt_device_info *info); /* selects the device for this thread */
/* makes `device` current in the calling thread (a detector may be created in
 * one thread and run in another, as a GStreamer element is) */
int fap_rt_use(int device);
int fap_k_setup(void); /* kernel attributes; after fap_rt_open, before any capture */
int fap_rt_launch_status(const char *kernel); /* the last launch's error, if any */
int fap_rt_mem_info(size_t *free_bytes, size_t *total_bytes);
int fap_rt_malloc(void **ptr, size_t bytes);
void fap_rt_free(void *ptr);
int fap_rt_host_alloc(void **ptr, size_t bytes); /* pinned */
void fap_rt_host_free(void *ptr);
int fap_rt_stream_new(fap_stream *stream);
void fap_rt_stream_free(fap_stream stream);
int fap_rt_stream_sync(fap_stream stream);
int fap_rt_h2d(void *dst, const void *src, size_t bytes, fap_stream stream);
int fap_rt_d2h(void *dst, const void *src, size_t bytes, fap_stream stream);
int fap_rt_d2d(void *dst, const void *src, size_t bytes, fap_stream stream);
int fap_rt_memset(void *dst, int value, size_t bytes, fap_stream stream);
int fap_rt_copy2d(void *dst, size_t dst_pitch, const void *src, size_t src_pitch,
                  size_t row_bytes, size_t rows, fap_stream stream); /* device to device */
int fap_rt_event_new(fap_event *event);
void fap_rt_event_free(fap_event event);
int fap_rt_event_record(fap_event event, fap_stream stream);
int fap_rt_event_ms(fap_event start, fap_event end, float *ms);
/* Stream capture into a graph; between begin and end nothing executes. */
int fap_rt_capture_begin(fap_stream stream);
int fap_rt_capture_end(fap_stream stream, fap_graph *graph);
int fap_rt_graph_launch(fap_graph graph, fap_stream stream);
void fap_rt_graph_free(fap_graph graph);

/* ---- matrix products (cuBLASLt) ----------------------------------------------------- */

typedef struct fap_blas fap_blas;
int fap_rt_blas_new(fap_blas **blas, fap_stream stream, size_t workspace_bytes);
void fap_rt_blas_free(fap_blas *blas);

/* y = x W^T + bias (w_in_out = 0, W [out, ldw >= in]) or y = x P + bias
 * (w_in_out = 1, P [in, ldw >= out]); accumulate: y += that. x and w are
 * both `ab` (F16 or BF16 on the tensor cores; F32: plain f32, no TF32),
 * accumulation f32; y is `yt` (F32, or ab when not accumulating); bias (or
 * NULL) has y's type. Row-major throughout. */
typedef struct {
  int rows, in, out;
  const void *x;
  int ldx;
  const void *w;
  int ldw, w_in_out;
  fap_kdtype ab;
  const void *bias;
  void *y;
  int ldy;
  fap_kdtype yt;
  int accumulate;
} fap_gemm_args;
int fap_rt_gemm(fap_blas *blas, const fap_gemm_args *args);

/* ---- elementwise ------------------------------------------------------------------------ */

/* dst[r, c] = src[r, c] converted (any of the three types both ways) */
int fap_k_convert(fap_stream s, void *dst, fap_kdtype dt, size_t ldd, const void *src,
                  fap_kdtype st, size_t lds, size_t rows, size_t cols);
int fap_k_quickgelu(fap_stream s, void *x, fap_kdtype t, size_t n); /* x sigmoid(1.702 x) */
int fap_k_relu(fap_stream s, float *x, size_t n);
int fap_k_add(fap_stream s, float *y, const float *x, size_t n);
/* y[f, r] += row[f] for rows r < rows of frame f (frames y_stride, row_stride apart) */
int fap_k_add_row(fap_stream s, float *y, int ldy, size_t y_stride, const float *row,
                  size_t row_stride, int rows, int dim, int batch);
/* [B, 3, S, S] -> patch rows [B G G, ld] in t, columns (channel, y, x); ld >=
 * 3 P P, the columns past 3 P P are zeroed */
int fap_k_im2col(fap_stream s, void *out, fap_kdtype t, int ld, const float *image, int size,
                 int patch, int batch);

/* ---- normalisation -------------------------------------------------------------------------- */

/* y = LN(x) (eps 1e-5, biased variance) rows of f32 x, y in yt */
int fap_k_layernorm(fap_stream s, void *y, fap_kdtype yt, size_t ldy, const float *x, size_t ldx,
                    const float *w, const float *b, int rows, int dim);
int fap_k_l2norm(fap_stream s, float *y, size_t ldy, const float *x, size_t ldx, int rows,
                 int dim);

/* ---- attention --------------------------------------------------------------------------------- */

/* Fused flash attention over rows of [q | k | v] (16-bit `t`, heads of hd
 * side by side, row stride ld, frames `batch_stride` elements apart), never
 * forming the score matrix in memory:
 *   out_x[i] = softmax(q_i k^T / sqrt(hd)) v   for rows i < nq_std
 *   out_y[i] = softmax(v_i v^T / sqrt(hd)) v   for all rows (dual only)
 * sharing each key/value tile between the two paths. hd in {16, 32, 64, 128}
 * (else FAP_RT_UNSUPPORTED: use fap_k_attention). */
typedef struct {
  fap_kdtype t;
  const void *q, *k, *v;
  size_t ld, batch_stride;
  void *out_x, *out_y; /* out_y NULL: no V-V path */
  size_t ldo, out_batch_stride;
  int rows, nq_std, heads, hd, batch;
} fap_flash_args;
int fap_k_flash_attention(fap_stream s, const fap_flash_args *a);

/* General attention, one warp per query row and head (any hd <= 256):
 * out[g, i] = softmax(q[g, i] k[g]^T / sqrt(hd)) v[g] for groups g; keys j <
 * n_pre come from the f32 prefix (pre_k / pre_v of group g % pre_groups),
 * the rest from k / v rows j - n_pre. q_pos0 >= 0: causal, query i sits at
 * position q_pos0 + i and sees keys j <= q_pos0 + i. */
typedef struct {
  void *out;
  fap_kdtype ot;
  size_t ldo, out_group_stride;
  const void *q, *k, *v;
  fap_kdtype qkv_t;
  size_t ldq, ldkv, q_group_stride, kv_group_stride;
  const float *pre_k, *pre_v;
  size_t ld_pre, pre_group_stride;
  int n_pre, pre_groups;
  int nq, nk, heads, hd, q_pos0, groups;
} fap_attn_args;
int fap_k_attention(fap_stream s, const fap_attn_args *a);

/* ---- scoring ---------------------------------------------------------------------------- */

/* out[f, j] = softmax([x_fj . t0_f, x_fj . t1_f] * inv_tau)[1] */
int fap_k_two_way(fap_stream s, float *out, size_t out_stride, const float *x, size_t ldx,
                  size_t x_stride, int rows, int dim, const float *t0, size_t t0_stride,
                  const float *t1, size_t t1_stride, float inv_tau, int batch);
int fap_k_reduce_max(fap_stream s, float *out, size_t out_stride, const float *x, size_t x_stride,
                     int n, int batch);
/* idx [B, k]: the k largest of each x row, largest first, ties to the lower index */
int fap_k_topk(fap_stream s, int32_t *idx, const float *x, size_t x_stride, int n, int k,
               int batch);
/* dst [B, n, dim] = rows idx[f] of src (frame f at src + f src_stride, rows lds apart) */
int fap_k_gather_rows(fap_stream s, float *dst, const float *src, size_t lds, size_t src_stride,
                      const int32_t *idx, int n, int dim, int batch);
/* y [B, dim] = mean over the rows of x [B, rows, dim] */
int fap_k_mean_rows(fap_stream s, float *y, const float *x, int rows, int dim, int batch);
/* y = x W^T + b (accumulate: y += that) with f32 x as it is and W [out, in] in
 * wt, one warp per output over every row: for few rows (the prior MLP, the
 * creation passes of the text encoder) */
int fap_k_linear_rows(fap_stream s, float *y, size_t ldy, const float *x, size_t ldx,
                      const void *w, fap_kdtype wt, const float *b, int rows, int in, int out,
                      int accumulate);
/* scalars [B, 4] = max1, max2, q, score = 0.5 (q + (2 max1 + max2) / 3) */
int fap_k_score(fap_stream s, float *scalars, int batch);
/* out [B, S, S] = (up(a) + up(b)) / 2 from a, b [B, G, G] */
int fap_k_upsample_mean(fap_stream s, float *out, const float *a, const float *b, int grid,
                        int size, int batch);
/* separable Gaussian, half-sample symmetric borders, [B, S, S], tmp as large */
int fap_k_gaussian(fap_stream s, float *out, const float *in, float *tmp, int size,
                   const float *kernel, int radius, int batch);

/* ---- frames ------------------------------------------------------------------------------------- */

/* One frame on the device: its pixels (px.crop: the part read and drawn),
 * the bicubic tables (core/resample.h layout) from the crop's width and
 * height to S, and its [crop height, S, 3] scratch. */
typedef struct {
  fap_pixels px;
  const int32_t *tx_first, *tx_count, *ty_first, *ty_count;
  const float *tx_weights, *ty_weights;
  int tx_taps, ty_taps;
  float *tmp;
} fap_k_frame;

/* image [B, 3, S, S] = CLIP-normalised bicubic resize of the crop of
 * frames[f] (device array); max_height = the tallest crop */
int fap_k_preprocess(fap_stream s, float *image, int size, const fap_k_frame *frames,
                     int max_height, int batch);
/* draws maps [B, S, S] into the frames' crops, frame after frame; params
 * (device) = fap_blend_params; max_width, max_height: the largest crop */
int fap_k_blend(fap_stream s, const fap_k_frame *frames, const float *maps, int size,
                const float *params, int max_width, int max_height, int batch);

#ifdef __cplusplus
}
#endif
#endif
