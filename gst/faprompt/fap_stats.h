/* What the faprompt element measures and reports: inference timing and
 * counts (its read-only properties), the streaming thread's cost per frame,
 * the pixels copied between host and device, and the latency it adds to a
 * frame (its answer to the LATENCY query, and when to post a LATENCY
 * message because that moved). Its own lock: the worker records inferences
 * while the streaming thread records frames and the application reads. */
#ifndef FAP_STATS_H
#define FAP_STATS_H

#include <gst/gst.h>

typedef struct {
  GMutex lock;
  guint64 frames;
  guint64 inferences;
  gdouble inference_ms_total;
  gdouble inference_ms_avg;     /* exponential average */
  gdouble frame_ms_avg;         /* streaming-thread cost per frame */
  gdouble latency_reported_ms;
  gfloat last_score;
  guint64 light_frames;         /* frames that ran no inference inline */
  gdouble light_ms_total;
  guint64 pixel_bytes;          /* frame pixels copied host <-> device */
} FapStats;

void fap_stats_init (FapStats * s);     /* once per element */
void fap_stats_clear (FapStats * s);    /* at finalize */
void fap_stats_reset (FapStats * s);    /* at start: all counts 0 */

/* An inference of @ms ran (any thread), copying @pixel_bytes. TRUE when a
 * frame waited for it (@frame_waited: blocking mode) and the latency the
 * element adds moved by a quarter: post a LATENCY message. */
gboolean fap_stats_add_inference (FapStats * s, gdouble ms, gsize pixel_bytes,
    gboolean frame_waited);
/* Pixels copied to draw a carried result. */
void fap_stats_add_pixel_bytes (FapStats * s, gsize bytes);
/* A frame left the element after @ms on the streaming thread (@inferred:
 * it ran its own inference). TRUE when, non-blocking, the latency the
 * element adds moved by a quarter: post a LATENCY message. */
gboolean fap_stats_add_frame (FapStats * s, gdouble ms, gboolean inferred,
    gboolean non_blocking);
void fap_stats_set_last_score (FapStats * s, gfloat score);

/* What a frame may spend in the element: in blocking mode the frames an
 * inference runs on wait for it; in non-blocking mode no frame waits for an
 * inference, only for the copy handed to the worker and the overlay. */
GstClockTime fap_stats_added_latency (FapStats * s, gboolean non_blocking);

/* The properties: frames-processed, inferences, average-inference-ms,
 * average-frame-ms, pixel-bytes-copied, last-score. */
typedef struct {
  guint64 frames, inferences, pixel_bytes;
  gdouble average_inference_ms, average_frame_ms;
  gfloat last_score;
} FapStatsReport;

void fap_stats_report (FapStats * s, FapStatsReport * r);

#endif
