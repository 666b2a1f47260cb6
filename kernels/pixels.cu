/* Frames on the device: pre-processing (docs/SPEC.md section 1: any packed or
 * YUV format -> antialiased bicubic resize to S x S -> CLIP normalisation)
 * and the heatmap blend. Both use core/pixel_math.h and the bicubic tables
 * of core/resample.c, with the CPU backend's order of operations, so the
 * results are those of the CPU path bit for bit. */
#include "cuda_compat.cuh"

/* horizontal pass, in 0..255 units: tmp[y, x, c] over the rows of the
 * frame's crop (the tables are the crop's: the taps stay inside it) */
__global__ void resize_rows_kernel(const fap_k_frame *frames, int size) {
  const fap_k_frame *fr = frames + blockIdx.z;
  const int y = blockIdx.y, x = blockIdx.x * blockDim.x + threadIdx.x;
  if (y >= fr->px.crop_h || x >= size)
    return;
  const int first = fr->tx_first[x], count = fr->tx_count[x];
  const float *w = fr->tx_weights + (size_t)x * fr->tx_taps;
  float acc[3] = {0.0f, 0.0f, 0.0f};
  for (int j = 0; j < count; j++) {
    uint8_t rgb[3];
    fap_fetch_rgb(&fr->px, fr->px.crop_x + first + j, fr->px.crop_y + y, rgb);
    for (int c = 0; c < 3; c++)
      acc[c] = FAP_FADD(acc[c], FAP_FMUL(w[j], (float)rgb[c]));
  }
  float *o = fr->tmp + ((size_t)y * size + x) * 3;
  o[0] = acc[0];
  o[1] = acc[1];
  o[2] = acc[2];
}

/* vertical pass, then [0, 1] and (x - mean) / std into image [B, 3, S, S] */
__global__ void resize_cols_kernel(float *image, const fap_k_frame *frames, int size) {
  const fap_k_frame *fr = frames + blockIdx.z;
  const int y = blockIdx.y, x = blockIdx.x * blockDim.x + threadIdx.x;
  if (x >= size)
    return;
  const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
  const float stdv[3] = {0.26862954f, 0.26130258f, 0.27577711f};
  const int first = fr->ty_first[y], count = fr->ty_count[y];
  const float *w = fr->ty_weights + (size_t)y * fr->ty_taps;
  const float *src = fr->tmp + ((size_t)first * size + x) * 3;
  float acc[3] = {0.0f, 0.0f, 0.0f};
  for (int j = 0; j < count; j++, src += (size_t)size * 3)
    for (int c = 0; c < 3; c++)
      acc[c] = FAP_FADD(acc[c], FAP_FMUL(w[j], src[c]));
  const size_t plane = (size_t)size * size;
  float *out = image + (size_t)blockIdx.z * 3 * plane + (size_t)y * size + x;
  for (int c = 0; c < 3; c++)
    out[c * plane] = (acc[c] / 255.0f - mean[c]) / stdv[c];
}

extern "C" int fap_k_preprocess(fap_stream s, float *image, int size, const fap_k_frame *frames,
                                int max_height, int batch) {
  if (batch < 1)
    return 0;
  if (max_height > 65535 || size > 65535)
    return FAP_RT_UNSUPPORTED;
  const unsigned bx = (unsigned)((size + 127) / 128);
  FAP_LAUNCH(resize_rows_kernel, dim3(bx, max_height, batch), 128, 0, s, frames, size);
  int e = fap_rt_launch_status("resize rows");
  if (e)
    return e;
  FAP_LAUNCH(resize_cols_kernel, dim3(bx, size, batch), 128, 0, s, image, frames, size);
  return fap_rt_launch_status("resize columns");
}

/* pixel (x, y) of the crop, counted from its top-left corner */
__global__ void blend_pixels_kernel(const fap_k_frame *fr, const float *map, int size,
                                    const float *params) {
  const int y = blockIdx.y, x = blockIdx.x * blockDim.x + threadIdx.x;
  if (y >= fr->px.crop_h || x >= fr->px.crop_w)
    return;
  fap_blend_pixel(&fr->px, map, size, fr->px.crop_x + x, fr->px.crop_y + y,
                  (const fap_blend_params *)params);
}

/* chroma sample (cx, cy) of those the crop draws (fap_chroma_range) */
__global__ void blend_chroma_kernel(const fap_k_frame *fr, const float *map, int size,
                                    const float *params) {
  if (!fap_format_is_yuv(fr->px.format))
    return;
  int cx0, cx1, cy0, cy1;
  fap_chroma_range(&fr->px, &cx0, &cx1, &cy0, &cy1);
  const int cy = cy0 + (int)blockIdx.y, cx = cx0 + (int)(blockIdx.x * blockDim.x + threadIdx.x);
  if (cy >= cy1 || cx >= cx1)
    return;
  fap_blend_chroma(&fr->px, map, size, cx, cy, (const fap_blend_params *)params);
}

/* One frame after the other, in stream order: crops of one frame (which
 * share its pixels) are drawn in their order, the later over the earlier,
 * as the CPU draws them. max_width, max_height: the largest crop. */
extern "C" int fap_k_blend(fap_stream s, const fap_k_frame *frames, const float *maps, int size,
                           const float *params, int max_width, int max_height, int batch) {
  if (max_height > 65535)
    return FAP_RT_UNSUPPORTED;
  for (int f = 0; f < batch; f++) {
    const float *map = maps + (size_t)f * size * size;
    FAP_LAUNCH(blend_pixels_kernel, dim3((unsigned)((max_width + 127) / 128), max_height, 1),
               128, 0, s, frames + f, map, size, params);
    int e = fap_rt_launch_status("blend pixels");
    if (e)
      return e;
    /* luma first, then chroma: the two passes touch different bytes except in
     * YUY2, where pass 1 writes only Y bytes and pass 2 only U / V bytes */
    FAP_LAUNCH(blend_chroma_kernel,
               dim3((unsigned)((max_width / 2 + 128) / 128), max_height, 1), 128, 0, s,
               frames + f, map, size, params);
    if ((e = fap_rt_launch_status("blend chroma")))
      return e;
  }
  return 0;
}
