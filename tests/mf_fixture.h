/* mf_fixture.h - the reader of the PyTorch reference fixtures (tests/ref/make_fixtures.py, format
 * versions 1 and 2) shared by the tests that compare against them (test_ref.c, test_objectives.c).
 * Test-only: static functions, one copy per test program. */
#ifndef MF_FIXTURE_H
#define MF_FIXTURE_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mf_error.h"
#include "mf_io.h"
#include "mf_test.h"
#include "mf_unet.h"

typedef struct arr {
    char name[128];
    int64_t n;
    float *v;
} arr;

typedef struct fixture {
    int cfg[20]; /* version 1: 18 ints; version 2 adds null_class, interval (0 t - r, 1 r) */
    int version;
    float time_scale;
    arr *a;
    int n;
} fixture;

static int load(const char *path, fixture *f) {
    uint8_t *buf;
    size_t len;
    int gz;
    if (mf_read_file(path, &buf, &len, &gz) != 0) return -1;
    memset(f, 0, sizeof *f);
    size_t p = 0;
    if (len < 16 || memcmp(buf, "MFREF\0\0", 7) != 0 || (buf[7] != 1 && buf[7] != 2)) {
        free(buf);
        return mf_fail("%s: not an MFREF v1 or v2 fixture", path);
    }
    f->version = buf[7];
    p = 8;
    uint32_t ni;
    memcpy(&ni, buf + p, 4), p += 4;
    MF_ASSERT(ni == (f->version == 1 ? 18u : 20u));
    memcpy(f->cfg, buf + p, 4 * ni), p += 4 * ni;
    memcpy(&f->time_scale, buf + p, 4), p += 4;
    while (p < len) {
        f->a = realloc(f->a, sizeof *f->a * (size_t)(f->n + 1));
        arr *a = &f->a[f->n++];
        uint32_t nl, nd, d;
        memcpy(&nl, buf + p, 4), p += 4;
        MF_ASSERT(nl < sizeof a->name);
        memcpy(a->name, buf + p, nl), p += nl;
        a->name[nl] = '\0';
        memcpy(&nd, buf + p, 4), p += 4;
        a->n = 1;
        for (uint32_t i = 0; i < nd; i++) memcpy(&d, buf + p, 4), p += 4, a->n *= d;
        MF_ASSERT(p + 4 * (size_t)a->n <= len);
        a->v = malloc(4 * (size_t)a->n);
        memcpy(a->v, buf + p, 4 * (size_t)a->n), p += 4 * (size_t)a->n;
    }
    free(buf);
    return 0;
}

static const arr *get(const fixture *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->a[i].name, name) == 0) return &f->a[i];
    return NULL;
}

/* max |c - ref| / max(max |ref|, floor): a gradient that is exactly zero in theory (a conv bias
 * feeding a GroupNorm with one channel per group) is measured against `floor`, 1e-3 of the largest
 * gradient of the whole model, instead of against its own rounding noise */
static double rel_err_floor(const float *c, const float *ref, int64_t n, double floor) {
    double md = 0, mr = 0;
    for (int64_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)c[i] - ref[i]));
        mr = fmax(mr, fabs((double)ref[i]));
    }
    return md / fmax(mr, floor > 0 ? floor : 1e-30);
}
static double rel_err(const float *c, const float *ref, int64_t n) { return rel_err_floor(c, ref, n, 0); }


static void fixture_free(fixture *f) {
    for (int i = 0; i < f->n; i++) free(f->a[i].v);
    free(f->a);
    memset(f, 0, sizeof *f);
}

/* Load tests/ref/<file> and the UNet configuration of its header. 0, or -1 with a failed CHECK. */
static int open_fixture(const char *file, fixture *f, mf_unet_cfg *cfg) {
    char path[4096];
    const char *src = getenv("MFPIPE_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/tests/ref/%s", src ? src : "..", file);
    if (load(path, f) != 0) {
        CHECK_MSG(0, "%s", mf_last_error());
        return -1;
    }
    int *c = f->cfg;
    *cfg = (mf_unet_cfg){.in_ch = c[0], .height = c[1], .width = c[2], .ch = c[3], .n_levels = c[4],
                         .res_blocks = c[11], .groups = c[12], .temb_dim = c[13], .fourier_half = c[14],
                         .num_classes = c[15], .time_inputs = c[16], .time_scale = f->time_scale,
                         .null_class = f->version >= 2 ? c[18] : 0, .interval_r = f->version >= 2 ? c[19] : 0};
    for (int i = 0; i < 6; i++) cfg->mult[i] = c[5 + i];
    return 0;
}

#endif
