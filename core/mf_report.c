/* mf_report.c - `mfpipe report DIR` and the report at the end of every run and sweep: DIR/report.html,
 * one self-contained page (docs/report.md). Reads the folder as `mfpipe ls` does (mf_run_brief), the
 * JSON files through the YAML parser (JSON is YAML's flow style), draws the curves with mf_svg and
 * embeds every image as a base64 data: URI. Nothing read from a file reaches the page unescaped. */
#include "mf_report.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mf_config.h"
#include "mf_error.h"
#include "mf_io.h"
#include "mf_json.h"
#include "mf_log.h"
#include "mf_plot.h"
#include "mf_runs.h"
#include "mf_sweep.h"
#include "mf_svg.h"

const char *const mf_report_help =
    "usage: mfpipe report RESULTS_DIR [--no-floor] [-q]\n"
    "\n"
    "Writes RESULTS_DIR/report.html, one self-contained page (images embedded, no network) of a run\n"
    "folder or a sweep folder (docs/report.md). A run: configuration, manifest, loss and learning-rate\n"
    "curves, the sample grids over training, the final grid and trajectory, the eval metrics beside\n"
    "the floor at the same N (N training images against the test set; computed once per data set,\n"
    "N and feature network and cached in eval's cache folder, data/cache/), FID against NFE where\n"
    "sample/eval folders (mfpipe sample RUN; mfpipe eval RUN/sample/<stamp>) or a fid_vs_nfe CSV\n"
    "(scripts/fid_vs_nfe.sh) are under the run. A sweep: summary.csv as a table, its plots, and each\n"
    "point's final grid linked to the point's own report.html. Every run and sweep writes it at its end.\n"
    "  --no-floor  use a cached floor only, never compute one\n"
    "  -q          no progress notes\n"
    "exit status: 0 written, 1 not a run or sweep folder (or the page could not be written), 2 bad command line\n";

enum { MAX_STRIP = 32, MAX_IMAGE_BYTES = 32 << 20, MAX_TEXT_BYTES = 4 << 20 };

/* ---- text, files, encodings ------------------------------------------------------------------ */

static void esc(mf_buf *b, const char *s) { mf_svg_escape(b, s ? s : ""); }

/* multi-line text for <pre>: each line escaped, line ends kept */
static void esc_lines(mf_buf *b, const char *s) {
    mf_buf_puts(b, "");
    while (*s) {
        const char *e = strchr(s, '\n');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        char *line = mf_xmalloc(n + 1);
        memcpy(line, s, n);
        line[n] = '\0';
        if (n && line[n - 1] == '\r') line[n - 1] = '\0';
        mf_svg_escape(b, line);
        free(line);
        mf_buf_puts(b, "\n");
        s += n + (e ? 1 : 0);
    }
}

static void b64(mf_buf *b, const uint8_t *d, size_t n) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    mf_buf_reserve(b, (n + 2) / 3 * 4);
    char *o = b->s + b->len;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];
        *o++ = t[v >> 18], *o++ = t[(v >> 12) & 63], *o++ = t[(v >> 6) & 63], *o++ = t[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < n ? (uint32_t)d[i + 1] << 8 : 0);
        *o++ = t[v >> 18], *o++ = t[(v >> 12) & 63];
        *o++ = i + 1 < n ? t[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    *o = '\0';
    b->len = (size_t)(o - b->s);
}

static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}
static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* a whole file, NUL-terminated; NULL (errno set) when missing, unreadable or over max bytes */
static char *read_all(const char *path, size_t max, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > max) {
        fclose(f);
        errno = EFBIG;
        return NULL;
    }
    size_t n = (size_t)st.st_size;
    char *s = mf_xmalloc(n + 1);
    size_t got = fread(s, 1, n, f);
    fclose(f);
    if (got != n) {
        free(s);
        errno = EIO;
        return NULL;
    }
    s[n] = '\0';
    if (len) *len = n;
    return s;
}

static void note(mf_buf *b, const char *fmt, ...) MF_PRINTF(2, 3);
static void note(mf_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0) abort();
    va_end(ap);
    mf_buf_puts(b, "<p class=\"note\">");
    esc(b, s);
    mf_buf_puts(b, "</p>\n");
    free(s);
}

/* a JSON (or YAML) file as a tree; NULL when missing (quiet) or corrupt (warned) */
static mf_node *read_tree(const char *path) {
    size_t len;
    char *s = read_all(path, MAX_TEXT_BYTES, &len);
    if (!s) {
        if (errno != ENOENT) mf_warn("report: %s: %s", path, strerror(errno));
        return NULL;
    }
    mf_node *n = strlen(s) == len ? mf_cfg_parse_string(s, path) : NULL;
    if (!n) {
        mf_warn("report: %s: not readable: %s", path, mf_last_error());
        mf_error_clear();
    } else if (n->kind != MF_NODE_MAP) {
        mf_warn("report: %s: not a JSON object", path);
        mf_node_free(n);
        n = NULL;
    }
    free(s);
    return n;
}

static const char *tree_str(const mf_node *root, const char *dotted) {
    const mf_node *n = root ? mf_cfg_find(root, dotted) : NULL;
    return n && n->kind == MF_NODE_SCALAR ? n->value : NULL;
}
static int tree_num(const mf_node *root, const char *dotted, double *v) {
    const char *s = tree_str(root, dotted);
    if (!s || !*s) return 0;
    char *end;
    *v = strtod(s, &end);
    return *end == '\0';
}

/* ---- the page ---------------------------------------------------------------------------------- */

typedef struct page {
    mf_buf b;
    int n_img, n_svg;
} page;

static const char k_css[] =
    "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:0 auto;"
    "padding:10px;max-width:1100px;line-height:1.4;color:#222;background:#fff}"
    "h1{font-size:1.4em;word-break:break-word;margin:.3em 0}"
    "h2{font-size:1.15em;border-bottom:1px solid #ddd;padding-bottom:2px;margin-top:1.6em}"
    "nav{display:flex;flex-wrap:wrap;gap:.3em .9em}nav a{white-space:nowrap}"
    ".scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;max-width:100%}"
    "table{border-collapse:collapse;font-size:.9em}"
    "td,th{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top;white-space:nowrap}"
    "th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}"
    "td.wrap{white-space:normal;word-break:break-word;overflow-wrap:anywhere;min-width:10em}"
    "table.kv{width:100%}table.kv th{white-space:normal;width:30%;min-width:6em}"
    "pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:.8em;max-width:100%;box-sizing:border-box}"
    "img{max-width:100%;height:auto;image-rendering:pixelated;background:#eee}"
    "svg{max-width:100%;height:auto;display:block}"
    ".strip{display:flex;gap:8px;overflow-x:auto;padding-bottom:6px}"
    ".strip figure{flex:0 0 auto;max-width:85vw}"
    "figure{margin:0 0 10px 0}figcaption{font-size:.85em;color:#555;overflow-wrap:anywhere}"
    ".cards{display:flex;flex-wrap:wrap;gap:12px}.cards figure{flex:1 1 260px;max-width:100%}"
    ".foot{color:#777;font-size:.8em}.note{color:#8a5a00}.bad{color:#b00020}img.broken{outline:3px solid #b00020}"
    "code{font-size:.9em;word-break:break-all}p{overflow-wrap:anywhere}";

/* marks images that did not decode, records their natural sizes (data-nw, data-nh) and the counts on
 * <body> (data-images, data-broken, data-svgs, data-scroll-width: the page's width, data-view-width: the
 * window's, data-checked); the page needs none of it */
static const char k_script[] =
    "<script>window.addEventListener('load',function(){var im=document.images,bad=0,i;"
    "for(i=0;i<im.length;i++){var g=im[i];g.setAttribute('data-nw',g.naturalWidth);"
    "g.setAttribute('data-nh',g.naturalHeight);if(!g.complete||!g.naturalWidth){bad++;g.className+=' broken';}}"
    "var b=document.body;b.setAttribute('data-images',im.length);b.setAttribute('data-broken',bad);"
    "b.setAttribute('data-svgs',document.getElementsByTagName('svg').length);"
    "b.setAttribute('data-scroll-width',document.documentElement.scrollWidth);"
    "b.setAttribute('data-view-width',window.innerWidth);b.setAttribute('data-checked','1');"
    "var p=document.getElementById('selfcheck');if(p&&bad){p.textContent=bad+' image(s) could not be shown';"
    "p.className='bad';}});</script>\n";

static void page_begin(page *p, const char *title) {
    mf_buf_puts(&p->b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                       "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                       "<meta name=\"generator\" content=\"mfpipe report\">\n<title>");
    esc(&p->b, title);
    mf_buf_printf(&p->b, "</title>\n<style>%s</style>\n</head>\n<body>\n", k_css);
}

static void page_end(page *p) {
    time_t now = time(NULL);
    struct tm tm;
    char when[64];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
    mf_buf_printf(&p->b, "<p id=\"selfcheck\"></p>\n<footer><p class=\"foot\">written by mfpipe report, %s</p></footer>\n%s"
                         "</body>\n</html>\n", when, k_script);
}

static void section(page *p, const char *id, const char *title) {
    mf_buf_printf(&p->b, "<section id=\"%s\">\n<h2>", id);
    esc(&p->b, title);
    mf_buf_puts(&p->b, "</h2>\n");
}

static uint32_t be32(const uint8_t *d) { return (uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3]; }

/* <img> of a PNG or SVG file as a data: URI, with its size; 0, or -1 with a note on the page */
static int emit_img(page *p, const char *path, const char *alt) {
    size_t n;
    uint8_t *d = (uint8_t *)read_all(path, MAX_IMAGE_BYTES, &n);
    if (!d) {
        note(&p->b, "%s: %s", path, strerror(errno));
        return -1;
    }
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    size_t l = strlen(path);
    int svg = l > 4 && strcmp(path + l - 4, ".svg") == 0;
    unsigned w = 0, h = 0;
    if (!svg) {
        if (n < 24 || memcmp(d, sig, 8) != 0 || memcmp(d + 12, "IHDR", 4) != 0) {
            note(&p->b, "%s: not a PNG file", path);
            free(d);
            return -1;
        }
        w = be32(d + 16), h = be32(d + 20);
    }
    mf_buf_puts(&p->b, "<img alt=\"");
    esc(&p->b, alt);
    mf_buf_puts(&p->b, "\"");
    if (w && h && w < 100000 && h < 100000) mf_buf_printf(&p->b, " width=\"%u\" height=\"%u\"", w, h);
    mf_buf_printf(&p->b, " src=\"data:image/%s;base64,", svg ? "svg+xml" : "png");
    b64(&p->b, d, n);
    mf_buf_puts(&p->b, "\">");
    free(d);
    p->n_img++;
    return 0;
}

static void figure(page *p, const char *path, const char *alt, const char *caption) {
    mf_buf_puts(&p->b, "<figure>");
    emit_img(p, path, alt);
    mf_buf_puts(&p->b, "<figcaption>");
    esc(&p->b, caption);
    mf_buf_puts(&p->b, "</figcaption></figure>\n");
}

/* an mf_svg chart inline (HTML needs no namespace declaration: none is written) */
static void emit_chart(page *p, const mf_svg_chart *c) {
    mf_buf s = {0};
    mf_svg_render(c, &s);
    const char *ns = " xmlns=\"http://www.w3.org/2000/svg\"";
    char *at = s.s ? strstr(s.s, ns) : NULL;
    if (at) memmove(at, at + strlen(ns), strlen(at + strlen(ns)) + 1);
    mf_buf_puts(&p->b, "<div class=\"scroll\">");
    mf_buf_puts(&p->b, s.s ? s.s : "");
    mf_buf_puts(&p->b, "</div>\n");
    mf_buf_free(&s);
    p->n_svg++;
}

static void num_cell(mf_buf *b, double v) {
    if (isnan(v)) mf_buf_puts(b, "<td class=\"num\">-</td>");
    else mf_buf_printf(b, "<td class=\"num\">%.6g</td>", v);
}

static void kv_row(mf_buf *b, const char *k, const char *v) {
    mf_buf_puts(b, "<tr><th>");
    esc(b, k);
    mf_buf_puts(b, "</th><td class=\"wrap\">");
    esc(b, v ? v : "?");
    mf_buf_puts(b, "</td></tr>\n");
}

/* every scalar of a tree as dotted-key rows (sequences of scalars on one row) */
static void tree_rows(mf_buf *b, const mf_node *n, const char *prefix) {
    int i = 0;
    for (const mf_node *c = n->first; c; c = c->next, i++) {
        char key[512];
        if (n->kind == MF_NODE_SEQ) snprintf(key, sizeof key, "%s[%d]", prefix, i);
        else snprintf(key, sizeof key, "%s%s%s", prefix, *prefix ? "." : "", c->key ? c->key : "?");
        if (c->kind == MF_NODE_SCALAR || c->kind == MF_NODE_NULL) kv_row(b, key, c->kind == MF_NODE_NULL ? "null" : c->value);
        else if (c->kind == MF_NODE_SEQ && c->first && c->first->kind == MF_NODE_SCALAR && !c->first->first) {
            mf_buf v = {0};
            mf_buf_puts(&v, "[");
            for (const mf_node *x = c->first; x; x = x->next)
                mf_buf_printf(&v, "%s%s", x == c->first ? "" : ", ", x->value ? x->value : "null");
            mf_buf_puts(&v, "]");
            kv_row(b, key, v.s);
            mf_buf_free(&v);
        } else tree_rows(b, c, key);
    }
}

/* ---- metrics.jsonl ---------------------------------------------------------------------------- */

/* the number after "key": in a compact JSON line (mf_json's output); 0 when absent */
static int line_num(const char *line, const char *end, const char *key, double *v) {
    char pat[80];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    size_t pl = strlen(pat);
    for (const char *s = line; s + pl <= end; s++) {
        s = memchr(s, '"', (size_t)(end - s));
        if (!s || s + pl > end) return 0;
        if (memcmp(s, pat, pl) == 0) {
            char *e;
            double d = strtod(s + pl, &e);
            if (e == s + pl || e > end) return 0;
            *v = d;
            return 1;
        }
    }
    return 0;
}
static int line_has(const char *line, const char *end, const char *pat) {
    size_t pl = strlen(pat);
    for (const char *s = line; s + pl <= end; s++)
        if (*s == pat[0] && memcmp(s, pat, pl) == 0) return 1;
    return 0;
}

typedef struct curves {
    mf_svg_chart loss, lr;
    int n;
    double last_step, last_loss;
} curves;

static void read_curves(const char *dir, curves *c) {
    char *path = mf_xasprintf("%s/metrics.jsonl", dir);
    size_t len = 0;
    char *s = read_all(path, (size_t)1 << 30, &len);
    if (!s && errno != ENOENT) mf_warn("report: %s: %s", path, strerror(errno));
    free(path);
    int sl = mf_svg_add_series(&c->loss, ""), sr = mf_svg_add_series(&c->lr, "");
    c->last_step = c->last_loss = NAN;
    for (size_t pos = 0; s && pos < len;) {
        const char *a = s + pos, *e = memchr(a, '\n', len - pos);
        if (!e) e = s + len;
        double step, v;
        if (line_has(a, e, "\"stage\":\"train\"") && line_num(a, e, "step", &step) && !line_has(a, e, "\"event\"")) {
            if (!isnan(c->last_step) && step <= c->last_step) { /* a resume from an earlier step: a new line */
                mf_svg_add_point(&c->loss, sl, NAN, NAN);
                mf_svg_add_point(&c->lr, sr, NAN, NAN);
            }
            if (line_num(a, e, "loss", &v)) {
                mf_svg_add_point(&c->loss, sl, step, v);
                c->n++;
                c->last_step = step, c->last_loss = v;
            }
            if (line_num(a, e, "lr", &v)) mf_svg_add_point(&c->lr, sr, step, v);
        }
        pos = (size_t)(e - s) + 1;
    }
    free(s);
    /* losses over more than two decades (MeanFlow's adaptive weighting, early spikes): log y */
    double lo = INFINITY, hi = 0;
    const mf_svg_series *ls = &c->loss.series[sl];
    for (size_t i = 0; i < ls->n; i++)
        if (isfinite(ls->y[i])) lo = fmin(lo, ls->y[i]), hi = fmax(hi, ls->y[i]);
    c->loss.logy = lo > 0 && hi / lo > 100;
}

/* ---- the floor -------------------------------------------------------------------------------- */

typedef struct floor_info {
    mf_node *tree;    /* the floor's eval.json, or NULL */
    char *why;        /* why there is none (malloc'ed), or NULL */
    char *cmd;        /* the eval that computes it, or NULL */
    char *report_cmd; /* the report command that computes and caches it */
    char *path;       /* the cache file */
} floor_info;

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f) {
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static void sanitize(char *s) {
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '.' || *s == '-'))
            *s = '_';
}

/* run `mfpipe run CONFIG stages=[data,eval] eval.reference=true eval.n=N --out TMP -q`; 0 or -1 (mf_fail) */
static int spawn_floor(const char *config, const mf_node *cfg, long long n, const char *tmp, const char *logp) {
    char exe[4096];
    ssize_t el = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (el <= 0) return mf_fail("cannot find the mfpipe binary (/proc/self/exe): %s", strerror(errno));
    exe[el] = '\0';
    char nbuf[64];
    snprintf(nbuf, sizeof nbuf, "eval.n=%lld", n);
    char *argv[16];
    int a = 0;
    argv[a++] = exe, argv[a++] = "run", argv[a++] = (char *)config, argv[a++] = "stages=[data,eval]";
    argv[a++] = "eval.reference=true", argv[a++] = nbuf;
    if (mf_node_child(cfg, "hooks")) argv[a++] = "~hooks";
    argv[a++] = "--out", argv[a++] = (char *)tmp, argv[a++] = "-q", argv[a] = NULL;
    fflush(stdout), fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) return mf_fail("fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(logp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) dup2(fd, 1), dup2(fd, 2);
        if (nul >= 0) dup2(nul, 0);
        setenv("MFPIPE_REPORT", "0", 1);
        execv(exe, argv);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return mf_fail("waitpid: %s", strerror(errno));
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return 0;
    char *log = read_all(logp, 1 << 20, NULL), *last = NULL;
    for (char *t = log ? strtok(log, "\n") : NULL; t; t = strtok(NULL, "\n")) last = t;
    int rc = mf_fail("the reference eval %s%s%s", WIFEXITED(st) ? "failed" : "was killed", last ? ": " : "", last ? last : "");
    free(log);
    return rc;
}

/* the floor for the eval of eval_path (a folder's eval.json whose config.yaml is beside it) */
static void get_floor(const char *eval_path, const mf_node *ev, const mf_report_opts *o, floor_info *f) {
    memset(f, 0, sizeof *f);
    double n;
    const char *fnet = tree_str(ev, "feature_net");
    if (!tree_num(ev, "n", &n) || n < 2 || !fnet) {
        f->why = mf_xstrdup("eval.json does not say its N and feature network");
        return;
    }
    char *edir = mf_xstrdup(eval_path);
    *strrchr(edir, '/') = '\0';
    char *config = mf_xasprintf("%s/config.yaml", edir);
    mf_node *cfg = read_tree(config);
    const char *dataset = tree_str(cfg, "data.dataset"), *root = tree_str(cfg, "data.root");
    const char *cache = tree_str(cfg, "eval.cache");
    if (!cache) cache = "data/cache";
    f->cmd = mf_xasprintf("mfpipe run %s stages=[data,eval] eval.reference=true eval.n=%lld", config, (long long)n);
    f->report_cmd = mf_xasprintf("mfpipe report %s", edir);
    if (!cfg || !mf_node_child(cfg, "data") || !mf_node_child(cfg, "eval")) {
        f->why = mf_xasprintf("%s has no data and eval sections", config);
        goto done;
    }
    /* the key: data set (name and where its files are), N, feature network (its name and hash) */
    char *root_abs = root ? realpath(root, NULL) : NULL;
    char *id = mf_xasprintf("%s\n%s\n%s", dataset ? dataset : "", root_abs ? root_abs : (root ? root : ""),
                            tree_str(cfg, "data.kind") ? tree_str(cfg, "data.kind") : "");
    char hex[65];
    mf_sha256_hex(id, strlen(id), hex);
    free(id);
    char *base = mf_xasprintf("floor_%s_n%lld_%s_%.8s", dataset ? dataset : "data", (long long)n, fnet, hex);
    sanitize(base);
    f->path = mf_xasprintf("%s/%s.json", cache, base);
    if (is_file(f->path)) {
        f->tree = read_tree(f->path);
        if (!f->tree) f->why = mf_xasprintf("%s: not readable", f->path);
    } else if (root && !root_abs) {
        f->why = mf_xasprintf("the data set is not available (%s: %s)", root, strerror(errno));
    } else if (!o->floor) {
        f->why = mf_xstrdup("not computed (cached floors only)");
    } else {
        char *tmp = mf_xasprintf("%s/%s.tmp%ld", cache, base, (long)getpid());
        char *logp = mf_xasprintf("%s.log", tmp);
        if (!o->quiet) mf_info("report: computing the floor (%lld training images against the test set) into %s", (long long)n, f->path);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (mf_mkdirs(cache) != 0 || spawn_floor(config, cfg, (long long)n, tmp, logp) != 0) {
            f->why = mf_xasprintf("not computed: %s", mf_last_error());
            mf_warn("report: floor %s", f->why);
            mf_error_clear();
        } else {
            char *ej = mf_xasprintf("%s/eval.json", tmp);
            size_t len;
            char *s = read_all(ej, MAX_TEXT_BYTES, &len);
            if (!s || mf_write_file_atomic(f->path, s, len) != 0) {
                f->why = mf_xasprintf("not computed: %s", s ? mf_last_error() : "the reference eval wrote no eval.json");
                mf_error_clear();
            } else {
                f->tree = read_tree(f->path);
                clock_gettime(CLOCK_MONOTONIC, &t1);
                if (!o->quiet)
                    mf_info("report: floor cached in %.1f s", (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
            }
            free(s);
            free(ej);
            unlink(logp);
        }
        if (!f->tree) {
            char *kept = mf_xasprintf("%s (see %s)", f->why ? f->why : "not computed", logp);
            free(f->why);
            f->why = kept;
        }
        if (is_dir(tmp)) nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        free(tmp);
        free(logp);
    }
    free(base);
    free(root_abs);
done:
    mf_node_free(cfg);
    free(config);
    free(edir);
}

static void floor_free(floor_info *f) {
    mf_node_free(f->tree);
    free(f->why), free(f->cmd), free(f->report_cmd), free(f->path);
}

/* the value of metric `name` in an eval.json tree (metrics[] entries, then a top-level number) */
static int eval_metric(const mf_node *ev, const char *name, double *v) {
    const mf_node *m = ev ? mf_node_child(ev, "metrics") : NULL;
    for (const mf_node *it = m ? m->first : NULL; it; it = it->next) {
        const char *k = tree_str(it, "metric");
        if (k && strcmp(k, name) == 0) return tree_num(it, "value", v);
    }
    return 0;
}

static void eval_section(page *p, const char *run_dir, const mf_run_brief *br, const mf_report_opts *o) {
    mf_buf *b = &p->b;
    section(p, "eval", "Evaluation");
    if (!br->eval_path) {
        note(b, "no eval.json (run the eval stage, or: mfpipe eval %s)", run_dir);
        mf_buf_puts(b, "</section>\n");
        return;
    }
    mf_node *ev = read_tree(br->eval_path);
    mf_buf_puts(b, "<p>");
    esc(b, br->eval_path);
    double n = NAN;
    tree_num(ev, "n", &n);
    const char *fnet = tree_str(ev, "feature_net"), *ds = tree_str(ev, "dataset");
    mf_buf_printf(b, ": N = %.0f", n);
    if (fnet) mf_buf_puts(b, ", feature network "), esc(b, fnet);
    if (ds) mf_buf_puts(b, ", against "), esc(b, ds);
    mf_buf_puts(b, "</p>\n");
    floor_info f = {0};
    int is_ref = ev && mf_node_child(ev, "reference_train_n");
    if (is_ref) f.why = mf_xstrdup("this evaluation is itself the floor (eval.reference)");
    else if (ev) get_floor(br->eval_path, ev, o, &f);
    else f.why = mf_xstrdup("eval.json not readable");
    mf_buf_puts(b, "<div class=\"scroll\"><table id=\"eval-table\"><tr><th>metric</th><th>value</th><th>N</th>"
                   "<th>floor (N real training images)</th></tr>\n");
    const mf_node *m = ev ? mf_node_child(ev, "metrics") : NULL;
    for (const mf_node *it = m ? m->first : NULL; it; it = it->next) {
        const char *name = tree_str(it, "metric");
        const mf_node *val = mf_node_child(it, "value");
        if (!name || !val) continue;
        mf_buf_puts(b, "<tr><td>");
        esc(b, name);
        mf_buf_puts(b, "</td>");
        double v, mn = NAN, fv;
        if (val->kind == MF_NODE_SCALAR && tree_num(it, "value", &v)) num_cell(b, v);
        else if (val->kind == MF_NODE_SEQ) {
            mf_buf_puts(b, "<td class=\"wrap\">[");
            for (const mf_node *x = val->first; x; x = x->next) {
                if (x != val->first) mf_buf_puts(b, ", ");
                esc(b, x->value ? x->value : "?");
            }
            mf_buf_puts(b, "]</td>");
        } else mf_buf_puts(b, "<td>-</td>");
        tree_num(it, "n", &mn);
        num_cell(b, mn);
        if (f.tree && eval_metric(f.tree, name, &fv)) num_cell(b, fv);
        else mf_buf_puts(b, "<td>-</td>");
        mf_buf_puts(b, "</tr>\n");
    }
    mf_buf_puts(b, "</table></div>\n");
    if (f.tree) {
        mf_buf_puts(b, "<p class=\"floor\">floor: ");
        esc(b, f.path);
        mf_buf_puts(b, " (N training images against the same test set, same feature network)</p>\n");
    } else {
        mf_buf_puts(b, "<p class=\"note floor\">floor: not computed");
        if (f.why) mf_buf_puts(b, " &mdash; "), esc(b, f.why);
        if (f.cmd && !is_ref) {
            mf_buf_puts(b, "; to compute it (with the data set in place): <code>");
            esc(b, f.report_cmd);
            mf_buf_puts(b, "</code>, which runs <code>");
            esc(b, f.cmd);
            mf_buf_puts(b, "</code> and caches its eval.json");
        }
        mf_buf_puts(b, "</p>\n");
    }
    char *nt = mf_xasprintf("%s", br->eval_path);
    *strrchr(nt, '/') = '\0';
    char *near = mf_xasprintf("%s/eval/nearest_train.png", nt);
    if (is_file(near)) figure(p, near, "nearest training images", "samples (top) above their nearest training images (bottom)");
    free(near);
    free(nt);
    floor_free(&f);
    mf_node_free(ev);
    mf_buf_puts(b, "</section>\n");
}

/* ---- FID against NFE ---------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* sorted names in dir (no dot entries) that satisfy want(full path); count, or 0 */
static int list_dir(const char *dir, int (*want)(const char *), char ***out) {
    *out = NULL;
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, "latest") == 0) continue;
        char *full = mf_xasprintf("%s/%s", dir, e->d_name);
        int ok = want(full);
        free(full);
        if (!ok) continue;
        if (n == cap) *out = mf_xrealloc(*out, sizeof(char *) * (size_t)(cap = cap ? cap * 2 : 16));
        (*out)[n++] = mf_xstrdup(e->d_name);
    }
    closedir(d);
    if (n) qsort(*out, (size_t)n, sizeof **out, cmp_str);
    return n;
}
static void free_list(char **v, int n) {
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* the sampler and mean NFE of a folder's sample record (metrics.jsonl) */
static int sample_record(const char *dir, char *sampler, size_t cap, double *nfe) {
    char *path = mf_xasprintf("%s/metrics.jsonl", dir);
    size_t len;
    char *s = read_all(path, (size_t)64 << 20, &len);
    free(path);
    int found = 0;
    for (size_t pos = 0; s && pos < len;) {
        const char *a = s + pos, *e = memchr(a, '\n', len - pos);
        if (!e) e = s + len;
        double v;
        const char *sm = strstr(a, "\"sampler\":\"");
        if (line_has(a, e, "\"stage\":\"sample\"") && sm && sm < e && line_num(a, e, "nfe_mean", &v)) {
            sm += 11;
            size_t k = 0;
            while (sm + k < e && sm[k] != '"' && k + 1 < cap) k++;
            memcpy(sampler, sm, k);
            sampler[k] = '\0';
            *nfe = v;
            found = 1;
        }
        pos = (size_t)(e - s) + 1;
    }
    free(s);
    return found;
}

static int fid_of(const char *dir, double *fid, double *n) {
    mf_run_brief br;
    mf_run_brief_read(dir, &br);
    int ok = 0;
    for (int i = 0; i < br.n_metrics; i++)
        if (strncmp(br.metric[i], "fid", 3) == 0 && !isnan(br.value[i])) {
            *fid = br.value[i];
            ok = 1;
            break;
        }
    *n = NAN;
    if (ok) {
        mf_node *ev = read_tree(br.eval_path);
        tree_num(ev, "n", n);
        mf_node_free(ev);
    }
    mf_run_brief_free(&br);
    return ok;
}

static int want_dir(const char *p) { return is_dir(p); }
static int want_csv(const char *p) {
    const char *base = strrchr(p, '/');
    base = base ? base + 1 : p;
    size_t l = strlen(base);
    return is_file(p) && l > 4 && strcmp(base + l - 4, ".csv") == 0 && strstr(base, "fid_vs_nfe") != NULL;
}

static void add_csv(mf_svg_chart *c, const char *path, int *points) {
    mf_table t;
    if (mf_table_read(path, &t) != 0) {
        mf_warn("report: %s", mf_last_error());
        mf_error_clear();
        return;
    }
    int cx = mf_table_column(&t, "nfe"), cy = mf_table_column(&t, "fid");
    int cs = -1;
    for (int i = 0; i < t.ncol; i++)
        if (strcmp(t.head[i], "series") == 0) cs = i;
    mf_error_clear();
    if (cx >= 0 && cy >= 0)
        for (int r = 0; r < t.nrow; r++) {
            double x, y;
            if (mf_table_number(&t, r, cx, &x) != 0 || mf_table_number(&t, r, cy, &y) != 0) {
                mf_error_clear();
                continue;
            }
            const char *name = cs >= 0 ? mf_table_cell(&t, r, cs) : "fid_vs_nfe";
            int s = mf_svg_find_series(c, name);
            if (s < 0) s = mf_svg_add_series(c, name);
            mf_svg_add_point(c, s, x, y);
            (*points)++;
        }
    mf_table_free(&t);
}

/* add_csv for every fid_vs_nfe CSV file in folder d; returns how many */
static int add_csvs_in(mf_svg_chart *c, const char *d, int *points) {
    char **csv;
    const int nc = list_dir(d, want_csv, &csv);
    for (int i = 0; i < nc; i++) {
        char *pth = mf_xasprintf("%s/%s", d, csv[i]);
        add_csv(c, pth, points);
        free(pth);
    }
    free_list(csv, nc);
    return nc;
}

typedef struct nfe_pt {
    char sampler[64];
    double nfe, fid, n;
} nfe_pt;

static int cmp_pt(const void *a, const void *b) {
    const nfe_pt *x = a, *y = b;
    int c = strcmp(x->sampler, y->sampler);
    return c ? c : (x->nfe > y->nfe) - (x->nfe < y->nfe);
}

static void nfe_section(page *p, const char *dir) {
    mf_buf *b = &p->b;
    section(p, "nfe", "FID against NFE");
    mf_svg_chart c;
    mf_svg_chart_init(&c, "FID against network evaluations per sample", "NFE", "FID");
    c.logx = 1;
    int points = 0, sources = 0;
    /* 1. the run's own samples and every RUN/sample/<stamp>/ that has an eval */
    nfe_pt *pts = NULL;
    int np = 0;
    char **subs;
    int ns = 0;
    char *sd = mf_xasprintf("%s/sample", dir);
    ns = list_dir(sd, want_dir, &subs);
    for (int i = -1; i < ns; i++) {
        char *d = i < 0 ? mf_xstrdup(dir) : mf_xasprintf("%s/%s", sd, subs[i]);
        nfe_pt q;
        if (sample_record(d, q.sampler, sizeof q.sampler, &q.nfe) && fid_of(d, &q.fid, &q.n)) {
            pts = mf_xrealloc(pts, sizeof *pts * (size_t)(np + 1));
            pts[np++] = q;
        }
        free(d);
    }
    free_list(subs, ns);
    free(sd);
    if (np > 1) {
        qsort(pts, (size_t)np, sizeof *pts, cmp_pt);
        for (int i = 0; i < np; i++) {
            char name[96];
            snprintf(name, sizeof name, "%s (N=%.0f)", pts[i].sampler, pts[i].n);
            int s = mf_svg_find_series(&c, name);
            if (s < 0) s = mf_svg_add_series(&c, name);
            mf_svg_add_point(&c, s, pts[i].nfe, pts[i].fid);
            points++;
        }
        sources++;
    }
    free(pts);
    /* 2. fid_vs_nfe CSV files (scripts/fid_vs_nfe.sh) in the run folder or one level below */
    sources += add_csvs_in(&c, dir, &points);
    char **top;
    int nt = list_dir(dir, want_dir, &top);
    for (int i = 0; i < nt; i++) {
        if (strcmp(top[i], "checkpoints") == 0 || strcmp(top[i], "tb") == 0) continue;
        char *sub = mf_xasprintf("%s/%s", dir, top[i]);
        sources += add_csvs_in(&c, sub, &points);
        free(sub);
    }
    free_list(top, nt);
    if (points > 1) emit_chart(p, &c);
    else
        note(b, "not computed: give the run samples at several step counts and measure them (mfpipe sample %s --steps K; "
                "mfpipe eval %s/sample/<stamp>), or write %s/fid_vs_nfe.csv with scripts/fid_vs_nfe.sh --out %s/fid_vs_nfe "
                "--work %s/fid_vs_nfe %s:LABEL:SAMPLER:1,2,4,8",
             dir, dir, dir, dir, dir, dir);
    (void)sources;
    mf_svg_chart_free(&c);
    mf_buf_puts(b, "</section>\n");
}

/* ---- a run folder ----------------------------------------------------------------------------- */

static long long step_of(const char *name) { return strtoll(name + 5, NULL, 10); }
static int want_step_png(const char *p) {
    const char *base = strrchr(p, '/');
    base = base ? base + 1 : p;
    size_t l = strlen(base);
    return l > 9 && strncmp(base, "step_", 5) == 0 && strcmp(base + l - 4, ".png") == 0 && is_file(p);
}

static int report_run(const char *dir, const mf_report_opts *o, page *p) {
    mf_buf *b = &p->b;
    mf_run_brief br;
    mf_run_brief_read(dir, &br);
    char *mpath = mf_xasprintf("%s/manifest.json", dir), *cpath = mf_xasprintf("%s/config.yaml", dir);
    mf_node *man = read_tree(mpath);
    size_t clen = 0;
    char *ctext = read_all(cpath, MAX_TEXT_BYTES, &clen);
    mf_node *cfg = ctext && strlen(ctext) == clen ? mf_cfg_parse_string(ctext, cpath) : NULL;
    if (ctext && !cfg) mf_warn("report: %s: %s", cpath, mf_last_error()), mf_error_clear();
    const char *name = tree_str(man, "name");
    if (!name) name = tree_str(cfg, "name");
    char *abs = realpath(dir, NULL);
    const char *stamp = abs && strrchr(abs, '/') ? strrchr(abs, '/') + 1 : dir;
    char *title = mf_xasprintf("%s %s", name ? name : "run", stamp);
    page_begin(p, title);
    mf_buf_puts(b, "<header><h1>");
    esc(b, title);
    mf_buf_puts(b, "</h1>\n");
    const char *desc = tree_str(cfg, "description");
    if (desc && *desc) mf_buf_puts(b, "<p class=\"description\">"), esc(b, desc), mf_buf_puts(b, "</p>\n");
    mf_buf_puts(b, "<nav><a href=\"#summary\">summary</a><a href=\"#curves\">curves</a><a href=\"#samples\">samples</a>"
                   "<a href=\"#final\">final</a><a href=\"#eval\">eval</a><a href=\"#nfe\">FID/NFE</a>"
                   "<a href=\"#config\">config</a><a href=\"#manifest\">manifest</a></nav></header>\n");

    /* summary */
    curves cv;
    mf_svg_chart_init(&cv.loss, "training loss", "step", "loss");
    mf_svg_chart_init(&cv.lr, "learning rate", "step", "lr");
    cv.n = 0;
    read_curves(dir, &cv);
    section(p, "summary", "Summary");
    mf_buf_puts(b, "<div class=\"scroll\"><table class=\"kv\">\n");
    kv_row(b, "folder", abs ? abs : dir);
    const char *state = br.state ? (br.stale ? "stale (running, but no process holds the lock)" : br.state) : "?";
    mf_buf_puts(b, "<tr><th>status</th><td class=\"wrap\"><span class=\"");
    mf_buf_puts(b, br.state && strcmp(br.state, "finished") == 0 ? "ok" : "bad");
    mf_buf_puts(b, "\" id=\"status\">");
    esc(b, state);
    mf_buf_puts(b, "</span></td></tr>\n");
    if (br.error) kv_row(b, "error", br.error);
    kv_row(b, "started", tree_str(man, "started"));
    char tmp[128];
    if (!isnan(br.wall_s)) snprintf(tmp, sizeof tmp, "%.1f s", br.wall_s);
    else snprintf(tmp, sizeof tmp, "?");
    kv_row(b, "wall time", tmp);
    double total;
    if (!isnan(cv.last_step))
        snprintf(tmp, sizeof tmp, "%.0f%s", cv.last_step, "");
    else snprintf(tmp, sizeof tmp, "?");
    if (tree_num(cfg, "train.steps", &total)) snprintf(tmp + strlen(tmp), sizeof tmp - strlen(tmp), " / %.0f", total);
    kv_row(b, "steps (last logged / configured)", tmp);
    if (!isnan(cv.last_loss)) snprintf(tmp, sizeof tmp, "%.7g", cv.last_loss), kv_row(b, "last loss", tmp);
    kv_row(b, "objective", tree_str(cfg, "train.objective"));
    mf_buf be = {0};
    mf_buf_printf(&be, "%s%s%s%s%s", tree_str(man, "backend.kind") ? tree_str(man, "backend.kind") : tree_str(man, "engine") ? tree_str(man, "engine") : "?",
                  tree_str(man, "backend.precision") ? " " : "", tree_str(man, "backend.precision") ? tree_str(man, "backend.precision") : "",
                  tree_str(man, "backend.version") ? " " : "", tree_str(man, "backend.version") ? tree_str(man, "backend.version") : "");
    kv_row(b, "backend", be.s);
    mf_buf_free(&be);
    kv_row(b, "seed", tree_str(man, "seed") ? tree_str(man, "seed") : tree_str(cfg, "seed"));
    kv_row(b, "command", tree_str(man, "command_line"));
    mf_buf_puts(b, "</table></div>\n</section>\n");

    /* curves */
    section(p, "curves", "Training curves");
    if (cv.n > 0) {
        emit_chart(p, &cv.loss);
        emit_chart(p, &cv.lr);
    } else note(b, "no train records in metrics.jsonl");
    mf_svg_chart_free(&cv.loss);
    mf_svg_chart_free(&cv.lr);
    mf_buf_puts(b, "</section>\n");

    /* samples over training */
    section(p, "samples", "Samples during training");
    char *sdir = mf_xasprintf("%s/samples", dir);
    char **steps;
    int nsteps = list_dir(sdir, want_step_png, &steps);
    if (nsteps) {
        if (nsteps > MAX_STRIP) note(b, "%d of the %d grids, evenly spaced (always the last)", MAX_STRIP, nsteps);
        mf_buf_puts(b, "<div class=\"strip\">\n");
        int shown = nsteps > MAX_STRIP ? MAX_STRIP : nsteps, prev = -1;
        for (int k = 0; k < shown; k++) {
            int i = shown == nsteps ? k : (int)((long long)k * (nsteps - 1) / (shown - 1));
            if (i == prev) continue;
            prev = i;
            char *path = mf_xasprintf("%s/%s", sdir, steps[i]);
            char cap[64];
            snprintf(cap, sizeof cap, "step %lld", step_of(steps[i]));
            figure(p, path, cap, cap);
            free(path);
        }
        mf_buf_puts(b, "</div>\n");
    } else note(b, "no periodic sample grids (samples/step_*.png; train.sample_every)");
    free_list(steps, nsteps);
    mf_buf_puts(b, "</section>\n");

    /* final grid and trajectory */
    section(p, "final", "Final samples");
    char *grid = mf_xasprintf("%s/grid.png", sdir), *traj = mf_xasprintf("%s/trajectory.png", sdir);
    int nf = 0;
    mf_buf_puts(b, "<div class=\"cards\">\n");
    if (is_file(grid)) figure(p, grid, "final grid", "final grid (samples/grid.png)"), nf++;
    else {
        char *od = mf_xasprintf("%s/outputs", dir), **outs;
        int no = list_dir(od, is_file, &outs);
        for (int i = 0; i < no; i++) {
            size_t l = strlen(outs[i]);
            if (l < 5 || strcmp(outs[i] + l - 4, ".png") != 0) continue;
            char *pth = mf_xasprintf("%s/%s", od, outs[i]), *cap = mf_xasprintf("outputs/%s", outs[i]);
            figure(p, pth, cap, cap);
            free(pth), free(cap);
            nf++;
        }
        free_list(outs, no);
        free(od);
    }
    if (is_file(traj)) figure(p, traj, "trajectory", "trajectory: noise to image, left to right (samples/trajectory.png)"), nf++;
    mf_buf_puts(b, "</div>\n");
    if (!nf) note(b, "no final grid or trajectory");
    free(grid), free(traj), free(sdir);
    mf_buf_puts(b, "</section>\n");

    eval_section(p, dir, &br, o);
    nfe_section(p, dir);

    section(p, "config", "Configuration (config.yaml, resolved)");
    if (ctext) mf_buf_puts(b, "<pre>"), esc_lines(b, ctext), mf_buf_puts(b, "</pre>\n");
    else note(b, "%s: %s", cpath, "missing");
    mf_buf_puts(b, "</section>\n");
    section(p, "manifest", "Manifest (manifest.json)");
    if (man) mf_buf_puts(b, "<div class=\"scroll\"><table class=\"kv\">\n"), tree_rows(b, man, ""), mf_buf_puts(b, "</table></div>\n");
    else note(b, "%s: missing or not readable", mpath);
    mf_buf_puts(b, "</section>\n");
    page_end(p);

    free(title), free(abs), free(ctext), free(mpath), free(cpath);
    mf_node_free(cfg);
    mf_node_free(man);
    mf_run_brief_free(&br);
    return 0;
}

/* ---- a sweep folder --------------------------------------------------------------------------- */

static int want_plot(const char *p) {
    const char *base = strrchr(p, '/');
    base = base ? base + 1 : p;
    size_t l = strlen(base);
    return l > 9 && strncmp(base, "plot_", 5) == 0 && strcmp(base + l - 4, ".svg") == 0 && is_file(p);
}

static int report_sweep(const char *dir, page *p) {
    mf_buf *b = &p->b;
    mf_sweep s;
    if (mf_sweep_load(dir, &s) != 0) {
        mf_sweep_free(&s);
        return -1;
    }
    char *title = mf_xasprintf("sweep %s", s.name ? s.name : "?");
    page_begin(p, title);
    mf_buf_puts(b, "<header><h1>");
    esc(b, title);
    mf_buf_puts(b, "</h1>\n<nav><a href=\"#sweep\">sweep</a><a href=\"#summary\">summary</a><a href=\"#plots\">plots</a>"
                   "<a href=\"#points\">points</a></nav></header>\n");
    section(p, "sweep", "Sweep");
    mf_buf_puts(b, "<div class=\"scroll\"><table class=\"kv\">\n");
    char *abs = realpath(dir, NULL);
    kv_row(b, "folder", abs ? abs : dir);
    free(abs);
    kv_row(b, "experiment", s.experiment);
    if (s.sweep_file && *s.sweep_file) kv_row(b, "sweep file", s.sweep_file);
    kv_row(b, "created", s.created);
    kv_row(b, "method", s.method);
    kv_row(b, "metric", s.metric);
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%d", s.n_points);
    kv_row(b, "points", tmp);
    for (int i = 0; i < s.n_overrides; i++) kv_row(b, "fixed override", s.overrides[i]);
    for (int a = 0; a < s.n_axes; a++) {
        mf_buf v = {0};
        mf_buf_puts(&v, "");
        for (int k = 0; k < s.axes[a].n_values; k++) mf_buf_printf(&v, "%s%s", k ? ", " : "", s.axes[a].values[k]);
        char *key = mf_xasprintf("axis %s", s.axes[a].key);
        kv_row(b, key, v.s);
        free(key);
        mf_buf_free(&v);
    }
    mf_buf_puts(b, "</table></div>\n</section>\n");

    section(p, "summary", "Summary (summary.csv)");
    char *csv = mf_xasprintf("%s/summary.csv", dir);
    mf_table t;
    if (mf_table_read(csv, &t) == 0) {
        mf_buf_puts(b, "<div class=\"scroll\"><table id=\"summary-table\"><tr>");
        for (int c = 0; c < t.ncol; c++) mf_buf_puts(b, "<th>"), esc(b, t.head[c]), mf_buf_puts(b, "</th>");
        mf_buf_puts(b, "</tr>\n");
        for (int r = 0; r < t.nrow; r++) {
            mf_buf_puts(b, "<tr>");
            for (int c = 0; c < t.ncol; c++) {
                const char *v = mf_table_cell(&t, r, c);
                char *end;
                strtod(v, &end);
                mf_buf_puts(b, *v && *end == '\0' ? "<td class=\"num\">" : "<td>");
                esc(b, v);
                mf_buf_puts(b, "</td>");
            }
            mf_buf_puts(b, "</tr>\n");
        }
        mf_buf_puts(b, "</table></div>\n");
        mf_table_free(&t);
    } else {
        note(b, "%s", mf_last_error());
        mf_error_clear();
    }
    free(csv);
    char *md = mf_xasprintf("%s/summary.md", dir);
    size_t mdl;
    char *mdt = read_all(md, MAX_TEXT_BYTES, &mdl);
    if (mdt) mf_buf_puts(b, "<details><summary>summary.md</summary><pre>"), esc_lines(b, mdt), mf_buf_puts(b, "</pre></details>\n");
    free(mdt), free(md);
    mf_buf_puts(b, "</section>\n");

    section(p, "plots", "Plots");
    char **plots;
    int npl = list_dir(dir, want_plot, &plots);
    mf_buf_puts(b, "<div class=\"cards\">\n");
    for (int i = 0; i < npl; i++) {
        char *pth = mf_xasprintf("%s/%s", dir, plots[i]);
        figure(p, pth, plots[i], plots[i]);
        free(pth);
    }
    mf_buf_puts(b, "</div>\n");
    if (!npl) note(b, "no plot_*.svg (the sweep's metric against each swept key)");
    free_list(plots, npl);
    mf_buf_puts(b, "</section>\n");

    section(p, "points", "Points");
    mf_buf_puts(b, "<div class=\"cards\">\n");
    for (int i = 0; i < s.n_points; i++) {
        const mf_sweep_point *pt = &s.points[i];
        mf_run_brief br;
        mf_run_brief_read(pt->path, &br);
        mf_buf printf_axes = {0};
        mf_buf_puts(&printf_axes, "");
        for (int a = 0; a < s.n_axes; a++)
            if (pt->axis_values[a]) mf_buf_printf(&printf_axes, "%s%s=%s", printf_axes.len ? " " : "", s.axes[a].key, pt->axis_values[a]);
        mf_buf_printf(b, "<figure class=\"point\" id=\"point-%d\">", pt->point);
        char *grid = mf_xasprintf("%s/samples/grid.png", pt->path);
        if (!is_file(grid)) {
            free(grid);
            grid = mf_xasprintf("%s/outputs/mnist_digits_final.png", pt->path);
        }
        if (is_file(grid)) emit_img(p, grid, printf_axes.s);
        else note(b, "no final grid");
        mf_buf_printf(b, "<figcaption>point %d: ", pt->point);
        esc(b, printf_axes.s);
        mf_buf_puts(b, " &mdash; ");
        esc(b, br.state ? br.state : "not run");
        for (int k = 0; k < br.n_metrics; k++)
            if (s.metric && strcmp(br.metric[k], s.metric) == 0) mf_buf_printf(b, ", %s ", ""), esc(b, s.metric), mf_buf_printf(b, " = %.5g", br.value[k]);
        char *rep = mf_xasprintf("%s/report.html", pt->path);
        if (is_file(rep)) mf_buf_puts(b, " &middot; <a href=\""), esc(b, pt->dir), mf_buf_puts(b, "/report.html\">report</a>");
        mf_buf_puts(b, "</figcaption></figure>\n");
        free(rep), free(grid);
        mf_buf_free(&printf_axes);
        mf_run_brief_free(&br);
    }
    mf_buf_puts(b, "</div>\n</section>\n");
    char *sy = mf_xasprintf("%s/sweep.yaml", dir);
    size_t syl;
    char *syt = read_all(sy, MAX_TEXT_BYTES, &syl);
    if (syt) mf_buf_puts(b, "<section id=\"sweep-yaml\"><details><summary>sweep.yaml</summary><pre>"), esc_lines(b, syt), mf_buf_puts(b, "</pre></details></section>\n");
    free(syt), free(sy);
    page_end(p);
    free(title);
    mf_sweep_free(&s);
    return 0;
}

/* ---- entry points ----------------------------------------------------------------------------- */

int mf_report_write(const char *dir, const mf_report_opts *opts) {
    mf_report_opts o = {.floor = 1, .quiet = 0};
    if (opts) o = *opts;
    if (!is_dir(dir)) return mf_fail("report: %s: %s", dir, errno ? strerror(errno) : "not a folder");
    char *sy = mf_xasprintf("%s/sweep.yaml", dir);
    int sweep = is_file(sy);
    free(sy);
    if (!sweep) {
        static const char *const files[] = {"status.json", "manifest.json", "metrics.jsonl"};
        int run = 0;
        for (int i = 0; i < 3 && !run; i++) {
            char *f = mf_xasprintf("%s/%s", dir, files[i]);
            run = is_file(f);
            free(f);
        }
        if (!run)
            return mf_fail("report: %s: not a run folder (no status.json, manifest.json or metrics.jsonl) nor a sweep folder (no sweep.yaml)", dir);
    }
    page p = {0};
    int rc = sweep ? report_sweep(dir, &p) : report_run(dir, &o, &p);
    if (rc == 0) {
        char *out = mf_xasprintf("%s/report.html", dir);
        rc = mf_write_file_atomic(out, p.b.s, p.b.len);
        free(out);
    }
    mf_buf_free(&p.b);
    return rc;
}

void mf_report_after(const char *dir, int ended_ok) {
    const char *env = getenv("MFPIPE_REPORT");
    if (env && strcmp(env, "0") == 0) return;
    char *keep = mf_xstrdup(mf_last_error());
    mf_report_opts o = {.floor = ended_ok, .quiet = 0};
    if (mf_report_write(dir, &o) != 0) mf_warn("report.html not written: %s", mf_last_error());
    if (*keep) mf_fail("%s", keep);
    else mf_error_clear();
    free(keep);
}

int mf_report_cmd(int argc, char **argv) {
    const char *dir = NULL;
    mf_report_opts o = {.floor = 1, .quiet = 0};
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(mf_report_help, stdout);
            return 0;
        }
        if (strcmp(argv[i], "--no-floor") == 0) o.floor = 0;
        else if (strcmp(argv[i], "-q") == 0 || strcmp(argv[i], "--quiet") == 0) o.quiet = 1;
        else if (argv[i][0] == '-' || dir) {
            fprintf(stderr, "mfpipe: error: report: unexpected argument '%s' (see 'mfpipe report --help')\n", argv[i]);
            return 2;
        } else dir = argv[i];
    }
    if (!dir) {
        fputs(mf_report_help, stderr);
        return 2;
    }
    if (mf_report_write(dir, &o) != 0) {
        fprintf(stderr, "mfpipe: error: %s\n", mf_last_error());
        return 1;
    }
    size_t l = strlen(dir);
    printf("%s%sreport.html\n", dir, l && dir[l - 1] == '/' ? "" : "/");
    return 0;
}
