/* sampler_midpoint.c - an example third-party sampler plugin: the explicit midpoint method (2nd order,
 * 2 evaluations per step) on mfpipe's uniform/power time grids. Built as sampler_midpoint.so; selected
 * with `sample.sampler: midpoint`. Copy this file to write your own sampler (see README.md). */
#include <stdlib.h>
#include <string.h>

#include "mf_error.h"
#include "mf_sampler.h"

/* One evaluation of the instantaneous velocity. An average-velocity model u(z, r, t) is called with
 * r = t, because u(z, t, t) = v(z, t). */
static int eval_v(const mf_field *f, const float *z, double t, float *out, mf_sampler_stats *st) {
    st->nfe++;
    if (f->eval(f->ctx, z, (float)t, (float)t, out) != 0)
        return mf_error_prefix("sampler midpoint, model at t = %.6g", t);
    return 0;
}

static int midpoint_run(const mf_field *f, const mf_sampler_opts *o, float *z, mf_sampler_stats *st_out) {
    mf_sampler_stats st0, *st = st_out ? st_out : &st0;
    memset(st, 0, sizeof *st);
    /* User errors are reported with mf_fail and -1, never exit() or printing. */
    if (o->steps < 1) return mf_fail("sampler midpoint: steps must be >= 1 (got %d)", o->steps);
    if (o->grid && strcmp(o->grid, "uniform") != 0 && strcmp(o->grid, "power") != 0)
        return mf_fail("sampler midpoint: unknown time grid '%s' (use uniform or power)", o->grid);
    if (o->grid && strcmp(o->grid, "power") == 0 && !(o->power > 0))
        return mf_fail("sampler midpoint: the power grid needs power > 0 (got %g)", o->power);

    /* The state lives in backend buffers (device memory on CUDA): never dereference z or the scratch
     * buffers on the host; only the backend's kernels touch them. */
    mf_backend *be = f->be;
    const mf_backend_i *k = be->i;
    const int64_t n = f->n;
    double *t = malloc(sizeof(double) * ((size_t)o->steps + 1));
    float *k1 = be->i->alloc(be, sizeof(float) * (size_t)n);
    float *zm = be->i->alloc(be, sizeof(float) * (size_t)n);
    int rc = -1;
    if (!t || !k1 || !zm) {
        mf_fail("sampler midpoint: out of memory for 2 scratch buffers of %lld floats", (long long)n);
        goto done;
    }
    mf_sampler_grid(o, t); /* t[0] = 1 > ... > t[steps] = 0 */
    for (int i = 0; i < o->steps; i++) {
        const double h = t[i + 1] - t[i]; /* < 0: time runs from noise to data */
        if (eval_v(f, z, t[i], k1, st) != 0) goto done;             /* k1 = v(z, t) */
        k->add2(be, n, 1.0f, z, (float)(0.5 * h), k1, zm);          /* zm = z + h/2 k1 */
        if (eval_v(f, zm, t[i] + 0.5 * h, k1, st) != 0) goto done;  /* k2 = v(zm, t + h/2) */
        k->axpby(be, n, (float)h, k1, 1.0f, z);                     /* z += h k2 */
        st->accepted++;
        if (o->on_step && o->on_step(o->user, z, t[i + 1]) != 0) goto done;
    }
    rc = 0;
done:
    if (k1) be->i->free(be, k1);
    if (zm) be->i->free(be, zm);
    free(t);
    return rc;
}

static const mf_sampler midpoint = {
    .name = "midpoint", /* must match the file name sampler_<name>.so */
    .summary = "explicit midpoint method (2nd order, 2 evaluations per step); example plugin",
    .needs_average = 0,
    .run = midpoint_run,
};

static const mf_sampler_plugin plugin = {.abi_version = MF_SAMPLER_ABI_VERSION, .sampler = &midpoint};

__attribute__((visibility("default"))) const mf_sampler_plugin *mfpipe_sampler_entry(void);
__attribute__((visibility("default"))) const mf_sampler_plugin *mfpipe_sampler_entry(void) {
    return &plugin;
}
