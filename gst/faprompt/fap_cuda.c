/* See fap_cuda.h. */
#include "fap_cuda.h"

#include <string.h>

#ifdef FAP_HAVE_GST_CUDA
#define GST_USE_UNSTABLE_API
#include <gst/cuda/gstcudacontext.h>
#include <gst/cuda/gstcudabufferpool.h>
#include <gst/cuda/gstcudaloader.h>
#include <gst/cuda/gstcudamemory.h>
#include <gst/cuda/gstcudautils.h>
#endif

gboolean
fap_cuda_caps_are_cuda (GstCaps * caps)
{
  GstCapsFeatures *f;

  if (!caps || gst_caps_is_empty (caps) || gst_caps_is_any (caps))
    return FALSE;
  f = gst_caps_get_features (caps, 0);
  return f && gst_caps_features_contains (f, FAP_CUDA_CAPS_FEATURE);
}

#ifdef FAP_HAVE_GST_CUDA

gboolean
fap_cuda_built (void)
{
  return TRUE;
}

void
fap_cuda_set_context (FapCuda * c, GstElement * element, GstContext * context,
    gint device_id)
{
  if (gst_cuda_load_library ())
    gst_cuda_handle_set_context (element, context, device_id,
        (GstCudaContext **) & c->context);
}

gboolean
fap_cuda_handle_query (FapCuda * c, GstElement * element, GstQuery * query)
{
  if (GST_QUERY_TYPE (query) != GST_QUERY_CONTEXT || !c->context)
    return FALSE;
  return gst_cuda_handle_context_query (element, query,
      (GstCudaContext *) c->context);
}

gboolean
fap_cuda_ensure_context (FapCuda * c, GstElement * element, gint device_id,
    gchar ** why)
{
  if (c->context)
    return TRUE;
  if (!gst_cuda_load_library ()) {
    *why = g_strdup ("the CUDA driver library (libcuda.so.1) could not be "
        "loaded: install the NVIDIA driver");
    return FALSE;
  }
  if (!gst_cuda_ensure_element_context (element, device_id,
          (GstCudaContext **) & c->context)) {
    *why = g_strdup_printf ("no CUDA context for device %d (is there such a "
        "device?)", device_id);
    return FALSE;
  }
  return TRUE;
}

void
fap_cuda_push (FapCuda * c)
{
  if (c->context)
    gst_cuda_context_push ((GstCudaContext *) c->context);
}

void
fap_cuda_pop (FapCuda * c)
{
  if (c->context)
    gst_cuda_context_pop (NULL);
}

gboolean
fap_cuda_map (FapCuda * c, GstVideoFrame * frame, const GstVideoInfo * info,
    GstBuffer * buf, GstMapFlags flags, gchar ** why)
{
  GstMemory *mem = gst_buffer_peek_memory (buf, 0);

  if (!mem || !gst_is_cuda_memory (mem)) {
    *why = g_strdup ("caps say memory:CUDAMemory but the buffer is not CUDA "
        "memory");
    return FALSE;
  }
  if (((GstCudaMemory *) mem)->context != (GstCudaContext *) c->context) {
    *why = g_strdup ("the frame's CUDA memory belongs to another CUDA context "
        "than faprompt's (the upstream element did not share its context); "
        "put cudadownload ! cudaupload before faprompt or use one device-id");
    return FALSE;
  }
  if (!gst_video_frame_map (frame, info, buf, flags | GST_MAP_CUDA)) {
    *why = g_strdup ("could not map the CUDA frame");
    return FALSE;
  }
  return TRUE;
}

static gboolean
ensure_pool (FapCuda * c, const GstVideoInfo * info)
{
  GstStructure *config;
  GstCaps *caps;

  if (c->pool && gst_video_info_is_equal (&c->pool_info, info))
    return TRUE;
  if (c->pool) {
    gst_buffer_pool_set_active (c->pool, FALSE);
    gst_clear_object (&c->pool);
  }
  c->pool = gst_cuda_buffer_pool_new ((GstCudaContext *) c->context);
  caps = gst_video_info_to_caps (info);
  config = gst_buffer_pool_get_config (c->pool);
  /* one in the worker, one being filled */
  gst_buffer_pool_config_set_params (config, caps, GST_VIDEO_INFO_SIZE (info),
      1, 2);
  gst_caps_unref (caps);
  if (!gst_buffer_pool_set_config (c->pool, config)
      || !gst_buffer_pool_set_active (c->pool, TRUE)) {
    gst_clear_object (&c->pool);
    return FALSE;
  }
  c->pool_info = *info;
  return TRUE;
}

GstBuffer *
fap_cuda_copy (FapCuda * c, const GstVideoFrame * frame,
    GstVideoFrame * copy_frame)
{
  GstBuffer *out = NULL;
  gchar *why = NULL;
  gboolean ok = TRUE;

  if (!ensure_pool (c, &frame->info)
      || gst_buffer_pool_acquire_buffer (c->pool, &out, NULL) != GST_FLOW_OK)
    return NULL;
  if (!fap_cuda_map (c, copy_frame, &frame->info, out, GST_MAP_WRITE, &why)) {
    g_free (why);
    gst_buffer_unref (out);
    return NULL;
  }
  fap_cuda_push (c);
  for (guint p = 0; p < GST_VIDEO_FRAME_N_PLANES (frame) && ok; p++) {
    CUDA_MEMCPY2D m;
    memset (&m, 0, sizeof m);
    m.srcMemoryType = CU_MEMORYTYPE_DEVICE;
    m.srcDevice = (CUdeviceptr) GST_VIDEO_FRAME_PLANE_DATA (frame, p);
    m.srcPitch = GST_VIDEO_FRAME_PLANE_STRIDE (frame, p);
    m.dstMemoryType = CU_MEMORYTYPE_DEVICE;
    m.dstDevice = (CUdeviceptr) GST_VIDEO_FRAME_PLANE_DATA (copy_frame, p);
    m.dstPitch = GST_VIDEO_FRAME_PLANE_STRIDE (copy_frame, p);
    m.WidthInBytes = GST_VIDEO_FRAME_COMP_WIDTH (frame, p) *
        GST_VIDEO_FRAME_COMP_PSTRIDE (frame, p);
    m.Height = GST_VIDEO_FRAME_COMP_HEIGHT (frame, p);
    /* NV12's UV plane: component 1's width x pstride 2 covers U and V */
    if (GST_VIDEO_FRAME_FORMAT (frame) == GST_VIDEO_FORMAT_NV12 && p == 1) {
      m.WidthInBytes = GST_VIDEO_FRAME_COMP_WIDTH (frame, 1) * 2;
      m.Height = GST_VIDEO_FRAME_COMP_HEIGHT (frame, 1);
    }
    /* async on the legacy stream, then waited for: a device-to-device
     * cuMemcpy2D may return before it is done, and the core's streams
     * (non-blocking) would not wait for it; the worker must read a complete
     * copy, taken before anything draws into the source */
    ok = CuMemcpy2DAsync (&m, NULL) == CUDA_SUCCESS;
  }
  ok = ok && CuStreamSynchronize (NULL) == CUDA_SUCCESS;
  fap_cuda_pop (c);
  if (!ok) {
    gst_video_frame_unmap (copy_frame);
    gst_buffer_unref (out);
    return NULL;
  }
  return out;
}

void
fap_cuda_clear (FapCuda * c)
{
  if (c->pool) {
    gst_buffer_pool_set_active (c->pool, FALSE);
    gst_clear_object (&c->pool);
  }
  gst_clear_object (&c->context);
}

#else /* !FAP_HAVE_GST_CUDA */

gboolean
fap_cuda_built (void)
{
  return FALSE;
}

void
fap_cuda_set_context (FapCuda * c, GstElement * element, GstContext * context,
    gint device_id)
{
}

gboolean
fap_cuda_handle_query (FapCuda * c, GstElement * element, GstQuery * query)
{
  return FALSE;
}

gboolean
fap_cuda_ensure_context (FapCuda * c, GstElement * element, gint device_id,
    gchar ** why)
{
  *why = g_strdup ("this faprompt was built without CUDA memory support "
      "(gstreamer-cuda-1.0 from libgstreamer-plugins-bad1.0-dev and the CUDA "
      "toolkit)");
  return FALSE;
}

void
fap_cuda_push (FapCuda * c)
{
}

void
fap_cuda_pop (FapCuda * c)
{
}

gboolean
fap_cuda_map (FapCuda * c, GstVideoFrame * frame, const GstVideoInfo * info,
    GstBuffer * buf, GstMapFlags flags, gchar ** why)
{
  *why = g_strdup ("built without CUDA memory support");
  return FALSE;
}

GstBuffer *
fap_cuda_copy (FapCuda * c, const GstVideoFrame * frame,
    GstVideoFrame * copy_frame)
{
  return NULL;
}

void
fap_cuda_clear (FapCuda * c)
{
}

#endif
