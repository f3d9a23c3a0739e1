/* common.c - shared parts of the training objectives: obj_net (a UNet graph for some rows on the
 * run's parameters), the weighted per-row loss, class dropout and guidance, and the average-velocity
 * family's step (docs/objectives.md). Everything per element runs as backend kernels; the host sees
 * per-row scalars only. */
#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mf_error.h"
#include "mf_rng.h"

/* ---- obj_net --------------------------------------------------------------------------------- */
int obj_net_init(obj_net *nt, const mf_obj_env *env, int rows, bool tan) {
    memset(nt, 0, sizeof *nt);
    nt->rows = rows;
    nt->tan = tan;
    mf_graph_init(&nt->g, env->be, rows);
    mf_unet_build(&nt->g, env->cfg, &nt->ids);
    MF_TRY(mf_graph_finalize(&nt->g, nt->ids.out, true, tan));
    mf_graph_set_params(&nt->g, env->params);
    mf_graph_set_grads(&nt->g, env->grads);
    if (tan) {
        const mf_backend_i *k = env->be->i;
        nt->ones = k->alloc(env->be, sizeof(float) * (size_t)rows);
        if (!nt->ones) return mf_fail("out of %s memory for tangents", k->name);
        k->fill(env->be, nt->ones, 1.0f, rows);
    }
    return 0;
}

void obj_net_free(obj_net *nt) {
    if (nt->g.be && nt->ones) nt->g.be->i->free(nt->g.be, nt->ones);
    mf_graph_free(&nt->g);
    memset(nt, 0, sizeof *nt);
}

static void net_inputs(obj_net *nt, const float *z, const float *t, const float *r, const int32_t *labels) {
    mf_graph *g = &nt->g;
    const mf_gnode *x = &g->nodes[nt->ids.x];
    g->be->i->copy(g->be, x->out, z, sizeof(float) * (size_t)x->numel);
    mf_graph_write_input(g, nt->ids.t, t);
    if (nt->ids.r >= 0) mf_graph_write_input(g, nt->ids.r, r);
    if (nt->ids.labels >= 0) mf_graph_set_labels(g, labels);
}

const float *obj_net_forward(obj_net *nt, const float *z, const float *t, const float *r, const int32_t *labels) {
    net_inputs(nt, z, t, r, labels);
    mf_graph_forward(&nt->g);
    return mf_graph_out(&nt->g, nt->ids.out);
}

const float *obj_net_jvp(obj_net *nt, const float *z, const float *t, const float *r, const int32_t *labels,
                         const float *tz, const float **dout_dt) {
    MF_ASSERT(nt->tan);
    net_inputs(nt, z, t, r, labels);
    const int nodes[2] = {nt->ids.x, nt->ids.t};
    const float *tans[2] = {tz, nt->ones};
    mf_graph_jvp(&nt->g, 2, nodes, tans);
    *dout_dt = nt->g.nodes[nt->ids.out].tan;
    return mf_graph_out(&nt->g, nt->ids.out);
}

void obj_net_backward(obj_net *nt, const float *dout) { mf_graph_backward(&nt->g, dout); }

/* ---- losses ---------------------------------------------------------------------------------- */
void obj_rows_loss(mf_backend *be, const obj_weighting *wt, int batch, int n, int64_t d, float scale, const float *u,
                   const float *tgt, const float *lw, float *E, float *coef, float *dout) {
    const mf_backend_i *k = be->i;
    const double norm = wt->sum ? 1.0 : (double)d;
    k->row_sq_err(be, n, d, u, tgt, E);
    /* coef = scale * 2 / (B norm) * (E / norm + c)^-p = scale * 2 norm^p / (B norm) * (E + c norm)^-p */
    const float s = (float)((double)scale * 2.0 * pow(norm, (double)wt->p) / ((double)batch * norm));
    k->pow_weight(be, n, E, (float)((double)wt->c * norm), wt->p, s, coef);
    if (lw) k->rows_axpby(be, n, 1, lw, coef, NULL, NULL, coef);
    k->add2(be, (int64_t)n * d, 1.0f, u, -1.0f, tgt, dout);
    k->rows_axpby(be, n, d, coef, dout, NULL, NULL, dout);
}

/* ---- class dropout and guidance -------------------------------------------------------------- */
const mf_key obj_cond_keys[] = {
    MF_FLOAT("class_dropout", "0.1", 0, 1,
             "class-conditional models: probability that a row's label is replaced by the learned null class"),
    MF_FLOAT("guidance.w", "1.0", 0, 100,
             "distilled guidance: v_g = w v + (1 - w - k) u(z, t, t | null) + k u(z, t, t | c) (1, 0: off)"),
    MF_FLOAT("guidance.k", "0.0", -100, 100, "distilled guidance: weight k of the conditional prediction"),
    MF_KEY_END,
};

int obj_cond_read(obj_cond *c, const mf_node *train, mf_unet_cfg *cfg, const char *objective) {
    memset(c, 0, sizeof *c);
    c->drop = (float)mf_cfg_float(train, "class_dropout");
    c->w = (float)mf_cfg_float(train, "guidance.w");
    c->k = (float)mf_cfg_float(train, "guidance.k");
    c->ncls = cfg->num_classes;
    bool want = c->w != 1.0f || c->k != 0.0f;
    if (c->ncls == 0) {
        c->drop = 0;
        return 0; /* unconditional: the keys are inert (their defaults are not errors) */
    }
    cfg->null_class = c->drop > 0;
    if (want && c->drop <= 0)
        return mf_fail("train.guidance: guidance needs the null class, which is learned only with "
                       "train.class_dropout > 0");
    if (want && strcmp(objective, "fm_avgvel") == 0)
        return mf_fail("train.guidance: not available with train.objective fm_avgvel");
    c->guided = want;
    return 0;
}

void obj_cond_drop(const obj_cond *c, mf_obj_batch *b) {
    if (!b->labels || c->ncls == 0 || !b->dropped) return;
    if (c->drop <= 0) {
        memset(b->dropped, 0, (size_t)b->n);
        return;
    }
    float u[b->n];
    mf_rng_uniform(b->seed, MF_RNG_CLASS_DROP, (uint64_t)b->step, u, b->n);
    for (int i = 0; i < b->n; i++) {
        b->dropped[i] = u[i] < c->drop;
        if (b->dropped[i]) b->labels[i] = c->ncls;
    }
}

/* ---- the family ------------------------------------------------------------------------------ */
int obj_fm_read(obj_family *f, const mf_node *train, mf_unet_cfg *cfg, const char *objective) {
    f->one_time = true;
    f->ratio = 1.0f;
    f->logit_normal = strcmp(mf_cfg_str(train, "time_dist"), "logit_normal") == 0;
    f->mu = (float)mf_cfg_float(train, "time_mu");
    f->sigma = (float)mf_cfg_float(train, "time_sigma");
    f->wt = (obj_weighting){.p = 0.0f, .c = 1.0f, .sum = false};
    cfg->time_inputs = 1;
    return obj_cond_read(&f->cond, train, cfg, objective);
}

int obj_family_read(obj_family *f, const mf_node *train, const char *sec, mf_unet_cfg *cfg) {
    char key[96];
#define K_(leaf) (snprintf(key, sizeof key, "%s." leaf, sec), key)
    f->ratio = (float)mf_cfg_float(train, K_("flow_ratio"));
    f->logit_normal = strcmp(mf_cfg_str(train, K_("time_dist")), "logit_normal") == 0;
    f->mu = (float)mf_cfg_float(train, K_("time_mu"));
    f->sigma = (float)mf_cfg_float(train, K_("time_sigma"));
    f->wt.p = (float)mf_cfg_float(train, K_("weight_p"));
    f->wt.c = (float)mf_cfg_float(train, K_("weight_c"));
    f->wt.sum = strcmp(mf_cfg_str(train, K_("reduction")), "sum") == 0;
#undef K_
    cfg->time_inputs = 2;
    return obj_cond_read(&f->cond, train, cfg, sec);
}

static float *balloc(obj_family *f, int64_t n, int *fail) {
    float *p = f->env.be->i->alloc(f->env.be, sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!p) *fail = 1;
    return p;
}

int obj_family_setup(obj_family *f, const mf_obj_env *env) {
    f->env = *env;
    const int B = env->batch;
    f->n_eq = f->one_time ? B : (int)lround((double)f->ratio * B);
    if (f->n_eq > B) f->n_eq = B;
    f->n_iv = B - f->n_eq;
    f->d = (int64_t)env->cfg->in_ch * env->cfg->height * env->cfg->width;
    if (f->n_eq > 0) MF_TRY(obj_net_init(&f->eq, env, f->n_eq, false));
    if (f->n_iv > 0) MF_TRY(obj_net_init(&f->iv, env, f->n_iv, f->want_tan));
    int fail = 0;
    const int64_t nb = (int64_t)B * f->d, ni = (int64_t)(f->n_iv > 0 ? f->n_iv : 1) * f->d;
    f->Z = balloc(f, nb, &fail), f->V = balloc(f, nb, &fail), f->UT = balloc(f, nb, &fail);
    f->DO = balloc(f, nb, &fail);
    f->VT = f->cond.guided ? balloc(f, nb, &fail) : NULL;
    f->UN = f->cond.guided ? balloc(f, nb, &fail) : NULL;
    f->UC = f->cond.guided && f->cond.k != 0.0f ? balloc(f, nb, &fail) : NULL;
    f->TAN = balloc(f, ni, &fail), f->AUX = balloc(f, ni, &fail);
    f->E = balloc(f, B, &fail), f->W = balloc(f, B, &fail), f->CA = balloc(f, B, &fail);
    f->CB = balloc(f, B, &fail), f->ONES = balloc(f, B, &fail);
    f->ACC_WE = balloc(f, B, &fail), f->ACC_E = balloc(f, B, &fail), f->LW = balloc(f, B, &fail);
    if (fail) return mf_fail("out of %s memory for the objective's buffers", env->be->i->name);
    env->be->i->fill(env->be, f->ONES, 1.0f, B);
    env->be->i->fill(env->be, f->ACC_WE, 0.0f, B);
    env->be->i->fill(env->be, f->ACC_E, 0.0f, B);
    f->h_a = mf_xmalloc(sizeof(float) * (size_t)B), f->h_b = mf_xmalloc(sizeof(float) * (size_t)B);
    f->h_e = mf_xmalloc(sizeof(float) * (size_t)B), f->h_w = mf_xmalloc(sizeof(float) * (size_t)B);
    f->h_null = mf_xmalloc(sizeof(int32_t) * (size_t)B);
    for (int i = 0; i < B; i++) f->h_null[i] = f->cond.ncls;
    return 0;
}

void obj_upload(obj_family *f, float *dst, const float *host, int n) {
    f->env.be->i->write(f->env.be, dst, host, sizeof(float) * (size_t)n);
}

void obj_draw_times(const obj_family *f, uint64_t seed, int64_t step, int sub, float *t, int n) {
    uint64_t key = (uint64_t)step * 128u + (uint64_t)sub;
    if (!f->logit_normal) {
        mf_rng_uniform(seed, MF_RNG_TIME, key, t, n);
        return;
    }
    mf_rng_normal(seed, MF_RNG_TIME, key, t, n);
    for (int i = 0; i < n; i++) t[i] = 1.0f / (1.0f + expf(-(f->mu + f->sigma * t[i])));
}

void obj_family_prepare(obj_family *f, mf_obj_batch *b) {
    obj_draw_times(f, b->seed, b->step, 0, b->t, b->n);
    if (f->one_time) {
        memcpy(b->r, b->t, sizeof(float) * (size_t)b->n);
    } else {
        float s[b->n];
        obj_draw_times(f, b->seed, b->step, 1, s, b->n);
        for (int i = 0; i < b->n; i++) {
            float hi = b->t[i] > s[i] ? b->t[i] : s[i], lo = b->t[i] > s[i] ? s[i] : b->t[i];
            b->t[i] = hi;
            b->r[i] = i < f->n_eq ? hi : lo;
        }
    }
    obj_cond_drop(&f->cond, b);
}

/* The velocity target of rows [row0, row0 + n) on `net`: v, or the guided v_g (into f->VT). */
static void guided_target(obj_family *f, obj_net *net, const mf_obj_batch *b, int row0, int n) {
    const mf_backend_i *k = f->env.be->i;
    mf_backend *be = f->env.be;
    const int64_t off = (int64_t)row0 * f->d, sz = (int64_t)n * f->d;
    const float *t = b->t + row0;
    const float *un = obj_net_forward(net, f->Z + off, t, t, f->h_null);
    k->copy(be, f->UN + off, un, sizeof(float) * (size_t)sz);
    if (f->UC) {
        const float *uc = obj_net_forward(net, f->Z + off, t, t, b->labels + row0);
        k->copy(be, f->UC + off, uc, sizeof(float) * (size_t)sz);
    }
    /* dropped rows (their label is the null class) keep v */
    for (int i = 0; i < n; i++) {
        bool dr = b->dropped && b->dropped[row0 + i];
        f->h_a[i] = dr ? 1.0f : f->cond.w;
        f->h_b[i] = dr ? 0.0f : 1.0f - f->cond.w - f->cond.k;
    }
    obj_upload(f, f->CA, f->h_a, n);
    obj_upload(f, f->CB, f->h_b, n);
    k->rows_axpby(be, n, f->d, f->CA, f->V + off, f->CB, f->UN + off, f->VT + off);
    if (f->UC) {
        for (int i = 0; i < n; i++) f->h_b[i] = b->dropped && b->dropped[row0 + i] ? 0.0f : f->cond.k;
        obj_upload(f, f->CB, f->h_b, n);
        k->rows_axpby(be, n, f->d, f->ONES, f->VT + off, f->CB, f->UC + off, f->VT + off);
    }
}

static void family_stats(obj_family *f, double loss, const float *e, mf_obj_result *res);

int obj_family_step(obj_family *f, const mf_obj_batch *b, mf_obj_result *res, obj_interval_fn fn, void *self) {
    mf_backend *be = f->env.be;
    const mf_backend_i *k = be->i;
    const int B = b->n, ne = f->n_eq, ni = f->n_iv;
    const int64_t d = f->d, off = (int64_t)ne * d;
    MF_ASSERT(B == f->env.batch && b->img == d);
    /* z = (1 - t) x + t eps, v = eps - x */
    for (int i = 0; i < B; i++) f->h_a[i] = 1.0f - b->t[i], f->h_b[i] = b->t[i];
    obj_upload(f, f->CA, f->h_a, B);
    obj_upload(f, f->CB, f->h_b, B);
    k->rows_axpby(be, B, d, f->CA, b->x, f->CB, b->eps, f->Z);
    k->add2(be, (int64_t)B * d, 1.0f, b->eps, -1.0f, b->x, f->V);
    const float *vt = f->V, *lw = NULL;
    if (b->weights) {
        obj_upload(f, f->LW, b->weights, B);
        lw = f->LW;
    }
    f->probe = NULL;
    /* rows with r = t: flow matching on u(z, t, t) (v(z, t)) */
    if (ne > 0) {
        if (f->cond.guided) guided_target(f, &f->eq, b, 0, ne);
        vt = f->cond.guided ? f->VT : f->V;
        const float *u = obj_net_forward(&f->eq, f->Z, b->t, b->t, b->labels);
        obj_rows_loss(be, &f->wt, B, ne, d, 1.0f, u, vt, lw, f->E, f->W, f->DO);
        obj_net_backward(&f->eq, f->DO);
    }
    /* rows with an interval: the objective's target */
    if (ni > 0) {
        if (f->cond.guided) guided_target(f, &f->iv, b, ne, ni);
        vt = f->cond.guided ? f->VT : f->V;
        const float *u = NULL;
        MF_TRY(fn(f, self, b, vt + off, f->UT + off, &u));
        obj_rows_loss(be, &f->wt, B, ni, d, 1.0f, u, f->UT + off, lw ? lw + ne : NULL, f->E + ne, f->W + ne,
                      f->DO + off);
        obj_net_backward(&f->iv, f->DO + off);
    }
    if (b->defer) {
        /* ACC_WE = W E + ACC_WE, ACC_E += E: read by obj_family_collect */
        k->rows_axpby(be, B, 1, f->W, f->E, f->ONES, f->ACC_WE, f->ACC_WE);
        k->axpby(be, B, 1.0f, f->E, 1.0f, f->ACC_E);
        f->n_deferred++;
        res->loss = NAN;
        res->nonfinite = NULL;
        return 0;
    }
    k->read(be, f->h_e, f->E, sizeof(float) * (size_t)B);
    k->read(be, f->h_w, f->W, sizeof(float) * (size_t)B);
    double loss = 0;
    for (int i = 0; i < B; i++) loss += 0.5 * (double)f->h_w[i] * (double)f->h_e[i];
    family_stats(f, loss, f->h_e, res);
    return 0;
}

/* The family stats of per-row errors E (sums over the steps when deferred) beside the loss; names the
 * first non-finite value on the way when the loss is not finite. */
static void family_stats(obj_family *f, double loss, const float *e, mf_obj_result *res) {
    mf_backend *be = f->env.be;
    const mf_backend_i *k = be->i;
    const int B = f->env.batch, ne = f->n_eq, ni = f->n_iv;
    const int64_t d = f->d, off = (int64_t)ne * d;
    double all = 0, eq = 0, iv = 0;
    for (int i = 0; i < B; i++) {
        all += e[i];
        if (i < ne) eq += e[i];
        else iv += e[i];
    }
    res->loss = loss;
    res->nonfinite = NULL;
    int s = res->n_stats;
    res->stats[s++] = (mf_obj_stat){"loss_unweighted", all / ((double)B * d)};
    if (!f->one_time) {
        res->stats[s++] = (mf_obj_stat){"loss_r_eq_t", ne > 0 ? eq / ((double)ne * d) : NAN};
        res->stats[s++] = (mf_obj_stat){"loss_r_lt_t", ni > 0 ? iv / ((double)ni * d) : NAN};
    }
    res->n_stats = s;
    if (!isfinite(loss)) {
        /* name the first non-finite value on the way: the objective's probe (du/dt), the output, the target */
        if (f->probe && ni > 0 && !isfinite(k->sumsq(be, (int64_t)ni * d, f->TAN))) res->nonfinite = f->probe;
        else if (ni > 0 && !isfinite(k->sumsq(be, (int64_t)ni * d, f->UT + off))) res->nonfinite = "target";
        else res->nonfinite = "loss";
    }
}

int obj_family_collect(obj_family *f, mf_obj_result *res, int64_t *steps) {
    mf_backend *be = f->env.be;
    const mf_backend_i *k = be->i;
    const int B = f->env.batch;
    /* ACC_WE already holds W E: its sum with unit weights is the loss sum */
    k->read(be, f->h_w, f->ACC_WE, sizeof(float) * (size_t)B);
    k->read(be, f->h_e, f->ACC_E, sizeof(float) * (size_t)B);
    double loss = 0;
    for (int i = 0; i < B; i++) loss += 0.5 * (double)f->h_w[i];
    family_stats(f, loss, f->h_e, res);
    *steps = f->n_deferred;
    f->n_deferred = 0;
    k->fill(be, f->ACC_WE, 0.0f, B);
    k->fill(be, f->ACC_E, 0.0f, B);
    return 0;
}

size_t obj_family_act_bytes(const obj_family *f) { return f->eq.g.act_bytes + f->iv.g.act_bytes; }

void obj_family_free(obj_family *f) {
    if (f->env.be) {
        mf_backend *be = f->env.be;
        float *bufs[] = {f->Z,  f->V,  f->VT, f->UN, f->UC,   f->UT,   f->DO,   f->TAN,
                         f->AUX, f->E, f->W,  f->CA, f->CB, f->ONES, f->ACC_WE, f->ACC_E, f->LW};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->i->free(be, bufs[i]);
    }
    obj_net_free(&f->eq);
    obj_net_free(&f->iv);
    free(f->h_a), free(f->h_b), free(f->h_e), free(f->h_w), free(f->h_null);
    memset(f, 0, sizeof *f);
}
