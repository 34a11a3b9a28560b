"""Models a page can show, as typed values with one stable id each.

A ``ModelChoice`` is a checkpoint shipped with the app, one a user saved, an uploaded file, or a
run of this session. Its ``id`` is the sha256 of the checkpoint bytes (the same file is the same
model wherever it comes from) or ``run:<run id>``; its ``name`` is unique in the list the session
sees. Cached computations key on the id; pages never parse a label back into a name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st
from torch import nn

from .. import checkpoints, explore
from ..checkpoints import DataInfo
from ..errors import AelibError
from ..models import ModelConfig
from ..worker import DONE, STOPPED, Run
from . import settings, sources, state

ORIGINS = {
    "shipped": "shipped",
    "saved": "saved on this server",
    "upload": "uploaded",
    "session": "trained here",
}


@dataclass(frozen=True, eq=False)
class ModelChoice:
    id: str
    name: str
    origin: str  # a key of ORIGINS
    meta: dict = field(repr=False)
    loader: Callable[[], nn.Module] = field(repr=False)
    path: Path | None = field(default=None, repr=False)  # checkpoint file (never shown to users)
    status: str = DONE

    @property
    def label(self) -> str:
        state_ = "" if self.status == DONE else f" [{self.status}]"
        return f"{self.name} ({checkpoints.describe(self.meta)}) · {ORIGINS[self.origin]}{state_}"

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
        return checkpoints.noise_of(self.meta)

    @property
    def data(self) -> DataInfo:
        return DataInfo.from_meta(self.meta)

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["model"]["in_shape"])

    @property
    def latent_text(self) -> str:
        """"16", or "feature map 48x8x8" where the code is kept as a map (latent None)."""
        shape = explore.latent_shape(self.model)
        return str(shape[0]) if len(shape) == 1 else "feature map " + sources.shape_text(shape)

    def made_for(self, data) -> bool:
        """Trained on the image set ``data`` (an ``ImageSet``), as far as its checkpoint says: by
        the built-in dataset's key, else by name (older checkpoints and uploaded sets)."""
        if self.data.key:
            return self.data.key == data.builtin
        return self.data.name in ("", data.title)


@st.cache_data(max_entries=256, show_spinner=False)
def _file_sha(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@st.cache_data(max_entries=8, show_spinner=False)
def _listing(folder: str, signature: tuple) -> list[tuple[str, dict, str]]:
    out = []
    for path, meta in checkpoints.list_checkpoints(folder):
        stt = path.stat()
        out.append((str(path), meta, _file_sha(str(path), stt.st_mtime_ns, stt.st_size)))
    return out


def _folder(folder: Path) -> list[tuple[Path, dict, str]]:
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("*.safetensors"))
    sig = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    return [(Path(p), m, h) for p, m, h in _listing(str(folder), sig)]


def shipped() -> list[tuple[Path, dict, str]]:
    """(path, metadata, sha256) of the checkpoints the app ships with (read-only to the page)."""
    return _folder(settings.checkpoint_dir())


def saved() -> list[tuple[Path, dict, str]]:
    """(path, metadata, sha256) of the checkpoints users saved from the page."""
    return _folder(settings.saved_dir())


@st.cache_resource(max_entries=16, show_spinner="Loading checkpoint...")
def _checkpoint_model(sha: str, path: str) -> nn.Module:
    return checkpoints.load(path).model


def _file_choice(path: Path, meta: dict, sha: str, origin: str) -> ModelChoice:
    return ModelChoice(
        f"sha256:{sha}", path.stem, origin, meta, lambda: _checkpoint_model(sha, str(path)), path=path
    )


PICKLE_SUFFIXES = ("pt", "pth", "ckpt", "bin", "pkl")


def parse_checkpoint(up) -> checkpoints.Checkpoint | str:
    """An uploaded checkpoint, or the sentence saying why it is refused (kept, so a bad file is
    read once)."""
    try:
        return checkpoints.load_bytes(up.getvalue(), up.name)
    except AelibError as exc:
        return str(exc)


def uploaded(files) -> tuple[list[ModelChoice], list[str]]:
    """(models, refusal sentences) of the sidebar's checkpoint uploader's files."""
    store = state.get("model_uploads", dict)
    out, errors = [], []
    for f in files or []:
        if not f.name.lower().endswith(".safetensors"):  # a PyTorch pickle by its name: never read
            errors.append(f"'{f.name}' is not a .safetensors file. aelib opens only .safetensors "
                          "checkpoints (PyTorch's pickled .pt/.pth/.ckpt files are refused: loading "
                          "them can run code). Download models from the Training page as .safetensors.")
            continue
        sha = state.digest(f)
        if sha not in store:
            store[sha] = parse_checkpoint(f)
        ck = store[sha]
        if isinstance(ck, str):
            errors.append(ck if f.name in ck else f"{f.name}: {ck}")
            continue
        out.append(ModelChoice(f"sha256:{sha}", f.name, "upload", ck.meta, lambda ck=ck: ck.model))
    keep = {state.digest(f) for f in files or []}
    for sha in [s for s in store if s not in keep]:
        del store[sha]  # removed from the uploader: free it
    return out, errors


def of_run(run: Run) -> ModelChoice:
    return ModelChoice(f"run:{run.id}", run.name, "session", run.meta, lambda: run.model, status=run.status)


def unique_names(models: Sequence[ModelChoice]) -> list[ModelChoice]:
    """One entry per id (first wins), and a distinct name for each: "name", "name (2)", ..."""
    seen_ids: set[str] = set()
    taken: set[str] = set()
    out = []
    for m in models:
        if m.id in seen_ids:
            continue
        seen_ids.add(m.id)
        name, n = m.name, 2
        while name in taken:
            name, n = f"{m.name} ({n})", n + 1
        taken.add(name)
        out.append(
            m if name == m.name else ModelChoice(m.id, name, m.origin, m.meta, m.loader, m.path, m.status)
        )
    return out


def everything(runs: Sequence[Run], upload_files=None) -> tuple[list[ModelChoice], list[str]]:
    """Every model this session can pick, with unique names: this session's runs first (their names
    were made unique when they started), then shipped, saved and uploaded checkpoints."""
    out = [
        of_run(r) for r in runs if r.status in (DONE, STOPPED) and r.model is not None and r.meta is not None
    ]
    out += [_file_choice(p, m, h, "shipped") for p, m, h in shipped()]
    out += [_file_choice(p, m, h, "saved") for p, m, h in saved()]
    ups, errors = uploaded(upload_files)
    return unique_names(out + ups), errors


def compatible(models: Sequence[ModelChoice], shape: Sequence[int]) -> list[ModelChoice]:
    return [m for m in models if m.in_shape == tuple(shape)]
