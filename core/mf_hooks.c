/* mf_hooks.c - Lua 5.4 hooks and sweep scripts in a sandbox (mf_hooks.h, docs/hooks.md).
 *
 * One lua_State per script, with its own allocator (the memory limit) and a count hook (the
 * instruction and time limits). Only base, table, string, math and utf8 are opened; the base
 * functions that reach files or bytecode are replaced by functions that say why they are missing;
 * reading a removed library's global (os, io, require, ...) is an error saying the same. */
#include "mf_hooks.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mf_error.h"
#include "mf_io.h"
#include "mf_json.h"
#include "mf_log.h"

#define COUNT_EVERY 10000
#define MAX_SCRIPT_BYTES ((size_t)1 << 20)

static const char *const k_hook_names[MF_HOOK_COUNT] = {"lr", "loss_weight", "loss_weight_batch", "ema_decay",
                                                        "on_step", "on_eval"};

const char *mf_hook_name(mf_hook_kind k) { return (unsigned)k < MF_HOOK_COUNT ? k_hook_names[k] : "?"; }

typedef struct script {
    char *path;
    char sha[65];
    lua_State *L;
    size_t bytes, limit;
    long long count;     /* instructions of the current call (in COUNT_EVERY units, approximately) */
    double t0;           /* start of the current call */
    int limit_hit;       /* 1: instructions, 2: time */
    bool has[MF_HOOK_COUNT];
    int line[MF_HOOK_COUNT];
    mf_hook_kind cur_kind; /* the current call (its error message is formatted only on failure) */
    int64_t cur_step;
    char what_buf[1200];
} script;

struct mf_hooks {
    int n;
    script *s;
    int owner[MF_HOOK_COUNT]; /* value hooks: the script defining it, or -1 */
    double seconds;
    int64_t calls;
};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- the sandbox ----------------------------------------------------------------------------- */
static void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    script *s = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        s->bytes -= old;
        return NULL;
    }
    if (nsize > old && s->bytes + (nsize - old) > s->limit) return NULL;
    void *p = realloc(ptr, nsize);
    if (p) s->bytes = s->bytes - old + nsize;
    return p;
}

static script *script_of(lua_State *L) {
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return ud;
}

static void count_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    script *s = script_of(L);
    s->count += COUNT_EVERY;
    if (s->count > MF_HOOK_MAX_INSTRUCTIONS) {
        s->limit_hit = 1;
        luaL_error(L, "instruction limit: more than %I Lua VM instructions in one call (an endless loop?)",
                   (lua_Integer)MF_HOOK_MAX_INSTRUCTIONS);
    }
    if (now_s() - s->t0 > MF_HOOK_MAX_SECONDS) {
        s->limit_hit = 2;
        luaL_error(L, "time limit: the call ran longer than %f s", (lua_Number)MF_HOOK_MAX_SECONDS);
    }
}

static int l_missing(lua_State *L) {
    return luaL_error(L, "%s is not available in mfpipe scripts (sandbox: only base, table, string, math "
                         "and utf8; docs/hooks.md)",
                      lua_tostring(L, lua_upvalueindex(1)));
}

/* load(chunk [, chunkname [, mode [, env]]]) for strings of text only */
static int l_load(lua_State *L) {
    size_t len;
    const char *src = lua_tolstring(L, 1, &len);
    if (!src || lua_type(L, 1) != LUA_TSTRING)
        return luaL_error(L, "load: only a string of Lua text can be loaded in mfpipe scripts (sandbox)");
    if (len > 0 && src[0] == LUA_SIGNATURE[0])
        return luaL_error(L, "load: binary chunks (bytecode) are not allowed in mfpipe scripts (sandbox)");
    const char *name = luaL_optstring(L, 2, "=(load)");
    int has_env = !lua_isnone(L, 4);
    if (luaL_loadbufferx(L, src, len, name, "t") != LUA_OK) {
        luaL_pushfail(L);
        lua_insert(L, -2);
        return 2;
    }
    if (has_env) {
        lua_pushvalue(L, 4);
        if (!lua_setupvalue(L, -2, 1)) lua_pop(L, 1);
    }
    return 1;
}

/* print(...) into the log, as "lua NAME: ..." */
static int l_print(lua_State *L) {
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1) luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    script *s = script_of(L);
    const char *base = strrchr(s->path, '/');
    mf_info("lua %s: %s", base ? base + 1 : s->path, lua_tostring(L, -1));
    return 0;
}

static const char *const k_forbidden[] = {"os", "io", "require", "package", "debug", "dofile", "loadfile",
                                          "collectgarbage", "coroutine", "loadstring", NULL};

/* __index of _G: the removed libraries say why; any other missing global is nil */
static int l_global_index(lua_State *L) {
    const char *k = lua_tostring(L, 2);
    for (int i = 0; k && lua_type(L, 2) == LUA_TSTRING && k_forbidden[i]; i++)
        if (strcmp(k, k_forbidden[i]) == 0)
            return luaL_error(L, "'%s' is not available in mfpipe scripts (sandbox: only base, table, string, "
                                 "math and utf8; docs/hooks.md)",
                              k);
    lua_pushnil(L);
    return 1;
}

static int traceback(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static void set_missing(lua_State *L, int table, const char *field, const char *shown) {
    lua_pushstring(L, shown);
    lua_pushcclosure(L, l_missing, 1);
    lua_setfield(L, table, field);
}

static int sandbox_open(script *s, uint64_t seed) {
    s->limit = MF_HOOK_MAX_BYTES;
    s->L = lua_newstate(l_alloc, s);
    if (!s->L) return mf_fail("%s: cannot create a Lua state (out of memory)", s->path);
    lua_State *L = s->L;
    static const luaL_Reg libs[] = {{LUA_GNAME, luaopen_base},       {LUA_TABLIBNAME, luaopen_table},
                                    {LUA_STRLIBNAME, luaopen_string}, {LUA_MATHLIBNAME, luaopen_math},
                                    {LUA_UTF8LIBNAME, luaopen_utf8},  {NULL, NULL}};
    for (const luaL_Reg *l = libs; l->name; l++) {
        luaL_requiref(L, l->name, l->func, 1);
        lua_pop(L, 1);
    }
    lua_pushglobaltable(L);
    int g = lua_gettop(L);
    set_missing(L, g, "dofile", "dofile");
    set_missing(L, g, "loadfile", "loadfile");
    set_missing(L, g, "collectgarbage", "collectgarbage");
    lua_pushcfunction(L, l_load);
    lua_setfield(L, g, "load");
    lua_pushcfunction(L, l_print);
    lua_setfield(L, g, "print");
    lua_getfield(L, g, "string");
    set_missing(L, lua_gettop(L), "dump", "string.dump");
    lua_pop(L, 1);
    /* math.random from the run's seed, so scripts are reproducible */
    lua_getfield(L, g, "math");
    lua_getfield(L, -1, "randomseed");
    lua_pushinteger(L, (lua_Integer)(seed & 0x7fffffffffffffffULL));
    lua_call(L, 1, 0);
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushcfunction(L, l_global_index);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, g);
    lua_pop(L, 1);
    lua_sethook(L, count_hook, LUA_MASKCOUNT, COUNT_EVERY);
    return 0;
}

/* Protected call of the function below nargs arguments, with the limits and a traceback. On error,
 * mf_fail("WHAT: MESSAGE\nstack traceback: ...") (what NULL: the hook call described by s->cur_kind and
 * s->cur_step, formatted only after a failure, so calls cost no formatting) and the stack is restored. */
static int pcall_limited(script *s, int nargs, int nres, const char *what) {
    lua_State *L = s->L;
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, traceback);
    lua_insert(L, base);
    s->count = 0;
    s->limit_hit = 0;
    s->t0 = now_s();
    int rc = lua_pcall(L, nargs, nres, base);
    lua_remove(L, base);
    if (rc == LUA_OK) return 0;
    if (!what) {
        snprintf(s->what_buf, sizeof s->what_buf, "hook %s (%s:%d) at step %lld", k_hook_names[s->cur_kind], s->path,
                 s->line[s->cur_kind], (long long)s->cur_step);
        what = s->what_buf;
    }
    const char *msg = lua_tostring(L, -1);
    if (rc == LUA_ERRMEM)
        mf_fail("%s: out of memory (scripts are limited to %zu MiB each)", what, MF_HOOK_MAX_BYTES >> 20);
    else mf_fail("%s: %s", what, msg ? msg : "(error without a message)");
    lua_pop(L, 1);
    return -1;
}

static void script_close(script *s) {
    if (s->L) lua_close(s->L);
    free(s->path);
    memset(s, 0, sizeof *s);
}

/* Read, hash and run the chunk once. The globals the sandbox made are recorded before, so the new
 * global functions are the script's. */
static int script_load(script *s, const char *path, uint64_t seed, char ***before, int *n_before) {
    s->path = mf_xstrdup(path);
    uint8_t *buf = NULL;
    size_t len = 0;
    int gz = 0;
    if (mf_read_file_max(path, MAX_SCRIPT_BYTES, "a hook script", &buf, &len, &gz) != 0)
        return mf_error_prefix("hooks: ");
    if (gz) {
        free(buf);
        return mf_fail("hooks: %s: a gzipped file, not a Lua script", path);
    }
    mf_sha256_hex(buf, len, s->sha);
    if (len > 0 && buf[0] == (uint8_t)LUA_SIGNATURE[0]) {
        free(buf);
        return mf_fail("hooks: %s: a precompiled (binary) Lua chunk; scripts are loaded as text only", path);
    }
    if (sandbox_open(s, seed) != 0) {
        free(buf);
        return -1;
    }
    lua_State *L = s->L;
    if (before) {
        *n_before = 0;
        lua_pushglobaltable(L);
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            if (lua_type(L, -2) == LUA_TSTRING) {
                *before = mf_xrealloc(*before, sizeof **before * (size_t)(*n_before + 1));
                (*before)[(*n_before)++] = mf_xstrdup(lua_tostring(L, -2));
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    char *name = mf_xasprintf("@%s", path);
    int rc = luaL_loadbufferx(L, (const char *)buf, len, name, "t");
    free(name);
    free(buf);
    if (rc != LUA_OK) {
        mf_fail("hooks: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

static int edit_distance(const char *a, const char *b) {
    int la = (int)strlen(a), lb = (int)strlen(b);
    if (la > 64 || lb > 64) return 99;
    int d[65][65];
    for (int i = 0; i <= la; i++) d[i][0] = i;
    for (int j = 0; j <= lb; j++) d[0][j] = j;
    for (int i = 1; i <= la; i++)
        for (int j = 1; j <= lb; j++) {
            int c = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < c) c = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < c) c = d[i][j - 1] + 1;
            d[i][j] = c;
        }
    return d[la][lb];
}

static bool in_list(char **l, int n, const char *k) {
    for (int i = 0; i < n; i++)
        if (strcmp(l[i], k) == 0) return true;
    return false;
}

/* After the chunk ran: which hooks it defines; a new global function that is no hook is an error
 * (the first by line, so the message does not depend on the table's order). */
static int script_scan(script *s, char **before, int n_before) {
    lua_State *L = s->L;
    char bad[128] = "";
    int bad_line = 0;
    lua_pushglobaltable(L);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TFUNCTION) {
            const char *k = lua_tostring(L, -2);
            lua_Debug ar;
            lua_pushvalue(L, -1);
            lua_getinfo(L, ">S", &ar);
            int kind = -1;
            for (int h = 0; h < MF_HOOK_COUNT; h++)
                if (strcmp(k, k_hook_names[h]) == 0) kind = h;
            if (kind >= 0) {
                s->has[kind] = true;
                s->line[kind] = ar.linedefined;
            } else if (!in_list(before, n_before, k) &&
                       (!bad[0] || ar.linedefined < bad_line || (ar.linedefined == bad_line && strcmp(k, bad) < 0))) {
                snprintf(bad, sizeof bad, "%s", k);
                bad_line = ar.linedefined;
            }
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (!bad[0]) return 0;
    int best = -1, bd = 99;
    for (int h = 0; h < MF_HOOK_COUNT; h++) {
        int dd = edit_distance(bad, k_hook_names[h]);
        if (dd < bd) bd = dd, best = h;
    }
    int lim = (int)strlen(bad) / 3 > 2 ? (int)strlen(bad) / 3 : 2;
    static const char *hooks = "hooks: lr, loss_weight, loss_weight_batch, ema_decay, on_step, on_eval; helpers must be "
                               "local functions";
    if (best >= 0 && bd <= lim)
        return mf_fail("hooks: %s:%d: global function '%s' is not a hook; did you mean '%s'? (%s)", s->path, bad_line, bad,
                       k_hook_names[best], hooks);
    return mf_fail("hooks: %s:%d: global function '%s' is not a hook (%s)", s->path, bad_line, bad, hooks);
}

static char *resolve(const char *base_dir, const char *p) {
    if (p[0] == '/' || !base_dir || !*base_dir) return mf_xstrdup(p);
    return mf_xasprintf("%s/%s", base_dir, p);
}

int mf_hooks_load(const char *base_dir, char *const *paths, int n, uint64_t seed, mf_hooks **out) {
    *out = NULL;
    mf_hooks *h = mf_xcalloc(1, sizeof *h);
    for (int k = 0; k < MF_HOOK_COUNT; k++) h->owner[k] = -1;
    h->s = mf_xcalloc((size_t)(n > 0 ? n : 1), sizeof *h->s);
    for (int i = 0; i < n; i++) {
        script *s = &h->s[i];
        h->n = i + 1;
        char *p = resolve(base_dir, paths[i]);
        char **before = NULL;
        int n_before = 0, rc = script_load(s, p, seed ^ (0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1)), &before, &n_before);
        free(p);
        if (rc == 0) {
            char *what = mf_xasprintf("hooks: %s (loading)", s->path);
            rc = pcall_limited(s, 0, 0, what);
            free(what);
        }
        if (rc == 0) rc = script_scan(s, before, n_before);
        for (int j = 0; j < n_before; j++) free(before[j]);
        free(before);
        if (rc != 0) {
            mf_hooks_free(h);
            return -1;
        }
        for (int k = 0; k < MF_HOOK_COUNT; k++) {
            if (!s->has[k] || k == MF_HOOK_ON_STEP || k == MF_HOOK_ON_EVAL) continue;
            int kk = k == MF_HOOK_LOSS_WEIGHT_BATCH ? MF_HOOK_LOSS_WEIGHT : k;
            int other = h->owner[kk] >= 0 ? h->owner[kk] : h->owner[k];
            if (other >= 0 && other != i) {
                mf_fail("hooks: %s is defined by both %s:%d and %s:%d; one script may define each value hook",
                        k_hook_names[k], h->s[other].path,
                        h->s[other].has[k] ? h->s[other].line[k] : h->s[other].line[kk], s->path, s->line[k]);
                mf_hooks_free(h);
                return -1;
            }
            h->owner[k] = i;
            h->owner[kk] = i;
        }
    }
    *out = h;
    return 0;
}

void mf_hooks_free(mf_hooks *h) {
    if (!h) return;
    for (int i = 0; i < h->n; i++) script_close(&h->s[i]);
    free(h->s);
    free(h);
}

int mf_hooks_count(const mf_hooks *h) { return h ? h->n : 0; }
const char *mf_hooks_path(const mf_hooks *h, int i) { return h && i >= 0 && i < h->n ? h->s[i].path : NULL; }
const char *mf_hooks_sha256(const mf_hooks *h, int i) { return h && i >= 0 && i < h->n ? h->s[i].sha : NULL; }

bool mf_hooks_has(const mf_hooks *h, mf_hook_kind k) {
    if (!h || (unsigned)k >= MF_HOOK_COUNT) return false;
    if (k == MF_HOOK_ON_STEP || k == MF_HOOK_ON_EVAL) {
        for (int i = 0; i < h->n; i++)
            if (h->s[i].has[k]) return true;
        return false;
    }
    return h->owner[k] >= 0;
}

double mf_hooks_seconds(const mf_hooks *h, int64_t *calls) {
    if (calls) *calls = h ? h->calls : 0;
    return h ? h->seconds : 0.0;
}

/* ---- calls ----------------------------------------------------------------------------------- */
/* Push the hook function of script s; false if the script does not define it (now). */
static bool push_hook(script *s, mf_hook_kind k) {
    lua_getglobal(s->L, k_hook_names[k]);
    if (lua_type(s->L, -1) == LUA_TFUNCTION) return true;
    lua_pop(s->L, 1);
    return false;
}

static int call(mf_hooks *h, script *s, mf_hook_kind k, int nargs, int nres, int64_t step) {
    double t = now_s();
    s->cur_kind = k;
    s->cur_step = step;
    int rc = pcall_limited(s, nargs, nres, NULL);
    h->seconds += now_s() - t;
    h->calls++;
    return rc;
}

/* The number on top of the stack (popped), checked. */
static int result_number(script *s, mf_hook_kind k, int64_t step, int row, double lo, double hi, double *out) {
    lua_State *L = s->L;
    int ty = lua_type(L, -1);
    char at[64] = "";
    if (row >= 0) snprintf(at, sizeof at, " (row %d)", row);
    if (ty != LUA_TNUMBER) {
        int rc = mf_fail("hook %s (%s:%d) at step %lld%s returned %s, not a number", k_hook_names[k], s->path,
                         s->line[k], (long long)step, at, ty == LUA_TNIL ? "nil (nothing)" : lua_typename(L, ty));
        lua_pop(L, 1);
        return rc;
    }
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (!isfinite(v))
        return mf_fail("hook %s (%s:%d) at step %lld%s returned %g (not finite)", k_hook_names[k], s->path,
                       s->line[k], (long long)step, at, v);
    if (v < lo || v > hi) {
        if (k == MF_HOOK_LOSS_WEIGHT || k == MF_HOOK_LOSS_WEIGHT_BATCH)
            return mf_fail("hook %s (%s:%d) at step %lld%s returned a negative weight (%g); weights must be >= 0",
                           k_hook_names[k], s->path, s->line[k], (long long)step, at, v);
        return mf_fail("hook %s (%s:%d) at step %lld returned %g; it must be in [%g, %g]", k_hook_names[k], s->path,
                       s->line[k], (long long)step, v, lo, hi);
    }
    *out = v;
    return 0;
}

int mf_hooks_lr(mf_hooks *h, int64_t step, int64_t total_steps, double base_lr, double *lr) {
    MF_ASSERT(mf_hooks_has(h, MF_HOOK_LR));
    script *s = &h->s[h->owner[MF_HOOK_LR]];
    if (!push_hook(s, MF_HOOK_LR)) return mf_fail("hook lr (%s) is no longer a function", s->path);
    lua_pushinteger(s->L, (lua_Integer)step);
    lua_pushinteger(s->L, (lua_Integer)total_steps);
    lua_pushnumber(s->L, base_lr);
    MF_TRY(call(h, s, MF_HOOK_LR, 3, 1, step));
    return result_number(s, MF_HOOK_LR, step, -1, 0.0, HUGE_VAL, lr);
}

int mf_hooks_loss_weight(mf_hooks *h, int n, const float *t, const float *r, int64_t step, const int32_t *labels,
                         const uint8_t *dropped, float *w) {
    MF_ASSERT(mf_hooks_has(h, MF_HOOK_LOSS_WEIGHT));
    script *s = &h->s[h->owner[MF_HOOK_LOSS_WEIGHT]];
    lua_State *L = s->L;
    if (s->has[MF_HOOK_LOSS_WEIGHT_BATCH] && push_hook(s, MF_HOOK_LOSS_WEIGHT_BATCH)) {
        lua_createtable(L, n, 0);
        for (int i = 0; i < n; i++) lua_pushnumber(L, t[i]), lua_rawseti(L, -2, i + 1);
        if (r) {
            lua_createtable(L, n, 0);
            for (int i = 0; i < n; i++) lua_pushnumber(L, r[i]), lua_rawseti(L, -2, i + 1);
        } else lua_pushnil(L);
        lua_pushinteger(L, (lua_Integer)step);
        if (labels) {
            /* dropped rows (class dropout) have no label: their entries are false */
            lua_createtable(L, n, 0);
            for (int i = 0; i < n; i++) {
                if (dropped && dropped[i]) lua_pushboolean(L, 0);
                else lua_pushinteger(L, labels[i]);
                lua_rawseti(L, -2, i + 1);
            }
        } else lua_pushnil(L);
        MF_TRY(call(h, s, MF_HOOK_LOSS_WEIGHT_BATCH, 4, 1, step));
        if (lua_type(L, -1) != LUA_TTABLE) {
            int rc = mf_fail("hook loss_weight_batch (%s:%d) at step %lld returned %s, not an array of %d numbers",
                             s->path, s->line[MF_HOOK_LOSS_WEIGHT_BATCH], (long long)step, luaL_typename(L, -1), n);
            lua_pop(L, 1);
            return rc;
        }
        lua_Unsigned len = lua_rawlen(L, -1);
        if (len != (lua_Unsigned)n) {
            lua_pop(L, 1);
            return mf_fail("hook loss_weight_batch (%s:%d) at step %lld returned %llu weights for a batch of %d",
                           s->path, s->line[MF_HOOK_LOSS_WEIGHT_BATCH], (long long)step, (unsigned long long)len, n);
        }
        for (int i = 0; i < n; i++) {
            lua_rawgeti(L, -1, i + 1);
            double v;
            if (result_number(s, MF_HOOK_LOSS_WEIGHT_BATCH, step, i + 1, 0.0, HUGE_VAL, &v) != 0) {
                lua_pop(L, 1);
                return -1;
            }
            w[i] = (float)v;
        }
        lua_pop(L, 1);
        return 0;
    }
    for (int i = 0; i < n; i++) {
        if (!push_hook(s, MF_HOOK_LOSS_WEIGHT)) return mf_fail("hook loss_weight (%s) is no longer a function", s->path);
        lua_pushnumber(L, t[i]);
        if (r) lua_pushnumber(L, r[i]);
        else lua_pushnil(L);
        lua_pushinteger(L, (lua_Integer)step);
        if (labels && !(dropped && dropped[i])) lua_pushinteger(L, labels[i]);
        else lua_pushnil(L);
        MF_TRY(call(h, s, MF_HOOK_LOSS_WEIGHT, 4, 1, step));
        double v;
        MF_TRY(result_number(s, MF_HOOK_LOSS_WEIGHT, step, i + 1, 0.0, HUGE_VAL, &v));
        w[i] = (float)v;
    }
    return 0;
}

int mf_hooks_ema_decay(mf_hooks *h, int64_t step, double *decay) {
    MF_ASSERT(mf_hooks_has(h, MF_HOOK_EMA_DECAY));
    script *s = &h->s[h->owner[MF_HOOK_EMA_DECAY]];
    if (!push_hook(s, MF_HOOK_EMA_DECAY)) return mf_fail("hook ema_decay (%s) is no longer a function", s->path);
    lua_pushinteger(s->L, (lua_Integer)step);
    MF_TRY(call(h, s, MF_HOOK_EMA_DECAY, 1, 1, step));
    return result_number(s, MF_HOOK_EMA_DECAY, step, -1, 0.0, 1.0, decay);
}

/* The returned table of on_step/on_eval (on top; popped) into act. */
static int read_action(script *s, mf_hook_kind k, int64_t step, mf_hook_action *act) {
    lua_State *L = s->L;
    int top = lua_gettop(L), ty = lua_type(L, -1);
    if (ty == LUA_TNIL) {
        lua_pop(L, 1);
        return 0;
    }
    char what[512];
    snprintf(what, sizeof what, "hook %s (%s:%d) at step %lld", k_hook_names[k], s->path, s->line[k], (long long)step);
    if (ty != LUA_TTABLE) {
        lua_pop(L, 1);
        return mf_fail("%s returned a %s; it may return nothing or a table {log = {...}, checkpoint = true, stop = "
                       "\"reason\"}",
                       what, lua_typename(L, ty));
    }
    int rc = 0;
    lua_pushnil(L);
    while (rc == 0 && lua_next(L, -2)) {
        const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        if (key && strcmp(key, "log") == 0) {
            if (lua_type(L, -1) != LUA_TTABLE) rc = mf_fail("%s: log must be a table {name = number}", what);
            /* names sorted, so the metrics line is the same every run */
            lua_pushnil(L);
            while (rc == 0 && lua_next(L, -2)) {
                if (lua_type(L, -2) != LUA_TSTRING) {
                    rc = mf_fail("%s: log: keys must be metric names (strings)", what);
                    lua_pop(L, 1);
                    break;
                }
                const char *nm = lua_tostring(L, -2);
                size_t nl = strlen(nm);
                bool okname = nl > 0 && nl < 64;
                for (size_t c = 0; okname && c < nl; c++)
                    okname = (nm[c] >= 'a' && nm[c] <= 'z') || (nm[c] >= 'A' && nm[c] <= 'Z') ||
                             (nm[c] >= '0' && nm[c] <= '9') || nm[c] == '_' || nm[c] == '.' || nm[c] == '/';
                if (!okname) rc = mf_fail("%s: log: '%s' is not a metric name (letters, digits, _ . /; < 64)", what, nm);
                else if (lua_type(L, -1) != LUA_TNUMBER && lua_type(L, -1) != LUA_TBOOLEAN)
                    rc = mf_fail("%s: log.%s is a %s, not a number", what, nm, luaL_typename(L, -1));
                else {
                    double v = lua_type(L, -1) == LUA_TBOOLEAN ? (double)lua_toboolean(L, -1) : lua_tonumber(L, -1);
                    int at = -1;
                    for (int i = 0; i < act->n_log; i++)
                        if (strcmp(act->log_name[i], nm) == 0) at = i;
                    if (at < 0) {
                        if (act->n_log == MF_HOOK_MAX_LOG) rc = mf_fail("%s: log: more than %d metrics", what, MF_HOOK_MAX_LOG);
                        else {
                            at = act->n_log++;
                            /* insertion in sorted order */
                            while (at > 0 && strcmp(act->log_name[at - 1], nm) > 0) {
                                memcpy(act->log_name[at], act->log_name[at - 1], 64);
                                act->log_value[at] = act->log_value[at - 1];
                                at--;
                            }
                            snprintf(act->log_name[at], 64, "%s", nm);
                        }
                    }
                    if (rc == 0) act->log_value[at] = v;
                }
                lua_pop(L, 1);
            }
        } else if (key && strcmp(key, "checkpoint") == 0) {
            if (lua_type(L, -1) != LUA_TBOOLEAN) rc = mf_fail("%s: checkpoint must be true or false", what);
            else act->checkpoint |= lua_toboolean(L, -1) != 0;
        } else if (key && strcmp(key, "stop") == 0) {
            if (lua_type(L, -1) == LUA_TBOOLEAN) {
                if (lua_toboolean(L, -1) && !act->stop[0]) snprintf(act->stop, sizeof act->stop, "%s", s->path);
            } else if (lua_type(L, -1) != LUA_TSTRING) rc = mf_fail("%s: stop must be a string (the reason)", what);
            else if (!act->stop[0]) {
                snprintf(act->stop, sizeof act->stop, "%s", lua_tostring(L, -1));
                if (!act->stop[0]) snprintf(act->stop, sizeof act->stop, "%s", s->path);
            }
        } else {
            rc = mf_fail("%s returned the key '%s'; known: log, checkpoint, stop", what,
                         key ? key : luaL_typename(L, -2));
        }
        lua_pop(L, 1);
    }
    lua_settop(L, top - 1);
    return rc;
}

static int on_metrics(mf_hooks *h, mf_hook_kind k, int64_t step, int n, const char *const *names,
                      const double *values, mf_hook_action *act) {
    memset(act, 0, sizeof *act);
    for (int i = 0; h && i < h->n; i++) {
        script *s = &h->s[i];
        if (!s->has[k] || !push_hook(s, k)) continue;
        lua_State *L = s->L;
        lua_createtable(L, 0, n + 1);
        lua_pushinteger(L, (lua_Integer)step);
        lua_setfield(L, -2, "step");
        for (int j = 0; j < n; j++) {
            if (!isfinite(values[j])) continue;
            lua_pushnumber(L, values[j]);
            lua_setfield(L, -2, names[j]);
        }
        MF_TRY(call(h, s, k, 1, 1, step));
        MF_TRY(read_action(s, k, step, act));
    }
    return 0;
}

int mf_hooks_on_step(mf_hooks *h, int64_t step, int n, const char *const *names, const double *values,
                     mf_hook_action *act) {
    return on_metrics(h, MF_HOOK_ON_STEP, step, n, names, values, act);
}

int mf_hooks_on_eval(mf_hooks *h, int64_t step, int n, const char *const *names, const double *values,
                     mf_hook_action *act) {
    return on_metrics(h, MF_HOOK_ON_EVAL, step, n, names, values, act);
}

/* ---- sweep scripts --------------------------------------------------------------------------- */
static int format_value(lua_State *L, int idx, int depth, mf_buf *b, const char *where) {
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) mf_buf_printf(b, "%lld", (long long)lua_tointeger(L, idx));
        else {
            double v = lua_tonumber(L, idx);
            if (!isfinite(v)) return mf_fail("%s: the value %g is not finite", where, v);
            char tmp[40];
            snprintf(tmp, sizeof tmp, "%.15g", v);
            if (strtod(tmp, NULL) != v) snprintf(tmp, sizeof tmp, "%.17g", v);
            if (!strpbrk(tmp, ".eEn")) strcat(tmp, ".0");
            mf_buf_puts(b, tmp);
        }
        return 0;
    case LUA_TSTRING: mf_buf_puts(b, lua_tostring(L, idx)); return 0;
    case LUA_TBOOLEAN: mf_buf_puts(b, lua_toboolean(L, idx) ? "true" : "false"); return 0;
    case LUA_TTABLE: {
        if (depth > 8) return mf_fail("%s: lists nested too deeply", where);
        lua_Unsigned len = lua_rawlen(L, idx);
        mf_buf_puts(b, "[");
        for (lua_Unsigned i = 1; i <= len; i++) {
            if (i > 1) mf_buf_puts(b, ",");
            lua_rawgeti(L, idx, (lua_Integer)i);
            int rc = format_value(L, -1, depth + 1, b, where);
            lua_pop(L, 1);
            if (rc) return rc;
        }
        mf_buf_puts(b, "]");
        return 0;
    }
    default: return mf_fail("%s: a %s cannot be an override value", where, luaL_typename(L, idx));
    }
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

void mf_lua_sweep_sets_free(char ***sets, int n_sets) {
    for (int i = 0; sets && i < n_sets; i++) {
        for (int j = 0; sets[i] && sets[i][j]; j++) free(sets[i][j]);
        free(sets[i]);
    }
    free(sets);
}

int mf_lua_sweep_sets(const char *path, uint64_t seed, char ****sets_out, int *n_out) {
    *sets_out = NULL;
    *n_out = 0;
    script s = {0};
    if (script_load(&s, path, seed, NULL, NULL) != 0) {
        script_close(&s);
        return -1;
    }
    char *what = mf_xasprintf("sweep script %s", path);
    int rc = pcall_limited(&s, 0, 1, what);
    free(what);
    lua_State *L = s.L;
    char ***sets = NULL;
    int n = 0;
    if (rc == 0 && lua_type(L, -1) != LUA_TTABLE)
        rc = mf_fail("sweep script %s returned %s; it must return a list of override sets ({{key = value, ...}, ...})",
                     path, luaL_typename(L, -1));
    lua_Unsigned len = rc == 0 ? lua_rawlen(L, -1) : 0;
    if (rc == 0 && len == 0) rc = mf_fail("sweep script %s returned no override sets", path);
    for (lua_Unsigned i = 1; rc == 0 && i <= len; i++) {
        char where[512];
        snprintf(where, sizeof where, "sweep script %s: set %llu", path, (unsigned long long)i);
        lua_rawgeti(L, -1, (lua_Integer)i);
        if (lua_type(L, -1) != LUA_TTABLE) {
            rc = mf_fail("%s is a %s, not a table", where, luaL_typename(L, -1));
            lua_pop(L, 1);
            break;
        }
        char **set = NULL;
        int ns = 0;
        lua_Unsigned alen = lua_rawlen(L, -1);
        if (alen > 0) {
            /* a list of "key=value" strings */
            for (lua_Unsigned j = 1; rc == 0 && j <= alen; j++) {
                lua_rawgeti(L, -1, (lua_Integer)j);
                const char *str = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
                if (!str || !strchr(str, '=') || str[0] == '=')
                    rc = mf_fail("%s: entry %llu must be a \"key=value\" string", where, (unsigned long long)j);
                else {
                    set = mf_xrealloc(set, sizeof *set * (size_t)(ns + 2));
                    set[ns++] = mf_xstrdup(str);
                }
                lua_pop(L, 1);
            }
        } else {
            lua_pushnil(L);
            while (rc == 0 && lua_next(L, -2)) {
                if (lua_type(L, -2) != LUA_TSTRING) {
                    rc = mf_fail("%s: keys must be strings (dotted config keys)", where);
                    lua_pop(L, 2);
                    break;
                }
                char w2[640];
                snprintf(w2, sizeof w2, "%s: %s", where, lua_tostring(L, -2));
                mf_buf b = {0};
                mf_buf_printf(&b, "%s=", lua_tostring(L, -2));
                rc = format_value(L, -1, 0, &b, w2);
                if (rc == 0) {
                    set = mf_xrealloc(set, sizeof *set * (size_t)(ns + 2));
                    set[ns++] = b.s;
                } else {
                    mf_buf_free(&b);
                    lua_pop(L, 2);
                    break;
                }
                lua_pop(L, 1);
            }
            if (ns > 1) qsort(set, (size_t)ns, sizeof *set, cmp_str);
        }
        if (rc == 0 && ns == 0) rc = mf_fail("%s is empty", where);
        if (set) set[ns] = NULL;
        else set = mf_xcalloc(1, sizeof *set);
        sets = mf_xrealloc(sets, sizeof *sets * (size_t)(n + 1));
        sets[n++] = set;
        if (rc == 0) lua_pop(L, 1);
    }
    script_close(&s);
    if (rc != 0) {
        mf_lua_sweep_sets_free(sets, n);
        return -1;
    }
    *sets_out = sets;
    *n_out = n;
    return 0;
}
