/* mf_backend.h - the backend interface of the tensor engine: a table of function pointers plus a
 * context (ggml style). A backend owns tensor storage (host memory for the CPU, device memory for
 * CUDA); nothing outside a backend dereferences a tensor pointer. Work may be issued asynchronously:
 * read() and synchronize() are the synchronisation points.
 *
 * All tensors are float32 and contiguous. Shapes are passed explicitly as ints. Activations (n, c, h, w)
 * are NCHW, or, where a kernel's `blk` argument is 16, channel-blocked nChw16c: element (i, c, p) at
 * ((i*(c/16) + c/16)*hw + p)*16 + c%16 (c % 16 == 0). A backend announces the block it wants in
 * mf_backend.cblock (0: NCHW only); the graph keeps a tensor blocked when its channel count is a
 * multiple of it and passes each kernel the layouts of its operands; blk 0 or 1 means NCHW. Everything
 * else (parameters, 2-D tensors, inputs and outputs read by the host) is always plain. "acc" arguments:
 * when acc is non-zero the result is ADDED to the output (gradient accumulation), else it overwrites.
 * Every kernel must be deterministic for a given backend and thread count.
 *
 * NHWC: a backend whose cblock is negative (the CUDA backend: -8) wants channels-last activations: a
 * tensor with c channels, c a multiple of -cblock, is kept with blk = c, which the formula above makes
 * NHWC (element (i, k, p) at (i*hw + p)*c + k). So a kernel's blk is 0/1 (NCHW), 16 (nChw16c) or the
 * tensor's own channel count (NHWC; for c = 16 the two coincide). The CPU backend uses 0 and 16 only.
 *
 * Errors: kernels return nothing. A backend that can fail at run time (a GPU: launch failure, out of
 * memory inside a library) records the first failure, with the call, file and line, and reports it
 * through error(); the training loop and the samplers check it after every synchronisation point.
 *
 * Opening a backend: mf_backend_open (engine/mf_backend.c, the registry: the only code naming
 * backends). Backends built as modules (cuda/) export MF_BACKEND_ENTRY_SYMBOL returning an
 * mf_backend_module; they are loaded with the same loader (core/mf_module.c) and ABI check as plugins. */
#ifndef MF_BACKEND_H
#define MF_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mf_backend mf_backend;

/* mf_backend_i has a `destroy` entry (for code that must build before and after it was added). */
#define MF_BACKEND_HAS_DESTROY 1

typedef struct mf_conv_shape {
    int n, ci, h, w;    /* input (n, ci, h, w) */
    int co, k, stride, pad; /* weight (co, ci, k, k); output (n, co, ho, wo) */
    int ho, wo;         /* ho = (h + 2*pad - k)/stride + 1, same for wo */
    int bx, by;         /* channel block of x (and dx) and of y (and dy): 0/1 NCHW, 16 nChw16c */
    int xdt;            /* element type of x for conv2d, conv2d_bwd_filter and conv2d_bwd: MF_DT_F32
                         * (0), or MF_DT_BF16 where the graph stores x in bfloat16 (mf_backend.bf16_act) */
    int fp32;           /* 1: this call computes in float32 whatever be->precision (the JVP's tangents) */
} mf_conv_shape;

/* Element types of stored activations. bf16: bfloat16 as uint16 bits (the top half of the float32,
 * rounded to nearest even), same layout and element order, half the bytes. */
enum { MF_DT_F32 = 0, MF_DT_BF16 = 1 };

typedef struct mf_backend_i {
    const char *name;

    /* ---- memory ---------------------------------------------------------------------------- */
    void *(*alloc)(mf_backend *be, size_t bytes);        /* 64-byte aligned; NULL on failure */
    void (*free)(mf_backend *be, void *ptr);
    void (*write)(mf_backend *be, void *dst, const void *host_src, size_t bytes); /* host -> backend */
    void (*read)(mf_backend *be, void *host_dst, const void *src, size_t bytes);  /* backend -> host; syncs */
    void (*copy)(mf_backend *be, void *dst, const void *src, size_t bytes);       /* backend -> backend */
    void (*fill)(mf_backend *be, float *dst, float value, int64_t n);
    void (*synchronize)(mf_backend *be);
    size_t (*peak_bytes)(mf_backend *be); /* high-water mark of alloc'ed bytes (workspaces included) */

    /* ---- dense ----------------------------------------------------------------------------- */
    /* Row-major C(m,n) = alpha * op(A) op(B) + beta * C; op(A) is (m,k): A is (m,k), or (k,m) if ta.
     * op(B) is (k,n): B is (k,n), or (n,k) if tb. */
    void (*gemm)(mf_backend *be, int ta, int tb, int m, int n, int k, float alpha, const float *a,
                 const float *b, float beta, float *c);
    /* y (s.n, s.co, s.ho, s.wo) = conv(x, w) + bias[co] (bias may be NULL); cross-correlation as
     * PyTorch's conv2d. */
    void (*conv2d)(mf_backend *be, const mf_conv_shape *s, const float *x, const float *w,
                   const float *bias, float *y);
    /* dx (+)= conv_transpose(dy, w) */
    void (*conv2d_bwd_data)(mf_backend *be, const mf_conv_shape *s, const float *dy, const float *w,
                            float *dx, int acc);
    /* dw += corr(x, dy); dbias += sum over n,h,w of dy (dbias may be NULL). Always accumulates. */
    void (*conv2d_bwd_filter)(mf_backend *be, const mf_conv_shape *s, const float *x, const float *dy,
                              float *dw, float *dbias);

    /* ---- normalisation --------------------------------------------------------------------- */
    /* GroupNorm over (n, c, hw) with g groups (c % g == 0): per (sample, group) mean and
     * rstd = 1/sqrt(var + eps) (biased variance, as PyTorch), saved in mean/rstd (n*g each);
     * y = (x - mean) * rstd * gamma[c] + beta[c]. */
    void (*groupnorm)(mf_backend *be, int n, int c, int hw, int g, float eps, const float *x,
                      const float *gamma, const float *beta, float *y, float *mean, float *rstd, int blk);
    /* dx (+)= d/dx; dgamma += ..., dbeta += ... (always accumulate; either may be NULL). */
    void (*groupnorm_bwd)(mf_backend *be, int n, int c, int hw, int g, const float *x,
                          const float *gamma, const float *mean, const float *rstd, const float *dy,
                          float *dx, float *dgamma, float *dbeta, int acc, int blk);
    /* Forward-mode tangent w.r.t. x only (parameters held fixed): ty = J_x(GroupNorm) tx. */
    void (*groupnorm_jvp)(mf_backend *be, int n, int c, int hw, int g, const float *x,
                          const float *gamma, const float *mean, const float *rstd, const float *tx,
                          float *ty, int blk);

    /* GroupNorm followed by SiLU, y = silu(GroupNorm(x)), as one kernel: the GroupNorm output is not
     * stored (backward and JVP recompute it from x, mean and rstd, which are saved as by groupnorm). */
    void (*gn_silu)(mf_backend *be, int n, int c, int hw, int g, float eps, const float *x, const float *gamma,
                    const float *beta, float *y, float *mean, float *rstd, int blk);
    void (*gn_silu_bwd)(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma,
                        const float *beta, const float *mean, const float *rstd, const float *dy, float *dx,
                        float *dgamma, float *dbeta, int acc, int blk);
    void (*gn_silu_jvp)(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma,
                        const float *beta, const float *mean, const float *rstd, const float *tx, float *ty,
                        int blk);

    /* ---- element-wise ---------------------------------------------------------------------- */
    void (*silu)(mf_backend *be, int64_t n, const float *x, float *y);              /* y = x*sigmoid(x) */
    void (*silu_bwd)(mf_backend *be, int64_t n, const float *x, const float *dy, float *dx, int acc);
    void (*silu_jvp)(mf_backend *be, int64_t n, const float *x, const float *tx, float *ty); /* ty = silu'(x) tx */
    /* y = a*x + b*y  (b = 0: y = a*x, y need not be initialised) */
    void (*axpby)(mf_backend *be, int64_t n, float a, const float *x, float b, float *y);
    /* z = a*x + b*y (z may alias x or y) */
    void (*add2)(mf_backend *be, int64_t n, float a, const float *x, float b, const float *y, float *z);
    /* y[i, c, :] = x[i, c, :] + e[i, c] over hw (x, y of shape (n, c, hw); y may be x): broadcast a
     * per-channel vector */
    void (*add_channel)(mf_backend *be, int n, int c, int hw, const float *x, const float *e, float *y, int blk);
    /* de[i, c] (+)= sum over hw of dy[i, c, :] */
    void (*sum_channel)(mf_backend *be, int n, int c, int hw, const float *dy, float *de, int acc, int blk);
    /* dbias[j] += sum over rows of dy (rows, cols): bias gradient of a linear layer */
    void (*sum_rows)(mf_backend *be, int rows, int cols, const float *dy, float *dbias);
    /* y[r, :] += bias (rows, cols) */
    void (*add_bias_rows)(mf_backend *be, int rows, int cols, const float *bias, float *y);

    /* ---- per-row (per-sample) arithmetic of the objectives (stages/train/objectives) ---------- */
    /* x, y, z of shape (n, d); a, b, w, e are backend arrays of n per-row values.
     * rows_axpby: z[i, :] = a[i] x[i, :] + b[i] y[i, :]; b and y may be NULL (z = a x); z may alias x
     * or y. Path mixing z_t = (1 - t) x + t eps, targets v - (t - r) du/dt, per-sample loss weights. */
    void (*rows_axpby)(mf_backend *be, int n, int64_t d, const float *a, const float *x, const float *b,
                       const float *y, float *z);
    /* e[i] = sum_j (x[i, j] - y[i, j])^2 (y may be NULL), accumulated in double, stored as float: the
     * per-sample squared error, left on the backend (for weights computed there). */
    void (*row_sq_err)(mf_backend *be, int n, int64_t d, const float *x, const float *y, float *e);
    /* w[i] = scale * (e[i] + c)^(-p): MeanFlow's adaptive weight (p = 0: w = scale). e + c > 0. */
    void (*pow_weight)(mf_backend *be, int n, const float *e, float c, float p, float scale, float *w);

    /* ---- layout ---------------------------------------------------------------------------- */
    /* Channels [dst_c0, dst_c0 + nc) of dst (n, dst_c, hw) (+)= channels [src_c0, src_c0 + nc) of src
     * (n, src_c, hw), each in its own layout (blk): channel concat and split, and layout conversion. */
    void (*copy_channels)(mf_backend *be, int n, int hw, int nc, const float *src, int src_c, int src_c0,
                          int src_blk, float *dst, int dst_c, int dst_c0, int dst_blk, int acc);
    /* Nearest-neighbour 2x up-sampling (n, c, h, w) -> (n, c, 2h, 2w), and its adjoint. */
    void (*upsample2x)(mf_backend *be, int n, int c, int h, int w, const float *x, float *y, int blk);
    void (*upsample2x_bwd)(mf_backend *be, int n, int c, int h, int w, const float *dy, float *dx, int acc,
                           int blk);
    /* Row gather: y[i, :] = table[idx[i], :] (idx on the host, n entries), and its scatter-add. */
    void (*embed)(mf_backend *be, int n, int dim, const int32_t *idx, const float *table, float *y);
    void (*embed_bwd)(mf_backend *be, int n, int dim, const int32_t *idx, const float *dy, float *dtable);

    /* ---- time features --------------------------------------------------------------------- */
    /* y[i, k] = sin(t[i]*freq[k]), y[i, half+k] = cos(t[i]*freq[k]) for k < half; y is (n, 2*half).
     * jvp: ty[i, k] = cos(..)*freq[k]*tt[i], ty[i, half+k] = -sin(..)*freq[k]*tt[i]. */
    void (*fourier)(mf_backend *be, int n, int half, const float *t, const float *freq, float *y);
    void (*fourier_jvp)(mf_backend *be, int n, int half, const float *t, const float *freq,
                        const float *tt, float *ty);

    /* ---- reductions and optimiser (results to the host: synchronisation points) ---------------- */
    /* out[i] = sum_j (a[i, j] - b[i, j])^2 over rows of length d (b may be NULL: sum of squares).
     * Accumulated in double. out is a host array of n floats-as-doubles. */
    void (*sq_err_rows)(mf_backend *be, int n, int64_t d, const float *a, const float *b, double *out);
    /* sum of squares of x (n elements), accumulated in double */
    double (*sumsq)(mf_backend *be, int64_t n, const float *x);
    /* AdamW (decoupled weight decay, PyTorch semantics), with the gradient first multiplied by
     * gscale (clipping): g = gscale*grad; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
     * p -= lr * (wd * p + (m / (1-b1^step)) / (sqrt(v / (1-b2^step)) + eps))  with PyTorch's order:
     * p *= (1 - lr*wd) first, then p -= lr * mhat / (sqrt(vhat) + eps). step >= 1. */
    void (*adamw)(mf_backend *be, int64_t n, float *p, const float *grad, float *m, float *v, float lr,
                  float b1, float b2, float eps, float wd, int64_t step, float gscale);
    /* e = d*e + (1-d)*p */
    void (*ema)(mf_backend *be, int64_t n, float *e, const float *p, float d);
    /* The whole optimizer step with no host synchronisation (what a GPU's training loop runs): the
     * gradient norm g = sqrt(sum grad^2) (double accumulation), and then, if g is finite, adamw with
     * gscale = clip / (g + 1e-6) where clip > 0 and g > clip (else 1) at Adam step t + 1, t + 1 stored;
     * if g is not finite nothing changes but the skip count (and the first skipped step). The per-step
     * scalars live in st (backend, MF_OPT_ST_N floats, see below): the host writes the learning rate
     * and the step number before the call and reads the rest when it logs. Equals sumsq + adamw on
     * the same values bit for bit on the CPU. */
    void (*adamw_step)(mf_backend *be, int64_t n, float *p, const float *grad, float *m, float *v, float *st,
                       float b1, float b2, float eps, float wd, float clip);

    /* ---- random numbers on the backend -------------------------------------------------------- */
    /* out[j] (j < n) = the j-th value of mf_rng_normal(seed, purpose, step, ., n) (core/mf_rng.c: the
     * Philox stream, Box-Muller in double on 53-bit uniforms); a GPU's log/sincos may differ from the
     * host's in the last bit of the double, which the float result almost never shows. */
    void (*randn)(mf_backend *be, uint64_t seed, uint32_t purpose, uint64_t step, int64_t n, float *out);

    /* ---- lifetime and properties ----------------------------------------------------------------- */
    /* Frees the backend and everything it allocated. Required. */
    void (*destroy)(mf_backend *be);
    /* One line naming the backend's device and libraries ("cpu: OpenBLAS 0.3.21, oneDNN 2.6.3, 2
     * threads, avx512"; "cuda: NVIDIA H200 (sm_90, 139 GiB), driver 13.0, cuDNN 9.x, cuBLAS 13.x").
     * Required; the string lives as long as the backend. */
    const char *(*version)(mf_backend *be);
    /* NULL, or the first run-time failure (sticky) with the failing call, file and line. Required. */
    const char *(*error)(mf_backend *be);

    /* ---- host staging and graphs (optional: NULL where the backend has none) ---------------------- */
    /* Host memory the backend copies from fastest (pinned), for inputs written every step. */
    void *(*host_alloc)(mf_backend *be, size_t bytes);
    void (*host_free)(mf_backend *be, void *ptr);
    /* Graphs: the work issued between graph_begin and graph_end is recorded, not run (no read() or
     * synchronize() in between; a write() records the host data as it is at the call). graph_end
     * returns the recording as a graph: `prev` updated in place when the work has the same shape
     * (the same kernels in the same order; pointers and scalar arguments may differ), else a new one
     * (prev freed). graph_launch runs it. Recording a step and launching it costs the host less than
     * issuing it and lets the device run it without gaps between kernels. graph_begin returns -1 and
     * graph_end NULL (prev freed) with mf_fail when the backend cannot record (the work recorded so
     * far is dropped: the caller issues the step again without a graph). */
    int (*graph_begin)(mf_backend *be);
    void *(*graph_end)(mf_backend *be, void *prev);
    int (*graph_launch)(mf_backend *be, void *graph);
    void (*graph_free)(mf_backend *be, void *graph);

    /* ---- reduced precision (optional: NULL where the backend has none; docs/backends.md) ------------ */
    /* Both gradients of a convolution in one call: exactly conv2d_bwd_filter(s, x, dy, dw, dbias) then
     * conv2d_bwd_data(s, dy, w, dx, acc) (a backend in bf16 converts dy once). The graph calls it when it
     * needs both. */
    void (*conv2d_bwd)(mf_backend *be, const mf_conv_shape *s, const float *x, const float *dy, const float *w,
                       float *dw, float *dbias, float *dx, int acc);
    /* bf16 activations (only where mf_backend.bf16_act is 1): conv_bf16_x says whether conv2d and
     * conv2d_bwd_filter of shape s accept x in bf16 (s->xdt = MF_DT_BF16); gn_silu_bf16 is gn_silu with y
     * written in bf16 (y rounded once, from the float32 result gn_silu would write). The graph stores a
     * fused GroupNorm+SiLU output in bf16 when every consumer is a convolution that accepts it; its
     * backward and JVP read the float32 input x, never y. */
    int (*conv_bf16_x)(mf_backend *be, const mf_conv_shape *s);
    void (*gn_silu_bf16)(mf_backend *be, int n, int c, int hw, int g, float eps, const float *x, const float *gamma,
                         const float *beta, void *y, float *mean, float *rstd, int blk);
    /* Parameters may have been written since the last call: anything the backend derived from them
     * (weights converted to bf16, reordered) is stale. The graph calls it at the start of every forward
     * and JVP pass; between two calls nothing writes the parameters it reads (a backward pass reads the
     * weights of the forward before it), so a backend may convert each weight once per step. */
    void (*params_epoch)(mf_backend *be);
} mf_backend_i;

/* adamw_step's state floats (backend memory). Counts are floats: exact to 2^24 steps. */
enum {
    MF_OPT_ST_LR = 0,       /* in: this step's learning rate */
    MF_OPT_ST_STEP = 1,     /* in: this step's number (1-based; for the first-skipped record) */
    MF_OPT_ST_T = 2,        /* Adam's step count (steps taken); starts at 0, kept across steps */
    MF_OPT_ST_GNORM = 3,    /* out: gradient norm of the last call */
    MF_OPT_ST_SKIPPED = 4,  /* out: calls skipped as non-finite (the host resets it when it logs) */
    MF_OPT_ST_FIRST_SKIP = 5, /* out: step number of the first skip since reset, or -1 */
    MF_OPT_ST_N = 16        /* floats to allocate (the rest is the backend's scratch) */
};

/* Numeric precision of the matrix work (convolutions, linear layers). Normalisation statistics,
 * reductions, the loss, the optimizer and the JVP's tangent accumulation stay float32 in all three. */
enum {
    MF_PREC_FP32 = 0, /* float32 throughout (TF32 off) */
    MF_PREC_TF32 = 1, /* float32 storage, TF32 tensor-core products (GPU) */
    MF_PREC_BF16 = 2, /* bfloat16 products with float32 accumulation, float32 master weights */
    MF_PREC_AUTO = -1, /* asked only (mf_backend_opts): the registry picks bf16 on a CPU whose bf16
                        * convolutions are real (AVX512-BF16 or AMX), tf32 on a GPU, else fp32 */
};
const char *mf_precision_name(int precision); /* "fp32", "tf32", "bf16" */

struct mf_backend {
    const mf_backend_i *i;
    void *ctx;
    int threads;
    int cblock;      /* activation layout the backend prefers: 0 (NCHW), 16 (nChw16c), -8 (NHWC for
                        channel counts that are multiples of 8); see the top of this file */
    int precision;   /* MF_PREC_*: what the backend runs (may be lower than asked, with a warning) */
    int host_memory; /* 1: tensors are host memory (CPU): no device copy of the data set is needed */
    int bf16_act;    /* 1: the graph may store activations in bf16 (conv_bf16_x, gn_silu_bf16); set by
                        the backend with its precision */
    const char *kind; /* "cpu", "cuda": the registry name it was opened under */
};

/* ---- opening backends (engine/mf_backend.c) ------------------------------------------------------ */
typedef struct mf_backend_opts {
    int threads;   /* CPU worker threads (<= 0: all cores); the GPU backend uses them for host work */
    int precision; /* MF_PREC_* asked for */
    int device;    /* GPU ordinal */
} mf_backend_opts;

/* name: "cpu", "cuda" or "auto" (cuda when its module loads and a GPU is usable, else cpu). NULL with
 * mf_fail naming the reason (no module, libraries missing, no driver, no device) when it cannot. */
mf_backend *mf_backend_open(const char *name, const mf_backend_opts *opts);
/* Why `name` cannot be opened, or NULL when it can (probes without keeping it open); for `mfpipe
 * version` and the tests' skip messages. The string is static until the next call. */
const char *mf_backend_probe(const char *name);
/* Frees any backend (calls its destroy). NULL is fine. */
void mf_backend_free(mf_backend *be);
/* The names the registry knows, NULL-terminated. */
extern const char *const mf_backend_names[];

/* A backend built as a module: the shared object exports this symbol, a function returning a pointer
 * to its mf_backend_module (the same loader and ABI check as stage plugins: core/mf_module.h). */
#define MF_BACKEND_ENTRY_SYMBOL "mfpipe_backend_entry"
#define MF_BACKEND_ABI_VERSION 2u /* bump on any change to mf_backend_i, mf_backend or the opts */
typedef struct mf_backend_module {
    uint32_t abi_version; /* MF_BACKEND_ABI_VERSION; first field */
    uint32_t struct_size; /* sizeof(mf_backend_i), checked against the host's */
    const char *name;     /* "cuda" */
    /* Open device opts->device; NULL with the reason written to why (e.g. "no CUDA device: ...",
     * "CUDA driver too old: ..."). */
    mf_backend *(*open)(const mf_backend_opts *opts, char *why, size_t why_cap);
} mf_backend_module;
typedef const mf_backend_module *(*mf_backend_entry_fn)(void);

/* The CPU backend (cpu/, always built). threads <= 0: all cores. Prefer mf_backend_open("cpu"). */
mf_backend *mf_cpu_backend_new(int threads);
/* "oneDNN X.Y.Z" when the CPU backend was built with oneDNN, else NULL (for manifests and --version) */
const char *mf_cpu_dnnl_version(void);
/* The checked backend (mf_backend_check.c): wraps `inner` (and owns it from then on); its tensors are
 * PROT_NONE except while a kernel runs, so host code that dereferences one dies with SIGSEGV. Used by
 * the tests (MFPIPE_CHECKED_BACKEND=1) to prove no code outside a backend touches tensor memory. */
mf_backend *mf_checked_backend_new(mf_backend *inner);
void mf_checked_backend_free(mf_backend *be);

#ifdef __cplusplus
}
#endif
#endif
