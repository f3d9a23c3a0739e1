/* fuzz_config.c - libFuzzer target for the YAML configuration loader and Hydra-style overrides
 * (core/mf_config.c).
 *
 * Input: YAML text, then optional override strings, separated by NUL bytes:
 *     <yaml> \0 <override 1> \0 <override 2> ...   (at most 8 overrides are applied)
 * The YAML is written to <scratch>/in.yaml and loaded with mf_cfg_load_file (so defaults:/include:
 * composition runs). The scratch folder also holds base.yaml, child.yaml (includes base.yaml) and
 * cycle.yaml (includes itself) to compose with. mf_config.c is compiled with fopen redirected to
 * mf_fuzz_fopen below, which only opens plain file names inside the scratch folder, so that an input
 * naming /dev/zero or /etc/... cannot make a run read the machine's files (deterministic runs).
 * Then: the overrides (keys under train./model. count as known to a schema), a dump that must
 * re-parse to the same tree and whose own dump is a fixed point, schema validation of `train` and
 * the typed getters, lookups, paths, clone and merge. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "mf_config.h"
#include "mf_error.h"

FILE *mf_fuzz_fopen(const char *restrict path, const char *restrict mode);
FILE *mf_fuzz_fopen(const char *restrict path, const char *restrict mode) {
    size_t n = strlen(fz_dir);
    if (!fz_dir[0] || strncmp(path, fz_dir, n) != 0 || path[n] != '/' || strchr(path + n + 1, '/') ||
        !strcmp(path + n + 1, "..") || !strcmp(path + n + 1, ".") || strcmp(mode, "rb") != 0) {
        errno = EACCES;
        return NULL;
    }
    return fopen(path, mode);
}

static char in_path[600];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *d = fz_scratch("config");
    char p[600];
    static const char base[] = "name: base\nseed: 1\ntrain:\n  steps: 10\n  lr: 1.0e-3\n  ema: [0.999, 0.9999]\n"
                               "model:\n  channels: 32\n  mult: [1, 2, 2]\nstages: [data, train]\n";
    static const char child[] = "defaults: [base.yaml]\ntrain:\n  steps: 20\n";
    static const char cycle[] = "include: cycle.yaml\nx: 1\n";
    snprintf(p, sizeof p, "%s/base.yaml", d), fz_write(p, base, sizeof base - 1);
    snprintf(p, sizeof p, "%s/child.yaml", d), fz_write(p, child, sizeof child - 1);
    snprintf(p, sizeof p, "%s/cycle.yaml", d), fz_write(p, cycle, sizeof cycle - 1);
    snprintf(in_path, sizeof in_path, "%s/in.yaml", d);
    return 0;
}

static bool known_key(void *user, const char *dotted) {
    (void)user;
    return strncmp(dotted, "train.", 6) == 0 || strncmp(dotted, "model.", 6) == 0;
}

static char *dump(const mf_node *root, size_t *len) {
    char *s = NULL;
    FILE *f = open_memstream(&s, len);
    if (!f) abort();
    mf_cfg_dump_yaml(root, f);
    fclose(f);
    return s;
}

static void walk(const mf_node *n, int depth) {
    char w[256];
    char *p = mf_node_path(n);
    (void)mf_node_where(n, w, sizeof w);
    if (n->parent && n->parent->kind == MF_NODE_MAP && n->key && !strpbrk(n->key, ".[")) {
        /* a key without dots is found again by its dotted path from the root when every ancestor
         * key is dot-free too; only check the direct children of the root */
        if (!n->parent->parent && mf_node_child(n->parent, n->key) == NULL) abort();
    }
    free(p);
    if (depth > 300) return;
    for (const mf_node *c = n->first; c; c = c->next) walk(c, depth + 1);
}

static bool same_tree(const mf_node *a, const mf_node *b) {
    if (a->kind != b->kind || a->n_children != b->n_children) return false;
    if ((a->key == NULL) != (b->key == NULL) || (a->key && strcmp(a->key, b->key))) return false;
    if (a->kind == MF_NODE_SCALAR && strcmp(a->value, b->value)) return false;
    for (const mf_node *x = a->first, *y = b->first; x; x = x->next, y = y->next)
        if (!y || !same_tree(x, y)) return false;
    return true;
}

static const mf_key train_keys[] = {
    MF_INT("steps", "100", 1, 1e9, "steps"),
    MF_FLOAT("lr", "2.0e-4", 0, 1, "learning rate"),
    MF_BOOL("amp", "false", "mixed precision"),
    MF_STR("tag", "~", "a tag"),
    MF_ENUM("schedule", "cosine", "cosine|linear|constant", "lr schedule"),
    MF_INTS("mult", "[1, 2, 2]", 1, 8, "channel multipliers"),
    MF_FLOATS("ema", "[0.999]", 0, 1, "EMA decays"),
    MF_STRS("names", "[]", "names"),
    MF_MAP("extra", "free-form"),
    MF_FLOAT("optimizer.beta1", "0.9", 0, 1, "Adam beta1"),
    MF_INT("optimizer.warmup", "0", 0, 1e6, "warm-up steps"),
    MF_KEY_END,
};

static void check_train(mf_node *root) {
    mf_node *t = mf_node_child(root, "train");
    if (!t || (t->kind != MF_NODE_MAP && t->kind != MF_NODE_NULL)) return;
    if (mf_cfg_validate(t, "train", train_keys) != 0) return;
    long long iv[8];
    double dv[8];
    (void)mf_cfg_int(t, "steps");
    (void)mf_cfg_float(t, "lr");
    (void)mf_cfg_bool(t, "amp");
    (void)mf_cfg_str(t, "tag");
    (void)mf_cfg_str(t, "schedule");
    (void)mf_cfg_ints(t, "mult", iv, 8);
    (void)mf_cfg_floats(t, "ema", dv, 8);
    (void)mf_cfg_float(t, "optimizer.beta1");
    (void)mf_cfg_int(t, "optimizer.warmup");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t ylen = nul ? (size_t)(nul - data) : size;
    fz_write(in_path, data, ylen);
    mf_error_clear();
    mf_node *root = mf_cfg_load_file(in_path);
    if (!root) {
        (void)mf_last_error();
        return 0;
    }
    /* overrides */
    size_t off = nul ? ylen + 1 : size;
    for (int k = 0; k < 8 && off <= size && nul; k++) {
        const uint8_t *e = memchr(data + off, 0, size - off);
        size_t n = e ? (size_t)(e - (data + off)) : size - off;
        char *ov = malloc(n + 1);
        memcpy(ov, data + off, n);
        ov[n] = '\0';
        (void)mf_cfg_apply_override(root, ov, known_key, NULL);
        free(ov);
        off += n + 1;
        if (!e) break;
    }
    walk(root, 0);
    /* dump -> parse gives the same tree (kinds, keys, values; a plain scalar may come back quoted),
     * and the dump of that is a fixed point (the first dump may lay out a list differently) */
    size_t l1 = 0, l2 = 0, l3 = 0;
    char *d1 = dump(root, &l1);
    mf_node *again = mf_cfg_parse_string(d1, "<dump>");
    if (root->kind == MF_NODE_MAP && root->n_children > 0) {
        if (!again) {
            fprintf(stderr, "fuzz_config: the dump does not re-parse: %s\n--- dump ---\n%s", mf_last_error(), d1);
            abort();
        }
        if (!same_tree(root, again)) {
            fprintf(stderr, "fuzz_config: the dump re-parses to another tree\n--- dump ---\n%s", d1);
            abort();
        }
        char *d2 = dump(again, &l2);
        mf_node *third = mf_cfg_parse_string(d2, "<dump2>");
        if (!third) abort();
        char *d3 = dump(third, &l3);
        if (l2 != l3 || memcmp(d2, d3, l2) != 0) {
            fprintf(stderr, "fuzz_config: dump round trip differs\n--- second ---\n%s--- third ---\n%s", d2, d3);
            abort();
        }
        mf_node_free(third);
        free(d2);
        free(d3);
    }
    if (again) mf_node_free(again);
    free(d1);
    /* lookups, clone, merge, validation */
    (void)mf_cfg_find(root, "train.optimizer.lr");
    (void)mf_cfg_find(root, "stages");
    if (root->kind == MF_NODE_MAP) {
        mf_node *c1 = mf_node_clone(root), *c2 = mf_node_clone(root);
        mf_cfg_merge(c1, c2);
        mf_node_free(c1);
        check_train(root);
    }
    mf_node_free(root);
    return 0;
}
