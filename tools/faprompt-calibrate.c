/* faprompt-calibrate: image and pixel thresholds from normal images only.
 *
 *   faprompt-calibrate MODEL GOOD_IMAGE|DIR... [--false-alarm-rate F]
 *                      [--pixel-false-alarm-rate F] [--output FILE] [--dry-run]
 *                      [--image-size S] [--sigma X] [--threads N]
 *
 * Every input is a normal (defect-free) part. With n images and a target
 * false-alarm rate F, the image threshold is the (k+1)-th highest normal score,
 * k = floor(F * n): at most k of these images score above it (k = 0: the
 * highest normal score). The pixel threshold is the same order statistic over
 * all n * S * S map values with the pixel rate. "Above" is strict, as in the
 * faprompt element and faprompt-infer. The result goes to the sidecar
 * <MODEL>.calibration.json, which the core reads at every model load
 * (models/README.md), so the element and faprompt-infer pick it up unchanged.
 *
 * Exit status: 0 written, 1 an image or the model failed, 2 bad usage.
 */
#include "fap.h"

#include "imageio.h"
#include "cli_options.h"
#include "progress.h"

#include <errno.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GEN_RANDOM_HINT                                                                            \
  "/usr/bin/python3 models/faprompt-gen-random --preset tiny -o model.safetensors"

/* The `cap` largest values seen, as a binary min-heap (root = smallest kept). */
typedef struct {
  float *v;
  size_t n, cap;
} top_heap;

static void heap_push(top_heap *h, float x) {
  if (h->n < h->cap) {
    size_t i = h->n++;
    while (i > 0 && h->v[(i - 1) / 2] > x) {
      h->v[i] = h->v[(i - 1) / 2];
      i = (i - 1) / 2;
    }
    h->v[i] = x;
    return;
  }
  if (!(x > h->v[0]))
    return;
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    float mv = x;
    if (l < h->n && h->v[l] < mv) {
      m = l;
      mv = h->v[l];
    }
    if (r < h->n && h->v[r] < mv)
      m = r;
    if (m == i)
      break;
    h->v[i] = h->v[m];
    i = m;
  }
  h->v[i] = x;
}

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

/* Value at fraction q of the sorted (ascending) list, nearest rank. */
static float quantile(const float *sorted, size_t n, double q) {
  size_t i = (size_t)ceil(q * (double)n);
  return sorted[i ? i - 1 : 0];
}

int main(int argc, char **argv) {
  int image_size = 0, threads = 0, dry_run = 0, verbose = 0;
  double sigma = -1.0, far = 0.01, pixel_far = 0.001;
  char *output = NULL, *precision_name = NULL;
  GOptionEntry entries[] = {
      {"false-alarm-rate", 0, 0, G_OPTION_ARG_DOUBLE, &far,
       "largest fraction of these normal images allowed above the image threshold (default "
       "0.01; 0 = the highest normal score)",
       "F"},
      {"pixel-false-alarm-rate", 0, 0, G_OPTION_ARG_DOUBLE, &pixel_far,
       "largest fraction of normal map pixels allowed above the pixel threshold (default 0.001)",
       "F"},
      {"output", 'o', 0, G_OPTION_ARG_FILENAME, &output,
       "where to write the thresholds (default: MODEL.calibration.json, which the core loads "
       "with the model)",
       "FILE"},
      {"dry-run", 0, 0, G_OPTION_ARG_NONE, &dry_run, "print the recommendation, write nothing",
       NULL},
      {"image-size", 0, 0, G_OPTION_ARG_INT, &image_size,
       "side S the model runs at (use the size the line will run at; default: the model's)", "S"},
      {"sigma", 0, 0, G_OPTION_ARG_DOUBLE, &sigma,
       "Gaussian sigma of the map in pixels (default: the model's)", "X"},
      {"threads", 0, 0, G_OPTION_ARG_INT, &threads, "CPU threads (0 = all cores)", "N"},
      {"precision", 0, 0, G_OPTION_ARG_STRING, &precision_name,
       TOOL_PRECISION_HELP "; calibrate at the precision the line will run at",
       "P"},
      {"verbose", 'v', 0, G_OPTION_ARG_NONE, &verbose, "also print the core's info messages", NULL},
      {NULL},
  };
  GOptionContext *octx =
      g_option_context_new("MODEL GOOD_IMAGE|DIR... - thresholds from normal images");
  g_option_context_add_main_entries(octx, entries, NULL);
  g_option_context_set_description(
      octx, "Every input must show a normal (defect-free) part. A DIR is scanned (sorted, not\n"
            "recursively) for image files. The thresholds are written as JSON to the sidecar\n"
            "MODEL.calibration.json; the core applies it whenever it loads MODEL.\n");
  GError *error = NULL;
  int parsed = g_option_context_parse(octx, &argc, &argv, &error);
  fap_precision precision;
  const int precision_ok = tool_parse_precision(precision_name, &precision);
  g_free(precision_name);
  const char *usage = !parsed     ? error->message
                      : argc < 3 ? "a MODEL and at least one IMAGE or DIR of normal images expected"
                      : !(far >= 0 && far < 1) || !(pixel_far >= 0 && pixel_far < 1)
                          ? "false-alarm rates must lie in [0, 1)"
                      : image_size < 0 || threads < 0 ? "--image-size and --threads must not be negative"
                      : !precision_ok ? "--precision must be auto, f32, f16, bf16 or int8"
                                                      : NULL;
  if (usage) {
    int rc = tool_usage_error("faprompt-calibrate", octx, usage);
    g_clear_error(&error);
    g_option_context_free(octx);
    g_free(output);
    return rc;
  }
  g_option_context_free(octx);
  tool_init("faprompt-calibrate", verbose);
  const char *model_path = argv[1];
  gchar *out_path = output ? g_strdup(output) : g_strconcat(model_path, ".calibration.json", NULL);

  int rc = 0;
  GHashTable *exts = imageio_extensions();
  GPtrArray *files = g_ptr_array_new_with_free_func(g_free);
  for (int i = 2; i < argc; i++) {
    if (g_file_test(argv[i], G_FILE_TEST_IS_DIR)) {
      int n = imageio_list_dir(files, exts, argv[i], &error);
      if (n <= 0) {
        tool_error("%s: %s", argv[i], n < 0 ? error->message : "no image files in this folder");
        g_clear_error(&error);
        rc = 1;
      }
    } else if (g_file_test(argv[i], G_FILE_TEST_IS_REGULAR)) {
      g_ptr_array_add(files, g_strdup(argv[i]));
    } else {
      tool_error("%s does not exist", argv[i]);
      rc = 1;
    }
  }
  g_hash_table_unref(exts);

  fap_model *model = NULL;
  fap_detector *det = NULL;
  float *scores = NULL;
  top_heap heap = {0};
  if (rc)
    goto done;
  if (fap_model_load(model_path, &model) != FAP_OK) {
    if (!g_file_test(model_path, G_FILE_TEST_EXISTS))
      tool_error("model file %s does not exist; make one with:\n  " GEN_RANDOM_HINT, model_path);
    else
      tool_error("cannot load model %s (see the message above; if it names a broken "
                 "%s.calibration.json, delete that file and calibrate again)",
                 model_path, model_path);
    rc = 1;
    goto done;
  }
  fap_detector_options o;
  fap_detector_options_init(&o);
  o.threads = threads;
  o.precision = precision;
  o.image_size = image_size;
  o.sigma = (float)sigma;
  if (fap_detector_new(model, &o, &det) != FAP_OK) {
    tool_error("cannot create a detector for %s (see the message above)", model_path);
    rc = 1;
    goto done;
  }
  const int S = fap_detector_image_size(det);
  const size_t n = files->len, px = (size_t)S * S;
  const size_t k_img = (size_t)floor(far * (double)n);
  const size_t total_px = n * px, k_px = (size_t)floor(pixel_far * (double)total_px);
  scores = g_new(float, n);
  heap.cap = k_px + 1;
  heap.v = g_try_new(float, heap.cap);
  if (!heap.v) {
    tool_error("--pixel-false-alarm-rate %g keeps %zu pixel values: out of memory", pixel_far, heap.cap);
    rc = 1;
    goto done;
  }
  float map_max = -INFINITY;
  for (size_t i = 0; i < n; i++) {
    const char *file = files->pdata[i];
    gchar *base = g_path_get_basename(file);
    progress_show((int)i, (int)n, base);
    g_free(base);
    fap_frame frame;
    GdkPixbuf *image = imageio_load(file, &frame, &error);
    if (!image) {
      tool_error("cannot read image %s: %s", file, error->message);
      g_clear_error(&error);
      rc = 1;
      goto done;
    }
    fap_result r;
    fap_status st = fap_detector_run(det, &frame, &r);
    g_object_unref(image);
    if (st != FAP_OK) {
      tool_error("inference failed on %s: %s", file, fap_status_string(st));
      rc = 1;
      goto done;
    }
    scores[i] = r.score;
    for (size_t j = 0; j < px; j++) {
      heap_push(&heap, r.map[j]);
      map_max = r.map[j] > map_max ? r.map[j] : map_max;
    }
  }
  progress_clear();

  float *sorted = g_memdup2(scores, n * sizeof *scores);
  qsort(sorted, n, sizeof *sorted, cmp_float);
  float t_img = sorted[n - 1 - (k_img < n ? k_img : n - 1)];
  /* The heap root is the (k_px+1)-th largest value of all (the heap holds
   * min(total, k_px + 1) values). */
  float t_px = heap.v[0];
  size_t above_img = 0, above_px = 0;
  for (size_t i = 0; i < n; i++)
    above_img += scores[i] > t_img;
  for (size_t i = 0; i < heap.n; i++)
    above_px += heap.v[i] > t_px;
  int clamped = 0;
  if (t_img < 0.0f || t_img > 1.0f || t_px < 0.0f || t_px > 1.0f) {
    clamped = 1;
    t_img = t_img < 0.0f ? 0.0f : t_img > 1.0f ? 1.0f : t_img;
    t_px = t_px < 0.0f ? 0.0f : t_px > 1.0f ? 1.0f : t_px;
  }

  printf("model %s: S=%d, %zu normal image%s, %zu map pixels\n\n", model_path, S, n,
         n == 1 ? "" : "s", total_px);
  printf("normal image scores: min %.4f  median %.4f  p90 %.4f  p95 %.4f  p99 %.4f  max %.4f\n",
         sorted[0], quantile(sorted, n, 0.5), quantile(sorted, n, 0.9), quantile(sorted, n, 0.95),
         quantile(sorted, n, 0.99), sorted[n - 1]);
  printf("normal map values:   max %.4f\n\n", map_max);
  printf("image-threshold %.6f  (target false-alarm rate %g: at most %zu of %zu normal images "
         "above; observed %zu = %.4g)\n",
         t_img, far, k_img, n, above_img, (double)above_img / n);
  printf("pixel-threshold %.6f  (target false-alarm rate %g: at most %zu of %zu normal pixels "
         "above; observed %zu = %.4g)\n",
         t_px, pixel_far, k_px, total_px, above_px, (double)above_px / total_px);
  if (far > 0 && k_img == 0)
    printf("note: %zu images are too few to resolve a false-alarm rate of %g (one image is %.3g): "
           "the image threshold is the highest normal score\n",
           n, far, 1.0 / n);
  if (n < 50)
    printf("note: %zu normal images give a rough estimate; a few hundred make the thresholds "
           "trustworthy\n",
           n);
  if (clamped)
    printf("note: a threshold fell outside [0, 1] and was clamped\n");
  g_free(sorted);

  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "image_threshold");
  json_builder_add_double_value(b, t_img);
  json_builder_set_member_name(b, "pixel_threshold");
  json_builder_add_double_value(b, t_px);
  json_builder_set_member_name(b, "false_alarm_rate");
  json_builder_add_double_value(b, far);
  json_builder_set_member_name(b, "pixel_false_alarm_rate");
  json_builder_add_double_value(b, pixel_far);
  json_builder_set_member_name(b, "observed_false_alarm_rate");
  json_builder_add_double_value(b, (double)above_img / n);
  json_builder_set_member_name(b, "observed_pixel_false_alarm_rate");
  json_builder_add_double_value(b, (double)above_px / total_px);
  json_builder_set_member_name(b, "n_images");
  json_builder_add_int_value(b, (gint64)n);
  json_builder_set_member_name(b, "image_size");
  json_builder_add_int_value(b, S);
  json_builder_set_member_name(b, "sigma");
  json_builder_add_double_value(b, sigma >= 0 ? sigma : fap_model_config(model)->sigma);
  json_builder_set_member_name(b, "method");
  json_builder_add_string_value(
      b, "normal-quantile: the (floor(rate * count) + 1)-th highest normal image score / map "
         "value; anomalous means above");
  json_builder_set_member_name(b, "created");
  GDateTime *dt = g_date_time_new_now_utc();
  gchar *now = g_date_time_format_iso8601(dt);
  json_builder_add_string_value(b, now);
  g_free(now);
  g_date_time_unref(dt);
  json_builder_end_object(b);
  JsonGenerator *gen = json_generator_new();
  JsonNode *root = json_builder_get_root(b);
  json_generator_set_root(gen, root);
  json_generator_set_pretty(gen, TRUE);
  gchar *text = json_generator_to_data(gen, NULL);
  gchar *withnl = g_strconcat(text, "\n", NULL);
  if (dry_run) {
    printf("\n(dry run) would write %s:\n%s", out_path, withnl);
  } else if (!g_file_set_contents(out_path, withnl, -1, &error)) {
    tool_error("cannot write %s: %s", out_path, error->message);
    g_clear_error(&error);
    rc = 1;
  } else {
    printf("\nwrote %s%s\n", out_path,
           output ? "" : " (applied by the core whenever it loads the model)");
  }
  g_free(withnl);
  g_free(text);
  json_node_unref(root);
  g_object_unref(gen);
  g_object_unref(b);

done:
  g_free(heap.v);
  g_free(scores);
  fap_detector_free(det);
  fap_model_free(model);
  g_ptr_array_free(files, TRUE);
  g_free(output);
  g_free(out_path);
  return rc;
}
