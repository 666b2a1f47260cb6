#include "mask.h"

#include "imageio.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* PNG bit depth from the IHDR chunk, 0 when not a PNG or unreadable. */
static int png_bit_depth(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return 0;
  uint8_t h[25];
  int depth = 0;
  if (fread(h, 1, sizeof h, f) == sizeof h && memcmp(h, "\x89PNG\r\n\x1a\n", 8) == 0 &&
      memcmp(h + 12, "IHDR", 4) == 0)
    depth = h[24];
  fclose(f);
  return depth;
}

uint8_t *mask_load(const char *path, int *width, int *height, GError **error) {
  if (png_bit_depth(path) == 16) {
    g_set_error(error, TOOLS_ERROR, 0,
                "16-bit PNG masks are not supported (convert it to 8 bits, e.g. "
                "PIL: Image.open(p).point(lambda v: 255 if v else 0).convert('L'))");
    return NULL;
  }
  GdkPixbuf *pb = gdk_pixbuf_new_from_file(path, error);
  if (!pb)
    return NULL;
  const int ch = gdk_pixbuf_get_n_channels(pb);
  if (gdk_pixbuf_get_bits_per_sample(pb) != 8 || (ch != 3 && ch != 4)) {
    g_set_error(error, TOOLS_ERROR, 0, "decoded to an unsupported layout (%d channels, %d bits)",
                ch, gdk_pixbuf_get_bits_per_sample(pb));
    g_object_unref(pb);
    return NULL;
  }
  const int w = gdk_pixbuf_get_width(pb), h = gdk_pixbuf_get_height(pb);
  const int stride = gdk_pixbuf_get_rowstride(pb);
  const uint8_t *px = gdk_pixbuf_read_pixels(pb);
  uint8_t *m = g_malloc((size_t)w * h);
  for (int y = 0; y < h; y++) {
    const uint8_t *row = px + (size_t)y * stride;
    for (int x = 0; x < w; x++) {
      const uint8_t *p = row + (size_t)ch * x;
      uint32_t l = ((uint32_t)p[0] * 19595 + (uint32_t)p[1] * 38470 + (uint32_t)p[2] * 7471 +
                    0x8000) >> 16;
      m[(size_t)y * w + x] = l > 0 ? 255 : 0;
    }
  }
  g_object_unref(pb);
  *width = w;
  *height = h;
  return m;
}

/* ---- PIL Resample.c, 8 bits per channel ------------------------------------ */

#define PRECISION_BITS (32 - 8 - 2)

typedef struct {
  int ksize;
  int *bounds; /* [out][2]: first input index, count */
  int32_t *kk; /* [out][ksize] fixed-point coefficients */
} coeffs;

static double bilinear_filter(double x) {
  if (x < 0.0)
    x = -x;
  if (x < 1.0)
    return 1.0 - x;
  return 0.0;
}

/* precompute_coeffs + normalize_coeffs_8bpc for box [0, in_size). */
static void make_coeffs(int in_size, int out_size, coeffs *c) {
  const double support_1 = 1.0;
  double scale = (double)in_size / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
  double support = support_1 * filterscale;
  int ksize = (int)ceil(support) * 2 + 1;
  double *k = g_new(double, ksize);
  c->ksize = ksize;
  c->bounds = g_new(int, 2 * out_size);
  c->kk = g_new0(int32_t, (size_t)out_size * ksize);
  for (int xx = 0; xx < out_size; xx++) {
    double center = (xx + 0.5) * scale;
    double ww = 0.0, ss = 1.0 / filterscale;
    int xmin = (int)(center - support + 0.5);
    if (xmin < 0)
      xmin = 0;
    int xmax = (int)(center + support + 0.5);
    if (xmax > in_size)
      xmax = in_size;
    xmax -= xmin;
    for (int x = 0; x < xmax; x++) {
      double w = bilinear_filter((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; x++) {
      if (ww != 0.0)
        k[x] /= ww;
      double v = k[x];
      c->kk[(size_t)xx * ksize + x] =
          v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS)) : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
    }
    c->bounds[2 * xx] = xmin;
    c->bounds[2 * xx + 1] = xmax;
  }
  g_free(k);
}

static void free_coeffs(coeffs *c) {
  g_free(c->bounds);
  g_free(c->kk);
}

static inline uint8_t clip8(int32_t in) {
  if (in >= (1 << PRECISION_BITS << 8))
    return 255;
  if (in <= 0)
    return 0;
  return (uint8_t)(in >> PRECISION_BITS);
}

void mask_resize_bilinear(const uint8_t *src, int width, int height, uint8_t *dst, int out_w,
                          int out_h) {
  if (width == out_w && height == out_h) { /* Image.resize returns a copy */
    memcpy(dst, src, (size_t)width * height);
    return;
  }
  coeffs ch, cv;
  make_coeffs(width, out_w, &ch);
  make_coeffs(height, out_h, &cv);
  const uint8_t *in = src;
  int in_w = width;
  uint8_t *tmp = NULL;
  int first = cv.bounds[0];
  int last = cv.bounds[2 * out_h - 2] + cv.bounds[2 * out_h - 1];
  if (width != out_w) {
    /* Horizontal pass over the rows the vertical pass will read. */
    int rows = last - first;
    tmp = g_malloc((size_t)out_w * rows);
    for (int y = 0; y < rows; y++) {
      const uint8_t *r = src + (size_t)(y + first) * width;
      for (int xx = 0; xx < out_w; xx++) {
        const int xmin = ch.bounds[2 * xx], xmax = ch.bounds[2 * xx + 1];
        const int32_t *k = ch.kk + (size_t)xx * ch.ksize;
        int32_t ss0 = 1 << (PRECISION_BITS - 1);
        for (int x = 0; x < xmax; x++)
          ss0 += r[x + xmin] * k[x];
        tmp[(size_t)y * out_w + xx] = clip8(ss0);
      }
    }
    in = tmp;
    in_w = out_w;
    for (int i = 0; i < out_h; i++)
      cv.bounds[2 * i] -= first;
  }
  if (height != out_h) {
    for (int yy = 0; yy < out_h; yy++) {
      const int ymin = cv.bounds[2 * yy], ymax = cv.bounds[2 * yy + 1];
      const int32_t *k = cv.kk + (size_t)yy * cv.ksize;
      for (int xx = 0; xx < in_w; xx++) {
        int32_t ss0 = 1 << (PRECISION_BITS - 1);
        for (int y = 0; y < ymax; y++)
          ss0 += in[(size_t)(y + ymin) * in_w + xx] * k[y];
        dst[(size_t)yy * out_w + xx] = clip8(ss0);
      }
    }
  } else {
    memcpy(dst, in, (size_t)out_w * out_h);
  }
  g_free(tmp);
  free_coeffs(&ch);
  free_coeffs(&cv);
}

void mask_binarize(const uint8_t *src, uint8_t *dst, size_t n) {
  for (size_t i = 0; i < n; i++)
    dst[i] = src[i] >= 128;
}

/* ---- 8-connected components (two-pass union-find) ------------------------- */

static int32_t find_root(int32_t *parent, int32_t x) {
  while (parent[x] != x) {
    parent[x] = parent[parent[x]];
    x = parent[x];
  }
  return x;
}

static void unite(int32_t *parent, int32_t a, int32_t b) {
  a = find_root(parent, a);
  b = find_root(parent, b);
  if (a < b)
    parent[b] = a;
  else if (b < a)
    parent[a] = b;
}

int mask_region_areas(const uint8_t *mask, int w, int h, uint32_t *area, int32_t *label) {
  /* label[i]: -1 background, else index of a provisional root pixel. */
  for (int y = 0; y < h; y++) {
    for (int x = 0; x < w; x++) {
      const int32_t i = y * w + x;
      if (!mask[i]) {
        label[i] = -1;
        continue;
      }
      label[i] = i;
      /* already visited neighbours: W, NW, N, NE */
      if (x > 0 && mask[i - 1])
        unite(label, i, i - 1);
      if (y > 0) {
        const int32_t up = i - w;
        if (x > 0 && mask[up - 1])
          unite(label, i, up - 1);
        if (mask[up])
          unite(label, i, up);
        if (x + 1 < w && mask[up + 1])
          unite(label, i, up + 1);
      }
    }
  }
  /* The union-find parents live in label[] itself: every foreground pixel
   * points (eventually) at its region's smallest index. Count areas at roots. */
  const size_t n = (size_t)w * h;
  for (size_t i = 0; i < n; i++)
    area[i] = 0;
  int regions = 0;
  for (size_t i = 0; i < n; i++) {
    if (label[i] < 0)
      continue;
    int32_t r = find_root(label, (int32_t)i);
    if (r == (int32_t)i)
      regions++;
    area[r]++;
  }
  for (size_t i = 0; i < n; i++)
    if (label[i] >= 0)
      area[i] = area[find_root(label, (int32_t)i)];
  return regions;
}
