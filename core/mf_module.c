/* mf_module.c - the generic loader of dlopen'd modules (mf_module.h): stage plugins (mf_plugin.c),
 * sampler plugins (engine/mf_sampler.c) and backend modules (engine/mf_backend.c) all come through
 * here, so the ABI check and the error messages are written once. */
#include "mf_module.h"

#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mf_error.h"

int mf_module_open(mf_module *m, const char *path, const char *symbol, uint32_t abi, const char *what) {
    memset(m, 0, sizeof *m);
    dlerror();
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        return mf_fail("%s: cannot load %s: %s", path, what, e ? e : "unknown dlopen error");
    }
    dlerror();
    void *sym = dlsym(h, symbol);
    const char *e = dlerror();
    if (e || !sym) {
        mf_fail("%s: not an mfpipe %s: symbol '%s' not found (%s)", path, what, symbol, e ? e : "null symbol");
        goto fail;
    }
    const void *(*entry)(void);
    memcpy(&entry, &sym, sizeof entry); /* object pointer -> function pointer, as POSIX allows */
    const void *api = entry();
    if (!api) {
        mf_fail("%s: %s() returned NULL", path, symbol);
        goto fail;
    }
    uint32_t got;
    memcpy(&got, api, sizeof got);
    if (got != abi) {
        mf_fail("%s: %s ABI version %u, but this mfpipe needs ABI version %u; rebuild it against this "
                "mfpipe's headers",
                path, what, (unsigned)got, (unsigned)abi);
        goto fail;
    }
    m->handle = h;
    m->api = api;
    return 0;
fail:
#ifndef MF_NO_DLCLOSE
    dlclose(h);
#endif
    return -1;
}

void mf_module_close(mf_module *m) {
    if (!m || !m->handle) return;
#ifndef MF_NO_DLCLOSE
    dlclose(m->handle);
#endif
    m->handle = NULL;
    m->api = NULL;
}

int mf_module_dirs(const char *sub, const char *env, char ***dirs_out) {
    char **dirs = NULL;
    int n = 0;
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = '\0';
        char *d = dirname(exe);
        dirs = mf_xrealloc(dirs, sizeof *dirs * (size_t)(n + 1));
        char *rel = mf_xasprintf("%s/../lib/mfpipe/%s", d, sub);
        char *canon = realpath(rel, NULL);
        dirs[n++] = canon ? canon : mf_xstrdup(rel);
        free(rel);
    }
    const char *val = env ? getenv(env) : NULL;
    if (val && *val) {
        char *copy = mf_xstrdup(val), *save = NULL;
        for (char *tok = strtok_r(copy, ":", &save); tok; tok = strtok_r(NULL, ":", &save)) {
            if (!*tok) continue;
            dirs = mf_xrealloc(dirs, sizeof *dirs * (size_t)(n + 1));
            dirs[n++] = mf_xstrdup(tok);
        }
        free(copy);
    }
    *dirs_out = dirs;
    return n;
}

void mf_module_dirs_free(char **dirs, int n) {
    for (int i = 0; i < n; i++) free(dirs[i]);
    free(dirs);
}

char *mf_module_find(const char *sub, const char *env, const char *file, char **tried) {
    char **dirs;
    int n = mf_module_dirs(sub, env, &dirs);
    char *found = NULL, *list = mf_xstrdup("");
    for (int i = 0; i < n && !found; i++) {
        char *path = mf_xasprintf("%s/%s", dirs[i], file);
        struct stat st;
        if (stat(path, &st) == 0) {
            found = path;
        } else {
            char *l = mf_xasprintf("%s%s%s", list, *list ? ", " : "", path);
            free(list), free(path);
            list = l;
        }
    }
    mf_module_dirs_free(dirs, n);
    *tried = list;
    return found;
}
