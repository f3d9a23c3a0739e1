/* kernel_bench.c - times the CPU backend's element-wise and normalisation kernels on the UNet's
 * activation shapes (batch 128), in both layouts, through the backend interface only. A tool for
 * kernel work (`build/bin/mf_kernel_bench [reps]`), not a test: prints ms per call and the effective
 * memory bandwidth (bytes the kernel must move at least / time).
 * `mf_kernel_bench conv [reps]`: 3x3 convolutions (batch 128, nChw16c) forward, backward-data and
 * backward-filter at fp32 and at precision bf16 (docs/cpu-backend.md, "bf16"): ms and GFLOP/s each. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mf_backend.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct {
    int n, c, h, w;
} shape;

/* best time of reps calls of direction dir (0 fwd with bias, 1 bwd_data, 2 bwd_filter with dbias) */
static double time_conv(mf_backend *be, const mf_conv_shape *s, int dir, int reps) {
    const mf_backend_i *k = be->i;
    const size_t nx = (size_t)s->n * s->ci * s->h * s->w, ny = (size_t)s->n * s->co * s->ho * s->wo;
    const size_t nw = (size_t)s->co * s->ci * s->k * s->k, big = nx > ny ? nx : ny;
    float *h = malloc(sizeof(float) * big);
    for (size_t i = 0; i < big; i++) h[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    float *x = k->alloc(be, sizeof(float) * nx), *y = k->alloc(be, sizeof(float) * ny);
    float *w = k->alloc(be, sizeof(float) * nw), *b = k->alloc(be, sizeof(float) * (size_t)s->co);
    float *dw = k->alloc(be, sizeof(float) * nw);
    k->write(be, x, h, sizeof(float) * nx);
    k->write(be, y, h, sizeof(float) * ny);
    k->write(be, w, h, sizeof(float) * nw);
    k->fill(be, b, 0.1f, s->co);
    k->fill(be, dw, 0.0f, (int64_t)nw);
    double best = 1e30;
    for (int r = 0; r <= reps; r++) { /* the first call creates the primitive: not timed */
        const double t0 = now();
        if (dir == 0) k->conv2d(be, s, x, w, b, y);
        else if (dir == 1) k->conv2d_bwd_data(be, s, y, w, x, 0);
        else k->conv2d_bwd_filter(be, s, x, y, dw, b);
        k->synchronize(be);
        const double t = now() - t0;
        if (r && t < best) best = t;
    }
    float *bufs[] = {x, y, w, b, dw};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) k->free(be, bufs[i]);
    free(h);
    return best;
}

static int conv_main(int reps) {
    mf_backend *f = mf_backend_open("cpu", &(mf_backend_opts){.threads = 0, .precision = MF_PREC_FP32});
    mf_backend *b = mf_backend_open("cpu", &(mf_backend_opts){.threads = 0, .precision = MF_PREC_BF16});
    if (!f || !b) return 1;
    printf("%s\n%d reps (best); bf16 column: %s\n", b->i->version(b), reps,
           b->precision == MF_PREC_BF16 ? "bf16 convolutions" : "fp32 (no bf16 on this CPU)");
    printf("| conv 3x3, batch 128 | direction | fp32 ms | fp32 GFLOP/s | bf16 ms | bf16 GFLOP/s | bf16 / fp32 |\n"
           "|---|---|---|---|---|---|---|\n");
    static const int shapes[][2] = {{64, 28}, {64, 14}, {32, 28}, {32, 14}}; /* channels, size */
    static const char *dirs[] = {"fwd", "bwd_data", "bwd_filter"};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const int c = shapes[i][0], hw = shapes[i][1];
        const mf_conv_shape s = {128, c, hw, hw, c, 3, 1, 1, hw, hw, 16, 16, 0, 0};
        const double gflop = 2.0 * s.n * s.co * s.ho * s.wo * s.ci * s.k * s.k / 1e9;
        for (int d = 0; d < 3; d++) {
            const double tf = time_conv(f, &s, d, reps), tb = time_conv(b, &s, d, reps);
            printf("| %d->%d %dx%d | %s | %.2f | %.0f | %.2f | %.0f | %.2fx |\n", c, c, hw, hw, dirs[d], 1e3 * tf,
                   gflop / tf, 1e3 * tb, gflop / tb, tf / tb);
        }
    }
    mf_backend_free(b);
    mf_backend_free(f);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "conv") == 0) return conv_main(argc > 2 ? atoi(argv[2]) : 5);
    int reps = argc > 1 ? atoi(argv[1]) : 20;
    mf_backend *be = mf_cpu_backend_new(0);
    const mf_backend_i *k = be->i;
    const shape shapes[] = {{128, 16, 28, 28}, {128, 48, 28, 28}, {128, 32, 14, 14}, {128, 64, 7, 7}};
    printf("%d threads, blocked layout %s, %d reps (best)\n", be->threads, be->cblock ? "on" : "off", reps);
    printf("| shape | layout | kernel | ms | GB/s (min traffic) |\n|---|---|---|---|---|\n");
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const shape s = shapes[si];
        const int hw = s.h * s.w, g = 8;
        const size_t nx = (size_t)s.n * s.c * hw;
        float *h = malloc(sizeof(float) * nx);
        for (size_t i = 0; i < nx; i++) h[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
        float *x = k->alloc(be, sizeof(float) * nx), *y = k->alloc(be, sizeof(float) * nx);
        float *dy = k->alloc(be, sizeof(float) * nx), *dx = k->alloc(be, sizeof(float) * nx);
        float *gm = k->alloc(be, sizeof(float) * s.c), *bt = k->alloc(be, sizeof(float) * s.c);
        float *dg = k->alloc(be, sizeof(float) * s.c), *db = k->alloc(be, sizeof(float) * s.c);
        float *mean = k->alloc(be, sizeof(float) * s.n * g), *rstd = k->alloc(be, sizeof(float) * s.n * g);
        k->write(be, x, h, sizeof(float) * nx);
        k->write(be, dy, h, sizeof(float) * nx);
        k->fill(be, gm, 1.0f, s.c);
        k->fill(be, bt, 0.1f, s.c);
        const double mb = (double)nx * 4;
        for (int blk = 0; blk <= 16; blk += 16) {
            if (blk && !be->cblock) continue;
            const char *names[] = {"gn_silu", "gn_silu_bwd", "gn_silu_jvp", "groupnorm", "silu", "add2"};
            const double traffic[] = {2, 3, 3, 2, 2, 3}; /* tensors read + written at least */
            for (int kk = 0; kk < (blk ? 4 : 6); kk++) { /* layout-free kernels once */
                double bestt = 1e30;
                for (int r = 0; r < reps; r++) {
                    double t0 = now();
                    switch (kk) {
                    case 0: k->gn_silu(be, s.n, s.c, hw, g, 1e-5f, x, gm, bt, y, mean, rstd, blk); break;
                    case 1: k->gn_silu_bwd(be, s.n, s.c, hw, g, x, gm, bt, mean, rstd, dy, dx, dg, db, 0, blk); break;
                    case 2: k->gn_silu_jvp(be, s.n, s.c, hw, g, x, gm, bt, mean, rstd, dy, dx, blk); break;
                    case 3: k->groupnorm(be, s.n, s.c, hw, g, 1e-5f, x, gm, bt, y, mean, rstd, blk); break;
                    case 4: k->silu(be, (int64_t)nx, x, y); break;
                    case 5: k->add2(be, (int64_t)nx, 1.0f, x, 1.0f, dy, y); break;
                    }
                    k->synchronize(be);
                    double t = now() - t0;
                    if (t < bestt) bestt = t;
                }
                printf("| %dx%dx%dx%d | %s | %s | %.3f | %.1f |\n", s.n, s.c, s.h, s.w, blk ? "nChw16c" : "NCHW",
                       names[kk], 1e3 * bestt, traffic[kk] * mb / bestt / 1e9);
            }
        }
        float *bufs[] = {x, y, dy, dx, gm, bt, dg, db, mean, rstd};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) k->free(be, bufs[i]);
        free(h);
    }
    mf_backend_free(be);
    return 0;
}
