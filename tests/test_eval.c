/* test_eval.c - the evaluation metrics with the committed feature network on real MNIST (skipped with
 * a note when data/mnist or models/lenet_mnist_v1.mfw is absent): FID of the test set against itself
 * is ~0, and FID grows monotonically as the test images are noised or blurred more. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mf_io.h"
#include "mf_lenet.h"
#include "mf_metrics.h"
#include "mf_rng.h"
#include "mf_test.h"

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static double fid_of(mf_featnet *fn, const float *x, int64_t n, const mf_gauss *ref) {
    float *feat = malloc(sizeof(float) * (size_t)n * MF_LENET_FEATURES);
    mf_featnet_run(fn, x, n, feat, NULL);
    mf_gauss g;
    CHECK(mf_gauss_fit(feat, n, MF_LENET_FEATURES, &g) == 0);
    double f = mf_fid(&g, ref);
    mf_gauss_free(&g);
    free(feat);
    return f;
}

int main(void) {
    const char *src = getenv("MFPIPE_SOURCE_DIR");
    char img[4096], weights[4096];
    snprintf(img, sizeof img, "%s/data/mnist/t10k-images-idx3-ubyte", src ? src : "..");
    snprintf(weights, sizeof weights, "%s/models/lenet_mnist_v1.mfw", src ? src : "..");
    if (!exists(img) || !exists(weights)) {
        printf("test_eval: skipped: needs %s and %s (scripts/fetch-data.sh fetches MNIST)\n", img, weights);
        return mf_test_summary("test_eval");
    }
    mf_idx idx;
    CHECK(mf_idx_read(img, NULL, &idx) == 0);
    const int64_t n = 2000, hw = 784;
    float *x = malloc(sizeof(float) * (size_t)(n * hw)), *y = malloc(sizeof(float) * (size_t)(n * hw));
    for (int64_t i = 0; i < n * hw; i++) x[i] = idx.data[i] / 127.5f - 1.0f;
    mf_idx_free(&idx);
    mf_backend *be = mf_cpu_backend_new(2);
    mf_featnet fn;
    CHECK(mf_featnet_init(&fn, be, weights, NULL, NULL, 500) == 0);
    float *feat = malloc(sizeof(float) * (size_t)n * MF_LENET_FEATURES);
    mf_featnet_run(&fn, x, n, feat, NULL);
    mf_gauss ref;
    CHECK(mf_gauss_fit(feat, n, MF_LENET_FEATURES, &ref) == 0);
    double self = fid_of(&fn, x, n, &ref);
    printf("FID(test, test) = %.3g\n", self);
    CHECK_MSG(fabs(self) < 1e-3, "self FID %g", self);

    /* Gaussian noise of growing std */
    float *noise = malloc(sizeof(float) * (size_t)(n * hw));
    mf_rng_normal(5, 77, 0, noise, n * hw);
    double prev = self;
    int mono = 1;
    for (int lvl = 1; lvl <= 4; lvl++) {
        float sd = 0.1f * (float)lvl;
        for (int64_t i = 0; i < n * hw; i++) {
            float v = x[i] + sd * noise[i];
            y[i] = v < -1 ? -1 : v > 1 ? 1 : v;
        }
        double f = fid_of(&fn, y, n, &ref);
        printf("noise std %.1f: FID %.3f\n", sd, f);
        if (!(f > prev)) mono = 0;
        prev = f;
    }
    CHECK_MSG(mono, "FID must grow with the noise level");
    /* box blur of growing radius */
    prev = self;
    mono = 1;
    for (int r = 1; r <= 3; r++) {
        for (int64_t i = 0; i < n; i++)
            for (int a = 0; a < 28; a++)
                for (int b = 0; b < 28; b++) {
                    double s = 0;
                    int cnt = 0;
                    for (int da = -r; da <= r; da++)
                        for (int db = -r; db <= r; db++) {
                            int aa = a + da, bb = b + db;
                            if (aa < 0 || aa >= 28 || bb < 0 || bb >= 28) continue;
                            s += x[i * hw + aa * 28 + bb];
                            cnt++;
                        }
                    y[i * hw + a * 28 + b] = (float)(s / cnt);
                }
        double f = fid_of(&fn, y, n, &ref);
        printf("blur radius %d: FID %.3f\n", r, f);
        if (!(f > prev)) mono = 0;
        prev = f;
    }
    CHECK_MSG(mono, "FID must grow with the blur radius");
    mf_gauss_free(&ref);
    mf_featnet_free(&fn);
    mf_backend_free(be);
    free(x), free(y), free(feat), free(noise);
    return mf_test_summary("test_eval");
}
