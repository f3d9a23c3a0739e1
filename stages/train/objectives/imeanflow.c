/* imeanflow.c - `imeanflow`, the improved MeanFlow ("iMF"): the loss is on the instantaneous
 * velocity the average velocity implies, V = u(z, r, t) + (t - r) sg(du/dt), against sg(v) (or the
 * guided v_g), with the JVP tangent taken from the model's own velocity prediction
 * vhat = sg(u(z, t, t)) instead of eps - x. V - v = u - (v - (t - r) du/dt): the same number and
 * gradient as regressing u on that target, which is how it is computed. 50% r = t by default. */
#include <stdlib.h>

#include "common.h"
#include "mf_error.h"

static const mf_key imean_keys[] = {
    OBJ_FAMILY_KEYS("imeanflow", "0.5"),
    MF_KEY_END,
};

static int imean_create(const mf_node *train, mf_unet_cfg *cfg, void **state) {
    obj_family *f = mf_xcalloc(1, sizeof *f);
    *state = f;
    f->want_tan = true;
    return obj_family_read(f, train, "imeanflow", cfg);
}

static int imean_interval(obj_family *f, void *self, const mf_obj_batch *b, const float *vt, float *ut, const float **u) {
    (void)self;
    mf_backend *be = f->env.be;
    const int ne = f->n_eq;
    const int64_t off = (int64_t)ne * f->d;
    const int32_t *lab = b->labels ? b->labels + ne : NULL;
    /* the tangent: the model's own velocity at r = t, without gradient */
    const float *vhat = obj_net_forward(&f->iv, f->Z + off, b->t + ne, b->t + ne, lab);
    be->i->copy(be, f->AUX, vhat, sizeof(float) * (size_t)((int64_t)f->n_iv * f->d));
    MF_TRY(meanflow_dudt(f, false, 0.0f, b, f->AUX, u));
    meanflow_target(f, b, vt, ut);
    return 0;
}

static int imean_setup(void *st, const mf_obj_env *env) { return obj_family_setup(st, env); }
static void imean_prepare(void *st, mf_obj_batch *b) { obj_family_prepare(st, b); }
static int imean_step(void *st, const mf_obj_batch *b, mf_obj_result *res) {
    return obj_family_step(st, b, res, imean_interval, NULL);
}
static int imean_collect(void *st, mf_obj_result *res, int64_t *steps) {
    res->n_stats = 0;
    return obj_family_collect(st, res, steps);
}
static size_t imean_bytes(void *st) { return obj_family_act_bytes(st); }
static void imean_destroy(void *st) {
    if (!st) return;
    obj_family_free(st);
    free(st);
}

const mf_objective mf_objective_imeanflow = {
    .name = "imeanflow",
    .summary = "improved MeanFlow: V = u + (t - r) sg(du/dt) regresses v, JVP tangent = the model's own velocity",
    .keys = imean_keys,
    .time_inputs = 2,
    .tangents = true,
    .create = imean_create,
    .setup = imean_setup,
    .prepare = imean_prepare,
    .loss_and_grads = imean_step,
    .collect = imean_collect,
    .act_bytes = imean_bytes,
    .destroy = imean_destroy,
};
