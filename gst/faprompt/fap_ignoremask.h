/* The ignore-mask property: a PNG whose dark pixels never count
 * (docs/SPEC.md section 1.2, Ignore mask). Loaded once per file version,
 * shared (reference counted) by the element and its results; applied to
 * each result's maps (masked pixels set to 0) and kept out of the heatmap
 * (the masked pixels' bytes are put back after drawing). */
#ifndef FAP_IGNOREMASK_H
#define FAP_IGNOREMASK_H

#include <gst/gst.h>
#include <gst/video/video.h>

#include "fap_results.h"

/* How far the mask's aspect (width / height) may be from the frame's,
 * relative to the frame's. */
#define FAP_MASK_ASPECT_TOLERANCE 0.01

typedef struct
{
  guint64 id;                   /* unique per load in the process */
  gchar *path;
  gint width, height;
  guint8 *ignored;              /* width * height, row-major: 1 = ignored */
  guint64 ignored_count;
} FapMask;

/* Decodes @path (any image gdk-pixbuf reads; PNG is what the element
 * documents): a pixel is ignored when each of its colour channels is below
 * 128 (alpha does not count). NULL with *error (g_free) naming the file and
 * what is wrong. */
FapMask *fap_mask_load (const gchar * path, gchar ** error);
FapMask *fap_mask_ref (FapMask * m);
void fap_mask_unref (FapMask * m);

/* Whether @m has the aspect of a @width x @height frame within
 * FAP_MASK_ASPECT_TOLERANCE; else FALSE with *why (g_free) naming the file
 * and both aspects. */
gboolean fap_mask_fits (const FapMask * m, gint width, gint height,
    gchar ** why);

/* A copy of @inf whose maps are 0 where @m (stretched over the @width x
 * @height frame) is ignored: map pixel (i, j) of a rectangle (x, y, w, h)
 * with an M x M map is frame point (x + (i + 0.5) w / M, y + (j + 0.5) h / M)
 * and takes the mask pixel under it (nearest: column floor (u * mw / width),
 * row floor (v * mh / height)). Scores unchanged. The copy gets @serial, so
 * what was prepared for @inf's maps is not reused for it. */
FapInference *fap_mask_apply (const FapMask * m, const FapInference * inf,
    gint width, gint height, guint64 serial);

/* Keeps the heatmap out of the masked pixels: the bytes of every component
 * sample whose pixel (its top-left pixel for subsampled chroma) is ignored,
 * saved before drawing and put back after. Prepared when the mask or the
 * caps change; save / restore allocate nothing. */
typedef struct
{
  guint64 mask_id;              /* the mask it was prepared for (0: none) */
  GstVideoInfo info;
  GArray *spans;                /* MaskSpan: runs of ignored samples */
  guint8 *saved;
  gsize n_saved;
} FapMaskGuard;

void fap_mask_guard_init (FapMaskGuard * g);
void fap_mask_guard_clear (FapMaskGuard * g);
/* (Re)builds the spans for @m on frames of @info when either changed. */
void fap_mask_guard_prepare (FapMaskGuard * g, const FapMask * m,
    const GstVideoInfo * info);
void fap_mask_guard_save (FapMaskGuard * g, const GstVideoFrame * frame);
void fap_mask_guard_restore (const FapMaskGuard * g, GstVideoFrame * frame);

#endif
