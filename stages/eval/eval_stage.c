/* eval_stage.c - the `eval` stage: metrics of generated images in the feature space of the fixed LeNet
 * network (models/lenet_mnist_v1.mfw): FID (float64 statistics, covariance over N-1, matrix square
 * root by a symmetric eigensolver; reference statistics cached per data set and feature network),
 * precision/recall (k-NN manifolds), classifier score (IS with this classifier), confidence, class
 * histogram, conditional accuracy, and a memorisation check (nearest training images). Writes
 * eval.json and metrics.jsonl; every record carries N and the feature network's id. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mf_dataset.h"
#include "mf_hooks.h"
#include "mf_io.h"
#include "mf_json.h"
#include "mf_lenet.h"
#include "mf_log.h"
#include "mf_metrics.h"
#include "mf_model.h"
#include "mf_quant.h"
#include "mf_rng.h"
#include "mf_stage.h"

#define EVAL_MAX_METRICS 32
typedef struct eval_state {
    char instance[64];
    int n_hm;                                  /* the scalar metrics, for the on_eval hook */
    char hm_name[EVAL_MAX_METRICS][64];
    double hm_val[EVAL_MAX_METRICS];
    const char *features, *feature_name, *samples, *cache;
    int n, k, grid_nrow, grid_padding, memo_n;
    int fid, pr, cls, memo;
    int reference; /* evaluate N training images instead of samples (the floor) */
    long long subset_seed; /* seed of the random reference subsets (precision/recall, the floor) */
    int check;     /* report the feature network's accuracy only */
} eval_state;

static const mf_key eval_keys[] = {
    MF_STR("features", "models/lenet_mnist_v1.mfw", "feature network weights (relative: to the current folder, then the source tree)"),
    MF_STR("feature_name", "lenet_v1", "feature network name used in metric names (fid_<name>)"),
    MF_STR("samples", "~", "IDX file or PNG grid of samples (default: the sample stage's samples)"),
    MF_INT("grid_nrow", "10", 1, 10000, "PNG grid input: images per row (make_grid layout)"),
    MF_INT("grid_padding", "2", 0, 100, "PNG grid input: padding"),
    MF_INT("n", "10000", 2, 10000000, "samples evaluated at most (the N used is recorded)"),
    MF_STRS("metrics", "[fid, precision_recall, classifier_score, memorization]", "metrics to compute"),
    MF_INT("k", "3", 1, 100, "k of the precision/recall k-NN manifolds"),
    MF_INT("memorization_n", "8", 1, 100, "samples shown with their nearest training image"),
    MF_INT("subset_seed", "0", 0, 9007199254740991.0, "seed of the random subsets of the reference sets (precision/recall's real set, the floor's training images); recorded in eval.json"),
    MF_STR("cache", "data/cache", "folder for cached reference statistics"),
    MF_BOOL("reference", "false", "evaluate n training images against the test set (the floor)"),
    MF_BOOL("check_features", "false", "only report the feature network's train and test accuracy"),
    MF_KEY_END,
};

static int eval_create(mf_run *run, const char *instance, const mf_node *sec, void **state) {
    eval_state *s = mf_xcalloc(1, sizeof *s);
    *state = s;
    snprintf(s->instance, sizeof s->instance, "%s", instance);
    s->features = mf_cfg_str(sec, "features");
    s->feature_name = mf_cfg_str(sec, "feature_name");
    s->samples = mf_cfg_str(sec, "samples");
    s->grid_nrow = (int)mf_cfg_int(sec, "grid_nrow");
    s->grid_padding = (int)mf_cfg_int(sec, "grid_padding");
    s->n = (int)mf_cfg_int(sec, "n");
    s->k = (int)mf_cfg_int(sec, "k");
    s->memo_n = (int)mf_cfg_int(sec, "memorization_n");
    s->cache = mf_cfg_str(sec, "cache");
    s->reference = mf_cfg_bool(sec, "reference");
    s->subset_seed = mf_cfg_int(sec, "subset_seed");
    s->check = mf_cfg_bool(sec, "check_features");
    const mf_node *ml = mf_cfg_find(sec, "metrics");
    for (const mf_node *it = ml ? ml->first : NULL; it; it = it->next) {
        const char *v = it->value ? it->value : "";
        if (strcmp(v, "fid") == 0) s->fid = 1;
        else if (strcmp(v, "precision_recall") == 0) s->pr = 1;
        else if (strcmp(v, "classifier_score") == 0) s->cls = 1;
        else if (strcmp(v, "memorization") == 0) s->memo = 1;
        else {
            char where[512];
            return mf_fail("%s: %s.metrics: unknown metric '%s' (fid, precision_recall, classifier_score, memorization)",
                           mf_node_where(it, where, sizeof where), instance, v);
        }
    }
    if (!s->feature_name || !*s->feature_name) return mf_fail("%s.feature_name: required", instance);
    return 0;
}

/* A relative path from the current folder, else from the source tree the program was built from. */
static const char *resolve(const char *path, char *buf, size_t cap) {
    struct stat st;
    if (path[0] == '/' || stat(path, &st) == 0) return path;
    snprintf(buf, cap, "%s/%s", MFPIPE_SOURCE_DIR, path);
    return stat(buf, &st) == 0 ? buf : path;
}

/* The classes a sample stage asked for (labels.idx1-ubyte beside samples.idx3-ubyte), if written. */
static int load_sibling_labels(const char *samples, mf_samples *sm) {
    const char *slash = strrchr(samples, '/'), *base = slash ? slash + 1 : samples;
    if (strcmp(base, "samples.idx3-ubyte") != 0) return 0;
    char *path = mf_xasprintf("%.*slabels.idx1-ubyte", (int)(base - samples), samples);
    struct stat st;
    int rc = 0;
    if (stat(path, &st) == 0) {
        mf_idx idx = {0};
        rc = mf_idx_read(path, NULL, &idx);
        if (rc == 0 && (idx.dtype != MF_IDX_U8 || idx.ndim != 1 || idx.dims[0] != sm->n))
            rc = mf_fail("%s: expected %lld unsigned-byte labels for %s", path, (long long)sm->n, samples);
        if (rc == 0) {
            sm->labels = mf_xmalloc(sizeof(int32_t) * (size_t)(sm->n ? sm->n : 1));
            for (int64_t i = 0; i < sm->n; i++) sm->labels[i] = idx.data[i];
        }
        mf_idx_free(&idx);
    }
    free(path);
    return rc;
}

/* Samples from an IDX file (u8, (n,H,W) or (n,C,H,W)) or a PNG grid in make_grid layout. */
static int load_samples(eval_state *s, const mf_dataset *ds, mf_samples **out) {
    mf_samples *sm = mf_xcalloc(1, sizeof *sm);
    snprintf(sm->source, sizeof sm->source, "%s", s->samples);
    size_t len = strlen(s->samples);
    int rc = 0;
    if (len > 4 && strcasecmp(s->samples + len - 4, ".png") == 0) {
        int w, h, C = ds->C;
        uint8_t *px;
        rc = mf_png_read(s->samples, C, &w, &h, &px);
        if (rc == 0) {
            int p = s->grid_padding, cw = ds->W + p, ch = ds->H + p;
            int cols = (w - p) / cw, rows = (h - p) / ch;
            if (cols < 1 || rows < 1 || cols * cw + p != w || rows * ch + p != h)
                rc = mf_fail("%s: %dx%d is not a make_grid of %dx%d images with padding %d", s->samples, w, h, ds->W, ds->H, p);
            else {
                if (cols > s->grid_nrow) cols = s->grid_nrow;
                sm->n = (int64_t)rows * cols;
                sm->C = C, sm->H = ds->H, sm->W = ds->W;
                sm->x = mf_xmalloc(sizeof(float) * (size_t)(sm->n * C * ds->H * ds->W));
                for (int64_t i = 0; i < sm->n; i++) {
                    int r = (int)(i / cols), c = (int)(i % cols);
                    for (int cc = 0; cc < C; cc++)
                        for (int y = 0; y < ds->H; y++)
                            for (int x = 0; x < ds->W; x++) {
                                uint8_t v = px[((size_t)(r * ch + p + y) * w + (size_t)(c * cw + p + x)) * C + cc];
                                sm->x[((i * C + cc) * ds->H + y) * ds->W + x] = mf_dequant_u8(v);
                            }
                }
            }
            free(px);
        }
    } else {
        mf_idx idx;
        /* a sample stage may write up to 10^7 images: no 1 GiB default here */
        mf_idx_limits lim = {.max_bytes = (size_t)1 << 40};
        rc = mf_idx_read_max(s->samples, NULL, &lim, &idx);
        if (rc == 0) {
            int C = idx.ndim == 4 ? (int)idx.dims[1] : 1;
            int H = (int)idx.dims[idx.ndim - 2], W = (int)idx.dims[idx.ndim - 1];
            if (idx.dtype != MF_IDX_U8 || idx.ndim < 3 || C != ds->C || H != ds->H || W != ds->W)
                rc = mf_fail("%s: expected unsigned-byte images of %dx%dx%d (the data set's shape)", s->samples, ds->C, ds->H, ds->W);
            else {
                sm->n = idx.dims[0];
                sm->C = C, sm->H = H, sm->W = W;
                int64_t tot = sm->n * C * H * W;
                sm->x = mf_xmalloc(sizeof(float) * (size_t)tot);
                mf_dequant_u8_n(idx.data, tot, sm->x);
            }
            mf_idx_free(&idx);
        }
        if (rc == 0) rc = load_sibling_labels(s->samples, sm);
    }
    if (rc) {
        mf_samples_free(sm);
        return -1;
    }
    *out = sm;
    return 0;
}

/* The seeded permutation of 0..n-1 (Philox, Fisher-Yates); its first m entries are m indexes drawn
 * without replacement. The caller frees the result. */
static int64_t *random_subset(uint64_t seed, uint64_t step, int64_t n) {
    int64_t *perm = mf_xmalloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    mf_rng_permutation(seed, MF_RNG_EVAL_SUBSET, step, perm, n);
    return perm;
}

/* Rows idx[0..m) of x (rows of `row` floats) into a new array. */
static float *gather_rows(const float *x, const int64_t *idx, int64_t m, int64_t row) {
    float *out = mf_xmalloc(sizeof(float) * (size_t)(m * row > 0 ? m * row : 1));
    for (int64_t i = 0; i < m; i++) memcpy(out + i * row, x + idx[i] * row, sizeof(float) * (size_t)row);
    return out;
}

static void put_metric(eval_state *s, mf_buf *json, mf_run *run, const char *name, double v, int64_t n,
                       const char *net, const char *dataset) {
    const char *inst = s->instance;
    if (s->n_hm < EVAL_MAX_METRICS) {
        snprintf(s->hm_name[s->n_hm], sizeof s->hm_name[0], "%s", name);
        s->hm_val[s->n_hm++] = v;
    }
    mf_buf b = {0};
    mf_json_str(&b, "metric", name);
    mf_json_num(&b, "value", v);
    mf_json_int(&b, "n", n);
    mf_json_str(&b, "feature_net", net);
    mf_json_str(&b, "dataset", dataset);
    mf_metrics_append(run, inst, b.s);
    mf_buf_printf(json, "%s{%s}", json->len > 1 ? ",\n  " : "\n  ", b.s);
    mf_buf_free(&b);
    mf_info("%-28s %12.6g  (N=%lld)", name, v, (long long)n);
}

static int eval_run(void *state, mf_run *run) {
    eval_state *s = state;
    s->n_hm = 0;
    mf_dataset *ds = mf_artifact_get(run, "dataset", MF_ART_DATASET);
    if (!ds) return mf_error_prefix("the eval stage needs the data set (a data stage before it): ");
    mf_backend *be = mf_run_backend(run);
    if (!be) return -1;
    char fbuf[4096] = "";
    mf_featnet fn;
    if (mf_featnet_init(&fn, be, resolve(s->features, fbuf, sizeof fbuf), NULL, NULL, 500) != 0) {
        mf_featnet_free(&fn);
        return mf_error_prefix("%s.features: ", s->instance);
    }
    int rc = 0;
    if (fn.cfg.in_ch != ds->C || fn.cfg.height != ds->H || fn.cfg.width != ds->W) {
        rc = mf_fail("%s: the feature network takes %dx%dx%d images, the data set has %dx%dx%d", s->features, fn.cfg.in_ch,
                     fn.cfg.height, fn.cfg.width, ds->C, ds->H, ds->W);
        mf_featnet_free(&fn);
        return rc;
    }
    char net[128];
    snprintf(net, sizeof net, "%s@%.12s", s->feature_name, fn.sha);
    int C = fn.cfg.classes, d = MF_LENET_FEATURES;
    if (s->check) {
        double acc[2];
        const mf_split *sp[2] = {&ds->train, &ds->test};
        for (int i = 0; i < 2; i++) {
            float *pr = mf_xmalloc(sizeof(float) * (size_t)(sp[i]->n ? sp[i]->n : 1) * (size_t)C);
            mf_featnet_run(&fn, sp[i]->x, sp[i]->n, NULL, pr);
            acc[i] = sp[i]->y && sp[i]->n ? mf_accuracy(pr, sp[i]->y, sp[i]->n, C) : NAN;
            free(pr);
        }
        mf_buf b = {0};
        mf_json_str(&b, "feature_net", net);
        mf_json_num(&b, "train_acc", acc[0]);
        mf_json_int(&b, "n_train", ds->train.n);
        mf_json_num(&b, "test_acc", acc[1]);
        mf_json_int(&b, "n_test", ds->test.n);
        rc = mf_metrics_append(run, s->instance, b.s);
        mf_buf_free(&b);
        printf("feature network %s (%s): train accuracy %.4f (%lld images), test accuracy %.4f (%lld images)\n", net,
               fbuf[0] ? fbuf : s->features, acc[0], (long long)ds->train.n, acc[1], (long long)ds->test.n);
        fflush(stdout);
        mf_featnet_free(&fn);
        return rc;
    }

    /* what is evaluated: samples from this run, a file, or training images (the floor) */
    mf_samples *own = NULL, *sm = NULL;
    mf_samples ref_view = {0};
    float *ref_x = NULL; /* the floor's random subset of training images */
    if (s->reference) {
        ref_view.n = ds->train.n < s->n ? ds->train.n : s->n;
        ref_view.C = ds->C, ref_view.H = ds->H, ref_view.W = ds->W;
        ref_view.x = ds->train.x;
        if (ref_view.n < ds->train.n) { /* a random n of them, not the first n */
            int64_t *perm = random_subset((uint64_t)s->subset_seed, 1, ds->train.n);
            ref_view.x = ref_x = gather_rows(ds->train.x, perm, ref_view.n, (int64_t)ds->C * ds->H * ds->W);
            free(perm);
        }
        snprintf(ref_view.source, sizeof ref_view.source, "%s train split", ds->name);
        sm = &ref_view;
    } else if (s->samples) {
        if (load_samples(s, ds, &own) != 0) {
            mf_featnet_free(&fn);
            return -1;
        }
        sm = own;
    } else {
        mf_error_clear();
        mf_samples *art = mf_artifact_get(run, "samples", MF_ART_SAMPLES);
        if (!art) {
            mf_featnet_free(&fn);
            return mf_fail("nothing to evaluate: put a sample stage before '%s', or set %s.samples", s->instance, s->instance);
        }
        /* measure what the samples file holds: the sample stage's floats quantised to the bytes it
         * wrote and read back as an IDX reader does (mf_quant.h), so `mfpipe eval RUN` gives the same
         * numbers from the file alone */
        own = mf_xcalloc(1, sizeof *own);
        *own = *art;
        int64_t tot = art->n * art->C * art->H * art->W;
        own->x = mf_xmalloc(sizeof(float) * (size_t)(tot ? tot : 1));
        memcpy(own->x, art->x, sizeof(float) * (size_t)tot);
        mf_quant_roundtrip(own->x, tot);
        if (art->labels) {
            own->labels = mf_xmalloc(sizeof(int32_t) * (size_t)(art->n ? art->n : 1));
            memcpy(own->labels, art->labels, sizeof(int32_t) * (size_t)art->n);
        }
        sm = own;
    }
    int64_t n = sm->n < s->n ? sm->n : s->n;
    float *feat = mf_xmalloc(sizeof(float) * (size_t)n * (size_t)d), *probs = mf_xmalloc(sizeof(float) * (size_t)n * (size_t)C);
    mf_featnet_run(&fn, sm->x, n, feat, probs);

    /* reference: the test split's features and statistics (cached per data set and network) */
    char dataset[160];
    snprintf(dataset, sizeof dataset, "%s-test-%lld", ds->name, (long long)ds->test.n);
    int64_t nt = ds->test.n;
    float *tfeat = nt ? mf_xmalloc(sizeof(float) * (size_t)nt * (size_t)d) : NULL;
    if (nt < 2) rc = mf_fail("the %s test split has %lld images; the reference needs at least 2", ds->name, (long long)nt);
    if (rc == 0) mf_featnet_run(&fn, ds->test.x, nt, tfeat, NULL);
    mf_buf json = {0};
    mf_buf_puts(&json, "[");
    char name[160];
    int64_t pr_n = -1; /* size of precision/recall's real set, when computed */
    if (rc == 0 && s->fid) {
        mf_gauss gr = {0}, gs = {0};
        char key[300], cpath[4096];
        snprintf(key, sizeof key, "%s/%s", dataset, net);
        snprintf(cpath, sizeof cpath, "%s/fid_ref_%s_%s_%.12s.bin", s->cache, dataset, s->feature_name, fn.sha);
        if (mf_gauss_load(cpath, key, &gr) != 0) {
            mf_error_clear();
            rc = mf_gauss_fit(tfeat, nt, d, &gr);
            if (rc == 0) {
                if (mf_mkdirs(s->cache) != 0) mf_warn("reference statistics not cached: %s", mf_last_error());
                if (mf_gauss_save(cpath, &gr, key) != 0) mf_warn("reference statistics not cached: %s", mf_last_error());
                else mf_info("cached reference statistics: %s", cpath);
            }
        }
        if (rc == 0) rc = mf_gauss_fit(feat, n, d, &gs);
        if (rc == 0) {
            double fid = mf_fid(&gs, &gr);
            if (fid < 0) rc = -1; /* the eigensolver failed (mf_fail set) */
            snprintf(name, sizeof name, "fid_%s", s->feature_name);
            if (rc == 0) put_metric(s, &json, run, name, fid, n, net, dataset);
        }
        mf_gauss_free(&gr);
        mf_gauss_free(&gs);
    }
    if (rc == 0 && s->pr) {
        double p, r;
        /* equal N on both sides: a random subset of the test set (seeded, without replacement) when the
         * test set is larger than N */
        int64_t nr = nt < n ? nt : n;
        float *rfeat = tfeat;
        if (nr < nt) {
            int64_t *perm = random_subset((uint64_t)s->subset_seed, 0, nt);
            rfeat = gather_rows(tfeat, perm, nr, d);
            free(perm);
        }
        pr_n = nr;
        rc = mf_precision_recall(rfeat, nr, feat, n, d, s->k, &p, &r);
        if (rfeat != tfeat) free(rfeat);
        if (rc == 0) {
            snprintf(name, sizeof name, "precision_%s_k%d", s->feature_name, s->k);
            put_metric(s, &json, run, name, p, n, net, dataset);
            snprintf(name, sizeof name, "recall_%s_k%d", s->feature_name, s->k);
            put_metric(s, &json, run, name, r, n, net, dataset);
        }
    }
    if (rc == 0 && s->cls) {
        mf_cls_scores cs;
        rc = mf_classifier_scores(probs, n, C, sm->labels, &cs);
        if (rc == 0) {
            snprintf(name, sizeof name, "classifier_score_%s", s->feature_name);
            put_metric(s, &json, run, name, cs.is, n, net, dataset);
            snprintf(name, sizeof name, "mean_max_confidence_%s", s->feature_name);
            put_metric(s, &json, run, name, cs.mean_max_conf, n, net, dataset);
            snprintf(name, sizeof name, "class_entropy_norm_%s", s->feature_name);
            put_metric(s, &json, run, name, cs.hist_entropy_norm, n, net, dataset);
            if (sm->labels) {
                snprintf(name, sizeof name, "conditional_accuracy_%s", s->feature_name);
                put_metric(s, &json, run, name, cs.label_acc, n, net, dataset);
            }
            mf_buf h = {0};
            mf_buf_puts(&h, "[");
            for (int c = 0; c < C; c++) mf_buf_printf(&h, "%s%lld", c ? "," : "", (long long)cs.hist[c]);
            mf_buf_puts(&h, "]");
            mf_buf b = {0};
            mf_json_str(&b, "metric", "class_histogram");
            mf_json_raw(&b, "value", h.s);
            mf_json_int(&b, "n", n);
            mf_json_str(&b, "feature_net", net);
            mf_metrics_append(run, s->instance, b.s);
            mf_buf_printf(&json, ",\n  {%s}", b.s);
            mf_info("class histogram %s", h.s);
            mf_buf_free(&h);
            mf_buf_free(&b);
        }
    }
    if (rc == 0 && s->memo && mf_run_dir(run) && ds->train.n > 0) {
        /* the nearest training image (pixels) of the first few samples, shown in a PNG: top row samples */
        int m = s->memo_n < n ? s->memo_n : (int)n;
        int64_t img = (int64_t)ds->C * ds->H * ds->W, *idx = mf_xmalloc(sizeof(int64_t) * (size_t)m);
        double *dist = mf_xmalloc(sizeof(double) * (size_t)m), mean = 0;
        rc = mf_nearest(sm->x, m, ds->train.x, ds->train.n, (int)img, idx, dist);
        if (rc == 0) {
            float *pair = mf_xmalloc(sizeof(float) * (size_t)(2 * m * img));
            memcpy(pair, sm->x, sizeof(float) * (size_t)(m * img));
            for (int i = 0; i < m; i++) {
                memcpy(pair + (m + i) * img, ds->train.x + idx[i] * img, sizeof(float) * (size_t)img);
                mean += dist[i] / m;
            }
            char path[4096];
            rc = mf_run_path(run, path, sizeof path, "eval/nearest_train.png");
            if (rc == 0) rc = mf_grid_write_png(path, pair, 2 * m, ds->C, ds->H, ds->W, -1.0f, 1.0f, m, 2, 0.0f);
            if (rc == 0) put_metric(s, &json, run, "nearest_train_l2_mean", mean, m, "pixels", ds->name);
            free(pair);
        }
        free(idx);
        free(dist);
    }
    mf_hooks *hk = mf_run_hooks(run);
    if (rc == 0 && mf_hooks_has(hk, MF_HOOK_ON_EVAL)) {
        /* on_eval(m): the scalar metrics; its log = {...} become metrics of this evaluation */
        mf_model *mdl = mf_artifact_get(run, "model", MF_ART_MODEL);
        if (!mdl) mf_error_clear();
        const char *names[EVAL_MAX_METRICS];
        for (int i = 0; i < s->n_hm; i++) names[i] = s->hm_name[i];
        mf_hook_action act;
        int nm = s->n_hm;
        rc = mf_hooks_on_eval(hk, mdl ? mdl->step : 0, nm, names, s->hm_val, &act);
        for (int i = 0; rc == 0 && i < act.n_log; i++) {
            for (int j = 0; j < nm; j++)
                if (strcmp(names[j], act.log_name[i]) == 0)
                    rc = mf_fail("hook on_eval: log.%s would overwrite a metric; choose another name", act.log_name[i]);
            if (rc == 0) put_metric(s, &json, run, act.log_name[i], act.log_value[i], n, "hook", dataset);
        }
        if (rc == 0 && (act.stop[0] || act.checkpoint))
            mf_warn("hook on_eval: stop and checkpoint have no effect after the evaluation (training has ended)");
    }
    mf_buf_puts(&json, "\n]");
    if (rc == 0 && mf_run_dir(run)) {
        mf_buf out = {0};
        mf_buf_puts(&out, "{");
        mf_json_str(&out, "samples", sm->source);
        mf_json_int(&out, "n", n);
        mf_json_str(&out, "feature_net", net);
        mf_json_str(&out, "dataset", dataset);
        /* the random reference subsets: seed, and the sizes drawn from which set */
        mf_json_int(&out, "subset_seed", s->subset_seed);
        if (pr_n >= 0) {
            mf_json_int(&out, "precision_recall_real_n", pr_n);
            mf_json_int(&out, "precision_recall_real_of", nt);
        }
        if (s->reference) {
            mf_json_int(&out, "reference_train_n", ref_view.n);
            mf_json_int(&out, "reference_train_of", ds->train.n);
        }
        mf_json_raw(&out, "metrics", json.s);
        mf_buf_puts(&out, "}\n");
        char path[4096];
        rc = mf_run_path(run, path, sizeof path, "eval.json");
        if (rc == 0) rc = mf_write_file_atomic(path, out.s, out.len);
        mf_buf_free(&out);
    }
    mf_buf_free(&json);
    free(feat), free(probs), free(tfeat);
    mf_samples_free(own);
    free(ref_x);
    mf_featnet_free(&fn);
    return rc;
}

static void eval_destroy(void *state) { free(state); }

static const char *const k_resume_free_all[] = {"*", NULL}; /* keeps no state across a resume */
static const mf_stage_api eval_api = {
    .abi_version = MF_STAGE_ABI_VERSION,
    .struct_size = sizeof(mf_stage_api),
    .kind = "eval",
    .summary = "FID, precision/recall, classifier score, memorisation in a fixed LeNet's feature space",
    .keys = eval_keys,
    .create = eval_create,
    .run = eval_run,
    .destroy = eval_destroy,
    .resume_free = k_resume_free_all,
};

MF_STAGE_PLUGIN(eval_api)
