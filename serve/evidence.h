/* GET /evidence/RELATIVE-PATH: the files fapromptrecord wrote, read-only,
 * from the [service] evidence folder and nowhere else. The path (already
 * percent-decoded by libsoup, which refuses an encoded "..") is taken
 * segment by segment: an empty, "." or ".." segment is refused, and each
 * one is opened relative to the folder's descriptor with O_NOFOLLOW, so no
 * symbolic link is followed, inside or out. Anything that is not a regular
 * file inside: 404. Content-Type from the name (.jpg, .png, .json, .mkv,
 * .mp4, ...), X-Content-Type-Options: nosniff. */
#ifndef SERVE_EVIDENCE_H
#define SERVE_EVIDENCE_H

#include "http.h"

/* @folder: the evidence folder (NULL: none, every request is a 404);
 * kept, not owned. */
void evidence_register(HttpServer *http, const gchar *folder);

/* The file @relative inside the folder open @dir_fd, opened read-only
 * without following any link: its descriptor, or -1 (errno set; EINVAL
 * for a path refused as such, ENOENT/ELOOP/EISDIR/... from the system). */
int evidence_open(int dir_fd, const gchar *relative);

/* The Content-Type of a file name. */
const gchar *evidence_content_type(const gchar *name);

#endif
