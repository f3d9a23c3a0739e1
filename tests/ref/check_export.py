#!/usr/bin/python3
"""check_export.py - mfpipe's safetensors export against the PyTorch mirror (tests/ref/unet_ref.py).

usage: /usr/bin/python3 tests/ref/check_export.py BUILD/bin/mfpipe [OUTDIR]     (OUTDIR: tests/ref)

For two tiny models (flow matching, unconditional; MeanFlow, class-conditional with the null class and
two time inputs) it trains a few steps with mfpipe on random MNIST-shaped data, exports the weights
(`mfpipe export --raw`), loads the file into UNetRef with load_state_dict(strict=True) (every name and
shape must match, nothing missing or extra), runs the mirror in float64 on seeded inputs and writes

  export_<name>.safetensors     the file mfpipe wrote, unchanged
  export_<name>_io.safetensors  the inputs (z, t, r, labels) and the mirror's output (out)

tests/test_export.c loads the first with mfpipe's importer, runs mfpipe's network on the inputs and
compares with `out`: that the same file means the same network on both sides. Needs Debian's
python3-torch; the test suite itself only reads the committed files.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from unet_ref import UNetCfg, UNetRef  # noqa: E402

DT = {"F32": torch.float32, "F64": torch.float64, "I32": torch.int32, "I64": torch.int64}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    base = 8 + n
    tensors = {}
    for name, e in header.items():
        a, b = e["data_offsets"]
        t = torch.frombuffer(bytearray(data[base + a:base + b]), dtype=DT[e["dtype"]]).reshape(e["shape"])
        tensors[name] = t
    return tensors, meta


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        t = t.contiguous()
        dtype = {torch.float32: "F32", torch.int32: "I32"}[t.dtype]
        raw = t.numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def make_data(root):
    os.makedirs(root, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 64), ("t10k", 16)):
        img = torch.randint(0, 256, (n * 784,), generator=g, dtype=torch.uint8).numpy().tobytes()
        lab = bytes(i % 10 for i in range(n))
        with open(os.path.join(root, "%s-images-idx3-ubyte" % split), "wb") as f:
            f.write(struct.pack(">IIII", 0x803, n, 28, 28) + img)
        with open(os.path.join(root, "%s-labels-idx1-ubyte" % split), "wb") as f:
            f.write(struct.pack(">II", 0x801, n) + lab)


CASES = {
    "fm_tiny": "model: {channels: 4, channel_mult: [1, 2], res_blocks: 1, groups: 2, time_embed: {dim: 8, frequencies: 4}}\n"
               "train: {steps: 3, batch: 8, final_grid: 0}\n",
    "mf_cond_tiny": "model: {channels: 4, channel_mult: [1, 2], res_blocks: 1, groups: 2, class_cond: true,\n"
                    "        time_embed: {dim: 8, frequencies: 4}}\n"
                    "train: {objective: meanflow, steps: 3, batch: 8, final_grid: 0, class_dropout: 0.2}\n",
}


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    mfpipe = os.path.abspath(sys.argv[1])
    out = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else os.path.dirname(os.path.abspath(__file__))
    work = tempfile.mkdtemp(prefix="mfpipe-export-")
    make_data(os.path.join(work, "mn"))
    for name, body in CASES.items():
        exp = os.path.join(work, name + ".yaml")
        with open(exp, "w") as f:
            f.write("name: %s\nseed: 3\nthreads: 1\nstages: [data, train]\n"
                    "data: {dataset: mnist, root: %s/mn, verify: false}\n%s" % (name, work, body))
        run = os.path.join(work, "run_" + name)
        subprocess.run([mfpipe, "run", "-q", exp, "--out", run], check=True, env=dict(os.environ, MFPIPE_NO_FETCH="1"))
        st = os.path.join(out, "export_%s.safetensors" % name)
        subprocess.run([mfpipe, "export", run, "--raw", "--out", st], check=True)
        sd, meta = read_safetensors(st)
        c = json.loads(meta["mfpipe.unet_cfg"])
        cfg = UNetCfg(in_ch=c["in_ch"], height=c["height"], width=c["width"], ch=c["ch"], mult=c["mult"],
                      res_blocks=c["res_blocks"], groups=c["groups"], temb_dim=c["temb_dim"],
                      fourier_half=c["fourier_half"], time_scale=c["time_scale"], num_classes=c["num_classes"],
                      time_inputs=c["time_inputs"], null_class=bool(c["null_class"]),
                      interval="r" if c["interval_r"] else "t_minus_r")
        model = UNetRef(cfg)
        model.load_state_dict(sd, strict=True)  # raises on any missing, extra or mis-shaped tensor
        model = model.double().eval()
        g = torch.Generator().manual_seed(1)
        B = 4
        z = torch.randn(B, cfg.in_ch, cfg.height, cfg.width, generator=g)
        t = torch.rand(B, generator=g)
        r = t * torch.rand(B, generator=g)
        labels = torch.tensor([0, 3, 9, cfg.num_classes], dtype=torch.int32)[:B] if cfg.num_classes else None
        with torch.no_grad():
            y = model(z.double(), t.double(), r.double() if cfg.time_inputs == 2 else None,
                      labels.long() if labels is not None else None).float()
        io = {"z": z, "t": t, "r": r, "out": y}
        if labels is not None:
            io["labels"] = labels
        write_safetensors(os.path.join(out, "export_%s_io.safetensors" % name), io)
        print("%s: %d tensors loaded strict=True; output |y| max %.4f" % (name, len(sd), float(y.abs().max())))


if __name__ == "__main__":
    main()
