/* mf_rng.h - counter-based random numbers (Philox 4x32-10), keyed by (seed, purpose, step, index):
 * the same stream on every backend, and resuming at step k needs no state beyond k. */
#ifndef MF_RNG_H
#define MF_RNG_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Purposes keep streams independent. Add new ones at the end; never renumber. */
enum {
    MF_RNG_SHUFFLE = 1, /* data order per epoch */
    MF_RNG_SPLIT = 2,   /* train/test split of image folders */
    MF_RNG_INIT = 3,    /* parameter initialisation */
    MF_RNG_NOISE = 4,   /* training noise */
    MF_RNG_TIME = 5,    /* training times t */
    MF_RNG_SAMPLE = 6,  /* sampling noise */
    MF_RNG_EVAL_SUBSET = 7, /* evaluation: random subsets of the reference set (step 0: precision/recall's
                               real set; step 1: the floor's training images) */
    MF_RNG_CLASS_DROP = 8,  /* training: which labels are dropped to the null class */
};

/* Philox4x32-10: counter (4 words) and key (2 words) -> 4 random words. */
void mf_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* Four 32-bit words for (seed, purpose, step, index). */
void mf_rng_u32x4(uint64_t seed, uint32_t purpose, uint64_t step, uint32_t index, uint32_t out[4]);
/* Uniform in [0, 1) from a 32-bit word (24-bit mantissa, exact in float). */
static inline float mf_u32_to_unit(uint32_t x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }
/* Fill n floats: uniform [0,1) or standard normal (Box-Muller on pairs), for (seed, purpose, step). */
void mf_rng_uniform(uint64_t seed, uint32_t purpose, uint64_t step, float *out, int64_t n);
void mf_rng_normal(uint64_t seed, uint32_t purpose, uint64_t step, float *out, int64_t n);
/* Deterministic permutation of 0..n-1 (Fisher-Yates, unbiased) for (seed, purpose, step). */
void mf_rng_permutation(uint64_t seed, uint32_t purpose, uint64_t step, int64_t *perm, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
