/* mf_model.h - the "model" artifact the train stage publishes and ema/sample/eval stages use: the
 * UNet configuration, the flat parameter buffer (and EMA buffer) on the run's backend, extra state
 * that checkpoints must carry, plus inference helpers (a batch-sized forward graph) and the basic ODE
 * samplers. */
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
    char objective[16];     /* fm, fm_avgvel: v(z, t); meanflow: u(z, r, t) */
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
void mf_model_free(mf_model *m); /* frees buffers it owns (params, ema, state) and m */

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
} mf_infer;

int mf_infer_init(mf_infer *inf, mf_backend *be, const mf_unet_cfg *cfg, int batch, bool need_tan);
void mf_infer_free(mf_infer *inf);
/* v = net(z, t[, r], labels) for the whole batch; z is a backend buffer (batch, C, H, W); scalar
 * times; labels host (batch) or NULL. Returns the backend output buffer (valid until the next call). */
const float *mf_infer_eval(mf_infer *inf, const float *params, const float *z, float t, float r,
                           const int32_t *labels);

/* Integrate dz/dt = v(z, t) from t=1 (noise) to t=0 (data) with `steps` uniform steps.
 * method: "euler" or "heun". z: backend buffer, noise in, samples out. */
int mf_sample_ode(mf_infer *inf, const float *params, const char *method, int steps, float *z,
                  const int32_t *labels);

/* Draw n samples with seed (Philox stream MF_RNG_SAMPLE keyed by seed and `stream`) into host memory
 * x (n, C, H, W) in the model's data range. */
int mf_sample_images(mf_model *m, const float *params, const char *method, int steps, int n, uint64_t seed,
                     uint64_t stream, const int32_t *labels, float *x);

#ifdef __cplusplus
}
#endif
#endif
