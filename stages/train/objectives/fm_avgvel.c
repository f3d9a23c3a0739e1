/* fm_avgvel.c - `fm_avgvel`: the seed's flow matching plus lambda times an average-velocity loss,
 *   v_bar = sg(mean_j v(z_{t_j}, t_j)) over K extra times on the same path,
 *   L = L_fm + lambda mean((v(eps, 1) - v_bar)^2)
 * (docs/objectives.md). One graph of the whole batch: K forwards and two backward passes a step. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "mf_error.h"

typedef struct avg_state {
    obj_family f; /* the flow-matching part, and its buffers */
    float lambda;
    int k;
    float *vbar, *E2, *W2; /* backend */
    float *ACC_E2;         /* backend, batch: sum of E2 over deferred steps */
    float *tk;             /* host, batch */
} avg_state;

static int avg_create(const mf_node *train, mf_unet_cfg *cfg, void **state) {
    avg_state *s = mf_xcalloc(1, sizeof *s);
    *state = s;
    obj_family *f = &s->f;
    s->lambda = (float)mf_cfg_float(train, "avgvel.lambda");
    s->k = (int)mf_cfg_int(train, "avgvel.k");
    return obj_fm_read(f, train, cfg, "fm_avgvel");
}

static int avg_setup(void *st, const mf_obj_env *env) {
    avg_state *s = st;
    MF_TRY(obj_family_setup(&s->f, env));
    const mf_backend_i *k = env->be->i;
    s->vbar = k->alloc(env->be, sizeof(float) * (size_t)((int64_t)env->batch * s->f.d));
    s->E2 = k->alloc(env->be, sizeof(float) * (size_t)env->batch);
    s->W2 = k->alloc(env->be, sizeof(float) * (size_t)env->batch);
    s->ACC_E2 = k->alloc(env->be, sizeof(float) * (size_t)env->batch);
    s->tk = mf_xmalloc(sizeof(float) * (size_t)env->batch);
    if (!s->vbar || !s->E2 || !s->W2 || !s->ACC_E2)
        return mf_fail("out of %s memory for the objective's buffers", k->name);
    k->fill(env->be, s->ACC_E2, 0.0f, env->batch);
    return 0;
}

static void avg_prepare(void *st, mf_obj_batch *b) { obj_family_prepare(&((avg_state *)st)->f, b); }

static int no_interval(obj_family *f, void *self, const mf_obj_batch *b, const float *vt, float *ut, const float **u) {
    (void)f, (void)self, (void)b, (void)vt, (void)ut, (void)u;
    MF_ASSERT(!"fm_avgvel has no interval rows");
    return -1;
}

/* The average-velocity term for given extra times tk (K sets of b->n, host): used by the step and by
 * the reference test. Adds its gradient; returns L_avg. */
static double avg_term(avg_state *s, const mf_obj_batch *b, const float *const *tk) { /* NaN when deferred */
    obj_family *f = &s->f;
    mf_backend *be = f->env.be;
    const mf_backend_i *k = be->i;
    const int B = b->n;
    const int64_t n = (int64_t)B * f->d;
    for (int j = 0; j < s->k; j++) {
        for (int i = 0; i < B; i++) f->h_a[i] = 1.0f - tk[j][i], f->h_b[i] = tk[j][i];
        obj_upload(f, f->CA, f->h_a, B);
        obj_upload(f, f->CB, f->h_b, B);
        k->rows_axpby(be, B, f->d, f->CA, b->x, f->CB, b->eps, f->UT);
        const float *v = obj_net_forward(&f->eq, f->UT, tk[j], tk[j], b->labels);
        k->axpby(be, n, 1.0f / (float)s->k, v, j == 0 ? 0.0f : 1.0f, s->vbar);
    }
    /* the velocity at the noise end (t = 1, z_1 = eps) should match v_bar */
    for (int i = 0; i < B; i++) f->h_a[i] = 1.0f;
    const float *u1 = obj_net_forward(&f->eq, b->eps, f->h_a, f->h_a, b->labels);
    obj_rows_loss(be, &f->wt, B, B, f->d, s->lambda, u1, s->vbar, NULL, s->E2, s->W2, f->DO);
    obj_net_backward(&f->eq, f->DO);
    if (b->defer) {
        k->axpby(be, B, 1.0f, s->E2, 1.0f, s->ACC_E2);
        return NAN;
    }
    k->read(be, f->h_e, s->E2, sizeof(float) * (size_t)B);
    double sum = 0;
    for (int i = 0; i < B; i++) sum += f->h_e[i];
    return sum / (double)n;
}

static int avg_step(void *st, const mf_obj_batch *b, mf_obj_result *res) {
    avg_state *s = st;
    res->n_stats = 0;
    MF_TRY(obj_family_step(&s->f, b, res, no_interval, NULL));
    float *tks[64];
    for (int j = 0; j < s->k; j++) {
        tks[j] = mf_xmalloc(sizeof(float) * (size_t)b->n);
        obj_draw_times(&s->f, b->seed, b->step, j + 1, tks[j], b->n);
    }
    double la = avg_term(s, b, (const float *const *)tks);
    for (int j = 0; j < s->k; j++) free(tks[j]);
    res->loss += s->lambda * la;
    res->stats[res->n_stats++] = (mf_obj_stat){"avgvel_loss", la};
    if (!isfinite(res->loss) && !res->nonfinite) res->nonfinite = "loss";
    return 0;
}

static int avg_collect(void *st, mf_obj_result *res, int64_t *steps) {
    avg_state *s = st;
    obj_family *f = &s->f;
    mf_backend *be = f->env.be;
    const int B = f->env.batch;
    res->n_stats = 0;
    MF_TRY(obj_family_collect(f, res, steps));
    be->i->read(be, f->h_e, s->ACC_E2, sizeof(float) * (size_t)B);
    be->i->fill(be, s->ACC_E2, 0.0f, B);
    double sum = 0;
    for (int i = 0; i < B; i++) sum += f->h_e[i];
    const double la = sum / ((double)B * f->d); /* the sum over the steps of each step's L_avg */
    res->loss += s->lambda * la;
    res->stats[res->n_stats++] = (mf_obj_stat){"avgvel_loss", la};
    if (!isfinite(res->loss) && !res->nonfinite) res->nonfinite = "loss";
    return 0;
}
static size_t avg_bytes(void *st) { return obj_family_act_bytes(&((avg_state *)st)->f); }
static void avg_destroy(void *st) {
    avg_state *s = st;
    if (!s) return;
    if (s->f.env.be) {
        mf_backend *be = s->f.env.be;
        be->i->free(be, s->vbar), be->i->free(be, s->E2), be->i->free(be, s->W2), be->i->free(be, s->ACC_E2);
    }
    free(s->tk);
    obj_family_free(&s->f);
    free(s);
}

/* For tests/test_ref.c: the fm_avgvel loss with given extra times (K sets). */
int fm_avgvel_step_with_times(void *st, const mf_obj_batch *b, const float *const *tk, mf_obj_result *res) {
    avg_state *s = st;
    res->n_stats = 0;
    MF_TRY(obj_family_step(&s->f, b, res, no_interval, NULL));
    double la = avg_term(s, b, tk);
    res->loss += s->lambda * la;
    res->stats[res->n_stats++] = (mf_obj_stat){"avgvel_loss", la};
    return 0;
}

const mf_objective mf_objective_fm_avgvel = {
    .name = "fm_avgvel",
    .summary = "the seed's flow matching + lambda * average-velocity loss (train.avgvel.*)",
    .keys = NULL,
    .time_inputs = 1,
    .tangents = false,
    .create = avg_create,
    .setup = avg_setup,
    .prepare = avg_prepare,
    .loss_and_grads = avg_step,
    .collect = avg_collect,
    .act_bytes = avg_bytes,
    .destroy = avg_destroy,
};
