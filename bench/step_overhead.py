"""Per-step overhead of training the MNIST recipe model (784-144-72-48) on the CPU.

    python bench/step_overhead.py [--data-root ../shared/data] [--threads 1] [--out FILE]

Prints seconds per Fashion-MNIST epoch (60,000 images) through ``fit`` with
``engine="autograd"`` (autograd + ``torch.optim.Adam.step``) and ``engine="auto"`` (aelib.mlp_step:
no autograd graph, the fused Adam kernel called directly) at batch 80 (fast mode) and 300 (the
recipe), then the cost of one Adam step with and without flushing denormals, measured on the
optimiser state after one fast-mode epoch. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from aelib.data import load_dataset
from aelib.models import build
from aelib.train import TrainConfig, fit


def epoch_seconds(images: torch.Tensor, batch: int, engine: str, repeats: int) -> float:
    times = []
    for r in range(repeats):
        model = build("mnist_keras", seed=r)
        res = fit(model, images, None, TrainConfig(epochs=1, batch_size=batch, lr=1.5e-3, engine=engine))
        times.append(res.seconds)
    return min(times)


def adam_step_ms(images: torch.Tensor, flush: bool, n: int = 300) -> float:
    """One fused Adam step on the recipe model after a fast-mode epoch (batch 80, lr 1e-2).

    The state matters: after real training some second moments are tiny enough to be denormal.
    """
    model = build("mnist_keras", seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.9, 0.99), fused=True)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    for idx in perm.split(80):
        x = images[idx].float().div_(255)
        loss = torch.nn.functional.mse_loss(model(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_flush_denormal(flush)
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            opt.step()
        return (time.perf_counter() - t0) / n * 1e3
    finally:
        torch.set_flush_denormal(False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/results/step-overhead.json", help="'' to skip")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many epochs per cell")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train = load_dataset("fashion-mnist", "train", root=args.data_root, download=False)
    if train.source != "local":
        raise SystemExit(f"Fashion-MNIST not found under {args.data_root}.")
    out: dict = {"benchmark": "step-overhead", "threads": args.threads, "torch": torch.__version__,
                 "epoch_seconds": {}}
    for batch in (80, 300):
        for engine in ("autograd", "auto"):
            s = epoch_seconds(train.images, batch, engine, args.repeats)
            out["epoch_seconds"][f"batch{batch}_{engine}"] = s
            print(f"batch {batch:3d}  engine {engine:8s}  {s:.2f} s/epoch", flush=True)
    for flush in (False, True):
        ms = adam_step_ms(train.images, flush)
        out[f"adam_step_ms_flush_{str(flush).lower()}"] = ms
        print(f"Adam step, flush denormals {flush!s:5s}: {ms:.3f} ms", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))
        print(f"wrote {args.out}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
