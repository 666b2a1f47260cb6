/* The JSON API (json-glib):
 *   GET    /api/cameras        {"cameras": [CAMERA, ...]}
 *   GET    /api/cameras/NAME   CAMERA
 *   POST   /api/cameras        a camera object (the config file's keys and
 *                              "name") adds and starts one: 201 CAMERA
 *   DELETE /api/cameras/NAME   removes one: 200 {"removed": NAME}
 * CAMERA: the camera's keys as in the config file, and its state (names as
 * the element's properties: "last-score", "model-generation", ...). Writes
 * need the bearer token (http_authorized). */
#ifndef SERVE_API_H
#define SERVE_API_H

#include <json-glib/json-glib.h>

#include "http.h"
#include "service.h"

void api_register(HttpServer *http, Service *svc);

/* A POST body as a camera's settings, checked as a config group is: NULL
 * with @error (the reason, for a 400) when it is not. */
CameraConfig *api_camera_from_json(const gchar *json, gsize length, const gchar *evidence,
                                   GError **error);
/* What GET shows for @cam. */
JsonNode *api_camera_to_json(Camera *cam, gint64 now_us);

#endif
