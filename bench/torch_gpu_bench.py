#!/usr/bin/env python3
"""torch_gpu_bench.py - PyTorch training throughput of the mfpipe UNet on a CUDA GPU, for bench/gpu_check.sh.

The network is tests/ref/unet_ref.py (the exact mirror of engine/mf_unet.c), as in bench/torch_bench.py (the
CPU benchmark). For every --precision (fp32, tf32, bf16) and --mode (eager, compile) one case:
  * the training step of --objective: fm (z = (1 - t) x + t eps, mse(net(z, t), eps - x)) or meanflow (the
    MeanFlow step of bench/torch_bench.py: logit-normal times, round(--flow-ratio x batch) rows with r = t,
    the others through torch.func.jvp along (v, 1, 0), adaptive weight), backward and AdamW (fused=True
    where this PyTorch has it, else foreach: the fastest stock optimiser, so the baseline is not weakened);
    batch --batch (128) of MNIST-shaped random images (1x28x28 in [-1, 1]) and noise drawn on the GPU;
  * precision: fp32 = float32 with TF32 off (torch.backends.cuda.matmul.allow_tf32 and
    torch.backends.cudnn.allow_tf32 False); tf32 = the same with TF32 on; bf16 = torch.autocast(cuda,
    bfloat16) around forward and loss (convolutions and linears in bf16, GroupNorm/softmax-class ops in
    float32 as autocast decides), float32 master weights, TF32 off for what autocast leaves in float32;
  * mode: eager, or torch.compile(model) (default mode; compile time is excluded: the first --warmup steps
    compile and warm up); compile failing is reported as "n/a" with the exception's first line;
  * timing: --warmup steps, torch.cuda.synchronize(), --steps timed steps, torch.cuda.synchronize();
    images/s = steps x batch / time; peak memory = torch.cuda.max_memory_allocated() over warm-up and
    timed steps (reset after the model and optimiser exist), in MiB (allocator-visible tensors only; the
    CUDA context and cuDNN/cuBLAS workspaces outside the caching allocator are not in it).
Output: one JSON line per case on stdout: impl, objective, precision, mode, ok, train_img_s, peak_mib,
params, batch, steps, torch, device, error (when ok is false), plus the model keys.
Exit status: 0 when every case ran or failed inside PyTorch (reported per case); 3 when torch cannot be
imported; 4 when CUDA is not available (the message says why); 2 for usage errors.

Examples (on the GPU machine `python3` has PyTorch 2.x):
  python3 bench/torch_gpu_bench.py --ch 16 --res-blocks 1 --temb 64 --half 16          # the quick model
  python3 bench/torch_gpu_bench.py --ch 64 --res-blocks 2 --temb 128 --half 32 --precision bf16 --mode compile
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "ref"))

PRECISIONS = ("fp32", "tf32", "bf16")
MODES = ("eager", "compile")


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ch", type=int, default=16, help="base channels")
    ap.add_argument("--mult", default="1,2,2", help="channel multipliers, comma-separated")
    ap.add_argument("--res-blocks", type=int, default=1)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--temb", type=int, default=64)
    ap.add_argument("--half", type=int, default=16, help="Fourier frequencies (features = 2*half)")
    ap.add_argument("--time-scale", type=float, default=None,
                    help="time embedding scale (default: 1000 for fm, 1 for meanflow, as the experiments)")
    ap.add_argument("--objective", default="fm", choices=("fm", "meanflow"))
    ap.add_argument("--flow-ratio", type=float, default=0.75, help="meanflow: fraction of rows with r = t")
    ap.add_argument("--time-mu", type=float, default=-0.4)
    ap.add_argument("--time-sigma", type=float, default=1.0)
    ap.add_argument("--weight-p", type=float, default=1.0)
    ap.add_argument("--weight-c", type=float, default=1e-3)
    ap.add_argument("--image", default="1,28,28", help="C,H,W")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps first (compile: includes compiling)")
    ap.add_argument("--steps", type=int, default=50, help="timed training steps")
    ap.add_argument("--precision", action="append", choices=PRECISIONS,
                    help="repeat for several (default: all three)")
    ap.add_argument("--mode", action="append", choices=MODES, help="repeat for several (default: both)")
    ap.add_argument("--channels-last", action="store_true",
                    help="model and input in torch.channels_last (default: PyTorch's default NCHW)")
    ap.add_argument("--deadline", type=float, default=0,
                    help="UNIX time after which no further compile case starts (reported n/a); 0: none")
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    a.precision = a.precision or list(PRECISIONS)
    a.mode = a.mode or list(MODES)
    if a.time_scale is None:
        a.time_scale = 1.0 if a.objective == "meanflow" else 1000.0
    return a


def fail(code, msg):
    print("torch_gpu_bench: " + msg, file=sys.stderr)
    sys.exit(code)


def first_line(e):
    s = ("%s: %s" % (type(e).__name__, e)).strip().splitlines()
    return (s[0] if s else type(e).__name__)[:200]


def set_precision(torch, prec):
    tf32 = prec == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True  # PyTorch's best convolution algorithms for these fixed shapes


def run_case(torch, a, prec, mode):
    import torch.nn.functional as F
    from unet_ref import UNetCfg, UNetRef

    dev = torch.device(a.device)
    set_precision(torch, prec)
    torch.manual_seed(0)
    C, H, W = (int(v) for v in a.image.split(","))
    mult = [int(v) for v in a.mult.split(",")]
    cfg = UNetCfg(in_ch=C, height=H, width=W, ch=a.ch, mult=mult, res_blocks=a.res_blocks, groups=a.groups,
                  temb_dim=a.temb, fourier_half=a.half, time_scale=a.time_scale,
                  time_inputs=2 if a.objective == "meanflow" else 1)
    model = UNetRef(cfg).float().to(dev)
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    params = sum(p.numel() for p in model.parameters())
    try:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, fused=True)
        opt_kind = "fused"
    except (TypeError, RuntimeError):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, foreach=True)
        opt_kind = "foreach"
    net = model
    if mode == "compile":
        if not hasattr(torch, "compile"):
            raise RuntimeError("torch.compile needs PyTorch 2.x (this is %s)" % torch.__version__)
        torch._dynamo.reset()
        net = torch.compile(model)
    x = (torch.rand(a.batch, C, H, W, device=dev) * 2 - 1).contiguous(memory_format=fmt)
    amp = prec == "bf16"
    n_eq = min(a.batch, int(round(a.flow_ratio * a.batch)))
    n_iv = a.batch - n_eq

    def autocast():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp)

    def fm_step():
        t = torch.rand(a.batch, device=dev)
        eps = torch.randn_like(x)
        tb = t.view(-1, 1, 1, 1)
        z = (1 - tb) * x + tb * eps
        with autocast():
            loss = F.mse_loss(net(z, t).float(), eps - x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def logit_normal(n):
        return torch.sigmoid(a.time_mu + a.time_sigma * torch.randn(n, device=dev))

    def weighted_err(u, tgt):
        e = (u.float() - tgt).pow(2).flatten(1).sum(1)
        w = (e.detach() + a.weight_c).pow(-a.weight_p)
        return (w * e).sum()

    def meanflow_step():
        from torch.func import jvp
        t0_, t1_ = logit_normal(a.batch), logit_normal(a.batch)
        t, r = torch.maximum(t0_, t1_), torch.minimum(t0_, t1_)
        eps = torch.randn_like(x)
        tb = t.view(-1, 1, 1, 1)
        z = (1 - tb) * x + tb * eps
        v = eps - x
        loss = 0.0
        with autocast():
            if n_eq > 0:
                te = t[:n_eq]
                loss = loss + weighted_err(net(z[:n_eq], te, te), v[:n_eq])
            if n_iv > 0:
                zi, ti, ri, vi = z[n_eq:], t[n_eq:], r[n_eq:], v[n_eq:]
                u, dudt = jvp(lambda zz, tt, rr: net(zz, tt, rr), (zi, ti, ri),
                              (vi, torch.ones_like(ti), torch.zeros_like(ri)))
                u_tgt = (vi - (ti - ri).view(-1, 1, 1, 1) * dudt.float()).detach()
                loss = loss + weighted_err(u, u_tgt)
        loss = loss / a.batch
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step = meanflow_step if a.objective == "meanflow" else fm_step
    model.train()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t_c = time.perf_counter()
    for _ in range(a.warmup):
        step()
    torch.cuda.synchronize()
    warm_s = time.perf_counter() - t_c
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return dict(train_img_s=round(a.steps * a.batch / dt, 1),
                peak_mib=round(torch.cuda.max_memory_allocated() / 1048576.0, 1), params=params,
                warmup_s=round(warm_s, 2), optimizer=opt_kind)


def main():
    a = parse()
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - any import failure means "no PyTorch here"
        fail(3, "PyTorch cannot be imported with %s: %s" % (sys.executable, first_line(e)))
    if not torch.cuda.is_available():
        built = getattr(torch.version, "cuda", None)
        why = ("this PyTorch is built without CUDA" if not built else
               "no usable GPU or driver (PyTorch built for CUDA %s; CUDA_VISIBLE_DEVICES=%s)"
               % (built, os.environ.get("CUDA_VISIBLE_DEVICES", "unset")))
        fail(4, "CUDA not available: torch %s at %s: %s" % (torch.__version__, sys.executable, why))
    dev_name = torch.cuda.get_device_name(0)
    base = dict(impl="pytorch", objective=a.objective, ch=a.ch, mult=a.mult, res_blocks=a.res_blocks,
                temb=a.temb, half=a.half, time_scale=a.time_scale, batch=a.batch, steps=a.steps,
                torch=torch.__version__, device=dev_name, channels_last=a.channels_last)
    for prec in a.precision:
        for mode in a.mode:
            row = dict(base, precision=prec, mode=mode)
            if mode == "compile" and a.deadline and time.time() > a.deadline:
                row.update(ok=False, error="not run: time budget of gpu_check.sh spent")
            else:
                try:
                    row.update(ok=True, **run_case(torch, a, prec, mode))
                except Exception as e:  # noqa: BLE001 - reported per case ("n/a" with the reason)
                    row.update(ok=False, error=first_line(e))
                finally:
                    torch.cuda.empty_cache()
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
