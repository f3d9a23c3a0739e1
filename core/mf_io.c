/* mf_io.c - whole-file reading (transparently gunzipping), atomic whole-file writing, and the IDX
 * format MNIST ships in (raw or gzipped), with strict validation and messages that name the file
 * and the byte offset. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "mf_error.h"
#include "mf_io.h"

/* ---- whole files ------------------------------------------------------------------------------ */

#define MF_IO_CHUNK ((size_t)1 << 16)
#define MF_IO_MAX_HINT ((size_t)1 << 28) /* never pre-allocate more than this from a size hint */

/* Grow *buf (capacity *cap) so that it can hold at least `need` bytes; plain realloc because the
 * buffer can be large, so failure is reported as a user error. */
static int grow_buffer(const char *path, uint8_t **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t ncap = *cap ? *cap : 4096;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2) {
            ncap = need;
            break;
        }
        ncap *= 2;
    }
    uint8_t *p = realloc(*buf, ncap);
    if (!p) return mf_fail("%s: out of memory reading the file (%zu bytes)", path, ncap);
    *buf = p;
    *cap = ncap;
    return 0;
}

/* The readers return 0, -1 (error recorded), or 1 when the contents would exceed `limit` bytes
 * (nothing recorded, nothing returned; *len = the bytes seen, > limit). They never hold much more
 * than twice the bytes actually read: sizes declared by a file are hints, capped by the limit. */
static int read_raw(FILE *f, const char *path, size_t limit, uint8_t **out, size_t *len) {
    struct stat st;
    size_t cap = 0, used = 0;
    uint8_t *buf = NULL;
    /* +1 so that a regular file is read to EOF without a second allocation */
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
        (uint64_t)st.st_size < (uint64_t)SIZE_MAX) {
        if ((uint64_t)st.st_size > (uint64_t)limit) return *len = (size_t)st.st_size, 1;
        cap = (size_t)st.st_size + 1;
    } else {
        cap = MF_IO_CHUNK;
    }
    buf = malloc(cap);
    if (!buf) return mf_fail("%s: out of memory reading the file (%zu bytes)", path, cap);
    for (;;) {
        if (used > limit) { /* a file that grows, or one without a size (FIFO) */
            free(buf);
            return *len = used, 1;
        }
        if (used == cap && grow_buffer(path, &buf, &cap, used + 1) != 0) {
            free(buf);
            return -1;
        }
        size_t got = fread(buf + used, 1, cap - used, f);
        used += got;
        if (got == 0) {
            if (ferror(f)) {
                int e = errno;
                free(buf);
                return mf_fail("%s: read error at byte offset %zu: %s", path, used, strerror(e));
            }
            break; /* EOF */
        }
    }
    *out = buf;
    *len = used;
    return 0;
}

/* Size hint for a gzip file: the ISIZE trailer (uncompressed size mod 2^32 of the last member). */
static size_t gzip_size_hint(FILE *f, size_t limit) {
    struct stat st;
    uint64_t hint = 0;
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= 18) {
        uint8_t t[4];
        if (fseek(f, -4, SEEK_END) == 0 && fread(t, 1, 4, f) == 4)
            hint = (uint64_t)t[0] | ((uint64_t)t[1] << 8) | ((uint64_t)t[2] << 16) | ((uint64_t)t[3] << 24);
        if (hint < (uint64_t)st.st_size * 2) hint = (uint64_t)st.st_size * 2;
        /* deflate expands at most ~1032:1, so a larger claim is a lie: do not pre-allocate for it */
        uint64_t most = (uint64_t)st.st_size * 1032u + 65536u;
        if (hint > most) hint = most;
    }
    rewind(f);
    if (hint > MF_IO_MAX_HINT) hint = MF_IO_MAX_HINT;
    if (hint > (uint64_t)limit) hint = limit;
    if (hint < 4096) hint = 4096;
    return (size_t)hint + 1;
}

/* Inflate a gzip file (one or more concatenated members) into a growing buffer, in chunks, stopping
 * as soon as the output passes `limit`. With head_only, stop (successfully) once `limit` bytes are
 * out, or at the end of a shorter stream, without complaining about what follows. */
static int read_gzip(FILE *f, const char *path, size_t limit, int head_only, uint8_t **out, size_t *len) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
        return mf_fail("%s: cannot initialise zlib: %s", path, zs.msg ? zs.msg : "unknown error");
    size_t cap = head_only ? limit + 1 : gzip_size_hint(f, limit), used = 0, consumed = 0;
    uint8_t *buf = malloc(cap);
    uint8_t *in = mf_xmalloc(MF_IO_CHUNK);
    int rc = -1, eof = 0, ended = 0;
    if (!buf) {
        mf_fail("%s: out of memory decompressing (%zu bytes)", path, cap);
        goto done;
    }
    for (;;) {
        if (head_only && used >= limit) break;
        if (used > limit) {
            *len = used;
            rc = 1;
            goto done;
        }
        if (zs.avail_in == 0 && !eof) {
            size_t got = fread(in, 1, MF_IO_CHUNK, f);
            if (got == 0) {
                if (ferror(f)) {
                    mf_fail("%s: read error at compressed byte offset %zu: %s", path, consumed,
                            strerror(errno));
                    goto done;
                }
                eof = 1;
            }
            zs.next_in = in;
            zs.avail_in = (uInt)got;
        }
        if (zs.avail_in == 0 && eof) {
            if (ended || head_only) break;
            mf_fail("%s: truncated gzip data: the compressed stream stops at byte offset %zu "
                    "before its end (incomplete download?)",
                    path, consumed);
            goto done;
        }
        ended = 0;
        if (used == cap && grow_buffer(path, &buf, &cap, used + 1) != 0) goto done;
        size_t room = cap - used;
        if (room > MF_IO_CHUNK * 16) room = MF_IO_CHUNK * 16; /* chunks: the limit is checked between them */
        if (head_only && room > limit - used) room = limit - used;
        zs.next_out = buf + used;
        zs.avail_out = (uInt)room;
        uInt in_before = zs.avail_in, out_before = zs.avail_out;
        int r = inflate(&zs, Z_NO_FLUSH);
        consumed += in_before - zs.avail_in;
        used += out_before - zs.avail_out;
        if (r == Z_STREAM_END) {
            ended = 1; /* a complete member; another may follow (concatenated gzip) */
            inflateReset(&zs);
            continue;
        }
        if (r == Z_OK || r == Z_BUF_ERROR) continue; /* needs more input or more room */
        mf_fail("%s: corrupt gzip data at compressed byte offset %zu: %s", path, consumed,
                zs.msg ? zs.msg : zError(r));
        goto done;
    }
    if (used > 0 && used < cap && !head_only) {
        uint8_t *p = realloc(buf, used);
        if (p) buf = p;
    }
    *out = buf;
    *len = used;
    buf = NULL;
    rc = 0;
done:
    inflateEnd(&zs);
    free(in);
    free(buf);
    return rc;
}

/* Open a data file: a folder is refused as such (fopen would succeed on one); *gz says whether it
 * starts with the gzip magic. The stream is at offset 0. */
static int open_data(const char *path, FILE **fp, int *gz) {
    struct stat st;
    /* O_NONBLOCK: a FIFO where a file should be is refused below instead of blocking the open */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return mf_fail("%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return mf_fail("%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        int dir = S_ISDIR(st.st_mode);
        close(fd);
        return mf_fail("%s: cannot read: %s", path, dir ? "is a directory" : "is not a regular file");
    }
    int fl = fcntl(fd, F_GETFL);
    FILE *f = fl >= 0 && fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) == 0 ? fdopen(fd, "rb") : NULL;
    if (!f) {
        int e = errno;
        close(fd);
        return mf_fail("%s: cannot open: %s", path, strerror(e));
    }
    uint8_t magic[2] = {0, 0};
    size_t m = fread(magic, 1, 2, f);
    if (m < 2 && ferror(f)) {
        int e = errno;
        fclose(f);
        return mf_fail("%s: read error: %s", path, strerror(e));
    }
    *gz = m == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    rewind(f);
    *fp = f;
    return 0;
}

static int too_large(const char *path, int gz, size_t seen, size_t limit, const char *key) {
    return mf_fail("%s: %s more than %zu bytes (%s%zu seen), the limit%s%s%s", path,
                   gz ? "decompresses to" : "holds", limit, gz ? "stopped after " : "", seen,
                   key ? "; raise " : "", key ? key : "", key ? " to accept it" : "");
}

int mf_read_file_max(const char *path, size_t max_bytes, const char *limit_key, uint8_t **out, size_t *len,
                     int *was_gzip) {
    MF_ASSERT(path && out && len);
    *out = NULL;
    *len = 0;
    if (was_gzip) *was_gzip = 0;
    FILE *f;
    int gz;
    MF_TRY(open_data(path, &f, &gz));
    size_t seen = 0;
    int rc = gz ? read_gzip(f, path, max_bytes, 0, out, &seen) : read_raw(f, path, max_bytes, out, &seen);
    fclose(f);
    if (rc == 1) return too_large(path, gz, seen, max_bytes, limit_key);
    if (rc != 0) return -1;
    *len = seen;
    if (was_gzip) *was_gzip = gz;
    return 0;
}

int mf_read_file(const char *path, uint8_t **out, size_t *len, int *was_gzip) {
    return mf_read_file_max(path, SIZE_MAX - 1, NULL, out, len, was_gzip);
}

/* fsync the folder holding `path` so that the rename itself is durable. Best effort: some file
 * systems refuse fsync on directories, and the data is already in place. */
static void fsync_parent(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? (slash == path ? mf_xstrdup("/") : mf_xasprintf("%.*s", (int)(slash - path), path))
                      : mf_xstrdup(".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

int mf_write_file_atomic(const char *path, const void *data, size_t len) {
    MF_ASSERT(path && (data || len == 0));
    char *tmp = mf_xasprintf("%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        int e = errno;
        mf_fail("%s: cannot create temporary file %s: %s", path, tmp, strerror(e));
        free(tmp);
        return -1;
    }
    const uint8_t *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            close(fd);
            unlink(tmp);
            mf_fail("%s: cannot write: %s", path, strerror(e));
            free(tmp);
            return -1;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS) {
        int e = errno;
        close(fd);
        unlink(tmp);
        mf_fail("%s: cannot write (fsync): %s", path, strerror(e));
        free(tmp);
        return -1;
    }
    if (close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        mf_fail("%s: cannot write (close): %s", path, strerror(e));
        free(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        mf_fail("%s: cannot move %s into place: %s", path, tmp, strerror(e));
        free(tmp);
        return -1;
    }
    free(tmp);
    fsync_parent(path);
    return 0;
}

/* ---- IDX -------------------------------------------------------------------------------------- */

static int idx_elem_size(int dtype) {
    switch (dtype) {
    case MF_IDX_U8:
    case MF_IDX_I8: return 1;
    case MF_IDX_I16: return 2;
    case MF_IDX_I32:
    case MF_IDX_F32: return 4;
    case MF_IDX_F64: return 8;
    default: return 0;
    }
}

static uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

/* Convert big-endian elements of `esize` bytes to host order in place (portable: byte loads and a
 * native store). */
static void idx_to_host(uint8_t *data, size_t count, int esize) {
    for (size_t i = 0; i < count; i++) {
        uint8_t *e = data + i * (size_t)esize;
        if (esize == 2) {
            uint16_t v = (uint16_t)(((unsigned)e[0] << 8) | e[1]);
            memcpy(e, &v, 2);
        } else if (esize == 4) {
            uint32_t v = be32(e);
            memcpy(e, &v, 4);
        } else if (esize == 8) {
            uint64_t v = ((uint64_t)be32(e) << 32) | be32(e + 4);
            memcpy(e, &v, 8);
        }
    }
}

static int is_hex64(const char *s) {
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) return 0;
    }
    return n == 64;
}

static int hex_equal(const char *a, const char *b) {
    for (int i = 0; i < 64; i++) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'F') x = (char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'F') y = (char)(y - 'A' + 'a');
        if (x != y) return 0;
    }
    return 1;
}

/* Validation of the header in the first len bytes (all of them, or a prefix of at least 20):
 * magic, dtype, ndim, dimensions; *header_len and *data_len (bytes the header declares) are set. */
static int idx_header(const char *path, const uint8_t *b, size_t len, int gz, mf_idx *out, size_t *header_len,
                      size_t *data_len) {
    const char *where = gz ? " of the decompressed data" : "";
    if (len < 4)
        return mf_fail("%s: not an IDX file: only %zu bytes%s, an IDX header needs at least 4", path,
                       len, where);
    if (b[0] != 0 || b[1] != 0)
        return mf_fail("%s: bad magic 0x%08x at byte 0%s, expected 0x0000XXYY (two zero bytes, then "
                       "the dtype XX and the number of dimensions YY): not an IDX file",
                       path, (unsigned)be32(b), where);
    int dtype = b[2], ndim = b[3];
    int esize = idx_elem_size(dtype);
    if (!esize)
        return mf_fail("%s: unknown IDX dtype 0x%02x at byte 2%s (expected 0x08 u8, 0x09 i8, 0x0b "
                       "i16, 0x0c i32, 0x0d f32 or 0x0e f64)",
                       path, (unsigned)dtype, where);
    if (ndim < 1 || ndim > 4)
        return mf_fail("%s: bad IDX ndim %d at byte 3%s (expected 1 to 4 dimensions)", path, ndim,
                       where);
    size_t hdr = 4 + 4 * (size_t)ndim;
    if (len < hdr)
        return mf_fail("%s: truncated header: %d dimensions need %zu header bytes, file has %zu%s",
                       path, ndim, hdr, len, where);
    size_t count = 1;
    int overflow = 0;
    for (int i = 0; i < ndim; i++) {
        uint32_t d = be32(b + 4 + 4 * i);
        if (d == 0)
            return mf_fail("%s: dimension %d is 0 (byte offset %d%s); every dimension must be > 0",
                           path, i, 4 + 4 * i, where);
        out->dims[i] = d;
        if (count > SIZE_MAX / d)
            overflow = 1;
        else
            count *= d;
    }
    if (!overflow && count > SIZE_MAX / (size_t)esize) overflow = 1;
    if (overflow)
        return mf_fail("%s: the header declares more than %zu bytes of data (dimensions at byte offsets 4..%zu%s)",
                       path, SIZE_MAX, hdr - 1, where);
    out->dtype = dtype;
    out->ndim = ndim;
    *header_len = hdr;
    *data_len = count * (size_t)esize;
    return 0;
}

/* Validation of the (decompressed) bytes; offsets refer to those bytes. */
static int idx_parse(const char *path, const uint8_t *b, size_t len, int gz, mf_idx *out,
                     size_t *header_len) {
    const char *where = gz ? " of the decompressed data" : "";
    size_t hdr, need;
    MF_TRY(idx_header(path, b, len, gz, out, &hdr, &need));
    size_t have = len - hdr;
    if (have < need)
        return mf_fail("%s: truncated: header says %zu bytes of data, file has %zu (byte offset %zu%s)",
                       path, need, have, len, where);
    if (have > need)
        return mf_fail("%s: %zu trailing bytes after the data (the header says %zu bytes of data, "
                       "ending at byte offset %zu%s)",
                       path, have - need, need, hdr + need, where);
    out->nbytes = need;
    *header_len = hdr;
    return 0;
}

/* Read the header (the first 20 bytes, decompressed) and check what it declares against the limits
 * before anything large is read or allocated. */
static int idx_precheck(const char *path, const mf_idx_limits *lim, size_t max_bytes) {
    FILE *f;
    int gz;
    MF_TRY(open_data(path, &f, &gz));
    uint8_t *head = NULL, raw[20];
    size_t got = 0;
    int rc = 0;
    if (gz) {
        rc = read_gzip(f, path, sizeof raw, 1, &head, &got);
    } else {
        got = fread(raw, 1, sizeof raw, f);
        if (got < sizeof raw && ferror(f)) rc = mf_fail("%s: read error: %s", path, strerror(errno));
    }
    fclose(f);
    mf_idx h;
    size_t hdr, need;
    memset(&h, 0, sizeof h);
    int bad = rc != 0 || idx_header(path, gz ? head : raw, got, gz, &h, &hdr, &need) != 0;
    free(head);
    if (bad) { /* not a valid header: reading the file whole (bounded) gives the precise error */
        mf_error_clear();
        return 0;
    }
    if (lim && lim->max_items && (uint64_t)h.dims[0] > lim->max_items)
        return mf_fail("%s: the header declares %lld items (first dimension, byte offset 4), more than the "
                       "limit of %llu%s%s%s", path, (long long)h.dims[0], (unsigned long long)lim->max_items,
                       lim->items_key ? "; raise " : "", lim->items_key ? lim->items_key : "",
                       lim->items_key ? " to accept it" : "");
    if (need > max_bytes - hdr || hdr > max_bytes)
        return mf_fail("%s: the header declares %zu bytes of data (%lld items), more than the limit of %zu "
                       "bytes%s%s%s%s", path, need, (long long)h.dims[0], max_bytes, gz ? " decompressed" : "",
                       lim && lim->bytes_key ? "; raise " : "", lim && lim->bytes_key ? lim->bytes_key : "",
                       lim && lim->bytes_key ? " to accept it" : "");
    return 0;
}

int mf_idx_read(const char *path, const char *expect_sha256, mf_idx *out) {
    return mf_idx_read_max(path, expect_sha256, NULL, out);
}

int mf_idx_read_max(const char *path, const char *expect_sha256, const mf_idx_limits *lim, mf_idx *out) {
    MF_ASSERT(path && out);
    memset(out, 0, sizeof *out);
    if (expect_sha256 && !is_hex64(expect_sha256))
        return mf_fail("%s: the expected SHA-256 '%s' is not 64 hexadecimal digits", path,
                       expect_sha256);
    uint8_t *b = NULL;
    size_t len = 0, hdr = 0, max_bytes = lim && lim->max_bytes ? lim->max_bytes : MF_IDX_MAX_BYTES;
    int gz = 0;
    MF_TRY(idx_precheck(path, lim, max_bytes));
    MF_TRY(mf_read_file_max(path, max_bytes, lim ? lim->bytes_key : NULL, &b, &len, &gz));
    mf_idx tmp;
    memset(&tmp, 0, sizeof tmp);
    if (idx_parse(path, b, len, gz, &tmp, &hdr) != 0) {
        free(b);
        return -1;
    }
    if (expect_sha256) {
        char hex[65];
        mf_sha256_hex(b, len, hex);
        if (!hex_equal(hex, expect_sha256)) {
            free(b);
            return mf_fail("%s: checksum mismatch: SHA-256 is %s, expected %s (file corrupt or not "
                           "the expected data set)",
                           path, hex, expect_sha256);
        }
    }
    /* keep the payload in the same allocation: move it to the front and shrink */
    MF_ASSERT(b != NULL);
    memmove(b, b + hdr, tmp.nbytes);
    uint8_t *p = realloc(b, tmp.nbytes);
    if (p) b = p;
    idx_to_host(b, tmp.nbytes / (size_t)idx_elem_size(tmp.dtype), idx_elem_size(tmp.dtype));
    tmp.data = b;
    *out = tmp;
    return 0;
}

void mf_idx_free(mf_idx *idx) {
    if (!idx) return;
    free(idx->data);
    memset(idx, 0, sizeof *idx);
}

int mf_idx_write_u8(const char *path, int ndim, const int64_t *dims, const uint8_t *data) {
    MF_ASSERT(path && dims && ndim >= 1 && ndim <= 4);
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        MF_ASSERT(dims[i] > 0 && dims[i] <= (int64_t)UINT32_MAX);
        MF_ASSERT(count <= SIZE_MAX / (size_t)dims[i]);
        count *= (size_t)dims[i];
    }
    MF_ASSERT(data);
    size_t hdr = 4 + 4 * (size_t)ndim;
    MF_ASSERT(count <= SIZE_MAX - hdr);
    uint8_t *buf = malloc(hdr + count);
    if (!buf) return mf_fail("%s: out of memory preparing %zu bytes", path, hdr + count);
    buf[0] = 0;
    buf[1] = 0;
    buf[2] = MF_IDX_U8;
    buf[3] = (uint8_t)ndim;
    for (int i = 0; i < ndim; i++) {
        uint32_t d = (uint32_t)dims[i];
        buf[4 + 4 * i] = (uint8_t)(d >> 24);
        buf[5 + 4 * i] = (uint8_t)(d >> 16);
        buf[6 + 4 * i] = (uint8_t)(d >> 8);
        buf[7 + 4 * i] = (uint8_t)d;
    }
    memcpy(buf + hdr, data, count);
    int rc = mf_write_file_atomic(path, buf, hdr + count);
    free(buf);
    return rc;
}

int mf_mkdirs(const char *path) {
    char *p = mf_xstrdup(path);
    int rc = 0;
    for (char *s = p + 1; rc == 0; s++) {
        if (*s != '/' && *s != '\0') continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) rc = mf_fail("%s: cannot create folder: %s", p, strerror(errno));
        *s = c;
        if (c == '\0') break;
    }
    free(p);
    struct stat st;
    if (rc == 0 && (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)))
        rc = mf_fail("%s: cannot create folder: %s", path, stat(path, &st) != 0 ? strerror(errno) : strerror(ENOTDIR));
    return rc;
}
