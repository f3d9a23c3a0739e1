/* mf_backend.c - the backend registry: the only code that names backends. Opens "cpu" (built in,
 * cpu/) or "cuda" (a module, lib/mfpipe/backends/mf_backend_cuda.so, loaded at run time through the
 * generic loader so the program runs where no CUDA library exists), resolves "auto", and frees. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mf_backend.h"
#include "mf_error.h"
#include "mf_log.h"
#include "mf_module.h"

const char *const mf_backend_names[] = {"cpu", "cuda", NULL};

/* cpu/mf_cpu.c (declared in cpu/cpu_internal.h): the CPU backend's precision, what it really runs */
int mf_cpu_set_precision(mf_backend *be, int precision, char *why, size_t cap);

const char *mf_precision_name(int precision) {
    switch (precision) {
    case MF_PREC_FP32: return "fp32";
    case MF_PREC_TF32: return "tf32";
    case MF_PREC_BF16: return "bf16";
    case MF_PREC_AUTO: return "auto";
    default: return "?";
    }
}

/* ---- modules ------------------------------------------------------------------------------------ */

/* A loaded backend module stays loaded for the process (backends opened from it hold its code). */
typedef struct loaded_module {
    char name[16];
    mf_module mod;
    const mf_backend_module *api;
} loaded_module;
static loaded_module g_modules[4];
static int g_n_modules;

/* Find and load mf_backend_<name>.so from <exe>/../lib/mfpipe/backends, then MFPIPE_BACKEND_PATH. */
static const mf_backend_module *load_module(const char *name) {
    for (int i = 0; i < g_n_modules; i++)
        if (strcmp(g_modules[i].name, name) == 0) return g_modules[i].api;
    char *file = mf_xasprintf("mf_backend_%s.so", name), *tried;
    char *path = mf_module_find("backends", "MFPIPE_BACKEND_PATH", file, &tried);
    const mf_backend_module *api = NULL;
    if (path) {
        mf_module mod;
        if (mf_module_open(&mod, path, MF_BACKEND_ENTRY_SYMBOL, MF_BACKEND_ABI_VERSION, "backend module") == 0) {
            const mf_backend_module *m = mod.api;
            if (m->struct_size != sizeof(mf_backend_i) || !m->open || !m->name || strcmp(m->name, name) != 0) {
                mf_fail("%s: malformed backend module (interface size %u, this mfpipe's %zu; name '%s')", path,
                        (unsigned)m->struct_size, sizeof(mf_backend_i), m->name ? m->name : "(null)");
                mf_module_close(&mod);
            } else if (g_n_modules < (int)(sizeof g_modules / sizeof g_modules[0])) {
                loaded_module *lm = &g_modules[g_n_modules++];
                snprintf(lm->name, sizeof lm->name, "%s", name);
                lm->mod = mod;
                lm->api = api = m;
            } else {
                mf_fail("%s: too many backend modules loaded", path);
                mf_module_close(&mod);
            }
        }
    } else {
        mf_fail("no %s backend module in this build (looked for %s; build with nvcc and cuDNN present, "
                "MFPIPE_BACKEND_PATH adds folders)",
                name, *tried ? tried : "mf_backend_<name>.so in no folder");
    }
    free(path), free(tried), free(file);
    return api;
}

static int valid_backend(const mf_backend *be, const char *name) {
    const mf_backend_i *k = be->i;
    if (!k->destroy || !k->version || !k->error || !k->alloc || !k->randn)
        return mf_fail("the %s backend lacks a required entry (destroy, version, error, alloc, randn)", name);
    return 0;
}

static mf_backend *open_named(const char *name, const mf_backend_opts *o) {
    mf_backend *be = NULL;
    if (strcmp(name, "cpu") == 0) {
        be = mf_cpu_backend_new(o->threads);
        if (!be) {
            mf_fail("cannot create the cpu backend");
            return NULL;
        }
        if (o->precision == MF_PREC_AUTO) { /* bf16 where it is real, silently fp32 elsewhere */
            char why[320];
            if (mf_cpu_set_precision(be, MF_PREC_BF16, why, sizeof why) == MF_PREC_BF16)
                mf_info("precision auto: bf16 (cpu convolutions in bf16 through oneDNN: %s%s)", why,
                        be->bf16_act ? "; GroupNorm+SiLU outputs that feed them stored in bf16" : "");
            else
                mf_info("precision auto: fp32 (no bf16 here: %s)", why);
        } else if (o->precision != MF_PREC_FP32) {
            char why[320];
            if (mf_cpu_set_precision(be, o->precision, why, sizeof why) == o->precision)
                mf_info("precision %s: cpu convolutions in bf16 through oneDNN (%s)%s; fp32 accumulation, master "
                        "weights, gradients, JVP tangents and every other kernel", mf_precision_name(o->precision), why,
                        be->bf16_act ? ", GroupNorm+SiLU outputs that feed them stored in bf16" : "");
            else
                mf_warn("precision %s: the cpu backend runs fp32 (%s); using fp32", mf_precision_name(o->precision),
                        why);
        }
    } else if (strcmp(name, "cuda") == 0) {
        const mf_backend_module *m = load_module(name);
        if (!m) {
            mf_error_prefix("engine %s: ", name);
            return NULL;
        }
        char why[512] = "";
        mf_backend_opts oc = *o;
        if (oc.precision == MF_PREC_AUTO) oc.precision = MF_PREC_TF32; /* the module falls back below sm_80 */
        be = m->open(&oc, why, sizeof why);
        if (!be) {
            mf_fail("engine cuda: %s", why[0] ? why : "the CUDA backend could not be opened");
            return NULL;
        }
    } else {
        mf_fail("unknown backend '%s' (known: cpu, cuda, auto)", name);
        return NULL;
    }
    if (valid_backend(be, name) != 0) {
        if (be->i->destroy) be->i->destroy(be);
        return NULL;
    }
    if (!be->kind) be->kind = strcmp(name, "cpu") == 0 ? "cpu" : "cuda";
    return be;
}

mf_backend *mf_backend_open(const char *name, const mf_backend_opts *opts) {
    mf_backend_opts o = opts ? *opts : (mf_backend_opts){0};
    if (!name || strcmp(name, "auto") == 0) {
        /* cuda when its module loads and a GPU is usable, else cpu, saying why */
        const char *force = getenv("MFPIPE_NO_CUDA");
        if (!(force && strcmp(force, "1") == 0)) {
            mf_backend *be = open_named("cuda", &o);
            if (be) return be;
            mf_info("engine auto: no usable CUDA backend (%s); using the cpu", mf_last_error());
            mf_error_clear();
        } else {
            mf_info("engine auto: MFPIPE_NO_CUDA=1; using the cpu");
        }
        return open_named("cpu", &o);
    }
    return open_named(name, &o);
}

const char *mf_backend_probe(const char *name) {
    static char why[1024];
    if (strcmp(name, "cpu") == 0) return NULL;
    mf_backend *be = open_named(name, &(mf_backend_opts){.threads = 1});
    if (be) {
        mf_backend_free(be);
        return NULL;
    }
    snprintf(why, sizeof why, "%s", mf_last_error());
    mf_error_clear();
    return why;
}

void mf_backend_free(mf_backend *be) {
    if (!be) return;
    MF_ASSERT(be->i->destroy);
    be->i->destroy(be);
}
