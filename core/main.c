/* main.c - the mfpipe command line: run (and run -m), sweep, validate, plugins, help, version. Commands parse their own
 * options; user errors print one line "mfpipe: error: ..." and exit non-zero. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mf_backend.h"
#include "mf_export.h"
#include "mf_json.h"
#include "mf_log.h"
#include "mf_plot.h"
#include "mf_report.h"
#include "mf_runner.h"
#include "mf_runs.h"
#include "mf_sweep.h"

#ifndef MFPIPE_VERSION
#define MFPIPE_VERSION "0"
#endif

enum { EXIT_USAGE = 2 };

static const char *k_usage =
    "usage: mfpipe <command> [options]\n"
    "\n"
    "MeanFlow / flow-matching image generation pipelines from YAML experiment files.\n"
    "\n"
    "commands:\n"
    "  run EXP.yaml [KEY=VALUE ...]     run an experiment into results/<name>/<stamp>/\n"
    "  run EXP.yaml -m KEY=A,B ...      a sweep: one run per combination (see 'mfpipe sweep --help')\n"
    "  sweep SWEEP.yaml [--jobs N]      run a sweep file's points, sharing trainings (--resume DIR, --dry)\n"
    "  resume RESULTS_DIR [KEY=VALUE ...] continue a run from its newest checkpoint\n"
    "  sample RESULTS_DIR [options]      new samples from a run's checkpoint (see 'mfpipe sample --help')\n"
    "  eval RESULTS_DIR | --samples F    FID and friends in a fixed LeNet's feature space\n"
    "  export RESULTS_DIR --out F.safetensors  a run's weights for PyTorch and others (docs/interop.md)\n"
    "  import F.safetensors --out DIR    a run folder from exported weights (then sample, eval)\n"
    "  plot TABLE.csv -o OUT.svg ...     an SVG line chart of CSV columns (see 'mfpipe plot --help')\n"
    "  validate EXP.yaml [KEY=VALUE ...] check an experiment (and overrides) without running it\n"
    "  ls [RESULTS_ROOT] [--json]        list the run folders: status, steps, best metric, wall time\n"
    "  show RUN_DIR                      one run's status, backend, seed, loss, eval metrics, images\n"
    "  report RESULTS_DIR                report.html of a run or sweep folder (also written at each end)\n"
    "  plugins                           list stage plugins: kind, ABI version, path\n"
    "  help [COMMAND]                    this text, or a command's help\n"
    "\n"
    "options: --version, --help; 'mfpipe COMMAND --help' for a command's options.\n"
    "overrides (Hydra syntax): a.b=v (change), +a.b=v (add), ~a.b (delete); values are YAML:\n"
    "  mfpipe run experiments/mnist_quick.yaml train.steps=500 model.channel_mult=[1,2,2]\n"
    "multirun: -m makes every override with commas (or range(a,b[,step]), choice(a,b)) an axis:\n"
    "  mfpipe run experiments/mnist_quick.yaml -m model.channels=16,32 sample.steps=1,2,5 --jobs 2\n";

static const char *k_run_help =
    "usage: mfpipe run EXP.yaml [KEY=VALUE | +KEY=VALUE | ~KEY ...] [options]\n"
    "       mfpipe run EXP.yaml -m KEY=A,B,C [KEY2=X,Y ...] [KEY=V ...] [--jobs N] [--dry] [-q]\n"
    "\n"
    "Runs the stages listed in the experiment, in order, after creating and configuring all of them.\n"
    "Writes results/<name>/<YYYYmmdd-HHMMSS>[-n]/ with experiment.yaml, config.yaml (resolved),\n"
    "overrides.txt, manifest.json, status.json, log.txt, metrics.jsonl and the stages' outputs;\n"
    "results/<name>/latest points at the newest run.\n"
    "\n"
    "options:\n"
    "  -q, --quiet      only warnings and errors on the terminal (log.txt gets everything)\n"
    "  --results DIR    results root (same as results_dir=DIR)\n"
    "  --resume DIR     continue the run in DIR from its newest checkpoint (see 'mfpipe resume')\n"
    "  --out DIR        write the run into exactly this folder (created; must not hold another run)\n"
    "  --allow-changes  with --resume: continue although training settings differ (see 'mfpipe resume')\n"
    "  -m, --multirun   a sweep over the overrides with several values (a,b,c; range(a,b[,step]); choice(a,b));\n"
    "                   the first such key varies slowest; results/<name>_multirun/<stamp>/<n>/ (see\n"
    "                   'mfpipe sweep --help': --jobs N, --dry, stage reuse, --resume)\n"
    "exit status: 0 finished, 1 failed, 2 bad command line or experiment, 130 interrupted\n";

static const char *k_resume_help =
    "usage: mfpipe resume RESULTS_DIR [KEY=VALUE ...] [--allow-changes] [-q]\n"
    "\n"
    "Continues a run in its own folder from its newest valid checkpoint (corrupt or truncated ones\n"
    "are moved to checkpoints/corrupt/), with the folder's resolved config.yaml plus any overrides.\n"
    "A run killed at any moment and resumed ends with the same weights as an uninterrupted one\n"
    "(same engine and thread count).\n"
    "\n"
    "Overrides that change what training computes (seed, model, data, objective, batch, optimizer,\n"
    "time distribution, EMA, ...) are refused, naming each key with its recorded and new value,\n"
    "unless --allow-changes is given. Logging, checkpoint and preview cadence may change freely, and\n"
    "so may train.steps: extending a run (train.steps=20000) keeps the learning rate continuous: the\n"
    "schedule goes on from the current rate and decays to its minimum at the new last step (inside\n"
    "the warm-up, the warm-up is unchanged). Every resume appends a line to resumes.jsonl (time,\n"
    "step, checkpoint, command, overrides, changed settings) and config.yaml is rewritten to what ran.\n"
    "A folder in use by another mfpipe process is refused (lock file RESULTS_DIR/lock).\n"
    "Same as: mfpipe run RESULTS_DIR/config.yaml --resume RESULTS_DIR [KEY=VALUE ...]\n";

static const char *k_sample_help =
    "usage: mfpipe sample RESULTS_DIR [--sampler S] [--steps K] [--n N] [--seed S] [--weights ema|raw]\n"
    "                     [--batch B] [--out DIR] [KEY=VALUE ...]\n"
    "\n"
    "New samples from a finished or running run's newest checkpoint, without retraining: the sample\n"
    "stage alone with the run's resolved config. Output: RESULTS_DIR/sample/<stamp>/ (or --out DIR):\n"
    "samples/grid.png, samples/samples.idx3-ubyte, samples/trajectory.png, outputs/mnist_digits_final.png.\n"
    "Samplers: euler, heun, rk4, dopri5 (sample.rtol, sample.atol, sample.max_nfe), meanflow, or a\n"
    "sampler plugin's name. Other sample.* keys as overrides (mfpipe validate EXP --keys lists them).\n";

static const char *k_eval_help =
    "usage: mfpipe eval RESULTS_DIR [--n N] [--out DIR] [KEY=VALUE ...]\n"
    "       mfpipe eval --samples FILE.idx3-ubyte|GRID.png [--grid-nrow K] [--n N]\n"
    "       mfpipe eval --reference       (the floor: 10,000 MNIST training images vs the test set)\n"
    "       mfpipe eval --check-features  (train and test accuracy of the feature network)\n"
    "\n"
    "Metrics in the feature space of the fixed LeNet network (models/lenet_mnist_v1.mfw, --features to\n"
    "change): fid_lenet_v1, precision/recall (k=3), classifier score, mean max confidence, class\n"
    "histogram and its normalised entropy, conditional accuracy, nearest training images. Results:\n"
    "eval.json and metrics.jsonl in RESULTS_DIR/eval/<stamp>/ (or results/eval/<stamp>/, or --out).\n"
    "Numbers are comparable only at equal N and with the same feature network (both are recorded).\n";

static const char *k_validate_help =
    "usage: mfpipe validate EXP.yaml [KEY=VALUE ...] [--print] [--keys]\n"
    "\n"
    "Loads the experiment, applies overrides, loads every stage plugin, validates every key and\n"
    "configures every stage, without running anything or writing files.\n"
    "  --print   print the resolved configuration (defaults and overrides applied) as YAML\n"
    "  --keys    list every key the experiment's stages accept, with type, default and help\n";

static const char *k_plugins_help =
    "usage: mfpipe plugins\n"
    "\n"
    "Lists the stage plugins found in the plugin folders (the build's, then MFPIPE_PLUGIN_PATH):\n"
    "kind, ABI version, path and summary; plugins that fail to load are listed with the reason.\n";

static int has_flag(int argc, char **argv, const char *a, const char *b) {
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], a) == 0 || (b && strcmp(argv[i], b) == 0)) return 1;
    return 0;
}

static int error_exit(int code) {
    fprintf(stderr, "mfpipe: error: %s\n", mf_last_error());
    return code;
}

static char *join_argv(int argc, char **argv) {
    mf_buf b = {0};
    mf_buf_puts(&b, "");
    for (int i = 0; i < argc; i++) mf_buf_printf(&b, "%s%s", i ? " " : "", argv[i]);
    return b.s;
}

/* Split args into the experiment path, overrides and known options. */
typedef struct cli_args {
    const char *exp;
    char **ov;
    int n_ov;
    int quiet, print, keys, allow_changes;
    const char *results, *resume, *out;
} cli_args;

static int parse_args(int argc, char **argv, cli_args *a, const char *cmd) {
    memset(a, 0, sizeof *a);
    a->ov = mf_xcalloc((size_t)argc + 2, sizeof *a->ov);
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "-q") == 0 || strcmp(s, "--quiet") == 0) a->quiet = 1;
        else if (strcmp(s, "--print") == 0) a->print = 1;
        else if (strcmp(s, "--keys") == 0) a->keys = 1;
        else if (strcmp(s, "--allow-changes") == 0) a->allow_changes = 1;
        else if (strcmp(s, "--results") == 0) {
            if (i + 1 >= argc) return mf_fail("%s: --results needs a folder", cmd);
            a->results = argv[++i];
        } else if (strcmp(s, "--out") == 0) {
            if (i + 1 >= argc) return mf_fail("%s: --out needs a folder", cmd);
            a->out = argv[++i];
        } else if (strcmp(s, "--resume") == 0) {
            if (i + 1 >= argc) return mf_fail("%s: --resume needs a results folder", cmd);
            a->resume = argv[++i];
        } else if (s[0] == '-' && s[1] == '-') return mf_fail("%s: unknown option '%s' (see 'mfpipe %s --help')", cmd, s, cmd);
        else if (!a->exp && !strchr(s, '=') && s[0] != '~' && s[0] != '+') a->exp = s;
        else if (strchr(s, '=') || s[0] == '~') a->ov[a->n_ov++] = (char *)s;
        else return mf_fail("%s: unexpected argument '%s' (overrides look like key=value)", cmd, s);
    }
    if (!a->exp) return mf_fail("%s: no experiment file given (see 'mfpipe %s --help')", cmd, cmd);
    return 0;
}

static int cmd_run(int argc, char **argv, int dry, const char *full_cmdline) {
    const char *cmd = dry ? "validate" : "run";
    if (has_flag(argc, argv, "--help", "-h")) {
        fputs(dry ? k_validate_help : k_run_help, stdout);
        return 0;
    }
    if (!dry && has_flag(argc, argv, "-m", "--multirun")) return mf_sweep_multirun_cmd(argc, argv);
    cli_args a;
    if (parse_args(argc, argv, &a, cmd) != 0) {
        free(a.ov);
        return error_exit(EXIT_USAGE);
    }
    char *results_ov = NULL;
    if (a.results) {
        results_ov = mf_xasprintf("results_dir=\"%s\"", a.results);
        a.ov[a.n_ov++] = results_ov;
    }
    if (a.quiet) mf_log_set_quiet(1);
    mf_experiment ex;
    int rc;
    if (mf_experiment_load(&ex, a.exp, a.ov, a.n_ov) != 0) {
        rc = error_exit(EXIT_USAGE);
        goto out;
    }
    if (a.allow_changes && !a.resume) {
        mf_fail("%s: --allow-changes applies to resuming only (--resume DIR or 'mfpipe resume')", cmd);
        rc = error_exit(EXIT_USAGE);
        goto out;
    }
    mf_run_opts opts = {.dry = dry, .argv_line = full_cmdline, .resume_dir = a.resume, .out_dir = a.out,
                        .allow_changes = a.allow_changes != 0};
    char dir[4096];
    int r = mf_run_experiment(&ex, &opts, dir, sizeof dir);
    if (r == 130) rc = 130;
    else if (r != 0) rc = error_exit(dir[0] ? 1 : EXIT_USAGE);
    else rc = 0;
    if (rc == 0 && dry) {
        if (a.keys) mf_experiment_print_keys(&ex, stdout);
        if (a.print) mf_cfg_dump_yaml(ex.root, stdout);
        if (!a.keys && !a.print) {
            printf("%s: ok (%d stage%s:", a.exp, ex.n_stages, ex.n_stages == 1 ? "" : "s");
            for (int i = 0; i < ex.n_stages; i++) printf(" %s", ex.stages[i].instance);
            printf(")\n");
        }
    }
out:
    mf_experiment_free(&ex);
    free(results_ov);
    free(a.ov);
    return rc;
}

/* mfpipe resume DIR [overrides]: the run folder's resolved config, continued in place */
static int cmd_resume(int argc, char **argv, const char *full_cmdline) {
    if (has_flag(argc, argv, "--help", "-h") || argc < 1) {
        fputs(k_resume_help, argc < 1 ? stderr : stdout);
        return argc < 1 ? EXIT_USAGE : 0;
    }
    const char *dir = argv[0];
    char *cfg = mf_xasprintf("%s/config.yaml", dir);
    char **args = mf_xcalloc((size_t)argc + 3, sizeof *args);
    args[0] = cfg;
    for (int i = 1; i < argc; i++) args[i] = argv[i];
    args[argc] = "--resume";
    args[argc + 1] = (char *)dir;
    int rc = cmd_run(argc + 2, args, 0, full_cmdline);
    free(args);
    free(cfg);
    return rc;
}

/* mfpipe sample RUN_DIR [options] [overrides]: the sample stage alone on the run's newest checkpoint */
static int cmd_sample(int argc, char **argv, const char *full_cmdline) {
    if (has_flag(argc, argv, "--help", "-h") || argc < 1) {
        fputs(k_sample_help, argc < 1 ? stderr : stdout);
        return argc < 1 ? EXIT_USAGE : 0;
    }
    const char *dir = argv[0];
    char **args = mf_xcalloc((size_t)argc * 2 + 8, sizeof *args);
    char **owned = mf_xcalloc((size_t)argc * 2 + 8, sizeof *owned);
    int na = 0, no = 0, rc = 0;
    const char *out = NULL;
    args[na++] = owned[no++] = mf_xasprintf("%s/config.yaml", dir);
    args[na++] = "stages=[sample]";
    args[na++] = owned[no++] = mf_xasprintf("sample.from=\"%s\"", dir);
    static const struct { const char *flag, *key; } map[] = {
        {"--sampler", "sampler"}, {"--steps", "steps"}, {"--n", "n"}, {"--seed", "seed"},
        {"--weights", "weights"}, {"--batch", "batch"}};
    for (int i = 1; i < argc; i++) {
        int used = 0;
        for (size_t k = 0; k < sizeof map / sizeof map[0]; k++)
            if (strcmp(argv[i], map[k].flag) == 0) {
                if (i + 1 >= argc) {
                    mf_fail("sample: %s needs a value", argv[i]);
                    rc = error_exit(EXIT_USAGE);
                    goto done;
                }
                args[na++] = owned[no++] = mf_xasprintf("sample.%s=%s", map[k].key, argv[++i]);
                used = 1;
            }
        if (used) continue;
        if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) out = argv[++i];
        else args[na++] = argv[i];
    }
    if (out) {
        args[na++] = "--out";
        args[na++] = (char *)out;
    } else {
        /* default: <run>/sample/<stamp>/ */
        args[na++] = owned[no++] = mf_xasprintf("results_dir=\"%s\"", dir);
        args[na++] = "name=sample";
    }
    rc = cmd_run(na, args, 0, full_cmdline);
done:
    for (int i = 0; i < no; i++) free(owned[i]);
    free(owned);
    free(args);
    return rc;
}

/* mfpipe eval: metrics of a run's samples, of a samples file, the floor, or the feature network */
static int cmd_eval(int argc, char **argv, const char *full_cmdline) {
    if (has_flag(argc, argv, "--help", "-h")) {
        fputs(k_eval_help, stdout);
        return 0;
    }
    char **args = mf_xcalloc((size_t)argc * 2 + 12, sizeof *args);
    char **owned = mf_xcalloc((size_t)argc * 2 + 12, sizeof *owned);
    int na = 0, no = 0, rc = 0;
    const char *dir = NULL, *samples = NULL, *out = NULL;
    int reference = 0, check = 0;
    args[na++] = NULL; /* the experiment, decided below */
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--reference") == 0) reference = 1;
        else if (strcmp(a, "--check-features") == 0) check = 1;
        else if (strcmp(a, "--samples") == 0 && val) samples = argv[++i];
        else if (strcmp(a, "--out") == 0 && val) out = argv[++i];
        else if ((strcmp(a, "--n") == 0 || strcmp(a, "--features") == 0 || strcmp(a, "--grid-nrow") == 0) && val) {
            const char *key = a[2] == 'n' ? "n" : a[2] == 'f' ? "features" : "grid_nrow";
            const char *q = a[2] == 'f' ? "\"" : ""; /* a path is quoted; numbers are not */
            args[na++] = owned[no++] = mf_xasprintf("eval.%s=%s%s%s", key, q, argv[++i], q);
        } else if (a[0] != '-' && !strchr(a, '=') && !dir && !samples) dir = a;
        else args[na++] = argv[i];
    }
    if (dir && (reference || check || samples)) {
        mf_fail("eval: give a results folder, or one of --samples, --reference, --check-features");
        rc = error_exit(EXIT_USAGE);
        goto done;
    }
    if (!dir && !reference && !check && !samples) {
        fputs(k_eval_help, stderr);
        rc = EXIT_USAGE;
        goto done;
    }
    if (dir) {
        args[0] = owned[no++] = mf_xasprintf("%s/config.yaml", dir);
        args[na++] = "stages=[data,eval]";
        args[na++] = owned[no++] = mf_xasprintf("eval.samples=\"%s/samples/samples.idx3-ubyte\"", dir);
        if (!out) {
            args[na++] = owned[no++] = mf_xasprintf("results_dir=\"%s\"", dir);
            args[na++] = "name=eval";
        }
    } else {
        args[0] = owned[no++] = mf_xasprintf("%s/experiments/eval.yaml", MFPIPE_SOURCE_DIR);
        if (samples) args[na++] = owned[no++] = mf_xasprintf("eval.samples=\"%s\"", samples);
        if (reference) args[na++] = "eval.reference=true";
        if (check) args[na++] = "eval.check_features=true";
    }
    if (out) {
        args[na++] = "--out";
        args[na++] = (char *)out;
    }
    rc = cmd_run(na, args, 0, full_cmdline);
done:
    for (int i = 0; i < no; i++) free(owned[i]);
    free(owned);
    free(args);
    return rc;
}

static int cmd_plugins(int argc, char **argv) {
    if (has_flag(argc, argv, "--help", "-h")) {
        fputs(k_plugins_help, stdout);
        return 0;
    }
    char **dirs, **paths;
    int n = mf_plugin_dirs(&dirs), np = mf_plugin_files(&paths), found = 0, broken = 0;
    printf("%-16s %-4s %s\n", "KIND", "ABI", "PATH / SUMMARY");
    for (int i = 0; i < np; i++) {
        char *canon = realpath(paths[i], NULL);
        const char *path = canon ? canon : paths[i];
        mf_plugin p;
        if (mf_plugin_open(path, &p) == 0) {
            printf("%-16s %-4u %s\n%-21s %s\n", p.kind, (unsigned)p.api->abi_version, p.path, "",
                   p.api->summary ? p.api->summary : "");
            mf_plugin_close(&p);
            found++;
        } else {
            printf("%-16s %-4s %s\n%-21s refused: %s\n", "?", "-", path, "", mf_last_error());
            broken++;
        }
        free(canon);
    }
    mf_plugin_dirs_free(paths, np);
    printf("%d plugin%s (ABI %u) in:", found, found == 1 ? "" : "s", (unsigned)MF_STAGE_ABI_VERSION);
    for (int i = 0; i < n; i++) printf(" %s", dirs[i]);
    printf("\n");
    if (broken) printf("%d file%s refused\n", broken, broken == 1 ? "" : "s");
    mf_plugin_dirs_free(dirs, n);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs(k_usage, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    char *line = join_argv(argc, argv);
    int rc;
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        char libs[256];
        mf_library_versions(libs, sizeof libs);
        printf("mfpipe %s (plugin ABI %u; %s)\n", MFPIPE_VERSION, (unsigned)MF_STAGE_ABI_VERSION, libs);
        /* each backend: what it runs on, or why it cannot be opened here (backend ABI in brackets) */
        for (int i = 0; mf_backend_names[i]; i++) {
            mf_backend *be = mf_backend_open(mf_backend_names[i], &(mf_backend_opts){.threads = 0});
            if (be) {
                printf("backend %s [ABI %u]: %s\n", mf_backend_names[i], (unsigned)MF_BACKEND_ABI_VERSION,
                       be->i->version(be));
                mf_backend_free(be);
            } else {
                printf("backend %s [ABI %u]: unavailable: %s\n", mf_backend_names[i],
                       (unsigned)MF_BACKEND_ABI_VERSION, mf_last_error());
                mf_error_clear();
            }
        }
        rc = 0;
    } else if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        fputs(k_usage, stdout);
        rc = 0;
    } else if (strcmp(cmd, "help") == 0) {
        const char *which = argc > 2 ? argv[2] : "";
        fputs(strcmp(which, "run") == 0        ? k_run_help
              : strcmp(which, "validate") == 0 ? k_validate_help
              : strcmp(which, "plugins") == 0  ? k_plugins_help
              : strcmp(which, "resume") == 0   ? k_resume_help
              : strcmp(which, "sample") == 0   ? k_sample_help
              : strcmp(which, "eval") == 0     ? k_eval_help
              : strcmp(which, "plot") == 0     ? mf_plot_help
              : strcmp(which, "ls") == 0 || strcmp(which, "runs") == 0 ? mf_runs_ls_help
              : strcmp(which, "show") == 0     ? mf_runs_show_help
              : strcmp(which, "report") == 0   ? mf_report_help
              : strcmp(which, "sweep") == 0    ? mf_sweep_help
              : strcmp(which, "export") == 0   ? mf_export_help
              : strcmp(which, "import") == 0   ? mf_import_help
                                               : k_usage,
              stdout);
        rc = 0;
    } else if (strcmp(cmd, "run") == 0) {
        rc = cmd_run(argc - 2, argv + 2, 0, line);
    } else if (strcmp(cmd, "validate") == 0) {
        rc = cmd_run(argc - 2, argv + 2, 1, line);
    } else if (strcmp(cmd, "eval") == 0) {
        rc = cmd_eval(argc - 2, argv + 2, line);
    } else if (strcmp(cmd, "sample") == 0) {
        rc = cmd_sample(argc - 2, argv + 2, line);
    } else if (strcmp(cmd, "resume") == 0) {
        rc = cmd_resume(argc - 2, argv + 2, line);
    } else if (strcmp(cmd, "plot") == 0) {
        rc = mf_plot_cmd(argc - 2, argv + 2);
        if (rc != 0) rc = error_exit(rc);
    } else if (strcmp(cmd, "ls") == 0 || strcmp(cmd, "runs") == 0) {
        rc = mf_runs_ls_cmd(argc - 2, argv + 2);
    } else if (strcmp(cmd, "show") == 0) {
        rc = mf_runs_show_cmd(argc - 2, argv + 2);
    } else if (strcmp(cmd, "report") == 0) {
        rc = mf_report_cmd(argc - 2, argv + 2);
    } else if (strcmp(cmd, "sweep") == 0) {
        rc = mf_sweep_cmd(argc - 2, argv + 2);
    } else if (strcmp(cmd, "export") == 0 || strcmp(cmd, "import") == 0) {
        bool ex = strcmp(cmd, "export") == 0;
        if (has_flag(argc - 2, argv + 2, "--help", "-h")) {
            fputs(ex ? mf_export_help : mf_import_help, stdout);
            rc = 0;
        } else {
            rc = ex ? mf_export_cmd(argc - 2, argv + 2) : mf_import_cmd(argc - 2, argv + 2);
            if (rc != 0) rc = error_exit(rc);
        }
    } else if (strcmp(cmd, "plugins") == 0) {
        rc = cmd_plugins(argc - 2, argv + 2);
    } else {
        mf_fail("unknown command '%s' (commands: run, sweep, resume, sample, eval, export, import, plot, validate, ls, show, report, plugins, help; see 'mfpipe --help')", cmd);
        rc = error_exit(EXIT_USAGE);
    }
    free(line);
    return rc;
}
