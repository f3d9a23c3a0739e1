/* mf_sampler.h - samplers: ODE solvers over a learned velocity field v(z, t) (Euler, Heun, RK4 with
 * uniform or power time grids; adaptive Dormand-Prince 5(4) with rtol/atol, per-sample step-size
 * control and an evaluation cap) and MeanFlow's average-velocity samplers over u(z, r, t) (1-step and k-step).
 * Time runs from t = 1 (noise) to t = 0 (data). All state lives in backend buffers; solvers use only
 * backend kernels. New samplers register by name, from core or from a sampler plugin. */
#ifndef MF_SAMPLER_H
#define MF_SAMPLER_H

#include <stdint.h>

#include "mf_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The field being integrated. eval writes v(z, t) (or u(z, r, t) for average-velocity models) for the
 * whole batch into out; z and out are backend buffers of n floats. Returns 0 or -1 (mf_fail). */
typedef struct mf_field {
    mf_backend *be;
    int64_t n;      /* floats in one state (batch * C * H * W) */
    int batch;
    int (*eval)(void *ctx, const float *z, float r, float t, float *out);
    void *ctx;
    int average;    /* 1: eval is an average-velocity model u(z, r, t); 0: instantaneous v(z, t) (r ignored) */
    /* Optional: the same with one time per row (r, t: host arrays of `batch` floats). Samplers that
     * give each row its own time (dopri5) use it; without it they call eval once per distinct time
     * and keep each row's result (correct, but up to `batch` times the work). The output of a row
     * must depend on that row's input and times only. */
    int (*eval_rows)(void *ctx, const float *z, const float *r, const float *t, float *out);
    int rows;       /* rows holding real samples (0: all `batch`); later rows are padding, ignored */
} mf_field;

typedef struct mf_sampler_opts {
    int steps;          /* fixed-step solvers and MeanFlow k-step: number of steps */
    const char *grid;   /* "uniform" or "power" (t_i = (1 - i/steps)^power) */
    double power;
    double rtol, atol;  /* adaptive */
    int max_nfe;        /* adaptive: cap on evaluations (error when exceeded) */
    double h0;          /* adaptive: first step size (0: automatic) */
    /* optional: called after each accepted step with the current state and time (trajectories).
     * Samplers with per-row times (dopri5) call it after every round in which a row accepted a step,
     * with t = the largest time of any real row (every row has reached t or passed it). */
    int (*on_step)(void *user, const float *z, double t);
    void *user;
    /* optional, dopri5: like on_step but with each row's time (host array of `batch` doubles; padding
     * rows: 1). When set, it is called instead of on_step. */
    int (*on_step_rows)(void *user, const float *z, const double *t);
    /* optional output: one mf_sampler_stats per batch row (`batch` entries): dopri5 counts each row's
     * own evaluations and steps; the fixed-step samplers write the batch's counts to every row. */
    struct mf_sampler_stats *row_stats;
} mf_sampler_opts;

typedef struct mf_sampler_stats {
    int nfe;            /* network evaluations used (passes over the batch) */
    int accepted, rejected; /* steps; dopri5: summed over the real rows */
} mf_sampler_stats;

typedef struct mf_sampler {
    const char *name;
    const char *summary;
    int needs_average;  /* 1: requires an average-velocity model (MeanFlow samplers) */
    /* Integrate z (noise at t = 1, in place) to t = 0. */
    int (*run)(const mf_field *f, const mf_sampler_opts *o, float *z, mf_sampler_stats *st);
} mf_sampler;

/* Built-in samplers plus any registered ones: "euler", "heun", "rk4", "dopri5", "meanflow". */
const mf_sampler *mf_sampler_find(const char *name);
int mf_sampler_register(const mf_sampler *s);          /* for plugins; the pointer must stay valid */
int mf_sampler_list(const mf_sampler **out, int cap);  /* all registered, built-ins first */
/* The time grid t_0 = 1 > t_1 > ... > t_steps = 0 for fixed-step solvers (host, steps+1 values). */
void mf_sampler_grid(const mf_sampler_opts *o, double *t);

/* Sampler plugins: a shared object exporting `mfpipe_sampler_entry` returning this. */
#define MF_SAMPLER_ABI_VERSION 2u /* 2: per-row times (mf_field.eval_rows, rows), row statistics */
typedef struct mf_sampler_plugin {
    uint32_t abi_version; /* MF_SAMPLER_ABI_VERSION, first field */
    const mf_sampler *sampler;
} mf_sampler_plugin;

#ifdef __cplusplus
}
#endif
#endif
