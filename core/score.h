/* The scoring constants and FAPrompt's image score (docs/SPEC.md section 4),
 * written once for the host (detector.c) and the device (kernels/scoring.cu,
 * also compiled for the host emulator). */
#ifndef FAP_SCORE_H
#define FAP_SCORE_H

#if defined(__CUDACC__) || defined(FAP_EMU_HPP) /* nvcc, or the emulator (emu.hpp) */
#define FAP_HOST_DEVICE __host__ __device__
#else
#define FAP_HOST_DEVICE
#endif

/* 1 / tau: both families' two-way softmax, tau = 0.07 fixed by the authors
 * (not in the model file; CLIP's logit_scale is unused) */
#define FAP_INV_TAU (1.0f / 0.07f)

/* FAPrompt: score = (q + (2 max A1 + max A2) / 3) / 2. AnomalyCLIP's score is q. */
static inline FAP_HOST_DEVICE float fap_faprompt_score(float max1, float max2, float q) {
  return 0.5f * (q + (2.0f * max1 + max2) / 3.0f);
}

#endif
