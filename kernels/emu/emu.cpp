/* The emulator's runtime: a pool of host threads, one per thread of a block,
 * running the blocks of a launch one after another. See emu.hpp. */
#include "emu.hpp"

#include <algorithm>
#include <atomic>
#include <barrier>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#if defined(__x86_64__) && defined(__linux__)
#define FAP_EMU_FIBERS 1
#include <sys/mman.h>
#endif

thread_local uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace fap_emu {
namespace {

constexpr int kSlotBytes = 64;

struct Warp {
  std::optional<std::barrier<>> bar;
  alignas(16) unsigned char slots[32][kSlotBytes];
};

struct Block {
  std::optional<std::barrier<>> bar;
  Warp warps[32];
};

struct Job {
  dim3 grid, block;
  size_t smem = 0;
  std::function<void()> body;
  int nthreads = 0;
};

thread_local int t_linear = -1;

class Pool {
public:
  void run(const Job &job) {
    std::unique_lock<std::mutex> lk(m_);
    while ((int)workers_.size() < job.nthreads) {
      int id = (int)workers_.size();
      workers_.emplace_back([this, id] { worker(id); });
    }
    job_ = &job;
    gate_.emplace(job.nthreads);
    smem_.assign(job.smem ? job.smem : 16, 0xff);
    finished_ = 0;
    generation_++;
    cv_.notify_all();
    done_cv_.wait(lk, [&] { return finished_ == job.nthreads; });
    job_ = nullptr;
  }

  Block block_;
  std::vector<unsigned char> smem_;

  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
      generation_++;
    }
    cv_.notify_all();
    for (auto &t : workers_)
      t.join();
  }

private:
  void worker(int id) {
    uint64_t seen = 0;
    for (;;) {
      const Job *job;
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return generation_ != seen; });
        seen = generation_;
        if (stop_)
          return;
        job = job_;
      }
      if (!job || id >= job->nthreads)
        continue;
      execute(*job, id);
      std::lock_guard<std::mutex> lk(m_);
      if (++finished_ == job->nthreads)
        done_cv_.notify_all();
    }
  }

  void execute(const Job &job, int id) {
    const unsigned bx = job.block.x, by = job.block.y;
    threadIdx = uint3{id % bx, (id / bx) % by, id / (bx * by)};
    t_linear = id;
    for (unsigned z = 0; z < job.grid.z; z++)
      for (unsigned y = 0; y < job.grid.y; y++)
        for (unsigned x = 0; x < job.grid.x; x++) {
          gate_->arrive_and_wait(); /* the previous block is over for everyone */
          if (id == 0) {
            block_.bar.emplace(job.nthreads);
            for (int w = 0; w * 32 < job.nthreads; w++) {
              int lanes = job.nthreads - 32 * w < 32 ? job.nthreads - 32 * w : 32;
              block_.warps[w].bar.emplace(lanes);
            }
            std::memset(smem_.data(), 0xff, smem_.size());
          }
          gate_->arrive_and_wait();
          blockIdx = uint3{x, y, z};
          job.body();
          block_.bar->arrive_and_drop();
          block_.warps[id / 32].bar->arrive_and_drop();
        }
    t_linear = -1;
  }

  std::mutex m_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  std::optional<std::barrier<>> gate_;
  const Job *job_ = nullptr;
  uint64_t generation_ = 0;
  int finished_ = 0;
  bool stop_ = false;
};

Pool &pool() {
  static Pool *p = new Pool; /* never destroyed: workers may outlive static destruction */
  return *p;
}


#ifdef FAP_EMU_FIBERS
/* ---- fibers: every thread of a block as a coroutine in the calling host thread ----
 * A barrier switches back to the scheduler, which runs the fibers that can
 * run, in a shuffled order each round, and releases a warp (or the block)
 * when all its live threads arrived. No system call per switch, and a
 * missing barrier shows: a fiber runs its whole phase before or after
 * another, in an order that changes from round to round. */
} // namespace
} // namespace fap_emu

extern "C" void fap_emu_switch(void **save_sp, void *load_sp);
extern "C" void fap_emu_fiber_start();
extern "C" void fap_emu_fiber_main(void *executor);
asm(R"(
  .text
  .globl fap_emu_switch
  .type fap_emu_switch, @function
fap_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size fap_emu_switch, .-fap_emu_switch

  .globl fap_emu_fiber_start
  .type fap_emu_fiber_start, @function
fap_emu_fiber_start:
  movq %r12, %rdi
  andq $-16, %rsp
  call fap_emu_fiber_main
  ud2
  .size fap_emu_fiber_start, .-fap_emu_fiber_start
  .section .note.GNU-stack,"",@progbits
  .text
)");

namespace fap_emu {
namespace {

enum class Wait { run, block, warp, done };

struct Fiber {
  void *sp = nullptr;
  char *stack = nullptr;
  Wait wait = Wait::run;
};

constexpr size_t kStackBytes = 512 * 1024;

class Fibers {
public:
  void run(const Job &job) {
    job_ = &job;
    while ((int)fibers_.size() < job.nthreads)
      add_fiber();
    smem_.assign(job.smem ? job.smem : 16, 0xff);
    const unsigned bx = job.block.x, by = job.block.y;
    std::vector<int> order(job.nthreads);
    for (unsigned z = 0; z < job.grid.z; z++)
      for (unsigned y = 0; y < job.grid.y; y++)
        for (unsigned x = 0; x < job.grid.x; x++) {
          blockIdx = uint3{x, y, z};
          std::memset(smem_.data(), 0xff, smem_.size());
          for (int i = 0; i < job.nthreads; i++)
            fibers_[i].wait = Wait::run;
          for (;;) {
            for (int i = 0; i < job.nthreads; i++)
              order[i] = i;
            std::shuffle(order.begin(), order.end(), rng_);
            for (int i : order)
              if (fibers_[i].wait == Wait::run) {
                current_ = i;
                threadIdx = uint3{i % bx, (i / bx) % by, i / (bx * by)};
                t_linear = i;
                fap_emu_switch(&scheduler_sp_, fibers_[i].sp);
              }
            if (!release(job.nthreads))
              break;
          }
        }
    t_linear = -1;
    job_ = nullptr;
  }

  void body() { /* a fiber's life: run the kernel for each block it is given */
    for (;;) {
      job_->body();
      fibers_[current_].wait = Wait::done;
      yield();
    }
  }

  void wait(Wait w) {
    fibers_[current_].wait = w;
    yield();
  }

  unsigned char *slot(int lane) { return slots_[current_ / 32][lane]; }
  std::vector<unsigned char> smem_;

private:
  void yield() { fap_emu_switch(&fibers_[current_].sp, scheduler_sp_); }

  /* releases a warp whose live threads all wait at the warp barrier, else the
   * block when every live thread waits at the block barrier; false when all
   * are done */
  bool release(int n) {
    bool alive = false, released = false;
    for (int w = 0; w * 32 < n; w++) {
      int live = 0, at_warp = 0;
      for (int l = 32 * w; l < n && l < 32 * w + 32; l++) {
        live += fibers_[l].wait != Wait::done;
        at_warp += fibers_[l].wait == Wait::warp;
      }
      alive |= live > 0;
      if (live > 0 && at_warp == live) {
        for (int l = 32 * w; l < n && l < 32 * w + 32; l++)
          fibers_[l].wait = Wait::run;
        released = true;
      }
    }
    if (!alive || released)
      return alive;
    for (int i = 0; i < n; i++)
      if (fibers_[i].wait != Wait::done && fibers_[i].wait != Wait::block) {
        std::fprintf(stderr, "emu: deadlock: thread %d waits at a warp barrier while others wait "
                             "at __syncthreads (divergent barrier)\n", i);
        std::abort();
      }
    for (int i = 0; i < n; i++)
      if (fibers_[i].wait == Wait::block)
        fibers_[i].wait = Wait::run;
    return true;
  }

  void add_fiber() {
    Fiber f;
    void *mem = mmap(nullptr, kStackBytes + 4096, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) {
      std::fprintf(stderr, "emu: cannot map a fiber stack\n");
      std::abort();
    }
    mprotect(mem, 4096, PROT_NONE); /* guard page below the stack */
    f.stack = static_cast<char *>(mem);
    void **sp = reinterpret_cast<void **>(f.stack + 4096 + kStackBytes);
    *--sp = nullptr;                                      /* keeps the start aligned */
    *--sp = reinterpret_cast<void *>(&fap_emu_fiber_start); /* "return" address */
    *--sp = nullptr;                                      /* rbp */
    *--sp = nullptr;                                      /* rbx */
    *--sp = this;                                         /* r12: the argument */
    *--sp = nullptr;                                      /* r13 */
    *--sp = nullptr;                                      /* r14 */
    *--sp = nullptr;                                      /* r15 */
    uint32_t csr[2] = {0x1f80u, 0x037fu};                 /* default MXCSR, x87 control */
    std::memcpy(--sp, csr, 8);
    f.sp = sp;
    fibers_.push_back(f);
  }

  std::vector<Fiber> fibers_;
  void *scheduler_sp_ = nullptr;
  int current_ = 0;
  const Job *job_ = nullptr;
  std::mt19937 rng_{20261128u};
  alignas(16) unsigned char slots_[32][32][kSlotBytes];
};

Fibers &fibers() {
  static Fibers *f = new Fibers;
  return *f;
}
} // namespace
} // namespace fap_emu

extern "C" void fap_emu_fiber_main(void *executor) {
  static_cast<fap_emu::Fibers *>(executor)->body();
}

namespace fap_emu {
namespace {
#endif

std::recursive_mutex launch_mutex;
/* per thread, as the CUDA backend captures (cudaStreamCaptureModeThreadLocal):
 * what another thread launches meanwhile (a drawing beside a batch) runs, and
 * is not recorded into this thread's graph */
thread_local bool g_capturing = false;
thread_local std::vector<std::function<void()>> g_recorded;

} // namespace

bool capturing() { return g_capturing; }

void capture_begin() {
  g_capturing = true;
  g_recorded.clear();
}

std::function<void()> capture_end() {
  g_capturing = false;
  auto ops = std::make_shared<std::vector<std::function<void()>>>(std::move(g_recorded));
  g_recorded.clear();
  return [ops] {
    for (auto &op : *ops)
      op();
  };
}

void enqueue(std::function<void()> op) {
  if (g_capturing) {
    g_recorded.push_back(std::move(op));
    return;
  }
  op();
}

static void launch_now(dim3 grid, dim3 block, size_t smem, const std::function<void()> &body) {
  std::lock_guard<std::recursive_mutex> lk(launch_mutex);
  const int n = (int)(block.x * block.y * block.z);
  if (n < 1 || n > 1024 || grid.x < 1 || grid.y < 1 || grid.z < 1 || grid.y > 65535 ||
      grid.z > 65535) {
    std::fprintf(stderr, "emu: invalid launch grid (%u,%u,%u) block (%u,%u,%u)\n", grid.x, grid.y,
                 grid.z, block.x, block.y, block.z);
    std::abort();
  }
  if (smem > 227 * 1024) {
    std::fprintf(stderr, "emu: %zu bytes of dynamic shared memory exceed sm_90's 227 KB\n", smem);
    std::abort();
  }
  blockDim = block;
  gridDim = grid;
  Job job;
  job.grid = grid;
  job.block = block;
  job.smem = smem;
  job.body = body;
  job.nthreads = n;
#ifdef FAP_EMU_FIBERS
  fibers().run(job);
#else
  pool().run(job);
#endif
}

void launch(dim3 grid, dim3 block, size_t smem, std::function<void()> body) {
  if (g_capturing) {
    g_recorded.push_back([=] { launch_now(grid, block, smem, body); });
    return;
  }
  launch_now(grid, block, smem, body);
}

#ifdef FAP_EMU_FIBERS
void syncthreads() { fibers().wait(Wait::block); }
void warp_barrier() { fibers().wait(Wait::warp); }
unsigned char *warp_slot(int l) { return fibers().slot(l); }
unsigned char *dynamic_smem() { return fibers().smem_.data(); }
#else
void syncthreads() { pool().block_.bar->arrive_and_wait(); }
void warp_barrier() { pool().block_.warps[t_linear / 32].bar->arrive_and_wait(); }
unsigned char *warp_slot(int l) { return pool().block_.warps[t_linear / 32].slots[l]; }
unsigned char *dynamic_smem() { return pool().smem_.data(); }
#endif

int lane() { return t_linear & 31; }

void syncwarp() { warp_barrier(); }

/* ---- tensor cores --------------------------------------------------------------- */

static float b16_at(uint32_t reg, int half, bool bf16) {
  uint16_t v = (uint16_t)(half ? reg >> 16 : reg & 0xffff);
  return bf16 ? fap_emu_bf16_to_f32(v) : fap_emu_f16_to_f32(v);
}

struct MmaFrag {
  uint32_t a[4], b[2];
  float c[4];
};
static_assert(sizeof(MmaFrag) <= kSlotBytes, "mma fragment does not fit a slot");

void mma_16816(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4], bool bf16) {
  const int me = lane();
  MmaFrag mine;
  std::memcpy(mine.a, a, sizeof mine.a);
  std::memcpy(mine.b, b, sizeof mine.b);
  std::memcpy(mine.c, c, sizeof mine.c);
  std::memcpy(warp_slot(me), &mine, sizeof mine);
  warp_barrier();
  const int g = me >> 2, t = me & 3;
  float out[4];
  for (int i = 0; i < 4; i++) {
    const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
    float acc = mine.c[i];
    for (int k = 0; k < 16; k++) {
      MmaFrag fa, fb;
      /* A (row-major 16 x 16): lane (row % 8) * 4 + (k % 8) / 2, register
       * (row >= 8) + 2 (k >= 8), half k & 1 */
      std::memcpy(&fa, warp_slot((row % 8) * 4 + (k % 8) / 2), sizeof fa);
      /* B (16 x 8, "col"): lane col * 4 + (k % 8) / 2, register k >= 8, half k & 1 */
      std::memcpy(&fb, warp_slot(col * 4 + (k % 8) / 2), sizeof fb);
      const float av = b16_at(fa.a[(row >= 8) + 2 * (k >= 8)], k & 1, bf16);
      const float bv = b16_at(fb.b[k >= 8], k & 1, bf16);
      acc += av * bv;
    }
    out[i] = acc;
  }
  warp_barrier();
  std::memcpy(d, out, sizeof out);
}

void ldmatrix(uint32_t *r, int count, const void *row_address, bool trans) {
  const int me = lane();
  std::memcpy(warp_slot(me), &row_address, sizeof row_address);
  warp_barrier();
  for (int j = 0; j < count; j++) {
    uint16_t e[2];
    for (int h = 0; h < 2; h++) {
      /* non-trans: row me / 4, column 2 (me % 4) + h; trans: row 2 (me % 4) + h, column me / 4 */
      const int row = trans ? 2 * (me % 4) + h : me / 4;
      const int col = trans ? me / 4 : 2 * (me % 4) + h;
      const unsigned char *addr;
      std::memcpy(&addr, warp_slot(j * 8 + row), sizeof addr);
      std::memcpy(&e[h], addr + 2 * col, 2);
    }
    r[j] = (uint32_t)e[0] | ((uint32_t)e[1] << 16);
  }
  warp_barrier();
}

} // namespace fap_emu

/* ---- atomics ---------------------------------------------------------------- */
float atomicAdd(float *p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }
int atomicAdd(int *p, int v) { return std::atomic_ref<int>(*p).fetch_add(v); }
unsigned atomicAdd(unsigned *p, unsigned v) { return std::atomic_ref<unsigned>(*p).fetch_add(v); }
int atomicMax(int *p, int v) {
  std::atomic_ref<int> a(*p);
  int old = a.load();
  while (old < v && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}
