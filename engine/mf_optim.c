/* mf_optim.c - learning-rate schedules with extension segments, gradient clipping, EMA decay. */
#include "mf_optim.h"

#include <math.h>
#include <string.h>

int mf_sched_kind_parse(const char *name) {
    if (!name) return -1;
    if (strcmp(name, "cosine") == 0) return MF_SCHED_COSINE;
    if (strcmp(name, "linear") == 0) return MF_SCHED_LINEAR;
    if (strcmp(name, "constant") == 0) return MF_SCHED_CONSTANT;
    return -1;
}

void mf_sched_init(mf_sched *s, mf_sched_kind kind, double peak, int64_t warmup, int64_t total, double min_ratio) {
    *s = (mf_sched){.kind = kind, .peak = peak, .min_ratio = min_ratio, .warmup = warmup, .total = total,
                    .from = warmup, .lr0 = peak};
}

double mf_sched_lr(const mf_sched *s, int64_t step) {
    if (step < s->warmup) return s->peak * (double)(step + 1) / (double)s->warmup;
    if (s->kind == MF_SCHED_CONSTANT) return s->lr0;
    int64_t span = s->total - 1 - s->from;
    double p = span > 0 ? (double)(step - s->from) / (double)span : 1.0;
    if (p < 0) p = 0;
    if (p > 1) p = 1;
    double lo = s->peak * s->min_ratio;
    if (s->kind == MF_SCHED_COSINE) return lo + (s->lr0 - lo) * 0.5 * (1.0 + cos(M_PI * p));
    return s->lr0 - (s->lr0 - lo) * p;
}

void mf_sched_extend(mf_sched *s, int64_t step, int64_t new_total) {
    if (new_total == s->total) return;
    if (step <= s->warmup || step <= s->from) {
        s->total = new_total;
        return;
    }
    double lr = mf_sched_lr(s, step);
    s->from = step;
    s->lr0 = lr;
    s->total = new_total;
}

float mf_clip_scale(double grad_norm, double clip) {
    if (!(clip > 0) || !isfinite(grad_norm) || grad_norm <= clip) return 1.0f;
    return (float)(clip / (grad_norm + 1e-6));
}

double mf_ema_decay_at(double decay, bool warmup, int64_t n) {
    if (!warmup) return decay;
    double w = (1.0 + (double)n) / (10.0 + (double)n);
    return w < decay ? w : decay;
}
