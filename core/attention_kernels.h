/* The instruction-set-specific pieces of the fused attention
 * (core/attention_cpu.c drives them): one register-tile kernel that both
 * products run, and the softmax. Plain float pointers cross these calls, never
 * a vector type: the callers are baseline code (clang's OpenMP-outlined
 * functions carry no target attribute). */
#ifndef FAP_ATTENTION_KERNELS_H
#define FAP_ATTENTION_KERNELS_H

/* out[i][0..w) = f_i * sum_{t < n} a[i][t] b[t][0..w) for the m <= tile_rows
 * rows of a, b holding n rows of w floats (64-byte aligned), w the tile's
 * width; f_i = factor[i * factor_step] */
typedef void (*fap_attention_tile_fn)(int m, const float *a, int lda, const float *b, int n,
                                      float *out, int ldo, const float *factor, int factor_step);

typedef struct {
  /* rows of a register tile; the width in floats of a packed key panel and
   * of a value column block where hd is a multiple of it (the tile's
   * columns), and of the narrower value blocks that serve the other hd (a
   * multiple of narrow_panel, which bounds the hd the kernel takes) */
  int tile_rows, panel, narrow_panel;
  fap_attention_tile_fn tile, narrow_tile;
  /* s[0..vis) <- exp(s - max) (core/fastmath.h's polynomial), s[vis..end)
   * <- 0; returns 1 / sum */
  float (*softmax)(float *s, int vis, int end);
} fap_attention_isa;

#if defined(__x86_64__) && defined(__GNUC__)
extern const fap_attention_isa fap_attention_isa_avx2;   /* attention_cpu.c */
extern const fap_attention_isa fap_attention_isa_avx512; /* attention_avx512.c */
#endif

#endif
