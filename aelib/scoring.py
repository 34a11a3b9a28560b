"""Reconstruction errors, anomaly scores and their evaluation.

The anomaly score of the reference (``../shared/REFERENCE.md`` s.1) is ``"l2"``: the L2 norm of an
image's reconstruction error, sqrt(sum of squared pixel errors). It ranks images exactly like the
per-pixel mean squared error (``"mse"``). Higher = more anomalous.

Images come in as a resident uint8 tensor (N, C, H, W) and are scaled to the model's pixel range
one batch at a time (:func:`aelib.data.to_float`), so memory is one batch of floats whatever N.
Evaluation metrics are scikit-learn's (``roc_curve``, ``roc_auc_score``, ``average_precision_score``,
``confusion_matrix``, ``precision_recall_fscore_support``); :class:`AnomalyDetector` speaks the
scikit-learn / PyOD estimator dialect.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import sklearn
import torch
from scipy.stats import rankdata
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.exceptions import NotFittedError
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)
from torch import nn

from .data import ImageDataset, to_float
from .errors import ConfigError, DataError
from .models import default_beta, is_vae, kl_divergence, reconstruct

METRICS = ("mse", "mae", "l2", "elbo")
ENSEMBLE_METHODS = ("zscore", "rank", "mean")

ImagesLike = torch.Tensor | np.ndarray | ImageDataset


# --------------------------------------------------------------------------------------------
# Batches of (input, reconstruction)


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def as_image_tensor(images: ImagesLike, in_shape: Sequence[int]) -> torch.Tensor:
    """A uint8 (N, C, H, W) tensor matching ``in_shape``, without copying when possible.

    Accepts a tensor, a NumPy array or an :class:`ImageDataset`; (N, H, W) for one channel and
    channels-last (N, H, W, C) arrays (as in the reference ``.npy`` files) are also accepted.
    """
    if isinstance(images, ImageDataset):
        images = images.images
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise DataError(f"Expected images as a uint8 tensor or array, got {type(images).__name__}.")
    if images.dtype != torch.uint8:
        raise DataError(f"Images must be uint8 pixels in [0, 255], got dtype {images.dtype}.")
    c, h, w = (int(v) for v in in_shape)
    if images.dim() == 3 and c == 1 and tuple(images.shape[1:]) == (h, w):
        images = images.unsqueeze(1)
    elif images.dim() == 4 and tuple(images.shape[1:]) != (c, h, w) and tuple(images.shape[1:]) == (h, w, c):
        images = images.permute(0, 3, 1, 2)
    if images.dim() != 4 or tuple(images.shape[1:]) != (c, h, w):
        raise DataError(f"The model expects images of shape (N, {c}, {h}, {w}), "
                        f"got {tuple(images.shape)}.")
    return images


# torch.no_grad() on a generator disables gradients only while the generator runs, not in the
# caller's loop body between batches (a `with` block inside the generator would leak into it).
@torch.no_grad()
def _forward_batches(model: nn.Module, images: ImagesLike, batch_size: int, with_latent: bool
                     ) -> Iterator[tuple[torch.Tensor, ...]]:
    """Yields (x, recon) or, for a VAE with ``with_latent``, (x, recon, mu, logvar), in eval mode."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size}.")
    cfg = model.config
    data = as_image_tensor(images, cfg.in_shape)
    device = _device_of(model)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(data), batch_size):
            x = to_float(data[start:start + batch_size].to(device, non_blocking=True), cfg.output_range)
            if with_latent:
                recon, mu, logvar = model(x)  # eval mode: the VAE decodes its mean
                yield x, recon, mu, logvar
            else:
                yield x, reconstruct(model, x)
    finally:
        model.train(was_training)


@torch.no_grad()
def reconstruct_batches(model: nn.Module, images_uint8: ImagesLike, batch_size: int = 512
                        ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Iterate ``(x, recon)`` float batches in the model's range (``model.config.output_range``).

    Batches are sliced from the resident uint8 tensor and scaled on the model's device; the model
    runs in eval mode without gradients (a VAE decodes its mean) and gets its previous mode back
    when the iterator is exhausted or closed.
    """
    yield from _forward_batches(model, images_uint8, batch_size, with_latent=False)


# --------------------------------------------------------------------------------------------
# Per-image reconstruction errors


def reconstruction_errors(model: nn.Module, images_uint8: ImagesLike, metrics: Sequence[str] = ("mse",),
                          batch_size: int = 512, beta: float | None = None) -> dict[str, np.ndarray]:
    """Per-image errors, one float64 array of length N per requested metric.

    * ``"mse"``: mean over pixels of the squared error.
    * ``"mae"``: mean over pixels of the absolute error.
    * ``"l2"``: sqrt of the sum of squared pixel errors - the reference anomaly score.
      Equal to sqrt(n_pixels * mse), so it ranks images exactly like ``"mse"``.
    * ``"elbo"`` (VAE only): negative ELBO per image, consistent with the training loss
      (:func:`aelib.models.vae_loss`): ``mse + beta * KL(N(mu, sigma^2) || N(0, I))``, with the
      reconstruction decoded deterministically from the mean and ``beta`` defaulting to
      :func:`aelib.models.default_beta` (1 for the reference preset, 1 / n_pixels otherwise).
      Its mean over a batch equals the eval-mode training loss at that beta.

    Errors are measured in the model's pixel range. Unknown metrics, or ``"elbo"`` for a model
    that is not a VAE, raise :class:`ConfigError`.
    """
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ConfigError(f"Unknown error metric(s) {unknown}; choose from {METRICS}.")
    want_kl = "elbo" in metrics
    if want_kl and not is_vae(model):
        raise ConfigError("The 'elbo' score needs a variational autoencoder (family 'vae'); "
                          "use 'l2' or 'mse' for this model.")
    n_pixels = model.config.n_pixels
    kl_beta = default_beta(model.config) if beta is None else beta
    parts: dict[str, list[torch.Tensor]] = {m: [] for m in metrics}
    for batch in _forward_batches(model, images_uint8, batch_size, with_latent=want_kl):
        x, recon = batch[0], batch[1]
        diff = (recon - x).flatten(1).double()
        sse = diff.square().sum(1)
        mse = sse / n_pixels
        for m in metrics:
            if m == "mse":
                v = mse
            elif m == "l2":
                v = sse.sqrt()
            elif m == "mae":
                v = diff.abs().sum(1) / n_pixels
            else:
                v = mse + kl_beta * kl_divergence(batch[2].double(), batch[3].double())
            parts[m].append(v.cpu())
    return {m: (torch.cat(v).numpy() if v else np.zeros(0)) for m, v in parts.items()}


def per_class_errors(errors: np.ndarray, labels: Sequence | np.ndarray | torch.Tensor,
                     class_names: Sequence[str] | Mapping | None = None) -> pd.DataFrame:
    """One row per class: ``class, n, mean, std, median`` of the errors (for a bar chart).

    ``class_names`` maps label -> name (a list indexed by the label, or a dict); rows are sorted
    by label. ``std`` is the population standard deviation (ddof=0), so a class of one image
    gets 0 rather than NaN.
    """
    errors = np.asarray(errors, dtype=np.float64).ravel()
    labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    labels = labels.ravel()
    if len(errors) != len(labels):
        raise DataError(f"errors ({len(errors)}) and labels ({len(labels)}) differ in length.")
    grouped = pd.Series(errors).groupby(labels, sort=True)
    out = pd.DataFrame({"n": grouped.size(), "mean": grouped.mean(), "std": grouped.std(ddof=0),
                        "median": grouped.median()})
    keys = list(out.index)
    if class_names is not None:
        def name(k):
            try:
                return str(class_names[k])
            except (IndexError, KeyError, TypeError):
                return str(k)
        names = [name(k) for k in keys]
    else:
        names = [str(k) for k in keys]
    out.insert(0, "class", names)
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Evaluation against labels (1 = anomaly)


def _binary_labels(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    s = scores.cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    y, s = y.ravel(), s.ravel().astype(np.float64, copy=False)
    if len(y) != len(s):
        raise DataError(f"labels ({len(y)}) and scores ({len(s)}) differ in length.")
    if y.dtype == bool:
        y = y.astype(np.int8)
    if not np.isin(y, (0, 1)).all():
        raise DataError("Labels must be 0 (normal) or 1 (anomaly).")
    if not np.isfinite(s).all():
        raise DataError("Scores contain NaN or infinite values.")
    return y.astype(np.int8, copy=False), s


def roc(labels, scores) -> dict:
    """ROC curve and summary of anomaly ``scores`` against ``labels`` (1 = anomaly).

    Returns ``fpr, tpr, thresholds`` (``sklearn.metrics.roc_curve``), ``auc``
    (``roc_auc_score``) and ``average_precision`` (``average_precision_score``, area under the
    precision-recall curve with anomalies as the positive class).
    """
    y, s = _binary_labels(labels, scores)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        only = "anomalies" if n_pos else "normal images"
        raise DataError(f"ROC AUC needs both normal (0) and anomalous (1) labels; these {len(y)} "
                        f"labels are all {only}.")
    fpr, tpr, thresholds = roc_curve(y, s)
    return {"fpr": fpr, "tpr": tpr, "thresholds": thresholds, "auc": float(roc_auc_score(y, s)),
            "average_precision": float(average_precision_score(y, s))}


def threshold_metrics(labels, scores, threshold: float) -> dict:
    """Confusion counts and precision/recall/F1/accuracy when ``score >= threshold`` => anomaly.

    Counts from ``sklearn.metrics.confusion_matrix``, rates from
    ``precision_recall_fscore_support`` (anomaly = positive class, ``zero_division=0``).
    About 3-4 ms for 20,000 scores, fast enough for a slider.
    """
    y, s = _binary_labels(labels, scores)
    pred = (s >= threshold).astype(np.int8)
    # Inputs are validated above; skipping sklearn's re-validation halves the time per call.
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred, labels=[0, 1]).ravel())
        precision, recall, f1, _ = precision_recall_fscore_support(
            y, pred, labels=[0, 1], pos_label=1, average="binary", zero_division=0)
    n = len(y)
    return {"threshold": float(threshold), "precision": float(precision), "recall": float(recall),
            "f1": float(f1), "accuracy": (tp + tn) / n if n else 0.0,
            "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def image_metrics(x: torch.Tensor | np.ndarray, recon: torch.Tensor | np.ndarray,
                  data_range: float) -> dict[str, np.ndarray]:
    """Per-image ``mse`` and ``psnr`` (dB) between two float batches of the same shape.

    ``data_range`` is max - min of the pixel range (1 for [0, 1], 2 for [-1, 1]). A perfect
    reconstruction has PSNR ``inf``. SSIM is not offered: it would need scikit-image or
    torchmetrics, which aelib does not depend on.
    """
    x = torch.as_tensor(x)
    recon = torch.as_tensor(recon)
    if x.shape != recon.shape:
        raise DataError(f"Images {tuple(x.shape)} and reconstructions {tuple(recon.shape)} differ in shape.")
    if data_range <= 0:
        raise ConfigError(f"data_range must be positive, got {data_range}.")
    if x.dim() < 2:
        x, recon = x.reshape(1, -1), recon.reshape(1, -1)
    mse = (recon.double() - x.double()).flatten(1).square().mean(1).cpu().numpy()
    with np.errstate(divide="ignore"):
        psnr = 10.0 * np.log10(float(data_range) ** 2 / mse)
    return {"mse": mse, "psnr": psnr}


# --------------------------------------------------------------------------------------------
# The detector (scikit-learn / PyOD dialect)


class AnomalyDetector(OutlierMixin, BaseEstimator):
    """Anomaly detector around a trained autoencoder, in the scikit-learn / PyOD dialect.

    It does not train the network (that is :mod:`aelib.train`): ``fit(X)`` scores the (normal)
    training images and sets ``threshold_`` at their ``1 - contamination`` quantile.

    * ``decision_scores_``: anomaly scores of the training images (higher = more anomalous).
    * ``threshold_``, ``labels_`` (training predictions).
    * ``score_samples(X)``: like scikit-learn, higher = more normal (minus the anomaly score).
    * ``decision_function(X)``: anomaly score minus ``threshold_``; > 0 means anomaly.
    * ``predict(X)``: **PyOD convention**, 1 = anomaly, 0 = normal (scikit-learn's own outlier
      detectors return -1 / 1 instead). An image is an anomaly when its score is strictly above
      ``threshold_``, as in PyOD.

    ``score`` is one of :data:`METRICS` (``"l2"``, the reference score, by default).
    """

    def __init__(self, model: nn.Module, score: str = "l2", contamination: float = 0.1,
                 batch_size: int = 512):
        self.model = model
        self.score = score
        self.contamination = contamination
        self.batch_size = batch_size

    def _check_params(self) -> None:
        if self.score not in METRICS:
            raise ConfigError(f"Unknown score {self.score!r}; choose from {METRICS}.")
        if self.score == "elbo" and not is_vae(self.model):
            raise ConfigError("The 'elbo' score needs a variational autoencoder (family 'vae').")
        if not 0.0 < float(self.contamination) <= 0.5:
            raise ConfigError(f"contamination must be in (0, 0.5], got {self.contamination}.")

    def anomaly_scores(self, X: ImagesLike) -> np.ndarray:
        """Raw anomaly scores (higher = more anomalous); needs no fitting."""
        self._check_params()
        return reconstruction_errors(self.model, X, (self.score,), self.batch_size)[self.score]

    def fit(self, X: ImagesLike, y: None = None) -> AnomalyDetector:
        """Score the training images and set ``threshold_``. ``y`` is ignored (unsupervised)."""
        self._check_params()
        scores = self.anomaly_scores(X)
        if len(scores) == 0:
            raise DataError("fit needs at least one image.")
        self.decision_scores_ = scores
        self.threshold_ = float(np.quantile(scores, 1.0 - float(self.contamination)))
        self.labels_ = (scores > self.threshold_).astype(np.int64)
        self.n_features_in_ = int(self.model.config.n_pixels)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            raise NotFittedError("This AnomalyDetector is not fitted yet; call fit(X) on normal "
                                 "images first.")

    def score_samples(self, X: ImagesLike) -> np.ndarray:
        """Opposite of the anomaly score: higher = more normal (scikit-learn convention)."""
        return -self.anomaly_scores(X)

    def decision_function(self, X: ImagesLike) -> np.ndarray:
        """Anomaly score minus ``threshold_``: positive = anomaly (PyOD convention)."""
        self._check_fitted()
        return self.anomaly_scores(X) - self.threshold_

    def predict(self, X: ImagesLike) -> np.ndarray:
        """1 = anomaly, 0 = normal (PyOD convention)."""
        return (self.decision_function(X) > 0).astype(np.int64)

    def fit_predict(self, X: ImagesLike, y: None = None) -> np.ndarray:
        """Fit on ``X`` and return its training labels (1 = anomaly)."""
        return self.fit(X).labels_


# --------------------------------------------------------------------------------------------
# Ensembles over seeds / models


def ensemble_scores(score_arrays: Sequence[np.ndarray], method: str = "zscore") -> np.ndarray:
    """Combine several models' anomaly scores for the same images into one array.

    * ``"zscore"``: standardise each model's scores (mean 0, std 1) and average them.
    * ``"rank"``: replace each model's scores by their normalised ranks in (0, 1] and average.
    * ``"mean"``: plain average of the raw scores (only sensible on a common scale).

    A model whose scores are all equal contributes zeros under ``"zscore"``.
    """
    if method not in ENSEMBLE_METHODS:
        raise ConfigError(f"Unknown ensemble method {method!r}; choose from {ENSEMBLE_METHODS}.")
    arrays = [np.asarray(a.cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64).ravel()
              for a in score_arrays]
    if not arrays:
        raise DataError("ensemble_scores needs at least one array of scores.")
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise DataError(f"Every model must score the same images; got lengths {[len(a) for a in arrays]}.")
    if not all(np.isfinite(a).all() for a in arrays):
        raise DataError("Scores contain NaN or infinite values.")
    stacked = np.stack(arrays)
    if method == "zscore":
        std = stacked.std(axis=1, keepdims=True)
        stacked = (stacked - stacked.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0)
    elif method == "rank":
        stacked = rankdata(stacked, axis=1) / max(n, 1)
    return stacked.mean(axis=0)
