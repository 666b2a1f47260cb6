/* The CUDA backend's frame scope (backend.h): the detector's description of
 * a frame (core/detector.c, vision.c, text.c: the same op calls the CPU
 * computes one by one) recorded once per frame geometry into a CUDA graph
 * and replayed.
 *
 *   frames_begin: stage every frame's planes in pinned memory (one copy up)
 *   pass 0: no graph yet -> upload, the description enqueued eagerly (each op
 *           covering the batch, backend_cuda.c), the outputs downloaded, and
 *           waited for (this also settles cuBLASLt's algorithm choices);
 *   pass 1: the same description again under stream capture -> the graph;
 *   with a graph, no description: frames_end launches it.
 *   frames_end: wait, copy drawn host frames back, stage times from events.
 *
 * The graph holds while the frames' geometry, their count, whether they are
 * drawn into and the backend's device memory (frame buffers, scratch) stay
 * the same. Everything that depends only on the model
 * (static text features, key/value cache, positional embedding, Gaussian)
 * was computed at creation through the same ops. */
#include "backend_cuda.h"

#include "log.h"
#include "pixel.h"

#include <glib.h>
#include <stdlib.h>
#include <string.h>

enum { IDLE, EAGER, CAPTURE, REPLAY, DONE };
enum { BLEND_PARAMS = 256 }; /* io: [blend parameters | frames] */

typedef struct cuda_frames {
  cuda_frameio io;
  const fap_frame *frames;
  int count, blend, state;
  size_t up[FAP_MAX_BATCH];
  /* the recorded description */
  fap_graph graph;
  int graph_count, graph_blend, graphs_off;
  unsigned graph_generation; /* cuda_ctx.memory_generation it was recorded at */
  /* ev[0] at the upload, ev[1 + stage] at each stage's mark */
  fap_event ev[FAP_STAGE_COUNT + 1];
  unsigned marked, graph_marked;
} cuda_frames;

void fap_cuda_frames_free(cuda_ctx *c) {
  cuda_frames *p = c->frames;
  if (!p)
    return;
  if (p->graph)
    fap_rt_graph_free(p->graph);
  for (int i = 0; i <= FAP_STAGE_COUNT; i++)
    if (p->ev[i])
      fap_rt_event_free(p->ev[i]);
  fap_cuda_frameio_free(&p->io);
  free(p);
  c->frames = NULL;
}

static fap_status take_status(cuda_ctx *c) {
  fap_status s = c->status;
  c->status = FAP_OK;
  return s;
}

fap_status fap_cuda_frames_begin(void *ctx, const fap_frame *frames, int count, int size,
                                 const fap_blend *blend) {
  cuda_ctx *c = ctx;
  if (c->status) /* a failure left over from an op */
    return take_status(c);
  CUDA_CHECK(c, fap_rt_use(c->device), "selecting the device");
  if (!c->frames) {
    if (!(c->frames = calloc(1, sizeof *c->frames)))
      return fap_fail(FAP_ERR_NO_MEMORY, "cuda backend: out of memory");
    const char *g = getenv("FAP_CUDA_GRAPHS"); /* 0: every frame eagerly (A/B timing) */
    c->frames->graphs_off = g && strcmp(g, "0") == 0;
  }
  cuda_frames *p = c->frames;
  for (int i = 0; i <= FAP_STAGE_COUNT && !c->status; i++)
    if (!p->ev[i])
      CUDA_CHECK(c, fap_rt_event_new(&p->ev[i]), "events");
  if (c->status)
    return take_status(c);
  cuda_failure fail = {0, NULL};
  const int changed =
      fap_cuda_frameio_prepare(&p->io, frames, count, size, BLEND_PARAMS, c->stream, &fail);
  if (changed < 0) {
    fap_cuda_fail(c, fail.rc, fail.what);
    return take_status(c);
  }
  fap_cuda_frameio_stage(&p->io, frames, count, p->up);
  fap_blend_params bp = {0.0f, 0.0f, 0.0f, 1.0f};
  if (blend)
    fap_blend_params_of(blend, &bp);
  memcpy(p->io.io_host, &bp, sizeof bp);
  const int want_blend = blend != NULL;
  if (p->graph && (changed || p->graph_count != count || p->graph_blend != want_blend ||
                   p->graph_generation != c->memory_generation)) {
    fap_rt_graph_free(p->graph);
    p->graph = NULL;
  }
  p->frames = frames;
  p->count = count;
  p->blend = want_blend;
  p->state = IDLE;
  c->scope_count = count;
  return FAP_OK;
}

/* the start of a description: the one upload (blend parameters, every
 * frame's descriptor and planes) */
static void enqueue_start(cuda_ctx *c, cuda_frames *p) {
  p->marked = 0;
  CUDA_CHECK(c, fap_rt_event_record(p->ev[0], c->stream), "event");
  CUDA_CHECK(c, fap_rt_h2d(p->io.io_dev, p->io.io_host, p->io.frames_start + p->io.frames_bytes,
                           c->stream),
             "frame upload");
}

/* the end of a description: the outputs (and the frames drawn into) down */
static void enqueue_finish(cuda_ctx *c, cuda_frames *p) {
  for (size_t i = 0; i < c->n_buffers; i++) {
    const cuda_buffer *b = &c->buffers[i];
    if (b->kind == FAP_BUFFER_OUTPUT)
      CUDA_CHECK(c, fap_rt_d2h(b->host, b->dev, (size_t)p->count * b->frame, c->stream),
                 "download");
  }
  const cuda_frameio *io = &p->io;
  if (p->blend)
    CUDA_CHECK(c, fap_rt_d2h((char *)io->io_host + io->frames_start,
                             (char *)io->io_dev + io->frames_start, io->frames_bytes, c->stream),
               "frame download");
}

fap_status fap_cuda_frames_pass(void *ctx, int pass, int *describe) {
  cuda_ctx *c = ctx;
  cuda_frames *p = c->frames;
  *describe = 0;
  if (pass == 0) {
    if (p->graph) {
      p->state = REPLAY;
      return FAP_OK;
    }
    enqueue_start(c, p);
    p->state = EAGER;
    *describe = 1;
    return FAP_OK;
  }
  if (p->state == EAGER) {
    enqueue_finish(c, p);
    CUDA_CHECK(c, fap_rt_stream_sync(c->stream), "frame batch");
    p->state = DONE;
    if (c->status || p->graphs_off)
      return FAP_OK; /* frames_end reports a failure */
    p->graph_marked = p->marked;
    const int rc = fap_rt_capture_begin(c->stream);
    if (rc) {
      fap_log(FAP_LOG_WARNING, "cuda backend: starting a CUDA graph capture failed (%s); running "
                               "the frames without a graph from now on", fap_rt_error());
      p->graphs_off = 1;
      return FAP_OK;
    }
    enqueue_start(c, p);
    p->state = CAPTURE;
    *describe = 1;
    return FAP_OK;
  }
  if (p->state == CAPTURE) {
    enqueue_finish(c, p);
    fap_graph g = NULL;
    const int end = fap_rt_capture_end(c->stream, &g); /* always ends a begun capture */
    p->state = DONE;
    if (end || c->status) {
      /* the eager pass ran the same calls: this is the capture's own failure */
      fap_log(FAP_LOG_WARNING, "cuda backend: capturing the frame's description in a CUDA graph "
                               "failed (%s); running it without a graph from now on",
              fap_rt_error());
      c->status = FAP_OK;
      if (g)
        fap_rt_graph_free(g);
      p->graphs_off = 1;
      return FAP_OK;
    }
    p->graph = g;
    p->graph_generation = c->memory_generation;
    p->graph_count = p->count;
    p->graph_blend = p->blend;
  }
  return FAP_OK;
}

void fap_cuda_preprocess_frames(void *ctx, float *image, int size) {
  cuda_ctx *c = ctx;
  cuda_frames *p = c->frames;
  cuda_arg im = fap_cuda_arg(c, image);
  if (c->scope_count > 1 && im.stride != 3 * (size_t)size * size) {
    fap_cuda_fail(c, FAP_RT_UNSUPPORTED, "preprocess into a buffer that is not a frame buffer");
    return;
  }
  CUDA_CHECK(c, fap_k_preprocess(c->stream, (float *)im.p, size, p->io.desc_dev,
                                 p->io.max_height, p->count),
             "preprocess");
}

void fap_cuda_blend_frames(void *ctx, const float *maps, int size) {
  cuda_ctx *c = ctx;
  cuda_frames *p = c->frames;
  cuda_arg m = fap_cuda_arg(c, maps);
  if (!p->blend)
    return;
  if (c->scope_count > 1 && m.stride != (size_t)size * size) {
    fap_cuda_fail(c, FAP_RT_UNSUPPORTED, "drawing maps that are not a frame buffer");
    return;
  }
  CUDA_CHECK(c, fap_k_blend(c->stream, p->io.desc_dev, (const float *)m.p, size, p->io.io_dev,
                            p->io.max_width, p->io.max_height, p->count),
             "blend");
}

void fap_cuda_frames_mark(void *ctx, int stage) {
  cuda_ctx *c = ctx;
  cuda_frames *p = c->frames;
  if ((unsigned)stage >= FAP_STAGE_COUNT)
    return;
  CUDA_CHECK(c, fap_rt_event_record(p->ev[1 + stage], c->stream), "event");
  p->marked |= 1u << stage;
}

fap_status fap_cuda_frames_end(void *ctx, fap_result *results) {
  cuda_ctx *c = ctx;
  cuda_frames *p = c->frames;
  c->scope_count = 1;
  if (p->state == CAPTURE) { /* a pass failed inside the capture: end it, drop it */
    fap_graph g = NULL;
    fap_rt_capture_end(c->stream, &g);
    if (g)
      fap_rt_graph_free(g);
    p->graphs_off = 1;
  }
  if (p->state == REPLAY && !c->status) {
    CUDA_CHECK(c, fap_rt_graph_launch(p->graph, c->stream), "graph launch");
    p->marked = p->graph_marked;
  }
  CUDA_CHECK(c, fap_rt_stream_sync(c->stream), "frame batch");
  const int state = p->state;
  p->state = IDLE;
  if (c->status || state == IDLE)
    return c->status ? take_status(c)
                     : fap_fail(FAP_ERR_BACKEND, "cuda backend: a frame scope ended undescribed");
  size_t down[FAP_MAX_BATCH];
  memset(down, 0, sizeof down);
  if (p->blend)
    fap_cuda_frameio_unstage(&p->io, p->frames, p->count, down);
  float stage[FAP_STAGE_COUNT] = {0};
  int from = 0, timed = 1;
  for (int i = 0; i < FAP_STAGE_COUNT && timed; i++)
    if (p->marked & (1u << i)) {
      timed = fap_rt_event_ms(p->ev[from], p->ev[1 + i], &stage[i]) == 0;
      from = 1 + i;
    }
  for (int i = 0; i < p->count; i++) {
    fap_result *r = &results[i];
    for (int k = 0; k < FAP_STAGE_COUNT && timed; k++)
      r->stage_ms[k] = stage[k];
    r->frame_bytes_to_device = p->up[i];
    r->frame_bytes_from_device = down[i];
  }
  return FAP_OK;
}

const void *fap_cuda_frames_output(void *ctx, const void *buffer) {
  cuda_buffer *b = fap_cuda_buffer_of(ctx, buffer);
  if (!b || !b->host)
    return NULL;
  return (const char *)b->host + ((const char *)buffer - b->handle);
}

/* A reused result drawn into a frame on the device: the map and the blend
 * parameters go up (with the frame's descriptor), the frame is drawn where
 * it is; a host frame's planes go up and come back. Its own stream, buffers
 * and lock, and no sticky status: it may run while another thread runs a
 * batch on the same detector. */
static int draw_locked(cuda_ctx *c, const fap_frame *frame, const float *map, int map_size,
                       const fap_blend *blend, size_t *bytes, const char **what) {
  cuda_frameio *io = &c->draw_io;
  const size_t map_bytes = (size_t)map_size * map_size * sizeof(float);
  int rc = fap_rt_use(c->device);
  *what = "selecting the device";
  if (!rc && !c->draw_stream) {
    rc = fap_rt_stream_new(&c->draw_stream);
    *what = "drawing stream";
  }
  if (rc)
    return rc;
  cuda_failure fail = {0, NULL};
  if (fap_cuda_frameio_prepare(io, frame, 1, map_size, 256 + map_bytes, c->draw_stream, &fail) <
      0) {
    *what = fail.what;
    return fail.rc ? fail.rc : FAP_RT_ENOMEM;
  }
  size_t up = 0, down = 0;
  fap_cuda_frameio_stage(io, frame, 1, &up);
  fap_blend_params bp;
  fap_blend_params_of(blend, &bp);
  memcpy(io->io_host, &bp, sizeof bp);
  memcpy((char *)io->io_host + 256, map, map_bytes);
  const float *params = io->io_dev, *map_dev = (const float *)((char *)io->io_dev + 256);
  fap_stream s = c->draw_stream;
  *what = "draw upload";
  rc = fap_rt_h2d(io->io_dev, io->io_host, io->frames_start + io->frames_bytes, s);
  if (!rc) {
    *what = "draw";
    rc = fap_k_blend(s, io->desc_dev, map_dev, map_size, params, io->max_width, io->max_height,
                     1);
  }
  if (!rc && frame->memory == FAP_MEMORY_HOST) {
    *what = "draw download";
    rc = fap_rt_d2h((char *)io->io_host + io->frames_start, (char *)io->io_dev + io->frames_start,
                    io->frames_bytes, s);
  }
  if (!rc) {
    *what = "draw";
    rc = fap_rt_stream_sync(s);
  }
  if (!rc && frame->memory == FAP_MEMORY_HOST)
    fap_cuda_frameio_unstage(io, frame, 1, &down);
  *bytes = up + down;
  return rc;
}

fap_status fap_cuda_frames_draw(void *ctx, const fap_frame *frame, const float *map, int map_size,
                                const fap_blend *blend, size_t *pixel_bytes) {
  cuda_ctx *c = ctx;
  const char *what = "draw";
  g_mutex_lock(c->draw_lock);
  const int rc = draw_locked(c, frame, map, map_size, blend, pixel_bytes, &what);
  g_mutex_unlock(c->draw_lock);
  if (!rc)
    return FAP_OK;
  fap_log(FAP_LOG_ERROR, "cuda backend (device %d): %s failed: %s", c->device, what,
          fap_rt_error());
  return rc == FAP_RT_ENOMEM ? FAP_ERR_NO_MEMORY : FAP_ERR_BACKEND;
}
