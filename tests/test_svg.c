/* test_svg.c - the SVG chart writer (core/mf_svg.c) and the CSV reader of `mfpipe plot`
 * (core/mf_plot.c): nice ticks on linear and log axes, tick labels, XML escaping, the rendered
 * chart (well-formed, points where they belong, NaN and non-positive-on-log breaks, legend),
 * atomic writing, and the CSV format with its errors (file, line, column). */
#include <ctype.h>
#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mf_error.h"
#include "mf_io.h"
#include "mf_plot.h"
#include "mf_svg.h"
#include "mf_test.h"

static const char *g_dir;

/* ---- ticks ----------------------------------------------------------------------------------- */
static int ticks_are(const mf_svg_ticks *t, int n, const double *want) {
    if (t->n != n) return 0;
    for (int i = 0; i < n; i++)
        if (fabs(t->v[i] - want[i]) > 1e-9 * fmax(1, fabs(want[i]))) return 0;
    return 1;
}

static void labels_are(const mf_svg_ticks *t, const char *const *want) {
    for (int i = 0; i < t->n; i++) {
        char lab[64];
        mf_svg_tick_label(t, t->v[i], lab, sizeof lab);
        CHECK_MSG(strcmp(lab, want[i]) == 0, "tick %d: label '%s', wanted '%s'", i, lab, want[i]);
    }
}

static void test_linear_ticks(void) {
    mf_svg_ticks t;
    CHECK(mf_svg_nice_ticks(0, 1, 5, 0, &t) == 0);
    CHECK(ticks_are(&t, 6, (double[]){0, 0.2, 0.4, 0.6, 0.8, 1}));
    CHECK_NEAR(t.step, 0.2, 1e-12);
    labels_are(&t, (const char *const[]){"0.0", "0.2", "0.4", "0.6", "0.8", "1.0"});

    CHECK(mf_svg_nice_ticks(3, 97, 5, 0, &t) == 0); /* widened to multiples of the step */
    CHECK(ticks_are(&t, 6, (double[]){0, 20, 40, 60, 80, 100}));
    CHECK(t.lo == 0 && t.hi == 100);
    labels_are(&t, (const char *const[]){"0", "20", "40", "60", "80", "100"});

    CHECK(mf_svg_nice_ticks(-7.3, 2.1, 5, 0, &t) == 0);
    CHECK(ticks_are(&t, 7, (double[]){-8, -6, -4, -2, 0, 2, 4}));
    labels_are(&t, (const char *const[]){"-8", "-6", "-4", "-2", "0", "2", "4"});

    CHECK(mf_svg_nice_ticks(0.0012, 0.0047, 4, 0, &t) == 0);
    CHECK(ticks_are(&t, 5, (double[]){0.001, 0.002, 0.003, 0.004, 0.005}));
    labels_are(&t, (const char *const[]){"0.001", "0.002", "0.003", "0.004", "0.005"});

    CHECK(mf_svg_nice_ticks(-1, 1, 4, 0, &t) == 0); /* 0 is labelled 0, never -0 */
    CHECK(ticks_are(&t, 5, (double[]){-1, -0.5, 0, 0.5, 1}));
    labels_are(&t, (const char *const[]){"-1.0", "-0.5", "0.0", "0.5", "1.0"});

    CHECK(mf_svg_nice_ticks(1500, 98000, 5, 0, &t) == 0);
    CHECK(ticks_are(&t, 6, (double[]){0, 20000, 40000, 60000, 80000, 100000}));
    CHECK(mf_svg_nice_ticks(0, 3e7, 4, 0, &t) == 0); /* large values: short exponent form */
    CHECK(ticks_are(&t, 4, (double[]){0, 1e7, 2e7, 3e7}));
    labels_are(&t, (const char *const[]){"0", "1e7", "2e7", "3e7"});
    CHECK(mf_svg_nice_ticks(0, 2e-5, 4, 0, &t) == 0); /* tiny steps too */
    CHECK(ticks_are(&t, 5, (double[]){0, 5e-6, 1e-5, 1.5e-5, 2e-5}));
    labels_are(&t, (const char *const[]){"0", "5e-6", "1e-5", "1.5e-5", "2e-5"});

    CHECK(mf_svg_nice_ticks(5, 5, 5, 0, &t) == 0); /* one value: widened by 10% */
    CHECK(t.lo <= 4.5 && t.hi >= 5.5 && t.n >= 2);
    CHECK(mf_svg_nice_ticks(0, 0, 5, 0, &t) == 0);
    CHECK(t.lo <= -1 && t.hi >= 1);

    /* properties over many ranges: the axis covers the data, 2..target+3 ticks, steps 1/2/5 x 10^k,
     * every tick a multiple of the step */
    int bad = 0;
    for (int i = 0; i < 2000; i++) {
        double a = (i * 7919 % 1000 - 500) * pow(10, i % 13 - 6), span = (1 + i * 104729 % 997) * pow(10, i % 11 - 5);
        double b = a + span;
        int target = 2 + i % 9;
        if (mf_svg_nice_ticks(a, b, target, 0, &t) != 0) {
            bad++;
            continue;
        }
        double m = t.step / pow(10, floor(log10(t.step) + 1e-9));
        int ok = t.lo <= a + 1e-6 * t.step && t.hi >= b - 1e-6 * t.step && t.n >= 2 && t.n <= target + 3 &&
                 (fabs(m - 1) < 1e-6 || fabs(m - 2) < 1e-6 || fabs(m - 5) < 1e-6);
        for (int k = 0; k < t.n && ok; k++) {
            double q = t.v[k] / t.step;
            ok = fabs(q - round(q)) < 1e-6 + 1e-12 * fabs(q) && (k == 0 || t.v[k] > t.v[k - 1]);
        }
        if (!ok) {
            if (bad < 5) fprintf(stderr, "ticks of [%g, %g] target %d: %d ticks, step %g, axis [%g, %g]\n", a, b,
                                 target, t.n, t.step, t.lo, t.hi);
            bad++;
        }
    }
    CHECK_MSG(bad == 0, "%d ranges with bad ticks", bad);

    CHECK(mf_svg_nice_ticks(2, 1, 5, 0, &t) == -1);
    CHECK_ERR_CONTAINS("bad axis range");
    CHECK(mf_svg_nice_ticks(0, NAN, 5, 0, &t) == -1);
}

static void test_log_ticks(void) {
    mf_svg_ticks t;
    CHECK(mf_svg_nice_ticks(1, 1000, 5, 1, &t) == 0); /* decades, minor ticks between */
    CHECK(t.lo == 1 && t.hi == 1000);
    CHECK(ticks_are(&t, 4, (double[]){1, 10, 100, 1000}));
    labels_are(&t, (const char *const[]){"1", "10", "100", "1000"});
    CHECK(t.n_minor == 24);
    CHECK_NEAR(t.minor[0], 2, 1e-12);
    CHECK_NEAR(t.minor[23], 900, 1e-9);

    CHECK(mf_svg_nice_ticks(3, 1990, 5, 1, &t) == 0); /* bounds at 1-2-5 values, decades inside */
    CHECK(t.lo == 2 && t.hi == 2000);
    CHECK(ticks_are(&t, 3, (double[]){10, 100, 1000}));

    CHECK(mf_svg_nice_ticks(4, 40.5, 5, 1, &t) == 0); /* about a decade: every 1-2-5 value */
    CHECK(t.lo == 2 && t.hi == 50);
    CHECK(ticks_are(&t, 5, (double[]){2, 5, 10, 20, 50}));
    CHECK(t.n_minor == 0);

    CHECK(mf_svg_nice_ticks(0.003, 0.03, 5, 1, &t) == 0);
    CHECK(ticks_are(&t, 5, (double[]){0.002, 0.005, 0.01, 0.02, 0.05}));
    labels_are(&t, (const char *const[]){"0.002", "0.005", "0.01", "0.02", "0.05"});

    CHECK(mf_svg_nice_ticks(100, 100, 5, 1, &t) == 0); /* one value: the 1-2-5 neighbours */
    CHECK(ticks_are(&t, 3, (double[]){50, 100, 200}));

    CHECK(mf_svg_nice_ticks(1e-6, 1e6, 5, 1, &t) == 0); /* 13 decades: every second one */
    CHECK(ticks_are(&t, 7, (double[]){1e-6, 1e-4, 1e-2, 1, 1e2, 1e4, 1e6}));
    labels_are(&t, (const char *const[]){"1e-6", "0.0001", "0.01", "1", "100", "10000", "1e6"});
    CHECK(t.n_minor == 0);

    CHECK(mf_svg_nice_ticks(1e-300, 1e300, 5, 1, &t) == 0); /* 601 decades */
    CHECK(t.n >= 2 && t.n <= 12);
    CHECK(t.lo <= 1e-300 && t.hi >= 1e300);

    CHECK(mf_svg_nice_ticks(0, 10, 5, 1, &t) == -1);
    CHECK_ERR_CONTAINS("log axis needs positive values");
}

/* ---- escaping -------------------------------------------------------------------------------- */
static void escaped_is(const char *in, const char *want) {
    mf_buf b = {0};
    mf_svg_escape(&b, in);
    CHECK_MSG(strcmp(b.s, want) == 0, "escape of '%s' gave '%s', wanted '%s'", in, b.s, want);
    mf_buf_free(&b);
}

static void test_escape(void) {
    escaped_is("a<b & \"c\" 'd'>", "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;");
    escaped_is("&amp;", "&amp;amp;");
    escaped_is("", "");
    escaped_is("FID \xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "FID \xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    escaped_is("bad \xff byte", "bad ? byte");
    escaped_is("ctl\x01\x1f\x7f tab\t", "ctl??? tab\t");
    escaped_is("overlong \xc0\xaf", "overlong ??");
    escaped_is("surrogate \xed\xa0\x80", "surrogate ???");
    escaped_is("cut \xe2\x82", "cut ??");
    escaped_is("nonchar \xef\xbf\xbf", "nonchar ???");
}

/* ---- a structural XML check: balanced tags, quoted attributes, entities only ------------------ */
static int xml_wellformed(const char *s, char *why, size_t cap) {
    char stack[64][64];
    int depth = 0, roots = 0;
    const char *p = s;
    while (*p) {
        if (*p == '<') {
            if (p[1] == '?') {
                const char *e = strstr(p, "?>");
                if (!e || p != s) return snprintf(why, cap, "bad declaration"), 0;
                p = e + 2;
                continue;
            }
            int closing = p[1] == '/';
            p += 1 + closing;
            char name[64];
            int n = 0;
            while (*p && (isalnum((unsigned char)*p) || *p == '-' || *p == ':' || *p == '_') && n < 63) name[n++] = *p++;
            name[n] = '\0';
            if (!n) return snprintf(why, cap, "tag without a name at %ld", (long)(p - s)), 0;
            if (closing) {
                if (*p != '>') return snprintf(why, cap, "bad closing tag %s", name), 0;
                if (!depth || strcmp(stack[depth - 1], name) != 0)
                    return snprintf(why, cap, "</%s> closes <%s>", name, depth ? stack[depth - 1] : "(nothing)"), 0;
                depth--;
                p++;
                continue;
            }
            for (;;) { /* attributes */
                while (*p == ' ' || *p == '\n') p++;
                if (*p == '>' || (p[0] == '/' && p[1] == '>')) break;
                int an = 0;
                while (*p && (isalnum((unsigned char)*p) || *p == '-' || *p == ':' || *p == '_')) p++, an++;
                if (!an || *p != '=' || p[1] != '"') return snprintf(why, cap, "bad attribute in <%s>", name), 0;
                p += 2;
                while (*p && *p != '"') {
                    if (*p == '<') return snprintf(why, cap, "'<' in an attribute of <%s>", name), 0;
                    p++;
                }
                if (!*p) return snprintf(why, cap, "unterminated attribute in <%s>", name), 0;
                p++;
            }
            if (depth == 0 && ++roots > 1) return snprintf(why, cap, "two root elements"), 0;
            if (*p == '/') {
                p += 2;
            } else {
                if (depth == 64) return snprintf(why, cap, "too deep"), 0;
                snprintf(stack[depth++], sizeof stack[0], "%s", name);
                p++;
            }
        } else if (*p == '&') {
            static const char *ent[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"};
            size_t k;
            for (k = 0; k < 5; k++)
                if (strncmp(p, ent[k], strlen(ent[k])) == 0) break;
            if (k == 5) return snprintf(why, cap, "bare '&' at %ld", (long)(p - s)), 0;
            p += strlen(ent[k]);
        } else {
            if (depth == 0 && !(*p == '\n' || *p == ' '))
                return snprintf(why, cap, "text outside the root at %ld", (long)(p - s)), 0;
            p++;
        }
    }
    if (depth) return snprintf(why, cap, "<%s> not closed", stack[depth - 1]), 0;
    if (roots != 1) return snprintf(why, cap, "no root element"), 0;
    return 1;
}

static int count(const char *s, const char *needle) {
    int n = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

static void test_render(void) {
    char why[256];
    mf_svg_chart c;
    mf_svg_chart_init(&c, "FID <vs> NFE & \"more\"", "NFE", "FID");
    int a = mf_svg_add_series(&c, "euler <1>");
    int b = mf_svg_add_series(&c, "heun");
    CHECK(a == 0 && b == 1);
    CHECK(mf_svg_find_series(&c, "heun") == 1 && mf_svg_find_series(&c, "rk4") == -1);
    double ax[] = {0, 2, 4, 6, 8, 10}, ay[] = {90, 70, NAN, 40, 35, 30};
    for (int i = 0; i < 6; i++) mf_svg_add_point(&c, a, ax[i], ay[i]);
    mf_svg_add_point(&c, b, 1, 80);
    mf_svg_add_point(&c, b, 3, 50);
    mf_svg_add_point(&c, b, INFINITY, 45); /* not drawn, breaks: the last point stands alone */
    mf_svg_add_point(&c, b, 7, 32.5);
    mf_buf out = {0};
    mf_svg_render(&c, &out);
    const char *s = out.s;
    CHECK(strncmp(s, "<svg xmlns=\"http://www.w3.org/2000/svg\"", 39) == 0);
    CHECK(strcmp(s + out.len - 7, "</svg>\n") == 0);
    CHECK_MSG(xml_wellformed(s, why, sizeof why), "%s", why);
    CHECK(strstr(s, "<title>FID &lt;vs&gt; NFE &amp; &quot;more&quot;</title>") != NULL);
    CHECK(strstr(s, ">NFE</text>") && strstr(s, ">FID</text>"));
    CHECK(strstr(s, "data-series=\"euler &lt;1&gt;\"") != NULL);
    CHECK(strstr(s, "<g class=\"legend\">") && strstr(s, ">heun</text>") && strstr(s, ">euler &lt;1&gt;</text>"));
    /* the points, as tooltips: 5 of euler (NaN left out), 3 of heun (inf left out) */
    CHECK(count(s, "<title>euler &lt;1&gt;: x=") == 5);
    CHECK(count(s, "<title>heun: x=") == 3);
    CHECK(strstr(s, "<title>euler &lt;1&gt;: x=6, y=40</title>") != NULL);
    CHECK(strstr(s, "<title>heun: x=7, y=32.5</title>") != NULL);
    CHECK(strstr(s, "nan") == NULL && strstr(s, "inf") == NULL);
    /* lines: euler 0-2 and 6-10, heun 1-3 (7 alone): three polylines, with 2, 3 and 2 points */
    CHECK(count(s, "<polyline") == 3);
    /* the euler line starts at (0, 90): the left edge of the frame (the x axis is [0, 10]) */
    const char *fr = strstr(s, "<rect class=\"frame\"");
    double fx = 0, fy = 0, fw = 0, fh = 0;
    CHECK(fr && sscanf(fr, "<rect class=\"frame\" x=\"%lf\" y=\"%lf\" width=\"%lf\" height=\"%lf\"", &fx, &fy, &fw, &fh) == 4);
    const char *pl = strstr(s, "points=\"");
    double x0 = -1, y0 = -1, x1 = -1, y1 = -1;
    CHECK(pl && sscanf(pl, "points=\"%lf,%lf %lf,%lf\"", &x0, &y0, &x1, &y1) == 4);
    CHECK_NEAR(x0, fx, 0.01);
    CHECK_NEAR(x1, fx + fw * 0.2, 0.01); /* x = 2 of [0, 10] */
    CHECK(y0 >= fy - 0.01 && y0 < fy + fh && y1 > y0); /* higher FID is higher up: smaller y */
    mf_buf_free(&out);
    mf_svg_chart_free(&c);

    /* log axes: values <= 0 are left out and break the line; axis labels at decades */
    mf_svg_chart_init(&c, NULL, NULL, NULL);
    c.logx = c.logy = 1;
    int s0 = mf_svg_add_series(&c, "");
    double lx[] = {1, 10, 100, 1000, 10000}, ly[] = {100, 30, 0, 12, 11};
    for (int i = 0; i < 5; i++) mf_svg_add_point(&c, s0, lx[i], ly[i]);
    mf_svg_render(&c, &out);
    CHECK_MSG(xml_wellformed(out.s, why, sizeof why), "%s", why);
    CHECK(count(out.s, "<title>x=") == 4);
    CHECK(count(out.s, "<polyline") == 2);
    CHECK(strstr(out.s, ">1000</text>") && strstr(out.s, ">10000</text>"));
    CHECK(strstr(out.s, "class=\"legend\"") == NULL); /* no named series, no legend */
    CHECK(strstr(out.s, "class=\"title\"") == NULL);
    mf_buf_free(&out);
    mf_svg_chart_free(&c);

    /* nothing to draw, many series, odd sizes: still well-formed */
    mf_svg_chart_init(&c, "empty", "x", "y");
    c.width = 10, c.height = 10;
    mf_svg_render(&c, &out);
    CHECK_MSG(xml_wellformed(out.s, why, sizeof why), "%s", why);
    CHECK(strstr(out.s, "width=\"240\" height=\"160\"") != NULL);
    mf_buf_free(&out);
    for (int i = 0; i < 25; i++) {
        char name[32];
        snprintf(name, sizeof name, "s%02d", i);
        int k = mf_svg_add_series(&c, name);
        mf_svg_add_point(&c, k, i, NAN);
        mf_svg_add_point(&c, k, i, i * i);
    }
    mf_svg_render(&c, &out);
    CHECK_MSG(xml_wellformed(out.s, why, sizeof why), "%s", why);
    CHECK(count(out.s, "<g class=\"series\"") == 25);
    CHECK(strstr(out.s, "<title>s24: x=24, y=576</title>") != NULL);
    mf_buf_free(&out);
    mf_svg_chart_free(&c);

    /* values near the doubles' limits: finite coordinates all the same */
    mf_svg_chart_init(&c, "huge", "x", "y");
    s0 = mf_svg_add_series(&c, "h");
    mf_svg_add_point(&c, s0, -1.5e308, 1e-300);
    mf_svg_add_point(&c, s0, 1.5e308, 2e-300);
    mf_svg_render(&c, &out);
    CHECK_MSG(xml_wellformed(out.s, why, sizeof why), "%s", why);
    CHECK(strstr(out.s, "nan") == NULL && strstr(out.s, "inf") == NULL);
    CHECK(count(out.s, "<polyline") == 1);
    mf_buf_free(&out);
    mf_svg_chart_free(&c);
}

static void test_write(void) {
    mf_svg_chart c;
    mf_svg_chart_init(&c, "t", "x", "y");
    int s = mf_svg_add_series(&c, "a");
    mf_svg_add_point(&c, s, 1, 2);
    mf_svg_add_point(&c, s, 2, 3);
    char *sub = mf_xasprintf("%s/w", g_dir);
    CHECK(mkdir(sub, 0777) == 0);
    char *path = mf_xasprintf("%s/chart.svg", sub);
    CHECK(mf_svg_write(&c, path) == 0);
    uint8_t *data = NULL;
    size_t len = 0;
    int gz = 0;
    CHECK(mf_read_file(path, &data, &len, &gz) == 0);
    mf_buf want = {0};
    mf_buf_puts(&want, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    mf_svg_render(&c, &want);
    CHECK(data && len == want.len && memcmp(data, want.s, len) == 0);
    char why[256], *text = mf_xmalloc(len + 1); /* the file's bytes are not NUL-terminated */
    if (data) memcpy(text, data, len);
    text[data ? len : 0] = '\0';
    CHECK_MSG(xml_wellformed(text, why, sizeof why), "%s", why);
    free(text);
    free(data);
    mf_buf_free(&want);
    int files = 0; /* no temporary file left beside it */
    DIR *d = opendir(sub);
    for (struct dirent *e; d && (e = readdir(d));) files += e->d_name[0] != '.';
    if (d) closedir(d);
    CHECK(files == 1);
    char *bad = mf_xasprintf("%s/no/such/dir/chart.svg", g_dir);
    CHECK(mf_svg_write(&c, bad) == -1);
    CHECK_ERR_CONTAINS(bad);
    free(bad), free(path), free(sub);
    mf_svg_chart_free(&c);
}

/* ---- the CSV reader -------------------------------------------------------------------------- */
static char *write_text(const char *name, const char *text) {
    char *p = mf_xasprintf("%s/%s", g_dir, name);
    FILE *f = fopen(p, "wb");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        perror(p);
        exit(2);
    }
    return p;
}

static void table_fails(const char *name, const char *text, const char *needle) {
    char *p = write_text(name, text);
    mf_table t;
    CHECK_MSG(mf_table_read(p, &t) == -1, "%s read", name);
    CHECK_ERR_CONTAINS(needle);
    free(p);
}

static void test_table(void) {
    char *p = write_text("ok.csv", "\xEF\xBB\xBF# a comment line\r\n"
                                   "run, label ,\"sam,pler\",nfe,fid\r\n"
                                   "\r\n"
                                   "r1,a,\"heun, 2\",10,71.5\r\n"
                                   "  r1 , \"say \"\"hi\"\"\" , euler ,  20 ,\r\n"
                                   "r2,,x,1e2,nan\n"
                                   "   # indented comment\n"
                                   "r3,b,y,-,NA");
    mf_table t;
    CHECK(mf_table_read(p, &t) == 0);
    CHECK(t.ncol == 5 && t.nrow == 4);
    CHECK(strcmp(t.head[1], "label") == 0 && strcmp(t.head[2], "sam,pler") == 0);
    CHECK(mf_table_column(&t, "sam,pler") == 2 && mf_table_column(&t, "fid") == 4);
    CHECK(strcmp(mf_table_cell(&t, 0, 2), "heun, 2") == 0);
    CHECK(strcmp(mf_table_cell(&t, 1, 0), "r1") == 0 && strcmp(mf_table_cell(&t, 1, 1), "say \"hi\"") == 0);
    CHECK(strcmp(mf_table_cell(&t, 1, 2), "euler") == 0 && strcmp(mf_table_cell(&t, 1, 4), "") == 0);
    CHECK(t.line[0] == 4 && t.line[1] == 5 && t.line[2] == 6 && t.line[3] == 8);
    double v = 0;
    CHECK(mf_table_number(&t, 0, 3, &v) == 0 && v == 10);
    CHECK(mf_table_number(&t, 0, 4, &v) == 0 && v == 71.5);
    CHECK(mf_table_number(&t, 1, 4, &v) == 0 && isnan(v)); /* empty */
    CHECK(mf_table_number(&t, 2, 3, &v) == 0 && v == 100);
    CHECK(mf_table_number(&t, 2, 4, &v) == 0 && isnan(v)); /* nan */
    CHECK(mf_table_number(&t, 3, 3, &v) == 0 && isnan(v)); /* - */
    CHECK(mf_table_number(&t, 3, 4, &v) == 0 && isnan(v)); /* NA */
    char *want = mf_xasprintf("%s:4:1: column 'run': 'r1' is not a number", p);
    CHECK(mf_table_number(&t, 0, 0, &v) == -1);
    CHECK_ERR_CONTAINS(want);
    free(want);
    want = mf_xasprintf("%s:5:8: column 'label': 'say \"hi\"' is not a number", p);
    CHECK(mf_table_number(&t, 1, 1, &v) == -1);
    CHECK_ERR_CONTAINS(want);
    free(want);
    CHECK(mf_table_column(&t, "fidd") == -1);
    CHECK_ERR_CONTAINS("no column 'fidd' (the header has: run, label, sam,pler, nfe, fid)");
    mf_table_free(&t);
    free(p);

    p = write_text("range.csv", "x,y\n1,1e999\n");
    CHECK(mf_table_read(p, &t) == 0);
    CHECK(mf_table_number(&t, 0, 1, &v) == -1);
    CHECK_ERR_CONTAINS("range.csv:2:3: column 'y': '1e999' is out of range");
    mf_table_free(&t);
    free(p);
    p = write_text("dup.csv", "x,y,x\n1,2,3\n");
    CHECK(mf_table_read(p, &t) == 0);
    CHECK(mf_table_column(&t, "y") == 1);
    CHECK(mf_table_column(&t, "x") == -1);
    CHECK_ERR_CONTAINS("column 'x' appears twice in the header (fields 1 and 3)");
    mf_table_free(&t);
    free(p);

    table_fails("short.csv", "a,b,c\n1,2,3\n4,5\n", "short.csv:3:4: 2 fields, but the header (line 1) has 3");
    table_fails("long.csv", "a,b\n1,2\n# x\n1,2,333\n", "long.csv:4:5: 3 fields, but the header (line 1) has 2");
    table_fails("quote.csv", "a,b\n1,\"2\n", "quote.csv:2:3: the quoted field has no closing quote");
    table_fails("after.csv", "a,b\n\"1\"x,2\n", "after.csv:2:4: text after the closing quote");
    table_fails("empty.csv", "# only a comment\n\n", "empty.csv: no header row");
    char *nul = mf_xasprintf("%s/nul.csv", g_dir);
    FILE *f = fopen(nul, "wb");
    fwrite("a,b\n1,\0002\n", 1, 9, f);
    fclose(f);
    CHECK(mf_table_read(nul, &t) == -1);
    CHECK_ERR_CONTAINS(":2:3: a NUL byte");
    free(nul);
    char *missing = mf_xasprintf("%s/missing.csv", g_dir);
    CHECK(mf_table_read(missing, &t) == -1);
    CHECK_ERR_CONTAINS(missing);
    free(missing);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

int main(void) {
    g_dir = mf_test_tmpdir();
    test_linear_ticks();
    test_log_ticks();
    test_escape();
    test_render();
    test_write();
    test_table();
    nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return mf_test_summary("test_svg");
}
