"""Training configurations in one place: the Keras recipe, its fast mode, and the starting values
that the CLI and the Training page use.

``default_train_config(arch)`` is what a user gets before touching a field; ``quick_oneclass``
is a small one-class recipe (the Anomaly page's one-click model until the recommended detector of
:mod:`aelib.anomaly` replaced it there). ``bench/defaults.py`` checks both on every seed.
"""

from __future__ import annotations

import math
from dataclasses import replace

from .errors import ConfigError
from .models import DEFAULTS, PRESETS, ModelConfig, get_config
from .train import TrainConfig

# The fast mode's one-cycle shape: half the steps warming up from lr/10, then annealing to lr/10^4,
# with beta2 0.99 (bench/tune_fast.py; README "Fast mode"). On a 10k Fashion-MNIST subset (4 epochs,
# batch 64, peak 3e-3, 2 seeds) it also beat TrainConfig's one-cycle defaults for conv (0.0154 vs
# 0.0158), vae (0.0229 vs 0.0238) and fcn (0.0174 vs 0.0177). The shipped checkpoints and the
# README's figures were made with those TrainConfig defaults (warm-up 0.25 from lr/25); they are
# still what `--schedule onecycle` gives a model whose default schedule is constant.
ONE_CYCLE = {"schedule": "onecycle", "warmup": 0.5, "div_factor": 10.0, "final_div_factor": 1000.0,
             "betas": (0.9, 0.99)}

# The seed's Keras recipe, and the fast mode that aims at the same validation MSE.
# Keras defaults otherwise, Adam's epsilon included (1e-7; torch's is 1e-8).
RECIPE = TrainConfig(epochs=12, batch_size=300, lr=1.5e-3, eps=1e-7)
RECIPE_TARGET_MSE = 0.0137

# The recipe's 12 epochs at batch 300 were made for MNIST's 60,000 training images; on far fewer
# they make too few updates to get far from the mean image. Below KERAS_IMAGES the preset starts
# from smaller batches and a one-cycle peak instead, at about the recipe's time (figures:
# bench/defaults.py, README "Starting values").
KERAS_IMAGES = 50_000
KERAS_SMALL_DATA = TrainConfig(epochs=8, batch_size=64, lr=1e-2, **ONE_CYCLE)


def fast_config(target: float | None = RECIPE_TARGET_MSE) -> TrainConfig:
    """aelib's fast mode for the MNIST recipe model (tuned in bench; see README)."""
    # Smaller batches learn more per image seen; a one-cycle schedule (half the run warming up
    # from lr/10, then annealing to lr/10^4) lets the peak rate be ~7x the recipe's. Chosen on
    # seeds 10-14 (all at or below 0.0131 after 3 epochs), so the benchmark's seeds 0-4 are
    # held out; grids and their results in README "Fast mode".
    return TrainConfig(epochs=3, batch_size=80, lr=1e-2, target_val_mse=target, **ONE_CYCLE)


# What the fast mode sets; data, seed, loss, noise, threads and device stay the caller's.
FAST_FIELDS = ("epochs", "batch_size", "lr", "schedule", "warmup", "div_factor", "final_div_factor", "betas")


def with_fast_mode(cfg: TrainConfig, arch: str = "mnist_keras") -> TrainConfig:
    """``cfg`` with the fast mode's schedule for ``arch`` (the CLI's ``--fast``, the Training
    page's toggle): :func:`fast_config` for the Keras recipe, :data:`VAE_FAST` for the VAE family."""
    fast = VAE_FAST if arch == "vae" else fast_config(target=None)
    return replace(cfg, **{k: getattr(fast, k) for k in FAST_FIELDS})


# The models a fast mode was tuned for.
FAST_ARCHS = ("mnist_keras", "vae")


# A family's starting values, with the fast mode's one-cycle shape: annealing to ~0 leaves far
# less seed-to-seed spread at the end than a constant rate, and the warm-up lets the peak be 3x
# the old constant 1e-3. The VAE learns more per image at batch 64 (MNIST 8k, 10 epochs: val MSE
# 0.019 vs 0.022 at 128), so it takes 8 epochs of those instead of 10 at 128.
FAMILY_TRAINING = {
    "fcn": TrainConfig(epochs=10, batch_size=128, lr=3e-3, **ONE_CYCLE),
    "conv": TrainConfig(epochs=10, batch_size=128, lr=3e-3, **ONE_CYCLE),
    "vae": TrainConfig(epochs=8, batch_size=64, lr=3e-3, **ONE_CYCLE),
}
# The family VAE's fast mode: the whole one-cycle schedule in one epoch, at batch 48 and a 5e-3
# peak (more updates, and a higher peak, than the default's 64 and 3e-3 fit in one epoch). On
# Fashion-MNIST's 60,000 images, seeds 0-4 end at val MSE 0.0198-0.0204, below pythae's VAE
# after 20 epochs (README "The VAE against pythae"); tuned for sets of that size.
VAE_FAST = TrainConfig(epochs=1, batch_size=48, lr=5e-3, **ONE_CYCLE)


# face_vae's starting batch and KL weight (times 1/pixels); see default_train_config.
FACE_VAE_BATCH = 32
FACE_VAE_BETA_PER_PIXEL = 0.1


# The smallest training sets the defaults were checked on, seeds 0-4: the bundled 3,000-image
# MNIST sample, and 3,000 colour images for the face presets. On 1,000 MNIST images the families'
# 10 epochs of batch 128 are 80 updates, and conv, vae and fcn ended at or above the mean image on
# most seeds; face_conv on 300 colour images (50 updates) ended at 0.56-0.76 of it. Below this size
# a model's start keeps the updates it makes on SMALL_SET images: a smaller batch first (down to
# MIN_BATCH), then more epochs. mnist_keras has its own small-data start (KERAS_SMALL_DATA).
SMALL_SET = 3000
MIN_BATCH = 16
MAX_EPOCHS = 500  # the Training page's Epochs field; only a set of a few images would need more


def small_set_start(arch: str, n_images: int | None) -> bool:
    """Whether ``arch`` on ``n_images`` training images starts from its small-set values."""
    return arch != "mnist_keras" and n_images is not None and n_images < SMALL_SET


def _small_set(cfg: TrainConfig, n_images: int) -> TrainConfig:
    steps = cfg.epochs * math.ceil(SMALL_SET / cfg.batch_size)
    batch = min(cfg.batch_size, max(MIN_BATCH, math.ceil(cfg.batch_size * n_images / SMALL_SET)))
    per_epoch = math.ceil(n_images / batch)
    epochs = min(MAX_EPOCHS, max(cfg.epochs, math.ceil(steps / per_epoch)))
    return replace(cfg, batch_size=batch, epochs=epochs)


def keras_small_data(arch: str, n_images: int | None) -> bool:
    """Whether ``arch`` on ``n_images`` training images starts from KERAS_SMALL_DATA."""
    return arch == "mnist_keras" and n_images is not None and n_images < KERAS_IMAGES


def default_train_config(arch: str, n_images: int | None = None) -> TrainConfig:
    """Starting values for training ``arch`` (a family "fcn" / "conv" / "vae" or a preset name)
    on ``n_images`` training images (None: as many as the model was made for).

    The CLI's ``train`` and the Training page both start from these; ``mnist_keras`` gets the
    Keras recipe it reproduces (KERAS_SMALL_DATA on fewer than KERAS_IMAGES); face_vae the VAE
    family's schedule at batch 32 with a tenth of the per-pixel KL weight; face_fcn and face_conv
    keep TrainConfig's constant rate (on a short run, the one-cycle warm-up left face_conv
    worse), face_conv at batch 64.
    """
    if arch == "mnist_keras":
        return replace(KERAS_SMALL_DATA if keras_small_data(arch, n_images) else RECIPE)
    cfg = full_set_start(arch)
    return _small_set(cfg, n_images) if small_set_start(arch, n_images) else cfg


def full_set_start(arch: str) -> TrainConfig:
    """``arch``'s starting values on SMALL_SET images or more (not mnist_keras: see RECIPE)."""
    if arch in DEFAULTS:
        return replace(FAMILY_TRAINING[arch])
    if arch == "face_vae":
        # The reference's KL weight 1 with its ReLU heads (mu >= 0, variance >= 1) leaves the
        # preset at the mean image. Its KL is a sum over a 48x8x8 latent map, 192 times the family
        # VAE's 16 dims, so even the per-pixel weight 1/pixels holds mu down against the fixed unit
        # noise and some seeds sit far above the rest for most of the run; a tenth of it, at batch
        # 32 (more updates in the same time), learns evenly across seeds (README "Starting values").
        # Beta 1 on the Training page, or --beta 1, trains it as the reference did.
        return replace(FAMILY_TRAINING["vae"], batch_size=FACE_VAE_BATCH,
                       beta=FACE_VAE_BETA_PER_PIXEL / PRESETS[arch].n_pixels)
    if arch == "face_conv":
        # At batch 128 ten epochs are too few updates on a few thousand images: still falling fast
        # at the end, and 1.7x apart across seeds. Batch 64 costs the same time per epoch here.
        return TrainConfig(batch_size=64)
    if arch in PRESETS:
        return TrainConfig()
    raise ConfigError(f"Unknown model {arch!r}; expected a family {tuple(DEFAULTS)} "
                      f"or a preset {tuple(PRESETS)}.")


_SHAPE_FIELDS = ("warmup", "div_factor", "final_div_factor", "betas")


def train_config_for(arch: str, n_images: int | None = None, **changes) -> TrainConfig:
    """``default_train_config(arch, n_images)`` with the fields a user set (None: keep the default).

    A ``schedule`` other than the default's comes with TrainConfig's shape for it (warm-up,
    divisors, Adam betas), so ``schedule="constant"`` is the plain constant rate and
    ``"onecycle"`` on the Keras recipe means what ``--schedule onecycle`` always meant.
    """
    cfg = default_train_config(arch, n_images)
    changes = {k: v for k, v in changes.items() if v is not None}
    if changes.get("schedule", cfg.schedule) != cfg.schedule:
        plain = TrainConfig()
        for k in _SHAPE_FIELDS:
            changes.setdefault(k, getattr(plain, k))
    return replace(cfg, **changes)


# The quick one-class model: a fixed budget of images seen (6,000 images x 8 epochs, the budget it
# always had), so a class with fewer images gets more epochs instead of too few steps to learn.
QUICK_IMAGES = 6000
QUICK_BUDGET = QUICK_IMAGES * 8


def quick_oneclass(in_shape: tuple[int, int, int], n_available: int | None = None
                   ) -> tuple[ModelConfig, TrainConfig, int]:
    """(model, training, images to use) for a small one-click one-class model.

    ``n_available`` is the number of normal training images on offer (None: as many as wanted);
    the model trains on the first ``images`` of them.
    """
    if n_available is not None and n_available < 1:
        raise ConfigError("A one-class model needs at least one training image of the normal classes.")
    images = QUICK_IMAGES if n_available is None else min(n_available, QUICK_IMAGES)
    epochs = max(1, math.ceil(QUICK_BUDGET / images))
    model = get_config("conv", in_shape=tuple(in_shape), latent=32)
    return model, TrainConfig(epochs=epochs, batch_size=128, lr=3e-3, **ONE_CYCLE), images
