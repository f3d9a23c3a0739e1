/* mf_optim.h - the optimizer arithmetic the train and ema stages share, as plain functions so tests
 * can check them at the boundaries: the learning-rate schedule (linear warm-up, then cosine, linear
 * or constant decay, with extension segments for resumed runs), gradient clipping, EMA decay warm-up. */
#ifndef MF_OPTIM_H
#define MF_OPTIM_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { MF_SCHED_COSINE, MF_SCHED_LINEAR, MF_SCHED_CONSTANT } mf_sched_kind;

/* The learning rate of 0-based step s:
 *   s < warmup:  peak * (s + 1) / warmup            (step warmup-1 trains at the peak)
 *   else:        decay from lr0 at step `from` to peak * min_ratio at step total-1 (the last step
 *                trains at the minimum), cosine or linear; constant stays at lr0.
 * A fresh schedule has from = warmup and lr0 = peak. mf_sched_extend() starts a new segment when a
 * resumed run changes `total`: the rate goes on from its current value, so extending never makes it
 * jump; only the remaining decay is stretched (or compressed). */
typedef struct mf_sched {
    mf_sched_kind kind;
    double peak, min_ratio;
    int64_t warmup, total;
    int64_t from; /* first step of the current decay segment */
    double lr0;   /* rate at `from` */
} mf_sched;

/* Parse "cosine" | "linear" | "constant"; -1 for anything else. */
int mf_sched_kind_parse(const char *name);
void mf_sched_init(mf_sched *s, mf_sched_kind kind, double peak, int64_t warmup, int64_t total, double min_ratio);
double mf_sched_lr(const mf_sched *s, int64_t step);
/* A resumed run at `step` now trains to `new_total`. Inside the warm-up (step <= warmup) the
 * schedule keeps its shape with the new length (the warm-up rates do not depend on it); after it,
 * a new segment decays from mf_sched_lr(s, step) at `step` to the minimum at new_total - 1. */
void mf_sched_extend(mf_sched *s, int64_t step, int64_t new_total);

/* Factor that scales the gradients so that their global norm is at most `clip` (clip <= 0: off).
 * Non-finite norms give 1 (the caller refuses the step). */
float mf_clip_scale(double grad_norm, double clip);

/* EMA decay at update n (1-based count of averaging steps): min(decay, (1 + n) / (10 + n)) with
 * warm-up, else decay. */
double mf_ema_decay_at(double decay, bool warmup, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
