/* What one inference is asked for: the frame's tags and its rois. Shared by
 * the model state (which runs it) and the model instance (which batches
 * it). */
#ifndef FAP_REQUEST_H
#define FAP_REQUEST_H

#include <gst/gst.h>
#include <fap.h>

#include "fap_roi.h"

typedef struct {
  guint64 serial;               /* the maps' id, > 0 and unique per element */
  guint64 generation;           /* the stream generation it belongs to */
  GstClockTime pts;             /* of the frame */
  const fap_blend *blend;       /* draw it in the same pass where the
                                 * detector can (else NULL) */
  guint n_rois;                 /* 1 .. FAP_ROI_MAX, at most the detector's
                                 * batch */
  gboolean roi_set;             /* rois from the roi property (else the whole
                                 * frame) */
  fap_rect rois[FAP_ROI_MAX];   /* frame pixels */
  /* tiles: each roi cut into tile_cols x tile_rows tiles overlapping by
   * tile_overlap pixels (fap_tiles_layout; 1 x 1: the roi itself) */
  guint tile_cols, tile_rows;
  gint tile_overlap;
  gboolean tiles_auto;          /* the grid was picked by tiles=auto */
  guint n_crops;                /* n_rois * tile_cols * tile_rows, at most
                                 * the detector's batch */
  fap_rect crops[FAP_ROI_MAX];  /* the crops that are run: roi by roi, each
                                 * roi's tiles row-major */
} FapInferRequest;

#endif
