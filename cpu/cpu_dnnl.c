/* cpu_dnnl.c - convolutions through oneDNN (Debian's libdnnl, OpenMP build) for activations in the
 * channel-blocked layout nChw16c (see docs/cpu-backend.md, "Layouts"). oneDNN's AVX-512 kernels on
 * blocked tensors are 1.6-5x faster than im2col + GEMM on the MNIST UNet's shapes; on plain NCHW they
 * are not faster, so a convolution whose input and output are both NCHW keeps the im2col path.
 *
 * Primitives are created once per (direction, shape, layouts, bias) and cached in the backend context.
 * Weights stay OIHW in the parameter buffer (checkpoints, optimiser and every other backend see one
 * layout); each call reorders them into the primitive's blocked format in the workspace (a few hundred
 * KiB at most). Filter gradients come out blocked and are reordered back with a sum post-op, so they
 * accumulate as the interface requires. Built only when CMake finds oneDNN (MF_HAVE_DNNL).
 *
 * bf16 (precision: bf16, docs/cpu-backend.md "bf16"): the same three directions with bfloat16 operands
 * and float32 accumulation and results. src, weights and diff_dst are rounded to bf16 (round to nearest
 * even) into the workspace: the weights by oneDNN, fused with the OIHW -> blocked reorder the fp32 path
 * runs anyway; the activations by to_bf16_act (same layout, OpenMP; 2-4x faster here than oneDNN's
 * reorder), which also sums dy per channel for the bias gradient, a reduction that stays float32.
 * dst, diff_src and diff_weights stay float32 in the engine's buffers, so every other kernel, the memory
 * plan and the optimiser are unchanged. Separate primitives (dn_prim.bf16); the fp32 ones are created and
 * run exactly as before. */
#include "cpu_internal.h"

#ifdef MF_HAVE_DNNL
#include <dnnl.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mf_error.h"

#define DN(call)                                                                                       \
    do {                                                                                               \
        dnnl_status_t st_ = (call);                                                                    \
        if (st_ != dnnl_success) {                                                                     \
            fprintf(stderr, "mfpipe: oneDNN: %s failed (status %d) at %s:%d\n", #call, (int)st_,       \
                    __FILE__, __LINE__);                                                               \
            abort();                                                                                   \
        }                                                                                              \
    } while (0)

enum { DIR_FWD, DIR_BWD_DATA, DIR_BWD_FILTER };

typedef struct dn_prim {
    int dir, bias, bf16;
    mf_conv_shape s;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t x_md, y_md, w_md, w_user, b_md; /* w_md: the primitive's (diff) weights */
    dnnl_primitive_t wre;  /* weights reorder (OIHW -> w_md, or w_md -> OIHW with sum), NULL if equal */
    /* bf16 primitives: x16_md/y16_md are x and y in bf16, in the same layout (to_bf16_act) */
    dnnl_memory_desc_t x16_md, y16_md;
    size_t x16_bytes, y16_bytes;
    size_t w_bytes;        /* bytes of w_md */
    dnnl_memory_desc_t sp_md; /* the primitive's scratchpad, passed from the backend's workspace */
    size_t sp_bytes;
    int ref;               /* oneDNN chose a reference (slow) implementation: not used */
    char impl[64];
    /* bf16 weights cache (fwd, bwd_data): the reorder of wc_src made in parameter epoch wc_epoch */
    void *wc;
    const float *wc_src;
    unsigned wc_epoch;
} dn_prim;

typedef struct mfcpu_dnnl {
    dnnl_engine_t eng;
    dnnl_stream_t strm;
    dn_prim *p;
    int n, cap;
} mfcpu_dnnl;

int mfcpu_dnnl_init(mf_backend *be) {
    mfcpu_ctx *c = mfcpu(be);
    /* nChw16c is the AVX-512 kernels' layout; elsewhere (AVX2: nChw8c) oneDNN would run reference code on
     * it, so the backend stays NCHW with its im2col convolutions */
    const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    if ((isa & dnnl_cpu_isa_avx512_core) != dnnl_cpu_isa_avx512_core) return -1;
    mfcpu_dnnl *d = mf_xcalloc(1, sizeof *d);
    if (dnnl_engine_create(&d->eng, dnnl_cpu, 0) != dnnl_success) {
        free(d);
        return -1;
    }
    DN(dnnl_stream_create(&d->strm, d->eng, dnnl_stream_default_flags));
    c->dnnl = d;
    return 0;
}

void mfcpu_dnnl_free(mf_backend *be) {
    mfcpu_dnnl *d = mfcpu(be)->dnnl;
    if (!d) return;
    for (int i = 0; i < d->n; i++) {
        if (d->p[i].prim) dnnl_primitive_destroy(d->p[i].prim);
        if (d->p[i].wre) dnnl_primitive_destroy(d->p[i].wre);
        if (d->p[i].wc) mfcpu_free(be, d->p[i].wc);
    }
    free(d->p);
    dnnl_stream_destroy(d->strm);
    dnnl_engine_destroy(d->eng);
    free(d);
    mfcpu(be)->dnnl = NULL;
}

static int blk(int b) { return b > 1 ? b : 1; }

static void act_md_dt(dnnl_memory_desc_t *md, int n, int c, int h, int w, int b, dnnl_data_type_t dt) {
    dnnl_dims_t d = {n, c, h, w};
    DN(dnnl_memory_desc_init_by_tag(md, 4, d, dt, blk(b) == 16 ? dnnl_nChw16c : dnnl_nchw));
}
static void act_md(dnnl_memory_desc_t *md, int n, int c, int h, int w, int b) {
    act_md_dt(md, n, c, h, w, b, dnnl_f32);
}

static int same_shape(const mf_conv_shape *a, const mf_conv_shape *b) {
    return a->n == b->n && a->ci == b->ci && a->h == b->h && a->w == b->w && a->co == b->co && a->k == b->k &&
           a->stride == b->stride && a->pad == b->pad && blk(a->bx) == blk(b->bx) && blk(a->by) == blk(b->by);
}


static dnnl_primitive_t make_reorder(mfcpu_dnnl *d, const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to,
                                     int sum) {
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    if (sum) { /* to += reorder(from) */
        DN(dnnl_primitive_attr_create(&attr));
        DN(dnnl_post_ops_create(&po));
        DN(dnnl_post_ops_append_sum(po, 1.0f));
        DN(dnnl_primitive_attr_set_post_ops(attr, po));
    }
    dnnl_primitive_desc_t rpd;
    dnnl_primitive_t r;
    DN(dnnl_reorder_primitive_desc_create(&rpd, from, d->eng, to, d->eng, attr));
    DN(dnnl_primitive_create(&r, rpd));
    dnnl_primitive_desc_destroy(rpd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return r;
}

/* The cached primitive for (precision, direction, shape, bias), or a new zeroed slot for it (*fresh). */
static dn_prim *prim_slot(mfcpu_dnnl *d, int bf16, int dir, const mf_conv_shape *s, int bias, int *fresh) {
    *fresh = 0;
    for (int i = 0; i < d->n; i++)
        if (d->p[i].bf16 == bf16 && d->p[i].dir == dir && d->p[i].bias == bias && same_shape(&d->p[i].s, s))
            return &d->p[i];
    if (d->n == d->cap) {
        d->cap = d->cap ? 2 * d->cap : 32;
        d->p = mf_xrealloc(d->p, sizeof *d->p * (size_t)d->cap);
    }
    dn_prim *p = &d->p[d->n++];
    memset(p, 0, sizeof *p);
    p->dir = dir;
    p->bias = bias;
    p->bf16 = bf16;
    p->s = *s;
    *fresh = 1;
    return p;
}

/* oneDNN's status where a failure is soft (bf16: the caller falls back to fp32) or fatal (fp32) */
static int pd_status(int bf16, dnnl_status_t st, const char *what) {
    if (st == dnnl_success) return 0;
    if (bf16) return -1;
    fprintf(stderr, "mfpipe: oneDNN: %s failed (status %d)\n", what, (int)st);
    abort();
}

/* The cached primitive for (precision, dir, shape, bias), created on first use. fp32: everything float32.
 * bf16: src, weights and diff_dst bf16 (x16_md / y16_md: x and y in bf16, same layout), dst, diff_src,
 * diff_weights and bias float32. ref is set when oneDNN offers only reference code (or, in bf16, no
 * implementation at all) for the shape: the caller then runs other kernels and the primitive is not made.
 * Weights stay OIHW float32 in the parameter buffer: wre reorders them into the primitive's format, or
 * (bwd_filter) the blocked gradient back into OIHW with a sum post-op, where the formats differ. */
static dn_prim *get_prim_dt(mfcpu_dnnl *d, int bf16, int dir, const mf_conv_shape *s, int bias) {
    int fresh;
    dn_prim *p = prim_slot(d, bf16, dir, s, bias, &fresh);
    if (!fresh) return p;
    act_md(&p->x_md, s->n, s->ci, s->h, s->w, s->bx);
    act_md(&p->y_md, s->n, s->co, s->ho, s->wo, s->by);
    if (bf16) {
        act_md_dt(&p->x16_md, s->n, s->ci, s->h, s->w, s->bx, dnnl_bf16);
        act_md_dt(&p->y16_md, s->n, s->co, s->ho, s->wo, s->by, dnnl_bf16);
        p->x16_bytes = dnnl_memory_desc_get_size(&p->x16_md);
        p->y16_bytes = dnnl_memory_desc_get_size(&p->y16_md);
    }
    const dnnl_memory_desc_t *src = bf16 ? &p->x16_md : &p->x_md, *ddst = bf16 ? &p->y16_md : &p->y_md;
    dnnl_dims_t wd = {s->co, s->ci, s->k, s->k}, bd = {s->co};
    dnnl_dims_t str = {s->stride, s->stride}, pl = {s->pad, s->pad};
    dnnl_dims_t pr = {(s->ho - 1) * s->stride + s->k - s->h - s->pad, (s->wo - 1) * s->stride + s->k - s->w - s->pad};
    dnnl_memory_desc_t w_any, w32_any; /* the weights operand; the filter gradient (float32) */
    DN(dnnl_memory_desc_init_by_tag(&w_any, 4, wd, bf16 ? dnnl_bf16 : dnnl_f32, dnnl_format_tag_any));
    DN(dnnl_memory_desc_init_by_tag(&w32_any, 4, wd, dnnl_f32, dnnl_format_tag_any));
    DN(dnnl_memory_desc_init_by_tag(&p->w_user, 4, wd, dnnl_f32, dnnl_oihw));
    DN(dnnl_memory_desc_init_by_tag(&p->b_md, 1, bd, dnnl_f32, dnnl_x));
    dnnl_convolution_desc_t fd, cd;
    DN(dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, dnnl_convolution_direct, src, &w_any,
                                          bias ? &p->b_md : NULL, &p->y_md, str, pl, pr));
    /* scratchpads come from the backend's workspace (user mode), so peak_bytes counts them */
    dnnl_primitive_attr_t sp_attr;
    DN(dnnl_primitive_attr_create(&sp_attr));
    DN(dnnl_primitive_attr_set_scratchpad_mode(sp_attr, dnnl_scratchpad_mode_user));
    dnnl_primitive_desc_t fpd = NULL, pd = NULL;
    dnnl_query_t wq = dnnl_query_weights_md;
    int bad = pd_status(bf16, dnnl_primitive_desc_create(&fpd, &fd, sp_attr, d->eng, NULL), "forward desc");
    if (!bad && dir == DIR_FWD) {
        pd = fpd;
    } else if (!bad && dir == DIR_BWD_DATA) {
        DN(dnnl_convolution_backward_data_desc_init(&cd, dnnl_convolution_direct, &p->x_md, &w_any, ddst, str, pl, pr));
        bad = pd_status(bf16, dnnl_primitive_desc_create(&pd, &cd, sp_attr, d->eng, fpd), "backward-data desc");
    } else if (!bad) {
        DN(dnnl_convolution_backward_weights_desc_init(&cd, dnnl_convolution_direct, src, &w32_any,
                                                       bias ? &p->b_md : NULL, ddst, str, pl, pr));
        bad = pd_status(bf16, dnnl_primitive_desc_create(&pd, &cd, sp_attr, d->eng, fpd), "backward-weights desc");
        wq = dnnl_query_diff_weights_md;
    }
    dnnl_primitive_attr_destroy(sp_attr);
    const char *info = NULL;
    if (!bad) DN(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &info));
    snprintf(p->impl, sizeof p->impl, "%s", bad ? "none" : info ? info : "?");
    p->ref = bad || (info && strncmp(info, "ref", 3) == 0);
    if (!p->ref) {
        p->w_md = *dnnl_primitive_desc_query_md(pd, wq, 0);
        p->w_bytes = dnnl_memory_desc_get_size(&p->w_md);
        p->sp_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        p->sp_bytes = dnnl_memory_desc_get_size(&p->sp_md);
        DN(dnnl_primitive_create(&p->prim, pd));
        if (!dnnl_memory_desc_equal(&p->w_md, &p->w_user)) /* bf16 weights always differ from OIHW f32 */
            p->wre = dir == DIR_BWD_FILTER ? make_reorder(d, &p->w_md, &p->w_user, 1) : make_reorder(d, &p->w_user, &p->w_md, 0);
    }
    if (pd && pd != fpd) dnnl_primitive_desc_destroy(pd);
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    if (getenv("MFPIPE_DNNL_VERBOSE"))
        fprintf(stderr, "mfpipe: oneDNN%s %s n%d %dx%d %d->%d k%d s%d blk %d/%d bias %d: %s%s\n", bf16 ? " bf16" : "",
                dir == DIR_FWD ? "fwd" : dir == DIR_BWD_DATA ? "bwd_data" : "bwd_filter", s->n, s->h, s->w, s->ci,
                s->co, s->k, s->stride, blk(s->bx), blk(s->by), bias, p->impl,
                bf16 && p->ref ? " (not used: fp32)" : "");
    return p;
}
static dn_prim *get_prim(mfcpu_dnnl *d, int dir, const mf_conv_shape *s, int bias) {
    return get_prim_dt(d, 0, dir, s, bias);
}
static dn_prim *get_prim_bf16(mfcpu_dnnl *d, int dir, const mf_conv_shape *s, int bias) {
    return get_prim_dt(d, 1, dir, s, bias);
}

static dnnl_memory_t mem(mfcpu_dnnl *d, const dnnl_memory_desc_t *md, const void *ptr) {
    dnnl_memory_t m;
    DN(dnnl_memory_create(&m, md, d->eng, (void *)ptr));
    return m;
}

static void run(mf_backend *be, dnnl_primitive_t prim, int n, const dnnl_exec_arg_t *args) {
    mfcpu_dnnl *d = mfcpu(be)->dnnl;
    /* oneDNN's OpenMP build uses omp_get_max_threads(): this backend's thread count, whatever other
     * backends of the process set (results are deterministic per thread count) */
    omp_set_num_threads(be->threads);
    DN(dnnl_primitive_execute(prim, d->strm, n, args));
    DN(dnnl_stream_wait(d->strm));
    for (int i = 0; i < n; i++) dnnl_memory_destroy(args[i].memory);
}

/* The weights in the primitive's format: w itself, or a reorder of it into `tmp` (bf16: always). */
static const void *prim_weights(mf_backend *be, mfcpu_dnnl *d, dn_prim *p, const float *w, void *tmp) {
    if (!p->wre) return w;
    dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, mem(d, &p->w_user, w)}, {DNNL_ARG_TO, mem(d, &p->w_md, tmp)}};
    run(be, p->wre, 2, a);
    return tmp;
}

/* dw (OIHW) += gw, the filter gradient in the bwd_filter primitive's format */
static void add_filter_grad(mf_backend *be, mfcpu_dnnl *d, dn_prim *p, const mf_conv_shape *s, const float *gw,
                            float *dw) {
    if (p->wre) {
        dnnl_exec_arg_t r[2] = {{DNNL_ARG_FROM, mem(d, &p->w_md, gw)}, {DNNL_ARG_TO, mem(d, &p->w_user, dw)}};
        run(be, p->wre, 2, r);
    } else {
        const int64_t nw = (int64_t)s->co * s->ci * s->k * s->k;
        for (int64_t i = 0; i < nw; i++) dw[i] += gw[i];
    }
}

static size_t round64(size_t b) { return (b + 63) & ~(size_t)63; }

/* append the scratchpad argument (at sp, inside the workspace) when the primitive has one */
static int scratch_arg(mfcpu_dnnl *d, const dn_prim *p, char *sp, dnnl_exec_arg_t *a, int na) {
    if (p->sp_bytes) a[na++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, mem(d, &p->sp_md, sp)};
    return na;
}

int mfcpu_dnnl_conv2d(mf_backend *be, const mf_conv_shape *s, const float *x, const float *w, const float *bias,
                      float *y) {
    mfcpu_dnnl *d = mfcpu(be)->dnnl;
    if (!d) return -1;
    dn_prim *p = get_prim(d, DIR_FWD, s, bias != NULL);
    if (p->ref) return -1;
    const size_t wb = round64(p->w_bytes);
    char *ws = mfcpu_workspace(be, wb + p->sp_bytes);
    const void *wp = prim_weights(be, d, p, w, ws);
    dnnl_exec_arg_t a[5];
    int na = 0;
    a[na++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, mem(d, &p->x_md, x)};
    a[na++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, mem(d, &p->w_md, wp)};
    a[na++] = (dnnl_exec_arg_t){DNNL_ARG_DST, mem(d, &p->y_md, y)};
    if (bias) a[na++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, mem(d, &p->b_md, bias)};
    na = scratch_arg(d, p, ws + wb, a, na);
    run(be, p->prim, na, a);
    return 0;
}

int mfcpu_dnnl_conv2d_bwd_data(mf_backend *be, const mf_conv_shape *s, const float *dy, const float *w, float *dx,
                               int acc) {
    mfcpu_dnnl *d = mfcpu(be)->dnnl;
    if (!d) return -1;
    dn_prim *p = get_prim(d, DIR_BWD_DATA, s, 0);
    if (p->ref) return -1;
    const int64_t nx = (int64_t)s->n * s->ci * s->h * s->w;
    const size_t wb = round64(p->w_bytes);
    const size_t tb = acc ? round64(sizeof(float) * (size_t)nx) : 0;
    char *ws = mfcpu_workspace(be, wb + tb + p->sp_bytes);
    const void *wp = prim_weights(be, d, p, w, ws);
    float *out = acc ? (float *)(ws + wb) : dx;
    dnnl_exec_arg_t a[4] = {{DNNL_ARG_DIFF_DST, mem(d, &p->y_md, dy)},
                            {DNNL_ARG_WEIGHTS, mem(d, &p->w_md, wp)},
                            {DNNL_ARG_DIFF_SRC, mem(d, &p->x_md, out)}};
    run(be, p->prim, scratch_arg(d, p, ws + wb + tb, a, 3), a);
    if (acc) mfcpu_axpby(be, nx, 1.0f, out, 1.0f, dx);
    return 0;
}

int mfcpu_dnnl_conv2d_bwd_filter(mf_backend *be, const mf_conv_shape *s, const float *x, const float *dy, float *dw,
                                 float *dbias) {
    mfcpu_dnnl *d = mfcpu(be)->dnnl;
    if (!d) return -1;
    dn_prim *p = get_prim(d, DIR_BWD_FILTER, s, dbias != NULL);
    if (p->ref) return -1;
    const size_t wb = round64(p->w_bytes);
    const size_t bb = round64(sizeof(float) * (size_t)s->co);
    char *ws = mfcpu_workspace(be, 2 * wb + bb + p->sp_bytes);
    float *gw = p->wre ? (float *)ws : (float *)(ws + wb); /* the new gradient, in the primitive's layout */
    float *gb = (float *)(ws + 2 * wb);
    dnnl_exec_arg_t a[5];
    int na = 0;
    a[na++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, mem(d, &p->x_md, x)};
    a[na++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_DST, mem(d, &p->y_md, dy)};
    a[na++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_WEIGHTS, mem(d, &p->w_md, gw)};
    if (dbias) a[na++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_BIAS, mem(d, &p->b_md, gb)};
    na = scratch_arg(d, p, ws + 2 * wb + bb, a, na);
    run(be, p->prim, na, a);
    add_filter_grad(be, d, p, s, gw, dw);
    if (dbias)
        for (int o = 0; o < s->co; o++) dbias[o] += gb[o];
    return 0;
}

/* ---- bf16 ------------------------------------------------------------------------------------------ */

/* The weights in the bf16 primitive's format. Once the graph has called params_epoch, the reorder is
 * cached per primitive: made once per (weights, epoch), i.e. once per training step, not once per use;
 * else (direct callers: tests, benchmarks) it is made into dst on every call. */
static const void *weights_bf16(mf_backend *be, mfcpu_dnnl *d, dn_prim *p, const float *w, void *dst) {
    const unsigned ep = mfcpu(be)->pepoch;
    if (ep) {
        if (!p->wc) p->wc = mfcpu_alloc(be, p->w_bytes);
        if (p->wc_src == w && p->wc_epoch == ep) return p->wc;
        dst = p->wc;
        p->wc_src = w;
        p->wc_epoch = ep;
    }
    return prim_weights(be, d, p, w, dst);
}

/* dst = bf16(src) for an activation (n, c, hw) in channel blocks of b (16: nChw16c, 1: NCHW), dst in the
 * same layout. part != NULL: also part[i c + ch] = sum over the pixels of sample i, channel ch, in double
 * (the bias gradient). Work items are (sample, channel block) runs of hw*b floats, fixed slots: the result
 * does not depend on the schedule (mfcpu_to_bf16_span: vectorised with AVX512-BF16). */
static void to_bf16_act(mf_backend *be, int n, int c, int64_t hw, int b, const float *src, uint16_t *dst,
                        double *part) {
    const int nb = c / b;
    const int64_t items = (int64_t)n * nb, len = hw * b;
    const int slots = mfcpu_islots(be, items, len);
    const int simd = mfcpu(be)->bf16_simd;
#pragma omp parallel for num_threads(slots) schedule(static, 1) if (slots > 1)
    for (int sl = 0; sl < slots; sl++) {
        for (int64_t it = mfcpu_split(items, slots, sl); it < mfcpu_split(items, slots, sl + 1); it++) {
            const int64_t i = it / nb, c0 = (it % nb) * b;
            double acc[16];
            mfcpu_to_bf16_span(simd, src + it * len, dst + it * len, len, part ? b : 0, part ? acc : NULL);
            if (part)
                for (int l = 0; l < b; l++) part[i * c + c0 + l] = acc[l];
        }
    }
}

/* x (s->xdt bf16: already bf16, used in place; else converted into buf) */
static const void *x_bf16(mf_backend *be, const mf_conv_shape *s, const float *x, void *buf) {
    if (s->xdt == MF_DT_BF16) return x;
    to_bf16_act(be, s->n, s->ci, (int64_t)s->h * s->w, blk(s->bx), x, buf, NULL);
    return buf;
}

int mfcpu_dnnl_conv2d_bf16(mf_backend *be, const mf_conv_shape *s, const float *x, const float *w,
                           const float *bias, float *y) {
    mfcpu_dnnl *d = mfcpu(be)->dnnl;
    if (!d) return -1;
    dn_prim *p = get_prim_bf16(d, DIR_FWD, s, bias != NULL);
    if (p->ref) return -1;
    const size_t wb = round64(p->w_bytes), xb = s->xdt == MF_DT_BF16 ? 0 : round64(p->x16_bytes);
    char *ws = mfcpu_workspace(be, wb + xb + p->sp_bytes);
    const void *w16 = weights_bf16(be, d, p, w, ws), *x16 = x_bf16(be, s, x, ws + wb);
    dnnl_exec_arg_t a[5];
    int na = 0;
    a[na++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, mem(d, &p->x16_md, x16)};
    a[na++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, mem(d, &p->w_md, w16)};
    a[na++] = (dnnl_exec_arg_t){DNNL_ARG_DST, mem(d, &p->y_md, y)};
    if (bias) a[na++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, mem(d, &p->b_md, bias)};
    na = scratch_arg(d, p, ws + wb + xb, a, na);
    run(be, p->prim, na, a);
    return 0;
}

/* dx (+)= bwd_data(dy16): dy already in bf16 (ws: free workspace from here on) */
static void bwd_data_run(mf_backend *be, mfcpu_dnnl *d, dn_prim *p, const mf_conv_shape *s, const void *dy16,
                         const float *w, float *dx, int acc, char *ws) {
    const int64_t nx = (int64_t)s->n * s->ci * s->h * s->w;
    const size_t wb = round64(p->w_bytes), tb = acc ? round64(sizeof(float) * (size_t)nx) : 0;
    const void *w16 = weights_bf16(be, d, p, w, ws);
    float *out = acc ? (float *)(ws + wb) : dx;
    dnnl_exec_arg_t a[4] = {{DNNL_ARG_DIFF_DST, mem(d, &p->y16_md, dy16)},
                            {DNNL_ARG_WEIGHTS, mem(d, &p->w_md, w16)},
                            {DNNL_ARG_DIFF_SRC, mem(d, &p->x_md, out)}};
    run(be, p->prim, scratch_arg(d, p, ws + wb + tb, a, 3), a);
    if (acc) mfcpu_axpby(be, nx, 1.0f, out, 1.0f, dx);
}
static size_t bwd_data_ws(const dn_prim *p, const mf_conv_shape *s, int acc) {
    const int64_t nx = (int64_t)s->n * s->ci * s->h * s->w;
    return round64(p->w_bytes) + (acc ? round64(sizeof(float) * (size_t)nx) : 0) + p->sp_bytes;
}

int mfcpu_dnnl_conv2d_bwd_data_bf16(mf_backend *be, const mf_conv_shape *s, const float *dy, const float *w,
                                    float *dx, int acc) {
    mfcpu_dnnl *d = mfcpu(be)->dnnl;
    if (!d) return -1;
    dn_prim *p = get_prim_bf16(d, DIR_BWD_DATA, s, 0);
    if (p->ref) return -1;
    const size_t yb = round64(p->y16_bytes);
    char *ws = mfcpu_workspace(be, yb + bwd_data_ws(p, s, acc));
    to_bf16_act(be, s->n, s->co, (int64_t)s->ho * s->wo, blk(s->by), dy, (uint16_t *)ws, NULL);
    bwd_data_run(be, d, p, s, ws, w, dx, acc, ws + yb);
    return 0;
}

/* dw += bwd_filter(x16, dy16), dbias += the per-sample sums part (n x co doubles) */
static void bwd_filter_run(mf_backend *be, mfcpu_dnnl *d, dn_prim *p, const mf_conv_shape *s, const void *x16,
                           const void *dy16, const double *part, float *dw, float *dbias, char *ws) {
    float *gw = (float *)ws;
    dnnl_exec_arg_t a[4] = {{DNNL_ARG_SRC, mem(d, &p->x16_md, x16)},
                            {DNNL_ARG_DIFF_DST, mem(d, &p->y16_md, dy16)},
                            {DNNL_ARG_DIFF_WEIGHTS, mem(d, &p->w_md, gw)}};
    run(be, p->prim, scratch_arg(d, p, ws + round64(p->w_bytes), a, 3), a);
    add_filter_grad(be, d, p, s, gw, dw);
    if (dbias) /* float32 bias gradient: the per-sample sums of dy, added in sample order */
        for (int o = 0; o < s->co; o++) {
            double t = 0;
            for (int i = 0; i < s->n; i++) t += part[(int64_t)i * s->co + o];
            dbias[o] += (float)t;
        }
}

int mfcpu_dnnl_conv2d_bwd_filter_bf16(mf_backend *be, const mf_conv_shape *s, const float *x, const float *dy,
                                      float *dw, float *dbias) {
    mfcpu_dnnl *d = mfcpu(be)->dnnl;
    if (!d) return -1;
    dn_prim *p = get_prim_bf16(d, DIR_BWD_FILTER, s, 0); /* the bias gradient: from to_bf16_act's sums */
    if (p->ref) return -1;
    const size_t xb = s->xdt == MF_DT_BF16 ? 0 : round64(p->x16_bytes), yb = round64(p->y16_bytes);
    const size_t pb = dbias ? round64(sizeof(double) * (size_t)s->n * s->co) : 0;
    char *ws = mfcpu_workspace(be, xb + yb + pb + round64(p->w_bytes) + p->sp_bytes);
    double *part = dbias ? (double *)(ws + xb + yb) : NULL;
    const void *x16 = x_bf16(be, s, x, ws);
    to_bf16_act(be, s->n, s->co, (int64_t)s->ho * s->wo, blk(s->by), dy, (uint16_t *)(ws + xb), part);
    bwd_filter_run(be, d, p, s, x16, ws + xb, part, dw, dbias, ws + xb + yb + pb);
    return 0;
}

/* Both gradients with dy converted once: bwd_filter, then bwd_data, as the two calls would run them. */
int mfcpu_dnnl_conv2d_bwd_bf16(mf_backend *be, const mf_conv_shape *s, const float *x, const float *dy,
                               const float *w, float *dw, float *dbias, float *dx, int acc) {
    mfcpu_dnnl *d = mfcpu(be)->dnnl;
    if (!d) return -1;
    dn_prim *pf = get_prim_bf16(d, DIR_BWD_FILTER, s, 0), *pd = get_prim_bf16(d, DIR_BWD_DATA, s, 0);
    if (pf->ref || pd->ref) return -1;
    const size_t xb = s->xdt == MF_DT_BF16 ? 0 : round64(pf->x16_bytes), yb = round64(pf->y16_bytes);
    const size_t pb = dbias ? round64(sizeof(double) * (size_t)s->n * s->co) : 0;
    const size_t fb = round64(pf->w_bytes) + pf->sp_bytes, db = bwd_data_ws(pd, s, acc);
    char *ws = mfcpu_workspace(be, xb + yb + pb + (fb > db ? fb : db));
    double *part = dbias ? (double *)(ws + xb + yb) : NULL;
    const void *x16 = x_bf16(be, s, x, ws);
    to_bf16_act(be, s->n, s->co, (int64_t)s->ho * s->wo, blk(s->by), dy, (uint16_t *)(ws + xb), part);
    bwd_filter_run(be, d, pf, s, x16, ws + xb, part, dw, dbias, ws + xb + yb + pb);
    bwd_data_run(be, d, pd, s, ws + xb, w, dx, acc, ws + xb + yb + pb);
    return 0;
}

/* 1 when the bf16 forward and filter-gradient kernels of shape s are real ones: x may then be stored
 * in bf16 (conv_bf16_x) */
int mfcpu_dnnl_bf16_x_ok(mf_backend *be, const mf_conv_shape *s) {
    mfcpu_dnnl *d = mfcpu(be)->dnnl;
    if (!d) return 0;
    return !get_prim_bf16(d, DIR_FWD, s, 1)->ref && !get_prim_bf16(d, DIR_BWD_FILTER, s, 0)->ref &&
           !get_prim_bf16(d, DIR_BWD_DATA, s, 0)->ref;
}

static const char *isa_name(dnnl_cpu_isa_t isa) {
    switch ((int)isa) {
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx2: return "avx2";
    default: return "other";
    }
}

int mfcpu_dnnl_bf16_probe(mf_backend *be, char *info, size_t cap) {
    mfcpu_dnnl *d = mfcpu(be)->dnnl;
    if (!d) {
        snprintf(info, cap, "oneDNN is not in use (MFPIPE_CPU_LAYOUT=nchw, or a CPU without AVX-512)");
        return -1;
    }
    const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    if ((isa & dnnl_cpu_isa_avx512_core_bf16) != dnnl_cpu_isa_avx512_core_bf16) {
        snprintf(info, cap, "this CPU has no AVX512-BF16 or AMX (oneDNN's ISA: %s)", isa_name(isa));
        return -1;
    }
    /* one of the UNet's shapes in the three directions: real (non-reference) bf16 kernels for each */
    const mf_conv_shape s = {2, 16, 8, 8, 16, 3, 1, 1, 8, 8, 16, 16, 0, 0};
    const dn_prim *f = get_prim_bf16(d, DIR_FWD, &s, 1), *bd = get_prim_bf16(d, DIR_BWD_DATA, &s, 0),
                  *bw = get_prim_bf16(d, DIR_BWD_FILTER, &s, 0);
    if (f->ref || bd->ref || bw->ref) {
        snprintf(info, cap, "oneDNN has no fast bf16 convolution here (ISA %s: %s / %s / %s)", isa_name(isa),
                 f->impl, bd->impl, bw->impl);
        return -1;
    }
    snprintf(info, cap, "ISA %s; fwd %s, bwd_data %s, bwd_filter %s", isa_name(isa), f->impl, bd->impl, bw->impl);
    return 0;
}

const char *mf_cpu_dnnl_version(void) {
    static char buf[32];
    const dnnl_version_t *v = dnnl_version();
    snprintf(buf, sizeof buf, "oneDNN %d.%d.%d", v->major, v->minor, v->patch);
    return buf;
}

#else /* !MF_HAVE_DNNL */
#include <stdio.h>

int mfcpu_dnnl_init(mf_backend *be) { return -1; }
void mfcpu_dnnl_free(mf_backend *be) {}
int mfcpu_dnnl_conv2d(mf_backend *be, const mf_conv_shape *s, const float *x, const float *w, const float *bias,
                      float *y) {
    return -1;
}
int mfcpu_dnnl_conv2d_bwd_data(mf_backend *be, const mf_conv_shape *s, const float *dy, const float *w, float *dx,
                               int acc) {
    return -1;
}
int mfcpu_dnnl_conv2d_bwd_filter(mf_backend *be, const mf_conv_shape *s, const float *x, const float *dy, float *dw,
                                 float *dbias) {
    return -1;
}
int mfcpu_dnnl_conv2d_bf16(mf_backend *be, const mf_conv_shape *s, const float *x, const float *w,
                           const float *bias, float *y) {
    return -1;
}
int mfcpu_dnnl_conv2d_bwd_data_bf16(mf_backend *be, const mf_conv_shape *s, const float *dy, const float *w,
                                    float *dx, int acc) {
    return -1;
}
int mfcpu_dnnl_conv2d_bwd_filter_bf16(mf_backend *be, const mf_conv_shape *s, const float *x, const float *dy,
                                      float *dw, float *dbias) {
    return -1;
}
int mfcpu_dnnl_conv2d_bwd_bf16(mf_backend *be, const mf_conv_shape *s, const float *x, const float *dy,
                               const float *w, float *dw, float *dbias, float *dx, int acc) {
    return -1;
}
int mfcpu_dnnl_bf16_x_ok(mf_backend *be, const mf_conv_shape *s) { return 0; }
int mfcpu_dnnl_bf16_probe(mf_backend *be, char *info, size_t cap) {
    snprintf(info, cap, "this build has no oneDNN");
    return -1;
}
const char *mf_cpu_dnnl_version(void) { return NULL; }

#endif
