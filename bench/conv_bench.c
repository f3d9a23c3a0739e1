/* conv_bench.c - micro-benchmark of 2-D convolution on the MNIST UNet shapes (batch 128): the CPU
 * backend as built (per-thread GEMMs, single-threaded OpenBLAS, with a sweep of samples per GEMM), the
 * BLAS-threaded alternative (one big GEMM per chunk of samples), oneDNN if built with -DWITH_DNNL, and
 * the measured sgemm peak. Not part of the CMake build; from the repository root:
 *   gcc -O2 -fopenmp -Icore -Iengine -Icpu bench/conv_bench.c cpu/[a-z]*.c core/mf_error.c
 *       -lopenblas -lm [-DWITH_DNNL -ldnnl] -o /tmp/conv_bench && /tmp/conv_bench [reps]
 * Prints markdown tables (docs/cpu-backend.md records a run). */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu_internal.h"
#include "mf_backend.h"

#ifdef WITH_DNNL
#include <dnnl.h>
#endif

static int g_reps = 5, g_sweep = 1, g_dnnl = 1, g_blas = 1;
static const char *g_only; /* only=2,5: just those shapes (0-based) */
static int g_elem_only;    /* elem: just the element-wise table */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The machine may be shared: wait (at most 60 s) until the CPUs have been >= 90% idle for 50 ms. */
static int g_busy_waits;
static void cpu_times(unsigned long long *idle, unsigned long long *total) {
    unsigned long long v[10] = {0};
    FILE *f = fopen("/proc/stat", "r");
    *idle = *total = 0;
    if (!f) return;
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
               &v[6], &v[7]) == 8) {
        for (int i = 0; i < 8; i++) *total += v[i];
        *idle = v[3] + v[4];
    }
    fclose(f);
}
static void wait_idle(void) {
    double t0 = now();
    for (;;) {
        unsigned long long i0, t0_, i1, t1;
        cpu_times(&i0, &t0_);
        struct timespec ts = {0, 50000000};
        nanosleep(&ts, NULL);
        cpu_times(&i1, &t1);
        if (t1 == t0_ || (double)(i1 - i0) >= 0.9 * (double)(t1 - t0_)) return;
        if (now() - t0 > 60) {
            g_busy_waits++;
            return;
        }
    }
}

typedef void (*run_fn)(void *arg);
/* best of g_reps timed runs after one warm-up, in ms, each started on an idle machine */
static double time_best(run_fn f, void *arg) {
    f(arg);
    double best = 1e30;
    for (int r = 0; r < g_reps; r++) {
        wait_idle();
        double t = now();
        f(arg);
        t = now() - t;
        if (t < best) best = t;
    }
    return best * 1e3;
}

static float *frand(size_t n) {
    float *p = aligned_alloc(64, ((sizeof(float) * n + 63) / 64) * 64);
    uint64_t s = 0x9e3779b97f4a7c15ull ^ n;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (float)((double)(s >> 11) * 0x1.0p-53 - 0.5);
    }
    return p;
}

/* ---- sgemm peak ----------------------------------------------------------------------------- */

typedef struct {
    int n;
    float *a, *b, *c;
} gemm_arg;
static void run_gemm(void *p) {
    gemm_arg *g = p;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->n, g->n, g->n, 1.0f, g->a, g->n, g->b, g->n,
                0.0f, g->c, g->n);
}
static double sgemm_peak(int threads, int n) {
    openblas_set_num_threads(threads);
    gemm_arg g = {n, frand((size_t)n * n), frand((size_t)n * n), frand((size_t)n * n)};
    double ms = time_best(run_gemm, &g);
    free(g.a), free(g.b), free(g.c);
    openblas_set_num_threads(1);
    return 2.0 * n * n * (double)n / (ms * 1e-3) / 1e9;
}

/* ---- the shapes ----------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    mf_conv_shape s;
    float *x, *w, *b, *y, *dy, *dx, *dw, *db;
} conv_case;

static mf_conv_shape mk(int n, int ci, int h, int co, int k, int st, int pad) {
    mf_conv_shape s = {n, ci, h, h, co, k, st, pad, 0, 0, 0, 0, 0, 0};
    s.ho = s.wo = (h + 2 * pad - k) / st + 1;
    return s;
}
static double conv_flops(const mf_conv_shape *s) {
    return 2.0 * s->n * s->co * s->ho * s->wo * (double)s->ci * s->k * s->k;
}

/* ---- the backend (option a) ------------------------------------------------------------------ */

typedef struct {
    mf_backend *be;
    conv_case *c;
    int op; /* 0 fwd, 1 bwd data, 2 bwd filter */
} be_arg;
static void run_be(void *p) {
    be_arg *a = p;
    conv_case *c = a->c;
    if (a->op == 0)
        a->be->i->conv2d(a->be, &c->s, c->x, c->w, c->b, c->y);
    else if (a->op == 1)
        a->be->i->conv2d_bwd_data(a->be, &c->s, c->dy, c->w, c->dx, 0);
    else
        a->be->i->conv2d_bwd_filter(a->be, &c->s, c->x, c->dy, c->dw, c->db);
}

/* ---- option b: chunks of B samples, im2col in OpenMP, one BLAS-threaded GEMM per chunk ---------- */

typedef struct {
    conv_case *c;
    int op, chunk, threads;
    float *col, *buf;
} blas_arg;
static void run_blas(void *p) {
    blas_arg *a = p;
    const mf_conv_shape *s = &a->c->s;
    const int hw = s->ho * s->wo, K = s->ci * s->k * s->k, co = s->co, T = a->threads;
    const int64_t xs = (int64_t)s->ci * s->h * s->w, ys = (int64_t)co * hw;
    conv_case *c = a->c;
    for (int i0 = 0; i0 < s->n; i0 += a->chunk) {
        const int nb = i0 + a->chunk <= s->n ? a->chunk : s->n - i0;
        const int64_t ld = (int64_t)nb * hw;
        if (a->op == 0) {
#pragma omp parallel for num_threads(T) schedule(static)
            for (int b = 0; b < nb; b++) mfcpu_im2col(c->x + (i0 + b) * xs, s, 0, hw, a->col + b * hw, ld);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, co, (int)ld, K, 1.0f, c->w, K, a->col,
                        (int)ld, 0.0f, a->buf, (int)ld);
#pragma omp parallel for num_threads(T) schedule(static) collapse(2)
            for (int b = 0; b < nb; b++)
                for (int o = 0; o < co; o++) {
                    float *d = c->y + (i0 + b) * ys + (int64_t)o * hw;
                    const float *src = a->buf + o * ld + (int64_t)b * hw;
                    for (int q = 0; q < hw; q++) d[q] = src[q] + c->b[o];
                }
        } else {
#pragma omp parallel for num_threads(T) schedule(static) collapse(2)
            for (int b = 0; b < nb; b++)
                for (int o = 0; o < co; o++)
                    memcpy(a->buf + o * ld + (int64_t)b * hw, c->dy + (i0 + b) * ys + (int64_t)o * hw,
                           sizeof(float) * (size_t)hw);
            if (a->op == 1) {
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, (int)ld, co, 1.0f, c->w, K, a->buf,
                            (int)ld, 0.0f, a->col, (int)ld);
#pragma omp parallel for num_threads(T) schedule(static)
                for (int b = 0; b < nb; b++) {
                    float *dxi = c->dx + (i0 + b) * xs;
                    memset(dxi, 0, sizeof(float) * (size_t)xs);
                    mfcpu_col2im(a->col + (int64_t)b * hw, ld, s, 0, s->ci, 0, hw, dxi);
                }
            } else {
#pragma omp parallel for num_threads(T) schedule(static)
                for (int b = 0; b < nb; b++)
                    mfcpu_im2col(c->x + (i0 + b) * xs, s, 0, hw, a->col + b * hw, ld);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, co, K, (int)ld, 1.0f, a->buf, (int)ld,
                            a->col, (int)ld, 1.0f, c->dw, K);
            }
        }
    }
}

/* ---- oneDNN ---------------------------------------------------------------------------------- */

#ifdef WITH_DNNL
#define DN(call)                                                                                             \
    do {                                                                                                     \
        dnnl_status_t st_ = (call);                                                                          \
        if (st_ != dnnl_success) {                                                                           \
            fprintf(stderr, "%s: status %d\n", #call, (int)st_);                                             \
            exit(1);                                                                                         \
        }                                                                                                    \
    } while (0)

static dnnl_engine_t g_eng;
static dnnl_stream_t g_strm;

typedef struct {
    dnnl_primitive_t prim;
    dnnl_exec_arg_t args[4];
    int nargs;
    /* reorders between the NCHW user tensors and the primitive's layouts: inputs before, output after */
    int nre;
    dnnl_primitive_t re[3];
    dnnl_exec_arg_t re_args[3][2];
    int re_after[3];
} dn_arg;
static void run_dn(void *p) {
    dn_arg *a = p;
    for (int i = 0; i < a->nre; i++)
        if (!a->re_after[i]) DN(dnnl_primitive_execute(a->re[i], g_strm, 2, a->re_args[i]));
    DN(dnnl_primitive_execute(a->prim, g_strm, a->nargs, a->args));
    for (int i = 0; i < a->nre; i++)
        if (a->re_after[i]) DN(dnnl_primitive_execute(a->re[i], g_strm, 2, a->re_args[i]));
    DN(dnnl_stream_wait(g_strm));
}

static dnnl_memory_t dn_mem(const dnnl_memory_desc_t *md, void *host) {
    dnnl_memory_t m;
    DN(dnnl_memory_create(&m, md, g_eng, host ? host : DNNL_MEMORY_ALLOCATE));
    return m;
}

/* With reorders (any == 2): a reorder between the user tensor `host` (plain layout `user`) and the
 * primitive's memory `mem`, into it for an input, out of it for the output. */
static dnnl_memory_t add_reorder(dn_arg *a, const dnnl_memory_desc_t *user, void *host, dnnl_memory_t mem,
                                 int is_output) {
    const dnnl_memory_desc_t *pmd;
    DN(dnnl_memory_get_memory_desc(mem, &pmd));
    if (dnnl_memory_desc_equal(user, pmd)) return NULL;
    dnnl_memory_t um = dn_mem(user, host);
    dnnl_primitive_desc_t rpd;
    if (is_output)
        DN(dnnl_reorder_primitive_desc_create(&rpd, pmd, g_eng, user, g_eng, NULL));
    else
        DN(dnnl_reorder_primitive_desc_create(&rpd, user, g_eng, pmd, g_eng, NULL));
    const int i = a->nre++;
    DN(dnnl_primitive_create(&a->re[i], rpd));
    dnnl_primitive_desc_destroy(rpd);
    a->re_args[i][0] = (dnnl_exec_arg_t){DNNL_ARG_FROM, is_output ? mem : um};
    a->re_args[i][1] = (dnnl_exec_arg_t){DNNL_ARG_TO, is_output ? um : mem};
    a->re_after[i] = is_output;
    return um;
}

/* op 0/1/2 as above; any = 1 lets oneDNN choose blocked layouts (then the times exclude reorders), any = 2
 * also times the reorders from / to the NCHW tensors of the engine. */
static double dnnl_time(conv_case *c, int op, int any, const char **impl) {
    const mf_conv_shape *s = &c->s;
    dnnl_dims_t sd = {s->n, s->ci, s->h, s->w}, wd = {s->co, s->ci, s->k, s->k}, bd = {s->co},
                dd = {s->n, s->co, s->ho, s->wo};
    dnnl_dims_t str = {s->stride, s->stride}, pl = {s->pad, s->pad};
    /* padding_r so that the output size matches: (h + pl + pr - k)/stride + 1 = ho */
    dnnl_dims_t pr = {(s->ho - 1) * s->stride + s->k - s->h - s->pad,
                      (s->wo - 1) * s->stride + s->k - s->w - s->pad};
    dnnl_memory_desc_t src, wei, bia, dst;
    DN(dnnl_memory_desc_init_by_tag(&src, 4, sd, dnnl_f32, any ? dnnl_format_tag_any : dnnl_nchw));
    DN(dnnl_memory_desc_init_by_tag(&wei, 4, wd, dnnl_f32, any ? dnnl_format_tag_any : dnnl_oihw));
    DN(dnnl_memory_desc_init_by_tag(&bia, 1, bd, dnnl_f32, dnnl_x));
    DN(dnnl_memory_desc_init_by_tag(&dst, 4, dd, dnnl_f32, any ? dnnl_format_tag_any : dnnl_nchw));
    dnnl_convolution_desc_t fd, cd;
    DN(dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, dnnl_convolution_direct, &src, &wei,
                                          &bia, &dst, str, pl, pr));
    dnnl_primitive_desc_t fpd, pd;
    DN(dnnl_primitive_desc_create(&fpd, &fd, NULL, g_eng, NULL));
    if (op == 0) {
        pd = fpd;
    } else if (op == 1) {
        DN(dnnl_convolution_backward_data_desc_init(&cd, dnnl_convolution_direct, &src, &wei, &dst, str, pl,
                                                    pr));
        DN(dnnl_primitive_desc_create(&pd, &cd, NULL, g_eng, fpd));
    } else {
        DN(dnnl_convolution_backward_weights_desc_init(&cd, dnnl_convolution_direct, &src, &wei, &bia, &dst,
                                                       str, pl, pr));
        DN(dnnl_primitive_desc_create(&pd, &cd, NULL, g_eng, fpd));
    }
    const char *info = NULL;
    DN(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &info));
    *impl = info;
    dn_arg a = {0};
    DN(dnnl_primitive_create(&a.prim, pd));
    /* the memories in the layouts the primitive wants (plain NCHW user buffers when !any) */
    const dnnl_memory_desc_t *msrc =
        dnnl_primitive_desc_query_md(pd, op == 1 ? dnnl_query_diff_src_md : dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *mwei =
        dnnl_primitive_desc_query_md(pd, op == 2 ? dnnl_query_diff_weights_md : dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *mdst =
        dnnl_primitive_desc_query_md(pd, op == 0 ? dnnl_query_dst_md : dnnl_query_diff_dst_md, 0);
    dnnl_memory_t ms = dn_mem(msrc, any ? NULL : (op == 1 ? c->dx : c->x));
    dnnl_memory_t mw = dn_mem(mwei, any ? NULL : (op == 2 ? c->dw : c->w));
    dnnl_memory_t md = dn_mem(mdst, any ? NULL : (op == 0 ? c->y : c->dy));
    dnnl_memory_t mb = dn_mem(&bia, op == 2 ? c->db : c->b);
    if (op == 0) {
        a.args[0] = (dnnl_exec_arg_t){DNNL_ARG_SRC, ms};
        a.args[1] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, mw};
        a.args[2] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, mb};
        a.args[3] = (dnnl_exec_arg_t){DNNL_ARG_DST, md};
        a.nargs = 4;
    } else if (op == 1) {
        a.args[0] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_SRC, ms};
        a.args[1] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, mw};
        a.args[2] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_DST, md};
        a.nargs = 3;
    } else {
        a.args[0] = (dnnl_exec_arg_t){DNNL_ARG_SRC, ms};
        a.args[1] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_WEIGHTS, mw};
        a.args[2] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_BIAS, mb};
        a.args[3] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_DST, md};
        a.nargs = 4;
    }
    dnnl_memory_t um[3] = {NULL, NULL, NULL};
    if (any) { /* any == 1: the reorders run once, untimed, so the blocked tensors hold the real data */
        dnnl_memory_desc_t us, uw, ud;
        DN(dnnl_memory_desc_init_by_tag(&us, 4, sd, dnnl_f32, dnnl_nchw));
        DN(dnnl_memory_desc_init_by_tag(&uw, 4, wd, dnnl_f32, dnnl_oihw));
        DN(dnnl_memory_desc_init_by_tag(&ud, 4, dd, dnnl_f32, dnnl_nchw));
        um[0] = add_reorder(&a, &us, op == 1 ? c->dx : c->x, ms, op == 1);
        um[1] = add_reorder(&a, &uw, op == 2 ? c->dw : c->w, mw, op == 2);
        um[2] = add_reorder(&a, &ud, op == 0 ? c->y : c->dy, md, op == 0);
    }
    const int nre = a.nre;
    if (any == 1) {
        run_dn(&a);
        a.nre = 0;
    }
    double ms_ = time_best(run_dn, &a);
    for (int i = 0; i < nre; i++) dnnl_primitive_destroy(a.re[i]);
    for (int i = 0; i < 3; i++)
        if (um[i]) dnnl_memory_destroy(um[i]);
    dnnl_memory_destroy(ms), dnnl_memory_destroy(mw), dnnl_memory_destroy(md), dnnl_memory_destroy(mb);
    dnnl_primitive_destroy(a.prim);
    if (pd != fpd) dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_desc_destroy(fpd);
    return ms_;
}
#endif

/* ---- element-wise and GroupNorm, for scale ------------------------------------------------------ */

typedef struct {
    mf_backend *be;
    int op;
    int64_t n;
    float *x, *y, *z, *g, *m, *r, *p;
} el_arg;
static void run_el(void *p) {
    el_arg *a = p;
    mf_backend *be = a->be;
    const int N = 128, C = 64, HW = 784, G = 32;
    switch (a->op) {
    case 0:
        be->i->silu(be, a->n, a->x, a->y);
        break;
    case 1:
        be->i->silu_bwd(be, a->n, a->x, a->z, a->y, 0);
        break;
    case 2:
        be->i->groupnorm(be, N, C, HW, G, 1e-5f, a->x, a->g, a->g, a->y, a->m, a->r);
        break;
    case 3:
        be->i->groupnorm_bwd(be, N, C, HW, G, a->x, a->g, a->m, a->r, a->z, a->y, a->p, a->p + C, 0);
        break;
    case 4:
        be->i->groupnorm_jvp(be, N, C, HW, G, a->x, a->g, a->m, a->r, a->z, a->y);
        break;
    case 5:
        be->i->axpby(be, a->n, 0.5f, a->x, 0.25f, a->y);
        break;
    }
}
static void elementwise_bench(int T) {
    const int64_t n = (int64_t)128 * 64 * 784; /* one 28x28x64 activation of a batch of 128 */
    setenv("MFPIPE_CPU_SIMD", "0", 1);
    mf_backend *plain = mf_cpu_backend_new(T);
    unsetenv("MFPIPE_CPU_SIMD");
    mf_backend *simd = mf_cpu_backend_new(T);
    el_arg a = {simd,      0, n, frand(n), frand(n), frand(n), frand(64), frand(128 * 32), frand(128 * 32),
                frand(128)};
    for (int i = 0; i < 128 * 32; i++) a.r[i] = 1.0f;
    printf("\n| kernel on 128x64x28x28 (%.1f M floats) | ms | GB/s moved |\n|---|---|---|\n", n / 1e6);
    const char *names[] = {"silu",          "silu_bwd",      "groupnorm (32 groups)",
                           "groupnorm_bwd", "groupnorm_jvp", "axpby"};
    const double moved[] = {2, 3, 2, 4, 3, 3}; /* tensors read + written */
    for (int op = 0; op < 6; op++) {
        for (int v = 0; v < (op < 2 ? 2 : 1); v++) {
            a.be = v ? plain : simd;
            a.op = op;
            double ms = time_best(run_el, &a);
            printf("| %s%s | %.2f | %.1f |\n", names[op], op < 2 ? (v ? " (libm expf)" : " (AVX-512)") : "",
                   ms, moved[op] * 4.0 * (double)n / (ms * 1e-3) / 1e9);
        }
    }
    free(a.x), free(a.y), free(a.z), free(a.g), free(a.m), free(a.r), free(a.p);
    mf_backend_free(plain), mf_backend_free(simd);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1) g_reps = atoi(argv[1]);
    for (int i = 2; i < argc; i++) { /* options: nosweep, nodnnl, noblas, only=i,j, elem */
        if (!strcmp(argv[i], "nosweep")) g_sweep = 0;
        if (!strcmp(argv[i], "nodnnl")) g_dnnl = 0;
        if (!strcmp(argv[i], "noblas")) g_blas = 0;
        if (!strncmp(argv[i], "only=", 5)) g_only = argv[i] + 5;
        if (!strcmp(argv[i], "elem")) g_elem_only = 1;
    }
    const int T = omp_get_num_procs();
    mf_backend *be = mf_cpu_backend_new(T);
    printf("threads %d, OpenBLAS %s (%s)\n\n", T, openblas_get_config(), openblas_get_corename());
    const double peak1 = sgemm_peak(1, 2048), peakT = sgemm_peak(T, 3072);
    printf("sgemm peak: 1 thread %.0f GFLOP/s (2048^3), %d threads %.0f GFLOP/s (3072^3)\n\n", peak1, T,
           peakT);
    if (g_elem_only) {
        elementwise_bench(T);
        mf_backend_free(be);
        return 0;
    }
#ifdef WITH_DNNL
    DN(dnnl_engine_create(&g_eng, dnnl_cpu, 0));
    DN(dnnl_stream_create(&g_strm, g_eng, dnnl_stream_default_flags));
#endif
    const int N = 128;
    conv_case cases[] = {
        {.name = "28x28 1->64 k3 s1", .s = mk(N, 1, 28, 64, 3, 1, 1)},
        {.name = "28x28 16->16 k3 s1", .s = mk(N, 16, 28, 16, 3, 1, 1)},
        {.name = "28x28 64->64 k3 s1", .s = mk(N, 64, 28, 64, 3, 1, 1)},
        {.name = "28x28 64->64 k3 s2", .s = mk(N, 64, 28, 64, 3, 2, 1)},
        {.name = "14x14 128->128 k3 s1", .s = mk(N, 128, 14, 128, 3, 1, 1)},
        {.name = "14x14 128->128 k3 s2", .s = mk(N, 128, 14, 128, 3, 2, 1)},
        {.name = "7x7 256->256 k3 s1", .s = mk(N, 256, 7, 256, 3, 1, 1)},
        {.name = "28x28 128->64 k1", .s = mk(N, 128, 28, 64, 1, 1, 0)},
        {.name = "14x14 256->128 k1", .s = mk(N, 256, 14, 128, 1, 1, 0)},
        {.name = "7x7 512->256 k1", .s = mk(N, 512, 7, 256, 1, 1, 0)},
    };
    const int ncase = (int)(sizeof cases / sizeof cases[0]);
    const int nbs[] = {1, 2, 4, 8, 16}, pbs[] = {128, 256, 512, 1 << 20};
    const char *opname[] = {"fwd", "bwd_data", "bwd_filter"};
    double tot_be[3] = {0}, tot_bl[3] = {0}, tot_dn[3] = {0}, tot_dna[3] = {0}, tot_dnr[3] = {0};
    printf("| shape | op | GFLOP | backend ms | GFLOP/s | of peak | nb=1,2,4,8,16 ms | pb=128,256,512,all ms "
           "| BLAS-threaded ms (chunk 16 / 128) |"
#ifdef WITH_DNNL
           " oneDNN nchw ms | oneDNN blocked ms (no reorders) | oneDNN blocked + reorders ms |"
#endif
           "\n|---|---|---|---|---|---|---|---|---|"
#ifdef WITH_DNNL
           "---|---|---|"
#endif
           "\n");
    for (int ci = 0; ci < ncase; ci++) {
        conv_case *c = &cases[ci];
        if (g_only) {
            char key[16];
            snprintf(key, sizeof key, ",%d,", ci);
            char list[256];
            snprintf(list, sizeof list, ",%s,", g_only);
            if (!strstr(list, key)) continue;
        }
        const mf_conv_shape *s = &c->s;
        const size_t nx = (size_t)s->n * s->ci * s->h * s->w, nw = (size_t)s->co * s->ci * s->k * s->k,
                     ny = (size_t)s->n * s->co * s->ho * s->wo;
        c->x = frand(nx), c->w = frand(nw), c->b = frand(s->co), c->y = frand(ny), c->dy = frand(ny);
        c->dx = frand(nx), c->dw = frand(nw), c->db = frand(s->co);
        const int hw = s->ho * s->wo, K = s->ci * s->k * s->k;
        for (int op = 0; op < 3; op++) {
            const double gf = conv_flops(s) / 1e9;
            be_arg a = {be, c, op};
            mfcpu_set_conv_nb(be, 0);
            const double t_auto = time_best(run_be, &a);
            char sweep[256] = "", *sp = sweep;
            for (size_t k = 0; g_sweep && k < sizeof nbs / sizeof nbs[0]; k++) {
                mfcpu_set_conv_nb(be, nbs[k]);
                sp += sprintf(sp, "%s%.1f", k ? " / " : "", time_best(run_be, &a));
            }
            mfcpu_set_conv_nb(be, 0);
            sp += sprintf(sp, " | ");
            for (size_t k = 0; g_sweep && k < sizeof pbs / sizeof pbs[0]; k++) {
                mfcpu_set_conv_pb(be, pbs[k]);
                sp += sprintf(sp, "%s%.1f", k ? " / " : "", time_best(run_be, &a));
            }
            mfcpu_set_conv_pb(be, 0);
            double t_bl[2] = {0, 0};
            const int chunks[2] = {16, 128};
            openblas_set_num_threads(T);
            for (int k = 0; g_blas && k < 2; k++) {
                size_t cols = (size_t)chunks[k] * hw;
                blas_arg b = {c,
                              op,
                              chunks[k],
                              T,
                              malloc(sizeof(float) * cols * (size_t)K),
                              malloc(sizeof(float) * cols * (size_t)(s->co > K ? s->co : K))};
                t_bl[k] = time_best(run_blas, &b);
                free(b.col), free(b.buf);
            }
            openblas_set_num_threads(1);
            tot_be[op] += t_auto;
            tot_bl[op] += t_bl[0] < t_bl[1] ? t_bl[0] : t_bl[1];
            printf("| %s | %s | %.2f | %.1f | %.0f | %.0f%% | %s | %.1f / %.1f |", c->name, opname[op], gf,
                   t_auto, gf / (t_auto * 1e-3), 100.0 * gf / (t_auto * 1e-3) / peakT, sweep, t_bl[0],
                   t_bl[1]);
#ifdef WITH_DNNL
            const char *i1 = "-", *i2 = "-", *i3 = "-";
            double d0 = g_dnnl ? dnnl_time(c, op, 0, &i1) : 0, d1 = g_dnnl ? dnnl_time(c, op, 1, &i2) : 0;
            double d2 = g_dnnl ? dnnl_time(c, op, 2, &i3) : 0;
            tot_dn[op] += d0, tot_dna[op] += d1, tot_dnr[op] += d2;
            printf(" %.1f (%s) | %.1f (%s) | %.1f |", d0, i1, d1, i2, d2);
#endif
            printf("\n");
            fflush(stdout);
        }
        free(c->x), free(c->w), free(c->b), free(c->y), free(c->dy), free(c->dx), free(c->dw), free(c->db);
    }
    printf("\ntotals over the shapes (ms): op | backend | BLAS-threaded (best chunk) | oneDNN nchw | oneDNN "
           "blocked | oneDNN blocked + reorders\n");
    double all[5] = {0};
    for (int op = 0; op < 3; op++) {
        printf("%s | %.1f | %.1f | %.1f | %.1f | %.1f\n", opname[op], tot_be[op], tot_bl[op], tot_dn[op],
               tot_dna[op], tot_dnr[op]);
        all[0] += tot_be[op], all[1] += tot_bl[op], all[2] += tot_dn[op], all[3] += tot_dna[op];
        all[4] += tot_dnr[op];
    }
    printf("all | %.1f | %.1f | %.1f | %.1f | %.1f\n", all[0], all[1], all[2], all[3], all[4]);
    elementwise_bench(T);
    if (g_busy_waits) printf("\nWARNING: %d measurements started on a busy machine\n", g_busy_waits);
    mf_backend_free(be);
    return 0;
}
