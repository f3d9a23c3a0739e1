/* cuda_dense.cu - the CUDA backend's dense work: row-major GEMM through cuBLAS, and the three 2-D
 * convolutions through cuDNN's convolution API with the layout, filter and bf16 conversions they need,
 * a deterministic bias gradient, and a per-shape cache of descriptors and (deterministic) algorithms.
 *
 * cuDNN 9 marks the legacy convolution API deprecated, but its CUDNN_DEPRECATED expands to nothing unless
 * CUDNN_WARN_DEPRECATED is defined (cudnn_graph.h), so it builds without warnings and nothing is silenced.
 * None of the calls used here was removed in cuDNN 9 (no cudnnGetConvolution*Algorithm without _v7). */
#include <cuda_bf16.h>
#include <stdlib.h>
#include <string.h>

#define MFCU_LIBS 1 /* the cuBLAS / cuDNN part of cuda_internal.h */
#include "cuda_internal.h"
#include "mf_log.h"

/* cuDNN workspaces above this are not used (an algorithm needing more is skipped). */
#define DENSE_WS_CAP ((size_t)256 << 20)
#define DENSE_ALIGN 256

typedef __nv_bfloat16 bf16;

/* ---- conversion kernels ---------------------------------------------------------------------------- */

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(bf16 v) { return __bfloat162float(v); }
template <typename D> __device__ __forceinline__ D from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float v) { return __float2bfloat16_rn(v); }

/* dst (n, c, hw) in layout dn (0 NCHW, 1 NHWC) = src (n, c, hw) in layout sn, converted to D, plus
 * bias[c] (bias may be NULL), added to dst when acc (D float only). The index is dst's, so writes are
 * coalesced. Filters (co, ci, k, k) go through it as n = co, c = ci, hw = k*k: KCRS is "NCHW", KRSC "NHWC". */
template <typename S, typename D>
__global__ void k_relayout(int64_t total, int c, int64_t hw, const S *src, int sn, D *dst, int dn,
                           const float *bias, int acc) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < total; j += step) {
        int64_t si = j;
        int k = 0;
        if (sn != dn && dn) { /* j = (i*hw + p)*c + k  <-  (i*c + k)*hw + p */
            const int64_t ip = j / c;
            k = (int)(j - ip * c);
            const int64_t i = ip / hw, p = ip - i * hw;
            si = (i * c + k) * hw + p;
        } else if (sn != dn) { /* j = (i*c + k)*hw + p  <-  (i*hw + p)*c + k */
            const int64_t ik = j / hw, p = j - ik * hw, i = ik / c;
            k = (int)(ik - i * c);
            si = (i * hw + p) * c + k;
        } else if (bias) {
            k = dn ? (int)(j % c) : (int)((j / hw) % c);
        }
        float v = to_f(src[si]);
        if (bias) v += bias[k];
        if (acc) v += to_f(dst[j]);
        dst[j] = from_f<D>(v);
    }
}

template <typename S, typename D>
static void relayout(mf_backend *be, int64_t n, int c, int64_t hw, const S *src, int sn, D *dst, int dn,
                     const float *bias, int acc) {
    const int64_t total = n * c * hw;
    if (total <= 0 || mfcu_failed(be)) return;
    k_relayout<S, D><<<mfcu_blocks(total, 256), 256, 0, mfcu_stream(be)>>>(total, c, hw, src, sn, dst, dn, bias,
                                                                           acc);
    MFCU_LAUNCHED(be, "k_relayout");
}

__global__ void k_scale(int64_t n, float beta, float *c) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < n; j += step) c[j] *= beta;
}

/* ---- bias gradient -------------------------------------------------------------------------------------
 * dbias[o] += sum over the n*hw rows of dy(o, .), in double, in a fixed order: the rows are cut into
 * `groups` fixed chunks (blockIdx.y), each summed by a block into part[g][o]; k_dbias_sum adds the parts
 * in order. NHWC: a warp reads 32 adjacent channels of a row (32 channels x 8 row lanes per block); NCHW:
 * a warp reads 32 adjacent pixels of a channel (8 channels x 32 lanes). */
__global__ void k_dbias_part(int64_t rows, int co, int64_t hw, int nhwc, int64_t chunk, const float *dy,
                             double *part) {
    __shared__ double sh[256];
    const int t = threadIdx.x;
    const int cl = nhwc ? t % 32 : t / 32, lane = nhwc ? t / 32 : t % 32, nl = nhwc ? 8 : 32;
    const int o = blockIdx.x * (nhwc ? 32 : 8) + cl;
    const int64_t r0 = (int64_t)blockIdx.y * chunk, r1 = r0 + chunk < rows ? r0 + chunk : rows;
    double acc = 0.0;
    if (o < co)
        for (int64_t r = r0 + lane; r < r1; r += nl) {
            const int64_t i = nhwc ? 0 : r / hw;
            acc += dy[nhwc ? r * co + o : (i * co + o) * hw + (r - i * hw)];
        }
    sh[t] = acc;
    __syncthreads();
    if (lane == 0 && o < co) {
        double s = 0.0;
        for (int q = 0; q < nl; q++) s += sh[nhwc ? q * 32 + cl : cl * 32 + q];
        part[(int64_t)blockIdx.y * co + o] = s;
    }
}

__global__ void k_dbias_sum(int co, int groups, const double *part, float *dbias) {
    const int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= co) return;
    double s = 0.0;
    for (int g = 0; g < groups; g++) s += part[(int64_t)g * co + o];
    dbias[o] += (float)s;
}

static int dbias_groups(int64_t rows) {
    int64_t g = (rows + 4095) / 4096;
    return (int)(g < 1 ? 1 : g > 128 ? 128 : g);
}

static void dbias_run(mf_backend *be, int n, int co, int64_t hw, int nhwc, const float *dy, float *dbias,
                      double *part) {
    const int64_t rows = (int64_t)n * hw;
    const int groups = dbias_groups(rows);
    const int64_t chunk = (rows + groups - 1) / groups;
    const dim3 grid((unsigned)((co + (nhwc ? 31 : 7)) / (nhwc ? 32 : 8)), (unsigned)groups);
    k_dbias_part<<<grid, 256, 0, mfcu_stream(be)>>>(rows, co, hw, nhwc, chunk, dy, part);
    if (MFCU_LAUNCHED(be, "k_dbias_part")) return;
    k_dbias_sum<<<(co + 127) / 128, 128, 0, mfcu_stream(be)>>>(co, groups, part, dbias);
    MFCU_LAUNCHED(be, "k_dbias_sum");
}

/* ---- scratch carving: one dense-slot buffer per call, cut into 256-byte aligned pieces ------------------ */

struct carve {
    size_t off = 0;
    size_t at[6] = {};
    int n = 0;
    int add(size_t bytes) { /* returns the piece's index; 0 bytes gives an empty piece */
        at[n] = off;
        off += (bytes + DENSE_ALIGN - 1) / DENSE_ALIGN * DENSE_ALIGN;
        return n++;
    }
};

/* The buffer, or NULL (error recorded); `base` NULL and true when nothing is needed. */
static int carve_get(mf_backend *be, const carve &cv, char **base) {
    *base = NULL;
    if (cv.off == 0) return 0;
    *base = (char *)mfcu_scratch_at(be, MFCU_SLOT_DENSE, cv.off);
    return *base ? 0 : 1;
}

/* ---- GEMM -------------------------------------------------------------------------------------------------
 * Row-major C (m, n) = alpha op(A) op(B) + beta C is the column-major C^T (n, m) = op(B)^T op(A)^T: B and A
 * seen column-major are op(B)^T and op(A)^T when not transposed (ld = their row length). */

void mfcu_gemm(mf_backend *be, int ta, int tb, int m, int n, int k, float alpha, const float *a, const float *b,
               float beta, float *c) {
    if (m <= 0 || n <= 0 || mfcu_enter(be)) return;
    cudaStream_t st = mfcu_stream(be);
    const int64_t mn = (int64_t)m * n;
    if (k <= 0) { /* C = beta C, as the CPU backend (BLAS libraries disagree on this corner) */
        if (beta == 0.0f) {
            MFCU_CHECK(be, cudaMemsetAsync(c, 0, sizeof(float) * (size_t)mn, st));
        } else if (beta != 1.0f) {
            k_scale<<<mfcu_blocks(mn, 256), 256, 0, st>>>(mn, beta, c);
            MFCU_LAUNCHED(be, "k_scale");
        }
        return;
    }
    const int lda = ta ? m : k, ldb = tb ? k : n;
    const cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasHandle_t h = mfcu_cublas(be);
    if (mfcu_precision(be) != MF_PREC_BF16) { /* fp32 / tf32: the handle's math mode (set at open) */
        MFCU_CUBLAS(be, cublasSgemm(h, opb, opa, n, m, k, &alpha, b, ldb, a, lda, &beta, c, n));
        return;
    }
    const int64_t na = (int64_t)m * k, nb = (int64_t)k * n;
    carve cv;
    const int pa = cv.add(sizeof(bf16) * (size_t)na), pb = cv.add(sizeof(bf16) * (size_t)nb);
    char *base;
    if (carve_get(be, cv, &base)) return;
    bf16 *a16 = (bf16 *)(base + cv.at[pa]), *b16 = (bf16 *)(base + cv.at[pb]);
    relayout<float, bf16>(be, 1, 1, na, a, 0, a16, 0, NULL, 0);
    relayout<float, bf16>(be, 1, 1, nb, b, 0, b16, 0, NULL, 0);
    if (mfcu_failed(be)) return;
    MFCU_CUBLAS(be, cublasGemmEx(h, opb, opa, n, m, k, &alpha, b16, CUDA_R_16BF, ldb, a16, CUDA_R_16BF, lda, &beta,
                                 c, CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

/* ---- convolution layouts ---------------------------------------------------------------------------------
 * Each operand's bytes are NCHW (blk <= 1), NHWC (blk == c), or both (c == 1 or hw == 1). The convolution
 * runs in one layout L for x, y and the filter (cuDNN's fast algorithms want the filter in the tensors'
 * format): NHWC when either side is NHWC only, else NCHW. An operand whose bytes are not valid in L goes
 * through a temporary converted to (or from) L; the filter is transposed to KRSC for L = NHWC. */

enum { LAY_NCHW = 0, LAY_NHWC = 1, LAY_BOTH = 2 };

struct conv_lay {
    int nhwc;   /* L */
    int lx, ly; /* the operands' own layouts, as 0/1 flags for k_relayout (LAY_BOTH resolved to L) */
    int cx, cy; /* x (dx), y (dy) need a layout temporary */
};

/* The layout of a tensor with c channels and hw pixels given as blk; -1 if unsupported. */
static int lay_of(int blk, int c, int64_t hw) {
    if (c == 1 || hw == 1) return LAY_BOTH;
    if (blk <= 1) return LAY_NCHW;
    if (blk == c) return LAY_NHWC;
    return -1; /* nChw16c with c != 16: never given to this backend */
}

static int conv_check(mf_backend *be, const mf_conv_shape *s, conv_lay *L) {
    const int ok = s->n > 0 && s->ci > 0 && s->h > 0 && s->w > 0 && s->co > 0 && s->k > 0 && s->stride > 0 &&
                   s->pad >= 0 && s->ho == (s->h + 2 * s->pad - s->k) / s->stride + 1 && s->ho > 0 &&
                   s->wo == (s->w + 2 * s->pad - s->k) / s->stride + 1 && s->wo > 0;
    const int64_t nx = (int64_t)s->n * s->ci * s->h * s->w, ny = (int64_t)s->n * s->co * s->ho * s->wo;
    const int xl = lay_of(s->bx, s->ci, (int64_t)s->h * s->w), yl = lay_of(s->by, s->co, (int64_t)s->ho * s->wo);
    char m[160];
    if (!ok || nx >= ((int64_t)1 << 31) || ny >= ((int64_t)1 << 31) || xl < 0 || yl < 0) {
        snprintf(m, sizeof m, "bad or unsupported shape n%d ci%d %dx%d co%d k%d s%d p%d -> %dx%d, blk %d/%d", s->n,
                 s->ci, s->h, s->w, s->co, s->k, s->stride, s->pad, s->ho, s->wo, s->bx, s->by);
        mfcu_record_error(be, __FILE__, __LINE__, "conv2d", m);
        return 1;
    }
    L->nhwc = xl == LAY_NHWC || yl == LAY_NHWC;
    L->lx = xl == LAY_BOTH ? L->nhwc : xl;
    L->ly = yl == LAY_BOTH ? L->nhwc : yl;
    L->cx = L->lx != L->nhwc;
    L->cy = L->ly != L->nhwc;
    return 0;
}

/* ---- the algorithm cache ------------------------------------------------------------------------------------
 * One entry per (direction, shape, wanted layout L), made on first use: descriptors, and the first algorithm
 * of cuDNN's heuristic ranking (cudnnGet*_v7: no timing, so the choice, and the results, are the same in
 * every run) that is deterministic, fits DENSE_WS_CAP, whose workspace query succeeds and, for fp32, runs FMA
 * math (no TF32). Where the precision has no such algorithm in L it tries NCHW, then fp32 (with a warning),
 * so an entry records the layout and type it runs in. */

enum { DIR_FWD, DIR_BWD_DATA, DIR_BWD_FILTER };

struct conv_algo {
    int dir, n, ci, h, w, co, k, stride, pad, nhwc; /* the key (nhwc: the layout asked for) */
    int run_nhwc;           /* the layout it runs in */
    int bf;                 /* runs in bf16 (else fp32 data, tf32 or fp32 math) */
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    int algo;
    size_t ws;
};

struct mfcu_dense {
    conv_algo *e;
    int n, cap;
};

static mfcu_dense *dense(mf_backend *be) {
    void **slot = mfcu_dense_slot(be);
    if (!*slot) *slot = calloc(1, sizeof(mfcu_dense));
    return (mfcu_dense *)*slot;
}

static void algo_destroy(conv_algo *a) {
    if (a->xd) (void)cudnnDestroyTensorDescriptor(a->xd);
    if (a->yd) (void)cudnnDestroyTensorDescriptor(a->yd);
    if (a->wd) (void)cudnnDestroyFilterDescriptor(a->wd);
    if (a->cd) (void)cudnnDestroyConvolutionDescriptor(a->cd);
    a->xd = a->yd = NULL;
    a->wd = NULL;
    a->cd = NULL;
}

void mfcu_dense_free(mf_backend *be) {
    void **slot = mfcu_dense_slot(be);
    mfcu_dense *d = (mfcu_dense *)*slot;
    if (!d) return;
    for (int i = 0; i < d->n; i++) algo_destroy(&d->e[i]);
    free(d->e);
    free(d);
    *slot = NULL;
}

static int same_key(const conv_algo *a, const conv_algo *b) {
    return a->dir == b->dir && a->n == b->n && a->ci == b->ci && a->h == b->h && a->w == b->w && a->co == b->co &&
           a->k == b->k && a->stride == b->stride && a->pad == b->pad && a->nhwc == b->nhwc;
}

/* cuDNN 9 reports "this configuration is not supported" with a family of codes (CUDNN_STATUS_NOT_SUPPORTED_*,
 * 3000..3999), and the legacy queries some unsupported algorithm / layout combinations as BAD_PARAM_*. */
static int dnn_unsupported(cudnnStatus_t st) { return (st >= 3000 && st < 4000) || (st >= 2000 && st < 3000); }

/* Descriptors for a->bf's data type, layout a->run_nhwc and the math type `math`. */
static int algo_descs(mf_backend *be, conv_algo *a, cudnnMathType_t math) {
    const cudnnDataType_t dt = a->bf ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    const cudnnTensorFormat_t f = a->run_nhwc ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
    const int ho = (a->h + 2 * a->pad - a->k) / a->stride + 1, wo = (a->w + 2 * a->pad - a->k) / a->stride + 1;
    /* dims in NCHW order whatever the format (cuDNN derives the strides from the format); the filter in
     * format NHWC is KRSC */
    return MFCU_CUDNN(be, cudnnCreateTensorDescriptor(&a->xd)) || MFCU_CUDNN(be, cudnnCreateTensorDescriptor(&a->yd)) ||
           MFCU_CUDNN(be, cudnnCreateFilterDescriptor(&a->wd)) ||
           MFCU_CUDNN(be, cudnnCreateConvolutionDescriptor(&a->cd)) ||
           MFCU_CUDNN(be, cudnnSetTensor4dDescriptor(a->xd, f, dt, a->n, a->ci, a->h, a->w)) ||
           MFCU_CUDNN(be, cudnnSetTensor4dDescriptor(a->yd, f, dt, a->n, a->co, ho, wo)) ||
           MFCU_CUDNN(be, cudnnSetFilter4dDescriptor(a->wd, dt, f, a->co, a->ci, a->k, a->k)) ||
           /* float compute for bf16 data too (cuDNN's PSEUDO_BFLOAT16 configuration) */
           MFCU_CUDNN(be, cudnnSetConvolution2dDescriptor(a->cd, a->pad, a->pad, a->stride, a->stride, 1, 1,
                                                          CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT)) ||
           MFCU_CUDNN(be, cudnnSetConvolutionMathType(a->cd, math));
}

/* A candidate of the heuristics' list is usable: never a conversion to fp16 (ALLOW_CONVERSION), and for fp32
 * FMA math only. */
static int usable(cudnnStatus_t st, cudnnDeterminism_t det, size_t mem, cudnnMathType_t mt, int fp32) {
    return st == CUDNN_STATUS_SUCCESS && det == CUDNN_DETERMINISTIC && mem <= DENSE_WS_CAP &&
           mt != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION && (!fp32 || mt == CUDNN_FMA_MATH || mt == CUDNN_DEFAULT_MATH);
}

struct algo_cand {
    int algo;
    cudnnMathType_t mt;
};
enum { MAX_CANDS = 16 };

/* The heuristics' usable candidates for a->dir, in their order, then the algorithm that is always
 * deterministic (with the descriptor's math type `math`); 0, -1 (error recorded). */
static int algo_cands(mf_backend *be, conv_algo *a, int fp32, cudnnMathType_t math, algo_cand *c, int *nc) {
    cudnnHandle_t h = mfcu_cudnn(be);
    int got = 0;
    cudnnStatus_t st;
    *nc = 0;
#define ADD_CAND(al, m)                                                                                     \
    do {                                                                                                    \
        int dup_ = 0;                                                                                       \
        for (int q_ = 0; q_ < *nc; q_++) dup_ |= c[q_].algo == (int)(al) && c[q_].mt == (m);                \
        if (!dup_ && *nc < MAX_CANDS) c[(*nc)++] = algo_cand{(int)(al), (m)};                               \
    } while (0)
    if (a->dir == DIR_FWD) {
        cudnnConvolutionFwdAlgoPerf_t p[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        st = cudnnGetConvolutionForwardAlgorithm_v7(h, a->xd, a->wd, a->cd, a->yd, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                                    &got, p);
        if (st == CUDNN_STATUS_SUCCESS)
            for (int i = 0; i < got; i++)
                if (usable(p[i].status, p[i].determinism, p[i].memory, p[i].mathType, fp32))
                    ADD_CAND(p[i].algo, p[i].mathType);
        if (st == CUDNN_STATUS_SUCCESS || dnn_unsupported(st)) ADD_CAND(CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, math);
    } else if (a->dir == DIR_BWD_DATA) {
        cudnnConvolutionBwdDataAlgoPerf_t p[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        st = cudnnGetConvolutionBackwardDataAlgorithm_v7(h, a->wd, a->yd, a->cd, a->xd,
                                                         CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, p);
        if (st == CUDNN_STATUS_SUCCESS)
            for (int i = 0; i < got; i++) {
                /* FFT data gradients of strided convolutions were wrong in some cuDNN releases (PyTorch skips
                 * them) */
                const int fft = p[i].algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT ||
                                p[i].algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING;
                if (!(fft && a->stride > 1) && usable(p[i].status, p[i].determinism, p[i].memory, p[i].mathType, fp32))
                    ADD_CAND(p[i].algo, p[i].mathType);
            }
        if (st == CUDNN_STATUS_SUCCESS || dnn_unsupported(st)) ADD_CAND(CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, math);
    } else {
        cudnnConvolutionBwdFilterAlgoPerf_t p[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
        st = cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, a->xd, a->yd, a->cd, a->wd,
                                                           CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, p);
        if (st == CUDNN_STATUS_SUCCESS)
            for (int i = 0; i < got; i++)
                if (usable(p[i].status, p[i].determinism, p[i].memory, p[i].mathType, fp32))
                    ADD_CAND(p[i].algo, p[i].mathType);
        if (st == CUDNN_STATUS_SUCCESS || dnn_unsupported(st)) ADD_CAND(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, math);
    }
#undef ADD_CAND
    if (st != CUDNN_STATUS_SUCCESS && !dnn_unsupported(st))
        return MFCU_CUDNN(be, st) ? -1 : 0; /* a real failure of the heuristics' query */
    return 0;
}

/* The workspace of a->algo as the descriptors stand; 0, 1 (not supported), -1 (error). */
static int algo_ws(mf_backend *be, conv_algo *a) {
    cudnnHandle_t h = mfcu_cudnn(be);
    cudnnStatus_t st;
    if (a->dir == DIR_FWD)
        st = cudnnGetConvolutionForwardWorkspaceSize(h, a->xd, a->wd, a->cd, a->yd, (cudnnConvolutionFwdAlgo_t)a->algo,
                                                     &a->ws);
    else if (a->dir == DIR_BWD_DATA)
        st = cudnnGetConvolutionBackwardDataWorkspaceSize(h, a->wd, a->yd, a->cd, a->xd,
                                                          (cudnnConvolutionBwdDataAlgo_t)a->algo, &a->ws);
    else
        st = cudnnGetConvolutionBackwardFilterWorkspaceSize(h, a->xd, a->yd, a->cd, a->wd,
                                                            (cudnnConvolutionBwdFilterAlgo_t)a->algo, &a->ws);
    if (dnn_unsupported(st)) return 1;
    return MFCU_CUDNN(be, st) ? -1 : (a->ws > DENSE_WS_CAP ? 1 : 0);
}

/* Fill a (key set) for precision prec in layout run_nhwc: 0, 1 (no algorithm), -1 (error recorded). */
static int algo_make(mf_backend *be, conv_algo *a, int prec, int run_nhwc) {
    a->bf = prec == MF_PREC_BF16;
    a->run_nhwc = run_nhwc;
    const int fp32 = prec == MF_PREC_FP32;
    /* fp32: FMA only (TF32 off). tf32: DEFAULT (cuDNN then may use TF32 on sm_80+; ALLOW_CONVERSION could
     * also down-convert fp32 data to fp16). bf16: tensor cores on bf16 data. */
    const cudnnMathType_t math = fp32 ? CUDNN_FMA_MATH : prec == MF_PREC_TF32 ? CUDNN_DEFAULT_MATH : CUDNN_TENSOR_OP_MATH;
    if (algo_descs(be, a, math)) return -1;
    algo_cand c[MAX_CANDS];
    int nc = 0;
    if (algo_cands(be, a, fp32, math, c, &nc)) return -1;
    for (int i = 0; i < nc; i++) {
        a->algo = c[i].algo;
        /* run with the algorithm's own math type (what the heuristics ranked), except: never TF32 in fp32 */
        if (MFCU_CUDNN(be, cudnnSetConvolutionMathType(a->cd, fp32 ? CUDNN_FMA_MATH : c[i].mt))) return -1;
        const int r = algo_ws(be, a);
        if (r <= 0) return r;
    }
    return 1;
}

static const char *dir_name(int dir) {
    return dir == DIR_FWD ? "forward" : dir == DIR_BWD_DATA ? "backward data" : "backward filter";
}

static conv_algo *get_algo(mf_backend *be, int dir, const mf_conv_shape *s, int nhwc) {
    mfcu_dense *d = dense(be);
    if (!d) {
        mfcu_record_error(be, __FILE__, __LINE__, "calloc", "out of host memory");
        return NULL;
    }
    conv_algo a;
    memset(&a, 0, sizeof a);
    a.dir = dir, a.n = s->n, a.ci = s->ci, a.h = s->h, a.w = s->w, a.co = s->co, a.k = s->k;
    a.stride = s->stride, a.pad = s->pad, a.nhwc = nhwc;
    for (int i = 0; i < d->n; i++)
        if (same_key(&d->e[i], &a)) return &d->e[i];
    /* the precision asked for in L, then in NCHW, then fp32 in L, then fp32 in NCHW */
    const int prec = mfcu_precision(be);
    const int tries[4][2] = {{prec, nhwc}, {prec, 0}, {MF_PREC_FP32, nhwc}, {MF_PREC_FP32, 0}};
    int r = 1, t = 0;
    for (; t < 4 && r == 1; t++) {
        if ((t == 1 || t == 3) && !nhwc) continue;      /* NCHW was L */
        if (t >= 2 && prec == MF_PREC_FP32) break;     /* fp32 was asked for */
        algo_destroy(&a);
        r = algo_make(be, &a, tries[t][0], tries[t][1]);
    }
    if (r == 0 && (a.run_nhwc != nhwc || tries[t - 1][0] != prec)) /* t - 1: the try that succeeded */
        mf_warn("cuda: no deterministic %s %s algorithm for conv n%d %d->%d %dx%d k%d s%d in %s: this one runs %s %s",
                mf_precision_name(prec), dir_name(dir), s->n, s->ci, s->co, s->h, s->w, s->k, s->stride,
                nhwc ? "NHWC" : "NCHW", mf_precision_name(tries[t - 1][0]), a.run_nhwc ? "NHWC" : "NCHW");
    if (r != 0) {
        if (r == 1) {
            char m[160];
            snprintf(m, sizeof m, "no deterministic cuDNN %s algorithm for n%d %d->%d %dx%d k%d s%d p%d (%s)",
                     dir_name(dir), s->n, s->ci, s->co, s->h, s->w, s->k, s->stride, s->pad, nhwc ? "NHWC" : "NCHW");
            mfcu_record_error(be, __FILE__, __LINE__, "conv2d", m);
        }
        algo_destroy(&a);
        return NULL;
    }
    if (d->n == d->cap) {
        const int cap = d->cap ? 2 * d->cap : 32;
        conv_algo *e = (conv_algo *)realloc(d->e, sizeof *e * (size_t)cap);
        if (!e) {
            algo_destroy(&a);
            mfcu_record_error(be, __FILE__, __LINE__, "realloc", "out of host memory");
            return NULL;
        }
        d->e = e, d->cap = cap;
    }
    mf_debug("cuda: conv %s n%d %d->%d %dx%d k%d s%d %s %s: algorithm %d, workspace %zu", dir_name(dir), s->n, s->ci,
             s->co, s->h, s->w, s->k, s->stride, a.run_nhwc ? "NHWC" : "NCHW", a.bf ? "bf16" : "fp32", a.algo, a.ws);
    d->e[d->n] = a;
    return &d->e[d->n++];
}

/* ---- the convolutions ---------------------------------------------------------------------------------------
 * Each call: find the algorithm, carve the temporaries it needs from the dense scratch slot (inputs in L /
 * bf16, the filter in L / bf16, the output temporary, the workspace), convert, run cuDNN, convert back. */

struct conv_run {
    const mf_conv_shape *s;
    conv_lay L;
    conv_algo *a;
    int64_t nx, ny, nw;
    size_t es; /* bytes of an element of the convolution's data type */
    int wt;    /* the filter needs a temporary: bf16, or KRSC (NHWC) where that differs from KCRS */
};

static int conv_begin(mf_backend *be, int dir, const mf_conv_shape *s, conv_run *r) {
    if (mfcu_enter(be) || conv_check(be, s, &r->L)) return 1;
    r->s = s;
    r->a = get_algo(be, dir, s, r->L.nhwc);
    if (!r->a) return 1;
    if (r->a->run_nhwc != r->L.nhwc) { /* runs in NCHW: the NHWC operands go through temporaries */
        r->L.nhwc = r->a->run_nhwc;
        r->L.cx = r->L.lx != r->L.nhwc;
        r->L.cy = r->L.ly != r->L.nhwc;
    }
    r->nx = (int64_t)s->n * s->ci * s->h * s->w;
    r->ny = (int64_t)s->n * s->co * s->ho * s->wo;
    r->nw = (int64_t)s->co * s->ci * s->k * s->k;
    r->es = r->a->bf ? sizeof(bf16) : sizeof(float);
    /* KRSC and KCRS are the same bytes for a 1x1 filter or one input channel */
    r->wt = r->a->bf || (r->L.nhwc && s->k > 1 && s->ci > 1);
    return 0;
}

/* src (fp32, layout sl) into the convolution's type and layout L at dst (a temporary) */
static void conv_in(mf_backend *be, const conv_run *r, int64_t n, int c, int64_t hw, const float *src, int sl,
                    void *dst) {
    if (r->a->bf) relayout<float, bf16>(be, n, c, hw, src, sl, (bf16 *)dst, r->L.nhwc, NULL, 0);
    else relayout<float, float>(be, n, c, hw, src, sl, (float *)dst, r->L.nhwc, NULL, 0);
}

/* a temporary in the convolution's type and layout L to dst (fp32, layout dl), plus bias, (+)= */
static void conv_out(mf_backend *be, const conv_run *r, int64_t n, int c, int64_t hw, const void *src, float *dst,
                     int dl, const float *bias, int acc) {
    if (r->a->bf) relayout<bf16, float>(be, n, c, hw, (const bf16 *)src, r->L.nhwc, dst, dl, bias, acc);
    else relayout<float, float>(be, n, c, hw, (const float *)src, r->L.nhwc, dst, dl, bias, acc);
}

static const float k_one = 1.0f, k_zero = 0.0f; /* cuDNN's alpha/beta: float for float and bf16 data */

void mfcu_conv2d(mf_backend *be, const mf_conv_shape *s, const float *x, const float *w, const float *bias,
                 float *y) {
    conv_run r;
    if (conv_begin(be, DIR_FWD, s, &r)) return;
    const int bf = r.a->bf, nx_t = bf || r.L.cx, w_t = r.wt, y_t = bf || r.L.cy;
    const int64_t hwx = (int64_t)s->h * s->w, hwy = (int64_t)s->ho * s->wo, kk = (int64_t)s->k * s->k;
    carve cv;
    const int px = cv.add(nx_t ? r.es * (size_t)r.nx : 0), pw = cv.add(w_t ? r.es * (size_t)r.nw : 0);
    const int py = cv.add(y_t ? r.es * (size_t)r.ny : 0), pws = cv.add(r.a->ws);
    char *base;
    if (carve_get(be, cv, &base)) return;
    void *xt = nx_t ? base + cv.at[px] : NULL, *wt = w_t ? base + cv.at[pw] : NULL;
    void *out = y_t ? (void *)(base + cv.at[py]) : (void *)y;
    if (nx_t) conv_in(be, &r, s->n, s->ci, hwx, x, r.L.lx, xt);
    if (w_t) conv_in(be, &r, s->co, s->ci, kk, w, 0, wt);
    const void *xin = nx_t ? (const void *)xt : x, *win = w_t ? (const void *)wt : w;
    if (mfcu_failed(be)) return;
    if (MFCU_CUDNN(be, cudnnConvolutionForward(mfcu_cudnn(be), &k_one, r.a->xd, xin, r.a->wd, win, r.a->cd,
                                               (cudnnConvolutionFwdAlgo_t)r.a->algo, r.a->ws ? base + cv.at[pws] : NULL,
                                               r.a->ws, &k_zero, r.a->yd, out)))
        return;
    if (y_t) conv_out(be, &r, s->n, s->co, hwy, out, y, r.L.ly, bias, 0);
    else if (bias) relayout<float, float>(be, s->n, s->co, hwy, y, r.L.nhwc, y, r.L.nhwc, bias, 0); /* in place */
}

void mfcu_conv2d_bwd_data(mf_backend *be, const mf_conv_shape *s, const float *dy, const float *w, float *dx,
                          int acc) {
    conv_run r;
    if (conv_begin(be, DIR_BWD_DATA, s, &r)) return;
    const int bf = r.a->bf, dy_t = bf || r.L.cy, w_t = r.wt, dx_t = bf || r.L.cx;
    const int64_t hwx = (int64_t)s->h * s->w, hwy = (int64_t)s->ho * s->wo, kk = (int64_t)s->k * s->k;
    carve cv;
    const int py = cv.add(dy_t ? r.es * (size_t)r.ny : 0), pw = cv.add(w_t ? r.es * (size_t)r.nw : 0);
    const int px = cv.add(dx_t ? r.es * (size_t)r.nx : 0), pws = cv.add(r.a->ws);
    char *base;
    if (carve_get(be, cv, &base)) return;
    void *dyt = dy_t ? base + cv.at[py] : NULL, *wt = w_t ? base + cv.at[pw] : NULL;
    void *out = dx_t ? (void *)(base + cv.at[px]) : (void *)dx;
    if (dy_t) conv_in(be, &r, s->n, s->co, hwy, dy, r.L.ly, dyt);
    if (w_t) conv_in(be, &r, s->co, s->ci, kk, w, 0, wt);
    const void *dyin = dy_t ? (const void *)dyt : dy, *win = w_t ? (const void *)wt : w;
    if (mfcu_failed(be)) return;
    /* straight into dx: beta 1 accumulates; into a temporary: beta 0, accumulated by the conversion */
    const float *beta = !dx_t && acc ? &k_one : &k_zero;
    if (MFCU_CUDNN(be, cudnnConvolutionBackwardData(mfcu_cudnn(be), &k_one, r.a->wd, win, r.a->yd, dyin, r.a->cd,
                                                    (cudnnConvolutionBwdDataAlgo_t)r.a->algo,
                                                    r.a->ws ? base + cv.at[pws] : NULL, r.a->ws, beta, r.a->xd, out)))
        return;
    if (dx_t) conv_out(be, &r, s->n, s->ci, hwx, out, dx, r.L.lx, NULL, acc);
}

void mfcu_conv2d_bwd_filter(mf_backend *be, const mf_conv_shape *s, const float *x, const float *dy, float *dw,
                            float *dbias) {
    conv_run r;
    if (conv_begin(be, DIR_BWD_FILTER, s, &r)) return;
    const int bf = r.a->bf, x_t = bf || r.L.cx, dy_t = bf || r.L.cy, dw_t = r.wt;
    const int64_t hwx = (int64_t)s->h * s->w, hwy = (int64_t)s->ho * s->wo, kk = (int64_t)s->k * s->k;
    carve cv;
    const int px = cv.add(x_t ? r.es * (size_t)r.nx : 0), py = cv.add(dy_t ? r.es * (size_t)r.ny : 0);
    const int pw = cv.add(dw_t ? r.es * (size_t)r.nw : 0), pws = cv.add(r.a->ws);
    const int pb = cv.add(dbias ? sizeof(double) * (size_t)dbias_groups((int64_t)s->n * hwy) * (size_t)s->co : 0);
    char *base;
    if (carve_get(be, cv, &base)) return;
    void *xt = x_t ? base + cv.at[px] : NULL, *dyt = dy_t ? base + cv.at[py] : NULL;
    void *out = dw_t ? (void *)(base + cv.at[pw]) : (void *)dw;
    if (x_t) conv_in(be, &r, s->n, s->ci, hwx, x, r.L.lx, xt);
    if (dy_t) conv_in(be, &r, s->n, s->co, hwy, dy, r.L.ly, dyt);
    const void *xin = x_t ? (const void *)xt : x, *dyin = dy_t ? (const void *)dyt : dy;
    if (mfcu_failed(be)) return;
    /* dw += ...: beta 1 straight into dw (KCRS, fp32); else beta 0 into KRSC / bf16, added by the conversion */
    if (MFCU_CUDNN(be, cudnnConvolutionBackwardFilter(mfcu_cudnn(be), &k_one, r.a->xd, xin, r.a->yd, dyin, r.a->cd,
                                                      (cudnnConvolutionBwdFilterAlgo_t)r.a->algo,
                                                      r.a->ws ? base + cv.at[pws] : NULL, r.a->ws,
                                                      dw_t ? &k_zero : &k_one, r.a->wd, out)))
        return;
    if (dw_t) conv_out(be, &r, s->co, s->ci, kk, out, dw, 0, NULL, 1);
    if (dbias) dbias_run(be, s->n, s->co, hwy, r.L.ly, dy, dbias, (double *)(base + cv.at[pb]));
}
