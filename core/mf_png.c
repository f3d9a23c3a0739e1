/* mf_png.c - PNG reading (any PNG to 8-bit gray or RGB) and writing through libpng, and image grids
 * laid out and quantised exactly like torchvision.utils.make_grid + save_image. */
#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "mf_error.h"
#include "mf_io.h"

#define MF_PNG_MAX_SIDE 16384u /* refuse to decode anything larger per side */

/* libpng callbacks. The context lives on the heap so that nothing the error path needs is an
 * automatic variable modified between setjmp and longjmp. */
typedef struct png_ctx {
    char msg[256];   /* libpng's error message */
    FILE *f;         /* reading */
    size_t off;      /* bytes read so far */
    uint8_t *pix;    /* decoded pixels (reading) */
    png_bytep *rows; /* row pointers (reading) */
    uint8_t *out;    /* encoded bytes (writing) */
    size_t len, cap;
} png_ctx;

static void on_png_error(png_structp png, png_const_charp msg) {
    png_ctx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg ? msg : "unknown libpng error");
    png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg) {
    (void)png; /* warnings (bad ancillary chunks, ...) do not stop decoding */
    (void)msg;
}

static void on_png_read(png_structp png, png_bytep data, size_t n) {
    png_ctx *c = png_get_io_ptr(png);
    size_t got = fread(data, 1, n, c->f);
    c->off += got;
    if (got != n) {
        char m[128];
        if (ferror(c->f))
            snprintf(m, sizeof m, "read error at byte offset %zu: %s", c->off, strerror(errno));
        else
            snprintf(m, sizeof m, "unexpected end of file at byte offset %zu (truncated)", c->off);
        png_error(png, m);
    }
}

static void on_png_write(png_structp png, png_bytep data, size_t n) {
    png_ctx *c = png_get_io_ptr(png);
    if (n > c->cap - c->len) {
        size_t ncap = c->cap ? c->cap : 65536;
        while (ncap - c->len < n) {
            if (ncap > SIZE_MAX / 2) png_error(png, "encoded image too large");
            ncap *= 2;
        }
        uint8_t *p = realloc(c->out, ncap);
        if (!p) png_error(png, "out of memory");
        c->out = p;
        c->cap = ncap;
    }
    memcpy(c->out + c->len, data, n);
    c->len += n;
}

static void on_png_flush(png_structp png) { (void)png; }

/* Pillow's RGB -> L conversion (ITU-R 601 weights, 16-bit fixed point, rounded), so that gray images
 * made from colour PNGs match what torchvision's loaders see. In place: output i <= input 3i. */
static void rgb_to_gray(uint8_t *p, size_t npix) {
    for (size_t i = 0; i < npix; i++) {
        const uint8_t *s = p + 3 * i;
        uint32_t l = (uint32_t)s[0] * 19595u + (uint32_t)s[1] * 38470u + (uint32_t)s[2] * 7471u + 0x8000u;
        p[i] = (uint8_t)(l >> 16);
    }
}

static int png_decode(FILE *f, const char *path, int channels, uint64_t max_pixels, const char *limit_key,
                      int *width, int *height, uint8_t **pixels) {
    png_ctx *c = mf_xcalloc(1, sizeof *c);
    c->f = f;
    c->off = 8;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, c, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        if (png) png_destroy_read_struct(&png, NULL, NULL);
        free(c);
        return mf_fail("%s: cannot initialise libpng", path);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        mf_fail("%s: corrupt PNG: %s", path, c->msg);
        free(c->pix);
        free(c->rows);
        free(c);
        return -1;
    }
    png_set_read_fn(png, c, on_png_read);
    /* ancillary and unknown chunks are buffered whole: without a cap a small file declaring a 1.9 GB
     * chunk makes libpng allocate that much before the read fails */
    png_set_chunk_malloc_max(png, (png_alloc_size_t)8 << 20);
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, 0); /* skipped, not buffered */
    /* libpng 1.6.39 buffers these whole regardless of the cap (sPLT of 1.9 GB in a 100-byte file);
     * none of them changes the pixels we decode, so they are skipped like unknown chunks */
    static const png_byte ignored[] = "sPLT\0iCCP\0zTXt\0iTXt\0tEXt\0eXIf\0pCAL\0sCAL\0hIST\0tIME\0pHYs\0"
                                      "oFFs\0sBIT\0cHRM\0bKGD";
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, ignored, (int)(sizeof ignored / 5));
    png_set_sig_bytes(png, 8);
    png_read_info(png, info);
    png_uint_32 w = 0, h = 0;
    int depth = 0, color_type = 0;
    png_get_IHDR(png, info, &w, &h, &depth, &color_type, NULL, NULL, NULL);
    if (w == 0 || h == 0 || w > MF_PNG_MAX_SIDE || h > MF_PNG_MAX_SIDE) {
        png_destroy_read_struct(&png, &info, NULL);
        free(c);
        return mf_fail("%s: image is %lux%lu pixels, outside the supported 1..%u per side", path,
                       (unsigned long)w, (unsigned long)h, MF_PNG_MAX_SIDE);
    }
    if ((uint64_t)w * h > max_pixels) { /* checked on the header, before anything is allocated */
        png_destroy_read_struct(&png, &info, NULL);
        free(c);
        return mf_fail("%s: the header (IHDR) declares %lux%lu = %llu pixels, more than the limit of %llu%s%s%s",
                       path, (unsigned long)w, (unsigned long)h, (unsigned long long)w * h,
                       (unsigned long long)max_pixels, limit_key ? "; raise " : "", limit_key ? limit_key : "",
                       limit_key ? " to accept it" : "");
    }
    /* Palette images are read as indices and expanded here: libpng would map an index beyond the
     * palette to black (and only warn at the end); such an image is refused. */
    int palette = color_type == PNG_COLOR_TYPE_PALETTE, npal = 0;
    png_colorp pal = NULL;
    if (palette) {
        if (!png_get_PLTE(png, info, &pal, &npal) || npal < 1) png_error(png, "palette image without a palette (PLTE)");
        png_set_packing(png); /* 1/2/4-bit indices to one byte each */
    } else {
        png_set_expand(png); /* gray 1/2/4 -> 8 bit, tRNS -> alpha */
        png_set_strip_16(png);
        png_set_strip_alpha(png);
        if (channels == 3 && !(color_type & PNG_COLOR_MASK_COLOR)) png_set_gray_to_rgb(png);
    }
    (void)png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int nc = png_get_channels(png, info);
    if (png_get_bit_depth(png, info) != 8 || (nc != 1 && nc != 3) || (nc == 1 && channels == 3 && !palette) ||
        (palette && nc != 1) || png_get_rowbytes(png, info) != (size_t)w * (size_t)nc)
        png_error(png, "unsupported pixel layout after conversion");
    c->pix = malloc((size_t)w * h * (size_t)nc);
    c->rows = malloc(sizeof(png_bytep) * h);
    if (!c->pix || !c->rows) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < h; y++) c->rows[y] = c->pix + (size_t)y * w * (size_t)nc;
    png_read_image(png, c->rows);
    if (palette) {
        size_t np = (size_t)w * h;
        for (size_t i = 0; i < np; i++)
            if (c->pix[i] >= npal) {
                char m[160];
                snprintf(m, sizeof m, "palette index %u at pixel (x %zu, y %zu) is beyond the %d-entry palette",
                         c->pix[i], i % w, i / w, npal);
                png_error(png, m);
            }
        uint8_t *rgb = malloc(np * 3);
        if (!rgb) png_error(png, "out of memory");
        for (size_t i = 0; i < np; i++) {
            const png_color *e = &pal[c->pix[i]];
            rgb[3 * i] = e->red, rgb[3 * i + 1] = e->green, rgb[3 * i + 2] = e->blue;
        }
        free(c->pix);
        c->pix = rgb;
        nc = 3;
    }
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    if (nc == 3 && channels == 1) {
        rgb_to_gray(c->pix, (size_t)w * h);
        uint8_t *p = realloc(c->pix, (size_t)w * h);
        if (p) c->pix = p;
    }
    *width = (int)w;
    *height = (int)h;
    *pixels = c->pix;
    free(c->rows);
    free(c);
    return 0;
}

int mf_png_read(const char *path, int channels, int *width, int *height, uint8_t **pixels) {
    return mf_png_read_max(path, channels, 0, NULL, width, height, pixels);
}

int mf_png_read_max(const char *path, int channels, uint64_t max_pixels, const char *limit_key, int *width,
                    int *height, uint8_t **pixels) {
    MF_ASSERT(path && width && height && pixels && (channels == 1 || channels == 3));
    if (!max_pixels) max_pixels = MF_PNG_MAX_PIXELS;
    *width = *height = 0;
    *pixels = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return mf_fail("%s: cannot open: %s", path, strerror(errno));
    uint8_t sig[8];
    size_t n = fread(sig, 1, sizeof sig, f);
    if (n < sizeof sig && ferror(f)) {
        int e = errno;
        fclose(f);
        return mf_fail("%s: read error: %s", path, strerror(e));
    }
    if (n < sizeof sig || png_sig_cmp(sig, 0, sizeof sig) != 0) {
        fclose(f);
        return mf_fail("%s: not a PNG file", path);
    }
    int rc = png_decode(f, path, channels, max_pixels, limit_key, width, height, pixels);
    fclose(f);
    return rc;
}

int mf_png_write(const char *path, int width, int height, int channels, const uint8_t *pixels) {
    MF_ASSERT(path && pixels && width > 0 && height > 0 && (channels == 1 || channels == 3));
    png_ctx *c = mf_xcalloc(1, sizeof *c);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, c, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        if (png) png_destroy_write_struct(&png, NULL);
        free(c);
        return mf_fail("%s: cannot initialise libpng", path);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        mf_fail("%s: cannot encode PNG: %s", path, c->msg);
        free(c->out);
        free(c);
        return -1;
    }
    png_set_write_fn(png, c, on_png_write, on_png_flush);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8,
                 channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    size_t stride = (size_t)width * (size_t)channels;
    for (int y = 0; y < height; y++) png_write_row(png, pixels + (size_t)y * stride);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    int rc = mf_write_file_atomic(path, c->out, c->len);
    free(c->out);
    free(c);
    return rc;
}

/* ---- grids ------------------------------------------------------------------------------------ */

/* save_image's quantisation: v.mul(255).add_(0.5).clamp_(0, 255).to(uint8), in float32. */
static uint8_t quantise(float v) {
    float t = v * 255.0f;
    t = t + 0.5f;
    if (!(t >= 0.0f)) return 0; /* also NaN */
    if (t >= 255.0f) return 255;
    return (uint8_t)t;
}

void mf_grid_size(int n, int H, int W, int nrow, int padding, int *grid_h, int *grid_w) {
    MF_ASSERT(n >= 1 && H >= 1 && W >= 1 && nrow >= 1 && padding >= 0 && grid_h && grid_w);
    if (n == 1) { /* make_grid returns a lone image as is, without padding */
        *grid_h = H;
        *grid_w = W;
        return;
    }
    int xmaps = nrow < n ? nrow : n;
    int ymaps = (n + xmaps - 1) / xmaps;
    int64_t gh = (int64_t)ymaps * ((int64_t)H + padding) + padding;
    int64_t gw = (int64_t)xmaps * ((int64_t)W + padding) + padding;
    MF_ASSERT(gh <= INT32_MAX && gw <= INT32_MAX);
    *grid_h = (int)gh;
    *grid_w = (int)gw;
}

int mf_grid_write_png(const char *path, const float *x, int n, int C, int H, int W, float lo, float hi,
                      int nrow, int padding, float pad_value) {
    MF_ASSERT(path && x && (C == 1 || C == 3));
    int gh, gw;
    mf_grid_size(n, H, W, nrow, padding, &gh, &gw);
    if (n == 1) padding = 0;
    int xmaps = nrow < n ? nrow : n;
    size_t npix = (size_t)gh * (size_t)gw;
    uint8_t *img = malloc(npix * (size_t)C);
    if (!img) return mf_fail("%s: out of memory for a %dx%d image grid", path, gw, gh);
    memset(img, quantise(pad_value), npix * (size_t)C);
    /* torchvision: value_range=(lo, hi) clamps, subtracts lo and divides by max(hi - lo, 1e-5) */
    float range = (float)fmax((double)hi - (double)lo, 1e-5);
    size_t plane = (size_t)H * (size_t)W;
    for (int k = 0; k < n; k++) {
        int gy = k / xmaps, gx = k % xmaps;
        size_t y0 = (size_t)gy * (size_t)(H + padding) + (size_t)padding;
        size_t x0 = (size_t)gx * (size_t)(W + padding) + (size_t)padding;
        for (int c = 0; c < C; c++) {
            const float *src = x + ((size_t)k * (size_t)C + (size_t)c) * plane;
            for (int i = 0; i < H; i++) {
                uint8_t *dst = img + ((y0 + (size_t)i) * (size_t)gw + x0) * (size_t)C + (size_t)c;
                for (int j = 0; j < W; j++) {
                    float v = src[(size_t)i * (size_t)W + (size_t)j];
                    if (v < lo) v = lo;
                    if (v > hi) v = hi;
                    dst[(size_t)j * (size_t)C] = quantise((v - lo) / range);
                }
            }
        }
    }
    int rc = mf_png_write(path, gw, gh, C, img);
    free(img);
    return rc;
}
