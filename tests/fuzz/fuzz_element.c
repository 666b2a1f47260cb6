/* libFuzzer target: the faprompt element as a whole (gst/faprompt/gstfaprompt.c and
 * its helpers, the CPU core), driven through GstHarness with caps, frames,
 * properties and events that the input decides. The element is registered
 * statically (no plugin scanner); the model is the 26 kB seed of the `model`
 * target (embedded, written to a temporary file once), backend=cpu,
 * threads=1.
 *
 * The input, read front to back (bytes past its end read as 0):
 *   header  flags, inference-interval, max-regions, heatmap-min/max/alpha,
 *           pixel/image-threshold, sigma
 *   ops     until the input ends (at most MAX_OPS): caps (format, width,
 *           height, colorimetry, interlace mode, framerate, a format or
 *           size the element refuses), a frame (layout: GStreamer's own,
 *           padded strides and odd plane offsets in a GstVideoMeta, planes in
 *           separate memories, a buffer shorter than the caps say, a shared
 *           buffer; contents from the input), flush, EOS, a new segment, a
 *           property change mid-stream (roi among them: rectangles in
 *           pixels or fractions, in or outside the frame, too many, text
 *           that does not parse; tiles: "auto", CxR in and out of range,
 *           text; tile-max-patch-pixels; tile-overlap; ignore-mask: a PNG
 *           of the frames' aspect, one of another, a corrupt one, a
 *           missing file, none), a restart (READY and back, another
 *           non-blocking mode).
 *
 * Beyond "no crash, no leak" it aborts when (see check_* below):
 *   - a push of a valid frame in a format the element takes is refused, or
 *     a frame in caps it must refuse is accepted;
 *   - a push that failed left no ERROR message naming faprompt on the bus;
 *   - an accepted frame did not come out (exactly one buffer per push);
 *   - blocking mode: an accepted frame has no GstFAPromptMeta, or a fresh /
 *     reused flag or inference timestamp that inference-interval does not
 *     give; non-blocking: a result from before the last flush / caps change;
 *   - a meta is inconsistent (map size, values outside [0, 1], score, the
 *     decision, rectangle, ROI count and bounds, the structure twin); with
 *     roi never set: one meta over the whole frame; with roi: 1..16 metas
 *     of one inference, each rectangle inside the frame, each region inside
 *     its rectangle;
 *   - pixels changed with draw-heatmap=false, bytes outside the planes
 *     (stride padding, gaps, tail) changed, a pixel outside every meta's
 *     rectangle changed, or a buffer the element did not own was written;
 *   - a roi, tiles, tile-overlap or ignore-mask value the element did not
 *     take posted no warning naming it;
 *   - "faprompt" messages do not match post-messages (one per frame with a
 *     result, one per anomalous frame, on-change events pairing up). */
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gdk-pixbuf/gdk-pixbuf.h>

#include "gstfaprompt.h"
#include "gstfapromptmeta.h"

/* the model seed, embedded (FAP_FUZZ_MODEL_SEED: its path at build time) */
#ifndef FAP_FUZZ_MODEL_SEED
#error "build with -DFAP_FUZZ_MODEL_SEED=\"tests/fuzz/seeds/model/micro-f16.safetensors\""
#endif
__asm__(".section .rodata\n"
        ".balign 16\n"
        "fap_fuzz_model:\n"
        ".incbin \"" FAP_FUZZ_MODEL_SEED "\"\n"
        "fap_fuzz_model_end:\n"
        ".previous\n");
extern const unsigned char fap_fuzz_model[] __asm__("fap_fuzz_model");
extern const unsigned char fap_fuzz_model_end[] __asm__("fap_fuzz_model_end");

static gchar *model_path;

#define MAX_OPS 24
#define MAX_PUSHES 10

#define FAIL(...)                                                                                  \
  do {                                                                                             \
    fprintf(stderr, "fuzz_element: invariant broken (%s:%d): ", __FILE__, __LINE__);              \
    fprintf(stderr, __VA_ARGS__);                                                                  \
    fprintf(stderr, "\n");                                                                         \
    abort();                                                                                       \
  } while (0)

/* ---- input ----------------------------------------------------------------- */

typedef struct {
  const uint8_t *d;
  size_t n, pos;
} Reader;

static uint8_t rd8(Reader *r) { return r->pos < r->n ? r->d[r->pos++] : 0; }
static uint16_t rd16(Reader *r) {
  uint16_t a = rd8(r);
  return (uint16_t)(a | rd8(r) << 8);
}
static gboolean at_end(const Reader *r) { return r->pos >= r->n; }

/* ---- formats ------------------------------------------------------------------ */

typedef struct {
  const char *name;
  gboolean taken; /* in FAP_FRAMEVIEW_FORMATS */
} Format;

static const Format formats[] = {
    {"RGB", TRUE},   {"BGR", TRUE},    {"RGBA", TRUE},  {"BGRA", TRUE},  {"RGBx", TRUE},
    {"BGRx", TRUE},  {"xRGB", TRUE},   {"xBGR", TRUE},  {"NV12", TRUE},  {"I420", TRUE},
    {"YUY2", TRUE},  {"GRAY8", FALSE}, {"NV21", FALSE}, {"UYVY", FALSE}, {"YV12", FALSE},
    {"RGB16", FALSE}, {"AYUV", FALSE}, {"I420_10LE", FALSE}, {"ARGB", FALSE}, {"Y444", FALSE},
};
#define N_TAKEN 11

static const char *colorimetries[] = {NULL,   "bt601",  "bt709",     "bt2020",  "smpte240m",
                                      "sRGB", "1:4:0:0", "2:3:0:0", "bt2100-pq", "garbage"};
static const char *interlace_modes[] = {NULL, "progressive", "interleaved", "mixed"};

/* What the fuzzer sent last and what the element should make of it. */
typedef struct {
  gboolean sent;           /* a caps event went out */
  gboolean template_ok;    /* the sink template takes it */
  gboolean element_ok;     /* and the element's set_info (format, matrix) */
  GstVideoInfo info;       /* when parsed */
  gboolean info_ok;
} CapsState;

/* ---- one run ------------------------------------------------------------------ */

typedef struct {
  gboolean draw;
  guint interval;
  guint max_regions;
  gint messages; /* GstFAPromptMessages */
  gint non_blocking; /* 0 false, 1 true, 2 auto */
  gfloat image_threshold;
  gboolean roi_ever; /* roi was set (the metas may cover rectangles) */
} Props;

typedef struct {
  GstHarness *h;
  GstElement *e;
  GstBus *bus;
  Props p;
  CapsState caps;          /* the last caps sent */
  GstVideoInfo elem_info;  /* what the element runs with (its have_info/info) */
  gboolean elem_has_info;
  gboolean eos;            /* harness src pad saw EOS */
  gboolean running_nb;     /* the element runs non-blocking */
  guint countdown;         /* blocking: the element's countdown, modelled */
  GstClockTime last_fresh_pts;
  gboolean uncertain;      /* blocking: a failed frame may have moved the countdown */
  GArray *gen_pts;         /* PTS of frames pushed in this generation */
  gboolean in_anomaly;     /* on-change: the element's state, modelled */
  guint64 pts_counter;
  guint pushes;
  guint errors_seen;       /* ERROR messages popped since the last check */
  gchar *last_error;
  GString *warnings;       /* WARNING texts popped since the last roi set */
  guint faprompt_msgs, event_started, event_ended;
  gboolean bad_event_order;
} Run;

static void new_generation(Run *r) {
  g_array_set_size(r->gen_pts, 0);
  r->countdown = 0;
  r->uncertain = FALSE;
}

/* Pops every message: counts ERRORs (with their text) and "faprompt"
 * element messages, and follows the on-change pairing. */
static void drain_bus(Run *r) {
  GstMessage *m;
  while ((m = gst_bus_pop(r->bus))) {
    if (GST_MESSAGE_TYPE(m) == GST_MESSAGE_ERROR) {
      GError *err = NULL;
      gchar *dbg = NULL;
      gst_message_parse_error(m, &err, &dbg);
      if (!err || !err->message || !strstr(err->message, "faprompt"))
        FAIL("an error message that does not name faprompt: %s", err ? err->message : "(null)");
      r->errors_seen++;
      g_free(r->last_error);
      r->last_error = g_strdup(err->message);
      g_error_free(err);
      g_free(dbg);
    } else if (GST_MESSAGE_TYPE(m) == GST_MESSAGE_WARNING) {
      GError *err = NULL;
      gst_message_parse_warning(m, &err, NULL);
      if (err && err->message)
        g_string_append_printf(r->warnings, "%s\n", err->message);
      if (err)
        g_error_free(err);
    } else if (GST_MESSAGE_TYPE(m) == GST_MESSAGE_ELEMENT) {
      const GstStructure *s = gst_message_get_structure(m);
      if (s && gst_structure_has_name(s, "faprompt")) {
        const gchar *ev = gst_structure_get_string(s, "event");
        gdouble score = -1;
        if (!gst_structure_get_double(s, "score", &score) || !(score >= 0.0 && score <= 1.0))
          FAIL("faprompt message with score %g", score);
        if (ev) {
          if (g_str_equal(ev, "anomaly-started")) {
            if (r->in_anomaly)
              FAIL("anomaly-started twice without anomaly-ended");
            r->in_anomaly = TRUE;
            r->event_started++;
          } else if (g_str_equal(ev, "anomaly-ended")) {
            if (!r->in_anomaly)
              FAIL("anomaly-ended without anomaly-started");
            r->in_anomaly = FALSE;
            r->event_ended++;
          } else {
            FAIL("unknown event %s", ev);
          }
        } else {
          r->faprompt_msgs++;
        }
      }
    }
    gst_message_unref(m);
  }
}

static void set_messages(Run *r, gint mode) {
  r->p.messages = mode;
  g_object_set(r->e, "post-messages", mode, NULL);
  /* switching away from on-change drops its state without a message, at
   * the first result that passes in the other mode (switching back before
   * one does keeps it: the anomaly-ended still pairs with its start) */
}

static GstCaps *make_caps(Reader *in, CapsState *cs) {
  uint8_t f = rd8(in), wb = rd8(in), hb = rd8(in), x = rd8(in), y = rd8(in);
  const Format *fmt = &formats[f % G_N_ELEMENTS(formats)];
  int w = 1 + wb % 200, h = 1 + hb % 200;
  const char *colorimetry = colorimetries[x % G_N_ELEMENTS(colorimetries)];
  const char *interlace = interlace_modes[(x >> 4) % G_N_ELEMENTS(interlace_modes)];
  gboolean zero_size = (y & 0x0f) == 0x0f;
  gboolean alternate = (y & 0x0f) == 0x0e; /* needs format:Interlaced */
  gboolean cuda = (y & 0x0f) == 0x0d;      /* not built here */
  GstCaps *caps;

  if (zero_size) {
    if (y & 0x10)
      w = 0;
    else
      h = 0;
  }
  caps = gst_caps_new_simple("video/x-raw", "format", G_TYPE_STRING, fmt->name, "width",
                             G_TYPE_INT, w, "height", G_TYPE_INT, h, NULL);
  if (y & 0x20)
    gst_caps_set_simple(caps, "framerate", GST_TYPE_FRACTION, (y & 0x40) ? 0 : 30, 1, NULL);
  if (y & 0x80)
    gst_caps_set_simple(caps, "pixel-aspect-ratio", GST_TYPE_FRACTION, 1 + (wb & 3), 1 + (hb & 3),
                        NULL);
  if (colorimetry)
    gst_caps_set_simple(caps, "colorimetry", G_TYPE_STRING, colorimetry, NULL);
  if (alternate)
    interlace = "alternate";
  if (interlace)
    gst_caps_set_simple(caps, "interlace-mode", G_TYPE_STRING, interlace, NULL);
  if (interlace && g_str_equal(interlace, "interleaved") && (x & 1))
    gst_caps_set_simple(caps, "field-order", G_TYPE_STRING, "top-field-first", NULL);
  if (alternate)
    gst_caps_set_features(caps, 0, gst_caps_features_new("format:Interlaced", NULL));
  if (cuda)
    gst_caps_set_features(caps, 0, gst_caps_features_new("memory:CUDAMemory", NULL));

  memset(cs, 0, sizeof *cs);
  cs->sent = TRUE;
  cs->template_ok = fmt->taken && w > 0 && h > 0 && !alternate && !cuda;
  cs->info_ok = gst_video_info_from_caps(&cs->info, caps);
  cs->element_ok = cs->template_ok && cs->info_ok;
  if (cs->element_ok && GST_VIDEO_INFO_IS_YUV(&cs->info)) {
    GstVideoColorMatrix m = cs->info.colorimetry.matrix;
    cs->element_ok = m == GST_VIDEO_COLOR_MATRIX_BT601 || m == GST_VIDEO_COLOR_MATRIX_BT709 ||
                     m == GST_VIDEO_COLOR_MATRIX_BT2020 || m == GST_VIDEO_COLOR_MATRIX_UNKNOWN;
  }
  return caps;
}

static void push_segment(Run *r, Reader *in, gboolean fuzzed) {
  GstSegment seg;
  gst_segment_init(&seg, GST_FORMAT_TIME);
  if (fuzzed) {
    static const double rates[] = {1.0, 2.0, 0.5, -1.0};
    uint8_t a = rd8(in), b = rd8(in);
    seg.rate = rates[a & 3];
    seg.start = (guint64)(b & 0x3f) * GST_SECOND / 30;
    seg.stop = (a & 4) ? seg.start + (guint64)(b >> 6) * GST_SECOND : GST_CLOCK_TIME_NONE;
    seg.time = (a & 8) ? seg.start : 0;
    seg.base = (guint64)(a >> 4) * GST_SECOND;
    seg.position = seg.start;
    if (seg.rate < 0 && seg.stop == GST_CLOCK_TIME_NONE)
      seg.stop = seg.start + GST_SECOND;
  }
  gst_harness_push_event(r->h, gst_event_new_segment(&seg));
}

/* ---- frames -------------------------------------------------------------------- */

typedef struct {
  int planes;
  size_t row[3], rows[3];
} Shape;

/* the rows of each plane as the core reads them (fap.h) */
static void shape_of(const GstVideoInfo *info, int w, int h, Shape *s) {
  GstVideoFormat f = GST_VIDEO_INFO_FORMAT(info);
  size_t cw = ((size_t)w + 1) / 2, ch = ((size_t)h + 1) / 2;
  memset(s, 0, sizeof *s);
  s->planes = GST_VIDEO_INFO_N_PLANES(info);
  s->rows[0] = h;
  switch (f) {
  case GST_VIDEO_FORMAT_RGB:
  case GST_VIDEO_FORMAT_BGR:
    s->row[0] = (size_t)w * 3;
    break;
  case GST_VIDEO_FORMAT_YUY2:
    s->row[0] = 4 * cw;
    break;
  case GST_VIDEO_FORMAT_NV12:
    s->row[0] = w;
    s->row[1] = 2 * cw;
    s->rows[1] = ch;
    break;
  case GST_VIDEO_FORMAT_I420:
    s->row[0] = w;
    s->row[1] = s->row[2] = cw;
    s->rows[1] = s->rows[2] = ch;
    break;
  case GST_VIDEO_FORMAT_RGBA:
  case GST_VIDEO_FORMAT_BGRA:
  case GST_VIDEO_FORMAT_RGBx:
  case GST_VIDEO_FORMAT_BGRx:
  case GST_VIDEO_FORMAT_xRGB:
  case GST_VIDEO_FORMAT_xBGR:
    s->row[0] = (size_t)w * 4;
    break;
  default: /* a format the element refuses: any layout of its planes */
    for (int p = 0; p < s->planes && p < 3; p++) {
      s->row[p] = w;
      s->rows[p] = h;
    }
    s->planes = MIN(s->planes, 3);
    break;
  }
}

/* Fills @n bytes from the input: a constant, the input's bytes repeated,
 * a generator seeded by them, or a gradient. */
static void fill(Reader *in, uint8_t *d, size_t n) {
  uint8_t mode = rd8(in), len = rd8(in) % 48;
  uint8_t chunk[48];
  for (int i = 0; i < len; i++)
    chunk[i] = rd8(in);
  uint32_t s = 2463534242u;
  for (int i = 0; i < len; i++)
    s = s * 33 + chunk[i];
  for (size_t i = 0; i < n; i++) {
    switch (mode & 3) {
    case 0:
      d[i] = len ? chunk[0] : mode;
      break;
    case 1:
      d[i] = len ? chunk[i % len] : (uint8_t)i;
      break;
    case 2:
      s ^= s << 13, s ^= s >> 17, s ^= s << 5;
      d[i] = (uint8_t)s;
      break;
    default:
      d[i] = (uint8_t)(i * (mode >> 2) + (i >> 8) * 7);
      break;
    }
  }
}

typedef enum {
  FRAME_VALID,    /* must be taken (when the caps are) */
  FRAME_SHORT,    /* shorter than its layout: must be refused with an error */
  FRAME_SUSPECT,  /* bad strides: an error, or taken when no reader trips on them */
} FrameKind;

typedef struct {
  GstBuffer *buf;
  FrameKind kind;
  GstVideoFormat format;
  int planes;
  gsize offset[3];      /* of each plane in the bytes pushed */
  gint stride[3];
  int w, h;             /* of the frame the element sees (the meta's when there is one) */
  guint8 *copy;         /* the bytes pushed */
  guint8 *plane_mask;   /* 1 where a plane's row bytes lie (may be drawn into) */
  gsize size;
  GstClockTime pts;
} Frame;

static void frame_clear(Frame *f) {
  g_free(f->copy);
  g_free(f->plane_mask);
  memset(f, 0, sizeof *f);
}

/* wrapped memories own their block: g_free on release */
static GstMemory *wrap_owned(guint8 *data, gsize size) {
  /* maxsize at least 1: a zero-sized memory of a short frame */
  return gst_memory_new_wrapped(0, data, MAX(size, 1), 0, size, data, g_free);
}

/* A frame for the caps last sent (or a size of its own when the caps are
 * unusable). The layout byte picks GStreamer's default layout, a meta with
 * padded strides and odd offsets, planes in separate memories, or a short
 * or badly strided buffer. */
static GstBuffer *make_frame(Run *r, Reader *in, Frame *fr, gboolean bad_meta_ok) {
  GstVideoInfo info;
  uint8_t layout = rd8(in), a = rd8(in), b = rd8(in);
  Shape sh;
  gsize offset[4] = {0}, end = 0, size;
  gint stride[4] = {0};
  gboolean meta = FALSE, split = FALSE;
  int mw, mh;

  memset(fr, 0, sizeof *fr);
  if (r->caps.info_ok)
    info = r->caps.info;
  else
    gst_video_info_set_format(&info, GST_VIDEO_FORMAT_RGB, 1 + a % 64, 1 + b % 64);
  /* caps of width or height 0 parse, and are refused: any frame will do */
  mw = MAX(GST_VIDEO_INFO_WIDTH(&info), 1);
  mh = MAX(GST_VIDEO_INFO_HEIGHT(&info), 1);
  fr->kind = FRAME_VALID;

  switch (layout % 10) {
  case 0:
  case 1:
  case 2: /* GStreamer's layout, no meta; 2: a longer buffer */
    size = GST_VIDEO_INFO_SIZE(&info) + (layout % 10 == 2 ? a : 0);
    for (int p = 0; p < (int)GST_VIDEO_INFO_N_PLANES(&info); p++) {
      offset[p] = GST_VIDEO_INFO_PLANE_OFFSET(&info, p);
      stride[p] = GST_VIDEO_INFO_PLANE_STRIDE(&info, p);
    }
    break;
  case 3: /* shorter than the caps say */
    size = GST_VIDEO_INFO_SIZE(&info);
    size = size > 1 ? size - 1 - a % (size - 1) : 0;
    for (int p = 0; p < (int)GST_VIDEO_INFO_N_PLANES(&info); p++) {
      offset[p] = GST_VIDEO_INFO_PLANE_OFFSET(&info, p);
      stride[p] = GST_VIDEO_INFO_PLANE_STRIDE(&info, p);
    }
    fr->kind = FRAME_SHORT;
    break;
  default: /* a GstVideoMeta: padded strides, odd offsets */
    meta = TRUE;
    if ((layout % 10) == 9 && (a & 0x80)) { /* a meta larger than the caps */
      mw += a & 7;
      mh += b & 7;
    }
    break;
  }

  shape_of(&info, mw, mh, &sh);
  if (meta) {
    int kind = layout % 10;
    split = kind == 5 || kind == 6;
    for (int p = 0; p < sh.planes; p++) {
      gsize gap = rd8(in) % 40, pad = rd8(in) % 33;
      offset[p] = end + gap;
      stride[p] = (gint)(sh.row[p] + pad);
      end = offset[p] + (sh.rows[p] - 1) * (gsize)stride[p] + sh.row[p];
    }
    size = end + (a & 15);
    if (kind == 7 && bad_meta_ok) { /* valid layout, buffer cut short */
      size = end > 1 ? end - 1 - b % (end - 1) : 0;
      fr->kind = FRAME_SHORT;
    } else if (kind == 8 && bad_meta_ok) { /* a stride below the row, or negative */
      int p = b % sh.planes;
      if (b & 0x80) {
        stride[p] = -(gint)sh.row[p];
        offset[p] += (sh.rows[p] - 1) * sh.row[p]; /* bottom-up rows inside the plane */
      } else {
        stride[p] = (gint)(sh.row[p] > 1 ? sh.row[p] - 1 - a % (sh.row[p] - 1) : 0);
      }
      fr->kind = FRAME_SUSPECT;
    } else if (kind == 6 && bad_meta_ok && sh.planes > 0 && sh.row[0] * sh.rows[0] >= 2) {
      /* (a one-byte plane cannot be cut: the cut would fall after it) */
      fr->kind = FRAME_SHORT; /* a plane spanning two memories (split below) */
    }
  }

  fr->w = mw;
  fr->h = mh;
  fr->size = size;
  fr->format = GST_VIDEO_INFO_FORMAT(&info);
  fr->planes = MIN(sh.planes, 3);
  for (int p = 0; p < fr->planes; p++) {
    fr->offset[p] = offset[p];
    fr->stride[p] = stride[p];
  }
  fr->copy = g_malloc0(size ? size : 1);
  fill(in, fr->copy, size);
  fr->plane_mask = g_malloc0(size ? size : 1);
  for (int p = 0; p < sh.planes && fr->kind != FRAME_SUSPECT; p++)
    for (size_t y = 0; y < sh.rows[p]; y++) {
      gsize o = offset[p] + y * (gsize)stride[p];
      for (size_t x = 0; x < sh.row[p] && o + x < size; x++)
        fr->plane_mask[o + x] = 1;
    }
  if (fr->kind == FRAME_SUSPECT)
    memset(fr->plane_mask, 1, size);

  GstBuffer *buf = gst_buffer_new();
  if (split && size > 0) {
    /* one memory per plane (6 with bad meta: a cut inside plane 0 too) */
    gsize cuts[4], nc = 0, at = 0;
    for (int p = 1; p < sh.planes; p++)
      cuts[nc++] = offset[p];
    if (fr->kind == FRAME_SHORT)
      cuts[nc++] = offset[0] + 1 + b % MAX(sh.row[0] * sh.rows[0] - 1, 1);
    for (gsize i = 1; i < nc; i++) /* ascending */
      for (gsize j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
        gsize t = cuts[j];
        cuts[j] = cuts[j - 1];
        cuts[j - 1] = t;
      }
    for (gsize i = 0; i <= nc; i++) {
      gsize to = i < nc ? cuts[i] : size;
      if (i < nc && (to <= at || to >= size))
        continue;
      gst_buffer_append_memory(buf, wrap_owned(g_memdup2(fr->copy + at, to - at), to - at));
      at = to;
    }
  } else {
    gst_buffer_append_memory(buf, wrap_owned(g_memdup2(fr->copy, size ? size : 1), size));
  }
  if (meta) {
    gsize off[GST_VIDEO_MAX_PLANES] = {0};
    gint st[GST_VIDEO_MAX_PLANES] = {0};
    for (int p = 0; p < sh.planes; p++) {
      off[p] = offset[p];
      st[p] = stride[p];
    }
    gst_buffer_add_video_meta_full(buf, GST_VIDEO_FRAME_FLAG_NONE, GST_VIDEO_INFO_FORMAT(&info),
                                   mw, mh, sh.planes, off, st);
  }
  return buf;
}

/* ---- checks on what came out --------------------------------------------------- */

static guint count_metas(GstBuffer *b, GType api) {
  gpointer state = NULL;
  guint n = 0;
  while (gst_buffer_iterate_meta_filtered(b, &state, api))
    n++;
  return n;
}

/* the metas of one buffer, in order */
static guint metas_of(GstBuffer *b, GstFAPromptMeta **out, guint max) {
  gpointer state = NULL;
  GstMeta *m;
  guint n = 0;
  while ((m = gst_buffer_iterate_meta_filtered(b, &state, GST_FAPROMPT_META_API_TYPE)))
    if (n < max)
      out[n++] = (GstFAPromptMeta *)m;
  return n;
}

static void check_one_meta(Run *r, const Frame *fr, GstFAPromptMeta *m);

/* every meta of the frame (one per roi rectangle) and the regions */
static void check_meta(Run *r, const Frame *fr, GstBuffer *out, GstFAPromptMeta *m) {
  GstFAPromptMeta *all[17];
  guint n = count_metas(out, GST_FAPROMPT_META_API_TYPE), regions = 0;
  if (n < 1 || n > 16 || (!r->p.roi_ever && n != 1))
    FAIL("%u GstFAPromptMeta on one frame (roi set: %d)", n, r->p.roi_ever);
  metas_of(out, all, 17);
  for (guint i = 0; i < n; i++) {
    check_one_meta(r, fr, all[i]);
    if (all[i]->inference_timestamp != m->inference_timestamp || all[i]->reused != m->reused ||
        all[i]->map_width != m->map_width)
      FAIL("the metas of one frame come from different inferences");
    regions += all[i]->n_regions;
  }
  guint rois = 0;
  gpointer state = NULL;
  GstMeta *gm;
  while ((gm = gst_buffer_iterate_meta_filtered(out, &state,
                                                GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE))) {
    GstVideoRegionOfInterestMeta *roi = (GstVideoRegionOfInterestMeta *)gm;
    GstStructure *p = gst_video_region_of_interest_meta_get_param(roi, "faprompt");
    guint k = 0;
    if (n > 1 && (!p || !gst_structure_get_uint(p, "roi", &k) || k >= n))
      FAIL("a region that names no rectangle of the frame");
    const GstFAPromptMeta *in = all[k];
    if (roi->x < in->x || roi->y < in->y || roi->w == 0 || roi->h == 0 ||
        (guint64)roi->x + roi->w > (guint64)in->x + in->width ||
        (guint64)roi->y + roi->h > (guint64)in->y + in->height)
      FAIL("region %d,%d %ux%u outside its rectangle %d,%d %ux%u", roi->x, roi->y, roi->w,
           roi->h, in->x, in->y, in->width, in->height);
    rois++;
  }
  if (rois != regions)
    FAIL("%u ROI metas, n_regions %u", rois, regions);

  GstCustomMeta *cm = gst_buffer_get_custom_meta(out, GST_FAPROMPT_STRUCTURE_META_NAME);
  if (!cm)
    FAIL("no structure meta beside the GstFAPromptMeta");
  GstStructure *s = gst_custom_meta_get_structure(cm);
  gdouble score = -1;
  if (!gst_structure_get_double(s, "score", &score) || fabs(score - m->score) > 1e-6)
    FAIL("structure meta score %g, meta %g", score, m->score);
}

static void check_one_meta(Run *r, const Frame *fr, GstFAPromptMeta *m) {
  if (!m->map || m->map_width == 0 || m->map_width != m->map_height ||
      m->map_stride != m->map_width * sizeof(gfloat) || !m->map_bytes ||
      g_bytes_get_size(m->map_bytes) < (gsize)m->map_stride * m->map_height)
    FAIL("map %ux%u stride %u", m->map_width, m->map_height, m->map_stride);
  for (guint i = 0; i < m->map_width * m->map_height; i++)
    if (!(m->map[i] >= 0.0f && m->map[i] <= 1.0f))
      FAIL("map value %.9g at %u", m->map[i], i);
  if (!(m->score >= 0.0f && m->score <= 1.0f))
    FAIL("score %g", m->score);
  if (!m->anomalous != !(m->score > m->image_threshold))
    FAIL("anomalous %d for score %g, threshold %g", m->anomalous, m->score, m->image_threshold);
  if (r->p.image_threshold >= 0 && m->image_threshold != r->p.image_threshold)
    FAIL("image threshold %g, set %g", m->image_threshold, r->p.image_threshold);
  if (!r->p.roi_ever &&
      (m->x != 0 || m->y != 0 || m->width != (guint)fr->w || m->height != (guint)fr->h))
    FAIL("rectangle %d,%d %ux%u of a %dx%d frame", m->x, m->y, m->width, m->height, fr->w, fr->h);
  if (m->x < 0 || m->y < 0 || m->width == 0 || m->height == 0 ||
      (guint64)m->x + m->width > (guint64)fr->w || (guint64)m->y + m->height > (guint64)fr->h)
    FAIL("rectangle %d,%d %ux%u outside the %dx%d frame", m->x, m->y, m->width, m->height, fr->w,
         fr->h);
  volatile float v = gst_faprompt_meta_map_at(m, fr->w - 1, fr->h - 1) +
                     gst_faprompt_meta_map_at(m, 0, 0) + gst_faprompt_meta_map_at(m, fr->w, -1);
  (void)v;
  if (r->p.max_regions && m->n_regions > r->p.max_regions)
    FAIL("%u regions, max-regions %u", m->n_regions, r->p.max_regions);
}

/* Whether every pixel that byte @i of the pushed bytes belongs to lies in
 * one of the metas' rectangles (a byte of no pixel: padding, never). */
static gboolean byte_in_rects(const Frame *fr, gsize i, GstFAPromptMeta **m, guint n) {
  for (int p = fr->planes - 1; p >= 0; p--) {
    if (i < fr->offset[p] || fr->stride[p] <= 0)
      continue;
    const gsize rel = i - fr->offset[p];
    const int row = (int)(rel / (gsize)fr->stride[p]), b = (int)(rel % (gsize)fr->stride[p]);
    int x0, nx, y0 = row, ny = 1;
    switch (fr->format) {
    case GST_VIDEO_FORMAT_NV12:
    case GST_VIDEO_FORMAT_I420:
      if (p == 0) {
        x0 = b, nx = 1;
      } else {
        x0 = 2 * (fr->format == GST_VIDEO_FORMAT_NV12 ? b / 2 : b), nx = 2;
        y0 = 2 * row, ny = 2;
      }
      break;
    case GST_VIDEO_FORMAT_YUY2:
      x0 = 2 * (b / 4) + ((b % 4) == 2), nx = (b % 2) ? 2 : 1;
      break;
    case GST_VIDEO_FORMAT_RGB:
    case GST_VIDEO_FORMAT_BGR:
      x0 = b / 3, nx = 1;
      break;
    default:
      x0 = b / 4, nx = 1;
      break;
    }
    gboolean any = FALSE;
    for (int y = y0; y < y0 + ny && y < fr->h; y++)
      for (int x = x0; x < x0 + nx && x < fr->w; x++) {
        gboolean in = FALSE;
        for (guint k = 0; k < n && !in; k++)
          in = x >= m[k]->x && x < m[k]->x + (int)m[k]->width && y >= m[k]->y &&
               y < m[k]->y + (int)m[k]->height;
        if (!in)
          return FALSE;
        any = TRUE;
      }
    return any;
  }
  return FALSE;
}

static void check_output(Run *r, const Frame *fr, GstBuffer *out, guint msgs_before) {
  GstFAPromptMeta *m = gst_buffer_get_faprompt_meta(out);
  GstMapInfo mi;
  guint msgs;

  if (!r->running_nb && !r->uncertain) {
    /* blocking: the countdown as the element keeps it */
    gboolean due;
    if (r->countdown > r->p.interval - 1)
      r->countdown = r->p.interval - 1;
    due = r->countdown == 0;
    if (due)
      r->countdown = r->p.interval;
    if (r->countdown > 0)
      r->countdown--;
    if (!m)
      FAIL("blocking mode: an accepted frame without GstFAPromptMeta");
    if (due) {
      if (m->reused || m->inference_timestamp != fr->pts)
        FAIL("a due frame (pts %" G_GUINT64_FORMAT ") carries reused=%d from %" G_GUINT64_FORMAT,
             fr->pts, m->reused, m->inference_timestamp);
      r->last_fresh_pts = fr->pts;
    } else {
      if (!m->reused || m->inference_timestamp != r->last_fresh_pts)
        FAIL("a frame between inferences carries reused=%d from %" G_GUINT64_FORMAT
             ", expected %" G_GUINT64_FORMAT,
             m->reused, m->inference_timestamp, r->last_fresh_pts);
    }
  } else if (!r->running_nb && !m) {
    FAIL("blocking mode: an accepted frame without GstFAPromptMeta");
  } else if (r->running_nb && m && GST_CLOCK_TIME_IS_VALID(m->inference_timestamp)) {
    gboolean found = FALSE;
    for (guint i = 0; i < r->gen_pts->len; i++)
      found |= g_array_index(r->gen_pts, GstClockTime, i) == m->inference_timestamp;
    if (!found)
      FAIL("non-blocking: a result (pts %" G_GUINT64_FORMAT
           ") from before the last flush / caps change",
           m->inference_timestamp);
  }
  if (m)
    check_meta(r, fr, out, m);

  msgs = r->faprompt_msgs - msgs_before;
  switch (r->p.messages) {
  case GST_FA_PROMPT_MESSAGES_EVERY_FRAME:
    if (msgs != (m ? 1u : 0u))
      FAIL("every-frame: %u messages for a frame %s a result", msgs, m ? "with" : "without");
    break;
  case GST_FA_PROMPT_MESSAGES_ANOMALOUS:
    if (msgs != (m && m->anomalous ? 1u : 0u))
      FAIL("anomalous: %u messages for a frame with anomalous=%d", msgs, m ? m->anomalous : -1);
    break;
  default:
    if (msgs)
      FAIL("%u per-frame messages with post-messages=%d", msgs, r->p.messages);
  }
  if (r->p.messages == GST_FA_PROMPT_MESSAGES_ON_CHANGE && m && !r->in_anomaly != !m->anomalous)
    FAIL("on-change: in anomaly %d after a frame with anomalous=%d", r->in_anomaly, m->anomalous);
  if (r->p.messages != GST_FA_PROMPT_MESSAGES_ON_CHANGE && m)
    r->in_anomaly = FALSE;

  /* pixels: untouched without drawing; never outside the planes */
  if (!gst_buffer_map(out, &mi, GST_MAP_READ))
    FAIL("cannot map the output");
  if (mi.size != fr->size)
    FAIL("output of %zu bytes for %zu in", mi.size, fr->size);
  GstFAPromptMeta *all[16];
  const guint n_metas = m ? metas_of(out, all, 16) : 0;
  for (gsize i = 0; i < mi.size; i++)
    if (mi.data[i] != fr->copy[i]) {
      if (!r->p.draw || !m || !fr->plane_mask[i])
        FAIL("byte %zu changed (%u -> %u), draw-heatmap=%d, in a plane %d", i, fr->copy[i],
             mi.data[i], r->p.draw, fr->plane_mask[i]);
      if (fr->kind != FRAME_SUSPECT && !byte_in_rects(fr, i, all, n_metas))
        FAIL("byte %zu of a pixel outside every rectangle changed", i);
    }
  gst_buffer_unmap(out, &mi);
}

/* ---- operations ------------------------------------------------------------------ */

static void op_caps(Run *r, Reader *in) {
  CapsState cs;
  GstCaps *caps = make_caps(in, &cs);
  guint errors = r->errors_seen;

  gst_harness_push_event(r->h, gst_event_new_caps(caps));
  gst_caps_unref(caps);
  if (r->eos)
    return; /* refused at the pad: nothing reaches the element */
  r->caps = cs;
  push_segment(r, in, FALSE);
  drain_bus(r);
  if (cs.element_ok) {
    if (!r->elem_has_info || !gst_video_info_is_equal(&cs.info, &r->elem_info))
      new_generation(r); /* the element drops its result (reset_stream) */
    r->elem_info = cs.info;
    r->elem_has_info = TRUE;
  } else if (cs.template_ok && cs.info_ok && r->errors_seen == errors) {
    FAIL("caps refused by the element without an error message");
  }
}

static void op_frame(Run *r, Reader *in, gboolean bad_meta_ok) {
  Frame fr;
  GstBuffer *buf, *keep = NULL;
  uint8_t flags;
  gboolean shared, no_pts;
  guint errors = r->errors_seen, msgs = r->faprompt_msgs;
  GstFlowReturn ret;

  /* data before caps (and so before a segment) is GStreamer's business */
  if (!r->caps.sent)
    return;
  buf = make_frame(r, in, &fr, bad_meta_ok);
  flags = rd8(in);
  shared = (flags & 3) == 3;
  no_pts = (flags & 0x0c) == 0x0c;

  fr.pts = no_pts ? GST_CLOCK_TIME_NONE : r->pts_counter * GST_SECOND / 30;
  r->pts_counter++;
  GST_BUFFER_PTS(buf) = fr.pts;
  GST_BUFFER_DURATION(buf) = (flags & 0x10) ? GST_CLOCK_TIME_NONE : GST_SECOND / 30;
  if (shared)
    keep = gst_buffer_ref(buf); /* not writable: the element must not write to ours */
  if (GST_CLOCK_TIME_IS_VALID(fr.pts))
    g_array_append_val(r->gen_pts, fr.pts);

  guint n_mem = gst_buffer_n_memory(buf);
  gboolean has_meta = gst_buffer_get_video_meta(buf) != NULL;
  ret = gst_harness_push(r->h, buf);
  drain_bus(r);

  gboolean caps_ok = r->caps.sent && r->caps.element_ok;
  switch (ret) {
  case GST_FLOW_OK: {
    GstBuffer *out;
    if (r->eos)
      FAIL("a frame taken after EOS");
    if (!caps_ok)
      FAIL("a frame taken in caps the element must refuse");
    if (fr.kind == FRAME_SHORT)
      FAIL("a frame shorter than its layout was taken (%dx%d, %" G_GSIZE_FORMAT " bytes in %u "
           "memories, %s)", fr.w, fr.h, fr.size, n_mem, has_meta ? "a GstVideoMeta" : "no meta");
    if (gst_harness_buffers_in_queue(r->h) != 1)
      FAIL("%u buffers out for one frame in", gst_harness_buffers_in_queue(r->h));
    out = gst_harness_pull(r->h);
    check_output(r, &fr, out, msgs);
    gst_buffer_unref(out);
    break;
  }
  case GST_FLOW_EOS:
    if (!r->eos)
      FAIL("push returned EOS before EOS");
    break;
  case GST_FLOW_NOT_NEGOTIATED:
    if (caps_ok && !r->eos)
      FAIL("a frame in caps the element takes was refused as not negotiated");
    if (r->caps.sent && r->caps.template_ok && r->caps.info_ok && r->errors_seen == errors)
      FAIL("not negotiated without an error message");
    break;
  case GST_FLOW_ERROR:
    if (r->errors_seen == errors)
      FAIL("push returned an error and posted no error message");
    if (fr.kind == FRAME_VALID && caps_ok)
      FAIL("a valid frame failed: %s", r->last_error);
    r->uncertain = TRUE; /* it may have been inferred, then failed to draw */
    break;
  default:
    FAIL("push returned %s", gst_flow_get_name(ret));
  }
  if (ret != GST_FLOW_OK && gst_harness_buffers_in_queue(r->h) != 0)
    FAIL("a refused frame came out");
  if (keep) {
    GstMapInfo mi;
    gst_buffer_map(keep, &mi, GST_MAP_READ);
    if (mi.size != fr.size || memcmp(mi.data, fr.copy, fr.size))
      FAIL("the element wrote into a buffer it did not own");
    gst_buffer_unmap(keep, &mi);
    gst_buffer_unref(keep);
  }
  frame_clear(&fr);
  r->pushes++;
}

static void op_flush(Run *r, Reader *in) {
  uint8_t b = rd8(in);
  gst_harness_push_event(r->h, gst_event_new_flush_start());
  if (b & 1) { /* a frame while flushing is refused */
    GstBuffer *buf = gst_buffer_new_allocate(NULL, 16, NULL);
    GstFlowReturn ret = gst_harness_push(r->h, buf);
    if (ret != GST_FLOW_FLUSHING)
      FAIL("push while flushing returned %s", gst_flow_get_name(ret));
  }
  gst_harness_push_event(r->h, gst_event_new_flush_stop(b & 2));
  drain_bus(r);
  if (r->p.messages != GST_FA_PROMPT_MESSAGES_ON_CHANGE)
    r->in_anomaly = FALSE; /* an ended is only posted in on-change mode */
  if (r->in_anomaly)
    FAIL("flush: still in anomaly (no anomaly-ended)");
  r->eos = FALSE;
  new_generation(r);
  /* after a flush a new segment comes before data */
  if (r->caps.sent)
    push_segment(r, in, (b & 4) != 0);
}

static void op_eos(Run *r) {
  gboolean was = r->eos;
  gst_harness_push_event(r->h, gst_event_new_eos());
  drain_bus(r);
  r->eos = TRUE;
  if (r->p.messages != GST_FA_PROMPT_MESSAGES_ON_CHANGE)
    r->in_anomaly = FALSE;
  if (!was && r->in_anomaly)
    FAIL("EOS: still in anomaly (no anomaly-ended)");
}

/* roi from the input: pixel rectangles (in or outside the frame), fractions,
 * too many, empty, or bytes that do not parse; a value the element does not
 * take must be named in a warning */
static void op_roi(Run *r, Reader *in, uint8_t v) {
  GString *t = g_string_new(NULL);
  guint n = 1 + (v >> 2) % 4;
  switch (v & 3) {
  case 0: /* pixels */
    for (guint i = 0; i < n; i++)
      g_string_append_printf(t, "%s%u,%u,%u,%u", i ? ";" : "", rd8(in) % 80, rd8(in) % 80,
                             rd8(in) % 80, rd8(in) % 80);
    break;
  case 1: /* fractions */
    for (guint i = 0; i < n; i++) {
      uint8_t a = rd8(in), b = rd8(in), c = rd8(in), d = rd8(in);
      g_string_append_printf(t, "%s%.2f,%.2f,%.2f,%.2f", i ? ";" : "", a / 510.0, b / 510.0,
                             c / 255.0, d / 255.0);
    }
    break;
  case 2: /* the whole frame, or more rectangles than anything takes */
    if (v & 0x80)
      for (guint i = 0; i < 17; i++)
        g_string_append_printf(t, "%s0,0,1,1", i ? ";" : "");
    break;
  default: { /* text from the input */
    guint len = rd8(in) % 24;
    for (guint i = 0; i < len; i++) {
      char c = (char)(rd8(in) & 0x7f);
      g_string_append_c(t, c >= 0x20 && c < 0x7f ? c : ',');
    }
    break;
  }
  }
  drain_bus(r);
  g_string_truncate(r->warnings, 0);
  g_object_set(r->e, "roi", t->str, NULL);
  r->p.roi_ever = TRUE;
  gchar *now = NULL;
  g_object_get(r->e, "roi", &now, NULL);
  drain_bus(r);
  gchar *quoted = g_strdup_printf("\"%s\"", t->str);
  gchar *blank = g_strstrip(g_strdup(t->str));
  const gboolean taken = g_str_equal(now, *blank ? t->str : "");
  if (!taken && !strstr(r->warnings->str, quoted))
    FAIL("roi \"%s\" was not taken (in force: \"%s\") and no warning named it: %s", t->str,
         now, r->warnings->str);
  g_free(blank);
  g_free(quoted);
  g_free(now);
  g_string_free(t, TRUE);
}

/* the PNG masks op_mask sets: written once (mask_dir), the one of the
 * frames' aspect written when set */
static gchar *mask_dir;
static gboolean trace; /* FAP_FUZZ_ELEMENT_TRACE=1 */

/* fails unless the property now reads `want`, or a warning named `named` */
static void expect_taken_or_named(Run *r, const char *prop, const char *want, const char *named) {
  gchar *now = NULL;
  g_object_get(r->e, prop, &now, NULL);
  drain_bus(r);
  if (g_strcmp0(now, want) != 0 && !strstr(r->warnings->str, named))
    FAIL("%s \"%s\" was not taken (in force: \"%s\") and no warning named %s: %s", prop, want,
         now, named, r->warnings->str);
  g_free(now);
}

/* tiles: "auto", CxR (some beyond the batch or the frame), blank, text */
static void op_tiles(Run *r, Reader *in, uint8_t v) {
  gchar *t;
  switch (v & 3) {
  case 0:
    t = g_strdup(v & 4 ? "auto" : " AUTO ");
    break;
  case 1:
    t = g_strdup_printf("%ux%u", 1 + rd8(in) % 5, 1 + rd8(in) % 5);
    break;
  case 2:
    t = g_strdup_printf("%ux%u", rd8(in) % 20, rd8(in) % 20);
    break;
  default: {
    guint len = rd8(in) % 8;
    t = g_malloc0(len + 1);
    for (guint i = 0; i < len; i++) {
      char c = (char)(rd8(in) & 0x7f);
      t[i] = c >= 0x20 && c < 0x7f ? c : 'x';
    }
    break;
  }
  }
  drain_bus(r);
  g_string_truncate(r->warnings, 0);
  g_object_set(r->e, "tiles", t, NULL);
  gchar *stripped = g_strstrip(g_strdup(t)), *quoted = g_strdup_printf("\"%s\"", t);
  /* what reads back when taken: "auto" for any auto, "" for 1x1 and blank */
  const char *want = !g_ascii_strcasecmp(stripped, "auto") ? "auto"
                     : !*stripped || g_str_equal(stripped, "1x1") ? ""
                                                                   : t;
  expect_taken_or_named(r, "tiles", want, quoted);
  g_free(quoted);
  g_free(stripped);
  g_free(t);
}

static void op_tile_numbers(Run *r, Reader *in, uint8_t v) {
  guint n = rd8(in);
  if (v & 1) {
    g_object_set(r->e, "tile-max-patch-pixels", 1 + n % 64, NULL);
    return;
  }
  drain_bus(r);
  g_string_truncate(r->warnings, 0);
  guint overlap = v & 2 ? n : n % 8;
  g_object_set(r->e, "tile-overlap", overlap, NULL);
  guint now = 0;
  g_object_get(r->e, "tile-overlap", &now, NULL);
  drain_bus(r);
  gchar *named = g_strdup_printf("tile-overlap %u", overlap);
  if (now != overlap && !strstr(r->warnings->str, named))
    FAIL("tile-overlap %u not taken (in force %u) and no warning named it: %s", overlap, now,
         r->warnings->str);
  g_free(named);
}

/* w x h PNG, black where x < w / 2 or where the input says */
static void write_png(const char *path, int w, int h, uint8_t pattern) {
  GdkPixbuf *pb = gdk_pixbuf_new(GDK_COLORSPACE_RGB, FALSE, 8, w, h);
  guint8 *px = gdk_pixbuf_get_pixels(pb);
  int stride = gdk_pixbuf_get_rowstride(pb);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      memset(px + y * stride + x * 3,
             (pattern & 1 ? x < w / 2 : ((x ^ y) >> (pattern >> 5)) & 1) ? 0 : 255, 3);
  if (!gdk_pixbuf_save(pb, path, "png", NULL, NULL))
    FAIL("cannot write %s", path);
  g_object_unref(pb);
}

/* ignore-mask: a PNG of the frames' aspect, one of another, a corrupt one,
 * a missing file, none */
static void op_mask(Run *r, Reader *in, uint8_t v) {
  gchar *path;
  switch (v & 3) {
  case 0: {
    int w = r->caps.info_ok ? GST_VIDEO_INFO_WIDTH(&r->caps.info) : 16;
    int h = r->caps.info_ok ? GST_VIDEO_INFO_HEIGHT(&r->caps.info) : 12;
    path = g_build_filename(mask_dir, "fit.png", NULL);
    write_png(path, MAX(w, 1), MAX(h, 1), rd8(in));
    break;
  }
  case 1:
    path = g_build_filename(mask_dir, v & 4 ? "square.png" : "wide.png", NULL);
    break;
  case 2:
    path = g_build_filename(mask_dir, v & 4 ? "corrupt.png" : "missing.png", NULL);
    break;
  default:
    path = g_strdup("");
    break;
  }
  drain_bus(r);
  g_string_truncate(r->warnings, 0);
  g_object_set(r->e, "ignore-mask", path, NULL);
  gchar *quoted = g_strdup_printf("\"%s\"", path);
  expect_taken_or_named(r, "ignore-mask", path, quoted);
  g_free(quoted);
  g_free(path);
}

static void op_property(Run *r, Reader *in) {
  uint8_t which = rd8(in), v = rd8(in);
  /* 0xf0 and up: the tiles and the mask (below: as before) */
  if (which >= 0xf0) {
    if (trace)
      fprintf(stderr, "  %s, value %u\n",
              (which & 3) == 0 ? "tiles" : (which & 3) == 1 ? "tile numbers" : "ignore-mask", v);
    if ((which & 3) == 0)
      op_tiles(r, in, v);
    else if ((which & 3) == 1)
      op_tile_numbers(r, in, v);
    else
      op_mask(r, in, v);
    return;
  }
  if (which % 9 == 8) {
    op_roi(r, in, v);
    return;
  }
  switch (which % 8) {
  case 0:
    r->p.draw = v & 1;
    g_object_set(r->e, "draw-heatmap", r->p.draw, NULL);
    break;
  case 1:
    r->p.interval = 1 + v % 5;
    g_object_set(r->e, "inference-interval", r->p.interval, NULL);
    break;
  case 2:
    g_object_set(r->e, "heatmap-min", v / 255.0f, NULL);
    break;
  case 3:
    g_object_set(r->e, "heatmap-max", v / 255.0f, NULL);
    break;
  case 4:
    r->p.max_regions = v % 6;
    g_object_set(r->e, "max-regions", r->p.max_regions, NULL);
    break;
  case 5:
    set_messages(r, v % 4);
    break;
  case 6:
    g_object_set(r->e, "pixel-threshold", v == 255 ? -1.0f : v / 254.0f, NULL);
    break;
  default:
    r->p.image_threshold = v == 255 ? -1.0f : v / 254.0f;
    g_object_set(r->e, "image-threshold", r->p.image_threshold, "heatmap-alpha", v / 255.0,
                 NULL);
    break;
  }
}

static gboolean mode_is_nb(gint non_blocking) {
  /* auto: GstHarness answers LATENCY as a live source */
  return non_blocking != 0;
}

/* READY and back: stop () and start (), maybe in another mode; the stream
 * starts again (stream-start, the last caps, a segment). */
static void op_restart(Run *r, Reader *in) {
  uint8_t v = rd8(in);
  GstCaps *caps;
  if (gst_element_set_state(r->e, GST_STATE_READY) != GST_STATE_CHANGE_SUCCESS)
    FAIL("PLAYING -> READY failed");
  r->p.non_blocking = v % 3;
  g_object_set(r->e, "non-blocking", r->p.non_blocking, NULL);
  if (gst_element_set_state(r->e, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE)
    FAIL("READY -> PLAYING failed again");
  r->running_nb = mode_is_nb(r->p.non_blocking);
  r->elem_has_info = FALSE;
  r->in_anomaly = FALSE;
  r->eos = FALSE;
  new_generation(r);
  gst_harness_push_event(r->h, gst_event_new_stream_start("fuzz-again"));
  caps = gst_pad_get_current_caps(r->h->srcpad);
  if (caps) {
    gst_harness_push_event(r->h, gst_event_new_caps(caps));
    gst_caps_unref(caps);
    if (r->caps.element_ok) {
      r->elem_info = r->caps.info;
      r->elem_has_info = TRUE;
    }
    push_segment(r, in, FALSE);
  }
  drain_bus(r);
}

static void run_input(const uint8_t *data, size_t size, gboolean bad_meta_ok) {
  Reader in = {data, size, 0};
  Run r;
  uint8_t flags = rd8(&in), interval = rd8(&in), maxr = rd8(&in), hmin = rd8(&in),
          hmax = rd8(&in), alpha = rd8(&in), pthr = rd8(&in), ithr = rd8(&in), sig = rd8(&in);
  static const float sigmas[] = {-1.0f, 0.0f, 0.5f, 1.0f, 4.0f, 100.0f};

  memset(&r, 0, sizeof r);
  r.gen_pts = g_array_new(FALSE, FALSE, sizeof(GstClockTime));
  r.warnings = g_string_new(NULL);
  r.p.draw = flags & 1;
  r.p.non_blocking = ((flags >> 1) & 3) % 3;
  r.p.messages = (flags >> 3) & 3;
  r.p.interval = 1 + interval % 4;
  r.p.max_regions = maxr % 6;
  r.p.image_threshold = ithr == 255 ? -1.0f : ithr / 254.0f;
  r.running_nb = mode_is_nb(r.p.non_blocking);

  r.e = gst_element_factory_make("faprompt", NULL);
  if (!r.e)
    FAIL("no faprompt element");
  r.bus = gst_bus_new();
  gst_element_set_bus(r.e, r.bus);
  g_object_set(r.e, "model-file", model_path, "backend", GST_FA_PROMPT_BACKEND_CPU, "threads", 1,
               "draw-heatmap", r.p.draw, "non-blocking", r.p.non_blocking, "post-messages",
               r.p.messages, "inference-interval", r.p.interval, "max-regions", r.p.max_regions,
               "heatmap-min", hmin / 255.0f, "heatmap-max", hmax / 255.0f, "heatmap-alpha",
               alpha / 255.0, "pixel-threshold", pthr == 255 ? -1.0f : pthr / 254.0f,
               "image-threshold", r.p.image_threshold, "sigma",
               (flags & 0x20) ? sigmas[sig % G_N_ELEMENTS(sigmas)] : -1.0f, NULL);
  gst_object_ref_sink(r.e);
  r.h = gst_harness_new_with_element(r.e, "sink", "src");

  for (int ops = 0; ops < MAX_OPS && !at_end(&in); ops++) {
    uint8_t op = rd8(&in);
    /* FAP_FUZZ_ELEMENT_TRACE=1: each op's kind and input offset on stderr,
     * to write seeds that reach a path */
    if (trace)
      fprintf(stderr, "op %d at byte %zu: %u (%s)\n", ops, in.pos - 1, op,
              (const char *[]){"caps", "caps", "frame", "frame", "frame", "frame", "flush", "eos",
                               "segment/restart", "property"}[op % 10]);
    switch (op % 10) {
    case 0:
    case 1:
      op_caps(&r, &in);
      break;
    case 2:
    case 3:
    case 4:
    case 5:
      if (r.pushes < MAX_PUSHES)
        op_frame(&r, &in, bad_meta_ok);
      break;
    case 6:
      op_flush(&r, &in);
      break;
    case 7:
      op_eos(&r);
      break;
    case 8:
      if (op & 0x80)
        op_restart(&r, &in);
      else if (r.caps.sent && !r.eos)
        push_segment(&r, &in, TRUE);
      break;
    default:
      op_property(&r, &in);
      break;
    }
  }
  drain_bus(&r);
  gst_harness_teardown(r.h);
  gst_element_set_bus(r.e, NULL);
  gst_object_unref(r.e);
  gst_bus_set_flushing(r.bus, TRUE);
  gst_object_unref(r.bus);
  g_array_free(r.gen_pts, TRUE);
  g_string_free(r.warnings, TRUE);
  g_free(r.last_error);
}

/* ---- libFuzzer ---------------------------------------------------------------------- */

static gboolean bad_meta;

static GLogWriterOutput log_writer(GLogLevelFlags level, const GLogField *fields, gsize n,
                                   gpointer user_data) {
  (void)user_data;
  if (level & (G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_ERROR)) {
    g_log_writer_standard_streams(level, fields, n, NULL);
    FAIL("a GLib critical (above)");
  }
  return g_log_writer_default(level, fields, n, NULL);
}

static gboolean register_plugin(GstPlugin *plugin) { return GST_ELEMENT_REGISTER(faprompt, plugin); }

static void remove_model(void) {
  if (model_path)
    g_unlink(model_path);
  if (mask_dir) {
    const char *names[] = {"square.png", "wide.png", "corrupt.png", "fit.png"};
    for (guint i = 0; i < G_N_ELEMENTS(names); i++) {
      gchar *f = g_build_filename(mask_dir, names[i], NULL);
      g_unlink(f);
      g_free(f);
    }
    g_rmdir(mask_dir);
  }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  GError *err = NULL;
  gint fd;
  (void)argc;
  (void)argv;

  /* no registry, no system plugins, no scanner: faprompt is registered here */
  g_setenv("GST_REGISTRY_DISABLE", "yes", TRUE);
  g_setenv("GST_REGISTRY_FORK", "no", TRUE);
  g_setenv("GST_PLUGIN_SYSTEM_PATH_1_0", "", TRUE);
  g_setenv("GST_PLUGIN_PATH_1_0", "", TRUE);
  g_setenv("OMP_NUM_THREADS", "1", TRUE);
  g_unsetenv("FAPROMPT_MODEL");
  /* a critical is a bug (ours, or the element's use of GStreamer): abort,
   * which libFuzzer catches (GLib's own fatal path traps) */
  g_log_set_writer_func(log_writer, NULL, NULL);
  gst_init(NULL, NULL);
  if (!gst_plugin_register_static(GST_VERSION_MAJOR, GST_VERSION_MINOR, "faprompt",
                                  "faprompt (fuzz)", register_plugin, "fuzz", "MIT/X11",
                                  "faprompt", "faprompt", "faprompt"))
    FAIL("cannot register the faprompt element");

  fd = g_file_open_tmp("fuzz-element-XXXXXX.safetensors", &model_path, &err);
  if (fd < 0)
    FAIL("temp file: %s", err->message);
  size_t n = (size_t)(fap_fuzz_model_end - fap_fuzz_model);
  if (write(fd, fap_fuzz_model, n) != (ssize_t)n)
    FAIL("cannot write the model to %s", model_path);
  close(fd);
  atexit(remove_model); /* a run that ends (not one that crashes) leaves none */

  /* the ignore-mask files: of other aspects than most frames, corrupt */
  mask_dir = g_dir_make_tmp("fuzz-element-masks-XXXXXX", &err);
  if (!mask_dir)
    FAIL("temp dir: %s", err->message);
  gchar *f = g_build_filename(mask_dir, "square.png", NULL);
  write_png(f, 32, 32, 1);
  g_free(f);
  f = g_build_filename(mask_dir, "wide.png", NULL);
  write_png(f, 64, 9, 0x21);
  g_free(f);
  f = g_build_filename(mask_dir, "corrupt.png", NULL);
  if (!g_file_set_contents(f, "\x89PNG\r\n\x1a\n\0\0\0\rIHDR broken", 24, NULL))
    FAIL("cannot write %s", f);
  g_free(f);

  /* FAP_FUZZ_ELEMENT_BAD_META=0 leaves out buffers whose GstVideoMeta
   * describes planes past the buffer's memory */
  trace = g_strcmp0(g_getenv("FAP_FUZZ_ELEMENT_TRACE"), "1") == 0;
  const char *bm = g_getenv("FAP_FUZZ_ELEMENT_BAD_META");
  bad_meta = !bm || strcmp(bm, "0") != 0;

  /* warm-up: every format, refused caps, short frames, each mode, the
   * events, so one-time registrations are not charged to an input */
  for (guint f = 0; f < G_N_ELEMENTS(formats); f++)
    for (int mode = 0; mode < 3; mode++) {
      uint8_t in[] = {
          (uint8_t)(1 | mode << 1 | (f % 4) << 3 | 0x20), 1, 3, 0, 255, 128, 100, 255,
          (uint8_t)f,
          /* caps */ 0, (uint8_t)f, 33, 17, (uint8_t)(f * 16 + 2), 0xa0,
          /* frames: default layout, meta, split planes, short */ 2, 0, 5, 7, 1, 3, 0, 2, 4, 5,
          2, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0x07, 3, 6, 1, 2, 3, 4, 5, 6, 1, 16, 2, 0, 3, 9, 9, 0, 0,
          /* property, segment, flush, frame, eos, restart, frame */ 9, 5, 1, 8, 3, 9, 6, 5, 0,
          2, 0, 0, 0, 2, 3, 7, 0x88, 1, 2, 0, 0, 0, 1, 0, 0};
      run_input(in, sizeof in, FALSE);
    }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  run_input(data, size, bad_meta);
  return 0;
}
