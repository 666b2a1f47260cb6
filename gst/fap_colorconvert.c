#include "fap_colorconvert.h"

#include <string.h>

void
fap_colorconvert_init (FapColorConvert * c)
{
  memset (c, 0, sizeof *c);
}

void
fap_colorconvert_clear (FapColorConvert * c)
{
  if (c->conv)
    gst_video_converter_free (c->conv);
  memset (c, 0, sizeof *c);
}

gboolean
fap_colorconvert_packed_format (GstVideoFormat f, fap_pixel_format * out)
{
  switch (f) {
    case GST_VIDEO_FORMAT_RGB:
      *out = FAP_PIXEL_RGB;
      return TRUE;
    case GST_VIDEO_FORMAT_BGR:
      *out = FAP_PIXEL_BGR;
      return TRUE;
    case GST_VIDEO_FORMAT_RGBA:
      *out = FAP_PIXEL_RGBA;
      return TRUE;
    case GST_VIDEO_FORMAT_BGRA:
      *out = FAP_PIXEL_BGRA;
      return TRUE;
    case GST_VIDEO_FORMAT_RGBx:
      *out = FAP_PIXEL_RGBX;
      return TRUE;
    case GST_VIDEO_FORMAT_BGRx:
      *out = FAP_PIXEL_BGRX;
      return TRUE;
    case GST_VIDEO_FORMAT_xRGB:
      *out = FAP_PIXEL_XRGB;
      return TRUE;
    case GST_VIDEO_FORMAT_xBGR:
      *out = FAP_PIXEL_XBGR;
      return TRUE;
    default:
      return FALSE;
  }
}

gboolean
fap_colorconvert_set_info (FapColorConvert * c, const GstVideoInfo * info)
{
  fap_pixel_format pf;
  GstVideoFormat f = GST_VIDEO_INFO_FORMAT (info);

  fap_colorconvert_clear (c);
  c->in_info = *info;
  if (fap_colorconvert_packed_format (f, &pf)) {
    c->rgb_info = *info;
    return TRUE;
  }
  if (f != GST_VIDEO_FORMAT_NV12 && f != GST_VIDEO_FORMAT_I420
      && f != GST_VIDEO_FORMAT_YUY2)
    return FALSE;
  gst_video_info_set_format (&c->rgb_info, GST_VIDEO_FORMAT_RGB,
      GST_VIDEO_INFO_WIDTH (info), GST_VIDEO_INFO_HEIGHT (info));
  /* the converter insists that these match */
  GST_VIDEO_INFO_FPS_N (&c->rgb_info) = GST_VIDEO_INFO_FPS_N (info);
  GST_VIDEO_INFO_FPS_D (&c->rgb_info) = GST_VIDEO_INFO_FPS_D (info);
  GST_VIDEO_INFO_PAR_N (&c->rgb_info) = GST_VIDEO_INFO_PAR_N (info);
  GST_VIDEO_INFO_PAR_D (&c->rgb_info) = GST_VIDEO_INFO_PAR_D (info);
  GST_VIDEO_INFO_INTERLACE_MODE (&c->rgb_info) =
      GST_VIDEO_INFO_INTERLACE_MODE (info);
  c->conv = gst_video_converter_new (&c->in_info, &c->rgb_info,
      gst_structure_new ("options",
          GST_VIDEO_CONVERTER_OPT_DITHER_METHOD, GST_TYPE_VIDEO_DITHER_METHOD,
          GST_VIDEO_DITHER_NONE, NULL));
  return c->conv != NULL;
}

gsize
fap_colorconvert_copy_size (const FapColorConvert * c, gsize * stride)
{
  *stride = GST_VIDEO_INFO_PLANE_STRIDE (&c->rgb_info, 0);
  return *stride * (gsize) GST_VIDEO_INFO_HEIGHT (&c->rgb_info);
}

static void
convert_into (FapColorConvert * c, GstVideoFrame * frame, guint8 * dest,
    fap_frame * out)
{
  gsize stride, size = fap_colorconvert_copy_size (c, &stride);
  GstBuffer *buf = gst_buffer_new_wrapped_full (0, dest, size, 0, size,
      NULL, NULL);
  GstVideoFrame rgb;

  memset (out, 0, sizeof *out);
  if (gst_video_frame_map (&rgb, &c->rgb_info, buf, GST_MAP_WRITE)) {
    gst_video_converter_frame (c->conv, frame, &rgb);
    gst_video_frame_unmap (&rgb);
  }
  gst_buffer_unref (buf);
  out->format = FAP_PIXEL_RGB;
  out->width = GST_VIDEO_INFO_WIDTH (&c->rgb_info);
  out->height = GST_VIDEO_INFO_HEIGHT (&c->rgb_info);
  out->stride = stride;
  out->data = dest;
}

void
fap_colorconvert_view (FapColorConvert * c, GstVideoFrame * frame,
    guint8 * scratch, fap_frame * out)
{
  if (c->conv) {
    convert_into (c, frame, scratch, out);
    return;
  }
  memset (out, 0, sizeof *out);
  fap_colorconvert_packed_format (GST_VIDEO_FRAME_FORMAT (frame),
      &out->format);
  out->width = GST_VIDEO_FRAME_WIDTH (frame);
  out->height = GST_VIDEO_FRAME_HEIGHT (frame);
  out->stride = GST_VIDEO_FRAME_PLANE_STRIDE (frame, 0);
  out->data = GST_VIDEO_FRAME_PLANE_DATA (frame, 0);
}

void
fap_colorconvert_copy (FapColorConvert * c, GstVideoFrame * frame,
    guint8 * dest, fap_frame * out)
{
  gsize stride, row;
  gint y, h;
  const guint8 *src;
  gint sstride;

  if (c->conv) {
    convert_into (c, frame, dest, out);
    return;
  }
  memset (out, 0, sizeof *out);
  fap_colorconvert_copy_size (c, &stride);
  row = (gsize) GST_VIDEO_FRAME_WIDTH (frame) *
      GST_VIDEO_FORMAT_INFO_PSTRIDE (frame->info.finfo, 0);
  h = GST_VIDEO_FRAME_HEIGHT (frame);
  src = GST_VIDEO_FRAME_PLANE_DATA (frame, 0);
  sstride = GST_VIDEO_FRAME_PLANE_STRIDE (frame, 0);
  for (y = 0; y < h; y++)
    memcpy (dest + (gsize) y * stride, src + (gsize) y * sstride, row);
  fap_colorconvert_packed_format (GST_VIDEO_FRAME_FORMAT (frame),
      &out->format);
  out->width = GST_VIDEO_FRAME_WIDTH (frame);
  out->height = h;
  out->stride = stride;
  out->data = dest;
}
