/* SIGHUP: the configuration file read again and only its difference
 * applied (serve/README.md, "Reloading the configuration"). The new file is
 * checked as at start (values, files, elements, models) before anything
 * changes: one error and the whole of it is refused, the running set kept.
 * Then:
 *   - a camera the new file adds starts; one it no longer names drains and
 *     goes;
 *   - a camera whose source, record, publish or publish-policy changed is
 *     drained and started again with its new settings;
 *   - a camera where only image-threshold, pixel-threshold,
 *     inference-interval, draw-heatmap or model changed gets the new values
 *     set on its running element (the model as the element's hot swap);
 *   - every other camera is not touched.
 * Cameras added through the API are the service's own: a reload leaves
 * them alone, and a file naming one of them is refused. A name in the file
 * is the file's: after a reload that camera is what the file says, even if
 * the API deleted or replaced it meanwhile.
 * [service]: token-file is read again, stall-timeout applies at once;
 * listen, evidence, backend and batch-size need the process started again
 * (logged, the running values kept). */
#ifndef SERVE_RELOAD_H
#define SERVE_RELOAD_H

#include "config.h"
#include "service.h"

typedef struct Reload Reload;

/* @config: the running configuration (kept, not owned; its token and its
 * camera list are replaced by each reload); @listen, @token_file: the
 * command line's overrides (NULL when not given), applied again. */
Reload *reload_new(ServeConfig *config, Service *svc, const gchar *listen,
                   const gchar *token_file);
void reload_free(Reload *r);

/* Reads the file again and applies the difference. FALSE with @error (the
 * messages of a start) when it was refused: then nothing changed. */
gboolean reload_apply(Reload *r, GError **error);

#endif
