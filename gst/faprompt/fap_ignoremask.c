/* See fap_ignoremask.h. */
#include "fap_ignoremask.h"

#include <math.h>
#include <string.h>

#ifdef HAVE_GDK_PIXBUF
#include <gdk-pixbuf/gdk-pixbuf.h>
#endif

static void
mask_clear (gpointer data)
{
  FapMask *m = data;
  g_free (m->path);
  g_free (m->ignored);
}

FapMask *
fap_mask_ref (FapMask * m)
{
  return m ? g_atomic_rc_box_acquire (m) : NULL;
}

void
fap_mask_unref (FapMask * m)
{
  if (m)
    g_atomic_rc_box_release_full (m, mask_clear);
}

FapMask *
fap_mask_load (const gchar * path, gchar ** error)
{
#ifdef HAVE_GDK_PIXBUF
  GError *err = NULL;
  GdkPixbuf *pb = gdk_pixbuf_new_from_file (path, &err);
  FapMask *m;
  const guint8 *px;
  gint w, h, stride, n_channels;

  *error = NULL;
  if (!pb) {
    *error = g_strdup_printf ("ignore-mask \"%s\" could not be read as an "
        "image: %s", path, err ? err->message : "unknown error");
    g_clear_error (&err);
    return NULL;
  }
  w = gdk_pixbuf_get_width (pb);
  h = gdk_pixbuf_get_height (pb);
  n_channels = gdk_pixbuf_get_n_channels (pb);
  if (gdk_pixbuf_get_bits_per_sample (pb) != 8 || n_channels < 3 || w < 1
      || h < 1) {
    *error = g_strdup_printf ("ignore-mask \"%s\": %dx%d, %d channels of %d "
        "bits: not an 8-bit RGB(A) or grey image", path, w, h, n_channels,
        gdk_pixbuf_get_bits_per_sample (pb));
    g_object_unref (pb);
    return NULL;
  }
  stride = gdk_pixbuf_get_rowstride (pb);
  px = gdk_pixbuf_read_pixels (pb);
  m = g_atomic_rc_box_new0 (FapMask);
  static gsize next_id;         /* atomic */
  m->id = (guint64) g_atomic_pointer_add (&next_id, 1) + 1;
  m->path = g_strdup (path);
  m->width = w;
  m->height = h;
  m->ignored = g_malloc ((gsize) w * h);
  for (gint y = 0; y < h; y++)
    for (gint x = 0; x < w; x++) {
      const guint8 *p = px + (gsize) y * stride + (gsize) x * n_channels;
      /* dark: every colour channel below 128 (grey images come as R = G = B) */
      guint8 off = p[0] < 128 && p[1] < 128 && p[2] < 128;
      m->ignored[(gsize) y * w + x] = off;
      m->ignored_count += off;
    }
  g_object_unref (pb);
  return m;
#else
  *error = g_strdup_printf ("ignore-mask \"%s\": this build of faprompt has "
      "no image decoder (gdk-pixbuf)", path);
  return NULL;
#endif
}

gboolean
fap_mask_fits (const FapMask * m, gint width, gint height, gchar ** why)
{
  gdouble frame = (gdouble) width / height;
  gdouble mask = (gdouble) m->width / m->height;

  *why = NULL;
  if (fabs (mask - frame) <= FAP_MASK_ASPECT_TOLERANCE * frame)
    return TRUE;
  *why = g_strdup_printf ("ignore-mask \"%s\" is %dx%d, aspect %.4f, but the "
      "frames are %dx%d, aspect %.4f: the aspects must agree within %.0f %%",
      m->path, m->width, m->height, mask, width, height, frame,
      FAP_MASK_ASPECT_TOLERANCE * 100);
  return FALSE;
}

/* the mask column (row) under frame coordinate u of a side of @side
 * pixels, for a mask @n wide (high) */
static inline gint
mask_index (gdouble u, gint side, gint n)
{
  gint64 i = (gint64) floor (u * n / side);
  return (gint) CLAMP (i, 0, n - 1);
}

FapInference *
fap_mask_apply (const FapMask * m, const FapInference * inf, gint width,
    gint height, guint64 serial)
{
  FapInference *out = g_atomic_rc_box_dup (sizeof *inf, (gpointer) inf);
  guint M = inf->map_size;
  /* the mask columns and rows under the map's samples: at most
   * FAP_TILES_MAX_MAP_SIDE (or S) each, on the stack */
  gint cols[4096], rows[4096];

  out->serial = serial;
  g_return_val_if_fail (M <= G_N_ELEMENTS (cols), out);
  for (guint k = 0; k < inf->n_rois; k++) {
    const FapRoiResult *roi = &inf->rois[k];
    fap_rect r = fap_inference_rect (inf, k, width, height);
    gsize bytes;
    gfloat *map = g_bytes_unref_to_data (g_bytes_ref (roi->map), &bytes);

    for (guint i = 0; i < M; i++) {
      cols[i] = mask_index (r.x + (i + 0.5) * r.width / M, width, m->width);
      rows[i] = mask_index (r.y + (i + 0.5) * r.height / M, height,
          m->height);
    }
    for (guint j = 0; j < M; j++) {
      const guint8 *mrow = m->ignored + (gsize) rows[j] * m->width;
      gfloat *row = map + (gsize) j * M;
      for (guint i = 0; i < M; i++)
        if (mrow[cols[i]])
          row[i] = 0.0f;
    }
    out->rois[k].map = g_bytes_new_take (map, bytes);
  }
  return out;
}

/* ---- the drawing guard ------------------------------------------------------ */

typedef struct
{
  guint comp;
  gint sy, sx0, sx1;            /* samples sx0 .. sx1 - 1 of row sy */
} MaskSpan;

void
fap_mask_guard_init (FapMaskGuard * g)
{
  memset (g, 0, sizeof *g);
  g->spans = g_array_new (FALSE, FALSE, sizeof (MaskSpan));
}

void
fap_mask_guard_clear (FapMaskGuard * g)
{
  if (g->spans)
    g_array_unref (g->spans);
  g_free (g->saved);
  memset (g, 0, sizeof *g);
}

void
fap_mask_guard_prepare (FapMaskGuard * g, const FapMask * m,
    const GstVideoInfo * info)
{
  gint W = GST_VIDEO_INFO_WIDTH (info), H = GST_VIDEO_INFO_HEIGHT (info);

  if (g->mask_id == (m ? m->id : 0) && gst_video_info_is_equal (&g->info,
          info))
    return;
  g->mask_id = m ? m->id : 0;
  g->info = *info;
  g_array_set_size (g->spans, 0);
  g->n_saved = 0;
  for (guint c = 0; m && c < GST_VIDEO_INFO_N_COMPONENTS (info); c++) {
    const GstVideoFormatInfo *f = info->finfo;
    gint cw = GST_VIDEO_INFO_COMP_WIDTH (info, c);
    gint ch = GST_VIDEO_INFO_COMP_HEIGHT (info, c);
    guint ws = GST_VIDEO_FORMAT_INFO_W_SUB (f, c);
    guint hs = GST_VIDEO_FORMAT_INFO_H_SUB (f, c);
    for (gint sy = 0; sy < ch; sy++) {
      /* a sample counts as its top-left pixel (docs/SPEC.md section 7) */
      gint y = MIN (sy << hs, H - 1);
      const guint8 *mrow = m->ignored +
          (gsize) mask_index (y + 0.5, H, m->height) * m->width;
      gint run = -1;
      for (gint sx = 0; sx <= cw; sx++) {
        gboolean off = FALSE;
        if (sx < cw) {
          gint x = MIN (sx << ws, W - 1);
          off = mrow[mask_index (x + 0.5, W, m->width)];
        }
        if (off && run < 0)
          run = sx;
        else if (!off && run >= 0) {
          MaskSpan s = { c, sy, run, sx };
          g_array_append_val (g->spans, s);
          g->n_saved += sx - run;
          run = -1;
        }
      }
    }
  }
  g_free (g->saved);
  g->saved = g->n_saved ? g_malloc (g->n_saved) : NULL;
}

void
fap_mask_guard_save (FapMaskGuard * g, const GstVideoFrame * frame)
{
  gsize k = 0;
  for (guint i = 0; i < g->spans->len; i++) {
    const MaskSpan *s = &g_array_index (g->spans, MaskSpan, i);
    const guint8 *row = (const guint8 *) GST_VIDEO_FRAME_COMP_DATA (frame,
        s->comp) + (gsize) s->sy * GST_VIDEO_FRAME_COMP_STRIDE (frame, s->comp);
    gint ps = GST_VIDEO_FRAME_COMP_PSTRIDE (frame, s->comp);
    for (gint sx = s->sx0; sx < s->sx1; sx++)
      g->saved[k++] = row[(gsize) sx * ps];
  }
}

void
fap_mask_guard_restore (const FapMaskGuard * g, GstVideoFrame * frame)
{
  gsize k = 0;
  for (guint i = 0; i < g->spans->len; i++) {
    const MaskSpan *s = &g_array_index (g->spans, MaskSpan, i);
    guint8 *row = (guint8 *) GST_VIDEO_FRAME_COMP_DATA (frame, s->comp) +
        (gsize) s->sy * GST_VIDEO_FRAME_COMP_STRIDE (frame, s->comp);
    gint ps = GST_VIDEO_FRAME_COMP_PSTRIDE (frame, s->comp);
    for (gint sx = s->sx0; sx < s->sx1; sx++)
      row[(gsize) sx * ps] = g->saved[k++];
  }
}
