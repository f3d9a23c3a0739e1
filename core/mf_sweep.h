/* mf_sweep.h - sweeps (docs/sweeps.md): `mfpipe run EXP -m key=a,b key2=x,y` and `mfpipe sweep
 * SWEEP.yaml` expand axes into points, validate every point, and run each point as a normal run
 * folder (a child `mfpipe run ... --out DIR`), reusing one training for the points that differ only in
 * keys of stateless downstream stages (sample, eval, ...).
 *
 * Folder of one sweep: <results_dir>/<name>/<stamp>/ (results/<name>/latest points at the newest):
 *   sweep.yaml     the expanded sweep (below), written once before any point runs
 *   sweep.log      what the sweep did: plan, reuse, each point's start/end/failure
 *   <n>/           point n's run folder (n = 0, 1, ...): config.yaml, status.json, log.txt, ...
 *                  a reuse point whose training point failed gets only status.json {"state": "skipped"}
 *   retired/<n>-<k>/  an earlier attempt of point n that `sweep --resume` had to rerun from scratch
 *   summary.csv, summary.md, plots   written by mf_sweep_report (core/mf_sweep_report.c)
 *
 * sweep.yaml (every key always present; paths absolute; values are override texts, always quoted):
 *
 *   version: 1
 *   name: "sweep_channels_steps"
 *   sweep_file: "/abs/experiments/sweep_channels_steps.yaml"   # "" for `mfpipe run -m`
 *   experiment: "/abs/experiments/mnist_quick.yaml"            # the base experiment
 *   created: "2026-12-01T12:30:00Z"
 *   method: "grid"                    # grid | random | lua | multirun (`run -m`, a grid)
 *   seed: 0                           # of method random (and the Lua script's math.random)
 *   metric: "fid_lenet_v1"            # the metric the report plots
 *   threads: 1                        # threads= given to each point (0: the points set threads)
 *   jobs: 2                           # points run in parallel (local launcher)
 *   launcher: "local"                 # local | slurm
 *   overrides: ["train.steps=300"]    # fixed overrides, given to every point (first)
 *   axes:                             # key -> values, in order; the first axis varies slowest
 *     model.channels: ["16", "32", "64"]
 *     sample.steps: ["1", "2", "5"]
 *   points:
 *     - point: 0
 *       dir: "0"                      # the point's run folder, relative to the sweep folder
 *       overrides: ["train.steps=300", "model.channels=16", "sample.steps=1"]  # fixed + axes
 *       axes: {model.channels: "16", sample.steps: "1"}   # this point's value of each axis it sets
 *       train_point: 0                # the point whose training it uses; == point: it trains itself
 *       stages: ["data", "train", "ema", "sample", "eval"]   # the stages its run runs
 *       run_overrides: [...]          # the overrides its run gets: a training point: == overrides;
 *                                     # a reuse point: its overrides (one on a key of a dropped
 *                                     # stage's section that the experiment file lacks as +key=value),
 *                                     # then "stages=[data,sample,eval]",
 *                                     # "sample.from=\"/abs/<sweep>/0\""
 *     - point: 1
 *       ...
 *
 * With method lua the axes are the keys the sets give, each with its values in order of first
 * appearance, and a point's `axes` lists only the keys its set gives. The point's run is exactly
 *   mfpipe run <experiment> <run_overrides...> threads=<threads> --out <sweep>/<dir> -q
 * (threads= only when `threads` > 0). A point is finished when <dir>/status.json says "finished". */
#ifndef MF_SWEEP_H
#define MF_SWEEP_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mf_sweep_axis {
    char *key;                 /* dotted key, e.g. "model.channels" */
    char **values;             /* override value texts ("16", "[1,2,2]", "\"heun\"") */
    int n_values;
} mf_sweep_axis;

typedef struct mf_sweep_point {
    int point;                 /* index, == position in mf_sweep.points */
    char *dir;                 /* run folder relative to the sweep folder ("0") */
    char *path;                /* the same, absolute (sweep dir + "/" + dir) */
    char **overrides;          /* fixed + this point's axis overrides ("key=value") */
    int n_overrides;
    char **axis_values;        /* [n_axes]: this point's value of axis i, or NULL where it sets none */
    int train_point;           /* == point: it trains; else it reuses that point's model */
    char **stages;             /* the stage instances its run runs */
    int n_stages;
    char **run_overrides;      /* the overrides of its run (reuse points: + stages=..., sample.from=...) */
    int n_run_overrides;
} mf_sweep_point;

typedef struct mf_sweep {
    char *dir;                 /* the sweep folder as given to mf_sweep_load */
    char *name, *sweep_file, *experiment, *created, *method, *metric, *launcher;
    long long seed;
    int threads, jobs;
    char **overrides;          /* fixed overrides */
    int n_overrides;
    mf_sweep_axis *axes;
    int n_axes;
    mf_sweep_point *points;
    int n_points;
} mf_sweep;

/* Read <sweep_dir>/sweep.yaml (through mf_cfg_load_file: errors name file:line). 0, or -1 with
 * mf_fail; *out is zeroed first and safe to mf_sweep_free after a failure. */
int mf_sweep_load(const char *sweep_dir, mf_sweep *out);
void mf_sweep_free(mf_sweep *s);
/* Write s as <s->dir>/sweep.yaml (atomic). 0, or -1 with mf_fail. */
int mf_sweep_write(const mf_sweep *s);
/* Index of the axis with this key, or -1. */
int mf_sweep_axis_index(const mf_sweep *s, const char *key);

/* `mfpipe sweep ...` (argv after the command name) and `mfpipe run EXP -m ...` (argv after `run`,
 * holding -m / --multirun); both return the exit status (0 all points finished, 1 some failed or
 * were skipped, 2 bad command line or sweep, 130 interrupted). */
int mf_sweep_cmd(int argc, char **argv);
int mf_sweep_multirun_cmd(int argc, char **argv);
extern const char *const mf_sweep_help;

/* summary.csv, summary.md and the plots of a sweep folder, from its sweep.yaml and each point's run
 * folder (core/mf_sweep_report.c). 0, or -1 with mf_fail. */
int mf_sweep_report(const char *sweep_dir);

#ifdef __cplusplus
}
#endif
#endif
