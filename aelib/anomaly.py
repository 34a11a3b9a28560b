"""The recommended anomaly detector: a validated recipe per kind of image, trained and fitted.

:func:`recommended_recipe` picks the models, training settings and scores for an image shape
(greyscale 28x28 like MNIST, 64x64 colour like the faces set, a fallback otherwise);
:func:`train_detector` trains every member on the normal images and returns a fitted
:class:`aelib.scoring.EnsembleDetector`. The Anomaly page's background job and
``python -m aelib detect`` both call these two functions.

The greyscale recipe is the one-class benchmark's (:mod:`aelib.bench_anomaly`) settings, chosen on
its validation split: a fully connected autoencoder scored by ``blur_ink`` plus a convolutional
one scored by ``latent``, averaged as z-scores, one seed each.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .detectors import AnomalyDetector, EnsembleDetector
from .errors import ConfigError, DataError
from .models import ModelConfig, build, get_config
from .scoring import SCORES, ImagesLike, as_image_tensor
from .train import Callback, StopFlag, TrainConfig, fit

GREY_28 = (1, 28, 28)
COLOUR_64 = (3, 64, 64)


@dataclass(frozen=True)
class Member:
    """One model of a recipe: its architecture, how it trains, and the score it contributes."""

    model: ModelConfig
    train: TrainConfig
    score: str
    step_cost: float = 1.0  # seconds per step relative to the other members: for the estimate only

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "train": self.train.to_dict(), "score": self.score}


@dataclass(frozen=True)
class Recipe:
    """What :func:`train_detector` trains. ``max_images``: at most this many normal images are used
    (a seeded random subset beyond that), which bounds the training time."""

    name: str
    members: tuple[Member, ...]
    max_images: int
    description: str
    notes: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "members": [m.to_dict() for m in self.members],
                "max_images": self.max_images, "description": self.description, "notes": dict(self.notes)}


def _epochs_for(n: int, batch_size: int, steps: int, lo: int, hi: int) -> int:
    """Epochs that give about ``steps`` optimiser steps on ``n`` images, within [lo, hi]."""
    return int(min(hi, max(lo, round(steps * batch_size / max(n, 1)))))


def _grey_28(n: int, threads: int | None) -> Recipe:
    # The benchmark's two settings: 800 images (MNIST) train at batch 32 for 40 epochs, 6,000
    # (Fashion-MNIST) at batch 128 for 10 (conv) / 20 (fcn) epochs; in between, the step count.
    fcn = ModelConfig("fcn", GREY_28, latent=32, hidden=(256, 128), init="glorot")
    conv = ModelConfig("conv", GREY_28, latent=64, hidden=(16, 32, 64))
    if n <= 2000:
        batch, fcn_epochs, conv_epochs = 32, 40, 40
    else:
        batch = 128
        fcn_epochs = _epochs_for(n, batch, 940, 5, 40)
        conv_epochs = _epochs_for(n, batch, 470, 3, 40)
    common = dict(batch_size=batch, lr=1e-3, schedule="onecycle", threads=threads)
    members = (Member(fcn, TrainConfig(epochs=fcn_epochs, **common), "blur_ink"),
               Member(conv, TrainConfig(epochs=conv_epochs, **common), "latent"))
    return Recipe("grey-28", members, 6000,
                  "fully connected AE scored by ink-normalised blurred error + conv AE scored by latent "
                  "Mahalanobis distance, z-score average (the one-class benchmark's validated settings)")


def _fallback(in_shape: tuple[int, int, int], n: int, threads: int | None) -> Recipe:
    conv = get_config("conv", in_shape).replace(latent=64)
    batch = 32 if n <= 2000 else 128
    tcfg = TrainConfig(epochs=_epochs_for(n, batch, 1000, 3, 40), batch_size=batch, lr=1e-3,
                       schedule="onecycle", threads=threads)
    return Recipe("generic", (Member(conv, tcfg, "latent"),), 6000,
                  "conv AE (latent 64) scored by latent Mahalanobis distance, about 1,000 one-cycle steps; "
                  "not tuned for this image shape")


def _colour_64(n: int, threads: int | None) -> Recipe:
    # Chosen on the validation split of bench/make_colour_case.py (photo crops vs drawings, text,
    # noise and gradients; bench/results/anomaly-colour.json): the latent distance ranks simple
    # images as normal there, the ink-normalised blurred error does not, and the face_conv layout
    # beat a fully connected model. About 470 steps: trained longer, a model learns to reconstruct
    # the anomalies too.
    conv = get_config("face_conv")
    tcfg = TrainConfig(epochs=_epochs_for(n, 64, 470, 3, 40), batch_size=64, lr=1e-3, schedule="onecycle",
                       threads=threads)
    return Recipe("colour-64", (Member(conv, tcfg, "blur_ink"),), 6000,
                  "the face_conv layout (exact, pixels in [-1, 1]) trained with one-cycle Adam for about 470 "
                  "steps of 64 and scored by the ink-normalised blurred error; the face_conv preset as the "
                  "Training page runs it uses a constant learning rate and the L2 score")


def recommended_recipe(in_shape: Sequence[int], n_images: int | None = None,
                       threads: int | None = 1) -> Recipe:
    """The recommended recipe for images of ``in_shape`` (C, H, W), given ``n_images`` normal images.

    ``n_images`` (default: the recipe's ``max_images``) sets the epochs so the number of steps stays
    what was validated. ``threads``: torch threads for training (1, the benchmarks' setting).
    """
    shape = tuple(int(v) for v in in_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"in_shape must be (C, H, W), got {tuple(in_shape)}.")
    if shape == GREY_28:
        recipe = _grey_28(6000, threads)
    elif shape == COLOUR_64:
        recipe = _colour_64(6000, threads)
    else:
        recipe = _fallback(shape, 6000, threads)
    n = recipe.max_images if n_images is None else min(int(n_images), recipe.max_images)
    if n < 1:
        raise DataError("The recommended detector needs at least one normal image.")
    if shape == GREY_28:
        return _grey_28(n, threads)
    if shape == COLOUR_64:
        return _colour_64(n, threads)
    return _fallback(shape, n, threads)


# --------------------------------------------------------------------------------------------
# Training


Progress = Callable[[dict], None]


class _ProgressCallback(Callback):
    """Turns ``fit``'s callbacks into one ``progress(dict)`` over all members, with an estimate."""

    def __init__(self, progress: Progress, weights: list[float], index: int, t0: float, every: int):
        self.progress, self.weights, self.index, self.t0, self.every = progress, weights, index, t0, every

    def on_train_begin(self, total_epochs: int, steps_per_epoch: int) -> None:
        self.total = total_epochs * steps_per_epoch
        self.steps_per_epoch = steps_per_epoch
        self._emit(0, 0, None)

    def on_batch_end(self, epoch: int, step: int, steps_per_epoch: int, loss: float) -> None:
        done = (epoch - 1) * steps_per_epoch + step + 1
        if done % self.every == 0:
            self._emit(done, epoch, loss)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self._emit(epoch * self.steps_per_epoch, epoch, logs.get("train_loss"))

    def _emit(self, done: int, epoch: int, loss: float | None) -> None:
        w = self.weights
        frac = (sum(w[:self.index]) + w[self.index] * min(done / max(self.total, 1), 1.0)) / sum(w)
        seconds = time.perf_counter() - self.t0
        eta = seconds * (1 - frac) / frac if frac > 0.02 else None
        self.progress({"stage": "train", "member": self.index, "members": len(w), "epoch": epoch,
                       "step": done, "steps": self.total, "loss": loss, "fraction": frac,
                       "seconds": seconds, "eta_s": eta})


def subset_indices(n: int, max_images: int, seed: int = 0) -> torch.Tensor | None:
    """The sorted indices of the seeded random subset :func:`train_detector` trains on (None: all).

    A caller holding a memory-mapped file can read just these rows instead of the whole array.
    """
    if n <= max_images:
        return None
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:max_images].sort().values


def normal_subset(images: torch.Tensor, max_images: int, seed: int = 0) -> torch.Tensor:
    """At most ``max_images`` of the normal images: the seeded subset, in their original order."""
    idx = subset_indices(len(images), max_images, seed)
    return images if idx is None else images[idx]


def train_detector(images: ImagesLike, recipe: Recipe | None = None, seed: int = 0,
                   progress: Progress | None = None, stop: StopFlag = None, contamination: float = 0.1,
                   device: str = "auto") -> EnsembleDetector | None:
    """Train ``recipe`` (default: :func:`recommended_recipe` for the images) on normal images and
    return the fitted :class:`EnsembleDetector` (its ``detectors[i].model`` are the trained models).

    ``images``: normal uint8 images (N, C, H, W), channels-last and NumPy accepted; beyond the
    recipe's ``max_images`` a seeded random subset is used. ``progress(dict)`` is called during
    training (keys ``stage``, ``member``, ``members``, ``epoch``, ``fraction`` in [0, 1],
    ``seconds``, ``eta_s``: seconds left, None until 2% is done) and once with stage ``"fit"``
    when the trained models start scoring the normal images (about one forward pass per member).
    ``stop``: a ``threading.Event`` or callable; when it fires, training ends and None is returned.
    The detector also carries ``recipe_`` (the recipe as trained) and ``seconds_``.
    """
    t0 = time.perf_counter()
    first = images.images if hasattr(images, "images") else images
    shape = _shape_of(first)
    data = as_image_tensor(images, shape)
    if recipe is None:
        recipe = recommended_recipe(shape, len(data))
    if len(data) == 0:
        raise DataError("The recommended detector needs at least one normal image.")
    for m in recipe.members:
        if tuple(m.model.in_shape) != shape:
            raise DataError(f"The recipe is for images of shape {tuple(m.model.in_shape)}, "
                            f"these are {shape}.")
        if m.score not in SCORES:
            raise ConfigError(f"Unknown score {m.score!r} in the recipe; choose from {tuple(SCORES)}.")
    data = normal_subset(data, recipe.max_images, seed)
    if not data.is_contiguous():
        data = data.contiguous()
    models = [build(m.model, seed=seed) for m in recipe.members]
    weights = [m.step_cost * m.train.epochs * math.ceil(len(data) / m.train.batch_size)
               for m in recipe.members]
    detectors = []
    for i, (m, model) in enumerate(zip(recipe.members, models)):
        tcfg = TrainConfig(**{**m.train.to_dict(), "seed": seed, "device": device})
        callbacks = [_ProgressCallback(progress, weights, i, t0, 10)] if progress else []
        result = fit(model, data, config=tcfg, callbacks=callbacks, stop=stop)
        if result.reason == "stopped":
            return None
        model.cpu()
        beta = result.config.beta if m.model.family == "vae" else None
        detectors.append(AnomalyDetector(model, score=m.score, contamination=contamination, beta=beta))
    if progress:
        progress({"stage": "fit", "member": len(models) - 1, "members": len(models), "fraction": 1.0,
                  "seconds": time.perf_counter() - t0, "eta_s": None})
    det = EnsembleDetector(detectors, contamination=contamination).fit(data)
    det.recipe_ = recipe
    det.seconds_ = time.perf_counter() - t0
    return det


def _shape_of(images) -> tuple[int, int, int]:
    """(C, H, W) of uint8 images given as (N, C, H, W), (N, H, W, C) with C in {1, 3}, or (N, H, W)."""
    shape = tuple(int(v) for v in getattr(images, "shape", ()))
    if len(shape) == 3:
        return (1, shape[1], shape[2])
    if len(shape) == 4:
        if shape[1] in (1, 3):
            return (shape[1], shape[2], shape[3])
        if shape[3] in (1, 3):
            return (shape[3], shape[1], shape[2])
    raise DataError(f"Expected images of shape (N, C, H, W) or (N, H, W, C), got {shape}.")

