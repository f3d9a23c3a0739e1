/* mf_runs.c - `mfpipe ls [ROOT]` and `mfpipe show RUN_DIR`: read status.json, manifest.json,
 * metrics.jsonl, eval.json and config.yaml of run folders, never write anything. Holds a minimal JSON
 * reader (a tree of values; errors give the byte offset) for these files. */
#include "mf_runs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mf_error.h"
#include "mf_json.h"
#include <stdbool.h>

const char *const mf_runs_ls_help =
    "usage: mfpipe ls [RESULTS_ROOT] [--json]      (alias: mfpipe runs)\n"
    "\n"
    "One row per run folder RESULTS_ROOT/<name>/<stamp>/ (default root: results; the 'latest' links\n"
    "are skipped), sorted by name then stamp: name, stamp, status (running, finished, failed,\n"
    "interrupted; 'stale' for a running run whose lock is not held by any process), steps (last\n"
    "logged train step / configured train.steps), best metric (eval.json FID if present, else the\n"
    "last train loss), wall time and folder. Missing or corrupt files show as '?' (with a warning\n"
    "naming the file and byte offset or line) and never stop the listing.\n"
    "  --json   one JSON object per run and line instead of the table\n"
    "exit status: 0 listed (also with unreadable files), 1 root not readable, 2 bad command line\n";

const char *const mf_runs_show_help =
    "usage: mfpipe show RUN_DIR\n"
    "\n"
    "A run folder's summary: name, status (and error if it failed), engine and backend, seed, steps,\n"
    "the loss at the last log, wall time, eval metrics (every numeric entry of eval.json), the\n"
    "sample images present (samples/*.png, outputs/*.png) and the command line from manifest.json.\n"
    "Missing or corrupt files show as '?' with a warning.\n"
    "exit status: 0 shown, 1 not a run folder, 2 bad command line\n";

/* ------------------------------------------------------------------ minimal JSON reader */

enum { JV_NULL, JV_BOOL, JV_NUM, JV_STR, JV_ARR, JV_OBJ };

typedef struct jv {
    int type;
    double num;        /* JV_NUM, JV_BOOL */
    char *str;         /* JV_STR */
    int n;             /* JV_ARR, JV_OBJ: element count */
    char **keys;       /* JV_OBJ */
    struct jv *items;  /* JV_ARR, JV_OBJ */
} jv;

typedef struct jp {
    const char *s;
    size_t len, pos;
    int depth;
} jp;

static void jv_free(jv *v) {
    if (!v) return;
    for (int i = 0; i < v->n; i++) {
        jv_free(&v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->str);
    memset(v, 0, sizeof *v);
}

static void jp_ws(jp *p) {
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' ||
                               p->s[p->pos] == '\r'))
        p->pos++;
}

static int jp_value(jp *p, jv *out);

static int jp_string(jp *p, char **out) {
    if (p->pos >= p->len || p->s[p->pos] != '"') return -1;
    p->pos++;
    mf_buf b = {0};
    mf_buf_puts(&b, "");
    while (p->pos < p->len && p->s[p->pos] != '"') {
        char c = p->s[p->pos++];
        if ((unsigned char)c < 0x20) goto bad;
        if (c != '\\') {
            mf_buf_printf(&b, "%c", c);
            continue;
        }
        if (p->pos >= p->len) goto bad;
        c = p->s[p->pos++];
        switch (c) {
        case '"': case '\\': case '/': mf_buf_printf(&b, "%c", c); break;
        case 'b': mf_buf_puts(&b, "\b"); break;
        case 'f': mf_buf_puts(&b, "\f"); break;
        case 'n': mf_buf_puts(&b, "\n"); break;
        case 'r': mf_buf_puts(&b, "\r"); break;
        case 't': mf_buf_puts(&b, "\t"); break;
        case 'u': {
            if (p->pos + 4 > p->len) goto bad;
            unsigned u = 0;
            for (int i = 0; i < 4; i++) {
                char h = p->s[p->pos++];
                u <<= 4;
                if (h >= '0' && h <= '9') u |= (unsigned)(h - '0');
                else if (h >= 'a' && h <= 'f') u |= (unsigned)(h - 'a' + 10);
                else if (h >= 'A' && h <= 'F') u |= (unsigned)(h - 'A' + 10);
                else goto bad;
            }
            /* UTF-8 of the BMP code point (surrogates kept as '?') */
            if (u < 0x80) mf_buf_printf(&b, "%c", (char)u);
            else if (u < 0x800) mf_buf_printf(&b, "%c%c", (char)(0xC0 | (u >> 6)), (char)(0x80 | (u & 0x3F)));
            else if (u >= 0xD800 && u < 0xE000) mf_buf_puts(&b, "?");
            else
                mf_buf_printf(&b, "%c%c%c", (char)(0xE0 | (u >> 12)), (char)(0x80 | ((u >> 6) & 0x3F)),
                              (char)(0x80 | (u & 0x3F)));
            break;
        }
        default: goto bad;
        }
    }
    if (p->pos >= p->len) goto bad;
    p->pos++;
    *out = b.s;
    return 0;
bad:
    mf_buf_free(&b);
    return -1;
}

static int jp_push(jv *v, int *cap) {
    if (v->n == *cap) {
        *cap = *cap ? *cap * 2 : 8;
        v->items = realloc(v->items, (size_t)*cap * sizeof *v->items);
        if (v->type == JV_OBJ) v->keys = realloc(v->keys, (size_t)*cap * sizeof *v->keys);
        if (!v->items || (v->type == JV_OBJ && !v->keys)) abort();
    }
    memset(&v->items[v->n], 0, sizeof v->items[v->n]);
    if (v->keys) v->keys[v->n] = NULL;
    return v->n++;
}

static int jp_value(jp *p, jv *out) {
    memset(out, 0, sizeof *out);
    jp_ws(p);
    if (p->pos >= p->len) return -1;
    char c = p->s[p->pos];
    if (c == '{' || c == '[') {
        if (++p->depth > 64) return -1;
        int obj = c == '{', cap = 0;
        out->type = obj ? JV_OBJ : JV_ARR;
        p->pos++;
        jp_ws(p);
        if (p->pos < p->len && p->s[p->pos] == (obj ? '}' : ']')) {
            p->pos++;
            p->depth--;
            return 0;
        }
        for (;;) {
            int i = jp_push(out, &cap);
            if (obj) {
                jp_ws(p);
                if (jp_string(p, &out->keys[i]) != 0) return -1;
                jp_ws(p);
                if (p->pos >= p->len || p->s[p->pos] != ':') return -1;
                p->pos++;
            }
            if (jp_value(p, &out->items[i]) != 0) return -1;
            jp_ws(p);
            if (p->pos >= p->len) return -1;
            if (p->s[p->pos] == ',') {
                p->pos++;
                continue;
            }
            if (p->s[p->pos] != (obj ? '}' : ']')) return -1;
            p->pos++;
            p->depth--;
            return 0;
        }
    }
    if (c == '"') {
        out->type = JV_STR;
        return jp_string(p, &out->str);
    }
    static const struct { const char *w; int type; double v; } words[] = {
        {"true", JV_BOOL, 1}, {"false", JV_BOOL, 0}, {"null", JV_NULL, 0}};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        size_t n = strlen(words[i].w);
        if (p->len - p->pos >= n && memcmp(p->s + p->pos, words[i].w, n) == 0) {
            out->type = words[i].type;
            out->num = words[i].v;
            p->pos += n;
            return 0;
        }
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        char tmp[64];
        size_t n = 0;
        while (p->pos + n < p->len && n < sizeof tmp - 1 && strchr("+-.eE0123456789", p->s[p->pos + n])) {
            tmp[n] = p->s[p->pos + n];
            n++;
        }
        tmp[n] = '\0';
        char *end;
        double d = strtod(tmp, &end);
        if (end == tmp) return -1;
        p->pos += (size_t)(end - tmp);
        out->type = JV_NUM;
        out->num = d;
        return 0;
    }
    return -1;
}

/* Parse all of s[0..len); on error *err_off is the byte offset where parsing stopped. */
static int jv_parse(const char *s, size_t len, jv *out, size_t *err_off) {
    jp p = {.s = s, .len = len};
    if (jp_value(&p, out) == 0) {
        jp_ws(&p);
        if (p.pos == p.len) return 0;
    }
    *err_off = p.pos;
    jv_free(out);
    return -1;
}

static const jv *jv_get(const jv *o, const char *key) {
    if (!o || o->type != JV_OBJ) return NULL;
    for (int i = o->n - 1; i >= 0; i--) /* the last of duplicate keys wins */
        if (strcmp(o->keys[i], key) == 0) return &o->items[i];
    return NULL;
}
static const char *jv_str(const jv *o, const char *key) {
    const jv *v = jv_get(o, key);
    return v && v->type == JV_STR ? v->str : NULL;
}
static int jv_num(const jv *o, const char *key, double *out) {
    const jv *v = jv_get(o, key);
    if (!v || v->type != JV_NUM) return 0;
    *out = v->num;
    return 1;
}

/* ------------------------------------------------------------------ reading a run folder */

static void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("mfpipe: warning: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* whole file, NUL-terminated; NULL (errno set) when it cannot be read */
static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    mf_buf b = {0};
    mf_buf_puts(&b, "");
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        size_t old = b.len;
        mf_buf_printf(&b, "%*s", (int)n, ""); /* grow, then copy raw bytes (may hold NULs) */
        memcpy(b.s + old, chunk, n);
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        mf_buf_free(&b);
        errno = EIO;
        return NULL;
    }
    *len = b.len;
    return b.s;
}

/* a JSON object file: 0 read, -1 missing (warn if warn_missing), -2 corrupt (warned) */
static int read_json_file(const char *dir, const char *file, jv *out, int warn_missing) {
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    size_t len = 0;
    char *s = slurp(path, &len);
    memset(out, 0, sizeof *out);
    if (!s) {
        if (warn_missing || errno != ENOENT) warn("%s: %s", path, strerror(errno));
        return -1;
    }
    size_t off = 0;
    int rc = 0;
    if (jv_parse(s, len, out, &off) != 0) {
        warn("%s: malformed JSON at byte %zu", path, off);
        rc = -2;
    } else if (out->type != JV_OBJ) {
        warn("%s: not a JSON object", path);
        jv_free(out);
        rc = -2;
    }
    free(s);
    return rc;
}

typedef struct run_info {
    char *dir, *name, *stamp;
    char *state;              /* NULL: unknown */
    char *error, *err_stage;  /* failed / interrupted runs */
    char *status_time, *started, *engine, *be_kind, *be_version, *be_precision, *cmdline;
    int stale, have_seed;
    double seed;
    long long step;           /* last logged train step, -1 unknown */
    long long total_steps;    /* config.yaml train.steps, -1 unknown */
    double loss;              /* at the last logged step; NAN unknown */
    double fid;               /* NAN unknown */
    char *fid_name;
    double t_first, t_last;   /* metrics "time" range; NAN unknown */
    int metrics_ok;           /* metrics.jsonl readable */
    jv eval;                  /* eval.json (JV_NULL if absent) */
    int eval_ok;
} run_info;

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static void run_info_free(run_info *r) {
    free(r->dir), free(r->name), free(r->stamp), free(r->state), free(r->error), free(r->err_stage);
    free(r->status_time), free(r->started), free(r->engine), free(r->be_kind), free(r->be_version);
    free(r->be_precision), free(r->cmdline), free(r->fid_name);
    jv_free(&r->eval);
}

/* A "running" run whose lock nobody holds: the process died without writing its status. */
static int lock_is_free(const char *dir) {
    char path[4400];
    snprintf(path, sizeof path, "%s/lock", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 1;
    int free_ = flock(fd, LOCK_SH | LOCK_NB) == 0;
    if (free_) flock(fd, LOCK_UN);
    close(fd);
    return free_;
}

static void read_metrics(run_info *r) {
    char path[4400];
    snprintf(path, sizeof path, "%s/metrics.jsonl", r->dir);
    size_t len = 0;
    char *s = slurp(path, &len);
    if (!s) {
        warn("%s: %s", path, strerror(errno));
        return;
    }
    r->metrics_ok = 1;
    size_t pos = 0;
    long line = 0;
    int warned = 0;
    while (pos < len) {
        size_t end = pos;
        while (end < len && s[end] != '\n') end++;
        line++;
        size_t a = pos;
        while (a < end && (s[a] == ' ' || s[a] == '\r' || s[a] == '\t')) a++;
        if (a < end) {
            jv o;
            size_t off = 0;
            if (jv_parse(s + pos, end - pos, &o, &off) != 0 || o.type != JV_OBJ) {
                jv_free(&o);
                if (warned++ < 3)
                    warn("%s:%ld: malformed JSON at byte %zu%s", path, line, pos + off,
                         end == len ? " (truncated last line)" : "");
            } else {
                double t, step, loss;
                if (jv_num(&o, "time", &t)) {
                    if (isnan(r->t_first)) r->t_first = t;
                    r->t_last = t;
                }
                const char *stage = jv_str(&o, "stage");
                if (stage && strcmp(stage, "train") == 0 && jv_num(&o, "step", &step) && step >= (double)r->step) {
                    r->step = (long long)step;
                    r->loss = jv_num(&o, "loss", &loss) ? loss : NAN;
                }
                jv_free(&o);
            }
        }
        pos = end + 1;
    }
    free(s);
}

/* train.steps from the resolved config.yaml (the runner's dump: "train:" then two-space keys) */
static long long config_train_steps(const char *dir) {
    char path[4400];
    snprintf(path, sizeof path, "%s/config.yaml", dir);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[1024];
    int in_train = 0;
    long long v = -1;
    while (fgets(line, sizeof line, f)) {
        if (line[0] != ' ' && line[0] != '#' && line[0] != '\n') in_train = strncmp(line, "train:", 6) == 0;
        else if (in_train && strncmp(line, "  steps:", 8) == 0) {
            char *end;
            long long x = strtoll(line + 8, &end, 10);
            if (end != line + 8) v = x;
            break;
        }
    }
    fclose(f);
    return v;
}

/* the FID of eval.json: a top-level "fid", else the first metrics[] entry named fid* */
static void eval_fid(run_info *r) {
    double d;
    if (jv_num(&r->eval, "fid", &d)) {
        r->fid = d;
        r->fid_name = strdup("fid");
        return;
    }
    const jv *m = jv_get(&r->eval, "metrics");
    if (!m || m->type != JV_ARR) return;
    for (int i = 0; i < m->n; i++) {
        const char *name = jv_str(&m->items[i], "metric");
        if (name && strncmp(name, "fid", 3) == 0 && jv_num(&m->items[i], "value", &d)) {
            r->fid = d;
            r->fid_name = strdup(name);
            return;
        }
    }
}

static void read_run(run_info *r, const char *dir, const char *name, const char *stamp) {
    memset(r, 0, sizeof *r);
    r->dir = strdup(dir);
    r->name = dup_or_null(name);
    r->stamp = dup_or_null(stamp);
    r->step = -1;
    r->loss = r->fid = r->t_first = r->t_last = NAN;
    jv o;
    if (read_json_file(dir, "status.json", &o, 1) == 0) {
        r->state = dup_or_null(jv_str(&o, "state"));
        if (!r->state) warn("%s/status.json: no \"state\" string", dir);
        r->error = dup_or_null(jv_str(&o, "error"));
        r->err_stage = dup_or_null(jv_str(&o, "stage"));
        r->status_time = dup_or_null(jv_str(&o, "time"));
        jv_free(&o);
    }
    if (r->state && strcmp(r->state, "running") == 0 && lock_is_free(dir)) r->stale = 1;
    if (read_json_file(dir, "manifest.json", &o, 1) == 0) {
        if (!r->name) r->name = dup_or_null(jv_str(&o, "name"));
        r->started = dup_or_null(jv_str(&o, "started"));
        r->engine = dup_or_null(jv_str(&o, "engine"));
        r->cmdline = dup_or_null(jv_str(&o, "command_line"));
        r->have_seed = jv_num(&o, "seed", &r->seed);
        const jv *be = jv_get(&o, "backend");
        r->be_kind = dup_or_null(jv_str(be, "kind"));
        r->be_version = dup_or_null(jv_str(be, "version"));
        r->be_precision = dup_or_null(jv_str(be, "precision"));
        jv_free(&o);
    }
    read_metrics(r);
    r->total_steps = config_train_steps(dir);
    r->eval_ok = read_json_file(dir, "eval.json", &r->eval, 0) == 0;
    if (r->eval_ok) eval_fid(r);
}

static int parse_stamp(const char *s, time_t *out) {
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = s ? strptime(s, "%Y-%m-%dT%H:%M:%S%z", &tm) : NULL;
    if (!end) return 0;
    long off = tm.tm_gmtoff;
    *out = timegm(&tm) - off;
    return 1;
}

/* seconds from start to end: manifest "started" to status.json "time" for a run that ended, else the
 * metrics' first to last "time"; NAN unknown */
static double wall_seconds(const run_info *r) {
    time_t a, b;
    int ended = r->state && strcmp(r->state, "running") != 0;
    if (ended && parse_stamp(r->started, &a) && parse_stamp(r->status_time, &b) && b >= a) return (double)(b - a);
    if (!isnan(r->t_first) && r->t_last >= r->t_first) return r->t_last - r->t_first;
    return NAN;
}

static void fmt_wall(double s, char *out, size_t n) {
    if (isnan(s)) snprintf(out, n, "?");
    else if (s < 60) snprintf(out, n, "%.1fs", s);
    else if (s < 3600) snprintf(out, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
    else snprintf(out, n, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
}

static const char *status_word(const run_info *r) {
    if (!r->state) return "?";
    return r->stale ? "stale" : r->state;
}

static void fmt_steps(const run_info *r, char *out, size_t n) {
    if (r->step < 0 && r->total_steps < 0) snprintf(out, n, "?");
    else if (r->total_steps < 0) snprintf(out, n, "%lld", r->step);
    else if (r->step < 0) snprintf(out, n, "?/%lld", r->total_steps);
    else snprintf(out, n, "%lld/%lld", r->step, r->total_steps);
}

static void fmt_best(const run_info *r, char *out, size_t n) {
    if (!isnan(r->fid)) snprintf(out, n, "%s=%.4g", r->fid_name, r->fid);
    else if (!isnan(r->loss)) snprintf(out, n, "loss=%.4g", r->loss);
    else snprintf(out, n, "?");
}

/* ------------------------------------------------------------------ mfpipe ls */

static int is_dir_nolink(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The entries of dir that keep(dir, name) accepts, sorted; -1 if dir cannot be read. */
static int list_names(const char *dir, bool (*keep)(const char *dir, const char *name), char ***out) {
    DIR *d = opendir(dir);
    *out = NULL;
    if (!d) return -1;
    int n = 0, cap = 0;
    char **v = NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!keep(dir, e->d_name)) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            v = realloc(v, (size_t)cap * sizeof *v);
            if (!v) abort();
        }
        v[n++] = strdup(e->d_name);
    }
    closedir(d);
    if (n) qsort(v, (size_t)n, sizeof *v, cmp_str);
    *out = v;
    return n;
}

/* a sub-folder (no symlinks, no dot entries, not `latest`) */
static bool is_subdir(const char *dir, const char *name) {
    if (name[0] == '.' || strcmp(name, "latest") == 0) return false;
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return is_dir_nolink(path);
}

/* the sub-folders of dir, sorted; -1 if dir cannot be read */
static int list_dirs(const char *dir, char ***out) { return list_names(dir, is_subdir, out); }

static void free_strs(char **v, int n) {
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

static int is_run_folder(const char *dir) {
    static const char *const files[] = {"status.json", "manifest.json", "metrics.jsonl"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        if (access(path, F_OK) == 0) return 1;
    }
    return 0;
}

static void json_num_or_null(mf_buf *b, const char *key, double v) {
    if (isnan(v)) mf_json_raw(b, key, "null");
    else mf_json_num(b, key, v);
}

static void print_json_row(const run_info *r) {
    mf_buf b = {0};
    mf_buf_puts(&b, "{");
    mf_json_str(&b, "name", r->name);
    mf_json_str(&b, "stamp", r->stamp);
    if (r->state) mf_json_str(&b, "status", status_word(r));
    else mf_json_raw(&b, "status", "null");
    json_num_or_null(&b, "steps", r->step < 0 ? NAN : (double)r->step);
    json_num_or_null(&b, "total_steps", r->total_steps < 0 ? NAN : (double)r->total_steps);
    json_num_or_null(&b, "loss", r->loss);
    json_num_or_null(&b, "fid", r->fid);
    if (!isnan(r->fid)) mf_json_str(&b, "best_metric", r->fid_name);
    else if (!isnan(r->loss)) mf_json_str(&b, "best_metric", "loss");
    else mf_json_raw(&b, "best_metric", "null");
    json_num_or_null(&b, "best", !isnan(r->fid) ? r->fid : r->loss);
    json_num_or_null(&b, "wall_s", wall_seconds(r));
    mf_json_str(&b, "dir", r->dir);
    mf_buf_puts(&b, "}");
    printf("%s\n", b.s);
    mf_buf_free(&b);
}

int mf_runs_ls_cmd(int argc, char **argv) {
    const char *root = NULL;
    int json = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(mf_runs_ls_help, stdout);
            return 0;
        }
        if (strcmp(argv[i], "--json") == 0) json = 1;
        else if (argv[i][0] == '-' || root) {
            fprintf(stderr, "mfpipe: error: ls: unexpected argument '%s' (see 'mfpipe ls --help')\n", argv[i]);
            return 2;
        } else root = argv[i];
    }
    if (!root) root = "results";
    char **names;
    int nn = list_dirs(root, &names);
    if (nn < 0) {
        fprintf(stderr, "mfpipe: error: ls: %s: %s\n", root, strerror(errno));
        return 1;
    }
    int n = 0, cap = 0;
    run_info *runs = NULL;
    for (int i = 0; i < nn; i++) {
        char *ndir;
        if (asprintf(&ndir, "%s/%s", root, names[i]) < 0) abort();
        char **stamps;
        int ns = list_dirs(ndir, &stamps);
        for (int j = 0; j < ns; j++) {
            char *rdir;
            if (asprintf(&rdir, "%s/%s", ndir, stamps[j]) < 0) abort();
            if (!is_run_folder(rdir)) {
                free(rdir);
                continue;
            }
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                runs = realloc(runs, (size_t)cap * sizeof *runs);
                if (!runs) abort();
            }
            read_run(&runs[n++], rdir, names[i], stamps[j]);
            free(rdir);
        }
        if (ns > 0) free_strs(stamps, ns);
        free(ndir);
    }
    if (nn > 0) free_strs(names, nn);
    if (json) {
        for (int i = 0; i < n; i++) print_json_row(&runs[i]);
    } else {
        enum { NC = 7 };
        static const char *const head[NC] = {"NAME", "STAMP", "STATUS", "STEPS", "BEST", "WALL", "FOLDER"};
        char(*cells)[NC][160] = calloc((size_t)n + 1, sizeof *cells);
        if (!cells) abort();
        int w[NC];
        for (int c = 0; c < NC; c++) {
            snprintf(cells[0][c], sizeof cells[0][c], "%s", head[c]);
            w[c] = (int)strlen(head[c]);
        }
        for (int i = 0; i < n; i++) {
            char(*row)[160] = cells[i + 1];
            snprintf(row[0], 160, "%s", runs[i].name);
            snprintf(row[1], 160, "%s", runs[i].stamp);
            snprintf(row[2], 160, "%s", status_word(&runs[i]));
            fmt_steps(&runs[i], row[3], 160);
            fmt_best(&runs[i], row[4], 160);
            fmt_wall(wall_seconds(&runs[i]), row[5], 160);
            snprintf(row[6], 160, "%s", runs[i].dir);
            for (int c = 0; c < NC; c++)
                if ((int)strlen(row[c]) > w[c]) w[c] = (int)strlen(row[c]);
        }
        for (int i = 0; i <= n; i++) {
            for (int c = 0; c < NC - 1; c++) printf("%-*s  ", w[c], cells[i][c]);
            printf("%s\n", cells[i][NC - 1]);
        }
        free(cells);
        if (n == 0) fprintf(stderr, "mfpipe: no run folders under %s\n", root);
    }
    for (int i = 0; i < n; i++) run_info_free(&runs[i]);
    free(runs);
    return 0;
}

/* ------------------------------------------------------------------ mfpipe show */

static bool is_png(const char *dir, const char *name) {
    (void)dir;
    size_t l = strlen(name);
    return l >= 5 && strcmp(name + l - 4, ".png") == 0;
}

static void list_pngs(const char *dir, const char *sub, int *count) {
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, sub);
    char **v = NULL;
    int n = list_names(path, is_png, &v);
    if (n < 0) return;
    for (int i = 0; i < n; i++) printf("%-10s %s/%s\n", (*count)++ ? "" : "images:", sub, v[i]);
    free_strs(v, n);
}

static const char *q(const char *s) { return s ? s : "?"; }

int mf_runs_show_cmd(int argc, char **argv) {
    const char *dir = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(mf_runs_show_help, stdout);
            return 0;
        }
        if (argv[i][0] == '-' || dir) {
            fprintf(stderr, "mfpipe: error: show: unexpected argument '%s' (see 'mfpipe show --help')\n", argv[i]);
            return 2;
        }
        dir = argv[i];
    }
    if (!dir) {
        fputs(mf_runs_show_help, stderr);
        return 2;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "mfpipe: error: show: %s: %s\n", dir, stat(dir, &st) != 0 ? strerror(errno) : "not a folder");
        return 1;
    }
    if (!is_run_folder(dir)) {
        fprintf(stderr, "mfpipe: error: show: %s: not a run folder (no status.json, manifest.json or metrics.jsonl)\n",
                dir);
        return 1;
    }
    /* the stamp is the folder's own name; the name falls back on the parent's */
    char *copy = realpath(dir, NULL);
    if (!copy) copy = strdup(dir);
    size_t l = strlen(copy);
    while (l > 1 && copy[l - 1] == '/') copy[--l] = '\0';
    char *slash = strrchr(copy, '/');
    const char *stamp = slash ? slash + 1 : copy;
    run_info r;
    read_run(&r, dir, NULL, stamp);
    if (!r.name && slash) {
        *slash = '\0';
        char *s2 = strrchr(copy, '/');
        r.name = strdup(s2 ? s2 + 1 : copy);
    }
    free(copy);
    char buf[256];
    printf("%-10s %s\n", "run:", r.dir);
    printf("%-10s %s\n", "name:", q(r.name));
    printf("%-10s %s", "status:", status_word(&r));
    if (r.stale) printf(" (status.json says running, but no process holds %s/lock)", r.dir);
    if (r.status_time) printf(" (%s)", r.status_time);
    printf("\n");
    if (r.error) printf("%-10s %s%s%s\n", "error:", r.err_stage ? r.err_stage : "", r.err_stage ? ": " : "", r.error);
    if (r.be_kind) {
        printf("%-10s %s", "backend:", r.be_kind);
        if (r.be_precision) printf(" %s", r.be_precision);
        if (r.be_version) printf(" (%s)", r.be_version);
        printf("%s%s\n", r.engine ? "; engine " : "", r.engine ? r.engine : "");
    } else printf("%-10s %s\n", "engine:", q(r.engine));
    if (r.have_seed) printf("%-10s %.17g\n", "seed:", r.seed);
    else printf("%-10s ?\n", "seed:");
    fmt_steps(&r, buf, sizeof buf);
    printf("%-10s %s\n", "steps:", buf);
    if (isnan(r.loss)) printf("%-10s ?\n", "loss:");
    else printf("%-10s %.7g (step %lld)\n", "loss:", r.loss, r.step);
    fmt_wall(wall_seconds(&r), buf, sizeof buf);
    printf("%-10s %s\n", "wall:", buf);
    int ne = 0;
    if (r.eval_ok) {
        for (int i = 0; i < r.eval.n; i++)
            if (r.eval.items[i].type == JV_NUM)
                printf("%-10s %s = %.10g\n", ne++ ? "" : "eval:", r.eval.keys[i], r.eval.items[i].num);
        const jv *m = jv_get(&r.eval, "metrics");
        for (int i = 0; m && m->type == JV_ARR && i < m->n; i++) {
            const char *name = jv_str(&m->items[i], "metric");
            double v;
            if (name && jv_num(&m->items[i], "value", &v)) printf("%-10s %s = %.10g\n", ne++ ? "" : "eval:", name, v);
        }
    }
    if (!ne) printf("%-10s %s\n", "eval:", r.eval_ok ? "(no numeric metrics)" : "-");
    int ni = 0;
    list_pngs(r.dir, "samples", &ni);
    list_pngs(r.dir, "outputs", &ni);
    if (!ni) printf("%-10s -\n", "images:");
    printf("%-10s %s\n", "command:", q(r.cmdline));
    run_info_free(&r);
    return 0;
}

/* ------------------------------------------------------------------ mf_run_brief (reports) */

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* mtime of a regular file in nanoseconds, -1 when it is not one */
static long long mtime_ns(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return -1;
    return (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
}

/* the newest eval.json of a run folder (malloc'ed path relative to nothing: dir + "/..."), or NULL;
 * equal times: the later stamp, then eval/ over the run's own */
static char *newest_eval(const char *dir) {
    char *best = NULL;
    long long best_t = -1;
    char *own = mf_xasprintf("%s/eval.json", dir);
    if ((best_t = mtime_ns(own)) >= 0) best = own;
    else free(own);
    char *sub = mf_xasprintf("%s/eval", dir);
    char **stamps = NULL;
    int n = is_dir_nolink(sub) ? list_dirs(sub, &stamps) : 0;
    for (int i = 0; i < n; i++) {
        char *p = mf_xasprintf("%s/%s/eval.json", sub, stamps[i]);
        long long t = mtime_ns(p);
        if (t >= 0 && t >= best_t) {
            free(best);
            best = p, best_t = t;
        } else free(p);
    }
    free_strs(stamps, n > 0 ? n : 0);
    free(sub);
    return best;
}

static void brief_add(mf_run_brief *b, const char *name, double v) {
    for (int i = 0; i < b->n_metrics; i++)
        if (strcmp(b->metric[i], name) == 0) { /* the last of duplicates wins, in the first's place */
            b->value[i] = v;
            return;
        }
    b->metric = mf_xrealloc(b->metric, sizeof(char *) * (size_t)(b->n_metrics + 1));
    b->value = mf_xrealloc(b->value, sizeof(double) * (size_t)(b->n_metrics + 1));
    b->metric[b->n_metrics] = mf_xstrdup(name);
    b->value[b->n_metrics++] = v;
}

void mf_run_brief_read(const char *dir, mf_run_brief *out) {
    memset(out, 0, sizeof *out);
    out->wall_s = NAN;
    run_info r;
    memset(&r, 0, sizeof r);
    r.dir = mf_xstrdup(dir);
    r.step = -1;
    r.loss = r.fid = r.t_first = r.t_last = NAN;
    char *sp = mf_xasprintf("%s/status.json", dir);
    out->status_found = file_exists(sp);
    free(sp);
    jv o;
    if (out->status_found && read_json_file(dir, "status.json", &o, 0) == 0) {
        r.state = dup_or_null(jv_str(&o, "state"));
        if (!r.state) warn("%s/status.json: no \"state\" string", dir);
        r.error = dup_or_null(jv_str(&o, "error"));
        r.status_time = dup_or_null(jv_str(&o, "time"));
        jv_free(&o);
    }
    if (r.state && strcmp(r.state, "running") == 0 && lock_is_free(dir)) r.stale = 1;
    if (read_json_file(dir, "manifest.json", &o, 0) == 0) {
        r.started = dup_or_null(jv_str(&o, "started"));
        jv_free(&o);
    }
    char *mp = mf_xasprintf("%s/metrics.jsonl", dir);
    if (file_exists(mp)) read_metrics(&r);
    free(mp);
    out->wall_s = wall_seconds(&r);
    out->state = r.state, r.state = NULL;
    out->error = r.error, r.error = NULL;
    out->stale = r.stale;
    out->eval_path = newest_eval(dir);
    if (out->eval_path) {
        /* read_json_file takes a folder and a name: split the path */
        char *d = mf_xstrdup(out->eval_path);
        char *slash = strrchr(d, '/');
        *slash = '\0';
        if (read_json_file(d, slash + 1, &o, 1) == 0) {
            const jv *m = jv_get(&o, "metrics");
            for (int i = 0; m && m->type == JV_ARR && i < m->n; i++) {
                const char *name = jv_str(&m->items[i], "metric");
                const jv *v = jv_get(&m->items[i], "value");
                if (name && v && (v->type == JV_NUM || v->type == JV_NULL))
                    brief_add(out, name, v->type == JV_NUM ? v->num : NAN);
            }
            double f;
            if (jv_num(&o, "fid", &f)) brief_add(out, "fid", f);
            jv_free(&o);
        }
        free(d);
    }
    run_info_free(&r);
}

void mf_run_brief_free(mf_run_brief *b) {
    if (!b) return;
    for (int i = 0; i < b->n_metrics; i++) free(b->metric[i]);
    free(b->metric), free(b->value), free(b->state), free(b->error), free(b->eval_path);
    memset(b, 0, sizeof *b);
}
