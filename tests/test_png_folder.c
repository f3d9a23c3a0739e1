/* test_png_folder.c - unit tests of the data stage's image-folder loader (stages/data/png_folder.c,
 * compiled into this program by #include so no CMake change is needed): labels from sub-folders,
 * channel detection, resizing, the seeded split, and errors that name the file or folder. */
#include "../stages/data/png_folder.c"

#include <unistd.h>

#include "mf_test.h"

static char g_dir[600];

/* Fixture paths are short: the temp dir plus a few characters. */

static void wpng(const char *rel, int w, int h, int c, const uint8_t *px) {
    char path[1024];
    snprintf(path, sizeof path, "%.600s/%.300s", g_dir, rel);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    mkdir(path, 0777);
    *slash = '/';
    if (mf_png_write(path, w, h, c, px) != 0) {
        fprintf(stderr, "cannot write fixture %s: %s\n", path, mf_last_error());
        exit(2);
    }
}

static void wfile(const char *rel, const char *text) {
    char path[1024];
    snprintf(path, sizeof path, "%.600s/%.300s", g_dir, rel);
    FILE *f = fopen(path, "wb");
    if (!f) exit(2);
    fputs(text, f);
    fclose(f);
}

/* A fresh sub-folder of the test's temp dir; returns its path (static). */
static const char *fresh(const char *name) {
    const char *tmp = mf_test_tmpdir();
    if (strlen(tmp) + strlen(name) + 2 > sizeof g_dir) exit(2);
    snprintf(g_dir, sizeof g_dir, "%.500s/%.90s", tmp, name);
    mkdir(g_dir, 0777);
    return g_dir;
}

static data_folder_opts opts(const char *root) {
    data_folder_opts o = {root, "data", 0, 0, 0.0, DATA_LABELS_AUTO, 7, 10000000, 1 << 30, 4096 * 4096};
    return o;
}

static mf_dataset *load(const data_folder_opts *o, int *rc) {
    mf_dataset *ds = mf_xcalloc(1, sizeof *ds);
    mf_error_clear();
    *rc = data_load_png_folder(o, ds);
    return ds;
}

int main(void) {
    uint8_t ramp[16], white[16], rgb[48], wide[24];
    for (int i = 0; i < 16; i++) {
        static const uint8_t r[4] = {0, 64, 128, 255};
        ramp[i] = r[i % 4];
        white[i] = 255;
        rgb[3 * i] = 255, rgb[3 * i + 1] = 0, rgb[3 * i + 2] = (uint8_t)(i * 16);
    }
    memset(wide, 10, sizeof wide);
    int rc;

    /* Labeled: two classes, sorted names, upper-case extension, a non-PNG file ignored. */
    const char *root = fresh("labeled");
    wpng("b/2.png", 4, 4, 1, white);
    wpng("a/1.png", 4, 4, 1, ramp);
    wpng("a/0.PNG", 4, 4, 1, white);
    wfile("b/notes.txt", "not an image");
    data_folder_opts o = opts(root);
    mf_dataset *ds = load(&o, &rc);
    CHECK_MSG(rc == 0, "%s", mf_last_error());
    CHECK(ds->num_classes == 2 && ds->class_names && !strcmp(ds->class_names[0], "a") &&
          !strcmp(ds->class_names[1], "b"));
    CHECK(ds->C == 1 && ds->H == 4 && ds->W == 4);
    CHECK(ds->train.n == 3 && ds->test.n == 0);
    CHECK(ds->train.y[0] == 0 && ds->train.y[1] == 0 && ds->train.y[2] == 1);
    CHECK_NEAR(ds->train.x[0], 1.0, 1e-6);            /* a/0.PNG (white) sorts first */
    CHECK_NEAR(ds->train.x[16 + 0], -1.0, 1e-6);      /* a/1.png ramp: 0 */
    CHECK_NEAR(ds->train.x[16 + 1], 64 / 127.5 - 1, 1e-6);
    CHECK_NEAR(ds->train.x[16 + 3], 1.0, 1e-6);
    CHECK(strcmp(ds->name, "labeled") == 0);
    mf_dataset_free(ds);

    /* labels: none takes the sub-folders' images unlabeled; subfolders without any is an error. */
    o.labels = DATA_LABELS_NONE;
    ds = load(&o, &rc);
    CHECK(rc == 0 && ds->num_classes == 0 && ds->train.n == 3 && ds->train.y[0] == -1);
    mf_dataset_free(ds);

    /* Auto channels: one color image makes C = 3; gray ones are replicated. */
    root = fresh("color");
    wpng("x0.png", 4, 4, 1, ramp);
    wpng("x1.png", 4, 4, 3, rgb);
    o = opts(root);
    ds = load(&o, &rc);
    CHECK_MSG(rc == 0, "%s", mf_last_error());
    CHECK(ds->C == 3 && ds->num_classes == 0 && ds->train.n == 2 && ds->train.y[0] == -1);
    CHECK_NEAR(ds->train.x[1], ds->train.x[16 + 1], 1e-6); /* gray replicated into R and G */
    CHECK_NEAR(ds->train.x[48 + 0], 1.0, 1e-6);            /* x1: R = 255 */
    CHECK_NEAR(ds->train.x[48 + 16], -1.0, 1e-6);          /* x1: G = 0 */
    mf_dataset_free(ds);
    o.channels = 1;
    ds = load(&o, &rc);
    CHECK(rc == 0 && ds->C == 1);
    mf_dataset_free(ds);

    /* labels: subfolders on a flat folder is an error naming the folder. */
    o.labels = DATA_LABELS_SUBFOLDERS;
    ds = load(&o, &rc);
    CHECK(rc != 0);
    CHECK_ERR_CONTAINS(root);
    mf_dataset_free(ds);

    /* Sizes must match unless image_size is set; resizing: area average down, constant stays. */
    root = fresh("sizes");
    wpng("a.png", 4, 4, 1, ramp);
    wpng("b.png", 6, 4, 1, wide);
    o = opts(root);
    ds = load(&o, &rc);
    CHECK(rc != 0);
    CHECK_ERR_CONTAINS("b.png is 6x4");
    mf_dataset_free(ds);
    o.image_size = 2;
    ds = load(&o, &rc);
    CHECK_MSG(rc == 0, "%s", mf_last_error());
    CHECK(ds->H == 2 && ds->W == 2 && ds->train.n == 2);
    CHECK_NEAR(ds->train.x[0], 32 / 127.5 - 1, 1e-5);     /* mean of 0 and 64 */
    CHECK_NEAR(ds->train.x[1], 191.5 / 127.5 - 1, 1e-5);  /* mean of 128 and 255 */
    CHECK_NEAR(ds->train.x[4 + 3], 10 / 127.5 - 1, 1e-5); /* constant image stays constant */
    mf_dataset_free(ds);
    o.image_size = 8; /* enlarging: bilinear, ends clamped */
    ds = load(&o, &rc);
    CHECK(rc == 0 && ds->H == 8);
    CHECK_NEAR(ds->train.x[0], -1.0, 1e-5);
    CHECK_NEAR(ds->train.x[7], 1.0, 1e-5);
    mf_dataset_free(ds);

    /* An unreadable PNG: the error names it. */
    root = fresh("broken");
    wpng("a.png", 4, 4, 1, ramp);
    wfile("b.png", "\x89PNG\r\n\x1a\n this is not really a PNG");
    o = opts(root);
    ds = load(&o, &rc);
    CHECK(rc != 0);
    CHECK_ERR_CONTAINS("b.png");
    mf_dataset_free(ds);

    /* No PNGs at all. */
    root = fresh("empty");
    wfile("readme.txt", "nothing here");
    o = opts(root);
    ds = load(&o, &rc);
    CHECK(rc != 0);
    CHECK_ERR_CONTAINS("no PNG files");
    mf_dataset_free(ds);

    /* Split: floor(10 * 0.3) = 3 test images, deterministic per seed, train and test disjoint. */
    root = fresh("split");
    for (int i = 0; i < 10; i++) {
        char rel[32];
        uint8_t px[16];
        memset(px, i * 20, sizeof px);
        snprintf(rel, sizeof rel, "img%02d.png", i);
        wpng(rel, 4, 4, 1, px);
    }
    o = opts(root);
    o.test_fraction = 0.3;
    mf_dataset *d1 = load(&o, &rc);
    CHECK(rc == 0 && d1->train.n == 7 && d1->test.n == 3);
    mf_dataset *d2 = load(&o, &rc);
    CHECK(rc == 0 && memcmp(d1->test.x, d2->test.x, 3 * 16 * sizeof(float)) == 0);
    int seen[10] = {0};
    for (int64_t i = 0; i < d1->train.n; i++) seen[(int)lrintf((d1->train.x[i * 16] + 1) * 127.5f) / 20]++;
    for (int64_t i = 0; i < d1->test.n; i++) seen[(int)lrintf((d1->test.x[i * 16] + 1) * 127.5f) / 20]++;
    int all_once = 1;
    for (int i = 0; i < 10; i++) all_once &= seen[i] == 1;
    CHECK(all_once);
    mf_dataset_free(d1);
    mf_dataset_free(d2);
    o.test_fraction = 0.9;
    ds = load(&o, &rc);
    CHECK(rc == 0 && ds->train.n == 1 && ds->test.n == 9);
    mf_dataset_free(ds);

    /* Inputs stay bounded: image count, pixels per image, decoded bytes. */
    root = fresh("limits");
    uint8_t px64[64 * 64] = {0};
    wpng("a.png", 4, 4, 1, white);
    wpng("b.png", 4, 4, 1, white);
    wpng("c.png", 64, 64, 1, px64);
    o = opts(root);
    o.image_size = 4;
    o.max_images = 2;
    ds = load(&o, &rc);
    CHECK(rc != 0);
    CHECK_ERR_CONTAINS("holds 3 PNG files, more than the limit of 2; raise data.max_images to accept it");
    mf_dataset_free(ds);
    o.max_images = 3;
    o.max_pixels = 1000;
    ds = load(&o, &rc);
    CHECK(rc != 0);
    CHECK_ERR_CONTAINS("c.png: the header (IHDR) declares 64x64 = 4096 pixels, more than the limit of 1000; raise "
                       "data.max_image_pixels");
    mf_dataset_free(ds);
    o.max_pixels = 4096;
    o.max_bytes = 90; /* decoded with 3 channels: 48 bytes per 4x4 image */
    ds = load(&o, &rc);
    CHECK(rc != 0);
    CHECK_ERR_CONTAINS("b.png: the PNGs of");
    CHECK_ERR_CONTAINS("decode to more than 90 bytes up to this one (2 of 3 files), the limit; raise data.max_bytes");
    mf_dataset_free(ds);
    o.max_bytes = 500000;
    o.image_size = 512; /* 3 x 512 x 512 values: over the limit */
    ds = load(&o, &rc);
    CHECK(rc != 0);
    CHECK_ERR_CONTAINS("3 images of 1x512x512 are 786432 values");
    mf_dataset_free(ds);
    o.image_size = 4;
    ds = load(&o, &rc);
    CHECK_MSG(rc == 0 && ds->train.n == 3, "%s", mf_last_error());
    mf_dataset_free(ds);

    /* Symbolic links: followed inside the folder, refused outside it and in loops; FIFOs refused. */
    const char *outside = fresh("outside");
    wpng("x.png", 4, 4, 1, ramp);
    char out_png[700], out_dir[700], lnk[800];
    snprintf(out_png, sizeof out_png, "%s/x.png", outside);
    snprintf(out_dir, sizeof out_dir, "%s", outside);
    root = fresh("links");
    wpng("a/1.png", 4, 4, 1, white);
    snprintf(lnk, sizeof lnk, "%s/a/2.png", root);
    CHECK(symlink("1.png", lnk) == 0); /* inside: fine */
    o = opts(root);
    ds = load(&o, &rc);
    CHECK_MSG(rc == 0 && ds->train.n == 2, "%s", mf_last_error());
    mf_dataset_free(ds);
    snprintf(lnk, sizeof lnk, "%s/a/3.png", root);
    CHECK(symlink(out_png, lnk) == 0);
    ds = load(&o, &rc);
    CHECK(rc != 0);
    CHECK_ERR_CONTAINS("a/3.png is a symbolic link to ");
    CHECK_ERR_CONTAINS("outside/x.png, outside the data-set folder");
    mf_dataset_free(ds);
    unlink(lnk);
    snprintf(lnk, sizeof lnk, "%s/b", root);
    CHECK(symlink(out_dir, lnk) == 0); /* a class folder elsewhere */
    ds = load(&o, &rc);
    CHECK(rc != 0);
    CHECK_ERR_CONTAINS("/b is a symbolic link to ");
    mf_dataset_free(ds);
    unlink(lnk);
    CHECK(symlink(".", lnk) == 0); /* a loop: the root again */
    ds = load(&o, &rc);
    CHECK(rc != 0);
    CHECK_ERR_CONTAINS("/b is the folder ");
    CHECK_ERR_CONTAINS("itself (a symbolic link loop)");
    mf_dataset_free(ds);
    unlink(lnk);
    CHECK(symlink("a", lnk) == 0); /* the same class twice */
    ds = load(&o, &rc);
    CHECK(rc != 0);
    CHECK_ERR_CONTAINS("/b is the same folder as ");
    mf_dataset_free(ds);
    unlink(lnk);
    snprintf(lnk, sizeof lnk, "%s/a/fifo.png", root);
    CHECK(mkfifo(lnk, 0600) == 0);
    ds = load(&o, &rc);
    CHECK(rc != 0);
    CHECK_ERR_CONTAINS("a/fifo.png is not a regular file");
    mf_dataset_free(ds);
    unlink(lnk);

    return mf_test_summary("test_png_folder");
}
