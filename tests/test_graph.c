/* test_graph.c - the whole network against finite differences on tiny configurations: the gradient of
 * every parameter tensor (directional derivatives restricted to that tensor) and the JVP w.r.t. the
 * inputs (z, t[, r]). float32 engine, central differences; tolerances stated below.
 * These graphs are finalized with tangents (need_tan = true); tests/test_plan_grad.c repeats the gradient
 * checks under the plan training uses (gradients only, more buffer sharing). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mf_graph.h"
#include "mf_rng.h"
#include "mf_test.h"
#include "mf_unet.h"

/* Tolerance: |fd - analytic| <= TOL_REL * max(|fd|, |analytic|) + TOL_ABS. With h = 1e-2 on O(1)
 * values, float32 rounding gives ~1e-5/h = 1e-3 noise; curvature error h^2 ~ 1e-4. */
#define TOL_REL 3e-2
#define TOL_ABS 2e-3

static double weighted_sum(mf_graph *g, int out, const float *w, float *host) {
    mf_gnode *o = &g->nodes[out];
    g->be->i->read(g->be, host, o->out, sizeof(float) * (size_t)o->numel);
    double s = 0;
    for (int64_t i = 0; i < o->numel; i++) s += (double)host[i] * w[i];
    return s;
}

static void fill_rand(float *x, int64_t n, uint64_t key, float scale) {
    mf_rng_normal(1234, 99, key, x, n);
    for (int64_t i = 0; i < n; i++) x[i] *= scale;
}

static void check_config(mf_unet_cfg *c, int batch, const char *label) {
    mf_backend *be = mf_cpu_backend_new(2);
    const mf_backend_i *k = be->i;
    mf_graph g;
    mf_unet ids;
    mf_graph_init(&g, be, batch);
    mf_unet_build(&g, c, &ids);
    CHECK(mf_graph_finalize(&g, ids.out, true, true) == 0);
    int64_t np = g.n_param_floats, nx = g.nodes[ids.x].numel, no = g.nodes[ids.out].numel;
    float *hp = malloc(sizeof(float) * (size_t)np), *hp2 = malloc(sizeof(float) * (size_t)np);
    float *hg = malloc(sizeof(float) * (size_t)np), *dir = malloc(sizeof(float) * (size_t)np);
    mf_graph_init_params(&g, 7, hp);
    /* norms not exactly 1/0 so their gradients matter */
    for (int i = 0; i < g.n_params; i++) {
        mf_param *p = &g.params[i];
        if (p->init == MF_INIT_ONE || p->init == MF_INIT_ZERO) {
            fill_rand(hp + p->offset, p->numel, 500 + (uint64_t)i, 0.3f);
            if (p->init == MF_INIT_ONE)
                for (int64_t j = 0; j < p->numel; j++) hp[p->offset + j] += 1.0f;
        }
    }
    float *dp = k->alloc(be, sizeof(float) * (size_t)np), *dg = k->alloc(be, sizeof(float) * (size_t)np);
    float *dw = k->alloc(be, sizeof(float) * (size_t)no);
    k->write(be, dp, hp, sizeof(float) * (size_t)np);
    float *x = malloc(sizeof(float) * (size_t)nx), *t = malloc(sizeof(float) * (size_t)batch);
    float *r = malloc(sizeof(float) * (size_t)batch), *w = malloc(sizeof(float) * (size_t)no);
    float *host = malloc(sizeof(float) * (size_t)no);
    fill_rand(x, nx, 1, 1.0f);
    for (int i = 0; i < batch; i++) {
        t[i] = 0.2f + 0.6f * (float)i / (float)batch;
        r[i] = t[i] * 0.5f;
    }
    fill_rand(w, no, 2, 1.0f);
    int32_t labels[16];
    for (int i = 0; i < batch; i++) labels[i] = i % (c->num_classes > 0 ? c->num_classes : 1);
    mf_graph_set_params(&g, dp);
    mf_graph_set_grads(&g, dg);
    mf_graph_set_labels(&g, labels);
    mf_graph_write_input(&g, ids.x, x);
    mf_graph_write_input(&g, ids.t, t);
    if (ids.r >= 0) mf_graph_write_input(&g, ids.r, r);
    k->write(be, dw, w, sizeof(float) * (size_t)no);

    /* analytic gradient of sum(w * out) */
    mf_graph_forward(&g);
    k->fill(be, dg, 0.0f, np);
    mf_graph_backward(&g, dw);
    k->read(be, hg, dg, sizeof(float) * (size_t)np);

    const double h = 1e-2;
    int bad = 0;
    double worst = 0;
    for (int i = 0; i < g.n_params; i++) {
        mf_param *p = &g.params[i];
        memset(dir, 0, sizeof(float) * (size_t)np);
        fill_rand(dir + p->offset, p->numel, 1000 + (uint64_t)i, 1.0f);
        double an = 0, dn = 0;
        for (int64_t j = 0; j < p->numel; j++) {
            an += (double)hg[p->offset + j] * dir[p->offset + j];
            dn += (double)dir[p->offset + j] * dir[p->offset + j];
        }
        /* normalise the direction so a step of h changes the weights by h in norm */
        double sc = 1.0 / sqrt(dn);
        an *= sc;
        double f[2];
        for (int sgn = 0; sgn < 2; sgn++) {
            for (int64_t j = 0; j < np; j++) hp2[j] = hp[j] + (float)((sgn ? -h : h) * sc) * dir[j];
            k->write(be, dp, hp2, sizeof(float) * (size_t)np);
            mf_graph_forward(&g);
            f[sgn] = weighted_sum(&g, ids.out, w, host);
        }
        double fd = (f[0] - f[1]) / (2 * h);
        double err = fabs(fd - an), lim = TOL_REL * fmax(fabs(fd), fabs(an)) + TOL_ABS;
        if (err / (fmax(fabs(fd), fabs(an)) + 1e-12) > worst && fmax(fabs(fd), fabs(an)) > 1e-3)
            worst = err / fmax(fabs(fd), fabs(an));
        if (err > lim) {
            bad++;
            fprintf(stderr, "%s: grad %s: fd %.6g analytic %.6g\n", label, p->name, fd, an);
        }
    }
    k->write(be, dp, hp, sizeof(float) * (size_t)np);
    printf("%s: %d parameter tensors, worst relative gradient error %.2e\n", label, g.n_params, worst);
    CHECK_MSG(bad == 0, "%s: %d parameter tensors with wrong gradients", label, bad);

    /* JVP along (tz, tt[, tr]) against central differences of the output */
    float *tz = malloc(sizeof(float) * (size_t)nx), *tt = malloc(sizeof(float) * (size_t)batch);
    float *tr = malloc(sizeof(float) * (size_t)batch);
    fill_rand(tz, nx, 3, 1.0f);
    for (int i = 0; i < batch; i++) {
        tt[i] = 1.0f;
        tr[i] = 0.3f;
    }
    float *d_tz = k->alloc(be, sizeof(float) * (size_t)nx), *d_tt = k->alloc(be, sizeof(float) * (size_t)batch);
    float *d_tr = k->alloc(be, sizeof(float) * (size_t)batch);
    k->write(be, d_tz, tz, sizeof(float) * (size_t)nx);
    k->write(be, d_tt, tt, sizeof(float) * (size_t)batch);
    k->write(be, d_tr, tr, sizeof(float) * (size_t)batch);
    int nodes[3] = {ids.x, ids.t, ids.r};
    const float *tans[3] = {d_tz, d_tt, d_tr};
    mf_graph_jvp(&g, ids.r >= 0 ? 3 : 2, nodes, tans);
    float *jv = malloc(sizeof(float) * (size_t)no);
    k->read(be, jv, g.nodes[ids.out].tan, sizeof(float) * (size_t)no);
    const float hj = 1e-3f;
    float *xp = malloc(sizeof(float) * (size_t)nx), *tp = malloc(sizeof(float) * (size_t)batch);
    float *rp = malloc(sizeof(float) * (size_t)batch);
    float *fp = malloc(sizeof(float) * (size_t)no), *fm = malloc(sizeof(float) * (size_t)no);
    for (int sgn = 0; sgn < 2; sgn++) {
        float s = sgn ? -hj : hj;
        for (int64_t j = 0; j < nx; j++) xp[j] = x[j] + s * tz[j];
        for (int i = 0; i < batch; i++) {
            tp[i] = t[i] + s * tt[i];
            rp[i] = r[i] + s * tr[i];
        }
        mf_graph_write_input(&g, ids.x, xp);
        mf_graph_write_input(&g, ids.t, tp);
        if (ids.r >= 0) mf_graph_write_input(&g, ids.r, rp);
        mf_graph_forward(&g);
        k->read(be, sgn ? fm : fp, g.nodes[ids.out].out, sizeof(float) * (size_t)no);
    }
    double num = 0, den = 0;
    for (int64_t j = 0; j < no; j++) {
        double fd = ((double)fp[j] - fm[j]) / (2.0 * hj);
        num += (fd - jv[j]) * (fd - jv[j]);
        den += fd * fd;
    }
    double rel = sqrt(num / (den + 1e-30));
    printf("%s: JVP relative L2 error vs central differences %.2e (tolerance 2e-2)\n", label, rel);
    CHECK_MSG(rel < 2e-2, "%s: JVP relative error %g", label, rel);

    free(xp), free(tp), free(rp), free(fp), free(fm), free(jv), free(tz), free(tt), free(tr);
    k->free(be, d_tz), k->free(be, d_tt), k->free(be, d_tr);
    free(hp), free(hp2), free(hg), free(dir), free(x), free(t), free(r), free(w), free(host);
    k->free(be, dp), k->free(be, dg), k->free(be, dw);
    mf_graph_free(&g);
    mf_backend_free(be);
}

/* One forward, backward and JVP of the UNet on backend `be`; host copies of the output, the parameter
 * gradient and the output tangent (malloc'ed). Same parameters and inputs for any backend. */
static void run_once(mf_backend *be, mf_unet_cfg *c, int batch, float **out, float **grad, float **tan,
                     int64_t *no, int64_t *np_) {
    const mf_backend_i *k = be->i;
    mf_graph g;
    mf_unet ids;
    mf_graph_init(&g, be, batch);
    mf_unet_build(&g, c, &ids);
    CHECK(mf_graph_finalize(&g, ids.out, true, true) == 0);
    int64_t np = g.n_param_floats, nx = g.nodes[ids.x].numel;
    *no = g.nodes[ids.out].numel;
    *np_ = np;
    float *hp = malloc(sizeof(float) * (size_t)np);
    mf_graph_init_params(&g, 11, hp);
    for (int i = 0; i < g.n_params; i++) { /* norms not exactly 1/0 */
        mf_param *p = &g.params[i];
        if (p->init == MF_INIT_ONE || p->init == MF_INIT_ZERO) fill_rand(hp + p->offset, p->numel, 700 + (uint64_t)i, 0.3f);
    }
    float *dp = k->alloc(be, sizeof(float) * (size_t)np), *dg = k->alloc(be, sizeof(float) * (size_t)np);
    float *dw = k->alloc(be, sizeof(float) * (size_t)*no), *dtz = k->alloc(be, sizeof(float) * (size_t)nx);
    float *dtt = k->alloc(be, sizeof(float) * (size_t)batch);
    k->write(be, dp, hp, sizeof(float) * (size_t)np);
    float *x = malloc(sizeof(float) * (size_t)nx), *t = malloc(sizeof(float) * (size_t)batch);
    float *w = malloc(sizeof(float) * (size_t)*no), *tz = malloc(sizeof(float) * (size_t)nx);
    fill_rand(x, nx, 5, 1.0f);
    fill_rand(w, *no, 6, 1.0f);
    fill_rand(tz, nx, 7, 1.0f);
    for (int i = 0; i < batch; i++) t[i] = 0.1f + 0.8f * (float)i / (float)batch;
    int32_t labels[16] = {0};
    mf_graph_set_params(&g, dp);
    mf_graph_set_grads(&g, dg);
    mf_graph_set_labels(&g, labels);
    mf_graph_write_input(&g, ids.x, x);
    mf_graph_write_input(&g, ids.t, t);
    if (ids.r >= 0) mf_graph_write_input(&g, ids.r, t);
    k->write(be, dw, w, sizeof(float) * (size_t)*no);
    k->write(be, dtz, tz, sizeof(float) * (size_t)nx);
    k->write(be, dtt, t, sizeof(float) * (size_t)batch);
    mf_graph_forward(&g);
    *out = malloc(sizeof(float) * (size_t)*no);
    k->read(be, *out, g.nodes[ids.out].out, sizeof(float) * (size_t)*no);
    k->fill(be, dg, 0.0f, np);
    mf_graph_backward(&g, dw);
    *grad = malloc(sizeof(float) * (size_t)np);
    k->read(be, *grad, dg, sizeof(float) * (size_t)np);
    int nodes[2] = {ids.x, ids.t};
    const float *tans[2] = {dtz, dtt};
    mf_graph_jvp(&g, 2, nodes, tans);
    *tan = malloc(sizeof(float) * (size_t)*no);
    k->read(be, *tan, g.nodes[ids.out].tan, sizeof(float) * (size_t)*no);
    k->free(be, dp), k->free(be, dg), k->free(be, dw), k->free(be, dtz), k->free(be, dtt);
    free(hp), free(x), free(t), free(w), free(tz);
    mf_graph_free(&g);
}

static double max_rel(const float *a, const float *b, int64_t n) {
    double e = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs((double)b[i]));
    }
    return m > 0 ? e / m : e;
}

/* The blocked layout (the CPU backend's default with oneDNN) against NCHW (MFPIPE_CPU_LAYOUT=nchw), whose
 * numbers tests/test_ref.c checks against PyTorch: output, every parameter gradient and the JVP. */
static void check_layouts(mf_unet_cfg *c, int batch, const char *label) {
    mf_backend *bb = mf_cpu_backend_new(2);
    setenv("MFPIPE_CPU_LAYOUT", "nchw", 1);
    mf_backend *bn = mf_cpu_backend_new(2);
    unsetenv("MFPIPE_CPU_LAYOUT");
    CHECK(bn->cblock == 0);
    if (bb->cblock == 0) {
        printf("%s: the backend has no blocked layout (built without oneDNN): layout check skipped\n", label);
        mf_backend_free(bb), mf_backend_free(bn);
        return;
    }
    float *o[2], *g[2], *t[2];
    int64_t no, np;
    run_once(bb, c, batch, &o[0], &g[0], &t[0], &no, &np);
    run_once(bn, c, batch, &o[1], &g[1], &t[1], &no, &np);
    double eo = max_rel(o[0], o[1], no), eg = max_rel(g[0], g[1], np), et = max_rel(t[0], t[1], no);
    printf("%s: blocked vs NCHW layout: output %.2e, gradients %.2e, JVP %.2e (tolerance 1e-4)\n", label, eo, eg, et);
    CHECK_MSG(eo < 1e-4 && eg < 1e-4 && et < 1e-4, "%s: layouts disagree", label);
    for (int i = 0; i < 2; i++) free(o[i]), free(g[i]), free(t[i]);
    mf_backend_free(bb), mf_backend_free(bn);
}

int main(void) {
    mf_unet_cfg a = {.in_ch = 1, .height = 8, .width = 8, .ch = 4, .n_levels = 2, .mult = {1, 2}, .res_blocks = 1,
                     .groups = 2, .temb_dim = 8, .fourier_half = 3, .time_scale = 10.0f, .num_classes = 3,
                     .time_inputs = 1};
    check_config(&a, 3, "unet(cond)");
    mf_unet_cfg b = {.in_ch = 3, .height = 8, .width = 8, .ch = 4, .n_levels = 3, .mult = {1, 2, 2}, .res_blocks = 2,
                     .groups = 4, .temb_dim = 8, .fourier_half = 2, .time_scale = 10.0f, .num_classes = 0,
                     .time_inputs = 2};
    check_config(&b, 2, "unet(r,t)");
    /* channel counts that are multiples of 16 (blocked activations, oneDNN convolutions), and a mix of
     * blocked and NCHW tensors (8 and 16 channels, concat of both) */
    mf_unet_cfg d = {.in_ch = 1, .height = 8, .width = 8, .ch = 16, .n_levels = 2, .mult = {1, 2}, .res_blocks = 1,
                     .groups = 8, .temb_dim = 16, .fourier_half = 4, .time_scale = 10.0f, .num_classes = 0,
                     .time_inputs = 2};
    check_config(&d, 2, "unet(ch16, blocked)");
    check_layouts(&d, 3, "unet(ch16)");
    mf_unet_cfg e = {.in_ch = 1, .height = 8, .width = 8, .ch = 8, .n_levels = 3, .mult = {1, 2, 4}, .res_blocks = 1,
                     .groups = 4, .temb_dim = 16, .fourier_half = 4, .time_scale = 10.0f, .num_classes = 3,
                     .time_inputs = 1};
    check_config(&e, 2, "unet(ch8, mixed layouts)");
    check_layouts(&e, 3, "unet(ch8)");
    return mf_test_summary("test_graph");
}
