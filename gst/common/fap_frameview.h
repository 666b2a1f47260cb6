/* A mapped GstVideoFrame as the core's fap_frame: planes, strides, colour
 * matrix and range of the negotiated caps, no pixel touched. The core does
 * every conversion (core/pixel.c on the CPU, on the device with CUDA). */
#ifndef FAP_FRAMEVIEW_H
#define FAP_FRAMEVIEW_H

#include <gst/video/video.h>
#include <fap.h>

/* The formats the element takes, in caps syntax. */
#define FAP_FRAMEVIEW_FORMATS \
  "{ RGB, BGR, RGBA, BGRA, RGBx, BGRx, xRGB, xBGR, NV12, I420, YUY2 }"

/* Checks that @info can be handed to the core (format, colour matrix);
 * FALSE with *why (g_free) saying what is wrong and what to do. */
gboolean fap_frameview_check_info (const GstVideoInfo * info, gchar ** why);

/* Checks that every plane of a frame mapped in system memory lies inside
 * what was mapped for it, with a stride of at least its row: a buffer with a
 * GstVideoMeta is mapped plane by plane from the memory holding each plane's
 * offset, and nothing else checks that the plane's rows fit (a buffer
 * shorter than its meta says, a negative or short stride, a plane across two
 * memories). FALSE with *why (g_free). */
gboolean fap_frameview_check_frame (const GstVideoFrame * frame, gchar ** why);

/* The core's view of @frame (mapped by the caller; valid while it is). */
void fap_frameview_of (const GstVideoFrame * frame, fap_frame * out);

/* An owned copy of a frame in its own format (for a worker that outlives the
 * buffer): grows only, so a stream of one size allocates once. */
typedef struct {
  guint8 *data;
  gsize size;
  fap_frame frame;              /* describes data after fap_framecopy_take */
} FapFrameCopy;

void fap_framecopy_clear (FapFrameCopy * c);
/* Copies every plane of @src (rows, not padding). FALSE when out of memory. */
gboolean fap_framecopy_take (FapFrameCopy * c, const fap_frame * src);

#endif
