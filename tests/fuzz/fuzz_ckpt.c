/* fuzz_ckpt.c - libFuzzer target for the checkpoint reader (engine/mf_checkpoint.c: mf_ckpt_load,
 * through mf_read_file, so gzipped checkpoints are read too).
 *
 * Input: one mode byte, then the file.
 *   bit 0  replace the last 32 bytes by the SHA-256 of the rest before writing (when the input is at
 *          least 32 bytes), so that the parser behind the checksum is reached by mutated inputs
 *   bit 1  gzip the result before writing it
 * On success the sections are checked (count, names terminated, data readable), looked up, the
 * metadata is queried, and the checkpoint is written back and loaded again, which must give the same content. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "fuzz_util.h"
#include "mf_checkpoint.h"
#include "mf_error.h"
#include "mf_io.h"
#include "mf_log.h"

static char in_path[600], out_path[600];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *d = fz_scratch("ckpt");
    mf_log_set_quiet(1);
    snprintf(in_path, sizeof in_path, "%s/in.mfc", d);
    snprintf(out_path, sizeof out_path, "%s/out.mfc", d);
    return 0;
}

static int same(const mf_ckpt *a, const mf_ckpt *b) {
    if (a->step != b->step || strcmp(a->config_hash, b->config_hash) || a->n_sections != b->n_sections) return 0;
    if (strcmp(a->meta ? a->meta : "", b->meta ? b->meta : "")) return 0; /* v1: NULL, v2: maybe "" */
    for (int i = 0; i < a->n_sections; i++)
        if (strcmp(a->s[i].name, b->s[i].name) || a->s[i].n != b->s[i].n ||
            memcmp(a->s[i].data, b->s[i].data, sizeof(float) * (size_t)a->s[i].n))
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int mode = data[0];
    size_t n = size - 1;
    uint8_t *buf = malloc(n ? n : 1);
    memcpy(buf, data + 1, n);
    if ((mode & 1) && n >= 32) mf_sha256_trailer_put(buf, n - 32);
    if (mode & 2) {
        size_t gl;
        uint8_t *gz = fz_gzip(buf, n, 1, &gl);
        fz_write(in_path, gz, gl);
        free(gz);
    } else {
        fz_write(in_path, buf, n);
    }
    free(buf);
    mf_error_clear();
    mf_ckpt c;
    if (mf_ckpt_load(in_path, &c) != 0) {
        (void)mf_last_error();
        return 0;
    }
    if (c.n_sections < 0 || c.n_sections > MF_CKPT_MAX_SECTIONS || strlen(c.config_hash) > 64) abort();
    for (int i = 0; i < c.n_sections; i++) {
        if (strnlen(c.s[i].name, sizeof c.s[i].name) >= sizeof c.s[i].name || c.s[i].n < 0) abort();
        if (c.s[i].n > 0) {
            volatile float x = c.s[i].data[0] + c.s[i].data[c.s[i].n - 1];
            (void)x;
        }
        if (!mf_ckpt_find(&c, c.s[i].name)) abort();
    }
    (void)mf_ckpt_find(&c, "model");
    char v[16];
    (void)mf_ckpt_meta_get(&c, "step", v, sizeof v);
    (void)mf_ckpt_meta_get(&c, "lr", v, 1);
    /* save and load again: the same content */
    if (mf_ckpt_save(out_path, &c) != 0) abort();
    mf_ckpt d;
    if (mf_ckpt_load(out_path, &d) != 0) {
        fprintf(stderr, "fuzz_ckpt: a saved checkpoint does not load: %s\n", mf_last_error());
        abort();
    }
    if (!same(&c, &d)) {
        fprintf(stderr, "fuzz_ckpt: save/load round trip differs\n");
        abort();
    }
    mf_ckpt_free_loaded(&d);
    mf_ckpt_free_loaded(&c);
    return 0;
}
