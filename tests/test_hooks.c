/* test_hooks.c - the Lua hooks (core/mf_hooks.c): each hook's values and checks, the sandbox
 * (escapes fail with clear errors, nothing leaks between scripts, endless loops and memory hogs are
 * stopped), the load-time checks (unknown global functions with a suggestion, a value hook defined
 * twice), the shipped scripts (warmup_cosine.lua equals the built-in schedule at every step) and
 * sweep scripts. The end-to-end effects on training are in tests/cli/test_hooks.sh. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mf_error.h"
#include "mf_hooks.h"
#include "mf_log.h"
#include "mf_optim.h"
#include "mf_test.h"

static const char *g_dir;

static const char *script(const char *name, const char *text) {
    static char path[8][1024];
    static int k;
    char *p = path[k++ % 8];
    snprintf(p, 1024, "%s/%s", g_dir, name);
    FILE *f = fopen(p, "wb");
    if (!f) {
        perror(p);
        exit(2);
    }
    fputs(text, f);
    fclose(f);
    return p;
}

/* Load one script; NULL (and the error in mf_last_error) on failure. */
static mf_hooks *load1(const char *name, const char *text) {
    char *paths[1] = {(char *)script(name, text)};
    mf_hooks *h = NULL;
    mf_error_clear();
    if (mf_hooks_load(NULL, paths, 1, 7, &h) != 0) return NULL;
    return h;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void test_values(void) {
    mf_hooks *h = load1("v.lua", "function lr(step, total, base) return base * (step + 1) / total end\n"
                                 "function ema_decay(step) return 1 - 1 / (step + 1) end\n"
                                 "function loss_weight(t, r, step, label)\n"
                                 "  if r ~= nil or label ~= nil then error('r and label must be nil') end\n"
                                 "  return t * 2 + step end\n");
    CHECK_MSG(h != NULL, "%s", mf_last_error());
    if (!h) return;
    CHECK(mf_hooks_has(h, MF_HOOK_LR) && mf_hooks_has(h, MF_HOOK_EMA_DECAY) && mf_hooks_has(h, MF_HOOK_LOSS_WEIGHT));
    CHECK(!mf_hooks_has(h, MF_HOOK_ON_STEP) && !mf_hooks_has(h, MF_HOOK_ON_EVAL));
    CHECK(mf_hooks_count(h) == 1 && strlen(mf_hooks_sha256(h, 0)) == 64);
    double v = -1;
    CHECK(mf_hooks_lr(h, 9, 100, 0.5, &v) == 0 && v == 0.05);
    CHECK(mf_hooks_ema_decay(h, 3, &v) == 0 && v == 0.75);
    float t[3] = {0.25f, 0.5f, 1.0f}, w[3];
    CHECK(mf_hooks_loss_weight(h, 3, t, NULL, 2, NULL, NULL, w) == 0);
    CHECK(w[0] == 2.5f && w[1] == 3.0f && w[2] == 4.0f);
    int64_t calls;
    mf_hooks_seconds(h, &calls);
    CHECK(calls == 5);
    mf_hooks_free(h);

    /* the batch form, with r and labels (dropped rows: false) */
    h = load1("b.lua", "function loss_weight_batch(ts, rs, step, labels)\n"
                       "  local w = {}\n"
                       "  for i = 1, #ts do w[i] = ts[i] - rs[i] + (labels[i] or 100) + step end\n"
                       "  return w end\n");
    CHECK_MSG(h != NULL, "%s", mf_last_error());
    if (h) {
        float r[3] = {0.0f, 0.25f, 0.5f};
        int32_t lab[3] = {1, 2, 3};
        uint8_t dr[3] = {0, 1, 0};
        CHECK(mf_hooks_has(h, MF_HOOK_LOSS_WEIGHT));
        CHECK(mf_hooks_loss_weight(h, 3, t, r, 10, lab, dr, w) == 0);
        CHECK(w[0] == 11.25f && w[1] == 110.25f && w[2] == 13.5f);
        mf_hooks_free(h);
    }
}

static void test_bad_results(void) {
    mf_hooks *h = load1("bad.lua", "function lr(step) if step == 3 then return 0/0 end\n"
                                   "  if step == 4 then return 'x' end\n"
                                   "  if step == 5 then return nil end\n"
                                   "  if step == 6 then return -1 end\n"
                                   "  return 1 end\n"
                                   "function loss_weight(t, r, step) if t > 0.5 then return -0.5 end return 1 end\n"
                                   "function ema_decay(step) return 1.5 end\n");
    CHECK_MSG(h != NULL, "%s", mf_last_error());
    if (!h) return;
    double v;
    CHECK(mf_hooks_lr(h, 3, 10, 1, &v) != 0);
    CHECK_ERR_CONTAINS("hook lr");
    CHECK_ERR_CONTAINS("at step 3");
    CHECK_ERR_CONTAINS("not finite");
    CHECK(mf_hooks_lr(h, 4, 10, 1, &v) != 0);
    CHECK_ERR_CONTAINS("returned string, not a number");
    CHECK(mf_hooks_lr(h, 5, 10, 1, &v) != 0);
    CHECK_ERR_CONTAINS("returned nil");
    CHECK(mf_hooks_lr(h, 6, 10, 1, &v) != 0);
    CHECK_ERR_CONTAINS("must be in [0,");
    CHECK(mf_hooks_lr(h, 7, 10, 1, &v) == 0 && v == 1);
    float t[2] = {0.25f, 0.75f}, w[2];
    CHECK(mf_hooks_loss_weight(h, 2, t, NULL, 12, NULL, NULL, w) != 0);
    CHECK_ERR_CONTAINS("hook loss_weight");
    CHECK_ERR_CONTAINS("at step 12 (row 2) returned a negative weight");
    CHECK(mf_hooks_ema_decay(h, 1, &v) != 0);
    CHECK_ERR_CONTAINS("hook ema_decay");
    mf_hooks_free(h);

    /* a runtime error: the script's file:line and a traceback */
    h = load1("err.lua", "local function inner(x)\n  return x.field\nend\nfunction lr(step) return inner(nil) end\n");
    CHECK_MSG(h != NULL, "%s", mf_last_error());
    if (h) {
        CHECK(mf_hooks_lr(h, 0, 10, 1, &v) != 0);
        CHECK_ERR_CONTAINS("err.lua:2:");
        CHECK_ERR_CONTAINS("stack traceback");
        CHECK_ERR_CONTAINS("at step 0");
        mf_hooks_free(h);
    }
    /* the batch form: wrong length */
    h = load1("len.lua", "function loss_weight_batch(ts) return {1} end\n");
    if (h) {
        CHECK(mf_hooks_loss_weight(h, 2, t, NULL, 0, NULL, NULL, w) != 0);
        CHECK_ERR_CONTAINS("returned 1 weights for a batch of 2");
        mf_hooks_free(h);
    } else CHECK_MSG(0, "%s", mf_last_error());
}

static void test_load_checks(void) {
    CHECK(load1("typo.lua", "function los_weight(t) return 1 end\n") == NULL);
    CHECK_ERR_CONTAINS("typo.lua:1: global function 'los_weight' is not a hook; did you mean 'loss_weight'?");
    CHECK(load1("helper.lua", "function my_helper() end\nfunction lr() return 1 end\n") == NULL);
    CHECK_ERR_CONTAINS("global function 'my_helper' is not a hook");
    CHECK_ERR_CONTAINS("helpers must be local");
    /* local helpers, tables and redefined base functions are fine */
    mf_hooks *h = load1("ok.lua", "local function f() return 2 end\nCONFIG = {a = 1}\nfunction lr() return f() end\n");
    CHECK_MSG(h != NULL, "%s", mf_last_error());
    mf_hooks_free(h);
    CHECK(load1("syntax.lua", "function lr( return 1 end\n") == NULL);
    CHECK_ERR_CONTAINS("syntax.lua:1:");
    CHECK(load1("top.lua", "local x = nil\nx.y = 1\n") == NULL);
    CHECK_ERR_CONTAINS("top.lua:2:");
    /* two scripts defining lr */
    char *paths[2] = {(char *)script("a.lua", "function lr() return 1 end\n"),
                      (char *)script("b.lua", "\n\nfunction lr() return 2 end\nfunction on_step() end\n")};
    mf_hooks *h2 = NULL;
    CHECK(mf_hooks_load(NULL, paths, 2, 0, &h2) != 0);
    CHECK_ERR_CONTAINS("lr is defined by both");
    CHECK_ERR_CONTAINS("b.lua:3");
    /* binary chunk files are refused */
    CHECK(load1("bin.lua", "\x1bLuaT\x00garbage") == NULL);
    CHECK_ERR_CONTAINS("binary");
    char *missing[1] = {"/nonexistent/x.lua"};
    CHECK(mf_hooks_load(NULL, missing, 1, 0, &h2) != 0);
    CHECK_ERR_CONTAINS("/nonexistent/x.lua");
}

/* Each escape fails with an error naming what is unavailable. */
static void test_sandbox(void) {
    static const struct {
        const char *code, *err;
    } esc[] = {
        {"return os.execute('touch /tmp/mfpipe-escaped')", "'os' is not available"},
        {"return io.open('/etc/passwd')", "'io' is not available"},
        {"return require('os')", "'require' is not available"},
        {"return dofile('/etc/passwd')", "dofile is not available"},
        {"return loadfile('/etc/passwd')", "loadfile is not available"},
        {"return collectgarbage('count')", "collectgarbage is not available"},
        {"return string.dump(function() end)", "string.dump is not available"},
        {"return load('\\27LuaT\\0')", "binary chunks (bytecode) are not allowed"},
        {"return debug.getinfo(1)", "'debug' is not available"},
        {"return package.loaded", "'package' is not available"},
    };
    for (size_t i = 0; i < sizeof esc / sizeof esc[0]; i++) {
        char code[512];
        snprintf(code, sizeof code, "function lr() %s end\n", esc[i].code);
        mf_hooks *h = load1("esc.lua", code);
        CHECK_MSG(h != NULL, "%s", mf_last_error());
        if (!h) continue;
        double v;
        CHECK_MSG(mf_hooks_lr(h, 0, 1, 1, &v) != 0, "%s ran", esc[i].code);
        CHECK_MSG(strstr(mf_last_error(), esc[i].err) != NULL, "%s: error was: %s", esc[i].code, mf_last_error());
        mf_hooks_free(h);
    }
    CHECK(access("/tmp/mfpipe-escaped", F_OK) != 0);
    /* load() of text works, in the script's sandbox */
    mf_hooks *h = load1("load.lua", "function lr() return load('return 0.5')() end\n");
    double v = 0;
    CHECK(h && mf_hooks_lr(h, 0, 1, 1, &v) == 0 && v == 0.5);
    mf_hooks_free(h);

    /* a string metatable change in one script does not leak into another */
    char *paths[2] = {(char *)script("m1.lua", "getmetatable('').__index.upper = function() return 'pwned' end\n"
                                               "string.len = nil\n"
                                               "function on_step(m) return {log = {a = ('x'):upper() == 'pwned' and 1 or 0}} end\n"),
                      (char *)script("m2.lua", "function lr() if ('a'):upper() ~= 'A' or string.len == nil then "
                                               "error('leaked') end return 1 end\n")};
    mf_hooks *h2 = NULL;
    CHECK_MSG(mf_hooks_load(NULL, paths, 2, 0, &h2) == 0, "%s", mf_last_error());
    if (h2) {
        CHECK_MSG(mf_hooks_lr(h2, 0, 1, 1, &v) == 0 && v == 1, "%s", mf_last_error());
        mf_hook_action act;
        CHECK(mf_hooks_on_step(h2, 5, 0, NULL, NULL, &act) == 0 && act.n_log == 1 && act.log_value[0] == 1);
        mf_hooks_free(h2);
    }

    /* an endless loop is stopped within a second, and the state stays usable */
    h = load1("loop.lua", "function lr(step) if step == 0 then while true do end end return 1 end\n"
                          "function ema_decay(step) local s = 0 while true do s = s + string.len('x') end end\n");
    CHECK_MSG(h != NULL, "%s", mf_last_error());
    if (h) {
        double t0 = now_s();
        CHECK(mf_hooks_lr(h, 0, 1, 1, &v) != 0);
        double el = now_s() - t0;
        CHECK_MSG(el < 1.0 + 0.5, "the loop ran %.2f s", el);
        CHECK_ERR_CONTAINS("limit");
        CHECK_ERR_CONTAINS("hook lr");
        CHECK(mf_hooks_lr(h, 1, 1, 1, &v) == 0 && v == 1);
        t0 = now_s();
        CHECK(mf_hooks_ema_decay(h, 1, &v) != 0);
        CHECK_MSG(now_s() - t0 < 1.5, "the loop with C calls ran %.2f s", now_s() - t0);
        mf_hooks_free(h);
    }
    /* a memory hog is stopped by the per-script limit */
    h = load1("mem.lua", "function lr() local t = {} for i = 1, 100 do t[i] = string.rep('x', 1 << 24) .. i end return 1 end\n");
    if (h) {
        CHECK(mf_hooks_lr(h, 0, 1, 1, &v) != 0);
        CHECK_ERR_CONTAINS("memory");
        mf_hooks_free(h);
    }
    /* math.random is seeded from the run's seed: the same numbers every run */
    char *rp[1] = {(char *)script("rnd.lua", "local x = math.random()\nfunction lr() return x end\n")};
    double a = -1, b = -2, c = -3;
    mf_hooks *r1 = NULL, *r2 = NULL, *r3 = NULL;
    CHECK(mf_hooks_load(NULL, rp, 1, 42, &r1) == 0 && mf_hooks_load(NULL, rp, 1, 42, &r2) == 0 &&
          mf_hooks_load(NULL, rp, 1, 43, &r3) == 0);
    if (r1 && r2 && r3) {
        mf_hooks_lr(r1, 0, 1, 1, &a), mf_hooks_lr(r2, 0, 1, 1, &b), mf_hooks_lr(r3, 0, 1, 1, &c);
        CHECK(a == b && a != c);
    }
    mf_hooks_free(r1), mf_hooks_free(r2), mf_hooks_free(r3);
}

static void test_actions(void) {
    mf_hooks *h = load1("act.lua", "function on_step(m)\n"
                                   "  if m.step == 10 then return {log = {z = m.loss * 2, a = m.step}, checkpoint = true} end\n"
                                   "  if m.step == 20 then return {stop = 'enough'} end\n"
                                   "  if m.step == 30 then return {bogus = 1} end\n"
                                   "  if m.step == 40 then return {log = {x = 'str'}} end\n"
                                   "  if m.step == 50 then return 5 end\n"
                                   "  if m.grad_norm ~= nil then error('NaN must be nil') end\n"
                                   "end\n"
                                   "function on_eval(m) return {log = {fid_x10 = m.fid * 10}} end\n");
    CHECK_MSG(h != NULL, "%s", mf_last_error());
    if (!h) return;
    const char *names[2] = {"loss", "grad_norm"};
    double vals[2] = {0.25, NAN};
    mf_hook_action act;
    CHECK(mf_hooks_on_step(h, 10, 2, names, vals, &act) == 0);
    CHECK(act.n_log == 2 && strcmp(act.log_name[0], "a") == 0 && act.log_value[0] == 10 &&
          strcmp(act.log_name[1], "z") == 0 && act.log_value[1] == 0.5 && act.checkpoint && !act.stop[0]);
    CHECK(mf_hooks_on_step(h, 20, 2, names, vals, &act) == 0 && strcmp(act.stop, "enough") == 0 && !act.checkpoint);
    CHECK(mf_hooks_on_step(h, 30, 2, names, vals, &act) != 0);
    CHECK_ERR_CONTAINS("returned the key 'bogus'; known: log, checkpoint, stop");
    CHECK(mf_hooks_on_step(h, 40, 2, names, vals, &act) != 0);
    CHECK_ERR_CONTAINS("log.x is a string, not a number");
    CHECK(mf_hooks_on_step(h, 50, 2, names, vals, &act) != 0);
    CHECK_ERR_CONTAINS("returned a number");
    CHECK(mf_hooks_on_step(h, 60, 2, names, vals, &act) == 0 && act.n_log == 0);
    const char *en[1] = {"fid"};
    double ev[1] = {3.5};
    CHECK(mf_hooks_on_eval(h, 100, 1, en, ev, &act) == 0 && act.n_log == 1 && act.log_value[0] == 35);
    mf_hooks_free(h);
}

/* The shipped scripts load, and warmup_cosine.lua is the built-in schedule bit for bit. */
static void test_shipped(void) {
    const char *src = getenv("MFPIPE_SOURCE_DIR");
    if (!src) src = MFPIPE_SOURCE_DIR;
    static const char *names[] = {"warmup_cosine.lua", "step_decay.lua", "mid_t_weighting.lua", "min_snr.lua",
                                  "meanflow_interval.lua", "early_stop.lua"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/scripts/lua/%s", src, names[i]);
        char *pp[1] = {p};
        mf_hooks *h = NULL;
        CHECK_MSG(mf_hooks_load(NULL, pp, 1, 0, &h) == 0, "%s: %s", names[i], mf_last_error());
        if (!h) continue;
        if (i == 0) {
            for (int64_t total = 150; total <= 3000; total += 2850) {
                mf_sched sc;
                mf_sched_init(&sc, MF_SCHED_COSINE, 2e-3f, 100, total, 0.05);
                int same = 0;
                for (int64_t s = 0; s < total; s++) {
                    double v = -1;
                    if (mf_hooks_lr(h, s, total, (double)2e-3f, &v) != 0) break;
                    same += (float)v == (float)mf_sched_lr(&sc, s);
                }
                CHECK_MSG(same == total, "%d of %lld steps equal", same, (long long)total);
            }
        }
        if (i == 1) {
            double a, b, c;
            mf_hooks_lr(h, 50, 1000, 1.0, &a), mf_hooks_lr(h, 600, 1000, 1.0, &b), mf_hooks_lr(h, 950, 1000, 1.0, &c);
            CHECK_NEAR(a, 0.51, 1e-12);
            CHECK_NEAR(b, 0.3, 1e-12);
            CHECK_NEAR(c, 0.027, 1e-12);
        }
        if (i == 2 || i == 3) {
            /* mean weight over a fine uniform grid of t is 1 */
            enum { N = 4000 };
            static float t[N], w[N];
            for (int k = 0; k < N; k++) t[k] = (k + 0.5f) / N;
            CHECK(mf_hooks_loss_weight(h, N, t, NULL, 0, NULL, NULL, w) == 0);
            double m = 0;
            for (int k = 0; k < N; k++) m += w[k] / N;
            CHECK_NEAR(m, 1.0, 1e-3);
            if (i == 2) CHECK(w[N / 2] > w[0] && w[N / 2] > w[N - 1]);
            if (i == 3) CHECK(w[N - 1] < w[N / 4]);
        }
        if (i == 4) {
            float t[2] = {0.9f, 0.5f}, r[2] = {0.1f, 0.5f}, w[2];
            CHECK(mf_hooks_loss_weight(h, 2, t, r, 10000, NULL, NULL, w) == 0);
            CHECK(w[0] > w[1]);
            CHECK_NEAR(w[0] + w[1], 2.0, 1e-5);
            CHECK(mf_hooks_loss_weight(h, 2, t, NULL, 0, NULL, NULL, w) != 0);
            CHECK_ERR_CONTAINS("needs a u(z, r, t) model");
        }
        if (i == 5) {
            const char *nm[1] = {"loss"};
            double lv[1] = {1.0};
            mf_hook_action act;
            int stopped_at = -1;
            for (int k = 1; k <= 40 && stopped_at < 0; k++) {
                if (mf_hooks_on_step(h, k * 10, 1, nm, lv, &act) != 0) break;
                if (act.stop[0]) stopped_at = k;
            }
            CHECK_MSG(stopped_at == 11, "stopped at log %d", stopped_at);
        }
        mf_hooks_free(h);
    }
}

static void test_sweep_sets(void) {
    char ***sets = NULL;
    int n = 0;
    const char *p = script("sw.lua", "local out = {}\n"
                                     "for _, c in ipairs({16, 32}) do\n"
                                     "  out[#out + 1] = {['model.channels'] = c, ['train.optimizer.lr'] = 2e-3 * c / 16,\n"
                                     "                   ['model.channel_mult'] = {1, 2}, ['sample.sampler'] = 'heun', ['ema.warmup'] = true}\n"
                                     "end\n"
                                     "out[#out + 1] = {'train.steps=10', 'sample.steps=2'}\n"
                                     "return out\n");
    CHECK_MSG(mf_lua_sweep_sets(p, 0, &sets, &n) == 0, "%s", mf_last_error());
    CHECK(n == 3);
    if (n == 3) {
        const char *want0[] = {"ema.warmup=true", "model.channel_mult=[1,2]", "model.channels=16", "sample.sampler=heun",
                               "train.optimizer.lr=0.002", NULL};
        for (int j = 0; want0[j]; j++) CHECK_MSG(sets[0][j] && strcmp(sets[0][j], want0[j]) == 0, "%s", sets[0][j]);
        CHECK(sets[0][5] == NULL);
        CHECK(strcmp(sets[1][4], "train.optimizer.lr=0.004") == 0);
        CHECK(strcmp(sets[2][0], "train.steps=10") == 0 && strcmp(sets[2][1], "sample.steps=2") == 0 && !sets[2][2]);
    }
    mf_lua_sweep_sets_free(sets, n);
    CHECK(mf_lua_sweep_sets(script("sw2.lua", "return 5\n"), 0, &sets, &n) != 0);
    CHECK_ERR_CONTAINS("must return a list of override sets");
    CHECK(mf_lua_sweep_sets(script("sw3.lua", "return {{a = function() end}}\n"), 0, &sets, &n) != 0);
    CHECK_ERR_CONTAINS("set 1: a: a function cannot be an override value");
    CHECK(mf_lua_sweep_sets(script("sw4.lua", "return {{'novalue'}}\n"), 0, &sets, &n) != 0);
    CHECK_ERR_CONTAINS("\"key=value\"");
    CHECK(mf_lua_sweep_sets(script("sw5.lua", "os.exit(1)\n"), 0, &sets, &n) != 0);
    CHECK_ERR_CONTAINS("'os' is not available");
}

int main(void) {
    mf_log_set_quiet(1);
    g_dir = mf_test_tmpdir();
    test_values();
    test_bad_results();
    test_load_checks();
    test_sandbox();
    test_actions();
    test_shipped();
    test_sweep_sets();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return mf_test_summary("test_hooks");
}
