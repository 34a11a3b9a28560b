"""One batched forward pass over resident uint8 images: eval mode, no gradients, mode restored.

Scoring, exploration, export and evaluation all walk a model over (N, C, H, W) uint8 images the
same way; this module is that walk, with no aelib imports beyond ``data.to_float`` so any module
can use it without an import cycle.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .data import to_float
from .errors import ConfigError

# progress(done, total, seconds_so_far): called after each batch.
Progress = Callable[[int, int, float], None]


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@contextmanager
def evaluating(model: nn.Module) -> Iterator[torch.device]:
    """Eval mode and no gradients inside; the previous mode back afterwards. Yields the device."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model_device(model)
    finally:
        model.train(was_training)


# Floats per batch when no batch size is given: 512 MNIST images, 170 of 64x64x3. Larger batches
# are no faster on a CPU, and every float of a batch costs a few more in activations.
AUTO_BATCH_FLOATS = 1 << 21


def auto_batch_size(model: nn.Module, batch_size: int | None = None) -> int:
    """``batch_size`` if given, else about :data:`AUTO_BATCH_FLOATS` input floats (16 to 512 images)."""
    if batch_size is not None:
        return batch_size
    return int(min(512, max(16, AUTO_BATCH_FLOATS // max(model.config.n_pixels, 1))))


def call_model(model: nn.Module, x: torch.Tensor):
    return model(x)


# torch.no_grad() on a generator function disables gradients only while the generator runs, not in
# the caller's loop body between batches (a `with` block inside the generator would leak into it).
@torch.no_grad()
def eval_batches(model: nn.Module, images: torch.Tensor, batch_size: int | None = None,
                 fn: Callable[[nn.Module, torch.Tensor], object] = call_model,
                 progress: Progress | None = None) -> Iterator[tuple[torch.Tensor, object]]:
    """Yields ``(x, fn(model, x))`` per batch of the uint8 tensor ``images`` (N, C, H, W).

    ``x`` is the batch scaled to the model's pixel range on the model's device (one batch of
    floats at a time, so memory does not grow with N; slicing a memory-mapped array reads only
    that batch); ``batch_size`` defaults to :func:`auto_batch_size`. ``fn`` defaults to
    ``model(x)``; a VAE in eval mode decodes its mean. The model gets its previous train/eval mode
    back when the iterator is exhausted or closed.
    """
    batch_size = auto_batch_size(model, batch_size)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size}.")
    out_range = model.config.output_range
    device = model_device(model)
    was_training = model.training
    model.eval()
    n = len(images)
    t0 = time.perf_counter()
    try:
        for start in range(0, n, batch_size):
            x = to_float(images[start:start + batch_size].to(device, non_blocking=True), out_range)
            yield x, fn(model, x)
            if progress is not None:
                progress(min(start + batch_size, n), n, time.perf_counter() - t0)
    finally:
        model.train(was_training)
