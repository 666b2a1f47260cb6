/* faprompt: zero-shot visual anomaly detection (FAPrompt) as an in-place
 * video filter. See gst/README.md. The element is its properties, caps,
 * start/stop, the per-frame decisions (which frame is due, blocking or
 * through the worker), events and queries; it hands each job to one unit:
 * the model state runs and draws a frame (fap_modelstate.h), the worker
 * runs it beside the stream (fap_worker.h), the loader swaps models and
 * says what failed (fap_modelswap.h), fap_results.h builds the metas and
 * messages, fap_stats.h measures, fap_mode.h decides non-blocking=auto. The
 * core does every pixel (fap_frameview.h hands it the planes as they are). */
#ifndef __GST_FA_PROMPT_H__
#define __GST_FA_PROMPT_H__

#include <gst/gst.h>
#include <gst/video/video.h>
#include <gst/video/gstvideofilter.h>
#include <fap.h>

#include "fap_cuda.h"
#include "fap_enums.h"
#include "fap_instance.h"
#include "fap_modelstate.h"
#include "fap_mode.h"
#include "fap_modelswap.h"
#include "fap_results.h"
#include "fap_roi.h"
#include "fap_ignoremask.h"
#include "fap_maskwatch.h"
#include "fap_stats.h"
#include "fap_worker.h"

G_BEGIN_DECLS

#define GST_TYPE_FA_PROMPT (gst_fa_prompt_get_type ())
G_DECLARE_FINAL_TYPE (GstFAPrompt, gst_fa_prompt, GST, FA_PROMPT,
    GstVideoFilter)

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
  /* roi: the setting in force (its text as set, NULL: the whole frame) and
   * what it is checked against: the batch of the running detector (0 until
   * started) and the negotiated frame size (0 until caps) */
  gchar *roi_text;
  FapRoiSpec roi;
  guint roi_cap;
  gint roi_frame_w, roi_frame_h;
  /* tiles: each roi (or the whole frame) cut into tile_cols x tile_rows
   * tiles overlapping by tile_overlap pixels (1 x 1: none; its text as set,
   * NULL: none), checked with the roi */
  gchar *tiles_text;
  guint tile_cols, tile_rows, tile_overlap;
  /* tiles=auto: the grid picked per frame so that a patch covers at most
   * tile_max_patch_pixels frame pixels (tile_cols x tile_rows stay 1 x 1);
   * auto_warned: the shortfall within the batch was said once */
  gboolean tiles_auto, auto_warned;
  guint tile_max_patch_pixels;
  /* ignore-mask: the file set (NULL: none), the mask in force (NULL: none,
   * or it does not fit the frames), the watch that reloads it, and the
   * streaming thread's guard that keeps the heatmap out of it */
  gchar *ignore_mask_path;
  FapMask *mask;
  FapMaskWatch *mask_watch;
  FapMaskGuard mask_guard;

  /* what it measures, and whether it runs non-blocking: each its own lock */
  FapStats stats;
  FapMode mode;

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

  /* CUDA: the context shared with the neighbours (detectors are made in it,
   * fap_model_state_load); frames in CUDA memory when cuda_memory */
  FapCuda cuda;
  gboolean cuda_memory;

  /* streaming thread */
  GstVideoInfo info;
  gboolean have_info;
  FapOverlays *overlay;
  gboolean range_warned;
  FapResults results;
  FapInference *last;           /* result carried by frames, or NULL */
  guint countdown;              /* frames until the next inference is due */
  guint64 serial;               /* ids of inferences (map ids) */
  guint64 generation;

  FapWorker worker;             /* non-blocking mode */
};

GST_ELEMENT_REGISTER_DECLARE (faprompt);

G_END_DECLS

#endif
