"""Shared test fixtures: the offline real datasets and a small, cheap MNIST pair."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from streamlit import config as _st_config

from aelib.data import ImageDataset, load_splits

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"

# Tests read exception elements' text, as a developer would; a deployment shows a generic sentence
# instead (client.showErrorDetails = "none" in .streamlit/config.toml, checked in test_deploy).
_st_config.set_option("client.showErrorDetails", "full")

# One torch thread for the suite: the models here are small, and on a 2-core machine with anything
# else running, two OpenMP threads spin against each other and run 10-60x slower (README "Threads").
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Real MNIST (subset) and Fashion-MNIST in torchvision's raw layout; skip where absent."""
    needed = [DATA_ROOT / name / "raw" / "train-images-idx3-ubyte" for name in ("MNIST", "FashionMNIST")]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        pytest.skip(f"offline datasets not found ({', '.join(missing)}); see shared/data/README.md")
    return DATA_ROOT


def _per_class(ds: ImageDataset, k: int) -> ImageDataset:
    """The first ``k`` images of each class, in the original order (class-balanced and deterministic)."""
    idx = torch.cat([torch.nonzero(ds.labels == c).flatten()[:k] for c in ds.labels.unique()]).sort().values
    return ImageDataset(images=ds.images[idx].clone(), labels=ds.labels[idx].clone(), name=ds.name,
                        source=ds.source, classes=ds.classes, note=ds.note, extra=dict(ds.extra))


@pytest.fixture(scope="session")
def mnist_small(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageDataset, ImageDataset]:
    """(train, test) real MNIST from the bundled sample: 1,000 train and 500 test images (100 / 50 per
    digit), uint8 (N, 1, 28, 28) with int64 labels. Needs no network and no shared data. Read-only."""
    empty_root = tmp_path_factory.mktemp("no-data")
    train, test = load_splits("mnist", root=empty_root, download=False)
    return _per_class(train, 100), _per_class(test, 50)
