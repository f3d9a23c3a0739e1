/* mf_safetensors.h - the safetensors file format (Hugging Face): a writer and a strict reader that
 * refuses hostile files with errors naming the file and the byte offset or tensor. The first piece of
 * weight export/import; nothing else in mfpipe depends on it yet. */
#ifndef MF_SAFETENSORS_H
#define MF_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MF_ST_MAX_DIMS 8
#define MF_ST_MAX_HEADER 100000000ull /* bytes of JSON header refused beyond this (as safetensors does) */

/* One tensor to write. dtype: "F32", "F16", "BF16", "F64", "I32", "I64" or "U8". data holds nbytes =
 * numel * dtype size bytes in little-endian order (data may be NULL when nbytes is 0). ndim 0..8. */
typedef struct mf_st_tensor {
    const char *name;
    const char *dtype;
    int ndim;
    int64_t shape[MF_ST_MAX_DIMS];
    const void *data;
    size_t nbytes;
} mf_st_tensor;

/* Write n tensors and n_meta metadata pairs (meta_kv = {key0, value0, key1, value1, ...}; may be NULL
 * when n_meta is 0) atomically. Tensors appear in the header and the data buffer in the given order;
 * "__metadata__" comes first and is omitted when n_meta is 0. The header is compact JSON padded with
 * spaces so that the data starts at a multiple of 8. Names must be non-empty, unique, valid UTF-8 and
 * not "__metadata__"; metadata keys unique. Returns 0, or -1 with mf_fail. */
int mf_st_write(const char *path, const mf_st_tensor *t, int n, const char *const *meta_kv, int n_meta);

/* Bytes per element of a dtype name, 0 when unknown. */
int mf_st_dtype_size(const char *dtype);

/* A tensor of an opened file. data points into the file's mapping (valid until mf_st_close); it is
 * aligned only as far as its offset allows (the data buffer itself starts 8-aligned). */
typedef struct mf_st_entry {
    char *name;
    char dtype[8];
    int dtype_size;
    int ndim;
    int64_t shape[MF_ST_MAX_DIMS];
    uint64_t numel;
    uint64_t begin, end; /* data_offsets, relative to the data buffer */
    const void *data;
    size_t nbytes;
} mf_st_entry;

typedef struct mf_st_file {
    char *path;
    void *map;             /* the whole file, mapped read-only */
    size_t size;
    size_t data_start;     /* 8 + header length */
    mf_st_entry *entries;  /* in header order */
    int n;
    char **meta;           /* meta[2i] key, meta[2i+1] value, in header order */
    int n_meta;
} mf_st_file;

/* Map and validate a whole file: header length within the file and <= MF_ST_MAX_HEADER, header valid
 * UTF-8 and strict JSON (objects, strings, non-negative integers, arrays), known dtypes, at most 8
 * dimensions, no overflow of the element count, data_offsets matching dtype size * numel, inside the
 * data buffer, which they must cover exactly once (no gap, no overlap, nothing left over), unique
 * names, string metadata values. On failure *f is zeroed and -1 returned with mf_fail. */
int mf_st_open(const char *path, mf_st_file *f);
/* The tensor called name, NULL if none. */
const mf_st_entry *mf_st_find(const mf_st_file *f, const char *name);
/* The metadata value of key, NULL if none. */
const char *mf_st_meta(const mf_st_file *f, const char *key);
void mf_st_close(mf_st_file *f);

#ifdef __cplusplus
}
#endif
#endif
