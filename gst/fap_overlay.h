/* Heatmap overlay: blends a colour-mapped anomaly map into a video frame in
 * its own format (packed RGB family, NV12, I420, YUY2), only where the map
 * exceeds a threshold, on a fixed value range (never per-frame min-max). */
#ifndef FAP_OVERLAY_H
#define FAP_OVERLAY_H

#include <gst/video/video.h>

typedef struct {
  gfloat threshold;             /* cells > threshold are drawn */
  gfloat vmin, vmax;            /* value range mapped onto the colour map */
  gdouble alpha;                /* opacity of the colour, 0..1 */
} FapOverlayParams;

typedef struct {
  /* per caps and map size */
  GstVideoInfo info;
  gboolean have_info;
  guint map_w, map_h;
  guint16 *col_cell;            /* frame column -> map column */
  guint16 *row_cell;            /* frame row -> map row */
  /* runs of frame columns (luma / packed pixels) and of chroma columns
   * (2x subsampled: the cell of the pixel 2i) that fall in one map column:
   * map column c covers [run[c], run[c + 1]) */
  guint32 *run;
  guint32 *crun;
  /* colour map in the frame's colour space: 256 entries of c0, c1, c2 */
  guint8 lut[256][3];
  /* per map and params: c0, c1, c2, a (a = 0: not drawn), map_w * map_h */
  guint8 *cells;
  gsize cells_size;
  guint64 cells_key;            /* the map the cell table was built from, 0: none */
  FapOverlayParams cells_params;
  gboolean any;                 /* some cell is drawn */
} FapOverlay;

void fap_overlay_init (FapOverlay * o);
void fap_overlay_clear (FapOverlay * o);
gboolean fap_overlay_supports (GstVideoFormat format);
/* Per caps: the colour lookup in the frame's colour space. */
void fap_overlay_set_info (FapOverlay * o, const GstVideoInfo * info);

/* Blends @map (w x h floats, @stride bytes a row; @key identifies it for
 * caching: a non-zero serial of the result it came from) into @frame. Cheap when the map and
 * params are those of the previous call. */
void fap_overlay_draw (FapOverlay * o, GstVideoFrame * frame,
    guint64 key, const gfloat * map, guint w, guint h, gsize stride,
    const FapOverlayParams * p);

/* The colour-map RGB of a normalised value t in [0, 1] (jet). */
void fap_overlay_colour (gdouble t, guint8 rgb[3]);

#endif
