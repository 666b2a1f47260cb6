/**
 * SECTION:element-fapromptpublish
 * @title: fapromptpublish
 *
 * Placed after `faprompt`, passes every buffer through untouched and sends
 * the result it carries as a JSON document (schema faprompt-result/1,
 * gst/common/schema/faprompt-result-1.schema.json) to an MQTT broker, a JSON Lines
 * file (rotated by size) or stdout. Sending happens on a thread of its own:
 * the streaming thread only copies the result into a bounded queue
 * (`max-queued`; when full the oldest is dropped and counted), so a broker
 * that is slow or away never stalls the video. Lost connections are retried
 * with back-off and what is queued goes out in order once it is back.
 *
 * ## Example
 * |[
 * gst-launch-1.0 v4l2src ! videoconvert ! faprompt model-file=m.safetensors \
 *     ! fapromptpublish target=mqtt host=broker topic=line1/{source}/result \
 *       source-id=cam1 policy=on-change ! videoconvert ! autovideosink
 * ]|
 * The MQTT password is never a property (gst-launch -v would print it): it
 * is read from `password-file` or the environment variable named by
 * `password-env`.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstfapromptpublish.h"

#include <errno.h>
#include <string.h>

GST_DEBUG_CATEGORY_STATIC (fap_publish_debug);
#define GST_CAT_DEFAULT fap_publish_debug

enum
{
  PROP_0,
  PROP_TARGET,
  PROP_SOURCE_ID,
  PROP_POLICY,
  PROP_MAX_RATE,
  PROP_INCLUDE_MAP,
  PROP_MAP_SIZE,
  PROP_MAX_QUEUED,
  PROP_HOST,
  PROP_PORT,
  PROP_TOPIC,
  PROP_QOS,
  PROP_RETAIN,
  PROP_CLIENT_ID,
  PROP_KEEPALIVE,
  PROP_TLS_CA_FILE,
  PROP_TLS_CERT_FILE,
  PROP_TLS_KEY_FILE,
  PROP_USERNAME,
  PROP_PASSWORD_FILE,
  PROP_PASSWORD_ENV,
  PROP_LOCATION,
  PROP_MAX_FILE_BYTES,
  PROP_MAX_FILES,
  PROP_STATS_INTERVAL,
  PROP_FLUSH_TIMEOUT,
  PROP_MESSAGES_SENT,
  PROP_MESSAGES_DROPPED,
  PROP_MESSAGES_QUEUED,
  PROP_RECONNECTS,
  PROP_CONNECTED,
};

#define DEFAULT_TOPIC "faprompt/{source}/result"
#define DEFAULT_MAX_QUEUED 1000

static GType
target_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {FAP_TARGET_STDOUT, "JSON Lines on standard output", "stdout"},
    {FAP_TARGET_FILE, "JSON Lines appended to location (rotated by "
          "max-file-bytes)", "file"},
    {FAP_TARGET_MQTT, "An MQTT broker (libmosquitto)", "mqtt"},
    {0, NULL, NULL},
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstFAPromptPublishTarget", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

static GType
policy_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {FAP_REPORT_EVERY_FRAME, "One document per frame carrying a "
          "result", "every-frame"},
    {FAP_REPORT_ON_CHANGE, "One document when the decision flips "
          "(event anomaly-started / anomaly-ended)", "on-change"},
    {FAP_REPORT_ANOMALOUS, "One document per anomalous frame",
        "anomalous"},
    {0, NULL, NULL},
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstFAPromptPublishPolicy", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

static GType
map_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {FAP_EVENT_MAP_NONE, "No map", "none"},
    {FAP_EVENT_MAP_ARRAY, "map-size x map-size cell means as rows of "
          "numbers", "array"},
    {FAP_EVENT_MAP_BASE64, "The same grid as base64 of float32 "
          "little-endian", "base64"},
    {0, NULL, NULL},
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstFAPromptPublishMap", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define gst_fa_prompt_publish_parent_class parent_class
G_DEFINE_TYPE (GstFAPromptPublish, gst_fa_prompt_publish,
    GST_TYPE_BASE_TRANSFORM);
GST_ELEMENT_REGISTER_DEFINE (fapromptpublish, "fapromptpublish",
    GST_RANK_NONE, GST_TYPE_FAPROMPT_PUBLISH);

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS_ANY);
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS_ANY);

/* ---- start / stop ------------------------------------------------------------ */

/* "pipeline0/fapromptpublish0": who sent it, when nothing else is set */
static gchar *
default_source (GstFAPromptPublish * self)
{
  GstObject *top = GST_OBJECT (self), *parent;
  gchar *name, *top_name, *s;

  gst_object_ref (top);
  while ((parent = gst_object_get_parent (top))) {
    gst_object_unref (top);
    top = parent;
  }
  name = gst_object_get_name (GST_OBJECT (self));
  top_name = gst_object_get_name (top);
  s = top == GST_OBJECT (self) ? g_strdup (name) :
      g_strdup_printf ("%s/%s", top_name, name);
  g_free (name);
  g_free (top_name);
  gst_object_unref (top);
  return s;
}

/* first line of a file, or the variable's value; never a property */
static gboolean
read_password (GstFAPromptPublish * self, gchar ** out)
{
  GError *err = NULL;
  gchar *text = NULL;

  *out = NULL;
  if (self->password_file) {
    if (!g_file_get_contents (self->password_file, &text, NULL, &err)) {
      GST_ELEMENT_ERROR (self, RESOURCE, OPEN_READ,
          ("Cannot read the MQTT password from password-file %s: %s",
              self->password_file, err->message), (NULL));
      g_error_free (err);
      return FALSE;
    }
    text[strcspn (text, "\r\n")] = '\0';
    *out = text;
  } else if (self->password_env) {
    const gchar *v = g_getenv (self->password_env);
    if (!v) {
      GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
          ("password-env names %s, which is not set in the environment",
              self->password_env), (NULL));
      return FALSE;
    }
    *out = g_strdup (v);
  }
  return TRUE;
}

static gboolean
gst_fa_prompt_publish_start (GstBaseTransform * trans)
{
  GstFAPromptPublish *self = GST_FAPROMPT_PUBLISH (trans);
  FapPublishConfig c = { 0 };
  GError *err = NULL;
  gchar **parts;
  guint max_queued;

  GST_OBJECT_LOCK (self);
  c.target = self->target;
  c.source = self->source_id ? g_strdup (self->source_id) : NULL;
  c.map = self->include_map;
  c.host = g_strdup (self->host);
  c.port = self->port;
  c.qos = self->qos;
  c.retain = self->retain;
  c.client_id = g_strdup (self->client_id);
  c.keepalive = self->keepalive;
  c.ca_file = g_strdup (self->tls_ca_file);
  c.cert_file = g_strdup (self->tls_cert_file);
  c.key_file = g_strdup (self->tls_key_file);
  c.username = g_strdup (self->username);
  c.location = g_strdup (self->location);
  c.max_file_bytes = self->max_file_bytes;
  c.max_files = self->max_files;
  c.stats_interval_ms = self->stats_interval * 1000;
  c.topic = g_strdup (self->topic);
  max_queued = self->max_queued;
  GST_OBJECT_UNLOCK (self);

  if (!c.source)
    c.source = default_source (self);
  parts = g_strsplit (c.topic, "{source}", -1);
  g_free (c.topic);
  c.topic = g_strjoinv (c.source, parts);
  g_strfreev (parts);

  if (c.target == FAP_TARGET_MQTT) {
    if (!c.host || !*c.host || c.port < 1 || c.port > 65535) {
      GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
          ("target=mqtt needs host and a port in 1..65535 (got host %s, "
              "port %u)", c.host ? c.host : "(none)", c.port), (NULL));
      goto failed;
    }
    if (!read_password (self, &c.password))
      goto failed;
    if (c.password && !c.username) {
      GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
          ("A password was given (password-file / password-env) but no "
              "username"), (NULL));
      goto failed;
    }
  }
  if (c.target == FAP_TARGET_FILE && (!c.location || !*c.location)) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("target=file needs location (the JSON Lines file)"), (NULL));
    goto failed;
  }
  if (!fap_outqueue_init (&self->queue, max_queued)) {
    GST_ELEMENT_ERROR (self, RESOURCE, FAILED,
        ("Cannot create the sender's wake-up descriptor: %s",
            g_strerror (errno)), (NULL));
    goto failed;
  }
  GST_INFO_OBJECT (self, "target %d, source %s, topic %s", c.target, c.source,
      c.topic);
  g_mutex_lock (&self->publisher_lock);
  self->publisher = fap_publisher_start (GST_ELEMENT (self), &c, &self->queue,
      &err);
  g_mutex_unlock (&self->publisher_lock);
  if (!self->publisher) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("Cannot start publishing: %s", err->message), (NULL));
    g_error_free (err);
    fap_outqueue_clear (&self->queue);
    return FALSE;
  }
  self->sequence = 0;
  self->report.in_anomaly = FALSE;
  self->rate_last_us = 0;
  self->rate_tokens = 1.0;
  return TRUE;

failed:
  fap_publish_config_clear (&c);
  return FALSE;
}

static gboolean
gst_fa_prompt_publish_stop (GstBaseTransform * trans)
{
  GstFAPromptPublish *self = GST_FAPROMPT_PUBLISH (trans);

  FapPublisher *p;
  FapPublishStats s;

  /* joined without the lock: the sender posts messages, and a bus handler
   * on its thread may read the counters (which take the lock) meanwhile */
  g_mutex_lock (&self->publisher_lock);
  p = self->publisher;
  g_mutex_unlock (&self->publisher_lock);
  if (!p)
    return TRUE;
  fap_publisher_join (p);
  g_mutex_lock (&self->publisher_lock);
  self->publisher = NULL;
  g_mutex_unlock (&self->publisher_lock);
  fap_publisher_stop (p, &s);
  GST_OBJECT_LOCK (self);
  self->last_stats = s;
  GST_OBJECT_UNLOCK (self);
  fap_outqueue_clear (&self->queue);
  return TRUE;
}

/* ---- the streaming thread: capture, decide, push -------------------------------- */

/* token bucket of max-rate documents a second (events are never held back) */
static gboolean
rate_allows (GstFAPromptPublish * self, gdouble max_rate)
{
  gint64 now = g_get_monotonic_time ();

  if (max_rate <= 0)
    return TRUE;
  if (self->rate_last_us)
    self->rate_tokens = MIN (1.0, self->rate_tokens +
        (now - self->rate_last_us) * max_rate / 1e6);
  self->rate_last_us = now;
  if (self->rate_tokens < 1.0)
    return FALSE;
  self->rate_tokens -= 1.0;
  return TRUE;
}

static void
push (GstFAPromptPublish * self, const gchar * event)
{
  self->scratch.sequence = ++self->sequence;
  self->scratch.wall_us = g_get_real_time ();
  self->scratch.event = event;
  if (fap_outqueue_push (&self->queue, &self->scratch))
    GST_LOG_OBJECT (self, "queue full: the oldest result was dropped");
}

static GstFlowReturn
gst_fa_prompt_publish_transform_ip (GstBaseTransform * trans, GstBuffer * buf)
{
  GstFAPromptPublish *self = GST_FAPROMPT_PUBLISH (trans);
  FapReportPolicy policy;
  gdouble max_rate;
  guint map_side;
  const gchar *event = NULL;
  gboolean send;

  GST_OBJECT_LOCK (self);
  policy = self->policy;
  max_rate = self->max_rate;
  map_side = self->include_map == FAP_EVENT_MAP_NONE ? 0 : self->map_size;
  GST_OBJECT_UNLOCK (self);

  if (!self->publisher
      || !fap_event_capture (&self->scratch, buf, map_side))
    return GST_FLOW_OK;         /* no result on this buffer: nothing to say */
  /* max-rate holds back documents, never on-change events */
  send = fap_report_frame (&self->report, policy, self->scratch.anomalous,
      &event);
  if (send && policy != FAP_REPORT_ON_CHANGE)
    send = rate_allows (self, max_rate);
  if (send)
    push (self, event);
  return GST_FLOW_OK;
}

/* every anomaly-started gets its anomaly-ended (EOS, flush), then EOS waits
 * up to flush-timeout for the queue to empty, so the last results of a file
 * are out before the pipeline ends */
static gboolean
gst_fa_prompt_publish_sink_event (GstBaseTransform * trans, GstEvent * event)
{
  GstFAPromptPublish *self = GST_FAPROMPT_PUBLISH (trans);
  GstEventType type = GST_EVENT_TYPE (event);
  FapReportPolicy policy;

  GST_OBJECT_LOCK (self);
  policy = self->policy;
  GST_OBJECT_UNLOCK (self);
  if ((type == GST_EVENT_EOS || type == GST_EVENT_FLUSH_STOP)
      && self->publisher && fap_report_end (&self->report, policy)) {
    /* closes the event; score, thresholds and inference stay those of the
     * last result (the schema says so) */
    self->scratch.anomalous = FALSE;
    self->scratch.pts = GST_CLOCK_TIME_NONE;
    self->scratch.n_regions = self->scratch.region_count = 0;
    self->scratch.map_side = 0;
    push (self, "anomaly-ended");
  }
  if (type == GST_EVENT_EOS && self->publisher) {
    guint timeout_ms;
    gint64 deadline;
    GST_OBJECT_LOCK (self);
    timeout_ms = self->flush_timeout;
    GST_OBJECT_UNLOCK (self);
    deadline = g_get_monotonic_time () + (gint64) timeout_ms * 1000;
    while (fap_outqueue_length (&self->queue) > 0
        && g_get_monotonic_time () < deadline)
      g_usleep (2000);
    if (fap_outqueue_length (&self->queue) > 0)
      GST_ELEMENT_WARNING (self, RESOURCE, WRITE,
          ("%u result(s) still unsent at EOS after flush-timeout (%u ms)",
              fap_outqueue_length (&self->queue), timeout_ms), (NULL));
  }
  return GST_BASE_TRANSFORM_CLASS (parent_class)->sink_event (trans, event);
}

/* ---- properties ---------------------------------------------------------------- */

static void
set_string (GstFAPromptPublish * self, gchar ** field, const GValue * value)
{
  GST_OBJECT_LOCK (self);
  g_free (*field);
  *field = g_value_dup_string (value);
  GST_OBJECT_UNLOCK (self);
}

static void
gst_fa_prompt_publish_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstFAPromptPublish *self = GST_FAPROMPT_PUBLISH (object);

  switch (prop_id) {
    case PROP_SOURCE_ID:
      set_string (self, &self->source_id, value);
      return;
    case PROP_HOST:
      set_string (self, &self->host, value);
      return;
    case PROP_TOPIC:
      set_string (self, &self->topic, value);
      return;
    case PROP_CLIENT_ID:
      set_string (self, &self->client_id, value);
      return;
    case PROP_TLS_CA_FILE:
      set_string (self, &self->tls_ca_file, value);
      return;
    case PROP_TLS_CERT_FILE:
      set_string (self, &self->tls_cert_file, value);
      return;
    case PROP_TLS_KEY_FILE:
      set_string (self, &self->tls_key_file, value);
      return;
    case PROP_USERNAME:
      set_string (self, &self->username, value);
      return;
    case PROP_PASSWORD_FILE:
      set_string (self, &self->password_file, value);
      return;
    case PROP_PASSWORD_ENV:
      set_string (self, &self->password_env, value);
      return;
    case PROP_LOCATION:
      set_string (self, &self->location, value);
      return;
    default:
      break;
  }
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_TARGET:
      self->target = g_value_get_enum (value);
      break;
    case PROP_POLICY:
      self->policy = g_value_get_enum (value);
      break;
    case PROP_MAX_RATE:
      self->max_rate = g_value_get_double (value);
      break;
    case PROP_INCLUDE_MAP:
      self->include_map = g_value_get_enum (value);
      break;
    case PROP_MAP_SIZE:
      self->map_size = g_value_get_uint (value);
      break;
    case PROP_MAX_QUEUED:
      self->max_queued = g_value_get_uint (value);
      break;
    case PROP_PORT:
      self->port = g_value_get_uint (value);
      break;
    case PROP_QOS:
      self->qos = g_value_get_int (value);
      break;
    case PROP_RETAIN:
      self->retain = g_value_get_boolean (value);
      break;
    case PROP_KEEPALIVE:
      self->keepalive = g_value_get_uint (value);
      break;
    case PROP_MAX_FILE_BYTES:
      self->max_file_bytes = g_value_get_uint64 (value);
      break;
    case PROP_MAX_FILES:
      self->max_files = g_value_get_uint (value);
      break;
    case PROP_STATS_INTERVAL:
      self->stats_interval = g_value_get_uint (value);
      break;
    case PROP_FLUSH_TIMEOUT:
      self->flush_timeout = g_value_get_uint (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_fa_prompt_publish_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec)
{
  GstFAPromptPublish *self = GST_FAPROMPT_PUBLISH (object);
  FapPublishStats s;

  if (prop_id >= PROP_MESSAGES_SENT) {
    GST_OBJECT_LOCK (self);
    s = self->last_stats;
    GST_OBJECT_UNLOCK (self);
    g_mutex_lock (&self->publisher_lock);
    if (self->publisher)
      fap_publisher_stats (self->publisher, &s);
    g_mutex_unlock (&self->publisher_lock);
  }
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_TARGET:
      g_value_set_enum (value, self->target);
      break;
    case PROP_SOURCE_ID:
      g_value_set_string (value, self->source_id);
      break;
    case PROP_POLICY:
      g_value_set_enum (value, self->policy);
      break;
    case PROP_MAX_RATE:
      g_value_set_double (value, self->max_rate);
      break;
    case PROP_INCLUDE_MAP:
      g_value_set_enum (value, self->include_map);
      break;
    case PROP_MAP_SIZE:
      g_value_set_uint (value, self->map_size);
      break;
    case PROP_MAX_QUEUED:
      g_value_set_uint (value, self->max_queued);
      break;
    case PROP_HOST:
      g_value_set_string (value, self->host);
      break;
    case PROP_PORT:
      g_value_set_uint (value, self->port);
      break;
    case PROP_TOPIC:
      g_value_set_string (value, self->topic);
      break;
    case PROP_QOS:
      g_value_set_int (value, self->qos);
      break;
    case PROP_RETAIN:
      g_value_set_boolean (value, self->retain);
      break;
    case PROP_CLIENT_ID:
      g_value_set_string (value, self->client_id);
      break;
    case PROP_KEEPALIVE:
      g_value_set_uint (value, self->keepalive);
      break;
    case PROP_TLS_CA_FILE:
      g_value_set_string (value, self->tls_ca_file);
      break;
    case PROP_TLS_CERT_FILE:
      g_value_set_string (value, self->tls_cert_file);
      break;
    case PROP_TLS_KEY_FILE:
      g_value_set_string (value, self->tls_key_file);
      break;
    case PROP_USERNAME:
      g_value_set_string (value, self->username);
      break;
    case PROP_PASSWORD_FILE:
      g_value_set_string (value, self->password_file);
      break;
    case PROP_PASSWORD_ENV:
      g_value_set_string (value, self->password_env);
      break;
    case PROP_LOCATION:
      g_value_set_string (value, self->location);
      break;
    case PROP_MAX_FILE_BYTES:
      g_value_set_uint64 (value, self->max_file_bytes);
      break;
    case PROP_MAX_FILES:
      g_value_set_uint (value, self->max_files);
      break;
    case PROP_STATS_INTERVAL:
      g_value_set_uint (value, self->stats_interval);
      break;
    case PROP_FLUSH_TIMEOUT:
      g_value_set_uint (value, self->flush_timeout);
      break;
    case PROP_MESSAGES_SENT:
      g_value_set_uint64 (value, s.sent);
      break;
    case PROP_MESSAGES_DROPPED:
      g_value_set_uint64 (value, s.dropped);
      break;
    case PROP_MESSAGES_QUEUED:
      g_value_set_uint (value, s.queued);
      break;
    case PROP_RECONNECTS:
      g_value_set_uint64 (value, s.reconnects);
      break;
    case PROP_CONNECTED:
      g_value_set_boolean (value, s.connected);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_fa_prompt_publish_finalize (GObject * object)
{
  GstFAPromptPublish *self = GST_FAPROMPT_PUBLISH (object);
  g_free (self->source_id);
  g_free (self->host);
  g_free (self->topic);
  g_free (self->client_id);
  g_free (self->tls_ca_file);
  g_free (self->tls_cert_file);
  g_free (self->tls_key_file);
  g_free (self->username);
  g_free (self->password_file);
  g_free (self->password_env);
  g_free (self->location);
  g_mutex_clear (&self->publisher_lock);
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

#define RW (G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY)
#define RO (G_PARAM_READABLE | G_PARAM_STATIC_STRINGS)

static void
gst_fa_prompt_publish_class_init (GstFAPromptPublishClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS (klass);

  GST_DEBUG_CATEGORY_INIT (fap_publish_debug, "fapromptpublish", 0,
      "faprompt result publisher");
  gobject_class->set_property = gst_fa_prompt_publish_set_property;
  gobject_class->get_property = gst_fa_prompt_publish_get_property;
  gobject_class->finalize = gst_fa_prompt_publish_finalize;

  g_object_class_install_property (gobject_class, PROP_TARGET,
      g_param_spec_enum ("target", "Target", "Where the documents go",
          target_get_type (), FAP_TARGET_STDOUT, RW));
  g_object_class_install_property (gobject_class, PROP_SOURCE_ID,
      g_param_spec_string ("source-id", "Source id", "The document's source "
          "(and {source} in topic). NULL: <pipeline name>/<element name>",
          NULL, RW));
  g_object_class_install_property (gobject_class, PROP_POLICY,
      g_param_spec_enum ("policy", "Policy", "Which results are sent (the "
          "words of faprompt's post-messages)", policy_get_type (),
          FAP_REPORT_ON_CHANGE, RW | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_MAX_RATE,
      g_param_spec_double ("max-rate", "Max rate", "At most this many "
          "documents a second in every-frame and anomalous modes (0: no "
          "limit); on-change events are never held back", 0, 1e6, 0,
          RW | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_INCLUDE_MAP,
      g_param_spec_enum ("include-map", "Include map", "Add the anomaly map "
          "as a map-size x map-size grid of cell means", map_get_type (),
          FAP_EVENT_MAP_NONE, RW | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_MAP_SIZE,
      g_param_spec_uint ("map-size", "Map size", "Side of the map grid",
          1, FAP_EVENT_MAX_MAP, 16, RW | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_MAX_QUEUED,
      g_param_spec_uint ("max-queued", "Max queued", "Results waiting to be "
          "sent at most (while the broker is away); when full the oldest is "
          "dropped and counted in messages-dropped", 1, 1000000,
          DEFAULT_MAX_QUEUED, RW));
  g_object_class_install_property (gobject_class, PROP_HOST,
      g_param_spec_string ("host", "Host", "MQTT broker host", "localhost",
          RW));
  g_object_class_install_property (gobject_class, PROP_PORT,
      g_param_spec_uint ("port", "Port", "MQTT broker port (checked at start: "
          "1..65535)", 0, G_MAXUINT, 1883, RW));
  g_object_class_install_property (gobject_class, PROP_TOPIC,
      g_param_spec_string ("topic", "Topic", "MQTT topic; {source} is "
          "replaced by source-id. No wildcards", DEFAULT_TOPIC, RW));
  g_object_class_install_property (gobject_class, PROP_QOS,
      g_param_spec_int ("qos", "QoS", "MQTT quality of service (0: at most "
          "once, 1: at least once, 2: exactly once per connection)", 0, 2, 1,
          RW));
  g_object_class_install_property (gobject_class, PROP_RETAIN,
      g_param_spec_boolean ("retain", "Retain", "Ask the broker to keep the "
          "last document for new subscribers", FALSE, RW));
  g_object_class_install_property (gobject_class, PROP_CLIENT_ID,
      g_param_spec_string ("client-id", "Client id", "MQTT client id (NULL: "
          "one the library makes up)", NULL, RW));
  g_object_class_install_property (gobject_class, PROP_KEEPALIVE,
      g_param_spec_uint ("keepalive", "Keepalive", "MQTT keepalive, seconds",
          5, 65535, 30, RW));
  g_object_class_install_property (gobject_class, PROP_TLS_CA_FILE,
      g_param_spec_string ("tls-ca-file", "TLS CA file", "PEM file of the "
          "CA that signed the broker's certificate: TLS on when set", NULL,
          RW));
  g_object_class_install_property (gobject_class, PROP_TLS_CERT_FILE,
      g_param_spec_string ("tls-cert-file", "TLS certificate", "PEM client "
          "certificate (with tls-key-file)", NULL, RW));
  g_object_class_install_property (gobject_class, PROP_TLS_KEY_FILE,
      g_param_spec_string ("tls-key-file", "TLS key", "PEM key of "
          "tls-cert-file", NULL, RW));
  g_object_class_install_property (gobject_class, PROP_USERNAME,
      g_param_spec_string ("username", "Username", "MQTT username", NULL,
          RW));
  g_object_class_install_property (gobject_class, PROP_PASSWORD_FILE,
      g_param_spec_string ("password-file", "Password file", "File whose "
          "first line is the MQTT password", NULL, RW));
  g_object_class_install_property (gobject_class, PROP_PASSWORD_ENV,
      g_param_spec_string ("password-env", "Password variable", "Name of the "
          "environment variable holding the MQTT password", NULL, RW));
  g_object_class_install_property (gobject_class, PROP_LOCATION,
      g_param_spec_string ("location", "Location", "target=file: the JSON "
          "Lines file (appended to)", NULL, RW));
  g_object_class_install_property (gobject_class, PROP_MAX_FILE_BYTES,
      g_param_spec_uint64 ("max-file-bytes", "Max file bytes", "Rotate the "
          "file (location.1, .2, ...) before it grows past this (0: never)",
          0, G_MAXUINT64, 0, RW));
  g_object_class_install_property (gobject_class, PROP_MAX_FILES,
      g_param_spec_uint ("max-files", "Max files", "Rotated files kept",
          0, 1000, 5, RW));
  g_object_class_install_property (gobject_class, PROP_STATS_INTERVAL,
      g_param_spec_uint ("stats-interval", "Stats interval", "Seconds between "
          "fapromptpublish-stats element messages (0: none)", 0, 3600, 10,
          RW));
  g_object_class_install_property (gobject_class, PROP_FLUSH_TIMEOUT,
      g_param_spec_uint ("flush-timeout", "Flush timeout", "At EOS, wait up "
          "to this many milliseconds for queued results to go out", 0,
          600000, 5000, RW | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_MESSAGES_SENT,
      g_param_spec_uint64 ("messages-sent", "Sent", "Documents the target "
          "confirmed", 0, G_MAXUINT64, 0, RO));
  g_object_class_install_property (gobject_class, PROP_MESSAGES_DROPPED,
      g_param_spec_uint64 ("messages-dropped", "Dropped", "Documents dropped "
          "because the queue was full", 0, G_MAXUINT64, 0, RO));
  g_object_class_install_property (gobject_class, PROP_MESSAGES_QUEUED,
      g_param_spec_uint ("messages-queued", "Queued", "Documents waiting now",
          0, G_MAXUINT, 0, RO));
  g_object_class_install_property (gobject_class, PROP_RECONNECTS,
      g_param_spec_uint64 ("reconnects", "Reconnects", "Connection attempts "
          "after the first", 0, G_MAXUINT64, 0, RO));
  g_object_class_install_property (gobject_class, PROP_CONNECTED,
      g_param_spec_boolean ("connected", "Connected", "Connected to the "
          "broker now", FALSE, RO));

  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);
  gst_element_class_set_static_metadata (element_class,
      "FAPrompt result publisher", "Filter/Analyzer/Video",
      "Sends each faprompt result as JSON to MQTT, a JSON Lines file or "
      "stdout, off the streaming thread", "faprompt developers");

  trans_class->start = GST_DEBUG_FUNCPTR (gst_fa_prompt_publish_start);
  trans_class->stop = GST_DEBUG_FUNCPTR (gst_fa_prompt_publish_stop);
  trans_class->transform_ip =
      GST_DEBUG_FUNCPTR (gst_fa_prompt_publish_transform_ip);
  trans_class->sink_event = GST_DEBUG_FUNCPTR (gst_fa_prompt_publish_sink_event);
  trans_class->passthrough_on_same_caps = TRUE;
  trans_class->transform_ip_on_passthrough = TRUE;

  gst_type_mark_as_plugin_api (target_get_type (), 0);
  gst_type_mark_as_plugin_api (policy_get_type (), 0);
  gst_type_mark_as_plugin_api (map_get_type (), 0);
}

static void
gst_fa_prompt_publish_init (GstFAPromptPublish * self)
{
  g_mutex_init (&self->publisher_lock);
  self->target = FAP_TARGET_STDOUT;
  self->policy = FAP_REPORT_ON_CHANGE;
  self->include_map = FAP_EVENT_MAP_NONE;
  self->map_size = 16;
  self->max_queued = DEFAULT_MAX_QUEUED;
  self->host = g_strdup ("localhost");
  self->port = 1883;
  self->topic = g_strdup (DEFAULT_TOPIC);
  self->qos = 1;
  self->keepalive = 30;
  self->max_files = 5;
  self->stats_interval = 10;
  self->flush_timeout = 5000;
  gst_base_transform_set_in_place (GST_BASE_TRANSFORM (self), TRUE);
  gst_base_transform_set_passthrough (GST_BASE_TRANSFORM (self), TRUE);
}
