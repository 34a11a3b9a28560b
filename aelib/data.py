"""Datasets as resident uint8 tensors, and scaling to a model's pixel range per batch.

Built-in datasets come through torchvision. When neither local files nor a download are available
(offline machines, CI), a small real sample bundled in ``aelib/assets`` keeps everything working and
says so in ``ImageDataset.note``. User images (arrays, .npy/.npz files, folders or zips of PNG/JPEG,
uploads) become the same uint8 (N, C, H, W) tensors through ``load_images``; every problem a user can
cause raises ``DataError`` with a sentence saying what was expected.
"""

from __future__ import annotations

import io
import math
import os
import re
import socket
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO

import numpy as np
import torch

from .errors import DataError
from .localpath import check_source
from .models import OUTPUT_RANGES


@dataclass
class ImageDataset:
    """Images held once in memory as uint8 (N, C, H, W), with optional integer labels."""

    images: torch.Tensor
    labels: torch.Tensor | None = None
    name: str = "images"
    source: str = "memory"  # "download" | "local" | "bundled-sample" | "upload" | "path" | "memory"
    classes: list[str] | None = None
    note: str = ""  # a sentence for the user, e.g. why the bundled sample is used
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise TypeError("ImageDataset.images must be a uint8 tensor of shape (N, C, H, W).")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise ValueError("labels and images differ in length.")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])


def to_float(x: torch.Tensor, output_range: str = "unit") -> torch.Tensor:
    """uint8 [0, 255] -> float32 in the model's range: [0, 1] ("unit") or [-1, 1] ("symmetric")."""
    lo, hi = OUTPUT_RANGES[output_range]
    x = x.float()
    if (lo, hi) == (0.0, 1.0):
        return x.div_(255.0)
    return x.mul_((hi - lo) / 255.0).add_(lo)  # symmetric: x / 127.5 - 1, as the reference


def to_uint8(x: torch.Tensor, output_range: str = "unit") -> torch.Tensor:
    """Float in the model's range -> uint8 [0, 255] (rounded, clipped)."""
    lo, hi = OUTPUT_RANGES[output_range]
    return ((x.detach().float() - lo) * (255.0 / (hi - lo))).round_().clamp_(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------------------------------
# Built-in datasets (torchvision, with a bundled offline sample)
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetSpec:
    """What aelib knows about a built-in dataset: torchvision class, class names, bundled sample."""

    key: str
    title: str
    torchvision_class: str  # also the folder torchvision reads under root: ROOT/<class>/raw/
    classes: tuple[str, ...]
    sample_file: str  # in aelib/assets, built by bench/make_sample.py
    shape: tuple[int, int, int] = (1, 28, 28)


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        key="mnist", title="MNIST", torchvision_class="MNIST",
        classes=tuple(str(d) for d in range(10)), sample_file="mnist_sample.npz"),
    "fashion-mnist": DatasetSpec(
        key="fashion-mnist", title="Fashion-MNIST", torchvision_class="FashionMNIST",
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        sample_file="fashion_mnist_sample.npz"),
}

SPLITS = ("train", "test")
DOWNLOAD_TIMEOUT_S = 10.0  # per socket operation, so an unreachable mirror cannot hang the app


def default_data_root() -> Path:
    """Where datasets live unless a root is given: ``$AELIB_DATA_ROOT``, else ``~/.cache/aelib/data``."""
    env = os.environ.get("AELIB_DATA_ROOT", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "aelib" / "data"


def _spec(name: str) -> DatasetSpec:
    key = str(name).strip().lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "fashion": "fashion-mnist"}.get(key, key)
    if key not in DATASETS:
        raise DataError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
    return DATASETS[key]


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}; choose 'train' or 'test'.")
    return split


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """torchvision's urllib calls have no timeout of their own; bound them, then restore the default."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = re.sub(r"\s+", " ", str(exc)).strip() or type(exc).__name__
    text = re.sub(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>", "", text)  # Pillow names its BytesIO
    return text if len(text) <= limit else text[: limit - 3] + "..."


_IDX_MAX_BYTES = 1 << 31  # far above MNIST's 47 MB: a corrupt header cannot ask for more


def _read_idx(path: Path, ndim: int) -> torch.Tensor:
    """A uint8 IDX file (MNIST's raw format: magic 0x0000080N, N big-endian int32 sizes, the data),
    read in one call; the sizes must account for the file's length exactly."""
    with open(path, "rb") as fh:
        head = fh.read(4 + 4 * ndim)
        if len(head) != 4 + 4 * ndim or head[:4] != bytes((0, 0, 8, ndim)):
            raise DataError(f"{path.name} is not a uint8 IDX file of {ndim} dimensions")
        shape = tuple(int(v) for v in np.frombuffer(head[4:], dtype=">i4"))
        size = math.prod(shape)
        if min(shape) < 0 or size > _IDX_MAX_BYTES or os.fstat(fh.fileno()).st_size != len(head) + size:
            raise DataError(f"{path.name}: its header's sizes {shape} do not match the file's length")
        data = np.fromfile(fh, dtype=np.uint8, count=size)
    return torch.from_numpy(data.reshape(shape))


def _from_torchvision(ds, spec: DatasetSpec, split: str, root: Path, source: str, note: str) -> ImageDataset:
    data = ds.data
    if not isinstance(data, torch.Tensor) or data.dtype != torch.uint8 or data.dim() != 3:
        raise DataError(f"torchvision returned {spec.title} images of an unexpected type; expected uint8 "
                        f"(N, 28, 28).")
    return ImageDataset(
        images=data.unsqueeze(1).contiguous(),  # straight from .data: no per-sample transforms
        labels=torch.as_tensor(ds.targets, dtype=torch.int64),
        name=spec.title, source=source, classes=list(spec.classes), note=note,
        extra={"dataset": spec.key, "split": split, "root": str(root)},
    )


def _load_sample(spec: DatasetSpec, split: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        sample = resources.files("aelib") / "assets" / spec.sample_file
        with sample.open("rb") as fh, np.load(fh, allow_pickle=False) as npz:
            x, y = npz[f"x_{split}"], npz[f"y_{split}"]
    except Exception as exc:  # missing package data, damaged file: either way unusable
        raise DataError(f"The bundled {spec.title} sample (aelib/assets/{spec.sample_file}) is missing or "
                        f"damaged ({_one_line(exc)}); reinstall aelib or rebuild it with "
                        f"bench/make_sample.py.") from exc
    if x.dtype != np.uint8 or x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"The bundled {spec.title} sample has unexpected arrays; rebuild it with "
                        f"bench/make_sample.py.")
    return x, y


def _bundled(spec: DatasetSpec, split: str, root: Path, reason: str) -> ImageDataset:
    x, y = _load_sample(spec, split)
    per_class = len(x) // len(spec.classes)
    note = (f"The real {spec.title} data was not found under {root} and {reason}, so this is aelib's bundled "
            f"sample of {len(x):,} real {spec.title} {split} images ({per_class} per class). For the full "
            f"dataset, pass root= (the CLI's --data-root, or set the AELIB_DATA_ROOT environment "
            f"variable) to a folder holding {spec.torchvision_class}/raw/ in torchvision's layout, or "
            f"allow the download on a machine with internet access.")
    return ImageDataset(
        images=torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1),
        labels=torch.from_numpy(y.astype(np.int64)),
        name=spec.title, source="bundled-sample", classes=list(spec.classes), note=note,
        extra={"dataset": spec.key, "split": split, "root": str(root), "sample_file": spec.sample_file},
    )


def load_dataset(name: str, split: str = "train", root: str | os.PathLike | None = None,
                 download: bool = True) -> ImageDataset:
    """Load a built-in dataset as uint8 (N, 1, 28, 28) + int64 labels, never failing for lack of network.

    Order: files already under ``root`` (``source="local"``); then, if ``download``, torchvision's
    download with a bounded socket timeout (``"download"``); then the bundled real sample
    (``"bundled-sample"``, with ``note`` saying why and how to point at the real data). Files that
    exist under ``root`` but cannot be read raise ``DataError`` rather than silently using the sample.
    """
    spec = _spec(name)
    _check_split(split)
    root_path = Path(root).expanduser() if root is not None else default_data_root()
    train = split == "train"
    raw = root_path / spec.torchvision_class / "raw"
    prefix = "train" if train else "t10k"
    files = raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"
    if all(f.is_file() for f in files):  # the files torchvision reads with download=False
        try:
            images, labels = _read_idx(files[0], 3), _read_idx(files[1], 1)
            if len(images) != len(labels) or images.shape[1:] != (28, 28):
                raise DataError(f"{len(images):,} images of {tuple(images.shape[1:])} pixels and "
                                f"{len(labels):,} labels")
        except (DataError, OSError, ValueError) as exc:
            raise DataError(f"The {spec.title} files in {raw} exist but could not be read "
                            f"({_one_line(exc)}). Delete that folder to download them again, or point "
                            f"root / AELIB_DATA_ROOT at a good copy.") from exc
        return ImageDataset(images=images.unsqueeze(1), labels=labels.long(), name=spec.title,
                            source="local", classes=list(spec.classes), note="",
                            extra={"dataset": spec.key, "split": split, "root": str(root_path)})

    reason = "downloading was turned off"
    if download:
        from torchvision import datasets as tv_datasets  # lazy: importing torchvision costs a second

        cls = getattr(tv_datasets, spec.torchvision_class)
        try:
            with _socket_timeout(DOWNLOAD_TIMEOUT_S):
                ds = cls(str(root_path), train=train, download=True)
            dataset = _from_torchvision(ds, spec, split, root_path, "download",
                                        f"Downloaded {spec.title} to {root_path}.")
        except Exception as exc:  # noqa: BLE001 - no network, dead mirror, read-only root, bad checksum...
            reason = f"could not be downloaded ({_one_line(exc)})"
        else:
            return dataset
    return _bundled(spec, split, root_path, reason)


def load_splits(name: str, root: str | os.PathLike | None = None,
                download: bool = True) -> tuple[ImageDataset, ImageDataset]:
    """Train and test sets from the same source; a failed download is not retried for the test set."""
    train = load_dataset(name, "train", root=root, download=download)
    test = load_dataset(name, "test", root=root, download=download and train.source != "bundled-sample")
    return train, test


# --------------------------------------------------------------------------------------------------
# User images: arrays, .npy / .npz, folders and zips of PNG / JPEG, uploads
# --------------------------------------------------------------------------------------------------

MIN_SIDE = 2
MAX_SIDE = 1024
DEFAULT_MAX_BYTES = 2 * 1024**3  # uint8 pixels held at once; the 100,000-face set (1.2 GB) fits
MAX_IMAGE_FILE_BYTES = 64 * 1024**2  # one PNG / JPEG inside a folder or zip, before decoding
# More files than this belong in a .npy: decoding 70,000 small PNGs (all of MNIST) takes seconds,
# a quarter million over half a minute.
MAX_IMAGE_FILES = 70_000
MAX_ZIP_ENTRIES = MAX_IMAGE_FILES + 1_000  # the images plus folders and stray files
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
NPZ_NAMES = ("images", "x", "arr_0")  # which array of a several-array .npz holds the images
_FLOAT_SLACK = 1e-5  # float rounding noise (e.g. 1.0000001 or -1e-8) is not a range error
_CHUNK_BYTES = 32 * 1024**2  # source bytes converted per step, so big arrays are not copied twice
_GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_EXPECTED = ("expected a .npy or .npz array, a .zip of PNG/JPEG images, a PNG/JPEG image, "
             "or a folder of PNG/JPEG images")

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | IO[bytes] | np.ndarray | torch.Tensor


@dataclass(frozen=True)
class _Limits:
    max_images: int | None
    max_bytes: int


@dataclass(frozen=True)
class _Layout:
    channels_last: bool
    c: int
    h: int
    w: int


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _check_sides(h: int, w: int, label: str) -> None:
    if not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
        raise DataError(f"{label} has images of {h} x {w} pixels; height and width must each be between "
                        f"{MIN_SIDE} and {MAX_SIDE}.")


def _check_dtype(dtype: np.dtype, label: str) -> None:
    if dtype.hasobject:
        raise DataError(f"{label} holds Python objects, which could only be read by unpickling, and aelib "
                        f"never unpickles data; save a plain numeric array (e.g. uint8) instead.")
    if dtype.names is not None or dtype.subdtype is not None:
        raise DataError(f"{label} has a structured dtype ({dtype}); expected a plain array of uint8, "
                        f"integers, floats or booleans.")
    if dtype.kind not in "buif":
        raise DataError(f"{label} has dtype {dtype}; expected uint8, integers in [0, 255], floats in "
                        f"[0, 1] or [0, 255], or booleans.")


def _layout(shape: Sequence[int], label: str) -> _Layout:
    """Pick the channel axis: last if it is 1 or 3 (the faces layout) unless that makes no image."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        layout = _Layout(False, 1, shape[1], shape[2])
    elif len(shape) == 4:
        first = _Layout(False, shape[1], shape[2], shape[3]) if shape[1] in (1, 3) else None
        last = _Layout(True, shape[3], shape[1], shape[2]) if shape[3] in (1, 3) else None
        if first is None and last is None:
            raise DataError(f"{label} has shape {shape}: a 4-D image array needs 1 or 3 channels, on axis 1 "
                            f"(N, C, H, W) or last (N, H, W, C); RGBA or other channel counts are not "
                            f"supported.")

        def fits(lay: _Layout | None) -> bool:
            return lay is not None and MIN_SIDE <= lay.h <= MAX_SIDE and MIN_SIDE <= lay.w <= MAX_SIDE

        layout = next((lay for lay in (last, first) if fits(lay)), last or first)
    else:
        raise DataError(f"{label} has shape {shape} ({len(shape)}-D); expected (N, H, W), (N, H, W, C) or "
                        f"(N, C, H, W) with C = 1 or 3.")
    if shape[0] <= 0:
        raise DataError(f"{label} contains no images (shape {shape}).")
    _check_sides(layout.h, layout.w, label)
    return layout


def _check_result_bytes(n: int, lay: _Layout, limits: _Limits, label: str) -> None:
    need = n * lay.c * lay.h * lay.w
    if need > limits.max_bytes:
        raise DataError(f"{label} would need {_mb(need)} as uint8 pixels, more than the limit of "
                        f"{_mb(limits.max_bytes)}; load fewer images (max_images=) or raise max_bytes.")


def _value_check(view: np.ndarray, step: int, label: str, done: Callable[[], None]) -> float:
    """One pass over integer/float data: reject NaN/inf and out-of-range values; return the scale."""
    kind = view.dtype.kind
    if kind == "b" or view.dtype == np.uint8:
        return 255.0 if kind == "b" else 1.0
    lo, hi = np.inf, -np.inf
    for i in range(0, len(view), step):
        block = view[i:i + step]
        if kind == "f" and not np.isfinite(block).all():
            raise DataError(f"{label} contains NaN or infinite values; pixels must be finite numbers in "
                            f"[0, 1] or [0, 255].")
        lo, hi = min(lo, block.min()), max(hi, block.max())
        done()
    slack = _FLOAT_SLACK if kind == "f" else 0
    if lo < -slack:
        raise DataError(f"{label} has negative pixel values (down to {lo}); expected values in [0, 255] "
                        f"(or [0, 1] for floats).")
    if kind == "f":
        if hi <= 1.0 + slack:
            return 255.0  # floats in [0, 1] are fractions of full scale
        if hi <= 255.0 * (1.0 + slack):
            return 1.0
    elif hi <= 255:
        return 1.0
    raise DataError(f"{label} has pixel values up to {hi}; expected values in [0, 255] (or [0, 1] for "
                    f"floats). Rescale 16-bit or other ranges to 8 bits first.")


def _mmap_releaser(arr: np.ndarray) -> Callable[[], None]:
    """For a memmap: drop the file pages already converted from this process's resident memory, so a
    1.2 GB file costs about 1.2 GB (the result), not twice that. They stay in the OS page cache."""
    import mmap

    mm = getattr(arr, "_mmap", None)
    if mm is None or not hasattr(mmap, "MADV_DONTNEED"):
        return lambda: None

    def release() -> None:
        with suppress(OSError, ValueError):
            mm.madvise(mmap.MADV_DONTNEED)
    return release


def _convert(arr: np.ndarray, lay: _Layout, limits: _Limits, label: str) -> torch.Tensor:
    """Validated array (any accepted layout / dtype, possibly a memmap) -> new contiguous uint8 NCHW,
    converted in chunks so the only large allocation is the result."""
    release = _mmap_releaser(arr)
    n = len(arr) if limits.max_images is None else min(len(arr), limits.max_images)
    _check_result_bytes(n, lay, limits, label)
    arr = arr[:n]
    if arr.ndim == 3:
        view = arr[:, None]
    elif lay.channels_last:
        view = arr.transpose(0, 3, 1, 2)
    else:
        view = arr
    kind = arr.dtype.kind
    per_image = lay.c * lay.h * lay.w * (8 if kind == "f" else arr.dtype.itemsize)  # floats go via float64
    step = max(1, _CHUNK_BYTES // per_image)
    scale = _value_check(view, step, label, release)
    out = torch.empty((n, lay.c, lay.h, lay.w), dtype=torch.uint8)
    out_np = out.numpy()
    for i in range(0, n, step):
        block = view[i:i + step]
        if kind == "f":
            block = block.astype(np.float64)
            if scale != 1.0:
                block *= scale
            np.rint(block, out=block)
            np.clip(block, 0, 255, out=block)  # only float slack can reach past the ends
        elif kind == "b":
            block = block.astype(np.uint8) * np.uint8(255)
        out_np[i:i + step] = block  # integers were range-checked, so this cast is exact
        release()
    return out


# ---- .npy -----------------------------------------------------------------------------------------

def _npy_header(fp: IO[bytes], label: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Parse a .npy header without reading the data (and without ever touching pickle)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fp)
        else:
            raise DataError(f"{label} uses .npy format version {version}, which aelib does not read; "
                            f"save it again with numpy.save.")
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{label} is not a valid .npy array file, or it is damaged; save the images with "
                        "numpy.save.") from exc
    return tuple(int(s) for s in shape), bool(fortran), np.dtype(dtype), fp.tell()


def _npy_nbytes(shape: Sequence[int], dtype: np.dtype) -> int:
    return int(np.prod(shape, dtype=object)) * dtype.itemsize if shape else dtype.itemsize


def _checked_npy(fp: IO[bytes], size: int, label: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    shape, fortran, dtype, offset = _npy_header(fp, label)
    _check_dtype(dtype, label)
    _layout(shape, label)
    if size < offset + _npy_nbytes(shape, dtype):
        raise DataError(f"{label} is truncated: its header promises {shape} {dtype} values but the file "
                        f"holds only {max(size - offset, 0):,} of {_npy_nbytes(shape, dtype):,} data bytes.")
    return shape, fortran, dtype, offset


def _load_npy_path(path: Path, limits: _Limits) -> torch.Tensor:
    label = f"'{path.name}'"
    with open(path, "rb") as fp:
        shape, _, _, _ = _checked_npy(fp, path.stat().st_size, label)
    try:  # memory-mapped: a 1.2 GB file is read in chunks straight into the result tensor
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise DataError(f"{label} could not be read as a .npy array ({_one_line(exc)}).") from exc
    return _convert(arr, _layout(shape, label), limits, label)


def _load_npy_bytes(raw: bytes, label: str, limits: _Limits) -> torch.Tensor:
    shape, fortran, dtype, offset = _checked_npy(io.BytesIO(raw), len(raw), label)
    count = int(np.prod(shape, dtype=object))
    flat = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)  # a view: no copy of the upload
    arr = flat.reshape(shape[::-1]).transpose() if fortran else flat.reshape(shape)
    return _convert(arr, _layout(shape, label), limits, label)


# ---- .npz -----------------------------------------------------------------------------------------

def _load_npz(zf: zipfile.ZipFile, label: str, key: str | None, limits: _Limits) -> torch.Tensor:
    members = {i.filename[:-4]: i for i in zf.infolist() if i.filename.endswith(".npy") and not i.is_dir()}
    if not members:
        raise DataError(f"{label} holds no arrays; expected a .npz written by numpy.savez.")
    names = ", ".join(repr(k) for k in sorted(members))
    if key is not None:
        if key not in members:
            raise DataError(f"{label} has no array named {key!r}; it holds {names}.")
    elif len(members) == 1:
        key = next(iter(members))
    else:
        key = next((k for k in NPZ_NAMES if k in members), None)
        if key is None:
            raise DataError(f"{label} holds several arrays ({names}) and none is named 'images', 'x' or "
                            f"'arr_0'; save the images alone or under one of those names.")
    info = members[key]
    label = f"Array {key!r} in {label}"
    try:
        with zf.open(info) as fp:
            shape, *_ = _checked_npy(fp, info.file_size, label)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{label} could not be read ({_one_line(exc)}).") from exc
    # Checked against the declared size before decompressing anything (zip bombs).
    if info.file_size > limits.max_bytes:
        raise DataError(f"{label} would expand to {_mb(info.file_size)}, more than the limit of "
                        f"{_mb(limits.max_bytes)}; raise max_bytes or save it as an uncompressed .npy.")
    lay = _layout(shape, label)
    _check_result_bytes(shape[0] if limits.max_images is None else min(shape[0], limits.max_images),
                        lay, limits, label)
    try:
        with zf.open(info) as fp:
            arr = np.lib.format.read_array(fp, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"{label} is truncated or corrupt ({_one_line(exc)}).") from exc
    return _convert(arr, lay, limits, label)


# ---- PNG / JPEG: single files, folders, zips ------------------------------------------------------

def _is_image_name(name: str) -> bool:
    parts = Path(name.replace("\\", "/")).parts
    if not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False  # hidden files and macOS resource forks (._x.png) are not images
    return Path(parts[-1]).suffix.lower() in IMAGE_SUFFIXES


def _decode_one(data: bytes, name: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=("PNG", "JPEG")) as im:
            w, h = im.size
            _check_sides(h, w, f"'{name}'")
            if im.mode not in _GREY_MODES:
                return np.asarray(im.convert("RGB"))
            if im.mode.startswith("I"):  # 16-bit grey: keep the top 8 bits (Pillow would clip)
                return (np.asarray(im).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
            return np.asarray(im.convert("L"))
    except DataError:
        raise
    except Image.UnidentifiedImageError as exc:
        raise DataError(f"'{name}' is not a readable PNG or JPEG image (its bytes are neither).") from exc
    except Exception as exc:
        raise DataError(f"'{name}' is not a readable PNG or JPEG image ({_one_line(exc)}).") from exc


def _decode_images(items: Iterable[tuple[str, Callable[[], bytes]]], label: str,
                   limits: _Limits) -> torch.Tensor:
    """Decode sorted images into one uint8 NCHW tensor: all the same size, RGB if any is in colour."""
    arrays: list[np.ndarray] = []
    first_name = ""
    total = 0
    for name, read in items:
        arr = _decode_one(read(), name)
        if arrays and arr.shape[:2] != arrays[0].shape[:2]:
            (h0, w0), (h, w) = arrays[0].shape[:2], arr.shape[:2]
            raise DataError(f"Images in {label} must all be the same size, but '{first_name}' is {w0} x {h0} "
                            f"and '{name}' is {w} x {h}; resize them first.")
        first_name = first_name or name
        arrays.append(arr)
        total += arr.size
        if total > limits.max_bytes:
            raise DataError(f"{label} would need more than the limit of {_mb(limits.max_bytes)} as uint8 "
                            f"pixels; load fewer images (max_images=) or raise max_bytes.")
    if not arrays:
        raise DataError(f"{label} contains no PNG or JPEG images.")
    colour = any(a.ndim == 3 for a in arrays)
    h, w = arrays[0].shape[:2]
    lay = _Layout(False, 3 if colour else 1, h, w)
    _check_result_bytes(len(arrays), lay, limits, label)
    out = torch.empty((len(arrays), lay.c, h, w), dtype=torch.uint8)
    out_np = out.numpy()
    for i, a in enumerate(arrays):
        out_np[i] = a.transpose(2, 0, 1) if a.ndim == 3 else a  # grey broadcasts to RGB like Pillow's L->RGB
    return out


def _limit_files(names: list, limits: _Limits, label: str) -> list:
    if limits.max_images is not None:
        names = names[: limits.max_images]
    if len(names) > MAX_IMAGE_FILES:
        raise DataError(f"{label} holds {len(names):,} images, more than {MAX_IMAGE_FILES:,}; load fewer "
                        f"(max_images=) or save them as one .npy array.")
    return names


def _load_image_folder(folder: Path, limits: _Limits) -> torch.Tensor:
    label = f"folder '{folder}'"
    base = folder.resolve()
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__MACOSX"]
        for f in filenames:
            p = Path(dirpath) / f
            rel = p.relative_to(folder).as_posix()
            if _is_image_name(rel) and p.is_file():
                if not p.resolve().is_relative_to(base):  # a link pointing out of the folder
                    raise DataError(f"'{rel}' in {label} links to a file outside the allowed folder; "
                                    "links out of the folder are not followed.")
                found.append((rel, p))
    found = _limit_files(sorted(found), limits, label)
    for rel, p in found:
        if p.stat().st_size > MAX_IMAGE_FILE_BYTES:
            raise DataError(f"'{rel}' in {label} is {_mb(p.stat().st_size)}, more than the "
                            f"{_mb(MAX_IMAGE_FILE_BYTES)} allowed for one image file.")
    return _decode_images(((rel, p.read_bytes) for rel, p in found), label, limits)


def _load_image_zip(zf: zipfile.ZipFile, label: str, limits: _Limits) -> torch.Tensor:
    infos = sorted((i for i in zf.infolist() if not i.is_dir() and _is_image_name(i.filename)),
                   key=lambda i: i.filename)
    if not infos:
        raise DataError(f"{label} contains no PNG or JPEG images.")
    infos = _limit_files(infos, limits, label)
    # Zip bombs: check the declared sizes before decompressing anything. zipfile never inflates a
    # member past its declared size (and checks its CRC), so these bounds hold even if they lie.
    for info in infos:
        if info.file_size > MAX_IMAGE_FILE_BYTES:
            raise DataError(f"'{info.filename}' in {label} would expand to {_mb(info.file_size)}, more than "
                            f"the {_mb(MAX_IMAGE_FILE_BYTES)} allowed for one image file.")
    total = sum(i.file_size for i in infos)
    if total > limits.max_bytes:
        raise DataError(f"{label} would expand to {_mb(total)}, more than the limit of "
                        f"{_mb(limits.max_bytes)}; load fewer images (max_images=) or raise max_bytes.")

    def reader(info: zipfile.ZipInfo) -> Callable[[], bytes]:
        def read() -> bytes:
            try:
                return zf.read(info)  # into memory: nothing is ever extracted to disk
            except Exception as exc:
                raise DataError(f"'{info.filename}' in {label} is corrupt or unreadable "
                                f"({_one_line(exc)}).") from exc
        return read

    return _decode_images(((i.filename, reader(i)) for i in infos), label, limits)


# ---- dispatch -------------------------------------------------------------------------------------

def _kind(name: str, head: bytes) -> str:
    suffix = Path(name).suffix.lower() if name else ""
    by_suffix = {".npy": "npy", ".npz": "npz", ".zip": "zip"}
    if suffix in by_suffix:
        return by_suffix[suffix]
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix:
        raise DataError(f"Cannot read '{name}': unknown file type {suffix!r}; {_EXPECTED}.")
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK"):
        return "zip-or-npz"
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff")):
        return "image"
    raise DataError(f"Cannot tell what kind of file {name or 'this'} is; {_EXPECTED}.")


def _count_zip_entries(fp) -> int | None:
    """Entries in a zip's central directory, counted on its raw bytes before ``zipfile`` builds an
    object per entry (a few hundred bytes each). Reads the end record the way ``zipfile`` does;
    None when this Python's ``zipfile`` lacks those helpers or the archive is not a zip."""
    try:
        end = zipfile._EndRecData(fp)
        if not end:
            return None
        size_cd, offset_cd = end[zipfile._ECD_SIZE], end[zipfile._ECD_OFFSET]
        start = end[zipfile._ECD_LOCATION] - size_cd
        if end[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:
            start -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator
    except (AttributeError, OSError, IndexError, TypeError):
        return None
    if start < 0 or offset_cd < 0:
        return None
    if size_cd > 46 * (MAX_ZIP_ENTRIES + 1) * 64:  # far more bytes than that many entries can use
        return size_cd // 46
    fp.seek(start)
    return fp.read(size_cd).count(b"PK\x01\x02")  # over-counts only where a name holds the signature


def _open_zip(fp, label: str) -> zipfile.ZipFile:
    if isinstance(fp, (str, os.PathLike)):
        with open(fp, "rb") as fh:
            entries = _count_zip_entries(fh)
    else:
        entries = _count_zip_entries(fp)
        fp.seek(0)
    if entries is not None and entries > MAX_ZIP_ENTRIES:
        raise DataError(f"{label} lists {entries:,} entries, more than the {MAX_ZIP_ENTRIES:,} a zip "
                        "may hold; save the images as one .npy array instead.")
    try:
        return zipfile.ZipFile(fp)
    except Exception as exc:
        raise DataError(f"{label} is not a valid zip archive; it may be truncated or corrupt "
                        f"({_one_line(exc)}).") from exc


def _load_zip_like(fp, kind: str, label: str, key: str | None, limits: _Limits) -> torch.Tensor:
    with _open_zip(fp, label) as zf:
        if kind == "zip-or-npz":
            names = zf.namelist()
            kind = "npz" if any(n.endswith(".npy") for n in names) and not any(map(_is_image_name, names)) \
                else "zip"
        return _load_npz(zf, label, key, limits) if kind == "npz" else _load_image_zip(zf, label, limits)


def _read_all(fh) -> bytes:
    getvalue = getattr(fh, "getvalue", None)
    if callable(getvalue):  # BytesIO / Streamlit's UploadedFile: the whole buffer, wherever its position
        data = getvalue()
    else:
        with suppress(OSError, AttributeError, ValueError):  # not seekable: read from where it is
            fh.seek(0)
        data = fh.read()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DataError("The file object returned text; open it in binary mode ('rb').")
    return bytes(data)


def load_images(source: ImageSource, *, max_images: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                key: str | None = None) -> torch.Tensor:
    """Read user images into a new contiguous uint8 (N, C, H, W) tensor, or raise ``DataError``.

    ``source``: a path to a .npy / .npz file, a PNG/JPEG file, a folder (nested allowed) or .zip of
    PNG/JPEG images; a binary file-like object or bytes (an upload; its ``.name`` gives the type,
    otherwise the content does); or an array / tensor. Arrays may be (N, H, W), (N, H, W, C) or
    (N, C, H, W) with C in {1, 3} (channels last wins when both fit: the faces layout), of uint8,
    integers in [0, 255], floats in [0, 1] (scaled by 255) or [0, 255], or bools (0 / 255).
    Image files are sorted by path and all converted to L, or to RGB if any is in colour.
    ``max_images`` keeps the first N; ``max_bytes`` bounds the uint8 result and any decompression.
    ``key`` picks one array of a .npz holding several. Nothing is ever unpickled.
    """
    if max_images is not None and (isinstance(max_images, bool) or int(max_images) != max_images
                                   or max_images < 1):
        raise DataError(f"max_images must be a positive whole number or None, not {max_images!r}.")
    if int(max_bytes) < 1:
        raise DataError(f"max_bytes must be positive, not {max_bytes!r}.")
    limits = _Limits(None if max_images is None else int(max_images), int(max_bytes))

    if isinstance(source, torch.Tensor):
        source = source.detach().cpu()
        source = (source.float() if source.dtype == torch.bfloat16 else source).numpy()
    if isinstance(source, np.ndarray):
        label = "The array"
        _check_dtype(source.dtype, label)
        return _convert(source, _layout(source.shape, label), limits, label)

    if isinstance(source, (str, os.PathLike)):
        path = check_source(source)  # regular files and folders only: a named pipe would block
        if path.is_dir():
            return _load_image_folder(path, limits)
        with open(path, "rb") as fh:
            head = fh.read(8)
        kind = _kind(path.name, head)
        label = f"'{path.name}'"
        if kind == "npy":
            return _load_npy_path(path, limits)
        if kind == "image":
            return _decode_images([(path.name, path.read_bytes)], label, limits)
        return _load_zip_like(path, kind, label, key, limits)

    if isinstance(source, (bytes, bytearray, memoryview)):
        raw, name = bytes(source), ""
    elif hasattr(source, "read"):
        raw, name = _read_all(source), os.path.basename(str(getattr(source, "name", "") or ""))
    else:
        raise DataError(f"Cannot read images from a {type(source).__name__}; {_EXPECTED}, given as a path, "
                        f"bytes, a binary file object or an array.")
    kind = _kind(name, raw[:8])
    label = f"'{name}'" if name else "The uploaded data"
    if kind == "npy":
        return _load_npy_bytes(raw, label, limits)
    if kind == "image":
        return _decode_images([(name or "image", lambda: raw)], label, limits)
    return _load_zip_like(io.BytesIO(raw), kind, label, key, limits)


# --------------------------------------------------------------------------------------------------
# One-class (anomaly detection) splits
# --------------------------------------------------------------------------------------------------

def _class_ids(wanted: int | str | Iterable[int | str], classes: list[str] | None, known: set[int],
               title: str) -> list[int]:
    if isinstance(wanted, (str, int, np.integer)):
        wanted = [wanted]
    ids: set[int] = set()
    for c in wanted:
        if isinstance(c, str) and classes is not None and c in classes:
            idx = classes.index(c)
        elif isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            idx = int(c)
        else:
            idx = None
        if idx is None or idx not in known:
            names = (", ".join(f"{i} {n!r}" for i, n in enumerate(classes)) if classes
                     else ", ".join(str(k) for k in sorted(known)))
            raise DataError(f"Unknown class {c!r} for {title}; its classes are {names}.")
        ids.add(idx)
    if not ids:
        raise DataError("Choose at least one normal class.")
    return sorted(ids)


def one_class_split(train: ImageDataset, test: ImageDataset,
                    normal_classes: int | str | Iterable[int | str]) -> tuple[ImageDataset, ImageDataset]:
    """Anomaly-detection view of a labelled dataset: train on normal classes, test on everything.

    Returns ``train_normal`` (only the normal classes, original labels) and ``test_labeled`` (the
    whole test set, ``labels`` 1 = anomaly / 0 = normal, original class ids in ``extra["classes"]``).
    ``normal_classes`` takes class ids or class names.
    """
    for ds, role in ((train, "training"), (test, "test")):
        if ds.labels is None:
            raise DataError(f"The {role} set {ds.name!r} has no class labels, so it cannot be split into "
                            f"normal and anomalous classes.")
    classes = train.classes or test.classes
    known = set(range(len(classes))) if classes else set(train.labels.unique().tolist())
    ids = _class_ids(normal_classes, classes, known, train.name)
    names = [classes[i] for i in ids] if classes else [str(i) for i in ids]
    normal = torch.tensor(ids, dtype=train.labels.dtype)

    keep = torch.isin(train.labels, normal)
    if not keep.any():
        raise DataError(f"The training set has no images of the normal classes {names}.")
    anomaly = ~torch.isin(test.labels, normal.to(test.labels.dtype))
    if anomaly.all() or not anomaly.any():
        which = "normal" if anomaly.all() else "anomalous"
        raise DataError(f"With normal classes {names} the test set has no {which} images, so anomaly "
                        f"detection cannot be evaluated; choose other normal classes.")
    info = {"normal_classes": ids, "normal_class_names": names}
    listed = ", ".join(names)
    train_normal = ImageDataset(
        images=train.images[keep], labels=train.labels[keep], name=f"{train.name} (normal: {listed})",
        source=train.source, classes=train.classes, note=train.note, extra={**train.extra, **info})
    test_labeled = ImageDataset(
        images=test.images, labels=anomaly.to(torch.int64), name=f"{test.name} (anomaly = not {listed})",
        source=test.source, classes=["normal", "anomaly"], note=test.note,
        extra={**test.extra, **info, "classes": test.labels.clone(), "class_names": test.classes})
    return train_normal, test_labeled


# --------------------------------------------------------------------------------------------------
# The user's own images: one holdout policy, labels beside them
# --------------------------------------------------------------------------------------------------

HOLDOUT_FRACTION = 0.1
HOLDOUT_MIN_IMAGES = 10  # below this the same images serve for training and testing


def holdout_split(images: torch.Tensor, labels: torch.Tensor | None = None, *, name: str = "images",
                  source: str = "memory", note: str = "", classes: list[str] | None = None
                  ) -> tuple[ImageDataset, ImageDataset]:
    """(train, test) of a user's image set: the last 10% (at least 1) is held out for testing.

    Contiguous slices, so a memory-mapped or huge array is never copied; with fewer than
    ``HOLDOUT_MIN_IMAGES`` images, train and test are the same images. The CLI and the app share it.
    """
    n = len(images)
    cut = n - max(1, int(n * HOLDOUT_FRACTION)) if n >= HOLDOUT_MIN_IMAGES else n
    parts = (slice(0, cut), slice(cut, n)) if cut < n else (slice(0, n), slice(0, n))
    held = "last 10% held out" if cut < n else "too few images to hold any out"
    if classes is None and labels is not None and len(labels):
        classes = [str(c) for c in range(int(labels.max()) + 1)]

    def part(s: slice, split: str) -> ImageDataset:
        return ImageDataset(images=images[s], labels=None if labels is None else labels[s], name=name,
                            source=source, note=note, classes=classes, extra={"split": f"{split} ({held})"})
    return part(parts[0], "train"), part(parts[1], "test")


_LABEL_KEYS = ("labels", "y", "targets")


def _npy_vector(fp: IO[bytes], n: int, label: str, kinds: str) -> np.ndarray:
    """Exactly ``n`` values of a 1-D .npy stream; the header is checked before any data is read."""
    shape, _, dtype, _ = _npy_header(fp, label)
    if dtype.hasobject or dtype.kind not in kinds or dtype.subdtype is not None or dtype.itemsize > 8:
        raise DataError(f"{label} holds {dtype} values; labels must be whole numbers, 0 or 1.")
    if len(shape) != 1 or shape[0] != n:
        count = int(np.prod(shape, dtype=object)) if shape else 1
        raise DataError(f"{label} holds {count:,} values, but the test set has {n:,} images: "
                        "give one 0/1 label per image.")
    data = fp.read(n * dtype.itemsize)
    if len(data) != n * dtype.itemsize:
        raise DataError(f"{label} is cut short: it should hold {n:,} labels.")
    return np.frombuffer(data, dtype=dtype).copy()


def npz_labels(raw: bytes, n: int) -> torch.Tensor | None:
    """Integer class labels stored beside the images in a .npz (``labels``, ``y`` or ``targets``).

    Labels that do not fit (wrong length, not integers, out of range, unreadable) are ignored.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            names = set(zf.namelist())
            for k in _LABEL_KEYS:
                member = next((m for m in (k + ".npy", k) if m in names), None)
                if member is None:
                    continue
                with zf.open(member) as fh:
                    y = _npy_vector(fh, n, f"'{member}'", "iub")
                return torch.from_numpy(y.astype(np.int64)) if n and 0 <= y.min() and y.max() < 1000 else None
    except (DataError, OSError, EOFError, zipfile.BadZipFile, MemoryError, RuntimeError, NotImplementedError):
        return None
    return None


def read_anomaly_labels(raw: bytes, name: str, n: int) -> np.ndarray:
    """0/1 anomaly labels (1 = anomaly) for ``n`` test images from a .npy, or a .csv/.txt file (one
    column, or a column named label / labels / anomaly / y)."""
    import pandas as pd

    shown = f"'{name}'" if name else "The labels file"
    try:
        if name.lower().endswith(".npy"):
            y = _npy_vector(io.BytesIO(raw), n, shown, "biuf")
        else:
            if not raw.strip():
                raise DataError(f"{shown} is empty: give one 0/1 label per test image.")
            df = pd.read_csv(io.BytesIO(raw), header=None if raw[:1].isdigit() else "infer")
            cols = [c for c in df.columns if str(c).strip().lower() in ("label", "labels", "anomaly", "y")]
            y = df[cols[0] if cols else df.columns[-1]].to_numpy()
    except MemoryError as exc:
        raise DataError(f"{shown} is too large to be a labels file.") from exc
    except (ValueError, OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{shown} could not be read as labels. Give a .npy array or a CSV with one 0/1 "
                        "value per test image.") from exc
    y = np.asarray(y).ravel()
    if len(y) != n:
        raise DataError(f"{shown} holds {len(y):,} values, but the test set has {n:,} images: "
                        "give one 0/1 label per image.")
    if y.dtype.kind not in "biuf" or not np.isin(y, (0, 1)).all():
        raise DataError("Labels must be 0 (normal) or 1 (anomaly), one per test image.")
    return y.astype(np.int8)
