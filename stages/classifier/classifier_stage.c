/* classifier_stage.c - the `classifier` stage: trains the LeNet feature network of the evaluation
 * metrics (softmax cross-entropy, AdamW, cosine schedule) on the data set with the same engine, reports
 * train and test accuracy, and writes the weight file (optionally installing it, e.g. into models/). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mf_dataset.h"
#include "mf_io.h"
#include "mf_json.h"
#include "mf_lenet.h"
#include "mf_log.h"
#include "mf_metrics.h"
#include "mf_model.h"
#include "mf_rng.h"
#include "mf_stage.h"

typedef struct cls_state {
    char instance[64];
    int64_t steps;
    int batch;
    double lr, wd;
    const char *file, *install;
    int64_t log_every;
} cls_state;

static const mf_key cls_keys[] = {
    MF_INT("steps", "2500", 1, 1e9, "optimizer steps"),
    MF_INT("batch", "128", 1, 65536, "batch size"),
    MF_FLOAT("lr", "2e-3", 0, 10, "peak learning rate (cosine to 0, 100 warm-up steps)"),
    MF_FLOAT("weight_decay", "1e-4", 0, 10, "AdamW decoupled weight decay"),
    MF_INT("log_every", "100", 1, 1e9, "steps between metrics lines"),
    MF_STR("file", "lenet.mfw", "weight file written in the run folder"),
    MF_STR("install", "~", "also copy the weights here (e.g. models/lenet_mnist_v1.mfw)"),
    MF_KEY_END,
};

static int cls_create(mf_run *run, const char *instance, const mf_node *sec, void **state) {
    cls_state *s = mf_xcalloc(1, sizeof *s);
    *state = s;
    snprintf(s->instance, sizeof s->instance, "%s", instance);
    s->steps = mf_cfg_int(sec, "steps");
    s->batch = (int)mf_cfg_int(sec, "batch");
    s->lr = mf_cfg_float(sec, "lr");
    s->wd = mf_cfg_float(sec, "weight_decay");
    s->log_every = mf_cfg_int(sec, "log_every");
    s->file = mf_cfg_str(sec, "file");
    s->install = mf_cfg_str(sec, "install");
    if (!s->file || !*s->file || strstr(s->file, "..")) return mf_fail("%s.file: a file name inside the run folder", instance);
    return 0;
}

static double split_accuracy(mf_featnet *fn, const mf_split *sp, int classes) {
    if (sp->n == 0) return NAN;
    float *probs = mf_xmalloc(sizeof(float) * (size_t)sp->n * (size_t)classes);
    mf_featnet_run(fn, sp->x, sp->n, NULL, probs);
    double acc = mf_accuracy(probs, sp->y, sp->n, classes);
    free(probs);
    return acc;
}

static int cls_run(void *state, mf_run *run) {
    cls_state *s = state;
    mf_dataset *ds = mf_artifact_get(run, "dataset", MF_ART_DATASET);
    if (!ds) return -1;
    if (ds->num_classes < 2) return mf_fail("the data set '%s' has no class labels to train a classifier on", ds->name);
    mf_backend *be = mf_run_backend(run);
    if (!be) return -1;
    const mf_backend_i *k = be->i;
    mf_lenet_cfg cfg = {ds->C, ds->H, ds->W, ds->num_classes};
    mf_graph g;
    mf_lenet ids;
    mf_graph_init(&g, be, s->batch);
    mf_lenet_build(&g, &cfg, &ids);
    int rc = mf_graph_finalize(&g, ids.logits, true, false);
    int64_t np = g.n_param_floats, img = (int64_t)ds->C * ds->H * ds->W;
    int C = ds->num_classes, B = s->batch;
    size_t pb = sizeof(float) * (size_t)np;
    float *p = k->alloc(be, pb), *gr = k->alloc(be, pb), *m = k->alloc(be, pb), *v = k->alloc(be, pb);
    float *dl = k->alloc(be, sizeof(float) * (size_t)B * C);
    float *hp = mf_xmalloc(pb), *x = mf_xmalloc(sizeof(float) * (size_t)(img * B));
    float *logits = mf_xmalloc(sizeof(float) * (size_t)B * C), *prob = mf_xmalloc(sizeof(float) * (size_t)B * C);
    int32_t *y = mf_xmalloc(sizeof(int32_t) * (size_t)B);
    int64_t *perm = mf_xmalloc(sizeof(int64_t) * (size_t)ds->train.n), epoch = -1;
    if (rc == 0 && (!p || !gr || !m || !v || !dl)) rc = mf_fail("out of memory for the classifier");
    if (rc == 0) {
        mf_graph_init_params(&g, mf_run_seed(run) + 17, hp);
        k->write(be, p, hp, pb);
        k->fill(be, m, 0, np);
        k->fill(be, v, 0, np);
        mf_graph_set_params(&g, p);
        mf_graph_set_grads(&g, gr);
    }
    mf_progress *pg = rc == 0 ? mf_progress_begin("classifier", s->steps, "it") : NULL;
    double loss_acc = 0, hit = 0;
    for (int64_t step = 0; rc == 0 && step < s->steps; step++) {
        int64_t idx[B];
        for (int i = 0; i < B; i++) {
            int64_t gi = step * B + i, e = gi / ds->train.n;
            if (e != epoch) mf_dataset_epoch_order(ds, e, perm), epoch = e;
            idx[i] = perm[gi % ds->train.n];
        }
        mf_dataset_gather(ds, &ds->train, idx, B, x, y);
        mf_graph_write_input(&g, ids.x, x);
        mf_graph_forward(&g);
        k->read(be, logits, mf_graph_out(&g, ids.logits), sizeof(float) * (size_t)B * C);
        mf_softmax_rows(logits, B, C, prob);
        double loss = 0;
        for (int i = 0; i < B; i++) {
            loss -= log(fmax(prob[i * C + y[i]], 1e-30));
            int best = 0;
            for (int c = 1; c < C; c++)
                if (prob[i * C + c] > prob[i * C + best]) best = c;
            hit += best == y[i];
            for (int c = 0; c < C; c++) prob[i * C + c] = (prob[i * C + c] - (c == y[i])) / (float)B;
        }
        loss /= B;
        if (!isfinite(loss)) {
            rc = mf_fail("classifier step %lld: the loss is not finite; lower %s.lr", (long long)step + 1, s->instance);
            break;
        }
        k->write(be, dl, prob, sizeof(float) * (size_t)B * C);
        k->fill(be, gr, 0, np);
        mf_graph_backward(&g, dl);
        double warm = 100, lr = step < warm ? s->lr * (step + 1) / warm
                                            : s->lr * 0.5 * (1 + cos(M_PI * (step - warm) / fmax(1, s->steps - warm)));
        k->adamw(be, np, p, gr, m, v, (float)lr, 0.9f, 0.999f, 1e-8f, (float)s->wd, step + 1, 1.0f);
        loss_acc += loss;
        char extra[64];
        snprintf(extra, sizeof extra, "loss=%.4f", loss);
        mf_progress_update(pg, step + 1, extra);
        if ((step + 1) % s->log_every == 0 || step + 1 == s->steps) {
            int64_t n = (step + 1) % s->log_every ? (step + 1) % s->log_every : s->log_every;
            mf_buf b = {0};
            mf_json_int(&b, "step", step + 1);
            mf_json_num(&b, "loss", loss_acc / (double)n);
            mf_json_num(&b, "batch_acc", hit / (double)(n * B));
            mf_json_num(&b, "lr", lr);
            if (mf_metrics_append(run, s->instance, b.s) != 0) rc = -1;
            mf_buf_free(&b);
            loss_acc = hit = 0;
        }
        if (mf_run_interrupted(run)) rc = mf_fail("interrupted");
    }
    mf_progress_end(pg);
    if (rc == 0) {
        k->read(be, hp, p, pb);
        mf_featnet fn;
        rc = mf_featnet_init(&fn, be, NULL, &cfg, hp, 500);
        double tr = NAN, te = NAN;
        if (rc == 0) {
            tr = split_accuracy(&fn, &ds->train, C);
            te = split_accuracy(&fn, &ds->test, C);
        }
        mf_featnet_free(&fn);
        char path[4096];
        if (rc == 0) rc = mf_run_path(run, path, sizeof path, s->file);
        if (rc == 0) rc = mf_lenet_save(path, &cfg, hp, np);
        char sha[65] = "";
        if (rc == 0) rc = mf_sha256_file(path, sha);
        if (rc == 0 && s->install) rc = mf_lenet_save(s->install, &cfg, hp, np);
        if (rc == 0) {
            mf_buf b = {0};
            mf_json_num(&b, "train_acc", tr);
            mf_json_num(&b, "test_acc", te);
            mf_json_str(&b, "weights", path);
            mf_json_str(&b, "sha256", sha);
            rc = mf_metrics_append(run, s->instance, b.s);
            mf_buf_free(&b);
            mf_info("classifier: train accuracy %.4f, test accuracy %.4f; weights %s (sha256 %s)%s%s", tr, te, path, sha,
                    s->install ? ", installed as " : "", s->install ? s->install : "");
        }
    }
    k->free(be, p), k->free(be, gr), k->free(be, m), k->free(be, v), k->free(be, dl);
    free(hp), free(x), free(logits), free(prob), free(y), free(perm);
    mf_graph_free(&g);
    return rc;
}

static void cls_destroy(void *state) { free(state); }

static const char *const k_resume_free_all[] = {"*", NULL}; /* keeps no state across a resume */
static const mf_stage_api cls_api = {
    .abi_version = MF_STAGE_ABI_VERSION,
    .struct_size = sizeof(mf_stage_api),
    .kind = "classifier",
    .summary = "trains the LeNet feature network of the evaluation metrics; reports train/test accuracy",
    .keys = cls_keys,
    .create = cls_create,
    .run = cls_run,
    .destroy = cls_destroy,
    .resume_free = k_resume_free_all,
};

MF_STAGE_PLUGIN(cls_api)
