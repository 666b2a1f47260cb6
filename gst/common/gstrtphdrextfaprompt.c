/* Wire format (big-endian), at most 255 bytes:
 *   0      version (1)
 *   1      flags: bit 0 anomalous, bit 1 reused, bit 2 rois (the frame's
 *          decision over several regions of interest), bits 3..6 the
 *          number of rois - 1 (with bit 2; 0 otherwise), bit 7 0
 *   2..5   score, IEEE float32
 *   6..13  inference timestamp (sender's PTS of the analysed frame), u64
 *   14..15 analysed frame width, u16     16..17 height, u16
 *   18     region count, u8 (saturated)
 *   19     n, side of the coarse map (<= 15; 0: none)
 *   20..   n x n cells, u8 = round(255 * area mean of the map under the cell)
 * The sender reads the structure-backed metas (the only form that survives
 * video encoders); the receiver attaches a GstFAPromptMeta (the n x n map)
 * and its structure-backed twin (which survives decoders) to the
 * depayloaded buffer.
 *
 * A frame analysed in several rectangles (faprompt's roi) has one meta per
 * rectangle; 255 bytes hold one map, not sixteen. The extension then
 * carries the frame's decision, as faprompt's messages give it: the score
 * is the highest rectangle score, anomalous is set when any rectangle is
 * anomalous, the region count is the sum over the rectangles, and the map,
 * width and height are those of the rectangle with the highest score (the
 * one that decides the frame); bit 2 and the count say so. The receiver
 * puts "roi-count" (and "frame-decision", TRUE) in its structure twin.
 * One rectangle (or none set): bits 2..6 are 0, as before, so a receiver
 * that reads only bits 0 and 1 reads the same frame result. */
#include "gstrtphdrextfaprompt.h"
#include "gstfapromptmeta.h"
#include "fap_regions.h"

#include <string.h>

#define HEADER_BYTES 20

/* Byte by byte: the extension sits at any offset of the RTP packet, and
 * GST_WRITE_UINT64_BE is a plain (misaligned, undefined) store on x86. */
static void
put_be (guint8 * p, guint64 v, guint bytes)
{
  guint i;
  for (i = 0; i < bytes; i++)
    p[i] = (guint8) (v >> (8 * (bytes - 1 - i)));
}

static guint64
get_be (const guint8 * p, guint bytes)
{
  guint64 v = 0;
  guint i;
  for (i = 0; i < bytes; i++)
    v = (v << 8) | p[i];
  return v;
}

struct _GstRTPHeaderExtensionFAPrompt
{
  GstRTPHeaderExtension parent;
};

G_DEFINE_TYPE (GstRTPHeaderExtensionFAPrompt,
    gst_rtp_header_extension_faprompt, GST_TYPE_RTP_HEADER_EXTENSION);
GST_ELEMENT_REGISTER_DEFINE (rtphdrextfaprompt, "rtphdrextfaprompt",
    GST_RANK_MARGINAL, GST_TYPE_RTP_HEADER_EXTENSION_FAPROMPT);

static GstRTPHeaderExtensionFlags
faprompt_get_supported_flags (GstRTPHeaderExtension * ext)
{
  return GST_RTP_HEADER_EXTENSION_TWO_BYTE;
}

static gsize
faprompt_get_max_size (GstRTPHeaderExtension * ext, const GstBuffer * input)
{
  return HEADER_BYTES + FAPROMPT_HDREXT_MAP_SIDE * FAPROMPT_HDREXT_MAP_SIDE;
}

static gssize
faprompt_write (GstRTPHeaderExtension * ext, const GstBuffer * input,
    GstRTPHeaderExtensionFlags flags, GstBuffer * output, guint8 * data,
    gsize size)
{
  const GstMetaInfo *twin = gst_meta_get_info
      (GST_FAPROMPT_STRUCTURE_META_NAME);
  GstCustomMeta *cm = NULL;
  GstMeta *meta;
  gpointer iter = NULL;
  GstStructure *s;
  gdouble score = 0, best = 0;
  gboolean anomalous = FALSE, reused = FALSE, any = FALSE;
  guint n_rois = 0, all_regions = 0;
  guint64 ts = GST_CLOCK_TIME_NONE;
  guint w = 0, h = 0, mw = 0, mh = 0, mstride = 0, regions = 0, n, i, j;
  const GValue *v;
  const guint8 *map = NULL;
  gfloat fscore;
  guint32 bits;

  /* the frame's decision over its rois' metas; the map of the highest */
  while (twin && (meta = gst_buffer_iterate_meta ((GstBuffer *) input,
              &iter))) {
    const GstStructure *rs;
    gdouble rscore = 0;
    gboolean ranom = FALSE;
    guint rregions = 0;

    if (meta->info != twin)
      continue;
    rs = gst_custom_meta_get_structure ((GstCustomMeta *) meta);
    gst_structure_get (rs, "score", G_TYPE_DOUBLE, &rscore, NULL);
    gst_structure_get (rs, "anomalous", G_TYPE_BOOLEAN, &ranom, NULL);
    gst_structure_get (rs, "region-count", G_TYPE_UINT, &rregions, NULL);
    any |= ranom;
    all_regions += rregions;
    if (!cm || rscore > best) {
      cm = (GstCustomMeta *) meta;
      best = rscore;
    }
    n_rois++;
  }
  if (!cm)
    return 0;                   /* no result for this frame: no extension */
  if (size < HEADER_BYTES)
    return -1;
  s = gst_custom_meta_get_structure (cm);
  gst_structure_get (s, "score", G_TYPE_DOUBLE, &score,
      "anomalous", G_TYPE_BOOLEAN, &anomalous, "reused", G_TYPE_BOOLEAN,
      &reused, "inference-timestamp", G_TYPE_UINT64, &ts,
      "width", G_TYPE_UINT, &w, "height", G_TYPE_UINT, &h,
      "map-width", G_TYPE_UINT, &mw, "map-height", G_TYPE_UINT, &mh,
      "map-stride", G_TYPE_UINT, &mstride, "region-count", G_TYPE_UINT,
      &regions, NULL);
  v = gst_structure_get_value (s, "map");
  if (v && G_VALUE_HOLDS (v, G_TYPE_BYTES) && g_value_get_boxed (v))
    map = g_bytes_get_data (g_value_get_boxed (v), NULL);

  n = MIN (FAPROMPT_HDREXT_MAP_SIDE, MIN (mw, mh));
  if (!map || size < HEADER_BYTES + (gsize) n * n)
    n = 0;

  if (n_rois > 1) {
    anomalous = any;
    regions = all_regions;
  }
  data[0] = 1;
  data[1] = (anomalous ? 1 : 0) | (reused ? 2 : 0);
  if (n_rois > 1)
    data[1] |= 4 | (guint8) ((MIN (n_rois, 16) - 1) << 3);
  fscore = (gfloat) score;
  memcpy (&bits, &fscore, 4);
  put_be (data + 2, bits, 4);
  put_be (data + 6, ts, 8);
  put_be (data + 14, MIN (w, 65535), 2);
  put_be (data + 16, MIN (h, 65535), 2);
  data[18] = (guint8) MIN (regions, 255);
  data[19] = (guint8) n;
  for (j = 0; j < n; j++)
    for (i = 0; i < n; i++) {
      gdouble mean = fap_map_cell_mean ((const gfloat *) map, mstride, mw, mh,
          n, i, j);
      data[HEADER_BYTES + j * n + i] = (guint8) CLAMP (mean * 255.0 + 0.5,
          0, 255);
    }
  return HEADER_BYTES + n * n;
}

static gboolean
faprompt_read (GstRTPHeaderExtension * ext, GstRTPHeaderExtensionFlags flags,
    const guint8 * data, gsize size, GstBuffer * buffer)
{
  GstFAPromptMeta *m;
  GstStructure *s;
  guint n, i;
  guint32 bits;
  gfloat score, *cells;
  GBytes *bytes;

  if (size < HEADER_BYTES || data[0] != 1)
    return FALSE;
  n = data[19];
  if (size < HEADER_BYTES + (gsize) n * n)
    return FALSE;
  /* one result per frame, even when several packets carried it */
  if (gst_buffer_get_faprompt_meta (buffer))
    return TRUE;

  bits = (guint32) get_be (data + 2, 4);
  memcpy (&score, &bits, 4);
  cells = g_new (gfloat, MAX (n * n, 1));
  for (i = 0; i < n * n; i++)
    cells[i] = data[HEADER_BYTES + i] / 255.0f;
  if (n == 0)
    cells[0] = 0.f;
  bytes = g_bytes_new_take (cells, MAX (n * n, 1) * sizeof (gfloat));
  m = gst_buffer_add_faprompt_meta (buffer, bytes, MAX (n, 1), MAX (n, 1),
      MAX (n, 1) * sizeof (gfloat));
  g_bytes_unref (bytes);
  if (!m)
    return FALSE;
  m->score = score;
  m->anomalous = (data[1] & 1) != 0;
  m->reused = (data[1] & 2) != 0;
  m->inference_timestamp = get_be (data + 6, 8);
  m->inference_ms = 0;
  m->width = (guint) get_be (data + 14, 2);
  m->height = (guint) get_be (data + 16, 2);
  m->n_regions = data[18];
  m->image_threshold = m->pixel_threshold = -1.f;       /* not sent */
  s = gst_buffer_add_faprompt_structure_meta (buffer, m);
  if (s)
    gst_structure_set (s, "transport", G_TYPE_STRING, "rtp", NULL);
  if (s && (data[1] & 4))
    gst_structure_set (s, "frame-decision", G_TYPE_BOOLEAN, TRUE,
        "roi-count", G_TYPE_UINT, (guint) ((data[1] >> 3) & 15) + 1, NULL);
  return TRUE;
}

static void
gst_rtp_header_extension_faprompt_class_init
    (GstRTPHeaderExtensionFAPromptClass * klass)
{
  GstRTPHeaderExtensionClass *ext_class =
      GST_RTP_HEADER_EXTENSION_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);

  ext_class->get_supported_flags = faprompt_get_supported_flags;
  ext_class->get_max_size = faprompt_get_max_size;
  ext_class->write = faprompt_write;
  ext_class->read = faprompt_read;

  gst_element_class_set_static_metadata (element_class,
      "faprompt RTP header extension", GST_RTP_HDREXT_ELEMENT_CLASS,
      "Carries the faprompt score, decision and a 15x15 map of each frame "
      "in an RTP header extension (" FAPROMPT_HDREXT_URI "); a frame "
      "analysed in several regions of interest: the frame's decision (the "
      "highest score, anomalous when any is) with the map of the highest",
      "faprompt developers");
  gst_rtp_header_extension_class_set_uri (ext_class, FAPROMPT_HDREXT_URI);
}

static void
gst_rtp_header_extension_faprompt_init (GstRTPHeaderExtensionFAPrompt * self)
{
}
