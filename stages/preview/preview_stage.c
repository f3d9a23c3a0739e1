/* preview_stage.c - the `preview` stage: writes a grid of data-set images (torchvision make_grid
 * layout) and the class histogram, so a user can see what the data stage produced before training. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mf_dataset.h"
#include "mf_io.h"
#include "mf_json.h"
#include "mf_log.h"
#include "mf_stage.h"

typedef struct preview {
    int n, nrow, per_class;
    const char *split, *file;
} preview;

static const mf_key preview_keys[] = {
    MF_INT("n", "64", 1, 10000, "number of images in the grid"),
    MF_INT("nrow", "8", 1, 1000, "images per row"),
    MF_ENUM("split", "train", "train|test", "which split to show"),
    MF_BOOL("per_class", "false", "one row per class (nrow images each) when the data set is labeled"),
    MF_STR("file", "data_preview.png", "output file, relative to the run folder"),
    MF_KEY_END,
};

static int preview_create(mf_run *run, const char *instance, const mf_node *sec, void **state) {
    preview *p = mf_xcalloc(1, sizeof *p);
    p->n = (int)mf_cfg_int(sec, "n");
    p->nrow = (int)mf_cfg_int(sec, "nrow");
    p->split = mf_cfg_str(sec, "split");
    p->per_class = mf_cfg_bool(sec, "per_class");
    p->file = mf_cfg_str(sec, "file");
    *state = p;
    if (!p->file || !*p->file || strstr(p->file, "..")) return mf_fail("%s.file: a file name inside the run folder is required", instance);
    return 0;
}

static int preview_run(void *state, mf_run *run) {
    preview *p = state;
    mf_dataset *ds = mf_artifact_get(run, "dataset", MF_ART_DATASET);
    if (!ds) return -1;
    const mf_split *sp = strcmp(p->split, "test") == 0 ? &ds->test : &ds->train;
    if (sp->n == 0) return mf_fail("the %s split is empty", p->split);
    size_t img = (size_t)ds->C * ds->H * ds->W;
    int n, nrow = p->nrow;
    int64_t *idx;
    if (p->per_class && ds->num_classes > 0) {
        /* row c: the first nrow images of class c */
        nrow = p->nrow;
        n = ds->num_classes * nrow;
        idx = mf_xmalloc(sizeof *idx * (size_t)n);
        for (int c = 0; c < ds->num_classes; c++) {
            int got = 0;
            for (int64_t i = 0; i < sp->n && got < nrow; i++)
                if (sp->y[i] == c) idx[c * nrow + got++] = i;
            for (; got < nrow; got++) idx[c * nrow + got] = -1; /* class has fewer images: blank */
        }
    } else {
        n = (int)(p->n < sp->n ? p->n : sp->n);
        idx = mf_xmalloc(sizeof *idx * (size_t)n);
        for (int i = 0; i < n; i++) idx[i] = i;
    }
    float *x = mf_xmalloc(sizeof *x * img * (size_t)n);
    for (int i = 0; i < n; i++) {
        if (idx[i] < 0) {
            for (size_t j = 0; j < img; j++) x[(size_t)i * img + j] = -1.0f;
        } else {
            memcpy(x + (size_t)i * img, sp->x + (size_t)idx[i] * img, img * sizeof *x);
        }
    }
    char path[4096];
    int rc = mf_run_path(run, path, sizeof path, p->file);
    if (rc == 0) rc = mf_grid_write_png(path, x, n, ds->C, ds->H, ds->W, -1.0f, 1.0f, nrow, 2, 0.0f);
    free(x);
    free(idx);
    MF_TRY(rc);

    mf_buf b = {0};
    mf_json_str(&b, "file", p->file);
    mf_json_int(&b, "images", n);
    if (ds->num_classes > 0) {
        long long *hist = mf_xcalloc((size_t)ds->num_classes, sizeof *hist);
        for (int64_t i = 0; i < sp->n; i++)
            if (sp->y[i] >= 0 && sp->y[i] < ds->num_classes) hist[sp->y[i]]++;
        mf_buf h = {0};
        mf_buf_puts(&h, "[");
        for (int c = 0; c < ds->num_classes; c++) mf_buf_printf(&h, "%s%lld", c ? "," : "", hist[c]);
        mf_buf_puts(&h, "]");
        mf_json_raw(&b, "class_histogram", h.s);
        mf_buf_free(&h);
        free(hist);
    }
    rc = mf_metrics_append(run, "preview", b.s);
    mf_buf_free(&b);
    mf_info("preview: %d %s images -> %s", n, p->split, path);
    return rc;
}

static void preview_destroy(void *state) { free(state); }

static const char *const k_resume_free_all[] = {"*", NULL}; /* keeps no state across a resume */
static const mf_stage_api preview_api = {
    .abi_version = MF_STAGE_ABI_VERSION,
    .struct_size = sizeof(mf_stage_api),
    .kind = "preview",
    .summary = "grid of data-set images (make_grid layout) and class histogram",
    .keys = preview_keys,
    .create = preview_create,
    .run = preview_run,
    .destroy = preview_destroy,
    .resume_free = k_resume_free_all,
};

MF_STAGE_PLUGIN(preview_api)
