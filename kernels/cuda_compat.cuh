/* What every kernel source (kernels/, the .cu files) includes: CUDA (nvcc) or the host emulator
 * (FAP_CUDA_EMU, g++), the launch macro, number traits for f32 / f16 / bf16,
 * warp reductions and the three Ampere+ instructions the attention kernel
 * uses (mma.sync m16n8k16, ldmatrix, cp.async), each with its emulation. */
#ifndef FAP_CUDA_COMPAT_CUH
#define FAP_CUDA_COMPAT_CUH

#ifdef FAP_CUDA_EMU
#include "emu/emu.hpp"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif

#include "fap_kernels.h"

#include <stddef.h>
#include <stdint.h>

#define FAP_FULL_MASK 0xffffffffu

/* FAP_LAUNCH(fn, grid, block, smem, stream, args...): `fn` must be a plain
 * name (alias a template instance first); args are values, never pointers to
 * the launcher's locals (a captured graph or the emulator's recording runs
 * after the launcher returned). */
#ifdef FAP_CUDA_EMU
#define FAP_LAUNCH(fn, grid, block, smem, stream, ...)                                            \
  fap_emu::launch((grid), (block), (smem), [=]() { fn(__VA_ARGS__); })
#define FAP_DYNAMIC_SMEM(type, name) type *name = reinterpret_cast<type *>(fap_emu::dynamic_smem())
#else
#define FAP_LAUNCH(fn, grid, block, smem, stream, ...)                                            \
  fn<<<(grid), (block), (smem), (cudaStream_t)(stream)>>>(__VA_ARGS__)
#define FAP_DYNAMIC_SMEM(type, name)                                                               \
  extern __shared__ __align__(16) unsigned char fap_dynamic_smem[];                               \
  type *name = reinterpret_cast<type *>(fap_dynamic_smem)
#endif

/* grid-stride loops: enough blocks to fill the device, few enough for the emulator */
static inline unsigned fap_blocks(size_t n, unsigned threads) {
  size_t b = (n + threads - 1) / threads;
  return (unsigned)(b < 1 ? 1 : b > 4096 ? 4096 : b);
}

/* ---- number traits ------------------------------------------------------------------- */

template <class T> struct num;

template <> struct num<float> {
  static __device__ __forceinline__ float f(float x) { return x; }
  static __device__ __forceinline__ float from(float x) { return x; }
};

template <> struct num<__half> {
  static constexpr bool bf16 = false;
  static __device__ __forceinline__ float f(__half x) { return __half2float(x); }
  static __device__ __forceinline__ __half from(float x) { return __float2half_rn(x); }
  /* two values in one 32-bit register, lo in the low half (lower column) */
  static __device__ __forceinline__ uint32_t pack2(float lo, float hi) {
#ifdef FAP_CUDA_EMU
    return (uint32_t)fap_emu_f32_to_f16(lo) | ((uint32_t)fap_emu_f32_to_f16(hi) << 16);
#else
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&h);
#endif
  }
};

template <> struct num<__nv_bfloat16> {
  static constexpr bool bf16 = true;
  static __device__ __forceinline__ float f(__nv_bfloat16 x) { return __bfloat162float(x); }
  static __device__ __forceinline__ __nv_bfloat16 from(float x) { return __float2bfloat16_rn(x); }
  static __device__ __forceinline__ uint32_t pack2(float lo, float hi) {
#ifdef FAP_CUDA_EMU
    return (uint32_t)fap_emu_f32_to_bf16(lo) | ((uint32_t)fap_emu_f32_to_bf16(hi) << 16);
#else
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&h);
#endif
  }
};

/* ---- reductions ------------------------------------------------------------------- */

static __device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(FAP_FULL_MASK, v, o);
  return v;
}

static __device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    v = fmaxf(v, __shfl_xor_sync(FAP_FULL_MASK, v, o));
  return v;
}

/* ---- tensor cores and asynchronous copies (sm_80+) ------------------------------------ */

/* d += a b, m16n8k16, row-major A, "col" B, f32 accumulators (PTX ISA fragment layout) */
template <class T>
static __device__ __forceinline__ void mma_16816(float d[4], const uint32_t a[4],
                                                 const uint32_t b0, const uint32_t b1) {
#ifdef FAP_CUDA_EMU
  const uint32_t b[2] = {b0, b1};
  fap_emu::mma_16816(d, a, b, d, num<T>::bf16);
#else
  if (num<T>::bf16)
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

/* four 8x8 b16 matrices; lane l gives the address of row l % 8 of matrix l / 8 */
static __device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void *smem_row) {
#ifdef FAP_CUDA_EMU
  fap_emu::ldmatrix(r, 4, smem_row, false);
#else
  const unsigned addr = (unsigned)__cvta_generic_to_shared(smem_row);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#endif
}

static __device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void *smem_row) {
#ifdef FAP_CUDA_EMU
  fap_emu::ldmatrix(r, 4, smem_row, true);
#else
  const unsigned addr = (unsigned)__cvta_generic_to_shared(smem_row);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#endif
}

/* 16 bytes global -> shared; zero-filled when !valid (gmem is then not read) */
static __device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool valid) {
#ifdef FAP_CUDA_EMU
  if (valid)
    std::memcpy(smem, gmem, 16);
  else
    std::memset(smem, 0, 16);
#else
  const unsigned addr = (unsigned)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(gmem),
               "r"(valid ? 16 : 0));
#endif
}

static __device__ __forceinline__ void cp_async_commit() {
#ifndef FAP_CUDA_EMU
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

template <int N> static __device__ __forceinline__ void cp_async_wait() {
#ifndef FAP_CUDA_EMU
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

#endif
