/* The evidence engine of fapromptrecord (see fap_evidence.h).
 *
 * Two threads feed it: the raw frames' streaming thread (decisions, and a
 * reference to the frame for the snapshot) and the ring branch's (encoded
 * frames: the ring, the open clip). A third, its own, writes snapshots and
 * sidecars (JPEG encoding takes milliseconds) so neither waits. */
#include "fap_evidence.h"
#include "fap_event.h"
#include "fap_frameview.h"
#include "gstfapromptmeta.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <gst/app/app.h>
#include <gst/video/video.h>
#include <string.h>
#include <unistd.h>

typedef struct {
  gchar *path;
  guint64 bytes;
} EvidenceFile;

typedef struct {
  GstSample *frame;             /* NULL: the worker's stop signal */
  FapEvent *event;
  gchar *base;                  /* path without extension */
} SnapshotJob;

struct _FapEvidence {
  FapEvidenceConfig cfg;
  GstElement *element;
  GMutex lock;

  /* decisions (raw thread) */
  gboolean in_event;
  GstClockTime event_end;       /* NONE while the anomaly lasts */
  guint64 sequence;
  gboolean clip_wanted;
  GstClockTime clip_from;       /* event start - pre */
  gchar *clip_base;             /* file name of the event that opens the clip */

  /* ring and clip (encoded thread) */
  GQueue ring;                  /* GstSample, oldest first */
  GstElement *writer, *appsrc;
  gchar *clip_path;
  GstClockTime clip_offset;     /* first PTS of the clip: its time 0 */

  /* snapshots */
  GThread *worker;
  GAsyncQueue *jobs;
  gint pending;

  /* budget: the files of this source in the folder, oldest first */
  GMutex files_lock;
  GQueue files;
  guint64 total;
};

/* ---- files and budget ----------------------------------------------------------- */

static void
post_file (FapEvidence * ev, const gchar * kind, const gchar * path,
    guint64 bytes)
{
  gst_element_post_message (ev->element,
      gst_message_new_element (GST_OBJECT (ev->element),
          gst_structure_new ("fapromptrecord", "kind", G_TYPE_STRING, kind,
              "location", G_TYPE_STRING, path, "bytes", G_TYPE_UINT64, bytes,
              "source", G_TYPE_STRING, ev->cfg.source, NULL)));
}

/* Counts a file in, then removes the oldest ones until the folder's files of
 * this source fit max-bytes (the newest stays even when it alone does not). */
static void
account (FapEvidence * ev, const gchar * path, const gchar * kind)
{
  GStatBuf st;
  EvidenceFile *f;

  if (g_stat (path, &st) != 0)
    return;
  f = g_new (EvidenceFile, 1);
  f->path = g_strdup (path);
  f->bytes = (guint64) st.st_size;
  post_file (ev, kind, path, f->bytes);
  g_mutex_lock (&ev->files_lock);
  g_queue_push_tail (&ev->files, f);
  ev->total += f->bytes;
  while (ev->total > ev->cfg.max_bytes && ev->files.length > 1) {
    EvidenceFile *old = g_queue_pop_head (&ev->files);
    if (g_unlink (old->path) == 0 || errno == ENOENT) {
      GST_DEBUG_OBJECT (ev->element, "budget: removed %s", old->path);
      post_file (ev, "removed", old->path, old->bytes);
    }
    ev->total -= old->bytes;
    g_free (old->path);
    g_free (old);
  }
  if (ev->total > ev->cfg.max_bytes)
    GST_ELEMENT_WARNING (ev->element, RESOURCE, NO_SPACE_LEFT,
        ("%s alone (%" G_GUINT64_FORMAT " bytes) is larger than max-bytes "
            "(%" G_GUINT64_FORMAT ")", path, f->bytes, ev->cfg.max_bytes),
        (NULL));
  g_mutex_unlock (&ev->files_lock);
}

static gint
compare_names (gconstpointer a, gconstpointer b)
{
  return g_strcmp0 (*(const gchar * const *) a, *(const gchar * const *) b);
}

/* the files an earlier run left, so the budget covers them too (names start
 * with the UTC time: sorting them is sorting by age) */
static void
scan_existing (FapEvidence * ev)
{
  GDir *d = g_dir_open (ev->cfg.dir, 0, NULL);
  GPtrArray *names = g_ptr_array_new_with_free_func (g_free);
  gchar *prefix = g_strconcat (ev->cfg.source, "_", NULL);
  const gchar *n;

  if (!d)
    goto out;
  while ((n = g_dir_read_name (d)))
    if (g_str_has_prefix (n, prefix) && (g_str_has_suffix (n, ".jpg")
            || g_str_has_suffix (n, ".json") || g_str_has_suffix (n, ".mkv")))
      g_ptr_array_add (names, g_strdup (n));
  g_dir_close (d);
  g_ptr_array_sort (names, compare_names);      /* pointers to the elements */
  for (guint i = 0; i < names->len; i++) {
    gchar *path = g_build_filename (ev->cfg.dir, names->pdata[i], NULL);
    GStatBuf st;
    if (g_stat (path, &st) == 0) {
      EvidenceFile *f = g_new (EvidenceFile, 1);
      f->path = path;
      f->bytes = (guint64) st.st_size;
      g_queue_push_tail (&ev->files, f);
      ev->total += f->bytes;
    } else {
      g_free (path);
    }
  }
out:
  g_free (prefix);
  g_ptr_array_unref (names);
}

/* <dir>/<source>_<YYYYmmddTHHMMSS.mmmZ>_<sequence> */
static gchar *
base_name (FapEvidence * ev, gint64 wall_us, guint64 seq)
{
  GDateTime *dt = g_date_time_new_from_unix_utc (wall_us / G_USEC_PER_SEC);
  gchar *stamp = g_date_time_format (dt, "%Y%m%dT%H%M%S");
  gchar *name = g_strdup_printf ("%s_%s.%03dZ_%" G_GUINT64_FORMAT,
      ev->cfg.source, stamp, (gint) (wall_us % G_USEC_PER_SEC / 1000), seq);
  gchar *path = g_build_filename (ev->cfg.dir, name, NULL);
  g_date_time_unref (dt);
  g_free (stamp);
  g_free (name);
  return path;
}

/* ---- snapshots (worker thread) ---------------------------------------------------- */

static gboolean
write_jpeg (FapEvidence * ev, GstSample * frame, const gchar * path)
{
  GstCaps *jpeg = gst_caps_new_empty_simple ("image/jpeg");
  GError *err = NULL;
  GstSample *out = gst_video_convert_sample (frame, jpeg, 5 * GST_SECOND, &err);
  gboolean ok = FALSE;

  gst_caps_unref (jpeg);
  if (out) {
    GstMapInfo map;
    GstBuffer *b = gst_sample_get_buffer (out);
    if (gst_buffer_map (b, &map, GST_MAP_READ)) {
      ok = g_file_set_contents (path, (const gchar *) map.data, map.size,
          &err);
      gst_buffer_unmap (b, &map);
    }
    gst_sample_unref (out);
  }
  if (!ok)
    GST_ELEMENT_WARNING (ev->element, RESOURCE, WRITE,
        ("Cannot write the snapshot %s: %s", path,
            err ? err->message : "JPEG encoding failed"), (NULL));
  g_clear_error (&err);
  return ok;
}

/* frames arrived clean (faprompt draw-heatmap=false): the annotated snapshot
 * is drawn here, with the core's drawing, on a copy */
static GstSample *
annotated (GstSample * frame)
{
  GstBuffer *buf = gst_buffer_copy_deep (gst_sample_get_buffer (frame));
  GstFAPromptMeta *m = gst_buffer_get_faprompt_meta (buf);
  GstVideoInfo info;
  GstVideoFrame vf;
  GstSample *out = NULL;

  if (m && m->map_width == m->map_height
      && m->map_stride == m->map_width * sizeof (gfloat)
      && gst_video_info_from_caps (&info, gst_sample_get_caps (frame))
      && gst_video_frame_map (&vf, &info, buf, GST_MAP_READWRITE)) {
    fap_frame f;
    fap_blend blend;
    gpointer state = NULL;
    GstMeta *meta;
    gboolean ok = TRUE;
    fap_frameview_of (&vf, &f);
    fap_blend_init (&blend);
    blend.threshold = m->pixel_threshold;
    /* each meta's map into the rectangle it covers (faprompt's roi: one
     * meta per rectangle; without: the whole frame) */
    while (ok && (meta = gst_buffer_iterate_meta_filtered (buf, &state,
                GST_FAPROMPT_META_API_TYPE))) {
      const GstFAPromptMeta *rm = (const GstFAPromptMeta *) meta;
      if (rm->map_width != rm->map_height
          || rm->map_stride != rm->map_width * sizeof (gfloat))
        continue;
      f.crop = (fap_rect) {
      0, 0, 0, 0};              /* a rectangle of another frame: all of this one */
      if (rm->x >= 0 && rm->y >= 0 && rm->width > 0 && rm->height > 0
          && (gint64) rm->x + rm->width <= f.width
          && (gint64) rm->y + rm->height <= f.height)
        f.crop = (fap_rect) {
        rm->x, rm->y, (int) rm->width, (int) rm->height};
      ok = fap_blend_frame (&f, rm->map, (int) rm->map_width, &blend) ==
          FAP_OK;
    }
    if (ok)
      out = gst_sample_new (buf, gst_sample_get_caps (frame), NULL, NULL);
    gst_video_frame_unmap (&vf);
  }
  gst_buffer_unref (buf);
  return out;
}

static gpointer
snapshot_worker (gpointer data)
{
  FapEvidence *ev = data;
  GString *json = g_string_new (NULL);
  SnapshotJob *job;

  while ((job = g_async_queue_pop (ev->jobs)) && job->frame) {
    gchar *jpg = g_strconcat (job->base, ".jpg", NULL);
    gchar *side = g_strconcat (job->base, ".json", NULL);
    gchar *sha = fap_event_model_sha256 (job->event->model_file);
    GError *err = NULL;

    if (ev->cfg.clean_snapshot) {
      gchar *clean = g_strconcat (job->base, "_clean.jpg", NULL);
      GstSample *drawn = annotated (job->frame);
      if (write_jpeg (ev, job->frame, clean))
        account (ev, clean, "snapshot-clean");
      if (drawn && write_jpeg (ev, drawn, jpg))
        account (ev, jpg, "snapshot");
      if (drawn)
        gst_sample_unref (drawn);
      g_free (clean);
    } else if (write_jpeg (ev, job->frame, jpg)) {
      account (ev, jpg, "snapshot");
    }
    g_string_truncate (json, 0);
    fap_event_to_json (job->event, ev->cfg.source, sha, FAP_EVENT_MAP_NONE,
        json);
    g_string_append_c (json, '\n');
    if (g_file_set_contents (side, json->str, (gssize) json->len, &err))
      account (ev, side, "sidecar");
    else
      GST_ELEMENT_WARNING (ev->element, RESOURCE, WRITE,
          ("Cannot write the sidecar %s: %s", side, err->message), (NULL));
    g_clear_error (&err);
    g_free (sha);
    g_free (jpg);
    g_free (side);
    gst_sample_unref (job->frame);
    g_free (job->event);
    g_free (job->base);
    g_free (job);
    g_atomic_int_add (&ev->pending, -1);
  }
  g_free (job);
  g_string_free (json, TRUE);
  return NULL;
}

/* ---- decisions (raw thread) --------------------------------------------------------- */

void
fap_evidence_raw (FapEvidence * ev, GstBuffer * buf, GstCaps * caps,
    GstClockTime running_time)
{
  GstFAPromptMeta *m = gst_buffer_get_faprompt_meta (buf);
  GstClockTime pts = running_time;
  gboolean start = FALSE, anomalous = FALSE;
  SnapshotJob *job;
  guint64 seq;
  gint64 wall;

  if (!m || !GST_CLOCK_TIME_IS_VALID (pts) || ev->cfg.max_bytes == 0)
    return;
  /* the frame's decision: any of its metas (faprompt's roi: one per
   * rectangle) */
  {
    gpointer state = NULL;
    GstMeta *meta;
    while (!anomalous && (meta = gst_buffer_iterate_meta_filtered (buf,
                &state, GST_FAPROMPT_META_API_TYPE)))
      anomalous = ((GstFAPromptMeta *) meta)->anomalous;
  }
  g_mutex_lock (&ev->lock);
  if (anomalous && !ev->in_event) {
    start = TRUE;
    ev->in_event = TRUE;
    ev->event_end = GST_CLOCK_TIME_NONE;
    ev->sequence++;
  } else if (!anomalous && ev->in_event) {
    ev->in_event = FALSE;
    ev->event_end = pts;
  }
  if (!start) {
    g_mutex_unlock (&ev->lock);
    return;
  }
  wall = g_get_real_time ();
  seq = ev->sequence;
  job = g_new0 (SnapshotJob, 1);
  job->base = base_name (ev, wall, seq);
  if (!ev->writer && !ev->clip_wanted) {        /* else: the open clip grows */
    ev->clip_wanted = TRUE;
    ev->clip_from = pts > ev->cfg.pre ? pts - ev->cfg.pre : 0;
    g_free (ev->clip_base);
    ev->clip_base = g_strdup (job->base);
  }
  g_mutex_unlock (&ev->lock);

  /* only at an event: a reference to the frame, a copy of the result */
  job->frame = gst_sample_new (buf, caps, NULL, NULL);
  job->event = g_new0 (FapEvent, 1);
  fap_event_capture (job->event, buf, 0);
  job->event->sequence = seq;
  job->event->wall_us = wall;
  job->event->event = "anomaly-started";
  g_atomic_int_add (&ev->pending, 1);
  g_async_queue_push (ev->jobs, job);
}

/* ---- ring and clip (encoded thread) -------------------------------------------------- */

/* running time: the raw side's clock (encoders shift PTS) */
static GstClockTime
sample_pts (GstSample * s)
{
  GstSegment *seg = gst_sample_get_segment (s);
  GstClockTime pts = GST_BUFFER_PTS (gst_sample_get_buffer (s));
  if (seg && seg->format == GST_FORMAT_TIME && GST_CLOCK_TIME_IS_VALID (pts))
    return gst_segment_to_running_time (seg, GST_FORMAT_TIME, pts);
  return pts;
}

static gboolean
is_key (GstSample * s)
{
  return !GST_BUFFER_FLAG_IS_SET (gst_sample_get_buffer (s),
      GST_BUFFER_FLAG_DELTA_UNIT);
}

/* keeps the ring from the last key frame at or before newest - pre */
static void
trim_ring (FapEvidence * ev, GstClockTime newest)
{
  GstClockTime keep_from = newest > ev->cfg.pre ? newest - ev->cfg.pre : 0;

  for (;;) {
    GList *l;
    GstSample *second_key = NULL;
    for (l = ev->ring.head ? ev->ring.head->next : NULL; l; l = l->next)
      if (is_key (l->data)) {
        second_key = l->data;
        break;
      }
    if (!second_key || sample_pts (second_key) > keep_from)
      break;
    while (ev->ring.head->data != second_key)
      gst_sample_unref (g_queue_pop_head (&ev->ring));
  }
}

static void
push_to_clip (FapEvidence * ev, GstSample * s)
{
  GstBuffer *b = gst_buffer_copy (gst_sample_get_buffer (s));  /* shares memory */

  if (!GST_CLOCK_TIME_IS_VALID (ev->clip_offset))
    ev->clip_offset = GST_BUFFER_PTS (b);
  if (GST_BUFFER_PTS_IS_VALID (b))
    GST_BUFFER_PTS (b) -= MIN (GST_BUFFER_PTS (b), ev->clip_offset);
  if (GST_BUFFER_DTS_IS_VALID (b))
    GST_BUFFER_DTS (b) -= MIN (GST_BUFFER_DTS (b), ev->clip_offset);
  gst_app_src_push_buffer (GST_APP_SRC (ev->appsrc), b);
}

static gboolean
open_clip (FapEvidence * ev, GstCaps * caps)
{
  GstElement *mux, *sink;

  ev->clip_path = g_strconcat (ev->clip_base, ".mkv", NULL);
  ev->writer = gst_pipeline_new ("fapromptrecord-clip");
  ev->appsrc = gst_element_factory_make ("appsrc", NULL);
  mux = gst_element_factory_make ("matroskamux", NULL);
  sink = gst_element_factory_make ("filesink", NULL);
  if (!ev->appsrc || !mux || !sink) {
    GST_ELEMENT_WARNING (ev->element, CORE, MISSING_PLUGIN,
        ("Cannot write clips: appsrc, matroskamux or filesink is missing "
            "(Debian: gstreamer1.0-plugins-base, -good)"), (NULL));
    gst_clear_object (&ev->appsrc);
    gst_clear_object (&mux);
    gst_clear_object (&sink);
    gst_clear_object (&ev->writer);
    g_clear_pointer (&ev->clip_path, g_free);
    return FALSE;
  }
  g_object_set (ev->appsrc, "caps", caps, "format", GST_FORMAT_TIME,
      "max-bytes", (guint64) 0, NULL);
  g_object_set (sink, "location", ev->clip_path, "sync", FALSE, NULL);
  gst_bin_add_many (GST_BIN (ev->writer), ev->appsrc, mux, sink, NULL);
  gst_element_link_many (ev->appsrc, mux, sink, NULL);
  ev->clip_offset = GST_CLOCK_TIME_NONE;
  if (gst_element_set_state (ev->writer, GST_STATE_PLAYING) ==
      GST_STATE_CHANGE_FAILURE) {
    GST_ELEMENT_WARNING (ev->element, RESOURCE, OPEN_WRITE,
        ("Cannot start writing the clip %s", ev->clip_path), (NULL));
    gst_element_set_state (ev->writer, GST_STATE_NULL);
    gst_clear_object (&ev->writer);
    ev->appsrc = NULL;
    g_clear_pointer (&ev->clip_path, g_free);
    return FALSE;
  }
  return TRUE;
}

/* EOS into the writer, wait (10 s at most) for the file to be finished */
static void
close_clip (FapEvidence * ev)
{
  GstBus *bus = gst_element_get_bus (ev->writer);
  GstMessage *msg;

  gst_app_src_end_of_stream (GST_APP_SRC (ev->appsrc));
  msg = gst_bus_timed_pop_filtered (bus, 10 * GST_SECOND,
      GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  if (!msg || GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR) {
    GError *err = NULL;
    if (msg)
      gst_message_parse_error (msg, &err, NULL);
    GST_ELEMENT_WARNING (ev->element, RESOURCE, WRITE,
        ("The clip %s could not be finished: %s", ev->clip_path,
            err ? err->message : "no EOS within 10 s"), (NULL));
    g_clear_error (&err);
  }
  if (msg)
    gst_message_unref (msg);
  gst_object_unref (bus);
  gst_element_set_state (ev->writer, GST_STATE_NULL);
  gst_clear_object (&ev->writer);
  ev->appsrc = NULL;
  account (ev, ev->clip_path, "clip");
  g_clear_pointer (&ev->clip_path, g_free);
}

void
fap_evidence_encoded (FapEvidence * ev, GstSample * sample)
{
  GstClockTime pts = sample_pts (sample);

  if (!GST_CLOCK_TIME_IS_VALID (pts) || ev->cfg.max_bytes == 0) {
    gst_sample_unref (sample);
    return;
  }
  g_mutex_lock (&ev->lock);
  g_queue_push_tail (&ev->ring, sample);
  trim_ring (ev, pts);
  if (!ev->writer && ev->clip_wanted && pts >= ev->clip_from) {
    ev->clip_wanted = FALSE;
    if (open_clip (ev, gst_sample_get_caps (sample))) {
      /* from the last key frame at or before event start - pre */
      GList *from = ev->ring.head;
      for (GList * l = ev->ring.head; l; l = l->next)
        if (is_key (l->data) && sample_pts (l->data) <= ev->clip_from)
          from = l;
      for (GList * l = from; l; l = l->next)
        push_to_clip (ev, l->data);
    }
  } else if (ev->writer) {
    push_to_clip (ev, sample);
    if (!ev->in_event && GST_CLOCK_TIME_IS_VALID (ev->event_end)
        && pts >= ev->event_end + ev->cfg.post)
      close_clip (ev);
  }
  g_mutex_unlock (&ev->lock);
}

void
fap_evidence_finish (FapEvidence * ev)
{
  g_mutex_lock (&ev->lock);
  if (ev->writer)
    close_clip (ev);
  ev->clip_wanted = FALSE;
  ev->in_event = FALSE;
  g_mutex_unlock (&ev->lock);
  /* the snapshots of the last events are written before EOS goes on */
  for (gint i = 0; i < 1000 && g_atomic_int_get (&ev->pending) > 0; i++)
    g_usleep (10000);
}

/* ---- life ---------------------------------------------------------------------------- */

FapEvidence *
fap_evidence_new (GstElement * element, FapEvidenceConfig * config,
    GError ** error)
{
  FapEvidence *ev;
  gchar *probe;
  gint fd;

  if (g_mkdir_with_parents (config->dir, 0755) != 0) {
    g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (errno),
        "cannot create the folder %s: %s", config->dir, g_strerror (errno));
    return NULL;
  }
  probe = g_build_filename (config->dir, ".fapromptrecord-XXXXXX", NULL);
  fd = g_mkstemp (probe);
  if (fd < 0) {
    g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (errno),
        "cannot write into %s: %s", config->dir, g_strerror (errno));
    g_free (probe);
    return NULL;
  }
  close (fd);
  g_unlink (probe);
  g_free (probe);

  ev = g_new0 (FapEvidence, 1);
  ev->cfg = *config;
  memset (config, 0, sizeof *config);
  ev->element = element;
  g_mutex_init (&ev->lock);
  g_mutex_init (&ev->files_lock);
  g_queue_init (&ev->ring);
  g_queue_init (&ev->files);
  ev->event_end = GST_CLOCK_TIME_NONE;
  scan_existing (ev);
  ev->jobs = g_async_queue_new ();
  ev->worker = g_thread_new ("fapromptrecord", snapshot_worker, ev);
  return ev;
}

void
fap_evidence_free (FapEvidence * ev)
{
  if (!ev)
    return;
  fap_evidence_finish (ev);
  g_async_queue_push (ev->jobs, g_new0 (SnapshotJob, 1));       /* stop */
  g_thread_join (ev->worker);
  g_async_queue_unref (ev->jobs);
  g_queue_clear_full (&ev->ring, (GDestroyNotify) gst_sample_unref);
  while (ev->files.length) {
    EvidenceFile *f = g_queue_pop_head (&ev->files);
    g_free (f->path);
    g_free (f);
  }
  g_mutex_clear (&ev->lock);
  g_mutex_clear (&ev->files_lock);
  g_free (ev->clip_base);
  g_free (ev->cfg.dir);
  g_free (ev->cfg.source);
  g_free (ev);
}
