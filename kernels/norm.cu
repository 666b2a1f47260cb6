/* LayerNorm and L2 normalisation of rows: one warp per row, f32 statistics. */
#include "cuda_compat.cuh"

/* y = (x - mean) / sqrt(var + 1e-5) w + b, biased variance, two passes over
 * the row (the second from L1) so the variance does not cancel */
template <class T>
__global__ void layernorm_kernel(T *y, size_t ldy, const float *x, size_t ldx, const float *w,
                                 const float *b, int rows, int dim) {
  const int warps = blockDim.x / 32, lane = threadIdx.x % 32;
  for (int r = blockIdx.x * warps + threadIdx.x / 32; r < rows; r += gridDim.x * warps) {
    const float *xr = x + (size_t)r * ldx;
    float sum = 0.0f;
    for (int i = lane; i < dim; i += 32)
      sum += xr[i];
    const float mean = warp_sum(sum) / (float)dim;
    float var = 0.0f;
    for (int i = lane; i < dim; i += 32) {
      const float d = xr[i] - mean;
      var += d * d;
    }
    const float inv = rsqrtf(warp_sum(var) / (float)dim + 1e-5f);
    T *yr = y + (size_t)r * ldy;
    for (int i = lane; i < dim; i += 32)
      yr[i] = num<T>::from((xr[i] - mean) * inv * w[i] + b[i]);
  }
}

static unsigned row_blocks(int rows) {
  const unsigned b = (unsigned)((rows + 7) / 8);
  return b > 8192 ? 8192 : b < 1 ? 1 : b;
}

extern "C" int fap_k_layernorm(fap_stream s, void *y, fap_kdtype yt, size_t ldy, const float *x,
                               size_t ldx, const float *w, const float *b, int rows, int dim) {
  if (rows < 1)
    return 0;
  switch (yt) {
  case FAP_K_F32: {
    auto k = layernorm_kernel<float>;
    FAP_LAUNCH(k, row_blocks(rows), 256, 0, s, (float *)y, ldy, x, ldx, w, b, rows, dim);
    break;
  }
  case FAP_K_F16: {
    auto k = layernorm_kernel<__half>;
    FAP_LAUNCH(k, row_blocks(rows), 256, 0, s, (__half *)y, ldy, x, ldx, w, b, rows, dim);
    break;
  }
  case FAP_K_BF16: {
    auto k = layernorm_kernel<__nv_bfloat16>;
    FAP_LAUNCH(k, row_blocks(rows), 256, 0, s, (__nv_bfloat16 *)y, ldy, x, ldx, w, b, rows, dim);
    break;
  }
  }
  return fap_rt_launch_status("layernorm");
}

__global__ void l2norm_kernel(float *y, size_t ldy, const float *x, size_t ldx, int rows,
                              int dim) {
  const int warps = blockDim.x / 32, lane = threadIdx.x % 32;
  for (int r = blockIdx.x * warps + threadIdx.x / 32; r < rows; r += gridDim.x * warps) {
    const float *xr = x + (size_t)r * ldx;
    float ss = 0.0f;
    for (int i = lane; i < dim; i += 32)
      ss += xr[i] * xr[i];
    const float inv = 1.0f / sqrtf(warp_sum(ss));
    float *yr = y + (size_t)r * ldy;
    for (int i = lane; i < dim; i += 32)
      yr[i] = xr[i] * inv;
  }
}

extern "C" int fap_k_l2norm(fap_stream s, float *y, size_t ldy, const float *x, size_t ldx,
                            int rows, int dim) {
  if (rows < 1)
    return 0;
  FAP_LAUNCH(l2norm_kernel, row_blocks(rows), 256, 0, s, y, ldy, x, ldx, rows, dim);
  return fap_rt_launch_status("l2norm");
}
