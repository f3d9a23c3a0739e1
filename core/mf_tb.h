/* mf_tb.h - TensorBoard event files (docs/interop.md): TFRecord framing (u64 length, masked CRC-32C
 * of the length, data, masked CRC-32C of the data) of tensorflow.Event protocol buffers: a first
 * record with file_version "brain.Event:2", then scalar summaries (simple_value) and PNG image
 * summaries. Every record is flushed when written, so a killed run keeps what it logged. */
#ifndef MF_TB_H
#define MF_TB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mf_tb mf_tb;

/* CRC-32C (Castagnoli, reflected, as TFRecord uses) and TFRecord's mask of it. */
uint32_t mf_crc32c(const void *data, size_t n);
static inline uint32_t mf_crc32c_mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

/* Create <dir> (and parents) and <dir>/events.out.tfevents.<unix seconds>.<host>.<pid>, and write the
 * version record. 0, or -1 with mf_fail. The path goes to path_out when not NULL. */
int mf_tb_open(const char *dir, mf_tb **out, char *path_out, size_t cap);
void mf_tb_close(mf_tb *tb);
int mf_tb_scalar(mf_tb *tb, const char *tag, int64_t step, double wall_time, float value);
/* An image summary of an encoded PNG (width, height and colour type read from its header). */
int mf_tb_image_png(mf_tb *tb, const char *tag, int64_t step, double wall_time, const uint8_t *png, size_t n);
/* One metrics.jsonl record of `stage` (the flat JSON fields mf_json_* write) as scalars: a record with
 * an integer "step" gives "<stage>/<key>" for each other number (time excluded); a record with a
 * string "metric" and a number "value" gives "<stage>/<metric>" at *last_step; others (events) are
 * skipped. A "step" seen updates *last_step. */
int mf_tb_metrics(mf_tb *tb, const char *stage, double wall_time, const char *fields, int64_t *last_step);

#ifdef __cplusplus
}
#endif
#endif
