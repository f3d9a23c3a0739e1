/* mf_export.c - safetensors export and import of model weights (mf_export.h, docs/interop.md). */
#include "mf_export.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mf_checkpoint.h"
#include "mf_config.h"
#include "mf_error.h"
#include "mf_graph.h"
#include "mf_io.h"
#include "mf_json.h"
#include "mf_log.h"
#include "mf_model.h"
#include "mf_runner.h"
#include "mf_safetensors.h"

#ifndef MFPIPE_VERSION
#define MFPIPE_VERSION "0"
#endif

/* ---- the network's configuration as JSON ------------------------------------------------------- */
char *mf_unet_cfg_json(const mf_unet_cfg *c) {
    mf_buf b = {0};
    mf_buf_puts(&b, "{");
    mf_json_int(&b, "in_ch", c->in_ch);
    mf_json_int(&b, "height", c->height);
    mf_json_int(&b, "width", c->width);
    mf_json_int(&b, "ch", c->ch);
    mf_buf_puts(&b, ",\"mult\":[");
    for (int i = 0; i < c->n_levels; i++) mf_buf_printf(&b, "%s%d", i ? "," : "", c->mult[i]);
    mf_buf_puts(&b, "]");
    mf_json_int(&b, "res_blocks", c->res_blocks);
    mf_json_int(&b, "groups", c->groups);
    mf_json_int(&b, "temb_dim", c->temb_dim);
    mf_json_int(&b, "fourier_half", c->fourier_half);
    mf_json_num(&b, "time_scale", c->time_scale);
    mf_json_int(&b, "num_classes", c->num_classes);
    mf_json_int(&b, "time_inputs", c->time_inputs);
    mf_json_int(&b, "interval_r", c->interval_r);
    mf_json_int(&b, "null_class", c->null_class);
    mf_buf_puts(&b, "}");
    return b.s;
}

/* A flat JSON object of numbers and one list of numbers ("mult"), as mf_unet_cfg_json writes it. */
int mf_unet_cfg_from_json(const char *json, mf_unet_cfg *c) {
    memset(c, 0, sizeof *c);
    static const char *const keys[] = {"in_ch", "height", "width", "ch", "mult", "res_blocks", "groups", "temb_dim",
                                       "fourier_half", "time_scale", "num_classes", "time_inputs", "interval_r",
                                       "null_class"};
    unsigned seen = 0;
    const char *p = json;
    while (*p == ' ') p++;
    if (*p++ != '{') return mf_fail("mfpipe.unet_cfg: not a JSON object");
    for (;;) {
        while (*p == ' ' || *p == ',') p++;
        if (*p == '}') break;
        if (*p != '"') return mf_fail("mfpipe.unet_cfg: expected a key at offset %ld", (long)(p - json));
        const char *k = ++p;
        while (*p && *p != '"') p++;
        size_t kl = (size_t)(p - k);
        if (*p != '"' || p[1] != ':') return mf_fail("mfpipe.unet_cfg: bad key at offset %ld", (long)(k - json));
        p += 2;
        int idx = -1;
        for (int i = 0; i < (int)(sizeof keys / sizeof keys[0]); i++)
            if (strlen(keys[i]) == kl && strncmp(keys[i], k, kl) == 0) idx = i;
        if (idx < 0) return mf_fail("mfpipe.unet_cfg: unknown key '%.*s'", (int)kl, k);
        seen |= 1u << idx;
        if (idx == 4) {
            if (*p++ != '[') return mf_fail("mfpipe.unet_cfg: mult must be a list");
            c->n_levels = 0;
            while (*p && *p != ']') {
                char *end;
                long v = strtol(p, &end, 10);
                if (end == p || c->n_levels >= MF_UNET_MAX_LEVELS || v < 1 || v > 64)
                    return mf_fail("mfpipe.unet_cfg: bad mult list");
                c->mult[c->n_levels++] = (int)v;
                p = end;
                while (*p == ',' || *p == ' ') p++;
            }
            if (*p++ != ']') return mf_fail("mfpipe.unet_cfg: unterminated mult list");
            continue;
        }
        char *end;
        double v = strtod(p, &end);
        if (end == p) return mf_fail("mfpipe.unet_cfg: '%.*s' is not a number", (int)kl, k);
        p = end;
        if (idx != 9 && (v != (double)(long)v || v < 0 || v > 1e6))
            return mf_fail("mfpipe.unet_cfg: '%.*s' must be a small non-negative integer", (int)kl, k);
        int iv = (int)v;
        switch (idx) {
        case 0: c->in_ch = iv; break;
        case 1: c->height = iv; break;
        case 2: c->width = iv; break;
        case 3: c->ch = iv; break;
        case 5: c->res_blocks = iv; break;
        case 6: c->groups = iv; break;
        case 7: c->temb_dim = iv; break;
        case 8: c->fourier_half = iv; break;
        case 9: c->time_scale = (float)v; break;
        case 10: c->num_classes = iv; break;
        case 11: c->time_inputs = iv; break;
        case 12: c->interval_r = iv; break;
        case 13: c->null_class = iv; break;
        }
    }
    unsigned need = (1u << (sizeof keys / sizeof keys[0])) - 1;
    if ((seen & need) != need) {
        for (int i = 0; i < (int)(sizeof keys / sizeof keys[0]); i++)
            if (!(seen & (1u << i))) return mf_fail("mfpipe.unet_cfg: missing '%s'", keys[i]);
    }
    return mf_unet_check(c);
}

/* ---- weights <-> tensors ---------------------------------------------------------------------- */
static void shape_str(char *buf, size_t cap, const int64_t *s, int nd) {
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < nd && o < cap; i++) o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)s[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

int mf_weights_load_st(const char *path, mf_backend *be, const mf_unet_cfg *cfg, float *host_flat, int64_t n_flat) {
    mf_graph g;
    mf_unet ids;
    mf_graph_init(&g, be, 1);
    mf_unet_build(&g, cfg, &ids);
    mf_st_file f;
    int rc = 0;
    if (g.n_param_floats != n_flat) rc = mf_fail("%s: internal: the layout has %lld floats, not %lld", path,
                                                 (long long)g.n_param_floats, (long long)n_flat);
    if (rc == 0 && mf_st_open(path, &f) != 0) rc = -1;
    else if (rc == 0) {
        memset(host_flat, 0, sizeof(float) * (size_t)n_flat);
        for (int i = 0; rc == 0 && i < g.n_params; i++) {
            const mf_param *p = &g.params[i];
            const mf_st_entry *e = mf_st_find(&f, p->name);
            int64_t want[4];
            for (int d = 0; d < p->ndim; d++) want[d] = p->shape[d];
            char ws[96], fs[96];
            shape_str(ws, sizeof ws, want, p->ndim);
            if (!e) {
                rc = mf_fail("%s: no tensor '%s' (shape %s); the model has %d tensors, the file %d (docs/interop.md)",
                             path, p->name, ws, g.n_params, f.n);
                break;
            }
            shape_str(fs, sizeof fs, e->shape, e->ndim);
            bool same = e->ndim == p->ndim;
            for (int d = 0; same && d < p->ndim; d++) same = e->shape[d] == want[d];
            if (!same) rc = mf_fail("%s: tensor '%s': shape %s in the file, the model needs %s", path, p->name, fs, ws);
            else if (strcmp(e->dtype, "F32") != 0)
                rc = mf_fail("%s: tensor '%s': dtype %s in the file, the model needs F32", path, p->name, e->dtype);
            else memcpy(host_flat + p->offset, e->data, sizeof(float) * (size_t)p->numel);
        }
        for (int j = 0; rc == 0 && j < f.n; j++) {
            bool known = false;
            for (int i = 0; !known && i < g.n_params; i++) known = strcmp(g.params[i].name, f.entries[j].name) == 0;
            if (!known)
                rc = mf_fail("%s: tensor '%s' is not a parameter of this model (%d of %d tensors match)", path,
                             f.entries[j].name, g.n_params, f.n);
        }
        mf_st_close(&f);
    }
    mf_graph_free(&g);
    return rc;
}

int mf_weights_save_st(const char *path, mf_backend *be, const mf_unet_cfg *cfg, const float *host_flat,
                       int64_t n_flat, const char *const *meta_kv, int n_meta) {
    mf_graph g;
    mf_unet ids;
    mf_graph_init(&g, be, 1);
    mf_unet_build(&g, cfg, &ids);
    int rc = 0;
    if (g.n_param_floats != n_flat)
        rc = mf_fail("%s: the weights have %lld floats, the model described needs %lld", path, (long long)n_flat,
                     (long long)g.n_param_floats);
    mf_st_tensor *t = mf_xcalloc((size_t)g.n_params + 1, sizeof *t);
    for (int i = 0; rc == 0 && i < g.n_params; i++) {
        const mf_param *p = &g.params[i];
        t[i] = (mf_st_tensor){.name = p->name, .dtype = "F32", .ndim = p->ndim, .data = host_flat + p->offset,
                              .nbytes = sizeof(float) * (size_t)p->numel};
        for (int d = 0; d < p->ndim; d++) t[i].shape[d] = p->shape[d];
    }
    char *cj = mf_unet_cfg_json(cfg);
    const char **meta = mf_xcalloc((size_t)(2 * n_meta + 4), sizeof *meta);
    meta[0] = "format", meta[1] = "pt", meta[2] = "mfpipe.unet_cfg", meta[3] = cj;
    for (int i = 0; i < 2 * n_meta; i++) meta[4 + i] = meta_kv[i];
    if (rc == 0) rc = mf_st_write(path, t, g.n_params, meta, n_meta + 2);
    free(meta);
    free(cj);
    free(t);
    mf_graph_free(&g);
    return rc;
}

/* ---- commands --------------------------------------------------------------------------------- */
const char mf_export_help[] =
    "usage: mfpipe export RESULTS_DIR [--ema | --raw] [--step N] --out FILE.safetensors\n"
    "\n"
    "Writes a run's weights (the newest valid checkpoint, or the one of step N) as a safetensors file:\n"
    "F32 tensors named and shaped as the PyTorch mirror's state_dict (tests/ref/unet_ref.py), and\n"
    "__metadata__ with the network (mfpipe.unet_cfg), the weights kind and step, the run's identity and\n"
    "its resolved configuration. Default: the EMA weights when the run has them. docs/interop.md.\n";

const char mf_import_help[] =
    "usage: mfpipe import FILE.safetensors --out DIR [--experiment EXP.yaml]\n"
    "\n"
    "Makes a run folder from a safetensors file (an export, or a PyTorch state_dict saved with the\n"
    "metadata of docs/interop.md), so that `mfpipe sample DIR` and `mfpipe eval DIR` work on it: every\n"
    "tensor's name, shape and dtype is checked against the network in the file's mfpipe.unet_cfg; the\n"
    "run's configuration comes from the file's mfpipe.config or from --experiment. To train from the\n"
    "weights instead, set train.init_from: FILE in an experiment.\n";

static mf_backend *layout_backend(void) {
    mf_backend_opts o = {.threads = 1, .precision = MF_PREC_FP32};
    return mf_backend_open("cpu", &o);
}

int mf_export_cmd(int argc, char **argv) {
    const char *run = NULL, *out = NULL, *which = NULL;
    long long want_step = -1;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--ema") == 0 || strcmp(argv[i], "--raw") == 0) which = argv[i] + 2;
        else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) out = argv[++i];
        else if (strcmp(argv[i], "--step") == 0 && i + 1 < argc) {
            char *end;
            want_step = strtoll(argv[++i], &end, 10);
            if (*end || want_step < 0) return mf_fail("export: --step wants a step number, not '%s'", argv[i]), 2;
        } else if (argv[i][0] == '-') return mf_fail("export: unknown option '%s' (mfpipe export --help)", argv[i]), 2;
        else if (!run) run = argv[i];
        else return mf_fail("export: one results folder, not '%s' too", argv[i]), 2;
    }
    if (!run || !out) return mf_fail("export: usage: mfpipe export RESULTS_DIR [--ema|--raw] [--step N] --out FILE"), 2;
    char dir[4096], path[4300];
    snprintf(dir, sizeof dir, "%s/checkpoints", run);
    mf_ckpt c;
    if (want_step >= 0) {
        snprintf(path, sizeof path, "%s/ckpt_%08lld.mfc", dir, want_step);
        if (mf_ckpt_load(path, &c) != 0) return mf_error_prefix("export: step %lld: ", want_step), 1;
    } else {
        int found = mf_ckpt_load_latest(dir, &c, path, sizeof path, false);
        if (found < 0) return 1;
        if (found == 0) return mf_fail("export: %s: no valid checkpoint", dir), 1;
    }
    int rc = 1;
    mf_backend *be = NULL;
    mf_unet_cfg cfg;
    const mf_ckpt_section *cs = mf_ckpt_find(&c, "unet_cfg"), *ws = mf_ckpt_find(&c, "model"),
                          *es = mf_ckpt_find(&c, "ema");
    if (!cs || !ws) mf_fail("export: %s: no model description or weights in the checkpoint", path);
    else if (which && strcmp(which, "ema") == 0 && !es)
        mf_fail("export: %s: no EMA weights (the run had no ema stage); use --raw", path);
    else if (mf_unet_cfg_decode(cs->data, cs->n, &cfg) != 0) mf_error_prefix("export: %s: ", path);
    else if (!(be = layout_backend())) mf_error_prefix("export: ");
    else {
        bool ema = which ? strcmp(which, "ema") == 0 : es != NULL;
        const mf_ckpt_section *src = ema ? es : ws;
        /* the run's identity and configuration */
        char cpath[4200], step[32], abs[PATH_MAX];
        snprintf(cpath, sizeof cpath, "%s/config.yaml", run);
        uint8_t *ctext = NULL;
        size_t clen = 0;
        int gz;
        if (mf_read_file(cpath, &ctext, &clen, &gz) != 0) {
            mf_warn("export: %s; the file will have no mfpipe.config", mf_last_error());
            mf_error_clear();
        } else {
            /* a string (mf_read_file does not terminate it) */
            ctext = mf_xrealloc(ctext, clen + 1);
            ctext[clen] = '\0';
        }
        mf_node *root = ctext ? mf_cfg_load_file(cpath) : NULL;
        if (!root) mf_error_clear();
        const char *name = root ? mf_cfg_str(root, "name") : NULL;
        snprintf(step, sizeof step, "%llu", (unsigned long long)c.step);
        if (!realpath(run, abs)) snprintf(abs, sizeof abs, "%s", run);
        const char *meta[] = {"mfpipe.weights", ema ? "ema" : "raw", "mfpipe.step", step, "mfpipe.run", abs,
                              "mfpipe.experiment", name ? name : "", "mfpipe.config_hash", c.config_hash,
                              "mfpipe.version", MFPIPE_VERSION, "mfpipe.config", ctext ? (const char *)ctext : ""};
        int nm = ctext ? 7 : 6;
        if (mf_weights_save_st(out, be, &cfg, src->data, src->n, meta, nm) == 0) {
            mf_info("export: %s: %s weights of step %llu -> %s", path, ema ? "EMA" : "raw", (unsigned long long)c.step, out);
            rc = 0;
        }
        if (root) mf_node_free(root);
        free(ctext);
    }
    mf_backend_free(be);
    mf_ckpt_free_loaded(&c);
    return rc;
}

int mf_import_cmd(int argc, char **argv) {
    const char *file = NULL, *out = NULL, *exp = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) out = argv[++i];
        else if (strcmp(argv[i], "--experiment") == 0 && i + 1 < argc) exp = argv[++i];
        else if (argv[i][0] == '-') return mf_fail("import: unknown option '%s' (mfpipe import --help)", argv[i]), 2;
        else if (!file) file = argv[i];
        else return mf_fail("import: one file, not '%s' too", argv[i]), 2;
    }
    if (!file || !out) return mf_fail("import: usage: mfpipe import FILE.safetensors --out DIR [--experiment EXP.yaml]"), 2;
    mf_st_file f;
    if (mf_st_open(file, &f) != 0) return 1;
    int rc = 1;
    mf_unet_cfg cfg;
    mf_backend *be = NULL;
    float *w = NULL;
    const char *cj = mf_st_meta(&f, "mfpipe.unet_cfg"), *conf = mf_st_meta(&f, "mfpipe.config");
    const char *st = mf_st_meta(&f, "mfpipe.step"), *hash = mf_st_meta(&f, "mfpipe.config_hash");
    mf_experiment ex = {0};
    bool ex_loaded = false;
    if (!cj) {
        mf_fail("import: %s: no mfpipe.unet_cfg in the metadata: it says which network the tensors are for "
                "(docs/interop.md)", file);
        goto out;
    }
    if (mf_unet_cfg_from_json(cj, &cfg) != 0) {
        mf_error_prefix("import: %s: ", file);
        goto out;
    }
    if (!exp && (!conf || !*conf)) {
        mf_fail("import: %s: no mfpipe.config in the metadata; give --experiment EXP.yaml (its model, sample and "
                "eval sections are used)", file);
        goto out;
    }
    if (exp) {
        if (mf_experiment_load(&ex, exp, NULL, 0) != 0) goto out;
        ex_loaded = true;
    }
    if (!(be = layout_backend())) goto out;
    {
        mf_graph g;
        mf_unet ids;
        mf_graph_init(&g, be, 1);
        mf_unet_build(&g, &cfg, &ids);
        int64_t nf = g.n_param_floats;
        mf_graph_free(&g);
        w = mf_xmalloc(sizeof(float) * (size_t)nf);
        if (mf_weights_load_st(file, be, &cfg, w, nf) != 0) goto out;
        if (mf_results_create_at(out) != 0) goto out;
        char path[4300];
        snprintf(path, sizeof path, "%s/config.yaml", out);
        if (ex_loaded) {
            FILE *cf = fopen(path, "w");
            if (!cf || mf_cfg_dump_yaml(ex.root, cf) != 0) {
                if (cf) fclose(cf);
                mf_fail("import: %s: cannot write", path);
                goto out;
            }
            if (fclose(cf) != 0) {
                mf_fail("import: %s: write failed: %s", path, strerror(errno));
                goto out;
            }
        } else if (mf_write_file_atomic(path, conf, strlen(conf)) != 0) goto out;
        snprintf(path, sizeof path, "%s/checkpoints", out);
        if (mf_mkdirs(path) != 0) goto out;
        unsigned long long step = st ? strtoull(st, NULL, 10) : 0;
        snprintf(path, sizeof path, "%s/checkpoints/ckpt_%08llu.mfc", out, step);
        float desc[MF_UNET_CFG_FLOATS];
        mf_unet_cfg_encode(&cfg, desc);
        char sha[65] = "";
        mf_sha256_file(file, sha);
        char *meta = mf_xasprintf("imported_from=%s\nimported_sha256=%s\n", file, sha);
        /* the weights serve as both the raw and the EMA weights (samplers default to EMA) */
        mf_ckpt c = {.step = step, .meta = meta, .n_sections = 3};
        snprintf(c.config_hash, sizeof c.config_hash, "%s", hash && *hash ? hash : "imported");
        c.s[0] = (mf_ckpt_section){.name = "model", .n = nf, .data = w};
        c.s[1] = (mf_ckpt_section){.name = "ema", .n = nf, .data = w};
        c.s[2] = (mf_ckpt_section){.name = "unet_cfg", .n = MF_UNET_CFG_FLOATS, .data = desc};
        int wr = mf_ckpt_save(path, &c);
        free(meta);
        if (wr != 0) goto out;
        mf_buf b = {0};
        mf_buf_puts(&b, "{");
        mf_json_str(&b, "source", file);
        mf_json_str(&b, "sha256", sha);
        mf_json_int(&b, "tensors", f.n);
        mf_json_int(&b, "step", (long long)step);
        mf_buf_puts(&b, "}\n");
        snprintf(path, sizeof path, "%s/import.json", out);
        wr = mf_write_file_atomic(path, b.s, b.len);
        mf_buf_free(&b);
        if (wr != 0 || mf_results_status(out, "finished", "import", NULL) != 0) goto out;
        mf_info("import: %s (%d tensors, step %llu) -> %s", file, f.n, step, out);
        rc = 0;
    }
out:
    if (ex_loaded) mf_experiment_free(&ex);
    free(w);
    mf_backend_free(be);
    mf_st_close(&f);
    return rc;
}
