"""aelib.conv_step: the faster training-step forms compute the plain layers' outputs and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aelib import conv_step


def _outputs_and_grads(layer: nn.Module, x: torch.Tensor, g: torch.Tensor | None = None):
    out = layer(x)
    g = torch.randn_like(out) if g is None else g
    return out, g, torch.autograd.grad(out, [x, *layer.parameters()], g)


@pytest.mark.parametrize("cin,hw,kernel,stride,padding,bias", [
    (16, 16, 4, 2, 1, True),   # the 28x28 defaults' last layer
    (8, 7, 3, 2, 0, False),
    (4, 5, 5, 1, 2, True),
    (3, 9, 4, 3, 1, True),
])
def test_folded_layer_matches_conv_transpose2d(cin, hw, kernel, stride, padding, bias):
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(cin, 1, kernel, stride=stride, padding=padding, bias=bias)
    x = torch.randn(5, cin, hw, hw, requires_grad=True)
    ref, g, ref_grads = _outputs_and_grads(layer, x)
    with conv_step.training_layers(layer) as n:
        assert n == 1
        out, _, grads = _outputs_and_grads(layer, x, g)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, ref_grads):  # the backward is conv_transpose2d's own
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert "forward" not in vars(layer)


@pytest.mark.parametrize("cin,cout,h,w,channels_last,bias", [
    (12, 3, 32, 32, True, True),    # the colour presets' last layer
    (12, 3, 32, 32, False, True),
    (5, 2, 7, 9, False, False),
    (4, 4, 1, 3, True, True),
])
def test_phase_layer_matches_conv_transpose2d(cin, cout, h, w, channels_last, bias):
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=bias)
    x = torch.randn(3, cin, h, w)
    if channels_last:
        layer = layer.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    ref, g, ref_grads = _outputs_and_grads(layer, x)
    with conv_step.training_layers(layer) as n:
        assert n == 1
        out, _, grads = _outputs_and_grads(layer, x, g)
    assert out.shape == ref.shape == (3, cout, 2 * h, 2 * w)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_tanh_matches_torch_tanh_and_keeps_the_layout():
    torch.manual_seed(0)
    x = torch.cat([torch.linspace(-20, 20, 4000), torch.randn(3000) * 1e-4]).reshape(7, 1, 1, 1000)
    x = x.expand(7, 3, 2, 1000).contiguous(memory_format=torch.channels_last).requires_grad_()
    layer = nn.Tanh()
    ref, g, (ref_grad,) = _outputs_and_grads(layer, x, torch.randn(7, 3, 2, 1000))  # g contiguous
    with conv_step.training_layers(layer) as n:
        assert n == 1
        out, _, (grad,) = _outputs_and_grads(layer, x, g)
        with torch.no_grad():
            assert torch.equal(layer(x), torch.tanh(x))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)  # measured: 1.8e-7
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)
    assert out.min() >= -1 and out.max() <= 1
    assert grad.is_contiguous(memory_format=torch.channels_last)


def test_only_eligible_float32_layers_change_and_eval_stays_plain():
    model = nn.Sequential(nn.ConvTranspose2d(8, 3, 4, 2, 1), nn.ConvTranspose2d(3, 1, 4, 2, 1),
                          nn.ConvTranspose2d(1, 1, 3, 2, 1, output_padding=1), nn.Conv2d(1, 1, 3),
                          nn.ConvTranspose2d(8, 8, 4, 2, 1), nn.ConvTranspose2d(8, 3, 3, 2, 1),
                          nn.Sigmoid())
    x = torch.randn(2, 8, 5, 5)
    with conv_step.training_layers(model) as n:
        assert n == 2 and "forward" in vars(model[0]) and "forward" in vars(model[1])
        assert not any("forward" in vars(m) for m in model[2:])
        with torch.no_grad():  # validation and scores: bitwise the plain layers
            f = torch.nn.functional
            h = f.conv_transpose2d(x, model[0].weight, model[0].bias, 2, 1)
            assert torch.equal(model[0](x), h)
            assert torch.equal(model[1](h), f.conv_transpose2d(h, model[1].weight, model[1].bias, 2, 1))
    assert not any("forward" in vars(m) for m in model)
    assert not conv_step.fold_eligible(nn.ConvTranspose2d(4, 1, 4, 2, 1).double())
    assert not conv_step.phase_eligible(nn.ConvTranspose2d(4, 3, 4, 2, 1).double())
