/* See http_guard.h. A connection is followed through a weak reference (it
 * lives as long as libsoup keeps it: until the response is sent or the
 * peer has gone) and its GSocket, which is what a message names. */
#include "http_guard.h"

struct HttpGuard {
  SoupServer *server;
  gulong on_read;
  GHashTable *open; /* GSocket * -> Tracked * */
};

typedef struct {
  HttpGuard *guard;
  GSocketConnection *conn; /* weak */
  GSocket *socket;
  guint timer;
} Tracked;

/* the connection is gone: libsoup dropped it */
static void gone(gpointer data, GObject *was) {
  Tracked *t = data;
  g_hash_table_remove(t->guard->open, t->socket);
  if (t->timer)
    g_source_remove(t->timer);
  g_free(t);
}

/* no whole request in time: the stream closed under libsoup, whose next
 * read fails and lets the connection go */
static gboolean too_slow(gpointer data) {
  Tracked *t = data;
  t->timer = 0;
  g_io_stream_close(G_IO_STREAM(t->conn), NULL, NULL);
  return G_SOURCE_REMOVE;
}

static void request_read(SoupServer *server, SoupServerMessage *msg, gpointer data) {
  HttpGuard *guard = data;
  Tracked *t = g_hash_table_lookup(guard->open, soup_server_message_get_socket(msg));
  if (t && t->timer) { /* the request is in; its handler answers now */
    g_source_remove(t->timer);
    t->timer = 0;
  }
}

HttpGuard *http_guard_new(SoupServer *server) {
  HttpGuard *guard = g_new0(HttpGuard, 1);
  guard->server = server;
  guard->open = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, NULL);
  guard->on_read = g_signal_connect(server, "request-read", G_CALLBACK(request_read), guard);
  return guard;
}

void http_guard_free(HttpGuard *guard) {
  if (!guard)
    return;
  g_signal_handler_disconnect(guard->server, guard->on_read);
  GHashTableIter it;
  gpointer t;
  g_hash_table_iter_init(&it, guard->open);
  while (g_hash_table_iter_next(&it, NULL, &t)) {
    Tracked *tr = t;
    if (tr->conn)
      g_object_weak_unref(G_OBJECT(tr->conn), gone, tr);
    if (tr->timer)
      g_source_remove(tr->timer);
    g_free(tr);
  }
  g_hash_table_unref(guard->open);
  g_free(guard);
}

gboolean http_guard_admit(HttpGuard *guard, GSocketConnection *conn) {
  if (g_hash_table_size(guard->open) >= HTTP_GUARD_CONNECTIONS)
    return FALSE;
  Tracked *t = g_new0(Tracked, 1);
  t->guard = guard;
  t->conn = conn;
  t->socket = g_socket_connection_get_socket(conn);
  t->timer = g_timeout_add_seconds(HTTP_GUARD_REQUEST_SECONDS, too_slow, t);
  g_object_weak_ref(G_OBJECT(conn), gone, t);
  g_hash_table_insert(guard->open, t->socket, t);
  return TRUE;
}
