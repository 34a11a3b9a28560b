"""Every checkpoint shipped in checkpoints/ loads and reproduces its recorded test MSE."""

from __future__ import annotations

from pathlib import Path

import pytest

from aelib import checkpoints, scoring
from aelib.data import load_dataset

SHIPPED = sorted((Path(__file__).resolve().parents[1] / "checkpoints").glob("*.safetensors"))


def test_shipped_checkpoints_exist_and_stay_small():
    assert SHIPPED, "checkpoints/ ships no model: the app would open empty"
    total = sum(p.stat().st_size for p in SHIPPED)
    assert total < 8 * 2**20, f"checkpoints/ holds {total / 2**20:.1f} MB"
    families = {checkpoints.read_metadata(p)["model"]["family"] for p in SHIPPED}
    assert families == {"fcn", "conv", "vae"}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_checkpoint_reproduces_recorded_test_mse(path, data_root):
    ck = checkpoints.load(path)
    key = ck.meta["dataset"]["key"]
    test = load_dataset(key, "test", root=data_root, download=False)
    assert test.source == "local"
    assert ck.meta["metrics"]["n_test"] == len(test)
    errs = scoring.reconstruction_errors(ck.model, test.images, ["mse"])
    assert errs["mse"].mean() == pytest.approx(ck.meta["metrics"]["test_mse"], rel=1e-4)
    assert ck.meta["history"]["val_mse"][-1] < ck.meta["history"]["val_mse"][0]
