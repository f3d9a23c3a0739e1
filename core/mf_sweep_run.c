/* mf_sweep_run.c - `mfpipe sweep` and `mfpipe run EXP -m ...` (docs/sweeps.md): expand the axes into
 * points, validate every point, group the points that can share one training (they differ only in
 * keys of stateless downstream stages), write the sweep folder and run the points as child processes
 * (`mfpipe run ... --out <sweep>/<n> -q`), in parallel with --jobs, or submit them to Slurm. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mf_hooks.h"
#include "mf_io.h"
#include "mf_json.h"
#include "mf_log.h"
#include "mf_report.h"
#include "mf_rng.h"
#include "mf_runner.h"
#include "mf_slurm.h"
#include "mf_sweep.h"

enum { EXIT_FAILED = 1, EXIT_USAGE = 2, EXIT_INTERRUPTED = 130 };
enum { SWEEP_RNG_PURPOSE = 0x5357 }; /* method random's draw (not a stream of mf_rng.h's runs) */
#define SWEEP_MAX_POINTS 100000

const char *const mf_sweep_help =
    "usage: mfpipe sweep SWEEP.yaml [--jobs N] [--launcher local|slurm] [--slurm-args \"...\"]\n"
    "                    [--results DIR] [--dry] [-q]\n"
    "       mfpipe sweep --resume SWEEP_DIR [--jobs N] [-q]\n"
    "       mfpipe sweep --point P SWEEP_DIR     (run one point: what a Slurm array task does)\n"
    "       mfpipe sweep --summarize SWEEP_DIR   (summary.csv, summary.md and plots)\n"
    "       mfpipe run EXP.yaml -m KEY=A,B,C KEY2=X,Y [KEY=V ...] [--jobs N] [--dry] [-q]\n"
    "\n"
    "Runs every point of a grid (or a random draw from it, or a Lua script's list) of overrides of an\n"
    "experiment, each as a normal run folder results/<name>/<stamp>/<n>/, beside sweep.yaml (the\n"
    "expanded sweep) and sweep.log. Values: a,b,c (commas inside [...], {...} or quotes do not split),\n"
    "range(a,b[,step]) (stop excluded), choice(a,b,...); the first key varies slowest. Every point is\n"
    "validated before anything runs. Points that differ only in keys of stateless stages (sample, eval,\n"
    "preview, ...) share one training: the first trains, the others run without the training stages on\n"
    "its model. Sweep file keys: experiment, name, overrides, axes, method (grid|random|lua), seed,\n"
    "max_runs, script, metric, jobs, results_dir, description (docs/sweeps.md).\n"
    "  --jobs N        points in parallel (threads = cores / N each, unless threads is set)\n"
    "  --launcher L    local (default) or slurm (job arrays: docs/sweeps.md)\n"
    "  --slurm-args S  extra sbatch options (with --launcher slurm)\n"
    "  --dry           print the plan (points, which train, which reuse) without running or writing\n"
    "  --resume DIR    skip finished points, resume interrupted/failed ones with checkpoints, rerun the rest\n"
    "  -q, --quiet     only failures and the end on the terminal (sweep.log gets everything)\n"
    "exit status: 0 every point finished, 1 some failed or were skipped, 2 bad command line or sweep,\n"
    "130 interrupted (Ctrl-C is passed to the points, which stop at a safe point)\n";

/* ---- small helpers ------------------------------------------------------------------------------ */

typedef struct strv {
    char **v;
    int n, cap;
} strv;

static void sv_push(strv *s, char *owned) {
    if (s->n + 2 > s->cap) s->v = mf_xrealloc(s->v, sizeof *s->v * (size_t)(s->cap = s->cap ? 2 * s->cap : 8));
    s->v[s->n++] = owned;
    s->v[s->n] = NULL;
}
static void sv_free(strv *s) {
    for (int i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}
static char **sv_copy(char *const *v, int n) {
    char **c = mf_xcalloc((size_t)n + 1, sizeof *c);
    for (int i = 0; i < n; i++) c[i] = mf_xstrdup(v[i]);
    return c;
}

static char *trim_dup(const char *s, size_t n) {
    while (n && (*s == ' ' || *s == '\t')) s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    return mf_xasprintf("%.*s", (int)n, s);
}

/* Split on commas outside [...], {...}, (...) and quotes. -1 on unbalanced text. */
static int split_top(const char *s, strv *out) {
    int depth = 0;
    char q = 0;
    const char *start = s;
    for (const char *c = s;; c++) {
        if (!*c || (*c == ',' && !depth && !q)) {
            if (q || depth) return -1;
            sv_push(out, trim_dup(start, (size_t)(c - start)));
            if (!*c) return 0;
            start = c + 1;
        } else if (q) {
            if (*c == '\\' && q == '"' && c[1]) c++;
            else if (*c == q) q = 0;
        } else if (*c == '"' || *c == '\'') q = *c;
        else if (*c == '[' || *c == '{' || *c == '(') depth++;
        else if (*c == ']' || *c == '}' || *c == ')') {
            if (--depth < 0) return -1;
        }
    }
}

static int parse_ll(const char *s, long long *v) {
    char *end;
    errno = 0;
    *v = strtoll(s, &end, 10);
    return *s && !*end && !errno ? 0 : -1;
}

static int parse_d(const char *s, double *v) {
    char *end;
    *v = strtod(s, &end);
    return *s && !*end && isfinite(*v) ? 0 : -1;
}

/* range(a,b[,step]): Hydra's, stop excluded; integers when all three are. */
static int expand_range(const char *key, const char *args, strv *out) {
    strv a = {0};
    int rc = -1;
    if (split_top(args, &a) != 0 || a.n < 2 || a.n > 3) {
        mf_fail("%s=range(%s): expected range(start, stop[, step])", key, args);
        goto out;
    }
    long long li[3] = {0, 0, 1};
    double d[3] = {0, 0, 1};
    bool ints = true;
    for (int i = 0; i < a.n; i++) {
        if (parse_ll(a.v[i], &li[i]) != 0) ints = false;
        if (parse_d(a.v[i], &d[i]) != 0) {
            mf_fail("%s=range(%s): '%s' is not a number", key, args, a.v[i]);
            goto out;
        }
    }
    if (d[2] == 0) {
        mf_fail("%s=range(%s): step 0", key, args);
        goto out;
    }
    double cnt = ints ? 0 : ceil((d[1] - d[0]) / d[2] - 1e-9);
    long long n = ints ? (li[2] > 0 ? (li[1] - li[0] + li[2] - 1) / li[2] : (li[0] - li[1] - li[2] - 1) / -li[2])
                       : (long long)cnt;
    if (n <= 0) {
        mf_fail("%s=range(%s): no values (the stop is excluded)", key, args);
        goto out;
    }
    if (n > SWEEP_MAX_POINTS) {
        mf_fail("%s=range(%s): %lld values; at most %d", key, args, n, SWEEP_MAX_POINTS);
        goto out;
    }
    for (long long i = 0; i < n; i++)
        sv_push(out, ints ? mf_xasprintf("%lld", li[0] + i * li[2]) : mf_xasprintf("%.12g", d[0] + (double)i * d[2]));
    rc = 0;
out:
    sv_free(&a);
    return rc;
}

/* The values of one override's right-hand side: a,b,c / range(...) / choice(...) / one value. */
static int expand_values(const char *key, const char *spec, strv *out) {
    size_t l = strlen(spec);
    if (strncmp(spec, "range(", 6) == 0 && l > 7 && spec[l - 1] == ')') {
        char *args = mf_xasprintf("%.*s", (int)(l - 7), spec + 6);
        int rc = expand_range(key, args, out);
        free(args);
        return rc;
    }
    const char *body = spec;
    char *inner = NULL;
    if (strncmp(spec, "choice(", 7) == 0 && l > 8 && spec[l - 1] == ')') body = inner = mf_xasprintf("%.*s", (int)(l - 8), spec + 7);
    int rc = split_top(body, out);
    free(inner);
    if (rc != 0) return mf_fail("%s=%s: unbalanced brackets or quotes", key, spec);
    for (int i = 0; i < out->n; i++)
        if (!*out->v[i]) return mf_fail("%s=%s: empty value (value %d)", key, spec, i + 1);
    return 0;
}

/* A YAML node as override value text: scalars as written (quoted ones quoted), lists/maps in flow style. */
static void node_text(const mf_node *n, mf_buf *b) {
    if (n->kind == MF_NODE_NULL) mf_buf_puts(b, "null");
    else if (n->kind == MF_NODE_SCALAR) {
        if (n->quoted) mf_json_escape(b, n->value ? n->value : "");
        else mf_buf_puts(b, n->value ? n->value : "");
    } else {
        bool map = n->kind == MF_NODE_MAP;
        mf_buf_puts(b, map ? "{" : "[");
        for (const mf_node *c = n->first; c; c = c->next) {
            if (c != n->first) mf_buf_puts(b, ", ");
            if (map) mf_buf_printf(b, "%s: ", c->key);
            node_text(c, b);
        }
        mf_buf_puts(b, map ? "}" : "]");
    }
}

static char *now_utc(void) {
    char buf[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return mf_xstrdup(buf);
}

/* The point's axis values as "k=v k2=v2" (for messages). */
static char *point_label(const mf_sweep *s, const mf_sweep_point *p) {
    mf_buf b = {0};
    mf_buf_puts(&b, "");
    for (int a = 0; a < s->n_axes; a++)
        if (p->axis_values[a]) mf_buf_printf(&b, "%s%s=%s", b.len ? " " : "", s->axes[a].key, p->axis_values[a]);
    if (!b.len) mf_buf_puts(&b, "no axes");
    return b.s;
}

static const char *override_key(const char *o, size_t *len) {
    while (*o == '+' || *o == '~') o++;
    const char *eq = strchr(o, '=');
    *len = eq ? (size_t)(eq - o) : strlen(o);
    return o;
}

static bool overrides_set(char *const *ov, int n, const char *key) {
    for (int i = 0; i < n; i++) {
        size_t l;
        const char *k = override_key(ov[i], &l);
        if (l == strlen(key) && strncmp(k, key, l) == 0) return true;
    }
    return false;
}

/* The stages=[...] of a reuse point's run ("" for a training point). */
static const char *stage_override(const mf_sweep_point *p) {
    for (int k = 0; k < p->n_run_overrides; k++)
        if (strncmp(p->run_overrides[k], "stages=", 7) == 0) return p->run_overrides[k];
    return "";
}

/* ---- the plan: axes and points ------------------------------------------------------------------ */

typedef struct plan {
    mf_sweep s;                 /* name, experiment, axes, points (stages, run_overrides: validate_plan) */
    char *results_root;         /* where <name>/<stamp> goes */
    bool user_threads;          /* some override or the experiment sets threads: leave it */
    bool *can_reuse;            /* per point: its training could be someone else's */
} plan;

static void plan_free(plan *p) {
    mf_sweep_free(&p->s);
    free(p->results_root);
    free(p->can_reuse);
}

static void add_axis(mf_sweep *s, const char *key, strv *vals) {
    s->axes = mf_xrealloc(s->axes, sizeof *s->axes * (size_t)(s->n_axes + 1));
    mf_sweep_axis *a = &s->axes[s->n_axes++];
    a->key = mf_xstrdup(key);
    a->values = vals->v ? vals->v : mf_xcalloc(1, sizeof *a->values);
    a->n_values = vals->n;
    memset(vals, 0, sizeof *vals);
}

static mf_sweep_point *add_point(mf_sweep *s) {
    s->points = mf_xrealloc(s->points, sizeof *s->points * (size_t)(s->n_points + 1));
    mf_sweep_point *p = &s->points[s->n_points];
    memset(p, 0, sizeof *p);
    p->point = s->n_points++;
    p->dir = mf_xasprintf("%d", p->point);
    p->axis_values = mf_xcalloc((size_t)s->n_axes + 1, sizeof *p->axis_values);
    p->train_point = p->point;
    return p;
}

static void point_overrides(const mf_sweep *s, mf_sweep_point *p) {
    strv o = {0};
    for (int i = 0; i < s->n_overrides; i++) sv_push(&o, mf_xstrdup(s->overrides[i]));
    for (int a = 0; a < s->n_axes; a++)
        if (p->axis_values[a]) sv_push(&o, mf_xasprintf("%s=%s", s->axes[a].key, p->axis_values[a]));
    p->overrides = o.v ? o.v : mf_xcalloc(1, sizeof *p->overrides);
    p->n_overrides = o.n;
}

/* grid (all) or random (max_runs of them, without repetition, in grid order) */
static int expand_grid(plan *pl, bool random, long long max_runs) {
    mf_sweep *s = &pl->s;
    long long total = 1;
    for (int a = 0; a < s->n_axes; a++) {
        total *= s->axes[a].n_values;
        if (total > SWEEP_MAX_POINTS) return mf_fail("the sweep has more than %d points", SWEEP_MAX_POINTS);
    }
    bool *take = mf_xcalloc((size_t)total, sizeof *take);
    if (random && max_runs > 0 && max_runs < total) {
        int64_t *perm = mf_xmalloc(sizeof *perm * (size_t)total);
        mf_rng_permutation((uint64_t)s->seed, SWEEP_RNG_PURPOSE, 0, perm, total);
        for (long long i = 0; i < max_runs; i++) take[perm[i]] = true;
        free(perm);
    } else {
        for (long long i = 0; i < total; i++) take[i] = true;
    }
    for (long long idx = 0; idx < total; idx++) {
        if (!take[idx]) continue;
        mf_sweep_point *p = add_point(s);
        long long rem = idx;
        for (int a = s->n_axes - 1; a >= 0; a--) {
            p->axis_values[a] = mf_xstrdup(s->axes[a].values[rem % s->axes[a].n_values]);
            rem /= s->axes[a].n_values;
        }
        point_overrides(s, p);
    }
    free(take);
    return 0;
}

/* method lua: the script's override sets; the axes are their keys, values in order of appearance */
static int expand_lua(plan *pl, const char *script) {
    char ***sets = NULL;
    int n = 0;
    if (mf_lua_sweep_sets(script, (uint64_t)pl->s.seed, &sets, &n) != 0) return -1;
    mf_sweep *s = &pl->s;
    int rc = 0;
    if (n > SWEEP_MAX_POINTS) rc = mf_fail("%s: %d override sets; at most %d", script, n, SWEEP_MAX_POINTS);
    for (int i = 0; rc == 0 && i < n; i++)
        for (char **kv = sets[i]; *kv && rc == 0; kv++) {
            const char *eq = strchr(*kv, '=');
            if (!eq || eq == *kv) {
                rc = mf_fail("%s: set %d: '%s' is not key=value", script, i + 1, *kv);
                break;
            }
            char *key = mf_xasprintf("%.*s", (int)(eq - *kv), *kv);
            int a = mf_sweep_axis_index(s, key);
            if (a < 0) {
                strv none = {0};
                add_axis(s, key, &none);
                a = s->n_axes - 1;
            }
            mf_sweep_axis *ax = &s->axes[a];
            bool seen = false;
            for (int j = 0; j < ax->n_values; j++) seen |= strcmp(ax->values[j], eq + 1) == 0;
            if (!seen) {
                ax->values = mf_xrealloc(ax->values, sizeof *ax->values * (size_t)(ax->n_values + 2));
                ax->values[ax->n_values++] = mf_xstrdup(eq + 1);
                ax->values[ax->n_values] = NULL;
            }
            free(key);
        }
    for (int i = 0; rc == 0 && i < n; i++) {
        mf_sweep_point *p = add_point(s);
        for (char **kv = sets[i]; *kv; kv++) {
            const char *eq = strchr(*kv, '=');
            char *key = mf_xasprintf("%.*s", (int)(eq - *kv), *kv);
            int a = mf_sweep_axis_index(s, key);
            free(p->axis_values[a]);
            p->axis_values[a] = mf_xstrdup(eq + 1);
            free(key);
        }
        point_overrides(s, p);
    }
    mf_lua_sweep_sets_free(sets, n);
    if (rc == 0 && s->n_points == 0) rc = mf_fail("%s: the script returned no override sets", script);
    return rc;
}

/* ---- validation and stage reuse ----------------------------------------------------------------- */

static bool stage_downstream(const mf_stage_inst *si) {
    for (const char *const *f = si->plugin.api->resume_free; f && *f; f++)
        if (strcmp(*f, "*") == 0) return true;
    return false;
}

static bool stage_has_key(const mf_stage_inst *si, const char *key) {
    for (const mf_key *k = si->plugin.api->keys; k && k->path; k++)
        if (strcmp(k->path, key) == 0) return true;
    return false;
}

/* Which stages train: the stages with state from the first one that declares a shared section (the
 * model) on; the stages with state before it (data) provide inputs and stay in a reuse point's run.
 * training[i] set; returns the number of training stages. */
static int training_stages(const mf_experiment *ex, bool *training) {
    int first = -1, n = 0;
    for (int i = 0; i < ex->n_stages; i++) {
        training[i] = false;
        const mf_stage_api *api = ex->stages[i].plugin.api;
        if (first < 0 && !stage_downstream(&ex->stages[i]) && api->shared && api->shared->name) first = i;
        if (first >= 0 && !stage_downstream(&ex->stages[i])) training[i] = true, n++;
    }
    return n;
}

/* What training depends on: the resolved config without the downstream stages' sections, the
 * sections only they read, and the root keys that change no result (name, threads, ...). */
static char *training_signature(const mf_experiment *ex) {
    mf_node *root = mf_node_clone(ex->root);
    static const char *const drop_root[] = {"name", "description", "results_dir", "threads", "stages", NULL};
    for (const char *const *k = drop_root; *k; k++) {
        mf_buf o = {0};
        mf_buf_printf(&o, "~%s", *k);
        if (mf_node_child(root, *k)) (void)mf_cfg_apply_override(root, o.s, NULL, NULL);
        mf_buf_free(&o);
    }
    mf_buf b = {0};
    mf_buf_puts(&b, "stages:");
    for (int i = 0; i < ex->n_stages; i++) {
        const mf_stage_inst *si = &ex->stages[i];
        if (!stage_downstream(si)) {
            mf_buf_printf(&b, " %s(%s)", si->instance, si->kind);
            continue;
        }
        char *o = mf_xasprintf("~%s", si->instance);
        if (mf_node_child(root, si->instance)) (void)mf_cfg_apply_override(root, o, NULL, NULL);
        free(o);
        for (const mf_section_schema *sh = si->plugin.api->shared; sh && sh->name; sh++) {
            bool stateful_reader = false;
            for (int j = 0; j < ex->n_stages; j++)
                for (const mf_section_schema *s2 = ex->stages[j].plugin.api->shared; s2 && s2->name; s2++)
                    if (strcmp(s2->name, sh->name) == 0 && !stage_downstream(&ex->stages[j])) stateful_reader = true;
            if (stateful_reader || !mf_node_child(root, sh->name)) continue;
            o = mf_xasprintf("~%s", sh->name);
            (void)mf_cfg_apply_override(root, o, NULL, NULL);
            free(o);
        }
    }
    mf_error_clear();
    mf_buf_puts(&b, "\n");
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f) {
        (void)mf_cfg_dump_yaml(root, f);
        fclose(f);
    }
    mf_buf_puts(&b, text ? text : "");
    free(text);
    mf_node_free(root);
    return b.s;
}

/* Load (and with dry, create every stage of) one configuration. */
static int try_load(const char *exp, char *const *ov, int n, mf_experiment *ex) {
    if (mf_experiment_load(ex, exp, ov, n) != 0) return -1;
    mf_run_opts o = {.dry = true};
    return mf_run_experiment(ex, &o, NULL, 0);
}

static void with_threads(const plan *pl, strv *ov, int threads) {
    if (!pl->user_threads && threads > 0) sv_push(ov, mf_xasprintf("threads=%d", threads));
}

/* Validate every point and decide which reuse which. Quiet: the notes of loading go nowhere. */
static int validate_plan(plan *pl, bool quiet) {
    mf_sweep *s = &pl->s;
    char **sig = mf_xcalloc((size_t)s->n_points + 1, sizeof *sig);
    int rc = -1;
    mf_log_set_quiet(1);
    mf_node *base = mf_cfg_load_file(s->experiment); /* which keys the file has (NULL: it fails below) */
    mf_error_clear();
    for (int i = 0; i < s->n_points; i++) {
        mf_sweep_point *p = &s->points[i];
        strv ov = {0};
        for (int k = 0; k < p->n_overrides; k++) sv_push(&ov, mf_xstrdup(p->overrides[k]));
        with_threads(pl, &ov, s->threads);
        mf_experiment ex;
        int lrc = try_load(s->experiment, ov.v, ov.n, &ex);
        sv_free(&ov);
        if (lrc != 0) {
            char *lab = point_label(s, p);
            mf_error_prefix("point %d (%s): ", i, lab);
            free(lab);
            mf_experiment_free(&ex);
            goto out;
        }
        if (i == 0) {
            free(pl->results_root);
            pl->results_root = mf_xstrdup(ex.results_dir);
            if (!s->name) s->name = mf_xasprintf("%s_multirun", ex.name);
        }
        p->stages = mf_xcalloc((size_t)ex.n_stages + 1, sizeof *p->stages);
        p->n_stages = ex.n_stages;
        for (int k = 0; k < ex.n_stages; k++) p->stages[k] = mf_xstrdup(ex.stages[k].instance);
        bool *training = mf_xcalloc((size_t)ex.n_stages + 1, sizeof *training);
        int n_train = training_stages(&ex, training);
        /* reuse needs a training stage to drop and a kept stage that can load a model (`from`) */
        bool loads = false;
        strv st = {0};
        for (int k = 0; k < ex.n_stages; k++)
            if (!training[k]) {
                sv_push(&st, mf_xstrdup(ex.stages[k].instance));
                if (stage_downstream(&ex.stages[k]) && stage_has_key(&ex.stages[k], "from")) loads = true;
            }
        pl->can_reuse[i] = n_train > 0 && loads;
        sig[i] = training_signature(&ex);
        if (pl->can_reuse[i]) {
            for (int j = 0; j < i; j++)
                if (s->points[j].train_point == j && pl->can_reuse[j] && strcmp(sig[j], sig[i]) == 0) {
                    p->train_point = j;
                    break;
                }
        }
        if (p->train_point != i) {
            /* the reuse run: the stages that do not train, the model from the training point */
            mf_buf sl = {0};
            mf_buf_puts(&sl, "stages=[");
            for (int k = 0; k < st.n; k++) mf_buf_printf(&sl, "%s%s", k ? "," : "", st.v[k]);
            mf_buf_puts(&sl, "]");
            /* the point's overrides, then the stage list and the model; an override of a key that the
             * experiment file lacks in a dropped stage's section is an addition there (+key=value):
             * that section is not validated when its stage does not run */
            strv ro = {0};
            for (int k = 0; k < p->n_overrides; k++) {
                const char *o = p->overrides[k];
                size_t kl;
                const char *key = override_key(o, &kl);
                char *kk = mf_xasprintf("%.*s", (int)kl, key);
                char *top = mf_xasprintf("%.*s", (int)strcspn(kk, "."), kk);
                bool dropped = false;
                for (int j = 0; j < ex.n_stages; j++) {
                    if (!training[j]) continue;
                    if (strcmp(ex.stages[j].instance, top) == 0) dropped = true;
                    for (const mf_section_schema *sh = ex.stages[j].plugin.api->shared; sh && sh->name; sh++)
                        if (strcmp(sh->name, top) == 0) dropped = true;
                }
                if (dropped && o[0] != '+' && o[0] != '~' && base && !mf_cfg_find(base, kk)) sv_push(&ro, mf_xasprintf("+%s", o));
                else sv_push(&ro, mf_xstrdup(o));
                free(kk);
                free(top);
            }
            sv_push(&ro, sl.s);
            for (int k = 0; k < ex.n_stages; k++)
                if (!training[k] && stage_downstream(&ex.stages[k]) && stage_has_key(&ex.stages[k], "from")) {
                    mf_buf q = {0};
                    mf_json_escape(&q, s->points[p->train_point].path ? s->points[p->train_point].path : "/");
                    sv_push(&ro, mf_xasprintf("%s.from=%s", ex.stages[k].instance, q.s));
                    mf_buf_free(&q);
                }
            strv all = {0};
            for (int k = 0; k < ro.n; k++) sv_push(&all, mf_xstrdup(ro.v[k]));
            with_threads(pl, &all, s->threads);
            mf_experiment rex;
            int rrc = try_load(s->experiment, all.v, all.n, &rex);
            mf_experiment_free(&rex);
            sv_free(&all);
            if (rrc != 0) { /* it cannot run without the training stages: it trains itself */
                mf_info("point %d: trains itself: without the training stages: %s", i, mf_last_error());
                mf_error_clear();
                p->train_point = i;
                pl->can_reuse[i] = false;
                sv_free(&ro);
            } else {
                for (int k = 0; k < p->n_stages; k++) free(p->stages[k]);
                free(p->stages);
                p->stages = sv_copy(st.v, st.n);
                p->n_stages = st.n;
                p->run_overrides = ro.v;
                p->n_run_overrides = ro.n;
            }
        }
        if (!p->run_overrides) {
            p->run_overrides = sv_copy(p->overrides, p->n_overrides);
            p->n_run_overrides = p->n_overrides;
        }
        sv_free(&st);
        free(training);
        mf_experiment_free(&ex);
    }
    rc = 0;
out:
    mf_log_set_quiet(quiet);
    if (base) mf_node_free(base);
    for (int i = 0; i < s->n_points; i++) free(sig[i]);
    free(sig);
    return rc;
}

/* Fill the reuse points' `from` with the training points' folders (after the sweep folder exists). */
static void set_paths(mf_sweep *s) {
    for (int i = 0; i < s->n_points; i++) {
        mf_sweep_point *p = &s->points[i];
        free(p->path);
        p->path = mf_xasprintf("%s/%s", s->dir, p->dir);
    }
    for (int i = 0; i < s->n_points; i++) {
        mf_sweep_point *p = &s->points[i];
        for (int k = 0; k < p->n_run_overrides; k++) {
            char *eq = strstr(p->run_overrides[k], ".from=");
            if (p->train_point == i || !eq || strchr(p->run_overrides[k], '=') != eq + 5) continue;
            mf_buf q = {0};
            mf_buf_printf(&q, "%.*s", (int)(eq - p->run_overrides[k] + 6), p->run_overrides[k]);
            mf_json_escape(&q, s->points[p->train_point].path);
            free(p->run_overrides[k]);
            p->run_overrides[k] = q.s;
        }
    }
}

/* ---- running points ----------------------------------------------------------------------------- */

enum { P_PENDING, P_RUNNING, P_DONE, P_FAILED, P_SKIPPED, P_INTERRUPTED };

typedef struct runner {
    mf_sweep *s;
    bool user_threads;
    int jobs;
    bool resume;              /* --resume: finished points are skipped, others resumed or rerun */
    int *state;
    pid_t *pid;
    time_t *t0;
    int n_failed, n_skipped, n_done, n_already;
} runner;

static volatile sig_atomic_t g_signal, g_signals;
static void on_signal(int sig) {
    g_signal = sig;
    g_signals++;
}

static char *exe_path(void) {
    char buf[4096];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return mf_xstrdup("mfpipe");
    buf[n] = '\0';
    return mf_xstrdup(buf);
}

/* A JSON string field of a small file written by mf_json_str ("state", "error"); NULL when absent. */
static char *json_field(const char *path, const char *key) {
    uint8_t *data;
    size_t len;
    int gz;
    if (mf_read_file(path, &data, &len, &gz) != 0) {
        mf_error_clear();
        return NULL;
    }
    char *text = mf_xasprintf("%.*s", (int)len, (const char *)data);
    free(data);
    char *pat = mf_xasprintf("\"%s\":\"", key);
    char *at = strstr(text, pat);
    char *out = NULL;
    if (at) {
        mf_buf b = {0};
        mf_buf_puts(&b, "");
        for (const char *c = at + strlen(pat); *c && *c != '"'; c++) {
            if (*c == '\\' && c[1]) {
                c++;
                mf_buf_printf(&b, "%c", *c == 'n' ? ' ' : *c == 't' ? ' ' : *c);
            } else {
                mf_buf_printf(&b, "%c", *c);
            }
        }
        out = b.s;
    }
    free(pat);
    free(text);
    return out;
}

static char *point_state(const mf_sweep_point *p) {
    char *path = mf_xasprintf("%s/status.json", p->path);
    char *st = json_field(path, "state");
    free(path);
    return st;
}

static bool has_checkpoints(const mf_sweep_point *p) {
    char *dir = mf_xasprintf("%s/checkpoints", p->path);
    DIR *d = opendir(dir);
    bool any = false;
    struct dirent *e;
    while (d && !any && (e = readdir(d)))
        if (e->d_name[0] != '.') any = true;
    if (d) closedir(d);
    free(dir);
    return any;
}

/* Move an earlier attempt aside: <sweep>/retired/<n>-<k>. */
static int retire(const mf_sweep *s, const mf_sweep_point *p) {
    char *dir = mf_xasprintf("%s/retired", s->dir);
    int rc = mf_mkdirs(dir);
    for (int k = 1; rc == 0; k++) {
        char *to = mf_xasprintf("%s/%s-%d", dir, p->dir, k);
        struct stat st;
        if (lstat(to, &st) != 0) {
            if (rename(p->path, to) != 0) rc = mf_fail("%s: cannot move to %s: %s", p->path, to, strerror(errno));
            else mf_info("point %d: earlier attempt moved to %s", p->point, to);
            free(to);
            break;
        }
        free(to);
    }
    free(dir);
    return rc;
}

/* The child's command line. resume: `mfpipe resume DIR`, else `mfpipe run EXP ... --out DIR`. */
static void child_argv(const runner *r, const mf_sweep_point *p, const char *exe, bool resume, bool quiet, strv *a) {
    const mf_sweep *s = r->s;
    sv_push(a, mf_xstrdup(exe));
    if (resume) {
        sv_push(a, mf_xstrdup("resume"));
        sv_push(a, mf_xstrdup(p->path));
    } else {
        sv_push(a, mf_xstrdup("run"));
        sv_push(a, mf_xstrdup(s->experiment));
        for (int k = 0; k < p->n_run_overrides; k++) sv_push(a, mf_xstrdup(p->run_overrides[k]));
    }
    if (!r->user_threads && s->threads > 0) sv_push(a, mf_xasprintf("threads=%d", s->threads));
    if (!resume) {
        sv_push(a, mf_xstrdup("--out"));
        sv_push(a, mf_xstrdup(p->path));
    }
    if (quiet) sv_push(a, mf_xstrdup("-q"));
}

/* How to (re)start a point: 0 run, 1 resume, 2 already finished; -1 error. */
static int prepare_point(const runner *r, const mf_sweep_point *p) {
    char *st = point_state(p);
    int how = 0;
    if (!st) how = 0;
    else if (strcmp(st, "finished") == 0) how = 2;
    else if (p->train_point == p->point && has_checkpoints(p) && strcmp(st, "skipped") != 0) how = 1;
    else if (retire(r->s, p) != 0) how = -1;
    free(st);
    return how;
}

static int spawn(runner *r, int i, const char *exe, int how) {
    mf_sweep_point *p = &r->s->points[i];
    if (mf_mkdirs(p->path) != 0) return -1;
    strv a = {0};
    child_argv(r, p, exe, how == 1, true, &a);
    char *errpath = mf_xasprintf("%s/stderr.txt", p->path);
    pid_t pid = fork();
    if (pid < 0) {
        free(errpath);
        sv_free(&a);
        return mf_fail("point %d: fork: %s", i, strerror(errno));
    }
    if (pid == 0) {
        setpgid(0, 0); /* Ctrl-C reaches the point only through the sweep (once) */
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        int fd = open(errpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int nul = open("/dev/null", O_RDONLY);
        if (fd >= 0) dup2(fd, 1), dup2(fd, 2);
        if (nul >= 0) dup2(nul, 0);
        execv(a.v[0], a.v);
        fprintf(stderr, "mfpipe: error: cannot run %s: %s\n", a.v[0], strerror(errno));
        _exit(127);
    }
    free(errpath);
    r->pid[i] = pid;
    r->state[i] = P_RUNNING;
    r->t0[i] = time(NULL);
    char *lab = point_label(r->s, p);
    if (p->train_point == i)
        mf_info("point %d [%s]: %s in %s", i, lab, how == 1 ? "resuming" : "training", p->path);
    else
        mf_info("point %d [%s]: reusing the model of point %d (%s) in %s", i, lab, p->train_point,
                stage_override(p), p->path);
    free(lab);
    sv_free(&a);
    return 0;
}

static void mark_skipped(runner *r, int i, const char *why) {
    mf_sweep_point *p = &r->s->points[i];
    r->state[i] = P_SKIPPED;
    r->n_skipped++;
    if (mf_mkdirs(p->path) == 0) (void)mf_results_status(p->path, "skipped", NULL, why);
    char *lab = point_label(r->s, p);
    mf_log(MF_LOG_WARN, "point %d [%s]: skipped: %s", i, lab, why);
    free(lab);
}

static void point_ended(runner *r, int i, int status) {
    mf_sweep_point *p = &r->s->points[i];
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    char *st = point_state(p);
    char *lab = point_label(r->s, p);
    double sec = difftime(time(NULL), r->t0[i]);
    r->pid[i] = 0;
    if (code == 0 && st && strcmp(st, "finished") == 0) {
        r->state[i] = P_DONE;
        r->n_done++;
        mf_info("point %d [%s]: finished in %.0f s", i, lab, sec);
    } else if (code == 130 || (st && strcmp(st, "interrupted") == 0)) {
        r->state[i] = P_INTERRUPTED;
        mf_log(MF_LOG_WARN, "point %d [%s]: interrupted (%s)", i, lab, p->path);
    } else {
        r->state[i] = P_FAILED;
        r->n_failed++;
        char *path = mf_xasprintf("%s/status.json", p->path);
        char *err = json_field(path, "error");
        free(path);
        if (!err) { /* no status.json: the last error line the child printed */
            char *ep = mf_xasprintf("%s/stderr.txt", p->path);
            uint8_t *data;
            size_t len;
            int gz;
            if (mf_read_file(ep, &data, &len, &gz) == 0) {
                char *t = mf_xasprintf("%.*s", (int)len, (const char *)data);
                char *e = NULL;
                for (char *c = strstr(t, "mfpipe: error: "); c; c = strstr(c + 1, "mfpipe: error: ")) e = c + 15;
                if (e) err = mf_xasprintf("%.*s", (int)strcspn(e, "\n"), e);
                free(t);
                free(data);
            }
            mf_error_clear();
            free(ep);
            if (!err) err = mf_xasprintf("exit status %d", code);
        }
        mf_buf ov = {0};
        mf_buf_puts(&ov, "");
        for (int k = 0; k < p->n_overrides; k++) mf_buf_printf(&ov, "%s%s", k ? " " : "", p->overrides[k]);
        mf_log(MF_LOG_ERROR, "point %d [%s]: FAILED after %.0f s: %s\n  overrides: %s\n  log: %s/log.txt", i, lab, sec, err,
               ov.s, p->path);
        mf_buf_free(&ov);
        free(err);
        /* its reuse points cannot run */
        for (int j = 0; j < r->s->n_points; j++)
            if (j != i && r->s->points[j].train_point == i && r->state[j] == P_PENDING) {
                char *why = mf_xasprintf("its training point %d failed", i);
                mark_skipped(r, j, why);
                free(why);
            }
    }
    free(st);
    free(lab);
}

/* Run the pending points, at most r->jobs at a time: training points first, in order, then each reuse
 * point once its training point has finished. */
static int run_points(runner *r) {
    mf_sweep *s = r->s;
    char *exe = exe_path();
    g_signal = g_signals = 0;
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    int running = 0, forwarded = 0;
    for (;;) {
        if (g_signals > forwarded && forwarded < 2) {
            /* the first signal: the points stop at a safe point; a second: they stop at once */
            if (forwarded == 0) mf_log(MF_LOG_WARN, "signal %d: stopping the running points at a safe point", (int)g_signal);
            else mf_log(MF_LOG_WARN, "signal %d again: stopping the running points now", (int)g_signal);
            forwarded++;
            for (int i = 0; i < s->n_points; i++)
                if (r->pid[i] > 0) kill(r->pid[i], g_signal == SIGTERM ? SIGTERM : SIGINT);
        }
        /* start what may start: training points in order, then reuse points whose training finished */
        while (!g_signal && running < r->jobs) {
            int pick = -1;
            for (int i = 0; i < s->n_points && pick < 0; i++)
                if (r->state[i] == P_PENDING && s->points[i].train_point == i) pick = i;
            for (int i = 0; i < s->n_points && pick < 0; i++)
                if (r->state[i] == P_PENDING && r->state[s->points[i].train_point] == P_DONE) pick = i;
            if (pick < 0) break;
            int how = r->resume ? prepare_point(r, &s->points[pick]) : 0;
            if (how == 2) {
                r->state[pick] = P_DONE;
                r->n_already++;
                continue;
            }
            if (how < 0 || spawn(r, pick, exe, how) != 0) {
                mf_log(MF_LOG_ERROR, "point %d: %s", pick, mf_last_error());
                r->state[pick] = P_FAILED;
                r->n_failed++;
                continue;
            }
            running++;
        }
        /* reuse points whose training point ended without finishing */
        for (int i = 0; i < s->n_points; i++) {
            int t = s->points[i].train_point;
            if (r->state[i] == P_PENDING && t != i && (r->state[t] == P_FAILED || r->state[t] == P_SKIPPED)) {
                char *why = mf_xasprintf("its training point %d failed", t);
                mark_skipped(r, i, why);
                free(why);
            }
        }
        if (running == 0) break;
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid > 0) {
            for (int i = 0; i < s->n_points; i++)
                if (r->pid[i] == pid) {
                    point_ended(r, i, status);
                    running--;
                }
            continue;
        }
        if (pid < 0 && errno == ECHILD) break;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    free(exe);
    return g_signal ? EXIT_INTERRUPTED : 0;
}

static int write_report(const char *dir) {
    if (mf_sweep_report(dir) != 0) {
        mf_log(MF_LOG_WARN, "summary: %s", mf_last_error());
        mf_report_after(dir, 0); /* report.html: what there is; a failure is a warning */
        return -1;
    }
    mf_info("summary: %s/summary.md", dir);
    mf_report_after(dir, 1);
    return 0;
}

static int lock_sweep(const char *dir) {
    char *path = mf_xasprintf("%s/lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        mf_fail("%s: %s", path, e == EWOULDBLOCK ? "another mfpipe sweep is running in this folder" : strerror(e));
        free(path);
        return -1;
    }
    free(path);
    return fd;
}

/* Run (or resume) every point of a loaded sweep; the summary afterwards. */
static int execute(mf_sweep *s, int jobs, bool resume, bool user_threads) {
    runner r = {.s = s, .jobs = jobs > 0 ? jobs : 1, .resume = resume, .user_threads = user_threads};
    r.state = mf_xcalloc((size_t)s->n_points + 1, sizeof *r.state);
    r.pid = mf_xcalloc((size_t)s->n_points + 1, sizeof *r.pid);
    r.t0 = mf_xcalloc((size_t)s->n_points + 1, sizeof *r.t0);
    int n_train = 0;
    for (int i = 0; i < s->n_points; i++) n_train += s->points[i].train_point == i;
    char th[32];
    snprintf(th, sizeof th, s->threads > 0 ? "threads=%d" : "threads as set", s->threads);
    mf_info("sweep %s: %d points (%d train, %d reuse), %d in parallel, %s%s", s->name, s->n_points, n_train,
            s->n_points - n_train, r.jobs, th, resume ? " (resume)" : "");
    for (int i = 0; i < s->n_points; i++)
        if (s->points[i].train_point != i) mf_info("point %d reuses the training of point %d", i, s->points[i].train_point);
    int rc = run_points(&r);
    int n_int = 0;
    for (int i = 0; i < s->n_points; i++) n_int += r.state[i] == P_INTERRUPTED || r.state[i] == P_PENDING;
    (void)write_report(s->dir);
    if (rc == EXIT_INTERRUPTED)
        mf_log(MF_LOG_WARN, "sweep interrupted: %d finished, %d failed, %d skipped, %d not done; continue with "
               "'mfpipe sweep --resume %s'", r.n_done + r.n_already, r.n_failed, r.n_skipped, n_int, s->dir);
    else
        mf_log(r.n_failed || r.n_skipped ? MF_LOG_WARN : MF_LOG_INFO,
               "sweep %s: %d finished%s%s, %d failed, %d skipped: %s", s->name, r.n_done + r.n_already,
               r.n_already ? " (" : "", r.n_already ? "some earlier)" : "", r.n_failed, r.n_skipped, s->dir);
    if (r.n_already) mf_info("%d point%s had finished before", r.n_already, r.n_already == 1 ? "" : "s");
    if (rc == 0 && (r.n_failed || r.n_skipped || n_int)) rc = EXIT_FAILED;
    free(r.state);
    free(r.pid);
    free(r.t0);
    return rc;
}

/* ---- the commands ------------------------------------------------------------------------------- */

typedef struct sweep_args {
    const char *file, *resume, *point_dir, *summarize, *launcher, *slurm_args, *results;
    int point, jobs;
    bool dry, quiet;
    strv ov;               /* -m: overrides (fixed and swept) */
} sweep_args;

static int error_exit(int code) {
    fprintf(stderr, "mfpipe: error: %s\n", mf_last_error());
    return code;
}

static void print_plan(const plan *pl) {
    const mf_sweep *s = &pl->s;
    int n_train = 0;
    for (int i = 0; i < s->n_points; i++) n_train += s->points[i].train_point == i;
    printf("sweep %s: %d points (%d train, %d reuse), experiment %s, method %s\n", s->name, s->n_points, n_train,
           s->n_points - n_train, s->experiment, s->method);
    if (pl->user_threads) printf("folder: %s/%s/<stamp>/, %d in parallel, threads as set\n", pl->results_root, s->name, s->jobs);
    else printf("folder: %s/%s/<stamp>/, %d in parallel, threads=%d each\n", pl->results_root, s->name, s->jobs, s->threads);
    if (s->n_overrides) {
        printf("overrides:");
        for (int k = 0; k < s->n_overrides; k++) printf(" %s", s->overrides[k]);
        printf("\n");
    }
    for (int a = 0; a < s->n_axes; a++) {
        printf("axis %s:", s->axes[a].key);
        for (int k = 0; k < s->axes[a].n_values; k++) printf(" %s", s->axes[a].values[k]);
        printf("\n");
    }
    for (int i = 0; i < s->n_points; i++) {
        const mf_sweep_point *p = &s->points[i];
        char *lab = point_label(s, p);
        if (p->train_point == i) printf("point %d: train          %s\n", i, lab);
        else printf("point %d: reuse point %-3d %s (%s)\n", i, p->train_point, lab, stage_override(p));
        free(lab);
    }
}

/* Sweep file keys (mf_cfg_validate: unknown keys are errors with file:line). */
static const mf_key k_sweep_keys[] = {
    MF_STR("experiment", NULL, "the base experiment file (relative to the sweep file)"),
    MF_STR("name", "~", "sweep name: results go to <results_dir>/<name>/<stamp>/ (default: the file's name)"),
    MF_STR("description", "", "free text"),
    MF_STRS("overrides", "[]", "overrides given to every point"),
    MF_MAP("axes", "key -> list of values, or a string a,b,c / range(a,b[,step]) / choice(a,b,...)"),
    MF_ENUM("method", "grid", "grid|random|lua", "grid: every combination; random: max_runs of them; lua: a script's list"),
    MF_INT("seed", "0", 0, 9007199254740991.0, "seed of method random (and of the Lua script's math.random)"),
    MF_INT("max_runs", "0", 0, SWEEP_MAX_POINTS, "method random: number of points drawn (0: all)"),
    MF_STR("script", "~", "method lua: the script returning the override sets (relative to the sweep file)"),
    MF_STR("metric", "fid_lenet_v1", "the metric of the summary's plots"),
    MF_INT("jobs", "1", 1, 1024, "points run in parallel (--jobs overrides)"),
    MF_STR("results_dir", "~", "results root (default: the experiment's results_dir)"),
    MF_KEY_END,
};

static char *rel_to(const char *base_file, const char *path) {
    if (path[0] == '/') return mf_xstrdup(path);
    const char *slash = strrchr(base_file, '/');
    char *p = slash ? mf_xasprintf("%.*s/%s", (int)(slash - base_file), base_file, path) : mf_xstrdup(path);
    char *abs = realpath(p, NULL);
    if (abs) {
        free(p);
        return abs;
    }
    return p;
}

static char *abs_path(const char *p) {
    char *a = realpath(p, NULL);
    return a ? a : mf_xstrdup(p);
}

/* Axes from -m overrides: a value list makes an axis, a single value a fixed override. */
static int plan_from_overrides(plan *pl, char *const *ov, int n) {
    strv fixed = {0};
    for (int i = 0; i < n; i++) {
        const char *o = ov[i];
        const char *eq = strchr(o, '=');
        strv vals = {0};
        if (o[0] == '~' || !eq) {
            sv_push(&fixed, mf_xstrdup(o));
            continue;
        }
        char *key = mf_xasprintf("%.*s", (int)(eq - o), o);
        bool generator = strncmp(eq + 1, "range(", 6) == 0 || strncmp(eq + 1, "choice(", 7) == 0;
        strv probe = {0};
        bool several = split_top(eq + 1, &probe) == 0 && probe.n > 1;
        sv_free(&probe);
        if (!generator && !several) { /* one value (also an empty one, or text with unbalanced quotes) */
            sv_push(&fixed, mf_xstrdup(o));
            free(key);
            continue;
        }
        if (expand_values(key, eq + 1, &vals) != 0) {
            free(key);
            sv_free(&vals);
            sv_free(&fixed);
            return -1;
        }
        if (mf_sweep_axis_index(&pl->s, key) >= 0) {
            mf_fail("%s: swept twice", key);
            free(key);
            sv_free(&vals);
            sv_free(&fixed);
            return -1;
        } else {
            add_axis(&pl->s, key, &vals);
        }
        free(key);
    }
    pl->s.overrides = fixed.v ? fixed.v : mf_xcalloc(1, sizeof *pl->s.overrides);
    pl->s.n_overrides = fixed.n;
    return 0;
}

/* The sweep file: keys checked with positions, axes from lists or value strings. */
static int plan_from_file(plan *pl, const char *file, long long *max_runs, char **script, int *jobs) {
    mf_node *root = mf_cfg_load_file(file);
    if (!root) return -1;
    int rc = -1;
    char w[512];
    if (root->kind != MF_NODE_MAP) {
        mf_fail("%s: a sweep file is a mapping of keys (experiment, axes, ...)", file);
        goto out;
    }
    if (mf_cfg_validate(root, "", k_sweep_keys) != 0) goto out;
    mf_sweep *s = &pl->s;
    s->sweep_file = abs_path(file);
    s->experiment = rel_to(file, mf_cfg_str(root, "experiment"));
    const char *name = mf_cfg_str(root, "name");
    if (name && *name) s->name = mf_xstrdup(name);
    else {
        const char *b = strrchr(file, '/');
        s->name = mf_xstrdup(b ? b + 1 : file);
        char *dot = strrchr(s->name, '.');
        if (dot && dot != s->name) *dot = '\0';
    }
    if (strchr(s->name, '/') || s->name[0] == '.') {
        mf_fail("%s: name: '%s' cannot contain '/' or start with '.'", mf_node_where(mf_node_child(root, "name"), w, sizeof w), s->name);
        goto out;
    }
    free(s->method);
    s->method = mf_xstrdup(mf_cfg_str(root, "method"));
    s->seed = mf_cfg_int(root, "seed");
    free(s->metric);
    s->metric = mf_xstrdup(mf_cfg_str(root, "metric"));
    *max_runs = mf_cfg_int(root, "max_runs");
    *jobs = (int)mf_cfg_int(root, "jobs");
    const char *sc = mf_cfg_str(root, "script");
    *script = sc && *sc ? rel_to(file, sc) : NULL;
    const char *rd = mf_cfg_str(root, "results_dir");
    strv fixed = {0};
    mf_node *ov = mf_node_child(root, "overrides");
    for (mf_node *c = ov ? ov->first : NULL; c; c = c->next) sv_push(&fixed, mf_xstrdup(c->value ? c->value : ""));
    if (rd && *rd) sv_push(&fixed, mf_xasprintf("results_dir=\"%s\"", rd));
    s->overrides = fixed.v ? fixed.v : mf_xcalloc(1, sizeof *s->overrides);
    s->n_overrides = fixed.n;
    mf_node *axes = mf_node_child(root, "axes");
    for (mf_node *c = axes ? axes->first : NULL; c; c = c->next) {
        strv vals = {0};
        if (c->kind == MF_NODE_SEQ) {
            for (mf_node *v = c->first; v; v = v->next) {
                mf_buf b = {0};
                mf_buf_puts(&b, "");
                node_text(v, &b);
                sv_push(&vals, b.s);
            }
        } else if (c->kind == MF_NODE_SCALAR) {
            if (expand_values(c->key, c->value ? c->value : "", &vals) != 0) {
                mf_error_prefix("%s: axes: ", mf_node_where(c, w, sizeof w));
                sv_free(&vals);
                goto out;
            }
        }
        if (vals.n == 0) {
            mf_fail("%s: axes: %s: expected a non-empty list of values, or a string a,b,c / range(...) / choice(...)",
                    mf_node_where(c, w, sizeof w), c->key);
            sv_free(&vals);
            goto out;
        }
        add_axis(s, c->key, &vals);
    }
    if (strcmp(s->method, "lua") == 0 && !*script) {
        mf_fail("%s: method lua needs script: (a Lua file returning the override sets)", file);
        goto out;
    }
    if (strcmp(s->method, "lua") == 0 && s->n_axes) {
        mf_fail("%s: method lua: the script gives the points; remove axes:", mf_node_where(axes, w, sizeof w));
        goto out;
    }
    rc = 0;
out:
    mf_node_free(root);
    return rc;
}

static int parse_sweep_args(int argc, char **argv, sweep_args *a, bool multirun) {
    memset(a, 0, sizeof *a);
    a->point = -1;
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED(what)                                                                                                     \
    do {                                                                                                               \
        if (!val) return mf_fail("sweep: %s needs %s", s, what);                                                      \
        i++;                                                                                                           \
    } while (0)
        if (strcmp(s, "-q") == 0 || strcmp(s, "--quiet") == 0) a->quiet = true;
        else if (strcmp(s, "--dry") == 0) a->dry = true;
        else if (multirun && (strcmp(s, "-m") == 0 || strcmp(s, "--multirun") == 0)) continue;
        else if (strcmp(s, "--jobs") == 0 || strcmp(s, "-j") == 0) {
            NEED("a number");
            long long j;
            if (parse_ll(val, &j) != 0 || j < 1 || j > 1024) return mf_fail("sweep: --jobs %s: a number from 1 to 1024", val);
            a->jobs = (int)j;
        } else if (strcmp(s, "--launcher") == 0) {
            NEED("local or slurm");
            if (strcmp(val, "local") != 0 && strcmp(val, "slurm") != 0)
                return mf_fail("sweep: --launcher %s: local or slurm", val);
            a->launcher = val;
        } else if (strcmp(s, "--slurm-args") == 0) {
            NEED("sbatch options");
            a->slurm_args = val;
        } else if (strcmp(s, "--results") == 0) {
            NEED("a folder");
            a->results = val;
        } else if (!multirun && strcmp(s, "--resume") == 0) {
            NEED("a sweep folder");
            a->resume = val;
        } else if (!multirun && strcmp(s, "--summarize") == 0) {
            NEED("a sweep folder");
            a->summarize = val;
        } else if (!multirun && strcmp(s, "--point") == 0) {
            NEED("a point number and a sweep folder");
            long long p;
            if (parse_ll(val, &p) != 0 || p < 0) return mf_fail("sweep: --point %s: a point number", val);
            a->point = (int)p;
            if (i + 1 >= argc) return mf_fail("sweep: --point %s needs the sweep folder after it", val);
            a->point_dir = argv[++i];
        } else if (s[0] == '-' && s[1] == '-') {
            return mf_fail("%s: unknown option '%s' (see 'mfpipe sweep --help')", multirun ? "run -m" : "sweep", s);
        } else if (!a->file && !strchr(s, '=') && s[0] != '~' && s[0] != '+') {
            a->file = s;
        } else if (multirun && (strchr(s, '=') || s[0] == '~')) {
            sv_push(&a->ov, mf_xstrdup(s));
        } else {
            return mf_fail("%s: unexpected argument '%s'", multirun ? "run -m" : "sweep", s);
        }
#undef NEED
    }
    return 0;
}

static int cores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* New sweep: plan, validate, (dry: print) write the folder, run or submit. */
static int new_sweep(sweep_args *a, bool multirun) {
    plan pl = {0};
    int rc = EXIT_USAGE, lock = -1;
    bool ran = false;
    long long max_runs = 0;
    char *script = NULL;
    int file_jobs = 1;
    pl.s.method = mf_xstrdup(multirun ? "multirun" : "grid");
    pl.s.metric = mf_xstrdup("fid_lenet_v1");
    pl.s.launcher = mf_xstrdup(a->launcher ? a->launcher : "local");
    if (multirun) {
        if (!a->file) {
            mf_fail("run -m: no experiment file given");
            goto out;
        }
        pl.s.experiment = abs_path(a->file);
        pl.s.sweep_file = mf_xstrdup("");
        if (plan_from_overrides(&pl, a->ov.v, a->ov.n) != 0) goto out;
    } else if (plan_from_file(&pl, a->file, &max_runs, &script, &file_jobs) != 0) {
        goto out;
    }
    if (a->results) {
        pl.s.overrides = mf_xrealloc(pl.s.overrides, sizeof *pl.s.overrides * (size_t)(pl.s.n_overrides + 2));
        pl.s.overrides[pl.s.n_overrides++] = mf_xasprintf("results_dir=\"%s\"", a->results);
        pl.s.overrides[pl.s.n_overrides] = NULL;
    }
    pl.s.jobs = a->jobs ? a->jobs : file_jobs;
    pl.user_threads = overrides_set(pl.s.overrides, pl.s.n_overrides, "threads") ||
                      mf_sweep_axis_index(&pl.s, "threads") >= 0;
    if (strcmp(pl.s.method, "lua") == 0) {
        if (expand_lua(&pl, script) != 0) goto out;
        for (int i = 0; i < pl.s.n_points; i++)
            pl.user_threads |= overrides_set(pl.s.points[i].overrides, pl.s.points[i].n_overrides, "threads");
    } else if (expand_grid(&pl, strcmp(pl.s.method, "random") == 0, max_runs) != 0) {
        goto out;
    }
    if (!pl.user_threads) { /* the experiment file's own threads: leave it */
        mf_node *root = mf_cfg_load_file(pl.s.experiment);
        mf_node *th = root ? mf_node_child(root, "threads") : NULL;
        if (th && th->kind == MF_NODE_SCALAR && th->value && strcmp(th->value, "0") != 0) pl.user_threads = true;
        if (root) mf_node_free(root);
        mf_error_clear();
    }
    pl.s.threads = pl.user_threads ? 0 : (cores() / pl.s.jobs > 1 ? cores() / pl.s.jobs : 1);
    pl.can_reuse = mf_xcalloc((size_t)pl.s.n_points + 1, sizeof *pl.can_reuse);
    if (validate_plan(&pl, a->quiet) != 0) goto out;
    if (a->dry) {
        print_plan(&pl);
        rc = 0;
        goto out;
    }
    /* the folder */
    char dir[4096];
    if (mf_results_create(pl.results_root, pl.s.name, dir, sizeof dir) != 0) goto out;
    pl.s.dir = abs_path(dir);
    pl.s.created = now_utc();
    set_paths(&pl.s);
    rc = EXIT_FAILED;
    if ((lock = lock_sweep(pl.s.dir)) < 0 || mf_sweep_write(&pl.s) != 0 || mf_results_link_latest(dir) != 0) goto out;
    char *logp = mf_xasprintf("%s/sweep.log", pl.s.dir);
    int lrc = mf_log_open_file(logp);
    free(logp);
    if (lrc != 0) goto out;
    mf_info("sweep %s -> %s", pl.s.sweep_file[0] ? pl.s.sweep_file : pl.s.experiment, pl.s.dir);
    if (strcmp(pl.s.launcher, "slurm") == 0) {
        int *tp = mf_xcalloc((size_t)pl.s.n_points + 1, sizeof *tp), *up = mf_xcalloc((size_t)pl.s.n_points + 1, sizeof *up);
        int nt = 0, nu = 0;
        for (int i = 0; i < pl.s.n_points; i++) {
            if (pl.s.points[i].train_point == i) tp[nt++] = i;
            else up[nu++] = i;
        }
        char *exe = exe_path();
        /* --cpus-per-task: the threads the points get, or a fixed threads=N override's N */
        int cpus = pl.s.threads;
        for (int k = 0; k < pl.s.n_overrides; k++)
            if (strncmp(pl.s.overrides[k], "threads=", 8) == 0) cpus = atoi(pl.s.overrides[k] + 8);
        mf_slurm_plan sp = {.sweep_dir = pl.s.dir, .mfpipe = exe, .train_points = tp, .n_train = nt,
                            .reuse_points = up, .n_reuse = nu, .max_parallel = a->jobs, .threads = cpus,
                            .sbatch_args = a->slurm_args};
        char ids[1024];
        int src = mf_slurm_submit(&sp, ids, sizeof ids);
        free(exe), free(tp), free(up);
        if (src != 0) goto out;
        mf_info("submitted %d training and %d reuse points to Slurm (jobs %s); 'mfpipe sweep --summarize %s' when done",
                nt, nu, ids, pl.s.dir);
        printf("%s\n", pl.s.dir);
        rc = 0;
        goto out;
    }
    ran = true;
    rc = execute(&pl.s, pl.s.jobs, false, pl.user_threads);
out:
    if (rc != 0 && !ran) error_exit(rc);
    mf_log_close_file();
    if (lock >= 0) close(lock);
    free(script);
    plan_free(&pl);
    return rc;
}

/* Whether threads were the user's: a point's overrides set them, or threads 0 in sweep.yaml. */
static bool sweep_user_threads(const mf_sweep *s) { return s->threads <= 0; }

static int open_existing(const char *dir, mf_sweep *s, int *lock) {
    char *abs = abs_path(dir);
    int rc = mf_sweep_load(abs, s);
    free(abs);
    if (rc != 0) return -1;
    if (lock && (*lock = lock_sweep(s->dir)) < 0) return -1;
    char *logp = mf_xasprintf("%s/sweep.log", s->dir);
    rc = mf_log_open_file(logp);
    free(logp);
    return rc;
}

static int cmd_resume(sweep_args *a) {
    mf_sweep s;
    int lock = -1, rc;
    if (open_existing(a->resume, &s, &lock) != 0) {
        rc = error_exit(EXIT_USAGE);
    } else {
        if (a->jobs) {
            s.jobs = a->jobs;
            if (s.threads > 0) s.threads = cores() / s.jobs > 1 ? cores() / s.jobs : 1;
        }
        mf_info("sweep --resume %s", s.dir);
        rc = execute(&s, s.jobs, true, sweep_user_threads(&s));
    }
    mf_log_close_file();
    if (lock >= 0) close(lock);
    mf_sweep_free(&s);
    return rc;
}

/* One point, in the foreground (a Slurm array task): resumed or rerun as --resume would. */
static int cmd_point(sweep_args *a) {
    mf_sweep s;
    int rc = EXIT_USAGE;
    char *abs = abs_path(a->point_dir);
    if (mf_sweep_load(abs, &s) != 0) goto fail;
    if (a->point >= s.n_points) {
        mf_fail("%s: --point %d: the sweep has points 0 to %d", abs, a->point, s.n_points - 1);
        goto fail;
    }
    mf_sweep_point *p = &s.points[a->point];
    if (p->train_point != p->point) {
        mf_sweep_point *t = &s.points[p->train_point];
        char *st = point_state(t);
        bool ok = st && strcmp(st, "finished") == 0;
        if (!ok) {
            mf_fail("%s: point %d reuses the model of point %d, which has %s", abs, p->point, t->point,
                    st ? (strcmp(st, "failed") == 0 ? "failed" : "not finished") : "not run");
            /* recorded as the local launcher does: the summary shows it as skipped, with the reason */
            char *err = mf_xstrdup(mf_last_error());
            char *why = mf_xasprintf("its training point %d %s", t->point,
                                     st && strcmp(st, "failed") == 0 ? "failed" : "did not finish");
            if (mf_mkdirs(p->path) == 0) (void)mf_results_status(p->path, "skipped", NULL, why);
            mf_fail("%s", err);
            free(why);
            free(err);
        }
        free(st);
        if (!ok) {
            rc = EXIT_FAILED;
            goto fail;
        }
    }
    runner r = {.s = &s, .jobs = 1, .user_threads = sweep_user_threads(&s)};
    int how = prepare_point(&r, p);
    if (how < 0) {
        rc = EXIT_FAILED;
        goto fail;
    }
    if (how == 2) {
        printf("point %d: finished already (%s)\n", p->point, p->path);
        mf_sweep_free(&s);
        free(abs);
        return 0;
    }
    if (mf_mkdirs(p->path) != 0) goto fail;
    strv av = {0};
    char *exe = exe_path();
    child_argv(&r, p, exe, how == 1, a->quiet, &av);
    free(exe);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        execv(av.v[0], av.v);
        fprintf(stderr, "mfpipe: error: cannot run %s: %s\n", av.v[0], strerror(errno));
        _exit(127);
    }
    int status = 0;
    signal(SIGINT, SIG_IGN); /* the point gets the terminal's (or Slurm's) signal itself */
    signal(SIGTERM, SIG_IGN);
    while (pid > 0 && waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    sv_free(&av);
    mf_sweep_free(&s);
    free(abs);
    return pid < 0 ? EXIT_FAILED : WIFEXITED(status) ? WEXITSTATUS(status) : EXIT_FAILED;
fail:
    error_exit(rc);
    mf_sweep_free(&s);
    free(abs);
    return rc;
}

static int cmd_summarize(sweep_args *a) {
    char *abs = abs_path(a->summarize);
    mf_sweep s;
    int rc = mf_sweep_load(abs, &s);
    mf_sweep_free(&s);
    if (rc != 0) {
        free(abs);
        return error_exit(EXIT_USAGE);
    }
    rc = mf_sweep_report(abs) == 0 ? 0 : error_exit(EXIT_FAILED);
    mf_report_after(abs, rc == 0); /* report.html (Slurm's summary job too); a failure is a warning */
    if (rc == 0) printf("%s/summary.md\n", abs);
    free(abs);
    return rc;
}

int mf_sweep_cmd(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(mf_sweep_help, stdout);
            return 0;
        }
    sweep_args a;
    int rc;
    int prc = parse_sweep_args(argc, argv, &a, false);
    if (prc == 0 && a.quiet) mf_log_set_quiet(1);
    if (prc != 0) {
        rc = error_exit(EXIT_USAGE);
    } else if (a.resume || a.point_dir || a.summarize) {
        int modes = !!a.resume + !!a.point_dir + !!a.summarize;
        if (modes > 1 || a.file) {
            mf_fail("sweep: give one of SWEEP.yaml, --resume DIR, --point P DIR, --summarize DIR");
            rc = error_exit(EXIT_USAGE);
        } else {
            rc = a.resume ? cmd_resume(&a) : a.point_dir ? cmd_point(&a) : cmd_summarize(&a);
        }
    } else if (!a.file) {
        fputs(mf_sweep_help, stderr);
        rc = EXIT_USAGE;
    } else {
        rc = new_sweep(&a, false);
    }
    sv_free(&a.ov);
    return rc;
}

int mf_sweep_multirun_cmd(int argc, char **argv) {
    sweep_args a;
    int rc;
    if (parse_sweep_args(argc, argv, &a, true) != 0) {
        rc = error_exit(EXIT_USAGE);
    } else {
        if (a.quiet) mf_log_set_quiet(1);
        rc = new_sweep(&a, true);
    }
    sv_free(&a.ov);
    return rc;
}
