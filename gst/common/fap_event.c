/* The result document: capture (streaming thread, fixed-size) and JSON
 * (written by hand into a reused GString: no allocation per message once the
 * string has grown, numbers in shortest round-trip form). */
#include "fap_event.h"
#include "fap_regions.h"
#include "gstfapromptmeta.h"

#include <gst/video/video.h>
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

/* keeps the FAP_EVENT_MAX_REGIONS highest peaks, highest first */
static void
keep_region (FapEvent * e, const FapEventRegion * r)
{
  guint at = e->n_regions;

  if (at == FAP_EVENT_MAX_REGIONS) {
    if (r->peak <= e->regions[at - 1].peak)
      return;
    at--;
  } else {
    e->n_regions++;
  }
  while (at > 0 && e->regions[at - 1].peak < r->peak) {
    e->regions[at] = e->regions[at - 1];
    at--;
  }
  e->regions[at] = *r;
}

gboolean
fap_event_capture (FapEvent * e, GstBuffer * buf, guint map_side)
{
  GstFAPromptMeta *m = gst_buffer_get_faprompt_meta (buf), *mapped;
  GstCustomMeta *cm;
  GstStructure *twin = NULL;
  gpointer state = NULL;
  GstMeta *meta;
  guint i, j, roi_count = 0;

  if (!m)
    return FALSE;
  e->pts = GST_BUFFER_PTS (buf);
  e->score = m->score;
  e->anomalous = m->anomalous;
  e->reused = m->reused;
  e->image_threshold = m->image_threshold;
  e->pixel_threshold = m->pixel_threshold;
  e->inference_pts = m->inference_timestamp;
  e->inference_ms = m->inference_ms;
  e->x = m->x;
  e->y = m->y;
  e->width = m->width;
  e->height = m->height;
  e->region_count = m->n_regions;
  e->model_file = NULL;
  e->model_generation = m->model_generation;
  e->n_rois = 0;
  e->map_roi = 0;
  mapped = m;
  cm = gst_buffer_get_custom_meta (buf, GST_FAPROMPT_STRUCTURE_META_NAME);
  if (cm)
    twin = gst_custom_meta_get_structure (cm);
  if (twin) {
    const gchar *f = gst_structure_get_string (twin, "model-file");
    e->model_file = f ? g_intern_string (f) : NULL;
  }

  /* faprompt's roi: one meta per rectangle, the frame's result over all */
  if (twin && gst_structure_get_uint (twin, "roi-count", &roi_count)) {
    gint x1 = m->x + (gint) m->width, y1 = m->y + (gint) m->height;
    e->region_count = 0;
    while ((meta = gst_buffer_iterate_meta_filtered (buf, &state,
                GST_FAPROMPT_META_API_TYPE))) {
      GstFAPromptMeta *rm = (GstFAPromptMeta *) meta;
      FapEventRoi *r;
      if (e->n_rois == FAP_EVENT_MAX_ROIS)
        break;
      r = &e->rois[e->n_rois];
      r->x = rm->x;
      r->y = rm->y;
      r->width = rm->width;
      r->height = rm->height;
      r->score = rm->score;
      r->anomalous = rm->anomalous;
      r->region_count = rm->n_regions;
      if (rm->score > e->score) {
        e->score = rm->score;
        mapped = rm;
        e->map_roi = e->n_rois;
      }
      e->anomalous |= rm->anomalous;
      e->region_count += rm->n_regions;
      e->x = MIN (e->x, rm->x);
      e->y = MIN (e->y, rm->y);
      x1 = MAX (x1, rm->x + (gint) rm->width);
      y1 = MAX (y1, rm->y + (gint) rm->height);
      e->n_rois++;
    }
    e->width = (guint) (x1 - e->x);
    e->height = (guint) (y1 - e->y);
  }

  /* the highest peaks of every ROI meta faprompt added */
  e->n_regions = 0;
  state = NULL;
  while ((meta = gst_buffer_iterate_meta_filtered (buf, &state,
              GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE))) {
    GstVideoRegionOfInterestMeta *roi = (GstVideoRegionOfInterestMeta *) meta;
    GstStructure *p;
    FapEventRegion r;
    gdouble v;

    if (roi->roi_type != g_quark_from_static_string ("anomaly"))
      continue;
    r.x = (gint) roi->x;
    r.y = (gint) roi->y;
    r.width = roi->w;
    r.height = roi->h;
    r.peak = r.mean = 0.f;
    p = gst_video_region_of_interest_meta_get_param (roi, "faprompt");
    if (p && gst_structure_get_double (p, "peak", &v))
      r.peak = (gfloat) v;
    if (p && gst_structure_get_double (p, "mean", &v))
      r.mean = (gfloat) v;
    keep_region (e, &r);
  }

  /* cell means, as the RTP header extension sends them */
  e->map_side = MIN (map_side, FAP_EVENT_MAX_MAP);
  e->map_side = MIN (e->map_side, MIN (mapped->map_width, mapped->map_height));
  for (j = 0; j < e->map_side; j++)
    for (i = 0; i < e->map_side; i++)
      e->map[j * e->map_side + i] = (gfloat) fap_map_cell_mean (mapped->map,
          mapped->map_stride, mapped->map_width, mapped->map_height,
          e->map_side, i, j);
  return TRUE;
}

/* ---- JSON ----------------------------------------------------------------- */

static void
put_string (GString * out, const gchar * s)
{
  g_string_append_c (out, '"');
  for (; *s; s++) {
    guchar c = (guchar) * s;
    if (c == '"' || c == '\\')
      g_string_append_c (out, '\\'), g_string_append_c (out, c);
    else if (c < 0x20)
      g_string_append_printf (out, "\\u%04x", c);
    else
      g_string_append_c (out, c);
  }
  g_string_append_c (out, '"');
}

/* shortest form that reads back as the same float32 (g_ascii_formatd:
 * locale-independent, a decimal point whatever LC_NUMERIC says) */
static void
put_float (GString * out, gfloat v)
{
  static const gchar *const formats[] = { "%.6g", "%.7g", "%.8g", "%.9g" };
  gchar buf[G_ASCII_DTOSTR_BUF_SIZE];
  guint k;

  if (!isfinite (v)) {
    g_string_append (out, "null");
    return;
  }
  for (k = 0; k < G_N_ELEMENTS (formats); k++) {
    g_ascii_formatd (buf, sizeof buf, formats[k], (gdouble) v);
    if ((gfloat) g_ascii_strtod (buf, NULL) == v)
      break;
  }
  g_string_append (out, buf);
}

static void
put_time_ns (GString * out, GstClockTime t)
{
  if (GST_CLOCK_TIME_IS_VALID (t))
    g_string_append_printf (out, "%" G_GUINT64_FORMAT, (guint64) t);
  else
    g_string_append (out, "null");
}

void
fap_event_to_json (const FapEvent * e, const gchar * source,
    const gchar * model_sha256, FapEventMap map, GString * out)
{
  GDateTime *dt = g_date_time_new_from_unix_utc (e->wall_us / G_USEC_PER_SEC);
  gint64 us = e->wall_us % G_USEC_PER_SEC;
  guint i, j;

  g_string_append (out, "{\"schema\":\"" FAP_EVENT_SCHEMA "\",\"source\":");
  put_string (out, source ? source : "");
  g_string_append_printf (out, ",\"sequence\":%" G_GUINT64_FORMAT, e->sequence);
  if (dt) {
    g_string_append_printf (out, ",\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d."
        "%06" G_GINT64_FORMAT "Z\"", g_date_time_get_year (dt),
        g_date_time_get_month (dt), g_date_time_get_day_of_month (dt),
        g_date_time_get_hour (dt), g_date_time_get_minute (dt),
        g_date_time_get_second (dt), us);
    g_date_time_unref (dt);
  }
  g_string_append (out, ",\"pts_ns\":");
  put_time_ns (out, e->pts);
  g_string_append (out, ",\"event\":");
  if (e->event)
    put_string (out, e->event);
  else
    g_string_append (out, "null");
  g_string_append (out, ",\"score\":");
  put_float (out, e->score);
  g_string_append_printf (out, ",\"anomalous\":%s,\"reused\":%s",
      e->anomalous ? "true" : "false", e->reused ? "true" : "false");
  g_string_append (out, ",\"thresholds\":{\"image\":");
  put_float (out, e->image_threshold);
  g_string_append (out, ",\"pixel\":");
  put_float (out, e->pixel_threshold);
  g_string_append_printf (out, "},\"frame\":{\"x\":%d,\"y\":%d,\"width\":%u,"
      "\"height\":%u}", e->x, e->y, e->width, e->height);
  if (e->n_rois) {
    g_string_append (out, ",\"rois\":[");
    for (i = 0; i < e->n_rois; i++) {
      const FapEventRoi *r = &e->rois[i];
      g_string_append_printf (out, "%s{\"x\":%d,\"y\":%d,\"width\":%u,"
          "\"height\":%u,\"score\":", i ? "," : "", r->x, r->y, r->width,
          r->height);
      put_float (out, r->score);
      g_string_append_printf (out, ",\"anomalous\":%s,\"region_count\":%u}",
          r->anomalous ? "true" : "false", r->region_count);
    }
    g_string_append_c (out, ']');
  }
  g_string_append_printf (out, ",\"region_count\":%u,\"regions\":[",
      e->region_count);
  for (i = 0; i < e->n_regions; i++) {
    const FapEventRegion *r = &e->regions[i];
    g_string_append_printf (out, "%s{\"x\":%d,\"y\":%d,\"width\":%u,"
        "\"height\":%u,\"peak\":", i ? "," : "", r->x, r->y, r->width,
        r->height);
    put_float (out, r->peak);
    g_string_append (out, ",\"mean\":");
    put_float (out, r->mean);
    g_string_append_c (out, '}');
  }
  g_string_append (out, "],\"model\":{\"file\":");
  if (e->model_file) {
    gchar *base = g_path_get_basename (e->model_file);
    put_string (out, base);
    g_free (base);
  } else {
    g_string_append (out, "null");
  }
  g_string_append (out, ",\"sha256\":");
  if (model_sha256)
    put_string (out, model_sha256);
  else
    g_string_append (out, "null");
  g_string_append_printf (out, ",\"generation\":%" G_GUINT64_FORMAT,
      e->model_generation);
  g_string_append (out, "},\"inference\":{\"pts_ns\":");
  put_time_ns (out, e->inference_pts);
  g_string_append (out, ",\"age_ms\":");
  if (GST_CLOCK_TIME_IS_VALID (e->pts)
      && GST_CLOCK_TIME_IS_VALID (e->inference_pts))
    g_string_append_printf (out, "%.3f",
        ((gdouble) e->pts - (gdouble) e->inference_pts) / 1e6);
  else
    g_string_append (out, "null");
  g_string_append_printf (out, ",\"compute_ms\":%.3f}", e->inference_ms);
  if (map != FAP_EVENT_MAP_NONE && e->map_side) {
    guint n = e->map_side;
    g_string_append_printf (out, ",\"map\":{\"width\":%u,\"height\":%u,",
        n, n);
    if (e->n_rois)
      g_string_append_printf (out, "\"roi\":%u,", e->map_roi);
    g_string_append_printf (out, "\"encoding\":\"%s\",\"data\":",
        map == FAP_EVENT_MAP_ARRAY ? "array" : "base64-float32le");
    if (map == FAP_EVENT_MAP_ARRAY) {
      g_string_append_c (out, '[');
      for (j = 0; j < n; j++) {
        g_string_append (out, j ? ",[" : "[");
        for (i = 0; i < n; i++) {
          if (i)
            g_string_append_c (out, ',');
          put_float (out, e->map[j * n + i]);
        }
        g_string_append_c (out, ']');
      }
      g_string_append_c (out, ']');
    } else {
      guint8 le[FAP_EVENT_MAX_MAP * FAP_EVENT_MAX_MAP * 4];
      gchar *b64;
      for (i = 0; i < n * n; i++) {
        guint32 bits;
        memcpy (&bits, &e->map[i], 4);
        bits = GUINT32_TO_LE (bits);
        memcpy (le + 4 * i, &bits, 4);
      }
      b64 = g_base64_encode (le, (gsize) n * n * 4);
      g_string_append_printf (out, "\"%s\"", b64);
      g_free (b64);
    }
    g_string_append_c (out, '}');
  }
  g_string_append_c (out, '}');
}

/* ---- model id ------------------------------------------------------------- */

typedef struct {
  gint64 size, mtime;
  gchar *sha256;
} ModelId;

static GMutex model_ids_lock;
static GHashTable *model_ids;   /* path -> ModelId */

static void
model_id_free (gpointer p)
{
  ModelId *id = p;
  g_free (id->sha256);
  g_free (id);
}

gchar *
fap_event_model_sha256 (const gchar * path)
{
  GStatBuf st;
  ModelId *id;
  GMappedFile *mf;
  gchar *ret = NULL;

  if (!path || g_stat (path, &st) != 0)
    return NULL;
  g_mutex_lock (&model_ids_lock);
  if (!model_ids)
    model_ids = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
        model_id_free);
  id = g_hash_table_lookup (model_ids, path);
  if (id && id->size == (gint64) st.st_size
      && id->mtime == (gint64) st.st_mtime) {
    ret = g_strdup (id->sha256);
    g_mutex_unlock (&model_ids_lock);
    return ret;
  }
  /* hashed under the lock: a second sender asking for the same file waits
   * for the first one's answer instead of reading it twice */
  mf = g_mapped_file_new (path, FALSE, NULL);
  if (mf) {
    id = g_new0 (ModelId, 1);
    id->size = st.st_size;
    id->mtime = st.st_mtime;
    id->sha256 = g_compute_checksum_for_data (G_CHECKSUM_SHA256,
        (const guchar *) g_mapped_file_get_contents (mf),
        g_mapped_file_get_length (mf));
    g_mapped_file_unref (mf);
    g_hash_table_replace (model_ids, g_strdup (path), id);
    ret = g_strdup (id->sha256);
  }
  g_mutex_unlock (&model_ids_lock);
  return ret;
}
