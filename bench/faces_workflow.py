"""The faces workflow at its real size, through the command line, timed and measured.

    python bench/faces_workflow.py [--dir /tmp/aelib-faces] [--n 100000] [--test 2000] [--epochs 1]

Writes a generated stand-in for the seed's data (``trainingset.npy``: N x 64x64x3 uint8, 1.23 GB at
100,000 images; ``testingset.npy``) chunk by chunk into ``--dir`` (kept for later runs), then runs,
each as its own ``python -m aelib`` process on one torch thread:

1. ``train --dataset trainingset.npy --model PRESET --epochs 1`` for face_conv, face_vae, face_fcn
   (90% trains, the last 10% validates: the CLI's holdout);
2. ``export CHECKPOINT --dataset testingset.npy --what scores`` with the face_conv model, and the
   same over all of ``trainingset.npy`` (the 100,000-row CSV);
3. ``detect --train trainingset.npy --test testingset.npy`` (the recommended detector).

Each step's wall time and peak RSS (the process's VmHWM) are printed
and written to ``bench/results/faces-workflow.json`` with the per-epoch seconds the CLI printed.
The images are smooth random colour fields (random 8x8x3 images upsampled bicubically, plus 5%
noise), not faces: the timing and memory of a workflow depend on the array's size, not on what
it shows.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aelib import bench as aebench  # noqa: E402

PRESETS = ("face_conv", "face_vae", "face_fcn")


def make_array(path: Path, n: int, seed: int, chunk: int = 5000) -> None:
    """(n, 64, 64, 3) uint8 smooth random colour images as .npy, written chunk by chunk."""
    if path.exists() and np.load(path, mmap_mode="r").shape == (n, 64, 64, 3):
        return
    out = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype=np.uint8,
                                    shape=(n, 64, 64, 3))
    g = torch.Generator().manual_seed(seed)
    for i in range(0, n, chunk):
        m = min(chunk, n - i)
        low = torch.rand(m, 3, 8, 8, generator=g)
        img = F.interpolate(low, size=(64, 64), mode="bicubic", align_corners=False)
        img = (img + 0.05 * torch.randn(img.shape, generator=g)).clamp(0, 1)
        out[i:i + m] = (img * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out.flush()
    del out
    path.with_suffix(".tmp.npy").rename(path)


def _hwm_gb(pid: int) -> float | None:
    """The process's peak resident memory so far (VmHWM), or None once it has gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            kb = next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return None
    return kb / 2**20


def run(args: list[str], log: Path) -> dict:
    """Run ``python -m aelib ARGS``; wall seconds, peak RSS (GB) and its output.

    The peak is the child's own VmHWM, read every 0.1 s until it exits: the rusage of a child
    started from this (large) process would count this process's pages too (Linux carries the
    pre-exec memory's high-water mark into the child's ``ru_maxrss``)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    peak = 0.0
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "aelib", *args], stdout=f, stderr=subprocess.STDOUT,
                                cwd=ROOT, env=env)
        while proc.poll() is None:
            peak = max(peak, _hwm_gb(proc.pid) or 0.0)
            time.sleep(0.1)
    wall = time.perf_counter() - t0
    text = log.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"python -m aelib {' '.join(args)} failed:\n{text[-2000:]}")
    return {"command": "python -m aelib " + " ".join(args), "wall_s": round(wall, 1),
            "peak_rss_gb": round(peak, 2), "output": text}


def epoch_seconds(text: str) -> list[float]:
    """The per-epoch times the CLI printed (``epoch   1/1 ... 71.3s``; cumulative, so differenced)."""
    total = [float(m) for m in re.findall(r"^epoch\s+\d+/\d+\s.*?([0-9.]+)s\s*$", text, re.M)]
    return [round(b - a, 1) for a, b in zip([0.0, *total], total)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/tmp/aelib-faces")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    train, test = d / "trainingset.npy", d / "testingset.npy"
    t0 = time.perf_counter()
    make_array(train, args.n, seed=0)
    make_array(test, args.test, seed=1)
    print(f"data: {train} {train.stat().st_size / 1e9:.2f} GB, {test} ({time.perf_counter() - t0:.0f} s)",
          flush=True)
    common = ["--threads", "1", "--device", "cpu"]
    steps: dict[str, dict] = {}
    for preset in args.presets.split(","):
        r = run(["train", "--dataset", str(train), "--model", preset, "--epochs", str(args.epochs),
                 "--out", str(d / preset), "--quiet", *common], d / f"{preset}.log")
        r["epoch_s"] = epoch_seconds(r["output"])
        r["images_per_s"] = round(0.9 * args.n / r["epoch_s"][0], 1) if r["epoch_s"] else None
        steps[f"train_{preset}"] = r
        print(f"train {preset}: epoch {r['epoch_s']} s, {r['wall_s']} s in all, peak RSS "
              f"{r['peak_rss_gb']} GB", flush=True)
    ckpt = d / "face_conv.safetensors"
    if ckpt.exists():
        for name, data in (("export_scores_test", test), ("export_scores_all", train)):
            r = run(["export", str(ckpt), "--dataset", str(data), "--what", "scores",
                     "--out", str(d / f"{name}.csv")], d / f"{name}.log")
            r["rows"] = sum(1 for _ in open(d / f"{name}.csv")) - 1
            steps[name] = r
            print(f"{name}: {r['rows']:,} rows in {r['wall_s']} s, peak RSS {r['peak_rss_gb']} GB",
                  flush=True)
    r = run(["detect", "--train", str(train), "--test", str(test), "--out", str(d / "detect.csv"),
             "--threads", "1", "--device", "cpu"], d / "detect.log")
    steps["detect_recommended"] = r
    print(f"detect: {r['wall_s']} s, peak RSS {r['peak_rss_gb']} GB", flush=True)
    for s in steps.values():  # keep the last lines of each log, not the progress bars
        s["output"] = "\n".join(s["output"].strip().splitlines()[-6:])
    result = {"benchmark": "faces-workflow", "images": args.n, "test_images": args.test,
              "array_gb": round(train.stat().st_size / 1e9, 2), "epochs": args.epochs,
              "cpu": aebench.cpu_name(),
              "load_average_at_start": os.getloadavg()[0], "torch": torch.__version__, "steps": steps}
    print("written", aebench.write_result(result, args.out))


if __name__ == "__main__":
    main()
