/* mf_dataset.c - lifetime and access helpers for the in-memory dataset artifact: freeing it, the
 * deterministic per-epoch order of training examples, and gathering a batch of rows. */
#include <string.h>

#include "mf_dataset.h"
#include "mf_error.h"
#include "mf_rng.h"

void mf_dataset_free(mf_dataset *ds) {
    if (!ds) return;
    free(ds->train.x);
    free(ds->train.y);
    free(ds->test.x);
    free(ds->test.y);
    if (ds->class_names) {
        for (int i = 0; i < ds->num_classes; i++) free(ds->class_names[i]);
        free(ds->class_names);
    }
    free(ds);
}

void mf_dataset_epoch_order(const mf_dataset *ds, int64_t epoch, int64_t *perm) {
    MF_ASSERT(ds && (perm || ds->train.n == 0));
    mf_rng_permutation(ds->seed, MF_RNG_SHUFFLE, (uint64_t)epoch, perm, ds->train.n);
}

void mf_dataset_gather(const mf_dataset *ds, const mf_split *split, const int64_t *idx, int64_t b,
                       float *x, int32_t *y) {
    MF_ASSERT(ds && split && b >= 0 && (b == 0 || (idx && x)));
    MF_ASSERT(ds->C > 0 && ds->H > 0 && ds->W > 0);
    size_t row = (size_t)ds->C * (size_t)ds->H * (size_t)ds->W;
    for (int64_t i = 0; i < b; i++) {
        int64_t k = idx[i];
        MF_ASSERT(k >= 0 && k < split->n);
        memcpy(x + (size_t)i * row, split->x + (size_t)k * row, row * sizeof(float));
        if (y) y[i] = split->y ? split->y[k] : -1;
    }
}

void mf_samples_free(mf_samples *s) {
    if (!s) return;
    free(s->x);
    free(s->labels);
    free(s);
}
