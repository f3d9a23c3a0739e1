/* mf_lenet.c - the LeNet-style feature network: graph builder and weight files. */
#include "mf_lenet.h"

#include <stdlib.h>
#include <string.h>

#include "mf_error.h"
#include "mf_io.h"
#include "mf_metrics.h"

void mf_lenet_build(mf_graph *g, const mf_lenet_cfg *c, mf_lenet *ids) {
    ids->x = mf_g_input(g, c->in_ch, c->height, c->width);
    int h = mf_g_silu(g, mf_g_conv(g, ids->x, 32, 3, 1, "conv1"));
    h = mf_g_silu(g, mf_g_conv(g, h, 64, 3, 2, "conv2"));
    h = mf_g_silu(g, mf_g_conv(g, h, 64, 3, 2, "conv3"));
    h = mf_g_silu(g, mf_g_conv(g, h, 64, 3, 2, "conv4"));
    ids->features = mf_g_silu(g, mf_g_linear(g, h, MF_LENET_FEATURES, "fc1"));
    mf_graph_keep(g, ids->features);
    ids->logits = mf_g_linear(g, ids->features, c->classes, "fc2");
}

static const char k_magic[8] = {'M', 'F', 'L', 'E', 'N', 'E', 'T', '1'};

int mf_lenet_save(const char *path, const mf_lenet_cfg *c, const float *params, int64_t n) {
    size_t len = 8 + 16 + 8 + sizeof(float) * (size_t)n + 32;
    uint8_t *buf = mf_xmalloc(len), *p = buf;
    int32_t cfg[4] = {c->in_ch, c->height, c->width, c->classes};
    memcpy(p, k_magic, 8), p += 8;
    memcpy(p, cfg, 16), p += 16;
    memcpy(p, &n, 8), p += 8;
    memcpy(p, params, sizeof(float) * (size_t)n), p += sizeof(float) * (size_t)n;
    mf_sha256_trailer_put(buf, (size_t)(p - buf));
    int rc = mf_write_file_atomic(path, buf, len);
    free(buf);
    return rc;
}

int mf_lenet_load(const char *path, mf_lenet_cfg *c, float **params, int64_t *n, char *sha_hex) {
    uint8_t *buf;
    size_t len;
    int gz;
    MF_TRY(mf_read_file(path, &buf, &len, &gz));
    int rc = -1;
    if (len < 8 + 16 + 8 + 32 || memcmp(buf, k_magic, 8) != 0) {
        mf_fail("%s: not a LeNet weight file (bad magic at byte 0)", path);
        goto out;
    }
    if (!mf_sha256_trailer_ok(buf, len)) {
        mf_fail("%s: checksum mismatch (corrupt or truncated weight file)", path);
        goto out;
    }
    int32_t cfg[4];
    memcpy(cfg, buf + 8, 16);
    memcpy(n, buf + 24, 8);
    if (*n < 0 || 32 + sizeof(float) * (size_t)*n + 32 != len) {
        mf_fail("%s: %lld parameters do not fit the file size %zu", path, (long long)*n, len);
        goto out;
    }
    c->in_ch = cfg[0], c->height = cfg[1], c->width = cfg[2], c->classes = cfg[3];
    *params = mf_xmalloc(sizeof(float) * (size_t)*n);
    memcpy(*params, buf + 32, sizeof(float) * (size_t)*n);
    if (sha_hex) mf_sha256_hex(buf, len, sha_hex);
    rc = 0;
out:
    free(buf);
    return rc;
}

int mf_featnet_init(mf_featnet *f, mf_backend *be, const char *path, const mf_lenet_cfg *cfg, const float *host_params,
                    int batch) {
    memset(f, 0, sizeof *f);
    f->be = be;
    f->batch = batch;
    float *hp = NULL;
    int64_t n = 0;
    if (path) {
        MF_TRY(mf_lenet_load(path, &f->cfg, &hp, &n, f->sha));
    } else {
        f->cfg = *cfg;
    }
    mf_graph_init(&f->g, be, batch);
    f->g.fp32 = true; /* features (FID, scores) in float32 whatever the run's precision */
    mf_lenet_build(&f->g, &f->cfg, &f->ids);
    int rc = mf_graph_finalize(&f->g, f->ids.logits, false, false);
    if (rc == 0 && path && n != f->g.n_param_floats)
        rc = mf_fail("%s: %lld parameters, the network needs %lld", path, (long long)n, (long long)f->g.n_param_floats);
    f->n_params = f->g.n_param_floats;
    if (rc == 0) {
        f->params = be->i->alloc(be, sizeof(float) * (size_t)f->n_params);
        if (!f->params) rc = mf_fail("out of memory for the feature network");
    }
    if (rc == 0) {
        be->i->write(be, f->params, path ? hp : host_params, sizeof(float) * (size_t)f->n_params);
        mf_graph_set_params(&f->g, f->params);
    }
    free(hp);
    return rc;
}

void mf_featnet_free(mf_featnet *f) {
    if (f->params) f->be->i->free(f->be, f->params);
    mf_graph_free(&f->g);
    memset(f, 0, sizeof *f);
}

int mf_featnet_run(mf_featnet *f, const float *x, int64_t n, float *feat, float *probs) {
    int64_t img = (int64_t)f->cfg.in_ch * f->cfg.height * f->cfg.width;
    int B = f->batch, C = f->cfg.classes;
    float *in = mf_xmalloc(sizeof(float) * (size_t)(img * B));
    float *hf = mf_xmalloc(sizeof(float) * (size_t)B * MF_LENET_FEATURES);
    float *hl = mf_xmalloc(sizeof(float) * (size_t)B * (size_t)C);
    for (int64_t done = 0; done < n; done += B) {
        int64_t b = n - done < B ? n - done : B;
        memcpy(in, x + done * img, sizeof(float) * (size_t)(img * b));
        for (int64_t i = b; i < B; i++) memcpy(in + i * img, x + done * img, sizeof(float) * (size_t)img);
        mf_graph_write_input(&f->g, f->ids.x, in);
        mf_graph_forward(&f->g);
        if (feat) {
            f->be->i->read(f->be, hf, mf_graph_out(&f->g, f->ids.features), sizeof(float) * (size_t)B * MF_LENET_FEATURES);
            memcpy(feat + done * MF_LENET_FEATURES, hf, sizeof(float) * (size_t)b * MF_LENET_FEATURES);
        }
        if (probs) {
            f->be->i->read(f->be, hl, mf_graph_out(&f->g, f->ids.logits), sizeof(float) * (size_t)B * (size_t)C);
            mf_softmax_rows(hl, b, C, probs + done * C);
        }
    }
    free(in), free(hf), free(hl);
    const char *be_err = f->be->i->error(f->be);
    if (be_err) return mf_fail("features: the %s backend failed: %s", f->be->kind, be_err);
    return 0;
}

double mf_accuracy(const float *probs, const int32_t *labels, int64_t n, int classes) {
    int64_t ok = 0;
    for (int64_t i = 0; i < n; i++) {
        int best = 0;
        for (int c = 1; c < classes; c++)
            if (probs[i * classes + c] > probs[i * classes + best]) best = c;
        ok += best == labels[i];
    }
    return n ? (double)ok / (double)n : 0;
}
