/* mf_json.h - a tiny JSON writer into a growable buffer (manifest.json, metrics.jsonl, eval.json). */
#ifndef MF_JSON_H
#define MF_JSON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mf_buf {
    char *s;
    size_t len, cap;
} mf_buf;

void mf_buf_reserve(mf_buf *b, size_t extra); /* room for `extra` more bytes and the NUL */
void mf_buf_puts(mf_buf *b, const char *s);
void mf_buf_printf(mf_buf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void mf_buf_free(mf_buf *b);

/* Fields of an object, comma-separated automatically (write the braces yourself, or use the
 * *_obj_begin/end pair). Strings are escaped; non-finite numbers are written as null. */
void mf_json_str(mf_buf *b, const char *key, const char *val);
void mf_json_num(mf_buf *b, const char *key, double val);
void mf_json_int(mf_buf *b, const char *key, long long val);
void mf_json_bool(mf_buf *b, const char *key, int val);
void mf_json_raw(mf_buf *b, const char *key, const char *raw_json);
void mf_json_escape(mf_buf *b, const char *s); /* writes "..." */

#ifdef __cplusplus
}
#endif
#endif
