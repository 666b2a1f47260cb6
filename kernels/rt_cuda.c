/* The runtime of fap_kernels.h on a real device: CUDA runtime API and
 * cuBLASLt, in C. Failures leave a message in a thread-local buffer. */
#include "fap_kernels.h"

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char t_error[512];

static int fail(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t_error, sizeof t_error, fmt, ap);
  va_end(ap);
  return code;
}

static int check(cudaError_t e, const char *what) {
  if (e == cudaSuccess)
    return 0;
  cudaGetLastError(); /* clears a non-sticky error */
  return fail(e == cudaErrorMemoryAllocation ? FAP_RT_ENOMEM : FAP_RT_ERROR, "%s: %s (%s)", what,
              cudaGetErrorString(e), cudaGetErrorName(e));
}

const char *fap_rt_error(void) { return t_error; }
int fap_rt_is_emulated(void) { return 0; }

int fap_rt_device_count(void) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    check(e, "cudaGetDeviceCount");
    return 0;
  }
  return n;
}

int fap_rt_launch_status(const char *kernel) {
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess)
    return 0;
  return fail(e == cudaErrorMemoryAllocation ? FAP_RT_ENOMEM : FAP_RT_ERROR,
              "kernel %s: %s (%s)", kernel, cudaGetErrorString(e), cudaGetErrorName(e));
}

int fap_rt_use(int device) {
  int current = -1;
  if (cudaGetDevice(&current) == cudaSuccess && current == device)
    return 0;
  return check(cudaSetDevice(device), "cudaSetDevice");
}

int fap_rt_open(int device, fap_rt_device_info *info) {
  /* a context the caller made current for this device (a GStreamer element's
   * GstCudaContext, pushed) is kept: cudaSetDevice would make the device's
   * primary context current instead, and memory of one context is not valid
   * in the other */
  int rc = fap_rt_use(device);
  struct cudaDeviceProp prop;
  if (!rc)
    rc = check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  if (rc)
    return rc;
  memset(info, 0, sizeof *info);
  snprintf(info->name, sizeof info->name, "%s", prop.name);
  info->major = prop.major;
  info->minor = prop.minor;
  info->sm_count = prop.multiProcessorCount;
  info->total_memory = prop.totalGlobalMem;
  info->shared_per_block_optin = prop.sharedMemPerBlockOptin;
  return 0;
}

int fap_rt_mem_info(size_t *free_bytes, size_t *total_bytes) {
  return check(cudaMemGetInfo(free_bytes, total_bytes), "cudaMemGetInfo");
}

int fap_rt_malloc(void **ptr, size_t bytes) {
  *ptr = NULL;
  cudaError_t e = cudaMalloc(ptr, bytes ? bytes : 1);
  if (e != cudaSuccess) {
    *ptr = NULL;
    return check(e, "cudaMalloc");
  }
  return 0;
}

void fap_rt_free(void *ptr) {
  if (ptr)
    cudaFree(ptr);
}

int fap_rt_host_alloc(void **ptr, size_t bytes) {
  *ptr = NULL;
  cudaError_t e = cudaMallocHost(ptr, bytes ? bytes : 1);
  if (e != cudaSuccess) {
    *ptr = NULL;
    return check(e, "cudaMallocHost");
  }
  return 0;
}

void fap_rt_host_free(void *ptr) {
  if (ptr)
    cudaFreeHost(ptr);
}

int fap_rt_stream_new(fap_stream *stream) {
  cudaStream_t s = NULL;
  int rc = check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  *stream = s;
  return rc;
}

void fap_rt_stream_free(fap_stream stream) { cudaStreamDestroy((cudaStream_t)stream); }

int fap_rt_stream_sync(fap_stream stream) {
  return check(cudaStreamSynchronize((cudaStream_t)stream), "cudaStreamSynchronize");
}

int fap_rt_h2d(void *dst, const void *src, size_t bytes, fap_stream stream) {
  if (!bytes)
    return 0;
  return check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, (cudaStream_t)stream),
               "cudaMemcpyAsync (to the device)");
}

int fap_rt_d2h(void *dst, const void *src, size_t bytes, fap_stream stream) {
  if (!bytes)
    return 0;
  return check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, (cudaStream_t)stream),
               "cudaMemcpyAsync (from the device)");
}

int fap_rt_d2d(void *dst, const void *src, size_t bytes, fap_stream stream) {
  if (!bytes)
    return 0;
  return check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, (cudaStream_t)stream),
               "cudaMemcpyAsync (device to device)");
}

int fap_rt_memset(void *dst, int value, size_t bytes, fap_stream stream) {
  if (!bytes)
    return 0;
  return check(cudaMemsetAsync(dst, value, bytes, (cudaStream_t)stream), "cudaMemsetAsync");
}

int fap_rt_copy2d(void *dst, size_t dst_pitch, const void *src, size_t src_pitch,
                  size_t row_bytes, size_t rows, fap_stream stream) {
  if (!rows || !row_bytes)
    return 0;
  return check(cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, row_bytes, rows,
                                 cudaMemcpyDeviceToDevice, (cudaStream_t)stream),
               "cudaMemcpy2DAsync");
}

int fap_rt_event_new(fap_event *event) {
  cudaEvent_t e = NULL;
  int rc = check(cudaEventCreate(&e), "cudaEventCreate");
  *event = e;
  return rc;
}

void fap_rt_event_free(fap_event event) { cudaEventDestroy((cudaEvent_t)event); }

/* External: captured into a graph as a node that records the event at every
 * replay (a plain record during capture only orders work inside the graph,
 * and the event would keep the times of the eager run) */
int fap_rt_event_record(fap_event event, fap_stream stream) {
  return check(cudaEventRecordWithFlags((cudaEvent_t)event, (cudaStream_t)stream,
                                        cudaEventRecordExternal),
               "cudaEventRecord");
}

int fap_rt_event_ms(fap_event start, fap_event end, float *ms) {
  return check(cudaEventElapsedTime(ms, (cudaEvent_t)start, (cudaEvent_t)end),
               "cudaEventElapsedTime");
}

int fap_rt_capture_begin(fap_stream stream) {
  return check(cudaStreamBeginCapture((cudaStream_t)stream, cudaStreamCaptureModeThreadLocal),
               "cudaStreamBeginCapture");
}

int fap_rt_capture_end(fap_stream stream, fap_graph *graph) {
  cudaGraph_t g = NULL;
  cudaGraphExec_t exec = NULL;
  *graph = NULL;
  int rc = check(cudaStreamEndCapture((cudaStream_t)stream, &g), "cudaStreamEndCapture");
  if (!rc)
    rc = check(cudaGraphInstantiate(&exec, g, 0), "cudaGraphInstantiate");
  if (g)
    cudaGraphDestroy(g);
  if (!rc)
    *graph = exec;
  return rc;
}

int fap_rt_graph_launch(fap_graph graph, fap_stream stream) {
  return check(cudaGraphLaunch((cudaGraphExec_t)graph, (cudaStream_t)stream), "cudaGraphLaunch");
}

void fap_rt_graph_free(fap_graph graph) {
  if (graph)
    cudaGraphExecDestroy((cudaGraphExec_t)graph);
}

/* ---- cuBLASLt ------------------------------------------------------------------------ */

/* Heuristic answers are cached per problem (the call is slow next to a small
 * product, and a capture must see the same choice as the eager run). */
typedef struct {
  int rows, in, out, ldx, ldw, ldy, w_in_out, ab, yt, accumulate, bias;
  unsigned align_x, align_w, align_y, align_b;
} gemm_key;

typedef struct {
  gemm_key key;
  cublasLtMatmulAlgo_t algo;
} gemm_entry;

struct fap_blas {
  cublasLtHandle_t lt;
  cudaStream_t stream;
  void *workspace;
  size_t workspace_bytes;
  gemm_entry *cache;
  int cached, cache_capacity;
};

static int lt_check(cublasStatus_t s, const char *what) {
  if (s == CUBLAS_STATUS_SUCCESS)
    return 0;
  return fail(s == CUBLAS_STATUS_ALLOC_FAILED ? FAP_RT_ENOMEM
              : s == CUBLAS_STATUS_NOT_SUPPORTED ? FAP_RT_UNSUPPORTED
                                                 : FAP_RT_ERROR,
              "%s: %s", what, cublasLtGetStatusString(s));
}

int fap_rt_blas_new(fap_blas **out, fap_stream stream, size_t workspace_bytes) {
  *out = NULL;
  fap_blas *b = calloc(1, sizeof *b);
  if (!b)
    return fail(FAP_RT_ENOMEM, "out of host memory");
  b->stream = (cudaStream_t)stream;
  int rc = lt_check(cublasLtCreate(&b->lt), "cublasLtCreate");
  if (!rc && workspace_bytes)
    rc = fap_rt_malloc(&b->workspace, workspace_bytes);
  if (rc) {
    fap_rt_blas_free(b);
    return rc;
  }
  b->workspace_bytes = workspace_bytes;
  *out = b;
  return 0;
}

void fap_rt_blas_free(fap_blas *b) {
  if (!b)
    return;
  if (b->lt)
    cublasLtDestroy(b->lt);
  fap_rt_free(b->workspace);
  free(b->cache);
  free(b);
}

static cudaDataType_t cuda_type(fap_kdtype t) {
  return t == FAP_K_F32 ? CUDA_R_32F : t == FAP_K_BF16 ? CUDA_R_16BF : CUDA_R_16F;
}

static unsigned alignment(const void *p) {
  uintptr_t a = (uintptr_t)p;
  unsigned al = 256;
  while (al > 1 && a % al)
    al >>= 1;
  return al;
}

/* Column-major view of the row-major product: Y^T [out, rows] = op(A) X^T with
 * A = W viewed as [in, out] (ld ldw) transposed, or P viewed as [out, in] as is. */
int fap_rt_gemm(fap_blas *b, const fap_gemm_args *g) {
  if ((g->accumulate && g->yt != FAP_K_F32) || (g->yt != FAP_K_F32 && g->yt != g->ab))
    return fail(FAP_RT_UNSUPPORTED, "gemm: unsupported type combination");
  if (g->rows < 1 || g->out < 1 || g->in < 1)
    return 0;
  cublasLtMatmulDesc_t op = NULL;
  cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
  cublasLtMatmulPreference_t pref = NULL;
  const cudaDataType_t ab = cuda_type(g->ab), yt = cuda_type(g->yt);
  const cublasOperation_t ta = g->w_in_out ? CUBLAS_OP_N : CUBLAS_OP_T, tb = CUBLAS_OP_N;
  const cublasLtEpilogue_t epi = g->bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  int rc = lt_check(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul desc");
  if (!rc)
    rc = lt_check(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta),
                  "transa");
  if (!rc)
    rc = lt_check(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb),
                  "transb");
  if (!rc)
    rc = lt_check(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
                                                 sizeof epi),
                  "epilogue");
  if (!rc && g->bias)
    rc = lt_check(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g->bias,
                                                 sizeof g->bias),
                  "bias pointer");
  /* A: W [out, ldw] row-major = column-major [in x out] (transposed in use);
   *    P [in, ldw] row-major = column-major [out x in] */
  if (!rc)
    rc = lt_check(g->w_in_out
                      ? cublasLtMatrixLayoutCreate(&la, ab, (uint64_t)g->out, (uint64_t)g->in, g->ldw)
                      : cublasLtMatrixLayoutCreate(&la, ab, (uint64_t)g->in, (uint64_t)g->out, g->ldw),
                  "layout A");
  if (!rc) /* B: X [rows, ldx] row-major = column-major [in x rows] */
    rc = lt_check(cublasLtMatrixLayoutCreate(&lb, ab, (uint64_t)g->in, (uint64_t)g->rows, g->ldx),
                  "layout B");
  if (!rc) /* C = D: Y [rows, ldy] row-major = column-major [out x rows] */
    rc = lt_check(cublasLtMatrixLayoutCreate(&lc, yt, (uint64_t)g->out, (uint64_t)g->rows, g->ldy),
                  "layout D");

  gemm_key key = {g->rows, g->in, g->out, g->ldx, g->ldw, g->ldy, g->w_in_out, g->ab, g->yt,
                  g->accumulate, g->bias != NULL, alignment(g->x), alignment(g->w),
                  alignment(g->y), g->bias ? alignment(g->bias) : 256};
  cublasLtMatmulAlgo_t algo;
  int found = 0;
  for (int i = 0; i < b->cached && !found; i++)
    if (!memcmp(&b->cache[i].key, &key, sizeof key)) {
      algo = b->cache[i].algo;
      found = 1;
    }
  if (!rc && !found) {
    rc = lt_check(cublasLtMatmulPreferenceCreate(&pref), "preference");
    const uint32_t aw = key.align_w, ax = key.align_x, ay = key.align_y;
    if (!rc)
      rc = lt_check(cublasLtMatmulPreferenceSetAttribute(
                        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &b->workspace_bytes,
                        sizeof b->workspace_bytes),
                    "workspace preference");
    if (!rc)
      rc = lt_check(cublasLtMatmulPreferenceSetAttribute(
                        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aw, sizeof aw),
                    "alignment A");
    if (!rc)
      rc = lt_check(cublasLtMatmulPreferenceSetAttribute(
                        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ax, sizeof ax),
                    "alignment B");
    if (!rc)
      rc = lt_check(cublasLtMatmulPreferenceSetAttribute(
                        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ay, sizeof ay),
                    "alignment C");
    if (!rc)
      rc = lt_check(cublasLtMatmulPreferenceSetAttribute(
                        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ay, sizeof ay),
                    "alignment D");
    cublasLtMatmulHeuristicResult_t heur;
    int n = 0;
    if (!rc)
      rc = lt_check(cublasLtMatmulAlgoGetHeuristic(b->lt, op, la, lb, lc, lc, pref, 1, &heur, &n),
                    "algorithm heuristic");
    if (!rc && n >= 1 && heur.state != CUBLAS_STATUS_SUCCESS)
      rc = lt_check(heur.state, "algorithm heuristic");
    if (!rc && n < 1)
      rc = fail(FAP_RT_UNSUPPORTED,
                "cuBLASLt has no algorithm for a %d x %d x %d product (lds %d %d %d)", g->rows,
                g->in, g->out, g->ldx, g->ldw, g->ldy);
    if (!rc) {
      algo = heur.algo;
      found = 1;
      if (b->cached == b->cache_capacity) {
        int cap = b->cache_capacity ? 2 * b->cache_capacity : 64;
        gemm_entry *e = realloc(b->cache, (size_t)cap * sizeof *e);
        if (e) {
          b->cache = e;
          b->cache_capacity = cap;
        }
      }
      if (b->cached < b->cache_capacity)
        b->cache[b->cached++] = (gemm_entry){key, algo};
    }
  }
  if (!rc) {
    const float alpha = 1.0f, beta = g->accumulate ? 1.0f : 0.0f;
    rc = lt_check(cublasLtMatmul(b->lt, op, &alpha, g->w, la, g->x, lb, &beta, g->y, lc, g->y, lc,
                                 &algo, b->workspace, b->workspace_bytes, b->stream),
                  "cublasLtMatmul");
  }
  if (pref)
    cublasLtMatmulPreferenceDestroy(pref);
  if (la)
    cublasLtMatrixLayoutDestroy(la);
  if (lb)
    cublasLtMatrixLayoutDestroy(lb);
  if (lc)
    cublasLtMatrixLayoutDestroy(lc);
  if (op)
    cublasLtMatmulDescDestroy(op);
  return rc;
}
