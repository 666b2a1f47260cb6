/* The frame side of the core API that came with the CUDA backend, on the
 * CPU backend (runs everywhere, suite 'unit'):
 *   - core/pixel_math.h, the arithmetic the CPU and the CUDA kernels share:
 *     fixed-point YUV -> RGB against the double-precision formula (within 1
 *     level) for every Y (U, V in steps of 5) and both matrices and ranges; RGB -> YUV ->
 *     RGB round trips; the jet colours and the blend arithmetic; bilinear
 *     taps and mirrored borders equal to core/resample's;
 *   - frame validation for NV12 / I420 / YUY2 (one message naming the fault);
 *   - YUV frames through the detector equal their RGB conversion bit for bit;
 *   - fap_detector_run_batch: each frame's result equals its single run, the
 *     maps stay valid together; options batch / precision checked;
 *   - heatmap drawing through the run equals fap_blend_frame on the result.
 *
 * usage: test_frames TINY_MODEL */
#include "fap.h"

#include "pixel.h"
#include "resample.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static uint32_t rs = 7;
static uint32_t rnd(void) {
  rs = rs * 1103515245u + 12345u;
  return rs >> 8;
}

/* ---- pixel arithmetic ------------------------------------------------------------- */

static void yuv_math(void) {
  for (int m = 0; m < 2; m++)
    for (int full = 0; full < 2; full++) {
      fap_yuv2rgb k;
      fap_rgb2yuv kb;
      fap_yuv_coefficients(m, full, &k, &kb);
      const double kr = m ? 0.2126 : 0.299, kbb = m ? 0.0722 : 0.114, kg = 1 - kr - kbb;
      const double ys = full ? 1 : 255.0 / 219, cs = full ? 1 : 255.0 / 224, y0 = full ? 0 : 16;
      int worst = 0;
      /* every Y; U and V in steps of 5 through 0 .. 255 (both ends), so the
       * test stays quick under valgrind */
      for (int y = 0; y < 256; y++)
        for (int u = 0; u < 256; u += 5)
          for (int v = 0; v < 256; v += 5) {
            uint8_t rgb[3];
            fap_yuv_to_rgb(&k, y, u, v, rgb);
            const double yy = ys * (y - y0), uu = cs * (u - 128), vv = cs * (v - 128);
            const double ref[3] = {yy + 2 * (1 - kr) * vv,
                                   yy - 2 * (1 - kbb) * kbb / kg * uu - 2 * (1 - kr) * kr / kg * vv,
                                   yy + 2 * (1 - kbb) * uu};
            for (int c = 0; c < 3; c++) {
              double r = ref[c] < 0 ? 0 : ref[c] > 255 ? 255 : ref[c];
              int d = abs(rgb[c] - (int)lround(r));
              worst = d > worst ? d : worst;
            }
          }
      CHECK(worst <= 1, "YUV -> RGB (%s, %s range) off by %d levels", m ? "BT.709" : "BT.601",
            full ? "full" : "limited", worst);
      /* RGB -> YUV -> RGB */
      int trip = 0;
      for (int i = 0; i < 50000; i++) {
        uint8_t rgb[3] = {(uint8_t)rnd(), (uint8_t)rnd(), (uint8_t)rnd()}, yuv[3], back[3];
        fap_rgb_to_yuv(&kb, rgb, yuv);
        fap_yuv_to_rgb(&k, yuv[0], yuv[1], yuv[2], back);
        for (int c = 0; c < 3; c++)
          trip = abs(back[c] - rgb[c]) > trip ? abs(back[c] - rgb[c]) : trip;
      }
      CHECK(trip <= (full ? 2 : 3), "RGB -> YUV -> RGB (%s, %s) off by %d", m ? "BT.709" : "BT.601",
            full ? "full" : "limited", trip);
    }
}

static void blend_math(void) {
  uint8_t c[3];
  fap_jet(0.0f, c);
  CHECK(c[0] == 0 && c[1] == 0 && c[2] == 128, "jet(0) = %d %d %d", c[0], c[1], c[2]);
  fap_jet(0.5f, c);
  CHECK(c[0] == 128 && c[1] == 255 && c[2] == 128, "jet(0.5) = %d %d %d", c[0], c[1], c[2]);
  fap_jet(1.0f, c);
  CHECK(c[0] == 128 && c[1] == 0 && c[2] == 0, "jet(1) = %d %d %d", c[0], c[1], c[2]);
  const fap_blend_params unit = {1.0f, 0.3f, 0.0f, 1.0f}, half = {0.5f, 0.0f, 0.0f, 1.0f};
  const fap_blend_params scaled = {1.0f, 0.0f, 0.2f, 1.0f / 0.4f}; /* range [0.2, 0.6] */
  CHECK(fap_blend_paint(0.3f, &unit, c) == 0, "at the threshold nothing is drawn");
  CHECK(fap_blend_paint(NAN, &half, c) == 0, "NaN draws nothing");
  CHECK(fap_blend_paint(1.5f, &unit, c) == 256 && c[0] == 128 && c[2] == 0,
        "above the range: the last colour, full opacity");
  CHECK(fap_blend_paint(1.0f, &unit, c) == 256 && fap_blend_paint(0.5f, &half, c) == 64,
        "alpha = opacity t in 1/256");
  CHECK(fap_blend_paint(0.4f, &scaled, c) == 128 && c[1] == 255,
        "range [0.2, 0.6]: 0.4 is the middle (green, alpha 1/2)");
  CHECK(fap_blend_paint(0.1f, &scaled, c) == 0 && fap_blend_paint(0.7f, &scaled, c) == 256,
        "range [0.2, 0.6]: clamped at both ends");
  CHECK(fap_blend_channel(200, 10, 0) == 200 && fap_blend_channel(200, 10, 256) == 10,
        "blend end points");
  /* bilinear taps and mirrored borders equal to core/resample's */
  int bad = 0;
  for (int in = 1; in < 60; in += 3)
    for (int out = 1; out < 700; out += 37)
      for (int i = 0; i < out; i++) {
        int a0, a1, b0, b1;
        float wa, wb;
        fap_bilinear_coord(i, in, out, &a0, &a1, &wa);
        fap_bilinear_tap(i, in, out, &b0, &b1, &wb);
        bad += a0 != b0 || a1 != b1 || wa != wb;
      }
  for (int n = 1; n < 40; n++)
    for (int i = -200; i < 200; i++)
      bad += fap_mirror(i, n) != fap_mirror_index(i, n);
  CHECK(bad == 0, "%d bilinear taps or mirrored indices differ from core/resample", bad);
}

/* ---- frames -------------------------------------------------------------------------- */

typedef struct {
  fap_frame f;
  uint8_t *p[3];
} owned;

static owned random_frame(fap_pixel_format fmt, int w, int h) {
  owned o;
  memset(&o, 0, sizeof o);
  o.f.format = fmt;
  o.f.width = w;
  o.f.height = h;
  const int cw = (w + 1) / 2, ch = (h + 1) / 2;
  size_t sizes[3] = {0, 0, 0};
  if (fmt <= FAP_PIXEL_XBGR)
    o.f.stride = (size_t)w * (fmt <= FAP_PIXEL_BGR ? 3 : 4) + 3;
  else if (fmt == FAP_PIXEL_YUY2)
    o.f.stride = 4 * (size_t)cw + 1;
  else
    o.f.stride = (size_t)w + 5;
  sizes[0] = o.f.stride * h;
  if (fmt == FAP_PIXEL_NV12 || fmt == FAP_PIXEL_I420) {
    o.f.plane_stride[0] = (fmt == FAP_PIXEL_NV12 ? 2 * (size_t)cw : (size_t)cw) + 3;
    sizes[1] = o.f.plane_stride[0] * ch;
    if (fmt == FAP_PIXEL_I420) {
      o.f.plane_stride[1] = (size_t)cw;
      sizes[2] = o.f.plane_stride[1] * ch;
    }
  }
  for (int p = 0; p < 3; p++) {
    if (!sizes[p])
      continue;
    o.p[p] = malloc(sizes[p]);
    /* smooth content (so the map has structure) plus noise */
    for (size_t i = 0; i < sizes[p]; i++)
      o.p[p][i] = (uint8_t)(128 + 90 * sin(0.05 * (double)i + p) + (rnd() % 17));
  }
  o.f.data = o.p[0];
  o.f.plane[0] = o.p[1];
  o.f.plane[1] = o.p[2];
  return o;
}

static owned copy_frame(const owned *src) {
  owned o = *src;
  for (int p = 0; p < 3; p++) {
    size_t n = fap_frame_plane_bytes(&src->f, p);
    if (!src->p[p] || !n)
      continue;
    o.p[p] = malloc(n);
    memcpy(o.p[p], src->p[p], n);
  }
  o.f.data = o.p[0];
  o.f.plane[0] = o.p[1];
  o.f.plane[1] = o.p[2];
  return o;
}

static void free_owned(owned *o) {
  for (int p = 0; p < 3; p++)
    free(o->p[p]);
}

static int same_bytes(const owned *a, const owned *b) {
  for (int p = 0; p < 3; p++) {
    size_t n = fap_frame_plane_bytes(&a->f, p);
    if (n && memcmp(a->p[p], b->p[p], n))
      return 0;
  }
  return 1;
}

static void expect_error(fap_status s, const char *phrase, const char *what) {
  CHECK(s == FAP_ERR_INVALID_ARGUMENT || s == FAP_ERR_UNSUPPORTED, "%s: status %s", what,
        fap_status_string(s));
  CHECK(n_errors == 1, "%s: %d messages logged", what, n_errors);
  CHECK(strstr(last_error, phrase) != NULL, "%s: \"%s\" lacks \"%s\"", what, last_error, phrase);
}

static void validation(fap_detector *d) {
  fap_result r;
  owned o = random_frame(FAP_PIXEL_NV12, 31, 17);
  fap_frame f = o.f;
  f.plane[0] = NULL;
  n_errors = 0;
  expect_error(fap_detector_run(d, &f, &r), "plane[0]", "NV12 without its UV plane");
  f = o.f;
  f.plane_stride[0] = 31; /* needs 2 * 16 = 32 */
  n_errors = 0;
  expect_error(fap_detector_run(d, &f, &r), "stride 31 of plane 1", "short UV stride");
  f = o.f;
  f.stride = 30;
  n_errors = 0;
  expect_error(fap_detector_run(d, &f, &r), "stride 30 of plane 0", "short Y stride");
  f = o.f;
  f.matrix = (fap_yuv_matrix)5;
  n_errors = 0;
  expect_error(fap_detector_run(d, &f, &r), "YUV matrix 5", "unknown matrix");
  free_owned(&o);
  o = random_frame(FAP_PIXEL_YUY2, 31, 17);
  f = o.f;
  f.stride = 63; /* 16 pairs of 4 bytes */
  n_errors = 0;
  expect_error(fap_detector_run(d, &f, &r), "stride 63", "short YUY2 stride");
  free_owned(&o);
  fap_blend bad;
  fap_blend_init(&bad);
  bad.opacity = 1.5f;
  o = random_frame(FAP_PIXEL_RGB, 20, 20);
  n_errors = 0;
  expect_error(fap_detector_run_batch(d, &o.f, 1, &bad, &r), "opacity", "opacity 1.5");
  n_errors = 0;
  expect_error(fap_detector_run_batch(d, &o.f, 0, NULL, &r), "0 frames", "0 frames");
  free_owned(&o);
}

/* YUV frames give what their RGB conversion gives, bit for bit */
static void yuv_frames(fap_detector *d) {
  const int dims[][2] = {{64, 48}, {33, 21}, {1, 1}};
  for (int di = 0; di < 3; di++)
    for (int fmt = FAP_PIXEL_NV12; fmt <= FAP_PIXEL_YUY2; fmt++)
      for (int mat = 0; mat < 2; mat++) {
        owned o = random_frame((fap_pixel_format)fmt, dims[di][0], dims[di][1]);
        o.f.matrix = (fap_yuv_matrix)mat;
        o.f.full_range = mat;
        const int w = o.f.width, h = o.f.height, size = fap_detector_image_size(d);
        uint8_t *rgb = malloc((size_t)w * h * 3);
        fap_frame_to_rgb(&o.f, rgb);
        fap_frame fr = {FAP_PIXEL_RGB, w, h, (size_t)w * 3, rgb};
        fap_result a, b;
        fap_status s = fap_detector_run(d, &o.f, &a);
        CHECK(s == FAP_OK, "%s run: %s", fap_pixel_format_name(o.f.format), last_error);
        float *map = malloc((size_t)size * size * sizeof(float));
        memcpy(map, a.map, (size_t)size * size * sizeof(float));
        float score = a.score;
        s = fap_detector_run(d, &fr, &b);
        CHECK(s == FAP_OK && score == b.score &&
                  !memcmp(map, b.map, (size_t)size * size * sizeof(float)),
              "%s %dx%d differs from its RGB conversion", fap_pixel_format_name(o.f.format), w, h);
        free(map);
        free(rgb);
        free_owned(&o);
      }
}

static void batches(fap_model *m) {
  fap_detector_options o;
  fap_detector_options_init(&o);
  o.backend = FAP_BACKEND_CPU;
  o.precision = FAP_PRECISION_F32;
  o.threads = 2;
  o.batch = 4;
  fap_detector *d = NULL, *one = NULL;
  CHECK(fap_detector_new(m, &o, &d) == FAP_OK, "batch 4: %s", last_error);
  CHECK(fap_detector_batch(d) == 4 && fap_detector_precision(d) == FAP_PRECISION_F32,
        "batch %d precision %s", fap_detector_batch(d),
        fap_precision_name(fap_detector_precision(d)));
  o.batch = 0;
  CHECK(fap_detector_new(m, &o, &one) == FAP_OK && fap_detector_batch(one) == 1, "batch 0 -> 1");
  const fap_pixel_format fmts[4] = {FAP_PIXEL_BGRA, FAP_PIXEL_I420, FAP_PIXEL_RGB,
                                    FAP_PIXEL_YUY2};
  const int dims[4][2] = {{50, 40}, {37, 29}, {90, 70}, {45, 45}};
  owned fr[4];
  fap_frame frames[4];
  for (int i = 0; i < 4; i++) {
    fr[i] = random_frame(fmts[i], dims[i][0], dims[i][1]);
    frames[i] = fr[i].f;
  }
  fap_result rb[4];
  CHECK(fap_detector_run_batch(d, frames, 4, NULL, rb) == FAP_OK, "batch run: %s", last_error);
  const int size = fap_detector_image_size(d);
  const size_t s2 = (size_t)size * size;
  for (int i = 0; i < 4; i++) {
    fap_result r1;
    CHECK(fap_detector_run(one, &frames[i], &r1) == FAP_OK, "single run");
    CHECK(r1.score == rb[i].score && !memcmp(r1.map, rb[i].map, s2 * sizeof(float)),
          "frame %d of a CPU batch differs from its single run", i);
  }
  /* drawing: the run's blend equals fap_blend_frame on the result's map */
  owned copies[4];
  for (int i = 0; i < 4; i++)
    copies[i] = copy_frame(&fr[i]);
  const fap_blend blend = {0.7f, 0.1f, 0.0f, 1.0f};
  CHECK(fap_detector_run_batch(d, frames, 4, &blend, rb) == FAP_OK, "blend run: %s", last_error);
  for (int i = 0; i < 4; i++) {
    CHECK(fap_blend_frame(&copies[i].f, rb[i].map, rb[i].map_size, &blend) == FAP_OK,
          "fap_blend_frame");
    CHECK(same_bytes(&fr[i], &copies[i]), "frame %d: drawing in the run differs", i);
    owned again = copy_frame(&copies[i]);
    const fap_blend none = {0.0f, 0.0f, 0.0f, 1.0f};
    fap_blend_frame(&again.f, rb[i].map, rb[i].map_size, &none);
    CHECK(same_bytes(&again, &copies[i]), "opacity 0 changed frame %d", i);
    free_owned(&again);
    free_owned(&copies[i]);
  }
  fap_result r5[5];
  fap_frame five[5] = {frames[0], frames[1], frames[2], frames[3], frames[0]};
  n_errors = 0;
  expect_error(fap_detector_run_batch(d, five, 5, NULL, r5), "1 .. 4", "5 frames, batch 4");
  for (int i = 0; i < 4; i++)
    free_owned(&fr[i]);
  fap_detector_free(d);
  fap_detector_free(one);

  o.batch = 300;
  d = NULL;
  n_errors = 0;
  expect_error(fap_detector_new(m, &o, &d), "batch 300", "batch 300");
  o.batch = 1;
  /* (f16 on the CPU falls back to f32: tests/test_precision.c) */
  o.precision = (fap_precision)99;
  n_errors = 0;
  expect_error(fap_detector_new(m, &o, &d), "unknown precision 99", "precision 99");
  CHECK(d == NULL, "no detector on failure");
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc != 2) {
    printf("usage: %s TINY_MODEL\n", argv[0]);
    return 2;
  }
  fap_set_log_callback(capture, NULL);
  yuv_math();
  blend_math();
  fap_model *m = NULL;
  if (fap_model_load(argv[1], &m) != FAP_OK) {
    printf("cannot load %s: %s\n", argv[1], last_error);
    return 1;
  }
  fap_detector_options o;
  fap_detector_options_init(&o);
  o.backend = FAP_BACKEND_CPU;
  o.precision = FAP_PRECISION_F32;
  o.threads = 2;
  fap_detector *d = NULL;
  if (fap_detector_new(m, &o, &d) != FAP_OK) {
    printf("detector: %s\n", last_error);
    return 1;
  }
  validation(d);
  yuv_frames(d);
  fap_detector_free(d);
  batches(m);
  fap_model_free(m);
  printf("%s: %d failure%s\n", failures ? "FAILED" : "passed", failures, failures == 1 ? "" : "s");
  return failures ? 1 : 0;
}
