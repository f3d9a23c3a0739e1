/* test_optim.c - the training arithmetic at its boundaries: learning-rate schedules (warm-up end,
 * last step at the minimum, extension segments without a jump), gradient clipping, EMA decay
 * warm-up; and checkpoint files: metadata round trip, verification, pruning that keeps the newest
 * *valid* checkpoints and moves corrupt ones aside. */
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mf_checkpoint.h"
#include "mf_error.h"
#include "mf_io.h"
#include "mf_optim.h"
#include "mf_test.h"

static void test_schedule(void) {
    mf_sched s;
    const double peak = 1e-3;
    mf_sched_init(&s, MF_SCHED_COSINE, peak, 10, 110, 0.1);
    CHECK_NEAR(mf_sched_lr(&s, 0), peak / 10, 1e-15);
    CHECK_NEAR(mf_sched_lr(&s, 9), peak, 1e-15);   /* the last warm-up step trains at the peak */
    CHECK_NEAR(mf_sched_lr(&s, 10), peak, 1e-15);  /* the decay starts there */
    CHECK_NEAR(mf_sched_lr(&s, 109), 1e-4, 1e-15); /* the last step trains at the minimum */
    CHECK_NEAR(mf_sched_lr(&s, 200), 1e-4, 1e-15); /* and it stays there */
    CHECK_NEAR(mf_sched_lr(&s, 59) + mf_sched_lr(&s, 60), peak + 1e-4, 1e-4 * 0.05); /* cosine midpoint */
    for (int64_t i = 10; i < 109; i++) CHECK(mf_sched_lr(&s, i + 1) <= mf_sched_lr(&s, i));

    mf_sched_init(&s, MF_SCHED_LINEAR, peak, 0, 101, 0.0);
    CHECK_NEAR(mf_sched_lr(&s, 0), peak, 1e-15); /* no warm-up */
    CHECK_NEAR(mf_sched_lr(&s, 50), peak / 2, 1e-15);
    CHECK_NEAR(mf_sched_lr(&s, 100), 0.0, 1e-15);

    mf_sched_init(&s, MF_SCHED_CONSTANT, peak, 5, 50, 0.0);
    CHECK_NEAR(mf_sched_lr(&s, 4), peak, 1e-15);
    CHECK_NEAR(mf_sched_lr(&s, 49), peak, 1e-15);

    /* one step, and warm-up as long as the run */
    mf_sched_init(&s, MF_SCHED_COSINE, peak, 0, 1, 0.0);
    CHECK_NEAR(mf_sched_lr(&s, 0), 0.0, 1e-15);
    mf_sched_init(&s, MF_SCHED_COSINE, peak, 10, 10, 0.0);
    CHECK_NEAR(mf_sched_lr(&s, 9), peak, 1e-15);
}

static void test_extension(void) {
    const double peak = 1e-3;
    /* extend at step 60 of 100 to 300: continuous, then decaying to the minimum at step 299 */
    mf_sched s;
    mf_sched_init(&s, MF_SCHED_COSINE, peak, 10, 100, 0.0);
    double at60 = mf_sched_lr(&s, 60);
    mf_sched_extend(&s, 60, 300);
    CHECK_NEAR(mf_sched_lr(&s, 60), at60, 1e-18);
    CHECK(mf_sched_lr(&s, 61) < at60);
    CHECK(mf_sched_lr(&s, 61) > at60 * 0.999);
    CHECK_NEAR(mf_sched_lr(&s, 299), 0.0, 1e-15);
    for (int64_t i = 60; i < 299; i++) CHECK(mf_sched_lr(&s, i + 1) <= mf_sched_lr(&s, i));
    /* a second extension chains on the segment */
    double at200 = mf_sched_lr(&s, 200);
    mf_sched_extend(&s, 200, 400);
    CHECK_NEAR(mf_sched_lr(&s, 200), at200, 1e-18);
    CHECK_NEAR(mf_sched_lr(&s, 399), 0.0, 1e-15);
    /* shortening decays faster, still without a jump */
    mf_sched_init(&s, MF_SCHED_LINEAR, peak, 0, 1000, 0.0);
    double at100 = mf_sched_lr(&s, 100);
    mf_sched_extend(&s, 100, 201);
    CHECK_NEAR(mf_sched_lr(&s, 100), at100, 1e-18);
    CHECK_NEAR(mf_sched_lr(&s, 200), 0.0, 1e-15);
    /* inside the warm-up the shape is kept: the same rates as a run planned that long */
    mf_sched a, b;
    mf_sched_init(&a, MF_SCHED_COSINE, peak, 50, 100, 0.0);
    mf_sched_init(&b, MF_SCHED_COSINE, peak, 50, 400, 0.0);
    mf_sched_extend(&a, 20, 400);
    for (int64_t i = 0; i < 400; i += 7) CHECK(mf_sched_lr(&a, i) == mf_sched_lr(&b, i));
    /* the old behaviour this replaces: re-stretching after the warm-up makes the rate jump */
    mf_sched_init(&a, MF_SCHED_COSINE, peak, 10, 100, 0.0);
    mf_sched_init(&b, MF_SCHED_COSINE, peak, 10, 300, 0.0);
    CHECK(mf_sched_lr(&b, 60) > 1.5 * mf_sched_lr(&a, 60));
    CHECK(mf_sched_kind_parse("cosine") == MF_SCHED_COSINE && mf_sched_kind_parse("linear") == MF_SCHED_LINEAR &&
          mf_sched_kind_parse("constant") == MF_SCHED_CONSTANT && mf_sched_kind_parse("step") == -1);
}

static void test_clip_ema(void) {
    CHECK(mf_clip_scale(0.5, 1.0) == 1.0f);
    CHECK(mf_clip_scale(1.0, 1.0) == 1.0f); /* at the threshold: unchanged */
    CHECK_NEAR(mf_clip_scale(4.0, 1.0) * 4.0, 1.0, 1e-6);
    CHECK_NEAR(mf_clip_scale(1e6, 2.5) * 1e6, 2.5, 1e-5);
    CHECK(mf_clip_scale(100.0, 0.0) == 1.0f); /* clip 0: off */
    CHECK(mf_clip_scale(INFINITY, 1.0) == 1.0f && mf_clip_scale(NAN, 1.0) == 1.0f);

    CHECK_NEAR(mf_ema_decay_at(0.999, true, 0), 0.1, 1e-15);
    CHECK_NEAR(mf_ema_decay_at(0.999, true, 1), 2.0 / 11.0, 1e-15);
    CHECK_NEAR(mf_ema_decay_at(0.999, true, 90), 91.0 / 100.0, 1e-15);
    CHECK_NEAR(mf_ema_decay_at(0.999, true, 8990), 0.999, 1e-15); /* (1+n)/(10+n) = 0.999 at n = 8990 */
    CHECK_NEAR(mf_ema_decay_at(0.999, true, 8989), 8990.0 / 8999.0, 1e-15);
    CHECK_NEAR(mf_ema_decay_at(0.999, true, 1000000), 0.999, 1e-15);
    CHECK_NEAR(mf_ema_decay_at(0.9, false, 0), 0.9, 1e-15);
}

static void save_ckpt(const char *dir, int step, float v) {
    char path[512];
    snprintf(path, sizeof path, "%s/ckpt_%08d.mfc", dir, step);
    float data[5] = {v, v + 1, v + 2, v + 3, v + 4};
    mf_ckpt c = {.step = (uint64_t)step, .meta = "adam_t=7\nsetting.train.batch=16\n", .n_sections = 1};
    snprintf(c.config_hash, sizeof c.config_hash, "%064d", 0);
    c.s[0] = (mf_ckpt_section){.name = "model", .n = 5, .data = data};
    CHECK(mf_ckpt_save(path, &c) == 0);
}

static int exists(const char *dir, const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat st;
    return stat(path, &st) == 0;
}

static void corrupt(const char *dir, int step) {
    char path[512];
    snprintf(path, sizeof path, "%s/ckpt_%08d.mfc", dir, step);
    FILE *f = fopen(path, "r+b");
    fseek(f, 100, SEEK_SET);
    fputc(0x5a, f);
    fclose(f);
}

static void test_checkpoints(void) {
    char dir[] = "/tmp/mfpipe-test-ckpt-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    save_ckpt(dir, 10, 1.0f);
    mf_ckpt c;
    char path[512];
    snprintf(path, sizeof path, "%s/ckpt_%08d.mfc", dir, 10);
    CHECK(mf_ckpt_load(path, &c) == 0);
    char v[64];
    CHECK(mf_ckpt_meta_get(&c, "adam_t", v, sizeof v) == 1 && strcmp(v, "7") == 0);
    CHECK(mf_ckpt_meta_get(&c, "setting.train.batch", v, sizeof v) == 1 && strcmp(v, "16") == 0);
    CHECK(mf_ckpt_meta_get(&c, "adam", v, sizeof v) == 0);
    CHECK(c.n_sections == 1 && c.s[0].n == 5 && c.s[0].data[4] == 5.0f);
    mf_ckpt_free_loaded(&c);
    CHECK(mf_ckpt_verify(path) == 0);

    /* valid 10..50, corrupt newer ones 80, 90: prune keeps 30, 40, 50 and moves 80, 90 aside */
    for (int s = 20; s <= 50; s += 10) save_ckpt(dir, s, (float)s);
    save_ckpt(dir, 80, 8.0f);
    save_ckpt(dir, 90, 9.0f);
    corrupt(dir, 80);
    corrupt(dir, 90);
    snprintf(path, sizeof path, "%s/ckpt_%08d.mfc", dir, 90);
    CHECK(mf_ckpt_verify(path) != 0);
    CHECK_ERR_CONTAINS("checksum mismatch");
    CHECK(mf_ckpt_prune(dir, 3) == 0);
    CHECK(!exists(dir, "ckpt_00000010.mfc") && !exists(dir, "ckpt_00000020.mfc"));
    CHECK(exists(dir, "ckpt_00000030.mfc") && exists(dir, "ckpt_00000040.mfc") && exists(dir, "ckpt_00000050.mfc"));
    CHECK(!exists(dir, "ckpt_00000080.mfc") && !exists(dir, "ckpt_00000090.mfc"));
    CHECK(exists(dir, "corrupt/ckpt_00000080.mfc") && exists(dir, "corrupt/ckpt_00000090.mfc"));

    /* the newest valid one loads; a corrupt newest one met on the way is moved aside */
    save_ckpt(dir, 60, 6.0f);
    corrupt(dir, 60);
    CHECK(mf_ckpt_load_latest(dir, &c, path, sizeof path, false) == 1 && c.step == 50); /* read-only: left */
    mf_ckpt_free_loaded(&c);
    CHECK(exists(dir, "ckpt_00000060.mfc"));
    CHECK(mf_ckpt_load_latest(dir, &c, path, sizeof path, true) == 1);
    CHECK(c.step == 50 && strstr(path, "ckpt_00000050.mfc") != NULL);
    mf_ckpt_free_loaded(&c);
    CHECK(exists(dir, "corrupt/ckpt_00000060.mfc") && !exists(dir, "ckpt_00000060.mfc"));

    /* ordered by step number, also past the 8 digits of the name pattern */
    save_ckpt(dir, 99999999, 1.0f);
    snprintf(path, sizeof path, "%s/ckpt_%08d.mfc", dir, 100000000);
    {
        char src[512];
        snprintf(src, sizeof src, "%s/ckpt_%08d.mfc", dir, 99999999);
        mf_ckpt big;
        CHECK(mf_ckpt_load(src, &big) == 0);
        big.step = 100000000;
        CHECK(mf_ckpt_save(path, &big) == 0);
        mf_ckpt_free_loaded(&big);
    }
    CHECK(mf_ckpt_load_latest(dir, &c, path, sizeof path, true) == 1 && c.step == 100000000);
    mf_ckpt_free_loaded(&c);
    CHECK(mf_ckpt_prune(dir, 1) == 0);
    CHECK(exists(dir, "ckpt_100000000.mfc") && !exists(dir, "ckpt_99999999.mfc") && !exists(dir, "ckpt_00000050.mfc"));

    /* a FIFO where a checkpoint should be is refused without blocking, and moved aside */
    snprintf(path, sizeof path, "%s/ckpt_%08d.mfc", dir, 200000000);
    CHECK(mkfifo(path, 0644) == 0);
    CHECK(mf_ckpt_verify(path) != 0);
    CHECK_ERR_CONTAINS("is not a regular file");
    CHECK(mf_ckpt_load_latest(dir, &c, path, sizeof path, true) == 1 && c.step == 100000000);
    mf_ckpt_free_loaded(&c);
    CHECK(exists(dir, "corrupt/ckpt_200000000.mfc"));

    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

int main(void) {
    test_schedule();
    test_extension();
    test_clip_ema();
    test_checkpoints();
    return mf_test_summary("test_optim");
}
