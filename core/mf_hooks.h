/* mf_hooks.h - Lua 5.4 hooks (docs/hooks.md): user scripts, listed under the experiment's top-level
 * `hooks:`, that replace the learning-rate schedule, weight each sample's loss, set the EMA decay per
 * step, and watch the logged metrics (on_step: extra metrics, a checkpoint, a stop) and the
 * evaluation (on_eval). Also the sandboxed runner of sweep scripts (`method: lua` in mfpipe sweep).
 *
 * Sandbox: every script runs in its own lua_State (nothing, not even the string metatable, is shared
 * between scripts) with only base (without dofile, loadfile, collectgarbage, and with a load() that
 * takes text only), table, string (without string.dump), math (seeded from the run's seed) and utf8;
 * scripts are loaded as text only; each call may run at most MF_HOOK_MAX_INSTRUCTIONS VM
 * instructions (and at most MF_HOOK_MAX_SECONDS); each script may hold at most MF_HOOK_MAX_BYTES.
 * A failing call is an error naming the hook, the script's file:line and the step, with a Lua
 * traceback; a hook that returns a non-number, NaN, or (for loss_weight) a negative weight is an
 * error naming the hook and the step. */
#ifndef MF_HOOKS_H
#define MF_HOOKS_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MF_HOOK_MAX_INSTRUCTIONS 20000000LL /* per call (about 0.1-0.3 s of Lua) */
#define MF_HOOK_MAX_SECONDS 1.0             /* per call, wall clock, checked with the instruction count */
#define MF_HOOK_MAX_BYTES ((size_t)64 << 20) /* per script */

typedef enum mf_hook_kind {
    MF_HOOK_LR,                /* lr(step, total_steps, base_lr) -> learning rate */
    MF_HOOK_LOSS_WEIGHT,       /* loss_weight(t, r, step, label) -> weight >= 0 */
    MF_HOOK_LOSS_WEIGHT_BATCH, /* loss_weight_batch(ts, rs, step, labels) -> array of weights */
    MF_HOOK_EMA_DECAY,         /* ema_decay(step) -> decay in [0, 1] */
    MF_HOOK_ON_STEP,           /* on_step(m) every log_every steps */
    MF_HOOK_ON_EVAL,           /* on_eval(m) after the eval stage */
    MF_HOOK_COUNT
} mf_hook_kind;

typedef struct mf_hooks mf_hooks;

/* The hook function names, by kind ("lr", "loss_weight", ...). */
const char *mf_hook_name(mf_hook_kind k);

/* Load the scripts (paths as given; relative ones against base_dir, the experiment file's folder),
 * run each chunk once in its own sandbox, and check its global functions: an unknown name is an
 * error with the nearest known one suggested (helpers must be local functions); a value hook (lr,
 * loss_weight[_batch], ema_decay) defined by two scripts is an error naming both. seed seeds
 * math.random. *out is NULL-safe to free. 0, or -1 with mf_fail. */
int mf_hooks_load(const char *base_dir, char *const *paths, int n, uint64_t seed, mf_hooks **out);
void mf_hooks_free(mf_hooks *h);
/* The scripts: count, resolved path and SHA-256 (hex) of each (the run's settings record them). */
int mf_hooks_count(const mf_hooks *h);
const char *mf_hooks_path(const mf_hooks *h, int i);
const char *mf_hooks_sha256(const mf_hooks *h, int i);
/* Whether some script defines the hook (false for h == NULL). loss_weight is true when either
 * loss_weight or loss_weight_batch is defined. */
bool mf_hooks_has(const mf_hooks *h, mf_hook_kind k);

/* lr(step, total_steps, base_lr): step 0-based (the step being computed). */
int mf_hooks_lr(mf_hooks *h, int64_t step, int64_t total_steps, double base_lr, double *lr);
/* Per-sample weights w[0..n) for the step: loss_weight_batch(ts, rs, step, labels) once, or
 * loss_weight(t, r, step, label) per row. r (NULL: flow matching; nil in Lua) and labels (NULL:
 * unconditional) as in the objective's batch; rows with dropped[i] (class dropout; dropped may be
 * NULL) get a nil label (false in the batch form); step 0-based. */
int mf_hooks_loss_weight(mf_hooks *h, int n, const float *t, const float *r, int64_t step,
                         const int32_t *labels, const uint8_t *dropped, float *w);
/* ema_decay(step): step 1-based (the number of optimizer steps done, as the EMA update sees it). */
int mf_hooks_ema_decay(mf_hooks *h, int64_t step, double *decay);

/* What on_step / on_eval returned. */
#define MF_HOOK_MAX_LOG 32
typedef struct mf_hook_action {
    int n_log;                        /* log = {name = value}: extra metrics, sorted by name */
    char log_name[MF_HOOK_MAX_LOG][64];
    double log_value[MF_HOOK_MAX_LOG];
    bool checkpoint;                  /* checkpoint = true */
    char stop[256];                   /* stop = "reason" ("" = go on) */
} mf_hook_action;

/* on_step(m) / on_eval(m): m is a table of the metrics (names[i] = values[i]; NaN becomes nil), plus
 * m.step. Every script defining the hook is called, in order; their actions are merged (the first
 * stop wins). */
int mf_hooks_on_step(mf_hooks *h, int64_t step, int n, const char *const *names, const double *values,
                     mf_hook_action *act);
int mf_hooks_on_eval(mf_hooks *h, int64_t step, int n, const char *const *names, const double *values,
                     mf_hook_action *act);

/* Seconds spent in Lua calls so far, and the number of calls (for the log and bench/). */
double mf_hooks_seconds(const mf_hooks *h, int64_t *calls);

/* ---- sweep scripts --------------------------------------------------------------------------- */
/* Run a sweep script (sandboxed as above, text only) that returns a list of override sets: each a
 * table {key = value, ...} (keys sorted) or a list of "key=value" strings. Values: integers as
 * integers, other numbers as %.17g, strings as given, booleans true/false, lists as [a,b,...].
 * *sets[i] is a NULL-terminated array of malloc'ed "key=value" strings; n_sets of them.
 * 0, or -1 with mf_fail naming the script (and the set and key that is wrong). */
int mf_lua_sweep_sets(const char *path, uint64_t seed, char ****sets, int *n_sets);
void mf_lua_sweep_sets_free(char ***sets, int n_sets);

#ifdef __cplusplus
}
#endif
#endif
