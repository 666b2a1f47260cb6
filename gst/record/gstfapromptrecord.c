/**
 * SECTION:element-fapromptrecord
 * @title: fapromptrecord
 *
 * Evidence of each anomaly, placed after `faprompt` (pass-through): when a
 * frame's decision turns anomalous, a JPEG snapshot of that frame, a JSON
 * sidecar (the fapromptpublish document, schema faprompt-result/1) and a
 * Matroska clip from `pre-seconds` before the event to `post-seconds` after
 * its end, cut from an in-memory ring of encoded frames so it starts on the
 * key frame at or before event start − pre (like DeepStream's Smart Record).
 * Files are named `<source-id>_<UTC time>_<n>.{jpg,json,mkv}` in `location`;
 * the folder's files of this source are kept under `max-bytes` (the oldest
 * removed). A bus message `fapromptrecord` per file written or removed.
 *
 * Inside: tee → queue → src (the video, untouched) and tee → leaky queue →
 * videoconvert → `encoder` (default jpegenc: every frame a key frame) →
 * appsink (the ring). The ring branch never holds the video back: when the
 * encoder falls behind, its queue drops frames.
 *
 * |[
 * gst-launch-1.0 v4l2src ! videoconvert ! faprompt model-file=m.safetensors \
 *     ! fapromptrecord location=/var/lib/faprompt/evidence source-id=cam1 \
 *       pre-seconds=5 post-seconds=5 max-bytes=10000000000 \
 *     ! videoconvert ! autovideosink
 * ]|
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstfapromptrecord.h"
#include "fap_evidence.h"
#include "gstfapromptmeta.h"

#include <gst/app/app.h>
#include <gst/video/video.h>

GST_DEBUG_CATEGORY_STATIC (fap_record_debug);
#define GST_CAT_DEFAULT fap_record_debug

enum
{
  PROP_0,
  PROP_LOCATION,
  PROP_SOURCE_ID,
  PROP_PRE_SECONDS,
  PROP_POST_SECONDS,
  PROP_MAX_BYTES,
  PROP_ENCODER,
  PROP_CLEAN_SNAPSHOT,
};

#define DEFAULT_ENCODER "jpegenc quality=85"

#define gst_fa_prompt_record_parent_class parent_class
G_DEFINE_TYPE (GstFAPromptRecord, gst_fa_prompt_record, GST_TYPE_BIN);
GST_ELEMENT_REGISTER_DEFINE (fapromptrecord, "fapromptrecord",
    GST_RANK_NONE, GST_TYPE_FAPROMPT_RECORD);

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS ("video/x-raw"));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS ("video/x-raw"));

/* ---- the two threads that feed the engine -------------------------------------- */

static GstPadProbeReturn
raw_probe (GstPad * pad, GstPadProbeInfo * info, gpointer data)
{
  GstFAPromptRecord *self = data;
  GstBuffer *buf = GST_PAD_PROBE_INFO_BUFFER (info);
  GstEvent *seg_event;
  GstClockTime rt = GST_BUFFER_PTS (buf);
  GstCaps *caps;

  if (!self->ev || !gst_buffer_get_faprompt_meta (buf))
    return GST_PAD_PROBE_OK;
  seg_event = gst_pad_get_sticky_event (pad, GST_EVENT_SEGMENT, 0);
  if (seg_event) {
    const GstSegment *seg;
    gst_event_parse_segment (seg_event, &seg);
    if (seg->format == GST_FORMAT_TIME && GST_CLOCK_TIME_IS_VALID (rt))
      rt = gst_segment_to_running_time (seg, GST_FORMAT_TIME, rt);
    gst_event_unref (seg_event);
  }
  caps = gst_pad_get_current_caps (pad);
  if (caps) {
    fap_evidence_raw (self->ev, buf, caps, rt);
    gst_caps_unref (caps);
  }
  return GST_PAD_PROBE_OK;
}

static GstFlowReturn
on_sample (GstAppSink * sink, gpointer data)
{
  GstFAPromptRecord *self = data;
  GstSample *s = gst_app_sink_pull_sample (sink);

  if (s && self->ev)
    fap_evidence_encoded (self->ev, s);
  else if (s)
    gst_sample_unref (s);
  return GST_FLOW_OK;
}

static void
on_eos (GstAppSink * sink, gpointer data)
{
  GstFAPromptRecord *self = data;
  if (self->ev)
    fap_evidence_finish (self->ev);
}

/* ---- state ------------------------------------------------------------------------ */

static gchar *
default_source (GstFAPromptRecord * self)
{
  gchar *name = gst_object_get_name (GST_OBJECT (self));
  return name;
}

/* only letters, digits, '.', '-', '_' in file names */
static gchar *
file_safe (const gchar * s)
{
  gchar *out = g_strdup (s);
  for (gchar * p = out; *p; p++)
    if (!g_ascii_isalnum (*p) && *p != '.' && *p != '-' && *p != '_')
      *p = '_';
  return out;
}

static gboolean
build_encoder (GstFAPromptRecord * self)
{
  GError *err = NULL;
  gchar *desc;
  GstElement *enc;

  GST_OBJECT_LOCK (self);
  desc = g_strdup (self->encoder_desc);
  GST_OBJECT_UNLOCK (self);
  enc = gst_parse_bin_from_description (desc, TRUE, &err);
  if (!enc) {
    GST_ELEMENT_ERROR (self, CORE, MISSING_PLUGIN,
        ("Cannot make the encoder \"%s\": %s", desc, err->message), (NULL));
    g_error_free (err);
    g_free (desc);
    return FALSE;
  }
  g_free (desc);
  if (self->encoder) {
    gst_element_set_state (self->encoder, GST_STATE_NULL);
    gst_bin_remove (GST_BIN (self), self->encoder);
  }
  self->encoder = enc;
  gst_bin_add (GST_BIN (self), enc);
  if (!gst_element_link_many (self->convert, enc, self->sink, NULL)) {
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
        ("The encoder \"%s\" does not link between videoconvert and an "
            "appsink", self->encoder_desc), (NULL));
    return FALSE;
  }
  return TRUE;
}

static GstStateChangeReturn
gst_fa_prompt_record_change_state (GstElement * element,
    GstStateChange transition)
{
  GstFAPromptRecord *self = GST_FAPROMPT_RECORD (element);
  GstStateChangeReturn ret;

  if (transition == GST_STATE_CHANGE_NULL_TO_READY) {
    FapEvidenceConfig c = { 0 };
    GError *err = NULL;
    gchar *source;

    if (!build_encoder (self))
      return GST_STATE_CHANGE_FAILURE;
    GST_OBJECT_LOCK (self);
    c.dir = g_strdup (self->location);
    source = self->source_id ? g_strdup (self->source_id) : NULL;
    c.pre = (GstClockTime) (self->pre_seconds * GST_SECOND);
    c.post = (GstClockTime) (self->post_seconds * GST_SECOND);
    c.max_bytes = self->max_bytes;
    c.clean_snapshot = self->clean_snapshot;
    GST_OBJECT_UNLOCK (self);
    if (!source)
      source = default_source (self);
    c.source = file_safe (source);
    g_free (source);
    if (!c.dir || !*c.dir) {
      GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
          ("fapromptrecord needs location (the evidence folder)"), (NULL));
      g_free (c.dir);
      g_free (c.source);
      return GST_STATE_CHANGE_FAILURE;
    }
    if (c.max_bytes == 0)
      GST_ELEMENT_WARNING (self, RESOURCE, NO_SPACE_LEFT,
          ("max-bytes=0: no disk budget, so no evidence is written; frames "
              "pass through"), (NULL));
    self->ev = fap_evidence_new (element, &c, &err);
    if (!self->ev) {
      GST_ELEMENT_ERROR (self, RESOURCE, OPEN_WRITE,
          ("Cannot keep evidence: %s", err->message), (NULL));
      g_error_free (err);
      g_free (c.dir);
      g_free (c.source);
      return GST_STATE_CHANGE_FAILURE;
    }
  }
  ret = GST_ELEMENT_CLASS (parent_class)->change_state (element, transition);
  if (transition == GST_STATE_CHANGE_READY_TO_NULL
      || (ret == GST_STATE_CHANGE_FAILURE
          && transition == GST_STATE_CHANGE_NULL_TO_READY)) {
    FapEvidence *ev = self->ev;
    self->ev = NULL;
    fap_evidence_free (ev);
  }
  return ret;
}

/* ---- properties ---------------------------------------------------------------------- */

static void
gst_fa_prompt_record_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstFAPromptRecord *self = GST_FAPROMPT_RECORD (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_LOCATION:
      g_free (self->location);
      self->location = g_value_dup_string (value);
      break;
    case PROP_SOURCE_ID:
      g_free (self->source_id);
      self->source_id = g_value_dup_string (value);
      break;
    case PROP_PRE_SECONDS:
      self->pre_seconds = g_value_get_double (value);
      break;
    case PROP_POST_SECONDS:
      self->post_seconds = g_value_get_double (value);
      break;
    case PROP_MAX_BYTES:
      self->max_bytes = g_value_get_uint64 (value);
      break;
    case PROP_ENCODER:
      g_free (self->encoder_desc);
      self->encoder_desc = g_value_dup_string (value);
      break;
    case PROP_CLEAN_SNAPSHOT:
      self->clean_snapshot = g_value_get_boolean (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_fa_prompt_record_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec)
{
  GstFAPromptRecord *self = GST_FAPROMPT_RECORD (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_LOCATION:
      g_value_set_string (value, self->location);
      break;
    case PROP_SOURCE_ID:
      g_value_set_string (value, self->source_id);
      break;
    case PROP_PRE_SECONDS:
      g_value_set_double (value, self->pre_seconds);
      break;
    case PROP_POST_SECONDS:
      g_value_set_double (value, self->post_seconds);
      break;
    case PROP_MAX_BYTES:
      g_value_set_uint64 (value, self->max_bytes);
      break;
    case PROP_ENCODER:
      g_value_set_string (value, self->encoder_desc);
      break;
    case PROP_CLEAN_SNAPSHOT:
      g_value_set_boolean (value, self->clean_snapshot);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_fa_prompt_record_finalize (GObject * object)
{
  GstFAPromptRecord *self = GST_FAPROMPT_RECORD (object);
  g_free (self->location);
  g_free (self->source_id);
  g_free (self->encoder_desc);
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

#define RW (G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY)

static void
gst_fa_prompt_record_class_init (GstFAPromptRecordClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);

  GST_DEBUG_CATEGORY_INIT (fap_record_debug, "fapromptrecord", 0,
      "faprompt evidence recorder");
  gobject_class->set_property = gst_fa_prompt_record_set_property;
  gobject_class->get_property = gst_fa_prompt_record_get_property;
  gobject_class->finalize = gst_fa_prompt_record_finalize;
  element_class->change_state =
      GST_DEBUG_FUNCPTR (gst_fa_prompt_record_change_state);

  g_object_class_install_property (gobject_class, PROP_LOCATION,
      g_param_spec_string ("location", "Location", "Folder of the evidence "
          "files (made if missing)", NULL, RW));
  g_object_class_install_property (gobject_class, PROP_SOURCE_ID,
      g_param_spec_string ("source-id", "Source id", "First part of the file "
          "names and the sidecar's source (NULL: the element's name)", NULL,
          RW));
  g_object_class_install_property (gobject_class, PROP_PRE_SECONDS,
      g_param_spec_double ("pre-seconds", "Pre seconds", "The clip starts "
          "this long before the event (at the key frame at or before)", 0,
          600, 5, RW));
  g_object_class_install_property (gobject_class, PROP_POST_SECONDS,
      g_param_spec_double ("post-seconds", "Post seconds", "The clip ends "
          "this long after the event's last anomalous frame", 0, 600, 5, RW));
  g_object_class_install_property (gobject_class, PROP_MAX_BYTES,
      g_param_spec_uint64 ("max-bytes", "Max bytes", "Disk budget of this "
          "source's files in location: the oldest are removed beyond it (0: "
          "nothing is written)", 0, G_MAXUINT64, G_GUINT64_CONSTANT (1) << 30,
          RW));
  g_object_class_install_property (gobject_class, PROP_ENCODER,
      g_param_spec_string ("encoder", "Encoder", "The ring's encoder, a "
          "gst-launch fragment (e.g. \"x264enc tune=zerolatency "
          "key-int-max=30 ! h264parse\"); clips start on its key frames",
          DEFAULT_ENCODER, RW));
  g_object_class_install_property (gobject_class, PROP_CLEAN_SNAPSHOT,
      g_param_spec_boolean ("clean-snapshot", "Clean snapshot", "Frames "
          "arrive without the heatmap (faprompt draw-heatmap=false): write "
          "the frame as <name>_clean.jpg and draw the heatmap (the core's "
          "drawing) for <name>.jpg", FALSE, RW));

  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);
  gst_element_class_set_static_metadata (element_class,
      "FAPrompt evidence recorder", "Filter/Analyzer/Video",
      "Writes a snapshot, a JSON sidecar and a clip from before to after "
      "each anomaly faprompt found", "faprompt developers");
}

static void
gst_fa_prompt_record_init (GstFAPromptRecord * self)
{
  GstAppSinkCallbacks cb = { 0 };
  GstPadTemplate *templ;
  GstPad *pad;

  self->pre_seconds = 5;
  self->post_seconds = 5;
  self->max_bytes = G_GUINT64_CONSTANT (1) << 30;
  self->encoder_desc = g_strdup (DEFAULT_ENCODER);

  self->tee = gst_element_factory_make ("tee", "tee");
  self->pass_queue = gst_element_factory_make ("queue", "pass");
  self->ring_queue = gst_element_factory_make ("queue", "ring");
  self->convert = gst_element_factory_make ("videoconvert", "convert");
  self->sink = gst_element_factory_make ("appsink", "ring-sink");
  if (!self->tee || !self->pass_queue || !self->ring_queue || !self->convert
      || !self->sink) {
    g_warning ("fapromptrecord: tee, queue, videoconvert or appsink missing "
        "(Debian: gstreamer1.0-plugins-base)");
    return;
  }
  /* the video path never waits for the ring: that queue drops when full */
  g_object_set (self->ring_queue, "leaky", 2, "max-size-buffers", 0,
      "max-size-bytes", 0, "max-size-time", (guint64) 2 * GST_SECOND, NULL);
  g_object_set (self->sink, "sync", FALSE, "async", FALSE, "max-buffers", 0,
      "enable-last-sample", FALSE, NULL);
  cb.new_sample = on_sample;
  cb.eos = on_eos;
  gst_app_sink_set_callbacks (GST_APP_SINK (self->sink), &cb, self, NULL);
  gst_bin_add_many (GST_BIN (self), self->tee, self->pass_queue,
      self->ring_queue, self->convert, self->sink, NULL);
  gst_element_link (self->tee, self->pass_queue);
  gst_element_link_many (self->tee, self->ring_queue, self->convert, NULL);

  templ = gst_static_pad_template_get (&sink_template);
  pad = gst_element_get_static_pad (self->tee, "sink");
  self->sinkpad = gst_ghost_pad_new_from_template ("sink", pad, templ);
  gst_object_unref (templ);
  gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER, raw_probe, self, NULL);
  gst_object_unref (pad);
  gst_element_add_pad (GST_ELEMENT (self), self->sinkpad);
  templ = gst_static_pad_template_get (&src_template);
  pad = gst_element_get_static_pad (self->pass_queue, "src");
  self->srcpad = gst_ghost_pad_new_from_template ("src", pad, templ);
  gst_object_unref (templ);
  gst_object_unref (pad);
  gst_element_add_pad (GST_ELEMENT (self), self->srcpad);
}
