/* The authors' evaluation metrics (AnomalyCLIP / FAPrompt metrics.py), plus
 * the standard MVTec AD AUPRO, computed per class from streamed results.
 * tools/README.md writes down the exact formulas and conventions.
 *
 * Memory per class: 8 bytes per map pixel (the float32 map value as an
 * order-preserving 32-bit key, and the area of the ground-truth region the
 * pixel belongs to, 0 outside the mask) plus 8 bytes per image. Nothing else
 * grows with the dataset. */
#ifndef FAP_TOOLS_METRICS_H
#define FAP_TOOLS_METRICS_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

/* NaN for a metric the authors' code cannot compute for this class (it
 * raises, or returns NaN): e.g. AUROC with a single label present. */
typedef struct {
  int n_images, n_anomalous;
  long long n_pixels, n_anomalous_pixels, n_regions;
  double image_auroc, image_ap;
  double pixel_auroc;
  double pixel_aupro;       /* the authors' cal_pro_score */
  double pixel_aupro_mvtec; /* MVTec AD: PRO integrated to FPR 0.3, / 0.3 */
  int aupro_thresholds;     /* 200 or 201 (numpy arange), 0 when undefined */
} metrics_result;

typedef struct metrics_class metrics_class;

/* map_size S; expected_images sizes the buffers once (0: grow as needed). */
metrics_class *metrics_class_new(int map_size, size_t expected_images);
void metrics_class_free(metrics_class *c);

/* One image: score, label (0/1), its S x S map and binary mask (0/1 bytes;
 * NULL: all normal). Returns 0 with *error set on a non-finite map value or
 * when memory runs out. */
int metrics_class_add(metrics_class *c, float score, int label, const float *map,
                      const uint8_t *mask, GError **error);

/* Computes everything and releases the pixel buffer (the class is spent).
 * threads <= 0: OpenMP default. */
void metrics_class_finish(metrics_class *c, metrics_result *out);

/* ---- the pieces, exposed for tests ---------------------------------------- */

/* sklearn.metrics.roc_auc_score / average_precision_score on n pairs. NaN
 * when a label is missing (roc_auc raises; average_precision warns and returns
 * 0 for no positives -- we report NaN, see tools/README.md). */
double metrics_image_auroc(const float *scores, const uint8_t *labels, size_t n);
double metrics_image_ap(const float *scores, const uint8_t *labels, size_t n);

/* numpy 1.x np.arange(min_th, max_th, (max_th - min_th) / max_step) for
 * float32 min/max: float64 values; returns the count (0 when min == max:
 * numpy raises). th must hold max_step + 2. */
int metrics_pro_thresholds(float min_th, float max_th, int max_step, double *th);

#endif
