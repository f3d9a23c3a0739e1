#!/usr/bin/python3
"""torch_bench.py - PyTorch (CPU, float32 or bfloat16) throughput of the mfpipe UNet, for comparison with the C engine.

The network is tests/ref/unet_ref.py (the exact mirror of engine/mf_unet.c). Per case:
  * training: flow-matching loss z = (1 - t) x + t eps, loss = mse(net(z, t), eps - x), backward and an
    AdamW step, batch --batch (128), MNIST-shaped random input (1x28x28 in [-1, 1]); --warmup (3) steps,
    then --steps (10) timed steps;
  * --objective meanflow: the MeanFlow step of stages/train/objectives/meanflow.c instead (a u(z, r, t)
    model, time_inputs 2): two logit-normal(--time-mu, --time-sigma) draws per row, t the larger;
    round(--flow-ratio x batch) rows get r = t and are plain flow matching on u(z, t, t); the other rows
    (r < t) go through functorch.jvp of u along (dz, dr, dt) = (v, 0, 1), whose primal output is u and
    whose tangent is du/dt; target sg(v - (t - r) du/dt); per-row error e summed over pixels, adaptive
    weight w = sg(1 / (e + c)^p) (--weight-p 1, --weight-c 1e-3), loss sum(w e) / batch; backward and
    AdamW as above. train_gflops stays 3 x forward flops x images/s (fm-equivalent, nominal: the JVP rows
    cost more than 3 forwards);
  * sampling: forward only under torch.inference_mode(), batch --sample-batch (256): images per second
    per network evaluation;
  * forward GFLOPs per image: conv and linear multiply-adds x 2 (counted with forward hooks and checked
    against the analytic count unet_ref.forward_flops, which is what the C graph counts);
    train_gflops = 3 x forward flops per image x train images/s;
  * peak resident memory: ru_maxrss of the process; every case runs in a fresh subprocess.
  * --dtype bf16: the mirror module cast to bf16, same threads - pure bf16 training as PyTorch users do it
    with module.to(torch.bfloat16): every parameter and floating buffer is bf16 (the Fourier frequencies
    too), so are the inputs x, eps, z, the times t (and r) and the targets; forward, backward (bf16
    gradients) and AdamW on the bf16 parameters (its moments bf16 too: no float32 master weights, unlike
    mfpipe's `precision: bf16`, which keeps weights, gradients, moments and activations in float32 and runs
    only the convolutions in bf16). The loss: the error u - target is formed in bf16 and cast to float32
    for the square and the reduction (the mean for fm, the per-row sum for meanflow), so the loss is a
    float32 scalar and its gradient enters the network as bf16 through the cast (torch 1.13 has no bf16
    mse_loss on the CPU, "mse_cpu" not implemented for 'BFloat16'). Sampling runs the bf16 module on
    bf16 inputs. MeanFlow's functorch.jvp runs in bf16 too (primal and tangent; works on torch 1.13).
    This measures speed, not training quality: bf16 AdamW updates below half an ulp of a weight are lost.
Output: one JSON line per case on stdout (keys impl, ch, mult, res_blocks, params, gflops_per_image,
train_img_s, train_gflops, sample_img_s, peak_mib, threads, objective, dtype, plus a few extra descriptive
keys; meanflow adds flow_ratio, jvp_rows).

Examples (Debian's python3-torch lives under /usr/bin/python3):
  /usr/bin/python3 bench/torch_bench.py                       # ch 32 and ch 64, mult 1,2,2, 2 blocks
  /usr/bin/python3 bench/torch_bench.py --ch 32 --mult 1,2,2 --res-blocks 2 --temb 128 --half 64 --steps 5
  /usr/bin/python3 bench/torch_bench.py --ch 16 --res-blocks 1 --temb 64 --half 16 --time-scale 1 --objective meanflow
  /usr/bin/python3 bench/torch_bench.py --ch 32 --dtype bf16 --steps 5      # the module cast to bf16
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "ref"))


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ch", type=int, action="append",
                    help="base channels (repeat for several cases; default: 32 and 64)")
    ap.add_argument("--mult", default="1,2,2", help="channel multipliers, comma-separated")
    ap.add_argument("--res-blocks", type=int, default=2)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--temb", type=int, default=128)
    ap.add_argument("--half", type=int, default=64, help="Fourier frequencies (features = 2*half)")
    ap.add_argument("--time-scale", type=float, default=1000.0)
    ap.add_argument("--classes", type=int, default=0, help="num_classes (0: unconditional)")
    ap.add_argument("--time-inputs", type=int, default=None, choices=(1, 2),
                    help="1: v(z, t), 2: u(z, r, t) (default: 1 for fm, 2 for meanflow)")
    ap.add_argument("--objective", default="fm", choices=("fm", "meanflow"),
                    help="training step: flow matching (default) or MeanFlow with functorch.jvp")
    ap.add_argument("--flow-ratio", type=float, default=0.75, help="meanflow: fraction of rows with r = t")
    ap.add_argument("--time-mu", type=float, default=-0.4, help="meanflow: logit-normal mean of the time draws")
    ap.add_argument("--time-sigma", type=float, default=1.0, help="meanflow: logit-normal standard deviation")
    ap.add_argument("--weight-p", type=float, default=1.0, help="meanflow: adaptive weight power p")
    ap.add_argument("--weight-c", type=float, default=1e-3, help="meanflow: adaptive weight constant c")
    ap.add_argument("--image", default="1,28,28", help="C,H,W")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--sample-batch", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10, help="timed training steps")
    ap.add_argument("--sample-steps", type=int, default=0, help="timed sampling evaluations (default: = --steps)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: all cores)")
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"),
                    help="fp32 (default) or bf16: the module, inputs, training and sampling in bfloat16")
    ap.add_argument("--single", action="store_true", help=argparse.SUPPRESS)  # internal: run one case here
    a = ap.parse_args()
    if a.time_inputs is None:
        a.time_inputs = 2 if a.objective == "meanflow" else 1
    if a.objective == "meanflow" and a.time_inputs != 2:
        ap.error("--objective meanflow needs a u(z, r, t) model (--time-inputs 2)")
    return a


def cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def count_flops_hooks(model, args_fn):
    """conv/linear multiply-adds x 2 of one forward pass, per image, with forward hooks."""
    import torch
    import torch.nn as nn

    total = [0.0]

    def conv_hook(m, inp, out):
        total[0] += 2.0 * out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def lin_hook(m, inp, out):
        total[0] += 2.0 * out.numel() * m.in_features

    hs = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hs.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hs.append(m.register_forward_hook(lin_hook))
    with torch.no_grad():
        z, t, r, lab = args_fn(1)
        model(z, t, r, lab)
    for h in hs:
        h.remove()
    return total[0]


def run_case(a):
    import torch
    import torch.nn.functional as F
    if a.objective == "meanflow":
        from functorch import jvp  # torch 1.13 (torch.func.jvp from 2.0)
    from unet_ref import UNetCfg, UNetRef, forward_flops

    threads = a.threads if a.threads > 0 else cores()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    C, H, W = (int(v) for v in a.image.split(","))
    mult = [int(v) for v in a.mult.split(",")]
    cfg = UNetCfg(in_ch=C, height=H, width=W, ch=a.ch[0], mult=mult, res_blocks=a.res_blocks, groups=a.groups,
                  temb_dim=a.temb, fourier_half=a.half, time_scale=a.time_scale, num_classes=a.classes,
                  time_inputs=a.time_inputs)
    dt = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    model = UNetRef(cfg).to(dt)  # bf16: parameters and floating buffers (the Fourier frequencies) in bf16
    params = sum(p.numel() for p in model.parameters())

    def inputs(b):
        x = torch.rand(b, C, H, W, dtype=dt) * 2 - 1
        t = torch.rand(b, dtype=dt)
        r = t * torch.rand(b, dtype=dt) if cfg.time_inputs == 2 else None
        lab = torch.randint(0, cfg.num_classes, (b,)) if cfg.num_classes > 0 else None
        return x, t, r, lab

    fl_hooks = count_flops_hooks(model, inputs)
    fl = forward_flops(cfg)
    assert abs(fl_hooks - fl) <= 1e-9 * fl, (fl_hooks, fl)

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    x, _, _, lab = inputs(a.batch)

    n_eq = min(a.batch, int(round(a.flow_ratio * a.batch)))  # as obj_family_setup: lround(ratio * B)
    n_iv = a.batch - n_eq

    def logit_normal(n):
        return torch.sigmoid(a.time_mu + a.time_sigma * torch.randn(n, dtype=dt))

    def weighted_err(u, tgt):
        e = (u - tgt).float().pow(2).flatten(1).sum(1)             # reduction sum (per row, over pixels), float32
        w = (e.detach() + a.weight_c).pow(-a.weight_p)            # adaptive weight, stop-gradient
        return (w * e).sum()

    def meanflow_step():
        t0_, t1_ = logit_normal(a.batch), logit_normal(a.batch)
        t, r = torch.maximum(t0_, t1_), torch.minimum(t0_, t1_)
        eps = torch.randn_like(x)
        tb = t.view(-1, 1, 1, 1)
        z = (1 - tb) * x + tb * eps
        v = eps - x
        loss = 0.0
        if n_eq > 0:  # rows with r = t: flow matching on u(z, t, t)
            te = t[:n_eq]
            loss = loss + weighted_err(model(z[:n_eq], te, te, lab[:n_eq] if lab is not None else None), v[:n_eq])
        if n_iv > 0:  # rows with r < t: u and du/dt along (v, 0, 1) in one forward-mode pass
            zi, ti, ri, vi = z[n_eq:], t[n_eq:], r[n_eq:], v[n_eq:]
            li = lab[n_eq:] if lab is not None else None
            try:
                u, dudt = jvp(lambda zz, tt, rr: model(zz, tt, rr, li), (zi, ti, ri),
                              (vi, torch.ones_like(ti), torch.zeros_like(ri)))
            except (RuntimeError, NotImplementedError) as ex:
                if a.dtype != "bf16":
                    raise
                sys.exit("torch_bench: --objective meanflow --dtype bf16: functorch.jvp failed in bfloat16 on "
                         "torch %s (%s); use --dtype fp32" % (torch.__version__, str(ex).splitlines()[0]))
            u_tgt = (vi - (ti - ri).view(-1, 1, 1, 1) * dudt).detach()
            loss = loss + weighted_err(u, u_tgt)
        loss = loss / a.batch
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    def fm_step():
        t = torch.rand(a.batch, dtype=dt)
        r = t * torch.rand(a.batch, dtype=dt) if cfg.time_inputs == 2 else None
        eps = torch.randn_like(x)
        tb = t.view(-1, 1, 1, 1)
        z = (1 - tb) * x + tb * eps
        if dt == torch.float32:
            loss = F.mse_loss(model(z, t, r, lab), eps - x)
        else:  # bf16 error, float32 square and mean (no bf16 mse_loss on the CPU in torch 1.13)
            loss = (model(z, t, r, lab) - (eps - x)).float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    train_step = meanflow_step if a.objective == "meanflow" else fm_step
    model.train()
    for _ in range(a.warmup):
        train_step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        train_step()
    train_s = time.perf_counter() - t0
    train_img_s = a.steps * a.batch / train_s

    model.eval()
    zs, ts, rs, labs = inputs(a.sample_batch)
    n_eval = a.sample_steps or a.steps
    with torch.inference_mode():
        for _ in range(2):
            model(zs, ts, rs, labs)
        t0 = time.perf_counter()
        for _ in range(n_eval):
            model(zs, ts, rs, labs)
        sample_s = time.perf_counter() - t0
    sample_img_s = n_eval * a.sample_batch / sample_s

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    return dict(impl="pytorch", ch=cfg.ch, mult=mult, res_blocks=cfg.res_blocks, params=params,
                gflops_per_image=round(fl / 1e9, 6), train_img_s=round(train_img_s, 3),
                train_gflops=round(3 * fl * train_img_s / 1e9, 3), sample_img_s=round(sample_img_s, 3),
                peak_mib=round(peak_mib, 1), threads=threads, groups=cfg.groups, temb=cfg.temb_dim,
                half=cfg.fourier_half, num_classes=cfg.num_classes, time_inputs=cfg.time_inputs,
                image=[C, H, W], batch=a.batch, sample_batch=a.sample_batch, steps=a.steps,
                objective=a.objective, dtype=a.dtype, torch=torch.__version__,
                **(dict(flow_ratio=a.flow_ratio, jvp_rows=n_iv) if a.objective == "meanflow" else {}))


def main():
    a = parse()
    if a.single:
        print(json.dumps(run_case(a)), flush=True)
        return 0
    chs = a.ch or [32, 64]
    rc = 0
    for ch in chs:
        argv = [sys.argv[0]] + [v for v in sys.argv[1:]]
        # drop every --ch (both "--ch N" and "--ch=N") and pass this case's width
        clean, skip = [], False
        for v in argv[1:]:
            if skip:
                skip = False
                continue
            if v == "--ch":
                skip = True
                continue
            if v.startswith("--ch="):
                continue
            clean.append(v)
        cmd = [sys.executable, os.path.abspath(__file__), "--single", "--ch", str(ch)] + clean
        p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if p.returncode != 0:
            print("torch_bench: case ch=%d failed (exit %d)" % (ch, p.returncode), file=sys.stderr)
            rc = 1
            continue
        sys.stdout.write(p.stdout)
        sys.stdout.flush()
    return rc


if __name__ == "__main__":
    sys.exit(main())
