/* mf_model.c - the model artifact, the run's backend, inference graphs and the basic ODE samplers
 * (Euler, Heun) used for periodic sample grids. */
#include "mf_model.h"

#include <stdlib.h>
#include <string.h>

#include "mf_checkpoint.h"
#include "mf_error.h"
#include "mf_log.h"
#include "mf_rng.h"
#include "mf_sampler.h"

static void backend_free_void(void *p) { mf_backend_free(p); }

/* The run's backend, opened on first use from the experiment's engine, precision and threads (the
 * registry, engine/mf_backend.c, resolves "auto"); the runner logs it and adds it to the manifest.
 * MFPIPE_CHECKED_BACKEND=1 wraps it in the checked backend (tests). */
mf_backend *mf_run_backend(mf_run *run) {
    void *found = mf_artifact_get(run, "backend", MF_ART_BACKEND);
    if (found) return found;
    mf_error_clear(); /* "no artifact" is expected on first use */
    const char *prec = mf_run_precision(run);
    int p = MF_PREC_FP32;
    if (prec && strcmp(prec, "tf32") == 0) p = MF_PREC_TF32;
    else if (prec && strcmp(prec, "bf16") == 0) p = MF_PREC_BF16;
    else if (prec && strcmp(prec, "auto") == 0) p = MF_PREC_AUTO;
    mf_backend_opts o = {.threads = mf_run_threads(run), .precision = p, .device = 0};
    mf_backend *be = mf_backend_open(mf_run_engine(run), &o);
    if (!be) return NULL;
    const char *checked = getenv("MFPIPE_CHECKED_BACKEND");
    if (checked && strcmp(checked, "1") == 0) be = mf_checked_backend_new(be); /* owns the backend */
    if (mf_run_note_backend(run, be->kind, mf_precision_name(be->precision), be->i->version(be)) != 0 ||
        mf_artifact_put(run, "backend", MF_ART_BACKEND, be, backend_free_void) != 0) {
        mf_backend_free(be);
        return NULL;
    }
    return be;
}

int mf_model_register_state(mf_model *m, const char *name, float *buf, int64_t n) {
    if (m->n_state >= MF_MODEL_MAX_STATE) return mf_fail("too many checkpointed state buffers");
    mf_state_buf *s = &m->state[m->n_state++];
    snprintf(s->name, sizeof s->name, "%s", name);
    s->buf = buf;
    s->n = n;
    return 0;
}

void mf_model_free(mf_model *m) {
    if (!m) return;
    if (m->params) m->be->i->free(m->be, m->params);
    for (int i = 0; i < m->n_state; i++) m->be->i->free(m->be, m->state[i].buf);
    free(m);
}

int mf_infer_init(mf_infer *inf, mf_backend *be, const mf_unet_cfg *cfg, int batch, bool need_tan) {
    memset(inf, 0, sizeof *inf);
    inf->be = be;
    inf->batch = batch;
    mf_graph_init(&inf->g, be, batch);
    mf_unet_build(&inf->g, cfg, &inf->ids);
    return mf_graph_finalize(&inf->g, inf->ids.out, false, need_tan);
}

void mf_infer_free(mf_infer *inf) {
    if (inf->graph) inf->be->i->graph_free(inf->be, inf->graph);
    inf->graph = NULL;
    mf_graph_free(&inf->g);
}

static void infer_issue(mf_infer *inf, const float *params, const float *z, const float *t, const float *r,
                        const int32_t *labels) {
    mf_graph *g = &inf->g;
    const mf_backend_i *k = inf->be->i;
    mf_graph_set_params(g, params);
    mf_gnode *x = &g->nodes[inf->ids.x];
    k->copy(inf->be, x->out, z, sizeof(float) * (size_t)x->numel);
    k->write(inf->be, g->nodes[inf->ids.t].out, t, sizeof(float) * (size_t)inf->batch);
    if (inf->ids.r >= 0) k->write(inf->be, g->nodes[inf->ids.r].out, r, sizeof(float) * (size_t)inf->batch);
    if (inf->ids.labels >= 0) mf_graph_set_labels(g, labels);
    mf_graph_forward(g);
}

const float *mf_infer_eval(mf_infer *inf, const float *params, const float *z, const float *t, const float *r,
                           const int32_t *labels) {
    mf_graph *g = &inf->g;
    const mf_backend_i *k = inf->be->i;
    if (!inf->no_graph && (!k->graph_begin || (getenv("MFPIPE_NO_GRAPHS") && strcmp(getenv("MFPIPE_NO_GRAPHS"), "1") == 0)))
        inf->no_graph = true;
    /* the first two evaluations run eagerly (libraries choose algorithms and grow workspaces then) */
    if (inf->no_graph || inf->evals++ < 2) {
        infer_issue(inf, params, z, t, r, labels);
        return g->nodes[inf->ids.out].out;
    }
    if (k->graph_begin(inf->be) == 0) {
        infer_issue(inf, params, z, t, r, labels);
        inf->graph = k->graph_end(inf->be, inf->graph);
        if (inf->graph && k->graph_launch(inf->be, inf->graph) == 0) return g->nodes[inf->ids.out].out;
    }
    /* the evaluation is pure: issue it again without a graph, and keep to that */
    mf_warn("sampling: the %s backend cannot run the network as a graph (%s); running it eagerly", inf->be->kind,
            mf_last_error());
    mf_error_clear();
    if (inf->graph) k->graph_free(inf->be, inf->graph);
    inf->graph = NULL;
    inf->no_graph = true;
    infer_issue(inf, params, z, t, r, labels);
    return g->nodes[inf->ids.out].out;
}

/* ---- generation ---------------------------------------------------------------------------------
 * What makes one image independent of its batch: the field takes one time per row (eval_rows), so
 * dopri5 gives every sample its own steps; a short last batch is padded with rows that the samplers
 * ignore (f.rows); each sample's evaluation count is kept. */

typedef struct gen_ctx {
    mf_infer *inf;
    const float *params;
    const int32_t *labels;
} gen_ctx;

static int gen_eval_rows(void *ctx, const float *z, const float *r, const float *t, float *out) {
    gen_ctx *g = ctx;
    const float *v = mf_infer_eval(g->inf, g->params, z, t, r, g->labels);
    g->inf->be->i->copy(g->inf->be, out, v, sizeof(float) * (size_t)g->inf->g.nodes[g->inf->ids.x].numel);
    return 0;
}

static int gen_eval(void *ctx, const float *z, float r, float t, float *out) {
    gen_ctx *g = ctx;
    float *rt = mf_xmalloc(sizeof(float) * 2 * (size_t)g->inf->batch);
    for (int i = 0; i < g->inf->batch; i++) rt[i] = r, rt[g->inf->batch + i] = t;
    int rc = gen_eval_rows(ctx, z, rt, rt + g->inf->batch, out);
    free(rt);
    return rc;
}

typedef struct traj_rows {
    mf_backend *be;
    const mf_gen_opts *o;
    int64_t img;
    int next[256];     /* next frame of each recorded row (trajectory_n <= 256) */
} traj_rows;

static void traj_store(traj_rows *tr, const float *z, int row, int frame) {
    tr->be->i->read(tr->be, tr->o->traj + ((int64_t)row * tr->o->traj_frames + frame) * tr->img, z + row * tr->img,
                    sizeof(float) * (size_t)tr->img);
}

/* frame f of a row is due when that row's time reaches 1 - f/(F-1) */
static int traj_rows_step(void *user, const float *z, const double *t) {
    traj_rows *tr = user;
    int F = tr->o->traj_frames;
    for (int s = 0; s < tr->o->traj_n; s++)
        while (tr->next[s] < F && t[s] <= 1.0 - (double)tr->next[s] / (F - 1) + 1e-9) traj_store(tr, z, s, tr->next[s]++);
    return 0;
}

static int traj_step(void *user, const float *z, double t) {
    traj_rows *tr = user;
    double tt[256];
    for (int s = 0; s < tr->o->traj_n; s++) tt[s] = t;
    return traj_rows_step(user, z, tt);
}

int mf_generate(mf_model *m, const float *params, const mf_gen_opts *o, int n, float *x, int64_t *total_nfe) {
    int *nfe_batch = o->nfe_per_batch, *nfe_sample = o->nfe_per_sample;
    mf_backend *be = m->be;
    const mf_sampler *smp = mf_sampler_find(o->sampler);
    if (!smp) return -1;
    if (smp->needs_average && m->cfg.time_inputs != 2)
        return mf_fail("sampler %s needs a model of the average velocity u(z, r, t) (train.objective: meanflow)", smp->name);
    int batch = o->batch < n ? o->batch : n;
    if (batch < 1) batch = 1;
    mf_infer inf;
    if (mf_infer_init(&inf, be, &m->cfg, batch, false) != 0) {
        mf_infer_free(&inf);
        return -1;
    }
    int64_t img = (int64_t)m->cfg.in_ch * m->cfg.height * m->cfg.width, bf = img * batch;
    float *z = be->i->alloc(be, sizeof(float) * (size_t)bf);
    float *host = mf_xcalloc((size_t)bf, sizeof(float));
    int32_t *lab = o->labels ? mf_xmalloc(sizeof *lab * (size_t)batch) : NULL;
    mf_sampler_stats *rs = mf_xcalloc((size_t)batch, sizeof *rs);
    gen_ctx gc = {&inf, params, lab};
    mf_field f = {.be = be, .n = bf, .batch = batch, .eval = gen_eval, .ctx = &gc, .average = m->cfg.time_inputs == 2,
                  .eval_rows = gen_eval_rows};
    mf_sampler_opts so = {.steps = o->steps, .grid = o->grid ? o->grid : "uniform", .power = o->power > 0 ? o->power : 1,
                          .rtol = o->rtol, .atol = o->atol, .max_nfe = o->max_nfe, .row_stats = rs};
    int rc = z ? 0 : mf_fail("out of memory for samples");
    if (total_nfe) *total_nfe = 0;
    mf_progress *pg = n > batch ? mf_progress_begin("sample", n, "img") : NULL;
    for (int done = 0, bi = 0; rc == 0 && done < n; done += batch, bi++) {
        mf_progress_update(pg, done, NULL);
        int b = n - done < batch ? n - done : batch;
        memset(host, 0, sizeof(float) * (size_t)bf); /* padding rows of a short last batch: zeros, ignored */
        for (int i = 0; i < b; i++) mf_rng_normal(o->seed, MF_RNG_SAMPLE, (uint64_t)(done + i), host + (int64_t)i * img, img);
        if (lab)
            for (int i = 0; i < batch; i++) lab[i] = o->labels[done + (i < b ? i : 0)];
        f.rows = b;
        be->i->write(be, z, host, sizeof(float) * (size_t)bf);
        traj_rows tr = {be, o, img, {0}};
        bool want_traj = bi == 0 && o->traj && o->traj_frames >= 2 && o->traj_n > 0 && o->traj_n <= b && o->traj_n <= 256;
        so.on_step = want_traj ? traj_step : NULL;
        so.on_step_rows = want_traj ? traj_rows_step : NULL;
        so.user = want_traj ? &tr : NULL;
        if (want_traj)
            for (int s = 0; s < o->traj_n; s++) traj_store(&tr, z, s, tr.next[s]++);
        for (int i = 0; i < batch; i++) rs[i].nfe = -1; /* samplers without per-row counts leave them */
        mf_sampler_stats st = {0};
        rc = smp->run(&f, &so, z, &st);
        if (rc != 0) break;
        if (want_traj)
            for (int s = 0; s < o->traj_n; s++)
                while (tr.next[s] < o->traj_frames) traj_store(&tr, z, s, tr.next[s]++);
        if (nfe_batch) nfe_batch[bi] = st.nfe;
        if (nfe_sample)
            for (int i = 0; i < b; i++) nfe_sample[done + i] = rs[i].nfe >= 0 ? rs[i].nfe : st.nfe;
        if (total_nfe) *total_nfe += st.nfe;
        be->i->read(be, host, z, sizeof(float) * (size_t)bf);
        memcpy(x + (int64_t)done * img, host, sizeof(float) * (size_t)(img * b));
    }
    if (pg) {
        mf_progress_update(pg, n, NULL);
        mf_progress_end(pg);
    }
    if (z) be->i->free(be, z);
    free(host);
    free(lab);
    free(rs);
    mf_infer_free(&inf);
    const char *be_err = be->i->error(be);
    if (rc == 0 && be_err) rc = mf_fail("sampling: the %s backend failed: %s", be->kind, be_err);
    return rc;
}

void mf_unet_cfg_encode(const mf_unet_cfg *c, float out[MF_UNET_CFG_FLOATS]) {
    memset(out, 0, sizeof(float) * MF_UNET_CFG_FLOATS);
    int v[] = {1 /* version */, c->in_ch, c->height, c->width, c->ch, c->n_levels, c->mult[0], c->mult[1],
               c->mult[2], c->mult[3], c->mult[4], c->mult[5], c->res_blocks, c->groups, c->temb_dim,
               c->fourier_half, c->num_classes, c->time_inputs};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) out[i] = (float)v[i];
    out[18] = (float)c->null_class;
    out[19] = (float)c->interval_r;
    out[20] = c->time_scale;
}

int mf_unet_cfg_decode(const float *in, int64_t n, mf_unet_cfg *c) {
    if (n != MF_UNET_CFG_FLOATS || in[0] != 1.0f) return mf_fail("unknown model description (version %g)", n > 0 ? in[0] : -1.0);
    memset(c, 0, sizeof *c);
    int *f[] = {&c->in_ch, &c->height, &c->width, &c->ch, &c->n_levels, &c->mult[0], &c->mult[1], &c->mult[2],
                &c->mult[3], &c->mult[4], &c->mult[5], &c->res_blocks, &c->groups, &c->temb_dim,
                &c->fourier_half, &c->num_classes, &c->time_inputs};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) *f[i] = (int)in[1 + i];
    c->null_class = (int)in[18];
    c->interval_r = (int)in[19];
    c->time_scale = in[20];
    return mf_unet_check(c);
}

int mf_model_load(mf_backend *be, const char *run_dir, mf_model **out) {
    *out = NULL;
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/checkpoints", run_dir);
    mf_ckpt c;
    int found = mf_ckpt_load_latest(dir, &c, path, sizeof path, false /* read-only: the folder may be in use */);
    if (found < 0) return -1;
    if (found == 0) return mf_fail("%s: no valid checkpoint (is this a run folder with a train stage?)", dir);
    int rc = -1;
    mf_model *m = mf_xcalloc(1, sizeof *m);
    m->be = be;
    const mf_ckpt_section *cs = mf_ckpt_find(&c, "unet_cfg"), *ws = mf_ckpt_find(&c, "model");
    const mf_ckpt_section *es = mf_ckpt_find(&c, "ema");
    if (!cs || !ws) {
        mf_fail("%s: no model description or weights in the checkpoint", path);
        goto out;
    }
    if (mf_unet_cfg_decode(cs->data, cs->n, &m->cfg) != 0) {
        mf_error_prefix("%s: ", path);
        goto out;
    }
    mf_graph g;
    mf_unet ids;
    mf_graph_init(&g, be, 1);
    mf_unet_build(&g, &m->cfg, &ids);
    m->n_params = g.n_param_floats;
    for (int i = 0; i < g.n_params; i++) m->n_weights += g.params[i].numel;
    m->flops_per_image = g.flops_fwd;
    mf_graph_free(&g);
    if (ws->n != m->n_params || (es && es->n != m->n_params)) {
        mf_fail("%s: weights have %lld floats, the model described needs %lld", path, (long long)ws->n,
                (long long)m->n_params);
        goto out;
    }
    size_t bytes = sizeof(float) * (size_t)m->n_params;
    m->params = be->i->alloc(be, bytes);
    float *ema = es ? be->i->alloc(be, bytes) : NULL;
    if (!m->params || (es && !ema)) {
        be->i->free(be, ema);
        mf_fail("out of memory loading %s", path);
        goto out;
    }
    be->i->write(be, m->params, ws->data, bytes);
    if (ema) {
        be->i->write(be, ema, es->data, bytes);
        mf_model_register_state(m, "ema", ema, m->n_params);
        m->ema = ema;
    }
    m->step = (int64_t)c.step;
    mf_info("model: %s (step %lld, %lld parameters%s)", path, (long long)c.step, (long long)m->n_weights,
            ema ? ", with EMA weights" : "");
    *out = m;
    rc = 0;
out:
    if (rc) mf_model_free(m);
    mf_ckpt_free_loaded(&c);
    return rc;
}
