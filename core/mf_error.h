/* mf_error.h - the two error tiers of mfpipe.
 * MF_ASSERT is for programming bugs only (aborts). Everything a user can cause returns -1 (or NULL)
 * after recording a message with mf_fail(); callers add context with mf_error_prefix() and the CLI prints it. */
#ifndef MF_ERROR_H
#define MF_ERROR_H

#include <stdio.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define MF_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define MF_PRINTF(a, b)
#endif

/* Record a user-facing error message (thread-local, replaces the previous one). Always returns -1. */
int mf_fail(const char *fmt, ...) MF_PRINTF(1, 2);
/* Prepend context to the current message: "while X: " + old message. Returns -1. */
int mf_error_prefix(const char *fmt, ...) MF_PRINTF(1, 2);
/* The last message recorded on this thread ("" if none). */
const char *mf_last_error(void);
void mf_error_clear(void);

#define MF_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "mfpipe: internal error: %s:%d: assertion '%s' failed\n", __FILE__,    \
                    __LINE__, #cond);                                                              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Propagate an error: if expr is non-zero (a failed call), return -1 from the current function. */
#define MF_TRY(expr)                                                                               \
    do {                                                                                           \
        if ((expr) != 0) return -1;                                                                \
    } while (0)

/* Allocation helpers that abort on out-of-memory of small bookkeeping objects. Large tensors
 * use plain malloc and report failure as a user error. */
void *mf_xmalloc(size_t n);
void *mf_xcalloc(size_t n, size_t size);
void *mf_xrealloc(void *p, size_t n);
char *mf_xstrdup(const char *s);
char *mf_xasprintf(const char *fmt, ...) MF_PRINTF(1, 2);

#ifdef __cplusplus
}
#endif
#endif
