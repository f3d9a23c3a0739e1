/* mf_safetensors.c - safetensors writer (compact JSON header, 8-aligned data, atomic) and strict reader
 * (mmap, own small JSON parser for the header, every offset and size checked before any data is
 * trusted). Format: u64 LE header length N, N bytes of JSON, then the data buffer. */
#include "mf_safetensors.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mf_error.h"
#include "mf_io.h"
#include "mf_json.h"

static const struct {
    const char *name;
    int size;
} k_dtypes[] = {{"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F64", 8}, {"I32", 4}, {"I64", 8}, {"U8", 1}};

int mf_st_dtype_size(const char *dtype) {
    if (!dtype) return 0;
    for (size_t i = 0; i < sizeof k_dtypes / sizeof k_dtypes[0]; i++)
        if (strcmp(dtype, k_dtypes[i].name) == 0) return k_dtypes[i].size;
    return 0;
}

/* Length of the valid UTF-8 sequence at s[0, n), 0 if invalid (overlong, surrogate, > U+10FFFF). */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned cp, min;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07, min = 0x10000;
    else return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

/* Offset of the first invalid UTF-8 byte, or n when valid. */
static size_t utf8_check(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t l = utf8_seq(s + i, n - i);
        if (!l) return i;
        i += l;
    }
    return n;
}

/* ---- writer ------------------------------------------------------------------------------------ */

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorts names and returns one that occurs twice, NULL if none. */
static const char *find_dup(const char **names, int n) {
    qsort(names, (size_t)n, sizeof *names, cmp_str_ptr);
    for (int i = 1; i < n; i++)
        if (strcmp(names[i - 1], names[i]) == 0) return names[i];
    return NULL;
}

int mf_st_write(const char *path, const mf_st_tensor *t, int n, const char *const *meta_kv, int n_meta) {
    MF_ASSERT(path && n >= 0 && n_meta >= 0 && (t || n == 0) && (meta_kv || n_meta == 0));
    for (int i = 0; i < n_meta; i++) {
        const char *k = meta_kv[2 * i], *v = meta_kv[2 * i + 1];
        if (!k || !v) return mf_fail("%s: metadata pair %d has a NULL key or value", path, i);
        if (utf8_check((const unsigned char *)k, strlen(k)) != strlen(k) ||
            utf8_check((const unsigned char *)v, strlen(v)) != strlen(v))
            return mf_fail("%s: metadata pair %d is not valid UTF-8", path, i);
    }
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        const mf_st_tensor *x = &t[i];
        if (!x->name || !*x->name) return mf_fail("%s: tensor %d has no name", path, i);
        if (strcmp(x->name, "__metadata__") == 0) return mf_fail("%s: tensor %d is named __metadata__", path, i);
        if (utf8_check((const unsigned char *)x->name, strlen(x->name)) != strlen(x->name))
            return mf_fail("%s: tensor %d: name is not valid UTF-8", path, i);
        int es = mf_st_dtype_size(x->dtype);
        if (!es) return mf_fail("%s: tensor \"%s\": unknown dtype \"%s\"", path, x->name, x->dtype ? x->dtype : "(null)");
        if (x->ndim < 0 || x->ndim > MF_ST_MAX_DIMS)
            return mf_fail("%s: tensor \"%s\": ndim %d outside 0..%d", path, x->name, x->ndim, MF_ST_MAX_DIMS);
        uint64_t numel = 1;
        for (int d = 0; d < x->ndim; d++) {
            if (x->shape[d] < 0) return mf_fail("%s: tensor \"%s\": negative dimension %d", path, x->name, d);
            uint64_t s = (uint64_t)x->shape[d];
            if (s && numel > UINT64_MAX / s) return mf_fail("%s: tensor \"%s\": shape product overflows", path, x->name);
            numel *= s;
        }
        if (numel > UINT64_MAX / (uint64_t)es || numel * (uint64_t)es != (uint64_t)x->nbytes)
            return mf_fail("%s: tensor \"%s\": %zu bytes given, dtype %s and its shape need %llu", path, x->name,
                           x->nbytes, x->dtype, (unsigned long long)(numel * (uint64_t)es));
        if (x->nbytes && !x->data) return mf_fail("%s: tensor \"%s\": no data", path, x->name);
        total += x->nbytes;
    }
    if (n > 1 || n_meta > 1) {
        const char **names = mf_xmalloc(sizeof *names * (size_t)(n > n_meta ? n : n_meta) + 1);
        for (int i = 0; i < n; i++) names[i] = t[i].name;
        const char *dup = find_dup(names, n);
        if (dup) {
            mf_fail("%s: duplicate tensor name \"%s\"", path, dup);
            free(names);
            return -1;
        }
        for (int i = 0; i < n_meta; i++) names[i] = meta_kv[2 * i];
        dup = find_dup(names, n_meta);
        free(names);
        if (dup) return mf_fail("%s: duplicate metadata key \"%s\"", path, dup);
    }

    mf_buf h = {0};
    mf_buf_puts(&h, "{");
    if (n_meta > 0) {
        mf_buf_puts(&h, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i) mf_buf_puts(&h, ",");
            mf_json_escape(&h, meta_kv[2 * i]);
            mf_buf_puts(&h, ":");
            mf_json_escape(&h, meta_kv[2 * i + 1]);
        }
        mf_buf_puts(&h, "}");
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        if (i || n_meta > 0) mf_buf_puts(&h, ",");
        mf_json_escape(&h, t[i].name);
        mf_buf_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", t[i].dtype);
        for (int d = 0; d < t[i].ndim; d++) mf_buf_printf(&h, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
        mf_buf_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                      (unsigned long long)(off + t[i].nbytes));
        off += t[i].nbytes;
    }
    mf_buf_puts(&h, "}");
    while (h.len % 8) mf_buf_puts(&h, " ");
    if (h.len > MF_ST_MAX_HEADER) {
        mf_buf_free(&h);
        return mf_fail("%s: header of %zu bytes exceeds the safetensors limit of %llu", path, h.len, MF_ST_MAX_HEADER);
    }
    if (total > SIZE_MAX - 8 - h.len) {
        mf_buf_free(&h);
        return mf_fail("%s: file too large", path);
    }
    size_t size = 8 + h.len + (size_t)total;
    uint8_t *out = malloc(size);
    if (!out) {
        mf_buf_free(&h);
        return mf_fail("%s: out of memory for %zu bytes", path, size);
    }
    for (int b = 0; b < 8; b++) out[b] = (uint8_t)((uint64_t)h.len >> (8 * b));
    memcpy(out + 8, h.s, h.len);
    size_t p = 8 + h.len;
    for (int i = 0; i < n; i++) {
        if (t[i].nbytes) memcpy(out + p, t[i].data, t[i].nbytes);
        p += t[i].nbytes;
    }
    mf_buf_free(&h);
    int rc = mf_write_file_atomic(path, out, size);
    free(out);
    return rc;
}

/* ---- reader ------------------------------------------------------------------------------------ */

typedef struct {
    const char *path;
    const unsigned char *s; /* the header JSON */
    size_t n, i;
} parser;

/* Errors give offsets into the file (the JSON starts at byte 8). */
#define PFAIL(p, ...) perr((p), __VA_ARGS__)
static int perr(parser *p, const char *fmt, ...) MF_PRINTF(2, 3);
static int perr(parser *p, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mf_fail("%s: safetensors header: byte offset %zu: %s", p->path, p->i + 8, msg);
}

static void skip_ws(parser *p) {
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static int expect(parser *p, char c) {
    skip_ws(p);
    if (p->i >= p->n) return PFAIL(p, "JSON syntax error: expected '%c', found the end of the header", c);
    if (p->s[p->i] != (unsigned char)c) return PFAIL(p, "JSON syntax error: expected '%c'", c);
    p->i++;
    return 0;
}

/* The next non-blank character without consuming it, -1 at the end. */
static int peek(parser *p) {
    skip_ws(p);
    return p->i < p->n ? p->s[p->i] : -1;
}

/* After a member or an element: ',' (consumed; 1: another follows) or `close` (consumed; 0: the list
 * ended), else a syntax error (-1). */
static int list_next(parser *p, char close) {
    int c = peek(p);
    if (c == ',' || c == close) {
        p->i++;
        return c == ',';
    }
    return PFAIL(p, "JSON syntax error: expected ',' or '%c'", close);
}

static int hex4(parser *p, unsigned *out) {
    if (p->n - p->i < 4) return PFAIL(p, "JSON syntax error: truncated \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned char c = p->s[p->i + (size_t)k];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return PFAIL(p, "JSON syntax error: bad hex digit in \\u escape");
    }
    p->i += 4;
    *out = v;
    return 0;
}

static void put_utf8(mf_buf *b, unsigned cp) {
    char c[5] = {0};
    if (cp < 0x80) c[0] = (char)cp;
    else if (cp < 0x800) c[0] = (char)(0xC0 | (cp >> 6)), c[1] = (char)(0x80 | (cp & 0x3F));
    else if (cp < 0x10000)
        c[0] = (char)(0xE0 | (cp >> 12)), c[1] = (char)(0x80 | ((cp >> 6) & 0x3F)), c[2] = (char)(0x80 | (cp & 0x3F));
    else
        c[0] = (char)(0xF0 | (cp >> 18)), c[1] = (char)(0x80 | ((cp >> 12) & 0x3F)),
        c[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), c[3] = (char)(0x80 | (cp & 0x3F));
    mf_buf_puts(b, c);
}

/* A JSON string; *out malloc'ed (never NULL on success). U+0000 is refused (names are C strings). */
static int parse_string(parser *p, char **out) {
    *out = NULL;
    MF_TRY(expect(p, '"'));
    mf_buf b = {0};
    mf_buf_puts(&b, "");
    size_t run = p->i; /* start of the literal run not yet copied */
    for (;;) {
        if (p->i >= p->n) {
            mf_buf_free(&b);
            return PFAIL(p, "JSON syntax error: unterminated string");
        }
        unsigned char c = p->s[p->i];
        if (c == '"' || c == '\\') {
            mf_buf_printf(&b, "%.*s", (int)(p->i - run), (const char *)p->s + run);
            if (c == '"') {
                p->i++;
                break;
            }
            p->i++;
            if (p->i >= p->n) {
                mf_buf_free(&b);
                return PFAIL(p, "JSON syntax error: unterminated string");
            }
            unsigned char e = p->s[p->i++];
            const char *rep = NULL;
            switch (e) {
            case '"': rep = "\""; break;
            case '\\': rep = "\\"; break;
            case '/': rep = "/"; break;
            case 'b': rep = "\b"; break;
            case 'f': rep = "\f"; break;
            case 'n': rep = "\n"; break;
            case 'r': rep = "\r"; break;
            case 't': rep = "\t"; break;
            case 'u': {
                size_t at = p->i - 2;
                unsigned cp;
                if (hex4(p, &cp) != 0) {
                    mf_buf_free(&b);
                    return -1;
                }
                if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    p->i = at;
                    mf_buf_free(&b);
                    return PFAIL(p, "JSON syntax error: lone low surrogate \\u%04X", cp);
                }
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    unsigned lo;
                    if (p->n - p->i < 6 || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u') {
                        p->i = at;
                        mf_buf_free(&b);
                        return PFAIL(p, "JSON syntax error: high surrogate \\u%04X without a low one", cp);
                    }
                    p->i += 2;
                    if (hex4(p, &lo) != 0) {
                        mf_buf_free(&b);
                        return -1;
                    }
                    if (lo < 0xDC00 || lo > 0xDFFF) {
                        p->i = at;
                        mf_buf_free(&b);
                        return PFAIL(p, "JSON syntax error: high surrogate \\u%04X without a low one", cp);
                    }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                if (cp == 0) {
                    p->i = at;
                    mf_buf_free(&b);
                    return PFAIL(p, "string contains \\u0000");
                }
                put_utf8(&b, cp);
                break;
            }
            default:
                p->i -= 2;
                mf_buf_free(&b);
                return PFAIL(p, "JSON syntax error: bad escape \\%c", e >= 0x20 && e < 0x7f ? e : '?');
            }
            if (rep) mf_buf_puts(&b, rep);
            run = p->i;
        } else if (c < 0x20) {
            mf_buf_free(&b);
            return PFAIL(p, "JSON syntax error: control character 0x%02x in a string", c);
        } else {
            p->i++;
        }
    }
    *out = b.s;
    return 0;
}

/* A non-negative JSON integer no larger than max. */
static int parse_uint(parser *p, uint64_t max, uint64_t *out) {
    skip_ws(p);
    size_t start = p->i;
    if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9')
        return PFAIL(p, "JSON syntax error: expected a non-negative integer");
    uint64_t v = 0;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
        unsigned d = p->s[p->i] - '0';
        if (v > (max - d) / 10) {
            p->i = start;
            return PFAIL(p, "integer too large (more than %llu)", (unsigned long long)max);
        }
        v = v * 10 + d;
        p->i++;
    }
    if (p->i - start > 1 && p->s[start] == '0') {
        p->i = start;
        return PFAIL(p, "JSON syntax error: integer with a leading zero");
    }
    if (p->i < p->n && (p->s[p->i] == '.' || p->s[p->i] == 'e' || p->s[p->i] == 'E'))
        return PFAIL(p, "JSON syntax error: expected an integer, found a fraction or exponent");
    *out = v;
    return 0;
}

static int parse_metadata(parser *p, mf_st_file *f) {
    MF_TRY(expect(p, '{'));
    if (peek(p) == '}') {
        p->i++;
        return 0;
    }
    int cap = 0;
    for (;;) {
        char *k, *v;
        MF_TRY(parse_string(p, &k));
        if (expect(p, ':') != 0) {
            free(k);
            return -1;
        }
        if (peek(p) != '"') {
            PFAIL(p, "metadata value of \"%s\" is not a string", k);
            free(k);
            return -1;
        }
        if (parse_string(p, &v) != 0) {
            free(k);
            return -1;
        }
        if (f->n_meta == cap) {
            cap = cap ? cap * 2 : 8;
            f->meta = mf_xrealloc(f->meta, sizeof *f->meta * 2 * (size_t)cap);
        }
        f->meta[2 * f->n_meta] = k;
        f->meta[2 * f->n_meta + 1] = v;
        f->n_meta++;
        int more = list_next(p, '}');
        if (more <= 0) return more;
    }
}

static int parse_tensor(parser *p, mf_st_entry *e) {
    MF_TRY(expect(p, '{'));
    int have_dtype = 0, have_shape = 0, have_offsets = 0;
    size_t obj_at = p->i;
    if (peek(p) == '}') {
        p->i++;
    } else {
        for (;;) {
            size_t key_at = (skip_ws(p), p->i);
            char *k;
            MF_TRY(parse_string(p, &k));
            int which = strcmp(k, "dtype") == 0 ? 0 : strcmp(k, "shape") == 0 ? 1 : strcmp(k, "data_offsets") == 0 ? 2 : -1;
            int dup = (which == 0 && have_dtype) || (which == 1 && have_shape) || (which == 2 && have_offsets);
            if (which < 0 || dup) {
                p->i = key_at;
                PFAIL(p, "tensor \"%s\": %s field \"%s\"", e->name, dup ? "duplicate" : "unknown", k);
                free(k);
                return -1;
            }
            free(k);
            MF_TRY(expect(p, ':'));
            if (which == 0) {
                size_t at = (skip_ws(p), p->i);
                char *d;
                if (peek(p) != '"') return PFAIL(p, "tensor \"%s\": dtype is not a string", e->name);
                MF_TRY(parse_string(p, &d));
                int es = mf_st_dtype_size(d);
                if (!es) {
                    p->i = at;
                    PFAIL(p, "tensor \"%s\": unknown dtype \"%.32s\"", e->name, d);
                    free(d);
                    return -1;
                }
                snprintf(e->dtype, sizeof e->dtype, "%s", d);
                e->dtype_size = es;
                free(d);
                have_dtype = 1;
            } else if (which == 1) {
                MF_TRY(expect(p, '['));
                e->ndim = 0;
                if (peek(p) == ']') p->i++;
                else
                    for (;;) {
                        if (e->ndim == MF_ST_MAX_DIMS)
                            return PFAIL(p, "tensor \"%s\": more than %d dimensions", e->name, MF_ST_MAX_DIMS);
                        uint64_t v;
                        MF_TRY(parse_uint(p, INT64_MAX, &v));
                        e->shape[e->ndim++] = (int64_t)v;
                        int more = list_next(p, ']');
                        if (more < 0) return -1;
                        if (!more) break;
                    }
                have_shape = 1;
            } else {
                MF_TRY(expect(p, '['));
                MF_TRY(parse_uint(p, UINT64_MAX, &e->begin));
                MF_TRY(expect(p, ','));
                MF_TRY(parse_uint(p, UINT64_MAX, &e->end));
                if (peek(p) != ']') return PFAIL(p, "tensor \"%s\": data_offsets must hold exactly 2 integers", e->name);
                p->i++;
                have_offsets = 1;
            }
            int more = list_next(p, '}');
            if (more < 0) return -1;
            if (!more) break;
        }
    }
    if (!have_dtype || !have_shape || !have_offsets) {
        p->i = obj_at - 1;
        return PFAIL(p, "tensor \"%s\": missing \"%s\"", e->name,
                     !have_dtype ? "dtype" : !have_shape ? "shape" : "data_offsets");
    }
    return 0;
}

static int parse_header(parser *p, mf_st_file *f) {
    int cap = 0, have_meta = 0;
    MF_TRY(expect(p, '{'));
    if (peek(p) == '}') p->i++;
    else
        for (;;) {
            size_t key_at = (skip_ws(p), p->i);
            char *k;
            MF_TRY(parse_string(p, &k));
            MF_TRY((expect(p, ':') != 0 ? (free(k), -1) : 0));
            if (strcmp(k, "__metadata__") == 0) {
                free(k);
                if (have_meta) {
                    p->i = key_at;
                    return PFAIL(p, "duplicate \"__metadata__\"");
                }
                have_meta = 1;
                MF_TRY(parse_metadata(p, f));
            } else {
                if (f->n == cap) {
                    cap = cap ? cap * 2 : 16;
                    f->entries = mf_xrealloc(f->entries, sizeof *f->entries * (size_t)cap);
                }
                mf_st_entry *e = &f->entries[f->n++];
                memset(e, 0, sizeof *e);
                e->name = k;
                MF_TRY(parse_tensor(p, e));
            }
            int more = list_next(p, '}');
            if (more < 0) return -1;
            if (!more) break;
        }
    skip_ws(p);
    if (p->i != p->n) return PFAIL(p, "JSON syntax error: trailing bytes after the header object");
    return 0;
}

static int cmp_entry_ptr_name(const void *a, const void *b) {
    return strcmp((*(const mf_st_entry *const *)a)->name, (*(const mf_st_entry *const *)b)->name);
}
static int cmp_entry_ptr_off(const void *a, const void *b) {
    const mf_st_entry *x = *(const mf_st_entry *const *)a, *y = *(const mf_st_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int check_entries(mf_st_file *f) {
    const char *path = f->path;
    uint64_t dlen = f->size - f->data_start;
    for (int i = 0; i < f->n; i++) {
        mf_st_entry *e = &f->entries[i];
        uint64_t numel = 1;
        for (int d = 0; d < e->ndim; d++) {
            uint64_t s = (uint64_t)e->shape[d];
            if (s && numel > UINT64_MAX / s) return mf_fail("%s: tensor \"%s\": shape product overflows", path, e->name);
            numel *= s;
        }
        if (numel > UINT64_MAX / (uint64_t)e->dtype_size)
            return mf_fail("%s: tensor \"%s\": shape product overflows", path, e->name);
        e->numel = numel;
        uint64_t need = numel * (uint64_t)e->dtype_size;
        if (e->end < e->begin)
            return mf_fail("%s: tensor \"%s\": data_offsets [%llu, %llu] end before they begin", path, e->name,
                           (unsigned long long)e->begin, (unsigned long long)e->end);
        if (e->end - e->begin != need)
            return mf_fail("%s: tensor \"%s\": data_offsets [%llu, %llu] hold %llu bytes, dtype %s and its shape "
                           "need %llu", path, e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                           (unsigned long long)(e->end - e->begin), e->dtype, (unsigned long long)need);
        if (e->end > dlen)
            return mf_fail("%s: tensor \"%s\": data_offsets [%llu, %llu] out of the data buffer (%llu bytes)", path,
                           e->name, (unsigned long long)e->begin, (unsigned long long)e->end, (unsigned long long)dlen);
        e->data = (const uint8_t *)f->map + f->data_start + e->begin;
        e->nbytes = (size_t)need;
    }
    mf_st_entry **v = mf_xmalloc(sizeof *v * ((size_t)f->n + 1));
    for (int i = 0; i < f->n; i++) v[i] = &f->entries[i];
    qsort(v, (size_t)f->n, sizeof *v, cmp_entry_ptr_name);
    for (int i = 1; i < f->n; i++)
        if (strcmp(v[i - 1]->name, v[i]->name) == 0) {
            mf_fail("%s: duplicate tensor name \"%s\"", path, v[i]->name);
            free(v);
            return -1;
        }
    qsort(v, (size_t)f->n, sizeof *v, cmp_entry_ptr_off);
    uint64_t pos = 0;
    for (int i = 0; i < f->n; i++) {
        if (v[i]->begin < pos) {
            mf_fail("%s: tensor \"%s\": data_offsets [%llu, %llu] overlap tensor \"%s\"", path, v[i]->name,
                    (unsigned long long)v[i]->begin, (unsigned long long)v[i]->end, v[i - 1]->name);
            free(v);
            return -1;
        }
        if (v[i]->begin > pos) {
            mf_fail("%s: bytes [%llu, %llu) of the data buffer are not covered by any tensor (before \"%s\")", path,
                    (unsigned long long)pos, (unsigned long long)v[i]->begin, v[i]->name);
            free(v);
            return -1;
        }
        pos = v[i]->end;
    }
    free(v);
    if (pos != dlen)
        return mf_fail("%s: bytes [%llu, %llu) of the data buffer are not covered by any tensor", path,
                       (unsigned long long)pos, (unsigned long long)dlen);
    if (f->n_meta > 1) {
        const char **k = mf_xmalloc(sizeof *k * (size_t)f->n_meta);
        for (int i = 0; i < f->n_meta; i++) k[i] = f->meta[2 * i];
        const char *dup = find_dup(k, f->n_meta);
        if (dup) mf_fail("%s: duplicate metadata key \"%s\"", path, dup);
        free(k);
        if (dup) return -1;
    }
    return 0;
}

int mf_st_open(const char *path, mf_st_file *f) {
    MF_ASSERT(path && f);
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return mf_fail("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return mf_fail("%s: cannot stat: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return mf_fail("%s: is a directory", path);
    }
    if (st.st_size < 8) {
        close(fd);
        return mf_fail("%s: not a safetensors file: %lld bytes, shorter than the 8-byte header length", path,
                       (long long)st.st_size);
    }
    size_t size = (size_t)st.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED) return mf_fail("%s: cannot map: %s", path, strerror(e));
    f->path = mf_xstrdup(path);
    f->map = map;
    f->size = size;
    const unsigned char *b = map;
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++) hl |= (uint64_t)b[i] << (8 * i);
    if (hl > MF_ST_MAX_HEADER) {
        mf_fail("%s: header length %llu at byte offset 0 exceeds the limit of %llu bytes", path,
                (unsigned long long)hl, MF_ST_MAX_HEADER);
        goto fail;
    }
    if (hl > size - 8) {
        mf_fail("%s: header length %llu at byte offset 0 goes beyond the end of the file (%zu bytes)", path,
                (unsigned long long)hl, size);
        goto fail;
    }
    size_t bad = utf8_check(b + 8, (size_t)hl);
    if (bad != hl) {
        mf_fail("%s: safetensors header: byte offset %zu: not valid UTF-8", path, bad + 8);
        goto fail;
    }
    f->data_start = 8 + (size_t)hl;
    parser p = {path, b + 8, (size_t)hl, 0};
    if (parse_header(&p, f) != 0 || check_entries(f) != 0) goto fail;
    return 0;
fail:
    mf_st_close(f);
    return -1;
}

const mf_st_entry *mf_st_find(const mf_st_file *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->entries[i].name, name) == 0) return &f->entries[i];
    return NULL;
}

const char *mf_st_meta(const mf_st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[2 * i], key) == 0) return f->meta[2 * i + 1];
    return NULL;
}

void mf_st_close(mf_st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) free(f->entries[i].name);
    free(f->entries);
    for (int i = 0; i < 2 * f->n_meta; i++) free(f->meta[i]);
    free(f->meta);
    if (f->map) munmap(f->map, f->size);
    free(f->path);
    memset(f, 0, sizeof *f);
}
