/* fapromptpublish's sender: a thread of its own that takes results from the
 * queue in order, writes their JSON and hands them to the target (an MQTT
 * broker through libmosquitto, a JSON Lines file rotated by size, stdout),
 * reconnecting with back-off while the broker is away. The streaming thread
 * only pushes into the queue. */
#ifndef FAP_PUBLISHER_H
#define FAP_PUBLISHER_H

#include "fap_outqueue.h"

typedef enum {
  FAP_TARGET_STDOUT,
  FAP_TARGET_FILE,
  FAP_TARGET_MQTT,
} FapTarget;

typedef struct {
  FapTarget target;
  gchar *source;                /* the document's source id */
  FapEventMap map;
  /* mqtt */
  gchar *host;
  guint port;
  gchar *topic;                 /* {source} already substituted */
  gint qos;
  gboolean retain;
  gchar *client_id;
  guint keepalive;
  gchar *ca_file, *cert_file, *key_file;
  gchar *username, *password;   /* password: from a file or the environment */
  /* file */
  gchar *location;
  guint64 max_file_bytes;       /* 0: never rotated */
  guint max_files;              /* rotated files kept: location.1 .. .N */
  guint stats_interval_ms;      /* 0: no stats messages */
} FapPublishConfig;

void fap_publish_config_clear (FapPublishConfig * c);

typedef struct _FapPublisher FapPublisher;

typedef struct {
  guint64 sent, dropped, reconnects;
  guint queued;
  gboolean connected;
} FapPublishStats;

/* Checks what can be checked before the first message (topic, CA and key
 * files, the file target's folder) and starts the thread; NULL with @error
 * set when a setting is wrong. @element receives warnings and the stats
 * messages; it must outlive the publisher. Takes @config. */
FapPublisher *fap_publisher_start (GstElement * element,
    FapPublishConfig * config, FapOutQueue * queue, GError ** error);
/* Stops the thread (what is still queued stays unsent); the publisher and
 * its counters stay readable. Idempotent. */
void fap_publisher_join (FapPublisher * p);
/* Joins and frees; the counters at that moment go to @final (may be NULL). */
void fap_publisher_stop (FapPublisher * p, FapPublishStats * final);

void fap_publisher_stats (FapPublisher * p, FapPublishStats * s);

#endif
