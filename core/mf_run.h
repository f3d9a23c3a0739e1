/* mf_run.h - what a running stage may ask of the runner: the configuration, the results folder, the
 * seed and engine, the typed artifact registry through which stages pass results, events (EMA and
 * periodic sampling subscribe to "train.step"), and metrics.jsonl. Never globals. */
#ifndef MF_RUN_H
#define MF_RUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mf_config.h"
#include "mf_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mf_run mf_run;

const mf_node *mf_run_config(const mf_run *run);   /* resolved root config */
/* Results folder of this run, or NULL when nothing is written (`mfpipe validate`). */
const char *mf_run_dir(const mf_run *run);
uint64_t mf_run_seed(const mf_run *run);
int mf_run_threads(const mf_run *run);             /* worker threads to use (>= 1) */
const char *mf_run_engine(const mf_run *run);      /* the engine as asked: "auto", "cpu", "cuda" */
const char *mf_run_precision(const mf_run *run);   /* the precision as asked: "fp32", "tf32", "bf16" */
struct mf_hooks;
/* The run's Lua hooks (mf_hooks.h, docs/hooks.md), loaded and checked with the experiment; NULL: none. */
struct mf_hooks *mf_run_hooks(const mf_run *run);
/* The engine layer (engine/mf_model.c) reports the backend it opened for this run: logged, and
 * recorded in manifest.json as "backend": {kind, precision, version}. */
int mf_run_note_backend(mf_run *run, const char *kind, const char *precision, const char *version);
bool mf_run_interrupted(const mf_run *run);        /* SIGINT/SIGTERM received: stop at a safe point */
/* True when this run continues an existing results folder (`mfpipe resume DIR`): stages with state
 * load their newest checkpoint from it. */
bool mf_run_resuming(const mf_run *run);

/* ---- resume safety --------------------------------------------------------------------------- */
/* The training settings of this run: one "dotted.key=value" line per key (values canonical: numbers
 * as %.17g), for `seed` and every key of every stage's sections except those its plugin lists in
 * `resume_free` (mf_stage.h). Stages with state record it in their checkpoints. Caller frees. */
char *mf_run_settings(const mf_run *run);
/* Compare `recorded` (mf_run_settings() text, as stored in `source`) with this run's settings. Any
 * difference is an error listing every changed key with both values, unless the user passed
 * --allow-changes (then a warning each). Returns 0 or -1 (mf_fail). */
int mf_run_check_settings(mf_run *run, const char *recorded, const char *source);
/* A resuming stage reports where it continued from; the runner appends the record (time, step,
 * checkpoint, command line, overrides, changed settings) to the run folder's resumes.jsonl. */
int mf_run_resumed_from(mf_run *run, int64_t step, const char *checkpoint);

/* Path inside the results folder; creates parent folders. Returns 0 or -1 (mf_fail). */
int mf_run_path(const mf_run *run, char *buf, size_t cap, const char *rel);

/* ---- artifacts: named, typed values owned by the run --------------------------------------- */
/* `type` is a versioned type tag such as MF_ART_DATASET; a get with another tag is refused.
 * free_fn (may be NULL) is called on the value when the run ends or the name is replaced. */
int mf_artifact_put(mf_run *run, const char *name, const char *type, void *value,
                    void (*free_fn)(void *));
/* NULL with mf_fail() when missing ("no artifact 'dataset': add a data stage before 'train'") or
 * of another type. */
void *mf_artifact_get(mf_run *run, const char *name, const char *type);

/* ---- events --------------------------------------------------------------------------------- */
/* Handlers run synchronously in subscription order; a non-zero return stops the emitter with that
 * handler's error. The payload's type is fixed per event name (documented where it is emitted). */
typedef int (*mf_event_fn)(void *user, mf_run *run, const char *event, const void *payload);
int mf_event_subscribe(mf_run *run, const char *event, mf_event_fn fn, void *user);
int mf_event_emit(mf_run *run, const char *event, const void *payload);

/* ---- metrics.jsonl ---------------------------------------------------------------------------- */
/* Append one JSON object line {"stage":..., "time":..., <fields>} where fields is the inside of a
 * JSON object ("\"loss\":0.1,\"step\":5"), built with mf_json.h. No-op when the run has no folder.
 * Returns 0 or -1 (mf_fail); a failed write also fails the running stage when it returns, so no
 * metric is lost silently even where a caller does not check. */
int mf_metrics_append(mf_run *run, const char *stage, const char *fields);
/* Add a PNG file to the run's TensorBoard events (tb/) as an image summary `tag` at `step` (-1: the
 * last training step logged). A TensorBoard write failure is a warning, never an error. */
int mf_run_tb_image(mf_run *run, const char *tag, int64_t step, const char *png_path);

#ifdef __cplusplus
}
#endif
#endif
