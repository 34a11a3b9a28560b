"""The one-class anomaly benchmark: quick smoke run, an easy real case, scores and CLI helpers."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from aelib import bench_anomaly as ba
from aelib.models import build, get_config
from aelib.scoring import reconstruction_errors
from aelib.train import TrainConfig, fit


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    # An empty root: the bundled real MNIST sample, so this runs without ../shared/data too.
    root = tmp_path_factory.mktemp("no-data")
    lines: list[str] = []
    result = ba.run("mnist", root, quick=True, log=lines.append)
    result["_log"] = lines
    return result


def test_quick_mode_reports_per_class_aucs_for_every_family(quick_result: dict) -> None:
    r = quick_result
    assert r["quick"] and r["classes"] == [0, 1] and r["families"] == ["fcn", "conv", "vae"]
    assert r["data"]["source"] == "bundled-sample"
    scores = ("l2", "mae", "blur", "blur_ink", "latent", "latent_knn")
    expected = {f"{f}/{s}" for f in ("fcn", "conv", "vae") for s in scores}
    expected |= {"vae/elbo", "ensemble"}
    assert expected <= set(r["auc"])
    for name, entry in r["auc"].items():
        assert len(entry["per_class"]) == 2, name
        assert all(0.0 <= a <= 1.0 for a in entry["per_class"]), name
        assert entry["mean"] == pytest.approx(np.mean(entry["per_class"]), abs=1e-4)
        assert r["summary"][name] == entry["mean"]
    # The exact configs used are recorded, with one thread and the quick epoch count.
    for f in r["families"]:
        assert r["model_configs"][f]["family"] == f
        assert r["train_configs"][f]["epochs"] == 1 and r["train_configs"][f]["threads"] == 1
    assert r["anchors"] and all("source" in a for a in r["anchors"])
    assert r["headline"]["name"] == "ensemble" and r["headline"]["mean_auc"] == r["summary"]["ensemble"]
    # MNIST's own protocol: blur_ink divides by the ink itself, every family joins with blur_ink.
    assert r["scores"]["ink_power"] == ba.PROTOCOLS["mnist"]["ink_power"] == 1.0
    assert r["ensemble"]["members"] == {f: ["blur_ink"] for f in ("fcn", "conv", "vae")}
    assert ba.PROTOCOLS["fashion-mnist"]["ink_power"] == 0.5
    # One progress line per (class, family), with its seconds, plus the ensemble lines.
    fam_lines = [line for line in r["_log"] if line.rstrip().endswith("s") and "latent" in line]
    assert len(fam_lines) == 6
    json.dumps({k: v for k, v in r.items() if k != "_log"})  # JSON-friendly


def test_the_headline_is_the_protocols_validated_score_not_the_best_test_figure() -> None:
    fashion = ba.PROTOCOLS["fashion-mnist"]
    assert fashion["headline"] == "conv/latent_knn+seeds" and ba.PROTOCOLS["mnist"]["headline"] == "ensemble"
    members = fashion["ensemble"]
    summary = {"conv/latent_knn": 0.90, "conv/latent_knn+seeds": 0.91, "fcn/l2": 0.99, "ensemble": 0.95}
    assert ba.headline_of(fashion, summary, ("fcn", "conv"), members) == "conv/latent_knn+seeds"
    one_seed = {k: v for k, v in summary.items() if not k.endswith("+seeds")}
    assert ba.headline_of(fashion, one_seed, ("fcn", "conv"), members) == "conv/latent_knn"
    # a run without the headline's family falls back to the ensemble, else the first member score
    assert ba.headline_of(fashion, {"fcn/blur_ink": 0.9, "ensemble": 0.8}, ("fcn",), members) == "ensemble"
    assert ba.headline_of(fashion, {"fcn/blur_ink": 0.9}, ("fcn",), members) == "fcn/blur_ink"


def test_quick_mode_is_quick(quick_result: dict) -> None:
    assert quick_result["seconds"] < 30


@pytest.mark.slow
def test_easy_case_digit_one_is_well_separated(data_root) -> None:
    r = ba.run("mnist", data_root, families=("fcn",), epochs=2, classes=[1], log=lambda _: None)
    assert r["data"]["source"] == "local"
    assert r["classes"] == [1] and r["train_configs"]["fcn"]["epochs"] == 2
    assert r["auc"]["fcn/l2"]["mean"] > 0.9
    assert r["auc"]["fcn/latent"]["mean"] > 0.9


def test_seed_ensembles_and_write_result(tmp_path) -> None:
    r = ba.run("mnist", tmp_path, families=("fcn",), seeds=(0, 1), classes=[0], quick=True,
               log=lambda _: None)
    assert "fcn/l2+seeds" in r["auc"] and "ensemble" in r["auc"]  # two seeds -> ensembles
    assert set(r["per_seed_mean"]["fcn/l2"]) == {"0", "1"}
    path = ba.write_result(r, tmp_path / "out")
    assert path.name == "anomaly-mnist-quick.json"
    assert json.loads(path.read_text())["summary"] == r["summary"]


def test_model_scores_match_the_library_scores(mnist_small) -> None:
    train, test = mnist_small
    images = test.images[:64]
    for family in ("fcn", "vae"):
        model = build(get_config(family, (1, 28, 28)), seed=0)
        beta = 1e-3 if family == "vae" else None
        fit(model, train.images[:128], config=TrainConfig(epochs=1, threads=1, beta=beta))
        mine = ba.model_scores(model, images, train.images[:128], beta=beta, batch_size=25)
        metrics = ("l2", "mae", "elbo") if family == "vae" else ("l2", "mae")
        ref = reconstruction_errors(model, images, metrics, beta=beta)
        for m in metrics:
            np.testing.assert_allclose(mine[m], ref[m], rtol=1e-5, atol=1e-8)
        assert all(len(v) == 64 and np.isfinite(v).all() for v in mine.values())
        assert (mine["latent"] >= 0).all()


def test_blur_ink_favours_inky_images_less_than_raw_errors() -> None:
    # Same error map, twice the ink: blur_ink shrinks by sqrt(2), blur is unchanged.
    class Zero(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = get_config("fcn", (1, 8, 8))

        def forward(self, x):
            return torch.zeros_like(x)

    a = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    a[0, 0, 2:4, 2:4] = 255
    a[1, 0, 2:4, 2:4] = 255
    a[1, 0, 5:7, 5:7] = 255
    s = ba.model_scores(Zero(), a)
    assert s["l2"][1] == pytest.approx(s["l2"][0] * np.sqrt(2))
    ratio_blur = s["blur"][1] ** 2 / s["blur"][0] ** 2
    ratio_ink = s["blur_ink"][1] / s["blur_ink"][0]
    assert ratio_ink == pytest.approx(ratio_blur / np.sqrt(2), rel=1e-3)


def test_latent_gaussian_is_a_mahalanobis_distance() -> None:
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    z = torch.randn(5000, 3, generator=g, dtype=torch.float64) * scale
    gauss = ba.LatentGaussian(z)
    d = gauss(torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 0.5]], dtype=torch.float64))
    np.testing.assert_allclose(d, [1.0, 1.0], rtol=0.1)


def test_cli_helpers() -> None:
    assert ba.int_list("0-9") == list(range(10))
    assert ba.int_list("1") == [1] and ba.int_list("0,3,5") == [0, 3, 5] and ba.int_list([2, 4]) == [2, 4]
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")  # a shared option the caller already has
    ba.add_arguments(parser)
    args = parser.parse_args(["--dataset", "fashion-mnist", "--classes", "1,2", "--quick"])
    assert args.dataset == "fashion-mnist" and args.seeds == "0,1,2" and args.threads == 1
    assert args.classes == "1,2" and args.quick and args.epochs is None
    with pytest.raises(ValueError):
        ba.run("cifar", None)
    with pytest.raises(ValueError):
        ba.run("mnist", None, families=("gan",))


def test_protocol_configs_record_overrides() -> None:
    models, trains = ba.protocol_configs("fashion-mnist", ("conv", "vae"), epochs=3, lr=5e-4)
    assert models["conv"].latent == 64 and models["conv"].hidden == (16, 32, 64)
    assert trains["conv"].epochs == 3 and trains["vae"].lr == 5e-4 and trains["vae"].beta == 1e-3
    assert trains["conv"].threads == 1
