/* mf_quant.h - the one conversion between float images in the data range [-1, 1] and the unsigned
 * bytes that sample files hold (samples/samples.idx3-ubyte): the sample stage writes with
 * mf_quant_u8, every reader of bytes (the eval stage, from an IDX file, a PNG grid or a run's own
 * samples) converts back with mf_dequant_u8, so a metric measured inside a run equals the one measured
 * later from the file. mf_quant_u8(mf_dequant_u8(b)) == b for every byte b. */
#ifndef MF_QUANT_H
#define MF_QUANT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* v in [-1, 1] -> round((v + 1) / 2 * 255), clamped to [0, 255]; NaN gives 0. */
static inline uint8_t mf_quant_u8(float v) {
    float q = (v + 1.0f) * 0.5f * 255.0f + 0.5f;
    return (uint8_t)(q > 0 ? (q > 255 ? 255 : q) : 0); /* q > 0 is false for NaN */
}
/* b -> b / 127.5 - 1 (the float an IDX reader hands to the feature network). */
static inline float mf_dequant_u8(uint8_t b) { return b / 127.5f - 1.0f; }

/* n floats -> n bytes (mf_quant_u8 each). */
void mf_quant_u8_n(const float *x, int64_t n, uint8_t *out);
/* n bytes -> n floats (mf_dequant_u8 each). */
void mf_dequant_u8_n(const uint8_t *b, int64_t n, float *out);
/* In place: x[i] = mf_dequant_u8(mf_quant_u8(x[i])), what a round trip through a sample file gives. */
void mf_quant_roundtrip(float *x, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
