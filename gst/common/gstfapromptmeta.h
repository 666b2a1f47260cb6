/* GstFAPromptMeta: the result of the faprompt element on one video buffer.
 *
 * Public API, installed as <faprompt-1.0/gstfapromptmeta.h>; link with
 * `pkg-config --libs faprompt-1.0`. An application reads it with
 *
 *   GstFAPromptMeta *m = gst_buffer_get_faprompt_meta (buffer);
 *   if (m) {
 *     g_print ("score %.3f%s\n", m->score, m->anomalous ? " ANOMALY" : "");
 *     // map value under frame pixel (x, y), nearest cell:
 *     float v = gst_faprompt_meta_map_at (m, x, y);
 *   }
 *
 * The same result is attached a second time as a structure-backed
 * GstCustomMeta named GST_FAPROMPT_STRUCTURE_META_NAME, which bindings (Python)
 * can read without this header; see gst/README.md for its fields.
 */
#ifndef __GST_FAPROMPT_META_H__
#define __GST_FAPROMPT_META_H__

#include <gst/gst.h>
#include <gst/video/video.h>

G_BEGIN_DECLS

#define GST_FAPROMPT_META_API_TYPE (gst_faprompt_meta_api_get_type ())
#define GST_FAPROMPT_META_INFO (gst_faprompt_meta_get_info ())
/* Name of the structure-backed twin (gst_buffer_get_custom_meta ()). */
#define GST_FAPROMPT_STRUCTURE_META_NAME "GstFAPromptStructureMeta"

typedef struct _GstFAPromptMeta GstFAPromptMeta;

/**
 * GstFAPromptMeta:
 * @meta: parent
 * @score: image anomaly score in [0, 1]
 * @anomalous: @score > the element's image-threshold when it was attached
 * @map_width: columns of the anomaly map (S)
 * @map_height: rows of the anomaly map (S)
 * @map_stride: bytes between rows of @map
 * @map: the anomaly map, row-major floats in [0, 1]; read-only, shared by
 *   every copy of this meta (it lives as long as @map_bytes)
 * @map_bytes: the block that owns @map (a #GBytes, reference counted)
 * @x: left edge of the frame rectangle the map covers, in buffer pixels
 * @y: top edge of that rectangle
 * @width: width of that rectangle; the map is stretched over it (the model
 *   resizes the frame to S x S ignoring aspect ratio)
 * @height: height of that rectangle
 * @inference_timestamp: PTS of the frame the result was computed on
 * @inference_ms: how long that inference took
 * @reused: TRUE when the result was computed on an earlier frame and carried
 *   over (inference-interval > 1, or non-blocking mode)
 * @image_threshold: the image threshold in force when it was attached
 * @pixel_threshold: the pixel threshold in force when it was attached
 * @n_regions: connected regions of the map above @pixel_threshold (each also
 *   attached as a GstVideoRegionOfInterestMeta of type "anomaly")
 * @model_generation: which model computed the result: 1 for the first model
 *   the element ran, +1 for each one that took over since (model-file
 *   changed while running, reload, watch-model, a restart); 0 when unknown
 * @model_family: the family of that model, "faprompt" or "anomalyclip"
 *   (a static string; NULL when unknown)
 * @precision: the number format its matrix products ran in: "f32", "bf16",
 *   "f16" or "int8" (what the backend chose for precision=auto, or what a
 *   request fell back to; a static string; NULL when unknown)
 */
struct _GstFAPromptMeta
{
  GstMeta meta;

  gfloat score;
  gboolean anomalous;

  guint map_width;
  guint map_height;
  guint map_stride;
  const gfloat *map;
  GBytes *map_bytes;

  gint x, y;
  guint width, height;

  GstClockTime inference_timestamp;
  gdouble inference_ms;
  gboolean reused;

  gfloat image_threshold;
  gfloat pixel_threshold;
  guint n_regions;
  guint64 model_generation;
  const gchar *model_family;
  const gchar *precision;

  /*< private >*/
  gpointer _gst_reserved[GST_PADDING - 3];     /* - model_generation, model_family, precision */
};

GType gst_faprompt_meta_api_get_type (void);
const GstMetaInfo *gst_faprompt_meta_get_info (void);

/* Registers the structure-backed twin; returns its info. Idempotent. */
const GstMetaInfo *gst_faprompt_structure_meta_get_info (void);

/* Adds a meta whose map is @map_bytes (width x height floats, @stride bytes a
 * row; a reference is taken, nothing is copied). Every other field is zero;
 * fill them in. */
GstFAPromptMeta *gst_buffer_add_faprompt_meta (GstBuffer * buffer,
    GBytes * map_bytes, guint width, guint height, guint stride);

/* The first GstFAPromptMeta of @buffer, or NULL. */
GstFAPromptMeta *gst_buffer_get_faprompt_meta (GstBuffer * buffer);

/* The map value covering buffer pixel (@px, @py) (nearest cell, the same
 * sampling the element's overlay uses); 0 outside the rectangle. */
gfloat gst_faprompt_meta_map_at (const GstFAPromptMeta * meta, gint px,
    gint py);

/* Builds the structure-backed twin from @meta (fields documented in
 * gst/README.md) and attaches it to @buffer; returns its structure. */
GstStructure *gst_buffer_add_faprompt_structure_meta (GstBuffer * buffer,
    const GstFAPromptMeta * meta);

G_END_DECLS

#endif /* __GST_FAPROMPT_META_H__ */
