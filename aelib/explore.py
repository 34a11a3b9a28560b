"""Headless helpers behind the dashboard's Reconstruction, VAE-latent and Anomaly pages.

Conventions (every function here):

* **Inputs** are uint8 images, (N, C, H, W) tensors or arrays (anything
  :func:`aelib.scoring.as_image_tensor` accepts: also (N, H, W) grey, channels-last, an ImageDataset).
  Functions taking *one* image also accept (C, H, W) or (H, W).
* **Display arrays** are float32 NumPy arrays in [0, 1]: (N, H, W) for grey, (N, H, W, 3) for colour
  (what ``st.image`` / plotly take). :func:`to_display` makes them, :func:`image_grid` tiles them.
* **Latent codes** are CPU float32 tensors flattened to (N, D); :func:`latent_shape` gives the shape
  to unflatten to (e.g. (48, 8, 8) for a conv latent kept as a feature map). A latent *dim* indexes
  the flattened vector. The VAE's code is its mean (as :func:`aelib.models.latent_of`).
* The model runs in eval mode without gradients and gets its previous mode back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.decomposition import PCA
from torch import nn

from .data import to_float, to_uint8
from .errors import ConfigError, DataError
from .forward import eval_batches, evaluating
from .models import OUTPUT_RANGES, VAE, is_vae, latent_of, reconstruct
from .scoring import ImagesLike, as_image_tensor, image_metrics
from .train import corrupt

ArrayLike = torch.Tensor | np.ndarray
INTERPOLATIONS = ("linear", "spherical")
MAP_METHODS = ("pca", "first2")
NOISE_KINDS = ("gaussian", "mask")
SELECT_MODES = ("first", "random", "class", "index")


# --------------------------------------------------------------------------------------------
# Plumbing


def _images(model: nn.Module, images: ImagesLike) -> torch.Tensor:
    return as_image_tensor(images, model.config.in_shape)


def _one_image(model: nn.Module, image: ImagesLike) -> torch.Tensor:
    """One uint8 image as a (1, C, H, W) tensor; (C, H, W), (H, W) and (1, C, H, W) accepted."""
    t = torch.from_numpy(np.ascontiguousarray(image)) if isinstance(image, np.ndarray) else image
    if isinstance(t, torch.Tensor):
        c, h, w = model.config.in_shape
        if t.dim() == 2 and c == 1:
            t = t[None, None]
        elif t.dim() == 3 and (tuple(t.shape) == (c, h, w) or tuple(t.shape) == (h, w, c)):
            t = t[None]
    x = _images(model, t)
    if len(x) != 1:
        raise DataError(f"Expected one image, got {len(x)}.")
    return x


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size}.")


def latent_shape(model: nn.Module) -> tuple[int, ...]:
    """Shape of one latent code before flattening: (latent,) or a feature map (C, h, w)."""
    if isinstance(model, VAE):
        return tuple(model.latent_shape)
    cfg = model.config
    if cfg.latent is not None:
        return (int(cfg.latent),)
    return (int(cfg.hidden[-1]), *model.geometry.feat_hw)


def latent_dim(model: nn.Module) -> int:
    """Length D of a flattened latent code."""
    return math.prod(latent_shape(model))


# --------------------------------------------------------------------------------------------
# Display arrays


def to_display(x: ArrayLike, output_range: str | None = None) -> np.ndarray:
    """uint8 or float images -> float32 display array in [0, 1]: (N, H, W) grey or (N, H, W, 3).

    uint8 is divided by 255. Floats are in the model's range ``output_range`` ("unit" when None;
    "symmetric" maps [-1, 1] to [0, 1]) and are clipped. Accepts (N, C, H, W) or one (C, H, W).
    """
    t = torch.as_tensor(x).detach().cpu()
    if t.dim() == 3:
        t = t[None]
    if t.dim() != 4 or t.shape[1] not in (1, 3):
        raise DataError(f"Expected images of shape (N, C, H, W) or (C, H, W) with C = 1 or 3, "
                        f"got {tuple(t.shape)}.")
    if t.dtype == torch.uint8:
        out = t.float().div_(255.0)
    else:
        rng = output_range or "unit"
        if rng not in OUTPUT_RANGES:
            raise ConfigError(f"output_range must be one of {tuple(OUTPUT_RANGES)}, got {rng!r}.")
        lo, hi = OUTPUT_RANGES[rng]
        out = ((t.float() - lo) / (hi - lo)).clamp_(0.0, 1.0)
    out = out[:, 0] if out.shape[1] == 1 else out.permute(0, 2, 3, 1)
    return np.ascontiguousarray(out.numpy(), dtype=np.float32)


def image_grid(rows: Sequence[np.ndarray], pad: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile display arrays into one image: one row per array, ``pad`` pixels between tiles.

    Rows may differ in length (shorter rows are filled with ``pad_value``); grey rows are promoted to
    colour when any row is colour. Returns (H', W') grey or (H', W', 3), float32 in [0, 1], with
    H' = R * (H + pad) + pad and W' = max_len * (W + pad) + pad.
    (Plain NumPy: ``make_grid`` drops the padding around a single tile.)
    """
    arrays = [np.asarray(r, dtype=np.float32) for r in rows]
    arrays = [a for a in arrays if len(a)]
    if not arrays:
        raise DataError("image_grid needs at least one non-empty row of images.")
    if pad < 0:
        raise ConfigError(f"pad must be >= 0, got {pad}.")
    colour = any(a.ndim == 4 for a in arrays)
    for a in arrays:
        if a.ndim not in (3, 4) or (a.ndim == 4 and a.shape[-1] != 3):
            raise DataError(f"Rows must be display arrays (N, H, W) or (N, H, W, 3), got {a.shape}.")
    if colour:
        arrays = [a if a.ndim == 4 else np.repeat(a[..., None], 3, axis=-1) for a in arrays]
    h, w = arrays[0].shape[1:3]
    if any(a.shape[1:3] != (h, w) for a in arrays):
        raise DataError("All images in a grid must have the same height and width.")
    ncol = max(len(a) for a in arrays)
    shape = (len(arrays) * (h + pad) + pad, ncol * (w + pad) + pad) + ((3,) if colour else ())
    grid = np.full(shape, pad_value, dtype=np.float32)
    for r, a in enumerate(arrays):
        y = pad + r * (h + pad)
        for c, tile in enumerate(a):
            x = pad + c * (w + pad)
            grid[y:y + h, x:x + w] = tile
    return grid


# --------------------------------------------------------------------------------------------
# Encoding and decoding


def _map_images(model: nn.Module, images_uint8: ImagesLike, fn, batch_size: int) -> list[torch.Tensor]:
    """``fn(model, x)`` over batches of images scaled to the model's range; CPU float32 parts."""
    _check_batch_size(batch_size)
    return [out.float().cpu() for _, out in
            eval_batches(model, _images(model, images_uint8), batch_size, fn)]


def encode_images(model: nn.Module, images_uint8: ImagesLike, batch_size: int = 512) -> torch.Tensor:
    """Latent codes (VAE mean / AE bottleneck) as a CPU float32 tensor (N, D)."""
    parts = _map_images(model, images_uint8, lambda m, x: latent_of(m, x).flatten(1), batch_size)
    return torch.cat(parts) if parts else torch.zeros(0, latent_dim(model))


def decode_latents(model: nn.Module, codes: ArrayLike, batch_size: int = 512) -> torch.Tensor:
    """Decode flattened codes (M, D) (or unflattened) to CPU float images in the model's range."""
    _check_batch_size(batch_size)
    shape = latent_shape(model)
    z = torch.as_tensor(codes, dtype=torch.float32).reshape(-1, math.prod(shape))
    parts = []
    with evaluating(model) as device:
        for s in range(0, len(z), batch_size):
            parts.append(model.decode(z[s:s + batch_size].reshape(-1, *shape).to(device)).float().cpu())
    return torch.cat(parts) if parts else torch.zeros(0, *model.config.in_shape)


def reconstruct_images(model: nn.Module, images_uint8: ImagesLike, batch_size: int = 512) -> torch.Tensor:
    """Deterministic reconstructions (the VAE decodes its mean), CPU float in the model's range."""
    parts = _map_images(model, images_uint8, reconstruct, batch_size)
    return torch.cat(parts) if parts else torch.zeros(0, *model.config.in_shape)


# --------------------------------------------------------------------------------------------
# Interpolation


def _weights(steps: int) -> torch.Tensor:
    if steps < 2:
        raise ConfigError(f"Interpolation needs at least 2 steps (both endpoints), got {steps}.")
    return torch.linspace(0.0, 1.0, steps, dtype=torch.float64)


def lerp(z0: ArrayLike, z1: ArrayLike, steps: int) -> torch.Tensor:
    """Linear interpolation: (steps, *z0.shape), first row exactly z0 and last exactly z1."""
    a, b = torch.as_tensor(z0), torch.as_tensor(z1)
    if a.shape != b.shape:
        raise DataError(f"Codes differ in shape: {tuple(a.shape)} and {tuple(b.shape)}.")
    dtype = a.dtype if a.is_floating_point() else torch.float32
    t = _weights(steps).reshape(-1, *([1] * a.dim()))
    out = ((1 - t) * a.double() + t * b.double()).to(dtype)
    out[0], out[-1] = a, b
    return out


def slerp(z0: ArrayLike, z1: ArrayLike, steps: int, eps: float = 1e-6) -> torch.Tensor:
    """Spherical interpolation on the flattened vectors: (steps, *z0.shape), endpoints exact.

    Follows the great circle between the directions while the norm changes smoothly; unit
    vectors stay unit. Falls back to :func:`lerp` when the vectors are (nearly) parallel,
    antiparallel or zero.
    """
    a, b = torch.as_tensor(z0), torch.as_tensor(z1)
    if a.shape != b.shape:
        raise DataError(f"Codes differ in shape: {tuple(a.shape)} and {tuple(b.shape)}.")
    t = _weights(steps)
    u, v = a.double().flatten(), b.double().flatten()
    nu, nv = u.norm(), v.norm()
    if nu < eps or nv < eps:
        return lerp(a, b, steps)
    omega = torch.arccos((u @ v / (nu * nv)).clamp(-1.0, 1.0))
    so = torch.sin(omega)
    if so < eps:
        return lerp(a, b, steps)
    w0 = (torch.sin((1 - t) * omega) / so)[:, None]
    w1 = (torch.sin(t * omega) / so)[:, None]
    dtype = a.dtype if a.is_floating_point() else torch.float32
    out = (w0 * u + w1 * v).to(dtype).reshape(steps, *a.shape)
    out[0], out[-1] = a, b
    return out


def interpolate_codes(model: nn.Module, img_a: ImagesLike, img_b: ImagesLike, steps: int = 8,
                      method: str = "linear") -> torch.Tensor:
    """The (steps, D) latent path between two images' codes (what :func:`interpolate` decodes)."""
    if method not in INTERPOLATIONS:
        raise ConfigError(f"Unknown interpolation {method!r}; choose from {INTERPOLATIONS}.")
    z = encode_images(model, torch.cat([_one_image(model, img_a), _one_image(model, img_b)]))
    return (lerp if method == "linear" else slerp)(z[0], z[1], steps)


def interpolate(model: nn.Module, img_a: ImagesLike, img_b: ImagesLike, steps: int = 8,
                method: str = "linear") -> np.ndarray:
    """Decode ``steps`` codes from image a's to image b's: display array (steps, H, W[, 3]).

    Both endpoints are included; they are the reconstructions of a and b. ``method`` is
    "linear" (:func:`lerp`) or "spherical" (:func:`slerp`).
    """
    codes = interpolate_codes(model, img_a, img_b, steps, method)
    return to_display(decode_latents(model, codes), model.config.output_range)


# --------------------------------------------------------------------------------------------
# VAE prior and latent traversal


def prior_samples(model: nn.Module, n: int, temperature: float = 1.0, seed: int = 0) -> np.ndarray:
    """Decode ``n`` draws z ~ N(0, temperature^2 I) from a VAE's prior: display array (n, H, W[, 3]).

    The same seed gives the same images on any device (codes are drawn on the CPU).
    """
    if not is_vae(model):
        raise ConfigError("Sampling from the prior needs a variational autoencoder (family 'vae'); "
                          "a plain autoencoder has no prior to sample.")
    if n < 1:
        raise ConfigError(f"n must be a positive integer, got {n}.")
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise ConfigError(f"temperature must be a finite number >= 0, got {temperature}.")
    g = torch.Generator().manual_seed(int(seed))
    with evaluating(model):
        images = model.sample(n, float(temperature), generator=g).float().cpu()
    return to_display(images, model.config.output_range)


def traverse_codes(model: nn.Module, image_uint8: ImagesLike, dim: int,
                   values: Sequence[float] | np.ndarray = np.linspace(-3, 3, 7),
                   mode: str = "auto", scale: float = 1.0) -> torch.Tensor:
    """The (len(values), D) codes :func:`traverse` decodes: the image's code with ``dim`` replaced.

    ``mode="absolute"`` sets z[dim] = v (positions in the prior's units, N(0, 1), for a VAE);
    ``mode="offset"`` sets z[dim] = code[dim] + scale * v (pass the dim's spread over a dataset as
    ``scale`` for an autoencoder, whose code has no prior). ``"auto"``: absolute for a VAE,
    offset for a plain autoencoder.
    """
    d = latent_dim(model)
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or not 0 <= dim < d:
        raise ConfigError(f"Latent dim must be an integer in [0, {d - 1}], got {dim!r}.")
    if mode not in ("auto", "absolute", "offset"):
        raise ConfigError(f"mode must be 'auto', 'absolute' or 'offset', got {mode!r}.")
    vals = torch.as_tensor(np.asarray(values, dtype=np.float64).ravel(), dtype=torch.float32)
    if len(vals) == 0 or not torch.isfinite(vals).all():
        raise ConfigError("values must be a non-empty list of finite numbers.")
    z = encode_images(model, _one_image(model, image_uint8))[0]
    codes = z.repeat(len(vals), 1)
    absolute = mode == "absolute" or (mode == "auto" and is_vae(model))
    codes[:, int(dim)] = vals if absolute else z[int(dim)] + float(scale) * vals
    return codes


def traverse(model: nn.Module, image_uint8: ImagesLike, dim: int,
             values: Sequence[float] | np.ndarray = np.linspace(-3, 3, 7),
             mode: str = "auto", scale: float = 1.0) -> np.ndarray:
    """Vary latent ``dim`` of one image's code, the others fixed: display array (len(values), ...).

    For a VAE the values are absolute positions in the prior's units (z[dim] = v); for a plain
    autoencoder they are offsets from the image's own code (z[dim] += scale * v). See
    :func:`traverse_codes` for ``mode``. ``dim`` indexes the flattened code (0 <= dim < D).
    """
    codes = traverse_codes(model, image_uint8, dim, values, mode, scale)
    return to_display(decode_latents(model, codes), model.config.output_range)


def latent_map(model: nn.Module, images_uint8: ImagesLike, method: str = "pca",
               batch_size: int = 512) -> tuple[np.ndarray, np.ndarray | None]:
    """2-D coordinates of the images' codes for a scatter plot: ``(coords (N, 2), explained)``.

    ``"pca"``: the first two principal components (``sklearn.decomposition.PCA``); ``explained``
    is their explained-variance ratio (descending). ``"first2"``: latent dims 0 and 1;
    ``explained`` is None. A one-dimensional latent gets a zero second column.
    """
    if method not in MAP_METHODS:
        raise ConfigError(f"Unknown latent map {method!r}; choose from {MAP_METHODS}.")
    z = encode_images(model, images_uint8, batch_size).double().numpy()
    n, d = z.shape
    coords = np.zeros((n, 2))
    if method == "first2":
        coords[:, :min(d, 2)] = z[:, :2]
        return coords, None
    if n < 2:
        raise DataError(f"A PCA map needs at least 2 images, got {n}.")
    k = min(2, d)
    pca = PCA(n_components=k, random_state=0).fit(z)
    coords[:, :k] = pca.transform(z)
    explained = np.zeros(2)
    explained[:k] = np.nan_to_num(pca.explained_variance_ratio_)
    return coords, explained


# --------------------------------------------------------------------------------------------
# Anomaly gallery


def top_k(scores: ArrayLike | Sequence[float], k: int, largest: bool = True) -> np.ndarray:
    """Indices of the ``k`` largest (or smallest) scores, most extreme first; ties by lower index.

    ``k`` larger than the number of scores returns them all.
    """
    s = np.asarray(scores.cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64).ravel()
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
        raise ConfigError(f"k must be a non-negative integer, got {k!r}.")
    if np.isnan(s).any():
        raise DataError("Scores contain NaN values.")
    order = np.argsort(-s if largest else s, kind="stable")
    return order[:k].astype(np.int64)


def gallery(model: nn.Module, images_uint8: ImagesLike, indices: ArrayLike | Sequence[int],
            batch_size: int = 512) -> dict[str, np.ndarray]:
    """Display arrays for the chosen images: ``original``, ``reconstruction``, ``abs_error``.

    ``abs_error`` = |reconstruction - original| in display units ([0, 1]), same shape as the
    images (colour stays per channel). ``indices`` (int64) is returned too.
    """
    data = _images(model, images_uint8)
    idx = _check_indices(indices, len(data))
    picked = data[torch.from_numpy(idx)]
    original = to_display(picked)
    recon = to_display(reconstruct_images(model, picked, batch_size), model.config.output_range)
    return {"original": original, "reconstruction": recon, "abs_error": np.abs(recon - original),
            "indices": idx}


# --------------------------------------------------------------------------------------------
# Denoising comparison


def add_noise(images_uint8: ImagesLike, kind: str = "gaussian", level: float = 0.2,
              seed: int = 0) -> torch.Tensor:
    """Corrupt uint8 images as training's denoising mode does; returns uint8 of the same shape.

    ``"gaussian"``: noise of std ``level`` (in [0, 1] pixel units), clipped. ``"mask"``: a
    fraction ``level`` of pixels set to black or white (salt and pepper). Seeded, CPU.
    """
    if kind not in NOISE_KINDS:
        raise ConfigError(f"Unknown noise kind {kind!r}; choose from {NOISE_KINDS}.")
    if not (math.isfinite(level) and level >= 0) or (kind == "mask" and level > 1):
        raise ConfigError(f"Noise level must be >= 0 (at most 1 for 'mask'), got {level}.")
    x = torch.as_tensor(images_uint8)
    if x.dtype != torch.uint8:
        raise DataError(f"Images must be uint8 pixels in [0, 255], got dtype {x.dtype}.")
    g = torch.Generator().manual_seed(int(seed))
    noisy = corrupt(to_float(x.cpu(), "unit"), kind, float(level), (0.0, 1.0), generator=g)
    return to_uint8(noisy, "unit")


def psnr(a: ArrayLike, b: ArrayLike, data_range: float | None = None) -> np.ndarray:
    """Per-image PSNR in dB (``inf`` where identical), via :func:`aelib.scoring.image_metrics`.

    ``data_range`` defaults to 255 for uint8 inputs and 1 for floats (display arrays).
    """
    ta, tb = torch.as_tensor(a), torch.as_tensor(b)
    if (ta.dtype == torch.uint8) != (tb.dtype == torch.uint8):
        raise DataError("Compare uint8 with uint8 or floats with floats (see to_display).")
    if data_range is None:
        data_range = 255.0 if ta.dtype == torch.uint8 else 1.0
    return image_metrics(ta.double(), tb.double(), data_range)["psnr"]


def denoise_comparison(model: nn.Module, images_uint8: ImagesLike, kind: str = "gaussian",
                       level: float = 0.2, seed: int = 0, batch_size: int = 512) -> dict[str, np.ndarray]:
    """Clean, noisy and denoised (the model's reconstruction of noisy) display arrays, with the
    per-image PSNR (dB, display range 1) of noisy vs clean (``psnr_noisy``) and denoised vs clean
    (``psnr_denoised``)."""
    clean_u8 = _images(model, images_uint8)
    noisy_u8 = add_noise(clean_u8, kind, level, seed)
    clean, noisy = to_display(clean_u8), to_display(noisy_u8)
    denoised = to_display(reconstruct_images(model, noisy_u8, batch_size), model.config.output_range)
    return {"clean": clean, "noisy": noisy, "denoised": denoised,
            "psnr_noisy": psnr(noisy, clean, 1.0), "psnr_denoised": psnr(denoised, clean, 1.0)}


# --------------------------------------------------------------------------------------------
# Choosing images


def _check_indices(indices: ArrayLike | Sequence[int], total: int) -> np.ndarray:
    idx = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices).ravel()
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        if not np.all(np.mod(idx.astype(np.float64), 1) == 0):
            raise DataError("Image indices must be whole numbers.")
    idx = idx.astype(np.int64)
    bad = idx[(idx < 0) | (idx >= total)]
    if len(bad):
        shown = ", ".join(str(v) for v in bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise DataError(f"Image index out of range: {shown}; valid indices are 0 to {total - 1} "
                        f"({total} images).")
    return idx


def select_images(n: int, labels: ArrayLike | Sequence[int] | None = None, mode: str = "first",
                  seed: int = 0, cls: int | None = None, indices: ArrayLike | Sequence[int] | None = None,
                  total: int | None = None) -> np.ndarray:
    """Indices (int64) of up to ``n`` images to show, from a dataset of ``total`` images.

    ``total`` defaults to ``len(labels)``. Modes: ``"first"`` (0..n-1), ``"random"`` (n distinct,
    seeded, ascending), ``"class"`` (the first n with label ``cls``; needs labels), ``"index"``
    (exactly ``indices``, in the given order; ``n`` is ignored). Fewer than ``n`` are returned
    when fewer exist. Raises DataError for out-of-range indices or a class without images.
    """
    if mode not in SELECT_MODES:
        raise ConfigError(f"Unknown selection mode {mode!r}; choose from {SELECT_MODES}.")
    lab = None
    if labels is not None:
        lab = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).ravel()
        if total is not None and total != len(lab):
            raise DataError(f"total ({total}) and labels ({len(lab)}) differ in length.")
        total = len(lab)
    if total is None:
        raise ConfigError("select_images needs labels or total (the number of images).")
    if mode == "index":
        if indices is None or len(np.asarray(indices).ravel()) == 0:
            raise DataError("Choose at least one image index.")
        return _check_indices(indices, total)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ConfigError(f"n must be a positive integer, got {n!r}.")
    if total == 0:
        raise DataError("The dataset has no images.")
    if mode == "first":
        return np.arange(min(n, total), dtype=np.int64)
    if mode == "random":
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(total, size=min(n, total), replace=False)).astype(np.int64)
    if lab is None:
        raise DataError("Selecting by class needs labels; this dataset has none.")
    if cls is None:
        raise ConfigError("Selecting by class needs cls (the class label).")
    found = np.flatnonzero(lab == cls)
    if len(found) == 0:
        raise DataError(f"No images of class {cls!r} in these {total} images.")
    return found[:n].astype(np.int64)
