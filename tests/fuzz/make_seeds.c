/* make_seeds.c - writes the seed corpora of the fuzz targets (tests/fuzz/make_corpus.sh runs it):
 * a few tiny valid inputs per target and near-valid variants (truncated, wrong field), each with the
 * mode byte the target expects first (see the fuzz_*.c headers). Usage: fuzz_make_seeds CORPUS_DIR */
#include <png.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "mf_checkpoint.h"
#include "mf_error.h"
#include "mf_io.h"

static const char *root;

static void put(const char *target, const char *name, int mode, const void *data, size_t len) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/%s", root, target, name);
    FILE *f = fopen(path, "wb");
    if (!f) perror(path), exit(1);
    if (mode >= 0) fputc(mode, f);
    if (len) fwrite(data, 1, len, f);
    if (fclose(f)) perror(path), exit(1);
}

static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) perror(path), exit(1);
    uint8_t *b = malloc(1 << 20);
    *len = fread(b, 1, 1 << 20, f);
    fclose(f);
    return b;
}

static uint8_t *gzip(const uint8_t *in, size_t n, size_t *out_len) {
    uLongf cap = compressBound(n) + 64;
    uint8_t *out = malloc(cap);
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
    zs.next_in = (Bytef *)in, zs.avail_in = (uInt)n, zs.next_out = out, zs.avail_out = (uInt)cap;
    deflate(&zs, Z_FINISH);
    *out_len = zs.total_out;
    deflateEnd(&zs);
    return out;
}

/* ---- config: YAML \0 override \0 override ... ---- */
static void config_seeds(void) {
    static const char a[] = "name: quick\nseed: 0\nstages: [data, train]\ntrain:\n  steps: 30\n  lr: 2.0e-4\n"
                            "  amp: false\n  schedule: linear\n  mult: [1, 2]\n  ema: [0.999]\n"
                            "  optimizer:\n    beta1: 0.9\nmodel:\n  channels: 16\n";
    put("config", "plain.yaml", -1, a, sizeof a - 1);
    static const char b[] = "defaults: [base.yaml]\ntrain:\n  steps: 5\n\0train.steps=7\0+model.extra={a: 1, b: [x, y]}"
                            "\0~train.lr\0stages=[data,preview]\0train.tag=\"my run\"\0~seed=1";
    put("config", "overrides.bin", -1, b, sizeof b - 1);
    static const char c[] = "include: child.yaml\nbase: &b {x: 1, y: [1, 2]}\nuse: *b\nmore: *b\n"
                            "s: 'quoted: yes'\nn: ~\nmulti: |\n  line 1\n  line 2\n";
    put("config", "anchors.yaml", -1, c, sizeof c - 1);
    static const char d[] = "defaults: cycle.yaml\n";
    put("config", "cycle.yaml", -1, d, sizeof d - 1);
    static const char e[] = "train: {steps: [1, 2}\n";
    put("config", "broken.yaml", -1, e, sizeof e - 1);
    static const char f[] = "a:\n  b:\n    c: 1\n\0a.b.c=2\0+a.b.d.e=[1, 2, 2]\0a.b=\0~a.b\0+a=1";
    put("config", "nested.bin", -1, f, sizeof f - 1);
    static const char g[] = "train:\n  steps: 1e3\n  lr: .inf\n  amp: maybe\n  stpes: 4\n";
    put("config", "badvalues.yaml", -1, g, sizeof g - 1);
}

/* ---- idx: mode byte (bit 0 gzip, bits 1-2 sha) + file ---- */
static void idx_seeds(void) {
    uint8_t u8[4 + 8 + 6] = {0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 255};
    put("idx", "u8_2x3", 0, u8, sizeof u8);
    put("idx", "u8_2x3_gz_sha", 1 | 2, u8, sizeof u8);
    put("idx", "u8_truncated", 0, u8, sizeof u8 - 2);
    size_t gl;
    uint8_t *gz = gzip(u8, sizeof u8, &gl);
    put("idx", "u8_pregz", 0, gz, gl);
    put("idx", "u8_pregz_cut", 0, gz, gl - 5);
    free(gz);
    uint8_t f32[4 + 4 + 8] = {0, 0, 0x0D, 1, 0, 0, 0, 2, 0x3f, 0x80, 0, 0, 0xc0, 0, 0, 0};
    put("idx", "f32_2", 4, f32, sizeof f32);
    uint8_t i16[4 + 12 + 4] = {0, 0, 0x0B, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0x12, 0x34, 0xff, 0xfe};
    put("idx", "i16_1x1x2", 6, i16, sizeof i16);
    uint8_t f64[4 + 16 + 8] = {0, 0, 0x0E, 4, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0x3f, 0xf0};
    put("idx", "f64_1x1x1x1", 0, f64, sizeof f64);
}

/* ---- png: mode byte + file ---- */
static void write_png(const char *path, int w, int h, int depth, int color, int interlace, int trns) {
    FILE *f = fopen(path, "wb");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (!f || !png || !info || setjmp(png_jmpbuf(png))) fprintf(stderr, "png seed failed\n"), exit(1);
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color, interlace, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (color == PNG_COLOR_TYPE_PALETTE) {
        png_color pal[4] = {{0, 0, 0}, {255, 0, 0}, {0, 255, 0}, {40, 40, 200}};
        png_set_PLTE(png, info, pal, 4);
    }
    if (trns) {
        png_byte t[2] = {0, 128};
        png_color_16 tc = {0, 0, 0, 0, 0};
        png_set_tRNS(png, info, t, color == PNG_COLOR_TYPE_PALETTE ? 2 : 0, &tc);
    }
    png_write_info(png, info);
    int ch = png_get_channels(png, info);
    size_t rb = ((size_t)w * (size_t)ch * (size_t)depth + 7) / 8;
    png_bytep *rows = malloc(sizeof *rows * (size_t)h);
    uint8_t *px = malloc(rb * (size_t)h);
    for (size_t i = 0; i < rb * (size_t)h; i++) px[i] = (uint8_t)(i * 37 + 11);
    if (color == PNG_COLOR_TYPE_PALETTE)
        for (size_t i = 0; i < rb * (size_t)h; i++) px[i] &= depth == 8 ? 3 : 0xff; /* indices < 4 */
    for (int y = 0; y < h; y++) rows[y] = px + (size_t)y * rb;
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    fclose(f);
    free(rows);
    free(px);
}

static void png_seed(const char *tmp, const char *name, int mode, int w, int h, int depth, int color, int il,
                     int trns, size_t cut) {
    write_png(tmp, w, h, depth, color, il, trns);
    size_t len;
    uint8_t *b = slurp(tmp, &len);
    put("png", name, mode, b, len - (cut < len ? cut : 0));
    free(b);
}

static void png_seeds(void) {
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s/png/.tmp.png", root);
    png_seed(tmp, "gray8_4x3", 0x02, 4, 3, 8, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, 0, 0);
    png_seed(tmp, "rgb8_3x2_folder_resize", 0x03 | 0x10 | 0x80, 3, 2, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, 0, 0);
    png_seed(tmp, "rgba16_interlaced", 0x01 | 0x02 | 0x20 | 0x40, 5, 4, 16, PNG_COLOR_TYPE_RGBA, PNG_INTERLACE_ADAM7, 0, 0);
    png_seed(tmp, "palette2_trns", 0x02 | 0x08 | 0x30, 6, 2, 2, PNG_COLOR_TYPE_PALETTE, PNG_INTERLACE_NONE, 1, 0);
    png_seed(tmp, "gray1", 0x00, 9, 2, 1, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, 0, 0);
    png_seed(tmp, "ga8_folder_classes", 0x02 | 0x40 | 0x80 | 0x04, 2, 2, 8, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_INTERLACE_NONE, 0, 0);
    png_seed(tmp, "rgb8_truncated", 0x02, 3, 3, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, 0, 20);
    remove(tmp);
}

/* ---- ckpt: mode byte (bit 0 fix the SHA-256 trailer, bit 1 gzip) + file ---- */
static void ckpt_seeds(void) {
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s/ckpt/.tmp.mfc", root);
    float a[3] = {1.0f, -2.5f, 3.0f}, b[2] = {0.5f, 0.25f};
    mf_ckpt c;
    memset(&c, 0, sizeof c);
    c.step = 42;
    snprintf(c.config_hash, sizeof c.config_hash, "%064d", 7);
    c.n_sections = 2;
    snprintf(c.s[0].name, sizeof c.s[0].name, "model");
    c.s[0].n = 3, c.s[0].data = a;
    snprintf(c.s[1].name, sizeof c.s[1].name, "ema");
    c.s[1].n = 2, c.s[1].data = b;
    if (mf_ckpt_save(tmp, &c)) fprintf(stderr, "%s\n", mf_last_error()), exit(1);
    size_t len;
    uint8_t *buf = slurp(tmp, &len);
    put("ckpt", "two_sections", 0, buf, len);
    put("ckpt", "two_sections_fix", 1, buf, len);
    put("ckpt", "two_sections_gz", 2, buf, len);
    put("ckpt", "truncated_fix", 1, buf, len - 40);
    /* version 1: no metadata length (bytes 80..83 of version 2 with empty metadata) */
    memmove(buf + 80, buf + 84, len - 84);
    buf[7] = 1;
    put("ckpt", "v1_fix", 1, buf, len - 4);
    free(buf);
    c.meta = "step=42\nlr=0.0002\nsegment=1";
    if (mf_ckpt_save(tmp, &c)) exit(1);
    buf = slurp(tmp, &len);
    put("ckpt", "meta_fix", 1, buf, len);
    buf[84 + 28 + 32] = 0x7f; /* first section's float count */
    put("ckpt", "bad_count_fix", 1, buf, len);
    free(buf);
    c.meta = NULL;
    c.n_sections = 0;
    if (mf_ckpt_save(tmp, &c)) exit(1);
    buf = slurp(tmp, &len);
    put("ckpt", "empty", 0, buf, len);
    free(buf);
    remove(tmp);
}

int main(int argc, char **argv) {
    if (argc != 2) return fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]), 2;
    root = argv[1];
    config_seeds();
    idx_seeds();
    png_seeds();
    ckpt_seeds();
    return 0;
}
