/* png_folder.c - the data stage's `dataset: folder`: every PNG of a folder (root/NAME.png, or
 * root/CLASS/NAME.png with class labels), decoded in sorted name order, optionally resized to a
 * square, and split into train/test by a permutation keyed by the run seed. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "data_internal.h"
#include "mf_error.h"
#include "mf_io.h"
#include "mf_log.h"
#include "mf_rng.h"

typedef struct strlist {
    char **s;
    int n, cap;
} strlist;

static void sl_push(strlist *l, char *s) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->s = mf_xrealloc(l->s, (size_t)l->cap * sizeof *l->s);
    }
    l->s[l->n++] = s;
}

static void sl_free(strlist *l) {
    for (int i = 0; i < l->n; i++) free(l->s[i]);
    free(l->s);
    memset(l, 0, sizeof *l);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_png_name(const char *name) {
    size_t n = strlen(name);
    return n > 4 && strcasecmp(name + n - 4, ".png") == 0;
}

/* Is the resolved path `real` inside the folder `root_real` (both from realpath)? */
static bool inside(const char *real, const char *root_real) {
    size_t l = strlen(root_real);
    if (l == 1 && root_real[0] == '/') return true;
    return strncmp(real, root_real, l) == 0 && (real[l] == '/' || real[l] == '\0');
}

/* Names (not paths) in dir: PNG files into pngs, sub-folders into dirs (either may be NULL); hidden
 * entries are skipped; both lists sorted bytewise. Symbolic links are followed only when they
 * resolve inside the data-set folder root_real: one that leads outside is an error (so is a *.png
 * that is not a regular file, e.g. a FIFO); dangling links are skipped. */
static int list_dir(const char *dir, const char *root_real, strlist *pngs, strlist *dirs) {
    DIR *d = opendir(dir);
    if (!d) return mf_fail("data: cannot open folder %s: %s", dir, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char *path = mf_xasprintf("%s/%s", dir, e->d_name);
        struct stat st, lst;
        bool ok = stat(path, &st) == 0;
        if (ok && lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode) && (S_ISDIR(st.st_mode) || is_png_name(e->d_name))) {
            char *real = realpath(path, NULL);
            if (!real || !inside(real, root_real))
                rc = mf_fail("data: %s is a symbolic link to %s, outside the data-set folder %s; links are "
                             "followed only inside it (copy the files, or point root at a folder that holds them)",
                             path, real ? real : "(unresolvable)", root_real);
            free(real);
        }
        if (rc == 0 && ok && pngs && is_png_name(e->d_name) && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
            rc = mf_fail("data: %s is not a regular file", path);
        free(path);
        if (rc || !ok) continue; /* !ok: dangling link */
        if (S_ISDIR(st.st_mode) && dirs) sl_push(dirs, mf_xstrdup(e->d_name));
        if (S_ISREG(st.st_mode) && pngs && is_png_name(e->d_name)) sl_push(pngs, mf_xstrdup(e->d_name));
    }
    closedir(d);
    if (rc) return -1;
    if (pngs && pngs->n > 1) qsort(pngs->s, (size_t)pngs->n, sizeof *pngs->s, cmp_str);
    if (dirs && dirs->n > 1) qsort(dirs->s, (size_t)dirs->n, sizeof *dirs->s, cmp_str);
    return 0;
}

typedef struct image {
    char *path;
    int label; /* class index or -1 */
    int w, h;
    uint8_t *px; /* (h, w, dc) interleaved, dc = decode channels */
} image;

typedef struct image_list {
    image *v;
    int64_t n, cap;
} image_list;

static void il_push(image_list *l, char *path, int label) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->v = mf_xrealloc(l->v, (size_t)l->cap * sizeof *l->v);
    }
    l->v[l->n++] = (image){path, label, 0, 0, NULL};
}

static void il_free(image_list *l) {
    for (int64_t i = 0; i < l->n; i++) {
        free(l->v[i].path);
        free(l->v[i].px);
    }
    free(l->v);
}

typedef struct dir_id {
    dev_t dev;
    ino_t ino;
    int i; /* -1 = the root, else the sub-folder's index */
} dir_id;

static int cmp_dir_id(const void *a, const void *b) {
    const dir_id *x = a, *y = b;
    if (x->dev != y->dev) return x->dev < y->dev ? -1 : 1;
    if (x->ino != y->ino) return x->ino < y->ino ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* Two names for one folder (a link to the root or to a sibling: a loop, or every image twice). */
static int check_distinct_dirs(const data_folder_opts *opt, const strlist *subs) {
    dir_id *v = mf_xcalloc((size_t)subs->n + 1, sizeof *v);
    int n = 0, rc = 0;
    struct stat st;
    if (stat(opt->root, &st) == 0) v[n++] = (dir_id){st.st_dev, st.st_ino, -1};
    for (int i = 0; i < subs->n; i++) {
        char *dir = mf_xasprintf("%s/%s", opt->root, subs->s[i]);
        if (stat(dir, &st) == 0) v[n++] = (dir_id){st.st_dev, st.st_ino, i};
        free(dir);
    }
    qsort(v, (size_t)n, sizeof *v, cmp_dir_id);
    for (int k = 1; k < n && rc == 0; k++) {
        if (v[k].dev != v[k - 1].dev || v[k].ino != v[k - 1].ino) continue;
        if (v[k - 1].i < 0)
            rc = mf_fail("data: %s/%s is the folder %s itself (a symbolic link loop); each folder is read once",
                         opt->root, subs->s[v[k].i], opt->root);
        else
            rc = mf_fail("data: %s/%s is the same folder as %s/%s (a symbolic link or a duplicate); each folder "
                         "is read once", opt->root, subs->s[v[k].i], opt->root, subs->s[v[k - 1].i]);
    }
    free(v);
    return rc;
}

/* Collect the files and (when labeled) the class names. */
static int collect(const data_folder_opts *opt, image_list *imgs, strlist *classes) {
    strlist top = {0}, subs = {0};
    char *root_real = realpath(opt->root, NULL);
    if (!root_real) return mf_fail("data: cannot open folder %s: %s", opt->root, strerror(errno));
    int rc = list_dir(opt->root, root_real, &top, &subs);
    if (rc == 0) rc = check_distinct_dirs(opt, &subs);
    /* Which sub-folders hold PNGs (their sorted names are the classes when labeled). */
    strlist *sub_pngs = mf_xcalloc((size_t)subs.n + 1, sizeof *sub_pngs);
    int n_with = 0;
    long long n_files = top.n;
    for (int i = 0; i < subs.n && rc == 0; i++) {
        char *dir = mf_xasprintf("%s/%s", opt->root, subs.s[i]);
        rc = list_dir(dir, root_real, &sub_pngs[i], NULL);
        free(dir);
        n_with += sub_pngs[i].n > 0;
        n_files += sub_pngs[i].n;
        if (rc == 0 && opt->max_images > 0 && n_files > opt->max_images)
            rc = mf_fail("data: %s holds more than %lld PNG files (counted up to %s/%s), the limit; raise "
                         "%s.max_images to accept it", opt->root, opt->max_images, opt->root, subs.s[i], opt->key);
    }
    if (rc == 0 && opt->max_images > 0 && n_files > opt->max_images)
        rc = mf_fail("data: %s holds %lld PNG files, more than the limit of %lld; raise %s.max_images to accept it",
                     opt->root, n_files, opt->max_images, opt->key);
    free(root_real);
    int mode = opt->labels;
    if (rc == 0 && mode == DATA_LABELS_AUTO) mode = n_with > 0 ? DATA_LABELS_SUBFOLDERS : DATA_LABELS_NONE;
    if (rc == 0 && mode == DATA_LABELS_SUBFOLDERS) {
        if (n_with == 0)
            rc = mf_fail("data: %s has no sub-folders with PNG files, but %s.labels is subfolders "
                         "(one sub-folder per class)", opt->root, opt->key);
        if (rc == 0 && top.n > 0)
            mf_warn("data: %s: ignoring %d PNG file(s) outside the class sub-folders (e.g. %s)",
                    opt->root, top.n, top.s[0]);
        for (int i = 0; i < subs.n && rc == 0; i++) {
            if (sub_pngs[i].n == 0) {
                mf_warn("data: %s/%s has no PNG files; not a class", opt->root, subs.s[i]);
                continue;
            }
            for (int j = 0; j < sub_pngs[i].n; j++)
                il_push(imgs, mf_xasprintf("%s/%s/%s", opt->root, subs.s[i], sub_pngs[i].s[j]),
                        classes->n);
            sl_push(classes, mf_xstrdup(subs.s[i]));
        }
    } else if (rc == 0) { /* unlabeled: root/NAME.png, then root/SUB/NAME.png */
        for (int j = 0; j < top.n; j++) il_push(imgs, mf_xasprintf("%s/%s", opt->root, top.s[j]), -1);
        for (int i = 0; i < subs.n; i++)
            for (int j = 0; j < sub_pngs[i].n; j++)
                il_push(imgs, mf_xasprintf("%s/%s/%s", opt->root, subs.s[i], sub_pngs[i].s[j]), -1);
    }
    if (rc == 0 && imgs->n == 0) rc = mf_fail("data: no PNG files (*.png) in folder %s", opt->root);
    for (int i = 0; i < subs.n; i++) sl_free(&sub_pngs[i]);
    free(sub_pngs);
    sl_free(&top);
    sl_free(&subs);
    return rc;
}

/* ---- resampling: separable weights; area averaging when shrinking, bilinear when enlarging ---- */
typedef struct taps {
    int k;      /* taps per output sample */
    int *first; /* (out) first source index */
    float *w;   /* (out, k) weights, summing to 1 */
} taps;

static void make_taps(int in, int out, taps *t) {
    double s = (double)in / out;
    t->k = s > 1.0 ? (int)ceil(s) + 1 : 2;
    t->first = mf_xcalloc((size_t)out, sizeof *t->first);
    t->w = mf_xcalloc((size_t)out * (size_t)t->k, sizeof *t->w);
    for (int o = 0; o < out; o++) {
        float *w = t->w + (size_t)o * (size_t)t->k;
        if (s > 1.0) { /* area: source interval [o*s, (o+1)*s), each pixel weighted by its overlap */
            double a = o * s, b = (o + 1) * s;
            int i0 = (int)floor(a);
            t->first[o] = i0;
            for (int j = 0; j < t->k && i0 + j < in; j++) {
                double lo = fmax(a, i0 + j), hi = fmin(b, i0 + j + 1.0);
                w[j] = hi > lo ? (float)((hi - lo) / s) : 0.0f;
            }
        } else { /* bilinear, pixel centres at i + 0.5 (align_corners = false), edges clamped */
            double c = (o + 0.5) * s - 0.5;
            if (c < 0) c = 0;
            if (c > in - 1) c = in - 1;
            int i0 = (int)floor(c);
            if (i0 > in - 2) i0 = in > 1 ? in - 2 : 0;
            double f = c - i0;
            t->first[o] = i0;
            w[0] = (float)(1.0 - f);
            if (in > 1) w[1] = (float)f;
        }
    }
}

static void free_taps(taps *t) {
    free(t->first);
    free(t->w);
}

/* Interleaved u8 (h, w, dc) channel c..c+C-1 -> planar float (C, H, W) in [-1, 1], resampled. */
static void resample(const uint8_t *px, int w, int h, int dc, int C, int W, int H, float *dst) {
    taps tx, ty;
    make_taps(w, W, &tx);
    make_taps(h, H, &ty);
    float *row = mf_xmalloc((size_t)h * (size_t)W * sizeof(float));
    for (int c = 0; c < C; c++) {
        for (int y = 0; y < h; y++)
            for (int x = 0; x < W; x++) {
                const float *wt = tx.w + (size_t)x * (size_t)tx.k;
                double acc = 0;
                for (int j = 0; j < tx.k; j++) {
                    int sx = tx.first[x] + j;
                    if (wt[j] != 0.0f && sx < w) acc += wt[j] * px[((size_t)y * w + sx) * dc + c];
                }
                row[(size_t)y * W + x] = (float)acc;
            }
        for (int y = 0; y < H; y++) {
            const float *wt = ty.w + (size_t)y * (size_t)ty.k;
            for (int x = 0; x < W; x++) {
                double acc = 0;
                for (int j = 0; j < ty.k; j++) {
                    int sy = ty.first[y] + j;
                    if (wt[j] != 0.0f && sy < h) acc += wt[j] * row[(size_t)sy * W + x];
                }
                float v = (float)(acc / 127.5 - 1.0);
                dst[((size_t)c * H + y) * W + x] = v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v;
            }
        }
    }
    free(row);
    free_taps(&tx);
    free_taps(&ty);
}

static void to_planar(const uint8_t *px, int w, int h, int dc, int C, float *dst) {
    for (int c = 0; c < C; c++)
        for (size_t i = 0; i < (size_t)w * (size_t)h; i++)
            dst[(size_t)c * w * h + i] = (float)px[i * dc + c] / 127.5f - 1.0f;
}

/* Decode all images; fills C (final channels) and the decode channel count. */
static int decode_all(const data_folder_opts *opt, image_list *imgs, int *C, int *dc) {
    *dc = opt->channels ? opt->channels : 3;
    mf_progress *prog = imgs->n >= 2000 ? mf_progress_begin("data: decoding PNGs", imgs->n, "img") : NULL;
    bool color = false;
    int rc = 0;
    double decoded = 0; /* bytes of all decoded images */
    for (int64_t i = 0; i < imgs->n && rc == 0; i++) {
        image *im = &imgs->v[i];
        char key[96];
        snprintf(key, sizeof key, "%s.max_image_pixels", opt->key);
        if (mf_png_read_max(im->path, *dc, (uint64_t)opt->max_pixels, key, &im->w, &im->h, &im->px) != 0) {
            im->px = NULL;
            rc = strstr(mf_last_error(), im->path) ? mf_error_prefix("data: ")
                                                   : mf_error_prefix("data: %s: ", im->path);
            break;
        }
        decoded += (double)im->w * im->h * *dc;
        if (opt->max_bytes > 0 && decoded > (double)opt->max_bytes) {
            rc = mf_fail("data: %s: the PNGs of %s decode to more than %lld bytes up to this one (%lld of %lld files), "
                         "the limit; raise %s.max_bytes to accept it", im->path, opt->root, opt->max_bytes,
                         (long long)i + 1, (long long)imgs->n, opt->key);
            break;
        }
        if (opt->image_size == 0 && (im->w != imgs->v[0].w || im->h != imgs->v[0].h))
            rc = mf_fail("data: %s is %dx%d but %s is %dx%d; images of a folder must share one size "
                         "(or set %s.image_size to resize them)",
                         im->path, im->w, im->h, imgs->v[0].path, imgs->v[0].w, imgs->v[0].h, opt->key);
        if (opt->channels == 0 && !color) {
            size_t np = (size_t)im->w * (size_t)im->h;
            for (size_t p = 0; p < np && !color; p++)
                color = im->px[3 * p] != im->px[3 * p + 1] || im->px[3 * p] != im->px[3 * p + 2];
        }
        if (prog && (i % 256 == 0 || i + 1 == imgs->n)) mf_progress_update(prog, i + 1, NULL);
    }
    if (prog) mf_progress_end(prog);
    *C = opt->channels ? opt->channels : color ? 3 : 1;
    return rc;
}

static int fill_split(mf_split *s, int64_t n, int C, int H, int W) {
    s->n = n;
    size_t per = (size_t)C * (size_t)H * (size_t)W;
    s->x = malloc((n ? (size_t)n : 1) * per * sizeof(float));
    s->y = malloc((n ? (size_t)n : 1) * sizeof(int32_t));
    if (!s->x || !s->y)
        return mf_fail("data: out of memory for %lld images of %dx%dx%d", (long long)n, C, H, W);
    return 0;
}

int data_load_png_folder(const data_folder_opts *opt, mf_dataset *ds) {
    image_list imgs = {0};
    strlist classes = {0};
    int rc = collect(opt, &imgs, &classes);
    int C = 1, dc = 1;
    if (rc == 0) rc = decode_all(opt, &imgs, &C, &dc);
    int H = opt->image_size ? opt->image_size : (imgs.n ? imgs.v[0].h : 0);
    int W = opt->image_size ? opt->image_size : (imgs.n ? imgs.v[0].w : 0);

    /* Split: the first n_test entries of a seeded permutation go to test; both keep file order. */
    int64_t n = imgs.n, n_test = (int64_t)floor((double)n * opt->test_fraction);
    if (rc == 0 && n - n_test < 1)
        rc = mf_fail("data: %s: %lld image(s) leave no training images with %s.test_fraction %g",
                     opt->root, (long long)n, opt->key, opt->test_fraction);
    uint8_t *is_test = mf_xcalloc((size_t)n + 1, 1);
    if (rc == 0 && n_test > 0) {
        int64_t *perm = mf_xmalloc((size_t)n * sizeof *perm);
        mf_rng_permutation(opt->seed, MF_RNG_SPLIT, 0, perm, n);
        for (int64_t i = 0; i < n_test; i++) is_test[perm[i]] = 1;
        free(perm);
    }
    if (rc == 0 && opt->max_bytes > 0 && (double)n * C * H * W > (double)opt->max_bytes)
        rc = mf_fail("data: %s: %lld images of %dx%dx%d are %.0f values, more than the limit of %lld; raise %s.max_bytes "
                     "to accept it", opt->root, (long long)n, C, H, W, (double)n * C * H * W, opt->max_bytes, opt->key);
    if (rc == 0) rc = fill_split(&ds->train, n - n_test, C, H, W);
    if (rc == 0) rc = fill_split(&ds->test, n_test, C, H, W);
    if (rc == 0) {
        size_t per = (size_t)C * (size_t)H * (size_t)W;
        int64_t itr = 0, ite = 0;
        for (int64_t i = 0; i < n; i++) {
            image *im = &imgs.v[i];
            mf_split *s = is_test[i] ? &ds->test : &ds->train;
            int64_t k = is_test[i] ? ite++ : itr++;
            float *dst = s->x + (size_t)k * per;
            if (im->w == W && im->h == H)
                to_planar(im->px, W, H, dc, C, dst);
            else
                resample(im->px, im->w, im->h, dc, C, W, H, dst);
            s->y[k] = im->label;
            free(im->px);
            im->px = NULL;
        }
        ds->C = C;
        ds->H = H;
        ds->W = W;
        snprintf(ds->source, sizeof ds->source, "%s", opt->root);
        const char *base = strrchr(opt->root, '/');
        snprintf(ds->name, sizeof ds->name, "%s", base && base[1] ? base + 1 : opt->root);
        if (classes.n > 0) {
            ds->num_classes = classes.n;
            ds->class_names = classes.s; /* ownership moves to ds */
            classes.s = NULL;
            classes.n = 0;
        }
        mf_debug("data: %s: %lld PNGs, %d class(es), decoded with %d channel(s)", opt->root,
                 (long long)n, ds->num_classes, dc);
    }
    free(is_test);
    il_free(&imgs);
    sl_free(&classes);
    return rc;
}
