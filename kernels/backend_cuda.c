/* CUDA backend: the device, its stream and cuBLASLt handle, the weights
 * (uploaded once, matrices in f16 or bf16), and the op table of backend.h
 * on device memory. The detector drives these ops at creation (static text
 * features, the prompts' key/value prefix cache); frames go through the
 * fused, batched program of cuda_frames.c instead (frames_run). The ops keep
 * f32 activations and round only the inputs of the encoders' matrix products
 * to the precision type, as the frame program does; the final projections
 * (matmul) stay in f32 in both.
 *
 * Built with kernels/ (nvcc) where CUDA is enabled, and against the host
 * emulator (kernels/emu/) for the tests that run everywhere. */
#include "backend_cuda.h"

#include "half.h"
#include "log.h"
#include "pixel.h"

#include <glib.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors ------------------------------------------------------------------- */

void fap_cuda_fail(cuda_ctx *c, int rt_code, const char *what) {
  if (c->status)
    return;
  c->status = rt_code == FAP_RT_ENOMEM ? FAP_ERR_NO_MEMORY
              : rt_code == FAP_RT_UNSUPPORTED ? FAP_ERR_UNSUPPORTED
                                              : FAP_ERR_BACKEND;
  fap_log(FAP_LOG_ERROR, "cuda backend (device %d): %s failed: %s", c->device, what,
          rt_code == FAP_RT_UNSUPPORTED && !*fap_rt_error() ? "unsupported arguments"
                                                             : fap_rt_error());
}

/* ---- weights -------------------------------------------------------------------- */

static uint16_t to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u)
    return (uint16_t)((x >> 16) | 0x40);
  x += 0x7fff + ((x >> 16) & 1);
  return (uint16_t)(x >> 16);
}

/* host f32 -> 16-bit in place of a temporary buffer */
static void narrow(fap_kdtype t, uint16_t *dst, const float *src, size_t n) {
  for (size_t i = 0; i < n; i++)
    dst[i] = t == FAP_K_BF16 ? to_bf16(src[i]) : fap_f32_to_f16(src[i]);
}

static const float *cuda_import_weights(void *ctx, const float *host, size_t count) {
  cuda_ctx *c = ctx;
  if (!host || !count)
    return host;
  if (c->n_weights == c->cap_weights) {
    size_t cap = c->cap_weights ? 2 * c->cap_weights : 256;
    cuda_weight *w = realloc(c->weights, cap * sizeof *w);
    if (!w) {
      fap_cuda_fail(c, FAP_RT_ENOMEM, "weight table");
      return NULL;
    }
    c->weights = w;
    c->cap_weights = cap;
  }
  size_t at = c->n_weights; /* kept sorted by host address */
  while (at > 0 && c->weights[at - 1].host > host)
    at--;
  if (at > 0 && c->weights[at - 1].host == host && c->weights[at - 1].count >= count)
    return host; /* imported before */
  memmove(&c->weights[at + 1], &c->weights[at], (c->n_weights - at) * sizeof *c->weights);
  c->weights[at] = (cuda_weight){host, count, NULL, NULL};
  c->n_weights++;
  return host;
}

/* the tensor holding handle p, or NULL (then p is a device pointer) */
static cuda_weight *find_weight(cuda_ctx *c, const float *p, size_t *offset) {
  size_t lo = 0, hi = c->n_weights;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (c->weights[mid].host <= p)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo == 0)
    return NULL;
  cuda_weight *w = &c->weights[lo - 1];
  if (p >= w->host + w->count)
    return NULL;
  *offset = (size_t)(p - w->host);
  return w;
}

const float *fap_cuda_weight_f32(cuda_ctx *c, const float *handle) {
  size_t off;
  cuda_weight *w = handle ? find_weight(c, handle, &off) : NULL;
  if (!w)
    return handle;
  if (!w->dev32) {
    void *p = NULL;
    int rc = fap_rt_malloc(&p, w->count * sizeof(float));
    if (!rc)
      rc = fap_rt_h2d(p, w->host, w->count * sizeof(float), c->stream);
    if (rc) {
      fap_rt_free(p);
      fap_cuda_fail(c, rc, "weight upload (f32)");
      return NULL;
    }
    w->dev32 = p;
    c->weight_bytes += w->count * sizeof(float);
  }
  return w->dev32 + off;
}

const void *fap_cuda_weight_t(cuda_ctx *c, const float *handle) {
  size_t off;
  cuda_weight *w = handle ? find_weight(c, handle, &off) : NULL;
  if (!w)
    return handle;
  if (!w->dev16) {
    uint16_t *tmp = malloc(w->count * 2);
    void *p = NULL;
    int rc = tmp ? fap_rt_malloc(&p, w->count * 2) : FAP_RT_ENOMEM;
    if (!rc) {
      narrow(c->t, tmp, w->host, w->count);
      rc = fap_rt_h2d(p, tmp, w->count * 2, c->stream);
      if (!rc)
        rc = fap_rt_stream_sync(c->stream); /* before tmp goes */
    }
    free(tmp);
    if (rc) {
      fap_rt_free(p);
      fap_cuda_fail(c, rc, "weight upload (16-bit)");
      return NULL;
    }
    w->dev16 = p;
    c->weight_bytes += w->count * 2;
  }
  return (const char *)w->dev16 + 2 * off;
}

int fap_cuda_reserve(cuda_ctx *c, void **buf, size_t *capacity, size_t bytes) {
  if (bytes <= *capacity)
    return 0;
  (void)c;
  fap_rt_free(*buf);
  *buf = NULL;
  *capacity = 0;
  int rc = fap_rt_malloc(buf, bytes);
  if (rc)
    return rc;
  *capacity = bytes;
  return 0;
}

/* ---- memory ------------------------------------------------------------------------ */

static void *cuda_alloc(void *ctx, size_t bytes) {
  cuda_ctx *c = ctx;
  void *p = NULL;
  int rc = fap_rt_malloc(&p, bytes ? bytes : 256);
  if (!rc)
    rc = fap_rt_memset(p, 0, bytes, c->stream);
  if (!rc)
    rc = fap_rt_stream_sync(c->stream);
  if (rc) { /* the caller reports it: it knows what the memory was for */
    fap_rt_free(p);
    return NULL;
  }
  return p;
}

static void cuda_release(void *ctx, void *p) {
  (void)ctx;
  fap_rt_free(p);
}

static fap_status cuda_upload(void *ctx, void *dst, const void *host, size_t bytes) {
  cuda_ctx *c = ctx;
  CUDA_CHECK(c, fap_rt_h2d(dst, host, bytes, c->stream), "upload");
  CUDA_CHECK(c, fap_rt_stream_sync(c->stream), "upload");
  return c->status;
}

static fap_status cuda_download(void *ctx, void *host, const void *src, size_t bytes) {
  cuda_ctx *c = ctx;
  CUDA_CHECK(c, fap_rt_d2h(host, src, bytes, c->stream), "download");
  CUDA_CHECK(c, fap_rt_stream_sync(c->stream), "download");
  return c->status;
}

static fap_status cuda_synchronize(void *ctx) {
  cuda_ctx *c = ctx;
  CUDA_CHECK(c, fap_rt_use(c->device), "selecting the device");
  CUDA_CHECK(c, fap_rt_stream_sync(c->stream), "synchronize");
  fap_status s = c->status;
  c->status = FAP_OK; /* reported once */
  return s;
}

/* ---- pre-processing (the op; frames use the batched program) -------------------------- */

static fap_status cuda_preprocess(void *ctx, float *out, const fap_frame *frame, int size,
                                  size_t *bytes_up) {
  cuda_ctx *c = ctx;
  cuda_frameio *io = &c->pre_io;
  cuda_failure fail;
  if (fap_cuda_frameio_prepare(io, frame, 1, size, 0, c->stream, &fail) < 0) {
    fap_cuda_fail(c, fail.rc, fail.what);
    return c->status ? c->status : FAP_ERR_BACKEND;
  }
  fap_cuda_frameio_stage(io, frame, 1, bytes_up);
  CUDA_CHECK(c, fap_rt_h2d((char *)io->io_dev + io->frames_start,
                           (char *)io->io_host + io->frames_start, io->frames_bytes, c->stream),
             "frame upload");
  CUDA_CHECK(c, fap_k_preprocess(c->stream, out, size, io->desc_dev, io->max_height, 1),
             "preprocess");
  CUDA_CHECK(c, fap_rt_stream_sync(c->stream), "preprocess"); /* the staging is reused */
  return c->status;
}

static void cuda_im2col(void *ctx, float *out, const float *image, int size, int patch) {
  cuda_ctx *c = ctx;
  CUDA_CHECK(c, fap_k_im2col(c->stream, out, FAP_K_F32, 3 * patch * patch, image, size, patch, 1),
             "im2col");
}

/* ---- matrix products ------------------------------------------------------------------- */

/* x [rows, in] f32 -> the precision type, in the scratch buffer */
static const void *narrow_input(cuda_ctx *c, const float *x, int ldx, int rows, int in) {
  size_t bytes = (size_t)rows * in * 2;
  int rc = fap_cuda_reserve(c, &c->scratch, &c->scratch_bytes, bytes);
  if (!rc)
    rc = fap_k_convert(c->stream, c->scratch, c->t, (size_t)in, x, FAP_K_F32, (size_t)ldx,
                       (size_t)rows, (size_t)in);
  if (rc) {
    fap_cuda_fail(c, rc, "linear input conversion");
    return NULL;
  }
  return c->scratch;
}

static void gemm(cuda_ctx *c, float *y, int ldy, const float *x, int ldx, const float *w,
                 const float *b, int rows, int in, int out, int accumulate) {
  if (c->status || rows < 1 || out < 1)
    return;
  const void *xt = narrow_input(c, x, ldx, rows, in);
  const void *wt = fap_cuda_weight_t(c, w);
  const float *bt = fap_cuda_weight_f32(c, b);
  if (!xt || !wt || (b && !bt))
    return;
  fap_gemm_args a = {.rows = rows, .in = in, .out = out, .x = xt, .ldx = in, .w = wt,
                     .ldw = in, .ab = c->t, .bias = bt, .y = y, .ldy = ldy, .yt = FAP_K_F32,
                     .accumulate = accumulate};
  CUDA_CHECK(c, fap_rt_gemm(c->blas, &a), "linear");
}

static void cuda_linear(void *ctx, float *y, int ldy, const float *x, int ldx, const float *w,
                        const float *b, int rows, int in, int out, int accumulate) {
  gemm(ctx, y, ldy, x, ldx, w, b, rows, in, out, accumulate);
}

/* The products with visual.proj / text_projection make the features the
 * maps compare (a tenth of a percent of the work): in f32, not rounded. */
static void cuda_matmul(void *ctx, float *y, int ldy, const float *x, int ldx, const float *p,
                        int rows, int in, int out) {
  cuda_ctx *c = ctx;
  if (c->status || rows < 1 || out < 1)
    return;
  const float *pd = fap_cuda_weight_f32(c, p);
  if (!pd)
    return;
  fap_gemm_args a = {.rows = rows, .in = in, .out = out, .x = x, .ldx = ldx, .w = pd,
                     .ldw = out, .w_in_out = 1, .ab = FAP_K_F32, .y = y, .ldy = ldy,
                     .yt = FAP_K_F32};
  CUDA_CHECK(c, fap_rt_gemm(c->blas, &a), "matmul");
}

/* ---- elementwise -------------------------------------------------------------------------- */

static void cuda_layernorm(void *ctx, float *y, int ldy, const float *x, int ldx, const float *w,
                           const float *b, int rows, int dim) {
  cuda_ctx *c = ctx;
  const float *wd = fap_cuda_weight_f32(c, w), *bd = fap_cuda_weight_f32(c, b);
  if (!wd || !bd)
    return;
  CUDA_CHECK(c, fap_k_layernorm(c->stream, y, FAP_K_F32, (size_t)ldy, x, (size_t)ldx, wd, bd, rows,
                                dim),
             "layernorm");
}

static void cuda_quickgelu(void *ctx, float *x, size_t n) {
  cuda_ctx *c = ctx;
  CUDA_CHECK(c, fap_k_quickgelu(c->stream, x, FAP_K_F32, n), "quickgelu");
}

static void cuda_relu(void *ctx, float *x, size_t n) {
  cuda_ctx *c = ctx;
  CUDA_CHECK(c, fap_k_relu(c->stream, x, n), "relu");
}

static void cuda_add(void *ctx, float *y, const float *x, size_t n) {
  cuda_ctx *c = ctx;
  CUDA_CHECK(c, fap_k_add(c->stream, y, x, n), "add");
}

static void cuda_add_row(void *ctx, float *y, int ldy, const float *row, int rows, int dim) {
  cuda_ctx *c = ctx;
  CUDA_CHECK(c, fap_k_add_row(c->stream, y, ldy, row, rows, dim), "add_row");
}

static void cuda_copy2d(void *ctx, void *dst, size_t ld_dst, const void *src, size_t ld_src,
                        size_t rows, size_t row_bytes) {
  cuda_ctx *c = ctx;
  const void *s = fap_cuda_weight_f32(c, src);
  if (!s || !rows || !row_bytes)
    return;
  if (rows == 1)
    CUDA_CHECK(c, fap_rt_d2d(dst, s, row_bytes, c->stream), "copy");
  else
    CUDA_CHECK(c, fap_rt_copy2d(dst, ld_dst, s, ld_src, row_bytes, rows, c->stream), "copy2d");
}

static void cuda_attention(void *ctx, float *out, int ldo, const float *q, int ldq,
                           const float *k, int ldk, const float *v, int ldv, int nq, int nk,
                           int heads, int hd, int q_pos0) {
  cuda_ctx *c = ctx;
  if (ldk != ldv) { /* the kernel shares one stride; the detector never differs */
    fap_cuda_fail(c, FAP_RT_UNSUPPORTED, "attention with different key and value strides");
    return;
  }
  fap_attn_args a = {.out = out, .ot = FAP_K_F32, .ldo = (size_t)ldo, .q = q, .k = k, .v = v,
                     .qkv_t = FAP_K_F32, .ldq = (size_t)ldq, .ldkv = (size_t)ldk, .nq = nq,
                     .nk = nk, .heads = heads, .hd = hd, .q_pos0 = q_pos0, .groups = 1};
  CUDA_CHECK(c, fap_k_attention(c->stream, &a), "attention");
}

/* ---- scoring ------------------------------------------------------------------------------- */

static void cuda_l2norm_rows(void *ctx, float *y, int ldy, const float *x, int ldx, int rows,
                             int dim) {
  cuda_ctx *c = ctx;
  CUDA_CHECK(c, fap_k_l2norm(c->stream, y, (size_t)ldy, x, (size_t)ldx, rows, dim), "l2norm");
}

static void cuda_two_way_prob(void *ctx, float *out, const float *x, int ldx, int rows, int dim,
                              const float *t0, const float *t1, float inv_tau) {
  cuda_ctx *c = ctx;
  CUDA_CHECK(c, fap_k_two_way(c->stream, out, 0, x, (size_t)ldx, 0, rows, dim, t0, 0, t1, 0,
                              inv_tau, 1),
             "two_way_prob");
}

static void cuda_reduce_max(void *ctx, float *out, const float *x, int n) {
  cuda_ctx *c = ctx;
  CUDA_CHECK(c, fap_k_reduce_max(c->stream, out, 0, x, 0, n, 1), "reduce_max");
}

static void cuda_topk(void *ctx, int32_t *idx, const float *x, int n, int k) {
  cuda_ctx *c = ctx;
  CUDA_CHECK(c, fap_k_topk(c->stream, idx, x, 0, n, k, 1), "topk");
}

static void cuda_gather_rows(void *ctx, float *dst, const float *src, int lds,
                             const int32_t *idx, int n, int dim) {
  cuda_ctx *c = ctx;
  CUDA_CHECK(c, fap_k_gather_rows(c->stream, dst, src, (size_t)lds, 0, idx, n, dim, 1),
             "gather_rows");
}

static void cuda_mean_rows(void *ctx, float *y, const float *x, int rows, int dim) {
  cuda_ctx *c = ctx;
  CUDA_CHECK(c, fap_k_mean_rows(c->stream, y, x, rows, dim, 1), "mean_rows");
}

static void cuda_upsample_mean(void *ctx, float *out, const float *a, const float *b, int grid,
                               int size) {
  cuda_ctx *c = ctx;
  CUDA_CHECK(c, fap_k_upsample_mean(c->stream, out, a, b, grid, size, 1), "upsample_mean");
}

static void cuda_gaussian_blur(void *ctx, float *out, const float *in, float *tmp, int size,
                               const float *kernel, int radius) {
  cuda_ctx *c = ctx;
  CUDA_CHECK(c, fap_k_gaussian(c->stream, out, in, tmp, size, kernel, radius, 1),
             "gaussian_blur");
}

/* ---- table -------------------------------------------------------------------------------- */

static void cuda_destroy(void *ctx) {
  cuda_ctx *c = ctx;
  if (!c)
    return;
  fap_rt_use(c->device); /* memory is freed on its own device */
  if (c->stream)
    fap_rt_stream_sync(c->stream);
  fap_cuda_frames_free(c);
  fap_cuda_frameio_free(&c->pre_io);
  fap_cuda_frameio_free(&c->draw_io);
  if (c->draw_stream)
    fap_rt_stream_free(c->draw_stream);
  if (c->draw_lock) {
    g_mutex_clear(c->draw_lock);
    g_free(c->draw_lock);
  }
  for (size_t i = 0; i < c->n_weights; i++) {
    fap_rt_free(c->weights[i].dev32);
    fap_rt_free(c->weights[i].dev16);
  }
  free(c->weights);
  fap_rt_free(c->scratch);
  if (c->blas)
    fap_rt_blas_free(c->blas);
  if (c->stream)
    fap_rt_stream_free(c->stream);
  free(c);
}

static const fap_backend_ops cuda_ops = {
    .name = "cuda",
    .caps = FAP_CAP_YUV_FRAMES | FAP_CAP_DEVICE_FRAMES | FAP_CAP_DEVICE_DRAW |
            FAP_CAP_FRAME_PROGRAM,
    .destroy = cuda_destroy,
    .alloc = cuda_alloc,
    .release = cuda_release,
    .import_weights = cuda_import_weights,
    .upload = cuda_upload,
    .download = cuda_download,
    .synchronize = cuda_synchronize,
    .preprocess = cuda_preprocess,
    .im2col = cuda_im2col,
    .linear = cuda_linear,
    .matmul = cuda_matmul,
    .layernorm = cuda_layernorm,
    .quickgelu = cuda_quickgelu,
    .relu = cuda_relu,
    .add = cuda_add,
    .add_row = cuda_add_row,
    .copy2d = cuda_copy2d,
    .attention = cuda_attention,
    .l2norm_rows = cuda_l2norm_rows,
    .two_way_prob = cuda_two_way_prob,
    .reduce_max = cuda_reduce_max,
    .topk = cuda_topk,
    .gather_rows = cuda_gather_rows,
    .mean_rows = cuda_mean_rows,
    .upsample_mean = cuda_upsample_mean,
    .gaussian_blur = cuda_gaussian_blur,
    .frames_prepare = fap_cuda_frames_prepare,
    .frames_run = fap_cuda_frames_run,
    .frames_draw = fap_cuda_frames_draw,
};

fap_status fap_cuda_backend_new(int device_id, fap_precision precision, fap_backend *out) {
  const char *why;
  int n = fap_cuda_device_count(&why);
  if (n <= 0)
    return fap_fail(FAP_ERR_UNSUPPORTED,
                    "backend cuda requested (device %d), but %s; or use the CPU backend",
                    device_id, why);
  if (device_id < 0 || device_id >= n)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT,
                    "CUDA device %d requested, but this machine has %d CUDA device%s (ids 0..%d)",
                    device_id, n, n == 1 ? "" : "s", n - 1);
  if (precision == FAP_PRECISION_F32)
    return fap_fail(FAP_ERR_UNSUPPORTED,
                    "precision f32 requested on the CUDA backend, which computes in f16 or bf16 "
                    "(accumulating in f32); use the CPU backend for f32");
  cuda_ctx *c = calloc(1, sizeof *c);
  if (!c)
    return fap_fail(FAP_ERR_NO_MEMORY, "cuda backend: out of memory");
  c->device = device_id;
  c->draw_lock = g_new(GMutex, 1);
  g_mutex_init(c->draw_lock);
  c->precision = precision == FAP_PRECISION_BF16 ? FAP_PRECISION_BF16 : FAP_PRECISION_F16;
  c->t = c->precision == FAP_PRECISION_BF16 ? FAP_K_BF16 : FAP_K_F16;
  int rc = fap_rt_open(device_id, &c->info);
  const char *what = "opening the device";
  if (!rc && c->info.major < 8) {
    cuda_destroy(c);
    return fap_fail(FAP_ERR_UNSUPPORTED,
                    "CUDA device %d (%s) has compute capability %d.%d; the kernels need 8.0 or "
                    "newer (tensor-core mma, cp.async)",
                    device_id, c->info.name, c->info.major, c->info.minor);
  }
  if (!rc && (rc = fap_rt_stream_new(&c->stream)))
    what = "creating a stream";
  if (!rc && (rc = fap_rt_blas_new(&c->blas, c->stream, (size_t)32 << 20)))
    what = "creating the cuBLASLt handle";
  if (!rc && (rc = fap_k_setup()))
    what = "setting kernel attributes";
  if (rc) {
    fap_status s = fap_fail(rc == FAP_RT_ENOMEM ? FAP_ERR_NO_MEMORY : FAP_ERR_BACKEND,
                            "cuda backend (device %d): %s failed: %s", device_id, what,
                            fap_rt_error());
    cuda_destroy(c);
    return s;
  }
  fap_log(FAP_LOG_INFO, "cuda backend: device %d, %s (sm_%d%d, %d SMs, %zu MiB), %s%s", device_id,
          c->info.name, c->info.major, c->info.minor, c->info.sm_count,
          c->info.total_memory >> 20, fap_precision_name(c->precision),
          fap_rt_is_emulated() ? " (host emulator)" : "");
  out->ops = &cuda_ops;
  out->ctx = c;
  return FAP_OK;
}
