"""aelib.models: reference presets match REFERENCE.md exactly; every family handles any size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aelib.errors import ConfigError
from aelib.models import (
    PRESETS,
    VAE,
    ModelConfig,
    build,
    count_parameters,
    get_config,
    kl_divergence,
    latent_of,
    reconstruct,
    vae_loss,
)


def _layers(module: nn.Module, kinds=(nn.Linear, nn.Conv2d, nn.ConvTranspose2d)) -> list[tuple]:
    out = []
    for m in module.modules():
        if isinstance(m, nn.Linear):
            out.append(("Linear", m.in_features, m.out_features))
        elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(m, kinds):
            out.append((type(m).__name__, m.in_channels, m.out_channels, m.kernel_size, m.stride,
                        m.padding))
    return out


def _acts(seq: nn.Sequential) -> list[str]:
    return [type(m).__name__ for m in seq if not isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d,
                                                                  nn.Flatten, nn.Unflatten))]


def test_face_fcn_matches_reference_layout_and_parameter_count():
    m = build("face_fcn")
    assert _layers(m.encoder) == [("Linear", 12288, 1024), ("Linear", 1024, 256), ("Linear", 256, 64)]
    assert _layers(m.decoder) == [("Linear", 64, 256), ("Linear", 256, 1024), ("Linear", 1024, 12288)]
    assert _acts(m.encoder) == ["ReLU", "ReLU", "ReLU"]
    assert _acts(m.decoder) == ["ReLU", "ReLU", "Tanh"]
    assert count_parameters(m) == 25_737_792


def test_face_conv_matches_reference_layout_and_feature_map_latent():
    m = build("face_conv")
    k, s, p = (4, 4), (2, 2), (1, 1)
    assert _layers(m.encoder) == [("Conv2d", 3, 12, k, s, p), ("Conv2d", 12, 24, k, s, p),
                                  ("Conv2d", 24, 48, k, s, p)]
    assert _layers(m.decoder) == [("ConvTranspose2d", 48, 24, k, s, p), ("ConvTranspose2d", 24, 12, k, s, p),
                                  ("ConvTranspose2d", 12, 3, k, s, p)]
    assert _acts(m.decoder) == ["ReLU", "ReLU", "Tanh"]
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert latent_of(m, x).shape == (2, 48, 8, 8)
    assert count_parameters(m) == 47_355


def test_face_vae_reference_heads_have_relu_and_map_latents():
    m = build("face_vae")
    assert isinstance(m, VAE)
    k, st, p = (4, 4), (2, 2), (1, 1)
    assert _layers(m.encoder) == [("Conv2d", 3, 12, k, st, p), ("Conv2d", 12, 24, k, st, p)]
    for head in (m.mu_head, m.logvar_head):
        assert _layers(head) == [("Conv2d", 24, 48, k, st, p)]
        assert _acts(head) == ["ReLU"]
    mu, logvar = m.encode(torch.rand(2, 3, 64, 64))
    assert mu.shape == logvar.shape == (2, 48, 8, 8)
    assert (mu >= 0).all() and (logvar >= 0).all()  # the reference's known weakness, reproduced
    assert count_parameters(m) == 65_835


def test_default_vae_is_corrected_heads_can_go_negative():
    m = build("vae", (3, 64, 64), seed=0)
    assert m.config.head_act is None
    mu, logvar = m.encode(torch.rand(64, 3, 64, 64))
    assert (mu < 0).any() and (logvar < 0).any()


def test_mnist_keras_preset_matches_recipe_and_glorot_init():
    m = build("mnist_keras", seed=0)
    assert _layers(m.encoder) == [("Linear", 784, 144), ("Linear", 144, 72), ("Linear", 72, 48)]
    assert _layers(m.decoder) == [("Linear", 48, 72), ("Linear", 72, 144), ("Linear", 144, 784)]
    assert _acts(m.encoder) == ["ReLU", "ReLU", "Tanh"]
    assert _acts(m.decoder) == ["Tanh", "Tanh", "Sigmoid"]
    assert count_parameters(m) == 254_704
    for lin in (x for x in m.modules() if isinstance(x, nn.Linear)):
        assert torch.all(lin.bias == 0)
        limit = (6 / (lin.in_features + lin.out_features)) ** 0.5
        assert lin.weight.abs().max() <= limit
        assert lin.weight.abs().max() > 0.9 * limit  # uniform over the whole Glorot range
    y = reconstruct(m, torch.rand(3, 1, 28, 28))
    assert y.shape == (3, 1, 28, 28) and y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("family", ["fcn", "conv", "vae"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 64, 64), (1, 25, 25), (3, 7, 9), (1, 2, 31)])
def test_every_family_reconstructs_any_input_size(family, shape):
    m = build(family, shape, seed=0)
    x = torch.rand(2, *shape)
    y = reconstruct(m, x)
    assert y.shape == x.shape
    loss = ((y - x) ** 2).mean()
    loss.backward()  # gradients flow through padding and cropping
    assert all(p.grad is not None for p in m.parameters())


@pytest.mark.parametrize("family", ["conv", "vae"])
def test_output_range_follows_config(family):
    m = build(get_config(family, (1, 28, 28), output_range="symmetric"))
    assert isinstance(m.decoder[-1], nn.Tanh)
    y = reconstruct(m, torch.rand(4, 1, 28, 28) * 2 - 1)
    assert y.min() >= -1 and y.max() <= 1
    unit = build(get_config(family, (1, 28, 28)))
    assert isinstance(unit.decoder[-1], nn.Sigmoid) and unit.config.value_range == (0.0, 1.0)


def test_vae_sample_reparameterize_and_loss():
    m = build("vae", (1, 28, 28), latent=8, seed=0)
    g = torch.Generator().manual_seed(3)
    s1 = m.sample(5, generator=g)
    s2 = m.sample(5, generator=torch.Generator().manual_seed(3))
    assert s1.shape == (5, 1, 28, 28) and torch.equal(s1, s2)
    mu, logvar = torch.zeros(10000, 8), torch.zeros(10000, 8)
    z = VAE.reparameterize(mu + 2, logvar + 2 * torch.log(torch.tensor(3.0)))
    assert abs(z.mean().item() - 2) < 0.1 and abs(z.std().item() - 3) < 0.1
    # KL of N(0,1) against N(0,1) is zero; of N(1,1) is 0.5 per dim.
    assert torch.allclose(kl_divergence(torch.zeros(2, 8), torch.zeros(2, 8)), torch.zeros(2))
    assert torch.allclose(kl_divergence(torch.ones(2, 8), torch.zeros(2, 8)), torch.full((2,), 4.0))
    x = torch.rand(2, 1, 28, 28)
    total, mse, kl = vae_loss(x, x, torch.ones(2, 8), torch.zeros(2, 8), beta=0.5)
    assert mse.item() == 0 and kl.item() == pytest.approx(4.0) and total.item() == pytest.approx(2.0)


def test_vae_eval_is_deterministic_and_train_samples():
    m = build("vae", (1, 28, 28), seed=0)
    x = torch.rand(3, 1, 28, 28)
    m.eval()
    assert torch.equal(m(x)[0], m(x)[0])
    m.train()
    assert not torch.equal(m(x)[0], m(x)[0])


def test_config_roundtrip_and_validation():
    for cfg in PRESETS.values():
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="family"):
        ModelConfig("gan", (1, 28, 28))
    with pytest.raises(ConfigError, match="in_shape"):
        ModelConfig("fcn", (28, 28))
    with pytest.raises(ConfigError, match="latent"):
        ModelConfig("fcn", (1, 28, 28), latent=None)
    with pytest.raises(ConfigError, match="Unknown model config keys"):
        ModelConfig.from_dict({"family": "fcn", "in_shape": [1, 2, 2], "evil": 1})
    with pytest.raises(ConfigError):
        get_config("nonexistent")
    with pytest.raises(ConfigError, match="input shape"):
        get_config("conv")


def test_build_is_seeded():
    a, b = build("conv", (1, 28, 28), seed=5), build("conv", (1, 28, 28), seed=5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
