/* See log.h. */
#include "log.h"

#include <stdio.h>
#include <string.h>

void serve_log(const gchar *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  gchar *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  GDateTime *now = g_date_time_new_now_utc();
  gchar *stamp = g_date_time_format(now, "%Y-%m-%dT%H:%M:%S.%fZ");
  /* milliseconds are enough: drop the last three digits of %f */
  gsize n = strlen(stamp);
  if (n > 4)
    memmove(stamp + n - 4, stamp + n - 1, 2);
  fprintf(stderr, "%s %s\n", stamp, msg);
  fflush(stderr);
  g_free(stamp);
  g_date_time_unref(now);
  g_free(msg);
}
