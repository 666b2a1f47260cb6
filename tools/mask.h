/* Ground-truth masks the way the authors' test code prepares them
 * (AnomalyCLIP / FAPrompt dataset.py + utils.get_transform):
 *   m = np.array(Image.open(p).convert('L')) > 0      -> 0 / 255, mode 'L'
 *   transforms.Resize((S, S))                          -> PIL BILINEAR, 8-bit
 *   transforms.CenterCrop(S), ToTensor()               -> no-op, / 255
 *   gt[gt > 0.5] = 1, gt[gt <= 0.5] = 0                -> resized byte >= 128
 * and their connected regions (skimage.measure.label default connectivity,
 * i.e. 8-connected in 2-D) for the PRO metrics. */
#ifndef FAP_TOOLS_MASK_H
#define FAP_TOOLS_MASK_H

#include <glib.h>
#include <stdint.h>

/* Decodes a mask image into w*h bytes, 255 where PIL's convert('L') gives a
 * value > 0 (L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16), else 0. Alpha
 * is ignored. 16-bit PNGs are refused (gdk-pixbuf keeps only their high byte,
 * which would silently drop small label values). g_free the result. */
uint8_t *mask_load(const char *path, int *width, int *height, GError **error);

/* PIL's Image.resize((S, S), BILINEAR) of an 8-bit image, bit for bit: the
 * triangle filter widened by the scale when shrinking, coefficients in 22-bit
 * fixed point, horizontal pass then vertical, each rounded to 8 bits. */
void mask_resize_bilinear(const uint8_t *src, int width, int height, uint8_t *dst, int out_w,
                          int out_h);

/* src (S*S bytes) -> dst[i] = src[i] >= 128 (the > 0.5 after ToTensor). */
void mask_binarize(const uint8_t *src, uint8_t *dst, size_t n);

/* 8-connected regions of a 0/1 mask: area[i] = size of the region holding
 * pixel i (0 for background). Returns the number of regions. scratch holds at
 * least w*h int32. */
int mask_region_areas(const uint8_t *mask, int w, int h, uint32_t *area, int32_t *scratch);

#endif
