/* CPU backend: plain reference loops (llm.c style: readable, the ground truth)
 * beside the fast path (OpenBLAS SGEMM for the matrix products, or oneDNN's
 * f32 matmul for the linear layers where the CPU makes it faster:
 * linear_f32_dnnl.h; OpenMP for the elementwise work). `reference` selects
 * the loops everywhere a fast path exists, so tests can hold the fast path
 * against them. */
#include "backend.h"

#include "attention_cpu.h"
#include "fastmath.h"
#include "linear_dnnl.h"
#include "linear_f32_dnnl.h"
#include "log.h"
#include "pixel.h"
#include "resample.h"
#include "score.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef FAP_HAVE_OPENBLAS
#include <cblas.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct {
  int threads;
  int reference;
  /* pre-processing state, rebuilt only when the input size changes */
  int pre_w, pre_h, pre_size;
  fap_bicubic_table tx, ty;
  float *pre_tmp; /* [h, S, 3] after the horizontal pass */
  /* attention scores, grown to the largest nq x nk seen (first frame only) */
  float *scores;
  size_t scores_cap;
  /* fused attention (attention_cpu.c): its workspace, and the kernel to
   * prefer (FAP_CPU_ATTENTION=avx2|avx512 picks one, =blas keeps the BLAS
   * path, for A/B runs) */
  fap_attention_ws att_ws;
  /* bf16 precision: unmasked attention (the vision encoder's) with bf16
   * products where the CPU has them (attention_bf16.c) */
  int att_bf16;
  fap_attention_bf16_ws att_bf16_ws;
  fap_attention_kernel att_kernel;
  /* bf16 / int8 linear layers (linear_dnnl.c); NULL: f32. roles: the
   * weights the detector marked (fap_weight_role), the only ones it takes */
  fap_dnnl *dnnl;
  /* the f32 linear layers through oneDNN (fap_cpu_gemm_choose); NULL: OpenBLAS */
  fap_dnnl_f32 *dnnl_f32;
  struct role_range {
    const float *w;
    size_t count;
    fap_weight_role role;
  } *roles;
  int n_roles, cap_roles;
  fap_status error; /* sticky until synchronize() */
  /* the frame scope (one frame: no FAP_CAP_BATCH): its frame and blend, the
   * YUV frame converted to RGB (grown with the input size, not per frame),
   * and the clock at its start and at each stage's mark */
  const fap_frame *frame;
  const fap_blend *blend;
  int scope_size;
  uint8_t *rgb;
  size_t rgb_bytes;
  double start_ms, mark_ms[FAP_STAGE_COUNT];
  unsigned marked;
} cpu_ctx;

#define PAR _Pragma("omp parallel for num_threads(c->threads) schedule(static)")


#ifdef _OPENMP
#define THREAD_INDEX() omp_get_thread_num()
#else
#define THREAD_INDEX() 0
#endif

/* ---- memory ------------------------------------------------------------- */

static void *cpu_alloc(void *ctx, size_t bytes) {
  (void)ctx;
  void *p = NULL;
  if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0)
    return NULL;
  memset(p, 0, bytes);
  return p;
}

static void cpu_release(void *ctx, void *p) {
  (void)ctx;
  free(p);
}

/* Frame buffers are plain memory: one frame at a time, activations in f32. */
static void *cpu_alloc_frames(void *ctx, size_t frame_bytes, size_t total_bytes,
                              fap_buffer_kind kind) {
  (void)frame_bytes, (void)kind;
  return cpu_alloc(ctx, total_bytes);
}

static const float *cpu_import_weights(void *ctx, const float *host, size_t count) {
  (void)ctx;
  (void)count;
  return host; /* the model's f32 storage is used in place, shared by all detectors */
}

static fap_status cpu_copy(void *ctx, void *dst, const void *src, size_t bytes) {
  (void)ctx;
  memmove(dst, src, bytes);
  return FAP_OK;
}

/* Ops return nothing; a failure inside one (only the first-frame growth of
 * the attention scores can fail) is kept here and reported by the next
 * synchronize, which the detector calls after every stage. */
static fap_status cpu_synchronize(void *ctx) {
  cpu_ctx *c = ctx;
  fap_status s = c->error;
  c->error = FAP_OK;
  return s;
}

/* ---- pre-processing ------------------------------------------------------- */

static const float clip_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
static const float clip_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};

static void channel_layout(fap_pixel_format f, int *bpp, int off[3]) {
  static const struct {
    int bpp, r, g, b;
  } layouts[] = {
      [FAP_PIXEL_RGB] = {3, 0, 1, 2},  [FAP_PIXEL_BGR] = {3, 2, 1, 0},
      [FAP_PIXEL_RGBA] = {4, 0, 1, 2}, [FAP_PIXEL_BGRA] = {4, 2, 1, 0},
      [FAP_PIXEL_RGBX] = {4, 0, 1, 2}, [FAP_PIXEL_BGRX] = {4, 2, 1, 0},
      [FAP_PIXEL_XRGB] = {4, 1, 2, 3}, [FAP_PIXEL_XBGR] = {4, 3, 2, 1},
  };
  *bpp = layouts[f].bpp;
  off[0] = layouts[f].r;
  off[1] = layouts[f].g;
  off[2] = layouts[f].b;
}

static void free_table(fap_bicubic_table *t) {
  free(t->first);
  free(t->count);
  free(t->weights);
  memset(t, 0, sizeof *t);
}

static fap_status alloc_table(fap_bicubic_table *t, int in, int out) {
  free_table(t);
  int taps = fap_bicubic_taps(in, out);
  t->first = malloc((size_t)out * sizeof *t->first);
  t->count = malloc((size_t)out * sizeof *t->count);
  t->weights = malloc((size_t)out * taps * sizeof *t->weights);
  if (!t->first || !t->count || !t->weights)
    return FAP_ERR_NO_MEMORY;
  fap_bicubic_fill(t, in, out);
  return FAP_OK;
}

/* Resampling tables depend on the input size: rebuilt when it changes, so a
 * steady stream allocates nothing. */
static fap_status prepare_resize(cpu_ctx *c, int w, int h, int size) {
  if (c->pre_w == w && c->pre_h == h && c->pre_size == size)
    return FAP_OK;
  c->pre_w = c->pre_h = c->pre_size = 0;
  free(c->pre_tmp);
  c->pre_tmp = malloc((size_t)h * size * 3 * sizeof(float));
  if (!c->pre_tmp || alloc_table(&c->tx, w, size) || alloc_table(&c->ty, h, size))
    return fap_fail(FAP_ERR_NO_MEMORY, "pre-processing: out of memory for a %dx%d input", w, h);
  c->pre_w = w;
  c->pre_h = h;
  c->pre_size = size;
  return FAP_OK;
}

static fap_status cpu_preprocess(void *ctx, float *out, const fap_frame *f, int size,
                                 size_t *bytes_up) {
  if (bytes_up)
    *bytes_up = 0; /* the pixels are read where they are */
  cpu_ctx *c = ctx;
  const fap_rect crop = fap_frame_crop(f); /* the taps stay inside it */
  fap_status s = prepare_resize(c, crop.width, crop.height, size);
  if (s)
    return s;
  int bpp, off[3];
  channel_layout(f->format, &bpp, off);
  const fap_bicubic_table *tx = &c->tx, *ty = &c->ty;
  float *tmp = c->pre_tmp;
  int h = crop.height;
  const uint8_t *origin = f->data + (size_t)crop.y * f->stride + (size_t)crop.x * bpp;

  PAR for (int y = 0; y < h; y++) { /* horizontal pass, in 0..255 units */
    const uint8_t *row = origin + (size_t)y * f->stride;
    float *o = tmp + (size_t)y * size * 3;
    for (int x = 0; x < size; x++) {
      const float *w = tx->weights + (size_t)x * tx->taps;
      const uint8_t *px = row + (size_t)tx->first[x] * bpp;
      float r = 0, g = 0, b = 0;
      for (int j = 0; j < tx->count[x]; j++, px += bpp) {
        r += w[j] * px[off[0]];
        g += w[j] * px[off[1]];
        b += w[j] * px[off[2]];
      }
      o[3 * x] = r;
      o[3 * x + 1] = g;
      o[3 * x + 2] = b;
    }
  }
  const size_t plane = (size_t)size * size;
  PAR for (int y = 0; y < size; y++) { /* vertical pass, then [0,1] and CLIP normalisation */
    const float *w = ty->weights + (size_t)y * ty->taps;
    for (int x = 0; x < size; x++) {
      float acc[3] = {0, 0, 0};
      const float *src = tmp + ((size_t)ty->first[y] * size + x) * 3;
      for (int j = 0; j < ty->count[y]; j++, src += (size_t)size * 3)
        for (int ch = 0; ch < 3; ch++)
          acc[ch] += w[j] * src[ch];
      for (int ch = 0; ch < 3; ch++)
        out[ch * plane + (size_t)y * size + x] = (acc[ch] / 255.0f - clip_mean[ch]) / clip_std[ch];
    }
  }
  return FAP_OK;
}

static void cpu_im2col(void *ctx, float *out, const float *image, int size, int patch) {
  cpu_ctx *c = ctx;
  int grid = size / patch, cols = 3 * patch * patch;
  size_t plane = (size_t)size * size;
  PAR for (int n = 0; n < grid * grid; n++) {
    int gy = n / grid, gx = n % grid;
    float *o = out + (size_t)n * cols;
    for (int ch = 0; ch < 3; ch++)
      for (int y = 0; y < patch; y++)
        memcpy(o + (ch * patch + y) * patch,
               image + ch * plane + (size_t)(gy * patch + y) * size + gx * patch,
               (size_t)patch * sizeof(float));
  }
}

/* ---- matrix products ------------------------------------------------------ */

static void linear_reference(cpu_ctx *c, float *y, int ldy, const float *x, int ldx,
                             const float *w, const float *b, int rows, int in, int out,
                             int accumulate) {
  PAR for (int r = 0; r < rows; r++) {
    for (int o = 0; o < out; o++) {
      float acc = b ? b[o] : 0.0f;
      for (int i = 0; i < in; i++)
        acc += x[(size_t)r * ldx + i] * w[(size_t)o * in + i];
      y[(size_t)r * ldy + o] = accumulate ? y[(size_t)r * ldy + o] + acc : acc;
    }
  }
}

static int weight_role_of(const cpu_ctx *c, const float *w) {
  for (int i = 0; i < c->n_roles; i++) /* ~100 entries, at most 200 calls a frame */
    if (w >= c->roles[i].w && w < c->roles[i].w + c->roles[i].count)
      return (int)c->roles[i].role;
  return 0;
}

/* Kept only where a reduced precision runs (the only reader); a failed
 * growth leaves the weight in f32 (the detector then makes the model's f32
 * copy), which is always correct. */
static int cpu_weight_role(void *ctx, const float *w, size_t count, fap_weight_role role,
                           const fap_weight_reader *reader) {
  cpu_ctx *c = ctx;
  if (!c->dnnl || !fap_dnnl_takes(c->dnnl, (int)role))
    return 0;
  if (c->n_roles == c->cap_roles) {
    int cap = c->cap_roles ? 2 * c->cap_roles : 128;
    struct role_range *grown = realloc(c->roles, (size_t)cap * sizeof *grown);
    if (!grown)
      return 0;
    c->roles = grown;
    c->cap_roles = cap;
  }
  c->roles[c->n_roles++] = (struct role_range){w, count, role};
  fap_dnnl_set_reader(c->dnnl, reader);
  return 1;
}

static void cpu_linear(void *ctx, float *y, int ldy, const float *x, int ldx, const float *w,
                       const float *b, int rows, int in, int out, int accumulate) {
  cpu_ctx *c = ctx;
  if (c->dnnl && fap_dnnl_takes(c->dnnl, weight_role_of(c, w))) {
    fap_status s = fap_dnnl_linear(c->dnnl, y, ldy, x, ldx, w, b, rows, in, out, accumulate);
    if (s && !c->error)
      c->error = s;
    return;
  }
  if (!c->reference && c->dnnl_f32) {
    fap_status s = fap_dnnl_f32_linear(c->dnnl_f32, y, ldy, x, ldx, w, b, rows, in, out, accumulate);
    if (s && !c->error)
      c->error = s;
    return;
  }
#ifdef FAP_HAVE_OPENBLAS
  if (!c->reference) {
    /* y = [y +] b, then y += x W^T in one SGEMM */
    if (b) {
      PAR for (int r = 0; r < rows; r++) {
        float *yr = y + (size_t)r * ldy;
        for (int o = 0; o < out; o++)
          yr[o] = accumulate ? yr[o] + b[o] : b[o];
      }
    }
    float beta = (accumulate || b) ? 1.0f : 0.0f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f, x, ldx, w, in, beta,
                y, ldy);
    return;
  }
#endif
  linear_reference(c, y, ldy, x, ldx, w, b, rows, in, out, accumulate);
}

static void cpu_matmul(void *ctx, float *y, int ldy, const float *x, int ldx, const float *p,
                       int rows, int in, int out) {
  cpu_ctx *c = ctx;
#ifdef FAP_HAVE_OPENBLAS
  if (!c->reference) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, out, in, 1.0f, x, ldx, p, out,
                0.0f, y, ldy);
    return;
  }
#endif
  PAR for (int r = 0; r < rows; r++) {
    for (int o = 0; o < out; o++) {
      float acc = 0.0f;
      for (int i = 0; i < in; i++)
        acc += x[(size_t)r * ldx + i] * p[(size_t)i * out + o];
      y[(size_t)r * ldy + o] = acc;
    }
  }
}

/* ---- elementwise ---------------------------------------------------------- */

static void cpu_layernorm(void *ctx, float *y, int ldy, const float *x, int ldx, const float *w,
                          const float *b, int rows, int dim) {
  cpu_ctx *c = ctx;
  PAR for (int r = 0; r < rows; r++) {
    const float *xr = x + (size_t)r * ldx;
    float *yr = y + (size_t)r * ldy;
    double mean = 0.0, var = 0.0;
    for (int i = 0; i < dim; i++)
      mean += xr[i];
    mean /= dim;
    for (int i = 0; i < dim; i++)
      var += (xr[i] - mean) * (xr[i] - mean);
    var /= dim; /* biased, as torch */
    float inv = (float)(1.0 / sqrt(var + 1e-5));
    float m = (float)mean;
    for (int i = 0; i < dim; i++)
      yr[i] = (xr[i] - m) * inv * w[i] + b[i];
  }
}

FAP_CLONES static void quickgelu_span(float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    x[i] = x[i] / (1.0f + fap_expf_fast(-1.702f * x[i]));
}

static void cpu_quickgelu(void *ctx, float *x, size_t n) {
  cpu_ctx *c = ctx;
  if (c->reference) {
    PAR for (size_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
    return;
  }
  const size_t chunk = 4096;
  PAR for (size_t i = 0; i < n; i += chunk) quickgelu_span(x + i, n - i < chunk ? n - i : chunk);
}

static void cpu_relu(void *ctx, float *x, size_t n) {
  (void)ctx;
  for (size_t i = 0; i < n; i++)
    x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

static void cpu_add(void *ctx, float *y, const float *x, size_t n) {
  cpu_ctx *c = ctx;
  PAR for (size_t i = 0; i < n; i++) y[i] += x[i];
}

static void cpu_add_row(void *ctx, float *y, int ldy, const float *row, int rows, int dim) {
  (void)ctx;
  for (int r = 0; r < rows; r++)
    for (int i = 0; i < dim; i++)
      y[(size_t)r * ldy + i] += row[i];
}

static void cpu_copy2d(void *ctx, void *dst, size_t ld_dst, const void *src, size_t ld_src,
                       size_t rows, size_t row_bytes) {
  (void)ctx;
  for (size_t r = 0; r < rows; r++)
    memmove((char *)dst + r * ld_dst, (const char *)src + r * ld_src, row_bytes);
}

/* ---- attention ------------------------------------------------------------ */

/* Softmax of one score row in place over its first `visible` entries; the
 * masked tail gets probability 0. */
static void softmax_row(float *s, int visible, int n) {
  float mx = -INFINITY;
  for (int j = 0; j < visible; j++)
    mx = s[j] > mx ? s[j] : mx;
  float sum = 0.0f;
  for (int j = 0; j < visible; j++) {
    s[j] = expf(s[j] - mx);
    sum += s[j];
  }
  float inv = 1.0f / sum;
  for (int j = 0; j < visible; j++)
    s[j] *= inv;
  for (int j = visible; j < n; j++)
    s[j] = 0.0f;
}

/* The same with the vectorisable exp (fast path). */
FAP_CLONES static void softmax_row_fast(float *s, int visible, int n) {
  float mx = -INFINITY;
  for (int j = 0; j < visible; j++)
    mx = s[j] > mx ? s[j] : mx;
  float sum = 0.0f;
  for (int j = 0; j < visible; j++) {
    s[j] = fap_expf_fast(s[j] - mx);
    sum += s[j];
  }
  float inv = 1.0f / sum;
  for (int j = 0; j < visible; j++)
    s[j] *= inv;
  for (int j = visible; j < n; j++)
    s[j] = 0.0f;
}

static int visible_keys(int i, int nk, int q_pos0) {
  if (q_pos0 < 0)
    return nk;
  int v = q_pos0 + i + 1;
  return v < nk ? v : nk;
}

static void attention_reference(cpu_ctx *c, float *out, int ldo, const float *q, int ldq,
                                const float *k, int ldk, const float *v, int ldv, int nq, int nk,
                                int heads, int hd, int q_pos0, float *scores) {
  const float scale = 1.0f / sqrtf((float)hd);
  for (int h = 0; h < heads; h++) {
    PAR for (int i = 0; i < nq; i++) {
      float *s = scores + (size_t)i * nk;
      const float *qi = q + (size_t)i * ldq + h * hd;
      for (int j = 0; j < nk; j++) {
        const float *kj = k + (size_t)j * ldk + h * hd;
        float acc = 0.0f;
        for (int d = 0; d < hd; d++)
          acc += qi[d] * kj[d];
        s[j] = acc * scale;
      }
      softmax_row(s, visible_keys(i, nk, q_pos0), nk);
      float *oi = out + (size_t)i * ldo + h * hd;
      for (int d = 0; d < hd; d++) {
        float acc = 0.0f;
        for (int j = 0; j < nk; j++)
          acc += s[j] * v[(size_t)j * ldv + h * hd + d];
        oi[d] = acc;
      }
    }
  }
}

static void cpu_attention(void *ctx, float *out, int ldo, const float *q, int ldq, const float *k,
                          int ldk, const float *v, int ldv, int nq, int nk, int heads, int hd,
                          int q_pos0) {
  cpu_ctx *c = ctx;
  if (c->att_bf16 && q_pos0 < 0 && fap_attention_bf16_usable(hd)) {
    fap_status s = fap_attention_bf16(&c->att_bf16_ws, c->threads, out, ldo, q, ldq, k, ldk, v,
                                      ldv, nq, nk, heads, hd);
    if (s && !c->error)
      c->error = s;
    return;
  }
  const fap_attention_kernel kernel = fap_attention_kernel_for(c->att_kernel, hd);
  if (!c->reference && kernel != FAP_ATTENTION_BLAS) {
    fap_status s = fap_attention_fused_with(kernel, &c->att_ws, c->threads, out, ldo, q, ldq, k,
                                            ldk, v, ldv, nq, nk, heads, hd, q_pos0);
    if (s && !c->error)
      c->error = s;
    return;
  }
  /* one nq x nk score block per thread; sizes are fixed per detector, so this
   * grows on the first frame only */
  size_t need = (size_t)nq * nk * (size_t)c->threads;
  if (need > c->scores_cap) {
    free(c->scores);
    c->scores = malloc(need * sizeof(float));
    c->scores_cap = c->scores ? need : 0;
    if (!c->scores) {
      c->error = fap_fail(FAP_ERR_NO_MEMORY, "attention: out of memory for %d x %d scores x %d threads",
                          nq, nk, c->threads);
      return;
    }
  }
#ifdef FAP_HAVE_OPENBLAS
  if (!c->reference) {
    /* Heads in parallel, one thread each: OpenBLAS (OpenMP build) runs
     * single-threaded inside the region, and a head's scores stay in that
     * core's cache from q k^T through softmax to the product with v. */
    const float scale = 1.0f / sqrtf((float)hd);
    _Pragma("omp parallel for num_threads(c->threads) schedule(dynamic, 1)")
    for (int h = 0; h < heads; h++) {
      float *s = c->scores + (size_t)THREAD_INDEX() * nq * nk;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, hd, scale, q + h * hd, ldq,
                  k + h * hd, ldk, 0.0f, s, nk);
      for (int i = 0; i < nq; i++)
        softmax_row_fast(s + (size_t)i * nk, visible_keys(i, nk, q_pos0), nk);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, nk, 1.0f, s, nk, v + h * hd,
                  ldv, 0.0f, out + h * hd, ldo);
    }
    return;
  }
#endif
  attention_reference(c, out, ldo, q, ldq, k, ldk, v, ldv, nq, nk, heads, hd, q_pos0, c->scores);
}

/* ---- scoring -------------------------------------------------------------- */

static void cpu_l2norm_rows(void *ctx, float *y, int ldy, const float *x, int ldx, int rows,
                            int dim) {
  cpu_ctx *c = ctx;
  PAR for (int r = 0; r < rows; r++) {
    const float *xr = x + (size_t)r * ldx;
    double ss = 0.0;
    for (int i = 0; i < dim; i++)
      ss += (double)xr[i] * xr[i];
    float inv = (float)(1.0 / sqrt(ss));
    for (int i = 0; i < dim; i++)
      y[(size_t)r * ldy + i] = xr[i] * inv;
  }
}

static void cpu_two_way_prob(void *ctx, float *out, const float *x, int ldx, int rows, int dim,
                             const float *t0, const float *t1, float inv_tau) {
  cpu_ctx *c = ctx;
  PAR for (int r = 0; r < rows; r++) {
    const float *xr = x + (size_t)r * ldx;
    float s0 = 0.0f, s1 = 0.0f;
    for (int i = 0; i < dim; i++) {
      s0 += xr[i] * t0[i];
      s1 += xr[i] * t1[i];
    }
    /* softmax([s0, s1] / tau)[1] = 1 / (1 + exp((s0 - s1) / tau)) */
    out[r] = 1.0f / (1.0f + expf((s0 - s1) * inv_tau));
  }
}

static void cpu_reduce_max(void *ctx, float *out, const float *x, int n) {
  (void)ctx;
  float m = -INFINITY;
  for (int i = 0; i < n; i++)
    m = x[i] > m ? x[i] : m;
  *out = m;
}

static void cpu_topk(void *ctx, int32_t *idx, const float *x, int n, int k) {
  (void)ctx;
  /* k is small (M = 10): insertion into a sorted list of k beats sorting n */
  int filled = 0;
  for (int i = 0; i < n; i++) {
    if (filled == k && !(x[i] > x[idx[k - 1]]))
      continue;
    int pos = filled < k ? filled++ : k - 1;
    while (pos > 0 && x[i] > x[idx[pos - 1]]) {
      idx[pos] = idx[pos - 1];
      pos--;
    }
    idx[pos] = i;
  }
}

static void cpu_gather_rows(void *ctx, float *dst, const float *src, int lds, const int32_t *idx,
                            int n, int dim) {
  (void)ctx;
  for (int r = 0; r < n; r++)
    memcpy(dst + (size_t)r * dim, src + (size_t)idx[r] * lds, (size_t)dim * sizeof(float));
}

static void cpu_mean_rows(void *ctx, float *y, const float *x, int rows, int dim) {
  (void)ctx;
  for (int i = 0; i < dim; i++) {
    float acc = 0.0f;
    for (int r = 0; r < rows; r++)
      acc += x[(size_t)r * dim + i];
    y[i] = acc / (float)rows;
  }
}

static void cpu_upsample_mean(void *ctx, float *out, const float *a, const float *b, int grid,
                              int size) {
  cpu_ctx *c = ctx;
  PAR for (int y = 0; y < size; y++) {
    int y0, y1;
    float wy;
    fap_bilinear_coord(y, grid, size, &y0, &y1, &wy);
    for (int x = 0; x < size; x++) {
      int x0, x1;
      float wx;
      fap_bilinear_coord(x, grid, size, &x0, &x1, &wx);
      float va = (1 - wy) * ((1 - wx) * a[y0 * grid + x0] + wx * a[y0 * grid + x1]) +
                 wy * ((1 - wx) * a[y1 * grid + x0] + wx * a[y1 * grid + x1]);
      float vb = (1 - wy) * ((1 - wx) * b[y0 * grid + x0] + wx * b[y0 * grid + x1]) +
                 wy * ((1 - wx) * b[y1 * grid + x0] + wx * b[y1 * grid + x1]);
      out[(size_t)y * size + x] = 0.5f * (va + vb);
    }
  }
}

static void cpu_gaussian_blur(void *ctx, float *out, const float *in, float *tmp, int size,
                              const float *kernel, int radius) {
  cpu_ctx *c = ctx;
  PAR for (int y = 0; y < size; y++) { /* along rows */
    const float *row = in + (size_t)y * size;
    float *t = tmp + (size_t)y * size;
    for (int x = 0; x < size; x++) {
      float acc = 0.0f;
      for (int j = -radius; j <= radius; j++)
        acc += kernel[j + radius] * row[fap_mirror_index(x + j, size)];
      t[x] = acc;
    }
  }
  PAR for (int y = 0; y < size; y++) { /* along columns, a row at a time (vectorises) */
    float *o = out + (size_t)y * size;
    for (int x = 0; x < size; x++)
      o[x] = 0.0f;
    for (int j = -radius; j <= radius; j++) {
      const float *src = tmp + (size_t)fap_mirror_index(y + j, size) * size;
      float w = kernel[j + radius];
      for (int x = 0; x < size; x++)
        o[x] += w * src[x];
    }
    /* a convex combination of [0, 1] map values stays in [0, 1] in exact
     * arithmetic; float rounding can put it an ulp above 1 (a saturated
     * map), and fap.h promises [0, 1] */
    for (int x = 0; x < size; x++)
      o[x] = fminf(fmaxf(o[x], 0.0f), 1.0f);
  }
}

/* ---- the ops of the frame's description that combine others ----------------- */

/* the two attentions of a dual layer, one after the other */
static void cpu_attention_dual(void *ctx, float *out_x, float *out_y, int ldo, const float *qkv,
                               int ldqkv, int rows, int nq_std, int heads, int hd) {
  const int dim = heads * hd;
  const float *q = qkv, *k = qkv + dim, *v = qkv + 2 * dim;
  cpu_attention(ctx, out_y, ldo, v, ldqkv, v, ldqkv, v, ldqkv, rows, rows, heads, hd, -1);
  cpu_attention(ctx, out_x, ldo, q, ldqkv, k, ldqkv, v, ldqkv, nq_std, rows, heads, hd, -1);
}

/* This pass's keys and values go into the cache rows pos0.. (with store or
 * without: one frame at a time, those rows are this backend's scratch), then
 * each prompt attends over its cache. */
static void cpu_attention_cached(void *ctx, float *out, int ldo, const float *qkv, int ldqkv,
                                 int prompts, int rows, int pos0, float *cache,
                                 size_t cache_stride, size_t values_offset, int store, int heads,
                                 int hd) {
  (void)store;
  const int dim = heads * hd;
  const size_t row_bytes = (size_t)dim * sizeof(float);
  for (int p = 0; p < prompts; p++) {
    const float *x = qkv + (size_t)p * rows * ldqkv;
    float *keys = cache + (size_t)p * cache_stride, *values = keys + values_offset;
    cpu_copy2d(ctx, keys + (size_t)pos0 * dim, row_bytes, x + dim, (size_t)ldqkv * sizeof(float),
               (size_t)rows, row_bytes);
    cpu_copy2d(ctx, values + (size_t)pos0 * dim, row_bytes, x + 2 * dim,
               (size_t)ldqkv * sizeof(float), (size_t)rows, row_bytes);
    cpu_attention(ctx, out + (size_t)p * rows * ldo, ldo, x, ldqkv, keys, dim, values, dim, rows,
                  pos0 + rows, heads, hd, pos0);
  }
}

static void cpu_faprompt_score(void *ctx, float *scalars) {
  (void)ctx;
  scalars[3] = fap_faprompt_score(scalars[0], scalars[1], scalars[2]);
}

/* ---- the frame scope: one frame, each op computed as it is called ------------ */

static double clock_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

static fap_status cpu_frames_begin(void *ctx, const fap_frame *frames, int count, int size,
                                   const fap_blend *blend) {
  cpu_ctx *c = ctx;
  if (count != 1)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "cpu backend: a frame scope holds one frame, not %d",
                    count);
  c->frame = frames;
  c->blend = blend;
  c->scope_size = size;
  c->marked = 0;
  c->start_ms = clock_ms();
  return FAP_OK;
}

static fap_status cpu_frames_pass(void *ctx, int pass, int *describe) {
  (void)ctx;
  *describe = pass == 0;
  return FAP_OK;
}

/* A packed frame's pixels are read where they are (cpu_preprocess reads
 * its crop); a YUV frame's crop is converted to RGB first, with the whole
 * frame's chroma (this backend's resampling reads packed pixels) */
static void cpu_preprocess_frames(void *ctx, float *image, int size) {
  cpu_ctx *c = ctx;
  const fap_frame *f = c->frame;
  const fap_rect crop = fap_frame_crop(f);
  fap_frame packed;
  if (fap_format_is_yuv(f->format)) {
    const size_t bytes = (size_t)crop.width * crop.height * 3;
    if (bytes > c->rgb_bytes) {
      free(c->rgb);
      c->rgb_bytes = 0;
      if (!(c->rgb = malloc(bytes))) {
        if (!c->error)
          c->error = fap_fail(FAP_ERR_NO_MEMORY, "cpu backend: out of memory for a %dx%d YUV "
                                                 "frame", crop.width, crop.height);
        return;
      }
      c->rgb_bytes = bytes;
    }
    fap_frame_to_rgb(f, c->rgb);
    packed = (fap_frame){FAP_PIXEL_RGB, crop.width, crop.height, (size_t)crop.width * 3, c->rgb};
  } else {
    packed = *f;
  }
  fap_status s = cpu_preprocess(ctx, image, &packed, size, NULL);
  if (s && !c->error)
    c->error = s;
}

static void cpu_blend_frames(void *ctx, const float *maps, int size) {
  cpu_ctx *c = ctx;
  fap_status s = c->blend ? fap_frame_blend(c->frame, maps, size, c->blend) : FAP_OK;
  if (s && !c->error)
    c->error = s;
}

static void cpu_frames_mark(void *ctx, int stage) {
  cpu_ctx *c = ctx;
  if ((unsigned)stage >= FAP_STAGE_COUNT)
    return;
  c->mark_ms[stage] = clock_ms();
  c->marked |= 1u << stage;
}

static fap_status cpu_frames_end(void *ctx, fap_result *results) {
  cpu_ctx *c = ctx;
  fap_status s = cpu_synchronize(ctx);
  double at = c->start_ms;
  for (int i = 0; i < FAP_STAGE_COUNT; i++)
    if (c->marked & (1u << i)) {
      results[0].stage_ms[i] = c->mark_ms[i] - at;
      at = c->mark_ms[i];
    }
  results[0].frame_bytes_to_device = results[0].frame_bytes_from_device = 0;
  c->frame = NULL;
  return s;
}

static const void *cpu_frames_output(void *ctx, const void *buffer) {
  (void)ctx;
  return buffer;
}

/* ---- table ---------------------------------------------------------------- */

static void cpu_destroy(void *ctx) {
  cpu_ctx *c = ctx;
  if (!c)
    return;
  free_table(&c->tx);
  free_table(&c->ty);
  free(c->pre_tmp);
  free(c->rgb);
  free(c->scores);
  fap_attention_ws_free(&c->att_ws);
  fap_attention_bf16_ws_free(&c->att_bf16_ws);
  fap_dnnl_free(c->dnnl);
  fap_dnnl_f32_free(c->dnnl_f32);
  free(c->roles);
  free(c);
}

static const fap_backend_ops cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .alloc_frames = cpu_alloc_frames,
    .import_weights = cpu_import_weights,
    .weight_role = cpu_weight_role,
    .upload = cpu_copy,
    .download = cpu_copy,
    .synchronize = cpu_synchronize,
    .preprocess = cpu_preprocess,
    .im2col = cpu_im2col,
    .linear = cpu_linear,
    .matmul = cpu_matmul,
    .layernorm = cpu_layernorm,
    .quickgelu = cpu_quickgelu,
    .relu = cpu_relu,
    .add = cpu_add,
    .add_row = cpu_add_row,
    .copy2d = cpu_copy2d,
    .attention = cpu_attention,
    .l2norm_rows = cpu_l2norm_rows,
    .two_way_prob = cpu_two_way_prob,
    .reduce_max = cpu_reduce_max,
    .topk = cpu_topk,
    .gather_rows = cpu_gather_rows,
    .mean_rows = cpu_mean_rows,
    .upsample_mean = cpu_upsample_mean,
    .gaussian_blur = cpu_gaussian_blur,
    .attention_dual = cpu_attention_dual,
    .attention_cached = cpu_attention_cached,
    .faprompt_score = cpu_faprompt_score,
    .frames_begin = cpu_frames_begin,
    .frames_pass = cpu_frames_pass,
    .preprocess_frames = cpu_preprocess_frames,
    .blend_frames = cpu_blend_frames,
    .frames_mark = cpu_frames_mark,
    .frames_end = cpu_frames_end,
    .frames_output = cpu_frames_output,
};

/* The f32 linear layers' GEMM, chosen from the CPU (linear_f32_dnnl.h); the
 * attention's and the other products stay on OpenBLAS (the fused attention
 * kernel does most of that work). Logged once per process. */
static void open_f32_gemm(cpu_ctx *c) {
  const char *why = NULL;
  fap_cpu_gemm g = fap_cpu_gemm_choose(&why);
  if (g == FAP_GEMM_DNNL && fap_dnnl_f32_new(c->threads, &c->dnnl_f32) != FAP_OK)
    why = "oneDNN could not start (logged above)";
  static int told;
  if (!__atomic_exchange_n(&told, 1, __ATOMIC_RELAXED)) {
    if (c->dnnl_f32)
      fap_log(FAP_LOG_INFO, "cpu backend: f32 linear layers through oneDNN (%s): %s",
              fap_dnnl_isa_name(), why);
#ifdef FAP_HAVE_OPENBLAS
    else
      fap_log(FAP_LOG_INFO, "cpu backend: f32 linear layers through OpenBLAS (%s kernels): %s",
              openblas_get_corename(), why);
#endif
  }
}

/* The reduced precisions run where they are faster than f32; everywhere
 * else the backend says why at INFO level and computes in f32. auto is bf16
 * where the CPU has bf16 units (AVX512-BF16, AMX: about twice f32's speed,
 * within docs/SPEC.md's reduced-precision contract), f32 elsewhere. */
static fap_precision open_precision(cpu_ctx *c, fap_precision p) {
  if (p == FAP_PRECISION_AUTO) {
    if (c->reference || !fap_dnnl_has_bf16_units()) {
      fap_log(FAP_LOG_INFO, "cpu backend: precision auto: f32 (%s)",
              c->reference ? "the reference loops" : "this CPU has no bf16 units");
      return FAP_PRECISION_F32;
    }
    p = FAP_PRECISION_BF16;
    if (fap_dnnl_new(p, c->threads, &c->dnnl, &(const char *){NULL}) != FAP_OK) {
      fap_log(FAP_LOG_INFO, "cpu backend: precision auto: f32 (oneDNN could not start)");
      return FAP_PRECISION_F32;
    }
    fap_log(FAP_LOG_INFO, "cpu backend: precision auto: bf16 linear layers through oneDNN (%s); "
                          "precision f32 computes as the reference does",
            fap_dnnl_isa_name());
    return p;
  }
  if (p == FAP_PRECISION_F32)
    return FAP_PRECISION_F32;
  const char *why = NULL;
  if (c->reference)
    why = "the reference loops compute in f32";
  else if (p == FAP_PRECISION_F16)
    why = "the CPU backend has no f16 matrix products (bf16 and int8 it has)";
  else if (fap_dnnl_new(p, c->threads, &c->dnnl, &why) != FAP_OK && !why)
    why = "oneDNN could not start (logged above)";
  if (why) {
    fap_log(FAP_LOG_INFO, "cpu backend: precision %s requested, computing in f32: %s",
            fap_precision_name(p), why);
    return FAP_PRECISION_F32;
  }
  fap_log(FAP_LOG_INFO, "cpu backend: linear layers in %s through oneDNN (%s)",
          fap_precision_name(p), fap_dnnl_isa_name());
  return p;
}

fap_status fap_backend_cpu_new(int threads, int reference, fap_backend *out) {
  return fap_backend_cpu_new_precision(threads, reference, FAP_PRECISION_F32, out, NULL);
}

fap_status fap_backend_cpu_new_precision(int threads, int reference, fap_precision precision,
                                         fap_backend *out, fap_precision *runs) {
  cpu_ctx *c = calloc(1, sizeof *c);
  if (!c)
    return fap_fail(FAP_ERR_NO_MEMORY, "cpu backend: out of memory");
#ifdef _OPENMP
  if (threads <= 0)
    threads = omp_get_num_procs();
#else
  threads = 1;
#endif
  c->threads = threads;
  c->reference = reference;
  c->att_kernel = fap_attention_kernel_named(getenv("FAP_CPU_ATTENTION"));
#ifdef FAP_HAVE_OPENBLAS
  /* process-wide in OpenBLAS: the last detector created decides */
  openblas_set_num_threads(threads);
  /* Which OpenBLAS answers is the system's choice where no RUNPATH pins it
   * (packages: Debian's libopenblas.so.0 alternative, where the pthread
   * build outranks the OpenMP one): say so once, it costs half the speed. */
  static int warned;
  if (openblas_get_parallel() == 1 && threads > 1 && !__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
    fap_log(FAP_LOG_WARNING,
            "cpu backend: OpenBLAS is its pthread build, whose threads compete with faprompt's "
            "OpenMP threads (about half the speed per frame); install libopenblas0-openmp and "
            "select it: update-alternatives --set libopenblas.so.0-%s "
            "/usr/lib/%s/openblas-openmp/libopenblas.so.0",
            FAP_MULTIARCH, FAP_MULTIARCH);
#else
  if (!reference)
    fap_log(FAP_LOG_WARNING, "cpu backend: built without OpenBLAS, using the slow reference loops");
#endif
  if (!reference)
    open_f32_gemm(c);
  fap_precision p = open_precision(c, precision);
  /* FAP_CPU_BF16_ATTENTION=f32 keeps bf16's attention in f32 (A/B runs) */
  const char *att = getenv("FAP_CPU_BF16_ATTENTION");
  c->att_bf16 = p == FAP_PRECISION_BF16 && !(att && strcmp(att, "f32") == 0);
  if (runs)
    *runs = p;
  out->ops = &cpu_ops;
  out->ctx = c;
  return FAP_OK;
}
