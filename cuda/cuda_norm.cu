/* cuda_norm.cu - GroupNorm (and GroupNorm + SiLU) forward, backward and JVP, and sum_channel, for
 * activations in NCHW, NHWC or any channel block. Each runs as: per-(sample, channel, pixel chunk)
 * partial sums in double, then one warp per (sample, group) combining them in a fixed order into the
 * statistics and per-channel coefficients, then an element-wise pass. Deterministic; formulas as
 * cpu/cpu_norm.c and cpu/cpu_blocked.c (the derivations are in cpu_norm.c). */
#include <math.h>
#include <string.h>

#include "cuda_internal.h"
#include "cuda_kernels.h"

#define THREADS 256

enum { P_STATS, P_SUM, P_BWD, P_JVP }; /* what the partial sums are */
enum { A_FWD, A_BWD, A_JVP };          /* what the element-wise pass computes */

/* One GroupNorm-shaped problem: x (and t: dy or tx) of (n, c, hw) in channel block B (1: NCHW); the
 * pixels of each (sample, channel) are split into S chunks of `chunk` pixels (the last may be short). */
typedef struct gn_args {
    int n, c, hw, g, cg, B, S, chunk;
    int64_t NC; /* n*c: (sample, channel) pairs, ic = i*c + k */
    const float *x, *t, *gamma, *beta, *mean, *rstd;
    int silu;
} gn_args;

/* Per-channel coefficient arrays (5 of NC floats each, structure of arrays):
 *   fwd: a = gamma r, b = beta, mh, ml (the mean split in two floats)
 *   bwd: a, b, mf (saved mean), cx, c0       jvp: a, b, mf, mt, uc */
#define NCOEF 5

static __device__ inline float sigm(float v) { return 1.0f / (1.0f + expf(-v)); }
/* t silu'(u), as the CPU: s = sigmoid(u), t (s (1 + u (1 - s))) */
static __device__ inline float silu_d(float u, float t) {
    const float s = sigm(u);
    return t * (s * (1.0f + u * (1.0f - s)));
}
/* u = (x - mf) a + b: the GroupNorm output from saved statistics */
static __device__ inline float gn_u(float x, float mf, float a, float b) {
    return __fadd_rn(__fmul_rn(__fsub_rn(x, mf), a), b);
}

/* Per-(sample, channel) values from the saved statistics: mf = mean, a = gamma r (r = saved rstd), b */
static __device__ inline void ic_saved(const gn_args &A, int64_t ic, float *mf, float *a, float *b) {
    const int64_t i = ic / A.c;
    const int k = (int)(ic - i * A.c);
    const int64_t pr = i * A.g + k / A.cg;
    *mf = A.mean[pr];
    *a = (float)((A.gamma ? (double)A.gamma[k] : 1.0) * (double)A.rstd[pr]);
    *b = A.beta ? A.beta[k] : 0.0f;
}

/* The contribution of one element to the two partial sums (s1, s2) of `mode`; K: the chunk's shift
 * (P_STATS), m = (double)mf. */
template <int mode>
static __device__ inline void accum(int silu, float xv, float tv, double K, double m, float mf, float a,
                                    float b, double *s1, double *s2) {
    if (mode == P_STATS) {
        const double d = (double)xv - K;
        *s1 += d;
        *s2 += d * d;
    } else if (mode == P_SUM) {
        *s1 += (double)xv;
    } else { /* P_BWD (g = dy, or dy silu'(u)) and P_JVP (g = tx): sum g, sum g (x - mu) */
        const double gv = (double)(mode == P_BWD && silu ? silu_d(gn_u(xv, mf, a, b), tv) : tv);
        *s1 += gv;
        *s2 += gv * ((double)xv - m);
    }
}
/* P_STATS: a chunk's (mean, M2) from its shifted sums (exact shift K: a value of the chunk itself) */
static __device__ inline double2 part_value(int mode, double s1, double s2, double K, int cnt) {
    if (mode != P_STATS) return make_double2(s1, s2);
    const double q = s1 / cnt;
    return make_double2(K + q, fmax(s2 - s1 * q, 0.0));
}

/* Blocked / NHWC (B > 1): one thread per (chunk s, pair ic), t = s*NC + ic; consecutive threads read
 * consecutive channels of a pixel; it walks the chunk's pixels in order. */
template <int mode>
static __global__ void part_col_k(gn_args A, double2 *__restrict__ part) {
    const int64_t total = A.NC * A.S;
    for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
        const int s = (int)(t / A.NC);
        const int64_t ic = t - (int64_t)s * A.NC, m = ic / A.B;
        const int l = (int)(ic - m * A.B);
        const int p0 = s * A.chunk, p1 = min(A.hw, p0 + A.chunk);
        const int64_t off = (m * A.hw + p0) * A.B + l;
        const float *xp = A.x + off, *tp = A.t ? A.t + off : NULL;
        float mf = 0.0f, a = 1.0f, b = 0.0f;
        if (mode == P_BWD || mode == P_JVP) ic_saved(A, ic, &mf, &a, &b);
        const double K = mode == P_STATS ? (double)xp[0] : 0.0, md = (double)mf;
        double s1 = 0.0, s2 = 0.0;
#pragma unroll 8
        for (int p = 0; p < p1 - p0; p++)
            accum<mode>(A.silu, xp[(int64_t)p * A.B], tp ? tp[(int64_t)p * A.B] : 0.0f, K, md, mf, a, b, &s1, &s2);
        part[t] = part_value(mode, s1, s2, K, p1 - p0);
    }
}

/* Fixed-shape block sum of a double (THREADS threads): warp trees, then the first warp over the warps. */
static __device__ inline double block_sum(double v, double *sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads(); /* sh may still be read from a previous call */
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x / 32) ? sh[lane] : 0.0;
    if (w == 0)
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v; /* valid in thread 0 */
}

/* NCHW (B == 1): one block per (chunk s, pair ic) = blockIdx.x; the plane's pixels are contiguous. */
template <int mode>
static __global__ void part_row_k(gn_args A, double2 *__restrict__ part) {
    __shared__ double sh[THREADS / 32];
    const int64_t t = blockIdx.x;
    const int s = (int)(t / A.NC);
    const int64_t ic = t - (int64_t)s * A.NC;
    const int p0 = s * A.chunk, p1 = min(A.hw, p0 + A.chunk);
    const int64_t off = ic * A.hw + p0;
    const float *xp = A.x + off, *tp = A.t ? A.t + off : NULL;
    float mf = 0.0f, a = 1.0f, b = 0.0f;
    if (mode == P_BWD || mode == P_JVP) ic_saved(A, ic, &mf, &a, &b);
    const double K = mode == P_STATS ? (double)xp[0] : 0.0, md = (double)mf;
    double s1 = 0.0, s2 = 0.0;
    for (int p = threadIdx.x; p < p1 - p0; p += blockDim.x)
        accum<mode>(A.silu, xp[p], tp ? tp[p] : 0.0f, K, md, mf, a, b, &s1, &s2);
    s1 = block_sum(s1, sh);
    s2 = block_sum(s2, sh);
    if (threadIdx.x == 0) part[t] = part_value(mode, s1, s2, K, p1 - p0);
}

/* Chan et al.'s combination of (count, mean, M2) summaries: (na, ma, Ma) += (nb, mb, Mb) */
static __device__ inline void chan_add(double *na, double *ma, double *Ma, double nb, double mb, double Mb) {
    if (nb == 0.0) return;
    if (*na == 0.0) {
        *na = nb, *ma = mb, *Ma = Mb;
        return;
    }
    const double n = *na + nb, d = mb - *ma;
    *ma += d * (nb / n);
    *Ma += Mb + d * d * (*na * nb / n);
    *na = n;
}

/* One warp per (sample, group) pair pr: combine the partials of its cg channels (each over its chunks in
 * order; lane L takes channels L, L+32, ...; then a fixed shuffle tree), then write the statistics
 * (P_STATS: mean, rstd) and every channel's coefficients. P_BWD also keeps, per pair ic, A = sum g and
 * RB = r sum g (x - mu) (ab[ic], ab[NC + ic]) for the parameter gradients. */
static __global__ void finish_pair_k(gn_args A, int mode, float eps, const double2 *__restrict__ part,
                                     float *__restrict__ mean, float *__restrict__ rstd, float *__restrict__ co,
                                     double *__restrict__ ab) {
    const int64_t pr = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (pr >= (int64_t)A.n * A.g) return; /* the whole warp */
    const int64_t i = pr / A.g;
    const int gi = (int)(pr - i * A.g);
    const int64_t ic0 = i * A.c + (int64_t)gi * A.cg;
    const double N = (double)A.cg * A.hw;
    double v0 = 0.0, v1 = 0.0, v2 = 0.0; /* P_STATS: count, mean, M2; else the two sums (v1, v2) */
    const double r_saved = mode == P_STATS ? 0.0 : (double)A.rstd[pr];
    for (int cc = lane; cc < A.cg; cc += 32) {
        const int64_t ic = ic0 + cc;
        const int k = gi * A.cg + cc;
        if (mode == P_STATS) {
            double n = 0.0, m = 0.0, M = 0.0;
            for (int s = 0; s < A.S; s++) {
                const double2 q = part[(int64_t)s * A.NC + ic];
                chan_add(&n, &m, &M, (double)min(A.chunk, A.hw - s * A.chunk), q.x, q.y);
            }
            chan_add(&v0, &v1, &v2, n, m, M);
        } else {
            double a = 0.0, b = 0.0;
            for (int s = 0; s < A.S; s++) {
                const double2 q = part[(int64_t)s * A.NC + ic];
                a += q.x;
                b += q.y;
            }
            if (mode == P_BWD) {
                ab[ic] = a;
                ab[A.NC + ic] = r_saved * b;
                const double gm = A.gamma ? (double)A.gamma[k] : 1.0;
                a *= gm;
                b *= gm;
            }
            v1 += a;
            v2 += b;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        const double o0 = __shfl_down_sync(0xffffffffu, v0, o), o1 = __shfl_down_sync(0xffffffffu, v1, o),
                     o2 = __shfl_down_sync(0xffffffffu, v2, o);
        if (mode == P_STATS) {
            chan_add(&v0, &v1, &v2, o0, o1, o2);
        } else {
            v1 += o1;
            v2 += o2;
        }
    }
    v1 = __shfl_sync(0xffffffffu, v1, 0);
    v2 = __shfl_sync(0xffffffffu, v2, 0);
    double r;
    float c2, c3, c4;
    if (mode == P_STATS) { /* v1 = mean, v2 = sum (x - mean)^2 */
        r = 1.0 / sqrt(fmax(v2 / N, 0.0) + (double)eps);
        if (lane == 0) {
            mean[pr] = (float)v1;
            rstd[pr] = (float)r;
        }
        c2 = (float)v1;
        c3 = (float)(v1 - (double)c2);
        c4 = 0.0f;
    } else {
        r = r_saved;
        c2 = A.mean[pr];
        if (mode == P_BWD) { /* v1 = s1 = sum gamma A, v2 = s2x = sum gamma B */
            c3 = (float)(-r * r * r * v2 / N);
            c4 = (float)(-r * v1 / N);
        } else { /* v1 = St, v2 = Sxt */
            c3 = (float)(v1 / N);
            c4 = (float)(r * r * v2 / N);
        }
    }
    for (int cc = lane; cc < A.cg; cc += 32) {
        const int64_t ic = ic0 + cc;
        const int k = gi * A.cg + cc;
        co[ic] = (float)((A.gamma ? (double)A.gamma[k] : 1.0) * r);
        co[A.NC + ic] = A.beta ? A.beta[k] : 0.0f;
        co[2 * A.NC + ic] = c2;
        co[3 * A.NC + ic] = c3;
        co[4 * A.NC + ic] = c4;
    }
}

/* dbeta[k] += sum_i A[i, k], dgamma[k] += sum_i RB[i, k], samples in order (mfcpu_gn_param_grads) */
static __global__ void param_grads_k(int n, int c, const double *__restrict__ ab, float *__restrict__ dgamma,
                                     float *__restrict__ dbeta) {
    const int64_t NC = (int64_t)n * c;
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < c; k += gridDim.x * blockDim.x) {
        double sa = 0.0, sb = 0.0;
        for (int i = 0; i < n; i++) {
            sa += ab[(int64_t)i * c + k];
            sb += ab[NC + (int64_t)i * c + k];
        }
        if (dbeta) dbeta[k] += (float)sa;
        if (dgamma) dgamma[k] += (float)sb;
    }
}

/* One output element from its coefficients (see NCOEF) */
static __device__ inline float gn_elem(int mode, int silu, int acc, float x, float t, float o, float a, float b,
                                       float c2, float c3, float c4) {
    if (mode == A_FWD) {
        const float v = __fadd_rn(__fmul_rn(__fsub_rn(__fsub_rn(x, c2), c3), a), b);
        return silu ? v * sigm(v) : v;
    }
    const float xm = __fsub_rn(x, c2);
    if (mode == A_BWD) {
        const float gv = silu ? silu_d(gn_u(x, c2, a, b), t) : t;
        const float d = __fadd_rn(__fadd_rn(__fmul_rn(a, gv), __fmul_rn(c3, xm)), c4);
        return acc ? o + d : d;
    }
    const float v = __fmul_rn(a, __fsub_rn(__fsub_rn(t, c3), __fmul_rn(xm, c4)));
    return silu ? silu_d(gn_u(x, c2, a, b), v) : v;
}

/* pair index i*c + k of element j in channel block B (bhw = B*hw) */
template <typename I>
static __device__ inline I pair_of(I j, I B, I bhw) {
    return B == 1 ? j / bhw : (j / bhw) * B + j % B;
}

/* The element-wise pass over all n*c*hw elements (o may be x or t: each element is read by the thread
 * that writes it). vec: 4 elements per thread (float4), which share
 * their pair (B == 1, hw % 4 == 0) or have 4 consecutive pairs (B % 4 == 0). */
template <typename I>
static __global__ void apply_k(I total, I B, I bhw, int64_t NC, int mode, int silu, int acc, int vec,
                               const float *x, const float *t, float *o, const float *__restrict__ co) {
    const float *C0 = co, *C1 = co + NC, *C2 = co + 2 * NC, *C3 = co + 3 * NC, *C4 = co + 4 * NC;
    const int rd = mode == A_BWD && acc;
    if (vec) {
        for (I q = (I)(blockIdx.x * blockDim.x + threadIdx.x); q < total / 4; q += (I)(gridDim.x * blockDim.x)) {
            const I pr = pair_of<I>(q * 4, B, bhw);
            float4 a, b, c2, c3, c4;
            if (B > 1) {
                a = reinterpret_cast<const float4 *>(C0 + pr)[0], b = reinterpret_cast<const float4 *>(C1 + pr)[0];
                c2 = reinterpret_cast<const float4 *>(C2 + pr)[0], c3 = reinterpret_cast<const float4 *>(C3 + pr)[0];
                c4 = reinterpret_cast<const float4 *>(C4 + pr)[0];
            } else {
                a = make_float4(C0[pr], C0[pr], C0[pr], C0[pr]), b = make_float4(C1[pr], C1[pr], C1[pr], C1[pr]);
                c2 = make_float4(C2[pr], C2[pr], C2[pr], C2[pr]), c3 = make_float4(C3[pr], C3[pr], C3[pr], C3[pr]);
                c4 = make_float4(C4[pr], C4[pr], C4[pr], C4[pr]);
            }
            const float4 z = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            const float4 xv = reinterpret_cast<const float4 *>(x)[q];
            const float4 tv = t ? reinterpret_cast<const float4 *>(t)[q] : z;
            const float4 ov = rd ? reinterpret_cast<const float4 *>(o)[q] : z;
            reinterpret_cast<float4 *>(o)[q] =
                make_float4(gn_elem(mode, silu, acc, xv.x, tv.x, ov.x, a.x, b.x, c2.x, c3.x, c4.x),
                            gn_elem(mode, silu, acc, xv.y, tv.y, ov.y, a.y, b.y, c2.y, c3.y, c4.y),
                            gn_elem(mode, silu, acc, xv.z, tv.z, ov.z, a.z, b.z, c2.z, c3.z, c4.z),
                            gn_elem(mode, silu, acc, xv.w, tv.w, ov.w, a.w, b.w, c2.w, c3.w, c4.w));
        }
        return;
    }
    for (I j = (I)(blockIdx.x * blockDim.x + threadIdx.x); j < total; j += (I)(gridDim.x * blockDim.x)) {
        const I pr = pair_of<I>(j, B, bhw);
        o[j] = gn_elem(mode, silu, acc, x[j], t ? t[j] : 0.0f, rd ? o[j] : 0.0f, C0[pr], C1[pr], C2[pr], C3[pr], C4[pr]);
    }
}

/* ---- host side ------------------------------------------------------------------------------------- */

static inline int al16(const void *p) { return ((uintptr_t)p & 15u) == 0; }
static inline size_t round256(size_t b) { return (b + 255) & ~(size_t)255; }

/* Shapes and chunking (a function of the sizes only, so results are reproducible). Blocked: about 2^18
 * (chunk, pair) threads of at least 16 pixels; NCHW: about 2048 (chunk, pair) blocks of at least 4096
 * pixels. 0 on bad arguments (recorded). */
static int gn_plan(mf_backend *be, gn_args *A, int n, int c, int hw, int g, int blk, const char *what) {
    memset(A, 0, sizeof *A);
    const int B = blk > 1 ? blk : 1;
    if (n <= 0 || c <= 0 || hw <= 0 || g <= 0 || c % g != 0 || c % B != 0) {
        mfcu_record_error(be, __FILE__, __LINE__, what, "bad shape (c % g, c % blk)");
        return 0;
    }
    A->n = n, A->c = c, A->hw = hw, A->g = g, A->cg = c / g, A->B = B;
    A->NC = (int64_t)n * c;
    int64_t S;
    if (B > 1) {
        S = ((int64_t)1 << 18) / A->NC + 1;
        const int64_t smax = hw / 16 > 1 ? hw / 16 : 1;
        if (S > smax) S = smax;
    } else {
        S = 2048 / A->NC + 1;
        const int64_t smax = hw / 4096 > 1 ? hw / 4096 : 1;
        if (S > smax) S = smax;
    }
    A->chunk = (int)((hw + S - 1) / S);
    A->S = (hw + A->chunk - 1) / A->chunk;
    return 1;
}

/* One scratch allocation: partials (S*NC double2), coefficients (NCOEF*NC floats), A/RB (2*NC doubles) */
typedef struct gn_scr {
    double2 *part;
    float *co;
    double *ab;
} gn_scr;
static int gn_scratch(mf_backend *be, const gn_args *A, int with_ab, gn_scr *s) {
    const size_t pb = round256(sizeof(double2) * (size_t)A->S * (size_t)A->NC);
    const size_t cb = round256(sizeof(float) * NCOEF * (size_t)A->NC);
    const size_t ab = with_ab ? round256(sizeof(double) * 2 * (size_t)A->NC) : 0;
    char *p = (char *)mfcu_scratch(be, pb + cb + ab);
    if (!p) return 0;
    s->part = (double2 *)p;
    s->co = (float *)(p + pb);
    s->ab = with_ab ? (double *)(p + pb + cb) : NULL;
    return 1;
}

template <int mode>
static int launch_partial_m(mf_backend *be, const gn_args *A, double2 *part) {
    cudaStream_t st = mfcu_stream(be);
    if (A->B > 1) {
        part_col_k<mode><<<mfcu_blocks(A->NC * A->S, THREADS), THREADS, 0, st>>>(*A, part);
        return !MFCU_LAUNCHED(be, "groupnorm partial sums (blocked)");
    }
    part_row_k<mode><<<(unsigned)(A->NC * A->S), THREADS, 0, st>>>(*A, part);
    return !MFCU_LAUNCHED(be, "groupnorm partial sums (NCHW)");
}
static int launch_partial(mf_backend *be, const gn_args *A, int mode, double2 *part) {
    switch (mode) {
    case P_STATS: return launch_partial_m<P_STATS>(be, A, part);
    case P_SUM: return launch_partial_m<P_SUM>(be, A, part);
    case P_BWD: return launch_partial_m<P_BWD>(be, A, part);
    default: return launch_partial_m<P_JVP>(be, A, part);
    }
}

static int launch_finish(mf_backend *be, const gn_args *A, int mode, float eps, const gn_scr *s, float *mean,
                         float *rstd) {
    const int64_t threads = (int64_t)A->n * A->g * 32;
    finish_pair_k<<<(unsigned)((threads + 127) / 128), 128, 0, mfcu_stream(be)>>>(*A, mode, eps, s->part, mean, rstd,
                                                                                   s->co, s->ab);
    return !MFCU_LAUNCHED(be, "groupnorm statistics");
}

static void launch_apply(mf_backend *be, const gn_args *A, int mode, int acc, const float *x, const float *t,
                         float *o, const float *co) {
    const int64_t total = A->NC * A->hw;
    const int B = A->B;
    const int vec = al16(x) && (!t || al16(t)) && al16(o) && (B % 4 == 0 || (B == 1 && A->hw % 4 == 0));
    const unsigned grid = mfcu_blocks(vec ? total / 4 : total, THREADS);
    cudaStream_t st = mfcu_stream(be);
    if (total < (int64_t)INT32_MAX)
        apply_k<uint32_t><<<grid, THREADS, 0, st>>>((uint32_t)total, (uint32_t)B, (uint32_t)B * (uint32_t)A->hw, A->NC,
                                                    mode, A->silu, acc, vec, x, t, o, co);
    else
        apply_k<int64_t><<<grid, THREADS, 0, st>>>(total, B, (int64_t)B * A->hw, A->NC, mode, A->silu, acc, vec, x, t,
                                                   o, co);
    MFCU_LAUNCHED(be, "groupnorm element-wise pass");
}

static void gn_fwd(mf_backend *be, int n, int c, int hw, int g, float eps, const float *x, const float *gamma,
                   const float *beta, float *y, float *mean, float *rstd, int blk, int silu) {
    gn_args A;
    gn_scr s;
    if (mfcu_enter(be) || !gn_plan(be, &A, n, c, hw, g, blk, silu ? "gn_silu" : "groupnorm")) return;
    A.x = x, A.gamma = gamma, A.beta = beta, A.silu = silu;
    if (!gn_scratch(be, &A, 0, &s) || !launch_partial(be, &A, P_STATS, s.part) ||
        !launch_finish(be, &A, P_STATS, eps, &s, mean, rstd))
        return;
    launch_apply(be, &A, A_FWD, 0, x, NULL, y, s.co);
}

static void gn_bwd(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma, const float *beta,
                   const float *mean, const float *rstd, const float *dy, float *dx, float *dgamma, float *dbeta,
                   int acc, int blk, int silu) {
    gn_args A;
    gn_scr s;
    if ((!dx && !dgamma && !dbeta) || mfcu_enter(be)) return;
    if (!gn_plan(be, &A, n, c, hw, g, blk, silu ? "gn_silu_bwd" : "groupnorm_bwd")) return;
    A.x = x, A.t = dy, A.gamma = gamma, A.beta = silu ? beta : NULL, A.mean = mean, A.rstd = rstd, A.silu = silu;
    if (!gn_scratch(be, &A, 1, &s) || !launch_partial(be, &A, P_BWD, s.part) ||
        !launch_finish(be, &A, P_BWD, 0.0f, &s, NULL, NULL))
        return;
    if (dx) launch_apply(be, &A, A_BWD, acc ? 1 : 0, x, dy, dx, s.co);
    if ((dgamma || dbeta) && !mfcu_failed(be)) {
        param_grads_k<<<(unsigned)((c + 127) / 128), 128, 0, mfcu_stream(be)>>>(n, c, s.ab, dgamma, dbeta);
        MFCU_LAUNCHED(be, "groupnorm parameter gradients");
    }
}

static void gn_jvp(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma, const float *beta,
                   const float *mean, const float *rstd, const float *tx, float *ty, int blk, int silu) {
    gn_args A;
    gn_scr s;
    if (mfcu_enter(be) || !gn_plan(be, &A, n, c, hw, g, blk, silu ? "gn_silu_jvp" : "groupnorm_jvp")) return;
    A.x = x, A.t = tx, A.gamma = gamma, A.beta = silu ? beta : NULL, A.mean = mean, A.rstd = rstd, A.silu = silu;
    if (!gn_scratch(be, &A, 0, &s) || !launch_partial(be, &A, P_JVP, s.part) ||
        !launch_finish(be, &A, P_JVP, 0.0f, &s, NULL, NULL))
        return;
    launch_apply(be, &A, A_JVP, 0, x, tx, ty, s.co);
}

void mfcu_groupnorm(mf_backend *be, int n, int c, int hw, int g, float eps, const float *x, const float *gamma,
                    const float *beta, float *y, float *mean, float *rstd, int blk) {
    gn_fwd(be, n, c, hw, g, eps, x, gamma, beta, y, mean, rstd, blk, 0);
}
void mfcu_groupnorm_bwd(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma,
                        const float *mean, const float *rstd, const float *dy, float *dx, float *dgamma,
                        float *dbeta, int acc, int blk) {
    gn_bwd(be, n, c, hw, g, x, gamma, NULL, mean, rstd, dy, dx, dgamma, dbeta, acc, blk, 0);
}
void mfcu_groupnorm_jvp(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma,
                        const float *mean, const float *rstd, const float *tx, float *ty, int blk) {
    gn_jvp(be, n, c, hw, g, x, gamma, NULL, mean, rstd, tx, ty, blk, 0);
}
void mfcu_gn_silu(mf_backend *be, int n, int c, int hw, int g, float eps, const float *x, const float *gamma,
                  const float *beta, float *y, float *mean, float *rstd, int blk) {
    gn_fwd(be, n, c, hw, g, eps, x, gamma, beta, y, mean, rstd, blk, 1);
}
void mfcu_gn_silu_bwd(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma,
                      const float *beta, const float *mean, const float *rstd, const float *dy, float *dx,
                      float *dgamma, float *dbeta, int acc, int blk) {
    gn_bwd(be, n, c, hw, g, x, gamma, beta, mean, rstd, dy, dx, dgamma, dbeta, acc, blk, 1);
}
void mfcu_gn_silu_jvp(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma,
                      const float *beta, const float *mean, const float *rstd, const float *tx, float *ty,
                      int blk) {
    gn_jvp(be, n, c, hw, g, x, gamma, beta, mean, rstd, tx, ty, blk, 1);
}

/* ---- sum_channel: de[i, k] (+)= sum over hw, in double (the GroupNorm partial sums with g = c) ------ */

static __global__ void sum_finish_k(gn_args A, const double2 *__restrict__ part, float *__restrict__ de, int acc) {
    for (int64_t ic = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; ic < A.NC; ic += (int64_t)gridDim.x * blockDim.x) {
        double s = 0.0;
        for (int k = 0; k < A.S; k++) s += part[(int64_t)k * A.NC + ic].x;
        de[ic] = (float)(acc ? (double)de[ic] + s : s);
    }
}

void mfcu_sum_channel(mf_backend *be, int n, int c, int hw, const float *dy, float *de, int acc, int blk) {
    gn_args A;
    gn_scr s;
    if (mfcu_enter(be) || !gn_plan(be, &A, n, c, hw, c, blk, "sum_channel")) return;
    A.x = dy;
    if (!gn_scratch(be, &A, 0, &s) || !launch_partial(be, &A, P_SUM, s.part)) return;
    sum_finish_k<<<mfcu_blocks(A.NC, THREADS), THREADS, 0, mfcu_stream(be)>>>(A, s.part, de, acc ? 1 : 0);
    MFCU_LAUNCHED(be, "sum_channel");
}
