/* faprompt-infer: anomaly scores (and optionally heatmaps and raw maps) for
 * image files, with one detector reused for every image.
 *
 *   faprompt-infer MODEL IMAGE|DIR... [--image-size S] [--sigma X] [--threads N]
 *                  [--threshold T] [--heatmap-dir DIR] [--pixel-threshold T]
 *                  [--heatmap-alpha A] [--heatmap-min V] [--heatmap-max V] [--map-dir DIR]
 *                  [--map-format npy|png16] [--json] [--reference] [--roi x,y,w,h]...
 *                  [--tiles CxR|auto [--tile-overlap N] [--tile-max-patch-pixels K]]
 *
 * Images are decoded by gdk-pixbuf (PNG, JPEG, BMP, TIFF, ... whatever loaders
 * are installed). A DIR is scanned, sorted and non-recursively, for files whose
 * extension one of those loaders claims. stdout carries the results only (a
 * table, or one JSON object per line with --json); errors and the progress line
 * go to stderr. An image is anomalous when its score is above the threshold
 * (as the faprompt element decides). --roi (repeatable) scores rectangles
 * of each image instead of the whole image, as the element's roi property
 * does: each one resized on its own (fap_frame.crop), all in one batch; the
 * image's score is the highest, anomalous when any is. --tiles cuts the
 * image into C x R tiles (fap_tiles_layout) run the same way, so a small
 * defect on a large image covers more than a fraction of a patch; their maps
 * are stitched into one map of the image (fap_tiles_stitch, docs/SPEC.md
 * section 1.2, Tiles); --tiles auto picks each image's grid as the
 * element's tiles=auto does (fap_tiles_auto, section 1.2, Automatic tiles).
 * Exit status: 0 all images done, 1 some image or the
 * model failed, 2 bad usage.
 */
#include "fap.h"

#include "imageio.h"
#include "npy.h"
#include "cli_options.h"
#include "progress.h"

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

#define MAX_ROIS 16
/* The stitched map of a tiled image is M x M, M = S * max(C, R) (as many
 * samples along the longer side of the grid as its tiles' maps hold), at
 * most this many (a 4096 x 4096 map is 64 MiB). */
#define MAX_STITCHED_SIDE 4096

#define GEN_RANDOM_HINT                                                                            \
  "/usr/bin/python3 models/faprompt-gen-random --preset tiny -o model.safetensors"

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
  fap_blend blend; /* the heatmap's drawing, as the element's properties */
  const char *heatmap_dir, *map_dir;
  int map_png16; /* raw map as 16-bit PNG instead of .npy */
  int authors_map; /* --map-dir gets the authors' map (intermediate map_sum) */
  int json;
  int name_width;
  GHashTable *stems; /* stem -> first file that used it, to warn on overwrites */
  int n_rois;        /* 0: the whole image */
  fap_rect rois[MAX_ROIS];
  int tile_cols, tile_rows, tile_overlap; /* --tiles (0 x 0: none), --tile-overlap */
  int tiles_auto, tile_max_patch_pixels, grid; /* --tiles auto: the bound, S / P */
} infer_ctx;

/* "x,y,w,h": four whole numbers, w and h at least 1; 0 when not */
static int parse_roi(const char *text, fap_rect *r) {
  gchar **parts = g_strsplit(text, ",", -1);
  int v[4], ok = g_strv_length(parts) == 4;
  for (int i = 0; ok && i < 4; i++) {
    guint64 n = 0;
    ok = g_ascii_string_to_unsigned(g_strstrip(parts[i]), 10, 0, 32768, &n, NULL);
    v[i] = (int)n;
  }
  g_strfreev(parts);
  if (!ok || v[2] < 1 || v[3] < 1)
    return 0;
  *r = (fap_rect){v[0], v[1], v[2], v[3]};
  return 1;
}

static void add_roi_json(JsonBuilder *b, const fap_rect *c, const fap_result *r, double threshold,
                         const char *map_path) { /* a --roi rectangle, or a tile */
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "x");
  json_builder_add_int_value(b, c->x);
  json_builder_set_member_name(b, "y");
  json_builder_add_int_value(b, c->y);
  json_builder_set_member_name(b, "width");
  json_builder_add_int_value(b, c->width);
  json_builder_set_member_name(b, "height");
  json_builder_add_int_value(b, c->height);
  json_builder_set_member_name(b, "score");
  json_builder_add_double_value(b, r->score);
  json_builder_set_member_name(b, "anomalous");
  json_builder_add_boolean_value(b, r->score > threshold);
  if (map_path) {
    json_builder_set_member_name(b, "map");
    json_builder_add_string_value(b, map_path);
  }
  json_builder_end_object(b);
}

/* Returns 1 if the image was scored and every requested output written. */
static int process(infer_ctx *ctx, const char *file, int *anomalous) {
  GError *error = NULL;
  fap_frame frame;
  GdkPixbuf *image = imageio_load(file, &frame, &error);
  if (!image) {
    tool_error("cannot read image %s: %s", file, error->message);
    if (ctx->json)
      print_json_error(file, error->message);
    g_error_free(error);
    return 0;
  }
  const int w = frame.width, h = frame.height;
  /* the rectangles (--roi) or the tiles (--tiles), each a crop of the image,
   * in one batch */
  const int tiled = ctx->tile_cols > 0;
  int cols = ctx->tile_cols, rows = ctx->tile_rows;
  if (ctx->tiles_auto) { /* this image's grid (docs/SPEC.md section 1.2, Automatic tiles) */
    fap_rect whole = {0, 0, w, h};
    int met = 1;
    double worst = 0;
    if (fap_tiles_auto(&whole, 1, ctx->grid, ctx->tile_max_patch_pixels, ctx->tile_overlap,
                       MAX_ROIS, &cols, &rows, &met, &worst) == FAP_OK &&
        !met)
      tool_error("--tiles auto on %s (%dx%d): %dx%d tiles (at most %d) leave a patch %.1f "
                   "pixels, more than --tile-max-patch-pixels %d",
                   file, w, h, cols, rows, MAX_ROIS, worst, ctx->tile_max_patch_pixels);
  }
  const int n = ctx->n_rois ? ctx->n_rois : tiled ? cols * rows : 1;
  fap_frame frames[MAX_ROIS];
  fap_result results[MAX_ROIS];
  fap_rect tiles[MAX_ROIS];
  fap_status st = FAP_OK;
  if (tiled)
    st = fap_tiles_layout((fap_rect){0, 0, w, h}, cols, rows,
                          ctx->tile_overlap, tiles);
  for (int i = 0; i < n; i++) {
    frames[i] = frame;
    if (ctx->n_rois)
      frames[i].crop = ctx->rois[i];
    else if (tiled)
      frames[i].crop = tiles[i];
  }
  if (st != FAP_OK) {
    /* an overlap too large for this image says which and why */
    tool_error("--tiles %dx%d --tile-overlap %d on %s (%dx%d): %s", cols,
               rows, ctx->tile_overlap, file, w, h, fap_last_error());
    if (ctx->json)
      print_json_error(file, fap_last_error());
    g_object_unref(image);
    return 0;
  }
  st = fap_detector_run_batch(ctx->det, frames, n, NULL, results);
  if (st != FAP_OK) {
    /* a --roi outside this image says which and why (fap_last_error) */
    tool_error("inference failed on %s (%dx%d): %s", file, w, h, fap_last_error());
    if (ctx->json)
      print_json_error(file, fap_last_error());
    g_object_unref(image);
    return 0;
  }
  fap_result r = results[0]; /* the image's: the highest score */
  for (int i = 1; i < n; i++)
    if (results[i].score > r.score)
      r.score = results[i].score;
  int size = r.map_size;
  float *stitched = NULL; /* the tiles' maps as one map of the image */
  if (tiled) {
    const float *maps[MAX_ROIS];
    for (int i = 0; i < n; i++)
      maps[i] = results[i].map;
    int side = cols > rows ? cols : rows;
    size = size * side < MAX_STITCHED_SIDE ? size * side : MAX_STITCHED_SIDE;
    stitched = g_new(float, (size_t)size * size);
    fap_tiles_stitch((fap_rect){0, 0, w, h}, cols, rows, ctx->tile_overlap,
                     maps, r.map_size, stitched, size, size); /* the layout above passed */
    r.map = stitched;
  }
  const int n_maps = tiled ? 1 : n; /* the maps that describe the image */
  float lo = INFINITY, hi = -INFINITY;
  for (int k = 0; k < n_maps; k++) {
    const float *m = tiled ? stitched : results[k].map;
    for (size_t i = 0; i < (size_t)size * size; i++) {
      lo = m[i] < lo ? m[i] : lo;
      hi = m[i] > hi ? m[i] : hi;
    }
  }
  /* Above the threshold, as the faprompt element decides (any rectangle). */
  *anomalous = r.score > ctx->threshold;

  int ok = 1;
  gchar *heatmap_path = NULL, *map_path = NULL, *roi_maps[MAX_ROIS] = {NULL};
  if (ctx->heatmap_dir || ctx->map_dir) {
    gchar *stem = imageio_stem(file);
    const char *first = g_hash_table_lookup(ctx->stems, stem);
    if (first)
      tool_error("warning: %s and %s share the name '%s'; the outputs of the latter overwrite "
                 "those of the former",
                 first, file, stem);
    else
      g_hash_table_insert(ctx->stems, g_strdup(stem), g_strdup(file));
    if (ctx->heatmap_dir) {
      gchar *name = g_strconcat(stem, "_heatmap.png", NULL);
      heatmap_path = g_build_filename(ctx->heatmap_dir, name, NULL);
      g_free(name);
      const float *maps[MAX_ROIS];
      fap_rect crops[MAX_ROIS];
      for (int i = 0; i < n_maps; i++) {
        maps[i] = tiled ? stitched : results[i].map;
        crops[i] = tiled ? (fap_rect){0, 0, 0, 0} : frames[i].crop;
      }
      if (!imageio_write_heatmap_crops(heatmap_path, image, maps, crops, n_maps, size,
                                       &ctx->blend, &error)) {
        tool_error("cannot write heatmap %s: %s", heatmap_path, error->message);
        g_clear_error(&error);
        ok = 0;
        g_clear_pointer(&heatmap_path, g_free);
      }
    }
    for (int i = 0; ctx->map_dir && ctx->n_rois && i < n; i++) { /* one map per rectangle */
      gchar *name = g_strdup_printf("%s_roi%d_map.%s", stem, i, ctx->map_png16 ? "png" : "npy");
      roi_maps[i] = g_build_filename(ctx->map_dir, name, NULL);
      g_free(name);
      int written = ctx->map_png16 ? imageio_write_map_png16(roi_maps[i], results[i].map, size, &error)
                                   : npy_write_f32_2d(roi_maps[i], results[i].map, size, size, &error);
      if (!written) {
        tool_error("cannot write map %s: %s", roi_maps[i], error->message);
        g_clear_error(&error);
        ok = 0;
        g_clear_pointer(&roi_maps[i], g_free);
      }
    }
    if (ctx->map_dir && !ctx->n_rois) {
      gchar *name = g_strconcat(stem, ctx->map_png16 ? "_map.png" : "_map.npy", NULL);
      map_path = g_build_filename(ctx->map_dir, name, NULL);
      g_free(name);
      const float *values = r.map;
      fap_tensor_view sum;
      if (ctx->authors_map && !tiled &&
          fap_detector_intermediate(ctx->det, "map_sum", &sum) == FAP_OK)
        values = sum.data; /* AnomalyCLIP: the sum over out layers, in [0, L] */
      int written = ctx->map_png16 ? imageio_write_map_png16(map_path, values, size, &error)
                                   : npy_write_f32_2d(map_path, values, size, size, &error);
      if (!written) {
        tool_error("cannot write map %s: %s", map_path, error->message);
        g_clear_error(&error);
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
    if (ctx->n_rois || tiled) {
      if (tiled) { /* the grid, as --tiles gave it or auto picked it */
        gchar *grid = g_strdup_printf("%dx%d", cols, rows);
        json_builder_set_member_name(b, "tile_grid");
        json_builder_add_string_value(b, grid);
        g_free(grid);
      }
      json_builder_set_member_name(b, ctx->n_rois ? "rois" : "tiles");
      json_builder_begin_array(b);
      for (int i = 0; i < n; i++)
        add_roi_json(b, &frames[i].crop, &results[i], ctx->threshold, roi_maps[i]);
      json_builder_end_array(b);
    }
    json_builder_end_object(b);
    print_json(b);
    g_object_unref(b);
  } else {
    gchar *dims = g_strdup_printf("%dx%d", w, h);
    progress_clear();
    printf("%-*s  %11s  %7.4f  %-9s  %9.1f\n", ctx->name_width, file, dims, r.score,
           *anomalous ? "yes" : "no", r.total_ms);
    for (int i = 0; (ctx->n_rois || tiled) && i < n; i++) {
      const fap_rect *c = &frames[i].crop;
      gchar *rect = g_strdup_printf("  %s %d,%d,%d,%d", tiled ? "tile" : "roi", c->x, c->y,
                                    c->width, c->height);
      printf("%-*s  %11s  %7.4f  %-9s\n", ctx->name_width, rect, "", results[i].score,
             results[i].score > ctx->threshold ? "yes" : "no");
      g_free(rect);
    }
    fflush(stdout);
    g_free(dims);
  }
  for (int i = 0; i < n; i++)
    g_free(roi_maps[i]);
  g_free(heatmap_path);
  g_free(map_path);
  g_free(stitched);
  g_object_unref(image);
  return ok;
}

/* ---- main ------------------------------------------------------------------ */

int main(int argc, char **argv) {
  int image_size = 0, threads = 0, json = 0, reference = 0, verbose = 0, authors_map = 0;
  double sigma = -1.0, threshold = NAN, pixel_threshold = NAN, heatmap_alpha = 0.5;
  double heatmap_min = 0.0, heatmap_max = 1.0;
  char *heatmap_dir = NULL, *map_dir = NULL, *map_format = NULL, *backend = NULL;
  char *precision_name = NULL;
  char **roi_texts = NULL;
  char *tiles_text = NULL;
  int device = 0, tile_overlap = 0, tile_max_patch_pixels = 32;
  GOptionEntry entries[] = {
      {"backend", 0, 0, G_OPTION_ARG_STRING, &backend,
       "auto (default: CUDA when the CUDA module loads and a device answers, else the CPU), cpu "
       "or cuda",
       "B"},
      {"device", 0, 0, G_OPTION_ARG_INT, &device, "CUDA device ordinal (default 0)", "N"},
      {"precision", 0, 0, G_OPTION_ARG_STRING, &precision_name, TOOL_PRECISION_HELP, "P"},
      {"image-size", 0, 0, G_OPTION_ARG_INT, &image_size,
       "side S the model runs at (multiple of the patch size; default: the model's)", "S"},
      {"sigma", 0, 0, G_OPTION_ARG_DOUBLE, &sigma,
       "Gaussian sigma of the map in pixels (0 = none; default: the model's)", "X"},
      {"threads", 0, 0, G_OPTION_ARG_INT, &threads, "CPU threads (0 = all cores)", "N"},
      {"threshold", 0, 0, G_OPTION_ARG_DOUBLE, &threshold,
       "score above which an image is anomalous (default: the model's image_threshold, from "
       "its metadata or its .calibration.json, else 0.5)",
       "T"},
      {"heatmap-dir", 0, 0, G_OPTION_ARG_FILENAME, &heatmap_dir,
       "write <stem>_heatmap.png (the image with the map drawn in, exactly as the faprompt "
       "element draws it) here",
       "DIR"},
      {"pixel-threshold", 0, 0, G_OPTION_ARG_DOUBLE, &pixel_threshold,
       "heatmap: map values above this are drawn (default: the model's pixel_threshold, else "
       "0.5; the element's pixel-threshold)",
       "T"},
      {"heatmap-alpha", 0, 0, G_OPTION_ARG_DOUBLE, &heatmap_alpha,
       "heatmap: opacity at the top of the scale, 0..1 (default 0.5)", "A"},
      {"heatmap-min", 0, 0, G_OPTION_ARG_DOUBLE, &heatmap_min,
       "heatmap: map value of the first colour (blue; default 0)", "V"},
      {"heatmap-max", 0, 0, G_OPTION_ARG_DOUBLE, &heatmap_max,
       "heatmap: map value of the last colour (red; default 1)", "V"},
      {"map-dir", 0, 0, G_OPTION_ARG_FILENAME, &map_dir,
       "write the raw S x S anomaly map of each image here (see --map-format)", "DIR"},
      {"authors-map", 0, 0, G_OPTION_ARG_NONE, &authors_map,
       "--map-dir gets the map on the authors' scale: for an AnomalyCLIP model the sum of its "
       "out layers' maps (in [0, L], what their test.py returns) instead of the result map (that "
       "sum / L, in [0, 1], which the heatmap, the thresholds and the element use); FAPrompt "
       "maps are the same either way",
       NULL},
      {"map-format", 0, 0, G_OPTION_ARG_STRING, &map_format,
       "npy: <stem>_map.npy, float32 [S, S] (default); png16: <stem>_map.png, 16-bit grey, "
       "value * 65535",
       "F"},
      {"json", 0, 0, G_OPTION_ARG_NONE, &json, "one JSON object per image on stdout", NULL},
      {"roi", 0, 0, G_OPTION_ARG_STRING_ARRAY, &roi_texts,
       "score this rectangle (left, top, width, height in image pixels) instead of the whole "
       "image, resized on its own as the faprompt element's roi property does; repeat for more "
       "(at most 16, all in one batch): the image's score is the highest, anomalous when any "
       "is; --map-dir writes <stem>_roi<i>_map per rectangle",
       "x,y,w,h"},
      {"tiles", 0, 0, G_OPTION_ARG_STRING, &tiles_text,
       "cut the whole image into C columns and R rows of equal tiles (at most 16 in all, one "
       "batch), each resized on its own: a small defect on a large image then covers more than "
       "a fraction of a patch; the image's score is the highest tile's, the map (--map-dir, "
       "--heatmap-dir) the tiles' maps stitched into one of S * max(C, R) squared (at most "
       "4096) over the image (docs/SPEC.md section 1.2, Tiles); the JSON lists the tiles and "
       "their scores. \"auto\": per image, the fewest tiles (at most 16) for which one model "
       "patch covers at most --tile-max-patch-pixels image pixels along each axis, as the "
       "element's tiles=auto (docs/SPEC.md section 1.2, Automatic tiles; JSON \"tile_grid\"). "
       "Not with --roi",
       "CxR|auto"},
      {"tile-max-patch-pixels", 0, 0, G_OPTION_ARG_INT, &tile_max_patch_pixels,
       "--tiles auto: the most image pixels one model patch may cover along each axis "
       "(default 32)",
       "K"},
      {"tile-overlap", 0, 0, G_OPTION_ARG_INT, &tile_overlap,
       "--tiles: neighbouring tiles overlap by at least N pixels (default 0); their maps are "
       "blended across the overlap",
       "N"},
      {"reference", 0, 0, G_OPTION_ARG_NONE, &reference, "use the plain reference loops", NULL},
      {"verbose", 'v', 0, G_OPTION_ARG_NONE, &verbose, "also print the core's info messages", NULL},
      {NULL},
  };
  GOptionContext *octx = g_option_context_new("MODEL IMAGE|DIR... - score images for anomalies");
  g_option_context_add_main_entries(octx, entries, NULL);
  g_option_context_set_description(
      octx, "A DIR is scanned (sorted, not recursively) for image files.\n"
            "Without a model file, make one with:\n  " GEN_RANDOM_HINT "\n");
  GError *error = NULL;
  int parsed = g_option_context_parse(octx, &argc, &argv, &error);
  int png16 = map_format && strcmp(map_format, "png16") == 0;
  fap_backend_kind backend_kind = FAP_BACKEND_AUTO;
  int backend_ok = 1;
  if (backend && strcmp(backend, "cpu") == 0)
    backend_kind = FAP_BACKEND_CPU;
  else if (backend && strcmp(backend, "cuda") == 0)
    backend_kind = FAP_BACKEND_CUDA;
  else if (backend && strcmp(backend, "auto") != 0)
    backend_ok = 0;
  fap_precision precision;
  const int precision_ok = tool_parse_precision(precision_name, &precision);
  fap_rect rois[MAX_ROIS] = {{0}};
  int n_rois = 0, rois_ok = 1;
  const char *bad_roi = NULL;
  for (char **t = roi_texts; parsed && t && *t; t++) {
    if (n_rois == MAX_ROIS) {
      rois_ok = 0;
      bad_roi = *t;
      break;
    }
    if (!parse_roi(*t, &rois[n_rois])) {
      bad_roi = *t;
      break;
    }
    n_rois++;
  }
  int tile_cols = 0, tile_rows = 0;
  const int tiles_auto = tiles_text && g_ascii_strcasecmp(tiles_text, "auto") == 0;
  if (tiles_auto) /* the grid is picked per image; 1 x 1 marks "tiled" */
    tile_cols = tile_rows = 1;
  const int tiles_ok =
      !tiles_text || tiles_auto || tool_parse_tiles(tiles_text, &tile_cols, &tile_rows);
  gchar *tiles_usage =
      !tiles_ok ? g_strdup_printf("--tiles \"%s\" is not CxR: two whole numbers of at least 1 "
                                  "joined by an x (columns x rows), e.g. 3x2, or auto",
                                  tiles_text)
      : tile_max_patch_pixels < 1
          ? g_strdup_printf("--tile-max-patch-pixels %d: at least 1", tile_max_patch_pixels)
      : tile_cols * tile_rows > MAX_ROIS
          ? g_strdup_printf("--tiles %s: %d tiles, at most %d (one batch)", tiles_text,
                            tile_cols * tile_rows, MAX_ROIS)
          : NULL;
  gchar *roi_usage = bad_roi ? g_strdup_printf(rois_ok ? "--roi \"%s\" is not x,y,w,h: four whole "
                                                         "numbers of pixels, width and height at "
                                                         "least 1"
                                                       : "--roi \"%s\": at most %d rectangles",
                                               bad_roi, MAX_ROIS)
                             : NULL;
  const char *usage = !parsed                                         ? error->message
                      : roi_usage                                     ? roi_usage
                      : tiles_usage                                   ? tiles_usage
                      : tiles_text && n_rois                          ? "--tiles cuts the whole image into tiles; it does not combine with --roi"
                      : tile_overlap < 0                              ? "--tile-overlap must not be negative"
                      : tile_overlap && !tiles_text                   ? "--tile-overlap needs --tiles"
                      : tiles_text && authors_map                     ? "--authors-map is one detector map; with --tiles the map is stitched from the tiles' maps"
                      : argc < 3                                      ? "a MODEL and at least one IMAGE or DIR expected"
                      : image_size < 0 || threads < 0 || device < 0   ? "--image-size, --threads and --device must not be negative"
                      : !backend_ok                                   ? "--backend must be auto, cpu or cuda"
                      : !precision_ok                                 ? "--precision must be auto, f32, f16, bf16 or int8"
                      : map_format && !png16 && strcmp(map_format, "npy") != 0 ? "--map-format must be npy or png16"
                      : png16 && !imageio_have_png16()                ? "--map-format png16 needs a build with libpng (Debian: libpng-dev)"
                      : png16 && authors_map                          ? "--authors-map keeps the authors' scale [0, L], which a png16 map (values in [0, 1] times 65535) cannot hold; use --map-format npy"
                      : !(heatmap_alpha >= 0 && heatmap_alpha <= 1)    ? "--heatmap-alpha must be in [0, 1]"
                      : !(heatmap_max > heatmap_min)                  ? "--heatmap-max must be above --heatmap-min"
                                                                      : NULL;
  if (usage) {
    int rc = tool_usage_error("faprompt-infer", octx, usage);
    g_clear_error(&error);
    g_option_context_free(octx);
    g_free(heatmap_dir);
    g_free(map_dir);
    g_free(map_format);
    g_free(backend);
    g_free(precision_name);
    g_free(roi_usage);
    g_free(tiles_usage);
    g_free(tiles_text);
    g_strfreev(roi_texts);
    return rc;
  }
  g_option_context_free(octx);
  tool_init("faprompt-infer", verbose);
  int rc = 0;

  /* Inputs first: a typo in a path should not wait for a model load. */
  GHashTable *exts = imageio_extensions();
  GPtrArray *files = g_ptr_array_new_with_free_func(g_free);
  for (int i = 2; i < argc; i++) {
    if (g_file_test(argv[i], G_FILE_TEST_IS_DIR)) {
      int n = imageio_list_dir(files, exts, argv[i], &error);
      if (n < 0) {
        tool_error("cannot read directory %s: %s", argv[i], error->message);
        g_clear_error(&error);
        rc = 1;
      } else if (n == 0) {
        tool_error("no images found in directory %s (looked for files ending in an image "
                   "extension gdk-pixbuf can read, e.g. .png .jpg .jpeg .bmp .tif .tiff)",
                   argv[i]);
        rc = 1;
      }
    } else {
      g_ptr_array_add(files, g_strdup(argv[i])); /* a missing file is reported in turn */
    }
  }
  g_hash_table_unref(exts);

  fap_model *model = NULL;
  fap_detector *det = NULL;
  if (files->len == 0) {
    if (!rc)
      tool_error("no images to process");
    rc = 1;
    goto done;
  }
  const char *dirs[] = {heatmap_dir, map_dir};
  for (int i = 0; i < 2; i++)
    if (dirs[i] && g_mkdir_with_parents(dirs[i], 0755) != 0) {
      tool_error("cannot create output directory %s: %s", dirs[i], g_strerror(errno));
      rc = 1;
      goto done;
    }
  if (fap_model_load(argv[1], &model) != FAP_OK) {
    if (!g_file_test(argv[1], G_FILE_TEST_EXISTS))
      tool_error("model file %s does not exist; make one with:\n  " GEN_RANDOM_HINT, argv[1]);
    else
      tool_error("cannot load model %s (see the message above)", argv[1]);
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
  o.backend = backend_kind;
  o.device_id = device;
  o.precision = precision;
  o.threads = threads;
  o.image_size = image_size;
  o.sigma = (float)sigma;
  o.reference = reference;
  o.batch = n_rois        ? n_rois
            : tiles_auto  ? MAX_ROIS /* the most an image's grid may have */
            : tile_cols   ? tile_cols * tile_rows
                          : 1; /* an image's crops in one batch */
  /* the authors' map of an AnomalyCLIP model is an intermediate (map_sum) */
  o.keep_intermediates = authors_map && map_dir && cfg->family == FAP_FAMILY_ANOMALYCLIP;
  if (fap_detector_new(model, &o, &det) != FAP_OK) {
    tool_error("cannot create a detector for %s (see the message above)", argv[1]);
    rc = 1;
    goto done;
  }

  if (isnan(pixel_threshold))
    pixel_threshold = cfg->pixel_threshold >= 0 ? cfg->pixel_threshold : 0.5;
  const fap_blend blend = {(float)heatmap_alpha, (float)pixel_threshold, (float)heatmap_min,
                           (float)heatmap_max};
  infer_ctx ctx = {det, threshold, blend, heatmap_dir, map_dir, png16, o.keep_intermediates, json,
                   4, g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free), n_rois, {{0}},
                   tile_cols, tile_rows, tile_overlap, tiles_auto, tile_max_patch_pixels,
                   fap_detector_image_size(det) / cfg->patch_size};
  memcpy(ctx.rois, rois, sizeof rois);
  for (guint i = 0; i < files->len; i++) {
    int len = (int)g_utf8_strlen(files->pdata[i], -1);
    ctx.name_width = len > ctx.name_width ? len : ctx.name_width;
  }
  for (int i = 0; i < n_rois; i++) { /* the rectangles' rows: "  roi x,y,w,h" */
    gchar *rect = g_strdup_printf("  roi %d,%d,%d,%d", rois[i].x, rois[i].y, rois[i].width,
                                  rois[i].height);
    ctx.name_width = (int)strlen(rect) > ctx.name_width ? (int)strlen(rect) : ctx.name_width;
    g_free(rect);
  }
  if (tile_cols) /* the tiles' rows: "  tile x,y,w,h", each number up to 5 digits */
    ctx.name_width = ctx.name_width > 30 ? ctx.name_width : 30;
  if (!json) {
    printf("model %s (%s): S=%d, %s backend, %s, threshold %.4f (%s)\n\n", argv[1],
           fap_family_name(cfg->family), fap_detector_image_size(det),
           fap_backend_name(fap_detector_backend(det)),
           fap_precision_name(fap_detector_precision(det)), threshold, threshold_from);
    printf("%-*s  %11s  %7s  %-9s  %9s\n", ctx.name_width, "file", "size", "score", "anomalous",
           "ms");
    fflush(stdout);
  }
  int n_anomalous = 0, failed = 0;
  for (guint i = 0; i < files->len; i++) {
    const char *file = files->pdata[i];
    gchar *base = g_path_get_basename(file);
    progress_show((int)i, (int)files->len, base);
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
  g_strfreev(roi_texts);
  g_free(tiles_text);
  fap_detector_free(det);
  fap_model_free(model);
  g_ptr_array_free(files, TRUE);
  g_free(heatmap_dir);
  g_free(map_dir);
  g_free(map_format);
  g_free(backend);
  g_free(precision_name);
  return rc;
}
