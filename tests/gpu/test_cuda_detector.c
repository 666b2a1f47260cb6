/* The whole detector on the CUDA backend against the CPU backend (fp32,
 * OpenBLAS), on the tiny random models and optionally the full-size one.
 *
 * AnomalyCLIP models run the same checks through the op table (the CUDA
 * backend's frame program is FAPrompt's).
 *
 * Built twice: against the device (suite 'gpu'; exits 77, "skipped", where
 * no CUDA device is usable) and against the host kernel emulator (suite
 * 'emu', runs everywhere). Per model and precision:
 *   map  max |cuda - cpu| <= 1e-2, score |cuda - cpu| <= 5e-3 (docs/SPEC.md,
 *        Tolerances, reduced precision; f16 and bf16 alike on the tiny
 *        models; with --full, f16 is held to it and bf16 reported, run.sh's
 *        summary judges it); every
 *        other intermediate is printed with its error for the record.
 * Then: a batch of frames of different formats (packed, NV12, I420, YUY2) and
 * sizes gives each frame the result it gets alone (maps within 2e-3: a batch
 * changes the shapes of the matrix products); YUV frames match the CPU path
 * (which converts them on the host); the heatmap drawn on the device equals
 * fap_blend_frame() on the host byte for byte; graph replays repeat the first
 * (eager) run bit for bit; hostile cases (device id out of range, f32 on
 * CUDA, too many frames, running out of device memory) fail with a clear
 * status and message and leave no crash behind.
 *
 * usage: test_cuda_detector [--full MODEL]... TINY_MODEL...
 * (several --full: e.g. the FAPrompt and the AnomalyCLIP full-size models)
 */
#include "fap.h"

#include "backend.h"
#include "backend_trace.h"
#include "detector_internal.h"
#include "fap_kernels.h"
#include "pixel.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* ---- frames ----------------------------------------------------------------------- */

static uint32_t rng_state = 12345;
static uint32_t rnd(void) {
  rng_state = rng_state * 1664525u + 1013904223u;
  return rng_state >> 8;
}

/* smooth gradients, two bright blobs, noise: a test image [h, w, 3] */
static uint8_t *make_rgb(int w, int h, int seed) {
  uint8_t *rgb = malloc((size_t)w * h * 3);
  rng_state = (uint32_t)seed * 2654435761u + 1;
  const float bx = (float)(rnd() % 1000) / 1000.0f * w, by = (float)(rnd() % 1000) / 1000.0f * h;
  const float r = 0.15f * (w < h ? w : h) + 1.0f;
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      const float u = (float)x / (w > 1 ? w - 1 : 1), v = (float)y / (h > 1 ? h - 1 : 1);
      const float blob = 140.0f * expf(-((x - bx) * (x - bx) + (y - by) * (y - by)) / (2 * r * r));
      const float base[3] = {50 + 120 * u, 70 + 100 * v, 100 + 60 * sinf(6.28f * (u + v))};
      for (int c = 0; c < 3; c++) {
        float val = base[c] + blob * (c == seed % 3 ? 1.0f : 0.3f) + (float)(rnd() % 13) - 6.0f;
        rgb[((size_t)y * w + x) * 3 + c] = (uint8_t)(val < 0 ? 0 : val > 255 ? 255 : val);
      }
    }
  return rgb;
}

typedef struct {
  fap_frame frame;
  uint8_t *buf[3];
} test_frame;

static void free_frame(test_frame *t) {
  for (int i = 0; i < 3; i++)
    free(t->buf[i]);
}

/* the RGB image in `format`, rows padded with junk */
static test_frame make_frame(const uint8_t *rgb, int w, int h, fap_pixel_format format) {
  test_frame t;
  memset(&t, 0, sizeof t);
  fap_frame *f = &t.frame;
  f->format = format;
  f->width = w;
  f->height = h;
  const int cw = (w + 1) / 2, ch = (h + 1) / 2;
  if (format <= FAP_PIXEL_XBGR) {
    static const int lay[][4] = {{3, 0, 1, 2}, {3, 2, 1, 0}, {4, 0, 1, 2}, {4, 2, 1, 0},
                                 {4, 0, 1, 2}, {4, 2, 1, 0}, {4, 1, 2, 3}, {4, 3, 2, 1}};
    const int *l = lay[format];
    f->stride = (size_t)w * l[0] + 7;
    t.buf[0] = malloc(f->stride * h);
    memset(t.buf[0], 0xA5, f->stride * h);
    for (int y = 0; y < h; y++)
      for (int x = 0; x < w; x++)
        for (int c = 0; c < 3; c++)
          t.buf[0][y * f->stride + (size_t)x * l[0] + l[c + 1]] = rgb[((size_t)y * w + x) * 3 + c];
    f->data = t.buf[0];
    return t;
  }
  /* YUV: BT.601 limited range from the RGB, chroma of the top-left pixel */
  fap_rgb2yuv k;
  fap_yuv_coefficients(0, 0, NULL, &k);
  uint8_t *Y = NULL, *U = NULL, *V = NULL;
  size_t sy, su, sv;
  if (format == FAP_PIXEL_YUY2) {
    f->stride = 4 * (size_t)cw + 5;
    t.buf[0] = calloc(f->stride, h);
  } else {
    f->stride = (size_t)w + 3;
    t.buf[0] = calloc(f->stride, h);
    f->plane_stride[0] = (format == FAP_PIXEL_NV12 ? 2 * (size_t)cw : (size_t)cw) + 9;
    t.buf[1] = calloc(f->plane_stride[0], ch);
    if (format == FAP_PIXEL_I420) {
      f->plane_stride[1] = (size_t)cw + 1;
      t.buf[2] = calloc(f->plane_stride[1], ch);
    }
  }
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      uint8_t yuv[3];
      fap_rgb_to_yuv(&k, rgb + ((size_t)y * w + x) * 3, yuv);
      if (format == FAP_PIXEL_YUY2) {
        uint8_t *pair = t.buf[0] + y * f->stride + 4 * (size_t)(x / 2);
        pair[2 * (x & 1)] = yuv[0];
        if (!(x & 1))
          pair[1] = yuv[1], pair[3] = yuv[2];
        continue;
      }
      t.buf[0][y * f->stride + x] = yuv[0];
      if ((x & 1) || (y & 1))
        continue;
      if (format == FAP_PIXEL_NV12) {
        uint8_t *uv = t.buf[1] + (y / 2) * f->plane_stride[0] + 2 * (size_t)(x / 2);
        uv[0] = yuv[1];
        uv[1] = yuv[2];
      } else {
        t.buf[1][(y / 2) * f->plane_stride[0] + x / 2] = yuv[1];
        t.buf[2][(y / 2) * f->plane_stride[1] + x / 2] = yuv[2];
      }
    }
  (void)Y, (void)U, (void)V, (void)sy, (void)su, (void)sv;
  f->data = t.buf[0];
  f->plane[0] = t.buf[1];
  f->plane[1] = t.buf[2];
  return t;
}

/* ---- comparisons --------------------------------------------------------------------- */

static double max_abs(const float *a, const float *b, size_t n, double *max_ref) {
  double e = 0, m = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    if (!(d <= e))
      e = isnan(d) ? INFINITY : d;
    m = fmax(m, fabs(b[i]));
  }
  if (max_ref)
    *max_ref = m;
  (void)m;
  return e;
}

/* wrap (may be NULL): fap_detector_new_wrapped's, e.g. the op recorder */
static fap_detector *new_detector_wrapped(fap_model *m, fap_backend_kind kind, fap_precision prec,
                                          int size, int batch, int keep, fap_backend_wrap_fn wrap,
                                          void *wrap_data) {
  fap_detector_options o;
  fap_detector_options_init(&o);
  o.backend = kind;
  o.precision = prec;
  o.image_size = size;
  o.batch = batch;
  o.keep_intermediates = keep;
  o.threads = 0;
  fap_detector *d = NULL;
  fap_status s = fap_detector_new_wrapped(m, &o, wrap, wrap_data, &d);
  CHECK(s == FAP_OK, "fap_detector_new (%s, %s): %s: %s", fap_backend_name(kind),
        fap_precision_name(prec), fap_status_string(s), last_error);
  return d;
}

static fap_detector *new_detector(fap_model *m, fap_backend_kind kind, fap_precision prec,
                                  int size, int batch, int keep) {
  return new_detector_wrapped(m, kind, prec, size, batch, keep, NULL, NULL);
}


/* CUDA vs CPU on one frame; prints every intermediate's error */
/* enforce = 0: the errors are printed and judged by tests/gpu/run.sh's
 * summary (full-size bf16: a target, not a test of correctness) */
static void parity(fap_model *m, const char *label, fap_precision prec, int size,
                   const test_frame *tf, int enforce) {
  fap_detector *cpu = new_detector(m, FAP_BACKEND_CPU, FAP_PRECISION_F32, size, 1, 1);
  fap_detector *gpu = new_detector(m, FAP_BACKEND_CUDA, prec, size, 1, 1);
  if (!cpu || !gpu)
    goto done;
  fap_result rc, rg;
  fap_status s = fap_detector_run(cpu, &tf->frame, &rc);
  CHECK(s == FAP_OK, "cpu run: %s", last_error);
  s = fap_detector_run(gpu, &tf->frame, &rg);
  CHECK(s == FAP_OK, "cuda run: %s", last_error);
  if (s)
    goto done;
  printf("%s %s (%s, S=%d): score cpu %.6f cuda %.6f\n", label,
         fap_pixel_format_name(tf->frame.format), fap_precision_name(prec), size, rc.score,
         rg.score);
  /* every f32 intermediate of the model's family (FAPrompt or AnomalyCLIP) */
  const char *const *compared = fap_detector_intermediate_names(cpu);
  for (int i = 0; compared[i]; i++) {
    fap_tensor_view a, b;
    if (strcmp(compared[i], "topk_index") == 0)
      continue;
    if (fap_detector_intermediate(gpu, compared[i], &a) ||
        fap_detector_intermediate(cpu, compared[i], &b)) {
      CHECK(0, "intermediate %s missing", compared[i]);
      continue;
    }
    size_t n = 1;
    for (int k = 0; k < a.ndim; k++)
      n *= (size_t)a.shape[k];
    double mref, err = max_abs(a.data, b.data, n, &mref);
    printf("  %-22s max|cpu| %9.4g  max err %9.3g  (relative %.2e)\n", compared[i], mref, err,
           err / fmax(mref, 1e-30));
  }
  fap_tensor_view ta, tb;
  if (!fap_detector_intermediate(gpu, "topk_index", &ta) &&
      !fap_detector_intermediate(cpu, "topk_index", &tb)) {
    int same = memcmp(ta.data, tb.data, (size_t)ta.shape[0] * 4) == 0;
    printf("  topk_index             %s\n", same ? "identical" : "DIFFERS (near-ties)");
  }
  double map_err = max_abs(rg.map, rc.map, (size_t)size * size, NULL);
  double score_err = fabs((double)rg.score - rc.score);
  if (enforce) {
    CHECK(map_err <= 1e-2, "%s %s: map error %.3g > 1e-2", label, fap_precision_name(prec),
          map_err);
    CHECK(score_err <= 5e-3, "%s %s: score error %.3g > 5e-3", label, fap_precision_name(prec),
          score_err);
  } else if (map_err > 1e-2 || score_err > 5e-3) {
    printf("  (%s %s misses the target: map %.3g > 1e-2 or score %.3g > 5e-3)\n", label,
           fap_precision_name(prec), map_err, score_err);
  }
done:
  fap_detector_free(cpu);
  fap_detector_free(gpu);
}

/* The descriptions a frame trace holds: the text after each
 * "frames_pass N describe=1" up to the next frames_pass line. */
static int descriptions(const char *trace, const char *out[4], size_t len[4]) {
  int n = 0;
  for (const char *p = trace; (p = strstr(p, "frames_pass ")) && n < 4;) {
    const char *eol = strchr(p, '\n');
    if (!eol)
      break;
    const int asked = strncmp(eol - 10, "describe=1", 10) == 0;
    p = eol + 1;
    if (!asked)
      continue;
    const char *end = strstr(p, "frames_pass ");
    out[n] = p;
    len[n++] = end ? (size_t)(end - p) : strlen(p);
  }
  return n;
}

/* The op sequence each backend runs for the same model and frame (names and
 * shapes, tests/gpu/backend_trace.c): at creation identical; per frame, both backends
 * get the detector's one description of the frame: the CPU computes it once
 * per frame, the CUDA backend records it on its first frame (an eager pass,
 * then the capture pass: the same description twice) and replays it on the
 * next without asking again. */
static void op_sequences(fap_model *m, int size, const test_frame *tf) {
  const int family = fap_model_config(m)->family;
  GString *logs[2];
  for (int k = 0; k < 2; k++) {
    logs[k] = g_string_new(NULL);
    fap_detector *d = new_detector_wrapped(m, k ? FAP_BACKEND_CUDA : FAP_BACKEND_CPU,
                                           k ? FAP_PRECISION_F16 : FAP_PRECISION_F32, size, 1, 0,
                                           fap_backend_trace_wrap, logs[k]);
    if (!d)
      return;
    fap_result r;
    for (int run = 0; run < 2; run++) {
      g_string_append_printf(logs[k], "=== frame %d\n", run);
      CHECK(fap_detector_run(d, &tf->frame, &r) == FAP_OK, "traced run: %s", last_error);
    }
    fap_detector_free(d);
  }
  const char *cut[2] = {strstr(logs[0]->str, "=== frame 0\n"),
                        strstr(logs[1]->str, "=== frame 0\n")};
  const char *second[2] = {strstr(logs[0]->str, "=== frame 1\n"),
                           strstr(logs[1]->str, "=== frame 1\n")};
  if (!cut[0] || !cut[1] || !second[0] || !second[1]) {
    CHECK(0, "traces without their frames");
    goto done;
  }
  const size_t create[2] = {(size_t)(cut[0] - logs[0]->str), (size_t)(cut[1] - logs[1]->str)};
  CHECK(create[0] == create[1] && memcmp(logs[0]->str, logs[1]->str, create[0]) == 0,
        "%s: the CPU and CUDA backends run different ops at creation", fap_family_name(family));
  const char *d0[4], *d1[4], *d2[4];
  size_t l0[4], l1[4], l2[4];
  const int n_cpu = descriptions(cut[0], d0, l0);
  const int n_cuda_first = descriptions(cut[1], d1, l1); /* both runs' */
  const int n_cuda_second = descriptions(second[1], d2, l2);
  CHECK(n_cpu == 2, "the CPU was asked for %d descriptions in two frames, not one each", n_cpu);
  CHECK(n_cuda_first == 2 && n_cuda_second == 0,
        "CUDA: %d descriptions in two frames, %d in the second; expected 2 in the first "
        "(eager, capture) and none in the second (replayed)",
        n_cuda_first, n_cuda_second);
  int lines = 0;
  for (size_t i = 0; n_cpu > 0 && i < l0[0]; i++)
    lines += d0[0][i] == '\n';
  CHECK(n_cpu > 0 && strstr(cut[0], "\nlinear ") && lines > 20,
        "the CPU frame description is too short (%d ops)", lines);
  for (int i = 0; i < n_cuda_first && n_cpu > 0; i++)
    CHECK(l1[i] == l0[0] && memcmp(d1[i], d0[0], l0[0]) == 0,
          "%s: CUDA's description %d of the frame differs from the CPU's", fap_family_name(family),
          i);
  printf("op sequences (%s): creation identical (%zu bytes of trace); frame: one description "
         "(%d ops), computed by the CPU, recorded by CUDA (eager + capture) and replayed\n",
         fap_family_name(family), create[0], lines);
done:
  g_string_free(logs[0], TRUE);
  g_string_free(logs[1], TRUE);
}

/* frames of several formats and sizes in one batch = each alone */
static void batch_vs_single(fap_model *m, int size) {
  const fap_pixel_format formats[] = {FAP_PIXEL_BGRX, FAP_PIXEL_NV12, FAP_PIXEL_RGB,
                                      FAP_PIXEL_I420, FAP_PIXEL_YUY2};
  const int sizes[][2] = {{64, 48}, {50, 37}, {97, 61}, {33, 41}, {45, 45}};
  enum { NB = 5 };
  test_frame tf[NB];
  fap_frame frames[NB];
  for (int i = 0; i < NB; i++) {
    uint8_t *rgb = make_rgb(sizes[i][0], sizes[i][1], 40 + i);
    tf[i] = make_frame(rgb, sizes[i][0], sizes[i][1], formats[i]);
    frames[i] = tf[i].frame;
    free(rgb);
  }
  fap_detector *batch = new_detector(m, FAP_BACKEND_CUDA, FAP_PRECISION_F16, size, NB, 0);
  fap_detector *one = new_detector(m, FAP_BACKEND_CUDA, FAP_PRECISION_F16, size, 1, 0);
  fap_detector *cpu = new_detector(m, FAP_BACKEND_CPU, FAP_PRECISION_F32, size, NB, 0);
  if (!batch || !one || !cpu)
    goto done;
  fap_result rb[NB], rc[NB];
  fap_status s = fap_detector_run_batch(batch, frames, NB, NULL, rb);
  CHECK(s == FAP_OK, "batch run: %s", last_error);
  s = fap_detector_run_batch(cpu, frames, NB, NULL, rc);
  CHECK(s == FAP_OK, "cpu batch run: %s", last_error);
  if (s)
    goto done;
  const size_t s2 = (size_t)size * size;
  float *maps = malloc(NB * s2 * sizeof(float)), scores[NB];
  for (int i = 0; i < NB; i++) { /* the batch's maps stay valid until the next run */
    memcpy(maps + i * s2, rb[i].map, s2 * sizeof(float));
    scores[i] = rb[i].score;
  }
  for (int i = 0; i < NB; i++) {
    fap_result r1;
    s = fap_detector_run(one, &frames[i], &r1);
    CHECK(s == FAP_OK, "single run %d: %s", i, last_error);
    if (s)
      break;
    double e1 = max_abs(maps + i * s2, r1.map, s2, NULL);
    double ec = max_abs(maps + i * s2, rc[i].map, s2, NULL);
    printf("batch frame %d (%s %dx%d): score %.6f alone %.6f cpu %.6f; map vs alone %.3g, vs "
           "cpu %.3g\n",
           i, fap_pixel_format_name(formats[i]), sizes[i][0], sizes[i][1], scores[i], r1.score,
           rc[i].score, e1, ec);
    CHECK(e1 <= 2e-3 && fabsf(scores[i] - r1.score) <= 1e-3, "frame %d: batch differs from alone",
          i);
    CHECK(ec <= 1e-2 && fabsf(scores[i] - rc[i].score) <= 5e-3, "frame %d: batch vs cpu", i);
  }
  free(maps);
done:
  fap_detector_free(batch);
  fap_detector_free(one);
  fap_detector_free(cpu);
  for (int i = 0; i < NB; i++)
    free_frame(&tf[i]);
}

/* One batch detector fed as a shared element instance feeds it: batches of
 * both orders and of one frame, in turn (each change of geometry or count
 * records the description again, each repeat replays it), every frame held
 * against the CPU on that frame. */
static void changing_batches(fap_model *m, int size) {
  const int w[2] = {64, 40}, h[2] = {48, 30};
  const fap_pixel_format fmt[2] = {FAP_PIXEL_NV12, FAP_PIXEL_RGBA};
  fap_detector *gpu = new_detector(m, FAP_BACKEND_CUDA, FAP_PRECISION_F16, size, 2, 0);
  fap_detector *cpu = new_detector(m, FAP_BACKEND_CPU, FAP_PRECISION_F32, size, 1, 0);
  const size_t s2 = (size_t)size * size;
  float *ref = malloc(2 * s2 * sizeof(float));
  /* which frames each run takes: count, then the geometries (0: NV12, 1: RGBA) */
  static const int runs[][3] = {{2, 0, 1}, {2, 0, 1}, {2, 1, 0}, {1, 1, 0}, {1, 1, 0},
                                {2, 0, 1}};
  double worst = 0;
  for (size_t k = 0; gpu && cpu && k < sizeof runs / sizeof runs[0]; k++) {
    const int count = runs[k][0];
    test_frame tf[2];
    fap_frame fr[2];
    for (int i = 0; i < count; i++) { /* new pixels every run: a replay must follow them */
      const int g = runs[k][1 + i];
      uint8_t *rgb = make_rgb(w[g], h[g], 21 + 7 * (int)k + i);
      tf[i] = make_frame(rgb, w[g], h[g], fmt[g]);
      fr[i] = tf[i].frame;
      free(rgb);
    }
    fap_result r[2];
    fap_status s = fap_detector_run_batch(gpu, fr, count, NULL, r);
    CHECK(s == FAP_OK, "run %zu: %s", k, last_error);
    float score[2] = {0, 0};
    for (int i = 0; !s && i < count; i++) { /* borrowed until the next run */
      memcpy(ref + i * s2, r[i].map, s2 * sizeof(float));
      score[i] = r[i].score;
    }
    for (int i = 0; !s && i < count; i++) {
      fap_result rc;
      CHECK(fap_detector_run(cpu, &fr[i], &rc) == FAP_OK, "cpu run: %s", last_error);
      const double e = max_abs(ref + i * s2, rc.map, s2, NULL);
      worst = fmax(worst, e);
      CHECK(e <= 1e-2 && fabsf(score[i] - rc.score) <= 5e-3,
            "run %zu frame %d (%s): map %.3g, score %.6f vs cpu %.6f", k, i,
            fap_pixel_format_name(fmt[runs[k][1 + i]]), e, score[i], rc.score);
    }
    for (int i = 0; i < count; i++)
      free_frame(&tf[i]);
  }
  printf("changing batches (NV12 64x48, RGBA 40x30; 2, 2 again, swapped, 1, 1 again, 2; new "
         "pixels each run): map vs cpu <= %.3g\n",
         worst);
  fap_detector_free(gpu);
  fap_detector_free(cpu);
  free(ref);
}

/* the device's drawing equals the host's on the same map; repeated runs
 * (graph replays) equal the first */
static void blend_and_replay(fap_model *m, int size) {
  const fap_pixel_format formats[] = {FAP_PIXEL_RGBA, FAP_PIXEL_NV12, FAP_PIXEL_YUY2,
                                      FAP_PIXEL_I420, FAP_PIXEL_BGR};
  fap_detector *d = new_detector(m, FAP_BACKEND_CUDA, FAP_PRECISION_F16, size, 2, 0);
  if (!d)
    return;
  const fap_blend blend = {0.6f, 0.05f, 0.0f, 1.0f};
  for (int fi = 0; fi < 5; fi++) {
    uint8_t *rgb = make_rgb(71, 53, 60 + fi);
    test_frame a = make_frame(rgb, 71, 53, formats[fi]), b = make_frame(rgb, 71, 53, formats[fi]);
    free(rgb);
    fap_frame fr[2] = {a.frame, a.frame};
    fap_result r[2];
    test_frame a2 = make_frame(rgb = make_rgb(71, 53, 60 + fi), 71, 53, formats[fi]);
    free(rgb);
    fr[1] = a2.frame;
    fap_status s = fap_detector_run_batch(d, fr, 2, &blend, r);
    CHECK(s == FAP_OK, "blend run: %s", last_error);
    if (!s) {
      /* host drawing of frame 0's map into an untouched copy */
      s = fap_blend_frame(&b.frame, r[0].map, r[0].map_size, &blend);
      CHECK(s == FAP_OK, "fap_blend_frame: %s", last_error);
      size_t diff = 0, changed = 0, total = 0;
      for (int p = 0; p < 3; p++) {
        if (!a.buf[p])
          continue;
        size_t bytes = p == 0 ? a.frame.stride * a.frame.height
                              : a.frame.plane_stride[p - 1] * ((a.frame.height + 1) / 2);
        test_frame orig = make_frame(rgb = make_rgb(71, 53, 60 + fi), 71, 53, formats[fi]);
        free(rgb);
        for (size_t i = 0; i < bytes; i++) {
          diff += a.buf[p][i] != b.buf[p][i];
          changed += a.buf[p][i] != orig.buf[p][i];
        }
        total += bytes;
        free_frame(&orig);
      }
      printf("blend %s: %zu of %zu bytes drawn, %zu differ from the host drawing\n",
             fap_pixel_format_name(formats[fi]), changed, total, diff);
      CHECK(diff == 0, "blend %s: device and host drawings differ in %zu bytes",
            fap_pixel_format_name(formats[fi]), diff);
      CHECK(changed > 0, "blend %s: nothing was drawn", fap_pixel_format_name(formats[fi]));
    }
    free_frame(&a);
    free_frame(&a2);
    free_frame(&b);
  }
  /* replays: same frame three times, bit-identical results */
  uint8_t *rgb = make_rgb(80, 60, 77);
  test_frame t = make_frame(rgb, 80, 60, FAP_PIXEL_RGB);
  free(rgb);
  const size_t s2 = (size_t)size * size;
  float *first = malloc(s2 * sizeof(float));
  float score0 = 0;
  for (int rep = 0; rep < 3; rep++) {
    fap_result r;
    fap_status s = fap_detector_run(d, &t.frame, &r);
    CHECK(s == FAP_OK, "replay %d: %s", rep, last_error);
    if (s)
      break;
    if (rep == 0) {
      memcpy(first, r.map, s2 * sizeof(float));
      score0 = r.score;
    } else {
      CHECK(memcmp(first, r.map, s2 * sizeof(float)) == 0 && r.score == score0,
            "run %d (graph replay) differs from the first (eager) run", rep);
    }
  }
  free(first);
  free_frame(&t);
  fap_detector_free(d);
}

/* ---- frames in CUDA memory ------------------------------------------------------------- */

/* the plane sizes of a test frame (rows * stride) */
static size_t plane_bytes(const test_frame *t, int p) {
  if (!t->buf[p])
    return 0;
  return p == 0 ? t->frame.stride * t->frame.height
                : t->frame.plane_stride[p - 1] * ((t->frame.height + 1) / 2);
}

/* a device copy of a host test frame (same strides): memory = FAP_MEMORY_CUDA */
static fap_frame to_device(const test_frame *t, void *dev[3]) {
  fap_frame f = t->frame;
  for (int p = 0; p < 3; p++) {
    dev[p] = NULL;
    const size_t n = plane_bytes(t, p);
    if (!n)
      continue;
    CHECK(fap_rt_malloc(&dev[p], n) == 0, "device plane %d", p);
    CHECK(fap_rt_h2d(dev[p], t->buf[p], n, NULL) == 0 && fap_rt_stream_sync(NULL) == 0,
          "plane upload");
  }
  f.data = dev[0];
  f.plane[0] = dev[1];
  f.plane[1] = dev[2];
  f.memory = FAP_MEMORY_CUDA;
  return f;
}

/* bytes of the device copy that differ from host frame t */
static size_t device_diff(const test_frame *t, void *dev[3]) {
  size_t diff = 0;
  for (int p = 0; p < 3; p++) {
    const size_t n = plane_bytes(t, p);
    if (!n)
      continue;
    uint8_t *back = malloc(n);
    fap_rt_d2h(back, dev[p], n, NULL);
    fap_rt_stream_sync(NULL);
    for (size_t i = 0; i < n; i++)
      diff += back[i] != t->buf[p][i];
    free(back);
  }
  return diff;
}

/* A frame already on the device (GStreamer's memory:CUDAMemory) runs and is
 * drawn where it is: the same result and pixels as its host twin in the same
 * batch, and no pixel crosses (the result's counters say 0 bytes; the host
 * twin's say its planes went up and came back). A reused result is drawn on
 * the device with fap_detector_draw exactly as fap_blend_frame draws it. */
static void device_frames(fap_model *m, int size) {
  const fap_pixel_format formats[] = {FAP_PIXEL_NV12, FAP_PIXEL_I420, FAP_PIXEL_RGBA,
                                      FAP_PIXEL_BGRX};
  fap_detector *d = new_detector(m, FAP_BACKEND_CUDA, FAP_PRECISION_F16, size, 2, 0);
  fap_detector *cpu = new_detector(m, FAP_BACKEND_CPU, FAP_PRECISION_F32, size, 1, 0);
  if (!d || !cpu)
    goto done;
  const fap_blend blend = {0.7f, 0.05f, 0.0f, 1.0f};
  for (size_t fi = 0; fi < sizeof formats / sizeof formats[0]; fi++) {
    uint8_t *rgb = make_rgb(67, 45, 80 + (int)fi);
    test_frame host = make_frame(rgb, 67, 45, formats[fi]), ref = make_frame(rgb, 67, 45, formats[fi]);
    test_frame ref2 = make_frame(rgb, 67, 45, formats[fi]);
    free(rgb);
    void *dev[3];
    const fap_frame dframe = to_device(&host, dev);
    const fap_frame frames[2] = {host.frame, dframe};
    fap_result r[2];
    fap_status s = fap_detector_run_batch(d, frames, 2, &blend, r);
    CHECK(s == FAP_OK, "device frame run: %s", last_error);
    if (!s) {
      const size_t planes = plane_bytes(&host, 0) + plane_bytes(&host, 1) + plane_bytes(&host, 2);
      size_t up = 0;
      for (int p = 0; p < 3; p++)
        up += host.buf[p] ? fap_frame_plane_bytes(&host.frame, p) : 0;
      CHECK(r[1].frame_bytes_to_device == 0 && r[1].frame_bytes_from_device == 0,
            "%s in CUDA memory: %zu / %zu pixel bytes crossed (want 0 / 0)",
            fap_pixel_format_name(formats[fi]), r[1].frame_bytes_to_device,
            r[1].frame_bytes_from_device);
      /* FAPrompt's frame program draws a host frame on the device in the same
       * transfer (its planes come back); the op path (AnomalyCLIP) draws it
       * on the host */
      const size_t down = fap_model_config(m)->family == FAP_FAMILY_FAPROMPT ? up : 0;
      CHECK(r[0].frame_bytes_to_device == up && r[0].frame_bytes_from_device == down,
            "%s on the host: %zu / %zu pixel bytes up / down (want %zu / %zu, frame %zu)",
            fap_pixel_format_name(formats[fi]), r[0].frame_bytes_to_device,
            r[0].frame_bytes_from_device, up, down, planes);
      CHECK(r[0].score == r[1].score, "%s: device frame score %g, host twin %g",
            fap_pixel_format_name(formats[fi]), r[1].score, r[0].score);
      const double e = max_abs(r[0].map, r[1].map, (size_t)size * size, NULL);
      CHECK(e == 0.0, "%s: device frame map differs from its host twin by %g",
            fap_pixel_format_name(formats[fi]), e);
      /* drawn in place on the device, as the host twin was */
      const size_t diff = device_diff(&host, dev);
      CHECK(diff == 0, "%s: the device frame was drawn differently (%zu bytes)",
            fap_pixel_format_name(formats[fi]), diff);
      /* a reused result drawn on the device == fap_blend_frame on the host */
      void *dev2[3];
      const fap_frame dframe2 = to_device(&ref, dev2);
      size_t moved = 1;
      CHECK(fap_detector_draw(d, &dframe2, r[1].map, r[1].map_size, &blend, &moved) == FAP_OK,
            "fap_detector_draw: %s", last_error);
      CHECK(moved == 0, "fap_detector_draw on a device frame moved %zu pixel bytes", moved);
      CHECK(fap_blend_frame(&ref2.frame, r[1].map, r[1].map_size, &blend) == FAP_OK,
            "fap_blend_frame");
      size_t drawn = 0; /* ref stayed as made: the comparison below is not vacuous */
      for (int p = 0; p < 3; p++)
        for (size_t k = 0; k < plane_bytes(&ref, p); k++)
          drawn += ref.buf[p][k] != ref2.buf[p][k];
      CHECK(drawn > 0, "%s: fap_blend_frame drew nothing", fap_pixel_format_name(formats[fi]));
      const size_t diff2 = device_diff(&ref2, dev2);
      CHECK(diff2 == 0, "%s: fap_detector_draw differs from fap_blend_frame in %zu bytes",
            fap_pixel_format_name(formats[fi]), diff2);
      /* and on a host frame: up and back, the same pixels */
      test_frame h2 = make_frame(rgb = make_rgb(67, 45, 80 + (int)fi), 67, 45, formats[fi]);
      free(rgb);
      CHECK(fap_detector_draw(d, &h2.frame, r[1].map, r[1].map_size, &blend, &moved) == FAP_OK,
            "fap_detector_draw (host frame): %s", last_error);
      CHECK(moved == 2 * up, "fap_detector_draw on a host frame moved %zu bytes, want %zu", moved,
            2 * up);
      size_t hdiff = 0;
      for (int p = 0; p < 3; p++)
        for (size_t k = 0; k < plane_bytes(&h2, p); k++)
          hdiff += h2.buf[p][k] != ref2.buf[p][k];
      CHECK(hdiff == 0, "%s: fap_detector_draw of a host frame differs from fap_blend_frame in "
            "%zu bytes", fap_pixel_format_name(formats[fi]), hdiff);
      free_frame(&h2);
      /* the host cannot touch a device frame; the CPU backend refuses it */
      fap_result rc;
      last_error[0] = '\0';
      CHECK(fap_detector_run(cpu, &dframe2, &rc) == FAP_ERR_UNSUPPORTED &&
                strstr(last_error, "CUDA memory"),
            "CPU backend with a device frame: %s", last_error);
      last_error[0] = '\0';
      CHECK(fap_blend_frame(&dframe2, r[1].map, r[1].map_size, &blend) ==
                    FAP_ERR_INVALID_ARGUMENT &&
                strstr(last_error, "fap_detector_draw"),
            "fap_blend_frame with a device frame: %s", last_error);
      for (int p = 0; p < 3; p++)
        fap_rt_free(dev2[p]);
    }
    for (int p = 0; p < 3; p++)
      fap_rt_free(dev[p]);
    free_frame(&host);
    free_frame(&ref);
    free_frame(&ref2);
  }
  printf("frames in CUDA memory: run, drawn in place, 0 pixel bytes across\n");
done:
  fap_detector_free(d);
  fap_detector_free(cpu);
}

static void expect_fail(fap_status got, fap_status want, const char *phrase, const char *what) {
  CHECK(got == want, "%s: status %s, expected %s", what, fap_status_string(got),
        fap_status_string(want));
  CHECK(n_errors >= 1 && strstr(last_error, phrase), "%s: message \"%s\" lacks \"%s\"", what,
        last_error, phrase);
  printf("%s -> %s: %s\n", what, fap_status_string(got), last_error);
}

static int c_patch(fap_model *m) { return fap_model_config(m)->patch_size; }

static void hostile(fap_model *m) {
  fap_detector_options o;
  fap_detector_options_init(&o);
  o.backend = FAP_BACKEND_CUDA;
  fap_detector *d = NULL;

  o.device_id = 99;
  n_errors = 0;
  expect_fail(fap_detector_new(m, &o, &d), FAP_ERR_INVALID_ARGUMENT, "device 99",
              "device id 99");
  CHECK(d == NULL, "detector returned on failure");
  o.device_id = -1;
  n_errors = 0;
  expect_fail(fap_detector_new(m, &o, &d), FAP_ERR_INVALID_ARGUMENT, "device -1",
              "device id -1");
  o.device_id = 0;
  o.precision = FAP_PRECISION_F32;
  n_errors = 0;
  expect_fail(fap_detector_new(m, &o, &d), FAP_ERR_UNSUPPORTED, "f32", "f32 on CUDA");
  o.precision = FAP_PRECISION_AUTO;

  /* more frames than the batch */
  d = new_detector(m, FAP_BACKEND_CUDA, FAP_PRECISION_AUTO, 0, 2, 0);
  if (d) {
    uint8_t *rgb = make_rgb(20, 20, 1);
    test_frame t = make_frame(rgb, 20, 20, FAP_PIXEL_RGB);
    fap_frame fr[3] = {t.frame, t.frame, t.frame};
    fap_result r[3];
    n_errors = 0;
    expect_fail(fap_detector_run_batch(d, fr, 3, NULL, r), FAP_ERR_INVALID_ARGUMENT, "1 .. 2",
                "3 frames into a batch of 2");
    /* and the detector still works afterwards */
    CHECK(fap_detector_run_batch(d, fr, 2, NULL, r) == FAP_OK, "run after a refused call: %s",
          last_error);
    free(rgb);
    free_frame(&t);
    fap_detector_free(d);
  }

  /* out of device memory: take all but ~64 MiB, then ask for a large detector */
  size_t free_b = 0, total_b = 0;
  fap_rt_open(0, &(fap_rt_device_info){0});
  fap_rt_mem_info(&free_b, &total_b);
  void *hog = NULL;
  size_t hog_bytes = free_b > ((size_t)64 << 20) ? free_b - ((size_t)64 << 20) : 0;
  while (hog_bytes && fap_rt_malloc(&hog, hog_bytes)) /* fragmentation: back off */
    hog_bytes = hog_bytes / 8 * 7;
  printf("holding %zu MiB of %zu MiB device memory\n", hog_bytes >> 20, total_b >> 20);
  o.image_size = 80 * c_patch(m); /* 6400 patches a frame */
  o.batch = 64;
  d = NULL;
  n_errors = 0;
  fap_status s = fap_detector_new(m, &o, &d);
  if (s == FAP_OK) {
    printf("  (the detector fit into the remaining memory: no out-of-memory case here)\n");
    fap_detector_free(d);
  } else {
    /* which allocation fails first (cuBLASLt workspace, weights, arena)
     * depends on the device; the status must say it */
    expect_fail(s, FAP_ERR_NO_MEMORY, "", "detector in a full device");
  }
  fap_rt_free(hog);
  /* the device is usable again */
  o.batch = 1;
  d = NULL;
  CHECK(fap_detector_new(m, &o, &d) == FAP_OK, "detector after running out: %s", last_error);
  fap_detector_free(d);
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  fap_set_log_callback(capture, NULL);
  const char *fulls[8];
  int n_full = 0, first = 1;
  while (first + 1 < argc && strcmp(argv[first], "--full") == 0 && n_full < 8) {
    fulls[n_full++] = argv[first + 1];
    first += 2;
  }
  if (!fap_backend_cuda_available()) {
    printf("no usable CUDA device (%s): skipped\n", fap_rt_error());
    return 77;
  }
  printf("%s\n", fap_rt_is_emulated() ? "CUDA backend on the host emulator" : "CUDA device");
  for (int i = first; i < argc; i++) {
    fap_model *m = NULL;
    if (fap_model_load(argv[i], &m) != FAP_OK) {
      printf("cannot load %s: %s\n", argv[i], last_error);
      return 1;
    }
    const fap_config *c = fap_model_config(m);
    const char *base = strrchr(argv[i], '/') ? strrchr(argv[i], '/') + 1 : argv[i];
    const fap_pixel_format fmts[] = {FAP_PIXEL_RGB, FAP_PIXEL_NV12};
    for (int f = 0; f < 2; f++) {
      uint8_t *rgb = make_rgb(96, 72, 7 + i + f);
      test_frame tf = make_frame(rgb, 96, 72, fmts[f]);
      parity(m, base, FAP_PRECISION_F16, c->image_size, &tf, 1);
      if (f == 0)
        op_sequences(m, c->image_size, &tf);
      if (f == 0) {
        parity(m, base, FAP_PRECISION_BF16, c->image_size, &tf, 1);
        parity(m, base, FAP_PRECISION_F16, 2 * c->image_size, &tf, 1); /* G != G0 */
      }
      free(rgb);
      free_frame(&tf);
    }
    if (i == first) {
      batch_vs_single(m, c->image_size);
      changing_batches(m, c->image_size);
      blend_and_replay(m, c->image_size);
      device_frames(m, c->image_size);
      hostile(m);
    }
    fap_model_free(m);
  }
  for (int i = 0; i < n_full; i++) {
    const char *full = fulls[i];
    fap_model *m = NULL;
    if (fap_model_load(full, &m) != FAP_OK) {
      printf("cannot load %s: %s\n", full, last_error);
      return 1;
    }
    /* "full-size" for FAPrompt (run.sh's summary greps it), "full-size anomalyclip" else */
    const char *label = fap_model_config(m)->family == FAP_FAMILY_FAPROMPT
                            ? "full-size"
                            : "full-size anomalyclip";
    uint8_t *rgb = make_rgb(640, 480, 3);
    test_frame tf = make_frame(rgb, 640, 480, FAP_PIXEL_RGB);
    parity(m, label, FAP_PRECISION_F16, 518, &tf, 1);
    parity(m, label, FAP_PRECISION_BF16, 518, &tf, 0);
    free(rgb);
    free_frame(&tf);
    fap_model_free(m);
  }
  printf("%s: %d failure%s\n", failures ? "FAILED" : "passed", failures, failures == 1 ? "" : "s");
  return failures ? 1 : 0;
}
