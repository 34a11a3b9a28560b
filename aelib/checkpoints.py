"""Checkpoints: safetensors weights with the model's JSON metadata inside, written atomically.

One ``.safetensors`` file is the whole checkpoint: its header's ``__metadata__`` holds the JSON
(model config, dataset, normalisation, training config, history, metrics, versions), so an upload
is one file and ``load`` rebuilds the module with no guessing. A ``.json`` sidecar with the same
metadata is written beside it for people and tools that read JSON.

Nothing here unpickles anything: safetensors is a flat, typed tensor format, and ``torch.load``
is never called.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from ._io import atomic_open
from .errors import CheckpointError, ConfigError
from .models import ModelConfig, build, reconstruct

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

    Nothing is written unless :func:`load` would accept the result: weights that are NaN or
    infinite once stored in ``dtype`` (float16 overflows above 65504), or a model whose outputs
    are not finite, raise :class:`CheckpointError` and leave an existing file as it was.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    if meta is None:
        meta = make_metadata(model, name=meta_kw.pop("name", None) or path.stem, **meta_kw)
    elif meta_kw:
        raise TypeError("Pass either meta or metadata keywords, not both.")
    data = to_bytes(model, meta, dtype)
    problem = _bytes_problem(data, model, dtype)
    if problem:
        raise CheckpointError(f"The model was not saved, so {path.name} is unchanged: {problem}.")
    sidecar = path.with_suffix(".json")
    # The sidecar goes first and comes back last: a save killed half-way leaves no sidecar rather
    # than one describing other weights.
    sidecar.unlink(missing_ok=True)
    _atomic_write(path, data)
    _atomic_write(sidecar, json.dumps(meta, indent=1, allow_nan=True).encode())
    return path


def checked_bytes(model: nn.Module, meta: dict, dtype: torch.dtype | None = None) -> bytes:
    """:func:`to_bytes`, refused with :class:`CheckpointError` when :func:`load_bytes` would refuse the
    result (non-finite weights as stored, non-finite outputs, metadata out of bounds): for downloads."""
    data = to_bytes(model, meta, dtype)
    problem = _bytes_problem(data, model, dtype)
    if problem:
        raise CheckpointError(f"The model cannot be downloaded: {problem}.")
    return data


def _bytes_problem(data: bytes, model: nn.Module, dtype: torch.dtype | None) -> str | None:
    try:
        header, _ = _header(data, "its file")
        _metadata(header, "its file")
    except CheckpointError as exc:
        return str(exc).rstrip(".")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    return _weights_problem(state, model.state_dict()) or _outputs_problem(model.config, state)


# ---- reading untrusted bytes ------------------------------------------------------------------

MAX_HEADER_BYTES = 16 * 2**20    # the safetensors JSON header: tensor table plus metadata
MAX_METADATA_BYTES = 4 * 2**20   # aelib's JSON; the shipped ones are ~10 kB
MAX_JSON_DEPTH = 32              # aelib writes at most 4 levels
MAX_TENSORS = 1024
DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _json(raw: bytes, what: str, part: str):
    """Parse untrusted JSON with its nesting bounded first, so no parser recursion can blow up."""
    if not raw or raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH:
        bare = np.frombuffer(_JSON_STRING.sub(b'""', raw), dtype=np.uint8)
        step = np.isin(bare, (ord("["), ord("{"))).astype(np.int32) - np.isin(bare, (ord("]"), ord("}")))
        if bare.size and int(np.cumsum(step).max()) > MAX_JSON_DEPTH:
            raise CheckpointError(f"{what} has {part} nested more than {MAX_JSON_DEPTH} levels deep.")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise CheckpointError(f"{what} has {part} that is not valid JSON.") from None


def _header(data: bytes, what: str) -> tuple[dict, int]:
    """The safetensors header (tensor table and ``__metadata__``), checked; and its length."""
    n = int.from_bytes(data[:8], "little")
    if n < 2 or n > MAX_HEADER_BYTES or 8 + n > len(data):
        raise CheckpointError(f"{what} is not a valid safetensors file (its header length is wrong).")
    header = _json(data[8:8 + n], what, "a safetensors header")
    if not isinstance(header, dict):
        raise CheckpointError(f"{what} is not a valid safetensors file (its header is not an object).")
    if len(header) > MAX_TENSORS + 1:
        raise CheckpointError(f"{what} holds {len(header):,} tensors; at most {MAX_TENSORS} are allowed.")
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("shape"), list) or \
                not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d for d in entry["shape"]):
            raise CheckpointError(f"{what}: weight {_name(key)} has a malformed entry in its header.")
        if entry.get("dtype") not in DTYPES:
            raise CheckpointError(f"{what}: weight {_name(key)} is stored as {_name(entry.get('dtype'))}; "
                                  "aelib reads float16, bfloat16, float32 and float64 weights only.")
    return header, n


def _name(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _metadata(header: dict, what: str) -> dict:
    """aelib's metadata from a checked header: the right format, typed sections, a valid model config."""
    extra = header.get("__metadata__") or {}
    raw = extra.get(META_KEY) if isinstance(extra, dict) else None
    if not isinstance(raw, str):
        raise CheckpointError(f"{what} is a safetensors file without aelib metadata, so its model "
                              "cannot be rebuilt. Save checkpoints with aelib (or the dashboard).")
    raw = raw.encode()
    if len(raw) > MAX_METADATA_BYTES:
        raise CheckpointError(f"{what} carries {len(raw) / 2**20:.0f} MB of metadata; at most "
                              f"{MAX_METADATA_BYTES // 2**20} MB are allowed.")
    meta = _json(raw, what, "metadata")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{what} is a safetensors file without aelib metadata, so its model "
                              "cannot be rebuilt. Save checkpoints with aelib (or the dashboard).")
    _check_sections(meta, what)
    try:
        ModelConfig.from_dict(meta.get("model"))
    except ConfigError as exc:
        raise CheckpointError(f"{what} has an invalid model config: {exc}") from None
    return meta


def _parse(data: bytes, what: str) -> tuple[dict, dict[str, torch.Tensor]]:
    if len(data) > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{what} is {len(data) / 2**20:.0f} MB; checkpoints over "
                              f"{MAX_CHECKPOINT_BYTES // 2**20} MB are refused.")
    if len(data) < _SAFETENSORS_MIN or data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04",
                                                      b"\x80\x05") or data[:2] == b"PK":
        raise CheckpointError(f"{what} is not a safetensors file. aelib loads only .safetensors "
                              "checkpoints (pickled .pt/.pth files are refused: loading them can run "
                              "code).")
    # Header and metadata first: a config that is invalid or too costly is refused before any
    # tensor is read.
    header, _ = _header(data, what)
    meta = _metadata(header, what)
    try:
        tensors = st_load(data)
    except Exception as exc:  # noqa: BLE001 - any failure of the parser on untrusted bytes is the file's
        raise CheckpointError(f"{what} is not a valid safetensors file ({_one_line(exc)}). aelib loads "
                              "only .safetensors checkpoints.") from None
    return meta, tensors


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
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


def _weights_problem(tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> str | None:
    """Why ``tensors`` cannot be the weights of a model whose state dict is ``expected``, or None."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        return (f"the weights do not match its config (missing {missing[:3]}"
                f"{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}"
                f"{'...' if len(unexpected) > 3 else ''})")
    for k, v in expected.items():
        t = tensors[k]
        if tuple(t.shape) != tuple(v.shape):
            return f"weight {k!r} has shape {tuple(t.shape)} but the config needs {tuple(v.shape)}"
        if not t.is_floating_point():
            return f"weight {k!r} is {t.dtype}, not floating point"
        # Checked as the model will hold it: float64 values past float32's range become infinite.
        if not torch.isfinite(t.to(v.dtype)).all():
            return f"weight {k!r} holds NaN or infinite values"
    return None


def _probes(cfg: ModelConfig) -> torch.Tensor:
    """Three inputs at the edges and middle of the pixel range, plus noise: a sane model maps them
    all to finite latents and outputs."""
    lo, hi = cfg.value_range
    g = torch.Generator().manual_seed(0)
    noise = lo + (hi - lo) * torch.rand((1, *cfg.in_shape), generator=g)
    flat = torch.tensor([lo, hi], dtype=torch.float32).view(2, 1, 1, 1).expand(2, *cfg.in_shape)
    return torch.cat([flat, noise])


def _assembled(cfg: ModelConfig, state: dict[str, torch.Tensor]) -> nn.Module:
    """A model of ``cfg`` holding ``state`` (converted to its dtypes), in eval mode. Built on the
    meta device and given the tensors themselves, so no weights are initialised only to be
    overwritten."""
    with torch.device("meta"):
        model = build(cfg)
    model.load_state_dict({k: state[k].to(v.dtype) for k, v in model.state_dict().items()}, assign=True)
    return model.eval()


def _outputs_problem(cfg: ModelConfig, state: dict[str, torch.Tensor]) -> str | None:
    """Why a model of ``cfg`` with weights ``state`` gives non-finite latents or outputs, or None."""
    return _model_outputs_problem(_assembled(cfg, state))


@torch.no_grad()
def _model_outputs_problem(model: nn.Module) -> str | None:
    model.eval()
    x = _probes(model.config)
    z = model.encode(x)
    for part in z if isinstance(z, tuple) else (z,):
        if not torch.isfinite(part).all():
            return "its latent codes are NaN or infinite even for plain images, so its weights are unusable"
    if not torch.isfinite(reconstruct(model, x)).all():
        return "its reconstructions are NaN or infinite even for plain images, so its weights are unusable"
    return None


def _rebuild(meta: dict, tensors: dict[str, torch.Tensor], what: str) -> nn.Module:
    try:
        cfg = ModelConfig.from_dict(meta.get("model"))
    except ConfigError as exc:
        raise CheckpointError(f"{what} has an invalid model config: {exc}") from None
    # Shapes are checked on the meta device first: nothing is allocated until the config (already
    # bounded in cost) agrees with the weights the file really carries.
    with torch.device("meta"):
        expected = build(cfg).state_dict()
    problem = _weights_problem(tensors, expected)
    if problem:
        raise CheckpointError(f"{what}: {problem}.")
    try:
        model = _assembled(cfg, tensors)
    except (RuntimeError, MemoryError) as exc:
        raise CheckpointError(f"{what}: its model cannot be built ({_one_line(exc)}).") from None
    problem = _model_outputs_problem(model)
    if problem:
        raise CheckpointError(f"{what}: {problem}.")
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
    elif path.suffix != ".safetensors" and not path.exists():  # as save() names it
        path = path.with_name(path.name + ".safetensors")
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
    """Metadata only (reads just the safetensors header), for listings; checked like :func:`load`
    checks it, so a listed checkpoint has a valid, affordable model config."""
    path = Path(path)
    what = f"'{path.name}'"
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{what} is not a safetensors file.")
        n = int.from_bytes(head, "little")
        if n < 2 or n > MAX_HEADER_BYTES:
            raise CheckpointError(f"{what} has an implausible header.")
        data = head + f.read(n)
    header, _ = _header(data, what)
    return _metadata(header, what)


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


def file_stem(name: str) -> str:
    """``name`` as a file name: each run of anything but letters, digits, "_" and "." becomes one "-"."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", name).strip("-.")[:80] or "model"


def trained_beta(meta: object) -> float | None:
    """The KL weight the checkpoint's model was trained with (``fit`` records it under "train"), or
    None where it is not recorded: a VAE's ELBO must be computed with it, not the default."""
    beta = _section(meta, "train").get("beta")
    return float(beta) if isinstance(beta, (int, float)) and not isinstance(beta, bool) else None


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
    these checkpoints' metadata differ (one value per checkpoint, None where one lacks it).

    A model setting an older checkpoint lacks is the default it loads with. A training setting it
    lacks was not recorded: it differs only if the checkpoints that record it disagree (an older
    file without ``train.engine`` is not shown as differing from every newer one). The KL weight
    counts for VAEs only."""
    model_defaults = {f"model.{f.name}": f.default for f in dataclasses.fields(ModelConfig)
                      if f.default is not dataclasses.MISSING}
    flats = [{**_flat("model", _section(m, "model")), **_flat("train", _section(m, "train"))} for m in metas]
    for f in flats:
        if f.get("model.family", "vae") != "vae":  # fit records a KL weight for every family
            f.pop("train.beta", None)
    keys = sorted({k for f in flats for k in f})
    for f in flats:
        for k in keys:
            if k not in f and k in model_defaults:
                f[k] = tuple(model_defaults[k]) if isinstance(model_defaults[k], list) else model_defaults[k]
    return {k: [f.get(k) for f in flats] for k in keys if len({repr(f[k]) for f in flats if k in f}) > 1}
