/**
 * SECTION:element-faprompt
 * @title: faprompt
 * @short_description: zero-shot visual anomaly detection (FAPrompt)
 *
 * Scores every frame for anomalies with FAPrompt (fine-grained abnormality
 * prompts on a frozen CLIP ViT-L/14@336px), with no defect examples. Each
 * frame that carries a result gets a #GstFAPromptMeta (score, decision, the
 * S x S anomaly map), a structure-backed twin named
 * `GstFAPromptStructureMeta` that any binding reads, one
 * #GstVideoRegionOfInterestMeta per anomalous region, and (draw-heatmap) a
 * heatmap blended into the pixels by the core. The frame is handed to the
 * core as it is (RGB family, NV12, I420, YUY2 with the caps' colorimetry):
 * no videoconvert is needed.
 *
 * ## Regions of interest
 *
 * `roi` limits the analysis to rectangles of the frame: only their pixels
 * go to the model, each rectangle resized on its own to the model's input
 * (S x S), so a small part of a large frame is seen in detail and floor,
 * rails or sky cost nothing. The value is one or more rectangles
 * `x,y,w,h` separated by `;`: four whole numbers are frame pixels (left,
 * top, width, height); four numbers that all have a decimal point are
 * fractions of the frame's width and height in [0, 1] (`0.5,0.0,0.5,1.0`:
 * the right half), their edges rounded to the nearest pixel; a rectangle
 * mixing the two forms is refused. Empty (the default): the whole frame.
 *
 * Each rectangle is scored exactly as a frame holding only its pixels would
 * be, and all rectangles of a frame run in one batch. Each gets its own
 * #GstFAPromptMeta (x, y, width, height: the rectangle; its score, decision
 * and map), its regions (#GstVideoRegionOfInterestMeta, in frame pixels)
 * and its heatmap, drawn inside it only: no byte of a pixel outside every
 * rectangle changes. The frame's decision is "any rectangle anomalous" and
 * its score the highest rectangle score (the `score`, `anomalous` and
 * `region-count` of the messages, `last-score`); the messages list the
 * rectangles in `rois` (x, y, width, height, score, anomalous). Overlapping
 * rectangles are scored independently; their heatmaps are drawn in order,
 * the later over the earlier.
 *
 * `roi` may change while playing: the next inference runs on the new
 * rectangles, no frame is lost or held back (a result already computed
 * stays with the rectangles it was computed on). A value that does not
 * parse, a rectangle of zero size or reaching outside the frame, more than
 * 16 rectangles, or more rectangles than the detector runs in one batch
 * (batch-size: a detector of its own is built for max (batch-size, the
 * number of rectangles at start); a model instance for its batch-size) is
 * refused with a warning that names the value, and the setting in force
 * stays. Pixel rectangles are checked against the frame size once it is
 * known; a setting that does not fit new caps falls back to the whole
 * frame, with a warning.
 *
 * ## Tiles
 *
 * `tiles` ("CxR") cuts each rectangle (or the whole frame) into C x R equal
 * tiles, neighbours overlapping by at least `tile-overlap` pixels
 * (fap_tiles_layout, docs/SPEC.md section 1.2, Tiles), each run as a crop at
 * (nearly) its own resolution, all in one batch (at most 16 crops a
 * frame): a small defect on a large frame then covers more than a fraction
 * of a patch. Each rectangle keeps one #GstFAPromptMeta: its map is the
 * tiles' maps stitched (fap_tiles_stitch, no seams) at S * max (C, R)
 * squared, at most 1024, its score the highest tile's; the structure twin
 * adds `tile-scores` (a GstValueArray of doubles, row-major). Bad values
 * (unparsable, more crops than the batch, an overlap too large for a
 * rectangle) are refused with a warning naming the value, and the setting
 * in force stays; both may change while playing, no frame lost. The maps
 * are stitched by a fap_tiles_stitcher per rectangle, made when the layout
 * changes and kept (about 0.02 ms for 4x2 tiles of a 1080p frame into the
 * stitched map, 0.5 ms into a full 1920x1080 map: faprompt-bench-stitch).
 *
 * `tiles=auto` picks the grid per frame: the fewest tiles for which one
 * model patch covers at most `tile-max-patch-pixels` (K, default 32) frame
 * pixels along each axis of every rectangle, a tile w pixels wide giving
 * w / (S / P) pixels a patch with S the model's input side and P its patch
 * (a ViT-L/14 at 336 sees a 1080p frame at 80 x 45 pixels a patch: 3 x 2
 * tiles at K = 32), within the batch (a detector of its own is built for
 * 16 crops with tiles=auto). When no grid within the batch reaches K, the
 * one with the smallest patch the batch allows runs, and one warning names
 * K and the grid it got (again only after tiles, tile-max-patch-pixels,
 * tile-overlap, roi or the caps change). The grid picked is in the
 * structure twin and the messages: `tiles` ("CxR") and `tiles-auto`
 * (docs/SPEC.md section 1.2, Automatic tiles).
 *
 * ## Ignore mask
 *
 * `ignore-mask` names a PNG of the frame's aspect (within 1 %: refused
 * otherwise, with a warning naming the file and both aspects) whose dark
 * pixels (every colour channel below 128; grey: the grey value; alpha is
 * not read) never count. The mask is stretched over the frame by nearest
 * sample and every result's map is set to 0 under it before anything reads
 * it: the meta's map is 0 there, no region forms there, and no heatmap is
 * drawn there (the bytes of the masked pixels are put back after drawing,
 * frames in system memory). The score and the decision stay the model's
 * (docs/SPEC.md section 1.2, Ignore mask: the image-level head sees the
 * whole crop; to keep an area out of the score, leave it out with `roi`).
 * The file is watched as the model file is: once it has been quiet for
 * `watch-settle` ms a new version takes over from the next result; one
 * that cannot be read or has another aspect keeps the last good mask, with
 * a warning. New caps of another aspect drop the mask, with a warning,
 * until the file or the property changes. Empty: no mask.
 *
 * Element messages named `faprompt` (post-messages) carry: `timestamp`,
 * `stream-time`, `running-time`, `duration` (guint64 ns), `score` (gdouble),
 * `anomalous`, `reused` (gboolean), `inference-timestamp` (guint64, PTS of
 * the frame the result was computed on), `region-count` (guint), with tiles
 * `tiles` ("CxR") and `tiles-auto` (gboolean) and, in on-change mode,
 * `event` (`anomaly-started` / `anomaly-ended`).
 *
 * ## Example launch lines
 * |[
 * gst-launch-1.0 v4l2src ! faprompt model-file=model.safetensors ! videoconvert ! autovideosink
 * ]| A live camera: non-blocking=auto runs inference beside the stream, so
 * the video keeps its frame rate and frames carry the newest result.
 * |[
 * gst-launch-1.0 -m filesrc location=in.mp4 ! decodebin ! faprompt \
 *     post-messages=every-frame ! fakesink
 * ]| Every frame of a file scored (not live: blocking), one message each.
 */
/* A frame's path: transform_ip maps it (system memory, or CUDA memory for
 * the device) and process_frame makes the one call out for it. Blocking,
 * the frame is due: fap_model_state_infer runs it on the model running now
 * (its private detector, drawing it in the same pass on the CUDA backend,
 * or its shared instance's next batch) and the inference comes back.
 * Non-blocking: fap_worker_exchange hands the worker a copy with that model
 * (when due and the worker is idle) and brings back the newest inference
 * the worker finished (fap_model_state_infer on its thread). With the
 * result in hand the element attaches the metas and regions
 * (fap_results_attach), has the model state draw the heatmap where the
 * pass did not (fap_model_state_draw) and posts the messages
 * (fap_results_post_for_frame). Between two frames a model the loader
 * finished takes over (fap_model_swap_take). */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstfaprompt.h"
#include "gstfapromptmeta.h"
#include "fap_frameview.h"
#include "fap_log.h"
#include "fap_modelcache.h"

#define GST_CAT_DEFAULT fap_debug

#define DEFAULT_MODEL_NAME "faprompt-vitl14-336.safetensors"

enum
{
  PROP_0,
  PROP_MODEL_FILE,
  PROP_BACKEND,
  PROP_PRECISION,
  PROP_DEVICE_ID,
  PROP_THREADS,
  PROP_IMAGE_SIZE,
  PROP_SIGMA,
  PROP_IMAGE_THRESHOLD,
  PROP_PIXEL_THRESHOLD,
  PROP_DRAW_HEATMAP,
  PROP_HEATMAP_ALPHA,
  PROP_HEATMAP_MIN,
  PROP_HEATMAP_MAX,
  PROP_INFERENCE_INTERVAL,
  PROP_NON_BLOCKING,
  PROP_POST_MESSAGES,
  PROP_MAX_REGIONS,
  PROP_FRAMES_PROCESSED,
  PROP_INFERENCES,
  PROP_AVERAGE_INFERENCE_MS,
  PROP_LAST_SCORE,
  PROP_MODEL_SHARED,
  PROP_AVERAGE_FRAME_MS,
  PROP_PIXEL_BYTES,
  PROP_MODEL_INSTANCE_ID,
  PROP_BATCH_SIZE,
  PROP_BATCH_TIMEOUT,
  PROP_AVERAGE_BATCH,
  PROP_INSTANCE_QUEUE,
  PROP_WATCH_MODEL,
  PROP_WATCH_SETTLE,
  PROP_MODEL_GENERATION,
  PROP_MODEL_FAMILY,
  PROP_RUNNING_PRECISION,
  PROP_ROI,
  PROP_TILES,
  PROP_TILE_OVERLAP,
  PROP_TILE_MAX_PATCH_PIXELS,
  PROP_IGNORE_MASK,
};

enum
{
  SIGNAL_RELOAD,
  N_SIGNALS
};
static guint signals[N_SIGNALS];

#define DEFAULT_WATCH_SETTLE_MS 2000
/* tiles=auto: a patch covers at most 32 x 32 frame pixels (a ViT-L/14 at 336
 * sees a 1080p frame at 80 x 45 per patch: 3 x 2 tiles bring it to 27 x 23) */
#define DEFAULT_TILE_MAX_PATCH_PIXELS 32

/* system memory in every format; CUDA memory (nvh264dec, cudaupload) in the
 * formats those produce, where the plugin was built with gstreamer-cuda */
#ifdef FAP_HAVE_GST_CUDA
#define FAP_CAPS GST_VIDEO_CAPS_MAKE (FAP_FRAMEVIEW_FORMATS) "; " \
    GST_VIDEO_CAPS_MAKE_WITH_FEATURES (FAP_CUDA_CAPS_FEATURE, FAP_CUDA_FORMATS)
#else
#define FAP_CAPS GST_VIDEO_CAPS_MAKE (FAP_FRAMEVIEW_FORMATS)
#endif
static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS (FAP_CAPS));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS (FAP_CAPS));

#define gst_fa_prompt_parent_class parent_class
G_DEFINE_TYPE (GstFAPrompt, gst_fa_prompt, GST_TYPE_VIDEO_FILTER);
GST_ELEMENT_REGISTER_DEFINE_WITH_CODE (faprompt, "faprompt", GST_RANK_NONE,
    GST_TYPE_FA_PROMPT, gst_faprompt_meta_get_info ();
    gst_faprompt_structure_meta_get_info ());

/* ---- results ------------------------------------------------------------- */

static void
set_last (GstFAPrompt * self, FapInference * inf)
{
  FapMask *mask = NULL;
  gint w = 0, h = 0;

  if (inf) {
    GST_OBJECT_LOCK (self);
    mask = fap_mask_ref (self->mask);
    w = self->roi_frame_w;
    h = self->roi_frame_h;
    GST_OBJECT_UNLOCK (self);
  }
  /* ignore-mask: the result's maps are 0 under it (docs/SPEC.md section
   * 1.2, Ignore mask), for every frame that carries it */
  if (mask && w > 0 && h > 0) {
    FapInference *masked = fap_mask_apply (mask, inf, w, h, ++self->serial);
    fap_inference_unref (inf);
    inf = masked;
  }
  fap_mask_unref (mask);
  fap_inference_unref (self->last);
  self->last = inf;
  if (inf)
    fap_stats_set_last_score (&self->stats, inf->score);
}

/* ---- default model location --------------------------------------------- */

static gchar *
default_model_path (void)
{
  const gchar *env = g_getenv ("FAPROMPT_MODEL");
  if (env && *env)
    return g_strdup (env);
  return g_build_filename (g_get_user_data_dir (), "faprompt",
      DEFAULT_MODEL_NAME, NULL);
}

/* The model path the properties name now (object lock held). */
static gchar *
model_path_locked (GstFAPrompt * self)
{
  return self->model_file ? g_strdup (self->model_file) : default_model_path ();
}

/* ---- model swaps ------------------------------------------------------------ */

/* Streaming thread, before each frame: a model the loader finished takes
 * over here, between two frames. The old one is released on the loader
 * thread once the worker (if it runs on it) lets it go. */
static void
maybe_swap (GstFAPrompt * self)
{
  FapModelState *m = fap_model_swap_take (self->swap), *old;

  if (!m)
    return;
  GST_OBJECT_LOCK (self);
  m->generation = ++self->model_generations;
  old = self->state;
  self->state = m;
  GST_OBJECT_UNLOCK (self);
  fap_model_swap_took_over (self->swap, m, old);
}

/* model-file set, or "reload", while started (object lock held) */
static void
request_swap_locked (GstFAPrompt * self, const gchar * reason)
{
  gchar *path;

  if (!self->swap)
    return;
  path = model_path_locked (self);
  fap_model_swap_request (self->swap, path, reason);
  if (self->watch_model)
    fap_model_swap_watch (self->swap, path, self->watch_settle_ms);
  g_free (path);
}

static gboolean
gst_fa_prompt_reload (GstFAPrompt * self)
{
  gboolean started;

  GST_OBJECT_LOCK (self);
  started = self->swap != NULL;
  request_swap_locked (self, "reload");
  GST_OBJECT_UNLOCK (self);
  if (!started)
    GST_INFO_OBJECT (self, "reload: not started; the model loads at start");
  return started;
}

/* ---- regions of interest ---------------------------------------------------- */

/* a layout's refusal becomes a warning's text (fap_last_error), not a log
 * line */
static void
silent_log (fap_log_level level, const char *message, void *user_data)
{
}

/* The tiles of @n rectangles into @crops (rectangle by rectangle, each
 * one's row-major; n * cols * rows <= FAP_ROI_MAX). FALSE with *why
 * (g_free) naming the rectangle and the core's reason. Logs nothing: the
 * caller says it (the object lock may be held). */
static gboolean
tile_crops (const fap_rect * rects, guint n, guint cols, guint rows,
    guint overlap, fap_rect * crops, gchar ** why)
{
  gboolean ok = TRUE;

  fap_set_thread_log_callback (silent_log, NULL);
  for (guint i = 0; ok && i < n; i++) {
    const fap_rect *r = &rects[i];
    ok = fap_tiles_layout (*r, (int) cols, (int) rows, (int) MIN (overlap,
            G_MAXINT), crops + i * cols * rows) == FAP_OK;
    if (!ok)
      *why = g_strdup_printf ("%s (%d,%d,%d,%d): %s", n > 1 ? "a rectangle" :
          "the analysed area", r->x, r->y, r->width, r->height,
          fap_last_error ());
  }
  fap_set_thread_log_callback (NULL, NULL);
  return ok;
}

/* Whether @spec in @cols x @rows tiles overlapping by @overlap can run now:
 * no more crops than the running detector's batch, every rectangle inside
 * the negotiated frame and wide and high enough for its tiles (each
 * checked once known). FALSE with *why (g_free). Object lock held. */
static gboolean
roi_fits_locked (GstFAPrompt * self, const FapRoiSpec * spec, guint cols,
    guint rows, guint overlap, gchar ** why)
{
  fap_rect rects[FAP_ROI_MAX], crops[FAP_ROI_MAX];
  guint n, n_tiles = cols * rows, n_crops = MAX (spec->n, 1) * n_tiles;

  *why = NULL;
  if (n_tiles > 1 && n_crops > MIN (self->roi_cap ? self->roi_cap :
          FAP_ROI_MAX, FAP_ROI_MAX)) {
    *why = g_strdup_printf ("%u rectangle%s in %ux%u tiles are %u crops, but "
        "the detector runs at most %u in one batch (batch-size%s)",
        MAX (spec->n, 1), spec->n > 1 ? "s" : "", cols, rows, n_crops,
        self->roi_cap ? self->roi_cap : FAP_ROI_MAX,
        self->state && self->state->instance ? " of the model instance" :
        ", or the number of crops at start");
    return FALSE;
  }
  if (self->roi_cap && spec->n > self->roi_cap) {
    *why = g_strdup_printf ("%u rectangles, but the detector runs at most %u "
        "in one batch (batch-size%s)", spec->n, self->roi_cap,
        self->state && self->state->instance ? " of the model instance" :
        ", or the number of rectangles at start");
    return FALSE;
  }
  if (self->roi_frame_w <= 0)
    return TRUE;
  if (!fap_roi_resolve (spec, self->roi_frame_w, self->roi_frame_h, rects,
          &n, why))
    return FALSE;
  return n_tiles == 1 || tile_crops (rects, n, cols, rows, overlap, crops,
      why);
}

/* The setting in force no longer fits (new caps, a detector with a smaller
 * batch): back to the whole frame, said with a warning naming it. */
static void
roi_recheck (GstFAPrompt * self)
{
  gchar *why = NULL, *text = NULL, *tiles_why = NULL, *tiles_text = NULL;
  FapRoiSpec whole = { 0, };

  GST_OBJECT_LOCK (self);
  if (self->roi.n && !roi_fits_locked (self, &self->roi, 1, 1, 0, &why)) {
    text = self->roi_text;
    self->roi_text = NULL;
    memset (&self->roi, 0, sizeof self->roi);
  }
  /* the tiles of what is analysed now, else none */
  if (self->tile_cols * self->tile_rows > 1 &&
      !roi_fits_locked (self, self->roi.n ? &self->roi : &whole,
          self->tile_cols, self->tile_rows, self->tile_overlap, &tiles_why)) {
    tiles_text = self->tiles_text;
    self->tiles_text = NULL;
    self->tile_cols = self->tile_rows = 1;
  }
  GST_OBJECT_UNLOCK (self);
  if (why)
    GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS,
        ("faprompt: roi \"%s\" does not fit: %s; analysing the whole frame "
            "until roi is set again", text, why), (NULL));
  if (tiles_why)
    GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS,
        ("faprompt: tiles \"%s\" does not fit: %s; no tiles until tiles is "
            "set again", tiles_text, tiles_why), (NULL));
  g_free (why);
  g_free (text);
  g_free (tiles_why);
  g_free (tiles_text);
}

/* roi set: parsed and checked here (the application's thread), in force
 * from the next inference; a bad value is refused with a warning naming it
 * and the setting in force stays. */
static void
set_roi (GstFAPrompt * self, const gchar * text)
{
  FapRoiSpec spec;
  gchar *why = NULL, *kept = NULL;

  if (fap_roi_parse (text, &spec, &why)) {
    GST_OBJECT_LOCK (self);
    if (roi_fits_locked (self, &spec, self->tile_cols, self->tile_rows,
            self->tile_overlap, &why)) {
      g_free (self->roi_text);
      self->roi_text = spec.n ? g_strdup (text) : NULL;
      self->roi = spec;
      self->auto_warned = FALSE;
    } else {
      kept = g_strdup (self->roi_text ? self->roi_text : "");
    }
    GST_OBJECT_UNLOCK (self);
  } else {
    GST_OBJECT_LOCK (self);
    kept = g_strdup (self->roi_text ? self->roi_text : "");
    GST_OBJECT_UNLOCK (self);
  }
  /* posted outside the object lock (posting takes it) */
  if (why)
    GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS,
        ("faprompt: roi \"%s\" refused: %s; roi stays \"%s\"",
            text ? text : "", why, kept), (NULL));
  g_free (why);
  g_free (kept);
}

/* "auto", any case, blanks around */
static gboolean
tiles_text_is_auto (const gchar * text)
{
  gchar *copy = g_strstrip (g_strdup (text ? text : ""));
  gboolean is_auto = !g_ascii_strcasecmp (copy, "auto");

  g_free (copy);
  return is_auto;
}

/* tiles set: as roi, checked with the roi in force, refused with a warning
 * naming the value (the setting in force stays) */
static void
set_tiles (GstFAPrompt * self, const gchar * text)
{
  guint cols = 1, rows = 1;
  gchar *why = NULL, *kept = NULL;
  gboolean is_auto = tiles_text_is_auto (text);

  if (is_auto || fap_tiles_parse (text, &cols, &rows, &why)) {
    GST_OBJECT_LOCK (self);
    /* auto: the grid is picked per frame, within the batch; the rois must
     * fit as they are */
    if (roi_fits_locked (self, &self->roi, cols, rows, self->tile_overlap,
            &why)) {
      g_free (self->tiles_text);
      self->tiles_text = is_auto ? g_strdup ("auto") :
          cols * rows > 1 ? g_strdup (text) : NULL;
      self->tile_cols = cols;
      self->tile_rows = rows;
      self->tiles_auto = is_auto;
      self->auto_warned = FALSE;
    } else {
      kept = g_strdup (self->tiles_text ? self->tiles_text : "");
    }
    GST_OBJECT_UNLOCK (self);
  } else {
    GST_OBJECT_LOCK (self);
    kept = g_strdup (self->tiles_text ? self->tiles_text : "");
    GST_OBJECT_UNLOCK (self);
  }
  if (why)
    GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS,
        ("faprompt: tiles \"%s\" refused: %s; tiles stays \"%s\"",
            text ? text : "", why, kept), (NULL));
  g_free (why);
  g_free (kept);
}

static void
set_tile_overlap (GstFAPrompt * self, guint overlap)
{
  gchar *why = NULL;
  guint kept;

  GST_OBJECT_LOCK (self);
  kept = self->tile_overlap;
  if (roi_fits_locked (self, &self->roi, self->tile_cols, self->tile_rows,
          overlap, &why)) {
    self->tile_overlap = overlap;
    self->auto_warned = FALSE;
  }
  GST_OBJECT_UNLOCK (self);
  if (why)
    GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS,
        ("faprompt: tile-overlap %u refused: %s; tile-overlap stays %u",
            overlap, why, kept), (NULL));
  g_free (why);
}

/* ---- ignore-mask ---------------------------------------------------------- */

/* The watch's reload of the file (its thread): a good mask that fits the
 * frames takes over from the next result; anything else keeps the last
 * good one, with a warning. */
static void
mask_reloaded (FapMask * mask, const gchar * error, gpointer data)
{
  GstFAPrompt *self = data;
  gchar *why = error ? g_strdup (error) : NULL;
  FapMask *old = NULL;

  GST_OBJECT_LOCK (self);
  if (mask && self->roi_frame_w > 0 && !fap_mask_fits (mask,
          self->roi_frame_w, self->roi_frame_h, &why)) {
    fap_mask_unref (mask);
    mask = NULL;
  }
  if (mask) {
    old = self->mask;
    self->mask = mask;
  }
  GST_OBJECT_UNLOCK (self);
  if (mask)
    GST_INFO_OBJECT (self, "ignore-mask %s reloaded: %" G_GUINT64_FORMAT
        " of %dx%d pixels ignored", mask->path, mask->ignored_count,
        mask->width, mask->height);
  else
    GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS,
        ("faprompt: ignore-mask changed on disk but cannot be used: %s; the "
            "last good mask stays", why), (NULL));
  fap_mask_unref (old);
  g_free (why);
}

/* ignore-mask set: read here (the application's thread) and checked
 * against the frames once their size is known; refused with a warning
 * naming the file (the setting in force stays); watched for changes. */
static void
set_ignore_mask (GstFAPrompt * self, const gchar * text)
{
  gchar *path = text && *text ? g_strdup (text) : NULL, *why = NULL;
  gchar *kept = NULL;
  FapMask *mask = NULL, *old = NULL;
  FapMaskWatch *old_watch = NULL, *watch = NULL;
  guint settle;

  if (path)
    mask = fap_mask_load (path, &why);
  GST_OBJECT_LOCK (self);
  settle = self->watch_settle_ms;
  if (mask && self->roi_frame_w > 0 && !fap_mask_fits (mask,
          self->roi_frame_w, self->roi_frame_h, &why))
    g_clear_pointer (&mask, fap_mask_unref);
  if (path && !mask) {
    kept = g_strdup (self->ignore_mask_path ? self->ignore_mask_path : "");
  } else {
    old = self->mask;
    self->mask = mask;
    g_free (self->ignore_mask_path);
    self->ignore_mask_path = path;
    path = NULL;
    old_watch = self->mask_watch;
    self->mask_watch = NULL;
  }
  GST_OBJECT_UNLOCK (self);
  /* the old watch stops (its callback takes the object lock) before the
   * new one starts */
  fap_mask_watch_free (old_watch);
  if (mask) {
    watch = fap_mask_watch_new (mask->path, settle, mask_reloaded, self);
    GST_OBJECT_LOCK (self);
    self->mask_watch = watch;
    GST_OBJECT_UNLOCK (self);
  }
  if (why)
    GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS,
        ("faprompt: ignore-mask \"%s\" refused: %s; ignore-mask stays \"%s\"",
            text, why, kept), (NULL));
  fap_mask_unref (old);
  g_free (why);
  g_free (kept);
  g_free (path);
}

/* New caps: a mask of another aspect than the new frames is not used
 * (until the file or the property changes), with a warning. */
static void
mask_recheck (GstFAPrompt * self)
{
  gchar *why = NULL;
  FapMask *dropped = NULL;

  GST_OBJECT_LOCK (self);
  if (self->mask && !fap_mask_fits (self->mask, self->roi_frame_w,
          self->roi_frame_h, &why)) {
    dropped = self->mask;
    self->mask = NULL;
  }
  GST_OBJECT_UNLOCK (self);
  if (why)
    GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS,
        ("faprompt: ignore-mask refused: %s; no mask until the file or "
            "ignore-mask changes", why), (NULL));
  fap_mask_unref (dropped);
  g_free (why);
}

/* ---- start / stop -------------------------------------------------------- */

/* What every load of this start uses, from the properties (object lock
 * held); the detector's core messages go to this element's debug log. */
static void
read_load_settings_locked (GstFAPrompt * self, FapLoadSettings * ls)
{
  fap_load_settings_clear (ls);
  ls->instance_id = self->instance_id && *self->instance_id ?
      g_strdup (self->instance_id) : NULL;
  ls->batch_timeout_us = self->batch_timeout_us;
  fap_detector_options_init (&ls->options);
  ls->options.backend = (fap_backend_kind) self->backend;
  ls->options.precision = (fap_precision) self->precision;
  ls->options.device_id = self->device_id;
  ls->options.threads = self->threads;
  ls->options.image_size = self->image_size;
  ls->options.sigma = self->sigma;
  ls->options.log = fap_core_log;
  ls->options.log_user_data = self;
  /* a detector of its own runs a frame's rois in one batch */
  ls->options.batch = ls->instance_id ? (int) self->batch_size :
      (int) MAX (self->batch_size, MAX (self->roi.n, 1) * self->tile_cols *
      self->tile_rows);
  /* tiles=auto: the grid depends on frames not seen yet; room for the most
   * crops a frame may have */
  if (!ls->instance_id && self->tiles_auto)
    ls->options.batch = MAX (ls->options.batch, FAP_ROI_MAX);
}

/* The streaming thread's overlay (the CPU backend's drawing tables); on
 * failure the start fails as a detector that could not be built. */
static gboolean
make_overlay (GstFAPrompt * self, gchar ** error)
{
  fap_core_log_to (GST_OBJECT (self));
  self->overlay = fap_overlays_new (error);
  fap_core_log_to (NULL);
  return self->overlay != NULL;
}

static gboolean
gst_fa_prompt_start (GstBaseTransform * trans)
{
  GstFAPrompt *self = GST_FA_PROMPT (trans);
  FapLoadSettings *ls = &self->load;
  FapLoadFailure failure;
  FapModelState *m;
  FapModelSwap *swap;
  gchar *path, *err = NULL;
  gboolean watch;
  guint settle;

  GST_OBJECT_LOCK (self);
  path = model_path_locked (self);
  read_load_settings_locked (self, ls);
  watch = self->watch_model;
  settle = self->watch_settle_ms;
  fap_mode_reset (&self->mode, self->non_blocking);
  GST_OBJECT_UNLOCK (self);
  fap_stats_reset (&self->stats);

  /* CUDA: the detector is made in the element's GstCudaContext (shared with
   * the neighbours), so frames in CUDA memory are valid where it runs */
  if (ls->options.backend != FAP_BACKEND_CPU && fap_cuda_built ()) {
    gchar *why = NULL;
    if (!fap_cuda_ensure_context (&self->cuda, GST_ELEMENT (self),
            ls->options.device_id, &why))
      GST_INFO_OBJECT (self, "no GstCudaContext: %s", why);
    g_free (why);
  }

  m = fap_model_state_load (path, ls, &self->cuda, GST_ELEMENT (self),
      &failure, &err);
  if (m && !make_overlay (self, &err)) {
    failure = FAP_LOAD_NO_DETECTOR;
    g_clear_pointer (&m, fap_model_state_unref);
  }
  if (!m) {
    fap_load_failure_post (GST_ELEMENT (self), failure, path, ls, err);
    g_free (err);
    fap_cuda_clear (&self->cuda);
    fap_load_settings_clear (ls);
    g_free (path);
    return FALSE;
  }
  GST_INFO_OBJECT (self, "model %s %s (%.2f s load)", path,
      m->model_shared ? "shared with another element" : "loaded",
      fap_model_load_seconds (m->model));
  if (m->instance)
    GST_INFO_OBJECT (self, "model-instance-id %s: %u element(s), batch %d",
        ls->instance_id, fap_instance_users (m->instance),
        fap_detector_batch (m->detector));

  GST_OBJECT_LOCK (self);
  m->generation = ++self->model_generations;
  GST_OBJECT_UNLOCK (self);
  swap = fap_model_swap_new (GST_ELEMENT (self), ls, &self->cuda, m);
  GST_OBJECT_LOCK (self);
  self->state = m;
  self->swap = swap;
  /* every model swapped in later gets the same batch (the same settings) */
  self->roi_cap = (guint) MIN (fap_detector_batch (m->detector), FAP_ROI_MAX);
  GST_OBJECT_UNLOCK (self);
  roi_recheck (self);           /* a model instance built with a smaller batch */
  if (watch)
    fap_model_swap_watch (swap, path, settle);
  g_free (path);

  self->countdown = 0;
  self->generation++;
  self->have_info = FALSE;
  self->range_warned = FALSE;
  fap_results_init (&self->results);

  GST_INFO_OBJECT (self, "started: backend %s, S=%d, %s",
      fap_backend_name (fap_detector_backend (m->detector)),
      fap_detector_image_size (m->detector),
      !fap_mode_decided (&self->mode) ? "non-blocking when upstream is live" :
      fap_mode_non_blocking (&self->mode) ? "non-blocking" : "blocking");
  return TRUE;
}

static gboolean
gst_fa_prompt_stop (GstBaseTransform * trans)
{
  GstFAPrompt *self = GST_FA_PROMPT (trans);
  FapModelSwap *swap;
  FapModelState *m;

  fap_worker_stop (&self->worker);
  set_last (self, NULL);
  GST_OBJECT_LOCK (self);
  swap = self->swap;
  self->swap = NULL;
  GST_OBJECT_UNLOCK (self);
  /* waits for a load in progress; frees what it loaded or was handed */
  fap_model_swap_free (swap);
  GST_OBJECT_LOCK (self);
  m = self->state;
  self->state = NULL;
  GST_OBJECT_UNLOCK (self);
  fap_model_state_unref (m);
  fap_load_settings_clear (&self->load);
  fap_cuda_clear (&self->cuda);
  self->cuda_memory = FALSE;
  fap_overlays_free (self->overlay);
  self->overlay = NULL;
  fap_results_clear (&self->results);
  self->have_info = FALSE;
  GST_OBJECT_LOCK (self);
  self->roi_cap = 0;
  self->roi_frame_w = self->roi_frame_h = 0;
  GST_OBJECT_UNLOCK (self);
  return TRUE;
}

/* ---- caps ---------------------------------------------------------------- */

/* Results of the previous caps / segment are dropped; the next frame is due. */
static void
reset_stream (GstFAPrompt * self)
{
  self->generation++;
  fap_worker_reset (&self->worker);
  set_last (self, NULL);
  self->countdown = 0;
}

static gboolean
gst_fa_prompt_set_info (GstVideoFilter * filter, GstCaps * incaps,
    GstVideoInfo * in_info, GstCaps * outcaps, GstVideoInfo * out_info)
{
  GstFAPrompt *self = GST_FA_PROMPT (filter);
  gchar *why = NULL;

  GST_DEBUG_OBJECT (self, "caps %" GST_PTR_FORMAT, incaps);
  /* the same caps again (a source re-sending them): keep the result; the
   * memory feature is not in GstVideoInfo, so a change of it counts */
  if (self->have_info && gst_video_info_is_equal (in_info, &self->info)
      && fap_cuda_caps_are_cuda (incaps) == self->cuda_memory)
    return TRUE;
  if (!fap_frameview_check_info (in_info, &why)) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT, ("faprompt: %s", why),
        ("caps %" GST_PTR_FORMAT, incaps));
    g_free (why);
    return FALSE;
  }
  if (fap_cuda_caps_are_cuda (incaps)) {
    /* never a silent download: CUDA memory needs the CUDA backend */
    if (fap_detector_backend (self->state->detector) != FAP_BACKEND_CUDA
        || !self->cuda.context) {
      GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
          ("faprompt got video/x-raw(memory:CUDAMemory) but runs on the %s "
              "backend%s; put cudadownload before faprompt, or run it on the "
              "CUDA backend (backend=cuda, a GPU and the CUDA build)",
              fap_backend_name (fap_detector_backend (self->state->detector)),
              self->cuda.context ? "" : " without a GstCudaContext"),
          ("caps %" GST_PTR_FORMAT, incaps));
      return FALSE;
    }
  }
  self->cuda_memory = fap_cuda_caps_are_cuda (incaps);
  self->info = *in_info;
  self->have_info = TRUE;
  GST_OBJECT_LOCK (self);
  self->roi_frame_w = GST_VIDEO_INFO_WIDTH (in_info);
  self->roi_frame_h = GST_VIDEO_INFO_HEIGHT (in_info);
  self->auto_warned = FALSE;    /* tiles=auto on the new frame size */
  GST_OBJECT_UNLOCK (self);
  roi_recheck (self);           /* pixel rectangles outside the new frames */
  mask_recheck (self);
  reset_stream (self);
  return TRUE;
}

/* ---- per frame ----------------------------------------------------------- */

typedef struct
{
  FapResultSettings results;
  gfloat image_property, pixel_property;        /* < 0: the model's */
  gboolean draw;
  fap_blend blend;
  guint interval;
  guint n_rois;                 /* the frame's rois in pixels (roi) */
  gboolean roi_set;
  fap_rect rois[FAP_ROI_MAX];
  guint tile_cols, tile_rows, tile_overlap;     /* 1 x 1: no tiles */
  gboolean tiles_auto;          /* the grid picked for this frame */
  gboolean masked;              /* an ignore-mask is in force */
  guint n_crops;                /* what runs: the rois, or their tiles */
  fap_rect crops[FAP_ROI_MAX];
} Settings;

/* tiles=auto: the grid for the frame's rois (docs/SPEC.md section 1.2,
 * Automatic tiles; fap_tiles_auto) on the running model (S / P patches per side),
 * within the detector's batch. The first time the bound cannot be met
 * since tiles, tile-max-patch-pixels, tile-overlap, roi or the caps were
 * set, returns the warning's text (g_free), else NULL. Object lock held. */
static gchar *
pick_auto_tiles_locked (GstFAPrompt * self, Settings * s)
{
  guint grid = 1, cols = 1, rows = 1;
  guint cap = self->roi_cap ? self->roi_cap : FAP_ROI_MAX;
  gdouble worst = 0.0;
  gint c = 1, r = 1, met = 1;

  if (self->state) {
    const fap_config *cfg = fap_model_config (self->state->model);
    grid = (guint) MAX (fap_detector_image_size (self->state->detector) /
        MAX (cfg->patch_size, 1), 1);
  }
  /* the arguments are in range (rois of at least 1 x 1, grid and K >= 1):
   * it cannot fail */
  fap_tiles_auto (s->rois, (int) s->n_rois, (int) grid,
      (int) MIN (self->tile_max_patch_pixels, G_MAXINT),
      (int) MIN (s->tile_overlap, G_MAXINT), (int) cap, &c, &r, &met, &worst);
  cols = (guint) c;
  rows = (guint) r;
  if (met || self->auto_warned) {
    s->tile_cols = cols;
    s->tile_rows = rows;
    return NULL;
  }
  s->tile_cols = cols;
  s->tile_rows = rows;
  self->auto_warned = TRUE;
  return g_strdup_printf ("tiles=auto cannot keep a patch within "
      "tile-max-patch-pixels %u with at most %u crops a frame (%u "
      "rectangle%s; batch-size%s): %ux%u tiles, a patch covering up to %.1f "
      "frame pixels", self->tile_max_patch_pixels, MIN (cap, FAP_ROI_MAX),
      s->n_rois, s->n_rois > 1 ? "s" : "", self->state
      && self->state->instance ? " of the model instance" : "", cols, rows,
      worst);
}

/* for a @width x @height frame */
static void
read_settings (GstFAPrompt * self, Settings * s, gint width, gint height)
{
  gboolean warn = FALSE;
  gchar *why = NULL, *tiles_why = NULL, *auto_short = NULL;

  GST_OBJECT_LOCK (self);
  /* checked against the caps' frame size when set and at caps: it fits,
   * unless a frame's GstVideoMeta says another size (then the whole frame) */
  s->roi_set = self->roi.n > 0;
  if (!fap_roi_resolve (&self->roi, width, height, s->rois, &s->n_rois, &why)) {
    FapRoiSpec whole = { 0, };
    gchar *none = NULL;
    fap_roi_resolve (&whole, width, height, s->rois, &s->n_rois, &none);
    s->roi_set = FALSE;
  }
  /* checked with the roi when set and at caps: they fit, unless this frame
   * is another size (then no tiles) */
  s->tile_cols = self->tile_cols;
  s->tile_rows = self->tile_rows;
  s->tile_overlap = self->tile_overlap;
  s->tiles_auto = self->tiles_auto;
  s->masked = self->mask != NULL;
  if (s->tiles_auto)
    auto_short = pick_auto_tiles_locked (self, s);
  if (s->tile_cols * s->tile_rows > 1 && (s->n_rois * s->tile_cols *
          s->tile_rows > FAP_ROI_MAX || !tile_crops (s->rois, s->n_rois,
              s->tile_cols, s->tile_rows, s->tile_overlap, s->crops,
              &tiles_why)))
    s->tile_cols = s->tile_rows = 1;
  if (s->tile_cols * s->tile_rows == 1) {
    s->tile_overlap = 0;
    s->n_crops = s->n_rois;
    memcpy (s->crops, s->rois, s->n_rois * sizeof s->rois[0]);
  } else {
    s->n_crops = s->n_rois * s->tile_cols * s->tile_rows;
  }
  s->image_property = self->image_threshold;
  s->pixel_property = self->pixel_threshold;
  s->results.max_regions = self->max_regions;
  s->results.messages = (FapReportPolicy) self->post_messages;
  s->draw = self->draw_heatmap;
  s->blend.opacity = (float) self->heatmap_alpha;
  s->blend.range_min = self->heatmap_min;
  s->blend.range_max = self->heatmap_max;
  if (!(s->blend.range_max > s->blend.range_min)) {
    /* an empty scale: every drawn value gets the last colour */
    s->blend.range_max = s->blend.range_min + 1e-6f;
    warn = !self->range_warned;
    self->range_warned = TRUE;
  }
  s->interval = MAX (self->interval, 1);
  GST_OBJECT_UNLOCK (self);
  if (why)
    GST_DEBUG_OBJECT (self, "roi on a %dx%d frame: %s; the whole frame", width,
        height, why);
  if (tiles_why)
    GST_DEBUG_OBJECT (self, "tiles on a %dx%d frame: %s; no tiles", width,
        height, tiles_why);
  if (auto_short)
    GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS, ("faprompt: %s",
            auto_short), (NULL));
  g_free (auto_short);
  g_free (why);
  g_free (tiles_why);
  if (warn)
    GST_WARNING_OBJECT (self, "heatmap-max is not above heatmap-min: drawing "
        "every value above pixel-threshold in the last colour");
}

/* The thresholds for a result of a model with this calibration (< 0: none). */
static void
resolve_thresholds (Settings * s, gfloat model_image, gfloat model_pixel)
{
  fap_results_thresholds (s->image_property, s->pixel_property, model_image,
      model_pixel, &s->results.image_threshold, &s->results.pixel_threshold);
  s->blend.threshold = s->results.pixel_threshold;
}

/* controllable properties follow their control sources, once per frame */
static void
gst_fa_prompt_before_transform (GstBaseTransform * trans, GstBuffer * buf)
{
  GstClockTime ts = GST_BUFFER_PTS (buf);

  /* a segment in another format (or none yet: data before a segment) has
   * no stream time; gst_segment_to_stream_time would g_critical */
  if (GST_CLOCK_TIME_IS_VALID (ts) && trans->segment.format == GST_FORMAT_TIME) {
    ts = gst_segment_to_stream_time (&trans->segment, GST_FORMAT_TIME, ts);
    if (GST_CLOCK_TIME_IS_VALID (ts))
      gst_object_sync_values (GST_OBJECT (trans), ts);
  }
}

/* Runs the due frame on the streaming thread: the frame waits for it. A
 * private CUDA detector draws it in the same pass (@blend, *drawn). */
/* the request for the frame's rois as read for it */
static void
request_rois (FapInferRequest * req, const Settings * st)
{
  req->n_rois = st->n_rois;
  req->roi_set = st->roi_set;
  memcpy (req->rois, st->rois, st->n_rois * sizeof st->rois[0]);
  req->tile_cols = st->tile_cols;
  req->tile_rows = st->tile_rows;
  req->tile_overlap = (gint) st->tile_overlap;
  req->tiles_auto = st->tiles_auto;
  req->n_crops = st->n_crops;
  memcpy (req->crops, st->crops, st->n_crops * sizeof st->crops[0]);
}

static gboolean
infer_blocking (GstFAPrompt * self, GstBuffer * buf, const fap_frame * view,
    const Settings * st, gboolean * drawn)
{
  /* with an ignore-mask the masked maps are drawn afterwards */
  FapInferRequest req = { ++self->serial, self->generation,
    GST_BUFFER_PTS (buf), st->draw && !st->masked ? &st->blend : NULL,
  };
  FapInference *inf;
  gchar *err = NULL;
  gsize bytes;

  request_rois (&req, st);
  inf = fap_model_state_infer (self->state, view, &req, drawn, &bytes, &err);
  if (!inf) {
    GST_ELEMENT_ERROR (self, STREAM, FAILED,
        ("faprompt inference failed: %s", err), (NULL));
    g_free (err);
    return FALSE;
  }
  if (fap_stats_add_inference (&self->stats, inf->ms, bytes, TRUE))
    gst_element_post_message (GST_ELEMENT (self),
        gst_message_new_latency (GST_OBJECT (self)));
  set_last (self, inf);
  return TRUE;
}

/* What the worker handed back: the newest result carries on, an error stops
 * the stream (FALSE). */
static gboolean
take_worker_result (GstFAPrompt * self, FapInference * inf, gchar * err)
{
  if (inf)
    set_last (self, inf);
  if (err) {
    GST_ELEMENT_ERROR (self, STREAM, FAILED,
        ("faprompt inference failed: %s", err), (NULL));
    g_free (err);
    return FALSE;
  }
  return TRUE;
}

/* Non-blocking: takes the worker's newest result and, when an inference is
 * due and the worker idle, hands it this frame (a copy in its own format;
 * in CUDA memory a device copy, the frame itself flows on and may be drawn
 * into) with the model running now. Never waits. */
static gboolean
infer_async (GstFAPrompt * self, GstVideoFrame * frame,
    const fap_frame * view, gboolean due, const Settings * st,
    gboolean * submitted)
{
  FapInferRequest req = { 0, self->generation, GST_BUFFER_PTS (frame->buffer),
    st->draw && !st->masked ? &st->blend : NULL,
  };
  FapDeviceJob job = { NULL, };
  FapInference *inf;
  gchar *err;

  request_rois (&req, st);
  if (due)
    req.serial = ++self->serial;
  if (view->memory != FAP_MEMORY_CUDA) {
    *submitted = fap_worker_exchange (&self->worker, self->state,
        due ? view : NULL, &req, &self->overlay, &inf, &err);
    return take_worker_result (self, inf, err);
  }
  if (due && fap_worker_idle (&self->worker)) {
    job.buffer = fap_cuda_copy (&self->cuda, frame, &job.vframe);
    if (!job.buffer) {
      GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
          ("faprompt could not copy a CUDA frame for the worker"), (NULL));
      return FALSE;
    }
    fap_frameview_of (&job.vframe, &job.view);
    job.view.memory = FAP_MEMORY_CUDA;
  }
  *submitted = fap_worker_exchange_device (&self->worker, self->state, &job,
      &req, &inf, &err);
  fap_device_job_release (&job);        /* not taken */
  return take_worker_result (self, inf, err);
}

/* The carried result drawn into a frame its own inference did not draw. */
static gboolean
draw_result (GstFAPrompt * self, const fap_frame * view,
    const FapInference * inf, const fap_blend * blend)
{
  gsize moved;
  gchar *err = NULL;
  gboolean ok = fap_model_state_draw (self->state, self->overlay, view, inf,
      blend, &moved, &err);

  fap_stats_add_pixel_bytes (&self->stats, moved);
  if (!ok) {
    GST_ELEMENT_ERROR (self, STREAM, FAILED,
        ("faprompt could not draw the heatmap: %s", err), (NULL));
    g_free (err);
  }
  return ok;
}

/* draw_result, keeping the heatmap out of the ignore-mask: the masked
 * pixels' bytes are put back after drawing (frames in system memory; in
 * CUDA memory only the map's zeros keep it out) */
static gboolean
draw_masked (GstFAPrompt * self, GstVideoFrame * frame, const fap_frame * view,
    const FapInference * inf, const Settings * st)
{
  FapMask *mask = NULL;
  gboolean ok, guard;

  if (st->masked) {
    GST_OBJECT_LOCK (self);
    mask = fap_mask_ref (self->mask);
    GST_OBJECT_UNLOCK (self);
  }
  guard = mask && !self->cuda_memory;
  if (guard) {
    fap_mask_guard_prepare (&self->mask_guard, mask, &frame->info);
    fap_mask_guard_save (&self->mask_guard, frame);
  }
  ok = draw_result (self, view, inf, &st->blend);
  if (guard)
    fap_mask_guard_restore (&self->mask_guard, frame);
  fap_mask_unref (mask);
  return ok;
}

static GstFlowReturn
process_frame (GstFAPrompt * self, GstVideoFrame * frame)
{
  GstBuffer *buf = frame->buffer;
  gint64 t0 = g_get_monotonic_time ();
  gboolean due, non_blocking, fresh = FALSE, drawn = FALSE;
  gboolean anomalous = FALSE;
  GstFlowReturn ret = GST_FLOW_OK;
  guint regions = 0;
  fap_frame view;
  Settings st;
  gdouble ms;

  maybe_swap (self);
  non_blocking = fap_mode_settle (&self->mode, GST_ELEMENT (self));
  if (non_blocking && !fap_worker_running (&self->worker))
    fap_worker_start (&self->worker, &self->stats);
  read_settings (self, &st, GST_VIDEO_FRAME_WIDTH (frame),
      GST_VIDEO_FRAME_HEIGHT (frame));
  /* a frame drawn in its own inference's pass: that model's calibration */
  resolve_thresholds (&st, self->state->image_threshold,
      self->state->pixel_threshold);
  fap_frameview_of (frame, &view);
  if (self->cuda_memory)
    view.memory = FAP_MEMORY_CUDA;
  /* the interval may have been lowered while playing */
  if (self->countdown > st.interval - 1)
    self->countdown = st.interval - 1;
  due = self->countdown == 0;

  /* the one call out: the frame runs (blocking), or goes to the worker and
   * the newest finished result comes back (non-blocking) */
  if (!fap_worker_running (&self->worker)) {
    if (due) {
      if (!infer_blocking (self, buf, &view, &st, &drawn))
        return GST_FLOW_ERROR;
      fresh = TRUE;
      self->countdown = st.interval;
    }
  } else {
    gboolean submitted;
    if (!infer_async (self, frame, &view, due, &st, &submitted))
      return GST_FLOW_ERROR;
    if (submitted)
      self->countdown = st.interval;
  }
  if (self->countdown > 0)
    self->countdown--;

  /* the result this frame carries: metas, the heatmap, messages (none when
   * the last result's rectangles do not lie in this frame: its GstVideoMeta
   * gives another size than the frame the result was computed on) */
  if (self->last && !fap_inference_fits (self->last,
          GST_VIDEO_FRAME_WIDTH (frame), GST_VIDEO_FRAME_HEIGHT (frame)))
    GST_DEBUG_OBJECT (self, "the last result's rectangles do not lie in this "
        "%dx%d frame: not carried over", GST_VIDEO_FRAME_WIDTH (frame),
        GST_VIDEO_FRAME_HEIGHT (frame));
  else if (self->last) {
    const FapInference *inf = self->last;
    /* judged by the calibration of the model that computed it (the old one
     * until the first result of a model swapped in) */
    resolve_thresholds (&st, inf->model_image_threshold,
        inf->model_pixel_threshold);
    regions = fap_results_attach (&self->results, buf, inf, &st.results,
        fresh, GST_VIDEO_FRAME_WIDTH (frame), GST_VIDEO_FRAME_HEIGHT (frame),
        &anomalous);
    if (st.draw && !drawn && !draw_masked (self, frame, &view, inf, &st))
      ret = GST_FLOW_ERROR;
    fap_results_post_for_frame (&self->results, GST_ELEMENT (self),
        &GST_BASE_TRANSFORM (self)->segment, buf, inf, &st.results,
        anomalous, fresh, regions);
  }

  ms = (g_get_monotonic_time () - t0) / 1000.0;
  if (fap_stats_add_frame (&self->stats, ms, fresh, non_blocking))
    gst_element_post_message (GST_ELEMENT (self),
        gst_message_new_latency (GST_OBJECT (self)));
  GST_LOG_OBJECT (self, "frame %" GST_TIME_FORMAT " %s %.2f ms",
      GST_TIME_ARGS (GST_BUFFER_PTS (buf)), fresh ? "inferred" : "reused", ms);
  return ret;
}

/* GstVideoFilter's own transform_ip would map a CUDA buffer to system
 * memory (a download); this maps it for the device instead. */
static GstFlowReturn
gst_fa_prompt_transform_ip (GstBaseTransform * trans, GstBuffer * buf)
{
  GstFAPrompt *self = GST_FA_PROMPT (trans);
  const GstMapFlags flags = GST_MAP_READWRITE | GST_VIDEO_FRAME_MAP_FLAG_NO_REF;
  GstVideoFrame frame;
  GstFlowReturn ret;
  gchar *why = NULL;

  if (!self->have_info) {
    GST_ELEMENT_ERROR (self, CORE, NOT_IMPLEMENTED, (NULL),
        ("a buffer before caps"));
    return GST_FLOW_NOT_NEGOTIATED;
  }
  if (self->cuda_memory) {
    if (!fap_cuda_map (&self->cuda, &frame, &self->info, buf, flags, &why)) {
      GST_ELEMENT_ERROR (self, STREAM, FAILED, ("faprompt: %s", why), (NULL));
      g_free (why);
      return GST_FLOW_ERROR;
    }
  } else if (!gst_video_frame_map (&frame, &self->info, buf, flags)) {
    GST_ELEMENT_ERROR (self, STREAM, FAILED,
        ("faprompt could not map a frame"), (NULL));
    return GST_FLOW_ERROR;
  } else if (!fap_frameview_check_frame (&frame, &why)) {
    /* gst_video_frame_map trusts a GstVideoMeta: planes past the buffer,
     * negative or short strides would be read (and drawn into) */
    GST_ELEMENT_ERROR (self, STREAM, FAILED, ("faprompt: %s", why), (NULL));
    g_free (why);
    gst_video_frame_unmap (&frame);
    return GST_FLOW_ERROR;
  }
  ret = process_frame (self, &frame);
  gst_video_frame_unmap (&frame);
  return ret;
}

static void
gst_fa_prompt_set_context (GstElement * element, GstContext * context)
{
  GstFAPrompt *self = GST_FA_PROMPT (element);
  gint device_id;

  GST_OBJECT_LOCK (self);
  device_id = self->device_id;
  GST_OBJECT_UNLOCK (self);
  fap_cuda_set_context (&self->cuda, element, context, device_id);
  GST_ELEMENT_CLASS (parent_class)->set_context (element, context);
}

/* ---- events and queries -------------------------------------------------- */

static void
end_anomaly (GstFAPrompt * self)
{
  FapReportPolicy mode;

  GST_OBJECT_LOCK (self);
  mode = (FapReportPolicy) self->post_messages;
  GST_OBJECT_UNLOCK (self);
  fap_results_end_anomaly (&self->results, GST_ELEMENT (self),
      &GST_BASE_TRANSFORM (self)->segment, self->last, mode);
}

static gboolean
gst_fa_prompt_sink_event (GstBaseTransform * trans, GstEvent * event)
{
  GstFAPrompt *self = GST_FA_PROMPT (trans);

  switch (GST_EVENT_TYPE (event)) {
    case GST_EVENT_EOS:
      end_anomaly (self);
      break;
    case GST_EVENT_FLUSH_STOP:
      end_anomaly (self);
      reset_stream (self);
      break;
    default:
      break;
  }
  return GST_BASE_TRANSFORM_CLASS (parent_class)->sink_event (trans, event);
}

static gboolean
gst_fa_prompt_query (GstBaseTransform * trans, GstPadDirection direction,
    GstQuery * query)
{
  GstFAPrompt *self = GST_FA_PROMPT (trans);
  gboolean ret;

  if (fap_cuda_handle_query (&self->cuda, GST_ELEMENT (self), query))
    return TRUE;
  ret = GST_BASE_TRANSFORM_CLASS (parent_class)->query (trans, direction,
      query);

  if (ret && direction == GST_PAD_SRC
      && GST_QUERY_TYPE (query) == GST_QUERY_LATENCY) {
    gboolean live;
    GstClockTime min, max, ours;

    gst_query_parse_latency (query, &live, &min, &max);
    /* non-blocking=auto, if not yet decided */
    fap_mode_decide (&self->mode, GST_ELEMENT (self), live);
    ours = fap_stats_added_latency (&self->stats,
        fap_mode_non_blocking (&self->mode));
    GST_DEBUG_OBJECT (self, "adding latency %" GST_TIME_FORMAT,
        GST_TIME_ARGS (ours));
    min += ours;
    if (GST_CLOCK_TIME_IS_VALID (max))
      max += ours;
    gst_query_set_latency (query, live, min, max);
  }
  return ret;
}

/* ---- properties ---------------------------------------------------------- */

static void
gst_fa_prompt_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstFAPrompt *self = GST_FA_PROMPT (object);

  if (prop_id == PROP_ROI) {    /* takes the lock itself, may post a warning */
    set_roi (self, g_value_get_string (value));
    return;
  }
  if (prop_id == PROP_TILES) {  /* so do these two */
    set_tiles (self, g_value_get_string (value));
    return;
  }
  if (prop_id == PROP_TILE_OVERLAP) {
    set_tile_overlap (self, g_value_get_uint (value));
    return;
  }
  if (prop_id == PROP_IGNORE_MASK) {
    set_ignore_mask (self, g_value_get_string (value));
    return;
  }
  if (prop_id == PROP_TILE_MAX_PATCH_PIXELS) {
    GST_OBJECT_LOCK (self);
    self->tile_max_patch_pixels = g_value_get_uint (value);
    self->auto_warned = FALSE;
    GST_OBJECT_UNLOCK (self);
    return;
  }
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL_FILE:
      g_free (self->model_file);
      self->model_file = g_value_dup_string (value);
      /* started: loaded beside the stream and swapped in between frames */
      request_swap_locked (self, "model-file");
      break;
    case PROP_WATCH_MODEL:
      self->watch_model = g_value_get_boolean (value);
      if (self->swap) {
        gchar *path = self->watch_model ? model_path_locked (self) : NULL;
        fap_model_swap_watch (self->swap, path, self->watch_settle_ms);
        g_free (path);
      }
      break;
    case PROP_WATCH_SETTLE:
      self->watch_settle_ms = g_value_get_uint (value);
      break;
    case PROP_BACKEND:
      self->backend = g_value_get_enum (value);
      break;
    case PROP_PRECISION:
      self->precision = g_value_get_enum (value);
      break;
    case PROP_DEVICE_ID:
      self->device_id = g_value_get_int (value);
      break;
    case PROP_THREADS:
      self->threads = g_value_get_int (value);
      break;
    case PROP_IMAGE_SIZE:
      self->image_size = g_value_get_int (value);
      break;
    case PROP_SIGMA:
      self->sigma = g_value_get_float (value);
      break;
    case PROP_IMAGE_THRESHOLD:
      self->image_threshold = g_value_get_float (value);
      break;
    case PROP_PIXEL_THRESHOLD:
      self->pixel_threshold = g_value_get_float (value);
      break;
    case PROP_DRAW_HEATMAP:
      self->draw_heatmap = g_value_get_boolean (value);
      break;
    case PROP_HEATMAP_ALPHA:
      self->heatmap_alpha = g_value_get_double (value);
      break;
    case PROP_HEATMAP_MIN:
      self->heatmap_min = g_value_get_float (value);
      break;
    case PROP_HEATMAP_MAX:
      self->heatmap_max = g_value_get_float (value);
      break;
    case PROP_INFERENCE_INTERVAL:
      self->interval = g_value_get_uint (value);
      break;
    case PROP_NON_BLOCKING:
      self->non_blocking = g_value_get_enum (value);
      break;
    case PROP_POST_MESSAGES:
      self->post_messages = g_value_get_enum (value);
      break;
    case PROP_MAX_REGIONS:
      self->max_regions = g_value_get_uint (value);
      break;
    case PROP_MODEL_INSTANCE_ID:
      g_free (self->instance_id);
      self->instance_id = g_value_dup_string (value);
      break;
    case PROP_BATCH_SIZE:
      self->batch_size = g_value_get_uint (value);
      break;
    case PROP_BATCH_TIMEOUT:
      self->batch_timeout_us = g_value_get_uint64 (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_fa_prompt_get_property (GObject * object, guint prop_id, GValue * value,
    GParamSpec * pspec)
{
  GstFAPrompt *self = GST_FA_PROMPT (object);
  FapStatsReport stats;

  fap_stats_report (&self->stats, &stats);
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL_FILE:
      g_value_set_string (value, self->model_file);
      break;
    case PROP_WATCH_MODEL:
      g_value_set_boolean (value, self->watch_model);
      break;
    case PROP_WATCH_SETTLE:
      g_value_set_uint (value, self->watch_settle_ms);
      break;
    case PROP_MODEL_GENERATION:
      g_value_set_uint64 (value, self->state ? self->state->generation : 0);
      break;
    case PROP_MODEL_FAMILY:
      g_value_set_string (value, self->state ?
          fap_family_name (fap_model_config (self->state->model)->family) :
          NULL);
      break;
    case PROP_RUNNING_PRECISION:
      g_value_set_string (value, self->state ?
          fap_precision_name (fap_detector_precision (self->state->detector)) :
          NULL);
      break;
    case PROP_BACKEND:
      g_value_set_enum (value, self->backend);
      break;
    case PROP_PRECISION:
      g_value_set_enum (value, self->precision);
      break;
    case PROP_DEVICE_ID:
      g_value_set_int (value, self->device_id);
      break;
    case PROP_THREADS:
      g_value_set_int (value, self->threads);
      break;
    case PROP_IMAGE_SIZE:
      g_value_set_int (value, self->image_size);
      break;
    case PROP_SIGMA:
      g_value_set_float (value, self->sigma);
      break;
    case PROP_IMAGE_THRESHOLD:
      g_value_set_float (value, self->image_threshold);
      break;
    case PROP_PIXEL_THRESHOLD:
      g_value_set_float (value, self->pixel_threshold);
      break;
    case PROP_DRAW_HEATMAP:
      g_value_set_boolean (value, self->draw_heatmap);
      break;
    case PROP_HEATMAP_ALPHA:
      g_value_set_double (value, self->heatmap_alpha);
      break;
    case PROP_HEATMAP_MIN:
      g_value_set_float (value, self->heatmap_min);
      break;
    case PROP_HEATMAP_MAX:
      g_value_set_float (value, self->heatmap_max);
      break;
    case PROP_INFERENCE_INTERVAL:
      g_value_set_uint (value, self->interval);
      break;
    case PROP_NON_BLOCKING:
      g_value_set_enum (value, self->non_blocking);
      break;
    case PROP_POST_MESSAGES:
      g_value_set_enum (value, self->post_messages);
      break;
    case PROP_MAX_REGIONS:
      g_value_set_uint (value, self->max_regions);
      break;
    case PROP_MODEL_INSTANCE_ID:
      g_value_set_string (value, self->instance_id);
      break;
    case PROP_BATCH_SIZE:
      g_value_set_uint (value, self->batch_size);
      break;
    case PROP_BATCH_TIMEOUT:
      g_value_set_uint64 (value, self->batch_timeout_us);
      break;
    case PROP_ROI:
      g_value_set_string (value, self->roi_text ? self->roi_text : "");
      break;
    case PROP_TILES:
      g_value_set_string (value, self->tiles_text ? self->tiles_text : "");
      break;
    case PROP_TILE_OVERLAP:
      g_value_set_uint (value, self->tile_overlap);
      break;
    case PROP_TILE_MAX_PATCH_PIXELS:
      g_value_set_uint (value, self->tile_max_patch_pixels);
      break;
    case PROP_IGNORE_MASK:
      g_value_set_string (value, self->ignore_mask_path ?
          self->ignore_mask_path : "");
      break;
    case PROP_FRAMES_PROCESSED:
      g_value_set_uint64 (value, stats.frames);
      break;
    case PROP_INFERENCES:
      g_value_set_uint64 (value, stats.inferences);
      break;
    case PROP_AVERAGE_INFERENCE_MS:
      g_value_set_double (value, stats.average_inference_ms);
      break;
    case PROP_AVERAGE_FRAME_MS:
      g_value_set_double (value, stats.average_frame_ms);
      break;
    case PROP_MODEL_SHARED:
      /* now, not at load: a partner may have swapped to another model. An
       * instance holds the model once more itself. */
      g_value_set_boolean (value, self->state &&
          (fap_modelcache_users (self->state->model) -
              (self->state->instance ? 1 : 0) > 1
              || (self->state->instance
                  && fap_instance_users (self->state->instance) > 1)));
      break;
    case PROP_PIXEL_BYTES:
      g_value_set_uint64 (value, stats.pixel_bytes);
      break;
    case PROP_AVERAGE_BATCH:{
      guint64 batches = 0, frames = 0;
      if (self->state && self->state->instance)
        fap_instance_stats (self->state->instance, &batches, &frames, NULL);
      g_value_set_double (value, batches ? (gdouble) frames / batches : 0.0);
      break;
    }
    case PROP_INSTANCE_QUEUE:{
      guint64 batches = 0, frames = 0;
      guint pending = 0;
      if (self->state && self->state->instance)
        fap_instance_stats (self->state->instance, &batches, &frames, &pending);
      g_value_set_uint (value, pending);
      break;
    }
    case PROP_LAST_SCORE:
      g_value_set_float (value, stats.last_score);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_fa_prompt_finalize (GObject * object)
{
  GstFAPrompt *self = GST_FA_PROMPT (object);

  g_free (self->model_file);
  g_free (self->instance_id);
  g_free (self->roi_text);
  g_free (self->tiles_text);
  fap_mask_watch_free (self->mask_watch);       /* no callback after this */
  fap_mask_unref (self->mask);
  g_free (self->ignore_mask_path);
  fap_mask_guard_clear (&self->mask_guard);
  fap_worker_clear (&self->worker);
  fap_stats_clear (&self->stats);
  fap_mode_clear (&self->mode);
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static void
gst_fa_prompt_init (GstFAPrompt * self)
{
  self->backend = GST_FA_PROMPT_BACKEND_AUTO;
  self->precision = GST_FA_PROMPT_PRECISION_AUTO;
  self->sigma = -1.0f;
  self->image_threshold = -1.0f;
  self->pixel_threshold = -1.0f;
  self->draw_heatmap = TRUE;
  self->heatmap_alpha = 0.5;
  self->heatmap_min = 0.0f;
  self->heatmap_max = 1.0f;
  self->interval = 1;
  self->non_blocking = GST_FA_PROMPT_NON_BLOCKING_AUTO;
  self->post_messages = GST_FA_PROMPT_MESSAGES_ON_CHANGE;
  self->max_regions = 16;
  self->batch_size = 1;
  self->tile_cols = self->tile_rows = 1;
  self->tile_max_patch_pixels = DEFAULT_TILE_MAX_PATCH_PIXELS;
  fap_mask_guard_init (&self->mask_guard);
  self->batch_timeout_us = 5000;
  self->watch_settle_ms = DEFAULT_WATCH_SETTLE_MS;
  fap_stats_init (&self->stats);
  fap_mode_init (&self->mode);
  fap_worker_init (&self->worker);
}

static void
gst_fa_prompt_class_init (GstFAPromptClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS (klass);
  GstVideoFilterClass *filter_class = GST_VIDEO_FILTER_CLASS (klass);
  const GParamFlags rw = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS;
  const GParamFlags ready = rw | GST_PARAM_MUTABLE_READY;
  const GParamFlags playing = rw | GST_PARAM_MUTABLE_PLAYING |
      GST_PARAM_CONTROLLABLE;
  const GParamFlags ro = G_PARAM_READABLE | G_PARAM_STATIC_STRINGS;
  gchar *blurb;

  fap_debug_init ();
  /* no fap_set_log_callback here: the process-wide sink is the
   * application's; each element logs its own core calls (fap_log.h) */

  gobject_class->set_property = gst_fa_prompt_set_property;
  gobject_class->get_property = gst_fa_prompt_get_property;
  gobject_class->finalize = gst_fa_prompt_finalize;

  blurb = g_strdup_printf ("Model file (safetensors, see models/README.md). "
      "NULL: $FAPROMPT_MODEL if set, else $XDG_DATA_HOME/faprompt/"
      DEFAULT_MODEL_NAME " (here: %s/faprompt/" DEFAULT_MODEL_NAME "). "
      "Elements naming the same file share one loaded model. Set while "
      "playing, the new file loads beside the stream (frames keep the old "
      "model's results meanwhile) and takes over between two frames; a file "
      "that does not load leaves the old model running and posts a warning",
      g_get_user_data_dir ());
  g_object_class_install_property (gobject_class, PROP_MODEL_FILE,
      g_param_spec_string ("model-file", "Model file", blurb, NULL,
          G_PARAM_READWRITE | GST_PARAM_MUTABLE_PLAYING));
  g_free (blurb);               /* copied: not G_PARAM_STATIC_BLURB */
  g_object_class_install_property (gobject_class, PROP_WATCH_MODEL,
      g_param_spec_boolean ("watch-model", "Watch model",
          "Reload the model when its file or its calibration sidecar "
          "(<model-file>.calibration.json) changes on disk, once neither has "
          "changed for watch-settle ms (a file being copied is not loaded "
          "half-written)", FALSE, rw | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_WATCH_SETTLE,
      g_param_spec_uint ("watch-settle", "Watch settle",
          "With watch-model: milliseconds the files must stay unchanged "
          "before a changed model is loaded", 0, 600000,
          DEFAULT_WATCH_SETTLE_MS, rw | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_MODEL_GENERATION,
      g_param_spec_uint64 ("model-generation", "Model generation",
          "The model running now: 1 for the first model this element ran, "
          "+1 for each one that took over since (swaps, restarts); results "
          "carry the generation of the model that computed them (meta, "
          "messages)",
          0, G_MAXUINT64, 0, ro));
  g_object_class_install_property (gobject_class, PROP_MODEL_FAMILY,
      g_param_spec_string ("model-family", "Model family",
          "The family of the model running now (read from its file): "
          "\"faprompt\" (FAPrompt, ICCV 2025) or \"anomalyclip\" "
          "(AnomalyCLIP, ICLR 2024; its map is the authors' sum over their "
          "out layers divided by their number, so in [0, 1]); NULL when "
          "stopped. Results say it too (meta model_family, messages)",
          NULL, ro));
  g_object_class_install_property (gobject_class, PROP_RUNNING_PRECISION,
      g_param_spec_string ("running-precision", "Running precision",
          "The number format the running model computes in: what "
          "precision=auto chose for this machine, or what a request fell "
          "back to; NULL when stopped. Results say it too (meta precision, "
          "messages)", NULL, ro));

  /**
   * GstFAPrompt::reload:
   *
   * Loads model-file again (and its calibration sidecar) beside the stream
   * and swaps it in between two frames, as setting model-file does. Returns
   * FALSE when the element is not started (the model loads at start).
   */
  signals[SIGNAL_RELOAD] = g_signal_new_class_handler ("reload",
      G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST | G_SIGNAL_ACTION,
      G_CALLBACK (gst_fa_prompt_reload), NULL, NULL, NULL, G_TYPE_BOOLEAN, 0);
  g_object_class_install_property (gobject_class, PROP_BACKEND,
      g_param_spec_enum ("backend", "Backend", "Compute backend",
          GST_TYPE_FA_PROMPT_BACKEND, GST_FA_PROMPT_BACKEND_AUTO, ready));
  g_object_class_install_property (gobject_class, PROP_PRECISION,
      g_param_spec_enum ("precision", "Precision",
          "Number format of the matrix products. auto: bf16 on CPUs with "
          "bf16 units, f32 on other CPUs, f16 on CUDA; f32 computes exactly "
          "as the authors' code. A CPU request the CPU cannot run well "
          "computes in f32 and says why in the debug log (INFO); "
          "running-precision says what runs",
          GST_TYPE_FA_PROMPT_PRECISION, GST_FA_PROMPT_PRECISION_AUTO, ready));
  g_object_class_install_property (gobject_class, PROP_DEVICE_ID,
      g_param_spec_int ("device-id", "Device ID", "CUDA device ordinal",
          0, G_MAXINT, 0, ready));
  g_object_class_install_property (gobject_class, PROP_THREADS,
      g_param_spec_int ("threads", "Threads",
          "CPU threads of the CPU backend (0 = all online cores)",
          0, 1024, 0, ready));
  g_object_class_install_property (gobject_class, PROP_IMAGE_SIZE,
      g_param_spec_int ("image-size", "Image size",
          "Side S the model runs at, a multiple of the patch size (14); "
          "0 = the model's (518 for ViT-L/14@336px). Smaller is faster "
          "(336: about 2.5x)", 0, 4096, 0, ready));
  g_object_class_install_property (gobject_class, PROP_SIGMA,
      g_param_spec_float ("sigma", "Sigma",
          "Gaussian smoothing of the map in map pixels (< 0 = the model's, "
          "0 = none)", -1.0f, 100.0f, -1.0f, ready));
  g_object_class_install_property (gobject_class, PROP_IMAGE_THRESHOLD,
      g_param_spec_float ("image-threshold", "Image threshold",
          "A frame is anomalous when its score is above this (< 0 = the "
          "model's calibrated threshold if it has one, else 0.5)",
          -1.0f, 1.0f, -1.0f, playing));
  g_object_class_install_property (gobject_class, PROP_PIXEL_THRESHOLD,
      g_param_spec_float ("pixel-threshold", "Pixel threshold",
          "Map values above this are drawn and grouped into regions (< 0 = "
          "the model's calibrated threshold if it has one, else 0.5)",
          -1.0f, 1.0f, -1.0f, playing));
  g_object_class_install_property (gobject_class, PROP_DRAW_HEATMAP,
      g_param_spec_boolean ("draw-heatmap", "Draw heatmap",
          "Blend the anomaly map into the frame where it exceeds "
          "pixel-threshold", TRUE, playing));
  g_object_class_install_property (gobject_class, PROP_HEATMAP_ALPHA,
      g_param_spec_double ("heatmap-alpha", "Heatmap alpha",
          "Opacity at the top of the colour scale: a pixel whose map value is "
          "above pixel-threshold moves towards its colour by heatmap-alpha x t, "
          "t = the value's place between heatmap-min and heatmap-max (0..1)",
          0.0, 1.0, 0.5, playing));
  g_object_class_install_property (gobject_class, PROP_HEATMAP_MIN,
      g_param_spec_float ("heatmap-min", "Heatmap minimum",
          "Map value shown as the first colour (blue); a fixed scale, never "
          "per-frame normalisation, so a normal frame looks calm",
          0.0f, 1.0f, 0.0f, playing));
  g_object_class_install_property (gobject_class, PROP_HEATMAP_MAX,
      g_param_spec_float ("heatmap-max", "Heatmap maximum",
          "Map value shown as the last colour (red)", 0.0f, 1.0f, 1.0f,
          playing));
  g_object_class_install_property (gobject_class, PROP_INFERENCE_INTERVAL,
      g_param_spec_uint ("inference-interval", "Inference interval",
          "Run the model every N frames; frames in between carry the last "
          "result (meta flagged reused) and its overlay", 1, G_MAXINT, 1,
          playing));
  g_object_class_install_property (gobject_class, PROP_NON_BLOCKING,
      g_param_spec_enum ("non-blocking", "Non-blocking",
          "true: inference on a worker thread, no frame waits for it; frames "
          "carry the newest finished result (reused, with the timestamp of "
          "the frame it was computed on); an inference starts when one is "
          "due and the worker is idle. false: a due frame waits for its own "
          "inference. auto: true when upstream is live (a camera: the video "
          "keeps its rate), false otherwise (a file: every due frame scored)",
          GST_TYPE_FA_PROMPT_NON_BLOCKING, GST_FA_PROMPT_NON_BLOCKING_AUTO,
          ready));
  g_object_class_install_property (gobject_class, PROP_POST_MESSAGES,
      g_param_spec_enum ("post-messages", "Post messages",
          "When to post \"faprompt\" element messages",
          GST_TYPE_FA_PROMPT_MESSAGES, GST_FA_PROMPT_MESSAGES_ON_CHANGE,
          playing));
  g_object_class_install_property (gobject_class, PROP_MAX_REGIONS,
      g_param_spec_uint ("max-regions", "Max regions",
          "Most regions (highest peaks first) attached as "
          "GstVideoRegionOfInterestMeta per frame (0 = all)", 0, G_MAXINT, 16,
          playing));
  g_object_class_install_property (gobject_class, PROP_FRAMES_PROCESSED,
      g_param_spec_uint64 ("frames-processed", "Frames processed",
          "Frames that went through the element since start", 0, G_MAXUINT64,
          0, ro));
  g_object_class_install_property (gobject_class, PROP_INFERENCES,
      g_param_spec_uint64 ("inferences", "Inferences",
          "Inferences run since start", 0, G_MAXUINT64, 0, ro));
  g_object_class_install_property (gobject_class, PROP_AVERAGE_INFERENCE_MS,
      g_param_spec_double ("average-inference-ms", "Average inference ms",
          "Mean time of one inference since start, milliseconds", 0.0,
          G_MAXDOUBLE, 0.0, ro));
  g_object_class_install_property (gobject_class, PROP_LAST_SCORE,
      g_param_spec_float ("last-score", "Last score",
          "Score of the newest result (-1 before the first)", -1.0f, 1.0f,
          -1.0f, ro));

  g_object_class_install_property (gobject_class, PROP_AVERAGE_FRAME_MS,
      g_param_spec_double ("average-frame-ms", "Average frame ms",
          "Mean time the streaming thread spent on a frame that ran no "
          "inference itself (metas, regions, heatmap overlay, hand-off to the "
          "worker), milliseconds", 0.0, G_MAXDOUBLE, 0.0, ro));
  g_object_class_install_property (gobject_class, PROP_MODEL_SHARED,
      g_param_spec_boolean ("model-shared", "Model shared",
          "TRUE when the loaded model is shared with another faprompt element "
          "of this process (same file: weights loaded once)", FALSE, ro));

  g_object_class_install_property (gobject_class, PROP_MODEL_INSTANCE_ID,
      g_param_spec_string ("model-instance-id", "Model instance id",
          "Elements of this process naming the same id share one detector "
          "(one copy of the weights on the device) and run their frames "
          "together in batches of batch-size; the first element to start "
          "decides model-file, backend, device-id, threads, image-size, "
          "sigma, batch-size and batch-timeout. Empty: a detector of its own",
          NULL, G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_BATCH_SIZE,
      g_param_spec_uint ("batch-size", "Batch size",
          "Most frames run in one call: with model-instance-id, those of the "
          "sharing elements (a GPU's throughput comes from batches; on the "
          "CPU they run one after another), each frame as many as it has roi "
          "rectangles; without, the most roi rectangles a frame may have "
          "(at least the number set at start)", 1, 256, 1, ready));
  g_object_class_install_property (gobject_class, PROP_ROI,
      g_param_spec_string ("roi", "Regions of interest",
          "Rectangles analysed instead of the whole frame, "
          "\"x,y,w,h[;x,y,w,h...]\" (at most 16): whole numbers are frame "
          "pixels, numbers that all have a decimal point fractions of the "
          "frame in [0, 1]. Each is resized to the model's input on its own, "
          "scored and drawn inside its rectangle; the frame is anomalous when "
          "any is, its score the highest. Empty: the whole frame. A bad value "
          "is refused with a warning and the setting in force stays (see the "
          "element's documentation)", "", rw | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_TILES,
      g_param_spec_string ("tiles", "Tiles",
          "Each roi rectangle (or the whole frame) cut into \"CxR\" equal "
          "tiles, columns x rows, each resized to the model's input on its "
          "own (all in one batch, at most 16 crops): a small defect on a "
          "large frame then covers more than a fraction of a patch. The "
          "rectangle's map is its tiles' maps stitched, its score the "
          "highest tile's. \"auto\": the fewest tiles for which one model "
          "patch covers at most tile-max-patch-pixels frame pixels along "
          "each axis, within the batch (the grid picked is in the metas and "
          "messages, \"tiles\"). Empty: no tiles. A bad value is refused "
          "with a warning and the setting in force stays", "",
          rw | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_TILE_OVERLAP,
      g_param_spec_uint ("tile-overlap", "Tile overlap",
          "With tiles: neighbouring tiles overlap by at least this many "
          "pixels, their maps blended across the overlap (no seams). Too "
          "large for a rectangle: refused with a warning", 0, 32768, 0,
          rw | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_TILE_MAX_PATCH_PIXELS,
      g_param_spec_uint ("tile-max-patch-pixels", "Tile max patch pixels",
          "With tiles=auto: the most frame pixels one model patch may cover "
          "along each axis (a tile of w pixels on a model of S/P patches a "
          "side: w / (S/P)); when the batch cannot reach it, the grid with "
          "the smallest patch the batch allows and one warning naming both",
          1, 32768, DEFAULT_TILE_MAX_PATCH_PIXELS,
          rw | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_IGNORE_MASK,
      g_param_spec_string ("ignore-mask", "Ignore mask",
          "A PNG of the frame's aspect (within 1 %) whose dark pixels (every "
          "colour channel below 128) never count: the map is 0 there (no "
          "region, nothing in the meta), no heatmap is drawn there; the "
          "score is the model's, unchanged. Reloaded when the file changes "
          "(a bad new file keeps the last good mask, with a warning). "
          "Empty: none", "", rw | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_BATCH_TIMEOUT,
      g_param_spec_uint64 ("batch-timeout", "Batch timeout",
          "With model-instance-id: microseconds a batch waits for more frames "
          "after its first before it runs short", 0, G_GUINT64_CONSTANT (10000000),
          5000, ready));
  g_object_class_install_property (gobject_class, PROP_AVERAGE_BATCH,
      g_param_spec_double ("average-batch", "Average batch",
          "With model-instance-id: frames per batch the shared instance ran "
          "since it was created (0 without)", 0.0, 256.0, 0.0, ro));
  g_object_class_install_property (gobject_class, PROP_INSTANCE_QUEUE,
      g_param_spec_uint ("instance-queue", "Instance queue",
          "With model-instance-id: frames of all its elements waiting for the "
          "shared instance's next batch now (0 without)", 0, G_MAXUINT, 0, ro));
  g_object_class_install_property (gobject_class, PROP_PIXEL_BYTES,
      g_param_spec_uint64 ("pixel-bytes-copied", "Pixel bytes copied",
          "Bytes of frame pixels copied between host and device since start "
          "(CUDA backend with system memory: each drawn or inferred frame goes "
          "up, and a drawn one comes back; frames in CUDA memory: 0). Weights, "
          "maps and scores not counted",
          0, G_MAXUINT64, 0, ro));

  gst_element_class_set_static_metadata (element_class,
      "FAPrompt anomaly detector", "Filter/Analyzer/Video",
      "Zero-shot visual anomaly detection (FAPrompt or AnomalyCLIP models): "
      "scores each frame, "
      "attaches the anomaly map as GstFAPromptMeta and regions as "
      "GstVideoRegionOfInterestMeta, posts messages, draws a heatmap",
      "faprompt developers");
  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);

  trans_class->start = GST_DEBUG_FUNCPTR (gst_fa_prompt_start);
  trans_class->stop = GST_DEBUG_FUNCPTR (gst_fa_prompt_stop);
  trans_class->sink_event = GST_DEBUG_FUNCPTR (gst_fa_prompt_sink_event);
  trans_class->query = GST_DEBUG_FUNCPTR (gst_fa_prompt_query);
  trans_class->before_transform =
      GST_DEBUG_FUNCPTR (gst_fa_prompt_before_transform);
  filter_class->set_info = GST_DEBUG_FUNCPTR (gst_fa_prompt_set_info);
  /* transform_ip, not GstVideoFilter's transform_frame_ip: CUDA frames are
   * mapped for the device */
  trans_class->transform_ip = GST_DEBUG_FUNCPTR (gst_fa_prompt_transform_ip);
  element_class->set_context = GST_DEBUG_FUNCPTR (gst_fa_prompt_set_context);

  gst_type_mark_as_plugin_api (GST_TYPE_FA_PROMPT_BACKEND, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_FA_PROMPT_PRECISION, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_FA_PROMPT_MESSAGES, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_FA_PROMPT_NON_BLOCKING, 0);
}
