"""Reconstruction errors, anomaly scores and their evaluation.

The seed's reference anomaly score is ``"l2"``: the L2 norm of an
image's reconstruction error, sqrt(sum of squared pixel errors). It ranks images exactly like the
per-pixel mean squared error (``"mse"``). Higher = more anomalous. :data:`SCORES` lists every
score aelib has; the one-class benchmark's best (``blur``, ``blur_ink``, ``latent``) are here, so
the benchmark, the CLI and the app compute them with the same code.

Images come in as a resident uint8 tensor (N, C, H, W) and are scaled to the model's pixel range
one batch at a time (:func:`aelib.data.to_float`), so memory is one batch of floats whatever N.
Evaluation metrics are scikit-learn's (``roc_curve``, ``roc_auc_score``, ``average_precision_score``,
``confusion_matrix``, ``precision_recall_fscore_support``); the detectors in
:mod:`aelib.detectors` speak the scikit-learn / PyOD estimator dialect.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageDataset
from .errors import ConfigError, DataError
from .forward import Progress, eval_batches
from .models import default_beta, is_vae, kl_divergence, latent_of, reconstruct

if TYPE_CHECKING:
    import pandas as pd

# scikit-learn, SciPy and pandas are imported by the functions that use them: training and
# reconstruction (the CLI's train, the dashboard's first page) need none of them, and they cost
# about a second and tens of MB to import. The detectors live in aelib.detectors (scikit-learn
# classes); `scoring.AnomalyDetector` still finds them.
_DETECTORS = ("AnomalyDetector", "EnsembleDetector", "PROBA_METHODS")


def __getattr__(name: str):
    if name in _DETECTORS:
        from . import detectors

        return getattr(detectors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# Every anomaly score aelib computes (higher = more anomalous), with a line for a menu. This is
# the one list: the benchmark, the CLI and the app take their names from it.
SCORES: dict[str, str] = {
    "l2": "L2 norm of the reconstruction error (the reference score; ranks like mse)",
    "mse": "mean squared pixel error",
    "mae": "mean absolute pixel error",
    "elbo": "negative ELBO: mse + beta * KL (VAE only)",
    "blur": "L2 norm of the error map smoothed by a Gaussian of sigma 1 pixel",
    "blur_ink": "blurred squared error divided by the square root of the image's ink",
    "latent": "squared Mahalanobis distance of the latent code from the normal training codes' mean",
    "latent_knn": "mean Mahalanobis distance to the 5 nearest normal training codes",
}
METRICS = tuple(SCORES)
LATENT_SCORES = ("latent", "latent_knn")  # those fitted to the normal images' latent codes
RECONSTRUCTION_SCORES = tuple(s for s in SCORES if s not in LATENT_SCORES)  # those that need no fitting
ENSEMBLE_METHODS = ("zscore", "rank", "mean")

# Pixel-exact errors are dominated by thin misplaced strokes and edges that any image has; the
# smoothed error keeps what the model could not reconstruct at the scale of parts of the object.
BLUR_SIGMA = 1.0
# Error norms favour images with little ink (a thin "1", a sandal), easy to reconstruct whatever
# the normal class was; dividing by a power of the ink (sum of [0, 1] pixels) removes that bias.
INK_POWER = 0.5
INK_EPS = 1e-3  # in [0, 1] pixel units: keeps an all-black image finite
LATENT_RIDGE = 1e-6  # added to the latent covariance, relative to its mean variance
# A class whose codes do not form one Gaussian blob is better described by its nearest normal
# codes than by their mean: "latent_knn" is the mean distance to the LATENT_KNN_K nearest,
# measured with the Gaussian's covariance.
LATENT_KNN_K = 5
# The neighbours are searched among at most this many training codes (a fixed random subset), so
# the time and memory per scored image stay bounded whatever the size of the normal set.
LATENT_KNN_REFERENCE = 20_000
_KNN_CHUNK_ELEMENTS = 4_000_000  # query x reference distances held at once (32 MB of float64)

ImagesLike = torch.Tensor | np.ndarray | ImageDataset


# --------------------------------------------------------------------------------------------
# Batches of (input, reconstruction)


def as_image_tensor(images: ImagesLike, in_shape: Sequence[int]) -> torch.Tensor:
    """A uint8 (N, C, H, W) tensor matching ``in_shape``, without copying when possible.

    Accepts a tensor, a NumPy array (a memory-mapped ``.npy`` stays mapped) or an
    :class:`ImageDataset`; (N, H, W) for one channel and channels-last (N, H, W, C) arrays (as in
    the reference ``.npy`` files) are also accepted, as views.
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


def reconstruct_batches(model: nn.Module, images_uint8: ImagesLike, batch_size: int | None = None
                        ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Iterate ``(x, recon)`` float batches in the model's range (``model.config.output_range``).

    Batches are sliced from the resident uint8 tensor and scaled on the model's device; the model
    runs in eval mode without gradients (a VAE decodes its mean) and gets its previous mode back
    when the iterator is exhausted or closed.
    """
    data = as_image_tensor(images_uint8, model.config.in_shape)
    return eval_batches(model, data, batch_size, reconstruct)


# --------------------------------------------------------------------------------------------
# Per-image scores


def _gaussian_kernel(sigma: float, channels: int) -> torch.Tensor:
    r = max(1, math.ceil(3 * sigma))
    xs = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-xs.square() / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, 2 * r + 1, 2 * r + 1).contiguous()


def latent_codes(model: nn.Module, images_uint8: ImagesLike, batch_size: int | None = None,
                 progress: Progress | None = None) -> torch.Tensor:
    """Deterministic latent codes (the VAE's mean, the autoencoders' bottleneck), float64 (N, D)."""
    data = as_image_tensor(images_uint8, model.config.in_shape)
    parts = [z.flatten(1).double().cpu() for _, z in
             eval_batches(model, data, batch_size, latent_of, progress)]
    return torch.cat(parts) if parts else torch.zeros(0, 0, dtype=torch.float64)


class LatentGaussian:
    """Gaussian fitted to latent codes (N, D); calling it gives squared Mahalanobis distances.

    ``ridge`` is added to the covariance's diagonal relative to its mean variance, so a code
    dimension the normal images never use keeps the inverse finite. :meth:`neighbours` gives the
    ``"latent_knn"`` score: the mean Mahalanobis distance to the ``k`` nearest of (at most
    :data:`LATENT_KNN_REFERENCE`) fitted codes.
    """

    def __init__(self, z: torch.Tensor, ridge: float = LATENT_RIDGE):
        z = torch.as_tensor(z, dtype=torch.float64)
        if z.dim() != 2 or len(z) == 0:
            raise DataError("Fitting the latent Gaussian needs at least one normal image.")
        if not torch.isfinite(z).all():
            raise DataError("This model gives non-finite latent codes for some normal images, so no "
                            "latent score can be fitted; use a reconstruction score instead.")
        self.mean = z.mean(0)
        d = z.shape[1]
        cov = torch.cov(z.T).reshape(d, d) if len(z) > 1 else torch.zeros(d, d, dtype=z.dtype)
        scale = max(float(cov.diagonal().mean()), 1e-12)
        self.precision = torch.linalg.inv(cov + ridge * scale * torch.eye(d, dtype=z.dtype))
        # precision = W W^T, so |(a - b) W| is the Mahalanobis distance between codes a and b.
        sym = (self.precision + self.precision.T) / 2
        self._whiten, info = torch.linalg.cholesky_ex(sym)
        if info:  # not numerically positive definite: the eigen-decomposition, negatives as 0
            values, vectors = torch.linalg.eigh(sym)
            self._whiten = vectors * values.clamp(min=0).sqrt()
        self.n_fitted = len(z)
        # _column[i]: where fitted code i sits among the reference codes (-1: not kept).
        self._column = torch.arange(len(z))
        if len(z) > LATENT_KNN_REFERENCE:
            g = torch.Generator().manual_seed(0)
            keep = torch.randperm(len(z), generator=g)[:LATENT_KNN_REFERENCE].sort().values
            self._column = torch.full((len(z),), -1, dtype=torch.long)
            self._column[keep] = torch.arange(len(keep))
            z = z[keep]
        self.reference = (z - self.mean) @ self._whiten

    def __call__(self, z: torch.Tensor) -> np.ndarray:
        diff = torch.as_tensor(z, dtype=torch.float64) - self.mean
        return ((diff @ self.precision) * diff).sum(1).numpy()

    def neighbours(self, z: torch.Tensor, k: int = LATENT_KNN_K, leave_one_out: bool = False) -> np.ndarray:
        """Mean Mahalanobis distance of each code in ``z`` to its ``k`` nearest fitted codes.

        ``leave_one_out=True`` is for the fitted codes themselves, in the order they were fitted:
        each code's own entry is not counted among its neighbours.
        """
        q = (torch.as_tensor(z, dtype=torch.float64) - self.mean) @ self._whiten
        n = len(self.reference)
        if leave_one_out and len(q) != self.n_fitted:
            raise DataError("leave_one_out needs the very codes the Gaussian was fitted to.")
        k = max(1, min(int(k), n - 1 if leave_one_out and n > 1 else n))
        step = max(1, _KNN_CHUNK_ELEMENTS // n)
        parts = []
        for i in range(0, len(q), step):
            d = torch.cdist(q[i:i + step], self.reference)
            if leave_one_out and n > 1:
                col = self._column[i:i + step]
                own = torch.nonzero(col >= 0).flatten()
                d[own, col[own]] = math.inf
            parts.append(d.topk(k, largest=False).values.mean(1))
        return torch.cat(parts).numpy() if parts else np.zeros(0)


def _check_scores(model: nn.Module, names: tuple[str, ...], allowed: Sequence[str]) -> None:
    unknown = [m for m in names if m not in allowed]
    if unknown or not names:
        raise ConfigError(f"Unknown score(s) {unknown}; choose from {tuple(allowed)}.")
    if "elbo" in names and not is_vae(model):
        raise ConfigError("The 'elbo' score needs a variational autoencoder (family 'vae'); "
                          "use 'l2' or 'mse' for this model.")


def model_scores(model: nn.Module, images_uint8: ImagesLike, metrics: Sequence[str] = ("l2",),
                 batch_size: int | None = None, beta: float | None = None,
                 latent: LatentGaussian | ImagesLike | None = None,
                 progress: Progress | None = None, ink_power: float = INK_POWER) -> dict[str, np.ndarray]:
    """Per-image anomaly scores, one float64 array of length N per name in ``metrics``.

    Every name of :data:`SCORES` is computed here, in one pass over the images. ``"latent"`` and
    ``"latent_knn"`` need ``latent``: a fitted :class:`LatentGaussian` or the normal training
    images to fit one on. ``beta`` weights the KL of ``"elbo"`` (default
    :func:`aelib.models.default_beta`; give the beta the VAE was trained with).
    ``progress(done, total, seconds)`` after each batch. ``ink_power``: the power of the ink that
    ``"blur_ink"`` divides by (:data:`INK_POWER` unless a benchmark protocol chose another).
    """
    names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    _check_scores(model, names, SCORES)
    cfg = model.config
    data = as_image_tensor(images_uint8, cfg.in_shape)
    gaussian = None
    if set(LATENT_SCORES) & set(names):
        if latent is None:
            which = next(m for m in names if m in LATENT_SCORES)
            raise ConfigError(f"The {which!r} score needs the normal training images to fit a Gaussian "
                              "to their latent codes.")
        gaussian = latent if isinstance(latent, LatentGaussian) else \
            LatentGaussian(latent_codes(model, latent, batch_size))
    vae = is_vae(model)
    kl_beta = default_beta(cfg) if beta is None else float(beta)
    n_pixels = cfg.n_pixels
    lo, hi = cfg.value_range
    channels = cfg.in_shape[0]
    kernel = _gaussian_kernel(BLUR_SIGMA, channels) if {"blur", "blur_ink"} & set(names) else None
    want_z = gaussian is not None

    def forward(m: nn.Module, x: torch.Tensor):
        if vae:
            recon, mu, logvar = m(x)  # eval mode: the VAE decodes its mean
            return recon, mu, logvar, mu
        if want_z:
            z = m.encode(x)
            return m.decode(z), None, None, z
        return m(x), None, None, None

    # Filled in place: a small tensor kept per batch would pin the allocator's heap between the
    # batches' large buffers, and the process's memory would grow with the number of images.
    out = {m: np.empty(len(data), dtype=np.float64) for m in names}
    done = 0
    for x, (recon, mu, logvar, z) in eval_batches(model, data, batch_size, forward, progress):
        diff = recon - x
        flat = diff.flatten(1).double()
        sse = flat.square().sum(1)
        for m in names:
            if m == "mse":
                v = sse / n_pixels
            elif m == "l2":
                v = sse.sqrt()
            elif m == "mae":
                v = flat.abs().sum(1) / n_pixels
            elif m == "elbo":
                v = sse / n_pixels + kl_beta * kl_divergence(mu.double(), logvar.double())
            elif m == "latent":
                v = torch.from_numpy(gaussian(z.flatten(1).double().cpu()))
            elif m == "latent_knn":
                v = torch.from_numpy(gaussian.neighbours(z.flatten(1).double().cpu()))
            else:
                if kernel.device != diff.device:
                    kernel = kernel.to(diff.device)
                # In [0, 1] pixel units whatever the model's range, so the ink term means the same.
                blurred = F.conv2d(diff / (hi - lo), kernel, padding=kernel.shape[-1] // 2,
                                   groups=channels)
                bsq = blurred.flatten(1).double().square().sum(1)
                if m == "blur":
                    v = bsq.sqrt()
                else:
                    ink = ((x - lo) / (hi - lo)).flatten(1).double().sum(1)
                    v = bsq / (ink + INK_EPS).pow(ink_power)
            out[m][done:done + len(x)] = v.cpu().numpy()
        done += len(x)
    return out


def reconstruction_errors(model: nn.Module, images_uint8: ImagesLike, metrics: Sequence[str] = ("mse",),
                          batch_size: int | None = None, beta: float | None = None) -> dict[str, np.ndarray]:
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
    * ``"blur"``, ``"blur_ink"``: see :data:`SCORES`.

    Errors are measured in the model's pixel range. Unknown metrics, the latent scores (they need
    fitting: :func:`model_scores` or :class:`AnomalyDetector`), or ``"elbo"`` for a model that is
    not a VAE, raise :class:`ConfigError`.
    """
    names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    _check_scores(model, names, RECONSTRUCTION_SCORES)
    return model_scores(model, images_uint8, names, batch_size, beta)


def available_scores(model: nn.Module) -> tuple[str, ...]:
    """The names of :data:`SCORES` that apply to ``model`` (``"elbo"`` only for a VAE)."""
    return tuple(s for s in SCORES if s != "elbo" or is_vae(model))


def per_class_errors(errors: np.ndarray, labels: Sequence | np.ndarray | torch.Tensor,
                     class_names: Sequence[str] | Mapping | None = None) -> pd.DataFrame:
    """One row per class: ``class, n, mean, std, median`` of the errors (for a bar chart).

    ``class_names`` maps label -> name (a list indexed by the label, or a dict); rows are sorted
    by label. ``std`` is the population standard deviation (ddof=0), so a class of one image
    gets 0 rather than NaN.
    """
    import pandas as pd

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


def _check_both(y: np.ndarray, what: str) -> None:
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        only = "anomalies" if n_pos else "normal images"
        raise DataError(f"{what} needs both normal (0) and anomalous (1) labels; these {len(y)} "
                        f"labels are all {only}.")


def roc(labels, scores) -> dict:
    """ROC curve and summary of anomaly ``scores`` against ``labels`` (1 = anomaly).

    Returns ``fpr, tpr, thresholds`` (``sklearn.metrics.roc_curve``), ``auc``
    (``roc_auc_score``) and ``average_precision`` (``average_precision_score``, area under the
    precision-recall curve with anomalies as the positive class).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    y, s = _binary_labels(labels, scores)
    _check_both(y, "ROC AUC")
    fpr, tpr, thresholds = roc_curve(y, s)
    return {"fpr": fpr, "tpr": tpr, "thresholds": thresholds, "auc": float(roc_auc_score(y, s)),
            "average_precision": float(average_precision_score(y, s))}


def best_f1_threshold(labels, scores) -> float:
    """The threshold (``score >= threshold`` => anomaly) with the highest F1 on labelled scores.

    Candidates are the thresholds of ``sklearn.metrics.precision_recall_curve``; F1 is the
    harmonic mean of the precision and recall it returns at each of them.
    """
    from sklearn.metrics import precision_recall_curve

    y, s = _binary_labels(labels, scores)
    _check_both(y, "Choosing a threshold by F1")
    precision, recall, thresholds = precision_recall_curve(y, s)
    p, r = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return float(thresholds[int(np.argmax(f1))])


def contamination_threshold(scores, contamination: float) -> float:
    """The threshold that flags the top ``contamination`` fraction of unlabelled ``scores``.

    The ``1 - contamination`` quantile, as PyOD sets ``threshold_``. ``contamination`` is in (0, 1):
    a share of a test set to flag may exceed PyOD's 0.5 (in one-class mode on MNIST nine test images
    in ten are anomalies); the detectors keep PyOD's (0, 0.5] for their training data.
    """
    if not 0.0 < float(contamination) < 1.0:
        raise ConfigError(f"The share of images to flag must be between 0 and 1, got {contamination}.")
    s = np.asarray(scores, dtype=np.float64).ravel()
    if len(s) == 0:
        raise DataError("Choosing a threshold by contamination needs at least one score.")
    if not np.isfinite(s).all():
        raise DataError("Scores contain NaN or infinite values.")
    return float(np.quantile(s, 1.0 - float(contamination)))


THRESHOLD_METHODS = ("best_f1", "contamination", "manual")


def choose_threshold(method: str, scores, labels=None, contamination: float = 0.1,
                     value: float | None = None) -> float:
    """One entry point for the three ways to set a threshold.

    * ``"best_f1"``: :func:`best_f1_threshold` (needs ``labels``, 1 = anomaly).
    * ``"contamination"``: :func:`contamination_threshold` of the (unlabelled) ``scores``.
    * ``"manual"``: ``value`` as given.
    """
    if method == "best_f1":
        if labels is None:
            raise ConfigError("Choosing the threshold by best F1 needs labels; use 'contamination' "
                              "for unlabelled images.")
        return best_f1_threshold(labels, scores)
    if method == "contamination":
        return contamination_threshold(scores, contamination)
    if method == "manual":
        if value is None or not math.isfinite(float(value)):
            raise ConfigError("A manual threshold needs a finite value.")
        return float(value)
    raise ConfigError(f"Unknown threshold method {method!r}; choose from {THRESHOLD_METHODS}.")


def evaluate_scores(labels, scores) -> dict:
    """The summary figures of anomaly ``scores`` against ``labels`` (1 = anomaly), as floats.

    ``auc`` (ROC AUC), ``average_precision`` (AUPR), ``f1_max`` with ``f1_threshold`` (the best
    F1 over thresholds, as anomalib's F1Max, and the threshold that reaches it) and the
    ``precision`` / ``recall`` there; ``n``, ``n_anomalies``. All from ``sklearn.metrics``.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, s = _binary_labels(labels, scores)
    _check_both(y, "Evaluating scores")
    t = best_f1_threshold(y, s)
    at = threshold_metrics(y, s, t)
    return {"auc": float(roc_auc_score(y, s)), "average_precision": float(average_precision_score(y, s)),
            "f1_max": at["f1"], "f1_threshold": t, "precision": at["precision"], "recall": at["recall"],
            "n": int(len(y)), "n_anomalies": int(y.sum())}


def threshold_metrics(labels, scores, threshold: float) -> dict:
    """Confusion counts and precision/recall/F1/accuracy when ``score >= threshold`` => anomaly.

    Counts from ``sklearn.metrics.confusion_matrix``, rates from
    ``precision_recall_fscore_support`` (anomaly = positive class, ``zero_division=0``).
    Fast enough for a slider: it recomputes no score.
    """
    import sklearn
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

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
    return {"mse": mse, "psnr": psnr_from_mse(mse, data_range)}


def psnr_from_mse(mse: np.ndarray, data_range: float) -> np.ndarray:
    """Per-image PSNR in dB of per-image mean squared errors (``inf`` where an error is 0)."""
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(float(data_range) ** 2 / np.asarray(mse, dtype=np.float64))


# --------------------------------------------------------------------------------------------
# Ensembles over seeds / models


def ensemble_scores(score_arrays: Sequence[np.ndarray], method: str = "zscore") -> np.ndarray:
    """Combine several models' anomaly scores for the same images into one array.

    * ``"zscore"``: standardise each model's scores (mean 0, std 1) and average them.
    * ``"rank"``: replace each model's scores by their normalised ranks in (0, 1] and average.
    * ``"mean"``: plain average of the raw scores (only sensible on a common scale).

    A model whose scores are all equal contributes zeros under ``"zscore"``.
    """
    from scipy.stats import rankdata

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
