/* fapromptrecord: evidence of each anomaly: a snapshot, its JSON sidecar and
 * a clip from pre-seconds before to post-seconds after (see gst/README.md). */
#ifndef __GST_FAPROMPT_RECORD_H__
#define __GST_FAPROMPT_RECORD_H__

#include <gst/gst.h>

#include "fap_event.h"

G_BEGIN_DECLS

#define GST_TYPE_FAPROMPT_RECORD (gst_fa_prompt_record_get_type ())
G_DECLARE_FINAL_TYPE (GstFAPromptRecord, gst_fa_prompt_record, GST,
    FAPROMPT_RECORD, GstBin)

typedef struct _FapEvidence FapEvidence;

struct _GstFAPromptRecord
{
  GstBin parent;

  GstElement *tee, *pass_queue, *ring_queue, *convert, *encoder, *sink;
  GstPad *sinkpad, *srcpad;

  /* properties, under the object lock */
  gchar *location;
  gchar *source_id;
  gdouble pre_seconds, post_seconds;
  guint64 max_bytes;
  gchar *encoder_desc;
  gboolean clean_snapshot;

  FapEvidence *ev;              /* READY .. NULL */
};

GST_ELEMENT_REGISTER_DECLARE (fapromptrecord);

G_END_DECLS

#endif
