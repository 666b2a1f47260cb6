/* fap_overlay: fap_blend_frame for a stream (fap.h). A video element draws
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
  int first, last; /* painted columns [first, last] of a row; first > last: none */
} span;

struct fap_overlay {
  /* what the table was built for */
  int valid;
  uint64_t map_id;
  int map_size;
  fap_pixel_format format;
  int width, height;
  fap_yuv_matrix matrix;
  int full_range;
  fap_blend blend;

  /* per pixel: alpha (0..256) and the colour (3 bytes packed RGB, 1 luma) */
  uint16_t *alpha;
  uint8_t *colour;
  span *rows;
  /* YUV: per chroma sample, alpha and U, V */
  uint16_t *calpha;
  uint8_t *cuv;
  span *crows;

  /* bilinear taps of the frame's columns and rows */
  int *tx0, *tx1, *ty0, *ty1;
  float *twx, *twy;
  size_t cap[12]; /* bytes allocated behind each table above */
};

fap_status fap_overlay_new(fap_overlay **out) {
  if (!out)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "fap_overlay_new: out is NULL");
  *out = calloc(1, sizeof **out);
  return *out ? FAP_OK : fap_fail(FAP_ERR_NO_MEMORY, "fap_overlay_new: out of memory");
}

static void free_tables(fap_overlay *o) {
  free(o->alpha), free(o->colour), free(o->rows);
  free(o->calpha), free(o->cuv), free(o->crows);
  free(o->tx0), free(o->tx1), free(o->twx);
  free(o->ty0), free(o->ty1), free(o->twy);
}

void fap_overlay_free(fap_overlay *o) {
  if (!o)
    return;
  free_tables(o);
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

static int same_key(const fap_overlay *o, const fap_frame *f, int map_size, uint64_t map_id,
                    const fap_blend *b) {
  const int yuv = fap_format_is_yuv(f->format);
  return o->valid && map_id != 0 && o->map_id == map_id && o->map_size == map_size &&
         o->format == f->format && o->width == f->width && o->height == f->height &&
         (!yuv || (o->matrix == f->matrix && o->full_range == (f->full_range != 0))) &&
         memcmp(&o->blend, b, sizeof *b) == 0;
}

static fap_status build(fap_overlay *o, const fap_frame *f, const float *map, int size,
                        const fap_blend *blend) {
  const int w = f->width, h = f->height, yuv = fap_format_is_yuv(f->format);
  const int cw = (w + 1) / 2, ch = yuv ? fap_chroma_height(f->format, h) : 0;
  const size_t chans = yuv ? 1 : 3, npx = (size_t)w * h, nch = (size_t)cw * ch;
  o->valid = 0;
  /* tables only grow: a stream of one geometry allocates once */
  const int ok = grow((void **)&o->tx0, &o->cap[0], w * sizeof(int)) &&
                 grow((void **)&o->tx1, &o->cap[1], w * sizeof(int)) &&
                 grow((void **)&o->twx, &o->cap[2], w * sizeof(float)) &&
                 grow((void **)&o->ty0, &o->cap[3], h * sizeof(int)) &&
                 grow((void **)&o->ty1, &o->cap[4], h * sizeof(int)) &&
                 grow((void **)&o->twy, &o->cap[5], h * sizeof(float)) &&
                 grow((void **)&o->alpha, &o->cap[6], npx * sizeof(uint16_t)) &&
                 grow((void **)&o->colour, &o->cap[7], npx * chans) &&
                 grow((void **)&o->rows, &o->cap[8], h * sizeof(span)) &&
                 (!nch || (grow((void **)&o->calpha, &o->cap[9], nch * sizeof(uint16_t)) &&
                           grow((void **)&o->cuv, &o->cap[10], nch * 2) &&
                           grow((void **)&o->crows, &o->cap[11], ch * sizeof(span))));
  if (!ok)
    return fap_fail(FAP_ERR_NO_MEMORY, "fap_overlay_draw: out of memory for a %dx%d paint table",
                    w, h);

  for (int x = 0; x < w; x++)
    fap_bilinear_tap(x, size, w, &o->tx0[x], &o->tx1[x], &o->twx[x]);
  for (int y = 0; y < h; y++)
    fap_bilinear_tap(y, size, h, &o->ty0[y], &o->ty1[y], &o->twy[y]);

  fap_blend_params bp;
  fap_blend_params_of(blend, &bp);
  fap_rgb2yuv to_yuv;
  fap_yuv_coefficients((int)f->matrix, f->full_range != 0, NULL, &to_yuv);

  /* m exactly as fap_map_sample computes it for pixel (x, y) */
#define SAMPLE(x, y)                                                                          \
  fap_bilinear_mix(map[o->ty0[y] * size + o->tx0[x]], map[o->ty0[y] * size + o->tx1[x]],     \
                   map[o->ty1[y] * size + o->tx0[x]], map[o->ty1[y] * size + o->tx1[x]],     \
                   o->twx[x], o->twy[y])

#pragma omp parallel for schedule(static) if (npx >= (1u << 18))
  for (int y = 0; y < h; y++) {
    uint16_t *al = o->alpha + (size_t)y * w;
    uint8_t *co = o->colour + (size_t)y * w * chans;
    span sp = {w, -1};
    for (int x = 0; x < w; x++) {
      uint8_t c[3] = {0, 0, 0};
      const int a = fap_blend_paint(SAMPLE(x, y), &bp, c);
      al[x] = (uint16_t)a;
      if (yuv) {
        uint8_t v[3];
        fap_rgb_to_yuv(&to_yuv, c, v);
        co[x] = a ? v[0] : 0;
      } else {
        memcpy(co + 3 * (size_t)x, c, 3);
      }
      if (a) {
        sp.first = sp.first < x ? sp.first : x;
        sp.last = x;
      }
    }
    o->rows[y] = sp;
  }
#pragma omp parallel for schedule(static) if (nch >= (1u << 17))
  for (int cy = 0; cy < ch; cy++) {
    const int y = f->format == FAP_PIXEL_YUY2 ? cy : 2 * cy;
    uint16_t *al = o->calpha + (size_t)cy * cw;
    uint8_t *uv = o->cuv + (size_t)cy * cw * 2;
    span sp = {cw, -1};
    for (int cx = 0; cx < cw; cx++) {
      uint8_t c[3] = {0, 0, 0}, v[3] = {0, 0, 0};
      const int a = fap_blend_paint(SAMPLE(2 * cx, y), &bp, c);
      if (a)
        fap_rgb_to_yuv(&to_yuv, c, v);
      al[cx] = (uint16_t)a;
      uv[2 * cx] = v[1];
      uv[2 * cx + 1] = v[2];
      if (a) {
        sp.first = sp.first < cx ? sp.first : cx;
        sp.last = cx;
      }
    }
    o->crows[cy] = sp;
  }
#undef SAMPLE

  o->map_id = 0; /* set by the caller once the table is complete */
  o->map_size = size;
  o->format = f->format;
  o->width = w;
  o->height = h;
  o->matrix = f->matrix;
  o->full_range = f->full_range != 0;
  o->blend = *blend;
  o->valid = 1;
  return FAP_OK;
}

/* p = (p (256 - a) + c a + 128) >> 8, fap_blend_channel for a run of bytes
 * `step` apart; a = 0 leaves p as it was, so no branch is needed */
static void mix_run(uint8_t *p, size_t step, const uint16_t *alpha, const uint8_t *colour,
                    size_t colour_step, int n) {
  for (int i = 0; i < n; i++) {
    const unsigned a = alpha[i], c = colour[(size_t)i * colour_step];
    p[(size_t)i * step] = (uint8_t)((p[(size_t)i * step] * (256u - a) + c * a + 128u) >> 8);
  }
}

static void draw(const fap_overlay *o, const fap_frame *f) {
  const int w = f->width, h = f->height;
  uint8_t *data = (uint8_t *)f->data;
  if (!fap_format_is_yuv(f->format)) {
    int r, g, b;
    const int bpp = fap_packed_layout(f->format, &r, &g, &b);
    for (int y = 0; y < h; y++) {
      const span sp = o->rows[y];
      if (sp.first > sp.last)
        continue;
      const int n = sp.last - sp.first + 1;
      uint8_t *px = data + (size_t)y * f->stride + (size_t)sp.first * bpp;
      const uint16_t *al = o->alpha + (size_t)y * w + sp.first;
      const uint8_t *co = o->colour + ((size_t)y * w + sp.first) * 3;
      mix_run(px + r, bpp, al, co, 3, n);
      mix_run(px + g, bpp, al, co + 1, 3, n);
      mix_run(px + b, bpp, al, co + 2, 3, n);
    }
    return;
  }
  const int cw = (w + 1) / 2, ch = fap_chroma_height(f->format, h);
  const int yuy2 = f->format == FAP_PIXEL_YUY2;
  for (int y = 0; y < h; y++) {
    const span sp = o->rows[y];
    if (sp.first > sp.last)
      continue;
    const int n = sp.last - sp.first + 1;
    const uint16_t *al = o->alpha + (size_t)y * w + sp.first;
    const uint8_t *co = o->colour + (size_t)y * w + sp.first;
    uint8_t *row = data + (size_t)y * f->stride;
    if (yuy2)
      mix_run(row + 2 * (size_t)sp.first, 2, al, co, 1, n);
    else
      mix_run(row + sp.first, 1, al, co, 1, n);
  }
  for (int cy = 0; cy < ch; cy++) {
    const span sp = o->crows[cy];
    if (sp.first > sp.last)
      continue;
    const int n = sp.last - sp.first + 1;
    const uint16_t *al = o->calpha + (size_t)cy * cw + sp.first;
    const uint8_t *uv = o->cuv + ((size_t)cy * cw + sp.first) * 2;
    if (yuy2) {
      uint8_t *pair = data + (size_t)cy * f->stride + 4 * (size_t)sp.first;
      mix_run(pair + 1, 4, al, uv, 2, n);
      mix_run(pair + 3, 4, al, uv + 1, 2, n);
    } else if (f->format == FAP_PIXEL_NV12) {
      uint8_t *p = (uint8_t *)f->plane[0] + (size_t)cy * f->plane_stride[0] + 2 * (size_t)sp.first;
      mix_run(p, 2, al, uv, 2, n);
      mix_run(p + 1, 2, al, uv + 1, 2, n);
    } else { /* I420 */
      mix_run((uint8_t *)f->plane[0] + (size_t)cy * f->plane_stride[0] + sp.first, 1, al, uv, 2,
              n);
      mix_run((uint8_t *)f->plane[1] + (size_t)cy * f->plane_stride[1] + sp.first, 1, al,
              uv + 1, 2, n);
    }
  }
}

fap_status fap_overlay_draw(fap_overlay *o, const fap_frame *frame, const float *map,
                            int map_size, uint64_t map_id, const fap_blend *blend) {
  if (!o)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "fap_overlay_draw: no overlay");
  fap_status s = fap_frame_check(frame, "fap_overlay_draw");
  if (s || (s = fap_blend_check(blend)))
    return s;
  if (!map || map_size < 1)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "fap_overlay_draw: no map");
  if (!same_key(o, frame, map_size, map_id, blend)) {
    if ((s = build(o, frame, map, map_size, blend)))
      return s;
    o->map_id = map_id;
  }
  draw(o, frame);
  return FAP_OK;
}
