/* kernel_bench.c - times the CPU backend's element-wise and normalisation kernels on the UNet's
 * activation shapes (batch 128), in both layouts, through the backend interface only. A tool for
 * kernel work (`build/bin/mf_kernel_bench [reps]`), not a test: prints ms per call and the effective
 * memory bandwidth (bytes the kernel must move at least / time). */
#include <stdio.h>
#include <stdlib.h>
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

int main(int argc, char **argv) {
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
