/* objective.h - the interface between the training loop (train_loop.c) and a training objective
 * (stages/train/objectives/, one file each, listed in objectives/registry.c). The loop owns batching,
 * the optimizer, the schedule, logging and checkpoints and never names an objective; an objective
 * owns the static graphs it needs (sharing the run's parameter and gradient buffers), its random
 * choices per step (times, class dropout) and the per-step arithmetic, done with backend kernels so
 * the same file runs on every backend: only per-row scalars (times, weights, errors) cross to the host.
 *
 * Lifetime: create() when the stage is created (reads and checks the objective's keys, adjusts the
 * model configuration), setup() once the backend and the parameters exist, then per step prepare()
 * and loss_and_grads() (with b->defer, collect() when the loop logs), and destroy(). Adding an objective: one new file with an mf_objective table,
 * and one line in registry.c. docs/objectives.md has the equations of every objective. */
#ifndef MF_OBJECTIVE_H
#define MF_OBJECTIVE_H

#include <stdbool.h>
#include <stdint.h>

#include "mf_backend.h"
#include "mf_config.h"
#include "mf_unet.h"

/* What setup() gets; valid for the objective's lifetime. */
typedef struct mf_obj_env {
    mf_backend *be;
    const mf_unet_cfg *cfg; /* the model as built (after create()'s changes) */
    int batch;              /* rows per step */
    int64_t steps;          /* train.steps (for schedules inside an objective) */
    const float *params;    /* backend: the flat parameter buffer */
    float *grads;           /* backend: the flat gradient buffer; loss_and_grads accumulates into it
                               (the loop zeroes it before each step) */
} mf_obj_env;

/* One step's batch. The loop fills n, img, x, eps, labels, seed and step; prepare() fills t, r and
 * dropped (and may change labels: class dropout). Tests set every field themselves. */
typedef struct mf_obj_batch {
    int n;                /* rows (the env's batch) */
    int64_t img;          /* floats per image, C*H*W */
    const float *x, *eps; /* backend (n, C, H, W): data in [-1, 1] and N(0, 1) noise */
    float *t, *r;         /* host (n): times; r = t on rows without an interval (v(z, t) models: r unused) */
    int32_t *labels;      /* host (n) class ids (null class = num_classes on dropped rows), or NULL */
    uint8_t *dropped;     /* host (n): 1 where the label was dropped, or NULL (unconditional) */
    uint64_t seed;
    int64_t step;         /* 0-based step being computed */
    bool defer;           /* read nothing from the backend: the loss and stats accumulate there until
                             collect() (the GPU's loop, which synchronises only when it logs) */
    const float *weights; /* host (n): per-sample loss weights (the Lua loss_weight hook), set by the loop
                             after prepare(); NULL: all 1. Each row's loss term (and gradient) is scaled. */
} mf_obj_batch;

#define MF_OBJ_MAX_STATS 8
typedef struct mf_obj_stat {
    const char *name; /* metrics.jsonl key, static */
    double value;
} mf_obj_stat;

typedef struct mf_obj_result {
    double loss;           /* the minimised loss (weighted) */
    int n_stats;           /* the same stats, in the same order, every step */
    mf_obj_stat stats[MF_OBJ_MAX_STATS];
    const char *nonfinite; /* NULL, or what was not finite: "loss", "du/dt (JVP)", "target", ... */
} mf_obj_result;

typedef struct mf_objective {
    const char *name;    /* train.objective value */
    const char *summary; /* one line for `mfpipe plugins` / --keys */
    const mf_key *keys;  /* its own keys, paths relative to the train section ("meanflow.flow_ratio"),
                            MF_KEY_END-terminated, or NULL */
    int time_inputs;     /* 1: the model is v(z, t); 2: u(z, r, t) */
    bool tangents;       /* may need forward-mode tangents (JVP) */
    /* Read and check the keys (train = the train section, defaults filled), adjust the model
     * configuration (time inputs, null class); *state is freed by destroy() also on failure. */
    int (*create)(const mf_node *train, mf_unet_cfg *cfg, void **state);
    /* Build graphs and buffers. -1 with mf_fail (out of memory). */
    int (*setup)(void *state, const mf_obj_env *env);
    /* The step's random choices from (seed, step): t, r, class dropout. */
    void (*prepare)(void *state, mf_obj_batch *b);
    /* Loss and parameter gradients of the batch (gradients added to env->grads). -1 with mf_fail
     * for errors; a non-finite value is not an error (res->nonfinite; the loop decides). */
    int (*loss_and_grads)(void *state, const mf_obj_batch *b, mf_obj_result *res);
    /* After steps with b->defer: res->loss and every stat are the SUMS over the deferred steps since
     * the last collect (their count in *steps), and the accumulators restart. One synchronisation. */
    int (*collect)(void *state, mf_obj_result *res, int64_t *steps);
    /* Bytes of activations, gradients and tangents of the objective's graphs (for the log). */
    size_t (*act_bytes)(void *state);
    void (*destroy)(void *state);
} mf_objective;

/* The registry (objectives/registry.c): NULL-terminated, and a lookup by name (NULL if unknown). */
extern const mf_objective *const mf_objectives[];
const mf_objective *mf_objective_find(const char *name);

#endif
