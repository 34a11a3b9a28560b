"""Faster training-step forms of the layers where oneDNN is slowest on the CPU.

Measured layer by layer (one thread, batch 64; ``bench/conv_throughput.py`` measures whole steps):

- ``ConvTranspose2d(16, 1, 4, stride=2, padding=1)``, the last layer of the conv and VAE defaults
  on 28x28 images, runs an order of magnitude below the layers before it: a third of the forward
  pass for a twentieth of its arithmetic. Written as what a transposed convolution is, a matrix
  product (every input pixel times the kernel) and a col2im sum of the overlapping patches
  (``F.fold``), it takes a fraction of that time (:func:`fold_conv_transpose`).
- The colour presets' last layer, ``ConvTranspose2d(12, 3, 4, stride=2, padding=1)``, is slow the
  same way (~6 ms of a ~48 ms step), and col2im is slower still at three channels. Each of the
  four output phases of a stride-2, 4x4 transposed convolution is a 2x2 convolution of the
  input, so the layer is one ordinary convolution to 4x the channels and an interleave of the
  phases, done as one gather (:func:`phase_conv_transpose`; ~2.5 ms).
- ``torch.tanh`` (their output activation) costs several times ``torch.sigmoid`` on the CPU, so
  :class:`_Tanh` computes ``2 sigmoid(2x) - 1``; its backward, ``(1 - y^2) * grad``, is computed
  in y's memory layout, so the channels-last layer before it gets a channels-last gradient.

Only the order and rounding of the float32 arithmetic changes (``tests/test_conv_step.py`` holds
outputs and gradients to the plain layers within 1e-5); the transposed convolutions' backward
passes are autograd's own for the plain layer. ``fit`` uses these for its training steps with
``engine="auto"`` on the CPU (``tests/test_mlp_step.py`` holds whole runs to the plain ones
within float32 tolerance); forward passes without autograd (validation, scores) keep the plain
layers, bitwise.
"""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn


class _ConvTranspose(torch.autograd.Function):
    """``m``'s transposed convolution through ``kernel``, with conv_transpose2d's own backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                m: nn.ConvTranspose2d, kernel) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.m, ctx.has_bias = m, bias is not None
        return kernel(x, weight, bias, m)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        m = ctx.m
        need = [ctx.needs_input_grad[0], ctx.needs_input_grad[1],
                ctx.has_bias and ctx.needs_input_grad[2]]
        gx, gw, gb = torch.ops.aten.convolution_backward(
            grad, x, weight, [m.out_channels], list(m.stride), list(m.padding), list(m.dilation),
            True, list(m.output_padding), m.groups, need)
        return gx, gw, gb, None, None


class _Tanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = (x * 2).sigmoid_().mul_(2).sub_(1)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # tanh' = 1 - y^2, computed in y's memory layout: the loss's gradient comes contiguous
        # (mse_loss_backward allocates it so), and a channels-last layer before takes a
        # channels-last gradient faster than it takes a contiguous one.
        y, = ctx.saved_tensors
        return torch.mul(y, y).neg_().add_(1).mul_(grad)


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


# Output row 2i of a 4x4, stride-2, padding-1 transposed convolution sums input rows i (kernel
# row 1) and i - 1 (row 3); row 2i + 1 sums rows i + 1 (row 0) and i (row 2). A 2x2 convolution
# over the input padded by one computes, at position s, input rows s - 1 and s times two kernel
# rows: kernel rows (3, 1) give output row 2s, rows (2, 0) output row 2s - 1. pixel_shuffle puts
# phase slot q of position s at row 2s + q, so slot 0 holds rows (2, 0), slot 1 rows (3, 1), and
# the output is the shuffled map cropped by one on each side.
_PHASE_ROWS = ((2, 0), (3, 1))


def phase_weight(weight: torch.Tensor) -> torch.Tensor:
    """A (C_in, C_out, 4, 4) transposed-convolution kernel as the (4 C_out, C_in, 2, 2) kernel of
    :func:`phase_conv_transpose`'s convolution (output channel c * 4 + 2 * q_y + q_x)."""
    k = torch.tensor(_PHASE_ROWS, device=weight.device)
    w = weight[:, :, k][:, :, :, :, k]  # (C_in, C_out, q_y, a, q_x, b)
    return w.permute(1, 2, 4, 0, 3, 5).reshape(-1, weight.shape[0], 2, 2)


@functools.lru_cache(maxsize=16)
def _phase_index(h: int, w: int, c: int, device: torch.device) -> torch.Tensor:
    """Where each value of the (2h, 2w, c) channels-last output sits in the (h + 1, w + 1, 4c)
    channels-last phase map: the pixel_shuffle and crop of :func:`phase_conv_transpose` as one
    gather (``pixel_shuffle`` itself is several times slower at three output channels)."""
    oy = torch.arange(1, 2 * h + 1, device=device).view(-1, 1, 1)
    ox = torch.arange(1, 2 * w + 1, device=device).view(1, -1, 1)
    ch = torch.arange(c, device=device).view(1, 1, -1)
    return (((oy // 2) * (w + 1) + ox // 2) * (4 * c) + ch * 4 + (oy % 2) * 2 + ox % 2).reshape(-1)


def phase_conv_transpose(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         m: nn.ConvTranspose2d | None = None) -> torch.Tensor:
    """A 4x4, stride-2, padding-1 transposed convolution of ``x`` as a 2x2 convolution to four
    phases per output channel, interleaved as ``pixel_shuffle`` would and cropped by one; the
    result is in channels-last layout."""
    n, _, h, w = x.shape
    c = weight.shape[1]
    wp = phase_weight(weight).contiguous(memory_format=torch.channels_last)
    bp = None if bias is None else bias.repeat_interleave(4)
    z = F.conv2d(x.contiguous(memory_format=torch.channels_last), wp, bp, padding=1)
    z = z.permute(0, 2, 3, 1).reshape(n, -1)  # a view: z is channels-last
    y = z.index_select(1, _phase_index(h, w, c, x.device))
    return y.view(n, 2 * h, 2 * w, c).permute(0, 3, 1, 2)


def _cpu_float32(m: nn.Module) -> bool:
    return m.weight.device.type == "cpu" and m.weight.dtype == torch.float32


def fold_eligible(m: nn.Module) -> bool:
    """A one-output-channel ConvTranspose2d on the CPU in float32, with nothing fold cannot say."""
    return (type(m) is nn.ConvTranspose2d and m.out_channels == 1 and m.groups == 1
            and m.padding_mode == "zeros" and tuple(m.output_padding) == (0, 0) and _cpu_float32(m))


def phase_eligible(m: nn.Module) -> bool:
    """A 4x4, stride-2, padding-1 ConvTranspose2d to 2-4 channels on the CPU in float32 (the
    colour decoders' last layer; wider layers measured no faster this way, one channel is folded)."""
    return (type(m) is nn.ConvTranspose2d and 2 <= m.out_channels <= 4 and m.groups == 1
            and m.kernel_size == (4, 4) and m.stride == (2, 2) and m.padding == (1, 1)
            and m.dilation == (1, 1) and tuple(m.output_padding) == (0, 0)
            and m.padding_mode == "zeros" and _cpu_float32(m))


def _plain(x: torch.Tensor) -> bool:
    # Training steps only: a validation or score inside the block stays bitwise what it is
    # outside it, so a figure fit logs equals the one evaluate() gives for the same weights.
    return not torch.is_grad_enabled() or x.device.type != "cpu" or x.dtype != torch.float32


def _fold_forward(self: nn.ConvTranspose2d, x: torch.Tensor, output_size=None) -> torch.Tensor:
    if _plain(x) or output_size is not None or x.dim() != 4 or not x.is_contiguous():
        return nn.ConvTranspose2d.forward(self, x, output_size)
    return _ConvTranspose.apply(x, self.weight, self.bias, self, fold_conv_transpose)


def _phase_forward(self: nn.ConvTranspose2d, x: torch.Tensor, output_size=None) -> torch.Tensor:
    if _plain(x) or output_size is not None or x.dim() != 4:
        return nn.ConvTranspose2d.forward(self, x, output_size)
    return _ConvTranspose.apply(x, self.weight, self.bias, self, phase_conv_transpose)


def _tanh_forward(self: nn.Tanh, x: torch.Tensor) -> torch.Tensor:
    return nn.Tanh.forward(self, x) if _plain(x) else _Tanh.apply(x)


def _replacement(m: nn.Module):
    if fold_eligible(m):
        return _fold_forward
    if phase_eligible(m):
        return _phase_forward
    if type(m) is nn.Tanh:
        return _tanh_forward
    return None


@contextlib.contextmanager
def training_layers(model: nn.Module) -> Iterator[int]:
    """Within the block, the model's eligible layers run their faster forms in training steps;
    yields how many there are. Their parameters and ``state_dict`` do not change."""
    layers = [(m, f) for m in model.modules()
              if (f := _replacement(m)) is not None and "forward" not in vars(m)]
    for m, f in layers:
        m.forward = types.MethodType(f, m)
    try:
        yield len(layers)
    finally:
        for m, _ in layers:
            del m.forward
