/* example_stats.c - an example third-party stage plugin: per-channel statistics of the data set and
 * its mean image. Copy this folder to start a plugin of your own; README.md explains the ABI. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mf_dataset.h"
#include "mf_io.h"
#include "mf_json.h"
#include "mf_log.h"
#include "mf_stage.h"

/* 1. The stage's state: what create() read from the config. Owned by the plugin. */
typedef struct stats {
    const char *split;
    const char *mean_image; /* file in the run folder, or NULL for none */
} stats;

/* 2. The schema of the stage's section: every key, its type, default, range and help. The runner
 * validates the user's YAML against it (unknown keys, types, ranges) and fills in the defaults. */
static const mf_key stats_keys[] = {
    MF_ENUM("split", "train", "train|test", "which split to measure"),
    MF_STR("mean_image", "mean_image.png", "write the mean image here (in the run folder); ~ for none"),
    MF_KEY_END,
};

/* 3. create(): read the validated config; no heavy work here. */
static int stats_create(mf_run *run, const char *instance, const mf_node *section, void **state) {
    stats *s = calloc(1, sizeof *s);
    if (!s) return mf_fail("out of memory");
    s->split = mf_cfg_str(section, "split");
    s->mean_image = mf_cfg_str(section, "mean_image");
    *state = s;
    return 0;
}

/* 4. run(): take artifacts from earlier stages, do the work, write metrics and files. */
static int stats_run(void *state, mf_run *run) {
    stats *s = state;
    mf_dataset *ds = mf_artifact_get(run, "dataset", MF_ART_DATASET);
    if (!ds) return -1; /* mf_artifact_get has set the message */
    const mf_split *sp = strcmp(s->split, "test") == 0 ? &ds->test : &ds->train;
    if (sp->n == 0) return mf_fail("the %s split is empty", s->split);
    size_t hw = (size_t)ds->H * ds->W, img = (size_t)ds->C * hw;
    double *mean = calloc(img, sizeof *mean);
    float *meanf = malloc(img * sizeof *meanf);
    if (!mean || !meanf) {
        free(mean);
        free(meanf);
        return mf_fail("out of memory");
    }
    double sum[3] = {0}, sq[3] = {0};
    for (int64_t i = 0; i < sp->n; i++) {
        const float *x = sp->x + (size_t)i * img;
        for (size_t j = 0; j < img; j++) {
            mean[j] += x[j];
            sum[j / hw] += x[j];
            sq[j / hw] += (double)x[j] * x[j];
        }
    }
    mf_buf b = {0};
    mf_json_str(&b, "split", s->split);
    mf_json_int(&b, "n", sp->n);
    for (int c = 0; c < ds->C; c++) {
        double cnt = (double)sp->n * (double)hw, m = sum[c] / cnt;
        char key[32];
        snprintf(key, sizeof key, "mean_c%d", c);
        mf_json_num(&b, key, m);
        snprintf(key, sizeof key, "std_c%d", c);
        mf_json_num(&b, key, sqrt(fmax(0.0, sq[c] / cnt - m * m)));
    }
    int rc = mf_metrics_append(run, "example_stats", b.s);
    mf_info("example_stats: %s", b.s);
    mf_buf_free(&b);
    if (rc == 0 && s->mean_image) {
        char path[4096];
        for (size_t j = 0; j < img; j++) meanf[j] = (float)(mean[j] / (double)sp->n);
        rc = mf_run_path(run, path, sizeof path, s->mean_image);
        if (rc == 0) rc = mf_grid_write_png(path, meanf, 1, ds->C, ds->H, ds->W, -1.0f, 1.0f, 1, 0, 0.0f);
    }
    free(mean);
    free(meanf);
    return rc;
}

static void stats_destroy(void *state) { free(state); }

/* 5. The plugin's description; the first field must be MF_STAGE_ABI_VERSION. */
static const char *const k_resume_free_all[] = {"*", NULL}; /* keeps no state across a resume */
static const mf_stage_api stats_api = {
    .abi_version = MF_STAGE_ABI_VERSION,
    .struct_size = sizeof(mf_stage_api),
    .kind = "example_stats",
    .summary = "example third-party plugin: per-channel mean/std and the mean image of the data set",
    .keys = stats_keys,
    .create = stats_create,
    .run = stats_run,
    .destroy = stats_destroy,
    .resume_free = k_resume_free_all,
};

/* 6. The one exported symbol. */
MF_STAGE_PLUGIN(stats_api)
