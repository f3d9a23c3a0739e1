/* test_bf16_conv.c - the CPU backend's bf16 convolutions (precision: bf16, docs/cpu-backend.md "bf16")
 * against its fp32 kernels, through the mf_backend_i table only: forward (with and without bias),
 * backward-data (overwriting and accumulating) and backward-filter (with and without the bias gradient),
 * stride 1 and 2, 3x3 and 1x1, the UNet's shapes with 1..128 channels, in the layouts the engine gives them
 * (NCHW -> nChw16c for the first convolution, nChw16c -> nChw16c, NCHW -> NCHW for channel counts that are
 * not multiples of 16, nChw16c -> NCHW). Each bf16 result is compared two ways:
 *   1. against the fp32 kernel on the same inputs: the bf16 rounding error, bounded by TOL_BF16, and
 *      larger than TOL_SAME (the bf16 kernel really ran: its result is not the fp32 one);
 *   2. against the fp32 kernel on the inputs rounded to bf16 on the host (round to nearest even): the
 *      products of two bf16 values are exact in fp32, so what remains is fp32 summation order, bounded
 *      by TOL_SAME: proves the operands and only the operands are rounded and accumulation is fp32.
 * The bias gradient is a reduction and stays float32: within TOL_SAME of fp32's.
 * Also: a forward convolution flagged fp32 (mf_conv_shape.fp32: the JVP tangent pass) is bit-identical
 * to fp32 unless MFPIPE_CPU_BF16_JVP=1; the bf16-activation entries (check_bf16_act): x stored in bf16
 * (xdt) gives bit for bit the result of converting it in the call, the fused conv2d_bwd equals the two
 * gradient calls, gn_silu_bf16 is gn_silu rounded once; the bf16 weight cache follows params_epoch; the few-channel output convolution (co < 16, direct kernel) is
 * bit-identical to fp32; results are bitwise deterministic; MFPIPE_CPU_NO_BF16=1 opens an fp32 backend.
 * Skips (prints why, exits 0) where the CPU has no AVX512-BF16 / AMX or the build no oneDNN. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mf_backend.h"
#include "mf_error.h"
#include "mf_test.h"

/* ---- tolerances (normalised error: max|got - ref| / max|ref|) ------------------------------------
 * bf16 keeps 8 significant bits: rounding to nearest even has unit roundoff u = 2^-8 ~ 3.9e-3. Each
 * product x*w of two rounded operands carries a relative error d_x + d_w, |d| <= u (rms u/sqrt(3) each),
 * and the product itself is exact in fp32, accumulated in fp32 (error ~1e-7 relative, negligible). Over
 * K = ci*k*k (forward), co*k*k (backward-data) or n*ho*wo (backward-filter) random-signed terms both the
 * output and its error grow as sqrt(K), so the error relative to the output is ~ u*sqrt(2/3) ~ 3.2e-3
 * rms whatever K; the worst of up to 10^6 outputs against the largest output stays near that ratio
 * (both are ~4.5 sigma of their Gaussians). TOL_BF16 = 2e-2 leaves a 4-6x margin; the bias (exact fp32)
 * only lowers the ratio. TOL_SAME: two fp32 summation orders (oneDNN against im2col + BLAS), as
 * test_backend_ops' TOL_FP32. */
#define TOL_BF16 2e-2
#define TOL_SAME 1e-5

static mf_backend *F, *B, *BJ; /* fp32; bf16; bf16 with bf16 tangents (MFPIPE_CPU_BF16_JVP=1) */
static double g_worst[3];      /* worst error against fp32, per direction */
static double g_worst_same[3]; /* worst error against fp32 on bf16-rounded inputs */
static const char *k_dir[3] = {"fwd", "bwd_data", "bwd_filter"};

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float urand(void) { /* LCG, uniform in [-1, 1) */
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(g_rng >> 11) * 0x1.0p-52 - 1.0);
}
static float *hrand(size_t n) {
    float *p = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) p[i] = urand();
    return p;
}
static float bf16r(float f) { /* round to the nearest bf16, ties to even (finite inputs) */
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}
static float *rounded(const float *h, size_t n) {
    float *r = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) r[i] = bf16r(h[i]);
    return r;
}

/* activations (n, c, hw) NCHW on the host <-> the backend in layout blk (16: nChw16c) */
static size_t bidx(int c, int hw, int blk, int i, int ch, int p) {
    if (blk != 16) return ((size_t)i * c + ch) * hw + p;
    return (((size_t)i * (c / 16) + ch / 16) * hw + p) * 16 + ch % 16;
}
static float *upa(mf_backend *be, const float *h, int n, int c, int hw, int blk) {
    const size_t len = (size_t)n * c * hw;
    float *t = malloc(sizeof(float) * len), *d = be->i->alloc(be, sizeof(float) * len);
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++)
            for (int p = 0; p < hw; p++) t[bidx(c, hw, blk, i, ch, p)] = h[((size_t)i * c + ch) * hw + p];
    be->i->write(be, d, t, sizeof(float) * len);
    free(t);
    return d;
}
static float *downa(mf_backend *be, const float *d, int n, int c, int hw, int blk) {
    const size_t len = (size_t)n * c * hw;
    float *t = malloc(sizeof(float) * len), *h = malloc(sizeof(float) * len);
    be->i->read(be, t, d, sizeof(float) * len);
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++)
            for (int p = 0; p < hw; p++) h[((size_t)i * c + ch) * hw + p] = t[bidx(c, hw, blk, i, ch, p)];
    free(t);
    return h;
}
static float *up(mf_backend *be, const float *h, size_t n) {
    float *d = be->i->alloc(be, sizeof(float) * n);
    be->i->write(be, d, h, sizeof(float) * n);
    return d;
}
static float *down(mf_backend *be, const float *d, size_t n) {
    float *h = malloc(sizeof(float) * n);
    be->i->read(be, h, d, sizeof(float) * n);
    return h;
}

static double nerr(const float *got, const float *ref, size_t n) {
    double m = 0, e = 0;
    for (size_t i = 0; i < n; i++) {
        const double r = fabs((double)ref[i]), d = fabs((double)got[i] - (double)ref[i]);
        if (r > m) m = r;
        if (!(d <= e)) e = d; /* NaN propagates */
    }
    return e / (m > 1e-30 ? m : 1e-30);
}

typedef struct conv_case {
    int n, ci, h, co, k, stride, bx, by;
    int may_fp32; /* oneDNN 2.6 has only reference bf16 code for some direction of this layout mix (few
                   * input channels to blocked: bwd_data; blocked to NCHW: all): fp32 is allowed there */
} conv_case;

static mf_conv_shape shape_of(const conv_case *c) {
    mf_conv_shape s = {c->n, c->ci, c->h, c->h, c->co, c->k, c->stride, c->k / 2, 0, 0, c->bx, c->by, 0, 0};
    s.ho = (s.h + 2 * s.pad - s.k) / s.stride + 1;
    s.wo = (s.w + 2 * s.pad - s.k) / s.stride + 1;
    return s;
}

/* The inputs of one case on the host (x, w, bias, dy, and the accumulators' start values). */
typedef struct host_in {
    float *x, *w, *b, *dy, *dx0, *dw0, *db0;
    size_t nx, nw, ny;
} host_in;

/* One direction on backend be with inputs h (x/w/dy possibly rounded): the output on the host, NCHW. */
enum { V_FWD, V_FWD_NOBIAS, V_BWD_DATA, V_BWD_DATA_ACC, V_BWD_FILTER, V_BWD_FILTER_NOBIAS };
static float *run_dir(mf_backend *be, const mf_conv_shape *s, const host_in *h, int v, float **dbias_out) {
    const int hwx = s->h * s->w, hwy = s->ho * s->wo;
    float *out = NULL;
    if (v == V_FWD || v == V_FWD_NOBIAS) {
        float *x = upa(be, h->x, s->n, s->ci, hwx, s->bx), *w = up(be, h->w, h->nw);
        float *b = v == V_FWD ? up(be, h->b, (size_t)s->co) : NULL;
        float *y = be->i->alloc(be, sizeof(float) * h->ny);
        be->i->fill(be, y, NAN, (int64_t)h->ny);
        mf_conv_shape st = *s;
        st.fp32 = v == V_FWD_NOBIAS; /* the JVP's tangent pass: bias-free, flagged float32 */
        be->i->conv2d(be, &st, x, w, b, y);
        out = downa(be, y, s->n, s->co, hwy, s->by);
        be->i->free(be, x), be->i->free(be, w), be->i->free(be, b), be->i->free(be, y);
    } else if (v == V_BWD_DATA || v == V_BWD_DATA_ACC) {
        const int acc = v == V_BWD_DATA_ACC;
        float *dy = upa(be, h->dy, s->n, s->co, hwy, s->by), *w = up(be, h->w, h->nw);
        float *dx = upa(be, h->dx0, s->n, s->ci, hwx, s->bx);
        if (!acc) be->i->fill(be, dx, NAN, (int64_t)h->nx);
        be->i->conv2d_bwd_data(be, s, dy, w, dx, acc);
        out = downa(be, dx, s->n, s->ci, hwx, s->bx);
        be->i->free(be, dy), be->i->free(be, w), be->i->free(be, dx);
    } else {
        float *x = upa(be, h->x, s->n, s->ci, hwx, s->bx), *dy = upa(be, h->dy, s->n, s->co, hwy, s->by);
        float *dw = up(be, h->dw0, h->nw), *db = v == V_BWD_FILTER ? up(be, h->db0, (size_t)s->co) : NULL;
        be->i->conv2d_bwd_filter(be, s, x, dy, dw, db);
        out = down(be, dw, h->nw);
        if (dbias_out) *dbias_out = db ? down(be, db, (size_t)s->co) : NULL;
        be->i->free(be, x), be->i->free(be, dy), be->i->free(be, dw), be->i->free(be, db);
    }
    return out;
}

static size_t out_len(const host_in *h, int v) {
    return v <= V_FWD_NOBIAS ? h->ny : v <= V_BWD_DATA_ACC ? h->nx : h->nw;
}

static const char *k_var[6] = {"fwd bias", "fwd tangent (bf16 jvp)", "bwd_data", "bwd_data acc",
                               "bwd_filter dbias", "bwd_filter"};

/* bf16 backend be against fp32 (same inputs) and fp32 on bf16-rounded inputs. */
static void check_fp32(mf_backend *be, const char *why, const char *label, const mf_conv_shape *s,
                       const host_in *h, int v);

static void check_bf16(mf_backend *be, const char *label, const mf_conv_shape *s, const host_in *h,
                       const host_in *hr, int v, int may_fp32) {
    const int dir = v <= V_FWD_NOBIAS ? 0 : v <= V_BWD_DATA_ACC ? 1 : 2;
    float *gb = NULL, *fb = NULL, *rb = NULL, *gb2 = NULL;
    float *got = run_dir(be, s, h, v, &gb), *f32 = run_dir(F, s, h, v, &fb), *r32 = run_dir(F, s, hr, v, &rb);
    const size_t n = out_len(h, v);
    const double e = nerr(got, f32, n), es = nerr(got, r32, n);
    if (may_fp32 && memcmp(got, f32, sizeof(float) * n) == 0) {
        free(got), free(f32), free(r32), free(gb), free(fb), free(rb);
        check_fp32(be, "no fast bf16 kernel: fp32", label, s, h, v);
        return;
    }
    double eb = 0;
    if (gb) { /* the bias gradient: a reduction of the float32 dy, float32 as at fp32 */
        eb = nerr(gb, fb, (size_t)s->co);
    }
    /* bitwise determinism: the same call again */
    float *again = run_dir(be, s, h, v, &gb2);
    const int det = memcmp(again, got, sizeof(float) * n) == 0 && (!gb || memcmp(gb2, gb, sizeof(float) * s->co) == 0);
    const int ok = e <= TOL_BF16 && e > TOL_SAME && es <= TOL_SAME && eb <= TOL_SAME && det;
    printf("%s %-28s %-30s vs fp32 %.2e (tol %.0e), vs fp32 on bf16 inputs %.2e (tol %.0e)%s%s\n",
           ok ? "ok  " : "FAIL", k_var[v], label, e, TOL_BF16, es, TOL_SAME, gb ? "; dbias (fp32) ok" : "",
           det ? "" : "; NOT deterministic");
    CHECK_MSG(e <= TOL_BF16, "%s %s: error against fp32 %.3g > %.3g", k_var[v], label, e, TOL_BF16);
    CHECK_MSG(e > TOL_SAME, "%s %s: equals fp32 (%.3g): the bf16 kernel did not run", k_var[v], label, e);
    CHECK_MSG(es <= TOL_SAME, "%s %s: against fp32 on rounded inputs %.3g > %.3g", k_var[v], label, es, TOL_SAME);
    CHECK_MSG(eb <= TOL_SAME, "%s %s: dbias (fp32) against fp32: %.3g > %.3g", k_var[v], label, eb, TOL_SAME);
    CHECK_MSG(det, "%s %s: two runs differ", k_var[v], label);
    if (e > g_worst[dir]) g_worst[dir] = e;
    if (es > g_worst_same[dir]) g_worst_same[dir] = es;
    free(got), free(f32), free(r32), free(again), free(gb), free(fb), free(rb), free(gb2);
}

/* be's result is bit-identical to fp32 (paths that stay fp32 in bf16 mode) */
static void check_fp32(mf_backend *be, const char *why, const char *label, const mf_conv_shape *s,
                       const host_in *h, int v) {
    float *gb = NULL, *fb = NULL;
    float *got = run_dir(be, s, h, v, &gb), *f32 = run_dir(F, s, h, v, &fb);
    const size_t n = out_len(h, v);
    const int same = memcmp(got, f32, sizeof(float) * n) == 0 && (!gb || memcmp(gb, fb, sizeof(float) * s->co) == 0);
    printf("%s %-28s %-30s %s: bit-identical to fp32\n", same ? "ok  " : "FAIL", k_var[v], label, why);
    CHECK_MSG(same, "%s %s: %s, but differs from fp32 (%.3g)", k_var[v], label, why, nerr(got, f32, n));
    free(got), free(f32), free(gb), free(fb);
}

/* random inputs of shape s (x, w, bias, dy and the accumulators' start values) */
static host_in host_in_new(const mf_conv_shape *s) {
    host_in h = {0};
    h.nx = (size_t)s->n * s->ci * s->h * s->w;
    h.ny = (size_t)s->n * s->co * s->ho * s->wo;
    h.nw = (size_t)s->co * s->ci * s->k * s->k;
    h.x = hrand(h.nx), h.w = hrand(h.nw), h.b = hrand((size_t)s->co), h.dy = hrand(h.ny);
    h.dx0 = hrand(h.nx), h.dw0 = hrand(h.nw), h.db0 = hrand((size_t)s->co);
    return h;
}

static void host_in_free(host_in *h) { free(h->x), free(h->w), free(h->b), free(h->dy), free(h->dx0), free(h->dw0), free(h->db0); }

static void run_case(const conv_case *c) {
    const mf_conv_shape s = shape_of(c);
    host_in h = host_in_new(&s);
    host_in hr = h; /* x, w, dy rounded to bf16; bias and the accumulators' start values stay fp32 */
    hr.x = rounded(h.x, h.nx), hr.w = rounded(h.w, h.nw), hr.dy = rounded(h.dy, h.ny);
    char label[96];
    snprintf(label, sizeof label, "n%d %d->%d %dx%d k%d s%d %s->%s", s.n, s.ci, s.co, s.h, s.w, s.k, s.stride,
             s.bx == 16 ? "b16" : "nchw", s.by == 16 ? "b16" : "nchw");
    const int few = s.bx == 16 && s.by != 16 && s.co < 16 && s.stride == 1; /* direct kernel, stays fp32 */
    for (int v = V_FWD; v <= V_BWD_FILTER_NOBIAS; v++) {
        if (few) check_fp32(B, "few-channel output conv", label, &s, &h, v);
        else if (v == V_FWD_NOBIAS) {
            check_fp32(B, "tangent pass", label, &s, &h, v);
            check_bf16(BJ, label, &s, &h, &hr, v, c->may_fp32);
        } else check_bf16(B, label, &s, &h, &hr, v, c->may_fp32);
    }
    free(hr.x), free(hr.w), free(hr.dy);
    host_in_free(&h);
}

static mf_backend *open_cpu(int prec);

/* bf16 bits of a host array (round to nearest even, finite values) */
static uint16_t *bits16(const float *h, size_t n) {
    uint16_t *r = malloc(sizeof(uint16_t) * n);
    for (size_t i = 0; i < n; i++) {
        const float f = bf16r(h[i]);
        uint32_t u;
        memcpy(&u, &f, 4);
        r[i] = (uint16_t)(u >> 16);
    }
    return r;
}
static int same_f(const float *a, const float *b, size_t n) { return memcmp(a, b, sizeof(float) * n) == 0; }

/* The bf16-activation entries on a case whose three kernels are bf16 (conv_bf16_x): x given in bf16
 * (xdt) = x converted by the call, bit for bit; conv2d_bwd = bwd_filter then bwd_data, bit for bit. */
static void check_bf16_act(const conv_case *c) {
    mf_conv_shape s = shape_of(c);
    mf_conv_shape s16 = s;
    s16.xdt = MF_DT_BF16;
    char label[96];
    snprintf(label, sizeof label, "n%d %d->%d %dx%d k%d s%d", s.n, s.ci, s.co, s.h, s.w, s.k, s.stride);
    const int ok_x = B->bf16_act && B->i->conv_bf16_x(B, &s16);
    printf("%s conv_bf16_x %-30s: %d\n", ok_x ? "ok  " : "FAIL", label, ok_x);
    CHECK_MSG(ok_x, "%s: a blocked shape with bf16 kernels should accept a bf16 x", label);
    if (!ok_x) return;
    const size_t nx = (size_t)s.n * s.ci * s.h * s.w, ny = (size_t)s.n * s.co * s.ho * s.wo;
    const size_t nw = (size_t)s.co * s.ci * s.k * s.k;
    float *hx = hrand(nx), *hw = hrand(nw), *hb = hrand((size_t)s.co), *hdy = hrand(ny);
    float *hx_l = malloc(sizeof(float) * nx); /* x in the backend layout (bx = 16) */
    for (int i = 0; i < s.n; i++)
        for (int ch = 0; ch < s.ci; ch++)
            for (int p = 0; p < s.h * s.w; p++) hx_l[bidx(s.ci, s.h * s.w, 16, i, ch, p)] = hx[((size_t)i * s.ci + ch) * s.h * s.w + p];
    uint16_t *hx16 = bits16(hx_l, nx);
    float *x = up(B, hx_l, nx), *w = up(B, hw, nw), *b = up(B, hb, (size_t)s.co);
    float *dy = upa(B, hdy, s.n, s.co, s.ho * s.wo, s.by);
    float *x16 = B->i->alloc(B, sizeof(uint16_t) * nx);
    B->i->write(B, x16, hx16, sizeof(uint16_t) * nx);
    float *y = B->i->alloc(B, sizeof(float) * ny), *y2 = B->i->alloc(B, sizeof(float) * ny);
    B->i->conv2d(B, &s, x, w, b, y);
    B->i->conv2d(B, &s16, x16, w, b, y2);
    float *a = down(B, y, ny), *a2 = down(B, y2, ny);
    const int fwd_same = same_f(a, a2, ny);
    /* gradients: separate calls on the float32 x, the fused call on the bf16 x */
    float *dw = up(B, hw, nw), *db = up(B, hb, (size_t)s.co), *dx = upa(B, hx, s.n, s.ci, s.h * s.w, s.bx);
    float *dw2 = up(B, hw, nw), *db2 = up(B, hb, (size_t)s.co), *dx2 = upa(B, hx, s.n, s.ci, s.h * s.w, s.bx);
    B->i->conv2d_bwd_filter(B, &s, x, dy, dw, db);
    B->i->conv2d_bwd_data(B, &s, dy, w, dx, 1);
    B->i->conv2d_bwd(B, &s16, x16, dy, w, dw2, db2, dx2, 1);
    float *g1 = down(B, dw, nw), *g2 = down(B, dw2, nw), *b1 = down(B, db, (size_t)s.co), *b2 = down(B, db2, (size_t)s.co);
    float *d1 = down(B, dx, nx), *d2 = down(B, dx2, nx);
    const int bwd_same = same_f(g1, g2, nw) && same_f(b1, b2, (size_t)s.co) && same_f(d1, d2, nx);
    printf("%s bf16 x (xdt) %-30s: forward %s, fused conv2d_bwd %s\n", fwd_same && bwd_same ? "ok  " : "FAIL", label,
           fwd_same ? "bit-identical" : "DIFFERS", bwd_same ? "bit-identical" : "DIFFERS");
    CHECK_MSG(fwd_same, "%s: conv2d on a bf16 x differs from conv2d converting it (%.3g)", label, nerr(a2, a, ny));
    CHECK_MSG(bwd_same, "%s: conv2d_bwd on a bf16 x differs from the two gradient calls", label);
    free(hx), free(hw), free(hb), free(hdy), free(hx_l), free(hx16), free(a), free(a2);
    free(g1), free(g2), free(b1), free(b2), free(d1), free(d2);
    float *bufs[] = {x, w, b, dy, x16, y, y2, dw, db, dx, dw2, db2, dx2};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) B->i->free(B, bufs[i]);
}

/* gn_silu_bf16 writes exactly the bf16 rounding of gn_silu's output (blocked layout) */
static void check_gn_silu_bf16(void) {
    const int n = 3, c = 32, hw = 49, g = 8;
    const size_t len = (size_t)n * c * hw;
    float *hx = hrand(len), *hg = hrand((size_t)c), *hb = hrand((size_t)c);
    for (size_t i = 0; i < len; i++) hx[i] = 3.0f * hx[i] + 0.5f;
    float *x = up(B, hx, len), *gm = up(B, hg, (size_t)c), *bt = up(B, hb, (size_t)c);
    float *y = B->i->alloc(B, sizeof(float) * len), *y16 = B->i->alloc(B, sizeof(uint16_t) * len);
    float *m1 = B->i->alloc(B, sizeof(float) * n * g), *r1 = B->i->alloc(B, sizeof(float) * n * g);
    float *m2 = B->i->alloc(B, sizeof(float) * n * g), *r2 = B->i->alloc(B, sizeof(float) * n * g);
    B->i->gn_silu(B, n, c, hw, g, 1e-5f, x, gm, bt, y, m1, r1, 16);
    B->i->gn_silu_bf16(B, n, c, hw, g, 1e-5f, x, gm, bt, y16, m2, r2, 16);
    float *hy = down(B, y, len), *hm1 = down(B, m1, (size_t)n * g), *hm2 = down(B, m2, (size_t)n * g);
    float *hr1 = down(B, r1, (size_t)n * g), *hr2 = down(B, r2, (size_t)n * g);
    uint16_t *got = malloc(sizeof(uint16_t) * len), *want = bits16(hy, len);
    B->i->read(B, got, y16, sizeof(uint16_t) * len);
    const int ok = memcmp(got, want, sizeof(uint16_t) * len) == 0 && same_f(hm1, hm2, (size_t)n * g) &&
                   same_f(hr1, hr2, (size_t)n * g);
    printf("%s gn_silu_bf16 = bf16(gn_silu) bit for bit, same mean/rstd\n", ok ? "ok  " : "FAIL");
    CHECK(ok);
    free(hx), free(hg), free(hb), free(hy), free(hm1), free(hm2), free(hr1), free(hr2), free(got), free(want);
    float *bufs[] = {x, gm, bt, y, y16, m1, r1, m2, r2};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) B->i->free(B, bufs[i]);
}

/* The bf16 weights cache: after params_epoch a changed weight is seen; with no new epoch the cached
 * conversion is used (the contract: nothing writes the parameters between two epochs). */
static void check_weight_cache(void) {
    const conv_case c = {2, 16, 8, 16, 3, 1, 16, 16, 0};
    const mf_conv_shape s = shape_of(&c);
    const size_t nx = (size_t)s.n * s.ci * s.h * s.w, ny = (size_t)s.n * s.co * s.ho * s.wo;
    const size_t nw = (size_t)s.co * s.ci * s.k * s.k;
    mf_backend *E = open_cpu(MF_PREC_BF16); /* its own backend: epochs from here on */
    float *hx = hrand(nx), *hw1 = hrand(nw), *hw2 = hrand(nw);
    float *x = upa(E, hx, s.n, s.ci, s.h * s.w, 16), *w = up(E, hw1, nw), *y = E->i->alloc(E, sizeof(float) * ny);
    /* references from the uncached backend B */
    float *xb = upa(B, hx, s.n, s.ci, s.h * s.w, 16), *wb1 = up(B, hw1, nw), *wb2 = up(B, hw2, nw);
    float *yb = B->i->alloc(B, sizeof(float) * ny);
    B->i->conv2d(B, &s, xb, wb1, NULL, yb);
    float *ref1 = down(B, yb, ny);
    B->i->conv2d(B, &s, xb, wb2, NULL, yb);
    float *ref2 = down(B, yb, ny);
    E->i->params_epoch(E);
    E->i->conv2d(E, &s, x, w, NULL, y);
    float *a1 = down(E, y, ny);
    E->i->write(E, w, hw2, sizeof(float) * nw); /* without a new epoch: the cached w1 is used */
    E->i->conv2d(E, &s, x, w, NULL, y);
    float *a_stale = down(E, y, ny);
    E->i->params_epoch(E);
    E->i->conv2d(E, &s, x, w, NULL, y);
    float *a2 = down(E, y, ny);
    const int ok = same_f(a1, ref1, ny) && same_f(a_stale, ref1, ny) && same_f(a2, ref2, ny) && !same_f(ref1, ref2, ny);
    printf("%s bf16 weights cache: converted once per params_epoch (same w within an epoch, new w after one)\n",
           ok ? "ok  " : "FAIL");
    CHECK(ok);
    free(hx), free(hw1), free(hw2), free(ref1), free(ref2), free(a1), free(a_stale), free(a2);
    E->i->free(E, x), E->i->free(E, w), E->i->free(E, y);
    B->i->free(B, xb), B->i->free(B, wb1), B->i->free(B, wb2), B->i->free(B, yb);
    mf_backend_free(E);
}

/* A NaN in x and an Inf in dy reach the outputs (the training loop's non-finite gradient skip relies on it). */
static void check_nonfinite(void) {
    const conv_case c = {2, 16, 8, 16, 3, 1, 16, 16, 0};
    const mf_conv_shape s = shape_of(&c);
    host_in h = host_in_new(&s);
    h.x[5] = NAN;
    h.dy[7] = INFINITY;
    float *db = NULL;
    float *y = run_dir(B, &s, &h, V_FWD, NULL), *dx = run_dir(B, &s, &h, V_BWD_DATA, NULL);
    float *dw = run_dir(B, &s, &h, V_BWD_FILTER, &db);
    int ny = 0, ndx = 0, ndw = 0, ndb = 0;
    for (size_t i = 0; i < h.ny; i++) ny += isnan(y[i]) != 0;
    for (size_t i = 0; i < h.nx; i++) ndx += !isfinite(dx[i]);
    for (size_t i = 0; i < h.nw; i++) ndw += !isfinite(dw[i]);
    for (int i = 0; i < s.co; i++) ndb += !isfinite(db[i]);
    const int ok = ny > 0 && ndx > 0 && ndw > 0 && ndb > 0;
    printf("%s non-finite inputs propagate: NaN in x -> %d NaN outputs, Inf in dy -> %d dx, %d dw, %d dbias\n",
           ok ? "ok  " : "FAIL", ny, ndx, ndw, ndb);
    CHECK(ok);
    free(y), free(dx), free(dw), free(db);
    host_in_free(&h);
}

static mf_backend *open_cpu(int prec) {
    mf_backend *be = mf_backend_open("cpu", &(mf_backend_opts){.threads = 2, .precision = prec});
    if (!be) {
        fprintf(stderr, "test_bf16_conv: the cpu backend does not open: %s\n", mf_last_error());
        exit(1);
    }
    return be;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    F = open_cpu(MF_PREC_FP32);
    B = open_cpu(MF_PREC_BF16);
    if (B->precision != MF_PREC_BF16) {
        printf("skip: the cpu backend runs %s when asked for bf16 (%s)\n", mf_precision_name(B->precision),
               B->i->version(B));
        mf_backend_free(B);
        mf_backend_free(F);
        return 0;
    }
    printf("%s\n", B->i->version(B));
    setenv("MFPIPE_CPU_BF16_JVP", "1", 1);
    BJ = open_cpu(MF_PREC_BF16);
    unsetenv("MFPIPE_CPU_BF16_JVP");
    CHECK(BJ->precision == MF_PREC_BF16);

    /* the forced fallback */
    setenv("MFPIPE_CPU_NO_BF16", "1", 1);
    mf_backend *nb = open_cpu(MF_PREC_BF16);
    unsetenv("MFPIPE_CPU_NO_BF16");
    printf("%s MFPIPE_CPU_NO_BF16=1: precision %s\n", nb->precision == MF_PREC_FP32 ? "ok  " : "FAIL",
           mf_precision_name(nb->precision));
    CHECK(nb->precision == MF_PREC_FP32);
    CHECK(strstr(nb->i->version(nb), "bf16") == NULL);
    mf_backend_free(nb);

    /* the MNIST UNets' convolutions (channels 16..128, 28x28 / 14x14 / 7x7) and the other layouts */
    static const conv_case cases[] = {
        {8, 1, 28, 16, 3, 1, 0, 16, 1},    /* conv_in: NCHW -> blocked (bwd_data: reference code in bf16) */
        {4, 3, 16, 32, 3, 1, 0, 16, 1},    /* RGB conv_in */
        {4, 16, 28, 16, 3, 1, 16, 16, 0},  /* res block, quick model */
        {4, 16, 28, 16, 3, 2, 16, 16, 0},  /* downsample, stride 2 */
        {4, 16, 14, 32, 3, 1, 16, 16, 0},  /* channel change */
        {4, 16, 14, 32, 1, 1, 16, 16, 0},  /* 1x1 skip */
        {4, 48, 28, 16, 3, 1, 16, 16, 0},  /* after a concat */
        {4, 48, 28, 16, 1, 1, 16, 16, 0},  /* its skip */
        {2, 64, 28, 64, 3, 1, 16, 16, 0},  /* c64 */
        {2, 64, 28, 64, 3, 2, 16, 16, 0},  /* c64 downsample */
        {4, 128, 7, 128, 3, 1, 16, 16, 0}, /* deepest level */
        {4, 128, 7, 64, 1, 1, 16, 16, 0},  /* 1x1, 128 -> 64 */
        {4, 24, 14, 24, 3, 1, 0, 0, 0},    /* NCHW -> NCHW (channels not a multiple of 16) */
        {4, 8, 14, 24, 1, 1, 0, 0, 0},     /* NCHW 1x1 */
        {4, 32, 14, 24, 3, 1, 16, 0, 1},   /* blocked -> NCHW, 24 output channels (reference code in bf16) */
        {4, 16, 28, 1, 3, 1, 16, 0, 0},    /* conv_out: direct few-channel kernel, stays fp32 */
        {32, 32, 14, 32, 3, 1, 16, 16, 0}, /* a larger batch: bwd_filter sums 6272 pixels */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i]);
    check_nonfinite();
    static const conv_case act_cases[] = {
        {4, 16, 28, 16, 3, 1, 16, 16, 0}, {4, 16, 28, 16, 3, 2, 16, 16, 0}, {4, 48, 28, 16, 1, 1, 16, 16, 0},
        {2, 64, 28, 64, 3, 1, 16, 16, 0}, {4, 128, 7, 128, 3, 1, 16, 16, 0},
    };
    for (size_t i = 0; i < sizeof act_cases / sizeof act_cases[0]; i++) check_bf16_act(&act_cases[i]);
    { /* a shape whose kernels are not all bf16 does not take a bf16 x: conv_out (direct fp32 kernel) */
        const conv_case co = {4, 16, 28, 1, 3, 1, 16, 0, 0};
        mf_conv_shape s = shape_of(&co);
        s.xdt = MF_DT_BF16;
        CHECK(B->i->conv_bf16_x(B, &s) == 0);
        CHECK(F->bf16_act == 0 && F->i->conv_bf16_x(F, &s) == 0);
    }
    check_gn_silu_bf16();
    check_weight_cache();
    for (int d = 0; d < 3; d++)
        printf("worst %-10s: %.2e against fp32 (tol %.0e), %.2e against fp32 on bf16-rounded inputs (tol %.0e)\n",
               k_dir[d], g_worst[d], TOL_BF16, g_worst_same[d], TOL_SAME);
    mf_backend_free(BJ);
    mf_backend_free(B);
    mf_backend_free(F);
    return mf_test_summary("test_bf16_conv");
}
