/* mf_experiment.c - from an experiment file and command-line overrides to a validated experiment:
 * compose the YAML, apply overrides, resolve `stages:` to plugins, validate every section against the
 * schemas the plugins declare (defaults filled in one place: the schema). Nothing is written here. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mf_json.h"
#include "mf_log.h"
#include "mf_hooks.h"
#include "mf_runner.h"

/* Stage instances of one experiment (each loads a plugin; checks over them are pairwise). */
#define MF_MAX_STAGES 256

/* Keys of the experiment's top level that belong to the runner itself. */
static const mf_key k_runner_keys[] = {
    MF_STR("name", "~", "experiment name: results go to <results_dir>/<name>/ (default: file name)"),
    MF_INT("seed", "0", 0, 9007199254740991.0, "seed of every random stream (data order, init, noise)"),
    MF_ENUM("engine", "auto", "auto|cpu|cuda", "tensor engine: auto (cuda when usable, else cpu), cpu, cuda"),
    MF_ENUM("precision", "fp32", "fp32|tf32|bf16|auto",
            "matrix precision: fp32; tf32 (GPU tensor cores); bf16 products, fp32 master weights and reductions; "
            "auto: bf16 on a CPU with AVX512-BF16 or AMX, tf32 on a GPU, else fp32"),
    MF_INT("threads", "0", 0, 4096, "CPU worker threads; 0 = all cores"),
    MF_STR("results_dir", "results", "root folder of results"),
    MF_STR("description", "", "free text, copied to the manifest"),
    MF_STRS("stages", NULL, "stage instances in order; each names a section (and a plugin kind)"),
    MF_STRS("hooks", "[]", "Lua hook scripts (docs/hooks.md); paths relative to the file that lists them"),
    MF_KEY_END,
};

/* Append keys to a growing array (skipping paths already present). */
static void keys_append(mf_key **arr, int *n, const mf_key *add) {
    for (int i = 0; add && add[i].path; i++) {
        int dup = 0;
        for (int j = 0; j < *n; j++)
            if (strcmp((*arr)[j].path, add[i].path) == 0) dup = 1;
        if (dup) continue;
        *arr = mf_xrealloc(*arr, sizeof **arr * (size_t)(*n + 2));
        (*arr)[(*n)++] = add[i];
        (*arr)[*n] = (mf_key)MF_KEY_END;
    }
}

/* Schema of one top-level section, built from the runner and the loaded plugins. */
typedef struct section_schema {
    const char *name;
    mf_key *keys;   /* MF_KEY_END-terminated, owned */
    int n;
} section_schema;

typedef struct schema_set {
    section_schema *s;
    int n;
} schema_set;

static section_schema *schema_get(schema_set *set, const char *name) {
    for (int i = 0; i < set->n; i++)
        if (strcmp(set->s[i].name, name) == 0) return &set->s[i];
    set->s = mf_xrealloc(set->s, sizeof *set->s * (size_t)(set->n + 1));
    section_schema *s = &set->s[set->n++];
    s->name = name;
    s->keys = mf_xcalloc(1, sizeof *s->keys);
    s->n = 0;
    return s;
}

static void schema_set_free(schema_set *set) {
    for (int i = 0; i < set->n; i++) free(set->s[i].keys);
    free(set->s);
}

/* Is `path` (dotted, relative to a section) a key of the schema, or a map above keys of it? */
static bool path_in_keys(const mf_key *keys, const char *path) {
    size_t n = strlen(path);
    for (int i = 0; keys[i].path; i++) {
        if (strcmp(keys[i].path, path) == 0) return true;
        if (strncmp(keys[i].path, path, n) == 0 && keys[i].path[n] == '.') return true;
        size_t kl = strlen(keys[i].path);
        if (keys[i].type == MF_T_MAP && strncmp(path, keys[i].path, kl) == 0 && path[kl] == '.')
            return true;
    }
    return false;
}

typedef struct known_ctx {
    schema_set *set;
} known_ctx;

static bool known_key(void *user, const char *dotted) {
    known_ctx *kc = user;
    if (path_in_keys(k_runner_keys, dotted)) return true;
    const char *dot = strchr(dotted, '.');
    if (!dot) {
        for (int i = 0; i < kc->set->n; i++)
            if (strcmp(kc->set->s[i].name, dotted) == 0) return true;
        return false;
    }
    for (int i = 0; i < kc->set->n; i++) {
        size_t l = strlen(kc->set->s[i].name);
        if ((size_t)(dot - dotted) == l && strncmp(kc->set->s[i].name, dotted, l) == 0)
            return path_in_keys(kc->set->s[i].keys, dot + 1);
    }
    return false;
}

/* Is `name` a section that some installed stage plugin reads (e.g. `model`, read by train)? Only
 * asked for top-level keys that would otherwise be unknown, so loading every plugin is acceptable. */
static bool shared_section_of_any_plugin(const char *name) {
    char **paths;
    int n = mf_plugin_files(&paths);
    bool found = false;
    for (int i = 0; i < n && !found; i++) {
        mf_plugin p;
        if (mf_plugin_open(paths[i], &p) != 0) continue;
        for (const mf_section_schema *sh = p.api->shared; sh && sh->name; sh++)
            if (strcmp(sh->name, name) == 0) found = true;
        mf_plugin_close(&p);
    }
    mf_plugin_dirs_free(paths, n);
    mf_error_clear();
    return found;
}

static bool override_targets_stages(const char *o) {
    while (*o == '+' || *o == '~') o++;
    return strncmp(o, "stages", 6) == 0 && (o[6] == '=' || o[6] == '\0' || o[6] == '.');
}

static int stage_list(mf_experiment *ex, const char *path) {
    mf_node *st = mf_node_child(ex->root, "stages");
    if (!st) return mf_fail("%s: required key 'stages' missing (a list such as [data, train, ema, sample, eval])", path);
    char where[512];
    if (st->kind != MF_NODE_SEQ || st->n_children == 0)
        return mf_fail("%s: stages: expected a non-empty list of stage names", mf_node_where(st, where, sizeof where));
    if (st->n_children > MF_MAX_STAGES)
        return mf_fail("%s: stages: %d entries; at most %d stage instances are supported",
                       mf_node_where(st, where, sizeof where), st->n_children, MF_MAX_STAGES);
    ex->n_stages = 0;
    ex->stages = mf_xcalloc((size_t)st->n_children, sizeof *ex->stages);
    for (mf_node *it = st->first; it; it = it->next) {
        const char *name;
        if (it->kind != MF_NODE_SCALAR || mf_node_as_string(it, &name) != 0)
            return mf_fail("%s: stages: each entry must be a stage name", mf_node_where(it, where, sizeof where));
        for (const char *c = name; *c; c++)
            if (!(*c == '_' || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9')))
                return mf_fail("%s: stages: '%s': stage names use lowercase letters, digits and '_'",
                               mf_node_where(it, where, sizeof where), name);
        if (path_in_keys(k_runner_keys, name))
            return mf_fail("%s: stages: '%s' is a reserved top-level key", mf_node_where(it, where, sizeof where), name);
        for (int j = 0; j < ex->n_stages; j++)
            if (strcmp(ex->stages[j].instance, name) == 0)
                return mf_fail("%s: stages: '%s' is listed twice; give the second one its own name and "
                               "a section with 'kind: %s'",
                               mf_node_where(it, where, sizeof where), name, name);
        mf_stage_inst *si = &ex->stages[ex->n_stages++];
        si->instance = mf_xstrdup(name);
        /* kind: the section's `kind:` key, else the instance name */
        mf_node *sec = mf_node_child(ex->root, name);
        mf_node *kn = sec && sec->kind == MF_NODE_MAP ? mf_node_child(sec, "kind") : NULL;
        const char *kind = name;
        if (kn && (kn->kind != MF_NODE_SCALAR || mf_node_as_string(kn, &kind) != 0))
            return mf_fail("%s: %s.kind: expected a stage kind (plugin name)", mf_node_where(kn, where, sizeof where), name);
        si->kind = mf_xstrdup(kind);
        if (mf_plugin_load(si->kind, &si->plugin) != 0) {
            if (strncmp(mf_last_error(), "no plugin", 9) == 0)
                return mf_error_prefix("%s: stages: '%s': ", mf_node_where(kn ? kn : it, where, sizeof where), name);
            return mf_error_prefix("stage '%s': ", name);
        }
    }
    return 0;
}

/* The `hooks:` list: each path relative to the folder of the file that lists it (the working
 * directory for a command-line override), resolved with realpath and written back into the tree. */
static int load_hooks(mf_experiment *ex) {
    mf_node *list = mf_node_child(ex->root, "hooks");
    if (!list || list->kind != MF_NODE_SEQ || list->n_children == 0) return 0;
    char **paths = mf_xcalloc((size_t)list->n_children, sizeof *paths);
    int n = 0, rc = 0;
    for (mf_node *c = list->first; c; c = c->next) {
        char where[512];
        mf_node_where(c, where, sizeof where);
        const char *v = c->value ? c->value : "";
        char *rel = NULL;
        bool from_file = c->origin && strncmp(c->origin, "override", 8) != 0 && c->origin[0] != '<';
        if (v[0] != '/' && from_file) {
            const char *sl = strrchr(c->origin, '/');
            rel = sl ? mf_xasprintf("%.*s/%s", (int)(sl - c->origin), c->origin, v) : mf_xstrdup(v);
        } else rel = mf_xstrdup(v);
        char *abs = *v ? realpath(rel, NULL) : NULL;
        if (!abs) {
            rc = mf_fail("%s: hooks: no such script '%s'%s", where, v,
                         from_file ? " (paths are relative to the file that lists them)" : "");
            free(rel);
            break;
        }
        free(rel);
        free(c->value);
        c->value = abs;
        c->quoted = true;
        paths[n++] = abs;
    }
    if (rc == 0) rc = mf_hooks_load(NULL, paths, n, (uint64_t)ex->seed, &ex->hooks);
    free(paths);
    return rc;
}

int mf_experiment_load(mf_experiment *ex, const char *path, char *const *overrides, int n_overrides) {
    memset(ex, 0, sizeof *ex);
    ex->path = mf_xstrdup(path);
    ex->overrides = mf_xcalloc((size_t)n_overrides + 1, sizeof *ex->overrides);
    for (int i = 0; i < n_overrides; i++) ex->overrides[i] = mf_xstrdup(overrides[i]);
    ex->n_overrides = n_overrides;

    ex->root = mf_cfg_load_file(path);
    if (!ex->root) return -1;

    schema_set set = {0};
    known_ctx kc = {&set};
    int rc = -1;
    /* 1. overrides of the stage list come first: they decide which plugins (and schemas) exist */
    for (int i = 0; i < n_overrides; i++)
        if (override_targets_stages(overrides[i]) &&
            mf_cfg_apply_override(ex->root, overrides[i], known_key, &kc) != 0)
            goto out;
    /* 2. load the plugins of every stage */
    if (stage_list(ex, path) != 0) goto out;
    /* 3. gather the schemas: runner keys, each stage's own section (+ `kind`), shared sections */
    for (int i = 0; i < ex->n_stages; i++) {
        mf_stage_inst *si = &ex->stages[i];
        section_schema *s = schema_get(&set, si->instance);
        mf_key kind_key = MF_STR("kind", NULL, "plugin kind of this stage (default: the stage's name)");
        kind_key.def = si->kind;
        mf_key one[2] = {kind_key, MF_KEY_END};
        keys_append(&s->keys, &s->n, one);
        keys_append(&s->keys, &s->n, si->plugin.api->keys);
        for (const mf_section_schema *sh = si->plugin.api->shared; sh && sh->name; sh++) {
            for (int j = 0; j < ex->n_stages; j++)
                if (strcmp(ex->stages[j].instance, sh->name) == 0) {
                    mf_fail("%s: stage '%s' has the name of section '%s' that stage '%s' reads; rename it",
                            path, ex->stages[j].instance, sh->name, si->instance);
                    goto out;
                }
            section_schema *ss = schema_get(&set, sh->name);
            keys_append(&ss->keys, &ss->n, sh->keys);
        }
    }
    /* 4. the remaining overrides, now that every valid key is known */
    for (int i = 0; i < n_overrides; i++)
        if (!override_targets_stages(overrides[i]) &&
            mf_cfg_apply_override(ex->root, overrides[i], known_key, &kc) != 0)
            goto out;
    /* 5. validate the top level: runner keys + one free-form map per section, then each section */
    {
        mf_key *top = NULL;
        int nt = 0;
        keys_append(&top, &nt, k_runner_keys);
        for (int i = 0; i < set.n; i++) {
            mf_key m = MF_MAP(set.s[i].name, "stage section");
            mf_key one[2] = {m, MF_KEY_END};
            keys_append(&top, &nt, one);
        }
        /* A section of a stage that is not in `stages:` (e.g. dropped by an override) is kept but
         * not validated: it is recognised by a `kind:` key, a plugin of its name, or as a section
         * that an installed plugin reads (`model`). Checked against the known keys as they were
         * before this loop (the root's keys are distinct, so the sections added here cannot match a
         * later one): linear in the number of top-level keys. The first key that is neither known
         * nor such a section is the error mf_cfg_validate reports, so nothing after it is probed. */
        int nt0 = nt;
        mf_key *top0 = mf_xmalloc(sizeof *top0 * (size_t)(nt0 + 1));
        memcpy(top0, top, sizeof *top0 * (size_t)(nt0 + 1));
        int cap = nt + 1, n_inactive = 0;
        for (mf_node *c = ex->root->first; c; c = c->next) {
            if (path_in_keys(top0, c->key)) continue;
            if (c->kind != MF_NODE_MAP) break; /* an unknown key: reported below */
            mf_plugin probe;
            bool stage_section = mf_node_child(c, "kind") != NULL;
            if (!stage_section && mf_plugin_load(c->key, &probe) == 0) {
                stage_section = true;
                mf_plugin_close(&probe);
            }
            if (!stage_section) stage_section = shared_section_of_any_plugin(c->key);
            if (!stage_section) break; /* an unknown key: reported below */
            if (++n_inactive <= 5) mf_info("note: section '%s' is not used ('%s' is not in stages)", c->key, c->key);
            if (nt + 2 > cap) top = mf_xrealloc(top, sizeof *top * (size_t)(cap = 2 * (nt + 2)));
            top[nt++] = (mf_key)MF_MAP(c->key, "inactive stage section");
            top[nt] = (mf_key)MF_KEY_END;
        }
        free(top0);
        if (n_inactive > 5) mf_info("note: ... and %d more unused sections", n_inactive - 5);
        mf_error_clear();
        rc = mf_cfg_validate(ex->root, "", top);
        free(top);
        if (rc != 0) goto out;
        rc = -1;
        for (int i = 0; i < set.n; i++) {
            mf_node *sec = mf_node_child(ex->root, set.s[i].name);
            char where[512];
            if (!sec || sec->kind != MF_NODE_MAP) {
                mf_fail("%s: %s: expected a mapping of keys", sec ? mf_node_where(sec, where, sizeof where) : path,
                        set.s[i].name);
                goto out;
            }
            if (mf_cfg_validate(sec, set.s[i].name, set.s[i].keys) != 0) goto out;
        }
    }
    for (int i = 0; i < ex->n_stages; i++) ex->stages[i].section = mf_node_child(ex->root, ex->stages[i].instance);

    /* 6. runner values */
    {
        const char *name = mf_cfg_str(ex->root, "name");
        if (!name || !*name) {
            /* default name: the experiment file's base name without its extension */
            mf_node *nn = mf_node_child(ex->root, "name");
            const char *b = strrchr(path, '/');
            char *nm = mf_xstrdup(b ? b + 1 : path);
            char *dot = strrchr(nm, '.');
            if (dot && dot != nm) *dot = '\0';
            nn->kind = MF_NODE_SCALAR;
            nn->quoted = true;
            free(nn->value);
            nn->value = nm;
            name = nm;
        }
        for (const char *c = name; *c; c++)
            if (*c == '/' || (c == name && *c == '.')) {
                char where[512];
                mf_fail("%s: name: '%s' cannot contain '/' or start with '.'",
                        mf_node_where(mf_node_child(ex->root, "name"), where, sizeof where), name);
                goto out;
            }
        ex->name = name;
        ex->seed = mf_cfg_int(ex->root, "seed");
        long long th = mf_cfg_int(ex->root, "threads");
        if (th == 0) {
            long nc = sysconf(_SC_NPROCESSORS_ONLN);
            th = nc > 0 ? nc : 1;
        }
        ex->threads = (int)th;
        ex->results_dir = mf_cfg_str(ex->root, "results_dir");
        if (!ex->results_dir || !*ex->results_dir) ex->results_dir = "results";
        ex->engine = mf_cfg_str(ex->root, "engine");       /* resolved when the backend opens */
        ex->precision = mf_cfg_str(ex->root, "precision");
    }
    /* 7. hook scripts: paths made absolute (config.yaml records them so), loaded and checked now */
    if (load_hooks(ex) != 0) goto out;
    rc = 0;
out:
    schema_set_free(&set);
    return rc;
}

void mf_experiment_print_keys(const mf_experiment *ex, FILE *f) {
    static const char *tn[] = {"", "int", "float", "bool", "string", "enum", "int list", "float list",
                               "string list", "map"};
    fprintf(f, "# top level\n");
    for (int i = 0; k_runner_keys[i].path; i++)
        fprintf(f, "  %-24s %-11s default %-10s %s\n", k_runner_keys[i].path, tn[k_runner_keys[i].type],
                k_runner_keys[i].def ? k_runner_keys[i].def : "(required)", k_runner_keys[i].help);
    for (int s = 0; s < ex->n_stages; s++) {
        const mf_stage_api *api = ex->stages[s].plugin.api;
        fprintf(f, "# %s (stage kind %s: %s)\n", ex->stages[s].instance, api->kind, api->summary ? api->summary : "");
        for (int i = 0; api->keys[i].path; i++) {
            const mf_key *k = &api->keys[i];
            char full[256];
            snprintf(full, sizeof full, "%s.%s", ex->stages[s].instance, k->path);
            fprintf(f, "  %-24s %-11s default %-10s %s%s%s\n", full, tn[k->type], k->def ? k->def : "(required)", k->help ? k->help : "",
                    k->choices ? " one of " : "", k->choices ? k->choices : "");
        }
        for (const mf_section_schema *sh = api->shared; sh && sh->name; sh++)
            for (int i = 0; sh->keys[i].path; i++)
                fprintf(f, "  %s.%-*s %-11s default %-10s %s\n", sh->name, (int)(23 - strlen(sh->name)), sh->keys[i].path, tn[sh->keys[i].type],
                        sh->keys[i].def ? sh->keys[i].def : "(required)", sh->keys[i].help ? sh->keys[i].help : "");
    }
}

void mf_experiment_free(mf_experiment *ex) {
    for (int i = 0; i < ex->n_stages; i++) {
        mf_stage_inst *si = &ex->stages[i];
        if (si->created && si->plugin.api && si->plugin.api->destroy) si->plugin.api->destroy(si->state);
        mf_plugin_close(&si->plugin);
        free(si->instance);
        free(si->kind);
    }
    free(ex->stages);
    mf_hooks_free(ex->hooks);
    for (int i = 0; i < ex->n_overrides; i++) free(ex->overrides[i]);
    free(ex->overrides);
    if (ex->root) mf_node_free(ex->root);
    free(ex->path);
    memset(ex, 0, sizeof *ex);
}
