/* Attention.
 *
 * flash_kernel: the vision encoder's attention, FlashAttention-2 style on
 * the tensor cores (mma.sync m16n8k16, f16 or bf16 in, f32 accumulate). One
 * block of 4 warps takes 64 query rows of one head of one frame; each warp
 * owns 16 rows. Key/value tiles of 64 rows stream through shared memory
 * (cp.async, double-buffered) and the softmax runs online (running max and
 * sum per row, exp2 with the scale folded in), so the N x N scores never
 * leave registers. A dual layer computes both paths in the same pass over
 * the tiles: the standard path (q k^T, then v) and the V-V path (v_i v^T,
 * then v), each V tile loaded once and used three times.
 *
 * attention_kernel: everything else (text encoder, any head size), one warp
 * per query row and head, keys read straight from global memory, optionally
 * from an f32 prefix (the cached keys/values of the text prompts' fixed
 * positions) followed by the frame's own rows. */
#include "cuda_compat.cuh"

#define FLASH_BM 64 /* query rows per block */
#define FLASH_BN 64 /* key rows per tile */

template <int HD> static __host__ __device__ constexpr int flash_lds() { return HD + 8; } /* padded row: no bank conflicts */

template <int HD, bool DUAL> static __host__ __device__ constexpr size_t flash_smem_bytes() {
  return (size_t)((DUAL ? 2 : 1) * FLASH_BM + 4 * FLASH_BN) * flash_lds<HD>() * 2;
}

/* rows [row0, row0 + 64) of a [rows, ld] 16-bit matrix -> tile [64][LDS], zero past `rows` */
template <class T, int HD>
static __device__ __forceinline__ void flash_load_tile(T *tile, const T *src, size_t ld, int row0,
                                                       int rows) {
  constexpr int LDS = flash_lds<HD>(), CHUNKS = HD / 8; /* 16-byte chunks per row */
  for (int c = threadIdx.x; c < FLASH_BN * CHUNKS; c += blockDim.x) {
    const int r = c / CHUNKS, col = (c % CHUNKS) * 8;
    const bool valid = row0 + r < rows;
    const T *g = src + (size_t)(valid ? row0 + r : 0) * ld + col;
    cp_async16(tile + r * LDS + col, g, valid);
  }
}

/* S = A B^T for this warp's 16 rows: A rows in a [64][LDS] tile, B = a key
 * tile [64][LDS]; s[nt][i] covers keys nt * 8 .. nt * 8 + 7 */
template <class T, int HD>
static __device__ __forceinline__ void flash_scores(float s[FLASH_BN / 8][4], const T *a_tile,
                                                    const T *b_tile) {
  constexpr int LDS = flash_lds<HD>();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int nt = 0; nt < FLASH_BN / 8; nt++)
    s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < HD / 16; kk++) {
    uint32_t af[4];
    /* A fragment: matrices (rows 0-7 | 8-15) x (cols 0-7 | 8-15) */
    ldmatrix_x4(af, a_tile + (warp * 16 + (lane % 8) + ((lane / 8) % 2) * 8) * LDS + kk * 16 +
                        (lane / 16) * 8);
#pragma unroll
    for (int nt = 0; nt < FLASH_BN / 8; nt += 2) {
      uint32_t bf[4];
      /* B fragments of key tiles nt, nt + 1: matrices (keys) x (dims 0-7 | 8-15) */
      ldmatrix_x4(bf, b_tile + (nt * 8 + (lane / 16) * 8 + (lane % 8)) * LDS + kk * 16 +
                          ((lane / 8) % 2) * 8);
      mma_16816<T>(s[nt], af, bf[0], bf[1]);
      mma_16816<T>(s[nt + 1], af, bf[2], bf[3]);
    }
  }
}

/* Online softmax update of one path with this tile's scores s (raw dot
 * products), then o += p v. m, l: running max (log2 units) and partial sum
 * of the thread's two rows (g and g + 8). */
template <class T, int HD>
static __device__ __forceinline__ void flash_update(float s[FLASH_BN / 8][4],
                                                    float o[HD / 8][4], float m[2], float l[2],
                                                    const T *v_tile, int key0, int rows,
                                                    float scale_log2) {
  constexpr int LDS = flash_lds<HD>();
  const int lane = threadIdx.x % 32;
  float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int nt = 0; nt < FLASH_BN / 8; nt++)
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int key = key0 + nt * 8 + 2 * (lane % 4) + (i & 1);
      s[nt][i] = key < rows ? s[nt][i] * scale_log2 : -INFINITY;
      mx[i / 2] = fmaxf(mx[i / 2], s[nt][i]);
    }
  float alpha[2];
#pragma unroll
  for (int r = 0; r < 2; r++) { /* the four lanes of a quad share a row */
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(FAP_FULL_MASK, mx[r], 1));
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(FAP_FULL_MASK, mx[r], 2));
    const float m_new = fmaxf(m[r], mx[r]); /* finite: every tile has a valid key */
    alpha[r] = exp2f(m[r] - m_new);         /* 0 on the first tile (m = -inf) */
    m[r] = m_new;
    l[r] *= alpha[r];
  }
#pragma unroll
  for (int nt = 0; nt < FLASH_BN / 8; nt++)
#pragma unroll
    for (int i = 0; i < 4; i++) {
      s[nt][i] = exp2f(s[nt][i] - m[i / 2]);
      l[i / 2] += s[nt][i];
    }
#pragma unroll
  for (int dn = 0; dn < HD / 8; dn++) {
    o[dn][0] *= alpha[0];
    o[dn][1] *= alpha[0];
    o[dn][2] *= alpha[1];
    o[dn][3] *= alpha[1];
  }
#pragma unroll
  for (int kk = 0; kk < FLASH_BN / 16; kk++) {
    /* P as the A operand: score tiles 2 kk, 2 kk + 1 are its two 8-column halves */
    uint32_t pa[4];
    pa[0] = num<T>::pack2(s[2 * kk][0], s[2 * kk][1]);
    pa[1] = num<T>::pack2(s[2 * kk][2], s[2 * kk][3]);
    pa[2] = num<T>::pack2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    pa[3] = num<T>::pack2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
    for (int dn = 0; dn < HD / 8; dn += 2) {
      uint32_t vb[4];
      /* V fragments, transposed: matrices (keys 0-7 | 8-15) x (dims dn | dn + 1) */
      ldmatrix_x4_trans(vb, v_tile + (kk * 16 + ((lane / 8) % 2) * 8 + (lane % 8)) * LDS +
                                dn * 8 + (lane / 16) * 8);
      mma_16816<T>(o[dn], pa, vb[0], vb[1]);
      mma_16816<T>(o[dn + 1], pa, vb[2], vb[3]);
    }
  }
}

template <class T, int HD>
static __device__ __forceinline__ void flash_store(T *out, size_t ldo, float o[HD / 8][4],
                                                   float l[2], int row0, int limit) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int r = 0; r < 2; r++) {
    l[r] += __shfl_xor_sync(FAP_FULL_MASK, l[r], 1);
    l[r] += __shfl_xor_sync(FAP_FULL_MASK, l[r], 2);
  }
#pragma unroll
  for (int r = 0; r < 2; r++) {
    const int row = row0 + warp * 16 + lane / 4 + 8 * r;
    if (row >= limit)
      continue;
    const float inv = 1.0f / l[r];
    T *dst = out + (size_t)row * ldo + 2 * (lane % 4);
#pragma unroll
    for (int dn = 0; dn < HD / 8; dn++)
      *reinterpret_cast<uint32_t *>(dst + dn * 8) =
          num<T>::pack2(o[dn][2 * r] * inv, o[dn][2 * r + 1] * inv);
  }
}

template <class T, int HD, bool DUAL>
__global__ void __launch_bounds__(128) flash_kernel(fap_flash_args a, float scale_log2) {
  constexpr int LDS = flash_lds<HD>();
  FAP_DYNAMIC_SMEM(T, smem);
  T *sQ = smem;                                /* [64][LDS] q rows of this block */
  T *sVq = sQ + FLASH_BM * LDS;                /* [64][LDS] v rows of this block (dual) */
  T *sK = sVq + (DUAL ? FLASH_BM * LDS : 0);   /* [2][64][LDS] */
  T *sV = sK + 2 * FLASH_BN * LDS;             /* [2][64][LDS] */

  const int q0 = blockIdx.x * FLASH_BM, h = blockIdx.y, f = blockIdx.z;
  const bool std_path = q0 < a.nq_std;
  const T *q = (const T *)a.q + f * a.batch_stride + h * HD;
  const T *k = (const T *)a.k + f * a.batch_stride + h * HD;
  const T *v = (const T *)a.v + f * a.batch_stride + h * HD;

  if (std_path)
    flash_load_tile<T, HD>(sQ, q, a.ld, q0, a.rows);
  if (DUAL)
    flash_load_tile<T, HD>(sVq, v, a.ld, q0, a.rows);
  if (std_path)
    flash_load_tile<T, HD>(sK, k, a.ld, 0, a.rows);
  flash_load_tile<T, HD>(sV, v, a.ld, 0, a.rows);
  cp_async_commit();

  float o_x[HD / 8][4], o_y[HD / 8][4];
  float m_x[2] = {-INFINITY, -INFINITY}, l_x[2] = {0.0f, 0.0f};
  float m_y[2] = {-INFINITY, -INFINITY}, l_y[2] = {0.0f, 0.0f};
#pragma unroll
  for (int dn = 0; dn < HD / 8; dn++)
#pragma unroll
    for (int i = 0; i < 4; i++)
      o_x[dn][i] = o_y[dn][i] = 0.0f;

  const int tiles = (a.rows + FLASH_BN - 1) / FLASH_BN;
  for (int t = 0; t < tiles; t++) {
    const int buf = t & 1;
    if (t + 1 < tiles) { /* prefetch the next tile into the other buffer */
      if (std_path)
        flash_load_tile<T, HD>(sK + (buf ^ 1) * FLASH_BN * LDS, k, a.ld, (t + 1) * FLASH_BN,
                               a.rows);
      flash_load_tile<T, HD>(sV + (buf ^ 1) * FLASH_BN * LDS, v, a.ld, (t + 1) * FLASH_BN,
                             a.rows);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const T *kt = sK + buf * FLASH_BN * LDS, *vt = sV + buf * FLASH_BN * LDS;
    float s[FLASH_BN / 8][4];
    if (std_path) {
      flash_scores<T, HD>(s, sQ, kt);
      flash_update<T, HD>(s, o_x, m_x, l_x, vt, t * FLASH_BN, a.rows, scale_log2);
    }
    if (DUAL) {
      flash_scores<T, HD>(s, sVq, vt);
      flash_update<T, HD>(s, o_y, m_y, l_y, vt, t * FLASH_BN, a.rows, scale_log2);
    }
    __syncthreads(); /* everyone is done with this buffer before it is refilled */
  }
  if (std_path)
    flash_store<T, HD>((T *)a.out_x + f * a.out_batch_stride + h * HD, a.ldo, o_x, l_x, q0,
                       a.nq_std);
  if (DUAL)
    flash_store<T, HD>((T *)a.out_y + f * a.out_batch_stride + h * HD, a.ldo, o_y, l_y, q0,
                       a.rows);
}

template <class T, int HD, bool DUAL>
static int flash_launch(fap_stream s, const fap_flash_args &a) {
  auto k = flash_kernel<T, HD, DUAL>;
  const size_t smem = flash_smem_bytes<HD, DUAL>();
  const int cover = DUAL ? a.rows : a.nq_std;
  const dim3 grid((unsigned)((cover + FLASH_BM - 1) / FLASH_BM), (unsigned)a.heads,
                  (unsigned)a.batch);
  const float scale_log2 = 1.4426950408889634f / sqrtf((float)HD);
  const fap_flash_args args = a;
  FAP_LAUNCH(k, grid, 128, smem, s, args, scale_log2);
  return fap_rt_launch_status("flash attention");
}

template <class T, int HD> static int flash_dual(fap_stream s, const fap_flash_args &a) {
  return a.out_y ? flash_launch<T, HD, true>(s, a) : flash_launch<T, HD, false>(s, a);
}

template <class T> static int flash_hd(fap_stream s, const fap_flash_args &a) {
  switch (a.hd) {
  case 16: return flash_dual<T, 16>(s, a);
  case 32: return flash_dual<T, 32>(s, a);
  case 64: return flash_dual<T, 64>(s, a);
  case 128: return flash_dual<T, 128>(s, a);
  }
  return FAP_RT_UNSUPPORTED;
}

extern "C" int fap_k_flash_attention(fap_stream s, const fap_flash_args *a) {
  if (a->rows < 1 || a->heads < 1 || a->batch < 1 || a->heads > 65535 || a->batch > 65535)
    return FAP_RT_UNSUPPORTED;
  /* 16-byte rows for cp.async: head offsets and row strides multiples of 8 elements */
  if (a->ld % 8 || a->batch_stride % 8 || (uintptr_t)a->q % 16 || (uintptr_t)a->k % 16 ||
      (uintptr_t)a->v % 16 || a->ldo % 2 || a->out_batch_stride % 2)
    return FAP_RT_UNSUPPORTED;
  if (a->t == FAP_K_F16)
    return flash_hd<__half>(s, *a);
  if (a->t == FAP_K_BF16)
    return flash_hd<__nv_bfloat16>(s, *a);
  return FAP_RT_UNSUPPORTED;
}

/* Kernels that need more than the default 48 KB of dynamic shared memory
 * say so once, before any launch (and before any graph capture). */
template <class T, int HD, bool DUAL> static int flash_attribute() {
#ifdef FAP_CUDA_EMU
  return 0;
#else
  const size_t bytes = flash_smem_bytes<HD, DUAL>();
  if (bytes <= 48 * 1024)
    return 0;
  cudaError_t e = cudaFuncSetAttribute(flash_kernel<T, HD, DUAL>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
  return e == cudaSuccess ? 0 : fap_rt_launch_status("flash attention (shared memory limit)");
#endif
}

template <class T> static int flash_attributes() {
  int e = 0;
  e = e ? e : flash_attribute<T, 16, false>();
  e = e ? e : flash_attribute<T, 16, true>();
  e = e ? e : flash_attribute<T, 32, false>();
  e = e ? e : flash_attribute<T, 32, true>();
  e = e ? e : flash_attribute<T, 64, false>();
  e = e ? e : flash_attribute<T, 64, true>();
  e = e ? e : flash_attribute<T, 128, false>();
  e = e ? e : flash_attribute<T, 128, true>();
  return e;
}

extern "C" int fap_k_setup(void) {
  int e = flash_attributes<__half>();
  return e ? e : flash_attributes<__nv_bfloat16>();
}

/* ---- general attention -------------------------------------------------------------- */

#define ATT_MAX_PER_LANE 8 /* hd <= 256 */

template <class QKV, class O>
__global__ void __launch_bounds__(128) attention_kernel(fap_attn_args a, float scale) {
  const int lane = threadIdx.x % 32;
  const int i = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, h = blockIdx.y, g = blockIdx.z;
  if (i >= a.nq) /* a whole warp leaves together */
    return;
  const int per_lane = (a.hd + 31) / 32;
  const QKV *qi = (const QKV *)a.q + g * a.q_group_stride + (size_t)i * a.ldq + h * a.hd;
  const QKV *kg = (const QKV *)a.k + g * a.kv_group_stride + h * a.hd;
  const QKV *vg = (const QKV *)a.v + g * a.kv_group_stride + h * a.hd;
  const size_t pre = (size_t)(a.pre_groups > 0 ? g % a.pre_groups : 0) * a.pre_group_stride;
  float qv[ATT_MAX_PER_LANE], acc[ATT_MAX_PER_LANE];
#pragma unroll
  for (int u = 0; u < ATT_MAX_PER_LANE; u++) {
    const int d = lane + 32 * u;
    qv[u] = u < per_lane && d < a.hd ? num<QKV>::f(qi[d]) : 0.0f;
    acc[u] = 0.0f;
  }
  int visible = a.nk;
  if (a.q_pos0 >= 0 && a.q_pos0 + i + 1 < visible)
    visible = a.q_pos0 + i + 1;
  float m = -INFINITY, l = 0.0f;
  for (int j = 0; j < visible; j++) {
    const bool from_pre = j < a.n_pre;
    const float *pk = from_pre ? a.pre_k + pre + (size_t)j * a.ld_pre + h * a.hd : nullptr;
    const QKV *kj = from_pre ? nullptr : kg + (size_t)(j - a.n_pre) * a.ldkv;
    float dot = 0.0f;
#pragma unroll
    for (int u = 0; u < ATT_MAX_PER_LANE; u++) {
      const int d = lane + 32 * u;
      if (u < per_lane && d < a.hd)
        dot += qv[u] * (from_pre ? pk[d] : num<QKV>::f(kj[d]));
    }
    const float sc = warp_sum(dot) * scale;
    const float m_new = fmaxf(m, sc), corr = expf(m - m_new), p = expf(sc - m_new);
    l = l * corr + p;
    m = m_new;
    const float *pv = from_pre ? a.pre_v + pre + (size_t)j * a.ld_pre + h * a.hd : nullptr;
    const QKV *vj = from_pre ? nullptr : vg + (size_t)(j - a.n_pre) * a.ldkv;
#pragma unroll
    for (int u = 0; u < ATT_MAX_PER_LANE; u++) {
      const int d = lane + 32 * u;
      if (u < per_lane && d < a.hd)
        acc[u] = acc[u] * corr + p * (from_pre ? pv[d] : num<QKV>::f(vj[d]));
    }
  }
  O *oi = (O *)a.out + g * a.out_group_stride + (size_t)i * a.ldo + h * a.hd;
  const float inv = 1.0f / l;
#pragma unroll
  for (int u = 0; u < ATT_MAX_PER_LANE; u++) {
    const int d = lane + 32 * u;
    if (u < per_lane && d < a.hd)
      oi[d] = num<O>::from(acc[u] * inv);
  }
}

template <class QKV, class O> static int attention_as(fap_stream s, const fap_attn_args &a) {
  auto k = attention_kernel<QKV, O>;
  const dim3 grid((unsigned)((a.nq + 3) / 4), (unsigned)a.heads, (unsigned)a.groups);
  const float scale = 1.0f / sqrtf((float)a.hd);
  const fap_attn_args args = a;
  FAP_LAUNCH(k, grid, 128, 0, s, args, scale);
  return fap_rt_launch_status("attention");
}

template <class QKV> static int attention_out(fap_stream s, const fap_attn_args &a) {
  switch (a.ot) {
  case FAP_K_F32: return attention_as<QKV, float>(s, a);
  case FAP_K_F16: return attention_as<QKV, __half>(s, a);
  case FAP_K_BF16: return attention_as<QKV, __nv_bfloat16>(s, a);
  }
  return FAP_RT_UNSUPPORTED;
}

extern "C" int fap_k_attention(fap_stream s, const fap_attn_args *a) {
  if (a->nq < 1 || a->groups < 1)
    return 0;
  if (a->hd < 1 || a->hd > 32 * ATT_MAX_PER_LANE || a->nk < 1 || a->heads > 65535 ||
      a->groups > 65535)
    return FAP_RT_UNSUPPORTED;
  switch (a->qkv_t) {
  case FAP_K_F32: return attention_out<float>(s, *a);
  case FAP_K_F16: return attention_out<__half>(s, *a);
  case FAP_K_BF16: return attention_out<__nv_bfloat16>(s, *a);
  }
  return FAP_RT_UNSUPPORTED;
}
