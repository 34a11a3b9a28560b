"""A faster forward pass for the transposed convolution that ends a one-channel decoder.

On the CPU, oneDNN runs ``ConvTranspose2d(16, 1, 4, stride=2, padding=1)`` (the last layer of the
conv and VAE defaults on 28x28 images) an order of magnitude below its speed on the layers before
it: a third of the forward pass for a twentieth of its arithmetic. Written as what a transposed
convolution is, a matrix product (every input pixel times the kernel) and a col2im sum of the
overlapping patches (``F.fold``), the same layer takes a fraction of that time
(``bench/conv_throughput.py`` measures the defaults with and without it). Only the order of the
float32 sums changes; the backward pass is the one autograd runs for ``conv_transpose2d``, so the
gradients of a given output are the same. ``fit`` uses it for its training steps with
``engine="auto"`` on the CPU (``tests/test_mlp_step.py`` holds a run to the plain one within
float32 tolerance); forward passes without autograd (validation, scores) keep the plain layer.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn


class _FoldConvTranspose(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                m: nn.ConvTranspose2d) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.m, ctx.has_bias = m, bias is not None
        return fold_conv_transpose(x, weight, bias, m)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        m = ctx.m
        need = [ctx.needs_input_grad[0], ctx.needs_input_grad[1],
                ctx.has_bias and ctx.needs_input_grad[2]]
        gx, gw, gb = torch.ops.aten.convolution_backward(
            grad, x, weight, [m.out_channels], list(m.stride), list(m.padding), list(m.dilation),
            True, list(m.output_padding), m.groups, need)
        return gx, gw, gb, None


def fold_conv_transpose(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                        m: nn.ConvTranspose2d) -> torch.Tensor:
    """``m``'s transposed convolution of ``x`` as a matrix product and a col2im sum."""
    n, c, h, w = x.shape
    kh, kw = m.kernel_size
    (sh, sw), (ph, pw), (dh, dw) = m.stride, m.padding, m.dilation
    out_hw = ((h - 1) * sh - 2 * ph + dh * (kh - 1) + 1, (w - 1) * sw - 2 * pw + dw * (kw - 1) + 1)
    cols = torch.matmul(weight.reshape(c, -1).t(), x.reshape(n, c, h * w))
    y = F.fold(cols, out_hw, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)
    return y if bias is None else y + bias.view(1, -1, 1, 1)


def eligible(m: nn.Module) -> bool:
    """A one-output-channel ConvTranspose2d on the CPU in float32, with nothing fold cannot say."""
    return (type(m) is nn.ConvTranspose2d and m.out_channels == 1 and m.groups == 1
            and m.padding_mode == "zeros" and tuple(m.output_padding) == (0, 0)
            and m.weight.device.type == "cpu" and m.weight.dtype == torch.float32)


def _forward(self: nn.ConvTranspose2d, x: torch.Tensor, output_size=None) -> torch.Tensor:
    # Training steps only: a validation or score inside the block stays bitwise what it is
    # outside it, so a figure fit logs equals the one evaluate() gives for the same weights.
    if not torch.is_grad_enabled() or output_size is not None or x.dim() != 4 or not x.is_contiguous():
        return nn.ConvTranspose2d.forward(self, x, output_size)
    return _FoldConvTranspose.apply(x, self.weight, self.bias, self)


@contextlib.contextmanager
def fold_transposed_convs(model: nn.Module) -> Iterator[int]:
    """Within the block, the model's eligible layers run :func:`fold_conv_transpose`; yields
    how many there are. Their parameters and ``state_dict`` do not change."""
    layers = [m for m in model.modules() if eligible(m) and "forward" not in vars(m)]
    for m in layers:
        m.forward = types.MethodType(_forward, m)
    try:
        yield len(layers)
    finally:
        for m in layers:
            del m.forward
