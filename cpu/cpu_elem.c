/* cpu_elem.c - element-wise, layout and time-feature kernels of the CPU backend: fill, SiLU (forward,
 * backward, JVP; AVX-512 code with a vectorised exp where the CPU has it, libm otherwise), axpby, add2,
 * broadcasts, 2x up-sampling, embedding gather/scatter and the Fourier time features. */
#include <math.h>
#include <string.h>

#include "cpu_internal.h"
#include "mf_error.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define MFCPU_X86 1
#endif

typedef struct {
    float *dst;
    float value;
} fill_arg;
static void fill_k(void *p, int64_t i0, int64_t i1) {
    const fill_arg *a = p;
#pragma omp simd
    for (int64_t i = i0; i < i1; i++) a->dst[i] = a->value;
}
void mfcpu_fill(mf_backend *be, float *dst, float value, int64_t n) {
    fill_arg a = {dst, value};
    mfcpu_par_ranges(be, n, fill_k, &a);
}

/* ---- SiLU ----------------------------------------------------------------------------------- */
/* silu(x) = x s, s = sigmoid(x) = 1/(1 + exp(-x)); silu'(x) = s (1 + x (1 - s)). */

enum { SILU_FWD = MFCPU_SILU_FWD, SILU_BWD = MFCPU_SILU_BWD, SILU_BWD_ACC = MFCPU_SILU_BWD_ACC, SILU_JVP = MFCPU_SILU_JVP };

/* out[i] = silu(x[i])                      (SILU_FWD; t unused)
 * out[i] = t[i] silu'(x[i]), or += for SILU_BWD_ACC (t = dy), SILU_JVP (t = tx) */
static void silu_scalar(int mode, int64_t i0, int64_t i1, const float *x, const float *t, float *out) {
    for (int64_t i = i0; i < i1; i++) {
        const float v = x[i], s = 1.0f / (1.0f + expf(-v));
        if (mode == SILU_FWD) {
            out[i] = v * s;
        } else {
            const float d = t[i] * (s * (1.0f + v * (1.0f - s)));
            out[i] = mode == SILU_BWD_ACC ? out[i] + d : d;
        }
    }
}

#ifdef MFCPU_X86
/* exp(x) for 16 floats: n = round(x log2 e), r = x - n ln2 (Cody-Waite, two parts), exp(r) by the
 * Cephes degree-6 polynomial (about 1 ulp on |r| <= ln2/2), scaled by 2^n with vscalefps, which also
 * gives +inf / 0 for out-of-range inputs (clamped to +-100 first so that inf and NaN stay away). */
__attribute__((target("avx512f,fma"))) static inline __m512 exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-100.0f)), _mm512_set1_ps(100.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

__attribute__((target("avx512f,fma"))) static void silu_avx512(int mode, int64_t i0, int64_t i1,
                                                               const float *x, const float *t, float *out) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = i0; i < i1; i += 16) {
        const int64_t left = i1 - i;
        const __mmask16 k = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
        const __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), v));
        const __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, e));
        __m512 o;
        if (mode == SILU_FWD) {
            o = _mm512_mul_ps(v, s);
        } else {
            const __m512 dsl = _mm512_mul_ps(s, _mm512_fmadd_ps(v, _mm512_sub_ps(one, s), one));
            o = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, t + i), dsl);
            if (mode == SILU_BWD_ACC) o = _mm512_add_ps(_mm512_maskz_loadu_ps(k, out + i), o);
        }
        _mm512_mask_storeu_ps(out + i, k, o);
    }
}
#endif

typedef struct {
    int mode, simd;
    const float *x, *t;
    float *out;
} silu_arg;
static void silu_k(void *p, int64_t i0, int64_t i1) {
    const silu_arg *a = p;
#ifdef MFCPU_X86
    if (a->simd) {
        silu_avx512(a->mode, i0, i1, a->x, a->t, a->out);
        return;
    }
#endif
    silu_scalar(a->mode, i0, i1, a->x, a->t, a->out);
}
void mfcpu_silu_span(int simd, int mode, int64_t n, const float *x, const float *t, float *out) {
#ifdef MFCPU_X86
    if (simd) {
        silu_avx512(mode, 0, n, x, t, out);
        return;
    }
#endif
    silu_scalar(mode, 0, n, x, t, out);
}

static void silu_run(mf_backend *be, int mode, int64_t n, const float *x, const float *t, float *out) {
    silu_arg a = {mode, mfcpu(be)->avx512, x, t, out};
    mfcpu_par_ranges(be, n, silu_k, &a);
}

void mfcpu_silu(mf_backend *be, int64_t n, const float *x, float *y) {
    silu_run(be, SILU_FWD, n, x, NULL, y);
}
void mfcpu_silu_bwd(mf_backend *be, int64_t n, const float *x, const float *dy, float *dx, int acc) {
    silu_run(be, acc ? SILU_BWD_ACC : SILU_BWD, n, x, dy, dx);
}
void mfcpu_silu_jvp(mf_backend *be, int64_t n, const float *x, const float *tx, float *ty) {
    silu_run(be, SILU_JVP, n, x, tx, ty);
}

/* ---- linear combinations and broadcasts ----------------------------------------------------- */

typedef struct {
    float a, b;
    const float *x, *y;
    float *z;
} lin_arg;
static void axpby_k(void *p, int64_t i0, int64_t i1) {
    const lin_arg *l = p;
    const float a = l->a, b = l->b, *x = l->x;
    float *y = l->z;
    if (b == 0.0f) { /* y need not be initialised: never read it */
#pragma omp simd
        for (int64_t i = i0; i < i1; i++) y[i] = a * x[i];
    } else {
#pragma omp simd
        for (int64_t i = i0; i < i1; i++) y[i] = a * x[i] + b * y[i];
    }
}
void mfcpu_axpby(mf_backend *be, int64_t n, float a, const float *x, float b, float *y) {
    lin_arg l = {a, b, x, y, y};
    mfcpu_par_ranges(be, n, axpby_k, &l);
}

/* z may alias x or y: element i is read before it is written, in the same lane */
static void add2_k(void *p, int64_t i0, int64_t i1) {
    const lin_arg *l = p;
    const float a = l->a, b = l->b, *x = l->x, *y = l->y;
    float *z = l->z;
#pragma omp simd
    for (int64_t i = i0; i < i1; i++) z[i] = a * x[i] + b * y[i];
}
void mfcpu_add2(mf_backend *be, int64_t n, float a, const float *x, float b, const float *y, float *z) {
    lin_arg l = {a, b, x, y, z};
    mfcpu_par_ranges(be, n, add2_k, &l);
}

/* z[i, :] = a[i] x[i, :] + b[i] y[i, :] (b, y may be NULL); z may alias x or y (same element, same lane) */
void mfcpu_rows_axpby(mf_backend *be, int n, int64_t d, const float *a, const float *x, const float *b,
                      const float *y, float *z) {
    const int slots = mfcpu_islots(be, n, d);
    const int two = b && y;
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int sl = 0; sl < slots; sl++)
        for (int64_t i = mfcpu_split(n, slots, sl); i < mfcpu_split(n, slots, sl + 1); i++) {
            const float ai = a[i], bi = two ? b[i] : 0.0f;
            const float *xp = x + i * d, *yp = two ? y + i * d : NULL;
            float *zp = z + i * d;
            if (two) {
#pragma omp simd
                for (int64_t j = 0; j < d; j++) zp[j] = ai * xp[j] + bi * yp[j];
            } else {
#pragma omp simd
                for (int64_t j = 0; j < d; j++) zp[j] = ai * xp[j];
            }
        }
}

void mfcpu_add_channel(mf_backend *be, int n, int c, int hw, const float *x, const float *e, float *y) {
    const int64_t planes = (int64_t)n * c;
    const int slots = mfcpu_islots(be, planes, hw);
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int sl = 0; sl < slots; sl++)
        for (int64_t q = mfcpu_split(planes, slots, sl); q < mfcpu_split(planes, slots, sl + 1); q++) {
            const float v = e[q];
            const float *xp = x + q * hw;
            float *yp = y + q * hw;
#pragma omp simd
            for (int p = 0; p < hw; p++) yp[p] = xp[p] + v;
        }
}

void mfcpu_add_bias_rows(mf_backend *be, int rows, int cols, const float *bias, float *y) {
    const int slots = mfcpu_islots(be, rows, cols);
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int sl = 0; sl < slots; sl++)
        for (int64_t r = mfcpu_split(rows, slots, sl); r < mfcpu_split(rows, slots, sl + 1); r++) {
            float *yr = y + r * cols;
#pragma omp simd
            for (int j = 0; j < cols; j++) yr[j] += bias[j];
        }
}

/* ---- layout --------------------------------------------------------------------------------- */

void mfcpu_upsample2x(mf_backend *be, int n, int c, int h, int w, const float *x, float *y) {
    const int64_t planes = (int64_t)n * c;
    const int slots = mfcpu_islots(be, planes, 4 * (int64_t)h * w);
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int sl = 0; sl < slots; sl++)
        for (int64_t q = mfcpu_split(planes, slots, sl); q < mfcpu_split(planes, slots, sl + 1); q++) {
            const float *xp = x + q * h * w;
            float *yp = y + q * 4 * h * w;
            for (int iy = 0; iy < h; iy++) {
                float *r0 = yp + (int64_t)(2 * iy) * (2 * w), *r1 = r0 + 2 * w;
                const float *xr = xp + (int64_t)iy * w;
                for (int ix = 0; ix < w; ix++) r0[2 * ix] = r0[2 * ix + 1] = xr[ix];
                memcpy(r1, r0, sizeof(float) * 2 * (size_t)w);
            }
        }
}

void mfcpu_upsample2x_bwd(mf_backend *be, int n, int c, int h, int w, const float *dy, float *dx, int acc) {
    const int64_t planes = (int64_t)n * c;
    const int slots = mfcpu_islots(be, planes, 4 * (int64_t)h * w);
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int sl = 0; sl < slots; sl++)
        for (int64_t q = mfcpu_split(planes, slots, sl); q < mfcpu_split(planes, slots, sl + 1); q++) {
            const float *gp = dy + q * 4 * h * w;
            float *dp = dx + q * h * w;
            for (int iy = 0; iy < h; iy++) {
                const float *r0 = gp + (int64_t)(2 * iy) * (2 * w), *r1 = r0 + 2 * w;
                float *d = dp + (int64_t)iy * w;
                for (int ix = 0; ix < w; ix++) {
                    const float v = (r0[2 * ix] + r0[2 * ix + 1]) + (r1[2 * ix] + r1[2 * ix + 1]);
                    d[ix] = acc ? d[ix] + v : v;
                }
            }
        }
}

void mfcpu_embed(mf_backend *be, int n, int dim, const int32_t *idx, const float *table, float *y) {
    for (int i = 0; i < n; i++) {
        MF_ASSERT(idx[i] >= 0);
        memcpy(y + (int64_t)i * dim, table + (int64_t)idx[i] * dim, sizeof(float) * (size_t)dim);
    }
}

/* Rows may repeat in idx: the rows are added in index order (columns are independent). */
void mfcpu_embed_bwd(mf_backend *be, int n, int dim, const int32_t *idx, const float *dy, float *dtable) {
    for (int i = 0; i < n; i++) {
        MF_ASSERT(idx[i] >= 0);
        float *d = dtable + (int64_t)idx[i] * dim;
        const float *g = dy + (int64_t)i * dim;
#pragma omp simd
        for (int j = 0; j < dim; j++) d[j] += g[j];
    }
}

/* ---- time features -------------------------------------------------------------------------- */
/* The argument t*freq is formed exactly (in double: a product of two floats is exact there) and the
 * sines in double, so the result is the correctly rounded value up to one rounding. */

void mfcpu_fourier(mf_backend *be, int n, int half, const float *t, const float *freq, float *y) {
    for (int i = 0; i < n; i++) {
        float *yr = y + (int64_t)i * 2 * half;
        for (int k = 0; k < half; k++) {
            const double a = (double)t[i] * (double)freq[k];
            yr[k] = (float)sin(a);
            yr[half + k] = (float)cos(a);
        }
    }
}

void mfcpu_fourier_jvp(mf_backend *be, int n, int half, const float *t, const float *freq, const float *tt,
                       float *ty) {
    for (int i = 0; i < n; i++) {
        float *yr = ty + (int64_t)i * 2 * half;
        for (int k = 0; k < half; k++) {
            const double a = (double)t[i] * (double)freq[k], f = (double)freq[k] * (double)tt[i];
            yr[k] = (float)(cos(a) * f);
            yr[half + k] = (float)(-sin(a) * f);
        }
    }
}

/* ---- bf16 conversions (precision: bf16) ------------------------------------------------------ */

/* The bf16 bits of f, rounded to nearest even; a NaN stays a (quiet) NaN. */
static inline uint16_t bf16_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

#ifdef MFCPU_X86
/* vcvtne2ps2bf16 / vcvtneps2bf16: round to nearest even, NaN -> quiet NaN, denormals to zero (the scalar
 * bf16_bits except for denormals, which the bf16 convolutions read as zero anyway). part16: the per-lane
 * sums of 16-channel blocks in double, in pixel order (the same sums as the scalar loop). */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static void to_bf16_avx512(const float *p, uint16_t *o,
                                                                                       int64_t len, double *part16) {
    int64_t j = 0;
    if (part16) {
        __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
        for (; j < len; j += 16) {
            const __m512 v = _mm512_loadu_ps(p + j);
            _mm256_storeu_si256((__m256i *)(o + j), (__m256i)_mm512_cvtneps_pbh(v));
            lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
            hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
        }
        _mm512_storeu_pd(part16, lo);
        _mm512_storeu_pd(part16 + 8, hi);
        return;
    }
    for (; j + 32 <= len; j += 32)
        _mm512_storeu_si512((void *)(o + j),
                            (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(p + j + 16), _mm512_loadu_ps(p + j)));
    for (; j < len; j += 16) {
        const int64_t left = len - j;
        const __mmask16 k = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
        _mm256_mask_storeu_epi16(o + j, k, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(k, p + j)));
    }
}
#endif

void mfcpu_to_bf16_span(int simd, const float *p, uint16_t *o, int64_t len, int b, double *part) {
#ifdef MFCPU_X86
    if (simd && (!part || b == 16)) {
        to_bf16_avx512(p, o, len, part);
        return;
    }
#else
    (void)simd;
#endif
    for (int64_t j = 0; j < len; j++) o[j] = bf16_bits(p[j]);
    if (!part) return;
    for (int l = 0; l < b; l++) part[l] = 0.0;
    for (int64_t q = 0; q < len / b; q++)
        for (int l = 0; l < b; l++) part[l] += p[q * b + l];
}
