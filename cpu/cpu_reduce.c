/* cpu_reduce.c - reductions (sum_channel, sum_rows, sq_err_rows, sumsq) and the optimiser updates
 * (AdamW, EMA) of the CPU backend. Every sum is accumulated in double over a partition that depends
 * only on the sizes, so results are bit-identical run to run (and across thread counts). The double sums
 * used by the other files (mfcpu_dsum & co.) are here too. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"
#include "mf_error.h"

/* ---- double-accumulated sums, compiled for the baseline ISA and (x86-64) for AVX-512 ------------ */
/* The build has no -march; the AVX-512 copies (8 double lanes instead of 2) are chosen at run time by
 * `simd` (mfcpu_ctx.avx512). Each copy is deterministic; the two may differ in the last bits. */

#define INLINE_BODY static inline __attribute__((always_inline))

INLINE_BODY double dsum_body(const float *x, int64_t n) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) s += (double)x[i];
    return s;
}
INLINE_BODY double dsqdev_body(const float *x, int64_t n, double m) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) {
        const double d = (double)x[i] - m;
        s += d * d;
    }
    return s;
}
INLINE_BODY void dsum2_body(const float *g, const float *x, int64_t n, double m, double *pa, double *pb) {
    double a = 0.0, b = 0.0;
#pragma omp simd reduction(+ : a, b)
    for (int64_t i = 0; i < n; i++) {
        const double gi = (double)g[i];
        a += gi;
        b += gi * ((double)x[i] - m);
    }
    *pa = a;
    *pb = b;
}
INLINE_BODY double dsqerr_body(const float *a, const float *b, int64_t n) {
    double s = 0.0;
    if (b) {
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < n; i++) {
            const double d = (double)a[i] - (double)b[i];
            s += d * d;
        }
    } else {
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < n; i++) s += (double)a[i] * (double)a[i];
    }
    return s;
}

#if defined(__GNUC__) && defined(__x86_64__)
#define AVX512 __attribute__((target("avx512f")))
AVX512 static double dsum_512(const float *x, int64_t n) { return dsum_body(x, n); }
AVX512 static double dsqdev_512(const float *x, int64_t n, double m) { return dsqdev_body(x, n, m); }
AVX512 static void dsum2_512(const float *g, const float *x, int64_t n, double m, double *a, double *b) {
    dsum2_body(g, x, n, m, a, b);
}
AVX512 static double dsqerr_512(const float *a, const float *b, int64_t n) { return dsqerr_body(a, b, n); }
#define DISPATCH(simd, call512, call) ((simd) ? (call512) : (call))
#else
#define DISPATCH(simd, call512, call) ((void)(simd), (call))
#endif

double mfcpu_dsum(const float *x, int64_t n, int simd) {
    return DISPATCH(simd, dsum_512(x, n), dsum_body(x, n));
}
double mfcpu_dsqdev(const float *x, int64_t n, double m, int simd) {
    return DISPATCH(simd, dsqdev_512(x, n, m), dsqdev_body(x, n, m));
}
void mfcpu_dsum2(const float *g, const float *x, int64_t n, double m, int simd, double *a, double *b) {
    DISPATCH(simd, dsum2_512(g, x, n, m, a, b), dsum2_body(g, x, n, m, a, b));
}
static double dsqerr(const float *a, const float *b, int64_t n, int simd) {
    return DISPATCH(simd, dsqerr_512(a, b, n), dsqerr_body(a, b, n));
}

void mfcpu_sum_channel(mf_backend *be, int n, int c, int hw, const float *dy, float *de, int acc) {
    const int simd = mfcpu(be)->avx512;
    const int64_t planes = (int64_t)n * c;
    const int slots = mfcpu_islots(be, planes, hw);
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int sl = 0; sl < slots; sl++)
        for (int64_t q = mfcpu_split(planes, slots, sl); q < mfcpu_split(planes, slots, sl + 1); q++) {
            const double s = mfcpu_dsum(dy + q * hw, hw, simd);
            de[q] = (float)(acc ? (double)de[q] + s : s);
        }
}

/* dbias[j] += sum_r dy[r, j]: blocks of SR_BLOCK columns, rows added in order in double. */
#define SR_BLOCK 128
void mfcpu_sum_rows(mf_backend *be, int rows, int cols, const float *dy, float *dbias) {
    if (rows <= 0 || cols <= 0) return;
    const int64_t nblk = (cols + SR_BLOCK - 1) / SR_BLOCK;
    const int slots = mfcpu_islots(be, nblk, (int64_t)rows * SR_BLOCK);
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int sl = 0; sl < slots; sl++)
        for (int64_t b = mfcpu_split(nblk, slots, sl); b < mfcpu_split(nblk, slots, sl + 1); b++) {
            const int j0 = (int)b * SR_BLOCK, j1 = j0 + SR_BLOCK < cols ? j0 + SR_BLOCK : cols;
            double acc[SR_BLOCK] = {0};
            for (int r = 0; r < rows; r++) {
                const float *g = dy + (int64_t)r * cols;
#pragma omp simd
                for (int j = j0; j < j1; j++) acc[j - j0] += (double)g[j];
            }
            for (int j = j0; j < j1; j++) dbias[j] = (float)((double)dbias[j] + acc[j - j0]);
        }
}

void mfcpu_sq_err_rows(mf_backend *be, int n, int64_t d, const float *a, const float *b, double *out) {
    const int simd = mfcpu(be)->avx512;
    const int slots = mfcpu_islots(be, n, d);
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int sl = 0; sl < slots; sl++)
        for (int64_t i = mfcpu_split(n, slots, sl); i < mfcpu_split(n, slots, sl + 1); i++)
            out[i] = dsqerr(a + i * d, b ? b + i * d : NULL, d, simd);
}

void mfcpu_row_sq_err(mf_backend *be, int n, int64_t d, const float *x, const float *y, float *e) {
    const int simd = mfcpu(be)->avx512;
    const int slots = mfcpu_islots(be, n, d);
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int sl = 0; sl < slots; sl++)
        for (int64_t i = mfcpu_split(n, slots, sl); i < mfcpu_split(n, slots, sl + 1); i++)
            e[i] = (float)dsqerr(x + i * d, y ? y + i * d : NULL, d, simd);
}

void mfcpu_pow_weight(mf_backend *be, int n, const float *e, float c, float p, float scale, float *w) {
    (void)be;
    for (int i = 0; i < n; i++) w[i] = p == 0.0f ? scale : (float)((double)scale * pow((double)e[i] + (double)c, -(double)p));
}

/* Fixed blocks of SQ_BLOCK elements; block sums added in block order. */
#define SQ_BLOCK 65536
double mfcpu_sumsq(mf_backend *be, int64_t n, const float *x) {
    const int simd = mfcpu(be)->avx512;
    if (n <= 0) return 0.0;
    const int64_t nblk = (n + SQ_BLOCK - 1) / SQ_BLOCK;
    if (nblk == 1) return dsqerr(x, NULL, n, simd);
    double stackbuf[64];
    double *part = nblk <= 64 ? stackbuf : mf_xmalloc(sizeof(double) * (size_t)nblk);
    const int slots = mfcpu_islots(be, nblk, SQ_BLOCK);
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int sl = 0; sl < slots; sl++)
        for (int64_t b = mfcpu_split(nblk, slots, sl); b < mfcpu_split(nblk, slots, sl + 1); b++) {
            const int64_t i0 = b * SQ_BLOCK, len = i0 + SQ_BLOCK < n ? SQ_BLOCK : n - i0;
            part[b] = dsqerr(x + i0, NULL, len, simd);
        }
    double s = 0.0;
    for (int64_t b = 0; b < nblk; b++) s += part[b];
    if (part != stackbuf) free(part);
    return s;
}

/* PyTorch AdamW (torch.optim.AdamW, foreach=False, the default single-tensor path) with the gradient
 * pre-scaled by gscale:
 *   p *= 1 - lr*wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *   p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps),  bc1 = 1 - b1^step, bc2 = 1 - b2^step.
 * The scalars (1 - lr*wd, lr/bc1, sqrt(bc2)) are formed in double and rounded once, as PyTorch does. */
typedef struct {
    float *p, *m, *v;
    const float *grad;
    float b1, b2, omb1, omb2, eps, decay, step_size, bc2s, gscale;
} adamw_arg;
static void adamw_k(void *arg, int64_t i0, int64_t i1) {
    const adamw_arg *a = arg;
    float *p = a->p, *m = a->m, *v = a->v;
    for (int64_t i = i0; i < i1; i++) {
        const float g = a->gscale * a->grad[i];
        const float mi = a->b1 * m[i] + a->omb1 * g;
        const float vi = a->b2 * v[i] + a->omb2 * (g * g);
        m[i] = mi;
        v[i] = vi;
        const float denom = sqrtf(vi) / a->bc2s + a->eps;
        p[i] = p[i] * a->decay - a->step_size * (mi / denom);
    }
}
void mfcpu_adamw(mf_backend *be, int64_t n, float *p, const float *grad, float *m, float *v, float lr,
                 float b1, float b2, float eps, float wd, int64_t step, float gscale) {
    MF_ASSERT(step >= 1);
    const double bc1 = 1.0 - pow((double)b1, (double)step), bc2 = 1.0 - pow((double)b2, (double)step);
    adamw_arg a = {p,
                   m,
                   v,
                   grad,
                   b1,
                   b2,
                   (float)(1.0 - (double)b1),
                   (float)(1.0 - (double)b2),
                   eps,
                   (float)(1.0 - (double)lr * (double)wd),
                   (float)((double)lr / bc1),
                   (float)sqrt(bc2),
                   gscale};
    mfcpu_par_ranges(be, n, adamw_k, &a);
}

typedef struct {
    float *e;
    const float *p;
    float d, omd;
} ema_arg;
static void ema_k(void *arg, int64_t i0, int64_t i1) {
    const ema_arg *a = arg;
    float *e = a->e;
    const float *p = a->p, d = a->d, omd = a->omd;
#pragma omp simd
    for (int64_t i = i0; i < i1; i++) e[i] = d * e[i] + omd * p[i];
}
void mfcpu_ema(mf_backend *be, int64_t n, float *e, const float *p, float d) {
    ema_arg a = {e, p, d, (float)(1.0 - (double)d)};
    mfcpu_par_ranges(be, n, ema_k, &a);
}

/* adamw_step: sumsq, the clip scale and adamw composed on the host (the CPU's tensors are host
 * memory), so it equals the loop's own sumsq + adamw bit for bit. */
void mfcpu_adamw_step(mf_backend *be, int64_t n, float *p, const float *grad, float *m, float *v, float *st,
                      float b1, float b2, float eps, float wd, float clip) {
    const double g = sqrt(mfcpu_sumsq(be, n, grad));
    st[MF_OPT_ST_GNORM] = (float)g;
    if (!isfinite(g)) {
        if (st[MF_OPT_ST_FIRST_SKIP] < 0.0f) st[MF_OPT_ST_FIRST_SKIP] = st[MF_OPT_ST_STEP];
        st[MF_OPT_ST_SKIPPED] += 1.0f;
        return;
    }
    const double c = (double)clip;
    const float gscale = (!(c > 0) || g <= c) ? 1.0f : (float)(c / (g + 1e-6));
    const float t = st[MF_OPT_ST_T] + 1.0f;
    mfcpu_adamw(be, n, p, grad, m, v, st[MF_OPT_ST_LR], b1, b2, eps, wd, (int64_t)t, gscale);
    st[MF_OPT_ST_T] = t;
}
