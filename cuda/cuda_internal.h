/* cuda_internal.h - what the CUDA backend's files share: the error-checking macros, the stream, the
 * scratch and staging areas, and the layout index. The runtime (mf_cuda.cu) implements these; the
 * kernels (cuda_kernels.h) use them. Nothing here is visible outside cuda/. */
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

/* The backend's stream: every kernel, copy and library call of the backend runs on it, in order. */
cudaStream_t mfcu_stream(mf_backend *be);
/* Device scratch of at least `bytes`, valid until the next mfcu_scratch call (work on the stream is
 * ordered, so a kernel issued after this call may use it). NULL (error recorded) when out of memory.
 * Grows outside graph recording only; sizes used while recording must have been seen before. */
void *mfcu_scratch(mf_backend *be, size_t bytes);
/* Copy `bytes` of host data to a device staging ring and return the device pointer (valid for work
 * issued after it; the host buffer may be reused at once). For host-side index arrays (embed). */
const void *mfcu_stage(mf_backend *be, const void *host, size_t bytes);
/* The precision the backend runs (MF_PREC_*). */
int mfcu_precision(mf_backend *be);

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
