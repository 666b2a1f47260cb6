#include "fap_report.h"

gboolean
fap_report_frame (FapReportState * s, FapReportPolicy policy,
    gboolean anomalous, const gchar ** event)
{
  gboolean report;

  *event = NULL;
  switch (policy) {
    case FAP_REPORT_EVERY_FRAME:
      report = TRUE;
      break;
    case FAP_REPORT_ANOMALOUS:
      report = anomalous;
      break;
    case FAP_REPORT_ON_CHANGE:
      report = !anomalous != !s->in_anomaly;
      if (report)
        *event = anomalous ? "anomaly-started" : "anomaly-ended";
      break;
    default:
      report = FALSE;
      break;
  }
  s->in_anomaly = policy == FAP_REPORT_ON_CHANGE && anomalous;
  return report;
}

gboolean
fap_report_end (FapReportState * s, FapReportPolicy policy)
{
  gboolean pending = s->in_anomaly && policy == FAP_REPORT_ON_CHANGE;

  s->in_anomaly = FALSE;
  return pending;
}
