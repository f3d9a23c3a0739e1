/* test_overfit.c - the engine and optimizer can fit one fixed batch: with the batch, noise and times
 * held fixed, AdamW drives the flow-matching loss down by at least 10x. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mf_graph.h"
#include "mf_rng.h"
#include "mf_test.h"
#include "mf_unet.h"

int main(void) {
    mf_unet_cfg c = {.in_ch = 1, .height = 16, .width = 16, .ch = 8, .n_levels = 2, .mult = {1, 2}, .res_blocks = 1,
                     .groups = 4, .temb_dim = 16, .fourier_half = 4, .time_scale = 1000.0f, .time_inputs = 1};
    const int B = 8, steps = 200;
    mf_backend *be = mf_cpu_backend_new(2);
    const mf_backend_i *k = be->i;
    mf_graph g;
    mf_unet ids;
    mf_graph_init(&g, be, B);
    mf_unet_build(&g, &c, &ids);
    CHECK(mf_graph_finalize(&g, ids.out, true, false) == 0);
    int64_t np = g.n_param_floats, n = g.nodes[ids.x].numel;
    float *hp = malloc(sizeof(float) * (size_t)np);
    mf_graph_init_params(&g, 3, hp);
    float *p = k->alloc(be, 4 * (size_t)np), *gr = k->alloc(be, 4 * (size_t)np);
    float *m = k->alloc(be, 4 * (size_t)np), *v = k->alloc(be, 4 * (size_t)np);
    float *tgt = k->alloc(be, 4 * (size_t)n), *dout = k->alloc(be, 4 * (size_t)n);
    k->write(be, p, hp, 4 * (size_t)np);
    k->fill(be, m, 0, np);
    k->fill(be, v, 0, np);
    float *x = malloc(4 * (size_t)n), *eps = malloc(4 * (size_t)n), *z = malloc(4 * (size_t)n), t[8];
    mf_rng_uniform(1, 1, 0, x, n);
    mf_rng_normal(1, 2, 0, eps, n);
    mf_rng_uniform(1, 3, 0, t, B);
    int64_t img = n / B;
    for (int i = 0; i < B; i++)
        for (int64_t j = 0; j < img; j++) {
            int64_t q = i * img + j;
            x[q] = 2 * x[q] - 1;
            z[q] = (1 - t[i]) * x[q] + t[i] * eps[q];
            eps[q] -= x[q]; /* target velocity */
        }
    k->write(be, tgt, eps, 4 * (size_t)n);
    mf_graph_set_params(&g, p);
    mf_graph_set_grads(&g, gr);
    double first = 0, last = 0;
    for (int s = 0; s < steps; s++) {
        mf_graph_write_input(&g, ids.x, z);
        mf_graph_write_input(&g, ids.t, t);
        mf_graph_forward(&g);
        k->add2(be, n, 1.0f, mf_graph_out(&g, ids.out), -1.0f, tgt, dout);
        double loss = k->sumsq(be, n, dout) / (double)n;
        if (s == 0) first = loss;
        last = loss;
        k->axpby(be, n, 2.0f / (float)n, dout, 0.0f, dout);
        k->fill(be, gr, 0.0f, np);
        mf_graph_backward(&g, dout);
        k->adamw(be, np, p, gr, m, v, 3e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, s + 1, 1.0f);
    }
    printf("overfit: loss %.4f -> %.4f after %d steps (ratio %.1f, required >= 10)\n", first, last, steps, first / last);
    CHECK(isfinite(last));
    CHECK_MSG(first / last >= 10.0, "loss only went from %g to %g", first, last);
    k->free(be, p), k->free(be, gr), k->free(be, m), k->free(be, v), k->free(be, tgt), k->free(be, dout);
    free(hp), free(x), free(eps), free(z);
    mf_graph_free(&g);
    mf_backend_free(be);
    return mf_test_summary("test_overfit");
}
