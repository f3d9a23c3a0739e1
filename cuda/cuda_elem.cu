/* cuda_elem.cu - the CUDA backend's element-wise kernels (fill, SiLU, linear combinations, per-row and
 * per-channel broadcasts, the MeanFlow weight), the layout kernels (copy_channels, 2x up-sampling) in
 * NCHW, NHWC or any channel block, the embedding gather/scatter and the Fourier time features. Products
 * and sums that the CPU backend rounds one by one use __fmul_rn/__fadd_rn (no FMA contraction), so
 * those kernels give the CPU's bits; nothing here accumulates across threads. */
#include <math.h>

#include "cuda_internal.h"
#include "cuda_kernels.h"

#define THREADS 256

#define GRID_STRIDE(i, n)                                                                              \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

static inline int al16(const void *p) { return ((uintptr_t)p & 15u) == 0; }
/* 32-bit index arithmetic is much cheaper on the GPU: used when every index of the launch fits */
static inline int fits32(int64_t n) { return n > 0 && n < (int64_t)INT32_MAX; }
/* channel block of a layout argument: 1 for NCHW (blk 0 or 1), else blk (blk == c is NHWC) */
static inline int cblk(int blk) { return blk > 1 ? blk : 1; }

static __device__ inline float4 ld4(const float *p, int64_t q) { return reinterpret_cast<const float4 *>(p)[q]; }
static __device__ inline void st4(float *p, int64_t q, float4 v) { reinterpret_cast<float4 *>(p)[q] = v; }

/* ---- maps: o[i] = F(a[i], b[i], o[i]) ----------------------------------------------------------
 * a, b may be NULL (not read); o is read only when read_o. o may alias a or b: each element is read
 * and written by the same thread. */

struct FillF {
    float v;
    __device__ float operator()(float, float, float) const { return v; }
};
struct SiluF {
    __device__ float operator()(float x, float, float) const { return x * (1.0f / (1.0f + expf(-x))); }
};
/* t silu'(x), added to o when acc: s = sigmoid(x), silu' = s (1 + x (1 - s)) */
struct SiluDF {
    int acc;
    __device__ float operator()(float x, float t, float o) const {
        const float s = 1.0f / (1.0f + expf(-x));
        const float d = t * (s * (1.0f + x * (1.0f - s)));
        return acc ? o + d : d;
    }
};
/* alpha a + beta b, or alpha a + beta o (ob: the second operand is the output, axpby), or alpha a */
struct LinF {
    float alpha, beta;
    int mode; /* 0: alpha a; 1: alpha a + beta b; 2: alpha a + beta o */
    __device__ float operator()(float a, float b, float o) const {
        if (mode == 0) return __fmul_rn(alpha, a);
        return __fadd_rn(__fmul_rn(alpha, a), __fmul_rn(beta, mode == 1 ? b : o));
    }
};

template <class F>
static __global__ void map_k(F f, int64_t n, const float *a, const float *b, float *o, int read_o, int vec) {
    int64_t done = 0;
    if (vec) {
        const int64_t n4 = n >> 2;
        GRID_STRIDE(q, n4) {
            const float4 z = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            const float4 va = a ? ld4(a, q) : z, vb = b ? ld4(b, q) : z, vo = read_o ? ld4(o, q) : z;
            st4(o, q, make_float4(f(va.x, vb.x, vo.x), f(va.y, vb.y, vo.y), f(va.z, vb.z, vo.z), f(va.w, vb.w, vo.w)));
        }
        done = n4 << 2;
    }
    for (int64_t i = done + (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        o[i] = f(a ? a[i] : 0.0f, b ? b[i] : 0.0f, read_o ? o[i] : 0.0f);
}

template <class F>
static void map_run(mf_backend *be, const char *name, F f, int64_t n, const float *a, const float *b, float *o,
                    int read_o) {
    if (n <= 0 || mfcu_enter(be)) return;
    const int vec = (!a || al16(a)) && (!b || al16(b)) && al16(o);
    map_k<F><<<mfcu_blocks(vec ? (n + 3) / 4 : n, THREADS), THREADS, 0, mfcu_stream(be)>>>(f, n, a, b, o, read_o, vec);
    MFCU_LAUNCHED(be, name);
}

void mfcu_fill(mf_backend *be, float *dst, float value, int64_t n) {
    map_run(be, "fill", FillF{value}, n, NULL, NULL, dst, 0);
}
void mfcu_silu(mf_backend *be, int64_t n, const float *x, float *y) {
    map_run(be, "silu", SiluF{}, n, x, NULL, y, 0);
}
void mfcu_silu_bwd(mf_backend *be, int64_t n, const float *x, const float *dy, float *dx, int acc) {
    map_run(be, "silu_bwd", SiluDF{acc ? 1 : 0}, n, x, dy, dx, acc ? 1 : 0);
}
void mfcu_silu_jvp(mf_backend *be, int64_t n, const float *x, const float *tx, float *ty) {
    map_run(be, "silu_jvp", SiluDF{0}, n, x, tx, ty, 0);
}
/* b == 0: y = a x, and y (possibly uninitialised) is never read */
void mfcu_axpby(mf_backend *be, int64_t n, float a, const float *x, float b, float *y) {
    map_run(be, "axpby", LinF{a, b, b == 0.0f ? 0 : 2}, n, x, NULL, y, b == 0.0f ? 0 : 1);
}
void mfcu_add2(mf_backend *be, int64_t n, float a, const float *x, float b, const float *y, float *z) {
    map_run(be, "add2", LinF{a, b, 1}, n, x, y, z, 0);
}

/* ---- per-row and per-channel broadcasts ----------------------------------------------------------- */

/* z[i, :] = a[i] x[i, :] (+ b[i] y[i, :]); rows on grid.y (strided), columns on grid.x. z may alias x or
 * y. vec: d % 4 == 0 and all pointers 16-byte aligned (so every row is). */
static __global__ void rows_axpby_k(int n, int64_t d, const float *a, const float *x, const float *b,
                                    const float *y, float *z, int two, int vec) {
    for (int i = blockIdx.y; i < n; i += gridDim.y) {
        const float ai = a[i], bi = two ? b[i] : 0.0f;
        const float *xr = x + (int64_t)i * d, *yr = two ? y + (int64_t)i * d : NULL;
        float *zr = z + (int64_t)i * d;
        if (vec) {
            GRID_STRIDE(q, d >> 2) {
                const float4 vx = ld4(xr, q);
                float4 r;
                if (two) {
                    const float4 vy = ld4(yr, q);
                    r = make_float4(__fadd_rn(__fmul_rn(ai, vx.x), __fmul_rn(bi, vy.x)),
                                    __fadd_rn(__fmul_rn(ai, vx.y), __fmul_rn(bi, vy.y)),
                                    __fadd_rn(__fmul_rn(ai, vx.z), __fmul_rn(bi, vy.z)),
                                    __fadd_rn(__fmul_rn(ai, vx.w), __fmul_rn(bi, vy.w)));
                } else {
                    r = make_float4(__fmul_rn(ai, vx.x), __fmul_rn(ai, vx.y), __fmul_rn(ai, vx.z), __fmul_rn(ai, vx.w));
                }
                st4(zr, q, r);
            }
        } else {
            GRID_STRIDE(j, d) zr[j] = two ? __fadd_rn(__fmul_rn(ai, xr[j]), __fmul_rn(bi, yr[j])) : __fmul_rn(ai, xr[j]);
        }
    }
}

static dim3 rows_grid(int rows, int64_t cols) {
    int64_t gx = (cols + THREADS * 4 - 1) / (THREADS * 4);
    if (gx > 1024) gx = 1024;
    if (gx < 1) gx = 1;
    return dim3((unsigned)gx, (unsigned)(rows < 65535 ? rows : 65535), 1);
}

void mfcu_rows_axpby(mf_backend *be, int n, int64_t d, const float *a, const float *x, const float *b,
                     const float *y, float *z) {
    if (n <= 0 || d <= 0 || mfcu_enter(be)) return;
    const int two = b && y;
    const int vec = d % 4 == 0 && al16(x) && al16(z) && (!two || al16(y));
    rows_axpby_k<<<rows_grid(n, d), THREADS, 0, mfcu_stream(be)>>>(n, d, a, x, b, y, z, two, vec);
    MFCU_LAUNCHED(be, "rows_axpby");
}

/* y[r, :] += bias */
static __global__ void add_bias_rows_k(int rows, int cols, const float *__restrict__ bias, float *__restrict__ y) {
    for (int r = blockIdx.y; r < rows; r += gridDim.y) {
        float *yr = y + (int64_t)r * cols;
        GRID_STRIDE(j, cols) yr[j] += bias[j];
    }
}
void mfcu_add_bias_rows(mf_backend *be, int rows, int cols, const float *bias, float *y) {
    if (rows <= 0 || cols <= 0 || mfcu_enter(be)) return;
    add_bias_rows_k<<<rows_grid(rows, cols), THREADS, 0, mfcu_stream(be)>>>(rows, cols, bias, y);
    MFCU_LAUNCHED(be, "add_bias_rows");
}

/* Element j of an (n, c, hw) activation with channel block B (1: NCHW; mf_backend.h) belongs to the
 * (sample, channel) pair i*c + k = (j / (B hw)) B + j % B. */
template <typename I>
static __device__ inline I pair_of(I j, I B, I bhw) {
    return B == 1 ? j / bhw : (j / bhw) * B + j % B;
}

/* y = x + e[i*c + k]; y may be x. vec (4 consecutive elements share their pair, or B % 4 == 0 and the 4
 * pairs are consecutive): step = 1 when B > 1, else 0. */
template <typename I>
static __global__ void add_channel_k(I total, I B, I bhw, const float *x, const float *e, float *y, int vec) {
    if (vec) {
        const I step = B > 1 ? 1 : 0;
        for (I q = (I)(blockIdx.x * blockDim.x + threadIdx.x); q < total / 4; q += (I)(gridDim.x * blockDim.x)) {
            const I pr = pair_of<I>(q * 4, B, bhw);
            const float4 v = ld4(x, q);
            st4(y, q, make_float4(v.x + e[pr], v.y + e[pr + step], v.z + e[pr + 2 * step], v.w + e[pr + 3 * step]));
        }
        return;
    }
    for (I j = (I)(blockIdx.x * blockDim.x + threadIdx.x); j < total; j += (I)(gridDim.x * blockDim.x))
        y[j] = x[j] + e[pair_of<I>(j, B, bhw)];
}
void mfcu_add_channel(mf_backend *be, int n, int c, int hw, const float *x, const float *e, float *y, int blk) {
    const int64_t total = (int64_t)n * c * hw;
    if (total <= 0 || mfcu_enter(be)) return;
    const int B = cblk(blk);
    const int vec = al16(x) && al16(y) && (B % 4 == 0 || (B == 1 && hw % 4 == 0));
    const unsigned grid = mfcu_blocks(vec ? total / 4 : total, THREADS);
    if (fits32(total))
        add_channel_k<uint32_t><<<grid, THREADS, 0, mfcu_stream(be)>>>((uint32_t)total, (uint32_t)B,
                                                                       (uint32_t)B * (uint32_t)hw, x, e, y, vec);
    else
        add_channel_k<int64_t><<<grid, THREADS, 0, mfcu_stream(be)>>>(total, B, (int64_t)B * hw, x, e, y, vec);
    MFCU_LAUNCHED(be, "add_channel");
}

/* w[i] = scale (e[i] + c)^(-p) in double (p == 0: scale) */
static __global__ void pow_weight_k(int n, const float *__restrict__ e, float c, float p, float scale,
                                    float *__restrict__ w) {
    GRID_STRIDE(i, n) {
        w[i] = p == 0.0f ? scale : (float)((double)scale * pow((double)e[i] + (double)c, -(double)p));
    }
}
void mfcu_pow_weight(mf_backend *be, int n, const float *e, float c, float p, float scale, float *w) {
    if (n <= 0 || mfcu_enter(be)) return;
    pow_weight_k<<<mfcu_blocks(n, THREADS), THREADS, 0, mfcu_stream(be)>>>(n, e, c, p, scale, w);
    MFCU_LAUNCHED(be, "pow_weight");
}

/* ---- layout: copy_channels ----------------------------------------------------------------------- */

/* dst[r*dld + j] (+)= src[r*sld + j] for rows r < rows, j < width; vec: width, sld, dld % 4 == 0 and
 * both pointers 16-byte aligned. */
template <typename I>
static __global__ void copy2d_k(I rows, I width, const float *__restrict__ src, I sld, float *__restrict__ dst,
                                I dld, int acc, int vec) {
    const I v = vec ? 4 : 1, wv = width / v, total = rows * wv;
    for (I t = (I)(blockIdx.x * blockDim.x + threadIdx.x); t < total; t += (I)(gridDim.x * blockDim.x)) {
        const I r = t / wv, j = (t - r * wv) * v;
        const float *s = src + r * sld + j;
        float *d = dst + r * dld + j;
        if (vec) {
            float4 a = *reinterpret_cast<const float4 *>(s);
            if (acc) {
                const float4 b = *reinterpret_cast<const float4 *>(d);
                a = make_float4(b.x + a.x, b.y + a.y, b.z + a.z, b.w + a.w);
            }
            *reinterpret_cast<float4 *>(d) = a;
        } else {
            *d = acc ? *d + *s : *s;
        }
    }
}

/* Any pair of layouts, element by element in the destination's order (coalesced writes): NCHW
 * destination (i, k, p) with p fastest, blocked destination (i, p, k) with k fastest. */
template <typename I>
static __global__ void copy_any_k(I total, int hw, int nc, const float *__restrict__ src, int sc, int sc0, int sblk,
                                  float *__restrict__ dst, int dc, int dc0, int dblk, int acc) {
    for (I j = (I)(blockIdx.x * blockDim.x + threadIdx.x); j < total; j += (I)(gridDim.x * blockDim.x)) {
        I i, k, p;
        if (dblk <= 1) {
            p = j % (I)hw;
            const I t = j / (I)hw;
            k = t % (I)nc;
            i = t / (I)nc;
        } else {
            k = j % (I)nc;
            const I t = j / (I)nc;
            p = t % (I)hw;
            i = t / (I)hw;
        }
        const float v = src[mfcu_at(sc, hw, sblk, (int64_t)i, sc0 + (int)k, (int64_t)p)];
        float *o = dst + mfcu_at(dc, hw, dblk, (int64_t)i, dc0 + (int)k, (int64_t)p);
        *o = acc ? *o + v : v;
    }
}

static void copy2d(mf_backend *be, int64_t rows, int64_t width, const float *src, int64_t sld, float *dst,
                   int64_t dld, int acc) {
    const int vec = width % 4 == 0 && sld % 4 == 0 && dld % 4 == 0 && al16(src) && al16(dst);
    const int64_t total = rows * width, far = (rows - 1) * (sld > dld ? sld : dld) + width;
    const unsigned grid = mfcu_blocks(vec ? total / 4 : total, THREADS);
    if (fits32(total) && fits32(far))
        copy2d_k<uint32_t><<<grid, THREADS, 0, mfcu_stream(be)>>>((uint32_t)rows, (uint32_t)width, src, (uint32_t)sld,
                                                                  dst, (uint32_t)dld, acc, vec);
    else
        copy2d_k<int64_t><<<grid, THREADS, 0, mfcu_stream(be)>>>(rows, width, src, sld, dst, dld, acc, vec);
    MFCU_LAUNCHED(be, "copy_channels (rows)");
}

void mfcu_copy_channels(mf_backend *be, int n, int hw, int nc, const float *src, int src_c, int src_c0,
                        int src_blk, float *dst, int dst_c, int dst_c0, int dst_blk, int acc) {
    if (n <= 0 || hw <= 0 || nc <= 0 || mfcu_enter(be)) return;
    const int sb = cblk(src_blk), db = cblk(dst_blk);
    acc = acc ? 1 : 0;
    /* a layout with one channel block per pixel (NHWC) keeps the nc channels of a pixel contiguous */
    const int s_nhwc = sb > 1 && sb == src_c, d_nhwc = db > 1 && db == dst_c;
    if (sb == 1 && db == 1) { /* NCHW both: one run of nc*hw floats per sample */
        copy2d(be, n, (int64_t)nc * hw, src + (int64_t)src_c0 * hw, (int64_t)src_c * hw, dst + (int64_t)dst_c0 * hw,
               (int64_t)dst_c * hw, acc);
    } else if (s_nhwc && d_nhwc) { /* NHWC both: one run of nc floats per pixel */
        copy2d(be, (int64_t)n * hw, nc, src + src_c0, src_c, dst + dst_c0, dst_c, acc);
    } else if (sb == db && src_c0 % sb == 0 && dst_c0 % sb == 0 && nc % sb == 0) {
        /* the same channel block, whole blocks: one run per sample (a block starts at c0*hw in both) */
        copy2d(be, n, (int64_t)nc * hw, src + (int64_t)src_c0 * hw, (int64_t)src_c * hw, dst + (int64_t)dst_c0 * hw,
               (int64_t)dst_c * hw, acc);
    } else {
        const int64_t total = (int64_t)n * nc * hw;
        const int64_t far = (int64_t)n * (src_c > dst_c ? src_c : dst_c) * hw;
        if (fits32(far))
            copy_any_k<uint32_t><<<mfcu_blocks(total, THREADS), THREADS, 0, mfcu_stream(be)>>>(
                (uint32_t)total, hw, nc, src, src_c, src_c0, src_blk, dst, dst_c, dst_c0, dst_blk, acc);
        else
            copy_any_k<int64_t><<<mfcu_blocks(total, THREADS), THREADS, 0, mfcu_stream(be)>>>(
                total, hw, nc, src, src_c, src_c0, src_blk, dst, dst_c, dst_c0, dst_blk, acc);
        MFCU_LAUNCHED(be, "copy_channels");
    }
}

/* ---- layout: nearest-neighbour 2x up-sampling ----------------------------------------------------
 * In channel block B (1: NCHW) a tensor is m = n*(c/B) planes of (h, w, B); NHWC is B = c. With B % 4
 * == 0 (and aligned pointers) a thread moves 4 channels (V = 4), else one element (V = 1). */

template <typename I, int V>
static __global__ void upsample_k(I planes, I h, I w, I B, const float *__restrict__ x, float *__restrict__ y) {
    const I bv = B / V, w2 = 2 * w, h2 = 2 * h, total = planes * h2 * w2 * bv;
    for (I t = (I)(blockIdx.x * blockDim.x + threadIdx.x); t < total; t += (I)(gridDim.x * blockDim.x)) {
        const I l = (t % bv) * V;
        I r = t / bv;
        const I ox = r % w2;
        r /= w2;
        const I oy = r % h2, m = r / h2;
        const I src = ((m * h + oy / 2) * w + ox / 2) * B + l, dsti = t * V;
        if (V == 4) *reinterpret_cast<float4 *>(y + dsti) = *reinterpret_cast<const float4 *>(x + src);
        else y[dsti] = x[src];
    }
}

/* dx = (dy[2iy, 2ix] + dy[2iy, 2ix+1]) + (dy[2iy+1, 2ix] + dy[2iy+1, 2ix+1]) (the CPU's order), (+)= */
template <typename I, int V>
static __global__ void upsample_bwd_k(I planes, I h, I w, I B, const float *__restrict__ dy, float *__restrict__ dx,
                                      int acc) {
    const I bv = B / V, total = planes * h * w * bv, row = 2 * w * B;
    for (I t = (I)(blockIdx.x * blockDim.x + threadIdx.x); t < total; t += (I)(gridDim.x * blockDim.x)) {
        const I l = (t % bv) * V;
        I r = t / bv;
        const I ix = r % w;
        r /= w;
        const I iy = r % h, m = r / h;
        const I a = ((m * 2 * h + 2 * iy) * 2 * w + 2 * ix) * B + l, o = t * V;
        if (V == 4) {
            const float4 p = *reinterpret_cast<const float4 *>(dy + a), q = *reinterpret_cast<const float4 *>(dy + a + B);
            const float4 s = *reinterpret_cast<const float4 *>(dy + a + row),
                         u = *reinterpret_cast<const float4 *>(dy + a + row + B);
            float4 v = make_float4((p.x + q.x) + (s.x + u.x), (p.y + q.y) + (s.y + u.y), (p.z + q.z) + (s.z + u.z),
                                   (p.w + q.w) + (s.w + u.w));
            if (acc) {
                const float4 d = *reinterpret_cast<const float4 *>(dx + o);
                v = make_float4(d.x + v.x, d.y + v.y, d.z + v.z, d.w + v.w);
            }
            *reinterpret_cast<float4 *>(dx + o) = v;
        } else {
            const float v = (dy[a] + dy[a + B]) + (dy[a + row] + dy[a + row + B]);
            dx[o] = acc ? dx[o] + v : v;
        }
    }
}

template <int V>
static void upsample_launch(mf_backend *be, int bwd, int64_t planes, int h, int w, int B, const float *in, float *out,
                            int acc) {
    const int64_t big = planes * 4 * h * w * B, items = (bwd ? big / 4 : big) / V;
    const unsigned grid = mfcu_blocks(items, THREADS);
    cudaStream_t st = mfcu_stream(be);
    if (fits32(big)) {
        if (bwd) upsample_bwd_k<uint32_t, V><<<grid, THREADS, 0, st>>>((uint32_t)planes, h, w, B, in, out, acc);
        else upsample_k<uint32_t, V><<<grid, THREADS, 0, st>>>((uint32_t)planes, h, w, B, in, out);
    } else {
        if (bwd) upsample_bwd_k<int64_t, V><<<grid, THREADS, 0, st>>>(planes, h, w, B, in, out, acc);
        else upsample_k<int64_t, V><<<grid, THREADS, 0, st>>>(planes, h, w, B, in, out);
    }
    MFCU_LAUNCHED(be, bwd ? "upsample2x_bwd" : "upsample2x");
}

static void upsample_run(mf_backend *be, int bwd, int n, int c, int h, int w, const float *in, float *out, int acc,
                         int blk) {
    if (n <= 0 || c <= 0 || h <= 0 || w <= 0 || mfcu_enter(be)) return;
    const int B = cblk(blk);
    const int64_t planes = (int64_t)n * (c / B);
    if (B % 4 == 0 && al16(in) && al16(out)) upsample_launch<4>(be, bwd, planes, h, w, B, in, out, acc);
    else upsample_launch<1>(be, bwd, planes, h, w, B, in, out, acc);
}

void mfcu_upsample2x(mf_backend *be, int n, int c, int h, int w, const float *x, float *y, int blk) {
    upsample_run(be, 0, n, c, h, w, x, y, 0, blk);
}
void mfcu_upsample2x_bwd(mf_backend *be, int n, int c, int h, int w, const float *dy, float *dx, int acc, int blk) {
    upsample_run(be, 1, n, c, h, w, dy, dx, acc ? 1 : 0, blk);
}

/* ---- embedding ------------------------------------------------------------------------------------ */

/* idx is a host array: rejects negative entries (the table's row count is not passed) and stages it */
static const int32_t *stage_idx(mf_backend *be, int n, const int32_t *idx, const char *what) {
    for (int i = 0; i < n; i++)
        if (idx[i] < 0) {
            mfcu_record_error(be, __FILE__, __LINE__, what, "negative embedding index");
            return NULL;
        }
    return (const int32_t *)mfcu_stage(be, idx, sizeof(int32_t) * (size_t)n);
}

static __global__ void embed_k(int n, int dim, const int32_t *__restrict__ idx, const float *__restrict__ table,
                               float *__restrict__ y) {
    GRID_STRIDE(j, (int64_t)n * dim) {
        const int64_t i = j / dim, k = j - i * dim;
        y[j] = table[(int64_t)idx[i] * dim + k];
    }
}
void mfcu_embed(mf_backend *be, int n, int dim, const int32_t *idx, const float *table, float *y) {
    if (n <= 0 || dim <= 0 || mfcu_enter(be)) return;
    const int32_t *d_idx = stage_idx(be, n, idx, "embed");
    if (!d_idx) return;
    embed_k<<<mfcu_blocks((int64_t)n * dim, THREADS), THREADS, 0, mfcu_stream(be)>>>(n, dim, d_idx, table, y);
    MFCU_LAUNCHED(be, "embed");
}

/* One thread per column k adds the rows in index order: repeated indices are summed deterministically,
 * in the CPU's order. */
static __global__ void embed_bwd_k(int n, int dim, const int32_t *__restrict__ idx, const float *__restrict__ dy,
                                   float *__restrict__ dtable) {
    GRID_STRIDE(k, dim) {
        for (int i = 0; i < n; i++) dtable[(int64_t)idx[i] * dim + k] += dy[(int64_t)i * dim + k];
    }
}
void mfcu_embed_bwd(mf_backend *be, int n, int dim, const int32_t *idx, const float *dy, float *dtable) {
    if (n <= 0 || dim <= 0 || mfcu_enter(be)) return;
    const int32_t *d_idx = stage_idx(be, n, idx, "embed_bwd");
    if (!d_idx) return;
    embed_bwd_k<<<mfcu_blocks(dim, 128), 128, 0, mfcu_stream(be)>>>(n, dim, d_idx, dy, dtable);
    MFCU_LAUNCHED(be, "embed_bwd");
}

/* ---- Fourier time features: the argument t*freq exact in double, sin and cos in double (the CPU's) --- */

static __global__ void fourier_k(int n, int half, const float *__restrict__ t, const float *__restrict__ freq,
                                 const float *__restrict__ tt, float *__restrict__ y) {
    GRID_STRIDE(j, (int64_t)n * half) {
        const int64_t i = j / half;
        const int k = (int)(j - i * half);
        const double a = (double)t[i] * (double)freq[k];
        double s, c;
        sincos(a, &s, &c);
        float *yr = y + i * 2 * half;
        if (!tt) {
            yr[k] = (float)s;
            yr[half + k] = (float)c;
        } else {
            const double f = (double)freq[k] * (double)tt[i];
            yr[k] = (float)(c * f);
            yr[half + k] = (float)(-s * f);
        }
    }
}
void mfcu_fourier(mf_backend *be, int n, int half, const float *t, const float *freq, float *y) {
    if (n <= 0 || half <= 0 || mfcu_enter(be)) return;
    fourier_k<<<mfcu_blocks((int64_t)n * half, THREADS), THREADS, 0, mfcu_stream(be)>>>(n, half, t, freq, NULL, y);
    MFCU_LAUNCHED(be, "fourier");
}
void mfcu_fourier_jvp(mf_backend *be, int n, int half, const float *t, const float *freq, const float *tt,
                      float *ty) {
    if (n <= 0 || half <= 0 || mfcu_enter(be)) return;
    fourier_k<<<mfcu_blocks((int64_t)n * half, THREADS), THREADS, 0, mfcu_stream(be)>>>(n, half, t, freq, tt, ty);
    MFCU_LAUNCHED(be, "fourier_jvp");
}
