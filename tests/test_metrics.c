/* test_metrics.c - evaluation metrics: matrix square roots against Denman-Beavers, FID closed forms
 * and sanity (self, shift, noise, scale), the reference-statistics file, precision/recall and nearest
 * neighbours against brute force (ties, duplicates, blocks), classifier scores, softmax, timing. */
#include <dlfcn.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mf_error.h"
#include "mf_io.h"
#include "mf_metrics.h"
#include "mf_rng.h"
#include "mf_test.h"

/* Debug+ASan builds run the big timing case smaller (MF_TEST_METRICS_BIG_N overrides). */
#if defined(__SANITIZE_ADDRESS__) || !defined(__OPTIMIZE__)
#define BIG_N_DEFAULT 2000
#else
#define BIG_N_DEFAULT 10000
#endif

/* The library runs distance tiles on OpenMP threads only when OpenBLAS is single-threaded (as
 * mfpipe's CPU backend sets it); both paths are tested. OpenBLAS is reached through libmfcore. */
static int blas_threads(int set) {
    void (*setf)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, "openblas_set_num_threads");
    int (*getf)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "openblas_get_num_threads");
    if (!setf || !getf) return -1;
    const int prev = getf();
    if (set > 0) setf(set);
    return prev;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float *randn(int64_t n, uint64_t seed) {
    float *x = mf_xmalloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    mf_rng_normal(seed, 99, 0, x, n);
    return x;
}

/* ---- small dense linear algebra, written independently of the library ------------------------ */

static void matmul(const double *a, const double *b, int d, double *c) {
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            double s = 0.0;
            for (int k = 0; k < d; k++) s += a[i * d + k] * b[k * d + j];
            c[i * d + j] = s;
        }
}

static double max_abs(const double *a, int n) {
    double m = 0.0;
    for (int i = 0; i < n; i++) m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

static double max_abs_diff(const double *a, const double *b, int n) {
    double m = 0.0;
    for (int i = 0; i < n; i++) m = fabs(a[i] - b[i]) > m ? fabs(a[i] - b[i]) : m;
    return m;
}

/* Gauss-Jordan inverse with partial pivoting. */
static void matinv(const double *a, int d, double *inv) {
    double *m = mf_xmalloc(sizeof(double) * (size_t)(2 * d * d));
    for (int i = 0; i < d; i++)
        for (int j = 0; j < 2 * d; j++) m[i * 2 * d + j] = j < d ? a[i * d + j] : (j - d == i);
    for (int c = 0; c < d; c++) {
        int p = c;
        for (int r = c + 1; r < d; r++)
            if (fabs(m[r * 2 * d + c]) > fabs(m[p * 2 * d + c])) p = r;
        for (int j = 0; j < 2 * d; j++) {
            double t = m[c * 2 * d + j];
            m[c * 2 * d + j] = m[p * 2 * d + j];
            m[p * 2 * d + j] = t;
        }
        const double piv = m[c * 2 * d + c];
        for (int j = 0; j < 2 * d; j++) m[c * 2 * d + j] /= piv;
        for (int r = 0; r < d; r++) {
            if (r == c) continue;
            const double f = m[r * 2 * d + c];
            for (int j = 0; j < 2 * d; j++) m[r * 2 * d + j] -= f * m[c * 2 * d + j];
        }
    }
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) inv[i * d + j] = m[i * 2 * d + d + j];
    free(m);
}

/* Denman-Beavers iteration: Y -> sqrt(A), Z -> sqrt(A)^-1 (A symmetric positive definite). */
static void sqrtm_db(const double *a, int d, double *out) {
    const int dd = d * d;
    double *y = mf_xmalloc(sizeof(double) * (size_t)dd * 4), *z = y + dd, *yi = z + dd, *zi = yi + dd;
    memcpy(y, a, sizeof(double) * (size_t)dd);
    for (int i = 0; i < dd; i++) z[i] = (i % (d + 1)) == 0;
    for (int it = 0; it < 100; it++) {
        matinv(y, d, yi);
        matinv(z, d, zi);
        double change = 0.0;
        for (int i = 0; i < dd; i++) {
            const double ny = 0.5 * (y[i] + zi[i]);
            change = fabs(ny - y[i]) > change ? fabs(ny - y[i]) : change;
            y[i] = ny;
            z[i] = 0.5 * (z[i] + yi[i]);
        }
        if (change < 1e-15 * max_abs(y, dd)) break;
    }
    memcpy(out, y, sizeof(double) * (size_t)dd);
    free(y);
}

/* Random SPD matrix G G^T / d + shift I. */
static double *random_spd(int d, uint64_t seed, double shift) {
    float *g = randn((int64_t)d * d, seed);
    double *a = mf_xmalloc(sizeof(double) * (size_t)(d * d));
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            double s = 0.0;
            for (int k = 0; k < d; k++) s += (double)g[i * d + k] * g[j * d + k];
            a[i * d + j] = s / d + (i == j ? shift : 0.0);
        }
    free(g);
    return a;
}

/* Random orthogonal matrix (rows orthonormal) by Gram-Schmidt. */
static double *random_orthogonal(int d, uint64_t seed) {
    float *g = randn((int64_t)d * d, seed);
    double *q = mf_xmalloc(sizeof(double) * (size_t)(d * d));
    for (int i = 0; i < d * d; i++) q[i] = g[i];
    for (int i = 0; i < d; i++) {
        for (int pass = 0; pass < 2; pass++)
            for (int k = 0; k < i; k++) {
                double dot = 0.0;
                for (int j = 0; j < d; j++) dot += q[i * d + j] * q[k * d + j];
                for (int j = 0; j < d; j++) q[i * d + j] -= dot * q[k * d + j];
            }
        double nrm = 0.0;
        for (int j = 0; j < d; j++) nrm += q[i * d + j] * q[i * d + j];
        nrm = sqrt(nrm);
        for (int j = 0; j < d; j++) q[i * d + j] /= nrm;
    }
    free(g);
    return q;
}

/* Q^T diag(e) Q */
static double *rotated_diag(const double *q, const double *e, int d) {
    double *a = mf_xcalloc((size_t)(d * d), sizeof(double));
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++)
            for (int k = 0; k < d; k++) a[i * d + j] += q[k * d + i] * e[k] * q[k * d + j];
    return a;
}

static mf_gauss make_gauss(int d, const double *mu, const double *cov) {
    mf_gauss g = {d, 1000, mf_xmalloc(sizeof(double) * (size_t)d), mf_xmalloc(sizeof(double) * (size_t)(d * d))};
    for (int i = 0; i < d; i++) g.mu[i] = mu ? mu[i] : 0.0;
    memcpy(g.cov, cov, sizeof(double) * (size_t)(d * d));
    return g;
}

static double trace(const mf_gauss *g) {
    double t = 0.0;
    for (int i = 0; i < g->d; i++) t += g->cov[i * g->d + i];
    return t;
}

/* ---- sqrtm ----------------------------------------------------------------------------------- */

static void test_sqrtm(void) {
    const int sizes[3] = {3, 10, 64};
    for (int s = 0; s < 3; s++) {
        const int d = sizes[s], dd = d * d;
        double *a = random_spd(d, 100 + (uint64_t)s, 0.5);
        double *r = mf_xmalloc(sizeof(double) * (size_t)dd), *r2 = mf_xmalloc(sizeof(double) * (size_t)dd);
        double *db = mf_xmalloc(sizeof(double) * (size_t)dd);
        CHECK(mf_sqrtm_sym(a, d, r) == 0);
        matmul(r, r, d, r2);
        const double scale = max_abs(a, dd);
        CHECK_MSG(max_abs_diff(r2, a, dd) <= 1e-9 * scale, "d=%d: |S^2 - A| = %g", d, max_abs_diff(r2, a, dd));
        sqrtm_db(a, d, db);
        CHECK_MSG(max_abs_diff(r, db, dd) <= 1e-8 * max_abs(db, dd), "d=%d: |S - DB| = %g", d,
                  max_abs_diff(r, db, dd));
        int sym = 1;
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++) sym &= r[i * d + j] == r[j * d + i];
        CHECK(sym);
        /* in place */
        double *c = mf_xmalloc(sizeof(double) * (size_t)dd);
        memcpy(c, a, sizeof(double) * (size_t)dd);
        CHECK(mf_sqrtm_sym(c, d, c) == 0);
        CHECK(max_abs_diff(c, r, dd) <= 1e-12 * max_abs(r, dd));
        free(a), free(r), free(r2), free(db), free(c);
    }
    /* rank one: sqrt(v v^T) = v v^T / |v| */
    {
        const double v[4] = {1.0, -2.0, 0.5, 3.0};
        double a[16], want[16], r[16];
        const double nv = sqrt(1 + 4 + 0.25 + 9);
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) a[i * 4 + j] = v[i] * v[j], want[i * 4 + j] = v[i] * v[j] / nv;
        CHECK(mf_sqrtm_sym(a, 4, r) == 0);
        CHECK_MSG(max_abs_diff(r, want, 16) <= 1e-7, "rank one: %g", max_abs_diff(r, want, 16));
    }
    /* a small negative eigenvalue is clamped to 0 */
    {
        const double a[9] = {4, 0, 0, 0, -1e-12, 0, 0, 0, 9};
        const double want[9] = {2, 0, 0, 0, 0, 0, 0, 0, 3};
        double r[9];
        CHECK(mf_sqrtm_sym(a, 3, r) == 0);
        CHECK(max_abs_diff(r, want, 9) <= 1e-12);
    }
    /* 1x1 */
    {
        double a = 6.25, r = 0;
        CHECK(mf_sqrtm_sym(&a, 1, &r) == 0);
        CHECK_NEAR(r, 2.5, 1e-15);
    }
    /* non-finite input is a user error */
    {
        double a[4] = {1, 0, 0, NAN}, r[4];
        CHECK(mf_sqrtm_sym(a, 2, r) == -1);
        CHECK_ERR_CONTAINS("not finite");
    }
}

/* ---- Gaussian fit ---------------------------------------------------------------------------- */

static void test_gauss_fit(void) {
    const float x[6] = {1, 2, 3, 4, 5, 9};
    mf_gauss g;
    CHECK(mf_gauss_fit(x, 3, 2, &g) == 0);
    CHECK(g.d == 2 && g.n == 3);
    CHECK_NEAR(g.mu[0], 3.0, 1e-15);
    CHECK_NEAR(g.mu[1], 5.0, 1e-15);
    CHECK_NEAR(g.cov[0], 4.0, 1e-14);
    CHECK_NEAR(g.cov[1], 7.0, 1e-14);
    CHECK_NEAR(g.cov[2], 7.0, 1e-14);
    CHECK_NEAR(g.cov[3], 13.0, 1e-14);
    mf_gauss_free(&g);
    CHECK(g.mu == NULL && g.cov == NULL && g.d == 0);
    mf_gauss_free(&g); /* twice is fine */
    mf_gauss_free(NULL);

    /* several row blocks, against a naive two-pass computation */
    const int n = 2500, d = 5;
    float *f = randn((int64_t)n * d, 7);
    for (int i = 0; i < n; i++) f[i * d + 1] = 3.0f * f[i * d + 1] + 0.5f * f[i * d] + 100.0f;
    CHECK(mf_gauss_fit(f, n, d, &g) == 0);
    double mu[5] = {0}, cov[25] = {0};
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) mu[j] += f[i * d + j];
    for (int j = 0; j < d; j++) mu[j] /= n;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++)
            for (int k = 0; k < d; k++) cov[j * d + k] += (f[i * d + j] - mu[j]) * (f[i * d + k] - mu[k]);
    for (int j = 0; j < 25; j++) cov[j] /= n - 1;
    CHECK(max_abs_diff(g.mu, mu, d) <= 1e-10);
    CHECK_MSG(max_abs_diff(g.cov, cov, 25) <= 1e-10, "%g", max_abs_diff(g.cov, cov, 25));
    mf_gauss_free(&g);

    CHECK(mf_gauss_fit(f, 1, d, &g) == -1);
    CHECK_ERR_CONTAINS("at least 2");
    CHECK(g.mu == NULL);
    CHECK(mf_gauss_fit(f, n, 0, &g) == -1);
    f[17] = NAN;
    CHECK(mf_gauss_fit(f, n, d, &g) == -1);
    CHECK_ERR_CONTAINS("row 3 column 2 is not finite");
    free(f);
}

/* ---- FID ------------------------------------------------------------------------------------- */

/* n x d features: z L^T + offset with a random mixing L (correlated, non-isotropic). */
static float *correlated(int n, int d, uint64_t seed, const double *mix, float offset) {
    float *z = randn((int64_t)n * d, seed), *x = mf_xmalloc(sizeof(float) * (size_t)n * (size_t)d);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) {
            double s = 0.0;
            for (int k = 0; k < d; k++) s += mix[j * d + k] * z[i * d + k];
            x[i * d + j] = (float)s + offset;
        }
    free(z);
    return x;
}

static void test_fid(void) {
    const int d = 16, n = 5000;
    double *mix = random_spd(d, 11, 0.3);
    float *x = correlated(n, d, 12, mix, 1.5f), *y = correlated(n, d, 13, mix, 1.5f);
    mf_gauss gx, gy, gx2;
    CHECK(mf_gauss_fit(x, n, d, &gx) == 0);
    CHECK(mf_gauss_fit(y, n, d, &gy) == 0);
    CHECK(mf_gauss_fit(x, n, d, &gx2) == 0);
    const double tr = trace(&gx);

    /* against itself */
    double f = mf_fid(&gx, &gx);
    CHECK_MSG(f >= 0 && f < 1e-6 * tr, "self FID %g (trace %g)", f, tr);
    f = mf_fid(&gx, &gx2);
    CHECK_MSG(f >= 0 && f < 1e-6 * tr, "self FID (refit) %g", f);

    /* two samples of one Gaussian: small, symmetric */
    const double fxy = mf_fid(&gx, &gy), fyx = mf_fid(&gy, &gx);
    printf("FID of two samples (n=%d, d=%d, trace %.3f): %.5f\n", n, d, tr, fxy);
    CHECK_MSG(fxy > 0 && fxy < 0.01 * tr, "%g", fxy);
    CHECK_NEAR(fxy, fyx, 1e-9 * tr);

    /* shifted data: FID ~ |shift|^2 (same covariance up to float rounding of the shift) */
    float *xs = mf_xmalloc(sizeof(float) * (size_t)n * d);
    double shift2 = 0.0;
    for (int j = 0; j < d; j++) shift2 += (0.25 * (j % 5)) * (0.25 * (j % 5));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) xs[i * d + j] = x[i * d + j] + 0.25f * (float)(j % 5);
    mf_gauss gs;
    CHECK(mf_gauss_fit(xs, n, d, &gs) == 0);
    f = mf_fid(&gx, &gs);
    CHECK_MSG(fabs(f - shift2) < 1e-4 * (shift2 + tr), "shifted: %g vs %g", f, shift2);

    /* equal covariances: exactly ||mu diff||^2 */
    mf_gauss gm = make_gauss(d, gx.mu, gx.cov);
    double diff2 = 0.0;
    for (int j = 0; j < d; j++) {
        gm.mu[j] += 0.1 * j - 0.7;
        diff2 += (0.1 * j - 0.7) * (0.1 * j - 0.7);
    }
    f = mf_fid(&gx, &gm);
    CHECK_MSG(fabs(f - diff2) < 1e-9 * tr, "equal covariances: %.12g vs %.12g", f, diff2);

    /* monotone in the std of added noise (one fixed noise draw, scaled) */
    {
        const int nn = 2000;
        float *e = randn((int64_t)nn * d, 14), *xn = mf_xmalloc(sizeof(float) * (size_t)nn * d);
        const double stds[7] = {0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0};
        mf_gauss g0;
        CHECK(mf_gauss_fit(x, nn, d, &g0) == 0);
        double prev = -1.0;
        int mono = 1;
        printf("FID vs noise std:");
        for (int s = 0; s < 7; s++) {
            for (int i = 0; i < nn * d; i++) xn[i] = x[i] + (float)stds[s] * e[i];
            mf_gauss gn;
            CHECK(mf_gauss_fit(xn, nn, d, &gn) == 0);
            const double fn = mf_fid(&g0, &gn);
            printf(" %.2f:%.4g", stds[s], fn);
            mono &= fn > prev;
            prev = fn;
            mf_gauss_free(&gn);
        }
        printf("\n");
        CHECK(mono);
        mf_gauss_free(&g0);
        free(e), free(xn);
    }

    /* closed form: N(0, I) vs N(0, s^2 I) = d (1 - s)^2 */
    {
        const int dc = 7;
        double eye[49] = {0}, sc[49];
        for (int i = 0; i < dc; i++) eye[i * dc + i] = 1.0;
        const double ss[4] = {0.5, 1.0, 2.0, 3.0};
        for (int t = 0; t < 4; t++) {
            for (int i = 0; i < 49; i++) sc[i] = eye[i] * ss[t] * ss[t];
            mf_gauss a = make_gauss(dc, NULL, eye), b = make_gauss(dc, NULL, sc);
            const double want = dc * (1 - ss[t]) * (1 - ss[t]);
            CHECK_NEAR(mf_fid(&a, &b), want, 1e-10 * dc * (1 + ss[t] * ss[t]));
            mf_gauss_free(&a), mf_gauss_free(&b);
        }
    }

    /* commuting, rotated covariances: sum (sqrt a_i - sqrt b_i)^2 + |mu diff|^2 */
    {
        const int dc = 20;
        double *q = random_orthogonal(dc, 15), ea[20], eb[20], mua[20], mub[20];
        double want = 0.0;
        for (int i = 0; i < dc; i++) {
            ea[i] = 0.1 + 0.3 * i;
            eb[i] = i % 3 == 0 ? 0.0 : 2.0 / (1 + i); /* singular B */
            mua[i] = 0.01 * i;
            mub[i] = -0.02 * i + 0.3;
            want += (sqrt(ea[i]) - sqrt(eb[i])) * (sqrt(ea[i]) - sqrt(eb[i])) +
                    (mua[i] - mub[i]) * (mua[i] - mub[i]);
        }
        double *ca = rotated_diag(q, ea, dc), *cb = rotated_diag(q, eb, dc);
        mf_gauss a = make_gauss(dc, mua, ca), b = make_gauss(dc, mub, cb);
        const double scale = trace(&a) + trace(&b);
        f = mf_fid(&a, &b);
        CHECK_MSG(fabs(f - want) < 1e-8 * scale, "rotated: %.12g vs %.12g", f, want);
        f = mf_fid(&b, &a);
        CHECK_MSG(fabs(f - want) < 1e-6 * scale, "rotated, singular first: %.12g vs %.12g", f, want);
        mf_gauss_free(&a), mf_gauss_free(&b);
        free(q), free(ca), free(cb);
    }

    /* non-commuting covariances: against Denman-Beavers in this file */
    {
        const int dc = 10;
        double *ca = random_spd(dc, 16, 0.2), *cb = random_spd(dc, 17, 0.4);
        double sa[100], t1[100], m[100], sm[100];
        sqrtm_db(ca, dc, sa);
        matmul(sa, cb, dc, t1);
        matmul(t1, sa, dc, m);
        sqrtm_db(m, dc, sm);
        double want = 0.0;
        for (int i = 0; i < dc; i++) want += ca[i * dc + i] + cb[i * dc + i] - 2.0 * sm[i * dc + i];
        mf_gauss a = make_gauss(dc, NULL, ca), b = make_gauss(dc, NULL, cb);
        const double scale = trace(&a) + trace(&b);
        CHECK_MSG(fabs(mf_fid(&a, &b) - want) < 1e-8 * scale, "%.12g vs %.12g", mf_fid(&a, &b), want);
        CHECK_MSG(fabs(mf_fid(&b, &a) - want) < 1e-8 * scale, "%.12g vs %.12g", mf_fid(&b, &a), want);
        mf_gauss_free(&a), mf_gauss_free(&b);
        free(ca), free(cb);
    }

    /* rank-deficient covariance (fewer samples than dimensions): self FID still ~0 */
    {
        mf_gauss g5;
        CHECK(mf_gauss_fit(x, 5, d, &g5) == 0);
        f = mf_fid(&g5, &g5);
        CHECK_MSG(f >= 0 && f < 1e-6 * trace(&g5), "singular self FID %g (trace %g)", f, trace(&g5));
        mf_gauss_free(&g5);
    }

    /* errors */
    {
        mf_gauss small;
        CHECK(mf_gauss_fit(x, 10, 3, &small) == 0);
        CHECK(mf_fid(&gx, &small) == -1.0);
        CHECK_ERR_CONTAINS("dimensions differ (16 vs 3)");
        mf_gauss empty = {0};
        CHECK(mf_fid(&empty, &empty) == -1.0);
        CHECK_ERR_CONTAINS("empty");
        mf_gauss bad = make_gauss(d, gx.mu, gx.cov);
        bad.cov[5] = NAN;
        CHECK(mf_fid(&bad, &gx) == -1.0);
        CHECK_ERR_CONTAINS("not finite");
        CHECK(mf_fid(&gx, &bad) == -1.0);
        CHECK_ERR_CONTAINS("not finite");
        mf_gauss_free(&small), mf_gauss_free(&bad);
    }

    mf_gauss_free(&gx), mf_gauss_free(&gy), mf_gauss_free(&gx2), mf_gauss_free(&gs), mf_gauss_free(&gm);
    free(x), free(y), free(xs), free(mix);
}

/* ---- reference-statistics file ---------------------------------------------------------------- */

static uint8_t *slurp(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        perror(path);
        exit(2);
    }
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    rewind(fp);
    uint8_t *b = mf_xmalloc((size_t)n);
    if (fread(b, 1, (size_t)n, fp) != (size_t)n) exit(2);
    fclose(fp);
    *len = (size_t)n;
    return b;
}

static void spit(const char *path, const void *data, size_t len) {
    FILE *fp = fopen(path, "wb");
    if (!fp || fwrite(data, 1, len, fp) != len || fclose(fp) != 0) {
        perror(path);
        exit(2);
    }
}

static void test_gauss_file(void) {
    const char *dir = mf_test_tmpdir();
    char *path = mf_xasprintf("%s/ref.stats", dir), *bad = mf_xasprintf("%s/bad.stats", dir);
    const int n = 300, d = 12;
    float *x = randn((int64_t)n * d, 21);
    mf_gauss g, h;
    CHECK(mf_gauss_fit(x, n, d, &g) == 0);
    CHECK(mf_gauss_save(path, &g, "mnist-test/lenet_v1") == 0);
    CHECK(mf_gauss_load(path, "mnist-test/lenet_v1", &h) == 0);
    CHECK(h.d == d && h.n == n);
    CHECK(h.mu && memcmp(h.mu, g.mu, sizeof(double) * d) == 0);
    CHECK(h.cov && memcmp(h.cov, g.cov, sizeof(double) * d * d) == 0);
    CHECK(mf_fid(&g, &h) < 1e-9);
    mf_gauss_free(&h);

    /* another key */
    CHECK(mf_gauss_load(path, "mnist-train/lenet_v1", &h) == -1);
    CHECK_ERR_CONTAINS("'mnist-test/lenet_v1', not 'mnist-train/lenet_v1'");
    CHECK(h.mu == NULL && h.cov == NULL);
    CHECK(mf_gauss_load(path, "mnist-test/lenet_v", &h) == -1); /* prefix is not a match */
    CHECK_ERR_CONTAINS("not 'mnist-test/lenet_v'");

    size_t len;
    uint8_t *b = slurp(path, &len);
    CHECK(len == 28 + 19 + 8 * (size_t)(d + d * d) + 32);
    /* one flipped bit in the covariance */
    b[len / 2] ^= 0x10;
    spit(bad, b, len);
    CHECK(mf_gauss_load(bad, "mnist-test/lenet_v1", &h) == -1);
    CHECK_ERR_CONTAINS("checksum mismatch");
    b[len / 2] ^= 0x10;
    /* a flipped bit in the key is also caught by the checksum (before the key comparison) */
    b[30] ^= 0x01;
    spit(bad, b, len);
    CHECK(mf_gauss_load(bad, "mnist-test/lenet_v1", &h) == -1);
    CHECK_ERR_CONTAINS("checksum mismatch");
    b[30] ^= 0x01;
    /* truncated */
    spit(bad, b, len - 100);
    CHECK(mf_gauss_load(bad, "mnist-test/lenet_v1", &h) == -1);
    CHECK_ERR_CONTAINS("checksum mismatch");
    spit(bad, b, 20);
    CHECK(mf_gauss_load(bad, "mnist-test/lenet_v1", &h) == -1);
    CHECK_ERR_CONTAINS("too short");
    /* not ours */
    spit(bad, "hello, this is not a statistics file at all", 43);
    CHECK(mf_gauss_load(bad, "mnist-test/lenet_v1", &h) == -1);
    CHECK_ERR_CONTAINS("bad magic");
    /* intact copy still loads */
    spit(bad, b, len);
    CHECK(mf_gauss_load(bad, "mnist-test/lenet_v1", &h) == 0);
    mf_gauss_free(&h);
    free(b);

    char *missing = mf_xasprintf("%s/nope.stats", dir);
    CHECK(mf_gauss_load(missing, "k", &h) == -1);
    CHECK_ERR_CONTAINS("cannot open");
    CHECK(mf_gauss_save(path, &g, "") == -1);
    CHECK_ERR_CONTAINS("empty");
    char *dirpath = mf_xasprintf("%s/no/such/dir/x.stats", dir);
    CHECK(mf_gauss_save(dirpath, &g, "k") == -1);

    remove(path), remove(bad);
    rmdir(dir);
    mf_gauss_free(&g);
    free(x), free(path), free(bad), free(missing), free(dirpath);
}

/* ---- precision / recall ---------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double d2_direct(const float *a, const float *b, int d) {
    double s = 0.0;
    for (int j = 0; j < d; j++) s += ((double)a[j] - b[j]) * ((double)a[j] - b[j]);
    return s;
}

/* r2[q * n + i] = squared distance of row i to its ks[q]-th nearest other row (sorting each row). */
static void radii_brute(const float *x, int n, int d, const int *ks, int nk, double *r2) {
    double *row = mf_xmalloc(sizeof(double) * (size_t)n);
    for (int i = 0; i < n; i++) {
        int m = 0;
        for (int j = 0; j < n; j++)
            if (j != i) row[m++] = d2_direct(x + (size_t)i * d, x + (size_t)j * d, d);
        qsort(row, (size_t)m, sizeof(double), cmp_double);
        for (int q = 0; q < nk; q++) r2[(size_t)q * n + i] = row[ks[q] - 1];
    }
    free(row);
}

/* Integer coordinates in [0, m): many duplicate points and exactly tied distances. */
static float *grid_points(int n, int d, int m, uint64_t seed, float offset) {
    float *u = mf_xmalloc(sizeof(float) * (size_t)n * d);
    mf_rng_uniform(seed, 99, 1, u, (int64_t)n * d);
    for (int i = 0; i < n * d; i++) u[i] = (float)(int)(u[i] * m) + offset;
    return u;
}

/* For each ks[q]: the library against the definition (exact <=, no tolerance: integer data have
 * exact distances, random data no near-ties). */
static void check_pr_brute(const char *what, const float *r, int nr, const float *f, int nf, int d,
                           const int *ks, int nk) {
    double *rr = mf_xmalloc(sizeof(double) * (size_t)nr * nk), *rf = mf_xmalloc(sizeof(double) * (size_t)nf * nk);
    double *dd = mf_xmalloc(sizeof(double) * (size_t)nr * nf);
    radii_brute(r, nr, d, ks, nk, rr);
    radii_brute(f, nf, d, ks, nk, rf);
    for (int i = 0; i < nr; i++)
        for (int j = 0; j < nf; j++) dd[(size_t)i * nf + j] = d2_direct(r + (size_t)i * d, f + (size_t)j * d, d);
    for (int q = 0; q < nk; q++) {
        int np = 0, nrc = 0;
        for (int j = 0; j < nf; j++) {
            int in = 0;
            for (int i = 0; i < nr && !in; i++) in = dd[(size_t)i * nf + j] <= rr[(size_t)q * nr + i];
            np += in;
        }
        for (int i = 0; i < nr; i++) {
            int in = 0;
            for (int j = 0; j < nf && !in; j++) in = dd[(size_t)i * nf + j] <= rf[(size_t)q * nf + j];
            nrc += in;
        }
        const double pb = (double)np / nf, rb = (double)nrc / nr;
        double p = -5, rc = -5;
        CHECK_MSG(mf_precision_recall(r, nr, f, nf, d, ks[q], &p, &rc) == 0, "%s: %s", what, mf_last_error());
        CHECK_MSG(p == pb && rc == rb, "%s k=%d: precision %.6f vs %.6f, recall %.6f vs %.6f", what, ks[q],
                  p, pb, rc, rb);
    }
    free(rr), free(rf), free(dd);
}

static void test_precision_recall(void) {
    double p, r;
    /* identical sets */
    {
        const int n = 500, d = 8;
        float *x = randn((int64_t)n * d, 31);
        CHECK(mf_precision_recall(x, n, x, n, d, 3, &p, &r) == 0);
        CHECK(p == 1.0 && r == 1.0);
        CHECK(mf_precision_recall(x, n, x, n, d, 1, &p, &r) == 0);
        CHECK(p == 1.0 && r == 1.0);
        /* far apart */
        float *y = randn((int64_t)n * d, 32);
        for (int i = 0; i < n * d; i++) y[i] += 100.0f;
        CHECK(mf_precision_recall(x, n, y, n, d, 3, &p, &r) == 0);
        CHECK(p == 0.0 && r == 0.0);
        free(x), free(y);
    }
    /* set (real) vs a subset of it (fake) */
    {
        const int n = 1000, m = 200, d = 8;
        float *x = randn((int64_t)n * d, 33);
        CHECK(mf_precision_recall(x, n, x, m, d, 3, &p, &r) == 0);
        printf("precision/recall, set vs 20%% subset: %.4f / %.4f\n", p, r);
        CHECK(p == 1.0);
        CHECK(r < 1.0 && r > 0.0);
        /* and the other way around: recall 1 */
        CHECK(mf_precision_recall(x, m, x, n, d, 3, &p, &r) == 0);
        CHECK(r == 1.0 && p < 1.0);
        free(x);
    }
    /* ties and duplicates on an integer grid, against brute force; d = 1, 2; small and large k */
    {
        float *a = grid_points(200, 2, 10, 41, 0.0f), *b = grid_points(150, 2, 12, 42, 0.0f);
        const int ks[4] = {1, 3, 40, 149};
        check_pr_brute("grid d=2", a, 200, b, 150, 2, ks, 4);
        /* a large common offset changes nothing (centring) */
        float *ao = grid_points(200, 2, 10, 41, 10000.0f), *bo = grid_points(150, 2, 12, 42, 10000.0f);
        double p0, r0;
        CHECK(mf_precision_recall(a, 200, b, 150, 2, 3, &p0, &r0) == 0);
        CHECK(mf_precision_recall(ao, 200, bo, 150, 2, 3, &p, &r) == 0);
        CHECK(p == p0 && r == r0);
        free(a), free(b), free(ao), free(bo);
        float *c = grid_points(300, 1, 40, 43, 0.0f), *e = grid_points(250, 1, 50, 44, 0.0f);
        check_pr_brute("grid d=1", c, 300, e, 250, 1, ks, 3);
        free(c), free(e);
    }
    /* several row tiles, random data */
    {
        const int nr = 1500, nf = 1100, d = 4, kb[2] = {5, 50};
        float *a = randn((int64_t)nr * d, 45), *b = randn((int64_t)nf * d, 46);
        for (int i = 0; i < nf * d; i++) b[i] = 1.2f * b[i] + 0.3f;
        check_pr_brute("tiles", a, nr, b, nf, d, kb, 2);
        free(a), free(b);
    }
    /* errors */
    {
        float *x = randn(40, 47);
        CHECK(mf_precision_recall(x, 10, x, 10, 4, 0, &p, &r) == -1);
        CHECK_ERR_CONTAINS("k=0");
        CHECK(mf_precision_recall(x, 10, x, 5, 4, 5, &p, &r) == -1);
        CHECK_ERR_CONTAINS("1 <= k < min");
        CHECK(p == -1.0 && r == -1.0);
        CHECK(mf_precision_recall(x, 10, x, 10, 0, 3, &p, &r) == -1);
        CHECK(mf_precision_recall(x, 1, x, 10, 4, 3, &p, &r) == -1);
        x[13] = INFINITY;
        CHECK(mf_precision_recall(x, 10, x, 10, 4, 3, &p, &r) == -1);
        CHECK_ERR_CONTAINS("real features: row 3 column 1 is not finite");
        free(x);
    }
}

/* ---- nearest ---------------------------------------------------------------------------------- */

static void test_nearest(void) {
    const int nq = 600, nr = 5000, d = 3;
    float *q = randn((int64_t)nq * d, 51), *ref = randn((int64_t)nr * d, 52);
    for (int i = 0; i < nr * d; i++) ref[i] = ref[i] * 2.0f + 50.0f;
    for (int i = 0; i < nq * d; i++) q[i] = q[i] * 2.0f + 50.0f;
    /* some queries are exact copies of reference rows; reference row 4321 duplicates row 17 */
    for (int j = 0; j < d; j++) {
        ref[4321 * d + j] = ref[17 * d + j];
        q[5 * d + j] = ref[17 * d + j];
        q[599 * d + j] = ref[4999 * d + j];
        q[300 * d + j] = ref[2048 * d + j];
    }
    int64_t *idx = mf_xmalloc(sizeof(int64_t) * nq);
    double *dist = mf_xmalloc(sizeof(double) * nq);
    CHECK(mf_nearest(q, nq, ref, nr, d, idx, dist) == 0);
    int bad_idx = 0, bad_dist = 0;
    for (int i = 0; i < nq; i++) {
        double best = INFINITY;
        int64_t bi = -1;
        for (int j = 0; j < nr; j++) {
            const double e = d2_direct(q + (size_t)i * d, ref + (size_t)j * d, d);
            if (e < best) best = e, bi = j;
        }
        bad_idx += idx[i] != bi;
        bad_dist += fabs(dist[i] - sqrt(best)) > 1e-12 * (1 + sqrt(best));
    }
    CHECK_MSG(bad_idx == 0, "%d wrong indices", bad_idx);
    CHECK_MSG(bad_dist == 0, "%d wrong distances", bad_dist);
    CHECK(idx[5] == 17 && dist[5] == 0.0); /* the lowest of two identical rows */
    CHECK(idx[599] == 4999 && dist[599] == 0.0);
    CHECK(idx[300] == 2048 && dist[300] == 0.0);
    /* dist optional, nq = 0 fine */
    int64_t idx2[10];
    CHECK(mf_nearest(q, 10, ref, nr, d, idx2, NULL) == 0);
    CHECK(memcmp(idx2, idx, sizeof idx2) == 0);
    CHECK(mf_nearest(q, 0, ref, nr, d, idx2, NULL) == 0);
    /* d = 1, one reference row */
    {
        const float qq[3] = {-1.0f, 0.5f, 7.0f}, rr[1] = {2.0f};
        double dd[3];
        CHECK(mf_nearest(qq, 3, rr, 1, 1, idx2, dd) == 0);
        CHECK(idx2[0] == 0 && idx2[1] == 0 && idx2[2] == 0);
        CHECK(dd[0] == 3.0 && dd[1] == 1.5 && dd[2] == 5.0);
    }
    CHECK(mf_nearest(q, nq, ref, 0, d, idx, dist) == -1);
    CHECK(mf_nearest(q, nq, ref, nr, 0, idx, dist) == -1);
    q[7] = NAN;
    CHECK(mf_nearest(q, nq, ref, nr, d, idx, dist) == -1);
    CHECK_ERR_CONTAINS("queries: row 2 column 1 is not finite");
    free(q), free(ref), free(idx), free(dist);
}

/* ---- classifier scores and softmax ------------------------------------------------------------ */

static void test_classifier(void) {
    const int c = 10, n = 200;
    float *p = mf_xmalloc(sizeof(float) * n * c);
    int32_t *lab = mf_xmalloc(sizeof(int32_t) * n);
    mf_cls_scores s;

    /* uniform probabilities: IS 1, confidence 1/c, argmax always class 0 (ties: lowest) */
    for (int i = 0; i < n * c; i++) p[i] = 0.1f;
    CHECK(mf_classifier_scores(p, n, c, NULL, &s) == 0);
    CHECK_NEAR(s.is, 1.0, 1e-6);
    CHECK_NEAR(s.mean_max_conf, 0.1, 1e-6);
    CHECK(s.hist[0] == n && s.hist[1] == 0);
    CHECK_NEAR(s.hist_entropy_norm, 0.0, 1e-15);
    CHECK(s.label_acc == -1.0);
    for (int i = 0; i < n; i++) lab[i] = 0;
    CHECK(mf_classifier_scores(p, n, c, lab, &s) == 0);
    CHECK(s.label_acc == 1.0);

    /* one-hot, balanced: IS = c, confidence 1, entropy 1 */
    memset(p, 0, sizeof(float) * n * c);
    for (int i = 0; i < n; i++) p[i * c + i % c] = 1.0f, lab[i] = i % c;
    CHECK(mf_classifier_scores(p, n, c, lab, &s) == 0);
    CHECK_NEAR(s.is, (double)c, 1e-9);
    CHECK_NEAR(s.mean_max_conf, 1.0, 0.0);
    CHECK_NEAR(s.hist_entropy_norm, 1.0, 1e-12);
    int balanced = 1;
    for (int j = 0; j < c; j++) balanced &= s.hist[j] == n / c;
    for (int j = c; j < MF_CLS_MAX_CLASSES; j++) balanced &= s.hist[j] == 0;
    CHECK(balanced);
    CHECK(s.label_acc == 1.0);
    for (int i = 0; i < n; i++) lab[i] = (i + 1) % c;
    CHECK(mf_classifier_scores(p, n, c, lab, &s) == 0);
    CHECK(s.label_acc == 0.0);
    /* one-hot, all one class: IS 1, entropy 0 */
    memset(p, 0, sizeof(float) * n * c);
    for (int i = 0; i < n; i++) p[i * c + 3] = 1.0f;
    CHECK(mf_classifier_scores(p, n, c, NULL, &s) == 0);
    CHECK_NEAR(s.is, 1.0, 1e-12);
    CHECK(s.hist[3] == n);
    CHECK_NEAR(s.hist_entropy_norm, 0.0, 1e-15);

    /* by hand: two classes, rows (0.9, 0.1) and (0.2, 0.8) */
    {
        const float q[4] = {0.9f, 0.1f, 0.2f, 0.8f};
        const int32_t l[2] = {0, 0};
        const double a = 0.9f, b = 0.1f, e = 0.2f, f = 0.8f, m0 = (a + e) / 2, m1 = (b + f) / 2;
        const double kl = (a * log(a / m0) + b * log(b / m1) + e * log(e / m0) + f * log(f / m1)) / 2;
        CHECK(mf_classifier_scores(q, 2, 2, l, &s) == 0);
        CHECK_NEAR(s.is, exp(kl), 1e-12);
        CHECK_NEAR(s.mean_max_conf, (a + f) / 2, 1e-12);
        CHECK(s.hist[0] == 1 && s.hist[1] == 1);
        CHECK_NEAR(s.hist_entropy_norm, 1.0, 1e-12);
        CHECK(s.label_acc == 0.5);
    }

    /* errors */
    memset(p, 0, sizeof(float) * n * c);
    for (int i = 0; i < n; i++) p[i * c] = 1.0f, lab[i] = 0;
    p[5 * c + 1] = 0.5f;
    CHECK(mf_classifier_scores(p, n, c, NULL, &s) == -1);
    CHECK_ERR_CONTAINS("row 5 sums to 1.5");
    p[5 * c + 1] = -0.01f;
    CHECK(mf_classifier_scores(p, n, c, NULL, &s) == -1);
    CHECK_ERR_CONTAINS("[5][1]");
    p[5 * c + 1] = 0.0f;
    lab[9] = 10;
    CHECK(mf_classifier_scores(p, n, c, lab, &s) == -1);
    CHECK_ERR_CONTAINS("label 10 of sample 9");
    CHECK(mf_classifier_scores(p, n, 1, NULL, &s) == -1);
    CHECK(mf_classifier_scores(p, 2, 65, NULL, &s) == -1);
    CHECK(mf_classifier_scores(p, 0, c, NULL, &s) == -1);
    free(p), free(lab);
}

static void test_softmax(void) {
    const float x[12] = {0.0f, 1.0f, 2.0f, 1000.0f, 1001.0f, 999.0f, -1000.0f, -1000.0f, -1000.0f, 3.0f, -INFINITY, 3.0f};
    float y[12];
    mf_softmax_rows(x, 4, 3, y);
    int ok = 1;
    for (int i = 0; i < 4; i++) {
        double s = 0.0;
        for (int j = 0; j < 3; j++) {
            ok &= isfinite(y[i * 3 + j]) && y[i * 3 + j] >= 0.0f;
            s += y[i * 3 + j];
        }
        ok &= fabs(s - 1.0) < 1e-6;
    }
    CHECK(ok);
    const double z = 1 + exp(1.0) + exp(2.0);
    CHECK_NEAR(y[0], 1 / z, 1e-7);
    CHECK_NEAR(y[2], exp(2.0) / z, 1e-7);
    CHECK_NEAR(y[3], exp(1.0) / z, 1e-7); /* shift invariance at large logits */
    CHECK_NEAR(y[4], exp(2.0) / z, 1e-7);
    CHECK_NEAR(y[6], 1.0 / 3.0, 1e-7);
    CHECK(y[10] == 0.0f);
    CHECK_NEAR(y[9], 0.5, 1e-7);
    /* in place, then feeds the classifier scores */
    float w[12];
    memcpy(w, x, sizeof w);
    mf_softmax_rows(w, 4, 3, w);
    CHECK(memcmp(w, y, sizeof w) == 0);
    mf_cls_scores s;
    CHECK(mf_classifier_scores(w, 4, 3, NULL, &s) == 0);
    CHECK(s.hist[2] == 1 && s.hist[1] == 1 && s.hist[0] == 2);
}

/* ---- timing --------------------------------------------------------------------------------- */

static void test_timing(const char *mode) {
    int n = BIG_N_DEFAULT;
    const char *env = getenv("MF_TEST_METRICS_BIG_N");
    if (env && atoi(env) >= 10) n = atoi(env);
    const int d = 128;
    float *a = randn((int64_t)n * d, 61), *b = randn((int64_t)n * d, 62);
    double p, r;
    double t0 = now_s();
    CHECK(mf_precision_recall(a, n, b, n, d, 3, &p, &r) == 0);
    const double t_pr = now_s() - t0;
    CHECK(p > 0.0 && p <= 1.0 && r > 0.0 && r <= 1.0);
    t0 = now_s();
    mf_gauss ga, gb;
    CHECK(mf_gauss_fit(a, n, d, &ga) == 0 && mf_gauss_fit(b, n, d, &gb) == 0);
    const double f = mf_fid(&ga, &gb);
    const double t_fid = now_s() - t0;
    int64_t *idx = mf_xmalloc(sizeof(int64_t) * (size_t)n);
    t0 = now_s();
    CHECK(mf_nearest(a, n, b, n, d, idx, NULL) == 0);
    const double t_nn = now_s() - t0;
    printf("timing, %s (n=%d x %d, d=%d): precision/recall k=3 %.2f s (p=%.4f r=%.4f); 2 fits + FID %.3f s "
           "(FID %.4f); nearest %.2f s\n",
           mode, n, n, d, t_pr, p, r, t_fid, f, t_nn);
    mf_gauss_free(&ga), mf_gauss_free(&gb);
    free(a), free(b), free(idx);
}

int main(void) {
    test_sqrtm();
    test_gauss_fit();
    test_fid();
    test_gauss_file();
    test_classifier();
    test_softmax();
    /* distance code: OpenBLAS as found (threaded dgemm, tiles in sequence), then single-threaded
     * OpenBLAS (tiles on OpenMP threads) */
    const int blas0 = blas_threads(0);
    printf("OpenBLAS threads: %d\n", blas0);
    test_precision_recall();
    test_nearest();
    test_timing(blas0 > 1 ? "threaded OpenBLAS" : "OpenBLAS as found");
    if (blas0 > 1) {
        blas_threads(1);
        test_precision_recall();
        test_nearest();
        test_timing("OpenMP tiles");
        blas_threads(blas0);
    }
    return mf_test_summary("test_metrics");
}
