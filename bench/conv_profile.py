"""Where a colour preset's training step spends its time, and what 2x the plain loop would ask.

    python bench/conv_profile.py [--threads 1] [--steps 34] [--out DIR]

Three measurements behind the README's "Convolution throughput at 64x64x3" (issue 16), one torch
thread, batch 64, random uint8 images:

1. A profiled ``fit`` (``engine="auto"``) of ``face_conv`` and ``face_vae``: milliseconds per step
   in the convolution kernels (``convolution_backward``, ``mkldnn_convolution`` and the transposed
   forward, which runs inside ``_convolution``) and in everything else.
2. The seed's six layers alone, channels-last: forward, input gradient and weight gradient, each
   with its GFLOP/s (the first layer's input gradient is never needed in training), and the last
   layer's forward in the phase form ``fit`` trains it in (aelib.conv_step).
3. The products a Winograd form of the 12 -> 24 and 24 -> 48 layers would hand to ``torch.bmm``
   (2x2 outputs from a 2x2 kernel on the space-to-depth input: nine products per tile), against
   oneDNN's whole forward pass of the layer.

The convolution ceiling is the forward rate of a wide 3x3 convolution (as in
``conv_throughput.py``). Ends with one JSON line and writes conv-profile.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from conv_throughput import conv_peak_gflops, forward_macs
from torch import nn
from torch.profiler import ProfilerActivity, profile

from aelib import bench as aebench
from aelib import conv_step
from aelib.models import build
from aelib.train import TrainConfig, fit

CL = torch.channels_last
# The seed's layers in order, with their input shapes at batch 64 (bench/conv_throughput.py).
LAYERS = [("conv 3->12", nn.Conv2d(3, 12, 4, 2, 1), (3, 64, 64)),
          ("conv 12->24", nn.Conv2d(12, 24, 4, 2, 1), (12, 32, 32)),
          ("conv 24->48", nn.Conv2d(24, 48, 4, 2, 1), (24, 16, 16)),
          ("convT 48->24", nn.ConvTranspose2d(48, 24, 4, 2, 1), (48, 8, 8)),
          ("convT 24->12", nn.ConvTranspose2d(24, 12, 4, 2, 1), (24, 16, 16)),
          ("convT 12->3", nn.ConvTranspose2d(12, 3, 4, 2, 1), (12, 32, 32))]
CONV_KERNELS = ("aten::convolution_backward", "aten::mkldnn_convolution", "aten::_convolution")


def median_ms(f, reps: int = 30) -> float:
    for _ in range(3):
        f()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def step_profile(name: str, steps: int) -> dict:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64 * steps, 3, 64, 64), dtype=torch.uint8, generator=g)
    cfg = TrainConfig(epochs=1, batch_size=64, lr=1e-3, engine="auto", schedule="constant")
    fit(build(name, seed=0), images[:64 * 4], None, cfg)  # warm-up: kernels, caches, allocator
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        fit(build(name, seed=0), images, None, cfg)
        seconds = time.perf_counter() - t0
    conv_us = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in CONV_KERNELS)
    step_ms = seconds / steps * 1e3
    conv_ms = conv_us / 1e3 / steps
    return {"step_ms": round(step_ms, 2), "convolution_ms": round(conv_ms, 2),
            "other_ms": round(step_ms - conv_ms, 2)}


def training_gflop(name: str) -> float:
    """Convolution arithmetic of one step of 64: forward, input and weight gradients, less the
    first layer's input gradient."""
    model = build(name, seed=0)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    shape = model.config.in_shape
    return 2 * 64 * (3 * forward_macs(model, shape) - forward_macs(first, shape)) / 1e9


def layer_rates() -> list[dict]:
    rows = []
    for i, (label, m, shape) in enumerate(LAYERS):
        m = m.to(memory_format=CL)
        x = torch.randn(64, *shape).contiguous(memory_format=CL)
        y = m(x)
        grad = torch.randn_like(y)
        tr = isinstance(m, nn.ConvTranspose2d)
        pixels = x[0, 0].numel() if tr else y[0, 0].numel()
        mflop = 2 * 64 * pixels * m.in_channels * m.out_channels * 16 / 1e6

        def backward(mask, m=m, x=x, grad=grad, tr=tr):
            return torch.ops.aten.convolution_backward(
                grad, x, m.weight, [m.bias.shape[0]], [2, 2], [1, 1], [1, 1], tr, [0, 0], 1, mask)

        with torch.no_grad():
            fwd = median_ms(lambda m=m, x=x: m(x))
        row = {"layer": label, "mflop": round(mflop, 1), "forward_ms": round(fwd, 3)}
        parts = [("forward", fwd), ("weight_grad", median_ms(lambda: backward([False, True, True])))]
        if i > 0:
            parts.append(("input_grad", median_ms(lambda: backward([True, False, False]))))
        if i == len(LAYERS) - 1:  # the colour decoders' last layer; fit trains it in the phase form
            w, b = m.weight.detach(), m.bias.detach()
            parts.insert(1, ("phase_forward", median_ms(
                lambda m=m, x=x, w=w, b=b: conv_step.phase_conv_transpose(x, w, b, m))))
        for key, ms in parts:
            row[f"{key}_ms"] = round(ms, 3)
            row[f"{key}_gflops"] = round(mflop / ms, 1)
        rows.append(row)
    return rows


def winograd_products() -> list[dict]:
    rows = []
    for label, i, (tiles, k, n) in (("conv 12->24", 1, (64 * 8 * 8, 48, 24)),
                                    ("conv 24->48", 2, (64 * 4 * 4, 96, 48))):
        _, m, shape = LAYERS[i]
        m = m.to(memory_format=CL)
        x = torch.randn(64, *shape).contiguous(memory_format=CL)
        a, b = torch.randn(9, tiles, k), torch.randn(9, k, n)
        with torch.no_grad():
            direct = median_ms(lambda m=m, x=x: m(x))
        bmm = median_ms(lambda a=a, b=b: torch.bmm(a, b))
        rows.append({"layer": label, "products": f"9 x [{tiles} x {k}] x [{k} x {n}]",
                     "bmm_ms": round(bmm, 3), "bmm_gflops": round(2 * 9 * tiles * k * n / bmm / 1e6, 1),
                     "onednn_forward_ms": round(direct, 3)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=34)
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as fit does
    ceiling = statistics.median(conv_peak_gflops() for _ in range(3))
    print(f"wide 3x3 convolution (256 channels): {ceiling:.1f} GFLOP/s")
    steps = {}
    for name in ("face_conv", "face_vae"):
        p = step_profile(name, args.steps)
        p["gflop"] = round(training_gflop(name), 3)
        p["convolution_gflops"] = round(p["gflop"] / p["convolution_ms"] * 1e3, 1)
        steps[name] = p
        print(f"{name}: {p['step_ms']:.1f} ms per profiled step, convolutions "
              f"{p['convolution_ms']:.1f} ms ({p['gflop']:.2f} GFLOP, "
              f"{p['convolution_gflops']:.0f} GFLOP/s), other {p['other_ms']:.1f} ms")
    layers = layer_rates()
    for row in layers:
        print(f"{row['layer']:13s} " + "  ".join(
            f"{k}: {row[k + '_ms']:.2f} ms ({row[k + '_gflops']:.0f} GFLOP/s)"
            for k in ("forward", "phase_forward", "input_grad", "weight_grad") if k + "_ms" in row))
    wino = winograd_products()
    for row in wino:
        print(f"{row['layer']}: Winograd products {row['products']} by bmm {row['bmm_ms']:.2f} ms "
              f"({row['bmm_gflops']:.0f} GFLOP/s); oneDNN forward {row['onednn_forward_ms']:.2f} ms")
    result = {"benchmark": "conv-profile", "threads": args.threads, "batch": 64,
              "cpu": aebench.cpu_name(), "torch": torch.__version__,
              "conv_peak_gflops": round(ceiling, 1), "steps": steps, "layers": layers,
              "winograd": wino}
    path = aebench.write_result(result, args.out)
    print(json.dumps({"steps": steps, "written": str(path)}))


if __name__ == "__main__":
    main()
