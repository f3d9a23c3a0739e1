/* train_stage.c - the `train` stage: the UNet trained with one of the objectives of
 * stages/train/objectives (fm, fm_avgvel, meanflow, imeanflow, alphaflow; objective.h), AdamW with
 * gradient clipping, cosine schedule with linear warm-up, periodic sample grids, checkpoints (atomic,
 * checksummed, last K kept) and exact resume.
 * Every random draw is keyed by (seed, step), so step k's work depends only on the state after k-1. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "mf_checkpoint.h"
#include "mf_dataset.h"
#include "mf_io.h"
#include "mf_json.h"
#include "mf_log.h"
#include "mf_model.h"
#include "mf_rng.h"
#include "mf_stage.h"
#include "train_internal.h"

static const mf_key model_keys[] = {
    MF_ENUM("arch", "unet", "unet", "network architecture"),
    MF_INT("channels", "32", 4, 1024, "base channels"),
    MF_INTS("channel_mult", "[1, 2, 2]", 1, 16, "channel multiplier per resolution level"),
    MF_INT("res_blocks", "2", 1, 8, "residual blocks per level"),
    MF_INT("groups", "8", 1, 64, "GroupNorm groups (reduced to divide the channels)"),
    MF_INT("time_embed.dim", "128", 4, 4096, "time-embedding width"),
    MF_INT("time_embed.frequencies", "32", 1, 1024, "Fourier frequencies (features = 2x this)"),
    MF_FLOAT("time_embed.scale", "1000", 1e-3, 1e6, "t is multiplied by this before the frequencies"),
    MF_BOOL("class_cond", "false", "condition on class labels (label embedding added to the time embedding)"),
    MF_ENUM("interval_input", "t_minus_r", "t_minus_r|r",
            "u(z, r, t) models: the second time embedding is of t - r (the paper's choice) or of r"),
    MF_KEY_END,
};

/* The train section's keys: these, then the guidance keys (objectives/common.c) and every objective's
 * own keys (objectives/registry.c), joined once when the plugin is loaded (train_keys()). */
static const mf_key base_keys[] = {
    MF_ENUM("objective", "fm", NULL, "training objective (docs/objectives.md)"),
    MF_INT("steps", "1000", 1, 1e9, "optimizer steps"),
    MF_INT("batch", "128", 1, 65536, "batch size"),
    MF_ENUM("time_dist", "uniform", "uniform|logit_normal", "distribution of t"),
    MF_FLOAT("time_mu", "0", -10, 10, "logit-normal mean"),
    MF_FLOAT("time_sigma", "1", 1e-3, 10, "logit-normal standard deviation"),
    MF_FLOAT("avgvel.lambda", "0.1", 0, 1e3, "weight of the average-velocity term"),
    MF_INT("avgvel.k", "4", 1, 64, "intermediate times in the Monte Carlo average"),
    MF_ENUM("optimizer.kind", "adamw", "adamw", "optimizer"),
    MF_FLOAT("optimizer.lr", "2e-4", 0, 10, "peak learning rate"),
    MF_FLOATS("optimizer.betas", "[0.9, 0.999]", 0, 0.999999, "Adam betas"),
    MF_FLOAT("optimizer.eps", "1e-8", 0, 1, "Adam epsilon"),
    MF_FLOAT("optimizer.weight_decay", "0", 0, 10, "decoupled weight decay"),
    MF_FLOAT("optimizer.grad_clip", "1.0", 0, 1e6, "clip the global gradient norm to this (0: off)"),
    MF_ENUM("schedule.kind", "cosine", "cosine|constant|linear", "learning-rate schedule after warm-up"),
    MF_INT("schedule.warmup", "100", 0, 1e9, "linear warm-up steps"),
    MF_FLOAT("schedule.min_lr_ratio", "0", 0, 1, "final learning rate as a fraction of the peak"),
    MF_INT("log_every", "50", 1, 1e9, "steps between metrics.jsonl lines"),
    MF_INT("checkpoint_every", "1000", 0, 1e9, "steps between checkpoints (0: only at the end)"),
    MF_INT("keep_checkpoints", "3", 1, 1000, "checkpoints kept (the newest)"),
    MF_INT("sample_every", "0", 0, 1e9, "steps between sample grids (0: off)"),
    MF_INT("sample_n", "64", 1, 1024, "images in a periodic grid"),
    MF_INT("sample_steps", "10", 1, 1000, "sampler steps for periodic grids"),
    MF_ENUM("sample_method", "auto", "auto|euler|heun|meanflow",
            "sampler for periodic grids (auto: meanflow for u(z, r, t) models, else heun)"),
    MF_INT("final_grid", "100", 0, 1024, "images in the grid written at the end (0: none)"),
    MF_INT("final_steps", "20", 1, 1000, "sampler steps for the final grid"),
    MF_ENUM("on_nan", "stop", "stop|skip", "non-finite loss: stop the run, or skip the step"),
    MF_BOOL("graphs", "true", "record each step as one graph where the backend can (CUDA graphs; after 2 warm-up steps)"),
    MF_STR("init_from", "~", "safetensors file of initial weights (mfpipe export, or a PyTorch state_dict; docs/interop.md), "
                             "relative to the file that sets it"),
    MF_KEY_END,
};

#include "objectives/common.h"

static mf_key all_keys[160];
static char objective_choices[256];

static const mf_key *train_keys(void) {
    if (all_keys[0].path) return all_keys;
    size_t n = 0, cap = sizeof all_keys / sizeof all_keys[0];
    for (const mf_key *k = base_keys; k->path; k++) { MF_ASSERT(n < cap - 1); all_keys[n++] = *k; }
    for (const mf_key *k = obj_cond_keys; k->path; k++) { MF_ASSERT(n < cap - 1); all_keys[n++] = *k; }
    for (int i = 0; mf_objectives[i]; i++) {
        size_t l = strlen(objective_choices);
        snprintf(objective_choices + l, sizeof objective_choices - l, "%s%s", i ? "|" : "", mf_objectives[i]->name);
        for (const mf_key *k = mf_objectives[i]->keys; k && k->path; k++) { MF_ASSERT(n < cap - 1); all_keys[n++] = *k; }
    }
    all_keys[0].choices = objective_choices; /* "objective" */
    all_keys[n] = (mf_key)MF_KEY_END;
    return all_keys;
}

static const mf_section_schema train_shared[] = {{"model", model_keys}, {NULL, NULL}};

static int train_create(mf_run *run, const char *instance, const mf_node *sec, void **state) {
    train_state *s = mf_xcalloc(1, sizeof *s);
    *state = s;
    snprintf(s->instance, sizeof s->instance, "%s", instance);
    const mf_node *root = mf_run_config(run);
    const mf_node *model = mf_cfg_find(root, "model");
    if (train_read_config(s, sec, model) != 0) return -1;
    return 0;
}

static void train_destroy(void *state) {
    train_state *s = state;
    if (!s) return;
    train_free_buffers(s);
    free(s);
}

/* Keys that may change on resume: what is logged and written, not what is computed. `steps` extends
 * or shortens the run (the schedule goes on continuously: mf_sched_extend); `on_nan` decides only
 * what happens at a non-finite step. */
static const char *const k_train_resume_free[] = {"steps", "log_every", "checkpoint_every", "keep_checkpoints",
                                                  "sample_every", "sample_n", "sample_steps", "sample_method",
                                                  "final_grid", "final_steps", "on_nan", "graphs", NULL};

static mf_stage_api train_api = {
    .abi_version = MF_STAGE_ABI_VERSION,
    .struct_size = sizeof(mf_stage_api),
    .kind = "train",
    .summary = "training of the UNet with any objective (fm, fm_avgvel, meanflow, imeanflow, alphaflow): AdamW, "
               "cosine LR, checkpoints, resume",
    .keys = NULL, /* train_keys(), set by the entry point */
    .shared = train_shared,
    .create = train_create,
    .run = train_run,
    .destroy = train_destroy,
    .resume_free = k_train_resume_free,
};

MF_EXPORT const mf_stage_api *mfpipe_stage_entry(void);
MF_EXPORT const mf_stage_api *mfpipe_stage_entry(void) {
    train_api.keys = train_keys();
    return &train_api;
}
