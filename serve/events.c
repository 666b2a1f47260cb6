/* See events.h. */
#include "events.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "gstfapromptmeta.h"

/* "CAMERA_YYYYMMDDTHHMMSS.mmmZ_N.jpg" (gst/record/fap_evidence.c) fits */
#define SNAPSHOT_MAX 160

typedef struct {
  gint64 wall_us;
  gdouble score;
  guint64 pipeline;             /* which pipeline of the camera saw it */
  guint64 sequence;             /* its n-th start: fapromptrecord's `_n` */
  gchar snapshot[SNAPSHOT_MAX]; /* relative to the evidence folder; "" if none */
} Event;

struct CamEvents {
  gatomicrefcount refs;
  GMutex lock; /* the event ring, the pipeline counter */
  Event ring[EVENTS_MAX];
  guint head, count; /* next slot, slots used */
  guint64 total;
  guint64 pipelines;          /* the current pipeline's number */
  atomic_uint threshold_bits; /* the newest result's image threshold (a float's bits) */
  atomic_bool have_threshold;
  /* score history: main loop only */
  gint64 hist_t[HISTORY_SECONDS];      /* unix seconds */
  gdouble hist_score[HISTORY_SECONDS]; /* NAN: none */
  guint hist_head, hist_count;
  gint64 last_sample_us;
};

/* What one pipeline's probe remembers: only its streaming thread. */
typedef struct {
  CamEvents *ev;
  guint64 pipeline;
  guint64 sequence;
  gboolean anomalous;
} Tracker;

CamEvents *cam_events_new(void) {
  CamEvents *ev = g_new0(CamEvents, 1);
  g_atomic_ref_count_init(&ev->refs);
  g_mutex_init(&ev->lock);
  return ev;
}

static CamEvents *ref(CamEvents *ev) {
  g_atomic_ref_count_inc(&ev->refs);
  return ev;
}

void cam_events_unref(CamEvents *ev) {
  if (!ev || !g_atomic_ref_count_dec(&ev->refs))
    return;
  g_mutex_clear(&ev->lock);
  g_free(ev);
}

static void tracker_free(gpointer data) {
  Tracker *t = data;
  cam_events_unref(t->ev);
  g_free(t);
}

static GstPadProbeReturn on_frame(GstPad *pad, GstPadProbeInfo *info, gpointer data) {
  Tracker *t = data;
  GstBuffer *buf = GST_PAD_PROBE_INFO_BUFFER(info);
  gpointer state = NULL;
  GstMeta *meta;
  gboolean any = FALSE, anomalous = FALSE;
  gdouble score = -INFINITY;
  gfloat threshold = 0;
  while ((meta = gst_buffer_iterate_meta_filtered(buf, &state, GST_FAPROMPT_META_API_TYPE))) {
    const GstFAPromptMeta *m = (const GstFAPromptMeta *)meta;
    any = TRUE;
    anomalous |= m->anomalous;
    score = MAX(score, m->score);
    threshold = m->image_threshold;
  }
  if (!any)
    return GST_PAD_PROBE_OK;
  guint bits;
  memcpy(&bits, &threshold, sizeof bits);
  atomic_store_explicit(&t->ev->threshold_bits, bits, memory_order_relaxed);
  atomic_store_explicit(&t->ev->have_threshold, TRUE, memory_order_release);
  if (anomalous && !t->anomalous) {
    CamEvents *ev = t->ev;
    t->sequence++;
    g_mutex_lock(&ev->lock);
    Event *e = &ev->ring[ev->head];
    e->wall_us = g_get_real_time();
    e->score = score;
    e->pipeline = t->pipeline;
    e->sequence = t->sequence;
    e->snapshot[0] = '\0';
    ev->head = (ev->head + 1) % EVENTS_MAX;
    ev->count = MIN(ev->count + 1, EVENTS_MAX);
    ev->total++;
    g_mutex_unlock(&ev->lock);
  }
  t->anomalous = anomalous;
  return GST_PAD_PROBE_OK;
}

void cam_events_attach(CamEvents *ev, GstElement *detector) {
  Tracker *t = g_new0(Tracker, 1);
  t->ev = ref(ev);
  g_mutex_lock(&ev->lock);
  t->pipeline = ++ev->pipelines;
  g_mutex_unlock(&ev->lock);
  GstPad *src = gst_element_get_static_pad(detector, "src");
  gst_pad_add_probe(src, GST_PAD_PROBE_TYPE_BUFFER, on_frame, t, tracker_free);
  gst_object_unref(src);
}

/* The `_n` of fapromptrecord's "SOURCE_TIME_n.jpg"; 0 when not one. */
static guint64 name_sequence(const gchar *name) {
  const gchar *us = strrchr(name, '_');
  if (!us || !g_str_has_suffix(name, ".jpg"))
    return 0;
  gchar *end;
  guint64 n = g_ascii_strtoull(us + 1, &end, 10);
  return strcmp(end, ".jpg") == 0 ? n : 0;
}

void cam_events_message(CamEvents *ev, GstMessage *msg, const gchar *evidence) {
  const GstStructure *s = gst_message_get_structure(msg);
  if (!evidence || !s || !gst_structure_has_name(s, "fapromptrecord"))
    return;
  const gchar *kind = gst_structure_get_string(s, "kind");
  const gchar *location = gst_structure_get_string(s, "location");
  gsize dl = strlen(evidence);
  if (!kind || !location || strncmp(location, evidence, dl) != 0 || location[dl] != '/')
    return;
  const gchar *rel = location + dl + 1;
  gboolean snapshot = !strcmp(kind, "snapshot"), removed = !strcmp(kind, "removed");
  if ((!snapshot && !removed) || strlen(rel) >= SNAPSHOT_MAX)
    return;
  guint64 seq = name_sequence(rel);
  g_mutex_lock(&ev->lock);
  for (guint i = 0; i < ev->count; i++) {
    Event *e = &ev->ring[(ev->head + EVENTS_MAX - 1 - i) % EVENTS_MAX];
    if (snapshot && seq && e->pipeline == ev->pipelines && e->sequence == seq) {
      g_strlcpy(e->snapshot, rel, sizeof e->snapshot);
      break;
    }
    if (removed && !strcmp(e->snapshot, rel)) {
      e->snapshot[0] = '\0';
      break;
    }
  }
  g_mutex_unlock(&ev->lock);
}

void cam_events_tick(CamEvents *ev, CamStats *stats, gint64 now_us) {
  if (ev->last_sample_us && now_us - ev->last_sample_us < G_USEC_PER_SEC)
    return;
  ev->last_sample_us = now_us;
  gint64 last = atomic_load_explicit(&stats->last_frame_us, memory_order_relaxed);
  gdouble score = NAN;
  if (last && now_us - last < 2 * G_USEC_PER_SEC &&
      atomic_load_explicit(&stats->have_score, memory_order_acquire)) {
    guint64 bits = atomic_load_explicit(&stats->last_score_bits, memory_order_relaxed);
    memcpy(&score, &bits, sizeof score);
  }
  ev->hist_t[ev->hist_head] = g_get_real_time() / G_USEC_PER_SEC;
  ev->hist_score[ev->hist_head] = score;
  ev->hist_head = (ev->hist_head + 1) % HISTORY_SECONDS;
  ev->hist_count = MIN(ev->hist_count + 1, HISTORY_SECONDS);
}

guint64 cam_events_total(CamEvents *ev) {
  g_mutex_lock(&ev->lock);
  guint64 n = ev->total;
  g_mutex_unlock(&ev->lock);
  return n;
}

static void add_time(JsonBuilder *b, gint64 wall_us) {
  GDateTime *dt = g_date_time_new_from_unix_utc(wall_us / G_USEC_PER_SEC);
  gchar *stamp = g_date_time_format(dt, "%Y-%m-%dT%H:%M:%S");
  gchar *text = g_strdup_printf("%s.%03dZ", stamp, (gint)(wall_us % G_USEC_PER_SEC / 1000));
  json_builder_set_member_name(b, "time");
  json_builder_add_string_value(b, text);
  json_builder_set_member_name(b, "unix");
  json_builder_add_double_value(b, wall_us / 1e6);
  g_free(text);
  g_free(stamp);
  g_date_time_unref(dt);
}

JsonNode *cam_events_to_json(CamEvents *ev, const gchar *camera) {
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "camera");
  json_builder_add_string_value(b, camera);
  g_mutex_lock(&ev->lock);
  json_builder_set_member_name(b, "total");
  json_builder_add_int_value(b, (gint64)ev->total);
  json_builder_set_member_name(b, "events");
  json_builder_begin_array(b);
  for (guint i = 0; i < ev->count; i++) {
    const Event *e = &ev->ring[(ev->head + EVENTS_MAX - 1 - i) % EVENTS_MAX];
    json_builder_begin_object(b);
    add_time(b, e->wall_us);
    json_builder_set_member_name(b, "score");
    json_builder_add_double_value(b, e->score);
    json_builder_set_member_name(b, "snapshot");
    if (e->snapshot[0]) {
      gchar *escaped = g_uri_escape_string(e->snapshot, "/", FALSE);
      gchar *url = g_strconcat("/evidence/", escaped, NULL);
      json_builder_add_string_value(b, url);
      g_free(url);
      g_free(escaped);
    } else {
      json_builder_add_null_value(b);
    }
    json_builder_end_object(b);
  }
  g_mutex_unlock(&ev->lock);
  json_builder_end_array(b);
  json_builder_end_object(b);
  JsonNode *node = json_builder_get_root(b);
  g_object_unref(b);
  return node;
}

JsonNode *cam_events_history_json(CamEvents *ev, const gchar *camera) {
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "camera");
  json_builder_add_string_value(b, camera);
  json_builder_set_member_name(b, "period");
  json_builder_add_double_value(b, 1.0);
  json_builder_set_member_name(b, "threshold");
  if (atomic_load_explicit(&ev->have_threshold, memory_order_acquire)) {
    guint bits = atomic_load_explicit(&ev->threshold_bits, memory_order_relaxed);
    gfloat t;
    memcpy(&t, &bits, sizeof t);
    json_builder_add_double_value(b, t);
  } else {
    json_builder_add_null_value(b);
  }
  guint first = (ev->hist_head + HISTORY_SECONDS - ev->hist_count) % HISTORY_SECONDS;
  json_builder_set_member_name(b, "t");
  json_builder_begin_array(b);
  for (guint i = 0; i < ev->hist_count; i++)
    json_builder_add_int_value(b, ev->hist_t[(first + i) % HISTORY_SECONDS]);
  json_builder_end_array(b);
  json_builder_set_member_name(b, "score");
  json_builder_begin_array(b);
  for (guint i = 0; i < ev->hist_count; i++) {
    gdouble s = ev->hist_score[(first + i) % HISTORY_SECONDS];
    if (isnan(s))
      json_builder_add_null_value(b);
    else
      json_builder_add_double_value(b, s);
  }
  json_builder_end_array(b);
  json_builder_end_object(b);
  JsonNode *node = json_builder_get_root(b);
  g_object_unref(b);
  return node;
}
