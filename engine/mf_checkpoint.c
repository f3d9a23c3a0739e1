/* mf_checkpoint.c - checkpoint writing, verified loading, newest-valid lookup and pruning. */
#include "mf_checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mf_error.h"
#include "mf_io.h"
#include "mf_log.h"

/* Version 2 adds the metadata text after the configuration hash; version 1 files still load. */
static const char k_magic[8] = {'M', 'F', 'C', 'K', 'P', 'T', 0, 2};
#define MF_CKPT_MAX_META (1u << 20)

int mf_ckpt_save(const char *path, const mf_ckpt *c) {
    uint32_t meta_len = c->meta ? (uint32_t)strlen(c->meta) : 0;
    if (meta_len > MF_CKPT_MAX_META) return mf_fail("%s: checkpoint metadata too large (%u bytes)", path, meta_len);
    size_t total = 8 + 8 + 64 + 4 + meta_len + 4;
    for (int i = 0; i < c->n_sections; i++) total += 32 + 8 + sizeof(float) * (size_t)c->s[i].n;
    total += 32;
    uint8_t *buf = malloc(total);
    if (!buf) return mf_fail("%s: out of memory (%zu bytes) writing checkpoint", path, total);
    uint8_t *p = buf;
    memcpy(p, k_magic, 8), p += 8;
    memcpy(p, &c->step, 8), p += 8;
    memset(p, 0, 64);
    memcpy(p, c->config_hash, strnlen(c->config_hash, 64)), p += 64;
    memcpy(p, &meta_len, 4), p += 4;
    if (meta_len) memcpy(p, c->meta, meta_len), p += meta_len;
    uint32_t ns = (uint32_t)c->n_sections;
    memcpy(p, &ns, 4), p += 4;
    for (int i = 0; i < c->n_sections; i++) {
        memset(p, 0, 32);
        memcpy(p, c->s[i].name, strnlen(c->s[i].name, 31)), p += 32;
        memcpy(p, &c->s[i].n, 8), p += 8;
        memcpy(p, c->s[i].data, sizeof(float) * (size_t)c->s[i].n), p += sizeof(float) * (size_t)c->s[i].n;
    }
    mf_sha256_trailer_put(buf, (size_t)(p - buf));
    int rc = mf_write_file_atomic(path, buf, total);
    free(buf);
    return rc;
}

int mf_ckpt_load(const char *path, mf_ckpt *c) {
    memset(c, 0, sizeof *c);
    uint8_t *buf;
    size_t len;
    int gz;
    MF_TRY(mf_read_file(path, &buf, &len, &gz));
    int rc = -1;
    if (len < 8 + 8 + 64 + 4 + 32 || memcmp(buf, k_magic, 7) != 0 || (buf[7] != 1 && buf[7] != 2)) {
        mf_fail("%s: not an mfpipe checkpoint (bad magic or too short: %zu bytes)", path, len);
        goto out;
    }
    if (!mf_sha256_trailer_ok(buf, len)) {
        mf_fail("%s: checksum mismatch (file truncated or corrupt; %zu bytes)", path, len);
        goto out;
    }
    const uint8_t *p = buf + 8, *end = buf + len - 32;
    memcpy(&c->step, p, 8), p += 8;
    memcpy(c->config_hash, p, 64), p += 64;
    c->config_hash[64] = '\0';
    if (buf[7] >= 2) {
        uint32_t ml;
        memcpy(&ml, p, 4), p += 4;
        if (ml > MF_CKPT_MAX_META) {
            mf_fail("%s: metadata of %u bytes, more than the %u allowed (byte offset 80)", path, ml, MF_CKPT_MAX_META);
            goto out;
        }
        if ((size_t)(end - p) < (size_t)ml + 4) {
            mf_fail("%s: metadata of %u bytes beyond the end (byte offset 80)", path, ml);
            goto out;
        }
        const uint8_t *nul = memchr(p, '\0', ml);
        if (nul) {
            mf_fail("%s: NUL byte in the metadata (byte offset %zu)", path, (size_t)(nul - buf));
            goto out;
        }
        c->meta = mf_xmalloc((size_t)ml + 1);
        memcpy(c->meta, p, ml), p += ml;
        c->meta[ml] = '\0';
    }
    if (end - p < 4) {
        mf_fail("%s: section count truncated at byte offset %zu", path, (size_t)(p - buf));
        goto out;
    }
    uint32_t ns;
    memcpy(&ns, p, 4), p += 4;
    if (ns > MF_CKPT_MAX_SECTIONS) {
        mf_fail("%s: %u sections (at most %d) at byte offset %zu", path, ns, MF_CKPT_MAX_SECTIONS, (size_t)(p - 4 - buf));
        goto out;
    }
    for (uint32_t i = 0; i < ns; i++) {
        if (end - p < 40) {
            mf_fail("%s: section %u header truncated at byte offset %zu", path, i, (size_t)(p - buf));
            goto out;
        }
        mf_ckpt_section *s = &c->s[i];
        memcpy(s->name, p, 32), p += 32;
        s->name[31] = '\0';
        memcpy(&s->n, p, 8), p += 8;
        if (s->n < 0 || (uint64_t)s->n > (uint64_t)(end - p) / sizeof(float)) { /* no 4*n overflow */
            mf_fail("%s: section '%s' claims %lld floats beyond the end (byte offset %zu)", path, s->name,
                    (long long)s->n, (size_t)(p - buf));
            goto out;
        }
        s->data = mf_xmalloc(sizeof(float) * (size_t)s->n);
        memcpy(s->data, p, sizeof(float) * (size_t)s->n), p += sizeof(float) * (size_t)s->n;
        c->n_sections = (int)i + 1;
    }
    rc = 0;
out:
    free(buf);
    if (rc) mf_ckpt_free_loaded(c);
    return rc;
}

void mf_ckpt_free_loaded(mf_ckpt *c) {
    for (int i = 0; i < c->n_sections; i++) free(c->s[i].data);
    c->n_sections = 0;
    free(c->meta);
    c->meta = NULL;
}

int mf_ckpt_meta_get(const mf_ckpt *c, const char *key, char *out, size_t cap) {
    size_t kl = strlen(key);
    for (const char *p = c->meta; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t ll = nl ? (size_t)(nl - p) : strlen(p);
        if (ll > kl && strncmp(p, key, kl) == 0 && p[kl] == '=') {
            size_t vl = ll - kl - 1;
            if (vl >= cap) vl = cap - 1;
            memcpy(out, p + kl + 1, vl);
            out[vl] = '\0';
            return 1;
        }
        p = nl ? nl + 1 : p + ll;
    }
    return 0;
}

const mf_ckpt_section *mf_ckpt_find(const mf_ckpt *c, const char *name) {
    for (int i = 0; i < c->n_sections; i++)
        if (strcmp(c->s[i].name, name) == 0) return &c->s[i];
    return NULL;
}

/* By step number, not by name: ckpt_%08lld names stop sorting as numbers past 99,999,999 steps. */
static int ckpt_cmp(const struct dirent **a, const struct dirent **b) {
    unsigned long long x = strtoull((*a)->d_name + 5, NULL, 10), y = strtoull((*b)->d_name + 5, NULL, 10);
    return x < y ? -1 : x > y ? 1 : strcmp((*a)->d_name, (*b)->d_name);
}

static int ckpt_filter(const struct dirent *d) {
    size_t n = strlen(d->d_name);
    return strncmp(d->d_name, "ckpt_", 5) == 0 && n > 9 && strcmp(d->d_name + n - 4, ".mfc") == 0;
}

/* Move a corrupt checkpoint into <dir>/corrupt/ so that neither resume nor pruning trips on it again. */
static void move_aside(const char *dir, const char *name, const char *why) {
    char sub[4096], from[4200], to[4300];
    snprintf(sub, sizeof sub, "%s/corrupt", dir);
    snprintf(from, sizeof from, "%s/%s", dir, name);
    snprintf(to, sizeof to, "%s/%s", sub, name);
    if (mf_mkdirs(sub) != 0 || rename(from, to) != 0) {
        mf_warn("corrupt checkpoint %s (%s) could not be moved aside: %s", from, why, strerror(errno));
        return;
    }
    mf_warn("corrupt checkpoint moved to %s: %s", to, why);
}

int mf_ckpt_verify(const char *path) {
    uint8_t *buf;
    size_t len;
    int gz;
    MF_TRY(mf_read_file(path, &buf, &len, &gz));
    int ok = len >= 8 + 8 + 64 + 4 + 32 && memcmp(buf, k_magic, 7) == 0 && (buf[7] == 1 || buf[7] == 2);
    if (!ok) mf_fail("%s: not an mfpipe checkpoint (bad magic or too short: %zu bytes)", path, len);
    else if (!mf_sha256_trailer_ok(buf, len)) {
        ok = 0;
        mf_fail("%s: checksum mismatch (file truncated or corrupt; %zu bytes)", path, len);
    }
    free(buf);
    return ok ? 0 : -1;
}

int mf_ckpt_load_latest(const char *dir, mf_ckpt *c, char *path_out, size_t cap, bool move_corrupt) {
    struct dirent **ents = NULL;
    int n = scandir(dir, &ents, ckpt_filter, ckpt_cmp);
    if (n < 0) return errno == ENOENT ? 0 : mf_fail("%s: cannot list checkpoints: %s", dir, strerror(errno));
    int found = 0;
    for (int i = n - 1; i >= 0 && !found; i--) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, ents[i]->d_name);
        if (mf_ckpt_load(path, c) == 0) {
            found = 1;
            if (path_out) snprintf(path_out, cap, "%s", path);
        } else if (move_corrupt) {
            move_aside(dir, ents[i]->d_name, mf_last_error());
        } else {
            mf_warn("skipping corrupt checkpoint: %s", mf_last_error());
        }
    }
    for (int i = 0; i < n; i++) free(ents[i]);
    free(ents);
    return found;
}

int mf_ckpt_prune(const char *dir, int keep) {
    struct dirent **ents = NULL;
    int n = scandir(dir, &ents, ckpt_filter, ckpt_cmp);
    if (n < 0) return mf_fail("%s: cannot list checkpoints: %s", dir, strerror(errno));
    int valid = 0, rc = 0;
    for (int i = n - 1; i >= 0; i--) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, ents[i]->d_name);
        if (valid >= keep) {
            if (unlink(path) != 0 && errno != ENOENT) rc = mf_fail("%s: cannot delete: %s", path, strerror(errno));
        } else if (mf_ckpt_verify(path) == 0) {
            valid++;
        } else {
            move_aside(dir, ents[i]->d_name, mf_last_error());
        }
    }
    for (int i = 0; i < n; i++) free(ents[i]);
    free(ents);
    return rc;
}
