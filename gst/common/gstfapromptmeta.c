/* GstFAPromptMeta and its structure-backed twin. See gstfapromptmeta.h. */
#include "gstfapromptmeta.h"

#include <string.h>

static const gchar *meta_tags[] = {
  /* the same tags as GstVideoRegionOfInterestMeta: elements that keep ROIs
   * across a scale keep this one too, and call us to rescale the rectangle */
  GST_META_TAG_VIDEO_STR, GST_META_TAG_VIDEO_ORIENTATION_STR,
  GST_META_TAG_VIDEO_SIZE_STR, NULL
};

/* The twin is tagged "video" only: video encoders, decoders and converters
 * keep such metas (they drop size-tagged ones), so the result survives
 * jpegenc ! ... ! jpegdec and reaches consumers across the network (see
 * the RTP header extension). Its rectangle stays in the coordinates of the
 * frame faprompt analysed. */
static const gchar *structure_tags[] = { GST_META_TAG_VIDEO_STR, NULL };

GType
gst_faprompt_meta_api_get_type (void)
{
  static GType type = 0;

  if (g_once_init_enter (&type)) {
    GType t = gst_meta_api_type_register ("GstFAPromptMetaAPI", meta_tags);
    g_once_init_leave (&type, t);
  }
  return type;
}

static gboolean
faprompt_meta_init (GstMeta * meta, gpointer params, GstBuffer * buffer)
{
  GstFAPromptMeta *m = (GstFAPromptMeta *) meta;

  memset ((guint8 *) m + sizeof (GstMeta), 0,
      sizeof (*m) - sizeof (GstMeta));
  m->inference_timestamp = GST_CLOCK_TIME_NONE;
  return TRUE;
}

static void
faprompt_meta_free (GstMeta * meta, GstBuffer * buffer)
{
  GstFAPromptMeta *m = (GstFAPromptMeta *) meta;

  g_clear_pointer (&m->map_bytes, g_bytes_unref);
  m->map = NULL;
}

/* Scales a rectangle from @in to @out frame sizes (videoscale & co). */
static void
scale_rect (const GstVideoMetaTransform * tr, gint * x, gint * y,
    guint * w, guint * h)
{
  gint iw = GST_VIDEO_INFO_WIDTH (tr->in_info);
  gint ih = GST_VIDEO_INFO_HEIGHT (tr->in_info);
  gint ow = GST_VIDEO_INFO_WIDTH (tr->out_info);
  gint oh = GST_VIDEO_INFO_HEIGHT (tr->out_info);

  if (iw <= 0 || ih <= 0)
    return;
  *x = (gint) gst_util_uint64_scale_int_round (MAX (*x, 0), ow, iw);
  *y = (gint) gst_util_uint64_scale_int_round (MAX (*y, 0), oh, ih);
  *w = (guint) gst_util_uint64_scale_int_round (*w, ow, iw);
  *h = (guint) gst_util_uint64_scale_int_round (*h, oh, ih);
}

static gboolean
faprompt_meta_transform (GstBuffer * dest, GstMeta * meta, GstBuffer * src,
    GQuark type, gpointer data)
{
  GstFAPromptMeta *s = (GstFAPromptMeta *) meta, *d;

  if (!GST_META_TRANSFORM_IS_COPY (type) && !GST_VIDEO_META_TRANSFORM_IS_SCALE
      (type))
    return FALSE;
  if (GST_META_TRANSFORM_IS_COPY (type)) {
    GstMetaTransformCopy *copy = data;
    /* a sub-region copy (e.g. an RTP fragment) is not a frame: nothing to
     * copy, and nothing wrong */
    if (copy->region)
      return TRUE;
  }

  d = gst_buffer_add_faprompt_meta (dest, s->map_bytes, s->map_width,
      s->map_height, s->map_stride);
  if (!d)
    return FALSE;
  d->score = s->score;
  d->anomalous = s->anomalous;
  d->x = s->x;
  d->y = s->y;
  d->width = s->width;
  d->height = s->height;
  d->inference_timestamp = s->inference_timestamp;
  d->inference_ms = s->inference_ms;
  d->reused = s->reused;
  d->image_threshold = s->image_threshold;
  d->pixel_threshold = s->pixel_threshold;
  d->n_regions = s->n_regions;
  d->model_generation = s->model_generation;
  d->model_family = s->model_family;
  d->precision = s->precision;
  if (GST_VIDEO_META_TRANSFORM_IS_SCALE (type))
    scale_rect (data, &d->x, &d->y, &d->width, &d->height);
  return TRUE;
}

const GstMetaInfo *
gst_faprompt_meta_get_info (void)
{
  static const GstMetaInfo *info = NULL;

  if (g_once_init_enter (&info)) {
    const GstMetaInfo *i = gst_meta_register (GST_FAPROMPT_META_API_TYPE,
        "GstFAPromptMeta", sizeof (GstFAPromptMeta), faprompt_meta_init,
        faprompt_meta_free, faprompt_meta_transform);
    g_once_init_leave (&info, i);
  }
  return info;
}

GstFAPromptMeta *
gst_buffer_add_faprompt_meta (GstBuffer * buffer, GBytes * map_bytes,
    guint width, guint height, guint stride)
{
  GstFAPromptMeta *m;

  g_return_val_if_fail (GST_IS_BUFFER (buffer), NULL);
  g_return_val_if_fail (map_bytes != NULL, NULL);
  g_return_val_if_fail (stride >= width * sizeof (gfloat), NULL);
  g_return_val_if_fail (height == 0 ||
      g_bytes_get_size (map_bytes) >= (gsize) stride * (height - 1) +
      width * sizeof (gfloat), NULL);

  m = (GstFAPromptMeta *) gst_buffer_add_meta (buffer,
      GST_FAPROMPT_META_INFO, NULL);
  if (!m)
    return NULL;
  m->map_bytes = g_bytes_ref (map_bytes);
  m->map = g_bytes_get_data (map_bytes, NULL);
  m->map_width = width;
  m->map_height = height;
  m->map_stride = stride;
  return m;
}

GstFAPromptMeta *
gst_buffer_get_faprompt_meta (GstBuffer * buffer)
{
  return (GstFAPromptMeta *) gst_buffer_get_meta (buffer,
      GST_FAPROMPT_META_API_TYPE);
}

gfloat
gst_faprompt_meta_map_at (const GstFAPromptMeta * m, gint px, gint py)
{
  guint64 cx, cy;

  g_return_val_if_fail (m != NULL, 0.f);
  if (!m->map || px < m->x || py < m->y || m->width == 0 || m->height == 0)
    return 0.f;
  if ((guint) (px - m->x) >= m->width || (guint) (py - m->y) >= m->height)
    return 0.f;
  /* cell whose span holds the pixel centre: floor((p + 0.5) * S / W) */
  cx = ((guint64) (px - m->x) * 2 + 1) * m->map_width / (2 * (guint64) m->width);
  cy = ((guint64) (py - m->y) * 2 + 1) * m->map_height /
      (2 * (guint64) m->height);
  return *(const gfloat *) ((const guint8 *) m->map + cy * m->map_stride +
      cx * sizeof (gfloat));
}

/* ---- the structure-backed twin ------------------------------------------ */

static gboolean
copy_field (GQuark field, const GValue * value, gpointer dest)
{
  gst_structure_id_set_value (dest, field, value);
  return TRUE;
}

static void
scale_structure (GstStructure * s, const GstVideoMetaTransform * tr)
{
  gint x = 0, y = 0;
  guint w = 0, h = 0;

  gst_structure_get (s, "x", G_TYPE_INT, &x, "y", G_TYPE_INT, &y,
      "width", G_TYPE_UINT, &w, "height", G_TYPE_UINT, &h, NULL);
  scale_rect (tr, &x, &y, &w, &h);
  gst_structure_set (s, "x", G_TYPE_INT, x, "y", G_TYPE_INT, y,
      "width", G_TYPE_UINT, w, "height", G_TYPE_UINT, h, NULL);
  /* the regions array is left in the input's coordinates, as documented */
}

static gboolean
structure_meta_transform (GstBuffer * dest, GstCustomMeta * meta,
    GstBuffer * src, GQuark type, gpointer data, gpointer user_data)
{
  GstCustomMeta *d;
  GstStructure *ds;

  if (!GST_META_TRANSFORM_IS_COPY (type) && !GST_VIDEO_META_TRANSFORM_IS_SCALE
      (type))
    return FALSE;
  if (GST_META_TRANSFORM_IS_COPY (type)
      && ((GstMetaTransformCopy *) data)->region)
    return TRUE;
  d = gst_buffer_add_custom_meta (dest, GST_FAPROMPT_STRUCTURE_META_NAME);
  if (!d)
    return FALSE;
  ds = gst_custom_meta_get_structure (d);
  gst_structure_foreach (gst_custom_meta_get_structure (meta), copy_field, ds);
  if (GST_VIDEO_META_TRANSFORM_IS_SCALE (type))
    scale_structure (ds, data);
  return TRUE;
}

const GstMetaInfo *
gst_faprompt_structure_meta_get_info (void)
{
  static const GstMetaInfo *info = NULL;

  if (g_once_init_enter (&info)) {
    /* registered once per process: another copy registering the same name
     * gets the existing info back */
    const GstMetaInfo *i = gst_meta_get_info (GST_FAPROMPT_STRUCTURE_META_NAME);
    if (!i)
      i = gst_meta_register_custom (GST_FAPROMPT_STRUCTURE_META_NAME,
          structure_tags, structure_meta_transform, NULL, NULL);
    g_once_init_leave (&info, i);
  }
  return info;
}

GstStructure *
gst_buffer_add_faprompt_structure_meta (GstBuffer * buffer,
    const GstFAPromptMeta * m)
{
  GstCustomMeta *cm;
  GstStructure *s;

  g_return_val_if_fail (GST_IS_BUFFER (buffer), NULL);
  g_return_val_if_fail (m != NULL, NULL);

  gst_faprompt_structure_meta_get_info ();
  cm = gst_buffer_add_custom_meta (buffer, GST_FAPROMPT_STRUCTURE_META_NAME);
  if (!cm)
    return NULL;
  s = gst_custom_meta_get_structure (cm);
  gst_structure_set (s,
      "score", G_TYPE_DOUBLE, (gdouble) m->score,
      "anomalous", G_TYPE_BOOLEAN, m->anomalous,
      "reused", G_TYPE_BOOLEAN, m->reused,
      "map-width", G_TYPE_UINT, m->map_width,
      "map-height", G_TYPE_UINT, m->map_height,
      "map-stride", G_TYPE_UINT, m->map_stride,
      "map", G_TYPE_BYTES, m->map_bytes,
      "x", G_TYPE_INT, m->x, "y", G_TYPE_INT, m->y,
      "width", G_TYPE_UINT, m->width, "height", G_TYPE_UINT, m->height,
      "inference-timestamp", G_TYPE_UINT64, m->inference_timestamp,
      "inference-ms", G_TYPE_DOUBLE, m->inference_ms,
      "image-threshold", G_TYPE_DOUBLE, (gdouble) m->image_threshold,
      "pixel-threshold", G_TYPE_DOUBLE, (gdouble) m->pixel_threshold,
      "region-count", G_TYPE_UINT, m->n_regions,
      "model-generation", G_TYPE_UINT64, m->model_generation, NULL);
  if (m->model_family)
    gst_structure_set (s, "model-family", G_TYPE_STRING, m->model_family,
        NULL);
  if (m->precision)
    gst_structure_set (s, "precision", G_TYPE_STRING, m->precision, NULL);
  return s;
}
