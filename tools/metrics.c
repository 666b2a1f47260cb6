/* Metrics of tools/README.md ("What faprompt-eval computes"). Pixel metrics
 * come from one sort of the class's pixels by map value (an in-place MSD radix
 * sort of 64-bit items: order-preserving key of the float32 value in the high
 * half, region area in the low half) followed by one descending scan that
 * yields, per distinct value, the counts every metric needs. */
#include "metrics.h"

#include "imageio.h" /* TOOLS_ERROR */
#include "mask.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define EXPECT_FPR 0.3
#define MAX_STEP 200

struct metrics_class {
  int S;
  size_t npix;
  uint64_t *items;
  size_t n_items, cap_items;
  float *scores;
  uint8_t *labels;
  size_t n_img, cap_img;
  long long n_regions, n_pos_pixels;
  uint32_t *area;   /* per image scratch: region area per pixel */
  int32_t *scratch; /* per image scratch: union-find */
  uint32_t kmin, kmax;
};

/* Order-preserving map float32 -> uint32 (-0 and +0 equal, as they compare). */
static inline uint32_t float_key(float v) {
  if (v == 0.0f)
    v = 0.0f;
  uint32_t u;
  memcpy(&u, &v, 4);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static inline float key_float(uint32_t k) {
  uint32_t u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

metrics_class *metrics_class_new(int map_size, size_t expected_images) {
  metrics_class *c = g_new0(metrics_class, 1);
  c->S = map_size;
  c->npix = (size_t)map_size * map_size;
  c->area = g_new(uint32_t, c->npix);
  c->scratch = g_new(int32_t, c->npix);
  c->kmin = UINT32_MAX;
  c->kmax = 0;
  if (expected_images) {
    c->items = g_try_new(uint64_t, expected_images * c->npix);
    c->cap_items = c->items ? expected_images * c->npix : 0;
    c->scores = g_new(float, expected_images);
    c->labels = g_new(uint8_t, expected_images);
    c->cap_img = expected_images;
  }
  return c;
}

void metrics_class_free(metrics_class *c) {
  if (!c)
    return;
  g_free(c->items);
  g_free(c->scores);
  g_free(c->labels);
  g_free(c->area);
  g_free(c->scratch);
  g_free(c);
}

int metrics_class_add(metrics_class *c, float score, int label, const float *map,
                      const uint8_t *mask, GError **error) {
  if (!isfinite(score)) {
    g_set_error(error, TOOLS_ERROR, 0, "the image score is not finite");
    return 0;
  }
  if (c->n_img == c->cap_img) {
    c->cap_img = c->cap_img ? 2 * c->cap_img : 64;
    c->scores = g_renew(float, c->scores, c->cap_img);
    c->labels = g_renew(uint8_t, c->labels, c->cap_img);
  }
  if (c->n_items + c->npix > c->cap_items) {
    size_t cap = c->cap_items + c->cap_items / 2;
    if (cap < c->n_items + c->npix)
      cap = c->n_items + c->npix;
    uint64_t *items = g_try_renew(uint64_t, c->items, cap);
    if (!items) {
      g_set_error(error, TOOLS_ERROR, 0, "out of memory for the pixel metrics (%zu MiB)",
                  cap * sizeof *items >> 20);
      return 0;
    }
    c->items = items;
    c->cap_items = cap;
  }
  int any = 0;
  if (mask)
    for (size_t i = 0; i < c->npix && !any; i++)
      any = mask[i] != 0;
  if (any) {
    c->n_regions += mask_region_areas(mask, c->S, c->S, c->area, c->scratch);
  } else {
    memset(c->area, 0, c->npix * sizeof *c->area);
  }
  uint64_t *dst = c->items + c->n_items;
  uint32_t lo = c->kmin, hi = c->kmax;
  long long pos = 0;
  for (size_t i = 0; i < c->npix; i++) {
    if (!isfinite(map[i])) {
      g_set_error(error, TOOLS_ERROR, 0, "the anomaly map holds a non-finite value at (%zu, %zu)",
                  i / c->S, i % c->S);
      return 0;
    }
    uint32_t k = float_key(map[i]);
    lo = k < lo ? k : lo;
    hi = k > hi ? k : hi;
    pos += c->area[i] != 0;
    dst[i] = (uint64_t)k << 32 | c->area[i];
  }
  c->kmin = lo;
  c->kmax = hi;
  c->n_pos_pixels += pos;
  c->n_items += c->npix;
  c->scores[c->n_img] = score;
  c->labels[c->n_img] = label != 0;
  c->n_img++;
  return 1;
}

/* ---- image level ------------------------------------------------------------ */

typedef struct {
  float s;
  uint8_t y;
} scored;

static int by_score_desc(const void *a, const void *b) {
  float x = ((const scored *)a)->s, y = ((const scored *)b)->s;
  return (x < y) - (x > y);
}

static scored *sorted_desc(const float *scores, const uint8_t *labels, size_t n, size_t *pos) {
  scored *v = g_new(scored, n ? n : 1);
  *pos = 0;
  for (size_t i = 0; i < n; i++) {
    v[i].s = scores[i];
    v[i].y = labels[i] != 0;
    *pos += v[i].y;
  }
  qsort(v, n, sizeof *v, by_score_desc);
  return v;
}

/* Area under the ROC curve with tied scores as one step (sklearn: one
 * threshold per distinct score, trapezoids): Mann-Whitney U with ties counted
 * one half, exact in integers: 2U = sum over groups of p_g (2 n_below + n_g). */
double metrics_image_auroc(const float *scores, const uint8_t *labels, size_t n) {
  size_t P;
  scored *v = sorted_desc(scores, labels, n, &P);
  size_t N = n - P;
  double r = NAN;
  if (P > 0 && N > 0) {
    unsigned long long u2 = 0, neg_above = 0;
    for (size_t i = 0; i < n;) {
      size_t j = i, gp = 0, gn = 0;
      while (j < n && v[j].s == v[i].s) {
        gp += v[j].y;
        gn += !v[j].y;
        j++;
      }
      u2 += (unsigned long long)gp * (2 * (N - neg_above - gn) + gn);
      neg_above += gn;
      i = j;
    }
    r = (double)u2 / (2.0 * (double)P * (double)N);
  }
  g_free(v);
  return r;
}

/* sklearn average_precision_score: sum over distinct scores (descending) of
 * (R_k - R_{k-1}) P_k, no interpolation. */
double metrics_image_ap(const float *scores, const uint8_t *labels, size_t n) {
  size_t P;
  scored *v = sorted_desc(scores, labels, n, &P);
  double r = NAN;
  if (P > 0) {
    double ap = 0.0;
    size_t tp = 0, fp = 0;
    for (size_t i = 0; i < n;) {
      size_t j = i, gp = 0;
      while (j < n && v[j].s == v[i].s) {
        gp += v[j].y;
        j++;
      }
      tp += gp;
      fp += (j - i) - gp;
      ap += ((double)gp / (double)P) * ((double)tp / (double)(tp + fp));
      i = j;
    }
    r = ap;
  }
  g_free(v);
  return r;
}

/* ---- thresholds of cal_pro_score ------------------------------------------- */

int metrics_pro_thresholds(float min_th, float max_th, int max_step, double *th) {
  /* Under numpy 1.x promotion: max_th - min_th is a float32 subtraction;
   * dividing that numpy float32 scalar by a Python int gives float64. arange
   * then takes length ceil(float(range32) / delta), th[0] = start,
   * th[1] = start + delta, th[i] = th[0] + i * (th[1] - th[0]) (DOUBLE_fill). */
  float range32 = max_th - min_th;
  double delta = (double)range32 / max_step;
  if (!(delta > 0.0))
    return 0; /* numpy: "arange: cannot compute length" */
  double len = ceil((double)range32 / delta);
  int n = (int)len;
  if (n > max_step + 2)
    n = max_step + 2; /* cannot happen; keeps th in bounds */
  double start = (double)min_th;
  th[0] = start;
  if (n > 1)
    th[1] = start + delta;
  double d = n > 1 ? th[1] - th[0] : 0.0;
  for (int i = 2; i < n; i++)
    th[i] = start + i * d;
  return n;
}

/* ---- sort --------------------------------------------------------------------- */

static void insertion_sort(uint64_t *a, size_t n) {
  for (size_t i = 1; i < n; i++) {
    uint64_t v = a[i];
    uint32_t k = (uint32_t)(v >> 32);
    size_t j = i;
    while (j > 0 && (uint32_t)(a[j - 1] >> 32) > k) {
      a[j] = a[j - 1];
      j--;
    }
    a[j] = v;
  }
}

/* Partitions a[0..n) in place by the byte at bit `shift` (American flag
 * sort); counts/starts out. */
static void partition_byte(uint64_t *a, size_t n, int shift, size_t start[257]) {
  size_t count[256] = {0}, next[256];
  for (size_t i = 0; i < n; i++)
    count[(a[i] >> shift) & 0xff]++;
  start[0] = 0;
  for (int b = 0; b < 256; b++)
    start[b + 1] = start[b] + count[b];
  memcpy(next, start, sizeof next);
  for (int b = 0; b < 256; b++) {
    while (next[b] < start[b + 1]) {
      uint64_t v = a[next[b]];
      unsigned d = (unsigned)(v >> shift) & 0xff;
      while (d != (unsigned)b) {
        uint64_t t = a[next[d]];
        a[next[d]++] = v;
        v = t;
        d = (unsigned)(v >> shift) & 0xff;
      }
      a[next[b]++] = v;
    }
  }
}

static void msd_sort(uint64_t *a, size_t n, int shift) {
  if (n < 48) {
    insertion_sort(a, n);
    return;
  }
  size_t start[257];
  partition_byte(a, n, shift, start);
  if (shift == 32)
    return;
  int next = shift - 8 < 32 ? 32 : shift - 8;
  for (int b = 0; b < 256; b++)
    if (start[b + 1] - start[b] > 1)
      msd_sort(a + start[b], start[b + 1] - start[b], next);
}

/* Sorts items by their high 32 bits; keys lie in [kmin, kmax]. */
static void sort_items(uint64_t *a, size_t n, uint32_t kmin, uint32_t kmax) {
  uint32_t diff = kmin ^ kmax;
  if (n < 2 || diff == 0)
    return;
  int hb = 31 - __builtin_clz(diff); /* bits above hb are equal for all keys */
  int shift = 32 + (hb >= 7 ? hb - 7 : 0);
  if (n < 48) {
    insertion_sort(a, n);
    return;
  }
  size_t start[257];
  partition_byte(a, n, shift, start);
  if (shift == 32)
    return;
  int next = shift - 8 < 32 ? 32 : shift - 8;
#pragma omp parallel for schedule(dynamic, 1)
  for (int b = 0; b < 256; b++)
    if (start[b + 1] - start[b] > 1)
      msd_sort(a + start[b], start[b + 1] - start[b], next);
}

/* ---- pixel level --------------------------------------------------------------- */

/* MVTec AD evaluation code, generic_util.trapezoid(x, y, x_max): x ascending. */
static double trapezoid_to(const double *x, const double *y, size_t n, double x_max) {
  double correction = 0.0;
  int in_x = 0;
  for (size_t i = 0; i < n; i++)
    in_x |= x[i] == x_max;
  if (!in_x) {
    size_t ins = 0; /* bisect.bisect (right) */
    while (ins < n && x[ins] <= x_max)
      ins++;
    if (ins == 0 || ins == n)
      return NAN; /* their assert: x_max inside the range */
    double y_interp = y[ins - 1] + ((y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1]));
    correction = 0.5 * (y[ins - 1] + y_interp) * (x_max - x[ins - 1]);
  }
  double area = 0.0;
  size_t prev = SIZE_MAX;
  for (size_t i = 0; i < n; i++) {
    if (!(x[i] <= x_max))
      continue;
    if (prev != SIZE_MAX)
      area += (x[i] - x[prev]) * (y[i] + y[prev]) / 2.0;
    prev = i;
  }
  return area + correction;
}

typedef struct {
  double *x, *y;
  size_t n, cap;
} curve;

static void curve_add(curve *c, double x, double y) {
  if (c->n == c->cap) {
    c->cap = c->cap ? 2 * c->cap : 1024;
    c->x = g_renew(double, c->x, c->cap);
    c->y = g_renew(double, c->y, c->cap);
  }
  c->x[c->n] = x;
  c->y[c->n] = y;
  c->n++;
}

static void pixel_metrics(metrics_class *c, metrics_result *r) {
  const size_t n = c->n_items;
  const long long P = c->n_pos_pixels, N0 = (long long)n - P, R = c->n_regions;
  r->n_pixels = (long long)n;
  r->n_anomalous_pixels = P;
  r->n_regions = R;
  r->pixel_auroc = r->pixel_aupro = r->pixel_aupro_mvtec = NAN;
  r->aupro_thresholds = 0;
  if (n == 0)
    return;
  sort_items(c->items, n, c->kmin, c->kmax);
  const uint64_t *a = c->items;

  /* The authors' thresholds, and their float32 form used in `amaps > th`
   * (numpy 1.x compares a float32 array with a float64 scalar in float32). */
  double th[MAX_STEP + 2];
  float th32[MAX_STEP + 2];
  const int T = metrics_pro_thresholds(key_float(c->kmin), key_float(c->kmax), MAX_STEP, th);
  for (int k = 0; k < T; k++)
    th32[k] = (float)th[k];
  long long fp_at[MAX_STEP + 2];
  double w_at[MAX_STEP + 2];

  curve mv = {0};
  curve_add(&mv, 0.0, 0.0);
  int collecting = N0 > 0 && R > 0;

  unsigned __int128 u2 = 0;
  long long cum_fp = 0;
  double cum_w = 0.0;
  int k = T - 1;
  for (size_t i = n; i > 0;) {
    const uint32_t key = (uint32_t)(a[i - 1] >> 32);
    const float v = key_float(key);
    while (k >= 0 && th32[k] >= v) { /* pixels > th[k]: exactly those seen so far */
      fp_at[k] = cum_fp;
      w_at[k] = cum_w;
      k--;
    }
    long long gn = 0, gp = 0;
    double gw = 0.0;
    while (i > 0 && (uint32_t)(a[i - 1] >> 32) == key) {
      uint32_t area = (uint32_t)a[i - 1];
      if (area) {
        gp++;
        gw += 1.0 / area;
      } else {
        gn++;
      }
      i--;
    }
    const long long neg_below = N0 - cum_fp - gn;
    u2 += (unsigned __int128)gp * (unsigned long long)(2 * neg_below + gn);
    cum_fp += gn;
    cum_w += gw;
    if (collecting) {
      double fpr = (double)cum_fp / (double)N0, pro = cum_w / (double)R;
      curve_add(&mv, fpr < 1.0 ? fpr : 1.0, pro < 1.0 ? pro : 1.0);
      if (fpr > EXPECT_FPR)
        collecting = 0;
    }
  }
  for (; k >= 0; k--) {
    fp_at[k] = cum_fp;
    w_at[k] = cum_w;
  }

  if (P > 0 && N0 > 0)
    r->pixel_auroc = (double)u2 / (2.0 * (double)P * (double)N0);

  /* The standard MVTec AD AUPRO: (0, 0) + curve + (1, 1), integrated to 0.3. */
  if (N0 > 0 && R > 0) {
    if (collecting)
      curve_add(&mv, 1.0, 1.0);
    r->pixel_aupro_mvtec = trapezoid_to(mv.x, mv.y, mv.n, EXPECT_FPR) / EXPECT_FPR;
  }
  g_free(mv.x);
  g_free(mv.y);

  /* cal_pro_score: keep fpr < 0.3, rescale the kept fprs to [0, 1] by their own
   * span, sklearn.metrics.auc (trapezoids; x decreasing -> sign flipped). */
  r->aupro_thresholds = T;
  if (T > 0 && N0 > 0 && R > 0) {
    double fx[MAX_STEP + 2], py[MAX_STEP + 2];
    int m = 0;
    for (int j = 0; j < T; j++) {
      double fpr = (double)fp_at[j] / (double)N0;
      if (fpr < EXPECT_FPR) {
        fx[m] = fpr;
        py[m] = w_at[j] / (double)R;
        m++;
      }
    }
    if (m >= 2) {
      double lo = fx[0], hi = fx[0];
      for (int j = 1; j < m; j++) {
        lo = fx[j] < lo ? fx[j] : lo;
        hi = fx[j] > hi ? fx[j] : hi;
      }
      if (hi > lo) {
        int any_neg = 0, any_pos = 0;
        double area = 0.0;
        for (int j = 0; j < m; j++)
          fx[j] = (fx[j] - lo) / (hi - lo);
        for (int j = 1; j < m; j++) {
          double dx = fx[j] - fx[j - 1];
          any_neg |= dx < 0;
          any_pos |= dx > 0;
          area += dx * (py[j] + py[j - 1]) / 2.0;
        }
        if (!(any_neg && any_pos)) /* sklearn raises on a non-monotonic x */
          r->pixel_aupro = any_neg ? -area : area;
      }
    }
  }
}

void metrics_class_finish(metrics_class *c, metrics_result *r) {
  memset(r, 0, sizeof *r);
  r->n_images = (int)c->n_img;
  for (size_t i = 0; i < c->n_img; i++)
    r->n_anomalous += c->labels[i];
  r->image_auroc = metrics_image_auroc(c->scores, c->labels, c->n_img);
  r->image_ap = metrics_image_ap(c->scores, c->labels, c->n_img);
  pixel_metrics(c, r);
  g_clear_pointer(&c->items, g_free);
  c->n_items = c->cap_items = 0;
}
