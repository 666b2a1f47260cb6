/* fap_overlay_draw (the streaming drawer with its per-map paint table) draws
 * the pixels of fap_blend_frame (the per-pixel reference), byte for byte:
 * every pixel format, odd sizes, padded strides, every YUV matrix and range,
 * several blends and map sizes; the table is reused for the same map id and
 * rebuilt when the map, the geometry or the blend changes; bad arguments
 * give clear errors. TAP via g_test. */
#include <glib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <fap.h>

static char last_error[1024];
static void on_log(fap_log_level level, const char *message, void *user_data) {
  (void)user_data;
  if (level == FAP_LOG_ERROR)
    g_strlcpy(last_error, message, sizeof last_error);
}

static guint32 seed = 12345;
static guint32 rnd(void) { return seed = seed * 1664525u + 1013904223u; }

typedef struct {
  fap_frame f;
  uint8_t *p[3];
  size_t size[3];
} owned;

static owned random_frame(fap_pixel_format fmt, int w, int h) {
  owned o;
  memset(&o, 0, sizeof o);
  o.f.format = fmt;
  o.f.width = w;
  o.f.height = h;
  const int cw = (w + 1) / 2, ch = (h + 1) / 2;
  if (fmt <= FAP_PIXEL_XBGR)
    o.f.stride = (size_t)w * (fmt <= FAP_PIXEL_BGR ? 3 : 4) + 7; /* padded */
  else if (fmt == FAP_PIXEL_YUY2)
    o.f.stride = 4 * (size_t)cw + 4;
  else
    o.f.stride = (size_t)w + 9;
  o.size[0] = o.f.stride * h;
  if (fmt == FAP_PIXEL_NV12 || fmt == FAP_PIXEL_I420) {
    o.f.plane_stride[0] = (fmt == FAP_PIXEL_NV12 ? 2 * (size_t)cw : (size_t)cw) + 5;
    o.size[1] = o.f.plane_stride[0] * ch;
    if (fmt == FAP_PIXEL_I420) {
      o.f.plane_stride[1] = (size_t)cw + 1;
      o.size[2] = o.f.plane_stride[1] * ch;
    }
  }
  for (int i = 0; i < 3; i++) {
    if (!o.size[i])
      continue;
    o.p[i] = g_malloc(o.size[i]);
    for (size_t k = 0; k < o.size[i]; k++)
      o.p[i][k] = (uint8_t)(rnd() >> 24);
  }
  o.f.data = o.p[0];
  o.f.plane[0] = o.p[1];
  o.f.plane[1] = o.p[2];
  return o;
}

static owned copy_frame(const owned *a) {
  owned o = *a;
  for (int i = 0; i < 3; i++)
    o.p[i] = o.size[i] ? g_memdup2(a->p[i], a->size[i]) : NULL;
  o.f.data = o.p[0];
  o.f.plane[0] = o.p[1];
  o.f.plane[1] = o.p[2];
  return o;
}

static gboolean same(const owned *a, const owned *b) {
  for (int i = 0; i < 3; i++)
    if (a->size[i] && memcmp(a->p[i], b->p[i], a->size[i]) != 0)
      return FALSE;
  return TRUE;
}

static void free_owned(owned *o) {
  for (int i = 0; i < 3; i++)
    g_free(o->p[i]);
}

/* a smooth map in [0, 1] with a peak, plus a few values outside [0, 1] and a NaN */
static float *make_map(int s, int variant) {
  float *m = g_new(float, (size_t)s * s);
  for (int y = 0; y < s; y++)
    for (int x = 0; x < s; x++) {
      const double dx = x - s * (0.3 + 0.1 * variant), dy = y - s * 0.6;
      m[y * s + x] = (float)(0.1 + 0.85 * exp(-(dx * dx + dy * dy) / (0.08 * s * s)));
    }
  if (s > 4) {
    m[0] = 1.7f;
    m[1] = -0.5f;
    m[s + 1] = NAN;
  }
  return m;
}

/* the reference and the overlay on copies of the same frame */
static void check_one(fap_overlay *ov, const owned *src, const float *map, int s, uint64_t id,
                      const fap_blend *b) {
  owned ref = copy_frame(src), got = copy_frame(src);
  g_assert_cmpint(fap_blend_frame(&ref.f, map, s, b), ==, FAP_OK);
  g_assert_cmpint(fap_overlay_draw(ov, &got.f, map, s, id, b), ==, FAP_OK);
  if (!same(&ref, &got))
    g_error("overlay differs from fap_blend_frame: %s %dx%d matrix %d full %d map %d id %llu "
            "blend %g %g [%g, %g]",
            fap_pixel_format_name(src->f.format), src->f.width, src->f.height, src->f.matrix,
            src->f.full_range, s, (unsigned long long)id, b->opacity, b->threshold,
            b->range_min, b->range_max);
  free_owned(&ref);
  free_owned(&got);
}

static void test_equals_reference(void) {
  const int sizes[][2] = {{1, 1}, {2, 3}, {33, 17}, {64, 48}, {97, 61}};
  const int maps[] = {1, 5, 14, 28};
  fap_blend blends[4];
  fap_blend_init(&blends[0]);
  blends[1] = (fap_blend){1.0f, 0.0f, 0.0f, 1.0f};
  blends[2] = (fap_blend){0.7f, 0.3f, 0.2f, 0.6f};
  blends[3] = (fap_blend){0.25f, -1.0f, -0.5f, 2.0f}; /* draws everything, NaN excepted */
  fap_overlay *ov;
  g_assert_cmpint(fap_overlay_new(&ov), ==, FAP_OK);
  uint64_t id = 1;
  int checked = 0;
  for (int fmt = FAP_PIXEL_RGB; fmt <= FAP_PIXEL_YUY2; fmt++)
    for (size_t si = 0; si < G_N_ELEMENTS(sizes); si++)
      for (int mat = 0; mat < (fmt >= FAP_PIXEL_NV12 ? 3 : 1); mat++)
        for (int full = 0; full < (fmt >= FAP_PIXEL_NV12 ? 2 : 1); full++) {
          owned o = random_frame((fap_pixel_format)fmt, sizes[si][0], sizes[si][1]);
          o.f.matrix = (fap_yuv_matrix)mat;
          o.f.full_range = full;
          const int s = maps[(si + mat) % G_N_ELEMENTS(maps)];
          float *map = make_map(s, (int)si);
          for (size_t bi = 0; bi < G_N_ELEMENTS(blends); bi++) {
            check_one(ov, &o, map, s, id, &blends[bi]); /* builds */
            check_one(ov, &o, map, s, id, &blends[bi]); /* reuses */
            checked++;
          }
          id++;
          g_free(map);
          free_owned(&o);
        }
  g_test_message("%d format / size / colorimetry / blend cases equal the reference", checked);
  fap_overlay_free(ov);
}

/* The table follows the map: a new id draws the new map; the same id on a
 * new frame of the same geometry draws the cached one (the contract: an id
 * names a map's contents); id 0 never caches. */
static void test_cache_follows_map(void) {
  fap_overlay *ov;
  g_assert_cmpint(fap_overlay_new(&ov), ==, FAP_OK);
  fap_blend b = {1.0f, 0.2f, 0.0f, 1.0f};
  owned o = random_frame(FAP_PIXEL_NV12, 80, 60);
  float *m1 = make_map(14, 0), *m2 = make_map(14, 3);
  check_one(ov, &o, m1, 14, 7, &b);
  check_one(ov, &o, m2, 14, 8, &b);
  check_one(ov, &o, m1, 14, 0, &b);
  check_one(ov, &o, m2, 14, 0, &b);
  /* geometry changes under the same id rebuild too */
  owned small = random_frame(FAP_PIXEL_NV12, 40, 30), rgb = random_frame(FAP_PIXEL_RGBA, 80, 60);
  check_one(ov, &small, m2, 14, 8, &b);
  check_one(ov, &rgb, m2, 14, 8, &b);
  o.f.matrix = FAP_YUV_BT709;
  check_one(ov, &o, m2, 14, 8, &b);
  b.opacity = 0.5f;
  check_one(ov, &o, m2, 14, 8, &b);
  /* prepared elsewhere (no pixel touched), then drawn here from the table */
  owned untouched = copy_frame(&o);
  g_assert_cmpint(fap_overlay_prepare(ov, &untouched.f, m1, 14, 9, &b), ==, FAP_OK);
  g_assert_true(same(&untouched, &o));
  owned ref = copy_frame(&o), got = copy_frame(&o);
  g_assert_cmpint(fap_blend_frame(&ref.f, m1, 14, &b), ==, FAP_OK);
  /* a wrong map pointer proves the draw came from the table made for id 9 */
  g_assert_cmpint(fap_overlay_draw(ov, &got.f, m2, 14, 9, &b), ==, FAP_OK);
  g_assert_true(same(&ref, &got));
  free_owned(&untouched);
  free_owned(&ref);
  free_owned(&got);
  free_owned(&small);
  free_owned(&rgb);
  free_owned(&o);
  g_free(m1);
  g_free(m2);
  fap_overlay_free(ov);
}

static void test_errors(void) {
  fap_overlay *ov;
  g_assert_cmpint(fap_overlay_new(&ov), ==, FAP_OK);
  owned o = random_frame(FAP_PIXEL_RGB, 8, 8);
  float *map = make_map(4, 0);
  fap_blend b;
  fap_blend_init(&b);
  b.range_min = b.range_max = 0.5f;
  g_assert_cmpint(fap_overlay_draw(ov, &o.f, map, 4, 1, &b), ==, FAP_ERR_INVALID_ARGUMENT);
  g_assert_nonnull(strstr(last_error, "colour range"));
  g_assert_cmpint(fap_blend_frame(&o.f, map, 4, &b), ==, FAP_ERR_INVALID_ARGUMENT);
  fap_blend_init(&b);
  b.opacity = 2.0f;
  g_assert_cmpint(fap_overlay_draw(ov, &o.f, map, 4, 1, &b), ==, FAP_ERR_INVALID_ARGUMENT);
  g_assert_nonnull(strstr(last_error, "opacity"));
  fap_blend_init(&b);
  g_assert_cmpint(fap_overlay_draw(ov, &o.f, NULL, 4, 1, &b), ==, FAP_ERR_INVALID_ARGUMENT);
  g_assert_cmpint(fap_overlay_draw(NULL, &o.f, map, 4, 1, &b), ==, FAP_ERR_INVALID_ARGUMENT);
  o.f.stride = 5;
  g_assert_cmpint(fap_overlay_draw(ov, &o.f, map, 4, 1, &b), ==, FAP_ERR_INVALID_ARGUMENT);
  g_assert_nonnull(strstr(last_error, "stride"));
  g_assert_cmpint(fap_overlay_new(NULL), ==, FAP_ERR_INVALID_ARGUMENT);
  fap_overlay_free(NULL);
  free_owned(&o);
  g_free(map);
  fap_overlay_free(ov);
}

/* The detector's sink gets its messages; the process-wide one does not. */
static char detector_error[1024];
static void on_detector_log(fap_log_level level, const char *message, void *user_data) {
  if (level == FAP_LOG_ERROR)
    g_strlcpy(detector_error, message, sizeof detector_error);
  (*(int *)user_data)++;
}

static void test_log_sinks(void) {
  /* the thread sink takes what this thread logs outside a detector */
  int calls = 0;
  last_error[0] = detector_error[0] = '\0';
  fap_set_thread_log_callback(on_detector_log, &calls);
  fap_overlay_draw(NULL, NULL, NULL, 0, 0, NULL);
  fap_set_thread_log_callback(NULL, NULL);
  g_assert_cmpint(calls, ==, 1);
  g_assert_cmpstr(last_error, ==, "");
  g_assert_nonnull(strstr(detector_error, "no overlay"));
  /* and back to the process-wide sink */
  fap_overlay_draw(NULL, NULL, NULL, 0, 0, NULL);
  g_assert_nonnull(strstr(last_error, "no overlay"));
  g_assert_cmpint(calls, ==, 1);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  fap_set_log_callback(on_log, NULL);
  g_test_add_func("/overlay/equals-reference", test_equals_reference);
  g_test_add_func("/overlay/cache-follows-map", test_cache_follows_map);
  g_test_add_func("/overlay/errors", test_errors);
  g_test_add_func("/overlay/log-sinks", test_log_sinks);
  return g_test_run();
}
