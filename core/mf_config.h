/* mf_config.h - experiment configuration: a tree parsed from YAML (libyaml) that remembers where every
 * value came from (file:line:col, an override, or a schema default); Hydra-style overrides; composition
 * through `defaults:` / `include:`; and schema validation with typed getters.
 *
 * Ownership: every mf_node belongs to the tree it is in; mf_node_free() on the root frees all. */
#ifndef MF_CONFIG_H
#define MF_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { MF_NODE_NULL = 0, MF_NODE_SCALAR, MF_NODE_SEQ, MF_NODE_MAP } mf_node_kind;

typedef struct mf_node mf_node;
struct mf_node {
    mf_node_kind kind;
    char *key;        /* key when this node is a value in a map, else NULL */
    char *value;      /* scalar text (MF_NODE_SCALAR), else NULL */
    bool quoted;      /* scalar was quoted in the source: always a string, never a number/bool */
    char *origin;     /* file path, "override 'a.b=v'" or "<default>" */
    int line, col;    /* 1-based position in origin (0 when not from a file) */
    mf_node *parent;
    mf_node *first;   /* children, in source order (map entries or sequence items) */
    mf_node *last;
    mf_node *next;    /* next sibling */
    int n_children;
};

/* ---- building and reading trees ---------------------------------------------------------------- */

/* Parse one YAML document from a file, then compose: a top-level `defaults:` (or `include:`) list of
 * file paths (relative to the including file) is loaded first, in order, and this file is merged on
 * top (maps merge key by key, anything else replaces). Cycles are refused. The composing keys are
 * removed from the result. Returns NULL on error (mf_last_error() names file:line:col). */
mf_node *mf_cfg_load_file(const char *path);
/* Inputs stay bounded: every file read by mf_cfg_load_file must be a regular file (a folder, FIFO or
 * device is refused as such) of at most MF_CFG_MAX_FILE_BYTES, and all files of one composition
 * together (a file included twice counts twice) at most MF_CFG_MAX_TOTAL_BYTES. A scalar (key or
 * value) holding a NUL byte ("\0" escape) is refused, naming file:line:col. */
#define MF_CFG_MAX_FILE_BYTES ((size_t)16 << 20)
#define MF_CFG_MAX_TOTAL_BYTES ((size_t)64 << 20)
/* Parse YAML text (no composition); origin is used in error messages. */
mf_node *mf_cfg_parse_string(const char *text, const char *origin);
void mf_node_free(mf_node *n);
mf_node *mf_node_clone(const mf_node *n);

/* Child lookups. mf_cfg_find takes a dotted path ("train.optimizer.lr"); NULL when absent. */
mf_node *mf_node_child(const mf_node *map, const char *key);
mf_node *mf_cfg_find(const mf_node *root, const char *dotted);
/* Dotted path of a node from its root ("train.optimizer.lr", sequence items as "stages[2]");
 * returns a malloc'ed string. */
char *mf_node_path(const mf_node *n);
/* "FILE:LINE:COL" (or the origin alone when it has no position) into buf; returns buf. */
const char *mf_node_where(const mf_node *n, char *buf, size_t cap);

/* Deep-merge src into dst (maps by key, other kinds replace). src is consumed (freed). */
void mf_cfg_merge(mf_node *dst, mf_node *src);

/* Write the tree as block-style YAML (strings quoted where needed so it re-parses identically). */
int mf_cfg_dump_yaml(const mf_node *root, FILE *f);

/* ---- overrides (Hydra syntax) ------------------------------------------------------------------ */
/*   a.b=v    set an existing key (error if a.b does not exist in the tree)
 *   +a.b=v   add a key (error if it already exists); intermediate maps are created
 *   ~a.b     delete a key (error if it does not exist); `~a.b=v` deletes only if the value is v
 * v is parsed as YAML: a plain scalar, a quoted string, or a flow sequence/map ("[1,2,2]").
 * For `a.b=v` on a key absent from the file but known to a schema, callers pass `known`, a
 * predicate saying whether the dotted path is a valid key (may be NULL). */
typedef bool (*mf_known_key_fn)(void *user, const char *dotted_path);
int mf_cfg_apply_override(mf_node *root, const char *text, mf_known_key_fn known, void *user);

/* ---- scalar conversion (checked; errors name where the value came from and its key path) ------- */
int mf_node_as_int(const mf_node *n, long long *out);  /* strtoll, full match, no overflow */
int mf_node_as_double(const mf_node *n, double *out);  /* strtod, finite; accepts ints, .inf/.nan refused */
int mf_node_as_bool(const mf_node *n, bool *out);      /* true/false/yes/no/on/off (YAML 1.1) */
int mf_node_as_string(const mf_node *n, const char **out); /* any scalar */

/* ---- schemas ---------------------------------------------------------------------------------- */
typedef enum {
    MF_T_INT = 1,
    MF_T_FLOAT,
    MF_T_BOOL,
    MF_T_STRING,
    MF_T_ENUM,        /* string, one of `choices` ("a|b|c") */
    MF_T_INT_LIST,    /* sequence of ints (elements range-checked) */
    MF_T_FLOAT_LIST,
    MF_T_STRING_LIST,
    MF_T_MAP,         /* free-form mapping (not validated below it) */
} mf_type;

typedef struct mf_key {
    const char *path;    /* relative to the section, dotted for nested maps: "optimizer.lr" */
    mf_type type;
    const char *def;     /* default as YAML text ("2.0e-4", "[1, 2, 2]", "cosine", "~" = null/none);
                            NULL means the key is required */
    double min, max;     /* inclusive range for numbers and numeric list elements, if has_range */
    int has_range;
    const char *choices; /* MF_T_ENUM only */
    const char *help;    /* one line, shown by `mfpipe validate --keys` and in suggestions */
} mf_key;

#define MF_KEY_END {NULL, 0, NULL, 0, 0, 0, NULL, NULL}
#define MF_INT(p, d, lo, hi, h) {p, MF_T_INT, d, lo, hi, 1, NULL, h}
#define MF_FLOAT(p, d, lo, hi, h) {p, MF_T_FLOAT, d, lo, hi, 1, NULL, h}
#define MF_BOOL(p, d, h) {p, MF_T_BOOL, d, 0, 0, 0, NULL, h}
#define MF_STR(p, d, h) {p, MF_T_STRING, d, 0, 0, 0, NULL, h}
#define MF_ENUM(p, d, choices, h) {p, MF_T_ENUM, d, 0, 0, 0, choices, h}
#define MF_INTS(p, d, lo, hi, h) {p, MF_T_INT_LIST, d, lo, hi, 1, NULL, h}
#define MF_FLOATS(p, d, lo, hi, h) {p, MF_T_FLOAT_LIST, d, lo, hi, 1, NULL, h}
#define MF_STRS(p, d, h) {p, MF_T_STRING_LIST, d, 0, 0, 0, NULL, h}
#define MF_MAP(p, h) {p, MF_T_MAP, "{}", 0, 0, 0, NULL, h}

/* Validate `section` (a map; created empty by the caller when absent) against keys (terminated by
 * MF_KEY_END): an unknown key is an error suggesting the nearest known one ("train.stpes: unknown
 * key; did you mean train.steps?"), a wrong type says what was expected, numbers are range-checked,
 * enum values listed. Missing keys get their defaults (origin "<default>"); a missing required key is
 * an error. `prefix` is the section's dotted path used in messages ("train"). */
int mf_cfg_validate(mf_node *section, const char *prefix, const mf_key *keys);

/* Nearest candidate by edit distance, or NULL if none is close enough (distance <= max(2, len/3)). */
const char *mf_suggest(const char *word, const char *const *candidates, int n);

/* Typed getters on a *validated* section: the key must be in its schema (else MF_ASSERT). */
long long mf_cfg_int(const mf_node *section, const char *path);
double mf_cfg_float(const mf_node *section, const char *path);
bool mf_cfg_bool(const mf_node *section, const char *path);
const char *mf_cfg_str(const mf_node *section, const char *path);  /* NULL when the value is null */
/* Lists: number of elements written to out (at most cap); returns count of elements in the list. */
int mf_cfg_ints(const mf_node *section, const char *path, long long *out, int cap);
int mf_cfg_floats(const mf_node *section, const char *path, double *out, int cap);

#ifdef __cplusplus
}
#endif
#endif
