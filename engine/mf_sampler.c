/* mf_sampler.c - the samplers of mf_sampler.h: fixed-step Euler / Heun / RK4 on uniform or power time
 * grids, adaptive Dormand-Prince 5(4), MeanFlow's k-step average-velocity sampler, and the by-name
 * registry that also loads sampler plugins (sampler_<name>.so) from the plugin folders. */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mf_error.h"
#include "mf_json.h"
#include "mf_module.h"
#include "mf_runner.h"
#include "mf_sampler.h"

/* ---- shared helpers ------------------------------------------------------------------------- */

#define SCRATCH_MAX 10

/* Per-call scratch: `count` backend buffers of f->n floats, freed together. */
typedef struct scratch {
    mf_backend *be;
    float *b[SCRATCH_MAX];
    int count;
} scratch;

static int scratch_alloc(scratch *s, const mf_field *f, int count, const char *who) {
    MF_ASSERT(count <= SCRATCH_MAX);
    memset(s, 0, sizeof *s);
    s->be = f->be;
    for (int i = 0; i < count; i++) {
        s->b[i] = f->be->i->alloc(f->be, sizeof(float) * (size_t)f->n);
        if (!s->b[i]) {
            for (int j = 0; j < i; j++) f->be->i->free(f->be, s->b[j]);
            memset(s->b, 0, sizeof s->b);
            return mf_fail("sampler %s: out of %s memory for %d scratch buffers of %lld floats", who,
                           f->be->i->name, count, (long long)f->n);
        }
        s->count = i + 1;
    }
    return 0;
}

static void scratch_free(scratch *s) {
    for (int i = 0; i < s->count; i++) s->be->i->free(s->be, s->b[i]);
    s->count = 0;
}

static void check_field(const mf_field *f, const float *z) {
    MF_ASSERT(f && f->be && f->be->i && f->eval && f->n >= 1 && z);
}

/* One network evaluation: out = v(z, t) for instantaneous solvers. An average-velocity model is
 * called with r = t, since u(z, t, t) = v(z, t). */
static int eval_v(const mf_field *f, const float *z, double t, float *out, mf_sampler_stats *st,
                  const char *who) {
    st->nfe++;
    if (f->eval(f->ctx, z, (float)t, (float)t, out) != 0)
        return mf_error_prefix("sampler %s, model at t = %.6g", who, t);
    return 0;
}

static int report_step(const mf_sampler_opts *o, const float *z, double t) {
    if (o->on_step && o->on_step(o->user, z, t) != 0) return -1;
    return 0;
}

/* Validate steps / grid / power for the fixed-grid samplers (user errors). */
static int check_grid_opts(const mf_sampler_opts *o, const char *who) {
    if (o->steps < 1) return mf_fail("sampler %s: steps must be >= 1 (got %d)", who, o->steps);
    if (o->grid && strcmp(o->grid, "uniform") != 0 && strcmp(o->grid, "power") != 0)
        return mf_fail("sampler %s: unknown time grid '%s' (use uniform or power)", who, o->grid);
    if (o->grid && strcmp(o->grid, "power") == 0 && !(o->power > 0))
        return mf_fail("sampler %s: the power grid needs power > 0 (got %g)", who, o->power);
    return 0;
}

void mf_sampler_grid(const mf_sampler_opts *o, double *t) {
    MF_ASSERT(o && t && o->steps >= 1);
    const int power = o->grid && strcmp(o->grid, "power") == 0;
    MF_ASSERT(!power || o->power > 0);
    for (int i = 0; i <= o->steps; i++) {
        const double u = 1.0 - (double)i / o->steps;
        t[i] = power ? pow(u, o->power) : u;
    }
    t[0] = 1.0; /* exact endpoints */
    t[o->steps] = 0.0;
}

/* Host copy of the grid (steps + 1 values), or NULL after mf_fail. */
static double *make_grid(const mf_sampler_opts *o, const char *who) {
    if (check_grid_opts(o, who) != 0) return NULL;
    double *t = malloc(sizeof(double) * ((size_t)o->steps + 1));
    if (!t) {
        mf_fail("sampler %s: out of memory for a grid of %d steps", who, o->steps);
        return NULL;
    }
    mf_sampler_grid(o, t);
    return t;
}

/* ---- fixed-step solvers --------------------------------------------------------------------- */

enum { FIXED_EULER, FIXED_HEUN, FIXED_RK4, FIXED_MEANFLOW };

/* One step from t0 to t1 (h = t1 - t0 < 0) of the given method; b[] are scratch buffers. */
static int fixed_step(int method, const mf_field *f, float *z, double t0, double t1, float **b,
                      mf_sampler_stats *st, const char *who) {
    mf_backend *be = f->be;
    const mf_backend_i *k = be->i;
    const int64_t n = f->n;
    const double h = t1 - t0;
    switch (method) {
    case FIXED_EULER:
        MF_TRY(eval_v(f, z, t0, b[0], st, who));
        k->axpby(be, n, (float)h, b[0], 1.0f, z);
        return 0;
    case FIXED_MEANFLOW: /* z_{t1} = z_{t0} - (t0 - t1) u(z_{t0}, r = t1, t = t0) */
        st->nfe++;
        if (f->eval(f->ctx, z, (float)t1, (float)t0, b[0]) != 0)
            return mf_error_prefix("sampler %s, model at r = %.6g, t = %.6g", who, t1, t0);
        k->axpby(be, n, (float)h, b[0], 1.0f, z);
        return 0;
    case FIXED_HEUN: { /* trapezoidal predictor-corrector */
        float *v1 = b[0], *v2 = b[1], *zp = b[2];
        MF_TRY(eval_v(f, z, t0, v1, st, who));
        k->add2(be, n, 1.0f, z, (float)h, v1, zp);
        MF_TRY(eval_v(f, zp, t1, v2, st, who));
        k->add2(be, n, 1.0f, v1, 1.0f, v2, v1);
        k->axpby(be, n, (float)(0.5 * h), v1, 1.0f, z);
        return 0;
    }
    case FIXED_RK4: { /* classic RK4; acc collects k1 + 2 k2 + 2 k3 + k4 */
        float *kk = b[0], *zs = b[1], *acc = b[2];
        const double tm = t0 + 0.5 * h;
        MF_TRY(eval_v(f, z, t0, acc, st, who));
        k->add2(be, n, 1.0f, z, (float)(0.5 * h), acc, zs);
        MF_TRY(eval_v(f, zs, tm, kk, st, who));
        k->axpby(be, n, 2.0f, kk, 1.0f, acc);
        k->add2(be, n, 1.0f, z, (float)(0.5 * h), kk, zs);
        MF_TRY(eval_v(f, zs, tm, kk, st, who));
        k->axpby(be, n, 2.0f, kk, 1.0f, acc);
        k->add2(be, n, 1.0f, z, (float)h, kk, zs);
        MF_TRY(eval_v(f, zs, t1, kk, st, who));
        k->axpby(be, n, 1.0f, kk, 1.0f, acc);
        k->axpby(be, n, (float)(h / 6.0), acc, 1.0f, z);
        return 0;
    }
    }
    MF_ASSERT(0 && "unknown fixed-step method");
    return -1;
}

static int run_fixed(int method, const char *who, const mf_field *f, const mf_sampler_opts *o,
                     float *z, mf_sampler_stats *st_out) {
    check_field(f, z);
    MF_ASSERT(o);
    mf_sampler_stats st0, *st = st_out ? st_out : &st0;
    memset(st, 0, sizeof *st);
    if (method == FIXED_MEANFLOW && !f->average)
        return mf_fail("sampler meanflow needs a model trained with an average-velocity objective "
                       "(this model predicts the instantaneous velocity; use euler, heun, rk4 or dopri5)");
    double *t = make_grid(o, who);
    if (!t) return -1;
    static const int nbuf[] = {[FIXED_EULER] = 1, [FIXED_HEUN] = 3, [FIXED_RK4] = 3, [FIXED_MEANFLOW] = 1};
    scratch s;
    if (scratch_alloc(&s, f, nbuf[method], who) != 0) {
        free(t);
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < o->steps && rc == 0; i++) {
        rc = fixed_step(method, f, z, t[i], t[i + 1], s.b, st, who);
        if (rc == 0) {
            st->accepted++;
            rc = report_step(o, z, t[i + 1]);
        }
    }
    scratch_free(&s);
    free(t);
    if (o->row_stats) /* one time for the whole batch: every row did what the batch did */
        for (int i = 0; i < (f->batch >= 1 ? f->batch : 1); i++) o->row_stats[i] = *st;
    return rc;
}

static int run_euler(const mf_field *f, const mf_sampler_opts *o, float *z, mf_sampler_stats *st) {
    return run_fixed(FIXED_EULER, "euler", f, o, z, st);
}
static int run_heun(const mf_field *f, const mf_sampler_opts *o, float *z, mf_sampler_stats *st) {
    return run_fixed(FIXED_HEUN, "heun", f, o, z, st);
}
static int run_rk4(const mf_field *f, const mf_sampler_opts *o, float *z, mf_sampler_stats *st) {
    return run_fixed(FIXED_RK4, "rk4", f, o, z, st);
}
static int run_meanflow(const mf_field *f, const mf_sampler_opts *o, float *z, mf_sampler_stats *st) {
    return run_fixed(FIXED_MEANFLOW, "meanflow", f, o, z, st);
}

/* ---- Dormand-Prince 5(4) -------------------------------------------------------------------- */

/* Stage matrix (row i gives stage i+1's input from k1..ki), 5th-order weights (= last row, FSAL) and
 * error weights e = b5 - b4 (the embedded 4th-order solution). */
static const double DP_C[7] = {0, 1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1, 1};
static const double DP_A[7][6] = {
    {0},
    {1.0 / 5},
    {3.0 / 40, 9.0 / 40},
    {44.0 / 45, -56.0 / 15, 32.0 / 9},
    {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729},
    {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656},
    {35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84},
};
static const double DP_E[7] = {71.0 / 57600,   0,          -71.0 / 16695, 71.0 / 1920,
                               -17253.0 / 339200, 22.0 / 525, -1.0 / 40};

/* The error norm of one sample (one row of the batch). Hairer's element-wise RMS of
 * err_i / (atol + rtol max(|z_i|, |z_new_i|)) needs an element-wise abs/max/divide that the backend
 * does not have (and no exact composition of its kernels gives one), so this is the mixed norm from
 * per-row reductions only:
 *   rms(err) / (atol + rtol * max(rms(z), rms(z_new))), each RMS over the row's C*H*W elements.
 * It equals Hairer's norm for rtol = 0 and when all elements share one magnitude; otherwise elements
 * far below the RMS get a looser relative tolerance and elements above it a tighter one. For image
 * states (roughly unit-variance elements) the two behave alike. */
static double err_norm(const mf_sampler_opts *o, double e_rms, double z_rms, double zn_rms) {
    const double sc = o->atol + o->rtol * (z_rms > zn_rms ? z_rms : zn_rms);
    return e_rms / sc;
}

/* Per-row Dormand-Prince state (host). */
typedef struct dp_rows {
    int batch, real;     /* rows, rows holding samples */
    int64_t img;         /* floats per row */
    double *t, *h, *zrms, *sq, *sq2;
    float *tt;           /* the times handed to the field, one per row */
    unsigned char *act, *rej_last, *need;
    mf_sampler_stats *rs;
    float *tmp;          /* fields without eval_rows: one evaluation's output */
} dp_rows;

/* out = field(z, tt) on the rows marked in need[] (other rows of out: unspecified). With eval_rows one
 * call; otherwise one call per distinct time among the needed rows. Counts the calls in st->nfe. */
static int dp_eval(const mf_field *f, dp_rows *d, const float *z, float *out, mf_sampler_stats *st,
                   const char *who) {
    if (f->eval_rows) {
        st->nfe++;
        if (f->eval_rows(f->ctx, z, d->tt, d->tt, out) != 0)
            return mf_error_prefix("sampler %s, model at per-row times: ", who);
        return 0;
    }
    const mf_backend_i *k = f->be->i;
    unsigned char *pending = d->rej_last + d->batch; /* scratch flags after rej_last */
    int left = 0, pass = 0;
    for (int i = 0; i < d->batch; i++) left += pending[i] = d->need[i];
    while (left > 0) {
        int first = 0;
        while (!pending[first]) first++;
        const float T = d->tt[first];
        int all = pass++ == 0; /* one time for every needed row: straight into out */
        for (int i = 0; i < d->batch; i++)
            if (pending[i] && d->tt[i] != T) all = 0;
        float *dst = all ? out : d->tmp;
        st->nfe++;
        if (f->eval(f->ctx, z, T, T, dst) != 0) return mf_error_prefix("sampler %s, model at t = %.6g", who, (double)T);
        for (int i = 0; i < d->batch; i++)
            if (pending[i] && d->tt[i] == T) {
                if (!all) k->copy(f->be, out + i * d->img, dst + i * d->img, sizeof(float) * (size_t)d->img);
                pending[i] = 0;
                left--;
            }
    }
    return 0;
}

/* Row i: dst = z + dt * sum_j w[j] k[j] (j < m; zero weights skipped; z NULL: 0). */
static void lincomb_row(const mf_field *f, const dp_rows *d, int i, float *dst, const float *z, double dt,
                        const double *w, float *const *kb, int m) {
    const mf_backend_i *k = f->be->i;
    const int64_t o = i * d->img;
    if (z)
        k->copy(f->be, dst + o, z + o, sizeof(float) * (size_t)d->img);
    else
        k->fill(f->be, dst + o, 0.0f, d->img);
    for (int j = 0; j < m; j++)
        if (w[j] != 0) k->axpby(f->be, d->img, (float)(dt * w[j]), kb[j] + o, 1.0f, dst + o);
}

/* Dormand-Prince 5(4) with per-sample step-size control: every row of the batch (one sample) has its
 * own time, step size, accept/reject decisions and evaluation count, so a sample's result does not
 * depend on the other rows of its batch (nor on padding rows, which are never advanced). The batch is
 * evaluated as a whole while any row is unfinished; finished rows are evaluated at their final time and
 * their results ignored. All per-row arithmetic is done with kernels on that row alone (same lengths,
 * same scalars, whatever the batch), the norms with per-row reductions (sq_err_rows). */
static int run_dopri5(const mf_field *f, const mf_sampler_opts *o, float *z, mf_sampler_stats *st_out) {
    check_field(f, z);
    MF_ASSERT(o);
    const char *who = "dopri5";
    mf_sampler_stats st0, *st = st_out ? st_out : &st0;
    memset(st, 0, sizeof *st);
    if (!(o->rtol >= 0) || !(o->atol >= 0) || !(o->rtol + o->atol > 0))
        return mf_fail("dopri5: rtol and atol must be >= 0 and not both 0 (got rtol %g, atol %g)",
                       o->rtol, o->atol);
    if (o->max_nfe < 1) return mf_fail("dopri5: sample.max_nfe must be >= 1 (got %d)", o->max_nfe);
    if (!(o->h0 >= 0)) return mf_fail("dopri5: h0 must be >= 0 (0: automatic; got %g)", o->h0);
    const int B = f->batch >= 1 ? f->batch : 1;
    MF_ASSERT(f->n % B == 0);
    MF_ASSERT(f->rows >= 0 && f->rows <= B);
    const mf_backend_i *k = f->be->i;
    mf_backend *be = f->be;
    scratch s;
    MF_TRY(scratch_alloc(&s, f, f->eval_rows ? 9 : 10, who));
    for (int j = 0; j < s.count; j++) k->fill(be, s.b[j], 0.0f, f->n); /* rows never written stay finite */
    float *kb[7], *zn = s.b[7], *err = s.b[8];
    for (int j = 0; j < 7; j++) kb[j] = s.b[j];
    dp_rows d = {.batch = B, .real = f->rows ? f->rows : B, .img = f->n / B};
    d.t = mf_xcalloc((size_t)B * 5, sizeof(double));
    d.h = d.t + B, d.zrms = d.h + B, d.sq = d.zrms + B, d.sq2 = d.sq + B;
    d.tt = mf_xcalloc((size_t)B, sizeof(float));
    d.act = mf_xcalloc((size_t)B * 4, 1);
    d.rej_last = d.act + B, d.need = d.rej_last + 2 * B; /* [rej_last | dp_eval's flags | need] */
    d.rs = mf_xcalloc((size_t)B, sizeof(mf_sampler_stats));
    d.tmp = f->eval_rows ? NULL : s.b[9];
    const int R = d.real;
    const int64_t img = d.img;
    int rc = -1, bad = -1; /* bad: the row that hit the cap */
    for (int i = 0; i < B; i++) {
        d.t[i] = 1.0;
        d.tt[i] = 1.0f;
        d.need[i] = d.act[i] = i < R;
    }
#define DP_EVAL(zz, out)                                                                           \
    do {                                                                                           \
        for (int i_ = 0; i_ < R; i_++)                                                             \
            if (d.act[i_] && d.rs[i_].nfe + 1 > o->max_nfe) {                                      \
                bad = i_;                                                                          \
                goto over;                                                                         \
            }                                                                                      \
        if (dp_eval(f, &d, (zz), (out), st, who) != 0) goto done;                                  \
        for (int i_ = 0; i_ < R; i_++) d.rs[i_].nfe += d.act[i_];                                  \
    } while (0)
    DP_EVAL(z, kb[0]);
    k->sq_err_rows(be, B, img, z, NULL, d.zrms);
    for (int i = 0; i < R; i++) d.zrms[i] = sqrt(d.zrms[i] / (double)img);
    if (o->h0 > 0) {
        for (int i = 0; i < R; i++) d.h[i] = o->h0;
    } else { /* Hairer, Norsett & Wanner, Solving ODEs I, II.4: starting step size, per row */
        k->sq_err_rows(be, B, img, kb[0], NULL, d.sq);
        for (int i = 0; i < R; i++) {
            const double sc = o->atol + o->rtol * d.zrms[i];
            const double d0 = d.zrms[i] / sc, d1 = sqrt(d.sq[i] / (double)img) / sc;
            double hh = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1;
            if (hh > 1) hh = 1;
            d.h[i] = hh;
            d.sq2[i] = d1;
            const int64_t off = i * img;
            k->add2(be, img, 1.0f, z + off, (float)-hh, kb[0] + off, zn + off);
            d.tt[i] = (float)(1.0 - hh);
        }
        DP_EVAL(zn, kb[1]);
        for (int i = 0; i < R; i++) {
            const int64_t off = i * img;
            k->add2(be, img, 1.0f, kb[1] + off, -1.0f, kb[0] + off, err + off);
        }
        k->sq_err_rows(be, B, img, err, NULL, d.sq);
        for (int i = 0; i < R; i++) {
            const double sc = o->atol + o->rtol * d.zrms[i], hh = d.h[i], d1 = d.sq2[i];
            const double d2 = sqrt(d.sq[i] / (double)img) / sc / hh, dm = d1 > d2 ? d1 : d2;
            const double h1 = dm <= 1e-15 ? (hh * 1e-3 > 1e-6 ? hh * 1e-3 : 1e-6) : pow(0.01 / dm, 0.2);
            d.h[i] = 100 * hh < h1 ? 100 * hh : h1;
        }
    }
    for (;;) {
        int any = 0;
        for (int i = 0; i < R; i++) any |= d.act[i] = d.need[i] = d.t[i] > 0;
        if (!any) break;
        for (int i = 0; i < R; i++) {
            if (!d.act[i]) continue;
            double *h = &d.h[i];
            const double t = d.t[i];
            if (*h >= t || t - *h < 1e-9) *h = t; /* land exactly on t = 0 */
            if (*h < 1e-10) {
                mf_fail("dopri5: step size underflow (h = %.3g) at t = %.6g (row %d of the batch); loosen "
                        "rtol/atol", *h, t, i);
                goto done;
            }
            if (d.rs[i].nfe + 6 > o->max_nfe) {
                bad = i;
                goto over;
            }
        }
        for (int j = 1; j < 7; j++) {
            float *in = j == 6 ? zn : err; /* stage 7's input is the 5th-order solution */
            for (int i = 0; i < B; i++) {
                if (d.act[i]) {
                    lincomb_row(f, &d, i, in, z, -d.h[i], DP_A[j], kb, j);
                    d.tt[i] = (float)(d.t[i] - DP_C[j] * d.h[i]); /* c = 1: exactly 0 on the last step */
                } else {
                    d.tt[i] = (float)d.t[i]; /* finished: 0; padding: 1 (results ignored) */
                }
            }
            DP_EVAL(in, kb[j]);
        }
        for (int i = 0; i < R; i++)
            if (d.act[i]) lincomb_row(f, &d, i, err, NULL, -d.h[i], DP_E, kb, 7);
        k->sq_err_rows(be, B, img, err, NULL, d.sq);
        k->sq_err_rows(be, B, img, zn, NULL, d.sq2);
        int accepted = 0;
        for (int i = 0; i < R; i++) {
            if (!d.act[i]) continue;
            const int64_t off = i * img;
            const double zn_rms = sqrt(d.sq2[i] / (double)img);
            const double en = err_norm(o, sqrt(d.sq[i] / (double)img), d.zrms[i], zn_rms);
            double fac = en > 0 ? 0.9 * pow(en, -0.2) : 10.0;
            fac = fac < 0.2 ? 0.2 : fac > 10.0 ? 10.0 : fac;
            if (en <= 1.0) {
                k->copy(be, z + off, zn + off, sizeof(float) * (size_t)img);
                k->copy(be, kb[0] + off, kb[6] + off, sizeof(float) * (size_t)img); /* FSAL: k7 is the next k1 */
                d.t[i] = d.h[i] == d.t[i] ? 0.0 : d.t[i] - d.h[i];
                d.zrms[i] = zn_rms;
                d.rs[i].accepted++;
                accepted = 1;
                if (d.rej_last[i] && fac > 1.0) fac = 1.0;
                d.rej_last[i] = 0;
            } else {
                d.rs[i].rejected++;
                d.rej_last[i] = 1;
            }
            d.h[i] *= fac;
        }
        if (accepted) {
            if (o->on_step_rows) {
                if (o->on_step_rows(o->user, z, d.t) != 0) goto done;
            } else {
                double tmax = 0;
                for (int i = 0; i < R; i++) tmax = d.t[i] > tmax ? d.t[i] : tmax;
                if (report_step(o, z, tmax) != 0) goto done;
            }
        }
    }
    rc = 0;
    goto done;
over:
    mf_fail("dopri5: more than %d evaluations; raise sample.max_nfe or loosen rtol/atol (rtol %g, "
            "atol %g; row %d of the batch reached t = %.4g after %d accepted and %d rejected steps)",
            o->max_nfe, o->rtol, o->atol, bad, d.t[bad], d.rs[bad].accepted, d.rs[bad].rejected);
done:
#undef DP_EVAL
    for (int i = 0; i < R; i++) {
        st->accepted += d.rs[i].accepted;
        st->rejected += d.rs[i].rejected;
    }
    if (o->row_stats) memcpy(o->row_stats, d.rs, sizeof(mf_sampler_stats) * (size_t)B);
    free(d.t);
    free(d.tt);
    free(d.act);
    free(d.rs);
    scratch_free(&s);
    return rc;
}

/* ---- registry ------------------------------------------------------------------------------- */

static const mf_sampler builtin[] = {
    {"euler", "explicit Euler on the time grid (1st order, 1 evaluation per step)", 0, run_euler},
    {"heun", "Heun's trapezoidal predictor-corrector (2nd order, 2 evaluations per step)", 0, run_heun},
    {"rk4", "classic Runge-Kutta (4th order, 4 evaluations per step)", 0, run_rk4},
    {"dopri5", "adaptive Dormand-Prince 5(4) with rtol/atol and an evaluation cap", 0, run_dopri5},
    {"meanflow", "MeanFlow average-velocity sampler: z_r = z_t - (t - r) u(z_t, r, t), 1 or k steps", 1,
     run_meanflow},
};
#define N_BUILTIN ((int)(sizeof builtin / sizeof builtin[0]))
#define MAX_EXTRA 32

static const mf_sampler *extra[MAX_EXTRA];
static int n_extra;

static const mf_sampler *lookup(const char *name) {
    for (int i = 0; i < N_BUILTIN; i++)
        if (strcmp(builtin[i].name, name) == 0) return &builtin[i];
    for (int i = 0; i < n_extra; i++)
        if (strcmp(extra[i]->name, name) == 0) return extra[i];
    return NULL;
}

static int valid_name(const char *name) {
    if (!name || !*name) return 0;
    for (const char *c = name; *c; c++)
        if (!(*c == '_' || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9'))) return 0;
    return 1;
}

int mf_sampler_register(const mf_sampler *s) {
    if (!s || !s->run) return mf_fail("sampler registration: missing sampler or run function");
    if (!valid_name(s->name))
        return mf_fail("sampler name '%s': only lowercase letters, digits and '_' are allowed",
                       s->name ? s->name : "(null)");
    if (lookup(s->name)) return mf_fail("sampler '%s' is already registered", s->name);
    if (n_extra >= MAX_EXTRA)
        return mf_fail("cannot register sampler '%s': at most %d samplers can be added", s->name,
                       MAX_EXTRA);
    extra[n_extra++] = s;
    return 0;
}

int mf_sampler_list(const mf_sampler **out, int cap) {
    const int total = N_BUILTIN + n_extra;
    for (int i = 0; i < total && i < cap; i++) out[i] = i < N_BUILTIN ? &builtin[i] : extra[i - N_BUILTIN];
    return total;
}

/* Load sampler_<name>.so from path and register it. The handle stays open for the process. */
static const mf_sampler *load_plugin(const char *path, const char *name) {
    mf_module mod;
    if (mf_module_open(&mod, path, "mfpipe_sampler_entry", MF_SAMPLER_ABI_VERSION, "sampler plugin") != 0)
        return NULL;
    const mf_sampler_plugin *p = mod.api;
    if (!p->sampler || !p->sampler->run || !p->sampler->name) {
        mf_fail("%s: malformed sampler plugin (sampler, its name and run are required)", path);
        p = NULL;
    } else if (strcmp(p->sampler->name, name) != 0) {
        mf_fail("%s: plugin says it is sampler '%s', but its file name says '%s'", path, p->sampler->name, name);
        p = NULL;
    } else if (mf_sampler_register(p->sampler) != 0) {
        mf_error_prefix("%s", path);
        p = NULL;
    }
    if (!p) {
        mf_module_close(&mod);
        return NULL;
    }
    return p->sampler; /* the module stays open: the sampler's code lives in it */
}

/* "euler, heun, ..." plus sampler plugins present in the folders but not loaded yet. */
static void list_available(mf_buf *b, char **dirs, int nd) {
    for (int i = 0; i < N_BUILTIN + n_extra; i++)
        mf_buf_printf(b, "%s%s", i ? ", " : "", i < N_BUILTIN ? builtin[i].name : extra[i - N_BUILTIN]->name);
    for (int d = 0; d < nd; d++) {
        DIR *dir = opendir(dirs[d]);
        if (!dir) continue;
        for (struct dirent *de; (de = readdir(dir));) {
            const char *nm = de->d_name;
            const size_t len = strlen(nm);
            if (len <= 11 || strncmp(nm, "sampler_", 8) != 0 || strcmp(nm + len - 3, ".so") != 0) continue;
            char pname[256], item[300];
            snprintf(pname, sizeof pname, "%.*s", (int)(len - 11), nm + 8);
            snprintf(item, sizeof item, ", %s (plugin)", pname);
            if (!lookup(pname) && valid_name(pname) && !strstr(b->s, item)) mf_buf_puts(b, item);
        }
        closedir(dir);
    }
}

const mf_sampler *mf_sampler_find(const char *name) {
    if (!valid_name(name)) {
        mf_fail("sampler name '%s': only lowercase letters, digits and '_' are allowed",
                name ? name : "(null)");
        return NULL;
    }
    const mf_sampler *s = lookup(name);
    if (s) return s;
    char **dirs;
    const int nd = mf_plugin_dirs(&dirs);
    int found = 0;
    for (int d = 0; d < nd && !found; d++) {
        char *path = mf_xasprintf("%s/sampler_%s.so", dirs[d], name);
        struct stat sb;
        if (stat(path, &sb) == 0) {
            found = 1;
            s = load_plugin(path, name);
        }
        free(path);
    }
    if (!found) {
        mf_buf avail = {0}, tried = {0};
        list_available(&avail, dirs, nd);
        for (int d = 0; d < nd; d++) mf_buf_printf(&tried, "%s%s", d ? ":" : "", dirs[d]);
        mf_fail("unknown sampler '%s' (available: %s; plugins are sampler_<name>.so in %s, "
                "MFPIPE_PLUGIN_PATH adds folders)",
                name, avail.s, nd ? tried.s : "no plugin folder");
        mf_buf_free(&avail);
        mf_buf_free(&tried);
    }
    mf_plugin_dirs_free(dirs, nd);
    return s;
}
