/* test_cpu_ops.c - every kernel of the CPU backend (through its mf_backend_i table only) against naive
 * double-precision references written here: forward values, backward passes against the exact adjoint
 * (dot-product tests) and central finite differences of the double reference forward, JVPs against
 * finite differences, acc semantics, AdamW on a hand-computed example, and determinism. Backends with
 * 1, 2 and 3 threads and the scalar (non-AVX-512) path are all exercised. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mf_backend.h"
#include "mf_test.h"

/* Tolerances, relative to max |reference| of the checked tensor. */
#define TOL 1e-5      /* float kernel vs double reference (and vs a double finite difference) */
#define TOL_DOT 1e-5  /* adjoint dot-product tests, relative to sum |terms| */
#define TOL_RED 1e-12 /* double-accumulated reductions */
#define FD_H 1e-6     /* central difference step (double reference forward) */

static int g_verbose = 1;

/* ---- random data, host <-> backend ---------------------------------------------------------- */

static uint64_t g_rng = 0x853c49e6748fea9bull;
static double urand(void) { /* LCG (Knuth MMIX), uniform in [-1, 1) */
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(g_rng >> 11) * 0x1.0p-52 - 1.0;
}
static float *hrand(size_t n, double scale, double offset) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) p[i] = (float)(offset + scale * urand());
    return p;
}
static double *dbl(const float *f, size_t n) {
    double *d = malloc(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) d[i] = f[i];
    return d;
}
static double *dzeros(size_t n) { return calloc(n ? n : 1, sizeof(double)); }
static float *up(mf_backend *be, const float *h, size_t n) {
    float *d = be->i->alloc(be, sizeof(float) * n);
    be->i->write(be, d, h, sizeof(float) * n);
    return d;
}
static float *down(mf_backend *be, const float *d, size_t n) {
    float *h = malloc(sizeof(float) * (n ? n : 1));
    be->i->read(be, h, d, sizeof(float) * n);
    return h;
}
/* Activations in a backend layout (blk 16: nChw16c, see mf_backend.h) from / to NCHW host arrays. */
static size_t blk_index(int c, int hw, int blk, int i, int ch, int p) {
    if (blk != 16) return ((size_t)i * c + ch) * hw + p;
    return (((size_t)i * (c / 16) + ch / 16) * hw + p) * 16 + ch % 16;
}
static float *upa(mf_backend *be, const float *h, int n, int c, int hw, int blk) {
    size_t len = (size_t)n * c * hw;
    float *t = malloc(sizeof(float) * (len ? len : 1));
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++)
            for (int p = 0; p < hw; p++) t[blk_index(c, hw, blk, i, ch, p)] = h[((size_t)i * c + ch) * hw + p];
    float *d = up(be, t, len);
    free(t);
    return d;
}
static float *downa(mf_backend *be, const float *d, int n, int c, int hw, int blk) {
    size_t len = (size_t)n * c * hw;
    float *t = down(be, d, len), *h = malloc(sizeof(float) * (len ? len : 1));
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++)
            for (int p = 0; p < hw; p++) h[((size_t)i * c + ch) * hw + p] = t[blk_index(c, hw, blk, i, ch, p)];
    free(t);
    return h;
}

static double maxabs(const double *r, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(r[i]) > m ? fabs(r[i]) : m;
    return m;
}
static double relerr(const float *got, const double *ref, size_t n) {
    double e = 0, m = maxabs(ref, n);
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= e)) e = d; /* NaN propagates */
    }
    return m > 0 ? e / m : e;
}
static double dot_fd(const float *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}
static double abs_dot_fd(const float *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += fabs((double)a[i] * b[i]);
    return s;
}
static double dot_ff(const float *a, const float *b, size_t n, double *abs_sum) {
    double s = 0, t = 0;
    for (size_t i = 0; i < n; i++) {
        s += (double)a[i] * b[i];
        t += fabs((double)a[i] * b[i]);
    }
    *abs_sum = t;
    return s;
}

static void check_rel(const char *what, const float *got, const double *ref, size_t n, double tol) {
    double e = relerr(got, ref, n);
    if (g_verbose) printf("  %-52s max rel err %.2e (tol %.0e)\n", what, e, tol);
    CHECK_MSG(e <= tol, "%s: max rel err %.3g > %g", what, e, tol);
}
/* The same on the elements i % stride == 0 only (finite differences of big tensors are costly). */
static void check_rel_sub(const char *what, const float *got, const double *ref, size_t n, size_t stride,
                          double tol) {
    size_t m = (n + stride - 1) / stride;
    float *g = malloc(sizeof(float) * m);
    double *r = malloc(sizeof(double) * m);
    for (size_t i = 0; i < m; i++) g[i] = got[i * stride], r[i] = ref[i * stride];
    check_rel(what, g, r, m, tol);
    free(g), free(r);
}
static void check_val(const char *what, double got, double ref, double tol) {
    double e = fabs(got - ref) / (fabs(ref) > 0 ? fabs(ref) : 1.0);
    if (g_verbose) printf("  %-52s rel err %.2e (tol %.0e)\n", what, e, tol);
    CHECK_MSG(e <= tol, "%s: %.17g vs %.17g (rel %.3g)", what, got, ref, e);
}
/* <a, b> == <c, d> up to tol * sum of |terms| */
static void check_dot(const char *what, double lhs, double lhs_abs, double rhs, double tol) {
    double e = fabs(lhs - rhs) / (lhs_abs > 0 ? lhs_abs : 1.0);
    if (g_verbose) printf("  %-52s adjoint err %.2e (tol %.0e)\n", what, e, tol);
    CHECK_MSG(e <= tol, "%s: %.17g vs %.17g", what, lhs, rhs);
}

/* ---- conv2d ---------------------------------------------------------------------------------- */

static void ref_conv(const mf_conv_shape *s, const double *x, const double *w, const double *b, double *y) {
    for (int i = 0; i < s->n; i++)
        for (int o = 0; o < s->co; o++)
            for (int oy = 0; oy < s->ho; oy++)
                for (int ox = 0; ox < s->wo; ox++) {
                    double acc = b ? b[o] : 0;
                    for (int c = 0; c < s->ci; c++)
                        for (int ky = 0; ky < s->k; ky++)
                            for (int kx = 0; kx < s->k; kx++) {
                                int iy = oy * s->stride - s->pad + ky, ix = ox * s->stride - s->pad + kx;
                                if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w) continue;
                                acc += w[((o * s->ci + c) * s->k + ky) * s->k + kx] *
                                       x[((i * s->ci + c) * s->h + iy) * s->w + ix];
                            }
                    y[((i * s->co + o) * s->ho + oy) * s->wo + ox] = acc;
                }
}
/* The explicit adjoints: dx += W^T dy, dw += corr(x, dy), db += sum dy. */
static void ref_conv_bwd(const mf_conv_shape *s, const double *x, const double *w, const double *dy,
                         double *dx, double *dw, double *db) {
    for (int i = 0; i < s->n; i++)
        for (int o = 0; o < s->co; o++)
            for (int oy = 0; oy < s->ho; oy++)
                for (int ox = 0; ox < s->wo; ox++) {
                    double g = dy[((i * s->co + o) * s->ho + oy) * s->wo + ox];
                    db[o] += g;
                    for (int c = 0; c < s->ci; c++)
                        for (int ky = 0; ky < s->k; ky++)
                            for (int kx = 0; kx < s->k; kx++) {
                                int iy = oy * s->stride - s->pad + ky, ix = ox * s->stride - s->pad + kx;
                                if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w) continue;
                                size_t xi = ((size_t)(i * s->ci + c) * s->h + iy) * s->w + ix;
                                size_t wi = ((size_t)(o * s->ci + c) * s->k + ky) * s->k + kx;
                                dx[xi] += w[wi] * g;
                                dw[wi] += x[xi] * g;
                            }
                }
}

static void test_conv_l(mf_backend *be, int n, int ci, int h, int w, int co, int k, int stride, int pad, int bx,
                        int by) {
    mf_conv_shape s = {n, ci, h, w, co, k, stride, pad, 0, 0, bx, by, 0, 0};
    s.ho = (h + 2 * pad - k) / stride + 1;
    s.wo = (w + 2 * pad - k) / stride + 1;
    char tag[160];
    snprintf(tag, sizeof tag, "[%d thr] conv n%d ci%d %dx%d co%d k%d s%d p%d layouts %d/%d", be->threads, n, ci, h,
             w, co, k, stride, pad, bx, by);
    if (g_verbose) printf("%s\n", tag);
    const size_t nx = (size_t)n * ci * h * w, nw = (size_t)co * ci * k * k, ny = (size_t)n * co * s.ho * s.wo;
    float *hx = hrand(nx, 1, 0), *hw = hrand(nw, 0.5, 0), *hb = hrand(co, 1, 0), *hdy = hrand(ny, 1, 0);
    float *hdx0 = hrand(nx, 1, 0), *hdw0 = hrand(nw, 1, 0), *hdb0 = hrand(co, 1, 0);
    double *x = dbl(hx, nx), *wd = dbl(hw, nw), *b = dbl(hb, co), *dy = dbl(hdy, ny);
    double *y = dzeros(ny), *dx = dzeros(nx), *dw = dzeros(nw), *db = dzeros(co);
    ref_conv(&s, x, wd, b, y);
    ref_conv_bwd(&s, x, wd, dy, dx, dw, db);
    float *X = upa(be, hx, n, ci, h * w, bx), *W = up(be, hw, nw), *B = up(be, hb, co),
          *DY = upa(be, hdy, n, co, s.ho * s.wo, by);
    float *Y = be->i->alloc(be, sizeof(float) * ny), *DX = upa(be, hdx0, n, ci, h * w, bx), *DW = up(be, hdw0, nw),
          *DB = up(be, hdb0, co);

    /* forward, with and without bias */
    be->i->conv2d(be, &s, X, W, B, Y);
    float *got = downa(be, Y, n, co, s.ho * s.wo, by);
    check_rel("conv2d forward", got, y, ny, TOL);
    free(got);
    be->i->conv2d(be, &s, X, W, NULL, Y);
    float *ynb = downa(be, Y, n, co, s.ho * s.wo, by);
    double *ref = dzeros(ny);
    ref_conv(&s, x, wd, NULL, ref);
    check_rel("conv2d forward, no bias", ynb, ref, ny, TOL);
    free(ref);

    /* data gradient: acc = 1 on top of dx0, then acc = 0 */
    double *refa = dbl(hdx0, nx);
    for (size_t i = 0; i < nx; i++) refa[i] += dx[i];
    be->i->conv2d_bwd_data(be, &s, DY, W, DX, 1);
    got = downa(be, DX, n, ci, h * w, bx);
    check_rel("conv2d_bwd_data acc=1", got, refa, nx, TOL);
    free(got);
    be->i->conv2d_bwd_data(be, &s, DY, W, DX, 0);
    float *gdx = downa(be, DX, n, ci, h * w, bx);
    check_rel("conv2d_bwd_data acc=0", gdx, dx, nx, TOL);

    /* filter gradient: always accumulates (onto dw0, db0); then dbias NULL */
    double *refw = dbl(hdw0, nw), *refb = dbl(hdb0, co);
    for (size_t i = 0; i < nw; i++) refw[i] += dw[i];
    for (int i = 0; i < co; i++) refb[i] += db[i];
    be->i->conv2d_bwd_filter(be, &s, X, DY, DW, DB);
    got = down(be, DW, nw);
    check_rel("conv2d_bwd_filter dw (accumulating)", got, refw, nw, TOL);
    free(got);
    got = down(be, DB, co);
    check_rel("conv2d_bwd_filter dbias (accumulating)", got, refb, co, TOL);
    free(got);
    be->i->fill(be, DW, 0.0f, (int64_t)nw);
    be->i->conv2d_bwd_filter(be, &s, X, DY, DW, NULL);
    float *gdw = down(be, DW, nw);
    check_rel("conv2d_bwd_filter dw, dbias NULL", gdw, dw, nw, TOL);

    /* adjoint (dot-product) tests on the backend's own outputs: <dy, conv(x)> = <bwd_data(dy), x>
     * = <bwd_filter(x, dy), w> (conv is bilinear, no bias) */
    double t, lhs = dot_ff(hdy, ynb, ny, &t);
    double r1 = dot_ff(gdx, hx, nx, &(double){0}), r2 = dot_ff(gdw, hw, nw, &(double){0});
    check_dot("<dy, conv x> == <bwd_data dy, x>", lhs, t, r1, TOL_DOT);
    check_dot("<dy, conv x> == <bwd_filter dy, w>", lhs, t, r2, TOL_DOT);

    /* central differences of L = <dy, ref_conv(x, w)> along random directions of x and of w */
    double *vx = dzeros(nx), *vw = dzeros(nw), *xp = dzeros(nx), *wp = dzeros(nw), *yp = dzeros(ny);
    for (size_t i = 0; i < nx; i++) vx[i] = urand();
    for (size_t i = 0; i < nw; i++) vw[i] = urand();
    double lp, lm;
    for (size_t i = 0; i < nx; i++) xp[i] = x[i] + FD_H * vx[i];
    ref_conv(&s, xp, wd, b, yp);
    lp = 0;
    for (size_t i = 0; i < ny; i++) lp += dy[i] * yp[i];
    for (size_t i = 0; i < nx; i++) xp[i] = x[i] - FD_H * vx[i];
    ref_conv(&s, xp, wd, b, yp);
    lm = 0;
    for (size_t i = 0; i < ny; i++) lm += dy[i] * yp[i];
    /* a directional derivative: the error is relative to sum |terms| of <dx, v> (as check_dot) */
    check_dot("bwd_data vs central difference", dot_fd(gdx, vx, nx), abs_dot_fd(gdx, vx, nx),
              (lp - lm) / (2 * FD_H), TOL);
    for (size_t i = 0; i < nw; i++) wp[i] = wd[i] + FD_H * vw[i];
    ref_conv(&s, x, wp, b, yp);
    lp = 0;
    for (size_t i = 0; i < ny; i++) lp += dy[i] * yp[i];
    for (size_t i = 0; i < nw; i++) wp[i] = wd[i] - FD_H * vw[i];
    ref_conv(&s, x, wp, b, yp);
    lm = 0;
    for (size_t i = 0; i < ny; i++) lm += dy[i] * yp[i];
    check_dot("bwd_filter vs central difference", dot_fd(gdw, vw, nw), abs_dot_fd(gdw, vw, nw),
              (lp - lm) / (2 * FD_H), TOL);

    /* determinism: the filter gradient twice from zero, bit for bit */
    be->i->fill(be, DW, 0.0f, (int64_t)nw);
    be->i->conv2d_bwd_filter(be, &s, X, DY, DW, NULL);
    got = down(be, DW, nw);
    CHECK_MSG(memcmp(got, gdw, sizeof(float) * nw) == 0, "%s: bwd_filter not bit-identical", tag);
    free(got);

    be->i->free(be, X), be->i->free(be, W), be->i->free(be, B), be->i->free(be, DY);
    be->i->free(be, Y), be->i->free(be, DX), be->i->free(be, DW), be->i->free(be, DB);
    free(hx), free(hw), free(hb), free(hdy), free(hdx0), free(hdw0), free(hdb0), free(x), free(wd);
    free(b), free(dy), free(y), free(dx), free(dw), free(db), free(ynb), free(refa), free(gdx);
    free(refw), free(refb), free(gdw), free(vx), free(vw), free(xp), free(wp), free(yp);
}

static void test_conv(mf_backend *be, int n, int ci, int h, int w, int co, int k, int stride, int pad) {
    test_conv_l(be, n, ci, h, w, co, k, stride, pad, 0, 0);
}

/* Larger shapes, timing-free: bit-identical filter gradients and forward outputs on repeated runs. */
static void test_conv_determinism(mf_backend *be) {
    mf_conv_shape s = {9, 16, 14, 14, 24, 3, 1, 1, 14, 14, 0, 0, 0, 0};
    const size_t nx = (size_t)9 * 16 * 14 * 14, nw = (size_t)24 * 16 * 9, ny = (size_t)9 * 24 * 14 * 14;
    float *hx = hrand(nx, 1, 0), *hdy = hrand(ny, 1, 0);
    float *X = up(be, hx, nx), *DY = up(be, hdy, ny), *DW = be->i->alloc(be, sizeof(float) * nw);
    float *DB = be->i->alloc(be, sizeof(float) * 24);
    float *first = NULL;
    int same = 1;
    for (int rep = 0; rep < 3; rep++) {
        be->i->fill(be, DW, 0.0f, (int64_t)nw);
        be->i->fill(be, DB, 0.0f, 24);
        be->i->conv2d_bwd_filter(be, &s, X, DY, DW, DB);
        float *got = down(be, DW, nw);
        if (!first)
            first = got;
        else {
            same &= memcmp(first, got, sizeof(float) * nw) == 0;
            free(got);
        }
    }
    CHECK_MSG(same, "[%d thr] conv2d_bwd_filter differs between runs", be->threads);
    free(first), free(hx), free(hdy);
    be->i->free(be, X), be->i->free(be, DY), be->i->free(be, DW), be->i->free(be, DB);
}

/* ---- GroupNorm ------------------------------------------------------------------------------- */

static void ref_gn(int n, int c, int hw, int g, double eps, const double *x, const double *gm,
                   const double *bt, double *y, double *mean, double *rstd) {
    const int cg = c / g;
    const size_t N = (size_t)cg * hw;
    for (int i = 0; i < n; i++)
        for (int gi = 0; gi < g; gi++) {
            const double *xg = x + ((size_t)i * c + (size_t)gi * cg) * hw;
            double m = 0, v = 0;
            for (size_t j = 0; j < N; j++) m += xg[j];
            m /= N;
            for (size_t j = 0; j < N; j++) v += (xg[j] - m) * (xg[j] - m);
            double r = 1 / sqrt(v / N + eps);
            if (mean) mean[i * g + gi] = m, rstd[i * g + gi] = r;
            for (int cc = 0; cc < cg; cc++)
                for (int p = 0; p < hw; p++) {
                    size_t j = (size_t)cc * hw + p, ch = (size_t)gi * cg + cc;
                    y[((size_t)i * c + (size_t)gi * cg) * hw + j] = (xg[j] - m) * r * gm[ch] + bt[ch];
                }
        }
}

/* L(x, gamma, beta) = <dy, GN(x)> in double, for finite differences */
static double gn_loss(int n, int c, int hw, int g, double eps, const double *x, const double *gm,
                      const double *bt, const double *dy, double *ybuf) {
    ref_gn(n, c, hw, g, eps, x, gm, bt, ybuf, NULL, NULL);
    double l = 0;
    for (size_t i = 0; i < (size_t)n * c * hw; i++) l += dy[i] * ybuf[i];
    return l;
}

static void test_groupnorm_l(mf_backend *be, int n, int c, int hw, int g, double offset, int blk) {
    char tag[128];
    snprintf(tag, sizeof tag, "[%d thr] groupnorm n%d c%d hw%d g%d offset %g layout %d", be->threads, n, c, hw, g,
             offset, blk);
    if (g_verbose) printf("%s\n", tag);
    const size_t nx = (size_t)n * c * hw, ng = (size_t)n * g;
    const float eps = 1e-5f;
    float *hx = hrand(nx, 2, offset), *hg = hrand(c, 0.5, 1), *hb = hrand(c, 1, 0), *hdy = hrand(nx, 1, 0);
    float *htx = hrand(nx, 1, 0), *hdx0 = hrand(nx, 1, 0), *hdg0 = hrand(c, 1, 0), *hdb0 = hrand(c, 1, 0);
    double *x = dbl(hx, nx), *gm = dbl(hg, c), *bt = dbl(hb, c), *dy = dbl(hdy, nx), *tx = dbl(htx, nx);
    double *y = dzeros(nx), *mean = dzeros(ng), *rstd = dzeros(ng), *yb = dzeros(nx);
    ref_gn(n, c, hw, g, eps, x, gm, bt, y, mean, rstd);
    float *X = upa(be, hx, n, c, hw, blk), *G = up(be, hg, c), *B = up(be, hb, c), *DY = upa(be, hdy, n, c, hw, blk),
          *TX = upa(be, htx, n, c, hw, blk);
    float *Y = be->i->alloc(be, sizeof(float) * nx), *M = be->i->alloc(be, sizeof(float) * ng),
          *R = be->i->alloc(be, sizeof(float) * ng), *DX = upa(be, hdx0, n, c, hw, blk), *DG = up(be, hdg0, c),
          *DB = up(be, hdb0, c), *TY = be->i->alloc(be, sizeof(float) * nx);
    be->i->groupnorm(be, n, c, hw, g, eps, X, G, B, Y, M, R, blk);
    float *gy = downa(be, Y, n, c, hw, blk), *gmean = down(be, M, ng), *grstd = down(be, R, ng);
    check_rel("groupnorm y", gy, y, nx, TOL);
    check_rel("groupnorm mean", gmean, mean, ng, TOL);
    check_rel("groupnorm rstd", grstd, rstd, ng, TOL);

    /* reference gradients: central differences of L = <dy, GN(x)>, element by element */
    double *fdx = dzeros(nx), *fdg = dzeros(c), *fdb = dzeros(c), *xp = dbl(hx, nx), *pp = dzeros(c);
    const size_t fs = nx > 4096 ? 97 : 1; /* finite differences on every fs-th element */
    for (size_t j = 0; j < nx; j += fs) {
        double h = FD_H * (1 + fabs(x[j])), lp, lm;
        xp[j] = x[j] + h;
        lp = gn_loss(n, c, hw, g, eps, xp, gm, bt, dy, yb);
        xp[j] = x[j] - h;
        lm = gn_loss(n, c, hw, g, eps, xp, gm, bt, dy, yb);
        xp[j] = x[j];
        fdx[j] = (lp - lm) / (2 * h);
    }
    for (int j = 0; j < c; j++) {
        double lp, lm;
        memcpy(pp, gm, sizeof(double) * c);
        pp[j] = gm[j] + FD_H, lp = gn_loss(n, c, hw, g, eps, x, pp, bt, dy, yb);
        pp[j] = gm[j] - FD_H, lm = gn_loss(n, c, hw, g, eps, x, pp, bt, dy, yb);
        fdg[j] = (lp - lm) / (2 * FD_H);
        memcpy(pp, bt, sizeof(double) * c);
        pp[j] = bt[j] + FD_H, lp = gn_loss(n, c, hw, g, eps, x, gm, pp, dy, yb);
        pp[j] = bt[j] - FD_H, lm = gn_loss(n, c, hw, g, eps, x, gm, pp, dy, yb);
        fdb[j] = (lp - lm) / (2 * FD_H);
    }
    /* acc = 1 onto dx0, dgamma/dbeta always accumulate onto dg0/db0 */
    be->i->groupnorm_bwd(be, n, c, hw, g, X, G, M, R, DY, DX, DG, DB, 1, blk);
    double *ra = dbl(hdx0, nx), *rg = dbl(hdg0, c), *rb = dbl(hdb0, c);
    for (size_t j = 0; j < nx; j++) ra[j] += fdx[j];
    for (int j = 0; j < c; j++) rg[j] += fdg[j], rb[j] += fdb[j];
    float *got = downa(be, DX, n, c, hw, blk);
    check_rel_sub("groupnorm_bwd dx acc=1 vs central differences", got, ra, nx, fs, TOL);
    free(got);
    got = down(be, DG, c);
    check_rel("groupnorm_bwd dgamma (accumulating) vs central diff.", got, rg, c, TOL);
    free(got);
    got = down(be, DB, c);
    check_rel("groupnorm_bwd dbeta (accumulating) vs central diff.", got, rb, c, TOL);
    free(got);
    be->i->groupnorm_bwd(be, n, c, hw, g, X, G, M, R, DY, DX, NULL, NULL, 0, blk);
    float *gdx = downa(be, DX, n, c, hw, blk);
    check_rel_sub("groupnorm_bwd dx acc=0 vs central differences", gdx, fdx, nx, fs, TOL);

    /* JVP against central differences of the reference forward along tx */
    double *ty = dzeros(nx), *yp = dzeros(nx), *ym = dzeros(nx);
    for (size_t j = 0; j < nx; j++) xp[j] = x[j] + FD_H * tx[j];
    ref_gn(n, c, hw, g, eps, xp, gm, bt, yp, NULL, NULL);
    for (size_t j = 0; j < nx; j++) xp[j] = x[j] - FD_H * tx[j];
    ref_gn(n, c, hw, g, eps, xp, gm, bt, ym, NULL, NULL);
    for (size_t j = 0; j < nx; j++) ty[j] = (yp[j] - ym[j]) / (2 * FD_H);
    be->i->groupnorm_jvp(be, n, c, hw, g, X, G, M, R, TX, TY, blk);
    float *gty = downa(be, TY, n, c, hw, blk);
    check_rel("groupnorm_jvp vs central differences", gty, ty, nx, TOL);
    /* and JVP / VJP consistency: <dy, J tx> == <J^T dy, tx> */
    double t, lhs = dot_ff(hdy, gty, nx, &t), rhs = dot_ff(gdx, htx, nx, &(double){0});
    check_dot("<dy, jvp tx> == <bwd dy, tx>", lhs, t, rhs, TOL_DOT);
    /* determinism of the backward */
    be->i->groupnorm_bwd(be, n, c, hw, g, X, G, M, R, DY, DX, NULL, NULL, 0, blk);
    got = downa(be, DX, n, c, hw, blk);
    CHECK_MSG(memcmp(got, gdx, sizeof(float) * nx) == 0, "%s: groupnorm_bwd not bit-identical", tag);
    free(got);

    float *bufs[] = {X, G, B, DY, TX, Y, M, R, DX, DG, DB, TY};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->i->free(be, bufs[i]);
    free(hx), free(hg), free(hb), free(hdy), free(htx), free(hdx0), free(hdg0), free(hdb0), free(x);
    free(gm), free(bt), free(dy), free(tx), free(y), free(mean), free(rstd), free(yb), free(gy);
    free(gmean), free(grstd), free(fdx), free(fdg), free(fdb), free(xp), free(pp), free(ra), free(rg);
    free(rb), free(gdx), free(ty), free(yp), free(ym), free(gty);
}

static void test_groupnorm(mf_backend *be, int n, int c, int hw, int g, double offset) {
    test_groupnorm_l(be, n, c, hw, g, offset, 0);
}

/* ---- element-wise ---------------------------------------------------------------------------- */

/* Element-wise relative error, with |ref| floored at `floor` (absolute error below it). */
static void check_elem(const char *what, const float *got, const double *ref, size_t n, double tol,
                       double floor) {
    double e = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]) / fmax(fabs(ref[i]), floor);
        if (!(d <= e)) e = d;
    }
    if (g_verbose) printf("  %-52s max elem rel err %.2e (tol %.0e)\n", what, e, tol);
    CHECK_MSG(e <= tol, "%s: max element rel err %.3g > %g", what, e, tol);
}

static double silu_d(double x) { return x / (1 + exp(-x)); }
static double dsilu_d(double x) {
    double s = 1 / (1 + exp(-x));
    return s * (1 + x * (1 - s));
}

static void test_silu(mf_backend *be, const char *path, size_t n) {
    char tag[96];
    snprintf(tag, sizeof tag, "[%d thr, %s] silu n%zu", be->threads, path, n);
    if (g_verbose) printf("%s\n", tag);
    float *hx = hrand(n, 10, 0), *hg = hrand(n, 1, 0), *h0 = hrand(n, 1, 0);
    const float extremes[] = {-100, 100, 0, -30, 30, -87, 88, -1e-3f, 1e-20f, -20};
    for (size_t i = 0; i < n && i < sizeof extremes / sizeof extremes[0]; i++) hx[i] = extremes[i];
    double *y = dzeros(n), *d = dzeros(n), *fd = dzeros(n), *acc = dzeros(n);
    for (size_t i = 0; i < n; i++) {
        y[i] = silu_d(hx[i]);
        d[i] = hg[i] * dsilu_d(hx[i]);
        fd[i] = hg[i] * (silu_d(hx[i] + FD_H) - silu_d(hx[i] - FD_H)) / (2 * FD_H);
        acc[i] = h0[i] + d[i];
    }
    float *X = up(be, hx, n), *G = up(be, hg, n), *O = up(be, h0, n);
    float *Y = be->i->alloc(be, sizeof(float) * n);
    be->i->silu(be, (int64_t)n, X, Y);
    float *got = down(be, Y, n);
    check_elem("silu (floor 1e-3)", got, y, n, TOL, 1e-3);
    free(got);
    be->i->silu_bwd(be, (int64_t)n, X, G, O, 1);
    got = down(be, O, n);
    check_rel("silu_bwd acc=1", got, acc, n, TOL);
    free(got);
    be->i->silu_bwd(be, (int64_t)n, X, G, O, 0);
    got = down(be, O, n);
    /* silu' has a zero near x = -1.28 where 1 + x(1 - s) cancels: absolute error below |ref| = 1 */
    check_elem("silu_bwd acc=0 vs analytic (floor 1)", got, d, n, TOL, 1);
    check_elem("silu_bwd acc=0 vs central differences (floor 1)", got, fd, n, TOL, 1);
    free(got);
    be->i->silu_jvp(be, (int64_t)n, X, G, Y);
    got = down(be, Y, n);
    check_elem("silu_jvp vs central differences (floor 1)", got, fd, n, TOL, 1);
    free(got);
    be->i->free(be, X), be->i->free(be, G), be->i->free(be, O), be->i->free(be, Y);
    free(hx), free(hg), free(h0), free(y), free(d), free(fd), free(acc);
}

static void test_linear_ops(mf_backend *be) {
    if (g_verbose) printf("[%d thr] axpby, add2, fill, copy, broadcasts, reductions\n", be->threads);
    const size_t n = 40013;
    float *hx = hrand(n, 1, 0), *hy = hrand(n, 1, 0);
    double *r = dzeros(n);
    float *X = up(be, hx, n), *Y = up(be, hy, n), *Z = be->i->alloc(be, sizeof(float) * n);
    for (size_t i = 0; i < n; i++) r[i] = 0.5 * hx[i] - 2.0 * hy[i];
    be->i->axpby(be, (int64_t)n, 0.5f, X, -2.0f, Y);
    float *got = down(be, Y, n);
    check_rel("axpby", got, r, n, 1e-6);
    free(got);
    be->i->fill(be, Y, NAN, (int64_t)n); /* b = 0: y must not be read */
    be->i->axpby(be, (int64_t)n, 3.0f, X, 0.0f, Y);
    for (size_t i = 0; i < n; i++) r[i] = 3.0 * hx[i];
    got = down(be, Y, n);
    check_rel("axpby b=0 over NaN", got, r, n, 1e-6);
    free(got);
    be->i->write(be, Y, hy, sizeof(float) * n);
    be->i->add2(be, (int64_t)n, 1.5f, X, -0.25f, Y, Z);
    for (size_t i = 0; i < n; i++) r[i] = 1.5 * hx[i] - 0.25 * hy[i];
    got = down(be, Z, n);
    check_rel("add2", got, r, n, 1e-6);
    free(got);
    be->i->add2(be, (int64_t)n, 1.5f, X, -0.25f, Y, X); /* z aliases x */
    got = down(be, X, n);
    check_rel("add2 aliased", got, r, n, 1e-6);
    free(got);
    be->i->fill(be, Z, 2.5f, (int64_t)n);
    be->i->copy(be, X, Z, sizeof(float) * n);
    got = down(be, X, n);
    for (size_t i = 0; i < n; i++) r[i] = 2.5;
    check_rel("fill + copy", got, r, n, 0);
    free(got);
    be->i->free(be, X), be->i->free(be, Y), be->i->free(be, Z);
    free(hx), free(hy), free(r);

    /* add_channel / sum_channel over (n, c, hw) */
    const int N = 3, C = 5, HW = 2741; /* n*c*hw > the parallel threshold */
    const size_t nt = (size_t)N * C * HW;
    float *ht = hrand(nt, 1, 0), *he = hrand((size_t)N * C, 1, 0), *he0 = hrand((size_t)N * C, 1, 0);
    double *rt = dzeros(nt), *re = dzeros((size_t)N * C), *re1 = dzeros((size_t)N * C);
    for (size_t q = 0; q < (size_t)N * C; q++)
        for (int p = 0; p < HW; p++) {
            rt[q * HW + p] = (double)ht[q * HW + p] + he[q];
            re[q] += ht[q * HW + p];
        }
    for (size_t q = 0; q < (size_t)N * C; q++) re1[q] = he0[q] + re[q];
    float *T = up(be, ht, nt), *E = up(be, he0, (size_t)N * C);
    be->i->sum_channel(be, N, C, HW, T, E, 1, 0);
    got = down(be, E, (size_t)N * C);
    check_rel("sum_channel acc=1", got, re1, (size_t)N * C, 1e-6);
    free(got);
    be->i->sum_channel(be, N, C, HW, T, E, 0, 0);
    got = down(be, E, (size_t)N * C);
    check_rel("sum_channel acc=0", got, re, (size_t)N * C, 1e-6);
    free(got);
    be->i->write(be, E, he, sizeof(float) * N * C);
    float *O = be->i->alloc(be, sizeof(float) * nt); /* out of place here; in place in test_blocked */
    be->i->add_channel(be, N, C, HW, T, E, O, 0);
    got = down(be, O, nt);
    check_rel("add_channel", got, rt, nt, 1e-6);
    free(got);
    be->i->free(be, T), be->i->free(be, E), be->i->free(be, O);
    free(ht), free(he), free(he0), free(rt), free(re), free(re1);

    /* sum_rows / add_bias_rows over (rows, cols) */
    const int R = 130, K = 300;
    float *hm = hrand((size_t)R * K, 1, 0), *hb = hrand(K, 1, 0);
    double *rb = dbl(hb, K), *rm = dzeros((size_t)R * K);
    for (int i = 0; i < R; i++)
        for (int j = 0; j < K; j++)
            rb[j] += hm[(size_t)i * K + j], rm[(size_t)i * K + j] = (double)hm[(size_t)i * K + j] + hb[j];
    float *Mm = up(be, hm, (size_t)R * K), *Bb = up(be, hb, K);
    be->i->sum_rows(be, R, K, Mm, Bb);
    got = down(be, Bb, K);
    check_rel("sum_rows (accumulating)", got, rb, K, 1e-6);
    free(got);
    be->i->write(be, Bb, hb, sizeof(float) * K);
    be->i->add_bias_rows(be, R, K, Bb, Mm);
    got = down(be, Mm, (size_t)R * K);
    check_rel("add_bias_rows", got, rm, (size_t)R * K, 1e-6);
    free(got);
    be->i->free(be, Mm), be->i->free(be, Bb);
    free(hm), free(hb), free(rb), free(rm);

    /* sq_err_rows (with and without b), sumsq over several fixed blocks */
    const int SR = 5;
    const int64_t SD = 10007;
    float *ha = hrand((size_t)SR * SD, 3, 0), *hb2 = hrand((size_t)SR * SD, 3, 0);
    float *A = up(be, ha, (size_t)SR * SD), *B2 = up(be, hb2, (size_t)SR * SD);
    double out[5], out0[5], ref[5], ref0[5], tot = 0;
    for (int i = 0; i < SR; i++) {
        ref[i] = ref0[i] = 0;
        for (int64_t j = 0; j < SD; j++) {
            double a = ha[i * SD + j], b = hb2[i * SD + j];
            ref[i] += (a - b) * (a - b), ref0[i] += a * a;
        }
        tot += ref0[i];
    }
    be->i->sq_err_rows(be, SR, SD, A, B2, out);
    be->i->sq_err_rows(be, SR, SD, A, NULL, out0);
    for (int i = 0; i < SR; i++) {
        check_val("sq_err_rows", out[i], ref[i], TOL_RED);
        check_val("sq_err_rows b=NULL", out0[i], ref0[i], TOL_RED);
    }
    check_val("sumsq (50035 elements)", be->i->sumsq(be, SR * SD, A), tot, TOL_RED);
    const size_t nbig = 300001;
    float *hbig = hrand(nbig, 2, 0.5), *BIG = up(be, hbig, nbig);
    double big = 0;
    for (size_t i = 0; i < nbig; i++) big += (double)hbig[i] * hbig[i];
    double s1 = be->i->sumsq(be, (int64_t)nbig, BIG), s2 = be->i->sumsq(be, (int64_t)nbig, BIG);
    check_val("sumsq (300001 elements, 5 blocks)", s1, big, TOL_RED);
    CHECK(memcmp(&s1, &s2, sizeof s1) == 0);

    /* the objectives' per-row kernels: row_sq_err, pow_weight, rows_axpby (two terms, one, aliased) */
    float hc[5] = {0.5f, -1.25f, 2.0f, 0.0f, 3.5f}, hd[5] = {1.0f, 0.25f, -0.75f, 2.0f, -1.5f};
    float *Ca = up(be, hc, 5), *Db = up(be, hd, 5), *Er = be->i->alloc(be, sizeof(float) * 5);
    float *Wr = be->i->alloc(be, sizeof(float) * 5), *Zr = be->i->alloc(be, sizeof(float) * (size_t)(SR * SD));
    be->i->row_sq_err(be, SR, SD, A, B2, Er);
    float *ge = down(be, Er, 5);
    for (int i = 0; i < SR; i++) check_val("row_sq_err", ge[i], ref[i], 1e-6);
    be->i->row_sq_err(be, SR, SD, A, NULL, Er);
    free(ge);
    ge = down(be, Er, 5);
    for (int i = 0; i < SR; i++) check_val("row_sq_err y=NULL", ge[i], ref0[i], 1e-6);
    be->i->pow_weight(be, SR, Er, 0.01f, 0.75f, 2.0f, Wr);
    float *gw = down(be, Wr, 5);
    for (int i = 0; i < SR; i++) check_val("pow_weight", gw[i], 2.0 * pow((double)ge[i] + 0.01, -0.75), 1e-6);
    free(gw);
    be->i->pow_weight(be, SR, Er, 0.01f, 0.0f, 3.0f, Wr);
    gw = down(be, Wr, 5);
    for (int i = 0; i < SR; i++) check_val("pow_weight p=0", gw[i], 3.0, 0);
    be->i->rows_axpby(be, SR, SD, Ca, A, Db, B2, Zr);
    float *gz = down(be, Zr, (size_t)(SR * SD));
    double worst = 0;
    for (int i = 0; i < SR; i++)
        for (int64_t j = 0; j < SD; j++) {
            double want = (double)hc[i] * ha[i * SD + j] + (double)hd[i] * hb2[i * SD + j];
            double err = fabs(gz[i * SD + j] - want);
            if (err > worst) worst = err;
        }
    CHECK(worst < 1e-5);
    free(gz);
    be->i->rows_axpby(be, SR, SD, Ca, A, NULL, NULL, Zr);
    gz = down(be, Zr, (size_t)(SR * SD));
    for (int i = 0; i < SR; i++) CHECK(gz[i * SD + 7] == hc[i] * ha[i * SD + 7] && gz[i * SD + SD - 1] == hc[i] * ha[i * SD + SD - 1]);
    free(gz);
    be->i->rows_axpby(be, SR, SD, Ca, A, Db, B2, A); /* z aliases x */
    gz = down(be, A, (size_t)(SR * SD));
    for (int i = 0; i < SR; i++) check_val("rows_axpby aliased", gz[i * SD + 3], (double)hc[i] * ha[i * SD + 3] + (double)hd[i] * hb2[i * SD + 3], 1e-6);
    free(gz), free(gw), free(ge);
    be->i->free(be, Ca), be->i->free(be, Db), be->i->free(be, Er), be->i->free(be, Wr), be->i->free(be, Zr);

    be->i->free(be, A), be->i->free(be, B2), be->i->free(be, BIG);
    free(ha), free(hb2), free(hbig);
}

/* upsample2x and its adjoint (acc 1 and 0, adjoint identity) on (n, c, h, w) in layout blk */
static void test_upsample(mf_backend *be, int n, int c, int h, int w, int blk) {
    const size_t nx = (size_t)n * c * h * w, ny = nx * 4;
    float *hx = hrand(nx, 1, 0), *hdy = hrand(ny, 1, 0), *hdx0 = hrand(nx, 1, 0);
    double *ry = dzeros(ny), *rdx = dzeros(nx), *rda = dbl(hdx0, nx);
    for (size_t q = 0; q < (size_t)n * c; q++)
        for (int y = 0; y < 2 * h; y++)
            for (int x = 0; x < 2 * w; x++) {
                size_t yi = (q * 2 * h + y) * 2 * w + x, xi = (q * h + y / 2) * w + x / 2;
                ry[yi] = hx[xi];
                rdx[xi] += hdy[yi];
                rda[xi] += hdy[yi];
            }
    float *X = upa(be, hx, n, c, h * w, blk), *Y = be->i->alloc(be, sizeof(float) * ny),
          *DY = upa(be, hdy, n, c, 4 * h * w, blk), *DX = upa(be, hdx0, n, c, h * w, blk);
    be->i->upsample2x(be, n, c, h, w, X, Y, blk);
    float *gy = downa(be, Y, n, c, 4 * h * w, blk);
    check_rel(blk ? "upsample2x blocked" : "upsample2x", gy, ry, ny, 0);
    be->i->upsample2x_bwd(be, n, c, h, w, DY, DX, 1, blk);
    float *got = downa(be, DX, n, c, h * w, blk);
    check_rel("upsample2x_bwd acc=1", got, rda, nx, 1e-6);
    free(got);
    be->i->upsample2x_bwd(be, n, c, h, w, DY, DX, 0, blk);
    float *gdx = downa(be, DX, n, c, h * w, blk);
    check_rel("upsample2x_bwd acc=0", gdx, rdx, nx, 1e-6);
    double t, lhs = dot_ff(hdy, gy, ny, &t), rhs = dot_ff(gdx, hx, nx, &(double){0});
    check_dot("<dy, up x> == <up_bwd dy, x>", lhs, t, rhs, TOL_DOT);
    be->i->free(be, X), be->i->free(be, Y), be->i->free(be, DY), be->i->free(be, DX);
    free(hx), free(hdy), free(hdx0), free(ry), free(rdx), free(rda), free(gy), free(gdx);
}

static void test_layout(mf_backend *be) {
    if (g_verbose) printf("[%d thr] copy_channels, upsample2x, embed\n", be->threads);
    /* copy_channels (NCHW): channels [4, 7) of a (3, 10, 2) tensor to channels [2, 5) of a (3, 6, 2) one */
    float *hs = hrand(60, 1, 0), *hd = hrand(36, 1, 0);
    double rd[36], ra[36];
    for (int i = 0; i < 36; i++) rd[i] = ra[i] = hd[i];
    for (int r = 0; r < 3; r++)
        for (int j = 0; j < 6; j++)
            rd[r * 12 + 4 + j] = hs[r * 20 + 8 + j], ra[r * 12 + 4 + j] += hs[r * 20 + 8 + j];
    float *S = up(be, hs, 60), *D = up(be, hd, 36);
    be->i->copy_channels(be, 3, 2, 3, S, 10, 4, 0, D, 6, 2, 0, 1);
    float *got = down(be, D, 36);
    check_rel("copy_channels acc=1", got, ra, 36, 1e-7);
    free(got);
    be->i->write(be, D, hd, sizeof(float) * 36);
    be->i->copy_channels(be, 3, 2, 3, S, 10, 4, 0, D, 6, 2, 0, 0);
    got = down(be, D, 36);
    check_rel("copy_channels acc=0", got, rd, 36, 0);
    free(got);
    be->i->free(be, S), be->i->free(be, D);
    free(hs), free(hd);

    /* upsample2x and its adjoint on (n, c, h, w) = (3, 4, 5, 3), and large enough to go parallel */
    test_upsample(be, 3, 4, 5, 3, 0);
    test_upsample(be, 16, 4, 28, 28, 0);

    /* embed / embed_bwd with repeated indices */
    const int rows = 10, dim = 6, n = 7;
    const int32_t idx[7] = {3, 0, 9, 3, 3, 5, 0};
    float *ht = hrand((size_t)rows * dim, 1, 0), *hg = hrand((size_t)n * dim, 1, 0);
    double ry[42], rt[60];
    for (int i = 0; i < rows * dim; i++) rt[i] = ht[i];
    for (int i = 0; i < n; i++)
        for (int j = 0; j < dim; j++)
            ry[i * dim + j] = ht[idx[i] * dim + j], rt[idx[i] * dim + j] += hg[i * dim + j];
    float *Tb = up(be, ht, (size_t)rows * dim), *G = up(be, hg, (size_t)n * dim),
          *Y = be->i->alloc(be, sizeof(float) * n * dim);
    be->i->embed(be, n, dim, idx, Tb, Y);
    got = down(be, Y, (size_t)n * dim);
    check_rel("embed", got, ry, (size_t)n * dim, 0);
    free(got);
    be->i->embed_bwd(be, n, dim, idx, G, Tb);
    got = down(be, Tb, (size_t)rows * dim);
    check_rel("embed_bwd (scatter-add, repeated rows)", got, rt, (size_t)rows * dim, 1e-6);
    free(got);
    be->i->free(be, Tb), be->i->free(be, G), be->i->free(be, Y);
    free(ht), free(hg);
}

/* ---- fused GroupNorm + SiLU ------------------------------------------------------------------
 * gn_silu / gn_silu_bwd / gn_silu_jvp against the composition of the separate kernels (each checked
 * against finite differences above), in either layout. */
static void test_gn_silu(mf_backend *be, int n, int c, int hw, int g, int blk) {
    char tag[128];
    snprintf(tag, sizeof tag, "[%d thr] gn_silu n%d c%d hw%d g%d layout %d", be->threads, n, c, hw, g, blk);
    if (g_verbose) printf("%s\n", tag);
    const size_t nx = (size_t)n * c * hw, ng = (size_t)n * g;
    const float eps = 1e-5f;
    float *hx = hrand(nx, 2, 0.3), *hg = hrand(c, 0.5, 1), *hb = hrand(c, 1, 0), *hdy = hrand(nx, 1, 0);
    float *htx = hrand(nx, 1, 0), *hdx0 = hrand(nx, 1, 0), *hdg0 = hrand(c, 1, 0), *hdb0 = hrand(c, 1, 0);
    const mf_backend_i *k = be->i;
    float *X = upa(be, hx, n, c, hw, blk), *G = up(be, hg, c), *B = up(be, hb, c), *DY = upa(be, hdy, n, c, hw, blk);
    float *TX = upa(be, htx, n, c, hw, blk), *U = k->alloc(be, sizeof(float) * nx), *Y = k->alloc(be, sizeof(float) * nx);
    float *Y2 = k->alloc(be, sizeof(float) * nx), *M = k->alloc(be, sizeof(float) * ng), *R = k->alloc(be, sizeof(float) * ng);
    float *M2 = k->alloc(be, sizeof(float) * ng), *R2 = k->alloc(be, sizeof(float) * ng);
    float *DU = k->alloc(be, sizeof(float) * nx);
    /* reference: groupnorm -> U, silu(U) -> Y */
    k->groupnorm(be, n, c, hw, g, eps, X, G, B, U, M, R, blk);
    k->silu(be, (int64_t)nx, U, Y);
    k->gn_silu(be, n, c, hw, g, eps, X, G, B, Y2, M2, R2, blk);
    float *ry = downa(be, Y, n, c, hw, blk), *gy = downa(be, Y2, n, c, hw, blk);
    double *ref = dbl(ry, nx);
    check_rel("gn_silu forward vs groupnorm + silu", gy, ref, nx, 1e-6);
    free(ref), free(ry), free(gy);
    float *rm = down(be, M, ng), *gm = down(be, M2, ng);
    ref = dbl(rm, ng);
    check_rel("gn_silu mean", gm, ref, ng, 0);
    free(ref), free(rm), free(gm);
    /* backward, acc = 1 and 0, parameter gradients accumulating */
    for (int acc = 1; acc >= 0; acc--) {
        float *DX = upa(be, hdx0, n, c, hw, blk), *DX2 = upa(be, hdx0, n, c, hw, blk);
        float *DG = up(be, hdg0, c), *DB = up(be, hdb0, c), *DG2 = up(be, hdg0, c), *DB2 = up(be, hdb0, c);
        k->silu_bwd(be, (int64_t)nx, U, DY, DU, 0);
        k->groupnorm_bwd(be, n, c, hw, g, X, G, M, R, DU, DX, DG, DB, acc, blk);
        k->gn_silu_bwd(be, n, c, hw, g, X, G, B, M, R, DY, DX2, DG2, DB2, acc, blk);
        float *r1 = downa(be, DX, n, c, hw, blk), *g1 = downa(be, DX2, n, c, hw, blk);
        ref = dbl(r1, nx);
        check_rel(acc ? "gn_silu_bwd dx acc=1 vs composition" : "gn_silu_bwd dx acc=0 vs composition", g1, ref, nx,
                  1e-5);
        free(ref), free(r1), free(g1);
        r1 = down(be, DG, c), g1 = down(be, DG2, c);
        ref = dbl(r1, c);
        check_rel("gn_silu_bwd dgamma vs composition", g1, ref, c, 1e-5);
        free(ref), free(r1), free(g1);
        r1 = down(be, DB, c), g1 = down(be, DB2, c);
        ref = dbl(r1, c);
        check_rel("gn_silu_bwd dbeta vs composition", g1, ref, c, 1e-5);
        free(ref), free(r1), free(g1);
        k->free(be, DX), k->free(be, DX2), k->free(be, DG), k->free(be, DB), k->free(be, DG2), k->free(be, DB2);
    }
    /* JVP: silu'(U) * groupnorm_jvp(tx) */
    k->groupnorm_jvp(be, n, c, hw, g, X, G, M, R, TX, DU, blk);
    k->silu_jvp(be, (int64_t)nx, U, DU, Y);
    k->gn_silu_jvp(be, n, c, hw, g, X, G, B, M, R, TX, Y2, blk);
    float *rj = downa(be, Y, n, c, hw, blk), *gj = downa(be, Y2, n, c, hw, blk);
    ref = dbl(rj, nx);
    check_rel("gn_silu_jvp vs composition", gj, ref, nx, 1e-5);
    free(ref), free(rj), free(gj);
    float *bufs[] = {X, G, B, DY, TX, U, Y, Y2, M, R, M2, R2, DU};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) k->free(be, bufs[i]);
    free(hx), free(hg), free(hb), free(hdy), free(htx), free(hdx0), free(hdg0), free(hdb0);
}

/* ---- the blocked layout (nChw16c) ------------------------------------------------------------
 * Every layout-aware kernel on blocked operands against host references in NCHW (upa/downa convert);
 * GroupNorm and conv run their full finite-difference tests in test_groupnorm_l / test_conv_l. */
static void test_blocked(mf_backend *be) {
    if (g_verbose) printf("[%d thr] blocked layout: copy_channels, add/sum_channel, upsample2x\n", be->threads);
    const int n = 3, hw = 5;
    /* copy_channels between every pair of layouts: whole blocks and an unaligned channel range */
    const int cases[2][3] = {{16, 16, 32}, {7, 3, 20}}; /* nc, src_c0, dst_c0 */
    for (int sb = 0; sb < 2; sb++)
        for (int db = 0; db < 2; db++)
            for (int cs = 0; cs < 2; cs++)
                for (int acc = 0; acc < 2; acc++) {
                    const int sc = 32, dc = 48, nc = cases[cs][0], s0 = cases[cs][1], d0 = cases[cs][2];
                    const int sblk = sb ? 16 : 0, dblk = db ? 16 : 0;
                    float *hs = hrand((size_t)n * sc * hw, 1, 0), *hd = hrand((size_t)n * dc * hw, 1, 0);
                    double *ref = dbl(hd, (size_t)n * dc * hw);
                    for (int i = 0; i < n; i++)
                        for (int k = 0; k < nc; k++)
                            for (int p = 0; p < hw; p++) {
                                double v = hs[((size_t)i * sc + s0 + k) * hw + p];
                                double *o = &ref[((size_t)i * dc + d0 + k) * hw + p];
                                *o = acc ? *o + v : v;
                            }
                    float *S = upa(be, hs, n, sc, hw, sblk), *D = upa(be, hd, n, dc, hw, dblk);
                    be->i->copy_channels(be, n, hw, nc, S, sc, s0, sblk, D, dc, d0, dblk, acc);
                    float *got = downa(be, D, n, dc, hw, dblk);
                    char what[96];
                    snprintf(what, sizeof what, "copy_channels %d->%d nc %d acc %d", sblk, dblk, nc, acc);
                    check_rel(what, got, ref, (size_t)n * dc * hw, acc ? 1e-7 : 0);
                    be->i->free(be, S), be->i->free(be, D);
                    free(hs), free(hd), free(ref), free(got);
                }
    /* add_channel / sum_channel */
    {
        const int c = 32, hw2 = 7;
        const size_t nt = (size_t)n * c * hw2;
        float *ht = hrand(nt, 1, 0), *he = hrand((size_t)n * c, 1, 0), *he0 = hrand((size_t)n * c, 1, 0);
        double *rt = dbl(ht, nt), *rs = dzeros((size_t)n * c), *rs1 = dbl(he0, (size_t)n * c);
        for (int i = 0; i < n; i++)
            for (int ch = 0; ch < c; ch++)
                for (int p = 0; p < hw2; p++) {
                    size_t q = (size_t)i * c + ch;
                    rs[q] += ht[q * hw2 + p], rs1[q] += ht[q * hw2 + p];
                    rt[q * hw2 + p] += he[q];
                }
        float *T = upa(be, ht, n, c, hw2, 16), *E = up(be, he0, (size_t)n * c);
        be->i->sum_channel(be, n, c, hw2, T, E, 1, 16);
        float *got = down(be, E, (size_t)n * c);
        check_rel("sum_channel blocked acc=1", got, rs1, (size_t)n * c, 1e-6);
        free(got);
        be->i->sum_channel(be, n, c, hw2, T, E, 0, 16);
        got = down(be, E, (size_t)n * c);
        check_rel("sum_channel blocked acc=0", got, rs, (size_t)n * c, 1e-6);
        free(got);
        be->i->write(be, E, he, sizeof(float) * (size_t)n * c);
        be->i->add_channel(be, n, c, hw2, T, E, T, 16);
        got = downa(be, T, n, c, hw2, 16);
        check_rel("add_channel blocked", got, rt, nt, 1e-6);
        free(got);
        be->i->free(be, T), be->i->free(be, E);
        free(ht), free(he), free(he0), free(rt), free(rs), free(rs1);
    }
    /* upsample2x and its adjoint */
    test_upsample(be, 2, 32, 5, 3, 16);
    test_upsample(be, 16, 32, 14, 14, 16);
    /* GroupNorm: groups inside a block (cg 2, 8), a group of exactly one block, groups across blocks,
     * a large mean, and the parallel path */
    test_groupnorm_l(be, 2, 16, 10, 8, 0, 16);
    test_groupnorm_l(be, 3, 32, 9, 2, 0, 16);
    test_groupnorm_l(be, 2, 64, 7, 4, 0, 16);
    test_groupnorm_l(be, 2, 48, 5, 1, 50, 16);
    test_groupnorm_l(be, 3, 32, 400, 8, 0, 16);
    /* convolutions with blocked operands (oneDNN where the backend has it, else NCHW fallbacks): the
     * UNet's cases (3x3 same, stride 2, 1x1 skip, the 1-channel input and output convs) and mixed ones */
    test_conv_l(be, 2, 16, 7, 7, 16, 3, 1, 1, 16, 16);
    test_conv_l(be, 3, 16, 8, 8, 32, 3, 2, 1, 16, 16);
    test_conv_l(be, 2, 32, 6, 6, 16, 1, 1, 0, 16, 16);
    test_conv_l(be, 2, 1, 8, 8, 16, 3, 1, 1, 0, 16);
    test_conv_l(be, 2, 16, 8, 8, 1, 3, 1, 1, 16, 0);
    test_conv_l(be, 2, 24, 6, 5, 16, 3, 1, 1, 0, 16);
    test_conv_l(be, 2, 16, 6, 6, 8, 3, 1, 1, 16, 0);
    test_conv_l(be, 1, 32, 9, 9, 48, 3, 1, 1, 16, 16);
    test_conv_l(be, 3, 32, 5, 7, 3, 3, 1, 1, 16, 0); /* direct few-output kernels: 2 blocks, non-square */
    test_conv_l(be, 2, 16, 6, 5, 2, 1, 1, 0, 16, 0);
    test_conv_l(be, 2, 16, 7, 6, 1, 5, 1, 2, 16, 0);
    test_gn_silu(be, 3, 32, 49, 8, 16);
    test_gn_silu(be, 2, 16, 30, 16, 16);
}

static void ref_fourier(int n, int half, const double *t, const float *freq, double *y) {
    for (int i = 0; i < n; i++)
        for (int k = 0; k < half; k++) {
            y[i * 2 * half + k] = sin(t[i] * freq[k]);
            y[i * 2 * half + half + k] = cos(t[i] * freq[k]);
        }
}

static void test_fourier(mf_backend *be) {
    if (g_verbose) printf("[%d thr] fourier\n", be->threads);
    const int n = 9, half = 8;
    float *ht = hrand(n, 0.5, 0.5), *htt = hrand(n, 1, 0), freq[8];
    for (int k = 0; k < half; k++) freq[k] = (float)exp(log(1000.0) * k / (half - 1)); /* 1 .. 1000 */
    double *t = dbl(ht, n), tp[9], y[144], yp[144], ym[144], ty[144];
    ref_fourier(n, half, t, freq, y);
    for (int i = 0; i < n; i++) tp[i] = t[i] + FD_H * htt[i];
    ref_fourier(n, half, tp, freq, yp);
    for (int i = 0; i < n; i++) tp[i] = t[i] - FD_H * htt[i];
    ref_fourier(n, half, tp, freq, ym);
    for (int i = 0; i < n * 2 * half; i++) ty[i] = (yp[i] - ym[i]) / (2 * FD_H);
    float *T = up(be, ht, n), *TT = up(be, htt, n), *F = up(be, freq, half),
          *Y = be->i->alloc(be, sizeof(float) * 144);
    be->i->fourier(be, n, half, T, F, Y);
    float *got = down(be, Y, 144);
    check_rel("fourier", got, y, 144, 1e-6);
    free(got);
    be->i->fourier_jvp(be, n, half, T, F, TT, Y);
    got = down(be, Y, 144);
    check_rel("fourier_jvp vs central differences", got, ty, 144, TOL);
    free(got);
    be->i->free(be, T), be->i->free(be, TT), be->i->free(be, F), be->i->free(be, Y);
    free(ht), free(htt), free(t);
}

/* ---- optimiser ------------------------------------------------------------------------------- */

static void test_adamw_ema(mf_backend *be) {
    if (g_verbose) printf("[%d thr] adamw, ema\n", be->threads);
    /* Hand-computed (Python, double), with hyper-parameters that floats represent exactly (with
     * b2 = 0.999 as a float, 1 - b2 itself is 1.3e-5 off 0.001): lr 2^-7, b1 0.875, b2 1 - 2^-9,
     * eps 2^-20, wd 0.125, gscale 0.5.
     * step 1: g = 0.5*(0.1, -0.2) = (0.05, -0.1); m = 0.125 g = (0.00625, -0.0125);
     *   v = 2^-9 g^2 = (4.8828125e-6, 1.953125e-5); p = (1, -0.5)*(1 - 2^-10) - 2^-7 * (m/0.125) /
     *   (sqrt(v/2^-9) + 2^-20) = (0.9990234375 - 0.0078123510, ...) = (0.9912110865, -0.4916992933)
     * step 2: g = 0.5*(0.3, 0.05): m = (0.02421875, -0.0078125), v = (4.881858826e-5, 2.071380615e-5),
     *   p = (0.983025354, -0.4876447359) */
    const float lr0 = 0.0078125f, b10 = 0.875f, b20 = 0.998046875f, eps0 = 0x1p-20f, wd0 = 0.125f;
    const float p0[2] = {1.0f, -0.5f}, g1[2] = {0.1f, -0.2f}, g2[2] = {0.3f, 0.05f}, z[2] = {0, 0};
    float *P = up(be, p0, 2), *G = up(be, g1, 2), *M = up(be, z, 2), *V = up(be, z, 2);
    be->i->adamw(be, 2, P, G, M, V, lr0, b10, b20, eps0, wd0, 1, 0.5f);
    float hp[2], hm[2], hv[2];
    be->i->read(be, hp, P, 8), be->i->read(be, hm, M, 8), be->i->read(be, hv, V, 8);
    check_val("adamw step 1 p[0]", hp[0], 0.9912110865, 1e-6);
    check_val("adamw step 1 p[1]", hp[1], -0.4916992933, 1e-6);
    check_val("adamw step 1 m[1]", hm[1], -0.0125, 1e-6);
    check_val("adamw step 1 v[1]", hv[1], 1.953125e-5, 1e-6);
    be->i->write(be, G, g2, 8);
    be->i->adamw(be, 2, P, G, M, V, lr0, b10, b20, eps0, wd0, 2, 0.5f);
    be->i->read(be, hp, P, 8), be->i->read(be, hm, M, 8), be->i->read(be, hv, V, 8);
    check_val("adamw step 2 p[0]", hp[0], 0.983025354, 1e-6);
    check_val("adamw step 2 p[1]", hp[1], -0.4876447359, 1e-6);
    check_val("adamw step 2 m[0]", hm[0], 0.02421875, 1e-6);
    check_val("adamw step 2 v[0]", hv[0], 4.881858826e-5, 1e-6);
    check_val("adamw step 2 v[1]", hv[1], 2.071380615e-5, 1e-6);
    be->i->free(be, P), be->i->free(be, G), be->i->free(be, M), be->i->free(be, V);

    /* many elements (parallel path) against the same formula in double, step 7 */
    const size_t n = 50021;
    float *hp0 = hrand(n, 1, 0), *hg = hrand(n, 1, 0), *hm0 = hrand(n, 0.1, 0), *hv0 = hrand(n, 0.01, 0.011);
    double *rp = dzeros(n), *rm = dzeros(n), *rv = dzeros(n);
    const double lr = 1e-3, b1 = 0.9, b2 = 0.99, eps = 1e-8, wd = 0.05, gs = 0.7;
    for (size_t i = 0; i < n; i++) {
        double g = gs * (double)hg[i];
        rm[i] = b1 * hm0[i] + (1 - b1) * g;
        rv[i] = b2 * hv0[i] + (1 - b2) * g * g;
        double mh = rm[i] / (1 - pow(b1, 7)), vh = rv[i] / (1 - pow(b2, 7));
        rp[i] = (double)hp0[i] * (1 - lr * wd) - lr * mh / (sqrt(vh) + eps);
    }
    P = up(be, hp0, n), G = up(be, hg, n), M = up(be, hm0, n), V = up(be, hv0, n);
    be->i->adamw(be, (int64_t)n, P, G, M, V, (float)lr, (float)b1, (float)b2, (float)eps, (float)wd, 7,
                 (float)gs);
    float *got = down(be, P, n);
    check_rel("adamw (50021 elements) p", got, rp, n, TOL);
    free(got);
    got = down(be, M, n);
    check_rel("adamw (50021 elements) m", got, rm, n, TOL);
    free(got);
    got = down(be, V, n);
    check_rel("adamw (50021 elements) v", got, rv, n, TOL);
    free(got);
    /* ema: e = d e + (1 - d) p */
    for (size_t i = 0; i < n; i++) rp[i] = 0.999 * hm0[i] + 0.001 * (double)hp0[i];
    be->i->write(be, P, hp0, sizeof(float) * n);
    be->i->write(be, M, hm0, sizeof(float) * n);
    be->i->ema(be, (int64_t)n, M, P, 0.999f);
    got = down(be, M, n);
    check_rel("ema", got, rp, n, 1e-6);
    free(got);
    be->i->free(be, P), be->i->free(be, G), be->i->free(be, M), be->i->free(be, V);
    free(hp0), free(hg), free(hm0), free(hv0), free(rp), free(rm), free(rv);
}

/* ---- gemm and memory ------------------------------------------------------------------------- */

static void test_gemm(mf_backend *be) {
    if (g_verbose) printf("[%d thr] gemm\n", be->threads);
    const int sizes[][3] = {{5, 7, 3}, {70, 50, 600}, {20, 300, 400}, {1, 33, 17}, {4, 3, 0}};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int bz = 0; bz < 2; bz++) {
                    const int m = sizes[si][0], n = sizes[si][1], k = sizes[si][2];
                    const float alpha = 1.25f, beta = bz ? 0.0f : -0.5f;
                    float *ha = hrand((size_t)m * k, 1, 0), *hb = hrand((size_t)k * n, 1, 0),
                          *hc = hrand((size_t)m * n, 1, 0);
                    if (bz)
                        for (int i = 0; i < m * n; i++) hc[i] = NAN; /* beta = 0: C must not be read */
                    double *r = dzeros((size_t)m * n);
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < n; j++) {
                            double s = 0;
                            for (int l = 0; l < k; l++)
                                s += (double)(ta ? ha[l * m + i] : ha[i * k + l]) *
                                     (tb ? hb[j * k + l] : hb[l * n + j]);
                            r[i * n + j] = alpha * s + (bz ? 0.0 : beta * (double)hc[i * n + j]);
                        }
                    float *A = up(be, ha, (size_t)m * k), *B = up(be, hb, (size_t)k * n),
                          *C = up(be, hc, (size_t)m * n);
                    be->i->gemm(be, ta, tb, m, n, k, alpha, A, B, beta, C);
                    float *got = down(be, C, (size_t)m * n);
                    char what[96];
                    snprintf(what, sizeof what, "gemm m%d n%d k%d ta%d tb%d beta %g", m, n, k, ta, tb, beta);
                    check_rel(what, got, r, (size_t)m * n, TOL);
                    free(got), free(ha), free(hb), free(hc), free(r);
                    be->i->free(be, A), be->i->free(be, B), be->i->free(be, C);
                }
}

static void test_memory(void) {
    mf_backend *be = mf_cpu_backend_new(0);
    CHECK(be->threads >= 1);
    CHECK(be->i->peak_bytes(be) == 0);
    float *a = be->i->alloc(be, 1000 * sizeof(float)), *b = be->i->alloc(be, 3);
    CHECK(a && b);
    CHECK(((uintptr_t)a & 63) == 0 && ((uintptr_t)b & 63) == 0);
    size_t peak = be->i->peak_bytes(be);
    CHECK(peak >= 4000 + 3 && peak <= 4000 + 64 + 64);
    be->i->free(be, a), be->i->free(be, b);
    be->i->free(be, NULL);
    CHECK(be->i->peak_bytes(be) == peak); /* a high-water mark */
    float *c = be->i->alloc(be, 100);
    CHECK(be->i->peak_bytes(be) == peak); /* re-used room does not raise it */
    be->i->free(be, c);
    /* the conv workspace counts */
    mf_conv_shape s = {4, 8, 10, 10, 8, 3, 1, 1, 10, 10, 0, 0, 0, 0};
    float *x = be->i->alloc(be, sizeof(float) * 3200), *w = be->i->alloc(be, sizeof(float) * 576),
          *y = be->i->alloc(be, sizeof(float) * 3200);
    be->i->fill(be, x, 1.0f, 3200), be->i->fill(be, w, 1.0f, 576);
    be->i->conv2d(be, &s, x, w, NULL, y);
    CHECK(be->i->peak_bytes(be) > sizeof(float) * (3200 + 576 + 3200) + 72 * 100 * sizeof(float));
    be->i->free(be, x), be->i->free(be, w), be->i->free(be, y);
    CHECK(strcmp(be->i->name, "cpu") == 0);
    be->i->synchronize(be);
    mf_backend_free(be);
}

int main(void) {
    mf_backend *be1 = mf_cpu_backend_new(1), *be2 = mf_cpu_backend_new(2), *be3 = mf_cpu_backend_new(3);
    setenv("MFPIPE_CPU_SIMD", "0", 1);
    mf_backend *bes = mf_cpu_backend_new(2); /* the portable (libm) SiLU path */
    unsetenv("MFPIPE_CPU_SIMD");
    mf_backend *bes_all[] = {be2, be1, be3};
    CHECK(be1->threads == 1 && be2->threads == 2 && be3->threads == 3);
    for (int b = 0; b < 3; b++) {
        mf_backend *be = bes_all[b];
        /* n ci h w co k stride pad: non-square, stride 2, k 1 (direct and im2col), n < threads (pixel
         * and channel blocks), small images (several samples per GEMM), no padding */
        test_conv(be, 2, 3, 7, 5, 4, 3, 1, 1);
        test_conv(be, 3, 2, 8, 6, 5, 3, 2, 1);
        test_conv(be, 2, 4, 5, 5, 3, 1, 1, 0);
        test_conv(be, 1, 3, 6, 7, 2, 3, 1, 1);
        test_conv(be, 1, 2, 5, 6, 3, 1, 1, 0);
        test_conv(be, 5, 3, 4, 4, 6, 3, 2, 1);
        test_conv(be, 2, 2, 17, 16, 3, 3, 1, 1);
        test_conv(be, 3, 4, 9, 7, 5, 1, 2, 0);
        test_conv(be, 2, 3, 6, 5, 4, 3, 1, 0);
        test_conv(be, 4, 8, 7, 7, 16, 3, 1, 1);
        test_conv(be, 2, 3, 28, 28, 4, 3, 2, 1);
        test_conv(be, 2, 3, 40, 36, 5, 3, 2, 1);
        test_conv(be, 2, 2, 34, 33, 3, 3, 1, 1); /* > 1024 output pixels: pixel blocks */
        test_conv(be, 2, 3, 33, 32, 2, 1, 1, 0);
        test_conv(be, 2, 2, 9, 8, 3, 5, 1, 2); /* k = 5: borders two wide */
        test_conv(be, 3, 2, 9, 8, 3, 5, 2, 2);
        test_conv_determinism(be);
        test_groupnorm(be, 2, 6, 10, 3, 0);
        test_groupnorm(be, 3, 4, 7, 1, 0);
        test_groupnorm(be, 2, 4, 9, 4, 0);
        test_groupnorm(be, 2, 8, 5, 2, 50);   /* |mean| >> std */
        test_groupnorm(be, 3, 32, 400, 8, 0); /* the parallel path */
        test_gn_silu(be, 3, 12, 49, 4, 0);
        test_gn_silu(be, 4, 32, 400, 8, 0);
        test_silu(be, "avx512 if supported", 37);
        test_silu(be, "avx512 if supported", 100003);
        test_linear_ops(be);
        test_layout(be);
        test_blocked(be);
        test_fourier(be);
        test_adamw_ema(be);
        test_gemm(be);
        g_verbose = 0; /* the detailed lines once, for the 2-thread backend */
    }
    g_verbose = 1;
    /* the portable build of the SiLU loops and of the double sums */
    test_silu(bes, "libm", 37);
    test_silu(bes, "libm", 100003);
    g_verbose = 0;
    test_conv(bes, 2, 3, 7, 5, 4, 3, 1, 1);
    test_groupnorm(bes, 2, 6, 10, 3, 0);
    test_groupnorm(bes, 3, 32, 400, 8, 0);
    test_linear_ops(bes);
    /* a backend without oneDNN convolutions: blocked operands take the NCHW fallback */
    setenv("MFPIPE_CPU_LAYOUT", "nchw", 1);
    mf_backend *bn = mf_cpu_backend_new(2);
    unsetenv("MFPIPE_CPU_LAYOUT");
    CHECK(bn->cblock == 0);
    test_blocked(bn);
    mf_backend_free(bn);
    mf_backend_free(be1), mf_backend_free(be2), mf_backend_free(be3), mf_backend_free(bes);
    mf_backend_free(NULL);
    test_memory();
    return mf_test_summary("test_cpu_ops");
}
