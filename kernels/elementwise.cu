/* Elementwise kernels: conversions, activations, residual helpers, the patch
 * layout of the vision encoder. All
 * memory-bound: grid-stride loops, 16-byte vectors where the data allows. */
#include "cuda_compat.cuh"

/* ---- conversion ------------------------------------------------------------------ */

template <class D, class S>
__global__ void convert_kernel(D *dst, size_t ldd, const S *src, size_t lds, size_t rows,
                               size_t cols) {
  const size_t n = rows * cols;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    const size_t r = i / cols, c = i % cols;
    dst[r * ldd + c] = num<D>::from(num<S>::f(src[r * lds + c]));
  }
}

template <class D, class S>
static int convert_as(fap_stream s, void *dst, size_t ldd, const void *src, size_t lds,
                      size_t rows, size_t cols) {
  auto k = convert_kernel<D, S>;
  FAP_LAUNCH(k, fap_blocks(rows * cols, 256), 256, 0, s, (D *)dst, ldd, (const S *)src, lds, rows,
             cols);
  return fap_rt_launch_status("convert");
}

template <class D>
static int convert_to(fap_stream s, void *dst, size_t ldd, const void *src, fap_kdtype st,
                      size_t lds, size_t rows, size_t cols) {
  switch (st) {
  case FAP_K_F32: return convert_as<D, float>(s, dst, ldd, src, lds, rows, cols);
  case FAP_K_F16: return convert_as<D, __half>(s, dst, ldd, src, lds, rows, cols);
  case FAP_K_BF16: return convert_as<D, __nv_bfloat16>(s, dst, ldd, src, lds, rows, cols);
  }
  return FAP_RT_UNSUPPORTED;
}

extern "C" int fap_k_convert(fap_stream s, void *dst, fap_kdtype dt, size_t ldd, const void *src,
                             fap_kdtype st, size_t lds, size_t rows, size_t cols) {
  if (!rows || !cols)
    return 0;
  switch (dt) {
  case FAP_K_F32: return convert_to<float>(s, dst, ldd, src, st, lds, rows, cols);
  case FAP_K_F16: return convert_to<__half>(s, dst, ldd, src, st, lds, rows, cols);
  case FAP_K_BF16: return convert_to<__nv_bfloat16>(s, dst, ldd, src, st, lds, rows, cols);
  }
  return FAP_RT_UNSUPPORTED;
}

/* ---- activations --------------------------------------------------------------------- */

static __device__ __forceinline__ float quickgelu(float x) { return x / (1.0f + __expf(-1.702f * x)); }

template <class T> __global__ void quickgelu_kernel(T *x, size_t n) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    x[i] = num<T>::from(quickgelu(num<T>::f(x[i])));
}

/* 8 16-bit values per thread through one 16-byte load and store */
template <class T> __global__ void quickgelu8_kernel(uint4 *x, size_t n8) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n8;
       i += (size_t)gridDim.x * blockDim.x) {
    uint4 v = x[i];
    T *e = reinterpret_cast<T *>(&v);
#pragma unroll
    for (int j = 0; j < 8; j++)
      e[j] = num<T>::from(quickgelu(num<T>::f(e[j])));
    x[i] = v;
  }
}

extern "C" int fap_k_quickgelu(fap_stream s, void *x, fap_kdtype t, size_t n) {
  if (!n)
    return 0;
  const bool vec = t != FAP_K_F32 && n % 8 == 0 && (uintptr_t)x % 16 == 0;
  switch (t) {
  case FAP_K_F32: {
    auto k = quickgelu_kernel<float>;
    FAP_LAUNCH(k, fap_blocks(n, 256), 256, 0, s, (float *)x, n);
    break;
  }
  case FAP_K_F16:
    if (vec) {
      auto k = quickgelu8_kernel<__half>;
      FAP_LAUNCH(k, fap_blocks(n / 8, 256), 256, 0, s, (uint4 *)x, n / 8);
    } else {
      auto k = quickgelu_kernel<__half>;
      FAP_LAUNCH(k, fap_blocks(n, 256), 256, 0, s, (__half *)x, n);
    }
    break;
  case FAP_K_BF16:
    if (vec) {
      auto k = quickgelu8_kernel<__nv_bfloat16>;
      FAP_LAUNCH(k, fap_blocks(n / 8, 256), 256, 0, s, (uint4 *)x, n / 8);
    } else {
      auto k = quickgelu_kernel<__nv_bfloat16>;
      FAP_LAUNCH(k, fap_blocks(n, 256), 256, 0, s, (__nv_bfloat16 *)x, n);
    }
    break;
  }
  return fap_rt_launch_status("quickgelu");
}

__global__ void relu_kernel(float *x, size_t n) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

extern "C" int fap_k_relu(fap_stream s, float *x, size_t n) {
  if (!n)
    return 0;
  FAP_LAUNCH(relu_kernel, fap_blocks(n, 256), 256, 0, s, x, n);
  return fap_rt_launch_status("relu");
}

__global__ void add_kernel(float *y, const float *x, size_t n) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    y[i] += x[i];
}

extern "C" int fap_k_add(fap_stream s, float *y, const float *x, size_t n) {
  if (!n)
    return 0;
  FAP_LAUNCH(add_kernel, fap_blocks(n, 256), 256, 0, s, y, x, n);
  return fap_rt_launch_status("add");
}

__global__ void add_row_kernel(float *y, int ldy, size_t y_stride, const float *row,
                               size_t row_stride, int rows, int dim, int batch) {
  const size_t per = (size_t)rows * dim, n = per * batch;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    const size_t f = i / per, r = (i % per) / dim, c = i % dim;
    y[f * y_stride + r * ldy + c] += row[f * row_stride + c];
  }
}

extern "C" int fap_k_add_row(fap_stream s, float *y, int ldy, size_t y_stride, const float *row,
                             size_t row_stride, int rows, int dim, int batch) {
  if (rows < 1 || dim < 1 || batch < 1)
    return 0;
  FAP_LAUNCH(add_row_kernel, fap_blocks((size_t)rows * dim * batch, 256), 256, 0, s, y, ldy,
             y_stride, row, row_stride, rows, dim, batch);
  return fap_rt_launch_status("add_row");
}

/* ---- vision layout ---------------------------------------------------------------- */

template <class T>
__global__ void im2col_kernel(T *out, int ld, const float *image, int size, int patch,
                              int batch) {
  const int grid = size / patch, cols = 3 * patch * patch, pp = patch * patch;
  const size_t plane = (size_t)size * size, rows = (size_t)batch * grid * grid;
  const size_t n = rows * ld;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    const size_t r = i / ld;
    const int c = (int)(i % ld);
    float v = 0.0f;
    if (c < cols) {
      const int f = (int)(r / ((size_t)grid * grid)), p = (int)(r % ((size_t)grid * grid));
      const int gy = p / grid, gx = p % grid, ch = c / pp, y = (c % pp) / patch, x = c % patch;
      v = image[(size_t)f * 3 * plane + ch * plane + (size_t)(gy * patch + y) * size +
                gx * patch + x];
    }
    out[i] = num<T>::from(v);
  }
}

extern "C" int fap_k_im2col(fap_stream s, void *out, fap_kdtype t, int ld, const float *image,
                            int size, int patch, int batch) {
  const int grid = size / patch;
  const size_t n = (size_t)batch * grid * grid * ld;
  if (ld < 3 * patch * patch)
    return FAP_RT_UNSUPPORTED;
  switch (t) {
  case FAP_K_F32: {
    auto k = im2col_kernel<float>;
    FAP_LAUNCH(k, fap_blocks(n, 256), 256, 0, s, (float *)out, ld, image, size, patch, batch);
    break;
  }
  case FAP_K_F16: {
    auto k = im2col_kernel<__half>;
    FAP_LAUNCH(k, fap_blocks(n, 256), 256, 0, s, (__half *)out, ld, image, size, patch, batch);
    break;
  }
  case FAP_K_BF16: {
    auto k = im2col_kernel<__nv_bfloat16>;
    FAP_LAUNCH(k, fap_blocks(n, 256), 256, 0, s, (__nv_bfloat16 *)out, ld, image, size, patch,
               batch);
    break;
  }
  }
  return fap_rt_launch_status("im2col");
}


extern "C" size_t fap_kdtype_size(fap_kdtype t) { return t == FAP_K_F32 ? 4 : 2; }
