/* mf_module.h - the one loader for everything mfpipe dlopen's (stage plugins, sampler plugins, backend
 * modules): dlopen(RTLD_NOW|RTLD_LOCAL), one entry function, and the ABI check on the struct it
 * returns (whose first field is a uint32_t ABI version). Errors name the file and the reason. */
#ifndef MF_MODULE_H
#define MF_MODULE_H

#include <stdint.h>

typedef struct mf_module {
    void *handle;      /* dlopen handle; NULL when not open */
    const void *api;   /* what the entry function returned; its first field is the ABI version */
} mf_module;

/* Open `path`, call the function `symbol` (no arguments, returns a pointer) and check that the ABI
 * version it reports equals `abi`. `what` names the kind of file in messages ("stage plugin",
 * "sampler plugin", "backend module"). 0, or -1 with mf_fail (the file is closed again). */
int mf_module_open(mf_module *m, const char *path, const char *symbol, uint32_t abi, const char *what);
/* dlclose (skipped in sanitizer builds, MF_NO_DLCLOSE, so leak reports keep their symbols). */
void mf_module_close(mf_module *m);
/* Folders searched for modules of a kind: <exe>/../lib/mfpipe/<sub>, then each entry of the colon
 * list in environment variable `env` (may be NULL). Returns the count; free with mf_module_dirs_free. */
int mf_module_dirs(const char *sub, const char *env, char ***dirs_out);
void mf_module_dirs_free(char **dirs, int n);
/* The first existing <dir>/<file> over mf_module_dirs(sub, env), or NULL; *tried (caller frees) gets the
 * paths looked at, comma-separated, for the "not found" message. */
char *mf_module_find(const char *sub, const char *env, const char *file, char **tried);

#endif
