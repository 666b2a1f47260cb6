/* The CPU backend's reduced precisions (core/linear_dnnl.c, `precision`).
 *
 * usage: test_precision TINY_MODEL
 *
 * Linear layer, against a double-precision computation of the same scheme
 * on random data with odd sizes, padded leading dimensions, bias and
 * accumulate:
 *   int8  y = sa[m] sw[n] sum_k qx[m,k] qw[n,k] + b[n] (+ y), where
 *         qw = round(W / sw) with sw = max|W[n,:]| / 63 and
 *         qx = round(x / sa) with sa = max|x[m,:]| / 127: the scheme
 *         linear_dnnl.c documents, so its kernels, zero point, scales and
 *         layouts are checked to 1e-5 * max|y| (f32 epilogue rounding);
 *         and the quantisation error itself against f32, which must stay
 *         under the bound of that scheme: per element
 *         sum_k |x| dw + |w| dx + dx dw, with dx = sa / 2, dw = sw / 2.
 *   bf16  y = sum_k bf16(x) bf16(w) + b, f32 sums, to the bound of an f32
 *         dot product ((in + 2) * 2u * sum|terms|). Without AVX512-BF16 /
 *         AMX the bf16 numbers come from FAP_CPU_BF16_EMULATE=1.
 * Detector (tiny model): what each precision request runs (bf16 only with
 * the units or emulated; int8 only as FAP_CPU_INT8=experimental; f16 and
 * the reference loops never), that a fallback says why at INFO level, that
 * a reduced mode really runs (tokens differ from f32), and bf16 against f32
 * within the GPU bounds at S = 56, 112, 168 (A1 always; map and score where
 * the top-M order agrees, see below). The full-size figures are in
 * docs/BENCHMARKS.md.
 * Memory: a reduced-precision detector leaves the model's f32 copy of the
 * weights it converts unmade (model.h), detectors on one model share one
 * converted copy whatever their image size, and the copy goes with the last
 * of them. */
#include "backend.h"
#include "fap.h"
#include "linear_dnnl.h"
#include "model.h"

#include <glib.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define U (1.0 / 16777216.0)

static const char *model_path;
static GRand *rng;
static GString *info_log;

static void on_log(fap_log_level level, const char *message, void *user_data) {
  (void)user_data;
  if (level <= FAP_LOG_INFO)
    g_string_append_printf(info_log, "%s\n", message);
}

static float *rand_matrix(int rows, int cols, int ld, double lo, double hi) {
  g_assert(rows > 0 && cols > 0 && ld >= cols);
  float *m = g_new(float, (size_t)rows * (size_t)ld);
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < ld; c++)
      m[(size_t)r * ld + c] = c < cols ? (float)g_rand_double_range(rng, lo, hi) : NAN;
  return m;
}

static double round_half_even(double v) { return nearbyint(v); }

static double bf16_of(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  float r;
  memcpy(&r, &u, sizeof r);
  return r;
}

typedef struct {
  int rows, in, out, ldx, ldy, bias, accumulate;
} lin_case;

static void check_linear(fap_precision p) {
  static const lin_case cases[] = {
      {7, 33, 19, 40, 21, 1, 0},    /* odd everything */
      {1, 64, 48, 64, 48, 0, 1},    /* one row, accumulate, no bias */
      {50, 1024, 96, 1030, 100, 1, 1}, /* ViT-L's K */
      {13, 129, 300, 131, 301, 1, 0},
  };
  fap_dnnl *dn = NULL;
  const char *why = NULL;
  if (fap_dnnl_new(p, 2, &dn, &why) != FAP_OK) {
    g_test_skip(why);
    return;
  }
  for (size_t ci = 0; ci < G_N_ELEMENTS(cases); ci++) {
    const lin_case *lc = &cases[ci];
    float *x = rand_matrix(lc->rows, lc->in, lc->ldx, -2, 2);
    for (int k = 0; k < lc->in; k += 7) /* an outlier channel, as CLIP has */
      x[k] *= 6.0f;
    float *w = rand_matrix(lc->out, lc->in, lc->in, -0.1, 0.1);
    float *b = lc->bias ? rand_matrix(1, lc->out, lc->out, -1, 1) : NULL;
    float *y = rand_matrix(lc->rows, lc->out, lc->ldy, -1, 1);
    float *y0 = g_memdup2(y, sizeof(float) * lc->rows * lc->ldy);
    g_assert_cmpint(fap_dnnl_linear(dn, y, lc->ldy, x, lc->ldx, w, b, lc->rows, lc->in, lc->out,
                                    lc->accumulate), ==, FAP_OK);
    double *sw = g_new(double, lc->out);
    for (int n = 0; n < lc->out; n++) {
      double amax = 0;
      for (int k = 0; k < lc->in; k++)
        amax = fmax(amax, fabs(w[(size_t)n * lc->in + k]));
      sw[n] = (float)(amax / 63.0);
    }
    double worst = 0, worst_q = 0, scale = 0;
    for (int m = 0; m < lc->rows; m++) {
      const float *xr = x + (size_t)m * lc->ldx;
      double amax = 0;
      for (int k = 0; k < lc->in; k++)
        amax = fmax(amax, fabs(xr[k]));
      const float sa = (float)(amax / 127.0);
      for (int n = 0; n < lc->out; n++) {
        const float *wr = w + (size_t)n * lc->in;
        double want = 0, exact = 0, mag = 0, qbound = 0;
        const double dx = sa / 2.0, dw = sw[n] / 2.0; /* half a step */
        for (int k = 0; k < lc->in; k++) {
          exact += (double)xr[k] * wr[k];
          mag += fabs((double)xr[k] * wr[k]);
          qbound += fabs(xr[k]) * dw + fabs(wr[k]) * dx + dx * dw;
          if (p == FAP_PRECISION_INT8)
            want += round_half_even(xr[k] * (1.0f / sa)) *
                    round_half_even(wr[k] * (1.0f / (float)sw[n]));
          else
            want += bf16_of(xr[k]) * bf16_of(wr[k]);
        }
        if (p == FAP_PRECISION_INT8)
          want *= (double)sa * sw[n];
        const double add = (b ? b[n] : 0.0) + (lc->accumulate ? y0[(size_t)m * lc->ldy + n] : 0.0);
        want += add;
        exact += add;
        const double got = y[(size_t)m * lc->ldy + n];
        scale = fmax(scale, fabs(want));
        worst = fmax(worst, fabs(got - want));
        if (p == FAP_PRECISION_BF16) {
          const double bound = (lc->in + 2) * 2 * U * (mag + fabs(add)) + 1e-30;
          if (!(fabs(got - want) <= bound))
            g_error("bf16 linear case %zu: y[%d, %d] = %.9g, bf16 products give %.9g (bound %.3g)",
                    ci, m, n, got, want, bound);
        } else {
          /* |x w - x' w'| <= |x| dw + |w| dx + dx dw, dx, dw half a step */
          const double bound = qbound * (1 + 1e-5) + 1e-5 * fabs(want);
          worst_q = fmax(worst_q, fabs(got - exact) / (mag > 0 ? mag : 1));
          if (!(fabs(got - exact) <= bound))
            g_error("int8 linear case %zu: y[%d, %d] = %.9g, f32 %.9g: quantisation error beyond "
                    "its bound %.3g", ci, m, n, got, exact, bound);
        }
      }
      for (int n = lc->out; n < lc->ldy; n++) /* padding untouched */
        g_assert_true(isnan(y[(size_t)m * lc->ldy + n]));
    }
    if (p == FAP_PRECISION_INT8 && !(worst <= 1e-5 * scale))
      g_error("int8 linear case %zu: %.3g from the scheme's own products (max |y| %.3g)", ci, worst,
              scale);
    g_test_message("%s case %zu: max |got - scheme| %.2e (max |y| %.2f)%s", fap_precision_name(p),
                   ci, worst, scale, p == FAP_PRECISION_INT8 ? "" : "");
    if (p == FAP_PRECISION_INT8)
      g_test_message("  int8 error against f32: at most %.2e of sum |x w|", worst_q);
    g_free(x);
    g_free(w);
    g_free(b);
    g_free(y);
    g_free(y0);
    g_free(sw);
  }
  fap_dnnl_free(dn);
}

static void test_linear_int8(void) {
  g_setenv("FAP_CPU_INT8", "experimental", TRUE);
  check_linear(FAP_PRECISION_INT8);
  g_unsetenv("FAP_CPU_INT8");
}

static void test_linear_bf16(void) {
  g_setenv("FAP_CPU_BF16_EMULATE", "1", TRUE); /* only where the CPU has no bf16 units */
  check_linear(FAP_PRECISION_BF16);
  g_unsetenv("FAP_CPU_BF16_EMULATE");
}

/* ---- detector --------------------------------------------------------------- */

static fap_model *model;

static fap_detector *detector(fap_precision p, int reference) {
  fap_detector_options o;
  fap_detector_options_init(&o);
  o.backend = FAP_BACKEND_CPU;
  o.threads = 2;
  o.precision = p;
  o.reference = reference;
  o.keep_intermediates = 1;
  o.log = on_log;
  g_string_truncate(info_log, 0);
  fap_detector *d = NULL;
  g_assert_cmpint(fap_detector_new(model, &o, &d), ==, FAP_OK);
  return d;
}

static uint8_t *test_frame(fap_frame *f) {
  const int w = 97, h = 61;
  uint8_t *px = g_malloc((size_t)w * h * 3);
  for (int i = 0; i < w * h * 3; i++)
    px[i] = (uint8_t)((i * 2654435761u) >> 24);
  *f = (fap_frame){FAP_PIXEL_RGB, w, h, (size_t)w * 3, px};
  return px;
}

static double max_diff(const fap_detector *a, const fap_detector *b, const char *name) {
  fap_tensor_view va, vb;
  g_assert_cmpint(fap_detector_intermediate(a, name, &va), ==, FAP_OK);
  g_assert_cmpint(fap_detector_intermediate(b, name, &vb), ==, FAP_OK);
  size_t n = 1;
  for (int i = 0; i < va.ndim; i++)
    n *= (size_t)va.shape[i];
  double m = 0;
  for (size_t i = 0; i < n; i++)
    m = fmax(m, fabs((double)((const float *)va.data)[i] - ((const float *)vb.data)[i]));
  return m;
}

static void test_fallbacks(void) {
  fap_detector *d = detector(FAP_PRECISION_F16, 0);
  g_assert_cmpint(fap_detector_precision(d), ==, FAP_PRECISION_F32);
  g_assert_nonnull(strstr(info_log->str, "precision f16 requested, computing in f32"));
  fap_detector_free(d);

  d = detector(FAP_PRECISION_INT8, 1);
  g_assert_cmpint(fap_detector_precision(d), ==, FAP_PRECISION_F32);
  g_assert_nonnull(strstr(info_log->str, "the reference loops compute in f32"));
  fap_detector_free(d);

  /* int8 misses the accuracy bounds: not offered unless asked as an experiment */
  d = detector(FAP_PRECISION_INT8, 0);
  g_assert_cmpint(fap_detector_precision(d), ==, FAP_PRECISION_F32);
  g_assert_nonnull(strstr(info_log->str, fap_dnnl_built() ? "int8 is not offered" : "no oneDNN"));
  fap_detector_free(d);

  d = detector(FAP_PRECISION_BF16, 0);
  if (fap_detector_precision(d) == FAP_PRECISION_F32)
    g_assert_nonnull(strstr(info_log->str, fap_dnnl_built() ? "neither AVX512-BF16 nor AMX"
                                                            : "no oneDNN"));
  else
    g_assert_cmpint(fap_detector_precision(d), ==, FAP_PRECISION_BF16);
  fap_detector_free(d);
}

/* auto: bf16 where the CPU has bf16 units, f32 elsewhere and in the
 * reference loops; where it is bf16 it computes what a bf16 request does,
 * bit for bit */
static void test_auto(void) {
  fap_detector *d = detector(FAP_PRECISION_AUTO, 1);
  g_assert_cmpint(fap_detector_precision(d), ==, FAP_PRECISION_F32);
  g_assert_nonnull(strstr(info_log->str, "precision auto: f32 (the reference loops)"));
  fap_detector_free(d);

  d = detector(FAP_PRECISION_AUTO, 0);
  if (!fap_dnnl_has_bf16_units()) {
    g_assert_cmpint(fap_detector_precision(d), ==, FAP_PRECISION_F32);
    g_assert_nonnull(strstr(info_log->str, "precision auto: f32 (this CPU has no bf16 units)"));
    fap_detector_free(d);
    return;
  }
  g_assert_cmpint(fap_detector_precision(d), ==, FAP_PRECISION_BF16);
  g_assert_nonnull(strstr(info_log->str, "precision auto: bf16"));
  fap_detector *bf16 = detector(FAP_PRECISION_BF16, 0);
  g_assert_cmpint(fap_detector_precision(bf16), ==, FAP_PRECISION_BF16);
  fap_frame f;
  uint8_t *px = test_frame(&f);
  fap_result ra, rb;
  g_assert_cmpint(fap_detector_run(d, &f, &ra), ==, FAP_OK);
  g_assert_cmpint(fap_detector_run(bf16, &f, &rb), ==, FAP_OK);
  g_assert_cmpint(ra.map_size, ==, rb.map_size);
  g_assert_true(ra.score == rb.score);
  g_assert_cmpmem(ra.map, (gsize)ra.map_size * ra.map_size * sizeof(float), rb.map,
                  (gsize)rb.map_size * rb.map_size * sizeof(float));
  g_assert_cmpfloat(max_diff(d, bf16, "tokens"), ==, 0);
  g_free(px);
  fap_detector_free(bf16);
  fap_detector_free(d);
}

/* bf16 is held to the GPU bounds (map 1e-2, score 5e-3) where the model
 * is continuous: A1 always, the final map and score where the top-M patch
 * order the prior reads is f32's (two near-tied patches that swap move A2
 * in a jump, docs/DESIGN-NOTES.md). int8 does not meet them
 * (docs/BENCHMARKS.md) and is only checked to run. */
#define BF16_MAP_BOUND 1e-2
#define BF16_SCORE_BOUND 5e-3

static int same_topk(const fap_detector *a, const fap_detector *b) {
  fap_tensor_view va, vb;
  g_assert_cmpint(fap_detector_intermediate(a, "topk_index", &va), ==, FAP_OK);
  g_assert_cmpint(fap_detector_intermediate(b, "topk_index", &vb), ==, FAP_OK);
  return memcmp(va.data, vb.data, (size_t)va.shape[0] * sizeof(int32_t)) == 0;
}

static void run_against_f32(fap_precision p, int size) {
  fap_frame f;
  uint8_t *px = test_frame(&f);
  fap_detector_options o;
  fap_detector_options_init(&o);
  o.backend = FAP_BACKEND_CPU;
  o.threads = 2;
  o.image_size = size;
  o.keep_intermediates = 1;
  o.precision = FAP_PRECISION_F32;
  fap_detector *ref = NULL, *d = NULL;
  g_assert_cmpint(fap_detector_new(model, &o, &ref), ==, FAP_OK);
  o.precision = p;
  o.log = on_log;
  g_string_truncate(info_log, 0);
  g_assert_cmpint(fap_detector_new(model, &o, &d), ==, FAP_OK);
  if (fap_detector_precision(d) != p) {
    g_test_skip(info_log->str);
  } else {
    fap_result rr, r;
    g_assert_cmpint(fap_detector_run(ref, &f, &rr), ==, FAP_OK);
    for (int pass = 0; pass < 2; pass++) /* the second frame reuses what the first converted */
      g_assert_cmpint(fap_detector_run(d, &f, &r), ==, FAP_OK);
    const double tokens = max_diff(ref, d, "tokens"), map = max_diff(ref, d, "map");
    const double map1 = max_diff(ref, d, "map1"), score = fabs((double)r.score - rr.score);
    const int same = same_topk(ref, d);
    g_test_message("%s S=%d: tokens %.2e, A1 %.2e, map %.2e, score %.2e from f32; top-M order %s",
                   fap_precision_name(p), size, tokens, map1, map, score, same ? "same" : "differs");
    g_assert_cmpfloat(tokens, >, 1e-5); /* it did not compute in f32 after all */
    if (p == FAP_PRECISION_BF16) {
      g_assert_cmpfloat(map1, <=, BF16_MAP_BOUND);
      if (same) {
        g_assert_cmpfloat(map, <=, BF16_MAP_BOUND);
        g_assert_cmpfloat(score, <=, BF16_SCORE_BOUND);
      }
    }
    for (int i = 0; i < size * size; i++)
      g_assert_true(r.map[i] >= 0.0f && r.map[i] <= 1.0f);
  }
  fap_detector_free(d);
  fap_detector_free(ref);
  g_free(px);
}

static void test_detector_int8(void) {
  g_setenv("FAP_CPU_INT8", "experimental", TRUE);
  run_against_f32(FAP_PRECISION_INT8, 56);
  run_against_f32(FAP_PRECISION_INT8, 112);
  g_unsetenv("FAP_CPU_INT8");
}

static void test_detector_bf16(void) {
  g_setenv("FAP_CPU_BF16_EMULATE", "1", TRUE);
  for (int size = 56; size <= 168; size += 56)
    run_against_f32(FAP_PRECISION_BF16, size);
  g_unsetenv("FAP_CPU_BF16_EMULATE");
}

/* Floats of the vision linear weights of roles the mode takes (int8: qkv
 * and c_fc; bf16: all four) */
static size_t taken_floats(const fap_model *m, fap_precision p) {
  const size_t c = (size_t)m->cfg.vision_width;
  return (size_t)m->cfg.vision_layers * c * c * (p == FAP_PRECISION_INT8 ? 3 + 4 : 3 + 4 + 1 + 4);
}

static fap_detector *detector_on(fap_model *m, fap_precision p, int size) {
  fap_detector_options o;
  fap_detector_options_init(&o);
  o.backend = FAP_BACKEND_CPU;
  o.threads = 2;
  o.precision = p;
  o.image_size = size;
  o.log = on_log;
  fap_detector *d = NULL;
  g_assert_cmpint(fap_detector_new(m, &o, &d), ==, FAP_OK);
  return d;
}

static void check_shared(fap_precision p) {
  fap_model *m = NULL;
  g_assert_cmpint(fap_model_load(model_path, &m), ==, FAP_OK);
  const size_t params = (size_t)fap_model_parameter_count(m), base = fap_dnnl_shared_bytes();
  fap_frame f;
  uint8_t *px = test_frame(&f);
  fap_detector *a = detector_on(m, p, 112);
  if (fap_detector_precision(a) != p) {
    g_test_skip("this CPU runs neither mode here");
    fap_detector_free(a);
    fap_model_free(m);
    g_free(px);
    return;
  }
  /* the weights it takes were never widened to f32 */
  g_assert_cmpuint(fap_model_resident_floats(m), ==, params - taken_floats(m, p));
  fap_result ra, rb;
  g_assert_cmpint(fap_detector_run(a, &f, &ra), ==, FAP_OK);
  float *map_a = g_memdup2(ra.map, 112 * 112 * sizeof(float));
  const size_t one = fap_dnnl_shared_bytes() - base;
  g_assert_cmpuint(one, >, 0);
  g_assert_cmpuint(fap_model_resident_floats(m), ==, params - taken_floats(m, p));

  /* a second detector of the same size shares every converted weight and
   * computes the same bits */
  fap_detector *b = detector_on(m, p, 112);
  g_assert_cmpint(fap_detector_run(b, &f, &rb), ==, FAP_OK);
  g_assert_cmpuint(fap_dnnl_shared_bytes() - base, ==, one);
  g_assert_cmpmem(rb.map, 112 * 112 * sizeof(float), map_a, 112 * 112 * sizeof(float));
  g_assert_cmpfloat(rb.score, ==, ra.score);
  /* another image size (other row counts): shared too where oneDNN picks
   * the same weight layout for them, which it does on the CPUs measured */
  fap_detector *c = detector_on(m, p, 168);
  g_assert_cmpint(fap_detector_run(c, &f, &rb), ==, FAP_OK);
  g_test_message("%s: %zu bytes converted for one detector, %zu for three", fap_precision_name(p),
                 one, fap_dnnl_shared_bytes() - base);
  g_assert_cmpuint(fap_dnnl_shared_bytes() - base, ==, one);
  fap_detector_free(a);
  fap_detector_free(c);
  g_assert_cmpuint(fap_dnnl_shared_bytes() - base, ==, one); /* b holds them */
  g_assert_cmpint(fap_detector_run(b, &f, &rb), ==, FAP_OK);
  g_assert_cmpmem(rb.map, 112 * 112 * sizeof(float), map_a, 112 * 112 * sizeof(float));
  fap_detector_free(b);
  g_assert_cmpuint(fap_dnnl_shared_bytes(), ==, base);

  /* an f32 detector on the model widens them then */
  fap_detector *d = detector_on(m, FAP_PRECISION_F32, 112);
  g_assert_cmpuint(fap_model_resident_floats(m), ==, params);
  fap_detector_free(d);
  fap_model_free(m);
  g_free(map_a);
  g_free(px);
}

static void test_shared_bf16(void) {
  g_setenv("FAP_CPU_BF16_EMULATE", "1", TRUE);
  check_shared(FAP_PRECISION_BF16);
  g_unsetenv("FAP_CPU_BF16_EMULATE");
}

static void test_shared_int8(void) {
  g_setenv("FAP_CPU_INT8", "experimental", TRUE);
  check_shared(FAP_PRECISION_INT8);
  g_unsetenv("FAP_CPU_INT8");
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  if (argc != 2) {
    g_printerr("usage: %s TINY_MODEL\n", argv[0]);
    return 2;
  }
  model_path = argv[1];
  rng = g_rand_new_with_seed(20261201);
  info_log = g_string_new(NULL);
  if (fap_model_load(model_path, &model) != FAP_OK)
    return 1;
  g_test_add_func("/precision/linear/int8", test_linear_int8);
  g_test_add_func("/precision/linear/bf16", test_linear_bf16);
  g_test_add_func("/precision/fallbacks", test_fallbacks);
  g_test_add_func("/precision/auto", test_auto);
  g_test_add_func("/precision/detector/int8", test_detector_int8);
  g_test_add_func("/precision/detector/bf16", test_detector_bf16);
  g_test_add_func("/precision/shared/bf16", test_shared_bf16);
  g_test_add_func("/precision/shared/int8", test_shared_int8);
  int rc = g_test_run();
  fap_model_free(model);
  g_string_free(info_log, TRUE);
  g_rand_free(rng);
  return rc;
}
