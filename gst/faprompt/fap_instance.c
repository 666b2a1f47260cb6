/* See fap_instance.h. One scheduler thread per instance collects the
 * requests of its elements and runs them in batches. */
#include "fap_instance.h"

#include <string.h>

#include "fap_cuda.h"
#include "fap_log.h"
#include "fap_modelcache.h"

typedef struct {
  const fap_frame *frames;      /* the crops of one frame: one batch */
  const FapInferRequest *req;
  gboolean done;
  FapInference *result;
  gsize pixel_bytes;
  gchar *error;
} Request;

struct FapInstance {
  gchar *id;
  gchar *key;                   /* registry key: id and the model's identity */
  FapInstanceConfig config;
  gchar *creator;               /* name of the element that made it */
  FapStitchers *stitchers;      /* the scheduler's, for tiled results */
  fap_model *model;
  fap_detector *detector;
  guint batch;

  GMutex lock;                  /* the fields below */
  GCond wake;                   /* a request arrived / quit */
  GCond done;                   /* some request finished */
  GQueue pending;               /* Request *, oldest first */
  guint pending_frames;         /* their crops */
  gint64 first_at;              /* monotonic us the oldest pending arrived */
  guint users;                  /* elements sharing it (changed with
                                 * registry_lock held too): each has at most
                                 * one frame pending, so when all of them
                                 * wait no other frame can come */
  gboolean quit;
  GThread *thread;
  guint64 batches, frames;
};

static GMutex registry_lock;
static GHashTable *registry;    /* key -> FapInstance */

/* An id names one instance per model: elements that change model-file while
 * playing (or a file that changed on disk) get the instance of the new model
 * and leave the others on theirs; frames of two models are never batched. */
static gchar *
registry_key (const gchar * id, const gchar * model_path)
{
  gchar *model = fap_modelcache_key (model_path);
  gchar *key = g_strconcat (id, "\x1f", model ? model : model_path, NULL);
  g_free (model);
  return key;
}

/* ---- the scheduler -------------------------------------------------------- */

static void
take_results (FapInstance * inst, Request * q, const fap_result * r)
{
  q->result = fap_inference_new (r, q->req, inst->stitchers);
  for (guint i = 0; i < q->req->n_crops; i++)
    q->pixel_bytes += r[i].frame_bytes_to_device + r[i].frame_bytes_from_device;
}

/* A batch failed: run its requests one by one so that each error (this
 * thread's fap_last_error, handed over with the request) reaches the element
 * whose frame caused it (the others still get their results). */
static void
run_alone (FapInstance * inst, Request ** reqs, guint n, fap_result * results)
{
  for (guint i = 0; i < n; i++) {
    fap_status st = fap_detector_run_batch (inst->detector, reqs[i]->frames,
        (int) reqs[i]->req->n_crops, NULL, results);
    if (st == FAP_OK)
      take_results (inst, reqs[i], results);
    else
      reqs[i]->error = fap_core_failure (st);
  }
}

/* frames a request puts into a batch */
static guint
frames_of (const Request * q)
{
  return q->req->n_crops;
}

static gpointer
scheduler (gpointer data)
{
  FapInstance *inst = data;
  const guint B = inst->batch;
  Request **reqs = g_new0 (Request *, B);
  fap_frame *frames = g_new0 (fap_frame, B);
  fap_result *results = g_new0 (fap_result, B);
  FapCuda cuda = { inst->config.cuda_context, NULL, };

  /* its detector's messages: the debug log (no element: it serves several) */
  fap_set_thread_log_callback (fap_core_log, NULL);
  g_mutex_lock (&inst->lock);
  for (;;) {
    guint n, nf;
    fap_status st;

    while (!inst->quit && g_queue_is_empty (&inst->pending))
      g_cond_wait (&inst->wake, &inst->lock);
    if (inst->quit && g_queue_is_empty (&inst->pending))
      break;
    /* a full batch (or every member's frame), or what has waited
     * batch-timeout since the first */
    while (!inst->quit && inst->pending_frames < B
        && g_queue_get_length (&inst->pending) < MAX (inst->users, 1)) {
      gint64 deadline = inst->first_at + (gint64) inst->config.timeout_us;
      if (g_get_monotonic_time () >= deadline
          || !g_cond_wait_until (&inst->wake, &inst->lock, deadline))
        break;
    }
    /* whole requests, oldest first, while their crops fit */
    for (n = 0, nf = 0; !g_queue_is_empty (&inst->pending)
        && nf + frames_of (g_queue_peek_head (&inst->pending)) <= B; n++) {
      reqs[n] = g_queue_pop_head (&inst->pending);
      memcpy (frames + nf, reqs[n]->frames, frames_of (reqs[n]) *
          sizeof *frames);
      nf += frames_of (reqs[n]);
    }
    inst->pending_frames -= nf;
    inst->first_at = g_get_monotonic_time ();   /* for the ones left */
    g_mutex_unlock (&inst->lock);

    fap_cuda_push (&cuda);
    st = fap_detector_run_batch (inst->detector, frames, (int) nf, NULL,
        results);
    if (st == FAP_OK) {
      for (guint i = 0, at = 0; i < n; at += frames_of (reqs[i]), i++)
        take_results (inst, reqs[i], results + at);
    } else {
      run_alone (inst, reqs, n, results);
    }
    fap_cuda_pop (&cuda);

    g_mutex_lock (&inst->lock);
    inst->batches++;
    inst->frames += nf;
    for (guint i = 0; i < n; i++)
      reqs[i]->done = TRUE;
    g_cond_broadcast (&inst->done);
  }
  g_mutex_unlock (&inst->lock);
  fap_set_thread_log_callback (NULL, NULL);
  g_free (reqs);
  g_free (frames);
  g_free (results);
  return NULL;
}

FapInference *
fap_instance_run (FapInstance * inst, const fap_frame * frames,
    const FapInferRequest * r, gsize * pixel_bytes, gchar ** error)
{
  Request req = { frames, r, FALSE, NULL, 0, NULL };

  *error = NULL;
  if (r->n_crops < 1 || r->n_crops > inst->batch) {
    /* the element refuses such a roi or tiles setting; never a request
     * that no batch can take */
    *error = g_strdup_printf ("%u crops (regions of interest, or their "
        "tiles), but model instance \"%s\" runs at most %u frames in one "
        "batch", r->n_crops, inst->id, inst->batch);
    return NULL;
  }
  g_mutex_lock (&inst->lock);
  if (g_queue_is_empty (&inst->pending))
    inst->first_at = g_get_monotonic_time ();
  g_queue_push_tail (&inst->pending, &req);
  inst->pending_frames += r->n_crops;
  g_cond_broadcast (&inst->wake);
  while (!req.done)
    g_cond_wait (&inst->done, &inst->lock);
  g_mutex_unlock (&inst->lock);
  *error = req.error;
  if (pixel_bytes)
    *pixel_bytes = req.pixel_bytes;
  return req.result;
}

/* ---- the registry ----------------------------------------------------------- */

static gboolean
same_options (const FapInstanceConfig * a, const FapInstanceConfig * b)
{
  const fap_detector_options *x = &a->options, *y = &b->options;
  return x->backend == y->backend && x->device_id == y->device_id
      && x->threads == y->threads && x->image_size == y->image_size
      && x->sigma == y->sigma && x->batch == y->batch
      && x->precision == y->precision && a->timeout_us == b->timeout_us;
}

static void
instance_free (FapInstance * inst)
{
  g_mutex_lock (&inst->lock);
  inst->quit = TRUE;
  g_cond_broadcast (&inst->wake);
  g_mutex_unlock (&inst->lock);
  FapCuda cuda = { inst->config.cuda_context, NULL, };

  if (inst->thread)
    g_thread_join (inst->thread);
  fap_cuda_push (&cuda);        /* its device memory belongs to that context */
  fap_detector_free (inst->detector);
  fap_cuda_pop (&cuda);
  if (inst->config.cuda_context)
    gst_object_unref (inst->config.cuda_context);
  fap_modelcache_release (inst->model);
  g_mutex_clear (&inst->lock);
  g_cond_clear (&inst->wake);
  g_cond_clear (&inst->done);
  g_free (inst->config.model_path);
  g_free (inst->creator);
  fap_stitchers_free (inst->stitchers);
  g_free (inst->key);
  g_free (inst->id);
  g_free (inst);
}

FapInstance *
fap_instance_acquire (const gchar * id, const FapInstanceConfig * config,
    GstElement * element, gchar ** warning, gchar ** error)
{
  FapInstance *inst;
  gboolean shared;
  fap_status st;
  gchar *name = gst_object_get_name (GST_OBJECT (element));
  gchar *key = registry_key (id, config->model_path);

  *warning = *error = NULL;
  g_mutex_lock (&registry_lock);
  if (!registry)
    registry = g_hash_table_new (g_str_hash, g_str_equal);
  inst = g_hash_table_lookup (registry, key);
  if (inst) {
    g_mutex_lock (&inst->lock);
    inst->users++;
    g_mutex_unlock (&inst->lock);
    if (!same_options (&inst->config, config))
      *warning = g_strdup_printf ("model-instance-id \"%s\" was created by "
          "%s with other settings (backend, device-id, threads, "
          "image-size, sigma, batch-size or batch-timeout); %s uses that "
          "instance as it is", id, inst->creator, name);
    g_mutex_unlock (&registry_lock);
    g_free (name);
    g_free (key);
    return inst;
  }

  inst = g_new0 (FapInstance, 1);
  inst->id = g_strdup (id);
  inst->key = key;
  inst->config = *config;
  inst->config.model_path = g_strdup (config->model_path);
  inst->config.options.log = NULL;      /* the scheduler's sink: the debug log */
  inst->config.options.log_user_data = NULL;
  if (config->cuda_context)
    gst_object_ref (config->cuda_context);
  inst->creator = name;
  inst->batch = MAX (config->options.batch, 1);
  inst->stitchers = fap_stitchers_new ();
  g_mutex_init (&inst->lock);
  g_cond_init (&inst->wake);
  g_cond_init (&inst->done);
  g_queue_init (&inst->pending);
  /* held across the load: a second element of this id waits for it */
  st = fap_modelcache_acquire (config->model_path, &inst->model, &shared);
  if (st == FAP_OK)
    st = fap_detector_new (inst->model, &inst->config.options, &inst->detector);
  if (st != FAP_OK) {
    /* before instance_free: this thread's message of the call that failed */
    *error = g_strdup (fap_last_error ()[0] ? fap_last_error () :
        fap_status_string (st));
    g_mutex_unlock (&registry_lock);
    instance_free (inst);
    return NULL;
  }
  inst->users = 1;
  inst->thread = g_thread_new ("faprompt-batch", scheduler, inst);
  g_hash_table_insert (registry, inst->key, inst);
  g_mutex_unlock (&registry_lock);
  return inst;
}

void
fap_instance_release (FapInstance * inst)
{
  gboolean last;

  if (!inst)
    return;
  g_mutex_lock (&registry_lock);
  g_mutex_lock (&inst->lock);
  last = --inst->users == 0;
  g_cond_broadcast (&inst->wake);       /* a smaller batch may be complete now */
  g_mutex_unlock (&inst->lock);
  if (last)
    g_hash_table_remove (registry, inst->key);
  g_mutex_unlock (&registry_lock);
  if (last)
    instance_free (inst);
}

fap_detector *
fap_instance_detector (FapInstance * inst)
{
  return inst->detector;
}

guint
fap_instance_users (FapInstance * inst)
{
  guint n;
  g_mutex_lock (&inst->lock);
  n = inst->users;
  g_mutex_unlock (&inst->lock);
  return n;
}

void
fap_instance_stats (FapInstance * inst, guint64 * batches, guint64 * frames,
    guint * pending)
{
  g_mutex_lock (&inst->lock);
  *batches = inst->batches;
  *frames = inst->frames;
  if (pending)
    *pending = inst->pending_frames;
  g_mutex_unlock (&inst->lock);
}
