/* mf_backend_check.c - the "checked" backend: a wrapper around another backend whose tensors live in
 * their own mmap'ed pages, kept PROT_NONE except while one of its kernels runs, so that any host code
 * that dereferences a tensor pointer (which would break on a device backend) dies with SIGSEGV. */
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mf_backend.h"
#include "mf_error.h"

mf_backend *mf_checked_backend_new(mf_backend *inner);
void mf_checked_backend_free(mf_backend *be);

/* Every entry of mf_backend_i must be wrapped below. This catches an entry appended to the table. */
#define CK_LAST_ENTRY params_epoch
_Static_assert(sizeof(mf_backend_i) ==
                   offsetof(mf_backend_i, CK_LAST_ENTRY) + sizeof(((mf_backend_i *)0)->CK_LAST_ENTRY),
               "mf_backend_i has an entry after the last one known here: wrap it in mf_backend_check.c");

/* One allocation: whole pages of its own mapping, the tensor at its start. */
typedef struct ck_region {
    char *base;
    size_t len;
} ck_region;

typedef struct ck_ctx {
    mf_backend *inner;
    ck_region *reg; /* live allocations, sorted by address */
    int n_reg, cap_reg;
    size_t page;
    size_t cur_bytes, peak_bytes; /* mapped pages */
    int depth;                    /* > 0 while a kernel runs (memory unprotected) */
    int recording;                /* between graph_begin and graph_end (MFPIPE_CHECKED_GRAPHS=1) */
    long graphs_recorded;
} ck_ctx;

static ck_ctx *ck(mf_backend *be) { return (ck_ctx *)be->ctx; }

static void ck_mprotect(char *base, size_t len, int prot) {
    if (mprotect(base, len, prot) != 0) {
        fprintf(stderr, "mfpipe: checked backend: mprotect(%p, %zu) failed: %s\n", (void *)base, len,
                strerror(errno));
        abort();
    }
}

/* Set `prot` on every live allocation. Anonymous mappings are usually placed next to each other, so
 * each run of adjacent regions takes one call (a call per region made training ~10x slower still). */
static void ck_protect_all(ck_ctx *c, int prot) {
    for (int i = 0; i < c->n_reg;) {
        char *b = c->reg[i].base, *e = b + c->reg[i].len;
        for (i++; i < c->n_reg && c->reg[i].base == e; i++) e += c->reg[i].len;
        ck_mprotect(b, (size_t)(e - b), prot);
    }
}

/* Unprotect every live tensor and return the inner backend; ck_leave() protects them again. */
/* A host synchronisation while a graph is being recorded: a real backend could not record it. */
static void ck_no_sync(mf_backend *be, const char *what) {
    if (!ck(be)->recording) return;
    fprintf(stderr, "mfpipe: checked backend: %s while recording a graph (a step recorded as a graph must not "
                    "synchronise with the host)\n", what);
    abort();
}

static mf_backend *ck_enter(mf_backend *be) {
    ck_ctx *c = ck(be);
    if (c->depth++ == 0) ck_protect_all(c, PROT_READ | PROT_WRITE);
    return c->inner;
}

static void ck_leave(mf_backend *be) {
    ck_ctx *c = ck(be);
    MF_ASSERT(c->depth > 0);
    if (--c->depth == 0) ck_protect_all(c, PROT_NONE);
}

/* Index of the first region with base >= p. */
static int ck_find(const ck_ctx *c, const void *p) {
    int lo = 0, hi = c->n_reg;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if ((uintptr_t)c->reg[mid].base < (uintptr_t)p) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* ---- memory --------------------------------------------------------------------------------- */

static void *ck_alloc(mf_backend *be, size_t bytes) {
    ck_ctx *c = ck(be);
    if (bytes > SIZE_MAX / 2) return NULL;
    const size_t len = bytes ? (bytes + c->page - 1) / c->page * c->page : c->page;
    char *base = mmap(NULL, len, c->depth > 0 ? PROT_READ | PROT_WRITE : PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) return NULL; /* page-aligned, hence 64-byte aligned */
    if (c->n_reg == c->cap_reg) {
        c->cap_reg = c->cap_reg ? 2 * c->cap_reg : 64;
        c->reg = mf_xrealloc(c->reg, sizeof *c->reg * (size_t)c->cap_reg);
    }
    int at = ck_find(c, base);
    memmove(c->reg + at + 1, c->reg + at, sizeof *c->reg * (size_t)(c->n_reg - at));
    c->reg[at] = (ck_region){base, len};
    c->n_reg++;
    c->cur_bytes += len;
    if (c->cur_bytes > c->peak_bytes) c->peak_bytes = c->cur_bytes;
    return base;
}

static void ck_free(mf_backend *be, void *ptr) {
    if (!ptr) return;
    ck_ctx *c = ck(be);
    int at = ck_find(c, ptr);
    if (at == c->n_reg || c->reg[at].base != (char *)ptr) {
        fprintf(stderr, "mfpipe: checked backend: free(%p) of a pointer it did not allocate\n", ptr);
        abort();
    }
    if (munmap(c->reg[at].base, c->reg[at].len) != 0) {
        fprintf(stderr, "mfpipe: checked backend: munmap(%p) failed: %s\n", ptr, strerror(errno));
        abort();
    }
    c->cur_bytes -= c->reg[at].len;
    c->n_reg--;
    memmove(c->reg + at, c->reg + at + 1, sizeof *c->reg * (size_t)(c->n_reg - at));
}

static void ck_write(mf_backend *be, void *dst, const void *host_src, size_t bytes) {
    mf_backend *in = ck_enter(be);
    in->i->write(in, dst, host_src, bytes);
    ck_leave(be);
}
static void ck_read(mf_backend *be, void *host_dst, const void *src, size_t bytes) {
    ck_no_sync(be, "read()");
    mf_backend *in = ck_enter(be);
    in->i->read(in, host_dst, src, bytes);
    ck_leave(be);
}
static void ck_copy(mf_backend *be, void *dst, const void *src, size_t bytes) {
    mf_backend *in = ck_enter(be);
    in->i->copy(in, dst, src, bytes);
    ck_leave(be);
}
static void ck_fill(mf_backend *be, float *dst, float value, int64_t n) {
    mf_backend *in = ck_enter(be);
    in->i->fill(in, dst, value, n);
    ck_leave(be);
}
static void ck_synchronize(mf_backend *be) {
    ck_no_sync(be, "synchronize()");
    mf_backend *in = ck_enter(be);
    in->i->synchronize(in);
    ck_leave(be);
}
static size_t ck_peak_bytes(mf_backend *be) {
    mf_backend *in = ck_enter(be);
    size_t inner_peak = in->i->peak_bytes(in);
    ck_leave(be);
    return ck(be)->peak_bytes + inner_peak;
}

/* ---- dense ---------------------------------------------------------------------------------- */

static void ck_gemm(mf_backend *be, int ta, int tb, int m, int n, int k, float alpha, const float *a,
                    const float *b, float beta, float *c) {
    mf_backend *in = ck_enter(be);
    in->i->gemm(in, ta, tb, m, n, k, alpha, a, b, beta, c);
    ck_leave(be);
}
static void ck_conv2d(mf_backend *be, const mf_conv_shape *s, const float *x, const float *w,
                      const float *bias, float *y) {
    mf_backend *in = ck_enter(be);
    in->i->conv2d(in, s, x, w, bias, y);
    ck_leave(be);
}
static void ck_conv2d_bwd_data(mf_backend *be, const mf_conv_shape *s, const float *dy, const float *w,
                               float *dx, int acc) {
    mf_backend *in = ck_enter(be);
    in->i->conv2d_bwd_data(in, s, dy, w, dx, acc);
    ck_leave(be);
}
static void ck_conv2d_bwd_filter(mf_backend *be, const mf_conv_shape *s, const float *x, const float *dy,
                                 float *dw, float *dbias) {
    mf_backend *in = ck_enter(be);
    in->i->conv2d_bwd_filter(in, s, x, dy, dw, dbias);
    ck_leave(be);
}

/* the optional reduced-precision entries: forwarded when inner has them, else what the graph would do */
static void ck_conv2d_bwd(mf_backend *be, const mf_conv_shape *s, const float *x, const float *dy, const float *w,
                          float *dw, float *dbias, float *dx, int acc) {
    mf_backend *in = ck_enter(be);
    if (in->i->conv2d_bwd) {
        in->i->conv2d_bwd(in, s, x, dy, w, dw, dbias, dx, acc);
    } else {
        in->i->conv2d_bwd_filter(in, s, x, dy, dw, dbias);
        in->i->conv2d_bwd_data(in, s, dy, w, dx, acc);
    }
    ck_leave(be);
}
static int ck_conv_bf16_x(mf_backend *be, const mf_conv_shape *s) {
    mf_backend *in = ck(be)->inner;
    return in->i->conv_bf16_x ? in->i->conv_bf16_x(in, s) : 0;
}
static void ck_gn_silu_bf16(mf_backend *be, int n, int c, int hw, int g, float eps, const float *x,
                            const float *gamma, const float *beta, void *y, float *mean, float *rstd, int blk) {
    mf_backend *in = ck_enter(be);
    MF_ASSERT(in->i->gn_silu_bf16);
    in->i->gn_silu_bf16(in, n, c, hw, g, eps, x, gamma, beta, y, mean, rstd, blk);
    ck_leave(be);
}
static void ck_params_epoch(mf_backend *be) {
    mf_backend *in = ck(be)->inner;
    if (in->i->params_epoch) in->i->params_epoch(in);
}

/* ---- normalisation -------------------------------------------------------------------------- */

static void ck_groupnorm(mf_backend *be, int n, int c, int hw, int g, float eps, const float *x,
                         const float *gamma, const float *beta, float *y, float *mean, float *rstd, int blk) {
    mf_backend *in = ck_enter(be);
    in->i->groupnorm(in, n, c, hw, g, eps, x, gamma, beta, y, mean, rstd, blk);
    ck_leave(be);
}
static void ck_groupnorm_bwd(mf_backend *be, int n, int c, int hw, int g, const float *x,
                             const float *gamma, const float *mean, const float *rstd, const float *dy,
                             float *dx, float *dgamma, float *dbeta, int acc, int blk) {
    mf_backend *in = ck_enter(be);
    in->i->groupnorm_bwd(in, n, c, hw, g, x, gamma, mean, rstd, dy, dx, dgamma, dbeta, acc, blk);
    ck_leave(be);
}
static void ck_groupnorm_jvp(mf_backend *be, int n, int c, int hw, int g, const float *x,
                             const float *gamma, const float *mean, const float *rstd, const float *tx,
                             float *ty, int blk) {
    mf_backend *in = ck_enter(be);
    in->i->groupnorm_jvp(in, n, c, hw, g, x, gamma, mean, rstd, tx, ty, blk);
    ck_leave(be);
}

static void ck_gn_silu(mf_backend *be, int n, int c, int hw, int g, float eps, const float *x, const float *gamma,
                       const float *beta, float *y, float *mean, float *rstd, int blk) {
    mf_backend *in = ck_enter(be);
    in->i->gn_silu(in, n, c, hw, g, eps, x, gamma, beta, y, mean, rstd, blk);
    ck_leave(be);
}
static void ck_gn_silu_bwd(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma,
                           const float *beta, const float *mean, const float *rstd, const float *dy, float *dx,
                           float *dgamma, float *dbeta, int acc, int blk) {
    mf_backend *in = ck_enter(be);
    in->i->gn_silu_bwd(in, n, c, hw, g, x, gamma, beta, mean, rstd, dy, dx, dgamma, dbeta, acc, blk);
    ck_leave(be);
}
static void ck_gn_silu_jvp(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma,
                           const float *beta, const float *mean, const float *rstd, const float *tx, float *ty,
                           int blk) {
    mf_backend *in = ck_enter(be);
    in->i->gn_silu_jvp(in, n, c, hw, g, x, gamma, beta, mean, rstd, tx, ty, blk);
    ck_leave(be);
}

/* ---- element-wise --------------------------------------------------------------------------- */

static void ck_silu(mf_backend *be, int64_t n, const float *x, float *y) {
    mf_backend *in = ck_enter(be);
    in->i->silu(in, n, x, y);
    ck_leave(be);
}
static void ck_silu_bwd(mf_backend *be, int64_t n, const float *x, const float *dy, float *dx, int acc) {
    mf_backend *in = ck_enter(be);
    in->i->silu_bwd(in, n, x, dy, dx, acc);
    ck_leave(be);
}
static void ck_silu_jvp(mf_backend *be, int64_t n, const float *x, const float *tx, float *ty) {
    mf_backend *in = ck_enter(be);
    in->i->silu_jvp(in, n, x, tx, ty);
    ck_leave(be);
}
static void ck_axpby(mf_backend *be, int64_t n, float a, const float *x, float b, float *y) {
    mf_backend *in = ck_enter(be);
    in->i->axpby(in, n, a, x, b, y);
    ck_leave(be);
}
static void ck_add2(mf_backend *be, int64_t n, float a, const float *x, float b, const float *y, float *z) {
    mf_backend *in = ck_enter(be);
    in->i->add2(in, n, a, x, b, y, z);
    ck_leave(be);
}
static void ck_add_channel(mf_backend *be, int n, int c, int hw, const float *x, const float *e, float *y,
                           int blk) {
    mf_backend *in = ck_enter(be);
    in->i->add_channel(in, n, c, hw, x, e, y, blk);
    ck_leave(be);
}
static void ck_sum_channel(mf_backend *be, int n, int c, int hw, const float *dy, float *de, int acc, int blk) {
    mf_backend *in = ck_enter(be);
    in->i->sum_channel(in, n, c, hw, dy, de, acc, blk);
    ck_leave(be);
}
static void ck_sum_rows(mf_backend *be, int rows, int cols, const float *dy, float *dbias) {
    mf_backend *in = ck_enter(be);
    in->i->sum_rows(in, rows, cols, dy, dbias);
    ck_leave(be);
}
static void ck_add_bias_rows(mf_backend *be, int rows, int cols, const float *bias, float *y) {
    mf_backend *in = ck_enter(be);
    in->i->add_bias_rows(in, rows, cols, bias, y);
    ck_leave(be);
}

/* ---- layout --------------------------------------------------------------------------------- */

static void ck_copy_channels(mf_backend *be, int n, int hw, int nc, const float *src, int src_c, int src_c0,
                             int src_blk, float *dst, int dst_c, int dst_c0, int dst_blk, int acc) {
    mf_backend *in = ck_enter(be);
    in->i->copy_channels(in, n, hw, nc, src, src_c, src_c0, src_blk, dst, dst_c, dst_c0, dst_blk, acc);
    ck_leave(be);
}
static void ck_upsample2x(mf_backend *be, int n, int c, int h, int w, const float *x, float *y, int blk) {
    mf_backend *in = ck_enter(be);
    in->i->upsample2x(in, n, c, h, w, x, y, blk);
    ck_leave(be);
}
static void ck_upsample2x_bwd(mf_backend *be, int n, int c, int h, int w, const float *dy, float *dx,
                              int acc, int blk) {
    mf_backend *in = ck_enter(be);
    in->i->upsample2x_bwd(in, n, c, h, w, dy, dx, acc, blk);
    ck_leave(be);
}
static void ck_embed(mf_backend *be, int n, int dim, const int32_t *idx, const float *table, float *y) {
    mf_backend *in = ck_enter(be);
    in->i->embed(in, n, dim, idx, table, y);
    ck_leave(be);
}
static void ck_embed_bwd(mf_backend *be, int n, int dim, const int32_t *idx, const float *dy,
                         float *dtable) {
    mf_backend *in = ck_enter(be);
    in->i->embed_bwd(in, n, dim, idx, dy, dtable);
    ck_leave(be);
}

/* ---- time features -------------------------------------------------------------------------- */

static void ck_fourier(mf_backend *be, int n, int half, const float *t, const float *freq, float *y) {
    mf_backend *in = ck_enter(be);
    in->i->fourier(in, n, half, t, freq, y);
    ck_leave(be);
}
static void ck_fourier_jvp(mf_backend *be, int n, int half, const float *t, const float *freq,
                           const float *tt, float *ty) {
    mf_backend *in = ck_enter(be);
    in->i->fourier_jvp(in, n, half, t, freq, tt, ty);
    ck_leave(be);
}

/* ---- reductions and optimiser --------------------------------------------------------------- */

static void ck_sq_err_rows(mf_backend *be, int n, int64_t d, const float *a, const float *b, double *out) {
    ck_no_sync(be, "sq_err_rows()");
    mf_backend *in = ck_enter(be);
    in->i->sq_err_rows(in, n, d, a, b, out);
    ck_leave(be);
}
static void ck_rows_axpby(mf_backend *be, int n, int64_t d, const float *a, const float *x, const float *b,
                          const float *y, float *z) {
    mf_backend *in = ck_enter(be);
    in->i->rows_axpby(in, n, d, a, x, b, y, z);
    ck_leave(be);
}
static void ck_row_sq_err(mf_backend *be, int n, int64_t d, const float *x, const float *y, float *e) {
    mf_backend *in = ck_enter(be);
    in->i->row_sq_err(in, n, d, x, y, e);
    ck_leave(be);
}
static void ck_pow_weight(mf_backend *be, int n, const float *e, float c, float p, float scale, float *w) {
    mf_backend *in = ck_enter(be);
    in->i->pow_weight(in, n, e, c, p, scale, w);
    ck_leave(be);
}
static double ck_sumsq(mf_backend *be, int64_t n, const float *x) {
    ck_no_sync(be, "sumsq()");
    mf_backend *in = ck_enter(be);
    double s = in->i->sumsq(in, n, x);
    ck_leave(be);
    return s;
}
static void ck_adamw(mf_backend *be, int64_t n, float *p, const float *grad, float *m, float *v, float lr,
                     float b1, float b2, float eps, float wd, int64_t step, float gscale) {
    mf_backend *in = ck_enter(be);
    in->i->adamw(in, n, p, grad, m, v, lr, b1, b2, eps, wd, step, gscale);
    ck_leave(be);
}
static void ck_ema(mf_backend *be, int64_t n, float *e, const float *p, float d) {
    mf_backend *in = ck_enter(be);
    in->i->ema(in, n, e, p, d);
    ck_leave(be);
}

static void ck_adamw_step(mf_backend *be, int64_t n, float *p, const float *grad, float *m, float *v, float *st,
                          float b1, float b2, float eps, float wd, float clip) {
    mf_backend *in = ck_enter(be);
    in->i->adamw_step(in, n, p, grad, m, v, st, b1, b2, eps, wd, clip);
    ck_leave(be);
}
static void ck_randn(mf_backend *be, uint64_t seed, uint32_t purpose, uint64_t step, int64_t n, float *out) {
    mf_backend *in = ck_enter(be);
    in->i->randn(in, seed, purpose, step, n, out);
    ck_leave(be);
}
static const char *ck_version(mf_backend *be) { return ck(be)->inner->i->version(ck(be)->inner); }
static const char *ck_error(mf_backend *be) { return ck(be)->inner->i->error(ck(be)->inner); }

/* Graphs, emulated (MFPIPE_CHECKED_GRAPHS=1): the work between graph_begin and graph_end runs at
 * once, as the CPU runs it, and any host synchronisation in between aborts: the CPU tests prove that
 * the steps the GPU records contain none. graph_launch has nothing left to do. */
static int ck_graph_begin(mf_backend *be) {
    MF_ASSERT(!ck(be)->recording);
    ck(be)->recording = 1;
    return 0;
}
static void *ck_graph_end(mf_backend *be, void *prev) {
    ck_ctx *c = ck(be);
    MF_ASSERT(c->recording);
    c->recording = 0;
    c->graphs_recorded++;
    return prev ? prev : (void *)c; /* any non-NULL handle */
}
static int ck_graph_launch(mf_backend *be, void *graph) {
    MF_ASSERT(!ck(be)->recording && graph);
    return 0;
}
static void ck_graph_free(mf_backend *be, void *graph) { (void)be, (void)graph; }

/* ---- the table ------------------------------------------------------------------------------ */
/* host_alloc and the graph entries are left NULL: the checked backend runs everything eagerly. */

static const mf_backend_i check_iface = {
    .name = "checked",
    .alloc = ck_alloc,
    .free = ck_free,
    .write = ck_write,
    .read = ck_read,
    .copy = ck_copy,
    .fill = ck_fill,
    .synchronize = ck_synchronize,
    .peak_bytes = ck_peak_bytes,
    .gemm = ck_gemm,
    .conv2d = ck_conv2d,
    .conv2d_bwd_data = ck_conv2d_bwd_data,
    .conv2d_bwd_filter = ck_conv2d_bwd_filter,
    .groupnorm = ck_groupnorm,
    .groupnorm_bwd = ck_groupnorm_bwd,
    .groupnorm_jvp = ck_groupnorm_jvp,
    .gn_silu = ck_gn_silu,
    .gn_silu_bwd = ck_gn_silu_bwd,
    .gn_silu_jvp = ck_gn_silu_jvp,
    .silu = ck_silu,
    .silu_bwd = ck_silu_bwd,
    .silu_jvp = ck_silu_jvp,
    .axpby = ck_axpby,
    .add2 = ck_add2,
    .add_channel = ck_add_channel,
    .sum_channel = ck_sum_channel,
    .sum_rows = ck_sum_rows,
    .add_bias_rows = ck_add_bias_rows,
    .copy_channels = ck_copy_channels,
    .upsample2x = ck_upsample2x,
    .upsample2x_bwd = ck_upsample2x_bwd,
    .embed = ck_embed,
    .embed_bwd = ck_embed_bwd,
    .fourier = ck_fourier,
    .fourier_jvp = ck_fourier_jvp,
    .sq_err_rows = ck_sq_err_rows,
    .rows_axpby = ck_rows_axpby,
    .row_sq_err = ck_row_sq_err,
    .pow_weight = ck_pow_weight,
    .sumsq = ck_sumsq,
    .adamw = ck_adamw,
    .ema = ck_ema,
    .adamw_step = ck_adamw_step,
    .randn = ck_randn,
    .destroy = mf_checked_backend_free,
    .version = ck_version,
    .error = ck_error,
    .conv2d_bwd = ck_conv2d_bwd,
    .conv_bf16_x = ck_conv_bf16_x,
    .gn_silu_bf16 = ck_gn_silu_bf16,
    .params_epoch = ck_params_epoch,
};
/* The same table with the graph emulation (MFPIPE_CHECKED_GRAPHS=1), filled from it on first use. */
static mf_backend_i check_iface_graphs;
static pthread_once_t graphs_once = PTHREAD_ONCE_INIT;
static void init_graphs_iface(void) {
    check_iface_graphs = check_iface;
    check_iface_graphs.graph_begin = ck_graph_begin;
    check_iface_graphs.graph_end = ck_graph_end;
    check_iface_graphs.graph_launch = ck_graph_launch;
    check_iface_graphs.graph_free = ck_graph_free;
}

/* Wrap `inner` (which the new backend owns from here on: freeing the wrapper frees it). The
 * wrapper reports inner's thread count. NULL (inner left alone) if inner is NULL. */
mf_backend *mf_checked_backend_new(mf_backend *inner) {
    if (!inner) return NULL;
    long page = sysconf(_SC_PAGESIZE);
    mf_backend *be = mf_xcalloc(1, sizeof *be);
    ck_ctx *c = mf_xcalloc(1, sizeof *c);
    c->inner = inner;
    c->page = page > 0 ? (size_t)page : 4096;
    const char *gr = getenv("MFPIPE_CHECKED_GRAPHS");
    if (gr && strcmp(gr, "1") == 0) pthread_once(&graphs_once, init_graphs_iface);
    be->i = gr && strcmp(gr, "1") == 0 ? &check_iface_graphs : &check_iface;
    be->ctx = c;
    be->threads = inner->threads;
    be->cblock = inner->cblock;
    be->precision = inner->precision;
    be->host_memory = inner->host_memory;
    be->bf16_act = inner->bf16_act;
    be->kind = inner->kind;
    return be;
}

/* Unmaps every tensor still allocated through the wrapper (later host or kernel use of them faults),
 * then frees the inner backend and the wrapper. */
void mf_checked_backend_free(mf_backend *be) {
    if (!be) return;
    MF_ASSERT(be->i == &check_iface || be->i == &check_iface_graphs);
    ck_ctx *c = ck(be);
    if (be->i == &check_iface_graphs) fprintf(stderr, "mfpipe: checked backend: %ld graphs recorded\n", c->graphs_recorded);
    MF_ASSERT(c->depth == 0);
    for (int i = 0; i < c->n_reg; i++) munmap(c->reg[i].base, c->reg[i].len);
    free(c->reg);
    mf_backend_free(c->inner);
    free(c);
    free(be);
}
