/* bad_abi.c - a plugin built with a wrong ABI version, which the loader must refuse. */
#include "mf_stage.h"

static int c(mf_run *r, const char *i, const mf_node *s, void **st) { return 0; }
static int rr(void *st, mf_run *r) { return 0; }
static const mf_key keys[] = {MF_KEY_END};
static const mf_stage_api api = {MF_STAGE_ABI_VERSION + 41, sizeof(mf_stage_api), "bad_abi", "wrong ABI", keys, NULL, c, rr, NULL, NULL};
MF_STAGE_PLUGIN(api)
