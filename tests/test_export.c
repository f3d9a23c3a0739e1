/* test_export.c - weights as safetensors (engine/mf_export.c): files that mfpipe exported and the
 * PyTorch mirror loaded with strict=True (tests/ref/check_export.py) give mfpipe's network the mirror's
 * output on the same inputs; save then load is bit-exact; every mismatch (missing, extra, mis-shaped,
 * wrongly typed tensor; a bad network description) is refused naming the first one. The format's own
 * hostile-header checks are tests/test_safetensors.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mf_backend.h"
#include "mf_error.h"
#include "mf_export.h"
#include "mf_graph.h"
#include "mf_safetensors.h"
#include "mf_test.h"
#include "mf_unet.h"


static const char *src_dir(void) {
    const char *s = getenv("MFPIPE_SOURCE_DIR");
    return s ? s : MFPIPE_SOURCE_DIR;
}

static int64_t n_floats(mf_backend *be, const mf_unet_cfg *cfg, int *n_tensors) {
    mf_graph g;
    mf_unet ids;
    mf_graph_init(&g, be, 1);
    mf_unet_build(&g, cfg, &ids);
    int64_t n = g.n_param_floats;
    if (n_tensors) *n_tensors = g.n_params;
    mf_graph_free(&g);
    return n;
}

/* The mirror's output for the committed file, through mfpipe's importer and network. */
static void check_fixture(mf_backend *be, const char *name) {
    char path[1024], iop[1024];
    snprintf(path, sizeof path, "%s/tests/ref/export_%s.safetensors", src_dir(), name);
    snprintf(iop, sizeof iop, "%s/tests/ref/export_%s_io.safetensors", src_dir(), name);
    mf_st_file f, io;
    if (mf_st_open(path, &f) != 0) {
        CHECK_MSG(0, "%s", mf_last_error());
        return;
    }
    mf_unet_cfg cfg;
    const char *cj = mf_st_meta(&f, "mfpipe.unet_cfg");
    CHECK(cj && mf_unet_cfg_from_json(cj, &cfg) == 0);
    CHECK(mf_st_meta(&f, "format") && strcmp(mf_st_meta(&f, "format"), "pt") == 0);
    CHECK(mf_st_meta(&f, "mfpipe.weights") && strcmp(mf_st_meta(&f, "mfpipe.weights"), "raw") == 0);
    mf_st_close(&f);
    if (mf_st_open(iop, &io) != 0) {
        CHECK_MSG(0, "%s", mf_last_error());
        return;
    }
    const mf_st_entry *z = mf_st_find(&io, "z"), *t = mf_st_find(&io, "t"), *r = mf_st_find(&io, "r"),
                      *out = mf_st_find(&io, "out"), *lab = mf_st_find(&io, "labels");
    CHECK(z && t && r && out);
    int B = (int)z->shape[0];
    mf_graph g;
    mf_unet ids;
    mf_graph_init(&g, be, B);
    mf_unet_build(&g, &cfg, &ids);
    CHECK(mf_graph_finalize(&g, ids.out, false, false) == 0);
    int64_t np = g.n_param_floats;
    float *hp = malloc(sizeof(float) * (size_t)np);
    CHECK_MSG(mf_weights_load_st(path, be, &cfg, hp, np) == 0, "%s", mf_last_error());
    const mf_backend_i *k = be->i;
    float *dp = k->alloc(be, sizeof(float) * (size_t)np);
    k->write(be, dp, hp, sizeof(float) * (size_t)np);
    mf_graph_set_params(&g, dp);
    float *zz = malloc(z->nbytes), *tt = malloc(t->nbytes), *rr = malloc(r->nbytes), *oo = malloc(out->nbytes),
          *ho = malloc(out->nbytes);
    memcpy(zz, z->data, z->nbytes), memcpy(tt, t->data, t->nbytes), memcpy(rr, r->data, r->nbytes);
    memcpy(oo, out->data, out->nbytes);
    int32_t labels[64];
    if (cfg.num_classes > 0) {
        CHECK(lab && lab->numel == (uint64_t)B);
        if (lab) memcpy(labels, lab->data, sizeof(int32_t) * (size_t)B);
        mf_graph_set_labels(&g, labels);
    }
    mf_graph_write_input(&g, ids.x, zz);
    mf_graph_write_input(&g, ids.t, tt);
    if (ids.r >= 0) mf_graph_write_input(&g, ids.r, rr);
    mf_graph_forward(&g);
    int64_t n = (int64_t)(out->nbytes / sizeof(float));
    k->read(be, ho, mf_graph_out(&g, ids.out), out->nbytes);
    double worst = 0, scale = 0;
    for (int64_t i = 0; i < n; i++) {
        worst = fmax(worst, fabs((double)ho[i] - (double)oo[i]));
        scale = fmax(scale, fabs((double)oo[i]));
    }
    printf("test_export: %s: output max |mfpipe - PyTorch| / max |PyTorch| = %.2e\n", name, worst / scale);
    CHECK_MSG(scale > 0.1 && worst / scale < 1e-4, "%s: rel err %g", name, worst / scale);
    k->free(be, dp);
    free(hp), free(zz), free(tt), free(rr), free(oo), free(ho);
    mf_graph_free(&g);
    mf_st_close(&io);
}

static void check_roundtrip(mf_backend *be, const char *dir) {
    mf_unet_cfg cfg = {.in_ch = 1, .height = 8, .width = 8, .ch = 4, .n_levels = 2, .mult = {1, 2}, .res_blocks = 1,
                       .groups = 2, .temb_dim = 8, .fourier_half = 2, .time_scale = 1000.0f, .num_classes = 10,
                       .time_inputs = 2, .null_class = 1};
    int nt = 0;
    int64_t n = n_floats(be, &cfg, &nt);
    float *w = malloc(sizeof(float) * (size_t)n), *back = malloc(sizeof(float) * (size_t)n);
    uint32_t x = 12345;
    for (int64_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        uint32_t bits = (x & 0x807fffffu) | 0x3c000000u; /* various finite floats, signs and mantissas */
        memcpy(&w[i], &bits, 4);
    }
    /* the flat layout may have padding between tensors: it is not part of the file (zero on load) */
    char path[700];
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    const char *meta[] = {"mfpipe.step", "7"};
    CHECK_MSG(mf_weights_save_st(path, be, &cfg, w, n, meta, 1) == 0, "%s", mf_last_error());
    CHECK_MSG(mf_weights_load_st(path, be, &cfg, back, n) == 0, "%s", mf_last_error());
    mf_graph g;
    mf_unet ids;
    mf_graph_init(&g, be, 1);
    mf_unet_build(&g, &cfg, &ids);
    int same = 1;
    for (int i = 0; i < g.n_params; i++)
        same &= memcmp(w + g.params[i].offset, back + g.params[i].offset, sizeof(float) * (size_t)g.params[i].numel) == 0;
    CHECK_MSG(same, "save then load is not bit-exact");
    mf_st_file f;
    CHECK(mf_st_open(path, &f) == 0);
    CHECK(f.n == nt && mf_st_meta(&f, "mfpipe.step") && strcmp(mf_st_meta(&f, "mfpipe.step"), "7") == 0);
    mf_unet_cfg c2;
    CHECK(mf_unet_cfg_from_json(mf_st_meta(&f, "mfpipe.unet_cfg"), &c2) == 0 && memcmp(&c2, &cfg, sizeof cfg) == 0);
    /* the first tensor's name and shape from the layout, in PyTorch's form */
    CHECK(strcmp(f.entries[0].name, g.params[0].name) == 0);
    mf_st_close(&f);

    /* mismatches, each named: build files from the layout with one change */
    mf_st_tensor *t = calloc((size_t)g.n_params + 1, sizeof *t);
    float extra = 1.0f;
    for (int i = 0; i < g.n_params; i++) {
        const mf_param *p = &g.params[i];
        t[i] = (mf_st_tensor){.name = p->name, .dtype = "F32", .ndim = p->ndim, .data = w + p->offset,
                              .nbytes = sizeof(float) * (size_t)p->numel};
        for (int d = 0; d < p->ndim; d++) t[i].shape[d] = p->shape[d];
    }
    char bad[700], msg[300];
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
    /* 1. a tensor missing */
    CHECK(mf_st_write(bad, t + 1, g.n_params - 1, NULL, 0) == 0);
    CHECK(mf_weights_load_st(bad, be, &cfg, back, n) != 0);
    snprintf(msg, sizeof msg, "no tensor '%s'", g.params[0].name);
    CHECK_ERR_CONTAINS(msg);
    /* 2. a shape wrong (same element count, other shape) */
    int64_t s0 = t[0].shape[0], s1 = t[0].shape[1];
    t[0].shape[0] = s1, t[0].shape[1] = s0;
    if (s0 != s1) {
        CHECK(mf_st_write(bad, t, g.n_params, NULL, 0) == 0);
        CHECK(mf_weights_load_st(bad, be, &cfg, back, n) != 0);
        CHECK_ERR_CONTAINS("shape [");
        CHECK_ERR_CONTAINS("in the file, the model needs");
    }
    t[0].shape[0] = s0, t[0].shape[1] = s1;
    /* 3. a dtype wrong */
    int last = g.n_params - 1;
    t[last].dtype = "I32";
    CHECK(mf_st_write(bad, t, g.n_params, NULL, 0) == 0);
    CHECK(mf_weights_load_st(bad, be, &cfg, back, n) != 0);
    CHECK_ERR_CONTAINS("dtype I32 in the file, the model needs F32");
    t[last].dtype = "F32";
    /* 4. a tensor too many */
    t[g.n_params] = (mf_st_tensor){.name = "extra.weight", .dtype = "F32", .ndim = 1, .shape = {1}, .data = &extra, .nbytes = 4};
    CHECK(mf_st_write(bad, t, g.n_params + 1, NULL, 0) == 0);
    CHECK(mf_weights_load_st(bad, be, &cfg, back, n) != 0);
    CHECK_ERR_CONTAINS("tensor 'extra.weight' is not a parameter of this model");
    /* 5. another network (more channels): the first tensor's shape differs */
    mf_unet_cfg wide = cfg;
    wide.ch = 8;
    int64_t nw = n_floats(be, &wide, NULL);
    float *ww = malloc(sizeof(float) * (size_t)nw);
    CHECK(mf_weights_load_st(path, be, &wide, ww, nw) != 0);
    CHECK_ERR_CONTAINS("the model needs [8");
    free(ww);
    /* bad network descriptions */
    mf_unet_cfg c3;
    CHECK(mf_unet_cfg_from_json("{\"in_ch\":1}", &c3) != 0);
    CHECK_ERR_CONTAINS("missing 'height'");
    CHECK(mf_unet_cfg_from_json("{\"bogus\":1}", &c3) != 0);
    CHECK_ERR_CONTAINS("unknown key 'bogus'");
    free(t);
    mf_graph_free(&g);
    free(w), free(back);
}

int main(void) {
    mf_backend *be = mf_cpu_backend_new(2);
    const char *dir = mf_test_tmpdir();
    check_fixture(be, "fm_tiny");
    check_fixture(be, "mf_cond_tiny");
    check_roundtrip(be, dir);
    mf_backend_free(be);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return mf_test_summary("test_export");
}
