"""Checkpoints: safetensors weights with the model's JSON metadata inside, written atomically.

One ``.safetensors`` file is the whole checkpoint: its header's ``__metadata__`` holds the JSON
(model config, dataset, normalisation, training config, history, metrics, versions), so an upload
is one file and ``load`` rebuilds the module with no guessing. A ``.json`` sidecar with the same
metadata is written beside it for people and tools that read JSON.

Nothing here unpickles anything: safetensors is a flat, typed tensor format, and ``torch.load``
is never called.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from ._io import atomic_open
from .errors import CheckpointError, ConfigError
from .models import ModelConfig, build

FORMAT = "aelib-checkpoint"
FORMAT_VERSION = 1
META_KEY = "aelib"
MAX_CHECKPOINT_BYTES = 200 * 1024 * 1024  # the largest preset (face_fcn) is ~103 MB
_SAFETENSORS_MIN = 8


@dataclass
class Checkpoint:
    model: nn.Module
    meta: dict
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.meta.get("name") or (self.path.stem if self.path else "model")


def _versions() -> dict:
    from . import __version__
    return {"aelib": __version__, "torch": torch.__version__}


def make_metadata(model: nn.Module, *, name: str | None = None, dataset: dict | str | None = None,
                  train_config: dict | None = None, history: dict | None = None,
                  metrics: dict | None = None, extra: dict | None = None) -> dict:
    """The JSON metadata stored with a model. Everything but ``model`` is optional."""
    cfg: ModelConfig = model.config
    if isinstance(dataset, str):
        dataset = {"name": dataset}
    lo, hi = cfg.value_range
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "model": cfg.to_dict(),
        "normalisation": {"input": "uint8 [0, 255]", "range": [lo, hi],
                          "formula": "x / 255" if lo == 0 else "x / 127.5 - 1"},
        "dataset": dataset or {},
        "train": train_config or {},
        "epochs": len((history or {}).get("epoch", [])),
        "history": history or {},
        "metrics": metrics or {},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        **({"extra": extra} if extra else {}),
    }


def to_bytes(model: nn.Module, meta: dict, dtype: torch.dtype | None = None) -> bytes:
    """Serialise weights + metadata to safetensors bytes (for downloads and atomic saves).

    ``dtype=torch.float16`` halves the file (the shipped checkpoints use it); ``load`` converts
    back to float32.
    """
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    return st_save(state, metadata={META_KEY: json.dumps(meta, allow_nan=True)})


def _atomic_write(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def save(path: str | os.PathLike, model: nn.Module, meta: dict | None = None,
         dtype: torch.dtype | None = None, **meta_kw) -> Path:
    """Save ``model`` atomically to ``path`` (``.safetensors`` is added if missing).

    Give either a ready ``meta`` dict (from :func:`make_metadata`) or its keyword arguments.
    Returns the path of the weights file; a ``.json`` sidecar is written beside it.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    if meta is None:
        meta = make_metadata(model, name=meta_kw.pop("name", None) or path.stem, **meta_kw)
    elif meta_kw:
        raise TypeError("Pass either meta or metadata keywords, not both.")
    data = to_bytes(model, meta, dtype)
    _atomic_write(path, data)
    _atomic_write(path.with_suffix(".json"), json.dumps(meta, indent=1, allow_nan=True).encode())
    return path


def _parse(data: bytes, what: str) -> tuple[dict, dict[str, torch.Tensor]]:
    if len(data) > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{what} is {len(data) / 2**20:.0f} MB; checkpoints over "
                              f"{MAX_CHECKPOINT_BYTES // 2**20} MB are refused.")
    if len(data) < _SAFETENSORS_MIN or data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04",
                                                      b"\x80\x05") or data[:2] == b"PK":
        raise CheckpointError(f"{what} is not a safetensors file. aelib loads only .safetensors "
                              "checkpoints (pickled .pt/.pth files are refused: loading them can run "
                              "code).")
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError, OverflowError, MemoryError) as exc:
        raise CheckpointError(f"{what} is not a valid safetensors file ({exc}). aelib loads only "
                              ".safetensors checkpoints.") from None
    header_len = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8:8 + header_len])
        raw = header.get("__metadata__", {}).get(META_KEY)
        meta = json.loads(raw) if raw is not None else None
    except (ValueError, AttributeError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{what} is a safetensors file without aelib metadata, so its model "
                              "cannot be rebuilt. Save checkpoints with aelib (or the dashboard).")
    _check_sections(meta, what)
    return meta, tensors


_SECTIONS = {"model": dict, "dataset": dict, "train": dict, "history": dict, "metrics": dict,
             "extra": dict, "normalisation": dict, "versions": dict, "name": (str, type(None))}


def _check_sections(meta: dict, what: str) -> None:
    """Metadata sections must have the types aelib writes; anything else is refused, not guessed."""
    for key, kind in _SECTIONS.items():
        if key in meta and not isinstance(meta[key], kind):
            should = "an object" if kind is dict else "text"
            field = "model config" if key == "model" else f"metadata field {key!r}"
            raise CheckpointError(f"{what}: its {field} should be {should}, "
                                  f"not {type(meta[key]).__name__}.")
    classes = meta.get("dataset", {}).get("normal_classes")
    if classes is not None and not (isinstance(classes, list)
                                    and all(isinstance(c, int) and not isinstance(c, bool) for c in classes)):
        raise CheckpointError(f"{what}: its metadata 'dataset.normal_classes' should be a list of class ids.")
    history = meta.get("history", {})
    if any(not isinstance(v, list) for v in history.values()):
        raise CheckpointError(f"{what}: its metadata 'history' should map names to lists of numbers.")


def _rebuild(meta: dict, tensors: dict[str, torch.Tensor], what: str) -> nn.Module:
    try:
        cfg = ModelConfig.from_dict(meta.get("model"))
    except ConfigError as exc:
        raise CheckpointError(f"{what} has an invalid model config: {exc}") from None
    # Shapes are checked on the meta device first: a 1 kB upload may declare a terabyte-sized
    # model, and nothing is allocated until its config agrees with the weights it really carries.
    try:
        with torch.device("meta"):
            expected = build(cfg).state_dict()
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{what}: its model config cannot be built ({exc}).") from None
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{what}: the weights do not match its {cfg.family} config "
            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}).")
    for k, v in expected.items():
        t = tensors[k]
        if tuple(t.shape) != tuple(v.shape):
            raise CheckpointError(f"{what}: weight {k!r} has shape {tuple(t.shape)} but the config "
                                  f"needs {tuple(v.shape)}.")
        if not t.is_floating_point():
            raise CheckpointError(f"{what}: weight {k!r} is {t.dtype}, not floating point.")
        if not torch.isfinite(t).all():
            raise CheckpointError(f"{what}: weight {k!r} holds NaN or infinite values.")
    try:
        model = build(cfg)
    except (RuntimeError, MemoryError) as exc:
        raise CheckpointError(f"{what}: its model cannot be built ({exc}).") from None
    model.load_state_dict({k: tensors[k].to(v.dtype) for k, v in model.state_dict().items()})
    model.eval()
    return model


def load_bytes(data: bytes, name: str = "checkpoint") -> Checkpoint:
    """Rebuild a model from safetensors bytes (an upload). Raises :class:`CheckpointError`."""
    meta, tensors = _parse(bytes(data), f"'{name}'")
    return Checkpoint(_rebuild(meta, tensors, f"'{name}'"), meta)


def load(path: str | os.PathLike) -> Checkpoint:
    """Load a checkpoint file and rebuild its model from the metadata alone."""
    path = Path(path)
    if path.suffix in (".json",):
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}.")
    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{path.name} is {size / 2**20:.0f} MB; checkpoints over "
                              f"{MAX_CHECKPOINT_BYTES // 2**20} MB are refused.")
    ck = load_bytes(path.read_bytes(), path.name)
    ck.path = path
    return ck


def read_metadata(path: str | os.PathLike) -> dict:
    """Metadata only (reads just the safetensors header), for listings."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path.name} is not a safetensors file.")
        n = int.from_bytes(head, "little")
        if n > 50 * 2**20:
            raise CheckpointError(f"{path.name} has an implausible header.")
        try:
            header = json.loads(f.read(n))
            meta = json.loads(header["__metadata__"][META_KEY])
        except (ValueError, KeyError, TypeError):
            raise CheckpointError(f"{path.name} has no aelib metadata.") from None
    return meta


def list_checkpoints(folder: str | os.PathLike) -> list[tuple[Path, dict]]:
    """(path, metadata) for every readable aelib checkpoint in ``folder``, sorted by name."""
    folder = Path(folder)
    out = []
    for p in sorted(folder.glob("*.safetensors")):
        try:
            out.append((p, read_metadata(p)))
        except (CheckpointError, OSError):
            continue
    return out


def delete(path: str | os.PathLike) -> None:
    """Remove a checkpoint and its sidecar."""
    path = Path(path).with_suffix(".safetensors")
    for p in (path, path.with_suffix(".json")):
        p.unlink(missing_ok=True)


def default_dir() -> Path:
    """The shipped checkpoints folder of the repository (``checkpoints/``)."""
    return Path(__file__).resolve().parent.parent / "checkpoints"



# ---- what a checkpoint says about its data and training: one reader for the CLI and the app -----

def _section(meta: object, name: str) -> dict:
    """``meta[name]`` when it is a dict; a missing or malformed section reads as empty."""
    part = meta.get(name) if isinstance(meta, dict) else None
    return part if isinstance(part, dict) else {}


def _int_tuple(value: object) -> tuple[int, ...] | None:
    if isinstance(value, (list, tuple)) and value and all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 10_000 for c in value):
        return tuple(sorted({int(c) for c in value}))
    return None


@dataclass(frozen=True)
class DataInfo:
    """The data a model was trained on, as its checkpoint records it (``meta["dataset"]``).

    ``key`` names a built-in dataset ("mnist"), empty for the user's own images; ``normal_classes``
    is set for a one-class (anomaly) model. Checkpoints written before this schema kept the normal
    classes under ``extra``; :meth:`from_meta` reads both.
    """

    name: str = ""
    key: str = ""
    split: str = ""
    n_train: int | None = None
    n_val: int | None = None
    classes: tuple[str, ...] | None = None
    normal_classes: tuple[int, ...] | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "key": self.key, "split": self.split, "n_train": self.n_train,
                "n_val": self.n_val, "classes": None if self.classes is None else list(self.classes),
                "normal_classes": None if self.normal_classes is None else list(self.normal_classes)}

    @classmethod
    def from_meta(cls, meta: object) -> DataInfo:
        ds = _section(meta, "dataset")
        normal = _int_tuple(ds.get("normal_classes"))
        if normal is None and "normal_classes" not in ds:
            normal = _int_tuple(_section(meta, "extra").get("normal_classes"))

        def text(v: object) -> str:
            return v if isinstance(v, str) else ""

        def count(v: object) -> int | None:
            return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None

        classes = ds.get("classes")
        classes = tuple(classes) if isinstance(classes, list) and all(isinstance(c, str) for c in classes) \
            else None
        return cls(name=text(ds.get("name")), key=text(ds.get("key")), split=text(ds.get("split")),
                   n_train=count(ds.get("n_train")), n_val=count(ds.get("n_val")), classes=classes,
                   normal_classes=normal)


def noise_of(meta: object) -> tuple[str | None, float]:
    """(denoising noise kind or None, its level) recorded in the training config."""
    tc = _section(meta, "train")
    kind = tc.get("noise")
    level = tc.get("noise_level")
    ok = isinstance(level, (int, float)) and not isinstance(level, bool) and 0 <= level < 1e6
    return (kind if isinstance(kind, str) and kind else None), (float(level) if ok else 0.0)


def recorded_mse(meta: object) -> float | None:
    """The reconstruction MSE a checkpoint records: on its test set if measured, else validation."""
    metrics = _section(meta, "metrics")
    value = metrics.get("test_mse", metrics.get("val_mse"))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if value == value and abs(value) < float("inf") else None


def describe(meta: object) -> str:
    """A short description: "conv, latent 32, denoising, normal 1"."""
    m = _section(meta, "model")
    latent = m.get("latent")
    parts = [str(m.get("preset") or m.get("family") or "model"),
             f"latent {latent}" if isinstance(latent, int) and not isinstance(latent, bool)
             else "feature-map latent"]
    if noise_of(meta)[0]:
        parts.append("denoising")
    normal = DataInfo.from_meta(meta).normal_classes
    if normal is not None:
        parts.append("normal " + ",".join(str(c) for c in normal))
    return ", ".join(parts)


def _flat(prefix: str, d: dict) -> dict:
    return {f"{prefix}.{k}": (tuple(v) if isinstance(v, list) else v) for k, v in d.items()
            if not isinstance(v, dict)}


def differences(metas: list[dict]) -> dict[str, list]:
    """{"model.latent": [32, 16], "train.lr": [...], ...}: the model and training settings in which
    these checkpoints' metadata differ (one value per checkpoint, None where one lacks it)."""
    flats = [{**_flat("model", _section(m, "model")), **_flat("train", _section(m, "train"))} for m in metas]
    keys = sorted({k for f in flats for k in f})
    return {k: [f.get(k) for f in flats] for k in keys if len({repr(f.get(k)) for f in flats}) > 1}
