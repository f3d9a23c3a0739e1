/* bad_backend.c - backend modules the registry must refuse, built as badbackends/<abi|size>/
 * mf_backend_cuda.so: one with a wrong ABI version, one whose interface table has the wrong size. */
#include "mf_backend.h"

#ifndef BAD_KIND
#define BAD_KIND 0
#endif

static mf_backend *bad_open(const mf_backend_opts *o, char *why, size_t cap) {
    (void)o, (void)why, (void)cap;
    return NULL;
}
static const mf_backend_module mod = {BAD_KIND == 0 ? MF_BACKEND_ABI_VERSION + 98 : MF_BACKEND_ABI_VERSION,
                                      BAD_KIND == 0 ? sizeof(mf_backend_i) : sizeof(mf_backend_i) - 8, "cuda",
                                      bad_open};
__attribute__((visibility("default"))) const mf_backend_module *mfpipe_backend_entry(void);
const mf_backend_module *mfpipe_backend_entry(void) { return &mod; }
