/* The element's side of frames in CUDA memory (GStreamer's
 * video/x-raw(memory:CUDAMemory) from nvh264dec, cudaupload, cudaconvert):
 * the GstCudaContext shared with the neighbours (context query), pushed
 * around every core call so the detector's weights, streams and graph live
 * in the context the frames' memory belongs to; frames mapped with
 * GST_MAP_CUDA (device pointers, no download); a device-side copy for the
 * non-blocking worker. Built where gstreamer-cuda-1.0 and the CUDA toolkit
 * are (FAP_HAVE_GST_CUDA); elsewhere every function says "not built". */
#ifndef FAP_CUDA_H
#define FAP_CUDA_H

#include <gst/gst.h>
#include <gst/video/video.h>
#include <fap.h>

#define FAP_CUDA_CAPS_FEATURE "memory:CUDAMemory"
/* what nvh264dec / cudaupload / cudaconvert produce and the core takes */
#define FAP_CUDA_FORMATS "{ NV12, I420, RGBA, BGRA, RGBx, BGRx }"

typedef struct {
  GstObject *context;           /* GstCudaContext, or NULL */
  GstBufferPool *pool;          /* device copies for the worker */
  GstVideoInfo pool_info;
} FapCuda;

/* TRUE when the plugin was built with CUDA memory support. */
gboolean fap_cuda_built (void);
/* TRUE when the caps carry memory:CUDAMemory. */
gboolean fap_cuda_caps_are_cuda (GstCaps * caps);

/* GstElement::set_context / the CONTEXT query, for neighbours sharing one. */
void fap_cuda_set_context (FapCuda * c, GstElement * element,
    GstContext * context, gint device_id);
gboolean fap_cuda_handle_query (FapCuda * c, GstElement * element,
    GstQuery * query);

/* Finds (from the neighbours or the application) or makes the element's
 * GstCudaContext for @device_id. FALSE (with *why, g_free) when the CUDA
 * driver or the device is missing. */
gboolean fap_cuda_ensure_context (FapCuda * c, GstElement * element,
    gint device_id, gchar ** why);
/* Makes the context current on this thread for core calls; no-op without. */
void fap_cuda_push (FapCuda * c);
void fap_cuda_pop (FapCuda * c);

/* Maps a buffer of CUDA memory for the core (device pointers); FALSE with
 * *why when it is not CUDA memory of this element's context. */
gboolean fap_cuda_map (FapCuda * c, GstVideoFrame * frame,
    const GstVideoInfo * info, GstBuffer * buf, GstMapFlags flags,
    gchar ** why);

/* A device-side copy of @frame (mapped with fap_cuda_map) from a small pool
 * (no allocation per frame once warm); the copy is returned mapped in
 * *copy_frame (unmap and unref the buffer when done). NULL when it fails. */
GstBuffer *fap_cuda_copy (FapCuda * c, const GstVideoFrame * frame,
    GstVideoFrame * copy_frame);

void fap_cuda_clear (FapCuda * c);

#endif
