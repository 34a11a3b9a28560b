"""torchrun + DDP (gloo on CPU): same loss curve as one process at the same global batch size."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist

from aelib import checkpoints

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="this torch build has no gloo backend")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    x = np.zeros((640, 12, 12), np.uint8)
    for i, (r, c) in enumerate(rng.integers(0, 7, (640, 2))):
        x[i, r:r + 5, c:c + 5] = rng.integers(120, 255)
    np.save(tmp_path / "train.npy", x[:512])
    np.save(tmp_path / "val.npy", x[512:])
    return tmp_path / "train.npy", tmp_path / "val.npy"


def test_two_process_ddp_matches_single_process_and_rank0_alone_saves(tmp_path):
    train, val = _data(tmp_path)
    common = ["train", "--dataset", str(train), "--test", str(val), "--model", "fcn", "--latent", "8",
              "--epochs", "3", "--batch-size", "64", "--lr", "3e-3", "--quiet", "--device", "cpu"]
    (tmp_path / "ddp").mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
         f"--master_port={_free_port()}", "-m", "aelib", *common, "--out", str(tmp_path / "ddp" / "m")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("saved ") == 1 and "on 2 processes" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["m.json", "m.safetensors"]

    (tmp_path / "single").mkdir()
    proc1 = subprocess.run([sys.executable, "-m", "aelib", *common, "--threads", "1",
                            "--out", str(tmp_path / "single" / "m")],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc1.returncode == 0, proc1.stderr[-3000:]

    ddp = checkpoints.load(tmp_path / "ddp" / "m.safetensors")
    single = checkpoints.load(tmp_path / "single" / "m.safetensors")
    assert ddp.meta["dataset"]["processes"] == 2
    h2, h1 = ddp.meta["history"], single.meta["history"]
    assert h2["epoch"] == h1["epoch"] == [1, 2, 3]
    np.testing.assert_allclose(h2["val_loss"], h1["val_loss"], rtol=2e-3)
    np.testing.assert_allclose(h2["train_loss"], h1["train_loss"], rtol=2e-3)
    assert h2["val_loss"][-1] < h2["val_loss"][0]  # it trained
