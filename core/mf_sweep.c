/* mf_sweep.c - the expanded sweep (sweep.yaml, format in mf_sweep.h): write, load, free. The
 * expansion, planning and running of sweeps is in mf_sweep_run.c. */
#include "mf_sweep.h"

#include <stdlib.h>
#include <string.h>

#include "mf_config.h"
#include "mf_error.h"
#include "mf_io.h"
#include "mf_json.h"

static void strs_free(char **v, int n) {
    for (int i = 0; v && i < n; i++) free(v[i]);
    free(v);
}

void mf_sweep_free(mf_sweep *s) {
    if (!s) return;
    free(s->dir), free(s->name), free(s->sweep_file), free(s->experiment), free(s->created);
    free(s->method), free(s->metric), free(s->launcher);
    strs_free(s->overrides, s->n_overrides);
    for (int a = 0; a < s->n_axes; a++) {
        free(s->axes[a].key);
        strs_free(s->axes[a].values, s->axes[a].n_values);
    }
    free(s->axes);
    for (int i = 0; i < s->n_points; i++) {
        mf_sweep_point *p = &s->points[i];
        free(p->dir), free(p->path);
        strs_free(p->overrides, p->n_overrides);
        strs_free(p->axis_values, s->n_axes);
        strs_free(p->stages, p->n_stages);
        strs_free(p->run_overrides, p->n_run_overrides);
    }
    free(s->points);
    memset(s, 0, sizeof *s);
}

int mf_sweep_axis_index(const mf_sweep *s, const char *key) {
    for (int a = 0; a < s->n_axes; a++)
        if (strcmp(s->axes[a].key, key) == 0) return a;
    return -1;
}

/* ---- writing ------------------------------------------------------------------------------------ */

static void put_str(mf_buf *b, const char *s) { mf_json_escape(b, s ? s : ""); } /* JSON strings are YAML */

static void put_list(mf_buf *b, char *const *v, int n) {
    mf_buf_puts(b, "[");
    for (int i = 0; i < n; i++) {
        if (i) mf_buf_puts(b, ", ");
        put_str(b, v[i]);
    }
    mf_buf_puts(b, "]");
}

int mf_sweep_write(const mf_sweep *s) {
    mf_buf b = {0};
    mf_buf_puts(&b, "# the expanded sweep, written by mfpipe sweep (format: core/mf_sweep.h, docs/sweeps.md)\n");
    mf_buf_puts(&b, "version: 1\nname: ");
    put_str(&b, s->name);
    mf_buf_puts(&b, "\nsweep_file: ");
    put_str(&b, s->sweep_file);
    mf_buf_puts(&b, "\nexperiment: ");
    put_str(&b, s->experiment);
    mf_buf_puts(&b, "\ncreated: ");
    put_str(&b, s->created);
    mf_buf_puts(&b, "\nmethod: ");
    put_str(&b, s->method);
    mf_buf_printf(&b, "\nseed: %lld\nmetric: ", s->seed);
    put_str(&b, s->metric);
    mf_buf_printf(&b, "\nthreads: %d\njobs: %d\nlauncher: ", s->threads, s->jobs);
    put_str(&b, s->launcher);
    mf_buf_puts(&b, "\noverrides: ");
    put_list(&b, s->overrides, s->n_overrides);
    mf_buf_puts(&b, "\naxes:");
    if (!s->n_axes) mf_buf_puts(&b, " {}");
    for (int a = 0; a < s->n_axes; a++) {
        mf_buf_puts(&b, "\n  ");
        put_str(&b, s->axes[a].key);
        mf_buf_puts(&b, ": ");
        put_list(&b, s->axes[a].values, s->axes[a].n_values);
    }
    mf_buf_puts(&b, "\npoints:");
    if (!s->n_points) mf_buf_puts(&b, " []");
    for (int i = 0; i < s->n_points; i++) {
        const mf_sweep_point *p = &s->points[i];
        mf_buf_printf(&b, "\n  - point: %d\n    dir: ", p->point);
        put_str(&b, p->dir);
        mf_buf_puts(&b, "\n    overrides: ");
        put_list(&b, p->overrides, p->n_overrides);
        mf_buf_puts(&b, "\n    axes: {");
        int first = 1;
        for (int a = 0; a < s->n_axes; a++) {
            if (!p->axis_values[a]) continue;
            mf_buf_puts(&b, first ? "" : ", ");
            first = 0;
            put_str(&b, s->axes[a].key);
            mf_buf_puts(&b, ": ");
            put_str(&b, p->axis_values[a]);
        }
        mf_buf_printf(&b, "}\n    train_point: %d\n    stages: ", p->train_point);
        put_list(&b, p->stages, p->n_stages);
        mf_buf_puts(&b, "\n    run_overrides: ");
        put_list(&b, p->run_overrides, p->n_run_overrides);
    }
    mf_buf_puts(&b, "\n");
    char *path = mf_xasprintf("%s/sweep.yaml", s->dir);
    int rc = mf_write_file_atomic(path, b.s, b.len);
    free(path);
    mf_buf_free(&b);
    return rc;
}

/* ---- loading ------------------------------------------------------------------------------------ */

static mf_node *need(const mf_node *map, const char *key, mf_node_kind kind, const char *file) {
    mf_node *n = mf_node_child(map, key);
    char w[512];
    if (!n) {
        mf_fail("%s: missing key '%s'", file, key);
        return NULL;
    }
    if (kind == MF_NODE_SCALAR ? n->kind == MF_NODE_MAP || n->kind == MF_NODE_SEQ : n->kind != kind) {
        mf_fail("%s: %s: expected %s", mf_node_where(n, w, sizeof w), key,
                kind == MF_NODE_SEQ ? "a list" : kind == MF_NODE_MAP ? "a mapping" : "a value");
        return NULL;
    }
    return n;
}

static int get_str(const mf_node *map, const char *key, const char *file, char **out) {
    mf_node *n = need(map, key, MF_NODE_SCALAR, file);
    if (!n) return -1;
    const char *s = "";
    if (n->kind == MF_NODE_SCALAR && mf_node_as_string(n, &s) != 0) return -1;
    *out = mf_xstrdup(s);
    return 0;
}

static int get_int(const mf_node *map, const char *key, const char *file, long long *out) {
    mf_node *n = need(map, key, MF_NODE_SCALAR, file);
    return n ? mf_node_as_int(n, out) : -1;
}

static int get_strs(const mf_node *map, const char *key, const char *file, char ***out, int *n_out) {
    mf_node *n = need(map, key, MF_NODE_SEQ, file);
    if (!n) return -1;
    *out = mf_xcalloc((size_t)n->n_children + 1, sizeof **out);
    *n_out = 0;
    for (mf_node *c = n->first; c; c = c->next) {
        const char *s;
        char w[512];
        if (c->kind != MF_NODE_SCALAR || mf_node_as_string(c, &s) != 0)
            return mf_fail("%s: %s: expected a list of strings", mf_node_where(c, w, sizeof w), key);
        (*out)[(*n_out)++] = mf_xstrdup(s);
    }
    return 0;
}

int mf_sweep_load(const char *sweep_dir, mf_sweep *s) {
    memset(s, 0, sizeof *s);
    s->dir = mf_xstrdup(sweep_dir);
    char *file = mf_xasprintf("%s/sweep.yaml", sweep_dir);
    mf_node *root = mf_cfg_load_file(file);
    int rc = -1;
    char w[512];
    if (!root) goto out;
    if (root->kind != MF_NODE_MAP) {
        mf_fail("%s: not a sweep file (expected a mapping)", file);
        goto out;
    }
    long long v;
    if (get_int(root, "version", file, &v) != 0) goto out;
    if (v != 1) {
        mf_fail("%s: version %lld: this mfpipe reads sweep.yaml version 1", file, v);
        goto out;
    }
    if (get_str(root, "name", file, &s->name) || get_str(root, "sweep_file", file, &s->sweep_file) ||
        get_str(root, "experiment", file, &s->experiment) || get_str(root, "created", file, &s->created) ||
        get_str(root, "method", file, &s->method) || get_str(root, "metric", file, &s->metric) ||
        get_str(root, "launcher", file, &s->launcher) || get_int(root, "seed", file, &s->seed))
        goto out;
    if (get_int(root, "threads", file, &v) != 0) goto out;
    s->threads = (int)v;
    if (get_int(root, "jobs", file, &v) != 0) goto out;
    s->jobs = (int)v;
    if (get_strs(root, "overrides", file, &s->overrides, &s->n_overrides) != 0) goto out;
    mf_node *axes = need(root, "axes", MF_NODE_MAP, file);
    if (!axes && mf_node_child(root, "axes") && mf_node_child(root, "axes")->kind == MF_NODE_NULL) {
        mf_error_clear();
    } else if (!axes) {
        goto out;
    }
    s->axes = mf_xcalloc((size_t)(axes ? axes->n_children : 0) + 1, sizeof *s->axes);
    for (mf_node *c = axes ? axes->first : NULL; c; c = c->next) {
        mf_sweep_axis *ax = &s->axes[s->n_axes++];
        ax->key = mf_xstrdup(c->key);
        if (get_strs(axes, c->key, file, &ax->values, &ax->n_values) != 0) goto out;
    }
    mf_node *pts = need(root, "points", MF_NODE_SEQ, file);
    if (!pts) goto out;
    s->points = mf_xcalloc((size_t)pts->n_children + 1, sizeof *s->points);
    for (mf_node *c = pts->first; c; c = c->next) {
        mf_sweep_point *p = &s->points[s->n_points];
        p->axis_values = mf_xcalloc((size_t)s->n_axes + 1, sizeof *p->axis_values);
        s->n_points++;
        if (c->kind != MF_NODE_MAP) {
            mf_fail("%s: points: each entry must be a mapping", mf_node_where(c, w, sizeof w));
            goto out;
        }
        if (get_int(c, "point", file, &v) != 0) goto out;
        if (v != s->n_points - 1) {
            mf_fail("%s: point: %lld, expected %d (points are numbered from 0, in order)",
                    mf_node_where(mf_node_child(c, "point"), w, sizeof w), v, s->n_points - 1);
            goto out;
        }
        p->point = (int)v;
        if (get_str(c, "dir", file, &p->dir) != 0) goto out;
        p->path = mf_xasprintf("%s/%s", sweep_dir, p->dir);
        if (get_strs(c, "overrides", file, &p->overrides, &p->n_overrides) != 0) goto out;
        if (get_strs(c, "stages", file, &p->stages, &p->n_stages) != 0) goto out;
        if (get_strs(c, "run_overrides", file, &p->run_overrides, &p->n_run_overrides) != 0) goto out;
        if (get_int(c, "train_point", file, &v) != 0) goto out;
        if (v < 0 || v > p->point) {
            mf_fail("%s: train_point: %lld: must be a point at or before %d",
                    mf_node_where(mf_node_child(c, "train_point"), w, sizeof w), v, p->point);
            goto out;
        }
        p->train_point = (int)v;
        mf_node *pa = need(c, "axes", MF_NODE_MAP, file);
        if (!pa) goto out;
        for (mf_node *e = pa->first; e; e = e->next) {
            int a = mf_sweep_axis_index(s, e->key);
            const char *val;
            if (a < 0) {
                mf_fail("%s: axes: '%s' is not one of the sweep's axes", mf_node_where(e, w, sizeof w), e->key);
                goto out;
            }
            if (e->kind != MF_NODE_SCALAR || mf_node_as_string(e, &val) != 0) {
                mf_fail("%s: axes: %s: expected a value", mf_node_where(e, w, sizeof w), e->key);
                goto out;
            }
            free(p->axis_values[a]);
            p->axis_values[a] = mf_xstrdup(val);
        }
    }
    for (int i = 0; i < s->n_points; i++)
        if (s->points[s->points[i].train_point].train_point != s->points[i].train_point) {
            mf_fail("%s: point %d: train_point %d does not train itself", file, i, s->points[i].train_point);
            goto out;
        }
    rc = 0;
out:
    if (root) mf_node_free(root);
    free(file);
    return rc;
}
