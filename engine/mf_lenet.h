/* mf_lenet.h - the fixed feature network of the evaluation metrics: a LeNet-style classifier (four
 * 3x3 convolutions, the last three with stride 2, SiLU, a 128-d penultimate layer, one logit per
 * class) built into a static graph, its weight files (with SHA-256), and running it on a batch
 * (features and softmax probabilities). The classifier stage trains it. */
#ifndef MF_LENET_H
#define MF_LENET_H

#include <stdint.h>

#include "mf_backend.h"
#include "mf_graph.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MF_LENET_FEATURES 128

typedef struct mf_lenet_cfg {
    int in_ch, height, width, classes;
} mf_lenet_cfg;

typedef struct mf_lenet {
    int x;        /* input node (n, in_ch, H, W) in [-1, 1] */
    int features; /* (n, 128) penultimate activations (kept readable) */
    int logits;   /* (n, classes) output */
} mf_lenet;

void mf_lenet_build(mf_graph *g, const mf_lenet_cfg *c, mf_lenet *ids);

/* Weight files: magic "MFLENET1", the config (4 int32), the parameter floats, SHA-256 trailer.
 * The name ("lenet_v1") and the file's SHA-256 identify the feature network in metric names. */
int mf_lenet_save(const char *path, const mf_lenet_cfg *c, const float *params, int64_t n);
/* Loads weights; *params is malloc'ed (host). sha_hex (65 bytes, optional) receives the file's SHA-256. */
int mf_lenet_load(const char *path, mf_lenet_cfg *c, float **params, int64_t *n, char *sha_hex);

/* A feature network ready to run on a backend (inference graph of `batch` images). */
typedef struct mf_featnet {
    mf_backend *be;
    mf_lenet_cfg cfg;
    float *params; /* backend */
    int64_t n_params;
    mf_graph g;
    mf_lenet ids;
    int batch;
    char sha[65];  /* SHA-256 of the weight file ("" when built from memory) */
} mf_featnet;

/* From a weight file (path) or, when path is NULL, from host params of a given config. */
int mf_featnet_init(mf_featnet *f, mf_backend *be, const char *path, const mf_lenet_cfg *cfg, const float *host_params,
                    int batch);
void mf_featnet_free(mf_featnet *f);
/* Run n images (host, (n, C, H, W) in [-1, 1]); feat (n x 128) and probs (n x classes, softmax) are
 * host outputs, either may be NULL. */
int mf_featnet_run(mf_featnet *f, const float *x, int64_t n, float *feat, float *probs);
/* Accuracy of argmax(probs) against labels. */
double mf_accuracy(const float *probs, const int32_t *labels, int64_t n, int classes);

#ifdef __cplusplus
}
#endif
#endif
