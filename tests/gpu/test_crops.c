/* Crops (fap_frame.crop: regions of interest, tiles) on the CPU backend
 * (suite 'unit') or, with --cuda, on the CUDA backend (suite 'emu': the
 * kernels on the host emulator; suite 'gpu' where a device is):
 *   - a crop's score and map equal those of a frame holding a copy of just
 *     its pixels, bit for bit (the crops of a frame in one batch against
 *     their copies in one batch of the same shape): a copy of its bytes in the same format where
 *     that is a valid frame (packed formats, YUV at even offsets), else a
 *     copy of its RGB pixels (the whole frame's chroma association); RGB,
 *     NV12, I420, YUY2, an odd frame size, crops at every edge, odd
 *     offsets and sizes, 1 x 1;
 *   - drawing the crops of one frame in the batch call reads every crop
 *     before drawing any (an overlapping crop scores the same with and
 *     without drawing);
 *   - drawing into crops (the run's blend, fap_blend_frame, fap_overlay,
 *     fap_detector_draw) writes the same bytes everywhere, the later crop
 *     over the earlier where they overlap; inside a crop that is a valid
 *     frame of its own the bytes are those its copy gets; no byte of a pixel
 *     outside every crop changes (padding included);
 *   - CUDA: crops of one host frame go up once (one frame's pixel bytes),
 *     crops of a frame in CUDA memory run and are drawn where it is;
 *   - a crop outside the frame, of zero size or negative is refused with a
 *     message naming it.
 *
 * usage: test_crops [--cuda] TINY_MODEL (--cuda: built with FAP_TEST_CUDA) */
#include "fap.h"

#include "backend.h" /* fap_backend_cuda_available */
#include "pixel.h"
#ifdef FAP_TEST_CUDA
#include "fap_kernels.h" /* fap_rt_*: frames in CUDA memory */
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define W 67 /* odd: the last chroma column and row cover one pixel */
#define H 45

static uint32_t rs = 99;
static uint32_t rnd(void) {
  rs = rs * 1103515245u + 12345u;
  return rs >> 8;
}

typedef struct {
  fap_frame f;
  uint8_t *p[3];
  size_t bytes[3];
} owned;

static int bpp_of(fap_pixel_format fmt) {
  int r, g, b;
  return fap_packed_layout(fmt, &r, &g, &b);
}

/* a frame with padded rows; the planes hold smooth content plus noise (the
 * map gets structure), the padding junk */
static owned new_frame(fap_pixel_format fmt, int w, int h) {
  owned o;
  memset(&o, 0, sizeof o);
  o.f.format = fmt;
  o.f.width = w;
  o.f.height = h;
  const int cw = (w + 1) / 2, ch = (h + 1) / 2;
  if (!fap_format_is_yuv(fmt))
    o.f.stride = (size_t)w * bpp_of(fmt) + 5;
  else if (fmt == FAP_PIXEL_YUY2)
    o.f.stride = 4 * (size_t)cw + 3;
  else
    o.f.stride = (size_t)w + 7;
  o.bytes[0] = o.f.stride * h;
  if (fmt == FAP_PIXEL_NV12 || fmt == FAP_PIXEL_I420) {
    o.f.plane_stride[0] = (fmt == FAP_PIXEL_NV12 ? 2 * (size_t)cw : (size_t)cw) + 3;
    o.bytes[1] = o.f.plane_stride[0] * ch;
    if (fmt == FAP_PIXEL_I420) {
      o.f.plane_stride[1] = (size_t)cw + 1;
      o.bytes[2] = o.f.plane_stride[1] * ch;
    }
  }
  for (int p = 0; p < 3; p++) {
    if (!o.bytes[p])
      continue;
    o.p[p] = malloc(o.bytes[p]);
    for (size_t i = 0; i < o.bytes[p]; i++)
      o.p[p][i] = (uint8_t)(120 + 80 * ((i * 7 / 11 + p * 13) % 29) / 29 + rnd() % 31);
  }
  o.f.data = o.p[0];
  o.f.plane[0] = o.p[1];
  o.f.plane[1] = o.p[2];
  return o;
}

static owned copy_of(const owned *src) {
  owned o = *src;
  for (int p = 0; p < 3; p++)
    if (src->bytes[p]) {
      o.p[p] = malloc(src->bytes[p]);
      memcpy(o.p[p], src->p[p], src->bytes[p]);
    }
  o.f.data = o.p[0];
  o.f.plane[0] = o.p[1];
  o.f.plane[1] = o.p[2];
  return o;
}

static void free_owned(owned *o) {
  for (int p = 0; p < 3; p++)
    free(o->p[p]);
  memset(o, 0, sizeof *o);
}

static size_t differing(const owned *a, const owned *b) {
  size_t n = 0;
  for (int p = 0; p < 3; p++)
    for (size_t i = 0; i < a->bytes[p]; i++)
      n += a->p[p][i] != b->p[p][i];
  return n;
}

static fap_frame with_crop(const owned *o, fap_rect c) {
  fap_frame f = o->f;
  f.crop = c;
  return f;
}

/* A frame holding a copy of just the crop's pixels: its bytes in the same
 * format where that is a valid frame (packed; YUV at an even column, and an
 * even row for 4:2:0), else its RGB pixels as the whole frame converts them.
 * *same_format says which. */
static owned hand_crop(const owned *src, fap_rect c, int *same_format) {
  const fap_frame *f = &src->f;
  const fap_pixel_format fmt = f->format;
  const int yuv = fap_format_is_yuv(fmt);
  *same_format = !yuv || ((c.x & 1) == 0 && (fmt == FAP_PIXEL_YUY2 || (c.y & 1) == 0));
  owned o;
  if (!*same_format) {
    uint8_t *rgb = malloc((size_t)f->width * f->height * 3);
    fap_frame whole = *f;
    whole.crop = (fap_rect){0, 0, 0, 0};
    fap_frame_to_rgb(&whole, rgb);
    o = new_frame(FAP_PIXEL_RGB, c.width, c.height);
    for (int y = 0; y < c.height; y++)
      memcpy(o.p[0] + (size_t)y * o.f.stride, rgb + ((size_t)(c.y + y) * f->width + c.x) * 3,
             (size_t)c.width * 3);
    free(rgb);
    return o;
  }
  o = new_frame(fmt, c.width, c.height);
  if (!yuv) {
    const size_t bpp = (size_t)bpp_of(fmt);
    for (int y = 0; y < c.height; y++)
      memcpy(o.p[0] + (size_t)y * o.f.stride, src->p[0] + (size_t)(c.y + y) * f->stride + c.x * bpp,
             (size_t)c.width * bpp);
    return o;
  }
  const int ccw = (c.width + 1) / 2, cx0 = c.x / 2;
  if (fmt == FAP_PIXEL_YUY2) {
    for (int y = 0; y < c.height; y++)
      memcpy(o.p[0] + (size_t)y * o.f.stride, src->p[0] + (size_t)(c.y + y) * f->stride + 4 * cx0,
             4 * (size_t)ccw);
    return o;
  }
  for (int y = 0; y < c.height; y++)
    memcpy(o.p[0] + (size_t)y * o.f.stride, src->p[0] + (size_t)(c.y + y) * f->stride + c.x,
           (size_t)c.width);
  const int cch = (c.height + 1) / 2, cy0 = c.y / 2;
  const size_t per = fmt == FAP_PIXEL_NV12 ? 2 : 1;
  for (int p = 1; p <= (fmt == FAP_PIXEL_I420 ? 2 : 1); p++)
    for (int y = 0; y < cch; y++)
      memcpy(o.p[p] + (size_t)y * o.f.plane_stride[p - 1],
             src->p[p] + (size_t)(cy0 + y) * f->plane_stride[p - 1] + per * cx0, per * ccw);
  return o;
}

static int inside_any(int x, int y, const fap_rect *c, int n) {
  for (int i = 0; i < n; i++)
    if (x >= c[i].x && x < c[i].x + c[i].width && y >= c[i].y && y < c[i].y + c[i].height)
      return 1;
  return 0;
}

/* every frame pixel of the block [x0, x0 + nx) x [y0, y0 + ny) (clipped to
 * the frame) inside some crop; an empty block (padding) never is */
static int block_inside(const fap_frame *f, int x0, int nx, int y0, int ny, const fap_rect *c,
                        int n) {
  int any = 0;
  for (int y = y0; y < y0 + ny && y < f->height; y++)
    for (int x = x0; x < x0 + nx && x < f->width; x++) {
      if (!inside_any(x, y, c, n))
        return 0;
      any = 1;
    }
  return any;
}

/* bytes that changed from `orig` although some pixel they belong to lies
 * outside every crop (padding belongs to none) */
static size_t changed_outside(const owned *orig, const owned *now, const fap_rect *c, int n) {
  const fap_frame *f = &orig->f;
  const int bpp = fap_format_is_yuv(f->format) ? 0 : bpp_of(f->format);
  size_t bad = 0;
  for (int p = 0; p < 3; p++) {
    if (!orig->bytes[p])
      continue;
    const size_t stride = p == 0 ? f->stride : f->plane_stride[p - 1];
    for (size_t i = 0; i < orig->bytes[p]; i++) {
      if (orig->p[p][i] == now->p[p][i])
        continue;
      const int row = (int)(i / stride), b = (int)(i % stride);
      int ok;
      if (p > 0) { /* a 4:2:0 chroma sample */
        const int cx = f->format == FAP_PIXEL_NV12 ? b / 2 : b;
        ok = 2 * cx < f->width && block_inside(f, 2 * cx, 2, 2 * row, 2, c, n);
      } else if (bpp) {
        ok = b / bpp < f->width && block_inside(f, b / bpp, 1, row, 1, c, n);
      } else if (f->format == FAP_PIXEL_YUY2) {
        const int pair = b / 4, k = b % 4;
        ok = k == 0   ? block_inside(f, 2 * pair, 1, row, 1, c, n)
             : k == 2 ? 2 * pair + 1 < f->width && block_inside(f, 2 * pair + 1, 1, row, 1, c, n)
                      : block_inside(f, 2 * pair, 2, row, 1, c, n);
      } else {
        ok = b < f->width && block_inside(f, b, 1, row, 1, c, n);
      }
      bad += !ok;
    }
  }
  return bad;
}

/* Inside crop c of a drawn frame, the bytes its same-format copy got when
 * drawn with the same map: every pixel's luma / RGB, and the chroma samples
 * the crop draws (fap_chroma_range); returns the differing bytes. */
static size_t differs_from_drawn_copy(const owned *frame, fap_rect c, const owned *copy) {
  const fap_frame *f = &frame->f;
  size_t diff = 0;
  if (!fap_format_is_yuv(f->format)) {
    const size_t bpp = (size_t)bpp_of(f->format);
    for (int y = 0; y < c.height; y++)
      diff += memcmp(frame->p[0] + (size_t)(c.y + y) * f->stride + c.x * bpp,
                     copy->p[0] + (size_t)y * copy->f.stride, c.width * bpp) != 0;
    return diff;
  }
  fap_pixels px;
  fap_frame cf = with_crop(frame, c);
  fap_pixels_of_frame(&cf, &px);
  int cx0, cx1, cy0, cy1;
  fap_chroma_range(&px, &cx0, &cx1, &cy0, &cy1);
  fap_pixels cp;
  fap_pixels_of_frame(&copy->f, &cp);
  for (int y = 0; y < c.height; y++)
    for (int x = 0; x < c.width; x++) {
      uint8_t *a, *au, *av, *b, *bu, *bv;
      fap_yuv_addresses(&px, c.x + x, c.y + y, &a, &au, &av);
      fap_yuv_addresses(&cp, x, y, &b, &bu, &bv);
      diff += *a != *b;
      const int cx = (c.x + x) >> 1, cy = f->format == FAP_PIXEL_YUY2 ? c.y + y : (c.y + y) >> 1;
      if (cx >= cx0 && cx < cx1 && cy >= cy0 && cy < cy1)
        diff += (*au != *bu) + (*av != *bv);
    }
  return diff;
}

static int same_result(const fap_result *a, const fap_result *b) {
  return a->score == b->score && a->map_size == b->map_size &&
         !memcmp(a->map, b->map, (size_t)a->map_size * a->map_size * sizeof(float));
}

static fap_detector *new_detector(fap_model *m, int cuda, int batch) {
  fap_detector_options o;
  fap_detector_options_init(&o);
  o.backend = cuda ? FAP_BACKEND_CUDA : FAP_BACKEND_CPU;
  o.threads = 2;
  o.batch = batch;
  o.image_size = 3 * fap_model_config(m)->patch_size; /* 3 x 3 patches: fast under valgrind */
  fap_detector *d = NULL;
  CHECK(fap_detector_new(m, &o, &d) == FAP_OK, "detector: %s", last_error);
  return d;
}

static void expect_refused(fap_detector *d, const fap_frame *f, const char *phrase,
                           const char *what) {
  fap_result r;
  n_errors = 0;
  last_error[0] = '\0';
  const fap_status s = fap_detector_run(d, f, &r);
  CHECK(s == FAP_ERR_INVALID_ARGUMENT && strstr(last_error, phrase),
        "%s: status %s, message \"%s\" (wants \"%s\")", what, fap_status_string(s), last_error,
        phrase);
}

static void validation(fap_detector *d) {
  owned o = new_frame(FAP_PIXEL_NV12, W, H);
  fap_frame f = with_crop(&o, (fap_rect){60, 0, 10, 5});
  expect_refused(d, &f, "crop x=60 y=0 width=10 height=5", "crop past the right edge");
  CHECK(strstr(last_error, "67x45") != NULL, "the message names the frame: %s", last_error);
  f = with_crop(&o, (fap_rect){3, 4, 0, 0});
  expect_refused(d, &f, "crop x=3 y=4 width=0 height=0", "zero size at an offset");
  f = with_crop(&o, (fap_rect){0, 0, 5, 0});
  expect_refused(d, &f, "width=5 height=0", "zero height");
  f = with_crop(&o, (fap_rect){-1, 0, 5, 5});
  expect_refused(d, &f, "crop x=-1", "negative x");
  f = with_crop(&o, (fap_rect){0, 40, 67, 6});
  expect_refused(d, &f, "height=6", "past the bottom edge");
  fap_blend blend;
  fap_blend_init(&blend);
  const float map[4] = {1, 1, 1, 1};
  n_errors = 0;
  CHECK(fap_blend_frame(&f, map, 2, &blend) == FAP_ERR_INVALID_ARGUMENT &&
            strstr(last_error, "crop x=0 y=40"),
        "fap_blend_frame with a bad crop: %s", last_error);
  free_owned(&o);
}

/* crops at the corners and edges, odd offsets and sizes, 1 x 1 */
static const fap_rect crops[] = {
    {0, 0, W, H},   /* the whole frame, said explicitly */
    {0, 0, 17, 13}, /* top-left corner */
    {46, 30, 21, 15}, /* bottom-right corner: reaches both edges */
    {9, 5, 24, 18},   /* odd offsets */
    {1, 30, 66, 15},  /* odd x to the right edge, bottom edge */
    {20, 12, 1, 1},
};
#define N_CROPS ((int)(sizeof crops / sizeof crops[0]))

static void scores(fap_detector *d, int cuda, fap_pixel_format fmt) {
  owned o = new_frame(fmt, W, H);
  owned hand[N_CROPS];
  fap_frame framed[N_CROPS], copies[N_CROPS];
  int same[N_CROPS];
  for (int i = 0; i < N_CROPS; i++) {
    hand[i] = hand_crop(&o, crops[i], &same[i]);
    framed[i] = with_crop(&o, crops[i]);
    copies[i] = hand[i].f;
  }
  /* all in one batch, against the copies in one batch of the same shape */
  fap_result rb[N_CROPS], rc[N_CROPS];
  CHECK(fap_detector_run_batch(d, framed, N_CROPS, NULL, rb) == FAP_OK, "batch: %s", last_error);
  const int s = fap_detector_image_size(d);
  float *maps = malloc((size_t)N_CROPS * s * s * sizeof(float));
  for (int i = 0; i < N_CROPS; i++) {
    memcpy(maps + (size_t)i * s * s, rb[i].map, (size_t)s * s * sizeof(float));
    rb[i].map = maps + (size_t)i * s * s;
  }
  CHECK(fap_detector_run_batch(d, copies, N_CROPS, NULL, rc) == FAP_OK, "batch: %s", last_error);
  for (int i = 0; i < N_CROPS; i++)
    CHECK(same_result(&rb[i], &rc[i]), "%s: crop %d of a batch differs from its copy's result",
          fap_pixel_format_name(fmt), i);
  if (cuda) { /* the crops of one host frame went up once */
    size_t planes = 0;
    for (int p = 0; p < 3; p++)
      planes += fap_frame_plane_bytes(&o.f, p);
    size_t up = 0;
    for (int i = 1; i < N_CROPS; i++)
      up += rb[i].frame_bytes_to_device;
    CHECK(rb[0].frame_bytes_to_device == planes && up == 0,
          "%s: %zu + %zu pixel bytes up for the crops of one %zu-byte frame",
          fap_pixel_format_name(fmt), rb[0].frame_bytes_to_device, up, planes);
  }
  printf("%s %dx%d: %d crops score as their copies\n",
         fap_pixel_format_name(fmt), W, H, N_CROPS);
  free(maps);
  for (int i = 0; i < N_CROPS; i++)
    free_owned(&hand[i]);
  free_owned(&o);
}

/* non-overlapping crops at odd and even offsets, then one overlapping the third */
static const fap_rect draw_crops[] = {
    {0, 0, 17, 13}, {46, 30, 21, 15}, {21, 15, 24, 12}, {26, 20, 10, 14}};
#define N_DRAW ((int)(sizeof draw_crops / sizeof draw_crops[0]))

static void drawing(fap_detector *d, int cuda, fap_pixel_format fmt) {
  const fap_blend blend = {0.7f, 0.02f, 0.0f, 1.0f};
  owned o = new_frame(fmt, W, H);
  owned drawn = copy_of(&o), expect = copy_of(&o);
  fap_frame framed[N_DRAW];
  for (int i = 0; i < N_DRAW; i++)
    framed[i] = with_crop(&drawn, draw_crops[i]);
  fap_result plain[N_DRAW], rb[N_DRAW];
  fap_frame orig_framed[N_DRAW];
  for (int i = 0; i < N_DRAW; i++)
    orig_framed[i] = with_crop(&o, draw_crops[i]);
  CHECK(fap_detector_run_batch(d, orig_framed, N_DRAW, NULL, plain) == FAP_OK, "batch: %s",
        last_error);
  float plain_score[N_DRAW];
  for (int i = 0; i < N_DRAW; i++)
    plain_score[i] = plain[i].score;
  CHECK(fap_detector_run_batch(d, framed, N_DRAW, &blend, rb) == FAP_OK, "blend batch: %s",
        last_error);
  /* every crop read before any was drawn: the overlapping one too */
  for (int i = 0; i < N_DRAW; i++)
    CHECK(rb[i].score == plain_score[i], "%s crop %d scores %.9g when drawn, %.9g when not",
          fap_pixel_format_name(fmt), i, rb[i].score, plain_score[i]);
  /* the host reference, crop after crop */
  for (int i = 0; i < N_DRAW; i++) {
    fap_frame f = with_crop(&expect, draw_crops[i]);
    CHECK(fap_blend_frame(&f, rb[i].map, rb[i].map_size, &blend) == FAP_OK, "blend: %s",
          last_error);
  }
  CHECK(differing(&o, &expect) > 0, "%s: nothing was drawn", fap_pixel_format_name(fmt));
  CHECK(differing(&drawn, &expect) == 0, "%s: the run's drawing differs from fap_blend_frame "
        "in %zu bytes", fap_pixel_format_name(fmt), differing(&drawn, &expect));
  CHECK(changed_outside(&o, &expect, draw_crops, N_DRAW) == 0,
        "%s: %zu bytes of pixels outside every crop changed", fap_pixel_format_name(fmt),
        changed_outside(&o, &expect, draw_crops, N_DRAW));
  /* the first three do not overlap: inside each, what its copy gets */
  owned three = copy_of(&o);
  for (int i = 0; i < 3; i++) {
    fap_frame f = with_crop(&three, draw_crops[i]);
    fap_blend_frame(&f, rb[i].map, rb[i].map_size, &blend);
  }
  for (int i = 0; i < 3; i++) {
    int same;
    owned copy = hand_crop(&o, draw_crops[i], &same);
    if (same) {
      CHECK(fap_blend_frame(&copy.f, rb[i].map, rb[i].map_size, &blend) == FAP_OK, "blend");
      const size_t diff = differs_from_drawn_copy(&three, draw_crops[i], &copy);
      CHECK(diff == 0, "%s crop %d: %zu bytes differ from its drawn copy",
            fap_pixel_format_name(fmt), i, diff);
    }
    free_owned(&copy);
  }
  free_owned(&three);
  /* fap_overlay (tables made once, then reused) and fap_detector_draw */
  fap_overlay *ov[N_DRAW];
  owned by_overlay = copy_of(&o), again = copy_of(&o), by_draw = copy_of(&o);
  for (int i = 0; i < N_DRAW; i++) {
    CHECK(fap_overlay_new(&ov[i]) == FAP_OK, "overlay");
    fap_frame f = with_crop(&by_overlay, draw_crops[i]);
    CHECK(fap_overlay_draw(ov[i], &f, rb[i].map, rb[i].map_size, 7, &blend) == FAP_OK,
          "overlay: %s", last_error);
    f = with_crop(&again, draw_crops[i]);
    CHECK(fap_overlay_draw(ov[i], &f, rb[i].map, rb[i].map_size, 7, &blend) == FAP_OK,
          "overlay again: %s", last_error);
    f = with_crop(&by_draw, draw_crops[i]);
    size_t moved = 0;
    CHECK(fap_detector_draw(d, &f, rb[i].map, rb[i].map_size, &blend, &moved) == FAP_OK,
          "fap_detector_draw: %s", last_error);
  }
  CHECK(differing(&by_overlay, &expect) == 0 && differing(&again, &expect) == 0,
        "%s: fap_overlay differs from fap_blend_frame (%zu, reused %zu bytes)",
        fap_pixel_format_name(fmt), differing(&by_overlay, &expect), differing(&again, &expect));
  CHECK(differing(&by_draw, &expect) == 0,
        "%s: fap_detector_draw differs from fap_blend_frame in %zu bytes",
        fap_pixel_format_name(fmt), differing(&by_draw, &expect));
  for (int i = 0; i < N_DRAW; i++)
    fap_overlay_free(ov[i]);

#ifdef FAP_TEST_CUDA
  if (cuda) { /* the same frame in CUDA memory: run and drawn where it is */
    void *dev[3] = {NULL, NULL, NULL};
    fap_frame df = o.f;
    for (int p = 0; p < 3; p++)
      if (o.bytes[p]) {
        CHECK(fap_rt_malloc(&dev[p], o.bytes[p]) == 0, "device plane");
        fap_rt_h2d(dev[p], o.p[p], o.bytes[p], NULL);
      }
    fap_rt_stream_sync(NULL);
    df.data = dev[0];
    df.plane[0] = dev[1];
    df.plane[1] = dev[2];
    df.memory = FAP_MEMORY_CUDA;
    fap_frame dframes[N_DRAW];
    for (int i = 0; i < N_DRAW; i++) {
      dframes[i] = df;
      dframes[i].crop = draw_crops[i];
    }
    fap_result rd[N_DRAW];
    CHECK(fap_detector_run_batch(d, dframes, N_DRAW, &blend, rd) == FAP_OK, "device crops: %s",
          last_error);
    for (int i = 0; i < N_DRAW; i++)
      CHECK(rd[i].score == plain_score[i] && rd[i].frame_bytes_to_device == 0,
            "%s device crop %d: score %.9g (host %.9g), %zu bytes up",
            fap_pixel_format_name(fmt), i, rd[i].score, plain_score[i],
            rd[i].frame_bytes_to_device);
    owned back = copy_of(&o);
    for (int p = 0; p < 3; p++)
      if (o.bytes[p])
        fap_rt_d2h(back.p[p], dev[p], o.bytes[p], NULL);
    fap_rt_stream_sync(NULL);
    CHECK(differing(&back, &expect) == 0, "%s: crops drawn in CUDA memory differ in %zu bytes",
          fap_pixel_format_name(fmt), differing(&back, &expect));
    free_owned(&back);
    for (int p = 0; p < 3; p++)
      fap_rt_free(dev[p]);
  }
#endif
  printf("%s: %d crops drawn alike by the run, fap_blend_frame, fap_overlay and "
         "fap_detector_draw; nothing outside them changed\n",
         fap_pixel_format_name(fmt), N_DRAW);
  free_owned(&by_overlay);
  free_owned(&again);
  free_owned(&by_draw);
  free_owned(&drawn);
  free_owned(&expect);
  free_owned(&o);
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  const int cuda = argc == 3 && strcmp(argv[1], "--cuda") == 0;
  if (argc != 2 + cuda) {
    printf("usage: %s [--cuda] TINY_MODEL\n", argv[0]);
    return 2;
  }
  fap_set_log_callback(capture, NULL);
  if (cuda && !fap_backend_cuda_available()) {
    printf("no usable CUDA device: skipped\n");
    return 77;
  }
  fap_model *m = NULL;
  if (fap_model_load(argv[1 + cuda], &m) != FAP_OK) {
    printf("cannot load %s: %s\n", argv[1 + cuda], last_error);
    return 1;
  }
  fap_detector *d = new_detector(m, cuda, N_CROPS);
  if (d) {
    validation(d);
    const fap_pixel_format fmts[] = {FAP_PIXEL_RGB, FAP_PIXEL_NV12, FAP_PIXEL_I420,
                                     FAP_PIXEL_YUY2};
    for (size_t i = 0; i < sizeof fmts / sizeof fmts[0]; i++) {
      scores(d, cuda, fmts[i]);
      drawing(d, cuda, fmts[i]);
    }
  }
  fap_detector_free(d);
  fap_model_free(m);
  printf("%s: %d failure%s\n", failures ? "FAILED" : "passed", failures, failures == 1 ? "" : "s");
  return failures ? 1 : 0;
}
