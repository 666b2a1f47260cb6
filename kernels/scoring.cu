/* Per-frame scoring (docs/SPEC.md section 4): two-way probabilities, maxima,
 * top-M, the prior MLP, the final score, the map's upsampling and Gaussian
 * smoothing. Small next to the encoders; written for exactness (the map
 * kernels round as the CPU backend does, term by term). */
#include "cuda_compat.cuh"

#include "score.h"

/* one warp per row; frame f = blockIdx.y */
__global__ void two_way_kernel(float *out, size_t out_stride, const float *x, size_t ldx,
                               size_t x_stride, int rows, int dim, const float *t0,
                               size_t t0_stride, const float *t1, size_t t1_stride,
                               float inv_tau) {
  const int f = blockIdx.y, warps = blockDim.x / 32, lane = threadIdx.x % 32;
  const float *a = t0 + f * t0_stride, *b = t1 + f * t1_stride;
  for (int r = blockIdx.x * warps + threadIdx.x / 32; r < rows; r += gridDim.x * warps) {
    const float *xr = x + f * x_stride + (size_t)r * ldx;
    float s0 = 0.0f, s1 = 0.0f;
    for (int i = lane; i < dim; i += 32) {
      s0 += xr[i] * a[i];
      s1 += xr[i] * b[i];
    }
    s0 = warp_sum(s0);
    s1 = warp_sum(s1);
    if (lane == 0) /* softmax([s0, s1] / tau)[1] */
      out[f * out_stride + r] = 1.0f / (1.0f + expf((s0 - s1) * inv_tau));
  }
}

extern "C" int fap_k_two_way(fap_stream s, float *out, size_t out_stride, const float *x,
                             size_t ldx, size_t x_stride, int rows, int dim, const float *t0,
                             size_t t0_stride, const float *t1, size_t t1_stride, float inv_tau,
                             int batch) {
  if (rows < 1 || batch < 1)
    return 0;
  unsigned bx = (unsigned)((rows + 7) / 8);
  bx = bx > 1024 ? 1024 : bx;
  FAP_LAUNCH(two_way_kernel, dim3(bx, batch), 256, 0, s, out, out_stride, x, ldx, x_stride, rows,
             dim, t0, t0_stride, t1, t1_stride, inv_tau);
  return fap_rt_launch_status("two_way");
}

/* block-wide reduction of (value, index) pairs; `better` decides */
struct arg {
  float v;
  int i;
};

static __device__ __forceinline__ bool better(arg a, arg b) {
  return a.v > b.v || (a.v == b.v && a.i < b.i);
}

static __device__ arg block_best(arg mine, arg *shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    arg other = {__shfl_xor_sync(FAP_FULL_MASK, mine.v, o), __shfl_xor_sync(FAP_FULL_MASK, mine.i, o)};
    if (better(other, mine))
      mine = other;
  }
  if (lane == 0)
    shared[warp] = mine;
  __syncthreads();
  arg best = shared[0];
  for (int w = 1; w < warps; w++)
    if (better(shared[w], best))
      best = shared[w];
  __syncthreads(); /* shared is reused by the next call */
  return best;
}

/* one block per frame */
__global__ void reduce_max_kernel(float *out, size_t out_stride, const float *x, size_t x_stride,
                                  int n) {
  __shared__ arg shared[32];
  const float *xf = x + blockIdx.x * x_stride;
  arg mine = {-INFINITY, 0};
  for (int i = threadIdx.x; i < n; i += blockDim.x)
    if (xf[i] > mine.v) /* NaN never wins, as in the CPU backend */
      mine.v = xf[i];
  arg best = block_best(mine, shared);
  if (threadIdx.x == 0)
    out[blockIdx.x * out_stride] = best.v;
}

extern "C" int fap_k_reduce_max(fap_stream s, float *out, size_t out_stride, const float *x,
                                size_t x_stride, int n, int batch) {
  if (batch < 1)
    return 0;
  FAP_LAUNCH(reduce_max_kernel, batch, 256, 0, s, out, out_stride, x, x_stride, n);
  return fap_rt_launch_status("reduce_max");
}

/* k rounds of a block-wide arg-max, each over the elements that come after
 * the previous pick in the order (value descending, index ascending): the
 * CPU backend's insertion order, ties to the lower index */
__global__ void topk_kernel(int32_t *idx, const float *x, size_t x_stride, int n, int k) {
  __shared__ arg shared[32];
  const float *xf = x + blockIdx.x * x_stride;
  arg prev = {INFINITY, -1};
  for (int r = 0; r < k; r++) {
    arg mine = {-INFINITY, n};
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const arg cand = {xf[i], i};
      const bool after = r == 0 || cand.v < prev.v || (cand.v == prev.v && cand.i > prev.i);
      if (after && better(cand, mine))
        mine = cand;
    }
    prev = block_best(mine, shared);
    if (threadIdx.x == 0)
      idx[(size_t)blockIdx.x * k + r] = prev.i < n ? prev.i : 0;
  }
}

extern "C" int fap_k_topk(fap_stream s, int32_t *idx, const float *x, size_t x_stride, int n,
                          int k, int batch) {
  if (batch < 1 || k < 1)
    return 0;
  FAP_LAUNCH(topk_kernel, batch, 256, 0, s, idx, x, x_stride, n, k);
  return fap_rt_launch_status("topk");
}

__global__ void gather_kernel(float *dst, const float *src, size_t lds, size_t src_stride,
                              const int32_t *idx, int n, int dim, int batch) {
  const size_t total = (size_t)batch * n * dim;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (size_t)gridDim.x * blockDim.x) {
    const size_t c = i % dim, r = (i / dim) % n, f = i / ((size_t)dim * n);
    dst[i] = src[f * src_stride + (size_t)idx[f * n + r] * lds + c];
  }
}

extern "C" int fap_k_gather_rows(fap_stream s, float *dst, const float *src, size_t lds,
                                 size_t src_stride, const int32_t *idx, int n, int dim,
                                 int batch) {
  const size_t total = (size_t)batch * n * dim;
  if (!total)
    return 0;
  FAP_LAUNCH(gather_kernel, fap_blocks(total, 256), 256, 0, s, dst, src, lds, src_stride, idx, n,
             dim, batch);
  return fap_rt_launch_status("gather_rows");
}

/* the CPU backend's order: sum rows in order, then divide */
__global__ void mean_rows_kernel(float *y, const float *x, int rows, int dim, int batch) {
  const size_t total = (size_t)batch * dim;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (size_t)gridDim.x * blockDim.x) {
    const size_t f = i / dim, c = i % dim;
    float acc = 0.0f;
    for (int r = 0; r < rows; r++)
      acc += x[(f * rows + r) * dim + c];
    y[i] = acc / (float)rows;
  }
}

extern "C" int fap_k_mean_rows(fap_stream s, float *y, const float *x, int rows, int dim,
                               int batch) {
  const size_t total = (size_t)batch * dim;
  if (!total)
    return 0;
  FAP_LAUNCH(mean_rows_kernel, fap_blocks(total, 256), 256, 0, s, y, x, rows, dim, batch);
  return fap_rt_launch_status("mean_rows");
}

/* one warp per output column, all rows: each weight row is read once */
template <class W>
__global__ void linear_rows_kernel(float *y, size_t ldy, const float *x, size_t ldx, const W *w,
                                   const float *b, int rows, int in, int out, int accumulate) {
  const int warps = blockDim.x / 32, lane = threadIdx.x % 32;
  for (int o = blockIdx.x * warps + threadIdx.x / 32; o < out; o += gridDim.x * warps) {
    const W *wo = w + (size_t)o * in;
    for (int r = 0; r < rows; r++) {
      const float *xr = x + (size_t)r * ldx;
      float acc = 0.0f;
      for (int i = lane; i < in; i += 32)
        acc += xr[i] * num<W>::f(wo[i]);
      acc = warp_sum(acc);
      if (lane == 0) {
        float *yo = y + (size_t)r * ldy + o;
        *yo = (accumulate ? *yo : 0.0f) + (acc + (b ? b[o] : 0.0f));
      }
    }
  }
}

extern "C" int fap_k_linear_rows(fap_stream s, float *y, size_t ldy, const float *x, size_t ldx,
                                 const void *w, fap_kdtype wt, const float *b, int rows, int in,
                                 int out, int accumulate) {
  if (rows < 1 || out < 1)
    return 0;
  unsigned blocks = (unsigned)((out + 7) / 8);
  blocks = blocks > 4096 ? 4096 : blocks;
  switch (wt) {
  case FAP_K_F32: {
    auto k = linear_rows_kernel<float>;
    FAP_LAUNCH(k, blocks, 256, 0, s, y, ldy, x, ldx, (const float *)w, b, rows, in, out, accumulate);
    break;
  }
  case FAP_K_F16: {
    auto k = linear_rows_kernel<__half>;
    FAP_LAUNCH(k, blocks, 256, 0, s, y, ldy, x, ldx, (const __half *)w, b, rows, in, out, accumulate);
    break;
  }
  case FAP_K_BF16: {
    auto k = linear_rows_kernel<__nv_bfloat16>;
    FAP_LAUNCH(k, blocks, 256, 0, s, y, ldy, x, ldx, (const __nv_bfloat16 *)w, b, rows, in, out,
               accumulate);
    break;
  }
  }
  return fap_rt_launch_status("linear_rows");
}

__global__ void score_kernel(float *scalars, int batch) {
  const int f = blockIdx.x * blockDim.x + threadIdx.x;
  if (f >= batch)
    return;
  float *sc = scalars + 4 * f;
  sc[3] = fap_faprompt_score(sc[0], sc[1], sc[2]);
}

extern "C" int fap_k_score(fap_stream s, float *scalars, int batch) {
  if (batch < 1)
    return 0;
  FAP_LAUNCH(score_kernel, (batch + 127) / 128, 128, 0, s, scalars, batch);
  return fap_rt_launch_status("score");
}

/* ---- the map ------------------------------------------------------------------------ */

__global__ void upsample_mean_kernel(float *out, const float *a, const float *b, int grid,
                                     int size, int batch) {
  const size_t plane = (size_t)size * size, total = plane * batch;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (size_t)gridDim.x * blockDim.x) {
    const size_t f = i / plane;
    const int y = (int)((i % plane) / size), x = (int)(i % size);
    int y0, y1, x0, x1;
    float wy, wx;
    fap_bilinear_tap(y, grid, size, &y0, &y1, &wy);
    fap_bilinear_tap(x, grid, size, &x0, &x1, &wx);
    const float *af = a + f * grid * grid, *bf = b + f * grid * grid;
    const float va = fap_bilinear_mix(af[y0 * grid + x0], af[y0 * grid + x1], af[y1 * grid + x0],
                                      af[y1 * grid + x1], wx, wy);
    const float vb = fap_bilinear_mix(bf[y0 * grid + x0], bf[y0 * grid + x1], bf[y1 * grid + x0],
                                      bf[y1 * grid + x1], wx, wy);
    out[i] = FAP_FMUL(0.5f, FAP_FADD(va, vb));
  }
}

extern "C" int fap_k_upsample_mean(fap_stream s, float *out, const float *a, const float *b,
                                   int grid, int size, int batch) {
  const size_t total = (size_t)size * size * batch;
  if (!total)
    return 0;
  FAP_LAUNCH(upsample_mean_kernel, fap_blocks(total, 256), 256, 0, s, out, a, b, grid, size,
             batch);
  return fap_rt_launch_status("upsample_mean");
}

/* along rows: tmp[y, x] = sum_j k[j] in[y, mirror(x + j)] */
__global__ void blur_rows_kernel(float *tmp, const float *in, int size, const float *kernel,
                                 int radius, int batch) {
  const size_t plane = (size_t)size * size, total = plane * batch;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (size_t)gridDim.x * blockDim.x) {
    const float *row = in + i - (i % size);
    const int x = (int)(i % size);
    float acc = 0.0f;
    for (int j = -radius; j <= radius; j++)
      acc = FAP_FADD(acc, FAP_FMUL(kernel[j + radius], row[fap_mirror(x + j, size)]));
    tmp[i] = acc;
  }
}

/* along columns: out[y, x] = sum_j k[j] tmp[mirror(y + j), x] */
__global__ void blur_cols_kernel(float *out, const float *tmp, int size, const float *kernel,
                                 int radius, int batch) {
  const size_t plane = (size_t)size * size, total = plane * batch;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (size_t)gridDim.x * blockDim.x) {
    const size_t f = i / plane;
    const int y = (int)((i % plane) / size), x = (int)(i % size);
    const float *t = tmp + f * plane + x;
    float acc = 0.0f;
    for (int j = -radius; j <= radius; j++)
      acc = FAP_FADD(acc, FAP_FMUL(kernel[j + radius], t[(size_t)fap_mirror(y + j, size) * size]));
    /* as the CPU backend: rounding must not take the map above 1 (fap.h: [0, 1]) */
    out[i] = fminf(fmaxf(acc, 0.0f), 1.0f);
  }
}

extern "C" int fap_k_gaussian(fap_stream s, float *out, const float *in, float *tmp, int size,
                              const float *kernel, int radius, int batch) {
  const size_t total = (size_t)size * size * batch;
  if (!total)
    return 0;
  FAP_LAUNCH(blur_rows_kernel, fap_blocks(total, 256), 256, 0, s, tmp, in, size, kernel, radius,
             batch);
  int e = fap_rt_launch_status("gaussian rows");
  if (e)
    return e;
  FAP_LAUNCH(blur_cols_kernel, fap_blocks(total, 256), 256, 0, s, out, tmp, size, kernel, radius,
             batch);
  return fap_rt_launch_status("gaussian columns");
}
