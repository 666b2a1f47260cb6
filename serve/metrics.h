/* GET /metrics: the Prometheus text exposition format (version 0.0.4), one
 * series per camera and figure, labelled camera and model (the names and
 * their meaning: serve/README.md). */
#ifndef SERVE_METRICS_H
#define SERVE_METRICS_H

#include "http.h"
#include "service.h"

/* The page as served (g_free). */
gchar *metrics_render(Service *svc, gsize *length);
void metrics_register(HttpServer *http, Service *svc);

#endif
