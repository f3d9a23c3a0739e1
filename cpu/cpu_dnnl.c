/* cpu_dnnl.c - convolutions through oneDNN (Debian's libdnnl, OpenMP build) for activations in the
 * channel-blocked layout nChw16c (see docs/cpu-backend.md, "Layouts"). oneDNN's AVX-512 kernels on
 * blocked tensors are 1.6-5x faster than im2col + GEMM on the MNIST UNet's shapes; on plain NCHW they
 * are not faster, so a convolution whose input and output are both NCHW keeps the im2col path.
 *
 * Primitives are created once per (direction, shape, layouts, bias) and cached in the backend context.
 * Weights stay OIHW in the parameter buffer (checkpoints, optimiser and every other backend see one
 * layout); each call reorders them into the primitive's blocked format in the workspace (a few hundred
 * KiB at most). Filter gradients come out blocked and are reordered back with a sum post-op, so they
 * accumulate as the interface requires. Built only when CMake finds oneDNN (MF_HAVE_DNNL). */
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
    int dir, bias;
    mf_conv_shape s;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t x_md, y_md, w_md, w_user, b_md; /* w_md: the primitive's (diff) weights */
    dnnl_primitive_t wre;  /* weights reorder (OIHW -> w_md, or w_md -> OIHW with sum), NULL if equal */
    size_t w_bytes;        /* bytes of w_md */
    dnnl_memory_desc_t sp_md; /* the primitive's scratchpad, passed from the backend's workspace */
    size_t sp_bytes;
    int ref;               /* oneDNN chose a reference (slow) implementation: not used */
    char impl[64];
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
    }
    free(d->p);
    dnnl_stream_destroy(d->strm);
    dnnl_engine_destroy(d->eng);
    free(d);
    mfcpu(be)->dnnl = NULL;
}

static int blk(int b) { return b > 1 ? b : 1; }

static void act_md(dnnl_memory_desc_t *md, int n, int c, int h, int w, int b) {
    dnnl_dims_t d = {n, c, h, w};
    DN(dnnl_memory_desc_init_by_tag(md, 4, d, dnnl_f32, blk(b) == 16 ? dnnl_nChw16c : dnnl_nchw));
}

static int same_shape(const mf_conv_shape *a, const mf_conv_shape *b) {
    return a->n == b->n && a->ci == b->ci && a->h == b->h && a->w == b->w && a->co == b->co && a->k == b->k &&
           a->stride == b->stride && a->pad == b->pad && blk(a->bx) == blk(b->bx) && blk(a->by) == blk(b->by);
}

static dn_prim *get_prim(mfcpu_dnnl *d, int dir, const mf_conv_shape *s, int bias) {
    for (int i = 0; i < d->n; i++)
        if (d->p[i].dir == dir && d->p[i].bias == bias && same_shape(&d->p[i].s, s)) return &d->p[i];
    if (d->n == d->cap) {
        d->cap = d->cap ? 2 * d->cap : 32;
        d->p = mf_xrealloc(d->p, sizeof *d->p * (size_t)d->cap);
    }
    dn_prim *p = &d->p[d->n++];
    memset(p, 0, sizeof *p);
    p->dir = dir;
    p->bias = bias;
    p->s = *s;
    act_md(&p->x_md, s->n, s->ci, s->h, s->w, s->bx);
    act_md(&p->y_md, s->n, s->co, s->ho, s->wo, s->by);
    dnnl_dims_t wd = {s->co, s->ci, s->k, s->k}, bd = {s->co};
    dnnl_dims_t str = {s->stride, s->stride}, pl = {s->pad, s->pad};
    dnnl_dims_t pr = {(s->ho - 1) * s->stride + s->k - s->h - s->pad, (s->wo - 1) * s->stride + s->k - s->w - s->pad};
    dnnl_memory_desc_t w_any;
    DN(dnnl_memory_desc_init_by_tag(&w_any, 4, wd, dnnl_f32, dnnl_format_tag_any));
    DN(dnnl_memory_desc_init_by_tag(&p->w_user, 4, wd, dnnl_f32, dnnl_oihw));
    DN(dnnl_memory_desc_init_by_tag(&p->b_md, 1, bd, dnnl_f32, dnnl_x));
    dnnl_convolution_desc_t fd, cd;
    DN(dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, dnnl_convolution_direct, &p->x_md, &w_any,
                                          bias ? &p->b_md : NULL, &p->y_md, str, pl, pr));
    /* scratchpads come from the backend's workspace (user mode), so peak_bytes counts them */
    dnnl_primitive_attr_t sp_attr;
    DN(dnnl_primitive_attr_create(&sp_attr));
    DN(dnnl_primitive_attr_set_scratchpad_mode(sp_attr, dnnl_scratchpad_mode_user));
    dnnl_primitive_desc_t fpd, pd;
    DN(dnnl_primitive_desc_create(&fpd, &fd, sp_attr, d->eng, NULL));
    dnnl_query_t wq = dnnl_query_weights_md;
    if (dir == DIR_FWD) {
        pd = fpd;
    } else if (dir == DIR_BWD_DATA) {
        DN(dnnl_convolution_backward_data_desc_init(&cd, dnnl_convolution_direct, &p->x_md, &w_any, &p->y_md, str, pl,
                                                    pr));
        DN(dnnl_primitive_desc_create(&pd, &cd, sp_attr, d->eng, fpd));
    } else {
        DN(dnnl_convolution_backward_weights_desc_init(&cd, dnnl_convolution_direct, &p->x_md, &w_any,
                                                       bias ? &p->b_md : NULL, &p->y_md, str, pl, pr));
        DN(dnnl_primitive_desc_create(&pd, &cd, sp_attr, d->eng, fpd));
        wq = dnnl_query_diff_weights_md;
    }
    const char *info = NULL;
    DN(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &info));
    snprintf(p->impl, sizeof p->impl, "%s", info ? info : "?");
    p->ref = info && strncmp(info, "ref", 3) == 0;
    p->w_md = *dnnl_primitive_desc_query_md(pd, wq, 0);
    p->w_bytes = dnnl_memory_desc_get_size(&p->w_md);
    p->sp_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    p->sp_bytes = dnnl_memory_desc_get_size(&p->sp_md);
    dnnl_primitive_attr_destroy(sp_attr);
    DN(dnnl_primitive_create(&p->prim, pd));
    if (!dnnl_memory_desc_equal(&p->w_md, &p->w_user)) {
        dnnl_primitive_desc_t rpd;
        if (dir == DIR_BWD_FILTER) { /* blocked diff weights -> OIHW, accumulating (dw += ...) */
            dnnl_primitive_attr_t attr;
            dnnl_post_ops_t po;
            DN(dnnl_primitive_attr_create(&attr));
            DN(dnnl_post_ops_create(&po));
            DN(dnnl_post_ops_append_sum(po, 1.0f));
            DN(dnnl_primitive_attr_set_post_ops(attr, po));
            DN(dnnl_reorder_primitive_desc_create(&rpd, &p->w_md, d->eng, &p->w_user, d->eng, attr));
            dnnl_post_ops_destroy(po);
            dnnl_primitive_attr_destroy(attr);
        } else {
            DN(dnnl_reorder_primitive_desc_create(&rpd, &p->w_user, d->eng, &p->w_md, d->eng, NULL));
        }
        DN(dnnl_primitive_create(&p->wre, rpd));
        dnnl_primitive_desc_destroy(rpd);
    }
    if (pd != fpd) dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_desc_destroy(fpd);
    if (getenv("MFPIPE_DNNL_VERBOSE"))
        fprintf(stderr, "mfpipe: oneDNN %s n%d %dx%d %d->%d k%d s%d blk %d/%d bias %d: %s\n",
                dir == DIR_FWD ? "fwd" : dir == DIR_BWD_DATA ? "bwd_data" : "bwd_filter", s->n, s->h, s->w, s->ci,
                s->co, s->k, s->stride, blk(s->bx), blk(s->by), bias, p->impl);
    return p;
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

/* The weights in the primitive's format: w itself, or a reorder of it into `tmp`. */
static const float *prim_weights(mf_backend *be, mfcpu_dnnl *d, dn_prim *p, const float *w, float *tmp) {
    if (!p->wre) return w;
    dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, mem(d, &p->w_user, w)}, {DNNL_ARG_TO, mem(d, &p->w_md, tmp)}};
    run(be, p->wre, 2, a);
    return tmp;
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
    const float *wp = prim_weights(be, d, p, w, (float *)ws);
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
    const float *wp = prim_weights(be, d, p, w, (float *)ws);
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
    if (p->wre) { /* dw += reorder(gw) */
        dnnl_exec_arg_t r[2] = {{DNNL_ARG_FROM, mem(d, &p->w_md, gw)}, {DNNL_ARG_TO, mem(d, &p->w_user, dw)}};
        run(be, p->wre, 2, r);
    } else {
        const int64_t nw = (int64_t)s->co * s->ci * s->k * s->k;
        for (int64_t i = 0; i < nw; i++) dw[i] += gw[i];
    }
    if (dbias)
        for (int o = 0; o < s->co; o++) dbias[o] += gb[o];
    return 0;
}

const char *mf_cpu_dnnl_version(void) {
    static char buf[32];
    const dnnl_version_t *v = dnnl_version();
    snprintf(buf, sizeof buf, "oneDNN %d.%d.%d", v->major, v->minor, v->patch);
    return buf;
}

#else /* !MF_HAVE_DNNL */

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
const char *mf_cpu_dnnl_version(void) { return NULL; }

#endif
