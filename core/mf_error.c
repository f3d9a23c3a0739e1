/* mf_error.c - thread-local error message for user-facing failures, plus allocation helpers. */
#include "mf_error.h"

#include <stdarg.h>
#include <string.h>

#define MF_ERR_CAP 4096
static _Thread_local char g_err[MF_ERR_CAP];

int mf_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    return -1;
}

int mf_error_prefix(const char *fmt, ...) {
    char pre[MF_ERR_CAP], old[MF_ERR_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, g_err, sizeof old);
    size_t np = strlen(pre), no = strlen(old);
    if (np > MF_ERR_CAP - 1) np = MF_ERR_CAP - 1;
    if (no > MF_ERR_CAP - 1 - np) no = MF_ERR_CAP - 1 - np;
    memcpy(g_err, pre, np);
    memcpy(g_err + np, old, no);
    g_err[np + no] = '\0';
    return -1;
}

const char *mf_last_error(void) { return g_err; }
void mf_error_clear(void) { g_err[0] = '\0'; }

static void oom(size_t n) {
    fprintf(stderr, "mfpipe: out of memory allocating %zu bytes\n", n);
    abort();
}

void *mf_xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) oom(n);
    return p;
}
void *mf_xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) oom(n * size);
    return p;
}
void *mf_xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) oom(n);
    return q;
}
char *mf_xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = mf_xmalloc(n);
    memcpy(p, s, n);
    return p;
}
char *mf_xasprintf(const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *p = mf_xmalloc((size_t)n + 1);
    vsnprintf(p, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return p;
}
