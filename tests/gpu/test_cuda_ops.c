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
 *   linear_rows (prior MLP)    1e-5 sum|x w| against the rounded weights
 *   preprocess (every format), upsample_mean, gaussian_blur, topk, gather,
 *   im2col, embed, text_init, add, add_row, relu, copy2d, reduce_max, score: exact.
 */
#include "fap.h"

#include "backend.h"
#include "fap_kernels.h"
#include "half.h"

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
        /* linear rounds its inputs to the 16-bit type; matmul (the final
         * projections) stays in f32 */
        const float xf = x[(size_t)r * ldx + k], wf = in_out ? w[(size_t)k * out + o] : w[(size_t)o * in + k];
        const double xv = in_out ? xf : round16(xf), wv = in_out ? wf : round16(wf);
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
  /* embed and text_init: exact sums */
  {
    const int n = 9, dim = 12, batch = 3;
    float *patches = rnd((size_t)batch * n * dim, -1, 1), *cls = rnd(dim, -1, 1);
    float *pos = rnd((size_t)(n + 1) * dim, -1, 1);
    void *dp = put(patches, (size_t)batch * n * dim * 4), *dc = put(cls, dim * 4);
    void *dpos = put(pos, (size_t)(n + 1) * dim * 4), *dx = blank((size_t)batch * (n + 1) * dim * 4);
    launched(fap_k_embed(S, dx, dp, dc, dpos, n, dim, batch), "embed");
    float *g = get(dx, (size_t)batch * (n + 1) * dim * 4);
    int bad = 0;
    for (int f = 0; f < batch; f++)
      for (int r = 0; r <= n; r++)
        for (int c = 0; c < dim; c++) {
          float want = (r ? patches[((size_t)f * n + r - 1) * dim + c] : cls[c]) + pos[r * dim + c];
          bad += g[((size_t)f * (n + 1) + r) * dim + c] != want;
        }
    report("embed (CLS, patches, positions), batch 3", bad, 0);
    const int k = 3, rr = 4, nneg = 2;
    float *init = rnd((size_t)k * rr * dim, -1, 1), *prior = rnd((size_t)batch * dim, -1, 1);
    void *di = put(init, (size_t)k * rr * dim * 4), *dpr = put(prior, (size_t)batch * dim * 4);
    void *dt = blank((size_t)batch * k * rr * dim * 4);
    launched(fap_k_text_init(S, dt, di, dpr, k, rr, nneg, dim, batch), "text_init");
    float *gt = get(dt, (size_t)batch * k * rr * dim * 4);
    bad = 0;
    for (int f = 0; f < batch; f++)
      for (int p = 0; p < k; p++)
        for (int r = 0; r < rr; r++)
          for (int c = 0; c < dim; c++) {
            float want = init[((size_t)p * rr + r) * dim + c];
            if (r < nneg)
              want += prior[(size_t)f * dim + c];
            bad += gt[(((size_t)f * k + p) * rr + r) * dim + c] != want;
          }
    report("text_init (a + b on the first n_neg rows), batch 3", bad, 0);
    fap_rt_free(dp), fap_rt_free(dc), fap_rt_free(dpos), fap_rt_free(dx), fap_rt_free(di);
    fap_rt_free(dpr), fap_rt_free(dt);
    free(patches), free(cls), free(pos), free(g), free(init), free(prior), free(gt);
  }
  /* linear_rows (the prior MLP): f32 x, 16-bit W, relu */
  {
    const int rows = 3, in = 700, out = 45;
    float *x = rnd((size_t)rows * in, -1, 1), *w = rnd((size_t)out * in, -0.2, 0.2);
    float *b = rnd(out, -0.5, 0.5);
    uint16_t *w16 = narrow(w, (size_t)out * in);
    void *dx = put(x, (size_t)rows * in * 4), *dw = put(w16, (size_t)out * in * 2);
    void *db = put(b, out * 4), *dy = blank((size_t)rows * out * 4);
    for (int relu = 0; relu < 2; relu++) {
      launched(fap_k_linear_rows(S, dy, out, dx, in, dw, T, db, rows, in, out, relu),
               "linear_rows");
      float *g = get(dy, (size_t)rows * out * 4);
      double err = 0;
      for (int r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) {
          double acc = b[o], mag = fabs(b[o]);
          for (int i = 0; i < in; i++) {
            const double t = x[(size_t)r * in + i] * (double)from16(w16[(size_t)o * in + i]);
            acc += t;
            mag += fabs(t);
          }
          if (relu && acc < 0)
            acc = 0;
          err = fmax(err, fabs(g[(size_t)r * out + o] - acc) / (1e-5 * mag + 1e-7));
        }
      report(relu ? "linear_rows (relu)" : "linear_rows", err, 1.0);
      free(g);
    }
    fap_rt_free(dx), fap_rt_free(dw), fap_rt_free(db), fap_rt_free(dy);
    free(x), free(w), free(b), free(w16);
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
