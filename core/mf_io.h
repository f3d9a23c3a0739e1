/* mf_io.h - file formats: SHA-256, IDX (raw or gzipped, as MNIST ships), PNG via libpng, and image
 * grids in torchvision's make_grid layout. All readers name the file (and the byte offset where it
 * applies) in their errors. */
#ifndef MF_IO_H
#define MF_IO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- SHA-256 ---------------------------------------------------------------------------------- */
typedef struct mf_sha256 {
    uint32_t h[8];
    uint64_t nbytes;
    uint8_t buf[64];
    size_t nbuf;
} mf_sha256;
void mf_sha256_init(mf_sha256 *s);
void mf_sha256_update(mf_sha256 *s, const void *data, size_t n);
void mf_sha256_final(mf_sha256 *s, uint8_t digest[32]);
void mf_sha256_hex(const void *data, size_t n, char hex[65]);
/* The SHA-256 trailer of mfpipe's binary files (checkpoints, reference statistics, feature-network
 * weights): put writes the digest of buf[0, body) at buf + body; ok says whether the last 32 bytes of
 * buf[0, len) are the digest of the rest (len >= 32). */
void mf_sha256_trailer_put(uint8_t *buf, size_t body);
int mf_sha256_trailer_ok(const uint8_t *buf, size_t len);
/* Hash a whole file (raw bytes). */
int mf_sha256_file(const char *path, char hex[65]);

/* ---- whole files ------------------------------------------------------------------------------ */
/* Read a file; if it starts with the gzip magic it is decompressed (zlib). *out is malloc'ed. */
int mf_read_file(const char *path, uint8_t **out, size_t *len, int *was_gzip);
/* The same, refusing contents (decompressed, for gzip) of more than max_bytes: gzip is inflated in
 * chunks and stops as soon as the output passes the limit, a raw file's size is checked before it is
 * read. The error names the file, the limit and limit_key (the setting that raises it; may be NULL).
 * A folder is refused as such ("is a directory"). mf_read_file has no limit. */
int mf_read_file_max(const char *path, size_t max_bytes, const char *limit_key, uint8_t **out, size_t *len,
                     int *was_gzip);
/* mkdir -p: create a folder and its parents; an error names the component that failed. */
int mf_mkdirs(const char *path);
/* Write through a temporary name in the same folder, fsync, rename; never leaves a half file. */
int mf_write_file_atomic(const char *path, const void *data, size_t len);

/* ---- IDX ------------------------------------------------------------------------------------- */
enum { MF_IDX_U8 = 0x08, MF_IDX_I8 = 0x09, MF_IDX_I16 = 0x0B, MF_IDX_I32 = 0x0C, MF_IDX_F32 = 0x0D, MF_IDX_F64 = 0x0E };
typedef struct mf_idx {
    int dtype;        /* MF_IDX_* */
    int ndim;         /* 1..4 */
    int64_t dims[4];
    uint8_t *data;    /* payload, host byte order for multi-byte types */
    size_t nbytes;
} mf_idx;
/* Reads raw or gzipped IDX; checks magic, dtype, ndim, and that the payload length matches the
 * header exactly. If expect_sha256 (hex) is non-NULL, the SHA-256 of the *uncompressed* bytes must
 * match (so one checksum covers raw and gzipped copies). */
int mf_idx_read(const char *path, const char *expect_sha256, mf_idx *out);
/* Limits of mf_idx_read_max, checked against what the header declares before the data is read (so
 * a small gzip declaring 2^31 images is refused at once) and against the bytes actually read. */
typedef struct mf_idx_limits {
    size_t max_bytes;    /* of the whole (decompressed) file; 0 = MF_IDX_MAX_BYTES */
    uint64_t max_items;  /* first dimension (images, labels); 0 = no limit */
    const char *bytes_key, *items_key; /* settings named in errors ("data.max_bytes"); may be NULL */
} mf_idx_limits;
#define MF_IDX_MAX_BYTES ((size_t)1 << 30) /* 1 GiB: the limit of mf_idx_read */
int mf_idx_read_max(const char *path, const char *expect_sha256, const mf_idx_limits *lim, mf_idx *out);
void mf_idx_free(mf_idx *idx);
int mf_idx_write_u8(const char *path, int ndim, const int64_t *dims, const uint8_t *data);

/* ---- PNG ------------------------------------------------------------------------------------- */
/* Decode any PNG (gray, gray+alpha, RGB, RGBA, palette, 1..16 bit) to 8-bit with `channels` (1 or 3)
 * channels: alpha is dropped, RGB->gray uses ITU-R 601 weights, gray->RGB replicates. */
int mf_png_read(const char *path, int channels, int *width, int *height, uint8_t **pixels);
/* The same with a limit on width * height (0 = MF_PNG_MAX_PIXELS, the limit of mf_png_read), checked
 * on the header before anything is decoded; the error names the file, both sizes and limit_key (the
 * setting that raises it; may be NULL). Palette indices beyond the palette are refused. */
#define MF_PNG_MAX_PIXELS ((uint64_t)4096 * 4096)
int mf_png_read_max(const char *path, int channels, uint64_t max_pixels, const char *limit_key, int *width,
                    int *height, uint8_t **pixels);
/* Write 8-bit gray (channels=1) or RGB (3), rows top to bottom, interleaved. Atomic. */
int mf_png_write(const char *path, int width, int height, int channels, const uint8_t *pixels);

/* ---- grids ----------------------------------------------------------------------------------- */
/* torchvision.utils.make_grid + save_image: images x (n, C, H, W) with values in [lo, hi] are mapped
 * to [0,1], then byte = clamp(v*255+0.5, 0, 255) truncated; `nrow` images per row, `padding` pixels of
 * `pad_value` (in [0,1]) around and between. Output size:
 * (ceil(n/nrow')*(H+padding)+padding) x (nrow'*(W+padding)+padding) with nrow' = min(nrow, n). */
void mf_grid_size(int n, int H, int W, int nrow, int padding, int *grid_h, int *grid_w);
int mf_grid_write_png(const char *path, const float *x, int n, int C, int H, int W, float lo, float hi,
                      int nrow, int padding, float pad_value);

#ifdef __cplusplus
}
#endif
#endif
