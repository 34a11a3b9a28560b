"""aelib.conv_step: the folded transposed convolution computes the layer's output and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aelib import conv_step


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
    ref = layer(x)
    g = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, [x, *layer.parameters()], g)
    with conv_step.fold_transposed_convs(layer) as n:
        assert n == 1
        out = layer(x)
        grads = torch.autograd.grad(out, [x, *layer.parameters()], g)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, ref_grads):  # the backward is conv_transpose2d's own
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert "forward" not in vars(layer)


def test_only_one_channel_float32_layers_are_folded_and_eval_stays_plain():
    model = nn.Sequential(nn.ConvTranspose2d(8, 3, 4, 2, 1), nn.ConvTranspose2d(3, 1, 4, 2, 1),
                          nn.ConvTranspose2d(1, 1, 3, 2, 1, output_padding=1), nn.Conv2d(1, 1, 3))
    x = torch.randn(2, 8, 5, 5)
    with conv_step.fold_transposed_convs(model) as n:
        assert n == 1 and "forward" in vars(model[1])
        with torch.no_grad():  # validation and scores: bitwise the plain layers
            plain = torch.nn.functional.conv_transpose2d(model[0](x), model[1].weight, model[1].bias, 2, 1)
            assert torch.equal(model[1](model[0](x)), plain)
    assert not any("forward" in vars(m) for m in model)
    assert not conv_step.eligible(nn.ConvTranspose2d(4, 1, 4, 2, 1).double())
