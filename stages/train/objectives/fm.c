/* fm.c - `fm`: flow matching / rectified flow. z_t = (1 - t) x + t eps, the model v(z, t) regresses
 * v = eps - x (or the distilled guided velocity) with the mean squared error. The average-velocity
 * family's machinery with every row at r = t and no weighting. */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "mf_error.h"

static int fm_create(const mf_node *train, mf_unet_cfg *cfg, void **state) {
    obj_family *f = mf_xcalloc(1, sizeof *f);
    *state = f;
    return obj_fm_read(f, train, cfg, "fm");
}

static int fm_setup(void *st, const mf_obj_env *env) { return obj_family_setup(st, env); }
static void fm_prepare(void *st, mf_obj_batch *b) { obj_family_prepare(st, b); }
static int fm_interval(obj_family *f, void *self, const mf_obj_batch *b, const float *vt, float *ut, const float **u) {
    (void)f, (void)self, (void)b, (void)vt, (void)ut, (void)u;
    MF_ASSERT(!"fm has no interval rows");
    return -1;
}
static int fm_step(void *st, const mf_obj_batch *b, mf_obj_result *res) {
    return obj_family_step(st, b, res, fm_interval, NULL);
}
static int fm_collect(void *st, mf_obj_result *res, int64_t *steps) {
    res->n_stats = 0;
    return obj_family_collect(st, res, steps);
}
static size_t fm_bytes(void *st) { return obj_family_act_bytes(st); }
static void fm_destroy(void *st) {
    if (!st) return;
    obj_family_free(st);
    free(st);
}

const mf_objective mf_objective_fm = {
    .name = "fm",
    .summary = "flow matching: v(z_t, t) regresses eps - x (mean squared error)",
    .keys = NULL,
    .time_inputs = 1,
    .tangents = false,
    .create = fm_create,
    .setup = fm_setup,
    .prepare = fm_prepare,
    .loss_and_grads = fm_step,
    .collect = fm_collect,
    .act_bytes = fm_bytes,
    .destroy = fm_destroy,
};
