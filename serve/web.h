/* The web view of the service:
 *   GET /                          the page (serve/web/, compiled into the
 *                                  program as a GResource)
 *   GET /web/FILE                  its script and style sheet
 *   GET /live/NAME.mjpg            the camera's live view (live.h)
 *   GET /api/cameras/NAME/history  the score, a sample a second (events.h)
 *   GET /api/cameras/NAME/events   the last anomalies and their snapshots
 *   GET /evidence/PATH             the evidence files (evidence.h)
 * Every other path: the JSON 404 of the rest of the service. */
#ifndef SERVE_WEB_H
#define SERVE_WEB_H

#include "http.h"
#include "service.h"

void web_register(HttpServer *http, Service *svc);

/* /api/cameras/@rest where @rest is "NAME/history" or "NAME/events":
 * replies and returns TRUE; FALSE (nothing replied) for anything else. */
gboolean web_camera_part(Service *svc, SoupServerMessage *msg, const gchar *rest);

#endif
