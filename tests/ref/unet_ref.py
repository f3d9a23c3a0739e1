"""unet_ref.py - PyTorch mirror of the C UNet in engine/mf_unet.c (graph ops in engine/mf_graph.c).

The module's state_dict keys are the C parameter names, in the order the C builder registers them
(the order of the mf_g_conv / mf_g_linear / mf_g_groupnorm / mf_g_embed calls), with the same shapes:
conv weight (co, ci, k, k) + bias (co); linear weight (co, ci) + bias (co); GroupNorm weight, bias (c);
embedding weight (num_classes [+ 1 with null_class], temb_dim).  c_param_order(cfg) replays the C builder's name stack
(mf_graph_push / mf_graph_pop, where pop removes the last dot-separated component) and
check_param_order(model, cfg) asserts that it equals the module's state_dict.

Op semantics mirrored from the C engine:
  * conv: cross-correlation as torch's conv2d, padding k // 2, stride 1 or 2 (downsample), with bias;
  * GroupNorm: eps 1e-5, biased variance, groups = gcd(channels, cfg.groups);
  * linear: y = x W^T + b;
  * Fourier features of a time input t (shape (B,)): [sin(t f_0..f_{half-1}), cos(t f_0..f_{half-1})]
    (all sines, then all cosines), f_k = time_scale * 10000^(-k/half), computed with the C code's
    float32 roundings: f_k = fl32(fl32(time_scale) * fl32(exp(-log(10000) * k / half)));
  * time embedding: temb = time_mlp(fourier(t)) [+ interval_mlp(fourier(s)) if time_inputs == 2, with
    s = t - r (cfg.interval "t_minus_r", the default) or s = r (cfg.interval "r"; C: interval_r)]
    [+ label_emb(labels) if num_classes > 0]; every ResBlock gets silu(temb) through its own linear;
  * label embedding: num_classes rows, or num_classes + 1 with cfg.null_class (C: null_class), where
    label id num_classes is the learned "null" (unconditional) class; null_class has no effect when
    num_classes == 0;
  * ResBlock: h = conv1(silu(norm1(x))) + temb(silu(temb))[:, :, None, None];
    h = conv2(silu(norm2(h))); out = h + (skip(x) if cin != cout else x)   (skip: 1x1 conv);
  * down path: per level l, res_blocks ResBlocks to ch*mult[l]; the level's output is saved as the
    skip (ONE skip per level, taken after the level's last block, before downsampling); then, except at
    the last level, a 3x3 stride-2 conv (`down.<l>.downsample`, channels unchanged);
  * mid: two ResBlocks at ch*mult[-1] (`mid.0`, `mid.1`);
  * up path: i = 0..n_levels-1 handles level l = n_levels-1-i: h = cat([h, skip_l], dim=1) (h first),
    ONCE before the level's first block; res_blocks ResBlocks to ch*mult[l]; then, except at l == 0,
    nearest 2x upsampling followed by a 3x3 conv (`up.<i>.upsample`, channels unchanged);
  * out = conv_out(silu(norm_out(h))), back to in_ch channels.
Note the up path is indexed by i (processing order), not by level: `up.0` is the deepest level.
"""
import math
from dataclasses import dataclass, field
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_LEVELS = 6  # MF_UNET_MAX_LEVELS


@dataclass
class UNetCfg:
    in_ch: int = 1
    height: int = 28
    width: int = 28
    ch: int = 32
    mult: List[int] = field(default_factory=lambda: [1, 2, 2])
    res_blocks: int = 2
    groups: int = 8
    temb_dim: int = 128
    fourier_half: int = 64
    time_scale: float = 1000.0
    num_classes: int = 0
    time_inputs: int = 1
    null_class: bool = False      # num_classes > 0: one more label row, id num_classes = the null class
    interval: str = "t_minus_r"   # time_inputs 2: interval_mlp embeds t - r ("t_minus_r") or r ("r")

    @property
    def label_rows(self) -> int:
        if self.num_classes <= 0:
            return 0
        return self.num_classes + (1 if self.null_class else 0)

    @property
    def n_levels(self) -> int:
        return len(self.mult)

    def check(self):
        # mirrors mf_unet_check
        assert 1 <= self.in_ch <= 4, "in_ch must be 1..4"
        assert 1 <= self.n_levels <= MAX_LEVELS, "1..6 levels"
        div = 1 << (self.n_levels - 1)
        assert self.height % div == 0 and self.width % div == 0, "sides must be divisible by 2^(levels-1)"
        assert self.time_inputs in (1, 2), "time_inputs must be 1 or 2"
        assert self.interval in ("t_minus_r", "r"), "interval must be 't_minus_r' or 'r'"
        assert self.interval == "t_minus_r" or self.time_inputs == 2, "interval 'r' needs time_inputs 2"


def norm_groups(cfg: UNetCfg, c: int) -> int:
    return math.gcd(c, cfg.groups if cfg.groups > 0 else 1)


def fourier_freqs(half: int, scale: float, max_period: float = 10000.0) -> torch.Tensor:
    """The C frequencies, float32-rounded exactly as mf_g_fourier computes them, held in float64."""
    import struct

    def f32(v):
        return struct.unpack("<f", struct.pack("<f", v))[0]

    s = f32(scale)
    return torch.tensor([f32(s * f32(math.exp(-math.log(max_period) * k / half))) for k in range(half)],
                        dtype=torch.float64)


def fourier(t: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    a = t.reshape(-1, 1) * freqs.to(t.dtype).reshape(1, -1)
    return torch.cat([torch.sin(a), torch.cos(a)], dim=1)


class ResBlock(nn.Module):
    # attribute order = C registration order: norm1, conv1, temb, norm2, conv2, skip
    def __init__(self, cfg: UNetCfg, cin: int, cout: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_groups(cfg, cin), cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=1, padding=1)
        self.temb = nn.Linear(cfg.temb_dim, cout)
        self.norm2 = nn.GroupNorm(norm_groups(cfg, cout), cout, eps=1e-5)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1, stride=1, padding=0) if cin != cout else None

    def forward(self, x, ta):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(ta)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.skip(x) if self.skip is not None else x)


class DownLevel(nn.Module):
    def __init__(self, cfg, cin, cout, last):
        super().__init__()
        self.res = nn.ModuleList()
        for b in range(cfg.res_blocks):
            self.res.append(ResBlock(cfg, cin if b == 0 else cout, cout))
        self.downsample = None if last else nn.Conv2d(cout, cout, 3, stride=2, padding=1)


class UpLevel(nn.Module):
    def __init__(self, cfg, cin, cout, first_level):
        super().__init__()
        self.res = nn.ModuleList()
        for b in range(cfg.res_blocks):
            self.res.append(ResBlock(cfg, cin if b == 0 else cout, cout))
        # conv after nearest 2x upsampling; absent at level 0
        self.upsample = None if first_level else nn.Conv2d(cout, cout, 3, stride=1, padding=1)


class UNetRef(nn.Module):
    def __init__(self, cfg: UNetCfg):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        half, td = cfg.fourier_half, cfg.temb_dim
        self.register_buffer("freqs", fourier_freqs(half, cfg.time_scale), persistent=False)
        # registration order: time_mlp, interval_mlp, label_emb, conv_in, down, mid, up, norm_out, conv_out
        self.time_mlp = nn.Sequential(nn.Linear(2 * half, td), nn.SiLU(), nn.Linear(td, td))
        self.interval_mlp = (nn.Sequential(nn.Linear(2 * half, td), nn.SiLU(), nn.Linear(td, td))
                             if cfg.time_inputs == 2 else None)
        self.label_emb = nn.Embedding(cfg.label_rows, td) if cfg.num_classes > 0 else None
        self.conv_in = nn.Conv2d(cfg.in_ch, cfg.ch, 3, stride=1, padding=1)
        n = cfg.n_levels
        chs = [cfg.ch * m for m in cfg.mult]
        self.down = nn.ModuleList()
        cur = cfg.ch
        for l in range(n):
            self.down.append(DownLevel(cfg, cur, chs[l], last=(l == n - 1)))
            cur = chs[l]
        self.mid = nn.ModuleList([ResBlock(cfg, chs[-1], chs[-1]) for _ in range(2)])
        cur = chs[-1]
        self.up = nn.ModuleList()
        for i in range(n):
            l = n - 1 - i
            self.up.append(UpLevel(cfg, cur + chs[l], chs[l], first_level=(l == 0)))
            cur = chs[l]
        self.norm_out = nn.GroupNorm(norm_groups(cfg, chs[0]), chs[0], eps=1e-5)
        self.conv_out = nn.Conv2d(chs[0], cfg.in_ch, 3, stride=1, padding=1)

    def time_embedding(self, t, r=None, labels=None):
        temb = self.time_mlp(fourier(t, self.freqs))
        if self.interval_mlp is not None:
            assert r is not None, "time_inputs == 2 needs r"
            s = r if self.cfg.interval == "r" else t - r
            temb = temb + self.interval_mlp(fourier(s, self.freqs))
        if self.label_emb is not None:
            assert labels is not None, "num_classes > 0 needs labels"
            temb = temb + self.label_emb(labels.long())
        return temb

    def forward(self, z, t, r=None, labels=None):
        """z (B, in_ch, H, W); t, r (B,) (or (B,1,1,1)); labels (B,) integer (or float) class ids
        (0..num_classes-1, or num_classes = the null class when cfg.null_class)."""
        ta = F.silu(self.time_embedding(t.reshape(-1), None if r is None else r.reshape(-1), labels))
        h = self.conv_in(z)
        skips = []
        for lev in self.down:
            for blk in lev.res:
                h = blk(h, ta)
            skips.append(h)
            if lev.downsample is not None:
                h = lev.downsample(h)
        for blk in self.mid:
            h = blk(h, ta)
        n = len(self.up)
        for i, lev in enumerate(self.up):
            h = torch.cat([h, skips[n - 1 - i]], dim=1)
            for blk in lev.res:
                h = blk(h, ta)
            if lev.upsample is not None:
                h = lev.upsample(F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


def c_param_order(cfg: UNetCfg):
    """Replays mf_unet_build / mf_graph.c name scoping literally and returns [(name, shape)] in C
    registration order. push appends "." + part (the part may itself contain dots); pop strips the
    last dot-separated component, so mf_unet.c pops "down.%d.res.%d" four times."""
    prefix = [""]
    params = []

    def push(part):
        prefix[0] = prefix[0] + ("." if prefix[0] else "") + part

    def pop():
        p = prefix[0]
        i = p.rfind(".")
        prefix[0] = p[:i] if i >= 0 else ""

    def add(leaf, shape):
        params.append(((prefix[0] + "." if prefix[0] else "") + leaf, tuple(shape)))

    def conv(ci, co, k, name):
        push(name)
        add("weight", (co, ci, k, k))
        add("bias", (co,))
        pop()

    def linear(ci, co, name):
        push(name)
        add("weight", (co, ci))
        add("bias", (co,))
        pop()

    def groupnorm(c, name):
        push(name)
        add("weight", (c,))
        add("bias", (c,))
        pop()

    def embed(num, dim, name):
        push(name)
        add("weight", (num, dim))
        pop()

    def resblock(cin, cout):
        groupnorm(cin, "norm1")
        conv(cin, cout, 3, "conv1")
        linear(cfg.temb_dim, cout, "temb")
        groupnorm(cout, "norm2")
        conv(cout, cout, 3, "conv2")
        if cin != cout:
            conv(cin, cout, 1, "skip")
        return cout

    def time_mlp(name):
        push(name)
        linear(2 * cfg.fourier_half, cfg.temb_dim, "0")
        linear(cfg.temb_dim, cfg.temb_dim, "2")
        pop()

    time_mlp("time_mlp")
    if cfg.time_inputs == 2:
        time_mlp("interval_mlp")
    if cfg.num_classes > 0:
        embed(cfg.label_rows, cfg.temb_dim, "label_emb")
    conv(cfg.in_ch, cfg.ch, 3, "conv_in")
    h = cfg.ch
    n = cfg.n_levels
    skips = [0] * n
    for l in range(n):
        cl = cfg.ch * cfg.mult[l]
        for b in range(cfg.res_blocks):
            push("down.%d.res.%d" % (l, b))
            h = resblock(h, cl)
            pop(); pop(); pop(); pop()
        skips[l] = h
        if l < n - 1:
            push("down.%d" % l)
            conv(h, cl, 3, "downsample")
            h = cl
            pop(); pop()
    cm = cfg.ch * cfg.mult[n - 1]
    for b in range(2):
        push("mid.%d" % b)
        h = resblock(h, cm)
        pop(); pop()
    for i in range(n):
        l = n - 1 - i
        cl = cfg.ch * cfg.mult[l]
        h = h + skips[l]
        for b in range(cfg.res_blocks):
            push("up.%d.res.%d" % (i, b))
            h = resblock(h, cl)
            pop(); pop(); pop(); pop()
        if l > 0:
            push("up.%d" % i)
            conv(h, cl, 3, "upsample")
            h = cl
            pop(); pop()
    c0 = cfg.ch * cfg.mult[0]
    groupnorm(c0, "norm_out")
    conv(c0, cfg.in_ch, 3, "conv_out")
    assert prefix[0] == "", "unbalanced push/pop: %r" % prefix[0]
    return params


def check_param_order(model: UNetRef, cfg: Optional[UNetCfg] = None):
    """Asserts that model.state_dict() has exactly the C names, shapes and order."""
    cfg = cfg or model.cfg
    want = c_param_order(cfg)
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    if got != want:
        for i, (a, b) in enumerate(zip(got, want)):
            if a != b:
                raise AssertionError("parameter %d: module has %s, C builds %s" % (i, a, b))
        raise AssertionError("parameter count: module %d, C %d" % (len(got), len(want)))
    # named_parameters must agree with state_dict (no buffers in the state_dict)
    assert [k for k, _ in model.named_parameters()] == [k for k, _ in want]
    return want


def forward_flops(cfg: UNetCfg) -> float:
    """Forward multiply-adds x 2 of conv and linear layers per image, exactly as mf_graph.c counts
    them in g->flops_fwd (divided by the batch)."""
    fl = 0.0
    H, W = cfg.height, cfg.width

    def conv(ci, co, k, stride, h, w):
        nonlocal fl
        pad = k // 2
        ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        fl += 2.0 * co * ci * k * k * ho * wo
        return ho, wo

    def lin(ci, co):
        nonlocal fl
        fl += 2.0 * ci * co

    def rb(cin, cout, h, w):
        conv(cin, cout, 3, 1, h, w)
        lin(cfg.temb_dim, cout)
        conv(cout, cout, 3, 1, h, w)
        if cin != cout:
            conv(cin, cout, 1, 1, h, w)

    lin(2 * cfg.fourier_half, cfg.temb_dim)
    lin(cfg.temb_dim, cfg.temb_dim)
    if cfg.time_inputs == 2:
        lin(2 * cfg.fourier_half, cfg.temb_dim)
        lin(cfg.temb_dim, cfg.temb_dim)
    conv(cfg.in_ch, cfg.ch, 3, 1, H, W)
    c = cfg.ch
    n = cfg.n_levels
    skips = []
    h, w = H, W
    for l in range(n):
        cl = cfg.ch * cfg.mult[l]
        for b in range(cfg.res_blocks):
            rb(c, cl, h, w)
            c = cl
        skips.append(c)
        if l < n - 1:
            h, w = conv(c, cl, 3, 2, h, w)
    for b in range(2):
        rb(c, c, h, w)
    for i in range(n):
        l = n - 1 - i
        cl = cfg.ch * cfg.mult[l]
        c += skips[l]
        for b in range(cfg.res_blocks):
            rb(c, cl, h, w)
            c = cl
        if l > 0:
            h, w = 2 * h, 2 * w
            conv(c, cl, 3, 1, h, w)
    conv(c, cfg.in_ch, 3, 1, h, w)
    return fl


if __name__ == "__main__":
    for cfg in (UNetCfg(), UNetCfg(ch=8, mult=[1, 2], res_blocks=1, num_classes=10, time_inputs=2),
                UNetCfg(ch=8, mult=[1, 2], res_blocks=1, num_classes=10, time_inputs=2, null_class=True,
                        interval="r")):
        m = UNetRef(cfg)
        order = check_param_order(m, cfg)
        print("ok: %d parameter tensors, %d parameters, %.4f GFLOP/image forward"
              % (len(order), sum(p.numel() for p in m.parameters()), forward_flops(cfg) / 1e9))
