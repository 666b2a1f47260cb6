/* One result as fapromptpublish and fapromptrecord send it: captured on the
 * streaming thread into a fixed-size record (no allocation: the publisher
 * keeps a preallocated ring of them), turned into the JSON document of
 * gst/common/schema/faprompt-result-1.schema.json later, on the sender's thread. */
#ifndef FAP_EVENT_H
#define FAP_EVENT_H

#include <gst/gst.h>

#define FAP_EVENT_SCHEMA "faprompt-result/1"
#define FAP_EVENT_MAX_REGIONS 32
#define FAP_EVENT_MAX_MAP 32
#define FAP_EVENT_MAX_ROIS 16

typedef enum {
  FAP_EVENT_MAP_NONE,
  FAP_EVENT_MAP_ARRAY,          /* rows of numbers */
  FAP_EVENT_MAP_BASE64,         /* float32 little-endian, row-major, base64 */
} FapEventMap;

typedef struct {
  gint x, y;
  guint width, height;          /* frame pixels */
  gfloat peak, mean;
} FapEventRegion;

/* One rectangle of faprompt's roi property and its result. */
typedef struct {
  gint x, y;
  guint width, height;          /* frame pixels */
  gfloat score;
  gboolean anomalous;
  guint region_count;
} FapEventRoi;

typedef struct {
  guint64 sequence;             /* per element, from 1 */
  GstClockTime pts;             /* the frame's */
  gint64 wall_us;               /* g_get_real_time () as it passed */
  gfloat score;                 /* with rois: the highest */
  gboolean anomalous, reused;   /* with rois: any anomalous */
  gfloat image_threshold, pixel_threshold;
  GstClockTime inference_pts;   /* the frame the result was computed on */
  gdouble inference_ms;
  gint x, y;
  guint width, height;          /* the frame rectangle the result covers
                                 * (with rois: the box around them) */
  guint n_rois;                 /* 0: faprompt had no roi set */
  FapEventRoi rois[FAP_EVENT_MAX_ROIS];
  guint map_roi;                /* with rois: the one whose map is below
                                 * (the highest score) */
  const gchar *event;           /* static string, or NULL */
  const gchar *model_file;      /* interned path, or NULL */
  guint64 model_generation;     /* which model of the element (0: unknown) */
  guint region_count;           /* all regions faprompt found */
  guint n_regions;              /* those kept below (the highest peaks) */
  FapEventRegion regions[FAP_EVENT_MAX_REGIONS];
  guint map_side;               /* 0: no map */
  gfloat map[FAP_EVENT_MAX_MAP * FAP_EVENT_MAX_MAP];
} FapEvent;

/* Fills @e from @buf's GstFAPromptMeta, its structure twin and its "anomaly"
 * ROI metas (sequence, event and wall time are the caller's); the map as a
 * @map_side x @map_side grid of cell means (0: none). With faprompt's roi
 * (one meta per rectangle, twins saying roi-count), the frame's result over
 * all of them: the highest score, any decision, every region (the highest
 * peaks), each rectangle in rois, the map of the highest-scoring one.
 * FALSE when @buf carries no result. */
gboolean fap_event_capture (FapEvent * e, GstBuffer * buf, guint map_side);

/* Appends the JSON document (one line, no newline) to @out. @model_sha256:
 * hex digest of the model file, or NULL while unknown. */
void fap_event_to_json (const FapEvent * e, const gchar * source,
    const gchar * model_sha256, FapEventMap map, GString * out);

/* SHA-256 (hex, g_free it) of a model file, computed once per (path, size,
 * mtime) and kept for the process; NULL when the file cannot be read. Reads
 * the whole file the first time: call it off the streaming thread.
 * Thread-safe. */
gchar *fap_event_model_sha256 (const gchar * path);

#endif
