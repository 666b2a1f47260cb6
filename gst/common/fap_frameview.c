/* See fap_frameview.h. */
#include "fap_frameview.h"

#include <string.h>

static gboolean
pixel_format_of (GstVideoFormat f, fap_pixel_format * out)
{
  switch (f) {
    case GST_VIDEO_FORMAT_RGB: *out = FAP_PIXEL_RGB; return TRUE;
    case GST_VIDEO_FORMAT_BGR: *out = FAP_PIXEL_BGR; return TRUE;
    case GST_VIDEO_FORMAT_RGBA: *out = FAP_PIXEL_RGBA; return TRUE;
    case GST_VIDEO_FORMAT_BGRA: *out = FAP_PIXEL_BGRA; return TRUE;
    case GST_VIDEO_FORMAT_RGBx: *out = FAP_PIXEL_RGBX; return TRUE;
    case GST_VIDEO_FORMAT_BGRx: *out = FAP_PIXEL_BGRX; return TRUE;
    case GST_VIDEO_FORMAT_xRGB: *out = FAP_PIXEL_XRGB; return TRUE;
    case GST_VIDEO_FORMAT_xBGR: *out = FAP_PIXEL_XBGR; return TRUE;
    case GST_VIDEO_FORMAT_NV12: *out = FAP_PIXEL_NV12; return TRUE;
    case GST_VIDEO_FORMAT_I420: *out = FAP_PIXEL_I420; return TRUE;
    case GST_VIDEO_FORMAT_YUY2: *out = FAP_PIXEL_YUY2; return TRUE;
    default: return FALSE;
  }
}

/* The matrix of YUV caps; FALSE for one the core has no coefficients for. */
static gboolean
matrix_of (const GstVideoInfo * info, fap_yuv_matrix * out)
{
  switch (info->colorimetry.matrix) {
    case GST_VIDEO_COLOR_MATRIX_BT601:
    case GST_VIDEO_COLOR_MATRIX_UNKNOWN: /* caps without colorimetry: SD's */
      *out = FAP_YUV_BT601;
      return TRUE;
    case GST_VIDEO_COLOR_MATRIX_BT709:
      *out = FAP_YUV_BT709;
      return TRUE;
    case GST_VIDEO_COLOR_MATRIX_BT2020:
      *out = FAP_YUV_BT2020;
      return TRUE;
    default:
      return FALSE;
  }
}

gboolean
fap_frameview_check_info (const GstVideoInfo * info, gchar ** why)
{
  fap_pixel_format pf;
  fap_yuv_matrix m;

  if (!pixel_format_of (GST_VIDEO_INFO_FORMAT (info), &pf)) {
    *why = g_strdup_printf ("format %s is not one faprompt takes (%s); put "
        "videoconvert before faprompt", GST_VIDEO_INFO_NAME (info),
        FAP_FRAMEVIEW_FORMATS);
    return FALSE;
  }
  if (GST_VIDEO_INFO_IS_YUV (info) && !matrix_of (info, &m)) {
    GstVideoColorMatrix cm = info->colorimetry.matrix;
    gchar *c = gst_video_colorimetry_to_string (&info->colorimetry);
    *why = g_strdup_printf ("the YUV colour matrix %s (colorimetry %s) is not "
        "one the core converts (BT.601, BT.709, BT.2020); put videoconvert "
        "before faprompt", cm == GST_VIDEO_COLOR_MATRIX_SMPTE240M ? "smpte240m" :
        cm == GST_VIDEO_COLOR_MATRIX_FCC ? "fcc" :
        cm == GST_VIDEO_COLOR_MATRIX_RGB ? "rgb (identity)" : "(unknown)",
        c ? c : "(none)");
    g_free (c);
    return FALSE;
  }
  return TRUE;
}

void
fap_frameview_of (const GstVideoFrame * frame, fap_frame * out)
{
  const GstVideoInfo *info = &frame->info;

  memset (out, 0, sizeof *out);
  pixel_format_of (GST_VIDEO_INFO_FORMAT (info), &out->format);
  out->width = GST_VIDEO_INFO_WIDTH (info);
  out->height = GST_VIDEO_INFO_HEIGHT (info);
  out->data = GST_VIDEO_FRAME_PLANE_DATA (frame, 0);
  out->stride = GST_VIDEO_FRAME_PLANE_STRIDE (frame, 0);
  for (guint p = 1; p < GST_VIDEO_FRAME_N_PLANES (frame) && p < 3; p++) {
    out->plane[p - 1] = GST_VIDEO_FRAME_PLANE_DATA (frame, p);
    out->plane_stride[p - 1] = GST_VIDEO_FRAME_PLANE_STRIDE (frame, p);
  }
  if (GST_VIDEO_INFO_IS_YUV (info)) {
    matrix_of (info, &out->matrix);
    out->full_range = info->colorimetry.range == GST_VIDEO_COLOR_RANGE_0_255;
  }
}

void
fap_framecopy_clear (FapFrameCopy * c)
{
  g_free (c->data);
  memset (c, 0, sizeof *c);
}

/* bytes of a plane's rows without padding, and its row count */
static void
plane_shape (const fap_frame * f, int plane, gsize * row, gsize * rows)
{
  gsize cw = ((gsize) f->width + 1) / 2;
  gboolean planar = f->format == FAP_PIXEL_NV12 || f->format == FAP_PIXEL_I420;

  if (plane == 0) {
    *rows = f->height;
    if (f->format == FAP_PIXEL_YUY2)
      *row = 4 * cw;
    else if (planar)
      *row = f->width;
    else
      *row = (gsize) f->width * (f->format <= FAP_PIXEL_BGR ? 3 : 4);
    return;
  }
  *rows = ((gsize) f->height + 1) / 2;
  *row = f->format == FAP_PIXEL_NV12 ? 2 * cw : cw;
}

gboolean
fap_frameview_check_frame (const GstVideoFrame * frame, gchar ** why)
{
  const GstVideoInfo *info = &frame->info;
  fap_frame view;
  int planes;

  fap_frameview_of (frame, &view);
  planes = view.format == FAP_PIXEL_I420 ? 3 :
      view.format == FAP_PIXEL_NV12 ? 2 : 1;
  for (int p = 0; p < planes; p++) {
    /* with a meta each plane has its own mapping, else map[0] holds all */
    const GstMapInfo *map = &frame->map[frame->meta ? p : 0];
    const guint8 *data = GST_VIDEO_FRAME_PLANE_DATA (frame, p);
    gint stride = GST_VIDEO_FRAME_PLANE_STRIDE (frame, p);
    gsize row, rows, extent;

    plane_shape (&view, p, &row, &rows);
    if (stride < 0 || (gsize) stride < row) {
      *why = g_strdup_printf ("plane %d of a %dx%d %s frame has a stride of "
          "%d bytes, below its %" G_GSIZE_FORMAT " bytes per row (a wrong "
          "GstVideoMeta upstream)", p, view.width, view.height,
          GST_VIDEO_INFO_NAME (info), stride, row);
      return FALSE;
    }
    extent = (rows - 1) * (gsize) stride + row;
    if (!map->data || data < map->data || data > map->data + map->size
        || extent > (gsize) (map->data + map->size - data)) {
      *why = g_strdup_printf ("plane %d of a %dx%d %s frame (%" G_GSIZE_FORMAT
          " bytes from offset %" G_GSIZE_FORMAT ") is not inside the buffer's "
          "memory (%" G_GSIZE_FORMAT " bytes mapped for it): the buffer is "
          "shorter than its GstVideoMeta says, or the plane spans two "
          "memories", p, view.width, view.height, GST_VIDEO_INFO_NAME (info),
          extent, (gsize) GST_VIDEO_INFO_PLANE_OFFSET (info, p),
          (gsize) map->size);
      return FALSE;
    }
  }
  return TRUE;
}

gboolean
fap_framecopy_take (FapFrameCopy * c, const fap_frame * src)
{
  int planes = src->format == FAP_PIXEL_I420 ? 3 :
      src->format == FAP_PIXEL_NV12 ? 2 : 1;
  gsize row[3], rows[3], need = 0, off[3];
  guint8 *dst;

  for (int p = 0; p < planes; p++) {
    plane_shape (src, p, &row[p], &rows[p]);
    off[p] = need;
    need += row[p] * rows[p];
  }
  if (c->size < need) {
    guint8 *d = g_try_malloc (need);
    if (!d)
      return FALSE;
    g_free (c->data);
    c->data = d;
    c->size = need;
  }
  dst = c->data;
  c->frame = *src;
  for (int p = 0; p < planes; p++) {
    const guint8 *s = p == 0 ? src->data : src->plane[p - 1];
    gsize stride = p == 0 ? src->stride : src->plane_stride[p - 1];
    for (gsize y = 0; y < rows[p]; y++)
      memcpy (dst + off[p] + y * row[p], s + y * stride, row[p]);
    if (p == 0) {
      c->frame.data = dst + off[p];
      c->frame.stride = row[p];
    } else {
      c->frame.plane[p - 1] = dst + off[p];
      c->frame.plane_stride[p - 1] = row[p];
    }
  }
  return TRUE;
}
