/* mf_model.h - the "model" artifact the train stage publishes and ema/sample/eval stages use: the
 * UNet configuration, the flat parameter buffer (and EMA buffer) on the run's backend, extra state
 * that checkpoints must carry, loading a model from a run's checkpoints, inference helpers (a
 * batch-sized forward graph) and mf_generate, which runs a sampler of engine/mf_sampler.h. */
#ifndef MF_MODEL_H
#define MF_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "mf_backend.h"
#include "mf_graph.h"
#include "mf_run.h"
#include "mf_unet.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MF_ART_MODEL "mf.model.v1"
#define MF_ART_BACKEND "mf.backend.v1"
#define MF_MODEL_MAX_STATE 8

typedef struct mf_state_buf {
    char name[32];
    float *buf; /* backend buffer */
    int64_t n;
} mf_state_buf;

typedef struct mf_model {
    mf_backend *be;
    mf_unet_cfg cfg;
    int64_t n_params;       /* floats in the flat buffers (with alignment padding) */
    int64_t n_weights;      /* real parameter count */
    double flops_per_image; /* forward */
    float *params;          /* backend: training weights */
    float *ema;             /* backend: EMA weights, NULL when there is no ema stage */
    int64_t step;           /* optimizer steps done */
    mf_state_buf state[MF_MODEL_MAX_STATE]; /* extra checkpointed buffers (ema registers here) */
    int n_state;
} mf_model;

/* Payloads of the train events: "train.begin" (before the checkpoint is loaded and the first step),
 * "train.step" (after each optimizer step), "train.end". */
typedef struct mf_train_event {
    mf_model *model;
    int64_t step; /* steps done */
    double loss;
    bool resumed; /* train.begin: state will be loaded from a checkpoint */
} mf_train_event;

/* The run's backend, created on first use from the run's engine and threads (artifact "backend"). */
mf_backend *mf_run_backend(mf_run *run);

int mf_model_register_state(mf_model *m, const char *name, float *buf, int64_t n);
void mf_model_free(mf_model *m); /* frees params, the state buffers (ema is one of them) and m */

/* ---- model files ------------------------------------------------------------------------------ */
#define MF_UNET_CFG_FLOATS 24
/* The configuration as floats, for a checkpoint section "unet_cfg" (so samplers can rebuild the model
 * from a checkpoint alone). */
void mf_unet_cfg_encode(const mf_unet_cfg *c, float out[MF_UNET_CFG_FLOATS]);
int mf_unet_cfg_decode(const float *in, int64_t n, mf_unet_cfg *c);
/* Build a model from the newest valid checkpoint in <run_dir>/checkpoints: weights, and the EMA
 * weights when the checkpoint has them. *out is owned by the caller (mf_model_free). */
int mf_model_load(mf_backend *be, const char *run_dir, mf_model **out);

/* ---- inference ------------------------------------------------------------------------------- */
typedef struct mf_infer {
    mf_graph g;
    mf_unet ids;
    int batch;
    mf_backend *be;
    /* graphs (backends that have them, unless MFPIPE_NO_GRAPHS=1): every evaluation after the first
     * two is recorded and launched as one graph, updated in place */
    void *graph;
    int64_t evals;
    bool no_graph;
} mf_infer;

int mf_infer_init(mf_infer *inf, mf_backend *be, const mf_unet_cfg *cfg, int batch, bool need_tan);
void mf_infer_free(mf_infer *inf);
/* v = net(z, t[, r], labels) for the whole batch; z is a backend buffer (batch, C, H, W); t and r are
 * host arrays of one time per row (r ignored by v(z, t) models); labels host (batch) or NULL. Returns
 * the backend output buffer (valid until the next call). */
const float *mf_infer_eval(mf_infer *inf, const float *params, const float *z, const float *t, const float *r,
                           const int32_t *labels);

/* Generation: n images with a named sampler (engine/mf_sampler.h) from the model's weights `params`
 * (m->params or m->ema). Noise of image i comes from the Philox stream (seed, MF_RNG_SAMPLE, i), the
 * network takes one time per row and a short last batch is padded with rows no sampler reads, so an
 * image does not depend on the batch it is in (up to the backend's rounding at other batch sizes). Labels (host, n entries) for conditional
 * models, else NULL. Optionally records a trajectory: the first traj_n images at traj_frames evenly
 * spaced times from t = 1 to t = 0 (traj_frames >= 2) into traj (traj_n * traj_frames images, image
 * s at time f at index s * traj_frames + f). Output x: host (n, C, H, W) in the data range [-1, 1]. */
typedef struct mf_gen_opts {
    const char *sampler;       /* "heun", "euler", "rk4", "dopri5", "meanflow", or a plugin's name */
    int steps;
    const char *grid;          /* "uniform" or "power" */
    double power, rtol, atol;
    int max_nfe;
    int batch;                 /* images per network evaluation (<= n) */
    uint64_t seed;
    const int32_t *labels;
    int traj_frames, traj_n;
    float *traj;
    int *nfe_per_batch;        /* optional: ceil(n / batch) entries: network passes over each batch */
    int *nfe_per_sample;       /* optional: n entries: evaluations of each image (dopri5: its own steps;
                                  fixed-step samplers: its batch's) */
} mf_gen_opts;

int mf_generate(mf_model *m, const float *params, const mf_gen_opts *o, int n, float *x, int64_t *total_nfe);

#ifdef __cplusplus
}
#endif
#endif
