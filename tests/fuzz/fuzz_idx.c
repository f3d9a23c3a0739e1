/* fuzz_idx.c - libFuzzer target for the IDX reader, raw and gzipped (core/mf_io.c: mf_idx_read and
 * mf_read_file's transparent gunzip).
 *
 * Input: one mode byte, then the file.
 *   mode bit 0: gzip the rest before writing it (so the IDX parser behind a valid gzip stream is
 *               reached too; corrupt gzip streams come from inputs whose own bytes start 1f 8b)
 *   mode bits 1-2: expected SHA-256 passed to the reader: 0 none, 1 the right one (of the
 *               uncompressed bytes), 2 a wrong one, 3 a malformed one
 *   mode bit 3: read with mf_idx_read_max and small limits (4096 bytes, 5 items) instead
 * The file is <scratch>/in.idx; on success the header is checked against the payload size. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "fuzz_util.h"
#include "mf_error.h"
#include "mf_io.h"

static char in_path[600];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    snprintf(in_path, sizeof in_path, "%s/in.idx", fz_scratch("idx"));
    return 0;
}

static size_t esize(int dtype) {
    switch (dtype) {
    case MF_IDX_U8: case MF_IDX_I8: return 1;
    case MF_IDX_I16: return 2;
    case MF_IDX_I32: case MF_IDX_F32: return 4;
    case MF_IDX_F64: return 8;
    default: abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int mode = data[0];
    const uint8_t *body = data + 1;
    size_t n = size - 1;
    if (mode & 1) {
        size_t gl;
        uint8_t *gz = fz_gzip(body, n, 6, &gl);
        fz_write(in_path, gz, gl);
        free(gz);
    } else {
        fz_write(in_path, body, n);
    }
    char sha[65];
    const char *expect = NULL;
    switch ((mode >> 1) & 3) {
    case 1: mf_sha256_hex(body, n, sha), expect = sha; break;
    case 2: memset(sha, '0', 64), sha[64] = 0, expect = sha; break;
    case 3: expect = "not-a-sha"; break;
    }
    mf_idx idx;
    memset(&idx, 0, sizeof idx);
    mf_error_clear();
    static const mf_idx_limits small = {4096, 5, "fuzz.max_bytes", "fuzz.max_items"};
    int rc = mode & 8 ? mf_idx_read_max(in_path, expect, &small, &idx) : mf_idx_read(in_path, expect, &idx);
    if (rc == 0) {
        if ((mode & 8) && (idx.nbytes > 4096 || idx.dims[0] > 5)) abort();
        if (idx.ndim < 1 || idx.ndim > 4) abort();
        size_t count = 1;
        for (int i = 0; i < idx.ndim; i++) {
            if (idx.dims[i] < 0) abort();
            count *= (size_t)idx.dims[i];
        }
        if (count * esize(idx.dtype) != idx.nbytes) abort();
        if (idx.nbytes) { /* touch the payload: ASan checks it is all there */
            volatile uint8_t x = 0;
            for (size_t i = 0; i < idx.nbytes; i += 61) x ^= idx.data[i];
            x ^= idx.data[idx.nbytes - 1];
            (void)x;
        }
        mf_idx_free(&idx);
    } else {
        (void)mf_last_error();
    }
    return 0;
}
