"""Memory that must not grow with the number of images (the faces workflow: 100,000 x 64x64x3).

Each case runs in a fresh interpreter and reads its own /proc/self/status, so what other tests
allocated does not count. Linux only (that file)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")

ROOT = Path(__file__).resolve().parents[1]

_PRELUDE = """
import torch
torch.set_num_threads(1)
def mb(field):
    line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
    return int(line.split()[1]) / 1024
"""


def _run(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", _PRELUDE + code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return float(out.stdout.strip().splitlines()[-1])


def test_scoring_many_colour_images_does_not_grow_memory() -> None:
    """Scores of 12,000 64x64x3 images: the peak resident memory stays where scoring 1,000 put it.

    Per-batch score tensors kept until the end pinned glibc's heap between the batches' float
    buffers: the process grew with every image (2.5 GB over the faces' 100,000). The peak (VmHWM)
    is what is compared: the resident size after a call also moves with what glibc happens to have
    handed back, by tens of MB either way between identical runs, while the peak only rises with
    memory held during the call."""
    grew = _run("""
from aelib.models import build
from aelib.scoring import model_scores
model = build("face_conv", seed=0)
images = torch.randint(0, 256, (12000, 3, 64, 64), dtype=torch.uint8)
for _ in range(2):  # warm-up: the allocator's and oneDNN's own state, the batches' peak
    model_scores(model, images[:1000], ["l2", "mse"])
before = mb("VmHWM")
s = model_scores(model, images, ["l2", "mse"])
assert s["l2"].shape == (12000,) and s["l2"].dtype.name == "float64"
print(mb("VmHWM") - before)
""")
    assert grew < 100, f"the peak resident memory rose by {grew:.0f} MB while scoring 12,000 images"


def test_the_mean_image_baseline_of_colour_images_needs_little_memory() -> None:
    """fit's mean-image MSE over 6,000 64x64x3 images: its float chunks stay a few MB (4,096
    images a chunk were 0.2 GB of float32 plus their float64 sum, 0.6 GB in all)."""
    peak = _run("""
from aelib.train import mean_image_mse
train = torch.randint(0, 256, (6000, 3, 64, 64), dtype=torch.uint8)
val = torch.randint(0, 256, (500, 3, 64, 64), dtype=torch.uint8)
mean_image_mse(train[:10], val[:10], "symmetric")
before = mb("VmHWM")
mse = mean_image_mse(train, val, "symmetric")
assert 0.3 < mse < 0.4, mse  # uniform pixels in [-1, 1] against their mean: variance 1/3
print(mb("VmHWM") - before)
""")
    assert peak < 100, f"the peak resident memory rose by {peak:.0f} MB for the mean-image baseline"
