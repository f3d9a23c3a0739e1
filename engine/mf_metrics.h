/* mf_metrics.h - evaluation metrics on feature matrices (row-major n x d floats, double inside):
 * Gaussian statistics and FID, k-NN precision/recall (Kynkaenniemi et al. 2019), nearest neighbours
 * for memorisation checks, Inception-Score-like classifier scores. Host code (OpenBLAS, LAPACK). */
#ifndef MF_METRICS_H
#define MF_METRICS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Gaussian statistics and FID ------------------------------------------------------------- */

/* Mean (d) and covariance (d x d, row-major, unbiased: divided by n-1) of n feature rows. Owned by
 * the struct; release with mf_gauss_free. A zero-initialised struct is "empty". */
typedef struct mf_gauss {
    int d;
    int64_t n;   /* number of rows the statistics were computed from */
    double *mu;
    double *cov;
} mf_gauss;

/* Fit mean and covariance (two passes, double accumulation) of feat (n x d). Errors (-1, mf_fail):
 * n < 2, d < 1, a non-finite value (named by row and column), out of memory. *out is overwritten
 * (not freed) and left empty on error. */
int mf_gauss_fit(const float *feat, int64_t n, int d, mf_gauss *out);
/* Free mu/cov and zero the struct; NULL and empty structs are fine. */
void mf_gauss_free(mf_gauss *g);

/* Reference-statistics cache file. `key` identifies data set + feature network (e.g.
 * "mnist-test/lenet_v1"); it must be non-empty (at most MF_GAUSS_MAX_KEY bytes). Layout, host byte
 * order (little-endian in practice): "MFGAUSS\0", u32 version (1), u32 d, i64 n, u32 key length,
 * key bytes, mu (d doubles), cov (d*d doubles), SHA-256 of everything before it (32 bytes). Written
 * atomically (mf_write_file_atomic). */
#define MF_GAUSS_MAX_KEY 1024
int mf_gauss_save(const char *path, const mf_gauss *g, const char *key);
/* Load and verify magic, checksum, version, sizes, and that the stored key equals `key`: statistics
 * for another data set or feature network are an error (the message names both keys). *out is
 * overwritten (not freed) and left empty on error. */
int mf_gauss_load(const char *path, const char *key, mf_gauss *out);

/* Frechet distance ||mu_a - mu_b||^2 + tr(A) + tr(B) - 2 tr((A^1/2 B A^1/2)^1/2), via symmetric
 * eigendecompositions (LAPACK dsyevd; negative eigenvalues from rounding are clamped to 0). The
 * result is >= 0 (a rounding residue below 0 is returned as 0). Returns -1.0 after mf_fail on a
 * dimension mismatch, non-finite covariance, LAPACK failure or out of memory: test `fid < 0`. */
double mf_fid(const mf_gauss *a, const mf_gauss *b);

/* Principal square root of a symmetric positive semi-definite d x d matrix (row-major; the input is
 * symmetrised as (a + a^T)/2 first; negative eigenvalues are clamped to 0). out may equal a. The
 * result is exactly symmetric. Returns -1 after mf_fail on a non-finite input or LAPACK failure. */
int mf_sqrtm_sym(const double *a, int d, double *out);

/* ---- nearest neighbours ---------------------------------------------------------------------- */

/* Improved precision and recall (Kynkaenniemi et al. 2019) with k-NN manifolds, exact Euclidean
 * distances. The radius of a real point is the distance to its k-th nearest *other* real point
 * (duplicates count as neighbours at distance 0); precision = fraction of fake points within
 * (<=) the radius of at least one real point; recall = fraction of real points within the radius
 * (k-NN among fakes) of at least one fake point. Ties are inclusive, with a relative tolerance of
 * 1e-12 of the squared norms (after centring) so that exact copies and exact ties are not lost to
 * rounding. Needs 1 <= k < min(nr, nf), d >= 1, finite inputs, nr and nf <= INT_MAX; errors are -1
 * after mf_fail. Distances are |a|^2 + |b|^2 - 2ab in double on data centred on the real mean, in
 * row tiles of ~4 MB (dgemm, then k-th smallest by sorted insertion for k <= 32, else quickselect).
 * Tiles run on OpenMP threads when OpenBLAS is single-threaded (as mfpipe's CPU backend sets it),
 * else in sequence with OpenBLAS threading each dgemm. Memory: a double copy of both sets plus one
 * tile per thread. Cost: three n x n x d products; 10k x 10k x 128 takes about 2 CPU-seconds. */
int mf_precision_recall(const float *real, int64_t nr, const float *fake, int64_t nf, int d, int k,
                        double *precision, double *recall);

/* For each query row, the index of the nearest reference row (ties: the lowest index) and, when
 * dist != NULL, its Euclidean distance recomputed directly in double (an exact copy gives 0). nq
 * may be 0; needs nr >= 1 (<= INT_MAX), d >= 1, finite inputs. Tiled over queries and references
 * like mf_precision_recall (threads likewise), so memory stays bounded (< 8 MB per thread) whatever
 * nq, nr, d. Cost 2 nq nr d flops in double. Errors: -1 after mf_fail. */
int mf_nearest(const float *query, int64_t nq, const float *ref, int64_t nr, int d, int64_t *idx,
               double *dist);

/* ---- classifier scores ----------------------------------------------------------------------- */

#define MF_CLS_MAX_CLASSES 64

typedef struct mf_cls_scores {
    double is;                /* exp(mean_i KL(p_i || p_mean)), natural logs, 0 log 0 = 0; 1..c */
    double mean_max_conf;     /* mean_i max_j p_ij */
    double hist_entropy_norm; /* entropy of the argmax histogram / log(c); in [0, 1] */
    int64_t hist[MF_CLS_MAX_CLASSES]; /* argmax counts (ties: lowest class); entries >= c are 0 */
    double label_acc;         /* fraction with argmax == labels[i], or -1 when labels == NULL */
} mf_cls_scores;

/* Scores from class probabilities probs (n x c, rows summing to 1). Errors (-1, mf_fail; *out is
 * then unspecified): n < 1, c < 2 or c > MF_CLS_MAX_CLASSES, a negative or non-finite probability,
 * a row whose sum is off 1 by more than 1e-3 (logits passed by mistake: use mf_softmax_rows), a
 * label outside [0, c). */
int mf_classifier_scores(const float *probs, int64_t n, int c, const int32_t *labels,
                         mf_cls_scores *out);

/* Row-wise softmax of logits (n x c) into probs (may alias logits): max-subtracted, sums in double.
 * Entries must be finite or -inf (which gives 0), with at least one finite entry per row. */
void mf_softmax_rows(const float *logits, int64_t n, int c, float *probs);

#ifdef __cplusplus
}
#endif
#endif
