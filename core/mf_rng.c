/* mf_rng.c - counter-based random numbers: Philox4x32-10 (Salmon et al., SC'11; as in Random123)
 * and the derived uniform, normal and permutation streams. Every value is a pure function of
 * (seed, purpose, step, index), so results never depend on threads, backends or resume points. */
#include <math.h>
#include <stdint.h>

#include "mf_error.h"
#include "mf_rng.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u /* golden ratio */
#define PHILOX_W1 0xBB67AE85u /* sqrt(3) - 1 */

static inline void philox_round(uint32_t c[4], const uint32_t k[2]) {
    uint64_t p0 = (uint64_t)PHILOX_M0 * c[0];
    uint64_t p1 = (uint64_t)PHILOX_M1 * c[2];
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    uint32_t n0 = hi1 ^ c[1] ^ k[0];
    uint32_t n2 = hi0 ^ c[3] ^ k[1];
    c[0] = n0;
    c[1] = lo1;
    c[2] = n2;
    c[3] = lo0;
}

void mf_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
    uint32_t k[2] = {key[0], key[1]};
    for (int r = 0; r < 10; r++) {
        if (r > 0) { /* the key is bumped before every round but the first */
            k[0] += PHILOX_W0;
            k[1] += PHILOX_W1;
        }
        philox_round(c, k);
    }
    out[0] = c[0];
    out[1] = c[1];
    out[2] = c[2];
    out[3] = c[3];
}

/* Stream layout (part of the on-disk reproducibility contract; never change):
 *   key     = { seed & 0xffffffff, seed >> 32 }
 *   counter = { index, purpose, step & 0xffffffff, step >> 32 }
 * so (seed, purpose, step) selects a stream of 2^32 blocks of four words, addressed by index. */
void mf_rng_u32x4(uint64_t seed, uint32_t purpose, uint64_t step, uint32_t index, uint32_t out[4]) {
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    const uint32_t ctr[4] = {index, purpose, (uint32_t)step, (uint32_t)(step >> 32)};
    mf_philox4x32(ctr, key, out);
}

/* out[i] comes from block i / 4, word i % 4. */
void mf_rng_uniform(uint64_t seed, uint32_t purpose, uint64_t step, float *out, int64_t n) {
    MF_ASSERT(n >= 0 && (out || n == 0));
    MF_ASSERT(n <= (int64_t)4 * ((int64_t)UINT32_MAX + 1));
    uint32_t r[4];
    for (int64_t i = 0; i < n; i += 4) {
        mf_rng_u32x4(seed, purpose, step, (uint32_t)(i / 4), r);
        int64_t m = n - i < 4 ? n - i : 4;
        for (int64_t j = 0; j < m; j++) out[i + j] = mf_u32_to_unit(r[j]);
    }
}

/* Box-Muller on 53-bit uniforms: block b = i / 2 gives u1 = (((w0 << 21) | (w1 >> 11)) + 1) / 2^53
 * in (0, 1] (so log never sees 0) and u2 = ((w2 << 21) | (w3 >> 11)) / 2^53 in [0, 1);
 * out[2b] = r cos(2 pi u2), out[2b+1] = r sin(2 pi u2), r = sqrt(-2 ln u1), computed in double. */
void mf_rng_normal(uint64_t seed, uint32_t purpose, uint64_t step, float *out, int64_t n) {
    MF_ASSERT(n >= 0 && (out || n == 0));
    MF_ASSERT(n <= (int64_t)2 * ((int64_t)UINT32_MAX + 1));
    const double two_pi = 6.283185307179586476925286766559;
    const double inv53 = 1.0 / 9007199254740992.0; /* 2^-53 */
    uint32_t w[4];
    for (int64_t i = 0; i < n; i += 2) {
        mf_rng_u32x4(seed, purpose, step, (uint32_t)(i / 2), w);
        uint64_t a = ((uint64_t)w[0] << 21) | (w[1] >> 11);
        uint64_t b = ((uint64_t)w[2] << 21) | (w[3] >> 11);
        double u1 = (double)(a + 1) * inv53;
        double u2 = (double)b * inv53;
        double r = sqrt(-2.0 * log(u1));
        double th = two_pi * u2;
        out[i] = (float)(r * cos(th));
        if (i + 1 < n) out[i + 1] = (float)(r * sin(th));
    }
}

/* Sequential words of the (seed, purpose, step) stream: block 0 words 0..3, block 1, ... */
typedef struct word_stream {
    uint64_t seed, step;
    uint32_t purpose, block;
    uint32_t w[4];
    int pos;
} word_stream;

static uint32_t next_word(word_stream *s) {
    if (s->pos == 4) {
        mf_rng_u32x4(s->seed, s->purpose, s->step, s->block++, s->w);
        s->pos = 0;
    }
    return s->w[s->pos++];
}

/* Uniform integer in [0, bound), bound >= 1, without bias (Lemire, "Fast random integer generation
 * in an interval", 2019: multiply, and reject the few low products that would favour some values). */
static uint32_t bounded(word_stream *s, uint32_t bound) {
    uint64_t m = (uint64_t)next_word(s) * bound;
    uint32_t low = (uint32_t)m;
    if (low < bound) {
        uint32_t threshold = (uint32_t)(-bound) % bound; /* 2^32 mod bound */
        while (low < threshold) {
            m = (uint64_t)next_word(s) * bound;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

/* Fisher-Yates (Durstenfeld): start from the identity, for i = n-1 down to 1 swap perm[i] with
 * perm[j], j uniform in [0, i], drawing 32-bit words in order from the stream. */
void mf_rng_permutation(uint64_t seed, uint32_t purpose, uint64_t step, int64_t *perm, int64_t n) {
    MF_ASSERT(n >= 0 && (perm || n == 0) && n <= (int64_t)UINT32_MAX);
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    word_stream s = {.seed = seed, .step = step, .purpose = purpose, .block = 0, .pos = 4};
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)bounded(&s, (uint32_t)(i + 1));
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}
