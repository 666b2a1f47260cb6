/* See fap_roi.h. */
#include "fap_roi.h"

#include <math.h>
#include <string.h>

/* the largest frame side the core takes (core/pixel.c) */
#define FAP_ROI_MAX_SIDE 32768

/* One number of a rectangle: an integer (pixels) or, with a decimal point,
 * a fraction in [0, 1]. */
static gboolean
parse_number (const gchar * token, gdouble * value, gboolean * fraction)
{
  gchar *end = NULL;
  const gchar *p;

  if (!*token)
    return FALSE;
  for (p = token; *p; p++)
    if (!g_ascii_isdigit (*p) && *p != '.')
      return FALSE;             /* no sign, exponent, hex, inf or nan */
  *fraction = strchr (token, '.') != NULL;
  *value = g_ascii_strtod (token, &end);
  if (!end || *end || !isfinite (*value))
    return FALSE;
  if (*fraction)
    return *value <= 1.0;
  return *value <= FAP_ROI_MAX_SIDE;
}

static gboolean
parse_rect (gchar * item, FapRoiRect * r, gchar ** error)
{
  gchar **parts = g_strsplit (item, ",", -1);
  gdouble v[4];
  gboolean frac[4];
  guint n = g_strv_length (parts), i;
  gboolean ok = n == 4;

  for (i = 0; ok && i < 4; i++)
    ok = parse_number (g_strstrip (parts[i]), &v[i], &frac[i]);
  g_strfreev (parts);
  if (!ok) {
    *error = g_strdup_printf ("\"%s\" is not x,y,w,h: four whole numbers of "
        "pixels, or four fractions of the frame in [0, 1] written with a "
        "decimal point", item);
    return FALSE;
  }
  if (frac[0] != frac[1] || frac[0] != frac[2] || frac[0] != frac[3]) {
    *error = g_strdup_printf ("\"%s\" mixes pixels and fractions: write all "
        "four numbers as whole pixels or all four with a decimal point", item);
    return FALSE;
  }
  if (v[2] <= 0.0 || v[3] <= 0.0) {
    *error = g_strdup_printf ("\"%s\" has zero size", item);
    return FALSE;
  }
  if (frac[0] && (v[0] + v[2] > 1.0 + 1e-9 || v[1] + v[3] > 1.0 + 1e-9)) {
    *error = g_strdup_printf ("\"%s\" reaches past the frame (x + w and "
        "y + h must be at most 1.0)", item);
    return FALSE;
  }
  r->x = v[0];
  r->y = v[1];
  r->w = v[2];
  r->h = v[3];
  r->fraction = frac[0];
  return TRUE;
}

gboolean
fap_roi_parse (const gchar * text, FapRoiSpec * spec, gchar ** error)
{
  FapRoiSpec s = { 0, };
  gchar *copy = g_strstrip (g_strdup (text ? text : ""));
  gchar **items;
  guint n, i;

  *error = NULL;
  if (!*copy) {
    g_free (copy);
    *spec = s;
    return TRUE;
  }
  items = g_strsplit (copy, ";", -1);
  n = g_strv_length (items);
  /* one trailing ';' is forgiven ("a;b;") */
  if (n > 1 && !*g_strstrip (items[n - 1]))
    n--;
  if (n > FAP_ROI_MAX)
    *error = g_strdup_printf ("%u rectangles, more than the %d an element "
        "takes", n, FAP_ROI_MAX);
  for (i = 0; !*error && i < n; i++) {
    gchar *item = g_strstrip (items[i]);
    if (!*item)
      *error = g_strdup_printf ("rectangle %u is empty", i + 1);
    else if (parse_rect (item, &s.r[i], error))
      s.n++;
  }
  g_strfreev (items);
  g_free (copy);
  if (*error)
    return FALSE;
  *spec = s;
  return TRUE;
}

gboolean
fap_tiles_parse (const gchar * text, guint * cols, guint * rows,
    gchar ** error)
{
  gchar *copy = g_strstrip (g_strdup (text ? text : ""));
  gchar **parts = NULL;
  guint64 v[2] = { 1, 1 };
  gboolean ok = TRUE;

  *error = NULL;
  if (*copy) {
    parts = g_strsplit (copy, "x", -1);
    ok = g_strv_length (parts) == 2;
    for (guint i = 0; ok && i < 2; i++)
      ok = g_ascii_string_to_unsigned (parts[i], 10, 1, FAP_ROI_MAX, &v[i],
          NULL);
    g_strfreev (parts);
  }
  if (!ok)
    *error = g_strdup_printf ("\"%s\" is not CxR: columns and rows, whole "
        "numbers from 1 to %d joined by an x (e.g. 2x2)", copy, FAP_ROI_MAX);
  else {
    *cols = (guint) v[0];
    *rows = (guint) v[1];
  }
  g_free (copy);
  return ok;
}

/* a fraction's pixels: the edges round to the nearest pixel boundary, so
 * rectangles that meet as fractions meet as pixels */
static void
fraction_to_pixels (gdouble at, gdouble size, gint side, gint * p0, gint * n)
{
  gint64 a = (gint64) floor (at * side + 0.5);
  gint64 b = (gint64) floor ((at + size) * side + 0.5);
  *p0 = (gint) MIN (a, side);
  *n = (gint) (MIN (b, side) - *p0);
}

gboolean
fap_roi_resolve (const FapRoiSpec * spec, gint width, gint height,
    fap_rect * rects, guint * n, gchar ** error)
{
  guint i;

  *error = NULL;
  if (spec->n == 0) {
    rects[0] = (fap_rect) {
    0, 0, width, height};
    *n = 1;
    return TRUE;
  }
  for (i = 0; i < spec->n; i++) {
    const FapRoiRect *r = &spec->r[i];
    fap_rect *o = &rects[i];

    if (r->fraction) {
      fraction_to_pixels (r->x, r->w, width, &o->x, &o->width);
      fraction_to_pixels (r->y, r->h, height, &o->y, &o->height);
      if (o->width < 1 || o->height < 1) {
        *error = g_strdup_printf ("rectangle %u (%g,%g,%g,%g) covers no whole "
            "pixel of the %dx%d frame", i + 1, r->x, r->y, r->w, r->h, width,
            height);
        return FALSE;
      }
      continue;
    }
    if (r->x + r->w > width || r->y + r->h > height) {
      *error = g_strdup_printf ("rectangle %u (%.0f,%.0f,%.0f,%.0f) reaches "
          "past the %dx%d frame", i + 1, r->x, r->y, r->w, r->h, width,
          height);
      return FALSE;
    }
    *o = (fap_rect) {
    (gint) r->x, (gint) r->y, (gint) r->w, (gint) r->h};
  }
  *n = spec->n;
  return TRUE;
}
