/* Host-side frame handling; see pixel.h. */
#include "pixel.h"

#include "log.h"

#include <math.h>
#include <string.h>

static int packed_bpp(fap_pixel_format f) {
  int r, g, b;
  return f == FAP_PIXEL_YUY2 ? 2 : fap_packed_layout(f, &r, &g, &b);
}

int fap_frame_planes(const fap_frame *f) {
  return f->format == FAP_PIXEL_I420 ? 3 : f->format == FAP_PIXEL_NV12 ? 2 : 1;
}

/* row bytes of plane i */
static size_t row_bytes(const fap_frame *f, int plane) {
  const size_t cw = ((size_t)f->width + 1) / 2;
  if (plane == 0) {
    if (f->format == FAP_PIXEL_YUY2)
      return 4 * cw;
    if (f->format == FAP_PIXEL_NV12 || f->format == FAP_PIXEL_I420)
      return (size_t)f->width;
    return (size_t)f->width * packed_bpp(f->format);
  }
  return f->format == FAP_PIXEL_NV12 ? 2 * cw : cw;
}

static size_t plane_rows(const fap_frame *f, int plane) {
  return plane == 0 ? (size_t)f->height : (size_t)fap_chroma_height(f->format, f->height);
}

static size_t plane_stride(const fap_frame *f, int plane) {
  return plane == 0 ? f->stride : f->plane_stride[plane - 1];
}

size_t fap_frame_plane_bytes(const fap_frame *f, int plane) {
  if (plane >= fap_frame_planes(f))
    return 0;
  return (plane_rows(f, plane) - 1) * plane_stride(f, plane) + row_bytes(f, plane);
}

fap_status fap_frame_check(const fap_frame *f, const char *who) {
  if (!f || !f->data)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "%s: no frame data", who);
  if ((unsigned)f->format > FAP_PIXEL_YUY2)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "%s: unknown pixel format %d", who, (int)f->format);
  if (f->width < 1 || f->height < 1 || f->width > 32768 || f->height > 32768)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT,
                    "%s: frame size %dx%d is outside 1x1 .. 32768x32768", who, f->width,
                    f->height);
  for (int p = 0; p < fap_frame_planes(f); p++) {
    const size_t need = row_bytes(f, p), stride = plane_stride(f, p);
    if (p > 0 && !f->plane[p - 1])
      return fap_fail(FAP_ERR_INVALID_ARGUMENT, "%s: %s frame without its plane[%d]", who,
                      fap_pixel_format_name(f->format), p - 1);
    if (stride < need) {
      if (p == 0 && !fap_format_is_yuv(f->format))
        return fap_fail(FAP_ERR_INVALID_ARGUMENT,
                        "%s: stride %zu is smaller than width %d x %d bytes (%s)", who, stride,
                        f->width, packed_bpp(f->format), fap_pixel_format_name(f->format));
      return fap_fail(FAP_ERR_INVALID_ARGUMENT,
                      "%s: stride %zu of plane %d is smaller than its %zu bytes per row (%s, "
                      "width %d)",
                      who, stride, p, need, fap_pixel_format_name(f->format), f->width);
    }
  }
  const fap_rect *c = &f->crop;
  if (!fap_crop_is_whole(f) &&
      (c->width < 1 || c->height < 1 || c->x < 0 || c->y < 0 || c->x > f->width - c->width ||
       c->y > f->height - c->height))
    return fap_fail(FAP_ERR_INVALID_ARGUMENT,
                    "%s: crop x=%d y=%d width=%d height=%d is not a rectangle of at least 1x1 "
                    "inside the %dx%d frame (all zero: the whole frame)",
                    who, c->x, c->y, c->width, c->height, f->width, f->height);
  if ((unsigned)f->memory > FAP_MEMORY_CUDA)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "%s: unknown frame memory kind %d", who,
                    (int)f->memory);
  if (fap_format_is_yuv(f->format) && (unsigned)f->matrix > FAP_YUV_BT2020)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "%s: unknown YUV matrix %d", who, (int)f->matrix);
  return FAP_OK;
}

void fap_pixels_of_frame(const fap_frame *f, fap_pixels *out) {
  memset(out, 0, sizeof *out);
  out->format = f->format;
  out->width = f->width;
  out->height = f->height;
  out->p[0] = (uint8_t *)f->data;
  out->s[0] = f->stride;
  for (int i = 0; i < 2; i++) {
    out->p[i + 1] = (uint8_t *)f->plane[i];
    out->s[i + 1] = f->plane_stride[i];
  }
  fap_yuv_coefficients((int)f->matrix, f->full_range != 0, &out->to_rgb,
                       &out->to_yuv);
  const fap_rect c = fap_frame_crop(f);
  out->crop_x = c.x;
  out->crop_y = c.y;
  out->crop_w = c.width;
  out->crop_h = c.height;
}

int fap_crop_is_whole(const fap_frame *f) {
  return f->crop.x == 0 && f->crop.y == 0 && f->crop.width == 0 && f->crop.height == 0;
}

fap_rect fap_frame_crop(const fap_frame *f) {
  if (fap_crop_is_whole(f))
    return (fap_rect){0, 0, f->width, f->height};
  return f->crop;
}

void fap_frame_to_rgb(const fap_frame *f, uint8_t *rgb) {
  fap_pixels px;
  fap_pixels_of_frame(f, &px);
  for (int y = 0; y < px.crop_h; y++)
    for (int x = 0; x < px.crop_w; x++)
      fap_fetch_rgb(&px, px.crop_x + x, px.crop_y + y, rgb + ((size_t)y * px.crop_w + x) * 3);
}

void fap_blend_init(fap_blend *b) {
  b->opacity = 0.5f;
  b->threshold = 0.5f;
  b->range_min = 0.0f;
  b->range_max = 1.0f;
}

fap_status fap_frame_check_host(const fap_frame *f, const char *who) {
  if (f->memory != FAP_MEMORY_HOST)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT,
                    "%s: the frame is in CUDA memory; the host cannot touch its pixels (draw it "
                    "with fap_detector_draw on a CUDA detector)",
                    who);
  return FAP_OK;
}

fap_status fap_blend_check(const fap_blend *b) {
  if (!b)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "blend: no options");
  if (!(b->opacity >= 0.0f && b->opacity <= 1.0f))
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "blend: opacity %g is outside [0, 1]",
                    (double)b->opacity);
  if (!isfinite(b->threshold))
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "blend: threshold %g is not finite",
                    (double)b->threshold);
  if (!isfinite(b->range_min) || !isfinite(b->range_max) || !(b->range_max > b->range_min) ||
      !isfinite(1.0f / (b->range_max - b->range_min)))
    return fap_fail(FAP_ERR_INVALID_ARGUMENT,
                    "blend: colour range [%g, %g] is empty or not finite; range_max must be "
                    "above range_min (fap_blend_init gives [0, 1])",
                    (double)b->range_min, (double)b->range_max);
  return FAP_OK;
}

void fap_blend_params_of(const fap_blend *b, fap_blend_params *out) {
  out->opacity = b->opacity;
  out->threshold = b->threshold;
  out->lo = b->range_min;
  out->inv_range = 1.0f / (b->range_max - b->range_min);
}

fap_status fap_frame_blend(const fap_frame *frame, const float *map, int map_size,
                           const fap_blend *blend) {
  fap_status s = fap_frame_check(frame, "fap_blend_frame");
  if (s || (s = fap_blend_check(blend)) || (s = fap_frame_check_host(frame, "fap_blend_frame")))
    return s;
  if (!map || map_size < 1)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "fap_blend_frame: no map");
  fap_pixels px;
  fap_blend_params bp;
  fap_pixels_of_frame(frame, &px);
  fap_blend_params_of(blend, &bp);
  for (int y = px.crop_y; y < px.crop_y + px.crop_h; y++)
    for (int x = px.crop_x; x < px.crop_x + px.crop_w; x++)
      fap_blend_pixel(&px, map, map_size, x, y, &bp);
  if (fap_format_is_yuv(frame->format)) {
    int cx0, cx1, cy0, cy1;
    fap_chroma_range(&px, &cx0, &cx1, &cy0, &cy1);
    for (int cy = cy0; cy < cy1; cy++)
      for (int cx = cx0; cx < cx1; cx++)
        fap_blend_chroma(&px, map, map_size, cx, cy, &bp);
  }
  return FAP_OK;
}
