/* What the element hands downstream for a result: the reference-counted
 * inference, the metas and ROI metas on each buffer, the bus messages. */
#ifndef FAP_RESULTS_H
#define FAP_RESULTS_H

#include <gst/gst.h>
#include <fap.h>

#include "fap_regions.h"
#include "fap_report.h"
#include "fap_request.h"
#include "fap_roi.h"
#include "fap_stitchers.h"

/* The side of a roi's map stitched from its tiles: S * max (columns, rows)
 * (as many samples along the longer side of the grid as its tiles' maps
 * hold), at most this. */
#define FAP_TILES_MAX_MAP_SIDE 1024

/* The result of one region of interest (the whole frame without roi). */
typedef struct {
  fap_rect rect;                /* frame pixels */
  GBytes *map;                  /* map_size x map_size floats over rect */
  gfloat score;                 /* tiled: the highest of its tiles' */
  guint n_tiles;                /* 1: not tiled */
  gfloat tile_scores[FAP_ROI_MAX];      /* row-major */
} FapRoiResult;

/* One finished inference, shared (reference counted, g_atomic_rc_box) by the
 * element, the worker and, through the maps, every buffer meta carrying it. */
typedef struct {
  guint64 serial;               /* > 0, unique per element: the maps' id */
  guint64 generation;           /* stream generation it belongs to */
  guint map_size;               /* S; tiled: the stitched maps' side */
  guint n_rois;                 /* >= 1 */
  gboolean roi_set;             /* the rois came from the roi property */
  guint tile_cols, tile_rows;   /* every roi's grid (1 x 1: no tiles) */
  gboolean tiles_auto;          /* picked by tiles=auto */
  FapRoiResult rois[FAP_ROI_MAX];
  gfloat score;                 /* the frame's: the highest of its rois' */
  GstClockTime pts;             /* of the frame it was computed on */
  gdouble ms;
  /* the model that computed it (set by the element after the run) */
  guint64 model_generation;
  const gchar *model_file;      /* interned path */
  const gchar *model_family;    /* static: fap_family_name () */
  const gchar *precision;       /* static: fap_precision_name () of what ran */
  gfloat model_image_threshold, model_pixel_threshold;  /* its calibration,
                                                         * < 0: none */
} FapInference;

/* Copies the detector's maps (borrowed until its next run) once: result i
 * is that of @req's crop i. Tiled, each roi's map is its tiles' maps
 * stitched (by its stitcher in @stitchers, kept by the caller across frames:
 * docs/SPEC.md section 1.2, Stitching) and its score the highest of theirs. */
FapInference *fap_inference_new (const fap_result * r,
    const FapInferRequest * req, FapStitchers * stitchers);
void fap_inference_unref (FapInference * inf);

/* Per-frame settings read from the properties (thresholds resolved for the
 * inference they judge: fap_results_thresholds). */
typedef struct {
  gfloat image_threshold, pixel_threshold;
  guint max_regions;
  FapReportPolicy messages;
} FapResultSettings;

/* The thresholds in force: the property's value when >= 0, else the
 * calibration of the model that computed the result (< 0: none), else 0.5. */
void fap_results_thresholds (gfloat image_property, gfloat pixel_property,
    gfloat model_image, gfloat model_pixel, gfloat * image, gfloat * pixel);

/* Streaming-thread state: the regions of each roi's current map (found
 * once per map and threshold) and the on-change state. */
typedef struct {
  FapRegionFinder regions[FAP_ROI_MAX];
  guint64 regions_serial[FAP_ROI_MAX];
  gfloat regions_threshold[FAP_ROI_MAX];
  guint regions_max[FAP_ROI_MAX];
  FapReportState report;
} FapResults;

void fap_results_init (FapResults * r);
void fap_results_clear (FapResults * r);

/* Adds, for each roi of @inf, a GstFAPromptMeta over its rectangle, its
 * structure twin and one ROI meta per region (frame pixels) to @buf;
 * returns the region count of all of them, *anomalous the frame's decision
 * (any roi's score above the image threshold). */
guint fap_results_attach (FapResults * r, GstBuffer * buf,
    const FapInference * inf, const FapResultSettings * st, gboolean fresh,
    gint width, gint height, gboolean * anomalous);

/* Where result @i of @inf lies on a @width x @height frame: the roi's
 * rectangle, or, for a whole-frame result, the whole of this frame (a
 * result carried over to a frame whose GstVideoMeta gives another size
 * covers that frame, as it always did). */
fap_rect fap_inference_rect (const FapInference * inf, guint i, gint width,
    gint height);

/* Whether every rectangle of @inf lies inside a @width x @height frame: a
 * roi result of a frame of another size (a GstVideoMeta within the same
 * caps) is not carried over to this one. */
gboolean fap_inference_fits (const FapInference * inf, gint width,
    gint height);

/* Posts the "faprompt" messages @st asks for, for the frame just attached. */
void fap_results_post_for_frame (FapResults * r, GstElement * element,
    const GstSegment * segment, GstBuffer * buf, const FapInference * inf,
    const FapResultSettings * st, gboolean anomalous, gboolean fresh,
    guint regions);

/* At EOS / flush: every anomaly-started gets its anomaly-ended. */
void fap_results_end_anomaly (FapResults * r, GstElement * element,
    const GstSegment * segment, const FapInference * last,
    FapReportPolicy mode);

#endif
