/* mf_quant.c - float images <-> the bytes of sample files (mf_quant.h). */
#include "mf_quant.h"

void mf_quant_u8_n(const float *x, int64_t n, uint8_t *out) {
    for (int64_t i = 0; i < n; i++) out[i] = mf_quant_u8(x[i]);
}

void mf_dequant_u8_n(const uint8_t *b, int64_t n, float *out) {
    for (int64_t i = 0; i < n; i++) out[i] = mf_dequant_u8(b[i]);
}

void mf_quant_roundtrip(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = mf_dequant_u8(mf_quant_u8(x[i]));
}
