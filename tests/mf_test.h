/* mf_test.h - minimal test harness: CHECK macros that count and report, and a summary line
 * "N passed, N failed" that ctest logs and CI reads. Include once per test program. */
#ifndef MF_TEST_H
#define MF_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int mf_t_pass, mf_t_fail;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            mf_t_pass++;                                                                           \
        } else {                                                                                   \
            mf_t_fail++;                                                                           \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                        \
        }                                                                                          \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        if (cond) {                                                                                \
            mf_t_pass++;                                                                           \
        } else {                                                                                   \
            mf_t_fail++;                                                                           \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* The current mf_last_error() contains `needle`. */
#define CHECK_ERR_CONTAINS(needle)                                                                 \
    CHECK_MSG(strstr(mf_last_error(), (needle)) != NULL, "error was: %s", mf_last_error())

#define CHECK_NEAR(a, b, tol)                                                                      \
    CHECK_MSG(fabs((double)(a) - (double)(b)) <= (tol), "%.9g vs %.9g (tol %g)", (double)(a),      \
              (double)(b), (double)(tol))

static inline int mf_test_summary(const char *name) {
    printf("%s: %d passed, %d failed\n", name, mf_t_pass, mf_t_fail);
    return mf_t_fail ? 1 : 0;
}

/* A fresh temporary folder for this test (mkdtemp under $TMPDIR or /tmp); returns static storage. */
static inline const char *mf_test_tmpdir(void) {
    static char buf[512];
    const char *t = getenv("TMPDIR");
    snprintf(buf, sizeof buf, "%s/mfpipe-test-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(buf)) {
        perror("mkdtemp");
        exit(2);
    }
    return buf;
}

#endif
