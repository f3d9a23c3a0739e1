/* mf_plot.c - `mfpipe plot` and its CSV reader (mf_plot.h; docs/plots.md). */
#include "mf_plot.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mf_error.h"
#include "mf_io.h"
#include "mf_log.h"
#include "mf_svg.h"

const char mf_plot_help[] =
    "usage: mfpipe plot TABLE.csv -o OUT.svg --x COL --y COL [--series COL] [--logx] [--logy]\n"
    "                   [--title T] [--xlabel T] [--ylabel T] [--width PX] [--height PX] [--no-sort]\n"
    "\n"
    "An SVG line chart of column --y against column --x of a CSV table (header row, comma-separated;\n"
    "fields may be double-quoted; empty lines and lines starting with # are skipped), one line per\n"
    "distinct value of --series (in order of first appearance; without it, one line). Points are joined\n"
    "in order of x (--no-sort: in file order); missing values (empty, nan, NA, null, -) are not drawn\n"
    "and break the line, and so are values <= 0 on a log axis. Axis labels default to the column names.\n"
    "A bad number is an error naming the file, line and column. Written atomically; the output's\n"
    "folder is created. Format and examples: docs/plots.md.\n"
    "exit status: 0 written, 1 bad input, 2 bad command line\n";

/* ---- the CSV reader -------------------------------------------------------------------------- */
void mf_table_free(mf_table *t) {
    if (!t) return;
    for (int i = 0; i < t->ncol; i++) free(t->head[i]);
    for (long i = 0; i < (long)t->nrow * t->ncol; i++) free(t->cell[i]);
    free(t->head), free(t->head_col), free(t->cell), free(t->line), free(t->col), free(t->path);
    memset(t, 0, sizeof *t);
}

/* Character column (1-based) of byte offset off in the line s. */
static int char_col(const char *s, size_t off) {
    int c = 1;
    for (size_t i = 0; i < off; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) c++;
    return c;
}

typedef struct fields {
    char **v;
    int *col;
    int n, cap;
} fields;

static void fields_push(fields *f, char *s, int col) {
    if (f->n == f->cap) {
        f->cap = f->cap ? 2 * f->cap : 8;
        f->v = mf_xrealloc(f->v, sizeof *f->v * (size_t)f->cap);
        f->col = mf_xrealloc(f->col, sizeof *f->col * (size_t)f->cap);
    }
    f->v[f->n] = s;
    f->col[f->n++] = col;
}

static void fields_clear(fields *f) {
    for (int i = 0; i < f->n; i++) free(f->v[i]);
    f->n = 0;
}

static int is_space(char c) { return c == ' ' || c == '\t'; }

/* Split one line (n bytes, no line end) into fields. */
static int split_line(const char *path, int lineno, const char *s, size_t n, fields *f) {
    size_t i = 0;
    for (;;) {
        while (i < n && is_space(s[i])) i++;
        int col = char_col(s, i);
        if (i < n && s[i] == '"') {
            mf_buf b = {0};
            mf_buf_puts(&b, "");
            i++;
            for (;;) {
                if (i >= n) {
                    mf_buf_free(&b);
                    return mf_fail("%s:%d:%d: the quoted field has no closing quote (fields may not span lines)",
                                   path, lineno, col);
                }
                if (s[i] == '"') {
                    if (i + 1 < n && s[i + 1] == '"') {
                        mf_buf_puts(&b, "\"");
                        i += 2;
                        continue;
                    }
                    i++;
                    break;
                }
                mf_buf_printf(&b, "%c", s[i++]);
            }
            while (i < n && is_space(s[i])) i++;
            if (i < n && s[i] != ',') {
                mf_buf_free(&b);
                return mf_fail("%s:%d:%d: text after the closing quote (expected a comma)", path, lineno,
                               char_col(s, i));
            }
            fields_push(f, b.s, col);
        } else {
            size_t a = i;
            while (i < n && s[i] != ',') i++;
            size_t e = i;
            while (e > a && is_space(s[e - 1])) e--;
            char *v = mf_xmalloc(e - a + 1);
            memcpy(v, s + a, e - a);
            v[e - a] = '\0';
            fields_push(f, v, col);
        }
        if (i < n && s[i] == ',') {
            i++;
            continue;
        }
        return 0;
    }
}

int mf_table_read(const char *path, mf_table *t) {
    memset(t, 0, sizeof *t);
    uint8_t *data = NULL;
    size_t len = 0;
    int gz = 0;
    if (mf_read_file_max(path, MF_TABLE_MAX_BYTES, NULL, &data, &len, &gz) != 0) return -1;
    t->path = mf_xstrdup(path);
    const char *s = (const char *)data, *end = s + len;
    if (len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) s += 3;
    fields f = {0};
    int lineno = 0, header_line = 0, rc = 0, cap_rows = 0;
    while (s < end && rc == 0) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        const char *le = nl ? nl : end;
        lineno++;
        size_t n = (size_t)(le - s);
        if (n && s[n - 1] == '\r') n--;
        const char *z = memchr(s, '\0', n);
        size_t k = 0;
        while (k < n && (is_space(s[k]) || s[k] == '\r')) k++;
        if (z) {
            rc = mf_fail("%s:%d:%d: a NUL byte (is this a text file?)", path, lineno, char_col(s, (size_t)(z - s)));
        } else if (k < n && s[k] != '#') {
            rc = split_line(path, lineno, s, n, &f);
            if (rc == 0 && !header_line) {
                header_line = lineno;
                t->ncol = f.n;
                t->head = f.v, t->head_col = f.col;
                memset(&f, 0, sizeof f);
            } else if (rc == 0 && f.n != t->ncol) {
                int c = f.n > t->ncol ? f.col[t->ncol] : char_col(s, n);
                rc = mf_fail("%s:%d:%d: %d field%s, but the header (line %d) has %d", path, lineno, c, f.n,
                             f.n == 1 ? "" : "s", header_line, t->ncol);
            } else if (rc == 0) {
                if (t->nrow == cap_rows) {
                    cap_rows = cap_rows ? 2 * cap_rows : 64;
                    t->cell = mf_xrealloc(t->cell, sizeof *t->cell * (size_t)cap_rows * (size_t)t->ncol);
                    t->col = mf_xrealloc(t->col, sizeof *t->col * (size_t)cap_rows * (size_t)t->ncol);
                    t->line = mf_xrealloc(t->line, sizeof *t->line * (size_t)cap_rows);
                }
                long base = (long)t->nrow * t->ncol;
                for (int i = 0; i < f.n; i++) t->cell[base + i] = f.v[i], t->col[base + i] = f.col[i];
                t->line[t->nrow++] = lineno;
                f.n = 0;
            }
        }
        s = nl ? nl + 1 : end;
    }
    fields_clear(&f);
    free(f.v), free(f.col);
    free(data);
    if (rc == 0 && !header_line) rc = mf_fail("%s: no header row (the file has no fields)", path);
    if (rc != 0) mf_table_free(t);
    return rc;
}

int mf_table_column(const mf_table *t, const char *name) {
    int found = -1;
    for (int i = 0; i < t->ncol; i++) {
        if (strcmp(t->head[i], name) != 0) continue;
        if (found >= 0)
            return mf_fail("%s: column '%s' appears twice in the header (fields %d and %d)", t->path, name,
                           found + 1, i + 1);
        found = i;
    }
    if (found >= 0) return found;
    mf_buf b = {0};
    mf_buf_puts(&b, "");
    for (int i = 0; i < t->ncol; i++) mf_buf_printf(&b, "%s%s", i ? ", " : "", t->head[i]);
    mf_fail("%s: no column '%s' (the header has: %s)", t->path, name, b.s);
    mf_buf_free(&b);
    return -1;
}

int mf_table_number(const mf_table *t, int row, int col, double *v) {
    const char *s = mf_table_cell(t, row, col);
    while (is_space(*s)) s++;
    size_t n = strlen(s);
    while (n && is_space(s[n - 1])) n--;
    char *tmp = mf_xmalloc(n + 1);
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    int rc = 0;
    if (!n || strcasecmp(tmp, "nan") == 0 || strcasecmp(tmp, "na") == 0 || strcasecmp(tmp, "null") == 0 ||
        strcmp(tmp, "-") == 0) {
        *v = NAN;
    } else {
        char *e;
        errno = 0;
        double d = strtod(tmp, &e);
        const char *why = e == tmp || *e ? "is not a number" : errno == ERANGE && isinf(d) ? "is out of range" : NULL;
        if (why)
            rc = mf_fail("%s:%d:%d: column '%s': '%s' %s", t->path, t->line[row], t->col[(long)row * t->ncol + col],
                         t->head[col], tmp, why);
        else *v = d;
    }
    free(tmp);
    return rc;
}

/* ---- the command ----------------------------------------------------------------------------- */
typedef struct pt {
    double x, y;
    int row;
} pt;

static int cmp_pt(const void *a, const void *b) {
    const pt *p = a, *q = b;
    int pn = isnan(p->x), qn = isnan(q->x);
    if (pn != qn) return pn - qn; /* NaN x last */
    if (!pn && p->x != q->x) return p->x < q->x ? -1 : 1;
    return p->row - q->row; /* stable */
}

static int parse_px(const char *opt, const char *s, int *out) {
    char *e;
    long v = strtol(s, &e, 10);
    if (e == s || *e || v < 240 || v > 20000) return mf_fail("plot: %s wants pixels in 240..20000, not '%s'", opt, s);
    *out = (int)v;
    return 0;
}

int mf_plot_cmd(int argc, char **argv) {
    const char *table = NULL, *out = NULL, *xc = NULL, *yc = NULL, *sc = NULL, *title = NULL, *xl = NULL,
               *yl = NULL;
    int logx = 0, logy = 0, sort = 1, width = 0, height = 0;
    static const char *value_opts[] = {"-o", "--out", "--x", "--y", "--series", "--title", "--xlabel", "--ylabel",
                                       "--width", "--height"};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *val = NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(mf_plot_help, stdout);
            return 0;
        }
        if (strcmp(a, "--logx") == 0) logx = 1;
        else if (strcmp(a, "--logy") == 0) logy = 1;
        else if (strcmp(a, "--no-sort") == 0) sort = 0;
        else if (a[0] == '-' && a[1]) {
            size_t k, nv = sizeof value_opts / sizeof value_opts[0];
            const char *eq = strchr(a, '=');
            size_t alen = eq ? (size_t)(eq - a) : strlen(a);
            for (k = 0; k < nv; k++)
                if (strlen(value_opts[k]) == alen && strncmp(a, value_opts[k], alen) == 0) break;
            if (k == nv) {
                mf_fail("plot: unknown option '%s' (see 'mfpipe plot --help')", a);
                return 2;
            }
            if (eq) val = eq + 1;
            else if (i + 1 < argc) val = argv[++i];
            else {
                mf_fail("plot: %s needs a value", a);
                return 2;
            }
            const char *o = value_opts[k];
            if (!strcmp(o, "-o") || !strcmp(o, "--out")) out = val;
            else if (!strcmp(o, "--x")) xc = val;
            else if (!strcmp(o, "--y")) yc = val;
            else if (!strcmp(o, "--series")) sc = val;
            else if (!strcmp(o, "--title")) title = val;
            else if (!strcmp(o, "--xlabel")) xl = val;
            else if (!strcmp(o, "--ylabel")) yl = val;
            else if (parse_px(o, val, !strcmp(o, "--width") ? &width : &height) != 0) return 2;
        } else if (!table) table = a;
        else {
            mf_fail("plot: one table at a time ('%s' and '%s')", table, a);
            return 2;
        }
    }
    if (!table || !out || !xc || !yc) {
        mf_fail("plot: %s (usage: mfpipe plot TABLE.csv -o OUT.svg --x COL --y COL; see 'mfpipe plot --help')",
                !table ? "no table given" : !out ? "no output file given (-o OUT.svg)"
                : !xc  ? "no x column given (--x COL)"
                       : "no y column given (--y COL)");
        return 2;
    }

    mf_table t;
    if (mf_table_read(table, &t) != 0) return 1;
    int ix = mf_table_column(&t, xc), iy = ix >= 0 ? mf_table_column(&t, yc) : -1;
    int is = sc && iy >= 0 ? mf_table_column(&t, sc) : -1;
    if (ix < 0 || iy < 0 || (sc && is < 0)) {
        mf_table_free(&t);
        return 1;
    }
    /* points of each series (by first appearance), then sorted by x */
    mf_svg_chart c;
    mf_svg_chart_init(&c, title, xl ? xl : xc, yl ? yl : yc);
    c.logx = logx, c.logy = logy, c.width = width, c.height = height;
    pt **pts = NULL;
    int *npts = NULL, *cap = NULL, rc = 0, nonpos = 0, drawn = 0;
    for (int r = 0; r < t.nrow && rc == 0; r++) {
        double x, y;
        if (mf_table_number(&t, r, ix, &x) != 0 || mf_table_number(&t, r, iy, &y) != 0) {
            rc = 1;
            break;
        }
        const char *name = sc ? (mf_table_cell(&t, r, is)[0] ? mf_table_cell(&t, r, is) : "(empty)") : "";
        int s = mf_svg_find_series(&c, name);
        if (s < 0) {
            s = mf_svg_add_series(&c, name);
            pts = mf_xrealloc(pts, sizeof *pts * (size_t)c.n_series);
            npts = mf_xrealloc(npts, sizeof *npts * (size_t)c.n_series);
            cap = mf_xrealloc(cap, sizeof *cap * (size_t)c.n_series);
            pts[s] = NULL;
            npts[s] = cap[s] = 0;
        }
        if (npts[s] == cap[s]) {
            cap[s] = cap[s] ? 2 * cap[s] : 16;
            pts[s] = mf_xrealloc(pts[s], sizeof **pts * (size_t)cap[s]);
        }
        pts[s][npts[s]++] = (pt){x, y, r};
        if ((logx && isfinite(x) && x <= 0) || (logy && isfinite(y) && y <= 0)) nonpos++;
        else if (isfinite(x) && isfinite(y)) drawn++;
    }
    for (int s = 0; s < c.n_series; s++) {
        if (rc == 0) {
            if (sort) qsort(pts[s], (size_t)npts[s], sizeof **pts, cmp_pt);
            for (int j = 0; j < npts[s]; j++) mf_svg_add_point(&c, s, pts[s][j].x, pts[s][j].y);
        }
        free(pts[s]);
    }
    free(pts), free(npts), free(cap);
    if (rc == 0) {
        if (nonpos)
            mf_warn("plot: %s: %d row%s with a value <= 0 on a log axis not drawn", table, nonpos,
                    nonpos == 1 ? "" : "s");
        if (!drawn) mf_warn("plot: %s: no row has both '%s' and '%s': the chart is empty", table, xc, yc);
        const char *slash = strrchr(out, '/');
        if (slash && slash != out) {
            char *dir = mf_xmalloc((size_t)(slash - out) + 1);
            memcpy(dir, out, (size_t)(slash - out));
            dir[slash - out] = '\0';
            if (mf_mkdirs(dir) != 0) rc = 1, mf_error_prefix("plot: cannot write %s: ", out);
            free(dir);
        }
        if (rc == 0 && mf_svg_write(&c, out) != 0) rc = 1;
        if (rc == 0)
            mf_info("plot: %s -> %s (%d series, %d points drawn)", table, out, c.n_series, drawn);
    }
    mf_svg_chart_free(&c);
    mf_table_free(&t);
    return rc;
}
