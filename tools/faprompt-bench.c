/* faprompt-bench: per-stage timings, GFLOP/s and peak memory of the detector,
 * set against, in the same run, (a) OpenBLAS SGEMM alone on the vision
 * encoder's matrix shapes and (b) the PyTorch reference run the way the
 * authors' code runs (tests/reference/faprompt_ref.py --bench).
 *
 *   faprompt-bench MODEL [--sizes 336,518] [--frames 3] [--threads N]
 *                  [--input WxH] [--torch-frames 1] [--no-torch] [--reference]
 */
#include "fap.h"
#include "torch_ref.h"

#ifdef FAP_HAVE_OPENBLAS
#include <cblas.h>
#endif
#include <glib.h>
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

/* FLOPs of one frame's vision encoder (SPEC.md section 5, exact for our schedule). */
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
  double rows = (double)c->n_prompts * (c->end_pos_abnormal - c->n_pos), w = c->text_width;
  double keys = c->end_pos_abnormal + 1;
  return c->text_layers * (24 * rows * w * w + 4 * rows * keys * w);
}

#ifdef FAP_HAVE_OPENBLAS
/* Seconds OpenBLAS needs for the vision encoder's GEMMs alone (same shapes,
 * same threads): the bar the vision stage is measured against. */
static double sgemm_alone(const fap_config *c, int size) {
  int g = size / c->patch_size, r = g * g + 1, w = c->vision_width, hd = w / c->vision_heads;
  float *a = calloc((size_t)r * 4 * w, sizeof(float)), *b = calloc((size_t)4 * w * w, sizeof(float));
  float *out = calloc((size_t)r * (r > 4 * w ? r : 4 * w), sizeof(float));
  for (size_t i = 0; i < (size_t)r * 4 * w; i++)
    a[i] = 1e-3f * (float)(i % 13);
  for (size_t i = 0; i < (size_t)4 * w * w; i++)
    b[i] = 1e-3f * (float)(i % 7);
  double best = 1e30;
  for (int rep = 0; rep < 3; rep++) {
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

typedef struct {
  double frame_s, vision_s, text_s;
  int ok;
} torch_result;

static torch_result run_torch(const char *python, const char *script, const char *model, int size,
                              int frames, int threads) {
  torch_result tr = {0};
  char s_size[16], s_frames[16], s_threads[16];
  snprintf(s_size, sizeof s_size, "%d", size);
  snprintf(s_frames, sizeof s_frames, "%d", frames);
  snprintf(s_threads, sizeof s_threads, "%d", threads);
  const char *args[] = {"--model", model, "--image-size", s_size, "--frames", s_frames,
                        "--threads", s_threads, "--warmup", "0", NULL};
  JsonParser *p;
  JsonObject *o = torch_ref_bench("faprompt-bench", python, script, args, &p, NULL);
  if (o) {
    tr.frame_s = json_object_get_double_member_with_default(o, "frame_s", 0);
    tr.vision_s = json_object_get_double_member_with_default(o, "vision_s", 0);
    tr.text_s = json_object_get_double_member_with_default(o, "text_s", 0);
    tr.ok = tr.frame_s > 0;
    g_object_unref(p);
  }
  return tr;
}

int main(int argc, char **argv) {
  char *sizes_arg = NULL, *input_arg = NULL, *python = NULL, *script = NULL;
  int frames = 3, threads = 0, torch_frames = 1, torch_threads = 0, no_torch = 0, reference = 0;
  GOptionEntry entries[] = {
      {"sizes", 0, 0, G_OPTION_ARG_STRING, &sizes_arg, "comma-separated S values (336,518)", "L"},
      {"frames", 0, 0, G_OPTION_ARG_INT, &frames, "timed frames per size (3)", "N"},
      {"threads", 0, 0, G_OPTION_ARG_INT, &threads, "CPU threads (0 = all cores)", "N"},
      {"input", 0, 0, G_OPTION_ARG_STRING, &input_arg, "input frame size (1280x720)", "WxH"},
      {"torch-frames", 0, 0, G_OPTION_ARG_INT, &torch_frames, "PyTorch frames per size (1)", "N"},
      {"torch-threads", 0, 0, G_OPTION_ARG_INT, &torch_threads, "PyTorch threads (default: --threads)", "N"},
      {"no-torch", 0, 0, G_OPTION_ARG_NONE, &no_torch, "skip the PyTorch reference", NULL},
      {"reference", 0, 0, G_OPTION_ARG_NONE, &reference, "time the reference loops", NULL},
      {"python", 0, 0, G_OPTION_ARG_STRING, &python, "python with torch (/usr/bin/python3)", "P"},
      {"torch-script", 0, 0, G_OPTION_ARG_FILENAME, &script, "faprompt_ref.py to run", "F"},
      {NULL},
  };
  GOptionContext *ctx = g_option_context_new("MODEL - benchmark the faprompt detector");
  g_option_context_add_main_entries(ctx, entries, NULL);
  GError *error = NULL;
  if (!g_option_context_parse(ctx, &argc, &argv, &error) || argc != 2 || frames < 1) {
    fprintf(stderr, "%s\n%s", error ? error->message : "one MODEL argument expected",
            g_option_context_get_help(ctx, TRUE, NULL));
    return 2;
  }
  g_option_context_free(ctx);
  if (!python)
    python = g_strdup("/usr/bin/python3");
  if (!script)
    script = g_strdup(FAP_SOURCE_DIR "/tests/reference/faprompt_ref.py");
  int in_w = 1280, in_h = 720;
  if (input_arg && sscanf(input_arg, "%dx%d", &in_w, &in_h) != 2) {
    fprintf(stderr, "--input wants WxH, e.g. 1920x1080\n");
    return 2;
  }
  if (threads <= 0)
    threads = (int)g_get_num_processors();
  if (torch_threads <= 0)
    torch_threads = threads;

  fap_model *model = NULL;
  if (fap_model_load(argv[1], &model) != FAP_OK)
    return 1;
  const fap_config *c = fap_model_config(model);
  printf("model %s: %.1f M parameters, loaded (map + validate + widen to f32) in %.2f s\n", argv[1],
         fap_model_parameter_count(model) / 1e6, fap_model_load_seconds(model));
  printf("input frame %dx%d RGB, %d threads, %s path, %d timed frames after 1 warm-up\n\n", in_w,
         in_h, threads, reference ? "reference-loop" : "OpenBLAS", frames);

  uint8_t *pixels = malloc((size_t)in_w * in_h * 3);
  for (size_t i = 0; i < (size_t)in_w * in_h * 3; i++)
    pixels[i] = (uint8_t)((i * 2654435761u) >> 24);
  fap_frame frame = {FAP_PIXEL_RGB, in_w, in_h, (size_t)in_w * 3, pixels};

  gchar **sizes = g_strsplit(sizes_arg ? sizes_arg : "336,518", ",", 0);
  GString *table = g_string_new(NULL);
  g_string_append_printf(table,
                         "| S | stage ms: pre / vision / map1 / prior / text / map2 / map | frame ms | "
                         "vision GFLOP/s | SGEMM alone, full schedule ms (vision GFLOP/s as %% of it) | PyTorch ms "
                         "(vision / text) | speed-up |\n|---|---|---|---|---|---|---|\n");
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
    double stage[FAP_STAGE_COUNT][64], total[64];
    int n = frames > 64 ? 64 : frames;
    fap_detector_run(det, &frame, &r); /* warm-up: first-touch of buffers */
    for (int f = 0; f < n; f++) {
      if (fap_detector_run(det, &frame, &r) != FAP_OK) {
        rc = 1;
        break;
      }
      for (int s = 0; s < FAP_STAGE_COUNT; s++)
        stage[s][f] = r.stage_ms[s];
      total[f] = r.total_ms;
    }
    double med[FAP_STAGE_COUNT];
    for (int s = 0; s < FAP_STAGE_COUNT; s++)
      med[s] = median(stage[s], n);
    double frame_ms = median(total, n);
    double vflops = vision_flops(c, size, 1);
    printf("S=%d: detector created in %.2f s (static text, prefix cache); score %.4f\n", size,
           create_s, r.score);
    for (int s = 0; s < FAP_STAGE_COUNT; s++)
      printf("  %-10s %9.2f ms\n", fap_stage_name((fap_stage)s), med[s]);
    printf("  %-10s %9.2f ms   vision %.1f GFLOP -> %.1f GFLOP/s; text %.2f GFLOP per frame\n",
           "total", frame_ms, vflops / 1e9, vflops / 1e6 / med[FAP_STAGE_VISION],
           text_flops(c) / 1e9);
    double gemm_ms = 0;
#ifdef FAP_HAVE_OPENBLAS
    /* efficiency in GFLOP/s terms: SGEMM alone runs every layer in full */
    gemm_ms = 1e3 * sgemm_alone(c, size);
    double gemm_gflops = vision_flops(c, size, 0) / 1e6 / gemm_ms;
    double eff = vflops / 1e6 / med[FAP_STAGE_VISION] / gemm_gflops;
    printf("  OpenBLAS SGEMM alone on the vision shapes: %.1f ms = %.1f GFLOP/s -> vision stage runs "
           "at %.0f%% of it\n", gemm_ms, gemm_gflops, 100.0 * eff);
#endif
    fap_detector_free(det);
    torch_result tr = {0};
    if (!no_torch) {
      printf("  PyTorch reference (authors' schedule, %d threads)...\n", torch_threads);
      fflush(stdout);
      tr = run_torch(python, script, argv[1], size, torch_frames, torch_threads);
      if (tr.ok)
        printf("  PyTorch: %.0f ms per frame (vision %.0f, text %.0f) -> faprompt is %.2fx faster\n",
               1e3 * tr.frame_s, 1e3 * tr.vision_s, 1e3 * tr.text_s, 1e3 * tr.frame_s / frame_ms);
    }
    g_string_append_printf(table, "| %d | %.0f / %.0f / %.1f / %.1f / %.1f / %.1f / %.1f | %.0f | %.0f | ",
                           size, med[0], med[1], med[2], med[3], med[4], med[5], med[6], frame_ms,
                           vflops / 1e6 / med[FAP_STAGE_VISION]);
    if (gemm_ms > 0)
      g_string_append_printf(table, "%.0f (%.0f%%) | ", gemm_ms,
                             100.0 * (vflops / med[1]) / (vision_flops(c, size, 0) / gemm_ms));
    else
      g_string_append(table, "– | ");
    if (tr.ok)
      g_string_append_printf(table, "%.0f (%.0f / %.0f) | %.2fx |\n", 1e3 * tr.frame_s,
                             1e3 * tr.vision_s, 1e3 * tr.text_s, 1e3 * tr.frame_s / frame_ms);
    else
      g_string_append(table, "– | – |\n");
  }
  printf("\npeak RSS of faprompt (this process): %.0f MiB; of the PyTorch runs: %.0f MiB\n\n",
         peak_rss_mib(RUSAGE_SELF), peak_rss_mib(RUSAGE_CHILDREN));
  printf("%s", table->str);
  g_string_free(table, TRUE);
  g_strfreev(sizes);
  free(pixels);
  fap_model_free(model);
  g_free(sizes_arg);
  g_free(input_arg);
  g_free(python);
  g_free(script);
  return rc;
}
