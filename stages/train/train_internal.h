/* train_internal.h - state shared by the files of the train stage. */
#ifndef TRAIN_INTERNAL_H
#define TRAIN_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "mf_config.h"
#include "mf_graph.h"
#include "mf_model.h"
#include "mf_optim.h"
#include "mf_run.h"
#include "objective.h"

typedef struct train_state {
    char instance[64];
    /* configuration */
    mf_unet_cfg cfg;
    int class_cond;
    const mf_objective *obj; /* train.objective (objectives/registry.c) */
    void *obj_state;
    int64_t steps;
    int batch;
    float lr, b1, b2, eps, wd, clip;
    mf_sched sched;  /* learning-rate schedule (extended on resume when train.steps changes) */
    int64_t log_every, ckpt_every, sample_every;
    int keep, sample_n, sample_steps, final_grid, final_steps, skip_nan;
    char sample_method[16];
    /* run time */
    mf_backend *be;
    mf_model *model; /* owned by the run (artifact "model") */
    float *grads, *adam_m, *adam_v; /* backend, flat */
    float *x, *noise;               /* backend, one batch */
    float *data;                    /* backend: the training images (n, C, H, W), or NULL: gathered on the host */
    int32_t *h_idx;                 /* host: the batch's example indices (for the gather on the backend) */
    float *h_x, *h_t, *h_r;         /* host, one batch */
    int32_t *h_y;
    uint8_t *h_drop;
    int64_t *perm, perm_epoch;
    char hash[65];
    int64_t adam_t; /* optimizer steps taken (skipped steps do not count): Adam's bias correction */
    /* the asynchronous step (train_loop.c: backends whose tensors are not host memory) */
    bool async, use_graphs, h_st_pinned;
    float *opt_st;       /* backend: adamw_step's state (MF_OPT_ST_N floats) */
    float *h_st;         /* host copy of it (pinned where the backend has host_alloc) */
    void *graph;         /* the step's graph, updated every step */
    int64_t n_async;     /* asynchronous steps issued by this process (the first two are the warm-up) */
    int64_t n_issued;    /* ... since the last collect */
    double shown_loss, last_gnorm;
    float last_lr;
    /* Lua hooks (mf_hooks.h): lr, loss_weight, on_step */
    struct mf_hooks *hooks;
    float *h_lw;          /* host, one batch: the loss_weight hook's weights */
    char stop_reason[256]; /* on_step returned stop = "...": training ends after this step */
    char init_from[4096];  /* train.init_from resolved (absolute), or "" */
} train_state;

int train_read_config(train_state *s, const mf_node *train, const mf_node *model);
int train_run(void *state, mf_run *run);
void train_free_buffers(train_state *s);

#endif
