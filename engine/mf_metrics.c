/* mf_metrics.c - Gaussian fits, the reference-statistics file, FID through symmetric eigen-
 * decompositions (LAPACK dsyevd), blocked exact k-NN precision/recall and nearest neighbours (dgemm
 * distance blocks, OpenMP over rows), and classifier scores. */
#include "mf_metrics.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "mf_error.h"
#include "mf_io.h"

/* LAPACK (Fortran symbol exported by libopenblas, LP64 integers). */
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
             double *work, const int *lwork, int *iwork, const int *liwork, int *info);

#define MET_TILE_BYTES ((size_t)4 << 20) /* one distance tile (per thread): stays in cache */
#define MET_MAX_TILE_ROWS 1024
#define MET_TOPK_INSERT 32   /* k up to this: streaming sorted insertion; above: quickselect */
#define MET_TIE_REL 1e-12    /* inclusive-tie tolerance, relative to the squared norms */

static int met_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
static int met_thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static void *met_alloc(size_t n, const char *what) {
    void *p = malloc(n ? n : 1);
    if (!p) mf_fail("out of memory (%zu bytes for %s)", n, what);
    return p;
}

static int check_finite(const float *x, int64_t n, int d, const char *what) {
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < d; j++)
            if (!isfinite(x[i * d + j]))
                return mf_fail("%s: row %lld column %d is not finite (%g)", what, (long long)i, j,
                               (double)x[i * d + j]);
    return 0;
}

/* ---- Gaussian statistics ---------------------------------------------------------------------- */

void mf_gauss_free(mf_gauss *g) {
    if (!g) return;
    free(g->mu);
    free(g->cov);
    memset(g, 0, sizeof *g);
}

int mf_gauss_fit(const float *feat, int64_t n, int d, mf_gauss *out) {
    MF_ASSERT(out);
    memset(out, 0, sizeof *out);
    if (d < 1) return mf_fail("Gaussian fit: feature dimension %d (must be >= 1)", d);
    if (n < 2) return mf_fail("Gaussian fit: %lld feature rows (need at least 2)", (long long)n);
    MF_ASSERT(feat);
    MF_TRY(check_finite(feat, n, d, "Gaussian fit"));
    const size_t dd = (size_t)d * (size_t)d;
    const int64_t rb = MET_MAX_TILE_ROWS;
    double *mu = met_alloc(sizeof(double) * (size_t)d, "the mean");
    double *cov = mu ? met_alloc(sizeof(double) * dd, "the covariance") : NULL;
    double *xc = cov ? met_alloc(sizeof(double) * (size_t)rb * (size_t)d, "a feature block") : NULL;
    if (!xc) {
        free(mu), free(cov);
        return -1;
    }
    for (int j = 0; j < d; j++) mu[j] = 0.0;
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < d; j++) mu[j] += feat[i * d + j];
    for (int j = 0; j < d; j++) mu[j] /= (double)n;
    memset(cov, 0, sizeof(double) * dd);
    for (int64_t i0 = 0; i0 < n; i0 += rb) {
        const int m = (int)(n - i0 < rb ? n - i0 : rb);
        for (int r = 0; r < m; r++)
            for (int j = 0; j < d; j++) xc[(size_t)r * d + j] = feat[(i0 + r) * d + j] - mu[j];
        /* upper triangle (row-major) of cov += xc^T xc */
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, m, 1.0, xc, d, 1.0, cov, d);
    }
    free(xc);
    const double s = 1.0 / (double)(n - 1);
    for (int i = 0; i < d; i++)
        for (int j = i; j < d; j++) {
            cov[(size_t)i * d + j] *= s;
            cov[(size_t)j * d + i] = cov[(size_t)i * d + j];
        }
    out->d = d;
    out->n = n;
    out->mu = mu;
    out->cov = cov;
    return 0;
}

/* ---- the reference-statistics file ------------------------------------------------------------ */

static const char k_gauss_magic[8] = {'M', 'F', 'G', 'A', 'U', 'S', 'S', 0};
#define GAUSS_VERSION 1u
#define GAUSS_FIXED_HDR (8 + 4 + 4 + 8 + 4) /* magic, version, d, n, key length */

int mf_gauss_save(const char *path, const mf_gauss *g, const char *key) {
    MF_ASSERT(path && g && key);
    const size_t klen = strlen(key);
    if (klen == 0) return mf_fail("%s: empty reference-statistics key", path);
    if (klen > MF_GAUSS_MAX_KEY)
        return mf_fail("%s: reference-statistics key is %zu bytes (at most %d)", path, klen,
                       MF_GAUSS_MAX_KEY);
    MF_ASSERT(g->d >= 1 && g->mu && g->cov);
    if (g->n < 2) return mf_fail("%s: statistics of %lld rows (need at least 2)", path, (long long)g->n);
    const size_t d = (size_t)g->d;
    const size_t total = GAUSS_FIXED_HDR + klen + sizeof(double) * (d + d * d) + 32;
    uint8_t *buf = met_alloc(total, "the reference-statistics file");
    if (!buf) return mf_error_prefix("%s: ", path);
    uint8_t *p = buf;
    const uint32_t version = GAUSS_VERSION, ud = (uint32_t)g->d, ukl = (uint32_t)klen;
    const int64_t n = g->n;
    memcpy(p, k_gauss_magic, 8), p += 8;
    memcpy(p, &version, 4), p += 4;
    memcpy(p, &ud, 4), p += 4;
    memcpy(p, &n, 8), p += 8;
    memcpy(p, &ukl, 4), p += 4;
    memcpy(p, key, klen), p += klen;
    memcpy(p, g->mu, sizeof(double) * d), p += sizeof(double) * d;
    memcpy(p, g->cov, sizeof(double) * d * d), p += sizeof(double) * d * d;
    MF_ASSERT((size_t)(p - buf) + 32 == total);
    mf_sha256_trailer_put(buf, (size_t)(p - buf));
    int rc = mf_write_file_atomic(path, buf, total);
    free(buf);
    return rc;
}

int mf_gauss_load(const char *path, const char *key, mf_gauss *out) {
    MF_ASSERT(path && key && out);
    memset(out, 0, sizeof *out);
    uint8_t *buf = NULL;
    size_t len = 0;
    int gz = 0;
    MF_TRY(mf_read_file(path, &buf, &len, &gz));
    int rc = -1;
    if (len < GAUSS_FIXED_HDR + 32 || memcmp(buf, k_gauss_magic, 8) != 0) {
        mf_fail("%s: not an mfpipe reference-statistics file (bad magic or too short: %zu bytes)",
                path, len);
        goto out;
    }
    if (!mf_sha256_trailer_ok(buf, len)) {
        mf_fail("%s: checksum mismatch (file truncated or corrupt; %zu bytes); delete it to recompute",
                path, len);
        goto out;
    }
    uint32_t version, ud, ukl;
    int64_t n;
    const uint8_t *p = buf + 8;
    memcpy(&version, p, 4), p += 4;
    memcpy(&ud, p, 4), p += 4;
    memcpy(&n, p, 8), p += 8;
    memcpy(&ukl, p, 4), p += 4;
    if (version != GAUSS_VERSION) {
        mf_fail("%s: reference-statistics format version %u (this build reads %u)", path, version,
                GAUSS_VERSION);
        goto out;
    }
    if (ud < 1 || ud > 65536 || ukl < 1 || ukl > MF_GAUSS_MAX_KEY || n < 2) {
        mf_fail("%s: bad header at byte offset 12 (d=%u, n=%lld, key length %u)", path, ud,
                (long long)n, ukl);
        goto out;
    }
    const size_t d = ud;
    const size_t want = GAUSS_FIXED_HDR + ukl + sizeof(double) * (d + d * d) + 32;
    if (len != want) {
        mf_fail("%s: %zu bytes, expected %zu for d=%u", path, len, want, ud);
        goto out;
    }
    if (strlen(key) != ukl || memcmp(p, key, ukl) != 0) {
        mf_fail("%s: reference statistics are for '%.*s', not '%s' (other data set or feature "
                "network; delete the file to recompute)",
                path, (int)ukl, (const char *)p, key);
        goto out;
    }
    p += ukl;
    double *mu = met_alloc(sizeof(double) * d, "the mean");
    double *cov = mu ? met_alloc(sizeof(double) * d * d, "the covariance") : NULL;
    if (!cov) {
        free(mu);
        mf_error_prefix("%s: ", path);
        goto out;
    }
    memcpy(mu, p, sizeof(double) * d), p += sizeof(double) * d;
    memcpy(cov, p, sizeof(double) * d * d);
    out->d = (int)ud;
    out->n = n;
    out->mu = mu;
    out->cov = cov;
    rc = 0;
out:
    free(buf);
    return rc;
}

/* ---- symmetric eigenproblems, sqrtm, FID ------------------------------------------------------ */

/* Eigenvalues (ascending, into w) and, when vectors, eigenvectors of the symmetric d x d matrix a
 * (overwritten: row i of a holds the eigenvector of w[i], since column-major columns are row-major
 * rows and a symmetric input reads the same either way). */
static int sym_eig(double *a, int d, int vectors, double *w) {
    const char jobz = vectors ? 'V' : 'N', uplo = 'L';
    int lwork = -1, liwork = -1, info = 0, iwq = 0;
    double wq = 0.0;
    dsyevd_(&jobz, &uplo, &d, a, &d, w, &wq, &lwork, &iwq, &liwork, &info);
    if (info != 0) return mf_fail("LAPACK dsyevd workspace query failed (info=%d, n=%d)", info, d);
    lwork = (int)wq + 1;
    liwork = iwq > 1 ? iwq : 1;
    double *work = met_alloc(sizeof(double) * (size_t)lwork, "the eigensolver");
    int *iwork = work ? met_alloc(sizeof(int) * (size_t)liwork, "the eigensolver") : NULL;
    if (!iwork) {
        free(work);
        return -1;
    }
    dsyevd_(&jobz, &uplo, &d, a, &d, w, work, &lwork, iwork, &liwork, &info);
    free(work);
    free(iwork);
    if (info != 0)
        return mf_fail("LAPACK dsyevd failed (info=%d, n=%d): eigendecomposition did not converge",
                       info, d);
    return 0;
}

static int all_finite(const double *a, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(a[i])) return 0;
    return 1;
}

int mf_sqrtm_sym(const double *a, int d, double *out) {
    MF_ASSERT(a && out && d >= 1);
    const size_t dd = (size_t)d * (size_t)d;
    if (!all_finite(a, dd)) return mf_fail("matrix square root: the %dx%d matrix is not finite", d, d);
    double *v = met_alloc(sizeof(double) * (dd + (size_t)d), "the matrix square root");
    if (!v) return -1;
    double *w = v + dd;
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) v[(size_t)i * d + j] = 0.5 * (a[(size_t)i * d + j] + a[(size_t)j * d + i]);
    if (sym_eig(v, d, 1, w) != 0) {
        free(v);
        return mf_error_prefix("matrix square root: ");
    }
    /* sqrtm = E^T diag(sqrt w) E with E's rows the eigenvectors; F = diag(w^1/4) E, out = F^T F */
    for (int i = 0; i < d; i++) {
        const double s = sqrt(sqrt(w[i] > 0.0 ? w[i] : 0.0));
        for (int j = 0; j < d; j++) v[(size_t)i * d + j] *= s;
    }
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, d, 1.0, v, d, 0.0, out, d);
    for (int i = 0; i < d; i++)
        for (int j = i + 1; j < d; j++) out[(size_t)j * d + i] = out[(size_t)i * d + j];
    free(v);
    return 0;
}

double mf_fid(const mf_gauss *a, const mf_gauss *b) {
    MF_ASSERT(a && b);
    if (a->d != b->d) {
        mf_fail("FID: feature dimensions differ (%d vs %d)", a->d, b->d);
        return -1.0;
    }
    const int d = a->d;
    if (d < 1 || !a->mu || !a->cov || !b->mu || !b->cov) {
        mf_fail("FID: empty Gaussian statistics (d=%d)", d);
        return -1.0;
    }
    const size_t dd = (size_t)d * (size_t)d;
    if (!all_finite(a->mu, (size_t)d) || !all_finite(b->mu, (size_t)d) || !all_finite(b->cov, dd)) {
        mf_fail("FID: the Gaussian statistics are not finite");
        return -1.0;
    }
    double *s = met_alloc(sizeof(double) * (3 * dd + (size_t)d), "FID");
    if (!s) return -1.0;
    double *t = s + dd, *m = t + dd, *w = m + dd;
    if (mf_sqrtm_sym(a->cov, d, s) != 0) {
        free(s);
        mf_error_prefix("FID: ");
        return -1.0;
    }
    /* M = S B S, symmetrised */
    cblas_dsymm(CblasRowMajor, CblasLeft, CblasUpper, d, d, 1.0, s, d, b->cov, d, 0.0, t, d);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d, d, d, 1.0, t, d, s, d, 0.0, m, d);
    for (int i = 0; i < d; i++)
        for (int j = i + 1; j < d; j++) {
            const double x = 0.5 * (m[(size_t)i * d + j] + m[(size_t)j * d + i]);
            m[(size_t)i * d + j] = m[(size_t)j * d + i] = x;
        }
    if (sym_eig(m, d, 0, w) != 0) {
        free(s);
        mf_error_prefix("FID: ");
        return -1.0;
    }
    double tr_sqrt = 0.0, tr_a = 0.0, tr_b = 0.0, diff = 0.0;
    for (int i = 0; i < d; i++) {
        tr_sqrt += sqrt(w[i] > 0.0 ? w[i] : 0.0);
        tr_a += a->cov[(size_t)i * d + i];
        tr_b += b->cov[(size_t)i * d + i];
        const double e = a->mu[i] - b->mu[i];
        diff += e * e;
    }
    free(s);
    const double fid = diff + tr_a + tr_b - 2.0 * tr_sqrt;
    return fid > 0.0 ? fid : 0.0;
}

/* ---- distances ------------------------------------------------------------------------------ */

/* Distances come in row tiles: D = -2 X_tile Y^T by dgemm, then |x|^2 + |y|^2 is added while the
 * tile is hot in cache. When OpenBLAS is single-threaded (mfpipe's CPU backend makes it so for the
 * whole process) the tiles run on OpenMP threads, one single-threaded dgemm each; otherwise the
 * tiles run one after the other on the calling thread and OpenBLAS parallelises each dgemm (never
 * both: nested thread pools only fight over the cores). */
static int tile_threads(void) {
    const int nt = met_threads();
    return nt > 1 && openblas_get_num_threads() == 1 ? nt : 1;
}

/* Rows per tile so that one tile of ncols doubles stays within MET_TILE_BYTES (at least one row). */
static int tile_rows(int64_t ncols) {
    int64_t r = (int64_t)(MET_TILE_BYTES / sizeof(double)) / (ncols > 0 ? ncols : 1);
    if (r > MET_MAX_TILE_ROWS) r = MET_MAX_TILE_ROWS;
    return r < 1 ? 1 : (int)r;
}

/* out (n x d) = x - center in double; sq[i] = |out_i|^2. */
static void centre_rows(const float *x, int64_t n, int d, const double *center, double *out,
                        double *sq) {
    for (int64_t i = 0; i < n; i++) {
        double s = 0.0;
        for (int j = 0; j < d; j++) {
            const double v = (double)x[i * d + j] - center[j];
            out[i * d + j] = v;
            s += v * v;
        }
        sq[i] = s;
    }
}

static void column_mean(const float *x, int64_t n, int d, double *mean) {
    for (int j = 0; j < d; j++) mean[j] = 0.0;
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < d; j++) mean[j] += x[i * d + j];
    for (int j = 0; j < d; j++) mean[j] /= (double)n;
}

/* k-th smallest (1-based) of v[0..n) by quickselect (median of three, Hoare partition: many equal
 * values do not degrade it). Reorders v. */
static double quickselect(double *v, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1;
    const int64_t kk = k - 1;
    while (hi > lo) {
        const int64_t mid = lo + (hi - lo) / 2;
        double t;
        if (v[mid] < v[lo]) t = v[mid], v[mid] = v[lo], v[lo] = t;
        if (v[hi] < v[lo]) t = v[hi], v[hi] = v[lo], v[lo] = t;
        if (v[hi] < v[mid]) t = v[hi], v[hi] = v[mid], v[mid] = t;
        const double pivot = v[mid];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot) i++;
            while (v[j] > pivot) j--;
            if (i <= j) {
                t = v[i], v[i] = v[j], v[j] = t;
                i++, j--;
            }
        }
        if (kk <= j) hi = j;
        else if (kk >= i) lo = i;
        else return v[kk];
    }
    return v[kk];
}

/* k-th smallest (1-based, k <= n) of v[0..n): sorted insertion for small k, else quickselect
 * (which reorders v). */
static double kth_smallest(double *v, int64_t n, int k) {
    if (k > MET_TOPK_INSERT) return quickselect(v, n, k);
    double best[MET_TOPK_INSERT];
    for (int q = 0; q < k; q++) best[q] = INFINITY;
    for (int64_t j = 0; j < n; j++) {
        const double x = v[j];
        if (!(x < best[k - 1])) continue;
        int q = k - 1;
        while (q > 0 && best[q - 1] > x) {
            best[q] = best[q - 1];
            q--;
        }
        best[q] = x;
    }
    return best[k - 1];
}

/* out[r, j] = max(0, |a_r|^2 + |b_j|^2 - 2 a_r . b_j): squared distances of m rows of a to nb rows of b
 * (squared norms sqa, sqb), one DGEMM; the clamp keeps rounding of an exact copy from going negative. */
static void sqdist_tile(const double *a, const double *sqa, int m, const double *b, const double *sqb, int64_t nb,
                        int d, double *out) {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, (int)nb, d, -2.0, a, d, b, d, 0.0, out, (int)nb);
    for (int r = 0; r < m; r++) {
        double *row = out + (size_t)r * (size_t)nb;
        const double si = sqa[r];
        for (int64_t j = 0; j < nb; j++) {
            const double v = row[j] + si + sqb[j];
            row[j] = v > 0.0 ? v : 0.0;
        }
    }
}

/* r2[i] = squared distance of row i of x (centred, squared norms sq) to its k-th nearest other row.
 * blk holds nt * tile_rows(n) * n doubles. */
static void knn_radii(const double *x, const double *sq, int64_t n, int d, int k, double *r2, int nt,
                      double *blk) {
    const int rt = tile_rows(n);
    const int64_t ntiles = (n + rt - 1) / rt;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1)
    for (int64_t t = 0; t < ntiles; t++) {
        const int tid = met_thread_id();
        MF_ASSERT(tid < nt);
        double *b = blk + (size_t)tid * (size_t)rt * (size_t)n;
        const int64_t i0 = t * rt;
        const int m = (int)(n - i0 < rt ? n - i0 : rt);
        sqdist_tile(x + i0 * d, sq + i0, m, x, sq, n, d, b);
        for (int r = 0; r < m; r++) {
            double *row = b + (size_t)r * (size_t)n;
            const int64_t i = i0 + r;
            row[i] = INFINITY; /* not its own neighbour; duplicates elsewhere still count */
            r2[i] = kth_smallest(row, n, k);
        }
    }
}

int mf_precision_recall(const float *real, int64_t nr, const float *fake, int64_t nf, int d, int k,
                        double *precision, double *recall) {
    MF_ASSERT(precision && recall);
    *precision = *recall = -1.0;
    if (d < 1) return mf_fail("precision/recall: feature dimension %d (must be >= 1)", d);
    if (nr < 2 || nf < 2 || nr > INT_MAX || nf > INT_MAX)
        return mf_fail("precision/recall: %lld real and %lld fake rows (each needs 2..%d)",
                       (long long)nr, (long long)nf, INT_MAX);
    if (k < 1 || k >= nr || k >= nf)
        return mf_fail("precision/recall: k=%d nearest neighbours needs 1 <= k < min(real %lld, fake "
                       "%lld)",
                       k, (long long)nr, (long long)nf);
    MF_ASSERT(real && fake);
    MF_TRY(check_finite(real, nr, d, "precision/recall: real features"));
    MF_TRY(check_finite(fake, nf, d, "precision/recall: fake features"));

    const int nt = tile_threads();
    /* rows-per-tile x columns is not monotone in the columns: size for both sets */
    const size_t blk_r = (size_t)tile_rows(nr) * (size_t)nr, blk_f = (size_t)tile_rows(nf) * (size_t)nf;
    const size_t blk_n = (blk_r > blk_f ? blk_r : blk_f) * (size_t)nt;
    double *center = met_alloc(sizeof(double) * (size_t)d, "precision/recall");
    double *xr = met_alloc(sizeof(double) * (size_t)nr * (size_t)d, "the real features");
    double *xf = met_alloc(sizeof(double) * (size_t)nf * (size_t)d, "the fake features");
    double *aux = met_alloc(sizeof(double) * (size_t)(2 * nr + 2 * nf), "precision/recall");
    double *blk = met_alloc(sizeof(double) * blk_n, "distance tiles");
    uint8_t *fcov = met_alloc((size_t)nt * (size_t)nf, "precision/recall");
    uint8_t *rcov = met_alloc((size_t)nr, "precision/recall");
    int rc = -1;
    if (!center || !xr || !xf || !aux || !blk || !fcov || !rcov) goto out;
    double *sqr = aux, *sqf = aux + nr, *r2r = aux + nr + nf, *r2f = aux + 2 * nr + nf;

    /* centre both sets on the real mean: distances are unchanged, cancellation is smaller */
    column_mean(real, nr, d, center);
    centre_rows(real, nr, d, center, xr, sqr);
    centre_rows(fake, nf, d, center, xf, sqf);
    knn_radii(xr, sqr, nr, d, k, r2r, nt, blk);
    knn_radii(xf, sqf, nf, d, k, r2f, nt, blk);

    /* real x fake tiles: a fake point inside a real ball counts for precision, a real point inside
     * a fake ball for recall. fcov is per thread, so that no two threads write one byte. */
    memset(fcov, 0, (size_t)nt * (size_t)nf);
    const int rt = tile_rows(nf);
    const int64_t ntiles = (nr + rt - 1) / rt;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1)
    for (int64_t t = 0; t < ntiles; t++) {
        const int tid = met_thread_id();
        MF_ASSERT(tid < nt);
        double *b = blk + (size_t)tid * (size_t)rt * (size_t)nf;
        uint8_t *fc = fcov + (size_t)tid * (size_t)nf;
        const int64_t i0 = t * rt;
        const int m = (int)(nr - i0 < rt ? nr - i0 : rt);
        sqdist_tile(xr + i0 * d, sqr + i0, m, xf, sqf, nf, d, b);
        for (int r = 0; r < m; r++) {
            const double *row = b + (size_t)r * (size_t)nf;
            const int64_t i = i0 + r;
            const double si = sqr[i], ri = r2r[i];
            int covered = 0;
            for (int64_t j = 0; j < nf; j++) {
                const double d2 = row[j];
                const double tol = MET_TIE_REL * (si + sqf[j]);
                if (d2 <= ri + tol) fc[j] = 1;
                if (d2 <= r2f[j] + tol) covered = 1;
            }
            rcov[i] = (uint8_t)covered;
        }
    }
    int64_t np = 0, nrc = 0;
    for (int64_t j = 0; j < nf; j++) {
        int any = 0;
        for (int t = 0; t < nt && !any; t++) any = fcov[(size_t)t * (size_t)nf + j];
        np += any;
    }
    for (int64_t i = 0; i < nr; i++) nrc += rcov[i];
    *precision = (double)np / (double)nf;
    *recall = (double)nrc / (double)nr;
    rc = 0;
out:
    free(center), free(xr), free(xf), free(aux), free(blk), free(fcov), free(rcov);
    return rc;
}

int mf_nearest(const float *query, int64_t nq, const float *ref, int64_t nr, int d, int64_t *idx,
               double *dist) {
    if (d < 1) return mf_fail("nearest neighbour: dimension %d (must be >= 1)", d);
    if (nr < 1 || nr > INT_MAX || nq < 0)
        return mf_fail("nearest neighbour: %lld queries, %lld reference rows (need 1..%d)",
                       (long long)nq, (long long)nr, INT_MAX);
    if (nq == 0) return 0;
    MF_ASSERT(query && ref && idx);
    MF_TRY(check_finite(query, nq, d, "nearest neighbour: queries"));
    MF_TRY(check_finite(ref, nr, d, "nearest neighbour: reference"));

    /* tiles of qt queries x rc references; per thread: the two centred blocks, their norms, the
     * distance tile and the running minimum */
    const int nt = tile_threads();
    const int qt = 256;
    int64_t rcl = (int64_t)(MET_TILE_BYTES / sizeof(double)) / d;
    rcl = rcl > 2048 ? 2048 : rcl < 64 ? 64 : rcl;
    const int rc_ = (int)(nr < rcl ? nr : rcl);
    const size_t per = (size_t)qt * (size_t)d + (size_t)rc_ * (size_t)d + 3 * (size_t)qt +
                       (size_t)rc_ + (size_t)qt * (size_t)rc_;
    double *center = met_alloc(sizeof(double) * (size_t)d, "nearest neighbour");
    double *work = met_alloc(sizeof(double) * per * (size_t)nt, "nearest-neighbour tiles");
    int rc = -1;
    if (!center || !work) goto out;

    column_mean(ref, nr, d, center);
    const int64_t ntiles = (nq + qt - 1) / qt;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1)
    for (int64_t t = 0; t < ntiles; t++) {
        const int tid = met_thread_id();
        MF_ASSERT(tid < nt);
        double *xq = work + (size_t)tid * per, *xr = xq + (size_t)qt * d, *sqq = xr + (size_t)rc_ * d;
        double *best = sqq + qt, *sqr = best + qt, *b = sqr + rc_;
        const int64_t q0 = t * qt;
        const int m = (int)(nq - q0 < qt ? nq - q0 : qt);
        centre_rows(query + q0 * d, m, d, center, xq, sqq);
        for (int r = 0; r < m; r++) best[r] = INFINITY, idx[q0 + r] = 0;
        for (int64_t j0 = 0; j0 < nr; j0 += rc_) {
            const int nc = (int)(nr - j0 < rc_ ? nr - j0 : rc_);
            centre_rows(ref + j0 * d, nc, d, center, xr, sqr);
            sqdist_tile(xq, sqq, m, xr, sqr, nc, d, b); /* clamped: an exact copy's rounding must not beat a tie */
            for (int r = 0; r < m; r++) {
                const double *row = b + (size_t)r * (size_t)nc;
                double bd = best[r];
                int64_t bi = idx[q0 + r];
                for (int c = 0; c < nc; c++) {
                    const double d2 = row[c];
                    if (d2 < bd) bd = d2, bi = j0 + c; /* strict: the lowest index wins ties */
                }
                best[r] = bd;
                idx[q0 + r] = bi;
            }
        }
        if (dist)
            for (int r = 0; r < m; r++) {
                const float *qa = query + (q0 + r) * d, *ra = ref + idx[q0 + r] * d;
                double s = 0.0;
                for (int j = 0; j < d; j++) {
                    const double e = (double)qa[j] - (double)ra[j];
                    s += e * e;
                }
                dist[q0 + r] = sqrt(s);
            }
    }
    rc = 0;
out:
    free(center), free(work);
    return rc;
}

/* ---- classifier scores ------------------------------------------------------------------------ */

int mf_classifier_scores(const float *probs, int64_t n, int c, const int32_t *labels,
                         mf_cls_scores *out) {
    MF_ASSERT(out);
    memset(out, 0, sizeof *out);
    out->label_acc = -1.0;
    if (n < 1) return mf_fail("classifier scores: %lld samples (need at least 1)", (long long)n);
    if (c < 2 || c > MF_CLS_MAX_CLASSES)
        return mf_fail("classifier scores: %d classes (must be 2..%d)", c, MF_CLS_MAX_CLASSES);
    MF_ASSERT(probs);
    double pm[MF_CLS_MAX_CLASSES] = {0};
    double sum_max = 0.0;
    int64_t correct = 0;
    for (int64_t i = 0; i < n; i++) {
        const float *p = probs + i * c;
        double s = 0.0;
        int am = 0;
        for (int j = 0; j < c; j++) {
            if (!isfinite(p[j]) || p[j] < 0.0f)
                return mf_fail("classifier scores: probability [%lld][%d] = %g is not in [0, 1]",
                               (long long)i, j, (double)p[j]);
            s += p[j];
            pm[j] += p[j];
            if (p[j] > p[am]) am = j;
        }
        if (fabs(s - 1.0) > 1e-3)
            return mf_fail("classifier scores: row %lld sums to %g, not 1 (probabilities expected; "
                           "apply softmax to logits)",
                           (long long)i, s);
        sum_max += p[am];
        out->hist[am]++;
        if (labels) {
            if (labels[i] < 0 || labels[i] >= c)
                return mf_fail("classifier scores: label %d of sample %lld is outside [0, %d)",
                               (int)labels[i], (long long)i, c);
            correct += labels[i] == am;
        }
    }
    double logpm[MF_CLS_MAX_CLASSES];
    for (int j = 0; j < c; j++) {
        pm[j] /= (double)n;
        logpm[j] = pm[j] > 0.0 ? log(pm[j]) : 0.0;
    }
    double kl = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float *p = probs + i * c;
        for (int j = 0; j < c; j++)
            if (p[j] > 0.0f) kl += (double)p[j] * (log((double)p[j]) - logpm[j]); /* pm_j >= p_j/n > 0 */
    }
    out->is = exp(kl / (double)n);
    out->mean_max_conf = sum_max / (double)n;
    double h = 0.0;
    for (int j = 0; j < c; j++)
        if (out->hist[j] > 0) {
            const double q = (double)out->hist[j] / (double)n;
            h -= q * log(q);
        }
    out->hist_entropy_norm = h / log((double)c);
    out->label_acc = labels ? (double)correct / (double)n : -1.0;
    return 0;
}

void mf_softmax_rows(const float *logits, int64_t n, int c, float *probs) {
    MF_ASSERT(n >= 0 && c >= 1);
    if (n == 0) return;
    MF_ASSERT(logits && probs);
    for (int64_t i = 0; i < n; i++) {
        const float *x = logits + i * c;
        float *y = probs + i * c;
        float mx = x[0];
        for (int j = 1; j < c; j++) mx = x[j] > mx ? x[j] : mx;
        double s = 0.0;
        for (int j = 0; j < c; j++) {
            const double e = exp((double)x[j] - (double)mx);
            y[j] = (float)e;
            s += e;
        }
        const double inv = 1.0 / s;
        for (int j = 0; j < c; j++) y[j] = (float)((double)y[j] * inv);
    }
}
