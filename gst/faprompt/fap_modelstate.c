/* See fap_modelstate.h. */
#include "fap_modelstate.h"

#include <string.h>

#include "fap_log.h"
#include "fap_modelcache.h"

void
fap_load_settings_clear (FapLoadSettings * s)
{
  g_free (s->instance_id);
  memset (s, 0, sizeof *s);
}

FapModelState *
fap_model_state_load (const gchar * path, const FapLoadSettings * s,
    FapCuda * cuda, GstElement * element, FapLoadFailure * failure,
    gchar ** error)
{
  FapModelState *m;
  gint64 t0 = g_get_monotonic_time ();
  const fap_config *cfg;
  gchar *warning = NULL;
  fap_status st;

  *failure = FAP_LOAD_OK;
  *error = NULL;
  if (!g_file_test (path, G_FILE_TEST_EXISTS)) {
    *failure = FAP_LOAD_NOT_FOUND;
    *error = g_strdup ("no such file");
    return NULL;
  }

  m = g_atomic_rc_box_new0 (FapModelState);
  m->stitchers = fap_stitchers_new ();
  m->path = g_intern_string (path);
  m->log_object = GST_OBJECT (element);
  /* the load's messages (model file, instance detector) go to the
   * element's debug log; its error is this thread's (a load may run on the
   * loader thread while the streaming thread reports errors of its own) */
  fap_core_log_to (m->log_object);
  st = fap_modelcache_acquire (path, &m->model, &m->model_shared);
  if (st != FAP_OK) {
    *failure = FAP_LOAD_BAD_FILE;
    *error = fap_core_failure (st);
    goto fail;
  }

  if (cuda->context)
    m->cuda_context = gst_object_ref (cuda->context);
  fap_cuda_push (cuda);
  if (s->instance_id) {
    FapInstanceConfig ic = { (gchar *) path, s->options, s->batch_timeout_us,
      cuda->context
    };
    gchar *why = NULL;
    m->instance = fap_instance_acquire (s->instance_id, &ic, element,
        &warning, &why);
    if (m->instance) {
      m->detector = fap_instance_detector (m->instance);
    } else {
      st = FAP_ERR_BACKEND;
      *error = g_strdup_printf ("%s: %s", fap_status_string (st), why);
    }
    g_free (why);
  } else {
    st = fap_detector_new (m->model, &s->options, &m->detector);
    if (st != FAP_OK)
      *error = fap_core_failure (st);
  }
  fap_cuda_pop (cuda);
  if (warning)
    GST_ELEMENT_WARNING (element, RESOURCE, SETTINGS, ("%s", warning), (NULL));
  g_free (warning);
  if (st != FAP_OK) {
    *failure = FAP_LOAD_NO_DETECTOR;
    goto fail;
  }
  fap_core_log_to (NULL);

  cfg = fap_model_config (m->model);
  m->image_threshold = cfg->image_threshold;
  m->pixel_threshold = cfg->pixel_threshold;
  m->load_ms = (g_get_monotonic_time () - t0) / 1000.0;
  return m;

fail:
  fap_core_log_to (NULL);
  fap_model_state_unref (m);
  return NULL;
}

FapModelState *
fap_model_state_ref (FapModelState * m)
{
  return m ? g_atomic_rc_box_acquire (m) : NULL;
}

static void
model_state_clear (gpointer data)
{
  FapModelState *m = data;

  if (m->instance) {
    fap_instance_release (m->instance);
  } else if (m->detector) {
    /* its device memory belongs to that context */
    FapCuda cuda = { m->cuda_context, NULL, };
    fap_cuda_push (&cuda);
    fap_detector_free (m->detector);
    fap_cuda_pop (&cuda);
  }
  if (m->cuda_context)
    gst_object_unref (m->cuda_context);
  fap_modelcache_release (m->model);
  fap_stitchers_free (m->stitchers);
}

void
fap_model_state_unref (FapModelState * m)
{
  if (m)
    g_atomic_rc_box_release_full (m, model_state_clear);
}

/* ---- running and drawing --------------------------------------------------- */

/* CUDA backend: the device draws (in the inference's pass, or
 * fap_detector_draw for reused results); CPU backend: fap_overlay. */
static gboolean
draws_on_device (const FapModelState * m)
{
  return fap_detector_backend (m->detector) == FAP_BACKEND_CUDA;
}

/* The inference draws the frame itself: a private CUDA detector (a shared
 * instance runs its batch without drawing: settings are per element). */
static gboolean
draws_in_pass (const FapModelState * m)
{
  return draws_on_device (m) && !m->instance;
}

/* a result says which model computed it (meta, messages, JSON) and is
 * judged by that model's calibration */
static void
tag_inference (FapInference * inf, const FapModelState * m)
{
  inf->model_generation = m->generation;
  inf->model_file = m->path;
  inf->model_family = fap_family_name (fap_model_config (m->model)->family);
  inf->precision = fap_precision_name (fap_detector_precision (m->detector));
  inf->model_image_threshold = m->image_threshold;
  inf->model_pixel_threshold = m->pixel_threshold;
}

FapOverlays *
fap_overlays_new (gchar ** error)
{
  FapOverlays *o = g_new0 (FapOverlays, 1);

  for (guint i = 0; i < FAP_ROI_MAX; i++)
    if (fap_overlay_new (&o->o[i]) != FAP_OK) {
      *error = g_strdup (fap_last_error ());
      fap_overlays_free (o);
      return NULL;
    }
  return o;
}

void
fap_overlays_free (FapOverlays * o)
{
  if (!o)
    return;
  for (guint i = 0; i < FAP_ROI_MAX; i++)
    fap_overlay_free (o->o[i]);
  g_free (o);
}

/* the frame once per crop (a roi, or a tile of one) */
static void
frames_of_crops (const fap_frame * frame, const FapInferRequest * req,
    fap_frame * frames)
{
  for (guint i = 0; i < req->n_crops; i++) {
    frames[i] = *frame;
    frames[i].crop = req->crops[i];
  }
}

FapInference *
fap_model_state_infer (FapModelState * m, const fap_frame * frame,
    const FapInferRequest * req, gboolean * drawn, gsize * pixel_bytes,
    gchar ** error)
{
  FapInference *inf = NULL;
  fap_frame frames[FAP_ROI_MAX];

  *drawn = FALSE;
  *pixel_bytes = 0;
  g_return_val_if_fail (req->n_crops >= 1 && req->n_crops <= FAP_ROI_MAX,
      NULL);
  frames_of_crops (frame, req, frames);
  if (m->instance) {
    /* the scheduler thread hands its message over with the result */
    inf = fap_instance_run (m->instance, frames, req, pixel_bytes, error);
  } else {
    FapCuda cuda = { m->cuda_context, NULL, };
    /* tiled, the stitched maps are drawn afterwards, not the tiles' */
    const fap_blend *blend = draws_in_pass (m)
        && req->n_crops == req->n_rois ? req->blend : NULL;
    fap_result r[FAP_ROI_MAX];
    fap_status st;

    fap_cuda_push (&cuda);
    st = fap_detector_run_batch (m->detector, frames, (int) req->n_crops,
        blend, r);
    fap_cuda_pop (&cuda);
    if (st == FAP_OK) {
      for (guint i = 0; i < req->n_crops; i++)
        *pixel_bytes += r[i].frame_bytes_to_device +
            r[i].frame_bytes_from_device;
      *drawn = blend != NULL;
      inf = fap_inference_new (r, req, m->stitchers);
    } else {
      *error = fap_core_failure (st);
    }
  }
  if (inf)
    tag_inference (inf, m);
  return inf;
}

gboolean
fap_model_state_draw (FapModelState * m, FapOverlays * overlays,
    const fap_frame * frame, const FapInference * inf,
    const fap_blend * blend, gsize * pixel_bytes, gchar ** error)
{
  fap_status s = FAP_OK;

  *pixel_bytes = 0;
  for (guint i = 0; i < inf->n_rois && s == FAP_OK; i++) {
    const float *map = g_bytes_get_data (inf->rois[i].map, NULL);
    fap_frame f = *frame;

    f.crop = fap_inference_rect (inf, i, frame->width, frame->height);
    if (draws_on_device (m)) {
      FapCuda cuda = { m->cuda_context, NULL, };
      size_t moved = 0;
      fap_cuda_push (&cuda);
      s = fap_detector_draw (m->detector, &f, map, (int) inf->map_size,
          blend, &moved);
      fap_cuda_pop (&cuda);
      *pixel_bytes += moved;
    } else {
      /* each roi has its table: the map id names roi i of this inference */
      fap_core_log_to (m->log_object);
      s = fap_overlay_draw (overlays->o[i], &f, map, (int) inf->map_size,
          inf->serial, blend);
      fap_core_log_to (NULL);
    }
  }
  if (s == FAP_OK)
    return TRUE;
  *error = fap_core_failure (s);
  return FALSE;
}

gboolean
fap_model_state_prepare_overlay (FapModelState * m, FapOverlays * overlays,
    const fap_frame * frame, const FapInference * inf,
    const fap_blend * blend)
{
  if (draws_on_device (m))
    return FALSE;
  fap_core_log_to (m->log_object);
  for (guint i = 0; i < inf->n_rois; i++) {
    fap_frame f = *frame;
    f.crop = fap_inference_rect (inf, i, frame->width, frame->height);
    fap_overlay_prepare (overlays->o[i], &f,
        g_bytes_get_data (inf->rois[i].map, NULL), (int) inf->map_size,
        inf->serial, blend);
  }
  fap_core_log_to (NULL);
  return TRUE;
}
