/* See http.h. */
#include "http.h"

#include <json-glib/json-glib.h>
#include <string.h>

#include "http_guard.h"

struct HttpServer {
  SoupServer *server;
  GSocketService *listener;
  guint port;
  GSList *routes; /* Route * */
  HttpGuard *guard; /* connection count and request time limits */
};

typedef struct {
  HttpRoute fn;
  gpointer user_data;
} Route;

/* A request body as it arrives: kept up to HTTP_BODY_MAX, then only
 * counted (libsoup's own accumulation is off, so a large body never sits
 * in memory). */
typedef struct {
  GByteArray *data;
  gboolean too_large;
} Body;

static void body_free(gpointer data) {
  Body *b = data;
  g_byte_array_unref(b->data);
  g_free(b);
}

void http_reply(SoupServerMessage *msg, guint status, const gchar *content_type, gchar *body,
                gsize length) {
  soup_server_message_set_status(msg, status, NULL);
  soup_server_message_set_response(msg, content_type, SOUP_MEMORY_TAKE, body, length);
}

void http_reply_error(SoupServerMessage *msg, guint status, const gchar *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  gchar *text = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "error");
  json_builder_add_string_value(b, text);
  json_builder_end_object(b);
  JsonNode *root = json_builder_get_root(b);
  gsize len;
  gchar *json = json_to_string(root, FALSE);
  len = strlen(json);
  json = g_realloc(json, len + 2);
  json[len++] = '\n';
  json[len] = '\0';
  http_reply(msg, status, "application/json", json, len);
  json_node_unref(root);
  g_object_unref(b);
  g_free(text);
}

gboolean http_authorized(SoupServerMessage *msg, const gchar *token) {
  if (!token) {
    http_reply_error(msg, SOUP_STATUS_FORBIDDEN,
                     "changes through the API are off: start faprompt-serve with --token-file FILE "
                     "(or token-file = FILE in [service]), FILE holding the token, and send "
                     "\"Authorization: Bearer TOKEN\"");
    return FALSE;
  }
  const char *auth = soup_message_headers_get_one(soup_server_message_get_request_headers(msg),
                                                  "Authorization");
  gboolean ok = FALSE;
  if (auth && !g_ascii_strncasecmp(auth, "Bearer ", 7)) {
    const gchar *given = auth + 7;
    gsize n = strlen(token), m = strlen(given);
    /* the same time whatever the first difference */
    guint diff = n != m;
    for (gsize i = 0; i < n; i++)
      diff |= (guint)(token[i] ^ (i < m ? given[i] : 0));
    ok = diff == 0;
  }
  if (!ok) {
    soup_message_headers_replace(soup_server_message_get_response_headers(msg),
                                 "WWW-Authenticate", "Bearer realm=\"faprompt-serve\"");
    http_reply_error(msg, SOUP_STATUS_UNAUTHORIZED,
                     auth ? "the bearer token does not match the service's token"
                          : "this request needs \"Authorization: Bearer TOKEN\"");
  }
  return ok;
}

static void too_large(SoupServerMessage *msg) {
  soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Connection",
                               "close");
  http_reply_error(msg, SOUP_STATUS_REQUEST_ENTITY_TOO_LARGE,
                   "the request body is larger than %d bytes", HTTP_BODY_MAX);
}

static void got_chunk(SoupServerMessage *msg, GBytes *chunk, gpointer data) {
  Body *b = data;
  gsize n = g_bytes_get_size(chunk);
  if (b->too_large)
    return;
  if (b->data->len + n > HTTP_BODY_MAX) {
    b->too_large = TRUE;
    g_byte_array_set_size(b->data, 0);
    too_large(msg); /* the handler is skipped once a status is set */
    return;
  }
  g_byte_array_append(b->data, g_bytes_get_data(chunk, NULL), (guint)n);
}

/* Headers read, body not yet: a declared length over the limit is refused
 * at once; otherwise the body is collected by got_chunk. */
static void early(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
                  gpointer data) {
  SoupMessageHeaders *h = soup_server_message_get_request_headers(msg);
  if (soup_message_headers_get_encoding(h) == SOUP_ENCODING_CONTENT_LENGTH &&
      soup_message_headers_get_content_length(h) > HTTP_BODY_MAX) {
    too_large(msg);
    return;
  }
  Body *b = g_new0(Body, 1);
  b->data = g_byte_array_new();
  g_object_set_data_full(G_OBJECT(msg), "serve-body", b, body_free);
  soup_message_body_set_accumulate(soup_server_message_get_request_body(msg), FALSE);
  g_signal_connect(msg, "got-chunk", G_CALLBACK(got_chunk), b);
}

static void handle(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
                   gpointer data) {
  Route *r = data;
  Body *b = g_object_get_data(G_OBJECT(msg), "serve-body");
  if (b && b->too_large) {
    too_large(msg);
    return;
  }
  GBytes *body = b ? g_bytes_new(b->data->data, b->data->len) : g_bytes_new(NULL, 0);
  r->fn(msg, path, body, r->user_data);
  g_bytes_unref(body);
}

static void not_found(SoupServer *server, SoupServerMessage *msg, const char *path,
                      GHashTable *query, gpointer data) {
  http_reply_error(msg, SOUP_STATUS_NOT_FOUND, "no such path: %s (try /metrics, /api/cameras)",
                   path);
}

/* The port is GIO's (GSocketService), each accepted connection handed to
 * the SoupServer as a stream: libsoup 3.2 (Debian 12) leaks every socket
 * its own listener accepts (344 bytes a connection, seen by valgrind), and
 * a service that answers a scrape a second for months must not grow. A
 * connection handed over that way serves one request (libsoup closes it
 * after the response), so every response says "Connection: close" and
 * clients open the next connection instead of finding this one gone. */
static void request_started(SoupServer *server, SoupServerMessage *msg, gpointer data) {
  soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Connection",
                               "close");
}

static gboolean incoming(GSocketService *service, GSocketConnection *conn, GObject *source,
                         gpointer data) {
  HttpServer *http = data;
  GSocketAddress *local = g_socket_connection_get_local_address(conn, NULL);
  GSocketAddress *remote = g_socket_connection_get_remote_address(conn, NULL);
  GError *err = NULL;
  if (!local || !remote || !http_guard_admit(http->guard, conn) ||
      !soup_server_accept_iostream(http->server, G_IO_STREAM(conn), local, remote, &err)) {
    if (err)
      g_error_free(err);
    g_io_stream_close(G_IO_STREAM(conn), NULL, NULL);
  }
  g_clear_object(&local);
  g_clear_object(&remote);
  return TRUE;
}

HttpServer *http_server_new(const gchar *host, guint port, GError **error) {
  HttpServer *http = g_new0(HttpServer, 1);
  http->server = soup_server_new("server-header", "faprompt-serve ", NULL);
  g_signal_connect(http->server, "request-started", G_CALLBACK(request_started), NULL);
  http->guard = http_guard_new(http->server);
  http->listener = g_socket_service_new();
  GSocketListener *l = G_SOCKET_LISTENER(http->listener);
  /* GIO's default backlog of 10 makes a burst of clients wait for their
   * SYN to be sent again (a second) */
  g_socket_listener_set_backlog(l, HTTP_GUARD_CONNECTIONS);
  gboolean ok;
  if (!host || !*host) {
    if (port == 0) {
      http->port = g_socket_listener_add_any_inet_port(l, NULL, error);
      ok = http->port != 0;
    } else {
      ok = g_socket_listener_add_inet_port(l, (guint16)port, NULL, error);
      http->port = port;
    }
  } else {
    GSocketAddress *addr = g_inet_socket_address_new_from_string(host, port);
    GSocketAddress *bound = NULL;
    ok = addr && g_socket_listener_add_address(l, addr, G_SOCKET_TYPE_STREAM,
                                               G_SOCKET_PROTOCOL_TCP, NULL, &bound, error);
    if (!addr)
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "%s is not an IP address",
                  host);
    if (bound)
      http->port = g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(bound));
    g_clear_object(&bound);
    g_clear_object(&addr);
  }
  if (!ok) {
    http_server_free(http);
    return NULL;
  }
  g_signal_connect(http->listener, "incoming", G_CALLBACK(incoming), http);
  g_socket_service_start(http->listener);
  /* the body limit for paths nobody serves, too */
  soup_server_add_early_handler(http->server, NULL, early, NULL, NULL);
  soup_server_add_handler(http->server, NULL, not_found, NULL, NULL);
  return http;
}

guint http_server_port(HttpServer *http) { return http->port; }

void http_server_route(HttpServer *http, const gchar *prefix, HttpRoute fn, gpointer user_data) {
  Route *r = g_new0(Route, 1);
  r->fn = fn;
  r->user_data = user_data;
  http->routes = g_slist_prepend(http->routes, r);
  /* the early handler at the same path: libsoup runs the handlers of the
   * longest matching path only */
  soup_server_add_early_handler(http->server, prefix, early, NULL, NULL);
  soup_server_add_handler(http->server, prefix, handle, r, NULL);
}

void http_server_free(HttpServer *http) {
  if (!http)
    return;
  g_socket_service_stop(http->listener);
  g_socket_listener_close(G_SOCKET_LISTENER(http->listener));
  g_object_unref(http->listener);
  soup_server_disconnect(http->server);
  http_guard_free(http->guard);
  g_object_unref(http->server);
  g_slist_free_full(http->routes, g_free);
  g_free(http);
}
