/* fapromptpublish: sends each faprompt result as a JSON document to an MQTT
 * broker, a JSON Lines file or stdout (see gst/README.md). */
#ifndef __GST_FAPROMPT_PUBLISH_H__
#define __GST_FAPROMPT_PUBLISH_H__

#include <gst/base/gstbasetransform.h>
#include <gst/gst.h>

#include "fap_outqueue.h"
#include "fap_publisher.h"
#include "fap_report.h"

G_BEGIN_DECLS

#define GST_TYPE_FAPROMPT_PUBLISH (gst_fa_prompt_publish_get_type ())
G_DECLARE_FINAL_TYPE (GstFAPromptPublish, gst_fa_prompt_publish, GST,
    FAPROMPT_PUBLISH, GstBaseTransform)

struct _GstFAPromptPublish
{
  GstBaseTransform parent;

  /* properties, under the object lock */
  FapTarget target;
  gchar *source_id;
  FapReportPolicy policy;       /* every-frame, on-change or anomalous */
  gdouble max_rate;
  FapEventMap include_map;
  guint map_size;
  guint max_queued;
  gchar *host;
  guint port;
  gchar *topic;
  gint qos;
  gboolean retain;
  gchar *client_id;
  guint keepalive;
  gchar *tls_ca_file, *tls_cert_file, *tls_key_file;
  gchar *username, *password_file, *password_env;
  gchar *location;
  guint64 max_file_bytes;
  guint max_files;
  guint stats_interval;
  guint flush_timeout;

  /* running (start .. stop) */
  FapOutQueue queue;
  FapPublisher *publisher;
  GMutex publisher_lock;        /* publisher vs. the counters' getters */
  FapEvent scratch;             /* the streaming thread's capture */
  guint64 sequence;
  FapReportState report;
  gint64 rate_last_us;
  gdouble rate_tokens;
  FapPublishStats last_stats;   /* kept after stop */
};

GST_ELEMENT_REGISTER_DECLARE (fapromptpublish);

G_END_DECLS

#endif
