/* test_rng.c - Philox4x32-10 against the Random123 known-answer vectors, statistics and determinism
 * of the uniform / normal / permutation streams, and the dataset helpers built on them. */
#include <stdint.h>
#include <string.h>

#include "mf_dataset.h"
#include "mf_error.h"
#include "mf_rng.h"
#include "mf_test.h"

static void test_kat(void) {
    static const struct {
        uint32_t ctr[4], key[2], expect[4];
    } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
         {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
         {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (size_t t = 0; t < sizeof kat / sizeof kat[0]; t++) {
        uint32_t out[4];
        mf_philox4x32(kat[t].ctr, kat[t].key, out);
        for (int i = 0; i < 4; i++)
            CHECK_MSG(out[i] == kat[t].expect[i], "KAT %zu word %d: 0x%08x, expected 0x%08x", t, i,
                      out[i], kat[t].expect[i]);
    }
    /* the (seed, purpose, step, index) -> (key, counter) layout */
    uint64_t seed = 0x299f31d0a4093822ull, step = 0x0370734413198a2eull;
    uint32_t out[4];
    mf_rng_u32x4(seed, 0x85a308d3u, step, 0x243f6a88u, out);
    CHECK(out[0] == 0xd16cfe09 && out[1] == 0x94fdcceb && out[2] == 0x5001e420 && out[3] == 0x24126ea1);
}

static void test_uniform(void) {
    const int64_t n = 1000000;
    float *u = malloc(sizeof(float) * (size_t)n);
    mf_rng_uniform(42, MF_RNG_NOISE, 7, u, n);
    double s = 0, s2 = 0;
    int in_range = 1;
    for (int64_t i = 0; i < n; i++) {
        if (!(u[i] >= 0.0f && u[i] < 1.0f)) in_range = 0;
        s += u[i];
        s2 += (double)u[i] * u[i];
    }
    double mean = s / (double)n, var = s2 / (double)n - mean * mean;
    CHECK(in_range);
    CHECK_NEAR(mean, 0.5, 0.002);
    CHECK_NEAR(var, 1.0 / 12.0, 0.001);
    /* the words of block 0 map directly */
    uint32_t w[4];
    mf_rng_u32x4(42, MF_RNG_NOISE, 7, 0, w);
    CHECK(u[0] == mf_u32_to_unit(w[0]) && u[3] == mf_u32_to_unit(w[3]));
    mf_rng_u32x4(42, MF_RNG_NOISE, 7, 1, w);
    CHECK(u[5] == mf_u32_to_unit(w[1]));
    /* a value does not depend on how many are drawn; the same call repeats; other steps differ */
    float v[7], v2[7];
    mf_rng_uniform(42, MF_RNG_NOISE, 7, v, 7);
    mf_rng_uniform(42, MF_RNG_NOISE, 7, v2, 7);
    CHECK(memcmp(v, u, sizeof v) == 0);
    CHECK(memcmp(v, v2, sizeof v) == 0);
    mf_rng_uniform(42, MF_RNG_NOISE, 8, v2, 7);
    CHECK(memcmp(v, v2, sizeof v) != 0);
    mf_rng_uniform(42, MF_RNG_TIME, 7, v2, 7);
    CHECK(memcmp(v, v2, sizeof v) != 0);
    mf_rng_uniform(43, MF_RNG_NOISE, 7, v2, 7);
    CHECK(memcmp(v, v2, sizeof v) != 0);
    CHECK(mf_u32_to_unit(0) == 0.0f && mf_u32_to_unit(0xffffffffu) < 1.0f);
    free(u);
}

static void test_normal(void) {
    const int64_t n = 1000000;
    float *z = malloc(sizeof(float) * (size_t)n);
    mf_rng_normal(1, MF_RNG_SAMPLE, 0, z, n);
    double s = 0, s2 = 0, s4 = 0;
    int64_t within1 = 0;
    int finite = 1;
    for (int64_t i = 0; i < n; i++) {
        double v = z[i];
        if (!isfinite(v)) finite = 0;
        s += v;
        s2 += v * v;
        s4 += v * v * v * v;
        if (fabs(v) < 1.0) within1++;
    }
    double mean = s / (double)n, var = s2 / (double)n - mean * mean;
    CHECK(finite);
    CHECK_NEAR(mean, 0.0, 0.006);
    CHECK_NEAR(var, 1.0, 0.01);
    CHECK_NEAR(s4 / (double)n, 3.0, 0.06);
    CHECK_NEAR((double)within1 / (double)n, 0.682689, 0.003);
    /* odd counts and prefixes agree with longer draws */
    float a[5], b[5];
    mf_rng_normal(1, MF_RNG_SAMPLE, 0, a, 5);
    mf_rng_normal(1, MF_RNG_SAMPLE, 0, b, 5);
    CHECK(memcmp(a, z, sizeof a) == 0);
    CHECK(memcmp(a, b, sizeof a) == 0);
    mf_rng_normal(1, MF_RNG_SAMPLE, 1, b, 5);
    CHECK(memcmp(a, b, sizeof a) != 0);
    free(z);
}

static int is_permutation(const int64_t *p, int64_t n) {
    char *seen = calloc((size_t)n + 1, 1);
    int ok = 1;
    for (int64_t i = 0; i < n; i++) {
        if (p[i] < 0 || p[i] >= n || seen[p[i]]) ok = 0;
        else seen[p[i]] = 1;
    }
    free(seen);
    return ok;
}

static void test_permutation(void) {
    enum { N = 1000 };
    int64_t *a = malloc(sizeof(int64_t) * N), *b = malloc(sizeof(int64_t) * N);
    mf_rng_permutation(5, MF_RNG_SHUFFLE, 0, a, N);
    CHECK(is_permutation(a, N));
    int64_t fixed = 0;
    for (int i = 0; i < N; i++) fixed += a[i] == i;
    CHECK(fixed < 10); /* expected 1 */
    mf_rng_permutation(5, MF_RNG_SHUFFLE, 0, b, N);
    CHECK(memcmp(a, b, sizeof(int64_t) * N) == 0);
    mf_rng_permutation(5, MF_RNG_SHUFFLE, 1, b, N);
    CHECK(is_permutation(b, N));
    CHECK(memcmp(a, b, sizeof(int64_t) * N) != 0);
    mf_rng_permutation(5, MF_RNG_SPLIT, 0, b, N);
    CHECK(memcmp(a, b, sizeof(int64_t) * N) != 0);
    mf_rng_permutation(6, MF_RNG_SHUFFLE, 0, b, N);
    CHECK(memcmp(a, b, sizeof(int64_t) * N) != 0);
    int64_t one = 99;
    mf_rng_permutation(5, MF_RNG_SHUFFLE, 0, &one, 1);
    CHECK(one == 0);
    mf_rng_permutation(5, MF_RNG_SHUFFLE, 0, NULL, 0);

    /* unbiased: all 6 orders of 3 items equally likely over 60000 steps (sd ~ 91 per count) */
    int count[6] = {0};
    for (int step = 0; step < 60000; step++) {
        int64_t p[3];
        mf_rng_permutation(11, MF_RNG_SHUFFLE, (uint64_t)step, p, 3);
        int code = (int)(p[0] * 2 + (p[1] > p[2])); /* p[0] picks one of 3, then 2 orders */
        count[code]++;
    }
    for (int k = 0; k < 6; k++) CHECK_MSG(abs(count[k] - 10000) < 500, "order %d seen %d times", k, count[k]);
    /* every position is uniform for n = 10: item 0 lands at each slot ~ 1/10 of the time */
    int pos[10] = {0};
    for (int step = 0; step < 50000; step++) {
        int64_t p[10];
        mf_rng_permutation(12, MF_RNG_SHUFFLE, (uint64_t)step, p, 10);
        for (int i = 0; i < 10; i++)
            if (p[i] == 0) pos[i]++;
    }
    for (int i = 0; i < 10; i++) CHECK_MSG(abs(pos[i] - 5000) < 350, "slot %d: %d", i, pos[i]);
    free(a);
    free(b);
}

static void test_dataset(void) {
    mf_dataset *ds = mf_xcalloc(1, sizeof *ds);
    ds->C = 1;
    ds->H = 2;
    ds->W = 3;
    ds->seed = 1234;
    ds->num_classes = 2;
    ds->class_names = mf_xcalloc(2, sizeof(char *));
    ds->class_names[0] = mf_xstrdup("zero");
    ds->class_names[1] = mf_xstrdup("one");
    ds->train.n = 20;
    ds->train.x = mf_xmalloc(sizeof(float) * 6 * 20);
    ds->train.y = mf_xmalloc(sizeof(int32_t) * 20);
    for (int i = 0; i < 20; i++) {
        for (int j = 0; j < 6; j++) ds->train.x[i * 6 + j] = (float)(i * 10 + j);
        ds->train.y[i] = i % 2;
    }
    ds->test.n = 2;
    ds->test.x = mf_xcalloc(12, sizeof(float));
    ds->test.y = NULL; /* unlabeled */

    int64_t order[20], ref[20];
    mf_dataset_epoch_order(ds, 3, order);
    mf_rng_permutation(1234, MF_RNG_SHUFFLE, 3, ref, 20);
    CHECK(memcmp(order, ref, sizeof order) == 0);
    CHECK(is_permutation(order, 20));
    mf_dataset_epoch_order(ds, 4, ref);
    CHECK(memcmp(order, ref, sizeof order) != 0);

    float x[3 * 6];
    int32_t y[3];
    int64_t idx[3] = {order[0], order[1], 19};
    mf_dataset_gather(ds, &ds->train, idx, 3, x, y);
    int ok = 1;
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 6; j++) ok &= x[i * 6 + j] == (float)(idx[i] * 10 + j);
        ok &= y[i] == (int32_t)(idx[i] % 2);
    }
    CHECK(ok);
    mf_dataset_gather(ds, &ds->train, idx, 3, x, NULL);
    int64_t tidx[1] = {1};
    mf_dataset_gather(ds, &ds->test, tidx, 1, x, y);
    CHECK(y[0] == -1 && x[0] == 0.0f);
    mf_dataset_free(ds);
    mf_dataset_free(NULL);
}

int main(void) {
    test_kat();
    test_uniform();
    test_normal();
    test_permutation();
    test_dataset();
    return mf_test_summary("test_rng");
}
