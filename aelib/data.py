"""Datasets as resident uint8 tensors, and scaling to a model's pixel range per batch."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .models import OUTPUT_RANGES


@dataclass
class ImageDataset:
    """Images held once in memory as uint8 (N, C, H, W), with optional integer labels."""

    images: torch.Tensor
    labels: torch.Tensor | None = None
    name: str = "images"
    source: str = "memory"  # "download" | "local" | "bundled-sample" | "upload" | "path" | "memory"
    classes: list[str] | None = None
    note: str = ""  # a sentence for the user, e.g. why the bundled sample is used
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise TypeError("ImageDataset.images must be a uint8 tensor of shape (N, C, H, W).")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise ValueError("labels and images differ in length.")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])


def to_float(x: torch.Tensor, output_range: str = "unit") -> torch.Tensor:
    """uint8 [0, 255] -> float32 in the model's range: [0, 1] ("unit") or [-1, 1] ("symmetric")."""
    lo, hi = OUTPUT_RANGES[output_range]
    x = x.float()
    if (lo, hi) == (0.0, 1.0):
        return x.div_(255.0)
    return x.mul_((hi - lo) / 255.0).add_(lo)  # symmetric: x / 127.5 - 1, as the reference


def to_uint8(x: torch.Tensor, output_range: str = "unit") -> torch.Tensor:
    """Float in the model's range -> uint8 [0, 255] (rounded, clipped)."""
    lo, hi = OUTPUT_RANGES[output_range]
    return ((x.detach().float() - lo) * (255.0 / (hi - lo))).round_().clamp_(0, 255).to(torch.uint8)
