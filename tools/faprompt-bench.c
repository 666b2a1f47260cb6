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
 *                  [--no-torch-kept] [--torch-bf16] [--onnx] [--onnx-int8]
 *                  [--onnx-dir DIR] [--onnx-frames N] [--node NODE]
 *
 * --precision adds detectors in reduced precision, run in the same rounds
 * (f32, then each of them, then PyTorch), with a second table: their frame
 * and vision times, the speed-up over f32 (ratio of minima) and how far
 * their map and score are from f32's over --error-frames different frames
 * (4): the largest errors, how many frames stay within the GPU bounds (map
 * 1e-2, score 5e-3), and on how many the top-M patch order the prior reads
 * differs from f32's (a swap of near-tied patches moves A2 in a jump).
 *
 * Then, per size, the vision encoder against what users would run instead,
 * timed in the same rounds: PyTorch as shipped (freed memory goes back to
 * the OS: it faults its pages in again every frame), PyTorch with freed
 * memory kept (libjemalloc.so.2 preloaded, as PyTorch's CPU tuning guides
 * advise, its purging off; or glibc malloc tunables where it is absent; --no-torch-kept
 * leaves it out), PyTorch under bf16 autocast (--torch-bf16, memory kept
 * too), and ONNX Runtime on the encoder exported to ONNX, f32 (--onnx) and
 * int8 (--onnx-int8, dynamic quantisation), dev-only anchors that
 * tools/setup-onnxruntime.sh installs (onnx_anchor.h). Their minimum
 * (median) ms, faprompt f32's minimum over theirs, minor page faults per
 * call, and with the ONNX export's reference pair (--onnx) each one's
 * largest error against PyTorch fp32 on the same frame.
 */
#include "fap.h"
#include "datafile.h"
#include "hostinfo.h"
#include "onnx_anchor.h"
#include "cli_options.h"
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

static double median_of(const double *v, int n) {
  double *c = malloc((size_t)n * sizeof *c);
  memcpy(c, v, (size_t)n * sizeof *c);
  double m = median(c, n);
  free(c);
  return m;
}

static long minor_faults(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_minflt;
}

/* fap_detector_run, counting the minor page faults it takes into *faults. */
static fap_status run_counted(fap_detector *d, const fap_frame *f, fap_result *r, double *faults) {
  long f0 = minor_faults();
  fap_status st = fap_detector_run(d, f, r);
  *faults += (double)(minor_faults() - f0);
  return st;
}

/* The environment of a PyTorch anchor whose freed memory stays in the
 * process: jemalloc preloaded where ldconfig knows libjemalloc.so.2 (Debian
 * libjemalloc2), its purging off (dirty and muzzy decay -1: jemalloc's
 * defaults, and the MALLOC_CONF of Intel's PyTorch tuning guides with
 * oversize_threshold:1, gave back the attention and MLP buffers, 8 MiB and
 * more, and faulted as much as glibc); else glibc malloc told not to give
 * memory back (no mmap below 32 MiB, no trimming, 256 MiB top pad). *how
 * names which. */
static char **kept_memory_env(const char **how) {
  char *out = NULL, *path = NULL;
  if (g_spawn_command_line_sync("/sbin/ldconfig -p", &out, NULL, NULL, NULL) && out) {
    gchar **lines = g_strsplit(out, "\n", 0);
    for (int i = 0; lines[i] && !path; i++) {
      const char *arrow = strstr(lines[i], "=> ");
      if (strstr(lines[i], "libjemalloc.so.2 (") && arrow)
        path = g_strstrip(g_strdup(arrow + 3));
    }
    g_strfreev(lines);
  }
  g_free(out);
  char **env = g_new0(char *, 3);
  if (path) {
    env[0] = g_strconcat("LD_PRELOAD=", path, NULL);
    env[1] = g_strdup("MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1");
    *how = "jemalloc";
  } else {
    env[0] = g_strdup("GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:"
                      "glibc.malloc.trim_threshold=68719476736:glibc.malloc.top_pad=268435456");
    *how = "glibc malloc tunables";
  }
  g_free(path);
  return env;
}

/* An anchor timed beside faprompt's vision encoder: a PyTorch variant or
 * ONNX Runtime, a server of torch_ref.h's protocol. */
typedef struct {
  char label[96];
  torch_server *srv;
  int frames;            /* per round */
  double *vision;        /* seconds, rounds * frames */
  int n;
  double faults;         /* minor page faults over its n frames; < 0: not reported */
  double err;            /* against PyTorch fp32; < 0: not known */
  int is_reference;      /* PyTorch fp32: the reference itself */
} anchor_run;

static void anchor_add(anchor_run *a, int *n_anchors, const char *label, torch_server *srv,
                       int frames, int rounds, int is_reference) {
  anchor_run *r = &a[(*n_anchors)++];
  memset(r, 0, sizeof *r);
  snprintf(r->label, sizeof r->label, "%s", label);
  r->srv = srv;
  r->frames = frames;
  r->vision = calloc((size_t)rounds * frames, sizeof(double));
  r->err = srv ? torch_server_ready_number(srv, "max_abs_err", -1) : -1;
  r->is_reference = is_reference;
}

static int anchor_round(anchor_run *r) {
  double *scratch = calloc((size_t)r->frames * 2, sizeof(double));
  int ok = torch_server_run(r->srv, r->frames, scratch, r->vision + r->n, scratch + r->frames);
  free(scratch);
  if (ok) {
    double f = torch_server_minflt(r->srv);
    r->faults = f < 0 || r->faults < 0 ? -1 : r->faults + f;
    r->n += r->frames;
  }
  return ok;
}

/* One row of the table against the anchors; ms values, faults summed over n calls. */
static void anchor_row(GString *t, const char *label, const double *ms, int n, double f32_min,
                       double faults, double err, int is_reference) {
  double mn = min_of(ms, n), md = median_of(ms, n);
  const int digits = mn < 10 ? 2 : 0; /* tiny models: fractions of a ms */
  g_string_append_printf(t, "| %s | %.*f (%.*f) | %.2fx | ", label, digits, mn, digits, md,
                         f32_min / mn);
  if (faults >= 0)
    g_string_append_printf(t, "%.0f | ", faults / n);
  else
    g_string_append(t, "– | ");
  if (is_reference)
    g_string_append(t, "(the reference) |\n");
  else if (err >= 0)
    g_string_append_printf(t, "%.2e |\n", err);
  else
    g_string_append(t, "– |\n");
}

/* faprompt's vision outputs at precision p against PyTorch fp32's on the
 * export's reference frame; -1 when not measurable. */
static double faprompt_error(fap_model *model, fap_detector_options o, fap_precision p,
                             const onnx_export *e) {
  o.precision = p;
  o.keep_intermediates = 1;
  fap_detector *d = NULL;
  if (fap_detector_new(model, &o, &d) != FAP_OK)
    return -1;
  fap_frame f = {FAP_PIXEL_RGB, e->width, e->height, (size_t)e->width * 3, e->image};
  fap_result r;
  double err = fap_detector_run(d, &f, &r) == FAP_OK ? onnx_export_error(e, d) : -1;
  fap_detector_free(d);
  return err;
}

/* What the CPU backend chose (GEMM, precision) is part of every figure: its
 * INFO lines are printed, each once; warnings and errors go to stderr. */
static void bench_log(fap_log_level level, const char *message, void *user_data) {
  GHashTable *seen = user_data;
  if (level <= FAP_LOG_WARNING) {
    fprintf(stderr, "faprompt-bench: %s\n", message);
  } else if (level == FAP_LOG_INFO && g_str_has_prefix(message, "cpu backend:") &&
             !g_hash_table_contains(seen, message)) {
    g_hash_table_add(seen, g_strdup(message));
    printf("  %s\n", message);
  }
}

int main(int argc, char **argv) {
  char *sizes_arg = NULL, *input_arg = NULL, *python = NULL, *script = NULL, *prec_arg = NULL;
  int frames = 3, threads = 0, torch_frames = 1, torch_threads = 0, no_torch = 0, reference = 0;
  int rounds = 3, error_frames = 4;
  int no_torch_kept = 0, torch_bf16 = 0, onnx = 0, onnx_int8 = 0, onnx_frames = 0;
  char *onnx_dir_arg = NULL, *node = NULL;
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
      {"no-torch-kept", 0, 0, G_OPTION_ARG_NONE, &no_torch_kept, "skip PyTorch with freed memory kept (jemalloc)", NULL},
      {"torch-bf16", 0, 0, G_OPTION_ARG_NONE, &torch_bf16, "also PyTorch under bf16 autocast", NULL},
      {"onnx", 0, 0, G_OPTION_ARG_NONE, &onnx, "also ONNX Runtime f32 (tools/setup-onnxruntime.sh)", NULL},
      {"onnx-int8", 0, 0, G_OPTION_ARG_NONE, &onnx_int8, "also ONNX Runtime int8 (dynamic quantisation)", NULL},
      {"onnx-dir", 0, 0, G_OPTION_ARG_FILENAME, &onnx_dir_arg, "the setup step's folder (<build>/onnxruntime)", "DIR"},
      {"onnx-frames", 0, 0, G_OPTION_ARG_INT, &onnx_frames, "ONNX Runtime frames per round (--frames)", "N"},
      {"node", 0, 0, G_OPTION_ARG_FILENAME, &node, "node, for ONNX Runtime (node in PATH)", "P"},
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
  if (!node)
    node = g_strdup("node");
  if (onnx_frames <= 0)
    onnx_frames = frames;
  /* ONNX Runtime: dev-only, from the build tree (its runner is not installed) */
  char *ort_dir = NULL, *ort_export = NULL, *ort_runner = NULL;
  if (onnx || onnx_int8) {
    ort_export = tool_data_file("reference/export_onnx.py");
    ort_runner = tool_data_file("reference/ort_speed.js");
    if (!g_file_test(ort_runner, G_FILE_TEST_EXISTS) ||
        !g_file_test(ort_export, G_FILE_TEST_EXISTS)) {
      fprintf(stderr, "faprompt-bench: --onnx runs from the build tree (%s not found)\n",
              ort_runner);
      return 2;
    }
    if (!(ort_dir = onnx_anchor_dir("faprompt-bench", onnx_dir_arg)))
      return 2;
  }
  const char *kept_how = NULL;
  char **kept_env = kept_memory_env(&kept_how);
  int in_w = 1280, in_h = 720;
  if (input_arg && sscanf(input_arg, "%dx%d", &in_w, &in_h) != 2) {
    fprintf(stderr, "--input wants WxH, e.g. 1920x1080\n");
    return 2;
  }
  gchar **prec_names = g_strsplit(prec_arg ? prec_arg : "", ",", 0);
  int n_reduced = 0;
  fap_precision reduced[8];
  for (int i = 0; prec_names[i] && prec_names[i][0]; i++) {
    if (n_reduced == 8 || !tool_parse_precision(prec_names[i], &reduced[n_reduced])) {
      fprintf(stderr, "--precision: '%s' is not one of auto, f32, f16, bf16, int8 (at most 8)\n",
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

  GHashTable *seen_logs = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  fap_set_log_callback(bench_log, seen_logs);
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
         reference ? "reference-loop" : "fast", rounds, frames, torch_frames);

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
  GString *atable = g_string_new(NULL);
  int rc = 0;
  for (int si = 0; sizes[si]; si++) {
    int size = atoi(sizes[si]);
    fap_detector_options o;
    fap_detector_options_init(&o);
    o.backend = FAP_BACKEND_CPU;
    o.precision = FAP_PRECISION_F32; /* the exact path; --precision adds the others */
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
    /* the ONNX export first: its peak memory before the PyTorch servers' */
    onnx_export *ox = NULL;
    if (ort_dir && rc == 0) {
      printf("S=%d: exporting the vision encoder to ONNX (%s; reused when up to date)...\n", size,
             ort_export);
      fflush(stdout);
      ox = onnx_export_make("faprompt-bench", python, ort_export, ort_dir, argv[1], size, in_w,
                            in_h, torch_threads, onnx_int8);
      if (!ox)
        rc = 1;
    }
    torch_server *ts = NULL;
    char s_size[16], s_threads[16], s_w[16], s_h[16];
    snprintf(s_size, sizeof s_size, "%d", size);
    snprintf(s_threads, sizeof s_threads, "%d", torch_threads);
    snprintf(s_w, sizeof s_w, "%d", in_w);
    snprintf(s_h, sizeof s_h, "%d", in_h);
    const char *targs[] = {"--model", argv[1], "--image-size", s_size, "--threads", s_threads,
                           "--width", s_w, "--height", s_h, NULL};
    if (!no_torch) {
      printf("S=%d: starting the PyTorch anchor (%s)...\n", size, script);
      fflush(stdout);
      ts = torch_server_start("faprompt-bench", python, script, targs);
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
    double faults = 0, ts_faults = 0, rr_faults[8] = {0};
    /* the anchors beside PyTorch as shipped (ts) */
    anchor_run an[4];
    int n_an = 0;
    if (ts && !no_torch_kept) {
      char label[96];
      snprintf(label, sizeof label, "PyTorch fp32, freed memory kept (%s)", kept_how);
      printf("S=%d: starting %s...\n", size, label);
      fflush(stdout);
      torch_server *s = torch_server_start_env("faprompt-bench", python, script, targs,
                                               (const char *const *)kept_env);
      if (s)
        anchor_add(an, &n_an, label, s, torch_frames, rounds, 1);
      else
        rc = 1;
    }
    if (ts && torch_bf16) {
      const char *bargs[G_N_ELEMENTS(targs) + 1];
      memcpy(bargs, targs, sizeof targs);
      bargs[G_N_ELEMENTS(targs) - 1] = "--bf16";
      bargs[G_N_ELEMENTS(targs)] = NULL;
      char label[96];
      snprintf(label, sizeof label, "PyTorch bf16 autocast, memory kept (%s)", kept_how);
      printf("S=%d: starting %s...\n", size, label);
      fflush(stdout);
      torch_server *s = torch_server_start_env("faprompt-bench", python, script, bargs,
                                               (const char *const *)kept_env);
      if (s)
        anchor_add(an, &n_an, label, s, torch_frames, rounds, 0);
      else
        rc = 1;
    }
    if (ox) {
      for (int q = 0; q < 2; q++) {
        if (!(q ? onnx_int8 : onnx))
          continue;
        torch_server *s = onnx_anchor_start("faprompt-bench", node, ort_runner, ort_dir, ox, q,
                                            torch_threads);
        char label[96];
        snprintf(label, sizeof label, "ONNX Runtime %s (%s)", q ? "int8, dynamic" : "fp32",
                 s ? torch_server_describe(s) : "?");
        if (s)
          anchor_add(an, &n_an, label, s, onnx_frames, rounds, 0);
        else
          rc = 1;
      }
    }
    for (int round = 0; round < rounds && rc == 0; round++) {
      for (int f = 0; f < frames; f++, done++) {
        if (run_counted(det, &frame, &r, &faults) != FAP_OK) {
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
          if (run_counted(rr[p].det, &frame, &pr, &rr_faults[p]) != FAP_OK) {
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
        double tf = torch_server_minflt(ts);
        ts_faults = tf < 0 || ts_faults < 0 ? -1 : ts_faults + tf;
        printf("  round %d: faprompt min %.0f ms, PyTorch %.0f ms\n", round + 1,
               min_of(total + done - frames, frames), 1e3 * min_of(t_frame + tdone - torch_frames,
                                                                  torch_frames));
        fflush(stdout);
      }
      for (int a = 0; a < n_an && rc == 0; a++) {
        if (!anchor_round(&an[a])) {
          rc = 1;
          break;
        }
        printf("  round %d: %s: vision %.0f ms min\n", round + 1, an[a].label,
               1e3 * min_of(an[a].vision + an[a].n - an[a].frames, an[a].frames));
        fflush(stdout);
      }
    }
    if (done == 0) {
      fap_detector_free(det);
      torch_server_stop(ts);
      for (int a = 0; a < n_an; a++) {
        torch_server_stop(an[a].srv);
        free(an[a].vision);
      }
      onnx_export_free(ox);
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
    /* the vision encoder against what users would run instead */
    if (rc == 0 && (tdone > 0 || n_an > 0)) {
      g_string_append_printf(atable, "\nS=%d: the vision encoder against what users would run "
                             "instead (same rounds; %dx%d frame, %d threads):\n\n"
                             "| vision encoder | ms min (median) | faprompt f32 min / its min (> 1: faster) | "
                             "minor page faults per call | max abs err vs PyTorch fp32 |\n"
                             "|---|---|---|---|---|\n", size, in_w, in_h, threads);
      int most = tdone;
      for (int a = 0; a < n_an; a++)
        most = an[a].n > most ? an[a].n : most;
      double *ms = malloc((size_t)(most > 0 ? most : 1) * sizeof(double));
      double err = ox ? faprompt_error(model, o, FAP_PRECISION_F32, ox) : -1;
      anchor_row(atable, "faprompt f32 (this build)", stage[FAP_STAGE_VISION], done, vision_min,
                 faults, err, 0);
      for (int p = 0; p < n_reduced; p++) {
        if (!rr[p].vision || rr[p].vision[0] <= 0)
          continue;
        char label[96];
        snprintf(label, sizeof label, "faprompt %s (runs %s)", fap_precision_name(rr[p].asked),
                 fap_precision_name(rr[p].runs));
        err = ox ? faprompt_error(model, o, rr[p].asked, ox) : -1;
        anchor_row(atable, label, rr[p].vision, done, vision_min, rr_faults[p], err, 0);
      }
      if (tdone > 0) {
        for (int i = 0; i < tdone; i++)
          ms[i] = 1e3 * t_vision[i];
        char label[96]; /* the allocator it found: glibc unless our environment preloads one */
        snprintf(label, sizeof label, "PyTorch fp32, as shipped (%s malloc)",
                 torch_server_ready_string(ts, "allocator", "?"));
        anchor_row(atable, label, ms, tdone, vision_min, ts_faults, -1, 1);
      }
      for (int a = 0; a < n_an; a++) {
        for (int i = 0; i < an[a].n; i++)
          ms[i] = 1e3 * an[a].vision[i];
        anchor_row(atable, an[a].label, ms, an[a].n, vision_min, an[a].faults, an[a].err,
                   an[a].is_reference);
      }
      free(ms);
      double scale = ox ? ox->ref_max_abs : -1;
      for (int a = 0; a < n_an && scale < 0; a++)
        scale = torch_server_ready_number(an[a].srv, "ref_max_abs", -1);
      g_string_append(atable, "\nms: vision encoder per frame; page faults: per call of the "
                              "detector (faprompt), of the frame (PyTorch: vision and text), of "
                              "the session (ONNX Runtime); errors: largest |difference| over the "
                              "patch tokens T and g");
      if (scale >= 0)
        g_string_append_printf(atable, " (their largest |value|: %.2f)", scale);
      g_string_append(atable, ", on the export's reference frame (faprompt, ONNX Runtime) or the "
                              "bench frame (PyTorch bf16).\n");
    }
    for (int a = 0; a < n_an; a++) {
      torch_server_stop(an[a].srv);
      free(an[a].vision);
    }
    onnx_export_free(ox);
    for (int p = 0; p < n_reduced; p++) {
      if (done == rounds * frames && rr[p].total[0] > 0) {
        double pf = min_of(rr[p].total, done), pv = min_of(rr[p].vision, done);
        /* no frame kept f32's top-M order: nothing to bound, not an error of 0 */
        char same[64] = "–";
        if (rr[p].reordered < error_frames)
          g_snprintf(same, sizeof same, "%.2e / %.2e", rr[p].map_err_same, rr[p].score_err_same);
        g_string_append_printf(ptable, "| %d | %s (%s) | %.0f / %.0f | %.0f | %.2fx (%.2fx) | %.2e | "
                               "%.2e / %.2e | %s | %d of %d | %d |\n", size,
                               fap_precision_name(rr[p].asked), fap_precision_name(rr[p].runs), pf,
                               median_of(rr[p].total, done), pv, frame_min / pf, vision_min / pv,
                               rr[p].a1_err, rr[p].map_err, rr[p].score_err, same, rr[p].within,
                               error_frames, rr[p].reordered);
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
  printf("%s", atable->str);
  g_string_free(atable, TRUE);
  g_strfreev(kept_env);
  g_free(ort_dir);
  g_free(ort_export);
  g_free(ort_runner);
  g_free(onnx_dir_arg);
  g_free(node);
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
  fap_set_log_callback(NULL, NULL);
  g_hash_table_destroy(seen_logs);
  return rc;
}
