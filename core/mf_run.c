/* mf_run.c - the run: the context stages see (config, folder, artifacts, events, metrics) and the
 * lifecycle: create every stage, then make the results folder and run the stages in order. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mf_hooks.h"
#include "mf_io.h"
#include "mf_json.h"
#include "mf_log.h"
#include "mf_report.h"
#include "mf_runner.h"
#include "mf_tb.h"

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
    bool allow_changes;    /* --allow-changes */
    int lock_fd;           /* flock'ed <dir>/lock, or -1 */
    const char *argv_line;
    char *changed_json;    /* resume: the settings that differ from config.yaml, as a JSON object */
    bool resume_recorded;  /* resumes.jsonl has this resume's line */
    char *metrics_error;   /* the first failed metrics.jsonl write: fails the stage that made it */
    mf_tb *tb;             /* tb/events.out.tfevents.*: metrics.jsonl's scalars and the sample grids */
    int64_t tb_step;       /* the last training step logged (eval metrics are shown at it) */
};

static volatile sig_atomic_t g_interrupted;

static void on_signal(int sig) {
    g_interrupted = 1;
    /* a second Ctrl-C kills at once */
    signal(sig, SIG_DFL);
}

const mf_node *mf_run_config(const mf_run *run) { return run->ex->root; }
const char *mf_run_dir(const mf_run *run) { return run->dir; }
uint64_t mf_run_seed(const mf_run *run) { return (uint64_t)run->ex->seed; }
int mf_run_threads(const mf_run *run) { return run->ex->threads; }
const char *mf_run_engine(const mf_run *run) { return run->ex->engine; }
const char *mf_run_precision(const mf_run *run) { return run->ex->precision; }
mf_hooks *mf_run_hooks(const mf_run *run) { return run->ex->hooks; }

int mf_run_note_backend(mf_run *run, const char *kind, const char *precision, const char *version) {
    mf_info("engine %s -> %s, precision %s (asked %s): %s", run->ex->engine, kind, precision, run->ex->precision,
            version);
    if (!run->dir || run->resuming) return 0; /* a resume keeps the manifest of the run it continues */
    return mf_results_manifest_backend(run->dir, kind, precision, version);
}
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

/* The TensorBoard file is a view of metrics.jsonl: a failed write is a warning, and it stops. */
static void tb_failed(mf_run *run) {
    mf_warn("tensorboard: %s; no more TensorBoard records in this run", mf_last_error());
    mf_error_clear();
    mf_tb_close(run->tb);
    run->tb = NULL;
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
    if (fputs(b.s, run->metrics) == EOF || fflush(run->metrics) != 0) {
        rc = mf_fail("%s/metrics.jsonl: write failed: %s", run->dir, strerror(errno));
        if (!run->metrics_error) run->metrics_error = mf_xstrdup(mf_last_error());
    }
    mf_buf_free(&b);
    if (rc == 0 && run->tb &&
        mf_tb_metrics(run->tb, stage, (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec, fields, &run->tb_step) != 0)
        tb_failed(run);
    return rc;
}

int mf_run_tb_image(mf_run *run, const char *tag, int64_t step, const char *png_path) {
    if (!run->tb) return 0;
    uint8_t *data;
    size_t len;
    int gz;
    MF_TRY(mf_read_file(png_path, &data, &len, &gz));
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (mf_tb_image_png(run->tb, tag, step >= 0 ? step : run->tb_step, (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec,
                        data, len) != 0)
        tb_failed(run);
    free(data);
    return 0;
}

/* ---- training settings and resume records -------------------------------------------------- */

static bool key_is_free(const char *const *free_keys, const char *rel) {
    for (int i = 0; free_keys && free_keys[i]; i++) {
        size_t n = strlen(free_keys[i]);
        if (strcmp(free_keys[i], "*") == 0 || strcmp(free_keys[i], rel) == 0 ||
            (strncmp(rel, free_keys[i], n) == 0 && rel[n] == '.'))
            return true;
    }
    return false;
}

/* A value in one canonical spelling, so that 2e-4 and 0.0002 (or yes and true) compare equal. */
static void canon_value(const mf_node *n, mf_buf *b) {
    if (n->kind == MF_NODE_NULL) {
        mf_buf_puts(b, "~");
        return;
    }
    if (n->kind == MF_NODE_SCALAR) {
        static const char *const yes[] = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON", NULL};
        static const char *const no[] = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF", NULL};
        const char *v = n->value ? n->value : "";
        char *end;
        double d = strtod(v, &end);
        int word = 0; /* 1 true, -1 false (YAML 1.1 spellings, as mf_node_as_bool) */
        for (int i = 0; !n->quoted && yes[i]; i++) word = strcmp(v, yes[i]) == 0 ? 1 : strcmp(v, no[i]) == 0 ? -1 : word;
        if (!n->quoted && *v && *end == '\0' && isfinite(d)) mf_buf_printf(b, "%.17g", d);
        else if (word) mf_buf_puts(b, word > 0 ? "true" : "false");
        else
            for (const char *c = v; *c; c++) mf_buf_printf(b, *c == '\n' ? "\\n" : *c == '\\' ? "\\\\" : "%c", *c);
        return;
    }
    bool map = n->kind == MF_NODE_MAP;
    mf_buf_puts(b, map ? "{" : "[");
    for (const mf_node *c = n->first; c; c = c->next) {
        if (c != n->first) mf_buf_puts(b, ", ");
        if (map) mf_buf_printf(b, "%s: ", c->key);
        canon_value(c, b);
    }
    mf_buf_puts(b, map ? "}" : "]");
}

static void flatten_settings(const mf_node *map, const char *path, const char *rel, const char *const *free_keys,
                             mf_buf *b) {
    for (const mf_node *c = map ? map->first : NULL; c; c = c->next) {
        char *p = mf_xasprintf("%s.%s", path, c->key);
        char *r = *rel ? mf_xasprintf("%s.%s", rel, c->key) : mf_xstrdup(c->key);
        if (c->kind == MF_NODE_MAP) flatten_settings(c, p, r, free_keys, b);
        else if (!key_is_free(free_keys, r)) {
            mf_buf_printf(b, "%s=", p);
            canon_value(c, b);
            mf_buf_puts(b, "\n");
        }
        free(p);
        free(r);
    }
}

char *mf_experiment_settings(const mf_experiment *ex) {
    mf_buf b = {0};
    mf_buf_printf(&b, "seed=%lld\n", ex->seed);
    /* hook scripts change what training computes: their contents (by hash) are settings */
    for (int i = 0; i < mf_hooks_count(ex->hooks); i++) {
        const char *p = mf_hooks_path(ex->hooks, i), *base = strrchr(p, '/');
        mf_buf_printf(&b, "hooks.%d=%s sha256:%s\n", i, base ? base + 1 : p, mf_hooks_sha256(ex->hooks, i));
    }
    const char *done[64];
    int n_done = 0;
    for (int i = 0; i < ex->n_stages; i++) {
        const mf_stage_inst *si = &ex->stages[i];
        const mf_stage_api *api = si->plugin.api;
        flatten_settings(si->section, si->instance, "", api->resume_free, &b);
        for (const mf_section_schema *sh = api->shared; sh && sh->name; sh++) {
            bool seen = false;
            for (int j = 0; j < n_done; j++) seen |= strcmp(done[j], sh->name) == 0;
            if (seen || n_done == 64) continue;
            done[n_done++] = sh->name;
            flatten_settings(mf_node_child(ex->root, sh->name), sh->name, "", NULL, &b);
        }
    }
    return b.s ? b.s : mf_xstrdup("");
}

char *mf_run_settings(const mf_run *run) { return mf_experiment_settings(run->ex); }

/* Value of `key` in settings text, or NULL; *len gets its length. */
static const char *settings_get(const char *text, const char *key, size_t kl, size_t *len) {
    for (const char *p = text; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t ll = nl ? (size_t)(nl - p) : strlen(p);
        if (ll > kl && strncmp(p, key, kl) == 0 && p[kl] == '=') {
            *len = ll - kl - 1;
            return p + kl + 1;
        }
        p = nl ? nl + 1 : p + ll;
    }
    return NULL;
}

/* One direction of the comparison: keys of `a` whose value in `b` differs or is absent. */
static int diff_pass(const char *a, const char *b, bool a_is_old, mf_buf *human, mf_buf *json) {
    int n = 0;
    for (const char *p = a; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t ll = nl ? (size_t)(nl - p) : strlen(p);
        const char *eq = memchr(p, '=', ll);
        if (eq) {
            size_t kl = (size_t)(eq - p), al = ll - kl - 1, bl = 0;
            const char *bv = settings_get(b, p, kl, &bl);
            if (!bv ? true : (a_is_old && (al != bl || memcmp(eq + 1, bv, al) != 0))) {
                char *key = mf_xasprintf("%.*s", (int)kl, p);
                char *av = mf_xasprintf("%.*s", (int)al, eq + 1);
                char *bs = bv ? mf_xasprintf("%.*s", (int)bl, bv) : NULL;
                const char *old = a_is_old ? av : "(absent)", *cur = a_is_old ? (bs ? bs : "(absent)") : av;
                mf_buf_printf(human, "\n  %s: %s -> %s", key, old, cur);
                mf_buf_puts(json, json->len > 1 ? "," : "");
                mf_json_escape(json, key);
                mf_buf_puts(json, ":[");
                mf_json_escape(json, old);
                mf_buf_puts(json, ",");
                mf_json_escape(json, cur);
                mf_buf_puts(json, "]");
                free(key);
                free(av);
                free(bs);
                n++;
            }
        }
        p = nl ? nl + 1 : p + ll;
    }
    return n;
}

/* Changed, added and removed keys between two settings texts. */
static int settings_diff(const char *old, const char *cur, mf_buf *human, mf_buf *json) {
    mf_buf_puts(json, "{");
    int n = diff_pass(old, cur, true, human, json) + diff_pass(cur, old, false, human, json);
    mf_buf_puts(json, "}");
    return n;
}

/* Refuse (or, with --allow-changes, report) a resume whose settings differ from `recorded`. */
static int check_settings(mf_run *run, const char *recorded, const char *source, char **json_out) {
    char *cur = mf_experiment_settings(run->ex);
    mf_buf human = {0}, json = {0};
    int n = settings_diff(recorded, cur, &human, &json);
    free(cur);
    int rc = 0;
    if (n > 0 && !run->allow_changes)
        rc = mf_fail("%s: resuming would change %d training setting%s (recorded -> now):%s\nresume with the recorded "
                     "values, or pass --allow-changes to continue with the new ones (the change is recorded in "
                     "resumes.jsonl)",
                     source, n, n == 1 ? "" : "s", human.s);
    else if (n > 0)
        mf_warn("%s: --allow-changes: resuming with %d changed training setting%s (recorded -> now):%s", source, n,
                n == 1 ? "" : "s", human.s);
    if (json_out && rc == 0 && n > 0) {
        free(*json_out);
        *json_out = json.s;
        json.s = NULL;
    }
    mf_buf_free(&human);
    mf_buf_free(&json);
    return rc;
}

int mf_run_check_settings(mf_run *run, const char *recorded, const char *source) {
    /* what differs from the checkpoint is what this resume changes: it goes into resumes.jsonl */
    return check_settings(run, recorded, source, run->resuming ? &run->changed_json : NULL);
}

/* resumes.jsonl: one line per resume, written when a stage reports where it continued from, or at
 * the end when none did (step < 0; `error` set when the resume failed before any report). */
static int write_resume_record(mf_run *run, int64_t step, const char *checkpoint, const char *error) {
    if (!run->dir || !run->resuming || run->resume_recorded) return 0;
    run->resume_recorded = true;
    char when[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    mf_buf b = {0};
    mf_buf_puts(&b, "{");
    mf_json_str(&b, "time", when);
    if (step >= 0) mf_json_int(&b, "from_step", step);
    else mf_json_raw(&b, "from_step", "null");
    if (checkpoint) mf_json_str(&b, "checkpoint", checkpoint);
    else mf_json_raw(&b, "checkpoint", "null");
    mf_json_str(&b, "command", run->argv_line ? run->argv_line : "");
    mf_buf ov = {0};
    mf_buf_puts(&ov, "[");
    for (int i = 0; i < run->ex->n_overrides; i++) {
        if (i) mf_buf_puts(&ov, ",");
        mf_json_escape(&ov, run->ex->overrides[i]);
    }
    mf_buf_puts(&ov, "]");
    mf_json_raw(&b, "overrides", ov.s);
    mf_buf_free(&ov);
    mf_json_raw(&b, "changed_settings", run->changed_json ? run->changed_json : "{}");
    mf_json_bool(&b, "allow_changes", run->allow_changes);
    if (error) mf_json_str(&b, "error", error);
    mf_buf_puts(&b, "}\n");
    char path[4200];
    snprintf(path, sizeof path, "%s/resumes.jsonl", run->dir);
    FILE *f = fopen(path, "a");
    int rc = 0;
    if (!f || fputs(b.s, f) == EOF || fflush(f) != 0 || fsync(fileno(f)) != 0)
        rc = mf_fail("%s: cannot write: %s", path, strerror(errno));
    if (f && fclose(f) != 0 && rc == 0) rc = mf_fail("%s: write failed: %s", path, strerror(errno));
    mf_buf_free(&b);
    return rc;
}

int mf_run_resumed_from(mf_run *run, int64_t step, const char *checkpoint) {
    if (step >= 0) mf_info("resume: continuing from step %lld%s%s", (long long)step, checkpoint ? " of " : "",
                           checkpoint ? checkpoint : "");
    return write_resume_record(run, step, checkpoint, NULL);
}

/* flock the run folder for this process; the lock file holds the pid of the holder. */
static int lock_run_dir(mf_run *run, const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return mf_fail("%s: cannot open the lock file: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        close(fd);
        if (n > 0) pid[n] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        if (e == EWOULDBLOCK)
            return mf_fail("%s: in use by another mfpipe (pid %s, lock %s): one process per run folder; wait for it "
                           "to finish or stop it first",
                           dir, *pid ? pid : "?", path);
        return mf_fail("%s: cannot lock: %s", path, strerror(e));
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        close(fd);
        return mf_fail("%s: cannot write the lock file: %s", path, strerror(errno));
    }
    run->lock_fd = fd;
    return 0;
}

/* config.yaml: the resolved configuration the folder's last run or resume ran with. */
static int write_config_yaml(const mf_run *run, const mf_experiment *ex) {
    char path[4200];
    snprintf(path, sizeof path, "%s/config.yaml", run->dir);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return mf_fail("%s: out of memory", path);
    fprintf(f, "# resolved configuration: %s with defaults and overrides applied%s\n", ex->path,
            run->resuming ? " (rewritten by the last resume; see resumes.jsonl)" : "");
    int rc = mf_cfg_dump_yaml(ex->root, f);
    if (fclose(f) != 0 || rc != 0) rc = mf_fail("%s: cannot render the configuration", path);
    if (rc == 0) rc = mf_write_file_atomic(path, text, len);
    free(text);
    return rc;
}

/* Resume: the settings of the folder's config.yaml against this run's, before anything is written. */
static int compare_with_folder(mf_run *run, const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/config.yaml", dir);
    struct stat st;
    if (stat(path, &st) != 0) return mf_fail("%s: missing: cannot tell what the run was trained with", path);
    mf_experiment old;
    if (mf_experiment_load(&old, path, NULL, 0) != 0) {
        mf_error_prefix("%s: the run's recorded configuration no longer loads: ", dir);
        mf_experiment_free(&old);
        return -1;
    }
    char *rec = mf_experiment_settings(&old);
    mf_experiment_free(&old);
    int rc = check_settings(run, rec, path, &run->changed_json);
    free(rec);
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
    mf_tb_close(run->tb);
    run->tb = NULL;
    if (run->lock_fd >= 0) close(run->lock_fd); /* releases the flock; the file stays (no unlink race) */
    free(run->changed_json);
    free(run->metrics_error);
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

    MF_TRY(write_config_yaml(run, ex));
    /* the hook scripts as they ran: hooks/<n>_<name> */
    for (int i = 0; i < mf_hooks_count(ex->hooks); i++) {
        const char *src = mf_hooks_path(ex->hooks, i), *base = strrchr(src, '/');
        snprintf(path, sizeof path, "%s/hooks", run->dir);
        MF_TRY(mf_mkdirs(path));
        snprintf(path, sizeof path, "%s/hooks/%d_%s", run->dir, i, base ? base + 1 : src);
        MF_TRY(mf_read_file(src, &data, &len, &gz));
        rc = mf_write_file_atomic(path, data, len);
        free(data);
        MF_TRY(rc);
    }

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
    /* TensorBoard: a new events file per process (a resume adds one; TensorBoard reads them all) */
    snprintf(path, sizeof path, "%s/tb", run->dir);
    if (mf_tb_open(path, &run->tb, NULL, 0) != 0) {
        mf_warn("tensorboard: %s; the run goes on without TensorBoard records", mf_last_error());
        mf_error_clear();
    }
    snprintf(path, sizeof path, "%s/log.txt", run->dir);
    return mf_log_open_file(path);
}

int mf_run_experiment(mf_experiment *ex, const mf_run_opts *opts, char *run_dir_out, size_t cap) {
    mf_run run = {.ex = ex, .lock_fd = -1, .allow_changes = opts->allow_changes, .argv_line = opts->argv_line};
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
        run.resuming = true;
        /* lock, then refuse changed training settings: both before anything in the folder changes */
        if (lock_run_dir(&run, dir) != 0 || compare_with_folder(&run, dir) != 0) goto out;
        run.dir = mf_xstrdup(dir);
        if (run_dir_out) snprintf(run_dir_out, cap, "%s", dir);
        char path[4200];
        snprintf(path, sizeof path, "%s/metrics.jsonl", run.dir);
        run.metrics = fopen(path, "a");
        snprintf(path, sizeof path, "%s/log.txt", run.dir);
        if (!run.metrics || mf_log_open_file(path) != 0) {
            mf_fail("%s: cannot write to the run folder: %s", run.dir, strerror(errno));
            goto out;
        }
        if (mf_results_status(run.dir, "running", NULL, NULL) != 0 || write_config_yaml(&run, ex) != 0) {
            char *msg = mf_xstrdup(mf_last_error());
            (void)mf_results_status(run.dir, "failed", NULL, msg); /* best effort: the folder is failing already */
            mf_fail("%s", msg);
            free(msg);
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
        if (lock_run_dir(&run, dir) != 0) goto out;
        /* checked again under the lock: another process may have run in the folder since */
        char st_path[4200];
        struct stat st;
        snprintf(st_path, sizeof st_path, "%s/status.json", dir);
        if (stat(st_path, &st) == 0) {
            mf_fail("%s: already holds a run (status.json); use 'mfpipe resume %s' or another folder", dir, dir);
            goto out;
        }
        if (mf_results_status(run.dir, "running", NULL, NULL) != 0 || write_run_files(&run, ex, opts->argv_line) != 0 ||
            (!opts->out_dir && mf_results_link_latest(run.dir) != 0)) {
            char *msg = mf_xstrdup(mf_last_error());
            (void)mf_results_status(run.dir, "failed", NULL, msg); /* best effort: the folder is failing already */
            mf_fail("%s", msg);
            free(msg);
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
        int src = si->plugin.api->run(si->state, &run);
        if (src == 0 && run.metrics_error) src = mf_fail("%s", run.metrics_error); /* a write the stage ignored */
        if (src != 0) {
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
        int mrc = mf_metrics_append(&run, si->instance, b.s);
        mf_buf_free(&b);
        if (mrc != 0) {
            failed_stage = si->instance;
            rc = -1;
            break;
        }
        if (g_interrupted) {
            rc = 130;
            failed_stage = si->instance;
        }
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (!run.resume_recorded) { /* no stage reported a checkpoint: record the resume, and why it failed */
        char *err = rc != 0 && rc != 130 && !g_interrupted ? mf_xstrdup(mf_last_error()) : NULL;
        if (write_resume_record(&run, -1, NULL, err) != 0 && rc == 0) rc = -1;
        if (err) mf_fail("%s", err); /* keep the stage's error, not the record's */
        free(err);
    }
    if (rc == 0 && mf_results_status(run.dir, "finished", NULL, NULL) != 0) rc = -1;
    if (rc == 0) {
        mf_info("finished: %s", run.dir);
    } else if (rc == 130 || g_interrupted) {
        rc = 130;
        if (mf_results_status(run.dir, "interrupted", failed_stage, "interrupted by a signal") != 0)
            mf_log(MF_LOG_WARN, "status.json not updated: %s", mf_last_error());
        mf_log(MF_LOG_WARN, "interrupted; results so far in %s", run.dir);
    } else {
        char *msg = mf_xstrdup(mf_last_error());
        if (mf_results_status(run.dir, "failed", failed_stage, msg) != 0)
            mf_log(MF_LOG_WARN, "status.json not updated: %s", mf_last_error());
        mf_log_file_only(MF_LOG_ERROR, "%s", msg); /* the CLI prints it on stderr */
        mf_fail("%s", msg);
        free(msg);
    }
    mf_report_after(run.dir, rc == 0); /* report.html; a failure there is a warning (mf_report.h) */
out:
    mf_log_close_file();
    /* every created stage is destroyed here, after a failure too; artifacts die with the run */
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
