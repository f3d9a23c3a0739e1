/* test_objectives.c - the training objectives of stages/train/objectives against PyTorch
 * (tests/ref/mf_{meanflow,imeanflow,alphaflow}_tiny.bin, fm_avgvel_tiny.bin: float64 with
 * forward-mode AD) through the real objective code and its memory plan (tangents on, the JVP pass
 * before the backward pass, as training runs them); meanflow with every row at r = t is flow matching
 * (bit for bit); the finite-difference derivative agrees with the JVP; non-finite values are named;
 * prepare() draws t >= r with the configured rows at r = t and drops labels; the AlphaFlow schedule. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mf_config.h"
#include "mf_fixture.h"
#include "mf_graph.h"
#include "mf_test.h"
#include "objective.h"
#include "objectives/common.h"

/* the train-stage keys the objectives read besides their own (train_stage.c has the real table) */
static const mf_key base_keys[] = {
    MF_STR("objective", "fm", "objective"),
    MF_ENUM("time_dist", "uniform", "uniform|logit_normal", "t"),
    MF_FLOAT("time_mu", "0", -10, 10, "mu"),
    MF_FLOAT("time_sigma", "1", 1e-3, 10, "sigma"),
    MF_FLOAT("avgvel.lambda", "0.1", 0, 1e3, "lambda"),
    MF_INT("avgvel.k", "4", 1, 64, "k"),
    MF_KEY_END,
};

typedef struct orun {
    const mf_objective *o;
    void *st;
    mf_node *root;
    mf_backend *be;
    mf_unet_cfg cfg;
    mf_graph tg; /* the parameter layout */
    int B;
    int64_t img, np;
    float *params, *grads, *x, *eps;
} orun;

/* Create objective `name` from the YAML of a train section, on a model cfg (batch B, weights hp). */
static int orun_open(orun *r, const char *name, const char *yaml, mf_unet_cfg cfg, int B, const float *hp) {
    memset(r, 0, sizeof *r);
    r->o = mf_objective_find(name);
    MF_ASSERT(r->o);
    r->root = mf_cfg_parse_string(yaml, "test.yaml");
    if (!r->root) {
        CHECK_MSG(0, "%s\n%s", mf_last_error(), yaml);
        return -1;
    }
    mf_key keys[96];
    int n = 0;
    for (const mf_key *k = base_keys; k->path; k++) keys[n++] = *k;
    for (const mf_key *k = obj_cond_keys; k->path; k++) keys[n++] = *k;
    for (const mf_key *k = r->o->keys; k && k->path; k++) keys[n++] = *k;
    keys[n] = (mf_key)MF_KEY_END;
    mf_node *sec = mf_cfg_find(r->root, "train");
    if (mf_cfg_validate(sec, "train", keys) != 0) {
        CHECK_MSG(0, "%s", mf_last_error());
        return -1;
    }
    mf_unet_cfg c = cfg;
    if (r->o->create(sec, &c, &r->st) != 0) {
        CHECK_MSG(0, "%s", mf_last_error());
        return -1;
    }
    CHECK_MSG(c.null_class == cfg.null_class, "%s: null class %d, the fixture has %d", name, c.null_class, cfg.null_class);
    c.time_inputs = cfg.time_inputs; /* fm on a u(z, r, t) model: the rows pass r = t */
    r->cfg = c;
    r->B = B;
    r->be = mf_cpu_backend_new(2);
    mf_unet tids;
    mf_graph_init(&r->tg, r->be, 1);
    mf_unet_build(&r->tg, &r->cfg, &tids);
    r->np = r->tg.n_param_floats;
    r->img = (int64_t)c.in_ch * c.height * c.width;
    const mf_backend_i *k = r->be->i;
    r->params = k->alloc(r->be, 4 * (size_t)r->np);
    r->grads = k->alloc(r->be, 4 * (size_t)r->np);
    r->x = k->alloc(r->be, 4 * (size_t)(r->img * B));
    r->eps = k->alloc(r->be, 4 * (size_t)(r->img * B));
    k->write(r->be, r->params, hp, 4 * (size_t)r->np);
    mf_obj_env env = {.be = r->be, .cfg = &r->cfg, .batch = B, .steps = 100, .params = r->params, .grads = r->grads};
    if (r->o->setup(r->st, &env) != 0) {
        CHECK_MSG(0, "%s", mf_last_error());
        return -1;
    }
    return 0;
}

static void orun_close(orun *r) {
    r->o->destroy(r->st);
    const mf_backend_i *k = r->be->i;
    k->free(r->be, r->params), k->free(r->be, r->grads), k->free(r->be, r->x), k->free(r->be, r->eps);
    mf_graph_free(&r->tg);
    mf_backend_free(r->be);
    mf_node_free(r->root);
}

/* One loss_and_grads on given data and times; the gradient to host hg (np floats). */
static int orun_step(orun *r, const float *x, const float *eps, float *t, float *rr, int32_t *lab, uint8_t *drop,
                     int64_t step, mf_obj_result *res, float *hg) {
    const mf_backend_i *k = r->be->i;
    k->write(r->be, r->x, x, 4 * (size_t)(r->img * r->B));
    k->write(r->be, r->eps, eps, 4 * (size_t)(r->img * r->B));
    k->fill(r->be, r->grads, 0.0f, r->np);
    mf_obj_batch b = {.n = r->B, .img = r->img, .x = r->x, .eps = r->eps, .t = t, .r = rr, .labels = lab,
                      .dropped = drop, .seed = 1, .step = step};
    memset(res, 0, sizeof *res);
    int rc = r->o->loss_and_grads(r->st, &b, res);
    if (hg) k->read(r->be, hg, r->grads, 4 * (size_t)r->np);
    return rc;
}

static double stat(const mf_obj_result *res, const char *name) {
    for (int i = 0; i < res->n_stats; i++)
        if (strcmp(res->stats[i].name, name) == 0) return res->stats[i].value;
    return NAN;
}

/* params of the fixture in C layout, and the reference gradient */
static int fixture_params(const fixture *f, const mf_graph *g, float *hp, float *ref) {
    int missing = 0;
    for (int i = 0; i < g->n_params; i++) {
        char nm[2][160];
        snprintf(nm[0], sizeof nm[0], "param:%s", g->params[i].name);
        snprintf(nm[1], sizeof nm[1], "grad:%s", g->params[i].name);
        float *dst[2] = {hp, ref};
        for (int q = 0; q < 2; q++) {
            const arr *a = get(f, nm[q]);
            if (!a || a->n != g->params[i].numel) {
                missing++;
                continue;
            }
            if (dst[q]) memcpy(dst[q] + g->params[i].offset, a->v, 4 * (size_t)a->n);
        }
    }
    return missing;
}

static double worst_grad(const mf_graph *g, const float *hg, const float *ref, int64_t np, const char **where) {
    double gmax = 0, worst = 0;
    for (int64_t j = 0; j < np; j++) gmax = fmax(gmax, fabs((double)ref[j]));
    *where = "";
    for (int i = 0; i < g->n_params; i++) {
        double e = rel_err_floor(hg + g->params[i].offset, ref + g->params[i].offset, g->params[i].numel, 1e-3 * gmax);
        if (e > worst) worst = e, *where = g->params[i].name;
    }
    return worst;
}

/* ---- the three MeanFlow-family fixtures ------------------------------------------------------- */
static void run_family_fixture(const char *file) {
    fixture f;
    mf_unet_cfg cfg;
    if (open_fixture(file, &f, &cfg) != 0) return;
    const int B = f.cfg[17];
    const arr *x = get(&f, "x"), *eps = get(&f, "eps"), *t = get(&f, "t"), *r = get(&f, "r");
    const arr *obj = get(&f, "objective"), *red = get(&f, "reduction"), *p = get(&f, "p"), *c = get(&f, "c");
    const arr *neq = get(&f, "n_eq"), *utgt = get(&f, "u_tgt"), *err = get(&f, "err"), *wref = get(&f, "weight");
    const arr *loss = get(&f, "loss"), *lu = get(&f, "loss_unweighted"), *leq = get(&f, "loss_eq");
    const arr *lneq = get(&f, "loss_neq"), *dudt = get(&f, "dudt");
    MF_ASSERT(x && eps && t && r && obj && red && p && c && neq && utgt && err && wref && loss && lu && leq && lneq);
    const int kind = (int)obj->v[0], n_eq = (int)neq->v[0];
    static const char *names[3] = {"meanflow", "imeanflow", "alphaflow"};
    const char *name = names[kind];
    char yaml[1024], extra[256] = "";
    int32_t lab[16] = {0};
    uint8_t drop[16] = {0};
    const bool cond = cfg.num_classes > 0;
    if (cond) {
        const arr *l = get(&f, "labels"), *d = get(&f, "dropped"), *w = get(&f, "w"), *kk = get(&f, "k");
        MF_ASSERT(l && d && w && kk);
        for (int i = 0; i < B; i++) lab[i] = (int32_t)l->v[i], drop[i] = d->v[i] != 0;
        snprintf(extra, sizeof extra, "  class_dropout: 0.1\n  guidance: {w: %.9g, k: %.9g}\n", (double)w->v[0],
                 (double)kk->v[0]);
    }
    if (kind == 2) {
        const arr *a = get(&f, "alpha");
        MF_ASSERT(a);
        size_t l = strlen(extra);
        snprintf(extra + l, sizeof extra - l, "  alphaflow: {schedule: constant, alpha_start: %.9g}\n", (double)a->v[0]);
    }
    snprintf(yaml, sizeof yaml,
             "train:\n  objective: %s\n%s  %s: {flow_ratio: %.9g, weight_p: %.9g, weight_c: %.9g, reduction: %s}\n",
             name, extra, name, (double)n_eq / B, (double)p->v[0], (double)c->v[0], red->v[0] != 0 ? "sum" : "mean");
    /* the alphaflow line above and the family line are both maps under the same key: merge them */
    if (kind == 2)
        snprintf(yaml, sizeof yaml,
                 "train:\n  objective: alphaflow\n  alphaflow: {schedule: constant, alpha_start: %.9g, flow_ratio: %.9g, "
                 "weight_p: %.9g, weight_c: %.9g, reduction: %s}\n",
                 (double)get(&f, "alpha")->v[0], (double)n_eq / B, (double)p->v[0], (double)c->v[0],
                 red->v[0] != 0 ? "sum" : "mean");

    orun o;
    mf_graph lay;
    mf_unet lids;
    mf_backend *tmp = mf_cpu_backend_new(1);
    mf_graph_init(&lay, tmp, 1);
    mf_unet_build(&lay, &cfg, &lids);
    float *hp = calloc((size_t)lay.n_param_floats, 4), *ref = calloc((size_t)lay.n_param_floats, 4);
    CHECK_MSG(fixture_params(&f, &lay, hp, ref) == 0, "%s: parameter arrays missing", file);
    if (orun_open(&o, name, yaml, cfg, B, hp) != 0) return;
    MF_ASSERT(o.np == lay.n_param_floats);
    float tt[16], rr[16], *hg = malloc(4 * (size_t)o.np);
    memcpy(tt, t->v, 4 * (size_t)B), memcpy(rr, r->v, 4 * (size_t)B);
    mf_obj_result res;
    CHECK(orun_step(&o, x->v, eps->v, tt, rr, cond ? lab : NULL, cond ? drop : NULL, 0, &res, hg) == 0);
    obj_family *fam = o.st; /* every family objective's state starts with its obj_family */
    const int64_t n = x->n, d = o.img;
    float *h_ut = malloc(4 * (size_t)n), h_e[16], h_w[16];
    o.be->i->read(o.be, h_ut, fam->UT, 4 * (size_t)n);
    o.be->i->read(o.be, h_e, fam->E, 4 * (size_t)B);
    o.be->i->read(o.be, h_w, fam->W, 4 * (size_t)B);
    /* u_tgt: the interval rows (r = t rows' target is v_tgt, checked through the error) */
    double e_ut = rel_err(h_ut + n_eq * d, utgt->v + n_eq * d, (B - n_eq) * d);
    double e_err = 0, e_w = 0;
    const double norm = red->v[0] != 0 ? 1.0 : (double)d;
    for (int i = 0; i < B; i++) {
        e_err = fmax(e_err, fabs(h_e[i] - err->v[i]) / fabs((double)err->v[i]));
        double w = (double)h_w[i] * B * norm / 2.0;
        e_w = fmax(e_w, fabs(w - wref->v[i]) / fabs((double)wref->v[i]));
    }
    double e_dudt = 0;
    if (dudt) {
        float *h_t = malloc(4 * (size_t)((B - n_eq) * d));
        o.be->i->read(o.be, h_t, fam->TAN, 4 * (size_t)((B - n_eq) * d));
        e_dudt = rel_err(h_t, dudt->v + n_eq * d, (B - n_eq) * d);
        free(h_t);
    }
    double e_loss = fabs(res.loss - loss->v[0]) / fabs((double)loss->v[0]);
    double e_lu = fabs(stat(&res, "loss_unweighted") - lu->v[0]) / lu->v[0];
    double e_leq = fabs(stat(&res, "loss_r_eq_t") - leq->v[0]) / leq->v[0];
    double e_lneq = fabs(stat(&res, "loss_r_lt_t") - lneq->v[0]) / lneq->v[0];
    const char *wn;
    double e_g = worst_grad(&lay, hg, ref, o.np, &wn);
    printf("%s (%s%s): loss %.8f (rel err %.1e), unweighted %.1e, r=t %.1e, r<t %.1e; per-row error %.1e, weight "
           "%.1e; u_tgt %.1e%s; worst gradient %.1e (%s)\n",
           file, name, cond ? ", guided" : "", res.loss, e_loss, e_lu, e_leq, e_lneq, e_err, e_w, e_ut,
           dudt ? "" : " (no JVP)", e_g, wn);
    if (dudt) printf("%s: du/dt (JVP) rel err %.1e\n", file, e_dudt);
    CHECK_MSG(e_loss < 1e-5 && e_lu < 1e-4 && e_leq < 1e-4 && e_lneq < 1e-4, "%s: losses", file);
    CHECK_MSG(e_err < 1e-4 && e_w < 1e-4, "%s: per-row errors and weights", file);
    CHECK_MSG(e_ut < 1e-4, "%s: u_tgt", file);
    CHECK_MSG(e_dudt < 1e-4, "%s: du/dt", file);
    CHECK_MSG(e_g < 1e-4, "%s: gradient of %s", file, wn);
    CHECK(res.nonfinite == NULL);

    if (kind == 0) {
        /* the same training step with a central difference instead of the JVP: close, not equal */
        orun o2;
        char y2[1200];
        snprintf(y2, sizeof y2, "%s", yaml);
        char *q = strstr(y2, "reduction");
        MF_ASSERT(q);
        memmove(q + 46, q, strlen(q) + 1);
        memcpy(q, "derivative: finite_difference, fd_step: 1e-4, ", 46);
        if (orun_open(&o2, name, y2, cfg, B, hp) == 0) {
            float *hg2 = malloc(4 * (size_t)o.np), *h_fd = malloc(4 * (size_t)((B - n_eq) * d));
            memcpy(tt, t->v, 4 * (size_t)B), memcpy(rr, r->v, 4 * (size_t)B);
            CHECK(orun_step(&o2, x->v, eps->v, tt, rr, lab, drop, 0, &res, hg2) == 0);
            o2.be->i->read(o2.be, h_fd, ((obj_family *)o2.st)->TAN, 4 * (size_t)((B - n_eq) * d));
            double e1 = rel_err(h_fd, dudt->v + n_eq * d, (B - n_eq) * d), e2 = worst_grad(&lay, hg2, ref, o.np, &wn);
            printf("%s: finite-difference du/dt (h 1e-4) vs the reference JVP %.1e; gradient %.1e (%s)\n", file, e1, e2, wn);
            CHECK_MSG(e1 < 1e-2 && e1 > 0, "%s: finite difference du/dt %.3g", file, e1);
            CHECK_MSG(e2 < 2e-2, "%s: finite-difference gradient %.3g", file, e2);
            free(hg2), free(h_fd);
            orun_close(&o2);
        }
        /* a non-finite input on an interval row: not an error, but named */
        float *bad = malloc(4 * (size_t)n);
        memcpy(bad, eps->v, 4 * (size_t)n);
        bad[(B - 1) * d + 5] = INFINITY;
        memcpy(tt, t->v, 4 * (size_t)B), memcpy(rr, r->v, 4 * (size_t)B);
        CHECK(orun_step(&o, x->v, bad, tt, rr, lab, drop, 0, &res, NULL) == 0);
        CHECK_MSG(!isfinite(res.loss) && res.nonfinite, "non-finite noise: loss %g, named %s", res.loss,
                  res.nonfinite ? res.nonfinite : "(nothing)");
        printf("%s: an infinite noise value on an interval row: loss %g, named \"%s\"\n", file, res.loss,
               res.nonfinite ? res.nonfinite : "");
        free(bad);
    }
    if (kind == 1) {
        /* meanflow with every row at r = t, p = 0, mean: exactly flow matching (fm on the same model) */
        orun a, b2;
        if (orun_open(&a, "meanflow", "train:\n  objective: meanflow\n  meanflow: {flow_ratio: 1, weight_p: 0, "
                      "reduction: mean}\n", cfg, B, hp) == 0 &&
            orun_open(&b2, "fm", "train:\n  objective: fm\n", cfg, B, hp) == 0) {
            float *ga = malloc(4 * (size_t)o.np), *gb = malloc(4 * (size_t)o.np), ta[16], tb[16];
            memcpy(ta, t->v, 4 * (size_t)B), memcpy(tb, t->v, 4 * (size_t)B);
            mf_obj_result ra, rb;
            CHECK(orun_step(&a, x->v, eps->v, ta, ta, NULL, NULL, 0, &ra, ga) == 0);
            CHECK(orun_step(&b2, x->v, eps->v, tb, tb, NULL, NULL, 0, &rb, gb) == 0);
            printf("meanflow (all rows r = t, p 0, mean) vs fm: loss %.9g vs %.9g; gradients %s\n", ra.loss, rb.loss,
                   memcmp(ga, gb, 4 * (size_t)o.np) == 0 ? "bit-identical" : "DIFFER");
            CHECK(ra.loss == rb.loss && ra.loss > 0);
            CHECK(memcmp(ga, gb, 4 * (size_t)o.np) == 0);
            free(ga), free(gb);
            orun_close(&a), orun_close(&b2);
        }
    }
    if (kind == 2) {
        /* the sigmoid schedule: alpha_start at anneal_begin, alpha_end at anneal_end, the midpoint between */
        orun a;
        if (orun_open(&a, "alphaflow", "train:\n  objective: alphaflow\n  alphaflow: {anneal_begin: 20, anneal_end: 80, "
                      "alpha_end: 0.01}\n", cfg, B, hp) == 0) {
            double al[5];
            int64_t steps[5] = {0, 20, 50, 80, 99};
            for (int i = 0; i < 5; i++) {
                memcpy(tt, t->v, 4 * (size_t)B), memcpy(rr, r->v, 4 * (size_t)B);
                CHECK(orun_step(&a, x->v, eps->v, tt, rr, NULL, NULL, steps[i], &res, NULL) == 0);
                al[i] = stat(&res, "alpha");
            }
            printf("alphaflow sigmoid schedule (20 -> 80): alpha %.4f %.4f %.4f %.4f %.4f at steps 0 20 50 80 99\n",
                   al[0], al[1], al[2], al[3], al[4]);
            CHECK(al[0] == 1.0 && al[1] == 1.0 && fabs(al[2] - 0.505) < 1e-9 && fabs(al[3] - 0.01) < 1e-12 &&
                  al[4] == al[3]);
            orun_close(&a);
        }
    }
    free(hp), free(ref), free(hg), free(h_ut);
    orun_close(&o);
    mf_graph_free(&lay);
    mf_backend_free(tmp);
    fixture_free(&f);
}

/* ---- fm_avgvel through the objective (the same fixture test_ref.c checks pass by pass) ------------ */
int fm_avgvel_step_with_times(void *st, const mf_obj_batch *b, const float *const *tk, mf_obj_result *res);

static void run_avgvel(void) {
    fixture f;
    mf_unet_cfg cfg;
    if (open_fixture("fm_avgvel_tiny.bin", &f, &cfg) != 0) return;
    const int B = f.cfg[17];
    const arr *x = get(&f, "x"), *eps = get(&f, "eps"), *t = get(&f, "t"), *tk = get(&f, "tk");
    const arr *lam = get(&f, "lambda"), *loss = get(&f, "loss"), *l = get(&f, "labels");
    MF_ASSERT(x && eps && t && tk && lam && loss && l);
    const int K = (int)(tk->n / B);
    mf_backend *tmp = mf_cpu_backend_new(1);
    mf_graph lay;
    mf_unet lids;
    mf_graph_init(&lay, tmp, 1);
    mf_unet_build(&lay, &cfg, &lids);
    float *hp = calloc((size_t)lay.n_param_floats, 4), *ref = calloc((size_t)lay.n_param_floats, 4);
    fixture_params(&f, &lay, hp, ref);
    char yaml[256];
    snprintf(yaml, sizeof yaml, "train:\n  objective: fm_avgvel\n  class_dropout: 0\n  avgvel: {lambda: %.9g, k: %d}\n",
             (double)lam->v[0], K);
    orun o;
    if (orun_open(&o, "fm_avgvel", yaml, cfg, B, hp) == 0) {
        const mf_backend_i *k = o.be->i;
        k->write(o.be, o.x, x->v, 4 * (size_t)x->n);
        k->write(o.be, o.eps, eps->v, 4 * (size_t)x->n);
        k->fill(o.be, o.grads, 0.0f, o.np);
        float tt[16], rr[16];
        int32_t lab[16];
        for (int i = 0; i < B; i++) lab[i] = (int32_t)l->v[i];
        memcpy(tt, t->v, 4 * (size_t)B), memcpy(rr, t->v, 4 * (size_t)B);
        const float *tks[8];
        for (int j = 0; j < K; j++) tks[j] = tk->v + (int64_t)j * B;
        uint8_t drop[16] = {0};
        mf_obj_batch b = {.n = B, .img = o.img, .x = o.x, .eps = o.eps, .t = tt, .r = rr, .labels = lab, .dropped = drop};
        mf_obj_result res = {0};
        CHECK(fm_avgvel_step_with_times(o.st, &b, tks, &res) == 0);
        float *hg = malloc(4 * (size_t)o.np);
        k->read(o.be, hg, o.grads, 4 * (size_t)o.np);
        const char *wn;
        double e_g = worst_grad(&lay, hg, ref, o.np, &wn), e_l = fabs(res.loss - loss->v[0]) / loss->v[0];
        printf("fm_avgvel_tiny.bin (objective fm_avgvel): loss rel err %.1e, worst gradient %.1e (%s)\n", e_l, e_g, wn);
        CHECK(e_l < 1e-4 && e_g < 1e-4);
        free(hg);
        orun_close(&o);
    }
    free(hp), free(ref);
    mf_graph_free(&lay);
    mf_backend_free(tmp);
    fixture_free(&f);
}

/* ---- prepare(): times and class dropout ------------------------------------------------------- */
static void run_prepare(void) {
    mf_unet_cfg cfg = {.in_ch = 1, .height = 8, .width = 8, .ch = 4, .n_levels = 1, .mult = {1}, .res_blocks = 1,
                       .groups = 2, .temb_dim = 8, .fourier_half = 2, .time_scale = 1000, .num_classes = 3,
                       .time_inputs = 2, .null_class = 1};
    const int B = 64;
    mf_unet_cfg c0 = cfg;
    c0.num_classes = 3;
    mf_backend *tmp = mf_cpu_backend_new(1);
    mf_graph lay;
    mf_unet lids;
    mf_graph_init(&lay, tmp, 1);
    mf_unet_build(&lay, &cfg, &lids);
    float *hp = calloc((size_t)lay.n_param_floats, 4);
    orun o;
    if (orun_open(&o, "meanflow", "train:\n  objective: meanflow\n  class_dropout: 0.25\n  meanflow: {flow_ratio: 0.75}\n",
                  c0, B, hp) == 0) {
        float t[64], r[64], t2[64], r2[64];
        int32_t lab[64], lab2[64];
        uint8_t drop[64], drop2[64];
        int dropped = 0, bad = 0;
        for (int64_t step = 0; step < 20; step++) {
            for (int i = 0; i < B; i++) lab[i] = i % 3, lab2[i] = i % 3;
            mf_obj_batch b = {.n = B, .img = 64, .t = t, .r = r, .labels = lab, .dropped = drop, .seed = 7, .step = step};
            mf_obj_batch b2 = b;
            b2.t = t2, b2.r = r2, b2.labels = lab2, b2.dropped = drop2;
            o.o->prepare(o.st, &b);
            o.o->prepare(o.st, &b2);
            bad += memcmp(t, t2, sizeof t) != 0 || memcmp(r, r2, sizeof r) != 0 || memcmp(lab, lab2, sizeof lab) != 0;
            for (int i = 0; i < B; i++) {
                bad += !(t[i] > 0 && t[i] < 1 && r[i] > 0 && r[i] <= t[i]);
                bad += i < 48 ? r[i] != t[i] : !(r[i] < t[i]);
                bad += drop[i] ? lab[i] != 3 : lab[i] != i % 3;
                dropped += drop[i];
            }
        }
        double frac = dropped / (20.0 * B);
        printf("prepare: 48 of 64 rows at r = t, t > r elsewhere, deterministic; %.3f of labels dropped (0.25)\n", frac);
        CHECK(bad == 0);
        CHECK(frac > 0.2 && frac < 0.3);
        orun_close(&o);
    }
    free(hp);
    mf_graph_free(&lay);
    mf_backend_free(tmp);
}

int main(void) {
    run_family_fixture("mf_meanflow_tiny.bin");
    run_family_fixture("mf_imeanflow_tiny.bin");
    run_family_fixture("mf_alphaflow_tiny.bin");
    run_avgvel();
    run_prepare();
    return mf_test_summary("test_objectives");
}
