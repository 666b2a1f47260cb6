/* See metrics.h. Rendered on each scrape from the cameras' atomics: no lock
 * is shared with a streaming thread. */
#include "metrics.h"

#include <fap.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Label values: backslash, double quote and newline escaped. */
static void append_label(GString *s, const gchar *name, const gchar *value) {
  g_string_append_printf(s, "%s=\"", name);
  for (const gchar *p = value; *p; p++) {
    if (*p == '\\' || *p == '"')
      g_string_append_c(s, '\\');
    if (*p == '\n')
      g_string_append(s, "\\n");
    else
      g_string_append_c(s, *p);
  }
  g_string_append_c(s, '"');
}

static void header(GString *s, const gchar *name, const gchar *type, const gchar *help) {
  g_string_append_printf(s, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* NAME{camera="..",model=".."[,EXTRA]} VALUE */
static void sample(GString *s, const gchar *name, const CameraConfig *c, const gchar *extra,
                   const gchar *value) {
  g_string_append_printf(s, "%s{", name);
  append_label(s, "camera", c->name);
  g_string_append_c(s, ',');
  append_label(s, "model", c->model);
  if (extra)
    g_string_append_printf(s, ",%s", extra);
  g_string_append_printf(s, "} %s\n", value);
}

static void sample_u64(GString *s, const gchar *name, const CameraConfig *c, guint64 v) {
  gchar buf[32];
  g_snprintf(buf, sizeof buf, "%" G_GUINT64_FORMAT, v);
  sample(s, name, c, NULL, buf);
}

/* Nine significant digits: the shortest text that keeps what is measured
 * (g_ascii_dtostr's round trip prints 0.0025 as 0.0025000000000000001). */
static const gchar *number(gchar *buf, gsize size, double v) {
  return g_ascii_formatd(buf, (gint)size, "%.9g", v);
}

static void sample_double(GString *s, const gchar *name, const CameraConfig *c, double v) {
  gchar buf[G_ASCII_DTOSTR_BUF_SIZE];
  sample(s, name, c, NULL, number(buf, sizeof buf, v));
}

static guint64 resident_bytes(void) {
  unsigned long long pages = 0, resident = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f)
    return 0;
  if (fscanf(f, "%llu %llu", &pages, &resident) != 2)
    resident = 0;
  fclose(f);
  return (guint64)resident * (guint64)sysconf(_SC_PAGESIZE);
}

typedef struct {
  const CameraConfig *config;
  CameraStatus status;
} Row;

static void histogram(GString *s, const Row *r) {
  gchar le[64], count[32], bound[G_ASCII_DTOSTR_BUF_SIZE];
  for (int b = 0; b < CAMSTATS_BUCKETS; b++) {
    g_snprintf(le, sizeof le, "le=\"%s\"",
               number(bound, sizeof bound, camstats_bucket_bounds[b]));
    g_snprintf(count, sizeof count, "%" G_GUINT64_FORMAT, r->status.stats.cumulative[b]);
    sample(s, "faprompt_inference_duration_seconds_bucket", r->config, le, count);
  }
  g_snprintf(count, sizeof count, "%" G_GUINT64_FORMAT, r->status.stats.inferences);
  sample(s, "faprompt_inference_duration_seconds_bucket", r->config, "le=\"+Inf\"", count);
  gchar sum[G_ASCII_DTOSTR_BUF_SIZE];
  sample(s, "faprompt_inference_duration_seconds_sum", r->config, NULL,
         number(sum, sizeof sum, r->status.stats.inference_seconds_sum));
  sample(s, "faprompt_inference_duration_seconds_count", r->config, NULL, count);
}

gchar *metrics_render(Service *svc, gsize *length) {
  GString *s = g_string_sized_new(4096);
  guint n = service_count(svc);
  Row *rows = g_new0(Row, n ? n : 1);
  gint64 now = g_get_monotonic_time();
  for (guint i = 0; i < n; i++) {
    Camera *cam = service_camera(svc, i);
    rows[i].config = camera_config(cam);
    camera_status(cam, now, &rows[i].status);
  }

  header(s, "faprompt_build_info", "gauge", "The faprompt library's version (always 1).");
  g_string_append_printf(s, "faprompt_build_info{version=\"%s\"} 1\n", fap_version());
  header(s, "faprompt_cameras", "gauge", "Cameras configured.");
  g_string_append_printf(s, "faprompt_cameras %u\n", n);

  header(s, "faprompt_frames_received_total", "counter",
         "Frames that reached the detector (its sink pad), over every restart.");
  for (guint i = 0; i < n; i++)
    sample_u64(s, "faprompt_frames_received_total", rows[i].config, rows[i].status.stats.frames_in);
  header(s, "faprompt_frames_total", "counter",
         "Frames that left the detector with its result (its src pad), over every restart.");
  for (guint i = 0; i < n; i++)
    sample_u64(s, "faprompt_frames_total", rows[i].config, rows[i].status.stats.frames_out);
  header(s, "faprompt_frames_per_second", "gauge",
         "Frames a second through the detector over the last second (0 when not running).");
  for (guint i = 0; i < n; i++)
    sample_double(s, "faprompt_frames_per_second", rows[i].config, rows[i].status.fps);
  header(s, "faprompt_inference_duration_seconds", "histogram",
         "Compute time of each new result (the meta's inference_ms).");
  for (guint i = 0; i < n; i++)
    histogram(s, &rows[i]);
  header(s, "faprompt_last_score", "gauge",
         "Score of the newest result (absent before the first).");
  for (guint i = 0; i < n; i++)
    if (rows[i].status.stats.have_score)
      sample_double(s, "faprompt_last_score", rows[i].config, rows[i].status.stats.last_score);
  header(s, "faprompt_anomalies_total", "counter",
         "Anomalies: results that turned anomalous after a normal one (or as the first).");
  for (guint i = 0; i < n; i++)
    sample_u64(s, "faprompt_anomalies_total", rows[i].config, rows[i].status.stats.anomalies);
  header(s, "faprompt_camera_restarts_total", "counter",
         "Times the camera's pipeline was started again after a failure.");
  for (guint i = 0; i < n; i++)
    sample_u64(s, "faprompt_camera_restarts_total", rows[i].config, rows[i].status.restarts);
  header(s, "faprompt_camera_state", "gauge",
         "1 for the state the camera is in (starting, running, backoff, stopped), 0 for the "
         "others.");
  for (guint i = 0; i < n; i++)
    for (int st = 0; st < CAMERA_STATES; st++) {
      gchar extra[64];
      g_snprintf(extra, sizeof extra, "state=\"%s\"", camera_state_name(st));
      sample(s, "faprompt_camera_state", rows[i].config, extra,
             rows[i].status.state == (CameraState)st ? "1" : "0");
    }
  header(s, "faprompt_camera_failure_info", "gauge",
         "Why the camera last failed (the error message in reason; absent if it never did).");
  for (guint i = 0; i < n; i++)
    if (rows[i].status.reason) {
      GString *extra = g_string_new(NULL);
      append_label(extra, "reason", rows[i].status.reason);
      sample(s, "faprompt_camera_failure_info", rows[i].config, extra->str, "1");
      g_string_free(extra, TRUE);
    }
  header(s, "faprompt_last_frame_age_seconds", "gauge",
         "Seconds since the last frame left the detector (absent before the first).");
  for (guint i = 0; i < n; i++)
    if (rows[i].status.last_frame_age >= 0)
      sample_double(s, "faprompt_last_frame_age_seconds", rows[i].config,
                    rows[i].status.last_frame_age);
  header(s, "faprompt_model_generation", "gauge",
         "Generation of the model that computed the newest result (the element's "
         "model-generation; absent before the first result).");
  for (guint i = 0; i < n; i++)
    if (rows[i].status.stats.have_score)
      sample_u64(s, "faprompt_model_generation", rows[i].config,
                 rows[i].status.stats.model_generation);
  header(s, "faprompt_batch_frames_average", "gauge",
         "Frames per batch of the model instance the camera's detector runs in (the "
         "element's average-batch: cameras on one model share it; absent before the first "
         "batch).");
  for (guint i = 0; i < n; i++)
    if (rows[i].status.average_batch > 0)
      sample_double(s, "faprompt_batch_frames_average", rows[i].config,
                    rows[i].status.average_batch);
  header(s, "faprompt_instance_queue_frames", "gauge",
         "Frames of every camera on the model waiting for its instance's next batch (the "
         "element's instance-queue, read once a second; absent before the first batch).");
  for (guint i = 0; i < n; i++)
    if (rows[i].status.average_batch > 0)
      sample_u64(s, "faprompt_instance_queue_frames", rows[i].config,
                 rows[i].status.instance_queue);
  header(s, "process_resident_memory_bytes", "gauge", "Resident memory of the process.");
  g_string_append_printf(s, "process_resident_memory_bytes %" G_GUINT64_FORMAT "\n",
                         resident_bytes());
  g_free(rows);
  *length = s->len;
  return g_string_free(s, FALSE);
}

static void serve_metrics(SoupServerMessage *msg, const gchar *path, GBytes *body,
                          gpointer data) {
  const char *method = soup_server_message_get_method(msg);
  if (strcmp(path, "/metrics") != 0) {
    http_reply_error(msg, SOUP_STATUS_NOT_FOUND, "no such path: %s", path);
    return;
  }
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
    soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Allow",
                                 "GET, HEAD");
    http_reply_error(msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "/metrics takes GET");
    return;
  }
  gsize len;
  gchar *text = metrics_render(data, &len);
  http_reply(msg, SOUP_STATUS_OK, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

void metrics_register(HttpServer *http, Service *svc) {
  http_server_route(http, "/metrics", serve_metrics, svc);
}
