/* Connected regions of an anomaly map above a threshold (8-connectivity). */
#ifndef FAP_REGIONS_H
#define FAP_REGIONS_H

#include <glib.h>

typedef struct {
  /* bounding box in map cells, inclusive */
  gint x0, y0, x1, y1;
  gfloat peak;                  /* highest map value in the region */
  gfloat mean;                  /* mean map value over its cells */
  guint area;                   /* cells */
} FapRegion;

typedef struct {
  guint8 *seen;                 /* w * h, scratch */
  guint32 *stack;               /* w * h cell indices, scratch */
  gsize cells;                  /* size of the scratch buffers */
  GArray *regions;              /* FapRegion, the last result */
} FapRegionFinder;

void fap_regions_init (FapRegionFinder * f);
void fap_regions_clear (FapRegionFinder * f);

/* Finds the regions of @map (w x h floats, @stride bytes a row) whose cells
 * are > @threshold; keeps the @max_regions with the highest peaks (all when
 * 0), sorted by descending peak. Returns the number found (after the cap). */
guint fap_regions_find (FapRegionFinder * f, const gfloat * map, guint w,
    guint h, gsize stride, gfloat threshold, guint max_regions);

/* Bounding box of @r in frame pixels for a map stretched over a
 * frame_w x frame_h rectangle: cell c covers pixels [c*W/S, (c+1)*W/S). */
void fap_region_to_frame (const FapRegion * r, guint map_w, guint map_h,
    guint frame_w, guint frame_h, gint * x, gint * y, guint * w, guint * h);

/* Mean of the map (w x h floats, @stride bytes a row) over coarse cell
 * (@i, @j) of an n x n grid: cell i covers columns [i*w/n, (i+1)*w/n), rows
 * likewise. What the RTP header extension sends and fapromptpublish's
 * include-map writes. */
gdouble fap_map_cell_mean (const gfloat * map, gsize stride, guint w, guint h,
    guint n, guint i, guint j);

#endif
