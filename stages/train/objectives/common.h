/* common.h - what the objectives of stages/train/objectives share: obj_net (one static UNet graph
 * for a number of rows, on the run's parameter and gradient buffers), the per-row weighted squared
 * error, class dropout and distilled guidance, and obj_family: the machinery of the average-velocity
 * objectives (meanflow, imeanflow, alphaflow; fm is its all-rows-r = t case), which split a batch
 * into rows with r = t (plain flow matching) and rows with an interval r < t, each on its own graph,
 * so that only the interval rows pay for tangents or extra passes. */
#ifndef OBJ_COMMON_H
#define OBJ_COMMON_H

#include <stdbool.h>
#include <stdint.h>

#include "../objective.h"
#include "mf_graph.h"

/* ---- one graph ------------------------------------------------------------------------------- */
typedef struct obj_net {
    mf_graph g;
    mf_unet ids;
    int rows;
    bool tan;
    float *ones; /* backend (rows): the tangent of t */
} obj_net;

int obj_net_init(obj_net *nt, const mf_obj_env *env, int rows, bool tan);
void obj_net_free(obj_net *nt);
/* Forward at (z, r, t | labels): z backend (rows, img), t and r host (rows; r ignored by v(z, t)
 * models), labels host or NULL. Returns the output (backend, valid until the next pass). */
const float *obj_net_forward(obj_net *nt, const float *z, const float *t, const float *r, const int32_t *labels);
/* The same with the tangent (tz, dr = 0, dt = 1); *dout_dt gets the output's tangent (backend). */
const float *obj_net_jvp(obj_net *nt, const float *z, const float *t, const float *r, const int32_t *labels,
                         const float *tz, const float **dout_dt);
void obj_net_backward(obj_net *nt, const float *dout);

/* ---- losses ---------------------------------------------------------------------------------- */
/* Per-row weighted squared error of rows u vs tgt (backend, n rows of d): E[i] = sum_j (u - tgt)^2,
 * w[i] = 1 / (E[i] / norm + c)^p, and dout = coef[i] (u - tgt) with coef[i] = scale * 2 w[i] / (B norm),
 * so that the loss sum_i scale * w[i] E[i] / (B norm) = sum_i coef[i] E[i] / 2 has gradient dout.
 * E and coef are backend arrays of n floats. */
typedef struct obj_weighting {
    float p, c;   /* p = 0: unweighted */
    bool sum;     /* per-row error summed over pixels (norm 1) or averaged (norm = d) */
} obj_weighting;
/* Per-row squared errors E of u against tgt, their loss coefficients coef (the weighting, times lw[i]
 * when lw, the backend's per-sample weights of the loss_weight hook, is not NULL) and dout. */
void obj_rows_loss(mf_backend *be, const obj_weighting *wt, int batch, int n, int64_t d, float scale, const float *u,
                   const float *tgt, const float *lw, float *E, float *coef, float *dout);

/* ---- class dropout and guidance (keys train.class_dropout, train.guidance.*) ----------------- */
extern const mf_key obj_cond_keys[];
typedef struct obj_cond {
    int ncls;     /* 0: unconditional */
    float drop;   /* probability of the null class */
    float w, k;   /* v_g = w v + (1 - w - k) u(z, t, t | null) + k u(z, t, t | c) */
    bool guided;  /* conditional and (w, k) != (1, 0) */
} obj_cond;
/* Reads the keys; sets cfg->null_class when labels can be dropped. */
int obj_cond_read(obj_cond *c, const mf_node *train, mf_unet_cfg *cfg, const char *objective);
/* Class dropout of step b->step from (seed, MF_RNG_CLASS_DROP, step): labels and dropped. */
void obj_cond_drop(const obj_cond *c, mf_obj_batch *b);

/* ---- the average-velocity family --------------------------------------------------------------- */
typedef struct obj_family obj_family;
/* The objective-specific part: the interval rows' target. Runs whatever passes it needs on f->mf
 * (z, t, r, labels of the rows: f->Z + off, b->t + n_eq, ...), ENDING with the forward pass at
 * (z, r, t) whose output *u it returns (backward follows it), and writes u_tgt to ut (backend). */
typedef int (*obj_interval_fn)(obj_family *f, void *self, const mf_obj_batch *b, const float *vt, float *ut,
                               const float **u);

struct obj_family {
    /* configuration */
    float ratio;           /* rows with r = t */
    bool logit_normal, one_time; /* one_time: t only (fm), r = t on every row */
    float mu, sigma;
    obj_weighting wt;
    obj_cond cond;
    bool want_tan;         /* the interval graph needs tangents */
    /* run time */
    mf_obj_env env;
    int n_eq, n_iv;        /* rows with r = t, rows with an interval */
    obj_net eq, iv;
    int64_t d;
    float *Z, *V, *VT, *UN, *UC, *UT, *DO, *TAN, *AUX; /* backend, batch rows (TAN, AUX: n_iv rows) */
    float *E, *W, *CA, *CB, *ONES;                     /* backend, batch floats */
    float *ACC_WE, *ACC_E;  /* backend, batch floats: sums over deferred steps of W E and E per row */
    float *LW;              /* backend, batch floats: the step's per-sample loss weights (b->weights) */
    int64_t n_deferred;     /* steps accumulated there since the last collect */
    float *h_a, *h_b, *h_e, *h_w;                      /* host, batch floats */
    int32_t *h_null;                                   /* host: the null class, batch entries */
    const char *probe;     /* set by the interval fn: what to blame first when the loss is not finite */
};

/* Family keys of objective `sec` (meanflow, imeanflow, alphaflow) with its default r = t ratio. */
#define OBJ_FAMILY_KEYS(sec, ratio_def)                                                                        \
    MF_FLOAT(sec ".flow_ratio", ratio_def, 0, 1, "fraction of rows with r = t (those are plain flow matching)"), \
    MF_ENUM(sec ".time_dist", "logit_normal", "logit_normal|uniform",                                          \
            "distribution of the two time draws per row (t the larger, r the smaller)"),                       \
    MF_FLOAT(sec ".time_mu", "-0.4", -10, 10, "logit-normal mean (MeanFlow's official code: -0.4)"),           \
    MF_FLOAT(sec ".time_sigma", "1.0", 1e-3, 10, "logit-normal standard deviation (official: 1.0)"),          \
    MF_FLOAT(sec ".weight_p", "1.0", 0, 10, "adaptive weight w = 1/(e + c)^p, stop-gradient (0: plain squared error)"), \
    MF_FLOAT(sec ".weight_c", "1e-3", 1e-12, 1e6, "adaptive weight constant c"),                              \
    MF_ENUM(sec ".reduction", "sum", "sum|mean",                                                              \
            "per-sample error e: sum over pixels (official JAX code) or mean (most PyTorch ports)")

/* Reads the family keys of section `sec` ("meanflow") and the guidance keys. */
int obj_family_read(obj_family *f, const mf_node *train, const char *sec, mf_unet_cfg *cfg);
/* fm and fm_avgvel: one time per row from train.time_dist / time_mu / time_sigma, r = t, plain MSE. */
int obj_fm_read(obj_family *f, const mf_node *train, mf_unet_cfg *cfg, const char *objective);
/* Times of stream `sub` of a step (seed, TIME, 128 step + sub): n values from the family's distribution. */
void obj_draw_times(const obj_family *f, uint64_t seed, int64_t step, int sub, float *t, int n);
int obj_family_setup(obj_family *f, const mf_obj_env *env);
void obj_family_prepare(obj_family *f, mf_obj_batch *b);
int obj_family_step(obj_family *f, const mf_obj_batch *b, mf_obj_result *res, obj_interval_fn fn, void *self);
/* The deferred loss and family stats (sums over f->n_deferred steps), then the accumulators restart.
 * Stats are appended to res after the n_stats already there. */
int obj_family_collect(obj_family *f, mf_obj_result *res, int64_t *steps);
size_t obj_family_act_bytes(const obj_family *f);
void obj_family_free(obj_family *f);
/* meanflow.c, shared with imeanflow.c: du/dt of the interval rows along (tz, 0, 1) into f->TAN, by
 * JVP (*u = that pass's output, ready for backward) or central differences (*u = NULL); and
 * u_tgt = vt - (t - r) du/dt into ut. */
int meanflow_dudt(obj_family *f, bool fd, float h, const mf_obj_batch *b, const float *tz, const float **u);
void meanflow_target(obj_family *f, const mf_obj_batch *b, const float *vt, float *ut);
/* per-row host coefficients -> backend array (batch floats) */
void obj_upload(obj_family *f, float *dst, const float *host, int n);

#endif
