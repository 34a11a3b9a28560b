"""Image sets the pages work on, as typed values that carry their own content key.

``ImageSet`` is what the sidebar's dataset picker yields (train and test splits, where they came
from); ``Images`` is any tensor of images a cached computation takes, with the key that names
exactly those images. Cached functions hash these keys; pages never build key strings.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import streamlit as st
import torch

from ..data import (
    DATASETS,
    ImageDataset,
    holdout_split,
    load_images,
    load_splits,
    npz_labels,
    one_class_split,
)
from ..errors import AelibError
from ..localpath import resolve_local_path
from . import settings, state

UPLOAD_MAX_BYTES = 512 * 1024**2  # uint8 pixels held for one uploaded image set
BUILTIN = {spec.title: key for key, spec in DATASETS.items()}  # "MNIST" -> "mnist"
_SOURCE_TEXT = {
    "local": "local files",
    "download": "downloaded",
    "bundled-sample": "bundled offline sample",
    "upload": "upload",
    "path": "local path",
    "memory": "memory",
}


@dataclass(frozen=True, eq=False)
class Images:
    """Images (N, C, H, W) uint8 and the key naming exactly them."""

    key: str
    tensor: torch.Tensor

    def __len__(self) -> int:
        return len(self.tensor)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape[1:])

    def take(self, idx: np.ndarray | list[int]) -> Images:
        idx = np.asarray(idx, dtype=np.int64)
        tag = hashlib.sha1(idx.tobytes()).hexdigest()[:12]
        return Images(f"{self.key}[{tag}]", self.tensor[torch.from_numpy(idx)])

    def head(self, n: int) -> Images:
        n = min(n, len(self))
        return self if n == len(self) else Images(f"{self.key}[:{n}]", self.tensor[:n])


@dataclass(frozen=True, eq=False)
class ImageSet:
    """The dataset picked in the sidebar: train and test splits plus where they came from."""

    key: str
    title: str
    train: ImageDataset
    test: ImageDataset
    origin: str  # a phrase for the user
    builtin: str | None  # "mnist" / "fashion-mnist", None for the user's own images

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.test.shape

    @property
    def classes(self) -> list[str] | None:
        return self.test.classes

    @property
    def labelled(self) -> bool:
        return self.test.labels is not None and bool(self.classes)

    @property
    def colour(self) -> bool:
        return self.shape[0] == 3

    @property
    def train_images(self) -> Images:
        return Images(f"{self.key}|train", self.train.images)

    @property
    def test_images(self) -> Images:
        return Images(f"{self.key}|test", self.test.images)


@st.cache_resource(max_entries=4, show_spinner="Loading dataset...")
def _builtin_splits(name: str, root: str, download: bool) -> tuple[ImageDataset, ImageDataset]:
    return load_splits(name, root=root, download=download)


def builtin(title: str) -> ImageSet:
    key = BUILTIN[title]
    root = str(settings.data_root())
    train, test = _builtin_splits(key, root, settings.download_allowed())
    origin = f"{_SOURCE_TEXT.get(train.source, train.source)} · {len(train):,} train / {len(test):,} test"
    root_tag = hashlib.sha1(root.encode()).hexdigest()[:8]
    return ImageSet(f"{key}|{root_tag}|{train.source}", title, train, test, origin, key)


def _user_set(
    key: str, title: str, images: torch.Tensor, labels: torch.Tensor | None, source: str, note: str
) -> ImageSet:
    train, test = holdout_split(images, labels, name=title, source=source, note=note)
    held = (
        ", too few to hold any out: the same images train and test"
        if len(train) + len(test) > len(images)
        else f", {len(test):,} held out for testing"
    )
    return ImageSet(key, title, train, test, f"{source} · {len(images):,} images{held}", None)


def shape_text(shape: tuple[int, ...]) -> str:
    """(3, 64, 64) as "3x64x64", as every page writes an image or code shape."""
    return "x".join(map(str, shape))


def read_upload(uploaded) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(images, class labels of a .npz or None) of an uploaded file; ``DataError`` otherwise."""
    images = load_images(uploaded, max_bytes=UPLOAD_MAX_BYTES)
    name = str(getattr(uploaded, "name", "") or "")
    labels = npz_labels(uploaded.getvalue(), len(images)) if name.lower().endswith(".npz") else None
    return images, labels


@dataclass(frozen=True)
class Upload:
    """A file the user uploaded, parsed once and kept for the session (page switches included)."""

    name: str
    sha: str
    size: int
    raw_name: str
    value: object  # what the slot's parser made of it

    @property
    def key(self) -> str:
        return f"upload:{self.sha[:16]}"


def kept_upload(
    key: str, label: str, types: list[str], parse, *, container=st, help: str | None = None
) -> Upload | None:
    """A file uploader whose file outlives the page: Streamlit drops a widget's file when its page
    is left, so the parsed file is kept in the session until the user removes or replaces it.

    A file ``parse`` refuses gets its sentence under this uploader and counts as no file (None), so
    a page's other uploaders and widgets still draw: raising instead skipped them, and a widget
    left undrawn for a run loses its state. The refusal is kept while that file stays, so the file
    is not parsed again on every rerun."""
    store: dict = state.get("uploads", dict)
    refused: dict = state.get("upload_refusals", dict)
    fresh = key not in st.session_state  # the widget was not on the previous run's page
    up = container.file_uploader(label, type=types, key=key, help=help)
    if up is None:
        refused.pop(key, None)
        if not fresh:  # the user removed the file
            store.pop(key, None)
            return None
        kept = store.get(key)
        if kept is not None:
            container.caption(f"Using **{kept.name}** uploaded earlier; upload another file to replace it.")
        return kept
    sha = state.digest(up)
    kept = store.get(key)
    if kept is not None and kept.sha == sha:
        return kept
    if refused.get(key, (None,))[0] != sha:  # a file not read yet
        try:
            store[key] = Upload(up.name, sha, up.size, up.name, parse(up))
            refused.pop(key, None)
            return store[key]
        except AelibError as exc:
            refused[key] = (sha, str(exc))
    store.pop(key, None)  # the refused file replaced the one kept before
    container.error(refused[key][1])
    return None


def uploaded_set(upload: Upload) -> ImageSet:
    images, labels = upload.value
    note = f"Uploaded file {upload.name} ({upload.size / 1e6:.1f} MB)."
    return _user_set(upload.key, upload.name, images, labels, "upload", note)


@st.cache_resource(max_entries=2, show_spinner="Reading local images...")
def _local_images(path: str, mtime_ns: int) -> torch.Tensor:
    return load_images(path)


def local_set(text: str) -> ImageSet:
    path = resolve_local_path(text, settings.local_root())
    mtime = path.stat().st_mtime_ns
    images = _local_images(str(path), mtime)
    return _user_set(
        f"path:{hashlib.sha1(f'{path}:{mtime}'.encode()).hexdigest()[:16]}",
        path.name,
        images,
        None,
        "local path",
        f"Read from {path.name} on this machine.",
    )


@st.cache_resource(max_entries=8, show_spinner=False)
def _one_class(_data: ImageSet, data_key: str, normals: tuple[int, ...]) -> tuple[ImageDataset, ImageDataset]:
    return one_class_split(_data.train, _data.test, list(normals))


def one_class(data: ImageSet, normals: tuple[int, ...]) -> tuple[Images, Images, np.ndarray]:
    """(normal training images, the whole test set, its 0/1 anomaly labels) for these normal classes."""
    train, test = _one_class(data, data.key, normals)
    tag = "-".join(map(str, normals))
    return Images(f"{data.key}|train|normal={tag}", train.images), data.test_images, test.labels.numpy()
