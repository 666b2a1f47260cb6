/* Frames on their way to the CUDA backend: pinned staging and device
 * buffers laid out [results | frame planes ...], the bicubic tables of each
 * frame's size (core/resample.c) and the descriptors the pre-processing and
 * blend kernels read. Rebuilt only when the frame geometry changes, grown
 * only when it grows: a steady stream allocates nothing. */
#include "cuda_frameio.h"

#include "pixel.h"
#include "resample.h"

#include <stdlib.h>
#include <string.h>

#define ALIGN256(x) (((x) + 255) & ~(size_t)255)

/* the whole frame's layout, crop aside */
static int same_layout(const fap_frame *a, const fap_frame *b) {
  return a->memory == b->memory && a->format == b->format && a->width == b->width && a->height == b->height &&
         a->stride == b->stride && a->plane_stride[0] == b->plane_stride[0] &&
         a->plane_stride[1] == b->plane_stride[1] && a->matrix == b->matrix &&
         (a->full_range != 0) == (b->full_range != 0);
}

static int same_geometry(const fap_frame *a, const fap_frame *b) {
  const fap_rect ca = fap_frame_crop(a), cb = fap_frame_crop(b);
  return same_layout(a, b) && ca.x == cb.x && ca.y == cb.y && ca.width == cb.width &&
         ca.height == cb.height;
}

/* The first frame before i whose planes are frame i's (crops of one host
 * frame): its staging is frame i's too, so the pixels go up once and the
 * crops are drawn into one copy that comes back once. i when none. */
static int shared_with(const fap_frame *frames, int i) {
  const fap_frame *f = &frames[i];
  if (f->memory != FAP_MEMORY_HOST)
    return i;
  for (int j = 0; j < i; j++) {
    const fap_frame *g = &frames[j];
    if (g->data == f->data && g->plane[0] == f->plane[0] && g->plane[1] == f->plane[1] &&
        same_layout(g, f))
      return j;
  }
  return i;
}

static int reserve_host(void **buf, size_t *capacity, size_t bytes) {
  if (bytes <= *capacity)
    return 0;
  fap_rt_host_free(*buf);
  *buf = NULL;
  *capacity = 0;
  int rc = fap_rt_host_alloc(buf, bytes);
  if (!rc)
    *capacity = bytes;
  return rc;
}

int fap_cuda_grow(void **buf, size_t *capacity, size_t bytes) {
  if (bytes <= *capacity)
    return 0;
  fap_rt_free(*buf);
  *buf = NULL;
  *capacity = 0;
  int rc = fap_rt_malloc(buf, bytes);
  if (!rc)
    *capacity = bytes;
  return rc;
}

void fap_cuda_frameio_free(cuda_frameio *io) {
  fap_rt_free(io->io_dev);
  fap_rt_host_free(io->io_host);
  fap_rt_free(io->tables);
  fap_rt_free(io->tmp);
  free(io->slots);
  memset(io, 0, sizeof *io);
}

int fap_cuda_frameio_prepare(cuda_frameio *io, const fap_frame *frames, int count, int size,
                             size_t results_bytes, fap_stream stream, cuda_failure *fail) {
  int same = io->count == count && io->size == size && io->results_bytes == results_bytes;
  for (int i = 0; same && i < count; i++)
    same = same_geometry(&io->slots[i].geom, &frames[i]) &&
           io->slots[i].shared == shared_with(frames, i);
  if (same)
    return 0;
  io->count = 0; /* invalid until complete */
  if (count > io->capacity) {
    cuda_frame_slot *slots = realloc(io->slots, (size_t)count * sizeof *slots);
    if (slots)
      io->slots = slots;
    if (!slots) {
      *fail = (cuda_failure){FAP_RT_ENOMEM, "frame descriptors"};
      return -1;
    }
    io->capacity = count;
  }
  /* layout of io: [results | descriptors | planes of frame 0 | frame 1 ...],
   * 256-byte aligned; frames in device memory have no planes here */
  size_t at = ALIGN256(results_bytes), tables_bytes = 0, tmp_bytes = 0;
  io->frames_start = at;
  at += ALIGN256((size_t)count * sizeof(fap_k_frame));
  io->max_width = io->max_height = 0;
  for (int i = 0; i < count; i++) {
    const fap_frame *f = &frames[i];
    const fap_rect crop = fap_frame_crop(f);
    cuda_frame_slot *slot = &io->slots[i];
    slot->geom = *f;
    slot->shared = shared_with(frames, i);
    for (int p = 0; p < 3; p++) {
      const int own = f->memory == FAP_MEMORY_HOST && slot->shared == i;
      slot->bytes[p] = own ? fap_frame_plane_bytes(f, p) : 0;
      slot->offset[p] = own ? at : io->slots[slot->shared].offset[p];
      at += ALIGN256(slot->bytes[p]);
    }
    const size_t tx = (size_t)size * fap_bicubic_taps(crop.width, size);
    const size_t ty = (size_t)size * fap_bicubic_taps(crop.height, size);
    tables_bytes += ALIGN256((4 * (size_t)size + tx + ty) * 4);
    tmp_bytes += (size_t)crop.height * size * 3 * sizeof(float);
    io->max_width = crop.width > io->max_width ? crop.width : io->max_width;
    io->max_height = crop.height > io->max_height ? crop.height : io->max_height;
  }
  io->frames_bytes = at - io->frames_start;
  int rc = fap_cuda_grow(&io->io_dev, &io->io_capacity, at);
  if (!rc)
    rc = reserve_host(&io->io_host, &io->io_capacity_host, at);
  if (!rc)
    rc = fap_cuda_grow(&io->tables, &io->tables_capacity, tables_bytes);
  if (!rc)
    rc = fap_cuda_grow(&io->tmp, &io->tmp_capacity, tmp_bytes);
  char *tables_host = rc ? NULL : malloc(tables_bytes);
  if (!rc && !tables_host)
    rc = FAP_RT_ENOMEM;
  if (rc) {
    free(tables_host);
    *fail = (cuda_failure){rc, "frame buffers"};
    return -1;
  }
  /* bicubic tables (core/resample.c) of every frame, and its descriptor */
  io->desc_host = (fap_k_frame *)((char *)io->io_host + io->frames_start);
  io->desc_dev = (fap_k_frame *)((char *)io->io_dev + io->frames_start);
  size_t toff = 0, tmp_off = 0;
  for (int i = 0; i < count; i++) {
    const fap_frame *f = &frames[i];
    const fap_rect crop = fap_frame_crop(f); /* the resize reads the crop only */
    fap_k_frame *dsc = &io->desc_host[i];
    memset(dsc, 0, sizeof *dsc);
    fap_pixels_of_frame(f, &dsc->px);
    for (int p = 0; p < 3; p++)
      dsc->px.p[p] = NULL; /* set by every stage: host staging or the frame's own device memory */
    const int taps_x = fap_bicubic_taps(crop.width, size);
    const int taps_y = fap_bicubic_taps(crop.height, size);
    char *h = tables_host + toff, *dv = (char *)io->tables + toff;
    fap_bicubic_table tx = {.first = (int32_t *)h, .count = (int32_t *)h + size,
                            .weights = (float *)((int32_t *)h + 2 * size)};
    fap_bicubic_fill(&tx, crop.width, size);
    const size_t ty_at = (2 * (size_t)size + (size_t)size * taps_x) * 4;
    fap_bicubic_table ty = {.first = (int32_t *)(h + ty_at), .count = (int32_t *)(h + ty_at) + size,
                            .weights = (float *)((int32_t *)(h + ty_at) + 2 * size)};
    fap_bicubic_fill(&ty, crop.height, size);
    dsc->tx_first = (const int32_t *)dv;
    dsc->tx_count = (const int32_t *)dv + size;
    dsc->tx_weights = (const float *)((const int32_t *)dv + 2 * size);
    dsc->tx_taps = taps_x;
    dsc->ty_first = (const int32_t *)(dv + ty_at);
    dsc->ty_count = (const int32_t *)(dv + ty_at) + size;
    dsc->ty_weights = (const float *)((const int32_t *)(dv + ty_at) + 2 * size);
    dsc->ty_taps = taps_y;
    dsc->tmp = (float *)io->tmp + tmp_off;
    toff += ALIGN256((4 * (size_t)size + (size_t)size * taps_x + (size_t)size * taps_y) * 4);
    tmp_off += (size_t)crop.height * size * 3;
  }
  rc = fap_rt_h2d(io->tables, tables_host, tables_bytes, stream);
  if (!rc)
    rc = fap_rt_stream_sync(stream);
  free(tables_host);
  if (rc) {
    *fail = (cuda_failure){rc, "frame tables upload"};
    return -1;
  }
  io->count = count;
  io->size = size;
  io->results_bytes = results_bytes;
  return 1;
}

void fap_cuda_frameio_stage(cuda_frameio *io, const fap_frame *frames, int count, size_t *bytes) {
  for (int i = 0; i < count; i++) {
    const uint8_t *src[3] = {frames[i].data, frames[i].plane[0], frames[i].plane[1]};
    const cuda_frame_slot *slot = &io->slots[i];
    size_t moved = 0;
    for (int p = 0; p < 3; p++) {
      if (frames[i].memory == FAP_MEMORY_CUDA) {
        io->desc_host[i].px.p[p] = (uint8_t *)src[p]; /* already there */
      } else if (slot->bytes[p]) {
        memcpy((char *)io->io_host + slot->offset[p], src[p], slot->bytes[p]);
        io->desc_host[i].px.p[p] = (uint8_t *)io->io_dev + slot->offset[p];
        moved += slot->bytes[p];
      } else if (slot->shared != i && io->slots[slot->shared].bytes[p]) {
        /* staged with the frame whose planes it shares */
        io->desc_host[i].px.p[p] = (uint8_t *)io->io_dev + slot->offset[p];
      } else {
        io->desc_host[i].px.p[p] = NULL;
      }
    }
    if (bytes)
      bytes[i] = moved;
  }
}

void fap_cuda_frameio_unstage(cuda_frameio *io, const fap_frame *frames, int count,
                              size_t *bytes) {
  for (int i = 0; i < count; i++) {
    uint8_t *dst[3] = {(uint8_t *)frames[i].data, (uint8_t *)frames[i].plane[0],
                       (uint8_t *)frames[i].plane[1]};
    size_t moved = 0;
    for (int p = 0; p < 3; p++)
      if (io->slots[i].bytes[p]) {
        memcpy(dst[p], (const char *)io->io_host + io->slots[i].offset[p], io->slots[i].bytes[p]);
        moved += io->slots[i].bytes[p];
      }
    if (bytes)
      bytes[i] = moved;
  }
}

