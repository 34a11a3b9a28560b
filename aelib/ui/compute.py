"""Cached computations over typed values: a ``ModelChoice`` hashes as its id, ``Images`` as its key.

Shared by every session (``st.cache_data``), each bounded; a key names the exact model and images,
so one user's result is another's only when it is the same model on the same images.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from .. import checkpoints, detectors, explore, scoring
from ..models import batch_size_for
from .choices import ModelChoice
from .sources import Images


def _batch(m: ModelChoice) -> int:
    """Images per batch, so one batch's activations stay bounded whatever the model."""
    return batch_size_for(m.config)


HASH = {ModelChoice: lambda m: m.id, Images: lambda i: i.key}  # the values' identities, never their tensors


@st.cache_data(max_entries=64, show_spinner=False, hash_funcs=HASH)
def errors(m: ModelChoice, images: Images, metrics: tuple[str, ...] = ("mse",)) -> dict[str, np.ndarray]:
    """Per-image errors / anomaly scores (see :func:`aelib.scoring.reconstruction_errors`)."""
    beta = checkpoints.trained_beta(m.meta)
    return scoring.reconstruction_errors(m.model, images.tensor, metrics, batch_size=_batch(m), beta=beta)


@st.cache_data(max_entries=64, show_spinner=False, hash_funcs=HASH)
def reconstructions(m: ModelChoice, images: Images) -> np.ndarray:
    """Display arrays of the reconstructions."""
    recon = explore.reconstruct_images(m.model, images.tensor, batch_size=_batch(m))
    return explore.to_display(recon, m.config.output_range)


@st.cache_data(max_entries=32, show_spinner=False, hash_funcs=HASH)
def codes(m: ModelChoice, images: Images) -> np.ndarray:
    """Flattened latent codes (N, D) (the VAE's means)."""
    return explore.encode_images(m.model, images.tensor, batch_size=_batch(m)).numpy()


@st.cache_data(max_entries=32, show_spinner=False, hash_funcs=HASH)
def latent_map(m: ModelChoice, images: Images) -> tuple[np.ndarray, np.ndarray | None]:
    return explore.latent_map(m.model, images.tensor, "pca", batch_size=_batch(m))


@st.cache_data(max_entries=32, show_spinner=False, hash_funcs=HASH)
def interpolation(m: ModelChoice, a: Images, b: Images, steps: int, method: str) -> np.ndarray:
    """Display frames along the latent path from image a to image b (both ends included)."""
    return explore.interpolate(m.model, a.tensor[0], b.tensor[0], steps, method)


@st.cache_data(max_entries=32, show_spinner=False, hash_funcs=HASH)
def prior_samples(m: ModelChoice, n: int, temperature: float, seed: int) -> np.ndarray:
    return explore.prior_samples(m.model, n, temperature, seed)


@st.cache_data(max_entries=32, show_spinner=False, hash_funcs=HASH)
def traversal(m: ModelChoice, image: Images, dim: int, steps: int, scale: float) -> np.ndarray:
    return explore.traverse(m.model, image.tensor[0], dim, np.linspace(-3, 3, steps), scale=scale)


@st.cache_data(max_entries=32, show_spinner=False, hash_funcs=HASH)
def gallery(m: ModelChoice, images: Images) -> dict[str, np.ndarray]:
    return explore.gallery(m.model, images.tensor, list(range(len(images))), batch_size=_batch(m))


@st.cache_data(max_entries=16, show_spinner=False, hash_funcs=HASH)
def denoise(m: ModelChoice, images: Images, kind: str, level: float, seed: int) -> dict[str, np.ndarray]:
    return explore.denoise_comparison(m.model, images.tensor, kind, level, seed, batch_size=_batch(m))


@st.cache_data(max_entries=32, show_spinner=False)
def roc(labels: np.ndarray, scores: np.ndarray) -> dict:
    return scoring.roc(labels, scores)


@st.cache_data(max_entries=32, show_spinner=False)
def evaluation(labels: np.ndarray, scores: np.ndarray) -> dict:
    """ROC AUC, AUPR, F1-max and its threshold (:func:`aelib.scoring.evaluate_scores`)."""
    return scoring.evaluate_scores(labels, scores)


def psnr_db(mse: np.ndarray, value_range: tuple[float, float]) -> float:
    """Mean PSNR in dB of images with these per-image MSEs (a perfect image counts at 120 dB)."""
    lo, hi = value_range
    return float(np.mean(np.minimum(scoring.psnr_from_mse(mse, hi - lo), 120.0)))


@st.cache_data(max_entries=16, show_spinner=False, hash_funcs=HASH)
def projection(m: ModelChoice, images: Images, method: str) -> tuple[np.ndarray, np.ndarray | None]:
    """2-D map of the images' codes (PCA or t-SNE), computed once per model, images and method."""
    return explore.project_codes(codes(m, images), method)


@st.cache_data(max_entries=64, show_spinner=False, hash_funcs=HASH)
def decoded(m: ModelChoice, z: np.ndarray) -> np.ndarray:
    """Display arrays of decoded flattened codes (M, D)."""
    return explore.decode_display(m.model, z)


@st.cache_data(max_entries=16, show_spinner=False, hash_funcs=HASH)
def plane(m: ModelChoice, x_range: tuple[float, float], y_range: tuple[float, float], n: int):
    return explore.latent_plane(m.model, x_range, y_range, n)


@st.cache_resource(max_entries=16, show_spinner=False, hash_funcs=HASH)
def latent_gaussian(m: ModelChoice, normal: Images) -> scoring.LatentGaussian:
    """The Gaussian of ``m``'s codes of ``normal``: fitted once, for both latent scores of every image
    scored against it (the table's test set and each uploaded image). Read-only once made."""
    return scoring.LatentGaussian(scoring.latent_codes(m.model, normal.tensor, _batch(m)))


@st.cache_data(max_entries=64, show_spinner=False, hash_funcs=HASH)
def scores(m: ModelChoice, images: Images, score: str, normal: Images | None = None) -> np.ndarray:
    """One anomaly score of every image (the latent scores fitted on ``normal``; ELBO with the run's
    beta)."""
    latent = None if normal is None else latent_gaussian(m, normal)
    beta = checkpoints.trained_beta(m.meta)
    return scoring.model_scores(
        m.model, images.tensor, (score,), batch_size=_batch(m), beta=beta, latent=latent
    )[score]


@st.cache_data(max_entries=16, show_spinner=False, hash_funcs=HASH)
def ensemble(
    members: tuple[ModelChoice, ...], score_names: tuple[str, ...], normal: Images, images: Images
) -> np.ndarray:
    """Scores of an ensemble of detectors (the recommended detector), standardised on ``normal``."""
    dets = [
        detectors.AnomalyDetector(m.model, score=s, beta=checkpoints.trained_beta(m.meta))
        for m, s in zip(members, score_names)
    ]
    return detectors.EnsembleDetector(dets).fit(normal.tensor).anomaly_scores(images.tensor)


@st.cache_data(max_entries=16, show_spinner="Preparing the checkpoint...", hash_funcs=HASH)
def checkpoint_bytes(m: ModelChoice) -> bytes:
    """A model's checkpoint file, checked as a load would check it; made once per model, so the
    download button hands it over at once."""
    return checkpoints.checked_bytes(m.model, m.meta)
