/* mf_unet.c - builds the UNet into a static graph. Parameter names follow the PyTorch mirror in
 * tests/ref/unet_ref.py exactly, so weights and gradients can be compared by name. */
#include "mf_unet.h"

#include "mf_error.h"

static int gcd(int a, int b) {
    while (b) {
        int t = a % b;
        a = b;
        b = t;
    }
    return a;
}

int mf_unet_check(const mf_unet_cfg *c) {
    if (c->in_ch < 1 || c->in_ch > 4) return mf_fail("model: image channels must be 1..4, got %d", c->in_ch);
    if (c->n_levels < 1 || c->n_levels > MF_UNET_MAX_LEVELS)
        return mf_fail("model.channel_mult: 1..%d levels, got %d", MF_UNET_MAX_LEVELS, c->n_levels);
    int div = 1 << (c->n_levels - 1);
    if (c->height % div || c->width % div)
        return mf_fail("model.channel_mult: %d levels need image sides divisible by %d, got %dx%d (use "
                       "data.pad_to or fewer levels)",
                       c->n_levels, div, c->height, c->width);
    if (c->time_inputs != 1 && c->time_inputs != 2) return mf_fail("model: time_inputs must be 1 or 2");
    return 0;
}

static int norm_groups(const mf_unet_cfg *c, int ch) { return gcd(ch, c->groups > 0 ? c->groups : 1); }

/* ResBlock: h = conv1(silu(norm1(x))) + temb(silu(e)); h = conv2(silu(norm2(h))); out = h + skip(x) */
static int resblock(mf_graph *g, const mf_unet_cfg *c, int x, int temb_act, int cout) {
    int cin = g->nodes[x].c;
    int h = mf_g_groupnorm_silu(g, x, norm_groups(c, cin), "norm1");
    h = mf_g_conv(g, h, cout, 3, 1, "conv1");
    int e = mf_g_linear(g, temb_act, cout, "temb");
    h = mf_g_add_channel(g, h, e);
    h = mf_g_groupnorm_silu(g, h, norm_groups(c, cout), "norm2");
    h = mf_g_conv(g, h, cout, 3, 1, "conv2");
    int s = cin == cout ? x : mf_g_conv(g, x, cout, 1, 1, "skip");
    return mf_g_add(g, h, s);
}

static int time_mlp(mf_graph *g, const mf_unet_cfg *c, int t, const char *name) {
    mf_graph_push(g, "%s", name);
    int f = mf_g_fourier(g, t, c->fourier_half, c->time_scale, 10000.0f);
    int h = mf_g_linear(g, f, c->temb_dim, "0");
    h = mf_g_silu(g, h);
    h = mf_g_linear(g, h, c->temb_dim, "2");
    mf_graph_pop(g);
    return h;
}

void mf_unet_build(mf_graph *g, const mf_unet_cfg *c, mf_unet *ids) {
    ids->x = mf_g_input(g, c->in_ch, c->height, c->width);
    ids->t = mf_g_input(g, 1, 1, 1);
    ids->r = -1;
    ids->labels = -1;
    int temb = time_mlp(g, c, ids->t, "time_mlp");
    if (c->time_inputs == 2) {
        /* u(z, r, t): a second embedding, of the interval length t - r (or of r itself) */
        ids->r = mf_g_input(g, 1, 1, 1);
        int d = c->interval_r ? ids->r : mf_g_sub(g, ids->t, ids->r);
        temb = mf_g_add(g, temb, time_mlp(g, c, d, "interval_mlp"));
    }
    if (c->num_classes > 0) {
        ids->labels = mf_g_labels(g);
        temb = mf_g_add(g, temb, mf_g_embed(g, ids->labels, c->num_classes + (c->null_class ? 1 : 0), c->temb_dim, "label_emb"));
    }
    int ta = mf_g_silu(g, temb);

    int h = mf_g_conv(g, ids->x, c->ch, 3, 1, "conv_in");
    int skips[MF_UNET_MAX_LEVELS];
    for (int l = 0; l < c->n_levels; l++) {
        int cl = c->ch * c->mult[l];
        for (int b = 0; b < c->res_blocks; b++) {
            mf_graph_push(g, "down.%d.res.%d", l, b);
            h = resblock(g, c, h, ta, cl);
            mf_graph_pop(g);
            mf_graph_pop(g);
            mf_graph_pop(g);
            mf_graph_pop(g);
        }
        skips[l] = h;
        if (l < c->n_levels - 1) {
            mf_graph_push(g, "down.%d", l);
            h = mf_g_conv(g, h, cl, 3, 2, "downsample");
            mf_graph_pop(g);
            mf_graph_pop(g);
        }
    }
    int cm = c->ch * c->mult[c->n_levels - 1];
    for (int b = 0; b < 2; b++) {
        mf_graph_push(g, "mid.%d", b);
        h = resblock(g, c, h, ta, cm);
        mf_graph_pop(g);
        mf_graph_pop(g);
    }
    for (int i = 0; i < c->n_levels; i++) {
        int l = c->n_levels - 1 - i, cl = c->ch * c->mult[l];
        h = mf_g_concat(g, h, skips[l]);
        for (int b = 0; b < c->res_blocks; b++) {
            mf_graph_push(g, "up.%d.res.%d", i, b);
            h = resblock(g, c, h, ta, cl);
            mf_graph_pop(g);
            mf_graph_pop(g);
            mf_graph_pop(g);
            mf_graph_pop(g);
        }
        if (l > 0) {
            mf_graph_push(g, "up.%d", i);
            h = mf_g_upsample(g, h);
            h = mf_g_conv(g, h, cl, 3, 1, "upsample");
            mf_graph_pop(g);
            mf_graph_pop(g);
        }
    }
    int c0 = c->ch * c->mult[0];
    h = mf_g_groupnorm_silu(g, h, norm_groups(c, c0), "norm_out");
    ids->out = mf_g_conv(g, h, c->in_ch, 3, 1, "conv_out");
}
