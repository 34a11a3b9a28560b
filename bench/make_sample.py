"""Rebuild the bundled offline samples in aelib/assets from real MNIST / Fashion-MNIST files.

The samples are what ``aelib.data.load_dataset`` falls back to when neither local files nor a download
are available: a class-balanced, seeded random pick of real images, small enough to ship in the package.

    python bench/make_sample.py                 # reads ../shared/data, writes aelib/assets/*.npz
    python bench/make_sample.py --root DIR --train-per-class 300 --test-per-class 100
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing aelib


def pick_balanced(labels: np.ndarray, per_class: int, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` random indices of each class, returned in the original order."""
    picks = []
    for c in range(n_classes):
        pool = np.flatnonzero(labels == c)
        if len(pool) < per_class:
            raise SystemExit(f"class {c} has only {len(pool)} images, fewer than {per_class}")
        picks.append(rng.choice(pool, per_class, replace=False))
    return np.sort(np.concatenate(picks))


def build(key: str, root: Path, out_dir: Path, train_per_class: int, test_per_class: int, seed: int) -> Path:
    """Write one ``<name>_sample.npz`` with uint8 x_train/x_test (N, 28, 28) and uint8 y_train/y_test."""
    from torchvision import datasets

    from aelib.data import DATASETS

    spec = DATASETS[key]
    cls = getattr(datasets, spec.torchvision_class)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        ds = cls(str(root), train=split == "train", download=False)
        x, y = ds.data.numpy(), ds.targets.numpy()
        idx = pick_balanced(y, per_class, len(spec.classes), rng)
        arrays[f"x_{split}"] = np.ascontiguousarray(x[idx], dtype=np.uint8)
        arrays[f"y_{split}"] = y[idx].astype(np.uint8)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / spec.sample_file
    np.savez_compressed(path, **arrays)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data",
                        help="folder holding MNIST/raw and FashionMNIST/raw (torchvision layout)")
    parser.add_argument("--out", type=Path, default=REPO / "aelib" / "assets")
    parser.add_argument("--train-per-class", type=int, default=300)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from aelib.data import DATASETS

    total = 0
    for key in DATASETS:
        path = build(key, args.root, args.out, args.train_per_class, args.test_per_class, args.seed)
        size = path.stat().st_size
        total += size
        print(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: {size:,} bytes")
    print(f"total: {total:,} bytes")


if __name__ == "__main__":
    main()
