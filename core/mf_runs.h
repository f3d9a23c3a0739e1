/* mf_runs.h - `mfpipe ls` / `mfpipe runs` (a table of the run folders under a results root) and
 * `mfpipe show RUN_DIR` (one run's summary). Both only read the run folders; missing or corrupt files
 * become "?" with a warning on stderr, never a failure of the listing. */
#ifndef MF_RUNS_H
#define MF_RUNS_H

#ifdef __cplusplus
extern "C" {
#endif

extern const char *const mf_runs_ls_help;
extern const char *const mf_runs_show_help;

/* One run folder read as `ls` reads it, for reports over many runs (mf_sweep_report). Never fails:
 * what is missing is NULL / NaN silently, a corrupt file is a warning on stderr naming it. */
typedef struct mf_run_brief {
    int status_found;  /* status.json exists (also when it is corrupt) */
    char *state;       /* its "state"; NULL: no status.json, or unreadable */
    int stale;         /* "running", but no process holds the run's lock */
    char *error;       /* its "error" (failed, interrupted, skipped runs), or NULL */
    double wall_s;     /* manifest "started" to status.json "time" of an ended run, else the span of
                          metrics.jsonl's "time"s; NAN unknown */
    char *eval_path;   /* the newest of <dir>/eval.json and <dir>/eval/<stamp>/eval.json, or NULL */
    int n_metrics;     /* its numeric metrics, in file order: metrics[] entries whose "value" is a */
    char **metric;     /* number (or null: a non-finite value, NaN here), and a top-level "fid" */
    double *value;
} mf_run_brief;
void mf_run_brief_read(const char *dir, mf_run_brief *out);
void mf_run_brief_free(mf_run_brief *b);

/* argv excludes the command name; return the exit status (0 ok, 1 error, 2 bad command line) */
int mf_runs_ls_cmd(int argc, char **argv);
int mf_runs_show_cmd(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
