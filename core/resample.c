#include "resample.h"

#include <math.h>
#include <stddef.h>

static double bicubic(double x) {
  const double a = -0.5;
  x = fabs(x);
  if (x < 1.0)
    return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0)
    return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

static double support_of(int in, int out, double *scale, double *filterscale) {
  *scale = (double)in / out;
  *filterscale = *scale < 1.0 ? 1.0 : *scale;
  return 2.0 * *filterscale;
}

int fap_bicubic_taps(int in, int out) {
  double scale, fs;
  double support = support_of(in, out, &scale, &fs);
  return (int)ceil(support) * 2 + 1;
}

void fap_bicubic_fill(fap_bicubic_table *t, int in, int out) {
  double scale, fs;
  double support = support_of(in, out, &scale, &fs);
  int taps = fap_bicubic_taps(in, out);
  t->in = in;
  t->out = out;
  t->taps = taps;
  for (int i = 0; i < out; i++) {
    double center = (i + 0.5) * scale;
    int lo = (int)(center - support + 0.5);
    int hi = (int)(center + support + 0.5);
    if (lo < 0)
      lo = 0;
    if (hi > in)
      hi = in;
    int n = hi - lo;
    if (n > taps)
      n = taps;
    double sum = 0.0;
    for (int j = 0; j < n; j++)
      sum += bicubic((j + lo - center + 0.5) / fs);
    t->first[i] = lo;
    t->count[i] = n;
    for (int j = 0; j < taps; j++) {
      double w = j < n && sum != 0.0 ? bicubic((j + lo - center + 0.5) / fs) / sum : 0.0;
      t->weights[(size_t)i * taps + j] = (float)w;
    }
  }
}

void fap_bilinear_coord(int i, int in, int out, int *i0, int *i1, float *w1) {
  float scale = (float)in / (float)out;
  float x = ((float)i + 0.5f) * scale - 0.5f;
  if (x < 0.0f)
    x = 0.0f;
  int lo = (int)x;
  if (lo > in - 1)
    lo = in - 1;
  *i0 = lo;
  *i1 = lo < in - 1 ? lo + 1 : lo;
  *w1 = x - (float)lo;
}

int fap_gaussian_radius(float sigma) { return sigma > 0 ? (int)(4.0 * sigma + 0.5) : 0; }

void fap_gaussian_fill(float sigma, float *weights) {
  int r = fap_gaussian_radius(sigma);
  if (r == 0) {
    weights[0] = 1.0f;
    return;
  }
  double sum = 0.0;
  for (int i = -r; i <= r; i++)
    sum += exp(-0.5 * (double)i * i / ((double)sigma * sigma));
  for (int i = -r; i <= r; i++)
    weights[i + r] = (float)(exp(-0.5 * (double)i * i / ((double)sigma * sigma)) / sum);
}
