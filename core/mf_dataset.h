/* mf_dataset.h - the "dataset" artifact the data stage publishes: images in host memory as float
 * (N, C, H, W) scaled to [-1, 1], labels, a train and a test split, and the deterministic epoch order. */
#ifndef MF_DATASET_H
#define MF_DATASET_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MF_ART_DATASET "mf.dataset.v1"

typedef struct mf_split {
    int64_t n;
    float *x;   /* (n, C, H, W), values in [-1, 1] */
    int32_t *y; /* (n), class index, or -1 when unlabeled */
} mf_split;

typedef struct mf_dataset {
    char name[64];       /* "mnist", "fashion_mnist", or the folder's base name */
    char source[512];    /* where it was read from */
    int C, H, W;
    int num_classes;     /* 0 when unlabeled */
    char **class_names;  /* num_classes strings (may be NULL for numbered classes) */
    mf_split train, test;
    uint64_t seed;       /* run seed: keys the epoch order */
} mf_dataset;

/* The "samples" artifact the sample stage publishes (and the eval stage reads). */
#define MF_ART_SAMPLES "mf.samples.v1"
typedef struct mf_samples {
    int64_t n;
    int C, H, W;
    float *x;       /* (n, C, H, W) in [-1, 1] */
    int32_t *labels; /* requested classes of a conditional model, or NULL */
    char source[512];
} mf_samples;
void mf_samples_free(mf_samples *s); /* frees x, labels and s */

void mf_dataset_free(mf_dataset *ds); /* frees everything including ds */
/* Order of training examples in `epoch`: a permutation of 0..train.n-1 keyed by (seed, epoch). */
void mf_dataset_epoch_order(const mf_dataset *ds, int64_t epoch, int64_t *perm);
/* Copy examples idx[0..b) of the training split into x (b, C, H, W) and y (b) (y may be NULL). */
void mf_dataset_gather(const mf_dataset *ds, const mf_split *split, const int64_t *idx, int64_t b,
                       float *x, int32_t *y);

#ifdef __cplusplus
}
#endif
#endif
