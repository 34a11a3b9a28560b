"""Anomaly detectors in the scikit-learn / PyOD dialect, around :mod:`aelib.scoring`'s scores.

Kept apart from :mod:`aelib.scoring` because they subclass scikit-learn's estimators: importing
scikit-learn costs about a second, which training and reconstruction should not pay.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import erf
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.exceptions import NotFittedError
from torch import nn

from .errors import ConfigError, DataError
from .forward import Progress
from .models import is_vae
from .scoring import (
    LATENT_SCORES,
    METRICS,
    SCORES,
    ImagesLike,
    LatentGaussian,
    contamination_threshold,
    latent_codes,
    model_scores,
)

PROBA_METHODS = ("linear", "unify")


class _ThresholdedDetector(OutlierMixin, BaseEstimator):
    """``fit`` / ``predict`` / ``predict_proba`` around a subclass's ``anomaly_scores``."""

    def _check_params(self) -> None:
        if not 0.0 < float(self.contamination) <= 0.5:
            raise ConfigError(f"contamination must be in (0, 0.5], got {self.contamination}.")

    def _fit_scores(self, X: ImagesLike, progress: Progress | None) -> np.ndarray:
        raise NotImplementedError

    def fit(self, X: ImagesLike, y: None = None, progress: Progress | None = None):
        """Fit on normal images: score them and set ``threshold_``. ``y`` is ignored (unsupervised)."""
        self._check_params()
        scores = np.asarray(self._fit_scores(X, progress), dtype=np.float64)
        if len(scores) == 0:
            raise DataError("fit needs at least one image.")
        self.decision_scores_ = scores
        self.threshold_ = contamination_threshold(scores, self.contamination)
        self.labels_ = (scores > self.threshold_).astype(np.int64)
        # PyOD keeps the training scores' mean and (population) std for predict_proba("unify").
        self._mu = float(np.mean(scores))
        self._sigma = float(np.std(scores))
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit(X) on normal "
                                 "images first.")

    def set_threshold(self, threshold: float) -> None:
        """Replace ``threshold_`` (e.g. by :func:`choose_threshold` on labelled or unlabelled scores)."""
        self._check_fitted()
        if not math.isfinite(float(threshold)):
            raise ConfigError(f"The threshold must be a finite number, got {threshold}.")
        self.threshold_ = float(threshold)
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(np.int64)

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

    def predict_proba(self, X: ImagesLike, method: str = "linear", scores: np.ndarray | None = None
                      ) -> np.ndarray:
        """(N, 2) array: P(normal), P(anomaly) per image, as PyOD's ``predict_proba`` defines them.

        * ``"linear"``: the anomaly score min-max scaled by the training scores
          (``sklearn.preprocessing.MinMaxScaler`` fitted on ``decision_scores_``), clipped to [0, 1].
        * ``"unify"``: ``erf((score - mean) / (std * sqrt(2)))`` with the training scores' mean
          and std, clipped to [0, 1] (Kriegel et al.'s unified outlier scores, as in PyOD).

        ``scores``: the images' anomaly scores if already computed (skips the forward pass).
        """
        from sklearn.preprocessing import MinMaxScaler

        self._check_fitted()
        if method not in PROBA_METHODS:
            raise ConfigError(f"Unknown probability method {method!r}; choose from {PROBA_METHODS}.")
        s = self.anomaly_scores(X) if scores is None else np.asarray(scores, dtype=np.float64).ravel()
        probs = np.zeros((len(s), 2))
        if method == "linear":
            scaler = MinMaxScaler().fit(self.decision_scores_.reshape(-1, 1))
            probs[:, 1] = scaler.transform(s.reshape(-1, 1)).ravel().clip(0, 1)
        else:
            sigma = self._sigma if self._sigma > 0 else 1.0
            probs[:, 1] = erf((s - self._mu) / (sigma * np.sqrt(2))).clip(0, 1)
        probs[:, 0] = 1 - probs[:, 1]
        return probs


class AnomalyDetector(_ThresholdedDetector):
    """Anomaly detector around a trained autoencoder, in the scikit-learn / PyOD dialect.

    It does not train the network (that is :mod:`aelib.train`): ``fit(X)`` on normal images fits
    what the score needs (the latent Gaussian for ``"latent"`` and ``"latent_knn"``), scores them and sets
    ``threshold_`` at their ``1 - contamination`` quantile.

    * ``decision_scores_``: anomaly scores of the training images (higher = more anomalous).
    * ``threshold_``, ``labels_`` (training predictions); :meth:`set_threshold` replaces it.
    * ``anomaly_scores(X)``: the raw scores (higher = more anomalous).
    * ``score_samples(X)``: like scikit-learn, higher = more normal (minus the anomaly score).
    * ``decision_function(X)``: anomaly score minus ``threshold_``; > 0 means anomaly.
    * ``predict(X)``: **PyOD convention**, 1 = anomaly, 0 = normal (scikit-learn's own outlier
      detectors return -1 / 1 instead). An image is an anomaly when its score is strictly above
      ``threshold_``, as in PyOD.
    * ``predict_proba(X, method="linear" | "unify")``: PyOD's outlier probabilities.

    ``score`` is one of :data:`SCORES` (``"l2"``, the reference score, by default); ``beta`` is
    the KL weight of ``"elbo"`` (default :func:`aelib.models.default_beta`).
    """

    def __init__(self, model: nn.Module, score: str = "l2", contamination: float = 0.1,
                 batch_size: int | None = None, beta: float | None = None):
        self.model = model
        self.score = score
        self.contamination = contamination
        self.batch_size = batch_size
        self.beta = beta

    def _check_params(self) -> None:
        if self.score not in SCORES:
            raise ConfigError(f"Unknown score {self.score!r}; choose from {METRICS}.")
        if self.score == "elbo" and not is_vae(self.model):
            raise ConfigError("The 'elbo' score needs a variational autoencoder (family 'vae').")
        super()._check_params()

    def anomaly_scores(self, X: ImagesLike, progress: Progress | None = None) -> np.ndarray:
        """Raw anomaly scores (higher = more anomalous); only the latent scores need fitting first."""
        self._check_params()
        latent = None
        if self.score in LATENT_SCORES:
            if not hasattr(self, "latent_"):
                raise NotFittedError(f"The {self.score!r} score needs fit(X) on normal images first.")
            latent = self.latent_
        return model_scores(self.model, X, (self.score,), self.batch_size, self.beta, latent,
                            progress)[self.score]

    def _fit_scores(self, X: ImagesLike, progress: Progress | None) -> np.ndarray:
        if self.score not in LATENT_SCORES:
            return self.anomaly_scores(X, progress)
        z = latent_codes(self.model, X, self.batch_size, progress)  # one pass: fit and score
        self.latent_ = LatentGaussian(z)
        if self.score == "latent":
            return self.latent_(z)
        # Each normal image's own code is in the fitted set: leave it out, or every training score
        # (and the contamination threshold set from them) would come out too low.
        return self.latent_.neighbours(z, leave_one_out=True)

    def fit(self, X: ImagesLike, y: None = None, progress: Progress | None = None) -> AnomalyDetector:
        super().fit(X, y, progress)
        self.n_features_in_ = int(self.model.config.n_pixels)
        return self


class EnsembleDetector(_ThresholdedDetector):
    """The mean of several detectors' standardised scores (seeds, families or scores).

    ``fit(X)`` fits every member on the normal images and keeps the mean and standard deviation
    of each member's training scores; an image's score is the average over members of
    ``(score - mean) / std``. The standardisation uses the normal training images only, so a
    single image scores the same alone or in a batch (the benchmark's :func:`ensemble_scores`
    standardises over the scored set instead).
    """

    def __init__(self, detectors: Sequence[AnomalyDetector], contamination: float = 0.1):
        self.detectors = detectors
        self.contamination = contamination

    def _check_params(self) -> None:
        if not self.detectors:
            raise ConfigError("An ensemble needs at least one detector.")
        super()._check_params()

    def _members(self, progress: Progress | None):
        """(detector, progress for it) pairs; one progress from 0 to n * members overall."""
        k = len(self.detectors)
        for i, d in enumerate(self.detectors):
            if progress is None:
                yield d, None
            else:
                yield d, (lambda done, total, sec, i=i: progress(i * total + done, k * total, sec))

    def _fit_scores(self, X: ImagesLike, progress: Progress | None) -> np.ndarray:
        self.member_mean_, self.member_std_ = [], []
        for d, p in self._members(progress):
            d.fit(X, progress=p)
            self.member_mean_.append(float(np.mean(d.decision_scores_)))
            sd = float(np.std(d.decision_scores_))
            self.member_std_.append(sd if sd > 0 else 1.0)
        return self._combine([d.decision_scores_ for d in self.detectors])

    def _combine(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        return np.mean([(a - m) / s for a, m, s in zip(arrays, self.member_mean_, self.member_std_)],
                       axis=0)

    def anomaly_scores(self, X: ImagesLike, progress: Progress | None = None) -> np.ndarray:
        """Mean standardised member score (higher = more anomalous); needs fitting."""
        if not hasattr(self, "member_mean_"):
            raise NotFittedError("This EnsembleDetector is not fitted yet; call fit(X) on normal "
                                 "images first.")
        return self._combine([d.anomaly_scores(X, p) for d, p in self._members(progress)])
