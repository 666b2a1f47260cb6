/* Per-pixel arithmetic shared by the CPU code (core/pixel.c, the CPU
 * backend) and the CUDA kernels (kernels/), so both compute bit-identical
 * results: YUV -> RGB, the heatmap colour and blend, bilinear sampling.
 *
 * Plain C99 that also compiles as CUDA C++ (FAP_HD adds __host__ __device__)
 * and as host C++ (the kernel emulator). Integer fixed point where results
 * are bytes; where floats decide a byte, every product and sum is written
 * with FAP_FMUL / FAP_FADD, which on the device are the round-to-nearest
 * intrinsics that the compiler may not contract into an FMA, so the GPU
 * rounds exactly as the CPU does (x86-64 baseline C has no FMA contraction). */
#ifndef FAP_PIXEL_MATH_H
#define FAP_PIXEL_MATH_H

#include "fap.h"

#include <stddef.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define FAP_HD static __host__ __device__ __forceinline__
#else
#define FAP_HD static inline
#endif

#if defined(__CUDA_ARCH__)
#define FAP_FMUL(a, b) __fmul_rn((a), (b))
#define FAP_FADD(a, b) __fadd_rn((a), (b))
#define FAP_FSUB(a, b) __fsub_rn((a), (b))
#else
#define FAP_FMUL(a, b) ((float)((a) * (b)))
#define FAP_FADD(a, b) ((float)((a) + (b)))
#define FAP_FSUB(a, b) ((float)((a) - (b)))
#endif

/* ---- YUV <-> RGB, 14-bit fixed point --------------------------------------- */

#define FAP_YUV_SHIFT 14
/* keeps sums non-negative before the shift (the most negative is ~ -3.7e6) */
#define FAP_YUV_BIAS (1 << 23)

typedef struct {
  int32_t y0, ys;     /* luma offset (16 or 0) and scale */
  int32_t rv, gu, gv, bu; /* chroma contributions (gu, gv subtract) */
} fap_yuv2rgb;

typedef struct {
  int32_t yr, yg, yb, y0;      /* Y = y0 + (yr R + yg G + yb B) >> 14 */
  int32_t ur, ug, ub, vr, vg, vb; /* U, V = 128 + (.. R + .. G + .. B) >> 14 */
} fap_rgb2yuv;

static inline int32_t fap_yuv_round(double v) { return (int32_t)(v < 0 ? v - 0.5 : v + 0.5); }

/* Host only (double math): the coefficients of a matrix (fap_yuv_matrix) and range. */
static inline void fap_yuv_coefficients(int matrix, int full_range, fap_yuv2rgb *to_rgb,
                                        fap_rgb2yuv *to_yuv) {
  const double kr = matrix == FAP_YUV_BT2020 ? 0.2627 : matrix == FAP_YUV_BT709 ? 0.2126 : 0.299;
  const double kb = matrix == FAP_YUV_BT2020 ? 0.0593 : matrix == FAP_YUV_BT709 ? 0.0722 : 0.114;
  const double kg = 1.0 - kr - kb, one = (double)(1 << FAP_YUV_SHIFT);
  const double ys = full_range ? 1.0 : 255.0 / 219.0, cs = full_range ? 1.0 : 255.0 / 224.0;
  if (to_rgb) {
    to_rgb->y0 = full_range ? 0 : 16;
    to_rgb->ys = fap_yuv_round(ys * one);
    to_rgb->rv = fap_yuv_round(2.0 * (1.0 - kr) * cs * one);
    to_rgb->bu = fap_yuv_round(2.0 * (1.0 - kb) * cs * one);
    to_rgb->gu = fap_yuv_round(2.0 * (1.0 - kb) * kb / kg * cs * one);
    to_rgb->gv = fap_yuv_round(2.0 * (1.0 - kr) * kr / kg * cs * one);
  }
  if (to_yuv) {
    const double yl = full_range ? 1.0 : 219.0 / 255.0, cl = full_range ? 1.0 : 224.0 / 255.0;
    to_yuv->y0 = full_range ? 0 : 16;
    to_yuv->yr = fap_yuv_round(kr * yl * one);
    to_yuv->yg = fap_yuv_round(kg * yl * one);
    to_yuv->yb = fap_yuv_round(kb * yl * one);
    /* U = (B - Y) / (2 (1 - kb)), V = (R - Y) / (2 (1 - kr)) */
    to_yuv->ur = fap_yuv_round(-kr / (2.0 * (1.0 - kb)) * cl * one);
    to_yuv->ug = fap_yuv_round(-kg / (2.0 * (1.0 - kb)) * cl * one);
    to_yuv->ub = fap_yuv_round(0.5 * cl * one);
    to_yuv->vr = fap_yuv_round(0.5 * cl * one);
    to_yuv->vg = fap_yuv_round(-kg / (2.0 * (1.0 - kr)) * cl * one);
    to_yuv->vb = fap_yuv_round(-kb / (2.0 * (1.0 - kr)) * cl * one);
  }
}

FAP_HD uint8_t fap_clamp_u8(int32_t v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }

/* (v + bias + half) >> 14 without relying on the shift of negative numbers */
FAP_HD int32_t fap_yuv_descale(int32_t v) {
  return ((v + FAP_YUV_BIAS + (1 << (FAP_YUV_SHIFT - 1))) >> FAP_YUV_SHIFT) -
         (FAP_YUV_BIAS >> FAP_YUV_SHIFT);
}

FAP_HD void fap_yuv_to_rgb(const fap_yuv2rgb *k, int y, int u, int v, uint8_t rgb[3]) {
  const int32_t yy = k->ys * (y - k->y0), uu = u - 128, vv = v - 128;
  rgb[0] = fap_clamp_u8(fap_yuv_descale(yy + k->rv * vv));
  rgb[1] = fap_clamp_u8(fap_yuv_descale(yy - k->gu * uu - k->gv * vv));
  rgb[2] = fap_clamp_u8(fap_yuv_descale(yy + k->bu * uu));
}

FAP_HD void fap_rgb_to_yuv(const fap_rgb2yuv *k, const uint8_t rgb[3], uint8_t yuv[3]) {
  const int32_t r = rgb[0], g = rgb[1], b = rgb[2];
  yuv[0] = fap_clamp_u8(k->y0 + fap_yuv_descale(k->yr * r + k->yg * g + k->yb * b));
  yuv[1] = fap_clamp_u8(128 + fap_yuv_descale(k->ur * r + k->ug * g + k->ub * b));
  yuv[2] = fap_clamp_u8(128 + fap_yuv_descale(k->vr * r + k->vg * g + k->vb * b));
}

/* ---- bilinear, align_corners = false (as core/resample.c) ------------------- */

/* Source taps for output index i of `out` samples taken from `in`. The same
 * float operations, in the same order, as fap_bilinear_coord. */
FAP_HD void fap_bilinear_tap(int i, int in, int out, int *i0, int *i1, float *w1) {
  float scale = (float)in / (float)out;
  float x = FAP_FSUB(FAP_FMUL(FAP_FADD((float)i, 0.5f), scale), 0.5f);
  if (x < 0.0f)
    x = 0.0f;
  int lo = (int)x;
  if (lo > in - 1)
    lo = in - 1;
  *i0 = lo;
  *i1 = lo < in - 1 ? lo + 1 : lo;
  *w1 = FAP_FSUB(x, (float)lo);
}

/* (1 - wy) ((1 - wx) a + wx b) + wy ((1 - wx) c + wx d), in that order */
FAP_HD float fap_bilinear_mix(float a, float b, float c, float d, float wx, float wy) {
  const float ux = FAP_FSUB(1.0f, wx), uy = FAP_FSUB(1.0f, wy);
  const float top = FAP_FADD(FAP_FMUL(ux, a), FAP_FMUL(wx, b));
  const float bottom = FAP_FADD(FAP_FMUL(ux, c), FAP_FMUL(wx, d));
  return FAP_FADD(FAP_FMUL(uy, top), FAP_FMUL(wy, bottom));
}

/* Half-sample symmetric border (d c b a | a b c d | d c b a), any overshoot;
 * the same as resample.h's fap_mirror_index. */
FAP_HD int fap_mirror(int i, int n) {
  const int period = 2 * n;
  int m = i % period;
  if (m < 0)
    m += period;
  return m < n ? m : period - 1 - m;
}

/* The S x S map at frame pixel (x, y) of a w x h frame. */
FAP_HD float fap_map_sample(const float *map, int size, int x, int y, int w, int h) {
  int x0, x1, y0, y1;
  float wx, wy;
  fap_bilinear_tap(x, size, w, &x0, &x1, &wx);
  fap_bilinear_tap(y, size, h, &y0, &y1, &wy);
  return fap_bilinear_mix(map[y0 * size + x0], map[y0 * size + x1], map[y1 * size + x0],
                          map[y1 * size + x1], wx, wy);
}

/* ---- heatmap colour and blend ------------------------------------------------- */

/* Jet colour map of m in [0, 1]: r, g, b = clamp(1.5 - |4 m - k|), k = 3, 2, 1. */
FAP_HD uint8_t fap_jet_channel(float m, float k) {
  float v = FAP_FSUB(FAP_FMUL(4.0f, m), k);
  v = FAP_FSUB(1.5f, v < 0.0f ? -v : v);
  v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
  return (uint8_t)(int)FAP_FADD(FAP_FMUL(v, 255.0f), 0.5f);
}

FAP_HD void fap_jet(float m, uint8_t rgb[3]) {
  rgb[0] = fap_jet_channel(m, 3.0f);
  rgb[1] = fap_jet_channel(m, 2.0f);
  rgb[2] = fap_jet_channel(m, 1.0f);
}

/* The blend's constants as the per-pixel code takes them (fap_blend with the
 * colour scale's reciprocal worked out once, on the host). */
typedef struct {
  float opacity, threshold;
  float lo, inv_range; /* t = (m - range_min) / (range_max - range_min) */
} fap_blend_params;

/* Position of map value m on the fixed colour scale, clamped to [0, 1]. */
FAP_HD float fap_blend_level(float m, const fap_blend_params *p) {
  const float t = FAP_FMUL(FAP_FSUB(m, p->lo), p->inv_range);
  return t < 0.0f ? 0.0f : t > 1.0f ? 1.0f : t;
}

/* alpha in 1/256 units of level t (0 = leave the pixel): opacity * t */
FAP_HD int fap_blend_alpha(float t, float opacity) {
  return (int)FAP_FADD(FAP_FMUL(FAP_FMUL(opacity, t), 256.0f), 0.5f);
}

/* The colour and alpha a map value paints: nothing (0) at or below the
 * threshold and for NaN; else jet(t) at alpha opacity * t. */
FAP_HD int fap_blend_paint(float m, const fap_blend_params *p, uint8_t rgb[3]) {
  if (!(m > p->threshold))
    return 0;
  const float t = fap_blend_level(m, p);
  const int a = fap_blend_alpha(t, p->opacity);
  if (a)
    fap_jet(t, rgb);
  return a;
}

FAP_HD uint8_t fap_blend_channel(uint8_t pixel, uint8_t colour, int alpha) {
  return (uint8_t)((pixel * (256 - alpha) + colour * alpha + 128) >> 8);
}

/* ---- frame access -------------------------------------------------------------- */

/* A frame's planes (host or device memory) with its conversion constants.
 * Coordinates are the whole frame's; crop is the rectangle a run reads and
 * a blend draws (fap_frame.crop resolved: the whole frame when absent). */
typedef struct {
  int format, width, height;
  uint8_t *p[3]; /* data, plane[0], plane[1] */
  size_t s[3];
  fap_yuv2rgb to_rgb;
  fap_rgb2yuv to_yuv;
  int crop_x, crop_y, crop_w, crop_h;
} fap_pixels;

/* Packed RGB family: bytes per pixel and the offsets of R, G, B. */
FAP_HD int fap_packed_layout(int format, int *r, int *g, int *b) {
  switch (format) {
  case FAP_PIXEL_RGB: *r = 0, *g = 1, *b = 2; return 3;
  case FAP_PIXEL_BGR: *r = 2, *g = 1, *b = 0; return 3;
  case FAP_PIXEL_RGBA: case FAP_PIXEL_RGBX: *r = 0, *g = 1, *b = 2; return 4;
  case FAP_PIXEL_BGRA: case FAP_PIXEL_BGRX: *r = 2, *g = 1, *b = 0; return 4;
  case FAP_PIXEL_XRGB: *r = 1, *g = 2, *b = 3; return 4;
  case FAP_PIXEL_XBGR: *r = 3, *g = 2, *b = 1; return 4;
  default: *r = *g = *b = 0; return 0;
  }
}

/* Byte addresses of the Y, U, V samples covering pixel (x, y) of a YUV frame. */
FAP_HD void fap_yuv_addresses(const fap_pixels *f, int x, int y, uint8_t **py, uint8_t **pu,
                              uint8_t **pv) {
  const int cx = x >> 1, cy = y >> 1;
  switch (f->format) {
  case FAP_PIXEL_NV12:
    *py = f->p[0] + (size_t)y * f->s[0] + x;
    *pu = f->p[1] + (size_t)cy * f->s[1] + 2 * cx;
    *pv = *pu + 1;
    return;
  case FAP_PIXEL_I420:
    *py = f->p[0] + (size_t)y * f->s[0] + x;
    *pu = f->p[1] + (size_t)cy * f->s[1] + cx;
    *pv = f->p[2] + (size_t)cy * f->s[2] + cx;
    return;
  default: { /* YUY2: Y0 U Y1 V */
    uint8_t *pair = f->p[0] + (size_t)y * f->s[0] + 4 * (size_t)cx;
    *py = pair + 2 * (x & 1);
    *pu = pair + 1;
    *pv = pair + 3;
    return;
  }
  }
}

FAP_HD int fap_format_is_yuv(int format) {
  return format == FAP_PIXEL_NV12 || format == FAP_PIXEL_I420 || format == FAP_PIXEL_YUY2;
}

FAP_HD void fap_fetch_rgb(const fap_pixels *f, int x, int y, uint8_t rgb[3]) {
  if (fap_format_is_yuv(f->format)) {
    uint8_t *py, *pu, *pv;
    fap_yuv_addresses(f, x, y, &py, &pu, &pv);
    fap_yuv_to_rgb(&f->to_rgb, *py, *pu, *pv, rgb);
    return;
  }
  int r, g, b;
  const int bpp = fap_packed_layout(f->format, &r, &g, &b);
  const uint8_t *px = f->p[0] + (size_t)y * f->s[0] + (size_t)x * bpp;
  rgb[0] = px[r];
  rgb[1] = px[g];
  rgb[2] = px[b];
}

/* Blend pass 1, per pixel (x, y) of the crop, in frame coordinates: packed
 * RGB (all three channels) or luma; the map covers the crop. */
FAP_HD void fap_blend_pixel(const fap_pixels *f, const float *map, int size, int x, int y,
                            const fap_blend_params *bp) {
  const float m = fap_map_sample(map, size, x - f->crop_x, y - f->crop_y, f->crop_w, f->crop_h);
  uint8_t c[3];
  const int a = fap_blend_paint(m, bp, c);
  if (!a)
    return;
  if (fap_format_is_yuv(f->format)) {
    uint8_t yuv[3], *py, *pu, *pv;
    fap_rgb_to_yuv(&f->to_yuv, c, yuv);
    fap_yuv_addresses(f, x, y, &py, &pu, &pv);
    *py = fap_blend_channel(*py, yuv[0], a);
    return;
  }
  int r, g, b;
  const int bpp = fap_packed_layout(f->format, &r, &g, &b);
  uint8_t *px = f->p[0] + (size_t)y * f->s[0] + (size_t)x * bpp;
  px[r] = fap_blend_channel(px[r], c[0], a);
  px[g] = fap_blend_channel(px[g], c[1], a);
  px[b] = fap_blend_channel(px[b], c[2], a);
}

/* Chroma samples of a YUV frame: (w+1)/2 x (h+1)/2 (4:2:0) or (w+1)/2 x h (YUY2). */
FAP_HD int fap_chroma_height(int format, int height) {
  return format == FAP_PIXEL_YUY2 ? height : (height + 1) / 2;
}

/* The chroma samples [*c0, *c1) along one axis whose pixels all lie in
 * [p0, p0 + n) of a side of `side` pixels, two pixels a sample (sample c
 * covers 2c and 2c + 1, the latter only when inside the side): a crop's
 * blend touches no chroma shared with a pixel outside it. */
FAP_HD void fap_chroma_span(int p0, int n, int side, int *c0, int *c1) {
  const int end = p0 + n;
  *c0 = (p0 + 1) >> 1;
  *c1 = end >= side ? (side + 1) >> 1 : end >> 1;
  if (*c1 < *c0)
    *c1 = *c0;
}

/* The chroma samples a blend of f's crop draws: columns [cx0, cx1), rows
 * [cy0, cy1) (YUY2: the crop's rows). */
FAP_HD void fap_chroma_range(const fap_pixels *f, int *cx0, int *cx1, int *cy0, int *cy1) {
  fap_chroma_span(f->crop_x, f->crop_w, f->width, cx0, cx1);
  if (f->format == FAP_PIXEL_YUY2) {
    *cy0 = f->crop_y;
    *cy1 = f->crop_y + f->crop_h;
  } else {
    fap_chroma_span(f->crop_y, f->crop_h, f->height, cy0, cy1);
  }
}

/* Blend pass 2 (YUV only), per chroma sample of fap_chroma_range: U and V
 * from the map at the sample's top-left pixel. */
FAP_HD void fap_blend_chroma(const fap_pixels *f, const float *map, int size, int cx, int cy,
                             const fap_blend_params *bp) {
  const int x = 2 * cx, y = f->format == FAP_PIXEL_YUY2 ? cy : 2 * cy;
  const float m = fap_map_sample(map, size, x - f->crop_x, y - f->crop_y, f->crop_w, f->crop_h);
  uint8_t c[3], yuv[3], *py, *pu, *pv;
  const int a = fap_blend_paint(m, bp, c);
  if (!a)
    return;
  fap_rgb_to_yuv(&f->to_yuv, c, yuv);
  fap_yuv_addresses(f, x, y, &py, &pu, &pv);
  *pu = fap_blend_channel(*pu, yuv[1], a);
  *pv = fap_blend_channel(*pv, yuv[2], a);
}

#endif
