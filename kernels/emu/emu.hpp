/* A CUDA emulator for the host, just large enough to run the kernels (kernels/, *.cu files)
 * unchanged on a machine without a GPU (CI), so every kernel and launcher is
 * checked against the CPU backend before it ever meets a device.
 *
 * Model: a launch runs its blocks one after another; the threads of a block
 * run concurrently as real host threads (a pool), so __syncthreads,
 * shared memory and warp collectives (shuffles, ldmatrix, mma.sync) keep
 * their semantics, and a missing barrier shows up as a wrong or varying
 * result. __shared__ becomes `static` (one block at a time, so one copy is
 * enough); dynamic shared memory is refilled with 0xFF (NaN) before every
 * block. Warp collectives need all 32 lanes of the warp, as the kernels'
 * full-mask calls require on the device. A thread that returns leaves the
 * block's barriers, as an exited thread does on the device.
 *
 * Work is executed in the calling host thread's order (one stream); between
 * fap_emu_capture_begin/end nothing runs and every operation is recorded
 * for replay instead, so a graph replay is emulated too. */
#ifndef FAP_EMU_HPP
#define FAP_EMU_HPP

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) float2 {
  float x, y;
};

extern thread_local uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

namespace fap_emu {
/* runs body once per thread of every block */
void launch(dim3 grid, dim3 block, size_t smem, std::function<void()> body);
/* enqueues host work (copies): runs now, or is recorded while capturing */
void enqueue(std::function<void()> op);
void capture_begin();
std::function<void()> capture_end(); /* the recorded sequence */
bool capturing();

void syncthreads();
void syncwarp();
int lane();
/* per-warp exchange: each lane writes its slot, all meet, each reads */
unsigned char *warp_slot(int lane);
void warp_barrier();
unsigned char *dynamic_smem();
} // namespace fap_emu

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __shared__ static
#define __syncthreads() fap_emu::syncthreads()
#define __syncwarp(...) fap_emu::syncwarp()

template <class T> inline T fap_emu_shuffle(T v, int src_of_me_fn_lane, bool xor_mode) {
  static_assert(sizeof(T) <= 16, "shuffle of a large type");
  const int me = fap_emu::lane();
  std::memcpy(fap_emu::warp_slot(me), &v, sizeof(T));
  fap_emu::warp_barrier();
  const int src = xor_mode ? (me ^ src_of_me_fn_lane) : src_of_me_fn_lane;
  T out;
  std::memcpy(&out, fap_emu::warp_slot(src & 31), sizeof(T));
  fap_emu::warp_barrier();
  return out;
}
template <class T> inline T __shfl_xor_sync(unsigned, T v, int mask, int = 32) {
  return fap_emu_shuffle(v, mask, true);
}
template <class T> inline T __shfl_sync(unsigned, T v, int src, int = 32) {
  return fap_emu_shuffle(v, src, false);
}

/* ---- math built-ins --------------------------------------------------------------- */
inline float __expf(float x) { return std::exp(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
inline int __float_as_int(float f) {
  int i;
  std::memcpy(&i, &f, 4);
  return i;
}

/* ---- atomics ---------------------------------------------------------------- */
float atomicAdd(float *p, float v);
int atomicAdd(int *p, int v);
unsigned atomicAdd(unsigned *p, unsigned v);
int atomicMax(int *p, int v);

/* ---- 16-bit floating point (IEEE half, bfloat16), round to nearest even -------------- */
struct __half {
  uint16_t x;
};
struct __half2 {
  __half x, y;
};
struct __nv_bfloat16 {
  uint16_t x;
};
struct __nv_bfloat162 {
  __nv_bfloat16 x, y;
};

inline float fap_emu_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else { /* subnormal */
      exp = 127 - 15 + 1;
      while (!(man & 0x400)) {
        man <<= 1;
        exp--;
      }
      bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp - 15 + 127) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t fap_emu_f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000, absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) /* inf or NaN */
    return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
  if (absx >= 0x477ff000u) /* rounds to 65520 or more: inf */
    return (uint16_t)(sign | 0x7c00);
  if (absx <= 0x33000000u) /* at most half the smallest subnormal: zero */
    return (uint16_t)sign;
  const int exp = (int)(absx >> 23) - 127 + 15;
  const uint32_t man = (absx & 0x7fffff) | 0x800000;
  const int shift = exp > 0 ? 13 : 14 - exp; /* subnormal results shift further */
  uint32_t m = man >> shift;
  const uint32_t rem = man & ((1u << shift) - 1), halfway = 1u << (shift - 1);
  if (rem > halfway || (rem == halfway && (m & 1)))
    m++; /* a carry out of the mantissa moves into the exponent, as it should */
  const uint32_t out = exp > 0 ? ((uint32_t)exp << 10) + (m - 0x400) : m;
  return (uint16_t)(sign | out);
}

inline float fap_emu_bf16_to_f32(uint16_t b) {
  uint32_t bits = (uint32_t)b << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t fap_emu_f32_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u)
    return (uint16_t)((x >> 16) | 0x40);
  x += 0x7fff + ((x >> 16) & 1);
  return (uint16_t)(x >> 16);
}

inline __half __float2half_rn(float f) { return __half{fap_emu_f32_to_f16(f)}; }
inline float __half2float(__half h) { return fap_emu_f16_to_f32(h.x); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{fap_emu_f32_to_bf16(f)}; }
inline float __bfloat162float(__nv_bfloat16 b) { return fap_emu_bf16_to_f32(b.x); }

/* ---- tensor-core and async-copy instructions (warp collectives) ------------------------ */
namespace fap_emu {
/* mma.sync.m16n8k16.row.col.f32.{f16,bf16}: d = a b + c; fragments as in the PTX ISA */
void mma_16816(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4], bool bf16);
/* ldmatrix.sync.m8n8.{x1,x2,x4}[.trans].b16: lane l gives the row address for
 * matrix l / 8, row l % 8 (lanes past 8 * count ignored) */
void ldmatrix(uint32_t *r, int count, const void *row_address, bool trans);
} // namespace fap_emu

#endif
