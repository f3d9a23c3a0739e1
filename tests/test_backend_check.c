/* test_backend_check.c - the checked backend (engine/mf_backend_check.c): host access to its tensors
 * faults (SIGSEGV in a forked child), every kernel gives bit-identical results to the plain CPU
 * backend it wraps, and so does a whole UNet forward/backward/JVP pass built on it. */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mf_backend.h"
#include "mf_graph.h"
#include "mf_rng.h"
#include "mf_test.h"
#include "mf_unet.h"

/* Until engine/mf_backend.h declares them. */
mf_backend *mf_checked_backend_new(mf_backend *inner);
void mf_checked_backend_free(mf_backend *be);

static void checked_free(mf_backend *be) {
#ifdef MF_BACKEND_HAS_DESTROY
    mf_backend_free(be); /* through the destroy entry */
#else
    mf_checked_backend_free(be);
#endif
}

/* ---- a byte log of everything read back, compared between backends ------------------------------ */

typedef struct blog {
    unsigned char *d;
    size_t n, cap;
    int entries;
} blog;

static void blog_add(blog *l, const void *p, size_t bytes) {
    if (l->n + bytes > l->cap) {
        l->cap = (l->n + bytes) * 2 + 1024;
        l->d = realloc(l->d, l->cap);
        if (!l->d) abort();
    }
    memcpy(l->d + l->n, p, bytes);
    l->n += bytes;
    l->entries++;
}

/* read n floats of a backend buffer into the log */
static void logbuf(blog *l, mf_backend *be, const float *src, int64_t n) {
    float *h = malloc(sizeof(float) * (size_t)n);
    be->i->read(be, h, src, sizeof(float) * (size_t)n);
    blog_add(l, h, sizeof(float) * (size_t)n);
    free(h);
}

static void compare_logs(const char *what, const blog *a, const blog *b) {
    CHECK_MSG(a->n == b->n && a->entries == b->entries, "%s: logs of %zu/%zu bytes, %d/%d entries", what,
              a->n, b->n, a->entries, b->entries);
    size_t n = a->n < b->n ? a->n : b->n, first = SIZE_MAX, ndiff = 0;
    for (size_t i = 0; i < n; i++)
        if (a->d[i] != b->d[i]) {
            if (first == SIZE_MAX) first = i;
            ndiff++;
        }
    CHECK_MSG(ndiff == 0, "%s: %zu bytes differ, first at byte %zu", what, ndiff, first);
    printf("%s: %zu bytes in %d read-backs, %s\n", what, a->n, a->entries, ndiff ? "DIFFERENT" : "bit-identical");
}

/* ---- (1) every kernel of the table, plain vs checked ----------------------------------------- */

#define NBUF 16
#define BUFN 4096

static void run_ops(mf_backend *be, blog *L) {
    const mf_backend_i *k = be->i;
    float *b[NBUF];
    float *h = malloc(sizeof(float) * BUFN);
    for (int i = 0; i < NBUF; i++) {
        b[i] = k->alloc(be, sizeof(float) * BUFN);
        CHECK(b[i] != NULL && ((uintptr_t)b[i] & 63) == 0);
        mf_rng_normal(42, 7, (uint64_t)i, h, BUFN);
        k->write(be, b[i], h, sizeof(float) * BUFN);
    }
    free(h);

    /* conv: stride 1 pad 1, then stride 2, forward and both backward kernels */
    mf_conv_shape s1 = {.n = 2, .ci = 3, .h = 8, .w = 8, .co = 4, .k = 3, .stride = 1, .pad = 1, .ho = 8, .wo = 8};
    k->conv2d(be, &s1, b[0], b[1], b[2], b[3]);
    logbuf(L, be, b[3], 512);
    mf_conv_shape s2 = {.n = 2, .ci = 4, .h = 8, .w = 8, .co = 3, .k = 3, .stride = 2, .pad = 1, .ho = 4, .wo = 4};
    k->conv2d(be, &s2, b[3], b[4], NULL, b[5]);
    logbuf(L, be, b[5], 96);
    k->conv2d_bwd_data(be, &s2, b[5], b[4], b[6], 0);
    logbuf(L, be, b[6], 512);
    k->conv2d_bwd_data(be, &s1, b[3], b[1], b[0], 1);
    logbuf(L, be, b[0], 384);
    k->conv2d_bwd_filter(be, &s1, b[0], b[3], b[1], b[2]);
    logbuf(L, be, b[1], 108);
    logbuf(L, be, b[2], 4);
    k->conv2d_bwd_filter(be, &s2, b[3], b[5], b[4], NULL);
    logbuf(L, be, b[4], 108);

    /* groupnorm forward, backward, jvp */
    k->groupnorm(be, 2, 4, 64, 2, 1e-5f, b[3], b[7], b[7] + 64, b[8], b[9], b[9] + 64, 0);
    logbuf(L, be, b[8], 512);
    logbuf(L, be, b[9], 4);
    logbuf(L, be, b[9] + 64, 4);
    k->groupnorm_bwd(be, 2, 4, 64, 2, b[3], b[7], b[9], b[9] + 64, b[10], b[11], b[12], b[12] + 64, 0, 0);
    logbuf(L, be, b[11], 512);
    logbuf(L, be, b[12], 4);
    logbuf(L, be, b[12] + 64, 4);
    k->groupnorm_bwd(be, 2, 4, 64, 2, b[3], b[7], b[9], b[9] + 64, b[10], b[11], NULL, NULL, 1, 0);
    logbuf(L, be, b[11], 512);
    k->groupnorm_jvp(be, 2, 4, 64, 2, b[3], b[7], b[9], b[9] + 64, b[10], b[13], 0);
    logbuf(L, be, b[13], 512);

    /* fused GroupNorm + SiLU in both layouts; a convolution on blocked tensors (oneDNN when present) */
    for (int blk = 0; blk <= 16; blk += 16) {
        const int c = blk ? 16 : 4, g = blk ? 4 : 2, nf = 2 * c * 64;
        k->gn_silu(be, 2, c, 64, g, 1e-5f, b[3], b[7], b[7] + 64, b[8], b[9], b[9] + 64, blk);
        logbuf(L, be, b[8], nf);
        k->gn_silu_bwd(be, 2, c, 64, g, b[3], b[7], b[7] + 64, b[9], b[9] + 64, b[10], b[11], b[12], b[12] + 64, 0, blk);
        logbuf(L, be, b[11], nf);
        logbuf(L, be, b[12], c);
        k->gn_silu_jvp(be, 2, c, 64, g, b[3], b[7], b[7] + 64, b[9], b[9] + 64, b[10], b[13], blk);
        logbuf(L, be, b[13], nf);
    }
    mf_conv_shape s3 = {.n = 2, .ci = 16, .h = 8, .w = 8, .co = 16, .k = 3, .stride = 1, .pad = 1, .ho = 8, .wo = 8,
                        .bx = 16, .by = 16};
    k->conv2d(be, &s3, b[3], b[4], b[2], b[5]);
    logbuf(L, be, b[5], 2048);
    k->conv2d_bwd_data(be, &s3, b[5], b[4], b[6], 1);
    logbuf(L, be, b[6], 2048);
    k->conv2d_bwd_filter(be, &s3, b[3], b[5], b[14], b[15]);
    logbuf(L, be, b[14], 2304);

    /* element-wise */
    k->silu(be, 1000, b[8], b[13]);
    logbuf(L, be, b[13], 1000);
    k->silu_bwd(be, 1000, b[8], b[10], b[13], 1);
    logbuf(L, be, b[13], 1000);
    k->silu_bwd(be, 1000, b[8], b[10], b[13], 0);
    logbuf(L, be, b[13], 1000);
    k->silu_jvp(be, 1000, b[8], b[10], b[14]);
    logbuf(L, be, b[14], 1000);
    k->axpby(be, 1000, 0.7f, b[0], -0.3f, b[14]);
    logbuf(L, be, b[14], 1000);
    k->axpby(be, 1000, 1.5f, b[0], 0.0f, b[15]);
    logbuf(L, be, b[15], 1000);
    k->add2(be, 1000, 1.5f, b[0], -2.0f, b[1], b[15]);
    logbuf(L, be, b[15], 1000);
    k->add2(be, 1000, 0.25f, b[15], 3.0f, b[14], b[15]); /* z aliases x */
    logbuf(L, be, b[15], 1000);
    k->add_channel(be, 2, 4, 64, b[3], b[2], b[3], 0);
    logbuf(L, be, b[3], 512);
    k->sum_channel(be, 2, 4, 64, b[3], b[15], 0, 0);
    logbuf(L, be, b[15], 8);
    k->sum_channel(be, 2, 4, 64, b[3], b[15], 1, 0);
    logbuf(L, be, b[15], 8);
    k->sum_rows(be, 8, 16, b[3], b[14]);
    logbuf(L, be, b[14], 16);
    k->add_bias_rows(be, 8, 16, b[2], b[3]);
    logbuf(L, be, b[3], 128);

    /* layout */
    k->copy_channels(be, 2, 64, 3, b[0], 3, 0, 0, b[3], 7, 1, 0, 0);
    logbuf(L, be, b[3], 1024);
    k->copy_channels(be, 2, 64, 3, b[0], 3, 0, 0, b[3], 7, 2, 0, 1);
    logbuf(L, be, b[3], 1024);
    k->upsample2x(be, 2, 3, 8, 8, b[0], b[12], 0);
    logbuf(L, be, b[12], 1536);
    k->upsample2x_bwd(be, 2, 3, 8, 8, b[12], b[0], 1, 0);
    logbuf(L, be, b[0], 384);
    k->upsample2x_bwd(be, 2, 3, 8, 8, b[12], b[0], 0, 0);
    logbuf(L, be, b[0], 384);
    const int32_t idx[5] = {3, 0, 2, 3, 1};
    k->embed(be, 5, 8, idx, b[13], b[14]);
    logbuf(L, be, b[14], 40);
    k->embed_bwd(be, 5, 8, idx, b[14], b[13]);
    logbuf(L, be, b[13], 32);

    /* time features */
    k->fourier(be, 3, 4, b[0], b[1], b[15]);
    logbuf(L, be, b[15], 24);
    k->fourier_jvp(be, 3, 4, b[0], b[1], b[2], b[15]);
    logbuf(L, be, b[15], 24);

    /* reductions (results on the host) */
    double out[4];
    k->sq_err_rows(be, 4, 100, b[0], b[1], out);
    blog_add(L, out, sizeof out);
    k->sq_err_rows(be, 4, 100, b[0], NULL, out);
    blog_add(L, out, sizeof out);
    double ss = k->sumsq(be, 1000, b[0]);
    blog_add(L, &ss, sizeof ss);

    /* optimiser: three AdamW steps, then an EMA */
    k->fill(be, b[6], 0.0f, 2000);
    k->fill(be, b[7], 0.0f, 2000);
    for (int step = 1; step <= 3; step++) {
        k->adamw(be, 2000, b[4], b[5], b[6], b[7], 1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, step, 0.5f);
        logbuf(L, be, b[4], 2000);
    }
    logbuf(L, be, b[6], 2000);
    logbuf(L, be, b[7], 2000);
    k->ema(be, 2000, b[8], b[4], 0.9f);
    logbuf(L, be, b[8], 2000);

    /* memory */
    k->copy(be, b[9], b[0], sizeof(float) * 1000);
    logbuf(L, be, b[9], 1000);
    k->copy(be, b[9] + 1, b[9], sizeof(float) * 100); /* overlapping */
    logbuf(L, be, b[9], 200);
    k->fill(be, b[9], 3.25f, 100);
    logbuf(L, be, b[9], 200);
    k->synchronize(be);
    for (int i = 0; i < NBUF; i++) k->free(be, b[i]);
    k->free(be, NULL);
}

static void test_kernels(void) {
    mf_backend *plain = mf_cpu_backend_new(2), *chk = mf_checked_backend_new(mf_cpu_backend_new(2));
    CHECK(chk != NULL);
    CHECK(strcmp(chk->i->name, "checked") == 0);
    CHECK(chk->threads == 2);
    CHECK(chk->i->peak_bytes(chk) == 0);
    blog la = {0}, lb = {0};
    run_ops(plain, &la);
    run_ops(chk, &lb);
    compare_logs("kernels", &la, &lb);
    /* peak: the wrapper's pages (whole pages per tensor, >= the CPU's 64-byte rounding) plus the inner
     * backend's own high-water mark (its workspace: it holds no tensors) */
    size_t peak = chk->i->peak_bytes(chk);
    CHECK_MSG(peak >= plain->i->peak_bytes(plain), "peak %zu vs plain %zu", peak, plain->i->peak_bytes(plain));
    CHECK(peak > (size_t)NBUF * BUFN * sizeof(float));
    /* odd sizes */
    float *z = chk->i->alloc(chk, 0), *t = chk->i->alloc(chk, 3);
    CHECK(z != NULL && t != NULL && ((uintptr_t)t & 63) == 0);
    chk->i->fill(chk, t, 2.0f, 0);
    chk->i->free(chk, z), chk->i->free(chk, t);
    CHECK(chk->i->peak_bytes(chk) == peak); /* a high-water mark */
    free(la.d), free(lb.d);
    mf_backend_free(plain);
    checked_free(chk);
    checked_free(NULL);
}

/* ---- (2) host access faults ------------------------------------------------------------------ */

enum { ACT_WRITE, ACT_READ, ACT_WRITE_AFTER_KERNEL, ACT_USE_AFTER_FREE, ACT_FREE_FOREIGN };

/* Run `act` on buffer p (BUFN floats of be) in a forked child; the child's wait status. */
static int in_child(mf_backend *be, float *p, int act) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(2);
    }
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        /* the default action, also under AddressSanitizer (which installs its own SEGV handler) */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        sigaction(SIGSEGV, &sa, NULL);
        if (!freopen("/dev/null", "w", stderr)) _exit(3);
        volatile float *vp = p;
        switch (act) {
        case ACT_WRITE: vp[0] = 1.0f; break;
        case ACT_READ: {
            volatile float v = vp[BUFN - 1];
            (void)v;
            break;
        }
        case ACT_WRITE_AFTER_KERNEL:
            be->i->fill(be, p, 1.0f, 16);
            vp[3] = 2.0f;
            break;
        case ACT_USE_AFTER_FREE:
            be->i->free(be, p); /* unmapped */
            vp[0] = 1.0f;
            break;
        case ACT_FREE_FOREIGN: {
            float *q = malloc(64);
            be->i->free(be, q);
            break;
        }
        }
        _exit(0);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0) {
    }
    return st;
}

static int died_of(int st, int sig) { return WIFSIGNALED(st) && WTERMSIG(st) == sig; }

static void test_faults(void) {
    mf_backend *plain = mf_cpu_backend_new(1), *chk = mf_checked_backend_new(mf_cpu_backend_new(1));
    float *p = plain->i->alloc(plain, sizeof(float) * BUFN), *q = chk->i->alloc(chk, sizeof(float) * BUFN);
    /* control: the harness itself, on plain CPU memory */
    int st = in_child(plain, p, ACT_WRITE);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "plain write: status 0x%x", st);
    st = in_child(plain, p, ACT_WRITE_AFTER_KERNEL);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "plain write after kernel: status 0x%x", st);
    /* the checked backend */
    st = in_child(chk, q, ACT_WRITE);
    CHECK_MSG(died_of(st, SIGSEGV), "host write to a checked tensor: status 0x%x", st);
    st = in_child(chk, q, ACT_READ);
    CHECK_MSG(died_of(st, SIGSEGV), "host read of a checked tensor: status 0x%x", st);
    st = in_child(chk, q, ACT_WRITE_AFTER_KERNEL);
    CHECK_MSG(died_of(st, SIGSEGV), "host write after a kernel: status 0x%x", st);
    st = in_child(chk, q, ACT_USE_AFTER_FREE);
    CHECK_MSG(died_of(st, SIGSEGV), "host write after free: status 0x%x", st);
    st = in_child(chk, q, ACT_FREE_FOREIGN);
    CHECK_MSG(died_of(st, SIGABRT), "free of a foreign pointer: status 0x%x", st);
    printf("faults: host read, write, write after a kernel, write after free: SIGSEGV; foreign free: SIGABRT\n");
    /* the parent's buffer is intact and usable through the backend */
    float v[2] = {5.0f, 6.0f}, r[2] = {0};
    chk->i->write(chk, q, v, sizeof v);
    chk->i->read(chk, r, q, sizeof r);
    CHECK(r[0] == 5.0f && r[1] == 6.0f);
    plain->i->free(plain, p);
    chk->i->free(chk, q);
    mf_backend_free(plain);
    checked_free(chk);
}

/* ---- (3) a UNet forward / backward / JVP, plain vs checked --------------------------------------- */

static void run_unet(mf_backend *be, const mf_unet_cfg *c, int batch, blog *L) {
    const mf_backend_i *k = be->i;
    mf_graph g;
    mf_unet ids;
    mf_graph_init(&g, be, batch);
    mf_unet_build(&g, c, &ids);
    CHECK(mf_graph_finalize(&g, ids.out, true, true) == 0);
    int64_t np = g.n_param_floats, nx = g.nodes[ids.x].numel, no = g.nodes[ids.out].numel;
    float *hp = malloc(sizeof(float) * (size_t)np);
    mf_graph_init_params(&g, 7, hp);
    /* norms and zero-initialised tensors away from 1/0 so every gradient is exercised */
    for (int i = 0; i < g.n_params; i++) {
        mf_param *p = &g.params[i];
        if (p->init == MF_INIT_ONE || p->init == MF_INIT_ZERO) {
            mf_rng_normal(1234, 99, 500 + (uint64_t)i, hp + p->offset, p->numel);
            for (int64_t j = 0; j < p->numel; j++)
                hp[p->offset + j] = 0.3f * hp[p->offset + j] + (p->init == MF_INIT_ONE ? 1.0f : 0.0f);
        }
    }
    float *dp = k->alloc(be, sizeof(float) * (size_t)np), *dg = k->alloc(be, sizeof(float) * (size_t)np);
    float *dm = k->alloc(be, sizeof(float) * (size_t)np), *dv = k->alloc(be, sizeof(float) * (size_t)np);
    float *dw = k->alloc(be, sizeof(float) * (size_t)no);
    float *d_tz = k->alloc(be, sizeof(float) * (size_t)nx), *d_tt = k->alloc(be, sizeof(float) * (size_t)batch);
    float *d_tr = k->alloc(be, sizeof(float) * (size_t)batch);
    k->write(be, dp, hp, sizeof(float) * (size_t)np);
    k->fill(be, dm, 0.0f, np);
    k->fill(be, dv, 0.0f, np);
    float *x = malloc(sizeof(float) * (size_t)nx), *w = malloc(sizeof(float) * (size_t)no);
    float *tz = malloc(sizeof(float) * (size_t)nx);
    float t[16], r[16], tt[16], tr[16];
    int32_t labels[16];
    mf_rng_normal(1234, 99, 1, x, nx);
    mf_rng_normal(1234, 99, 2, w, no);
    mf_rng_normal(1234, 99, 3, tz, nx);
    for (int i = 0; i < batch; i++) {
        t[i] = 0.2f + 0.6f * (float)i / (float)batch;
        r[i] = 0.5f * t[i];
        tt[i] = 1.0f;
        tr[i] = 0.3f;
        labels[i] = i % (c->num_classes > 0 ? c->num_classes : 1);
    }
    k->write(be, dw, w, sizeof(float) * (size_t)no);
    k->write(be, d_tz, tz, sizeof(float) * (size_t)nx);
    k->write(be, d_tt, tt, sizeof(float) * (size_t)batch);
    k->write(be, d_tr, tr, sizeof(float) * (size_t)batch);
    mf_graph_set_params(&g, dp);
    mf_graph_set_grads(&g, dg);
    mf_graph_set_labels(&g, labels);
    mf_graph_write_input(&g, ids.x, x);
    mf_graph_write_input(&g, ids.t, t);
    if (ids.r >= 0) mf_graph_write_input(&g, ids.r, r);

    for (int step = 1; step <= 2; step++) {
        mf_graph_forward(&g);
        logbuf(L, be, mf_graph_out(&g, ids.out), no);
        k->fill(be, dg, 0.0f, np);
        mf_graph_backward(&g, dw);
        logbuf(L, be, dg, np);
        int nodes[3] = {ids.x, ids.t, ids.r};
        const float *tans[3] = {d_tz, d_tt, d_tr};
        mf_graph_jvp(&g, ids.r >= 0 ? 3 : 2, nodes, tans);
        logbuf(L, be, g.nodes[ids.out].tan, no);
        logbuf(L, be, mf_graph_out(&g, ids.out), no);
        k->adamw(be, np, dp, dg, dm, dv, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, step, 1.0f);
        logbuf(L, be, dp, np);
    }
    free(hp), free(x), free(w), free(tz);
    k->free(be, dp), k->free(be, dg), k->free(be, dm), k->free(be, dv), k->free(be, dw);
    k->free(be, d_tz), k->free(be, d_tt), k->free(be, d_tr);
    mf_graph_free(&g);
}

static void test_unet(const mf_unet_cfg *c, int batch, const char *label) {
    mf_backend *plain = mf_cpu_backend_new(2), *chk = mf_checked_backend_new(mf_cpu_backend_new(2));
    blog la = {0}, lb = {0};
    run_unet(plain, c, batch, &la);
    run_unet(chk, c, batch, &lb);
    compare_logs(label, &la, &lb);
    free(la.d), free(lb.d);
    mf_backend_free(plain);
    checked_free(chk);
}

int main(void) {
    test_faults(); /* first: the children fork before any OpenMP thread pool exists */
    test_kernels();
    mf_unet_cfg a = {.in_ch = 1, .height = 8, .width = 8, .ch = 4, .n_levels = 2, .mult = {1, 2}, .res_blocks = 1,
                     .groups = 2, .temb_dim = 8, .fourier_half = 3, .time_scale = 10.0f, .num_classes = 3,
                     .time_inputs = 1};
    test_unet(&a, 3, "unet(cond)");
    mf_unet_cfg b = {.in_ch = 3, .height = 8, .width = 8, .ch = 4, .n_levels = 3, .mult = {1, 2, 2}, .res_blocks = 2,
                     .groups = 4, .temb_dim = 8, .fourier_half = 2, .time_scale = 10.0f, .num_classes = 0,
                     .time_inputs = 2};
    test_unet(&b, 2, "unet(r,t)");
    return mf_test_summary("test_backend_check");
}
