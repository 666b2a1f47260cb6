/* The overlay is drawn from two small tables so that the per-frame cost is one
 * lookup and, where drawn, one blend per pixel: a per-cell table (colour in
 * the frame's space + opacity, rebuilt when the map or the parameters change)
 * and per-caps column/row -> cell indices. */
#include "fap_overlay.h"

#include <string.h>

void
fap_overlay_init (FapOverlay * o)
{
  memset (o, 0, sizeof *o);
}

void
fap_overlay_clear (FapOverlay * o)
{
  g_free (o->col_cell);
  g_free (o->row_cell);
  g_free (o->run);
  g_free (o->crun);
  g_free (o->cells);
  memset (o, 0, sizeof *o);
}

gboolean
fap_overlay_supports (GstVideoFormat f)
{
  switch (f) {
    case GST_VIDEO_FORMAT_RGB:
    case GST_VIDEO_FORMAT_BGR:
    case GST_VIDEO_FORMAT_RGBA:
    case GST_VIDEO_FORMAT_BGRA:
    case GST_VIDEO_FORMAT_RGBx:
    case GST_VIDEO_FORMAT_BGRx:
    case GST_VIDEO_FORMAT_xRGB:
    case GST_VIDEO_FORMAT_xBGR:
    case GST_VIDEO_FORMAT_NV12:
    case GST_VIDEO_FORMAT_I420:
    case GST_VIDEO_FORMAT_YUY2:
      return TRUE;
    default:
      return FALSE;
  }
}

void
fap_overlay_colour (gdouble t, guint8 rgb[3])
{
  /* jet: blue -> cyan -> green -> yellow -> red */
  gdouble r, g, b;

  t = CLAMP (t, 0.0, 1.0);
  r = CLAMP (MIN (4.0 * t - 1.5, -4.0 * t + 4.5), 0.0, 1.0);
  g = CLAMP (MIN (4.0 * t - 0.5, -4.0 * t + 3.5), 0.0, 1.0);
  b = CLAMP (MIN (4.0 * t + 0.5, -4.0 * t + 2.5), 0.0, 1.0);
  rgb[0] = (guint8) (r * 255.0 + 0.5);
  rgb[1] = (guint8) (g * 255.0 + 0.5);
  rgb[2] = (guint8) (b * 255.0 + 0.5);
}

void
fap_overlay_set_info (FapOverlay * o, const GstVideoInfo * info)
{
  gdouble kr = 0.299, kb = 0.114;
  gboolean yuv = GST_VIDEO_INFO_IS_YUV (info);
  gboolean full = info->colorimetry.range == GST_VIDEO_COLOR_RANGE_0_255;
  gint i;

  o->info = *info;
  o->have_info = TRUE;
  o->map_w = o->map_h = 0;      /* column / row tables rebuilt on next draw */
  o->cells_key = 0;
  if (yuv && !gst_video_color_matrix_get_Kr_Kb (info->colorimetry.matrix,
          &kr, &kb)) {
    kr = 0.299;
    kb = 0.114;
  }
  for (i = 0; i < 256; i++) {
    guint8 rgb[3];
    fap_overlay_colour (i / 255.0, rgb);
    if (!yuv) {
      memcpy (o->lut[i], rgb, 3);
    } else {
      gdouble r = rgb[0] / 255.0, g = rgb[1] / 255.0, b = rgb[2] / 255.0;
      gdouble yy = kr * r + (1.0 - kr - kb) * g + kb * b;
      gdouble u = (b - yy) / (2.0 * (1.0 - kb));
      gdouble v = (r - yy) / (2.0 * (1.0 - kr));
      gdouble ys = full ? 255.0 * yy : 16.0 + 219.0 * yy;
      gdouble us = 128.0 + (full ? 255.0 : 224.0) * u;
      gdouble vs = 128.0 + (full ? 255.0 : 224.0) * v;
      o->lut[i][0] = (guint8) CLAMP (ys + 0.5, 0, 255);
      o->lut[i][1] = (guint8) CLAMP (us + 0.5, 0, 255);
      o->lut[i][2] = (guint8) CLAMP (vs + 0.5, 0, 255);
    }
  }
}

static void
build_index (guint16 * idx, guint n, guint cells)
{
  guint i;
  /* the cell whose span holds the pixel centre: floor((i + 0.5) * S / n),
   * the same rule as gst_faprompt_meta_map_at () */
  for (i = 0; i < n; i++)
    idx[i] = (guint16) MIN (((guint64) i * 2 + 1) * cells / (2 * (guint64) n),
        cells - 1);
}

static gboolean
same_params (const FapOverlayParams * a, const FapOverlayParams * b)
{
  return a->threshold == b->threshold && a->vmin == b->vmin
      && a->vmax == b->vmax && a->alpha == b->alpha;
}

static void
build_cells (FapOverlay * o, const gfloat * map, guint w, guint h,
    gsize stride, const FapOverlayParams * p)
{
  gsize need = (gsize) w * h * 4;
  gdouble range = p->vmax - p->vmin;
  guint8 a = (guint8) CLAMP (p->alpha * 255.0 + 0.5, 0, 255);
  guint x, y;

  if (o->cells_size < need) {
    g_free (o->cells);
    o->cells = g_malloc (need);
    o->cells_size = need;
  }
  if (range <= 0.0)
    range = 1e-6;
  o->any = FALSE;
  for (y = 0; y < h; y++) {
    const gfloat *row = (const gfloat *) ((const guint8 *) map + y * stride);
    guint8 *c = o->cells + (gsize) y * w * 4;
    for (x = 0; x < w; x++, c += 4) {
      gfloat v = row[x];
      if (v > p->threshold && a > 0) {
        gdouble t = (v - p->vmin) / range;
        gint li = (gint) (CLAMP (t, 0.0, 1.0) * 255.0 + 0.5);
        c[0] = o->lut[li][0];
        c[1] = o->lut[li][1];
        c[2] = o->lut[li][2];
        c[3] = a;
        o->any = TRUE;
      } else {
        c[3] = 0;
      }
    }
  }
}

/* (dst * (255 - a) + src * a + 127) / 255, exact, for a in 0..255: an
 * exact division by 255 of t <= 65152 is (t + 1 + (t >> 8)) >> 8 */
static inline guint8
blend1 (guint dst, guint ia, guint sa)
{
  guint t = dst * ia + sa;
  return (guint8) ((t + 1 + (t >> 8)) >> 8);
}

/* One component of a row: pixels [run[c], run[c+1]) take cell c's colour
 * component k; @ps bytes between pixels. Constant colour per run keeps the
 * inner loop a plain multiply-add the compiler vectorises for ps = 1. */
static void
blend_row1 (guint8 * row, guint ps, const guint8 * cells, const guint32 * run,
    guint ncells, guint k)
{
  guint c;
  for (c = 0; c < ncells; c++) {
    const guint8 *cell = cells + 4 * c;
    guint a = cell[3], x0 = run[c], x1 = run[c + 1], x;
    guint ia, sa;
    if (!a || x0 == x1)
      continue;
    ia = 255u - a;
    sa = (guint) cell[k] * a + 127u;
    if (ps == 1) {
      guint8 *p = row + x0;
      for (x = x0; x < x1; x++, p++)
        *p = blend1 (*p, ia, sa);
    } else {
      guint8 *p = row + (gsize) x0 * ps;
      for (x = x0; x < x1; x++, p += ps)
        *p = blend1 (*p, ia, sa);
    }
  }
}

static void
blend_row_rgb (guint8 * row, guint ps, guint o0, guint o1, guint o2,
    const guint8 * cells, const guint32 * run, guint ncells)
{
  guint c;
  for (c = 0; c < ncells; c++) {
    const guint8 *cell = cells + 4 * c;
    guint a = cell[3], x0 = run[c], x1 = run[c + 1], x;
    guint ia, s0, s1, s2;
    guint8 *p;
    if (!a || x0 == x1)
      continue;
    ia = 255u - a;
    s0 = (guint) cell[0] * a + 127u;
    s1 = (guint) cell[1] * a + 127u;
    s2 = (guint) cell[2] * a + 127u;
    p = row + (gsize) x0 * ps;
    for (x = x0; x < x1; x++, p += ps) {
      p[o0] = blend1 (p[o0], ia, s0);
      p[o1] = blend1 (p[o1], ia, s1);
      p[o2] = blend1 (p[o2], ia, s2);
    }
  }
}

static inline const guint8 *
cell_row (const FapOverlay * o, guint y)
{
  return o->cells + (gsize) o->row_cell[y] * o->map_w * 4;
}

static void
draw_packed_rgb (FapOverlay * o, GstVideoFrame * f)
{
  const GstVideoFormatInfo *fi = f->info.finfo;
  guint height = GST_VIDEO_FRAME_HEIGHT (f), y;
  guint8 *data = GST_VIDEO_FRAME_PLANE_DATA (f, 0);
  gint stride = GST_VIDEO_FRAME_PLANE_STRIDE (f, 0);
  guint ps = GST_VIDEO_FORMAT_INFO_PSTRIDE (fi, 0);

  for (y = 0; y < height; y++)
    blend_row_rgb (data + (gsize) y * stride, ps,
        GST_VIDEO_FORMAT_INFO_POFFSET (fi, 0),
        GST_VIDEO_FORMAT_INFO_POFFSET (fi, 1),
        GST_VIDEO_FORMAT_INFO_POFFSET (fi, 2), cell_row (o, y), o->run,
        o->map_w);
}

/* 4:2:0 planes: luma per pixel; each chroma sample takes the cell of its
 * top-left luma pixel (the same rule as the chroma runs). */
static void
draw_420 (FapOverlay * o, GstVideoFrame * f, guint8 * u, gint ustride,
    guint8 * v, gint vstride, guint cps)
{
  guint height = GST_VIDEO_FRAME_HEIGHT (f), y;
  guint8 *luma = GST_VIDEO_FRAME_PLANE_DATA (f, 0);
  gint lstride = GST_VIDEO_FRAME_PLANE_STRIDE (f, 0);

  for (y = 0; y < height; y++)
    blend_row1 (luma + (gsize) y * lstride, 1, cell_row (o, y), o->run,
        o->map_w, 0);
  for (y = 0; y < (height + 1) / 2; y++) {
    const guint8 *cells = cell_row (o, 2 * y);
    blend_row1 (u + (gsize) y * ustride, cps, cells, o->crun, o->map_w, 1);
    blend_row1 (v + (gsize) y * vstride, cps, cells, o->crun, o->map_w, 2);
  }
}

static void
draw_yuy2 (FapOverlay * o, GstVideoFrame * f)
{
  guint height = GST_VIDEO_FRAME_HEIGHT (f), y;
  guint8 *data = GST_VIDEO_FRAME_PLANE_DATA (f, 0);
  gint stride = GST_VIDEO_FRAME_PLANE_STRIDE (f, 0);

  for (y = 0; y < height; y++) {
    guint8 *row = data + (gsize) y * stride;
    const guint8 *cells = cell_row (o, y);
    blend_row1 (row, 2, cells, o->run, o->map_w, 0);    /* Y0 Y1 ... */
    blend_row1 (row + 1, 4, cells, o->crun, o->map_w, 1);       /* U */
    blend_row1 (row + 3, 4, cells, o->crun, o->map_w, 2);       /* V */
  }
}

/* run[c] = first index i with idx[i] >= c, run[cells] = n */
static void
build_runs (guint32 * run, const guint16 * idx, guint n, guint cells)
{
  guint c = 0, i;
  for (i = 0; i < n; i++) {
    guint cell = idx[i];
    while (c <= cell)
      run[c++] = i;
  }
  while (c <= cells)
    run[c++] = n;
}

void
fap_overlay_draw (FapOverlay * o, GstVideoFrame * frame, guint64 key,
    const gfloat * map, guint w, guint h, gsize stride,
    const FapOverlayParams * p)
{
  guint width = GST_VIDEO_FRAME_WIDTH (frame);
  guint height = GST_VIDEO_FRAME_HEIGHT (frame);

  if (!o->have_info || !map || w == 0 || h == 0 || w > 65535 || h > 65535)
    return;
  if (o->map_w != w || o->map_h != h || !o->col_cell) {
    g_free (o->col_cell);
    g_free (o->row_cell);
    /* +1: the chroma loops read the cell of column/row 2*i of odd sizes */
    o->col_cell = g_new (guint16, GST_VIDEO_INFO_WIDTH (&o->info) + 1);
    o->row_cell = g_new (guint16, GST_VIDEO_INFO_HEIGHT (&o->info) + 1);
    build_index (o->col_cell, GST_VIDEO_INFO_WIDTH (&o->info), w);
    build_index (o->row_cell, GST_VIDEO_INFO_HEIGHT (&o->info), h);
    g_free (o->run);
    g_free (o->crun);
    o->run = g_new (guint32, w + 1);
    o->crun = g_new (guint32, w + 1);
    build_runs (o->run, o->col_cell, GST_VIDEO_INFO_WIDTH (&o->info), w);
    /* chroma sample i sits on luma column 2i */
    {
      guint wl = GST_VIDEO_INFO_WIDTH (&o->info), cw = (wl + 1) / 2, i;
      guint16 *cidx = g_new (guint16, cw);
      for (i = 0; i < cw; i++)
        cidx[i] = o->col_cell[2 * i];
      build_runs (o->crun, cidx, cw, w);
      g_free (cidx);
    }
    o->map_w = w;
    o->map_h = h;
    o->cells_key = 0;
  }
  if (width != (guint) GST_VIDEO_INFO_WIDTH (&o->info)
      || height != (guint) GST_VIDEO_INFO_HEIGHT (&o->info))
    return;
  if (o->cells_key != key || !same_params (&o->cells_params, p)) {
    build_cells (o, map, w, h, stride, p);
    o->cells_key = key;
    o->cells_params = *p;
  }
  if (!o->any)
    return;

  switch (GST_VIDEO_FRAME_FORMAT (frame)) {
    case GST_VIDEO_FORMAT_NV12:
    {
      guint8 *uv = GST_VIDEO_FRAME_PLANE_DATA (frame, 1);
      gint s = GST_VIDEO_FRAME_PLANE_STRIDE (frame, 1);
      draw_420 (o, frame, uv, s, uv + 1, s, 2);
      break;
    }
    case GST_VIDEO_FORMAT_I420:
      draw_420 (o, frame, GST_VIDEO_FRAME_PLANE_DATA (frame, 1),
          GST_VIDEO_FRAME_PLANE_STRIDE (frame, 1),
          GST_VIDEO_FRAME_PLANE_DATA (frame, 2),
          GST_VIDEO_FRAME_PLANE_STRIDE (frame, 2), 1);
      break;
    case GST_VIDEO_FORMAT_YUY2:
      draw_yuy2 (o, frame);
      break;
    default:
      draw_packed_rgb (o, frame);
      break;
  }
}
