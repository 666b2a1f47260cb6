/* faprompt: zero-shot visual anomaly detection (FAPrompt) as an in-place
 * video filter. See gst/README.md. */
#ifndef __GST_FA_PROMPT_H__
#define __GST_FA_PROMPT_H__

#include <gst/gst.h>
#include <gst/video/video.h>
#include <gst/video/gstvideofilter.h>
#include <fap.h>

#include "fap_colorconvert.h"
#include "fap_overlay.h"
#include "fap_regions.h"

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
  GST_FA_PROMPT_MESSAGES_NONE,
  GST_FA_PROMPT_MESSAGES_EVERY_FRAME,
  GST_FA_PROMPT_MESSAGES_ON_CHANGE,
  GST_FA_PROMPT_MESSAGES_ANOMALOUS,
} GstFAPromptMessages;

/* One finished inference, shared (reference counted, g_atomic_rc_box) by the
 * element, the worker and, through map, every buffer meta carrying it. */
typedef struct {
  guint64 serial;               /* > 0, unique per element */
  guint64 generation;           /* stream generation it belongs to */
  GBytes *map;                  /* S x S floats */
  guint map_size;               /* S */
  gfloat score;
  GstClockTime pts;             /* of the frame it was computed on */
  gdouble ms;
} FapInference;

struct _GstFAPrompt
{
  GstVideoFilter parent;

  /* properties, under the object lock */
  gchar *model_file;
  GstFAPromptBackend backend;
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
  gboolean non_blocking;
  GstFAPromptMessages post_messages;
  guint max_regions;
  /* statistics, under the object lock */
  guint64 frames;
  guint64 inferences;
  gdouble inference_ms_total;
  gdouble inference_ms_avg;     /* exponential average */
  gdouble frame_ms_avg;         /* streaming-thread cost per frame */
  gdouble latency_reported_ms;
  gfloat last_score;
  guint64 light_frames;         /* frames that ran no inference inline */
  gdouble light_ms_total;

  /* between start () and stop () */
  fap_model *model;
  fap_detector *detector;
  gfloat model_image_threshold, model_pixel_threshold;
  gboolean running_non_blocking;
  gboolean model_shared;

  /* streaming thread */
  FapColorConvert convert;
  FapOverlay overlay;
  FapRegionFinder regions;
  guint64 regions_serial;
  gfloat regions_threshold;
  guint regions_max;
  FapInference *last;           /* result carried by frames, or NULL */
  guint countdown;              /* frames until the next inference is due */
  gboolean in_anomaly;
  guint64 serial;
  guint64 generation;

  /* input buffer of the detector (RGB copy / conversion), reused */
  guint8 *input;
  gsize input_size;

  /* non-blocking worker; lock guards everything below and input while busy */
  GThread *worker;
  GMutex lock;
  GCond cond;
  gboolean job_pending;
  gboolean job_busy;
  gboolean quit;
  fap_frame job_frame;
  GstClockTime job_pts;
  guint64 job_generation;
  FapInference *finished;       /* newest result of the worker */
  gchar *worker_error;          /* an inference that failed */
};

GST_ELEMENT_REGISTER_DECLARE (faprompt);

G_END_DECLS

#endif
