/* Connected components by an explicit-stack flood fill: one pass over the map,
 * scratch buffers reused until the map size changes. */
#include "fap_regions.h"

#include <string.h>

void
fap_regions_init (FapRegionFinder * f)
{
  memset (f, 0, sizeof *f);
  f->regions = g_array_new (FALSE, FALSE, sizeof (FapRegion));
}

void
fap_regions_clear (FapRegionFinder * f)
{
  g_free (f->seen);
  g_free (f->stack);
  if (f->regions)
    g_array_unref (f->regions);
  memset (f, 0, sizeof *f);
}

static gint
by_peak_desc (gconstpointer a, gconstpointer b)
{
  const FapRegion *ra = a, *rb = b;
  return (ra->peak < rb->peak) - (ra->peak > rb->peak);
}

guint
fap_regions_find (FapRegionFinder * f, const gfloat * map, guint w, guint h,
    gsize stride, gfloat threshold, guint max_regions)
{
  gsize cells = (gsize) w * h;
  guint x, y;

  g_array_set_size (f->regions, 0);
  if (!map || cells == 0)
    return 0;
  if (f->cells < cells) {
    g_free (f->seen);
    g_free (f->stack);
    f->seen = g_malloc (cells);
    f->stack = g_malloc (cells * sizeof (guint32));
    f->cells = cells;
  }
  memset (f->seen, 0, cells);

#define AT(xx, yy) (*(const gfloat *) ((const guint8 *) map + (gsize) (yy) * stride + (gsize) (xx) * sizeof (gfloat)))
  for (y = 0; y < h; y++) {
    for (x = 0; x < w; x++) {
      gsize top = 0;
      FapRegion r;
      gdouble sum = 0.0;

      if (f->seen[(gsize) y * w + x] || !(AT (x, y) > threshold))
        continue;
      r.x0 = r.x1 = x;
      r.y0 = r.y1 = y;
      r.peak = AT (x, y);
      r.area = 0;
      f->seen[(gsize) y * w + x] = 1;
      f->stack[top++] = (guint32) ((gsize) y * w + x);
      while (top) {
        guint32 c = f->stack[--top];
        gint cx = c % w, cy = c / w, dx, dy;
        gfloat v = AT (cx, cy);

        sum += v;
        r.area++;
        r.peak = MAX (r.peak, v);
        r.x0 = MIN (r.x0, cx);
        r.x1 = MAX (r.x1, cx);
        r.y0 = MIN (r.y0, cy);
        r.y1 = MAX (r.y1, cy);
        for (dy = -1; dy <= 1; dy++) {
          for (dx = -1; dx <= 1; dx++) {
            gint nx = cx + dx, ny = cy + dy;
            gsize ni;
            if (nx < 0 || ny < 0 || nx >= (gint) w || ny >= (gint) h)
              continue;
            ni = (gsize) ny * w + nx;
            if (f->seen[ni] || !(AT (nx, ny) > threshold))
              continue;
            f->seen[ni] = 1;
            f->stack[top++] = (guint32) ni;
          }
        }
      }
      r.mean = (gfloat) (sum / r.area);
      g_array_append_val (f->regions, r);
    }
  }
#undef AT
  g_array_sort (f->regions, by_peak_desc);
  if (max_regions && f->regions->len > max_regions)
    g_array_set_size (f->regions, max_regions);
  return f->regions->len;
}

void
fap_region_to_frame (const FapRegion * r, guint map_w, guint map_h,
    guint frame_w, guint frame_h, gint * x, gint * y, guint * w, guint * h)
{
  /* floor of the first covered pixel, ceil of the end */
  guint64 px0 = (guint64) r->x0 * frame_w / map_w;
  guint64 py0 = (guint64) r->y0 * frame_h / map_h;
  guint64 px1 = ((guint64) (r->x1 + 1) * frame_w + map_w - 1) / map_w;
  guint64 py1 = ((guint64) (r->y1 + 1) * frame_h + map_h - 1) / map_h;

  *x = (gint) px0;
  *y = (gint) py0;
  *w = (guint) MAX (px1 - px0, 1);
  *h = (guint) MAX (py1 - py0, 1);
}

gdouble
fap_map_cell_mean (const gfloat * map, gsize stride, guint w, guint h,
    guint n, guint i, guint j)
{
  guint y0 = j * h / n, y1 = (j + 1) * h / n;
  guint x0 = i * w / n, x1 = (i + 1) * w / n, x, y;
  gdouble sum = 0;

  for (y = y0; y < y1; y++) {
    const gfloat *row = (const gfloat *) ((const guint8 *) map + y * stride);
    for (x = x0; x < x1; x++)
      sum += row[x];
  }
  return sum / ((gdouble) (y1 - y0) * (x1 - x0));
}
