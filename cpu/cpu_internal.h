/* cpu_internal.h - private declarations shared by the files of the CPU backend (the cpu/ sources): the
 * backend context (allocation counters, the grow-only workspace, conv tuning), the fixed-partition helpers
 * that keep every kernel deterministic for a given thread count, and the kernel entry points of the table. */
#ifndef MF_CPU_INTERNAL_H
#define MF_CPU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "mf_backend.h"

#if defined(__GNUC__)
#define MFCPU_HIDDEN __attribute__((visibility("hidden")))
#else
#define MFCPU_HIDDEN
#endif

/* Element-wise kernels go parallel from this many elements on (below it a parallel region costs more
 * than it saves). */
#define MFCPU_PAR_MIN 32768

typedef struct mfcpu_ctx {
    int threads;       /* == be->threads: the number of fixed work slots of every kernel */
    size_t cur_bytes;  /* bytes currently alloc'ed through the backend (tensors + workspace) */
    size_t peak_bytes; /* high-water mark of cur_bytes */
    float *ws;         /* grow-only workspace (im2col columns, partial sums), 64-byte aligned */
    size_t ws_bytes;
    int conv_nb; /* samples per conv GEMM: 0 = automatic (see cpu_conv.c), else forced */
    int conv_pb; /* pixel block of a one-sample conv GEMM: 0 = automatic, else forced */
    int avx512;  /* use the AVX-512 code (SiLU, double sums): CPU support, unless MFPIPE_CPU_SIMD=0 */
    int bf16_simd; /* AVX512-BF16 (+BW, VL) conversions to bf16 (cpu_dnnl.c), unless MFPIPE_CPU_SIMD=0 */
    struct mfcpu_dnnl *dnnl; /* oneDNN engine, stream and primitive cache (cpu_dnnl.c); NULL: none */
    int bf16;     /* precision bf16 in use: convolutions through oneDNN's bf16 kernels (mf_cpu_set_precision) */
    int bf16_jvp; /* also the float32-flagged convolutions (the JVP's tangents): MFPIPE_CPU_BF16_JVP=1 */
    unsigned pepoch; /* parameter epoch (params_epoch); 0: never called, the bf16 weights are not cached */
    char bf16_info[256]; /* the ISA and oneDNN implementations of the bf16 convolutions, for version() */
    char version[512];       /* version(): built on first call */
} mfcpu_ctx;

static inline mfcpu_ctx *mfcpu(mf_backend *be) { return (mfcpu_ctx *)be->ctx; }

/* Tracked, 64-byte aligned allocation (the size is kept in a 64-byte header). */
MFCPU_HIDDEN void *mfcpu_alloc(mf_backend *be, size_t bytes);
MFCPU_HIDDEN void mfcpu_free(mf_backend *be, void *ptr);
/* The workspace, grown to at least `bytes` (contents not preserved); aborts on out-of-memory. */
MFCPU_HIDDEN void *mfcpu_workspace(mf_backend *be, size_t bytes);

/* Work slot s of `slots` over [0, n): [n*s/slots, n*(s+1)/slots). A fixed partition that depends only
 * on n and the slot count, never on how OpenMP schedules the slots. */
static inline int64_t mfcpu_split(int64_t n, int slots, int s) {
    return n * s / slots; /* n * s cannot overflow: n < 2^53, s < 2^10 */
}
/* The same with inner boundaries rounded down to a multiple of 16 floats (64 bytes). */
static inline int64_t mfcpu_split16(int64_t n, int slots, int s) {
    return s >= slots ? n : (mfcpu_split(n, slots, s) & ~(int64_t)15);
}
/* Slots for an element-wise kernel over n elements: 1 below MFCPU_PAR_MIN, else the thread count. */
static inline int mfcpu_eslots(const mf_backend *be, int64_t n) {
    return n >= MFCPU_PAR_MIN ? be->threads : 1;
}

/* Call fn(arg, i0, i1) on fixed 64-byte aligned ranges [i0, i1) covering [0, n), in parallel when
 * n >= MFCPU_PAR_MIN (the element-wise kernels). */
typedef void (*mfcpu_range_fn)(void *arg, int64_t i0, int64_t i1);
MFCPU_HIDDEN void mfcpu_par_ranges(mf_backend *be, int64_t n, mfcpu_range_fn fn, void *arg);

/* Slots for a kernel over `items` items of `len` floats each (planes, rows): as mfcpu_eslots, but never
 * more slots than items. */
static inline int mfcpu_islots(const mf_backend *be, int64_t items, int64_t len) {
    const int sl = items * len >= MFCPU_PAR_MIN ? be->threads : 1;
    return items < sl ? (int)(items > 0 ? items : 1) : sl;
}

/* Number of floats to round a per-slot buffer up to, so that each slot's part stays 64-byte aligned. */
static inline size_t mfcpu_round16(size_t n) { return (n + 15) & ~(size_t)15; }

/* ---- kernels (cpu_conv.c) ------------------------------------------------------------------- */
/* col[(c*k + ky)*k + kx, p - p0] for output pixels [p0, p1) of one sample, rows ldcol apart; and its
 * adjoint (accumulating into dx) for input channels [c0, c1). */
MFCPU_HIDDEN void mfcpu_im2col(const float *x, const mf_conv_shape *s, int p0, int p1, float *col,
                               int64_t ldcol);
MFCPU_HIDDEN void mfcpu_col2im(const float *col, int64_t ldcol, const mf_conv_shape *s, int c0, int c1,
                               int p0, int p1, float *dx);
MFCPU_HIDDEN void mfcpu_conv2d(mf_backend *be, const mf_conv_shape *s, const float *x, const float *w,
                               const float *bias, float *y);
MFCPU_HIDDEN void mfcpu_conv2d_bwd_data(mf_backend *be, const mf_conv_shape *s, const float *dy,
                                        const float *w, float *dx, int acc);
MFCPU_HIDDEN void mfcpu_conv2d_bwd_filter(mf_backend *be, const mf_conv_shape *s, const float *x,
                                          const float *dy, float *dw, float *dbias);
/* Force the number of samples per conv GEMM (0 = automatic); for benchmarks. */
MFCPU_HIDDEN void mfcpu_set_conv_nb(mf_backend *be, int nb);
/* Force the pixel block (GEMM columns) of one-sample conv work items (0 = automatic). */
MFCPU_HIDDEN void mfcpu_set_conv_pb(mf_backend *be, int pb);

/* ---- oneDNN convolutions (cpu_dnnl.c): 0 when done, -1 when oneDNN is absent or would use a slow
 * reference implementation for this shape (the caller falls back to im2col). ------------------------- */
MFCPU_HIDDEN int mfcpu_dnnl_init(mf_backend *be);
MFCPU_HIDDEN void mfcpu_dnnl_free(mf_backend *be);
MFCPU_HIDDEN int mfcpu_dnnl_conv2d(mf_backend *be, const mf_conv_shape *s, const float *x, const float *w,
                                   const float *bias, float *y);
MFCPU_HIDDEN int mfcpu_dnnl_conv2d_bwd_data(mf_backend *be, const mf_conv_shape *s, const float *dy,
                                            const float *w, float *dx, int acc);
MFCPU_HIDDEN int mfcpu_dnnl_conv2d_bwd_filter(mf_backend *be, const mf_conv_shape *s, const float *x,
                                              const float *dy, float *dw, float *dbias);

/* The same with bf16 operands (src, weights, diff_dst rounded to bf16 in the workspace) and float32
 * accumulation and outputs; -1 where oneDNN has no fast bf16 kernel for the shape (caller: fp32). */
MFCPU_HIDDEN int mfcpu_dnnl_conv2d_bf16(mf_backend *be, const mf_conv_shape *s, const float *x, const float *w,
                                        const float *bias, float *y);
MFCPU_HIDDEN int mfcpu_dnnl_conv2d_bwd_data_bf16(mf_backend *be, const mf_conv_shape *s, const float *dy,
                                                 const float *w, float *dx, int acc);
MFCPU_HIDDEN int mfcpu_dnnl_conv2d_bwd_filter_bf16(mf_backend *be, const mf_conv_shape *s, const float *x,
                                                   const float *dy, float *dw, float *dbias);
/* Both gradients, dy converted to bf16 once (the conv2d_bwd entry); -1 as above. */
MFCPU_HIDDEN int mfcpu_dnnl_conv2d_bwd_bf16(mf_backend *be, const mf_conv_shape *s, const float *x,
                                            const float *dy, const float *w, float *dw, float *dbias, float *dx,
                                            int acc);
/* 1 when the three bf16 kernels of shape s are real ones (x may then be stored in bf16: conv_bf16_x). */
MFCPU_HIDDEN int mfcpu_dnnl_bf16_x_ok(mf_backend *be, const mf_conv_shape *s);
/* o = bf16(p) (len floats; round to nearest even; simd: AVX512-BF16, which flushes denormals to zero);
 * part != NULL: also part[l] = sum over q of p[q b + l] for l < b, in double (len a multiple of b). */
MFCPU_HIDDEN void mfcpu_to_bf16_span(int simd, const float *p, uint16_t *o, int64_t len, int b, double *part);
/* 0 when this CPU and oneDNN run bf16 convolutions with real (AVX512-BF16 / AMX) kernels; info gets the
 * ISA and the implementations, or why not (-1). */
MFCPU_HIDDEN int mfcpu_dnnl_bf16_probe(mf_backend *be, char *info, size_t cap);

/* Precision of the convolutions (mf_cpu.c; called by the registry, engine/mf_backend.c, right after
 * mf_cpu_backend_new): MF_PREC_BF16 where the CPU has AVX512-BF16 or AMX, oneDNN is in use and
 * MFPIPE_CPU_NO_BF16 is not 1; else fp32. Sets and returns be->precision; why gets the bf16 kernels' ISA
 * and implementations, or the reason for fp32. Not hidden: the registry is outside cpu/. */
int mf_cpu_set_precision(mf_backend *be, int precision, char *why, size_t cap);

/* ---- blocked-layout kernels (cpu_blocked.c): nChw16c, c % 16 == 0 ---------------------------- */
MFCPU_HIDDEN void mfcpu_groupnorm_b16(mf_backend *be, int n, int c, int hw, int g, float eps, const float *x,
                                      const float *gamma, const float *beta, float *y, float *mean,
                                      float *rstd);
MFCPU_HIDDEN void mfcpu_groupnorm_bwd_b16(mf_backend *be, int n, int c, int hw, int g, const float *x,
                                          const float *gamma, const float *mean, const float *rstd,
                                          const float *dy, float *dx, float *dgamma, float *dbeta, int acc);
MFCPU_HIDDEN void mfcpu_groupnorm_jvp_b16(mf_backend *be, int n, int c, int hw, int g, const float *x,
                                          const float *gamma, const float *mean, const float *rstd,
                                          const float *tx, float *ty);
/* GroupNorm followed by SiLU, fused per sample (the GroupNorm output is never stored; backward and JVP
 * recompute it from x, mean and rstd), see mf_backend.h gn_silu. */
MFCPU_HIDDEN void mfcpu_gn_silu_b16_bf16(mf_backend *be, int n, int c, int hw, int g, float eps, const float *x,
                                         const float *gamma, const float *beta, uint16_t *y, float *mean,
                                         float *rstd);
MFCPU_HIDDEN void mfcpu_gn_silu_b16(mf_backend *be, int n, int c, int hw, int g, float eps, const float *x,
                                    const float *gamma, const float *beta, float *y, float *mean, float *rstd);
MFCPU_HIDDEN void mfcpu_gn_silu_bwd_b16(mf_backend *be, int n, int c, int hw, int g, const float *x,
                                        const float *gamma, const float *beta, const float *mean,
                                        const float *rstd, const float *dy, float *dx, float *dgamma,
                                        float *dbeta, int acc);
MFCPU_HIDDEN void mfcpu_gn_silu_jvp_b16(mf_backend *be, int n, int c, int hw, int g, const float *x,
                                        const float *gamma, const float *beta, const float *mean,
                                        const float *rstd, const float *tx, float *ty);
MFCPU_HIDDEN void mfcpu_add_channel_b16(mf_backend *be, int n, int c, int hw, const float *x, const float *e,
                                        float *y);
MFCPU_HIDDEN void mfcpu_sum_channel_b16(mf_backend *be, int n, int c, int hw, const float *dy, float *de,
                                        int acc);
MFCPU_HIDDEN void mfcpu_upsample2x_b16(mf_backend *be, int n, int c, int h, int w, const float *x, float *y);
MFCPU_HIDDEN void mfcpu_upsample2x_bwd_b16(mf_backend *be, int n, int c, int h, int w, const float *dy,
                                           float *dx, int acc);
/* direct stride-1 convolution from a blocked input to NCHW output channels (the few-channel output conv) */
MFCPU_HIDDEN void mfcpu_conv_b16_plain(mf_backend *be, const mf_conv_shape *s, const float *x, const float *w,
                                       const float *bias, float *y);
MFCPU_HIDDEN void mfcpu_conv_b16_plain_bwd_data(mf_backend *be, const mf_conv_shape *s, const float *dy,
                                                const float *w, float *dx, int acc);
MFCPU_HIDDEN void mfcpu_conv_b16_plain_bwd_filter(mf_backend *be, const mf_conv_shape *s, const float *x,
                                                  const float *dy, float *dw, float *dbias);
MFCPU_HIDDEN void mfcpu_copy_channels(mf_backend *be, int n, int hw, int nc, const float *src, int src_c,
                                      int src_c0, int src_blk, float *dst, int dst_c, int dst_c0, int dst_blk,
                                      int acc);

/* ---- kernels (cpu_norm.c) ------------------------------------------------------------------- */
MFCPU_HIDDEN void mfcpu_groupnorm(mf_backend *be, int n, int c, int hw, int g, float eps, const float *x,
                                  const float *gamma, const float *beta, float *y, float *mean, float *rstd);
MFCPU_HIDDEN void mfcpu_groupnorm_bwd(mf_backend *be, int n, int c, int hw, int g, const float *x,
                                      const float *gamma, const float *mean, const float *rstd,
                                      const float *dy, float *dx, float *dgamma, float *dbeta, int acc);
MFCPU_HIDDEN void mfcpu_groupnorm_jvp(mf_backend *be, int n, int c, int hw, int g, const float *x,
                                      const float *gamma, const float *mean, const float *rstd,
                                      const float *tx, float *ty);

MFCPU_HIDDEN void mfcpu_gn_param_grads(int n, int c, const double *A, const double *RB, float *dgamma, float *dbeta);
MFCPU_HIDDEN void mfcpu_gn_affine(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma,
                                  const float *beta, const float *mean, const float *rstd, float *u);

/* ---- kernels (cpu_elem.c) ------------------------------------------------------------------- */
/* SiLU over one span, serially (the fused GroupNorm + SiLU kernels call it on a sample at a time):
 * FWD out = silu(x); BWD out = t silu'(x), BWD_ACC out += t silu'(x); JVP out = t silu'(x). out may be
 * x or t (element i is read before it is written). */
enum { MFCPU_SILU_FWD, MFCPU_SILU_BWD, MFCPU_SILU_BWD_ACC, MFCPU_SILU_JVP };
MFCPU_HIDDEN void mfcpu_silu_span(int simd, int mode, int64_t n, const float *x, const float *t, float *out);
/* ---- (cpu_elem.c, continued) ------------------------------------------------------------------- */
MFCPU_HIDDEN void mfcpu_fill(mf_backend *be, float *dst, float value, int64_t n);
MFCPU_HIDDEN void mfcpu_silu(mf_backend *be, int64_t n, const float *x, float *y);
MFCPU_HIDDEN void mfcpu_silu_bwd(mf_backend *be, int64_t n, const float *x, const float *dy, float *dx,
                                 int acc);
MFCPU_HIDDEN void mfcpu_silu_jvp(mf_backend *be, int64_t n, const float *x, const float *tx, float *ty);
MFCPU_HIDDEN void mfcpu_axpby(mf_backend *be, int64_t n, float a, const float *x, float b, float *y);
MFCPU_HIDDEN void mfcpu_add2(mf_backend *be, int64_t n, float a, const float *x, float b, const float *y,
                             float *z);
MFCPU_HIDDEN void mfcpu_add_channel(mf_backend *be, int n, int c, int hw, const float *x, const float *e,
                                    float *y);
MFCPU_HIDDEN void mfcpu_add_bias_rows(mf_backend *be, int rows, int cols, const float *bias, float *y);
MFCPU_HIDDEN void mfcpu_upsample2x(mf_backend *be, int n, int c, int h, int w, const float *x, float *y);
MFCPU_HIDDEN void mfcpu_upsample2x_bwd(mf_backend *be, int n, int c, int h, int w, const float *dy, float *dx,
                                       int acc);
MFCPU_HIDDEN void mfcpu_embed(mf_backend *be, int n, int dim, const int32_t *idx, const float *table,
                              float *y);
MFCPU_HIDDEN void mfcpu_embed_bwd(mf_backend *be, int n, int dim, const int32_t *idx, const float *dy,
                                  float *dtable);
MFCPU_HIDDEN void mfcpu_fourier(mf_backend *be, int n, int half, const float *t, const float *freq, float *y);
MFCPU_HIDDEN void mfcpu_fourier_jvp(mf_backend *be, int n, int half, const float *t, const float *freq,
                                    const float *tt, float *ty);

/* ---- kernels (cpu_reduce.c) ----------------------------------------------------------------- */
MFCPU_HIDDEN void mfcpu_sum_channel(mf_backend *be, int n, int c, int hw, const float *dy, float *de,
                                    int acc);
MFCPU_HIDDEN void mfcpu_sum_rows(mf_backend *be, int rows, int cols, const float *dy, float *dbias);
MFCPU_HIDDEN void mfcpu_sq_err_rows(mf_backend *be, int n, int64_t d, const float *a, const float *b,
                                    double *out);
MFCPU_HIDDEN void mfcpu_rows_axpby(mf_backend *be, int n, int64_t d, const float *a, const float *x,
                                   const float *b, const float *y, float *z);
MFCPU_HIDDEN void mfcpu_row_sq_err(mf_backend *be, int n, int64_t d, const float *x, const float *y, float *e);
MFCPU_HIDDEN void mfcpu_pow_weight(mf_backend *be, int n, const float *e, float c, float p, float scale, float *w);
MFCPU_HIDDEN double mfcpu_sumsq(mf_backend *be, int64_t n, const float *x);
MFCPU_HIDDEN void mfcpu_adamw(mf_backend *be, int64_t n, float *p, const float *grad, float *m, float *v,
                              float lr, float b1, float b2, float eps, float wd, int64_t step, float gscale);
MFCPU_HIDDEN void mfcpu_ema(mf_backend *be, int64_t n, float *e, const float *p, float d);
MFCPU_HIDDEN void mfcpu_adamw_step(mf_backend *be, int64_t n, float *p, const float *grad, float *m, float *v,
                                   float *st, float b1, float b2, float eps, float wd, float clip);
/* Sums of contiguous float runs in double, in a fixed order (vectorised over a fixed lane count; simd:
 * the AVX-512 build): sum x; sum (x - m)^2; *a = sum g and *b = sum g (x - m). */
MFCPU_HIDDEN double mfcpu_dsum(const float *x, int64_t n, int simd);
MFCPU_HIDDEN double mfcpu_dsqdev(const float *x, int64_t n, double m, int simd);
MFCPU_HIDDEN void mfcpu_dsum2(const float *g, const float *x, int64_t n, double m, int simd, double *a,
                              double *b);

#endif
