/* mf_config.c - the experiment configuration tree: YAML parsed with libyaml's event API (every value
 * keeps file:line:col), composition through defaults:/include:, Hydra-style overrides, YAML dumping,
 * checked scalar conversions, and schema validation with "did you mean" suggestions. */
#if !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700 /* realpath */
#endif
#include "mf_config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "mf_error.h"

#define MAX_DEPTH 256        /* nesting limit of one YAML document */
#define MAX_NODES 1000000    /* node limit of one document (guards alias expansion bombs) */
#define MAX_SEGS 64          /* segments in a dotted key path */

/* ---- nodes ------------------------------------------------------------------------------------- */

static mf_node *node_new(mf_node_kind kind, const char *origin, int line, int col) {
    mf_node *n = mf_xcalloc(1, sizeof *n);
    *n = (mf_node){.kind = kind, .origin = mf_xstrdup(origin ? origin : "<config>"), .line = line, .col = col};
    return n;
}

static void node_append(mf_node *parent, mf_node *c) {
    c->parent = parent;
    c->next = NULL;
    if (parent->last) parent->last->next = c;
    else parent->first = c;
    parent->last = c;
    parent->n_children++;
}

static void node_unlink(mf_node *c) {
    mf_node *p = c->parent, *prev = NULL;
    if (!p) return;
    for (mf_node *it = p->first; it && it != c; it = it->next) prev = it;
    if (prev) prev->next = c->next;
    else p->first = c->next;
    if (p->last == c) p->last = prev;
    p->n_children--;
    c->parent = c->next = NULL;
}

static void free_tree(mf_node *n);
static void free_children(mf_node *n) {
    for (mf_node *c = n->first, *nx; c; c = nx) {
        nx = c->next;
        free_tree(c);
    }
    n->first = n->last = NULL;
    n->n_children = 0;
}

static void free_tree(mf_node *n) {
    free_children(n);
    free(n->key);
    free(n->value);
    free(n->origin);
    free(n);
}

/* Frees n and everything below it; a node that is still in a tree is unlinked from its parent first. */
void mf_node_free(mf_node *n) {
    if (!n) return;
    node_unlink(n);
    free_tree(n);
}

mf_node *mf_node_clone(const mf_node *n) {
    if (!n) return NULL;
    mf_node *c = node_new(n->kind, n->origin, n->line, n->col);
    c->key = n->key ? mf_xstrdup(n->key) : NULL;
    c->value = n->value ? mf_xstrdup(n->value) : NULL;
    c->quoted = n->quoted;
    for (const mf_node *ch = n->first; ch; ch = ch->next) node_append(c, mf_node_clone(ch));
    return c;
}

static long count_nodes(const mf_node *n) {
    long k = 1;
    for (const mf_node *c = n->first; c; c = c->next) k += count_nodes(c);
    return k;
}

static void set_origin_tree(mf_node *n, const char *origin) {
    free(n->origin);
    n->origin = mf_xstrdup(origin);
    n->line = n->col = 0;
    for (mf_node *c = n->first; c; c = c->next) set_origin_tree(c, origin);
}

/* Move src's contents (kind, value, origin, position, children) into dst, keeping dst's key and place
 * in its tree; src is freed. */
static void replace_contents(mf_node *dst, mf_node *src) {
    mf_node keep = *dst;
    free_children(dst);
    free(dst->value);
    free(dst->origin);
    *dst = *src;
    dst->key = keep.key;
    dst->parent = keep.parent;
    dst->next = keep.next;
    for (mf_node *c = dst->first; c; c = c->next) c->parent = dst;
    free(src->key);
    free(src);
}

static mf_node *child_n(const mf_node *map, const char *key, size_t len) {
    if (!map || map->kind != MF_NODE_MAP) return NULL;
    for (mf_node *c = map->first; c; c = c->next)
        if (c->key && strlen(c->key) == len && memcmp(c->key, key, len) == 0) return c;
    return NULL;
}

mf_node *mf_node_child(const mf_node *map, const char *key) { return key ? child_n(map, key, strlen(key)) : NULL; }

/* ---- string index ------------------------------------------------------------------------------
 * A small open-addressing hash table from borrowed strings to pointers. Child lookups of a map are a
 * list walk (maps are small), so anything that looks up every key of a map in another map (duplicate
 * keys while parsing, merging, alias lookup, comparing maps) goes through this to stay linear. */
typedef struct {
    const char **k;
    void **v;
    size_t cap, n; /* cap: a power of two, or 0 */
} str_index;

static size_t str_hash(const char *s) { /* FNV-1a */
    size_t h = (size_t)1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * (size_t)1099511628211ULL;
    return h;
}

static void **sx_slot(str_index *x, const char *key, bool insert) {
    if (insert && 2 * (x->n + 1) > x->cap) { /* grow, keeping the load under 1/2 */
        str_index y = {0};
        y.cap = x->cap ? 2 * x->cap : 16;
        y.k = mf_xcalloc(y.cap, sizeof *y.k);
        y.v = mf_xcalloc(y.cap, sizeof *y.v);
        for (size_t i = 0; i < x->cap; i++)
            if (x->k[i]) *sx_slot(&y, x->k[i], true) = x->v[i];
        free(x->k);
        free(x->v);
        *x = y;
    }
    if (!x->cap) return NULL;
    for (size_t i = str_hash(key) & (x->cap - 1);; i = (i + 1) & (x->cap - 1)) {
        if (!x->k[i]) {
            if (!insert) return NULL;
            x->k[i] = key;
            x->n++;
            return &x->v[i];
        }
        if (!strcmp(x->k[i], key)) return &x->v[i];
    }
}

static void *sx_get(str_index *x, const char *key) {
    void **s = sx_slot(x, key, false);
    return s ? *s : NULL;
}

static void sx_put(str_index *x, const char *key, void *val) { *sx_slot(x, key, true) = val; }

static void sx_free(str_index *x) {
    free(x->k);
    free(x->v);
    memset(x, 0, sizeof *x);
}

/* Index of a map's children by key (keys are borrowed from the nodes). */
static void sx_of_map(str_index *x, const mf_node *map) {
    memset(x, 0, sizeof *x);
    for (mf_node *c = map->first; c; c = c->next)
        if (c->key && !sx_get(x, c->key)) sx_put(x, c->key, c);
}

/* Accepts "a.b.c" and sequence indexes "stages[2].name". */
mf_node *mf_cfg_find(const mf_node *root, const char *dotted) {
    const mf_node *cur = root;
    const char *s = dotted;
    if (!root || !dotted) return NULL;
    while (*s) {
        size_t len = strcspn(s, ".[");
        if (len && !(cur = child_n(cur, s, len))) return NULL;
        s += len;
        while (*s == '[') {
            char *end;
            long i = strtol(s + 1, &end, 10);
            if (end == s + 1 || *end != ']' || cur->kind != MF_NODE_SEQ || i < 0 || i >= cur->n_children)
                return NULL;
            for (cur = cur->first; i > 0; i--) cur = cur->next;
            s = end + 1;
        }
        if (*s == '.' && !*++s) return NULL;
    }
    return (mf_node *)cur;
}

char *mf_node_path(const mf_node *n) {
    if (!n || !n->parent) return mf_xstrdup("");
    char *up = mf_node_path(n->parent), *r;
    if (n->parent->kind == MF_NODE_SEQ) {
        int i = 0;
        for (const mf_node *c = n->parent->first; c && c != n; c = c->next) i++;
        r = mf_xasprintf("%s[%d]", up, i);
    } else {
        r = *up ? mf_xasprintf("%s.%s", up, n->key ? n->key : "?") : mf_xstrdup(n->key ? n->key : "?");
    }
    free(up);
    return r;
}

const char *mf_node_where(const mf_node *n, char *buf, size_t cap) {
    const char *o = n && n->origin ? n->origin : "<config>";
    if (n && n->line > 0) snprintf(buf, cap, "%s:%d:%d", o, n->line, n->col);
    else snprintf(buf, cap, "%s", o);
    return buf;
}

/* ---- parsing (libyaml events) -------------------------------------------------------------------
 * Positions: a map entry's value node records the position of its KEY (so "unknown key" and type
 * errors point at the line that names the key); sequence items and the root record their own
 * position. Anchors/aliases are supported by cloning the anchored node (recursive aliases refused).
 * Plain `~`, `null`/`Null`/`NULL` and empty plain scalars become MF_NODE_NULL; quoted, block
 * (| and >) and `!!str` scalars are marked quoted. Keys must be scalars and are kept as text. */

typedef struct {
    char *name;
    mf_node *node; /* NULL while the anchored collection is still being parsed */
} anchor;

typedef struct {
    yaml_parser_t yp;
    const char *origin;
    anchor *anchors;
    int n_anchors, cap_anchors;
    str_index anchor_index; /* name -> 1 + index of its latest definition in anchors */
    long n_nodes;
} parser;

static bool is_null_word(const char *s) {
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

static int syntax_error(parser *p) {
    yaml_parser_t *y = &p->yp;
    if (y->error == YAML_MEMORY_ERROR) return mf_fail("%s: out of memory while parsing YAML", p->origin);
    if (y->error == YAML_READER_ERROR)
        return mf_fail("%s: byte %zu: %s", p->origin, y->problem_offset, y->problem ? y->problem : "bad input");
    const char *prob = y->problem ? y->problem : "YAML syntax error";
    if (y->context)
        return mf_fail("%s:%zu:%zu: %s (%s at line %zu)", p->origin, y->problem_mark.line + 1,
                       y->problem_mark.column + 1, prob, y->context, y->context_mark.line + 1);
    return mf_fail("%s:%zu:%zu: %s", p->origin, y->problem_mark.line + 1, y->problem_mark.column + 1, prob);
}

static int next_event(parser *p, yaml_event_t *ev) { return yaml_parser_parse(&p->yp, ev) ? 0 : syntax_error(p); }

static int anchor_begin(parser *p, const yaml_char_t *name, mf_node *node) {
    if (!name) return -1;
    if (p->n_anchors == p->cap_anchors) {
        p->cap_anchors = p->cap_anchors ? 2 * p->cap_anchors : 8;
        p->anchors = mf_xrealloc(p->anchors, (size_t)p->cap_anchors * sizeof *p->anchors);
    }
    p->anchors[p->n_anchors].name = mf_xstrdup((const char *)name);
    p->anchors[p->n_anchors].node = node;
    sx_put(&p->anchor_index, p->anchors[p->n_anchors].name, (void *)(uintptr_t)(p->n_anchors + 1));
    return p->n_anchors++;
}

static mf_node *parse_node(parser *p, yaml_event_t *ev, int depth);

static mf_node *parse_alias(parser *p, yaml_event_t *ev, int line, int col) {
    const char *name = (const char *)ev->data.alias.anchor;
    uintptr_t slot = (uintptr_t)sx_get(&p->anchor_index, name); /* the latest definition wins */
    if (slot) {
        int i = (int)(slot - 1);
        if (!p->anchors[i].node) {
            mf_fail("%s:%d:%d: alias *%s refers to a node that contains it (recursive aliases are not "
                    "supported)", p->origin, line, col, name);
            return NULL;
        }
        long k = count_nodes(p->anchors[i].node);
        if (p->n_nodes + k > MAX_NODES) {
            mf_fail("%s:%d:%d: document too large after expanding alias *%s", p->origin, line, col, name);
            return NULL;
        }
        p->n_nodes += k;
        mf_node *n = mf_node_clone(p->anchors[i].node);
        free(n->key);
        n->key = NULL, n->line = line, n->col = col;
        return n;
    }
    mf_fail("%s:%d:%d: unknown alias *%s", p->origin, line, col, name);
    return NULL;
}

/* A scalar whose text holds a NUL byte (a "\0" or "\x00" escape) would be cut short by every C
 * string that carries it (a name becoming a shorter folder, a key reported as another): refused. */
static bool has_nul(const yaml_event_t *ev, parser *p, const char *what, int line, int col) {
    size_t len = ev->data.scalar.length;
    const char *v = (const char *)ev->data.scalar.value, *z = memchr(v, '\0', len);
    if (!z) return false;
    mf_fail("%s:%d:%d: a NUL byte (\\0) in a %s is not allowed (at byte %zu of '%s...')", p->origin, line,
            col, what, (size_t)(z - v) + 1, v);
    return true;
}

/* Parse the node that starts with *ev (consumed). */
static mf_node *parse_node(parser *p, yaml_event_t *ev, int depth) {
    int line = (int)ev->start_mark.line + 1, col = (int)ev->start_mark.column + 1, slot = -1;
    mf_node *n = NULL;
    str_index seen = {0}; /* keys of a mapping so far: duplicate detection stays linear */
    if (depth > MAX_DEPTH || ++p->n_nodes > MAX_NODES) {
        mf_fail("%s:%d:%d: document nested too deeply or too large", p->origin, line, col);
        yaml_event_delete(ev);
        return NULL;
    }
    switch (ev->type) {
    case YAML_SCALAR_EVENT: {
        const char *v = (const char *)ev->data.scalar.value, *tag = (const char *)ev->data.scalar.tag;
        if (has_nul(ev, p, "value", line, col)) {
            yaml_event_delete(ev);
            return NULL;
        }
        bool quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE || (tag && !strcmp(tag, YAML_STR_TAG));
        if (!quoted && is_null_word(v)) {
            n = node_new(MF_NODE_NULL, p->origin, line, col);
        } else {
            n = node_new(MF_NODE_SCALAR, p->origin, line, col);
            n->value = mf_xstrdup(v);
            n->quoted = quoted;
        }
        anchor_begin(p, ev->data.scalar.anchor, n);
        yaml_event_delete(ev);
        return n;
    }
    case YAML_ALIAS_EVENT:
        n = parse_alias(p, ev, line, col);
        yaml_event_delete(ev);
        return n;
    case YAML_SEQUENCE_START_EVENT:
        n = node_new(MF_NODE_SEQ, p->origin, line, col);
        slot = anchor_begin(p, ev->data.sequence_start.anchor, NULL);
        yaml_event_delete(ev);
        for (;;) {
            yaml_event_t e;
            if (next_event(p, &e)) goto fail;
            if (e.type == YAML_SEQUENCE_END_EVENT) break; /* end events own no memory */
            mf_node *item = parse_node(p, &e, depth + 1);
            if (!item) goto fail;
            node_append(n, item);
        }
        break;
    case YAML_MAPPING_START_EVENT:
        n = node_new(MF_NODE_MAP, p->origin, line, col);
        slot = anchor_begin(p, ev->data.mapping_start.anchor, NULL);
        yaml_event_delete(ev);
        for (;;) {
            yaml_event_t k, v;
            if (next_event(p, &k)) goto fail;
            if (k.type == YAML_MAPPING_END_EVENT) break;
            int kl = (int)k.start_mark.line + 1, kc = (int)k.start_mark.column + 1;
            if (k.type != YAML_SCALAR_EVENT) {
                mf_fail("%s:%d:%d: mapping keys must be plain or quoted strings", p->origin, kl, kc);
                yaml_event_delete(&k);
                goto fail;
            }
            if (has_nul(&k, p, "key", kl, kc)) {
                yaml_event_delete(&k);
                goto fail;
            }
            char *key = mf_xstrdup((const char *)k.data.scalar.value);
            yaml_event_delete(&k);
            mf_node *dup = sx_get(&seen, key);
            if (dup) {
                mf_fail("%s:%d:%d: duplicate key '%s' (first set at line %d)", p->origin, kl, kc, key, dup->line);
                free(key);
                goto fail;
            }
            mf_node *val = next_event(p, &v) ? NULL : parse_node(p, &v, depth + 1);
            if (!val) {
                free(key);
                goto fail;
            }
            val->key = key, val->line = kl, val->col = kc;
            node_append(n, val);
            sx_put(&seen, key, val);
        }
        sx_free(&seen);
        break;
    default:
        mf_fail("%s:%d:%d: unexpected YAML event", p->origin, line, col);
        yaml_event_delete(ev);
        return NULL;
    }
    if (slot >= 0) p->anchors[slot].node = n;
    return n;
fail:
    sx_free(&seen);
    free_tree(n);
    return NULL;
}

/* Parse one document; NULL on error. *empty is set when the text holds no document at all. */
static mf_node *parse_text(const char *text, size_t len, const char *origin, bool *empty) {
    parser p;
    yaml_event_t ev;
    mf_node *root = NULL;
    memset(&p, 0, sizeof p);
    p.origin = origin;
    *empty = false;
    MF_ASSERT(yaml_parser_initialize(&p.yp));
    yaml_parser_set_input_string(&p.yp, (const unsigned char *)text, len);
    if (next_event(&p, &ev)) goto done; /* stream start */
    yaml_event_delete(&ev);
    if (next_event(&p, &ev)) goto done;
    if (ev.type == YAML_STREAM_END_EVENT) {
        yaml_event_delete(&ev);
        *empty = true;
        mf_fail("%s: empty document", origin);
        goto done;
    }
    yaml_event_delete(&ev); /* document start */
    if (next_event(&p, &ev) || !(root = parse_node(&p, &ev, 0))) goto done;
    if (next_event(&p, &ev)) goto fail; /* document end */
    yaml_event_delete(&ev);
    if (next_event(&p, &ev)) goto fail;
    if (ev.type != YAML_STREAM_END_EVENT) {
        mf_fail("%s:%zu:%zu: only one YAML document is supported", origin, ev.start_mark.line + 1,
                ev.start_mark.column + 1);
        yaml_event_delete(&ev);
        goto fail;
    }
    yaml_event_delete(&ev);
    goto done;
fail:
    free_tree(root);
    root = NULL;
done:
    sx_free(&p.anchor_index);
    for (int i = 0; i < p.n_anchors; i++) free(p.anchors[i].name);
    free(p.anchors);
    yaml_parser_delete(&p.yp);
    return root;
}

mf_node *mf_cfg_parse_string(const char *text, const char *origin) {
    bool empty;
    MF_ASSERT(text);
    return parse_text(text, strlen(text), origin ? origin : "<string>", &empty);
}

/* ---- composition ------------------------------------------------------------------------------- */

typedef struct chain {
    const char *real, *shown;
    const struct chain *up;
} chain;

/* Read a whole experiment file: regular files only (a FIFO, a device such as /dev/zero or a folder
 * is refused before reading; the open does not block on a FIFO), at most `limit` bytes. NULL with
 * *why set (a static text, or strerror) on failure. */
static char *read_file(const char *path, size_t *len, size_t limit, const char **why, char *whybuf, size_t whycap) {
    struct stat st;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    *why = NULL;
    if (fd < 0) return *why = strerror(errno), NULL;
    int sr = fstat(fd, &st);
    if (sr != 0 || !S_ISREG(st.st_mode)) {
        *why = sr != 0 ? strerror(errno) : S_ISDIR(st.st_mode) ? "is a directory" : "is not a regular file";
        close(fd);
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = mf_xmalloc(cap);
    for (;;) {
        if (n == cap) buf = mf_xrealloc(buf, cap *= 2);
        ssize_t k = read(fd, buf + n, cap - n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            *why = strerror(errno);
            break;
        }
        if (k == 0) break;
        n += (size_t)k;
        if (n > limit) { /* checked while reading: the file may grow after fstat */
            snprintf(whybuf, whycap, "is larger than %zu bytes, the limit for experiment files (MF_CFG_MAX_FILE_BYTES)", limit);
            *why = whybuf;
            break;
        }
    }
    close(fd);
    if (*why) return free(buf), NULL;
    *len = n;
    return buf;
}

static char *join_dir(const char *including, const char *rel) {
    const char *slash = strrchr(including, '/');
    if (rel[0] == '/' || !slash) return mf_xstrdup(rel);
    return mf_xasprintf("%.*s/%s", (int)(slash - including), including, rel);
}

static char *chain_text(const chain *c, const char *last) {
    char *up = c->up ? chain_text(c->up, c->shown) : mf_xstrdup(c->shown);
    char *r = mf_xasprintf("%s -> %s", up, last);
    free(up);
    return r;
}

/* Load `path` and compose it; inc_at is the include entry that named it (NULL for the top file). */
static mf_node *load_rec(const char *path, const chain *up, const mf_node *inc_at, size_t *budget) {
    char w[1024], wb[160];
    size_t len = 0;
    bool empty;
    const char *why;
    char *text = read_file(path, &len, MF_CFG_MAX_FILE_BYTES, &why, wb, sizeof wb);
    if (text && len > *budget) {
        mf_fail("%s: the composed experiment (this file and the files it includes, repeats counted) is larger "
                "than %zu bytes, the limit (MF_CFG_MAX_TOTAL_BYTES)", path, (size_t)MF_CFG_MAX_TOTAL_BYTES);
        free(text);
        return NULL;
    }
    if (text) *budget -= len;
    if (!text && inc_at)
        mf_fail("%s: cannot open included file '%s' (%s): %s", mf_node_where(inc_at, w, sizeof w), inc_at->value,
                path, why);
    else if (!text) mf_fail("%s: cannot open: %s", path, why);
    if (!text) return NULL;
    char *real = realpath(path, NULL), *ct;
    if (!real) real = mf_xstrdup(path);
    for (const chain *c = up; c; c = c->up) { /* up != NULL implies inc_at != NULL */
        if (strcmp(c->real, real) != 0) continue;
        mf_fail("%s: include cycle: %s", mf_node_where(inc_at, w, sizeof w), ct = chain_text(up, path));
        free(ct);
        free(text);
        free(real);
        return NULL;
    }
    mf_node *tree = parse_text(text, len, path, &empty), *acc = NULL;
    free(text);
    if (tree && tree->kind != MF_NODE_MAP) {
        mf_fail("%s:%d:%d: the top level must be a mapping (key: value lines)", path, tree->line, tree->col);
        goto fail;
    }
    mf_node *inc = mf_node_child(tree, "defaults"), *inc2 = mf_node_child(tree, "include");
    if (inc && inc2) {
        mf_fail("%s: use either defaults: or include:, not both", mf_node_where(inc2, w, sizeof w));
        goto fail;
    }
    if (!inc) inc = inc2;
    if (inc) {
        chain me = {real, path, up};
        bool single = inc->kind == MF_NODE_SCALAR;
        if (!single && inc->kind != MF_NODE_SEQ && inc->kind != MF_NODE_NULL) {
            mf_fail("%s: %s: expected a file path or a list of file paths", mf_node_where(inc, w, sizeof w), inc->key);
            goto fail;
        }
        for (mf_node *it = single ? inc : inc->first; it; it = single ? NULL : it->next) {
            if (it->kind != MF_NODE_SCALAR) {
                mf_fail("%s: %s: expected a file path", mf_node_where(it, w, sizeof w), inc->key);
                goto fail;
            }
            char *sub = join_dir(path, it->value);
            mf_node *t = load_rec(sub, &me, it, budget);
            free(sub);
            if (!t) goto fail;
            if (acc) mf_cfg_merge(acc, t);
            else acc = t;
        }
        mf_node_free(inc);
        if (acc) mf_cfg_merge(acc, tree), tree = acc;
    }
    free(real);
    return tree;
fail:
    if (acc) free_tree(acc);
    if (tree) free_tree(tree);
    free(real);
    return NULL;
}

mf_node *mf_cfg_load_file(const char *path) {
    MF_ASSERT(path);
    size_t budget = MF_CFG_MAX_TOTAL_BYTES;
    return load_rec(path, NULL, NULL, &budget);
}

/* Maps merge key by key (new keys appended; the merged map takes src's origin); anything else
 * replaces dst's contents in place (dst keeps its key and place in its tree). */
void mf_cfg_merge(mf_node *dst, mf_node *src) {
    MF_ASSERT(dst && src && dst != src);
    node_unlink(src);
    if (dst->kind != MF_NODE_MAP || src->kind != MF_NODE_MAP) {
        replace_contents(dst, src);
        return;
    }
    str_index dk;
    sx_of_map(&dk, dst);
    while (src->first) {
        mf_node *c = src->first, *d;
        node_unlink(c);
        if ((d = sx_get(&dk, c->key))) {
            mf_cfg_merge(d, c); /* d keeps its key: the index stays valid */
        } else {
            node_append(dst, c);
            sx_put(&dk, c->key, c);
        }
    }
    sx_free(&dk);
    free(dst->origin);
    dst->origin = src->origin, dst->line = src->line, dst->col = src->col;
    src->origin = NULL;
    free_tree(src);
}

/* ---- dumping ----------------------------------------------------------------------------------- */

/* Can s be written as a plain scalar that re-parses as the same unquoted text? */
/* Length of a UTF-8 sequence at p that YAML cannot hold raw (C1 controls incl. NEL, U+2028/U+2029
 * line breaks, U+FFFE/U+FFFF), with its code point in *cp; 0 for anything else. Parsed text is valid
 * UTF-8 (libyaml checks), so these come only from escapes like "\x85" and must be escaped again. */
static int raw_unsafe(const unsigned char *p, unsigned *cp) {
    if (p[0] == 0xC2 && p[1] >= 0x80 && p[1] <= 0x9F) return *cp = p[1], 2;
    if (p[0] == 0xE2 && p[1] == 0x80 && (p[2] == 0xA8 || p[2] == 0xA9)) return *cp = 0x2000u + p[2] - 0x80u, 3;
    if (p[0] == 0xEF && p[1] == 0xBF && (p[2] == 0xBE || p[2] == 0xBF)) return *cp = 0xFFC0u + p[2] - 0x80u, 3;
    return 0;
}

static bool plain_ok(const char *s, bool flow) {
    size_t len = strlen(s);
    unsigned cp;
    for (size_t i = 0; i < len; i++)
        if (raw_unsafe((const unsigned char *)s + i, &cp)) return false;
    if (!len || is_null_word(s) || strchr("?:,[]{}#&*!|>'\"%@`", s[0])) return false;
    if ((s[0] == '-' && (s[1] == '\0' || s[1] == ' ')) || !strncmp(s, "---", 3) || !strncmp(s, "...", 3))
        return false;
    if (s[0] == ' ' || s[len - 1] == ' ') return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f) return false;
        if (ch == ':' && (s[i + 1] == ' ' || s[i + 1] == '\0')) return false;
        if (ch == '#' && s[i - 1] == ' ') return false; /* i > 0: s[0] == '#' refused above */
        if (flow && strchr(",[]{}:", ch)) return false;
    }
    return true;
}

static void put_quoted(FILE *f, const char *s) {
    static const char from[] = "\"\\\n\t\r", to[] = "\"\\ntr";
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        const char *e = strchr(from, *p); /* *p != 0 here */
        unsigned cp;
        int k = raw_unsafe(p, &cp);
        if (k) fprintf(f, "\\u%04x", cp), p += k - 1;
        else if (e) fprintf(f, "\\%c", to[e - from]);
        else if (*p < 0x20 || *p == 0x7f) fprintf(f, "\\x%02x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

/* Quoted scalars are always written double-quoted, so a dump re-parses to an identical tree. */
static void put_scalar(FILE *f, const mf_node *n, bool flow) {
    if (n->kind == MF_NODE_NULL) fputc('~', f);
    else if (!n->quoted && plain_ok(n->value, flow)) fputs(n->value, f);
    else put_quoted(f, n->value);
}

static bool is_inline(const mf_node *n) {
    if (n->kind == MF_NODE_NULL || n->kind == MF_NODE_SCALAR || n->n_children == 0) return true;
    if (n->kind == MF_NODE_MAP) return false;
    for (const mf_node *c = n->first; c; c = c->next)
        if (c->kind != MF_NODE_NULL && (c->kind != MF_NODE_SCALAR || (!c->quoted && !plain_ok(c->value, true))))
            return false;
    return true;
}

static void put_inline(FILE *f, const mf_node *n) { /* scalar, {} or a flow list of scalars */
    if (n->kind == MF_NODE_MAP) {
        fputs("{}", f);
    } else if (n->kind != MF_NODE_SEQ) {
        put_scalar(f, n, false);
    } else {
        fputc('[', f);
        for (const mf_node *c = n->first; c; c = c->next) {
            put_scalar(f, c, true);
            if (c->next) fputs(", ", f);
        }
        fputc(']', f);
    }
}

static void dump_map(FILE *f, const mf_node *n, int indent, bool first_inline);
static void dump_seq(FILE *f, const mf_node *n, int indent);

static void dump_after(FILE *f, const mf_node *c, int indent) { /* after "key:" or "-" */
    bool flat = is_inline(c);
    fputc(flat ? ' ' : '\n', f);
    if (flat) put_inline(f, c), fputc('\n', f);
    else if (c->kind == MF_NODE_MAP) dump_map(f, c, indent + 2, false);
    else dump_seq(f, c, indent + 2);
}

static void dump_map(FILE *f, const mf_node *n, int indent, bool first_inline) {
    for (const mf_node *c = n->first; c; c = c->next) {
        if (c != n->first || !first_inline) fprintf(f, "%*s", indent, "");
        if (strlen(c->key) > 240) { /* YAML caps implicit keys at 1024 characters: explicit "? key" */
            fputs("? ", f);
            put_quoted(f, c->key);
            fprintf(f, "\n%*s", indent, "");
        } else if (plain_ok(c->key, false)) fputs(c->key, f);
        else put_quoted(f, c->key);
        fputc(':', f);
        dump_after(f, c, indent);
    }
}

static void dump_seq(FILE *f, const mf_node *n, int indent) {
    for (const mf_node *c = n->first; c; c = c->next) {
        fprintf(f, "%*s-", indent, "");
        if (c->kind == MF_NODE_MAP && !is_inline(c)) fputc(' ', f), dump_map(f, c, indent + 2, true);
        else dump_after(f, c, indent);
    }
}

int mf_cfg_dump_yaml(const mf_node *root, FILE *f) {
    MF_ASSERT(root && f);
    if (is_inline(root)) put_inline(f, root), fputc('\n', f);
    else if (root->kind == MF_NODE_MAP) dump_map(f, root, 0, false);
    else dump_seq(f, root, 0);
    if (fflush(f) != 0 || ferror(f)) return mf_fail("cannot write YAML: %s", strerror(errno));
    return 0;
}

/* ---- overrides --------------------------------------------------------------------------------- */

static bool same_value(const mf_node *a, const mf_node *b) {
    if (a->kind != b->kind || a->n_children != b->n_children) return false;
    if (a->kind == MF_NODE_SCALAR) return strcmp(a->value, b->value) == 0;
    str_index bk = {0};
    bool same = true;
    if (a->kind == MF_NODE_MAP) sx_of_map(&bk, b);
    for (const mf_node *x = a->first, *y = b->first; x && same; x = x->next, y = y->next) {
        const mf_node *yy = a->kind == MF_NODE_MAP ? sx_get(&bk, x->key) : y;
        same = yy && same_value(x, yy);
    }
    sx_free(&bk);
    return same;
}

/* "a" + "b" -> "a.b" (either may be empty). */
static char *join2(const char *a, const char *b) {
    if (!a || !*a) return mf_xstrdup(b);
    return *b ? mf_xasprintf("%s.%s", a, b) : mf_xstrdup(a);
}

/* The first k segments of a key path, dotted. */
static char *join_segs(char **seg, int k) {
    char *r = mf_xstrdup(""), *t;
    for (int i = 0; i < k; i++, free(r), r = t) t = join2(r, seg[i]);
    return r;
}

static int suggest_missing(const char *text, const char *what, mf_node *parent, char **seg, int matched,
                           const char *path, const char *hint) {
    const char *cands[256];
    int nc = 0;
    for (mf_node *c = parent->first; c && nc < 256; c = c->next) cands[nc++] = c->key;
    const char *s = mf_suggest(seg[matched], cands, nc);
    char *base = join_segs(seg, matched), *full = s ? join2(base, s) : NULL;
    mf_fail("override '%s': no key %s%s%s%s%s%s", text, path, what, s ? "; did you mean " : "", s ? full : "",
            s ? "?" : "", hint);
    free(base);
    free(full);
    return -1;
}

static int apply_override(mf_node *root, const char *text, char *path, char **seg, int nseg, char op,
                          mf_node **valp, const char *origin, mf_known_key_fn known, void *user) {
    char w[1024];
    mf_node *cur = root, *val = *valp;
    int matched = 0;
    for (mf_node *c; matched < nseg && (c = mf_node_child(cur, seg[matched])); matched++) cur = c;
    if (matched < nseg && cur->kind == MF_NODE_NULL && op != '~') cur->kind = MF_NODE_MAP; /* `model:` + model.x */
    if (matched < nseg && cur->kind != MF_NODE_MAP) {
        char *p = join_segs(seg, matched);
        mf_fail("override '%s': %s is not a mapping (set at %s)", text, *p ? p : "the top level",
                mf_node_where(cur, w, sizeof w));
        free(p);
        return -1;
    }
    bool exists = matched == nseg;
    if (op == '~') {
        if (!exists) return suggest_missing(text, " to delete", cur, seg, matched, path, "");
        if (val && !same_value(cur, val))
            return mf_fail("override '%s': %s is not %s (set at %s)", text, path, strchr(text, '=') + 1,
                           mf_node_where(cur, w, sizeof w));
        mf_node_free(cur);
        return 0;
    }
    if (exists && op == '+')
        return mf_fail("override '%s': %s is already set at %s; use %s to change it", text, path,
                       mf_node_where(cur, w, sizeof w), text + 1);
    if (exists) return replace_contents(cur, val), *valp = NULL, 0;
    if (op == '=' && !(known && known(user, path))) {
        char *hint = mf_xasprintf(" (use +%s to add a new key)", text);
        suggest_missing(text, "", cur, seg, matched, path, hint);
        free(hint);
        return -1;
    }
    for (int j = matched; j < nseg - 1; j++) {
        mf_node *m = node_new(MF_NODE_MAP, origin, 0, 0);
        m->key = mf_xstrdup(seg[j]);
        node_append(cur, m);
        cur = m;
    }
    val->key = mf_xstrdup(seg[nseg - 1]);
    node_append(cur, val);
    *valp = NULL;
    return 0;
}

int mf_cfg_apply_override(mf_node *root, const char *text, mf_known_key_fn known, void *user) {
    MF_ASSERT(root && text);
    const char *s = text, *eq;
    char op = '=';
    if (*s == '+' || *s == '~') op = *s++;
    eq = strchr(s, '=');
    if (!eq && op != '~') return mf_fail("override '%s': expected key=value, +key=value, ~key or ~key=value", text);
    size_t plen = eq ? (size_t)(eq - s) : strlen(s);
    char *path = mf_xasprintf("%.*s", (int)plen, s), *segbuf = mf_xstrdup(path), *seg[MAX_SEGS];
    /* every node of the value carries the origin: a long override is shortened there (errors quote it whole) */
    size_t tl = strlen(text);
    char *origin = tl <= 200 ? mf_xasprintf("override '%s'", text) : mf_xasprintf("override '%.160s...'", text);
    mf_node *val = NULL;
    int nseg = 0, rc = -1;
    for (const unsigned char *u = (const unsigned char *)path; *u;) { /* valid UTF-8 only */
        int k = *u < 0x80 ? 1 : *u >= 0xC2 && *u <= 0xDF ? 2 : *u >= 0xE0 && *u <= 0xEF ? 3 : *u >= 0xF0 && *u <= 0xF4 ? 4 : 0;
        bool ok = k > 0;
        for (int j = 1; ok && j < k; j++) ok = (u[j] & 0xC0) == 0x80;
        if (ok && k == 3) ok = !(u[0] == 0xE0 && u[1] < 0xA0) && !(u[0] == 0xED && u[1] >= 0xA0); /* overlong, surrogate */
        if (ok && k == 4) ok = !(u[0] == 0xF0 && u[1] < 0x90) && !(u[0] == 0xF4 && u[1] >= 0x90);
        if (!ok) {
            mf_fail("override '%s': the key path is not valid UTF-8 (byte %zu)", text, (size_t)(u - (const unsigned char *)path));
            goto out;
        }
        u += k;
    }
    for (char *p = segbuf;; p++) { /* split on '.'; every segment must be non-empty */
        char *dot = strchr(p, '.');
        if (dot) *dot = '\0';
        if (!*p || nseg == MAX_SEGS || strpbrk(p, " \t[]")) {
            mf_fail("override '%s': bad key path '%s'", text, path);
            goto out;
        }
        seg[nseg++] = p;
        if (!dot) break;
        p = dot;
    }
    bool empty;
    if (eq && !eq[1]) val = node_new(MF_NODE_NULL, origin, 0, 0); /* `a.b=` sets null */
    else if (eq && !(val = parse_text(eq + 1, strlen(eq + 1), "<value>", &empty))) {
        mf_error_prefix("override '%s': cannot parse the value: ", text);
        goto out;
    }
    if (val) set_origin_tree(val, origin);
    rc = apply_override(root, text, path, seg, nseg, op, &val, origin, known, user);
out:
    if (val) free_tree(val);
    free(origin);
    free(segbuf);
    free(path);
    return rc;
}

/* ---- scalar conversion ------------------------------------------------------------------------- */

enum { CV_OK = 0, CV_BAD, CV_RANGE, CV_NONFINITE };

static int conv_int(const char *s, long long *out) {
    const char *q = s + (*s == '+' || *s == '-');
    int base = (q[0] == '0' && (q[1] == 'x' || q[1] == 'X')) ? 16 : 10;
    char *end;
    if (!*s || isspace((unsigned char)*s)) return CV_BAD;
    errno = 0;
    long long v = strtoll(s, &end, base);
    if (end == s || *end) return CV_BAD;
    if (errno == ERANGE) return CV_RANGE;
    *out = v;
    return CV_OK;
}

static bool eq_nocase(const char *a, const char *b) {
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) return false;
    return *a == *b;
}

static int conv_double(const char *s, double *out) {
    const char *q = s + (*s == '+' || *s == '-');
    char *end;
    if (!*s || isspace((unsigned char)*s)) return CV_BAD;
    q += *q == '.';
    if (eq_nocase(q, "inf") || eq_nocase(q, "infinity") || eq_nocase(q, "nan")) return CV_NONFINITE;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end) return CV_BAD;
    if (errno == ERANGE) return CV_RANGE;
    if (!isfinite(v)) return CV_NONFINITE;
    *out = v;
    return CV_OK;
}

static int conv_bool(const char *s, bool *out) {
    static const char *const t[] = {"true", "yes", "on"}, *const f[] = {"false", "no", "off"};
    for (int i = 0; i < 3; i++) {
        if (eq_nocase(s, t[i])) return *out = true, CV_OK;
        if (eq_nocase(s, f[i])) return *out = false, CV_OK;
    }
    return CV_BAD;
}

static const char *got_text(const mf_node *n, char *buf, size_t cap) {
    if (n->kind == MF_NODE_NULL) return "null";
    if (n->kind == MF_NODE_MAP) return "a mapping";
    if (n->kind == MF_NODE_SEQ) return "a list";
    const char *dots = strlen(n->value) > 60 ? "..." : "";
    snprintf(buf, cap, n->quoted ? "the quoted string \"%.60s%s\"" : "'%.60s%s'", n->value, dots);
    return buf;
}

/* "WHERE: NAME: expected EXP, got GOT NOTE"; name NULL = the node's path from its root. */
static int value_error(const mf_node *n, const char *name, const char *expected, const char *note) {
    char w[1024], g[128];
    char *path = name ? NULL : mf_node_path(n);
    const char *nm = name ? name : path;
    mf_fail("%s: %s%sexpected %s, got %s%s", mf_node_where(n, w, sizeof w), nm, *nm ? ": " : "", expected,
            got_text(n, g, sizeof g), note ? note : "");
    free(path);
    return -1;
}

static const char *cv_note(int r) {
    return r == CV_RANGE ? " (out of range)" : r == CV_NONFINITE ? " (infinity and NaN are not allowed)" : NULL;
}

int mf_node_as_int(const mf_node *n, long long *out) {
    MF_ASSERT(n && out);
    int r = n->kind == MF_NODE_SCALAR && !n->quoted ? conv_int(n->value, out) : CV_BAD;
    return r ? value_error(n, NULL, "an integer", cv_note(r)) : 0;
}

int mf_node_as_double(const mf_node *n, double *out) {
    MF_ASSERT(n && out);
    int r = n->kind == MF_NODE_SCALAR && !n->quoted ? conv_double(n->value, out) : CV_BAD;
    return r ? value_error(n, NULL, "a number", cv_note(r)) : 0;
}

int mf_node_as_bool(const mf_node *n, bool *out) {
    MF_ASSERT(n && out);
    int r = n->kind == MF_NODE_SCALAR && !n->quoted ? conv_bool(n->value, out) : CV_BAD;
    return r ? value_error(n, NULL, "true or false (or yes/no, on/off)", NULL) : 0;
}

/* A null node gives *out = NULL (success); maps and lists are errors. */
int mf_node_as_string(const mf_node *n, const char **out) {
    MF_ASSERT(n && out);
    if (n->kind == MF_NODE_NULL) return *out = NULL, 0;
    if (n->kind != MF_NODE_SCALAR) return value_error(n, NULL, "a string", NULL);
    *out = n->value;
    return 0;
}

/* ---- schemas ----------------------------------------------------------------------------------- */

static size_t edit_distance(const char *a, const char *b) { /* optimal string alignment distance */
    size_t la = strlen(a), lb = strlen(b);
    size_t *d = mf_xmalloc(3 * (lb + 1) * sizeof *d), *pp = d, *pr = d + lb + 1, *cu = d + 2 * (lb + 1);
    for (size_t j = 0; j <= lb; j++) pr[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cu[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] != b[j - 1], v = pr[j - 1] + cost;
            if (pr[j] + 1 < v) v = pr[j] + 1;
            if (cu[j - 1] + 1 < v) v = cu[j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && pp[j - 2] + 1 < v) v = pp[j - 2] + 1;
            cu[j] = v;
        }
        size_t *t = pp; /* rotate the three rows */
        pp = pr, pr = cu, cu = t;
    }
    size_t r = pr[lb];
    free(d);
    return r;
}

/* Nearest candidate with distance <= max(2, len/3); a candidate that shares nothing with the word
 * (distance == the longer length) is never suggested. Ties go to the earlier candidate. */
const char *mf_suggest(const char *word, const char *const *candidates, int n) {
    if (!word || !candidates) return NULL;
    size_t lw = strlen(word), lim = lw / 3 > 2 ? lw / 3 : 2, best_d = (size_t)-1;
    const char *best = NULL;
    for (int i = 0; i < n; i++) {
        if (!candidates[i]) continue;
        size_t lc = strlen(candidates[i]);
        if ((lc > lw ? lc - lw : lw - lc) > lim) continue; /* the distance is at least the length difference */
        size_t d = edit_distance(word, candidates[i]);
        if (d <= lim && d < (lw > lc ? lw : lc) && d < best_d) best_d = d, best = candidates[i];
    }
    return best;
}

static const char *fmt_num(double v, char *buf, size_t cap) { /* 1e9 -> "1e9", 0.5 -> "0.5" */
    snprintf(buf, cap, "%g", v);
    if (strtod(buf, NULL) != v) snprintf(buf, cap, "%.17g", v);
    char *e = strchr(buf, 'e');
    if (e) {
        char *p = e + 1, *q = e + 1;
        if (*p == '+') p++;
        else if (*p == '-') *q++ = *p++;
        while (*p == '0' && p[1]) p++;
        memmove(q, p, strlen(p) + 1);
    }
    return buf;
}

static void expected_text(const mf_key *k, char *buf, size_t cap) {
    char lo[40], hi[40], range[100] = "";
    if (k->has_range)
        snprintf(range, sizeof range, " in [%s, %s]", fmt_num(k->min, lo, sizeof lo), fmt_num(k->max, hi, sizeof hi));
    switch (k->type) {
    case MF_T_INT: snprintf(buf, cap, "an integer%s", range); break;
    case MF_T_FLOAT: snprintf(buf, cap, "a number%s", range); break;
    case MF_T_BOOL: snprintf(buf, cap, "true or false"); break;
    case MF_T_STRING: snprintf(buf, cap, "a string"); break;
    case MF_T_ENUM: snprintf(buf, cap, "one of %s", k->choices); break;
    case MF_T_INT_LIST: snprintf(buf, cap, "a list of integers%s", range); break;
    case MF_T_FLOAT_LIST: snprintf(buf, cap, "a list of numbers%s", range); break;
    case MF_T_STRING_LIST: snprintf(buf, cap, "a list of strings"); break;
    case MF_T_MAP: snprintf(buf, cap, "a mapping"); break;
    }
}

static int check_enum(const mf_node *n, const mf_key *k, const char *name, const char *exp) {
    char *buf = mf_xstrdup(k->choices), *cands[64];
    int nc = 0, rc = -1;
    for (char *p = buf; p && nc < 64;) {
        char *bar = strchr(p, '|');
        if (bar) *bar = '\0';
        cands[nc++] = p;
        p = bar ? bar + 1 : NULL;
    }
    for (int i = 0; i < nc; i++)
        if (!strcmp(cands[i], n->value)) rc = 0;
    if (rc) {
        const char *s = mf_suggest(n->value, (const char *const *)cands, nc);
        char *note = s ? mf_xasprintf(" (did you mean %s?)", s) : NULL;
        value_error(n, name, exp, note);
        free(note);
    }
    free(buf);
    return rc;
}

/* Check one scalar (a value, or a list element) against k's element type and range. */
static int check_elem(const mf_node *n, const mf_key *k, const char *name, const char *exp) {
    double x = 0;
    long long v;
    bool b;
    int r = CV_OK;
    if (n->kind != MF_NODE_SCALAR) return value_error(n, name, exp, NULL);
    switch (k->type) {
    case MF_T_INT:
    case MF_T_INT_LIST:
        r = n->quoted ? CV_BAD : conv_int(n->value, &v);
        x = r ? 0 : (double)v;
        break;
    case MF_T_FLOAT:
    case MF_T_FLOAT_LIST: r = n->quoted ? CV_BAD : conv_double(n->value, &x); break;
    case MF_T_BOOL: r = n->quoted ? CV_BAD : conv_bool(n->value, &b); break;
    case MF_T_ENUM: return check_enum(n, k, name, exp);
    default: return 0; /* strings */
    }
    if (r) return value_error(n, name, exp, cv_note(r));
    if (k->has_range && (x < k->min || x > k->max)) return value_error(n, name, exp, " (out of range)");
    return 0;
}

static int check_value(mf_node *n, const mf_key *k, const char *full) {
    char exp[256];
    expected_text(k, exp, sizeof exp);
    if (n->kind == MF_NODE_NULL) {
        if (k->type == MF_T_STRING || (k->def && !strcmp(k->def, "~"))) return 0;
        if (k->type == MF_T_MAP) return n->kind = MF_NODE_MAP, 0; /* `extra:` with nothing = {} */
        return value_error(n, full, exp, NULL);
    }
    if (k->type == MF_T_MAP) return n->kind == MF_NODE_MAP ? 0 : value_error(n, full, exp, NULL);
    if (k->type != MF_T_INT_LIST && k->type != MF_T_FLOAT_LIST && k->type != MF_T_STRING_LIST)
        return check_elem(n, k, full, exp);
    if (n->kind != MF_NODE_SEQ) return value_error(n, full, exp, NULL);
    int i = 0;
    for (const mf_node *c = n->first; c; c = c->next, i++) {
        char *nm = mf_xasprintf("%s[%d]", full, i);
        int r = check_elem(c, k, nm, exp);
        free(nm);
        if (r) return -1;
    }
    return 0;
}

/* A schema's key paths, hashed: `exact` maps each path to its key, `below` holds every proper prefix
 * of a dotted path ("optimizer" for "optimizer.lr"), so checking a section is linear in its size
 * whatever the size of the schema (the top level's schema has one key per section). */
typedef struct {
    const mf_key *keys;
    str_index exact, below;
    char **owned; /* the prefix strings of `below` */
    size_t n_owned;
} schema_ix;

static void schema_ix_init(schema_ix *sx, const mf_key *keys) {
    memset(sx, 0, sizeof *sx);
    sx->keys = keys;
    for (const mf_key *k = keys; k->path; k++) {
        if (!sx_get(&sx->exact, k->path)) sx_put(&sx->exact, k->path, (void *)k); /* the first one wins */
        for (const char *d = strchr(k->path, '.'); d; d = strchr(d + 1, '.')) {
            char *pre = mf_xasprintf("%.*s", (int)(d - k->path), k->path);
            if (sx_get(&sx->below, pre)) {
                free(pre);
                continue;
            }
            sx->owned = mf_xrealloc(sx->owned, (sx->n_owned + 1) * sizeof *sx->owned);
            sx->owned[sx->n_owned++] = pre;
            sx_put(&sx->below, pre, (void *)1);
        }
    }
}

static void schema_ix_free(schema_ix *sx) {
    sx_free(&sx->exact);
    sx_free(&sx->below);
    for (size_t i = 0; i < sx->n_owned; i++) free(sx->owned[i]);
    free(sx->owned);
}

static const mf_key *schema_exact(schema_ix *sx, const char *rel) { return sx_get(&sx->exact, rel); }

static bool schema_below(schema_ix *sx, const char *rel) { return sx_get(&sx->below, rel) != NULL; } /* some key "rel.<name>" is in the schema */

static int unknown_key(const mf_node *c, const char *rel, const char *r, const char *prefix, const mf_key *keys) {
    char w[1024], **cands = NULL;
    int nc = 0, cap = 0;
    size_t l = strlen(rel);
    str_index seen = {0};
    for (const mf_key *k = keys; k->path; k++) { /* distinct key names at this level */
        if (l && (strncmp(k->path, rel, l) || k->path[l] != '.')) continue;
        const char *seg = k->path + (l ? l + 1 : 0);
        char *name = mf_xasprintf("%.*s", (int)strcspn(seg, "."), seg);
        if (sx_get(&seen, name)) {
            free(name);
            continue;
        }
        if (nc == cap) cands = mf_xrealloc(cands, sizeof *cands * (size_t)(cap = cap ? 2 * cap : 64));
        cands[nc++] = name;
        sx_put(&seen, name, name);
    }
    sx_free(&seen);
    const char *s = mf_suggest(c->key, (const char *const *)cands, nc);
    char *full = join2(prefix, r), *srel = s ? join2(rel, s) : NULL, *sfull = s ? join2(prefix, srel) : NULL;
    if (s) mf_fail("%s: %s: unknown key; did you mean %s?", mf_node_where(c, w, sizeof w), full, sfull);
    else mf_fail("%s: %s: unknown key", mf_node_where(c, w, sizeof w), full);
    free(full);
    free(srel);
    free(sfull);
    for (int i = 0; i < nc; i++) free(cands[i]);
    free(cands);
    return -1;
}

/* Refuse keys that the schema does not know; intermediate maps of dotted schema keys are descended. */
static int check_unknown(mf_node *map, const char *rel, const char *prefix, schema_ix *keys) {
    char w[1024];
    for (mf_node *c = map->first; c; c = c->next) {
        char *r = join2(rel, c->key), *full = NULL, g[128];
        int rc = 0;
        bool plain = !strchr(c->key, '.') && *c->key; /* "a.b" written as one key is never known */
        if (plain && schema_below(keys, r) && c->kind == MF_NODE_NULL) c->kind = MF_NODE_MAP;
        if (!plain || (!schema_exact(keys, r) && !schema_below(keys, r)))
            rc = unknown_key(c, rel, r, prefix, keys->keys);
        else if (!schema_exact(keys, r) && c->kind != MF_NODE_MAP)
            rc = mf_fail("%s: %s: expected a mapping, got %s", mf_node_where(c, w, sizeof w), full = join2(prefix, r),
                         got_text(c, g, sizeof g));
        else if (!schema_exact(keys, r)) rc = check_unknown(c, r, prefix, keys);
        free(r);
        free(full);
        if (rc) return -1;
    }
    return 0;
}

static int fill_default(mf_node *section, const mf_key *k, const char *full) {
    bool empty;
    mf_node *v = parse_text(k->def, strlen(k->def), "<default>", &empty), *cur = section;
    if (!v && !empty) return mf_error_prefix("schema default of %s is invalid: ", full);
    if (!v) v = node_new(MF_NODE_NULL, "<default>", 0, 0);
    set_origin_tree(v, "<default>");
    const char *p = k->path, *dot;
    while ((dot = strchr(p, '.'))) { /* intermediate maps: absent, or maps (check_unknown made sure) */
        mf_node *c = child_n(cur, p, (size_t)(dot - p));
        if (!c) {
            c = node_new(MF_NODE_MAP, "<default>", 0, 0);
            c->key = mf_xasprintf("%.*s", (int)(dot - p), p);
            node_append(cur, c);
        }
        MF_ASSERT(c->kind == MF_NODE_MAP);
        cur = c, p = dot + 1;
    }
    v->key = mf_xstrdup(p);
    node_append(cur, v);
    return check_value(v, k, full) ? mf_error_prefix("schema default of %s is invalid: ", full) : 0;
}

int mf_cfg_validate(mf_node *section, const char *prefix, const mf_key *keys) {
    MF_ASSERT(section && keys);
    if (!prefix) prefix = "";
    for (const mf_key *k = keys; k->path; k++)
        MF_ASSERT(*k->path && k->type >= MF_T_INT && k->type <= MF_T_MAP && (k->type != MF_T_ENUM || k->choices));
    if (section->kind == MF_NODE_NULL) section->kind = MF_NODE_MAP;
    if (section->kind != MF_NODE_MAP) return value_error(section, prefix, "a mapping", NULL);
    schema_ix sx;
    schema_ix_init(&sx, keys);
    int bad = check_unknown(section, "", prefix, &sx);
    schema_ix_free(&sx);
    if (bad) return -1;
    str_index top; /* the section's own keys, so that finding each schema key is not a list walk */
    sx_of_map(&top, section);
    for (const mf_key *k = keys; k->path; k++) {
        char *full = join2(prefix, k->path), *seg = mf_xasprintf("%.*s", (int)strcspn(k->path, "."), k->path);
        const char *rest = k->path + strlen(seg);
        mf_node *n = sx_get(&top, seg), *last = section->last;
        if (n && *rest) n = mf_cfg_find(n, rest + 1);
        free(seg);
        int rc;
        if (n) rc = check_value(n, k, full);
        else if (k->def) rc = fill_default(section, k, full);
        else {
            bool h = k->help && *k->help;
            rc = mf_fail("%s: %s: required key missing%s%s%s", section->origin ? section->origin : "<config>", full,
                         h ? " (" : "", h ? k->help : "", h ? ")" : "");
        }
        free(full);
        if (section->last != last) sx_put(&top, section->last->key, section->last); /* a default was added */
        if (rc) {
            sx_free(&top);
            return -1;
        }
    }
    sx_free(&top);
    return 0;
}

/* ---- typed getters on validated sections ------------------------------------------------------- */

static const mf_node *get_node(const mf_node *section, const char *path) {
    MF_ASSERT(section && path);
    const mf_node *n = mf_cfg_find(section, path);
    MF_ASSERT(n != NULL);
    return n;
}

long long mf_cfg_int(const mf_node *section, const char *path) {
    long long v = 0;
    MF_ASSERT(mf_node_as_int(get_node(section, path), &v) == 0);
    return v;
}

double mf_cfg_float(const mf_node *section, const char *path) {
    double v = 0;
    MF_ASSERT(mf_node_as_double(get_node(section, path), &v) == 0);
    return v;
}

bool mf_cfg_bool(const mf_node *section, const char *path) {
    bool v = false;
    MF_ASSERT(mf_node_as_bool(get_node(section, path), &v) == 0);
    return v;
}

const char *mf_cfg_str(const mf_node *section, const char *path) {
    const char *s = NULL;
    MF_ASSERT(mf_node_as_string(get_node(section, path), &s) == 0);
    return s;
}

/* Number lists; a null list (schema default "~") counts as empty. */
static int get_list(const mf_node *section, const char *path, long long *iout, double *dout, int cap) {
    const mf_node *n = get_node(section, path);
    int i = 0;
    MF_ASSERT(n->kind == MF_NODE_SEQ || n->kind == MF_NODE_NULL);
    for (const mf_node *c = n->first; c; c = c->next, i++) {
        long long v = 0;
        double d = 0;
        MF_ASSERT(iout ? mf_node_as_int(c, &v) == 0 : mf_node_as_double(c, &d) == 0);
        if (i < cap && iout) iout[i] = v;
        if (i < cap && dout) dout[i] = d;
    }
    return i;
}

int mf_cfg_ints(const mf_node *section, const char *path, long long *out, int cap) {
    return get_list(section, path, out, NULL, cap);
}

int mf_cfg_floats(const mf_node *section, const char *path, double *out, int cap) {
    return get_list(section, path, NULL, out, cap);
}
