"""Streamlit glue: the only aelib module that imports streamlit.

* Shared, cached, read-only things (``st.cache_resource``): datasets keyed by (name, root),
  shipped checkpoints keyed by file hash, local-path image sets keyed by (path, mtime).
* Values derived from a model and images (``st.cache_data``): reconstructions, errors, scores,
  latent codes, interpolation frames. Keyed by a *model content key* (``sha256:...`` of the
  safetensors bytes, or ``run:<id>`` for a model trained in this server process) and a *data
  key* (dataset + subset); the model and tensors themselves are passed as ``_``-prefixed
  arguments, which Streamlit does not hash. Every cache has ``max_entries``.
* Per-user things live only in ``st.session_state`` under ``"aelib.*"`` keys: uploads, the
  session's training runs, the picks.
* The shared frame: the sidebar (dataset, models, run status + Stop) that every page gets.

Pages read widgets, call these helpers and ``aelib``, and draw.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import runpy
import threading
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch
from torch import nn

from . import checkpoints, explore, scoring
from .data import DATASETS, ImageDataset, default_data_root, load_images, load_splits, one_class_split
from .errors import AelibError, DataError
from .models import ModelConfig
from .train import TrainConfig
from .worker import ACTIVE, DONE, STOPPED, Run, TrainingManager, get_manager

NS = "aelib."
UPLOAD_MAX_BYTES = 512 * 1024**2  # uint8 pixels held for one uploaded image set
# torch threads for the UI's own inference. 1 by default: on a 2-core server that also trains and
# serves other sessions, 2 OpenMP threads contend for the cores and spin; measured with other work
# running, scoring 10,000 MNIST-size images with the conv default took 10.5 s on 2 threads and 1.8 s
# on 1 (idle, 2 threads are ~1.9x faster: set AELIB_UI_THREADS=2 on a machine of your own).
UI_THREADS = max(1, int(os.environ.get("AELIB_UI_THREADS", "").strip() or 1))
BUILTIN = {spec.title: key for key, spec in DATASETS.items()}  # "MNIST" -> "mnist"
UPLOAD, LOCAL = "Upload images", "Local path"


# ================================================================================================
# Settings (environment, then .streamlit/secrets.toml)


def _secret(name: str) -> str | None:
    try:
        value = st.secrets.get(name)
    except Exception:  # noqa: BLE001 - no secrets file is the normal case
        return None
    return None if value is None else str(value)


def _setting(env: str, secret: str) -> str:
    return os.environ.get(env, "").strip() or (_secret(secret) or "").strip()


def _flag(env: str, secret: str) -> bool:
    return _setting(env, secret).lower() in ("1", "true", "yes", "on")


def local_paths_allowed() -> bool:
    """Server-side paths are read only when switched on (``AELIB_ALLOW_LOCAL_PATHS=1``)."""
    return _flag("AELIB_ALLOW_LOCAL_PATHS", "allow_local_paths")


def local_root() -> Path:
    """The one folder local paths may point into (``AELIB_LOCAL_ROOT``, default the home folder)."""
    raw = _setting("AELIB_LOCAL_ROOT", "local_root")
    return Path(raw).expanduser().resolve() if raw else Path.home().resolve()


def read_only() -> bool:
    """``AELIB_READONLY=1``: nothing is written to the checkpoints folder."""
    return _flag("AELIB_READONLY", "readonly")


def checkpoint_dir() -> Path:
    raw = _setting("AELIB_CHECKPOINT_DIR", "checkpoint_dir")
    return Path(raw).expanduser() if raw else checkpoints.default_dir()


def data_root() -> Path:
    return default_data_root()


def download_allowed() -> bool:
    return _setting("AELIB_DOWNLOAD", "download").lower() not in ("0", "false", "no", "off")


def resolve_local_path(text: str, root: Path | None = None) -> Path:
    """A user-typed server path, resolved (symlinks too) and refused unless inside ``root``."""
    root = (root or local_root()).resolve()
    if not text.strip():
        raise DataError("Type the path of a .npy/.npz file, a .zip or a folder of images.")
    p = Path(text.strip()).expanduser()
    p = (p if p.is_absolute() else root / p).resolve()
    if not p.is_relative_to(root):
        raise DataError(f"'{text}' is outside the allowed folder {root}; only paths inside it can be read.")
    if not p.exists():
        raise DataError(f"No file or folder at '{p}'.")
    return p


# ================================================================================================
# Session


def session_id() -> str:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "no-session"


def _alive_probe(sid: str) -> Callable[[], bool] | None:
    """Streamlit's registry of connected sessions (``Runtime.is_active_session``), when a runtime
    exists. A tab that closes drops out of it at once; the worker stops the session's runs after
    its grace period. (AppTest's stand-in runtime answers truthy for every session.)"""
    from streamlit import runtime

    if not runtime.exists():
        return None
    rt = runtime.get_instance()
    return lambda: rt.is_active_session(sid)


def manager() -> TrainingManager:
    return get_manager()


def _state(name: str, default_factory: Callable):
    key = NS + name
    if key not in st.session_state:
        st.session_state[key] = default_factory()
    return st.session_state[key]


def remember(*prefixes: str) -> None:
    """Copy this page's widget values (keys starting with one of ``prefixes``) to shadow keys.

    Streamlit forgets a widget's value once a run does not draw it (the user went to another
    page). Pages call this first and give their widgets :func:`kept` values, which come from the
    shadow copy, so settings survive page switches.
    """
    for key in list(st.session_state.keys()):
        if isinstance(key, str) and key.startswith(prefixes) and not key.startswith(NS + "keep."):
            st.session_state[NS + "keep." + key] = st.session_state[key]


def kept(key: str, default, *, options: Sequence | None = None, lo: float | None = None,
         hi: float | None = None):
    """The remembered value of widget ``key`` (else ``default``), to pass as its value / index /
    default together with ``key=key``.

    Passing it as the widget's own default (rather than writing ``st.session_state[key]``) matters
    in the browser: a widget that comes back after a run without it is re-created from its
    default. A value that no longer fits (not in ``options``, outside ``lo``..``hi``, e.g. after a
    dataset change) falls back to ``default``, and is dropped from the live state too.
    """
    def fits(v) -> bool:
        if options is not None and not all(i in options for i in (v if isinstance(v, list) else [v])):
            return False
        return v is None or not ((lo is not None and v < lo) or (hi is not None and v > hi))

    if key in st.session_state and not fits(st.session_state[key]):
        del st.session_state[key]
    value = st.session_state.get(NS + "keep." + key, default)
    return value if fits(value) else default


def flash(message: str, kind: str = "success") -> None:
    """Show ``message`` after a full rerun (so the sidebar picks up a run that just started)."""
    st.session_state[NS + "flash"] = (kind, message)
    st.rerun()


def show_flash() -> None:
    item = st.session_state.pop(NS + "flash", None)
    if item:
        getattr(st, item[0])(item[1])


def digest(uploaded) -> str:
    """sha256 of an uploaded file, computed once per upload (Streamlit gives each a ``file_id``)."""
    memo = _state("digests", dict)
    fid = getattr(uploaded, "file_id", None)
    if fid is None or fid not in memo:
        if len(memo) > 64:
            memo.clear()
        h = hashlib.sha256(uploaded.getvalue()).hexdigest()
        if fid is None:
            return h
        memo[fid] = h
    return memo[fid]


def session_runs() -> dict[str, Run]:
    """This session's runs (submitted here, or finished runs reused), oldest first."""
    return _state("runs", dict)


def active_run() -> Run | None:
    runs = [r for r in session_runs().values() if r.status in ACTIVE]
    running = [r for r in runs if r.status == "running"]
    return (running or runs or [None])[0]


def heartbeat() -> None:
    sid = session_id()
    manager().heartbeat(sid, _alive_probe(sid))


# ================================================================================================
# Datasets


@dataclass
class DataChoice:
    """The dataset picked in the sidebar: train and test splits plus where they came from."""

    key: str
    title: str
    train: ImageDataset
    test: ImageDataset
    origin: str  # a sentence for the user

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.test.shape

    @property
    def classes(self) -> list[str] | None:
        return self.test.classes

    @property
    def labelled(self) -> bool:
        return self.test.labels is not None

    @property
    def builtin(self) -> str | None:
        return self.train.extra.get("dataset")


_SOURCE_TEXT = {"local": "local files", "download": "downloaded", "bundled-sample": "bundled offline sample",
                "upload": "upload", "path": "local path", "memory": "memory"}


@st.cache_resource(max_entries=4, show_spinner="Loading dataset...")
def builtin_splits(name: str, root: str, download: bool) -> tuple[ImageDataset, ImageDataset]:
    return load_splits(name, root=root, download=download)


def _split_user_images(images: torch.Tensor, labels: torch.Tensor | None, name: str, source: str,
                       note: str) -> tuple[ImageDataset, ImageDataset]:
    """User images: the last 10% (at least 1) is the test set when there are 20 or more."""
    n = len(images)
    cut = n - max(1, n // 10) if n >= 20 else 0
    tr = slice(0, cut) if cut else slice(0, n)
    te = slice(cut, n)
    # Class names indexed by label value (labels are small non-negative integers).
    classes = None if labels is None else [str(c) for c in range(int(labels.max()) + 1)]

    def part(s: slice, split: str) -> ImageDataset:
        return ImageDataset(images=images[s], labels=None if labels is None else labels[s], name=name,
                            source=source, note=note, classes=classes, extra={"split": split})
    return part(tr, "train"), part(te, "test")


_LABEL_KEYS = ("labels", "y", "targets")


def _npy_vector(fh, n: int, what: str, kinds: str = "iub") -> np.ndarray:
    """A 1-D array of exactly ``n`` values (dtype kind in ``kinds``) from the .npy stream ``fh``.

    The header is parsed and checked before any data is read (never with pickle), so a small file
    declaring a huge array is refused without allocating it; only ``n`` values are ever read.
    """
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
        raise DataError(f"{what} is not a valid .npy array ({exc}).") from exc
    if dtype.hasobject or dtype.kind not in kinds or dtype.subdtype is not None or dtype.itemsize > 8:
        raise DataError(f"{what} holds values of dtype {dtype}; labels must be integers (0 or 1).")
    count = math.prod(shape) if shape else 1
    if len(shape) != 1 or shape[0] != n:
        raise DataError(f"{what} has {count:,} values (shape {tuple(shape)}) but the test set has {n:,} "
                        "images; labels must be a 1-D array with one value per image.")
    want = n * dtype.itemsize
    data = fh.read(want)
    if len(data) != want:
        raise DataError(f"{what} is truncated: it declares {n:,} values but holds fewer.")
    return np.frombuffer(data, dtype=dtype).copy()


def _npz_labels(raw: bytes, n: int) -> torch.Tensor | None:
    """Integer labels stored beside the images in a .npz (key ``labels`` or ``y``), if any.

    Labels that do not fit (wrong shape, not integers, out of range, unreadable) are ignored; the
    member's header is checked before its data is decompressed.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            names = set(zf.namelist())
            for k in _LABEL_KEYS:
                member = k + ".npy" if k + ".npy" in names else (k if k in names else None)
                if member is None:
                    continue
                with zf.open(member) as fh:
                    y = _npy_vector(fh, n, f"'{member}'")
                if n and 0 <= y.min() and y.max() < 1000:
                    return torch.from_numpy(y.astype(np.int64))
                return None
    except (AelibError, ValueError, OSError, EOFError, zipfile.BadZipFile, MemoryError, RuntimeError,
            NotImplementedError):
        return None
    return None


def read_upload(uploaded, max_images: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(images, labels or None) of an uploaded file; ``DataError`` with a sentence otherwise."""
    raw = uploaded.getvalue()
    images = load_images(uploaded, max_images=max_images, max_bytes=UPLOAD_MAX_BYTES)
    name = str(getattr(uploaded, "name", "") or "")
    labels = _npz_labels(raw, len(images)) if name.lower().endswith(".npz") else None
    return images, labels


def _uploaded_choice(uploaded) -> DataChoice:
    sha = digest(uploaded)[:16]
    store = _state("uploads", dict)
    if sha not in store:
        images, labels = read_upload(uploaded)
        note = f"Uploaded file {uploaded.name} ({uploaded.size / 1e6:.1f} MB)."
        train, test = _split_user_images(images, labels, uploaded.name, "upload", note)
        store.clear()  # one uploaded image set per session at a time
        store[sha] = DataChoice(f"upload:{sha}", uploaded.name, train, test,
                                f"upload · {len(images):,} images")
    return store[sha]


@st.cache_resource(max_entries=2, show_spinner="Reading local images...")
def _local_images(path: str, mtime_ns: int) -> torch.Tensor:
    return load_images(path)


def _local_choice(path: Path) -> DataChoice:
    images = _local_images(str(path), path.stat().st_mtime_ns)
    train, test = _split_user_images(images, None, path.name, "path", f"Read from {path} on the server.")
    return DataChoice(f"path:{path}:{path.stat().st_mtime_ns}", path.name, train, test,
                      f"local path · {len(images):,} images")


def builtin_choice(title: str) -> DataChoice:
    key = BUILTIN[title]
    root = str(data_root())
    train, test = builtin_splits(key, root, download_allowed())
    origin = f"{_SOURCE_TEXT.get(train.source, train.source)} · {len(train):,} train / {len(test):,} test"
    return DataChoice(f"{key}|{root}|{train.source}", title, train, test, origin)


@st.cache_resource(max_entries=4, show_spinner=False)
def one_class(data_key: str, normals: tuple[int, ...], _train: ImageDataset, _test: ImageDataset
              ) -> tuple[ImageDataset, ImageDataset]:
    """(normal training images, test set labelled 1 = anomaly) for the chosen normal classes."""
    return one_class_split(_train, _test, list(normals))


def read_labels(uploaded, n: int) -> np.ndarray:
    """0/1 anomaly labels from an uploaded .npy, or a .csv/.txt (one column, or a 'label' column)."""
    shown = str(getattr(uploaded, "name", "") or "") or "the upload"
    name = shown.lower()
    raw = uploaded.getvalue()
    try:
        if name.endswith(".npy"):
            y = _npy_vector(io.BytesIO(raw), n, shown, kinds="biuf")
        else:
            df = pd.read_csv(io.BytesIO(raw), header=None if raw[:1].isdigit() else "infer")
            cols = [c for c in df.columns if str(c).strip().lower() in ("label", "labels", "anomaly", "y")]
            y = df[cols[0] if cols else df.columns[-1]].to_numpy()
    except MemoryError as exc:
        raise DataError(f"{shown} is too large to read as labels; expected one 0/1 value per test image.") \
            from exc
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"Could not read labels from {shown} ({exc}); expected a .npy array "
                        "or a CSV with one 0/1 value per test image.") from exc
    y = np.asarray(y).ravel()
    if len(y) != n:
        raise DataError(f"The labels file has {len(y)} values but the test set has {n} images.")
    if y.dtype.kind not in "biuf" or not np.isin(y, (0, 1)).all():
        raise DataError("Labels must be 0 (normal) or 1 (anomaly), one per test image.")
    return y.astype(np.int8)


def uploaded_images(uploaded, slot: str) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """(images, npz labels or None, content key) of an upload, parsed once per session and slot."""
    sha = digest(uploaded)[:16]
    store = _state(f"upload_{slot}", dict)
    if sha not in store:
        store.clear()
        store[sha] = read_upload(uploaded)
    images, labels = store[sha]
    return images, labels, f"upload:{sha}"


# ================================================================================================
# Models


@dataclass
class ModelChoice:
    """A model the user can pick: a checkpoint file, an upload, or a run of this session."""

    key: str       # content key: "sha256:..." or "run:<id>"
    label: str
    origin: str    # "checkpoint" | "upload" | "session"
    meta: dict
    loader: Callable[[], nn.Module] = field(repr=False)

    @property
    def config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.meta["model"])

    @property
    def model(self) -> nn.Module:
        return self.loader()

    @property
    def vae(self) -> bool:
        return self.meta["model"]["family"] == "vae"

    @property
    def noise(self) -> tuple[str | None, float]:
        tc = _section(self.meta, "train")
        noise = tc.get("noise")
        try:
            level = float(tc.get("noise_level") or 0.0)
        except (TypeError, ValueError):
            level = 0.0
        return (noise if isinstance(noise, str) and noise else None), (level if math.isfinite(level) else 0.0)

    @property
    def normal_classes(self) -> list[int] | None:
        """Normal classes of a one-class model (``dataset`` or ``extra`` metadata), else None."""
        return _normal_classes(self.meta)

    @property
    def dataset_key(self) -> str:
        key = _section(self.meta, "dataset").get("key")
        return key if isinstance(key, str) else ""


def _section(meta, name: str) -> dict:
    """``meta[name]`` when it is a dict; a missing or malformed section (a string, a list) reads as empty."""
    part = meta.get(name) if isinstance(meta, dict) else None
    return part if isinstance(part, dict) else {}


def recorded_mse(meta: dict) -> float | None:
    """The reconstruction MSE a checkpoint records: on its test set if measured, else validation."""
    metrics = _section(meta, "metrics")
    value = metrics.get("test_mse", metrics.get("val_mse"))
    try:
        return None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


def _normal_classes(meta: dict) -> list[int] | None:
    """The normal classes a one-class model records; malformed entries (text, non-integers) read as none."""
    for part in ("dataset", "extra"):
        nc = _section(meta, part).get("normal_classes")
        if nc is None:
            continue
        if isinstance(nc, (list, tuple)) and nc and all(isinstance(c, int) and not isinstance(c, bool)
                                                        for c in nc):
            return [int(c) for c in nc]
        return None
    return None


def describe(meta: dict) -> str:
    m = _section(meta, "model")
    latent = m.get("latent")
    lat = f"latent {latent}" if latent is not None else "feature-map latent"
    extra = []
    if _section(meta, "train").get("noise"):
        extra.append("denoising")
    nc = _normal_classes(meta)
    if nc is not None:
        extra.append(f"normal {','.join(str(c) for c in nc)}")
    return f"{m.get('preset') or m.get('family')}, {lat}" + (f", {', '.join(extra)}" if extra else "")


@st.cache_data(max_entries=256, show_spinner=False)
def _file_sha(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@st.cache_data(max_entries=8, show_spinner=False)
def _checkpoint_listing(folder: str, signature: tuple) -> list[tuple[str, dict, str]]:
    out = []
    for path, meta in checkpoints.list_checkpoints(folder):
        stt = path.stat()
        out.append((str(path), meta, _file_sha(str(path), stt.st_mtime_ns, stt.st_size)))
    return out


def saved_checkpoints() -> list[tuple[Path, dict, str]]:
    """(path, metadata, sha256) of the checkpoints in the checkpoints folder."""
    folder = checkpoint_dir()
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("*.safetensors"))
    sig = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    return [(Path(p), m, h) for p, m, h in _checkpoint_listing(str(folder), sig)]


@st.cache_resource(max_entries=16, show_spinner="Loading checkpoint...")
def _checkpoint_model(sha: str, path: str) -> nn.Module:
    return checkpoints.load(path).model


def _uploaded_models(files) -> list[ModelChoice]:
    store = _state("model_uploads", dict)
    out, errors = [], []
    for f in files or []:
        sha = digest(f)
        if sha not in store:
            try:
                store[sha] = checkpoints.load_bytes(f.getvalue(), f.name)
            except AelibError as exc:
                store[sha] = str(exc)  # remembered, so a bad file is parsed once
        ck = store[sha]
        if isinstance(ck, str):
            errors.append(ck)
            continue
        out.append(ModelChoice(f"sha256:{sha}", f"{f.name} ({describe(ck.meta)}) · upload", "upload",
                               ck.meta, lambda ck=ck: ck.model))
    for e in errors:
        st.error(e)
    keep = {digest(f) for f in files or []}
    for sha in [s for s in store if s not in keep]:
        del store[sha]  # removed from the uploader: free it
    return out


def run_choice(run: Run) -> ModelChoice:
    state = "" if run.status == DONE else f" [{run.status}]"
    return ModelChoice(f"run:{run.id}", f"{run.name} ({describe(run.meta)}) · trained here{state}", "session",
                       run.meta, lambda: run.model)


def all_models(upload_files=None) -> list[ModelChoice]:
    out = [ModelChoice(f"sha256:{sha}", f"{p.stem} ({describe(meta)}) · checkpoints", "checkpoint", meta,
                       lambda sha=sha, p=p: _checkpoint_model(sha, str(p)))
           for p, meta, sha in saved_checkpoints()]
    out += [run_choice(r) for r in session_runs().values()
            if r.status in (DONE, STOPPED) and r.model is not None and r.meta is not None]
    out += _uploaded_models(upload_files)
    return out


def compatible(models: Sequence[ModelChoice], shape: tuple[int, ...]) -> list[ModelChoice]:
    return [m for m in models if tuple(m.meta["model"]["in_shape"]) == tuple(shape)]


# ================================================================================================
# Training runs


def start_run(model_config: ModelConfig, train_config: TrainConfig, data: DataChoice, *, name: str,
              train_images: torch.Tensor | None = None, subset: int | None = None, tags: dict | None = None,
              data_key: str | None = None) -> Run:
    """Submit a run for this session through the worker and remember it here."""
    images = data.train.images if train_images is None else train_images
    if subset:
        images = images[:subset]
    val = data.test.images[:2000]
    sid = session_id()
    key = data_key or f"{data.key}|train[:{len(images)}]"
    dataset = {"name": data.title, "key": data.builtin or data.key, "data_key": key, "n_train": len(images),
               "n_val": len(val), "classes": data.classes,
               "normal_classes": (tags or {}).get("normal_classes")}
    run = manager().submit(sid, model_config, images, val, train_config, data_key=key, name=name,
                           dataset=dataset, tags=tags, alive=_alive_probe(sid))
    session_runs()[run.id] = run
    return run


def save_run(run: Run) -> Path:
    """Write a finished run to the checkpoints folder under a free, file-safe name."""
    if read_only():
        raise DataError("This dashboard is read-only (AELIB_READONLY=1): download the checkpoint instead.")
    if run.model is None or run.meta is None:
        raise DataError(f"Run {run.name} has no model to save.")
    folder = checkpoint_dir()
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", run.name).strip("-.") or "model"
    path, n = folder / f"{stem}.safetensors", 2
    while path.exists():
        path, n = folder / f"{stem}-{n}.safetensors", n + 1
    return checkpoints.save(path, run.model, {**run.meta, "name": path.stem})


def delete_checkpoint(path: Path) -> None:
    if read_only():
        raise DataError("This dashboard is read-only (AELIB_READONLY=1).")
    folder = checkpoint_dir().resolve()
    if path.resolve().parent != folder:
        raise DataError(f"{path} is not in the checkpoints folder.")
    checkpoints.delete(path)


# ================================================================================================
# Derived values (cached by content keys)


@st.cache_data(max_entries=64, show_spinner=False)
def errors(_model: nn.Module, model_key: str, _images: torch.Tensor, data_key: str,
           metrics: tuple[str, ...] = ("mse",)) -> dict[str, np.ndarray]:
    """Per-image errors / anomaly scores of ``_images`` (see :func:`aelib.scoring.reconstruction_errors`)."""
    return scoring.reconstruction_errors(_model, _images, metrics, batch_size=256)


@st.cache_data(max_entries=64, show_spinner=False)
def reconstructions(_model: nn.Module, model_key: str, _images: torch.Tensor, data_key: str) -> np.ndarray:
    """Display arrays of the reconstructions of a few images."""
    recon = explore.reconstruct_images(_model, _images, batch_size=256)
    return explore.to_display(recon, _model.config.output_range)


@st.cache_data(max_entries=32, show_spinner=False)
def codes(_model: nn.Module, model_key: str, _images: torch.Tensor, data_key: str) -> np.ndarray:
    """Flattened latent codes (N, D) (the VAE's means)."""
    return explore.encode_images(_model, _images, batch_size=256).numpy()


@st.cache_data(max_entries=32, show_spinner=False)
def latent_map(_model: nn.Module, model_key: str, _images: torch.Tensor, data_key: str
               ) -> tuple[np.ndarray, np.ndarray | None]:
    return explore.latent_map(_model, _images, "pca", batch_size=256)


@st.cache_data(max_entries=32, show_spinner=False)
def interpolation_frames(_model: nn.Module, model_key: str, _a: torch.Tensor, _b: torch.Tensor, ab_key: str,
                         steps: int, method: str) -> np.ndarray:
    """Display frames along the latent path from image a to image b (both ends included)."""
    return explore.interpolate(_model, _a, _b, steps, method)


@st.cache_data(max_entries=32, show_spinner=False)
def prior_samples(_model: nn.Module, model_key: str, n: int, temperature: float, seed: int) -> np.ndarray:
    return explore.prior_samples(_model, n, temperature, seed)


@st.cache_data(max_entries=32, show_spinner=False)
def traversal(_model: nn.Module, model_key: str, _image: torch.Tensor, image_key: str, dim: int,
              steps: int, scale: float) -> np.ndarray:
    return explore.traverse(_model, _image, dim, np.linspace(-3, 3, steps), scale=scale)


@st.cache_data(max_entries=32, show_spinner=False)
def gallery(_model: nn.Module, model_key: str, _images: torch.Tensor, data_key: str,
            indices: tuple[int, ...]) -> dict[str, np.ndarray]:
    return explore.gallery(_model, _images, list(indices), batch_size=256)


@st.cache_data(max_entries=16, show_spinner=False)
def denoise(_model: nn.Module, model_key: str, _images: torch.Tensor, data_key: str, kind: str,
            level: float, seed: int) -> dict[str, np.ndarray]:
    return explore.denoise_comparison(_model, _images, kind, level, seed, batch_size=256)


@st.cache_data(max_entries=32, show_spinner=False)
def roc(labels_key: str, _labels: np.ndarray, scores_key: str, _scores: np.ndarray) -> dict:
    return scoring.roc(_labels, _scores)


# ================================================================================================
# Drawing helpers (no model code: arrays in, Streamlit elements out)


def _lut(hex_colours: Sequence[str]) -> np.ndarray:
    stops = np.array([[int(h[i:i + 2], 16) for i in (1, 3, 5)] for h in hex_colours], dtype=np.float32) / 255
    x = np.linspace(0, 1, len(stops))
    t = np.linspace(0, 1, 256)
    return np.stack([np.interp(t, x, stops[:, c]) for c in range(3)], axis=1).astype(np.float32)


_INFERNO = _lut(['#000004', '#1b0c41', '#4a0c6b', '#781c6d', '#a52c60', '#cf4446', '#ed6925', '#fb9b06',
                 '#f7d13d', '#fcffa4'])


def heatmap(err: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """Absolute-error display arrays (N, H, W[, 3]) -> colour-mapped (N, H, W, 3), shared scale."""
    e = err.mean(-1) if err.ndim == 4 else err
    vmax = float(vmax if vmax is not None else max(float(e.max()), 1e-6))
    idx = np.clip(e / vmax * 255, 0, 255).astype(np.uint8)
    return _INFERNO[idx]


def for_display(arr: np.ndarray, gray_r: bool = False, scale: int = 4) -> np.ndarray:
    """Reversed grey colormap on request (grey images only) and a crisp nearest-neighbour upscale."""
    a = 1.0 - arr if gray_r and arr.ndim == 3 else arr
    if scale > 1:
        a = a.repeat(scale, axis=1).repeat(scale, axis=2)
    return np.clip(a, 0, 1)


def _scale_for(shape: tuple[int, ...]) -> int:
    return max(1, 112 // max(shape[-2], shape[-1]))


def image_rows(rows: Sequence[tuple[str, np.ndarray, Sequence[str] | None]], gray_r: bool = False) -> None:
    """Rows of images aligned column by column: (row label, display array, captions)."""
    if not rows:
        return
    ncol = max(len(a) for _, a, _ in rows)
    for label, arr, captions in rows:
        cols = st.columns([1.4] + [1] * ncol, gap="small", vertical_alignment="center")
        cols[0].markdown(f"**{label}**")
        scale = _scale_for(arr.shape[1:3] if arr.ndim == 4 else arr.shape[1:])
        for j, img in enumerate(arr):
            cap = captions[j] if captions is not None and j < len(captions) else None
            cols[j + 1].image(for_display(img[None], gray_r, scale)[0], caption=cap, width="stretch")


def strip(arr: np.ndarray, gray_r: bool = False, captions: Sequence[str] | None = None) -> None:
    """One row of images as a single composite picture (fast: one PNG)."""
    grid = explore.image_grid([for_display(arr, gray_r, _scale_for(arr.shape[1:3]))], pad=4)
    st.image(grid, width="stretch")
    if captions:
        st.caption(" · ".join(captions))


def loss_figure(history, title: str = "Loss per epoch") -> go.Figure:
    fig = go.Figure()
    fig.add_scatter(x=history.epoch, y=history.train_loss, mode="lines+markers", name="train loss")
    if any(not math.isnan(v) for v in history.val_loss):
        fig.add_scatter(x=history.epoch, y=history.val_loss, mode="lines+markers", name="validation loss")
    fig.update_xaxes(tickmode="linear", dtick=max(1, len(history.epoch) // 10))
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title="loss", height=320,
                      margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.25))
    return fig


def run_table(runs: Sequence[Run]) -> pd.DataFrame:
    return pd.DataFrame([{"run": r.name, "status": r.status, "epochs": f"{len(r.epochs)}/{r.total_epochs}",
                          "val MSE": r.final_val_mse, "seconds": round(r.elapsed, 1), "note": r.message}
                         for r in runs])


# ================================================================================================
# The shared frame: sidebar and run status


@dataclass
class Frame:
    data: DataChoice | None
    models: list[ModelChoice]          # picked and compatible with the dataset
    compatible: list[ModelChoice]      # every model compatible with the dataset
    all_models: list[ModelChoice]


def _dataset_picker() -> DataChoice | None:
    options = [*BUILTIN, UPLOAD] + ([LOCAL] if local_paths_allowed() else [])
    pick = st.selectbox("Dataset", options, key=NS + "dataset")
    try:
        if pick in BUILTIN:
            data = builtin_choice(pick)
        elif pick == UPLOAD:
            up = st.file_uploader("Images (.npy, .npz, .zip of PNG/JPEG)", key=NS + "data_upload",
                                  type=["npy", "npz", "zip", "png", "jpg", "jpeg"])
            if up is None:
                st.info("Upload an image array or a zip of images to use it here. A .npz may hold "
                        "integer class labels under the key `labels`.")
                return None
            data = _uploaded_choice(up)
        else:
            root = local_root()
            text = st.text_input(f"Path on the server (inside {root})", key=NS + "local_path")
            if not text:
                st.info("Type the path of a .npy/.npz file, a .zip or a folder of PNG/JPEG images.")
                return None
            data = _local_choice(resolve_local_path(text, root))
    except AelibError as exc:
        st.error(str(exc))
        return None
    c, h, w = data.shape
    st.caption(f"**{data.title}** · {data.origin} · {c}x{h}x{w}"
               + (f" · {len(data.classes)} classes" if data.classes else " · no labels"))
    if data.train.note:
        with st.expander("About this data"):
            st.caption(data.train.note)
    return data


def _model_picker(data: DataChoice | None) -> tuple[list[ModelChoice], list[ModelChoice], list[ModelChoice]]:
    with st.expander("Upload checkpoints (.safetensors)"):
        files = st.file_uploader("aelib checkpoints", type=["safetensors"], accept_multiple_files=True,
                                 key=NS + "ckpt_upload", label_visibility="collapsed")
    models = all_models(files)
    if data is None:
        return [], [], models
    # Models of the picked dataset first (MNIST and Fashion-MNIST models take the same shape).
    comp = sorted(compatible(models, data.shape), key=lambda m: m.dataset_key != (data.builtin or data.key))
    keys = [m.key for m in comp]
    by_key = {m.key: m for m in comp}
    sel_key, shape_key = NS + "models", NS + "models_shape"
    seen = _state("seen_runs", set)
    # Picks are kept per image shape: a dataset with other (or no) compatible models does not erase
    # the picks made for another shape. ``models_shape`` is the shape the widget was last drawn for.
    by_shape = _state("picks_by_shape", dict)
    shape = tuple(data.shape)
    drawn_for = st.session_state.get(shape_key)
    if drawn_for is not None and sel_key in st.session_state:
        by_shape[drawn_for] = list(st.session_state[sel_key])
    if shape not in by_shape:  # first visit: one plain model per family, this dataset's first
        firsts: dict[str, str] = {}
        for m in sorted(comp, key=lambda m: m.noise[0] is not None):  # stable: keeps the dataset order
            firsts.setdefault(m.config.family, m.key)
        picks = [firsts[f] for f in ("fcn", "conv", "vae") if f in firsts]
    else:
        picks = by_shape[shape]
    current = [k for k in picks if k in by_key]
    for r in session_runs().values():  # select freshly finished runs of this session once
        k = f"run:{r.id}"
        if k in by_key and r.id not in seen:
            seen.add(r.id)
            if k not in current:
                current.append(k)
    if comp:
        by_shape[shape] = current
        st.session_state[sel_key] = current
        st.session_state[shape_key] = shape
    else:  # nothing to pick here: leave every shape's picks as they are
        st.session_state.pop(shape_key, None)
    if not comp:
        c, h, w = data.shape
        st.info(f"No model for {c}x{h}x{w} images yet. Train one on the Training page, upload a "
                f".safetensors checkpoint above, or put checkpoints in `{checkpoint_dir()}` "
                f"(e.g. `python -m aelib train ...`).")
        return [], [], models
    picked = st.multiselect("Models to show", keys, key=sel_key, format_func=lambda k: by_key[k].label)
    return [by_key[k] for k in picked if k in by_key], comp, models


def stop_button(run: Run, key: str) -> None:
    if st.button("Stop", key=key, icon=":material/stop_circle:", help="Stop after the current batch; "
                 "the model keeps the weights it has."):
        manager().stop(run)
        st.rerun(scope="app")


def _run_status() -> None:
    run = active_run()
    if run is None:
        return

    @st.fragment(run_every=1.5)
    def status() -> None:
        heartbeat()
        r = active_run()
        if r is None:
            st.rerun(scope="app")  # a run just finished: refresh the model pickers everywhere
            return
        with st.container(border=True):
            if r.status == "queued":
                pos = manager().queue_position(r)
                st.caption(f"Training **{r.name}**: queued" + (f" (#{pos})" if pos else ""))
            else:
                st.caption(f"Training **{r.name}**: epoch {max(r.epoch, 1)}/{r.total_epochs}")
                st.progress(r.progress)
            stop_button(r, NS + "sidebar_stop")

    status()


def frame() -> Frame:
    """Heartbeat, UI torch threads and the sidebar; call once per script run before the page."""
    heartbeat()
    # 1 training thread + 2 UI threads oversubscribe 2 cores (see aelib.worker); per-thread setting.
    torch.set_num_threads(1 if manager().running_count() else UI_THREADS)
    with st.sidebar:
        data = _dataset_picker()
        picked, comp, models = _model_picker(data)
        _run_status()
    fr = Frame(data, picked, comp, models)
    st.session_state[NS + "frame"] = fr
    return fr


def current() -> Frame:
    """The frame (sidebar picks) of this run; pages call this first."""
    fr = st.session_state.get(NS + "frame")
    return fr if fr is not None else Frame(None, [], [], [])


def need_data(fr: Frame) -> DataChoice:
    if fr.data is None:
        st.info("Pick a dataset in the sidebar first.")
        st.stop()
    return fr.data


def need_models(fr: Frame, what: str = "this page") -> list[ModelChoice]:
    if not fr.models:
        if fr.compatible:
            st.info(f"Pick one or more models in the sidebar for {what}.")
        else:
            st.info("No model fits this dataset yet: train one on the Training page, upload a checkpoint "
                    "in the sidebar, or add checkpoints to the checkpoints folder.")
        st.stop()
    return fr.models


# --------------------------------------------------------------------------------------------
# Routing: every page runs inside streamlit_app.py's frame

_router = threading.local()  # Streamlit runs each session's script in its own thread


def run_page(page) -> None:
    """Run the page ``st.navigation`` picked; the router calls this instead of ``page.run()``."""
    _router.inside = True
    try:
        page.run()
    finally:
        _router.inside = False


def routed(page_file: str) -> None:
    """First line of every page: make sure it runs inside the router (sidebar, error handling).

    A top-level ``pages/`` folder makes Streamlit treat the app as a legacy multipage app until
    some session calls ``st.navigation``: on a fresh server a link straight to ``/training``
    runs ``pages/training.py`` alone, and so does every AppTest run of a page. Then this runs
    ``streamlit_app.py`` (whose ``st.navigation`` switches the whole app to the router and runs
    this page inside the frame) and ends the bare run.
    """
    if getattr(_router, "inside", False):
        return
    runpy.run_path(str(Path(page_file).resolve().parent.parent / "streamlit_app.py"))
    st.stop()
