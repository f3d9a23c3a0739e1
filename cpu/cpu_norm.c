/* cpu_norm.c - GroupNorm forward, backward and forward-mode tangent (JVP) on the CPU. One (sample, group)
 * pair is a contiguous run of N = (c/g)*hw floats; its reductions are done in double, in a fixed order,
 * and the pairs are spread over a fixed partition of OpenMP threads.
 *
 * Notation for one pair: mu = mean(x), r = rstd = 1/sqrt(var + eps) (biased variance), xhat = (x - mu) r,
 * y = gamma_c xhat + beta_c. Differentiating (eps included, which only enters through r):
 *   d mu / dx_j = 1/N,   d r / dx_j = -r^3 (x_j - mu) / N,
 *   d xhat_i / dx_j = r (delta_ij - 1/N) - r xhat_i xhat_j / N.
 * Backward (g_i = gamma_c(i) dy_i the gradient w.r.t. xhat):
 *   dx_j = r g_j - (r/N) sum_i g_i - (r xhat_j / N) sum_i g_i xhat_i.
 *   With, per channel, A_c = sum_hw dy and B_c = sum_hw dy (x - mu), s1 = sum_c gamma_c A_c and
 *   s2x = sum_c gamma_c B_c (so sum_i g_i xhat_i = r s2x):
 *   dx_j = (gamma_c r) dy_j - r s1 / N - r^3 s2x (x_j - mu) / N;
 *   dgamma_c += sum_hw dy xhat = r B_c,  dbeta_c += A_c  (summed over samples in sample order).
 * JVP (tangent tx of x, parameters fixed): ty_i = gamma_c sum_j (d xhat_i / dx_j) tx_j
 *   = gamma_c r [ (tx_i - mean(tx)) - xhat_i mean(xhat tx) ]
 *   = (gamma_c r) [ (tx_i - St/N) - (x_i - mu) r^2 Sxt / N ],  St = sum tx, Sxt = sum (x - mu) tx.
 * The same formulas are exercised against finite differences in tests/test_cpu_ops.c. */
#include <math.h>
#include <string.h>

#include "cpu_internal.h"
#include "mf_error.h"

/* dbeta[ch] += sum_i A[i, ch], dgamma[ch] += sum_i RB[i, ch]: the per-sample sums of the GroupNorm
 * backward (either output may be NULL), added in sample order (both layouts use it). */
void mfcpu_gn_param_grads(int n, int c, const double *A, const double *RB, float *dgamma, float *dbeta) {
    if (!dgamma && !dbeta) return;
    for (int ch = 0; ch < c; ch++) {
        double sa = 0.0, sb = 0.0;
        for (int i = 0; i < n; i++) {
            sa += A[(size_t)i * c + ch];
            sb += RB[(size_t)i * c + ch];
        }
        if (dbeta) dbeta[ch] += (float)sa;
        if (dgamma) dgamma[ch] += (float)sb;
    }
}

void mfcpu_groupnorm(mf_backend *be, int n, int c, int hw, int g, float eps, const float *x,
                     const float *gamma, const float *beta, float *y, float *mean, float *rstd) {
    MF_ASSERT(n > 0 && c > 0 && hw > 0 && g > 0 && c % g == 0);
    const int cg = c / g;
    const int64_t N = (int64_t)cg * hw, pairs = (int64_t)n * g;
    const int slots = mfcpu_islots(be, pairs, N), simd = mfcpu(be)->avx512;
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int sl = 0; sl < slots; sl++) {
        for (int64_t pr = mfcpu_split(pairs, slots, sl); pr < mfcpu_split(pairs, slots, sl + 1); pr++) {
            const int gi = (int)(pr % g);
            const int64_t off = pr * N; /* == (i*c + gi*cg)*hw */
            const float *xg = x + off;
            float *yg = y + off;
            const double m = mfcpu_dsum(xg, N, simd) / (double)N;
            const double r = 1.0 / sqrt(mfcpu_dsqdev(xg, N, m, simd) / (double)N + (double)eps);
            mean[pr] = (float)m;
            rstd[pr] = (float)r;
            /* y = ((x - mh) - ml) * a + b: the mean split in two floats keeps x - mu accurate in
             * float even when |mu| >> std */
            const float mh = (float)m, ml = (float)(m - (double)mh);
            for (int cc = 0; cc < cg; cc++) {
                const int ch = gi * cg + cc;
                const float a = (float)((gamma ? (double)gamma[ch] : 1.0) * r);
                const float b = beta ? beta[ch] : 0.0f;
                const float *xs = xg + (int64_t)cc * hw;
                float *ys = yg + (int64_t)cc * hw;
#pragma omp simd
                for (int p = 0; p < hw; p++) ys[p] = ((xs[p] - mh) - ml) * a + b;
            }
        }
    }
}

void mfcpu_groupnorm_bwd(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma,
                         const float *mean, const float *rstd, const float *dy, float *dx, float *dgamma,
                         float *dbeta, int acc) {
    MF_ASSERT(n > 0 && c > 0 && hw > 0 && g > 0 && c % g == 0);
    const int cg = c / g;
    const int64_t N = (int64_t)cg * hw, pairs = (int64_t)n * g;
    const int slots = mfcpu_islots(be, pairs, N), simd = mfcpu(be)->avx512;
    /* per (sample, channel): A = sum dy, RB = r * sum dy (x - mu), for dgamma / dbeta afterwards */
    double *ab = mfcpu_workspace(be, sizeof(double) * 2 * (size_t)n * c);
    double *A = ab, *RB = ab + (size_t)n * c;
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int sl = 0; sl < slots; sl++) {
        for (int64_t pr = mfcpu_split(pairs, slots, sl); pr < mfcpu_split(pairs, slots, sl + 1); pr++) {
            const int gi = (int)(pr % g);
            const int64_t off = pr * N, ch0 = pr * cg; /* (sample, channel) index of channel 0 */
            const double m = mean[pr], r = rstd[pr];
            double s1 = 0.0, s2x = 0.0;
            for (int cc = 0; cc < cg; cc++) {
                const int ch = gi * cg + cc;
                const float *xs = x + off + (int64_t)cc * hw, *gs = dy + off + (int64_t)cc * hw;
                double a_c, b_c;
                mfcpu_dsum2(gs, xs, hw, m, simd, &a_c, &b_c);
                const double gm = gamma ? gamma[ch] : 1.0;
                A[ch0 + cc] = a_c;
                RB[ch0 + cc] = r * b_c;
                s1 += gm * a_c;
                s2x += gm * b_c;
            }
            if (!dx) continue;
            const float c0 = (float)(-r * s1 / (double)N), cx = (float)(-r * r * r * s2x / (double)N);
            const float mf = mean[pr];
            for (int cc = 0; cc < cg; cc++) {
                const int ch = gi * cg + cc;
                const float a = (float)((gamma ? (double)gamma[ch] : 1.0) * r);
                const float *xs = x + off + (int64_t)cc * hw, *gs = dy + off + (int64_t)cc * hw;
                float *ds = dx + off + (int64_t)cc * hw;
                if (acc) {
#pragma omp simd
                    for (int p = 0; p < hw; p++) ds[p] += a * gs[p] + cx * (xs[p] - mf) + c0;
                } else {
#pragma omp simd
                    for (int p = 0; p < hw; p++) ds[p] = a * gs[p] + cx * (xs[p] - mf) + c0;
                }
            }
        }
    }
    mfcpu_gn_param_grads(n, c, A, RB, dgamma, dbeta);
}

void mfcpu_groupnorm_jvp(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma,
                         const float *mean, const float *rstd, const float *tx, float *ty) {
    MF_ASSERT(n > 0 && c > 0 && hw > 0 && g > 0 && c % g == 0);
    const int cg = c / g;
    const int64_t N = (int64_t)cg * hw, pairs = (int64_t)n * g;
    const int slots = mfcpu_islots(be, pairs, N), simd = mfcpu(be)->avx512;
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int sl = 0; sl < slots; sl++) {
        for (int64_t pr = mfcpu_split(pairs, slots, sl); pr < mfcpu_split(pairs, slots, sl + 1); pr++) {
            const int gi = (int)(pr % g);
            const int64_t off = pr * N;
            const double m = mean[pr], r = rstd[pr];
            double st, sxt;
            mfcpu_dsum2(tx + off, x + off, N, m, simd, &st, &sxt);
            const float mt = (float)(st / (double)N), u = (float)(r * r * sxt / (double)N);
            const float mf = mean[pr];
            for (int cc = 0; cc < cg; cc++) {
                const int ch = gi * cg + cc;
                const float a = (float)((gamma ? (double)gamma[ch] : 1.0) * r);
                const float *xs = x + off + (int64_t)cc * hw, *ts = tx + off + (int64_t)cc * hw;
                float *ys = ty + off + (int64_t)cc * hw;
#pragma omp simd
                for (int p = 0; p < hw; p++) ys[p] = a * ((ts[p] - mt) - (xs[p] - mf) * u);
            }
        }
    }
}

/* u = (x - mean) rstd gamma + beta from saved statistics (NCHW): the GroupNorm output recomputed for the
 * fused GroupNorm + SiLU backward and JVP (mf_cpu.c). */
void mfcpu_gn_affine(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma,
                     const float *beta, const float *mean, const float *rstd, float *u) {
    MF_ASSERT(n > 0 && c > 0 && hw > 0 && g > 0 && c % g == 0);
    const int cg = c / g;
    const int64_t planes = (int64_t)n * c;
    const int slots = mfcpu_islots(be, planes, hw);
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int sl = 0; sl < slots; sl++)
        for (int64_t q = mfcpu_split(planes, slots, sl); q < mfcpu_split(planes, slots, sl + 1); q++) {
            const int ch = (int)(q % c);
            const int64_t pr = (q / c) * g + ch / cg;
            const float a = (float)((gamma ? (double)gamma[ch] : 1.0) * rstd[pr]), b = beta ? beta[ch] : 0.0f;
            const float m = mean[pr];
            const float *xs = x + q * hw;
            float *us = u + q * hw;
#pragma omp simd
            for (int p = 0; p < hw; p++) us[p] = (xs[p] - m) * a + b;
        }
}
