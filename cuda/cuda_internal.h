/* cuda_internal.h - what the CUDA backend's files share: the error-checking macros, the stream, the
 * library handles, the scratch and staging areas, and the layout index. The runtime (mf_cuda.cu)
 * implements these; the kernels (cuda_kernels.h) and the dense work (cuda_dense.cu) use them. Nothing
 * here is visible outside cuda/. All mfcu_* functions are C++ functions (nvcc), not extern "C".
 *
 * The cuBLAS / cuDNN part (check macros, handles) is declared only where MFCU_LIBS is defined before this
 * header: cublas_v2.h brings cuda_fp16.h's global `half`, which would shadow the interface's `half`
 * parameters (-Wshadow) in the kernel files. */
#ifndef MF_CUDA_INTERNAL_H
#define MF_CUDA_INTERNAL_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "mf_backend.h"

/* Record the first failure of the backend (sticky; reported by mf_backend_i.error) with the failing
 * expression, file and line, and log it. Later calls keep the first message. */
void mfcu_record_error(mf_backend *be, const char *file, int line, const char *expr, const char *msg);
/* Non-zero once a failure was recorded: kernels return early, so one failure gives one message. */
int mfcu_failed(mf_backend *be);
/* At the top of every entry that issues work: non-zero (return at once) when the backend has failed or
 * its device cannot be made current on the calling thread (error recorded). */
int mfcu_enter(mf_backend *be);

/* Check a CUDA runtime call; on failure record it and evaluate to non-zero. */
#define MFCU_CHECK(be, expr)                                                                            \
    mfcu_check_((be), (expr), __FILE__, __LINE__, #expr)
static inline int mfcu_check_(mf_backend *be, cudaError_t e, const char *file, int line, const char *expr) {
    if (e == cudaSuccess) return 0;
    mfcu_record_error(be, file, line, expr, cudaGetErrorString(e));
    return 1;
}
/* After every kernel launch: the launch's own error (bad configuration, no kernel image for this GPU). */
#define MFCU_LAUNCHED(be, name) mfcu_check_((be), cudaGetLastError(), __FILE__, __LINE__, name)

#ifdef MFCU_LIBS
#include <cublas_v2.h>
#include <cudnn.h>
/* Check a cuBLAS / cuDNN call the same way (the message is the library's status name). */
#define MFCU_CUBLAS(be, expr) mfcu_cublas_check_((be), (expr), __FILE__, __LINE__, #expr)
static inline int mfcu_cublas_check_(mf_backend *be, cublasStatus_t s, const char *file, int line,
                                     const char *expr) {
    if (s == CUBLAS_STATUS_SUCCESS) return 0;
    mfcu_record_error(be, file, line, expr, cublasGetStatusName(s));
    return 1;
}
#define MFCU_CUDNN(be, expr) mfcu_cudnn_check_((be), (expr), __FILE__, __LINE__, #expr)
static inline int mfcu_cudnn_check_(mf_backend *be, cudnnStatus_t s, const char *file, int line,
                                    const char *expr) {
    if (s == CUDNN_STATUS_SUCCESS) return 0;
    mfcu_record_error(be, file, line, expr, cudnnGetErrorString(s));
    return 1;
}
/* The library handles, bound to the stream (cuBLAS: host pointer mode, its own workspace). */
cublasHandle_t mfcu_cublas(mf_backend *be);
cudnnHandle_t mfcu_cudnn(mf_backend *be);
#endif

/* The backend's stream: every kernel, copy and library call of the backend runs on it, in order. */
cudaStream_t mfcu_stream(mf_backend *be);
/* Non-zero while a graph is being recorded (graph_begin .. graph_end): no allocation, no host sync. */
int mfcu_capturing(mf_backend *be);
/* Wait for the stream (host synchronisation). While a graph is recorded it refuses the recording
 * instead (graph_end then returns NULL; no sticky error). Returns non-zero on failure or refusal. */
int mfcu_sync(mf_backend *be);

/* Device scratch of at least `bytes`, valid until the next mfcu_scratch call (work on the stream is
 * ordered, so a kernel issued after this call may use it). NULL (error recorded) when out of memory.
 * Grows outside graph recording only; sizes used while recording must have been seen before. */
void *mfcu_scratch(mf_backend *be, size_t bytes);
/* The same for one of MFCU_SCRATCH_SLOTS independent buffers: slot 0 is mfcu_scratch's, slot
 * MFCU_SLOT_DENSE belongs to cuda_dense.cu (so a GEMM or convolution never moves the kernels' scratch). A
 * slot's pointer stays valid until the next call for the same slot. At least 256-byte aligned. */
enum { MFCU_SLOT_KERNELS = 0, MFCU_SLOT_DENSE = 1, MFCU_SCRATCH_SLOTS = 2 };
void *mfcu_scratch_at(mf_backend *be, int slot, size_t bytes);
/* Copy `bytes` of host data to a device staging ring and return the device pointer (valid for work
 * issued after it; the host buffer may be reused at once). For host-side index arrays (embed). While a
 * graph is recorded the data is snapshotted at the call, as write() does (the graph carries it). */
const void *mfcu_stage(mf_backend *be, const void *host, size_t bytes);
/* The precision the backend runs (MF_PREC_*). */
int mfcu_precision(mf_backend *be);

/* The dense entries (cuda_dense.cu), with the signatures of their mf_backend_i entries. */
void mfcu_gemm(mf_backend *be, int ta, int tb, int m, int n, int k, float alpha, const float *a, const float *b,
               float beta, float *c);
void mfcu_conv2d(mf_backend *be, const mf_conv_shape *s, const float *x, const float *w, const float *bias,
                 float *y);
void mfcu_conv2d_bwd_data(mf_backend *be, const mf_conv_shape *s, const float *dy, const float *w, float *dx,
                          int acc);
void mfcu_conv2d_bwd_filter(mf_backend *be, const mf_conv_shape *s, const float *x, const float *dy, float *dw,
                            float *dbias);
/* The dense state (the convolution algorithm cache) hangs off the context: mfcu_dense_slot returns
 * the place of its pointer; mfcu_dense_free (called by destroy) frees it. */
void **mfcu_dense_slot(mf_backend *be);
void mfcu_dense_free(mf_backend *be);

/* Launch geometry: blocks of `threads` covering n items, capped for grid-stride loops. */
static inline unsigned mfcu_blocks(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > 65535 * 8) b = 65535 * 8;
    return (unsigned)b;
}

/* Element (i, k, p) of an activation with c channels and hw pixels in layout blk (mf_backend.h):
 * blk 0 or 1 NCHW, otherwise channel blocks of blk (blk == c is NHWC). */
#ifdef __CUDACC__
__host__ __device__
#endif
static inline int64_t mfcu_at(int c, int hw, int blk, int64_t i, int k, int64_t p) {
    if (blk <= 1) return ((int64_t)i * c + k) * hw + p;
    return (((int64_t)i * (c / blk) + k / blk) * hw + p) * blk + k % blk;
}

#endif
