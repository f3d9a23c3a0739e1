/* mf_plugin.c - finding and loading stage plugins: stage_<kind>.so in the build's plugin folder, then
 * MFPIPE_PLUGIN_PATH; loaded through core/mf_module.c (one entry symbol, ABI version check). */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mf_json.h"
#include "mf_module.h"
#include "mf_runner.h"

int mf_plugin_dirs(char ***dirs_out) { return mf_module_dirs("plugins", "MFPIPE_PLUGIN_PATH", dirs_out); }

void mf_plugin_dirs_free(char **dirs, int n) { mf_module_dirs_free(dirs, n); }

static int is_stage_file(const struct dirent *d) {
    size_t n = strlen(d->d_name);
    return strncmp(d->d_name, "stage_", 6) == 0 && n > 9 && strcmp(d->d_name + n - 3, ".so") == 0;
}

int mf_plugin_files(char ***paths_out) {
    char **dirs, **paths = NULL;
    int n = mf_plugin_dirs(&dirs), np = 0;
    for (int i = 0; i < n; i++) {
        struct dirent **ents = NULL;
        int ne = scandir(dirs[i], &ents, is_stage_file, alphasort);
        for (int j = 0; j < ne; j++) {
            paths = mf_xrealloc(paths, sizeof *paths * (size_t)(np + 1));
            paths[np++] = mf_xasprintf("%s/%s", dirs[i], ents[j]->d_name);
            free(ents[j]);
        }
        free(ents);
    }
    mf_plugin_dirs_free(dirs, n);
    *paths_out = paths;
    return np;
}

int mf_plugin_open(const char *path, mf_plugin *out) {
    memset(out, 0, sizeof *out);
    mf_module mod;
    MF_TRY(mf_module_open(&mod, path, MF_STAGE_ENTRY_SYMBOL, MF_STAGE_ABI_VERSION, "stage plugin"));
    const mf_stage_api *api = mod.api;
    if (api->struct_size < sizeof(mf_stage_api) || !api->kind || !api->create || !api->run ||
        !api->keys) {
        mf_fail("%s: malformed stage plugin (struct size %u, expected %zu; kind, keys, create and run "
                "are required)",
                path, (unsigned)api->struct_size, sizeof(mf_stage_api));
        mf_module_close(&mod);
        return -1;
    }
    out->handle = mod.handle;
    out->api = api;
    out->kind = mf_xstrdup(api->kind);
    out->path = mf_xstrdup(path);
    return 0;
}

int mf_plugin_load(const char *kind, mf_plugin *out) {
    memset(out, 0, sizeof *out);
    for (const char *c = kind; *c; c++)
        if (!(*c == '_' || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9')))
            return mf_fail("stage kind '%s': only lowercase letters, digits and '_' are allowed", kind);
    char *file = mf_xasprintf("stage_%s.so", kind), *tried;
    char *path = mf_module_find("plugins", "MFPIPE_PLUGIN_PATH", file, &tried);
    int rc = -1;
    if (path) {
        rc = mf_plugin_open(path, out);
        if (rc == 0 && strcmp(out->api->kind, kind) != 0) {
            mf_fail("%s: plugin says it is stage '%s', but its file name says '%s'", path, out->api->kind, kind);
            mf_plugin_close(out);
            rc = -1;
        }
    } else {
        mf_fail("no plugin for stage '%s' (looked for %s; 'mfpipe plugins' lists the installed ones, "
                "MFPIPE_PLUGIN_PATH adds folders)",
                kind, *tried ? tried : "stage_<kind>.so in no folder");
    }
    free(path), free(tried), free(file);
    return rc;
}

void mf_plugin_close(mf_plugin *p) {
    if (!p) return;
    /* Plugins are never unloaded before exit under a sanitizer build so that leak reports keep
     * their symbols; otherwise dlclose. */
#ifndef MF_NO_DLCLOSE
    if (p->handle && !getenv("MFPIPE_NO_DLCLOSE")) dlclose(p->handle);
#endif
    free(p->kind);
    free(p->path);
    memset(p, 0, sizeof *p);
}
