/* test_backend_ops.c - every kernel of a backend against the CPU backend (in the spirit of ggml's
 * test-backend-ops): the same random inputs (a fixed LCG) are uploaded to the backend under test and to
 * a reference CPU backend (1 thread, plain NCHW: MFPIPE_CPU_LAYOUT=nchw while it is opened); activations
 * go into each backend's preferred layout (mf_backend.cblock: NCHW, nChw16c, or NHWC for a negative
 * cblock; see the top of mf_backend.h), and, where that differs, also through plain NCHW; outputs come
 * back to NCHW on the host and are compared as the normalised error max|got - ref| / max(max|ref|, tiny).
 * Overwriting outputs start as NaN (every element must be written); accumulating ones start random.
 *
 *   test_backend_ops [BACKEND]      BACKEND: cuda (default) or cpu (the blocked, 2-thread CPU backend
 *                                   against the NCHW 1-thread one: how this runs on a machine without GPU)
 * Exit 77 (ctest: skipped) with the reason when BACKEND cannot be opened. The whole set runs at fp32,
 * then tf32 and bf16 where the backend runs them (be->precision == what was asked; else skipped).
 * Determinism: conv2d_bwd_filter, groupnorm_bwd, embed_bwd and sumsq run twice and must agree bitwise.
 * One line per case ("ok"/"FAIL", precision, kernel, shape and variant, worst output and its error) and
 * the mf_test.h summary. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mf_backend.h"
#include "mf_error.h"
#include "mf_rng.h"
#include "mf_test.h"

/* ---- tolerances (normalised error: max|got - ref| / max(max|ref|, TINY)) ------------------------
 * The reference is the float32 CPU backend, so even at fp32 the two sides differ by summation order
 * (blocked/oneDNN/cuDNN against im2col + BLAS), a few float roundings at most. Only convolutions and
 * GEMM change with the precision (mf_backend.h: statistics, reductions, loss, optimiser and JVP tangents
 * stay float32), so every other kernel has the fp32 tolerance in all three precisions. */
#define TINY 1e-20
#define TOL_FP32 1e-5     /* any kernel at fp32 (TF32 off): float against float, different orders */
#define TOL_ELEM 1e-5     /* element-wise, normalisation, layout, time features: every precision */
#define TOL_MAT_TF32 2e-3 /* conv/GEMM with TF32 products: 10-bit mantissa, unit roundoff 2^-11 on each
                           * input, ~4e-4 rms relative error per product; over K >= 9 random-signed
                           * terms the worst output is ~5e-4 of max|y|: 4x margin */
#define TOL_MAT_BF16 2e-2 /* bf16 products (8-bit mantissa, 2^-8): 8x TF32's rounding, same margin */
#define TOL_RED 1e-9      /* sums accumulated in double, returned as double (sumsq, sq_err_rows) */
#define TOL_RED_F 1e-6    /* accumulated in double, stored as float (row_sq_err): one float rounding */
#define TOL_ADAM_DP 1e-4  /* AdamW: the update p_after - p_before, relative to its own max: one ulp of
                           * p (~6e-8 at |p| ~ 1; FMA contraction differs between compilers) against
                           * an update of lr-size (1e-3) per step */
#define TOL_RNG 1e-6      /* randn against core/mf_rng.c's mf_rng_normal on the host: a GPU's log and
                           * sincos in double may differ in the last bit, which the float rarely shows */

static mf_backend *T, *R; /* under test, reference */
static int g_prec;        /* MF_PREC_* of this pass */
static const char *g_pname = "fp32";

static double tol_mat(void) {
    return g_prec == MF_PREC_BF16 ? TOL_MAT_BF16 : g_prec == MF_PREC_TF32 ? TOL_MAT_TF32 : TOL_FP32;
}

/* ---- cases: one printed line each ------------------------------------------------------------- */

static char g_case[200], g_worst[48];
static const char *g_op;
static double g_worst_ratio, g_worst_err, g_worst_tol;
static int g_case_bad, g_cases, g_cases_bad, g_missing;

static void case_begin(const char *op, const char *fmt, ...) MF_PRINTF(2, 3);
static void case_begin(const char *op, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_case, sizeof g_case, fmt, ap);
    va_end(ap);
    g_op = op;
    g_worst_ratio = -1;
    g_worst_err = 0;
    g_worst_tol = 0;
    g_worst[0] = 0;
    g_case_bad = 0;
}
static void case_cmp(const char *out, double err, double tol) {
    const int ok = !isnan(err) && err <= tol;
    const double ratio = !ok ? INFINITY : tol > 0 ? err / tol : 0.0;
    if (ratio >= g_worst_ratio) {
        g_worst_ratio = ratio;
        g_worst_err = err;
        g_worst_tol = tol;
        snprintf(g_worst, sizeof g_worst, "%s", out);
    }
    if (!ok) {
        g_case_bad = 1;
        printf("     %s %s %s: %s: error %.3g > tolerance %.0e\n", g_pname, g_op, g_case, out, err, tol);
    }
    CHECK_MSG(ok, "%s %s %s: %s: error %.3g > %g", g_pname, g_op, g_case, out, err, tol);
}
static void case_end(void) {
    g_cases++;
    g_cases_bad += g_case_bad;
    printf("%s %s %-18s %-58s %-10s %.1e (tol %.0e)\n", g_case_bad ? "FAIL" : "ok  ", g_pname, g_op, g_case,
           g_worst, g_worst_err, g_worst_tol);
}
/* Both backends have the kernel: else one failure, and the caller skips it. */
static int have(const char *what, int t_has, int r_has) {
    if (t_has && r_has) return 1;
    g_missing++;
    printf("FAIL %s %-18s kernel missing in the %s backend\n", g_pname, what,
           t_has ? "reference" : T->kind ? T->kind : "tested");
    CHECK_MSG(0, "%s: kernel missing", what);
    return 0;
}
#define NEED(f) have(#f, T->i->f != NULL, R->i->f != NULL)

/* ---- random data -------------------------------------------------------------------------------- */

static uint64_t g_rng = 0x2545f4914f6cdd1dull;
static double urand(void) { /* LCG (Knuth MMIX), uniform in [-1, 1) */
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(g_rng >> 11) * 0x1.0p-52 - 1.0;
}
static float *hrand(int64_t n, double scale, double offset) {
    float *p = malloc(sizeof(float) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) p[i] = (float)(offset + scale * urand());
    return p;
}
static float *hnan(int64_t n) {
    float *p = malloc(sizeof(float) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) p[i] = NAN;
    return p;
}

/* ---- layouts ----------------------------------------------------------------------------------- */

/* Element (i, k, p) of an activation with c channels in layout blk (mf_backend.h): 0/1 NCHW, else
 * blocks of blk channels (blk == c: NHWC). */
static int64_t at(int c, int hw, int blk, int64_t i, int k, int64_t p) {
    if (blk <= 1) return (i * c + k) * hw + p;
    return ((i * (c / blk) + k / blk) * hw + p) * blk + k % blk;
}
/* The layout a backend keeps a tensor of c channels in (what the graph would pass). */
static int pref_blk(const mf_backend *be, int c) {
    if (c <= 0) return 0;
    if (be->cblock < 0) return c % -be->cblock == 0 ? c : 0;
    if (be->cblock > 1) return c % be->cblock == 0 ? be->cblock : 0;
    return 0;
}

/* A tensor on both backends: an activation (nb, c, hw) in layout bt on T and br on R; plain tensors
 * are (1, 1, n) in layout 0. */
typedef struct ten {
    float *t, *r;
    int nb, c, hw, bt, br;
} ten;

static int64_t tlen(const ten *x) { return (int64_t)x->nb * x->c * x->hw; }

static float *put(mf_backend *be, const float *nchw, int nb, int c, int hw, int blk) {
    const int64_t n = (int64_t)nb * c * hw;
    float *tmp = malloc(sizeof(float) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < nb; i++)
        for (int k = 0; k < c; k++)
            for (int64_t p = 0; p < hw; p++) tmp[at(c, hw, blk, i, k, p)] = nchw[(i * c + k) * hw + p];
    float *d = be->i->alloc(be, sizeof(float) * (size_t)(n ? n : 1));
    if (!d) {
        fprintf(stderr, "test_backend_ops: %s: alloc of %lld floats failed\n", be->kind, (long long)n);
        exit(1);
    }
    if (n) be->i->write(be, d, tmp, sizeof(float) * (size_t)n);
    free(tmp);
    return d;
}
static void get(mf_backend *be, const float *d, float *nchw, int nb, int c, int hw, int blk) {
    const int64_t n = (int64_t)nb * c * hw;
    float *tmp = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (n) be->i->read(be, tmp, d, sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < nb; i++)
        for (int k = 0; k < c; k++)
            for (int64_t p = 0; p < hw; p++) nchw[(i * c + k) * hw + p] = tmp[at(c, hw, blk, i, k, p)];
    free(tmp);
}
/* h: NCHW host data (copied); NULL: NaN everywhere (an output that must be overwritten). */
static ten tact(const float *h, int nb, int c, int hw, int bt, int br) {
    ten x = {NULL, NULL, nb, c, hw, bt, br};
    float *own = h ? NULL : hnan((int64_t)nb * c * hw);
    x.t = put(T, h ? h : own, nb, c, hw, bt);
    x.r = put(R, h ? h : own, nb, c, hw, br);
    free(own);
    return x;
}
static ten tplain(const float *h, int64_t n) { return tact(h, 1, 1, (int)n, 0, 0); }
/* random activation / plain tensor */
static ten tact_rand(int nb, int c, int hw, int bt, int br, double scale, double offset) {
    float *h = hrand((int64_t)nb * c * hw, scale, offset);
    ten x = tact(h, nb, c, hw, bt, br);
    free(h);
    return x;
}
static ten tplain_rand(int64_t n, double scale, double offset) { return tact_rand(1, 1, (int)n, 0, 0, scale, offset); }
static void tfree(ten *x) {
    T->i->free(T, x->t);
    R->i->free(R, x->r);
    x->t = x->r = NULL;
}
static void tread(const ten *x, float *ht, float *hr) {
    get(T, x->t, ht, x->nb, x->c, x->hw, x->bt);
    get(R, x->r, hr, x->nb, x->c, x->hw, x->br);
}

static double nerr(const float *got, const float *ref, int64_t n) {
    double e = 0, m = 0;
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        const double d = fabs((double)got[i] - (double)ref[i]);
        if (isnan(d)) bad = 1;
        else if (d > e) e = d;
        if (fabs((double)ref[i]) > m) m = fabs((double)ref[i]);
    }
    return bad ? NAN : e / (m > TINY ? m : TINY);
}
/* compare a tensor of both backends */
static void cmp(const char *out, const ten *x, double tol) {
    const int64_t n = tlen(x);
    float *a = malloc(sizeof(float) * (size_t)(n ? n : 1)), *b = malloc(sizeof(float) * (size_t)(n ? n : 1));
    tread(x, a, b);
    case_cmp(out, nerr(a, b, n), tol);
    free(a), free(b);
}
/* compare a tensor of the tested backend with host values */
static void cmp_host(const char *out, const float *d, const float *ref, int64_t n, double tol) {
    float *a = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (n) T->i->read(T, a, d, sizeof(float) * (size_t)n);
    case_cmp(out, nerr(a, ref, n), tol);
    free(a);
}
/* bitwise equality of two host arrays (error: the fraction of differing words) */
static void cmp_bits(const char *out, const void *a, const void *b, size_t bytes) {
    const uint32_t *x = a, *y = b;
    size_t diff = 0;
    for (size_t i = 0; i < bytes / 4; i++) diff += x[i] != y[i];
    case_cmp(out, bytes ? (double)diff / (double)(bytes / 4) : 0.0, 0.0);
}

/* The layout variants of a kernel on the tested backend: its preferred layouts, then plain NCHW
 * where that differs (the graph keeps NCHW any tensor whose channel count does not fit the block). */
static int n_variants(int c1, int c2) { return pref_blk(T, c1) || pref_blk(T, c2) ? 2 : 1; }
static int vblk(int v, int c) { return v == 0 ? pref_blk(T, c) : 0; }

/* ---- dense ---------------------------------------------------------------------------------------- */

static void test_gemm(void) {
    if (!NEED(gemm)) return;
    static const int shapes[][3] = {{7, 5, 3}, {33, 17, 65}, {64, 128, 96}, {1, 10, 300}, {128, 1, 64}, {16, 16, 16}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                const int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
                case_begin("gemm", "m%d n%d k%d ta%d tb%d", m, n, k, ta, tb);
                ten a = tplain_rand((int64_t)m * k, 1, 0), b = tplain_rand((int64_t)k * n, 1, 0);
                ten c0 = tplain(NULL, (int64_t)m * n), c1 = tplain_rand((int64_t)m * n, 1, 0);
                T->i->gemm(T, ta, tb, m, n, k, 1.0f, a.t, b.t, 0.0f, c0.t);
                R->i->gemm(R, ta, tb, m, n, k, 1.0f, a.r, b.r, 0.0f, c0.r);
                cmp("C(beta0)", &c0, tol_mat());
                T->i->gemm(T, ta, tb, m, n, k, 0.5f, a.t, b.t, 0.7f, c1.t);
                R->i->gemm(R, ta, tb, m, n, k, 0.5f, a.r, b.r, 0.7f, c1.r);
                cmp("C(beta.7)", &c1, tol_mat());
                tfree(&a), tfree(&b), tfree(&c0), tfree(&c1);
                case_end();
            }
}

typedef struct cshape {
    int n, ci, h, w, co, k, stride, pad;
} cshape;
static const cshape conv_shapes[] = {
    {2, 1, 8, 8, 16, 3, 1, 1},  /* input layer: 1 channel */
    {2, 16, 8, 8, 1, 3, 1, 1},  /* output layer: 1 channel */
    {2, 3, 7, 7, 8, 3, 1, 1},   /* RGB, odd size */
    {2, 8, 8, 8, 16, 3, 2, 1},  /* stride 2 (down-sampling) */
    {2, 16, 8, 8, 32, 1, 1, 0}, /* 1x1 skip projection */
    {2, 32, 8, 8, 32, 3, 1, 1},
    {2, 64, 4, 4, 64, 3, 1, 1},
    {2, 64, 7, 7, 32, 1, 1, 0},
    {2, 32, 7, 7, 64, 3, 2, 1}, /* stride 2, odd size */
    {3, 5, 9, 9, 7, 3, 2, 1},   /* odd channel counts */
    {1, 24, 6, 6, 40, 3, 1, 1}, /* multiples of 8, not of 16: NHWC on CUDA, NCHW on the CPU */
    {2, 16, 8, 8, 16, 1, 2, 0}, /* 1x1, stride 2 */
    {2, 48, 5, 5, 17, 3, 1, 1}, /* odd output channels */
};

static mf_conv_shape conv_of(const cshape *c, int bx, int by) {
    mf_conv_shape s = {c->n, c->ci, c->h, c->w, c->co, c->k, c->stride, c->pad, 0, 0, bx, by, 0, 0};
    s.ho = (c->h + 2 * c->pad - c->k) / c->stride + 1;
    s.wo = (c->w + 2 * c->pad - c->k) / c->stride + 1;
    return s;
}

static void test_conv_one(const cshape *c, int v) {
    const int bx = vblk(v, c->ci), by = vblk(v, c->co);
    const mf_conv_shape st = conv_of(c, bx, by), sr = conv_of(c, pref_blk(R, c->ci), pref_blk(R, c->co));
    const int hwi = c->h * c->w, hwo = st.ho * st.wo;
    const int64_t nw = (int64_t)c->co * c->ci * c->k * c->k;
    char shp[120];
    snprintf(shp, sizeof shp, "n%d ci%d %dx%d co%d k%d s%d layout %d/%d", c->n, c->ci, c->h, c->w, c->co, c->k,
             c->stride, bx, by);
    ten x = tact_rand(c->n, c->ci, hwi, bx, sr.bx, 1, 0), w = tplain_rand(nw, 0.5, 0), b = tplain_rand(c->co, 1, 0);
    ten dy = tact_rand(c->n, c->co, hwo, by, sr.by, 1, 0);

    case_begin("conv2d", "%s", shp);
    ten y = tact(NULL, c->n, c->co, hwo, by, sr.by), y0 = tact(NULL, c->n, c->co, hwo, by, sr.by);
    T->i->conv2d(T, &st, x.t, w.t, b.t, y.t);
    R->i->conv2d(R, &sr, x.r, w.r, b.r, y.r);
    cmp("y(bias)", &y, tol_mat());
    T->i->conv2d(T, &st, x.t, w.t, NULL, y0.t);
    R->i->conv2d(R, &sr, x.r, w.r, NULL, y0.r);
    cmp("y(nobias)", &y0, tol_mat());
    tfree(&y), tfree(&y0);
    case_end();

    case_begin("conv2d_bwd_data", "%s", shp);
    ten dx0 = tact(NULL, c->n, c->ci, hwi, bx, sr.bx), dx1 = tact_rand(c->n, c->ci, hwi, bx, sr.bx, 1, 0);
    T->i->conv2d_bwd_data(T, &st, dy.t, w.t, dx0.t, 0);
    R->i->conv2d_bwd_data(R, &sr, dy.r, w.r, dx0.r, 0);
    cmp("dx(acc0)", &dx0, tol_mat());
    T->i->conv2d_bwd_data(T, &st, dy.t, w.t, dx1.t, 1);
    R->i->conv2d_bwd_data(R, &sr, dy.r, w.r, dx1.r, 1);
    cmp("dx(acc1)", &dx1, tol_mat());
    tfree(&dx0), tfree(&dx1);
    case_end();

    case_begin("conv2d_bwd_filter", "%s", shp);
    float *zw = calloc((size_t)nw, sizeof(float)), *zb = calloc((size_t)c->co, sizeof(float));
    ten dw0 = tplain(zw, nw), db0 = tplain(zb, c->co), dw1 = tplain_rand(nw, 4, 0), db1 = tplain_rand(c->co, 4, 0);
    T->i->conv2d_bwd_filter(T, &st, x.t, dy.t, dw0.t, db0.t);
    R->i->conv2d_bwd_filter(R, &sr, x.r, dy.r, dw0.r, db0.r);
    cmp("dw", &dw0, tol_mat());
    cmp("db", &db0, TOL_ELEM);
    T->i->conv2d_bwd_filter(T, &st, x.t, dy.t, dw1.t, db1.t);
    R->i->conv2d_bwd_filter(R, &sr, x.r, dy.r, dw1.r, db1.r);
    cmp("dw(acc)", &dw1, tol_mat());
    cmp("db(acc)", &db1, TOL_ELEM);
    T->i->conv2d_bwd_filter(T, &st, x.t, dy.t, dw0.t, NULL);
    R->i->conv2d_bwd_filter(R, &sr, x.r, dy.r, dw0.r, NULL);
    cmp("dw(nobias)", &dw0, tol_mat());
    tfree(&dw0), tfree(&db0), tfree(&dw1), tfree(&db1);
    free(zw), free(zb);
    case_end();
    tfree(&x), tfree(&w), tfree(&b), tfree(&dy);
}

static void test_conv(void) {
    if (!NEED(conv2d) || !NEED(conv2d_bwd_data) || !NEED(conv2d_bwd_filter)) return;
    for (size_t i = 0; i < sizeof conv_shapes / sizeof conv_shapes[0]; i++)
        for (int v = 0; v < n_variants(conv_shapes[i].ci, conv_shapes[i].co); v++) test_conv_one(&conv_shapes[i], v);
}

/* ---- normalisation --------------------------------------------------------------------------------- */

typedef struct gshape {
    int n, c, hw, g;
} gshape;
/* the last two: NCHW pairs of more than 8192 pixels (a GPU splits such a (sample, group) reduction into
 * chunks: several partial sums per pair), one of them with hw not a multiple of 4 */
static const gshape gn_shapes[] = {{2, 16, 64, 8}, {3, 32, 49, 8}, {2, 64, 16, 8}, {2, 8, 25, 4}, {2, 24, 9, 8},
                                   {2, 3, 10, 3},  {2, 3, 10, 1},  {1, 48, 36, 8}, {2, 64, 4, 32}, {2, 1, 7, 1},
                                   {2, 8, 9000, 2}, {1, 4, 8197, 2}};

/* The three GroupNorm entries of one kind (fused: 0 groupnorm, 1 gn_silu) on one backend; groupnorm's
 * backward and JVP take no beta (ignored here). */
static void gn_fwd(mf_backend *be, int fused, const gshape *s, const float *x, const float *gm, const float *bb, float *y,
                   float *mean, float *rstd, int blk) {
    if (fused) be->i->gn_silu(be, s->n, s->c, s->hw, s->g, 1e-5f, x, gm, bb, y, mean, rstd, blk);
    else be->i->groupnorm(be, s->n, s->c, s->hw, s->g, 1e-5f, x, gm, bb, y, mean, rstd, blk);
}
static void gn_bwd(mf_backend *be, int fused, const gshape *s, const float *x, const float *gm, const float *bb,
                   const float *mean, const float *rstd, const float *dy, float *dx, float *dg, float *db, int acc, int blk) {
    if (fused) be->i->gn_silu_bwd(be, s->n, s->c, s->hw, s->g, x, gm, bb, mean, rstd, dy, dx, dg, db, acc, blk);
    else be->i->groupnorm_bwd(be, s->n, s->c, s->hw, s->g, x, gm, mean, rstd, dy, dx, dg, db, acc, blk);
}
static void gn_jvp(mf_backend *be, int fused, const gshape *s, const float *x, const float *gm, const float *bb,
                   const float *mean, const float *rstd, const float *tx, float *ty, int blk) {
    if (fused) be->i->gn_silu_jvp(be, s->n, s->c, s->hw, s->g, x, gm, bb, mean, rstd, tx, ty, blk);
    else be->i->groupnorm_jvp(be, s->n, s->c, s->hw, s->g, x, gm, mean, rstd, tx, ty, blk);
}

/* fused: 0 groupnorm, 1 gn_silu. Besides the plain calls: gamma and beta NULL (scale 1, shift 0: the
 * CPU and CUDA kernels read them as optional, the graph does not pass NULL today), and the backward with
 * dx NULL (parameter gradients only) and with one of dgamma / dbeta NULL. */
static void test_gn_one(const gshape *s, int v, int fused) {
    const int n = s->n, c = s->c, hw = s->hw, g = s->g, bt = vblk(v, c), br = pref_blk(R, c);
    char shp[96];
    snprintf(shp, sizeof shp, "n%d c%d hw%d g%d layout %d", n, c, hw, g, bt);
    const char *names[2][3] = {{"groupnorm", "groupnorm_bwd", "groupnorm_jvp"}, {"gn_silu", "gn_silu_bwd", "gn_silu_jvp"}};
    ten x = tact_rand(n, c, hw, bt, br, 1.5, 0.3), gm = tplain_rand(c, 0.5, 1), bb = tplain_rand(c, 0.5, 0);
    ten y = tact(NULL, n, c, hw, bt, br), mean = tplain(NULL, (int64_t)n * g), rstd = tplain(NULL, (int64_t)n * g);

    case_begin(names[fused][0], "%s", shp);
    gn_fwd(T, fused, s, x.t, gm.t, bb.t, y.t, mean.t, rstd.t, bt);
    gn_fwd(R, fused, s, x.r, gm.r, bb.r, y.r, mean.r, rstd.r, br);
    cmp("y", &y, TOL_ELEM);
    cmp("mean", &mean, TOL_ELEM);
    cmp("rstd", &rstd, TOL_ELEM);
    ten y1 = tact(NULL, n, c, hw, bt, br), mean1 = tplain(NULL, (int64_t)n * g), rstd1 = tplain(NULL, (int64_t)n * g);
    gn_fwd(T, fused, s, x.t, NULL, NULL, y1.t, mean1.t, rstd1.t, bt);
    gn_fwd(R, fused, s, x.r, NULL, NULL, y1.r, mean1.r, rstd1.r, br);
    cmp("y(nullgb)", &y1, TOL_ELEM);
    cmp("mean(nullgb)", &mean1, TOL_ELEM);
    cmp("rstd(nullgb)", &rstd1, TOL_ELEM);
    tfree(&y1), tfree(&mean1), tfree(&rstd1);
    case_end();

    case_begin(names[fused][1], "%s", shp);
    ten dy = tact_rand(n, c, hw, bt, br, 1, 0), dx0 = tact(NULL, n, c, hw, bt, br), dx1 = tact_rand(n, c, hw, bt, br, 1, 0);
    ten dg = tplain_rand(c, 1, 0), db = tplain_rand(c, 1, 0);
    gn_bwd(T, fused, s, x.t, gm.t, bb.t, mean.t, rstd.t, dy.t, dx0.t, dg.t, db.t, 0, bt);
    gn_bwd(R, fused, s, x.r, gm.r, bb.r, mean.r, rstd.r, dy.r, dx0.r, dg.r, db.r, 0, br);
    gn_bwd(T, fused, s, x.t, gm.t, bb.t, mean.t, rstd.t, dy.t, dx1.t, NULL, NULL, 1, bt);
    gn_bwd(R, fused, s, x.r, gm.r, bb.r, mean.r, rstd.r, dy.r, dx1.r, NULL, NULL, 1, br);
    cmp("dx(acc0)", &dx0, TOL_ELEM);
    cmp("dx(acc1,nullgb)", &dx1, TOL_ELEM);
    cmp("dgamma(acc)", &dg, TOL_ELEM);
    cmp("dbeta(acc)", &db, TOL_ELEM);
    /* dx NULL: the parameter gradients only; then one of them NULL (with and without dx) */
    ten dg1 = tplain_rand(c, 1, 0), db1 = tplain_rand(c, 1, 0), dg2 = tplain_rand(c, 1, 0), db2 = tplain_rand(c, 1, 0);
    ten dx2 = tact(NULL, n, c, hw, bt, br);
    gn_bwd(T, fused, s, x.t, gm.t, bb.t, mean.t, rstd.t, dy.t, NULL, dg1.t, db1.t, 0, bt);
    gn_bwd(R, fused, s, x.r, gm.r, bb.r, mean.r, rstd.r, dy.r, NULL, dg1.r, db1.r, 0, br);
    cmp("dgamma(nulldx)", &dg1, TOL_ELEM);
    cmp("dbeta(nulldx)", &db1, TOL_ELEM);
    gn_bwd(T, fused, s, x.t, gm.t, bb.t, mean.t, rstd.t, dy.t, dx2.t, dg2.t, NULL, 0, bt);
    gn_bwd(R, fused, s, x.r, gm.r, bb.r, mean.r, rstd.r, dy.r, dx2.r, dg2.r, NULL, 0, br);
    cmp("dx(nulldbeta)", &dx2, TOL_ELEM);
    cmp("dgamma(nulldbeta)", &dg2, TOL_ELEM);
    gn_bwd(T, fused, s, x.t, gm.t, bb.t, mean.t, rstd.t, dy.t, NULL, NULL, db2.t, 1, bt);
    gn_bwd(R, fused, s, x.r, gm.r, bb.r, mean.r, rstd.r, dy.r, NULL, NULL, db2.r, 1, br);
    cmp("dbeta(nulldx,nulldgamma)", &db2, TOL_ELEM);
    /* gamma (and beta) NULL; the statistics do not depend on them */
    ten dx3 = tact(NULL, n, c, hw, bt, br), dg3 = tplain_rand(c, 1, 0), db3 = tplain_rand(c, 1, 0);
    gn_bwd(T, fused, s, x.t, NULL, NULL, mean.t, rstd.t, dy.t, dx3.t, dg3.t, db3.t, 0, bt);
    gn_bwd(R, fused, s, x.r, NULL, NULL, mean.r, rstd.r, dy.r, dx3.r, dg3.r, db3.r, 0, br);
    cmp("dx(nullgb)", &dx3, TOL_ELEM);
    cmp("dgamma(nullgb)", &dg3, TOL_ELEM);
    cmp("dbeta(nullgb)", &db3, TOL_ELEM);
    tfree(&dg1), tfree(&db1), tfree(&dg2), tfree(&db2), tfree(&dx2), tfree(&dx3), tfree(&dg3), tfree(&db3);
    case_end();

    case_begin(names[fused][2], "%s", shp);
    ten tx = tact_rand(n, c, hw, bt, br, 1, 0), ty = tact(NULL, n, c, hw, bt, br), ty1 = tact(NULL, n, c, hw, bt, br);
    gn_jvp(T, fused, s, x.t, gm.t, bb.t, mean.t, rstd.t, tx.t, ty.t, bt);
    gn_jvp(R, fused, s, x.r, gm.r, bb.r, mean.r, rstd.r, tx.r, ty.r, br);
    cmp("ty", &ty, TOL_ELEM);
    gn_jvp(T, fused, s, x.t, NULL, NULL, mean.t, rstd.t, tx.t, ty1.t, bt);
    gn_jvp(R, fused, s, x.r, NULL, NULL, mean.r, rstd.r, tx.r, ty1.r, br);
    cmp("ty(nullgb)", &ty1, TOL_ELEM);
    case_end();
    tfree(&x), tfree(&gm), tfree(&bb), tfree(&y), tfree(&mean), tfree(&rstd), tfree(&dy), tfree(&dx0), tfree(&dx1);
    tfree(&dg), tfree(&db), tfree(&tx), tfree(&ty), tfree(&ty1);
}

static void test_norm(void) {
    const int gn = NEED(groupnorm) && NEED(groupnorm_bwd) && NEED(groupnorm_jvp);
    const int gs = NEED(gn_silu) && NEED(gn_silu_bwd) && NEED(gn_silu_jvp);
    for (size_t i = 0; i < sizeof gn_shapes / sizeof gn_shapes[0]; i++)
        for (int v = 0; v < n_variants(gn_shapes[i].c, 0); v++) {
            if (gn) test_gn_one(&gn_shapes[i], v, 0);
            if (gs) test_gn_one(&gn_shapes[i], v, 1);
        }
}

/* ---- element-wise --------------------------------------------------------------------------------- */

static ten silu_input(int64_t n) {
    float *h = hrand(n, 6, 0);
    static const float extreme[] = {-90.0f, 90.0f, -30.0f, 30.0f, 0.0f, -1e-6f, 17.5f, -17.5f};
    for (int64_t i = 0; i < n && i < 8; i++) h[i * 7 % n] = extreme[i];
    ten x = tplain(h, n);
    free(h);
    return x;
}

static void test_silu(void) {
    if (!NEED(silu) || !NEED(silu_bwd) || !NEED(silu_jvp)) return;
    static const int64_t sizes[] = {1, 15, 1000, 4099};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        const int64_t n = sizes[s];
        ten x = silu_input(n), y = tplain(NULL, n), dy = tplain_rand(n, 1, 0), dx0 = tplain(NULL, n),
            dx1 = tplain_rand(n, 1, 0), ty = tplain(NULL, n), xi = silu_input(n);
        case_begin("silu", "n%lld", (long long)n);
        T->i->silu(T, n, x.t, y.t);
        R->i->silu(R, n, x.r, y.r);
        cmp("y", &y, TOL_ELEM);
        T->i->silu(T, n, xi.t, xi.t);
        R->i->silu(R, n, xi.r, xi.r);
        cmp("y(in place)", &xi, TOL_ELEM);
        case_end();
        case_begin("silu_bwd", "n%lld", (long long)n);
        T->i->silu_bwd(T, n, x.t, dy.t, dx0.t, 0);
        R->i->silu_bwd(R, n, x.r, dy.r, dx0.r, 0);
        cmp("dx(acc0)", &dx0, TOL_ELEM);
        T->i->silu_bwd(T, n, x.t, dy.t, dx1.t, 1);
        R->i->silu_bwd(R, n, x.r, dy.r, dx1.r, 1);
        cmp("dx(acc1)", &dx1, TOL_ELEM);
        case_end();
        case_begin("silu_jvp", "n%lld", (long long)n);
        T->i->silu_jvp(T, n, x.t, dy.t, ty.t);
        R->i->silu_jvp(R, n, x.r, dy.r, ty.r);
        cmp("ty", &ty, TOL_ELEM);
        case_end();
        tfree(&x), tfree(&y), tfree(&dy), tfree(&dx0), tfree(&dx1), tfree(&ty), tfree(&xi);
    }
}

static void test_axpby_add2(void) {
    const int64_t n = 1037;
    if (NEED(axpby)) {
        case_begin("axpby", "n%lld", (long long)n);
        ten x = tplain_rand(n, 1, 0), y0 = tplain(NULL, n), y1 = tplain_rand(n, 1, 0);
        T->i->axpby(T, n, -1.5f, x.t, 0.0f, y0.t); /* b = 0: y need not be initialised (NaN here) */
        R->i->axpby(R, n, -1.5f, x.r, 0.0f, y0.r);
        cmp("y(b0,nan)", &y0, TOL_ELEM);
        T->i->axpby(T, n, -1.5f, x.t, 0.3f, y1.t);
        R->i->axpby(R, n, -1.5f, x.r, 0.3f, y1.r);
        cmp("y", &y1, TOL_ELEM);
        tfree(&x), tfree(&y0), tfree(&y1);
        case_end();
    }
    if (NEED(add2)) {
        case_begin("add2", "n%lld (z separate, z = x, z = y)", (long long)n);
        ten x = tplain_rand(n, 1, 0), y = tplain_rand(n, 1, 0), z = tplain(NULL, n);
        T->i->add2(T, n, 0.5f, x.t, -2.0f, y.t, z.t);
        R->i->add2(R, n, 0.5f, x.r, -2.0f, y.r, z.r);
        cmp("z", &z, TOL_ELEM);
        T->i->add2(T, n, 0.5f, x.t, -2.0f, y.t, x.t);
        R->i->add2(R, n, 0.5f, x.r, -2.0f, y.r, x.r);
        cmp("z=x", &x, TOL_ELEM);
        T->i->add2(T, n, 1.25f, x.t, 0.75f, y.t, y.t);
        R->i->add2(R, n, 1.25f, x.r, 0.75f, y.r, y.r);
        cmp("z=y", &y, TOL_ELEM);
        tfree(&x), tfree(&y), tfree(&z);
        case_end();
    }
}

/* ---- element-wise kernels on unaligned pointers ------------------------------------------------------
 * axpby, add2, silu (and its backward and JVP), adamw, ema and fill with their operands 1, 2 or 3 floats
 * past the start of an allocation (a vector path must peel, or fall back) and lengths that are no
 * multiple of 4 or 8. Every operand lies inside an allocation of n + UA_PAD floats whose other floats
 * must stay untouched: the whole allocation is compared. Variants: all operands at offset o, or operand
 * k at (o + k) % 4 (mixed: some aligned, some not, differently misaligned ones together). */

enum { UA_PAD = 8 };
static const int64_t ua_lens[] = {13, 1021};
#define HAS(f) (T->i->f != NULL && R->i->f != NULL) /* missing kernels are reported by their own tests */

static int ua_off(int o, int mixed, int k) { return mixed ? (o + k) % 4 : o; }
/* An operand of n floats at offset off of a random allocation; nan: its range starts as NaN (an output
 * that must be overwritten). h (optional): the host copy of the whole allocation (the caller frees it). */
static ten ua_buf(int64_t n, int off, int nan, double scale, double offset, float **h) {
    float *d = hrand(n + UA_PAD, scale, offset);
    if (nan)
        for (int64_t i = 0; i < n; i++) d[off + i] = NAN;
    ten x = tplain(d, n + UA_PAD);
    if (h) *h = d;
    else free(d);
    return x;
}
static void ua_cmp(const char *out, int64_t n, const ten *x, double tol) {
    char nm[48];
    snprintf(nm, sizeof nm, "%s n%lld", out, (long long)n);
    cmp(nm, x, tol);
}

static void test_unaligned(void) {
    for (int o = 1; o <= 3; o++)
        for (int mx = 0; mx < 2; mx++) {
            char var[64];
            if (mx) snprintf(var, sizeof var, "operands at +%d,+%d,+%d,+%d", o, (o + 1) % 4, (o + 2) % 4, (o + 3) % 4);
            else snprintf(var, sizeof var, "all operands at +%d", o);
            const int o0 = ua_off(o, mx, 0), o1 = ua_off(o, mx, 1), o2 = ua_off(o, mx, 2), o3 = ua_off(o, mx, 3);
            if (HAS(axpby)) {
                case_begin("axpby", "n13, n1021, %s", var);
                for (size_t l = 0; l < sizeof ua_lens / sizeof ua_lens[0]; l++) {
                    const int64_t n = ua_lens[l];
                    ten x = ua_buf(n, o0, 0, 1, 0, NULL), y0 = ua_buf(n, o1, 1, 1, 0, NULL), y1 = ua_buf(n, o1, 0, 1, 0, NULL);
                    T->i->axpby(T, n, -1.5f, x.t + o0, 0.0f, y0.t + o1);
                    R->i->axpby(R, n, -1.5f, x.r + o0, 0.0f, y0.r + o1);
                    ua_cmp("y(b0,nan)", n, &y0, TOL_ELEM);
                    T->i->axpby(T, n, -1.5f, x.t + o0, 0.3f, y1.t + o1);
                    R->i->axpby(R, n, -1.5f, x.r + o0, 0.3f, y1.r + o1);
                    ua_cmp("y", n, &y1, TOL_ELEM);
                    tfree(&x), tfree(&y0), tfree(&y1);
                }
                case_end();
            }
            if (HAS(add2)) {
                case_begin("add2", "n13, n1021, %s (z separate, z = x)", var);
                for (size_t l = 0; l < sizeof ua_lens / sizeof ua_lens[0]; l++) {
                    const int64_t n = ua_lens[l];
                    ten x = ua_buf(n, o0, 0, 1, 0, NULL), y = ua_buf(n, o1, 0, 1, 0, NULL), z = ua_buf(n, o2, 1, 1, 0, NULL);
                    T->i->add2(T, n, 0.5f, x.t + o0, -2.0f, y.t + o1, z.t + o2);
                    R->i->add2(R, n, 0.5f, x.r + o0, -2.0f, y.r + o1, z.r + o2);
                    ua_cmp("z", n, &z, TOL_ELEM);
                    T->i->add2(T, n, 1.25f, x.t + o0, 0.75f, y.t + o1, x.t + o0);
                    R->i->add2(R, n, 1.25f, x.r + o0, 0.75f, y.r + o1, x.r + o0);
                    ua_cmp("z=x", n, &x, TOL_ELEM);
                    tfree(&x), tfree(&y), tfree(&z);
                }
                case_end();
            }
            if (HAS(silu) && HAS(silu_bwd) && HAS(silu_jvp)) {
                case_begin("silu/_bwd/_jvp", "n13, n1021, %s", var);
                for (size_t l = 0; l < sizeof ua_lens / sizeof ua_lens[0]; l++) {
                    const int64_t n = ua_lens[l];
                    ten x = ua_buf(n, o0, 0, 6, 0, NULL), y = ua_buf(n, o1, 1, 1, 0, NULL), dy = ua_buf(n, o2, 0, 1, 0, NULL);
                    ten dx = ua_buf(n, o3, 0, 1, 0, NULL), ty = ua_buf(n, o1, 1, 1, 0, NULL);
                    T->i->silu(T, n, x.t + o0, y.t + o1);
                    R->i->silu(R, n, x.r + o0, y.r + o1);
                    ua_cmp("y", n, &y, TOL_ELEM);
                    T->i->silu_bwd(T, n, x.t + o0, dy.t + o2, dx.t + o3, 1);
                    R->i->silu_bwd(R, n, x.r + o0, dy.r + o2, dx.r + o3, 1);
                    ua_cmp("dx(acc1)", n, &dx, TOL_ELEM);
                    T->i->silu_jvp(T, n, x.t + o0, dy.t + o2, ty.t + o1);
                    R->i->silu_jvp(R, n, x.r + o0, dy.r + o2, ty.r + o1);
                    ua_cmp("ty", n, &ty, TOL_ELEM);
                    tfree(&x), tfree(&y), tfree(&dy), tfree(&dx), tfree(&ty);
                }
                case_end();
            }
            if (HAS(adamw)) {
                case_begin("adamw", "n13, n1021, %s (p, grad, m, v), steps 1..2", var);
                for (size_t l = 0; l < sizeof ua_lens / sizeof ua_lens[0]; l++) {
                    const int64_t n = ua_lens[l], nb = n + UA_PAD;
                    float *p0;
                    ten p = ua_buf(n, o0, 0, 1, 0, &p0), g = ua_buf(n, o1, 0, 1, 0, NULL);
                    ten m = ua_buf(n, o2, 0, 0.01, 0, NULL), v = ua_buf(n, o3, 0, 0.005, 0.005, NULL);
                    for (int step = 1; step <= 2; step++) {
                        T->i->adamw(T, n, p.t + o0, g.t + o1, m.t + o2, v.t + o3, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step, 0.7f);
                        R->i->adamw(R, n, p.r + o0, g.r + o1, m.r + o2, v.r + o3, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step, 0.7f);
                    }
                    ua_cmp("p", n, &p, TOL_ELEM);
                    ua_cmp("m", n, &m, TOL_ELEM);
                    ua_cmp("v", n, &v, TOL_ELEM);
                    float *pt = malloc(sizeof(float) * (size_t)nb), *pr = malloc(sizeof(float) * (size_t)nb);
                    tread(&p, pt, pr);
                    for (int64_t i = 0; i < nb; i++) pt[i] -= p0[i], pr[i] -= p0[i];
                    char nm[48];
                    snprintf(nm, sizeof nm, "p-p0 n%lld", (long long)n);
                    case_cmp(nm, nerr(pt, pr, nb), TOL_ADAM_DP);
                    free(pt), free(pr), free(p0);
                    tfree(&p), tfree(&g), tfree(&m), tfree(&v);
                }
                case_end();
            }
            if (HAS(ema)) {
                case_begin("ema", "n13, n1021, %s (e, p)", var);
                for (size_t l = 0; l < sizeof ua_lens / sizeof ua_lens[0]; l++) {
                    const int64_t n = ua_lens[l];
                    ten e = ua_buf(n, o0, 0, 1, 0, NULL), p = ua_buf(n, o1, 0, 1, 0, NULL);
                    T->i->ema(T, n, e.t + o0, p.t + o1, 0.999f);
                    R->i->ema(R, n, e.r + o0, p.r + o1, 0.999f);
                    ua_cmp("e", n, &e, TOL_ELEM);
                    tfree(&e), tfree(&p);
                }
                case_end();
            }
            if (HAS(fill) && !mx) { /* one operand: the mixed variant is the same */
                case_begin("fill", "n13, n1021, %s", var);
                for (size_t l = 0; l < sizeof ua_lens / sizeof ua_lens[0]; l++) {
                    const int64_t n = ua_lens[l];
                    ten x = ua_buf(n, o0, 0, 1, 0, NULL);
                    T->i->fill(T, x.t + o0, -0.625f, n);
                    R->i->fill(R, x.r + o0, -0.625f, n);
                    ua_cmp("x", n, &x, 0.0);
                    tfree(&x);
                }
                case_end();
            }
        }
}

static void test_channel_ops(void) {
    static const int shapes[][3] = {{2, 16, 64}, {3, 24, 9}, {2, 3, 10}, {2, 64, 16}, {1, 1, 5}, {2, 32, 49}};
    const int ac = NEED(add_channel), sc = NEED(sum_channel);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int v = 0; v < n_variants(shapes[s][1], 0); v++) {
            const int n = shapes[s][0], c = shapes[s][1], hw = shapes[s][2], bt = vblk(v, c), br = pref_blk(R, c);
            if (ac) {
                case_begin("add_channel", "n%d c%d hw%d layout %d (y separate, y = x)", n, c, hw, bt);
                ten x = tact_rand(n, c, hw, bt, br, 1, 0), e = tplain_rand((int64_t)n * c, 1, 0), y = tact(NULL, n, c, hw, bt, br);
                T->i->add_channel(T, n, c, hw, x.t, e.t, y.t, bt);
                R->i->add_channel(R, n, c, hw, x.r, e.r, y.r, br);
                cmp("y", &y, TOL_ELEM);
                T->i->add_channel(T, n, c, hw, x.t, e.t, x.t, bt);
                R->i->add_channel(R, n, c, hw, x.r, e.r, x.r, br);
                cmp("y=x", &x, TOL_ELEM);
                tfree(&x), tfree(&e), tfree(&y);
                case_end();
            }
            if (sc) {
                case_begin("sum_channel", "n%d c%d hw%d layout %d", n, c, hw, bt);
                ten dy = tact_rand(n, c, hw, bt, br, 1, 0), de0 = tplain(NULL, (int64_t)n * c), de1 = tplain_rand((int64_t)n * c, 1, 0);
                T->i->sum_channel(T, n, c, hw, dy.t, de0.t, 0, bt);
                R->i->sum_channel(R, n, c, hw, dy.r, de0.r, 0, br);
                cmp("de(acc0)", &de0, TOL_ELEM);
                T->i->sum_channel(T, n, c, hw, dy.t, de1.t, 1, bt);
                R->i->sum_channel(R, n, c, hw, dy.r, de1.r, 1, br);
                cmp("de(acc1)", &de1, TOL_ELEM);
                tfree(&dy), tfree(&de0), tfree(&de1);
                case_end();
            }
        }
}

static void test_rows(void) {
    static const int shapes[][2] = {{128, 64}, {7, 33}, {1, 5}, {256, 1}};
    const int sr = NEED(sum_rows), ab = NEED(add_bias_rows);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int rows = shapes[s][0], cols = shapes[s][1];
        if (sr) {
            case_begin("sum_rows", "rows%d cols%d", rows, cols);
            ten dy = tplain_rand((int64_t)rows * cols, 1, 0), db = tplain_rand(cols, 1, 0);
            T->i->sum_rows(T, rows, cols, dy.t, db.t);
            R->i->sum_rows(R, rows, cols, dy.r, db.r);
            cmp("dbias(acc)", &db, TOL_ELEM);
            tfree(&dy), tfree(&db);
            case_end();
        }
        if (ab) {
            case_begin("add_bias_rows", "rows%d cols%d", rows, cols);
            ten y = tplain_rand((int64_t)rows * cols, 1, 0), b = tplain_rand(cols, 1, 0);
            T->i->add_bias_rows(T, rows, cols, b.t, y.t);
            R->i->add_bias_rows(R, rows, cols, b.r, y.r);
            cmp("y", &y, TOL_ELEM);
            tfree(&y), tfree(&b);
            case_end();
        }
    }
}

/* ---- per-row arithmetic of the objectives ---------------------------------------------------------- */

static void test_per_row(void) {
    static const int shapes[][2] = {{8, 784}, {5, 33}, {1, 1}, {3, 4097}};
    const int ra = NEED(rows_axpby), rs = NEED(row_sq_err), pw = NEED(pow_weight);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int n = shapes[s][0];
        const int64_t d = shapes[s][1], nd = n * d;
        if (ra) {
            case_begin("rows_axpby", "n%d d%lld (z separate, NULL b/y, z = x, z = y)", n, (long long)d);
            ten a = tplain_rand(n, 1, 0), b = tplain_rand(n, 1, 0), x = tplain_rand(nd, 1, 0), y = tplain_rand(nd, 1, 0);
            ten z = tplain(NULL, nd), z1 = tplain(NULL, nd);
            T->i->rows_axpby(T, n, d, a.t, x.t, b.t, y.t, z.t);
            R->i->rows_axpby(R, n, d, a.r, x.r, b.r, y.r, z.r);
            cmp("z", &z, TOL_ELEM);
            /* b and y NULL together only: mf_backend.h allows "b and y may be NULL (z = a x)", not b
             * without y or y without b, so those are not cases */
            T->i->rows_axpby(T, n, d, a.t, x.t, NULL, NULL, z1.t);
            R->i->rows_axpby(R, n, d, a.r, x.r, NULL, NULL, z1.r);
            cmp("z(nullby)", &z1, TOL_ELEM);
            T->i->rows_axpby(T, n, d, a.t, x.t, b.t, y.t, x.t);
            R->i->rows_axpby(R, n, d, a.r, x.r, b.r, y.r, x.r);
            cmp("z=x", &x, TOL_ELEM);
            T->i->rows_axpby(T, n, d, b.t, x.t, a.t, y.t, y.t);
            R->i->rows_axpby(R, n, d, b.r, x.r, a.r, y.r, y.r);
            cmp("z=y", &y, TOL_ELEM);
            T->i->rows_axpby(T, n, d, a.t, y.t, NULL, NULL, y.t);
            R->i->rows_axpby(R, n, d, a.r, y.r, NULL, NULL, y.r);
            cmp("z=x(nullby)", &y, TOL_ELEM);
            tfree(&a), tfree(&b), tfree(&x), tfree(&y), tfree(&z), tfree(&z1);
            case_end();
        }
        if (rs) {
            case_begin("row_sq_err", "n%d d%lld (y, NULL y)", n, (long long)d);
            ten x = tplain_rand(nd, 1, 0), y = tplain_rand(nd, 1, 0.2), e = tplain(NULL, n), e1 = tplain(NULL, n);
            T->i->row_sq_err(T, n, d, x.t, y.t, e.t);
            R->i->row_sq_err(R, n, d, x.r, y.r, e.r);
            cmp("e", &e, TOL_RED_F);
            T->i->row_sq_err(T, n, d, x.t, NULL, e1.t);
            R->i->row_sq_err(R, n, d, x.r, NULL, e1.r);
            cmp("e(nully)", &e1, TOL_RED_F);
            tfree(&x), tfree(&y), tfree(&e), tfree(&e1);
            case_end();
        }
    }
    if (pw) {
        static const float pc[][3] = {{1.0f, 1e-3f, 1.0f / 9}, {0.5f, 1e-2f, 1.0f}, {0.0f, 1e-3f, 2.0f}, {2.0f, 0.1f, 0.25f}};
        for (size_t i = 0; i < sizeof pc / sizeof pc[0]; i++) {
            const int n = 9;
            case_begin("pow_weight", "n%d p%g c%g scale%g", n, (double)pc[i][0], (double)pc[i][1], (double)pc[i][2]);
            ten e = tplain_rand(n, 5, 5.01), w = tplain(NULL, n);
            T->i->pow_weight(T, n, e.t, pc[i][1], pc[i][0], pc[i][2], w.t);
            R->i->pow_weight(R, n, e.r, pc[i][1], pc[i][0], pc[i][2], w.r);
            cmp("w", &w, TOL_ELEM);
            tfree(&e), tfree(&w);
            case_end();
        }
    }
}

/* ---- layout ---------------------------------------------------------------------------------------- */

/* Layouts: the tested backend's preferred ones and NCHW, and, where a channel count is a multiple of 16,
 * nChw16c as well, on every backend (mf_backend.h: a kernel's blk is 0/1, 16 or the channel count; a
 * backend whose cblock is not 16 still gets 16 here, e.g. c = 32 or 48 blocked by 16 on a GPU that keeps
 * them NHWC). The reference always gets its own (NCHW). */
static void test_copy_channels(void) {
    if (!NEED(copy_channels)) return;
    /* n, hw, nc, src_c, src_c0, dst_c, dst_c0 */
    static const int cases[][7] = {
        {2, 16, 32, 32, 0, 64, 32}, /* concat: second half */
        {2, 16, 32, 64, 32, 32, 0}, /* split */
        {2, 9, 16, 16, 0, 48, 16},  {2, 9, 3, 3, 0, 19, 16}, {2, 9, 8, 24, 8, 40, 16},
        {2, 25, 16, 16, 0, 16, 0},  /* whole tensor: layout conversion */
        {3, 7, 5, 13, 4, 9, 2},     {1, 4, 64, 64, 0, 128, 64},
        /* blocks of 16 with c != 16: partial blocks, channel offsets inside a block */
        {2, 7, 8, 32, 4, 48, 20},   {2, 9, 20, 48, 10, 32, 3}, {2, 9, 32, 48, 16, 32, 0}, {1, 5, 48, 48, 0, 48, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int n = cases[i][0], hw = cases[i][1], nc = cases[i][2], sc = cases[i][3], s0 = cases[i][4],
                  dc = cases[i][5], d0 = cases[i][6];
        const int ps = pref_blk(T, sc), pd = pref_blk(T, dc);
        const int s16 = sc % 16 == 0 ? 16 : 0, d16 = dc % 16 == 0 ? 16 : 0;
        const int combos[][2] = {{ps, pd}, {0, pd}, {ps, 0}, {0, 0}, {s16, d16}, {s16, pd}, {ps, d16}, {s16, 0}, {0, d16}};
        for (int k = 0; k < (int)(sizeof combos / sizeof combos[0]); k++) {
            int dup = 0;
            for (int j = 0; j < k; j++) dup |= combos[j][0] == combos[k][0] && combos[j][1] == combos[k][1];
            if (dup) continue;
            const int sb = combos[k][0], db = combos[k][1];
            case_begin("copy_channels", "n%d hw%d nc%d src %d[%d:] blk%d -> dst %d[%d:] blk%d", n, hw, nc, sc, s0, sb,
                       dc, d0, db);
            ten src = tact_rand(n, sc, hw, sb, pref_blk(R, sc), 1, 0);
            ten dst0 = tact_rand(n, dc, hw, db, pref_blk(R, dc), 1, 0), dst1 = tact_rand(n, dc, hw, db, pref_blk(R, dc), 1, 0);
            T->i->copy_channels(T, n, hw, nc, src.t, sc, s0, sb, dst0.t, dc, d0, db, 0);
            R->i->copy_channels(R, n, hw, nc, src.r, sc, s0, src.br, dst0.r, dc, d0, dst0.br, 0);
            cmp("dst(acc0)", &dst0, 0.0); /* a copy is exact, and the other channels stay untouched */
            T->i->copy_channels(T, n, hw, nc, src.t, sc, s0, sb, dst1.t, dc, d0, db, 1);
            R->i->copy_channels(R, n, hw, nc, src.r, sc, s0, src.br, dst1.r, dc, d0, dst1.br, 1);
            cmp("dst(acc1)", &dst1, TOL_ELEM);
            tfree(&src), tfree(&dst0), tfree(&dst1);
            case_end();
        }
    }
}

static void test_upsample(void) {
    if (!NEED(upsample2x) || !NEED(upsample2x_bwd)) return;
    static const int shapes[][4] = {{2, 16, 4, 4}, {2, 3, 5, 7}, {1, 32, 7, 7}, {2, 24, 3, 3}, {1, 64, 2, 2}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int v = 0; v < n_variants(shapes[s][1], 0); v++) {
            const int n = shapes[s][0], c = shapes[s][1], h = shapes[s][2], w = shapes[s][3];
            const int bt = vblk(v, c), br = pref_blk(R, c);
            case_begin("upsample2x", "n%d c%d %dx%d layout %d", n, c, h, w, bt);
            ten x = tact_rand(n, c, h * w, bt, br, 1, 0), y = tact(NULL, n, c, 4 * h * w, bt, br);
            T->i->upsample2x(T, n, c, h, w, x.t, y.t, bt);
            R->i->upsample2x(R, n, c, h, w, x.r, y.r, br);
            cmp("y", &y, 0.0);
            case_end();
            case_begin("upsample2x_bwd", "n%d c%d %dx%d layout %d", n, c, h, w, bt);
            ten dy = tact_rand(n, c, 4 * h * w, bt, br, 1, 0), dx0 = tact(NULL, n, c, h * w, bt, br),
                dx1 = tact_rand(n, c, h * w, bt, br, 1, 0);
            T->i->upsample2x_bwd(T, n, c, h, w, dy.t, dx0.t, 0, bt);
            R->i->upsample2x_bwd(R, n, c, h, w, dy.r, dx0.r, 0, br);
            cmp("dx(acc0)", &dx0, TOL_ELEM);
            T->i->upsample2x_bwd(T, n, c, h, w, dy.t, dx1.t, 1, bt);
            R->i->upsample2x_bwd(R, n, c, h, w, dy.r, dx1.r, 1, br);
            cmp("dx(acc1)", &dx1, TOL_ELEM);
            tfree(&x), tfree(&y), tfree(&dy), tfree(&dx0), tfree(&dx1);
            case_end();
        }
}

static void test_embed(void) {
    if (!NEED(embed) || !NEED(embed_bwd)) return;
    static const int32_t idx12[] = {0, 3, 3, 6, 1, 0, 3, 5, 2, 6, 6, 3};
    static const int32_t idx5[] = {4, 4, 4, 0, 4};
    static const struct {
        int n, dim, rows;
        const int32_t *idx;
    } cases[] = {{12, 32, 7, idx12}, {5, 5, 5, idx5}, {12, 1, 7, idx12}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int n = cases[i].n, dim = cases[i].dim, rows = cases[i].rows;
        case_begin("embed", "n%d dim%d rows%d (repeated indices)", n, dim, rows);
        ten tab = tplain_rand((int64_t)rows * dim, 1, 0), y = tplain(NULL, (int64_t)n * dim);
        T->i->embed(T, n, dim, cases[i].idx, tab.t, y.t);
        R->i->embed(R, n, dim, cases[i].idx, tab.r, y.r);
        cmp("y", &y, 0.0);
        case_end();
        case_begin("embed_bwd", "n%d dim%d rows%d (repeated indices)", n, dim, rows);
        ten dy = tplain_rand((int64_t)n * dim, 1, 0), dt = tplain_rand((int64_t)rows * dim, 1, 0);
        T->i->embed_bwd(T, n, dim, cases[i].idx, dy.t, dt.t);
        R->i->embed_bwd(R, n, dim, cases[i].idx, dy.r, dt.r);
        cmp("dtable(acc)", &dt, TOL_ELEM);
        tfree(&tab), tfree(&y), tfree(&dy), tfree(&dt);
        case_end();
    }
}

/* ---- time features ---------------------------------------------------------------------------------- */

static void test_fourier(void) {
    if (!NEED(fourier) || !NEED(fourier_jvp)) return;
    static const int shapes[][2] = {{9, 16}, {128, 32}, {1, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int n = shapes[s][0], half = shapes[s][1];
        /* the model's frequencies (mf_g_fourier): scale 1000 x 10000^(-k/half), t in [0, 1): arguments up to
         * 1000 rad, where the CPU forms t*freq exactly (in double); a backend whose float product rounds
         * it (6e-5 at 1000) fails here, deliberately */
        float *f = malloc(sizeof(float) * (size_t)half);
        for (int k = 0; k < half; k++) f[k] = 1000.0f * (float)exp(-log(10000.0) * k / half);
        ten t = tplain_rand(n, 0.5, 0.5), freq = tplain(f, half), tt = tplain_rand(n, 1, 0);
        ten y = tplain(NULL, (int64_t)n * 2 * half), ty = tplain(NULL, (int64_t)n * 2 * half);
        case_begin("fourier", "n%d half%d (args up to 1000 rad)", n, half);
        T->i->fourier(T, n, half, t.t, freq.t, y.t);
        R->i->fourier(R, n, half, t.r, freq.r, y.r);
        cmp("y", &y, TOL_ELEM);
        case_end();
        case_begin("fourier_jvp", "n%d half%d", n, half);
        T->i->fourier_jvp(T, n, half, t.t, freq.t, tt.t, ty.t);
        R->i->fourier_jvp(R, n, half, t.r, freq.r, tt.r, ty.r);
        cmp("ty", &ty, TOL_ELEM);
        case_end();
        tfree(&t), tfree(&freq), tfree(&tt), tfree(&y), tfree(&ty);
        free(f);
    }
}

/* ---- reductions and optimiser ------------------------------------------------------------------------ */

static double nerr_d(const double *got, const double *ref, int n) {
    double e = 0, m = 0;
    int bad = 0;
    for (int i = 0; i < n; i++) {
        const double d = fabs(got[i] - ref[i]);
        if (isnan(d)) bad = 1;
        else if (d > e) e = d;
        if (fabs(ref[i]) > m) m = fabs(ref[i]);
    }
    return bad ? NAN : e / (m > TINY ? m : TINY);
}

static void test_reductions(void) {
    if (NEED(sq_err_rows)) {
        static const int shapes[][2] = {{8, 784}, {3, 33}, {1, 100003}};
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            const int n = shapes[s][0];
            const int64_t d = shapes[s][1];
            case_begin("sq_err_rows", "n%d d%lld (b, NULL b)", n, (long long)d);
            ten a = tplain_rand(n * d, 1, 0), b = tplain_rand(n * d, 1, 0.1);
            double *ot = malloc(sizeof(double) * (size_t)n), *orf = malloc(sizeof(double) * (size_t)n);
            T->i->sq_err_rows(T, n, d, a.t, b.t, ot);
            R->i->sq_err_rows(R, n, d, a.r, b.r, orf);
            case_cmp("out", nerr_d(ot, orf, n), TOL_RED);
            T->i->sq_err_rows(T, n, d, a.t, NULL, ot);
            R->i->sq_err_rows(R, n, d, a.r, NULL, orf);
            case_cmp("out(nullb)", nerr_d(ot, orf, n), TOL_RED);
            free(ot), free(orf);
            tfree(&a), tfree(&b);
            case_end();
        }
    }
    if (NEED(sumsq)) {
        static const int64_t sizes[] = {1, 1000, 100003, 300001};
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            case_begin("sumsq", "n%lld", (long long)sizes[s]);
            ten x = tplain_rand(sizes[s], 1, 0);
            const double a = T->i->sumsq(T, sizes[s], x.t), b = R->i->sumsq(R, sizes[s], x.r);
            case_cmp("sum", nerr_d(&a, &b, 1), TOL_RED);
            tfree(&x);
            case_end();
        }
    }
}

static void test_adamw_ema(void) {
    if (NEED(adamw)) {
        static const float wds[] = {0.0f, 0.01f};
        for (int iw = 0; iw < 2; iw++) {
            const int64_t n = 1031;
            case_begin("adamw", "n%lld wd%g gscale 0.7, steps 1..3", (long long)n, (double)wds[iw]);
            float *p0 = hrand(n, 1, 0), *v0 = hrand(n, 0.005, 0.005);
            ten p = tplain(p0, n), m = tplain_rand(n, 0.01, 0), v = tplain(v0, n);
            for (int step = 1; step <= 3; step++) {
                ten g = tplain_rand(n, step == 2 ? 1e-3 : 1.0, 0);
                T->i->adamw(T, n, p.t, g.t, m.t, v.t, 1e-3f, 0.9f, 0.999f, 1e-8f, wds[iw], step, 0.7f);
                R->i->adamw(R, n, p.r, g.r, m.r, v.r, 1e-3f, 0.9f, 0.999f, 1e-8f, wds[iw], step, 0.7f);
                tfree(&g);
            }
            cmp("p", &p, TOL_ELEM);
            cmp("m", &m, TOL_ELEM);
            cmp("v", &v, TOL_ELEM);
            float *pt = malloc(sizeof(float) * (size_t)n), *pr = malloc(sizeof(float) * (size_t)n);
            tread(&p, pt, pr);
            for (int64_t i = 0; i < n; i++) pt[i] -= p0[i], pr[i] -= p0[i];
            case_cmp("p-p0", nerr(pt, pr, n), TOL_ADAM_DP);
            free(pt), free(pr), free(p0), free(v0);
            tfree(&p), tfree(&m), tfree(&v);
            case_end();
        }
    }
    if (NEED(adamw_step)) {
        /* the fused step: gradient norm, clipping, Adam, a skipped non-finite step; state in st */
        const int64_t n = 1031;
        case_begin("adamw_step", "n%lld clip 1, steps: clipped, unclipped, NaN (skipped), clipped", (long long)n);
        ten p = tplain_rand(n, 1, 0), m = tplain_rand(n, 0.01, 0), v = tplain_rand(n, 0.005, 0.005);
        float st0[MF_OPT_ST_N] = {0};
        st0[MF_OPT_ST_FIRST_SKIP] = -1.0f; /* reset state: no skip yet */
        ten st = tplain(st0, MF_OPT_ST_N);
        static const double gscale[] = {1.0, 1e-3, 1.0, 0.5};
        for (int step = 1; step <= 4; step++) {
            float *hg = hrand(n, gscale[step - 1], 0);
            if (step == 3) hg[17] = NAN;
            ten g = tplain(hg, n);
            const float in[2] = {1e-3f * (float)step, (float)step};
            T->i->write(T, st.t + MF_OPT_ST_LR, in, sizeof in);
            R->i->write(R, st.r + MF_OPT_ST_LR, in, sizeof in);
            T->i->adamw_step(T, n, p.t, g.t, m.t, v.t, st.t, 0.9f, 0.999f, 1e-8f, 0.01f, 1.0f);
            R->i->adamw_step(R, n, p.r, g.r, m.r, v.r, st.r, 0.9f, 0.999f, 1e-8f, 0.01f, 1.0f);
            tfree(&g);
            free(hg);
        }
        cmp("p", &p, TOL_ELEM);
        cmp("m", &m, TOL_ELEM);
        cmp("v", &v, TOL_ELEM);
        float a[MF_OPT_ST_N], b[MF_OPT_ST_N];
        T->i->read(T, a, st.t, sizeof a);
        R->i->read(R, b, st.r, sizeof b);
        case_cmp("st.t", nerr(a + MF_OPT_ST_T, b + MF_OPT_ST_T, 1), 0.0);
        case_cmp("st.gnorm", nerr(a + MF_OPT_ST_GNORM, b + MF_OPT_ST_GNORM, 1), TOL_RED_F);
        case_cmp("st.skipped", nerr(a + MF_OPT_ST_SKIPPED, b + MF_OPT_ST_SKIPPED, 1), 0.0);
        case_cmp("st.first_skip", nerr(a + MF_OPT_ST_FIRST_SKIP, b + MF_OPT_ST_FIRST_SKIP, 1), 0.0);
        case_cmp("t == 3, 1 skipped at 3", b[MF_OPT_ST_T] == 3 && b[MF_OPT_ST_SKIPPED] == 1 && b[MF_OPT_ST_FIRST_SKIP] == 3 ? 0.0 : 1.0, 0.0);
        tfree(&p), tfree(&m), tfree(&v), tfree(&st);
        case_end();
    }
    if (NEED(ema)) {
        const int64_t n = 1031;
        case_begin("ema", "n%lld d 0.999 and 0.5", (long long)n);
        ten e = tplain_rand(n, 1, 0), p = tplain_rand(n, 1, 0);
        T->i->ema(T, n, e.t, p.t, 0.999f);
        R->i->ema(R, n, e.r, p.r, 0.999f);
        T->i->ema(T, n, e.t, p.t, 0.5f);
        R->i->ema(R, n, e.r, p.r, 0.5f);
        cmp("e", &e, TOL_ELEM);
        tfree(&e), tfree(&p);
        case_end();
    }
}

/* ---- memory, random numbers, graphs (the tested backend against host values) --------------------------- */

static void test_memory(void) {
    const int64_t n = 1037;
    if (!NEED(alloc) || !NEED(free) || !NEED(write) || !NEED(read) || !NEED(copy) || !NEED(fill) || !NEED(peak_bytes))
        return;
    case_begin("write/read/copy", "n%lld, offsets 0 and 3 floats", (long long)n);
    float *h = hrand(n, 1, 0), *h2 = hrand(5, 1, 0), *back = malloc(sizeof(float) * (size_t)n);
    float *d = T->i->alloc(T, sizeof(float) * (size_t)n), *d2 = T->i->alloc(T, sizeof(float) * (size_t)n);
    CHECK(d && d2);
    T->i->write(T, d, h, sizeof(float) * (size_t)n);
    cmp_host("round trip", d, h, n, 0.0);
    T->i->write(T, d + 3, h2, sizeof(float) * 5); /* a sub-range at an offset */
    memcpy(h + 3, h2, sizeof(float) * 5);
    cmp_host("write at +3", d, h, n, 0.0);
    T->i->read(T, back, d + 3, sizeof(float) * 5);
    case_cmp("read at +3", nerr(back, h2, 5), 0.0);
    T->i->copy(T, d2, d, sizeof(float) * (size_t)n);
    cmp_host("copy", d2, h, n, 0.0);
    T->i->copy(T, d2 + 1, d + 7, sizeof(float) * 11);
    float *ref = malloc(sizeof(float) * (size_t)n);
    memcpy(ref, h, sizeof(float) * (size_t)n);
    memcpy(ref + 1, h + 7, sizeof(float) * 11);
    cmp_host("copy at offsets", d2, ref, n, 0.0);
    case_end();

    case_begin("fill", "n%lld, a sub-range", (long long)n);
    T->i->fill(T, d + 1, 0.37f, n - 2);
    for (int64_t i = 1; i < n - 1; i++) h[i] = 0.37f;
    cmp_host("x", d, h, n, 0.0);
    T->i->fill(T, d, 0.0f, 1);
    h[0] = 0.0f;
    cmp_host("x(n1)", d, h, n, 0.0);
    case_end();
    T->i->synchronize(T);
    case_begin("peak_bytes", "after two allocations of %lld floats", (long long)n);
    case_cmp("peak >= 2n floats", T->i->peak_bytes(T) >= 2 * sizeof(float) * (size_t)n ? 0.0 : 1.0, 0.0);
    case_end();
    T->i->free(T, d), T->i->free(T, d2);
    free(h), free(h2), free(back), free(ref);
}

static void test_randn(void) {
    if (!have("randn", T->i->randn != NULL, 1)) return;
    static const struct {
        uint64_t seed, step;
        uint32_t purpose;
        int64_t n;
    } cases[] = {{0, 0, MF_RNG_NOISE, 1}, {1234, 7, MF_RNG_NOISE, 1001}, {5, 123456789, MF_RNG_SAMPLE, 4096},
                 {~0ull, 3, MF_RNG_TIME, 100003}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int64_t n = cases[i].n;
        case_begin("randn", "seed %llu purpose %u step %llu n%lld (host mf_rng_normal)", (unsigned long long)cases[i].seed,
                   (unsigned)cases[i].purpose, (unsigned long long)cases[i].step, (long long)n);
        float *ref = malloc(sizeof(float) * (size_t)n), *got = malloc(sizeof(float) * (size_t)n);
        mf_rng_normal(cases[i].seed, cases[i].purpose, cases[i].step, ref, n);
        float *d = T->i->alloc(T, sizeof(float) * (size_t)n);
        T->i->randn(T, cases[i].seed, cases[i].purpose, cases[i].step, n, d);
        T->i->read(T, got, d, sizeof(float) * (size_t)n);
        int64_t exact = 0;
        for (int64_t j = 0; j < n; j++) exact += memcmp(&got[j], &ref[j], sizeof(float)) == 0;
        if (exact != n) printf("     randn: %lld of %lld values differ from the host's\n", (long long)(n - exact), (long long)n);
        case_cmp("out", nerr(got, ref, n), TOL_RNG);
        T->i->free(T, d);
        free(ref), free(got);
        case_end();
    }
}

/* Graphs (mf_backend.h): record write + axpby (recorded, not run; the write takes the host data as it is
 * at the call), launch twice (the second launch after the inputs were overwritten outside the graph:
 * the recorded write restores them), then record the same kernels with other scalars and data into
 * the previous graph (graph_end's prev: updated in place or replaced) and launch that. */
static void test_graph(void) {
    const mf_backend_i *k = T->i;
    if (!k->graph_begin || !k->graph_end || !k->graph_launch || !k->graph_free) {
        printf("skip %s %-18s the %s backend offers no graphs\n", g_pname, "graph", T->kind);
        return;
    }
    const int64_t n = 777;
    const size_t bytes = sizeof(float) * (size_t)n;
    case_begin("graph", "write + axpby recorded, launched, re-recorded into prev, n%lld", (long long)n);
    float *hs = k->host_alloc ? k->host_alloc(T, bytes) : malloc(bytes), *ref = malloc(bytes), *zero = calloc((size_t)n, sizeof(float));
    float *dx = k->alloc(T, bytes), *dy = k->alloc(T, bytes);
    CHECK(hs && dx && dy);
    for (int64_t i = 0; i < n; i++) hs[i] = (float)urand(), ref[i] = 2.0f * hs[i];
    void *g = NULL;
    if (k->graph_begin(T) == 0) {
        k->write(T, dx, hs, bytes);
        k->axpby(T, n, 2.0f, dx, 0.0f, dy);
        g = k->graph_end(T, NULL);
    }
    case_cmp("recorded", g ? 0.0 : 1.0, 0.0);
    if (!g) printf("     graph: recording failed: %s\n", mf_last_error());
    for (int64_t i = 0; i < n; i++) hs[i] = 99.0f; /* recorded at the call: later host changes do not count */
    for (int rep = 0; g && rep < 2; rep++) {
        case_cmp("launch", k->graph_launch(T, g) == 0 ? 0.0 : 1.0, 0.0);
        cmp_host(rep ? "y(launch 2)" : "y(launch 1)", dy, ref, n, 0.0);
        k->write(T, dx, zero, bytes);
        k->write(T, dy, zero, bytes);
    }
    if (g && k->graph_begin(T) == 0) {
        for (int64_t i = 0; i < n; i++) hs[i] = (float)urand(), ref[i] = -0.5f * hs[i];
        k->write(T, dx, hs, bytes);
        k->axpby(T, n, -0.5f, dx, 0.0f, dy);
        g = k->graph_end(T, g);
        case_cmp("re-recorded", g ? 0.0 : 1.0, 0.0);
        if (g) {
            case_cmp("launch 3", k->graph_launch(T, g) == 0 ? 0.0 : 1.0, 0.0);
            cmp_host("y(re-recorded)", dy, ref, n, 0.0);
        }
    }
    if (g) k->graph_free(T, g);
    k->free(T, dx), k->free(T, dy);
    if (k->host_alloc) k->host_free(T, hs);
    else free(hs);
    free(ref), free(zero);
    case_end();
}

static int have_graphs(void) {
    const mf_backend_i *k = T->i;
    return k->graph_begin && k->graph_end && k->graph_launch && k->graph_free;
}

/* A training-like step for test_graph_step, issued on one backend: the optimizer's per-step scalars and
 * the gradient written from stack buffers that are overwritten right after the write (a recording must
 * take the data at the call), an embedding gather from host indices (staged by the backend; the host
 * array is changed after the call too), randn, and the fused optimizer step (which uses the backend's
 * scratch). */
enum { GS_ROWS = 9, GS_DIM = 24, GS_NIDX = 17, GS_NR = 1001, GS_NP = 1031 };
typedef struct gs_bufs {
    float *tab, *y, *r, *p, *g, *m, *v, *st;
} gs_bufs;
static void gs_issue(mf_backend *be, const gs_bufs *b, const int32_t *idx_in, const float *grad, float lr, int step,
                     uint64_t seed) {
    float in[2] = {lr, (float)step}, gbuf[GS_NP];
    int32_t idx[GS_NIDX];
    memcpy(gbuf, grad, sizeof gbuf);
    memcpy(idx, idx_in, sizeof idx);
    be->i->write(be, b->st + MF_OPT_ST_LR, in, sizeof in);
    be->i->write(be, b->g, gbuf, sizeof gbuf);
    in[0] = in[1] = NAN;
    for (int i = 0; i < GS_NP; i++) gbuf[i] = NAN;
    be->i->embed(be, GS_NIDX, GS_DIM, idx, b->tab, b->y);
    for (int i = 0; i < GS_NIDX; i++) idx[i] = GS_ROWS - 1 - idx[i]; /* valid, but other rows */
    be->i->randn(be, seed, MF_RNG_NOISE, (uint64_t)step, GS_NR, b->r);
    be->i->adamw_step(be, GS_NP, b->p, b->g, b->m, b->v, b->st, 0.9f, 0.999f, 1e-8f, 0.01f, 1.0f);
}

/* Graphs with the kinds of work a training step records: gs_issue once eagerly on both backends (it
 * sizes the tested backend's scratch and staging, which must not grow while recording), then recorded
 * on the tested one (not run: p still at the eager step), launched twice (each launch replays the
 * recorded host data: the reference issues the same step twice), then recorded again with other host
 * data and scalars into the previous graph (graph_end's prev) and launched; after each launch every
 * output against the reference, which issues the step eagerly. The outputs the step overwrites are set
 * to NaN before each launch. */
static void test_graph_step(void) {
    const mf_backend_i *k = T->i;
    if (!have_graphs() || !HAS(embed) || !HAS(adamw_step) || !T->i->randn) return;
    case_begin("graph", "write (stack buffers) + embed (host idx) + randn + adamw_step: launched twice, re-recorded");
    ten tab = tplain_rand((int64_t)GS_ROWS * GS_DIM, 1, 0), y = tplain(NULL, (int64_t)GS_NIDX * GS_DIM), r = tplain(NULL, GS_NR);
    ten p = tplain_rand(GS_NP, 1, 0), g = tplain(NULL, GS_NP), m = tplain_rand(GS_NP, 0.01, 0), v = tplain_rand(GS_NP, 0.005, 0.005);
    float st0[MF_OPT_ST_N] = {0};
    st0[MF_OPT_ST_FIRST_SKIP] = -1.0f;
    ten st = tplain(st0, MF_OPT_ST_N);
    const gs_bufs bt = {tab.t, y.t, r.t, p.t, g.t, m.t, v.t, st.t}, br = {tab.r, y.r, r.r, p.r, g.r, m.r, v.r, st.r};
    int32_t idx[3][GS_NIDX];
    for (int i = 0; i < GS_NIDX; i++) idx[0][i] = (i * 5) % GS_ROWS, idx[1][i] = (i * 2 + 3) % GS_ROWS, idx[2][i] = (i * 7 + 1) % GS_ROWS;
    float *grad[3] = {hrand(GS_NP, 1e-3, 0), hrand(GS_NP, 1, 0), hrand(GS_NP, 0.5, 0.1)}; /* unclipped, clipped, clipped */
    static const float lrs[3] = {1e-3f, 2e-3f, 3e-3f};
    static const uint64_t seeds[3] = {11, 22, 33};

    gs_issue(T, &bt, idx[0], grad[0], lrs[0], 1, seeds[0]);
    gs_issue(R, &br, idx[0], grad[0], lrs[0], 1, seeds[0]);
    void *gr = NULL;
    if (k->graph_begin(T) == 0) {
        gs_issue(T, &bt, idx[1], grad[1], lrs[1], 2, seeds[1]);
        gr = k->graph_end(T, NULL);
    }
    case_cmp("recorded", gr ? 0.0 : 1.0, 0.0);
    if (!gr) printf("     graph: recording failed: %s\n", mf_last_error());
    cmp("p(recorded, not run)", &p, TOL_ELEM);
    /* launch 1 and 2: the first recording; launch 3: the second, recorded into the first's graph */
    for (int launch = 1; gr && launch <= 3; launch++) {
        const int d = launch < 3 ? 1 : 2;
        if (launch == 3) {
            void *g2 = NULL;
            if (k->graph_begin(T) == 0) {
                gs_issue(T, &bt, idx[d], grad[d], lrs[d], 3, seeds[d]);
                g2 = k->graph_end(T, gr); /* gr updated in place or freed */
            } else {
                k->graph_free(T, gr);
            }
            gr = g2;
            case_cmp("re-recorded", gr ? 0.0 : 1.0, 0.0);
            if (!gr) {
                printf("     graph: re-recording failed: %s\n", mf_last_error());
                break;
            }
        }
        k->fill(T, y.t, NAN, tlen(&y));
        k->fill(T, r.t, NAN, tlen(&r));
        k->fill(T, g.t, NAN, tlen(&g));
        char nm[48];
        snprintf(nm, sizeof nm, "launch %d", launch);
        case_cmp(nm, k->graph_launch(T, gr) == 0 ? 0.0 : 1.0, 0.0);
        gs_issue(R, &br, idx[d], grad[d], lrs[d], launch < 3 ? 2 : 3, seeds[d]);
        static const char *outs[] = {"y", "r", "g", "p", "m", "v"};
        const ten *ts[] = {&y, &r, &g, &p, &m, &v};
        const double tols[] = {0.0, TOL_RNG, 0.0, TOL_ELEM, TOL_ELEM, TOL_ELEM};
        for (int j = 0; j < 6; j++) {
            snprintf(nm, sizeof nm, "%s(launch %d)", outs[j], launch);
            cmp(nm, ts[j], tols[j]);
        }
        float a[MF_OPT_ST_N], b[MF_OPT_ST_N];
        k->read(T, a, st.t, sizeof a);
        R->i->read(R, b, st.r, sizeof b);
        snprintf(nm, sizeof nm, "st.t(launch %d)", launch);
        case_cmp(nm, nerr(a + MF_OPT_ST_T, b + MF_OPT_ST_T, 1), 0.0);
        snprintf(nm, sizeof nm, "st.gnorm(launch %d)", launch);
        case_cmp(nm, nerr(a + MF_OPT_ST_GNORM, b + MF_OPT_ST_GNORM, 1), TOL_RED_F);
        snprintf(nm, sizeof nm, "st.skipped(launch %d)", launch);
        case_cmp(nm, nerr(a + MF_OPT_ST_SKIPPED, b + MF_OPT_ST_SKIPPED, 1), 0.0);
        snprintf(nm, sizeof nm, "st.t == %d (launch %d)", launch + 1, launch);
        case_cmp(nm, b[MF_OPT_ST_T] == (float)(launch + 1) ? 0.0 : 1.0, 0.0);
    }
    if (gr) k->graph_free(T, gr);
    for (int i = 0; i < 3; i++) free(grad[i]);
    tfree(&tab), tfree(&y), tfree(&r), tfree(&p), tfree(&g), tfree(&m), tfree(&v), tfree(&st);
    case_end();
}

/* A host synchronisation inside a recording (sumsq returns its result to the host; read) cannot become
 * part of a graph: graph_end refuses the recording (NULL), which is not a backend failure (error() stays
 * NULL), and the backend works eagerly afterwards. */
static void test_graph_refusal(void) {
    const mf_backend_i *k = T->i;
    if (!have_graphs() || !HAS(axpby) || !HAS(sumsq)) return;
    const int64_t n = 1000;
    const size_t bytes = sizeof(float) * (size_t)n;
    static const char *what[] = {"sumsq", "read"};
    for (int w = 0; w < 2; w++) {
        case_begin("graph refusal", "%s inside a recording: graph_end NULL, error() NULL, eager work after", what[w]);
        float *h = hrand(n, 1, 0), *back = malloc(bytes), *ref = malloc(bytes);
        float *dx = put(T, h, 1, 1, (int)n, 0), *dy = k->alloc(T, bytes);
        CHECK(dy != NULL);
        if (k->graph_begin(T) == 0) {
            k->axpby(T, n, 2.0f, dx, 0.0f, dy);
            if (w == 0) (void)k->sumsq(T, n, dx);
            else k->read(T, back, dx, bytes);
            void *gr = k->graph_end(T, NULL);
            case_cmp("graph_end NULL", gr ? 1.0 : 0.0, 0.0);
            if (gr) k->graph_free(T, gr);
        } else {
            printf("     graph refusal: graph_begin failed: %s\n", mf_last_error());
            case_cmp("graph_begin", 1.0, 0.0);
        }
        const char *err = k->error ? k->error(T) : NULL;
        if (err) printf("     graph refusal: error(): %s\n", err);
        case_cmp("error() NULL", err ? 1.0 : 0.0, 0.0);
        for (int64_t i = 0; i < n; i++) ref[i] = -0.5f * h[i];
        k->axpby(T, n, -0.5f, dx, 0.0f, dy);
        cmp_host("y(eager after)", dy, ref, n, 0.0);
        double sref = 0.0;
        for (int64_t i = 0; i < n; i++) sref += (double)h[i] * (double)h[i];
        const double s = k->sumsq(T, n, dx);
        case_cmp("sumsq(eager after)", nerr_d(&s, &sref, 1), TOL_RED);
        k->free(T, dx), k->free(T, dy);
        free(h), free(back), free(ref);
        case_end();
    }
}

/* ---- determinism: the tested backend twice, bitwise ---------------------------------------------------- */

static void test_determinism(void) {
    if (T->i->conv2d_bwd_filter) {
        const cshape c = {4, 32, 16, 16, 32, 3, 1, 1};
        const mf_conv_shape s = conv_of(&c, pref_blk(T, 32), pref_blk(T, 32));
        const int64_t nw = 32 * 32 * 9, nx = 4 * 32 * 256;
        case_begin("determinism", "conv2d_bwd_filter n4 c32 16x16 k3, twice");
        float *hx = hrand(nx, 1, 0), *hdy = hrand(nx, 1, 0), *z = calloc((size_t)nw, sizeof(float));
        float *x = put(T, hx, 4, 32, 256, s.bx), *dy = put(T, hdy, 4, 32, 256, s.by);
        float *r[2][2];
        for (int rep = 0; rep < 2; rep++) {
            float *dw = put(T, z, 1, 1, (int)nw, 0), *db = put(T, z, 1, 1, 32, 0);
            T->i->conv2d_bwd_filter(T, &s, x, dy, dw, db);
            r[rep][0] = malloc(sizeof(float) * (size_t)nw), r[rep][1] = malloc(sizeof(float) * 32);
            T->i->read(T, r[rep][0], dw, sizeof(float) * (size_t)nw);
            T->i->read(T, r[rep][1], db, sizeof(float) * 32);
            T->i->free(T, dw), T->i->free(T, db);
        }
        cmp_bits("dw", r[0][0], r[1][0], sizeof(float) * (size_t)nw);
        cmp_bits("db", r[0][1], r[1][1], sizeof(float) * 32);
        for (int rep = 0; rep < 2; rep++) free(r[rep][0]), free(r[rep][1]);
        T->i->free(T, x), T->i->free(T, dy);
        free(hx), free(hdy), free(z);
        case_end();
    }
    if (T->i->groupnorm && T->i->groupnorm_bwd) {
        const int n = 4, c = 64, hw = 256, g = 8, blk = pref_blk(T, c);
        const int64_t nx = (int64_t)n * c * hw;
        case_begin("determinism", "groupnorm_bwd n4 c64 hw256 g8, twice");
        float *hx = hrand(nx, 1, 0.2), *hdy = hrand(nx, 1, 0), *hg = hrand(c, 0.5, 1), *z = calloc((size_t)c, sizeof(float));
        float *x = put(T, hx, n, c, hw, blk), *dy = put(T, hdy, n, c, hw, blk), *gm = put(T, hg, 1, 1, c, 0);
        float *y = T->i->alloc(T, sizeof(float) * (size_t)nx), *mean = T->i->alloc(T, sizeof(float) * n * g),
              *rstd = T->i->alloc(T, sizeof(float) * n * g);
        T->i->groupnorm(T, n, c, hw, g, 1e-5f, x, gm, gm, y, mean, rstd, blk);
        float *out[2][3];
        for (int rep = 0; rep < 2; rep++) {
            float *dx = T->i->alloc(T, sizeof(float) * (size_t)nx), *dg = put(T, z, 1, 1, c, 0), *db = put(T, z, 1, 1, c, 0);
            T->i->groupnorm_bwd(T, n, c, hw, g, x, gm, mean, rstd, dy, dx, dg, db, 0, blk);
            out[rep][0] = malloc(sizeof(float) * (size_t)nx);
            out[rep][1] = malloc(sizeof(float) * (size_t)c);
            out[rep][2] = malloc(sizeof(float) * (size_t)c);
            T->i->read(T, out[rep][0], dx, sizeof(float) * (size_t)nx);
            T->i->read(T, out[rep][1], dg, sizeof(float) * (size_t)c);
            T->i->read(T, out[rep][2], db, sizeof(float) * (size_t)c);
            T->i->free(T, dx), T->i->free(T, dg), T->i->free(T, db);
        }
        cmp_bits("dx", out[0][0], out[1][0], sizeof(float) * (size_t)nx);
        cmp_bits("dgamma", out[0][1], out[1][1], sizeof(float) * (size_t)c);
        cmp_bits("dbeta", out[0][2], out[1][2], sizeof(float) * (size_t)c);
        for (int rep = 0; rep < 2; rep++)
            for (int j = 0; j < 3; j++) free(out[rep][j]);
        T->i->free(T, x), T->i->free(T, dy), T->i->free(T, gm), T->i->free(T, y), T->i->free(T, mean), T->i->free(T, rstd);
        free(hx), free(hdy), free(hg), free(z);
        case_end();
    }
    if (T->i->embed_bwd) {
        const int n = 512, dim = 64, rows = 4;
        int32_t *idx = malloc(sizeof(int32_t) * n);
        for (int i = 0; i < n; i++) idx[i] = (int32_t)((i * 7 + i / 3) % rows); /* many rows per index */
        case_begin("determinism", "embed_bwd n512 dim64 into 4 rows, twice");
        float *hdy = hrand((int64_t)n * dim, 1, 0), *z = calloc((size_t)rows * dim, sizeof(float));
        float *dy = put(T, hdy, 1, 1, n * dim, 0), *out[2];
        for (int rep = 0; rep < 2; rep++) {
            float *dt = put(T, z, 1, 1, rows * dim, 0);
            T->i->embed_bwd(T, n, dim, idx, dy, dt);
            out[rep] = malloc(sizeof(float) * (size_t)rows * dim);
            T->i->read(T, out[rep], dt, sizeof(float) * (size_t)rows * dim);
            T->i->free(T, dt);
        }
        cmp_bits("dtable", out[0], out[1], sizeof(float) * (size_t)rows * dim);
        free(out[0]), free(out[1]), free(hdy), free(z), free(idx);
        T->i->free(T, dy);
        case_end();
    }
    if (T->i->sumsq) {
        const int64_t n = 1 << 20;
        case_begin("determinism", "sumsq n%lld, twice", (long long)n);
        float *h = hrand(n, 1, 0), *x = put(T, h, 1, 1, (int)n, 0);
        const double a = T->i->sumsq(T, n, x), b = T->i->sumsq(T, n, x);
        cmp_bits("sum", &a, &b, sizeof a);
        T->i->free(T, x);
        free(h);
        case_end();
    }
}

/* ---- main ------------------------------------------------------------------------------------------- */

static mf_backend *open_reference(void) {
    /* the plain NCHW path of the CPU backend, whatever the environment says (restored after) */
    const char *old = getenv("MFPIPE_CPU_LAYOUT");
    char *keep = old ? strdup(old) : NULL;
    setenv("MFPIPE_CPU_LAYOUT", "nchw", 1);
    mf_backend *r = mf_backend_open("cpu", &(mf_backend_opts){.threads = 1, .precision = MF_PREC_FP32});
    if (keep) setenv("MFPIPE_CPU_LAYOUT", keep, 1);
    else unsetenv("MFPIPE_CPU_LAYOUT");
    free(keep);
    return r;
}

static void run_all(void) {
    test_memory();
    test_gemm();
    test_conv();
    test_norm();
    test_silu();
    test_axpby_add2();
    test_unaligned();
    test_channel_ops();
    test_rows();
    test_per_row();
    test_copy_channels();
    test_upsample();
    test_embed();
    test_fourier();
    test_reductions();
    test_adamw_ema();
    test_randn();
    test_graph();
    test_graph_step();
    test_graph_refusal();
    test_determinism();
}

int main(int argc, char **argv) {
    const char *name = argc > 1 ? argv[1] : "cuda";
    if (argc > 2 || strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
        fprintf(stderr, "usage: test_backend_ops [cuda|cpu|BACKEND]\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    R = open_reference();
    if (!R) {
        fprintf(stderr, "test_backend_ops: the reference CPU backend does not open: %s\n", mf_last_error());
        return 1;
    }
    printf("reference: %s (layout NCHW, 1 thread)\n", R->i->version ? R->i->version(R) : R->kind);
    static const int precs[] = {MF_PREC_FP32, MF_PREC_TF32, MF_PREC_BF16};
    static const char *pnames[] = {"fp32", "tf32", "bf16"};
    int ran = 0;
    for (int ip = 0; ip < 3; ip++) {
        g_prec = precs[ip];
        g_pname = pnames[ip];
        T = mf_backend_open(name, &(mf_backend_opts){.threads = 2, .precision = g_prec, .device = 0});
        if (!T) {
            const char *why = mf_backend_probe(name);
            printf("no %s backend: %s\n", strcmp(name, "cuda") == 0 ? "CUDA" : name, why ? why : mf_last_error());
            if (ip == 0) {
                mf_backend_free(R);
                return 77;
            }
            CHECK_MSG(0, "%s opened at fp32 but not at %s: %s", name, g_pname, mf_last_error());
            continue;
        }
        if (T->precision != g_prec) {
            printf("skip %s: the %s backend runs %s when asked for it\n", g_pname, name,
                   T->precision >= 0 && T->precision <= 2 ? pnames[T->precision] : "?");
            CHECK_MSG(ip != 0, "asked for fp32, the backend runs precision %d", T->precision);
            mf_backend_free(T);
            continue;
        }
        printf("== %s: %s, %d threads, cblock %d, precision %s\n", name, T->i->version ? T->i->version(T) : T->kind,
               T->threads, T->cblock, g_pname);
        if (!T->i->version || !T->i->error || !T->i->destroy)
            have("version/error/destroy", T->i->version && T->i->error && T->i->destroy, 1);
        run_all();
        ran++;
        const char *err = T->i->error ? T->i->error(T) : NULL;
        printf("%s %s backend error() at the end: %s\n", err ? "FAIL" : "ok  ", g_pname, err ? err : "none");
        CHECK_MSG(err == NULL, "backend error: %s", err);
        mf_backend_free(T);
        T = NULL;
    }
    mf_backend_free(R);
    printf("test_backend_ops %s: %d precision(s) run, %d cases, %d failed, %d missing kernels\n", name, ran, g_cases,
           g_cases_bad, g_missing);
    return mf_test_summary("test_backend_ops");
}
