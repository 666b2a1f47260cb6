/* Frames on the host: validation, the bytes a frame spans, YUV -> RGB for
 * the CPU path, heatmap drawing (the arithmetic itself is in pixel_math.h,
 * shared with the CUDA kernels). */
#ifndef FAP_PIXEL_H
#define FAP_PIXEL_H

#include "fap.h"
#include "pixel_math.h"

/* Checks format, size, strides, planes and crop; `who` prefixes the message. */
fap_status fap_frame_check(const fap_frame *frame, const char *who);
/* FAP_ERR_INVALID_ARGUMENT for a frame in device memory (host code only). */
fap_status fap_frame_check_host(const fap_frame *frame, const char *who);

/* Bytes from the start of plane i (0 = data) to the end of its last sample
 * row; 0 for a plane the format lacks. Planes: 1 packed, 3 I420, 2 NV12. */
size_t fap_frame_plane_bytes(const fap_frame *frame, int plane);
int fap_frame_planes(const fap_frame *frame);

/* 1 when the frame has no crop (all zero); the crop in force: the frame's
 * crop, or the whole frame. */
int fap_crop_is_whole(const fap_frame *frame);
fap_rect fap_frame_crop(const fap_frame *frame);

/* fap_pixels view of a host frame (pointers cast writable: used for blending
 * only when the caller said the frame may be written). */
void fap_pixels_of_frame(const fap_frame *frame, fap_pixels *out);

/* The frame's crop as packed RGB, crop width * 3 bytes per row. */
void fap_frame_to_rgb(const fap_frame *frame, uint8_t *rgb);

fap_status fap_blend_check(const fap_blend *blend);
/* fap_blend_frame (fap.h) as the core calls it: the same checks, messages
 * and pixels, without the public call's bookkeeping (fap_last_error) */
fap_status fap_frame_blend(const fap_frame *frame, const float *map, int map_size,
                           const fap_blend *blend);
/* The per-pixel constants of a checked blend. */
void fap_blend_params_of(const fap_blend *blend, fap_blend_params *out);

#endif
