/* mf_model.c - the model artifact, the run's backend, inference graphs and the basic ODE samplers
 * (Euler, Heun) used for periodic sample grids. */
#include "mf_model.h"

#include <stdlib.h>
#include <string.h>

#include "mf_checkpoint.h"
#include "mf_error.h"
#include "mf_log.h"
#include "mf_rng.h"

static void backend_free_void(void *p) { mf_backend_free(p); }

mf_backend *mf_run_backend(mf_run *run) {
    void *found = mf_artifact_get(run, "backend", MF_ART_BACKEND);
    if (found) return found;
    mf_error_clear(); /* "no artifact" is expected on first use */
    mf_backend *be = mf_cpu_backend_new(mf_run_threads(run));
    if (!be) {
        mf_fail("cannot create the cpu backend");
        return NULL;
    }
    mf_artifact_put(run, "backend", MF_ART_BACKEND, be, backend_free_void);
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

void mf_infer_free(mf_infer *inf) { mf_graph_free(&inf->g); }

const float *mf_infer_eval(mf_infer *inf, const float *params, const float *z, float t, float r,
                           const int32_t *labels) {
    mf_graph *g = &inf->g;
    const mf_backend_i *k = inf->be->i;
    mf_graph_set_params(g, params);
    mf_gnode *x = &g->nodes[inf->ids.x];
    k->copy(inf->be, x->out, z, sizeof(float) * (size_t)x->numel);
    k->fill(inf->be, g->nodes[inf->ids.t].out, t, inf->batch);
    if (inf->ids.r >= 0) k->fill(inf->be, g->nodes[inf->ids.r].out, r, inf->batch);
    if (inf->ids.labels >= 0) mf_graph_set_labels(g, labels);
    mf_graph_forward(g);
    return g->nodes[inf->ids.out].out;
}

int mf_sample_ode(mf_infer *inf, const float *params, const char *method, int steps, float *z,
                  const int32_t *labels) {
    mf_backend *be = inf->be;
    const mf_backend_i *k = be->i;
    int64_t n = inf->g.nodes[inf->ids.x].numel;
    bool heun = strcmp(method, "heun") == 0;
    if (!heun && strcmp(method, "euler") != 0) return mf_fail("unknown sampler '%s' (euler, heun)", method);
    float *v1 = NULL, *zt = NULL;
    if (heun) {
        v1 = k->alloc(be, sizeof(float) * (size_t)n);
        zt = k->alloc(be, sizeof(float) * (size_t)n);
        if (!v1 || !zt) {
            k->free(be, v1);
            k->free(be, zt);
            return mf_fail("out of memory for the sampler");
        }
    }
    for (int i = 0; i < steps; i++) {
        float t0 = 1.0f - (float)i / (float)steps, t1 = 1.0f - (float)(i + 1) / (float)steps, dt = t0 - t1;
        const float *v = mf_infer_eval(inf, params, z, t0, t0, labels);
        if (!heun) {
            k->axpby(be, n, -dt, v, 1.0f, z); /* z -= dt v */
            continue;
        }
        k->copy(be, v1, v, sizeof(float) * (size_t)n);
        k->add2(be, n, 1.0f, z, -dt, v1, zt);
        const float *v2 = mf_infer_eval(inf, params, zt, t1, t1, labels);
        k->axpby(be, n, -0.5f * dt, v1, 1.0f, z);
        k->axpby(be, n, -0.5f * dt, v2, 1.0f, z);
    }
    k->free(be, v1);
    k->free(be, zt);
    return 0;
}

int mf_sample_images(mf_model *m, const float *params, const char *method, int steps, int n, uint64_t seed,
                     uint64_t stream, const int32_t *labels, float *x) {
    mf_backend *be = m->be;
    int batch = n < 256 ? n : 256;
    mf_infer inf;
    if (mf_infer_init(&inf, be, &m->cfg, batch, false) != 0) {
        mf_infer_free(&inf);
        return -1;
    }
    int64_t img = (int64_t)m->cfg.in_ch * m->cfg.height * m->cfg.width;
    float *z = be->i->alloc(be, sizeof(float) * (size_t)(img * batch));
    float *host = mf_xmalloc(sizeof(float) * (size_t)(img * batch));
    int rc = z ? 0 : mf_fail("out of memory for samples");
    for (int done = 0; rc == 0 && done < n; done += batch) {
        int b = n - done < batch ? n - done : batch;
        /* noise for image i comes from (seed, SAMPLE, stream, i): independent of the batch size */
        for (int i = 0; i < batch; i++) {
            int idx = done + (i < b ? i : 0);
            mf_rng_normal(seed, MF_RNG_SAMPLE, stream * 1000003ull + (uint64_t)idx, host + (int64_t)i * img, img);
        }
        be->i->write(be, z, host, sizeof(float) * (size_t)(img * batch));
        int32_t *lab = NULL;
        if (labels) {
            lab = mf_xmalloc(sizeof *lab * (size_t)batch);
            for (int i = 0; i < batch; i++) lab[i] = labels[done + (i < b ? i : 0)];
        }
        rc = mf_sample_ode(&inf, params, method, steps, z, lab);
        free(lab);
        if (rc == 0) {
            be->i->read(be, host, z, sizeof(float) * (size_t)(img * batch));
            memcpy(x + (int64_t)done * img, host, sizeof(float) * (size_t)(img * b));
        }
    }
    be->i->free(be, z);
    free(host);
    mf_infer_free(&inf);
    return rc;
}

void mf_unet_cfg_encode(const mf_unet_cfg *c, float out[MF_UNET_CFG_FLOATS]) {
    memset(out, 0, sizeof(float) * MF_UNET_CFG_FLOATS);
    int v[] = {1 /* version */, c->in_ch, c->height, c->width, c->ch, c->n_levels, c->mult[0], c->mult[1],
               c->mult[2], c->mult[3], c->mult[4], c->mult[5], c->res_blocks, c->groups, c->temb_dim,
               c->fourier_half, c->num_classes, c->time_inputs};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) out[i] = (float)v[i];
    out[20] = c->time_scale;
}

int mf_unet_cfg_decode(const float *in, int64_t n, mf_unet_cfg *c) {
    if (n != MF_UNET_CFG_FLOATS || in[0] != 1.0f) return mf_fail("unknown model description (version %g)", n > 0 ? in[0] : -1.0);
    memset(c, 0, sizeof *c);
    int *f[] = {&c->in_ch, &c->height, &c->width, &c->ch, &c->n_levels, &c->mult[0], &c->mult[1], &c->mult[2],
                &c->mult[3], &c->mult[4], &c->mult[5], &c->res_blocks, &c->groups, &c->temb_dim,
                &c->fourier_half, &c->num_classes, &c->time_inputs};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) *f[i] = (int)in[1 + i];
    c->time_scale = in[20];
    return mf_unet_check(c);
}

int mf_model_load(mf_backend *be, const char *run_dir, mf_model **out) {
    *out = NULL;
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/checkpoints", run_dir);
    mf_ckpt c;
    int found = mf_ckpt_load_latest(dir, &c, path, sizeof path);
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
