/* mf_graph.h - a static op graph for a fixed batch shape (ggml manner): the model is described once
 * with the builder functions; forward, backward (reverse mode, gradients accumulated into one flat
 * buffer) and JVP (forward mode, tangents of the inputs) are derived from per-op rules in mf_graph.c.
 * Parameters live in one flat buffer owned by the caller; the graph holds views (offsets) into it.
 * Activation memory is planned once at finalize: buffers are shared between values whose lifetimes do
 * not overlap, so only the output (and inputs) may be read after a pass. */
#ifndef MF_GRAPH_H
#define MF_GRAPH_H

#include <stdbool.h>
#include <stdint.h>

#include "mf_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    MF_OP_INPUT = 1, /* data fed from outside: images, times */
    MF_OP_LABELS,    /* int32 class labels on the host; no tangent, no gradient */
    MF_OP_CONV,      /* conv2d + bias */
    MF_OP_LINEAR,    /* y = x W^T + b, x (n, ci) */
    MF_OP_GROUPNORM,
    MF_OP_SILU,
    MF_OP_ADD,        /* y = a + b */
    MF_OP_ADD_CHANNEL,/* y = x + e[:, :, None, None] */
    MF_OP_CONCAT,     /* channel concat */
    MF_OP_UPSAMPLE,   /* nearest 2x */
    MF_OP_FOURIER,    /* sin/cos features of a time input */
    MF_OP_EMBED,      /* label embedding table lookup */
    MF_OP_SUB,        /* y = a - b */
    MF_OP_REORDER,    /* the same tensor in another layout (inserted by the builder where layouts meet) */
    MF_OP_GN_SILU,    /* silu(GroupNorm(x)) in one op (parameters named as GroupNorm's) */
} mf_op;

typedef enum { MF_INIT_ZERO = 0, MF_INIT_ONE, MF_INIT_UNIFORM_FANIN, MF_INIT_NORMAL } mf_init;

typedef struct mf_param {
    char name[96];    /* PyTorch-style dotted name: "down.0.res.1.conv1.weight" */
    int64_t offset;   /* in floats, into the flat parameter buffer */
    int64_t numel;
    int shape[4], ndim;
    mf_init init;
    int fan_in;
} mf_param;

typedef struct mf_gnode {
    mf_op op;
    int in[2];        /* input nodes (-1: none) */
    int p[2];         /* parameters: weight/gamma, bias/beta (-1: none) */
    int n, c, h, w;   /* output shape (linear/fourier outputs: (n, c, 1, 1)) */
    int blk;          /* layout of out/grad/tan: 0 NCHW, else the backend's channel block (mf_backend.h) */
    int dt;           /* element type of out: MF_DT_F32, or MF_DT_BF16 (a GN_SILU output that only
                       * bf16-accepting convolutions read, on a backend with bf16_act; grad/tan: float32) */
    int64_t numel;
    mf_conv_shape cs; /* MF_OP_CONV */
    int groups;       /* MF_OP_GROUPNORM */
    float eps;
    int half;         /* MF_OP_FOURIER: number of frequencies */
    float *freq;      /* MF_OP_FOURIER: backend buffer of `half` frequencies */
    float *out, *grad, *tan; /* backend buffers */
    float *mean, *rstd;      /* MF_OP_GROUPNORM statistics (n * groups) */
    bool needs_grad;  /* on a path from a parameter or a grad-requiring input to the output */
    bool has_tan;     /* on a path from an input with a tangent */
    bool keep;        /* output stays readable after a pass (mf_graph_keep) */
    int grad_alias;   /* >= 0: this node's gradient IS that node's (an add-like sole consumer passes its
                       * gradient through unchanged, so the buffer is shared instead of copied) */
} mf_gnode;

typedef struct mf_graph {
    mf_backend *be;
    int batch;
    mf_gnode *nodes;
    int n_nodes, cap_nodes;
    mf_param *params;
    int n_params, cap_params;
    int64_t n_param_floats;
    const float *pbuf; /* current parameter buffer (backend), set by mf_graph_set_params */
    float *gbuf;       /* gradient buffer (backend), may be NULL for inference-only graphs */
    const int32_t *labels; /* host labels for MF_OP_LABELS nodes (batch entries) */
    int output;        /* output node id */
    double flops_fwd;  /* multiply-adds * 2 of conv and linear layers, for the whole batch */
    bool allocated;
    bool fp32;         /* every convolution in float32, no activation in bf16, whatever the backend's
                        * precision (set before finalize: the evaluation's feature network, so metrics do
                        * not depend on the run's precision) */
    bool *grad_written; /* per node: gradient already initialised during this backward pass */
    char prefix[96];   /* name prefix stack for the builder */
    size_t act_bytes;  /* bytes of activations, grads, tangents allocated (after the memory plan) */
    size_t unplanned_bytes; /* what they would take without buffer reuse */
    float **pool;      /* the planned buffers (nodes' out/grad/tan point into these) */
    int n_pool;
} mf_graph;

/* ---- building ---------------------------------------------------------------------------------- */
void mf_graph_init(mf_graph *g, mf_backend *be, int batch);
void mf_graph_free(mf_graph *g);
/* Name scoping for parameters: push "down.0" then "conv1" gives "down.0.conv1.weight". */
void mf_graph_push(mf_graph *g, const char *fmt, ...);
void mf_graph_pop(mf_graph *g);

int mf_g_input(mf_graph *g, int c, int h, int w);
int mf_g_labels(mf_graph *g);
int mf_g_conv(mf_graph *g, int x, int co, int k, int stride, const char *name);
int mf_g_linear(mf_graph *g, int x, int co, const char *name);
int mf_g_groupnorm(mf_graph *g, int x, int groups, const char *name);
int mf_g_silu(mf_graph *g, int x);
/* silu(groupnorm(x)): the same parameters and result as mf_g_silu(mf_g_groupnorm(..)), one fused op that
 * keeps no GroupNorm output (less memory, fewer passes) */
int mf_g_groupnorm_silu(mf_graph *g, int x, int groups, const char *name);
int mf_g_add(mf_graph *g, int a, int b);
int mf_g_sub(mf_graph *g, int a, int b);
int mf_g_add_channel(mf_graph *g, int x, int e);
int mf_g_concat(mf_graph *g, int a, int b);
int mf_g_upsample(mf_graph *g, int x);
/* features [sin(t*f_k), cos(t*f_k)], f_k = scale * max_period^(-k/half), k < half */
int mf_g_fourier(mf_graph *g, int t, int half, float scale, float max_period);
int mf_g_embed(mf_graph *g, int labels, int num, int dim, const char *name);
/* Keep a node's output readable after a pass (features of a classifier); call before finalize. */
void mf_graph_keep(mf_graph *g, int node);
/* Mark the output and allocate buffers. need_grad: allocate gradients (training);
 * need_tan: allocate tangents (JVP). Returns 0 or -1 (out of memory, mf_fail). */
int mf_graph_finalize(mf_graph *g, int output, bool need_grad, bool need_tan);

/* ---- running ----------------------------------------------------------------------------------- */
void mf_graph_set_params(mf_graph *g, const float *params); /* backend buffer of n_param_floats */
void mf_graph_set_grads(mf_graph *g, float *grads);         /* backend buffer of n_param_floats */
void mf_graph_set_labels(mf_graph *g, const int32_t *labels);
/* Input node data: copy `host` (numel floats) in, or point at a backend buffer. */
void mf_graph_write_input(mf_graph *g, int node, const float *host);
float *mf_graph_out(mf_graph *g, int node);
void mf_graph_forward(mf_graph *g);
/* Reverse mode: gradient of sum(dout * output) w.r.t. the parameters, accumulated into the grads
 * buffer (which the caller zeroes per step: two passes add up, as fm_avgvel's do); input nodes with
 * a grad buffer get this pass's gradient (overwritten, not accumulated; tests/test_plan_grad.c). */
void mf_graph_backward(mf_graph *g, const float *dout);
/* Forward mode: tangents of the output for the given input tangents (backend buffers; NULL = zero),
 * parameters fixed. Runs the forward pass too. tan_inputs[i] pairs with nodes tan_nodes[i]. */
void mf_graph_jvp(mf_graph *g, int n_tan, const int *tan_nodes, const float *const *tan_inputs);

/* Parameter initialisation (PyTorch defaults: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for conv/linear,
 * ones/zeros for norms, N(0,1) for embeddings) from the Philox stream (seed, MF_RNG_INIT). Host
 * buffer of n_param_floats. */
void mf_graph_init_params(const mf_graph *g, uint64_t seed, float *host_params);
int mf_graph_find_param(const mf_graph *g, const char *name);

#ifdef __cplusplus
}
#endif
#endif
