/* fapromptrecord's engine: decides when an anomaly starts and ends (on the
 * raw frames, streaming thread), keeps a ring of the encoded frames of the
 * last pre-seconds, writes a clip (Matroska, from the key frame at or before
 * event start - pre to event end + post), a JPEG snapshot and a JSON sidecar
 * per event, and keeps the folder under a byte budget. */
#ifndef FAP_EVIDENCE_H
#define FAP_EVIDENCE_H

#include <gst/gst.h>

typedef struct _FapEvidence FapEvidence;

typedef struct {
  gchar *dir;
  gchar *source;                /* file-name prefix and the sidecar's source */
  GstClockTime pre, post;
  guint64 max_bytes;            /* 0: nothing is written (warned at start) */
  gboolean clean_snapshot;      /* frames arrive clean: draw the heatmap here */
} FapEvidenceConfig;

/* NULL with @error when the folder cannot be made or written. Takes the
 * strings of @config. @element gets the bus messages. */
FapEvidence *fap_evidence_new (GstElement * element, FapEvidenceConfig * config,
    GError ** error);
/* Finishes an open clip and pending snapshots (waits), frees. */
void fap_evidence_free (FapEvidence * ev);

/* The raw frame (with its faprompt metas) as it passes, at @running_time:
 * event decisions and snapshots. Cheap unless an event starts. Both sides
 * are compared in running time: encoders shift PTS (x264enc by 1000 h). */
void fap_evidence_raw (FapEvidence * ev, GstBuffer * buf, GstCaps * caps,
    GstClockTime running_time);
/* An encoded frame from the ring branch (takes @sample). */
void fap_evidence_encoded (FapEvidence * ev, GstSample * sample);
/* EOS on the ring branch: the open clip is closed, pending files written. */
void fap_evidence_finish (FapEvidence * ev);

#endif
