/* meanflow.c - `meanflow` (Geng et al. 2025, "Mean Flows for One-step Generative Modeling"): the
 * model is the average velocity u(z, r, t); on rows with an interval r < t it regresses
 *   u_tgt = sg(v - (t - r) du/dt),  du/dt = JVP of u along (dz, dr, dt) = (v, 0, 1)
 * (forward mode, float32), with the adaptive weight of common.c. `meanflow.derivative:
 * finite_difference` replaces the JVP by a central difference (a cross-check on real training). */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "mf_error.h"

typedef struct mean_state {
    obj_family f;
    bool fd;
    float h;
} mean_state;

static const mf_key mean_keys[] = {
    OBJ_FAMILY_KEYS("meanflow", "0.75"),
    MF_ENUM("meanflow.derivative", "jvp", "jvp|finite_difference",
            "du/dt by forward-mode JVP, or by a central difference (a cross-check, two extra forwards)"),
    MF_FLOAT("meanflow.fd_step", "1e-4", 1e-6, 0.1,
             "finite_difference: step h of (u(z + h v, t + h) - u(z - h v, t - h)) / 2h (small: t enters the "
             "embedding as time_embed.scale * t)"),
    MF_KEY_END,
};

static int mean_create(const mf_node *train, mf_unet_cfg *cfg, void **state) {
    mean_state *s = mf_xcalloc(1, sizeof *s);
    *state = s;
    s->fd = strcmp(mf_cfg_str(train, "meanflow.derivative"), "finite_difference") == 0;
    s->h = (float)mf_cfg_float(train, "meanflow.fd_step");
    s->f.want_tan = !s->fd;
    return obj_family_read(&s->f, train, "meanflow", cfg);
}

/* du/dt of the interval rows into f->TAN: by JVP (then *u is that pass's output) or by central
 * differences (then *u is NULL: the caller still runs the forward at (z, r, t)). Used by imeanflow
 * with its own tangent. */
int meanflow_dudt(obj_family *f, bool fd, float h, const mf_obj_batch *b, const float *tz, const float **u) {
    mf_backend *be = f->env.be;
    const mf_backend_i *k = be->i;
    const int ne = f->n_eq, ni = f->n_iv;
    const int64_t d = f->d, off = (int64_t)ne * d, sz = (int64_t)ni * d;
    const float *t = b->t + ne, *r = b->r + ne;
    const int32_t *lab = b->labels ? b->labels + ne : NULL;
    *u = NULL;
    f->probe = "du/dt (JVP)";
    if (!fd) {
        const float *dudt;
        *u = obj_net_jvp(&f->iv, f->Z + off, t, r, lab, tz, &dudt);
        k->copy(be, f->TAN, dudt, sizeof(float) * (size_t)sz);
        return 0;
    }
    f->probe = "du/dt (finite difference)";
    float tp[ni], tm[ni];
    for (int i = 0; i < ni; i++) tp[i] = t[i] + h, tm[i] = t[i] - h;
    k->add2(be, sz, 1.0f, f->Z + off, h, tz, f->AUX);
    const float *up = obj_net_forward(&f->iv, f->AUX, tp, r, lab);
    k->copy(be, f->TAN, up, sizeof(float) * (size_t)sz);
    k->add2(be, sz, 1.0f, f->Z + off, -h, tz, f->AUX);
    const float *um = obj_net_forward(&f->iv, f->AUX, tm, r, lab);
    k->add2(be, sz, 0.5f / h, f->TAN, -0.5f / h, um, f->TAN);
    return 0;
}

/* u_tgt = vt - (t - r) du/dt (du/dt in f->TAN), rows of the interval graph */
void meanflow_target(obj_family *f, const mf_obj_batch *b, const float *vt, float *ut) {
    const int ne = f->n_eq, ni = f->n_iv;
    for (int i = 0; i < ni; i++) f->h_b[i] = -(b->t[ne + i] - b->r[ne + i]);
    obj_upload(f, f->CB, f->h_b, ni);
    f->env.be->i->rows_axpby(f->env.be, ni, f->d, f->ONES, vt, f->CB, f->TAN, ut);
}

static int mean_interval(obj_family *f, void *self, const mf_obj_batch *b, const float *vt, float *ut, const float **u) {
    mean_state *s = self;
    const int ne = f->n_eq;
    MF_TRY(meanflow_dudt(f, s->fd, s->h, b, vt, u));
    if (!*u) *u = obj_net_forward(&f->iv, f->Z + (int64_t)ne * f->d, b->t + ne, b->r + ne, b->labels ? b->labels + ne : NULL);
    meanflow_target(f, b, vt, ut);
    return 0;
}

static int mean_setup(void *st, const mf_obj_env *env) { return obj_family_setup(&((mean_state *)st)->f, env); }
static void mean_prepare(void *st, mf_obj_batch *b) { obj_family_prepare(&((mean_state *)st)->f, b); }
static int mean_step(void *st, const mf_obj_batch *b, mf_obj_result *res) {
    mean_state *s = st;
    return obj_family_step(&s->f, b, res, mean_interval, s);
}
static int mean_collect(void *st, mf_obj_result *res, int64_t *steps) {
    res->n_stats = 0;
    return obj_family_collect(&((mean_state *)st)->f, res, steps);
}
static size_t mean_bytes(void *st) { return obj_family_act_bytes(&((mean_state *)st)->f); }
static void mean_destroy(void *st) {
    if (!st) return;
    obj_family_free(&((mean_state *)st)->f);
    free(st);
}

const mf_objective mf_objective_meanflow = {
    .name = "meanflow",
    .summary = "MeanFlow: u(z, r, t) regresses sg(v - (t - r) du/dt), du/dt by JVP; adaptive weighting",
    .keys = mean_keys,
    .time_inputs = 2,
    .tangents = true,
    .create = mean_create,
    .setup = mean_setup,
    .prepare = mean_prepare,
    .loss_and_grads = mean_step,
    .collect = mean_collect,
    .act_bytes = mean_bytes,
    .destroy = mean_destroy,
};
