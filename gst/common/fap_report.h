/* Which results are reported: one policy for faprompt's element messages
 * (post-messages) and fapromptpublish's documents (policy), so that the two
 * say the same thing about the same frames. On-change reports the frames
 * where the decision flips, as events anomaly-started / anomaly-ended, and
 * every anomaly-started gets its anomaly-ended (at a flip, at EOS or flush). */
#ifndef __FAP_REPORT_H__
#define __FAP_REPORT_H__

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  FAP_REPORT_NONE,              /* the element's messages only */
  FAP_REPORT_EVERY_FRAME,
  FAP_REPORT_ON_CHANGE,
  FAP_REPORT_ANOMALOUS,
} FapReportPolicy;

/* The on-change state of one stream (streaming thread). */
typedef struct {
  gboolean in_anomaly;
} FapReportState;

/* Whether the result of a frame is reported under @policy; *event is the
 * on-change event ("anomaly-started" / "anomaly-ended") or NULL. The state
 * is tracked under on-change only: switching to it while anomalous starts
 * with anomaly-started, so the events always pair up. */
gboolean fap_report_frame (FapReportState * s, FapReportPolicy policy,
    gboolean anomalous, const gchar ** event);

/* At EOS or flush: TRUE when an anomaly-started still waits for its
 * anomaly-ended under @policy (then report one); the state is cleared. */
gboolean fap_report_end (FapReportState * s, FapReportPolicy policy);

G_END_DECLS

#endif
