/* What keeps the HTTP port answering when clients misbehave: at most
 * HTTP_GUARD_CONNECTIONS connections open at once (those beyond are
 * closed at once), and a connection that has not sent a whole request
 * within HTTP_GUARD_REQUEST_SECONDS of its accept is closed (a client that
 * sends its headers a byte at a time, or half a request and then nothing,
 * holds a file descriptor, never the main loop: libsoup reads without
 * blocking, and this bounds how long and how many). */
#ifndef SERVE_HTTP_GUARD_H
#define SERVE_HTTP_GUARD_H

#include <libsoup/soup.h>

#define HTTP_GUARD_CONNECTIONS 128
#define HTTP_GUARD_REQUEST_SECONDS 10

typedef struct HttpGuard HttpGuard;

HttpGuard *http_guard_new(SoupServer *server);
void http_guard_free(HttpGuard *guard);

/* A connection accepted: FALSE when it is one too many (close it). */
gboolean http_guard_admit(HttpGuard *guard, GSocketConnection *conn);

#endif
