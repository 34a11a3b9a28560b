"""python -m aelib: help for every sub-command, and a tiny train -> evaluate -> export round."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aelib import checkpoints
from aelib.cli import main
from aelib.recipes import default_train_config

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("sub", [None, "train", "evaluate", "export", "bench", "bench seed-recipe",
                                 "bench vae", "bench anomaly"])
def test_help_for_every_subcommand(sub):
    args = [sys.executable, "-m", "aelib"] + (sub.split() if sub else []) + ["--help"]
    out = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage: python -m aelib" in out.stdout
    if sub == "train":
        assert "--latent" in out.stdout and "--normal-classes" in out.stdout


def _blobs(n: int, seed: int) -> np.ndarray:
    """Simple structured images (a bright square at a random place) so training has signal."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 16, 16, 3), np.uint8)
    for i, (r, c) in enumerate(rng.integers(0, 10, (n, 2))):
        x[i, r:r + 6, c:c + 6] = 220
    return x


def test_train_evaluate_export_on_a_user_array(tmp_path, capsys):
    npy = tmp_path / "faces.npy"
    np.save(npy, _blobs(200, 0))
    test_npy = tmp_path / "test.npy"
    np.save(test_npy, _blobs(30, 1))
    out = tmp_path / "model.safetensors"
    rc = main(["train", "--dataset", str(npy), "--model", "conv", "--epochs", "2", "--batch-size", "32",
               "--output-range", "symmetric", "--out", str(out), "--quiet", "--latent", "8"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed.count("epoch ") == 2 and "saved" in printed
    ck = checkpoints.load(out)
    assert ck.model.config.in_shape == (3, 16, 16) and ck.model.config.output_range == "symmetric"
    assert len(ck.meta["history"]["val_mse"]) == 2 and ck.meta["dataset"]["n_train"] == 180

    assert main(["evaluate", str(out), "--dataset", str(test_npy), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["n"] == 30 and report["mean_mse"] > 0 and report["mean_l2"] > report["mean_mse"]

    scores = tmp_path / "scores.csv"
    assert main(["export", str(out), "--dataset", str(test_npy), "--what", "scores",
                 "--out", str(scores)]) == 0
    df = pd.read_csv(scores)
    assert list(df.columns) == ["id", "score"] and len(df) == 30 and (df.score > 0).all()

    pred = tmp_path / "prediction.csv"
    assert main(["export", str(out), "--dataset", str(test_npy), "--limit", "5", "--out", str(pred)]) == 0
    df = pd.read_csv(pred)
    assert len(df) == 5 and df.columns[:3].tolist() == ["row_id", "orig_px0", "recon_px0"]
    assert df.shape[1] == 1 + 2 * 3 * 16 * 16
    assert df.filter(like="orig_px").min().min() >= -1 and df.filter(like="orig_px").max().max() <= 1


def test_fast_mode_trains_the_recipe_with_its_schedule(tmp_path, capsys):
    x = _blobs(300, 0)[:, :14, :14, 0]  # 300 grey 14x14 images
    npy = tmp_path / "grey.npy"
    np.save(npy, x)
    out = tmp_path / "fast.safetensors"
    assert main(["train", "--dataset", str(npy), "--model", "mnist_keras", "--fast", "--epochs", "50",
                 "--seed", "3", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("epoch ") == 3 and "tuned for" not in printed
    tc = checkpoints.load(out).meta["train"]
    assert (tc["epochs"], tc["batch_size"], tc["lr"], tc["schedule"], tc["warmup"], tc["seed"]) == \
        (3, 80, 0.01, "onecycle", 0.5, 3)
    assert main(["train", "--dataset", str(npy), "--model", "fcn", "--fast", "--quiet",
                 "--out", str(tmp_path / "other.safetensors")]) == 0
    assert "tuned for --model mnist_keras (the Keras recipe) and --model vae" in capsys.readouterr().out


def test_one_class_train_and_auc_evaluate(tmp_path, data_root, capsys):
    out = tmp_path / "oc.safetensors"
    assert main(["train", "--dataset", "mnist", "--data-root", str(data_root), "--no-download",
                 "--normal-classes", "1", "--model", "fcn", "--epochs", "2", "--quiet",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--dataset", "mnist", "--data-root", str(data_root), "--no-download",
                 "--normal-classes", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["auc_l2"] > 0.9  # digit 1 as normal separates easily even after 2 epochs


def test_a_checkpoint_named_after_its_data_gets_a_portable_file_name(tmp_path, data_root, monkeypatch):
    """Without --out the file was "runs/MNIST (normal: 1)-fcn-z32.safetensors": spaces, brackets and
    a colon, which is no file name on Windows."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", "mnist", "--data-root", str(data_root), "--no-download",
                 "--normal-classes", "1", "--model", "fcn", "--epochs", "1", "--quiet"]) == 0
    files = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(files) == 2 and all(re.fullmatch(r"MNIST-normal-1-fcn-z\d+\.(json|safetensors)", f)
                                   for f in files), files  # the checkpoint and its JSON sidecar


def test_user_errors_exit_2_with_a_message(tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 5), np.float32))
    assert main(["train", "--dataset", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err
    assert main(["evaluate", str(tmp_path / "nothing.safetensors")]) == 2
    assert "No checkpoint" in capsys.readouterr().err
    # detect's numbers are checked before anything is read or trained (a bad --contamination was
    # refused only after the detector had trained): the files here do not even exist
    for flag, value in (("--contamination", "5"), ("--contamination", "0"), ("--seed", "-1")):
        with pytest.raises(SystemExit) as exc:
            main(["detect", "--train", str(tmp_path / "none.npy"), "--test", str(tmp_path / "none.npy"),
                  "--out", str(tmp_path / "d.csv"), flag, value])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert flag in err and "none.npy" not in err, err


def test_bench_anomaly_writes_one_result_file_per_dataset(tmp_path, capsys, monkeypatch):
    from aelib import bench_anomaly

    fake = {"benchmark": "anomaly", "dataset": "fashion-mnist", "quick": False, "summary": {"ensemble": 0.5}}
    monkeypatch.setattr(bench_anomaly, "run_from_args", lambda args: dict(fake))
    assert main(["bench", "anomaly", "--dataset", "fashion-mnist", "--out-dir", str(tmp_path)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["anomaly-fashion-mnist.json"]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["dataset"] == "fashion-mnist"


def test_train_starts_from_the_models_defaults_and_warns_when_it_learned_nothing(tmp_path, capsys):
    npy = tmp_path / "blobs.npy"
    np.save(npy, _blobs(120, 0))
    out = tmp_path / "m.safetensors"
    assert main(["train", "--dataset", str(npy), "--model", "conv", "--epochs", "1", "--lr", "1e-9",
                 "--latent", "4", "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "warning: This run learned nothing image-specific" in captured.err
    tc = checkpoints.load(out).meta["train"]
    start = default_train_config("conv", 108)  # 120 images, the last 12 held out
    assert (tc["epochs"], tc["lr"], tc["batch_size"], tc["schedule"], tc["warmup"]) == \
        (1, 1e-9, start.batch_size, "onecycle", 0.5)  # the rest from aelib.recipes.default_train_config
    assert start.batch_size < 128 and "fewer than 3,000 training images" in captured.out
    assert main(["train", "--dataset", str(npy), "--model", "mnist_keras", "--output-range", "unit",
                 "--epochs", "1", "--schedule", "constant", "--out", str(out), "--quiet"]) == 0
    assert "instead of the Keras recipe" in capsys.readouterr().out  # a small set: said, not silent
    tc = checkpoints.load(out).meta["train"]
    assert (tc["batch_size"], tc["lr"], tc["schedule"], tc["betas"]) == (64, 1e-2, "constant", [0.9, 0.999])


def test_the_fast_recipe_process_imports_only_what_training_needs(tmp_path, data_root):
    """`train --fast` on Fashion-MNIST's raw files, in a fresh interpreter: no torchvision (the
    files are read directly), no scikit-learn / SciPy / pandas (the detectors' imports), no
    torch._dynamo (imported by torch's optimisers only to mark methods as not compilable)."""
    heavy = ("torchvision", "sklearn", "scipy", "pandas", "plotly", "torch._dynamo")
    argv = ["aelib", "train", "--model", "mnist_keras", "--fast", "--dataset", "fashion-mnist",
            "--data-root", str(data_root), "--no-download", "--quiet",
            "--out", str(tmp_path / "f.safetensors")]
    code = ("import runpy, sys\n"  # what `python -m aelib train ...` runs
            f"sys.argv = {argv!r}\n"
            "try:\n    runpy.run_module('aelib', run_name='__main__')\n"
            "except SystemExit as e:\n    rc = e.code\n"
            f"print(rc, sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "0 []"
    assert checkpoints.load(tmp_path / "f.safetensors").meta["metrics"]["test_mse"] < 0.05


def test_exported_elbo_scores_use_the_kl_weight_the_vae_was_trained_with(tmp_path, capsys):
    """The checkpoint says its KL weight under "train" (the page reads it there); the CLI's export
    looked under a key no checkpoint has, and scored every VAE with the default weight. ``train``'s
    test_elbo (printed and recorded) and ``evaluate``'s mean_elbo used the default weight too."""
    from aelib.scoring import model_scores

    npy, test_npy = tmp_path / "train.npy", tmp_path / "test.npy"
    np.save(npy, _blobs(120, 0)[..., 0])
    np.save(test_npy, _blobs(20, 1)[..., 0])
    out = tmp_path / "vae.safetensors"
    assert main(["train", "--dataset", str(npy), "--model", "vae", "--epochs", "1", "--batch-size", "32",
                 "--latent", "4", "--beta", "0.5", "--out", str(out), "--quiet"]) == 0
    ck = checkpoints.load(out)
    assert ck.meta["train"]["beta"] == 0.5
    scores = tmp_path / "elbo.csv"
    assert main(["export", str(out), "--dataset", str(test_npy), "--what", "scores", "--score", "elbo",
                 "--out", str(scores)]) == 0
    got = pd.read_csv(scores).score.to_numpy()
    from aelib.data import load_images
    images = load_images(str(test_npy))
    want = model_scores(ck.model, images, ["elbo"], beta=0.5)["elbo"]
    default = model_scores(ck.model, images, ["elbo"])["elbo"]
    assert not np.allclose(want, default)  # the weight matters here
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # train holds out the last 10% of train.npy for its test figures
    held = load_images(str(npy))[108:]
    held_elbo = float(model_scores(ck.model, held, ["elbo"], beta=0.5)["elbo"].mean())
    assert ck.meta["metrics"]["test_elbo"] == pytest.approx(held_elbo, rel=1e-5), ck.meta["metrics"]
    capsys.readouterr()
    assert main(["evaluate", str(out), "--dataset", str(test_npy), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["mean_elbo"] == pytest.approx(float(want.mean()), rel=1e-5), report
