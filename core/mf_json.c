/* mf_json.c - tiny JSON writer used for manifest.json, metrics.jsonl and eval.json. */
#include "mf_json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "mf_error.h"

void mf_buf_reserve(mf_buf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    b->s = mf_xrealloc(b->s, cap);
    b->cap = cap;
}

void mf_buf_puts(mf_buf *b, const char *s) {
    size_t n = strlen(s);
    mf_buf_reserve(b, n);
    memcpy(b->s + b->len, s, n + 1);
    b->len += n;
}

void mf_buf_printf(mf_buf *b, const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    mf_buf_reserve(b, (size_t)n);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    b->len += (size_t)n;
}

void mf_buf_free(mf_buf *b) {
    free(b->s);
    b->s = NULL;
    b->len = b->cap = 0;
}

void mf_json_escape(mf_buf *b, const char *s) {
    mf_buf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        switch (*p) {
        case '"': mf_buf_puts(b, "\\\""); break;
        case '\\': mf_buf_puts(b, "\\\\"); break;
        case '\n': mf_buf_puts(b, "\\n"); break;
        case '\r': mf_buf_puts(b, "\\r"); break;
        case '\t': mf_buf_puts(b, "\\t"); break;
        default:
            if (*p < 0x20) mf_buf_printf(b, "\\u%04x", *p);
            else {
                char c[2] = {(char)*p, 0};
                mf_buf_puts(b, c);
            }
        }
    }
    mf_buf_puts(b, "\"");
}

static void key(mf_buf *b, const char *k) {
    if (b->len > 0) {
        char last = b->s[b->len - 1];
        if (last != '{' && last != '[' && last != ',') mf_buf_puts(b, ",");
    }
    mf_json_escape(b, k);
    mf_buf_puts(b, ":");
}

void mf_json_str(mf_buf *b, const char *k, const char *val) {
    key(b, k);
    if (val) mf_json_escape(b, val);
    else mf_buf_puts(b, "null");
}
void mf_json_num(mf_buf *b, const char *k, double val) {
    key(b, k);
    if (isfinite(val)) mf_buf_printf(b, "%.10g", val);
    else mf_buf_puts(b, "null");
}
void mf_json_int(mf_buf *b, const char *k, long long val) {
    key(b, k);
    mf_buf_printf(b, "%lld", val);
}
void mf_json_bool(mf_buf *b, const char *k, int val) {
    key(b, k);
    mf_buf_puts(b, val ? "true" : "false");
}
void mf_json_raw(mf_buf *b, const char *k, const char *raw) {
    key(b, k);
    mf_buf_puts(b, raw);
}
