/* The report policy that faprompt's messages and fapromptpublish's documents
 * share (gst/common/fap_report.c): which frames are reported under each
 * policy, the on-change events, and that they pair up. */
#include "fap_report.h"

#include <glib.h>

/* Runs @anomalous (a string of 0/1 per frame) under @policy; returns a string
 * with one character per frame: '.' not reported, 'r' reported, 's' / 'e'
 * reported as anomaly-started / anomaly-ended. */
static gchar *
run (FapReportState * st, FapReportPolicy policy, const gchar * anomalous)
{
  GString *out = g_string_new (NULL);

  for (const gchar * c = anomalous; *c; c++) {
    const gchar *event = "unset";
    gboolean r = fap_report_frame (st, policy, *c == '1', &event);

    if (!r)
      g_string_append_c (out, '.');
    else if (!event)
      g_string_append_c (out, 'r');
    else if (g_str_equal (event, "anomaly-started"))
      g_string_append_c (out, 's');
    else if (g_str_equal (event, "anomaly-ended"))
      g_string_append_c (out, 'e');
    else
      g_string_append_c (out, '?');
    if (!r || policy != FAP_REPORT_ON_CHANGE)
      g_assert_null (event);
  }
  return g_string_free (out, FALSE);
}

static void
check (FapReportState * st, FapReportPolicy policy, const gchar * anomalous,
    const gchar * expected)
{
  gchar *got = run (st, policy, anomalous);
  g_assert_cmpstr (got, ==, expected);
  g_free (got);
}

static void
test_policies (void)
{
  FapReportState st = { 0 };

  check (&st, FAP_REPORT_NONE, "0110", "....");
  check (&st, FAP_REPORT_EVERY_FRAME, "0110", "rrrr");
  check (&st, FAP_REPORT_ANOMALOUS, "0110", ".rr.");
  check (&st, FAP_REPORT_ON_CHANGE, "011001", ".s.e.s");
  /* an anomaly-started waits for its ended */
  g_assert_true (fap_report_end (&st, FAP_REPORT_ON_CHANGE));
  g_assert_false (fap_report_end (&st, FAP_REPORT_ON_CHANGE));
}

static void
test_switching (void)
{
  FapReportState st = { 0 };

  /* switched to on-change while anomalous: it starts with anomaly-started */
  check (&st, FAP_REPORT_EVERY_FRAME, "11", "rr");
  check (&st, FAP_REPORT_ON_CHANGE, "110", "s.e");
  /* away from on-change, the state is dropped: no ended owed */
  check (&st, FAP_REPORT_ON_CHANGE, "1", "s");
  check (&st, FAP_REPORT_ANOMALOUS, "1", "r");
  g_assert_false (fap_report_end (&st, FAP_REPORT_ON_CHANGE));
  /* an end under another policy clears what was owed */
  check (&st, FAP_REPORT_ON_CHANGE, "1", "s");
  g_assert_false (fap_report_end (&st, FAP_REPORT_EVERY_FRAME));
  check (&st, FAP_REPORT_ON_CHANGE, "1", "s");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/report/policies", test_policies);
  g_test_add_func ("/report/switching", test_switching);
  return g_test_run ();
}
