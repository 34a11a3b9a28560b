"""Tests for aelib.export: prediction.csv layout and values, scores CSV, atomic streaming writes."""

from __future__ import annotations

import io
import os
import stat

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from aelib.data import to_float
from aelib.errors import DataError
from aelib.export import (
    iter_prediction_csv,
    prediction_header,
    scores_csv_bytes,
    write_prediction_csv,
    write_scores_csv,
)
from aelib.models import ModelConfig, build, reconstruct


class Affine(nn.Module):
    """Known reconstruction recon = 0.5 * x + 0.25; raises on batch ``fail_at`` when set."""

    def __init__(self, in_shape=(2, 2, 3), output_range="unit", fail_at=None):
        super().__init__()
        self.config = ModelConfig("fcn", in_shape, latent=2, output_range=output_range)
        self.dummy = nn.Parameter(torch.zeros(1))
        self.fail_at, self.calls = fail_at, 0

    def forward(self, x):
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise RuntimeError("disk full, say")
        return 0.5 * x + 0.25


def _images(n, shape=(2, 2, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)


def test_prediction_csv_header_order_and_values_round_trip(tmp_path):
    imgs = _images(5)  # C=2, H=2, W=3: 12 pixels, so a wrong flattening order shows
    path = tmp_path / "prediction.csv"
    assert write_prediction_csv(path, Affine(), imgs, batch_size=2) == 5
    df = pd.read_csv(path)
    expected_cols = ["row_id"] + [f"{k}_px{i}" for i in range(12) for k in ("orig", "recon")]
    assert list(df.columns) == expected_cols
    assert df["row_id"].tolist() == [0, 1, 2, 3, 4]
    orig = imgs.reshape(5, -1).numpy() / 255.0  # (C, H, W) flattening
    np.testing.assert_allclose(df[[f"orig_px{i}" for i in range(12)]].to_numpy(), orig, rtol=1e-5)
    np.testing.assert_allclose(df[[f"recon_px{i}" for i in range(12)]].to_numpy(), 0.5 * orig + 0.25,
                               rtol=1e-5)


def test_prediction_csv_values_are_in_the_models_range_for_a_real_model(tmp_path):
    model = build(ModelConfig("fcn", (1, 4, 4), latent=3, hidden=(8,), output_range="symmetric"), seed=0)
    imgs = _images(9, (1, 4, 4))
    imgs[0] = 0
    path = tmp_path / "p.csv"
    write_prediction_csv(path, model, imgs, batch_size=4)
    df = pd.read_csv(path)
    model.eval()
    with torch.no_grad():
        x = to_float(imgs, "symmetric")
        recon = reconstruct(model, x).flatten(1).numpy()
    np.testing.assert_allclose(df.filter(like="orig_").to_numpy(), x.flatten(1).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(df.filter(like="recon_").to_numpy(), recon, rtol=1e-5, atol=1e-6)
    assert (df.filter(like="orig_px").iloc[0] == -1.0).all()
    assert df.drop(columns="row_id").abs().to_numpy().max() <= 1.0


def test_prediction_csv_stream_is_chunked_and_independent_of_batch_size(tmp_path):
    imgs = _images(37)
    chunks = list(iter_prediction_csv(Affine(), imgs, batch_size=8))
    assert chunks[0] == prediction_header(12) + "\n"
    assert len(chunks) == 1 + 5  # header + one block per batch of 8
    text = "".join(chunks)
    assert text.count("\n") == 38
    assert "".join(iter_prediction_csv(Affine(), imgs, batch_size=1)) == text
    write_prediction_csv(tmp_path / "a.csv", Affine(), imgs, batch_size=8)
    assert (tmp_path / "a.csv").read_text() == text


def test_prediction_csv_memory_is_bounded_per_chunk():
    # MNIST-size images: no chunk grows with N (each holds a bounded block of rows).
    model = Affine((1, 28, 28))
    chunks = iter_prediction_csv(model, _images(600, (1, 28, 28)), batch_size=600)
    next(chunks)
    sizes = [len(c) for c in chunks]
    assert len(sizes) >= 3 and max(sizes) < 4_000_000


def test_prediction_csv_to_file_objects_and_custom_row_ids():
    imgs = _images(3)
    buf = io.StringIO()
    assert write_prediction_csv(buf, Affine(), imgs, row_ids=["a", "b,c", 'd"e']) == 3
    df = pd.read_csv(io.StringIO(buf.getvalue()))
    assert df["row_id"].tolist() == ["a", "b,c", 'd"e']
    raw = io.BytesIO()
    write_prediction_csv(raw, Affine(), imgs, row_ids=["a", "b,c", 'd"e'])
    assert raw.getvalue().decode() == buf.getvalue()
    with pytest.raises(DataError, match="row_ids"):
        write_prediction_csv(io.StringIO(), Affine(), imgs, row_ids=[1, 2])


def test_failed_prediction_export_leaves_existing_file_untouched(tmp_path):
    path = tmp_path / "prediction.csv"
    path.write_text("previous export\n")
    with pytest.raises(RuntimeError, match="disk full"):
        write_prediction_csv(path, Affine(fail_at=2), _images(10), batch_size=4)
    assert path.read_text() == "previous export\n"
    assert os.listdir(tmp_path) == ["prediction.csv"]  # no temporary file left behind
    with pytest.raises(DataError):
        write_prediction_csv(path, Affine(), _images(2, (1, 3, 3)))
    assert path.read_text() == "previous export\n"


def test_successful_export_replaces_file_with_readable_permissions(tmp_path):
    path = tmp_path / "scores.csv"
    write_scores_csv(path, [0.5, 0.25])
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    write_prediction_csv(path, Affine(), _images(2))
    assert path.read_text().startswith("row_id,orig_px0,recon_px0,")
    assert os.listdir(tmp_path) == ["scores.csv"]


def test_scores_csv_format_and_exact_round_trip(tmp_path):
    scores = np.random.default_rng(0).random(1000).astype(np.float32) * 1000
    path = tmp_path / "scores.csv"
    assert write_scores_csv(path, scores) == 1000
    lines = path.read_text().splitlines()
    assert lines[0] == "id,score" and lines[1].startswith("0,") and len(lines) == 1001
    df = pd.read_csv(path)
    assert df["id"].tolist() == list(range(1000))
    np.testing.assert_array_equal(df["score"].to_numpy().astype(np.float32), scores)
    assert scores_csv_bytes(scores) == path.read_bytes()


def test_scores_csv_ids_shapes_and_errors(tmp_path):
    data = scores_csv_bytes(torch.tensor([[1.5], [2.0]]), ids=["x1", "x2"])
    assert data == b"id,score\nx1,1.5\nx2,2\n"
    assert scores_csv_bytes(np.zeros(0)) == b"id,score\n"
    path = tmp_path / "scores.csv"
    path.write_text("keep\n")
    with pytest.raises(DataError, match="NaN"):
        write_scores_csv(path, [0.1, float("nan")])
    with pytest.raises(DataError, match="ids"):
        write_scores_csv(path, [0.1, 0.2], ids=[7])
    with pytest.raises(DataError):
        write_scores_csv(path, np.zeros((2, 2)))
    assert path.read_text() == "keep\n"
    assert os.listdir(tmp_path) == ["scores.csv"]
