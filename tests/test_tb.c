/* test_tb.c - TensorBoard event files, decoded here independently of the writer (core/mf_tb.c): its
 * own bitwise CRC-32C and a generic protocol buffer reader check every record's framing and fields.
 * Unit part: the writer's records (version, scalars, a PNG image, metrics records). End to end: a
 * tiny `mfpipe run` (train with periodic grids, sample, eval) whose tb/ file must hold every scalar
 * of metrics.jsonl (same tag, step and value) and the grids as images. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mf_error.h"
#include "mf_io.h"
#include "mf_tb.h"
#include "mf_test.h"

/* ---- the independent decoder ------------------------------------------------------------------ */
static uint32_t crc32c_bitwise(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1u)));
    }
    return ~c;
}
static uint32_t mask(uint32_t c) { return ((c >> 15) | (c << 17)) + 0xa282ead8u; }
static uint32_t le32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

typedef struct pb {
    const uint8_t *p, *end;
    int bad;
} pb;
static uint64_t rd_varint(pb *r) {
    uint64_t v = 0;
    for (int sh = 0; sh < 64; sh += 7) {
        if (r->p >= r->end) {
            r->bad = 1;
            return 0;
        }
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << sh;
        if (!(b & 0x80)) return v;
    }
    r->bad = 1;
    return 0;
}
/* Next field: number, wire type; for wire 2 the payload in (*s, *n); for 0 *v; for 1/5 the bytes in *s. */
static int rd_field(pb *r, int *num, int *wire, const uint8_t **s, uint64_t *n, uint64_t *v) {
    if (r->p >= r->end || r->bad) return 0;
    uint64_t key = rd_varint(r);
    *num = (int)(key >> 3), *wire = (int)(key & 7);
    switch (*wire) {
    case 0: *v = rd_varint(r); break;
    case 1:
    case 5: {
        size_t w = *wire == 1 ? 8 : 4;
        if ((size_t)(r->end - r->p) < w) r->bad = 1;
        else *s = r->p, r->p += w;
        break;
    }
    case 2:
        *n = rd_varint(r);
        if (r->bad || *n > (uint64_t)(r->end - r->p)) r->bad = 1;
        else *s = r->p, r->p += *n;
        break;
    default: r->bad = 1;
    }
    return !r->bad;
}

typedef struct rec {
    double wall;
    int64_t step;
    char version[32];
    char tag[128];
    int kind; /* 0 version, 1 scalar, 2 image */
    float value;
    int w, h, space;
    size_t png_n;
} rec;

/* Decode one Event; -1 on a malformed one. */
static int decode_event(const uint8_t *p, size_t n, rec *o) {
    memset(o, 0, sizeof *o);
    o->kind = -1;
    pb r = {p, p + n, 0};
    int num = 0, wire = 0;
    const uint8_t *s = NULL;
    uint64_t len = 0, v = 0;
    while (rd_field(&r, &num, &wire, &s, &len, &v)) {
        if (num == 1 && wire == 1) memcpy(&o->wall, s, 8);
        else if (num == 2 && wire == 0) o->step = (int64_t)v;
        else if (num == 3 && wire == 2 && len < sizeof o->version) {
            memcpy(o->version, s, len);
            o->kind = 0;
        } else if (num == 5 && wire == 2) {
            pb sr = {s, s + len, 0};
            int n2 = 0, w2 = 0;
            const uint8_t *s2 = NULL;
            uint64_t l2 = 0, v2 = 0;
            int nvals = 0;
            while (rd_field(&sr, &n2, &w2, &s2, &l2, &v2)) {
                if (n2 != 1 || w2 != 2) return -1;
                nvals++;
                pb vr = {s2, s2 + l2, 0};
                int n3 = 0, w3 = 0;
                const uint8_t *s3 = NULL;
                uint64_t l3 = 0, v3 = 0;
                while (rd_field(&vr, &n3, &w3, &s3, &l3, &v3)) {
                    if (n3 == 1 && w3 == 2 && l3 < sizeof o->tag) memcpy(o->tag, s3, l3), o->tag[l3] = '\0';
                    else if (n3 == 2 && w3 == 5) memcpy(&o->value, s3, 4), o->kind = 1;
                    else if (n3 == 4 && w3 == 2) {
                        o->kind = 2;
                        pb ir = {s3, s3 + l3, 0};
                        int n4 = 0, w4 = 0;
                        const uint8_t *s4 = NULL;
                        uint64_t l4 = 0, v4 = 0;
                        while (rd_field(&ir, &n4, &w4, &s4, &l4, &v4)) {
                            if (n4 == 1 && w4 == 0) o->h = (int)v4;
                            else if (n4 == 2 && w4 == 0) o->w = (int)v4;
                            else if (n4 == 3 && w4 == 0) o->space = (int)v4;
                            else if (n4 == 4 && w4 == 2) {
                                o->png_n = l4;
                                if (l4 < 8 || memcmp(s4, "\x89PNG", 4) != 0) return -1;
                            } else return -1;
                        }
                        if (ir.bad) return -1;
                    } else return -1;
                }
                if (vr.bad) return -1;
            }
            if (sr.bad || nvals != 1) return -1;
        } else return -1;
    }
    return r.bad ? -1 : 0;
}

/* Every record of a file; *n_out records; -1 on a framing or CRC error (message printed). */
static int decode_file(const char *path, rec **out, int *n_out) {
    uint8_t *d;
    size_t len;
    int gz;
    *out = NULL;
    *n_out = 0;
    if (mf_read_file(path, &d, &len, &gz) != 0) return -1;
    size_t off = 0;
    int n = 0, rc = 0;
    rec *rs = NULL;
    while (off < len) {
        if (len - off < 16) {
            fprintf(stderr, "%s: truncated record at %zu\n", path, off);
            rc = -1;
            break;
        }
        uint64_t l = 0;
        for (int i = 0; i < 8; i++) l |= (uint64_t)d[off + i] << (8 * i);
        if (mask(crc32c_bitwise(d + off, 8)) != le32(d + off + 8)) {
            fprintf(stderr, "%s: length CRC wrong at %zu\n", path, off);
            rc = -1;
            break;
        }
        if (l > len - off - 16) {
            fprintf(stderr, "%s: length beyond the file at %zu\n", path, off);
            rc = -1;
            break;
        }
        const uint8_t *p = d + off + 12;
        if (mask(crc32c_bitwise(p, l)) != le32(p + l)) {
            fprintf(stderr, "%s: data CRC wrong at %zu\n", path, off);
            rc = -1;
            break;
        }
        rs = realloc(rs, sizeof *rs * (size_t)(n + 1));
        if (decode_event(p, l, &rs[n]) != 0) {
            fprintf(stderr, "%s: malformed Event at %zu\n", path, off);
            rc = -1;
            break;
        }
        n++;
        off += 16 + l;
    }
    free(d);
    *out = rs;
    *n_out = n;
    return rc;
}

static const rec *find(const rec *rs, int n, const char *tag, int64_t step) {
    for (int i = 0; i < n; i++)
        if (rs[i].kind >= 1 && strcmp(rs[i].tag, tag) == 0 && rs[i].step == step) return &rs[i];
    return NULL;
}

/* ---- unit: the writer ------------------------------------------------------------------------- */
static void test_writer(const char *dir) {
    CHECK(mf_crc32c("123456789", 9) == 0xe3069283u);
    CHECK(crc32c_bitwise((const uint8_t *)"123456789", 9) == 0xe3069283u);
    uint8_t big[1000];
    for (int i = 0; i < 1000; i++) big[i] = (uint8_t)(i * 7 + 3);
    CHECK(mf_crc32c(big, 1000) == crc32c_bitwise(big, 1000));
    char tbdir[600], path[700];
    snprintf(tbdir, sizeof tbdir, "%s/tb", dir);
    mf_tb *tb = NULL;
    CHECK_MSG(mf_tb_open(tbdir, &tb, path, sizeof path) == 0, "%s", mf_last_error());
    if (!tb) return;
    CHECK(strstr(path, "/tb/events.out.tfevents.") != NULL);
    CHECK(mf_tb_scalar(tb, "train/loss", 10, 1000.5, 0.25f) == 0);
    CHECK(mf_tb_scalar(tb, "train/lr", 0, 1000.5, 1e-3f) == 0);
    /* a 3x2 grey PNG (header fields are what the writer reads) */
    static const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                                  0, 0, 0, 3, 0, 0, 0, 2, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    CHECK(mf_tb_image_png(tb, "train/samples", 20, 1001.0, png, sizeof png) == 0);
    CHECK(mf_tb_image_png(tb, "bad", 20, 1001.0, (const uint8_t *)"not a png at all, no no no no", 30) != 0);
    int64_t last = 0;
    CHECK(mf_tb_metrics(tb, "train", 1002.0, "\"step\":30,\"loss\":0.5,\"lr\":0.002,\"note\":\"a, \\\"b\\\"\",\"hist\":[1,2],\"nan\":null", &last) == 0);
    CHECK(last == 30);
    CHECK(mf_tb_metrics(tb, "eval", 1003.0, "\"metric\":\"fid_lenet_v1\",\"value\":12.5,\"n\":1000", &last) == 0);
    CHECK(mf_tb_metrics(tb, "train", 1003.0, "\"event\":\"model\",\"step\":3,\"params\":100", &last) == 0);
    mf_tb_close(tb);
    rec *rs;
    int n;
    CHECK(decode_file(path, &rs, &n) == 0);
    CHECK_MSG(n == 7, "%d records", n);
    if (n == 7) {
        CHECK(rs[0].kind == 0 && strcmp(rs[0].version, "brain.Event:2") == 0 && rs[0].wall > 1e9);
        CHECK(rs[1].kind == 1 && strcmp(rs[1].tag, "train/loss") == 0 && rs[1].step == 10 && rs[1].value == 0.25f &&
              rs[1].wall == 1000.5);
        CHECK(rs[2].step == 0 && rs[2].value == 1e-3f);
        CHECK(rs[3].kind == 2 && rs[3].w == 3 && rs[3].h == 2 && rs[3].space == 1 && rs[3].png_n == sizeof png &&
              rs[3].step == 20);
        CHECK(strcmp(rs[4].tag, "train/loss") == 0 && rs[4].step == 30 && rs[4].value == 0.5f);
        CHECK(strcmp(rs[5].tag, "train/lr") == 0 && rs[5].value == 0.002f);
        CHECK(strcmp(rs[6].tag, "eval/fid_lenet_v1") == 0 && rs[6].step == 30 && rs[6].value == 12.5f);
    }
    free(rs);
    /* a flipped byte is caught by the decoder's CRC check */
    uint8_t *d;
    size_t len;
    int gz;
    if (mf_read_file(path, &d, &len, &gz) == 0) {
        d[len - 10] ^= 1;
        mf_write_file_atomic(path, d, len);
        free(d);
        CHECK(decode_file(path, &rs, &n) != 0);
        free(rs);
    }
}

/* ---- end to end: a run's tb/ against its metrics.jsonl --------------------------------------- */
static int json_num(const char *line, const char *key, double *v) {
    char pat[80];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    if (!p) return 0;
    char *end;
    *v = strtod(p + strlen(pat), &end);
    return end != p + strlen(pat);
}

static void test_run(const char *dir) {
    const char *bd = getenv("MFPIPE_BUILD_DIR");
    if (!bd) {
        printf("test_tb: MFPIPE_BUILD_DIR not set: end-to-end part skipped\n");
        return;
    }
    char cmd[4096], p[1024];
    /* synthetic MNIST-shaped files */
    snprintf(p, sizeof p, "%s/mn", dir);
    CHECK(mf_mkdirs(p) == 0);
    static const char *names[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                                   "t10k-labels-idx1-ubyte"};
    for (int f = 0; f < 4; f++) {
        int n = f < 2 ? 64 : 16, img = f % 2 == 0;
        size_t sz = (img ? 16 : 8) + (size_t)n * (img ? 784 : 1);
        uint8_t *b = calloc(sz, 1);
        b[2] = 8, b[3] = img ? 3 : 1, b[7] = (uint8_t)n;
        if (img) b[11] = 28, b[15] = 28;
        for (size_t i = img ? 16 : 8; i < sz; i++) b[i] = img ? (uint8_t)(i * 31 % 251) : (uint8_t)(i % 10);
        snprintf(p, sizeof p, "%s/mn/%s", dir, names[f]);
        CHECK(mf_write_file_atomic(p, b, sz) == 0);
        free(b);
    }
    snprintf(p, sizeof p, "%s/exp.yaml", dir);
    FILE *f = fopen(p, "w");
    fprintf(f, "name: tb\nseed: 1\nthreads: 2\nstages: [data, train, ema, sample, eval]\n"
               "data: {dataset: mnist, root: %s/mn, verify: false}\n"
               "model: {channels: 4, channel_mult: [1, 2], res_blocks: 1, groups: 2, time_embed: {dim: 8, frequencies: 2}}\n"
               "train: {steps: 8, batch: 8, log_every: 2, sample_every: 4, sample_n: 4, sample_steps: 2, final_grid: 0}\n"
               "sample: {n: 10, steps: 2, grid: 10, trajectory: 0}\neval: {n: 10, metrics: [fid, classifier_score]}\n",
            dir);
    fclose(f);
    snprintf(cmd, sizeof cmd, "MFPIPE_NO_FETCH=1 '%s/bin/mfpipe' run -q '%s/exp.yaml' --out '%s/run' 2>'%s/err'", bd, dir,
             dir, dir);
    int rc = system(cmd);
    CHECK_MSG(rc == 0, "mfpipe run failed (%d); see %s/err", rc, dir);
    if (rc != 0) return;
    snprintf(p, sizeof p, "%s/run/tb", dir);
    DIR *dd = opendir(p);
    char evpath[1400] = "";
    int nfiles = 0;
    for (struct dirent *e; dd && (e = readdir(dd));)
        if (strncmp(e->d_name, "events.out.tfevents.", 20) == 0) {
            snprintf(evpath, sizeof evpath, "%s/%s", p, e->d_name);
            nfiles++;
        }
    if (dd) closedir(dd);
    CHECK(nfiles == 1);
    rec *rs = NULL;
    int n = 0;
    CHECK(evpath[0] && decode_file(evpath, &rs, &n) == 0);
    CHECK(n > 0 && rs[0].kind == 0 && strcmp(rs[0].version, "brain.Event:2") == 0);
    /* every train line's numbers, and every eval metric, are in the events file */
    snprintf(p, sizeof p, "%s/run/metrics.jsonl", dir);
    f = fopen(p, "r");
    char line[8192];
    int lines = 0, matched = 0, evals = 0;
    int64_t last = 0;
    while (f && fgets(line, sizeof line, f)) {
        double step, v;
        if (strstr(line, "\"event\"")) continue;
        if (strstr(line, "\"stage\":\"train\"") && json_num(line, "step", &step)) {
            last = (int64_t)step;
            static const char *keys[] = {"loss", "loss_unweighted", "lr", "grad_norm", "img_per_s"};
            for (int k = 0; k < 5; k++) {
                if (!json_num(line, keys[k], &v)) continue;
                lines++;
                char tag[64];
                snprintf(tag, sizeof tag, "train/%s", keys[k]);
                const rec *r = find(rs, n, tag, (int64_t)step);
                if (r && r->value == (float)v) matched++;
                else fprintf(stderr, "missing %s at step %g (%g)\n", tag, step, v);
            }
        }
        const char *m = strstr(line, "\"metric\":\"");
        if (strstr(line, "\"stage\":\"eval\"") && m && json_num(line, "value", &v) && !strstr(line, "\"value\":[")) {
            char tag[128] = "eval/";
            sscanf(m + 10, "%100[^\"]", tag + 5);
            const rec *r = find(rs, n, tag, last);
            evals++;
            if (r && r->value == (float)v) matched++;
            else fprintf(stderr, "missing %s at step %lld\n", tag, (long long)last);
        }
    }
    if (f) fclose(f);
    CHECK_MSG(lines >= 20 && evals >= 2 && matched == lines + evals, "%d train values, %d eval metrics, %d matched", lines,
              evals, matched);
    /* the periodic grid (step 4; step 8 is the last step: no periodic grid) and the final grid */
    const rec *g4 = find(rs, n, "train/samples", 4), *fg = find(rs, n, "sample/grid", 8);
    CHECK(g4 && g4->kind == 2 && g4->w > 28 && g4->h >= 28);
    CHECK(fg && fg->kind == 2 && fg->w > 28);
    free(rs);
}

int main(void) {
    const char *dir = mf_test_tmpdir();
    test_writer(dir);
    test_run(dir);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return mf_test_summary("test_tb");
}
