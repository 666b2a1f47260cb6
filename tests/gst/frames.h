/* Frames for the element tests: a deterministic textured buffer in any of
 * the element's formats, the core's fap_frame view of a mapped GstVideoFrame
 * (written from the fap_frame documentation, independent of the element's
 * gst/common/fap_frameview.c), and a byte comparison of two buffers. */
#ifndef FAP_TEST_GST_FRAMES_H
#define FAP_TEST_GST_FRAMES_H

#include <gst/gst.h>
#include <gst/video/video.h>
#include <string.h>

#include <fap.h>

/* A deterministic textured frame (smooth gradients plus a bright blob whose
 * position depends on seed), valid in any of the formats. */
static inline GstBuffer *make_frame(const char *fmt, int w, int h, int seed, guint64 index) {
  GstVideoInfo info;
  GstVideoFrame f;
  gst_video_info_set_format(&info, gst_video_format_from_string(fmt), w, h);
  GstBuffer *buf = gst_buffer_new_allocate(NULL, GST_VIDEO_INFO_SIZE(&info), NULL);
  /* bytes past the planes' rows (an odd size's alignment) defined too: whole
   * buffers are compared */
  gst_buffer_memset(buf, 0, 0, GST_VIDEO_INFO_SIZE(&info));
  g_assert_true(gst_video_frame_map(&f, &info, buf, GST_MAP_WRITE));
  for (guint p = 0; p < GST_VIDEO_FRAME_N_PLANES(&f); p++) {
    guint8 *d = GST_VIDEO_FRAME_PLANE_DATA(&f, p);
    int stride = GST_VIDEO_FRAME_PLANE_STRIDE(&f, p);
    int rows = GST_VIDEO_FRAME_COMP_HEIGHT(&f, p == 0 ? 0 : 1);
    if (GST_VIDEO_INFO_FORMAT(&info) == GST_VIDEO_FORMAT_I420 && p > 0)
      rows = GST_VIDEO_FRAME_COMP_HEIGHT(&f, p);
    for (int y = 0; y < rows; y++)
      for (int x = 0; x < stride; x++) {
        int bx = (seed * 37) % w, by = (seed * 23) % h;
        int dx = x - bx, dy = y - by;
        int blob = dx * dx + dy * dy < (w * h) / 40 ? 90 : 0;
        d[(size_t)y * stride + x] = (guint8)((x * 3 + y * 5 + p * 60 + seed * 11 + blob) & 0xff);
      }
  }
  gst_video_frame_unmap(&f);
  GST_BUFFER_PTS(buf) = index * GST_SECOND / 30;
  GST_BUFFER_DURATION(buf) = GST_SECOND / 30;
  return buf;
}

/* The core's frame for a mapped GstVideoFrame, written out here from the
 * fap_frame documentation (independent of the element's fap_frameview.c). */
static inline fap_frame core_frame(GstVideoFrame *f) {
  static const struct {
    GstVideoFormat gf;
    fap_pixel_format pf;
  } formats[] = {{GST_VIDEO_FORMAT_RGB, FAP_PIXEL_RGB},   {GST_VIDEO_FORMAT_BGR, FAP_PIXEL_BGR},
                 {GST_VIDEO_FORMAT_RGBA, FAP_PIXEL_RGBA}, {GST_VIDEO_FORMAT_BGRA, FAP_PIXEL_BGRA},
                 {GST_VIDEO_FORMAT_RGBx, FAP_PIXEL_RGBX}, {GST_VIDEO_FORMAT_BGRx, FAP_PIXEL_BGRX},
                 {GST_VIDEO_FORMAT_xRGB, FAP_PIXEL_XRGB}, {GST_VIDEO_FORMAT_xBGR, FAP_PIXEL_XBGR},
                 {GST_VIDEO_FORMAT_NV12, FAP_PIXEL_NV12}, {GST_VIDEO_FORMAT_I420, FAP_PIXEL_I420},
                 {GST_VIDEO_FORMAT_YUY2, FAP_PIXEL_YUY2}};
  fap_frame fr;
  memset(&fr, 0, sizeof fr);
  fr.format = (fap_pixel_format)-1;
  for (guint i = 0; i < G_N_ELEMENTS(formats); i++)
    if (formats[i].gf == GST_VIDEO_FRAME_FORMAT(f))
      fr.format = formats[i].pf;
  g_assert_cmpint(fr.format, !=, -1);
  fr.width = GST_VIDEO_FRAME_WIDTH(f);
  fr.height = GST_VIDEO_FRAME_HEIGHT(f);
  fr.data = GST_VIDEO_FRAME_PLANE_DATA(f, 0);
  fr.stride = GST_VIDEO_FRAME_PLANE_STRIDE(f, 0);
  for (guint p = 1; p < GST_VIDEO_FRAME_N_PLANES(f); p++) {
    fr.plane[p - 1] = GST_VIDEO_FRAME_PLANE_DATA(f, p);
    fr.plane_stride[p - 1] = GST_VIDEO_FRAME_PLANE_STRIDE(f, p);
  }
  const GstVideoColorimetry *c = &f->info.colorimetry;
  fr.matrix = c->matrix == GST_VIDEO_COLOR_MATRIX_BT709    ? FAP_YUV_BT709
              : c->matrix == GST_VIDEO_COLOR_MATRIX_BT2020 ? FAP_YUV_BT2020
                                                           : FAP_YUV_BT601;
  fr.full_range = c->range == GST_VIDEO_COLOR_RANGE_0_255;
  return fr;
}

static inline gboolean same_buffer_bytes(GstBuffer *a, GstBuffer *b) {
  GstMapInfo ma, mb;
  gst_buffer_map(a, &ma, GST_MAP_READ);
  gst_buffer_map(b, &mb, GST_MAP_READ);
  gboolean same = ma.size == mb.size && memcmp(ma.data, mb.data, ma.size) == 0;
  gst_buffer_unmap(a, &ma);
  gst_buffer_unmap(b, &mb);
  return same;
}

#endif
