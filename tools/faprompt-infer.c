/* faprompt-infer: anomaly scores (and optionally heatmaps and raw maps) for
 * image files, with one detector reused for every image.
 *
 *   faprompt-infer MODEL IMAGE|DIR... [--image-size S] [--sigma X] [--threads N]
 *                  [--threshold T] [--heatmap-dir DIR] [--map-dir DIR] [--json]
 *                  [--reference]
 *
 * Images are decoded by gdk-pixbuf (PNG, JPEG, BMP, TIFF, ... whatever loaders
 * are installed). A DIR is scanned, sorted and non-recursively, for files whose
 * extension one of those loaders claims. stdout carries the results only (a
 * table, or one JSON object per line with --json); errors and the progress line
 * go to stderr. Exit status: 0 all images done, 1 some image or the model
 * failed, 2 bad usage.
 */
#include "fap.h"

#include <errno.h>
#include <gdk-pixbuf/gdk-pixbuf.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GEN_RANDOM_HINT                                                                            \
  "/usr/bin/python3 models/faprompt-gen-random --preset tiny -o model.safetensors"

/* ---- progress on a terminal ------------------------------------------------ */

static int progress_on;    /* stderr is a terminal */
static int progress_shown; /* a progress line is on screen, no newline yet */

static void progress_clear(void) {
  if (progress_shown) {
    fputs("\r\033[K", stderr);
    progress_shown = 0;
  }
}

static void progress_show(int index, int total, const char *name) {
  if (!progress_on)
    return;
  fprintf(stderr, "\r\033[K[%d/%d] %s", index, total, name);
  fflush(stderr);
  progress_shown = 1;
}

/* The core's default sink, but it first wipes a half-written progress line. */
static void log_to_stderr(fap_log_level level, const char *message, void *user_data) {
  if (level > FAP_LOG_WARNING)
    return;
  progress_clear();
  fprintf(stderr, "faprompt %s: %s\n", level == FAP_LOG_ERROR ? "error" : "warning", message);
}

static void G_GNUC_PRINTF(1, 2) error_msg(const char *fmt, ...) {
  progress_clear();
  va_list ap;
  va_start(ap, fmt);
  fputs("faprompt-infer: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* ---- input list ------------------------------------------------------------ */

/* Lower-case extensions some installed gdk-pixbuf loader claims. */
static GHashTable *image_extensions(void) {
  GHashTable *set = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  GSList *formats = gdk_pixbuf_get_formats();
  for (GSList *l = formats; l; l = l->next) {
    GdkPixbufFormat *f = l->data;
    if (gdk_pixbuf_format_is_disabled(f))
      continue;
    gchar **exts = gdk_pixbuf_format_get_extensions(f);
    for (int i = 0; exts && exts[i]; i++)
      g_hash_table_add(set, g_ascii_strdown(exts[i], -1));
    g_strfreev(exts);
  }
  g_slist_free(formats);
  return set;
}

static int has_image_extension(GHashTable *exts, const char *name) {
  const char *dot = strrchr(name, '.');
  if (!dot || dot == name || !dot[1])
    return 0;
  gchar *ext = g_ascii_strdown(dot + 1, -1);
  int yes = g_hash_table_contains(exts, ext);
  g_free(ext);
  return yes;
}

static gint compare_strings(gconstpointer a, gconstpointer b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Appends the image files of DIR (sorted, non-recursive) to files. Returns 0
 * when DIR cannot be read or holds no image. */
static int add_directory(GPtrArray *files, GHashTable *exts, const char *dir) {
  GError *error = NULL;
  GDir *d = g_dir_open(dir, 0, &error);
  if (!d) {
    error_msg("cannot read directory %s: %s", dir, error->message);
    g_error_free(error);
    return 0;
  }
  GPtrArray *found = g_ptr_array_new();
  const char *name;
  while ((name = g_dir_read_name(d))) {
    if (!has_image_extension(exts, name))
      continue;
    gchar *path = g_build_filename(dir, name, NULL);
    if (g_file_test(path, G_FILE_TEST_IS_REGULAR))
      g_ptr_array_add(found, path);
    else
      g_free(path);
  }
  g_dir_close(d);
  g_ptr_array_sort(found, compare_strings);
  for (guint i = 0; i < found->len; i++)
    g_ptr_array_add(files, found->pdata[i]);
  int any = found->len > 0;
  if (!any)
    error_msg("no images found in directory %s (looked for files ending in an image "
              "extension gdk-pixbuf can read, e.g. .png .jpg .jpeg .bmp .tif .tiff)",
              dir);
  g_ptr_array_free(found, TRUE);
  return any;
}

/* File name without directory and without its last extension. */
static gchar *file_stem(const char *path) {
  gchar *base = g_path_get_basename(path);
  char *dot = strrchr(base, '.');
  if (dot && dot != base)
    *dot = '\0';
  return base;
}

/* ---- outputs --------------------------------------------------------------- */

/* matplotlib's "inferno" sampled at 17 evenly spaced points: perceptually
 * uniform, dark for 0 so that a normal frame stays calm under the overlay. */
static const uint8_t inferno[17][3] = {
    {0, 0, 4},       {11, 7, 36},     {33, 12, 74},    {61, 9, 101},    {87, 16, 110},
    {113, 25, 110},  {138, 34, 106},  {163, 44, 97},   {188, 55, 84},   {208, 69, 69},
    {227, 89, 51},   {241, 113, 31},  {249, 140, 10},  {252, 170, 15},  {249, 201, 50},
    {242, 232, 101}, {252, 255, 164},
};

static void colour_of(float v, float rgb[3]) {
  if (!(v > 0.0f)) /* also NaN */
    v = 0.0f;
  if (v > 1.0f)
    v = 1.0f;
  float x = v * 16.0f;
  int i = (int)x;
  if (i > 15)
    i = 15;
  float t = x - (float)i;
  for (int c = 0; c < 3; c++)
    rgb[c] = (1.0f - t) * inferno[i][c] + t * inferno[i + 1][c];
}

/* The input scaled to S x S, blended half and half with the map coloured on
 * the fixed scale [0, 1] (never per-image min-max: a calm map must look calm). */
static int write_heatmap(const char *path, GdkPixbuf *image, const float *map, int size) {
  GdkPixbuf *scaled = gdk_pixbuf_scale_simple(image, size, size, GDK_INTERP_BILINEAR);
  GdkPixbuf *out = gdk_pixbuf_new(GDK_COLORSPACE_RGB, FALSE, 8, size, size);
  if (!scaled || !out) {
    error_msg("cannot write heatmap %s: out of memory", path);
    g_clear_object(&scaled);
    g_clear_object(&out);
    return 0;
  }
  const int in_ch = gdk_pixbuf_get_n_channels(scaled);
  const int in_stride = gdk_pixbuf_get_rowstride(scaled), out_stride = gdk_pixbuf_get_rowstride(out);
  const uint8_t *src = gdk_pixbuf_read_pixels(scaled);
  uint8_t *dst = gdk_pixbuf_get_pixels(out);
  for (int y = 0; y < size; y++) {
    const uint8_t *s = src + (size_t)y * in_stride;
    uint8_t *d = dst + (size_t)y * out_stride;
    for (int x = 0; x < size; x++) {
      float rgb[3];
      colour_of(map[(size_t)y * size + x], rgb);
      for (int c = 0; c < 3; c++)
        d[3 * x + c] = (uint8_t)(0.5f * s[in_ch * x + c] + 0.5f * rgb[c] + 0.5f);
    }
  }
  GError *error = NULL;
  int ok = gdk_pixbuf_save(out, path, "png", &error, NULL);
  if (!ok) {
    error_msg("cannot write heatmap %s: %s", path, error->message);
    g_error_free(error);
  }
  g_object_unref(scaled);
  g_object_unref(out);
  return ok;
}

/* numpy .npy version 1.0: magic, version, u16 little-endian header length, a
 * Python dict literal padded with spaces to a newline so that the data starts
 * on a 64-byte boundary, then the raw float32 array in C order. */
static int write_npy(const char *path, const float *map, int size) {
  char dict[128];
  int n = snprintf(dict, sizeof dict, "{'descr': '%cf4', 'fortran_order': False, 'shape': (%d, %d), }",
                   G_BYTE_ORDER == G_LITTLE_ENDIAN ? '<' : '>', size, size);
  size_t header_len = (size_t)n + 1; /* + '\n' */
  header_len += (64 - (10 + header_len) % 64) % 64;
  uint8_t head[10 + 128] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                            (uint8_t)(header_len & 0xff), (uint8_t)(header_len >> 8)};
  memset(head + 10, ' ', header_len);
  memcpy(head + 10, dict, (size_t)n);
  head[10 + header_len - 1] = '\n';

  FILE *f = fopen(path, "wb");
  if (!f) {
    error_msg("cannot write map %s: %s", path, g_strerror(errno));
    return 0;
  }
  size_t count = (size_t)size * size;
  int ok = fwrite(head, 1, 10 + header_len, f) == 10 + header_len &&
           fwrite(map, sizeof(float), count, f) == count;
  int saved = errno;
  if (fclose(f) != 0 && ok) {
    ok = 0;
    saved = errno;
  }
  if (!ok) {
    error_msg("cannot write map %s: %s", path, g_strerror(saved));
    g_unlink(path);
  }
  return ok;
}

static void print_json(JsonBuilder *b) {
  JsonGenerator *gen = json_generator_new();
  JsonNode *root = json_builder_get_root(b);
  json_generator_set_root(gen, root);
  gchar *text = json_generator_to_data(gen, NULL);
  progress_clear();
  printf("%s\n", text);
  fflush(stdout);
  g_free(text);
  json_node_unref(root);
  g_object_unref(gen);
}

static void print_json_error(const char *file, const char *message) {
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "file");
  json_builder_add_string_value(b, file);
  json_builder_set_member_name(b, "error");
  json_builder_add_string_value(b, message);
  json_builder_end_object(b);
  print_json(b);
  g_object_unref(b);
}

/* ---- one image ------------------------------------------------------------- */

typedef struct {
  fap_detector *det;
  double threshold;
  const char *heatmap_dir, *map_dir;
  int json;
  int name_width;
  GHashTable *stems; /* stem -> first file that used it, to warn on overwrites */
} infer_ctx;

/* Returns 1 if the image was scored and every requested output written. */
static int process(infer_ctx *ctx, const char *file, int *anomalous) {
  GError *error = NULL;
  /* EXIF orientation is left alone on purpose: the authors' loader
   * (PIL convert("RGB")) does not apply it either. */
  GdkPixbuf *image = gdk_pixbuf_new_from_file(file, &error);
  if (!image) {
    error_msg("cannot read image %s: %s", file, error->message);
    if (ctx->json)
      print_json_error(file, error->message);
    g_error_free(error);
    return 0;
  }
  const int w = gdk_pixbuf_get_width(image), h = gdk_pixbuf_get_height(image);
  const int channels = gdk_pixbuf_get_n_channels(image);
  if (gdk_pixbuf_get_colorspace(image) != GDK_COLORSPACE_RGB ||
      gdk_pixbuf_get_bits_per_sample(image) != 8 || (channels != 3 && channels != 4)) {
    error_msg("cannot use image %s: decoded to an unsupported layout (%d channels, %d bits)", file,
              channels, gdk_pixbuf_get_bits_per_sample(image));
    if (ctx->json)
      print_json_error(file, "unsupported pixel layout");
    g_object_unref(image);
    return 0;
  }
  /* Grey images arrive as RGB. Alpha is ignored by the core, as PIL's
   * convert("RGB") does in the reference pipeline. Rows may be padded. */
  fap_frame frame = {channels == 4 ? FAP_PIXEL_RGBA : FAP_PIXEL_RGB, w, h,
                     (size_t)gdk_pixbuf_get_rowstride(image), gdk_pixbuf_read_pixels(image)};
  fap_result r;
  fap_status st = fap_detector_run(ctx->det, &frame, &r);
  if (st != FAP_OK) {
    error_msg("inference failed on %s: %s", file, fap_status_string(st));
    if (ctx->json)
      print_json_error(file, fap_status_string(st));
    g_object_unref(image);
    return 0;
  }
  const int size = r.map_size;
  float lo = INFINITY, hi = -INFINITY;
  for (size_t i = 0; i < (size_t)size * size; i++) {
    lo = r.map[i] < lo ? r.map[i] : lo;
    hi = r.map[i] > hi ? r.map[i] : hi;
  }
  *anomalous = r.score >= ctx->threshold;

  int ok = 1;
  gchar *heatmap_path = NULL, *map_path = NULL;
  if (ctx->heatmap_dir || ctx->map_dir) {
    gchar *stem = file_stem(file);
    const char *first = g_hash_table_lookup(ctx->stems, stem);
    if (first)
      error_msg("warning: %s and %s share the name '%s'; the outputs of the latter overwrite "
                "those of the former",
                first, file, stem);
    else
      g_hash_table_insert(ctx->stems, g_strdup(stem), g_strdup(file));
    if (ctx->heatmap_dir) {
      gchar *name = g_strconcat(stem, "_heatmap.png", NULL);
      heatmap_path = g_build_filename(ctx->heatmap_dir, name, NULL);
      g_free(name);
      if (!write_heatmap(heatmap_path, image, r.map, size)) {
        ok = 0;
        g_clear_pointer(&heatmap_path, g_free);
      }
    }
    if (ctx->map_dir) {
      gchar *name = g_strconcat(stem, "_map.npy", NULL);
      map_path = g_build_filename(ctx->map_dir, name, NULL);
      g_free(name);
      if (!write_npy(map_path, r.map, size)) {
        ok = 0;
        g_clear_pointer(&map_path, g_free);
      }
    }
    g_free(stem);
  }

  if (ctx->json) {
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "file");
    json_builder_add_string_value(b, file);
    json_builder_set_member_name(b, "width");
    json_builder_add_int_value(b, w);
    json_builder_set_member_name(b, "height");
    json_builder_add_int_value(b, h);
    json_builder_set_member_name(b, "score");
    json_builder_add_double_value(b, r.score);
    json_builder_set_member_name(b, "anomalous");
    json_builder_add_boolean_value(b, *anomalous);
    json_builder_set_member_name(b, "threshold");
    json_builder_add_double_value(b, ctx->threshold);
    json_builder_set_member_name(b, "map_size");
    json_builder_add_int_value(b, size);
    json_builder_set_member_name(b, "map_min");
    json_builder_add_double_value(b, lo);
    json_builder_set_member_name(b, "map_max");
    json_builder_add_double_value(b, hi);
    json_builder_set_member_name(b, "total_ms");
    json_builder_add_double_value(b, r.total_ms);
    json_builder_set_member_name(b, "stage_ms");
    json_builder_begin_object(b);
    for (int s = 0; s < FAP_STAGE_COUNT; s++) {
      json_builder_set_member_name(b, fap_stage_name((fap_stage)s));
      json_builder_add_double_value(b, r.stage_ms[s]);
    }
    json_builder_end_object(b);
    if (heatmap_path) {
      json_builder_set_member_name(b, "heatmap");
      json_builder_add_string_value(b, heatmap_path);
    }
    if (map_path) {
      json_builder_set_member_name(b, "map");
      json_builder_add_string_value(b, map_path);
    }
    json_builder_end_object(b);
    print_json(b);
    g_object_unref(b);
  } else {
    gchar *dims = g_strdup_printf("%dx%d", w, h);
    progress_clear();
    printf("%-*s  %11s  %7.4f  %-9s  %9.1f\n", ctx->name_width, file, dims, r.score,
           *anomalous ? "yes" : "no", r.total_ms);
    fflush(stdout);
    g_free(dims);
  }
  g_free(heatmap_path);
  g_free(map_path);
  g_object_unref(image);
  return ok;
}

/* ---- main ------------------------------------------------------------------ */

int main(int argc, char **argv) {
  int image_size = 0, threads = 0, json = 0, reference = 0;
  double sigma = -1.0, threshold = NAN;
  char *heatmap_dir = NULL, *map_dir = NULL;
  GOptionEntry entries[] = {
      {"image-size", 0, 0, G_OPTION_ARG_INT, &image_size,
       "side S the model runs at (multiple of the patch size; default: the model's)", "S"},
      {"sigma", 0, 0, G_OPTION_ARG_DOUBLE, &sigma,
       "Gaussian sigma of the map in pixels (0 = none; default: the model's)", "X"},
      {"threads", 0, 0, G_OPTION_ARG_INT, &threads, "CPU threads (0 = all cores)", "N"},
      {"threshold", 0, 0, G_OPTION_ARG_DOUBLE, &threshold,
       "score at or above which an image is anomalous (default: the model's image_threshold, "
       "else 0.5)",
       "T"},
      {"heatmap-dir", 0, 0, G_OPTION_ARG_FILENAME, &heatmap_dir,
       "write <stem>_heatmap.png (input at S x S blended with the map) here", "DIR"},
      {"map-dir", 0, 0, G_OPTION_ARG_FILENAME, &map_dir,
       "write <stem>_map.npy (float32 [S, S] anomaly map) here", "DIR"},
      {"json", 0, 0, G_OPTION_ARG_NONE, &json, "one JSON object per image on stdout", NULL},
      {"reference", 0, 0, G_OPTION_ARG_NONE, &reference, "use the plain reference loops", NULL},
      {NULL},
  };
  GOptionContext *octx = g_option_context_new("MODEL IMAGE|DIR... - score images for anomalies");
  g_option_context_add_main_entries(octx, entries, NULL);
  g_option_context_set_description(
      octx, "A DIR is scanned (sorted, not recursively) for image files.\n"
            "Without a model file, make one with:\n  " GEN_RANDOM_HINT "\n");
  GError *error = NULL;
  if (!g_option_context_parse(octx, &argc, &argv, &error) || argc < 3 || image_size < 0 ||
      threads < 0) {
    gchar *help = g_option_context_get_help(octx, TRUE, NULL);
    fprintf(stderr, "%s\n%s",
            error ? error->message
                  : argc < 3 ? "a MODEL and at least one IMAGE or DIR expected"
                             : "--image-size and --threads must not be negative",
            help);
    g_free(help);
    g_clear_error(&error);
    g_option_context_free(octx);
    return 2;
  }
  g_option_context_free(octx);

  progress_on = isatty(STDERR_FILENO);
  fap_set_log_callback(log_to_stderr, NULL);
  int rc = 0;

  /* Inputs first: a typo in a path should not wait for a model load. */
  GHashTable *exts = image_extensions();
  GPtrArray *files = g_ptr_array_new_with_free_func(g_free);
  for (int i = 2; i < argc; i++) {
    if (g_file_test(argv[i], G_FILE_TEST_IS_DIR)) {
      if (!add_directory(files, exts, argv[i]))
        rc = 1;
    } else {
      g_ptr_array_add(files, g_strdup(argv[i])); /* a missing file is reported in turn */
    }
  }
  g_hash_table_unref(exts);

  fap_model *model = NULL;
  fap_detector *det = NULL;
  if (files->len == 0) {
    if (!rc)
      error_msg("no images to process");
    rc = 1;
    goto done;
  }
  const char *dirs[] = {heatmap_dir, map_dir};
  for (int i = 0; i < 2; i++)
    if (dirs[i] && g_mkdir_with_parents(dirs[i], 0755) != 0) {
      error_msg("cannot create output directory %s: %s", dirs[i], g_strerror(errno));
      rc = 1;
      goto done;
    }
  if (fap_model_load(argv[1], &model) != FAP_OK) {
    if (!g_file_test(argv[1], G_FILE_TEST_EXISTS))
      error_msg("model file %s does not exist; make one with:\n  " GEN_RANDOM_HINT, argv[1]);
    else
      error_msg("cannot load model %s (see the message above)", argv[1]);
    rc = 1;
    goto done;
  }
  const fap_config *cfg = fap_model_config(model);
  const char *threshold_from = "--threshold";
  if (isnan(threshold)) {
    threshold = cfg->image_threshold >= 0 ? cfg->image_threshold : 0.5;
    threshold_from = cfg->image_threshold >= 0 ? "the model's image_threshold" : "default";
  }

  fap_detector_options o;
  fap_detector_options_init(&o);
  o.threads = threads;
  o.image_size = image_size;
  o.sigma = (float)sigma;
  o.reference = reference;
  if (fap_detector_new(model, &o, &det) != FAP_OK) {
    error_msg("cannot create a detector for %s (see the message above)", argv[1]);
    rc = 1;
    goto done;
  }

  infer_ctx ctx = {det, threshold, heatmap_dir, map_dir, json, 4,
                   g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free)};
  for (guint i = 0; i < files->len; i++) {
    int len = (int)g_utf8_strlen(files->pdata[i], -1);
    ctx.name_width = len > ctx.name_width ? len : ctx.name_width;
  }
  if (!json) {
    printf("model %s: S=%d, %s backend, threshold %.4f (%s)\n\n", argv[1],
           fap_detector_image_size(det), fap_backend_name(fap_detector_backend(det)), threshold,
           threshold_from);
    printf("%-*s  %11s  %7s  %-9s  %9s\n", ctx.name_width, "file", "size", "score", "anomalous",
           "ms");
    fflush(stdout);
  }
  int n_anomalous = 0, failed = 0;
  for (guint i = 0; i < files->len; i++) {
    const char *file = files->pdata[i];
    gchar *base = g_path_get_basename(file);
    progress_show((int)i + 1, (int)files->len, base);
    g_free(base);
    int anomalous = 0;
    if (!process(&ctx, file, &anomalous))
      failed++;
    n_anomalous += anomalous;
  }
  progress_clear();
  if (!json)
    printf("\n%u image%s: %d anomalous, %d failed\n", files->len, files->len == 1 ? "" : "s",
           n_anomalous, failed);
  if (failed)
    rc = 1;
  g_hash_table_unref(ctx.stems);

done:
  fap_detector_free(det);
  fap_model_free(model);
  g_ptr_array_free(files, TRUE);
  g_free(heatmap_dir);
  g_free(map_dir);
  return rc;
}
