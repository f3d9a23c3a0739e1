/* test_sweep_report.c - mf_sweep_report (core/mf_sweep_report.c) on a hand-made sweep folder: eight
 * points of model.channels x sample.steps x sample.sampler (numeric, numeric over 50x, categorical),
 * one failed, one missing, one finished without a usable metric, one with three eval.json files (the
 * newest counts), one with an extra metric. Checks the exact summary.csv, the best point and the
 * lists of summary.md (also for a higher-is-better metric from sweep.yaml), and each plot's series,
 * markers, lines and gaps. */
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mf_error.h"
#include "mf_io.h"
#include "mf_json.h"
#include "mf_sweep.h"
#include "mf_test.h"

static char g_dir[600];

static void put(const char *path, const char *text) {
    CHECK_MSG(mf_write_file_atomic(path, text, strlen(text)) == 0, "%s: %s", path, mf_last_error());
}

static char *slurp(const char *path) {
    uint8_t *d = NULL;
    size_t n = 0;
    if (mf_read_file(path, &d, &n, NULL) != 0) return NULL;
    char *s = malloc(n + 1);
    memcpy(s, d, n);
    s[n] = '\0';
    free(d);
    return s;
}

static int count(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

/* the <g class="series"> element of the named series (static copy), "" when absent */
static const char *series(const char *svg, const char *name) {
    static char buf[16384];
    char pat[256];
    snprintf(pat, sizeof pat, "data-series=\"%s\"", name);
    const char *a = strstr(svg, pat);
    buf[0] = '\0';
    if (!a) return buf;
    const char *b = strstr(a, "</g>\n");
    size_t n = (size_t)(b - a) < sizeof buf - 1 ? (size_t)(b - a) : sizeof buf - 1;
    memcpy(buf, a, n);
    buf[n] = '\0';
    return buf;
}
static int markers(const char *g) { return count(g, ", y="); } /* each marker's tooltip */
static int lines(const char *g) { return count(g, "<polyline"); }

static void set_mtime(const char *path, time_t t) {
    struct timespec ts[2] = {{t, 0}, {t, 0}};
    CHECK(utimensat(AT_FDCWD, path, ts, 0) == 0);
}

/* point i's folder: status (NULL: no folder), error, wall seconds (<0: no manifest), eval.json text */
static void make_point(int i, const char *state, const char *error, int wall, const char *eval) {
    if (!state) return;
    char d[800], p[900], t[600];
    snprintf(d, sizeof d, "%s/%d", g_dir, i);
    CHECK(mf_mkdirs(d) == 0);
    snprintf(p, sizeof p, "%s/status.json", d);
    snprintf(t, sizeof t, "{\"state\":\"%s\",\"time\":\"2026-01-01T00:%02d:%02d+0000\"%s%s%s}\n", state,
             wall > 0 ? wall / 60 : 0, wall > 0 ? wall % 60 : 0, error ? ",\"error\":\"" : "", error ? error : "",
             error ? "\"" : "");
    put(p, t);
    if (wall >= 0) {
        snprintf(p, sizeof p, "%s/manifest.json", d);
        put(p, "{\"name\":\"sw\",\"started\":\"2026-01-01T00:00:00+0000\"}\n");
    }
    if (eval) {
        snprintf(p, sizeof p, "%s/eval.json", d);
        put(p, eval);
    }
}

static const char *k_sweep_head =
    "version: 1\nname: \"sw\"\nsweep_file: \"\"\nexperiment: \"/x/exp.yaml\"\ncreated: \"2026-01-01T00:00:00Z\"\n"
    "method: \"grid\"\nseed: 0\nmetric: \"%s\"\nthreads: 1\njobs: 1\nlauncher: \"local\"\noverrides: []\n"
    "axes:\n  \"model.channels\": [\"16\", \"32\"]\n  \"sample.steps\": [\"1\", \"50\"]\n"
    "  \"sample.sampler\": [\"\\\"euler\\\"\", \"heun\"]\npoints:\n";

static void write_sweep(const char *metric) {
    mf_buf b = {0};
    mf_buf_printf(&b, k_sweep_head, metric);
    const char *ch[2] = {"16", "32"}, *st[2] = {"1", "50"}, *sa[2] = {"\"\\\"euler\\\"\"", "\"heun\""};
    for (int i = 0; i < 8; i++) {
        int c = i / 4, s = (i / 2) % 2, a = i % 2, tp = c * 4;
        mf_buf_printf(&b,
                      "  - point: %d\n    dir: \"%d\"\n    overrides: []\n"
                      "    axes: {\"model.channels\": \"%s\", \"sample.steps\": \"%s\", \"sample.sampler\": %s}\n"
                      "    train_point: %d\n    stages: [\"data\", \"train\", \"sample\", \"eval\"]\n"
                      "    run_overrides: []\n",
                      i, i, ch[c], st[s], sa[a], tp);
    }
    char p[700];
    snprintf(p, sizeof p, "%s/sweep.yaml", g_dir);
    put(p, b.s);
    mf_buf_free(&b);
}

static char *read_out(const char *name) {
    char p[800];
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    char *s = slurp(p);
    CHECK_MSG(s != NULL, "%s not written", p);
    return s ? s : calloc(1, 1);
}

#define EVAL(fid, prec) \
    "{\"n\":10,\"metrics\":[{\"metric\":\"fid_lenet_v1\",\"value\":" fid ",\"n\":10},{\"metric\":\"precision_lenet_v1_k3\",\"value\":" prec "},{\"metric\":\"class_histogram\",\"value\":[1,2]}]}\n"

static void build(void) {
    snprintf(g_dir, sizeof g_dir, "%s/results/sw/20260101-000000", mf_test_tmpdir());
    CHECK(mf_mkdirs(g_dir) == 0);
    write_sweep("fid_lenet_v1");
    make_point(0, "finished", NULL, 100, EVAL("50", "0.5"));
    /* point 1: its own eval.json (oldest), eval/a (older), eval/b (newest: counts) */
    make_point(1, "finished", NULL, 10, EVAL("98", "0.1"));
    char p[900];
    snprintf(p, sizeof p, "%s/1/eval.json", g_dir);
    set_mtime(p, 1000);
    snprintf(p, sizeof p, "%s/1/eval/20260101-000001", g_dir);
    CHECK(mf_mkdirs(p) == 0);
    snprintf(p, sizeof p, "%s/1/eval/20260101-000001/eval.json", g_dir);
    put(p, EVAL("99", "0.2"));
    set_mtime(p, 2000);
    snprintf(p, sizeof p, "%s/1/eval/20260101-000002", g_dir);
    CHECK(mf_mkdirs(p) == 0);
    snprintf(p, sizeof p, "%s/1/eval/20260101-000002/eval.json", g_dir);
    put(p, EVAL("40", "0.625"));
    make_point(2, "failed", "sample: sampler | broke", 5, NULL);
    make_point(3, "finished", NULL, 12,
               "{\"metrics\":[{\"metric\":\"fid_lenet_v1\",\"value\":12.5},{\"metric\":\"precision_lenet_v1_k3\",\"value\":0.75},"
               "{\"metric\":\"classifier_score_lenet_v1\",\"value\":9.1}]}\n");
    make_point(4, "finished", NULL, 200, EVAL("30", "0.5"));
    make_point(5, "finished", NULL, 20, EVAL("25.25", "0.5"));
    make_point(6, NULL, NULL, 0, NULL); /* missing */
    make_point(7, "finished", NULL, -1, EVAL("null", "0.5"));
}

static void test_csv(void) {
    char *csv = read_out("summary.csv");
    const char *want =
        "point,model.channels,sample.steps,sample.sampler,status,train_run,fid_lenet_v1,precision_lenet_v1_k3,"
        "classifier_score_lenet_v1,wall_s\n"
        "0,16,1,euler,finished,0,50,0.5,,100.0\n"
        "1,16,1,heun,finished,0,40,0.625,,10.0\n"
        "2,16,50,euler,failed,0,,,,5.0\n"
        "3,16,50,heun,finished,0,12.5,0.75,9.1,12.0\n"
        "4,32,1,euler,finished,4,30,0.5,,200.0\n"
        "5,32,1,heun,finished,4,25.25,0.5,,20.0\n"
        "6,32,50,euler,missing,4,,,,\n"
        "7,32,50,heun,finished,4,,0.5,,\n";
    CHECK_MSG(strcmp(csv, want) == 0, "summary.csv:\n%s\nwanted:\n%s", csv, want);
    free(csv);
}

static void test_md(void) {
    char *md = read_out("summary.md");
    CHECK_MSG(strstr(md, "8 points, 6 finished, 1 failed, 1 missing.") != NULL, "%s", md);
    CHECK(strstr(md, "| point | model.channels | sample.steps | sample.sampler | status | train_run | fid_lenet_v1 |") != NULL);
    CHECK(strstr(md, "| 3 | 16 | 50 | heun | finished | 0 | 12.5 | 0.75 | 9.1 | 12.0 |\n") != NULL);
    CHECK_MSG(strstr(md, "Best by fid_lenet_v1 (lower is better): point 3 (model.channels=16 sample.steps=50 "
                         "sample.sampler=heun): fid_lenet_v1 = 12.5, run `3`, trained in `0`\n") != NULL,
              "%s", md);
    CHECK_MSG(strstr(md, "## Failed points\n\n- point 2 (model.channels=16 sample.steps=50 sample.sampler=euler): "
                         "sample: sampler \\| broke (`2/log.txt`)\n") != NULL,
              "%s", md);
    CHECK(count(md, "\n- point ") == 2);
    CHECK_MSG(strstr(md, "## Points not finished\n\n- point 6 (model.channels=32 sample.steps=50 sample.sampler=euler): "
                         "missing: no status.json in ") != NULL,
              "%s", md);
    CHECK(strstr(md, "![fid_lenet_v1 against sample.sampler](plot_sample.sampler.svg)") != NULL);
    free(md);
}

static void test_plots(void) {
    /* sample.steps: 1 and 50, log x; one series per (channels, sampler) */
    char *svg = read_out("plot_sample.steps.svg");
    CHECK(strncmp(svg, "<?xml", 5) == 0 && strstr(svg, "</svg>\n") != NULL);
    CHECK(count(svg, "<g class=\"series\"") == 4);
    const char *g = series(svg, "model.channels=16 sample.sampler=euler");
    CHECK_MSG(markers(g) == 1 && lines(g) == 0, "16 euler: %d markers, %d lines", markers(g), lines(g)); /* 50 failed */
    g = series(svg, "model.channels=16 sample.sampler=heun");
    CHECK(markers(g) == 2 && lines(g) == 1);
    CHECK(strstr(g, "x=1, y=40<") != NULL && strstr(g, "x=50, y=12.5<") != NULL);
    g = series(svg, "model.channels=32 sample.sampler=euler");
    CHECK(markers(g) == 1 && lines(g) == 0); /* 50: missing */
    g = series(svg, "model.channels=32 sample.sampler=heun");
    CHECK(markers(g) == 1 && lines(g) == 0); /* 50: no metric */
    CHECK(strstr(svg, ">10</text>") != NULL); /* a log axis labels 1, 2, 5, 10, 20, 50 */
    free(svg);

    /* model.channels: 16 and 32, linear */
    svg = read_out("plot_model.channels.svg");
    CHECK(count(svg, "<g class=\"series\"") == 4);
    g = series(svg, "sample.steps=1 sample.sampler=euler");
    CHECK(markers(g) == 2 && lines(g) == 1 && strstr(g, "x=32, y=30<") != NULL);
    g = series(svg, "sample.steps=1 sample.sampler=heun");
    CHECK(markers(g) == 2 && lines(g) == 1);
    g = series(svg, "sample.steps=50 sample.sampler=euler");
    CHECK(markers(g) == 0 && lines(g) == 0);
    g = series(svg, "sample.steps=50 sample.sampler=heun");
    CHECK(markers(g) == 1 && lines(g) == 0);
    CHECK(count(svg, ", y=") == 5);
    free(svg);

    /* sample.sampler: categorical, ticks named after the values at x = 0, 1 */
    svg = read_out("plot_sample.sampler.svg");
    CHECK(count(svg, "<text class=\"category\"") == 2);
    CHECK(strstr(svg, ">euler</text>") != NULL && strstr(svg, ">heun</text>") != NULL);
    g = series(svg, "model.channels=16 sample.steps=1");
    CHECK(markers(g) == 2 && lines(g) == 1 && strstr(g, "x=0, y=50<") != NULL && strstr(g, "x=1, y=40<") != NULL);
    g = series(svg, "model.channels=16 sample.steps=50");
    CHECK(markers(g) == 1 && strstr(g, "x=1, y=12.5<") != NULL);
    g = series(svg, "model.channels=32 sample.steps=50");
    CHECK(markers(g) == 0);
    /* the category ticks sit where the markers of x = 0 and x = 1 are */
    const char *c0 = strstr(svg, "<text class=\"category\" x=\""), *m0 = strstr(series(svg, "model.channels=16 sample.steps=1"), "cx=\"");
    if (c0 && m0) {
        double cx = strtod(c0 + strlen("<text class=\"category\" x=\""), NULL), mx = strtod(m0 + 4, NULL);
        CHECK_NEAR(cx, mx, 0.01);
    } else
        CHECK(0);
    free(svg);
}

static void test_metric_from_sweep(void) {
    write_sweep("precision_lenet_v1_k3");
    CHECK_MSG(mf_sweep_report(g_dir) == 0, "%s", mf_last_error());
    char *md = read_out("summary.md");
    CHECK_MSG(strstr(md, "Best by precision_lenet_v1_k3 (higher is better): point 3 (") != NULL, "%s", md);
    CHECK(strstr(md, "precision_lenet_v1_k3 = 0.75, run `3`") != NULL);
    free(md);
    char *svg = read_out("plot_model.channels.svg");
    CHECK(strstr(svg, "against model.channels") != NULL && strstr(svg, "precision_lenet_v1_k3") != NULL);
    free(svg);

    write_sweep("no_such_metric");
    CHECK(mf_sweep_report(g_dir) == 0);
    md = read_out("summary.md");
    CHECK(strstr(md, "No finished point has no_such_metric.") != NULL);
    free(md);
    svg = read_out("plot_sample.steps.svg");
    CHECK(count(svg, ", y=") == 0); /* every point a gap */
    free(svg);
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw);

/* a failed training point: its reuse points without a folder are skipped (a Slurm task of `sweep
 * --point` ends before writing one), those that wrote a status keep it */
static void test_failed_training(void) {
    write_sweep("fid_lenet_v1");
    make_point(4, "failed", "stage 'train': loss is NaN at step 3", 7, NULL);
    char p[900];
    snprintf(p, sizeof p, "%s/4/eval.json", g_dir);
    remove(p);
    snprintf(p, sizeof p, "%s/5", g_dir);
    nftw(p, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    CHECK(mf_sweep_report(g_dir) == 0);
    char *csv = read_out("summary.csv");
    CHECK_MSG(strstr(csv, "\n4,32,1,euler,failed,4,,,,7.0\n5,32,1,heun,skipped,4,,,,\n6,32,50,euler,skipped,4,,,,\n"
                          "7,32,50,heun,finished,4,,0.5,,\n") != NULL,
              "%s", csv);
    free(csv);
    char *md = read_out("summary.md");
    CHECK_MSG(strstr(md, "- point 6 (model.channels=32 sample.steps=50 sample.sampler=euler): skipped: its training point 4 failed\n") != NULL,
              "%s", md);
    CHECK(strstr(md, "- point 4 (model.channels=32 sample.steps=1 sample.sampler=euler): stage 'train': loss is NaN at step 3 (`4/log.txt`)\n") != NULL);
    free(md);
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

int main(void) {
    build();
    CHECK_MSG(mf_sweep_report(g_dir) == 0, "%s", mf_last_error());
    test_csv();
    test_md();
    test_plots();
    /* idempotent: the same files again */
    char *a = read_out("summary.csv");
    CHECK(mf_sweep_report(g_dir) == 0);
    char *b = read_out("summary.csv");
    CHECK(strcmp(a, b) == 0);
    free(a), free(b);
    test_metric_from_sweep();
    test_failed_training();
    write_sweep("fid_lenet_v1");
    CHECK(mf_sweep_report(g_dir) == 0);

    char missing[700];
    snprintf(missing, sizeof missing, "%s/nope", g_dir);
    CHECK(mf_sweep_report(missing) != 0);
    CHECK_ERR_CONTAINS("nope/sweep.yaml");

    char root[700];
    snprintf(root, sizeof root, "%s", g_dir);
    *strstr(root, "/results/") = '\0';
    if (getenv("MFPIPE_TEST_KEEP")) /* to look at the files */
        printf("kept %s\n", g_dir);
    else
        nftw(root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return mf_test_summary("test_sweep_report");
}
