/* The service's own log lines on standard error: a UTC time, then the
 * message ("2026-01-02T03:04:05.678Z camera door: running"). */
#ifndef SERVE_LOG_H
#define SERVE_LOG_H

#include <glib.h>

void serve_log(const gchar *fmt, ...) G_GNUC_PRINTF(1, 2);

#endif
