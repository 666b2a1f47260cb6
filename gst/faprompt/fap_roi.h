/* The roi property: regions of interest as text, parsed once when set and
 * turned into frame pixels for each frame size. Only the regions go to the
 * model (each one a crop, fap_frame.crop, resized on its own); see the
 * element's SECTION doc block for the syntax. */
#ifndef FAP_ROI_H
#define FAP_ROI_H

#include <glib.h>
#include <fap.h>

/* Most rectangles one roi setting holds (and one inference carries). */
#define FAP_ROI_MAX 16

typedef struct
{
  gdouble x, y, w, h;           /* pixels, or fractions of the frame's side */
  gboolean fraction;
} FapRoiRect;

typedef struct
{
  guint n;                      /* 0: no roi, the whole frame */
  FapRoiRect r[FAP_ROI_MAX];
} FapRoiSpec;

/* Parses @text (NULL or blank: the whole frame). FALSE with *error (g_free)
 * naming the part at fault; @spec is then untouched. */
gboolean fap_roi_parse (const gchar * text, FapRoiSpec * spec,
    gchar ** error);

/* The rectangles of @spec in a @width x @height frame, *n of them (1 for
 * the whole frame). FALSE with *error (g_free) naming the rectangle that
 * reaches outside the frame or covers no pixel. */
gboolean fap_roi_resolve (const FapRoiSpec * spec, gint width, gint height,
    fap_rect * rects, guint * n, gchar ** error);

/* Parses the tiles property, "CxR" (columns x rows, each at least 1; NULL
 * or blank: 1 x 1, no tiles). FALSE with *error (g_free) naming the value;
 * *cols and *rows are then untouched. */
gboolean fap_tiles_parse (const gchar * text, guint * cols, guint * rows,
    gchar ** error);

#endif
