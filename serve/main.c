/* faprompt-serve: keeps cameras running through faprompt, each in its own
 * pipeline, restarts the ones that fail, and answers on one HTTP port
 * (metrics, JSON API). serve/README.md is its manual.
 *
 *   faprompt-serve [CONFIG] [--listen ADDR:PORT] [--token-file FILE]
 *
 * SIGHUP reads CONFIG again and applies its difference (reload.h).
 *
 * Exit status: 0 after a drain (SIGTERM, SIGINT), 2 when it cannot start (a
 * configuration that cannot work, a port that cannot be bound: nothing was
 * started). */
#include <fap.h>
#include <glib-unix.h>
#include <gst/gst.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include "api.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "reload.h"
#include "service.h"
#include "web.h"

typedef struct {
  GMainLoop *loop;
  Service *svc;
  Reload *reload;
} App;

static void stopped(gboolean all, gpointer data) {
  if (!all) {
    /* the cameras drained; a pipeline stuck in its stop would hold the
     * exit (and freeing what it uses) for ever */
    serve_log("leaving without waiting for them");
    _exit(0);
  }
  g_main_loop_quit(((App *)data)->loop);
}

static gboolean on_signal(gpointer data) {
  App *app = data;
  service_shutdown(app->svc, stopped, app);
  return G_SOURCE_CONTINUE; /* a second signal while draining changes nothing */
}

/* SIGHUP: the configuration file again, its difference applied (reload.c) */
static gboolean on_hangup(gpointer data) {
  App *app = data;
  GError *err = NULL;
  if (!app->reload) { /* stopping (one while starting waits for the main loop) */
    serve_log("SIGHUP ignored: the service is stopping");
    return G_SOURCE_CONTINUE;
  }
  serve_log("SIGHUP: reading the configuration again");
  if (!reload_apply(app->reload, &err)) {
    serve_log("reload refused, nothing changed: %s", err->message);
    g_error_free(err);
  }
  return G_SOURCE_CONTINUE;
}

int main(int argc, char **argv) {
  gchar *listen = NULL, *token_file = NULL;
  gboolean version = FALSE;
  GOptionEntry entries[] = {
      {"listen", 'l', 0, G_OPTION_ARG_STRING, &listen,
       "Address and port of the HTTP server (default " SERVE_DEFAULT_LISTEN
       "; port 0: any free one)",
       "ADDR:PORT"},
      {"token-file", 't', 0, G_OPTION_ARG_FILENAME, &token_file,
       "File holding the bearer token that API changes need", "FILE"},
      {"version", 0, 0, G_OPTION_ARG_NONE, &version, "Print the version and exit", NULL},
      {NULL}};
  GError *err = NULL;
  GOptionContext *ctx = g_option_context_new("[CONFIG] - keep cameras running through faprompt");
  g_option_context_add_main_entries(ctx, entries, NULL);
  g_option_context_add_group(ctx, gst_init_get_option_group());
  g_option_context_set_description(
      ctx, "CONFIG is a key file: a [service] group and one [camera NAME] group per camera.\n"
           "Without it the service starts with no camera; add them with POST /api/cameras.\n"
           "The keys, routes and metrics: serve/README.md in the source tree.\n");
  if (!g_option_context_parse(ctx, &argc, &argv, &err)) {
    fprintf(stderr, "faprompt-serve: %s (see --help)\n", err->message);
    g_error_free(err);
    g_option_context_free(ctx);
    return 2;
  }
  g_option_context_free(ctx);
  if (version) {
    printf("faprompt-serve %s\n", fap_version());
    return 0;
  }
  if (argc > 2) {
    fprintf(stderr, "faprompt-serve: one CONFIG file at most (got %s and %s)\n", argv[1], argv[2]);
    return 2;
  }

  /* SIGHUP's default would end the process: caught from here on (a
   * `systemctl reload` may come while the models are being checked) */
  App app = {NULL, NULL, NULL};
  guint on_hup = g_unix_signal_add(SIGHUP, on_hangup, &app);
  int status = 0;
  ServeConfig *config = serve_config_load(argc == 2 ? argv[1] : NULL, listen, token_file, &err);
  HttpServer *http = NULL;
  Service *svc = NULL;
  if (!config) {
    status = 2;
    goto out;
  }
  /* the port first (it may be taken), then every camera's check; nothing
   * runs until all passed */
  http = http_server_new(config->listen_host, config->listen_port, &err);
  if (!http) {
    g_prefix_error(&err, "cannot listen on %s:%u: ", config->listen_host, config->listen_port);
    status = 2;
    goto out;
  }
  svc = service_new(config, &err);
  if (!svc) {
    status = 2;
    goto out;
  }
  metrics_register(http, svc);
  api_register(http, svc);
  web_register(http, svc);

  app.loop = g_main_loop_new(NULL, FALSE);
  app.svc = svc;
  app.reload = reload_new(config, svc, listen, token_file);
  guint on_term = g_unix_signal_add(SIGTERM, on_signal, &app);
  guint on_int = g_unix_signal_add(SIGINT, on_signal, &app);
  service_start(svc);
  serve_log("listening on http://%s%s%s:%u/ with %u camera(s)%s",
            strchr(config->listen_host, ':') ? "[" : "",
            *config->listen_host ? config->listen_host : "0.0.0.0",
            strchr(config->listen_host, ':') ? "]" : "", http_server_port(http),
            service_count(svc), config->token ? "" : " (API changes off: no token file)");
  g_main_loop_run(app.loop);
  g_source_remove(on_term);
  g_source_remove(on_int);
  reload_free(app.reload);
  app.reload = NULL;
  g_main_loop_unref(app.loop);

out:
  g_source_remove(on_hup);
  if (err) {
    fprintf(stderr, "faprompt-serve: %s\n", err->message);
    g_error_free(err);
  }
  http_server_free(http);
  service_free(svc);
  serve_config_free(config);
  g_free(listen);
  g_free(token_file);
  gst_deinit();
  return status;
}
