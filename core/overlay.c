/* Heatmaps drawn into host frames, the public entry points (fap.h):
 * fap_blend_frame, the reference (its loops are pixel.c's fap_frame_blend,
 * which the CPU backend calls too), and fap_overlay, the same for a
 * stream. A video element draws
 * the same map into many frames in a row (inference-interval > 1, or the
 * non-blocking worker still busy), so the expensive part of the reference,
 * the bilinear sample, colour and alpha of every pixel, is worked out once
 * per map into a paint table; each frame then costs one multiply-add per
 * byte. Every number in the table comes from the same pixel_math.h
 * functions, with the same inputs, as fap_blend_frame's, so the pixels are
 * the same byte for byte (tests/test_overlay.c checks it). */
#include "fap.h"
#include "log.h"
#include "pixel.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
  int first, last; /* painted bytes [first, last] of a row; first > last: none */
} span;

/* One plane's paint over the bytes the crop may change: for every byte of
 * rows row0 .. row0 + n_rows - 1, bytes byte0 .. byte0 + row_bytes - 1, the
 * alpha (0..256) and the value it moves towards. Per byte, not per pixel,
 * so drawing any format is one straight multiply-add over contiguous bytes
 * that the compiler vectorises (3 bytes of table per byte of frame). */
typedef struct {
  uint16_t *alpha;
  uint8_t *colour;
  span *rows;
  size_t row_bytes, n_rows;
  size_t row0, byte0;
  size_t cap[3];
} plane_paint;

struct fap_overlay {
  /* what the table was built for */
  int valid;
  uint64_t map_id;
  int map_size;
  fap_pixel_format format;
  int width, height;
  fap_rect crop; /* resolved: the whole frame when the frame has none */
  fap_yuv_matrix matrix;
  int full_range;
  fap_blend blend;

  plane_paint plane[3];
  int n_planes;

  /* bilinear taps of the crop's columns and rows */
  int *tx0, *tx1, *ty0, *ty1;
  float *twx, *twy;
  /* one row of samples being painted: m, alpha, jet colour */
  float *m;
  int32_t *a;
  uint8_t *rgb;
  size_t cap[9]; /* bytes allocated behind each table above */
};

/* fap_blend_frame, fap_overlay_*: public calls (fap_last_error's bookkeeping) */

fap_status fap_blend_frame(const fap_frame *frame, const float *map, int map_size,
                           const fap_blend *blend) {
  fap_api_enter();
  return fap_api_return(fap_frame_blend(frame, map, map_size, blend));
}

fap_status fap_overlay_new(fap_overlay **out) {
  fap_api_enter();
  if (!out)
    return fap_api_return(fap_fail(FAP_ERR_INVALID_ARGUMENT, "fap_overlay_new: out is NULL"));
  *out = calloc(1, sizeof **out);
  return fap_api_return(*out ? FAP_OK
                             : fap_fail(FAP_ERR_NO_MEMORY, "fap_overlay_new: out of memory"));
}

void fap_overlay_free(fap_overlay *o) {
  if (!o)
    return;
  for (int i = 0; i < 3; i++)
    free(o->plane[i].alpha), free(o->plane[i].colour), free(o->plane[i].rows);
  free(o->tx0), free(o->tx1), free(o->twx);
  free(o->ty0), free(o->ty1), free(o->twy);
  free(o->m), free(o->a), free(o->rgb);
  free(o);
}

/* grows *p to at least `bytes` (contents not kept) */
static int grow(void **p, size_t *cap, size_t bytes) {
  if (*cap >= bytes)
    return 1;
  void *q = malloc(bytes ? bytes : 1);
  if (!q)
    return 0;
  free(*p);
  *p = q;
  *cap = bytes;
  return 1;
}

static int plane_reserve(plane_paint *pp, size_t row0, size_t n_rows, size_t byte0,
                         size_t row_bytes) {
  pp->row0 = row0;
  pp->byte0 = byte0;
  if (row_bytes == 0 || n_rows == 0) /* a chroma plane with no sample wholly inside the crop */
    row_bytes = n_rows = 0;
  pp->row_bytes = row_bytes;
  pp->n_rows = n_rows;
  const size_t n = row_bytes * n_rows;
  if (n == 0)
    return 1; /* nothing to paint there: no buffer, every loop over it empty */
  return grow((void **)&pp->alpha, &pp->cap[0], n * sizeof(uint16_t)) &&
         grow((void **)&pp->colour, &pp->cap[1], n) &&
         grow((void **)&pp->rows, &pp->cap[2], n_rows * sizeof(span));
}

static int same_key(const fap_overlay *o, const fap_frame *f, int map_size, uint64_t map_id,
                    const fap_blend *b) {
  const int yuv = fap_format_is_yuv(f->format);
  const fap_rect c = fap_frame_crop(f);
  return o->valid && map_id != 0 && o->map_id == map_id && o->map_size == map_size &&
         o->format == f->format && o->width == f->width && o->height == f->height &&
         o->crop.x == c.x && o->crop.y == c.y && o->crop.width == c.width &&
         o->crop.height == c.height &&
         (!yuv || (o->matrix == f->matrix && o->full_range == (f->full_range != 0))) &&
         memcmp(&o->blend, b, sizeof *b) == 0;
}

/* row and byte in frame coordinates */
static inline void put(plane_paint *pp, size_t row, size_t byte, int a, uint8_t c) {
  const size_t at = (row - pp->row0) * pp->row_bytes + (byte - pp->byte0);
  pp->alpha[at] = (uint16_t)a;
  pp->colour[at] = c;
}

static void find_spans(plane_paint *pp) {
  for (size_t y = 0; y < pp->n_rows; y++) {
    const uint16_t *al = pp->alpha + y * pp->row_bytes;
    span sp = {(int)pp->row_bytes, -1};
    for (size_t i = 0; i < pp->row_bytes; i++)
      if (al[i]) {
        if (sp.first > (int)i)
          sp.first = (int)i;
        sp.last = (int)i;
      }
    pp->rows[y] = sp;
  }
}

/* Samples, alphas and jet colours of n pixels (x = x0, x0 + step, ...) of
 * row y, both counted in the crop: fap_map_sample and fap_blend_paint
 * (pixel_math.h), written as straight loops over arrays so the compiler
 * vectorises them; every float operation is the reference's, in its order,
 * so every byte is the same. */
static void paint_row(fap_overlay *o, const float *map, int size, int y, int x0, int n, int step,
                      const fap_blend_params *bp) {
  float *restrict m = o->m;
  int32_t *restrict al = o->a;
  uint8_t *restrict rgb = o->rgb;
  const float *row0 = map + (size_t)o->ty0[y] * size, *row1 = map + (size_t)o->ty1[y] * size;
  const float wy = o->twy[y];
  for (int i = 0; i < n; i++) {
    const int x = x0 + i * step;
    m[i] = fap_bilinear_mix(row0[o->tx0[x]], row0[o->tx1[x]], row1[o->tx0[x]], row1[o->tx1[x]],
                            o->twx[x], wy);
  }
  const float thr = bp->threshold, lo = bp->lo, inv = bp->inv_range, op = bp->opacity;
  for (int i = 0; i < n; i++) {
    const int drawn = m[i] > thr; /* false for NaN too */
    float t = FAP_FMUL(FAP_FSUB(drawn ? m[i] : lo, lo), inv);
    t = t < 0.0f ? 0.0f : t > 1.0f ? 1.0f : t;
    const int a = (int)FAP_FADD(FAP_FMUL(FAP_FMUL(op, t), 256.0f), 0.5f);
    al[i] = drawn ? a : 0;
    m[i] = t; /* from here on: the level */
  }
  for (int i = 0; i < n; i++) {
    static const float k[3] = {3.0f, 2.0f, 1.0f}; /* fap_jet: r, g, b */
    for (int c = 0; c < 3; c++) {
      float v = FAP_FSUB(FAP_FMUL(4.0f, m[i]), k[c]);
      v = FAP_FSUB(1.5f, v < 0.0f ? -v : v);
      v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
      rgb[3 * i + c] = (uint8_t)(int)FAP_FADD(FAP_FMUL(v, 255.0f), 0.5f);
    }
  }
}

static fap_status build(fap_overlay *o, const fap_frame *f, const float *map, int size,
                        uint64_t map_id, const fap_blend *blend) {
  const fap_rect crop = fap_frame_crop(f);
  const int w = crop.width, h = crop.height, yuv = fap_format_is_yuv(f->format);
  const int yuy2 = f->format == FAP_PIXEL_YUY2;
  int r = 0, g = 0, b = 0;
  const int bpp = yuv ? 0 : fap_packed_layout(f->format, &r, &g, &b);
  fap_pixels px; /* the chroma samples the crop draws */
  int cx0 = 0, cx1 = 0, cy0 = 0, cy1 = 0;
  fap_pixels_of_frame(f, &px);
  if (yuv)
    fap_chroma_range(&px, &cx0, &cx1, &cy0, &cy1);
  o->valid = 0;
  int ok = grow((void **)&o->tx0, &o->cap[0], w * sizeof(int)) &&
           grow((void **)&o->tx1, &o->cap[1], w * sizeof(int)) &&
           grow((void **)&o->twx, &o->cap[2], w * sizeof(float)) &&
           grow((void **)&o->ty0, &o->cap[3], h * sizeof(int)) &&
           grow((void **)&o->ty1, &o->cap[4], h * sizeof(int)) &&
           grow((void **)&o->twy, &o->cap[5], h * sizeof(float)) &&
           grow((void **)&o->m, &o->cap[6], w * sizeof(float)) &&
           grow((void **)&o->a, &o->cap[7], w * sizeof(int32_t)) &&
           grow((void **)&o->rgb, &o->cap[8], 3 * (size_t)w);
  /* planes as the frame has them (packed / YUY2 one, NV12 two, I420 three),
   * each over the bytes of the crop's rows and columns */
  o->n_planes = f->format == FAP_PIXEL_I420 ? 3 : f->format == FAP_PIXEL_NV12 ? 2 : 1;
  const size_t cpx = f->format == FAP_PIXEL_NV12 ? 2 : 1; /* bytes per chroma sample */
  if (!yuv) {
    ok = ok && plane_reserve(&o->plane[0], crop.y, h, (size_t)crop.x * bpp, (size_t)w * bpp);
  } else if (yuy2) {
    const int pair0 = crop.x >> 1, pair1 = (crop.x + w - 1) >> 1;
    ok = ok && plane_reserve(&o->plane[0], crop.y, h, 4 * (size_t)pair0,
                             4 * (size_t)(pair1 - pair0 + 1));
  } else {
    ok = ok && plane_reserve(&o->plane[0], crop.y, h, crop.x, w) &&
         plane_reserve(&o->plane[1], cy0, cy1 - cy0, cx0 * cpx, (cx1 - cx0) * cpx) &&
         (f->format != FAP_PIXEL_I420 ||
          plane_reserve(&o->plane[2], cy0, cy1 - cy0, cx0, cx1 - cx0));
  }
  if (!ok)
    return fap_fail(FAP_ERR_NO_MEMORY, "fap_overlay_draw: out of memory for a %dx%d paint table",
                    w, h);
  for (int i = 0; i < o->n_planes; i++) {
    plane_paint *pp = &o->plane[i];
    if (pp->n_rows == 0)
      continue; /* plane_reserve: nothing reserved */
    memset(pp->alpha, 0, pp->row_bytes * pp->n_rows * sizeof(uint16_t));
    memset(pp->colour, 0, pp->row_bytes * pp->n_rows);
  }

  for (int x = 0; x < w; x++)
    fap_bilinear_tap(x, size, w, &o->tx0[x], &o->tx1[x], &o->twx[x]);
  for (int y = 0; y < h; y++)
    fap_bilinear_tap(y, size, h, &o->ty0[y], &o->ty1[y], &o->twy[y]);

  fap_blend_params bp;
  fap_blend_params_of(blend, &bp);
  const fap_rgb2yuv to_yuv = px.to_yuv;

  plane_paint *p0 = &o->plane[0], *p1 = &o->plane[1], *p2 = &o->plane[2];
  /* pass 1 (fap_blend_pixel): packed RGB channels, or luma, of the crop */
  for (int ly = 0; ly < h; ly++) {
    const int y = crop.y + ly;
    paint_row(o, map, size, ly, 0, w, 1, &bp);
    const int32_t *al = o->a;
    const uint8_t *c = o->rgb;
    for (int lx = 0; lx < w; lx++) {
      const int a = al[lx], x = crop.x + lx;
      if (!a)
        continue;
      if (!yuv) {
        put(p0, y, (size_t)x * bpp + r, a, c[3 * lx]);
        put(p0, y, (size_t)x * bpp + g, a, c[3 * lx + 1]);
        put(p0, y, (size_t)x * bpp + b, a, c[3 * lx + 2]);
      } else {
        uint8_t v[3];
        fap_rgb_to_yuv(&to_yuv, c + 3 * lx, v);
        put(p0, y, yuy2 ? 4 * (size_t)(x >> 1) + 2 * (x & 1) : (size_t)x, a, v[0]);
      }
    }
  }
  /* pass 2 (fap_blend_chroma): U and V from the sample's top-left pixel, for
   * the samples whose pixels all lie in the crop */
  for (int cy = cy0; cy < cy1 && cx1 > cx0; cy++) {
    paint_row(o, map, size, (yuy2 ? cy : 2 * cy) - crop.y, 2 * cx0 - crop.x, cx1 - cx0, 2, &bp);
    for (int cx = cx0; cx < cx1; cx++) {
      const int a = o->a[cx - cx0];
      if (!a)
        continue;
      uint8_t v[3];
      fap_rgb_to_yuv(&to_yuv, o->rgb + 3 * (cx - cx0), v);
      if (yuy2) {
        put(p0, cy, 4 * (size_t)cx + 1, a, v[1]);
        put(p0, cy, 4 * (size_t)cx + 3, a, v[2]);
      } else if (f->format == FAP_PIXEL_NV12) {
        put(p1, cy, 2 * (size_t)cx, a, v[1]);
        put(p1, cy, 2 * (size_t)cx + 1, a, v[2]);
      } else {
        put(p1, cy, cx, a, v[1]);
        put(p2, cy, cx, a, v[2]);
      }
    }
  }
  for (int i = 0; i < o->n_planes; i++)
    find_spans(&o->plane[i]);

  o->map_id = map_id;
  o->map_size = size;
  o->format = f->format;
  o->width = f->width;
  o->height = f->height;
  o->crop = crop;
  o->matrix = f->matrix;
  o->full_range = f->full_range != 0;
  o->blend = *blend;
  o->valid = 1;
  return FAP_OK;
}

/* p = (p (256 - a) + c a + 128) >> 8: fap_blend_channel over contiguous
 * bytes; a = 0 leaves p as it was, so no branch is needed */
static void mix_run(uint8_t *restrict p, const uint16_t *restrict alpha,
                    const uint8_t *restrict colour, int n) {
  for (int i = 0; i < n; i++) {
    const unsigned a = alpha[i];
    p[i] = (uint8_t)((p[i] * (256u - a) + colour[i] * a + 128u) >> 8);
  }
}

static void draw(const fap_overlay *o, const fap_frame *f) {
  for (int i = 0; i < o->n_planes; i++) {
    const plane_paint *pp = &o->plane[i];
    uint8_t *base = (uint8_t *)(i == 0 ? f->data : f->plane[i - 1]);
    const size_t stride = i == 0 ? f->stride : f->plane_stride[i - 1];
    for (size_t y = 0; y < pp->n_rows; y++) {
      const span sp = pp->rows[y];
      if (sp.first > sp.last)
        continue;
      const size_t off = y * pp->row_bytes + sp.first;
      mix_run(base + (pp->row0 + y) * stride + pp->byte0 + sp.first, pp->alpha + off,
              pp->colour + off, sp.last - sp.first + 1);
    }
  }
}

static fap_status prepare(fap_overlay *o, const fap_frame *frame, const float *map,
                          int map_size, uint64_t map_id, const fap_blend *blend, const char *who) {
  if (!o)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "%s: no overlay", who);
  fap_status s = fap_frame_check(frame, who);
  if (s || (s = fap_blend_check(blend)))
    return s;
  if (!map || map_size < 1)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "%s: no map", who);
  if (!same_key(o, frame, map_size, map_id, blend)) {
    if ((s = build(o, frame, map, map_size, map_id, blend)))
      return s;
  }
  return FAP_OK;
}

fap_status fap_overlay_prepare(fap_overlay *o, const fap_frame *frame, const float *map,
                               int map_size, uint64_t map_id, const fap_blend *blend) {
  fap_api_enter();
  return fap_api_return(prepare(o, frame, map, map_size, map_id, blend, "fap_overlay_prepare"));
}

fap_status fap_overlay_draw(fap_overlay *o, const fap_frame *frame, const float *map,
                            int map_size, uint64_t map_id, const fap_blend *blend) {
  fap_api_enter();
  fap_status s = prepare(o, frame, map, map_size, map_id, blend, "fap_overlay_draw");
  if (!s)
    s = fap_frame_check_host(frame, "fap_overlay_draw");
  if (!s)
    draw(o, frame);
  return fap_api_return(s);
}
