/* The RGB view of a frame the core needs: packed RGB-family frames map
 * straight to a fap_frame (no copy); NV12 / I420 / YUY2 are converted into a
 * caller-owned packed RGB buffer with GstVideoConverter (the caps'
 * colorimetry honoured), the converter built once per caps. */
#ifndef FAP_COLORCONVERT_H
#define FAP_COLORCONVERT_H

#include <gst/video/video.h>
#include <fap.h>

typedef struct {
  GstVideoInfo in_info;
  GstVideoInfo rgb_info;        /* packed RGB, same size */
  GstVideoConverter *conv;      /* NULL for packed RGB input */
} FapColorConvert;

void fap_colorconvert_init (FapColorConvert * c);
void fap_colorconvert_clear (FapColorConvert * c);
/* Per caps. Returns FALSE for a format the element does not take. */
gboolean fap_colorconvert_set_info (FapColorConvert * c,
    const GstVideoInfo * info);

/* The fap_pixel_format of a packed RGB-family video format; FALSE for YUV. */
gboolean fap_colorconvert_packed_format (GstVideoFormat format,
    fap_pixel_format * out);

/* Bytes a packed copy of a frame needs (fap_colorconvert_copy). */
gsize fap_colorconvert_copy_size (const FapColorConvert * c, gsize * stride);

/* A view of @frame without copying when possible (packed RGB); otherwise
 * converts into @scratch (fap_colorconvert_copy_size () bytes). */
void fap_colorconvert_view (FapColorConvert * c, GstVideoFrame * frame,
    guint8 * scratch, fap_frame * out);

/* Always copies/converts @frame into @dest (for a worker that outlives the
 * frame); @out describes @dest. */
void fap_colorconvert_copy (FapColorConvert * c, GstVideoFrame * frame,
    guint8 * dest, fap_frame * out);

#endif
