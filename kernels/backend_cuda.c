/* CUDA backend: the device, its stream and cuBLASLt handle, the weights
 * (uploaded once, matrices in f16 or bf16), and the op table of backend.h
 * on device memory. The detector's description of a frame (and of the
 * creation passes) comes through these ops; in a frame scope each op
 * computes every frame of the batch, mostly in one launch (frame buffers,
 * backend.h), and cuda_frames.c records the whole description into a CUDA
 * graph. Activation buffers hold the precision type (f16 / bf16): the
 * LayerNorm outputs, q/k/v, the attention outputs and the MLP hidden layer;
 * the residual streams, the final projections (matmul, in f32) and
 * everything after them stay f32.
 *
 * Built with kernels/ (nvcc) where CUDA is enabled, and against the host
 * emulator (kernels/emu/) for the tests that run everywhere. */
#include "backend_cuda.h"

#include "half.h"
#include "log.h"
#include "pixel.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

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
  c->memory_generation++; /* a recorded graph may point at the old buffer */
  return fap_cuda_grow(buf, capacity, bytes);
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

cuda_buffer *fap_cuda_buffer_of(cuda_ctx *c, const void *handle) {
  size_t lo = 0, hi = c->n_buffers;
  const char *p = handle;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (c->buffers[mid].handle <= p)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo == 0 || !p)
    return NULL;
  cuda_buffer *b = &c->buffers[lo - 1];
  return p < b->handle + b->total ? b : NULL;
}

cuda_arg fap_cuda_arg(cuda_ctx *c, const void *handle) {
  cuda_buffer *b = fap_cuda_buffer_of(c, handle);
  if (!b) /* a weight (its f32 copy) or a device pointer of alloc */
    return (cuda_arg){(char *)fap_cuda_weight_f32(c, handle), FAP_K_F32, 0};
  const size_t elem = (size_t)((const char *)handle - b->handle) / sizeof(float);
  if (b->kind == FAP_BUFFER_ACTIVATION)
    return (cuda_arg){(char *)b->dev + elem * fap_kdtype_size(c->t), c->t,
                      b->frame / sizeof(float)};
  return (cuda_arg){(char *)b->dev + elem * sizeof(float), FAP_K_F32, b->frame / sizeof(float)};
}

/* frame f of a resolved argument */
static void *at(cuda_arg a, int f) {
  return a.p + (size_t)f * a.stride * fap_kdtype_size(a.t);
}

/* A frame buffer: f32 and outputs are device memory (outputs with a pinned
 * mirror the scope downloads into); activations are stored in the precision
 * type behind a handle of f32 size that maps no memory. Poisoned: a read of
 * something not written shows as NaN. */
static void *cuda_alloc_frames(void *ctx, size_t frame_bytes, size_t total_bytes,
                               fap_buffer_kind kind) {
  cuda_ctx *c = ctx;
  if (c->n_buffers == c->cap_buffers) {
    size_t cap = c->cap_buffers ? 2 * c->cap_buffers : 64;
    cuda_buffer *b = realloc(c->buffers, cap * sizeof *b);
    if (!b)
      return NULL;
    c->buffers = b;
    c->cap_buffers = cap;
  }
  cuda_buffer nb = {NULL, total_bytes, frame_bytes, kind, NULL, NULL};
  const size_t dev_bytes = kind == FAP_BUFFER_ACTIVATION
                               ? total_bytes / sizeof(float) * fap_kdtype_size(c->t)
                               : total_bytes;
  int rc = fap_rt_malloc(&nb.dev, dev_bytes ? dev_bytes : 256);
  if (!rc)
    rc = fap_rt_memset(nb.dev, 0xff, dev_bytes, c->stream);
  if (!rc)
    rc = fap_rt_stream_sync(c->stream);
  if (!rc && kind == FAP_BUFFER_OUTPUT)
    rc = fap_rt_host_alloc(&nb.host, total_bytes);
  if (!rc && kind == FAP_BUFFER_ACTIVATION) {
    void *h = mmap(NULL, total_bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
                   0);
    rc = h == MAP_FAILED ? FAP_RT_ENOMEM : 0;
    nb.handle = rc ? NULL : h;
  } else {
    nb.handle = nb.dev;
  }
  if (rc) {
    fap_rt_free(nb.dev);
    fap_rt_host_free(nb.host);
    return NULL;
  }
  size_t at_ = c->n_buffers;
  while (at_ > 0 && c->buffers[at_ - 1].handle > nb.handle)
    at_--;
  memmove(&c->buffers[at_ + 1], &c->buffers[at_], (c->n_buffers - at_) * sizeof *c->buffers);
  c->buffers[at_] = nb;
  c->n_buffers++;
  c->memory_generation++;
  return (void *)nb.handle;
}

static void free_buffer(cuda_buffer *b) {
  fap_rt_free(b->dev);
  fap_rt_host_free(b->host);
  if (b->kind == FAP_BUFFER_ACTIVATION)
    munmap((void *)b->handle, b->total);
}

static void cuda_release(void *ctx, void *p) {
  cuda_ctx *c = ctx;
  cuda_buffer *b = fap_cuda_buffer_of(c, p);
  if (!b || b->handle != p) {
    fap_rt_free(p);
    return;
  }
  free_buffer(b);
  c->memory_generation++;
  const size_t i = (size_t)(b - c->buffers);
  memmove(b, b + 1, (c->n_buffers - i - 1) * sizeof *b);
  c->n_buffers--;
}

/* host copies move f32 buffers (an activation's storage is the backend's) */
static char *copyable(cuda_ctx *c, const void *p) {
  cuda_arg a = fap_cuda_arg(c, p);
  if (a.t == FAP_K_F32)
    return a.p;
  fap_cuda_fail(c, FAP_RT_UNSUPPORTED, "a host copy of an activation buffer");
  return NULL;
}

static fap_status cuda_upload(void *ctx, void *dst, const void *host, size_t bytes) {
  cuda_ctx *c = ctx;
  char *d = copyable(c, dst);
  if (d)
    CUDA_CHECK(c, fap_rt_h2d(d, host, bytes, c->stream), "upload");
  CUDA_CHECK(c, fap_rt_stream_sync(c->stream), "upload");
  return c->status;
}

static fap_status cuda_download(void *ctx, void *host, const void *src, size_t bytes) {
  cuda_ctx *c = ctx;
  const char *s = copyable(c, src);
  if (s)
    CUDA_CHECK(c, fap_rt_d2h(host, s, bytes, c->stream), "download");
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

/* ---- pre-processing of one frame (the op; a scope's frames: cuda_frames.c) ------------ */

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
  CUDA_CHECK(c, fap_k_preprocess(c->stream, (float *)fap_cuda_arg(c, out).p, size, io->desc_dev,
                                 io->max_height, 1),
             "preprocess");
  CUDA_CHECK(c, fap_rt_stream_sync(c->stream), "preprocess"); /* the staging is reused */
  return c->status;
}

/* ---- batching --------------------------------------------------------------------------- */

/* How an op over `rows` rows of x (ld ldx) into y (ld ldy) covers a scope's
 * frames: one launch over count rows blocks when both are packed frame after
 * frame (or one row per frame, the frame stride as the leading dimension),
 * else one launch per frame. */
typedef struct {
  int launches, rows, ldx, ldy;
} row_plan;

static row_plan plan_rows(const cuda_ctx *c, int rows, cuda_arg x, int ldx, cuda_arg y, int ldy) {
  const int count = c->scope_count;
  if (count == 1)
    return (row_plan){1, rows, ldx, ldy};
  if (x.stride && y.stride && x.stride == (size_t)rows * ldx && y.stride == (size_t)rows * ldy)
    return (row_plan){1, rows * count, ldx, ldy};
  if (rows == 1 && x.stride && y.stride)
    return (row_plan){1, count, (int)x.stride, (int)y.stride};
  return (row_plan){count, rows, ldx, ldy};
}

/* 1 when every argument's frames lie `per_frame` elements apart (one launch
 * for the scope), 0 when the op runs once per frame */
static int packed(const cuda_ctx *c, cuda_arg a, size_t per_frame) {
  return c->scope_count == 1 || a.stride == per_frame;
}

#define FRAMES(c, one) for (int f_ = 0, n_ = (one) ? 1 : (c)->scope_count; f_ < n_; f_++)
#define BATCH(c, one) ((one) ? (c)->scope_count : 1)

static int unsupported(cuda_ctx *c, const char *what) {
  fap_cuda_fail(c, FAP_RT_UNSUPPORTED, what);
  return 1;
}

static void cuda_im2col(void *ctx, float *out, const float *image, int size, int patch) {
  cuda_ctx *c = ctx;
  cuda_arg o = fap_cuda_arg(c, out), im = fap_cuda_arg(c, image);
  const int cols = 3 * patch * patch, g = size / patch;
  const int one = packed(c, o, (size_t)g * g * cols) && packed(c, im, 3 * (size_t)size * size);
  FRAMES(c, one)
  CUDA_CHECK(c, fap_k_im2col(c->stream, at(o, f_), o.t, cols, at(im, f_), size, patch,
                             BATCH(c, one)),
             "im2col");
}

/* ---- matrix products ------------------------------------------------------------------- */

/* x [rows, in] f32 -> the precision type, in the scratch buffer */
static const void *narrow_input(cuda_ctx *c, const void *x, int ldx, int rows, int in) {
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

/* y = x W^T + b with W (and a bias of y's type) in the precision type:
 *   x an activation: the tensor cores, y in f32 or (an activation) in the
 *     type, its rounding point;
 *   f32 x into f32 y: x as it is, the row kernel (the prior MLP's few rows
 *     per frame and the creation passes of the text encoder, which run in
 *     f32 because every frame reuses them);
 *   f32 x into an activation: x rounded to the type, then the tensor cores. */
static void cuda_linear(void *ctx, float *y, int ldy, const float *x, int ldx, const float *w,
                        const float *b, int rows, int in, int out, int accumulate) {
  cuda_ctx *c = ctx;
  if (c->status || rows < 1 || out < 1)
    return;
  cuda_arg xa = fap_cuda_arg(c, x), ya = fap_cuda_arg(c, y);
  if (accumulate && ya.t != FAP_K_F32 && unsupported(c, "linear accumulating into an activation"))
    return;
  const void *wt = fap_cuda_weight_t(c, w);
  const void *bt = !b ? NULL : ya.t == FAP_K_F32 ? (const void *)fap_cuda_weight_f32(c, b)
                                                  : fap_cuda_weight_t(c, b);
  if (!wt || (b && !bt))
    return;
  const row_plan pl = plan_rows(c, rows, xa, ldx, ya, ldy);
  for (int f = 0; f < pl.launches; f++) {
    void *yf = at(ya, f);
    const void *xf = at(xa, f);
    if (xa.t == FAP_K_F32 && ya.t == FAP_K_F32) {
      CUDA_CHECK(c, fap_k_linear_rows(c->stream, yf, (size_t)pl.ldy, xf, (size_t)pl.ldx, wt, c->t,
                                      bt, pl.rows, in, out, accumulate),
                 "linear (rows)");
      continue;
    }
    int lx = pl.ldx;
    if (xa.t == FAP_K_F32) {
      if (!(xf = narrow_input(c, xf, pl.ldx, pl.rows, in)))
        return;
      lx = in;
    }
    fap_gemm_args a = {.rows = pl.rows, .in = in, .out = out, .x = xf, .ldx = lx, .w = wt,
                       .ldw = in, .ab = c->t, .bias = bt, .y = yf, .ldy = pl.ldy, .yt = ya.t,
                       .accumulate = accumulate};
    CUDA_CHECK(c, fap_rt_gemm(c->blas, &a), "linear");
  }
}

/* The products with visual.proj / text_projection make the features the
 * maps compare (a tenth of a percent of the work): in f32, not rounded. */
static void cuda_matmul(void *ctx, float *y, int ldy, const float *x, int ldx, const float *p,
                        int rows, int in, int out) {
  cuda_ctx *c = ctx;
  if (c->status || rows < 1 || out < 1)
    return;
  cuda_arg xa = fap_cuda_arg(c, x), ya = fap_cuda_arg(c, y);
  const float *pd = fap_cuda_weight_f32(c, p);
  if (!pd || ((xa.t != FAP_K_F32 || ya.t != FAP_K_F32) && unsupported(c, "matmul of activations")))
    return;
  const row_plan pl = plan_rows(c, rows, xa, ldx, ya, ldy);
  for (int f = 0; f < pl.launches; f++) {
    fap_gemm_args a = {.rows = pl.rows, .in = in, .out = out, .x = at(xa, f), .ldx = pl.ldx,
                       .w = pd, .ldw = out, .w_in_out = 1, .ab = FAP_K_F32, .y = at(ya, f),
                       .ldy = pl.ldy, .yt = FAP_K_F32};
    CUDA_CHECK(c, fap_rt_gemm(c->blas, &a), "matmul");
  }
}

/* ---- elementwise -------------------------------------------------------------------------- */

static void cuda_layernorm(void *ctx, float *y, int ldy, const float *x, int ldx, const float *w,
                           const float *b, int rows, int dim) {
  cuda_ctx *c = ctx;
  const float *wd = fap_cuda_weight_f32(c, w), *bd = fap_cuda_weight_f32(c, b);
  cuda_arg xa = fap_cuda_arg(c, x), ya = fap_cuda_arg(c, y);
  if (!wd || !bd || (xa.t != FAP_K_F32 && unsupported(c, "layernorm of an activation")))
    return;
  const row_plan pl = plan_rows(c, rows, xa, ldx, ya, ldy);
  for (int f = 0; f < pl.launches; f++)
    CUDA_CHECK(c, fap_k_layernorm(c->stream, at(ya, f), ya.t, (size_t)pl.ldy, at(xa, f),
                                  (size_t)pl.ldx, wd, bd, pl.rows, dim),
               "layernorm");
}

static void cuda_quickgelu(void *ctx, float *x, size_t n) {
  cuda_ctx *c = ctx;
  cuda_arg xa = fap_cuda_arg(c, x);
  const int one = packed(c, xa, n);
  FRAMES(c, one)
  CUDA_CHECK(c, fap_k_quickgelu(c->stream, at(xa, f_), xa.t, n * BATCH(c, one)), "quickgelu");
}

static void cuda_relu(void *ctx, float *x, size_t n) {
  cuda_ctx *c = ctx;
  cuda_arg xa = fap_cuda_arg(c, x);
  const int one = packed(c, xa, n);
  FRAMES(c, one)
  CUDA_CHECK(c, fap_k_relu(c->stream, at(xa, f_), n * BATCH(c, one)), "relu");
}

static void cuda_add(void *ctx, float *y, const float *x, size_t n) {
  cuda_ctx *c = ctx;
  cuda_arg ya = fap_cuda_arg(c, y), xa = fap_cuda_arg(c, x);
  const int one = packed(c, ya, n) && packed(c, xa, n);
  FRAMES(c, one)
  CUDA_CHECK(c, fap_k_add(c->stream, at(ya, f_), at(xa, f_), n * BATCH(c, one)), "add");
}

static void cuda_add_row(void *ctx, float *y, int ldy, const float *row, int rows, int dim) {
  cuda_ctx *c = ctx;
  cuda_arg ya = fap_cuda_arg(c, y), ra = fap_cuda_arg(c, row);
  CUDA_CHECK(c, fap_k_add_row(c->stream, (float *)ya.p, ldy, ya.stride, (const float *)ra.p,
                              ra.stride, rows, dim, c->scope_count),
             "add_row");
}

static void cuda_copy2d(void *ctx, void *dst, size_t ld_dst, const void *src, size_t ld_src,
                        size_t rows, size_t row_bytes) {
  cuda_ctx *c = ctx;
  cuda_arg d = fap_cuda_arg(c, dst), s = fap_cuda_arg(c, src);
  if (!s.p || !rows || !row_bytes)
    return;
  if ((d.t != FAP_K_F32 || s.t != FAP_K_F32) && unsupported(c, "copy2d of an activation"))
    return;
  const size_t fd = d.stride * sizeof(float), fs = s.stride * sizeof(float);
  if (c->scope_count > 1 && rows == 1 && fd >= row_bytes && fs >= row_bytes) {
    /* one row per frame: the frames as the rows of one copy */
    CUDA_CHECK(c, fap_rt_copy2d(d.p, fd, s.p, fs, row_bytes, (size_t)c->scope_count, c->stream),
               "copy2d");
    return;
  }
  FRAMES(c, 0) {
    if (rows == 1)
      CUDA_CHECK(c, fap_rt_d2d(at(d, f_), at(s, f_), row_bytes, c->stream), "copy");
    else
      CUDA_CHECK(c, fap_rt_copy2d(at(d, f_), ld_dst, at(s, f_), ld_src, row_bytes, rows,
                                  c->stream),
                 "copy2d");
  }
}

/* ---- attention --------------------------------------------------------------------------- */

/* what the flash kernel takes (its launcher refuses the rest): 16-bit
 * operands, hd 16/32/64/128, 16-byte rows and heads; else the general kernel */
static int flash_fits(fap_kdtype t, int hd, const void *q, size_t ld, size_t stride, size_t ldo,
                      size_t out_stride) {
  return t != FAP_K_F32 && hd >= 16 && hd <= 128 && (hd & (hd - 1)) == 0 && ld % 8 == 0 &&
         stride % 8 == 0 && (uintptr_t)q % 16 == 0 && ldo % 2 == 0 && out_stride % 2 == 0;
}

static void cuda_attention(void *ctx, float *out, int ldo, const float *q, int ldq,
                           const float *k, int ldk, const float *v, int ldv, int nq, int nk,
                           int heads, int hd, int q_pos0) {
  cuda_ctx *c = ctx;
  if (ldk != ldv) { /* the kernel shares one stride; the detector never differs */
    fap_cuda_fail(c, FAP_RT_UNSUPPORTED, "attention with different key and value strides");
    return;
  }
  cuda_arg o = fap_cuda_arg(c, out), qa = fap_cuda_arg(c, q), ka = fap_cuda_arg(c, k),
           va = fap_cuda_arg(c, v);
  if ((ka.t != qa.t || va.t != qa.t || ka.stride != va.stride) &&
      unsupported(c, "attention over operands of different types or frame strides"))
    return;
  const size_t ts = fap_kdtype_size(qa.t), dim = (size_t)heads * hd;
  const int count = c->scope_count;
  /* rows of [q | k | v] in an activation: the flash kernel */
  if (o.t == qa.t && q_pos0 < 0 && ldq == ldk && ka.p == qa.p + dim * ts &&
      va.p == qa.p + 2 * dim * ts && nq <= nk && ka.stride == qa.stride &&
      flash_fits(qa.t, hd, qa.p, (size_t)ldq, qa.stride, (size_t)ldo, o.stride)) {
    fap_flash_args a = {.t = qa.t, .q = qa.p, .k = ka.p, .v = va.p, .ld = (size_t)ldq,
                        .batch_stride = qa.stride, .out_x = o.p, .out_y = NULL,
                        .ldo = (size_t)ldo, .out_batch_stride = o.stride, .rows = nk,
                        .nq_std = nq, .heads = heads, .hd = hd, .batch = count};
    CUDA_CHECK(c, fap_k_flash_attention(c->stream, &a), "flash attention");
    return;
  }
  fap_attn_args a = {.out = o.p, .ot = o.t, .ldo = (size_t)ldo, .out_group_stride = o.stride,
                     .q = qa.p, .k = ka.p, .v = va.p, .qkv_t = qa.t, .ldq = (size_t)ldq,
                     .ldkv = (size_t)ldk, .q_group_stride = qa.stride,
                     .kv_group_stride = ka.stride, .nq = nq, .nk = nk, .heads = heads, .hd = hd,
                     .q_pos0 = q_pos0, .groups = count};
  CUDA_CHECK(c, fap_k_attention(c->stream, &a), "attention");
}

/* Both paths of a dual layer: in one flash pass sharing each key/value
 * tile, or the general kernel twice. */
static void cuda_attention_dual(void *ctx, float *out_x, float *out_y, int ldo, const float *qkv,
                                int ldqkv, int rows, int nq_std, int heads, int hd) {
  cuda_ctx *c = ctx;
  cuda_arg ox = fap_cuda_arg(c, out_x), oy = fap_cuda_arg(c, out_y), qa = fap_cuda_arg(c, qkv);
  const size_t dim = (size_t)heads * hd;
  if (ox.t == qa.t && oy.t == qa.t && ox.stride == oy.stride &&
      flash_fits(qa.t, hd, qa.p, (size_t)ldqkv, qa.stride, (size_t)ldo, ox.stride)) {
    const size_t ts = fap_kdtype_size(qa.t);
    fap_flash_args a = {.t = qa.t, .q = qa.p, .k = qa.p + dim * ts, .v = qa.p + 2 * dim * ts,
                        .ld = (size_t)ldqkv, .batch_stride = qa.stride, .out_x = ox.p,
                        .out_y = oy.p, .ldo = (size_t)ldo, .out_batch_stride = ox.stride,
                        .rows = rows, .nq_std = nq_std, .heads = heads, .hd = hd,
                        .batch = c->scope_count};
    CUDA_CHECK(c, fap_k_flash_attention(c->stream, &a), "flash attention (dual)");
    return;
  }
  const float *q = qkv, *k = qkv + dim, *v = qkv + 2 * dim;
  cuda_attention(ctx, out_y, ldo, v, ldqkv, v, ldqkv, v, ldqkv, rows, rows, heads, hd, -1);
  cuda_attention(ctx, out_x, ldo, q, ldqkv, k, ldqkv, v, ldqkv, nq_std, rows, heads, hd, -1);
}

/* The text encoder's attention: keys and values before pos0 from the f32
 * cache (prompt p's of group g % prompts), the rest from this pass's rows,
 * every frame's prompts in one launch. A creation pass (store) first puts
 * its keys and values into the cache. */
static void cuda_attention_cached(void *ctx, float *out, int ldo, const float *qkv, int ldqkv,
                                  int prompts, int rows, int pos0, float *cache,
                                  size_t cache_stride, size_t values_offset, int store, int heads,
                                  int hd) {
  cuda_ctx *c = ctx;
  cuda_arg o = fap_cuda_arg(c, out), qa = fap_cuda_arg(c, qkv), ca = fap_cuda_arg(c, cache);
  const size_t dim = (size_t)heads * hd, ts = fap_kdtype_size(qa.t);
  if (c->scope_count > 1 && (store || ca.stride) &&
      unsupported(c, "a key/value cache per frame, or storing into it for several frames"))
    return;
  for (int p = 0; store && p < prompts; p++) {
    const char *x = qa.p + (size_t)p * rows * ldqkv * ts;
    float *keys = (float *)ca.p + (size_t)p * cache_stride + (size_t)pos0 * dim;
    CUDA_CHECK(c, fap_k_convert(c->stream, keys, FAP_K_F32, dim, x + dim * ts, qa.t,
                                (size_t)ldqkv, (size_t)rows, dim),
               "key cache");
    CUDA_CHECK(c, fap_k_convert(c->stream, keys + values_offset, FAP_K_F32, dim,
                                x + 2 * dim * ts, qa.t, (size_t)ldqkv, (size_t)rows, dim),
               "value cache");
  }
  const size_t per_prompt_q = (size_t)rows * ldqkv, per_prompt_o = (size_t)rows * ldo;
  const int one = packed(c, qa, prompts * per_prompt_q) && packed(c, o, prompts * per_prompt_o);
  FRAMES(c, one) {
    char *qf = at(qa, f_);
    fap_attn_args a = {.out = at(o, f_), .ot = o.t, .ldo = (size_t)ldo,
                       .out_group_stride = per_prompt_o, .q = qf, .k = qf + dim * ts,
                       .v = qf + 2 * dim * ts, .qkv_t = qa.t, .ldq = (size_t)ldqkv,
                       .ldkv = (size_t)ldqkv, .q_group_stride = per_prompt_q,
                       .kv_group_stride = per_prompt_q, .pre_k = (const float *)ca.p,
                       .pre_v = (const float *)ca.p + values_offset, .ld_pre = dim,
                       .pre_group_stride = cache_stride, .n_pre = pos0, .pre_groups = prompts,
                       .nq = rows, .nk = pos0 + rows, .heads = heads, .hd = hd, .q_pos0 = pos0,
                       .groups = prompts * BATCH(c, one)};
    CUDA_CHECK(c, fap_k_attention(c->stream, &a), "text attention");
  }
}

/* ---- scoring ------------------------------------------------------------------------------- */

static void cuda_l2norm_rows(void *ctx, float *y, int ldy, const float *x, int ldx, int rows,
                             int dim) {
  cuda_ctx *c = ctx;
  cuda_arg xa = fap_cuda_arg(c, x), ya = fap_cuda_arg(c, y);
  const row_plan pl = plan_rows(c, rows, xa, ldx, ya, ldy);
  for (int f = 0; f < pl.launches; f++)
    CUDA_CHECK(c, fap_k_l2norm(c->stream, at(ya, f), (size_t)pl.ldy, at(xa, f), (size_t)pl.ldx,
                               pl.rows, dim),
               "l2norm");
}

static void cuda_two_way_prob(void *ctx, float *out, const float *x, int ldx, int rows, int dim,
                              const float *t0, const float *t1, float inv_tau) {
  cuda_ctx *c = ctx;
  cuda_arg o = fap_cuda_arg(c, out), xa = fap_cuda_arg(c, x), a0 = fap_cuda_arg(c, t0),
           a1 = fap_cuda_arg(c, t1);
  CUDA_CHECK(c, fap_k_two_way(c->stream, (float *)o.p, o.stride, (float *)xa.p, (size_t)ldx,
                              xa.stride, rows, dim, (float *)a0.p, a0.stride, (float *)a1.p,
                              a1.stride, inv_tau, c->scope_count),
             "two_way_prob");
}

static void cuda_reduce_max(void *ctx, float *out, const float *x, int n) {
  cuda_ctx *c = ctx;
  cuda_arg o = fap_cuda_arg(c, out), xa = fap_cuda_arg(c, x);
  CUDA_CHECK(c, fap_k_reduce_max(c->stream, (float *)o.p, o.stride, (float *)xa.p, xa.stride, n,
                                 c->scope_count),
             "reduce_max");
}

static void cuda_topk(void *ctx, int32_t *idx, const float *x, int n, int k) {
  cuda_ctx *c = ctx;
  cuda_arg ia = fap_cuda_arg(c, idx), xa = fap_cuda_arg(c, x);
  const int one = packed(c, ia, (size_t)k);
  FRAMES(c, one)
  CUDA_CHECK(c, fap_k_topk(c->stream, at(ia, f_), at(xa, f_), xa.stride, n, k, BATCH(c, one)),
             "topk");
}

static void cuda_gather_rows(void *ctx, float *dst, const float *src, int lds,
                             const int32_t *idx, int n, int dim) {
  cuda_ctx *c = ctx;
  cuda_arg d = fap_cuda_arg(c, dst), s = fap_cuda_arg(c, src), ia = fap_cuda_arg(c, idx);
  const int one = packed(c, d, (size_t)n * dim) && packed(c, ia, (size_t)n);
  FRAMES(c, one)
  CUDA_CHECK(c, fap_k_gather_rows(c->stream, at(d, f_), at(s, f_), (size_t)lds, s.stride,
                                  at(ia, f_), n, dim, BATCH(c, one)),
             "gather_rows");
}

static void cuda_mean_rows(void *ctx, float *y, const float *x, int rows, int dim) {
  cuda_ctx *c = ctx;
  cuda_arg ya = fap_cuda_arg(c, y), xa = fap_cuda_arg(c, x);
  const int one = packed(c, ya, (size_t)dim) && packed(c, xa, (size_t)rows * dim);
  FRAMES(c, one)
  CUDA_CHECK(c, fap_k_mean_rows(c->stream, at(ya, f_), at(xa, f_), rows, dim, BATCH(c, one)),
             "mean_rows");
}

static void cuda_upsample_mean(void *ctx, float *out, const float *a, const float *b, int grid,
                               int size) {
  cuda_ctx *c = ctx;
  cuda_arg o = fap_cuda_arg(c, out), aa = fap_cuda_arg(c, a), ba = fap_cuda_arg(c, b);
  const size_t g2 = (size_t)grid * grid;
  const int one =
      packed(c, o, (size_t)size * size) && packed(c, aa, g2) && packed(c, ba, g2);
  FRAMES(c, one)
  CUDA_CHECK(c, fap_k_upsample_mean(c->stream, at(o, f_), at(aa, f_), at(ba, f_), grid, size,
                                    BATCH(c, one)),
             "upsample_mean");
}

static void cuda_gaussian_blur(void *ctx, float *out, const float *in, float *tmp, int size,
                               const float *kernel, int radius) {
  cuda_ctx *c = ctx;
  cuda_arg o = fap_cuda_arg(c, out), ia = fap_cuda_arg(c, in), ta = fap_cuda_arg(c, tmp),
           ka = fap_cuda_arg(c, kernel);
  const size_t s2 = (size_t)size * size;
  const int one = packed(c, o, s2) && packed(c, ia, s2) && packed(c, ta, s2);
  FRAMES(c, one)
  CUDA_CHECK(c, fap_k_gaussian(c->stream, at(o, f_), at(ia, f_), at(ta, f_), size,
                               (const float *)ka.p, radius, BATCH(c, one)),
             "gaussian_blur");
}

static void cuda_faprompt_score(void *ctx, float *scalars) {
  cuda_ctx *c = ctx;
  cuda_arg s = fap_cuda_arg(c, scalars);
  const int one = packed(c, s, 4);
  FRAMES(c, one)
  CUDA_CHECK(c, fap_k_score(c->stream, at(s, f_), BATCH(c, one)), "score");
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
  for (size_t i = 0; i < c->n_buffers; i++)
    free_buffer(&c->buffers[i]);
  free(c->buffers);
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
    .caps = FAP_CAP_DEVICE_FRAMES | FAP_CAP_DEVICE_DRAW | FAP_CAP_BATCH,
    .destroy = cuda_destroy,
    .alloc = cuda_alloc,
    .release = cuda_release,
    .alloc_frames = cuda_alloc_frames,
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
    .attention_dual = cuda_attention_dual,
    .attention_cached = cuda_attention_cached,
    .faprompt_score = cuda_faprompt_score,
    .frames_begin = fap_cuda_frames_begin,
    .frames_pass = fap_cuda_frames_pass,
    .preprocess_frames = fap_cuda_preprocess_frames,
    .blend_frames = fap_cuda_blend_frames,
    .frames_mark = fap_cuda_frames_mark,
    .frames_end = fap_cuda_frames_end,
    .frames_output = fap_cuda_frames_output,
    .frames_draw = fap_cuda_frames_draw,
};

/* The runtime answers cudaGetDeviceCount once per process (the driver does
 * not appear later), so the answer and its reason are kept. */
int fap_cuda_device_count(const char **why) {
  static gsize once;
  static int count;
  static char reason[640];
  if (g_once_init_enter(&once)) {
    count = fap_rt_device_count();
    if (count <= 0) {
      const char *e = fap_rt_error();
      int no_driver = strstr(e, "Driver") || strstr(e, "driver") || strstr(e, "StubLibrary");
      snprintf(reason, sizeof reason,
               no_driver ? "the CUDA module loaded, but the NVIDIA driver (libcuda.so.1) is "
                           "missing or too old (%s): install or update the NVIDIA driver"
                         : "the CUDA module loaded, but no CUDA device answers (%s)",
               e && *e ? e : "no device");
    }
    g_once_init_leave(&once, 1);
  }
  if (why)
    *why = count > 0 ? NULL : reason;
  return count;
}

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
  c->scope_count = 1;
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
