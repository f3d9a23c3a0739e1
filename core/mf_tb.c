/* mf_tb.c - TensorBoard event files (mf_tb.h). The protocol buffer fields written (tensorflow's
 * event.proto and summary.proto):
 *   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
 *   Summary { repeated Value value = 1; }
 *   Value   { string tag = 1; float simple_value = 2; Image image = 4; }
 *   Image   { int32 height = 1; int32 width = 2; int32 colorspace = 3; bytes encoded_image_string = 4; } */
#include "mf_tb.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mf_error.h"
#include "mf_io.h"
#include "mf_json.h"

struct mf_tb {
    FILE *f;
    char *path;
};

/* ---- CRC-32C: slicing by one table ----------------------------------------------------------- */
static uint32_t g_crc_table[256];
static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        g_crc_table[i] = c;
    }
}

uint32_t mf_crc32c(const void *data, size_t n) {
    if (!g_crc_table[1]) crc_init();
    const uint8_t *p = data;
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) c = g_crc_table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

/* ---- protocol buffer encoding ---------------------------------------------------------------- */
static void pb_raw(mf_buf *b, const void *p, size_t n);
static void pb_varint(mf_buf *b, uint64_t v) {
    char t[10];
    int n = 0;
    do {
        t[n++] = (char)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        v >>= 7;
    } while (v);
    pb_raw(b, t, (size_t)n);
}
static void pb_raw(mf_buf *b, const void *p, size_t n) {
    /* binary: mf_buf_puts would stop at a NUL byte */
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        b->s = mf_xrealloc(b->s, cap);
        b->cap = cap;
    }
    memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = '\0';
}
static void pb_key(mf_buf *b, int field, int wire) { pb_varint(b, (uint64_t)(field << 3 | wire)); }
static void pb_bytes(mf_buf *b, int field, const void *p, size_t n) {
    pb_key(b, field, 2);
    pb_varint(b, n);
    pb_raw(b, p, n);
}
static void pb_double(mf_buf *b, int field, double v) {
    uint8_t t[8];
    memcpy(t, &v, 8); /* little-endian hosts only (the project builds for x86-64 and aarch64) */
    pb_key(b, field, 1);
    pb_raw(b, t, 8);
}
static void pb_float(mf_buf *b, int field, float v) {
    uint8_t t[4];
    memcpy(t, &v, 4);
    pb_key(b, field, 5);
    pb_raw(b, t, 4);
}

static int write_record(mf_tb *tb, const mf_buf *ev) {
    uint8_t hdr[12];
    uint64_t len = ev->len;
    for (int i = 0; i < 8; i++) hdr[i] = (uint8_t)(len >> (8 * i));
    uint32_t c = mf_crc32c_mask(mf_crc32c(hdr, 8));
    for (int i = 0; i < 4; i++) hdr[8 + i] = (uint8_t)(c >> (8 * i));
    uint32_t d = mf_crc32c_mask(mf_crc32c(ev->s, ev->len));
    uint8_t tail[4];
    for (int i = 0; i < 4; i++) tail[i] = (uint8_t)(d >> (8 * i));
    if (fwrite(hdr, 1, 12, tb->f) != 12 || fwrite(ev->s, 1, ev->len, tb->f) != ev->len || fwrite(tail, 1, 4, tb->f) != 4 ||
        fflush(tb->f) != 0)
        return mf_fail("%s: write failed: %s", tb->path, strerror(errno));
    return 0;
}

static void event_head(mf_buf *ev, double wall, int64_t step) {
    pb_double(ev, 1, wall);
    if (step != 0) {
        pb_key(ev, 2, 0);
        pb_varint(ev, (uint64_t)step);
    }
}

int mf_tb_open(const char *dir, mf_tb **out, char *path_out, size_t cap) {
    *out = NULL;
    MF_TRY(mf_mkdirs(dir));
    char host[128] = "localhost";
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    for (char *c = host; *c; c++)
        if (*c == '/') *c = '_';
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    mf_tb *tb = mf_xcalloc(1, sizeof *tb);
    tb->path = mf_xasprintf("%s/events.out.tfevents.%lld.%s.%d", dir, (long long)ts.tv_sec, host, (int)getpid());
    tb->f = fopen(tb->path, "ab");
    if (!tb->f) {
        int rc = mf_fail("%s: cannot create: %s", tb->path, strerror(errno));
        mf_tb_close(tb);
        return rc;
    }
    mf_buf ev = {0};
    event_head(&ev, (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec, 0);
    pb_bytes(&ev, 3, "brain.Event:2", 13);
    int rc = write_record(tb, &ev);
    mf_buf_free(&ev);
    if (rc != 0) {
        mf_tb_close(tb);
        return rc;
    }
    if (path_out) snprintf(path_out, cap, "%s", tb->path);
    *out = tb;
    return 0;
}

void mf_tb_close(mf_tb *tb) {
    if (!tb) return;
    if (tb->f) fclose(tb->f);
    free(tb->path);
    free(tb);
}

int mf_tb_scalar(mf_tb *tb, const char *tag, int64_t step, double wall, float value) {
    mf_buf val = {0}, sum = {0}, ev = {0};
    pb_bytes(&val, 1, tag, strlen(tag));
    pb_float(&val, 2, value);
    pb_bytes(&sum, 1, val.s, val.len);
    event_head(&ev, wall, step);
    pb_bytes(&ev, 5, sum.s, sum.len);
    int rc = write_record(tb, &ev);
    mf_buf_free(&val), mf_buf_free(&sum), mf_buf_free(&ev);
    return rc;
}

int mf_tb_image_png(mf_tb *tb, const char *tag, int64_t step, double wall, const uint8_t *png, size_t n) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n < 33 || memcmp(png, sig, 8) != 0 || memcmp(png + 12, "IHDR", 4) != 0)
        return mf_fail("tensorboard image '%s': not a PNG", tag);
    uint32_t w = (uint32_t)png[16] << 24 | (uint32_t)png[17] << 16 | (uint32_t)png[18] << 8 | png[19];
    uint32_t h = (uint32_t)png[20] << 24 | (uint32_t)png[21] << 16 | (uint32_t)png[22] << 8 | png[23];
    int ctype = png[25], space = ctype == 0 ? 1 : ctype == 4 ? 2 : ctype == 6 ? 4 : 3;
    mf_buf img = {0}, val = {0}, sum = {0}, ev = {0};
    pb_key(&img, 1, 0), pb_varint(&img, h);
    pb_key(&img, 2, 0), pb_varint(&img, w);
    pb_key(&img, 3, 0), pb_varint(&img, (uint64_t)space);
    pb_bytes(&img, 4, png, n);
    pb_bytes(&val, 1, tag, strlen(tag));
    pb_bytes(&val, 4, img.s, img.len);
    pb_bytes(&sum, 1, val.s, val.len);
    event_head(&ev, wall, step);
    pb_bytes(&ev, 5, sum.s, sum.len);
    int rc = write_record(tb, &ev);
    mf_buf_free(&img), mf_buf_free(&val), mf_buf_free(&sum), mf_buf_free(&ev);
    return rc;
}

/* ---- metrics records -------------------------------------------------------------------------- */
/* Skip one JSON value at p; returns the end, or NULL. */
static const char *skip_value(const char *p) {
    if (*p == '"') {
        for (p++; *p && *p != '"'; p++)
            if (*p == '\\' && p[1]) p++;
        return *p ? p + 1 : NULL;
    }
    if (*p == '[' || *p == '{') {
        int depth = 0;
        for (; *p; p++) {
            if (*p == '"') {
                p = skip_value(p);
                if (!p) return NULL;
                p--;
            } else if (*p == '[' || *p == '{') depth++;
            else if ((*p == ']' || *p == '}') && --depth == 0) return p + 1;
        }
        return NULL;
    }
    while (*p && *p != ',' && *p != '}' && *p != ']') p++;
    return p;
}

int mf_tb_metrics(mf_tb *tb, const char *stage, double wall, const char *fields, int64_t *last_step) {
    if (!tb || !fields) return 0;
    enum { MAXF = 64 };
    char keys[MAXF][64];
    double nums[MAXF];
    int isnum[MAXF], n = 0;
    char metric[128] = "";
    const char *p = fields;
    while (*p && n < MAXF) {
        while (*p == ',' || *p == ' ') p++;
        if (*p != '"') break;
        const char *k0 = ++p;
        while (*p && *p != '"') p++;
        if (*p != '"' || p[1] != ':') break;
        size_t kl = (size_t)(p - k0);
        p += 2;
        const char *v0 = p, *v1 = skip_value(p);
        if (!v1) break;
        if (kl < sizeof keys[0]) {
            memcpy(keys[n], k0, kl);
            keys[n][kl] = '\0';
            char *end;
            isnum[n] = 0;
            if (*v0 != '"' && *v0 != '[' && *v0 != '{' && *v0 != 't' && *v0 != 'f' && *v0 != 'n') {
                nums[n] = strtod(v0, &end);
                isnum[n] = end == v1;
            }
            if (strcmp(keys[n], "metric") == 0 && *v0 == '"' && v1 - v0 - 2 < (long)sizeof metric) {
                memcpy(metric, v0 + 1, (size_t)(v1 - v0 - 2));
                metric[v1 - v0 - 2] = '\0';
            }
            n++;
        }
        p = v1;
    }
    int step_i = -1, value_i = -1;
    for (int i = 0; i < n; i++) {
        if (strcmp(keys[i], "event") == 0) return 0;
        if (strcmp(keys[i], "step") == 0 && isnum[i]) step_i = i;
        if (strcmp(keys[i], "value") == 0 && isnum[i]) value_i = i;
    }
    char tag[256];
    if (step_i >= 0) {
        int64_t step = (int64_t)nums[step_i];
        *last_step = step;
        for (int i = 0; i < n; i++) {
            if (i == step_i || !isnum[i] || strcmp(keys[i], "time") == 0) continue;
            snprintf(tag, sizeof tag, "%s/%s", stage, keys[i]);
            MF_TRY(mf_tb_scalar(tb, tag, step, wall, (float)nums[i]));
        }
    } else if (metric[0] && value_i >= 0) {
        snprintf(tag, sizeof tag, "%s/%s", stage, metric);
        MF_TRY(mf_tb_scalar(tb, tag, *last_step, wall, (float)nums[value_i]));
    }
    return 0;
}
