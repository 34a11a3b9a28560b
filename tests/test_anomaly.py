"""The recommended detector: recipes per image shape, training with progress and stop, the CLI."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from aelib import cli
from aelib.anomaly import Member, Recipe, recommended_recipe, train_detector
from aelib.errors import ConfigError, DataError
from aelib.models import ModelConfig
from aelib.scoring import EnsembleDetector
from aelib.train import TrainConfig


def test_recipes_per_shape_keep_the_validated_step_counts():
    small = recommended_recipe((1, 28, 28), 800)
    assert [m.score for m in small.members] == ["blur_ink", "latent"]
    assert [m.model.family for m in small.members] == ["fcn", "conv"]
    assert all(m.train.batch_size == 32 and m.train.epochs == 40 for m in small.members)
    big = recommended_recipe((1, 28, 28), 6000)
    assert [(m.train.batch_size, m.train.epochs) for m in big.members] == [(128, 20), (128, 10)]
    assert recommended_recipe((1, 28, 28), 10**6).members == big.members  # capped at max_images
    colour = recommended_recipe((3, 64, 64))
    assert all(tuple(m.model.in_shape) == (3, 64, 64) for m in colour.members)
    other = recommended_recipe((3, 32, 32), 500)
    assert other.name == "generic" and tuple(other.members[0].model.in_shape) == (3, 32, 32)
    assert all(m.train.threads == 1 for r in (small, big, colour, other) for m in r.members)
    with pytest.raises(ConfigError):
        recommended_recipe((28, 28))
    with pytest.raises(DataError):
        recommended_recipe((1, 28, 28), 0)


def _tiny_recipe(shape=(1, 28, 28)) -> Recipe:
    fcn = ModelConfig("fcn", shape, latent=16, hidden=(64,), init="glorot")
    tcfg = TrainConfig(epochs=10, batch_size=32, lr=3e-3, schedule="onecycle", threads=1)
    return Recipe("tiny", (Member(fcn, tcfg, "blur_ink"), Member(fcn, tcfg, "latent")), 150, "test")


def test_train_detector_learns_the_normal_class_and_reports_progress(mnist_small):
    train, test = mnist_small
    normal = train.images[train.labels == 1]
    events = []
    det = train_detector(normal.numpy().transpose(0, 2, 3, 1), _tiny_recipe(), seed=0,
                         progress=events.append, device="cpu")
    assert isinstance(det, EnsembleDetector) and len(det.detectors) == 2
    assert det.recipe_.name == "tiny" and det.seconds_ > 0
    assert len(det.decision_scores_) == min(len(normal), 150)
    fractions = [e["fraction"] for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and events[-1]["stage"] == "fit"
    assert {e["member"] for e in events} == {0, 1}
    y = (test.labels != 1).numpy().astype(int)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, det.anomaly_scores(test.images)) > 0.9  # a "1" is easy to tell apart
    probs = det.predict_proba(test.images)
    assert probs.shape == (len(test), 2) and np.all((probs >= 0) & (probs <= 1))


def test_train_detector_stops_and_checks_shapes(mnist_small):
    train, _ = mnist_small
    stop = threading.Event()
    stop.set()
    assert train_detector(train.images[:64], _tiny_recipe(), stop=stop, device="cpu") is None
    with pytest.raises(DataError):
        train_detector(train.images[:64], _tiny_recipe((3, 28, 28)), device="cpu")


def test_cli_detect_writes_scores_and_metrics(tmp_path, mnist_small, monkeypatch, capsys):
    train, test = mnist_small
    np.save(tmp_path / "normal.npy", train.images[train.labels == 0].numpy()[:, 0])
    np.save(tmp_path / "test.npy", test.images[:200].numpy()[:, 0])
    np.save(tmp_path / "labels.npy", (test.labels[:200] != 0).numpy().astype(np.int64))
    monkeypatch.setattr("aelib.anomaly.recommended_recipe", lambda shape, n, threads=1: _tiny_recipe())
    rc = cli.main(["detect", "--train", str(tmp_path / "normal.npy"), "--test", str(tmp_path / "test.npy"),
                   "--test-labels", str(tmp_path / "labels.npy"), "--out", str(tmp_path / "s.csv"),
                   "--device", "cpu", "--save", str(tmp_path / "m")])
    assert rc == 0
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "id,score" and len(lines) == 201
    import json

    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["auc"] > 0.8 and 0 <= report["f1_max"] <= 1 and len(report["saved"]) == 2
    # A saved member scores again through export, latent fitted on the same normal images.
    rc = cli.main(["export", report["saved"][1], "--dataset", str(tmp_path / "test.npy"), "--what", "scores",
                   "--score", "latent", "--fit-on", str(tmp_path / "normal.npy"),
                   "--out", str(tmp_path / "latent.csv")])
    assert rc == 0 and len((tmp_path / "latent.csv").read_text().splitlines()) == 201
    for score in ("latent", "latent_knn"):
        assert cli.main(["export", report["saved"][1], "--dataset", str(tmp_path / "test.npy"), "--what",
                         "scores", "--score", score, "--out", str(tmp_path / "x.csv")]) == 2
    rc = cli.main(["export", report["saved"][1], "--dataset", str(tmp_path / "test.npy"), "--what", "scores",
                   "--score", "latent_knn", "--fit-on", str(tmp_path / "normal.npy"),
                   "--out", str(tmp_path / "knn.csv")])
    rows = (tmp_path / "knn.csv").read_text().splitlines()
    assert rc == 0 and len(rows) == 201 and all(float(r.split(",")[1]) > 0 for r in rows[1:])
