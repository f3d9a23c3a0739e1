/* mf_cpu.c - the CPU backend of the tensor engine: its context, tracked 64-byte aligned memory, the
 * grow-only workspace, the dense GEMM (OpenBLAS, split over OpenMP threads) and the function table.
 * The kernels live in cpu_conv.c, cpu_norm.c, cpu_elem.c and cpu_reduce.c; see docs/cpu-backend.md. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"
#include "mf_error.h"
#include "mf_rng.h"

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

/* ---- layout dispatch --------------------------------------------------------------------------
 * Kernels whose operands may be channel-blocked (blk 16, see mf_backend.h) go to cpu_blocked.c and,
 * for convolutions, to oneDNN (cpu_dnnl.c); NCHW operands to the original kernels. */

static int is_b16(int blk) { return blk == 16; }

static void cpu_groupnorm(mf_backend *be, int n, int c, int hw, int g, float eps, const float *x, const float *gamma,
                          const float *beta, float *y, float *mean, float *rstd, int blk) {
    if (is_b16(blk)) mfcpu_groupnorm_b16(be, n, c, hw, g, eps, x, gamma, beta, y, mean, rstd);
    else mfcpu_groupnorm(be, n, c, hw, g, eps, x, gamma, beta, y, mean, rstd);
}
static void cpu_groupnorm_bwd(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma,
                              const float *mean, const float *rstd, const float *dy, float *dx, float *dgamma,
                              float *dbeta, int acc, int blk) {
    if (is_b16(blk)) mfcpu_groupnorm_bwd_b16(be, n, c, hw, g, x, gamma, mean, rstd, dy, dx, dgamma, dbeta, acc);
    else mfcpu_groupnorm_bwd(be, n, c, hw, g, x, gamma, mean, rstd, dy, dx, dgamma, dbeta, acc);
}
static void cpu_groupnorm_jvp(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma,
                              const float *mean, const float *rstd, const float *tx, float *ty, int blk) {
    if (is_b16(blk)) mfcpu_groupnorm_jvp_b16(be, n, c, hw, g, x, gamma, mean, rstd, tx, ty);
    else mfcpu_groupnorm_jvp(be, n, c, hw, g, x, gamma, mean, rstd, tx, ty);
}
/* GroupNorm + SiLU: fused per sample in the blocked layout (cpu_blocked.c); in NCHW composed from the
 * separate kernels (GroupNorm into y, SiLU in place; backward and JVP recompute the GroupNorm output in
 * a temporary). */
static void cpu_gn_silu(mf_backend *be, int n, int c, int hw, int g, float eps, const float *x, const float *gamma,
                        const float *beta, float *y, float *mean, float *rstd, int blk) {
    if (is_b16(blk)) {
        mfcpu_gn_silu_b16(be, n, c, hw, g, eps, x, gamma, beta, y, mean, rstd);
        return;
    }
    mfcpu_groupnorm(be, n, c, hw, g, eps, x, gamma, beta, y, mean, rstd);
    mfcpu_silu(be, (int64_t)n * c * hw, y, y);
}
static void cpu_gn_silu_bwd(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma,
                            const float *beta, const float *mean, const float *rstd, const float *dy, float *dx,
                            float *dgamma, float *dbeta, int acc, int blk) {
    if (is_b16(blk)) {
        mfcpu_gn_silu_bwd_b16(be, n, c, hw, g, x, gamma, beta, mean, rstd, dy, dx, dgamma, dbeta, acc);
        return;
    }
    /* the affine part only needs x, mean, rstd: u = (x - mean) rstd gamma + beta from the saved values */
    float *u = mfcpu_alloc(be, sizeof(float) * (size_t)n * c * hw);
    MF_ASSERT(u);
    mfcpu_gn_affine(be, n, c, hw, g, x, gamma, beta, mean, rstd, u);
    mfcpu_silu_bwd(be, (int64_t)n * c * hw, u, dy, u, 0);
    mfcpu_groupnorm_bwd(be, n, c, hw, g, x, gamma, mean, rstd, u, dx, dgamma, dbeta, acc);
    mfcpu_free(be, u);
}
static void cpu_gn_silu_jvp(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma,
                            const float *beta, const float *mean, const float *rstd, const float *tx, float *ty,
                            int blk) {
    if (is_b16(blk)) {
        mfcpu_gn_silu_jvp_b16(be, n, c, hw, g, x, gamma, beta, mean, rstd, tx, ty);
        return;
    }
    float *u = mfcpu_alloc(be, sizeof(float) * (size_t)n * c * hw);
    MF_ASSERT(u);
    mfcpu_gn_affine(be, n, c, hw, g, x, gamma, beta, mean, rstd, u);
    mfcpu_groupnorm_jvp(be, n, c, hw, g, x, gamma, mean, rstd, tx, ty);
    mfcpu_silu_jvp(be, (int64_t)n * c * hw, u, ty, ty);
    mfcpu_free(be, u);
}

static void cpu_add_channel(mf_backend *be, int n, int c, int hw, const float *x, const float *e, float *y,
                            int blk) {
    if (is_b16(blk)) mfcpu_add_channel_b16(be, n, c, hw, x, e, y);
    else mfcpu_add_channel(be, n, c, hw, x, e, y);
}
static void cpu_sum_channel(mf_backend *be, int n, int c, int hw, const float *dy, float *de, int acc, int blk) {
    if (is_b16(blk)) mfcpu_sum_channel_b16(be, n, c, hw, dy, de, acc);
    else mfcpu_sum_channel(be, n, c, hw, dy, de, acc);
}
static void cpu_upsample2x(mf_backend *be, int n, int c, int h, int w, const float *x, float *y, int blk) {
    if (is_b16(blk)) mfcpu_upsample2x_b16(be, n, c, h, w, x, y);
    else mfcpu_upsample2x(be, n, c, h, w, x, y);
}
static void cpu_upsample2x_bwd(mf_backend *be, int n, int c, int h, int w, const float *dy, float *dx, int acc,
                               int blk) {
    if (is_b16(blk)) mfcpu_upsample2x_bwd_b16(be, n, c, h, w, dy, dx, acc);
    else mfcpu_upsample2x_bwd(be, n, c, h, w, dy, dx, acc);
}

/* A convolution with a blocked operand that oneDNN does not take (no oneDNN, or only its reference code
 * for the shape): convert the blocked operands to NCHW temporaries and use the im2col kernels. */
typedef struct plain_conv {
    mf_conv_shape s;
    int64_t nx, ny;
    float *x, *y; /* NCHW temporaries (NULL where the operand is NCHW already) */
} plain_conv;

static void plain_begin(mf_backend *be, const mf_conv_shape *s, plain_conv *pc) {
    pc->s = *s;
    pc->s.bx = pc->s.by = 0;
    pc->nx = (int64_t)s->n * s->ci * s->h * s->w;
    pc->ny = (int64_t)s->n * s->co * s->ho * s->wo;
    pc->x = is_b16(s->bx) ? mfcpu_alloc(be, sizeof(float) * (size_t)pc->nx) : NULL;
    pc->y = is_b16(s->by) ? mfcpu_alloc(be, sizeof(float) * (size_t)pc->ny) : NULL;
    MF_ASSERT((!is_b16(s->bx) || pc->x) && (!is_b16(s->by) || pc->y));
}
static void to_plain(mf_backend *be, int n, int c, int hw, const float *src, float *dst) {
    mfcpu_copy_channels(be, n, hw, c, src, c, 0, 16, dst, c, 0, 1, 0);
}
static void from_plain(mf_backend *be, int n, int c, int hw, const float *src, float *dst, int acc) {
    mfcpu_copy_channels(be, n, hw, c, src, c, 0, 1, dst, c, 0, 16, acc);
}
static void plain_end(mf_backend *be, plain_conv *pc) {
    mfcpu_free(be, pc->x);
    mfcpu_free(be, pc->y);
}

/* blocked input, NCHW output with fewer than 16 channels, stride 1: the direct kernels in cpu_blocked.c */
static int few_out(const mf_conv_shape *s) {
    return is_b16(s->bx) && !is_b16(s->by) && s->co < 16 && s->stride == 1;
}

/* precision bf16 (docs/cpu-backend.md, "bf16"): every convolution but the direct few-channel ones goes to
 * oneDNN's bf16 kernels, whatever the layouts, except calls flagged fp32 (mf_conv_shape.fp32: the JVP's
 * tangent passes, which stay float32; MFPIPE_CPU_BF16_JVP=1: bf16 too). A shape oneDNN has no fast bf16
 * kernel for runs the fp32 kernels below; the graph stores x in bf16 (xdt) only for shapes that have all
 * three (conv_bf16_x), so a bf16 x always meets a bf16 kernel (asserted). */
static int bf16_conv(mf_backend *be, const mf_conv_shape *s) {
    return mfcpu(be)->bf16 && !few_out(s) && (!s->fp32 || mfcpu(be)->bf16_jvp);
}

static void cpu_conv2d(mf_backend *be, const mf_conv_shape *s, const float *x, const float *w, const float *bias,
                       float *y) {
    if (bf16_conv(be, s) && mfcpu_dnnl_conv2d_bf16(be, s, x, w, bias, y) == 0) return;
    MF_ASSERT(s->xdt != MF_DT_BF16); /* conv_bf16_x: a bf16 x always meets a bf16 kernel */
    if (!is_b16(s->bx) && !is_b16(s->by)) {
        mfcpu_conv2d(be, s, x, w, bias, y);
        return;
    }
    if (few_out(s)) {
        mfcpu_conv_b16_plain(be, s, x, w, bias, y);
        return;
    }
    if (mfcpu_dnnl_conv2d(be, s, x, w, bias, y) == 0) return;
    plain_conv pc;
    plain_begin(be, s, &pc);
    if (pc.x) to_plain(be, s->n, s->ci, s->h * s->w, x, pc.x);
    mfcpu_conv2d(be, &pc.s, pc.x ? pc.x : x, w, bias, pc.y ? pc.y : y);
    if (pc.y) from_plain(be, s->n, s->co, s->ho * s->wo, pc.y, y, 0);
    plain_end(be, &pc);
}

static void cpu_conv2d_bwd_data(mf_backend *be, const mf_conv_shape *s, const float *dy, const float *w, float *dx,
                                int acc) {
    if (bf16_conv(be, s) && mfcpu_dnnl_conv2d_bwd_data_bf16(be, s, dy, w, dx, acc) == 0) return;
    if (!is_b16(s->bx) && !is_b16(s->by)) {
        mfcpu_conv2d_bwd_data(be, s, dy, w, dx, acc);
        return;
    }
    if (few_out(s)) {
        mfcpu_conv_b16_plain_bwd_data(be, s, dy, w, dx, acc);
        return;
    }
    if (mfcpu_dnnl_conv2d_bwd_data(be, s, dy, w, dx, acc) == 0) return;
    plain_conv pc;
    plain_begin(be, s, &pc);
    if (pc.y) to_plain(be, s->n, s->co, s->ho * s->wo, dy, pc.y);
    mfcpu_conv2d_bwd_data(be, &pc.s, pc.y ? pc.y : dy, w, pc.x ? pc.x : dx, pc.x ? 0 : acc);
    if (pc.x) from_plain(be, s->n, s->ci, s->h * s->w, pc.x, dx, acc);
    plain_end(be, &pc);
}

static void cpu_conv2d_bwd_filter(mf_backend *be, const mf_conv_shape *s, const float *x, const float *dy, float *dw,
                                  float *dbias) {
    if (bf16_conv(be, s) && mfcpu_dnnl_conv2d_bwd_filter_bf16(be, s, x, dy, dw, dbias) == 0) return;
    MF_ASSERT(s->xdt != MF_DT_BF16);
    if (!is_b16(s->bx) && !is_b16(s->by)) {
        mfcpu_conv2d_bwd_filter(be, s, x, dy, dw, dbias);
        return;
    }
    if (few_out(s)) {
        mfcpu_conv_b16_plain_bwd_filter(be, s, x, dy, dw, dbias);
        return;
    }
    if (mfcpu_dnnl_conv2d_bwd_filter(be, s, x, dy, dw, dbias) == 0) return;
    plain_conv pc;
    plain_begin(be, s, &pc);
    if (pc.x) to_plain(be, s->n, s->ci, s->h * s->w, x, pc.x);
    if (pc.y) to_plain(be, s->n, s->co, s->ho * s->wo, dy, pc.y);
    mfcpu_conv2d_bwd_filter(be, &pc.s, pc.x ? pc.x : x, pc.y ? pc.y : dy, dw, dbias);
    plain_end(be, &pc);
}

/* both gradients: in bf16 with dy converted once; else the two calls */
static void cpu_conv2d_bwd(mf_backend *be, const mf_conv_shape *s, const float *x, const float *dy, const float *w,
                           float *dw, float *dbias, float *dx, int acc) {
    if (bf16_conv(be, s) && mfcpu_dnnl_conv2d_bwd_bf16(be, s, x, dy, w, dw, dbias, dx, acc) == 0) return;
    cpu_conv2d_bwd_filter(be, s, x, dy, dw, dbias);
    cpu_conv2d_bwd_data(be, s, dy, w, dx, acc);
}

static int cpu_conv_bf16_x(mf_backend *be, const mf_conv_shape *s) {
    return be->bf16_act && bf16_conv(be, s) && is_b16(s->bx) && mfcpu_dnnl_bf16_x_ok(be, s);
}

static void cpu_gn_silu_bf16(mf_backend *be, int n, int c, int hw, int g, float eps, const float *x,
                             const float *gamma, const float *beta, void *y, float *mean, float *rstd, int blk) {
    MF_ASSERT(be->bf16_act && is_b16(blk));
    mfcpu_gn_silu_b16_bf16(be, n, c, hw, g, eps, x, gamma, beta, y, mean, rstd);
}

/* a new parameter epoch: the cached bf16 weights are stale (0 is kept for "never called") */
static void cpu_params_epoch(mf_backend *be) {
    mfcpu_ctx *c = mfcpu(be);
    if (++c->pepoch == 0) c->pepoch = 1;
}

/* ---- the table ------------------------------------------------------------------------------ */

/* The host's own stream (core/mf_rng.c): bit-identical to what the host would draw. */
static void cpu_randn(mf_backend *be, uint64_t seed, uint32_t purpose, uint64_t step, int64_t n, float *out) {
    (void)be;
    mf_rng_normal(seed, purpose, step, out, n);
}

static const char *cpu_version(mf_backend *be) {
    mfcpu_ctx *c = mfcpu(be);
    if (!c->version[0]) {
        const char *dnnl = c->dnnl ? mf_cpu_dnnl_version() : NULL;
        char blas[64];
        snprintf(blas, sizeof blas, "%s", openblas_get_config());
        char *sp = strchr(blas, ' ');
        if (sp && (sp = strchr(sp + 1, ' '))) *sp = '\0'; /* "OpenBLAS 0.3.21" */
        snprintf(c->version, sizeof c->version, "cpu: %s%s%s, %d threads, %s, %s layout%s%s", blas,
                 dnnl ? ", " : "", dnnl ? dnnl : "", c->threads, c->avx512 ? "AVX-512" : "no AVX-512 (scalar kernels)",
                 be->cblock == 16 ? "nChw16c" : "NCHW", c->bf16 ? ", bf16 convolutions: " : "",
                 c->bf16 ? c->bf16_info : "");
    }
    return c->version;
}

static const char *cpu_error(mf_backend *be) {
    (void)be;
    return NULL; /* the CPU kernels cannot fail at run time (allocation failures abort) */
}

/* destroy: the context and workspace (not the tensors still allocated through it). */
static void cpu_destroy(mf_backend *be) {
    mfcpu_ctx *c = mfcpu(be);
    mfcpu_dnnl_free(be);
    mfcpu_free(be, c->ws);
    free(c);
    free(be);
}

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
    .conv2d = cpu_conv2d,
    .conv2d_bwd_data = cpu_conv2d_bwd_data,
    .conv2d_bwd_filter = cpu_conv2d_bwd_filter,
    .conv2d_bwd = cpu_conv2d_bwd,
    .conv_bf16_x = cpu_conv_bf16_x,
    .gn_silu_bf16 = cpu_gn_silu_bf16,
    .params_epoch = cpu_params_epoch,
    .groupnorm = cpu_groupnorm,
    .groupnorm_bwd = cpu_groupnorm_bwd,
    .groupnorm_jvp = cpu_groupnorm_jvp,
    .gn_silu = cpu_gn_silu,
    .gn_silu_bwd = cpu_gn_silu_bwd,
    .gn_silu_jvp = cpu_gn_silu_jvp,
    .silu = mfcpu_silu,
    .silu_bwd = mfcpu_silu_bwd,
    .silu_jvp = mfcpu_silu_jvp,
    .axpby = mfcpu_axpby,
    .add2 = mfcpu_add2,
    .add_channel = cpu_add_channel,
    .sum_channel = cpu_sum_channel,
    .sum_rows = mfcpu_sum_rows,
    .add_bias_rows = mfcpu_add_bias_rows,
    .copy_channels = mfcpu_copy_channels,
    .upsample2x = cpu_upsample2x,
    .upsample2x_bwd = cpu_upsample2x_bwd,
    .embed = mfcpu_embed,
    .embed_bwd = mfcpu_embed_bwd,
    .fourier = mfcpu_fourier,
    .fourier_jvp = mfcpu_fourier_jvp,
    .sq_err_rows = mfcpu_sq_err_rows,
    .rows_axpby = mfcpu_rows_axpby,
    .row_sq_err = mfcpu_row_sq_err,
    .pow_weight = mfcpu_pow_weight,
    .sumsq = mfcpu_sumsq,
    .adamw = mfcpu_adamw,
    .ema = mfcpu_ema,
    .adamw_step = mfcpu_adamw_step,
    .randn = cpu_randn,
    .destroy = cpu_destroy,
    .version = cpu_version,
    .error = cpu_error,
};

int mf_cpu_set_precision(mf_backend *be, int precision, char *why, size_t cap) {
    mfcpu_ctx *c = mfcpu(be);
    c->bf16 = c->bf16_jvp = 0;
    be->bf16_act = 0;
    c->version[0] = '\0';
    be->precision = MF_PREC_FP32;
    if (cap) why[0] = '\0';
    const char *no = getenv("MFPIPE_CPU_NO_BF16");
    if (precision == MF_PREC_TF32) {
        snprintf(why, cap, "TF32 is a GPU tensor-core mode");
    } else if (precision == MF_PREC_BF16 && no && strcmp(no, "1") == 0) {
        snprintf(why, cap, "MFPIPE_CPU_NO_BF16=1");
    } else if (precision == MF_PREC_BF16 && mfcpu_dnnl_bf16_probe(be, why, cap) == 0) {
        snprintf(c->bf16_info, sizeof c->bf16_info, "%s", why);
        c->bf16 = 1;
        const char *jvp = getenv("MFPIPE_CPU_BF16_JVP");
        c->bf16_jvp = jvp && strcmp(jvp, "1") == 0;
        be->precision = MF_PREC_BF16;
        /* bf16 activations (GroupNorm+SiLU outputs that only convolutions read): on unless 0 */
        const char *act = getenv("MFPIPE_CPU_BF16_ACT");
        be->bf16_act = be->cblock == 16 && !(act && strcmp(act, "0") == 0);
    }
    return be->precision;
}

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
    c->bf16_simd = c->avx512 && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                   __builtin_cpu_supports("avx512bf16");
#endif
    const char *simd = getenv("MFPIPE_CPU_SIMD");
    if (simd && strcmp(simd, "0") == 0) c->avx512 = c->bf16_simd = 0;
    be->i = &cpu_iface;
    be->ctx = c;
    be->threads = threads;
    be->kind = "cpu";
    be->host_memory = 1;
    be->precision = MF_PREC_FP32;
    /* Channel-blocked activations with oneDNN convolutions, unless MFPIPE_CPU_LAYOUT=nchw, or no oneDNN,
     * or a CPU without AVX-512: see docs/cpu-backend.md, "Layouts". */
    const char *lay = getenv("MFPIPE_CPU_LAYOUT");
    if (!(lay && strcmp(lay, "nchw") == 0) && mfcpu_dnnl_init(be) == 0) be->cblock = 16;
    return be;
}

