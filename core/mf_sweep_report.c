/* mf_sweep_report.c - the summary of a sweep folder (mf_sweep.h): written by the sweep after its
 * points, by the Slurm summary job and by `mfpipe sweep --summarize DIR`, from sweep.yaml and each
 * point's run folder as `mfpipe ls` reads it (mf_run_brief: a missing or corrupt file is a warning,
 * never a failure). All files are written atomically; running it again rewrites them.
 *
 *   summary.csv   one row per point: point, one column per swept key (the value as given, quotes of
 *                 a string dropped; empty where a Lua set does not give the key), status (finished,
 *                 failed, skipped, interrupted, running, missing), train_run (the folder, relative
 *                 to the sweep, whose trained model the point used), every numeric metric of the
 *                 point's newest eval.json (the union of names over the points, in order of first
 *                 appearance; empty where a point has none or its value was not finite), wall_s.
 *                 A "running" point whose lock nobody holds is interrupted; a reuse point without
 *                 a folder whose training point failed or was skipped is skipped.
 *   summary.md    the same table, the best finished point by the sweep's metric (sweep.yaml
 *                 `metric`, default fid_lenet_v1; lower is better except for names holding
 *                 precision, recall, accuracy, acc_, score, density or coverage), the failed points
 *                 with their errors, the other unfinished points with their reasons, the plots.
 *   plot_<key>.svg  the metric against each swept key, one series per combination of the other
 *                 keys' values; numeric keys on a log axis when all > 0 and spanning more than 10x,
 *                 other keys as evenly spaced named ticks; a point that did not finish, or has no
 *                 value, is a gap in its series. */
#include "mf_sweep.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mf_error.h"
#include "mf_io.h"
#include "mf_json.h"
#include "mf_runs.h"
#include "mf_svg.h"

typedef struct pt_info {
    const char *status; /* finished failed skipped interrupted running missing */
    char *error;        /* why it did not finish, or NULL */
    double wall_s;
    double *m;          /* [n_metrics] NaN: none */
} pt_info;

typedef struct report {
    const mf_sweep *s;
    pt_info *pt;
    int n_metrics;
    char **metric;      /* union of the points' metric names, in order of first appearance */
    const char *key;    /* the sweep's metric */
    int key_col;        /* its index in metric, -1 when no point has it */
    int higher_better;
} report;

/* ---- values -------------------------------------------------------------------------------- */

/* An axis value as people read it: one level of surrounding quotes dropped ("\"heun\"" -> heun);
 * NULL (a Lua set that does not give the key) -> "". Malloc'ed. */
static char *display(const char *v) {
    if (!v) return mf_xstrdup("");
    size_t n = strlen(v);
    if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0]) {
        mf_buf b = {0};
        for (size_t i = 1; i + 1 < n; i++) {
            if (v[0] == '"' && v[i] == '\\' && i + 2 < n) i++;
            mf_buf_printf(&b, "%c", v[i]);
        }
        mf_buf_puts(&b, "");
        return b.s;
    }
    return mf_xstrdup(v);
}

/* The whole text is one finite number (strtod syntax, no surrounding quotes). */
static int as_number(const char *v, double *out) {
    if (!v || !*v) return 0;
    char *end;
    double d = strtod(v, &end);
    while (*end == ' ') end++;
    if (end == v || *end || !isfinite(d)) return 0;
    *out = d;
    return 1;
}

/* Metrics where more is better; the others (FID, losses, NFE, time) are better low. */
static int higher_is_better(const char *m) {
    static const char *const up[] = {"precision", "recall", "accuracy", "acc_", "score", "density", "coverage"};
    for (size_t i = 0; i < sizeof up / sizeof up[0]; i++)
        if (strstr(m, up[i])) return 1;
    return 0;
}

static void fmt_num(char *buf, size_t cap, double v) {
    if (isfinite(v)) snprintf(buf, cap, "%.10g", v);
    else buf[0] = '\0';
}

/* ---- reading ------------------------------------------------------------------------------- */

static int metric_index(report *r, const char *name, int add) {
    for (int i = 0; i < r->n_metrics; i++)
        if (strcmp(r->metric[i], name) == 0) return i;
    if (!add) return -1;
    r->metric = mf_xrealloc(r->metric, sizeof(char *) * (size_t)(r->n_metrics + 1));
    r->metric[r->n_metrics] = mf_xstrdup(name);
    return r->n_metrics++;
}

static const char *status_of(const mf_run_brief *b, char **error) {
    static const char *const known[] = {"finished", "failed", "skipped", "interrupted", "running"};
    *error = b->error ? mf_xstrdup(b->error) : NULL;
    if (!b->status_found || !b->state) return "missing";
    if (b->stale) {
        free(*error);
        *error = mf_xstrdup("its process ended without a status (status.json says running; no lock holder)");
        return "interrupted";
    }
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(b->state, known[i]) == 0) return known[i];
    return "missing";
}

static void read_points(report *r) {
    const mf_sweep *s = r->s;
    mf_run_brief *br = mf_xcalloc((size_t)s->n_points + 1, sizeof *br);
    r->pt = mf_xcalloc((size_t)s->n_points + 1, sizeof *r->pt);
    for (int i = 0; i < s->n_points; i++) {
        mf_run_brief_read(s->points[i].path, &br[i]);
        for (int k = 0; k < br[i].n_metrics; k++) metric_index(r, br[i].metric[k], 1);
    }
    r->key_col = metric_index(r, r->key, 0);
    for (int i = 0; i < s->n_points; i++) {
        pt_info *p = &r->pt[i];
        p->status = status_of(&br[i], &p->error);
        /* a reuse point that never ran because its training failed (a Slurm task of `sweep --point`
         * may end with that error before writing anything): skipped, as the local launcher marks it */
        int tp = s->points[i].train_point;
        if (strcmp(p->status, "missing") == 0 && tp != i &&
            (strcmp(r->pt[tp].status, "failed") == 0 || strcmp(r->pt[tp].status, "skipped") == 0)) {
            p->status = "skipped";
            free(p->error);
            p->error = mf_xasprintf("its training point %d %s", tp, r->pt[tp].status);
        }
        if (strcmp(p->status, "missing") == 0 && !p->error)
            p->error = mf_xasprintf("no status.json in %s", s->points[i].path);
        p->wall_s = br[i].wall_s;
        p->m = mf_xmalloc(sizeof(double) * (size_t)(r->n_metrics + 1));
        for (int k = 0; k < r->n_metrics; k++) p->m[k] = NAN;
        for (int k = 0; k < br[i].n_metrics; k++) p->m[metric_index(r, br[i].metric[k], 0)] = br[i].value[k];
        mf_run_brief_free(&br[i]);
    }
    free(br);
}

static void report_free(report *r) {
    for (int i = 0; r->pt && i < r->s->n_points; i++) free(r->pt[i].error), free(r->pt[i].m);
    free(r->pt);
    for (int k = 0; k < r->n_metrics; k++) free(r->metric[k]);
    free(r->metric);
}

/* The training point's folder as the point's row names it (relative to the sweep folder). */
static const char *train_run(const mf_sweep *s, int i) {
    int t = s->points[i].train_point;
    return t >= 0 && t < s->n_points ? s->points[t].dir : "?";
}

/* "key=value key2=value2" of a point's axes (display values), for labels and lists. */
static void point_label(mf_buf *b, const mf_sweep *s, int i, int skip_axis) {
    int first = 1;
    for (int a = 0; a < s->n_axes; a++) {
        if (a == skip_axis) continue;
        char *v = s->points[i].axis_values[a] ? display(s->points[i].axis_values[a]) : mf_xstrdup("-");
        mf_buf_printf(b, "%s%s=%s", first ? "" : " ", s->axes[a].key, v);
        free(v);
        first = 0;
    }
    mf_buf_puts(b, "");
}

/* ---- summary.csv --------------------------------------------------------------------------- */

static void csv_field(mf_buf *b, const char *v, int first) {
    if (!first) mf_buf_puts(b, ",");
    size_t n = strlen(v);
    int quote = n && (v[0] == ' ' || v[n - 1] == ' ' || v[0] == '#');
    for (const char *p = v; *p && !quote; p++)
        if (*p == ',' || *p == '"' || *p == '\n' || *p == '\r') quote = 1;
    if (!quote) {
        mf_buf_puts(b, v);
        return;
    }
    mf_buf_puts(b, "\"");
    for (const char *p = v; *p; p++) {
        if (*p == '"') mf_buf_puts(b, "\"\"");
        else if (*p == '\n' || *p == '\r') mf_buf_puts(b, " ");
        else mf_buf_printf(b, "%c", *p);
    }
    mf_buf_puts(b, "\"");
}

/* The cells of point i's row (header when i < 0) in column order: point, axes, status, train_run,
 * metrics, wall_s. The caller frees each. */
static int row_cells(const report *r, int i, char ***out) {
    const mf_sweep *s = r->s;
    int n = 1 + s->n_axes + 2 + r->n_metrics + 1, c = 0;
    char **v = mf_xcalloc((size_t)n, sizeof *v);
    char num[64];
    v[c++] = i < 0 ? mf_xstrdup("point") : mf_xasprintf("%d", s->points[i].point);
    for (int a = 0; a < s->n_axes; a++) v[c++] = i < 0 ? mf_xstrdup(s->axes[a].key) : display(s->points[i].axis_values[a]);
    v[c++] = mf_xstrdup(i < 0 ? "status" : r->pt[i].status);
    v[c++] = mf_xstrdup(i < 0 ? "train_run" : train_run(s, i));
    for (int k = 0; k < r->n_metrics; k++) {
        if (i < 0) v[c++] = mf_xstrdup(r->metric[k]);
        else {
            fmt_num(num, sizeof num, r->pt[i].m[k]);
            v[c++] = mf_xstrdup(num);
        }
    }
    if (i < 0) v[c++] = mf_xstrdup("wall_s");
    else {
        if (isfinite(r->pt[i].wall_s)) snprintf(num, sizeof num, "%.1f", r->pt[i].wall_s);
        else num[0] = '\0';
        v[c++] = mf_xstrdup(num);
    }
    *out = v;
    return n;
}

static void free_cells(char **v, int n) {
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

static int write_csv(const report *r, const char *path) {
    mf_buf b = {0};
    for (int i = -1; i < r->s->n_points; i++) {
        char **v;
        int n = row_cells(r, i, &v);
        for (int c = 0; c < n; c++) csv_field(&b, v[c], c == 0);
        mf_buf_puts(&b, "\n");
        free_cells(v, n);
    }
    int rc = mf_write_file_atomic(path, b.s, b.len);
    mf_buf_free(&b);
    return rc;
}

/* ---- summary.md ---------------------------------------------------------------------------- */

static void md_cell(mf_buf *b, const char *v) {
    for (const char *p = v; *p; p++) {
        if (*p == '|') mf_buf_puts(b, "\\|");
        else if (*p == '\n' || *p == '\r') mf_buf_puts(b, " ");
        else mf_buf_printf(b, "%c", *p);
    }
}

static int best_point(const report *r) {
    int best = -1;
    if (r->key_col < 0) return -1;
    for (int i = 0; i < r->s->n_points; i++) {
        double v = r->pt[i].m[r->key_col];
        if (strcmp(r->pt[i].status, "finished") != 0 || !isfinite(v)) continue;
        double bv = best >= 0 ? r->pt[best].m[r->key_col] : 0;
        if (best < 0 || (r->higher_better ? v > bv : v < bv)) best = i;
    }
    return best;
}

static char *plot_name(const char *key) {
    mf_buf b = {0};
    mf_buf_puts(&b, "plot_");
    for (const char *p = key; *p; p++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                 c == '_' || c == '-';
        mf_buf_printf(&b, "%c", ok ? c : '_');
    }
    mf_buf_puts(&b, ".svg");
    return b.s;
}

static int write_md(const report *r, const char *path) {
    const mf_sweep *s = r->s;
    mf_buf b = {0};
    static const char *const states[] = {"finished", "failed", "skipped", "interrupted", "running", "missing"};
    int count[6] = {0};
    for (int i = 0; i < s->n_points; i++)
        for (int k = 0; k < 6; k++)
            if (strcmp(r->pt[i].status, states[k]) == 0) count[k]++;
    mf_buf_puts(&b, "# Sweep ");
    md_cell(&b, s->name);
    mf_buf_puts(&b, "\n\n");
    mf_buf_printf(&b, "%d points", s->n_points);
    for (int k = 0; k < 6; k++)
        if (count[k]) mf_buf_printf(&b, ", %d %s", count[k], states[k]);
    mf_buf_printf(&b, ". Experiment `%s`, method %s, created %s.\n\n", s->experiment, s->method, s->created);

    for (int i = -1; i < s->n_points; i++) {
        char **v;
        int n = row_cells(r, i, &v);
        mf_buf_puts(&b, "|");
        for (int c = 0; c < n; c++) {
            mf_buf_puts(&b, " ");
            md_cell(&b, v[c]);
            mf_buf_puts(&b, " |");
        }
        mf_buf_puts(&b, "\n");
        if (i < 0) {
            mf_buf_puts(&b, "|");
            for (int c = 0; c < n; c++) mf_buf_puts(&b, "---|");
            mf_buf_puts(&b, "\n");
        }
        free_cells(v, n);
    }

    mf_buf_printf(&b, "\n## Best point\n\n");
    int best = best_point(r);
    if (best >= 0) {
        char num[64];
        fmt_num(num, sizeof num, r->pt[best].m[r->key_col]);
        mf_buf label = {0};
        point_label(&label, s, best, -1);
        mf_buf_printf(&b, "Best by %s (%s is better): point %d (", r->key, r->higher_better ? "higher" : "lower",
                      s->points[best].point);
        md_cell(&b, label.s);
        mf_buf_printf(&b, "): %s = %s, run `%s`, trained in `%s`\n", r->key, num, s->points[best].dir,
                      train_run(s, best));
        mf_buf_free(&label);
    } else {
        mf_buf_printf(&b, "No finished point has %s.\n", r->key);
    }

    int n_failed = count[1], n_other = s->n_points - count[0] - count[1];
    if (n_failed) {
        mf_buf_puts(&b, "\n## Failed points\n\n");
        for (int i = 0; i < s->n_points; i++) {
            if (strcmp(r->pt[i].status, "failed") != 0) continue;
            mf_buf label = {0};
            point_label(&label, s, i, -1);
            mf_buf_printf(&b, "- point %d (", s->points[i].point);
            md_cell(&b, label.s);
            mf_buf_puts(&b, "): ");
            md_cell(&b, r->pt[i].error ? r->pt[i].error : "(no error recorded)");
            mf_buf_printf(&b, " (`%s/log.txt`)\n", s->points[i].dir);
            mf_buf_free(&label);
        }
    }
    if (n_other) {
        mf_buf_puts(&b, "\n## Points not finished\n\n");
        for (int i = 0; i < s->n_points; i++) {
            const char *st = r->pt[i].status;
            if (strcmp(st, "failed") == 0 || strcmp(st, "finished") == 0) continue;
            mf_buf label = {0};
            point_label(&label, s, i, -1);
            mf_buf_printf(&b, "- point %d (", s->points[i].point);
            md_cell(&b, label.s);
            mf_buf_printf(&b, "): %s", st);
            if (r->pt[i].error) {
                mf_buf_puts(&b, ": ");
                md_cell(&b, r->pt[i].error);
            }
            mf_buf_puts(&b, "\n");
            mf_buf_free(&label);
        }
    }
    if (s->n_axes) {
        mf_buf_puts(&b, "\n## Plots\n\n");
        for (int a = 0; a < s->n_axes; a++) {
            char *pn = plot_name(s->axes[a].key);
            mf_buf_printf(&b, "![%s against %s](%s)\n", r->key, s->axes[a].key, pn);
            free(pn);
        }
    }
    int rc = mf_write_file_atomic(path, b.s, b.len);
    mf_buf_free(&b);
    return rc;
}

/* ---- plots --------------------------------------------------------------------------------- */

/* Categorical x axis: mf_svg draws numeric ticks only, so the chart is drawn with the categories at
 * x = 0, 1, ..., n-1 and its x tick labels and vertical grid lines are then replaced by one per
 * category. The plot area comes from the chart's frame rectangle, the x range from mf_svg_nice_ticks
 * with the target mf_svg_render uses (one tick per 90 pixels). */
static int attr(const char *s, const char *end, const char *name, double *v) {
    char pat[32];
    snprintf(pat, sizeof pat, " %s=\"", name);
    const char *p = strstr(s, pat);
    if (!p || p >= end) return 0;
    *v = strtod(p + strlen(pat), NULL);
    return 1;
}

static int relabel_categories(mf_buf *svg, char **names, int n) {
    const char *frame = strstr(svg->s, "<rect class=\"frame\"");
    const char *grid = strstr(svg->s, "<g class=\"grid\"");
    const char *xa = strstr(svg->s, "<g class=\"x-axis\"");
    if (!frame || !grid || !xa) return mf_fail("sweep report: unexpected chart layout (mf_svg)");
    const char *fend = strchr(frame, '>');
    double left, top, w, h;
    if (!attr(frame, fend, "x", &left) || !attr(frame, fend, "y", &top) || !attr(frame, fend, "width", &w) ||
        !attr(frame, fend, "height", &h))
        return mf_fail("sweep report: unexpected chart frame (mf_svg)");
    double right = left + w, bottom = top + h;
    mf_svg_ticks t;
    if (mf_svg_nice_ticks(0, n - 1, (int)((right - left) / 90), 0, &t) != 0) return -1;
#define XPIX(i) (left + ((0.5 * (i) - 0.5 * t.lo) / (0.5 * t.hi - 0.5 * t.lo)) * (right - left))

    mf_buf out = {0};
    /* up to the grid group's first line */
    const char *gbody = strchr(grid, '\n') + 1;
    mf_buf_printf(&out, "%.*s", (int)(gbody - svg->s), svg->s);
    const char *gend = strstr(gbody, "</g>\n");
    /* keep the horizontal lines, then one vertical line per category */
    for (const char *p = gbody; p < gend;) {
        const char *eol = strchr(p, '\n');
        double x1, x2;
        int vertical = attr(p, eol, "x1", &x1) && attr(p, eol, "x2", &x2) && x1 == x2;
        if (!vertical) mf_buf_printf(&out, "%.*s", (int)(eol + 1 - p), p);
        p = eol + 1;
    }
    for (int i = 0; i < n; i++)
        mf_buf_printf(&out, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#dddddd\"/>\n", XPIX(i),
                      top, XPIX(i), bottom);
    /* from the grid's end to the x axis group's first line */
    const char *xbody = strchr(xa, '\n') + 1;
    mf_buf_printf(&out, "%.*s", (int)(xbody - gend), gend);
    for (int i = 0; i < n; i++) {
        mf_buf_printf(&out, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#333333\"/>", XPIX(i),
                      bottom, XPIX(i), bottom + 5);
        mf_buf_printf(&out, "<text class=\"category\" x=\"%.2f\" y=\"%.2f\">", XPIX(i), bottom + 18);
        mf_svg_escape(&out, names[i]);
        mf_buf_puts(&out, "</text>\n");
    }
#undef XPIX
    mf_buf_puts(&out, strstr(xbody, "</g>\n"));
    mf_buf_free(svg);
    *svg = out;
    return 0;
}

static int write_plot(const report *r, int axis, const char *path) {
    const mf_sweep *s = r->s;
    const mf_sweep_axis *ax = &s->axes[axis];
    int nv = ax->n_values;
    char **names = mf_xcalloc((size_t)nv + 1, sizeof *names);
    double *xs = mf_xcalloc((size_t)nv + 1, sizeof *xs);
    int numeric = nv > 0;
    double lo = INFINITY, hi = -INFINITY;
    for (int v = 0; v < nv; v++) {
        names[v] = display(ax->values[v]);
        if (!as_number(ax->values[v], &xs[v])) numeric = 0;
        else lo = fmin(lo, xs[v]), hi = fmax(hi, xs[v]);
    }
    /* the values in x order (numeric) or as given (categorical: x = position) */
    int *order = mf_xcalloc((size_t)nv + 1, sizeof *order);
    for (int v = 0; v < nv; v++) order[v] = v;
    if (numeric)
        for (int a = 1; a < nv; a++)
            for (int b = a; b > 0 && xs[order[b]] < xs[order[b - 1]]; b--) {
                int t = order[b];
                order[b] = order[b - 1], order[b - 1] = t;
            }
    else
        for (int v = 0; v < nv; v++) xs[v] = v;

    char *title = mf_xasprintf("%s: %s against %s", s->name, r->key, ax->key);
    mf_svg_chart c;
    mf_svg_chart_init(&c, title, ax->key, r->key);
    free(title);
    c.logx = numeric && lo > 0 && hi / lo > 10;

    /* one series per combination of the other axes' values, in order of the points */
    for (int i = 0; i < s->n_points; i++) {
        const char *xv = s->points[i].axis_values[axis];
        if (!xv) continue; /* a Lua set without this key */
        mf_buf lab = {0};
        point_label(&lab, s, i, axis);
        if (mf_svg_find_series(&c, lab.s) < 0) {
            int si = mf_svg_add_series(&c, lab.s);
            /* its points in x order, NaN (a gap) where no point of this combination finished */
            for (int o = 0; o < nv; o++) {
                int v = order[o];
                double y = NAN;
                int found = 0;
                for (int j = 0; j < s->n_points; j++) {
                    const char *jv = s->points[j].axis_values[axis];
                    if (!jv || strcmp(jv, ax->values[v]) != 0) continue;
                    mf_buf jl = {0};
                    point_label(&jl, s, j, axis);
                    int same = strcmp(jl.s, lab.s) == 0;
                    mf_buf_free(&jl);
                    if (!same) continue;
                    found = 1;
                    if (r->key_col >= 0 && strcmp(r->pt[j].status, "finished") == 0) y = r->pt[j].m[r->key_col];
                    mf_svg_add_point(&c, si, xs[v], y);
                }
                if (!found) mf_svg_add_point(&c, si, xs[v], NAN);
            }
        }
        mf_buf_free(&lab);
    }

    mf_buf svg = {0};
    mf_buf_puts(&svg, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    mf_svg_render(&c, &svg);
    int rc = 0;
    if (!numeric && nv > 0) rc = relabel_categories(&svg, names, nv);
    if (rc == 0) rc = mf_write_file_atomic(path, svg.s, svg.len);
    mf_buf_free(&svg);
    mf_svg_chart_free(&c);
    for (int v = 0; v < nv; v++) free(names[v]);
    free(names), free(xs), free(order);
    return rc;
}

/* ---- the report ---------------------------------------------------------------------------- */

int mf_sweep_report(const char *sweep_dir) {
    mf_sweep s;
    if (mf_sweep_load(sweep_dir, &s) != 0) {
        mf_sweep_free(&s);
        return -1;
    }
    report r = {.s = &s};
    r.key = s.metric && s.metric[0] ? s.metric : "fid_lenet_v1";
    r.higher_better = higher_is_better(r.key);
    read_points(&r);
    int rc = 0;
    char *p = mf_xasprintf("%s/summary.csv", sweep_dir);
    if (write_csv(&r, p) != 0) rc = -1;
    free(p);
    p = mf_xasprintf("%s/summary.md", sweep_dir);
    if (rc == 0 && write_md(&r, p) != 0) rc = -1;
    free(p);
    for (int a = 0; rc == 0 && a < s.n_axes; a++) {
        char *pn = plot_name(s.axes[a].key);
        p = mf_xasprintf("%s/%s", sweep_dir, pn);
        if (write_plot(&r, a, p) != 0) rc = -1;
        free(p);
        free(pn);
    }
    report_free(&r);
    mf_sweep_free(&s);
    return rc;
}
