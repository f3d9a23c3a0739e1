/* test_io.c - file formats: SHA-256 test vectors, whole-file read (raw and gzip) and atomic write,
 * IDX round trips and every validation error, PNG decoding of all colour types and bit depths, and
 * make_grid-compatible image grids. */
#include <dirent.h>
#include <ftw.h>
#include <png.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "mf_error.h"
#include "mf_io.h"
#include "mf_test.h"

static char g_dir[512];

static char *tpath(const char *name) { return mf_xasprintf("%s/%s", g_dir, name); }

static void write_bytes(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        exit(2);
    }
}

static void write_gz(const char *path, const void *data, size_t len) {
    gzFile g = gzopen(path, "wb9");
    if (!g || gzwrite(g, data, (unsigned)len) != (int)len || gzclose(g) != Z_OK) {
        fprintf(stderr, "%s: gzwrite failed\n", path);
        exit(2);
    }
}

/* Read a file raw (not through the code under test). */
static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    uint8_t *b = mf_xmalloc((size_t)n);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) exit(2);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static int count_temp_files(void) {
    DIR *d = opendir(g_dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".tmp.")) n++;
    if (d) closedir(d);
    return n;
}

/* ---- SHA-256 ---------------------------------------------------------------------------------- */

static void test_sha256(void) {
    char hex[65];
    mf_sha256_hex("", 0, hex);
    CHECK(strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0);
    mf_sha256_hex("abc", 3, hex);
    CHECK(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    mf_sha256_hex(m448, strlen(m448), hex);
    CHECK(strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1") == 0);
    const char *m896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    mf_sha256_hex(m896, strlen(m896), hex);
    CHECK(strcmp(hex, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1") == 0);

    const char *million = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
    char *a = mf_xmalloc(1000000);
    memset(a, 'a', 1000000);
    mf_sha256_hex(a, 1000000, hex);
    CHECK(strcmp(hex, million) == 0);
    /* streaming in awkward chunk sizes gives the same digest */
    static const size_t chunks[] = {1, 3, 55, 56, 63, 64, 65, 1000};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        mf_sha256 s;
        uint8_t d[32];
        mf_sha256_init(&s);
        for (size_t off = 0; off < 1000000; off += chunks[c]) {
            size_t n = 1000000 - off < chunks[c] ? 1000000 - off : chunks[c];
            mf_sha256_update(&s, a + off, n);
        }
        mf_sha256_final(&s, d);
        char h2[65];
        for (int i = 0; i < 32; i++) snprintf(h2 + 2 * i, 3, "%02x", d[i]);
        CHECK_MSG(strcmp(h2, million) == 0, "chunk %zu", chunks[c]);
    }
    char *p = tpath("million.txt");
    write_bytes(p, a, 1000000);
    CHECK(mf_sha256_file(p, hex) == 0 && strcmp(hex, million) == 0);
    free(p);
    p = tpath("missing.bin");
    CHECK(mf_sha256_file(p, hex) == -1);
    CHECK_ERR_CONTAINS(p);
    CHECK_ERR_CONTAINS("No such file");
    free(p);
    free(a);
}

/* ---- whole files ------------------------------------------------------------------------------ */

static void test_files(void) {
    char *p = tpath("plain.bin"), *gz = tpath("plain.bin.gz");
    size_t n = 300000;
    uint8_t *data = mf_xmalloc(n);
    for (size_t i = 0; i < n; i++) data[i] = (uint8_t)((i * 2654435761u) >> 13);
    CHECK(mf_write_file_atomic(p, data, n) == 0);
    write_gz(gz, data, n);
    uint8_t *got = NULL;
    size_t len = 0;
    int was_gz = -1;
    CHECK(mf_read_file(p, &got, &len, &was_gz) == 0);
    CHECK(len == n && was_gz == 0 && got && memcmp(got, data, n) == 0);
    free(got);
    CHECK(mf_read_file(gz, &got, &len, &was_gz) == 0);
    CHECK(len == n && was_gz == 1 && got && memcmp(got, data, n) == 0);
    free(got);
    CHECK(mf_read_file(gz, &got, &len, NULL) == 0 && len == n);
    free(got);

    /* two concatenated gzip members decode to the concatenation (as gunzip does) */
    size_t gl1, gl2;
    uint8_t *g1 = slurp(gz, &gl1);
    char *gz2 = tpath("small.gz");
    write_gz(gz2, "hello ", 6);
    uint8_t *g2 = slurp(gz2, &gl2);
    uint8_t *cat = mf_xmalloc(gl1 + gl2);
    memcpy(cat, g2, gl2);
    memcpy(cat + gl2, g1, gl1);
    write_bytes(gz2, cat, gl1 + gl2);
    CHECK(mf_read_file(gz2, &got, &len, &was_gz) == 0);
    CHECK(len == n + 6 && memcmp(got, "hello ", 6) == 0 && memcmp(got + 6, data, n) == 0);
    free(got);
    free(cat);
    free(g2);

    /* corrupt gzip: a damaged CRC trailer and a damaged method byte */
    g1[gl1 - 6] ^= 0x55;
    write_bytes(gz2, g1, gl1);
    CHECK(mf_read_file(gz2, &got, &len, &was_gz) == -1 && got == NULL);
    CHECK_ERR_CONTAINS(gz2);
    CHECK_ERR_CONTAINS("corrupt gzip data at compressed byte offset");
    g1[gl1 - 6] ^= 0x55;
    g1[2] = 9;
    write_bytes(gz2, g1, gl1);
    CHECK(mf_read_file(gz2, &got, &len, &was_gz) == -1);
    CHECK_ERR_CONTAINS("corrupt gzip data at compressed byte offset");
    g1[2] = 8;
    /* truncated gzip names the offset where the data stopped */
    write_bytes(gz2, g1, gl1 / 2);
    CHECK(mf_read_file(gz2, &got, &len, &was_gz) == -1);
    CHECK_ERR_CONTAINS(gz2);
    char want[128];
    snprintf(want, sizeof want, "truncated gzip data: the compressed stream stops at byte offset %zu", gl1 / 2);
    CHECK_ERR_CONTAINS(want);
    write_bytes(gz2, g1, 2); /* just the magic */
    CHECK(mf_read_file(gz2, &got, &len, &was_gz) == -1);
    CHECK_ERR_CONTAINS("truncated gzip data");
    free(g1);
    free(gz2);

    /* empty file, missing file, directory */
    char *e = tpath("empty");
    write_bytes(e, "", 0);
    CHECK(mf_read_file(e, &got, &len, &was_gz) == 0 && len == 0 && was_gz == 0);
    free(got);
    free(e);
    e = tpath("nope");
    CHECK(mf_read_file(e, &got, &len, NULL) == -1 && got == NULL);
    CHECK_ERR_CONTAINS(e);
    CHECK_ERR_CONTAINS("cannot open");
    free(e);
    CHECK(mf_read_file(g_dir, &got, &len, NULL) == -1);
    CHECK_ERR_CONTAINS(g_dir);

    /* atomic write replaces, leaves no temporary files, and reports failures with the path */
    CHECK(mf_write_file_atomic(p, "short", 5) == 0);
    CHECK(mf_read_file(p, &got, &len, NULL) == 0 && len == 5 && memcmp(got, "short", 5) == 0);
    free(got);
    CHECK(mf_write_file_atomic(p, NULL, 0) == 0);
    CHECK(mf_read_file(p, &got, &len, NULL) == 0 && len == 0);
    free(got);
    CHECK(count_temp_files() == 0);
    char *bad = tpath("no/such/dir/file.bin");
    CHECK(mf_write_file_atomic(bad, "x", 1) == -1);
    CHECK_ERR_CONTAINS(bad);
    CHECK_ERR_CONTAINS("No such file or directory");
    free(bad);
    /* renaming onto a directory fails, and the temporary file is removed */
    char *sub = tpath("subdir"), *inner = tpath("subdir/inner");
    CHECK(mkdir(sub, 0777) == 0 && mkdir(inner, 0777) == 0);
    CHECK(mf_write_file_atomic(sub, "x", 1) == -1);
    CHECK_ERR_CONTAINS(sub);
    CHECK(count_temp_files() == 0);
    free(inner);
    free(sub);
    free(p);
    free(gz);
    free(data);
}

/* ---- IDX -------------------------------------------------------------------------------------- */

/* mf_idx_read must fail on `bytes` with a message containing the path and `words`. */
static void expect_idx_error(const char *name, const void *bytes, size_t len, int gz,
                             const char *sha, const char *words) {
    char *p = tpath(name);
    if (gz)
        write_gz(p, bytes, len);
    else
        write_bytes(p, bytes, len);
    mf_idx idx;
    mf_error_clear();
    int rc = mf_idx_read(p, sha, &idx);
    CHECK_MSG(rc == -1, "%s: expected an error", name);
    CHECK(idx.data == NULL);
    CHECK_MSG(strncmp(mf_last_error(), p, strlen(p)) == 0, "error does not start with the path: %s",
              mf_last_error());
    CHECK_ERR_CONTAINS(words);
    free(p);
}

static void test_idx(void) {
    /* round trip, raw and gzipped, with checksums of the uncompressed bytes */
    int64_t dims[3] = {3, 4, 5};
    uint8_t data[60];
    for (int i = 0; i < 60; i++) data[i] = (uint8_t)(i * 7 + 1);
    char *p = tpath("rt-idx3-ubyte"), *pgz = tpath("rt-idx3-ubyte.gz");
    CHECK(mf_idx_write_u8(p, 3, dims, data) == 0);
    size_t rawlen;
    uint8_t *raw = slurp(p, &rawlen);
    CHECK(rawlen == 16 + 60);
    static const uint8_t hdr[16] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5};
    CHECK(memcmp(raw, hdr, 16) == 0);
    write_gz(pgz, raw, rawlen);
    char sha[65], upper[65];
    CHECK(mf_sha256_file(p, sha) == 0);
    for (int i = 0; i < 65; i++) upper[i] = (char)(sha[i] >= 'a' && sha[i] <= 'f' ? sha[i] - 32 : sha[i]);
    const char *paths[2] = {p, pgz};
    for (int k = 0; k < 2; k++) {
        mf_idx idx;
        CHECK(mf_idx_read(paths[k], k ? upper : sha, &idx) == 0);
        CHECK(idx.dtype == MF_IDX_U8 && idx.ndim == 3 && idx.nbytes == 60);
        CHECK(idx.dims[0] == 3 && idx.dims[1] == 4 && idx.dims[2] == 5);
        CHECK(idx.data && memcmp(idx.data, data, 60) == 0);
        mf_idx_free(&idx);
        CHECK(idx.data == NULL);
        CHECK(mf_idx_read(paths[k], NULL, &idx) == 0 && idx.nbytes == 60);
        mf_idx_free(&idx);
    }
    int64_t d1[1] = {1};
    uint8_t one = 42;
    CHECK(mf_idx_write_u8(p, 1, d1, &one) == 0);
    mf_idx idx;
    CHECK(mf_idx_read(p, NULL, &idx) == 0 && idx.ndim == 1 && idx.dims[0] == 1 && idx.data[0] == 42);
    mf_idx_free(&idx);
    mf_idx_free(NULL);
    CHECK(count_temp_files() == 0);

    /* multi-byte payloads are big-endian on disk and host order in memory */
    static const uint8_t i32[] = {0, 0, 0x0C, 1, 0, 0, 0, 3, 0x00, 0x00, 0x00, 0x01,
                                  0xFF, 0xFF, 0xFF, 0xFE, 0x01, 0x02, 0x03, 0x04};
    char *pi = tpath("i32.idx");
    write_bytes(pi, i32, sizeof i32);
    CHECK(mf_idx_read(pi, NULL, &idx) == 0 && idx.dtype == MF_IDX_I32 && idx.nbytes == 12);
    int32_t v[3];
    memcpy(v, idx.data, sizeof v);
    CHECK(v[0] == 1 && v[1] == -2 && v[2] == 0x01020304);
    mf_idx_free(&idx);
    write_gz(pi, i32, sizeof i32);
    CHECK(mf_idx_read(pi, NULL, &idx) == 0);
    memcpy(v, idx.data, sizeof v);
    CHECK(v[0] == 1 && v[1] == -2 && v[2] == 0x01020304);
    mf_idx_free(&idx);
    static const uint8_t i16[] = {0, 0, 0x0B, 2, 0, 0, 0, 1, 0, 0, 0, 2, 0x80, 0x00, 0x12, 0x34};
    write_bytes(pi, i16, sizeof i16);
    CHECK(mf_idx_read(pi, NULL, &idx) == 0 && idx.ndim == 2 && idx.nbytes == 4);
    int16_t s[2];
    memcpy(s, idx.data, sizeof s);
    CHECK(s[0] == -32768 && s[1] == 0x1234);
    mf_idx_free(&idx);
    static const uint8_t f32[] = {0, 0, 0x0D, 1, 0, 0, 0, 1, 0x3F, 0xC0, 0x00, 0x00}; /* 1.5f */
    write_bytes(pi, f32, sizeof f32);
    CHECK(mf_idx_read(pi, NULL, &idx) == 0);
    float f;
    memcpy(&f, idx.data, 4);
    CHECK(f == 1.5f);
    mf_idx_free(&idx);
    static const uint8_t f64[] = {0, 0, 0x0E, 1, 0, 0, 0, 1, 0xC0, 0x09, 0x21, 0xFB, 0x54, 0x44, 0x2D, 0x18};
    write_bytes(pi, f64, sizeof f64);
    CHECK(mf_idx_read(pi, NULL, &idx) == 0);
    double dv;
    memcpy(&dv, idx.data, 8);
    CHECK(dv == -3.141592653589793);
    mf_idx_free(&idx);
    free(pi);

    /* every validation error */
    expect_idx_error("short", "\0\0\x08", 3, 0, NULL, "at least 4");
    expect_idx_error("html", "<!DOCTYPE html>", 15, 0, NULL, "bad magic 0x3c21444f at byte 0, expected 0x0000XXYY");
    expect_idx_error("html.gz", "<!DOCTYPE html>", 15, 1, NULL, "bad magic 0x3c21444f at byte 0 of the decompressed data");
    expect_idx_error("dtype", "\0\0\x07\x01\0\0\0\x01\x05", 9, 0, NULL, "unknown IDX dtype 0x07 at byte 2");
    expect_idx_error("ndim0", "\0\0\x08\x00\0\0\0\x01\x05", 9, 0, NULL, "bad IDX ndim 0 at byte 3");
    expect_idx_error("ndim5", "\0\0\x08\x05\0\0\0\x01\x05", 9, 0, NULL, "bad IDX ndim 5 at byte 3");
    expect_idx_error("hdr", "\0\0\x08\x03\0\0\0\x02\0\0\0", 11, 0, NULL,
                     "truncated header: 3 dimensions need 16 header bytes, file has 11");
    expect_idx_error("zerodim", "\0\0\x08\x02\0\0\0\x02\0\0\0\0", 12, 0, NULL, "dimension 1 is 0");
    static const uint8_t trunc[] = {0, 0, 8, 2, 0, 0, 0, 3, 0, 0, 0, 4, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    expect_idx_error("trunc", trunc, sizeof trunc, 0, NULL,
                     "truncated: header says 12 bytes of data, file has 10 (byte offset 22)");
    expect_idx_error("trunc.gz", trunc, sizeof trunc, 1, NULL, "truncated: header says 12 bytes of data, file has 10");
    static const uint8_t trail[] = {0, 0, 8, 1, 0, 0, 0, 2, 1, 2, 3, 4, 5};
    expect_idx_error("trail", trail, sizeof trail, 0, NULL, "3 trailing bytes after the data");
    static const uint8_t i32trunc[] = {0, 0, 0x0C, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0};
    expect_idx_error("i32trunc", i32trunc, sizeof i32trunc, 0, NULL, "header says 8 bytes of data, file has 6");
    /* checksum mismatch names both digests; the same for a gzipped copy */
    const char *wrong = "0000000000000000000000000000000000000000000000000000000000000000";
    char want[256];
    snprintf(want, sizeof want, "checksum mismatch: SHA-256 is %s, expected %s (file corrupt or not the expected data set)", sha, wrong);
    expect_idx_error("sum", raw, rawlen, 0, wrong, want);
    expect_idx_error("sum.gz", raw, rawlen, 1, wrong, want);
    expect_idx_error("badsum", raw, rawlen, 0, "abc", "not 64 hexadecimal digits");
    /* corrupt and truncated gzip */
    size_t gl;
    uint8_t *g = slurp(pgz, &gl);
    g[gl - 7] ^= 0xFF; /* CRC-32 trailer */
    char *pc = tpath("corrupt.gz");
    write_bytes(pc, g, gl);
    CHECK(mf_idx_read(pc, NULL, &idx) == -1);
    CHECK_ERR_CONTAINS(pc);
    CHECK_ERR_CONTAINS("corrupt gzip data at compressed byte offset");
    write_bytes(pc, g, gl - 10);
    CHECK(mf_idx_read(pc, NULL, &idx) == -1);
    CHECK_ERR_CONTAINS(pc);
    CHECK_ERR_CONTAINS("truncated gzip data");
    char *pm = tpath("missing-idx");
    CHECK(mf_idx_read(pm, NULL, &idx) == -1 && idx.data == NULL);
    CHECK_ERR_CONTAINS(pm);
    free(pm);
    free(pc);
    free(g);
    free(raw);
    free(p);
    free(pgz);
}

/* ---- PNG -------------------------------------------------------------------------------------- */

/* Write a PNG of any type with libpng directly; `rows` are in PNG byte order (packed, big-endian). */
static void libpng_write(const char *path, int w, int h, int depth, int color_type, int interlace,
                         const uint8_t *data, size_t stride, const png_color *pal, int npal,
                         const uint8_t *trans, int ntrans) {
    FILE *f = fopen(path, "wb");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    png_bytep *rows = mf_xmalloc(sizeof(png_bytep) * (size_t)h);
    if (!f || setjmp(png_jmpbuf(png))) {
        fprintf(stderr, "%s: test PNG writer failed\n", path);
        exit(2);
    }
    png_init_io(png, f);
#ifdef PNG_CHECK_FOR_INVALID_INDEX_SUPPORTED
    png_set_check_for_invalid_index(png, 0); /* so that a test can write indices beyond the palette */
#endif
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color_type,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (pal) png_set_PLTE(png, info, pal, npal);
    if (trans) png_set_tRNS(png, info, trans, ntrans, NULL);
    png_write_info(png, info);
    if (interlace) (void)png_set_interlace_handling(png);
    for (int y = 0; y < h; y++) rows[y] = (png_bytep)(data + (size_t)y * stride);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    fclose(f);
    free(rows);
}

/* Read `path` as `ch` channels and compare with `expect` (w x h). */
static void expect_png(const char *path, int ch, int w, int h, const uint8_t *expect) {
    int gw = 0, gh = 0;
    uint8_t *px = NULL;
    int rc = mf_png_read(path, ch, &gw, &gh, &px);
    CHECK_MSG(rc == 0, "%s", mf_last_error());
    CHECK_MSG(gw == w && gh == h, "%s: %dx%d, expected %dx%d", path, gw, gh, w, h);
    if (rc == 0 && gw == w && gh == h) {
        int same = memcmp(px, expect, (size_t)w * h * ch) == 0;
        CHECK_MSG(same, "%s read as %d channels differs", path, ch);
        if (!same)
            for (int i = 0; i < w * h * ch && i < 24; i++) fprintf(stderr, " %d/%d", px[i], expect[i]);
    }
    free(px);
}

static void test_png(void) {
    char *p = tpath("gray.png");
    /* gray round trip, and gray -> RGB */
    uint8_t g[5 * 3], g3[5 * 3 * 3];
    for (int i = 0; i < 15; i++) {
        g[i] = (uint8_t)(i * 17);
        g3[3 * i] = g3[3 * i + 1] = g3[3 * i + 2] = g[i];
    }
    CHECK(mf_png_write(p, 5, 3, 1, g) == 0);
    expect_png(p, 1, 5, 3, g);
    expect_png(p, 3, 5, 3, g3);
    /* RGB round trip, and RGB -> gray with Pillow's ITU-R 601 weights */
    static const uint8_t rgb[2 * 3 * 3] = {255, 0, 0, 0, 255, 0, 0, 0, 255,
                                           255, 255, 255, 0, 0, 0, 10, 100, 200};
    static const uint8_t rgb_gray[6] = {76, 150, 29, 255, 0, 84}; /* PIL convert("L") */
    CHECK(mf_png_write(p, 3, 2, 3, rgb) == 0);
    expect_png(p, 3, 3, 2, rgb);
    expect_png(p, 1, 3, 2, rgb_gray);
    CHECK(count_temp_files() == 0);

    /* palette, 8-bit indices with a tRNS chunk (alpha dropped) */
    static const png_color pal[4] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {10, 100, 200}};
    static const uint8_t trans[2] = {0, 128};
    static const uint8_t idx8[6] = {0, 1, 2, 3, 2, 1};
    static const uint8_t idx8_rgb[18] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 100, 200, 0, 0, 255, 0, 255, 0};
    static const uint8_t idx8_gray[6] = {76, 150, 29, 84, 29, 150};
    libpng_write(p, 3, 2, 8, PNG_COLOR_TYPE_PALETTE, 0, idx8, 3, pal, 4, trans, 2);
    expect_png(p, 3, 3, 2, idx8_rgb);
    expect_png(p, 1, 3, 2, idx8_gray);
    /* palette, 2-bit packed indices */
    static const uint8_t idx2[1] = {0x1B}; /* 0,1,2,3 */
    static const uint8_t idx2_rgb[12] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 100, 200};
    libpng_write(p, 4, 1, 2, PNG_COLOR_TYPE_PALETTE, 0, idx2, 1, pal, 4, NULL, 0);
    expect_png(p, 3, 4, 1, idx2_rgb);
    /* gray 1-bit: 0/1 -> 0/255 */
    static const uint8_t bits[1] = {0xB0};
    static const uint8_t bits8[8] = {255, 0, 255, 255, 0, 0, 0, 0};
    libpng_write(p, 8, 1, 1, PNG_COLOR_TYPE_GRAY, 0, bits, 1, NULL, 0, NULL, 0);
    expect_png(p, 1, 8, 1, bits8);
    /* gray 4-bit: v -> v * 17 */
    static const uint8_t nib[2] = {0x0F, 0x8A};
    static const uint8_t nib8[4] = {0, 255, 136, 170};
    libpng_write(p, 4, 1, 4, PNG_COLOR_TYPE_GRAY, 0, nib, 2, NULL, 0, NULL, 0);
    expect_png(p, 1, 4, 1, nib8);
    /* gray 16-bit: the high byte */
    static const uint8_t g16[8] = {0x00, 0x00, 0x12, 0xFF, 0x80, 0x00, 0xFF, 0xFF};
    static const uint8_t g16_8[4] = {0x00, 0x12, 0x80, 0xFF};
    static const uint8_t g16_rgb[12] = {0, 0, 0, 0x12, 0x12, 0x12, 0x80, 0x80, 0x80, 255, 255, 255};
    libpng_write(p, 2, 2, 16, PNG_COLOR_TYPE_GRAY, 0, g16, 4, NULL, 0, NULL, 0);
    expect_png(p, 1, 2, 2, g16_8);
    expect_png(p, 3, 2, 2, g16_rgb);
    /* RGBA 16-bit: alpha dropped, high bytes kept */
    static const uint8_t rgba16[16] = {0xFF, 0xFF, 0x80, 0x00, 0x00, 0x00, 0x12, 0x34,
                                       0x01, 0x00, 0x02, 0x00, 0x03, 0x00, 0xFF, 0xFF};
    static const uint8_t rgba16_rgb[6] = {255, 128, 0, 1, 2, 3};
    libpng_write(p, 2, 1, 16, PNG_COLOR_TYPE_RGB_ALPHA, 0, rgba16, 16, NULL, 0, NULL, 0);
    expect_png(p, 3, 2, 1, rgba16_rgb);
    /* gray + alpha 8-bit */
    static const uint8_t ga[4] = {10, 0, 200, 255};
    static const uint8_t ga_g[2] = {10, 200}, ga_rgb[6] = {10, 10, 10, 200, 200, 200};
    libpng_write(p, 2, 1, 8, PNG_COLOR_TYPE_GRAY_ALPHA, 0, ga, 4, NULL, 0, NULL, 0);
    expect_png(p, 1, 2, 1, ga_g);
    expect_png(p, 3, 2, 1, ga_rgb);
    /* RGBA 8-bit and interlaced RGB */
    uint8_t big[13 * 11 * 4], big_rgb[13 * 11 * 3];
    uint32_t r = 12345;
    for (int i = 0; i < 13 * 11; i++) {
        for (int c = 0; c < 4; c++) {
            r = r * 1103515245u + 12345u;
            big[4 * i + c] = (uint8_t)(r >> 16);
            if (c < 3) big_rgb[3 * i + c] = big[4 * i + c];
        }
    }
    libpng_write(p, 13, 11, 8, PNG_COLOR_TYPE_RGB_ALPHA, 0, big, 13 * 4, NULL, 0, NULL, 0);
    expect_png(p, 3, 13, 11, big_rgb);
    libpng_write(p, 13, 11, 8, PNG_COLOR_TYPE_RGB, 1, big_rgb, 13 * 3, NULL, 0, NULL, 0);
    expect_png(p, 3, 13, 11, big_rgb);

    /* errors: not a PNG, empty, truncated, bad CRC, absurd size, missing */
    int w, h;
    uint8_t *px = NULL;
    char *q = tpath("fake.png");
    write_bytes(q, "GIF89a\1\0\1\0\0\0\0", 13);
    CHECK(mf_png_read(q, 1, &w, &h, &px) == -1 && px == NULL);
    CHECK_ERR_CONTAINS(q);
    CHECK_ERR_CONTAINS(": not a PNG file");
    write_bytes(q, "", 0);
    CHECK(mf_png_read(q, 3, &w, &h, &px) == -1);
    CHECK_ERR_CONTAINS("not a PNG file");
    uint8_t noise[64 * 64];
    for (int i = 0; i < 64 * 64; i++) {
        r = r * 1103515245u + 12345u;
        noise[i] = (uint8_t)(r >> 16);
    }
    CHECK(mf_png_write(q, 64, 64, 1, noise) == 0);
    expect_png(q, 1, 64, 64, noise);
    size_t plen;
    uint8_t *pb = slurp(q, &plen);
    write_bytes(q, pb, plen / 2);
    CHECK(mf_png_read(q, 1, &w, &h, &px) == -1 && px == NULL);
    CHECK_ERR_CONTAINS(q);
    CHECK_ERR_CONTAINS(": corrupt PNG: ");
    CHECK_ERR_CONTAINS("unexpected end of file");
    write_bytes(q, pb, 20); /* inside IHDR */
    CHECK(mf_png_read(q, 1, &w, &h, &px) == -1);
    CHECK_ERR_CONTAINS("corrupt PNG");
    pb[19] ^= 1; /* width low byte: IHDR CRC no longer matches */
    write_bytes(q, pb, plen);
    CHECK(mf_png_read(q, 1, &w, &h, &px) == -1);
    CHECK_ERR_CONTAINS("corrupt PNG: ");
    CHECK_ERR_CONTAINS("CRC");
    free(pb);
    uint8_t *wide = mf_xcalloc(20000 / 8, 1);
    libpng_write(q, 20000, 1, 1, PNG_COLOR_TYPE_GRAY, 0, wide, 20000 / 8, NULL, 0, NULL, 0);
    CHECK(mf_png_read(q, 1, &w, &h, &px) == -1 && px == NULL);
    CHECK_ERR_CONTAINS(q);
    CHECK_ERR_CONTAINS("20000x1");
    free(wide);
    free(q);
    q = tpath("none.png");
    CHECK(mf_png_read(q, 1, &w, &h, &px) == -1);
    CHECK_ERR_CONTAINS(q);
    CHECK_ERR_CONTAINS("cannot open");
    free(q);
    q = tpath("nodir/out.png");
    CHECK(mf_png_write(q, 5, 3, 1, g) == -1);
    CHECK_ERR_CONTAINS(q);
    free(q);
    free(p);
}

/* ---- grids ------------------------------------------------------------------------------------ */

static void test_grid(void) {
    int gh, gw;
    mf_grid_size(10, 28, 28, 10, 2, &gh, &gw);
    CHECK(gh == 32 && gw == 302);
    mf_grid_size(100, 28, 28, 10, 2, &gh, &gw);
    CHECK(gh == 302 && gw == 302);
    mf_grid_size(7, 28, 28, 3, 2, &gh, &gw);
    CHECK(gh == 92 && gw == 92);
    mf_grid_size(3, 28, 28, 8, 2, &gh, &gw); /* nrow > n: one row of 3 */
    CHECK(gh == 32 && gw == 92);
    mf_grid_size(64, 32, 32, 8, 2, &gh, &gw);
    CHECK(gh == 274 && gw == 274);
    mf_grid_size(5, 4, 6, 2, 0, &gh, &gw);
    CHECK(gh == 12 && gw == 12);
    mf_grid_size(1, 28, 28, 8, 2, &gh, &gw); /* make_grid returns a single image unpadded */
    CHECK(gh == 28 && gw == 28);

    /* gray: 7 images of 3x4 in rows of 3, padding 2, pad value 0, values in [-1, 1] */
    enum { N = 7, H = 3, W = 4 };
    static const float level[N] = {-1.0f, 1.0f, 0.0f, 2.0f, -0.5f, 0.5f, -3.0f};
    static const uint8_t level_u8[N] = {0, 255, 128, 255, 64, 191, 0};
    float x[N * H * W];
    for (int k = 0; k < N; k++)
        for (int i = 0; i < H * W; i++) x[k * H * W + i] = level[k];
    x[0 * H * W + 1 * W + 2] = 1.0f; /* a marker in image 0 at (1, 2) */
    x[6 * H * W + 2 * W + 3] = 0.0f; /* and in image 6 at (2, 3) */
    char *p = tpath("grid.png");
    CHECK(mf_grid_write_png(p, x, N, 1, H, W, -1.0f, 1.0f, 3, 2, 0.0f) == 0);
    int w = 0, h = 0;
    uint8_t *px = NULL;
    CHECK(mf_png_read(p, 1, &w, &h, &px) == 0);
    CHECK(w == 3 * (W + 2) + 2 && h == 3 * (H + 2) + 2);
    if (px && w == 20 && h == 17) {
        int ok = 1;
        for (int y = 0; y < h; y++)
            for (int xx = 0; xx < w; xx++) {
                int cy = (y - 2) / (H + 2), cx = (xx - 2) / (W + 2);
                int iy = (y - 2) % (H + 2), ix = (xx - 2) % (W + 2);
                int k = cy * 3 + cx;
                uint8_t want = 0;
                if (y >= 2 && xx >= 2 && iy < H && ix < W && k < N) want = level_u8[k];
                if (k == 0 && iy == 1 && ix == 2 && y >= 2 && xx >= 2) want = 255;
                if (k == 6 && iy == 2 && ix == 3) want = 128;
                if (px[y * w + xx] != want) {
                    if (ok) fprintf(stderr, "grid pixel (%d,%d) = %d, expected %d\n", y, xx, px[y * w + xx], want);
                    ok = 0;
                }
            }
        CHECK(ok);
        CHECK(px[0] == 0 && px[2 * w + 2] == 0 && px[2 * w + 8] == 255 && px[3 * w + 4] == 255);
    }
    free(px);

    /* RGB: channels map independently; pad value 1 -> 255; empty cells are padding */
    enum { C = 3 };
    float xc[2 * C * 2 * 2];
    for (int k = 0; k < 2; k++)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < 4; i++) xc[(k * C + c) * 4 + i] = k == 0 ? (float)c - 1.0f : 0.75f;
    CHECK(mf_grid_write_png(p, xc, 2, C, 2, 2, -1.0f, 1.0f, 3, 1, 1.0f) == 0);
    mf_grid_size(2, 2, 2, 3, 1, &gh, &gw);
    CHECK(gh == 4 && gw == 7);
    CHECK(mf_png_read(p, 3, &w, &h, &px) == 0 && w == gw && h == gh);
    if (px && w == 7 && h == 4) {
        const uint8_t *a = px + (1 * w + 1) * 3, *b = px + (2 * w + 5) * 3, *pad = px + (1 * w + 3) * 3;
        CHECK(a[0] == 0 && a[1] == 128 && a[2] == 255);
        CHECK(b[0] == 223 && b[1] == 223 && b[2] == 223); /* 0.875 * 255 + 0.5 = 223.625 */
        CHECK(pad[0] == 255 && pad[1] == 255 && pad[2] == 255 && px[0] == 255);
    }
    free(px);

    /* a single image is written without padding; lo/hi other than [-1, 1] */
    float one[6] = {0, 1, 2, 3, 4, 5};
    CHECK(mf_grid_write_png(p, one, 1, 1, 2, 3, 0.0f, 5.0f, 8, 2, 0.5f) == 0);
    static const uint8_t one_u8[6] = {0, 51, 102, 153, 204, 255};
    expect_png(p, 1, 3, 2, one_u8);
    CHECK(count_temp_files() == 0);
    free(p);
}

/* ---- inputs stay bounded (issue 9) ------------------------------------------------------------- */

static void test_limits(void) {
    uint8_t *got = NULL;
    size_t len = 0;
    int gz = 0;
    mf_idx idx;
    /* a gzip of a few bytes declaring 2^31 - 1 images of 28x28: refused on its header, at once */
    static const uint8_t huge_hdr[16] = {0, 0, 8, 3, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 28, 0, 0, 0, 28};
    char *p = tpath("huge.idx.gz");
    write_gz(p, huge_hdr, sizeof huge_hdr);
    CHECK(mf_idx_read(p, NULL, &idx) == -1 && idx.data == NULL);
    CHECK_ERR_CONTAINS(p);
    CHECK_ERR_CONTAINS("the header declares 1683627179248 bytes of data (2147483647 items), more than the limit "
                       "of 1073741824 bytes decompressed");
    mf_idx_limits lim = {1000, 50, "data.max_bytes", "data.max_images"};
    CHECK(mf_idx_read_max(p, NULL, &lim, &idx) == -1);
    CHECK_ERR_CONTAINS("declares 2147483647 items (first dimension, byte offset 4), more than the limit of 50; "
                       "raise data.max_images to accept it");
    free(p);
    /* raw: 100 images declared, checked against max_bytes before the (missing) data is read */
    static const uint8_t hdr100[16] = {0, 0, 8, 3, 0, 0, 0, 100, 0, 0, 0, 28, 0, 0, 0, 28};
    p = tpath("h100.idx");
    write_bytes(p, hdr100, sizeof hdr100);
    lim.max_items = 0;
    CHECK(mf_idx_read_max(p, NULL, &lim, &idx) == -1);
    CHECK_ERR_CONTAINS("h100.idx: the header declares 78400 bytes of data (100 items), more than the limit of "
                       "1000 bytes; raise data.max_bytes to accept it");
    lim.max_bytes = 100000;
    CHECK(mf_idx_read_max(p, NULL, &lim, &idx) == -1);
    CHECK_ERR_CONTAINS("truncated"); /* within the limit: the usual error */
    free(p);
    /* gzip is inflated in chunks and stops at the limit: 64 MiB of zeros, limit 1 MiB */
    size_t big = (size_t)64 << 20;
    uint8_t *zeros = mf_xcalloc(big, 1);
    memcpy(zeros, hdr100, sizeof hdr100);
    p = tpath("bomb.gz");
    write_gz(p, zeros, big);
    free(zeros);
    CHECK(mf_read_file_max(p, (size_t)1 << 20, "data.max_bytes", &got, &len, &gz) == -1 && got == NULL);
    CHECK_ERR_CONTAINS("bomb.gz: decompresses to more than 1048576 bytes (stopped after ");
    CHECK_ERR_CONTAINS("the limit; raise data.max_bytes to accept it");
    lim.max_bytes = (size_t)1 << 20; /* the header (100 images) fits: the data is what overflows */
    CHECK(mf_idx_read_max(p, NULL, &lim, &idx) == -1);
    CHECK_ERR_CONTAINS("decompresses to more than 1048576 bytes");
    CHECK(mf_read_file_max(p, big, NULL, &got, &len, &gz) == 0 && len == big && gz == 1);
    free(got);
    got = NULL;
    free(p);
    /* raw files: the size is checked before reading */
    p = tpath("raw10");
    write_bytes(p, "0123456789", 10);
    CHECK(mf_read_file_max(p, 9, NULL, &got, &len, NULL) == -1);
    CHECK_ERR_CONTAINS("raw10: holds more than 9 bytes (10 seen), the limit");
    CHECK(mf_read_file_max(p, 10, NULL, &got, &len, NULL) == 0 && len == 10);
    free(got);
    got = NULL;
    free(p);
    /* a folder is reported as one */
    CHECK(mf_read_file(g_dir, &got, &len, NULL) == -1 && got == NULL);
    CHECK_ERR_CONTAINS("is a directory");
    CHECK(mf_idx_read(g_dir, NULL, &idx) == -1);
    CHECK_ERR_CONTAINS("is a directory");

    /* PNG: width x height checked on IHDR against the limit (default 4096x4096) */
    int w, h;
    uint8_t *px = NULL;
    p = tpath("wide.png");
    uint8_t *row = mf_xcalloc(4097 / 8 + 1, 1);
    libpng_write(p, 4097, 4096, 1, PNG_COLOR_TYPE_GRAY, 0, row, 0, NULL, 0, NULL, 0); /* every row the same */
    free(row);
    CHECK(mf_png_read(p, 1, &w, &h, &px) == -1 && px == NULL);
    CHECK_ERR_CONTAINS("wide.png: the header (IHDR) declares 4097x4096 = 16781312 pixels, more than the limit of 16777216");
    CHECK(mf_png_read_max(p, 1, (uint64_t)4097 * 4096, "data.max_image_pixels", &w, &h, &px) == 0 && w == 4097);
    free(px);
    px = NULL;
    uint8_t g64[64 * 64] = {0};
    CHECK(mf_png_write(p, 64, 64, 1, g64) == 0);
    CHECK(mf_png_read_max(p, 3, 1000, "data.max_image_pixels", &w, &h, &px) == -1 && px == NULL);
    CHECK_ERR_CONTAINS("declares 64x64 = 4096 pixels, more than the limit of 1000; raise data.max_image_pixels to accept it");
    free(p);
    /* palette indices beyond the palette are refused (libpng alone would make them black) */
    static const png_color pal2[2] = {{255, 0, 0}, {0, 255, 0}};
    static const uint8_t idx2[2] = {0x1B, 0x00}; /* 0, 1, 2, 3 | 0, 0, 0, 0 */
    p = tpath("badpal.png");
    libpng_write(p, 4, 2, 2, PNG_COLOR_TYPE_PALETTE, 0, idx2, 1, pal2, 2, NULL, 0);
    CHECK(mf_png_read(p, 3, &w, &h, &px) == -1 && px == NULL);
    CHECK_ERR_CONTAINS("badpal.png: corrupt PNG: palette index 2 at pixel (x 2, y 0) is beyond the 2-entry palette");
    CHECK(mf_png_read(p, 1, &w, &h, &px) == -1);
    free(p);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "%s", mf_test_tmpdir());
    test_sha256();
    test_files();
    test_idx();
    test_png();
    test_grid();
    test_limits();
    if (nftw(g_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return mf_test_summary("test_io");
}
