/* faprompt: zero-shot visual anomaly detection (FAPrompt) as an in-place
 * video filter. See gst/README.md. The element is a shell: properties, caps,
 * start/stop and the per-frame decisions; the core does every pixel
 * (fap_frameview.h hands it the planes as they are, fap_overlay draws), the
 * worker (fap_worker.h) runs non-blocking inference, fap_results.h builds the
 * metas and messages. */
#ifndef __GST_FA_PROMPT_H__
#define __GST_FA_PROMPT_H__

#include <gst/gst.h>
#include <gst/video/video.h>
#include <gst/video/gstvideofilter.h>
#include <fap.h>

#include "fap_cuda.h"
#include "fap_instance.h"
#include "fap_modelstate.h"
#include "fap_modelswap.h"
#include "fap_results.h"
#include "fap_worker.h"

G_BEGIN_DECLS

#define GST_TYPE_FA_PROMPT (gst_fa_prompt_get_type ())
G_DECLARE_FINAL_TYPE (GstFAPrompt, gst_fa_prompt, GST, FA_PROMPT,
    GstVideoFilter)

typedef enum {
  GST_FA_PROMPT_BACKEND_AUTO = FAP_BACKEND_AUTO,
  GST_FA_PROMPT_BACKEND_CPU = FAP_BACKEND_CPU,
  GST_FA_PROMPT_BACKEND_CUDA = FAP_BACKEND_CUDA,
} GstFAPromptBackend;

typedef enum {
  GST_FA_PROMPT_PRECISION_AUTO = FAP_PRECISION_AUTO,
  GST_FA_PROMPT_PRECISION_F32 = FAP_PRECISION_F32,
  GST_FA_PROMPT_PRECISION_F16 = FAP_PRECISION_F16,
  GST_FA_PROMPT_PRECISION_BF16 = FAP_PRECISION_BF16,
  GST_FA_PROMPT_PRECISION_INT8 = FAP_PRECISION_INT8,
} GstFAPromptPrecision;

typedef enum {
  GST_FA_PROMPT_MESSAGES_NONE = FAP_REPORT_NONE,
  GST_FA_PROMPT_MESSAGES_EVERY_FRAME = FAP_REPORT_EVERY_FRAME,
  GST_FA_PROMPT_MESSAGES_ON_CHANGE = FAP_REPORT_ON_CHANGE,
  GST_FA_PROMPT_MESSAGES_ANOMALOUS = FAP_REPORT_ANOMALOUS,
} GstFAPromptMessages;

typedef enum {
  GST_FA_PROMPT_NON_BLOCKING_FALSE = 0,
  GST_FA_PROMPT_NON_BLOCKING_TRUE = 1,
  GST_FA_PROMPT_NON_BLOCKING_AUTO = 2,
} GstFAPromptNonBlocking;

struct _GstFAPrompt
{
  GstVideoFilter parent;

  /* properties, under the object lock */
  gchar *model_file;
  GstFAPromptBackend backend;
  GstFAPromptPrecision precision;
  gint device_id;
  gint threads;
  gint image_size;
  gfloat sigma;
  gfloat image_threshold;       /* < 0: the model's calibration, else 0.5 */
  gfloat pixel_threshold;       /* < 0: the model's calibration, else 0.5 */
  gboolean draw_heatmap;
  gdouble heatmap_alpha;
  gfloat heatmap_min, heatmap_max;
  guint interval;
  GstFAPromptNonBlocking non_blocking;
  GstFAPromptMessages post_messages;
  guint max_regions;
  gchar *instance_id;           /* model-instance-id: "" / NULL = private */
  guint batch_size;
  guint64 batch_timeout_us;
  /* statistics, under the object lock */
  guint64 frames;
  guint64 inferences;
  gdouble inference_ms_total;
  gdouble inference_ms_avg;     /* exponential average */
  gdouble frame_ms_avg;         /* streaming-thread cost per frame */
  gdouble latency_reported_ms;
  gfloat last_score;
  guint64 light_frames;         /* frames that ran no inference inline */
  guint64 pixel_bytes;          /* frame pixels copied host <-> device */
  gdouble light_ms_total;
  /* mode: decided at start, or (auto) by the first LATENCY answer or buffer;
   * under the object lock */
  gboolean mode_decided;
  guint mode_queries;           /* LATENCY queries upstream did not answer */
  gboolean running_non_blocking;

  /* model swaps, under the object lock */
  gboolean watch_model;
  guint watch_settle_ms;
  guint64 model_generations;    /* models loaded since creation */

  /* between start () and stop (): the model running now (changed by the
   * streaming thread between two frames, under the object lock; the worker
   * holds a reference while it runs on it), the loader of the next one
   * (fap_modelswap.h), what every load uses */
  FapModelState *state;
  FapModelSwap *swap;           /* set and cleared under the object lock */
  FapLoadSettings load;

  /* the core's last error message for this element (log sink), log_lock */
  GMutex log_lock;
  gchar core_error[512];

  /* CUDA: the context shared with the neighbours, pushed around every core
   * call (the detector lives in it); frames in CUDA memory when cuda_memory */
  FapCuda cuda;
  gboolean cuda_memory;

  /* streaming thread */
  GstVideoInfo info;
  gboolean have_info;
  fap_overlay *overlay;
  gboolean range_warned;
  FapResults results;
  FapInference *last;           /* result carried by frames, or NULL */
  guint countdown;              /* frames until the next inference is due */
  guint64 serial;               /* atomic: ids of inferences (map ids) */
  guint64 generation;

  FapWorker worker;             /* non-blocking mode */
};

GST_ELEMENT_REGISTER_DECLARE (faprompt);

G_END_DECLS

#endif
