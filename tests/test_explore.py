"""Headless explore helpers: interpolation, prior samples, traversal, latent maps, galleries, selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aelib import explore
from aelib.errors import ConfigError, DataError
from aelib.models import ModelConfig, build, get_config


def _model(family: str, in_shape=(1, 16, 16), latent: int | None = 4, hidden=(4, 8), **kw):
    return build(ModelConfig(family, in_shape, latent=latent, hidden=hidden, **kw), seed=0)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (12, 1, 16, 16), dtype=torch.uint8, generator=g)


@pytest.fixture(scope="module")
def vae():
    return _model("vae", output_range="symmetric")


# ---------------------------------------------------------------------------------- interpolation


def test_lerp_endpoints_and_midpoint():
    z0, z1 = torch.tensor([0.1, -2.0, 3.0]), torch.tensor([1.3, 4.0, -3.0])
    path = explore.lerp(z0, z1, 5)
    assert path.shape == (5, 3)
    assert torch.equal(path[0], z0) and torch.equal(path[-1], z1)
    assert torch.allclose(path[2], (z0 + z1) / 2)
    with pytest.raises(ConfigError):
        explore.lerp(z0, z1, 1)


def test_slerp_unit_vectors_stay_unit_and_endpoints_exact():
    g = torch.Generator().manual_seed(1)
    z0, z1 = torch.randn(2, 3, 4, generator=g)  # non-flat codes are flattened
    z0, z1 = z0 / z0.norm(), z1 / z1.norm()
    path = explore.slerp(z0, z1, 9)
    assert path.shape == (9, 3, 4)
    assert torch.equal(path[0], z0) and torch.equal(path[-1], z1)
    assert torch.allclose(path.flatten(1).norm(dim=1), torch.ones(9), atol=1e-5)
    # Angle to z0 grows by equal steps along the great circle.
    cos = (path.flatten(1) @ z0.flatten()).clamp(-1, 1)
    steps = torch.diff(torch.arccos(cos.double()))
    assert torch.allclose(steps, steps.mean().expand_as(steps), atol=1e-3)


def test_slerp_falls_back_to_lerp_when_parallel():
    z0 = torch.tensor([1.0, 2.0, 2.0])
    assert torch.allclose(explore.slerp(z0, 2 * z0, 4), explore.lerp(z0, 2 * z0, 4))
    assert torch.allclose(explore.slerp(torch.zeros(3), z0, 3), explore.lerp(torch.zeros(3), z0, 3))


@pytest.mark.parametrize("method", ["linear", "spherical"])
def test_interpolate_shape_and_endpoints_are_reconstructions(vae, images, method):
    out = explore.interpolate(vae, images[0], images[1], steps=6, method=method)
    assert out.shape == (6, 16, 16) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    recon = explore.to_display(explore.reconstruct_images(vae, images[:2]), "symmetric")
    np.testing.assert_allclose(out[0], recon[0], atol=1e-5)
    np.testing.assert_allclose(out[-1], recon[1], atol=1e-5)
    with pytest.raises(ConfigError):
        explore.interpolate(vae, images[0], images[1], method="cubic")


def test_interpolate_feature_map_latent_colour():
    model = _model("conv", in_shape=(3, 12, 12), latent=None, hidden=(4, 6))
    assert explore.latent_shape(model) == (6, 3, 3)
    x = torch.randint(0, 256, (2, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    codes = explore.encode_images(model, x)
    assert codes.shape == (2, 54)
    out = explore.interpolate(model, x[0], x[1], steps=4, method="spherical")
    assert out.shape == (4, 12, 12, 3)
    recon = explore.to_display(explore.reconstruct_images(model, x))
    np.testing.assert_allclose(out[[0, -1]], recon, atol=1e-5)


def test_encode_restores_training_mode(vae, images):
    vae.train()
    explore.encode_images(vae, images, batch_size=5)
    assert vae.training
    vae.eval()


# ---------------------------------------------------------------------------------- prior, traversal


def test_prior_samples_seeded_and_vae_only(vae):
    a = explore.prior_samples(vae, 5, temperature=0.8, seed=3)
    b = explore.prior_samples(vae, 5, temperature=0.8, seed=3)
    c = explore.prior_samples(vae, 5, temperature=0.8, seed=4)
    assert a.shape == (5, 16, 16)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(ConfigError, match="variational"):
        explore.prior_samples(_model("fcn", hidden=(8,)), 2)


@pytest.mark.parametrize("family", ["vae", "fcn"])
def test_traverse_changes_only_the_chosen_dim(family, images):
    model = _model(family, hidden=(8,) if family == "fcn" else (4, 8))
    values = np.linspace(-2, 2, 5)
    codes = explore.traverse_codes(model, images[3:4], dim=2, values=values)
    base = explore.encode_images(model, images[3:4])[0]
    assert codes.shape == (5, 4)
    others = [0, 1, 3]
    assert torch.equal(codes[:, others], base[others].expand(5, 3))
    expected = values if family == "vae" else base[2].item() + values  # VAE absolute, AE offset
    np.testing.assert_allclose(codes[:, 2].numpy(), expected, atol=1e-6)
    out = explore.traverse(model, images[3], dim=2, values=values)
    assert out.shape == (5, 16, 16)
    np.testing.assert_allclose(out, explore.to_display(explore.decode_latents(model, codes)), atol=1e-6)
    for bad in (-1, 4, 1.5):
        with pytest.raises(ConfigError):
            explore.traverse(model, images[0], dim=bad)


# ---------------------------------------------------------------------------------- maps, galleries


def test_latent_map_pca_and_first2(vae, images):
    coords, explained = explore.latent_map(vae, images, "pca")
    assert coords.shape == (12, 2)
    assert explained.shape == (2,) and explained[0] >= explained[1] >= 0 and explained.sum() <= 1 + 1e-9
    assert coords[:, 0].var() >= coords[:, 1].var() - 1e-9
    first, none = explore.latent_map(vae, images, "first2")
    assert none is None
    np.testing.assert_allclose(first, explore.encode_images(vae, images)[:, :2].numpy(), atol=1e-6)
    with pytest.raises(ConfigError):
        explore.latent_map(vae, images, "tsne")


def test_top_k():
    scores = np.array([0.5, 3.0, -1.0, 3.0, 2.0])
    assert explore.top_k(scores, 3).tolist() == [1, 3, 4]
    assert explore.top_k(torch.tensor(scores), 2, largest=False).tolist() == [2, 0]
    assert explore.top_k(scores, 10).tolist() == [1, 3, 4, 0, 2]
    assert explore.top_k(scores, 0).tolist() == []
    with pytest.raises(DataError):
        explore.top_k([1.0, float("nan")], 1)


def test_gallery(vae, images):
    g = explore.gallery(vae, images, [4, 0])
    assert g["original"].shape == g["reconstruction"].shape == g["abs_error"].shape == (2, 16, 16)
    np.testing.assert_allclose(g["original"][0], images[4, 0].numpy() / 255.0, atol=1e-7)
    np.testing.assert_allclose(g["abs_error"], np.abs(g["reconstruction"] - g["original"]))
    with pytest.raises(DataError, match="out of range"):
        explore.gallery(vae, images, [12])


# ---------------------------------------------------------------------------------- display, noise


def test_to_display_and_grid():
    grey = explore.to_display(torch.full((3, 1, 5, 4), 255, dtype=torch.uint8))
    assert grey.shape == (3, 5, 4) and grey.max() == 1.0
    colour = explore.to_display(-torch.ones(2, 3, 5, 4), "symmetric")
    assert colour.shape == (2, 5, 4, 3) and colour.max() == 0.0
    grid = explore.image_grid([grey, grey[:1]], pad=2)
    assert grid.shape == (2 * (5 + 2) + 2, 3 * (4 + 2) + 2)
    assert explore.image_grid([grey, colour]).shape == (16, 20, 3)
    assert explore.image_grid([grey[:1]], pad=1).shape == (7, 6)
    with pytest.raises(DataError):
        explore.image_grid([grey, np.zeros((1, 6, 4), np.float32)])


def test_add_noise_and_psnr(images):
    noisy = explore.add_noise(images, "gaussian", 0.1, seed=1)
    assert noisy.dtype == torch.uint8 and noisy.shape == images.shape
    assert torch.equal(noisy, explore.add_noise(images, "gaussian", 0.1, seed=1))
    masked = explore.add_noise(images, "mask", 0.5, seed=0)
    changed = (masked != images).float().mean().item()
    assert 0.3 < changed < 0.55
    p = explore.psnr(noisy, images)
    assert p.shape == (12,) and np.all(np.isfinite(p)) and np.all(p > 15)
    assert np.isinf(explore.psnr(images, images)).all()
    with pytest.raises(ConfigError):
        explore.add_noise(images, "blur", 0.1)


def test_denoise_comparison(vae, images):
    out = explore.denoise_comparison(vae, images[:3], "mask", 0.2)
    assert out["noisy"].shape == out["denoised"].shape == (3, 16, 16)
    assert out["psnr_noisy"].shape == out["psnr_denoised"].shape == (3,)


# ---------------------------------------------------------------------------------- selection


def test_select_images_modes_and_errors():
    labels = np.array([1, 0, 1, 2, 1, 0])
    assert explore.select_images(3, labels).tolist() == [0, 1, 2]
    assert explore.select_images(10, total=4).tolist() == [0, 1, 2, 3]
    r = explore.select_images(4, labels, mode="random", seed=5)
    assert len(set(r.tolist())) == 4 and r.min() >= 0 and r.max() < 6
    assert np.array_equal(r, explore.select_images(4, labels, mode="random", seed=5))
    assert explore.select_images(2, torch.tensor(labels), mode="class", cls=1).tolist() == [0, 2]
    assert explore.select_images(0, labels, mode="index", indices=[5, 0]).tolist() == [5, 0]
    with pytest.raises(DataError, match="out of range"):
        explore.select_images(1, labels, mode="index", indices=[6])
    with pytest.raises(DataError, match="out of range"):
        explore.select_images(1, labels, mode="index", indices=[-1])
    with pytest.raises(DataError, match="class 7"):
        explore.select_images(2, labels, mode="class", cls=7)
    with pytest.raises(DataError, match="labels"):
        explore.select_images(2, mode="class", cls=1, total=6)
    with pytest.raises(ConfigError):
        explore.select_images(2, labels, mode="sideways")
    with pytest.raises(ConfigError):
        explore.select_images(2)


# ---- exploring codes: maps, neighbours, sliders, the decoded plane, one image -------------------

def test_project_codes_pca_matches_latent_map_and_tsne_separates_clusters():
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(0, 0.1, (60, 6)), rng.normal(5, 0.1, (60, 6))])
    coords, explained = explore.project_codes(z, "tsne")
    assert coords.shape == (120, 2) and explained is None
    a, b = coords[:60].mean(0), coords[60:].mean(0)
    spread = max(coords[:60].std(0).max(), coords[60:].std(0).max())
    assert np.linalg.norm(a - b) > 3 * spread  # the two clusters stay apart
    pca, ratio = explore.project_codes(z, "pca")
    assert ratio[0] > 0.9 and abs(np.corrcoef(pca[:, 0], np.r_[np.zeros(60), np.ones(60)])[0, 1]) > 0.99
    with pytest.raises(ConfigError):
        explore.project_codes(z, "umap")


def test_nearest_codes_are_nearest_first_and_exclude_the_image_itself():
    z = np.array([[0.0], [10.0], [1.0], [3.0], [-2.0]])
    assert explore.nearest_codes(z, 0, 3).tolist() == [2, 4, 3]
    assert len(explore.nearest_codes(z, 0, 99)) == 4
    with pytest.raises(DataError):
        explore.nearest_codes(z, 7)


def test_dims_by_spread_orders_dimensions_by_their_variation():
    z = np.stack([np.zeros(50), np.linspace(0, 5, 50), np.linspace(0, 1, 50)], axis=1)
    assert explore.dims_by_spread(z, 2).tolist() == [1, 2]


def test_latent_plane_decodes_a_grid_with_the_highest_y_on_top():
    model = build(get_config("vae", (1, 28, 28), latent=2), seed=0)
    images, xs, ys = explore.latent_plane(model, (-1, 1), (-2, 2), 4)
    assert images.shape == (4, 4, 28, 28) and xs[0] == -1 and ys[0] == 2
    top_left = explore.decode_display(model, np.array([[-1.0, 2.0]], np.float32))[0]
    np.testing.assert_allclose(images[0, 0], top_left, atol=1e-6)
    with pytest.raises(ConfigError):
        explore.latent_plane(build(get_config("vae", (1, 28, 28), latent=3), seed=0), (0, 1), (0, 1))


def test_fit_images_resizes_and_converts_channels():
    rgb = torch.full((2, 3, 50, 40), 200, dtype=torch.uint8)
    grey = explore.fit_images(rgb, (1, 28, 28))
    assert grey.shape == (2, 1, 28, 28) and grey.dtype == torch.uint8 and int(grey[0, 0, 5, 5]) == 200
    assert explore.fit_images(grey, (3, 64, 64)).shape == (2, 3, 64, 64)


def test_percentile_of_counts_reference_scores_below():
    assert explore.percentile_of(0.5, np.linspace(0, 1, 101)) == pytest.approx(100 * 50 / 101)
    with pytest.raises(DataError):
        explore.percentile_of(1.0, [])
