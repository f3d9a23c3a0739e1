/* cuda_kernels.h - the CUDA backend's element-wise, normalisation, reduction, optimiser and RNG kernels
 * (cuda_elem.cu, cuda_norm.cu, cuda_reduce.cu, cuda_rng.cu): one C++ function per mf_backend_i entry,
 * with the entry's exact signature and semantics (engine/mf_backend.h), for the table in mf_cuda.cu. */
#ifndef MF_CUDA_KERNELS_H
#define MF_CUDA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "mf_backend.h"

/* ---- cuda_elem.cu: element-wise, broadcasts, layout, embedding, time features ------------------ */
void mfcu_fill(mf_backend *be, float *dst, float value, int64_t n);
void mfcu_silu(mf_backend *be, int64_t n, const float *x, float *y);
void mfcu_silu_bwd(mf_backend *be, int64_t n, const float *x, const float *dy, float *dx, int acc);
void mfcu_silu_jvp(mf_backend *be, int64_t n, const float *x, const float *tx, float *ty);
void mfcu_axpby(mf_backend *be, int64_t n, float a, const float *x, float b, float *y);
void mfcu_add2(mf_backend *be, int64_t n, float a, const float *x, float b, const float *y, float *z);
void mfcu_add_channel(mf_backend *be, int n, int c, int hw, const float *x, const float *e, float *y, int blk);
void mfcu_add_bias_rows(mf_backend *be, int rows, int cols, const float *bias, float *y);
void mfcu_rows_axpby(mf_backend *be, int n, int64_t d, const float *a, const float *x, const float *b,
                     const float *y, float *z);
void mfcu_pow_weight(mf_backend *be, int n, const float *e, float c, float p, float scale, float *w);
void mfcu_copy_channels(mf_backend *be, int n, int hw, int nc, const float *src, int src_c, int src_c0,
                        int src_blk, float *dst, int dst_c, int dst_c0, int dst_blk, int acc);
void mfcu_upsample2x(mf_backend *be, int n, int c, int h, int w, const float *x, float *y, int blk);
void mfcu_upsample2x_bwd(mf_backend *be, int n, int c, int h, int w, const float *dy, float *dx, int acc,
                         int blk);
void mfcu_embed(mf_backend *be, int n, int dim, const int32_t *idx, const float *table, float *y);
void mfcu_embed_bwd(mf_backend *be, int n, int dim, const int32_t *idx, const float *dy, float *dtable);
void mfcu_fourier(mf_backend *be, int n, int half, const float *t, const float *freq, float *y);
void mfcu_fourier_jvp(mf_backend *be, int n, int half, const float *t, const float *freq, const float *tt,
                      float *ty);

/* ---- cuda_norm.cu: GroupNorm (+ SiLU) forward, backward, JVP; per-channel sums in any layout ---- */
void mfcu_groupnorm(mf_backend *be, int n, int c, int hw, int g, float eps, const float *x, const float *gamma,
                    const float *beta, float *y, float *mean, float *rstd, int blk);
void mfcu_groupnorm_bwd(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma,
                        const float *mean, const float *rstd, const float *dy, float *dx, float *dgamma,
                        float *dbeta, int acc, int blk);
void mfcu_groupnorm_jvp(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma,
                        const float *mean, const float *rstd, const float *tx, float *ty, int blk);
void mfcu_gn_silu(mf_backend *be, int n, int c, int hw, int g, float eps, const float *x, const float *gamma,
                  const float *beta, float *y, float *mean, float *rstd, int blk);
void mfcu_gn_silu_bwd(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma,
                      const float *beta, const float *mean, const float *rstd, const float *dy, float *dx,
                      float *dgamma, float *dbeta, int acc, int blk);
void mfcu_gn_silu_jvp(mf_backend *be, int n, int c, int hw, int g, const float *x, const float *gamma,
                      const float *beta, const float *mean, const float *rstd, const float *tx, float *ty,
                      int blk);
void mfcu_sum_channel(mf_backend *be, int n, int c, int hw, const float *dy, float *de, int acc, int blk);

/* ---- cuda_reduce.cu: row/column reductions (double accumulation) and the optimiser updates ------ */
void mfcu_sum_rows(mf_backend *be, int rows, int cols, const float *dy, float *dbias);
void mfcu_row_sq_err(mf_backend *be, int n, int64_t d, const float *x, const float *y, float *e);
void mfcu_sq_err_rows(mf_backend *be, int n, int64_t d, const float *a, const float *b, double *out);
double mfcu_sumsq(mf_backend *be, int64_t n, const float *x);
void mfcu_adamw(mf_backend *be, int64_t n, float *p, const float *grad, float *m, float *v, float lr, float b1,
                float b2, float eps, float wd, int64_t step, float gscale);
void mfcu_ema(mf_backend *be, int64_t n, float *e, const float *p, float d);
/* adamw_step (mf_backend.h): sumsq, clip scale and adamw on the device, the scalars in st */
void mfcu_adamw_step(mf_backend *be, int64_t n, float *p, const float *grad, float *m, float *v, float *st,
                     float b1, float b2, float eps, float wd, float clip);

/* ---- cuda_rng.cu: standard normals from the Philox stream (core/mf_rng.c's mf_rng_normal) ------- */
void mfcu_randn(mf_backend *be, uint64_t seed, uint32_t purpose, uint64_t step, int64_t n, float *out);

#endif
