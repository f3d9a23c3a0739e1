/* test_safetensors.c - the safetensors writer and reader: bit-exact round trips with metadata (quotes,
 * unicode), the 8-aligned data start, the exact bytes of a tiny file, and every hostile header the
 * reader must refuse, each with the message that names the problem. */
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mf_error.h"
#include "mf_safetensors.h"
#include "mf_test.h"

static char g_dir[512];

static char *tpath(const char *name) { return mf_xasprintf("%s/%s", g_dir, name); }

static void write_bytes(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
        perror(path);
        exit(2);
    }
}

static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    *len = fread(b, 1, (size_t)n, f);
    fclose(f);
    return b;
}

/* A file with header length hlen (the JSON's own length when hlen is UINT64_MAX), the header bytes
 * and dlen data bytes (a counting pattern). */
static void write_raw(const char *path, const char *json, size_t jlen, uint64_t hlen, size_t dlen) {
    if (hlen == UINT64_MAX) hlen = jlen;
    size_t size = 8 + jlen + dlen;
    uint8_t *b = malloc(size);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(hlen >> (8 * i));
    memcpy(b + 8, json, jlen);
    for (size_t i = 0; i < dlen; i++) b[8 + jlen + i] = (uint8_t)i;
    write_bytes(path, b, size);
    free(b);
}

/* Opening a file made of json + dlen data bytes fails with a message containing needle (and the path). */
static void refuse_n(int line, const char *json, size_t jlen, uint64_t hlen, size_t dlen, const char *needle) {
    char *p = tpath("hostile.safetensors");
    write_raw(p, json, jlen, hlen, dlen);
    mf_st_file f;
    mf_error_clear();
    int rc = mf_st_open(p, &f);
    CHECK_MSG(rc == -1, "line %d: accepted", line);
    CHECK_MSG(strstr(mf_last_error(), needle) != NULL, "line %d: error was: %s (wanted %s)", line, mf_last_error(),
              needle);
    CHECK_MSG(strstr(mf_last_error(), p) != NULL, "line %d: path missing: %s", line, mf_last_error());
    CHECK(f.entries == NULL && f.map == NULL);
    free(p);
}
#define REFUSE(json, dlen, needle) refuse_n(__LINE__, (json), strlen(json), UINT64_MAX, (dlen), (needle))

static void test_round_trip(void) {
    float a[6] = {1.0f, -2.5f, 3.25f, 0.0f, -0.0f, 1e-38f};
    uint32_t nanbits = 0x7fc01234u; /* a NaN payload must survive */
    memcpy(&a[3], &nanbits, 4);
    double d[3] = {3.141592653589793, -1e300, 5e-324};
    int64_t l[2] = {INT64_MIN, INT64_MAX};
    uint8_t u[5] = {0, 1, 127, 128, 255};
    uint16_t h[4] = {0x3c00, 0x8000, 0x7bff, 0xffff};
    mf_st_tensor t[] = {
        {"net.conv1.weight", "F32", 2, {2, 3}, a, sizeof a},
        {"net.b\"ias\\ é", "F64", 1, {3}, d, sizeof d},
        {"scalar_i64s", "I64", 1, {2}, l, sizeof l},
        {"bytes", "U8", 3, {1, 5, 1}, u, sizeof u},
        {"empty", "F32", 2, {0, 7}, NULL, 0},
        {"half", "F16", 1, {4}, h, sizeof h},
        {"bf", "BF16", 2, {2, 2}, h, sizeof h},
        {"i", "I32", 0, {0}, a, 4},
    };
    const char *meta[] = {"format", "pt", "note", "say \"hi\" \\ \n\t é ü 日本 😀", "ctrl", "\x01\x1f"};
    char *p = tpath("rt.safetensors");
    CHECK(mf_st_write(p, t, 8, meta, 3) == 0);
    mf_st_file f;
    CHECK_MSG(mf_st_open(p, &f) == 0, "%s", mf_last_error());
    CHECK(f.n == 8 && f.n_meta == 3);
    CHECK(f.data_start % 8 == 0);
    for (int i = 0; i < 8 && i < f.n; i++) {
        const mf_st_entry *e = mf_st_find(&f, t[i].name);
        CHECK_MSG(e != NULL, "%s", t[i].name);
        if (!e) continue;
        CHECK(e == &f.entries[i]); /* header order = given order */
        CHECK(strcmp(e->dtype, t[i].dtype) == 0);
        CHECK(e->ndim == t[i].ndim);
        for (int k = 0; k < e->ndim; k++) CHECK(e->shape[k] == t[i].shape[k]);
        CHECK(e->nbytes == t[i].nbytes);
        CHECK(e->nbytes == 0 || memcmp(e->data, t[i].data, e->nbytes) == 0);
    }
    CHECK(f.entries[0].begin == 0 && f.entries[0].end == 24 && f.entries[1].begin == 24);
    CHECK(f.entries[7].numel == 1 && f.entries[4].numel == 0);
    for (int i = 0; i < 3; i++) {
        const char *v = mf_st_meta(&f, meta[2 * i]);
        CHECK_MSG(v && strcmp(v, meta[2 * i + 1]) == 0, "%s", v ? v : "(null)");
    }
    CHECK(mf_st_meta(&f, "nope") == NULL && mf_st_find(&f, "nope") == NULL);
    CHECK(f.size == f.data_start + 24 + 24 + 16 + 5 + 0 + 8 + 8 + 4);
    mf_st_close(&f);
    CHECK(f.map == NULL);

    /* no tensors, no metadata: "{}" padded to 8 */
    CHECK(mf_st_write(p, NULL, 0, NULL, 0) == 0);
    size_t len;
    uint8_t *b = slurp(p, &len);
    CHECK(len == 16 && b[0] == 8 && memcmp(b + 8, "{}      ", 8) == 0);
    free(b);
    CHECK(mf_st_open(p, &f) == 0 && f.n == 0 && f.n_meta == 0);
    mf_st_close(&f);

    /* escapes the writer never emits: \u with surrogate pairs, \/ \b \f */
    const char *j = "{\"__metadata__\":{\"k\\u00e9\":\"\\ud83d\\ude00\\/\\b\\f\\u65E5\"},"
                    "\"x\\\"y\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}";
    write_raw(p, j, strlen(j), UINT64_MAX, 2);
    CHECK_MSG(mf_st_open(p, &f) == 0, "%s", mf_last_error());
    const char *v = mf_st_meta(&f, "k\xc3\xa9");
    CHECK(v && strcmp(v, "\xf0\x9f\x98\x80/\b\f\xe6\x97\xa5") == 0);
    CHECK(mf_st_find(&f, "x\"y") != NULL);
    mf_st_close(&f);
    free(p);
}

static void test_known_bytes(void) {
    float a[2] = {1.0f, 2.0f};
    mf_st_tensor t = {"a", "F32", 1, {2}, a, sizeof a};
    const char *meta[] = {"k", "v\"\xc3\xa9"};
    char *p = tpath("known.safetensors");
    CHECK(mf_st_write(p, &t, 1, meta, 1) == 0);
    const char expect[] = "\x58\0\0\0\0\0\0\0"
                          "{\"__metadata__\":{\"k\":\"v\\\"\xc3\xa9\"},"
                          "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}     "
                          "\x00\x00\x80\x3f\x00\x00\x00\x40";
    size_t len;
    uint8_t *b = slurp(p, &len);
    CHECK_MSG(len == sizeof expect - 1, "%zu", len);
    CHECK(b && len == sizeof expect - 1 && memcmp(b, expect, len) == 0);
    free(b);
    free(p);
}

static void test_writer_refuses(void) {
    float a[2] = {0};
    char *p = tpath("w.safetensors");
    mf_st_tensor t[2] = {{"a", "F32", 1, {2}, a, 8}, {"a", "F32", 1, {2}, a, 8}};
    CHECK(mf_st_write(p, t, 2, NULL, 0) == -1);
    CHECK_ERR_CONTAINS("duplicate tensor name \"a\"");
    t[1].name = "b";
    t[1].dtype = "F8";
    CHECK(mf_st_write(p, t, 2, NULL, 0) == -1);
    CHECK_ERR_CONTAINS("unknown dtype \"F8\"");
    t[1].dtype = "F32";
    t[1].nbytes = 4;
    CHECK(mf_st_write(p, t, 2, NULL, 0) == -1);
    CHECK_ERR_CONTAINS("4 bytes given");
    t[1].nbytes = 8;
    const char *meta[] = {"k", "1", "k", "2"};
    CHECK(mf_st_write(p, t, 2, meta, 2) == -1);
    CHECK_ERR_CONTAINS("duplicate metadata key \"k\"");
    t[1].name = "__metadata__";
    CHECK(mf_st_write(p, t, 2, NULL, 0) == -1);
    t[1].name = "bad\xff";
    CHECK(mf_st_write(p, t, 2, NULL, 0) == -1);
    CHECK_ERR_CONTAINS("UTF-8");
    CHECK(access(p, F_OK) != 0); /* nothing written */
    free(p);
}

#define T(name, body) "\"" name "\":{" body "}"
static void test_hostile(void) {
    /* file too short / header length */
    char *p = tpath("short.safetensors");
    write_bytes(p, "\x01\0\0", 3);
    mf_st_file f;
    CHECK(mf_st_open(p, &f) == -1);
    CHECK_ERR_CONTAINS("shorter than the 8-byte header length");
    free(p);
    refuse_n(__LINE__, "{}", 2, 3, 0, "header length 3 at byte offset 0 goes beyond the end of the file");
    refuse_n(__LINE__, "{}", 2, 100000001, 0, "exceeds the limit");
    refuse_n(__LINE__, "{}", 2, UINT64_MAX - 3, 0, "exceeds the limit");
    /* UTF-8 */
    REFUSE("{\"a\xff\":1}", 0, "byte offset 11: not valid UTF-8");
    REFUSE("{\"\xc0\xaf\":1}", 0, "byte offset 10: not valid UTF-8");      /* overlong */
    REFUSE("{\"\xed\xa0\x80\":1}", 0, "byte offset 10: not valid UTF-8");  /* encoded surrogate */
    REFUSE("{\"\xe6\x97\":1}", 0, "byte offset 10: not valid UTF-8");      /* truncated */
    /* JSON syntax, with offsets */
    REFUSE("", 0, "byte offset 8: JSON syntax error: expected '{', found the end");
    REFUSE("[]", 0, "byte offset 8: JSON syntax error: expected '{'");
    REFUSE("{\"a\" 1}", 0, "byte offset 13: JSON syntax error: expected ':'");
    REFUSE("{\"a", 0, "unterminated string");
    REFUSE("{} x", 0, "byte offset 11: JSON syntax error: trailing bytes");
    REFUSE("{,}", 0, "byte offset 9: JSON syntax error: expected '\"'");
    REFUSE("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},}", 1, "JSON syntax error: expected '\"'");
    REFUSE("{\"a\\q\":{}}", 0, "byte offset 11: JSON syntax error: bad escape \\q");
    REFUSE("{\"a\\u12G4\":{}}", 0, "bad hex digit");
    REFUSE("{\"\\ud800x\":{}}", 0, "byte offset 10: JSON syntax error: high surrogate \\uD800 without a low one");
    REFUSE("{\"\\ud800\\u0041\":{}}", 0, "high surrogate");
    REFUSE("{\"\\udc00\":{}}", 0, "lone low surrogate");
    REFUSE("{\"\\u0000\":{}}", 0, "\\u0000");
    REFUSE("{\"a\tb\":{}}", 0, "control character 0x09");
    REFUSE("{" T("a", "\"dtype\":\"U8\",\"shape\":[01],\"data_offsets\":[0,1]") "}", 1, "leading zero");
    REFUSE("{" T("a", "\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]") "}", 1, "expected a non-negative integer");
    REFUSE("{" T("a", "\"dtype\":\"U8\",\"shape\":[1.0],\"data_offsets\":[0,1]") "}", 1, "fraction or exponent");
    REFUSE("{" T("a", "\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,18446744073709551616]") "}", 1, "integer too large");
    REFUSE("{" T("a", "\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]") "}", 1, "exactly 2 integers");
    REFUSE("{" T("a", "\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":1") "}", 1, "unknown field \"x\"");
    REFUSE("{" T("a", "\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]") "}", 1, "duplicate field \"dtype\"");
    REFUSE("{" T("a", "\"dtype\":\"U8\",\"shape\":[1]") "}", 1, "tensor \"a\": missing \"data_offsets\"");
    REFUSE("{\"a\":1}", 0, "byte offset 13: JSON syntax error: expected '{'");
    REFUSE("{" T("a", "\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]") "}", 1, "more than 8 dimensions");
    /* dtype, shape, offsets */
    REFUSE("{" T("w", "\"dtype\":\"F8\",\"shape\":[1],\"data_offsets\":[0,1]") "}", 1, "tensor \"w\": unknown dtype \"F8\"");
    REFUSE("{" T("w", "\"dtype\":1,\"shape\":[1],\"data_offsets\":[0,1]") "}", 1, "dtype is not a string");
    REFUSE("{" T("w", "\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]") "}", 0,
           "tensor \"w\": shape product overflows");
    REFUSE("{" T("w", "\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]") "}", 0,
           "tensor \"w\": shape product overflows");
    REFUSE("{" T("w", "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]") "}", 4,
           "tensor \"w\": data_offsets [0, 4] hold 4 bytes, dtype F32 and its shape need 8");
    REFUSE("{" T("w", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]") "}", 8, "end before they begin");
    REFUSE("{" T("w", "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]") "}", 4,
           "tensor \"w\": data_offsets [0, 8] out of the data buffer (4 bytes)");
    REFUSE("{" T("w", "\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[18446744073709551614,18446744073709551615]") "}", 4,
           "out of the data buffer");
    REFUSE("{" T("a", "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]") "," T("b", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]") "}",
           8, "tensor \"b\": data_offsets [4, 8] overlap tensor \"a\"");
    REFUSE("{" T("a", "\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]") "," T("z", "\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[2,2]") "}",
           4, "tensor \"z\": data_offsets [2, 2] overlap tensor \"a\"");
    REFUSE("{" T("a", "\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]") "," T("b", "\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[3,5]") "}",
           5, "bytes [2, 3) of the data buffer are not covered by any tensor (before \"b\")");
    REFUSE("{" T("b", "\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1,3]") "}", 3, "bytes [0, 1) of the data buffer are not covered");
    REFUSE("{" T("a", "\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]") "}", 3, "bytes [2, 3) of the data buffer are not covered");
    REFUSE("{}", 1, "bytes [0, 1) of the data buffer are not covered");
    /* names, metadata */
    REFUSE("{" T("a", "\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]") "," T("a", "\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]") "}",
           2, "duplicate tensor name \"a\"");
    REFUSE("{\"__metadata__\":{\"k\":1}}", 0, "byte offset 29: metadata value of \"k\" is not a string");
    REFUSE("{\"__metadata__\":{\"k\":{}}}", 0, "metadata value of \"k\" is not a string");
    REFUSE("{\"__metadata__\":{\"k\":null}}", 0, "metadata value of \"k\" is not a string");
    REFUSE("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, "duplicate metadata key \"k\"");
    REFUSE("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate \"__metadata__\"");
    REFUSE("{\"__metadata__\":[]}", 0, "expected '{'");
    /* a directory, a missing file */
    mf_st_file g;
    CHECK(mf_st_open(g_dir, &g) == -1);
    CHECK_ERR_CONTAINS("is a directory");
    p = tpath("missing.safetensors");
    CHECK(mf_st_open(p, &g) == -1);
    CHECK_ERR_CONTAINS("cannot open");
    free(p);
    /* accepted: whitespace everywhere, header padded with spaces, an empty tensor at the end */
    const char *ok = " { \"a\" : { \"shape\" : [ 2 ] , \"data_offsets\" : [ 0 , 2 ] , \"dtype\" : \"U8\" } ,"
                     "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[2,2]} }\r\n\t   ";
    p = tpath("ok.safetensors");
    write_raw(p, ok, strlen(ok), UINT64_MAX, 2);
    CHECK_MSG(mf_st_open(p, &g) == 0, "%s", mf_last_error());
    CHECK(g.n == 2 && g.entries[0].nbytes == 2 && ((const uint8_t *)g.entries[0].data)[1] == 1);
    mf_st_close(&g);
    free(p);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "%s", mf_test_tmpdir());
    test_round_trip();
    test_known_bytes();
    test_writer_refuses();
    test_hostile();
    return mf_test_summary("test_safetensors");
}
