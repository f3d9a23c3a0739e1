/* cpu_conv.c - 2-D convolution on the CPU: im2col / col2im and one single-threaded OpenBLAS GEMM per
 * work item, work items (a few samples each) spread over OpenMP threads in a fixed partition. A 1x1
 * stride-1 convolution of one sample is a plain GEMM on the input itself (no im2col). */
#include <cblas.h>
#include <string.h>

#include "cpu_internal.h"
#include "mf_error.h"

/* Automatic batching: a work item takes enough samples to give its GEMM about this many columns
 * (ho*wo per sample), except for pointwise convolutions (one sample: no copies at all); measured on the
 * MNIST UNet shapes, see docs/cpu-backend.md. */
#define CONV_TARGET_COLS 256
/* A one-sample GEMM takes the output pixels in blocks of this many columns (bounds the column buffer;
 * on 28x28 images, blocks of 256 measured slower than whole images). */
#define CONV_BLOCK_COLS 1024
/* ... but never a column buffer (per thread) larger than this many floats. */
#define CONV_MAX_COL_FLOATS (4u << 20)

void mfcpu_set_conv_nb(mf_backend *be, int nb) { mfcpu(be)->conv_nb = nb > 0 ? nb : 0; }
void mfcpu_set_conv_pb(mf_backend *be, int pb) { mfcpu(be)->conv_pb = pb > 0 ? pb : 0; }

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

/* The common case of a stride-1 "same" convolution over a whole sample: row (c, ky, kx) of col is channel
 * c shifted by (ky - pad, kx - pad), i.e. one contiguous copy of the plane plus zeroed borders (1.6-2x faster
 * than copying row by row on 28x28 planes). */
static void im2col_same(const float *x, const mf_conv_shape *s, float *col, int64_t ldcol) {
    const int k = s->k, h = s->h, w = s->w, hw = h * w;
    for (int c = 0; c < s->ci; c++) {
        const float *xc = x + (int64_t)c * hw;
        for (int ky = 0; ky < k; ky++) {
            const int dy = ky - s->pad, oya = imax(0, -dy), oyb = imin(h, h - dy); /* rows inside */
            for (int kx = 0; kx < k; kx++) {
                const int dx = kx - s->pad;
                float *restrict d = col + ((int64_t)(c * k + ky) * k + kx) * ldcol;
                memset(d, 0, sizeof(float) * (size_t)oya * w);
                memset(d + oyb * w, 0, sizeof(float) * (size_t)(h - oyb) * w);
                if (oyb <= oya) continue;
                /* d[p] = xc[p + dy*w + dx] for p in [oya*w, oyb*w), except the border columns; the first
                 * and last element may fall outside the plane (then they are border columns). */
                const int off = dy * w + dx;
                int q0 = oya * w, q1 = oyb * w;
                while (q0 < q1 && q0 + off < 0) d[q0++] = 0.0f;
                while (q1 > q0 && q1 - 1 + off >= hw) d[--q1] = 0.0f;
                memcpy(d + q0, xc + q0 + off, sizeof(float) * (size_t)(q1 - q0));
                for (int oy = oya; oy < oyb; oy++) { /* the columns that wrapped around a row end */
                    for (int ox = 0; ox < -dx; ox++) d[oy * w + ox] = 0.0f;
                    for (int ox = w - dx; ox < w; ox++) d[oy * w + ox] = 0.0f;
                }
            }
        }
    }
}

/* col[r, p - p0] for output pixels p in [p0, p1) of one sample x (ci, h, w); row r = (c*k + ky)*k + kx;
 * rows are ldcol floats apart. Padding reads as zero. */
void mfcpu_im2col(const float *x, const mf_conv_shape *s, int p0, int p1, float *col, int64_t ldcol) {
    const int k = s->k, st = s->stride, h = s->h, w = s->w, wo = s->wo;
    if (st == 1 && s->ho == h && wo == w && p0 == 0 && p1 == h * w && s->pad < w && s->pad < h) {
        im2col_same(x, s, col, ldcol);
        return;
    }
    const int oy_0 = p0 / wo, ox_0 = p0 - oy_0 * wo; /* the first pixel */
    for (int c = 0; c < s->ci; c++) {
        const float *xc = x + (int64_t)c * h * w;
        for (int ky = 0; ky < k; ky++) {
            for (int kx = 0; kx < k; kx++) {
                float *dst = col + ((int64_t)(c * k + ky) * k + kx) * ldcol;
                int oxa, oxb;
                valid_ox(s, kx, &oxa, &oxb);
                for (int p = p0, oy = oy_0, ox0 = ox_0; p < p1; oy++, ox0 = 0) {
                    const int ox1 = imin(wo, ox0 + (p1 - p));
                    const int iy = oy * st - s->pad + ky;
                    float *restrict d = dst + (p - p0) - ox0; /* d[ox] is pixel (oy, ox) */
                    if (iy < 0 || iy >= h) {
#pragma omp simd
                        for (int ox = ox0; ox < ox1; ox++) d[ox] = 0.0f;
                    } else {
                        const int a = imax(ox0, imin(oxa, ox1)), b = imax(a, imin(ox1, oxb));
                        for (int ox = ox0; ox < a; ox++) d[ox] = 0.0f;
                        if (b > a) { /* x index of ox: iy*w - pad + kx + ox*st, valid on [a, b) */
                            const float *restrict xr = xc + (int64_t)iy * w + (kx - s->pad) + (int64_t)a * st;
                            if (st == 1) {
#pragma omp simd
                                for (int j = 0; j < b - a; j++) d[a + j] = xr[j];
                            } else {
#pragma omp simd
                                for (int j = 0; j < b - a; j++) d[a + j] = xr[(int64_t)j * st];
                            }
                        }
                        for (int ox = b; ox < ox1; ox++) d[ox] = 0.0f;
                    }
                    p += ox1 - ox0;
                }
            }
        }
    }
}

/* The adjoint of im2col for input channels [c0, c1) and output pixels [p0, p1) of one sample:
 * dx[c, iy, ix] += col[r, p - p0] (col's first row is that of channel c0). Sequential, so the order of
 * the sums is fixed. */
void mfcpu_col2im(const float *col, int64_t ldcol, const mf_conv_shape *s, int c0, int c1, int p0, int p1,
                  float *dx) {
    const int k = s->k, st = s->stride, h = s->h, w = s->w, wo = s->wo;
    const int oy_0 = p0 / wo, ox_0 = p0 - oy_0 * wo;
    for (int c = c0; c < c1; c++) {
        float *dxc = dx + (int64_t)c * h * w;
        for (int ky = 0; ky < k; ky++) {
            for (int kx = 0; kx < k; kx++) {
                const float *src = col + ((int64_t)((c - c0) * k + ky) * k + kx) * ldcol;
                int oxa, oxb;
                valid_ox(s, kx, &oxa, &oxb);
                for (int p = p0, oy = oy_0, ox0 = ox_0; p < p1; oy++, ox0 = 0) {
                    const int ox1 = imin(wo, ox0 + (p1 - p));
                    const int iy = oy * st - s->pad + ky;
                    const int a = imax(ox0, imin(oxa, ox1)), b = imax(a, imin(ox1, oxb));
                    if (iy >= 0 && iy < h && b > a) {
                        const float *restrict sr = src + (p - p0) - ox0;
                        float *restrict d = dxc + (int64_t)iy * w + (kx - s->pad) + (int64_t)a * st;
                        if (st == 1) {
#pragma omp simd
                            for (int j = 0; j < b - a; j++) d[j] += sr[a + j];
                        } else {
#pragma omp simd
                            for (int j = 0; j < b - a; j++) d[(int64_t)j * st] += sr[a + j];
                        }
                    }
                    p += ox1 - ox0;
                }
            }
        }
    }
}

/* The work decomposition shared by the three kernels: `nchunk` chunks of consecutive samples (chunk j
 * is samples [n*j/nchunk, n*(j+1)/nchunk)), each possibly cut into `nblk` blocks (of output pixels
 * for the forward pass, of input channels for the data gradient) when there are fewer samples than
 * threads; slot s of `threads` processes items [items*s/threads, items*(s+1)/threads) in order.
 * Within an item of one sample, the output pixels go through the GEMMs in blocks of at most `pb`
 * columns (this bounds the column buffer for large images). */
typedef struct plan {
    int nchunk, nblk, items, slots, maxnb; /* maxnb: the largest chunk */
    int pb;                                /* pixel block of a one-sample item */
    int64_t cols;                          /* columns of the per-slot buffers */
} plan;

static plan make_plan(mf_backend *be, const mf_conv_shape *s, int blk_len, int allow_blocks) {
    const mfcpu_ctx *c = mfcpu(be);
    const int T = be->threads, hw = s->ho * s->wo;
    const int64_t K = (int64_t)s->ci * s->k * s->k;
    plan pl;
    pl.nblk = 1;
    if (s->n < T && allow_blocks && blk_len >= T) {
        pl.nchunk = s->n;
        pl.nblk = T;
    } else {
        int nb = c->conv_nb;
        if (nb <= 0) nb = is_pointwise(s) ? 1 : (CONV_TARGET_COLS + hw - 1) / hw;
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
    pl.pb = c->conv_pb > 0 ? c->conv_pb : CONV_BLOCK_COLS;
    if (pl.pb > hw) pl.pb = hw;
    pl.cols = pl.maxnb > 1 ? (int64_t)pl.maxnb * hw : pl.pb;
    return pl;
}

static void item_range(const plan *pl, int n, int blk_len, int item, int *i0, int *i1, int *b0, int *b1) {
    const int j = item / pl->nblk, q = item % pl->nblk;
    *i0 = (int)mfcpu_split(n, pl->nchunk, j);
    *i1 = (int)mfcpu_split(n, pl->nchunk, j + 1);
    *b0 = (int)mfcpu_split(blk_len, pl->nblk, q);
    *b1 = (int)mfcpu_split(blk_len, pl->nblk, q + 1);
}

/* dst (rows, nb*hw) = the (rows, hw) planes of nb consecutive samples (sample_stride floats apart) side
 * by side: the layout of a multi-sample GEMM operand. */
static void gather(float *dst, const float *src, int nb, int rows, int hw, int64_t sample_stride) {
    const int64_t ld = (int64_t)nb * hw;
    for (int b = 0; b < nb; b++)
        for (int r = 0; r < rows; r++)
            memcpy(dst + r * ld + (int64_t)b * hw, src + b * sample_stride + (int64_t)r * hw,
                   sizeof(float) * (size_t)hw);
}

/* y (n, co, ho, wo) = conv(x, w) + bias */
void mfcpu_conv2d(mf_backend *be, const mf_conv_shape *s, const float *x, const float *w, const float *bias,
                  float *y) {
    check_shape(s);
    const int hw = s->ho * s->wo, K = s->ci * s->k * s->k, co = s->co;
    const int64_t xs = (int64_t)s->ci * s->h * s->w, ys = (int64_t)co * hw;
    const plan pl = make_plan(be, s, hw, 1);
    const int direct1 = is_pointwise(s) && pl.maxnb == 1;
    const size_t col_f = direct1 ? 0 : mfcpu_round16((size_t)K * pl.cols);
    const size_t tmp_f = pl.maxnb > 1 ? mfcpu_round16((size_t)co * pl.cols) : 0;
    float *ws = (col_f + tmp_f) ? mfcpu_workspace(be, sizeof(float) * (col_f + tmp_f) * pl.slots) : NULL;

#pragma omp parallel for num_threads(pl.slots) schedule(static, 1) if (pl.slots > 1)
    for (int sl = 0; sl < pl.slots; sl++) {
        float *col = ws ? ws + (col_f + tmp_f) * sl : NULL, *tmp = col ? col + col_f : NULL;
        const int it0 = (int)mfcpu_split(pl.items, pl.slots, sl);
        const int it1 = (int)mfcpu_split(pl.items, pl.slots, sl + 1);
        for (int it = it0; it < it1; it++) {
            int i0, i1, p0, p1;
            item_range(&pl, s->n, hw, it, &i0, &i1, &p0, &p1);
            const int nbi = i1 - i0;
            if (nbi <= 0 || p1 <= p0) continue;
            if (nbi == 1) { /* GEMMs straight into y[i0][:, q0:q1] (ldc = hw), bias pre-filled */
                float *yi = y + i0 * ys;
                for (int q0 = p0; q0 < p1; q0 += pl.pb) {
                    const int q1 = imin(p1, q0 + pl.pb), np = q1 - q0;
                    for (int c = 0; c < co; c++)
                        for (int p = q0; p < q1; p++) yi[(int64_t)c * hw + p] = bias ? bias[c] : 0.0f;
                    const float *b = x + i0 * xs + q0;
                    int ldb = hw;
                    if (!direct1) {
                        mfcpu_im2col(x + i0 * xs, s, q0, q1, col, np);
                        b = col;
                        ldb = np;
                    }
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, co, np, K, 1.0f, w, K, b, ldb,
                                1.0f, yi + q0, hw);
                }
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
#pragma omp simd
                        for (int p = 0; p < hw; p++) dst[p] = src[p] + bc;
                    }
                }
            }
        }
    }
}

/* dx (+)= conv_transpose(dy, w): dcol = W^T dy, then col2im. */
void mfcpu_conv2d_bwd_data(mf_backend *be, const mf_conv_shape *s, const float *dy, const float *w, float *dx,
                           int acc) {
    check_shape(s);
    const int hw = s->ho * s->wo, kk = s->k * s->k, K = s->ci * kk, co = s->co;
    const int64_t xs = (int64_t)s->ci * s->h * s->w, ys = (int64_t)co * hw, plane = (int64_t)s->h * s->w;
    const plan pl = make_plan(be, s, s->ci, 1);
    const int kb = ((s->ci + pl.nblk - 1) / pl.nblk) * kk; /* rows of the largest channel block */
    const int direct1 = is_pointwise(s) && pl.maxnb == 1;
    const size_t col_f = direct1 ? 0 : mfcpu_round16((size_t)kb * pl.cols);
    const size_t dyc_f = pl.maxnb > 1 ? mfcpu_round16((size_t)co * pl.cols) : 0;
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
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, rows, hw, co, 1.0f, wb, K, dy + i0 * ys,
                            hw, acc ? 1.0f : 0.0f, dx + i0 * xs + c0 * plane, hw);
                continue;
            }
            for (int b = 0; b < nbi && !acc; b++)
                memset(dx + (i0 + b) * xs + c0 * plane, 0, sizeof(float) * (size_t)((c1 - c0) * plane));
            if (nbi == 1) { /* pixel blocks: dcol (rows, np) = Wb^T dy[i0][:, q0:q1], col2im */
                float *dxi = dx + i0 * xs;
                for (int q0 = 0; q0 < hw; q0 += pl.pb) {
                    const int q1 = imin(hw, q0 + pl.pb), np = q1 - q0;
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, rows, np, co, 1.0f, wb, K,
                                dy + i0 * ys + q0, hw, 0.0f, dcol, np);
                    mfcpu_col2im(dcol, np, s, c0, c1, q0, q1, dxi);
                }
            } else { /* dy of the chunk side by side: dyc (co, nbi*hw) */
                const int64_t ld = (int64_t)nbi * hw;
                gather(dyc, dy + i0 * ys, nbi, co, hw, ys);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, rows, (int)ld, co, 1.0f, wb, K, dyc,
                            (int)ld, 0.0f, dcol, (int)ld);
                for (int b = 0; b < nbi; b++)
                    mfcpu_col2im(dcol + (int64_t)b * hw, ld, s, c0, c1, 0, hw, dx + (i0 + b) * xs);
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
    const int direct1 = is_pointwise(s) && pl.maxnb == 1;
    const size_t col_f = direct1 ? 0 : mfcpu_round16((size_t)K * pl.cols);
    const size_t dyc_f = pl.maxnb > 1 ? mfcpu_round16((size_t)co * pl.cols) : 0;
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
            if (nbi == 1) { /* part (co, K) += dy[i0][:, q0:q1] col^T, by pixel blocks */
                for (int q0 = 0; q0 < hw; q0 += pl.pb) {
                    const int q1 = imin(hw, q0 + pl.pb), np = q1 - q0;
                    const float *c = x + i0 * xs + q0;
                    int ldc = hw;
                    if (!direct1) {
                        mfcpu_im2col(x + i0 * xs, s, q0, q1, col, np);
                        c = col;
                        ldc = np;
                    }
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, co, K, np, 1.0f, dy + i0 * ys + q0,
                                hw, c, ldc, 1.0f, part, K);
                }
            } else { /* part += dyc (co, nbi*hw) col^T */
                const int64_t ld = (int64_t)nbi * hw;
                gather(dyc, dy + i0 * ys, nbi, co, hw, ys);
                for (int b = 0; b < nbi; b++) mfcpu_im2col(x + (i0 + b) * xs, s, 0, hw, col + b * hw, ld);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, co, K, (int)ld, 1.0f, dyc, (int)ld, col,
                            (int)ld, 1.0f, part, K);
            }
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
#pragma omp simd
                for (int64_t j = j0; j < j1; j++) dw[j] += part[j];
            }
        }
    }
    if (dbias) {
        const int simd = mfcpu(be)->avx512;
        const int bs = (int64_t)s->n * co * hw >= MFCPU_PAR_MIN ? imin(be->threads, co) : 1;
#pragma omp parallel for num_threads(bs) schedule(static, 1) if (bs > 1)
        for (int r = 0; r < bs; r++) {
            const int o0 = (int)mfcpu_split(co, bs, r), o1 = (int)mfcpu_split(co, bs, r + 1);
            for (int o = o0; o < o1; o++) {
                double acc = 0.0;
                for (int i = 0; i < s->n; i++) acc += mfcpu_dsum(dy + i * ys + (int64_t)o * hw, hw, simd);
                dbias[o] += (float)acc;
            }
        }
    }
}
