"""aelib.train.fit: lowers the loss, is deterministic, stops on request, survives divergence."""

from __future__ import annotations

import threading

import pytest
import torch

from aelib.errors import ConfigError, TrainingDiverged
from aelib.models import build, get_config
from aelib.train import (
    COLLAPSE_RATIO,
    Callback,
    History,
    TrainConfig,
    collapse_message,
    collapsed,
    corrupt,
    evaluate,
    fit,
    mean_image_mse,
)


@pytest.mark.parametrize("family", ["fcn", "conv", "vae"])
def test_short_training_lowers_validation_loss(mnist_small, family):
    train, test = mnist_small
    model = build(family, train.shape, seed=0)
    before = evaluate(model, test.images)["mse"]
    res = fit(model, train.images, test.images, TrainConfig(epochs=3, batch_size=64, lr=2e-3))
    h = res.history
    assert h.epoch == [1, 2, 3] and res.reason == "completed"
    assert h.val_mse[-1] < 0.75 * before
    assert h.train_loss[-1] < h.train_loss[0]
    assert all(s2 > s1 for s1, s2 in zip(h.seconds, h.seconds[1:]))
    assert not model.training  # fit leaves the model ready for inference


def test_training_is_deterministic_for_a_seed(mnist_small):
    train, test = mnist_small
    runs = []
    for _ in range(2):
        model = build("vae", train.shape, seed=1)
        res = fit(model, train.images[:300], test.images[:100], TrainConfig(epochs=2, batch_size=50, seed=7))
        runs.append((res.history.val_loss, [p.detach().clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    model = build("vae", train.shape, seed=1)
    other = fit(model, train.images[:300], test.images[:100], TrainConfig(epochs=2, batch_size=50, seed=8))
    assert other.history.val_loss != runs[0][0]


def test_stop_flag_ends_training_and_keeps_the_model(mnist_small):
    train, test = mnist_small
    stop = threading.Event()

    class StopAfter(Callback):
        def on_batch_end(self, epoch, step, steps, loss):
            if epoch == 2 and step == 3:
                stop.set()

    model = build("fcn", train.shape, seed=0)
    res = fit(model, train.images, test.images, TrainConfig(epochs=5, batch_size=100), [StopAfter()], stop)
    assert res.reason == "stopped" and len(res.history.epoch) < 5  # stopped before the last epoch
    assert res.history.epoch == [1]  # the interrupted epoch is not recorded as complete
    assert evaluate(model, test.images)["mse"] <= res.history.val_mse[0] * 1.5


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_weights(mnist_small):
    train, test = mnist_small
    model = build("fcn", train.shape, seed=0)
    fit(model, train.images, test.images, TrainConfig(epochs=1, batch_size=100))
    good = [p.detach().clone() for p in model.parameters()]

    class Poison(Callback):
        def on_batch_end(self, epoch, step, steps, loss):
            if epoch == 2 and step == 2:
                with torch.no_grad():
                    model.encoder[1].weight.fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match="learning rate") as info:
        fit(model, train.images, test.images, TrainConfig(epochs=3, batch_size=100, seed=1), [Poison()])
    assert info.value.history.epoch == [1]
    # Weights are those after the last completed epoch of this run, all finite.
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not all(torch.equal(p, q) for p, q in zip(model.parameters(), good))


def test_huge_learning_rate_diverges_cleanly(mnist_small):
    train, test = mnist_small
    model = build("vae", train.shape, seed=0)
    with pytest.raises(TrainingDiverged):
        fit(model, train.images, test.images, TrainConfig(epochs=3, batch_size=100, lr=1e6))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_target_val_mse_stops_early(mnist_small):
    train, test = mnist_small
    model = build("fcn", train.shape, seed=0)
    res = fit(model, train.images, test.images, TrainConfig(epochs=20, batch_size=50, target_val_mse=0.2))
    assert res.reason == "target reached" and len(res.history.epoch) < 20
    assert res.history.time_to(0.2) == res.history.seconds[-1]


def test_onecycle_and_bce_and_denoising(mnist_small):
    train, test = mnist_small
    model = build("conv", train.shape, seed=0)
    res = fit(model, train.images, test.images,
              TrainConfig(epochs=2, batch_size=64, lr=3e-3, schedule="onecycle", loss="bce",
                          noise="gaussian", noise_level=0.3))
    assert res.history.lr[-1] < 1e-4  # annealed to ~0 at the end of the cycle
    assert res.history.val_mse[-1] < res.history.val_mse[0] or res.history.val_mse[-1] < 0.06


def test_corrupt_keeps_range_and_masks_requested_fraction():
    x = torch.full((4, 1, 50, 50), 0.5)
    g = torch.Generator().manual_seed(0)
    noisy = corrupt(x, "gaussian", 0.5, (0.0, 1.0), g)
    assert noisy.min() >= 0 and noisy.max() <= 1 and not torch.equal(noisy, x)
    masked = corrupt(x, "mask", 0.2, (0.0, 1.0), g)
    changed = (masked != 0.5).float().mean().item()
    assert 0.17 < changed < 0.23
    assert torch.equal(x, torch.full((4, 1, 50, 50), 0.5))  # the clean target is untouched


def test_bad_inputs_are_rejected_with_clear_errors(mnist_small):
    train, _ = mnist_small
    model = build("fcn", train.shape)
    with pytest.raises(ConfigError, match="expects"):
        fit(model, torch.zeros(10, 1, 20, 20, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="uint8"):
        fit(model, train.images.float())
    with pytest.raises(ConfigError, match="epochs"):
        fit(model, train.images, config=TrainConfig(epochs=0))
    with pytest.raises(ConfigError, match="BCE"):
        fit(build("face_conv"), torch.zeros(4, 3, 64, 64, dtype=torch.uint8), config=TrainConfig(loss="bce"))


@pytest.mark.parametrize("output_range", ["unit", "symmetric"])
def test_mean_image_mse_is_the_mse_of_the_training_mean(output_range):
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (50, 2, 5, 3), dtype=torch.uint8, generator=g)
    val = torch.randint(0, 256, (20, 2, 5, 3), dtype=torch.uint8, generator=g)
    lo, hi = (0.0, 1.0) if output_range == "unit" else (-1.0, 1.0)
    to = lambda x: x.double() / 255 * (hi - lo) + lo  # noqa: E731
    expected = float(((to(val) - to(train).mean(0)) ** 2).mean())
    # pixels are float32 as the model sees them, sums float64: agreement to float32 rounding
    assert mean_image_mse(train, val, output_range, chunk=7) == pytest.approx(expected, rel=1e-6)


def test_collapse_is_not_clearly_below_the_mean_image():
    assert collapsed(0.0685, 0.0683) and collapsed(0.114, 0.0683)  # the mean image; a blank output
    assert collapsed(COLLAPSE_RATIO * 0.05, 0.05)
    assert not collapsed(0.7 * 0.05, 0.05) and not collapsed(0.0096, 0.0683)
    assert not History().collapsed  # nothing to judge
    assert not History(val_mse=[0.2], mean_image_mse=[float("nan")]).collapsed  # no validation set
    h = History(val_mse=[0.09, 0.0114], mean_image_mse=[0.0683, 0.0683])
    assert not h.collapsed
    h.val_mse.append(0.11419)
    h.mean_image_mse.append(0.0683)
    assert h.collapsed
    again = History.from_dict(h.to_dict())
    assert again.baseline == 0.0683 and again.collapsed
    assert History.from_dict({"epoch": [1], "val_mse": [0.2]}).baseline is None  # an older checkpoint
    text = collapse_message(0.11419, 0.0683)
    assert "0.11419" in text and "0.06830" in text and text.count(".") >= 1 and "\n" not in text
    # A user already at the defaults was told to try the defaults; a short run is told how short
    assert "default settings" not in text
    assert "after 48 training steps" in collapse_message(0.11419, 0.0683, 48) and "more epochs" in text
    assert "after 1 training step:" in collapse_message(0.11419, 0.0683, 1)  # one step, singular


def test_fit_records_the_mean_image_and_flags_a_dead_run(mnist_small):
    train, test = mnist_small
    model = build("conv", (1, 28, 28), seed=0)
    logs = []

    class Keep(Callback):
        def on_epoch_end(self, epoch, entry):
            logs.append(entry)

    # a learning rate too small to move anything: the output stays sigmoid(~0), above the mean
    h = fit(model, train.images[:256], test.images, TrainConfig(epochs=1, lr=1e-9),
            callbacks=[Keep()]).history
    assert h.baseline == pytest.approx(mean_image_mse(train.images[:256], test.images))
    assert logs[0]["mean_image_mse"] == h.baseline and len(h.mean_image_mse) == len(h.epoch)
    assert h.collapsed and h.val_mse[-1] > h.baseline
    h = fit(build("conv", (1, 28, 28)), train.images[:64], config=TrainConfig(epochs=1)).history
    assert h.baseline is None and not h.collapsed  # no validation set, no judgement


def test_one_cycle_on_a_run_too_short_to_warm_up_keeps_the_peak_rate(mnist_small):
    """Two steps in all leave no step for a warm-up phase: the run trains at lr instead of failing."""
    train, _ = mnist_small
    res = fit(build(get_config("fcn", (1, 28, 28), latent=4), seed=0), train.images[:200],
              config=TrainConfig(epochs=1, batch_size=128, lr=3e-3, schedule="onecycle", warmup=0.5))
    assert res.history.lr == [3e-3] and res.reason == "completed"


def test_default_threads_leave_the_busy_cores_alone(monkeypatch):
    import os

    from aelib.train import default_threads

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    monkeypatch.setattr(torch, "get_num_threads", lambda: cores)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert default_threads() == cores  # idle: torch's default
    monkeypatch.setattr(os, "getloadavg", lambda: (float(cores), 0.0, 0.0))
    assert default_threads() == 1  # every core busy: one thread, never more threads than cores
    monkeypatch.setattr(os, "getloadavg", lambda: (cores - 1.0, 0.0, 0.0))
    assert default_threads() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (cores + 5.0, 0.0, 0.0))
    assert default_threads() == 1
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert default_threads() == 1  # never above torch's own (OMP_NUM_THREADS, torchrun's 1)


def test_the_cli_picks_default_threads_when_none_are_given(monkeypatch, tmp_path):
    import os

    from aelib import cli

    seen = []
    monkeypatch.setattr(os, "getloadavg", lambda: (1e6, 0.0, 0.0))  # a machine with every core busy
    parser = cli.build_parser()
    args = parser.parse_args(["bench", "seed-recipe", "--data-root", str(tmp_path)])
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    monkeypatch.setattr(parser, "parse_args", lambda argv: args)
    args.func = lambda a: seen.append(a.threads) or 0
    old = torch.get_num_threads()
    try:
        assert cli.main([]) == 0
    finally:
        torch.set_num_threads(old)
    assert seen == [1]
