"""aelib.recipes: the starting values every entry point shares, and that they learn on every seed."""

from __future__ import annotations

from dataclasses import replace

import pytest

from aelib.errors import ConfigError
from aelib.models import DEFAULTS, PRESETS, build, get_config
from aelib.recipes import (
    KERAS_IMAGES,
    KERAS_SMALL_DATA,
    MAX_EPOCHS,
    QUICK_BUDGET,
    QUICK_IMAGES,
    RECIPE,
    SMALL_SET,
    default_train_config,
    fast_config,
    quick_oneclass,
    train_config_for,
    with_fast_mode,
)
from aelib.train import TrainConfig, fit


@pytest.mark.parametrize("arch", [*DEFAULTS, *PRESETS])
def test_every_model_has_valid_starting_values(arch):
    cfg = default_train_config(arch)
    cfg.validate()
    if arch == "mnist_keras":
        assert cfg == RECIPE
    elif arch == "face_vae":  # the VAE family's schedule at batch 32, a tenth of the per-pixel KL weight
        assert cfg == replace(default_train_config("vae"), batch_size=32, beta=0.1 / (3 * 64 * 64))
        assert cfg.beta < 1  # not the reference's 1
    elif arch == "face_conv":  # TrainConfig's constant 1e-3, at batch 64
        assert cfg == TrainConfig(batch_size=64)
    elif arch in PRESETS:
        assert cfg == TrainConfig()
    else:
        assert cfg.schedule == "onecycle" and cfg.warmup == 0.5
    assert default_train_config(arch) is not default_train_config(arch)  # callers may mutate theirs


def test_user_choices_on_top_of_the_defaults():
    cfg = train_config_for("conv", epochs=3, lr=None, seed=5)
    assert (cfg.epochs, cfg.lr, cfg.seed, cfg.warmup) == (3, default_train_config("conv").lr, 5, 0.5)
    plain = train_config_for("conv", schedule="constant")  # the plain constant rate, beta2 0.999
    assert (plain.schedule, plain.betas, plain.warmup) == ("constant", (0.9, 0.999), 0.25)
    keras = train_config_for("mnist_keras", schedule="onecycle")
    assert (keras.batch_size, keras.warmup, keras.div_factor) == (300, 0.25, 25.0)
    same = train_config_for("vae", schedule="onecycle")
    assert same == default_train_config("vae")


@pytest.mark.parametrize("n_images,expected", [
    (None, RECIPE), (60_000, RECIPE), (KERAS_IMAGES, RECIPE),
    (KERAS_IMAGES - 1, KERAS_SMALL_DATA), (8000, KERAS_SMALL_DATA)])
def test_keras_preset_starts_from_the_recipe_only_on_data_of_its_size(n_images, expected):
    assert default_train_config("mnist_keras", n_images) == expected
    assert default_train_config("conv", n_images) == default_train_config("conv")  # others: no change


def test_unknown_model_is_a_config_error():
    with pytest.raises(ConfigError, match="Unknown model"):
        default_train_config("resnet")


def test_fast_mode_replaces_only_its_fields():
    base = TrainConfig(seed=7, noise="mask", noise_level=0.2, epochs=40)
    fast = with_fast_mode(base)
    ref = fast_config(target=None)
    assert (fast.epochs, fast.batch_size, fast.lr, fast.schedule, fast.betas) == \
        (ref.epochs, ref.batch_size, ref.lr, ref.schedule, ref.betas)
    assert (fast.seed, fast.noise, fast.noise_level) == (7, "mask", 0.2)


@pytest.mark.parametrize("available,images", [(None, QUICK_IMAGES), (60_000, QUICK_IMAGES),
                                              (6000, 6000), (927, 927), (1, 1)])
def test_quick_oneclass_keeps_its_budget_of_images_seen(available, images):
    model, tc, n = quick_oneclass((1, 28, 28), available)
    assert n == images and model.family == "conv" and model.latent == 32 and model.init == "he"
    tc.validate()
    seen = tc.epochs * n
    assert QUICK_BUDGET <= seen < QUICK_BUDGET + n  # a small class gets more epochs, never less work


def test_quick_oneclass_needs_images():
    with pytest.raises(ConfigError, match="at least one"):
        quick_oneclass((1, 28, 28), 0)


def test_conv_defaults_learn_on_every_seed(mnist_small):
    """The default conv model and schedule (the quick one-class model's too), shortened to 5
    epochs at batch 32, on 1,000 real MNIST images: no seed plateaus at the mean image. With
    PyTorch's default init (the conv default before) the input all but vanishes from the output
    at init: here seeds 0 and 2 die in the first epoch (a blank output, val MSE = mean(x^2)) and
    seed 1 ends near the mean image, all three flagged as collapsed."""
    train, test = mnist_small
    for seed in range(3):
        model = build(get_config("conv", (1, 28, 28)), seed=seed)
        tc = replace(default_train_config("conv"), epochs=5, batch_size=32, seed=seed)
        h = fit(model, train.images, test.images, tc).history
        assert not h.collapsed, (seed, h.val_mse, h.mean_image_mse)
        assert h.val_mse[-1] < h.val_mse[0]


def test_the_vae_fast_mode_is_its_own_schedule_and_the_cli_uses_it(tmp_path, capsys):
    import numpy as np

    from aelib import checkpoints
    from aelib.cli import main
    from aelib.recipes import VAE_FAST

    base = TrainConfig(seed=5, epochs=40)
    fast = with_fast_mode(base, "vae")
    assert (fast.epochs, fast.batch_size, fast.lr, fast.schedule, fast.seed) == \
        (VAE_FAST.epochs, VAE_FAST.batch_size, VAE_FAST.lr, "onecycle", 5)
    assert with_fast_mode(base, "vae") != with_fast_mode(base)  # not the Keras recipe's
    npy = tmp_path / "grey.npy"
    np.save(npy, np.random.default_rng(0).integers(0, 255, (120, 28, 28), dtype=np.uint8))
    out = tmp_path / "vae.safetensors"
    assert main(["train", "--dataset", str(npy), "--model", "vae", "--fast", "--quiet",
                 "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "tuned for" not in said  # vae is a model --fast was tuned for...
    assert "too few updates to learn on every seed (leave out --fast)" in said  # ...on 60,000 images
    tc = checkpoints.load(out).meta["train"]
    assert (tc["epochs"], tc["batch_size"], tc["lr"]) == (VAE_FAST.epochs, VAE_FAST.batch_size, VAE_FAST.lr)


@pytest.mark.parametrize("family", [a for a in [*DEFAULTS, *PRESETS] if a != "mnist_keras"])
@pytest.mark.parametrize("n_images", [SMALL_SET - 1, 1000, 500, 200, 10, 1])
def test_on_a_small_set_a_family_keeps_the_updates_it_makes_on_the_smallest_checked_set(family, n_images):
    """10 epochs of batch 128 are 80 updates on 1,000 images: conv, vae and fcn ended at or above the
    mean image on most seeds there (face_conv on 300 colour images, 50 updates, at 0.56-0.76 of it).
    Below SMALL_SET the start keeps SMALL_SET's number of updates; the rest of it stays."""
    ref = default_train_config(family)
    assert default_train_config(family, SMALL_SET) == ref
    cfg = default_train_config(family, n_images)
    cfg.validate()
    updates = cfg.epochs * -(-n_images // min(cfg.batch_size, n_images))
    # as many updates, unless that would take more epochs than the page's field allows (500: a set
    # of a few images)
    assert updates >= ref.epochs * -(-SMALL_SET // ref.batch_size) or cfg.epochs == MAX_EPOCHS, cfg
    assert cfg.batch_size <= ref.batch_size and cfg.epochs <= MAX_EPOCHS == 500
    assert replace(cfg, epochs=ref.epochs, batch_size=ref.batch_size) == ref


def test_family_defaults_learn_on_a_small_set_on_every_seed(mnist_small):
    """The family defaults as they start on 500 real MNIST images: no seed ends near the mean image
    (before, on 1,000 images, 14 of 15 runs of seeds 0-4 were flagged as collapsed)."""
    train, test = mnist_small
    images = train.images[::2]  # 500, 50 per digit
    for family in DEFAULTS:
        for seed in range(2):
            model = build(get_config(family, (1, 28, 28)), seed=seed)
            tc = replace(default_train_config(family, len(images)), seed=seed)
            h = fit(model, images, test.images, tc).history
            assert not h.collapsed and h.val_mse[-1] < 0.7 * h.mean_image_mse[-1], (family, seed, h.val_mse)
