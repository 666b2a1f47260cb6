/* The stitchers of a roi's tiles (fap_tiles_stitcher, docs/SPEC.md section
 * 1.2, Stitching), one per roi slot, kept across frames: a stitcher is made
 * when its roi's layout or map sizes change, not per frame. */
#ifndef FAP_STITCHERS_H
#define FAP_STITCHERS_H

#include <glib.h>
#include <fap.h>

#include "fap_roi.h"

typedef struct FapStitchers FapStitchers;

FapStitchers *fap_stitchers_new (void);
void fap_stitchers_free (FapStitchers * s);

/* Roi slot @k's tiles' maps (@maps, @map_size square) stitched into @out
 * (@side x @side) over @rect in @cols x @rows tiles overlapping by
 * @overlap; the slot's stitcher is made again only when one of these
 * changed. Serialised by a lock of its own (the streaming thread and the
 * non-blocking worker may take turns). FALSE with the core's message in
 * *error when the layout is refused. */
gboolean fap_stitchers_run (FapStitchers * s, guint k, fap_rect rect,
    guint cols, guint rows, gint overlap, const float *const *maps,
    guint map_size, gfloat * out, guint side, gchar ** error);

#endif
