/* mf_checkpoint.h - checkpoint files: named float sections (model, ema, adam_m, adam_v, ...), the
 * step and a configuration hash, closed by a SHA-256 of the whole content so a corrupt or truncated
 * file is detected. Written through a temporary name, fsynced and renamed. */
#ifndef MF_CHECKPOINT_H
#define MF_CHECKPOINT_H

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
    int n_sections;
    mf_ckpt_section s[MF_CKPT_MAX_SECTIONS];
} mf_ckpt;

int mf_ckpt_save(const char *path, const mf_ckpt *c);
/* Load and verify (magic, version, sizes, SHA-256). Errors name the file and the byte offset. */
int mf_ckpt_load(const char *path, mf_ckpt *c);
void mf_ckpt_free_loaded(mf_ckpt *c);
const mf_ckpt_section *mf_ckpt_find(const mf_ckpt *c, const char *name);

/* In a folder of ckpt_<step>.mfc files: the newest that loads and verifies (corrupt ones are
 * reported with mf_warn and skipped). Returns 1 if found, 0 if none, -1 on error. */
int mf_ckpt_load_latest(const char *dir, mf_ckpt *c, char *path_out, size_t cap);
/* Delete all but the newest `keep` checkpoints in dir. */
void mf_ckpt_prune(const char *dir, int keep);

#ifdef __cplusplus
}
#endif
#endif
