/* Unit tests of the detector API (core/detector.c) on the tiny random model:
 * option and frame validation (status plus one logged message naming the
 * field), the backend choice, intermediates, determinism and buffer reuse
 * across runs and input sizes, odd frame sizes, packed and YUV pixel formats,
 * and the docs/SPEC.md relations between the intermediates (score formula, maps
 * from features, smoothing).
 *
 * usage: test_detector TINY_A [TINY_AC TINY_AC_B]
 * (the AnomalyCLIP models: out layers 2,4 of 4 and 1,2,3 of 3; their
 * intermediates, the relations of docs/SPEC.md section 6.4, batches)
 * Numerical agreement with the PyTorch reference is test_parity's job; here
 * every comparison is either bitwise (same computation twice) or a relation
 * recomputed in double from the detector's own intermediates. */
#include "fap.h"

#include "backend.h" /* fap_backend_cuda_available() */
#include "pixel.h"   /* fap_frame_to_rgb(): the CPU path's YUV conversion */

#include <glib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static fap_model *model;
static int S0, P; /* the model's default size and patch size */

/* ---- log capture ------------------------------------------------------------ */

static char last_error[2048];
static int n_errors;

static void capture(fap_log_level level, const char *message, void *user_data) {
  (void)user_data;
  if (level != FAP_LOG_ERROR)
    return;
  g_strlcpy(last_error, message, sizeof last_error);
  n_errors++;
  if (g_test_verbose())
    g_test_message("logged: %s", message);
}

static void log_reset(void) {
  last_error[0] = '\0';
  n_errors = 0;
}

static void assert_one_error(const char *phrase) {
  if (n_errors != 1)
    g_error("%d error messages logged, expected 1 (last \"%s\")", n_errors, last_error);
  if (phrase && !strstr(last_error, phrase))
    g_error("logged message \"%s\" lacks \"%s\"", last_error, phrase);
}

/* ---- helpers ------------------------------------------------------------------ */

/* Every test that creates detectors says which CPU path it runs: the fast
 * path (what users get) where results or state across runs are checked, the
 * reference loops where only the API's behaviour is (they cost a third under
 * valgrind); one thread unless a test is about threads (idle OpenMP threads
 * spin under valgrind, tripling the cost). */
static int threads = 1, reference = 0;

static void use(int nthreads, int ref) {
  threads = nthreads;
  reference = ref;
}

static fap_detector_options options(int size, float sigma, int keep) {
  fap_detector_options o;
  fap_detector_options_init(&o);
  o.backend = FAP_BACKEND_CPU;
  o.precision = FAP_PRECISION_F32; /* compared with the reference loops */
  o.threads = threads;
  o.reference = reference;
  o.image_size = size;
  o.sigma = sigma;
  o.keep_intermediates = keep;
  return o;
}

static fap_detector *detector(int size, float sigma, int keep) {
  fap_detector_options o = options(size, sigma, keep);
  fap_detector *d = NULL;
  log_reset();
  fap_status s = fap_detector_new(model, &o, &d);
  if (s != FAP_OK)
    g_error("fap_detector_new(size %d, sigma %g): %s; \"%s\"", size, sigma, fap_status_string(s),
            last_error);
  g_assert_nonnull(d);
  g_assert_cmpint(n_errors, ==, 0);
  return d;
}

static const int bpp_of[] = {3, 3, 4, 4, 4, 4, 4, 4};
static const int offsets[][3] = {
    [FAP_PIXEL_RGB] = {0, 1, 2},  [FAP_PIXEL_BGR] = {2, 1, 0},  [FAP_PIXEL_RGBA] = {0, 1, 2},
    [FAP_PIXEL_BGRA] = {2, 1, 0}, [FAP_PIXEL_RGBX] = {0, 1, 2}, [FAP_PIXEL_BGRX] = {2, 1, 0},
    [FAP_PIXEL_XRGB] = {1, 2, 3}, [FAP_PIXEL_XBGR] = {3, 2, 1},
};

typedef struct {
  uint8_t *pixels;
  fap_frame frame;
} image;

/* A w x h frame in format, with `pad` junk bytes per row and junk in the
 * alpha / x byte. Colours: random from seed; seed 0 = uniform grey; a negative
 * seed = grey with a red square in the middle. */
static image make_image(int w, int h, int seed, fap_pixel_format format, int pad) {
  image im;
  int bpp = bpp_of[format];
  size_t stride = (size_t)w * bpp + pad;
  im.pixels = g_malloc(stride * h + 1);
  GRand *rng = g_rand_new_with_seed((guint32)(seed > 0 ? seed : 99));
  for (size_t i = 0; i < stride * h; i++)
    im.pixels[i] = (uint8_t)g_rand_int(rng); /* junk first: padding, alpha */
  g_rand_free(rng);
  rng = g_rand_new_with_seed((guint32)(seed > 0 ? seed : 1));
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      uint8_t rgb[3] = {128, 128, 128};
      if (seed > 0)
        for (int c = 0; c < 3; c++)
          rgb[c] = (uint8_t)g_rand_int(rng);
      else if (seed < 0 && x >= w / 3 && x < 2 * w / 3 && y >= h / 3 && y < 2 * h / 3)
        rgb[0] = 250, rgb[1] = 10, rgb[2] = 10;
      for (int c = 0; c < 3; c++)
        im.pixels[(size_t)y * stride + (size_t)x * bpp + offsets[format][c]] = rgb[c];
    }
  g_rand_free(rng);
  im.frame = (fap_frame){format, w, h, stride, im.pixels};
  return im;
}

static void run_ok(fap_detector *d, const fap_frame *f, fap_result *r) {
  log_reset();
  fap_status s = fap_detector_run(d, f, r);
  if (s != FAP_OK)
    g_error("fap_detector_run(%dx%d): %s; \"%s\"", f->width, f->height, fap_status_string(s),
            last_error);
  g_assert_cmpint(n_errors, ==, 0);
}

static float *copy_map(const fap_result *r) {
  return g_memdup2(r->map, (size_t)r->map_size * r->map_size * sizeof(float));
}

static void check_map_range(const fap_result *r, int size) {
  g_assert_cmpint(r->map_size, ==, size);
  g_assert_nonnull(r->map);
  for (int i = 0; i < size * size; i++)
    if (!(r->map[i] >= 0.0f && r->map[i] <= 1.0f)) /* also NaN */
      g_error("map[%d] = %g is outside [0, 1]", i, r->map[i]);
  if (!(r->score >= 0.0f && r->score <= 1.0f))
    g_error("score %g is outside [0, 1]", r->score);
}

static const fap_tensor_view *get(const fap_detector *d, const char *name, fap_tensor_view *v) {
  log_reset();
  fap_status s = fap_detector_intermediate(d, name, v);
  if (s != FAP_OK)
    g_error("intermediate '%s': %s; \"%s\"", name, fap_status_string(s), last_error);
  g_assert_nonnull(v->data);
  return v;
}

static const float *getf(const fap_detector *d, const char *name, fap_tensor_view *v) {
  get(d, name, v);
  g_assert_cmpint(v->dtype, ==, FAP_DTYPE_F32);
  return v->data;
}

/* ---- options ------------------------------------------------------------------ */

static void expect_new_fail(const fap_detector_options *o, fap_status want, const char *phrase) {
  fap_detector *d = (fap_detector *)&d;
  log_reset();
  fap_status s = fap_detector_new(model, o, &d);
  if (s != want)
    g_error("fap_detector_new: status %d (%s), expected %d; \"%s\"", s, fap_status_string(s), want,
            last_error);
  g_assert_null(d);
  assert_one_error(phrase);
}

static void test_options(void) {
  use(1, 1);
  fap_detector_options o;
  const struct {
    int size;
    const char *phrase;
  } sizes[] = {
      {50, "image size 50"},  {P + 1, "multiple of the patch size"}, {-P, "image size -"},
      {2 * P, "fewer than the 5"}, /* G = 2: 4 patches < top_m = 5 */
      {P, "fewer than the 5"},     {4102, "4096"}, /* 4102 = 293 * 14 */
  };
  for (size_t i = 0; i < G_N_ELEMENTS(sizes); i++) {
    o = options(sizes[i].size, -1, 0);
    expect_new_fail(&o, FAP_ERR_INVALID_ARGUMENT, sizes[i].phrase);
  }
  static const float bad_sigma[] = {2000.0f, 1000.5f, INFINITY, NAN};
  for (size_t i = 0; i < G_N_ELEMENTS(bad_sigma); i++) {
    o = options(0, bad_sigma[i], 0);
    expect_new_fail(&o, FAP_ERR_INVALID_ARGUMENT, "sigma");
  }
  o = options(0, -1, 0);
  o.backend = (fap_backend_kind)7;
  expect_new_fail(&o, FAP_ERR_INVALID_ARGUMENT, "backend");

  /* NULL arguments */
  log_reset();
  g_assert_cmpint(fap_detector_new(model, &o, NULL), ==, FAP_ERR_INVALID_ARGUMENT);
  assert_one_error("out");
  fap_detector *d = (fap_detector *)&d;
  log_reset();
  g_assert_cmpint(fap_detector_new(NULL, &o, &d), ==, FAP_ERR_INVALID_ARGUMENT);
  g_assert_null(d);
  assert_one_error("model");

  /* NULL options: the defaults (AUTO backend, the model's size) */
  log_reset();
  g_assert_cmpint(fap_detector_new(model, NULL, &d), ==, FAP_OK);
  g_assert_cmpint(fap_detector_image_size(d), ==, S0);
  g_assert_cmpint(fap_detector_backend(d), ==,
                  fap_backend_cuda_available() ? FAP_BACKEND_CUDA : FAP_BACKEND_CPU);
  fap_detector_free(d);

  /* sizes that work: the map has that size */
  static const int good[] = {3 * 14, 5 * 14, 56};
  for (size_t i = 0; i < G_N_ELEMENTS(good); i++) {
    d = detector(good[i], -1, 0);
    g_assert_cmpint(fap_detector_image_size(d), ==, good[i]);
    image im = make_image(20, 20, 3, FAP_PIXEL_RGB, 0);
    fap_result r;
    run_ok(d, &im.frame, &r);
    check_map_range(&r, good[i]);
    g_free(im.pixels);
    fap_detector_free(d);
  }
}

/* sigma < 0 means the model's; 0 disables smoothing (map = map_raw). */
static void test_sigma(void) {
  use(1, 1);
  image im = make_image(61, 45, 4, FAP_PIXEL_RGB, 0);
  const float model_sigma = fap_model_config(model)->sigma;
  g_assert_cmpfloat(model_sigma, >, 0);
  static const float sigmas[] = {-1.0f, -0.5f, 0.0f, 100.0f};
  float *maps[G_N_ELEMENTS(sigmas)], *explicit_default;
  fap_result r;
  fap_detector *d = detector(0, model_sigma, 0);
  run_ok(d, &im.frame, &r);
  explicit_default = copy_map(&r);
  fap_detector_free(d);
  for (size_t i = 0; i < G_N_ELEMENTS(sigmas); i++) {
    d = detector(0, sigmas[i], 1);
    run_ok(d, &im.frame, &r);
    check_map_range(&r, S0);
    maps[i] = copy_map(&r);
    fap_tensor_view raw;
    const float *map_raw = getf(d, "map_raw", &raw);
    gboolean same_as_raw = memcmp(map_raw, r.map, (size_t)S0 * S0 * 4) == 0;
    g_assert_true(same_as_raw == (sigmas[i] == 0.0f));
    fap_detector_free(d);
  }
  size_t bytes = (size_t)S0 * S0 * sizeof(float);
  g_assert_true(memcmp(maps[0], explicit_default, bytes) == 0);
  g_assert_true(memcmp(maps[1], explicit_default, bytes) == 0);
  g_assert_false(memcmp(maps[2], explicit_default, bytes) == 0);
  g_assert_false(memcmp(maps[3], explicit_default, bytes) == 0);
  /* a very wide blur flattens the map */
  float lo = 1, hi = 0, lo0 = 1, hi0 = 0;
  for (int i = 0; i < S0 * S0; i++) {
    lo = fminf(lo, maps[3][i]), hi = fmaxf(hi, maps[3][i]);
    lo0 = fminf(lo0, maps[2][i]), hi0 = fmaxf(hi0, maps[2][i]);
  }
  g_assert_cmpfloat(hi - lo, <, 0.5f * (hi0 - lo0));
  for (size_t i = 0; i < G_N_ELEMENTS(sigmas); i++)
    g_free(maps[i]);
  g_free(explicit_default);
  g_free(im.pixels);
}

static void test_backend_choice(void) {
  use(1, 1);
  fap_detector_options o = options(0, -1, 0);
  if (!fap_backend_cuda_available()) { /* not built, or no usable device */
    o.backend = FAP_BACKEND_CUDA;
    expect_new_fail(&o, FAP_ERR_UNSUPPORTED, "CUDA");
    /* the message says how to get it, or what to use instead */
    g_assert_true(strstr(last_error, "-Dcuda=enabled") || strstr(last_error, "CPU backend"));
  } else {
    g_test_message("CUDA is available: the UNSUPPORTED path is not reachable in this build");
  }
  o.backend = FAP_BACKEND_AUTO;
  fap_detector *d = NULL;
  log_reset();
  g_assert_cmpint(fap_detector_new(model, &o, &d), ==, FAP_OK);
  g_assert_cmpint(n_errors, ==, 0);
  g_assert_cmpint(fap_detector_backend(d), ==,
                  fap_backend_cuda_available() ? FAP_BACKEND_CUDA : FAP_BACKEND_CPU);
  fap_detector_free(d);
  o.backend = FAP_BACKEND_CPU;
  d = NULL;
  g_assert_cmpint(fap_detector_new(model, &o, &d), ==, FAP_OK);
  g_assert_cmpint(fap_detector_backend(d), ==, FAP_BACKEND_CPU);
  fap_detector_free(d);
  g_assert_cmpstr(fap_backend_name(FAP_BACKEND_CPU), ==, "cpu");
  g_assert_cmpstr(fap_backend_name(FAP_BACKEND_CUDA), ==, "cuda");
  g_assert_cmpstr(fap_backend_name(FAP_BACKEND_AUTO), ==, "auto");
}

/* ---- frames -------------------------------------------------------------------- */

static void expect_run_fail(fap_detector *d, const fap_frame *f, fap_result *r,
                            const char *phrase) {
  log_reset();
  fap_status s = fap_detector_run(d, f, r);
  if (s != FAP_ERR_INVALID_ARGUMENT)
    g_error("fap_detector_run: status %d (%s), expected invalid argument; \"%s\"", s,
            fap_status_string(s), last_error);
  assert_one_error(phrase);
}

static void test_frame_validation(void) {
  use(1, 1);
  fap_detector *d = detector(0, -1, 0);
  image im = make_image(16, 12, 5, FAP_PIXEL_RGBA, 0);
  fap_result r, before;
  run_ok(d, &im.frame, &before);
  float *map_before = copy_map(&before);

  fap_frame f = im.frame;
  f.data = NULL;
  expect_run_fail(d, &f, &r, "data");
  expect_run_fail(d, NULL, &r, "data");
  f = im.frame, f.width = 0;
  expect_run_fail(d, &f, &r, "frame size 0x12");
  f = im.frame, f.height = 0;
  expect_run_fail(d, &f, &r, "frame size 16x0");
  f = im.frame, f.width = -16;
  expect_run_fail(d, &f, &r, "frame size -16x12");
  f = im.frame, f.width = 40000, f.height = 1, f.stride = 160000;
  expect_run_fail(d, &f, &r, "frame size 40000x1");
  f = im.frame, f.width = 1, f.height = 40000;
  expect_run_fail(d, &f, &r, "frame size 1x40000");
  f = im.frame, f.stride = 16 * 4 - 1;
  expect_run_fail(d, &f, &r, "stride 63");
  f = im.frame, f.format = FAP_PIXEL_RGB, f.stride = 16 * 3 - 1;
  expect_run_fail(d, &f, &r, "stride 47");
  f = im.frame, f.stride = 0;
  expect_run_fail(d, &f, &r, "stride 0");
  f = im.frame, f.format = (fap_pixel_format)99;
  expect_run_fail(d, &f, &r, "pixel format 99");
  f = im.frame, f.format = (fap_pixel_format)-1;
  expect_run_fail(d, &f, &r, "pixel format -1");
  expect_run_fail(d, &im.frame, NULL, "result");
  log_reset();
  g_assert_cmpint(fap_detector_run(NULL, &im.frame, &r), ==, FAP_ERR_INVALID_ARGUMENT);
  assert_one_error("detector");

  /* the detector is unharmed */
  fap_result after;
  run_ok(d, &im.frame, &after);
  g_assert_true(memcmp(map_before, after.map, (size_t)S0 * S0 * 4) == 0);
  g_assert_cmpfloat(before.score, ==, after.score);
  g_free(map_before);
  g_free(im.pixels);
  fap_detector_free(d);
}

/* 1x1, very thin and very wide frames, the largest stride-limited widths. */
static void test_odd_sizes(void) {
  use(1, 0);
  static const int sizes[][2] = {{1, 1}, {3000, 5}, {5, 3000}, {2, 1}, {1, 57}, {57, 56}};
  fap_detector *d = detector(0, -1, 0);
  for (size_t i = 0; i < G_N_ELEMENTS(sizes); i++) {
    image im = make_image(sizes[i][0], sizes[i][1], 6 + (int)i, FAP_PIXEL_BGR, 1);
    fap_result r;
    run_ok(d, &im.frame, &r);
    check_map_range(&r, S0);
    g_free(im.pixels);
  }
  fap_detector_free(d);
}

static void test_uniform_vs_square(void) {
  use(1, 1);
  fap_detector *d = detector(0, -1, 0);
  image uniform = make_image(64, 64, 0, FAP_PIXEL_RGB, 0);
  image square = make_image(64, 64, -1, FAP_PIXEL_RGB, 0);
  fap_result r;
  run_ok(d, &uniform.frame, &r);
  float *map_u = copy_map(&r), score_u = r.score;
  /* a uniform frame gives a map that varies only through the positional embedding */
  run_ok(d, &square.frame, &r);
  check_map_range(&r, S0);
  double diff = 0;
  for (int i = 0; i < S0 * S0; i++)
    diff = fmax(diff, fabs(map_u[i] - r.map[i]));
  g_assert_cmpfloat(diff, >, 1e-3);
  g_assert_cmpfloat(score_u, !=, r.score);
  g_free(map_u);
  g_free(uniform.pixels);
  g_free(square.pixels);
  fap_detector_free(d);
}

/* Every packed format, with padding and junk in the unused byte, gives the
 * same numbers as RGB: the core reads the three colour bytes only. */
static void test_formats(void) {
  use(1, 0);
  fap_detector *d = detector(0, -1, 0);
  float *ref = NULL, ref_score = 0;
  for (int f = FAP_PIXEL_RGB; f <= FAP_PIXEL_XBGR; f++) {
    image im = make_image(37, 29, 8, f, f == FAP_PIXEL_RGB ? 0 : 5 + f);
    fap_result r;
    run_ok(d, &im.frame, &r);
    check_map_range(&r, S0);
    if (!ref) {
      ref = copy_map(&r);
      ref_score = r.score;
    } else {
      if (memcmp(ref, r.map, (size_t)S0 * S0 * 4) != 0 || r.score != ref_score)
        g_error("format %s gives another map than RGB", fap_pixel_format_name(f));
    }
    g_free(im.pixels);
  }
  g_free(ref);
  fap_detector_free(d);
}

/* ---- YUV frames ----------------------------------------------------------------- */

typedef struct {
  int w, h, cw, ch;
  uint8_t *y, *u, *v; /* planes of w x h and cw x ch samples, tightly packed */
} yuv_samples;

static yuv_samples random_yuv(int w, int h, guint32 seed) {
  yuv_samples s = {w, h, (w + 1) / 2, (h + 1) / 2, NULL, NULL, NULL};
  GRand *rng = g_rand_new_with_seed(seed);
  s.y = g_malloc((size_t)w * h);
  s.u = g_malloc((size_t)s.cw * s.ch);
  s.v = g_malloc((size_t)s.cw * s.ch);
  for (int i = 0; i < w * h; i++)
    s.y[i] = (uint8_t)g_rand_int(rng);
  for (int i = 0; i < s.cw * s.ch; i++) {
    s.u[i] = (uint8_t)g_rand_int(rng);
    s.v[i] = (uint8_t)g_rand_int(rng);
  }
  g_rand_free(rng);
  return s;
}

static void free_yuv(yuv_samples *s) {
  g_free(s->y);
  g_free(s->u);
  g_free(s->v);
}

/* The samples as an I420 or NV12 frame with padded strides; buffers in bufs[3]. */
static fap_frame planar_frame(const yuv_samples *s, fap_pixel_format format, uint8_t *bufs[3]) {
  fap_frame f = {format, s->w, s->h, (size_t)s->w + 3, NULL, {NULL, NULL}, {0, 0}, 0, 0};
  bufs[0] = g_malloc0(f.stride * s->h);
  for (int y = 0; y < s->h; y++)
    memcpy(bufs[0] + y * f.stride, s->y + (size_t)y * s->w, s->w);
  if (format == FAP_PIXEL_I420) {
    f.plane_stride[0] = (size_t)s->cw + 1;
    f.plane_stride[1] = (size_t)s->cw + 2;
    bufs[1] = g_malloc0(f.plane_stride[0] * s->ch);
    bufs[2] = g_malloc0(f.plane_stride[1] * s->ch);
    for (int y = 0; y < s->ch; y++) {
      memcpy(bufs[1] + y * f.plane_stride[0], s->u + (size_t)y * s->cw, s->cw);
      memcpy(bufs[2] + y * f.plane_stride[1], s->v + (size_t)y * s->cw, s->cw);
    }
  } else {
    f.plane_stride[0] = 2 * (size_t)s->cw + 5;
    bufs[1] = g_malloc0(f.plane_stride[0] * s->ch);
    bufs[2] = NULL;
    for (int y = 0; y < s->ch; y++)
      for (int x = 0; x < s->cw; x++) {
        bufs[1][y * f.plane_stride[0] + 2 * x] = s->u[y * s->cw + x];
        bufs[1][y * f.plane_stride[0] + 2 * x + 1] = s->v[y * s->cw + x];
      }
  }
  f.data = bufs[0];
  f.plane[0] = bufs[1];
  f.plane[1] = bufs[2];
  return f;
}

/* BT.601 / BT.709, limited or full range, in double, rounded and clamped. */
static void yuv_to_rgb_exact(int bt709, int full, int y, int u, int v, int rgb[3]) {
  const double kr = bt709 ? 0.2126 : 0.299, kb = bt709 ? 0.0722 : 0.114, kg = 1 - kr - kb;
  const double yy = full ? y : (y - 16) * 255.0 / 219.0;
  const double cb = full ? u - 128 : (u - 128) * 255.0 / 224.0;
  const double cr = full ? v - 128 : (v - 128) * 255.0 / 224.0;
  const double c[3] = {yy + 2 * (1 - kr) * cr,
                       yy - 2 * (1 - kb) * kb / kg * cb - 2 * (1 - kr) * kr / kg * cr,
                       yy + 2 * (1 - kb) * cb};
  for (int i = 0; i < 3; i++)
    rgb[i] = (int)fmin(255, fmax(0, floor(c[i] + 0.5)));
}

static void check_conversion(const fap_frame *f, int bt709, int full,
                             void (*sample)(const void *, int, int, int *, int *, int *),
                             const void *ctx) {
  uint8_t *rgb = g_malloc((size_t)f->width * f->height * 3);
  fap_frame_to_rgb(f, rgb);
  for (int y = 0; y < f->height; y++)
    for (int x = 0; x < f->width; x++) {
      int yv, uv, vv, want[3];
      sample(ctx, x, y, &yv, &uv, &vv);
      yuv_to_rgb_exact(bt709, full, yv, uv, vv, want);
      for (int c = 0; c < 3; c++)
        if (abs(rgb[((size_t)y * f->width + x) * 3 + c] - want[c]) > 1)
          g_error("%s (%s, %s range) pixel (%d, %d) channel %d: %d, expected %d +- 1",
                  fap_pixel_format_name(f->format), bt709 ? "BT.709" : "BT.601",
                  full ? "full" : "limited", x, y, c, rgb[((size_t)y * f->width + x) * 3 + c],
                  want[c]);
    }
  g_free(rgb);
}

static void sample_420(const void *ctx, int x, int y, int *yv, int *uv, int *vv) {
  const yuv_samples *s = ctx;
  *yv = s->y[(size_t)y * s->w + x];
  *uv = s->u[(size_t)(y / 2) * s->cw + x / 2];
  *vv = s->v[(size_t)(y / 2) * s->cw + x / 2];
}

static void sample_yuy2(const void *c, int x, int y, int *yv, int *uv, int *vv) {
  const struct {
    const uint8_t *p;
    size_t stride;
  } *ctx = c;
  const uint8_t *pair = ctx->p + (size_t)y * ctx->stride + 4 * (size_t)(x / 2);
  *yv = pair[2 * (x & 1)];
  *uv = pair[1];
  *vv = pair[3];
}

/* The detector's map of a YUV frame equals its map of the RGB frame
 * fap_frame_to_rgb() makes of it; that conversion is BT.601 / BT.709 within
 * one level, chroma from the sample covering each pixel; NV12 and I420 with
 * the same samples agree bit for bit; YUY2 likewise through its RGB. */
static void test_yuv(void) {
  use(1, 1);
  const int w = 37, h = 29;
  yuv_samples s = random_yuv(w, h, 31);
  fap_detector *d = detector(0, -1, 0);
  static const int modes[][2] = {{0, 0}, {1, 1}, {0, 1}, {1, 0}}; /* bt709, full range */
  for (size_t mi = 0; mi < G_N_ELEMENTS(modes); mi++) {
    uint8_t *b420[3], *b12[3];
    fap_frame i420 = planar_frame(&s, FAP_PIXEL_I420, b420);
    fap_frame nv12 = planar_frame(&s, FAP_PIXEL_NV12, b12);
    i420.matrix = nv12.matrix = modes[mi][0] ? FAP_YUV_BT709 : FAP_YUV_BT601;
    i420.full_range = nv12.full_range = modes[mi][1];
    check_conversion(&i420, modes[mi][0], modes[mi][1], sample_420, &s);
    check_conversion(&nv12, modes[mi][0], modes[mi][1], sample_420, &s);
    if (mi < 2) { /* detector runs for two of the four modes (valgrind time) */
      fap_result r;
      run_ok(d, &i420, &r);
      check_map_range(&r, S0);
      float *map_i420 = copy_map(&r);
      run_ok(d, &nv12, &r);
      g_assert_true(memcmp(map_i420, r.map, (size_t)S0 * S0 * 4) == 0);
      uint8_t *rgb = g_malloc((size_t)w * h * 3);
      fap_frame_to_rgb(&i420, rgb);
      fap_frame packed = {FAP_PIXEL_RGB, w, h, (size_t)w * 3, rgb};
      run_ok(d, &packed, &r);
      g_assert_true(memcmp(map_i420, r.map, (size_t)S0 * S0 * 4) == 0);
      g_free(rgb);
      g_free(map_i420);
    }
    for (int i = 0; i < 3; i++) {
      g_free(b420[i]);
      g_free(b12[i]);
    }
  }
  /* YUY2: 4:2:2, Y0 U Y1 V per pixel pair, the last pair of an odd row half used */
  const int cw = (w + 1) / 2;
  const size_t stride = 4 * (size_t)cw + 6;
  uint8_t *yuy2 = g_malloc0(stride * h);
  GRand *rng = g_rand_new_with_seed(32);
  for (size_t i = 0; i < stride * h; i++)
    yuy2[i] = (uint8_t)g_rand_int(rng);
  g_rand_free(rng);
  fap_frame f = {FAP_PIXEL_YUY2, w, h, stride, yuy2, {NULL, NULL}, {0, 0}, FAP_YUV_BT601, 0};
  struct {
    const uint8_t *p;
    size_t stride;
  } ctx = {yuy2, stride};
  check_conversion(&f, 0, 0, sample_yuy2, &ctx);
  fap_result r;
  run_ok(d, &f, &r);
  float *map = copy_map(&r);
  uint8_t *rgb = g_malloc((size_t)w * h * 3);
  fap_frame_to_rgb(&f, rgb);
  fap_frame packed = {FAP_PIXEL_RGB, w, h, (size_t)w * 3, rgb};
  run_ok(d, &packed, &r);
  g_assert_true(memcmp(map, r.map, (size_t)S0 * S0 * 4) == 0);
  g_free(rgb);
  g_free(map);
  g_free(yuy2);
  fap_detector_free(d);
  free_yuv(&s);
}

static void test_yuv_validation(void) {
  use(1, 1);
  fap_detector *d = detector(0, -1, 0);
  yuv_samples s = random_yuv(20, 14, 33);
  uint8_t *b[3];
  fap_result r;
  fap_frame f = planar_frame(&s, FAP_PIXEL_NV12, b);
  f.plane[0] = NULL;
  expect_run_fail(d, &f, &r, "plane[0]");
  for (int i = 0; i < 3; i++)
    g_free(b[i]);
  f = planar_frame(&s, FAP_PIXEL_I420, b);
  fap_frame g = f;
  g.plane[1] = NULL;
  expect_run_fail(d, &g, &r, "plane[1]");
  g = f, g.plane_stride[0] = 9; /* U rows are 10 bytes */
  expect_run_fail(d, &g, &r, "of plane 1");
  g = f, g.plane_stride[1] = 0;
  expect_run_fail(d, &g, &r, "of plane 2");
  g = f, g.stride = 19;
  expect_run_fail(d, &g, &r, "stride 19");
  g = f, g.matrix = (fap_yuv_matrix)7;
  expect_run_fail(d, &g, &r, "matrix 7");
  run_ok(d, &f, &r); /* the valid original still runs */
  for (int i = 0; i < 3; i++)
    g_free(b[i]);
  uint8_t pairs[4 * 10 * 14] = {0};
  fap_frame y2 = {FAP_PIXEL_YUY2, 19, 14, 39, pairs}; /* 19 pixels: 10 pairs = 40 bytes */
  expect_run_fail(d, &y2, &r, "stride 39");
  y2.stride = 40;
  run_ok(d, &y2, &r);
  free_yuv(&s);
  fap_detector_free(d);
}

/* ---- runs ---------------------------------------------------------------------- */

static void test_repeat(void) {
  use(2, 0);
  fap_detector *d = detector(0, -1, 1);
  image im = make_image(80, 60, 9, FAP_PIXEL_RGB, 0);
  fap_result r1, r2;
  run_ok(d, &im.frame, &r1);
  float *map1 = copy_map(&r1);
  fap_tensor_view v;
  const float *tokens1 = getf(d, "tokens", &v);
  size_t tok_bytes = (size_t)v.shape[0] * v.shape[1] * 4;
  float *tokens_copy = g_memdup2(tokens1, tok_bytes);
  run_ok(d, &im.frame, &r2);
  g_assert_true(r1.map == r2.map); /* no reallocation between runs */
  g_assert_true(memcmp(map1, r2.map, (size_t)S0 * S0 * 4) == 0);
  g_assert_cmpfloat(r1.score, ==, r2.score);
  g_assert_true(memcmp(tokens_copy, getf(d, "tokens", &v), tok_bytes) == 0);
  g_free(tokens_copy);
  g_free(map1);
  g_free(im.pixels);
  fap_detector_free(d);
}

/* Input sizes change between runs: each result equals a fresh detector's.
 * (One thread: the per-size state is the resampling tables, not threading.) */
static void test_size_changes(void) {
  use(1, 0);
  static const int sizes[][2] = {{80, 60}, {33, 47}, {1, 1}, {300, 200}, {80, 30}, {81, 30}};
  static const int order[] = {0, 1, 0, 4, 5, 2, 3, 1, 0}; /* incl. one side changing alone */
  float *fresh_map[G_N_ELEMENTS(sizes)], fresh_score[G_N_ELEMENTS(sizes)];
  image im[G_N_ELEMENTS(sizes)];
  for (size_t i = 0; i < G_N_ELEMENTS(sizes); i++) {
    im[i] = make_image(sizes[i][0], sizes[i][1], 10 + (int)i, FAP_PIXEL_RGB, 3);
    fap_detector *fresh = detector(0, -1, 0);
    fap_result r;
    run_ok(fresh, &im[i].frame, &r);
    fresh_map[i] = copy_map(&r);
    fresh_score[i] = r.score;
    fap_detector_free(fresh);
  }
  fap_detector *d = detector(0, -1, 0);
  const float *map_ptr = NULL;
  for (size_t k = 0; k < G_N_ELEMENTS(order); k++) {
    int i = order[k];
    fap_result r;
    run_ok(d, &im[i].frame, &r);
    if (map_ptr)
      g_assert_true(r.map == map_ptr); /* the result buffer is never reallocated */
    map_ptr = r.map;
    if (memcmp(fresh_map[i], r.map, (size_t)S0 * S0 * 4) != 0 || r.score != fresh_score[i])
      g_error("run %zu (%dx%d) after other sizes differs from a fresh detector's", k,
              sizes[i][0], sizes[i][1]);
  }
  fap_detector_free(d);
  for (size_t i = 0; i < G_N_ELEMENTS(sizes); i++) {
    g_free(fresh_map[i]);
    g_free(im[i].pixels);
  }
}

static void test_two_detectors(void) {
  use(2, 0);
  fap_detector *a = detector(0, -1, 0), *b = detector(0, -1, 0);
  image im1 = make_image(50, 40, 21, FAP_PIXEL_RGB, 0), im2 = make_image(40, 50, 22, FAP_PIXEL_RGB, 0);
  fap_result ra, rb;
  /* interleaved, different frames in between: no state leaks through the shared model */
  run_ok(a, &im1.frame, &ra);
  float *map_a = copy_map(&ra);
  run_ok(b, &im2.frame, &rb);
  run_ok(b, &im1.frame, &rb);
  g_assert_true(ra.map != rb.map);
  g_assert_true(memcmp(map_a, rb.map, (size_t)S0 * S0 * 4) == 0);
  g_assert_cmpfloat(ra.score, ==, rb.score);
  g_free(map_a);
  g_free(im1.pixels);
  g_free(im2.pixels);
  fap_detector_free(a);
  fap_detector_free(b);
}

static void test_timing(void) {
  use(1, 0);
  fap_detector *d = detector(0, -1, 0);
  image im = make_image(64, 48, 23, FAP_PIXEL_RGB, 0);
  fap_result r;
  run_ok(d, &im.frame, &r);
  double sum = 0;
  for (int s = 0; s < FAP_STAGE_COUNT; s++) {
    g_assert_cmpfloat(r.stage_ms[s], >=, 0.0);
    g_assert_true(isfinite(r.stage_ms[s]));
    sum += r.stage_ms[s];
    g_assert_nonnull(fap_stage_name((fap_stage)s));
    g_assert_cmpstr(fap_stage_name((fap_stage)s), !=, "?");
  }
  g_assert_cmpfloat(r.stage_ms[FAP_STAGE_VISION], >, 0.0);
  g_assert_cmpfloat(r.total_ms, >=, sum - 1e-3);
  g_assert_cmpfloat(r.total_ms, <, 60e3);
  g_assert_cmpstr(fap_stage_name(FAP_STAGE_COUNT), ==, "?");
  g_free(im.pixels);
  fap_detector_free(d);
}

/* ---- intermediates --------------------------------------------------------------- */

static void test_intermediate_errors(void) {
  use(1, 1);
  fap_detector *d = detector(0, -1, 0);
  image im = make_image(20, 20, 24, FAP_PIXEL_RGB, 0);
  fap_result r;
  run_ok(d, &im.frame, &r);
  fap_tensor_view v;
  log_reset();
  g_assert_cmpint(fap_detector_intermediate(d, "map", &v), ==, FAP_ERR_INVALID_ARGUMENT);
  assert_one_error("keep_intermediates");
  fap_detector_free(d);

  d = detector(0, -1, 1);
  run_ok(d, &im.frame, &r);
  log_reset();
  g_assert_cmpint(fap_detector_intermediate(d, "bogus", &v), ==, FAP_ERR_INVALID_ARGUMENT);
  assert_one_error("'bogus'");
  log_reset();
  g_assert_cmpint(fap_detector_intermediate(d, "Map", &v), ==, FAP_ERR_INVALID_ARGUMENT);
  assert_one_error("'Map'");
  log_reset();
  g_assert_cmpint(fap_detector_intermediate(d, NULL, &v), ==, FAP_ERR_INVALID_ARGUMENT);
  assert_one_error(NULL);
  log_reset();
  g_assert_cmpint(fap_detector_intermediate(d, "map", NULL), ==, FAP_ERR_INVALID_ARGUMENT);
  assert_one_error(NULL);
  log_reset();
  g_assert_cmpint(fap_detector_intermediate(NULL, "map", &v), ==, FAP_ERR_INVALID_ARGUMENT);
  assert_one_error(NULL);
  g_free(im.pixels);
  fap_detector_free(d);
}

/* Before the first run there is no "last run": the views would point at
 * uninitialised host buffers (malloc'ed, never written). Asking must fail, not
 * hand out garbage that valgrind flags at the caller's first use. */
static void test_intermediate_before_run(void) {
  use(1, 1);
  fap_detector *d = detector(0, -1, 1);
  fap_tensor_view v;
  log_reset();
  fap_status s = fap_detector_intermediate(d, "map", &v);
  if (s == FAP_OK) {
    g_test_message("REGRESSION: fap_detector_intermediate() before any run returns OK with "
                   "an uninitialised buffer");
    g_test_fail_printf("core/detector.c: intermediates are readable before the first run "
                      "(the host copies are malloc'ed and never written until a run)");
  } else {
    g_assert_cmpint(s, ==, FAP_ERR_INVALID_ARGUMENT);
    assert_one_error("map");
  }
  fap_detector_free(d);
}

/* An intermediate's view: the dtype, rank and shape given, every f32 value finite. */
static void check_view(const char *label, const char *name, const fap_tensor_view *v,
                       fap_dtype dtype, int ndim, const int64_t *shape) {
  if (v->dtype != dtype || v->ndim != ndim)
    g_error("%s '%s': dtype %d ndim %d, expected dtype %d ndim %d", label, name, v->dtype, v->ndim,
            dtype, ndim);
  size_t numel = 1;
  for (int j = 0; j < ndim; j++) {
    if (v->shape[j] != shape[j])
      g_error("%s '%s': shape[%d] = %lld, expected %lld", label, name, j, (long long)v->shape[j],
              (long long)shape[j]);
    numel *= (size_t)v->shape[j];
  }
  if (dtype == FAP_DTYPE_F32)
    for (size_t j = 0; j < numel; j++)
      if (!isfinite(((const float *)v->data)[j]))
        g_error("%s: intermediate '%s'[%zu] is not finite", label, name, j);
}

static void test_intermediate_names(void) {
  use(1, 1);
  const fap_config *c = fap_model_config(model);
  const int s = 70, g = s / P, n = g * g, e = c->embed_dim, k = c->n_prompts;
  const struct {
    const char *name;
    fap_dtype dtype;
    int ndim;
    int64_t shape[3];
  } want[] = {
      {"preprocessed", FAP_DTYPE_F32, 3, {3, s, s}},
      {"tokens", FAP_DTYPE_F32, 2, {n + 1, e}},
      {"global", FAP_DTYPE_F32, 1, {e}},
      {"text_features", FAP_DTYPE_F32, 2, {k + 1, e}},
      {"text_normal", FAP_DTYPE_F32, 1, {e}},
      {"text_abnormal", FAP_DTYPE_F32, 1, {e}},
      {"map1", FAP_DTYPE_F32, 1, {n}},
      {"topk_index", FAP_DTYPE_I32, 1, {c->top_m}},
      {"prior", FAP_DTYPE_F32, 1, {c->text_width}},
      {"text_features_dynamic", FAP_DTYPE_F32, 2, {k, e}},
      {"text_abnormal_dynamic", FAP_DTYPE_F32, 1, {e}},
      {"map2", FAP_DTYPE_F32, 1, {n}},
      {"image_text_prob", FAP_DTYPE_F32, 1, {1}},
      {"map_raw", FAP_DTYPE_F32, 2, {s, s}},
      {"map", FAP_DTYPE_F32, 2, {s, s}},
      {"score", FAP_DTYPE_F32, 1, {1}},
  };
  const char *const *names = fap_intermediate_names();
  int count = 0;
  while (names[count])
    count++;
  g_assert_cmpint(count, ==, 16);
  g_assert_cmpint(count, ==, G_N_ELEMENTS(want));
  fap_detector *d = detector(s, -1, 1);
  image im = make_image(45, 33, 25, FAP_PIXEL_RGB, 0);
  fap_result r;
  run_ok(d, &im.frame, &r);
  for (int i = 0; i < count; i++) {
    g_assert_cmpstr(names[i], ==, want[i].name);
    fap_tensor_view v;
    get(d, names[i], &v);
    check_view("fap_intermediate_names", names[i], &v, want[i].dtype, want[i].ndim,
               want[i].shape);
  }
  fap_tensor_view v;
  g_assert_true(memcmp(getf(d, "map", &v), r.map, (size_t)s * s * 4) == 0);
  g_assert_cmpfloat(getf(d, "score", &v)[0], ==, r.score);
  g_free(im.pixels);
  fap_detector_free(d);
}

static double dot(const float *a, const float *b, int n) {
  double s = 0;
  for (int i = 0; i < n; i++)
    s += (double)a[i] * b[i];
  return s;
}

static double prob(const float *x, const float *t0, const float *t1, int e) {
  double nx = sqrt(dot(x, x, e));
  double l0 = dot(x, t0, e) / nx / 0.07, l1 = dot(x, t1, e) / nx / 0.07;
  return 1.0 / (1.0 + exp(l0 - l1));
}

/* align_corners = false: x = max((i + 0.5) G / S - 0.5, 0), in double */
static double bilinear(const float *a, int g, int s, int y, int x) {
  double sy = fmax((y + 0.5) * g / s - 0.5, 0.0), sx = fmax((x + 0.5) * g / s - 0.5, 0.0);
  int y0 = MIN((int)sy, g - 1), x0 = MIN((int)sx, g - 1);
  int y1 = MIN(y0 + 1, g - 1), x1 = MIN(x0 + 1, g - 1);
  double wy = sy - y0, wx = sx - x0;
  return (1 - wy) * ((1 - wx) * a[y0 * g + x0] + wx * a[y0 * g + x1]) +
         wy * ((1 - wx) * a[y1 * g + x0] + wx * a[y1 * g + x1]);
}

static void check_unit(const float *v, int e, const char *name) {
  double n = sqrt(dot(v, v, e));
  if (!(fabs(n - 1) <= 1e-5))
    g_error("'%s' has norm %.9g, expected 1", name, n);
}

/* docs/SPEC.md section 4, recomputed in double from the detector's own intermediates. */
static void test_intermediate_relations(void) {
  use(1, 0);
  const fap_config *c = fap_model_config(model);
  const int e = c->embed_dim, k = c->n_prompts, m = c->top_m;
  static const int sizes[] = {56, 70};
  for (size_t si = 0; si < G_N_ELEMENTS(sizes); si++) {
    const int s = sizes[si], g = s / P, n = g * g;
    fap_detector *d = detector(s, -1, 1);
    image im = make_image(77, 51, 26 + (int)si, FAP_PIXEL_RGB, 0);
    fap_result r;
    run_ok(d, &im.frame, &r);
    check_map_range(&r, s);
    fap_tensor_view v;
    const float *tokens = getf(d, "tokens", &v), *global = getf(d, "global", &v);
    const float *feats = getf(d, "text_features", &v), *tn = getf(d, "text_normal", &v);
    const float *ta = getf(d, "text_abnormal", &v), *tad = getf(d, "text_abnormal_dynamic", &v);
    const float *dyn = getf(d, "text_features_dynamic", &v);
    const float *map1 = getf(d, "map1", &v), *map2 = getf(d, "map2", &v);
    const float q = getf(d, "image_text_prob", &v)[0];
    const float *map_raw = getf(d, "map_raw", &v);
    const int32_t *topk = get(d, "topk_index", &v)->data;
    check_unit(tn, e, "text_normal");
    check_unit(ta, e, "text_abnormal");
    check_unit(tad, e, "text_abnormal_dynamic");
    /* t_n = norm(f_n); t_a = norm(mean f_a,i); t'_a = norm(mean f'_a,i) */
    double nn = sqrt(dot(feats, feats, e));
    double *mean = g_new0(double, e), *mean_d = g_new0(double, e);
    for (int i = 0; i < k; i++)
      for (int j = 0; j < e; j++) {
        mean[j] += feats[(size_t)(1 + i) * e + j] / k;
        mean_d[j] += dyn[(size_t)i * e + j] / k;
      }
    double nm = 0, nmd = 0;
    for (int j = 0; j < e; j++)
      nm += mean[j] * mean[j], nmd += mean_d[j] * mean_d[j];
    for (int j = 0; j < e; j++) {
      g_assert_cmpfloat(fabs(tn[j] - feats[j] / nn), <=, 1e-6);
      g_assert_cmpfloat(fabs(ta[j] - mean[j] / sqrt(nm)), <=, 1e-6);
      g_assert_cmpfloat(fabs(tad[j] - mean_d[j] / sqrt(nmd)), <=, 1e-6);
    }
    /* the prior moved the abnormal prompts */
    double moved = 0;
    for (int j = 0; j < e; j++)
      moved = fmax(moved, fabs(tad[j] - ta[j]));
    g_assert_cmpfloat(moved, >, 1e-4);
    /* A1, A2 from the patch tokens (rows 1..N), q from g */
    double max1 = 0, max2 = 0;
    for (int j = 0; j < n; j++) {
      const float *t = tokens + (size_t)(1 + j) * e;
      double a1 = prob(t, tn, ta, e), a2 = prob(t, tn, tad, e);
      if (!(fabs(map1[j] - a1) <= 1e-5 && fabs(map2[j] - a2) <= 1e-5))
        g_error("size %d patch %d: A1 %.9g / A2 %.9g, recomputed %.9g / %.9g", s, j, map1[j],
                map2[j], a1, a2);
      max1 = fmax(max1, map1[j]);
      max2 = fmax(max2, map2[j]);
    }
    g_assert_cmpfloat(fabs(q - prob(global, tn, tad, e)), <=, 1e-5);
    /* top-M: distinct, descending A1, nothing larger left out */
    for (int i = 0; i < m; i++) {
      g_assert_cmpint(topk[i], >=, 0);
      g_assert_cmpint(topk[i], <, n);
      if (i)
        g_assert_cmpfloat(map1[topk[i]], <=, map1[topk[i - 1]]);
      for (int j = 0; j < i; j++)
        g_assert_cmpint(topk[i], !=, topk[j]);
    }
    for (int j = 0; j < n; j++) {
      gboolean picked = FALSE;
      for (int i = 0; i < m; i++)
        picked |= topk[i] == j;
      if (!picked)
        g_assert_cmpfloat(map1[j], <=, map1[topk[m - 1]]);
    }
    /* score = 0.5 (q + (2 max1 + max2) / 3) */
    double score = 0.5 * (q + (2 * max1 + max2) / 3);
    g_assert_cmpfloat(fabs(r.score - score), <=, 1e-6);
    /* map_raw = (up(A1) + up(A2)) / 2, bilinear with align_corners = false */
    for (int y = 0; y < s; y++)
      for (int x = 0; x < s; x++) {
        double want = 0.5 * (bilinear(map1, g, s, y, x) + bilinear(map2, g, s, y, x));
        if (!(fabs(map_raw[(size_t)y * s + x] - want) <= 1e-5))
          g_error("size %d: map_raw[%d, %d] = %.9g, recomputed %.9g", s, y, x,
                  map_raw[(size_t)y * s + x], want);
      }
    /* smoothing (weights >= 0, sum 1) keeps the map inside the range of map_raw */
    float lo_raw = 1, hi_raw = 0, lo = 1, hi = 0;
    for (int i = 0; i < s * s; i++) {
      lo_raw = fminf(lo_raw, map_raw[i]), hi_raw = fmaxf(hi_raw, map_raw[i]);
      lo = fminf(lo, r.map[i]), hi = fmaxf(hi, r.map[i]);
    }
    g_assert_cmpfloat(lo, >=, lo_raw - 1e-6f);
    g_assert_cmpfloat(hi, <=, hi_raw + 1e-6f);
    g_assert_cmpfloat(hi_raw, <=, fmax(max1, max2) + 1e-6);
    g_free(mean);
    g_free(mean_d);
    g_free(im.pixels);
    fap_detector_free(d);
  }
}

/* ---- AnomalyCLIP (docs/SPEC.md section 6) ----------------------------------------- */

static fap_model *model_ac, *model_ac_b; /* out layers 2,4 of 4 / 1,2,3 of 3 (f16) */

static fap_detector *detector_of(fap_model *m, int size, float sigma, int keep, int batch) {
  fap_detector_options o = options(size, sigma, keep);
  o.batch = batch;
  fap_detector *d = NULL;
  log_reset();
  fap_status s = fap_detector_new(m, &o, &d);
  if (s != FAP_OK)
    g_error("fap_detector_new(%s, size %d, sigma %g, batch %d): %s; \"%s\"",
            fap_family_name(fap_model_config(m)->family), size, sigma, batch,
            fap_status_string(s), last_error);
  g_assert_cmpint(n_errors, ==, 0);
  return d;
}

static const char *const ac_names[] = {
    "preprocessed", "tokens", "global", "text_features", "text_normal", "text_abnormal",
    "layer_maps", "image_text_prob", "map_raw", "map_sum", "map", "score",
};
/* names only FAPrompt has (the prior, the second pass) */
static const char *const faprompt_only[] = {"map1", "topk_index", "prior", "text_features_dynamic",
                                            "text_abnormal_dynamic", "map2"};

static int count_list(const char *const *names) {
  int n = 0;
  while (names[n])
    n++;
  return n;
}

/* Each family's list; fap_intermediate_names() stays FAPrompt's. */
static void test_ac_names(void) {
  use(1, 1);
  fap_detector *da = detector_of(model_ac, 0, -1, 0, 1), *df = detector_of(model, 0, -1, 0, 1);
  const char *const *fa = fap_intermediate_names();
  const char *const *la = fap_detector_intermediate_names(da);
  const char *const *lf = fap_detector_intermediate_names(df);
  g_assert_nonnull(la);
  g_assert_nonnull(lf);
  g_assert_cmpint(count_list(la), ==, G_N_ELEMENTS(ac_names));
  for (size_t i = 0; i < G_N_ELEMENTS(ac_names); i++)
    g_assert_cmpstr(la[i], ==, ac_names[i]);
  /* the FAPrompt detector's list is fap_intermediate_names(), which an
   * AnomalyCLIP detector's existence does not change */
  g_assert_cmpint(count_list(fa), ==, 16);
  g_assert_cmpint(count_list(lf), ==, 16);
  for (int i = 0; i < 16; i++)
    g_assert_cmpstr(lf[i], ==, fa[i]);
  for (size_t i = 0; i < G_N_ELEMENTS(faprompt_only); i++) {
    gboolean in_fa = FALSE, in_ac = FALSE;
    for (int j = 0; fa[j]; j++)
      in_fa |= !strcmp(fa[j], faprompt_only[i]);
    for (int j = 0; la[j]; j++)
      in_ac |= !strcmp(la[j], faprompt_only[i]);
    g_assert_true(in_fa);
    g_assert_false(in_ac);
  }
  for (int j = 0; fa[j]; j++) {
    g_assert_cmpstr(fa[j], !=, "layer_maps");
    g_assert_cmpstr(fa[j], !=, "map_sum");
  }
  /* the AnomalyCLIP model's second file (another L) has the same names */
  fap_detector *db = detector_of(model_ac_b, 0, -1, 0, 1);
  const char *const *lb = fap_detector_intermediate_names(db);
  g_assert_cmpint(count_list(lb), ==, G_N_ELEMENTS(ac_names));
  for (size_t i = 0; i < G_N_ELEMENTS(ac_names); i++)
    g_assert_cmpstr(lb[i], ==, ac_names[i]);
  fap_detector_free(da);
  fap_detector_free(db);
  fap_detector_free(df);
}

static void expect_intermediate_refused(const fap_detector *d, const char *name,
                                        const char *family) {
  fap_tensor_view v;
  log_reset();
  fap_status s = fap_detector_intermediate(d, name, &v);
  if (s != FAP_ERR_INVALID_ARGUMENT)
    g_error("intermediate '%s' of a %s detector: status %d (%s), expected invalid argument", name,
            family, s, fap_status_string(s));
  char *quoted = g_strdup_printf("'%s'", name);
  assert_one_error(quoted);
  assert_one_error(family);
  g_free(quoted);
}

/* Every name of the list at its documented shape, finite; the other
 * family's names refused, the message naming the family. */
static void check_ac_intermediates(fap_model *m, int s) {
  const fap_config *c = fap_model_config(m);
  const int g = s / P, n = g * g, e = c->embed_dim, l = c->n_out_layers;
  const struct {
    int ndim;
    int64_t shape[3];
  } want[G_N_ELEMENTS(ac_names)] = {
      {3, {3, s, s}}, {3, {l, n + 1, e}}, {1, {e}}, {2, {2, e}}, {1, {e}}, {1, {e}},
      {2, {l, n}},    {1, {1}},           {2, {s, s}}, {2, {s, s}}, {2, {s, s}}, {1, {1}},
  };
  fap_detector *d = detector_of(m, s, -1, 1, 1);
  image im = make_image(45, 33, 40 + s, FAP_PIXEL_RGB, 0);
  fap_result r;
  run_ok(d, &im.frame, &r);
  const char *const *names = fap_detector_intermediate_names(d);
  for (size_t i = 0; i < G_N_ELEMENTS(ac_names); i++) {
    fap_tensor_view v;
    get(d, names[i], &v);
    char *label = g_strdup_printf("S=%d L=%d", s, l);
    check_view(label, names[i], &v, FAP_DTYPE_F32, want[i].ndim, want[i].shape);
    g_free(label);
  }
  fap_tensor_view v;
  g_assert_true(memcmp(getf(d, "map", &v), r.map, (size_t)s * s * 4) == 0);
  g_assert_cmpfloat(getf(d, "score", &v)[0], ==, r.score);
  for (size_t i = 0; i < G_N_ELEMENTS(faprompt_only); i++)
    expect_intermediate_refused(d, faprompt_only[i], "anomalyclip");
  expect_intermediate_refused(d, "bogus", "anomalyclip");
  g_free(im.pixels);
  fap_detector_free(d);
}

static void test_ac_intermediates(void) {
  use(1, 1);
  check_ac_intermediates(model_ac, 70);
  check_ac_intermediates(model_ac, 14); /* one patch: no prior needs M of them */
  check_ac_intermediates(model_ac_b, 42);
  /* and a FAPrompt detector refuses AnomalyCLIP's own names */
  fap_detector *d = detector(0, -1, 1);
  image im = make_image(20, 20, 41, FAP_PIXEL_RGB, 0);
  fap_result r;
  run_ok(d, &im.frame, &r);
  expect_intermediate_refused(d, "layer_maps", "faprompt");
  expect_intermediate_refused(d, "map_sum", "faprompt");
  g_free(im.pixels);
  fap_detector_free(d);
}

/* docs/SPEC.md section 6.4 recomputed in double from the detector's own
 * intermediates: t_n, t_a = norm(f_n), norm(f_a); A_l = prob(T_l) per out
 * layer; q = prob(g); score = q; map_raw = sum_l up(A_l); map_sum =
 * smoothed map_raw, in [0, L]; map = map_sum / L, in [0, 1]. */
static void check_ac_relations(fap_model *m, int s, float sigma, int seed) {
  const fap_config *c = fap_model_config(m);
  const int e = c->embed_dim, l = c->n_out_layers, g = s / P, n = g * g;
  const size_t s2 = (size_t)s * s;
  fap_detector *d = detector_of(m, s, sigma, 1, 1);
  image im = make_image(77, 51, seed, FAP_PIXEL_RGB, 0);
  fap_result r;
  run_ok(d, &im.frame, &r);
  check_map_range(&r, s);
  fap_tensor_view v;
  const float *tokens = getf(d, "tokens", &v), *global = getf(d, "global", &v);
  const float *feats = getf(d, "text_features", &v), *tn = getf(d, "text_normal", &v);
  const float *ta = getf(d, "text_abnormal", &v), *maps = getf(d, "layer_maps", &v);
  const float q = getf(d, "image_text_prob", &v)[0], score = getf(d, "score", &v)[0];
  const float *map_raw = getf(d, "map_raw", &v), *map_sum = getf(d, "map_sum", &v);
  const float *map = getf(d, "map", &v);
  check_unit(tn, e, "text_normal");
  check_unit(ta, e, "text_abnormal");
  const double nn = sqrt(dot(feats, feats, e)), na = sqrt(dot(feats + e, feats + e, e));
  for (int j = 0; j < e; j++) {
    g_assert_cmpfloat(fabs(tn[j] - feats[j] / nn), <=, 1e-6);
    g_assert_cmpfloat(fabs(ta[j] - feats[e + j] / na), <=, 1e-6);
  }
  /* score = q alone (no map terms) */
  g_assert_cmpfloat(score, ==, q);
  g_assert_cmpfloat(r.score, ==, q);
  g_assert_cmpfloat(fabs(q - prob(global, tn, ta, e)), <=, 1e-5);
  for (int li = 0; li < l; li++)
    for (int j = 0; j < n; j++) {
      const float *t = tokens + ((size_t)li * (n + 1) + 1 + j) * e;
      double a = prob(t, tn, ta, e), got = maps[(size_t)li * n + j];
      if (!(fabs(got - a) <= 1e-5))
        g_error("S=%d layer %d patch %d: A = %.9g, recomputed %.9g", s, li, j, got, a);
    }
  /* the out layers differ (else the sum would be L copies of one map) */
  if (l > 1) {
    double diff = 0;
    for (int j = 0; j < n; j++)
      diff = fmax(diff, fabs(maps[j] - maps[(size_t)(l - 1) * n + j]));
    g_assert_cmpfloat(diff, >, 1e-4);
  }
  double lo_raw = INFINITY, hi_raw = -INFINITY;
  for (int y = 0; y < s; y++)
    for (int x = 0; x < s; x++) {
      double want = 0;
      for (int li = 0; li < l; li++)
        want += bilinear(maps + (size_t)li * n, g, s, y, x);
      double got = map_raw[(size_t)y * s + x];
      if (!(fabs(got - want) <= 1e-5 * l))
        g_error("S=%d L=%d: map_raw[%d, %d] = %.9g, recomputed sum %.9g", s, l, y, x, got, want);
      lo_raw = fmin(lo_raw, got), hi_raw = fmax(hi_raw, got);
    }
  g_assert_cmpfloat(hi_raw, <=, l + 1e-5);
  g_assert_cmpfloat(lo_raw, >=, 0.0);
  for (size_t i = 0; i < s2; i++) {
    const double want = (double)map[i] * l;
    if (!(fabs(map_sum[i] - want) <= 1e-6 * fabs(want) + 1e-30))
      g_error("S=%d L=%d: map_sum[%zu] = %.9g, map * L = %.9g", s, l, i, map_sum[i], want);
    /* the blur (weights >= 0, sum 1) keeps map_sum inside map_raw's range */
    if (!(map_sum[i] >= lo_raw - 1e-5 && map_sum[i] <= hi_raw + 1e-5))
      g_error("S=%d: map_sum[%zu] = %.9g outside map_raw's [%.9g, %.9g]", s, i, map_sum[i], lo_raw,
              hi_raw);
    if (sigma == 0.0f && !(fabs(map_sum[i] - map_raw[i]) <= 1e-6 * l))
      g_error("S=%d sigma 0: map_sum[%zu] = %.9g, map_raw %.9g", s, i, map_sum[i], map_raw[i]);
  }
  /* the stages FAPrompt's prior and second pass take are not run */
  g_assert_cmpfloat(r.stage_ms[FAP_STAGE_PRIOR], ==, 0.0);
  g_assert_cmpfloat(r.stage_ms[FAP_STAGE_TEXT], ==, 0.0);
  g_assert_cmpfloat(r.stage_ms[FAP_STAGE_MAP2], ==, 0.0);
  g_assert_cmpfloat(r.stage_ms[FAP_STAGE_VISION], >, 0.0);
  double sum = 0;
  for (int st = 0; st < FAP_STAGE_COUNT; st++) {
    g_assert_cmpfloat(r.stage_ms[st], >=, 0.0);
    sum += r.stage_ms[st];
  }
  g_assert_cmpfloat(r.total_ms, >=, sum - 1e-3);
  /* the text features are static: a second, different frame leaves them */
  float *tn0 = g_memdup2(tn, (size_t)e * 4), *ta0 = g_memdup2(ta, (size_t)e * 4);
  image im2 = make_image(30, 40, seed + 1000, FAP_PIXEL_RGB, 0);
  fap_result r2;
  run_ok(d, &im2.frame, &r2);
  g_assert_true(memcmp(tn0, getf(d, "text_normal", &v), (size_t)e * 4) == 0);
  g_assert_true(memcmp(ta0, getf(d, "text_abnormal", &v), (size_t)e * 4) == 0);
  g_assert_cmpfloat(r2.score, !=, r.score);
  g_free(tn0);
  g_free(ta0);
  g_free(im2.pixels);
  g_free(im.pixels);
  fap_detector_free(d);
}

static void test_ac_relations(void) {
  use(1, 0);
  check_ac_relations(model_ac, 56, -1, 50); /* sigma 4 (the model's), G = 4 != G0 = 3 */
  check_ac_relations(model_ac, 70, 0.0f, 51);
  check_ac_relations(model_ac, 28, 1.5f, 52);
  check_ac_relations(model_ac_b, 42, -1, 53); /* L = 3 */
  check_ac_relations(model_ac_b, 56, 0.0f, 54);
}

/* A batch of 3 frames of different sizes and formats on the CPU: each frame's
 * result is the one it gets alone; the intermediates are the last frame's. */
static void check_ac_batch(fap_model *m) {
  const int l = fap_model_config(m)->n_out_layers;
  image im[3] = {make_image(80, 60, 60, FAP_PIXEL_RGB, 0), make_image(33, 47, 61, FAP_PIXEL_BGRA, 5),
                 make_image(120, 90, 62, FAP_PIXEL_RGB, 3)};
  fap_frame frames[3] = {im[0].frame, im[1].frame, im[2].frame};
  float *alone_map[3], alone_score[3];
  int s = 0;
  for (int i = 0; i < 3; i++) {
    fap_detector *one = detector_of(m, 0, -1, 0, 1);
    fap_result r;
    run_ok(one, &frames[i], &r);
    alone_map[i] = copy_map(&r);
    alone_score[i] = r.score;
    s = r.map_size;
    fap_detector_free(one);
  }
  const size_t bytes = (size_t)s * s * 4;
  g_assert_false(memcmp(alone_map[0], alone_map[1], bytes) == 0); /* the frames differ */
  fap_detector *d = detector_of(m, 0, -1, 1, 3);
  g_assert_cmpint(fap_detector_batch(d), ==, 3);
  for (int order = 0; order < 2; order++) { /* as given, then reversed */
    fap_frame f[3];
    int idx[3];
    for (int i = 0; i < 3; i++) {
      idx[i] = order ? 2 - i : i;
      f[i] = frames[idx[i]];
    }
    fap_result res[3];
    log_reset();
    fap_status st = fap_detector_run_batch(d, f, 3, NULL, res);
    if (st != FAP_OK)
      g_error("run_batch: %s; \"%s\"", fap_status_string(st), last_error);
    for (int i = 0; i < 3; i++) {
      g_assert_cmpint(res[i].map_size, ==, s);
      if (memcmp(res[i].map, alone_map[idx[i]], bytes) != 0 || res[i].score != alone_score[idx[i]])
        g_error("L=%d batch order %d: frame %d (%dx%d) differs from its run alone (score %.9g vs "
                "%.9g)", l, order, i, f[i].width, f[i].height, res[i].score, alone_score[idx[i]]);
      for (int j = 0; j < i; j++)
        g_assert_true(res[i].map != res[j].map);
      g_assert_cmpfloat(res[i].stage_ms[FAP_STAGE_TEXT], ==, 0.0);
    }
    /* intermediates: the last frame's */
    fap_tensor_view v;
    g_assert_true(memcmp(getf(d, "map", &v), res[2].map, bytes) == 0);
    g_assert_cmpfloat(getf(d, "score", &v)[0], ==, res[2].score);
    const float *map_sum = getf(d, "map_sum", &v);
    for (size_t i = 0; i < (size_t)s * s; i++)
      if (!(fabs(map_sum[i] - (double)res[2].map[i] * l) <= 1e-6 * fabs(res[2].map[i] * l) + 1e-30))
        g_error("after a batch: map_sum[%zu] = %.9g, last frame's map * L = %.9g", i, map_sum[i],
                res[2].map[i] * l);
  }
  for (int i = 0; i < 3; i++) {
    g_free(alone_map[i]);
    g_free(im[i].pixels);
  }
  fap_detector_free(d);
}

static void test_ac_batch(void) {
  use(1, 0);
  check_ac_batch(model_ac);
  check_ac_batch(model_ac_b);
}

/* ---- misc ------------------------------------------------------------------------ */

static void test_null_noops(void) {
  fap_detector_free(NULL);
  fap_model_free(NULL);
  g_assert_cmpint(fap_detector_image_size(NULL), ==, 0);
  fap_detector_options o;
  memset(&o, 0x5a, sizeof o);
  fap_detector_options_init(&o);
  g_assert_cmpint(o.backend, ==, FAP_BACKEND_AUTO);
  g_assert_cmpint(o.image_size, ==, 0);
  g_assert_cmpint(o.threads, ==, 0);
  g_assert_cmpint(o.keep_intermediates, ==, 0);
  g_assert_cmpint(o.reference, ==, 0);
  g_assert_cmpfloat(o.sigma, <, 0);
}

static void test_strings(void) {
  const char *seen[FAP_ERR_BACKEND + 1];
  for (int s = FAP_OK; s <= FAP_ERR_BACKEND; s++) {
    seen[s] = fap_status_string((fap_status)s);
    g_assert_nonnull(seen[s]);
    g_assert_cmpuint(strlen(seen[s]), >, 0);
    for (int t = 0; t < s; t++)
      g_assert_cmpstr(seen[t], !=, seen[s]);
  }
  g_assert_nonnull(fap_status_string((fap_status)99));
  g_assert_cmpuint(strlen(fap_status_string((fap_status)99)), >, 0);
  for (int f = FAP_PIXEL_RGB; f <= FAP_PIXEL_YUY2; f++) {
    const char *name = fap_pixel_format_name((fap_pixel_format)f);
    g_assert_nonnull(name);
    g_assert_cmpstr(name, !=, "?");
  }
  g_assert_cmpstr(fap_pixel_format_name(FAP_PIXEL_BGRX), ==, "BGRx");
  g_assert_cmpstr(fap_pixel_format_name((fap_pixel_format)99), ==, "?");
  static const fap_dtype dtypes[] = {FAP_DTYPE_F32, FAP_DTYPE_F16, FAP_DTYPE_BF16,
                                     FAP_DTYPE_I32, FAP_DTYPE_I64, FAP_DTYPE_U8};
  static const size_t sizes[] = {4, 2, 2, 4, 8, 1};
  static const char *const names[] = {"F32", "F16", "BF16", "I32", "I64", "U8"};
  for (size_t i = 0; i < G_N_ELEMENTS(dtypes); i++) {
    g_assert_cmpuint(fap_dtype_size(dtypes[i]), ==, sizes[i]);
    g_assert_cmpstr(fap_dtype_name(dtypes[i]), ==, names[i]);
  }
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  if (argc < 2) {
    g_printerr("usage: %s TINY_A [TINY_AC TINY_AC_B]\n", argv[0]);
    return 2;
  }
  fap_set_log_callback(capture, NULL);
  if (fap_model_load(argv[1], &model) != FAP_OK) {
    g_printerr("%s: %s\n", argv[1], last_error);
    return 1;
  }
  const fap_config *c = fap_model_config(model);
  S0 = c->image_size;
  P = c->patch_size;
  /* the cases below are written for the tiny preset */
  g_assert_cmpint(P, ==, 14);
  g_assert_cmpint(c->top_m, ==, 5);
  if (argc >= 4) {
    if (fap_model_load(argv[2], &model_ac) != FAP_OK ||
        fap_model_load(argv[3], &model_ac_b) != FAP_OK) {
      g_printerr("%s / %s: %s\n", argv[2], argv[3], last_error);
      return 1;
    }
    g_assert_cmpint(fap_model_config(model_ac)->family, ==, FAP_FAMILY_ANOMALYCLIP);
    g_assert_cmpint(fap_model_config(model_ac)->n_out_layers, ==, 2);
    g_assert_cmpint(fap_model_config(model_ac_b)->n_out_layers, ==, 3);
    g_assert_cmpint(fap_model_config(model_ac)->patch_size, ==, P);
    g_assert_cmpint(fap_model_config(model_ac_b)->patch_size, ==, P);
  }

  g_test_add_func("/detector/options", test_options);
  g_test_add_func("/detector/sigma", test_sigma);
  g_test_add_func("/detector/backend-choice", test_backend_choice);
  g_test_add_func("/detector/frame-validation", test_frame_validation);
  g_test_add_func("/detector/odd-sizes", test_odd_sizes);
  g_test_add_func("/detector/uniform-vs-square", test_uniform_vs_square);
  g_test_add_func("/detector/formats", test_formats);
  g_test_add_func("/detector/yuv", test_yuv);
  g_test_add_func("/detector/yuv-validation", test_yuv_validation);
  g_test_add_func("/detector/repeat", test_repeat);
  g_test_add_func("/detector/size-changes", test_size_changes);
  g_test_add_func("/detector/two-detectors", test_two_detectors);
  g_test_add_func("/detector/timing", test_timing);
  g_test_add_func("/detector/intermediate-errors", test_intermediate_errors);
  g_test_add_func("/detector/intermediate-before-run", test_intermediate_before_run);
  g_test_add_func("/detector/intermediate-names", test_intermediate_names);
  g_test_add_func("/detector/intermediate-relations", test_intermediate_relations);
  if (model_ac) {
    g_test_add_func("/detector/anomalyclip/names", test_ac_names);
    g_test_add_func("/detector/anomalyclip/intermediates", test_ac_intermediates);
    g_test_add_func("/detector/anomalyclip/relations", test_ac_relations);
    g_test_add_func("/detector/anomalyclip/batch", test_ac_batch);
  }
  g_test_add_func("/detector/null-noops", test_null_noops);
  g_test_add_func("/detector/strings", test_strings);
  int rc = g_test_run();
  fap_model_free(model_ac);
  fap_model_free(model_ac_b);
  fap_model_free(model);
  return rc;
}
