/* ema_stage.c - the `ema` stage: an exponential moving average of the training weights, updated on
 * every "train.step" event, checkpointed with the model; sampling and evaluation use it by default.
 * With warm-up (the default) the decay at step n is min(decay, (1 + n) / (10 + n)), so a short run
 * does not keep most of the random initial weights (a plain 0.999 keeps 22% of them after 1500 steps). */
#include <stdlib.h>
#include <string.h>

#include "mf_hooks.h"
#include "mf_json.h"
#include "mf_log.h"
#include "mf_model.h"
#include "mf_optim.h"
#include "mf_stage.h"

typedef struct ema_state {
    double decay;
    int warmup;
    int64_t start;   /* first step that updates the average (before: copy) */
    float *buf;      /* registered in the model; freed with it */
    double last_decay;
} ema_state;

static const mf_key ema_keys[] = {
    MF_FLOAT("decay", "0.999", 0, 1, "EMA decay per step"),
    MF_BOOL("warmup", "true", "ramp the decay as min(decay, (1+n)/(10+n)) at step n"),
    MF_INT("start_step", "0", 0, 1e9, "steps before this one copy the weights instead of averaging"),
    MF_KEY_END,
};

static int on_begin(void *user, mf_run *run, const char *event, const void *payload) {
    ema_state *e = user;
    const mf_train_event *ev = payload;
    mf_model *m = ev->model;
    mf_backend *be = m->be;
    e->buf = be->i->alloc(be, sizeof(float) * (size_t)m->n_params);
    if (!e->buf) return mf_fail("ema: out of memory (%lld floats)", (long long)m->n_params);
    be->i->copy(be, e->buf, m->params, sizeof(float) * (size_t)m->n_params);
    MF_TRY(mf_model_register_state(m, "ema", e->buf, m->n_params)); /* checkpointed; loaded on resume */
    m->ema = e->buf;
    return 0;
}

static int on_step(void *user, mf_run *run, const char *event, const void *payload) {
    (void)event;
    ema_state *e = user;
    const mf_train_event *ev = payload;
    mf_model *m = ev->model;
    double d = ev->step <= e->start ? 0.0 : mf_ema_decay_at(e->decay, e->warmup != 0, ev->step - e->start);
    /* the Lua ema_decay(step) hook replaces the decay and its warm-up (not start_step's copies) */
    mf_hooks *h = mf_run_hooks(run);
    if (ev->step > e->start && mf_hooks_has(h, MF_HOOK_EMA_DECAY)) MF_TRY(mf_hooks_ema_decay(h, ev->step, &d));
    m->be->i->ema(m->be, m->n_params, e->buf, m->params, (float)d);
    e->last_decay = d;
    return 0;
}

static int ema_create(mf_run *run, const char *instance, const mf_node *sec, void **state) {
    ema_state *e = mf_xcalloc(1, sizeof *e);
    *state = e;
    e->decay = mf_cfg_float(sec, "decay");
    e->warmup = mf_cfg_bool(sec, "warmup");
    e->start = mf_cfg_int(sec, "start_step");
    MF_TRY(mf_event_subscribe(run, "train.begin", on_begin, e));
    MF_TRY(mf_event_subscribe(run, "train.step", on_step, e));
    return 0;
}

static int ema_run(void *state, mf_run *run) {
    ema_state *e = state;
    if (!e->buf) return mf_fail("no training ran before the ema stage: put it after 'train' in stages");
    mf_buf b = {0};
    mf_json_num(&b, "final_decay", e->last_decay);
    int rc = mf_metrics_append(run, "ema", b.s);
    mf_buf_free(&b);
    mf_info("ema: final decay %.6f", e->last_decay);
    return rc;
}

static void ema_destroy(void *state) { free(state); }

static const mf_stage_api ema_api = {
    .abi_version = MF_STAGE_ABI_VERSION,
    .struct_size = sizeof(mf_stage_api),
    .kind = "ema",
    .summary = "exponential moving average of the weights (with decay warm-up), used for sampling",
    .keys = ema_keys,
    .create = ema_create,
    .run = ema_run,
    .destroy = ema_destroy,
};

MF_STAGE_PLUGIN(ema_api)
