/* mf_stage.h - the stage plugin ABI. A stage plugin is a shared object exporting one symbol,
 * `mfpipe_stage_entry`, that returns a pointer to a constant mf_stage_api whose first field is
 * MF_STAGE_ABI_VERSION. The runner refuses any other version, showing both.
 *
 * Lifecycle: for every stage in the experiment, in order, the runner validates the stage's section
 * against `keys` (filling defaults) and calls create(); only when all stages are created does it call
 * run() on each, in order; destroy() is called for every created stage, also after a failure.
 * Ownership: `state` belongs to the plugin; artifacts put into the run belong to the run. */
#ifndef MF_STAGE_H
#define MF_STAGE_H

#include <stdint.h>

#include "mf_config.h"
#include "mf_run.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bump on any change to mf_stage_api, mf_run.h, mf_config.h or an artifact struct layout. */
#define MF_STAGE_ABI_VERSION 2u
#define MF_STAGE_ENTRY_SYMBOL "mfpipe_stage_entry"

typedef struct mf_section_schema {
    const char *name;   /* top-level section, e.g. "model" */
    const mf_key *keys; /* terminated by MF_KEY_END */
} mf_section_schema;

typedef struct mf_stage_api {
    uint32_t abi_version; /* MF_STAGE_ABI_VERSION; must stay the first field */
    uint32_t struct_size; /* sizeof(mf_stage_api) at build time of the plugin */
    const char *kind;     /* "data", "train", ...: what `stages:` entries name */
    const char *summary;  /* one line for `mfpipe plugins` */
    const mf_key *keys;   /* schema of the stage's own section (named after the stage instance) */
    const mf_section_schema *shared; /* other sections it reads (e.g. "model"); {NULL,NULL}-terminated, or NULL */

    /* Configure from the validated section; cheap (no data loading, no training). May subscribe to
     * events. Returns 0, or -1 with mf_fail(); on failure, a non-NULL *state is passed to destroy(). */
    int (*create)(mf_run *run, const char *instance, const mf_node *section, void **state);
    /* Do the work. Returns 0, or -1 with mf_fail(). */
    int (*run)(void *state, mf_run *run);
    /* Free state; optional (may be NULL). */
    void (*destroy)(void *state);
    /* Optional, NULL-terminated: keys of the stage's own section (dotted, relative to it) that may
     * change when a run is resumed because they do not change what earlier steps computed (logging,
     * checkpoint cadence, previews). "*" frees the whole section (stages that keep no state across
     * a resume: sampling, evaluation). Every other key, and every key of the shared sections, is a
     * training setting: `mfpipe resume` refuses to change it without --allow-changes. NULL: none. */
    const char *const *resume_free;
} mf_stage_api;

typedef const mf_stage_api *(*mf_stage_entry_fn)(void);

#if defined(__GNUC__)
#define MF_EXPORT __attribute__((visibility("default")))
#else
#define MF_EXPORT
#endif

/* Declare a plugin's entry point in one line:  MF_STAGE_PLUGIN(my_api);  */
#define MF_STAGE_PLUGIN(api_var)                                                                   \
    MF_EXPORT const mf_stage_api *mfpipe_stage_entry(void);                                        \
    MF_EXPORT const mf_stage_api *mfpipe_stage_entry(void) { return &(api_var); }

#ifdef __cplusplus
}
#endif
#endif
