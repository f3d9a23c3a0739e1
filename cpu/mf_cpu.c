/* mf_cpu.c - the CPU backend of the tensor engine: its context, tracked 64-byte aligned memory, the
 * grow-only workspace, the dense GEMM (OpenBLAS, split over OpenMP threads) and the function table.
 * The kernels live in cpu_conv.c, cpu_norm.c, cpu_elem.c and cpu_reduce.c; see docs/cpu-backend.md. */
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"
#include "mf_error.h"

/* ---- memory --------------------------------------------------------------------------------- */

/* Every block carries a 64-byte header holding its (rounded) size, so free() can keep the count. */
#define MFCPU_HDR 64

void *mfcpu_alloc(mf_backend *be, size_t bytes) {
    mfcpu_ctx *c = mfcpu(be);
    if (bytes > SIZE_MAX - 2 * MFCPU_HDR) return NULL;
    size_t sz = (bytes + 63) & ~(size_t)63;
    char *base = aligned_alloc(64, MFCPU_HDR + sz);
    if (!base) return NULL;
    memcpy(base, &sz, sizeof sz);
    c->cur_bytes += sz;
    if (c->cur_bytes > c->peak_bytes) c->peak_bytes = c->cur_bytes;
    return base + MFCPU_HDR;
}

void mfcpu_free(mf_backend *be, void *ptr) {
    if (!ptr) return;
    mfcpu_ctx *c = mfcpu(be);
    char *base = (char *)ptr - MFCPU_HDR;
    size_t sz;
    memcpy(&sz, base, sizeof sz);
    MF_ASSERT(sz <= c->cur_bytes);
    c->cur_bytes -= sz;
    free(base);
}

void *mfcpu_workspace(mf_backend *be, size_t bytes) {
    mfcpu_ctx *c = mfcpu(be);
    if (bytes <= c->ws_bytes) return c->ws;
    mfcpu_free(be, c->ws);
    c->ws = NULL;
    c->ws_bytes = 0;
    /* grow geometrically so that a sequence of slightly larger requests does not reallocate often */
    size_t want = bytes + bytes / 4;
    c->ws = mfcpu_alloc(be, want);
    if (!c->ws) {
        fprintf(stderr, "mfpipe: out of memory allocating a %zu-byte CPU workspace\n", want);
        abort();
    }
    c->ws_bytes = want;
    return c->ws;
}

static void cpu_write(mf_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy(dst, src, bytes);
}
static void cpu_read(mf_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy(dst, src, bytes);
}
static void cpu_copy(mf_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes && dst != src) memmove(dst, src, bytes);
}
static void cpu_synchronize(mf_backend *be) {}
static size_t cpu_peak_bytes(mf_backend *be) { return mfcpu(be)->peak_bytes; }

void mfcpu_par_ranges(mf_backend *be, int64_t n, mfcpu_range_fn fn, void *arg) {
    const int slots = mfcpu_eslots(be, n);
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int s = 0; s < slots; s++) {
        const int64_t i0 = mfcpu_split16(n, slots, s), i1 = mfcpu_split16(n, slots, s + 1);
        if (i1 > i0) fn(arg, i0, i1);
    }
}

/* ---- dense ---------------------------------------------------------------------------------- */

/* OpenBLAS runs single-threaded (set once in mf_cpu_backend_new): the parallelism is ours, so that
 * the conv kernels can run one GEMM per thread. A large GEMM is split here into `slots` fixed blocks
 * of rows (or of columns when C is wide), one BLAS call each; every element of C is computed by one
 * call whose k-loop does not depend on the split, and the split depends only on the thread count. */
static void cpu_gemm(mf_backend *be, int ta, int tb, int m, int n, int k, float alpha, const float *a,
                     const float *b, float beta, float *c) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) { /* C = beta*C; BLAS implementations disagree on this corner */
        for (int64_t i = 0; i < (int64_t)m * n; i++) c[i] = beta == 0.0f ? 0.0f : beta * c[i];
        return;
    }
    const int lda = ta ? m : k, ldb = tb ? k : n;
    const CBLAS_TRANSPOSE opa = ta ? CblasTrans : CblasNoTrans, opb = tb ? CblasTrans : CblasNoTrans;
    const int split_rows = m >= n;
    const int len = split_rows ? m : n;
    int slots = (double)m * n * k >= 2e6 ? be->threads : 1;
    if (slots > len / 16) slots = len / 16 > 1 ? len / 16 : 1;
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int s = 0; s < slots; s++) {
        const int i0 = (int)mfcpu_split(len, slots, s), i1 = (int)mfcpu_split(len, slots, s + 1);
        if (i1 <= i0) continue;
        if (split_rows) {
            const float *ap = ta ? a + i0 : a + (int64_t)i0 * lda;
            cblas_sgemm(CblasRowMajor, opa, opb, i1 - i0, n, k, alpha, ap, lda, b, ldb, beta,
                        c + (int64_t)i0 * n, n);
        } else {
            const float *bp = tb ? b + (int64_t)i0 * ldb : b + i0;
            cblas_sgemm(CblasRowMajor, opa, opb, m, i1 - i0, k, alpha, a, lda, bp, ldb, beta, c + i0, n);
        }
    }
}

/* ---- the table ------------------------------------------------------------------------------ */

static const mf_backend_i cpu_iface = {
    .name = "cpu",
    .alloc = mfcpu_alloc,
    .free = mfcpu_free,
    .write = cpu_write,
    .read = cpu_read,
    .copy = cpu_copy,
    .fill = mfcpu_fill,
    .synchronize = cpu_synchronize,
    .peak_bytes = cpu_peak_bytes,
    .gemm = cpu_gemm,
    .conv2d = mfcpu_conv2d,
    .conv2d_bwd_data = mfcpu_conv2d_bwd_data,
    .conv2d_bwd_filter = mfcpu_conv2d_bwd_filter,
    .groupnorm = mfcpu_groupnorm,
    .groupnorm_bwd = mfcpu_groupnorm_bwd,
    .groupnorm_jvp = mfcpu_groupnorm_jvp,
    .silu = mfcpu_silu,
    .silu_bwd = mfcpu_silu_bwd,
    .silu_jvp = mfcpu_silu_jvp,
    .axpby = mfcpu_axpby,
    .add2 = mfcpu_add2,
    .add_channel = mfcpu_add_channel,
    .sum_channel = mfcpu_sum_channel,
    .sum_rows = mfcpu_sum_rows,
    .add_bias_rows = mfcpu_add_bias_rows,
    .copy2d = mfcpu_copy2d,
    .upsample2x = mfcpu_upsample2x,
    .upsample2x_bwd = mfcpu_upsample2x_bwd,
    .embed = mfcpu_embed,
    .embed_bwd = mfcpu_embed_bwd,
    .fourier = mfcpu_fourier,
    .fourier_jvp = mfcpu_fourier_jvp,
    .sq_err_rows = mfcpu_sq_err_rows,
    .sumsq = mfcpu_sumsq,
    .adamw = mfcpu_adamw,
    .ema = mfcpu_ema,
    .destroy = NULL, /* mf_backend_free below frees the CPU backend itself */
};

mf_backend *mf_cpu_backend_new(int threads) {
    if (threads <= 0) threads = omp_get_num_procs();
    if (threads < 1) threads = 1;
    if (threads > 1024) threads = 1024;
    /* Process-wide: every BLAS call of the process is single-threaded from here on (see cpu_gemm). */
    openblas_set_num_threads(1);
    mf_backend *be = mf_xcalloc(1, sizeof *be);
    mfcpu_ctx *c = mf_xcalloc(1, sizeof *c);
    c->threads = threads;
#if defined(__GNUC__) && defined(__x86_64__)
    __builtin_cpu_init();
    c->avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
#endif
    const char *simd = getenv("MFPIPE_CPU_SIMD");
    if (simd && strcmp(simd, "0") == 0) c->avx512 = 0;
    be->i = &cpu_iface;
    be->ctx = c;
    be->threads = threads;
    return be;
}

/* Frees any backend: through its `destroy` entry when it has one (the checked backend, CUDA), else as the
 * CPU backend, which has none: its context and workspace (not the tensors still allocated through it). */
void mf_backend_free(mf_backend *be) {
    if (!be) return;
    if (be->i->destroy) {
        be->i->destroy(be);
        return;
    }
    MF_ASSERT(be->i == &cpu_iface);
    mfcpu_ctx *c = mfcpu(be);
    mfcpu_free(be, c->ws);
    free(c);
    free(be);
}
