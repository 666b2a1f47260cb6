/* faprompt-serve's configuration: a GKeyFile with one [service] group and
 * one [camera NAME] group per camera (serve/README.md). A camera added
 * through the API is read by the same code (its JSON object becomes a
 * camera group), so the file and the API accept the same keys with the same
 * checks and the same messages. Everything is checked before anything
 * starts: a value that cannot work is an error naming the file (or the
 * request), the group, the key and what is wrong with it. */
#ifndef SERVE_CONFIG_H
#define SERVE_CONFIG_H

#include <glib.h>

#include "source.h"

#define SERVE_DEFAULT_LISTEN "127.0.0.1:8090"
#define SERVE_DEFAULT_STALL_SECONDS 10.0
#define SERVE_DEFAULT_BATCH 4
#define SERVE_DEFAULT_LIVE_WIDTH 640
#define SERVE_DEFAULT_LIVE_FPS 5
#define SERVE_NAME_MAX 64

GQuark serve_config_error_quark(void);
#define SERVE_CONFIG_ERROR (serve_config_error_quark())

typedef enum { PUBLISH_NONE, PUBLISH_MQTT, PUBLISH_FILE, PUBLISH_STDOUT } PublishTarget;

typedef struct {
  gchar *name;
  SourceSpec source;
  gchar *model;             /* absolute path of the model file */
  gdouble image_threshold;  /* < 0: the model's calibration */
  gdouble pixel_threshold;
  guint inference_interval;
  gboolean draw_heatmap;
  gboolean record;          /* evidence into the service's folder */
  PublishTarget publish;
  gchar *publish_uri;       /* as written */
  gchar *publish_host;      /* mqtt */
  guint publish_port;
  gchar *publish_topic;
  gchar *publish_location;  /* file */
  gchar *publish_policy;    /* every-frame | on-change | anomalous */
} CameraConfig;

typedef struct {
  gchar *path;              /* the file read, or NULL (no CONFIG) */
  gchar *listen_host;       /* address to bind */
  guint listen_port;
  gchar *token_file;        /* NULL: writes through the API are refused */
  gchar *token;             /* its content, without surrounding white space */
  gchar *evidence;          /* folder for fapromptrecord, or NULL */
  gdouble stall_seconds;    /* no frame at the detector this long: restart */
  gchar *backend;           /* auto | cpu | cuda */
  guint batch_size;         /* most frames of one batch of a shared model */
  guint live_width;         /* the live view's JPEG width (height: the aspect ratio) */
  guint live_fps;           /* the live view's most frames a second */
  GPtrArray *cameras;       /* CameraConfig *, in the file's order */
} ServeConfig;

/* Reads @path (NULL: the defaults, no cameras); --listen / --token-file
 * (NULL when not given) override the file's [service] keys. NULL with
 * @error set on the first problem found. */
ServeConfig *serve_config_load(const gchar *path, const gchar *listen, const gchar *token_file,
                               GError **error);
void serve_config_free(ServeConfig *config);

/* One camera from group @group of @kf, named @name; relative model paths are
 * taken from @base_dir (NULL: they are refused). @where starts every message
 * ("serve.conf: [camera cam1]", "request"). */
CameraConfig *camera_config_from_group(GKeyFile *kf, const gchar *group, const gchar *name,
                                       const gchar *base_dir, const gchar *evidence,
                                       const gchar *where, GError **error);
CameraConfig *camera_config_copy(const CameraConfig *c);
void camera_config_free(CameraConfig *c);

/* Whether @name can name a camera (URL paths, metric labels, file names):
 * 1 to SERVE_NAME_MAX of [A-Za-z0-9_.-], not starting with '.'. */
gboolean camera_name_valid(const gchar *name);

/* The keys a camera group takes (NULL-terminated), for messages and the API. */
extern const gchar *const camera_keys[];

/* "HOST:PORT", "[V6]:PORT" or ":PORT" (every address). */
gboolean parse_listen(const gchar *text, gchar **host, guint *port, GError **error);

#endif
