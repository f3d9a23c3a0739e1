/* alphaflow.c - `alphaflow` (Zhang et al. 2025, "AlphaFlow: Understanding and Improving MeanFlow
 * models"): on rows with an interval, with d = alpha (t - r),
 *   u_tgt = sg((d v + (t - d - r) u(z_t - d v, r, t - d)) / (t - r))
 *         = sg(alpha v + (1 - alpha) u(z_t - d v, r, t - d))          (computed so: no division)
 * alpha = 1 is trajectory flow matching, alpha -> 0 MeanFlow; no JVP for alpha > 0. alpha follows a
 * schedule from alpha_start to alpha_end (sigmoid by default) between two steps. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "mf_error.h"

typedef enum { SCHED_SIGMOID, SCHED_LINEAR, SCHED_CONSTANT } alpha_sched;

typedef struct alpha_state {
    obj_family f;
    alpha_sched kind;
    double a0, a1, sharp;
    int64_t begin, end; /* end 0: train.steps */
    double alpha;       /* this step's */
    double alpha_acc;   /* sum over deferred steps since the last collect */
} alpha_state;

static const mf_key alpha_keys[] = {
    OBJ_FAMILY_KEYS("alphaflow", "0.75"),
    MF_ENUM("alphaflow.schedule", "sigmoid", "sigmoid|linear|constant", "alpha from alpha_start to alpha_end"),
    MF_FLOAT("alphaflow.alpha_start", "1.0", 1e-6, 1, "alpha at and before anneal_begin (1: trajectory flow matching)"),
    MF_FLOAT("alphaflow.alpha_end", "5e-3", 1e-6, 1, "alpha at and after anneal_end (towards MeanFlow; > 0: no JVP)"),
    MF_INT("alphaflow.anneal_begin", "0", 0, 1e12, "step where alpha starts to fall"),
    MF_INT("alphaflow.anneal_end", "0", 0, 1e12, "step where alpha reaches alpha_end (0: train.steps)"),
    MF_FLOAT("alphaflow.sharpness", "10", 0.1, 100, "sigmoid schedule: steepness over the annealing interval"),
    MF_KEY_END,
};

static int alpha_create(const mf_node *train, mf_unet_cfg *cfg, void **state) {
    alpha_state *s = mf_xcalloc(1, sizeof *s);
    *state = s;
    const char *k = mf_cfg_str(train, "alphaflow.schedule");
    s->kind = strcmp(k, "linear") == 0 ? SCHED_LINEAR : strcmp(k, "constant") == 0 ? SCHED_CONSTANT : SCHED_SIGMOID;
    s->a0 = mf_cfg_float(train, "alphaflow.alpha_start");
    s->a1 = mf_cfg_float(train, "alphaflow.alpha_end");
    s->begin = mf_cfg_int(train, "alphaflow.anneal_begin");
    s->end = mf_cfg_int(train, "alphaflow.anneal_end");
    s->sharp = mf_cfg_float(train, "alphaflow.sharpness");
    s->f.want_tan = false;
    return obj_family_read(&s->f, train, "alphaflow", cfg);
}

static double sigm(double x) { return 1.0 / (1.0 + exp(-x)); }

/* alpha at step s (0-based) */
double alphaflow_alpha(const alpha_state *s, int64_t step, int64_t steps) {
    if (s->kind == SCHED_CONSTANT) return s->a0;
    int64_t e = s->end > 0 ? s->end : steps;
    if (e <= s->begin) return step < s->begin ? s->a0 : s->a1;
    double p = (double)(step - s->begin) / (double)(e - s->begin);
    p = p < 0 ? 0 : p > 1 ? 1 : p;
    double f = p;
    if (s->kind == SCHED_SIGMOID) {
        double lo = sigm(-s->sharp / 2), hi = sigm(s->sharp / 2);
        f = (sigm(s->sharp * (p - 0.5)) - lo) / (hi - lo);
    }
    return s->a0 + (s->a1 - s->a0) * f;
}

static int alpha_interval(obj_family *f, void *self, const mf_obj_batch *b, const float *vt, float *ut, const float **u) {
    alpha_state *s = self;
    mf_backend *be = f->env.be;
    const mf_backend_i *k = be->i;
    const int ne = f->n_eq, ni = f->n_iv;
    const int64_t off = (int64_t)ne * f->d, sz = (int64_t)ni * f->d;
    const float *t = b->t + ne, *r = b->r + ne;
    const int32_t *lab = b->labels ? b->labels + ne : NULL;
    const float a = (float)s->alpha;
    f->probe = NULL;
    if (a < 1.0f) {
        /* the model at the point d = alpha (t - r) back along v: z_t - d v, time t - d */
        float ts[ni];
        for (int i = 0; i < ni; i++) {
            float dd = a * (t[i] - r[i]);
            f->h_b[i] = -dd;
            ts[i] = t[i] - dd;
        }
        obj_upload(f, f->CB, f->h_b, ni);
        k->rows_axpby(be, ni, f->d, f->ONES, f->Z + off, f->CB, vt, f->AUX);
        const float *us = obj_net_forward(&f->iv, f->AUX, ts, r, lab);
        k->add2(be, sz, a, vt, 1.0f - a, us, ut);
    } else {
        k->copy(be, ut, vt, sizeof(float) * (size_t)sz);
    }
    *u = obj_net_forward(&f->iv, f->Z + off, t, r, lab);
    return 0;
}

static int alpha_setup(void *st, const mf_obj_env *env) { return obj_family_setup(&((alpha_state *)st)->f, env); }
static void alpha_prepare(void *st, mf_obj_batch *b) { obj_family_prepare(&((alpha_state *)st)->f, b); }
static int alpha_step(void *st, const mf_obj_batch *b, mf_obj_result *res) {
    alpha_state *s = st;
    s->alpha = alphaflow_alpha(s, b->step, s->f.env.steps);
    if (b->defer) s->alpha_acc += s->alpha;
    res->n_stats = 0;
    res->stats[res->n_stats++] = (mf_obj_stat){"alpha", s->alpha};
    return obj_family_step(&s->f, b, res, alpha_interval, s);
}
static int alpha_collect(void *st, mf_obj_result *res, int64_t *steps) {
    alpha_state *s = st;
    res->n_stats = 0;
    res->stats[res->n_stats++] = (mf_obj_stat){"alpha", s->alpha_acc};
    s->alpha_acc = 0;
    return obj_family_collect(&s->f, res, steps);
}
static size_t alpha_bytes(void *st) { return obj_family_act_bytes(&((alpha_state *)st)->f); }
static void alpha_destroy(void *st) {
    if (!st) return;
    obj_family_free(&((alpha_state *)st)->f);
    free(st);
}

const mf_objective mf_objective_alphaflow = {
    .name = "alphaflow",
    .summary = "AlphaFlow: u regresses alpha v + (1 - alpha) u(z - d v, r, t - d), no JVP; alpha annealed 1 -> 0",
    .keys = alpha_keys,
    .time_inputs = 2,
    .tangents = false,
    .create = alpha_create,
    .setup = alpha_setup,
    .prepare = alpha_prepare,
    .loss_and_grads = alpha_step,
    .collect = alpha_collect,
    .act_bytes = alpha_bytes,
    .destroy = alpha_destroy,
};
