/* mf_svg.h - line/scatter charts as self-contained SVG, no dependencies: a title, axis labels, linear
 * or log axes with nice ticks (1-2-5 steps; decades on log axes), several named series of (x, y)
 * points drawn as polylines with markers, and a legend. Used by `mfpipe plot` (docs/plots.md) and
 * meant for reports: mf_svg_render appends a bare <svg> element (no XML declaration) that can be
 * inlined in HTML, mf_svg_write makes a standalone .svg file.
 *
 *   mf_svg_chart c;
 *   mf_svg_chart_init(&c, "FID vs NFE", "NFE", "FID");
 *   c.logx = 1;
 *   int s = mf_svg_add_series(&c, "heun");
 *   mf_svg_add_point(&c, s, 10, 71.2);
 *   ...
 *   if (mf_svg_write(&c, "fid.svg") != 0) ... mf_last_error() names the file
 *   mf_svg_chart_free(&c);
 *
 * Points are joined in the order they were added. A point with a non-finite coordinate, or a value
 * <= 0 on a log axis, is not drawn and breaks its series' line (the points on either side are not
 * joined). Text (title, labels, series names) is XML-escaped; bytes that are not valid UTF-8 and
 * control characters are written as '?'. */
#ifndef MF_SVG_H
#define MF_SVG_H

#include <stddef.h>

#include "mf_json.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mf_svg_series {
    char *name; /* legend text; "" = not in the legend */
    double *x, *y;
    size_t n, cap;
} mf_svg_series;

typedef struct mf_svg_chart {
    char *title, *xlabel, *ylabel; /* owned copies ("" when not given) */
    int logx, logy;                /* log10 axes */
    int width, height;             /* pixels of the whole image; 0 = 720 x 480 */
    mf_svg_series *series;
    int n_series, cap_series;
} mf_svg_chart;

/* title, xlabel, ylabel may be NULL. */
void mf_svg_chart_init(mf_svg_chart *c, const char *title, const char *xlabel, const char *ylabel);
void mf_svg_chart_free(mf_svg_chart *c);
/* A new series (drawn in the order added, colour and marker shape by position); returns its index. */
int mf_svg_add_series(mf_svg_chart *c, const char *name);
/* The index of the first series of that name, or -1. */
int mf_svg_find_series(const mf_svg_chart *c, const char *name);
void mf_svg_add_point(mf_svg_chart *c, int series, double x, double y);

/* Append the chart as one <svg> element to out. */
void mf_svg_render(const mf_svg_chart *c, mf_buf *out);
/* A standalone SVG file (XML declaration + the element), written atomically (temporary file, fsync,
 * rename). 0, or -1 with mf_fail naming the path. */
int mf_svg_write(const mf_svg_chart *c, const char *path);

/* ---- the pieces, for tests and other renderers ---------------------------------------------- */
#define MF_SVG_MAX_TICKS 64
typedef struct mf_svg_ticks {
    double lo, hi;                  /* the axis range: the data range widened to nice values */
    int n;                          /* labelled ticks, ascending, inside [lo, hi] */
    double v[MF_SVG_MAX_TICKS];
    int n_minor;                    /* log axes over 3..7 decades: unlabelled ticks d x 10^k, d = 2..9 */
    double minor[MF_SVG_MAX_TICKS];
    double step;                    /* linear: the step between ticks (1, 2 or 5 x 10^k); log: 0 */
    int log;
} mf_svg_ticks;
/* Ticks for data in [lo, hi] (lo <= hi, finite; lo > 0 for a log axis), about `target` of them on a
 * linear axis (clamped to 2..20). Linear: step 1, 2 or 5 x 10^k, the range widened to multiples of
 * it; lo == hi is widened by 10% of |lo| (or to [-1, 1] at 0). Log: the range widened to the nearest
 * 1-2-5 values (1, 2, 5, 10, 20, ...) below and above; all of those values inside are labelled when
 * there are at most 8, otherwise the decades (every 2nd, 5th, 10th... decade when there are more than
 * 10). Returns 0, or -1 (mf_fail) for a bad range. */
int mf_svg_nice_ticks(double lo, double hi, int target, int log, mf_svg_ticks *t);
/* The label of tick v: linear ticks with as many decimals as the step needs ("0.25", "1500", "-2"),
 * %g beyond 1e6 or below 1e-4 steps; log ticks plain between 1e-4 and 1e5 ("0.001", "20000"),
 * otherwise "1e6", "5e-7". */
void mf_svg_tick_label(const mf_svg_ticks *t, double v, char *buf, size_t cap);
/* XML-escape s into b (& < > " ' as entities; invalid UTF-8 and control characters as '?'). */
void mf_svg_escape(mf_buf *b, const char *s);

#ifdef __cplusplus
}
#endif
#endif
