/* Every operation and kernel of the CUDA backend against the CPU backend
 * (core/backend_cpu.c, the reference semantics) or a direct computation in
 * double precision, on random data with odd sizes and padded strides.
 *
 * Built twice: against the device (suite 'gpu'; exit 77 where no CUDA device
 * is usable) and against the host kernel emulator (suite 'emu').
 *
 * Error bounds (u = unit roundoff of the 16-bit type: 2^-11 for f16, 2^-8
 * for bf16; inputs of matrix products are rounded to it, as the backend
 * does, accumulation is f32):
 *   op linear, gemm            |got - exact(rounded inputs)| <= 1e-5 sum|x w| + r(y) (16-bit y)
 *                              (op linear of f32 x into f32 y: x as it is, weights rounded)
 *                              |got - cpu| <= 3 u sum|x w|   (the rounding itself)
 *   op matmul (f32)            |got - exact| <= 1e-5 sum|x w|, |got - cpu| <= 2e-5 sum|x w|
 *   op attention (f32)         1e-5 max|v|
 *   flash attention            4 u max|v| + r(o) vs exact on rounded q, k, v (the
 *                              probabilities are rounded to the 16-bit type before p v)
 *   attention kernel (any hd)  2e-5 + r(o)   (f32 math on rounded inputs)
 *   layernorm                  1e-5 (1 + |y|) + r(y) for a 16-bit y
 *   quickgelu                  2e-6 |y| + r(y);  convert: exact rounding
 *   where r(y) = 2 u |y| + 6e-8 is the rounding of a 16-bit result (half an
 *   ulp, doubled for the device's last-bit differences, plus f16's subnormal
 *   spacing)
 *   l2norm, mean_rows          2e-6 relative; two_way 2e-6 absolute
 *   linear_rows                1e-5 sum|x w| (+ |y0|) against the rounded weights
 *   preprocess (every format), upsample_mean, gaussian_blur, topk, gather,
 *   im2col, add, add_row (batched), relu, copy2d, reduce_max, score: exact.
 *
 * The ops of combined attention, on f32 buffers: attention_dual and
 * attention_cached as op attention (2e-5 = 1e-5 max|v|, inputs in [-2, 2]);
 * the cache rows a pass stores are its keys and values converted to f32,
 * exactly, and nothing else in the cache changes (both backends).
 *
 * Activation buffers (alloc_frames FAP_BUFFER_ACTIVATION: the precision type
 * behind a handle that maps no memory) are set and read through linear with
 * the identity, which is exact both ways (checked). On them:
 *   layernorm -> linear        per element sum_i |w~| (1e-5 (1 + |h|) + r(h)) + |h| |w~ - w|
 *                              + 2e-5 (sum|h w| + |b|) + 1e-6: the layernorm bound
 *                              carried through the product, w's rounding, both
 *                              accumulations (h the CPU's, w~ the rounded weights)
 *   im2col -> linear           as op linear (its inputs are rounded exactly)
 *   quickgelu                  2e-6 |y| + r(y) on the rounded input
 *   attention_dual, _cached    the kernel the op takes: flash 4 u max|v| + r(o),
 *                              the attention kernel 2e-5 + r(o), against the CPU on
 *                              the rounded q, k, v (the cache stays f32)
 * The frame scope (frame_scope): three frames through one description
 * against the CPU running each alone; its bounds are stated there.
 */
#include "fap.h"

#include "backend.h"
#include "fap_kernels.h"
#include "half.h"
#include "score.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures, checks;
static fap_backend cpu, cuda;
static fap_stream S;
static fap_blas *BL;
static fap_kdtype T; /* the 16-bit type of this pass */
static double U;     /* its unit roundoff */

static void report(const char *what, double err, double tol) {
  checks++;
  const int ok = err <= tol; /* NaN fails */
  if (!ok)
    failures++;
  if (!ok || getenv("FAP_TEST_VERBOSE"))
    printf("%s %-52s err %10.3g  tol %10.3g\n", ok ? "ok  " : "FAIL", what, err, tol);
}

/* ---- data ------------------------------------------------------------------------------ */

static uint64_t rs = 88172645463325252ull;
static double urand(void) {
  rs ^= rs << 13;
  rs ^= rs >> 7;
  rs ^= rs << 17;
  return (double)(rs >> 11) / 9007199254740992.0;
}
static float frand(double lo, double hi) { return (float)(lo + (hi - lo) * urand()); }

/* rounding of a result to the 16-bit type: half an ulp, doubled for the
 * device's own last-bit differences, plus f16's subnormal spacing */
static double r16(double y) { return 2 * U * fabs(y) + 6e-8; }

static float *rnd(size_t n, double lo, double hi) {
  float *p = malloc(n * sizeof(float) + 4);
  for (size_t i = 0; i < n; i++)
    p[i] = frand(lo, hi);
  return p;
}

static uint16_t to16(float f) {
  if (T == FAP_K_F16)
    return fap_f32_to_f16(f);
  uint32_t x;
  memcpy(&x, &f, 4);
  x += 0x7fff + ((x >> 16) & 1);
  return (uint16_t)(x >> 16);
}
static float from16(uint16_t v) { return T == FAP_K_F16 ? fap_f16_to_f32(v) : fap_bf16_to_f32(v); }
static float round16(float f) { return from16(to16(f)); }

static uint16_t *narrow(const float *x, size_t n) {
  uint16_t *p = malloc(n * 2 + 2);
  for (size_t i = 0; i < n; i++)
    p[i] = to16(x[i]);
  return p;
}

static float *widen(const uint16_t *x, size_t n) {
  float *p = malloc(n * sizeof(float) + 4);
  for (size_t i = 0; i < n; i++)
    p[i] = from16(x[i]);
  return p;
}

/* ---- device memory ------------------------------------------------------------------------ */

static void *put(const void *host, size_t bytes) {
  void *p = NULL;
  if (fap_rt_malloc(&p, bytes ? bytes : 1) || fap_rt_h2d(p, host, bytes, S) ||
      fap_rt_stream_sync(S)) {
    printf("device memory: %s\n", fap_rt_error());
    exit(1);
  }
  return p;
}

static void *blank(size_t bytes) { /* NaN-patterned */
  void *p = NULL;
  if (fap_rt_malloc(&p, bytes ? bytes : 1) || fap_rt_memset(p, 0xff, bytes, S)) {
    printf("device memory: %s\n", fap_rt_error());
    exit(1);
  }
  return p;
}

static void *get(const void *dev, size_t bytes) {
  void *h = malloc(bytes + 4);
  if (fap_rt_stream_sync(S) || fap_rt_d2h(h, dev, bytes, S) || fap_rt_stream_sync(S)) {
    printf("download: %s\n", fap_rt_error());
    exit(1);
  }
  return h;
}

static void launched(int rc, const char *what) {
  if (rc) {
    printf("FAIL %s: launch returned %d: %s\n", what, rc, fap_rt_error());
    failures++;
  }
}

/* the CUDA backend's memory and op synchronisation */
static float *cuda_put(const float *host, size_t n) {
  float *p = cuda.ops->alloc(cuda.ctx, n * sizeof(float));
  cuda.ops->upload(cuda.ctx, p, host, n * sizeof(float));
  return p;
}

static float *cuda_get(const float *dev, size_t n) {
  float *h = malloc(n * sizeof(float) + 4);
  fap_status s = cuda.ops->synchronize(cuda.ctx);
  if (s) {
    printf("FAIL cuda op: %s\n", fap_status_string(s));
    failures++;
  }
  cuda.ops->download(cuda.ctx, h, dev, n * sizeof(float));
  return h;
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
  double e = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    if (!(d <= e))
      e = isnan(d) ? INFINITY : d;
  }
  return e;
}

/* Weights handed to import_weights must outlive the backend (the CUDA
 * backend keys its device copies by their host address, as the detector's
 * model does): kept here until the pass ends. */
static void *kept[256];
static int n_kept;
static void *keep(void *p) {
  if (n_kept < 256)
    kept[n_kept++] = p;
  return p;
}
static void release_kept(void) {
  while (n_kept)
    free(kept[--n_kept]);
}

/* ---- the op table ----------------------------------------------------------------------------- */

static void op_linear(int rows, int in, int out, int ldx, int ldy, int with_bias, int accumulate,
                      int in_out) {
  float *x = rnd((size_t)rows * ldx, -1, 1), *w = keep(rnd((size_t)in * out, -0.5, 0.5));
  float *b = keep(rnd(out, -0.5, 0.5)), *y0 = rnd((size_t)rows * ldy, -1, 1);
  float *ycpu = malloc((size_t)rows * ldy * sizeof(float));
  memcpy(ycpu, y0, (size_t)rows * ldy * sizeof(float));
  const float *wc = cpu.ops->import_weights(cpu.ctx, w, (size_t)in * out);
  const float *bc = cpu.ops->import_weights(cpu.ctx, b, out);
  const float *wg = cuda.ops->import_weights(cuda.ctx, w, (size_t)in * out);
  const float *bg = cuda.ops->import_weights(cuda.ctx, b, out);
  float *xd = cuda_put(x, (size_t)rows * ldx), *yd = cuda_put(y0, (size_t)rows * ldy);
  if (in_out) {
    cpu.ops->matmul(cpu.ctx, ycpu, ldy, x, ldx, wc, rows, in, out);
    cuda.ops->matmul(cuda.ctx, yd, ldy, xd, ldx, wg, rows, in, out);
  } else {
    cpu.ops->linear(cpu.ctx, ycpu, ldy, x, ldx, wc, with_bias ? bc : NULL, rows, in, out,
                    accumulate);
    cuda.ops->linear(cuda.ctx, yd, ldy, xd, ldx, wg, with_bias ? bg : NULL, rows, in, out,
                     accumulate);
  }
  float *got = cuda_get(yd, (size_t)rows * ldy);
  double worst_exact = 0, worst_cpu = 0;
  for (int r = 0; r < rows; r++)
    for (int o = 0; o < ldy; o++) {
      const size_t i = (size_t)r * ldy + o;
      if (o >= out) { /* padding untouched */
        if (got[i] != y0[i])
          worst_exact = INFINITY;
        continue;
      }
      double acc = 0, mag = 0;
      for (int k = 0; k < in; k++) {
        /* linear rounds its weights to the 16-bit type, and an f32 x into
         * an f32 y stays as it is (the row kernel; an activation x is
         * 16-bit already); matmul (the final projections) stays in f32 */
        const float xf = x[(size_t)r * ldx + k], wf = in_out ? w[(size_t)k * out + o] : w[(size_t)o * in + k];
        const double xv = xf, wv = in_out ? wf : round16(wf);
        acc += xv * wv;
        mag += fabs(xv * wv);
      }
      if (!in_out && with_bias)
        acc += b[o];
      if (!in_out && accumulate)
        acc += y0[i];
      worst_exact = fmax(worst_exact, fabs(got[i] - acc) / (1e-5 * mag + 1e-6));
      worst_cpu = fmax(worst_cpu, fabs(got[i] - ycpu[i]) / ((in_out ? 2e-5 : 3 * U) * mag + 1e-5));
    }
  char what[128];
  snprintf(what, sizeof what, "op %s %dx%dx%d%s%s", in_out ? "matmul" : "linear", rows, in, out,
           with_bias ? " +b" : "", accumulate ? " +=" : "");
  report(what, worst_exact, 1.0);
  snprintf(what, sizeof what, "op %s %dx%dx%d vs cpu", in_out ? "matmul" : "linear", rows, in,
           out);
  report(what, worst_cpu, 1.0);
  cuda.ops->release(cuda.ctx, xd);
  cuda.ops->release(cuda.ctx, yd);
  free(x), free(y0), free(ycpu), free(got);
}

/* CPU and CUDA through the same op on the same inputs; n outputs compared */
typedef void (*both_fn)(const fap_backend *be, float **bufs, void *arg);

static void op_compare(const char *what, both_fn fn, void *arg, float **host_in, size_t *sizes,
                       int nbufs, int out_index, double tol, int relative) {
  float *dev[8], *cpub[8];
  for (int i = 0; i < nbufs; i++) {
    dev[i] = cuda_put(host_in[i], sizes[i]);
    cpub[i] = malloc(sizes[i] * sizeof(float) + 4);
    memcpy(cpub[i], host_in[i], sizes[i] * sizeof(float));
  }
  fn(&cpu, cpub, arg);
  fn(&cuda, dev, arg);
  float *got = cuda_get(dev[out_index], sizes[out_index]);
  double err = 0;
  for (size_t i = 0; i < sizes[out_index]; i++) {
    double ref = cpub[out_index][i], d = fabs(got[i] - ref);
    if (relative)
      d /= fmax(fabs(ref), 1e-30);
    if (!(d <= err))
      err = isnan(d) ? INFINITY : d;
  }
  report(what, err, tol);
  for (int i = 0; i < nbufs; i++) {
    cuda.ops->release(cuda.ctx, dev[i]);
    free(cpub[i]);
  }
  free(got);
}

typedef struct {
  int rows, dim, ld, k, n, grid, size, radius, nq, nk, heads, hd, q_pos0;
  const float *w, *b;
} op_arg;

static void f_layernorm(const fap_backend *be, float **v, void *a_) {
  op_arg *a = a_;
  const float *w = be->ops->import_weights(be->ctx, a->w, a->dim);
  const float *b = be->ops->import_weights(be->ctx, a->b, a->dim);
  be->ops->layernorm(be->ctx, v[1], a->ld, v[0], a->ld, w, b, a->rows, a->dim);
}
static void f_quickgelu(const fap_backend *be, float **v, void *a_) {
  be->ops->quickgelu(be->ctx, v[0], (size_t)((op_arg *)a_)->n);
}
static void f_relu(const fap_backend *be, float **v, void *a_) {
  be->ops->relu(be->ctx, v[0], (size_t)((op_arg *)a_)->n);
}
static void f_add(const fap_backend *be, float **v, void *a_) {
  be->ops->add(be->ctx, v[0], v[1], (size_t)((op_arg *)a_)->n);
}
static void f_add_row(const fap_backend *be, float **v, void *a_) {
  op_arg *a = a_;
  be->ops->add_row(be->ctx, v[0], a->ld, v[1], a->rows, a->dim);
}
static void f_copy2d(const fap_backend *be, float **v, void *a_) {
  op_arg *a = a_;
  const float *src = be->ops->import_weights(be->ctx, a->w, (size_t)a->rows * a->dim);
  be->ops->copy2d(be->ctx, v[0], (size_t)a->ld * 4, src + 1, (size_t)a->dim * 4,
                  (size_t)a->rows - 1, (size_t)(a->dim - 1) * 4);
}
static void f_attention(const fap_backend *be, float **v, void *a_) {
  op_arg *a = a_;
  const int c = a->heads * a->hd;
  be->ops->attention(be->ctx, v[1], c + 3, v[0], 3 * c + 1, v[0] + c, 3 * c + 1, v[0] + 2 * c,
                     3 * c + 1, a->nq, a->nk, a->heads, a->hd, a->q_pos0);
}
static void f_l2norm(const fap_backend *be, float **v, void *a_) {
  op_arg *a = a_;
  be->ops->l2norm_rows(be->ctx, v[1], a->dim, v[0], a->ld, a->rows, a->dim);
}
static void f_two_way(const fap_backend *be, float **v, void *a_) {
  op_arg *a = a_;
  be->ops->two_way_prob(be->ctx, v[2], v[0], a->ld, a->rows, a->dim, v[1], v[1] + a->dim,
                        1.0f / 0.07f);
}
static void f_reduce_max(const fap_backend *be, float **v, void *a_) {
  be->ops->reduce_max(be->ctx, v[1], v[0], ((op_arg *)a_)->n);
}
static void f_topk(const fap_backend *be, float **v, void *a_) {
  op_arg *a = a_;
  be->ops->topk(be->ctx, (int32_t *)v[1], v[0], a->n, a->k);
}
static void f_gather(const fap_backend *be, float **v, void *a_) {
  op_arg *a = a_;
  be->ops->gather_rows(be->ctx, v[2], v[0], a->ld, (const int32_t *)v[1], a->k, a->dim);
}
static void f_mean_rows(const fap_backend *be, float **v, void *a_) {
  op_arg *a = a_;
  be->ops->mean_rows(be->ctx, v[1], v[0], a->rows, a->dim);
}
static void f_upsample(const fap_backend *be, float **v, void *a_) {
  op_arg *a = a_;
  be->ops->upsample_mean(be->ctx, v[2], v[0], v[1], a->grid, a->size);
}
static void f_gaussian(const fap_backend *be, float **v, void *a_) {
  op_arg *a = a_;
  be->ops->gaussian_blur(be->ctx, v[1], v[0], v[3], a->size, v[2], a->radius);
}
static void f_im2col(const fap_backend *be, float **v, void *a_) {
  op_arg *a = a_;
  be->ops->im2col(be->ctx, v[1], v[0], a->size, a->k);
}
/* v[0] rows of [q | k | v] (ld 3c + 8), v[1] out_x, v[2] out_y (ld c + 3) */
static void f_attention_dual(const fap_backend *be, float **v, void *a_) {
  op_arg *a = a_;
  const int c = a->heads * a->hd;
  be->ops->attention_dual(be->ctx, v[1], v[2], c + 3, v[0], 3 * c + 8, a->nk, a->nq, a->heads,
                          a->hd);
}
static void f_score(const fap_backend *be, float **v, void *a_) {
  (void)a_;
  be->ops->faprompt_score(be->ctx, v[0]);
}

/* ---- activation buffers (FAP_BUFFER_ACTIVATION) --------------------------------------------- */

/* An activation frame buffer of rows x ld elements, one frame. Its handle is
 * an address range that maps no memory: it only ever goes to ops. */
static float *act_alloc(int rows, int ld) {
  const size_t bytes = (size_t)rows * ld * sizeof(float);
  float *p = cuda.ops->alloc_frames(cuda.ctx, bytes, bytes, FAP_BUFFER_ACTIVATION);
  if (!p) {
    printf("alloc_frames (activation, %zu bytes) failed\n", bytes);
    exit(1);
  }
  return p;
}

/* the n x n identity as weights (kept: imported weights outlive the backend) */
static const float *eye(int n) {
  float *w = keep(calloc((size_t)n * n, sizeof(float)));
  for (int i = 0; i < n; i++)
    w[(size_t)i * n + i] = 1.0f;
  return w;
}

/* Activations are set and read through linear with the identity, never
 * through their handle: into one, f32 x is rounded to the type and the
 * product (one nonzero term, f32 accumulation) rounded again: it holds
 * round16(x) exactly; out of one, the 16-bit values times 1 into f32: exact
 * (act_roundtrip checks both). */
static void act_load(float *act, int ld, const float *host, int ldh, int rows, int cols) {
  float *d = cuda_put(host, (size_t)rows * ldh);
  const float *w = cuda.ops->import_weights(cuda.ctx, eye(cols), (size_t)cols * cols);
  cuda.ops->linear(cuda.ctx, act, ld, d, ldh, w, NULL, rows, cols, cols, 0);
  free(cuda_get(d, 1)); /* waits; reports a failure */
  cuda.ops->release(cuda.ctx, d);
}

/* rows x cols of an activation (row stride ld) -> host f32 [rows, cols] */
static float *act_read(const float *act, int ld, int rows, int cols) {
  float *d = cuda.ops->alloc(cuda.ctx, (size_t)rows * cols * sizeof(float));
  const float *w = cuda.ops->import_weights(cuda.ctx, eye(cols), (size_t)cols * cols);
  cuda.ops->linear(cuda.ctx, d, cols, act, ld, w, NULL, rows, cols, cols, 0);
  float *h = cuda_get(d, (size_t)rows * cols);
  cuda.ops->release(cuda.ctx, d);
  return h;
}

static float *rounded(const float *x, size_t n) { /* round16 of each element, as f32 */
  float *r = malloc(n * sizeof(float) + 4);
  for (size_t i = 0; i < n; i++)
    r[i] = round16(x[i]);
  return r;
}

/* attention_cached of `prompts` prompts, rows each, at positions pos0.. over
 * a cache whose layout is not the detector's tight one (values_offset and
 * cache_stride leave gaps, both NaN; positions past the pass), CUDA against
 * the CPU on the same values: with act, qkv and out are activations (the
 * detector's text encoder: the CPU gets the rounded qkv); without, f32
 * buffers from alloc. Cached rows at positions >= pos0 hold large keys and
 * values, so taking this pass's keys from there (not from its rows) shows.
 * Afterwards, on both backends, every cache element outside this pass's rows
 * is as it was, and with store those rows hold the pass's keys and values
 * converted to f32, exactly. */
static void op_cached(int prompts, int rows, int pos0, int heads, int hd, int store, int act) {
  const int dim = heads * hd, n = prompts * rows, ldq = 3 * dim + 8, ldo = dim + 8;
  const int lmax = pos0 + rows + 2;
  const size_t voff = (size_t)lmax * dim + 4, cstride = voff + (size_t)lmax * dim + 4;
  const size_t cn = (size_t)prompts * cstride;
  float *x = rnd((size_t)n * ldq, -2, 2);
  float *xr = act ? rounded(x, (size_t)n * ldq) : x; /* the values the CUDA op sees */
  float *cache0 = malloc(cn * sizeof(float));
  for (size_t i = 0; i < cn; i++)
    cache0[i] = NAN;
  for (int p = 0; p < prompts; p++)
    for (int j = 0; j < lmax; j++)
      for (int d = 0; d < dim; d++) {
        float *kj = cache0 + p * cstride + (size_t)j * dim + d;
        kj[0] = j < pos0 ? frand(-2, 2) : 40.0f;
        kj[voff] = j < pos0 ? frand(-2, 2) : 1e4f;
      }
  /* the CPU */
  float *ccpu = malloc(cn * sizeof(float)), *ocpu = malloc((size_t)n * ldo * sizeof(float));
  memcpy(ccpu, cache0, cn * sizeof(float));
  cpu.ops->attention_cached(cpu.ctx, ocpu, ldo, xr, ldq, prompts, rows, pos0, ccpu, cstride, voff,
                            store, heads, hd);
  /* CUDA */
  float *cdev = cuda_put(cache0, cn), *qd, *od, *og;
  if (act) {
    qd = act_alloc(n, ldq);
    od = act_alloc(n, ldo);
    act_load(qd, ldq, x, ldq, n, 3 * dim);
  } else {
    qd = cuda_put(x, (size_t)n * ldq);
    od = cuda_put(ocpu, (size_t)n * ldo); /* overwritten */
  }
  cuda.ops->attention_cached(cuda.ctx, od, ldo, qd, ldq, prompts, rows, pos0, cdev, cstride, voff,
                             store, heads, hd);
  if (act)
    og = act_read(od, ldo, n, dim);
  else {
    float *full = cuda_get(od, (size_t)n * ldo);
    og = malloc((size_t)n * dim * sizeof(float));
    for (int r = 0; r < n; r++)
      memcpy(og + (size_t)r * dim, full + (size_t)r * ldo, dim * sizeof(float));
    free(full);
  }
  float *cg = cuda_get(cdev, cn);
  double err = 0;
  for (int r = 0; r < n; r++)
    for (int d = 0; d < dim; d++) {
      const double want = ocpu[(size_t)r * ldo + d], got = og[(size_t)r * dim + d];
      const double e = fabs(got - want) / (act ? 2e-5 + r16(want) : 2e-5);
      err = fmax(err, isnan(e) ? INFINITY : e);
    }
  int bad[2] = {0, 0};
  for (int be = 0; be < 2; be++) {
    const float *c = be ? ccpu : cg;
    for (int p = 0; p < prompts; p++)
      for (size_t i = 0; i < cstride; i++) {
        const size_t at_ = p * cstride + i;
        const int in_values = i >= voff;
        const size_t e = in_values ? i - voff : i;
        const int j = (int)(e / dim), d = (int)(e % dim);
        const int pass_row = e < (size_t)lmax * dim && j >= pos0 && j < pos0 + rows;
        if (!pass_row)
          bad[be] += memcmp(&c[at_], &cache0[at_], sizeof(float)) != 0;
        else if (store) {
          const size_t src = ((size_t)p * rows + j - pos0) * ldq + (in_values ? 2 : 1) * dim + d;
          bad[be] += memcmp(&c[at_], &xr[src], sizeof(float)) != 0;
        }
      }
  }
  char what[128];
  snprintf(what, sizeof what, "op attention_cached %s %dx%d pos0 %d hd %d%s", act ? "act" : "f32",
           prompts, rows, pos0, hd, store ? " store" : "");
  report(what, err, 1.0);
  const char *kept_ = store ? "stored rows exact, rest untouched" : "untouched but the pass's rows";
  snprintf(what, sizeof what, "  cache after it (cuda): %s", kept_);
  report(what, bad[0], 0);
  snprintf(what, sizeof what, "  cache after it (cpu): %s", kept_);
  report(what, bad[1], 0);
  cuda.ops->release(cuda.ctx, cdev);
  cuda.ops->release(cuda.ctx, qd);
  cuda.ops->release(cuda.ctx, od);
  if (xr != x)
    free(xr);
  free(x), free(cache0), free(ccpu), free(ocpu), free(og), free(cg);
}

static void table_ops(void) {
  op_linear(7, 33, 19, 40, 21, 1, 0, 0);
  op_linear(5, 64, 48, 64, 50, 1, 1, 0);
  op_linear(1, 100, 7, 100, 7, 0, 0, 0);
  op_linear(9, 24, 17, 30, 20, 0, 0, 1);

  {
    op_arg a = {.rows = 13, .dim = 70, .ld = 75};
    float *w = keep(rnd(70, 0.5, 1.5)), *b = keep(rnd(70, -0.2, 0.2));
    a.w = w, a.b = b;
    float *in[2] = {rnd(13 * 75, -3, 5), rnd(13 * 75, 0, 1)};
    size_t sz[2] = {13 * 75, 13 * 75};
    op_compare("op layernorm 13x70 ld 75", f_layernorm, &a, in, sz, 2, 1, 1e-5 * 6, 0);
    free(in[0]), free(in[1]);
  }
  {
    op_arg a = {.n = 1001};
    float *in[2] = {rnd(1001, -6, 6), rnd(1001, -6, 6)};
    size_t sz[2] = {1001, 1001};
    op_compare("op quickgelu 1001", f_quickgelu, &a, in, sz, 1, 0, 2e-6, 1);
    op_compare("op relu 1001", f_relu, &a, in, sz, 1, 0, 0, 0);
    op_compare("op add 1001", f_add, &a, in, sz, 2, 0, 0, 0);
    free(in[0]), free(in[1]);
  }
  {
    op_arg a = {.rows = 5, .dim = 30, .ld = 37};
    float *in[2] = {rnd(5 * 37, -1, 1), rnd(30, -1, 1)};
    size_t sz[2] = {5 * 37, 30};
    op_compare("op add_row 5x30 ld 37", f_add_row, &a, in, sz, 2, 0, 0, 0);
    float *src = keep(rnd(9 * 11, -1, 1));
    op_arg c = {.rows = 9, .dim = 11, .ld = 14, .w = src};
    float *in2[1] = {rnd(9 * 14, -1, 1)};
    size_t sz2[1] = {9 * 14};
    op_compare("op copy2d from weights", f_copy2d, &c, in2, sz2, 1, 0, 0, 0);
    free(in[0]), free(in[1]), free(in2[0]);
  }
  {
    const int cases[][5] = {/* nq nk heads hd q_pos0 */ {17, 17, 4, 16, -1}, {6, 12, 3, 24, 6},
                            {1, 40, 2, 64, -1}, {9, 9, 2, 12, 0}};
    for (int i = 0; i < 4; i++) {
      op_arg a = {.nq = cases[i][0], .nk = cases[i][1], .heads = cases[i][2], .hd = cases[i][3],
                  .q_pos0 = cases[i][4]};
      const int c = a.heads * a.hd, rows = a.nq > a.nk ? a.nq : a.nk;
      float *in[2] = {rnd((size_t)rows * (3 * c + 1), -2, 2), rnd((size_t)a.nq * (c + 3), 0, 1)};
      size_t sz[2] = {(size_t)rows * (3 * c + 1), (size_t)a.nq * (c + 3)};
      char what[96];
      snprintf(what, sizeof what, "op attention nq %d nk %d hd %d pos0 %d", a.nq, a.nk, a.hd,
               a.q_pos0);
      op_compare(what, f_attention, &a, in, sz, 2, 1, 2e-5, 0);
      free(in[0]), free(in[1]);
    }
  }
  {
    op_arg a = {.rows = 21, .dim = 40, .ld = 43};
    float *in[3] = {rnd(21 * 43, -1, 1), rnd(21 * 40, 0, 1), NULL};
    size_t sz[3] = {21 * 43, 21 * 40, 21};
    op_compare("op l2norm_rows", f_l2norm, &a, in, sz, 2, 1, 2e-6, 1);
    free(in[1]);
    in[1] = rnd(80, -0.2, 0.2);
    in[2] = rnd(21, 0, 1);
    sz[1] = 80;
    op_compare("op two_way_prob", f_two_way, &a, in, sz, 3, 2, 2e-6, 0);
    free(in[0]), free(in[1]), free(in[2]);
  }
  {
    op_arg a = {.n = 1369, .k = 10, .dim = 24, .ld = 26};
    float *x = rnd(1370, 0, 1);
    x[100] = x[200] = x[300] = 2.0f; /* ties: lower index first */
    float *in[3] = {x, rnd(16, 0, 1), NULL};
    size_t sz[3] = {1369, 1, 0};
    op_compare("op reduce_max 1369", f_reduce_max, &a, in, sz, 2, 1, 0, 0);
    sz[1] = 10;
    op_compare("op topk 1369 / 10 (ties)", f_topk, &a, in, sz, 2, 1, 0, 0);
    float *src = rnd(50 * 26, -1, 1);
    int32_t idx[10] = {3, 49, 0, 17, 17, 8, 22, 41, 5, 30};
    float idxf[10];
    memcpy(idxf, idx, sizeof idx);
    float *in2[3] = {src, idxf, rnd(10 * 24, 0, 1)};
    size_t sz2[3] = {50 * 26, 10, 10 * 24};
    op_compare("op gather_rows", f_gather, &a, in2, sz2, 3, 2, 0, 0);
    op_arg m = {.rows = 10, .dim = 24};
    float *in3[2] = {src, rnd(24, 0, 1)};
    size_t sz3[2] = {240, 24};
    op_compare("op mean_rows", f_mean_rows, &m, in3, sz3, 2, 1, 2e-6, 1);
    free(x), free(in[1]), free(src), free(in2[2]), free(in3[1]);
  }
  {
    const int cfg[][3] = {{4, 56, 2}, {37, 518, 40}, {5, 70, 0}, {3, 28, 40}}; /* grid size r */
    for (int i = 0; i < 4; i++) {
      const int g = cfg[i][0], sz = cfg[i][1], r = cfg[i][2];
      op_arg a = {.grid = g, .size = sz, .radius = r};
      float *in[4] = {rnd((size_t)g * g, 0, 1), rnd((size_t)g * g, 0, 1),
                      rnd((size_t)sz * sz, 0, 1), NULL};
      size_t s3[3] = {(size_t)g * g, (size_t)g * g, (size_t)sz * sz};
      char what[96];
      snprintf(what, sizeof what, "op upsample_mean %d -> %d", g, sz);
      op_compare(what, f_upsample, &a, in, s3, 3, 2, 0, 0);
      float *k = malloc((2 * (size_t)r + 1) * sizeof(float));
      double sum = 0;
      for (int j = -r; j <= r; j++)
        sum += k[j + r] = (float)exp(-0.5 * j * j / 100.0);
      for (int j = 0; j <= 2 * r; j++)
        k[j] = (float)(k[j] / sum);
      float *in4[4] = {in[2], rnd((size_t)sz * sz, 0, 1), k, rnd((size_t)sz * sz, 0, 1)};
      size_t s4[4] = {(size_t)sz * sz, (size_t)sz * sz, 2 * (size_t)r + 1, (size_t)sz * sz};
      snprintf(what, sizeof what, "op gaussian_blur %d r %d", sz, r);
      if (r > 0)
        op_compare(what, f_gaussian, &a, in4, s4, 4, 1, 0, 0);
      free(in[0]), free(in[1]), free(in[2]), free(in4[1]), free(k), free(in4[3]);
    }
  }
  {
    op_arg a = {.size = 56, .k = 14};
    float *in[2] = {rnd(3 * 56 * 56, -2, 2), rnd(16 * 588, 0, 1)};
    size_t sz[2] = {3 * 56 * 56, 16 * 588};
    op_compare("op im2col 56 / 14", f_im2col, &a, in, sz, 2, 1, 0, 0);
    free(in[0]), free(in[1]);
  }
  {
    /* both paths of a dual layer on f32 rows (the general kernel); out_x
     * past nq_std must keep what was there, as on the CPU */
    const int cases[][4] = {/* rows nq_std heads hd */ {17, 17, 2, 16}, {23, 1, 3, 24},
                            {30, 11, 2, 32}};
    for (int i = 0; i < 3; i++) {
      op_arg a = {.nk = cases[i][0], .nq = cases[i][1], .heads = cases[i][2], .hd = cases[i][3]};
      const int c = a.heads * a.hd;
      const size_t nqkv = (size_t)a.nk * (3 * c + 8), no = (size_t)a.nk * (c + 3);
      float *in[3] = {rnd(nqkv, -2, 2), rnd(no, 0, 1), rnd(no, 0, 1)};
      size_t sz[3] = {nqkv, no, no};
      char what[96];
      for (int path = 1; path <= 2; path++) {
        snprintf(what, sizeof what, "op attention_dual rows %d std %d hd %d: %s", a.nk, a.nq,
                 a.hd, path == 1 ? "out_x" : "out_y (V-V)");
        op_compare(what, f_attention_dual, &a, in, sz, 3, path, 2e-5, 0);
      }
      free(in[0]), free(in[1]), free(in[2]);
    }
  }
  op_cached(3, 4, 5, 2, 16, 0, 0);
  op_cached(2, 6, 0, 2, 16, 1, 0);
  op_cached(2, 3, 4, 3, 20, 1, 0);
  {
    /* the score of max1, max2, q: exact (the same f32 expression, score.h);
     * scalars[3] starts as NaN, scalars[4] must stay */
    const float cases[][3] = {{0.9f, 0.7f, 0.3f}, {0, 0, 0}, {1, 1, 1}, {0.123f, 0.987f, 0.5f}};
    for (int i = 0; i < 4; i++) {
      float s5[5] = {cases[i][0], cases[i][1], cases[i][2], NAN, -777.25f};
      float *in[1] = {s5};
      size_t sz[1] = {5};
      op_arg a = {0};
      char what[96];
      snprintf(what, sizeof what, "op faprompt_score %g %g %g", s5[0], s5[1], s5[2]);
      op_compare(what, f_score, &a, in, sz, 1, 0, 0, 0);
    }
  }
}

/* pre-processing of every format, CUDA (YUV converted on the device) against
 * the CPU backend on the host-converted RGB */
static void op_preprocess(void) {
  const int dims[][3] = {{80, 60, 56}, {33, 47, 42}, {400, 300, 56}, {50, 30, 28}, {7, 5, 70}};
  for (int di = 0; di < 5; di++) {
    const int w = dims[di][0], h = dims[di][1], size = dims[di][2];
    for (int fmt = FAP_PIXEL_RGB; fmt <= FAP_PIXEL_YUY2; fmt++) {
      /* random bytes in every plane (YUV included) with padded strides */
      fap_frame f = {(fap_pixel_format)fmt, w, h, 0, NULL};
      const int cw = (w + 1) / 2, ch = (h + 1) / 2;
      size_t bytes0;
      if (fmt <= FAP_PIXEL_XBGR)
        f.stride = (size_t)w * (fmt <= FAP_PIXEL_BGR ? 3 : 4) + 5;
      else if (fmt == FAP_PIXEL_YUY2)
        f.stride = 4 * (size_t)cw + 3;
      else
        f.stride = (size_t)w + 1;
      bytes0 = f.stride * h;
      uint8_t *p0 = malloc(bytes0), *p1 = NULL, *p2 = NULL;
      for (size_t i = 0; i < bytes0; i++)
        p0[i] = (uint8_t)(urand() * 256);
      if (fmt == FAP_PIXEL_NV12 || fmt == FAP_PIXEL_I420) {
        f.plane_stride[0] = (fmt == FAP_PIXEL_NV12 ? 2 * (size_t)cw : (size_t)cw) + 2;
        p1 = malloc(f.plane_stride[0] * ch);
        for (size_t i = 0; i < f.plane_stride[0] * ch; i++)
          p1[i] = (uint8_t)(urand() * 256);
        if (fmt == FAP_PIXEL_I420) {
          f.plane_stride[1] = (size_t)cw + 7;
          p2 = malloc(f.plane_stride[1] * ch);
          for (size_t i = 0; i < f.plane_stride[1] * ch; i++)
            p2[i] = (uint8_t)(urand() * 256);
        }
      }
      f.data = p0;
      f.plane[0] = p1;
      f.plane[1] = p2;
      f.matrix = di % 2 ? FAP_YUV_BT709 : FAP_YUV_BT601;
      f.full_range = di == 2;
      /* the CPU backend takes packed RGB: the host conversion of core/pixel.c */
      fap_frame packed = f;
      uint8_t *rgb = NULL;
      if (fmt > FAP_PIXEL_XBGR) {
        rgb = malloc((size_t)w * h * 3);
        fap_pixels px;
        memset(&px, 0, sizeof px);
        px.format = fmt, px.width = w, px.height = h;
        px.p[0] = p0, px.p[1] = p1, px.p[2] = p2;
        px.s[0] = f.stride, px.s[1] = f.plane_stride[0], px.s[2] = f.plane_stride[1];
        fap_yuv_coefficients((int)f.matrix, f.full_range, &px.to_rgb, &px.to_yuv);
        for (int y = 0; y < h; y++)
          for (int x = 0; x < w; x++)
            fap_fetch_rgb(&px, x, y, rgb + ((size_t)y * w + x) * 3);
        packed = (fap_frame){FAP_PIXEL_RGB, w, h, (size_t)w * 3, rgb};
      }
      const size_t n = 3 * (size_t)size * size;
      float *ref = malloc(n * sizeof(float));
      cpu.ops->preprocess(cpu.ctx, ref, &packed, size, NULL);
      float *dev = cuda.ops->alloc(cuda.ctx, n * sizeof(float));
      fap_status s = cuda.ops->preprocess(cuda.ctx, dev, &f, size, NULL);
      float *got = cuda_get(dev, n);
      char what[96];
      snprintf(what, sizeof what, "op preprocess %s %dx%d -> %d", fap_pixel_format_name(f.format),
               w, h, size);
      report(what, s ? INFINITY : max_abs_diff(got, ref, n), 0);
      cuda.ops->release(cuda.ctx, dev);
      free(ref), free(got), free(rgb), free(p0), free(p1), free(p2);
    }
  }
}

/* ---- ops on activation buffers ------------------------------------------------------------ */

/* the identity round trip the tests below rely on: in and out exact */
static void act_roundtrip(void) {
  const int rows = 7, cols = 40, ld = 48, ldh = 43;
  float *x = rnd((size_t)rows * ldh, -70, 70);
  x[0] = 1e-6f, x[1] = -0.0f, x[2] = 3.0f / 7.0f;
  float *a = act_alloc(rows, ld);
  act_load(a, ld, x, ldh, rows, cols);
  float *g = act_read(a, ld, rows, cols);
  int bad = 0;
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < cols; c++)
      bad += g[(size_t)r * cols + c] != round16(x[(size_t)r * ldh + c]);
  report("activation in / out through linear (identity): exact", bad, 0);
  cuda.ops->release(cuda.ctx, a);
  free(x), free(g);
}

/* LayerNorm into an activation, then linear from it into f32 (the block's
 * LN_1 -> in_proj, LN_2 -> c_fc), against the CPU's f32 ops. Per element,
 * from the CPU's h and the weights w and their rounding w~:
 *   |y - cpu| <= sum_i |w~_oi| (1e-5 (1 + |h_i|) + r(h_i))   (h: layernorm bound, 16-bit)
 *              + sum_i |h_i| |w~_oi - w_oi|                 (w rounded to the type)
 *              + 2e-5 (sum_i |h_i w_oi| + |b_o|) + 1e-6     (both f32 accumulations)
 * The padding columns of y keep their values. */
static void act_layernorm_linear(void) {
  const int rows = 9, dim = 48, ldx = 52, ldh = 56, out = 40, ldy = 44;
  float *x = rnd((size_t)rows * ldx, -3, 5), *lw = keep(rnd(dim, 0.5, 1.5));
  float *lb = keep(rnd(dim, -0.3, 0.3)), *w = keep(rnd((size_t)out * dim, -0.5, 0.5));
  float *b = keep(rnd(out, -0.5, 0.5)), *y0 = rnd((size_t)rows * ldy, -1, 1);
  for (int i = 0; i < dim; i++) /* a row far from zero mean */
    x[i] += 20.0f;
  float *h = malloc((size_t)rows * dim * sizeof(float));
  float *ycpu = malloc((size_t)rows * out * sizeof(float));
  cpu.ops->layernorm(cpu.ctx, h, dim, x, ldx, lw, lb, rows, dim);
  cpu.ops->linear(cpu.ctx, ycpu, out, h, dim, w, b, rows, dim, out, 0);
  float *xd = cuda_put(x, (size_t)rows * ldx), *yd = cuda_put(y0, (size_t)rows * ldy);
  float *ha = act_alloc(rows, ldh);
  cuda.ops->layernorm(cuda.ctx, ha, ldh, xd, ldx, cuda.ops->import_weights(cuda.ctx, lw, dim),
                      cuda.ops->import_weights(cuda.ctx, lb, dim), rows, dim);
  cuda.ops->linear(cuda.ctx, yd, ldy, ha, ldh,
                   cuda.ops->import_weights(cuda.ctx, w, (size_t)out * dim),
                   cuda.ops->import_weights(cuda.ctx, b, out), rows, dim, out, 0);
  float *g = cuda_get(yd, (size_t)rows * ldy);
  double err = 0;
  int pad = 0;
  for (int r = 0; r < rows; r++)
    for (int o = 0; o < ldy; o++) {
      if (o >= out) {
        pad += g[(size_t)r * ldy + o] != y0[(size_t)r * ldy + o];
        continue;
      }
      double tol = 1e-6 + 2e-5 * fabs(b[o]);
      for (int i = 0; i < dim; i++) {
        const double hi = h[(size_t)r * dim + i], wi = w[(size_t)o * dim + i];
        const double wr = round16((float)wi);
        tol += fabs(wr) * (1e-5 * (1 + fabs(hi)) + r16(hi)) + fabs(hi) * fabs(wr - wi) +
               2e-5 * fabs(hi * wi);
      }
      const double e = fabs(g[(size_t)r * ldy + o] - ycpu[(size_t)r * out + o]) / tol;
      err = fmax(err, isnan(e) ? INFINITY : e);
    }
  report("layernorm -> activation -> linear -> f32 vs cpu", err, 1.0);
  report("  its padding columns untouched", pad, 0);
  cuda.ops->release(cuda.ctx, xd), cuda.ops->release(cuda.ctx, yd), cuda.ops->release(cuda.ctx, ha);
  free(x), free(y0), free(h), free(ycpu), free(g);
}

/* im2col into an activation, then the patch embedding from it (conv1 as a
 * GEMM): the inputs are rounded exactly (im2col -> 16-bit), so as op linear:
 * 1e-5 sum|x w| against the exact product of the rounded inputs, 3 u sum|x w|
 * against the CPU */
static void act_im2col_linear(void) {
  const int size = 28, patch = 14, grid = 2, n = grid * grid, cols = 3 * patch * patch, out = 24;
  float *img = rnd(3 * (size_t)size * size, -2, 2), *w = keep(rnd((size_t)out * cols, -0.2, 0.2));
  float *cc = malloc((size_t)n * cols * sizeof(float));
  float *ycpu = malloc((size_t)n * out * sizeof(float));
  cpu.ops->im2col(cpu.ctx, cc, img, size, patch);
  cpu.ops->linear(cpu.ctx, ycpu, out, cc, cols, w, NULL, n, cols, out, 0);
  float *id = cuda_put(img, 3 * (size_t)size * size), *ca = act_alloc(n, cols);
  float *yd = cuda.ops->alloc(cuda.ctx, (size_t)n * out * sizeof(float));
  cuda.ops->im2col(cuda.ctx, ca, id, size, patch);
  cuda.ops->linear(cuda.ctx, yd, out, ca, cols,
                   cuda.ops->import_weights(cuda.ctx, w, (size_t)out * cols), NULL, n, cols, out,
                   0);
  float *g = cuda_get(yd, (size_t)n * out);
  double ee = 0, ec = 0;
  for (int r = 0; r < n; r++)
    for (int o = 0; o < out; o++) {
      double acc = 0, mag = 0;
      for (int i = 0; i < cols; i++) {
        const double t =
            (double)round16(cc[(size_t)r * cols + i]) * round16(w[(size_t)o * cols + i]);
        acc += t;
        mag += fabs(t);
      }
      const double got = g[(size_t)r * out + o];
      ee = fmax(ee, isnan(got) ? INFINITY : fabs(got - acc) / (1e-5 * mag + 1e-6));
      ec = fmax(ec, fabs(got - ycpu[(size_t)r * out + o]) / (3 * U * mag + 1e-5));
    }
  report("im2col -> activation -> linear (patch embedding)", ee, 1.0);
  report("  vs cpu", ec, 1.0);
  cuda.ops->release(cuda.ctx, id), cuda.ops->release(cuda.ctx, ca), cuda.ops->release(cuda.ctx, yd);
  free(img), free(cc), free(ycpu), free(g);
}

/* quickgelu in place on an activation (the MLP's hidden layer): 2e-6 |y| +
 * r(y) against the exact value of the rounded input; n % 8 == 0 and not */
static void act_quickgelu(void) {
  for (int vec = 0; vec < 2; vec++) {
    const int rows = 5, cols = vec ? 64 : 61;
    const size_t n = (size_t)rows * cols;
    float *x = rnd(n, -6, 6), *a = act_alloc(rows, cols);
    act_load(a, cols, x, cols, rows, cols);
    cuda.ops->quickgelu(cuda.ctx, a, n);
    float *g = act_read(a, cols, rows, cols);
    double err = 0;
    for (size_t i = 0; i < n; i++) {
      const double v = round16(x[i]), want = v / (1 + exp(-1.702 * v));
      const double e = fabs(g[i] - want) / (2e-6 * fabs(want) + r16(want));
      err = fmax(err, isnan(e) ? INFINITY : e);
    }
    report(vec ? "quickgelu on an activation (n % 8 == 0)" : "quickgelu on an activation (odd n)",
           err, 1.0);
    cuda.ops->release(cuda.ctx, a);
    free(x), free(g);
  }
}

static int is_flash_head(int hd) { return hd >= 16 && hd <= 128 && (hd & (hd - 1)) == 0; }

/* attention_dual with qkv, out_x and out_y activations (the vision encoder's
 * dual layers), against the CPU on the rounded qkv: flash heads 4 u max|v| +
 * r(o), other head sizes (the attention kernel) 2e-5 + r(o), inputs in
 * [-2, 2]. out_x past nq_std is never written: it still reads as the NaN
 * alloc_frames poisons activations with. */
static void act_dual(int rows, int nq_std, int heads, int hd) {
  const int c = heads * hd, ld = 3 * c;
  float *x = rnd((size_t)rows * ld, -2, 2), *xr = rounded(x, (size_t)rows * ld);
  float *q = act_alloc(rows, ld), *ox = act_alloc(rows, c), *oy = act_alloc(rows, c);
  act_load(q, ld, x, ld, rows, ld);
  cuda.ops->attention_dual(cuda.ctx, ox, oy, c, q, ld, rows, nq_std, heads, hd);
  float *gx = act_read(ox, c, rows, c), *gy = act_read(oy, c, rows, c);
  float *rx = malloc((size_t)rows * c * sizeof(float));
  float *ry = malloc((size_t)rows * c * sizeof(float));
  cpu.ops->attention_dual(cpu.ctx, rx, ry, c, xr, ld, rows, nq_std, heads, hd);
  double vmax = 0, err = 0;
  int untouched = 0;
  for (int r = 0; r < rows; r++)
    for (int d = 0; d < c; d++)
      vmax = fmax(vmax, fabs(xr[(size_t)r * ld + 2 * c + d]));
  const int flash = is_flash_head(hd);
  for (int path = 0; path < 2; path++)
    for (int r = 0; r < rows; r++)
      for (int d = 0; d < c; d++) {
        const float got = (path ? gy : gx)[(size_t)r * c + d];
        if (!path && r >= nq_std) {
          untouched += !isnan(got);
          continue;
        }
        const double want = (path ? ry : rx)[(size_t)r * c + d];
        const double e = fabs(got - want) / ((flash ? 4 * U * vmax : 2e-5) + r16(want));
        err = fmax(err, isnan(e) ? INFINITY : e);
      }
  char what[128];
  snprintf(what, sizeof what, "attention_dual act rows %d std %d hd %d (%s)", rows, nq_std, hd,
           flash ? "flash" : "attention kernel");
  report(what, err, 1.0);
  if (nq_std < rows)
    report("  out_x past nq_std never written", untouched, 0);
  cuda.ops->release(cuda.ctx, q), cuda.ops->release(cuda.ctx, ox), cuda.ops->release(cuda.ctx, oy);
  free(x), free(xr), free(gx), free(gy), free(rx), free(ry);
}

static void activation_ops(void) {
  act_roundtrip();
  act_layernorm_linear();
  act_im2col_linear();
  act_quickgelu();
  act_dual(33, 33, 2, 16);
  act_dual(29, 1, 2, 32);
  act_dual(19, 7, 2, 24);
  op_cached(3, 4, 5, 2, 16, 0, 1);
  op_cached(2, 6, 0, 2, 16, 1, 1);
  op_cached(2, 3, 4, 3, 20, 1, 1);
}

/* ---- the frame scope ------------------------------------------------------------------------ */

/* A scope of three small RGB frames (different sizes) through a description
 * that touches what the detector's does: preprocess_frames; LayerNorm into
 * an activation and linear out of it (the image as 96 rows of 32); the
 * two-way probabilities, their maxima, the q of row 0 and the score; the
 * image rows as [q | k | v] rows of 96 (linear with the identity into an
 * activation, one launch per frame: the frames are not packed) through
 * attention_dual and attention_cached over a shared cache. The results that
 * come back are OUTPUT buffers (the image itself, tok, prob, the scalars,
 * and the attention outputs read out of their activations with the
 * identity). Each frame is held against the CPU backend running the same
 * description on that frame alone:
 *   image                 exact (preprocess)
 *   tok                   as act_layernorm_linear, from the CPU's h
 *   prob, prob's maxima,  0.25 / tau sum_o e_tok(o) |t1_o - t0_o| + 2e-6 (the sigmoid's
 *   q                     slope is at most 1/4; 2e-6: two_way), the maxima the largest
 *                         of their rows' (a maximum moves by at most its inputs' largest)
 *   score                 0.5 (e_q + (2 e_max1 + e_max2) / 3) + 4e-7 (f32 roundings)
 *   and on the device's own values exact: the maxima of its prob, its score
 *   attention_dual        flash: 4 u max|v| + r(o) against the CPU on the rounded rows
 *   attention_cached      the attention kernel, 1e-5 max(2, max|v|) + r(o) (the
 *                         pixels' normalised values reach 2.15)
 * CUDA asks for the description twice the first time (eager, then under
 * capture), then not at all while the geometry stays: the second run, with
 * other pixels, replays the graph and must follow the new pixels. */
enum {
  SC_S = 32, SC_ROWS = 3 * SC_S, SC_E = 16, SC_C = 32, SC_HEADS = 2, SC_HD = 16,
  SC_AROWS = 20, SC_STD = 7, SC_PROMPTS = 2, SC_PROWS = 3, SC_POS0 = 4, SC_COUNT = 3,
  SC_LMAX = SC_POS0 + SC_PROWS
};
/* 1 / tau of the scope's two_way_prob: small enough that the propagated
 * bound of prob stays far below what a frame mixed up with another moves */
#define SC_INV_TAU 1.0f

typedef struct {
  float *lnw, *lnb, *w, *b, *i96, *i32, *t0, *t1, *cache;
} scope_host;

typedef struct {
  float *image, *h, *tok, *prob, *scal, *qkv, *ax, *ay, *outx, *outy, *qkv2, *o2, *outc;
  const float *lnw, *lnb, *w, *b, *i96, *i32;
  float *t0, *t1, *cache;
} scope_bufs;

static float *scope_buffer(const fap_backend *be, size_t elems, int count, fap_buffer_kind kind) {
  const size_t bytes = elems * sizeof(float);
  float *p = be->ops->alloc_frames(be->ctx, bytes, bytes * count, kind);
  if (!p) {
    printf("alloc_frames (%zu bytes x %d) failed\n", bytes, count);
    exit(1);
  }
  return p;
}

static float *shared_buffer(const fap_backend *be, const float *host, size_t n) {
  float *p = be->ops->alloc(be->ctx, n * sizeof(float));
  be->ops->upload(be->ctx, p, host, n * sizeof(float));
  return p;
}

static void scope_alloc(const fap_backend *be, int count, const scope_host *hw, scope_bufs *sb) {
  const fap_buffer_kind F = FAP_BUFFER_OUTPUT, A = FAP_BUFFER_ACTIVATION;
  sb->image = scope_buffer(be, (size_t)SC_ROWS * SC_S, count, F);
  sb->h = scope_buffer(be, (size_t)SC_ROWS * SC_S, count, A);
  sb->tok = scope_buffer(be, (size_t)SC_ROWS * SC_E, count, F);
  sb->prob = scope_buffer(be, SC_ROWS, count, F);
  sb->scal = scope_buffer(be, 4, count, F);
  sb->qkv = scope_buffer(be, (size_t)SC_AROWS * 3 * SC_C, count, A);
  sb->ax = scope_buffer(be, (size_t)SC_AROWS * SC_C, count, A);
  sb->ay = scope_buffer(be, (size_t)SC_AROWS * SC_C, count, A);
  sb->outx = scope_buffer(be, (size_t)SC_STD * SC_C, count, F);
  sb->outy = scope_buffer(be, (size_t)SC_AROWS * SC_C, count, F);
  sb->qkv2 = scope_buffer(be, (size_t)SC_PROMPTS * SC_PROWS * 3 * SC_C, count, A);
  sb->o2 = scope_buffer(be, (size_t)SC_PROMPTS * SC_PROWS * SC_C, count, A);
  sb->outc = scope_buffer(be, (size_t)SC_PROMPTS * SC_PROWS * SC_C, count, F);
  sb->lnw = be->ops->import_weights(be->ctx, hw->lnw, SC_S);
  sb->lnb = be->ops->import_weights(be->ctx, hw->lnb, SC_S);
  sb->w = be->ops->import_weights(be->ctx, hw->w, (size_t)SC_E * SC_S);
  sb->b = be->ops->import_weights(be->ctx, hw->b, SC_E);
  sb->i96 = be->ops->import_weights(be->ctx, hw->i96, (size_t)9 * SC_C * SC_C);
  sb->i32 = be->ops->import_weights(be->ctx, hw->i32, (size_t)SC_C * SC_C);
  sb->t0 = shared_buffer(be, hw->t0, SC_E);
  sb->t1 = shared_buffer(be, hw->t1, SC_E);
  sb->cache = shared_buffer(be, hw->cache, (size_t)SC_PROMPTS * 2 * SC_LMAX * SC_C);
}

static void scope_release(const fap_backend *be, scope_bufs *sb) {
  float *all[] = {sb->image, sb->h, sb->tok, sb->prob, sb->scal, sb->qkv, sb->ax, sb->ay, sb->outx,
                  sb->outy, sb->qkv2, sb->o2, sb->outc, sb->t0, sb->t1, sb->cache};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    be->ops->release(be->ctx, all[i]);
}

/* the description: the same calls on every pass, for both backends */
static void scope_describe(const fap_backend *be, const scope_bufs *b) {
  const fap_backend_ops *op = be->ops;
  void *cx = be->ctx;
  const int w3 = 3 * SC_C;
  const size_t slot = (size_t)SC_LMAX * SC_C; /* the detector's cache layout */
  op->preprocess_frames(cx, b->image, SC_S);
  op->frames_mark(cx, FAP_STAGE_PREPROCESS);
  op->layernorm(cx, b->h, SC_S, b->image, SC_S, b->lnw, b->lnb, SC_ROWS, SC_S);
  op->linear(cx, b->tok, SC_E, b->h, SC_S, b->w, b->b, SC_ROWS, SC_S, SC_E, 0);
  op->two_way_prob(cx, b->prob, b->tok, SC_E, SC_ROWS, SC_E, b->t0, b->t1, SC_INV_TAU);
  op->reduce_max(cx, b->scal + 0, b->prob, SC_ROWS);
  op->reduce_max(cx, b->scal + 1, b->prob + SC_ROWS / 2, SC_ROWS / 2);
  op->two_way_prob(cx, b->scal + 2, b->tok, SC_E, 1, SC_E, b->t0, b->t1, SC_INV_TAU);
  op->faprompt_score(cx, b->scal);
  op->frames_mark(cx, FAP_STAGE_MAP2);
  op->linear(cx, b->qkv, w3, b->image, w3, b->i96, NULL, SC_AROWS, w3, w3, 0);
  op->attention_dual(cx, b->ax, b->ay, SC_C, b->qkv, w3, SC_AROWS, SC_STD, SC_HEADS, SC_HD);
  op->linear(cx, b->outx, SC_C, b->ax, SC_C, b->i32, NULL, SC_STD, SC_C, SC_C, 0);
  op->linear(cx, b->outy, SC_C, b->ay, SC_C, b->i32, NULL, SC_AROWS, SC_C, SC_C, 0);
  op->linear(cx, b->qkv2, w3, b->image + (size_t)SC_AROWS * w3, w3, b->i96, NULL,
             SC_PROMPTS * SC_PROWS, w3, w3, 0);
  op->attention_cached(cx, b->o2, SC_C, b->qkv2, w3, SC_PROMPTS, SC_PROWS, SC_POS0, b->cache,
                       2 * slot, slot, 0, SC_HEADS, SC_HD);
  op->linear(cx, b->outc, SC_C, b->o2, SC_C, b->i32, NULL, SC_PROMPTS * SC_PROWS, SC_C, SC_C, 0);
  op->frames_mark(cx, FAP_STAGE_MAP);
}

/* one scope; returns how many times the backend asked for the description */
static int scope_run(const fap_backend *be, const fap_frame *frames, int count,
                     const scope_bufs *b, const char *what) {
  fap_result res[SC_COUNT];
  memset(res, 0, sizeof res);
  int described = 0;
  fap_status s = be->ops->frames_begin(be->ctx, frames, count, SC_S, NULL);
  if (s) {
    printf("FAIL %s: frames_begin: %s\n", what, fap_status_string(s));
    failures++;
    return -1;
  }
  for (int pass = 0; pass < 8 && !s; pass++) {
    int describe = 0;
    if ((s = be->ops->frames_pass(be->ctx, pass, &describe)) || !describe)
      break;
    described++;
    scope_describe(be, b);
  }
  const fap_status end = be->ops->frames_end(be->ctx, res);
  if (s || end) {
    printf("FAIL %s: %s\n", what, fap_status_string(s ? s : end));
    failures++;
  }
  return described;
}

static void scope_frames(fap_frame *f, uint8_t **px) {
  const int dims[SC_COUNT][2] = {{37, 23}, {20, 31}, {32, 32}};
  for (int i = 0; i < SC_COUNT; i++) {
    const int w = dims[i][0], h = dims[i][1];
    const size_t stride = (size_t)w * 3 + 5;
    px[i] = malloc(stride * h);
    for (size_t j = 0; j < stride * h; j++)
      px[i][j] = (uint8_t)(urand() * 256);
    memset(&f[i], 0, sizeof f[i]);
    f[i].format = FAP_PIXEL_RGB, f[i].width = w, f[i].height = h, f[i].stride = stride;
    f[i].data = px[i];
  }
}

/* the errors of one run, over its frames (ratios to the bounds; counts) */
typedef struct {
  double image, tok, prob, scal, dual, cached;
  int own;
} scope_err;

static double ratio(double got, double want, double tol) {
  const double e = fabs(got - want) / tol;
  return isnan(e) ? INFINITY : e;
}

/* frame f of CUDA's outputs (g*) against the CPU's run of that frame (c) */
static void scope_compare(const scope_bufs *c, const scope_host *hw, const float *gimg,
                          const float *gtok, const float *gprob, const float *gscal,
                          const float *gx, const float *gy, const float *gc, scope_err *e) {
  const int w3 = 3 * SC_C;
  const float *cimg = c->image, *ch = c->h, *ctok = c->tok, *cprob = c->prob, *cscal = c->scal;
  for (size_t i = 0; i < (size_t)SC_ROWS * SC_S; i++)
    e->image = fmax(e->image, gimg[i] == cimg[i] ? 0 : INFINITY);
  /* tok, then prob, from the CPU's h */
  double ep[SC_ROWS];
  for (int r = 0; r < SC_ROWS; r++) {
    double spread = 0;
    for (int o = 0; o < SC_E; o++) {
      double tol = 1e-6 + 2e-5 * fabs(hw->b[o]);
      for (int i = 0; i < SC_S; i++) {
        const double hi = ch[(size_t)r * SC_S + i], wi = hw->w[(size_t)o * SC_S + i];
        const double wr = round16((float)wi);
        tol += fabs(wr) * (1e-5 * (1 + fabs(hi)) + r16(hi)) + fabs(hi) * fabs(wr - wi) +
               2e-5 * fabs(hi * wi);
      }
      e->tok = fmax(e->tok, ratio(gtok[(size_t)r * SC_E + o], ctok[(size_t)r * SC_E + o], tol));
      spread += tol * fabs(hw->t1[o] - hw->t0[o]);
    }
    ep[r] = 0.25 * SC_INV_TAU * spread + 2e-6;
    e->prob = fmax(e->prob, ratio(gprob[r], cprob[r], ep[r]));
  }
  double em1 = 0, em2 = 0;
  float m1 = -INFINITY, m2 = -INFINITY;
  for (int r = 0; r < SC_ROWS; r++) {
    em1 = fmax(em1, ep[r]);
    m1 = fmaxf(m1, gprob[r]);
    if (r >= SC_ROWS / 2) {
      em2 = fmax(em2, ep[r]);
      m2 = fmaxf(m2, gprob[r]);
    }
  }
  const double es = 0.5 * (ep[0] + (2 * em1 + em2) / 3) + 4e-7;
  const double tols[4] = {em1, em2, ep[0], es};
  for (int k = 0; k < 4; k++)
    e->scal = fmax(e->scal, ratio(gscal[k], cscal[k], tols[k]));
  e->own += gscal[0] != m1;
  e->own += gscal[1] != m2;
  e->own += gscal[3] != fap_faprompt_score(gscal[0], gscal[1], gscal[2]);
  /* attention_dual on the rounded image rows */
  float *qr = rounded(cimg, (size_t)SC_AROWS * w3);
  float *rx = malloc((size_t)SC_AROWS * SC_C * sizeof(float));
  float *ry = malloc((size_t)SC_AROWS * SC_C * sizeof(float));
  cpu.ops->attention_dual(cpu.ctx, rx, ry, SC_C, qr, w3, SC_AROWS, SC_STD, SC_HEADS, SC_HD);
  double vmax = 0;
  for (int r = 0; r < SC_AROWS; r++)
    for (int d = 0; d < SC_C; d++)
      vmax = fmax(vmax, fabs(qr[(size_t)r * w3 + 2 * SC_C + d]));
  for (int r = 0; r < SC_AROWS; r++)
    for (int d = 0; d < SC_C; d++) {
      const size_t i = (size_t)r * SC_C + d;
      if (r < SC_STD)
        e->dual = fmax(e->dual, ratio(gx[i], rx[i], 4 * U * vmax + r16(rx[i])));
      e->dual = fmax(e->dual, ratio(gy[i], ry[i], 4 * U * vmax + r16(ry[i])));
    }
  /* attention_cached on the rounded rows after them, over a copy of the cache */
  const int n2 = SC_PROMPTS * SC_PROWS;
  const size_t slot = (size_t)SC_LMAX * SC_C, cn = SC_PROMPTS * 2 * slot;
  float *q2 = rounded(cimg + (size_t)SC_AROWS * w3, (size_t)n2 * w3);
  float *cc = malloc(cn * sizeof(float)), *rc = malloc((size_t)n2 * SC_C * sizeof(float));
  memcpy(cc, hw->cache, cn * sizeof(float));
  cpu.ops->attention_cached(cpu.ctx, rc, SC_C, q2, w3, SC_PROMPTS, SC_PROWS, SC_POS0, cc, 2 * slot,
                            slot, 0, SC_HEADS, SC_HD);
  vmax = 2;
  for (int p = 0; p < SC_PROMPTS; p++)
    for (int j = 0; j < SC_POS0 + SC_PROWS; j++)
      for (int d = 0; d < SC_C; d++)
        vmax = fmax(vmax, fabs(cc[p * 2 * slot + slot + (size_t)j * SC_C + d]));
  for (size_t i = 0; i < (size_t)n2 * SC_C; i++)
    e->cached = fmax(e->cached, ratio(gc[i], rc[i], 1e-5 * vmax + r16(rc[i])));
  free(qr), free(rx), free(ry), free(q2), free(cc), free(rc);
}

static void frame_scope(void) {
  scope_host hw;
  hw.lnw = keep(rnd(SC_S, 0.5, 1.5));
  hw.lnb = keep(rnd(SC_S, -0.3, 0.3));
  hw.w = keep(rnd((size_t)SC_E * SC_S, -0.5, 0.5));
  hw.b = keep(rnd(SC_E, -0.5, 0.5));
  hw.i96 = (float *)eye(3 * SC_C);
  hw.i32 = (float *)eye(SC_C);
  hw.t0 = keep(rnd(SC_E, -0.3, 0.3));
  hw.t1 = keep(rnd(SC_E, -0.3, 0.3));
  const size_t slot = (size_t)SC_LMAX * SC_C, cn = SC_PROMPTS * 2 * slot;
  hw.cache = keep(malloc(cn * sizeof(float)));
  for (int p = 0; p < SC_PROMPTS; p++) /* positions < pos0 cached; the rest never read */
    for (size_t i = 0; i < 2 * slot; i++)
      hw.cache[p * 2 * slot + i] = (i % slot) < (size_t)SC_POS0 * SC_C ? frand(-2, 2) : 1e4f;
  /* FAP_CUDA_GRAPHS=0 (A/B timing): no graph, each run described once, eagerly */
  const char *graphs = getenv("FAP_CUDA_GRAPHS");
  const int no_graphs = graphs && strcmp(graphs, "0") == 0;
  scope_bufs gb, cb;
  scope_alloc(&cuda, SC_COUNT, &hw, &gb);
  scope_alloc(&cpu, 1, &hw, &cb);
  for (int run = 0; run < 2; run++) {
    fap_frame frames[SC_COUNT];
    uint8_t *px[SC_COUNT];
    scope_frames(frames, px); /* the same geometry each run, other pixels */
    char what[128];
    snprintf(what, sizeof what, "scope run %d (cuda)", run + 1);
    const int asked = scope_run(&cuda, frames, SC_COUNT, &gb, what);
    snprintf(what, sizeof what, "scope run %d: cuda asked for the description %s", run + 1,
             no_graphs ? "once (FAP_CUDA_GRAPHS=0)"
             : run     ? "0 times (graph replay)"
                       : "twice (eager, capture)");
    report(what, abs(asked - (no_graphs ? 1 : run ? 0 : 2)), 0);
    const float *gimg = cuda.ops->frames_output(cuda.ctx, gb.image);
    const float *gtok = cuda.ops->frames_output(cuda.ctx, gb.tok);
    const float *gprob = cuda.ops->frames_output(cuda.ctx, gb.prob);
    const float *gscal = cuda.ops->frames_output(cuda.ctx, gb.scal);
    const float *gx = cuda.ops->frames_output(cuda.ctx, gb.outx);
    const float *gy = cuda.ops->frames_output(cuda.ctx, gb.outy);
    const float *gc = cuda.ops->frames_output(cuda.ctx, gb.outc);
    if (!gimg || !gtok || !gprob || !gscal || !gx || !gy || !gc) {
      printf("FAIL scope run %d: frames_output gave NULL\n", run + 1);
      failures++;
      break;
    }
    scope_err e = {0};
    int cpu_asked = 0;
    for (int f = 0; f < SC_COUNT; f++) {
      snprintf(what, sizeof what, "scope run %d frame %d (cpu)", run + 1, f);
      cpu_asked += scope_run(&cpu, &frames[f], 1, &cb, what) != 1;
      const float *cimg = cpu.ops->frames_output(cpu.ctx, cb.image);
      if (cimg != cb.image)
        cpu_asked++;
      scope_compare(&cb, &hw, gimg + (size_t)f * SC_ROWS * SC_S, gtok + (size_t)f * SC_ROWS * SC_E,
                    gprob + (size_t)f * SC_ROWS, gscal + (size_t)f * 4,
                    gx + (size_t)f * SC_STD * SC_C, gy + (size_t)f * SC_AROWS * SC_C,
                    gc + (size_t)f * SC_PROMPTS * SC_PROWS * SC_C, &e);
    }
    report("  cpu: one description per frame, outputs in place", cpu_asked, 0);
    report("  image (preprocess_frames) exact", e.image, 0);
    report("  tok (layernorm -> activation -> linear)", e.tok, 1.0);
    report("  prob (two_way_prob)", e.prob, 1.0);
    report("  max1, max2, q, score", e.scal, 1.0);
    report("  reduce_max / score on the device's values: exact", e.own, 0);
    report("  attention_dual of activations (flash)", e.dual, 1.0);
    report("  attention_cached of activations, shared cache", e.cached, 1.0);
    for (int i = 0; i < SC_COUNT; i++)
      free(px[i]);
  }
  float *cg = cuda_get(gb.cache, cn);
  int changed = 0;
  for (size_t i = 0; i < cn; i++)
    changed += memcmp(&cg[i], &hw.cache[i], sizeof(float)) != 0;
  report("scope: the shared cache untouched (no store)", changed, 0);
  free(cg);
  scope_release(&cuda, &gb);
  scope_release(&cpu, &cb);
}

/* ---- kernels of the frame program ------------------------------------------------------ */

/* reference attention rows on f32 data through the CPU backend */
static void cpu_attention(float *out, int ldo, const float *q, int ldq, const float *k,
                          const float *v, int ldkv, int nq, int nk, int heads, int hd, int pos0) {
  cpu.ops->attention(cpu.ctx, out, ldo, q, ldq, k, ldkv, v, ldkv, nq, nk, heads, hd, pos0);
}

static void k_flash(int rows, int heads, int hd, int dual, int nq_std, int batch) {
  const int c = heads * hd, ld = 3 * c + 8, ldo = c + 8; /* padded rows */
  const size_t per = (size_t)rows * ld, n = per * batch, no = (size_t)rows * ldo * batch;
  float *x = rnd(n, -2, 2);
  uint16_t *x16 = narrow(x, n);
  float *xr = widen(x16, n);
  void *dq = put(x16, n * 2), *dox = blank(no * 2), *doy = blank(no * 2);
  fap_flash_args a = {.t = T, .q = dq, .k = (char *)dq + 2 * c, .v = (char *)dq + 4 * c,
                      .ld = (size_t)ld, .batch_stride = per, .out_x = dox,
                      .out_y = dual ? doy : NULL, .ldo = (size_t)ldo,
                      .out_batch_stride = (size_t)rows * ldo, .rows = rows, .nq_std = nq_std,
                      .heads = heads, .hd = hd, .batch = batch};
  launched(fap_k_flash_attention(S, &a), "flash attention");
  uint16_t *gx = get(dox, no * 2), *gy = get(doy, no * 2);
  double ex = 0, ey = 0, untouched = 0;
  float *ref = malloc((size_t)rows * c * sizeof(float));
  for (int f = 0; f < batch; f++) {
    const float *b = xr + f * per;
    double vmax = 0;
    for (int r = 0; r < rows; r++)
      for (int d = 0; d < c; d++)
        vmax = fmax(vmax, fabs(b[(size_t)r * ld + 2 * c + d]));
    for (int path = 0; path < (dual ? 2 : 1); path++) {
      const float *q = path ? b + 2 * c : b;
      const int nq = path ? rows : nq_std;
      cpu_attention(ref, c, q, ld, b + c * (path ? 2 : 1), b + 2 * c, ld, nq, rows, heads, hd, -1);
      const uint16_t *g = (path ? gy : gx) + (size_t)f * rows * ldo;
      for (int r = 0; r < rows; r++)
        for (int d = 0; d < ldo; d++) {
          const uint16_t raw = g[(size_t)r * ldo + d];
          if (r >= nq || d >= c) { /* never written */
            untouched += raw != 0xffff;
            continue;
          }
          const double o = from16(raw), want = ref[(size_t)r * c + d];
          const double e = fabs(o - want) / (4 * U * vmax + r16(want));
          if (path)
            ey = fmax(ey, e);
          else
            ex = fmax(ex, isnan(e) ? INFINITY : e);
        }
    }
  }
  char what[128];
  snprintf(what, sizeof what, "flash %s hd %d rows %d std rows %d%s batch %d",
           T == FAP_K_F16 ? "f16" : "bf16", hd, rows, nq_std, dual ? " dual" : "", batch);
  report(what, fmax(ex, ey) + untouched, 1.0);
  fap_rt_free(dq), fap_rt_free(dox), fap_rt_free(doy);
  free(x), free(x16), free(xr), free(gx), free(gy), free(ref);
}

/* the text path: f32 prefix keys/values + this frame's rows, causal, groups */
static void k_attention_prefix(void) {
  const int heads = 3, hd = 20, c = heads * hd, pre = 6, r = 5, groups = 4, pgroups = 2;
  const int lmax = pre + r;
  const size_t qkv_n = (size_t)groups * r * 3 * c;
  float *qkv = rnd(qkv_n, -2, 2), *prek = rnd((size_t)pgroups * 2 * lmax * c, -2, 2);
  uint16_t *qkv16 = narrow(qkv, qkv_n);
  float *qkvr = widen(qkv16, qkv_n);
  void *dqkv = put(qkv16, qkv_n * 2), *dpre = put(prek, (size_t)pgroups * 2 * lmax * c * 4);
  void *dout = blank((size_t)groups * r * c * 2);
  fap_attn_args a = {.out = dout, .ot = T, .ldo = c, .out_group_stride = (size_t)r * c,
                     .q = dqkv, .k = (char *)dqkv + 2 * c, .v = (char *)dqkv + 4 * c, .qkv_t = T,
                     .ldq = 3 * (size_t)c, .ldkv = 3 * (size_t)c, .q_group_stride = (size_t)r * 3 * c,
                     .kv_group_stride = (size_t)r * 3 * c, .pre_k = dpre,
                     .pre_v = (float *)dpre + (size_t)lmax * c, .ld_pre = c,
                     .pre_group_stride = 2 * (size_t)lmax * c, .n_pre = pre, .pre_groups = pgroups,
                     .nq = r, .nk = pre + r, .heads = heads, .hd = hd, .q_pos0 = pre,
                     .groups = groups};
  launched(fap_k_attention(S, &a), "attention with prefix");
  uint16_t *got = get(dout, (size_t)groups * r * c * 2);
  double err = 0;
  float *k = malloc((size_t)lmax * c * 4), *v = malloc((size_t)lmax * c * 4);
  float *ref = malloc((size_t)r * c * 4);
  for (int g = 0; g < groups; g++) {
    const float *pk = prek + (size_t)(g % pgroups) * 2 * lmax * c, *pv = pk + (size_t)lmax * c;
    const float *own = qkvr + (size_t)g * r * 3 * c;
    for (int j = 0; j < lmax; j++)
      for (int d = 0; d < c; d++) {
        k[(size_t)j * c + d] = j < pre ? pk[(size_t)j * c + d] : own[(size_t)(j - pre) * 3 * c + c + d];
        v[(size_t)j * c + d] = j < pre ? pv[(size_t)j * c + d] : own[(size_t)(j - pre) * 3 * c + 2 * c + d];
      }
    cpu_attention(ref, c, own, 3 * c, k, v, c, r, lmax, heads, hd, pre);
    for (size_t i = 0; i < (size_t)r * c; i++) {
      const double o = from16(got[(size_t)g * r * c + i]);
      err = fmax(err, fabs(o - ref[i]) / (2e-5 + r16(ref[i])));
    }
  }
  report("attention kernel: f32 prefix + rows, causal, groups", err, 1.0);
  fap_rt_free(dqkv), fap_rt_free(dpre), fap_rt_free(dout);
  free(qkv), free(prek), free(qkv16), free(qkvr), free(got), free(k), free(v), free(ref);
}

static void k_gemm(int rows, int in, int out, int ldx, int ldw, int ldy, int in_out, int bias,
                   fap_kdtype yt, int accumulate) {
  const size_t nx = (size_t)rows * ldx, nw = (size_t)(in_out ? in : out) * ldw;
  const size_t ny = (size_t)rows * ldy;
  float *x = rnd(nx, -1, 1), *w = rnd(nw, -1, 1), *b = rnd(out, -1, 1), *y0 = rnd(ny, -1, 1);
  uint16_t *x16 = narrow(x, nx), *w16 = narrow(w, nw), *b16 = narrow(b, out);
  void *dx = put(x16, nx * 2), *dw = put(w16, nw * 2);
  void *db = yt == FAP_K_F32 ? put(b, out * 4) : put(b16, out * 2);
  void *dy = yt == FAP_K_F32 ? put(y0, ny * 4) : blank(ny * 2);
  fap_gemm_args a = {.rows = rows, .in = in, .out = out, .x = dx, .ldx = ldx, .w = dw, .ldw = ldw,
                     .w_in_out = in_out, .ab = T, .bias = bias ? db : NULL, .y = dy, .ldy = ldy,
                     .yt = yt, .accumulate = accumulate};
  launched(fap_rt_gemm(BL, &a), "gemm");
  void *gy = get(dy, ny * (yt == FAP_K_F32 ? 4 : 2));
  double err = 0;
  for (int r = 0; r < rows; r++)
    for (int o = 0; o < out; o++) {
      double acc = 0, mag = 0;
      for (int k = 0; k < in; k++) {
        const double xv = from16(x16[(size_t)r * ldx + k]);
        const double wv = from16(w16[in_out ? (size_t)k * ldw + o : (size_t)o * ldw + k]);
        acc += xv * wv;
        mag += fabs(xv * wv);
      }
      if (bias)
        acc += yt == FAP_K_F32 ? b[o] : from16(b16[o]);
      if (accumulate)
        acc += y0[(size_t)r * ldy + o];
      const double g = yt == FAP_K_F32 ? ((float *)gy)[(size_t)r * ldy + o]
                                       : from16(((uint16_t *)gy)[(size_t)r * ldy + o]);
      const double tol = 1e-5 * mag + 1e-6 + (yt == FAP_K_F32 ? 0 : r16(acc));
      err = fmax(err, isnan(g) ? INFINITY : fabs(g - acc) / tol);
    }
  char what[128];
  snprintf(what, sizeof what, "gemm %dx%dx%d ld %d/%d/%d %s%s -> %s%s", rows, in, out, ldx, ldw,
           ldy, in_out ? "P" : "W^T", bias ? " +b" : "", yt == FAP_K_F32 ? "f32" : "16-bit",
           accumulate ? " +=" : "");
  report(what, err, 1.0);
  fap_rt_free(dx), fap_rt_free(dw), fap_rt_free(db), fap_rt_free(dy);
  free(x), free(w), free(b), free(y0), free(x16), free(w16), free(b16), free(gy);
}

/* f32 products (the final projections): x P, no rounding, strided x */
static void k_gemm32(int rows, int in, int out, int ldx) {
  float *x = rnd((size_t)rows * ldx, -1, 1), *w = rnd((size_t)in * out, -1, 1);
  void *dx = put(x, (size_t)rows * ldx * 4), *dw = put(w, (size_t)in * out * 4);
  void *dy = blank((size_t)rows * out * 4);
  fap_gemm_args a = {.rows = rows, .in = in, .out = out, .x = dx, .ldx = ldx, .w = dw, .ldw = out,
                     .w_in_out = 1, .ab = FAP_K_F32, .y = dy, .ldy = out, .yt = FAP_K_F32};
  launched(fap_rt_gemm(BL, &a), "gemm f32");
  float *g = get(dy, (size_t)rows * out * 4);
  double err = 0;
  for (int r = 0; r < rows; r++)
    for (int o = 0; o < out; o++) {
      double acc = 0, mag = 0;
      for (int k = 0; k < in; k++) {
        const double t = (double)x[(size_t)r * ldx + k] * w[(size_t)k * out + o];
        acc += t;
        mag += fabs(t);
      }
      err = fmax(err, fabs(g[(size_t)r * out + o] - acc) / (1e-5 * mag + 1e-7));
    }
  char what[96];
  snprintf(what, sizeof what, "gemm f32 %dx%dx%d ldx %d (projection)", rows, in, out, ldx);
  report(what, err, 1.0);
  fap_rt_free(dx), fap_rt_free(dw), fap_rt_free(dy);
  free(x), free(w), free(g);
}

static void k_elementwise(void) {
  /* layernorm into the 16-bit type, rows of a strided f32 matrix */
  {
    const int rows = 11, dim = 96, ldx = 100, ldy = 104;
    float *x = rnd((size_t)rows * ldx, -4, 6), *w = rnd(dim, 0.5, 1.5), *b = rnd(dim, -0.3, 0.3);
    void *dx = put(x, (size_t)rows * ldx * 4), *dw = put(w, dim * 4), *db = put(b, dim * 4);
    void *dy = blank((size_t)rows * ldy * 2);
    launched(fap_k_layernorm(S, dy, T, ldy, dx, ldx, dw, db, rows, dim), "layernorm");
    uint16_t *g = get(dy, (size_t)rows * ldy * 2);
    float *ref = malloc((size_t)rows * dim * 4);
    cpu.ops->layernorm(cpu.ctx, ref, dim, x, ldx, w, b, rows, dim);
    double err = 0;
    for (int r = 0; r < rows; r++)
      for (int i = 0; i < dim; i++) {
        const double want = ref[(size_t)r * dim + i], got = from16(g[(size_t)r * ldy + i]);
        err = fmax(err, fabs(got - want) / (1e-5 * (1 + fabs(want)) + r16(want)));
      }
    report("layernorm -> 16-bit", err, 1.0);
    fap_rt_free(dx), fap_rt_free(dw), fap_rt_free(db), fap_rt_free(dy);
    free(x), free(w), free(b), free(g), free(ref);
  }
  /* quickgelu on 16-bit values: the vector path (n % 8 == 0) and the scalar one */
  for (int vec = 0; vec < 2; vec++) {
    const size_t n = vec ? 4096 : 1001;
    float *x = rnd(n, -6, 6);
    uint16_t *x16 = narrow(x, n);
    void *dx = put(x16, n * 2);
    launched(fap_k_quickgelu(S, dx, T, n), "quickgelu");
    uint16_t *g = get(dx, n * 2);
    double err = 0;
    for (size_t i = 0; i < n; i++) {
      const double v = from16(x16[i]), want = v / (1 + exp(-1.702 * v));
      err = fmax(err, fabs(from16(g[i]) - want) / (2e-6 * fabs(want) + r16(want)));
    }
    report(vec ? "quickgelu 16-bit (8-wide)" : "quickgelu 16-bit (scalar)", err, 1.0);
    fap_rt_free(dx);
    free(x), free(x16), free(g);
  }
  /* conversions f32 <-> 16-bit with strides: exact rounding */
  {
    const int rows = 7, cols = 13, lds = 15, ldd = 16;
    float *x = rnd((size_t)rows * lds, -70000, 70000);
    x[3] = 1e-8f, x[4] = -0.0f, x[5] = 65519.0f;
    void *dx = put(x, (size_t)rows * lds * 4), *dy = blank((size_t)rows * ldd * 2);
    launched(fap_k_convert(S, dy, T, ldd, dx, FAP_K_F32, lds, rows, cols), "convert");
    uint16_t *g = get(dy, (size_t)rows * ldd * 2);
    int bad = 0;
    for (int r = 0; r < rows; r++)
      for (int c = 0; c < cols; c++)
        bad += g[(size_t)r * ldd + c] != to16(x[(size_t)r * lds + c]);
    report("convert f32 -> 16-bit (rounding, overflow, tiny)", bad, 0);
    void *back = blank((size_t)rows * cols * 4);
    launched(fap_k_convert(S, back, FAP_K_F32, cols, dy, T, ldd, rows, cols), "convert back");
    float *gb = get(back, (size_t)rows * cols * 4);
    bad = 0;
    for (int r = 0; r < rows; r++)
      for (int c = 0; c < cols; c++) {
        float want = from16(g[(size_t)r * ldd + c]), got = gb[(size_t)r * cols + c];
        bad += memcmp(&want, &got, 4) != 0;
      }
    report("convert 16-bit -> f32", bad, 0);
    fap_rt_free(dx), fap_rt_free(dy), fap_rt_free(back);
    free(x), free(g), free(gb);
  }
  /* im2col into 16-bit rows padded to a multiple of 8, two frames */
  {
    const int size = 42, patch = 14, grid = 3, cols = 3 * patch * patch, ld = 592, batch = 2;
    float *img = rnd((size_t)batch * 3 * size * size, -2, 2);
    void *di = put(img, (size_t)batch * 3 * size * size * 4);
    void *dc = blank((size_t)batch * grid * grid * ld * 2);
    launched(fap_k_im2col(S, dc, T, ld, di, size, patch, batch), "im2col");
    uint16_t *g = get(dc, (size_t)batch * grid * grid * ld * 2);
    float *ref = malloc((size_t)grid * grid * cols * 4);
    int bad = 0;
    for (int f = 0; f < batch; f++) {
      cpu.ops->im2col(cpu.ctx, ref, img + (size_t)f * 3 * size * size, size, patch);
      for (int r = 0; r < grid * grid; r++)
        for (int c = 0; c < ld; c++) {
          const uint16_t got = g[((size_t)f * grid * grid + r) * ld + c];
          bad += got != (c < cols ? to16(ref[(size_t)r * cols + c]) : to16(0.0f));
        }
    }
    report("im2col -> 16-bit, padded, batch 2", bad, 0);
    fap_rt_free(di), fap_rt_free(dc);
    free(img), free(g), free(ref);
  }
  /* add_row over a batch: frame f's rows += frame f's row (the prior b on
   * the text rows), frames at their strides, other elements untouched: exact */
  {
    const int rows = 3, dim = 12, ldy = 20, batch = 3;
    const size_t ys = (size_t)5 * ldy, row_stride = 16; /* frame strides, with gaps */
    float *y = rnd((size_t)batch * ys, -1, 1), *row = rnd((size_t)batch * row_stride, -1, 1);
    void *dy = put(y, (size_t)batch * ys * 4), *dr = put(row, (size_t)batch * row_stride * 4);
    launched(fap_k_add_row(S, dy, ldy, ys, dr, row_stride, rows, dim, batch), "add_row");
    float *g = get(dy, (size_t)batch * ys * 4);
    int bad = 0;
    for (int f = 0; f < batch; f++)
      for (size_t i = 0; i < ys; i++) {
        const size_t r = i / ldy, c = i % ldy;
        const float want = y[f * ys + i] + (r < (size_t)rows && c < (size_t)dim ? row[f * row_stride + c] : 0.0f);
        bad += g[f * ys + i] != want;
      }
    report("add_row, batch 3 at frame strides", bad, 0);
    fap_rt_free(dy), fap_rt_free(dr);
    free(y), free(row), free(g);
  }
  /* linear_rows (the prior MLP, the creation passes): f32 x, 16-bit W, accumulate */
  {
    const int rows = 3, in = 700, out = 45;
    float *x = rnd((size_t)rows * in, -1, 1), *w = rnd((size_t)out * in, -0.2, 0.2);
    float *b = rnd(out, -0.5, 0.5);
    uint16_t *w16 = narrow(w, (size_t)out * in);
    void *dx = put(x, (size_t)rows * in * 4), *dw = put(w16, (size_t)out * in * 2);
    float *y0 = rnd((size_t)rows * out, -1, 1);
    void *db = put(b, out * 4), *dy = put(y0, (size_t)rows * out * 4);
    for (int accumulate = 1; accumulate >= 0; accumulate--) { /* y0 first, then replaced */
      launched(fap_k_linear_rows(S, dy, out, dx, in, dw, T, db, rows, in, out, accumulate),
               "linear_rows");
      float *g = get(dy, (size_t)rows * out * 4);
      double err = 0;
      for (int r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) {
          double acc = b[o] + (accumulate ? y0[(size_t)r * out + o] : 0.0), mag = fabs(acc);
          for (int i = 0; i < in; i++) {
            const double t = x[(size_t)r * in + i] * (double)from16(w16[(size_t)o * in + i]);
            acc += t;
            mag += fabs(t);
          }
          err = fmax(err, fabs(g[(size_t)r * out + o] - acc) / (1e-5 * mag + 1e-7));
        }
      report(accumulate ? "linear_rows (+=)" : "linear_rows", err, 1.0);
      free(g);
    }
    fap_rt_free(dx), fap_rt_free(dw), fap_rt_free(db), fap_rt_free(dy);
    free(x), free(w), free(b), free(w16), free(y0);
  }
  /* batched scoring kernels with frame strides, and the score formula */
  {
    const int batch = 3, n = 300, dim = 20, ldx = 22, k = 7;
    const size_t xs = (size_t)(n + 5) * ldx;
    float *x = rnd(batch * xs, -1, 1), *t0 = rnd(dim, -0.3, 0.3), *t1 = rnd((size_t)batch * dim, -0.3, 0.3);
    void *dx = put(x, batch * xs * 4), *d0 = put(t0, dim * 4), *d1 = put(t1, (size_t)batch * dim * 4);
    void *dout = blank((size_t)batch * n * 4), *dsc = blank((size_t)batch * 4 * 4);
    void *didx = blank((size_t)batch * k * 4), *dg = blank((size_t)batch * k * dim * 4);
    launched(fap_k_two_way(S, dout, n, dx, ldx, xs, n, dim, d0, 0, d1, dim, 1 / 0.07f, batch),
             "two_way");
    launched(fap_k_reduce_max(S, dsc, 4, dout, n, n, batch), "reduce_max");
    launched(fap_k_topk(S, didx, dout, n, n, k, batch), "topk");
    launched(fap_k_gather_rows(S, dg, dx, ldx, xs, didx, k, dim, batch), "gather");
    float *prob = get(dout, (size_t)batch * n * 4), *sc = get(dsc, (size_t)batch * 16);
    int32_t *idx = get(didx, (size_t)batch * k * 4);
    float *gath = get(dg, (size_t)batch * k * dim * 4);
    double perr = 0;
    int bad = 0;
    for (int f = 0; f < batch; f++) {
      float ref[300], mx;
      int32_t ridx[7];
      cpu.ops->two_way_prob(cpu.ctx, ref, x + f * xs, ldx, n, dim, t0, t1 + (size_t)f * dim,
                            1 / 0.07f);
      perr = fmax(perr, max_abs_diff(prob + (size_t)f * n, ref, n));
      cpu.ops->reduce_max(cpu.ctx, &mx, prob + (size_t)f * n, n);
      cpu.ops->topk(cpu.ctx, ridx, prob + (size_t)f * n, n, k);
      bad += sc[4 * f] != mx;
      bad += memcmp(ridx, idx + (size_t)f * k, sizeof ridx) != 0;
      for (int r = 0; r < k; r++)
        bad += memcmp(gath + ((size_t)f * k + r) * dim, x + f * xs + (size_t)ridx[r] * ldx,
                      dim * 4) != 0;
    }
    report("two_way batch 3 (per-frame t1)", perr, 2e-6);
    report("reduce_max / topk / gather batch 3 (on the device's probabilities)", bad, 0);
    float s4[12] = {0.9f, 0.7f, 0.3f, 0, 0.1f, 0.2f, 0.05f, 0, 1, 1, 1, 0};
    void *ds = put(s4, sizeof s4);
    launched(fap_k_score(S, ds, 3), "score");
    float *gs = get(ds, sizeof s4);
    bad = 0;
    for (int f = 0; f < 3; f++)
      bad += gs[4 * f + 3] != 0.5f * (s4[4 * f + 2] + (2.0f * s4[4 * f] + s4[4 * f + 1]) / 3.0f);
    report("score = 0.5 (q + (2 max1 + max2) / 3)", bad, 0);
    fap_rt_free(dx), fap_rt_free(d0), fap_rt_free(d1), fap_rt_free(dout), fap_rt_free(dsc);
    fap_rt_free(didx), fap_rt_free(dg), fap_rt_free(ds);
    free(x), free(t0), free(t1), free(prob), free(sc), free(idx), free(gath), free(gs);
  }
}

static void kernels(void) {
  /* flash attention: every head size, tails of both tiles, the CLS-only last
   * layer, dual and not, two frames */
  const int shapes[][5] = {/* rows heads hd dual nq_std(0 = rows) */
                           {17, 4, 16, 1, 0},  {65, 2, 32, 1, 0},   {130, 2, 64, 1, 1},
                           {64, 1, 64, 0, 0},  {200, 2, 64, 1, 0},  {37, 1, 128, 1, 0},
                           {1, 2, 64, 1, 0},   {100, 3, 32, 0, 37}, {577, 1, 64, 1, 0}};
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
    const int *s = shapes[i];
    if (fap_rt_is_emulated() && s[0] > 300)
      continue; /* the emulator is slow; the device takes them all */
    k_flash(s[0], s[1], s[2], s[3], s[4] ? s[4] : s[0], 2);
  }
  k_attention_prefix();
  k_gemm(37, 64, 48, 64, 64, 48, 0, 1, FAP_K_F32, 0);
  k_gemm(37, 64, 48, 72, 64, 56, 0, 1, FAP_K_F32, 1);
  k_gemm(37, 64, 192, 64, 64, 192, 0, 1, T, 0);
  k_gemm(21, 48, 40, 48, 40, 40, 1, 0, FAP_K_F32, 0);
  k_gemm(3, 592, 64, 592, 592, 64, 0, 0, FAP_K_F32, 0);
  k_gemm(2, 64, 64, 1088, 64, 1088, 0, 1, FAP_K_F32, 1); /* CLS rows of two frames */
  k_gemm32(37, 64, 32, 64);
  k_gemm32(3, 64, 32, 17 * 64); /* the CLS rows of three frames */
  k_elementwise();
}

int main(int argc, char **argv) {
  (void)argc, (void)argv;
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (!fap_backend_cuda_available()) {
    printf("no usable CUDA device (%s): skipped\n", fap_rt_error());
    return 77;
  }
  if (fap_backend_cpu_new(2, 1, &cpu)) /* the reference loops */
    return 1;
  for (int pass = 0; pass < 2; pass++) {
    const fap_precision prec = pass ? FAP_PRECISION_BF16 : FAP_PRECISION_F16;
    T = pass ? FAP_K_BF16 : FAP_K_F16;
    U = pass ? 1.0 / 256 : 1.0 / 2048;
    if (fap_backend_cuda_new(0, prec, &cuda) || fap_rt_stream_new(&S) ||
        fap_rt_blas_new(&BL, S, (size_t)32 << 20)) {
      printf("cannot open the CUDA backend: %s\n", fap_rt_error());
      return 1;
    }
    printf("-- %s%s\n", fap_precision_name(prec), fap_rt_is_emulated() ? " (emulator)" : "");
    if (pass == 0) {
      table_ops(); /* f32 ops: the precision only touches linear / matmul */
      op_preprocess();
    } else {
      op_linear(7, 33, 19, 40, 21, 1, 0, 0);
      op_linear(9, 24, 17, 30, 20, 0, 0, 1);
    }
    activation_ops();
    frame_scope();
    kernels();
    fap_rt_blas_free(BL);
    fap_rt_stream_free(S);
    fap_backend_free(&cuda);
    release_kept();
  }
  fap_backend_free(&cpu);
  printf("%s: %d of %d checks failed\n", failures ? "FAILED" : "passed", failures, checks);
  return failures ? 1 : 0;
}
