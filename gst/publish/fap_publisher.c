/* The sender thread of fapromptpublish (see fap_publisher.h).
 *
 * MQTT runs libmosquitto from this thread's own poll loop (the library's
 * "external loop" calls: mosquitto_loop_read / _write / _misc on
 * mosquitto_socket), so one thread owns the client and the queue's wake-up
 * descriptor wakes it the moment a result is pushed. Connecting is
 * non-blocking (mosquitto_connect_async): an unreachable broker never holds
 * the thread, and stop() never waits on a TCP timeout. A message leaves the
 * queue when libmosquitto reports it published (on_publish: PUBACK / PUBCOMP
 * for QoS 1 / 2, written for QoS 0); a lost connection hands every
 * unconfirmed one over again, in order (at least once). */
#include "fap_publisher.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <mosquitto.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

/* Documents handed to the broker before their PUBACK / PUBCOMP. 20 is
 * mosquitto's default per-client limit for incoming QoS 2 (max_inflight_messages);
 * beyond it an MQTT 3.1.1 broker discards the message though the exchange
 * completes (its PUBREC cannot carry the quota error), so never more. */
#define MAX_INFLIGHT 20
#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 10000

struct _FapPublisher {
  FapPublishConfig cfg;
  FapOutQueue *q;
  GstElement *element;
  GThread *thread;
  gint quit;

  /* counters: written by the thread, read by the element */
  guint64 sent, reconnects;
  gint connected;

  FapEvent scratch;              /* the entry being sent (4.6 kB: not on the stack) */
  GString *json;
  const gchar *sha_path;        /* interned: the model the digest is of */
  guint64 sha_generation;       /* and its generation (a reload of the same
                                 * path may be another file) */
  gchar *sha;

  /* mqtt */
  struct mosquitto *m;
  GHashTable *inflight;         /* mid -> queue index + 1 */
  GHashTable *early;            /* mids on_publish saw inside mosquitto_publish */
  gboolean publishing;
  gboolean have_socket, warned_down;
  gint64 next_attempt_us, backoff_ms;

  /* file / stdout */
  FILE *f;
  guint64 file_bytes;
  gboolean warned_write;
};

void
fap_publish_config_clear (FapPublishConfig * c)
{
  g_free (c->source);
  g_free (c->host);
  g_free (c->topic);
  g_free (c->client_id);
  g_free (c->ca_file);
  g_free (c->cert_file);
  g_free (c->key_file);
  g_free (c->username);
  if (c->password)
    memset (c->password, 0, strlen (c->password));
  g_free (c->password);
  g_free (c->location);
  memset (c, 0, sizeof *c);
}

/* ---- the document ---------------------------------------------------------- */

static const gchar *
model_digest (FapPublisher * p, const FapEvent * e)
{
  if (e->model_file != p->sha_path
      || e->model_generation != p->sha_generation) {
    g_free (p->sha);
    p->sha = fap_event_model_sha256 (e->model_file);
    p->sha_path = e->model_file;
    p->sha_generation = e->model_generation;
  }
  return p->sha;
}

static void
render (FapPublisher * p, const FapEvent * e)
{
  g_string_truncate (p->json, 0);
  fap_event_to_json (e, p->cfg.source, model_digest (p, e), p->cfg.map,
      p->json);
}

/* ---- stats ---------------------------------------------------------------- */

void
fap_publisher_stats (FapPublisher * p, FapPublishStats * s)
{
  s->sent = __atomic_load_n (&p->sent, __ATOMIC_RELAXED);
  s->reconnects = __atomic_load_n (&p->reconnects, __ATOMIC_RELAXED);
  s->connected = __atomic_load_n (&p->connected, __ATOMIC_RELAXED);
  s->queued = fap_outqueue_length (p->q);
  s->dropped = fap_outqueue_dropped (p->q);
}

static void
post_stats (FapPublisher * p)
{
  FapPublishStats s;
  fap_publisher_stats (p, &s);
  gst_element_post_message (p->element,
      gst_message_new_element (GST_OBJECT (p->element),
          gst_structure_new ("fapromptpublish-stats",
              "sent", G_TYPE_UINT64, s.sent,
              "dropped", G_TYPE_UINT64, s.dropped,
              "queued", G_TYPE_UINT, s.queued,
              "reconnects", G_TYPE_UINT64, s.reconnects,
              "connected", G_TYPE_BOOLEAN, s.connected, NULL)));
}

/* ---- file and stdout ------------------------------------------------------ */

static gboolean
open_file (FapPublisher * p, GError ** error)
{
  GStatBuf st;

  p->f = fopen (p->cfg.location, "a");
  if (!p->f) {
    g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (errno),
        "cannot open %s for appending: %s", p->cfg.location,
        g_strerror (errno));
    return FALSE;
  }
  p->file_bytes = g_stat (p->cfg.location, &st) == 0 ? (guint64) st.st_size : 0;
  return TRUE;
}

/* location -> location.1 -> ... -> location.N (the oldest removed) */
static void
rotate (FapPublisher * p)
{
  guint i;

  fclose (p->f);
  p->f = NULL;
  for (i = p->cfg.max_files; i >= 1; i--) {
    gchar *from = i == 1 ? g_strdup (p->cfg.location) :
        g_strdup_printf ("%s.%u", p->cfg.location, i - 1);
    gchar *to = g_strdup_printf ("%s.%u", p->cfg.location, i);
    if (g_rename (from, to) != 0 && errno != ENOENT)
      GST_ELEMENT_WARNING (p->element, RESOURCE, WRITE,
          ("Cannot rotate %s to %s: %s", from, to, g_strerror (errno)),
          (NULL));
    g_free (from);
    g_free (to);
  }
  if (p->cfg.max_files == 0)
    g_unlink (p->cfg.location);
  open_file (p, NULL);
}

/* TRUE when the line is out; a failing write (full disk) keeps it queued */
static gboolean
write_line (FapPublisher * p)
{
  FILE *f;

  if (p->cfg.target == FAP_TARGET_FILE) {
    if (p->f && p->cfg.max_file_bytes
        && p->file_bytes + p->json->len + 1 > p->cfg.max_file_bytes
        && p->file_bytes > 0)
      rotate (p);
    if (!p->f && !open_file (p, NULL))
      goto failed;
  }
  f = p->cfg.target == FAP_TARGET_FILE ? p->f : stdout;
  if (fwrite (p->json->str, 1, p->json->len, f) != p->json->len
      || fputc ('\n', f) == EOF || fflush (f) != 0) {
    clearerr (f);
    goto failed;
  }
  p->file_bytes += p->json->len + 1;
  if (p->warned_write) {
    GST_ELEMENT_INFO (p->element, RESOURCE, WRITE,
        ("Writing to %s again", p->cfg.target == FAP_TARGET_FILE ?
            p->cfg.location : "stdout"), (NULL));
    p->warned_write = FALSE;
  }
  return TRUE;

failed:
  if (!p->warned_write)
    GST_ELEMENT_WARNING (p->element, RESOURCE, WRITE,
        ("Cannot write to %s (%s): results wait in the queue (max-queued) "
            "and are retried every second", p->cfg.target == FAP_TARGET_FILE ?
            p->cfg.location : "stdout", g_strerror (errno)), (NULL));
  p->warned_write = TRUE;
  return FALSE;
}

static void
run_lines (FapPublisher * p)
{
  gint64 next_stats = g_get_monotonic_time () + p->cfg.stats_interval_ms * 1000;

  while (!g_atomic_int_get (&p->quit)) {
    struct pollfd pfd = { p->q->wake_fd, POLLIN, 0 };
    gint timeout_ms = p->cfg.stats_interval_ms ?
        (gint) MAX (0, (next_stats - g_get_monotonic_time ()) / 1000) : -1;
    guint64 index;
    gint64 now;

    if (p->warned_write)        /* retry a failing write every second */
      timeout_ms = timeout_ms < 0 ? 1000 : MIN (timeout_ms, 1000);
    if (poll (&pfd, 1, timeout_ms) > 0)
      fap_outqueue_drain_wake (p->q);
    while (!g_atomic_int_get (&p->quit)
        && fap_outqueue_next (p->q, &p->scratch, &index)) {
      render (p, &p->scratch);
      if (!write_line (p)) {
        fap_outqueue_rewind (p->q);
        break;
      }
      fap_outqueue_confirm (p->q, index);
      __atomic_add_fetch (&p->sent, 1, __ATOMIC_RELAXED);
    }
    now = g_get_monotonic_time ();
    if (p->cfg.stats_interval_ms && now >= next_stats) {
      post_stats (p);
      next_stats = now + p->cfg.stats_interval_ms * 1000;
    }
  }
}

/* ---- mqtt ------------------------------------------------------------------ */

static const gchar *
mqtt_error (gint rc)
{
  return rc == MOSQ_ERR_ERRNO ? g_strerror (errno) : mosquitto_strerror (rc);
}

static void
on_connect (struct mosquitto *m, void *data, int rc)
{
  FapPublisher *p = data;

  if (rc != 0) {                /* refused: bad credentials, client id, ... */
    GST_ELEMENT_WARNING (p->element, RESOURCE, OPEN_WRITE,
        ("MQTT broker %s:%u refused the connection: %s; retrying with "
            "back-off", p->cfg.host, p->cfg.port,
            mosquitto_connack_string (rc)), (NULL));
    p->warned_down = TRUE;
    return;
  }
  g_atomic_int_set (&p->connected, 1);
  p->backoff_ms = BACKOFF_MIN_MS;
  if (p->warned_down)
    GST_ELEMENT_INFO (p->element, RESOURCE, OPEN_WRITE,
        ("MQTT broker %s:%u connected again; %u result(s) queued",
            p->cfg.host, p->cfg.port, fap_outqueue_length (p->q)), (NULL));
  p->warned_down = FALSE;
}

static void
on_publish (struct mosquitto *m, void *data, int mid)
{
  FapPublisher *p = data;
  gpointer v;

  if (g_hash_table_steal_extended (p->inflight, GINT_TO_POINTER (mid), NULL,
          &v)) {
    fap_outqueue_confirm (p->q, (guint64) GPOINTER_TO_SIZE (v) - 1);
    __atomic_add_fetch (&p->sent, 1, __ATOMIC_RELAXED);
  } else if (p->publishing) {
    /* QoS 0 written at once, inside mosquitto_publish: before its mid was
     * known here; publish_queued confirms it when the call returns */
    g_hash_table_add (p->early, GINT_TO_POINTER (mid));
  }
}

/* The connection is gone (or never came): everything unconfirmed goes again
 * once it is back; the next attempt after a doubling delay. */
static void
connection_lost (FapPublisher * p, const gchar * why)
{
  gboolean was = g_atomic_int_get (&p->connected);

  g_atomic_int_set (&p->connected, 0);
  g_hash_table_remove_all (p->inflight);
  fap_outqueue_rewind (p->q);
  if (p->have_socket)
    mosquitto_disconnect (p->m);        /* closes the socket */
  p->have_socket = FALSE;
  if (!p->warned_down)
    GST_ELEMENT_WARNING (p->element, RESOURCE, OPEN_WRITE,
        ("MQTT broker %s:%u %s (%s); results wait in the queue (max-queued, "
            "the oldest dropped when full) and the element reconnects with "
            "back-off", p->cfg.host, p->cfg.port,
            was ? "connection lost" : "unreachable", why), (NULL));
  p->warned_down = TRUE;
  p->next_attempt_us = g_get_monotonic_time () + p->backoff_ms * 1000;
  p->backoff_ms = MIN (p->backoff_ms * 2, BACKOFF_MAX_MS);
}

static void
try_connect (FapPublisher * p, gboolean first)
{
  gint rc = first ? mosquitto_connect_async (p->m, p->cfg.host, (int) p->cfg.port,
      (int) p->cfg.keepalive) : mosquitto_reconnect_async (p->m);

  if (!first)
    __atomic_add_fetch (&p->reconnects, 1, __ATOMIC_RELAXED);
  if (rc == MOSQ_ERR_SUCCESS && mosquitto_socket (p->m) >= 0) {
    p->have_socket = TRUE;
    return;
  }
  p->have_socket = FALSE;
  connection_lost (p, mqtt_error (rc));
}

/* hands queued results to libmosquitto while connected, MAX_INFLIGHT at most */
static void
publish_queued (FapPublisher * p)
{
  guint64 index;

  while (g_atomic_int_get (&p->connected)
      && g_hash_table_size (p->inflight) < MAX_INFLIGHT
      && fap_outqueue_next (p->q, &p->scratch, &index)) {
    gint mid = 0, rc;
    render (p, &p->scratch);
    p->publishing = TRUE;
    rc = mosquitto_publish (p->m, &mid, p->cfg.topic, (int) p->json->len,
        p->json->str, p->cfg.qos, p->cfg.retain);
    p->publishing = FALSE;
    if (rc != MOSQ_ERR_SUCCESS) {
      g_hash_table_remove_all (p->early);
      connection_lost (p, mqtt_error (rc));
      return;
    }
    if (g_hash_table_remove (p->early, GINT_TO_POINTER (mid))) {
      fap_outqueue_confirm (p->q, index);
      __atomic_add_fetch (&p->sent, 1, __ATOMIC_RELAXED);
    } else {
      g_hash_table_insert (p->inflight, GINT_TO_POINTER (mid),
          GSIZE_TO_POINTER ((gsize) index + 1));
    }
  }
}

static void
run_mqtt (FapPublisher * p)
{
  gint64 next_stats = g_get_monotonic_time () + p->cfg.stats_interval_ms * 1000;

  p->backoff_ms = BACKOFF_MIN_MS;
  try_connect (p, TRUE);
  while (!g_atomic_int_get (&p->quit)) {
    struct pollfd pfd[2] = { {p->q->wake_fd, POLLIN, 0}, {-1, 0, 0} };
    gint64 now = g_get_monotonic_time ();
    gint timeout_ms = 1000, rc = MOSQ_ERR_SUCCESS, sock;

    if (!p->have_socket && now >= p->next_attempt_us)
      try_connect (p, FALSE);
    sock = p->have_socket ? mosquitto_socket (p->m) : -1;
    if (sock >= 0) {
      pfd[1].fd = sock;
      pfd[1].events = POLLIN | (mosquitto_want_write (p->m) ? POLLOUT : 0);
    } else {
      timeout_ms = (gint) CLAMP ((p->next_attempt_us - now) / 1000, 0, 1000);
    }
    if (p->cfg.stats_interval_ms)
      timeout_ms = (gint) MIN (timeout_ms, MAX (0, (next_stats - now) / 1000));
    if (poll (pfd, sock >= 0 ? 2 : 1, timeout_ms) < 0 && errno != EINTR)
      g_usleep (10000);
    if (pfd[0].revents & POLLIN)
      fap_outqueue_drain_wake (p->q);
    if (sock >= 0) {
      if (pfd[1].revents & (POLLIN | POLLERR | POLLHUP))
        rc = mosquitto_loop_read (p->m, 1);
      if (rc == MOSQ_ERR_SUCCESS && (pfd[1].revents & POLLOUT))
        rc = mosquitto_loop_write (p->m, 1);
      if (rc == MOSQ_ERR_SUCCESS)
        rc = mosquitto_loop_misc (p->m);        /* keepalive, retries */
      if (rc != MOSQ_ERR_SUCCESS)
        connection_lost (p, mqtt_error (rc));
    }
    publish_queued (p);
    if (p->have_socket && mosquitto_want_write (p->m))
      mosquitto_loop_write (p->m, 1);   /* out now, not after the next poll */
    now = g_get_monotonic_time ();
    if (p->cfg.stats_interval_ms && now >= next_stats) {
      post_stats (p);
      next_stats = now + p->cfg.stats_interval_ms * 1000;
    }
  }
  if (p->have_socket) {
    mosquitto_disconnect (p->m);
    p->have_socket = FALSE;
  }
}

static gboolean
mqtt_setup (FapPublisher * p, GError ** error)
{
  static gsize once;
  gint rc;

  if (g_once_init_enter (&once)) {
    mosquitto_lib_init ();
    g_once_init_leave (&once, 1);
  }
  if (mosquitto_pub_topic_check2 (p->cfg.topic,
          strlen (p->cfg.topic)) != MOSQ_ERR_SUCCESS) {
    g_set_error (error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_SETTINGS,
        "topic \"%s\" is not a topic one may publish to (no + or # "
        "wildcards, not empty, at most 65535 bytes)", p->cfg.topic);
    return FALSE;
  }
  p->m = mosquitto_new (p->cfg.client_id, TRUE, p);
  if (!p->m) {
    g_set_error (error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_FAILED,
        "cannot create an MQTT client: %s", g_strerror (errno));
    return FALSE;
  }
  mosquitto_connect_callback_set (p->m, on_connect);
  mosquitto_publish_callback_set (p->m, on_publish);
  mosquitto_max_inflight_messages_set (p->m, MAX_INFLIGHT);
  if (p->cfg.username) {
    rc = mosquitto_username_pw_set (p->m, p->cfg.username, p->cfg.password);
    if (rc != MOSQ_ERR_SUCCESS) {
      g_set_error (error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_SETTINGS,
          "MQTT username / password not accepted: %s", mqtt_error (rc));
      return FALSE;
    }
  }
  if (p->cfg.ca_file || p->cfg.cert_file) {
    const gchar *files[] = { p->cfg.ca_file, p->cfg.cert_file, p->cfg.key_file };
    for (guint i = 0; i < G_N_ELEMENTS (files); i++)
      if (files[i] && !g_file_test (files[i], G_FILE_TEST_IS_REGULAR)) {
        g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_NOENT,
            "TLS file %s does not exist or is not a file", files[i]);
        return FALSE;
      }
    if ((p->cfg.cert_file != NULL) != (p->cfg.key_file != NULL)) {
      g_set_error (error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_SETTINGS,
          "tls-cert-file and tls-key-file go together (the client "
          "certificate and its key)");
      return FALSE;
    }
    rc = mosquitto_tls_set (p->m, p->cfg.ca_file, NULL, p->cfg.cert_file,
        p->cfg.key_file, NULL);
    if (rc != MOSQ_ERR_SUCCESS) {
      g_set_error (error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_SETTINGS,
          "TLS settings not accepted (CA %s, certificate %s, key %s): %s",
          p->cfg.ca_file ? p->cfg.ca_file : "-",
          p->cfg.cert_file ? p->cfg.cert_file : "-",
          p->cfg.key_file ? p->cfg.key_file : "-", mqtt_error (rc));
      return FALSE;
    }
  }
  p->inflight = g_hash_table_new (g_direct_hash, g_direct_equal);
  p->early = g_hash_table_new (g_direct_hash, g_direct_equal);
  return TRUE;
}

/* ---- thread, start, stop -------------------------------------------------------- */

static gpointer
sender (gpointer data)
{
  FapPublisher *p = data;
  if (p->cfg.target == FAP_TARGET_MQTT)
    run_mqtt (p);
  else
    run_lines (p);
  return NULL;
}

FapPublisher *
fap_publisher_start (GstElement * element, FapPublishConfig * config,
    FapOutQueue * queue, GError ** error)
{
  FapPublisher *p = g_new0 (FapPublisher, 1);
  gboolean ok = TRUE;

  p->cfg = *config;
  memset (config, 0, sizeof *config);
  p->q = queue;
  p->element = element;
  p->json = g_string_sized_new (1024);
  if (p->cfg.target == FAP_TARGET_MQTT)
    ok = mqtt_setup (p, error);
  else if (p->cfg.target == FAP_TARGET_FILE)
    ok = open_file (p, error);
  if (ok)
    p->thread = g_thread_try_new ("fapromptpublish", sender, p, error);
  if (!p->thread) {
    fap_publisher_stop (p, NULL);
    return NULL;
  }
  return p;
}

void
fap_publisher_join (FapPublisher * p)
{
  if (p && p->thread) {
    g_atomic_int_set (&p->quit, 1);
    fap_outqueue_wake (p->q);
    g_thread_join (p->thread);
    p->thread = NULL;
  }
  if (p)
    g_atomic_int_set (&p->connected, 0);
}

void
fap_publisher_stop (FapPublisher * p, FapPublishStats * final)
{
  if (!p)
    return;
  fap_publisher_join (p);
  if (final)
    fap_publisher_stats (p, final);
  if (p->m)
    mosquitto_destroy (p->m);
  if (p->inflight)
    g_hash_table_unref (p->inflight);
  if (p->early)
    g_hash_table_unref (p->early);
  if (p->f)
    fclose (p->f);
  g_string_free (p->json, TRUE);
  g_free (p->sha);
  fap_publish_config_clear (&p->cfg);
  g_free (p);
}
