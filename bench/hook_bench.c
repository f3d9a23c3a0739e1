/* hook_bench.c - the per-step cost of Lua hooks (bench/hooks.sh prints it beside a training step).
 *   mf_hook_bench [--batch B] [--log-every K] [--iters N] SCRIPT.lua ...
 * For each script and each hook it defines, the mean time per training step of the calls one step
 * makes: lr and ema_decay once, loss_weight once per row (or loss_weight_batch once with B rows),
 * on_step once every K steps (its cost divided by K). Prints "script hook microseconds_per_step". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mf_error.h"
#include "mf_hooks.h"
#include "mf_log.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    int batch = 128, log_every = 50, iters = 2000, i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (i + 1 >= argc) break;
        if (strcmp(argv[i], "--batch") == 0) batch = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--log-every") == 0) log_every = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--iters") == 0) iters = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "mf_hook_bench: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (i >= argc || batch < 1 || log_every < 1 || iters < 1) {
        fprintf(stderr, "usage: mf_hook_bench [--batch B] [--log-every K] [--iters N] SCRIPT.lua ...\n");
        return 2;
    }
    mf_log_set_quiet(1);
    float *t = malloc(sizeof(float) * (size_t)batch), *r = malloc(sizeof(float) * (size_t)batch),
          *w = malloc(sizeof(float) * (size_t)batch);
    for (int k = 0; k < batch; k++) t[k] = (k + 0.5f) / (float)batch, r[k] = t[k] * 0.5f;
    const char *names[6] = {"loss", "loss_unweighted", "lr", "grad_norm", "img_per_s", "loss_r_lt_t"};
    double vals[6] = {0.1, 0.1, 1e-3, 0.5, 900, 0.2};
    int rc = 0;
    for (; i < argc && rc == 0; i++) {
        mf_hooks *h = NULL;
        char *p[1] = {argv[i]};
        if (mf_hooks_load(NULL, p, 1, 0, &h) != 0) {
            fprintf(stderr, "mf_hook_bench: %s\n", mf_last_error());
            return 1;
        }
        const char *base = strrchr(argv[i], '/');
        base = base ? base + 1 : argv[i];
        for (int k = 0; k < MF_HOOK_COUNT && rc == 0; k++) {
            if (k == MF_HOOK_LOSS_WEIGHT_BATCH || !mf_hooks_has(h, (mf_hook_kind)k)) continue;
            int n = k == MF_HOOK_ON_STEP ? iters / 10 + 1 : iters;
            double t0 = now_s(), v;
            for (int s = 0; s < n && rc == 0; s++) {
                switch (k) {
                case MF_HOOK_LR: rc = mf_hooks_lr(h, s, iters, 1e-3, &v); break;
                case MF_HOOK_EMA_DECAY: rc = mf_hooks_ema_decay(h, s + 1, &v); break;
                case MF_HOOK_LOSS_WEIGHT: rc = mf_hooks_loss_weight(h, batch, t, r, s, NULL, NULL, w); break;
                case MF_HOOK_ON_STEP: {
                    mf_hook_action act;
                    rc = mf_hooks_on_step(h, (int64_t)(s + 1) * log_every, 6, names, vals, &act);
                    break;
                }
                case MF_HOOK_ON_EVAL: {
                    mf_hook_action act;
                    rc = mf_hooks_on_eval(h, s, 6, names, vals, &act);
                    break;
                }
                }
            }
            double us = (now_s() - t0) / n * 1e6;
            if (k == MF_HOOK_ON_STEP) us /= log_every;
            if (rc != 0) fprintf(stderr, "mf_hook_bench: %s: %s\n", base, mf_last_error());
            else if (k != MF_HOOK_ON_EVAL) /* once per run: not a per-step cost */
                printf("%s %s %.3f\n", base,
                       k == MF_HOOK_LOSS_WEIGHT && mf_hooks_has(h, MF_HOOK_LOSS_WEIGHT_BATCH) ? "loss_weight_batch"
                                                                                               : mf_hook_name((mf_hook_kind)k),
                       us);
        }
        mf_hooks_free(h);
    }
    free(t), free(r), free(w);
    return rc ? 1 : 0;
}
