/* The service's one HTTP port (libsoup 3's SoupServer on the main loop):
 * routes by path prefix, each registered by the file that serves it
 * (metrics.c, api.c; a live view later), request bodies read with a size
 * limit, JSON error replies, and the bearer-token check of write requests. */
#ifndef SERVE_HTTP_H
#define SERVE_HTTP_H

#include <libsoup/soup.h>

/* Largest request body taken; a larger one gets 413 without being kept. */
#define HTTP_BODY_MAX (64 * 1024)

typedef struct HttpServer HttpServer;

/* Listens on @host (empty: every address) and @port (0: a free one). */
HttpServer *http_server_new(const gchar *host, guint port, GError **error);
void http_server_free(HttpServer *http);
/* The port it listens on (the one chosen when 0 was asked for). */
guint http_server_port(HttpServer *http);

/* @path: the request's path; @body: its body (empty when none). */
typedef void (*HttpRoute)(SoupServerMessage *msg, const gchar *path, GBytes *body,
                          gpointer user_data);
/* Requests for @prefix and below go to @route. */
void http_server_route(HttpServer *http, const gchar *prefix, HttpRoute route, gpointer user_data);

/* Replies: @body taken (g_free). */
void http_reply(SoupServerMessage *msg, guint status, const gchar *content_type, gchar *body,
                gsize length);
/* {"error": "..."} with @status. */
void http_reply_error(SoupServerMessage *msg, guint status, const gchar *fmt, ...)
    G_GNUC_PRINTF(3, 4);

/* A write request may go on: @token (NULL: the service has none) matches
 * its "Authorization: Bearer TOKEN". Otherwise replies 403 (no token
 * configured, saying how to set one) or 401 and returns FALSE. */
gboolean http_authorized(SoupServerMessage *msg, const gchar *token);

#endif
