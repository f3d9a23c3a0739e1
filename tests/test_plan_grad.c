/* test_plan_grad.c - gradients under the memory plan that training uses.
 *
 * stages/train/train_loop.c (setup) finalizes the UNet with mf_graph_finalize(&g, out, true, false):
 * gradients, no tangents. Without tangent intervals the plan shares buffers more aggressively than the
 * (true, true) plan that tests/test_graph.c and tests/test_ref.c use. For several tiny configurations
 * (NCHW, blocked and mixed layouts, class-conditional, time_inputs 2) this test checks, on a graph
 * finalized exactly as training does (plus a gradient for the image input):
 *
 *  1. against an UNSHARED copy of the same graph: after finalize, every value, gradient and input
 *     buffer is re-pointed to a private allocation (the gradient pass-through aliases, grad_alias, are
 *     kept: backward relies on them), so nothing is reused. Output, every parameter gradient and the
 *     input gradient must agree (same kernels, same order: expected bit-identical; a buffer reused
 *     too early shows up as an O(1) difference);
 *  2. central finite differences of sum(w * out) w.r.t. a strided subset of the parameter tensors
 *     (direction restricted to the tensor), all parameters at once, and the image input;
 *  3. accumulation: two backward passes without zeroing the gradient buffer give 2 g (same input)
 *     and g_a + g_b (two different inputs); the input gradient is per pass (overwritten, not
 *     accumulated: input gradients live in planned memory).
 *
 * Gradients of the image input: the builder has no call for it; mf_graph.h describes needs_grad as
 * "on a path from a parameter or a grad-requiring input", so the input node's flag is set after
 * building and before finalize (every consumer of x already needs gradients: conv_in). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mf_graph.h"
#include "mf_rng.h"
#include "mf_test.h"
#include "mf_unet.h"

/* Finite-difference tolerance as in tests/test_graph.c: |fd - an| <= TOL_REL * max(|fd|, |an|) +
 * TOL_ABS. The engine is float32: with h = 1e-2 on O(1) outputs summed over a few hundred elements,
 * rounding gives ~1e-5/h = 1e-3 noise, the curvature term is O(h^2) ~ 1e-4. */
#define TOL_REL 3e-2
#define TOL_ABS 2e-3
/* Planned vs unshared graph: the same kernels run on the same values in the same order, so the
 * result should be bit-identical; 1e-6 leaves room only for a kernel whose reduction order depends on
 * buffer alignment. */
#define TOL_PLAN 1e-6
/* Accumulation: a + b rounded once per element (GEMM with beta = 1 may round the partial products
 * differently): a few float32 ulps of the larger term, measured against the tensor's largest value. */
#define TOL_ACC 1e-5

static void fill_rand(float *x, int64_t n, uint64_t key, float scale) {
    mf_rng_normal(4321, 77, key, x, n);
    for (int64_t i = 0; i < n; i++) x[i] *= scale;
}

typedef struct inputs {
    float *x, *t, *r;
    int32_t labels[16];
} inputs;

typedef struct net {
    mf_backend *be;
    mf_graph g;
    mf_unet ids;
    int batch;
    int64_t np, nx, no;
    float *dp, *dg, *dw;
    float **priv; /* private buffers of the unshared copy */
    int n_priv;
} net;

static void net_init(net *m, mf_backend *be, const mf_unet_cfg *c, int batch, const float *hp, const float *w) {
    memset(m, 0, sizeof *m);
    m->be = be;
    m->batch = batch;
    mf_graph_init(&m->g, be, batch);
    mf_unet_build(&m->g, c, &m->ids);
    m->g.nodes[m->ids.x].needs_grad = true; /* d out / d x too */
    CHECK(mf_graph_finalize(&m->g, m->ids.out, true, false) == 0); /* exactly as train_loop.c setup() */
    m->np = m->g.n_param_floats;
    m->nx = m->g.nodes[m->ids.x].numel;
    m->no = m->g.nodes[m->ids.out].numel;
    const mf_backend_i *k = be->i;
    m->dp = k->alloc(be, sizeof(float) * (size_t)m->np);
    m->dg = k->alloc(be, sizeof(float) * (size_t)m->np);
    m->dw = k->alloc(be, sizeof(float) * (size_t)m->no);
    if (hp) k->write(be, m->dp, hp, sizeof(float) * (size_t)m->np);
    if (w) k->write(be, m->dw, w, sizeof(float) * (size_t)m->no);
    mf_graph_set_params(&m->g, m->dp);
    mf_graph_set_grads(&m->g, m->dg);
}

/* Give every value and gradient its own buffer: no reuse at all. */
static void net_unshare(net *m) {
    mf_graph *g = &m->g;
    const mf_backend_i *k = m->be->i;
    m->priv = calloc((size_t)(2 * g->n_nodes), sizeof *m->priv);
    for (int i = 0; i < g->n_nodes; i++) {
        mf_gnode *nd = &g->nodes[i];
        if (nd->out) nd->out = m->priv[m->n_priv++] = k->alloc(m->be, sizeof(float) * (size_t)nd->numel);
        if (nd->grad && nd->grad_alias < 0)
            nd->grad = m->priv[m->n_priv++] = k->alloc(m->be, sizeof(float) * (size_t)nd->numel);
        CHECK(!nd->tan);
    }
    for (int i = g->n_nodes - 1; i >= 0; i--) /* consumers first, as plan_memory does */
        if (g->nodes[i].grad_alias >= 0) g->nodes[i].grad = g->nodes[g->nodes[i].grad_alias].grad;
}

static void net_free(net *m) {
    const mf_backend_i *k = m->be->i;
    for (int i = 0; i < m->n_priv; i++) k->free(m->be, m->priv[i]);
    free(m->priv);
    k->free(m->be, m->dp), k->free(m->be, m->dg), k->free(m->be, m->dw);
    mf_graph_free(&m->g);
}

static void net_inputs(net *m, const inputs *in, const float *x) {
    mf_graph_set_labels(&m->g, in->labels);
    mf_graph_write_input(&m->g, m->ids.x, x ? x : in->x);
    mf_graph_write_input(&m->g, m->ids.t, in->t);
    if (m->ids.r >= 0) mf_graph_write_input(&m->g, m->ids.r, in->r);
}

/* sum(w * out) after a forward at the current inputs */
static double objective(net *m, const float *w, float *host) {
    mf_graph_forward(&m->g);
    m->be->i->read(m->be, host, m->g.nodes[m->ids.out].out, sizeof(float) * (size_t)m->no);
    double s = 0;
    for (int64_t i = 0; i < m->no; i++) s += (double)host[i] * w[i];
    return s;
}

/* forward + backward (no zeroing); host copies of the output, the grads and the input gradient */
static void fwd_bwd(net *m, float *out, float *grad, float *gx) {
    const mf_backend_i *k = m->be->i;
    mf_graph_forward(&m->g);
    if (out) k->read(m->be, out, m->g.nodes[m->ids.out].out, sizeof(float) * (size_t)m->no);
    mf_graph_backward(&m->g, m->dw);
    if (grad) k->read(m->be, grad, m->dg, sizeof(float) * (size_t)m->np);
    if (gx) k->read(m->be, gx, m->g.nodes[m->ids.x].grad, sizeof(float) * (size_t)m->nx);
}

static double max_abs(const float *a, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i]));
    return m;
}

/* max |a - b| / max(max |b|, floor) */
static double rel_diff(const float *a, const float *b, int64_t n, double floor) {
    double e = 0;
    for (int64_t i = 0; i < n; i++) e = fmax(e, fabs((double)a[i] - b[i]));
    return e / fmax(max_abs(b, n), floor > 0 ? floor : 1e-30);
}

/* worst per-parameter-tensor rel_diff(a, b), floored at 1e-3 of the largest |b| of the model */
static double rel_diff_params(const mf_graph *g, const float *a, const float *b, const char **worst_name) {
    double gmax = max_abs(b, g->n_param_floats), worst = 0;
    *worst_name = "";
    for (int i = 0; i < g->n_params; i++) {
        const mf_param *p = &g->params[i];
        double e = rel_diff(a + p->offset, b + p->offset, p->numel, 1e-3 * gmax);
        if (e > worst) worst = e, *worst_name = p->name;
    }
    return worst;
}

static int64_t n_bit_diff(const float *a, const float *b, int64_t n) {
    int64_t d = 0;
    for (int64_t i = 0; i < n; i++) d += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return d;
}

static int fd_check(const char *label, const char *what, double fd, double an, double *worst) {
    double err = fabs(fd - an), mag = fmax(fabs(fd), fabs(an));
    if (mag > 1e-3 && err / mag > *worst) *worst = err / mag;
    if (err <= TOL_REL * mag + TOL_ABS) return 0;
    fprintf(stderr, "%s: %s: finite difference %.6g, backward %.6g\n", label, what, fd, an);
    return 1;
}

static void check_config(mf_backend *be, const mf_unet_cfg *c, int batch, const char *label) {
    const mf_backend_i *k = be->i;
    /* parameters: the builder's initialisation with GroupNorm affine parameters away from 1 / 0 */
    net m;
    net_init(&m, be, c, batch, NULL, NULL);
    float *w0 = malloc(sizeof(float) * (size_t)m.no);
    fill_rand(w0, m.no, 2, 1.0f);
    k->write(be, m.dw, w0, sizeof(float) * (size_t)m.no);
    const int64_t np = m.np, nx = m.nx, no = m.no;
    float *hp = malloc(sizeof(float) * (size_t)np), *hp2 = malloc(sizeof(float) * (size_t)np);
    mf_graph_init_params(&m.g, 7, hp);
    for (int i = 0; i < m.g.n_params; i++) {
        mf_param *p = &m.g.params[i];
        if (p->init == MF_INIT_ONE || p->init == MF_INIT_ZERO) {
            fill_rand(hp + p->offset, p->numel, 500 + (uint64_t)i, 0.3f);
            if (p->init == MF_INIT_ONE)
                for (int64_t j = 0; j < p->numel; j++) hp[p->offset + j] += 1.0f;
        }
    }
    k->write(be, m.dp, hp, sizeof(float) * (size_t)np);
    printf("%s: plan (grad, no tangents) %.1f KiB of %.1f KiB unplanned, %d buffers for %d nodes\n", label,
           (double)m.g.act_bytes / 1024.0, (double)m.g.unplanned_bytes / 1024.0, m.g.n_pool, m.g.n_nodes);
    CHECK_MSG(m.g.act_bytes < m.g.unplanned_bytes, "%s: the plan shares nothing", label);

    /* two batches a and b */
    inputs a, b;
    a.x = malloc(sizeof(float) * (size_t)nx), b.x = malloc(sizeof(float) * (size_t)nx);
    a.t = malloc(sizeof(float) * (size_t)batch), b.t = malloc(sizeof(float) * (size_t)batch);
    a.r = malloc(sizeof(float) * (size_t)batch), b.r = malloc(sizeof(float) * (size_t)batch);
    fill_rand(a.x, nx, 1, 1.0f);
    fill_rand(b.x, nx, 3, 1.0f);
    for (int i = 0; i < batch; i++) {
        a.t[i] = 0.2f + 0.6f * (float)i / (float)batch;
        a.r[i] = 0.5f * a.t[i];
        b.t[i] = 0.9f - 0.5f * (float)i / (float)batch;
        b.r[i] = 0.25f * b.t[i];
        a.labels[i] = i % (c->num_classes > 0 ? c->num_classes : 1);
        b.labels[i] = (i + 1) % (c->num_classes > 0 ? c->num_classes : 1);
    }
    float *w = w0;
    float *host = malloc(sizeof(float) * (size_t)no);
    float *out_p = malloc(sizeof(float) * (size_t)no), *out_u = malloc(sizeof(float) * (size_t)no);
    float *ga = malloc(sizeof(float) * (size_t)np), *gu = malloc(sizeof(float) * (size_t)np);
    float *gb = malloc(sizeof(float) * (size_t)np), *g2 = malloc(sizeof(float) * (size_t)np);
    float *gxa = malloc(sizeof(float) * (size_t)nx), *gxu = malloc(sizeof(float) * (size_t)nx);
    float *gxb = malloc(sizeof(float) * (size_t)nx), *gx2 = malloc(sizeof(float) * (size_t)nx);

    /* planned graph, batch a */
    net_inputs(&m, &a, NULL);
    k->fill(be, m.dg, 0.0f, np);
    fwd_bwd(&m, out_p, ga, gxa);

    /* 1. the unshared copy */
    {
        net u;
        net_init(&u, be, c, batch, hp, w);
        net_unshare(&u);
        net_inputs(&u, &a, NULL);
        k->fill(be, u.dg, 0.0f, np);
        fwd_bwd(&u, out_u, gu, gxu);
        const char *wn;
        double eo = rel_diff(out_p, out_u, no, 0), eg = rel_diff_params(&m.g, ga, gu, &wn);
        double ex = rel_diff(gxa, gxu, nx, 0);
        int64_t bits = n_bit_diff(out_p, out_u, no) + n_bit_diff(ga, gu, np) + n_bit_diff(gxa, gxu, nx);
        printf("%s: planned vs unshared buffers: output %.2e, parameter gradients %.2e (%s), input gradient %.2e; "
               "%lld of %lld values not bit-identical (tolerance %.0e)\n",
               label, eo, eg, wn, ex, (long long)bits, (long long)(no + np + nx), TOL_PLAN);
        CHECK_MSG(eo <= TOL_PLAN && eg <= TOL_PLAN && ex <= TOL_PLAN, "%s: the memory plan changes the result", label);
        net_free(&u);
    }

    /* 2. finite differences on the planned graph (forward passes under the same plan) */
    const double h = 1e-2;
    int bad = 0, n_fd = 0;
    double worst = 0;
    float *dir = malloc(sizeof(float) * (size_t)(np > nx ? np : nx));
    const int last = m.g.n_params - 1, stride = m.g.n_params / 12 > 1 ? m.g.n_params / 12 : 1;
    /* q = -1: all parameters at once; then every stride-th tensor and the last one */
    for (int q = -1;; q = q < 0 ? 0 : (q + stride < last ? q + stride : last)) {
        int64_t off = q < 0 ? 0 : m.g.params[q].offset, cnt = q < 0 ? np : m.g.params[q].numel;
        memset(dir, 0, sizeof(float) * (size_t)np);
        fill_rand(dir + off, cnt, 1000 + (uint64_t)(q + 1), 1.0f);
        double an = 0, dn = 0;
        for (int64_t j = off; j < off + cnt; j++) an += (double)ga[j] * dir[j], dn += (double)dir[j] * dir[j];
        double sc = 1.0 / sqrt(dn), f[2];
        an *= sc; /* unit direction: a step of h changes the weights by h in norm */
        for (int s = 0; s < 2; s++) {
            for (int64_t j = 0; j < np; j++) hp2[j] = hp[j] + (float)((s ? -h : h) * sc) * dir[j];
            k->write(be, m.dp, hp2, sizeof(float) * (size_t)np);
            f[s] = objective(&m, w, host);
        }
        bad += fd_check(label, q < 0 ? "all parameters" : m.g.params[q].name, (f[0] - f[1]) / (2 * h), an, &worst);
        n_fd++;
        if (q == last) break;
    }
    k->write(be, m.dp, hp, sizeof(float) * (size_t)np);
    /* the image input: a few random directions */
    double worst_x = 0;
    float *xp = malloc(sizeof(float) * (size_t)nx);
    for (int d = 0; d < 3; d++) {
        fill_rand(dir, nx, 2000 + (uint64_t)d, 1.0f);
        double an = 0, dn = 0;
        for (int64_t j = 0; j < nx; j++) an += (double)gxa[j] * dir[j], dn += (double)dir[j] * dir[j];
        double sc = 1.0 / sqrt(dn), f[2];
        an *= sc;
        for (int s = 0; s < 2; s++) {
            for (int64_t j = 0; j < nx; j++) xp[j] = a.x[j] + (float)((s ? -h : h) * sc) * dir[j];
            net_inputs(&m, &a, xp);
            f[s] = objective(&m, w, host);
        }
        bad += fd_check(label, "input x", (f[0] - f[1]) / (2 * h), an, &worst_x);
    }
    net_inputs(&m, &a, NULL);
    printf("%s: finite differences: %d parameter directions, worst rel err %.2e; 3 input directions, worst %.2e "
           "(tolerance %.0e + %.0e abs)\n", label, n_fd, worst, worst_x, TOL_REL, TOL_ABS);
    CHECK_MSG(bad == 0, "%s: %d gradients disagree with finite differences", label, bad);

    /* 3. accumulation over two backward passes without zeroing */
    const char *wn2, *wnab;
    k->fill(be, m.dg, 0.0f, np);
    fwd_bwd(&m, NULL, NULL, NULL);
    fwd_bwd(&m, NULL, g2, gx2);
    for (int64_t j = 0; j < np; j++) gu[j] = 2.0f * ga[j]; /* exact in float32 */
    double e2 = rel_diff_params(&m.g, g2, gu, &wn2), ex2 = rel_diff(gx2, gxa, nx, 0);
    net_inputs(&m, &b, NULL);
    k->fill(be, m.dg, 0.0f, np);
    fwd_bwd(&m, NULL, gb, gxb);
    k->fill(be, m.dg, 0.0f, np);
    net_inputs(&m, &a, NULL);
    fwd_bwd(&m, NULL, NULL, NULL);
    net_inputs(&m, &b, NULL);
    fwd_bwd(&m, NULL, g2, gx2);
    for (int64_t j = 0; j < np; j++) gu[j] = (float)((double)ga[j] + gb[j]);
    double eab = rel_diff_params(&m.g, g2, gu, &wnab), exb = rel_diff(gx2, gxb, nx, 0);
    printf("%s: two backward passes: same input vs 2 g %.2e (%s), inputs a then b vs g_a + g_b %.2e (%s); input "
           "gradient is the last pass's: %.2e, %.2e (tolerance %.0e)\n",
           label, e2, wn2, eab, wnab, ex2, exb, TOL_ACC);
    CHECK_MSG(e2 <= TOL_ACC && eab <= TOL_ACC, "%s: gradients do not accumulate over backward passes", label);
    CHECK_MSG(ex2 <= TOL_PLAN && exb <= TOL_PLAN, "%s: input gradient not per pass", label);
    /* and b's gradient really differs from a's (the check above is not vacuous) */
    const char *wd;
    CHECK_MSG(rel_diff_params(&m.g, gb, ga, &wd) > 1e-2, "%s: batches a and b give the same gradient", label);

    free(a.x), free(b.x), free(a.t), free(b.t), free(a.r), free(b.r);
    free(host), free(out_p), free(out_u), free(ga), free(gu), free(gb), free(g2), free(gxa), free(gxu), free(gxb),
        free(gx2), free(dir), free(xp), free(hp), free(hp2), free(w0);
    net_free(&m);
}

int main(void) {
    mf_backend *be = mf_cpu_backend_new(2);
    setenv("MFPIPE_CPU_LAYOUT", "nchw", 1);
    mf_backend *bn = mf_cpu_backend_new(2);
    unsetenv("MFPIPE_CPU_LAYOUT");
    /* class-conditional, NCHW (4 and 8 channels) */
    mf_unet_cfg a = {.in_ch = 1, .height = 8, .width = 8, .ch = 4, .n_levels = 2, .mult = {1, 2}, .res_blocks = 1,
                     .groups = 2, .temb_dim = 8, .fourier_half = 3, .time_scale = 10.0f, .num_classes = 3,
                     .time_inputs = 1};
    check_config(be, &a, 3, "plan(cond)");
    /* time_inputs 2, three levels, two blocks per level (skip convs, several concat widths) */
    mf_unet_cfg b = {.in_ch = 2, .height = 8, .width = 8, .ch = 4, .n_levels = 3, .mult = {1, 2, 2}, .res_blocks = 2,
                     .groups = 4, .temb_dim = 8, .fourier_half = 2, .time_scale = 10.0f, .num_classes = 0,
                     .time_inputs = 2};
    check_config(be, &b, 2, "plan(r,t)");
    /* multiples of 16 channels: blocked activations and oneDNN convolutions (when the backend has them),
     * and the same network in NCHW */
    mf_unet_cfg d = {.in_ch = 1, .height = 8, .width = 8, .ch = 16, .n_levels = 2, .mult = {1, 2}, .res_blocks = 1,
                     .groups = 8, .temb_dim = 16, .fourier_half = 4, .time_scale = 10.0f, .num_classes = 0,
                     .time_inputs = 2};
    if (be->cblock == 0) printf("the backend has no blocked layout (built without oneDNN): blocked configs run in NCHW\n");
    check_config(be, &d, 2, "plan(ch16, blocked)");
    check_config(bn, &d, 2, "plan(ch16, nchw)");
    /* mixed layouts: 8 (NCHW), 16 and 32 (blocked) channels, concats of both, class-conditional */
    mf_unet_cfg e = {.in_ch = 1, .height = 8, .width = 8, .ch = 8, .n_levels = 3, .mult = {1, 2, 4}, .res_blocks = 1,
                     .groups = 4, .temb_dim = 16, .fourier_half = 4, .time_scale = 10.0f, .num_classes = 3,
                     .time_inputs = 1};
    check_config(be, &e, 2, "plan(ch8, mixed layouts, cond)");
    mf_backend_free(be);
    mf_backend_free(bn);
    return mf_test_summary("test_plan_grad");
}
