/* cuda_reduce.cu - the CUDA backend's reductions (sum_rows, row_sq_err, sq_err_rows, sumsq), accumulated
 * in double with fixed partitions and fixed block trees (bit-identical run to run), and the optimiser
 * updates (AdamW, the synchronisation-free adamw_step, EMA) with the CPU backend's operation order and
 * rounding (no FMA contraction). */
#include <math.h>

#include "cuda_internal.h"
#include "cuda_kernels.h"

#define THREADS 256
#define ROW_CHUNK 16384 /* elements per block of a row reduction (at least) */

static inline int al16(const void *p) { return ((uintptr_t)p & 15u) == 0; }
static inline size_t round256(size_t b) { return (b + 255) & ~(size_t)255; }

/* Fixed-shape block sum of a double: warp trees, then the first warp over the warps (valid in thread 0) */
static __device__ inline double block_sum(double v, double *sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x / 32) ? sh[lane] : 0.0;
    if (w == 0)
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

/* ---- row reductions: out[r] = sum_j (a[r, j] - b[r, j])^2 (b may be NULL: sum a^2) -----------------
 * Row r is cut into S chunks of `chunk` elements (a multiple of 4); block (r, s) sums its chunk: thread t
 * takes the quads q = t, t + THREADS, ... and adds their 4 elements in order (float4 loads when aligned,
 * the same order either way), then the block tree. With S > 1 a second kernel sums the S partials of a
 * row (thread t: partials t, t + THREADS, ... in order, then the tree). */
typedef struct row_plan {
    int rows, S;
    int64_t d, chunk;
} row_plan;

static row_plan plan_rows(int rows, int64_t d) {
    row_plan p;
    p.rows = rows, p.d = d;
    int64_t S = (d + ROW_CHUNK - 1) / ROW_CHUNK;
    const int64_t smax = 4096 / rows > 1 ? 4096 / rows : 1;
    if (S > smax) S = smax;
    if (S < 1) S = 1;
    p.chunk = ((d + S - 1) / S + 3) & ~(int64_t)3;
    p.S = (int)((d + p.chunk - 1) / p.chunk);
    return p;
}

static __device__ inline double sq4(float4 x, float4 y, int two) {
    double s = 0.0, d;
    d = two ? (double)x.x - (double)y.x : (double)x.x, s += d * d;
    d = two ? (double)x.y - (double)y.y : (double)x.y, s += d * d;
    d = two ? (double)x.z - (double)y.z : (double)x.z, s += d * d;
    d = two ? (double)x.w - (double)y.w : (double)x.w, s += d * d;
    return s;
}

/* part[r*S + s], or (S == 1) the row's result directly: outd (double) / outf (float) when not NULL */
static __global__ void sq_rows_k(row_plan P, const float *__restrict__ a, const float *__restrict__ b, int vec,
                                 double *__restrict__ part, double *__restrict__ outd, float *__restrict__ outf) {
    __shared__ double sh[THREADS / 32];
    const int r = blockIdx.x / P.S, s = blockIdx.x % P.S;
    const int64_t j0 = (int64_t)s * P.chunk, j1 = j0 + P.chunk < P.d ? j0 + P.chunk : P.d;
    const float *ar = a + (int64_t)r * P.d, *br = b ? b + (int64_t)r * P.d : NULL;
    const int two = br != NULL;
    double acc = 0.0;
    for (int64_t j = j0 + 4 * (int64_t)threadIdx.x; j < j1; j += 4 * (int64_t)blockDim.x) {
        float4 x, y = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (vec) { /* j1 is a multiple of 4 here (d % 4 == 0) */
            x = *reinterpret_cast<const float4 *>(ar + j);
            if (two) y = *reinterpret_cast<const float4 *>(br + j);
        } else {
            const int64_t m = j1 - j; /* elements past the row's end count as 0 - 0 */
            x = make_float4(ar[j], m > 1 ? ar[j + 1] : 0.0f, m > 2 ? ar[j + 2] : 0.0f, m > 3 ? ar[j + 3] : 0.0f);
            if (two)
                y = make_float4(br[j], m > 1 ? br[j + 1] : 0.0f, m > 2 ? br[j + 2] : 0.0f, m > 3 ? br[j + 3] : 0.0f);
        }
        acc += sq4(x, y, two);
    }
    acc = block_sum(acc, sh);
    if (threadIdx.x != 0) return;
    if (P.S > 1) {
        part[blockIdx.x] = acc;
    } else {
        if (outd) outd[r] = acc;
        if (outf) outf[r] = (float)acc;
    }
}

static __global__ void sq_rows_fin_k(row_plan P, const double *__restrict__ part, double *__restrict__ outd,
                                     float *__restrict__ outf) {
    __shared__ double sh[THREADS / 32];
    const int r = blockIdx.x;
    double acc = 0.0;
    for (int s = threadIdx.x; s < P.S; s += blockDim.x) acc += part[(int64_t)r * P.S + s];
    acc = block_sum(acc, sh);
    if (threadIdx.x == 0) {
        if (outd) outd[r] = acc;
        if (outf) outf[r] = (float)acc;
    }
}

/* The row sums into outd (device doubles) and/or outf (device floats); part: S*rows doubles (S > 1) */
static void sq_rows(mf_backend *be, const row_plan *P, const float *a, const float *b, double *part, double *outd,
                    float *outf) {
    const int vec = P->d % 4 == 0 && al16(a) && (!b || al16(b));
    cudaStream_t st = mfcu_stream(be);
    sq_rows_k<<<(unsigned)((int64_t)P->rows * P->S), THREADS, 0, st>>>(*P, a, b, vec, part, outd, outf);
    if (MFCU_LAUNCHED(be, "squared-error row sums") || P->S == 1) return;
    sq_rows_fin_k<<<(unsigned)P->rows, THREADS, 0, st>>>(*P, part, outd, outf);
    MFCU_LAUNCHED(be, "squared-error row sums (partials)");
}

void mfcu_row_sq_err(mf_backend *be, int n, int64_t d, const float *x, const float *y, float *e) {
    if (n <= 0 || mfcu_enter(be)) return;
    if (d <= 0) {
        mfcu_fill(be, e, 0.0f, n);
        return;
    }
    const row_plan P = plan_rows(n, d);
    double *part = NULL;
    if (P.S > 1 && !(part = (double *)mfcu_scratch(be, sizeof(double) * (size_t)n * P.S))) return;
    sq_rows(be, &P, x, y, part, NULL, e);
}

/* The host-result entries are synchronisation points: while a graph is recorded they issue nothing and
 * refuse the recording the way read() does (mfcu_sync notes it; graph_end then fails and the caller
 * issues the work again eagerly), instead of recording a sticky backend failure or capturing a copy
 * into pageable host memory. Non-zero when refused. */
static int refuse_while_recording(mf_backend *be) {
    if (!mfcu_capturing(be)) return 0;
    (void)mfcu_sync(be); /* while recording: refuses it, returns non-zero */
    return 1;
}
/* Device results back to the host. Non-zero on failure (recorded). */
static int read_back(mf_backend *be, void *host, const void *dev, size_t bytes) {
    if (mfcu_failed(be) || refuse_while_recording(be)) return 1;
    return MFCU_CHECK(be, cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, mfcu_stream(be))) || mfcu_sync(be);
}

/* out (host) gets the n row sums; zeros where the backend has failed (the caller checks error()). */
void mfcu_sq_err_rows(mf_backend *be, int n, int64_t d, const float *a, const float *b, double *out) {
    if (n <= 0) return;
    for (int i = 0; i < n; i++) out[i] = 0.0;
    if (d <= 0 || mfcu_enter(be) || refuse_while_recording(be)) return;
    const row_plan P = plan_rows(n, d);
    const size_t ob = round256(sizeof(double) * (size_t)n);
    char *scr = (char *)mfcu_scratch(be, ob + (P.S > 1 ? sizeof(double) * (size_t)n * P.S : 0));
    if (!scr) return;
    double *dout = (double *)scr, *part = P.S > 1 ? (double *)(scr + ob) : NULL;
    sq_rows(be, &P, a, b, part, dout, NULL);
    if (read_back(be, out, dout, sizeof(double) * (size_t)n))
        for (int i = 0; i < n; i++) out[i] = 0.0;
}

double mfcu_sumsq(mf_backend *be, int64_t n, const float *x) {
    if (n <= 0 || mfcu_enter(be) || refuse_while_recording(be)) return 0.0;
    const row_plan P = plan_rows(1, n);
    double *scr = (double *)mfcu_scratch(be, sizeof(double) * (size_t)(1 + P.S));
    if (!scr) return 0.0;
    sq_rows(be, &P, x, NULL, scr + 1, scr, NULL);
    double s = 0.0;
    return read_back(be, &s, scr, sizeof(double)) ? 0.0 : s;
}

/* ---- sum_rows: dbias[j] += sum_r dy[r, j], rows in order in double ----------------------------------
 * Thread (s, j) sums rows [s*chunk, (s+1)*chunk) of column j (coalesced along j); with S > 1 a second
 * kernel adds the S partials of a column in order. */
static __global__ void colsum_k(int rows, int cols, int chunk, int S, const float *__restrict__ dy,
                                double *__restrict__ part, float *__restrict__ dbias) {
    const int64_t total = (int64_t)S * cols;
    for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
        const int s = (int)(t / cols), j = (int)(t - (int64_t)s * cols);
        const int r0 = s * chunk, r1 = r0 + chunk < rows ? r0 + chunk : rows;
        double acc = 0.0;
        const float *p = dy + (int64_t)r0 * cols + j;
#pragma unroll 8
        for (int r = r0; r < r1; r++, p += cols) acc += (double)*p;
        if (S > 1) part[t] = acc;
        else dbias[j] = (float)((double)dbias[j] + acc);
    }
}
static __global__ void colsum_fin_k(int cols, int S, const double *__restrict__ part, float *__restrict__ dbias) {
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < cols; j += gridDim.x * blockDim.x) {
        double acc = 0.0;
        for (int s = 0; s < S; s++) acc += part[(int64_t)s * cols + j];
        dbias[j] = (float)((double)dbias[j] + acc);
    }
}

void mfcu_sum_rows(mf_backend *be, int rows, int cols, const float *dy, float *dbias) {
    if (rows <= 0 || cols <= 0 || mfcu_enter(be)) return;
    int64_t S = ((int64_t)1 << 17) / cols + 1;
    const int64_t smax = rows / 16 > 1 ? rows / 16 : 1;
    if (S > smax) S = smax;
    const int chunk = (int)((rows + S - 1) / S);
    S = (rows + chunk - 1) / chunk;
    double *part = NULL;
    if (S > 1 && !(part = (double *)mfcu_scratch(be, sizeof(double) * (size_t)S * (size_t)cols))) return;
    cudaStream_t st = mfcu_stream(be);
    colsum_k<<<mfcu_blocks(S * cols, THREADS), THREADS, 0, st>>>(rows, cols, chunk, (int)S, dy, part, dbias);
    if (MFCU_LAUNCHED(be, "sum_rows") || S == 1) return;
    colsum_fin_k<<<mfcu_blocks(cols, THREADS), THREADS, 0, st>>>(cols, (int)S, part, dbias);
    MFCU_LAUNCHED(be, "sum_rows (partials)");
}

/* ---- optimiser ------------------------------------------------------------------------------------- */

typedef struct adamw_s {
    float b1, b2, omb1, omb2, eps, decay, step_size, bc2s, gscale;
} adamw_s;

/* PyTorch's single-tensor AdamW with the CPU backend's float operation order (mfcpu_adamw):
 *   g = gscale grad; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 *   p = p (1 - lr wd) - (lr/bc1) m / (sqrt(v)/sqrt(bc2) + eps) */
static __device__ inline void adamw_1(const adamw_s &a, float &p, float gr, float &m, float &v) {
    const float g = __fmul_rn(a.gscale, gr);
    const float mi = __fadd_rn(__fmul_rn(a.b1, m), __fmul_rn(a.omb1, g));
    const float vi = __fadd_rn(__fmul_rn(a.b2, v), __fmul_rn(a.omb2, __fmul_rn(g, g)));
    m = mi;
    v = vi;
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), a.bc2s), a.eps);
    p = __fsub_rn(__fmul_rn(p, a.decay), __fmul_rn(a.step_size, __fdiv_rn(mi, denom)));
}

static __global__ void adamw_k(int64_t n, adamw_s a, float *__restrict__ p, const float *__restrict__ grad,
                               float *__restrict__ m, float *__restrict__ v, int vec) {
    int64_t done = 0;
    if (vec) {
        const int64_t n4 = n >> 2;
        for (int64_t q = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; q < n4; q += (int64_t)gridDim.x * blockDim.x) {
            float4 P = reinterpret_cast<float4 *>(p)[q], M = reinterpret_cast<float4 *>(m)[q];
            float4 V = reinterpret_cast<float4 *>(v)[q];
            const float4 G = reinterpret_cast<const float4 *>(grad)[q];
            adamw_1(a, P.x, G.x, M.x, V.x);
            adamw_1(a, P.y, G.y, M.y, V.y);
            adamw_1(a, P.z, G.z, M.z, V.z);
            adamw_1(a, P.w, G.w, M.w, V.w);
            reinterpret_cast<float4 *>(p)[q] = P;
            reinterpret_cast<float4 *>(m)[q] = M;
            reinterpret_cast<float4 *>(v)[q] = V;
        }
        done = n4 << 2;
    }
    for (int64_t i = done + (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        adamw_1(a, p[i], grad[i], m[i], v[i]);
}

void mfcu_adamw(mf_backend *be, int64_t n, float *p, const float *grad, float *m, float *v, float lr, float b1,
                float b2, float eps, float wd, int64_t step, float gscale) {
    if (n <= 0 || mfcu_enter(be)) return;
    if (step < 1) {
        mfcu_record_error(be, __FILE__, __LINE__, "adamw", "step must be >= 1");
        return;
    }
    /* the scalars in double, rounded once (as the CPU backend and PyTorch) */
    const double bc1 = 1.0 - pow((double)b1, (double)step), bc2 = 1.0 - pow((double)b2, (double)step);
    const adamw_s a = {b1,
                       b2,
                       (float)(1.0 - (double)b1),
                       (float)(1.0 - (double)b2),
                       eps,
                       (float)(1.0 - (double)lr * (double)wd),
                       (float)((double)lr / bc1),
                       (float)sqrt(bc2),
                       gscale};
    const int vec = al16(p) && al16(grad) && al16(m) && al16(v);
    adamw_k<<<mfcu_blocks(vec ? (n + 3) / 4 : n, THREADS), THREADS, 0, mfcu_stream(be)>>>(n, a, p, grad, m, v, vec);
    MFCU_LAUNCHED(be, "adamw");
}

/* ---- adamw_step: sumsq, the clip scale and adamw without a host synchronisation ------------------ */

typedef struct adamw_dev {
    int go; /* 0: the gradient norm is not finite, nothing is updated */
    adamw_s a;
} adamw_dev;

/* One thread: the norm from the double sum, st's bookkeeping and the step's scalars (mfcpu_adamw_step,
 * with mfcpu_adamw's double-precision scalars) */
static __global__ void adamw_prep_k(const double *__restrict__ ss, float *__restrict__ st, float b1, float b2,
                                    float eps, float wd, float clip, adamw_dev *__restrict__ out) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    const double g = sqrt(ss[0]);
    st[MF_OPT_ST_GNORM] = (float)g;
    if (!isfinite(g)) {
        if (st[MF_OPT_ST_FIRST_SKIP] < 0.0f) st[MF_OPT_ST_FIRST_SKIP] = st[MF_OPT_ST_STEP];
        st[MF_OPT_ST_SKIPPED] += 1.0f;
        out->go = 0;
        return;
    }
    const double c = (double)clip;
    const float gscale = (!(c > 0) || g <= c) ? 1.0f : (float)(c / (g + 1e-6));
    const float t = st[MF_OPT_ST_T] + 1.0f;
    const double step = (double)(int64_t)t, lr = (double)st[MF_OPT_ST_LR];
    const double bc1 = 1.0 - pow((double)b1, step), bc2 = 1.0 - pow((double)b2, step);
    out->a = adamw_s{b1,
                     b2,
                     (float)(1.0 - (double)b1),
                     (float)(1.0 - (double)b2),
                     eps,
                     (float)(1.0 - lr * (double)wd),
                     (float)(lr / bc1),
                     (float)sqrt(bc2),
                     gscale};
    out->go = 1;
    st[MF_OPT_ST_T] = t;
}

static __global__ void adamw_dev_k(int64_t n, const adamw_dev *__restrict__ ad, float *__restrict__ p,
                                   const float *__restrict__ grad, float *__restrict__ m, float *__restrict__ v) {
    if (!ad->go) return;
    const adamw_s a = ad->a;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        adamw_1(a, p[i], grad[i], m[i], v[i]);
}

void mfcu_adamw_step(mf_backend *be, int64_t n, float *p, const float *grad, float *m, float *v, float *st,
                     float b1, float b2, float eps, float wd, float clip) {
    if (n <= 0 || mfcu_enter(be)) return;
    const row_plan P = plan_rows(1, n);
    /* one scratch: the step's scalars, the sum of squares, its partials */
    char *scr = (char *)mfcu_scratch(be, 512 + sizeof(double) * (size_t)P.S);
    if (!scr) return;
    adamw_dev *ad = (adamw_dev *)scr;
    double *ss = (double *)(scr + 256), *part = (double *)(scr + 512);
    sq_rows(be, &P, grad, NULL, part, ss, NULL);
    if (mfcu_failed(be)) return;
    cudaStream_t s = mfcu_stream(be);
    adamw_prep_k<<<1, 32, 0, s>>>(ss, st, b1, b2, eps, wd, clip, ad);
    if (MFCU_LAUNCHED(be, "adamw_step (scalars)")) return;
    adamw_dev_k<<<mfcu_blocks(n, THREADS), THREADS, 0, s>>>(n, ad, p, grad, m, v);
    MFCU_LAUNCHED(be, "adamw_step");
}

/* e = d e + (1 - d) p, (1 - d) formed in double and rounded once */
static __global__ void ema_k(int64_t n, float *__restrict__ e, const float *__restrict__ p, float d, float omd,
                             int vec) {
    int64_t done = 0;
    if (vec) {
        const int64_t n4 = n >> 2;
        for (int64_t q = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; q < n4; q += (int64_t)gridDim.x * blockDim.x) {
            float4 E = reinterpret_cast<float4 *>(e)[q];
            const float4 P = reinterpret_cast<const float4 *>(p)[q];
            E.x = __fadd_rn(__fmul_rn(d, E.x), __fmul_rn(omd, P.x));
            E.y = __fadd_rn(__fmul_rn(d, E.y), __fmul_rn(omd, P.y));
            E.z = __fadd_rn(__fmul_rn(d, E.z), __fmul_rn(omd, P.z));
            E.w = __fadd_rn(__fmul_rn(d, E.w), __fmul_rn(omd, P.w));
            reinterpret_cast<float4 *>(e)[q] = E;
        }
        done = n4 << 2;
    }
    for (int64_t i = done + (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        e[i] = __fadd_rn(__fmul_rn(d, e[i]), __fmul_rn(omd, p[i]));
}

void mfcu_ema(mf_backend *be, int64_t n, float *e, const float *p, float d) {
    if (n <= 0 || mfcu_enter(be)) return;
    const int vec = al16(e) && al16(p);
    ema_k<<<mfcu_blocks(vec ? (n + 3) / 4 : n, THREADS), THREADS, 0, mfcu_stream(be)>>>(n, e, p, d,
                                                                                       (float)(1.0 - (double)d), vec);
    MFCU_LAUNCHED(be, "ema");
}
