/* train_loop.c - the training loop of the `train` stage: batches, objectives, optimizer, schedule,
 * events for EMA, logging, sample grids, checkpoints and resume. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mf_checkpoint.h"
#include "mf_dataset.h"
#include "mf_export.h"
#include "mf_hooks.h"
#include "mf_io.h"
#include "mf_json.h"
#include "mf_log.h"
#include "mf_rng.h"
#include "mf_stage.h"
#include "train_internal.h"

int train_read_config(train_state *s, const mf_node *t, const mf_node *m) {
    mf_unet_cfg *c = &s->cfg;
    c->ch = (int)mf_cfg_int(m, "channels");
    long long mult[MF_UNET_MAX_LEVELS + 1];
    int nl = mf_cfg_ints(m, "channel_mult", mult, MF_UNET_MAX_LEVELS + 1);
    if (nl < 1 || nl > MF_UNET_MAX_LEVELS) return mf_fail("model.channel_mult: 1 to %d levels, got %d", MF_UNET_MAX_LEVELS, nl);
    c->n_levels = nl;
    for (int i = 0; i < nl; i++) c->mult[i] = (int)mult[i];
    c->res_blocks = (int)mf_cfg_int(m, "res_blocks");
    c->groups = (int)mf_cfg_int(m, "groups");
    c->temb_dim = (int)mf_cfg_int(m, "time_embed.dim");
    c->fourier_half = (int)mf_cfg_int(m, "time_embed.frequencies");
    c->time_scale = (float)mf_cfg_float(m, "time_embed.scale");
    s->class_cond = mf_cfg_bool(m, "class_cond");
    /* the class count comes with the data set (setup); until then only whether there are classes */
    c->num_classes = s->class_cond ? 1 : 0;
    c->interval_r = strcmp(mf_cfg_str(m, "interval_input"), "r") == 0;

    s->obj = mf_objective_find(mf_cfg_str(t, "objective"));
    if (!s->obj) return mf_fail("train.objective: unknown objective '%s'", mf_cfg_str(t, "objective"));
    c->time_inputs = s->obj->time_inputs;
    MF_TRY(s->obj->create(t, c, &s->obj_state));
    if (c->interval_r && c->time_inputs != 2)
        mf_warn("model.interval_input: r has no effect on a v(z, t) model (train.objective %s)", s->obj->name);
    s->steps = mf_cfg_int(t, "steps");
    s->batch = (int)mf_cfg_int(t, "batch");
    s->lr = (float)mf_cfg_float(t, "optimizer.lr");
    double betas[3];
    if (mf_cfg_floats(t, "optimizer.betas", betas, 3) != 2) return mf_fail("train.optimizer.betas: expected two values [beta1, beta2]");
    s->b1 = (float)betas[0];
    s->b2 = (float)betas[1];
    s->eps = (float)mf_cfg_float(t, "optimizer.eps");
    s->wd = (float)mf_cfg_float(t, "optimizer.weight_decay");
    s->clip = (float)mf_cfg_float(t, "optimizer.grad_clip");
    int kind = mf_sched_kind_parse(mf_cfg_str(t, "schedule.kind"));
    if (kind < 0) return mf_fail("train.schedule.kind: unknown schedule '%s'", mf_cfg_str(t, "schedule.kind"));
    mf_sched_init(&s->sched, (mf_sched_kind)kind, s->lr, mf_cfg_int(t, "schedule.warmup"), s->steps,
                  mf_cfg_float(t, "schedule.min_lr_ratio"));
    s->init_from[0] = '\0';
    const mf_node *ifn = mf_node_child(t, "init_from");
    if (ifn && ifn->kind == MF_NODE_SCALAR && ifn->value && *ifn->value) {
        /* relative to the file that sets it (a command-line override: the working directory) */
        const char *v = ifn->value, *o = ifn->origin;
        bool from_file = o && strncmp(o, "override", 8) != 0 && o[0] != '<';
        const char *sl = from_file ? strrchr(o, '/') : NULL;
        char rel[4096];
        if (v[0] != '/' && sl) snprintf(rel, sizeof rel, "%.*s/%s", (int)(sl - o), o, v);
        else snprintf(rel, sizeof rel, "%s", v);
        snprintf(s->init_from, sizeof s->init_from, "%s", rel);
        /* recorded absolute, so config.yaml (and a resume from it) names the same file; a missing file is
         * reported when training starts (a resume does not read it) */
        char *abs = realpath(rel, NULL);
        if (abs) {
            snprintf(s->init_from, sizeof s->init_from, "%s", abs);
            mf_node *w = (mf_node *)ifn; /* the runner owns the tree; it is written to config.yaml after create() */
            free(w->value);
            w->value = abs;
            w->quoted = true;
        }
    }
    s->log_every = mf_cfg_int(t, "log_every");
    s->ckpt_every = mf_cfg_int(t, "checkpoint_every");
    s->keep = (int)mf_cfg_int(t, "keep_checkpoints");
    s->sample_every = mf_cfg_int(t, "sample_every");
    s->sample_n = (int)mf_cfg_int(t, "sample_n");
    s->sample_steps = (int)mf_cfg_int(t, "sample_steps");
    snprintf(s->sample_method, sizeof s->sample_method, "%s", mf_cfg_str(t, "sample_method"));
    s->final_grid = (int)mf_cfg_int(t, "final_grid");
    s->final_steps = (int)mf_cfg_int(t, "final_steps");
    s->skip_nan = strcmp(mf_cfg_str(t, "on_nan"), "skip") == 0;
    s->use_graphs = mf_cfg_bool(t, "graphs");
    return 0;
}

void train_free_buffers(train_state *s) {
    if (s->obj && s->obj_state) s->obj->destroy(s->obj_state);
    s->obj_state = NULL;
    if (s->be) {
        const mf_backend_i *k = s->be->i;
        k->free(s->be, s->grads);
        k->free(s->be, s->adam_m);
        k->free(s->be, s->adam_v);
        k->free(s->be, s->x);
        k->free(s->be, s->noise);
        k->free(s->be, s->data);
        k->free(s->be, s->opt_st);
        if (s->graph) k->graph_free(s->be, s->graph);
        if (s->h_st_pinned) k->host_free(s->be, s->h_st);
        else free(s->h_st);
    }
    s->opt_st = s->h_st = NULL;
    s->graph = NULL;
    free(s->h_idx);
    s->h_idx = NULL;
    s->data = NULL;
    free(s->h_x);
    free(s->h_t);
    free(s->h_r);
    free(s->h_y);
    free(s->h_drop);
    free(s->h_lw);
    s->h_lw = NULL;
    free(s->perm);
    s->grads = s->adam_m = s->adam_v = s->x = s->noise = NULL;
    s->h_x = s->h_t = s->h_r = NULL;
    s->h_y = NULL;
    s->h_drop = NULL;
    s->perm = NULL;
    s->be = NULL;
}

/* The batch of step `step`: examples in the seeded epoch order and noise, on the backend; the
 * objective then draws its times (and class dropout). The noise is drawn by the backend (the same
 * Philox stream everywhere); the images are gathered there from its copy of the data set (a GPU), or
 * on the host and written (the CPU, whose tensors are host memory anyway). */
static int make_batch(train_state *s, const mf_dataset *ds, uint64_t seed, int64_t step, mf_obj_batch *b) {
    int64_t n = ds->train.n, img = (int64_t)ds->C * ds->H * ds->W;
    int64_t idx[s->batch];
    for (int i = 0; i < s->batch; i++) {
        int64_t g = step * s->batch + i, epoch = g / n;
        if (epoch != s->perm_epoch) {
            mf_dataset_epoch_order(ds, epoch, s->perm);
            s->perm_epoch = epoch;
        }
        idx[i] = s->perm[g % n];
    }
    const mf_backend_i *k = s->be->i;
    if (s->data) {
        for (int i = 0; i < s->batch; i++) s->h_idx[i] = (int32_t)idx[i];
        if (s->h_y)
            for (int i = 0; i < s->batch; i++) s->h_y[i] = ds->train.y ? ds->train.y[idx[i]] : -1;
        k->embed(s->be, s->batch, (int)img, s->h_idx, s->data, s->x);
    } else {
        mf_dataset_gather(ds, &ds->train, idx, s->batch, s->h_x, s->h_y);
        k->write(s->be, s->x, s->h_x, sizeof(float) * (size_t)(img * s->batch));
    }
    k->randn(s->be, seed, MF_RNG_NOISE, (uint64_t)step, img * s->batch, s->noise);
    *b = (mf_obj_batch){.n = s->batch, .img = img, .x = s->x, .eps = s->noise, .t = s->h_t, .r = s->h_r,
                        .labels = s->h_y, .dropped = s->h_drop, .seed = seed, .step = step};
    s->obj->prepare(s->obj_state, b);
    if (s->h_lw) {
        /* the loss_weight hook sees the step's times (r only for u(z, r, t) models) and labels */
        MF_TRY(mf_hooks_loss_weight(s->hooks, b->n, b->t, s->obj->time_inputs == 2 ? b->r : NULL, step, b->labels,
                                    b->dropped, s->h_lw));
        b->weights = s->h_lw;
    }
    return 0;
}

/* The learning rate of step `step` (0-based): the lr hook's, or the built-in schedule's. */
static int step_lr(train_state *s, int64_t step, float *lr) {
    if (!mf_hooks_has(s->hooks, MF_HOOK_LR)) {
        *lr = (float)mf_sched_lr(&s->sched, step);
        return 0;
    }
    double v;
    MF_TRY(mf_hooks_lr(s->hooks, step, s->steps, (double)s->lr, &v));
    *lr = (float)v;
    return 0;
}

/* The training images on the backend, when its tensors are not host memory (or MFPIPE_DEVICE_DATA=1,
 * which tests the path on the CPU). Falls back to the host gather when they do not fit. */
static void upload_data(train_state *s, const mf_dataset *ds) {
    const char *force = getenv("MFPIPE_DEVICE_DATA");
    bool want = !s->be->host_memory || (force && strcmp(force, "1") == 0);
    if (force && strcmp(force, "0") == 0) want = false;
    int64_t img = (int64_t)ds->C * ds->H * ds->W, nf = img * ds->train.n;
    if (!want || img > INT32_MAX || ds->train.n > INT32_MAX) return;
    s->data = s->be->i->alloc(s->be, sizeof(float) * (size_t)nf);
    if (!s->data) {
        mf_error_clear();
        mf_warn("train: the %lld training images (%.0f MiB) do not fit on the %s backend; gathering batches on "
                "the host",
                (long long)ds->train.n, (double)nf * 4 / 1048576.0, s->be->kind);
        return;
    }
    s->be->i->write(s->be, s->data, ds->train.x, sizeof(float) * (size_t)nf);
    s->h_idx = mf_xmalloc(sizeof(int32_t) * (size_t)s->batch);
    mf_info("train: %lld training images (%.0f MiB) on the %s backend; batches are gathered there",
            (long long)ds->train.n, (double)nf * 4 / 1048576.0, s->be->kind);
}

/* A backend's run-time failure (a GPU kernel, a library call), as the stage's error. */
static int backend_failed(const train_state *s, int64_t step) {
    const char *e = s->be->i->error(s->be);
    if (!e) return 0;
    return mf_fail("step %lld: the %s backend failed: %s", (long long)step, s->be->kind, e);
}

static int checkpoint_dir(mf_run *run, char *dir, size_t cap) {
    snprintf(dir, cap, "%s/checkpoints", mf_run_dir(run));
    return mf_mkdirs(dir);
}

static int save_checkpoint(train_state *s, mf_run *run) {
    char dir[4096], path[4200];
    MF_TRY(checkpoint_dir(run, dir, sizeof dir));
    snprintf(path, sizeof path, "%s/ckpt_%08lld.mfc", dir, (long long)s->model->step);
    mf_ckpt c = {.step = (uint64_t)s->model->step};
    snprintf(c.config_hash, sizeof c.config_hash, "%s", s->hash);
    float *bufs[3 + MF_MODEL_MAX_STATE] = {s->model->params, s->adam_m, s->adam_v};
    const char *names[3] = {"model", "adam_m", "adam_v"};
    int ns = 3 + s->model->n_state;
    int64_t np = s->model->n_params;
    for (int i = 0; i < ns; i++) {
        mf_ckpt_section *sec = &c.s[i];
        float *src = i < 3 ? bufs[i] : s->model->state[i - 3].buf;
        sec->n = i < 3 ? np : s->model->state[i - 3].n;
        snprintf(sec->name, sizeof sec->name, "%s", i < 3 ? names[i] : s->model->state[i - 3].name);
        sec->data = mf_xmalloc(sizeof(float) * (size_t)sec->n);
        s->be->i->read(s->be, sec->data, src, sizeof(float) * (size_t)sec->n);
    }
    /* the model description, so `mfpipe sample` can rebuild the network from the checkpoint alone */
    float desc[MF_UNET_CFG_FLOATS];
    mf_unet_cfg_encode(&s->model->cfg, desc);
    c.s[ns] = (mf_ckpt_section){.name = "unet_cfg", .n = MF_UNET_CFG_FLOATS, .data = desc};
    c.n_sections = ns + 1;
    /* metadata: optimizer step count, the schedule segment, and the settings training depends on */
    mf_buf meta = {0};
    mf_buf_printf(&meta, "adam_t=%lld\nsched_peak=%.17g\nsched_warmup=%lld\nsched_total=%lld\nsched_from=%lld\n"
                  "sched_lr0=%.17g\n",
                  (long long)s->adam_t, s->sched.peak, (long long)s->sched.warmup, (long long)s->sched.total,
                  (long long)s->sched.from, s->sched.lr0);
    char *set = mf_run_settings(run);
    for (char *p = set, *nl; p && *p; p = nl ? nl + 1 : p + strlen(p)) {
        nl = strchr(p, '\n');
        mf_buf_printf(&meta, "setting.%.*s\n", nl ? (int)(nl - p) : (int)strlen(p), p);
    }
    free(set);
    c.meta = meta.s;
    int rc = mf_ckpt_save(path, &c);
    mf_buf_free(&meta);
    for (int i = 0; i < ns; i++) free(c.s[i].data);
    if (rc == 0) rc = mf_ckpt_prune(dir, s->keep);
    return rc;
}

/* The "setting." lines of a checkpoint's metadata without the prefix (mf_run_settings() form), or
 * NULL when the checkpoint predates them. */
static char *recorded_settings(const mf_ckpt *c) {
    mf_buf b = {0};
    for (const char *p = c->meta, *nl; p && *p; p = nl ? nl + 1 : p + strlen(p)) {
        nl = strchr(p, '\n');
        size_t ll = nl ? (size_t)(nl - p) : strlen(p);
        if (ll > 8 && strncmp(p, "setting.", 8) == 0) mf_buf_printf(&b, "%.*s\n", (int)(ll - 8), p + 8);
    }
    return b.s;
}

static int64_t meta_int(const mf_ckpt *c, const char *key, int64_t def) {
    char v[64];
    return mf_ckpt_meta_get(c, key, v, sizeof v) ? strtoll(v, NULL, 10) : def;
}

static int load_checkpoint(train_state *s, mf_run *run) {
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/checkpoints", mf_run_dir(run));
    mf_ckpt c;
    int found = mf_ckpt_load_latest(dir, &c, path, sizeof path, true);
    if (found < 0) return -1; /* an unreadable folder is not an empty one: never start over on it */
    if (found == 0) {
        mf_warn("resume: no valid checkpoint in %s; training from the start", dir);
        return mf_run_resumed_from(run, 0, NULL);
    }
    int rc = 0;
    if (strcmp(c.config_hash, s->hash) != 0)
        rc = mf_fail("%s: made for another model configuration (hash %.12s, this run %.12s)", path, c.config_hash, s->hash);
    char *rec = rc == 0 ? recorded_settings(&c) : NULL;
    if (rec) rc = mf_run_check_settings(run, rec, path);
    else if (rc == 0) mf_warn("%s: written by an older mfpipe without recorded settings: not checked", path);
    free(rec);
    if (rc == 0 && (int64_t)c.step > s->steps)
        rc = mf_fail("%s: the run is at step %llu, beyond train.steps=%lld: set train.steps to at least %llu", path,
                     (unsigned long long)c.step, (long long)s->steps, (unsigned long long)c.step);
    float *bufs[3] = {s->model->params, s->adam_m, s->adam_v};
    const char *names[3] = {"model", "adam_m", "adam_v"};
    for (int i = 0; rc == 0 && i < 3 + s->model->n_state; i++) {
        const char *nm = i < 3 ? names[i] : s->model->state[i - 3].name;
        float *dst = i < 3 ? bufs[i] : s->model->state[i - 3].buf;
        int64_t n = i < 3 ? s->model->n_params : s->model->state[i - 3].n;
        const mf_ckpt_section *sec = mf_ckpt_find(&c, nm);
        if (!sec || sec->n != n) {
            rc = mf_fail("%s: section '%s' missing or of another size", path, nm);
            break;
        }
        s->be->i->write(s->be, dst, sec->data, sizeof(float) * (size_t)n);
    }
    if (rc == 0) {
        int64_t step = (int64_t)c.step;
        s->model->step = step;
        s->adam_t = meta_int(&c, "adam_t", step);
        /* the schedule as the checkpoint ran it, then extended if train.steps changed */
        int64_t total = meta_int(&c, "sched_total", s->sched.total);
        char v[64], pk[64];
        /* the saved segment applies while peak and warm-up are the ones it was made with; after an
         * allowed change of either (--allow-changes) the schedule starts anew from the new values */
        bool same = mf_ckpt_meta_get(&c, "sched_peak", pk, sizeof pk) && strtod(pk, NULL) == s->sched.peak &&
                    meta_int(&c, "sched_warmup", -1) == s->sched.warmup;
        if (same && mf_ckpt_meta_get(&c, "sched_lr0", v, sizeof v)) {
            s->sched.total = total;
            s->sched.from = meta_int(&c, "sched_from", s->sched.from);
            s->sched.lr0 = strtod(v, NULL);
        } else if (mf_ckpt_meta_get(&c, "sched_lr0", v, sizeof v)) {
            mf_warn("resume: train.optimizer.lr or train.schedule.warmup changed: the schedule restarts from the "
                    "new values (%.4g at step %lld)",
                    mf_sched_lr(&s->sched, step), (long long)step);
            total = s->sched.total;
        }
        if (s->sched.total != s->steps) {
            double before = mf_sched_lr(&s->sched, step);
            mf_sched_extend(&s->sched, step, s->steps);
            mf_info("resume: train.steps %lld -> %lld: the learning rate goes on from %.4g and reaches its minimum at "
                    "step %lld",
                    (long long)total, (long long)s->steps, before, (long long)s->steps);
        }
        rc = mf_run_resumed_from(run, step, path);
    }
    mf_ckpt_free_loaded(&c);
    return rc;
}

static int write_grid(train_state *s, mf_run *run, const char *rel, int n, int steps) {
    mf_model *m = s->model;
    int64_t img = (int64_t)m->cfg.in_ch * m->cfg.height * m->cfg.width;
    float *x = mf_xmalloc(sizeof(float) * (size_t)(img * n));
    int32_t *lab = NULL;
    if (m->cfg.num_classes > 0) {
        lab = mf_xmalloc(sizeof *lab * (size_t)n);
        for (int i = 0; i < n; i++) lab[i] = i % m->cfg.num_classes;
    }
    const float *w = m->ema ? m->ema : m->params;
    const char *method = strcmp(s->sample_method, "auto") != 0 ? s->sample_method : m->cfg.time_inputs == 2 ? "meanflow" : "heun";
    mf_gen_opts go = {.sampler = method, .steps = steps, .batch = n, .seed = mf_run_seed(run), .labels = lab};
    int rc = mf_generate(m, w, &go, n, x, NULL);
    char path[4096];
    if (rc == 0) rc = mf_run_path(run, path, sizeof path, rel);
    int nrow = (int)ceil(sqrt((double)n));
    if (m->cfg.num_classes > 0) nrow = m->cfg.num_classes;
    if (rc == 0) rc = mf_grid_write_png(path, x, n, m->cfg.in_ch, m->cfg.height, m->cfg.width, -1.0f, 1.0f, nrow, 2, 0.0f);
    if (rc == 0) mf_info("samples: %s (%d images, %s %d steps, %s weights)", path, n, method, steps, m->ema ? "EMA" : "raw");
    if (rc == 0) rc = mf_run_tb_image(run, "train/samples", m->step, path);
    free(x);
    free(lab);
    return rc;
}

static void model_free_void(void *p) { mf_model_free(p); }

static int setup(train_state *s, mf_run *run, const mf_dataset *ds) {
    s->be = mf_run_backend(run);
    if (!s->be) return -1;
    const mf_backend_i *k = s->be->i;
    s->cfg.in_ch = ds->C;
    s->cfg.height = ds->H;
    s->cfg.width = ds->W;
    if (s->class_cond && ds->num_classes <= 0) return mf_fail("model.class_cond: the data set '%s' has no labels", ds->name);
    s->cfg.num_classes = s->class_cond ? ds->num_classes : 0;
    MF_TRY(mf_unet_check(&s->cfg));
    if (ds->train.n < 1) return mf_fail("the training split is empty");

    /* the parameter layout, count and initial values from a graph that is built but never run (every
     * graph the objective builds has the same layout: the parameters are views into one buffer) */
    mf_graph tg;
    mf_unet tids;
    mf_graph_init(&tg, s->be, 1);
    mf_unet_build(&tg, &s->cfg, &tids);
    mf_model *m = mf_xcalloc(1, sizeof *m);
    m->be = s->be;
    m->cfg = s->cfg;
    m->n_params = tg.n_param_floats;
    for (int i = 0; i < tg.n_params; i++) m->n_weights += tg.params[i].numel;
    m->flops_per_image = tg.flops_fwd;
    size_t pb = sizeof(float) * (size_t)m->n_params;
    m->params = k->alloc(s->be, pb);
    if (mf_artifact_put(run, "model", MF_ART_MODEL, m, model_free_void) != 0) {
        mf_graph_free(&tg);
        return -1;
    }
    s->model = m;
    s->grads = k->alloc(s->be, pb);
    s->adam_m = k->alloc(s->be, pb);
    s->adam_v = k->alloc(s->be, pb);
    int64_t img = (int64_t)ds->C * ds->H * ds->W, n = img * s->batch;
    s->x = k->alloc(s->be, sizeof(float) * (size_t)n);
    s->noise = k->alloc(s->be, sizeof(float) * (size_t)n);
    if (!m->params || !s->grads || !s->adam_m || !s->adam_v || !s->x || !s->noise) {
        mf_graph_free(&tg);
        return mf_fail("out of memory for parameters and optimizer state (%.1f MiB each)", (double)pb / 1048576.0);
    }
    float *host = mf_xmalloc(pb);
    mf_graph_init_params(&tg, mf_run_seed(run), host);
    mf_graph_free(&tg);
    if (s->init_from[0] && !mf_run_resuming(run)) {
        /* train.init_from: every tensor checked by name, shape and dtype (a resume loads its checkpoint instead) */
        char sha[65] = "";
        if (mf_weights_load_st(s->init_from, s->be, &s->cfg, host, m->n_params) != 0 ||
            mf_sha256_file(s->init_from, sha) != 0) {
            free(host);
            return mf_error_prefix("train.init_from: ");
        }
        mf_info("train: initial weights from %s (sha256 %.16s...)", s->init_from, sha);
        mf_buf ib = {0};
        mf_json_str(&ib, "event", "init_from");
        mf_json_str(&ib, "file", s->init_from);
        mf_json_str(&ib, "sha256", sha);
        int irc = mf_metrics_append(run, s->instance, ib.s);
        mf_buf_free(&ib);
        if (irc != 0) {
            free(host);
            return irc;
        }
    }
    k->write(s->be, m->params, host, pb);
    free(host);
    k->fill(s->be, s->adam_m, 0.0f, m->n_params);
    k->fill(s->be, s->adam_v, 0.0f, m->n_params);
    mf_obj_env env = {.be = s->be, .cfg = &m->cfg, .batch = s->batch, .steps = s->steps, .params = m->params,
                      .grads = s->grads};
    MF_TRY(s->obj->setup(s->obj_state, &env));
    upload_data(s, ds);
    const char *as = getenv("MFPIPE_ASYNC_STEP");
    s->async = (!s->be->host_memory || (as && strcmp(as, "1") == 0)) && s->obj->collect && s->be->i->adamw_step;
    if (as && strcmp(as, "0") == 0) s->async = false;
    const char *ng = getenv("MFPIPE_NO_GRAPHS");
    if (ng && strcmp(ng, "1") == 0) s->use_graphs = false;

    s->h_x = mf_xmalloc(sizeof(float) * (size_t)n);
    s->h_t = mf_xmalloc(sizeof(float) * (size_t)s->batch);
    s->h_r = mf_xmalloc(sizeof(float) * (size_t)s->batch);
    s->h_y = s->cfg.num_classes > 0 ? mf_xmalloc(sizeof(int32_t) * (size_t)s->batch) : NULL;
    s->h_drop = s->cfg.num_classes > 0 ? mf_xcalloc((size_t)s->batch, 1) : NULL;
    s->hooks = mf_run_hooks(run);
    s->h_lw = mf_hooks_has(s->hooks, MF_HOOK_LOSS_WEIGHT) ? mf_xmalloc(sizeof(float) * (size_t)s->batch) : NULL;
    s->stop_reason[0] = '\0';
    s->perm = mf_xmalloc(sizeof(int64_t) * (size_t)ds->train.n);
    s->perm_epoch = -1;

    /* the configuration hash that checkpoints must match */
    char desc[512];
    snprintf(desc, sizeof desc, "unet c%d h%d w%d ch%d L%d m%d,%d,%d,%d,%d,%d rb%d g%d te%d fh%d ts%g nc%d ti%d %s%s%s",
             m->cfg.in_ch, m->cfg.height, m->cfg.width, m->cfg.ch, m->cfg.n_levels, m->cfg.mult[0], m->cfg.mult[1],
             m->cfg.mult[2], m->cfg.mult[3], m->cfg.mult[4], m->cfg.mult[5], m->cfg.res_blocks, m->cfg.groups,
             m->cfg.temb_dim, m->cfg.fourier_half, (double)m->cfg.time_scale, m->cfg.num_classes, m->cfg.time_inputs,
             s->obj->name, m->cfg.null_class ? " null" : "", m->cfg.interval_r ? " ir" : "");
    mf_sha256_hex(desc, strlen(desc), s->hash);
    mf_info("model: UNet %s: %lld parameters, %.3f GFLOP forward per image; batch %d: %.1f MiB of activations, "
            "gradients and tangents (objective %s)",
            desc, (long long)m->n_weights, m->flops_per_image / 1e9, s->batch,
            (double)s->obj->act_bytes(s->obj_state) / 1048576.0, s->obj->name);
    mf_buf b = {0};
    mf_json_str(&b, "event", "model");
    mf_json_int(&b, "params", m->n_weights);
    mf_json_num(&b, "gflops_per_image", m->flops_per_image / 1e9);
    int rc = mf_metrics_append(run, s->instance, b.s);
    mf_buf_free(&b);
    return rc;
}

/* One metrics.jsonl line: the means over the steps since the last line. */
static int log_line(train_state *s, mf_run *run, const mf_model *m, struct timespec t0, double *t_last, int64_t *last_log,
                    double *loss_acc, int64_t *n_acc, const char *const *stat_name, double *stat_acc, int n_stat,
                    float lr, double gnorm) {
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double el = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    const double n = *n_acc > 0 ? (double)*n_acc : NAN;
    mf_buf b = {0};
    mf_json_int(&b, "step", m->step);
    mf_json_num(&b, "loss", *loss_acc / n);
    for (int i = 0; i < n_stat; i++) mf_json_num(&b, stat_name[i], stat_acc[i] / n);
    mf_json_num(&b, "lr", lr);
    mf_json_num(&b, "grad_norm", gnorm);
    double ips = (double)(m->step - *last_log) * s->batch / (el - *t_last > 0 ? el - *t_last : 1e-9);
    mf_json_num(&b, "img_per_s", ips);
    int rc = 0;
    bool ckpt = false;
    if (mf_hooks_has(s->hooks, MF_HOOK_ON_STEP)) {
        /* on_step(m) sees what this line logs; its log = {...} joins the line */
        const char *names[MF_OBJ_MAX_STATS + 5];
        double vals[MF_OBJ_MAX_STATS + 5];
        int nv = 0;
        names[nv] = "loss", vals[nv++] = *loss_acc / n;
        for (int i = 0; i < n_stat; i++) names[nv] = stat_name[i], vals[nv++] = stat_acc[i] / n;
        names[nv] = "lr", vals[nv++] = lr;
        names[nv] = "grad_norm", vals[nv++] = gnorm;
        names[nv] = "img_per_s", vals[nv++] = ips;
        mf_hook_action act;
        rc = mf_hooks_on_step(s->hooks, m->step, nv, names, vals, &act);
        for (int i = 0; rc == 0 && i < act.n_log; i++) {
            bool clash = false;
            for (int j = 0; j < nv; j++) clash |= strcmp(names[j], act.log_name[i]) == 0;
            if (clash || strcmp(act.log_name[i], "step") == 0)
                rc = mf_fail("hook on_step at step %lld: log.%s would overwrite a logged metric; choose another name",
                             (long long)m->step, act.log_name[i]);
            else mf_json_num(&b, act.log_name[i], act.log_value[i]);
        }
        if (rc == 0 && act.stop[0]) {
            snprintf(s->stop_reason, sizeof s->stop_reason, "%s", act.stop);
            mf_json_str(&b, "hook_stop", act.stop);
        }
        ckpt = rc == 0 && act.checkpoint;
    }
    if (rc == 0) rc = mf_metrics_append(run, s->instance, b.s);
    mf_buf_free(&b);
    if (rc == 0 && ckpt && m->step < s->steps && !s->stop_reason[0]) {
        mf_info("step %lld: checkpoint asked by the on_step hook", (long long)m->step);
        rc = save_checkpoint(s, run);
    }
    *loss_acc = 0;
    *n_acc = 0;
    memset(stat_acc, 0, sizeof(double) * MF_OBJ_MAX_STATS);
    *t_last = el;
    *last_log = m->step;
    return rc;
}

/* After a step: the periodic grid and checkpoint, and the stop on SIGINT/SIGTERM (returns 1 then,
 * with the checkpoint saved). */
static int periodic(train_state *s, mf_run *run) {
    const mf_model *m = s->model;
    if (s->sample_every > 0 && m->step % s->sample_every == 0 && m->step < s->steps) {
        char rel[64];
        snprintf(rel, sizeof rel, "samples/step_%08lld.png", (long long)m->step);
        MF_TRY(write_grid(s, run, rel, s->sample_n, s->sample_steps));
    }
    if (s->ckpt_every > 0 && m->step % s->ckpt_every == 0 && m->step < s->steps) MF_TRY(save_checkpoint(s, run));
    if (mf_run_interrupted(run)) {
        mf_warn("interrupted at step %lld: saving a checkpoint", (long long)m->step);
        MF_TRY(save_checkpoint(s, run));
        return 1;
    }
    return 0;
}

/* ---- the asynchronous step ------------------------------------------------------------------------
 * Where the backend's tensors are not host memory (a GPU), a step issues its work and does not wait:
 * the batch is gathered and the noise drawn on the backend, the objective accumulates its loss there
 * (b->defer), and adamw_step computes the gradient norm, clips, updates and skips non-finite steps
 * there, with the learning rate written to its state. The host synchronises when it logs or saves.
 * With graphs (train.graphs, where the backend has them) each step after the first two (the warm-up,
 * when libraries pick algorithms and workspaces grow) is recorded and launched as one graph.
 * MFPIPE_ASYNC_STEP=1 runs this path on the CPU, where it must equal the synchronous one bit for bit. */

static int async_begin(train_state *s) {
    const mf_backend_i *k = s->be->i;
    s->opt_st = k->alloc(s->be, sizeof(float) * MF_OPT_ST_N);
    s->h_st = k->host_alloc ? k->host_alloc(s->be, sizeof(float) * MF_OPT_ST_N) : NULL;
    s->h_st_pinned = s->h_st != NULL;
    if (!s->h_st) s->h_st = mf_xcalloc(MF_OPT_ST_N, sizeof(float));
    if (!s->opt_st) return mf_fail("out of %s memory for the optimizer state", s->be->kind);
    memset(s->h_st, 0, sizeof(float) * MF_OPT_ST_N);
    s->h_st[MF_OPT_ST_T] = (float)s->adam_t;
    s->h_st[MF_OPT_ST_FIRST_SKIP] = -1.0f;
    k->write(s->be, s->opt_st, s->h_st, sizeof(float) * MF_OPT_ST_N);
    s->shown_loss = NAN;
    s->last_gnorm = NAN;
    s->n_async = 0;
    if (s->use_graphs && !k->graph_begin) s->use_graphs = false;
    mf_info("train: asynchronous steps on the %s backend%s", s->be->kind,
            s->use_graphs ? ", recorded as graphs after two warm-up steps" : "");
    return 0;
}

/* Issue one step: make the batch, the objective's passes (deferred), the optimizer step. */
static int async_issue(train_state *s, const mf_dataset *ds, uint64_t seed, int64_t step, float lr, int64_t nan_grad_step) {
    const mf_backend_i *k = s->be->i;
    mf_model *m = s->model;
    mf_obj_batch ob;
    mf_obj_result res = {0};
    MF_TRY(make_batch(s, ds, seed, step, &ob));
    ob.defer = true;
    k->fill(s->be, s->grads, 0.0f, m->n_params);
    if (s->obj->loss_and_grads(s->obj_state, &ob, &res) != 0) return mf_error_prefix("step %lld: ", (long long)step + 1);
    if (step + 1 == nan_grad_step) k->fill(s->be, s->grads, NAN, 1); /* testing aid: a non-finite gradient */
    /* the step's scalars (a recorded write keeps the values it had at the call) */
    float hs[2] = {lr, (float)(step + 1)};
    k->write(s->be, s->opt_st + MF_OPT_ST_LR, hs, sizeof hs);
    k->adamw_step(s->be, m->n_params, m->params, s->grads, s->adam_m, s->adam_v, s->opt_st, s->b1, s->b2, s->eps,
                  s->wd, s->clip);
    return 0;
}

static int async_step(train_state *s, const mf_dataset *ds, uint64_t seed, int64_t step, float lr, int64_t nan_grad_step) {
    const mf_backend_i *k = s->be->i;
    bool graph = s->use_graphs && s->n_async >= 2;
    if (graph && k->graph_begin(s->be) != 0) {
        mf_warn("step %lld: the %s backend cannot record the step as a graph (%s); steps run without graphs", (long long)step + 1,
                s->be->kind, mf_last_error());
        mf_error_clear();
        s->use_graphs = graph = false;
    }
    int rc = async_issue(s, ds, seed, step, lr, nan_grad_step);
    if (graph) {
        void *g = k->graph_end(s->be, s->graph);
        s->graph = g;
        if (rc == 0 && (!g || k->graph_launch(s->be, g) != 0)) {
            /* the recording was dropped: issue the step again, eagerly, and keep to that (the objective
             * counted the dropped step: the loop's own step count is what the means divide by) */
            mf_warn("step %lld: the step's graph failed on the %s backend (%s); steps run without graphs",
                    (long long)step + 1, s->be->kind, mf_last_error());
            mf_error_clear();
            if (g) k->graph_free(s->be, g);
            s->graph = NULL;
            s->use_graphs = false;
            rc = async_issue(s, ds, seed, step, lr, nan_grad_step);
        }
    }
    if (rc != 0) return rc;
    s->n_async++;
    s->n_issued++;
    return backend_failed(s, step + 1);
}

/* Wait for the issued steps: the objective's sums (*lsum over *nst steps, stats in res) and the
 * optimizer's state (Adam's step count, the last gradient norm, the skipped steps). Non-finite
 * gradients were skipped on the backend (weights unchanged); here they stop the run or are reported. */
static int async_sync(train_state *s, mf_obj_result *res, double *lsum, int64_t *nst) {
    const mf_backend_i *k = s->be->i;
    res->n_stats = 0;
    MF_TRY(s->obj->collect(s->obj_state, res, nst));
    *nst = s->n_issued; /* the steps issued since the last collect */
    s->n_issued = 0;
    *lsum = res->loss;
    k->read(s->be, s->h_st, s->opt_st, sizeof(float) * MF_OPT_ST_N);
    MF_TRY(backend_failed(s, s->model->step));
    s->adam_t = (int64_t)s->h_st[MF_OPT_ST_T];
    const float skipped = s->h_st[MF_OPT_ST_SKIPPED];
    if (skipped > 0) {
        const long long first = (long long)s->h_st[MF_OPT_ST_FIRST_SKIP];
        if (!s->skip_nan)
            return mf_fail("step %lld: the gradient norm is not finite (%g steps up to step %lld skipped, weights "
                           "unchanged by them); lower train.optimizer.lr, or set train.on_nan: skip",
                           first, (double)skipped, (long long)s->model->step);
        mf_warn("steps %lld to %lld: %g steps with a non-finite gradient norm skipped (train.on_nan: skip)", first,
                (long long)s->model->step, (double)skipped);
        /* the window's logged loss includes the skipped steps' (not finite): it is logged as null */
        float z[2] = {0.0f, -1.0f};
        k->write(s->be, s->opt_st + MF_OPT_ST_SKIPPED, z, sizeof z);
    }
    if (!isfinite(res->loss) && skipped == 0) {
        if (!s->skip_nan)
            return mf_fail("step %lld: the %s is not finite in the last %lld steps; lower train.optimizer.lr, or set "
                           "train.on_nan: skip",
                           (long long)s->model->step, res->nonfinite ? res->nonfinite : "loss", (long long)*nst);
        mf_warn("step %lld: the %s is not finite in the last %lld steps", (long long)s->model->step,
                res->nonfinite ? res->nonfinite : "loss", (long long)*nst);
    }
    return 0;
}

int train_run(void *state, mf_run *run) {
    train_state *s = state;
    mf_dataset *ds = mf_artifact_get(run, "dataset", MF_ART_DATASET);
    if (!ds) return -1;
    MF_TRY(setup(s, run, ds));
    const mf_backend_i *k = s->be->i;
    mf_model *m = s->model;
    uint64_t seed = mf_run_seed(run);
    bool resumed = mf_run_resuming(run);
    mf_train_event ev = {.model = m, .step = 0, .resumed = resumed};
    MF_TRY(mf_event_emit(run, "train.begin", &ev));
    if (resumed) MF_TRY(load_checkpoint(s, run));

    mf_progress *pg = mf_progress_begin("train", s->steps, "it");
    double loss_acc = 0, t_last = 0;
    int64_t n_acc = 0, last_log = m->step;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = 0;
    /* testing aids: MFPIPE_DEBUG_NAN_STEP=k makes the loss of step k NaN, MFPIPE_DEBUG_NAN_GRAD_STEP=k
     * its gradient norm (tests the on_nan paths) */
    const char *dbg = getenv("MFPIPE_DEBUG_NAN_STEP"), *dbg_g = getenv("MFPIPE_DEBUG_NAN_GRAD_STEP");
    int64_t nan_step = dbg ? atoll(dbg) : -1, nan_grad_step = dbg_g ? atoll(dbg_g) : -1;
    if (!resumed) s->adam_t = 0;
    double stat_acc[MF_OBJ_MAX_STATS] = {0};
    const char *stat_name[MF_OBJ_MAX_STATS] = {0};
    int n_stat = 0;
    if (s->async) MF_TRY(async_begin(s));
    while (m->step < s->steps) {
        int64_t step = m->step;
        mf_obj_batch ob;
        mf_obj_result res = {0};
        if (s->async) {
            /* the step is issued (or recorded and launched as a graph) without waiting for it; the host
             * learns its loss, gradient norm and skips when it logs */
            float lr;
            if ((rc = step_lr(s, step, &lr)) != 0) break;
            if ((rc = async_step(s, ds, seed, step, lr, nan_grad_step)) != 0) break;
            m->step++;
            ev.step = m->step;
            ev.loss = NAN;
            if (mf_event_emit(run, "train.step", &ev) != 0) {
                rc = -1;
                break;
            }
            bool log_now = m->step % s->log_every == 0 || m->step == s->steps;
            bool ckpt_now = s->ckpt_every > 0 && m->step % s->ckpt_every == 0 && m->step < s->steps;
            if (log_now || ckpt_now || mf_run_interrupted(run)) {
                double lsum;
                int64_t nst;
                if ((rc = async_sync(s, &res, &lsum, &nst)) != 0) break;
                loss_acc += lsum;
                n_acc += nst;
                for (int i = 0; i < res.n_stats; i++) {
                    stat_name[i] = res.stats[i].name;
                    stat_acc[i] += res.stats[i].value;
                }
                n_stat = res.n_stats;
                s->last_gnorm = s->h_st[MF_OPT_ST_GNORM];
                s->last_lr = lr;
            }
            char extra[96];
            snprintf(extra, sizeof extra, "loss=%.4f lr=%.3g", s->shown_loss, (double)lr);
            mf_progress_update(pg, m->step, extra);
            if (log_now) {
                s->shown_loss = n_acc > 0 ? loss_acc / (double)n_acc : NAN;
                if ((rc = log_line(s, run, m, t0, &t_last, &last_log, &loss_acc, &n_acc, stat_name, stat_acc, n_stat,
                                   s->last_lr, s->last_gnorm)) != 0)
                    break;
                if (s->stop_reason[0]) break;
            }
            if ((rc = periodic(s, run)) != 0) break;
            continue;
        }
        if ((rc = make_batch(s, ds, seed, step, &ob)) != 0) {
            mf_error_prefix("step %lld: ", (long long)step + 1);
            break;
        }
        k->fill(s->be, s->grads, 0.0f, m->n_params);
        if (s->obj->loss_and_grads(s->obj_state, &ob, &res) != 0) {
            rc = mf_error_prefix("step %lld: ", (long long)step + 1);
            break;
        }
        if ((rc = backend_failed(s, step + 1)) != 0) break;
        double loss = res.loss;
        if (step + 1 == nan_step) loss = NAN, res.nonfinite = "loss";
        if (!isfinite(loss) && !res.nonfinite) res.nonfinite = "loss";
        double gnorm = isfinite(loss) ? sqrt(k->sumsq(s->be, m->n_params, s->grads)) : NAN;
        if (step + 1 == nan_grad_step) gnorm = INFINITY;
        if (!isfinite(loss) || !isfinite(gnorm)) {
            const char *what = !isfinite(loss) ? res.nonfinite : "gradient norm";
            double val = !isfinite(loss) ? loss : gnorm;
            if (!s->skip_nan) {
                rc = mf_fail("step %lld: the %s is %g (not finite); lower train.optimizer.lr, or set "
                             "train.on_nan: skip",
                             (long long)step + 1, what, val);
                break;
            }
            /* the weights, Adam's moments and its step count stay as they were */
            mf_warn("step %lld: non-finite %s (%g); step skipped (train.on_nan: skip)", (long long)step + 1, what, val);
            m->step++;
            continue;
        }
        for (int i = 0; i < res.n_stats; i++) {
            stat_name[i] = res.stats[i].name;
            stat_acc[i] += res.stats[i].value;
        }
        n_stat = res.n_stats;
        float gscale = mf_clip_scale(gnorm, s->clip);
        float lr;
        if ((rc = step_lr(s, step, &lr)) != 0) break;
        s->adam_t++;
        k->adamw(s->be, m->n_params, m->params, s->grads, s->adam_m, s->adam_v, lr, s->b1, s->b2, s->eps, s->wd,
                 s->adam_t, gscale);
        m->step++;
        ev.step = m->step;
        ev.loss = loss;
        if (mf_event_emit(run, "train.step", &ev) != 0) {
            rc = -1;
            break;
        }
        loss_acc += loss;
        n_acc++;
        char extra[96];
        snprintf(extra, sizeof extra, "loss=%.4f lr=%.3g", loss, (double)lr);
        mf_progress_update(pg, m->step, extra);
        if (m->step % s->log_every == 0 || m->step == s->steps) {
            if ((rc = log_line(s, run, m, t0, &t_last, &last_log, &loss_acc, &n_acc, stat_name, stat_acc, n_stat, lr,
                               gnorm)) != 0)
                break;
            if (s->stop_reason[0]) break;
        }
        if ((rc = periodic(s, run)) != 0) break;
    }
    if (rc == 1) rc = 0; /* interrupted, checkpoint saved */
    mf_progress_end(pg);
    if (rc == 0) rc = backend_failed(s, m->step);
    if (rc != 0 || mf_run_interrupted(run)) return rc;
    if (s->stop_reason[0])
        mf_info("train: stopped at step %lld of %lld by the on_step hook: %s", (long long)m->step, (long long)s->steps,
                s->stop_reason);
    MF_TRY(save_checkpoint(s, run));
    ev.step = m->step;
    MF_TRY(mf_event_emit(run, "train.end", &ev));
    if (s->final_grid > 0) MF_TRY(write_grid(s, run, "samples/final_grid.png", s->final_grid, s->final_steps));
    mf_info("train: %lld steps done; peak backend memory %.1f MiB", (long long)m->step,
            (double)k->peak_bytes(s->be) / 1048576.0);
    return 0;
}
