/* See evidence.h. */
#include "evidence.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PREFIX "/evidence"
/* deepest path taken: the folder is flat, a few levels leave room */
#define MAX_DEPTH 8

int evidence_open(int dir_fd, const gchar *relative) {
  gchar **parts = g_strsplit(relative, "/", -1);
  guint n = g_strv_length(parts);
  int fd = -1, at = dir_fd;
  errno = EINVAL;
  if (n == 0 || n > MAX_DEPTH)
    goto out;
  for (guint i = 0; i < n; i++)
    if (!parts[i][0] || !strcmp(parts[i], ".") || !strcmp(parts[i], ".."))
      goto out;
  for (guint i = 0; i < n; i++) {
    gboolean last = i + 1 == n;
    int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | (last ? O_NONBLOCK : O_DIRECTORY);
    int next = openat(at, parts[i], flags);
    int saved = errno;
    if (at != dir_fd)
      close(at);
    if (next < 0) {
      errno = saved == ENOTDIR ? ENOENT : saved;
      goto out;
    }
    at = next;
  }
  fd = at;
out:
  g_strfreev(parts);
  return fd;
}

const gchar *evidence_content_type(const gchar *name) {
  static const gchar *const types[][2] = {
      {".jpg", "image/jpeg"},
      {".jpeg", "image/jpeg"},
      {".png", "image/png"},
      {".json", "application/json"},
      {".jsonl", "application/jsonl"},
      {".mkv", "video/x-matroska"},
      {".mp4", "video/mp4"},
      {".webm", "video/webm"},
      {".txt", "text/plain; charset=utf-8"},
  };
  const gchar *dot = strrchr(name, '.');
  if (dot && !strchr(dot, '/'))
    for (guint i = 0; i < G_N_ELEMENTS(types); i++)
      if (!g_ascii_strcasecmp(dot, types[i][0]))
        return types[i][1];
  return "application/octet-stream";
}

static void serve_evidence(SoupServerMessage *msg, const gchar *path, GBytes *body, gpointer data) {
  const gchar *folder = data;
  const char *method = soup_server_message_get_method(msg);
  if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
    soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Allow",
                                 "GET, HEAD");
    http_reply_error(msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "%s takes GET, HEAD", PREFIX);
    return;
  }
  if (!folder) {
    http_reply_error(msg, SOUP_STATUS_NOT_FOUND,
                     "no evidence folder: set evidence = FOLDER in [service]");
    return;
  }
  if (!g_str_has_prefix(path, PREFIX "/")) {
    http_reply_error(msg, SOUP_STATUS_NOT_FOUND, "no such evidence file: %s", path);
    return;
  }
  int dir = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int fd = dir < 0 ? -1 : evidence_open(dir, path + strlen(PREFIX "/"));
  if (dir >= 0)
    close(dir);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    if (fd >= 0)
      close(fd);
    http_reply_error(msg, SOUP_STATUS_NOT_FOUND, "no such evidence file: %s", path);
    return;
  }
  GBytes *bytes;
  if (st.st_size == 0) {
    bytes = g_bytes_new(NULL, 0);
  } else {
    /* mapped, not read: a clip can be large; the mapping keeps the file's
     * content even when the byte budget removes it meanwhile */
    GMappedFile *map = g_mapped_file_new_from_fd(fd, FALSE, NULL);
    if (!map) {
      close(fd);
      http_reply_error(msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, "%s could not be read", path);
      return;
    }
    bytes = g_mapped_file_get_bytes(map);
    g_mapped_file_unref(map);
  }
  close(fd);
  SoupMessageHeaders *h = soup_server_message_get_response_headers(msg);
  soup_message_headers_replace(h, "X-Content-Type-Options", "nosniff");
  soup_message_headers_replace(h, "Cache-Control", "private, max-age=3600");
  soup_message_headers_set_content_type(h, evidence_content_type(path), NULL);
  soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
  soup_message_body_append_bytes(soup_server_message_get_response_body(msg), bytes);
  g_bytes_unref(bytes);
}

void evidence_register(HttpServer *http, const gchar *folder) {
  http_server_route(http, PREFIX, serve_evidence, (gpointer)folder);
}
