/* Unit tests of the CPU backend's operations (core/backend_cpu.c), of the
 * resampling arithmetic (core/resample.c) and of the half-precision
 * conversions (core/half.c).
 *
 * Every backend operation runs twice, through the fast path (reference = 0:
 * OpenBLAS, OpenMP, whatever vectorised code the backend has) and through the
 * plain reference loops (reference = 1), on random data with odd sizes and
 * padded leading dimensions. Both are compared against a direct computation in
 * double precision written here from the definitions in docs/SPEC.md / backend.h,
 * and the fast path against the reference loops. Output padding is filled with
 * a sentinel and must come back untouched; input padding holds NaN, so an op
 * that reads past a row poisons its result.
 *
 * Tolerances (u = 2^-24, the unit roundoff of f32):
 *   linear, matmul     |got - exact| <= (in + 2) * 2u * sum|terms| per element
 *                      (the classic bound for a float dot product, doubled);
 *                      |fast - reference| <= 1e-5 * max|reference|; linear's fast
 *                      path runs with each f32 GEMM (FAP_CPU_GEMM=openblas and
 *                      =dnnl, whatever this CPU would choose), and oneDNN's is
 *                      also called directly, so a backend that ignored the
 *                      override cannot hide that
 *   attention          |got - exact| <= 1e-5 * max|v|; fast vs reference as above; the
 *                      fast path runs twice, fused (core/attention_cpu.c, where hd % 16
 *                      == 0 and the CPU has AVX2 + FMA) and with its BLAS path
 *                      (FAP_CPU_ATTENTION=blas), and the fused kernel is also called
 *                      directly, so a backend that stopped choosing it cannot hide that;
 *                      each fused kernel (AVX2, AVX-512) also runs by name, the same
 *                      bounds, skipped with its reason where the CPU lacks it
 *   attention_dual,    each path as attention (1e-5 * max|v|, fast vs reference 1e-5);
 *   attention_cached   the cache rows a pass stores: exact copies; every other cache
 *                      element, and out_x past nq_std, untouched (bitwise)
 *   layernorm          |got - exact| <= 1e-5 (1 + |exact|) + 4u |w| (|x| + |mean|) / std
 *                      (the second term: x - mean in f32; it matters in the low-variance row)
 *   quickgelu          |got - exact| <= 2e-6 |exact| + 2^-23 |1.702x| (1 - sig(1.702x)) |exact|
 *                      + 1e-30: 2e-6 relative (room for an own exp approximation)
 *                      plus the error f32 cannot avoid when it rounds the
 *                      argument 1.702x (exp's condition number is its argument)
 *   l2norm, mean_rows  1e-6 relative
 *   two_way_prob       2e-6 absolute (probabilities)
 *   faprompt_score     4u (|q| + 2|max1| + |max2|): three f32 roundings (2x, 0.5x exact)
 *   upsample_mean      2e-6 + 8 G u absolute (inputs in [0, 1]; the core, like torch,
 *                      computes the source coordinate with an f32 scale, off by ~3 G u)
 *   gaussian_blur      2e-6 + 2 (2r + 2) u absolute (two f32 sums of 2r + 1 terms)
 *   preprocess         1e-5 absolute on normalised values
 *   topk, gather, im2col, relu, add, add_row, copy2d, reduce_max: exact. */
#include "attention_cpu.h"
#include "backend.h"
#include "half.h"
#include "linear_dnnl.h"
#include "linear_f32_dnnl.h"
#include "resample.h"

#include <float.h>
#include <glib.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define SENTINEL (-777.25f)
#define U (1.0 / 16777216.0) /* 2^-24 */

/* [0] fast, [1] reference, [2] fast with the BLAS attention */
static fap_backend backends[3];
static const char *const backend_label[4] = {"fast", "reference", "fast, BLAS attention",
                                             "fused kernel called directly"};
static GRand *rng;
/* the fast path with each f32 GEMM forced (FAP_CPU_GEMM), and oneDNN's called
 * directly (NULL in a build without oneDNN) */
static fap_backend gemm_backends[2];
static const char *const gemm_label[3] = {"fast, FAP_CPU_GEMM=openblas", "fast, FAP_CPU_GEMM=dnnl",
                                          "oneDNN f32 called directly"};
static fap_dnnl_f32 *dnnl_f32;

/* ---- helpers -------------------------------------------------------------- */

static float frand(double lo, double hi) { return (float)g_rand_double_range(rng, lo, hi); }

/* rows x cols in a buffer of leading dimension ld; padding holds pad. */
static float *rand_matrix(int rows, int cols, int ld, double lo, double hi, float pad) {
  float *m = g_new(float, (size_t)rows * ld + 1);
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < ld; c++)
      m[(size_t)r * ld + c] = c < cols ? frand(lo, hi) : pad;
  m[(size_t)rows * ld] = pad; /* one past the end */
  return m;
}

static float *rand_vector(size_t n, double lo, double hi) {
  float *v = g_new(float, n);
  for (size_t i = 0; i < n; i++)
    v[i] = frand(lo, hi);
  return v;
}

static void check_padding(const float *y, int rows, int cols, int ld, const char *what) {
  for (int r = 0; r < rows; r++)
    for (int c = cols; c < ld; c++)
      if (y[(size_t)r * ld + c] != SENTINEL)
        g_error("%s: padding at row %d column %d was written (%g)", what, r, c,
                y[(size_t)r * ld + c]);
  if (y[(size_t)rows * ld] != SENTINEL)
    g_error("%s: wrote past the end of the output", what);
}

static double max_abs(const float *y, int rows, int cols, int ld) {
  double m = 0;
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < cols; c++)
      m = fmax(m, fabs(y[(size_t)r * ld + c]));
  return m;
}

/* |a - b| <= tol * max|b| over a rows x cols block; also catches NaN. */
static void check_close_rel(const float *a, const float *b, int rows, int cols, int ld, double tol,
                            const char *what) {
  double scale = max_abs(b, rows, cols, ld);
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < cols; c++) {
      double d = fabs((double)a[(size_t)r * ld + c] - b[(size_t)r * ld + c]);
      if (!(d <= tol * scale))
        g_error("%s: [%d, %d] %.9g vs %.9g differ by %.3g > %.3g * %.3g", what, r, c,
                a[(size_t)r * ld + c], b[(size_t)r * ld + c], d, tol, scale);
    }
}

/* ---- linear / matmul ------------------------------------------------------ */

/* FAP_CPU_GEMM decides where it names a GEMM this build has; otherwise the
 * CPU does, the same way every time. */
static void test_gemm_choice(void) {
  const char *why = NULL;
  g_setenv("FAP_CPU_GEMM", "openblas", TRUE);
  g_assert_cmpint(fap_cpu_gemm_choose(&why), ==, FAP_GEMM_OPENBLAS);
  g_assert_nonnull(why);
  g_setenv("FAP_CPU_GEMM", "dnnl", TRUE);
  g_assert_cmpint(fap_cpu_gemm_choose(&why), ==,
                  fap_dnnl_built() ? FAP_GEMM_DNNL : fap_cpu_gemm_choose(&why));
  g_unsetenv("FAP_CPU_GEMM");
  const fap_cpu_gemm by_cpu = fap_cpu_gemm_choose(&why);
  g_test_message("this CPU's f32 GEMM: %s (%s; oneDNN ISA %s)",
                 by_cpu == FAP_GEMM_DNNL ? "oneDNN" : "OpenBLAS", why, fap_dnnl_isa_name());
  g_assert_true(by_cpu == FAP_GEMM_OPENBLAS || fap_dnnl_built());
  for (int i = 0; i < 3; i++)
    g_assert_cmpint(fap_cpu_gemm_choose(&why), ==, by_cpu);
  g_setenv("FAP_CPU_GEMM", "no-such-gemm", TRUE); /* ignored, with a warning */
  g_assert_cmpint(fap_cpu_gemm_choose(&why), ==, by_cpu);
  g_unsetenv("FAP_CPU_GEMM");
}

typedef struct {
  int rows, in, out, ldx, ldy, bias, accumulate;
} linear_case;

static void test_linear(void) {
  int openblas_differs = 0;
  static const linear_case cases[] = {
      {7, 33, 19, 37, 23, 1, 0}, {7, 33, 19, 37, 23, 0, 0}, {7, 33, 19, 37, 23, 1, 1},
      {7, 33, 19, 37, 23, 0, 1}, {1, 64, 3, 64, 3, 1, 0},   {1, 96, 17, 101, 20, 0, 1},
      {3, 1, 5, 1, 5, 1, 0},     {67, 96, 75, 101, 80, 1, 1}, {40, 130, 9, 131, 9, 0, 0},
      /* large enough for the blocked kernels (oneDNN: brgemm; a strided
       * output: its sgemm), as the encoders' layers */
      {133, 256, 192, 256, 192, 1, 1}, {97, 200, 160, 200, 480, 1, 0},
  };
  for (size_t ci = 0; ci < G_N_ELEMENTS(cases); ci++) {
    const linear_case *lc = &cases[ci];
    float *x = rand_matrix(lc->rows, lc->in, lc->ldx, -1, 1, NAN);
    float *w = rand_vector((size_t)lc->out * lc->in, -0.5, 0.5);
    float *b = lc->bias ? rand_vector(lc->out, -1, 1) : NULL;
    float *y0 = rand_matrix(lc->rows, lc->out, lc->ldy, -2, 2, SENTINEL);
    /* [0] fast, [1] reference, [2] and [3] the fast path with each GEMM, [4]
     * oneDNN's called directly */
    float *y[5];
    for (int k = 0; k < 5; k++) {
      char what[128];
      g_snprintf(what, sizeof what, "linear case %zu (%s)", ci,
                 k < 2 ? backend_label[k] : gemm_label[k - 2]);
      y[k] = g_memdup2(y0, ((size_t)lc->rows * lc->ldy + 1) * sizeof(float));
      if (k < 4) {
        const fap_backend *be = k < 2 ? &backends[k] : &gemm_backends[k - 2];
        be->ops->linear(be->ctx, y[k], lc->ldy, x, lc->ldx, w, b, lc->rows, lc->in, lc->out,
                        lc->accumulate);
        g_assert_cmpint(be->ops->synchronize(be->ctx), ==, FAP_OK);
      } else if (dnnl_f32) {
        g_assert_cmpint(fap_dnnl_f32_linear(dnnl_f32, y[k], lc->ldy, x, lc->ldx, w, b, lc->rows,
                                            lc->in, lc->out, lc->accumulate),
                        ==, FAP_OK);
      } else {
        continue; /* no oneDNN in this build */
      }
      check_padding(y[k], lc->rows, lc->out, lc->ldy, what);
      for (int r = 0; r < lc->rows; r++)
        for (int o = 0; o < lc->out; o++) {
          double exact = 0, mag = 0;
          if (lc->accumulate) {
            exact += y0[(size_t)r * lc->ldy + o];
            mag += fabs(y0[(size_t)r * lc->ldy + o]);
          }
          if (b) {
            exact += b[o];
            mag += fabs(b[o]);
          }
          for (int i = 0; i < lc->in; i++) {
            double t = (double)x[(size_t)r * lc->ldx + i] * w[(size_t)o * lc->in + i];
            exact += t;
            mag += fabs(t);
          }
          double got = y[k][(size_t)r * lc->ldy + o];
          double tol = (lc->in + 2) * 2 * U * mag;
          if (!(fabs(got - exact) <= tol))
            g_error("%s: y[%d, %d] = %.9g, exact %.9g (error %.3g > %.3g)", what, r, o, got,
                    exact, fabs(got - exact), tol);
        }
    }
    check_close_rel(y[0], y[1], lc->rows, lc->out, lc->ldy, 1e-5, "linear fast vs reference");
    for (int k = 2; k < 5; k++) {
      char what[128];
      g_snprintf(what, sizeof what, "linear %s vs reference", gemm_label[k - 2]);
      if (k < 4 || dnnl_f32)
        check_close_rel(y[k], y[1], lc->rows, lc->out, lc->ldy, 1e-5, what);
    }
    /* the default is one of the two, bit for bit: the choice is the CPU's;
     * FAP_CPU_GEMM=dnnl is oneDNN's path bit for bit, and =openblas is not
     * (its sums run in another order: some element of the larger cases
     * differs, counted over all cases below) */
    const size_t bytes = ((size_t)lc->rows * lc->ldy + 1) * sizeof(float);
    if (memcmp(y[0], y[2], bytes) != 0 && memcmp(y[0], y[3], bytes) != 0)
      g_error("linear case %zu: the default fast path matches neither GEMM bit for bit", ci);
    if (dnnl_f32 && memcmp(y[3], y[4], bytes) != 0)
      g_error("linear case %zu: FAP_CPU_GEMM=dnnl does not compute what oneDNN does", ci);
    openblas_differs += dnnl_f32 && memcmp(y[2], y[4], bytes) != 0;
    for (int k = 0; k < 5; k++)
      g_free(y[k]);
    g_free(x);
    g_free(w);
    g_free(b);
    g_free(y0);
  }
  if (dnnl_f32 && !openblas_differs)
    g_error("FAP_CPU_GEMM=openblas computed what oneDNN does in every case");
}

static void test_matmul(void) {
  static const int cases[][5] = {
      /* rows, in, out, ldx, ldy */
      {7, 33, 19, 37, 23}, {1, 64, 32, 64, 32}, {17, 1, 4, 3, 6}, {61, 64, 32, 70, 33},
  };
  for (size_t ci = 0; ci < G_N_ELEMENTS(cases); ci++) {
    int rows = cases[ci][0], in = cases[ci][1], out = cases[ci][2], ldx = cases[ci][3],
        ldy = cases[ci][4];
    float *x = rand_matrix(rows, in, ldx, -1, 1, NAN);
    float *p = rand_vector((size_t)in * out, -0.5, 0.5);
    float *y[2];
    for (int k = 0; k < 2; k++) {
      char what[128];
      g_snprintf(what, sizeof what, "matmul case %zu (%s)", ci, backend_label[k]);
      y[k] = rand_matrix(rows, out, ldy, -9, 9, SENTINEL); /* must be overwritten, not added to */
      backends[k].ops->matmul(backends[k].ctx, y[k], ldy, x, ldx, p, rows, in, out);
      check_padding(y[k], rows, out, ldy, what);
      for (int r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) {
          double exact = 0, mag = 0;
          for (int i = 0; i < in; i++) {
            double t = (double)x[(size_t)r * ldx + i] * p[(size_t)i * out + o];
            exact += t;
            mag += fabs(t);
          }
          double got = y[k][(size_t)r * ldy + o], tol = (in + 2) * 2 * U * mag;
          if (!(fabs(got - exact) <= tol))
            g_error("%s: y[%d, %d] = %.9g, exact %.9g", what, r, o, got, exact);
        }
    }
    check_close_rel(y[0], y[1], rows, out, ldy, 1e-5, "matmul fast vs reference");
    g_free(y[0]);
    g_free(y[1]);
    g_free(x);
    g_free(p);
  }
}

/* ---- attention ------------------------------------------------------------ */

typedef enum { SEPARATE, PACKED, VV } att_layout;

typedef struct {
  int nq, nk, heads, hd, q_pos0;
  att_layout layout;
} att_case;

static void attention_exact(double *out, const float *q, int ldq, const float *k, int ldk,
                            const float *v, int ldv, int nq, int nk, int heads, int hd,
                            int q_pos0) {
  double *s = g_new(double, nk);
  for (int h = 0; h < heads; h++)
    for (int i = 0; i < nq; i++) {
      int visible = q_pos0 < 0 ? nk : MIN(q_pos0 + i + 1, nk);
      double mx = -INFINITY, sum = 0;
      for (int j = 0; j < visible; j++) {
        double acc = 0;
        for (int d = 0; d < hd; d++)
          acc += (double)q[(size_t)i * ldq + h * hd + d] * k[(size_t)j * ldk + h * hd + d];
        s[j] = acc / sqrt((double)hd);
        mx = fmax(mx, s[j]);
      }
      for (int j = 0; j < visible; j++)
        sum += s[j] = exp(s[j] - mx);
      for (int d = 0; d < hd; d++) {
        double acc = 0;
        for (int j = 0; j < visible; j++)
          acc += s[j] / sum * v[(size_t)j * ldv + h * hd + d];
        out[(size_t)i * heads * hd + h * hd + d] = acc;
      }
    }
  g_free(s);
}

static const att_case att_cases[] = {
    {13, 13, 3, 8, -1, PACKED},  /* vision: square, no mask, q k v in one qkv buffer */
    {17, 17, 4, 16, -1, VV},     /* V-V attention: q = k = v */
    {5, 11, 2, 16, -1, SEPARATE}, /* nq != nk, no mask */
    {13, 13, 3, 8, 0, PACKED},   /* causal from position 0 (static prompts) */
    {4, 9, 4, 12, 5, SEPARATE},  /* causal, queries at 5..8 over cached keys 0..8 */
    {3, 6, 2, 8, 4, SEPARATE},   /* visible count clipped at nk */
    {2, 9, 2, 4, 3, SEPARATE},   /* keys 6..8 are never visible */
    {1, 1, 1, 1, -1, SEPARATE},  /* out = v */
    {50, 50, 4, 32, -1, PACKED}, /* large enough for threaded BLAS */
    {6, 12, 3, 16, 6, SEPARATE}, /* after the large case: reuses the score buffer */
    /* the shapes of ViT-L/14 and CLIP's text encoder (hd = 64), cut down */
    {100, 100, 2, 64, -1, VV},      /* V-V, rows not a multiple of the 6- or 12-row tile */
    {37, 300, 3, 64, -1, SEPARATE}, /* keys not a multiple of the 16- or 32-key panel */
    {1, 577, 2, 64, -1, PACKED},    /* the last layer's CLS row over S = 336's tokens */
    {20, 1370, 1, 64, -1, SEPARATE}, /* S = 518's tokens: the longest score rows */
    {130, 130, 2, 32, -1, PACKED},  /* two row blocks, hd = 32 */
    {7, 40, 2, 64, 20, SEPARATE},   /* causal over a cached prefix (text), 19 keys hidden */
    {30, 30, 2, 64, 0, PACKED},     /* causal from 0: tiles of rows see different key counts */
    {200, 200, 1, 64, 0, PACKED},   /* causal, three row blocks, the last one 8 rows */
};

/* One case's inputs (NaN in their padding), the double-precision result and
 * max|v| over the keys that can be visible. */
typedef struct {
  float *bufq, *bufk, *bufv, *packed;
  const float *q, *k, *v;
  int ldq, ldk, ldv, ldo, c;
  double *exact, vmax;
} att_inputs;

static void att_inputs_make(att_inputs *in, const att_case *ac) {
  memset(in, 0, sizeof *in);
  const int c = in->c = ac->heads * ac->hd, nmax = MAX(ac->nq, ac->nk);
  if (ac->layout == SEPARATE) {
    in->ldq = c + 2, in->ldk = c + 1, in->ldv = c + 5;
    in->q = in->bufq = rand_matrix(ac->nq, c, in->ldq, -1.5, 1.5, NAN);
    in->k = in->bufk = rand_matrix(ac->nk, c, in->ldk, -1.5, 1.5, NAN);
    in->v = in->bufv = rand_matrix(ac->nk, c, in->ldv, -1, 1, NAN);
    if (ac->q_pos0 >= 0)
      for (int j = ac->q_pos0 + ac->nq; j < ac->nk; j++) /* never visible: must not count */
        for (int d = 0; d < c; d++) {
          in->bufk[(size_t)j * in->ldk + d] = 40.0f;
          in->bufv[(size_t)j * in->ldv + d] = 1e4f;
        }
  } else {
    in->ldq = in->ldk = in->ldv = 3 * c + 3;
    in->packed = rand_matrix(nmax, 3 * c, in->ldq, -1.5, 1.5, NAN);
    in->q = in->packed;
    in->k = ac->layout == VV ? in->packed + 2 * c : in->packed + c;
    in->v = in->packed + 2 * c;
    if (ac->layout == VV)
      in->q = in->v;
  }
  in->ldo = c + 4;
  in->exact = g_new(double, (size_t)ac->nq * c);
  attention_exact(in->exact, in->q, in->ldq, in->k, in->ldk, in->v, in->ldv, ac->nq, ac->nk,
                  ac->heads, ac->hd, ac->q_pos0);
  for (int j = 0; j < MIN(ac->nk, ac->q_pos0 < 0 ? ac->nk : ac->q_pos0 + ac->nq); j++)
    for (int d = 0; d < c; d++)
      in->vmax = fmax(in->vmax, fabs(in->v[(size_t)j * in->ldv + d]));
}

static void att_inputs_free(att_inputs *in) {
  g_free(in->exact);
  g_free(in->bufq);
  g_free(in->bufk);
  g_free(in->bufv);
  g_free(in->packed);
}

/* an output with the sentinel in its padding, to be written */
static float *att_output(const att_case *ac, const att_inputs *in) {
  return rand_matrix(ac->nq, in->c, in->ldo, -9, 9, SENTINEL);
}

/* padding untouched, |out - exact| <= 1e-5 * max|v| */
static void att_check_exact(const float *out, const att_case *ac, const att_inputs *in,
                            const char *what) {
  check_padding(out, ac->nq, in->c, in->ldo, what);
  for (int i = 0; i < ac->nq; i++)
    for (int d = 0; d < in->c; d++) {
      double got = out[(size_t)i * in->ldo + d], e = in->exact[(size_t)i * in->c + d];
      if (!(fabs(got - e) <= 1e-5 * in->vmax))
        g_error("%s: out[%d, %d] = %.9g, exact %.9g", what, i, d, got, e);
    }
}

static void test_attention(void) {
  for (size_t ci = 0; ci < G_N_ELEMENTS(att_cases); ci++) {
    const att_case *ac = &att_cases[ci];
    att_inputs in;
    att_inputs_make(&in, ac);
    float *out[4] = {NULL, NULL, NULL, NULL};
    const int fused = fap_attention_fused_usable(ac->hd);
    fap_attention_ws ws = {0};
    for (int b = 0; b < (fused ? 4 : 3); b++) {
      char what[128];
      g_snprintf(what, sizeof what, "attention case %zu (%s)", ci, backend_label[b]);
      out[b] = att_output(ac, &in);
      if (b < 3)
        backends[b].ops->attention(backends[b].ctx, out[b], in.ldo, in.q, in.ldq, in.k, in.ldk,
                                   in.v, in.ldv, ac->nq, ac->nk, ac->heads, ac->hd, ac->q_pos0);
      else
        g_assert_cmpint(fap_attention_fused(&ws, 2, out[b], in.ldo, in.q, in.ldq, in.k, in.ldk,
                                            in.v, in.ldv, ac->nq, ac->nk, ac->heads, ac->hd,
                                            ac->q_pos0), ==, FAP_OK);
      g_assert_cmpint(b < 3 ? backends[b].ops->synchronize(backends[b].ctx) : FAP_OK, ==, FAP_OK);
      att_check_exact(out[b], ac, &in, what);
    }
    check_close_rel(out[0], out[1], ac->nq, in.c, in.ldo, 1e-5, "attention fast vs reference");
    check_close_rel(out[2], out[1], ac->nq, in.c, in.ldo, 1e-5, "attention BLAS path vs reference");
    if (fused) /* the backend's fast path is the kernel itself */
      check_close_rel(out[0], out[3], ac->nq, in.c, in.ldo, 0.0,
                      "attention fast path vs fused kernel");
    fap_attention_ws_free(&ws);
    for (int b = 0; b < 4; b++)
      g_free(out[b]);
    att_inputs_free(&in);
  }
  if (!fap_attention_fused_usable(64))
    g_test_message("fused attention does not run on this CPU (no AVX2 + FMA): not tested");
}

/* Each fused kernel by name (whatever the automatic choice on this CPU) on
 * every case whose hd it takes: against the double computation and the
 * reference loops as above, the same bits with 1 and 2 threads (a row's sums
 * do not depend on the threads), and a backend made with
 * FAP_CPU_ATTENTION=<its name> runs it (the A/B runs of the benchmarks). */
static void test_attention_kernel(gconstpointer data) {
  const fap_attention_kernel kernel = GPOINTER_TO_INT(data);
  const char *name = kernel == FAP_ATTENTION_AVX512 ? "avx512" : "avx2";
  if (fap_attention_kernel_for(kernel, 64) != kernel) {
    g_test_skip(kernel == FAP_ATTENTION_AVX512 ? "this CPU has no AVX-512F: kernel not tested"
                                               : "this CPU has no AVX2 + FMA: kernel not tested");
    return;
  }
  g_assert_cmpint(fap_attention_kernel_named(name), ==, kernel);
  g_setenv("FAP_CPU_ATTENTION", name, TRUE);
  fap_backend named;
  g_assert_cmpint(fap_backend_cpu_new(2, 0, &named), ==, FAP_OK);
  g_unsetenv("FAP_CPU_ATTENTION");
  int ran = 0;
  for (size_t ci = 0; ci < G_N_ELEMENTS(att_cases); ci++) {
    const att_case *ac = &att_cases[ci];
    if (fap_attention_kernel_for(kernel, ac->hd) != kernel)
      continue; /* hd not a multiple of its panel */
    att_inputs in;
    att_inputs_make(&in, ac);
    float *ref = att_output(ac, &in), *one = att_output(ac, &in), *two = att_output(ac, &in);
    float *be = att_output(ac, &in);
    backends[1].ops->attention(backends[1].ctx, ref, in.ldo, in.q, in.ldq, in.k, in.ldk, in.v,
                               in.ldv, ac->nq, ac->nk, ac->heads, ac->hd, ac->q_pos0);
    named.ops->attention(named.ctx, be, in.ldo, in.q, in.ldq, in.k, in.ldk, in.v, in.ldv, ac->nq,
                         ac->nk, ac->heads, ac->hd, ac->q_pos0);
    g_assert_cmpint(named.ops->synchronize(named.ctx), ==, FAP_OK);
    fap_attention_ws ws = {0};
    g_assert_cmpint(fap_attention_fused_with(kernel, &ws, 1, one, in.ldo, in.q, in.ldq, in.k,
                                             in.ldk, in.v, in.ldv, ac->nq, ac->nk, ac->heads,
                                             ac->hd, ac->q_pos0), ==, FAP_OK);
    g_assert_cmpint(fap_attention_fused_with(kernel, &ws, 2, two, in.ldo, in.q, in.ldq, in.k,
                                             in.ldk, in.v, in.ldv, ac->nq, ac->nk, ac->heads,
                                             ac->hd, ac->q_pos0), ==, FAP_OK);
    char what[128];
    g_snprintf(what, sizeof what, "attention case %zu (%s kernel)", ci, name);
    att_check_exact(two, ac, &in, what);
    check_close_rel(two, ref, ac->nq, in.c, in.ldo, 1e-5, what);
    check_close_rel(one, two, ac->nq, in.c, in.ldo, 0.0, what);
    check_close_rel(be, two, ac->nq, in.c, in.ldo, 0.0, what);
    fap_attention_ws_free(&ws);
    g_free(ref);
    g_free(one);
    g_free(two);
    g_free(be);
    att_inputs_free(&in);
    ran++;
  }
  g_assert_cmpint(ran, >=, 8);
  named.ops->destroy(named.ctx);
}

/* bf16 of f, nearest even (finite f) */
static double bf16_round(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  float r;
  memcpy(&r, &u, 4);
  return r;
}

/* The bf16 attention's scheme (core/attention_bf16.c) in double: q, k, v
 * rounded to bf16, scores times the f32 1/sqrt(hd), exact softmax, its
 * exponentials rounded to bf16 for P v and their unrounded sum dividing.
 * *pmax[i]: row i's largest probability (what one exponential rounded the
 * other way moves the output by, times 2^-8 max|v|). */
static void attention_bf16_scheme(double *out, double *pmax, const att_case *ac,
                                  const att_inputs *in) {
  const int nk = ac->nk, hd = ac->hd, c = in->c;
  double *s = g_new(double, nk);
  const double scale = 1.0f / sqrtf((float)hd);
  for (int i = 0; i < ac->nq; i++)
    pmax[i] = 0;
  for (int h = 0; h < ac->heads; h++)
    for (int i = 0; i < ac->nq; i++) {
      double mx = -INFINITY, sum = 0;
      for (int j = 0; j < nk; j++) {
        double acc = 0;
        for (int d = 0; d < hd; d++)
          acc += bf16_round(in->q[(size_t)i * in->ldq + h * hd + d]) *
                 bf16_round(in->k[(size_t)j * in->ldk + h * hd + d]);
        s[j] = (double)(float)acc * scale;
        mx = fmax(mx, s[j]);
      }
      for (int j = 0; j < nk; j++)
        sum += s[j] = exp(s[j] - mx);
      for (int j = 0; j < nk; j++)
        pmax[i] = fmax(pmax[i], s[j] / sum);
      for (int d = 0; d < hd; d++) {
        double acc = 0;
        for (int j = 0; j < nk; j++)
          acc += bf16_round((float)s[j]) * bf16_round(in->v[(size_t)j * in->ldv + h * hd + d]);
        out[(size_t)i * c + h * hd + d] = acc / sum;
      }
    }
  g_free(s);
}

/* The bf16 attention (AVX512-BF16) on every unmasked case whose hd it takes:
 * against its scheme in double to 1e-5 max|v| plus two bf16 steps of the
 * row's largest probability (where the f32 exponential and the double one
 * round to different bf16), padding untouched, the same bits with 1 and 2
 * threads, and the CPU backend at precision bf16 runs it (the vision
 * encoder's attention), but not for masked attention (the text encoder's). */
static void test_attention_bf16(void) {
  if (!fap_attention_bf16_usable(64)) {
    g_test_skip("this CPU has no AVX512-BF16: the bf16 attention kernel is not tested");
    return;
  }
  fap_backend bf16;
  fap_precision runs;
  g_assert_cmpint(fap_backend_cpu_new_precision(2, 0, FAP_PRECISION_BF16, &bf16, &runs), ==, FAP_OK);
  g_assert_cmpint(runs, ==, FAP_PRECISION_BF16);
  int ran = 0, masked = 0;
  for (size_t ci = 0; ci < G_N_ELEMENTS(att_cases); ci++) {
    const att_case *ac = &att_cases[ci];
    if (!fap_attention_bf16_usable(ac->hd))
      continue;
    att_inputs in;
    att_inputs_make(&in, ac);
    float *one = att_output(ac, &in), *two = att_output(ac, &in), *be = att_output(ac, &in);
    bf16.ops->attention(bf16.ctx, be, in.ldo, in.q, in.ldq, in.k, in.ldk, in.v, in.ldv, ac->nq,
                        ac->nk, ac->heads, ac->hd, ac->q_pos0);
    g_assert_cmpint(bf16.ops->synchronize(bf16.ctx), ==, FAP_OK);
    char what[128];
    if (ac->q_pos0 >= 0) { /* masked: the f32 kernel, held to the f32 bound */
      g_snprintf(what, sizeof what, "attention case %zu (bf16 backend, masked)", ci);
      att_check_exact(be, ac, &in, what);
      masked++;
    } else {
      fap_attention_bf16_ws ws = {0};
      g_assert_cmpint(fap_attention_bf16(&ws, 1, one, in.ldo, in.q, in.ldq, in.k, in.ldk, in.v,
                                         in.ldv, ac->nq, ac->nk, ac->heads, ac->hd), ==, FAP_OK);
      g_assert_cmpint(fap_attention_bf16(&ws, 2, two, in.ldo, in.q, in.ldq, in.k, in.ldk, in.v,
                                         in.ldv, ac->nq, ac->nk, ac->heads, ac->hd), ==, FAP_OK);
      fap_attention_bf16_ws_free(&ws);
      g_snprintf(what, sizeof what, "attention case %zu (bf16 kernel)", ci);
      check_padding(two, ac->nq, in.c, in.ldo, what);
      double *scheme = g_new(double, (size_t)ac->nq * in.c), *pmax = g_new(double, ac->nq);
      attention_bf16_scheme(scheme, pmax, ac, &in);
      double worst = 0, worst_f32 = 0;
      for (int i = 0; i < ac->nq; i++)
        for (int d = 0; d < in.c; d++) {
          const double got = two[(size_t)i * in.ldo + d], want = scheme[(size_t)i * in.c + d];
          const double tol = 1e-5 * in.vmax + 2.0 / 256.0 * pmax[i] * in.vmax;
          if (!(fabs(got - want) <= tol))
            g_error("%s: out[%d, %d] = %.9g, scheme %.9g (tolerance %.3g)", what, i, d, got, want,
                    tol);
          worst = fmax(worst, fabs(got - want));
          worst_f32 = fmax(worst_f32, fabs(got - in.exact[(size_t)i * in.c + d]));
        }
      g_test_message("%s: %.2e from the scheme, %.2e from exact attention (max|v| %.2f)", what,
                     worst, worst_f32, in.vmax);
      check_close_rel(one, two, ac->nq, in.c, in.ldo, 0.0, what);
      check_close_rel(be, two, ac->nq, in.c, in.ldo, 0.0, what);
      g_free(scheme);
      g_free(pmax);
      ran++;
    }
    g_free(one);
    g_free(two);
    g_free(be);
    att_inputs_free(&in);
  }
  g_assert_cmpint(ran, >=, 7);
  g_assert_cmpint(masked, >=, 3);
  bf16.ops->destroy(bf16.ctx);
}

/* |got - exact| <= tol over rows x cols (got strided by ld, exact packed by cols) */
static void check_exact(const float *got, int ld, const double *exact, int rows, int cols,
                        double tol, const char *what) {
  for (int i = 0; i < rows; i++)
    for (int d = 0; d < cols; d++) {
      double g = got[(size_t)i * ld + d], e = exact[(size_t)i * cols + d];
      if (!(fabs(g - e) <= tol))
        g_error("%s: out[%d, %d] = %.9g, exact %.9g (error %.3g > %.3g)", what, i, d, g, e,
                fabs(g - e), tol);
    }
}

/* attention_dual: the standard path of the first nq_std rows and the V-V path
 * of every row, over rows of one padded [q | k | v] buffer (the vision
 * encoder's dual layers); each against its attention in double, as above */
static void test_attention_dual(void) {
  static const int cases[][4] = {
      /* rows, nq_std, heads, hd */
      {13, 13, 3, 8},  /* both paths on every row; hd outside the fused kernel */
      {17, 1, 2, 16},  /* the last layer: the standard path of the CLS row only */
      {37, 20, 2, 64}, /* ViT-L's head size, fewer standard rows than keys */
      {50, 50, 4, 32},
      {1, 1, 1, 16}, /* one row: both outputs are v */
  };
  for (size_t ci = 0; ci < G_N_ELEMENTS(cases); ci++) {
    const int rows = cases[ci][0], nq_std = cases[ci][1], heads = cases[ci][2],
              hd = cases[ci][3], c = heads * hd, ldqkv = 3 * c + 3, ldo = c + 4;
    float *qkv = rand_matrix(rows, 3 * c, ldqkv, -1.5, 1.5, NAN);
    float *qkv0 = g_memdup2(qkv, ((size_t)rows * ldqkv + 1) * sizeof(float));
    const float *q = qkv, *k = qkv + c, *v = qkv + 2 * c;
    double *ex = g_new(double, (size_t)rows * c), *ey = g_new(double, (size_t)rows * c);
    attention_exact(ex, q, ldqkv, k, ldqkv, v, ldqkv, nq_std, rows, heads, hd, -1);
    attention_exact(ey, v, ldqkv, v, ldqkv, v, ldqkv, rows, rows, heads, hd, -1);
    const double vmax = max_abs(v, rows, c, ldqkv);
    float *ox[3], *oy[3];
    for (int b = 0; b < 3; b++) {
      char what[128];
      g_snprintf(what, sizeof what, "attention_dual case %zu (%s)", ci, backend_label[b]);
      ox[b] = rand_matrix(rows, c, ldo, -9, 9, SENTINEL);
      oy[b] = rand_matrix(rows, c, ldo, -9, 9, SENTINEL);
      float *ox0 = g_memdup2(ox[b], ((size_t)rows * ldo + 1) * sizeof(float));
      backends[b].ops->attention_dual(backends[b].ctx, ox[b], oy[b], ldo, qkv, ldqkv, rows,
                                      nq_std, heads, hd);
      g_assert_cmpint(backends[b].ops->synchronize(backends[b].ctx), ==, FAP_OK);
      check_padding(ox[b], rows, c, ldo, what);
      check_padding(oy[b], rows, c, ldo, what);
      /* out_x has nq_std rows: the rest stays as it was */
      if (memcmp(ox[b] + (size_t)nq_std * ldo, ox0 + (size_t)nq_std * ldo,
                 (size_t)(rows - nq_std) * ldo * sizeof(float)) != 0)
        g_error("%s: out_x rows from %d on were written", what, nq_std);
      if (memcmp(qkv, qkv0, ((size_t)rows * ldqkv + 1) * sizeof(float)) != 0)
        g_error("%s: the qkv input was written", what);
      char path[160];
      g_snprintf(path, sizeof path, "%s, standard path", what);
      check_exact(ox[b], ldo, ex, nq_std, c, 1e-5 * vmax, path);
      g_snprintf(path, sizeof path, "%s, V-V path", what);
      check_exact(oy[b], ldo, ey, rows, c, 1e-5 * vmax, path);
      g_free(ox0);
    }
    check_close_rel(ox[0], ox[1], nq_std, c, ldo, 1e-5, "attention_dual x fast vs reference");
    check_close_rel(oy[0], oy[1], rows, c, ldo, 1e-5, "attention_dual y fast vs reference");
    check_close_rel(ox[2], ox[1], nq_std, c, ldo, 1e-5, "attention_dual x BLAS vs reference");
    check_close_rel(oy[2], oy[1], rows, c, ldo, 1e-5, "attention_dual y BLAS vs reference");
    for (int b = 0; b < 3; b++)
      g_free(ox[b]), g_free(oy[b]);
    g_free(qkv), g_free(qkv0), g_free(ex), g_free(ey);
  }
}

/* attention_cached: `prompts` prompts of `rows` rows each at positions pos0
 * .. pos0 + rows - 1, causal, keys and values of positions < pos0 from the
 * cache, the rest from this pass's [q | k | v] rows (the text encoder). The
 * cache layout is not the detector's tight one: values_offset leaves a gap
 * after the keys and cache_stride one after the values (both NaN), and the
 * cache holds positions past the pass. Cached rows at positions >= pos0 hold
 * large keys and values: an op that took this pass's keys from there (and
 * not from its rows) would show. After the call every cache element outside
 * this pass's rows must be as it was; with store, those rows hold the
 * pass's keys and values exactly (f32 copies); without, the CPU may have
 * used them as scratch. */
static void test_attention_cached(void) {
  static const int cases[][6] = {
      /* prompts, rows, pos0, heads, hd, store */
      {3, 4, 5, 2, 16, 0}, /* the per-frame text pass over a cached prefix */
      {2, 6, 0, 2, 16, 1}, /* a creation pass from position 0: nothing cached, stores */
      {3, 3, 4, 3, 8, 1},  /* stores after a cached prefix; hd outside the fused kernel */
      {1, 1, 9, 2, 32, 0}, /* one query over nine cached positions */
      {2, 5, 7, 2, 64, 0}, /* CLIP's text head size */
  };
  for (size_t ci = 0; ci < G_N_ELEMENTS(cases); ci++) {
    const int prompts = cases[ci][0], rows = cases[ci][1], pos0 = cases[ci][2],
              heads = cases[ci][3], hd = cases[ci][4], store = cases[ci][5];
    const int dim = heads * hd, ldqkv = 3 * dim + 3, ldo = dim + 4, lmax = pos0 + rows + 2;
    const size_t values_offset = (size_t)lmax * dim + 5;
    const size_t cache_stride = values_offset + (size_t)lmax * dim + 3;
    const size_t cache_n = prompts * cache_stride;
    float *qkv = rand_matrix(prompts * rows, 3 * dim, ldqkv, -1.5, 1.5, NAN);
    float *cache0 = g_new(float, cache_n);
    for (size_t i = 0; i < cache_n; i++)
      cache0[i] = NAN; /* the gaps */
    for (int p = 0; p < prompts; p++)
      for (int j = 0; j < lmax; j++)
        for (int d = 0; d < dim; d++) {
          float *kj = cache0 + p * cache_stride + (size_t)j * dim + d;
          kj[0] = j < pos0 ? frand(-1.5, 1.5) : 40.0f;
          kj[values_offset] = j < pos0 ? frand(-1, 1) : 1e4f;
        }
    /* the exact result per prompt from its keys and values assembled in order */
    double *exact = g_new(double, (size_t)prompts * rows * dim);
    float *keys = g_new(float, (size_t)(pos0 + rows) * dim);
    float *values = g_new(float, (size_t)(pos0 + rows) * dim);
    double vmax = 0;
    for (int p = 0; p < prompts; p++) {
      const float *x = qkv + (size_t)p * rows * ldqkv;
      for (int j = 0; j < pos0 + rows; j++)
        for (int d = 0; d < dim; d++) {
          const float *kc = cache0 + p * cache_stride + (size_t)j * dim + d;
          keys[(size_t)j * dim + d] = j < pos0 ? kc[0] : x[(size_t)(j - pos0) * ldqkv + dim + d];
          values[(size_t)j * dim + d] =
              j < pos0 ? kc[values_offset] : x[(size_t)(j - pos0) * ldqkv + 2 * dim + d];
          vmax = fmax(vmax, fabs(values[(size_t)j * dim + d]));
        }
      attention_exact(exact + (size_t)p * rows * dim, x, ldqkv, keys, dim, values, dim, rows,
                      pos0 + rows, heads, hd, pos0);
    }
    float *out[3];
    for (int b = 0; b < 3; b++) {
      char what[128];
      g_snprintf(what, sizeof what, "attention_cached case %zu%s (%s)", ci,
                 store ? " store" : "", backend_label[b]);
      float *cache = g_memdup2(cache0, cache_n * sizeof(float));
      out[b] = rand_matrix(prompts * rows, dim, ldo, -9, 9, SENTINEL);
      backends[b].ops->attention_cached(backends[b].ctx, out[b], ldo, qkv, ldqkv, prompts, rows,
                                        pos0, cache, cache_stride, values_offset, store, heads,
                                        hd);
      g_assert_cmpint(backends[b].ops->synchronize(backends[b].ctx), ==, FAP_OK);
      check_padding(out[b], prompts * rows, dim, ldo, what);
      check_exact(out[b], ldo, exact, prompts * rows, dim, 1e-5 * vmax, what);
      for (int p = 0; p < prompts; p++)
        for (size_t i = 0; i < cache_stride; i++) {
          const size_t at = p * cache_stride + i;
          const int in_values = i >= values_offset;
          const size_t e = in_values ? i - values_offset : i;
          const int j = (int)(e / dim), d = (int)(e % dim);
          const int pass_row = e < (size_t)lmax * dim && j >= pos0 && j < pos0 + rows;
          if (!pass_row) {
            if (memcmp(&cache[at], &cache0[at], sizeof(float)) != 0)
              g_error("%s: prompt %d cache element %zu (outside this pass's rows) changed", what,
                      p, i);
          } else if (store) {
            const size_t src = ((size_t)p * rows + j - pos0) * ldqkv + (in_values ? 2 : 1) * dim;
            const float want = qkv[src + d];
            if (memcmp(&cache[at], &want, sizeof(float)) != 0)
              g_error("%s: prompt %d cached %s at position %d [%d] is %.9g, stored %.9g", what, p,
                      in_values ? "value" : "key", j, d, cache[at], want);
          }
        }
      g_free(cache);
    }
    check_close_rel(out[0], out[1], prompts * rows, dim, ldo, 1e-5,
                    "attention_cached fast vs reference");
    check_close_rel(out[2], out[1], prompts * rows, dim, ldo, 1e-5,
                    "attention_cached BLAS vs reference");
    for (int b = 0; b < 3; b++)
      g_free(out[b]);
    g_free(qkv), g_free(cache0), g_free(exact), g_free(keys), g_free(values);
  }
}

/* ---- elementwise ---------------------------------------------------------- */

static void test_layernorm(void) {
  static const int cases[][4] = {{5, 37, 41, 39}, {1, 64, 64, 64}, {9, 1, 1, 2}, {33, 48, 48, 50}};
  for (size_t ci = 0; ci < G_N_ELEMENTS(cases); ci++) {
    int rows = cases[ci][0], dim = cases[ci][1], ldx = cases[ci][2], ldy = cases[ci][3];
    float *x = rand_matrix(rows, dim, ldx, -2, 2.6, NAN);
    for (int i = 0; i < dim; i++) /* a row far from zero mean */
      x[i] += 50.0f;
    if (rows > 1) /* a row of small variance, where eps = 1e-5 matters */
      for (int i = 0; i < dim; i++)
        x[(size_t)ldx + i] = 3.0f + 0.01f * x[(size_t)ldx + i];
    float *w = rand_vector((guint)dim, 0.5, 1.5), *bias = rand_vector((guint)dim, -0.3, 0.3);
    for (int b = 0; b < 2; b++) {
      char what[128];
      g_snprintf(what, sizeof what, "layernorm case %zu (%s)", ci, backend_label[b]);
      float *y = rand_matrix(rows, dim, ldy, -9, 9, SENTINEL);
      backends[b].ops->layernorm(backends[b].ctx, y, ldy, x, ldx, w, bias, rows, dim);
      check_padding(y, rows, dim, ldy, what);
      for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * ldx;
        double mean = 0, var = 0;
        for (int i = 0; i < dim; i++)
          mean += xr[i];
        mean /= dim;
        for (int i = 0; i < dim; i++)
          var += (xr[i] - mean) * (xr[i] - mean);
        var /= dim;
        for (int i = 0; i < dim; i++) {
          double e = (xr[i] - mean) / sqrt(var + 1e-5) * w[i] + bias[i];
          double got = y[(size_t)r * ldy + i];
          /* plus the f32 rounding of x - mean (4u of |x| + |mean|), scaled by w / std */
          double tol = 1e-5 * (1 + fabs(e)) +
                       4 * U * fabs(w[i]) * (fabs(xr[i]) + fabs(mean)) / sqrt(var + 1e-5);
          if (!(fabs(got - e) <= tol))
            g_error("%s: y[%d, %d] = %.9g, exact %.9g", what, r, i, got, e);
        }
      }
      /* in place, as the vision encoder calls it (y = x, same leading dimension) */
      float *xi = g_memdup2(x, ((size_t)rows * ldx + 1) * sizeof(float));
      backends[b].ops->layernorm(backends[b].ctx, xi, ldx, xi, ldx, w, bias, rows, dim);
      for (int r = 0; r < rows; r++)
        for (int i = 0; i < dim; i++)
          if (fabs(xi[(size_t)r * ldx + i] - y[(size_t)r * ldy + i]) > 1e-6 * (1 + fabs(y[(size_t)r * ldy + i])))
            g_error("%s: in-place result differs at [%d, %d]", what, r, i);
      g_free(xi);
      g_free(y);
    }
    g_free(x);
    g_free(w);
    g_free(bias);
  }
}

static void test_quickgelu(void) {
  const size_t n = 20011; /* odd: exercises any vector remainder */
  float *x = g_new(float, n);
  for (size_t i = 0; i < n; i++)
    x[i] = (float)(-30.0 + 60.0 * (double)i / (double)(n - 1)); /* -30 .. 30, both included */
  x[n / 2] = 0.0f;
  x[7] = -0.0f;
  x[11] = 1e-30f;
  x[13] = -1e-30f;
  for (int b = 0; b < 2; b++) {
    float *y = g_memdup2(x, n * sizeof(float));
    backends[b].ops->quickgelu(backends[b].ctx, y, n);
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
      double xv = x[i], z = 1.702 * xv, sig = 1.0 / (1.0 + exp(-z));
      double e = xv * sig;
      double tol = 2e-6 * fabs(e) + ldexp(1.0, -23) * fabs(z) * (1.0 - sig) * fabs(e) + 1e-30;
      double err = fabs(y[i] - e);
      if (!(err <= tol))
        g_error("quickgelu (%s): x = %.9g gives %.9g, exact %.9g (error %.3g > %.3g)",
                backend_label[b], xv, y[i], e, err, tol);
      if (e != 0)
        worst = fmax(worst, err / fabs(e));
    }
    if (g_test_verbose())
      g_test_message("quickgelu (%s): worst relative error %.3g", backend_label[b], worst);
    g_assert_true(y[n / 2] == 0.0f);
    g_free(y);
  }
  g_free(x);
}

static void test_elementwise_small(void) {
  for (int b = 0; b < 2; b++) {
    const fap_backend_ops *op = backends[b].ops;
    void *ctx = backends[b].ctx;
    /* relu */
    const size_t n = 1001;
    float *x = rand_vector(n, -1, 1);
    x[3] = -0.0f;
    float *y = g_memdup2(x, n * sizeof(float));
    op->relu(ctx, y, n);
    for (size_t i = 0; i < n; i++)
      g_assert_true(y[i] == (x[i] > 0 ? x[i] : 0.0f));
    /* add */
    float *a = rand_vector(n, -1, 1);
    memcpy(y, x, n * sizeof(float));
    op->add(ctx, y, a, n);
    for (size_t i = 0; i < n; i++)
      g_assert_true(y[i] == x[i] + a[i]);
    /* add_row: 5 rows of 13 in a buffer of leading dimension 17 */
    float *m = rand_matrix(5, 13, 17, -1, 1, SENTINEL), *m0 = g_memdup2(m, (5 * 17 + 1) * sizeof(float));
    op->add_row(ctx, m, 17, a, 5, 13);
    check_padding(m, 5, 13, 17, "add_row");
    for (int r = 0; r < 5; r++)
      for (int i = 0; i < 13; i++)
        g_assert_true(m[r * 17 + i] == m0[r * 17 + i] + a[i]);
    /* copy2d: 4 rows of 10 floats from stride 12 floats to stride 15 floats */
    float *src = rand_matrix(4, 10, 12, -1, 1, NAN), *dst = rand_matrix(4, 10, 15, -1, 1, SENTINEL);
    for (int r = 0; r < 4; r++)
      for (int i = 0; i < 10; i++)
        dst[r * 15 + i] = SENTINEL - 1;
    op->copy2d(ctx, dst, 15 * sizeof(float), src, 12 * sizeof(float), 4, 10 * sizeof(float));
    check_padding(dst, 4, 10, 15, "copy2d");
    for (int r = 0; r < 4; r++)
      g_assert_true(memcmp(dst + r * 15, src + r * 12, 10 * sizeof(float)) == 0);
    /* reduce_max: all negative, so a max that starts at 0 is caught */
    float *neg = rand_vector(101, -5, -1), mx = 0;
    neg[77] = -0.5f;
    op->reduce_max(ctx, &mx, neg, 101);
    g_assert_cmpfloat(mx, ==, -0.5f);
    op->reduce_max(ctx, &mx, neg + 5, 1);
    g_assert_cmpfloat(mx, ==, neg[5]);
    /* mean_rows */
    float *rows = rand_vector(7 * 19, -1, 1), mean[19];
    op->mean_rows(ctx, mean, rows, 7, 19);
    for (int i = 0; i < 19; i++) {
      double e = 0;
      for (int r = 0; r < 7; r++)
        e += rows[r * 19 + i];
      e /= 7;
      g_assert_cmpfloat_with_epsilon(mean[i], e, 1e-6);
    }
    /* gather_rows: rows of a padded source, in any order, repeats allowed */
    const int32_t idx[5] = {6, 0, 3, 3, 1};
    float *srcm = rand_matrix(7, 11, 14, -1, 1, NAN), gathered[5 * 11];
    op->gather_rows(ctx, gathered, srcm, 14, idx, 5, 11);
    for (int r = 0; r < 5; r++)
      g_assert_true(memcmp(gathered + r * 11, srcm + idx[r] * 14, 11 * sizeof(float)) == 0);
    /* l2norm_rows */
    float *lx = rand_matrix(6, 29, 31, -3, 3, NAN), *ly = rand_matrix(6, 29, 30, 0, 1, SENTINEL);
    op->l2norm_rows(ctx, ly, 30, lx, 31, 6, 29);
    check_padding(ly, 6, 29, 30, "l2norm_rows");
    for (int r = 0; r < 6; r++) {
      double ss = 0;
      for (int i = 0; i < 29; i++)
        ss += (double)lx[r * 31 + i] * lx[r * 31 + i];
      for (int i = 0; i < 29; i++) {
        double e = lx[r * 31 + i] / sqrt(ss);
        g_assert_cmpfloat(fabs(ly[r * 30 + i] - e), <=, 1e-6 * fabs(e) + 1e-12);
      }
    }
    g_free(lx);
    g_free(ly);
    g_free(srcm);
    g_free(rows);
    g_free(neg);
    g_free(src);
    g_free(dst);
    g_free(m);
    g_free(m0);
    g_free(a);
    g_free(y);
    g_free(x);
  }
}

static void test_im2col(void) {
  static const int cases[][2] = {{56, 14}, {28, 7}, {5, 5}, {9, 3}};
  for (size_t ci = 0; ci < G_N_ELEMENTS(cases); ci++) {
    int s = cases[ci][0], p = cases[ci][1], g = s / p, cols = 3 * p * p;
    float *img = rand_vector((size_t)3 * s * s, -2, 2);
    for (int b = 0; b < 2; b++) {
      float *out = g_new(float, (size_t)g * g * cols);
      backends[b].ops->im2col(backends[b].ctx, out, img, s, p);
      for (int n = 0; n < g * g; n++)
        for (int ch = 0; ch < 3; ch++)
          for (int y = 0; y < p; y++)
            for (int x = 0; x < p; x++) {
              float e = img[(size_t)ch * s * s + (size_t)((n / g) * p + y) * s + (n % g) * p + x];
              float got = out[(size_t)n * cols + (ch * p + y) * p + x];
              if (got != e)
                g_error("im2col %dx%d/%d (%s): patch %d c%d y%d x%d", s, s, p, backend_label[b],
                        n, ch, y, x);
            }
      g_free(out);
    }
    g_free(img);
  }
}

/* ---- scoring -------------------------------------------------------------- */

typedef struct {
  int index;
  float value;
} ranked;

static int ranked_cmp(const void *pa, const void *pb) {
  const ranked *a = pa, *b = pb;
  if (a->value != b->value)
    return a->value > b->value ? -1 : 1;
  return a->index - b->index; /* ties: lower index first */
}

static void test_topk(void) {
  static const int cases[][3] = {
      /* n, k, distinct levels (0 = continuous) */
      {37, 10, 0}, {37, 10, 4}, {50, 5, 2}, {16, 16, 3}, {9, 1, 0}, {9, 1, 1}, {1369, 10, 0},
      {1369, 10, 7}, {12, 12, 1},
  };
  for (size_t ci = 0; ci < G_N_ELEMENTS(cases); ci++) {
    int n = cases[ci][0], k = cases[ci][1], levels = cases[ci][2];
    float *x = g_new(float, n);
    ranked *sorted = g_new(ranked, n);
    for (int i = 0; i < n; i++) {
      x[i] = levels ? (float)g_rand_int_range(rng, 0, levels) / 8.0f : frand(0, 1);
      sorted[i] = (ranked){i, x[i]};
    }
    qsort(sorted, n, sizeof *sorted, ranked_cmp);
    for (int b = 0; b < 2; b++) {
      int32_t *idx = g_new(int32_t, k + 1);
      idx[k] = -12345;
      backends[b].ops->topk(backends[b].ctx, idx, x, n, k);
      g_assert_cmpint(idx[k], ==, -12345);
      for (int j = 0; j < k; j++)
        if (idx[j] != sorted[j].index)
          g_error("topk n=%d k=%d levels=%d (%s): position %d is %d (x=%g), expected %d (x=%g)",
                  n, k, levels, backend_label[b], j, idx[j], idx[j] >= 0 && idx[j] < n ? x[idx[j]] : NAN,
                  sorted[j].index, sorted[j].value);
      g_free(idx);
    }
    g_free(x);
    g_free(sorted);
  }
}

static void test_two_way_prob(void) {
  const int rows = 9, dim = 32, ldx = 35;
  float *x = rand_matrix(rows, dim, ldx, -1, 1, NAN);
  float *t0 = rand_vector(dim, -1, 1), *t1 = rand_vector(dim, -1, 1);
  /* row 0 aligned with t0, row 1 with t1: saturated probabilities */
  for (int i = 0; i < dim; i++) {
    x[i] = t0[i];
    x[ldx + i] = t1[i];
  }
  static const float inv_taus[] = {1.0f / 0.07f, 1.0f, 1000.0f};
  for (size_t ti = 0; ti < G_N_ELEMENTS(inv_taus); ti++)
    for (int b = 0; b < 2; b++) {
      float out[9 + 1];
      out[rows] = SENTINEL;
      backends[b].ops->two_way_prob(backends[b].ctx, out, x, ldx, rows, dim, t0, t1,
                                    inv_taus[ti]);
      g_assert_cmpfloat(out[rows], ==, SENTINEL);
      for (int r = 0; r < rows; r++) {
        double s0 = 0, s1 = 0;
        for (int i = 0; i < dim; i++) {
          s0 += (double)x[r * ldx + i] * t0[i];
          s1 += (double)x[r * ldx + i] * t1[i];
        }
        /* softmax([s0, s1] / tau)[1], computed stably */
        double l0 = s0 * inv_taus[ti], l1 = s1 * inv_taus[ti], m = fmax(l0, l1);
        double e = exp(l1 - m) / (exp(l0 - m) + exp(l1 - m));
        /* the float dot products may be off by ~dim * u * |x||t|; the probability
         * moves by at most a quarter of that times 1/tau */
        double tol = 2e-6 + 0.25 * inv_taus[ti] * dim * 4 * U * 2 * 2;
        if (!(fabs(out[r] - e) <= tol))
          g_error("two_way_prob (%s, 1/tau %g): row %d %.9g, exact %.9g", backend_label[b],
                  inv_taus[ti], r, out[r], e);
      }
    }
  g_free(x);
  g_free(t0);
  g_free(t1);
}

/* scalars[3] = 0.5 (q + (2 max1 + max2) / 3) of scalars = {max1, max2, q}
 * (docs/SPEC.md section 4.9), in double: the f32 evaluation rounds three times
 * (the sum, the division, the sum with q; 2x and 0.5x are exact) on
 * magnitudes within |q| + 2|max1| + |max2|. The inputs stay, nothing past
 * scalars[3] is written. */
static void test_faprompt_score(void) {
  static const float known[][4] = {
      /* max1, max2, q, score */
      {0, 0, 0, 0}, {1, 1, 1, 1}, {0.9f, 0.6f, 0.3f, 0.55f}, {0, 0, 1, 0.5f}, {1, 0, 0, 1.0f / 3},
      {0, 1, 0, 1.0f / 6},
  };
  for (int b = 0; b < 2; b++)
    for (int n = 0; n < 200; n++) {
      float s[5];
      if (n < (int)G_N_ELEMENTS(known))
        memcpy(s, known[n], 3 * sizeof(float));
      else
        for (int i = 0; i < 3; i++)
          s[i] = frand(0, 1); /* probabilities */
      s[3] = NAN;
      s[4] = SENTINEL;
      const float in[3] = {s[0], s[1], s[2]};
      backends[b].ops->faprompt_score(backends[b].ctx, s);
      g_assert_cmpint(backends[b].ops->synchronize(backends[b].ctx), ==, FAP_OK);
      g_assert_true(memcmp(s, in, sizeof in) == 0);
      g_assert_cmpfloat(s[4], ==, SENTINEL);
      const double e = 0.5 * (in[2] + (2.0 * in[0] + in[1]) / 3.0);
      if (n < (int)G_N_ELEMENTS(known)) /* the formula against the score worked by hand */
        g_assert_cmpfloat(fabs(e - known[n][3]), <=, U);
      const double tol = 4 * U * (fabs(in[2]) + 2 * fabs(in[0]) + fabs(in[1]));
      if (!(fabs(s[3] - e) <= tol))
        g_error("faprompt_score (%s) of max1 %.9g max2 %.9g q %.9g: %.9g, exact %.9g",
                backend_label[b], in[0], in[1], in[2], s[3], e);
    }
}

/* ---- maps ----------------------------------------------------------------- */

/* align_corners = false: x = max((i + 0.5) in / out - 0.5, 0), in double */
static double bilinear_exact(const float *a, int g, int s, int y, int x) {
  double sy = fmax((y + 0.5) * g / s - 0.5, 0.0), sx = fmax((x + 0.5) * g / s - 0.5, 0.0);
  int y0 = MIN((int)floor(sy), g - 1), x0 = MIN((int)floor(sx), g - 1);
  int y1 = MIN(y0 + 1, g - 1), x1 = MIN(x0 + 1, g - 1);
  double wy = sy - y0, wx = sx - x0;
  return (1 - wy) * ((1 - wx) * a[y0 * g + x0] + wx * a[y0 * g + x1]) +
         wy * ((1 - wx) * a[y1 * g + x0] + wx * a[y1 * g + x1]);
}

static void test_upsample_mean(void) {
  static const int cases[][2] = {{4, 56}, {3, 42}, {3, 7}, {5, 5}, {1, 9}, {1, 1}, {37, 518}, {6, 4}};
  for (size_t ci = 0; ci < G_N_ELEMENTS(cases); ci++) {
    int g = cases[ci][0], s = cases[ci][1];
    float *a = rand_vector((size_t)g * g, 0, 1), *bb = rand_vector((size_t)g * g, 0, 1);
    for (int b = 0; b < 2; b++) {
      float *out = g_new(float, (size_t)s * s + 1);
      out[(size_t)s * s] = SENTINEL;
      backends[b].ops->upsample_mean(backends[b].ctx, out, a, bb, g, s);
      g_assert_cmpfloat(out[(size_t)s * s], ==, SENTINEL);
      for (int y = 0; y < s; y++)
        for (int x = 0; x < s; x++) {
          double e = 0.5 * (bilinear_exact(a, g, s, y, x) + bilinear_exact(bb, g, s, y, x));
          double got = out[(size_t)y * s + x];
          if (!(fabs(got - e) <= 2e-6 + 8 * g * U))
            g_error("upsample_mean %d -> %d (%s): [%d, %d] %.9g, exact %.9g", g, s,
                    backend_label[b], y, x, got, e);
        }
      if (g == 1) /* a constant map stays exactly constant */
        for (int i = 0; i < s * s; i++)
          g_assert_cmpfloat(fabs(out[i] - 0.5 * (a[0] + bb[0])), <=, 1e-7);
      g_free(out);
    }
    g_free(a);
    g_free(bb);
  }
}

/* Half-sample symmetric extension by repeated reflection (d c b a | a b c d | d c b a). */
static int reflect(int i, int n) {
  while (i < 0 || i >= n) {
    if (i < 0)
      i = -i - 1;
    if (i >= n)
      i = 2 * n - 1 - i;
  }
  return i;
}

static void test_mirror_index(void) {
  for (int n = 1; n <= 9; n++)
    for (int i = -40; i <= 40; i++)
      if (fap_mirror_index(i, n) != reflect(i, n))
        g_error("fap_mirror_index(%d, %d) = %d, expected %d", i, n, fap_mirror_index(i, n),
                reflect(i, n));
}

static void test_gaussian_kernel(void) {
  static const float sigmas[] = {0.0f, 0.1f, 0.125f, 0.5f, 1.5f, 2.0f, 3.0f, 10.0f};
  static const int radii[] = {0, 0, 1, 2, 6, 8, 12, 40}; /* floor(4 sigma + 0.5) */
  for (size_t si = 0; si < G_N_ELEMENTS(sigmas); si++) {
    int r = fap_gaussian_radius(sigmas[si]);
    g_assert_cmpint(r, ==, radii[si]);
    float *w = g_new(float, 2 * r + 2);
    w[2 * r + 1] = SENTINEL;
    fap_gaussian_fill(sigmas[si], w);
    g_assert_cmpfloat(w[2 * r + 1], ==, SENTINEL);
    double sum = 0, norm = 0;
    for (int i = -r; i <= r; i++) {
      sum += w[i + r];
      norm += exp(-0.5 * i * i / ((double)sigmas[si] * sigmas[si]));
    }
    g_assert_cmpfloat(fabs(sum - 1), <=, 1e-6);
    for (int i = -r; i <= r; i++) {
      g_assert_cmpfloat(w[i + r], ==, w[r - i]);
      double e = r ? exp(-0.5 * i * i / ((double)sigmas[si] * sigmas[si])) / norm : 1.0;
      g_assert_cmpfloat(fabs(w[i + r] - e), <=, 1e-7);
    }
    g_free(w);
  }
}

static void test_gaussian_blur(void) {
  static const struct {
    int size;
    float sigma;
  } cases[] = {{23, 2.0f}, {7, 3.0f}, {5, 10.0f}, {1, 1.0f}, {56, 1.5f}, {16, 0.3f}};
  for (size_t ci = 0; ci < G_N_ELEMENTS(cases); ci++) {
    int s = cases[ci].size, r = fap_gaussian_radius(cases[ci].sigma);
    float *k = g_new(float, 2 * r + 1);
    fap_gaussian_fill(cases[ci].sigma, k);
    float *in = rand_vector((size_t)s * s, 0, 1);
    for (int b = 0; b < 2; b++) {
      float *out = g_new(float, (size_t)s * s + 1), *tmp = g_new(float, (size_t)s * s);
      out[(size_t)s * s] = SENTINEL;
      backends[b].ops->gaussian_blur(backends[b].ctx, out, in, tmp, s, k, r);
      g_assert_cmpfloat(out[(size_t)s * s], ==, SENTINEL);
      for (int y = 0; y < s; y++)
        for (int x = 0; x < s; x++) {
          double e = 0; /* direct 2-D convolution with the separable kernel */
          for (int i = -r; i <= r; i++)
            for (int j = -r; j <= r; j++)
              e += (double)k[i + r] * k[j + r] * in[(size_t)reflect(y + i, s) * s + reflect(x + j, s)];
          double got = out[(size_t)y * s + x];
          if (!(fabs(got - e) <= 2e-6 + 2 * (2 * r + 2) * U))
            g_error("gaussian_blur S=%d sigma=%g radius %d (%s): [%d, %d] %.9g, exact %.9g", s,
                    cases[ci].sigma, r, backend_label[b], y, x, got, e);
        }
      g_free(out);
      g_free(tmp);
    }
    g_free(k);
    g_free(in);
  }
}

/* ---- resampling tables and pre-processing ---------------------------------- */

static double keys(double x) { /* Keys cubic, a = -0.5 */
  x = fabs(x);
  if (x < 1)
    return 1.5 * x * x * x - 2.5 * x * x + 1;
  if (x < 2)
    return -0.5 * x * x * x + 2.5 * x * x - 4 * x + 2;
  return 0;
}

static void alloc_table(fap_bicubic_table *t, int in, int out) {
  int taps = fap_bicubic_taps(in, out);
  t->first = g_new(int32_t, out);
  t->count = g_new(int32_t, out);
  t->weights = g_new(float, (size_t)out * taps);
  fap_bicubic_fill(t, in, out);
}

static void free_table(fap_bicubic_table *t) {
  g_free(t->first);
  g_free(t->count);
  g_free(t->weights);
}

static void test_bicubic_table(void) {
  static const int cases[][2] = {{100, 7}, {7, 30}, {56, 56}, {1, 56}, {3000, 56},
                                 {5, 56},  {57, 56}, {2, 3},  {400, 518}, {33, 42}};
  for (size_t ci = 0; ci < G_N_ELEMENTS(cases); ci++) {
    int in = cases[ci][0], out = cases[ci][1];
    fap_bicubic_table t;
    alloc_table(&t, in, out);
    g_assert_cmpint(t.in, ==, in);
    g_assert_cmpint(t.out, ==, out);
    g_assert_cmpint(t.taps, ==, fap_bicubic_taps(in, out));
    double scale = (double)in / out, fs = MAX(scale, 1.0), support = 2 * fs;
    for (int i = 0; i < out; i++) {
      /* PIL's window: centre (i + 0.5) scale, support 2 * max(scale, 1), clipped to the input */
      double center = (i + 0.5) * scale;
      int lo = MAX((int)(center - support + 0.5), 0), hi = MIN((int)(center + support + 0.5), in);
      g_assert_cmpint(t.first[i], ==, lo);
      g_assert_cmpint(t.count[i], ==, hi - lo);
      g_assert_cmpint(t.count[i], <=, t.taps);
      double sum = 0, norm = 0;
      for (int j = 0; j < t.count[i]; j++)
        norm += keys((lo + j - center + 0.5) / fs);
      for (int j = 0; j < t.taps; j++) {
        float w = t.weights[(size_t)i * t.taps + j];
        if (j >= t.count[i]) {
          g_assert_cmpfloat(w, ==, 0.0f);
          continue;
        }
        sum += w;
        double e = keys((lo + j - center + 0.5) / fs) / norm;
        if (!(fabs(w - e) <= 1e-7))
          g_error("bicubic %d -> %d: output %d tap %d weight %.9g, expected %.9g", in, out, i, j,
                  w, e);
      }
      if (!(fabs(sum - 1) <= 1e-6))
        g_error("bicubic %d -> %d: weights of output %d sum to %.9g", in, out, i, sum);
    }
    free_table(&t);
  }
}

static void test_bilinear_coord(void) {
  static const int cases[][2] = {{3, 4}, {4, 56}, {24, 37}, {1, 9}, {5, 5}, {6, 4}, {37, 518}};
  for (size_t ci = 0; ci < G_N_ELEMENTS(cases); ci++) {
    int in = cases[ci][0], out = cases[ci][1];
    for (int i = 0; i < out; i++) {
      int i0, i1;
      float w1;
      fap_bilinear_coord(i, in, out, &i0, &i1, &w1);
      double x = fmax((i + 0.5) * in / out - 0.5, 0.0);
      int e0 = MIN((int)floor(x), in - 1);
      g_assert_cmpint(i0, ==, e0);
      g_assert_cmpint(i1, ==, MIN(e0 + 1, in - 1));
      g_assert_cmpfloat(fabs(w1 - (x - e0)), <=, 1e-6 + 4 * in * U);
    }
  }
}

static const float clip_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
static const float clip_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
static const int layout[][4] = {
    /* bpp, r, g, b offsets */
    [FAP_PIXEL_RGB] = {3, 0, 1, 2},  [FAP_PIXEL_BGR] = {3, 2, 1, 0},
    [FAP_PIXEL_RGBA] = {4, 0, 1, 2}, [FAP_PIXEL_BGRA] = {4, 2, 1, 0},
    [FAP_PIXEL_RGBX] = {4, 0, 1, 2}, [FAP_PIXEL_BGRX] = {4, 2, 1, 0},
    [FAP_PIXEL_XRGB] = {4, 1, 2, 3}, [FAP_PIXEL_XBGR] = {4, 3, 2, 1},
};

/* Packs RGB [h, w, 3] into format with 7 bytes of junk row padding and junk alpha. */
static uint8_t *pack(const uint8_t *rgb, int w, int h, fap_pixel_format f, size_t *stride) {
  const int *l = layout[f];
  *stride = (size_t)w * l[0] + 7;
  uint8_t *out = g_malloc(*stride * h);
  for (size_t i = 0; i < *stride * h; i++)
    out[i] = (uint8_t)g_rand_int(rng);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int c = 0; c < 3; c++)
        out[y * *stride + (size_t)x * l[0] + l[c + 1]] = rgb[((size_t)y * w + x) * 3 + c];
  return out;
}

static void test_preprocess_constant(void) {
  static const int sizes[][3] = {
      /* w, h, S */
      {1, 1, 56}, {3, 2, 56}, {56, 56, 56}, {97, 13, 42}, {400, 300, 56}, {5, 3000, 28}, {57, 55, 70},
  };
  const uint8_t colour[3] = {200, 17, 90};
  for (size_t si = 0; si < G_N_ELEMENTS(sizes); si++) {
    int w = sizes[si][0], h = sizes[si][1], s = sizes[si][2];
    uint8_t *rgb = g_malloc((size_t)w * h * 3);
    for (size_t i = 0; i < (size_t)w * h; i++)
      memcpy(rgb + 3 * i, colour, 3);
    for (int f = FAP_PIXEL_RGB; f <= FAP_PIXEL_XBGR; f++) {
      size_t stride;
      uint8_t *px = pack(rgb, w, h, f, &stride);
      fap_frame frame = {f, w, h, stride, px};
      int b = f % 2; /* alternate backends (preprocessing has no separate reference loop) */
      float *out = g_new(float, (size_t)3 * s * s);
      g_assert_cmpint(backends[b].ops->preprocess(backends[b].ctx, out, &frame, s, NULL), ==, FAP_OK);
      for (int c = 0; c < 3; c++) {
        double e = (colour[c] / 255.0 - clip_mean[c]) / clip_std[c];
        for (size_t i = 0; i < (size_t)s * s; i++)
          if (!(fabs(out[(size_t)c * s * s + i] - e) <= 1e-5))
            g_error("preprocess %dx%d %s -> %d: channel %d pixel %zu is %.9g, expected %.9g", w,
                    h, fap_pixel_format_name(f), s, c, i, out[(size_t)c * s * s + i], e);
      }
      g_free(out);
      g_free(px);
    }
    g_free(rgb);
  }
}

/* Random frames: every format gives the same numbers, and they equal the
 * separable sum of the PIL tables computed here in double. At S = w = h the
 * resize is the identity. */
static void test_preprocess_random(void) {
  static const int sizes[][3] = {{56, 56, 56}, {80, 60, 56}, {33, 47, 42}, {5, 9, 14},
                                 {300, 7, 28}, {300, 9, 28}, {301, 9, 28}}; /* one side changes */
  for (size_t si = 0; si < G_N_ELEMENTS(sizes); si++) {
    int w = sizes[si][0], h = sizes[si][1], s = sizes[si][2];
    uint8_t *rgb = g_malloc((size_t)w * h * 3);
    for (size_t i = 0; i < (size_t)w * h * 3; i++)
      rgb[i] = (uint8_t)g_rand_int(rng);
    fap_bicubic_table tx, ty;
    alloc_table(&tx, w, s);
    alloc_table(&ty, h, s);
    float *first = NULL;
    for (int f = FAP_PIXEL_RGB; f <= FAP_PIXEL_XBGR; f++) {
      size_t stride;
      uint8_t *px = pack(rgb, w, h, f, &stride);
      fap_frame frame = {f, w, h, stride, px};
      int b = f % 2;
      float *out = g_new(float, (size_t)3 * s * s);
      g_assert_cmpint(backends[b].ops->preprocess(backends[b].ctx, out, &frame, s, NULL), ==, FAP_OK);
      if (!first) {
        first = out;
        for (int c = 0; c < 3; c++)
          for (int y = 0; y < s; y++)
            for (int x = 0; x < s; x++) {
              double acc = 0;
              for (int j = 0; j < ty.count[y]; j++)
                for (int i = 0; i < tx.count[x]; i++)
                  acc += (double)ty.weights[(size_t)y * ty.taps + j] *
                         tx.weights[(size_t)x * tx.taps + i] *
                         rgb[((size_t)(ty.first[y] + j) * w + tx.first[x] + i) * 3 + c];
              double e = (acc / 255.0 - clip_mean[c]) / clip_std[c];
              if (w == s && h == s)
                g_assert_cmpfloat(fabs(e - (rgb[((size_t)y * w + x) * 3 + c] / 255.0 - clip_mean[c]) / clip_std[c]), <=, 1e-6);
              float got = out[(size_t)c * s * s + (size_t)y * s + x];
              if (!(fabs(got - e) <= 1e-5))
                g_error("preprocess %dx%d -> %d: [%d, %d, %d] %.9g, expected %.9g", w, h, s, c, y,
                        x, got, e);
            }
      } else {
        if (memcmp(out, first, (size_t)3 * s * s * sizeof(float)) != 0)
          g_error("preprocess %dx%d -> %d: %s differs from RGB", w, h, s,
                  fap_pixel_format_name(f));
        g_free(out);
      }
      g_free(px);
    }
    g_free(first);
    free_table(&tx);
    free_table(&ty);
    g_free(rgb);
  }
}

/* ---- half / bfloat16 ------------------------------------------------------- */

static uint32_t bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static float from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* IEEE binary16 by definition, no bit tricks. */
static double f16_value(uint16_t h) {
  int sign = h >> 15, exp = (h >> 10) & 31, man = h & 1023;
  double v;
  if (exp == 31)
    v = man ? NAN : INFINITY;
  else if (exp == 0)
    v = ldexp(man, -24);
  else
    v = ldexp(1024 + man, exp - 25);
  return sign ? -v : v;
}

static void test_f16_decode_all(void) {
  uint8_t *raw = g_malloc(2 * 65536 + 1);
  float *wide = g_new(float, 65536);
  for (uint32_t i = 0; i < 65536; i++) {
    uint16_t h = (uint16_t)i;
    float f = fap_f16_to_f32(h);
    double e = f16_value(h);
    if (isnan(e)) {
      if (!isnan(f))
        g_error("f16 0x%04x is NaN, decoded as %g", i, f);
      g_assert_true((fap_f32_to_f16(f) & 0x7c00) == 0x7c00 && (fap_f32_to_f16(f) & 0x03ff) != 0);
      g_assert_cmpint(fap_f32_to_f16(f) >> 15, ==, i >> 15);
    } else {
      if ((double)f != e || !signbit(f) != !signbit(e))
        g_error("f16 0x%04x decoded as %.9g, expected %.9g", i, f, e);
      if (fap_f32_to_f16(f) != h)
        g_error("f16 0x%04x -> %.9g -> 0x%04x does not round-trip", i, f, fap_f32_to_f16(f));
      g_assert_true(bits(fap_round_f16(f)) == bits(f));
    }
    raw[1 + 2 * i] = (uint8_t)(i & 0xff); /* little-endian, at an odd address */
    raw[2 + 2 * i] = (uint8_t)(i >> 8);
  }
  fap_widen_f16(wide, raw + 1, 65536);
  for (uint32_t i = 0; i < 65536; i++) {
    float f = fap_f16_to_f32((uint16_t)i);
    if (!(bits(wide[i]) == bits(f) || (isnan(wide[i]) && isnan(f))))
      g_error("fap_widen_f16 of 0x%04x gives %g, expected %g", i, wide[i], f);
  }
  g_free(raw);
  g_free(wide);
}

static void test_f16_rounding(void) {
  /* every pair of adjacent finite f16 values, both signs: the midpoint (exact in
   * f32) goes to the even one, anything off the midpoint to the nearer one */
  for (uint32_t i = 0; i < 0x7bff; i++)
    for (int sign = 0; sign < 2; sign++) {
      uint16_t lo = (uint16_t)(i | sign << 15), hi = (uint16_t)((i + 1) | sign << 15);
      double a = f16_value(lo), b = f16_value(hi);
      float mid = (float)((a + b) / 2);
      g_assert_true((double)mid == (a + b) / 2);
      uint16_t even = (lo & 1) ? hi : lo;
      if (fap_f32_to_f16(mid) != even)
        g_error("midpoint %.9g of 0x%04x and 0x%04x rounds to 0x%04x, expected 0x%04x", mid, lo,
                hi, fap_f32_to_f16(mid), even);
      float toward_a = nextafterf(mid, (float)a), toward_b = nextafterf(mid, (float)b);
      if (fap_f32_to_f16(toward_a) != lo || fap_f32_to_f16(toward_b) != hi)
        g_error("just below/above the midpoint of 0x%04x and 0x%04x: 0x%04x / 0x%04x", lo, hi,
                fap_f32_to_f16(toward_a), fap_f32_to_f16(toward_b));
    }
  /* random floats against round-half-even on the f16 grid, done in double */
  for (int n = 0; n < 200000; n++) {
    float f = from_bits(g_rand_int(rng));
    if (isnan(f))
      continue;
    double a = fabs(f), grid;
    uint16_t got = fap_f32_to_f16(f);
    if (a >= 65520.0) {
      g_assert_cmpint(got, ==, f < 0 ? 0xfc00 : 0x7c00);
      continue;
    }
    grid = a < ldexp(1, -14) ? ldexp(1, -24) : ldexp(1, ilogb(a) - 10);
    double r = nearbyint(a / grid) * grid; /* default rounding mode: half to even */
    double v = f16_value(got);
    if (fabs(v) != r || !signbit(v) != !signbit(f))
      g_error("fap_f32_to_f16(%.9g) = 0x%04x (%.9g), expected %.9g", f, got, v,
              f < 0 ? -r : r);
  }
}

static void test_f16_special(void) {
  static const struct {
    float f;
    uint16_t h;
  } known[] = {
      {0.0f, 0x0000},
      {-0.0f, 0x8000},
      {1.0f, 0x3c00},
      {-2.0f, 0xc000},
      {65504.0f, 0x7bff},
      {65519.99609375f, 0x7bff}, /* largest float below 65520 */
      {65520.0f, 0x7c00},        /* halfway to 2^16: overflows */
      {-65520.0f, 0xfc00},
      {1e10f, 0x7c00},
      {INFINITY, 0x7c00},
      {-INFINITY, 0xfc00},
      {0x1p-14f, 0x0400},              /* smallest normal */
      {0x1p-24f, 0x0001},              /* smallest subnormal */
      {0x1p-25f, 0x0000},              /* half of it: ties to even (0) */
      {-0x1p-25f, 0x8000},
      {0x1.000002p-25f, 0x0001},       /* just above half */
      {0x3p-25f, 0x0002},              /* 1.5 * 2^-24: ties to even (2) */
      {0x1.ff8p-15f, 0x03ff},          /* largest subnormal, 1023 * 2^-24 */
      {0x1.ffcp-15f, 0x0400},          /* 1023.5 * 2^-24 rounds up into the normals */
      {1e-45f, 0x0000},                /* f32 subnormal */
      {0x1.002p0f, 0x3c00},            /* 1 + 2^-11: halfway, ties to even (1.0) */
      {0x1.006p0f, 0x3c02},            /* 1 + 3 * 2^-11: halfway, ties to even (up) */
      {0.1f, 0x2e66},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(known); i++)
    if (fap_f32_to_f16(known[i].f) != known[i].h)
      g_error("fap_f32_to_f16(%a) = 0x%04x, expected 0x%04x", known[i].f,
              fap_f32_to_f16(known[i].f), known[i].h);
  uint16_t qnan = fap_f32_to_f16(NAN);
  g_assert_true((qnan & 0x7c00) == 0x7c00 && (qnan & 0x3ff) != 0);
  uint16_t snan = fap_f32_to_f16(from_bits(0x7f800001u)); /* payload lost: must stay NaN */
  g_assert_true((snan & 0x7c00) == 0x7c00 && (snan & 0x3ff) != 0);
  g_assert_true(isnan(fap_round_f16(NAN)));
  g_assert_true(isinf(fap_round_f16(70000.0f)));
}

static void test_bf16(void) {
  static const struct {
    uint16_t b;
    float f;
  } known[] = {
      {0x3f80, 1.0f}, {0xc000, -2.0f}, {0x7f80, INFINITY}, {0xff80, -INFINITY},
      {0x0000, 0.0f}, {0x4049, 3.140625f}, {0x0001, 0x1p-133f}, {0x7f7f, 0x1.fep127f},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(known); i++)
    g_assert_true(fap_bf16_to_f32(known[i].b) == known[i].f);
  g_assert_true(signbit(fap_bf16_to_f32(0x8000)));
  uint8_t *raw = g_malloc(2 * 65536 + 1);
  float *wide = g_new(float, 65536);
  for (uint32_t i = 0; i < 65536; i++) {
    float f = fap_bf16_to_f32((uint16_t)i);
    if (bits(f) != i << 16)
      g_error("fap_bf16_to_f32(0x%04x) has bits 0x%08x", i, bits(f));
    raw[1 + 2 * i] = (uint8_t)(i & 0xff);
    raw[2 + 2 * i] = (uint8_t)(i >> 8);
  }
  fap_widen_bf16(wide, raw + 1, 65536);
  for (uint32_t i = 0; i < 65536; i++)
    if (bits(wide[i]) != i << 16)
      g_error("fap_widen_bf16 of 0x%04x has bits 0x%08x", i, bits(wide[i]));
  g_free(raw);
  g_free(wide);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  rng = g_rand_new_with_seed(20240611);
  g_unsetenv("FAP_CPU_ATTENTION"); /* [0]: the automatic choice, whatever the caller's */
  g_assert_cmpint(fap_backend_cpu_new(2, 0, &backends[0]), ==, FAP_OK);
  g_assert_cmpint(fap_backend_cpu_new(2, 1, &backends[1]), ==, FAP_OK);
  g_setenv("FAP_CPU_ATTENTION", "blas", TRUE);
  g_assert_cmpint(fap_backend_cpu_new(2, 0, &backends[2]), ==, FAP_OK);
  g_unsetenv("FAP_CPU_ATTENTION");
  const char *gemm_env = g_getenv("FAP_CPU_GEMM");
  char *gemm_saved = gemm_env ? g_strdup(gemm_env) : NULL; /* the run's own, restored */
  g_setenv("FAP_CPU_GEMM", "openblas", TRUE);
  g_assert_cmpint(fap_backend_cpu_new(2, 0, &gemm_backends[0]), ==, FAP_OK);
  g_setenv("FAP_CPU_GEMM", "dnnl", TRUE);
  g_assert_cmpint(fap_backend_cpu_new(2, 0, &gemm_backends[1]), ==, FAP_OK);
  if (gemm_saved)
    g_setenv("FAP_CPU_GEMM", gemm_saved, TRUE);
  else
    g_unsetenv("FAP_CPU_GEMM");
  if (fap_dnnl_built())
    g_assert_cmpint(fap_dnnl_f32_new(2, &dnnl_f32), ==, FAP_OK);

  g_test_add_func("/ops/gemm-choice", test_gemm_choice);
  g_test_add_func("/ops/linear", test_linear);
  g_test_add_func("/ops/matmul", test_matmul);
  g_test_add_func("/ops/attention", test_attention);
  g_test_add_data_func("/ops/attention-kernel/avx2", GINT_TO_POINTER(FAP_ATTENTION_AVX2),
                       test_attention_kernel);
  g_test_add_func("/ops/attention-kernel/bf16", test_attention_bf16);
  g_test_add_data_func("/ops/attention-kernel/avx512", GINT_TO_POINTER(FAP_ATTENTION_AVX512),
                       test_attention_kernel);
  g_test_add_func("/ops/attention-dual", test_attention_dual);
  g_test_add_func("/ops/attention-cached", test_attention_cached);
  g_test_add_func("/ops/layernorm", test_layernorm);
  g_test_add_func("/ops/quickgelu", test_quickgelu);
  g_test_add_func("/ops/elementwise", test_elementwise_small);
  g_test_add_func("/ops/im2col", test_im2col);
  g_test_add_func("/ops/topk", test_topk);
  g_test_add_func("/ops/two-way-prob", test_two_way_prob);
  g_test_add_func("/ops/faprompt-score", test_faprompt_score);
  g_test_add_func("/ops/upsample-mean", test_upsample_mean);
  g_test_add_func("/ops/mirror-index", test_mirror_index);
  g_test_add_func("/ops/gaussian-kernel", test_gaussian_kernel);
  g_test_add_func("/ops/gaussian-blur", test_gaussian_blur);
  g_test_add_func("/ops/bicubic-table", test_bicubic_table);
  g_test_add_func("/ops/bilinear-coord", test_bilinear_coord);
  g_test_add_func("/ops/preprocess/constant", test_preprocess_constant);
  g_test_add_func("/ops/preprocess/random", test_preprocess_random);
  g_test_add_func("/half/f16-decode-all", test_f16_decode_all);
  g_test_add_func("/half/f16-rounding", test_f16_rounding);
  g_test_add_func("/half/f16-special", test_f16_special);
  g_test_add_func("/half/bf16", test_bf16);
  int rc = g_test_run();
  fap_backend_free(&backends[0]);
  fap_backend_free(&backends[1]);
  fap_backend_free(&backends[2]);
  fap_backend_free(&gemm_backends[0]);
  fap_backend_free(&gemm_backends[1]);
  fap_dnnl_f32_free(dnnl_f32);
  g_free(gemm_saved);
  g_rand_free(rng);
  return rc;
}
