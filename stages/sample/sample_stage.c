/* sample_stage.c - the `sample` stage: N images from the trained model (EMA weights by default) with
 * any registered sampler, seeded so the same seed gives the same images; writes a make_grid PNG (also
 * copied to outputs/mnist_digits_final.png, the seed's name), all samples as an IDX file, optional
 * individual PNGs and a trajectory strip (noise to image). `mfpipe sample RUN_DIR` runs this stage
 * alone on a finished or running run's newest checkpoint. A class-conditional model gets the classes
 * `labels` asks for (one grid row per class, every class equally often, or a given list per row); they
 * are written beside the images as samples/labels.idx1-ubyte. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mf_dataset.h"
#include "mf_io.h"
#include "mf_json.h"
#include "mf_log.h"
#include "mf_model.h"
#include "mf_quant.h"
#include "mf_sampler.h"
#include "mf_stage.h"

/* `labels`: which class sample i asks of a class-conditional model */
typedef enum { LABELS_PER_ROW, LABELS_ALL, LABELS_LIST } labels_mode;

typedef struct sample_state {
    char instance[64];
    const char *sampler, *grid_kind, *weights, *from, *dir;
    int steps, n, batch, grid, nrow, pngs, traj_frames, traj_n, max_nfe;
    labels_mode labels;
    bool labels_explicit; /* set to something other than its default (an error for unconditional models) */
    bool labels_noted;    /* set to its default by hand (a warning for unconditional models) */
    int *ids, n_ids;      /* LABELS_LIST: the class ids, in order (duplicates allowed) */
    char *labels_text;    /* canonical form for the record: "per_row", "all" or "0,3,7" */
    bool ran;             /* this stage has run (a later train stage's model is not the one sampled) */
    double power, rtol, atol;
    long long seed;
    mf_model *own; /* loaded from a checkpoint when no train stage ran */
} sample_state;

static const mf_key sample_keys[] = {
    MF_STR("sampler", "heun", "euler | heun | rk4 | dopri5 | meanflow | a sampler plugin's name"),
    MF_INT("steps", "50", 1, 100000, "steps of fixed-step samplers (meanflow: 1 = one step)"),
    MF_ENUM("time_grid", "uniform", "uniform|power", "time grid of fixed-step samplers"),
    MF_FLOAT("power", "1", 0.01, 100, "power grid: t_i = (1 - i/steps)^power"),
    MF_FLOAT("rtol", "1e-4", 0, 1, "dopri5 relative tolerance"),
    MF_FLOAT("atol", "1e-4", 0, 1, "dopri5 absolute tolerance"),
    MF_INT("max_nfe", "2000", 1, 1e7, "dopri5: cap on network evaluations per sample (each sample has its own steps)"),
    MF_INT("n", "100", 1, 10000000, "number of samples"),
    MF_INT("batch", "256", 1, 65536, "images per network evaluation"),
    MF_INT("seed", "-1", -1, 9007199254740991.0, "noise seed (-1: the run's seed)"),
    MF_ENUM("weights", "ema", "ema|raw", "EMA weights (when the run has them) or the raw training weights"),
    MF_INT("grid", "100", 0, 100000, "images in the PNG grid (0: none)"),
    MF_INT("nrow", "10", 1, 1000, "images per grid row"),
    MF_STR("labels", "per_row",
           "conditional models: per_row (sample i gets class (i / nrow) % classes: one grid row per class) | all "
           "(class i % classes: every class equally often) | a comma list of class ids as a string, \"0,3,7\" "
           "(class list[(i / nrow) % len]: one row per listed class)"),
    MF_BOOL("per_class", "~", "deprecated, use labels: true = labels: per_row, false = labels: all"),
    MF_BOOL("pngs", "false", "also write every sample as its own PNG"),
    MF_INT("trajectory", "8", 0, 1000, "frames of the trajectory strip from noise to image (0: none)"),
    MF_INT("trajectory_n", "4", 1, 256, "samples in the trajectory strip (one row each)"),
    MF_STR("from", "~", "run folder whose newest checkpoint to use when no train stage ran in this run"),
    MF_STR("dir", "samples", "output folder inside the run folder"),
    MF_KEY_END,
};

static bool set_by_user(const mf_node *n) { return n && n->origin && strcmp(n->origin, "<default>") != 0; }

/* Parse `labels` (syntax and sign only; the upper bound needs the model, see check_labels). */
static int parse_labels(sample_state *s, const char *text) {
    const char *key = s->instance;
    if (!text) return mf_fail("%s.labels: expected per_row, all or a comma list of class ids, got null", key);
    if (strcmp(text, "per_row") == 0 || strcmp(text, "all") == 0) {
        s->labels = text[0] == 'p' ? LABELS_PER_ROW : LABELS_ALL;
        s->labels_text = mf_xstrdup(text);
        return 0;
    }
    if (text[strspn(text, " \t")] == '\0')
        return mf_fail("%s.labels: '%s': expected per_row, all or a comma list of class ids such as 0,3,7", key, text);
    mf_buf canon = {0};
    const char *p = text;
    for (int item = 0;; item++) {
        const char *end = strchr(p, ','), *a = p, *b = end ? end : p + strlen(p);
        while (a < b && (*a == ' ' || *a == '\t')) a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t')) b--;
        char tok[32];
        int len = (int)(b - a);
        if (len == 0) {
            mf_buf_free(&canon);
            return mf_fail("%s.labels: '%s': item %d is empty (expected per_row, all or a comma list of class ids such "
                           "as 0,3,7)", key, text, item + 1);
        }
        char *stop = NULL;
        long v = 0;
        if (len < (int)sizeof tok) {
            memcpy(tok, a, (size_t)len);
            tok[len] = '\0';
            errno = 0;
            v = strtol(tok, &stop, 10);
        }
        bool digits = len < (int)sizeof tok && (tok[0] == '-' || (tok[0] >= '0' && tok[0] <= '9'));
        if (!digits || !stop || *stop || errno || v > 1000000000L) {
            mf_buf_free(&canon);
            if (item == 0 && !end)
                return mf_fail("%s.labels: '%s': expected per_row, all or a comma list of class ids such as 0,3,7", key, text);
            return mf_fail("%s.labels: '%s': '%.*s' is not a class id (expected per_row, all or a comma list of class "
                           "ids such as 0,3,7)", key, text, len, a);
        }
        if (v < 0) {
            mf_buf_free(&canon);
            return mf_fail("%s.labels: '%s': class id %ld is negative (class ids are 0 to classes - 1)", key, text, v);
        }
        s->ids = mf_xrealloc(s->ids, sizeof *s->ids * (size_t)(s->n_ids + 1));
        s->ids[s->n_ids++] = (int)v;
        mf_buf_printf(&canon, "%s%ld", item ? "," : "", v);
        if (!end) break;
        p = end + 1;
    }
    s->labels = LABELS_LIST;
    s->labels_text = mf_xstrdup(canon.s);
    mf_buf_free(&canon);
    return 0;
}

/* Once the model is known (at train.begin in a run that trains, so before the first step; else when
 * this stage runs): classes in range, and labels only for class-conditional models. */
static int check_labels(sample_state *s, const mf_model *m) {
    int nc = m->cfg.num_classes;
    if (nc <= 0) {
        if (s->labels_explicit)
            return mf_fail("%s.labels: '%s' asks for classes, but the model is unconditional (model.class_cond: "
                           "false); remove %s.labels", s->instance, s->labels_text, s->instance);
        if (s->labels_noted) mf_warn("%s.labels: ignored: the model is unconditional", s->instance);
        s->labels_noted = false; /* once */
        return 0;
    }
    for (int i = 0; i < s->n_ids; i++)
        if (s->ids[i] >= nc)
            return mf_fail("%s.labels: '%s': class id %d is out of range: the model has %d classes (0 to %d)",
                           s->instance, s->labels_text, s->ids[i], nc, nc - 1);
    return 0;
}

static int on_train_begin(void *user, mf_run *run, const char *event, const void *payload) {
    (void)run, (void)event;
    sample_state *s = user;
    return s->ran ? 0 : check_labels(s, ((const mf_train_event *)payload)->model);
}

static int sample_create(mf_run *run, const char *instance, const mf_node *sec, void **state) {
    sample_state *s = mf_xcalloc(1, sizeof *s);
    *state = s;
    snprintf(s->instance, sizeof s->instance, "%s", instance);
    s->sampler = mf_cfg_str(sec, "sampler");
    s->steps = (int)mf_cfg_int(sec, "steps");
    s->grid_kind = mf_cfg_str(sec, "time_grid");
    s->power = mf_cfg_float(sec, "power");
    s->rtol = mf_cfg_float(sec, "rtol");
    s->atol = mf_cfg_float(sec, "atol");
    s->max_nfe = (int)mf_cfg_int(sec, "max_nfe");
    s->n = (int)mf_cfg_int(sec, "n");
    s->batch = (int)mf_cfg_int(sec, "batch");
    s->seed = mf_cfg_int(sec, "seed");
    s->weights = mf_cfg_str(sec, "weights");
    s->grid = (int)mf_cfg_int(sec, "grid");
    s->nrow = (int)mf_cfg_int(sec, "nrow");
    s->pngs = mf_cfg_bool(sec, "pngs");
    s->traj_frames = (int)mf_cfg_int(sec, "trajectory");
    s->traj_n = (int)mf_cfg_int(sec, "trajectory_n");
    s->from = mf_cfg_str(sec, "from");
    s->dir = mf_cfg_str(sec, "dir");
    if (!s->sampler || !mf_sampler_find(s->sampler)) return mf_error_prefix("%s.sampler: ", instance);
    if (s->traj_frames == 1) return mf_fail("%s.trajectory: 0 (none) or at least 2 frames", instance);
    if (!s->dir || !*s->dir || strstr(s->dir, "..")) return mf_fail("%s.dir: a folder inside the run folder", instance);
    /* labels (syntax now, before anything runs; class range once the model is known) */
    const mf_node *ln = mf_node_child(sec, "labels"), *pc = mf_node_child(sec, "per_class");
    bool labels_given = set_by_user(ln);
    MF_TRY(parse_labels(s, mf_cfg_str(sec, "labels")));
    s->labels_explicit = s->labels != LABELS_PER_ROW;
    /* the default written out: a warning for unconditional models, except from a run's resolved
     * config.yaml (which holds every default; `mfpipe sample RUN` reads it) */
    const char *o = labels_given ? strrchr(ln->origin, '/') : NULL;
    s->labels_noted = labels_given && !s->labels_explicit && strcmp(o ? o + 1 : ln->origin, "config.yaml") != 0;
    if (pc && pc->kind != MF_NODE_NULL) { /* the deprecated boolean (older runs' config.yaml has it) */
        bool per_class = mf_cfg_bool(sec, "per_class");
        if (labels_given) {
            mf_warn("%s.per_class: deprecated and ignored: %s.labels is set", instance, instance);
        } else {
            mf_warn("%s.per_class: deprecated; use %s.labels: %s", instance, instance, per_class ? "per_row" : "all");
            s->labels = per_class ? LABELS_PER_ROW : LABELS_ALL;
            free(s->labels_text);
            s->labels_text = mf_xstrdup(per_class ? "per_row" : "all");
            s->labels_explicit = s->labels_noted = false; /* ignored by unconditional models, as it always was */
        }
    }
    return mf_event_subscribe(run, "train.begin", on_train_begin, s);
}

static void sample_destroy(void *state) {
    sample_state *s = state;
    if (!s) return;
    mf_model_free(s->own);
    free(s->ids);
    free(s->labels_text);
    free(s);
}

static int write_outputs(sample_state *s, mf_run *run, mf_model *m, const float *x, const int32_t *lab) {
    int C = m->cfg.in_ch, H = m->cfg.height, W = m->cfg.width;
    int64_t img = (int64_t)C * H * W;
    char rel[256], path[4096];
    /* all samples as IDX: (n, H, W) for gray like MNIST, (n, C, H, W) otherwise */
    uint8_t *u8 = mf_xmalloc((size_t)(img * s->n));
    mf_quant_u8_n(x, img * s->n, u8); /* the bytes the eval stage measures (mf_quant.h) */
    int64_t dims[4] = {s->n, C, H, W}, dims3[3] = {s->n, H, W};
    snprintf(rel, sizeof rel, "%s/samples.idx3-ubyte", s->dir);
    int rc = mf_run_path(run, path, sizeof path, rel);
    if (rc == 0) rc = C == 1 ? mf_idx_write_u8(path, 3, dims3, u8) : mf_idx_write_u8(path, 4, dims, u8);
    /* the classes asked of a conditional model, beside the images (IDX labels, as MNIST's), so that
     * `mfpipe eval RUN` measures the conditional accuracy from the files too */
    if (rc == 0 && lab && m->cfg.num_classes <= 256) {
        for (int i = 0; i < s->n; i++) u8[i] = (uint8_t)lab[i];
        int64_t ln = s->n;
        snprintf(rel, sizeof rel, "%s/labels.idx1-ubyte", s->dir);
        rc = mf_run_path(run, path, sizeof path, rel);
        if (rc == 0) rc = mf_idx_write_u8(path, 1, &ln, u8);
    }
    if (rc == 0 && s->pngs) {
        for (int i = 0; rc == 0 && i < s->n; i++) {
            snprintf(rel, sizeof rel, "%s/png/%06d.png", s->dir, i);
            rc = mf_run_path(run, path, sizeof path, rel);
            if (rc == 0) rc = mf_grid_write_png(path, x + (int64_t)i * img, 1, C, H, W, -1.0f, 1.0f, 1, 0, 0.0f);
        }
    }
    free(u8);
    if (rc == 0 && s->grid > 0) {
        int g = s->grid < s->n ? s->grid : s->n;
        snprintf(rel, sizeof rel, "%s/grid.png", s->dir);
        rc = mf_run_path(run, path, sizeof path, rel);
        if (rc == 0) rc = mf_grid_write_png(path, x, g, C, H, W, -1.0f, 1.0f, s->nrow, 2, 0.0f);
        /* the seed's fixed name for the final grid */
        if (rc == 0) rc = mf_run_path(run, path, sizeof path, "outputs/mnist_digits_final.png");
        if (rc == 0) rc = mf_grid_write_png(path, x, g, C, H, W, -1.0f, 1.0f, s->nrow, 2, 0.0f);
        if (rc == 0) rc = mf_run_tb_image(run, "sample/grid", (int64_t)m->step, path);
    }
    return rc;
}

static int sample_run(void *state, mf_run *run) {
    sample_state *s = state;
    mf_model *m = NULL;
    s->ran = true;
    mf_error_clear();
    m = mf_artifact_get(run, "model", MF_ART_MODEL);
    if (!m) {
        if (!s->from) return mf_fail("no model: put a train stage before '%s', or set %s.from to a run folder", s->instance, s->instance);
        mf_backend *be = mf_run_backend(run);
        if (!be) return -1;
        MF_TRY(mf_model_load(be, s->from, &s->own));
        m = s->own;
    }
    MF_TRY(check_labels(s, m));
    bool ema = strcmp(s->weights, "ema") == 0 && m->ema;
    if (strcmp(s->weights, "ema") == 0 && !m->ema) mf_warn("%s: the model has no EMA weights; using the raw weights", s->instance);
    int64_t img = (int64_t)m->cfg.in_ch * m->cfg.height * m->cfg.width;
    float *x = malloc(sizeof(float) * (size_t)(img * s->n));
    if (!x) return mf_fail("out of memory for %d samples", s->n);
    int32_t *lab = NULL;
    if (m->cfg.num_classes > 0) {
        int nc = m->cfg.num_classes;
        lab = mf_xmalloc(sizeof *lab * (size_t)s->n);
        for (int i = 0; i < s->n; i++)
            lab[i] = s->labels == LABELS_ALL       ? i % nc
                     : s->labels == LABELS_PER_ROW ? (i / s->nrow) % nc
                                                   : s->ids[(i / s->nrow) % s->n_ids];
    }
    int nb = (s->n + s->batch - 1) / s->batch;
    int *nfe = mf_xcalloc((size_t)nb, sizeof *nfe), *nfe_s = mf_xcalloc((size_t)s->n, sizeof *nfe_s);
    int tf = s->traj_frames, tn = s->traj_n < s->n ? s->traj_n : s->n;
    float *traj = tf >= 2 ? mf_xmalloc(sizeof(float) * (size_t)(img * tf * tn)) : NULL;
    mf_gen_opts go = {.sampler = s->sampler, .steps = s->steps, .grid = s->grid_kind, .power = s->power,
                      .rtol = s->rtol, .atol = s->atol, .max_nfe = s->max_nfe, .batch = s->batch,
                      .seed = s->seed >= 0 ? (uint64_t)s->seed : mf_run_seed(run), .labels = lab,
                      .traj_frames = traj ? tf : 0, .traj_n = tn, .traj = traj};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int64_t total = 0;
    go.nfe_per_batch = nfe;
    go.nfe_per_sample = nfe_s;
    int rc = mf_generate(m, ema ? m->ema : m->params, &go, s->n, x, &total);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double sec = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (rc == 0) rc = write_outputs(s, run, m, x, lab);
    if (rc == 0 && traj) {
        char rel[256], path[4096];
        snprintf(rel, sizeof rel, "%s/trajectory.png", s->dir);
        rc = mf_run_path(run, path, sizeof path, rel);
        if (rc == 0)
            rc = mf_grid_write_png(path, traj, tf * tn, m->cfg.in_ch, m->cfg.height, m->cfg.width, -1.0f, 1.0f, tf, 2, 0.0f);
        if (rc == 0) rc = mf_run_tb_image(run, "sample/trajectory", (int64_t)m->step, path);
    }
    if (rc == 0) {
        mf_buf b = {0}, nf = {0};
        mf_buf_puts(&nf, "[");
        for (int i = 0; i < nb; i++) mf_buf_printf(&nf, "%s%d", i ? "," : "", nfe[i]);
        mf_buf_puts(&nf, "]");
        mf_json_str(&b, "sampler", s->sampler);
        mf_json_int(&b, "steps", s->steps);
        mf_json_int(&b, "n", s->n);
        mf_json_str(&b, "labels", m->cfg.num_classes > 0 ? s->labels_text : "none"); /* none: unconditional */
        mf_json_str(&b, "weights", ema ? "ema" : "raw");
        mf_json_int(&b, "model_step", m->step);
        mf_json_raw(&b, "nfe_per_batch", nf.s);
        mf_json_int(&b, "nfe_total", total);
        /* evaluations per sample (dopri5: each sample's own; fixed-step samplers: all equal) */
        int nmin = nfe_s[0], nmax = nfe_s[0];
        double nsum = 0;
        for (int i = 0; i < s->n; i++) {
            nmin = nfe_s[i] < nmin ? nfe_s[i] : nmin;
            nmax = nfe_s[i] > nmax ? nfe_s[i] : nmax;
            nsum += nfe_s[i];
        }
        mf_json_num(&b, "nfe_mean", nsum / s->n);
        mf_json_int(&b, "nfe_min", nmin);
        mf_json_int(&b, "nfe_max", nmax);
        mf_json_num(&b, "seconds", sec);
        mf_json_num(&b, "img_per_s", sec > 0 ? s->n / sec : 0);
        rc = mf_metrics_append(run, s->instance, b.s);
        mf_info("%s: %d samples with %s (%lld evaluations, %s weights of step %lld%s%s) in %.1f s -> %s/%s/",
                s->instance, s->n, s->sampler, (long long)total, ema ? "EMA" : "raw", (long long)m->step,
                lab ? ", labels " : "", lab ? s->labels_text : "", sec, mf_run_dir(run), s->dir);
        mf_buf_free(&b);
        mf_buf_free(&nf);
    }
    if (rc == 0) {
        /* hand the samples to later stages (eval); the run owns them now */
        mf_samples *sm = mf_xcalloc(1, sizeof *sm);
        sm->n = s->n;
        sm->C = m->cfg.in_ch, sm->H = m->cfg.height, sm->W = m->cfg.width;
        sm->x = x;
        sm->labels = lab;
        snprintf(sm->source, sizeof sm->source, "%s/%s/samples.idx3-ubyte", mf_run_dir(run), s->dir);
        x = NULL;
        lab = NULL;
        rc = mf_artifact_put(run, "samples", MF_ART_SAMPLES, sm, (void (*)(void *))mf_samples_free);
    }
    free(x);
    free(lab);
    free(nfe);
    free(nfe_s);
    free(traj);
    return rc;
}

static const char *const k_resume_free_all[] = {"*", NULL}; /* keeps no state across a resume */
static const mf_stage_api sample_api = {
    .abi_version = MF_STAGE_ABI_VERSION,
    .struct_size = sizeof(mf_stage_api),
    .kind = "sample",
    .summary = "samples from the trained model: grid, IDX file, PNGs, trajectory strip (any sampler)",
    .keys = sample_keys,
    .create = sample_create,
    .run = sample_run,
    .destroy = sample_destroy,
    .resume_free = k_resume_free_all,
};

MF_STAGE_PLUGIN(sample_api)
