/* mf_graph.c - the static op graph: builder, buffer allocation, and the per-op rules for forward,
 * backward (reverse mode) and JVP (forward mode). Every op is expressed with backend kernels only,
 * so a new backend needs no change here. */
#include "mf_graph.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mf_error.h"
#include "mf_rng.h"

#define BE(g) ((g)->be)
#define K(g) ((g)->be->i)

/* ---- op profile (MFPIPE_PROFILE=1): wall time per op kind and pass, synchronising after every node;
 * printed to stderr when the graph is freed. For finding what to optimise, not for benchmarks. */
#define N_OPS (MF_OP_GN_SILU + 1)
static const char *op_names[N_OPS] = {"?", "input", "labels", "conv", "linear", "groupnorm", "silu", "add",
                                      "add_channel", "concat", "upsample", "fourier", "embed", "sub", "reorder",
                                      "gn_silu"};
static int prof_on = -1;
static double prof_t[3][N_OPS];
static long prof_n[3][N_OPS];
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static int profiling(void) {
    if (prof_on < 0) prof_on = getenv("MFPIPE_PROFILE") && strcmp(getenv("MFPIPE_PROFILE"), "0") != 0;
    return prof_on;
}
#define PROF_SHAPES 64
static struct {
    char key[48];
    double t[3];
} prof_conv[PROF_SHAPES];
static int prof_nconv;
static void prof_add(mf_graph *g, int pass, const mf_gnode *nd, double t0) {
    K(g)->synchronize(BE(g));
    const double dt = now_s() - t0;
    prof_t[pass][nd->op] += dt;
    prof_n[pass][nd->op]++;
    if (nd->op != MF_OP_CONV) return;
    char key[48];
    const mf_conv_shape *c = &nd->cs;
    snprintf(key, sizeof key, "%dx%d %d->%d k%d s%d blk %d/%d", c->h, c->w, c->ci, c->co, c->k, c->stride, c->bx, c->by);
    int i = 0;
    while (i < prof_nconv && strcmp(prof_conv[i].key, key) != 0) i++;
    if (i == PROF_SHAPES) return;
    if (i == prof_nconv) snprintf(prof_conv[prof_nconv++].key, sizeof key, "%s", key);
    prof_conv[i].t[pass] += dt;
}
static void prof_print(void) {
    double tot = 0;
    for (int p = 0; p < 3; p++)
        for (int o = 0; o < N_OPS; o++) tot += prof_t[p][o];
    if (tot <= 0) return;
    fprintf(stderr, "mfpipe profile (graph ops, seconds and share of graph time):\n");
    static const char *pass[3] = {"forward", "backward", "jvp"};
    for (int p = 0; p < 3; p++)
        for (int o = 0; o < N_OPS; o++)
            if (prof_n[p][o])
                fprintf(stderr, "  %-9s %-12s %8ld calls %9.3f s %5.1f%%\n", pass[p], op_names[o], prof_n[p][o],
                        prof_t[p][o], 100.0 * prof_t[p][o] / tot);
    for (int i = 0; i < prof_nconv; i++)
        fprintf(stderr, "  conv %-28s forward %7.3f s backward %7.3f s jvp %7.3f s\n", prof_conv[i].key, prof_conv[i].t[0],
                prof_conv[i].t[1], prof_conv[i].t[2]);
    memset(prof_t, 0, sizeof prof_t);
    memset(prof_n, 0, sizeof prof_n);
    prof_nconv = 0;
}

void mf_graph_init(mf_graph *g, mf_backend *be, int batch) {
    memset(g, 0, sizeof *g);
    g->be = be;
    g->batch = batch;
    g->output = -1;
}

void mf_graph_free(mf_graph *g) {
    if (!g->nodes && !g->params) return;
    if (profiling() > 0) prof_print();
    for (int b = 0; b < g->n_pool; b++) K(g)->free(BE(g), g->pool[b]);
    free(g->pool);
    for (int i = 0; i < g->n_nodes; i++) {
        mf_gnode *nd = &g->nodes[i];
        K(g)->free(BE(g), nd->mean);
        K(g)->free(BE(g), nd->rstd);
        K(g)->free(BE(g), nd->freq);
    }
    free(g->nodes);
    free(g->params);
    free(g->grad_written);
    memset(g, 0, sizeof *g);
}

void mf_graph_push(mf_graph *g, const char *fmt, ...) {
    char part[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(part, sizeof part, fmt, ap);
    va_end(ap);
    size_t l = strlen(g->prefix);
    int len = snprintf(g->prefix + l, sizeof g->prefix - l, "%s%s", l ? "." : "", part);
    MF_ASSERT(len >= 0 && (size_t)len < sizeof g->prefix - l);
}

void mf_graph_pop(mf_graph *g) {
    char *dot = strrchr(g->prefix, '.');
    if (dot) *dot = '\0';
    else g->prefix[0] = '\0';
}

static int add_param(mf_graph *g, const char *leaf, int ndim, const int *shape, mf_init init, int fan_in) {
    if (g->n_params == g->cap_params) {
        g->cap_params = g->cap_params ? 2 * g->cap_params : 64;
        g->params = mf_xrealloc(g->params, sizeof *g->params * (size_t)g->cap_params);
    }
    mf_param *p = &g->params[g->n_params];
    memset(p, 0, sizeof *p);
    int len = snprintf(p->name, sizeof p->name, "%s%s%s", g->prefix, g->prefix[0] ? "." : "", leaf);
    MF_ASSERT(len > 0 && (size_t)len < sizeof p->name); /* names are short by construction */
    p->ndim = ndim;
    p->numel = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = shape[i];
        p->numel *= shape[i];
    }
    p->offset = g->n_param_floats;
    p->init = init;
    p->fan_in = fan_in;
    /* keep every parameter 16-float (64-byte) aligned in the flat buffer */
    g->n_param_floats += (p->numel + 15) & ~(int64_t)15;
    return g->n_params++;
}

static int add_node(mf_graph *g, mf_op op, int a, int b, int c, int h, int w) {
    if (g->n_nodes == g->cap_nodes) {
        g->cap_nodes = g->cap_nodes ? 2 * g->cap_nodes : 128;
        g->nodes = mf_xrealloc(g->nodes, sizeof *g->nodes * (size_t)g->cap_nodes);
    }
    mf_gnode *nd = &g->nodes[g->n_nodes];
    memset(nd, 0, sizeof *nd);
    nd->op = op;
    nd->in[0] = a;
    nd->in[1] = b;
    nd->p[0] = nd->p[1] = -1;
    nd->n = g->batch;
    nd->c = c;
    nd->h = h;
    nd->w = w;
    nd->numel = (int64_t)g->batch * c * h * w;
    for (int i = 0; i < 2; i++)
        if (nd->in[i] >= 0 && g->nodes[nd->in[i]].needs_grad) nd->needs_grad = true;
    return g->n_nodes++;
}

static mf_gnode *N_(mf_graph *g, int id) {
    MF_ASSERT(id >= 0 && id < g->n_nodes);
    return &g->nodes[id];
}

/* The layout of a computed activation with c channels: blocked when the backend wants blocks and c is a
 * multiple of its block; NHWC (blk = c) when the backend's cblock is -k and c is a multiple of k (see
 * mf_backend.h). Inputs, outputs read by the host and 2-D values stay NCHW. */
static int act_blk(const mf_graph *g, int c) {
    const int b = g->be->cblock;
    if (b < 0) return c > 1 && c % -b == 0 ? c : 0;
    return b > 1 && c % b == 0 ? b : 0;
}

/* x in layout `blk`: x itself, or a REORDER node. */
static int in_layout(mf_graph *g, int x, int blk) {
    mf_gnode *in = N_(g, x);
    if (in->blk == blk) return x;
    int id = add_node(g, MF_OP_REORDER, x, -1, in->c, in->h, in->w);
    g->nodes[id].blk = blk;
    return id;
}

int mf_g_input(mf_graph *g, int c, int h, int w) { return add_node(g, MF_OP_INPUT, -1, -1, c, h, w); }
int mf_g_labels(mf_graph *g) { return add_node(g, MF_OP_LABELS, -1, -1, 1, 1, 1); }

int mf_g_conv(mf_graph *g, int x, int co, int k, int stride, const char *name) {
    mf_gnode *in = N_(g, x);
    int ci = in->c, pad = k / 2;
    int ho = (in->h + 2 * pad - k) / stride + 1, wo = (in->w + 2 * pad - k) / stride + 1;
    mf_graph_push(g, "%s", name);
    int ws[4] = {co, ci, k, k}, bs[1] = {co};
    int pw = add_param(g, "weight", 4, ws, MF_INIT_UNIFORM_FANIN, ci * k * k);
    int pb = add_param(g, "bias", 1, bs, MF_INIT_UNIFORM_FANIN, ci * k * k);
    mf_graph_pop(g);
    int id = add_node(g, MF_OP_CONV, x, -1, co, ho, wo);
    mf_gnode *nd = &g->nodes[id];
    nd->p[0] = pw;
    nd->p[1] = pb;
    nd->needs_grad = true;
    nd->blk = act_blk(g, co);
    nd->cs = (mf_conv_shape){g->batch, ci, g->nodes[x].h, g->nodes[x].w, co, k, stride, pad, ho, wo,
                             g->nodes[x].blk, nd->blk, MF_DT_F32, 0};
    g->flops_fwd += 2.0 * g->batch * co * ci * k * k * (double)ho * wo;
    return id;
}

int mf_g_linear(mf_graph *g, int x, int co, const char *name) {
    x = in_layout(g, x, 0); /* flattening takes the NCHW order */
    int ci = (int)(N_(g, x)->numel / g->batch);
    mf_graph_push(g, "%s", name);
    int ws[2] = {co, ci}, bs[1] = {co};
    int pw = add_param(g, "weight", 2, ws, MF_INIT_UNIFORM_FANIN, ci);
    int pb = add_param(g, "bias", 1, bs, MF_INIT_UNIFORM_FANIN, ci);
    mf_graph_pop(g);
    int id = add_node(g, MF_OP_LINEAR, x, -1, co, 1, 1);
    g->nodes[id].p[0] = pw;
    g->nodes[id].p[1] = pb;
    g->nodes[id].needs_grad = true;
    g->flops_fwd += 2.0 * g->batch * (double)ci * co;
    return id;
}

int mf_g_groupnorm(mf_graph *g, int x, int groups, const char *name) {
    mf_gnode *in = N_(g, x);
    MF_ASSERT(in->c % groups == 0);
    int c = in->c, h = in->h, w = in->w;
    mf_graph_push(g, "%s", name);
    int s[1] = {c};
    int pw = add_param(g, "weight", 1, s, MF_INIT_ONE, 0);
    int pb = add_param(g, "bias", 1, s, MF_INIT_ZERO, 0);
    mf_graph_pop(g);
    int id = add_node(g, MF_OP_GROUPNORM, x, -1, c, h, w);
    g->nodes[id].blk = g->nodes[x].blk;
    g->nodes[id].p[0] = pw;
    g->nodes[id].p[1] = pb;
    g->nodes[id].groups = groups;
    g->nodes[id].eps = 1e-5f;
    g->nodes[id].needs_grad = true;
    return id;
}

int mf_g_groupnorm_silu(mf_graph *g, int x, int groups, const char *name) {
    int id = mf_g_groupnorm(g, x, groups, name);
    g->nodes[id].op = MF_OP_GN_SILU;
    return id;
}

int mf_g_silu(mf_graph *g, int x) {
    mf_gnode *in = N_(g, x);
    int id = add_node(g, MF_OP_SILU, x, -1, in->c, in->h, in->w);
    g->nodes[id].blk = g->nodes[x].blk;
    return id;
}

static int binary(mf_graph *g, mf_op op, int a, int b) {
    MF_ASSERT(N_(g, a)->numel == N_(g, b)->numel);
    b = in_layout(g, b, N_(g, a)->blk);
    mf_gnode *na = N_(g, a);
    int id = add_node(g, op, a, b, na->c, na->h, na->w);
    g->nodes[id].blk = g->nodes[a].blk;
    return id;
}
int mf_g_add(mf_graph *g, int a, int b) { return binary(g, MF_OP_ADD, a, b); }
int mf_g_sub(mf_graph *g, int a, int b) { return binary(g, MF_OP_SUB, a, b); }

int mf_g_add_channel(mf_graph *g, int x, int e) {
    mf_gnode *nx = N_(g, x), *ne = N_(g, e);
    MF_ASSERT(ne->numel == (int64_t)g->batch * nx->c && ne->blk == 0);
    int id = add_node(g, MF_OP_ADD_CHANNEL, x, e, nx->c, nx->h, nx->w);
    g->nodes[id].blk = g->nodes[x].blk;
    return id;
}

int mf_g_concat(mf_graph *g, int a, int b) {
    mf_gnode *na = N_(g, a), *nb = N_(g, b);
    MF_ASSERT(na->h == nb->h && na->w == nb->w);
    int id = add_node(g, MF_OP_CONCAT, a, b, na->c + nb->c, na->h, na->w);
    g->nodes[id].blk = act_blk(g, g->nodes[id].c);
    return id;
}

int mf_g_upsample(mf_graph *g, int x) {
    mf_gnode *in = N_(g, x);
    int id = add_node(g, MF_OP_UPSAMPLE, x, -1, in->c, 2 * in->h, 2 * in->w);
    g->nodes[id].blk = g->nodes[x].blk;
    return id;
}

int mf_g_fourier(mf_graph *g, int t, int half, float scale, float max_period) {
    MF_ASSERT(N_(g, t)->numel == g->batch);
    int id = add_node(g, MF_OP_FOURIER, t, -1, 2 * half, 1, 1);
    mf_gnode *nd = &g->nodes[id];
    nd->half = half;
    float *f = mf_xmalloc(sizeof *f * (size_t)half);
    for (int k = 0; k < half; k++) f[k] = scale * (float)exp(-log((double)max_period) * k / half);
    nd->freq = K(g)->alloc(BE(g), sizeof *f * (size_t)half);
    MF_ASSERT(nd->freq);
    K(g)->write(BE(g), nd->freq, f, sizeof *f * (size_t)half);
    free(f);
    return id;
}

int mf_g_embed(mf_graph *g, int labels, int num, int dim, const char *name) {
    MF_ASSERT(N_(g, labels)->op == MF_OP_LABELS);
    mf_graph_push(g, "%s", name);
    int s[2] = {num, dim};
    int pw = add_param(g, "weight", 2, s, MF_INIT_NORMAL, 0);
    mf_graph_pop(g);
    int id = add_node(g, MF_OP_EMBED, labels, -1, dim, 1, 1);
    g->nodes[id].p[0] = pw;
    g->nodes[id].needs_grad = true;
    return id;
}

static float *alloc_f(mf_graph *g, int64_t n, int *fail) {
    if (n <= 0) return NULL;
    float *p = K(g)->alloc(BE(g), sizeof(float) * (size_t)n);
    if (!p) *fail = 1;
    g->act_bytes += sizeof(float) * (size_t)n;
    return p;
}

/* ---- memory plan ---------------------------------------------------------------------------------
 * Activations, gradients and tangents are given lifetimes on one timeline: forward of node i at time
 * i, backward of node j at time n + (n-1-j). A buffer is reused by a later interval of the same size
 * once its occupant's last use is strictly earlier. Values needed by backward (inputs of conv, linear,
 * GroupNorm, SiLU) stay live until their consumer's backward; everything else dies after its last
 * forward use; a gradient lives from its first write to its node's backward. */
typedef struct interval {
    int64_t numel;
    int start, end;
    float **slot;
} interval;

static bool value_needed_in_bwd(mf_op op) {
    return op == MF_OP_CONV || op == MF_OP_LINEAR || op == MF_OP_GROUPNORM || op == MF_OP_SILU || op == MF_OP_GN_SILU;
}

static int cmp_interval(const void *a, const void *b) {
    const interval *x = a, *y = b;
    return x->start != y->start ? (x->start < y->start ? -1 : 1) : (x->numel > y->numel ? -1 : x->numel < y->numel);
}

static int plan_memory(mf_graph *g, bool need_grad, bool need_tan) {
    int n = g->n_nodes, forever = 2 * n + 2;
    int *last_fwd = mf_xmalloc(sizeof(int) * (size_t)n), *last_bwd = mf_xmalloc(sizeof(int) * (size_t)n);
    int *first_grad = mf_xmalloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) last_fwd[i] = i, last_bwd[i] = -1, first_grad[i] = -1;
    for (int j = 0; j < n; j++) {
        mf_gnode *c = &g->nodes[j];
        int tb = n + (n - 1 - j);
        for (int s = 0; s < 2; s++) {
            int i = c->in[s];
            if (i < 0) continue;
            if (j > last_fwd[i]) last_fwd[i] = j;
            if (need_grad && c->needs_grad && value_needed_in_bwd(c->op) && tb > last_bwd[i]) last_bwd[i] = tb;
            if (need_grad && c->needs_grad && (first_grad[i] < 0 || tb < first_grad[i])) first_grad[i] = tb;
        }
    }
    /* Gradient pass-through: the input of an ADD (either side), SUB (left) or ADD_CHANNEL (x) whose only
     * consumer that is gets exactly the consumer's gradient; it shares the consumer's gradient buffer
     * (backward then skips the copy), which lives until the last sharer's backward (gend). */
    int *uses = mf_xcalloc((size_t)n, sizeof(int)), *gend = mf_xmalloc(sizeof(int) * (size_t)n);
    for (int j = 0; j < n; j++)
        for (int s = 0; s < 2; s++)
            if (g->nodes[j].in[s] >= 0) uses[g->nodes[j].in[s]]++;
    for (int i = 0; i < n; i++) g->nodes[i].grad_alias = -1, gend[i] = n + (n - 1 - i);
    for (int j = need_grad ? 0 : n; j < n; j++) {
        const mf_gnode *c = &g->nodes[j];
        if (!c->needs_grad || !(c->op == MF_OP_ADD || c->op == MF_OP_SUB || c->op == MF_OP_ADD_CHANNEL)) continue;
        for (int s = 0; s < (c->op == MF_OP_ADD ? 2 : 1); s++) {
            mf_gnode *in = &g->nodes[c->in[s]];
            if (uses[c->in[s]] == 1 && in->needs_grad && in->op != MF_OP_INPUT && !in->keep && c->in[s] != g->output &&
                in->numel == c->numel && in->blk == c->blk)
                in->grad_alias = j;
        }
    }
    for (int i = n - 1; i >= 0; i--) { /* extend each root's lifetime over its sharers (consumers first) */
        int r = i;
        while (g->nodes[r].grad_alias >= 0) r = g->nodes[r].grad_alias;
        if (r != i && gend[i] > gend[r]) gend[r] = gend[i];
    }
    interval *iv = mf_xmalloc(sizeof *iv * (size_t)(3 * n + 1));
    int m = 0;
    for (int i = 0; i < n; i++) {
        mf_gnode *nd = &g->nodes[i];
        if (nd->op == MF_OP_LABELS) continue;
        bool perm = nd->op == MF_OP_INPUT || i == g->output || nd->keep;
        int end = perm ? forever : (last_bwd[i] > last_fwd[i] ? last_bwd[i] : last_fwd[i]);
        const int64_t out_floats = nd->dt == MF_DT_BF16 ? (nd->numel + 1) / 2 : nd->numel; /* bf16: half */
        iv[m++] = (interval){out_floats, perm ? -1 : i, end, &nd->out};
        if (need_tan) iv[m++] = (interval){nd->numel, perm ? -1 : i, perm ? forever : last_fwd[i], &nd->tan};
        if (need_grad && nd->needs_grad && nd->grad_alias < 0) {
            int start = i == g->output ? n - 1 : first_grad[i];
            if (start >= 0) iv[m++] = (interval){nd->numel, start, gend[i], &nd->grad};
        }
    }
    qsort(iv, (size_t)m, sizeof *iv, cmp_interval);
    int64_t *bsize = mf_xmalloc(sizeof(int64_t) * (size_t)m);
    int *busy = mf_xmalloc(sizeof(int) * (size_t)m);
    int nb = 0, fail = 0;
    int *assign = mf_xmalloc(sizeof(int) * (size_t)m);
    for (int k = 0; k < m; k++) {
        int best = -1;
        for (int b = 0; b < nb; b++)
            if (bsize[b] == iv[k].numel && busy[b] < iv[k].start && (best < 0 || busy[b] > busy[best])) best = b;
        if (best < 0) {
            best = nb++;
            bsize[best] = iv[k].numel;
        }
        busy[best] = iv[k].end;
        assign[k] = best;
    }
    g->pool = mf_xcalloc((size_t)nb, sizeof *g->pool);
    g->n_pool = nb;
    for (int b = 0; b < nb && !fail; b++) g->pool[b] = alloc_f(g, bsize[b], &fail);
    for (int k = 0; k < m; k++) *iv[k].slot = g->pool[assign[k]];
    for (int i = n - 1; i >= 0; i--) /* consumers first: a chain of sharers ends at its root */
        if (g->nodes[i].grad_alias >= 0) g->nodes[i].grad = g->nodes[g->nodes[i].grad_alias].grad;
    int64_t unplanned = 0;
    for (int k = 0; k < m; k++) unplanned += iv[k].numel;
    g->unplanned_bytes = sizeof(float) * (size_t)unplanned;
    free(last_fwd), free(last_bwd), free(first_grad), free(iv), free(bsize), free(busy), free(assign);
    free(uses), free(gend);
    return fail;
}

/* bf16 activations (mf_backend.h, "reduced precision"): a fused GroupNorm+SiLU output that only
 * convolutions read, each accepting a bf16 input, is stored in bf16: those convolutions read it as
 * their bf16 operand directly (no conversion pass, half the memory and traffic). Its own backward and
 * JVP read its float32 input, and tangents and gradients stay float32. */
static void choose_bf16(mf_graph *g) {
    mf_backend *be = BE(g);
    const mf_backend_i *k = K(g);
    if (!be->bf16_act || !k->gn_silu_bf16 || !k->conv_bf16_x) return;
    for (int i = 0; i < g->n_nodes; i++) {
        mf_gnode *nd = &g->nodes[i];
        if (nd->op != MF_OP_GN_SILU || nd->keep || i == g->output || nd->blk == 0) continue;
        int uses = 0, ok = 1;
        for (int j = i + 1; j < g->n_nodes && ok; j++) {
            mf_gnode *c = &g->nodes[j];
            for (int s = 0; s < 2; s++)
                if (c->in[s] == i) {
                    uses++;
                    mf_conv_shape cs = c->cs;
                    cs.xdt = MF_DT_BF16;
                    ok = c->op == MF_OP_CONV && s == 0 && k->conv_bf16_x(be, &cs);
                }
        }
        if (!ok || !uses) continue;
        nd->dt = MF_DT_BF16;
        for (int j = i + 1; j < g->n_nodes; j++)
            if (g->nodes[j].in[0] == i) g->nodes[j].cs.xdt = MF_DT_BF16;
    }
}

int mf_graph_finalize(mf_graph *g, int output, bool need_grad, bool need_tan) {
    /* the host reads outputs and kept values: they must be NCHW (models end in a few-channel conv or a
     * linear layer) */
    MF_ASSERT(N_(g, output)->blk == 0);
    for (int i = 0; i < g->n_nodes; i++) MF_ASSERT(!g->nodes[i].keep || g->nodes[i].blk == 0);
    g->output = output;
    if (g->fp32) {
        for (int i = 0; i < g->n_nodes; i++)
            if (g->nodes[i].op == MF_OP_CONV) g->nodes[i].cs.fp32 = 1;
    } else {
        choose_bf16(g);
    }
    int fail = plan_memory(g, need_grad, need_tan);
    for (int i = 0; i < g->n_nodes && !fail; i++) {
        mf_gnode *nd = &g->nodes[i];
        if (nd->op == MF_OP_GROUPNORM || nd->op == MF_OP_GN_SILU) {
            nd->mean = alloc_f(g, (int64_t)nd->n * nd->groups, &fail);
            nd->rstd = alloc_f(g, (int64_t)nd->n * nd->groups, &fail);
        }
    }
    g->grad_written = mf_xcalloc((size_t)g->n_nodes, sizeof *g->grad_written);
    g->allocated = true;
    if (fail)
        return mf_fail("out of %s memory allocating activations (%.1f MiB so far) for batch %d",
                       K(g)->name, (double)g->act_bytes / 1048576.0, g->batch);
    return 0;
}

void mf_graph_keep(mf_graph *g, int node) {
    MF_ASSERT(!g->allocated);
    N_(g, node)->keep = true;
}

void mf_graph_set_params(mf_graph *g, const float *params) { g->pbuf = params; }
void mf_graph_set_grads(mf_graph *g, float *grads) { g->gbuf = grads; }
void mf_graph_set_labels(mf_graph *g, const int32_t *labels) { g->labels = labels; }

void mf_graph_write_input(mf_graph *g, int node, const float *host) {
    mf_gnode *nd = N_(g, node);
    MF_ASSERT(nd->op == MF_OP_INPUT);
    K(g)->write(BE(g), nd->out, host, sizeof(float) * (size_t)nd->numel);
}

float *mf_graph_out(mf_graph *g, int node) { return N_(g, node)->out; }

static const float *P(const mf_graph *g, int p) { return p < 0 ? NULL : g->pbuf + g->params[p].offset; }
static float *G(const mf_graph *g, int p) { return p < 0 || !g->gbuf ? NULL : g->gbuf + g->params[p].offset; }

/* y = concat(a, b) over channels, any layouts (a or b NULL: that part is left as it is) */
static void concat(mf_graph *g, const mf_gnode *nd, const float *a, const float *b, float *y) {
    const mf_gnode *na = &g->nodes[nd->in[0]], *nb = &g->nodes[nd->in[1]];
    const int hw = nd->h * nd->w;
    if (a) K(g)->copy_channels(BE(g), nd->n, hw, na->c, a, na->c, 0, na->blk, y, nd->c, 0, nd->blk, 0);
    if (b) K(g)->copy_channels(BE(g), nd->n, hw, nb->c, b, nb->c, 0, nb->blk, y, nd->c, na->c, nd->blk, 0);
}

static void forward_node(mf_graph *g, mf_gnode *nd) {
    mf_backend *be = BE(g);
    const mf_backend_i *k = K(g);
    mf_gnode *a = nd->in[0] >= 0 ? &g->nodes[nd->in[0]] : NULL;
    mf_gnode *b = nd->in[1] >= 0 ? &g->nodes[nd->in[1]] : NULL;
    int hw = nd->h * nd->w;
    switch (nd->op) {
    case MF_OP_INPUT:
    case MF_OP_LABELS: break;
    case MF_OP_CONV: k->conv2d(be, &nd->cs, a->out, P(g, nd->p[0]), P(g, nd->p[1]), nd->out); break;
    case MF_OP_LINEAR: {
        int ci = (int)(a->numel / nd->n);
        k->gemm(be, 0, 1, nd->n, nd->c, ci, 1.0f, a->out, P(g, nd->p[0]), 0.0f, nd->out);
        k->add_bias_rows(be, nd->n, nd->c, P(g, nd->p[1]), nd->out);
        break;
    }
    case MF_OP_GROUPNORM:
        k->groupnorm(be, nd->n, nd->c, hw, nd->groups, nd->eps, a->out, P(g, nd->p[0]), P(g, nd->p[1]),
                     nd->out, nd->mean, nd->rstd, nd->blk);
        break;
    case MF_OP_GN_SILU:
        if (nd->dt == MF_DT_BF16)
            k->gn_silu_bf16(be, nd->n, nd->c, hw, nd->groups, nd->eps, a->out, P(g, nd->p[0]), P(g, nd->p[1]),
                            nd->out, nd->mean, nd->rstd, nd->blk);
        else
            k->gn_silu(be, nd->n, nd->c, hw, nd->groups, nd->eps, a->out, P(g, nd->p[0]), P(g, nd->p[1]), nd->out,
                       nd->mean, nd->rstd, nd->blk);
        break;
    case MF_OP_SILU: k->silu(be, nd->numel, a->out, nd->out); break;
    case MF_OP_ADD: k->add2(be, nd->numel, 1.0f, a->out, 1.0f, b->out, nd->out); break;
    case MF_OP_SUB: k->add2(be, nd->numel, 1.0f, a->out, -1.0f, b->out, nd->out); break;
    case MF_OP_ADD_CHANNEL:
        k->add_channel(be, nd->n, nd->c, hw, a->out, b->out, nd->out, nd->blk);
        break;
    case MF_OP_CONCAT: concat(g, nd, a->out, b->out, nd->out); break;
    case MF_OP_REORDER: k->copy_channels(be, nd->n, hw, nd->c, a->out, nd->c, 0, a->blk, nd->out, nd->c, 0, nd->blk, 0); break;
    case MF_OP_UPSAMPLE: k->upsample2x(be, a->n, a->c, a->h, a->w, a->out, nd->out, nd->blk); break;
    case MF_OP_FOURIER: k->fourier(be, nd->n, nd->half, a->out, nd->freq, nd->out); break;
    case MF_OP_EMBED:
        MF_ASSERT(g->labels);
        k->embed(be, nd->n, nd->c, g->labels, P(g, nd->p[0]), nd->out);
        break;
    }
}

void mf_graph_forward(mf_graph *g) {
    MF_ASSERT(g->allocated && g->pbuf);
    if (K(g)->params_epoch) K(g)->params_epoch(BE(g));
    const int prof = profiling() > 0;
    for (int i = 0; i < g->n_nodes; i++) {
        double t0 = prof ? now_s() : 0;
        forward_node(g, &g->nodes[i]);
        if (prof) prof_add(g, 0, &g->nodes[i], t0);
    }
}

/* dst (+)= src, element-wise */
static void accum(mf_graph *g, float *dst, const float *src, int64_t n, int acc) {
    if (acc) K(g)->axpby(BE(g), n, 1.0f, src, 1.0f, dst);
    else K(g)->copy(BE(g), dst, src, sizeof(float) * (size_t)n);
}

/* The gradient of input `id` when it shares its consumer's buffer (grad_alias): nothing to copy. */
static bool shares_grad(mf_graph *g, int id) {
    if (g->nodes[id].grad_alias < 0) return false;
    g->grad_written[id] = true;
    return true;
}

/* Start or continue the gradient of input node `id`; returns the acc flag to use. */
static int grad_target(mf_graph *g, int id, float **buf) {
    mf_gnode *in = &g->nodes[id];
    if (!in->needs_grad || !in->grad) return -1;
    *buf = in->grad;
    int acc = g->grad_written[id];
    g->grad_written[id] = true;
    return acc;
}

static void backward_node(mf_graph *g, int i) {
    mf_backend *be = BE(g);
    const mf_backend_i *k = K(g);
    mf_gnode *nd = &g->nodes[i];
    const float *dy = nd->grad;
    mf_gnode *a = nd->in[0] >= 0 ? &g->nodes[nd->in[0]] : NULL;
    mf_gnode *b = nd->in[1] >= 0 ? &g->nodes[nd->in[1]] : NULL;
    int hw = nd->h * nd->w;
    float *dx;
    int acc;
    switch (nd->op) {
    case MF_OP_INPUT:
    case MF_OP_LABELS:
    case MF_OP_FOURIER: break; /* times are not trained */
    case MF_OP_CONV: {
        float *gw = G(g, nd->p[0]);
        acc = grad_target(g, nd->in[0], &dx);
        if (gw && acc >= 0 && k->conv2d_bwd) {
            k->conv2d_bwd(be, &nd->cs, a->out, dy, P(g, nd->p[0]), gw, G(g, nd->p[1]), dx, acc);
            break;
        }
        if (gw) k->conv2d_bwd_filter(be, &nd->cs, a->out, dy, gw, G(g, nd->p[1]));
        if (acc >= 0) k->conv2d_bwd_data(be, &nd->cs, dy, P(g, nd->p[0]), dx, acc);
        break;
    }
    case MF_OP_LINEAR: {
        int ci = (int)(a->numel / nd->n);
        if (G(g, nd->p[0])) {
            k->gemm(be, 1, 0, nd->c, ci, nd->n, 1.0f, dy, a->out, 1.0f, G(g, nd->p[0]));
            k->sum_rows(be, nd->n, nd->c, dy, G(g, nd->p[1]));
        }
        if ((acc = grad_target(g, nd->in[0], &dx)) >= 0)
            k->gemm(be, 0, 0, nd->n, ci, nd->c, 1.0f, dy, P(g, nd->p[0]), acc ? 1.0f : 0.0f, dx);
        break;
    }
    case MF_OP_GROUPNORM:
        acc = grad_target(g, nd->in[0], &dx);
        k->groupnorm_bwd(be, nd->n, nd->c, hw, nd->groups, a->out, P(g, nd->p[0]), nd->mean, nd->rstd, dy,
                         acc >= 0 ? dx : NULL, G(g, nd->p[0]), G(g, nd->p[1]), acc > 0, nd->blk);
        break;
    case MF_OP_GN_SILU:
        acc = grad_target(g, nd->in[0], &dx);
        k->gn_silu_bwd(be, nd->n, nd->c, hw, nd->groups, a->out, P(g, nd->p[0]), P(g, nd->p[1]), nd->mean, nd->rstd,
                       dy, acc >= 0 ? dx : NULL, G(g, nd->p[0]), G(g, nd->p[1]), acc > 0, nd->blk);
        break;
    case MF_OP_SILU:
        if ((acc = grad_target(g, nd->in[0], &dx)) >= 0) k->silu_bwd(be, nd->numel, a->out, dy, dx, acc);
        break;
    case MF_OP_ADD:
    case MF_OP_SUB:
        if (!shares_grad(g, nd->in[0]) && (acc = grad_target(g, nd->in[0], &dx)) >= 0) accum(g, dx, dy, nd->numel, acc);
        if (!(nd->op == MF_OP_ADD && shares_grad(g, nd->in[1])) && (acc = grad_target(g, nd->in[1], &dx)) >= 0) {
            if (nd->op == MF_OP_ADD) accum(g, dx, dy, nd->numel, acc);
            else k->axpby(be, nd->numel, -1.0f, dy, acc ? 1.0f : 0.0f, dx);
        }
        break;
    case MF_OP_ADD_CHANNEL:
        if (!shares_grad(g, nd->in[0]) && (acc = grad_target(g, nd->in[0], &dx)) >= 0) accum(g, dx, dy, nd->numel, acc);
        if ((acc = grad_target(g, nd->in[1], &dx)) >= 0) k->sum_channel(be, nd->n, nd->c, hw, dy, dx, acc, nd->blk);
        break;
    case MF_OP_CONCAT:
        if ((acc = grad_target(g, nd->in[0], &dx)) >= 0)
            k->copy_channels(be, nd->n, hw, a->c, dy, nd->c, 0, nd->blk, dx, a->c, 0, a->blk, acc);
        if ((acc = grad_target(g, nd->in[1], &dx)) >= 0)
            k->copy_channels(be, nd->n, hw, b->c, dy, nd->c, a->c, nd->blk, dx, b->c, 0, b->blk, acc);
        break;
    case MF_OP_REORDER:
        if ((acc = grad_target(g, nd->in[0], &dx)) >= 0)
            k->copy_channels(be, nd->n, hw, nd->c, dy, nd->c, 0, nd->blk, dx, nd->c, 0, a->blk, acc);
        break;
    case MF_OP_UPSAMPLE:
        if ((acc = grad_target(g, nd->in[0], &dx)) >= 0)
            k->upsample2x_bwd(be, a->n, a->c, a->h, a->w, dy, dx, acc, nd->blk);
        break;
    case MF_OP_EMBED:
        if (G(g, nd->p[0])) k->embed_bwd(be, nd->n, nd->c, g->labels, dy, G(g, nd->p[0]));
        break;
    }
}

void mf_graph_backward(mf_graph *g, const float *dout) {
    MF_ASSERT(g->allocated && g->gbuf);
    memset(g->grad_written, 0, sizeof *g->grad_written * (size_t)g->n_nodes);
    mf_gnode *o = &g->nodes[g->output];
    K(g)->copy(BE(g), o->grad, dout, sizeof(float) * (size_t)o->numel);
    g->grad_written[g->output] = true;
    const int prof = profiling() > 0;
    for (int i = g->n_nodes - 1; i >= 0; i--)
        if (g->nodes[i].needs_grad && g->grad_written[i]) {
            double t0 = prof ? now_s() : 0;
            backward_node(g, i);
            if (prof) prof_add(g, 1, &g->nodes[i], t0);
        }
}

/* tangent of input slot s of nd, or NULL when structurally zero */
static const float *tin(mf_graph *g, const mf_gnode *nd, int s) {
    if (nd->in[s] < 0) return NULL;
    const mf_gnode *x = &g->nodes[nd->in[s]];
    return x->has_tan ? x->tan : NULL;
}

static void jvp_node(mf_graph *g, mf_gnode *nd) {
    mf_backend *be = BE(g);
    const mf_backend_i *k = K(g);
    mf_gnode *a = nd->in[0] >= 0 ? &g->nodes[nd->in[0]] : NULL;
    const float *ta = tin(g, nd, 0), *tb = tin(g, nd, 1);
    nd->has_tan = ta || tb;
    if (!nd->has_tan) return;
    int hw = nd->h * nd->w;
    size_t bytes = sizeof(float) * (size_t)nd->numel;
    switch (nd->op) {
    case MF_OP_INPUT:
    case MF_OP_LABELS:
    case MF_OP_EMBED: nd->has_tan = false; break;
    case MF_OP_CONV: { /* the tangent: float32, bias-free, from the float32 tangent of x */
        mf_conv_shape ts = nd->cs;
        ts.xdt = MF_DT_F32;
        ts.fp32 = 1;
        k->conv2d(be, &ts, ta, P(g, nd->p[0]), NULL, nd->tan);
        break;
    }
    case MF_OP_LINEAR: {
        int ci = (int)(a->numel / nd->n);
        k->gemm(be, 0, 1, nd->n, nd->c, ci, 1.0f, ta, P(g, nd->p[0]), 0.0f, nd->tan);
        break;
    }
    case MF_OP_GROUPNORM:
        k->groupnorm_jvp(be, nd->n, nd->c, hw, nd->groups, a->out, P(g, nd->p[0]), nd->mean, nd->rstd, ta, nd->tan,
                         nd->blk);
        break;
    case MF_OP_GN_SILU:
        k->gn_silu_jvp(be, nd->n, nd->c, hw, nd->groups, a->out, P(g, nd->p[0]), P(g, nd->p[1]), nd->mean, nd->rstd,
                       ta, nd->tan, nd->blk);
        break;
    case MF_OP_SILU: k->silu_jvp(be, nd->numel, a->out, ta, nd->tan); break;
    case MF_OP_ADD:
    case MF_OP_SUB: {
        float sb = nd->op == MF_OP_ADD ? 1.0f : -1.0f;
        if (ta && tb) k->add2(be, nd->numel, 1.0f, ta, sb, tb, nd->tan);
        else if (ta) k->copy(be, nd->tan, ta, bytes);
        else k->axpby(be, nd->numel, sb, tb, 0.0f, nd->tan);
        break;
    }
    case MF_OP_ADD_CHANNEL:
        if (ta && tb) {
            k->add_channel(be, nd->n, nd->c, hw, ta, tb, nd->tan, nd->blk);
        } else if (ta) {
            k->copy(be, nd->tan, ta, bytes);
        } else {
            k->fill(be, nd->tan, 0.0f, nd->numel);
            k->add_channel(be, nd->n, nd->c, hw, nd->tan, tb, nd->tan, nd->blk);
        }
        break;
    case MF_OP_CONCAT:
        if (!ta || !tb) k->fill(be, nd->tan, 0.0f, nd->numel);
        concat(g, nd, ta, tb, nd->tan);
        break;
    case MF_OP_REORDER: k->copy_channels(be, nd->n, hw, nd->c, ta, nd->c, 0, a->blk, nd->tan, nd->c, 0, nd->blk, 0); break;
    case MF_OP_UPSAMPLE: k->upsample2x(be, a->n, a->c, a->h, a->w, ta, nd->tan, nd->blk); break;
    case MF_OP_FOURIER: k->fourier_jvp(be, nd->n, nd->half, a->out, nd->freq, ta, nd->tan); break;
    }
}

void mf_graph_jvp(mf_graph *g, int n_tan, const int *tan_nodes, const float *const *tan_inputs) {
    MF_ASSERT(g->allocated && g->pbuf);
    if (K(g)->params_epoch) K(g)->params_epoch(BE(g));
    for (int i = 0; i < g->n_nodes; i++) g->nodes[i].has_tan = false;
    for (int j = 0; j < n_tan; j++) {
        mf_gnode *nd = N_(g, tan_nodes[j]);
        MF_ASSERT(nd->op == MF_OP_INPUT && nd->tan);
        if (!tan_inputs[j]) continue;
        K(g)->copy(BE(g), nd->tan, tan_inputs[j], sizeof(float) * (size_t)nd->numel);
        nd->has_tan = true;
    }
    for (int i = 0; i < g->n_nodes; i++) {
        mf_gnode *nd = &g->nodes[i];
        double t0 = profiling() > 0 ? now_s() : 0;
        forward_node(g, nd);
        if (nd->op != MF_OP_INPUT) jvp_node(g, nd);
        if (profiling() > 0) prof_add(g, 2, nd, t0);
    }
    mf_gnode *o = &g->nodes[g->output];
    if (!o->has_tan) K(g)->fill(BE(g), o->tan, 0.0f, o->numel);
}

void mf_graph_init_params(const mf_graph *g, uint64_t seed, float *host) {
    memset(host, 0, sizeof(float) * (size_t)g->n_param_floats);
    for (int i = 0; i < g->n_params; i++) {
        const mf_param *p = &g->params[i];
        float *dst = host + p->offset;
        switch (p->init) {
        case MF_INIT_ZERO: break;
        case MF_INIT_ONE:
            for (int64_t j = 0; j < p->numel; j++) dst[j] = 1.0f;
            break;
        case MF_INIT_UNIFORM_FANIN: {
            float bound = 1.0f / sqrtf((float)(p->fan_in > 0 ? p->fan_in : 1));
            mf_rng_uniform(seed, MF_RNG_INIT, (uint64_t)i, dst, p->numel);
            for (int64_t j = 0; j < p->numel; j++) dst[j] = (2.0f * dst[j] - 1.0f) * bound;
            break;
        }
        case MF_INIT_NORMAL: mf_rng_normal(seed, MF_RNG_INIT, (uint64_t)i, dst, p->numel); break;
        }
    }
}

int mf_graph_find_param(const mf_graph *g, const char *name) {
    for (int i = 0; i < g->n_params; i++)
        if (strcmp(g->params[i].name, name) == 0) return i;
    return -1;
}
