/* Resampling arithmetic shared by the backends and the detector: the exact
 * index/weight rules of the reference (PIL / torch antialiased bicubic,
 * torch bilinear with align_corners = false, scipy-style Gaussian). */
#ifndef FAP_RESAMPLE_H
#define FAP_RESAMPLE_H

#include <stdint.h>

/* Antialiased bicubic (Keys a = -0.5) from in to out samples, as PIL's
 * precompute_coeffs: the kernel support grows by the shrink factor.
 * For output i, taps start at first[i], count[i] of them (<= taps), weights
 * weights[i * taps + j], normalised to sum 1. */
typedef struct {
  int in, out, taps;
  int32_t *first, *count;
  float *weights;
} fap_bicubic_table;

int fap_bicubic_taps(int in, int out);
/* Fills t (arrays must hold out, out, out * fap_bicubic_taps(in, out)). */
void fap_bicubic_fill(fap_bicubic_table *t, int in, int out);

/* Bilinear source coordinate for output index i, align_corners = false:
 * x = max((i + 0.5) * in / out - 0.5, 0); i0 = floor(x), i1 = min(i0 + 1, in - 1). */
void fap_bilinear_coord(int i, int in, int out, int *i0, int *i1, float *w1);

/* Gaussian of sigma truncated at radius floor(4 sigma + 0.5), weights sum 1.
 * weights must hold 2 * radius + 1 (query fap_gaussian_radius first). */
int fap_gaussian_radius(float sigma);
void fap_gaussian_fill(float sigma, float *weights);

/* Half-sample symmetric border (d c b a | a b c d | d c b a), any overshoot. */
static inline int fap_mirror_index(int i, int n) {
  int period = 2 * n;
  int m = i % period;
  if (m < 0)
    m += period;
  return m < n ? m : period - 1 - m;
}

#endif
