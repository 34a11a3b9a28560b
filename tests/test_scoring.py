"""Tests for aelib.scoring: errors against hand computation, evaluation against sklearn, detector."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import erf
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score, roc_curve
from torch import nn

from aelib import scoring
from aelib.data import to_float
from aelib.errors import ConfigError, DataError
from aelib.models import ModelConfig, build, get_config, reconstruct, vae_loss
from aelib.scoring import (
    LATENT_KNN_K,
    LATENT_SCORES,
    RECONSTRUCTION_SCORES,
    SCORES,
    AnomalyDetector,
    EnsembleDetector,
    LatentGaussian,
    choose_threshold,
    ensemble_scores,
    evaluate_scores,
    image_metrics,
    model_scores,
    per_class_errors,
    reconstruct_batches,
    reconstruction_errors,
    roc,
    threshold_metrics,
)


class Halve(nn.Module):
    """A stand-in 'autoencoder' with a known reconstruction: recon = x / 2."""

    def __init__(self, in_shape=(1, 4, 4), output_range="unit"):
        super().__init__()
        self.config = ModelConfig("fcn", in_shape, latent=2, output_range=output_range)
        self.dummy = nn.Parameter(torch.zeros(1))  # gives the model a device

    def forward(self, x):
        return x * 0.5


def _images(n, shape=(1, 4, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)


# --------------------------------------------------------------------------------------------
# reconstruction errors


def test_errors_match_hand_computation_for_known_reconstruction():
    imgs = _images(7)
    x = imgs.reshape(7, -1).numpy().astype(np.float64) / 255.0
    diff = 0.5 * x  # x - x/2
    errs = reconstruction_errors(Halve(), imgs, metrics=("mse", "mae", "l2"), batch_size=3)
    np.testing.assert_allclose(errs["mse"], (diff**2).mean(1), rtol=1e-6)
    np.testing.assert_allclose(errs["mae"], np.abs(diff).mean(1), rtol=1e-6)
    np.testing.assert_allclose(errs["l2"], np.sqrt((diff**2).sum(1)), rtol=1e-6)
    assert all(v.shape == (7,) and v.dtype == np.float64 for v in errs.values())


@pytest.mark.parametrize("output_range", ["unit", "symmetric"])
def test_errors_match_reconstruct_of_a_built_model(output_range):
    model = build(get_config("fcn", (3, 4, 4), output_range=output_range), seed=1)
    imgs = _images(10, (3, 4, 4))
    model.eval()
    with torch.no_grad():
        x = to_float(imgs, output_range)
        d = (reconstruct(model, x) - x).flatten(1).double().numpy()
    errs = reconstruction_errors(model, imgs, metrics=("mse", "l2", "mae"), batch_size=4)
    np.testing.assert_allclose(errs["mse"], (d**2).mean(1), rtol=1e-5)
    np.testing.assert_allclose(errs["l2"], np.sqrt((d**2).sum(1)), rtol=1e-5)
    np.testing.assert_allclose(errs["mae"], np.abs(d).mean(1), rtol=1e-5)


def test_l2_ranks_images_exactly_like_mse():
    model = build("fcn", (1, 8, 8), seed=0)
    errs = reconstruction_errors(model, _images(200, (1, 8, 8)), metrics=("mse", "l2"))
    order = np.argsort(errs["mse"], kind="stable")
    assert np.all(np.diff(errs["l2"][order]) >= 0)
    np.testing.assert_allclose(errs["l2"], np.sqrt(64 * errs["mse"]), rtol=1e-12)


def test_errors_do_not_depend_on_batch_size():
    imgs = _images(11)
    a = reconstruction_errors(Halve(), imgs, ("l2",), batch_size=1)["l2"]
    b = reconstruction_errors(Halve(), imgs, ("l2",), batch_size=512)["l2"]
    np.testing.assert_array_equal(a, b)


def test_elbo_is_mse_plus_kl_from_the_mean_and_matches_training_loss():
    model = build("vae", (1, 8, 8), latent=4, seed=0)
    imgs = _images(6, (1, 8, 8))
    errs = reconstruction_errors(model, imgs, metrics=("elbo", "mse"), batch_size=6)
    model.eval()
    with torch.no_grad():
        x = to_float(imgs)
        recon, mu, logvar = model(x)
        total, _, _ = vae_loss(recon, x, mu, logvar, beta=1 / 64)
        total_1, _, _ = vae_loss(recon, x, mu, logvar, beta=1.0)
    mu, logvar = mu.double(), logvar.double()
    kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)).numpy()
    # Default weight for a non-reference VAE: KL per pixel (beta = 1 / n_pixels = 1 / 64).
    np.testing.assert_allclose(errs["elbo"], errs["mse"] + kl / 64, rtol=1e-6)
    assert errs["elbo"].mean() == pytest.approx(float(total), rel=1e-5)
    ref = reconstruction_errors(model, imgs, metrics=("elbo",), beta=1.0)["elbo"]
    np.testing.assert_allclose(ref, errs["mse"] + kl, rtol=1e-6)
    assert ref.mean() == pytest.approx(float(total_1), rel=1e-5)
    again = reconstruction_errors(model, imgs, metrics=("elbo",))["elbo"]
    np.testing.assert_array_equal(errs["elbo"], again)  # deterministic: decodes the mean


def test_elbo_on_a_non_vae_and_unknown_metrics_raise_config_error():
    with pytest.raises(ConfigError, match="variational"):
        reconstruction_errors(Halve(), _images(2), metrics=("elbo",))
    with pytest.raises(ConfigError, match="Unknown"):
        reconstruction_errors(Halve(), _images(2), metrics=("psnr",))
    with pytest.raises(ConfigError):
        reconstruction_errors(Halve(), _images(2), metrics=())


def test_reconstruct_batches_yields_scaled_batches_in_eval_mode_and_restores_mode():
    model = Halve(output_range="symmetric")
    model.train()
    imgs = _images(10)
    sizes, modes = [], []
    for x, recon in reconstruct_batches(model, imgs, batch_size=4):
        sizes.append(len(x))
        modes.append(model.training)
        assert not recon.requires_grad
        assert torch.is_grad_enabled()  # no_grad does not leak into the caller's loop
    assert sizes == [4, 4, 2] and modes == [False] * 3
    assert model.training
    x_all = torch.cat([x for x, _ in reconstruct_batches(model, imgs, batch_size=4)])
    torch.testing.assert_close(x_all, imgs.float() / 127.5 - 1)
    batches = reconstruct_batches(model, imgs, batch_size=4)
    next(batches)
    assert not model.training
    batches.close()  # abandoned early: the previous mode still comes back
    assert model.training
    model.eval()
    reconstruction_errors(model, imgs)
    assert not model.training


def test_images_accept_numpy_channels_last_and_reject_bad_input():
    imgs = _images(5, (3, 4, 4))
    model = Halve((3, 4, 4))
    ref = reconstruction_errors(model, imgs)["mse"]
    hwc = imgs.permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(reconstruction_errors(model, hwc)["mse"], ref)
    with pytest.raises(DataError, match="shape"):
        reconstruction_errors(model, _images(5, (3, 5, 5)))
    with pytest.raises(DataError, match="uint8"):
        reconstruction_errors(model, imgs.float())
    assert reconstruction_errors(model, imgs[:0])["mse"].shape == (0,)


def test_per_class_errors_summarises_each_class():
    errors = np.array([1.0, 3.0, 10.0, 2.0, 4.0])
    labels = np.array([0, 0, 1, 0, 2])
    df = per_class_errors(errors, labels, class_names=["zero", "one", "two"])
    assert list(df.columns) == ["class", "n", "mean", "std", "median"]
    assert list(df["class"]) == ["zero", "one", "two"]
    assert list(df["n"]) == [3, 1, 1]
    np.testing.assert_allclose(df["mean"], [2.0, 10.0, 4.0])
    np.testing.assert_allclose(df["std"], [np.std([1, 3, 2]), 0.0, 0.0])
    np.testing.assert_allclose(df["median"], [2.0, 10.0, 4.0])
    assert list(per_class_errors(errors, torch.tensor(labels))["class"]) == ["0", "1", "2"]
    with pytest.raises(DataError):
        per_class_errors(errors, labels[:3])


# --------------------------------------------------------------------------------------------
# evaluation


def test_roc_equals_sklearn_and_is_one_for_separated_scores():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = rng.normal(size=300) + y
    r = roc(y, s)
    fpr, tpr, thr = roc_curve(y, s)
    np.testing.assert_array_equal(r["fpr"], fpr)
    np.testing.assert_array_equal(r["tpr"], tpr)
    np.testing.assert_array_equal(r["thresholds"], thr)
    assert r["auc"] == roc_auc_score(y, s)
    assert r["average_precision"] == average_precision_score(y, s)
    sep = roc([0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.8, 0.9])
    assert sep["auc"] == 1.0 and sep["average_precision"] == 1.0
    assert roc([0, 1], [0.9, 0.1])["auc"] == 0.0


def test_roc_with_one_class_or_bad_labels_raises_data_error():
    with pytest.raises(DataError, match="both"):
        roc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(DataError, match="both"):
        roc([1, 1], [0.1, 0.2])
    with pytest.raises(DataError, match="0 .normal. or 1"):
        roc([0, 2], [0.1, 0.2])
    with pytest.raises(DataError, match="NaN"):
        roc([0, 1], [0.1, np.nan])
    with pytest.raises(DataError, match="length"):
        roc([0, 1, 1], [0.1, 0.2])


def test_threshold_metrics_match_hand_counted_confusion():
    y = [0, 0, 0, 0, 1, 1, 1]
    s = [0.1, 0.5, 0.7, 0.2, 0.5, 0.9, 0.3]
    m = threshold_metrics(y, s, 0.5)  # >= 0.5 => anomaly: predictions 0 1 1 0 1 1 0
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 2, 2, 1)
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert m["accuracy"] == pytest.approx(4 / 7)
    none = threshold_metrics(y, s, 2.0)  # nothing flagged: precision 0 by zero_division=0
    assert (none["tp"], none["fp"], none["precision"], none["recall"]) == (0, 0, 0.0, 0.0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.floats(-5, 5)), min_size=1, max_size=60),
       st.floats(-6, 6))
def test_threshold_metrics_counts_agree_with_numpy(pairs, threshold):
    y = np.array([p[0] for p in pairs])
    s = np.array([p[1] for p in pairs])
    m = threshold_metrics(y, s, threshold)
    pred = s >= threshold
    assert m["tp"] == int((pred & (y == 1)).sum()) and m["fp"] == int((pred & (y == 0)).sum())
    assert m["fn"] == int((~pred & (y == 1)).sum()) and m["tn"] == int((~pred & (y == 0)).sum())


def test_image_metrics_psnr_of_known_error():
    x = torch.zeros(2, 1, 4, 4)
    recon = torch.stack([torch.full((1, 4, 4), 0.1), torch.zeros(1, 4, 4)])
    m = image_metrics(x, recon, data_range=1.0)
    np.testing.assert_allclose(m["mse"], [0.01, 0.0], atol=1e-9)
    assert m["psnr"][0] == pytest.approx(20.0, abs=1e-4) and np.isinf(m["psnr"][1])
    psnr_range_2 = image_metrics(x.numpy(), recon.numpy(), 2.0)["psnr"][0]
    assert psnr_range_2 == pytest.approx(20 + 20 * np.log10(2), abs=1e-4)
    with pytest.raises(DataError):
        image_metrics(x, recon[:1], 1.0)


# --------------------------------------------------------------------------------------------
# detector and ensembles


def test_detector_threshold_is_training_quantile_and_predict_uses_pyod_convention():
    train = _images(50, seed=1)
    det = AnomalyDetector(Halve(), score="l2", contamination=0.1).fit(train)
    expected = reconstruction_errors(Halve(), train, ("l2",))["l2"]
    np.testing.assert_array_equal(det.decision_scores_, expected)
    assert det.threshold_ == np.quantile(expected, 0.9)
    assert set(det.labels_) <= {0, 1} and det.labels_.sum() == (expected > det.threshold_).sum()

    dark = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)  # error 0: normal
    bright = torch.full((3, 1, 4, 4), 255, dtype=torch.uint8)  # largest possible error: anomaly
    test = torch.cat([dark, bright])
    assert det.predict(test).tolist() == [0, 0, 0, 1, 1, 1]
    scores = reconstruction_errors(Halve(), test, ("l2",))["l2"]
    np.testing.assert_allclose(det.decision_function(test), scores - det.threshold_)
    np.testing.assert_allclose(det.score_samples(test), -scores)
    assert (det.decision_function(test) > 0).tolist() == [False] * 3 + [True] * 3


def test_detector_errors_and_sklearn_compatibility():
    with pytest.raises(NotFittedError):
        AnomalyDetector(Halve()).predict(_images(2))
    with pytest.raises(ConfigError):
        AnomalyDetector(Halve(), contamination=0.0).fit(_images(4))
    with pytest.raises(ConfigError):
        AnomalyDetector(Halve(), score="elbo").fit(_images(4))
    det = AnomalyDetector(Halve(), score="mse", contamination=0.2, batch_size=8)
    assert det.get_params()["contamination"] == 0.2
    assert clone(det).get_params()["score"] == "mse"
    labels = det.fit_predict(_images(100))
    assert 15 <= labels.sum() <= 20


def test_ensemble_scores_standardises_each_model():
    rng = np.random.default_rng(0)
    a = rng.normal(size=50)
    z = (a - a.mean()) / a.std()
    np.testing.assert_allclose(ensemble_scores([a, 3 * a + 100], "zscore"), z)
    np.testing.assert_allclose(ensemble_scores([a, torch.tensor(a * 2)], "rank"),
                               (np.argsort(np.argsort(a)) + 1) / 50)
    np.testing.assert_allclose(ensemble_scores([a, a + 2], "mean"), a + 1)
    np.testing.assert_allclose(ensemble_scores([a, np.ones(50)], "zscore"), z / 2)
    with pytest.raises(DataError):
        ensemble_scores([a, a[:10]])
    with pytest.raises(DataError):
        ensemble_scores([])
    with pytest.raises(ConfigError):
        ensemble_scores([a], "max")


def test_per_class_errors_returns_a_dataframe():
    assert isinstance(per_class_errors([1.0], [0]), pd.DataFrame)


# --------------------------------------------------------------------------------------------
# benchmark scores, metrics, thresholds, probabilities, ensembles


class Zero(nn.Module):
    """recon = 0 and a 2-d code (the first two pixels), so every score is known by hand."""

    def __init__(self, in_shape=(1, 8, 8)):
        super().__init__()
        self.config = ModelConfig("fcn", in_shape, latent=2)
        self.dummy = nn.Parameter(torch.zeros(1))

    def encode(self, x):
        return x.flatten(1)[:, :2]

    def decode(self, z):
        return torch.zeros(len(z), *self.config.in_shape)

    def forward(self, x):
        return self.decode(self.encode(x))


def test_blur_scores_and_ink_normalisation_by_hand():
    a = torch.zeros(2, 1, 20, 20, dtype=torch.uint8)
    a[:, 0, 4:6, 4:6] = 255
    a[1, 0, 13:15, 13:15] = 255  # twice the ink: a second blob beyond the blur's reach
    s = model_scores(Zero((1, 20, 20)), a, ("l2", "blur", "blur_ink"))
    assert s["l2"][1] == pytest.approx(s["l2"][0] * np.sqrt(2))
    assert s["blur"][1] ** 2 == pytest.approx(2 * s["blur"][0] ** 2, rel=1e-3)
    assert s["blur_ink"][0] == pytest.approx(s["blur"][0] ** 2 / np.sqrt(4 + 1e-3), rel=1e-6)
    assert s["blur_ink"][1] / s["blur_ink"][0] == pytest.approx(2 / np.sqrt(2), rel=1e-3)
    ink1 = model_scores(Zero((1, 20, 20)), a, ("blur", "blur_ink"), ink_power=1.0)  # a protocol's power
    assert ink1["blur_ink"][0] == pytest.approx(s["blur"][0] ** 2 / (4 + 1e-3), rel=1e-6)
    assert ink1["blur_ink"][1] / ink1["blur_ink"][0] == pytest.approx(1.0, rel=1e-3)
    assert set(RECONSTRUCTION_SCORES) | set(LATENT_SCORES) == set(SCORES)
    assert not set(RECONSTRUCTION_SCORES) & set(LATENT_SCORES)


def test_latent_score_is_the_mahalanobis_distance_of_the_codes():
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (400, 1, 8, 8), dtype=torch.uint8, generator=g)
    z = train.flatten(1)[:, :2].double() / 255
    mean, cov = z.mean(0), torch.cov(z.T)
    test = _images(5, (1, 8, 8), seed=1)
    zt = test.flatten(1)[:, :2].double() / 255
    expected = (((zt - mean) @ torch.linalg.inv(cov)) * (zt - mean)).sum(1).numpy()
    got = model_scores(Zero(), test, ("latent",), latent=train)["latent"]
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    with pytest.raises(ConfigError):
        model_scores(Zero(), test, ("latent",))
    with pytest.raises(ConfigError):
        reconstruction_errors(Zero(), test, ("latent",))


def _mahalanobis_knn_by_hand(z_fit: np.ndarray, z: np.ndarray, k: int, own: bool = False,
                             ref: np.ndarray | None = None) -> np.ndarray:
    """Gaussian of all of z_fit; neighbours among z_fit[ref] (all by default); own: z is z_fit."""
    ref = np.arange(len(z_fit)) if ref is None else ref
    cov = np.cov(z_fit.T)
    p = np.linalg.inv(cov + 1e-6 * np.diag(cov).mean() * np.eye(len(cov)))
    diff = z[:, None, :] - z_fit[None, ref, :]
    d = np.sqrt(np.einsum("qnd,de,qne->qn", diff, p, diff))
    if own:
        d[ref, np.arange(len(ref))] = np.inf
    return np.sort(d, axis=1)[:, :k].mean(1)


def test_latent_knn_score_is_the_mean_mahalanobis_distance_to_the_nearest_normal_codes():
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (300, 1, 8, 8), dtype=torch.uint8, generator=g)
    test = _images(40, (1, 8, 8), seed=1)
    z_fit = train.flatten(1)[:, :2].double().numpy() / 255
    z = test.flatten(1)[:, :2].double().numpy() / 255
    both = model_scores(Zero(), test, ("latent", "latent_knn"), latent=train)
    np.testing.assert_allclose(both["latent_knn"], _mahalanobis_knn_by_hand(z_fit, z, LATENT_KNN_K),
                               rtol=1e-6)
    assert both["latent"].shape == (40,)
    with pytest.raises(ConfigError, match="latent_knn"):
        model_scores(Zero(), test, ("latent_knn",))
    with pytest.raises(ConfigError):
        reconstruction_errors(Zero(), test, ("latent_knn",))


def test_latent_knn_leaves_each_fitted_code_out_of_its_own_neighbours(monkeypatch):
    g = torch.Generator().manual_seed(2)
    z = torch.rand(120, 3, generator=g, dtype=torch.float64)
    gauss = LatentGaussian(z)
    own = gauss.neighbours(z, 3, leave_one_out=True)
    np.testing.assert_allclose(own, _mahalanobis_knn_by_hand(z.numpy(), z.numpy(), 3, own=True), rtol=1e-6)
    assert (own > gauss.neighbours(z, 3)).all()  # counting itself would add a distance of 0
    with pytest.raises(DataError):
        gauss.neighbours(z[:10], leave_one_out=True)
    # A large normal set is searched through a fixed subset: bounded work, same answer each time.
    monkeypatch.setattr(scoring, "LATENT_KNN_REFERENCE", 50)
    capped = LatentGaussian(z)
    assert capped.reference.shape == (50, 3)
    loo = capped.neighbours(z, 3, leave_one_out=True)
    ref = torch.nonzero(capped._column >= 0).flatten().numpy()
    assert len(ref) == 50
    np.testing.assert_allclose(loo, _mahalanobis_knn_by_hand(z.numpy(), z.numpy(), 3, own=True, ref=ref),
                               rtol=1e-6)
    np.testing.assert_array_equal(loo, LatentGaussian(z).neighbours(z, 3, leave_one_out=True))


def test_evaluate_scores_against_sklearn():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(300), np.ones(100)].astype(int)
    s = rng.normal(size=400) + 1.5 * y
    r = evaluate_scores(y, s)
    assert r["auc"] == pytest.approx(roc_auc_score(y, s))
    assert r["average_precision"] == pytest.approx(average_precision_score(y, s))
    # f1_max is the best F1 over every cut of the scores, by brute force with sklearn's f1_score.
    brute = max(f1_score(y, (s >= t).astype(int)) for t in np.unique(s))
    assert r["f1_max"] == pytest.approx(brute)
    assert f1_score(y, (s >= r["f1_threshold"]).astype(int)) == pytest.approx(brute)
    assert r["n"] == 400 and r["n_anomalies"] == 100
    with pytest.raises(DataError):
        evaluate_scores(np.zeros(4), np.arange(4.0))


def test_threshold_helpers():
    rng = np.random.default_rng(1)
    s = rng.normal(size=1000)
    t = choose_threshold("contamination", s, contamination=0.05)
    assert np.mean(s > t) == pytest.approx(0.05, abs=0.002)
    assert choose_threshold("manual", s, value=0.3) == 0.3
    y = (s > 1.0).astype(int)  # perfectly separable at 1.0
    assert threshold_metrics(y, s, choose_threshold("best_f1", s, labels=y))["f1"] == 1.0
    with pytest.raises(ConfigError):
        choose_threshold("best_f1", s)
    # A share of the test set to flag, not PyOD's training contamination: in one-class mode most
    # test images are anomalies (0.9 on MNIST); the detectors' own parameter keeps (0, 0.5].
    t = choose_threshold("contamination", s, contamination=0.9)
    assert np.mean(s > t) == pytest.approx(0.9, abs=0.002)
    for bad in (0.0, 1.0):
        with pytest.raises(ConfigError):
            choose_threshold("contamination", s, contamination=bad)
    with pytest.raises(ConfigError):
        choose_threshold("otsu", s)


def test_detector_with_latent_score_fits_on_normal_codes_and_predict_proba_follows_pyod():
    train = _images(300, (1, 8, 8), seed=2)
    test = _images(50, (1, 8, 8), seed=3)
    det = AnomalyDetector(Zero(), score="latent", contamination=0.1)
    with pytest.raises(NotFittedError):
        det.anomaly_scores(test)
    det.fit(train)
    expected = model_scores(Zero(), test, ("latent",), latent=train)["latent"]
    np.testing.assert_allclose(det.anomaly_scores(test), expected, rtol=1e-9)
    s = det.anomaly_scores(test)
    train_s = det.decision_scores_
    lin = det.predict_proba(test)
    assert lin.shape == (50, 2)
    lo, hi = train_s.min(), train_s.max()
    np.testing.assert_allclose(lin[:, 1], np.clip((s - lo) / (hi - lo), 0, 1))
    np.testing.assert_allclose(lin.sum(1), 1.0)
    uni = det.predict_proba(test, method="unify")
    z = (s - train_s.mean()) / (train_s.std() * np.sqrt(2))
    np.testing.assert_allclose(uni[:, 1], np.clip(erf(z), 0, 1))
    with pytest.raises(ConfigError):
        det.predict_proba(test, method="softmax")
    det.set_threshold(float(np.median(s)))
    assert det.predict(test).sum() == int((s > np.median(s)).sum())


def test_ensemble_detector_standardises_members_by_their_training_scores():
    train = _images(200, (1, 8, 8), seed=4)
    test = _images(30, (1, 8, 8), seed=5)
    members = [AnomalyDetector(Zero(), score="l2"), AnomalyDetector(Zero(), score="latent")]
    ens = EnsembleDetector(members, contamination=0.2).fit(train)
    parts = []
    for d in members:
        parts.append((d.anomaly_scores(test) - d.decision_scores_.mean()) / d.decision_scores_.std())
    np.testing.assert_allclose(ens.anomaly_scores(test), np.mean(parts, axis=0), rtol=1e-9)
    np.testing.assert_allclose(ens.anomaly_scores(test[:1]), ens.anomaly_scores(test)[:1], rtol=1e-9)
    assert ens.labels_.mean() == pytest.approx(0.2, abs=0.01)
    seen = []
    ens.anomaly_scores(test, progress=lambda done, total, sec: seen.append((done, total)))
    assert seen[-1] == (60, 60) and all(t == 60 for _, t in seen)


def test_detector_with_latent_knn_fits_its_threshold_on_leave_one_out_scores():
    g = torch.Generator().manual_seed(3)
    train = torch.randint(0, 256, (200, 1, 8, 8), dtype=torch.uint8, generator=g)
    test = _images(30, (1, 8, 8), seed=4)
    det = AnomalyDetector(Zero(), score="latent_knn", contamination=0.1).fit(train)
    z_fit = train.flatten(1)[:, :2].double().numpy() / 255
    own = _mahalanobis_knn_by_hand(z_fit, z_fit, LATENT_KNN_K, own=True)
    np.testing.assert_allclose(det.decision_scores_, own, rtol=1e-6)
    assert (det.labels_ == 1).sum() == 20  # 10% of the normal images, their own code left out
    direct = model_scores(Zero(), test, ("latent_knn",), latent=train)["latent_knn"]
    np.testing.assert_allclose(det.anomaly_scores(test), direct, rtol=1e-9)
    with pytest.raises(NotFittedError):
        AnomalyDetector(Zero(), score="latent_knn").anomaly_scores(test)


def test_latent_gaussian_of_non_finite_codes_is_one_clear_sentence():
    z = torch.rand(20, 3, dtype=torch.float64)
    z[4, 1] = float("nan")
    with pytest.raises(DataError, match="non-finite latent codes"):
        LatentGaussian(z)
    # Identical codes (a collapsed model): finite, and a distance of 0 to them.
    same = LatentGaussian(torch.ones(30, 3, dtype=torch.float64))
    assert np.isfinite(same.neighbours(torch.ones(2, 3))).all()
    assert np.isfinite(same(torch.zeros(2, 3))).all()
