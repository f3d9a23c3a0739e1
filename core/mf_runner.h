/* mf_runner.h - the pipeline runner used by the mfpipe command: plugin discovery and loading, the
 * experiment (config + stage instances) and the run lifecycle. Internal to the program and tests;
 * plugins see only mf_stage.h and mf_run.h. */
#ifndef MF_RUNNER_H
#define MF_RUNNER_H

#include <stdbool.h>

#include "mf_config.h"
#include "mf_stage.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- plugins (mf_plugin.c) -------------------------------------------------------------------- */
typedef struct mf_plugin {
    char *kind;
    char *path;
    void *handle;              /* dlopen handle */
    const mf_stage_api *api;
} mf_plugin;

/* Folders searched for stage_<kind>.so, in order: the build's plugin folder (next to the program:
 * <exe>/../lib/mfpipe/plugins), then each entry of MFPIPE_PLUGIN_PATH (colon-separated).
 * Returns the count; dirs[i] are malloc'ed. */
int mf_plugin_dirs(char ***dirs);
void mf_plugin_dirs_free(char **dirs, int n);
/* Every stage_*.so in the plugin folders, folder by folder, sorted within a folder. Returns the
 * count; free with mf_plugin_dirs_free. */
int mf_plugin_files(char ***paths);
/* Load one plugin file: dlopen(RTLD_NOW|RTLD_LOCAL), find mfpipe_stage_entry, check the ABI version
 * and struct. Errors show the path and dlerror() or both versions. */
int mf_plugin_open(const char *path, mf_plugin *out);
/* Find and load the plugin for a stage kind. */
int mf_plugin_load(const char *kind, mf_plugin *out);
void mf_plugin_close(mf_plugin *p);

/* ---- experiments (mf_experiment.c) ------------------------------------------------------------ */
typedef struct mf_stage_inst {
    char *instance;            /* name in `stages:` and of its config section */
    char *kind;                /* plugin kind (the section's `kind:` key, default: the instance name) */
    mf_plugin plugin;
    mf_node *section;          /* points into the experiment's root */
    void *state;               /* plugin state after create() */
    bool created;
} mf_stage_inst;

typedef struct mf_experiment {
    char *path;                /* the experiment file as given */
    mf_node *root;             /* composed, overridden, validated, defaults filled */
    char **overrides;
    int n_overrides;
    mf_stage_inst *stages;
    int n_stages;
    const char *name;          /* root.name */
    long long seed;
    int threads;               /* resolved (>= 1) */
    const char *engine;        /* as asked: "auto" / "cpu" / "cuda" (the run's log and manifest say what opened) */
    const char *precision;     /* as asked: "fp32" / "tf32" / "bf16" */
    const char *results_dir;
    struct mf_hooks *hooks;    /* the `hooks:` scripts, loaded and checked (NULL: none) */
} mf_experiment;

/* Load, compose, apply overrides, load every stage plugin and validate every section. No stage is
 * created yet, nothing is written. Returns 0 or -1 (mf_fail). */
int mf_experiment_load(mf_experiment *ex, const char *path, char *const *overrides, int n_overrides);
void mf_experiment_free(mf_experiment *ex);
/* The training settings (see mf_run_settings in mf_run.h) of a loaded experiment. Caller frees. */
char *mf_experiment_settings(const mf_experiment *ex);
/* Print each key of every stage's schema (for `mfpipe validate --keys`). */
void mf_experiment_print_keys(const mf_experiment *ex, FILE *f);

/* ---- the run (mf_run.c) ----------------------------------------------------------------------- */
typedef struct mf_run_opts {
    bool dry;                  /* validate only: create() every stage, run none, write nothing */
    const char *argv_line;     /* command line, for the manifest */
    const char *resume_dir;    /* continue this existing results folder instead of making one */
    const char *out_dir;       /* use exactly this folder (made if missing) instead of results/<name>/<stamp> */
    bool allow_changes;        /* resume even if training settings differ from the run's (--allow-changes) */
} mf_run_opts;
/* The whole lifecycle: create all stages; (unless dry) make the results folder, write the
 * experiment, resolved config, overrides, manifest, then run the stages in order; mark the folder
 * finished / failed / interrupted. The folder is locked (flock on <dir>/lock, holding the pid) for
 * the whole run: a second run or resume on it is refused. A resume compares the training settings
 * with the folder's config.yaml first (refused if they differ, unless allow_changes), then rewrites
 * config.yaml with the resolved configuration it runs. Returns 0, -1 (error in mf_last_error()),
 * or 130 if interrupted. */
int mf_run_experiment(mf_experiment *ex, const mf_run_opts *opts, char *run_dir_out, size_t cap);

/* ---- results folders (mf_results.c) ----------------------------------------------------------- */
/* Make `dir` (and parents) for a run; refuses a folder that already holds a run (status.json). */
int mf_results_create_at(const char *dir);
/* Create <root>/<name>/<YYYYmmdd-HHMMSS>[-n] atomically (mkdir; a taken name gets -1, -2, ...).
 * Checks that root is writable first. Writes the path to out. */
int mf_results_create(const char *root, const char *name, char *out, size_t cap);
/* Point <root>/<name>/latest at the run folder (symlink replaced atomically). */
int mf_results_link_latest(const char *run_dir);
/* Write status.json: state is "running", "finished", "failed" or "interrupted". */
int mf_results_status(const char *run_dir, const char *state, const char *stage, const char *error);
/* manifest.json: version, git revision + dirty, compiler, library versions, engine, host, seed,
 * threads, command line, start time. */
int mf_results_manifest(const char *run_dir, const mf_experiment *ex, const char *argv_line);
/* Add "backend": {kind, precision, version} to an existing manifest.json (the backend opens after the
 * manifest is written, in the first stage that needs it). */
int mf_results_manifest_backend(const char *run_dir, const char *kind, const char *precision, const char *version);
/* Library versions as one line ("libyaml 0.2.5, libpng 1.6.39, zlib 1.2.13, Lua 5.4.4"). */
void mf_library_versions(char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
