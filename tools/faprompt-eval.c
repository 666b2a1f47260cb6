/* faprompt-eval: the authors' metrics on a test set, per class and mean.
 *
 *   faprompt-eval MODEL DATASET [--layout auto|mvtec|visa|meta] [--image-size S]
 *                 [--sigma X] [--threads N] [--limit N] [--classes A,B]
 *                 [--csv FILE] [--json FILE] [--dump DIR] [--tiles CxR [--tile-overlap N]]
 *
 * Classes are evaluated one after the other: a class's pixels are kept (8
 * bytes each, see metrics.h) until its metrics are out, then released, so
 * memory follows the largest class, not the dataset. stdout carries the
 * Markdown table; progress and the timing summary go to stderr.
 *
 * Hidden, for tests: --scores-from DIR reads precomputed results instead of
 * running a model: DIR/<class>/{scores,labels,maps,masks}.npy (float32 [N],
 * 0/1 [N], float32 [N, S, S], 0/1 [N, S, S]); --dump DIR writes exactly that
 * from a real run (masks after the authors' resize and binarisation), plus
 * samples.tsv (image, mask, anomaly, defect per line, in the arrays' order).
 *
 * --tiles evaluates a tiling: each image cut into C x R tiles
 * (fap_tiles_layout) run as crops in one batch, its score the highest
 * tile's, its map the tiles' maps stitched (fap_tiles_stitch, docs/SPEC.md
 * section 1.2, Tiles) straight at S x S, the masks' resolution, so the pixel
 * metrics compare with an untiled run's.
 *
 * Exit status: 0 done, 1 a file or the model failed, 2 bad usage.
 */
#include "fap.h"

#include "dataset.h"
#include "imageio.h"
#include "mask.h"
#include "metrics.h"
#include "npy.h"
#include "cli_options.h"
#include "progress.h"

#include <errno.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the most tiles of an image (one batch), as faprompt-infer */
#define MAX_TILES 16

#define GEN_RANDOM_HINT                                                                            \
  "/usr/bin/python3 models/faprompt-gen-random --preset tiny -o model.safetensors"

typedef struct {
  char *name;
  metrics_result r;
} class_result;

typedef struct {
  double wall, model_load, listing, decode, inference, masks, metrics_add, metrics_finish, dump;
  double input_wait; /* the main thread waiting for decoded inputs */
  int images;
} timing;

/* ---- output ------------------------------------------------------------------ */

enum { COL_IMAGE_AUROC, COL_IMAGE_AP, COL_PIXEL_AUROC, COL_PIXEL_AUPRO, COL_PIXEL_AUPRO_MVTEC, NCOL };
static const char *col_key[NCOL] = {"image_auroc", "image_ap", "pixel_auroc", "pixel_aupro",
                                    "pixel_aupro_mvtec"};
static const char *col_title[NCOL] = {"image AUROC", "image AP", "pixel AUROC", "pixel AUPRO",
                                      "AUPRO@0.3 (MVTec)"};

static double col_value(const metrics_result *r, int c) {
  switch (c) {
  case COL_IMAGE_AUROC: return r->image_auroc;
  case COL_IMAGE_AP: return r->image_ap;
  case COL_PIXEL_AUROC: return r->pixel_auroc;
  case COL_PIXEL_AUPRO: return r->pixel_aupro;
  default: return r->pixel_aupro_mvtec;
  }
}

/* Mean over the classes where the metric is defined (the authors' np.mean
 * would be NaN, or their run would have raised; see tools/README.md). */
static void means(GArray *results, double mean[NCOL], int count[NCOL]) {
  for (int c = 0; c < NCOL; c++) {
    double s = 0.0;
    int n = 0;
    for (guint i = 0; i < results->len; i++) {
      double v = col_value(&g_array_index(results, class_result, i).r, c);
      if (!isnan(v)) {
        s += v;
        n++;
      }
    }
    mean[c] = n ? s / n : NAN;
    count[c] = n;
  }
}

static void print_markdown(FILE *f, GArray *results) {
  fprintf(f, "| class | images | anomalous |");
  for (int c = 0; c < NCOL; c++)
    fprintf(f, " %s |", col_title[c]);
  fprintf(f, "\n|---|---:|---:|");
  for (int c = 0; c < NCOL; c++)
    fprintf(f, "---:|");
  fputc('\n', f);
  int images = 0, anomalous = 0;
  for (guint i = 0; i < results->len; i++) {
    class_result *cr = &g_array_index(results, class_result, i);
    fprintf(f, "| %s | %d | %d |", cr->name, cr->r.n_images, cr->r.n_anomalous);
    images += cr->r.n_images;
    anomalous += cr->r.n_anomalous;
    for (int c = 0; c < NCOL; c++) {
      double v = col_value(&cr->r, c);
      if (isnan(v))
        fprintf(f, " n/a |");
      else
        fprintf(f, " %.1f |", 100.0 * v);
    }
    fputc('\n', f);
  }
  double mean[NCOL];
  int count[NCOL];
  means(results, mean, count);
  fprintf(f, "| **mean** | %d | %d |", images, anomalous);
  for (int c = 0; c < NCOL; c++) {
    if (isnan(mean[c]))
      fprintf(f, " n/a |");
    else if (count[c] < (int)results->len)
      fprintf(f, " %.1f (%d/%u) |", 100.0 * mean[c], count[c], results->len);
    else
      fprintf(f, " %.1f |", 100.0 * mean[c]);
  }
  fputc('\n', f);
}

static int write_csv(const char *path, GArray *results) {
  FILE *f = strcmp(path, "-") == 0 ? stdout : fopen(path, "w");
  if (!f) {
    tool_error("cannot write %s: %s", path, g_strerror(errno));
    return 0;
  }
  fprintf(f, "class,images,anomalous");
  for (int c = 0; c < NCOL; c++)
    fprintf(f, ",%s", col_key[c]);
  fputc('\n', f);
  double mean[NCOL];
  int count[NCOL];
  means(results, mean, count);
  int images = 0, anomalous = 0;
  for (guint i = 0; i <= results->len; i++) {
    int last = i == results->len;
    class_result *cr = last ? NULL : &g_array_index(results, class_result, i);
    if (!last) {
      /* class names come from folder names / CSV cells: quote when needed */
      if (strpbrk(cr->name, ",\"\n")) {
        gchar **parts = g_strsplit(cr->name, "\"", -1);
        gchar *q = g_strjoinv("\"\"", parts);
        fprintf(f, "\"%s\"", q);
        g_free(q);
        g_strfreev(parts);
      } else {
        fputs(cr->name, f);
      }
      fprintf(f, ",%d,%d", cr->r.n_images, cr->r.n_anomalous);
      images += cr->r.n_images;
      anomalous += cr->r.n_anomalous;
    } else {
      fprintf(f, "mean,%d,%d", images, anomalous);
    }
    for (int c = 0; c < NCOL; c++) {
      double v = last ? mean[c] : col_value(&cr->r, c);
      if (isnan(v))
        fputc(',', f);
      else
        fprintf(f, ",%.10g", v);
    }
    fputc('\n', f);
  }
  int ok = f == stdout ? fflush(f) == 0 : fclose(f) == 0;
  if (!ok)
    tool_error("cannot write %s: %s", path, g_strerror(errno));
  return ok;
}

static void add_metric(JsonBuilder *b, const char *name, double v) {
  json_builder_set_member_name(b, name);
  if (isnan(v))
    json_builder_add_null_value(b);
  else
    json_builder_add_double_value(b, v);
}

static int write_json(const char *path, GArray *results, JsonObject *run, const timing *t) {
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "run");
  JsonNode *rn = json_node_new(JSON_NODE_OBJECT);
  json_node_set_object(rn, run);
  json_builder_add_value(b, rn);
  json_builder_set_member_name(b, "classes");
  json_builder_begin_array(b);
  for (guint i = 0; i < results->len; i++) {
    class_result *cr = &g_array_index(results, class_result, i);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "class");
    json_builder_add_string_value(b, cr->name);
    json_builder_set_member_name(b, "images");
    json_builder_add_int_value(b, cr->r.n_images);
    json_builder_set_member_name(b, "anomalous");
    json_builder_add_int_value(b, cr->r.n_anomalous);
    json_builder_set_member_name(b, "pixels");
    json_builder_add_int_value(b, cr->r.n_pixels);
    json_builder_set_member_name(b, "anomalous_pixels");
    json_builder_add_int_value(b, cr->r.n_anomalous_pixels);
    json_builder_set_member_name(b, "regions");
    json_builder_add_int_value(b, cr->r.n_regions);
    json_builder_set_member_name(b, "aupro_thresholds");
    json_builder_add_int_value(b, cr->r.aupro_thresholds);
    for (int c = 0; c < NCOL; c++)
      add_metric(b, col_key[c], col_value(&cr->r, c));
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  double mean[NCOL];
  int count[NCOL];
  means(results, mean, count);
  json_builder_set_member_name(b, "mean");
  json_builder_begin_object(b);
  for (int c = 0; c < NCOL; c++)
    add_metric(b, col_key[c], mean[c]);
  json_builder_set_member_name(b, "classes_counted");
  json_builder_begin_object(b);
  for (int c = 0; c < NCOL; c++) {
    json_builder_set_member_name(b, col_key[c]);
    json_builder_add_int_value(b, count[c]);
  }
  json_builder_end_object(b);
  json_builder_end_object(b);
  if (t) {
    json_builder_set_member_name(b, "timing_s");
    json_builder_begin_object(b);
    const struct {
      const char *k;
      double v;
    } items[] = {{"total", t->wall},           {"inference", t->inference},
                 {"overhead", t->wall - t->inference},
                 {"model_load", t->model_load}, {"listing", t->listing},
                 {"input_wait", t->input_wait},
                 {"decode_overlapped", t->decode}, {"masks_overlapped", t->masks},
                 {"metrics_add", t->metrics_add}, {"metrics_finish", t->metrics_finish},
                 {"dump", t->dump}};
    for (size_t i = 0; i < G_N_ELEMENTS(items); i++) {
      json_builder_set_member_name(b, items[i].k);
      json_builder_add_double_value(b, items[i].v);
    }
    json_builder_end_object(b);
  }
  json_builder_end_object(b);
  JsonGenerator *gen = json_generator_new();
  JsonNode *root = json_builder_get_root(b);
  json_generator_set_root(gen, root);
  json_generator_set_pretty(gen, TRUE);
  gsize len;
  gchar *text = json_generator_to_data(gen, &len);
  int ok;
  if (strcmp(path, "-") == 0) {
    ok = fwrite(text, 1, len, stdout) == len && fputc('\n', stdout) != EOF && fflush(stdout) == 0;
  } else {
    GError *error = NULL;
    gchar *withnl = g_strconcat(text, "\n", NULL);
    ok = g_file_set_contents(path, withnl, -1, &error);
    g_free(withnl);
    if (!ok) {
      tool_error("cannot write %s: %s", path, error->message);
      g_error_free(error);
    }
  }
  g_free(text);
  json_node_unref(root);
  g_object_unref(gen);
  g_object_unref(b);
  return ok;
}

/* ---- --dump / --scores-from ----------------------------------------------------- */

typedef struct {
  npy_writer *maps, *masks, *scores, *labels;
  FILE *samples; /* samples.tsv: image, mask (or empty), anomaly, defect */
} dump_files;

static int dump_open(dump_files *d, const char *dir, const char *cls, int S, GError **error) {
  memset(d, 0, sizeof *d);
  gchar *cdir = g_build_filename(dir, cls, NULL);
  if (g_mkdir_with_parents(cdir, 0755) != 0) {
    g_set_error(error, TOOLS_ERROR, 0, "cannot create %s: %s", cdir, g_strerror(errno));
    g_free(cdir);
    return 0;
  }
  int64_t sq[2] = {S, S};
  gchar *p[4] = {g_build_filename(cdir, "maps.npy", NULL), g_build_filename(cdir, "masks.npy", NULL),
                 g_build_filename(cdir, "scores.npy", NULL), g_build_filename(cdir, "labels.npy", NULL)};
  d->maps = npy_writer_open(p[0], "<f4", 2, sq, error);
  d->masks = d->maps ? npy_writer_open(p[1], "|u1", 2, sq, error) : NULL;
  d->scores = d->masks ? npy_writer_open(p[2], "<f4", 0, NULL, error) : NULL;
  d->labels = d->scores ? npy_writer_open(p[3], "|u1", 0, NULL, error) : NULL;
  for (int i = 0; i < 4; i++)
    g_free(p[i]);
  if (d->labels) {
    gchar *tsv = g_build_filename(cdir, "samples.tsv", NULL);
    d->samples = fopen(tsv, "w");
    if (!d->samples)
      g_set_error(error, TOOLS_ERROR, 0, "cannot write %s: %s", tsv, g_strerror(errno));
    g_free(tsv);
  }
  g_free(cdir);
  return d->samples != NULL;
}

static int dump_close(dump_files *d, GError **error) {
  int ok = 1;
  npy_writer *w[4] = {d->maps, d->masks, d->scores, d->labels};
  for (int i = 0; i < 4; i++)
    if (!npy_writer_close(w[i], ok ? error : NULL))
      ok = 0;
  if (d->samples && fclose(d->samples) != 0 && ok) {
    g_set_error(error, TOOLS_ERROR, 0, "cannot write samples.tsv: %s", g_strerror(errno));
    ok = 0;
  }
  memset(d, 0, sizeof *d);
  return ok;
}

/* 0/1 bytes from a bool / uint8 / int array; 0 when a value is not 0 or 1. */
static uint8_t *as_binary(const npy_array *a, const char *path, GError **error) {
  uint8_t *out = g_malloc(a->count ? a->count : 1);
  for (size_t i = 0; i < a->count; i++) {
    long long v;
    if (a->elsize == 1)
      v = ((const uint8_t *)a->data)[i];
    else if (strcmp(a->descr, "<i4") == 0)
      v = ((const int32_t *)a->data)[i];
    else if (strcmp(a->descr, "<i8") == 0)
      v = ((const int64_t *)a->data)[i];
    else {
      g_set_error(error, TOOLS_ERROR, 0, "%s: dtype %s, expected bool, uint8 or int", path, a->descr);
      g_free(out);
      return NULL;
    }
    if (v != 0 && v != 1) {
      g_set_error(error, TOOLS_ERROR, 0, "%s: element %zu is %lld, expected 0 or 1", path, i, v);
      g_free(out);
      return NULL;
    }
    out[i] = (uint8_t)v;
  }
  return out;
}

static int scores_from_class(const char *dir, const char *cls, class_result *out, GError **error) {
  const char *names[4] = {"scores.npy", "labels.npy", "maps.npy", "masks.npy"};
  npy_array a[4] = {{{0}}};
  gchar *paths[4];
  int ok = 1;
  for (int i = 0; i < 4; i++) {
    paths[i] = g_build_filename(dir, cls, names[i], NULL);
    if (ok)
      ok = npy_read(paths[i], &a[i], error);
  }
  uint8_t *labels = NULL, *masks = NULL;
  if (ok && (strcmp(a[0].descr, "<f4") || a[0].ndim != 1)) {
    g_set_error(error, TOOLS_ERROR, 0, "%s: expected float32 [N]", paths[0]);
    ok = 0;
  }
  if (ok && (strcmp(a[2].descr, "<f4") || a[2].ndim != 3 || a[2].shape[1] != a[2].shape[2] ||
             a[2].shape[0] != a[0].shape[0])) {
    g_set_error(error, TOOLS_ERROR, 0, "%s: expected float32 [N, S, S] with N = %lld", paths[2],
                (long long)a[0].shape[0]);
    ok = 0;
  }
  if (ok && (a[1].ndim != 1 || a[1].shape[0] != a[0].shape[0])) {
    g_set_error(error, TOOLS_ERROR, 0, "%s: expected [N] with N = %lld", paths[1],
                (long long)a[0].shape[0]);
    ok = 0;
  }
  if (ok && (a[3].ndim != 3 || memcmp(a[3].shape, a[2].shape, 3 * sizeof(int64_t)))) {
    g_set_error(error, TOOLS_ERROR, 0, "%s: expected the shape of %s", paths[3], paths[2]);
    ok = 0;
  }
  if (ok)
    ok = (labels = as_binary(&a[1], paths[1], error)) && (masks = as_binary(&a[3], paths[3], error));
  if (ok) {
    const int S = (int)a[2].shape[1];
    const size_t N = (size_t)a[0].shape[0], px = (size_t)S * S;
    metrics_class *mc = metrics_class_new(S, N);
    for (size_t i = 0; ok && i < N; i++) {
      ok = metrics_class_add(mc, ((const float *)a[0].data)[i], labels[i],
                             (const float *)a[2].data + i * px, masks + i * px, error);
      if (!ok)
        g_prefix_error(error, "%s, image %zu: ", paths[2], i);
    }
    if (ok)
      metrics_class_finish(mc, &out->r);
    metrics_class_free(mc);
  }
  g_free(labels);
  g_free(masks);
  for (int i = 0; i < 4; i++) {
    npy_array_clear(&a[i]);
    g_free(paths[i]);
  }
  return ok;
}

static gint compare_names(gconstpointer a, gconstpointer b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int run_scores_from(const char *dir, GArray *results) {
  GError *error = NULL;
  GDir *d = g_dir_open(dir, 0, &error);
  if (!d) {
    tool_error("%s", error->message);
    g_error_free(error);
    return 0;
  }
  GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
  const char *n;
  while ((n = g_dir_read_name(d))) {
    gchar *p = g_build_filename(dir, n, NULL);
    if (g_file_test(p, G_FILE_TEST_IS_DIR))
      g_ptr_array_add(names, g_strdup(n));
    g_free(p);
  }
  g_dir_close(d);
  g_ptr_array_sort(names, compare_names);
  int ok = names->len > 0;
  if (!ok)
    tool_error("%s holds no class folders", dir);
  for (guint i = 0; ok && i < names->len; i++) {
    class_result cr = {g_strdup(names->pdata[i]), {0}};
    ok = scores_from_class(dir, cr.name, &cr, &error);
    if (!ok) {
      tool_error("%s", error->message);
      g_clear_error(&error);
      g_free(cr.name);
    } else {
      g_array_append_val(results, cr);
    }
  }
  g_ptr_array_unref(names);
  return ok;
}

/* ---- a real run ------------------------------------------------------------------ */

/* A loader thread decodes the next images and prepares their masks while the
 * main thread runs the detector: input work overlaps inference instead of
 * adding to it. PREFETCH samples are in flight at most. */
enum { PREFETCH = 3 };

typedef struct {
  const dataset_sample *s;
  GdkPixbuf *image;
  fap_frame frame;
  uint8_t *mask; /* S*S 0/1, NULL: all normal */
  GError *error;
} loaded;

typedef struct {
  fap_detector *det;
  int S;
  const char *dump_dir;
  int strict_masks;
  timing t;
  double wait; /* main thread waiting for the loader */
  int done, total;
  dataset *d;
  GAsyncQueue *ready, *slots;
  gint stop;
  double t_decode, t_masks; /* written by the loader, read after join */
  int tile_cols, tile_rows, tile_overlap; /* --tiles (0 x 0: none), --tile-overlap */
  float *stitched;                        /* S x S: a tiled image's map */
} eval_ctx;

/* The image in tiles: one batch of crops, the highest score, the maps
 * stitched into e->stitched (S x S); r->map points there. */
static fap_status run_tiled(eval_ctx *e, const fap_frame *frame, fap_result *r) {
  const fap_rect whole = {0, 0, frame->width, frame->height};
  const int n = e->tile_cols * e->tile_rows;
  fap_rect tiles[MAX_TILES];
  fap_frame frames[MAX_TILES];
  fap_result results[MAX_TILES];
  const float *maps[MAX_TILES];
  fap_status st = fap_tiles_layout(whole, e->tile_cols, e->tile_rows, e->tile_overlap, tiles);
  if (st != FAP_OK)
    return st;
  for (int i = 0; i < n; i++) {
    frames[i] = *frame;
    frames[i].crop = tiles[i];
  }
  st = fap_detector_run_batch(e->det, frames, n, NULL, results);
  if (st != FAP_OK)
    return st;
  *r = results[0];
  for (int i = 0; i < n; i++) {
    maps[i] = results[i].map;
    if (results[i].score > r->score)
      r->score = results[i].score;
  }
  st = fap_tiles_stitch(whole, e->tile_cols, e->tile_rows, e->tile_overlap, maps,
                        results[0].map_size, e->stitched, e->S, e->S);
  r->map = e->stitched;
  r->map_size = e->S;
  return st;
}

static void loaded_free(loaded *l) {
  if (!l)
    return;
  g_clear_object(&l->image);
  g_free(l->mask);
  g_clear_error(&l->error);
  g_free(l);
}

static void load_sample(eval_ctx *e, loaded *l) {
  const dataset_sample *s = l->s;
  double t0 = tool_now();
  l->image = imageio_load(s->image, &l->frame, &l->error);
  if (!l->image)
    g_prefix_error(&l->error, "cannot read image %s: ", s->image);
  double t1 = tool_now();
  e->t_decode += t1 - t0;
  if (l->image && s->anomaly && s->mask) {
    int mw, mh;
    uint8_t *m = mask_load(s->mask, &mw, &mh, &l->error);
    if (!m) {
      g_prefix_error(&l->error, "cannot read mask %s: ", s->mask);
    } else if (e->strict_masks && (mw != l->frame.width || mh != l->frame.height)) {
      g_set_error(&l->error, TOOLS_ERROR, 0,
                  "mask %s is %dx%d but its image %s is %dx%d: wrong pairing? (--any-mask-size "
                  "accepts it and resizes each to S x S independently, as the authors' loader does)",
                  s->mask, mw, mh, s->image, l->frame.width, l->frame.height);
    } else {
      const size_t px = (size_t)e->S * e->S;
      uint8_t *resized = g_malloc(px);
      mask_resize_bilinear(m, mw, mh, resized, e->S, e->S);
      mask_binarize(resized, resized, px);
      l->mask = resized;
    }
    g_free(m);
  }
  e->t_masks += tool_now() - t1;
}

static gpointer loader_main(gpointer data) {
  eval_ctx *e = data;
  for (guint ci = 0; ci < e->d->classes->len; ci++) {
    dataset_class *c = e->d->classes->pdata[ci];
    for (guint i = 0; i < c->samples->len; i++) {
      g_async_queue_pop(e->slots); /* a free slot (or the wake-up to stop) */
      if (g_atomic_int_get(&e->stop))
        return NULL;
      loaded *l = g_new0(loaded, 1);
      l->s = &g_array_index(c->samples, dataset_sample, i);
      load_sample(e, l);
      g_async_queue_push(e->ready, l);
    }
  }
  return NULL;
}

/* One loaded sample: infer, accumulate (and dump). */
static int eval_sample(eval_ctx *e, loaded *l, metrics_class *mc, dump_files *dump,
                       uint8_t *zeros, GError **error) {
  const dataset_sample *s = l->s;
  if (l->error) {
    g_propagate_error(error, l->error);
    l->error = NULL;
    return 0;
  }
  double t1 = tool_now();
  fap_result r;
  fap_status st = e->tile_cols ? run_tiled(e, &l->frame, &r) : fap_detector_run(e->det, &l->frame, &r);
  double t2 = tool_now();
  e->t.inference += t2 - t1;
  if (st != FAP_OK) {
    /* a tiling this image cannot take says which value and why */
    g_set_error(error, TOOLS_ERROR, 0, "inference failed on %s: %s", s->image,
                e->tile_cols ? fap_last_error() : fap_status_string(st));
    return 0;
  }
  const uint8_t *mask = l->mask;
  int ok = metrics_class_add(mc, r.score, s->anomaly, r.map, mask, error);
  if (!ok)
    g_prefix_error(error, "%s: ", s->image);
  double t3 = tool_now();
  e->t.metrics_add += t3 - t2;
  if (ok && dump->maps) {
    uint8_t label = (uint8_t)s->anomaly;
    ok = npy_writer_append(dump->maps, r.map, error) &&
         npy_writer_append(dump->masks, mask ? mask : zeros, error) &&
         npy_writer_append(dump->scores, &r.score, error) &&
         npy_writer_append(dump->labels, &label, error);
    fprintf(dump->samples, "%s\t%s\t%d\t%s\n", s->image, s->mask ? s->mask : "", s->anomaly,
            s->defect);
    e->t.dump += tool_now() - t3;
  }
  e->t.images++;
  return ok;
}

static int run_dataset(eval_ctx *e, dataset *d, GArray *results) {
  GError *error = NULL;
  int ok = 1;
  uint8_t *zeros = g_malloc0((size_t)e->S * e->S);
  e->d = d;
  e->ready = g_async_queue_new();
  e->slots = g_async_queue_new();
  for (int i = 0; i < PREFETCH; i++)
    g_async_queue_push(e->slots, GINT_TO_POINTER(1));
  GThread *loader = g_thread_new("faprompt-eval-loader", loader_main, e);
  for (guint ci = 0; ok && ci < d->classes->len; ci++) {
    dataset_class *c = d->classes->pdata[ci];
    metrics_class *mc = metrics_class_new(e->S, c->samples->len);
    dump_files dump = {0};
    if (e->dump_dir)
      ok = dump_open(&dump, e->dump_dir, c->name, e->S, &error);
    for (guint i = 0; ok && i < c->samples->len; i++) {
      const dataset_sample *s = &g_array_index(c->samples, dataset_sample, i);
      gchar *label = g_strdup_printf("%s: %s", c->name, s->image + strlen(d->root) +
                                                            (s->image[strlen(d->root)] == '/'));
      progress_show(e->done, e->total, label);
      g_free(label);
      double t0 = tool_now();
      loaded *l = g_async_queue_pop(e->ready);
      e->wait += tool_now() - t0;
      g_async_queue_push(e->slots, GINT_TO_POINTER(1));
      ok = eval_sample(e, l, mc, &dump, zeros, &error);
      loaded_free(l);
      e->done++;
    }
    if (e->dump_dir && !dump_close(&dump, ok ? &error : NULL))
      ok = 0;
    if (ok) {
      double t0 = tool_now();
      class_result cr = {g_strdup(c->name), {0}};
      metrics_class_finish(mc, &cr.r);
      e->t.metrics_finish += tool_now() - t0;
      g_array_append_val(results, cr);
    }
    metrics_class_free(mc);
  }
  /* Stop the loader (it may be waiting for a slot) and drop what it prepared. */
  g_atomic_int_set(&e->stop, 1);
  g_async_queue_push(e->slots, GINT_TO_POINTER(1));
  g_thread_join(loader);
  loaded *l;
  while ((l = g_async_queue_try_pop(e->ready)))
    loaded_free(l);
  g_async_queue_unref(e->ready);
  g_async_queue_unref(e->slots);
  g_free(zeros);
  e->t.decode = e->t_decode;
  e->t.masks = e->t_masks;
  progress_clear();
  if (!ok) {
    tool_error("%s", error->message);
    g_error_free(error);
  }
  return ok;
}

static void clear_result(gpointer p) { g_free(((class_result *)p)->name); }

int main(int argc, char **argv) {
  const double t_start = tool_now();
  int image_size = 0, threads = 0, limit = 0, reference = 0, verbose = 0, any_mask_size = 0;
  int tile_overlap = 0, tile_cols = 0, tile_rows = 0;
  char *tiles_text = NULL;
  double sigma = -1.0;
  char *layout_name = NULL, *classes = NULL, *csv_path = NULL, *json_path = NULL, *dump_dir = NULL,
       *scores_from = NULL, *precision_name = NULL;
  GOptionEntry entries[] = {
      {"layout", 0, 0, G_OPTION_ARG_STRING, &layout_name,
       "dataset layout: auto (default), mvtec, visa (split_csv/1cls.csv) or meta (meta.json)", "L"},
      {"image-size", 0, 0, G_OPTION_ARG_INT, &image_size,
       "side S the model runs at, and the masks are resized to (default: the model's)", "S"},
      {"sigma", 0, 0, G_OPTION_ARG_DOUBLE, &sigma,
       "Gaussian sigma of the map in pixels (0 = none; default: the model's)", "X"},
      {"threads", 0, 0, G_OPTION_ARG_INT, &threads, "CPU threads (0 = all cores)", "N"},
      {"precision", 0, 0, G_OPTION_ARG_STRING, &precision_name, TOOL_PRECISION_HELP, "P"},
      {"limit", 0, 0, G_OPTION_ARG_INT, &limit,
       "at most N images per class, spread evenly over the class (quick runs)", "N"},
      {"classes", 0, 0, G_OPTION_ARG_STRING, &classes, "only these classes (comma separated)",
       "A,B"},
      {"csv", 0, 0, G_OPTION_ARG_FILENAME, &csv_path, "also write the table as CSV (- = stdout)",
       "FILE"},
      {"json", 0, 0, G_OPTION_ARG_FILENAME, &json_path,
       "also write the results, run settings and timings as JSON (- = stdout)", "FILE"},
      {"dump", 0, 0, G_OPTION_ARG_FILENAME, &dump_dir,
       "write DIR/<class>/{scores,labels,maps,masks}.npy (what the metrics saw)", "DIR"},
      {"any-mask-size", 0, 0, G_OPTION_ARG_NONE, &any_mask_size,
       "accept masks whose size differs from their image's", NULL},
      {"tiles", 0, 0, G_OPTION_ARG_STRING, &tiles_text,
       "evaluate a tiling: each image cut into C columns and R rows of equal tiles (at most 16 "
       "in all, one batch), each resized on its own; the image's score is the highest tile's, "
       "its map the tiles' maps stitched at S x S (docs/SPEC.md section 1.2, Tiles), as "
       "faprompt-infer --tiles",
       "CxR"},
      {"tile-overlap", 0, 0, G_OPTION_ARG_INT, &tile_overlap,
       "--tiles: neighbouring tiles overlap by at least N pixels (default 0)", "N"},
      {"reference", 0, 0, G_OPTION_ARG_NONE, &reference, "use the plain reference loops", NULL},
      {"verbose", 'v', 0, G_OPTION_ARG_NONE, &verbose, "also print the core's info messages", NULL},
      {"scores-from", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_FILENAME, &scores_from,
       "metrics of precomputed results (tests)", "DIR"},
      {NULL},
  };
  GOptionContext *octx = g_option_context_new("MODEL DATASET - evaluate a test set with the "
                                              "authors' metrics");
  g_option_context_add_main_entries(octx, entries, NULL);
  g_option_context_set_description(
      octx,
      "Per class and mean: image AUROC, image AP, pixel AUROC, pixel AUPRO (the authors'\n"
      "cal_pro_score) and the standard MVTec AD AUPRO (FPR up to 0.3). Formulas: tools/README.md.\n"
      "Without a model file, make one with:\n  " GEN_RANDOM_HINT "\n");
  GError *error = NULL;
  int parsed = g_option_context_parse(octx, &argc, &argv, &error);
  int layout = layout_name ? dataset_layout_parse(layout_name) : DATASET_AUTO;
  fap_precision precision;
  const int precision_ok = tool_parse_precision(precision_name, &precision);
  g_free(precision_name);
  const char *usage = NULL;
  gchar *tiles_usage = NULL;
  if (parsed && tiles_text && !tool_parse_tiles(tiles_text, &tile_cols, &tile_rows))
    tiles_usage = g_strdup_printf("--tiles \"%s\" is not CxR: two whole numbers of at least 1 "
                                  "joined by an x (columns x rows), e.g. 3x2",
                                  tiles_text);
  else if (parsed && tile_cols * tile_rows > MAX_TILES)
    tiles_usage = g_strdup_printf("--tiles %s: %d tiles, at most %d (one batch)", tiles_text,
                                  tile_cols * tile_rows, MAX_TILES);
  if (!parsed)
    usage = error->message;
  else if (tiles_usage)
    usage = tiles_usage;
  else if (tile_overlap < 0)
    usage = "--tile-overlap must not be negative";
  else if (tile_overlap && !tiles_text)
    usage = "--tile-overlap needs --tiles";
  else if (tiles_text && scores_from)
    usage = "--scores-from reads results; --tiles runs a model";
  else if (!scores_from && argc != 3)
    usage = "a MODEL and a DATASET folder expected";
  else if (scores_from && argc != 1)
    usage = "--scores-from takes no MODEL or DATASET";
  else if (image_size < 0 || threads < 0 || limit < 0)
    usage = "--image-size, --threads and --limit must not be negative";
  else if (layout < 0)
    usage = "--layout must be auto, mvtec, visa or meta";
  else if (!precision_ok)
    usage = "--precision must be auto, f32, f16, bf16 or int8";
  if (usage) {
    int rc = tool_usage_error("faprompt-eval", octx, usage);
    g_clear_error(&error);
    g_option_context_free(octx);
    g_free(layout_name);
    g_free(classes);
    g_free(csv_path);
    g_free(json_path);
    g_free(dump_dir);
    g_free(scores_from);
    g_free(tiles_text);
    g_free(tiles_usage);
    return rc;
  }
  g_option_context_free(octx);
  tool_init("faprompt-eval", verbose);

  GArray *results = g_array_new(FALSE, TRUE, sizeof(class_result));
  g_array_set_clear_func(results, clear_result);
  JsonObject *run = json_object_new();
  int rc = 0;
  dataset *d = NULL;
  fap_model *model = NULL;
  eval_ctx e = {0};

  if (scores_from) {
    json_object_set_string_member(run, "scores_from", scores_from);
    if (!run_scores_from(scores_from, results))
      rc = 1;
  } else {
    const char *model_path = argv[1], *root = argv[2];
    /* The dataset first: a typo in a path should not wait for a model load. */
    double t0 = tool_now();
    d = dataset_open(root, (dataset_layout)layout, &error);
    if (d && classes && !dataset_select(d, classes, &error))
      g_clear_pointer(&d, dataset_free);
    if (!d) {
      tool_error("%s", error->message);
      g_clear_error(&error);
      rc = 1;
      goto out;
    }
    dataset_limit(d, limit);
    e.t.listing = tool_now() - t0;
    if (d->missing_masks)
      tool_error("warning: %d anomalous image%s without a mask file get an all-zero mask (as in "
                 "the authors' loader)",
                 d->missing_masks, d->missing_masks == 1 ? "" : "s");

    t0 = tool_now();
    if (fap_model_load(model_path, &model) != FAP_OK) {
      if (!g_file_test(model_path, G_FILE_TEST_EXISTS))
        tool_error("model file %s does not exist; make one with:\n  " GEN_RANDOM_HINT, model_path);
      else
        tool_error("cannot load model %s (see the message above)", model_path);
      rc = 1;
      goto out;
    }
    fap_detector_options o;
    fap_detector_options_init(&o);
    o.threads = threads;
    o.precision = precision;
    o.image_size = image_size;
    o.sigma = (float)sigma;
    o.reference = reference;
    o.batch = tile_cols ? tile_cols * tile_rows : 1; /* an image's tiles in one batch */
    if (fap_detector_new(model, &o, &e.det) != FAP_OK) {
      tool_error("cannot create a detector for %s (see the message above)", model_path);
      rc = 1;
      goto out;
    }
    e.t.model_load = tool_now() - t0;
    e.S = fap_detector_image_size(e.det);
    e.tile_cols = tile_cols;
    e.tile_rows = tile_rows;
    e.tile_overlap = tile_overlap;
    if (tile_cols)
      e.stitched = g_new(float, (size_t)e.S * e.S);
    e.dump_dir = dump_dir;
    e.strict_masks = !any_mask_size;
    for (guint i = 0; i < d->classes->len; i++)
      e.total += (int)((dataset_class *)d->classes->pdata[i])->samples->len;

    json_object_set_string_member(run, "model", model_path);
    json_object_set_string_member(run, "dataset", root);
    json_object_set_string_member(run, "layout", dataset_layout_name(d->layout));
    json_object_set_int_member(run, "image_size", e.S);
    json_object_set_double_member(run, "sigma", sigma >= 0 ? sigma : fap_model_config(model)->sigma);
    json_object_set_string_member(run, "backend", fap_backend_name(fap_detector_backend(e.det)));
    json_object_set_string_member(run, "precision",
                                  fap_precision_name(fap_detector_precision(e.det)));
    json_object_set_int_member(run, "limit", limit);
    if (tile_cols) {
      gchar *grid = g_strdup_printf("%dx%d", tile_cols, tile_rows);
      json_object_set_string_member(run, "tiles", grid);
      json_object_set_int_member(run, "tile_overlap", tile_overlap);
      g_free(grid);
    }
    json_object_set_int_member(run, "images", e.total);

    fprintf(stderr, "faprompt-eval: %s (%s layout, %u class%s, %d images), S=%d, %s backend, %s\n",
            root, dataset_layout_name(d->layout), d->classes->len,
            d->classes->len == 1 ? "" : "es", e.total, e.S,
            fap_backend_name(fap_detector_backend(e.det)),
            fap_precision_name(fap_detector_precision(e.det)));
    if (tile_cols)
      fprintf(stderr, "faprompt-eval: each image in %dx%d tiles overlapping by %d pixels\n",
              tile_cols, tile_rows, tile_overlap);
    if (!run_dataset(&e, d, results))
      rc = 1;
    e.t.input_wait = e.wait;
  }
  if (rc == 0) {
    e.t.wall = tool_now() - t_start;
    print_markdown(stdout, results);
    fflush(stdout);
    if (csv_path && !write_csv(csv_path, results))
      rc = 1;
    if (json_path && !write_json(json_path, results, run, scores_from ? NULL : &e.t))
      rc = 1;
    if (!scores_from) {
      const timing *t = &e.t;
      double wall = tool_now() - t_start, over = wall - t->inference;
      fprintf(stderr,
              "faprompt-eval: %d images in %.2f s: inference %.2f s (%.1f%%), everything else "
              "%.2f s (%.1f%%: waiting for inputs %.2f, metrics %.2f + %.2f, dump %.2f, model "
              "%.2f, listing %.2f; decoding %.2f s and masks %.2f s ran beside inference)\n",
              t->images, wall, t->inference, 100.0 * t->inference / wall, over, 100.0 * over / wall,
              t->input_wait, t->metrics_add, t->metrics_finish, t->dump, t->model_load,
              t->listing, t->decode, t->masks);
    }
  }

out:
  json_object_unref(run);
  g_array_unref(results);
  fap_detector_free(e.det);
  g_free(e.stitched);
  g_free(tiles_text);
  fap_model_free(model);
  dataset_free(d);
  g_free(layout_name);
  g_free(classes);
  g_free(csv_path);
  g_free(json_path);
  g_free(dump_dir);
  g_free(scores_from);
  return rc;
}
