/* mf_run.c - the run: the context stages see (config, folder, artifacts, events, metrics) and the
 * lifecycle: create every stage, then make the results folder and run the stages in order. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "mf_io.h"
#include "mf_json.h"
#include "mf_log.h"
#include "mf_runner.h"

typedef struct artifact {
    char *name, *type;
    void *value;
    void (*free_fn)(void *);
} artifact;

typedef struct subscription {
    char *event;
    mf_event_fn fn;
    void *user;
} subscription;

struct mf_run {
    const mf_experiment *ex;
    char *dir; /* NULL until the results folder exists (and always for dry runs) */
    FILE *metrics;
    artifact *arts;
    int n_arts;
    subscription *subs;
    int n_subs;
    bool resuming;
};

static volatile sig_atomic_t g_interrupted;

static void on_signal(int sig) {
    g_interrupted = 1;
    /* a second Ctrl-C kills at once */
    signal(sig, SIG_DFL);
}

const mf_node *mf_run_config(const mf_run *run) { return run->ex->root; }
const char *mf_run_name(const mf_run *run) { return run->ex->name; }
const char *mf_run_dir(const mf_run *run) { return run->dir; }
uint64_t mf_run_seed(const mf_run *run) { return (uint64_t)run->ex->seed; }
int mf_run_threads(const mf_run *run) { return run->ex->threads; }
const char *mf_run_engine(const mf_run *run) { return run->ex->engine; }
bool mf_run_interrupted(const mf_run *run) { return g_interrupted != 0; }
bool mf_run_resuming(const mf_run *run) { return run->resuming; }

int mf_run_path(const mf_run *run, char *buf, size_t cap, const char *rel) {
    if (!run->dir) return mf_fail("no results folder (dry run): cannot write %s", rel);
    int n = snprintf(buf, cap, "%s/%s", run->dir, rel);
    if (n < 0 || (size_t)n >= cap) return mf_fail("path too long: %s/%s", run->dir, rel);
    char *slash = strrchr(buf, '/');
    if (slash <= buf + strlen(run->dir)) return 0; /* directly in the run folder */
    *slash = '\0';
    int rc = mf_mkdirs(buf);
    *slash = '/';
    return rc;
}

int mf_artifact_put(mf_run *run, const char *name, const char *type, void *value, void (*free_fn)(void *)) {
    for (int i = 0; i < run->n_arts; i++) {
        artifact *a = &run->arts[i];
        if (strcmp(a->name, name) != 0) continue;
        if (a->free_fn && a->value && a->value != value) a->free_fn(a->value);
        free(a->type);
        a->type = mf_xstrdup(type);
        a->value = value;
        a->free_fn = free_fn;
        return 0;
    }
    run->arts = mf_xrealloc(run->arts, sizeof *run->arts * (size_t)(run->n_arts + 1));
    run->arts[run->n_arts++] = (artifact){mf_xstrdup(name), mf_xstrdup(type), value, free_fn};
    return 0;
}

void *mf_artifact_get(mf_run *run, const char *name, const char *type) {
    for (int i = 0; i < run->n_arts; i++) {
        artifact *a = &run->arts[i];
        if (strcmp(a->name, name) != 0) continue;
        if (strcmp(a->type, type) != 0) {
            mf_fail("artifact '%s' has type %s, expected %s (stages built against different versions?)",
                    name, a->type, type);
            return NULL;
        }
        return a->value;
    }
    mf_fail("no artifact '%s' yet: a stage that makes it must come earlier in `stages:`", name);
    return NULL;
}

int mf_event_subscribe(mf_run *run, const char *event, mf_event_fn fn, void *user) {
    run->subs = mf_xrealloc(run->subs, sizeof *run->subs * (size_t)(run->n_subs + 1));
    run->subs[run->n_subs++] = (subscription){mf_xstrdup(event), fn, user};
    return 0;
}

int mf_event_emit(mf_run *run, const char *event, const void *payload) {
    for (int i = 0; i < run->n_subs; i++)
        if (strcmp(run->subs[i].event, event) == 0 && run->subs[i].fn(run->subs[i].user, run, event, payload) != 0)
            return -1;
    return 0;
}

int mf_metrics_append(mf_run *run, const char *stage, const char *fields) {
    if (!run->metrics) return 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    mf_buf b = {0};
    mf_buf_puts(&b, "{");
    mf_json_str(&b, "stage", stage);
    mf_buf_printf(&b, ",\"time\":%.3f", (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec);
    if (fields && *fields) mf_buf_printf(&b, ",%s", fields);
    mf_buf_puts(&b, "}\n");
    int rc = 0;
    if (fputs(b.s, run->metrics) == EOF || fflush(run->metrics) != 0)
        rc = mf_fail("%s/metrics.jsonl: write failed: %s", run->dir, strerror(errno));
    mf_buf_free(&b);
    return rc;
}

static void run_free(mf_run *run) {
    for (int i = run->n_arts - 1; i >= 0; i--) {
        if (run->arts[i].free_fn && run->arts[i].value) run->arts[i].free_fn(run->arts[i].value);
        free(run->arts[i].name);
        free(run->arts[i].type);
    }
    free(run->arts);
    for (int i = 0; i < run->n_subs; i++) free(run->subs[i].event);
    free(run->subs);
    if (run->metrics) fclose(run->metrics);
    free(run->dir);
}

/* The folder's fixed files: the experiment as given, resolved config, overrides, manifest. */
static int write_run_files(mf_run *run, const mf_experiment *ex, const char *argv_line) {
    char path[4096];
    uint8_t *data;
    size_t len;
    int gz;
    MF_TRY(mf_read_file(ex->path, &data, &len, &gz));
    snprintf(path, sizeof path, "%s/experiment.yaml", run->dir);
    int rc = mf_write_file_atomic(path, data, len);
    free(data);
    MF_TRY(rc);

    snprintf(path, sizeof path, "%s/config.yaml", run->dir);
    FILE *f = fopen(path, "w");
    if (!f) return mf_fail("%s: cannot write: %s", path, strerror(errno));
    fprintf(f, "# resolved configuration: %s with defaults and overrides applied\n", ex->path);
    rc = mf_cfg_dump_yaml(ex->root, f);
    if (fclose(f) != 0 || rc != 0) return mf_fail("%s: write failed", path);

    mf_buf b = {0};
    for (int i = 0; i < ex->n_overrides; i++) mf_buf_printf(&b, "%s\n", ex->overrides[i]);
    snprintf(path, sizeof path, "%s/overrides.txt", run->dir);
    rc = mf_write_file_atomic(path, b.s ? b.s : "", b.len);
    mf_buf_free(&b);
    MF_TRY(rc);
    MF_TRY(mf_results_manifest(run->dir, ex, argv_line));

    snprintf(path, sizeof path, "%s/metrics.jsonl", run->dir);
    run->metrics = fopen(path, "a");
    if (!run->metrics) return mf_fail("%s: cannot open: %s", path, strerror(errno));
    snprintf(path, sizeof path, "%s/log.txt", run->dir);
    return mf_log_open_file(path);
}

int mf_run_experiment(mf_experiment *ex, const mf_run_opts *opts, char *run_dir_out, size_t cap) {
    mf_run run = {.ex = ex};
    int rc = -1;
    const char *failed_stage = NULL;
    if (run_dir_out && cap) run_dir_out[0] = '\0';

    /* 1. create (configure) every stage before any runs: a bad value in the last one fails now */
    for (int i = 0; i < ex->n_stages; i++) {
        mf_stage_inst *si = &ex->stages[i];
        si->state = NULL;
        if (si->plugin.api->create(&run, si->instance, si->section, &si->state) != 0) {
            mf_error_prefix("%s: stage '%s': ", ex->path, si->instance);
            /* a failed create() may leave partial state: destroy() must accept it */
            if (si->state && si->plugin.api->destroy) si->plugin.api->destroy(si->state);
            si->state = NULL;
            goto out;
        }
        si->created = true;
    }
    if (opts->dry) {
        rc = 0;
        goto out;
    }

    /* 2. the results folder: a new one, or the one being resumed */
    char dir[4096];
    if (opts->resume_dir) {
        struct stat st;
        snprintf(dir, sizeof dir, "%s/status.json", opts->resume_dir);
        if (stat(dir, &st) != 0) {
            mf_fail("%s: not a run folder (no status.json)", opts->resume_dir);
            goto out;
        }
        snprintf(dir, sizeof dir, "%s", opts->resume_dir);
        run.dir = mf_xstrdup(dir);
        run.resuming = true;
        if (run_dir_out) snprintf(run_dir_out, cap, "%s", dir);
        char path[4200];
        snprintf(path, sizeof path, "%s/metrics.jsonl", run.dir);
        run.metrics = fopen(path, "a");
        snprintf(path, sizeof path, "%s/log.txt", run.dir);
        if (!run.metrics || mf_log_open_file(path) != 0 || mf_results_status(run.dir, "running", NULL, NULL) != 0) {
            mf_fail("%s: cannot write to the run folder", run.dir);
            goto out;
        }
        mf_info("resuming %s (%s)", run.dir, opts->argv_line ? opts->argv_line : "");
    } else {
        if (opts->out_dir) {
            if (mf_results_create_at(opts->out_dir) != 0) goto out;
            snprintf(dir, sizeof dir, "%s", opts->out_dir);
        } else if (mf_results_create(ex->results_dir, ex->name, dir, sizeof dir) != 0) {
            goto out;
        }
        run.dir = mf_xstrdup(dir);
        if (run_dir_out) snprintf(run_dir_out, cap, "%s", dir);
        if (mf_results_status(run.dir, "running", NULL, NULL) != 0 || write_run_files(&run, ex, opts->argv_line) != 0 ||
            (!opts->out_dir && mf_results_link_latest(run.dir) != 0)) {
            mf_results_status(run.dir, "failed", NULL, mf_last_error());
            goto out;
        }
    }
    mf_info("mfpipe %s: experiment %s -> %s (engine %s, %d threads, seed %lld)", MFPIPE_VERSION, ex->path,
            run.dir, ex->engine, ex->threads, ex->seed);

    /* 3. run the stages in order */
    g_interrupted = 0;
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    rc = 0;
    for (int i = 0; i < ex->n_stages && rc == 0; i++) {
        mf_stage_inst *si = &ex->stages[i];
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        mf_info("== stage %s (%s)", si->instance, si->kind);
        if (si->plugin.api->run(si->state, &run) != 0) {
            failed_stage = si->instance;
            mf_error_prefix("stage '%s': ", si->instance);
            rc = -1;
            break;
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double sec = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        mf_buf b = {0};
        mf_json_str(&b, "event", "stage_done");
        mf_json_num(&b, "seconds", sec);
        mf_metrics_append(&run, si->instance, b.s);
        mf_buf_free(&b);
        if (g_interrupted) {
            rc = 130;
            failed_stage = si->instance;
        }
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (rc == 0) {
        mf_results_status(run.dir, "finished", NULL, NULL);
        mf_info("finished: %s", run.dir);
    } else if (rc == 130 || g_interrupted) {
        rc = 130;
        mf_results_status(run.dir, "interrupted", failed_stage, "interrupted by a signal");
        mf_log(MF_LOG_WARN, "interrupted; results so far in %s", run.dir);
    } else {
        char *msg = mf_xstrdup(mf_last_error());
        mf_results_status(run.dir, "failed", failed_stage, msg);
        mf_log_file_only(MF_LOG_ERROR, "%s", msg); /* the CLI prints it on stderr */
        mf_fail("%s", msg);
        free(msg);
    }
out:
    mf_log_close_file();
    /* stages are destroyed by mf_experiment_free; artifacts die with the run */
    for (int i = 0; i < ex->n_stages; i++) {
        mf_stage_inst *si = &ex->stages[i];
        if (si->created && si->plugin.api->destroy) si->plugin.api->destroy(si->state);
        si->created = false;
        si->state = NULL;
    }
    char *keep = mf_xstrdup(mf_last_error());
    run_free(&run);
    if (rc != 0) mf_fail("%s", keep);
    free(keep);
    return rc;
}
