/* cuda_rng.cu - standard normals on the device from the Philox4x32-10 stream of core/mf_rng.c: value j is
 * the j-th value of mf_rng_normal (block j/2, Box-Muller in double on 53-bit uniforms). The math is one
 * __host__ __device__ function, so that a host-only program can check it against the C reference. */
#include <math.h>

#include "cuda_internal.h"
#include "cuda_kernels.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

/* Philox4x32-10 of counter {index, purpose, step lo, step hi} under key {seed lo, seed hi}, the key
 * bumped before every round but the first (mf_philox4x32). */
static __host__ __device__ inline void philox_block(uint64_t seed, uint32_t purpose, uint64_t step,
                                                    uint32_t index, uint32_t out[4]) {
    uint32_t c0 = index, c1 = purpose, c2 = (uint32_t)step, c3 = (uint32_t)(step >> 32);
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
    for (int r = 0; r < 10; r++) {
        if (r > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        const uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
        const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        const uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c0 = n0;
        c1 = (uint32_t)p1;
        c2 = n2;
        c3 = (uint32_t)p0;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* The pair of normals of block b (mf_rng_normal): u1 in (0, 1], u2 in [0, 1), r = sqrt(-2 ln u1),
 * th = 2 pi u2; v[0] = r cos th, v[1] = r sin th, all in double, rounded once to float. */
static __host__ __device__ inline void normal_pair(uint64_t seed, uint32_t purpose, uint64_t step, uint32_t b,
                                                   float v[2]) {
    const double two_pi = 6.283185307179586476925286766559;
    const double inv53 = 1.0 / 9007199254740992.0;
    uint32_t w[4];
    philox_block(seed, purpose, step, b, w);
    const uint64_t a = ((uint64_t)w[0] << 21) | (w[1] >> 11);
    const uint64_t bb = ((uint64_t)w[2] << 21) | (w[3] >> 11);
    const double u1 = (double)(a + 1) * inv53;
    const double u2 = (double)bb * inv53;
    const double r = sqrt(-2.0 * log(u1));
    const double th = two_pi * u2;
    v[0] = (float)(r * cos(th));
    v[1] = (float)(r * sin(th));
}

/* One thread per block b (a pair of outputs); nb = ceil(n / 2) blocks. */
static __global__ void randn_k(uint64_t seed, uint32_t purpose, uint64_t step, int64_t n, float *out) {
    const int64_t nb = (n + 1) / 2;
    for (int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; b < nb; b += (int64_t)gridDim.x * blockDim.x) {
        float v[2];
        normal_pair(seed, purpose, step, (uint32_t)b, v);
        out[2 * b] = v[0];
        if (2 * b + 1 < n) out[2 * b + 1] = v[1];
    }
}

void mfcu_randn(mf_backend *be, uint64_t seed, uint32_t purpose, uint64_t step, int64_t n, float *out) {
    if (n <= 0 || mfcu_enter(be)) return;
    if (n > (int64_t)2 * ((int64_t)UINT32_MAX + 1)) {
        mfcu_record_error(be, __FILE__, __LINE__, "randn", "more values than the Philox stream has blocks");
        return;
    }
    const int threads = 256;
    randn_k<<<mfcu_blocks((n + 1) / 2, threads), threads, 0, mfcu_stream(be)>>>(seed, purpose, step, n, out);
    MFCU_LAUNCHED(be, "randn_k");
}
