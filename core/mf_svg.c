/* mf_svg.c - line/scatter charts as SVG (mf_svg.h). */
#include "mf_svg.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "mf_error.h"
#include "mf_io.h"

/* ---- the chart ------------------------------------------------------------------------------- */
void mf_svg_chart_init(mf_svg_chart *c, const char *title, const char *xlabel, const char *ylabel) {
    memset(c, 0, sizeof *c);
    c->title = mf_xstrdup(title ? title : "");
    c->xlabel = mf_xstrdup(xlabel ? xlabel : "");
    c->ylabel = mf_xstrdup(ylabel ? ylabel : "");
}

void mf_svg_chart_free(mf_svg_chart *c) {
    if (!c) return;
    for (int i = 0; i < c->n_series; i++) {
        free(c->series[i].name);
        free(c->series[i].x);
        free(c->series[i].y);
    }
    free(c->series);
    free(c->title);
    free(c->xlabel);
    free(c->ylabel);
    memset(c, 0, sizeof *c);
}

int mf_svg_add_series(mf_svg_chart *c, const char *name) {
    if (c->n_series == c->cap_series) {
        c->cap_series = c->cap_series ? 2 * c->cap_series : 4;
        c->series = mf_xrealloc(c->series, sizeof *c->series * (size_t)c->cap_series);
    }
    mf_svg_series *s = &c->series[c->n_series];
    memset(s, 0, sizeof *s);
    s->name = mf_xstrdup(name ? name : "");
    return c->n_series++;
}

int mf_svg_find_series(const mf_svg_chart *c, const char *name) {
    for (int i = 0; i < c->n_series; i++)
        if (strcmp(c->series[i].name, name ? name : "") == 0) return i;
    return -1;
}

void mf_svg_add_point(mf_svg_chart *c, int series, double x, double y) {
    MF_ASSERT(series >= 0 && series < c->n_series);
    mf_svg_series *s = &c->series[series];
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 16;
        s->x = mf_xrealloc(s->x, sizeof *s->x * s->cap);
        s->y = mf_xrealloc(s->y, sizeof *s->y * s->cap);
    }
    s->x[s->n] = x;
    s->y[s->n] = y;
    s->n++;
}

/* ---- text ------------------------------------------------------------------------------------ */
/* Length of the valid UTF-8 sequence (of an XML character) at p, or 0. */
static int utf8_len(const unsigned char *p) {
    unsigned c = p[0];
    if (c < 0x80) return 1;
    int len = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    for (int i = 1; i < len; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    if (len == 3) {
        if (c == 0xE0 && p[1] < 0xA0) return 0;                  /* overlong */
        if (c == 0xED && p[1] > 0x9F) return 0;                  /* surrogates */
        if (c == 0xEF && p[1] == 0xBF && p[2] >= 0xBE) return 0; /* U+FFFE, U+FFFF: not XML characters */
    } else if (len == 4) {
        if (c == 0xF0 && p[1] < 0x90) return 0; /* overlong */
        if (c == 0xF4 && p[1] > 0x8F) return 0; /* beyond U+10FFFF */
    }
    return len;
}

void mf_svg_escape(mf_buf *b, const char *s) {
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    mf_buf_puts(b, "");
    while (*p) {
        unsigned c = *p;
        int len = utf8_len(p);
        if (len > 1) {
            mf_buf_printf(b, "%.*s", len, (const char *)p);
            p += len;
            continue;
        }
        p++;
        switch (c) {
        case '&': mf_buf_puts(b, "&amp;"); break;
        case '<': mf_buf_puts(b, "&lt;"); break;
        case '>': mf_buf_puts(b, "&gt;"); break;
        case '"': mf_buf_puts(b, "&quot;"); break;
        case '\'': mf_buf_puts(b, "&apos;"); break;
        default:
            if (len == 0 || (c < 0x20 && c != '\t') || c == 0x7f) mf_buf_puts(b, "?");
            else mf_buf_printf(b, "%c", (char)c);
        }
    }
}

/* Characters (code points) of s, for the width of the legend and tick labels. */
static int text_chars(const char *s) {
    int n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p & 0xC0) != 0x80) n++;
    return n;
}

/* ---- ticks ----------------------------------------------------------------------------------- */
static double pow10i(int k) {
    if (k >= 0 && k <= 22) {
        double v = 1;
        for (int i = 0; i < k; i++) v *= 10;
        return v;
    }
    if (k < 0 && k >= -22) return 1.0 / pow10i(-k);
    return pow(10.0, k);
}

/* The 1-2-5 sequence: value of index i is {1, 2, 5}[i mod 3] x 10^(i div 3). */
static double seq125(int i) {
    static const double d[3] = {1, 2, 5};
    int k = i >= 0 ? i / 3 : -((-i + 2) / 3);
    return d[i - 3 * k] * pow10i(k);
}
/* Index of the largest 1-2-5 value <= v (v > 0), with a relative tolerance. */
static int seq125_floor(double v) {
    int i = 3 * (int)floor(log10(v));
    while (seq125(i) > v * (1 + 1e-9)) i--;
    while (seq125(i + 1) <= v * (1 + 1e-9)) i++;
    return i;
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

static int ticks_linear(double lo, double hi, int target, mf_svg_ticks *t) {
    if (lo == hi) {
        double d = lo == 0 ? 1 : fabs(lo) * 0.1;
        lo -= d;
        hi += d;
    }
    double range = hi - lo;
    if (!isfinite(range) || range <= 0) { /* beyond the doubles' range: the ends only */
        t->lo = lo, t->hi = hi, t->n = 2, t->v[0] = lo, t->v[1] = hi, t->step = 0;
        return 0;
    }
    double raw = range / target, mag = pow10i((int)floor(log10(raw)));
    double f = raw / mag;
    double step = (f <= 1 + 1e-9 ? 1 : f <= 2 + 1e-9 ? 2 : f <= 5 + 1e-9 ? 5 : 10) * mag;
    double k0 = floor(lo / step + 1e-9), k1 = ceil(hi / step - 1e-9);
    if (k1 <= k0) k1 = k0 + 1;
    int n = (int)(k1 - k0) + 1;
    MF_ASSERT(n <= MF_SVG_MAX_TICKS);
    t->step = step;
    for (int i = 0; i < n; i++) {
        double v = (k0 + i) * step;
        t->v[i] = fabs(v) < step * 1e-9 ? 0 : v;
    }
    t->n = n;
    t->lo = t->v[0];
    t->hi = t->v[n - 1];
    return 0;
}

static int ticks_log(double lo, double hi, mf_svg_ticks *t) {
    int i0 = seq125_floor(lo), i1 = seq125_floor(hi);
    if (seq125(i1) < hi * (1 - 1e-9)) i1++;
    if (i0 == i1) i0--, i1++;
    double a = seq125(i0), b = seq125(i1);
    if (!(a > 0) || !isfinite(a)) a = lo;
    if (!(b > 0) || !isfinite(b)) b = hi;
    t->lo = a, t->hi = b, t->step = 0;
    t->n = t->n_minor = 0;
    if (i1 - i0 + 1 <= 8) {
        for (int i = i0; i <= i1; i++) t->v[t->n++] = seq125(i);
    } else {
        int e0 = (int)ceil(log10(a) - 1e-9), e1 = (int)floor(log10(b) + 1e-9);
        int ndec = e1 - e0 + 1, s = 1;
        for (int j = 0; ndec > 10 * s; j++) s = (int)seq125(j + 1); /* 2, 5, 10, 20, ... */
        int first = e0 % s == 0 ? e0 : e0 + (s - ((e0 % s) + s) % s);
        for (int e = first; e <= e1 && t->n < MF_SVG_MAX_TICKS; e += s) t->v[t->n++] = pow10i(e);
        if (t->n < 2) { /* cannot happen with more than 8 1-2-5 values, but keep two labels */
            t->n = 2, t->v[0] = a, t->v[1] = b;
        }
        if (e1 - e0 <= 6) /* unlabelled 2..9 x 10^k */
            for (int e = e0 - 1; e <= e1; e++)
                for (int d = 2; d <= 9; d++) {
                    double v = d * pow10i(e);
                    if (v > a * (1 + 1e-9) && v < b * (1 - 1e-9) && t->n_minor < MF_SVG_MAX_TICKS)
                        t->minor[t->n_minor++] = v;
                }
    }
    return 0;
}

int mf_svg_nice_ticks(double lo, double hi, int target, int log, mf_svg_ticks *t) {
    memset(t, 0, sizeof *t);
    t->log = log != 0;
    if (!isfinite(lo) || !isfinite(hi) || lo > hi)
        return mf_fail("plot: bad axis range [%g, %g]", lo, hi);
    if (log) {
        if (!(lo > 0)) return mf_fail("plot: a log axis needs positive values (the range starts at %g)", lo);
        return ticks_log(lo, hi, t);
    }
    return ticks_linear(lo, hi, clampi(target, 2, 20), t);
}

/* "1e+06" -> "1e6", "2.5e-05" -> "2.5e-5" */
static void tidy_exponent(char *s) {
    char *e = strchr(s, 'e');
    if (!e) return;
    char *p = e + 1, *w = e + 1;
    if (*p == '+') p++;
    else if (*p == '-') *w++ = *p++;
    while (*p == '0' && p[1]) p++;
    memmove(w, p, strlen(p) + 1);
}

void mf_svg_tick_label(const mf_svg_ticks *t, double v, char *buf, size_t cap) {
    if (t->log) {
        int k = (int)floor(log10(v) + 1e-9);
        double d = v / pow10i(k);
        if (k >= -4 && k <= 5) snprintf(buf, cap, "%.*f", k < 0 ? -k + (fabs(d - round(d)) > 1e-6) : 0, v);
        else snprintf(buf, cap, "%.3ge%d", d, k);
        return;
    }
    double step = t->step > 0 ? t->step : fabs(t->hi - t->lo);
    if (!isfinite(step) || !(step > 0)) {
        snprintf(buf, cap, "%.6g", v);
        tidy_exponent(buf);
        return;
    }
    if (fabs(v) < step * 1e-9) v = 0;
    double big = fmax(fabs(t->lo), fabs(t->hi));
    if (big >= 1e6 || step < 1e-4) {
        int digits = (int)floor(log10(big > 0 ? big : 1)) - (int)floor(log10(step) + 1e-9) + 1;
        snprintf(buf, cap, "%.*g", clampi(digits, 1, 17), v);
        tidy_exponent(buf);
    } else {
        int dec = -(int)floor(log10(step) + 1e-9);
        snprintf(buf, cap, "%.*f", clampi(dec, 0, 17), v);
    }
    if (strcmp(buf, "-0") == 0) snprintf(buf, cap, "0");
}

/* ---- rendering ------------------------------------------------------------------------------- */
static const char *k_colors[10] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                   "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

typedef struct axis_map {
    mf_svg_ticks t;
    double p0, p1; /* pixels of t.lo and t.hi */
} axis_map;

static int usable(double v, int log) { return isfinite(v) && (!log || v > 0); }

static double map(const axis_map *a, double v) {
    /* halves: no overflow of hi - lo for ranges near the doubles' limits */
    double f = a->t.log ? (log10(v) - log10(a->t.lo)) / (log10(a->t.hi) - log10(a->t.lo))
                        : (0.5 * v - 0.5 * a->t.lo) / (0.5 * a->t.hi - 0.5 * a->t.lo);
    return a->p0 + f * (a->p1 - a->p0);
}

/* Data range of one coordinate over all usable points (both coordinates usable). */
static void data_range(const mf_svg_chart *c, int want_y, double *lo, double *hi) {
    *lo = INFINITY, *hi = -INFINITY;
    for (int i = 0; i < c->n_series; i++) {
        const mf_svg_series *s = &c->series[i];
        for (size_t j = 0; j < s->n; j++) {
            if (!usable(s->x[j], c->logx) || !usable(s->y[j], c->logy)) continue;
            double v = want_y ? s->y[j] : s->x[j];
            *lo = fmin(*lo, v), *hi = fmax(*hi, v);
        }
    }
    if (*lo > *hi) { /* nothing to draw */
        *lo = want_y ? (c->logy ? 1 : 0) : (c->logx ? 1 : 0);
        *hi = *lo * 10 + (*lo == 0);
    }
}

static void marker(mf_buf *b, int shape, double x, double y) {
    switch (shape) {
    case 0: mf_buf_printf(b, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3.5\">", x, y); break;
    case 1: mf_buf_printf(b, "<rect x=\"%.2f\" y=\"%.2f\" width=\"6.5\" height=\"6.5\">", x - 3.25, y - 3.25); break;
    case 2:
        mf_buf_printf(b, "<polygon points=\"%.2f,%.2f %.2f,%.2f %.2f,%.2f\">", x, y - 4.5, x + 4.2, y + 3, x - 4.2, y + 3);
        break;
    default:
        mf_buf_printf(b, "<polygon points=\"%.2f,%.2f %.2f,%.2f %.2f,%.2f %.2f,%.2f\">", x, y - 4.5, x + 4.5, y, x,
                      y + 4.5, x - 4.5, y);
    }
}
static const char *k_marker_end[4] = {"</circle>", "</rect>", "</polygon>", "</polygon>"};

void mf_svg_render(const mf_svg_chart *c, mf_buf *b) {
    int W = c->width > 0 ? c->width : 720, H = c->height > 0 ? c->height : 480;
    W = W < 240 ? 240 : W, H = H < 160 ? 160 : H;
    int has_title = c->title && c->title[0], legend_chars = 0, n_legend = 0;
    for (int i = 0; i < c->n_series; i++)
        if (c->series[i].name[0]) {
            n_legend++;
            int k = text_chars(c->series[i].name);
            legend_chars = k > legend_chars ? k : legend_chars;
        }
    double legend_w = n_legend ? 54 + 7.2 * legend_chars : 0;
    if (legend_w > W / 2.0) legend_w = W / 2.0;
    double top = has_title ? 40 : 16, bottom = H - (c->xlabel[0] ? 52 : 34);

    /* y first: its labels decide the left margin, which decides the plot's width */
    axis_map ax, ay;
    double lo, hi;
    data_range(c, 1, &lo, &hi);
    int rc = mf_svg_nice_ticks(lo, hi, (int)((bottom - top) / 50), c->logy, &ay.t);
    MF_ASSERT(rc == 0); /* the data range is finite, and positive on a log axis */
    char lab[64];
    int ylab_chars = 1;
    for (int i = 0; i < ay.t.n; i++) {
        mf_svg_tick_label(&ay.t, ay.t.v[i], lab, sizeof lab);
        int k = text_chars(lab);
        ylab_chars = k > ylab_chars ? k : ylab_chars;
    }
    double left = 16 + 7.0 * ylab_chars + (c->ylabel[0] ? 22 : 0), right = W - 16 - legend_w;
    ay.p0 = bottom, ay.p1 = top;
    data_range(c, 0, &lo, &hi);
    rc = mf_svg_nice_ticks(lo, hi, (int)((right - left) / 90), c->logx, &ax.t);
    MF_ASSERT(rc == 0);
    ax.p0 = left, ax.p1 = right;

    mf_buf_printf(b,
                  "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                  "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">\n",
                  W, H, W, H);
    if (has_title) {
        mf_buf_puts(b, "<title>");
        mf_svg_escape(b, c->title);
        mf_buf_puts(b, "</title>\n");
    }
    mf_buf_printf(b, "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>\n", W, H);

    /* grid: minor lines of log axes, then the labelled ticks' lines */
    mf_buf_puts(b, "<g class=\"grid\" stroke-width=\"1\">\n");
    for (int i = 0; i < ax.t.n_minor; i++)
        mf_buf_printf(b, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#f2f2f2\"/>\n",
                      map(&ax, ax.t.minor[i]), top, map(&ax, ax.t.minor[i]), bottom);
    for (int i = 0; i < ay.t.n_minor; i++)
        mf_buf_printf(b, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#f2f2f2\"/>\n", left,
                      map(&ay, ay.t.minor[i]), right, map(&ay, ay.t.minor[i]));
    for (int i = 0; i < ax.t.n; i++)
        mf_buf_printf(b, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#dddddd\"/>\n",
                      map(&ax, ax.t.v[i]), top, map(&ax, ax.t.v[i]), bottom);
    for (int i = 0; i < ay.t.n; i++)
        mf_buf_printf(b, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#dddddd\"/>\n", left,
                      map(&ay, ay.t.v[i]), right, map(&ay, ay.t.v[i]));
    mf_buf_puts(b, "</g>\n");

    /* ticks and their labels */
    mf_buf_puts(b, "<g class=\"x-axis\" text-anchor=\"middle\" fill=\"#333333\">\n");
    for (int i = 0; i < ax.t.n; i++) {
        double x = map(&ax, ax.t.v[i]);
        mf_svg_tick_label(&ax.t, ax.t.v[i], lab, sizeof lab);
        mf_buf_printf(b, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#333333\"/>", x, bottom, x,
                      bottom + 5);
        mf_buf_printf(b, "<text x=\"%.2f\" y=\"%.2f\">%s</text>\n", x, bottom + 18, lab);
    }
    mf_buf_puts(b, "</g>\n<g class=\"y-axis\" text-anchor=\"end\" fill=\"#333333\">\n");
    for (int i = 0; i < ay.t.n; i++) {
        double y = map(&ay, ay.t.v[i]);
        mf_svg_tick_label(&ay.t, ay.t.v[i], lab, sizeof lab);
        mf_buf_printf(b, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#333333\"/>", left - 5, y, left,
                      y);
        mf_buf_printf(b, "<text x=\"%.2f\" y=\"%.2f\">%s</text>\n", left - 8, y + 4, lab);
    }
    mf_buf_puts(b, "</g>\n");
    mf_buf_printf(b,
                  "<rect class=\"frame\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"none\" "
                  "stroke=\"#333333\"/>\n",
                  left, top, right - left, bottom - top);
    if (has_title) {
        mf_buf_printf(b, "<text class=\"title\" x=\"%.2f\" y=\"24\" text-anchor=\"middle\" font-size=\"15\" "
                         "font-weight=\"bold\">", (left + right) / 2);
        mf_svg_escape(b, c->title);
        mf_buf_puts(b, "</text>\n");
    }
    if (c->xlabel[0]) {
        mf_buf_printf(b, "<text class=\"xlabel\" x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\">", (left + right) / 2,
                      bottom + 40);
        mf_svg_escape(b, c->xlabel);
        mf_buf_puts(b, "</text>\n");
    }
    if (c->ylabel[0]) {
        mf_buf_printf(b, "<text class=\"ylabel\" transform=\"translate(18,%.2f) rotate(-90)\" text-anchor=\"middle\">",
                      (top + bottom) / 2);
        mf_svg_escape(b, c->ylabel);
        mf_buf_puts(b, "</text>\n");
    }

    /* series: one polyline per unbroken run of drawable points, then the markers (with tooltips) */
    for (int i = 0; i < c->n_series; i++) {
        const mf_svg_series *s = &c->series[i];
        const char *col = k_colors[i % 10];
        int shape = i % 4;
        mf_buf_printf(b, "<g class=\"series\" data-series=\"");
        mf_svg_escape(b, s->name);
        mf_buf_printf(b, "\" stroke=\"%s\" fill=\"%s\">\n", col, col);
        for (size_t j = 0; j < s->n;) {
            while (j < s->n && !(usable(s->x[j], c->logx) && usable(s->y[j], c->logy))) j++;
            size_t k = j;
            while (k < s->n && usable(s->x[k], c->logx) && usable(s->y[k], c->logy)) k++;
            if (k - j >= 2) {
                mf_buf_puts(b, "<polyline fill=\"none\" stroke-width=\"1.8\" stroke-linejoin=\"round\" points=\"");
                for (size_t q = j; q < k; q++)
                    mf_buf_printf(b, "%s%.2f,%.2f", q > j ? " " : "", map(&ax, s->x[q]), map(&ay, s->y[q]));
                mf_buf_puts(b, "\"/>\n");
            }
            j = k;
        }
        for (size_t j = 0; j < s->n; j++) {
            if (!(usable(s->x[j], c->logx) && usable(s->y[j], c->logy))) continue;
            marker(b, shape, map(&ax, s->x[j]), map(&ay, s->y[j]));
            mf_buf_puts(b, "<title>");
            if (s->name[0]) {
                mf_svg_escape(b, s->name);
                mf_buf_puts(b, ": ");
            }
            mf_buf_printf(b, "x=%.6g, y=%.6g</title>%s\n", s->x[j], s->y[j], k_marker_end[shape]);
        }
        mf_buf_puts(b, "</g>\n");
    }

    /* legend: right of the plot, one line + marker + name per named series */
    if (n_legend) {
        double lx = right + 12, ly = top;
        mf_buf_printf(b,
                      "<g class=\"legend\">\n<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"#ffffff\" "
                      "stroke=\"#cccccc\"/>\n",
                      lx, ly, legend_w - 16, 10.0 + 18.0 * n_legend);
        int row = 0;
        for (int i = 0; i < c->n_series; i++) {
            const mf_svg_series *s = &c->series[i];
            if (!s->name[0]) continue;
            double y = ly + 14 + 18.0 * row++;
            const char *col = k_colors[i % 10];
            mf_buf_printf(b, "<g stroke=\"%s\" fill=\"%s\"><line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" "
                             "stroke-width=\"1.8\"/>",
                          col, col, lx + 6, y, lx + 26, y);
            marker(b, i % 4, lx + 16, y);
            mf_buf_printf(b, "%s</g><text x=\"%.2f\" y=\"%.2f\" fill=\"#333333\">", k_marker_end[i % 4], lx + 32, y + 4);
            mf_svg_escape(b, s->name);
            mf_buf_puts(b, "</text>\n");
        }
        mf_buf_puts(b, "</g>\n");
    }
    mf_buf_puts(b, "</svg>\n");
}

int mf_svg_write(const mf_svg_chart *c, const char *path) {
    mf_buf b = {0};
    mf_buf_puts(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    mf_svg_render(c, &b);
    int rc = mf_write_file_atomic(path, b.s, b.len);
    mf_buf_free(&b);
    return rc;
}
