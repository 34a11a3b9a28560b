"""Training throughput of the convolutional presets and defaults against a plain PyTorch loop.

    python bench/conv_throughput.py [--threads 1] [--steps 20] [--warmup 4] [--rounds 3] [--out DIR]

Issue 16's measurement: one torch thread, batch 64, random uint8 images. The peers are plain
PyTorch loops (Adam 1e-3, MSE, the usual ``zero_grad / backward / step``) of the seed's own
``conv_autoencoder`` and VAE written out layer by layer from ../shared/REFERENCE.md. aelib's side
is :func:`aelib.train.fit` on the presets ``face_conv``, ``face_vae`` and ``face_fcn`` (64x64x3)
and the 28x28 family defaults, with ``engine="auto"`` (what users get) and ``engine="autograd"``
(plain autograd on contiguous tensors). Rounds alternate the contenders so drift on a shared
machine hits all of them alike; each figure is the median over rounds of images per second over
the timed steps (after warm-up steps). GFLOP/s uses the multiply-adds of one forward pass
times 3 (forward + two backward products), against a measured single-thread float32 GEMM and
the forward rate of a wide 3x3 convolution (oneDNN's best case here).
Ends with one JSON line and writes conv-throughput.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from aelib import bench as aebench
from aelib.models import build
from aelib.train import Callback, TrainConfig, fit


def seed_conv_autoencoder() -> nn.Module:
    enc = nn.Sequential(nn.Conv2d(3, 12, 4, 2, 1), nn.ReLU(), nn.Conv2d(12, 24, 4, 2, 1), nn.ReLU(),
                        nn.Conv2d(24, 48, 4, 2, 1), nn.ReLU())
    dec = nn.Sequential(nn.ConvTranspose2d(48, 24, 4, 2, 1), nn.ReLU(),
                        nn.ConvTranspose2d(24, 12, 4, 2, 1), nn.ReLU(),
                        nn.ConvTranspose2d(12, 3, 4, 2, 1), nn.Tanh())
    return nn.Sequential(enc, dec)


class SeedVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 12, 4, 2, 1), nn.ReLU(),
                                   nn.Conv2d(12, 24, 4, 2, 1), nn.ReLU())
        self.mu = nn.Sequential(nn.Conv2d(24, 48, 4, 2, 1), nn.ReLU())
        self.logvar = nn.Sequential(nn.Conv2d(24, 48, 4, 2, 1), nn.ReLU())
        self.dec = seed_conv_autoencoder()[1]

    def forward(self, x):
        h = self.trunk(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.exp(logvar / 2) * torch.randn_like(mu)
        return self.dec(z), mu, logvar


def plain_loop(model: nn.Module, images: torch.Tensor, steps: int, warmup: int, vae: bool) -> float:
    """Images per second of a textbook training loop over ``steps`` batches of 64."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    t0 = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        idx = torch.randint(0, len(images), (64,), generator=gen)
        x = images[idx].float().div_(127.5).sub_(1)
        if vae:
            out, mu, logvar = model(x)
            kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / len(x)
            loss = nn.functional.mse_loss(out, x) + kl / x[0].numel()
        else:
            loss = nn.functional.mse_loss(model(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * 64 / (time.perf_counter() - t0)


class _Clock(Callback):
    """Times the batches after ``warmup`` inside one fit epoch."""

    def __init__(self, warmup: int):
        self.warmup, self.t0, self.t1, self.done = warmup, 0.0, 0.0, 0

    def on_batch_end(self, epoch, step, steps_per_epoch, loss):
        if step == self.warmup:
            self.t0 = time.perf_counter()
        self.t1 = time.perf_counter()
        self.done = step


def fit_rate(name: str, images: torch.Tensor, steps: int, warmup: int, engine: str) -> float:
    shape = tuple(images.shape[1:])
    model = build(name, shape if name in ("fcn", "conv", "vae") else None, seed=0)
    clock = _Clock(warmup)
    n = (warmup + steps) * 64
    fit(model, images[:n], None, TrainConfig(epochs=1, batch_size=64, lr=1e-3, engine=engine,
                                             schedule="constant"), callbacks=[clock])
    return (clock.done - warmup) * 64 / (clock.t1 - clock.t0)


def forward_macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass of one image (convolutions, transposed ones, linears)."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out[0].numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.ConvTranspose2d):
            total += inp[0][0].numel() * m.out_channels * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return total


def gemm_gflops(n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


def conv_peak_gflops(c: int = 256, reps: int = 10) -> float:
    """Forward rate of a wide 3x3 convolution (c -> c channels, 32x32, batch 16, channels-last):
    the best rate oneDNN reaches on this core, a ceiling for the presets' narrow layers. On some
    x86 CPUs it is above the GEMM's, whose library may not take the widest vector path there."""
    x = torch.randn(16, c, 32, 32).contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, c, 3, 3).contiguous(memory_format=torch.channels_last)
    nn.functional.conv2d(x, w, padding=1)
    t0 = time.perf_counter()
    for _ in range(reps):
        nn.functional.conv2d(x, w, padding=1)
    return 2 * 16 * 32 * 32 * c * c * 9 * reps / (time.perf_counter() - t0) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, default=2560)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as fit does; the plain loops get the same arithmetic speed
    g = torch.Generator().manual_seed(0)
    face = torch.randint(0, 256, (args.images, 3, 64, 64), dtype=torch.uint8, generator=g)
    small = torch.randint(0, 256, (args.images, 1, 28, 28), dtype=torch.uint8, generator=g)

    contenders = {
        "plain_seed_conv": lambda: plain_loop(seed_conv_autoencoder(), face, args.steps, args.warmup, False),
        "plain_seed_vae": lambda: plain_loop(SeedVAE(), face, args.steps, args.warmup, True),
    }
    for name, data in (("face_conv", face), ("face_vae", face), ("face_fcn", face),
                       ("conv", small), ("vae", small), ("fcn", small)):
        for engine in ("auto", "autograd"):
            contenders[f"{name}/{engine}"] = (lambda name=name, data=data, engine=engine:
                                              fit_rate(name, data, args.steps, args.warmup, engine))
    rates: dict[str, list[float]] = {k: [] for k in contenders}
    peak, wide_conv = [], []
    for r in range(args.rounds):
        peak.append(gemm_gflops())
        wide_conv.append(conv_peak_gflops())
        for key, run in contenders.items():
            rates[key].append(run())
            print(f"round {r + 1}  {key:22s} {rates[key][-1]:8.0f} img/s", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    peak_gflops = statistics.median(peak)
    wide_conv_gflops = statistics.median(wide_conv)
    rows = {}
    for key, rate in med.items():
        name = key.split("/")[0]
        if name.startswith("plain"):
            peer = seed_conv_autoencoder() if name == "plain_seed_conv" else SeedVAE()
            macs = forward_macs(peer, (3, 64, 64))
        else:
            shape = (3, 64, 64) if name.startswith("face") else (1, 28, 28)
            model = build(name, shape if name in ("fcn", "conv", "vae") else None, seed=0)
            macs = forward_macs(model, shape)
        gflops = rate * macs * 2 * 3 / 1e9
        rows[key] = {"images_per_s": round(rate, 1), "gflops": round(gflops, 2),
                     "fraction_of_gemm_peak": round(gflops / peak_gflops, 3),
                     "fraction_of_conv_peak": round(gflops / wide_conv_gflops, 3),
                     "mflop_per_training_image": round(macs * 6 / 1e6, 2)}
    ratios = {
        "face_conv_auto_vs_plain_seed_conv": med["face_conv/auto"] / med["plain_seed_conv"],
        "face_vae_auto_vs_plain_seed_vae": med["face_vae/auto"] / med["plain_seed_vae"],
        "face_conv_auto_vs_autograd": med["face_conv/auto"] / med["face_conv/autograd"],
        "face_vae_auto_vs_autograd": med["face_vae/auto"] / med["face_vae/autograd"],
        "conv_auto_vs_autograd": med["conv/auto"] / med["conv/autograd"],
        "vae_auto_vs_autograd": med["vae/auto"] / med["vae/autograd"],
    }
    print(f"\nsingle-thread float32 GEMM (1024^3): {peak_gflops:.1f} GFLOP/s; "
          f"wide 3x3 convolution (256 channels): {wide_conv_gflops:.1f} GFLOP/s")
    for key, row in rows.items():
        print(f"{key:22s} {row['images_per_s']:8.0f} img/s  {row['gflops']:6.1f} GFLOP/s  "
              f"({row['fraction_of_gemm_peak']:.0%} of GEMM, "
              f"{row['fraction_of_conv_peak']:.0%} of the wide convolution)")
    for k, v in ratios.items():
        print(f"{k:36s} {v:.2f}x")
    result = {"benchmark": "conv-throughput", "threads": args.threads, "batch": 64,
              "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds,
              "cpu": aebench.cpu_name(),
              "torch": torch.__version__, "gemm_gflops": round(peak_gflops, 1),
              "conv_peak_gflops": round(wide_conv_gflops, 1), "rows": rows,
              "raw": rates, "ratios": {k: round(v, 3) for k, v in ratios.items()}}
    path = aebench.write_result(result, args.out)
    print(json.dumps({"ratios": result["ratios"], "written": str(path)}))


if __name__ == "__main__":
    main()
