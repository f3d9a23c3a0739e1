/* mf_checkpoint.h - checkpoint files: named float sections (model, ema, adam_m, adam_v, ...), the
 * step, a configuration hash and a metadata text (optimizer step count, schedule segment, the
 * training settings), closed by a SHA-256 of the whole content so a corrupt or truncated file is
 * detected. Written through a temporary name, fsynced and renamed.
 *
 * Format (little-endian): "MFCKPT\0\2", u64 step, 64 bytes hash (hex, NUL-padded), u32 meta length,
 * meta bytes ("key=value" lines, no NUL), u32 section count, sections (32 bytes name, i64 n, n
 * floats), 32 bytes SHA-256 of everything before. Version 1 files (no meta) still load. */
#ifndef MF_CHECKPOINT_H
#define MF_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MF_CKPT_MAX_SECTIONS 16

typedef struct mf_ckpt_section {
    char name[32];
    int64_t n;     /* floats */
    float *data;   /* host memory; owned by the caller when saving, by the checkpoint when loaded */
} mf_ckpt_section;

typedef struct mf_ckpt {
    uint64_t step;
    char config_hash[65]; /* hex SHA-256 of the model configuration */
    char *meta;           /* "key=value\n" lines or NULL; caller-owned when saving, the checkpoint's when loaded */
    int n_sections;
    mf_ckpt_section s[MF_CKPT_MAX_SECTIONS];
} mf_ckpt;

int mf_ckpt_save(const char *path, const mf_ckpt *c);
/* Load and verify (magic, version, sizes, SHA-256). Errors name the file and the byte offset. */
int mf_ckpt_load(const char *path, mf_ckpt *c);
void mf_ckpt_free_loaded(mf_ckpt *c);
const mf_ckpt_section *mf_ckpt_find(const mf_ckpt *c, const char *name);
/* The value of `key` in the metadata (copied into out, truncated to cap); 1 if found, else 0. */
int mf_ckpt_meta_get(const mf_ckpt *c, const char *key, char *out, size_t cap);
/* Magic and SHA-256 only (no parsing): 0 if the file is intact, else -1 with the reason. */
int mf_ckpt_verify(const char *path);

/* In a folder of ckpt_<step>.mfc files (ordered by step number): the newest that loads and
 * verifies. Corrupt ones met on the way are skipped with a warning and, with move_corrupt (the
 * process that holds the run folder's lock: training), moved into <dir>/corrupt/; never deleted.
 * Returns 1 if found, 0 if none (or no folder), -1 if the folder cannot be read. */
int mf_ckpt_load_latest(const char *dir, mf_ckpt *c, char *path_out, size_t cap, bool move_corrupt);
/* Keep the newest `keep` *valid* checkpoints in dir and delete the older ones; corrupt files are
 * moved into <dir>/corrupt/ (with a warning) and do not count. Returns 0, or -1 if a delete failed. */
int mf_ckpt_prune(const char *dir, int keep);

#ifdef __cplusplus
}
#endif
#endif
