/* mf_unet.h - the seed's "UNetSmall", configurable: Fourier time embedding + MLP, residual blocks
 * (GroupNorm, SiLU, 3x3 conv, time embedding added per block, 1x1 skip when channels change), a down
 * path with stride-2 convs, two bottleneck blocks, an up path (nearest 2x + 3x3 conv) with skip
 * concatenations, optional class conditioning. Built into a static graph (mf_graph.h). */
#ifndef MF_UNET_H
#define MF_UNET_H

#include "mf_graph.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MF_UNET_MAX_LEVELS 6

typedef struct mf_unet_cfg {
    int in_ch, height, width;     /* image shape (1 or 3 channels) */
    int ch;                       /* base channels */
    int n_levels;                 /* length of mult */
    int mult[MF_UNET_MAX_LEVELS]; /* channel multiplier per level */
    int res_blocks;               /* residual blocks per level */
    int groups;                   /* GroupNorm groups (reduced to divide the channels) */
    int temb_dim;                 /* time-embedding width */
    int fourier_half;             /* number of Fourier frequencies (features = 2*half) */
    float time_scale;             /* t is multiplied by this before the frequencies */
    int num_classes;              /* 0: unconditional */
    int time_inputs;              /* 1: v(z, t); 2: u(z, r, t) with embeddings of t and t - r summed */
    int interval_r;               /* time_inputs 2: the second embedding is of r instead of t - r */
    int null_class;               /* num_classes > 0: one more, learned label (id num_classes) for
                                   * "no class" (class dropout, guidance) */
} mf_unet_cfg;

typedef struct mf_unet {
    int x, t, r, labels; /* input nodes (r, labels: -1 when absent) */
    int out;             /* output node (velocity), same shape as x */
} mf_unet;

/* Check a configuration (image sizes divisible by 2^(levels-1), etc.); -1 with mf_fail. */
int mf_unet_check(const mf_unet_cfg *c);
/* Build the network into g (not finalized). */
void mf_unet_build(mf_graph *g, const mf_unet_cfg *c, mf_unet *ids);

#ifdef __cplusplus
}
#endif
#endif
