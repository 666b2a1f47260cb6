/* See fap_results.h. */
#include "fap_results.h"

#include <gst/video/video.h>
#include <math.h>
#include <string.h>

#include "gstfapromptmeta.h"

static void
inference_clear (gpointer data)
{
  FapInference *inf = data;
  for (guint i = 0; i < inf->n_rois; i++)
    g_bytes_unref (inf->rois[i].map);
}

void
fap_inference_unref (FapInference * inf)
{
  if (inf)
    g_atomic_rc_box_release_full (inf, inference_clear);
}

/* roi @k's tiles' maps stitched into one @side x @side map over the roi,
 * by the roi's stitcher in @stitchers (made again when its layout changed) */
static GBytes *
stitch_roi (const fap_result * r, const FapInferRequest * req, guint k,
    guint side, FapStitchers * stitchers)
{
  gchar *error = NULL;
  guint n_tiles = req->tile_cols * req->tile_rows;
  const float *maps[FAP_ROI_MAX];
  gfloat *out = g_new (gfloat, (gsize) side * side);

  for (guint t = 0; t < n_tiles; t++)
    maps[t] = r[k * n_tiles + t].map;
  /* the layout was checked when the crops were made: only memory fails */
  if (!fap_stitchers_run (stitchers, k, req->rois[k], req->tile_cols,
          req->tile_rows, req->tile_overlap, maps, r[0].map_size, out, side,
          &error)) {
    g_warning ("faprompt: stitching roi %u's tiles: %s", k + 1, error);
    memset (out, 0, (gsize) side * side * sizeof (gfloat));
    g_free (error);
  }
  return g_bytes_new_take (out, (gsize) side * side * sizeof (gfloat));
}

/* the highest; NaN never wins */
static gfloat
highest (gfloat a, gfloat b)
{
  return b > a || isnan (a) ? b : a;
}

FapInference *
fap_inference_new (const fap_result * r, const FapInferRequest * req,
    FapStitchers * stitchers)
{
  FapInference *inf = g_atomic_rc_box_new0 (FapInference);
  guint n = req->n_rois, n_tiles = req->tile_cols * req->tile_rows;
  guint side = r[0].map_size;
  gsize bytes;

  g_return_val_if_fail (n >= 1 && n_tiles >= 1
      && n * n_tiles == req->n_crops && req->n_crops <= FAP_ROI_MAX, inf);
  if (n_tiles > 1)
    side = MIN (side * MAX (req->tile_cols, req->tile_rows),
        FAP_TILES_MAX_MAP_SIDE);
  bytes = (gsize) side * side * sizeof (gfloat);
  inf->map_size = side;
  inf->n_rois = n;
  inf->roi_set = req->roi_set;
  inf->tile_cols = req->tile_cols;
  inf->tile_rows = req->tile_rows;
  inf->tiles_auto = req->tiles_auto;
  inf->score = r[0].score;
  for (guint i = 0; i < n; i++) {
    FapRoiResult *roi = &inf->rois[i];

    roi->rect = req->rois[i];
    roi->n_tiles = n_tiles;
    roi->score = r[i * n_tiles].score;
    for (guint t = 0; t < n_tiles; t++) {
      const fap_result *rt = &r[i * n_tiles + t];
      roi->tile_scores[t] = rt->score;
      roi->score = highest (roi->score, rt->score);
      inf->ms = MAX (inf->ms, rt->total_ms);
    }
    roi->map = n_tiles > 1 ? stitch_roi (r, req, i, side,
        stitchers) :
        g_bytes_new (r[i].map, bytes);
    inf->score = highest (inf->score, roi->score);
  }
  inf->pts = req->pts;
  inf->serial = req->serial;
  inf->generation = req->generation;
  inf->model_image_threshold = inf->model_pixel_threshold = -1.0f;
  return inf;
}

void
fap_results_thresholds (gfloat image_property, gfloat pixel_property,
    gfloat model_image, gfloat model_pixel, gfloat * image, gfloat * pixel)
{
  *image = image_property >= 0 ? image_property :
      model_image >= 0 ? model_image : 0.5f;
  *pixel = pixel_property >= 0 ? pixel_property :
      model_pixel >= 0 ? model_pixel : 0.5f;
}

void
fap_results_init (FapResults * r)
{
  memset (r, 0, sizeof *r);
  for (guint i = 0; i < FAP_ROI_MAX; i++)
    fap_regions_init (&r->regions[i]);
}

void
fap_results_clear (FapResults * r)
{
  for (guint i = 0; i < FAP_ROI_MAX; i++)
    fap_regions_clear (&r->regions[i]);
  memset (r, 0, sizeof *r);
}

/* The regions of roi @i's map, found again only for a new map, threshold
 * or cap. */
static GArray *
roi_regions (FapResults * r, guint i, const FapInference * inf,
    const FapResultSettings * st)
{
  if (r->regions_serial[i] != inf->serial
      || r->regions_threshold[i] != st->pixel_threshold
      || r->regions_max[i] != st->max_regions) {
    guint S = inf->map_size;
    fap_regions_find (&r->regions[i], g_bytes_get_data (inf->rois[i].map,
            NULL), S, S, S * sizeof (gfloat), st->pixel_threshold,
        st->max_regions);
    r->regions_serial[i] = inf->serial;
    r->regions_threshold[i] = st->pixel_threshold;
    r->regions_max[i] = st->max_regions;
  }
  return r->regions[i].regions;
}

fap_rect
fap_inference_rect (const FapInference * inf, guint i, gint width,
    gint height)
{
  fap_rect whole = { 0, 0, width, height };
  return inf->roi_set ? inf->rois[i].rect : whole;
}

gboolean
fap_inference_fits (const FapInference * inf, gint width, gint height)
{
  for (guint i = 0; i < inf->n_rois; i++) {
    fap_rect r = fap_inference_rect (inf, i, width, height);
    if (r.x < 0 || r.y < 0 || r.width < 1 || r.height < 1
        || (gint64) r.x + r.width > width || (gint64) r.y + r.height > height)
      return FALSE;
  }
  return TRUE;
}

guint
fap_results_attach (FapResults * r, GstBuffer * buf,
    const FapInference * inf, const FapResultSettings * st, gboolean fresh,
    gint width, gint height, gboolean * anomalous)
{
  guint S = inf->map_size, total = 0;

  *anomalous = FALSE;
  for (guint k = 0; k < inf->n_rois; k++) {
    const FapRoiResult *roi = &inf->rois[k];
    const fap_rect rect = fap_inference_rect (inf, k, width, height);
    GArray *found = roi_regions (r, k, inf, st);
    guint n = found->len, i;
    GstFAPromptMeta *m;
    GstStructure *s;
    GValue arr = G_VALUE_INIT;

    m = gst_buffer_add_faprompt_meta (buf, roi->map, S, S,
        S * sizeof (gfloat));
    m->score = roi->score;
    m->anomalous = roi->score > st->image_threshold;
    *anomalous |= m->anomalous;
    m->x = rect.x;
    m->y = rect.y;
    m->width = (guint) rect.width;
    m->height = (guint) rect.height;
    m->inference_timestamp = inf->pts;
    m->inference_ms = inf->ms;
    m->reused = !fresh;
    m->image_threshold = st->image_threshold;
    m->pixel_threshold = st->pixel_threshold;
    m->n_regions = n;
    m->model_generation = inf->model_generation;
    m->model_family = inf->model_family;
    m->precision = inf->precision;
    s = gst_buffer_add_faprompt_structure_meta (buf, m);

    /* regions stay a GstValueArray: GStreamer's own ordered list (C,
     * gst-python with python3-gst-1.0, gst_structure_to_string all read
     * it); in frame pixels */
    g_value_init (&arr, GST_TYPE_ARRAY);
    for (i = 0; i < n; i++) {
      const FapRegion *rg = &g_array_index (found, FapRegion, i);
      GstVideoRegionOfInterestMeta *rm;
      GValue v = G_VALUE_INIT;
      gint x, y;
      guint w, h;

      fap_region_to_frame (rg, S, S, m->width, m->height, &x, &y, &w, &h);
      x += m->x;
      y += m->y;
      rm = gst_buffer_add_video_region_of_interest_meta (buf, "anomaly",
          x, y, w, h);
      rm->id = (gint) (total + i);
      gst_video_region_of_interest_meta_add_param (rm,
          gst_structure_new ("faprompt", "peak", G_TYPE_DOUBLE,
              (gdouble) rg->peak, "mean", G_TYPE_DOUBLE, (gdouble) rg->mean,
              "area", G_TYPE_UINT, rg->area, "roi", G_TYPE_UINT, k, NULL));
      g_value_init (&v, GST_TYPE_STRUCTURE);
      g_value_take_boxed (&v, gst_structure_new ("region",
              "x", G_TYPE_INT, x, "y", G_TYPE_INT, y,
              "width", G_TYPE_UINT, w, "height", G_TYPE_UINT, h,
              "peak", G_TYPE_DOUBLE, (gdouble) rg->peak,
              "mean", G_TYPE_DOUBLE, (gdouble) rg->mean, NULL));
      gst_value_array_append_and_take_value (&arr, &v);
    }
    gst_structure_take_value (s, "regions", &arr);
    /* which of the roi property's rectangles this is */
    if (inf->roi_set)
      gst_structure_set (s, "roi-index", G_TYPE_UINT, k, "roi-count",
          G_TYPE_UINT, inf->n_rois, NULL);
    /* a tiled roi: its tiles' scores, row-major (its score is the highest) */
    if (roi->n_tiles > 1) {
      GValue tiles = G_VALUE_INIT;
      g_value_init (&tiles, GST_TYPE_ARRAY);
      for (i = 0; i < roi->n_tiles; i++) {
        GValue v = G_VALUE_INIT;
        g_value_init (&v, G_TYPE_DOUBLE);
        g_value_set_double (&v, roi->tile_scores[i]);
        gst_value_array_append_and_take_value (&tiles, &v);
      }
      gst_structure_take_value (s, "tile-scores", &tiles);
    }
    /* the grid, also when tiles=auto picked 1 x 1 */
    if (roi->n_tiles > 1 || inf->tiles_auto) {
      gchar *grid = g_strdup_printf ("%ux%u", inf->tile_cols, inf->tile_rows);
      gst_structure_set (s, "tiles", G_TYPE_STRING, grid, "tiles-auto",
          G_TYPE_BOOLEAN, inf->tiles_auto, NULL);
      g_free (grid);
    }
    if (inf->model_file)        /* fapromptpublish names the model by it */
      gst_structure_set (s, "model-file", G_TYPE_STRING, inf->model_file,
          NULL);
    total += n;
  }
  return total;
}

/* the rois of a frame's result in a message: rectangle, score, decision */
static void
add_rois (GstStructure * s, const FapInference * inf, gfloat image_threshold)
{
  GValue arr = G_VALUE_INIT;

  g_value_init (&arr, GST_TYPE_ARRAY);
  for (guint k = 0; k < inf->n_rois; k++) {
    const FapRoiResult *roi = &inf->rois[k];
    GValue v = G_VALUE_INIT;
    g_value_init (&v, GST_TYPE_STRUCTURE);
    g_value_take_boxed (&v, gst_structure_new ("roi",
            "x", G_TYPE_INT, roi->rect.x, "y", G_TYPE_INT, roi->rect.y,
            "width", G_TYPE_UINT, (guint) roi->rect.width,
            "height", G_TYPE_UINT, (guint) roi->rect.height,
            "score", G_TYPE_DOUBLE, (gdouble) roi->score,
            "anomalous", G_TYPE_BOOLEAN, roi->score > image_threshold, NULL));
    gst_value_array_append_and_take_value (&arr, &v);
  }
  gst_structure_take_value (s, "rois", &arr);
}

static void
post (GstElement * element, const GstSegment * seg, GstClockTime pts,
    GstClockTime duration, const FapInference * inf, gboolean anomalous,
    gboolean reused, guint regions, const gchar * event,
    gfloat image_threshold)
{
  GstClockTime stream_time = GST_CLOCK_TIME_NONE, running_time =
      GST_CLOCK_TIME_NONE;
  GstStructure *s;

  if (seg->format == GST_FORMAT_TIME && GST_CLOCK_TIME_IS_VALID (pts)) {
    stream_time = gst_segment_to_stream_time (seg, GST_FORMAT_TIME, pts);
    running_time = gst_segment_to_running_time (seg, GST_FORMAT_TIME, pts);
  }
  s = gst_structure_new ("faprompt",
      "timestamp", G_TYPE_UINT64, pts,
      "stream-time", G_TYPE_UINT64, stream_time,
      "running-time", G_TYPE_UINT64, running_time,
      "duration", G_TYPE_UINT64, duration,
      "score", G_TYPE_DOUBLE, inf ? (gdouble) inf->score : 0.0,
      "anomalous", G_TYPE_BOOLEAN, anomalous,
      "reused", G_TYPE_BOOLEAN, reused,
      "inference-timestamp", G_TYPE_UINT64,
      inf ? inf->pts : GST_CLOCK_TIME_NONE,
      "region-count", G_TYPE_UINT, regions,
      "model-generation", G_TYPE_UINT64, inf ? inf->model_generation : 0,
      NULL);
  if (inf && inf->model_family)
    gst_structure_set (s, "model-family", G_TYPE_STRING, inf->model_family,
        NULL);
  if (inf && inf->precision)
    gst_structure_set (s, "precision", G_TYPE_STRING, inf->precision, NULL);
  if (event)
    gst_structure_set (s, "event", G_TYPE_STRING, event, NULL);
  if (inf && (inf->tile_cols * inf->tile_rows > 1 || inf->tiles_auto)) {
    gchar *grid = g_strdup_printf ("%ux%u", inf->tile_cols, inf->tile_rows);
    gst_structure_set (s, "tiles", G_TYPE_STRING, grid, "tiles-auto",
        G_TYPE_BOOLEAN, inf->tiles_auto, NULL);
    g_free (grid);
  }
  if (inf && inf->roi_set && image_threshold >= 0)
    add_rois (s, inf, image_threshold);
  gst_element_post_message (element,
      gst_message_new_element (GST_OBJECT (element), s));
}

void
fap_results_post_for_frame (FapResults * r, GstElement * element,
    const GstSegment * seg, GstBuffer * buf, const FapInference * inf,
    const FapResultSettings * st, gboolean anomalous, gboolean fresh,
    guint regions)
{
  GstClockTime pts = GST_BUFFER_PTS (buf), dur = GST_BUFFER_DURATION (buf);
  const gchar *event;

  if (fap_report_frame (&r->report, st->messages, anomalous, &event))
    post (element, seg, pts, dur, inf, anomalous, !fresh, regions, event,
        st->image_threshold);
}

void
fap_results_end_anomaly (FapResults * r, GstElement * element,
    const GstSegment * seg, const FapInference * last, FapReportPolicy mode)
{
  if (fap_report_end (&r->report, mode))
    post (element, seg, GST_CLOCK_TIME_NONE, GST_CLOCK_TIME_NONE, last,
        FALSE, TRUE, 0, "anomaly-ended", -1.0f);
}
