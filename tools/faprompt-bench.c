/* faprompt-bench: per-stage timings, GFLOP/s and peak memory of the detector,
 * set against, in the same run, (a) OpenBLAS SGEMM alone on the vision
 * encoder's matrix shapes and (b) the same computation in PyTorch with the
 * module structure of the authors' code (tests/reference/authors_speed.py:
 * nn.MultiheadAttention, nn.Linear, their V-V Attention module; what a user
 * of their code waits for). The machines are shared and noisy, so faprompt
 * and PyTorch run in alternating rounds (A B A B ..., --rounds, a PyTorch
 * process kept running beside), and the table gives the minimum and the
 * median of each and the ratio of the minima. It prints the CPU and its ISA
 * extensions first.
 *
 *   faprompt-bench MODEL [--sizes 336,518] [--rounds 3] [--frames 3]
 *                  [--torch-frames 1] [--threads N] [--input WxH]
 *                  [--no-torch] [--reference] [--precision int8,bf16]
 *
 * --precision adds detectors in reduced precision, run in the same rounds
 * (f32, then each of them, then PyTorch), with a second table: their frame
 * and vision times, the speed-up over f32 (ratio of minima) and how far
 * their map and score are from f32's over --error-frames different frames
 * (4): the largest errors, how many frames stay within the GPU bounds (map
 * 1e-2, score 5e-3), and on how many the top-M patch order the prior reads
 * differs from f32's (a swap of near-tied patches moves A2 in a jump).
 */
#include "fap.h"
#include "datafile.h"
#include "hostinfo.h"
#include "torch_ref.h"

#ifdef FAP_HAVE_OPENBLAS
#include <cblas.h>
#endif
#include <glib.h>
#include <math.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double peak_rss_mib(int who) {
  struct rusage ru;
  getrusage(who, &ru);
  return (double)ru.ru_maxrss / 1024.0;
}

/* FLOPs of one frame's vision encoder (docs/SPEC.md section 5, exact for our schedule). */
static double vision_flops(const fap_config *c, int size, int trimmed) {
  double g = size / c->patch_size, n = g * g, r = n + 1, w = c->vision_width;
  double layer = 2 * r * w * 3 * w + 2 * r * w * w + 2 * r * w * 4 * w * 2 + 4 * r * r * w;
  double dual = 4 * r * r * w + 2 * r * w * w; /* V-V attention + its out_proj */
  /* the last layer's standard path runs for the CLS row only (vision.c) */
  double last_saved = !trimmed ? 0 : 2 * (r - 1) * w * w * 2 + 2 * (r - 1) * w * 4 * w * 2 + 4 * (r - 1) * r * w;
  return 2 * n * 3 * c->patch_size * c->patch_size * w + c->vision_layers * layer +
         (c->vision_layers - c->dual_start) * dual - last_saved;
}

/* Per-frame text work with the causal cut and cached prefix. */
static double text_flops(const fap_config *c) {
  if (c->family != FAP_FAMILY_FAPROMPT)
    return 0; /* AnomalyCLIP's text features are static: encoded once per model */
  double rows = (double)c->n_prompts * (c->end_pos_abnormal - c->n_pos), w = c->text_width;
  double keys = c->end_pos_abnormal + 1;
  return c->text_layers * (24 * rows * w * w + 4 * rows * keys * w);
}

#ifdef FAP_HAVE_OPENBLAS
/* Seconds OpenBLAS needs for the vision encoder's GEMMs alone (same shapes,
 * same threads): the bar the vision stage is measured against. One
 * measurement per round, so it is interleaved with the frames too. */
static double sgemm_alone(const fap_config *c, int size) {
  int g = size / c->patch_size, r = g * g + 1, w = c->vision_width, hd = w / c->vision_heads;
  float *a = calloc((size_t)r * 4 * w, sizeof(float)), *b = calloc((size_t)4 * w * w, sizeof(float));
  float *out = calloc((size_t)r * (r > 4 * w ? r : 4 * w), sizeof(float));
  for (size_t i = 0; i < (size_t)r * 4 * w; i++)
    a[i] = 1e-3f * (float)(i % 13);
  for (size_t i = 0; i < (size_t)4 * w * w; i++)
    b[i] = 1e-3f * (float)(i % 7);
  double best = 1e30;
  for (int rep = 0; rep < 1; rep++) {
    double t0 = now_s();
    /* one standard layer + one dual layer's extra work */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r, 3 * w, w, 1, a, w, b, w, 0, out, 3 * w);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r, w, w, 1, a, w, b, w, 0, out, w);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r, 4 * w, w, 1, a, w, b, w, 0, out, 4 * w);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r, w, 4 * w, 1, a, 4 * w, b, 4 * w, 0, out, w);
    for (int h = 0; h < c->vision_heads; h++) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r, r, hd, 1, a + h * hd, 3 * w,
                  a + h * hd, 3 * w, 0, out, r);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, hd, r, 1, out, r, a + h * hd, 3 * w,
                  0, b, w);
    }
    double t_std = now_s() - t0;
    t0 = now_s();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r, w, w, 1, a, w, b, w, 0, out, w);
    for (int h = 0; h < c->vision_heads; h++) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r, r, hd, 1, a + h * hd, 3 * w,
                  a + h * hd, 3 * w, 0, out, r);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, hd, r, 1, out, r, a + h * hd, 3 * w,
                  0, b, w);
    }
    double t_dual = now_s() - t0;
    double total = c->vision_layers * t_std + (c->vision_layers - c->dual_start) * t_dual;
    best = total < best ? total : best;
  }
  free(a);
  free(b);
  free(out);
  return best;
}
#endif

static double min_of(const double *v, int n) {
  double m = v[0];
  for (int i = 1; i < n; i++)
    m = v[i] < m ? v[i] : m;
  return m;
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - (double)b[i]);
    m = d > m ? d : m;
  }
  return m;
}

/* A detector in a reduced precision, timed in the rounds beside f32. */
typedef struct {
  fap_precision asked, runs;
  fap_detector *det;
  double *total, *vision;
  double map_err, score_err; /* largest over the error frames */
  double a1_err;              /* largest A1 error (before the top-M selection) */
  double map_err_same, score_err_same; /* largest over frames with f32's top-M order */
  int within, reordered;      /* frames within the bounds; with another top-M order */
} reduced_run;

/* The bench frame, or a variant of it (seed > 0) for the error frames. */
static void fill_pixels(uint8_t *px, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++)
    px[i] = (uint8_t)(((i + seed * 7919u) * 2654435761u) >> 24);
}

/* The f32 reference of the error frames: maps, scores, top-M orders. */
typedef struct {
  int n, size, m, patches;
  float *maps, *scores, *a1;
  int32_t *topk;
} error_ref;

static int run_kept(fap_detector *d, const fap_frame *f, float *map, float *score, int32_t *topk,
                    float *a1, const error_ref *ref) {
  fap_result r;
  fap_tensor_view v, va1;
  /* AnomalyCLIP: no prior (M = 0), A1 = the first out layer's map */
  const int prior = ref->m > 0;
  if (fap_detector_run(d, f, &r) != FAP_OK ||
      (prior && fap_detector_intermediate(d, "topk_index", &v) != FAP_OK) ||
      fap_detector_intermediate(d, prior ? "map1" : "layer_maps", &va1) != FAP_OK)
    return 0;
  memcpy(map, r.map, (size_t)ref->size * ref->size * sizeof(float));
  *score = r.score;
  if (prior)
    memcpy(topk, v.data, (size_t)ref->m * sizeof(int32_t));
  memcpy(a1, va1.data, (size_t)ref->patches * sizeof(float));
  return 1;
}

/* Runs the error frames through a detector of precision p (f32 first, to
 * fill ref) and compares with ref. */
static int measure_errors(fap_model *model, fap_detector_options o, fap_precision p,
                          uint8_t *pixels, fap_frame frame, error_ref *ref, reduced_run *out) {
  o.precision = p;
  o.keep_intermediates = 1;
  fap_detector *d = NULL;
  if (fap_detector_new(model, &o, &d) != FAP_OK)
    return 0;
  const size_t plane = (size_t)ref->size * ref->size;
  float *map = malloc(plane * sizeof(float)), *a1 = malloc((size_t)ref->patches * sizeof(float));
  int32_t *topk = malloc((size_t)ref->m * sizeof(int32_t));
  int ok = 1;
  for (int i = 0; i < ref->n && ok; i++) {
    fill_pixels(pixels, frame.stride * (size_t)frame.height, (unsigned)i + 1);
    if (!out) { /* the f32 reference */
      ok = run_kept(d, &frame, ref->maps + i * plane, ref->scores + i,
                    ref->topk + (size_t)i * ref->m, ref->a1 + (size_t)i * ref->patches, ref);
      continue;
    }
    float score;
    ok = run_kept(d, &frame, map, &score, topk, a1, ref);
    if (!ok)
      break;
    double me = max_abs_diff(map, ref->maps + i * plane, plane);
    double se = fabs((double)score - ref->scores[i]);
    double ae = max_abs_diff(a1, ref->a1 + (size_t)i * ref->patches, (size_t)ref->patches);
    int same = memcmp(topk, ref->topk + (size_t)i * ref->m, (size_t)ref->m * sizeof(int32_t)) == 0;
    out->map_err = me > out->map_err ? me : out->map_err;
    out->score_err = se > out->score_err ? se : out->score_err;
    out->a1_err = ae > out->a1_err ? ae : out->a1_err;
    if (same) {
      out->map_err_same = me > out->map_err_same ? me : out->map_err_same;
      out->score_err_same = se > out->score_err_same ? se : out->score_err_same;
    }
    out->within += me <= 1e-2 && se <= 5e-3;
    out->reordered += !same;
  }
  fill_pixels(pixels, frame.stride * (size_t)frame.height, 0);
  free(map);
  free(a1);
  free(topk);
  fap_detector_free(d);
  return ok;
}

static int parse_precision(const char *name, fap_precision *out) {
  for (int p = FAP_PRECISION_F32; p <= FAP_PRECISION_INT8; p++)
    if (strcmp(name, fap_precision_name((fap_precision)p)) == 0) {
      *out = (fap_precision)p;
      return 1;
    }
  return 0;
}

static double median_of(const double *v, int n) {
  double *c = malloc((size_t)n * sizeof *c);
  memcpy(c, v, (size_t)n * sizeof *c);
  double m = median(c, n);
  free(c);
  return m;
}

int main(int argc, char **argv) {
  char *sizes_arg = NULL, *input_arg = NULL, *python = NULL, *script = NULL, *prec_arg = NULL;
  int frames = 3, threads = 0, torch_frames = 1, torch_threads = 0, no_torch = 0, reference = 0;
  int rounds = 3, error_frames = 4;
  GOptionEntry entries[] = {
      {"sizes", 0, 0, G_OPTION_ARG_STRING, &sizes_arg, "comma-separated S values (336,518)", "L"},
      {"rounds", 0, 0, G_OPTION_ARG_INT, &rounds, "alternating faprompt / PyTorch rounds per size (3)", "N"},
      {"frames", 0, 0, G_OPTION_ARG_INT, &frames, "timed faprompt frames per round (3)", "N"},
      {"threads", 0, 0, G_OPTION_ARG_INT, &threads, "CPU threads (0 = all cores)", "N"},
      {"input", 0, 0, G_OPTION_ARG_STRING, &input_arg, "input frame size (1280x720)", "WxH"},
      {"torch-frames", 0, 0, G_OPTION_ARG_INT, &torch_frames, "PyTorch frames per round (1)", "N"},
      {"torch-threads", 0, 0, G_OPTION_ARG_INT, &torch_threads, "PyTorch threads (default: --threads)", "N"},
      {"no-torch", 0, 0, G_OPTION_ARG_NONE, &no_torch, "skip the PyTorch reference", NULL},
      {"reference", 0, 0, G_OPTION_ARG_NONE, &reference, "time the reference loops", NULL},
      {"python", 0, 0, G_OPTION_ARG_STRING, &python, "python with torch (/usr/bin/python3)", "P"},
      {"torch-script", 0, 0, G_OPTION_ARG_FILENAME, &script, "the PyTorch anchor (tests/reference/authors_speed.py)", "F"},
      {"precision", 0, 0, G_OPTION_ARG_STRING, &prec_arg, "also time these CPU precisions against f32 (e.g. int8,bf16)", "L"},
      {"error-frames", 0, 0, G_OPTION_ARG_INT, &error_frames, "frames their error against f32 is measured on (4)", "N"},
      {NULL},
  };
  GOptionContext *ctx = g_option_context_new("MODEL - benchmark the faprompt detector");
  g_option_context_add_main_entries(ctx, entries, NULL);
  GError *error = NULL;
  if (!g_option_context_parse(ctx, &argc, &argv, &error) || argc != 2 || frames < 1 ||
      rounds < 1 || torch_frames < 1 || error_frames < 1 || error_frames > 64) {
    fprintf(stderr, "%s\n%s", error ? error->message : "one MODEL argument expected",
            g_option_context_get_help(ctx, TRUE, NULL));
    return 2;
  }
  g_option_context_free(ctx);
  if (!python)
    python = g_strdup("/usr/bin/python3");
  if (!script)
    script = tool_data_file("reference/authors_speed.py");
  int in_w = 1280, in_h = 720;
  if (input_arg && sscanf(input_arg, "%dx%d", &in_w, &in_h) != 2) {
    fprintf(stderr, "--input wants WxH, e.g. 1920x1080\n");
    return 2;
  }
  gchar **prec_names = g_strsplit(prec_arg ? prec_arg : "", ",", 0);
  int n_reduced = 0;
  fap_precision reduced[8];
  for (int i = 0; prec_names[i] && prec_names[i][0]; i++) {
    if (n_reduced == 8 || !parse_precision(prec_names[i], &reduced[n_reduced])) {
      fprintf(stderr, "--precision: '%s' is not one of f32, f16, bf16, int8 (at most 8)\n",
              prec_names[i]);
      return 2;
    }
    n_reduced++;
  }
  g_strfreev(prec_names);
  if (threads <= 0)
    threads = (int)g_get_num_processors();
  if (torch_threads <= 0)
    torch_threads = threads;

  char host[512];
  host_describe(host, sizeof host);
  printf("CPU: %s\n", host);
  fap_model *model = NULL;
  if (fap_model_load(argv[1], &model) != FAP_OK)
    return 1;
  const fap_config *c = fap_model_config(model);
  printf("model %s (%s): %.1f M parameters, loaded (map + validate + widen to f32) in %.2f s\n",
         argv[1], fap_family_name(c->family), fap_model_parameter_count(model) / 1e6,
         fap_model_load_seconds(model));
  printf("input frame %dx%d RGB, %d threads, %s path; per size %d rounds of %d faprompt frames "
         "then %d PyTorch frame(s), after one warm-up frame each\n\n", in_w, in_h, threads,
         reference ? "reference-loop" : "OpenBLAS", rounds, frames, torch_frames);

  uint8_t *pixels = malloc((size_t)in_w * in_h * 3);
  fill_pixels(pixels, (size_t)in_w * in_h * 3, 0);
  fap_frame frame = {FAP_PIXEL_RGB, in_w, in_h, (size_t)in_w * 3, pixels};

  gchar **sizes = g_strsplit(sizes_arg ? sizes_arg : "336,518", ",", 0);
  GString *ptable = g_string_new(NULL);
  g_string_append_printf(ptable, "| S | precision (runs) | frame ms min / median | vision ms min | "
                                 "speed-up over f32, frame (vision) | A1 max abs err vs f32 | "
                                 "map / score max abs err vs f32, all frames | the same over frames "
                                 "with f32's top-M order | frames within map 1e-2, score 5e-3 | "
                                 "frames with another top-M order |\n"
                                 "|---|---|---|---|---|---|---|---|---|---|\n");
  GString *table = g_string_new(NULL);
  g_string_append_printf(table,
                         "| S | stage ms (median): pre / vision / map1 / prior / text / map2 / map | "
                         "faprompt frame ms min / median | vision ms min (GFLOP/s) | SGEMM alone ms "
                         "(vision as %% of it) | PyTorch (authors' structure) frame ms min / median "
                         "| its vision / text ms min | speed-up, frame (vision) |\n"
                         "|---|---|---|---|---|---|---|---|\n");
  int rc = 0;
  for (int si = 0; sizes[si]; si++) {
    int size = atoi(sizes[si]);
    fap_detector_options o;
    fap_detector_options_init(&o);
    o.backend = FAP_BACKEND_CPU;
    o.threads = threads;
    o.image_size = size;
    o.reference = reference;
    fap_detector *det = NULL;
    double t0 = now_s();
    if (fap_detector_new(model, &o, &det) != FAP_OK) {
      rc = 1;
      continue;
    }
    double create_s = now_s() - t0;
    fap_result r;
    fap_detector_run(det, &frame, &r); /* warm-up: first-touch of buffers */
    reduced_run rr[8];
    memset(rr, 0, sizeof rr);
    for (int p = 0; p < n_reduced; p++) {
      fap_detector_options po = o;
      po.precision = reduced[p];
      rr[p].asked = reduced[p];
      rr[p].total = calloc((size_t)rounds * frames, sizeof(double));
      rr[p].vision = calloc((size_t)rounds * frames, sizeof(double));
      if (fap_detector_new(model, &po, &rr[p].det) != FAP_OK) {
        rc = 1;
        continue;
      }
      rr[p].runs = fap_detector_precision(rr[p].det);
      fap_result pr;
      if (fap_detector_run(rr[p].det, &frame, &pr) != FAP_OK) { /* warm-up, and the error */
        rc = 1;
        continue;
      }
    }
    torch_server *ts = NULL;
    if (!no_torch) {
      char s_size[16], s_threads[16], s_w[16], s_h[16];
      snprintf(s_size, sizeof s_size, "%d", size);
      snprintf(s_threads, sizeof s_threads, "%d", torch_threads);
      snprintf(s_w, sizeof s_w, "%d", in_w);
      snprintf(s_h, sizeof s_h, "%d", in_h);
      const char *args[] = {"--model", argv[1], "--image-size", s_size, "--threads", s_threads,
                            "--width", s_w, "--height", s_h, NULL};
      printf("S=%d: starting the PyTorch anchor (%s)...\n", size, script);
      fflush(stdout);
      ts = torch_server_start("faprompt-bench", python, script, args);
      if (!ts)
        rc = 1;
    }
    int n = rounds * frames, tn = rounds * torch_frames;
    double *stage[FAP_STAGE_COUNT], *total = calloc((size_t)n, sizeof(double));
    for (int k = 0; k < FAP_STAGE_COUNT; k++)
      stage[k] = calloc((size_t)n, sizeof(double));
    double *t_frame = calloc((size_t)tn, sizeof(double)), *t_vision = calloc((size_t)tn, sizeof(double));
    double *t_text = calloc((size_t)tn, sizeof(double));
    double *t_gemm = calloc((size_t)rounds, sizeof(double));
    int done = 0, tdone = 0, gdone = 0;
    for (int round = 0; round < rounds && rc == 0; round++) {
      for (int f = 0; f < frames; f++, done++) {
        if (fap_detector_run(det, &frame, &r) != FAP_OK) {
          rc = 1;
          break;
        }
        for (int k = 0; k < FAP_STAGE_COUNT; k++)
          stage[k][done] = r.stage_ms[k];
        total[done] = r.total_ms;
      }
#ifdef FAP_HAVE_OPENBLAS
      if (rc == 0)
        t_gemm[gdone++] = sgemm_alone(c, size);
#endif
      for (int p = 0; p < n_reduced && rc == 0; p++)
        for (int f = 0; f < frames; f++) {
          fap_result pr;
          if (fap_detector_run(rr[p].det, &frame, &pr) != FAP_OK) {
            rc = 1;
            break;
          }
          rr[p].total[round * frames + f] = pr.total_ms;
          rr[p].vision[round * frames + f] = pr.stage_ms[FAP_STAGE_VISION];
        }
      if (ts && rc == 0) {
        if (!torch_server_run(ts, torch_frames, t_frame + tdone, t_vision + tdone, t_text + tdone)) {
          rc = 1;
          break;
        }
        tdone += torch_frames;
        printf("  round %d: faprompt min %.0f ms, PyTorch %.0f ms\n", round + 1,
               min_of(total + done - frames, frames), 1e3 * min_of(t_frame + tdone - torch_frames,
                                                                  torch_frames));
        fflush(stdout);
      }
    }
    if (done == 0) {
      fap_detector_free(det);
      torch_server_stop(ts);
      continue;
    }
    double med[FAP_STAGE_COUNT];
    for (int k = 0; k < FAP_STAGE_COUNT; k++)
      med[k] = median_of(stage[k], done);
    double frame_min = min_of(total, done), frame_med = median_of(total, done);
    double vision_min = min_of(stage[FAP_STAGE_VISION], done);
    double vflops = vision_flops(c, size, 1);
    printf("S=%d: detector created in %.2f s (static text, prefix cache); score %.4f\n", size,
           create_s, r.score);
    for (int k = 0; k < FAP_STAGE_COUNT; k++)
      printf("  %-10s %9.2f ms (median of %d)\n", fap_stage_name((fap_stage)k), med[k], done);
    printf("  %-10s %9.2f ms min, %.2f median   vision %.1f GFLOP -> %.1f GFLOP/s at its minimum; "
           "text %.2f GFLOP per frame\n", "total", frame_min, frame_med, vflops / 1e9,
           vflops / 1e6 / vision_min, text_flops(c) / 1e9);
    double gemm_ms = 0;
#ifdef FAP_HAVE_OPENBLAS
    /* efficiency in GFLOP/s terms: SGEMM alone runs every layer in full */
    if (gdone > 0) {
      gemm_ms = 1e3 * min_of(t_gemm, gdone);
      double gemm_gflops = vision_flops(c, size, 0) / 1e6 / gemm_ms;
      double eff = vflops / 1e6 / vision_min / gemm_gflops;
      printf("  OpenBLAS SGEMM alone on the vision shapes: %.1f ms min over %d rounds = %.1f "
             "GFLOP/s -> vision stage runs at %.0f%% of it\n", gemm_ms, gdone, gemm_gflops,
             100.0 * eff);
    }
#endif
    /* errors against f32, on detectors of their own (intermediates kept) */
    for (int p = 0; p < n_reduced; p++)
      fap_detector_free(rr[p].det), rr[p].det = NULL;
    if (n_reduced && rc == 0) {
      const int g = size / c->patch_size;
      error_ref ref = {error_frames, size, c->top_m, g * g, NULL, NULL, NULL, NULL};
      ref.maps = malloc((size_t)error_frames * size * size * sizeof(float));
      ref.a1 = malloc((size_t)error_frames * g * g * sizeof(float));
      ref.scores = malloc((size_t)error_frames * sizeof(float));
      ref.topk = malloc((size_t)error_frames * c->top_m * sizeof(int32_t));
      if (!measure_errors(model, o, FAP_PRECISION_F32, pixels, frame, &ref, NULL))
        rc = 1;
      for (int p = 0; p < n_reduced && rc == 0; p++)
        if (!measure_errors(model, o, rr[p].asked, pixels, frame, &ref, &rr[p]))
          rc = 1;
      free(ref.maps);
      free(ref.a1);
      free(ref.scores);
      free(ref.topk);
    }
    for (int p = 0; p < n_reduced; p++) {
      if (done == rounds * frames && rr[p].total[0] > 0) {
        double pf = min_of(rr[p].total, done), pv = min_of(rr[p].vision, done);
        g_string_append_printf(ptable, "| %d | %s (%s) | %.0f / %.0f | %.0f | %.2fx (%.2fx) | %.2e | "
                               "%.2e / %.2e | %.2e / %.2e | %d of %d | %d |\n", size,
                               fap_precision_name(rr[p].asked), fap_precision_name(rr[p].runs), pf,
                               median_of(rr[p].total, done), pv, frame_min / pf, vision_min / pv,
                               rr[p].a1_err, rr[p].map_err, rr[p].score_err, rr[p].map_err_same,
                               rr[p].score_err_same, rr[p].within, error_frames, rr[p].reordered);
      }
      fap_detector_free(rr[p].det);
      free(rr[p].total);
      free(rr[p].vision);
    }
    fap_detector_free(det);
    g_string_append_printf(table, "| %d | %.0f / %.0f / %.1f / %.1f / %.1f / %.1f / %.1f | %.0f / %.0f | "
                           "%.0f (%.0f) | ", size, med[0], med[1], med[2], med[3], med[4], med[5],
                           med[6], frame_min, frame_med, vision_min, vflops / 1e6 / vision_min);
    if (gemm_ms > 0)
      g_string_append_printf(table, "%.0f (%.0f%%) | ", gemm_ms,
                             100.0 * (vflops / vision_min) / (vision_flops(c, size, 0) / gemm_ms));
    else
      g_string_append(table, "– | ");
    if (tdone > 0) {
      double tf = 1e3 * min_of(t_frame, tdone), tv = 1e3 * min_of(t_vision, tdone);
      printf("  PyTorch (%s, authors' module structure): frame %.0f ms min, %.0f median; vision "
             "%.0f, text %.0f ms min -> faprompt is %.2fx faster per frame (vision %.2fx), ratio "
             "of minima over %d / %d frames\n", torch_server_describe(ts), tf,
             1e3 * median_of(t_frame, tdone), tv, 1e3 * min_of(t_text, tdone), tf / frame_min,
             tv / vision_min, done, tdone);
      g_string_append_printf(table, "%.0f / %.0f | %.0f / %.0f | %.2fx (%.2fx) |\n", tf,
                             1e3 * median_of(t_frame, tdone), tv, 1e3 * min_of(t_text, tdone),
                             tf / frame_min, tv / vision_min);
    } else {
      g_string_append(table, "– | – | – |\n");
    }
    torch_server_stop(ts);
    for (int k = 0; k < FAP_STAGE_COUNT; k++)
      free(stage[k]);
    free(total);
    free(t_frame);
    free(t_vision);
    free(t_text);
    free(t_gemm);
  }
  printf("\npeak RSS of faprompt (this process): %.0f MiB; of the PyTorch runs: %.0f MiB\n\n",
         peak_rss_mib(RUSAGE_SELF), peak_rss_mib(RUSAGE_CHILDREN));
  printf("%s", table->str);
  if (n_reduced)
    printf("\nreduced precision against f32 (timed in the same rounds; errors over %d frames):\n\n%s",
           error_frames, ptable->str);
  g_string_free(table, TRUE);
  g_string_free(ptable, TRUE);
  g_free(prec_arg);
  g_strfreev(sizes);
  free(pixels);
  fap_model_free(model);
  g_free(sizes_arg);
  g_free(input_arg);
  g_free(python);
  g_free(script);
  return rc;
}
