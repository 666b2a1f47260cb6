/* faprompt element: runs the core detector on video frames (every
 * inference-interval frames, inline or on a worker thread), attaches the
 * result as metas, posts messages and blends the heatmap into the frame.
 * The element never does tensor math: the core gets a packed RGB view. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstfaprompt.h"
#include "gstfapromptmeta.h"
#include "fap_modelcache.h"

#include <string.h>

GST_DEBUG_CATEGORY_STATIC (gst_fa_prompt_debug);
#define GST_CAT_DEFAULT gst_fa_prompt_debug

#define FORMATS "{ RGB, BGR, RGBA, BGRA, RGBx, BGRx, xRGB, xBGR, NV12, I420, YUY2 }"
#define DEFAULT_MODEL_NAME "faprompt-vitl14-336.safetensors"
#define DEFAULT_THRESHOLD 0.5f

enum
{
  PROP_0,
  PROP_MODEL_FILE,
  PROP_BACKEND,
  PROP_DEVICE_ID,
  PROP_THREADS,
  PROP_IMAGE_SIZE,
  PROP_SIGMA,
  PROP_IMAGE_THRESHOLD,
  PROP_PIXEL_THRESHOLD,
  PROP_DRAW_HEATMAP,
  PROP_HEATMAP_ALPHA,
  PROP_HEATMAP_MIN,
  PROP_HEATMAP_MAX,
  PROP_INFERENCE_INTERVAL,
  PROP_NON_BLOCKING,
  PROP_POST_MESSAGES,
  PROP_MAX_REGIONS,
  PROP_FRAMES_PROCESSED,
  PROP_INFERENCES,
  PROP_AVERAGE_INFERENCE_MS,
  PROP_LAST_SCORE,
  PROP_MODEL_SHARED,
  PROP_AVERAGE_FRAME_MS,
};

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK, GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE (FORMATS)));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC, GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE (FORMATS)));

#define gst_fa_prompt_parent_class parent_class
G_DEFINE_TYPE (GstFAPrompt, gst_fa_prompt, GST_TYPE_VIDEO_FILTER);
GST_ELEMENT_REGISTER_DEFINE_WITH_CODE (faprompt, "faprompt", GST_RANK_NONE,
    GST_TYPE_FA_PROMPT, gst_faprompt_meta_get_info ();
    gst_faprompt_structure_meta_get_info ());

/* ---- enums --------------------------------------------------------------- */

#define GST_TYPE_FA_PROMPT_BACKEND (gst_fa_prompt_backend_get_type ())
static GType
gst_fa_prompt_backend_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {GST_FA_PROMPT_BACKEND_AUTO, "CUDA when built and a device is present, "
          "else CPU", "auto"},
    {GST_FA_PROMPT_BACKEND_CPU, "CPU (OpenBLAS + OpenMP)", "cpu"},
    {GST_FA_PROMPT_BACKEND_CUDA, "CUDA (fails to start where not built)",
        "cuda"},
    {0, NULL, NULL},
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstFAPromptBackend", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define GST_TYPE_FA_PROMPT_MESSAGES (gst_fa_prompt_messages_get_type ())
static GType
gst_fa_prompt_messages_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {GST_FA_PROMPT_MESSAGES_NONE, "Post no messages", "none"},
    {GST_FA_PROMPT_MESSAGES_EVERY_FRAME, "One message per frame carrying a "
          "result", "every-frame"},
    {GST_FA_PROMPT_MESSAGES_ON_CHANGE, "One message when the anomalous "
          "decision flips (event=anomaly-started / anomaly-ended)",
        "on-change"},
    {GST_FA_PROMPT_MESSAGES_ANOMALOUS, "One message per anomalous frame",
        "anomalous"},
    {0, NULL, NULL},
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstFAPromptMessages", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

/* ---- core log -> GStreamer debug log; last error kept per thread ---------- */

static __thread gchar core_error[512];

static void
core_log (fap_log_level level, const char *message, void *user_data)
{
  switch (level) {
    case FAP_LOG_ERROR:
      g_strlcpy (core_error, message, sizeof core_error);
      GST_WARNING ("core: %s", message);
      break;
    case FAP_LOG_WARNING:
      GST_WARNING ("core: %s", message);
      break;
    case FAP_LOG_INFO:
      GST_INFO ("core: %s", message);
      break;
    default:
      GST_DEBUG ("core: %s", message);
      break;
  }
}

/* ---- results ------------------------------------------------------------- */

static void
inference_clear (gpointer data)
{
  FapInference *inf = data;
  g_bytes_unref (inf->map);
}

static void
inference_unref (FapInference * inf)
{
  if (inf)
    g_atomic_rc_box_release_full (inf, inference_clear);
}

static FapInference *
inference_new (const fap_result * r, guint64 serial, guint64 generation,
    GstClockTime pts)
{
  FapInference *inf = g_atomic_rc_box_new0 (FapInference);
  gsize bytes = (gsize) r->map_size * r->map_size * sizeof (gfloat);

  /* the detector's map is borrowed until its next run: copy it once into a
   * block the metas share */
  inf->map = g_bytes_new (r->map, bytes);
  inf->map_size = r->map_size;
  inf->score = r->score;
  inf->ms = r->total_ms;
  inf->pts = pts;
  inf->serial = serial;
  inf->generation = generation;
  return inf;
}

static void
set_last (GstFAPrompt * self, FapInference * inf)
{
  inference_unref (self->last);
  self->last = inf;
  if (inf) {
    GST_OBJECT_LOCK (self);
    self->last_score = inf->score;
    GST_OBJECT_UNLOCK (self);
  }
}

/* ---- default model location --------------------------------------------- */

static gchar *
default_model_path (void)
{
  const gchar *env = g_getenv ("FAPROMPT_MODEL");
  if (env && *env)
    return g_strdup (env);
  return g_build_filename (g_get_user_data_dir (), "faprompt",
      DEFAULT_MODEL_NAME, NULL);
}

#define HOW_TO_GET_A_MODEL \
  "Set the model-file property or $FAPROMPT_MODEL. Make a model from the " \
  "authors' checkpoint with models/faprompt-convert (see models/README.md), " \
  "or generate a random test model with: python3 models/faprompt-gen-random " \
  "--preset tiny -o model.safetensors"

/* ---- statistics and latency ---------------------------------------------- */

static void
record_inference (GstFAPrompt * self, gdouble ms)
{
  gboolean post = FALSE;

  GST_OBJECT_LOCK (self);
  self->inferences++;
  self->inference_ms_total += ms;
  self->inference_ms_avg = self->inferences == 1 ? ms :
      0.8 * self->inference_ms_avg + 0.2 * ms;
  if (!self->running_non_blocking) {
    gdouble rep = self->latency_reported_ms;
    if (rep <= 0.0 || ABS (self->inference_ms_avg - rep) > 0.25 * rep) {
      self->latency_reported_ms = self->inference_ms_avg;
      post = TRUE;
    }
  }
  GST_OBJECT_UNLOCK (self);
  if (post)
    gst_element_post_message (GST_ELEMENT (self),
        gst_message_new_latency (GST_OBJECT (self)));
}

/* What a frame may spend in this element: in blocking mode the frames an
 * inference runs on wait for it; in non-blocking mode no frame waits for an
 * inference, only for the copy handed to the worker and the overlay. */
static GstClockTime
added_latency (GstFAPrompt * self)
{
  gdouble ms;

  GST_OBJECT_LOCK (self);
  ms = self->running_non_blocking ? self->frame_ms_avg :
      self->inference_ms_avg;
  GST_OBJECT_UNLOCK (self);
  return (GstClockTime) (ms * GST_MSECOND);
}

/* ---- worker (non-blocking mode) ------------------------------------------ */

static gpointer
worker_main (gpointer data)
{
  GstFAPrompt *self = data;

  g_mutex_lock (&self->lock);
  for (;;) {
    fap_frame frame;
    GstClockTime pts;
    guint64 generation, serial;
    fap_result r;
    fap_status st;

    while (!self->job_pending && !self->quit)
      g_cond_wait (&self->cond, &self->lock);
    if (self->quit)
      break;
    self->job_pending = FALSE;
    self->job_busy = TRUE;
    frame = self->job_frame;
    pts = self->job_pts;
    generation = self->job_generation;
    serial = ++self->serial;
    g_mutex_unlock (&self->lock);

    core_error[0] = '\0';
    st = fap_detector_run (self->detector, &frame, &r);
    if (st == FAP_OK)
      record_inference (self, r.total_ms);

    g_mutex_lock (&self->lock);
    self->job_busy = FALSE;
    if (st == FAP_OK) {
      inference_unref (self->finished);
      self->finished = inference_new (&r, serial, generation, pts);
    } else if (!self->worker_error) {
      self->worker_error = g_strdup_printf ("%s: %s", fap_status_string (st),
          core_error);
    }
    g_cond_broadcast (&self->cond);
  }
  g_mutex_unlock (&self->lock);
  return NULL;
}

static void
worker_stop (GstFAPrompt * self)
{
  if (!self->worker)
    return;
  g_mutex_lock (&self->lock);
  self->quit = TRUE;
  g_cond_broadcast (&self->cond);
  g_mutex_unlock (&self->lock);
  /* an inference in flight finishes first: the core cannot be cancelled */
  g_thread_join (self->worker);
  self->worker = NULL;
  self->quit = FALSE;
  self->job_pending = FALSE;
  self->job_busy = FALSE;
  inference_unref (self->finished);
  self->finished = NULL;
  g_clear_pointer (&self->worker_error, g_free);
}

/* ---- start / stop -------------------------------------------------------- */

static gboolean
gst_fa_prompt_start (GstBaseTransform * trans)
{
  GstFAPrompt *self = GST_FA_PROMPT (trans);
  fap_detector_options o;
  const fap_config *cfg;
  gchar *path;
  gboolean shared;
  fap_status st;

  GST_OBJECT_LOCK (self);
  path = self->model_file ? g_strdup (self->model_file) : default_model_path ();
  fap_detector_options_init (&o);
  o.backend = (fap_backend_kind) self->backend;
  o.device_id = self->device_id;
  o.threads = self->threads;
  o.image_size = self->image_size;
  o.sigma = self->sigma;
  self->running_non_blocking = self->non_blocking;
  self->frames = self->inferences = 0;
  self->last_score = -1.0f;
  self->inference_ms_total = self->inference_ms_avg = 0.0;
  self->frame_ms_avg = self->latency_reported_ms = 0.0;
  self->light_frames = 0;
  self->light_ms_total = 0.0;
  GST_OBJECT_UNLOCK (self);

  if (!g_file_test (path, G_FILE_TEST_EXISTS)) {
    GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND,
        ("faprompt model file \"%s\" not found. " HOW_TO_GET_A_MODEL, path),
        ("model-file=%s", path));
    g_free (path);
    return FALSE;
  }

  core_error[0] = '\0';
  st = fap_modelcache_acquire (path, &self->model, &shared);
  if (st != FAP_OK) {
    GST_ELEMENT_ERROR (self, RESOURCE, OPEN_READ,
        ("Could not load faprompt model \"%s\" (%s: %s). " HOW_TO_GET_A_MODEL,
            path, fap_status_string (st), core_error), ("model-file=%s", path));
    g_free (path);
    return FALSE;
  }
  GST_OBJECT_LOCK (self);
  self->model_shared = shared;
  GST_OBJECT_UNLOCK (self);
  GST_INFO_OBJECT (self, "model %s %s (%.2f s load)", path,
      shared ? "shared with another element" : "loaded",
      fap_model_load_seconds (self->model));

  core_error[0] = '\0';
  st = fap_detector_new (self->model, &o, &self->detector);
  if (st != FAP_OK) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("Could not create the faprompt detector for \"%s\" (backend %s, "
            "image-size %d): %s: %s", path, fap_backend_name (o.backend),
            o.image_size, fap_status_string (st), core_error), (NULL));
    fap_modelcache_release (self->model);
    self->model = NULL;
    g_free (path);
    return FALSE;
  }
  g_free (path);

  cfg = fap_model_config (self->model);
  self->model_image_threshold = cfg->image_threshold;
  self->model_pixel_threshold = cfg->pixel_threshold;
  self->countdown = 0;
  self->in_anomaly = FALSE;
  self->generation++;
  fap_regions_init (&self->regions);
  fap_overlay_init (&self->overlay);
  fap_colorconvert_init (&self->convert);
  self->regions_serial = 0;

  if (self->running_non_blocking)
    self->worker = g_thread_new ("faprompt-worker", worker_main, self);
  GST_INFO_OBJECT (self, "started: backend %s, S=%d, %s",
      fap_backend_name (fap_detector_backend (self->detector)),
      fap_detector_image_size (self->detector),
      self->running_non_blocking ? "non-blocking" : "blocking");
  return TRUE;
}

static gboolean
gst_fa_prompt_stop (GstBaseTransform * trans)
{
  GstFAPrompt *self = GST_FA_PROMPT (trans);

  worker_stop (self);
  set_last (self, NULL);
  fap_detector_free (self->detector);
  self->detector = NULL;
  fap_modelcache_release (self->model);
  self->model = NULL;
  g_clear_pointer (&self->input, g_free);
  self->input_size = 0;
  fap_regions_clear (&self->regions);
  fap_overlay_clear (&self->overlay);
  fap_colorconvert_clear (&self->convert);
  return TRUE;
}

/* ---- caps ---------------------------------------------------------------- */

/* Results of the previous caps / segment are dropped; the next frame is due. */
static void
reset_stream (GstFAPrompt * self)
{
  g_mutex_lock (&self->lock);
  self->generation++;
  self->job_pending = FALSE;
  inference_unref (self->finished);
  self->finished = NULL;
  g_mutex_unlock (&self->lock);
  set_last (self, NULL);
  self->countdown = 0;
}

static gboolean
gst_fa_prompt_set_info (GstVideoFilter * filter, GstCaps * incaps,
    GstVideoInfo * in_info, GstCaps * outcaps, GstVideoInfo * out_info)
{
  GstFAPrompt *self = GST_FA_PROMPT (filter);

  GST_DEBUG_OBJECT (self, "caps %" GST_PTR_FORMAT, incaps);
  /* the same caps again (a source re-sending them): keep the result */
  if (self->overlay.have_info && gst_video_info_is_equal (in_info,
          &self->convert.in_info))
    return TRUE;
  if (!fap_colorconvert_set_info (&self->convert, in_info)) {
    GST_ERROR_OBJECT (self, "cannot convert %s to RGB",
        GST_VIDEO_INFO_NAME (in_info));
    return FALSE;
  }
  fap_overlay_set_info (&self->overlay, in_info);
  reset_stream (self);
  return TRUE;
}

/* Makes the detector input buffer large enough for the current caps. Only
 * called while the worker is idle. */
static guint8 *
ensure_input (GstFAPrompt * self)
{
  gsize stride, size = fap_colorconvert_copy_size (&self->convert, &stride);
  if (self->input_size < size) {
    g_free (self->input);
    self->input = g_malloc (size);
    self->input_size = size;
  }
  return self->input;
}

/* ---- messages ------------------------------------------------------------ */

static void
post_result (GstFAPrompt * self, GstClockTime pts, GstClockTime duration,
    const FapInference * inf, gboolean anomalous, gboolean reused,
    guint regions, const gchar * event)
{
  GstSegment *seg = &GST_BASE_TRANSFORM (self)->segment;
  GstClockTime stream_time = GST_CLOCK_TIME_NONE, running_time =
      GST_CLOCK_TIME_NONE;
  GstStructure *s;

  if (seg->format == GST_FORMAT_TIME && GST_CLOCK_TIME_IS_VALID (pts)) {
    stream_time = gst_segment_to_stream_time (seg, GST_FORMAT_TIME, pts);
    running_time = gst_segment_to_running_time (seg, GST_FORMAT_TIME, pts);
  }
  s = gst_structure_new ("faprompt",
      "timestamp", G_TYPE_UINT64, pts,
      "stream-time", G_TYPE_UINT64, stream_time,
      "running-time", G_TYPE_UINT64, running_time,
      "duration", G_TYPE_UINT64, duration,
      "score", G_TYPE_DOUBLE, inf ? (gdouble) inf->score : 0.0,
      "anomalous", G_TYPE_BOOLEAN, anomalous,
      "reused", G_TYPE_BOOLEAN, reused,
      "inference-timestamp", G_TYPE_UINT64,
      inf ? inf->pts : GST_CLOCK_TIME_NONE,
      "region-count", G_TYPE_UINT, regions, NULL);
  if (event)
    gst_structure_set (s, "event", G_TYPE_STRING, event, NULL);
  gst_element_post_message (GST_ELEMENT (self),
      gst_message_new_element (GST_OBJECT (self), s));
}

/* ---- per frame ----------------------------------------------------------- */

typedef struct
{
  gfloat image_threshold, pixel_threshold;
  gboolean draw;
  FapOverlayParams overlay;
  guint interval;
  GstFAPromptMessages messages;
  guint max_regions;
} Settings;

static void
read_settings (GstFAPrompt * self, Settings * s)
{
  GST_OBJECT_LOCK (self);
  s->image_threshold = self->image_threshold >= 0 ? self->image_threshold :
      self->model_image_threshold >= 0 ? self->model_image_threshold :
      DEFAULT_THRESHOLD;
  s->pixel_threshold = self->pixel_threshold >= 0 ? self->pixel_threshold :
      self->model_pixel_threshold >= 0 ? self->model_pixel_threshold :
      DEFAULT_THRESHOLD;
  s->draw = self->draw_heatmap;
  s->overlay.threshold = s->pixel_threshold;
  s->overlay.vmin = self->heatmap_min;
  s->overlay.vmax = self->heatmap_max;
  s->overlay.alpha = self->heatmap_alpha;
  s->interval = MAX (self->interval, 1);
  s->messages = self->post_messages;
  s->max_regions = self->max_regions;
  GST_OBJECT_UNLOCK (self);
}

static gboolean
infer_blocking (GstFAPrompt * self, GstVideoFrame * frame)
{
  fap_frame view;
  fap_result r;
  fap_status st;
  guint8 *scratch = NULL;

  if (self->convert.conv)
    scratch = ensure_input (self);
  fap_colorconvert_view (&self->convert, frame, scratch, &view);
  core_error[0] = '\0';
  st = fap_detector_run (self->detector, &view, &r);
  if (st != FAP_OK) {
    GST_ELEMENT_ERROR (self, STREAM, FAILED,
        ("faprompt inference failed: %s: %s", fap_status_string (st),
            core_error), (NULL));
    return FALSE;
  }
  record_inference (self, r.total_ms);
  set_last (self, inference_new (&r, ++self->serial, self->generation,
          GST_BUFFER_PTS (frame->buffer)));
  return TRUE;
}

/* Non-blocking: takes the worker's newest result and, when an inference is
 * due and the worker idle, hands it a copy of this frame. Never waits. */
static gboolean
infer_async (GstFAPrompt * self, GstVideoFrame * frame, gboolean due,
    gboolean * submitted)
{
  gchar *err = NULL;

  *submitted = FALSE;
  g_mutex_lock (&self->lock);
  if (self->worker_error) {
    err = self->worker_error;
    self->worker_error = NULL;
  }
  if (self->finished) {
    if (self->finished->generation == self->generation) {
      set_last (self, self->finished);
    } else {
      inference_unref (self->finished);
    }
    self->finished = NULL;
  }
  if (!err && due && !self->job_busy && !self->job_pending) {
    guint8 *dest = ensure_input (self);
    fap_colorconvert_copy (&self->convert, frame, dest, &self->job_frame);
    self->job_pts = GST_BUFFER_PTS (frame->buffer);
    self->job_generation = self->generation;
    self->job_pending = TRUE;
    g_cond_broadcast (&self->cond);
    *submitted = TRUE;
  }
  g_mutex_unlock (&self->lock);
  if (err) {
    GST_ELEMENT_ERROR (self, STREAM, FAILED,
        ("faprompt inference failed: %s", err), (NULL));
    g_free (err);
    return FALSE;
  }
  return TRUE;
}

static guint
attach_result (GstFAPrompt * self, GstVideoFrame * frame,
    const Settings * st, gboolean fresh, gboolean * anomalous)
{
  GstBuffer *buf = frame->buffer;
  FapInference *inf = self->last;
  guint fw = GST_VIDEO_FRAME_WIDTH (frame), fh = GST_VIDEO_FRAME_HEIGHT (frame);
  guint S = inf->map_size, n, i;
  const gfloat *map = g_bytes_get_data (inf->map, NULL);
  GstFAPromptMeta *m;
  GstStructure *s;
  GValue arr = G_VALUE_INIT;

  if (self->regions_serial != inf->serial
      || self->regions_threshold != st->pixel_threshold
      || self->regions_max != st->max_regions) {
    fap_regions_find (&self->regions, map, S, S, S * sizeof (gfloat),
        st->pixel_threshold, st->max_regions);
    self->regions_serial = inf->serial;
    self->regions_threshold = st->pixel_threshold;
    self->regions_max = st->max_regions;
  }
  n = self->regions.regions->len;

  m = gst_buffer_add_faprompt_meta (buf, inf->map, S, S, S * sizeof (gfloat));
  m->score = inf->score;
  m->anomalous = *anomalous = inf->score > st->image_threshold;
  m->x = m->y = 0;
  m->width = fw;
  m->height = fh;
  m->inference_timestamp = inf->pts;
  m->inference_ms = inf->ms;
  m->reused = !fresh;
  m->image_threshold = st->image_threshold;
  m->pixel_threshold = st->pixel_threshold;
  m->n_regions = n;
  s = gst_buffer_add_faprompt_structure_meta (buf, m);

  g_value_init (&arr, GST_TYPE_ARRAY);
  for (i = 0; i < n; i++) {
    const FapRegion *r = &g_array_index (self->regions.regions, FapRegion, i);
    GstVideoRegionOfInterestMeta *roi;
    GValue v = G_VALUE_INIT;
    gint x, y;
    guint w, h;

    fap_region_to_frame (r, S, S, fw, fh, &x, &y, &w, &h);
    roi = gst_buffer_add_video_region_of_interest_meta (buf, "anomaly",
        x, y, w, h);
    roi->id = (gint) i;
    gst_video_region_of_interest_meta_add_param (roi,
        gst_structure_new ("faprompt", "peak", G_TYPE_DOUBLE,
            (gdouble) r->peak, "mean", G_TYPE_DOUBLE, (gdouble) r->mean,
            "area", G_TYPE_UINT, r->area, NULL));
    g_value_init (&v, GST_TYPE_STRUCTURE);
    g_value_take_boxed (&v, gst_structure_new ("region",
            "x", G_TYPE_INT, x, "y", G_TYPE_INT, y,
            "width", G_TYPE_UINT, w, "height", G_TYPE_UINT, h,
            "peak", G_TYPE_DOUBLE, (gdouble) r->peak,
            "mean", G_TYPE_DOUBLE, (gdouble) r->mean, NULL));
    gst_value_array_append_and_take_value (&arr, &v);
  }
  gst_structure_take_value (s, "regions", &arr);

  if (st->draw)
    fap_overlay_draw (&self->overlay, frame, inf->serial, map, S, S,
        S * sizeof (gfloat), &st->overlay);
  return n;
}

static GstFlowReturn
gst_fa_prompt_transform_frame_ip (GstVideoFilter * filter,
    GstVideoFrame * frame)
{
  GstFAPrompt *self = GST_FA_PROMPT (filter);
  GstBuffer *buf = frame->buffer;
  gint64 t0 = g_get_monotonic_time ();
  gboolean due, fresh = FALSE, anomalous = FALSE;
  guint regions = 0;
  Settings st;
  gdouble ms;

  read_settings (self, &st);
  /* the interval may have been lowered while playing */
  if (self->countdown > st.interval - 1)
    self->countdown = st.interval - 1;
  due = self->countdown == 0;

  if (!self->running_non_blocking) {
    if (due) {
      if (!infer_blocking (self, frame))
        return GST_FLOW_ERROR;
      fresh = TRUE;
      self->countdown = st.interval;
    }
  } else {
    gboolean submitted;
    if (!infer_async (self, frame, due, &submitted))
      return GST_FLOW_ERROR;
    if (submitted)
      self->countdown = st.interval;
  }
  if (self->countdown > 0)
    self->countdown--;

  if (self->last)
    regions = attach_result (self, frame, &st, fresh, &anomalous);

  if (self->last) {
    GstClockTime pts = GST_BUFFER_PTS (buf), dur = GST_BUFFER_DURATION (buf);
    switch (st.messages) {
      case GST_FA_PROMPT_MESSAGES_EVERY_FRAME:
        post_result (self, pts, dur, self->last, anomalous, !fresh, regions,
            NULL);
        break;
      case GST_FA_PROMPT_MESSAGES_ANOMALOUS:
        if (anomalous)
          post_result (self, pts, dur, self->last, anomalous, !fresh, regions,
              NULL);
        break;
      case GST_FA_PROMPT_MESSAGES_ON_CHANGE:
        if (anomalous != self->in_anomaly)
          post_result (self, pts, dur, self->last, anomalous, !fresh, regions,
              anomalous ? "anomaly-started" : "anomaly-ended");
        break;
      default:
        break;
    }
    /* tracked in on-change mode only: switching to it while anomalous
     * starts with anomaly-started, so the events always pair up */
    self->in_anomaly = st.messages == GST_FA_PROMPT_MESSAGES_ON_CHANGE
        && anomalous;
  }

  ms = (g_get_monotonic_time () - t0) / 1000.0;
  GST_OBJECT_LOCK (self);
  self->frames++;
  if (!fresh) {
    self->light_frames++;
    self->light_ms_total += ms;
  }
  self->frame_ms_avg = self->frames == 1 ? ms :
      0.95 * self->frame_ms_avg + 0.05 * ms;
  GST_OBJECT_UNLOCK (self);
  GST_LOG_OBJECT (self, "frame %" GST_TIME_FORMAT " %s %.2f ms",
      GST_TIME_ARGS (GST_BUFFER_PTS (buf)), fresh ? "inferred" : "reused", ms);
  return GST_FLOW_OK;
}

/* ---- events and queries -------------------------------------------------- */

static void
end_anomaly (GstFAPrompt * self)
{
  gboolean on_change;

  GST_OBJECT_LOCK (self);
  on_change = self->post_messages == GST_FA_PROMPT_MESSAGES_ON_CHANGE;
  GST_OBJECT_UNLOCK (self);
  /* every anomaly-started gets its anomaly-ended, also at EOS and flushes */
  if (self->in_anomaly && on_change)
    post_result (self, GST_CLOCK_TIME_NONE, GST_CLOCK_TIME_NONE, self->last,
        FALSE, TRUE, 0, "anomaly-ended");
  self->in_anomaly = FALSE;
}

static gboolean
gst_fa_prompt_sink_event (GstBaseTransform * trans, GstEvent * event)
{
  GstFAPrompt *self = GST_FA_PROMPT (trans);

  switch (GST_EVENT_TYPE (event)) {
    case GST_EVENT_EOS:
      end_anomaly (self);
      break;
    case GST_EVENT_FLUSH_STOP:
      end_anomaly (self);
      reset_stream (self);
      break;
    default:
      break;
  }
  return GST_BASE_TRANSFORM_CLASS (parent_class)->sink_event (trans, event);
}

static gboolean
gst_fa_prompt_query (GstBaseTransform * trans, GstPadDirection direction,
    GstQuery * query)
{
  GstFAPrompt *self = GST_FA_PROMPT (trans);
  gboolean ret = GST_BASE_TRANSFORM_CLASS (parent_class)->query (trans,
      direction, query);

  if (ret && direction == GST_PAD_SRC
      && GST_QUERY_TYPE (query) == GST_QUERY_LATENCY) {
    gboolean live;
    GstClockTime min, max, ours = added_latency (self);

    gst_query_parse_latency (query, &live, &min, &max);
    GST_DEBUG_OBJECT (self, "adding latency %" GST_TIME_FORMAT,
        GST_TIME_ARGS (ours));
    min += ours;
    if (GST_CLOCK_TIME_IS_VALID (max))
      max += ours;
    gst_query_set_latency (query, live, min, max);
  }
  return ret;
}

/* ---- properties ---------------------------------------------------------- */

static void
gst_fa_prompt_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstFAPrompt *self = GST_FA_PROMPT (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL_FILE:
      g_free (self->model_file);
      self->model_file = g_value_dup_string (value);
      break;
    case PROP_BACKEND:
      self->backend = g_value_get_enum (value);
      break;
    case PROP_DEVICE_ID:
      self->device_id = g_value_get_int (value);
      break;
    case PROP_THREADS:
      self->threads = g_value_get_int (value);
      break;
    case PROP_IMAGE_SIZE:
      self->image_size = g_value_get_int (value);
      break;
    case PROP_SIGMA:
      self->sigma = g_value_get_float (value);
      break;
    case PROP_IMAGE_THRESHOLD:
      self->image_threshold = g_value_get_float (value);
      break;
    case PROP_PIXEL_THRESHOLD:
      self->pixel_threshold = g_value_get_float (value);
      break;
    case PROP_DRAW_HEATMAP:
      self->draw_heatmap = g_value_get_boolean (value);
      break;
    case PROP_HEATMAP_ALPHA:
      self->heatmap_alpha = g_value_get_double (value);
      break;
    case PROP_HEATMAP_MIN:
      self->heatmap_min = g_value_get_float (value);
      break;
    case PROP_HEATMAP_MAX:
      self->heatmap_max = g_value_get_float (value);
      break;
    case PROP_INFERENCE_INTERVAL:
      self->interval = g_value_get_uint (value);
      break;
    case PROP_NON_BLOCKING:
      self->non_blocking = g_value_get_boolean (value);
      break;
    case PROP_POST_MESSAGES:
      self->post_messages = g_value_get_enum (value);
      break;
    case PROP_MAX_REGIONS:
      self->max_regions = g_value_get_uint (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_fa_prompt_get_property (GObject * object, guint prop_id, GValue * value,
    GParamSpec * pspec)
{
  GstFAPrompt *self = GST_FA_PROMPT (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL_FILE:
      g_value_set_string (value, self->model_file);
      break;
    case PROP_BACKEND:
      g_value_set_enum (value, self->backend);
      break;
    case PROP_DEVICE_ID:
      g_value_set_int (value, self->device_id);
      break;
    case PROP_THREADS:
      g_value_set_int (value, self->threads);
      break;
    case PROP_IMAGE_SIZE:
      g_value_set_int (value, self->image_size);
      break;
    case PROP_SIGMA:
      g_value_set_float (value, self->sigma);
      break;
    case PROP_IMAGE_THRESHOLD:
      g_value_set_float (value, self->image_threshold);
      break;
    case PROP_PIXEL_THRESHOLD:
      g_value_set_float (value, self->pixel_threshold);
      break;
    case PROP_DRAW_HEATMAP:
      g_value_set_boolean (value, self->draw_heatmap);
      break;
    case PROP_HEATMAP_ALPHA:
      g_value_set_double (value, self->heatmap_alpha);
      break;
    case PROP_HEATMAP_MIN:
      g_value_set_float (value, self->heatmap_min);
      break;
    case PROP_HEATMAP_MAX:
      g_value_set_float (value, self->heatmap_max);
      break;
    case PROP_INFERENCE_INTERVAL:
      g_value_set_uint (value, self->interval);
      break;
    case PROP_NON_BLOCKING:
      g_value_set_boolean (value, self->non_blocking);
      break;
    case PROP_POST_MESSAGES:
      g_value_set_enum (value, self->post_messages);
      break;
    case PROP_MAX_REGIONS:
      g_value_set_uint (value, self->max_regions);
      break;
    case PROP_FRAMES_PROCESSED:
      g_value_set_uint64 (value, self->frames);
      break;
    case PROP_INFERENCES:
      g_value_set_uint64 (value, self->inferences);
      break;
    case PROP_AVERAGE_INFERENCE_MS:
      g_value_set_double (value, self->inferences ?
          self->inference_ms_total / self->inferences : 0.0);
      break;
    case PROP_AVERAGE_FRAME_MS:
      g_value_set_double (value, self->light_frames ?
          self->light_ms_total / self->light_frames : 0.0);
      break;
    case PROP_MODEL_SHARED:
      g_value_set_boolean (value, self->model_shared);
      break;
    case PROP_LAST_SCORE:
      g_value_set_float (value, self->last_score);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_fa_prompt_finalize (GObject * object)
{
  GstFAPrompt *self = GST_FA_PROMPT (object);

  g_free (self->model_file);
  g_mutex_clear (&self->lock);
  g_cond_clear (&self->cond);
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static void
gst_fa_prompt_init (GstFAPrompt * self)
{
  self->backend = GST_FA_PROMPT_BACKEND_AUTO;
  self->sigma = -1.0f;
  self->image_threshold = -1.0f;
  self->pixel_threshold = -1.0f;
  self->draw_heatmap = TRUE;
  self->heatmap_alpha = 0.5;
  self->heatmap_min = 0.0f;
  self->heatmap_max = 1.0f;
  self->interval = 1;
  self->post_messages = GST_FA_PROMPT_MESSAGES_ON_CHANGE;
  self->max_regions = 16;
  self->last_score = -1.0f;
  g_mutex_init (&self->lock);
  g_cond_init (&self->cond);
}

static void
gst_fa_prompt_class_init (GstFAPromptClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS (klass);
  GstVideoFilterClass *filter_class = GST_VIDEO_FILTER_CLASS (klass);
  const GParamFlags rw = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS;
  const GParamFlags ready = rw | GST_PARAM_MUTABLE_READY;
  const GParamFlags playing = rw | GST_PARAM_MUTABLE_PLAYING |
      GST_PARAM_CONTROLLABLE;
  const GParamFlags ro = G_PARAM_READABLE | G_PARAM_STATIC_STRINGS;
  gchar *blurb;

  GST_DEBUG_CATEGORY_INIT (gst_fa_prompt_debug, "faprompt", 0,
      "FAPrompt anomaly detection");
  fap_set_log_callback (core_log, NULL);

  gobject_class->set_property = gst_fa_prompt_set_property;
  gobject_class->get_property = gst_fa_prompt_get_property;
  gobject_class->finalize = gst_fa_prompt_finalize;

  blurb = g_strdup_printf ("Model file (safetensors, see models/README.md). "
      "NULL: $FAPROMPT_MODEL if set, else $XDG_DATA_HOME/faprompt/"
      DEFAULT_MODEL_NAME " (here: %s/faprompt/" DEFAULT_MODEL_NAME "). "
      "Elements naming the same file share one loaded model",
      g_get_user_data_dir ());
  g_object_class_install_property (gobject_class, PROP_MODEL_FILE,
      g_param_spec_string ("model-file", "Model file", blurb, NULL,
          G_PARAM_READWRITE | GST_PARAM_MUTABLE_READY));
  g_free (blurb);               /* copied: not G_PARAM_STATIC_BLURB */
  g_object_class_install_property (gobject_class, PROP_BACKEND,
      g_param_spec_enum ("backend", "Backend", "Compute backend",
          GST_TYPE_FA_PROMPT_BACKEND, GST_FA_PROMPT_BACKEND_AUTO, ready));
  g_object_class_install_property (gobject_class, PROP_DEVICE_ID,
      g_param_spec_int ("device-id", "Device ID", "CUDA device ordinal",
          0, G_MAXINT, 0, ready));
  g_object_class_install_property (gobject_class, PROP_THREADS,
      g_param_spec_int ("threads", "Threads",
          "CPU threads of the CPU backend (0 = all online cores)",
          0, 1024, 0, ready));
  g_object_class_install_property (gobject_class, PROP_IMAGE_SIZE,
      g_param_spec_int ("image-size", "Image size",
          "Side S the model runs at, a multiple of the patch size (14); "
          "0 = the model's (518 for ViT-L/14@336px). Smaller is faster "
          "(336: about 2.5x)", 0, 4096, 0, ready));
  g_object_class_install_property (gobject_class, PROP_SIGMA,
      g_param_spec_float ("sigma", "Sigma",
          "Gaussian smoothing of the map in map pixels (< 0 = the model's, "
          "0 = none)", -1.0f, 100.0f, -1.0f, ready));
  g_object_class_install_property (gobject_class, PROP_IMAGE_THRESHOLD,
      g_param_spec_float ("image-threshold", "Image threshold",
          "A frame is anomalous when its score is above this (< 0 = the "
          "model's calibrated threshold if it has one, else 0.5)",
          -1.0f, 1.0f, -1.0f, playing));
  g_object_class_install_property (gobject_class, PROP_PIXEL_THRESHOLD,
      g_param_spec_float ("pixel-threshold", "Pixel threshold",
          "Map values above this are drawn and grouped into regions (< 0 = "
          "the model's calibrated threshold if it has one, else 0.5)",
          -1.0f, 1.0f, -1.0f, playing));
  g_object_class_install_property (gobject_class, PROP_DRAW_HEATMAP,
      g_param_spec_boolean ("draw-heatmap", "Draw heatmap",
          "Blend the anomaly map into the frame where it exceeds "
          "pixel-threshold", TRUE, playing));
  g_object_class_install_property (gobject_class, PROP_HEATMAP_ALPHA,
      g_param_spec_double ("heatmap-alpha", "Heatmap alpha",
          "Opacity of the heatmap colour", 0.0, 1.0, 0.5, playing));
  g_object_class_install_property (gobject_class, PROP_HEATMAP_MIN,
      g_param_spec_float ("heatmap-min", "Heatmap minimum",
          "Map value shown as the first colour (blue); a fixed scale, never "
          "per-frame normalisation, so a normal frame looks calm",
          0.0f, 1.0f, 0.0f, playing));
  g_object_class_install_property (gobject_class, PROP_HEATMAP_MAX,
      g_param_spec_float ("heatmap-max", "Heatmap maximum",
          "Map value shown as the last colour (red)", 0.0f, 1.0f, 1.0f,
          playing));
  g_object_class_install_property (gobject_class, PROP_INFERENCE_INTERVAL,
      g_param_spec_uint ("inference-interval", "Inference interval",
          "Run the model every N frames; frames in between carry the last "
          "result (meta flagged reused) and its overlay", 1, G_MAXINT, 1,
          playing));
  g_object_class_install_property (gobject_class, PROP_NON_BLOCKING,
      g_param_spec_boolean ("non-blocking", "Non-blocking",
          "Run inference on a worker thread: no frame waits for it, frames "
          "carry the newest finished result (reused, with the timestamp of "
          "the frame it was computed on); an inference is started when one "
          "is due and the worker is idle", FALSE, ready));
  g_object_class_install_property (gobject_class, PROP_POST_MESSAGES,
      g_param_spec_enum ("post-messages", "Post messages",
          "When to post \"faprompt\" element messages",
          GST_TYPE_FA_PROMPT_MESSAGES, GST_FA_PROMPT_MESSAGES_ON_CHANGE,
          playing));
  g_object_class_install_property (gobject_class, PROP_MAX_REGIONS,
      g_param_spec_uint ("max-regions", "Max regions",
          "Most regions (highest peaks first) attached as "
          "GstVideoRegionOfInterestMeta per frame (0 = all)", 0, G_MAXINT, 16,
          playing));
  g_object_class_install_property (gobject_class, PROP_FRAMES_PROCESSED,
      g_param_spec_uint64 ("frames-processed", "Frames processed",
          "Frames that went through the element since start", 0, G_MAXUINT64,
          0, ro));
  g_object_class_install_property (gobject_class, PROP_INFERENCES,
      g_param_spec_uint64 ("inferences", "Inferences",
          "Inferences run since start", 0, G_MAXUINT64, 0, ro));
  g_object_class_install_property (gobject_class, PROP_AVERAGE_INFERENCE_MS,
      g_param_spec_double ("average-inference-ms", "Average inference ms",
          "Mean time of one inference since start, milliseconds", 0.0,
          G_MAXDOUBLE, 0.0, ro));
  g_object_class_install_property (gobject_class, PROP_LAST_SCORE,
      g_param_spec_float ("last-score", "Last score",
          "Score of the newest result (-1 before the first)", -1.0f, 1.0f,
          -1.0f, ro));

  g_object_class_install_property (gobject_class, PROP_AVERAGE_FRAME_MS,
      g_param_spec_double ("average-frame-ms", "Average frame ms",
          "Mean time the streaming thread spent on a frame that ran no "
          "inference itself (metas, regions, heatmap overlay, hand-off to the "
          "worker), milliseconds", 0.0, G_MAXDOUBLE, 0.0, ro));
  g_object_class_install_property (gobject_class, PROP_MODEL_SHARED,
      g_param_spec_boolean ("model-shared", "Model shared",
          "TRUE when the loaded model is shared with another faprompt element "
          "of this process (same file: weights loaded once)", FALSE, ro));

  gst_element_class_set_static_metadata (element_class,
      "FAPrompt anomaly detector", "Filter/Analyzer/Video",
      "Zero-shot visual anomaly detection (FAPrompt): scores each frame, "
      "attaches the anomaly map as GstFAPromptMeta and regions as "
      "GstVideoRegionOfInterestMeta, posts messages, draws a heatmap",
      "faprompt developers");
  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);

  trans_class->start = GST_DEBUG_FUNCPTR (gst_fa_prompt_start);
  trans_class->stop = GST_DEBUG_FUNCPTR (gst_fa_prompt_stop);
  trans_class->sink_event = GST_DEBUG_FUNCPTR (gst_fa_prompt_sink_event);
  trans_class->query = GST_DEBUG_FUNCPTR (gst_fa_prompt_query);
  filter_class->set_info = GST_DEBUG_FUNCPTR (gst_fa_prompt_set_info);
  filter_class->transform_frame_ip =
      GST_DEBUG_FUNCPTR (gst_fa_prompt_transform_frame_ip);

  gst_type_mark_as_plugin_api (GST_TYPE_FA_PROMPT_BACKEND, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_FA_PROMPT_MESSAGES, 0);
}
