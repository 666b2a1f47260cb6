/* The runtime of fap_kernels.h on the host, for the emulator: host memory
 * stands in for device memory (filled with 0xFF, NaN as floats, so unwritten
 * output shows), copies run in stream order through fap_emu::enqueue (so a
 * capture records them), events read the host clock, and the matrix product
 * is a plain loop with f32 accumulation over 16-bit inputs. */
#include "emu.hpp"

extern "C" {
#include "fap_kernels.h"
}

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

namespace {
thread_local std::string t_error;

int fail(int code, const char *what) {
  t_error = what;
  return code;
}

/* a failure can be provoked for the hostile-case tests: FAP_EMU_MEMORY_LIMIT
 * bytes of "device" memory in all */
size_t g_limit = 0, g_used = 0;
std::mutex g_mem_mutex;
struct Block {
  size_t bytes;
};

size_t limit() {
  static bool read = false;
  if (!read) {
    read = true;
    const char *e = std::getenv("FAP_EMU_MEMORY_LIMIT");
    g_limit = e ? std::strtoull(e, nullptr, 10) : 0;
  }
  return g_limit;
}

float ld16(const void *p, size_t i, fap_kdtype t) {
  const uint16_t v = static_cast<const uint16_t *>(p)[i];
  return t == FAP_K_BF16 ? fap_emu_bf16_to_f32(v) : fap_emu_f16_to_f32(v);
}

float load(const void *p, size_t i, fap_kdtype t) {
  return t == FAP_K_F32 ? static_cast<const float *>(p)[i] : ld16(p, i, t);
}

void store(void *p, size_t i, fap_kdtype t, float v) {
  if (t == FAP_K_F32)
    static_cast<float *>(p)[i] = v;
  else
    static_cast<uint16_t *>(p)[i] = t == FAP_K_BF16 ? fap_emu_f32_to_bf16(v) : fap_emu_f32_to_f16(v);
}

struct Event {
  double ms;
};
struct Graph {
  std::function<void()> run;
};
} // namespace

struct fap_blas {
  int unused;
};

extern "C" {

const char *fap_rt_error(void) { return t_error.c_str(); }
int fap_rt_device_count(void) { return 1; }
int fap_rt_is_emulated(void) { return 1; }
int fap_rt_launch_status(const char *) { return 0; }

int fap_rt_open(int device, fap_rt_device_info *info) {
  if (device != 0)
    return fail(FAP_RT_ERROR, "invalid device ordinal (the emulator has device 0 only)");
  std::memset(info, 0, sizeof *info);
  std::snprintf(info->name, sizeof info->name, "host emulator");
  info->major = 9;
  info->minor = 0;
  info->sm_count = 1;
  info->total_memory = limit() ? limit() : (size_t)16 << 30;
  info->shared_per_block_optin = 227 * 1024;
  return 0;
}

int fap_rt_use(int device) {
  return device == 0 ? 0 : fail(FAP_RT_ERROR, "invalid device ordinal");
}

int fap_rt_mem_info(size_t *free_bytes, size_t *total_bytes) {
  std::lock_guard<std::mutex> lk(g_mem_mutex);
  const size_t total = limit() ? limit() : (size_t)16 << 30;
  *total_bytes = total;
  *free_bytes = total > g_used ? total - g_used : 0;
  return 0;
}

int fap_rt_malloc(void **ptr, size_t bytes) {
  *ptr = nullptr;
  {
    std::lock_guard<std::mutex> lk(g_mem_mutex);
    if (limit() && g_used + bytes > limit())
      return fail(FAP_RT_ENOMEM, "out of memory (FAP_EMU_MEMORY_LIMIT)");
    g_used += bytes;
  }
  /* header of 256 bytes keeps the size and the 256-byte alignment of cudaMalloc */
  void *raw = nullptr;
  if (posix_memalign(&raw, 256, bytes + 256) != 0) {
    std::lock_guard<std::mutex> lk(g_mem_mutex);
    g_used -= bytes;
    return fail(FAP_RT_ENOMEM, "out of memory");
  }
  static_cast<Block *>(raw)->bytes = bytes;
  std::memset(static_cast<char *>(raw) + 256, 0xff, bytes);
  *ptr = static_cast<char *>(raw) + 256;
  return 0;
}

void fap_rt_free(void *ptr) {
  if (!ptr)
    return;
  void *raw = static_cast<char *>(ptr) - 256;
  {
    std::lock_guard<std::mutex> lk(g_mem_mutex);
    g_used -= static_cast<Block *>(raw)->bytes;
  }
  std::free(raw);
}

int fap_rt_host_alloc(void **ptr, size_t bytes) {
  *ptr = nullptr;
  if (posix_memalign(ptr, 256, bytes ? bytes : 1) != 0)
    return fail(FAP_RT_ENOMEM, "out of pinned host memory");
  return 0;
}

void fap_rt_host_free(void *ptr) { std::free(ptr); }

int fap_rt_stream_new(fap_stream *stream) {
  *stream = new int(0);
  return 0;
}
void fap_rt_stream_free(fap_stream stream) { delete static_cast<int *>(stream); }
int fap_rt_stream_sync(fap_stream) { return 0; }

static int copy(void *dst, const void *src, size_t bytes) {
  if (bytes)
    fap_emu::enqueue([=] { std::memmove(dst, src, bytes); });
  return 0;
}
int fap_rt_h2d(void *dst, const void *src, size_t bytes, fap_stream) { return copy(dst, src, bytes); }
int fap_rt_d2h(void *dst, const void *src, size_t bytes, fap_stream) { return copy(dst, src, bytes); }
int fap_rt_d2d(void *dst, const void *src, size_t bytes, fap_stream) { return copy(dst, src, bytes); }

int fap_rt_memset(void *dst, int value, size_t bytes, fap_stream) {
  if (bytes)
    fap_emu::enqueue([=] { std::memset(dst, value, bytes); });
  return 0;
}

int fap_rt_copy2d(void *dst, size_t dst_pitch, const void *src, size_t src_pitch,
                  size_t row_bytes, size_t rows, fap_stream) {
  fap_emu::enqueue([=] {
    for (size_t r = 0; r < rows; r++)
      std::memmove(static_cast<char *>(dst) + r * dst_pitch,
                   static_cast<const char *>(src) + r * src_pitch, row_bytes);
  });
  return 0;
}

int fap_rt_event_new(fap_event *event) {
  *event = new Event{0.0};
  return 0;
}
void fap_rt_event_free(fap_event event) { delete static_cast<Event *>(event); }
int fap_rt_event_record(fap_event event, fap_stream) {
  Event *e = static_cast<Event *>(event);
  fap_emu::enqueue([e] {
    e->ms = std::chrono::duration<double, std::milli>(
                std::chrono::steady_clock::now().time_since_epoch())
                .count();
  });
  return 0;
}
int fap_rt_event_ms(fap_event start, fap_event end, float *ms) {
  *ms = (float)(static_cast<Event *>(end)->ms - static_cast<Event *>(start)->ms);
  return 0;
}

int fap_rt_capture_begin(fap_stream) {
  if (fap_emu::capturing())
    return fail(FAP_RT_ERROR, "capture already in progress");
  fap_emu::capture_begin();
  return 0;
}

int fap_rt_capture_end(fap_stream, fap_graph *graph) {
  *graph = new Graph{fap_emu::capture_end()};
  return 0;
}

int fap_rt_graph_launch(fap_graph graph, fap_stream) {
  static_cast<Graph *>(graph)->run();
  return 0;
}

void fap_rt_graph_free(fap_graph graph) { delete static_cast<Graph *>(graph); }

int fap_rt_blas_new(fap_blas **blas, fap_stream, size_t) {
  *blas = new fap_blas{0};
  return 0;
}
void fap_rt_blas_free(fap_blas *blas) { delete blas; }

int fap_rt_gemm(fap_blas *, const fap_gemm_args *args) {
  const fap_gemm_args a = *args;
  if ((a.accumulate && a.yt != FAP_K_F32) || (a.yt != FAP_K_F32 && a.yt != a.ab))
    return fail(FAP_RT_UNSUPPORTED, "gemm: unsupported type combination");
  fap_emu::enqueue([a] {
    std::vector<float> xr(a.in);
    for (int r = 0; r < a.rows; r++) {
      for (int i = 0; i < a.in; i++)
        xr[i] = load(a.x, (size_t)r * a.ldx + i, a.ab);
      for (int o = 0; o < a.out; o++) {
        float acc = 0.0f;
        for (int i = 0; i < a.in; i++) {
          const size_t wi = a.w_in_out ? (size_t)i * a.ldw + o : (size_t)o * a.ldw + i;
          acc += xr[i] * load(a.w, wi, a.ab);
        }
        if (a.bias)
          acc += load(a.bias, o, a.yt);
        const size_t yi = (size_t)r * a.ldy + o;
        if (a.accumulate)
          acc += static_cast<float *>(a.y)[yi];
        store(a.y, yi, a.yt, acc);
      }
    }
  });
  return 0;
}

} /* extern "C" */
