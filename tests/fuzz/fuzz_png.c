/* fuzz_png.c - libFuzzer target for the PNG reader (core/mf_png.c: mf_png_read through libpng) and
 * the PNG-folder loader of the data stage (stages/data/png_folder.c: data_load_png_folder, which
 * decodes, checks sizes, detects colour, resamples and splits).
 *
 * Input: one mode byte, then the PNG file.
 *   bit 0      channels for mf_png_read: 1 or 3 (the file is also read with the other count by
 *              mf_png_read_max with a 64-pixel limit)
 *   bit 1      also load a folder holding the input next to a fixed valid 3x2 image
 *   bits 2-3   folder channels: auto, 1, 3, auto
 *   bits 4-5   folder image_size: 0 (all sizes must match), 5, 28, 1
 *   bit 6      layout: flat (labels auto) or one sub-folder per class (labels subfolders)
 *   bit 7      test_fraction 0 or 0.5 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "data_internal.h"
#include "fuzz_util.h"
#include "mf_dataset.h"
#include "mf_error.h"
#include "mf_io.h"
#include "mf_log.h"

static char in_path[600], flat_dir[600], flat_a[700], cls_dir[600], cls_a[700];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *d = fz_scratch("png");
    char p[700];
    static const uint8_t fixed[3 * 2 * 3] = {0, 0, 0, 90, 90, 90, 255, 255, 255,
                                             10, 200, 30, 40, 50, 60, 70, 80, 90};
    mf_log_set_quiet(1);
    snprintf(in_path, sizeof in_path, "%s/in.png", d);
    snprintf(flat_dir, sizeof flat_dir, "%s/flat", d);
    snprintf(cls_dir, sizeof cls_dir, "%s/classes", d);
    snprintf(flat_a, sizeof flat_a, "%s/a.png", flat_dir);
    snprintf(cls_a, sizeof cls_a, "%s/one/a.png", cls_dir);
    if (mf_mkdirs(flat_dir) || mf_mkdirs(cls_dir)) abort();
    snprintf(p, sizeof p, "%s/one", cls_dir);
    if (mf_mkdirs(p)) abort();
    snprintf(p, sizeof p, "%s/two", cls_dir);
    if (mf_mkdirs(p)) abort();
    snprintf(p, sizeof p, "%s/b.png", flat_dir);
    if (mf_png_write(p, 3, 2, 3, fixed)) abort();
    snprintf(p, sizeof p, "%s/two/b.png", cls_dir);
    if (mf_png_write(p, 3, 2, 3, fixed)) abort();
    return 0;
}

static void read_png(const char *path, int channels, uint64_t max_pixels) {
    int w = 0, h = 0;
    uint8_t *px = NULL;
    if ((max_pixels ? mf_png_read_max(path, channels, max_pixels, "fuzz.max", &w, &h, &px)
                    : mf_png_read(path, channels, &w, &h, &px)) != 0) {
        (void)mf_last_error();
        return;
    }
    if (w < 1 || h < 1 || !px || (max_pixels && (uint64_t)w * (uint64_t)h > max_pixels)) abort();
    volatile uint8_t x = px[(size_t)w * (size_t)h * (size_t)channels - 1]; /* ASan: all there */
    (void)x;
    free(px);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int mode = data[0];
    mf_error_clear();
    fz_write(in_path, data + 1, size - 1);
    int ch = mode & 1 ? 3 : 1;
    read_png(in_path, ch, 0);
    read_png(in_path, 4 - ch, 64); /* mf_png_read_max with a 64-pixel limit */
    if (!(mode & 2)) return 0;

    static const int chans[4] = {0, 1, 3, 0}, sizes[4] = {0, 5, 28, 1};
    int classes = (mode >> 6) & 1;
    fz_write(classes ? cls_a : flat_a, data + 1, size - 1);
    data_folder_opts o = {
        .root = classes ? cls_dir : flat_dir,
        .key = "data",
        .channels = chans[(mode >> 2) & 3],
        .image_size = sizes[(mode >> 4) & 3],
        .test_fraction = mode & 128 ? 0.5 : 0.0,
        .labels = classes ? DATA_LABELS_SUBFOLDERS : DATA_LABELS_AUTO,
        .seed = 7,
        .max_images = 10,
        .max_bytes = 1 << 24,
        .max_pixels = 1 << 20,
    };
    mf_dataset *ds = mf_xcalloc(1, sizeof *ds);
    if (data_load_png_folder(&o, ds) == 0) {
        if (ds->C < 1 || ds->H < 1 || ds->W < 1 || ds->train.n + ds->test.n != 2) abort();
        size_t per = (size_t)ds->C * (size_t)ds->H * (size_t)ds->W;
        for (int64_t i = 0; i < ds->train.n; i++)
            for (size_t j = 0; j < per; j++) {
                float v = ds->train.x[(size_t)i * per + j];
                if (!(v >= -1.0001f && v <= 1.0001f)) abort(); /* pixels map to [-1, 1] */
            }
    } else {
        (void)mf_last_error();
    }
    mf_dataset_free(ds);
    /* leave the folder as it was: the input file stays but is rewritten each run */
    unlink(classes ? cls_a : flat_a);
    return 0;
}
