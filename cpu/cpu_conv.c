/* cpu_conv.c - 2-D convolution on the CPU: im2col / col2im and one single-threaded OpenBLAS GEMM per
 * work item, work items (a few samples each) spread over OpenMP threads in a fixed partition. A 1x1
 * stride-1 convolution of one sample is a plain GEMM on the input itself (no im2col). */
#include <cblas.h>
#include <string.h>

#include "cpu_internal.h"
#include "mf_error.h"

/* Automatic batching: a work item takes enough samples to give its GEMM about this many columns
 * (ho*wo per sample); measured on the MNIST UNet shapes, see docs/cpu-backend.md. */
#define CONV_TARGET_COLS 256
/* ... but never a column buffer (per thread) larger than this many floats. */
#define CONV_MAX_COL_FLOATS (4u << 20)

void mfcpu_set_conv_nb(mf_backend *be, int nb) { mfcpu(be)->conv_nb = nb > 0 ? nb : 0; }

static void check_shape(const mf_conv_shape *s) {
    MF_ASSERT(s->n > 0 && s->ci > 0 && s->h > 0 && s->w > 0 && s->co > 0 && s->k > 0);
    MF_ASSERT(s->stride > 0 && s->pad >= 0);
    MF_ASSERT(s->ho == (s->h + 2 * s->pad - s->k) / s->stride + 1 && s->ho > 0);
    MF_ASSERT(s->wo == (s->w + 2 * s->pad - s->k) / s->stride + 1 && s->wo > 0);
}

static int is_pointwise(const mf_conv_shape *s) { return s->k == 1 && s->stride == 1 && s->pad == 0; }

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

/* Output columns ox whose input column ix = ox*stride - pad + kx lies inside [0, w): [*a, *b). */
static void valid_ox(const mf_conv_shape *s, int kx, int *a, int *b) {
    const int st = s->stride, lo = s->pad - kx, hi = s->w - 1 + s->pad - kx;
    *a = lo > 0 ? (lo + st - 1) / st : 0;
    *b = hi >= 0 ? imin(hi / st + 1, s->wo) : 0;
    if (*a > *b) *a = *b;
}

/* col[r, p - p0] for output pixels p in [p0, p1) of one sample x (ci, h, w); row r = (c*k + ky)*k + kx;
 * rows are ldcol floats apart. Padding reads as zero. */
void mfcpu_im2col(const float *x, const mf_conv_shape *s, int p0, int p1, float *col, int64_t ldcol) {
    const int k = s->k, st = s->stride, h = s->h, w = s->w, wo = s->wo;
    for (int c = 0; c < s->ci; c++) {
        const float *xc = x + (int64_t)c * h * w;
        for (int ky = 0; ky < k; ky++) {
            for (int kx = 0; kx < k; kx++) {
                float *dst = col + ((int64_t)(c * k + ky) * k + kx) * ldcol;
                int oxa, oxb;
                valid_ox(s, kx, &oxa, &oxb);
                for (int p = p0; p < p1;) {
                    const int oy = p / wo, ox0 = p - oy * wo, ox1 = imin(wo, ox0 + (p1 - p));
                    const int iy = oy * st - s->pad + ky;
                    float *d = dst + (p - p0) - ox0; /* d[ox] is pixel (oy, ox) */
                    if (iy < 0 || iy >= h) {
                        memset(d + ox0, 0, sizeof(float) * (size_t)(ox1 - ox0));
                    } else {
                        const int a = imax(ox0, imin(oxa, ox1)), b = imax(a, imin(ox1, oxb));
                        const int64_t base = (int64_t)iy * w - s->pad + kx; /* x index of ox = 0 */
                        for (int ox = ox0; ox < a; ox++) d[ox] = 0.0f;
                        if (st == 1) {
                            if (b > a) memcpy(d + a, xc + base + a, sizeof(float) * (size_t)(b - a));
                        } else {
                            for (int ox = a; ox < b; ox++) d[ox] = xc[base + (int64_t)ox * st];
                        }
                        for (int ox = b; ox < ox1; ox++) d[ox] = 0.0f;
                    }
                    p += ox1 - ox0;
                }
            }
        }
    }
}

/* The adjoint of im2col over all pixels, for input channels [c0, c1) of one sample: dx[c, iy, ix] +=
 * col[r, p] (col's first row is that of channel c0). Sequential, so the order of the sums is fixed. */
void mfcpu_col2im(const float *col, int64_t ldcol, const mf_conv_shape *s, int c0, int c1, float *dx) {
    const int k = s->k, st = s->stride, h = s->h, w = s->w, ho = s->ho, wo = s->wo;
    for (int c = c0; c < c1; c++) {
        float *dxc = dx + (int64_t)c * h * w;
        for (int ky = 0; ky < k; ky++) {
            for (int kx = 0; kx < k; kx++) {
                const float *src = col + ((int64_t)((c - c0) * k + ky) * k + kx) * ldcol;
                int oxa, oxb;
                valid_ox(s, kx, &oxa, &oxb);
                for (int oy = 0; oy < ho; oy++) {
                    const int iy = oy * st - s->pad + ky;
                    if (iy < 0 || iy >= h) continue;
                    const float *sr = src + (int64_t)oy * wo;
                    const int64_t base = (int64_t)iy * w - s->pad + kx;
                    if (st == 1) {
                        float *d = dxc + base;
                        for (int ox = oxa; ox < oxb; ox++) d[ox] += sr[ox];
                    } else {
                        for (int ox = oxa; ox < oxb; ox++) dxc[base + (int64_t)ox * st] += sr[ox];
                    }
                }
            }
        }
    }
}

/* The work decomposition shared by the three kernels: `nchunk` chunks of consecutive samples (chunk j
 * is samples [n*j/nchunk, n*(j+1)/nchunk)), each possibly cut into `nblk` blocks (of output pixels
 * for the forward pass, of input channels for the data gradient) when there are fewer samples than
 * threads; slot s of `threads` processes items [items*s/threads, items*(s+1)/threads) in order. */
typedef struct plan {
    int nchunk, nblk, items, slots, maxnb; /* maxnb: the largest chunk */
} plan;

static plan make_plan(mf_backend *be, const mf_conv_shape *s, int blk_len, int allow_blocks) {
    const int T = be->threads, hw = s->ho * s->wo;
    const int64_t K = (int64_t)s->ci * s->k * s->k;
    plan pl;
    pl.nblk = 1;
    if (s->n < T && allow_blocks && blk_len >= T) {
        pl.nchunk = s->n;
        pl.nblk = T;
    } else {
        int nb = mfcpu(be)->conv_nb;
        if (nb <= 0) nb = (CONV_TARGET_COLS + hw - 1) / hw;
        int64_t cap = (int64_t)CONV_MAX_COL_FLOATS / ((K > s->co ? K : s->co) * hw);
        if (nb > cap) nb = (int)cap;
        if (nb < 1) nb = 1;
        int chunks = (s->n + nb - 1) / nb;
        chunks = ((chunks + T - 1) / T) * T; /* a multiple of the thread count, for balance */
        pl.nchunk = imin(chunks, s->n);
    }
    pl.items = pl.nchunk * pl.nblk;
    pl.slots = imin(T, pl.items);
    pl.maxnb = (s->n + pl.nchunk - 1) / pl.nchunk;
    return pl;
}

static void item_range(const plan *pl, int n, int blk_len, int item, int *i0, int *i1, int *b0, int *b1) {
    const int j = item / pl->nblk, q = item % pl->nblk;
    *i0 = (int)mfcpu_split(n, pl->nchunk, j);
    *i1 = (int)mfcpu_split(n, pl->nchunk, j + 1);
    *b0 = (int)mfcpu_split(blk_len, pl->nblk, q);
    *b1 = (int)mfcpu_split(blk_len, pl->nblk, q + 1);
}

/* y (n, co, ho, wo) = conv(x, w) + bias */
void mfcpu_conv2d(mf_backend *be, const mf_conv_shape *s, const float *x, const float *w,
                  const float *bias, float *y) {
    check_shape(s);
    const int hw = s->ho * s->wo, K = s->ci * s->k * s->k, co = s->co;
    const int64_t xs = (int64_t)s->ci * s->h * s->w, ys = (int64_t)co * hw;
    const plan pl = make_plan(be, s, hw, 1);
    const int64_t cols = (int64_t)pl.maxnb * ((hw + pl.nblk - 1) / pl.nblk);
    const int direct1 = is_pointwise(s) && pl.maxnb == 1;
    const size_t col_f = direct1 ? 0 : mfcpu_round16((size_t)K * cols);
    const size_t tmp_f = pl.maxnb > 1 ? mfcpu_round16((size_t)co * cols) : 0;
    float *ws = (col_f + tmp_f) ? mfcpu_workspace(be, sizeof(float) * (col_f + tmp_f) * pl.slots) : NULL;

#pragma omp parallel for num_threads(pl.slots) schedule(static, 1) if (pl.slots > 1)
    for (int sl = 0; sl < pl.slots; sl++) {
        float *col = ws ? ws + (col_f + tmp_f) * sl : NULL, *tmp = col ? col + col_f : NULL;
        const int it0 = (int)mfcpu_split(pl.items, pl.slots, sl);
        const int it1 = (int)mfcpu_split(pl.items, pl.slots, sl + 1);
        for (int it = it0; it < it1; it++) {
            int i0, i1, p0, p1;
            item_range(&pl, s->n, hw, it, &i0, &i1, &p0, &p1);
            const int nbi = i1 - i0, np = p1 - p0;
            if (nbi <= 0 || np <= 0) continue;
            if (nbi == 1) { /* GEMM straight into y[i0][:, p0:p1] (ldc = hw), bias pre-filled */
                float *yi = y + i0 * ys + p0;
                for (int c = 0; c < co; c++)
                    for (int p = 0; p < np; p++) yi[(int64_t)c * hw + p] = bias ? bias[c] : 0.0f;
                const float *b = x + i0 * xs + p0;
                int64_t ldb = hw;
                if (!direct1) {
                    mfcpu_im2col(x + i0 * xs, s, p0, p1, col, np);
                    b = col;
                    ldb = np;
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, co, np, K, 1.0f, w, K, b,
                            (int)ldb, 1.0f, yi, hw);
            } else { /* several samples side by side: col (K, nbi*hw) -> tmp (co, nbi*hw) -> y */
                const int64_t ld = (int64_t)nbi * hw;
                for (int b = 0; b < nbi; b++) mfcpu_im2col(x + (i0 + b) * xs, s, 0, hw, col + b * hw, ld);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, co, (int)ld, K, 1.0f, w, K, col,
                            (int)ld, 0.0f, tmp, (int)ld);
                for (int b = 0; b < nbi; b++) {
                    float *yi = y + (i0 + b) * ys;
                    for (int c = 0; c < co; c++) {
                        const float bc = bias ? bias[c] : 0.0f, *src = tmp + c * ld + (int64_t)b * hw;
                        float *dst = yi + (int64_t)c * hw;
                        for (int p = 0; p < hw; p++) dst[p] = src[p] + bc;
                    }
                }
            }
        }
    }
}

/* dx (+)= conv_transpose(dy, w): dcol = W^T dy, then col2im. */
void mfcpu_conv2d_bwd_data(mf_backend *be, const mf_conv_shape *s, const float *dy, const float *w,
                           float *dx, int acc) {
    check_shape(s);
    const int hw = s->ho * s->wo, kk = s->k * s->k, K = s->ci * kk, co = s->co;
    const int64_t xs = (int64_t)s->ci * s->h * s->w, ys = (int64_t)co * hw, plane = (int64_t)s->h * s->w;
    const plan pl = make_plan(be, s, s->ci, 1);
    const int64_t cols = (int64_t)pl.maxnb * hw;
    const int kb = ((s->ci + pl.nblk - 1) / pl.nblk) * kk; /* rows of the largest channel block */
    const int direct1 = is_pointwise(s) && pl.maxnb == 1;
    const size_t col_f = direct1 ? 0 : mfcpu_round16((size_t)kb * cols);
    const size_t dyc_f = pl.maxnb > 1 ? mfcpu_round16((size_t)co * cols) : 0;
    float *ws = (col_f + dyc_f) ? mfcpu_workspace(be, sizeof(float) * (col_f + dyc_f) * pl.slots) : NULL;

#pragma omp parallel for num_threads(pl.slots) schedule(static, 1) if (pl.slots > 1)
    for (int sl = 0; sl < pl.slots; sl++) {
        float *dcol = ws ? ws + (col_f + dyc_f) * sl : NULL, *dyc = dcol ? dcol + col_f : NULL;
        const int it0 = (int)mfcpu_split(pl.items, pl.slots, sl);
        const int it1 = (int)mfcpu_split(pl.items, pl.slots, sl + 1);
        for (int it = it0; it < it1; it++) {
            int i0, i1, c0, c1;
            item_range(&pl, s->n, s->ci, it, &i0, &i1, &c0, &c1);
            const int nbi = i1 - i0, rows = (c1 - c0) * kk;
            if (nbi <= 0 || c1 <= c0) continue;
            const float *wb = w + c0 * kk; /* W[:, c0*kk ..) as a (co, rows) block, ld K */
            if (direct1) {                 /* dx[i0][c0:c1] (+)= W[:, c0:c1]^T dy[i0] */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, rows, hw, co, 1.0f, wb, K,
                            dy + i0 * ys, hw, acc ? 1.0f : 0.0f, dx + i0 * xs + c0 * plane, hw);
                continue;
            }
            const int64_t ld = (int64_t)nbi * hw;
            const float *g = dy + i0 * ys;
            if (nbi > 1) { /* gather dy of the chunk side by side: dyc (co, nbi*hw) */
                for (int b = 0; b < nbi; b++)
                    for (int c = 0; c < co; c++)
                        memcpy(dyc + c * ld + (int64_t)b * hw, dy + (i0 + b) * ys + (int64_t)c * hw,
                               sizeof(float) * (size_t)hw);
                g = dyc;
            }
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, rows, (int)ld, co, 1.0f, wb, K, g,
                        (int)ld, 0.0f, dcol, (int)ld);
            for (int b = 0; b < nbi; b++) {
                float *dxi = dx + (i0 + b) * xs;
                if (!acc) memset(dxi + c0 * plane, 0, sizeof(float) * (size_t)((c1 - c0) * plane));
                mfcpu_col2im(dcol + (int64_t)b * hw, ld, s, c0, c1, dxi);
            }
        }
    }
}

/* dw += sum_i dy_i col_i^T; dbias += sum of dy over n, h, w. Slot 0 accumulates into dw itself,
 * slot s > 0 into a zeroed partial buffer; the partials are then added to dw in slot order. */
void mfcpu_conv2d_bwd_filter(mf_backend *be, const mf_conv_shape *s, const float *x, const float *dy,
                             float *dw, float *dbias) {
    check_shape(s);
    const int hw = s->ho * s->wo, K = s->ci * s->k * s->k, co = s->co;
    const int64_t xs = (int64_t)s->ci * s->h * s->w, ys = (int64_t)co * hw, wsz = (int64_t)co * K;
    const plan pl = make_plan(be, s, 1, 0);
    const int64_t cols = (int64_t)pl.maxnb * hw;
    const int direct1 = is_pointwise(s) && pl.maxnb == 1;
    const size_t col_f = direct1 ? 0 : mfcpu_round16((size_t)K * cols);
    const size_t dyc_f = pl.maxnb > 1 ? mfcpu_round16((size_t)co * cols) : 0;
    const size_t part_f = mfcpu_round16((size_t)wsz);
    const size_t per = col_f + dyc_f; /* per slot; then slots-1 partial dw buffers */
    const size_t total = per * pl.slots + part_f * (pl.slots - 1);
    float *ws = total ? mfcpu_workspace(be, sizeof(float) * total) : NULL;
    float *parts = ws ? ws + per * pl.slots : NULL; /* partial of slot s > 0: parts + part_f*(s-1) */

#pragma omp parallel for num_threads(pl.slots) schedule(static, 1) if (pl.slots > 1)
    for (int sl = 0; sl < pl.slots; sl++) {
        float *col = ws ? ws + per * sl : NULL, *dyc = col ? col + col_f : NULL, *part = dw;
        if (sl > 0) {
            part = parts + part_f * (sl - 1);
            memset(part, 0, sizeof(float) * (size_t)wsz);
        }
        const int it0 = (int)mfcpu_split(pl.items, pl.slots, sl);
        const int it1 = (int)mfcpu_split(pl.items, pl.slots, sl + 1);
        for (int it = it0; it < it1; it++) {
            int i0, i1, u0, u1;
            item_range(&pl, s->n, 1, it, &i0, &i1, &u0, &u1);
            const int nbi = i1 - i0;
            if (nbi <= 0) continue;
            const int64_t ld = (int64_t)nbi * hw;
            const float *g = dy + i0 * ys, *c = x + i0 * xs;
            if (nbi > 1) {
                for (int b = 0; b < nbi; b++)
                    for (int o = 0; o < co; o++)
                        memcpy(dyc + o * ld + (int64_t)b * hw, dy + (i0 + b) * ys + (int64_t)o * hw,
                               sizeof(float) * (size_t)hw);
                g = dyc;
            }
            if (!direct1) {
                for (int b = 0; b < nbi; b++) mfcpu_im2col(x + (i0 + b) * xs, s, 0, hw, col + b * hw, ld);
                c = col;
            }
            /* part (co, K) += g (co, ld) c^T (ld, K) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, co, K, (int)ld, 1.0f, g, (int)ld, c,
                        (int)ld, 1.0f, part, K);
        }
    }
    if (pl.slots > 1) { /* dw += part_1 + ... in slot order, in parallel over fixed blocks of dw */
        const int T = be->threads;
        const int rs = wsz >= MFCPU_PAR_MIN ? T : 1;
#pragma omp parallel for num_threads(rs) schedule(static, 1) if (rs > 1)
        for (int r = 0; r < rs; r++) {
            const int64_t j0 = mfcpu_split(wsz, rs, r), j1 = mfcpu_split(wsz, rs, r + 1);
            for (int sl = 1; sl < pl.slots; sl++) {
                const float *part = parts + part_f * (sl - 1);
                for (int64_t j = j0; j < j1; j++) dw[j] += part[j];
            }
        }
    }
    if (dbias) {
        const int bs = (int64_t)s->n * co * hw >= MFCPU_PAR_MIN ? imin(be->threads, co) : 1;
#pragma omp parallel for num_threads(bs) schedule(static, 1) if (bs > 1)
        for (int r = 0; r < bs; r++) {
            const int o0 = (int)mfcpu_split(co, bs, r), o1 = (int)mfcpu_split(co, bs, r + 1);
            for (int o = o0; o < o1; o++) {
                double acc = 0.0;
                for (int i = 0; i < s->n; i++) acc += mfcpu_dsum(dy + i * ys + (int64_t)o * hw, hw);
                dbias[o] += (float)acc;
            }
        }
    }
}
