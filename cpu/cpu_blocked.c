/* cpu_blocked.c - the channel-dependent kernels for activations in the blocked layout nChw16c
 * (element (i, c, p) of an (n, c, hw) tensor at ((i*c/16 + c/16)*hw + p)*16 + c%16; c % 16 == 0), and
 * copy_channels, which copies channel ranges between tensors of either layout (concat, split, reorder).
 * Every pixel is a 16-float vector here, so the loops below run over pixels with the 16 channel lanes
 * innermost (one AVX-512 register). Reductions are per channel, in double, over pixels in order, then
 * over the channels of a group in channel order: deterministic, independent of the thread count; the
 * summation order differs from the NCHW kernels' (results agree to rounding, tests/test_cpu_ops.c).
 * The formulas of GroupNorm's backward and JVP are derived in cpu_norm.c. */
#include <math.h>
#include <string.h>

#include "cpu_internal.h"
#include "mf_error.h"

#define B16 16

/* Per-channel sums of one sample: s[ch] = sum_p x[ch, p]; if m (per-channel values), q[ch] =
 * sum_p (x - m[ch]) * (g ? g : x - m[ch]). */
static void chan_sums(const float *x, const float *gsrc, int cb_n, int hw, const double *m, double *s, double *q) {
    for (int cb = 0; cb < cb_n; cb++) {
        const float *xb = x + (int64_t)cb * hw * B16, *gb = gsrc ? gsrc + (int64_t)cb * hw * B16 : NULL;
        double a[B16] = {0}, b[B16] = {0};
        if (!m) {
            for (int p = 0; p < hw; p++)
#pragma omp simd
                for (int l = 0; l < B16; l++) a[l] += (double)xb[p * B16 + l];
        } else if (!gb) {
            const double *mb = m + cb * B16;
            for (int p = 0; p < hw; p++)
#pragma omp simd
                for (int l = 0; l < B16; l++) {
                    const double d = (double)xb[p * B16 + l] - mb[l];
                    b[l] += d * d;
                }
        } else { /* a = sum g, b = sum g (x - m) */
            const double *mb = m + cb * B16;
            for (int p = 0; p < hw; p++)
#pragma omp simd
                for (int l = 0; l < B16; l++) {
                    const double gv = (double)gb[p * B16 + l];
                    a[l] += gv;
                    b[l] += gv * ((double)xb[p * B16 + l] - mb[l]);
                }
        }
        for (int l = 0; l < B16; l++) {
            if (s) s[cb * B16 + l] = a[l];
            if (q) q[cb * B16 + l] = b[l];
        }
    }
}

/* u = GN(x) of one sample from its per-channel mean and rstd: the affine map a (x - m) + b per lane. The
 * mean is split into two floats (mh + ml) so that x - mean stays accurate when |mean| >> std. */
static void gn_apply(const float *xi, float *ui, int cbn, int hw, const double *mc, const double *rc,
                     const float *gamma, const float *beta) {
    for (int cb = 0; cb < cbn; cb++) {
        float a[B16], b[B16], mh[B16], ml[B16];
        for (int l = 0; l < B16; l++) {
            const int ch = cb * B16 + l;
            a[l] = (float)((gamma ? (double)gamma[ch] : 1.0) * rc[ch]);
            b[l] = beta ? beta[ch] : 0.0f;
            mh[l] = (float)mc[ch];
            ml[l] = (float)(mc[ch] - (double)mh[l]);
        }
        const float *xb = xi + (int64_t)cb * hw * B16;
        float *ub = ui + (int64_t)cb * hw * B16;
        for (int p = 0; p < hw; p++)
#pragma omp simd
            for (int l = 0; l < B16; l++) ub[p * B16 + l] = ((xb[p * B16 + l] - mh[l]) - ml[l]) * a[l] + b[l];
    }
}

/* Scratch of one slot: 4 per-channel double arrays, then (fused kernels) one sample of floats. */
typedef struct gn_scratch {
    double *d;
    float *f;
} gn_scratch;
static gn_scratch gn_slot(char *base, int sl, int c, int64_t sample, int fused) {
    const size_t per = sizeof(double) * mfcpu_round16(4 * (size_t)c) + (fused ? sizeof(float) * mfcpu_round16((size_t)sample) : 0);
    char *p = base + (size_t)sl * per;
    return (gn_scratch){(double *)p, fused ? (float *)(p + sizeof(double) * mfcpu_round16(4 * (size_t)c)) : NULL};
}
static size_t gn_slot_bytes(int slots, int c, int64_t sample, int fused) {
    return (size_t)slots * (sizeof(double) * mfcpu_round16(4 * (size_t)c) + (fused ? sizeof(float) * mfcpu_round16((size_t)sample) : 0));
}

/* lanes of channel block cb: a = gamma rstd and the mean, from the per-channel values of gn_saved */
static void lane_scale(int cb, const double *mc, const double *rc, const float *gamma, float a[B16], float mf[B16]) {
    for (int l = 0; l < B16; l++) {
        const int ch = cb * B16 + l;
        a[l] = (float)((gamma ? (double)gamma[ch] : 1.0) * rc[ch]);
        mf[l] = (float)mc[ch];
    }
}

/* per-channel mean and rstd (mc, rc) of sample i from the saved per-group values */
static void gn_saved(int c, int g, int64_t i, const float *mean, const float *rstd, double *mc, double *rc) {
    const int cg = c / g;
    for (int ch = 0; ch < c; ch++) mc[ch] = mean[i * g + ch / cg], rc[ch] = rstd[i * g + ch / cg];
}

/* y16 != NULL (with silu): the result is made per sample in the slot's float scratch, exactly as into y,
 * and written to y16 in bf16 (gn_silu_bf16) */
static void gn_fwd(mf_backend *be, int n, int c, int hw, int g, float eps, const float *x, const float *gamma,
                   const float *beta, float *y, uint16_t *y16, float *mean, float *rstd, int silu) {
    MF_ASSERT(n > 0 && c % B16 == 0 && hw > 0 && g > 0 && c % g == 0);
    const int cg = c / g, cbn = c / B16, simd = mfcpu(be)->avx512, fused = y16 != NULL;
    const double N = (double)cg * hw;
    const int64_t sample = (int64_t)c * hw;
    const int slots = mfcpu_islots(be, n, sample);
    char *scr = mfcpu_workspace(be, gn_slot_bytes(slots, c, sample, fused));
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int sl = 0; sl < slots; sl++) {
        gn_scratch sc = gn_slot(scr, sl, c, sample, fused);
        double *s = sc.d, *q = s + c, *mc = q + c, *rc = mc + c;
        for (int64_t i = mfcpu_split(n, slots, sl); i < mfcpu_split(n, slots, sl + 1); i++) {
            const float *xi = x + i * c * hw;
            float *yi = fused ? sc.f : y + i * c * hw;
            chan_sums(xi, NULL, cbn, hw, NULL, s, NULL);
            for (int gi = 0; gi < g; gi++) {
                double t = 0.0;
                for (int k = 0; k < cg; k++) t += s[gi * cg + k];
                for (int k = 0; k < cg; k++) mc[gi * cg + k] = t / N;
            }
            chan_sums(xi, NULL, cbn, hw, mc, NULL, q);
            for (int gi = 0; gi < g; gi++) {
                double t = 0.0;
                for (int k = 0; k < cg; k++) t += q[gi * cg + k];
                const double r = 1.0 / sqrt(t / N + (double)eps);
                mean[i * g + gi] = (float)mc[gi * cg];
                rstd[i * g + gi] = (float)r;
                for (int k = 0; k < cg; k++) rc[gi * cg + k] = r;
            }
            gn_apply(xi, yi, cbn, hw, mc, rc, gamma, beta);
            if (silu) mfcpu_silu_span(simd, MFCPU_SILU_FWD, (int64_t)c * hw, yi, NULL, yi); /* still in cache */
            if (fused) mfcpu_to_bf16_span(mfcpu(be)->bf16_simd, yi, y16 + i * sample, sample, 0, NULL);
        }
    }
}

static void gn_bwd(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma, const float *beta,
                   const float *mean, const float *rstd, const float *dy, float *dx, float *dgamma, float *dbeta,
                   int acc, int silu) {
    MF_ASSERT(n > 0 && c % B16 == 0 && hw > 0 && g > 0 && c % g == 0);
    const int cg = c / g, cbn = c / B16, simd = mfcpu(be)->avx512;
    const int64_t sample = (int64_t)c * hw;
    const double N = (double)cg * hw;
    const int slots = mfcpu_islots(be, n, sample);
    /* per (sample, channel) A = sum dy and RB = r * sum dy (x - mu), reduced over samples afterwards */
    const size_t abytes = (sizeof(double) * 2 * (size_t)n * c + 63) & ~(size_t)63;
    char *ws = mfcpu_workspace(be, abytes + gn_slot_bytes(slots, c, sample, silu));
    double *A = (double *)ws, *RB = A + (size_t)n * c;
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int sl = 0; sl < slots; sl++) {
        gn_scratch sc = gn_slot(ws + abytes, sl, c, sample, silu);
        double *mc = sc.d, *rc = mc + c, *co = rc + c, *cx = co + c;
        for (int64_t i = mfcpu_split(n, slots, sl); i < mfcpu_split(n, slots, sl + 1); i++) {
            const float *xi = x + i * c * hw, *gi_ = dy + i * c * hw;
            double *Ai = A + i * c, *Bi = RB + i * c;
            gn_saved(c, g, i, mean, rstd, mc, rc);
            if (silu) { /* gi_ := dy silu'(GN(x)), the gradient at the GroupNorm output */
                gn_apply(xi, sc.f, cbn, hw, mc, rc, gamma, beta);
                mfcpu_silu_span(simd, MFCPU_SILU_BWD, sample, sc.f, gi_, sc.f);
                gi_ = sc.f;
            }
            chan_sums(xi, gi_, cbn, hw, mc, Ai, Bi); /* A = sum dy, B = sum dy (x - mu) per channel */
            for (int gi = 0; gi < g; gi++) {
                const double r = rstd[i * g + gi];
                double s1 = 0.0, s2x = 0.0;
                for (int k = 0; k < cg; k++) {
                    const int ch = gi * cg + k;
                    const double gm = gamma ? gamma[ch] : 1.0;
                    s1 += gm * Ai[ch];
                    s2x += gm * Bi[ch];
                }
                for (int k = 0; k < cg; k++) {
                    const int ch = gi * cg + k;
                    co[ch] = -r * s1 / N;
                    cx[ch] = -r * r * r * s2x / N;
                    Bi[ch] *= r;
                }
            }
            if (!dx) continue;
            float *di = dx + i * c * hw;
            for (int cb = 0; cb < cbn; cb++) {
                float a[B16], c0[B16], cxf[B16], mf[B16];
                lane_scale(cb, mc, rc, gamma, a, mf);
                for (int l = 0; l < B16; l++) c0[l] = (float)co[cb * B16 + l], cxf[l] = (float)cx[cb * B16 + l];
                const float *xb = xi + (int64_t)cb * hw * B16, *gb = gi_ + (int64_t)cb * hw * B16;
                float *db = di + (int64_t)cb * hw * B16;
                if (acc) {
                    for (int p = 0; p < hw; p++)
#pragma omp simd
                        for (int l = 0; l < B16; l++)
                            db[p * B16 + l] += a[l] * gb[p * B16 + l] + cxf[l] * (xb[p * B16 + l] - mf[l]) + c0[l];
                } else {
                    for (int p = 0; p < hw; p++)
#pragma omp simd
                        for (int l = 0; l < B16; l++)
                            db[p * B16 + l] = a[l] * gb[p * B16 + l] + cxf[l] * (xb[p * B16 + l] - mf[l]) + c0[l];
                }
            }
        }
    }
    mfcpu_gn_param_grads(n, c, A, RB, dgamma, dbeta);
}

static void gn_jvp(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma, const float *beta,
                   const float *mean, const float *rstd, const float *tx, float *ty, int silu) {
    MF_ASSERT(n > 0 && c % B16 == 0 && hw > 0 && g > 0 && c % g == 0);
    const int cg = c / g, cbn = c / B16, simd = mfcpu(be)->avx512;
    const int64_t sample = (int64_t)c * hw;
    const double N = (double)cg * hw;
    const int slots = mfcpu_islots(be, n, sample);
    char *ws = mfcpu_workspace(be, gn_slot_bytes(slots, c, sample, silu));
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int sl = 0; sl < slots; sl++) {
        gn_scratch sc = gn_slot(ws, sl, c, sample, silu);
        double *mc = sc.d, *rc = mc + c, *st = rc + c, *sxt = st + c;
        for (int64_t i = mfcpu_split(n, slots, sl); i < mfcpu_split(n, slots, sl + 1); i++) {
            const float *xi = x + i * c * hw, *ti = tx + i * c * hw;
            float *yi = ty + i * c * hw;
            gn_saved(c, g, i, mean, rstd, mc, rc);
            chan_sums(xi, ti, cbn, hw, mc, st, sxt); /* st = sum tx, sxt = sum tx (x - mu) */
            for (int gi = 0; gi < g; gi++) {
                double a = 0.0, b = 0.0;
                for (int k = 0; k < cg; k++) a += st[gi * cg + k], b += sxt[gi * cg + k];
                const double r = rstd[i * g + gi];
                for (int k = 0; k < cg; k++) st[gi * cg + k] = a / N, sxt[gi * cg + k] = r * r * b / N;
            }
            for (int cb = 0; cb < cbn; cb++) {
                float a[B16], mt[B16], u[B16], mf[B16];
                lane_scale(cb, mc, rc, gamma, a, mf);
                for (int l = 0; l < B16; l++) mt[l] = (float)st[cb * B16 + l], u[l] = (float)sxt[cb * B16 + l];
                const float *xb = xi + (int64_t)cb * hw * B16, *tb = ti + (int64_t)cb * hw * B16;
                float *yb = yi + (int64_t)cb * hw * B16;
                for (int p = 0; p < hw; p++)
#pragma omp simd
                    for (int l = 0; l < B16; l++)
                        yb[p * B16 + l] = a[l] * ((tb[p * B16 + l] - mt[l]) - (xb[p * B16 + l] - mf[l]) * u[l]);
            }
            if (silu) { /* ty *= silu'(GN(x)) */
                gn_apply(xi, sc.f, cbn, hw, mc, rc, gamma, beta);
                mfcpu_silu_span(simd, MFCPU_SILU_JVP, sample, sc.f, yi, yi);
            }
        }
    }
}

void mfcpu_groupnorm_b16(mf_backend *be, int n, int c, int hw, int g, float eps, const float *x, const float *gamma,
                         const float *beta, float *y, float *mean, float *rstd) {
    gn_fwd(be, n, c, hw, g, eps, x, gamma, beta, y, NULL, mean, rstd, 0);
}
void mfcpu_groupnorm_bwd_b16(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma,
                             const float *mean, const float *rstd, const float *dy, float *dx, float *dgamma,
                             float *dbeta, int acc) {
    gn_bwd(be, n, c, hw, g, x, gamma, NULL, mean, rstd, dy, dx, dgamma, dbeta, acc, 0);
}
void mfcpu_groupnorm_jvp_b16(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma,
                             const float *mean, const float *rstd, const float *tx, float *ty) {
    gn_jvp(be, n, c, hw, g, x, gamma, NULL, mean, rstd, tx, ty, 0);
}
void mfcpu_gn_silu_b16(mf_backend *be, int n, int c, int hw, int g, float eps, const float *x, const float *gamma,
                       const float *beta, float *y, float *mean, float *rstd) {
    gn_fwd(be, n, c, hw, g, eps, x, gamma, beta, y, NULL, mean, rstd, 1);
}
void mfcpu_gn_silu_b16_bf16(mf_backend *be, int n, int c, int hw, int g, float eps, const float *x,
                            const float *gamma, const float *beta, uint16_t *y, float *mean, float *rstd) {
    gn_fwd(be, n, c, hw, g, eps, x, gamma, beta, NULL, y, mean, rstd, 1);
}
void mfcpu_gn_silu_bwd_b16(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma,
                           const float *beta, const float *mean, const float *rstd, const float *dy, float *dx,
                           float *dgamma, float *dbeta, int acc) {
    gn_bwd(be, n, c, hw, g, x, gamma, beta, mean, rstd, dy, dx, dgamma, dbeta, acc, 1);
}
void mfcpu_gn_silu_jvp_b16(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma,
                           const float *beta, const float *mean, const float *rstd, const float *tx, float *ty) {
    gn_jvp(be, n, c, hw, g, x, gamma, beta, mean, rstd, tx, ty, 1);
}

void mfcpu_add_channel_b16(mf_backend *be, int n, int c, int hw, const float *x, const float *e, float *y) {
    const int64_t planes = (int64_t)n * (c / B16);
    const int slots = mfcpu_islots(be, planes, (int64_t)hw * B16);
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int sl = 0; sl < slots; sl++)
        for (int64_t q = mfcpu_split(planes, slots, sl); q < mfcpu_split(planes, slots, sl + 1); q++) {
            const float *v = e + q * B16; /* (i, cb) -> e[i*c + cb*16 + l] == e[q*16 + l] */
            const float *xp = x + q * hw * B16;
            float *yp = y + q * hw * B16;
            for (int p = 0; p < hw; p++)
#pragma omp simd
                for (int l = 0; l < B16; l++) yp[p * B16 + l] = xp[p * B16 + l] + v[l];
        }
}

void mfcpu_sum_channel_b16(mf_backend *be, int n, int c, int hw, const float *dy, float *de, int acc) {
    const int64_t planes = (int64_t)n * (c / B16);
    const int slots = mfcpu_islots(be, planes, (int64_t)hw * B16);
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int sl = 0; sl < slots; sl++)
        for (int64_t q = mfcpu_split(planes, slots, sl); q < mfcpu_split(planes, slots, sl + 1); q++) {
            double s[B16];
            chan_sums(dy + q * hw * B16, NULL, 1, hw, NULL, s, NULL);
            for (int l = 0; l < B16; l++) de[q * B16 + l] = (float)(acc ? (double)de[q * B16 + l] + s[l] : s[l]);
        }
}

void mfcpu_upsample2x_b16(mf_backend *be, int n, int c, int h, int w, const float *x, float *y) {
    const int64_t planes = (int64_t)n * (c / B16);
    const int slots = mfcpu_islots(be, planes, 4 * (int64_t)h * w * B16);
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int sl = 0; sl < slots; sl++)
        for (int64_t q = mfcpu_split(planes, slots, sl); q < mfcpu_split(planes, slots, sl + 1); q++) {
            const float *xp = x + q * h * w * B16;
            float *yp = y + q * 4 * h * w * B16;
            for (int iy = 0; iy < h; iy++) {
                float *r0 = yp + (int64_t)(2 * iy) * (2 * w) * B16, *r1 = r0 + 2 * w * B16;
                const float *xr = xp + (int64_t)iy * w * B16;
                for (int ix = 0; ix < w; ix++) {
                    memcpy(r0 + 2 * ix * B16, xr + ix * B16, sizeof(float) * B16);
                    memcpy(r0 + (2 * ix + 1) * B16, xr + ix * B16, sizeof(float) * B16);
                }
                memcpy(r1, r0, sizeof(float) * 2 * (size_t)w * B16);
            }
        }
}

void mfcpu_upsample2x_bwd_b16(mf_backend *be, int n, int c, int h, int w, const float *dy, float *dx, int acc) {
    const int64_t planes = (int64_t)n * (c / B16);
    const int slots = mfcpu_islots(be, planes, 4 * (int64_t)h * w * B16);
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int sl = 0; sl < slots; sl++)
        for (int64_t q = mfcpu_split(planes, slots, sl); q < mfcpu_split(planes, slots, sl + 1); q++) {
            const float *gp = dy + q * 4 * h * w * B16;
            float *dp = dx + q * h * w * B16;
            for (int iy = 0; iy < h; iy++) {
                const float *r0 = gp + (int64_t)(2 * iy) * (2 * w) * B16, *r1 = r0 + 2 * w * B16;
                float *d = dp + (int64_t)iy * w * B16;
                for (int ix = 0; ix < w; ix++)
#pragma omp simd
                    for (int l = 0; l < B16; l++) {
                        const int a = 2 * ix * B16 + l, b = a + B16;
                        const float v = (r0[a] + r0[b]) + (r1[a] + r1[b]);
                        d[ix * B16 + l] = acc ? d[ix * B16 + l] + v : v;
                    }
            }
        }
}

/* ---- copy_channels ------------------------------------------------------------------------------ */

static inline int64_t idx_of(int c, int hw, int blk, int ch, int p) {
    return blk == B16 ? ((int64_t)(ch / B16) * hw + p) * B16 + ch % B16 : (int64_t)ch * hw + p;
}

void mfcpu_copy_channels(mf_backend *be, int n, int hw, int nc, const float *src, int src_c, int src_c0, int src_blk,
                         float *dst, int dst_c, int dst_c0, int dst_blk, int acc) {
    if (n <= 0 || hw <= 0 || nc <= 0) return;
    src_blk = src_blk > 1 ? src_blk : 1;
    dst_blk = dst_blk > 1 ? dst_blk : 1;
    MF_ASSERT(src_blk == 1 || src_blk == B16);
    MF_ASSERT(dst_blk == 1 || dst_blk == B16);
    MF_ASSERT(src_blk == 1 || src_c % B16 == 0);
    MF_ASSERT(dst_blk == 1 || dst_c % B16 == 0);
    MF_ASSERT(src_c0 >= 0 && src_c0 + nc <= src_c && dst_c0 >= 0 && dst_c0 + nc <= dst_c);
    /* same layout, and (blocked) whole channel blocks: one contiguous run per sample */
    const int contiguous = src_blk == dst_blk &&
                           (src_blk == 1 || (src_c0 % B16 == 0 && dst_c0 % B16 == 0 && nc % B16 == 0));
    const int slots = mfcpu_islots(be, n, (int64_t)nc * hw);
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int sl = 0; sl < slots; sl++)
        for (int64_t i = mfcpu_split(n, slots, sl); i < mfcpu_split(n, slots, sl + 1); i++) {
            const float *s = src + i * src_c * hw;
            float *d = dst + i * dst_c * hw;
            if (contiguous) {
                const float *sp = s + (int64_t)src_c0 * hw;
                float *dp = d + (int64_t)dst_c0 * hw;
                const int64_t len = (int64_t)nc * hw;
                if (acc) {
#pragma omp simd
                    for (int64_t j = 0; j < len; j++) dp[j] += sp[j];
                } else {
                    memcpy(dp, sp, sizeof(float) * (size_t)len);
                }
                continue;
            }
            if (src_blk != dst_blk && src_c0 % B16 == 0 && dst_c0 % B16 == 0 && nc % B16 == 0) {
                /* whole channel blocks between layouts: transpose (16, hw) <-> (hw, 16) per block */
                for (int k = 0; k < nc; k += B16) {
                    const float *sb = s + (int64_t)(src_c0 + k) * hw; /* a block starts there in both layouts */
                    float *dbk = d + (int64_t)(dst_c0 + k) * hw;
                    for (int l = 0; l < B16; l++)
                        for (int p = 0; p < hw; p++) {
                            const int64_t bi = (int64_t)p * B16 + l, pi = (int64_t)l * hw + p;
                            const float v = src_blk == B16 ? sb[bi] : sb[pi];
                            float *o = dst_blk == B16 ? &dbk[bi] : &dbk[pi];
                            *o = acc ? *o + v : v;
                        }
                }
                continue;
            }
            for (int k = 0; k < nc; k++)
                for (int p = 0; p < hw; p++) {
                    const float v = s[idx_of(src_c, hw, src_blk, src_c0 + k, p)];
                    float *o = d + idx_of(dst_c, hw, dst_blk, dst_c0 + k, p);
                    *o = acc ? *o + v : v;
                }
        }
}

/* ---- direct convolution, blocked input -> few NCHW output channels ------------------------------
 * The UNet's last convolution (c channels -> 1-4 image channels) has no fast oneDNN implementation (it
 * falls back to reference code) and im2col would copy the whole input nine times for a few output
 * channels. Here: stride 1, x in nChw16c, y in NCHW, any co (meant for co < 16). Every output pixel is a
 * 16-lane dot product per tap, reduced across lanes at the end; all three passes read x once, so they run
 * at memory speed. Work is split over samples (filter gradient: per-slot partial sums added in slot
 * order, deterministic). */

/* output columns ox with input column ox + kx - pad inside [0, w) */
static void ox_range(int w, int wo, int kx, int pad, int *a, int *b) {
    int lo = pad - kx, hi = w - 1 + pad - kx;
    *a = lo > 0 ? lo : 0;
    *b = hi + 1 < wo ? hi + 1 : wo;
    if (*a > *b) *a = *b;
}

void mfcpu_conv_b16_plain(mf_backend *be, const mf_conv_shape *s, const float *x, const float *w, const float *bias,
                          float *y) {
    const int cbn = s->ci / B16, k = s->k, hw = s->h * s->w, howo = s->ho * s->wo;
    const int slots = mfcpu_islots(be, s->n, (int64_t)s->ci * hw);
    /* weights as [o][cb][ky][kx][16 lanes] so that a tap is one vector */
    float *wt = mfcpu_workspace(be, sizeof(float) * (size_t)s->co * s->ci * k * k + (size_t)slots * mfcpu_round16((size_t)s->wo * B16) * sizeof(float));
    float *accs = wt + (size_t)s->co * s->ci * k * k;
    for (int o = 0; o < s->co; o++)
        for (int c = 0; c < s->ci; c++)
            for (int t = 0; t < k * k; t++)
                wt[(((size_t)o * cbn + c / B16) * k * k + t) * B16 + c % B16] = w[((size_t)o * s->ci + c) * k * k + t];
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int sl = 0; sl < slots; sl++) {
        float *acc = accs + (size_t)sl * mfcpu_round16((size_t)s->wo * B16); /* one output row of lane sums */
        for (int64_t i = mfcpu_split(s->n, slots, sl); i < mfcpu_split(s->n, slots, sl + 1); i++)
            for (int o = 0; o < s->co; o++)
                for (int oy = 0; oy < s->ho; oy++) {
                    memset(acc, 0, sizeof(float) * (size_t)s->wo * B16);
                    for (int cb = 0; cb < cbn; cb++) {
                        const float *xb = x + ((int64_t)i * cbn + cb) * hw * B16;
                        for (int ky = 0; ky < k; ky++) {
                            const int iy = oy + ky - s->pad;
                            if (iy < 0 || iy >= s->h) continue;
                            for (int kx = 0; kx < k; kx++) {
                                int a, b;
                                ox_range(s->w, s->wo, kx, s->pad, &a, &b);
                                const float *wv = wt + (((size_t)o * cbn + cb) * k * k + ky * k + kx) * B16;
                                const float *xr = xb + ((int64_t)iy * s->w + kx - s->pad) * B16;
                                for (int ox = a; ox < b; ox++)
#pragma omp simd
                                    for (int l = 0; l < B16; l++) acc[ox * B16 + l] += wv[l] * xr[ox * B16 + l];
                            }
                        }
                    }
                    float *yr = y + ((int64_t)i * s->co + o) * howo + (int64_t)oy * s->wo;
                    for (int ox = 0; ox < s->wo; ox++) {
                        float t = bias ? bias[o] : 0.0f;
                        for (int l = 0; l < B16; l++) t += acc[ox * B16 + l];
                        yr[ox] = t;
                    }
                }
    }
}

void mfcpu_conv_b16_plain_bwd_data(mf_backend *be, const mf_conv_shape *s, const float *dy, const float *w, float *dx,
                                   int acc) {
    const int cbn = s->ci / B16, k = s->k, hw = s->h * s->w, howo = s->ho * s->wo;
    const int slots = mfcpu_islots(be, s->n, (int64_t)s->ci * hw);
    float *wt = mfcpu_workspace(be, sizeof(float) * (size_t)s->co * s->ci * k * k);
    for (int o = 0; o < s->co; o++)
        for (int c = 0; c < s->ci; c++)
            for (int t = 0; t < k * k; t++)
                wt[(((size_t)o * cbn + c / B16) * k * k + t) * B16 + c % B16] = w[((size_t)o * s->ci + c) * k * k + t];
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int sl = 0; sl < slots; sl++)
        for (int64_t i = mfcpu_split(s->n, slots, sl); i < mfcpu_split(s->n, slots, sl + 1); i++)
            for (int cb = 0; cb < cbn; cb++) {
                float *db = dx + ((int64_t)i * cbn + cb) * hw * B16;
                if (!acc) memset(db, 0, sizeof(float) * (size_t)hw * B16);
                /* dx[iy, ix] += w[o, tap] dy[o, iy - ky + pad, ix - kx + pad]: scatter from each output row */
                for (int o = 0; o < s->co; o++)
                    for (int oy = 0; oy < s->ho; oy++) {
                        const float *gr = dy + ((int64_t)i * s->co + o) * howo + (int64_t)oy * s->wo;
                        for (int ky = 0; ky < k; ky++) {
                            const int iy = oy + ky - s->pad;
                            if (iy < 0 || iy >= s->h) continue;
                            for (int kx = 0; kx < k; kx++) {
                                int a, b;
                                ox_range(s->w, s->wo, kx, s->pad, &a, &b);
                                const float *wv = wt + (((size_t)o * cbn + cb) * k * k + ky * k + kx) * B16;
                                float *dr = db + ((int64_t)iy * s->w + kx - s->pad) * B16;
                                for (int ox = a; ox < b; ox++) {
                                    const float gv = gr[ox];
#pragma omp simd
                                    for (int l = 0; l < B16; l++) dr[ox * B16 + l] += wv[l] * gv;
                                }
                            }
                        }
                    }
            }
}

void mfcpu_conv_b16_plain_bwd_filter(mf_backend *be, const mf_conv_shape *s, const float *x, const float *dy, float *dw,
                                     float *dbias) {
    const int cbn = s->ci / B16, k = s->k, hw = s->h * s->w, howo = s->ho * s->wo;
    const int slots = mfcpu_islots(be, s->n, (int64_t)s->ci * hw);
    const size_t nwt = mfcpu_round16((size_t)s->co * s->ci * k * k + (size_t)s->co);
    float *part = mfcpu_workspace(be, sizeof(float) * nwt * (size_t)slots); /* per slot: [o][cb][tap][16], then db */
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int sl = 0; sl < slots; sl++) {
        float *pw = part + (size_t)sl * nwt, *pb = pw + (size_t)s->co * s->ci * k * k;
        memset(pw, 0, sizeof(float) * nwt);
        for (int64_t i = mfcpu_split(s->n, slots, sl); i < mfcpu_split(s->n, slots, sl + 1); i++)
            for (int o = 0; o < s->co; o++) {
                const float *go = dy + ((int64_t)i * s->co + o) * howo;
                double sb = 0.0;
                for (int p = 0; p < howo; p++) sb += go[p];
                pb[o] += (float)sb;
                for (int cb = 0; cb < cbn; cb++) {
                    const float *xb = x + ((int64_t)i * cbn + cb) * hw * B16;
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            float *wv = pw + (((size_t)o * cbn + cb) * k * k + ky * k + kx) * B16;
                            float a16[B16] = {0};
                            int a, b;
                            ox_range(s->w, s->wo, kx, s->pad, &a, &b);
                            for (int oy = 0; oy < s->ho; oy++) {
                                const int iy = oy + ky - s->pad;
                                if (iy < 0 || iy >= s->h) continue;
                                const float *gr = go + (int64_t)oy * s->wo;
                                const float *xr = xb + ((int64_t)iy * s->w + kx - s->pad) * B16;
                                for (int ox = a; ox < b; ox++) {
                                    const float gv = gr[ox];
#pragma omp simd
                                    for (int l = 0; l < B16; l++) a16[l] += gv * xr[ox * B16 + l];
                                }
                            }
                            for (int l = 0; l < B16; l++) wv[l] += a16[l];
                        }
                }
            }
    }
    for (int sl = 0; sl < slots; sl++) { /* slot order: deterministic for a thread count */
        const float *pw = part + (size_t)sl * nwt, *pb = pw + (size_t)s->co * s->ci * k * k;
        for (int o = 0; o < s->co; o++) {
            for (int c = 0; c < s->ci; c++)
                for (int t = 0; t < k * k; t++)
                    dw[((size_t)o * s->ci + c) * k * k + t] += pw[(((size_t)o * cbn + c / B16) * k * k + t) * B16 + c % B16];
            if (dbias) dbias[o] += pb[o];
        }
    }
}
