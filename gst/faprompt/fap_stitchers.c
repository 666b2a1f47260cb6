/* See fap_stitchers.h. */
#include "fap_stitchers.h"

#include <string.h>

typedef struct {
  fap_rect rect;
  guint cols, rows, map_size, side;
  gint overlap;
} Layout;

struct FapStitchers
{
  GMutex lock;
  Layout layout[FAP_ROI_MAX];
  fap_tiles_stitcher *stitcher[FAP_ROI_MAX];
};

FapStitchers *
fap_stitchers_new (void)
{
  FapStitchers *s = g_new0 (FapStitchers, 1);
  g_mutex_init (&s->lock);
  return s;
}

void
fap_stitchers_free (FapStitchers * s)
{
  if (!s)
    return;
  for (guint k = 0; k < FAP_ROI_MAX; k++)
    fap_tiles_stitcher_free (s->stitcher[k]);
  g_mutex_clear (&s->lock);
  g_free (s);
}

gboolean
fap_stitchers_run (FapStitchers * s, guint k, fap_rect rect, guint cols,
    guint rows, gint overlap, const float *const *maps, guint map_size,
    gfloat * out, guint side, gchar ** error)
{
  Layout want;
  fap_status st = FAP_OK;

  g_return_val_if_fail (k < FAP_ROI_MAX, FALSE);
  memset (&want, 0, sizeof want);       /* compared as bytes */
  want.rect = rect;
  want.cols = cols;
  want.rows = rows;
  want.overlap = overlap;
  want.map_size = map_size;
  want.side = side;
  g_mutex_lock (&s->lock);
  if (!s->stitcher[k] || memcmp (&want, &s->layout[k], sizeof want)) {
    fap_tiles_stitcher_free (s->stitcher[k]);
    s->stitcher[k] = NULL;
    st = fap_tiles_stitcher_new (rect, (int) cols, (int) rows, overlap,
        (int) map_size, (int) side, (int) side, &s->stitcher[k]);
    s->layout[k] = want;
  }
  if (st == FAP_OK)
    st = fap_tiles_stitcher_run (s->stitcher[k], maps, out);
  g_mutex_unlock (&s->lock);
  if (st != FAP_OK)
    *error = g_strdup (fap_last_error ());
  return st == FAP_OK;
}
