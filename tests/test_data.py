"""Tests for aelib.data: built-in datasets with offline fallback, user image loading, one-class splits."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from aelib import data as D
from aelib.data import (
    DATASETS,
    DataError,
    ImageDataset,
    default_data_root,
    load_dataset,
    load_images,
    load_splits,
    one_class_split,
)

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]
REAL_SIZES = {"mnist": (8000, 2000), "fashion-mnist": (60000, 10000)}  # shared/data/README.md


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------

def rand_u8(n: int, c: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, c, h, w), dtype=np.uint8)


def npy_bytes(arr: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def named(raw: bytes, name: str) -> io.BytesIO:
    """What Streamlit's UploadedFile looks like to aelib: a BytesIO with a .name."""
    f = io.BytesIO(raw)
    f.name = name
    return f


def png_bytes(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def layouts(u: np.ndarray) -> dict[str, np.ndarray]:
    """Every accepted layout of a uint8 (N, C, H, W) reference array."""
    out = {"nchw": u, "nhwc": np.ascontiguousarray(u.transpose(0, 2, 3, 1))}
    if u.shape[1] == 1:
        out["nhw"] = u[:, 0].copy()
    return out


def as_dtype(a: np.ndarray, dtype: str) -> np.ndarray:
    """Encode uint8 pixels in another accepted dtype (floats "01" are fractions of 255)."""
    if dtype == "bool":
        return a > 127
    if dtype.endswith("-01"):
        return (a / 255.0).astype(dtype[:-3])
    return a.astype(dtype)


def expected_from(u: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bool":
        return np.where(u > 127, 255, 0).astype(np.uint8)
    if dtype.startswith("float") and not dtype.endswith("-01") and u.max() <= 1:
        return u * np.uint8(255)  # an all-0/1 float array reads as fractions of full scale
    return u


DTYPES = ["uint8", "int16", "int64", "uint16", ">u2", "float32", "float64", "float32-01", "float64-01",
          "float16-01", "bool"]


class _Payload:
    """Unpickling this runs os.mkdir(marker): proof that a loader unpickled the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def pickled_npy(path: Path, marker: Path) -> Path:
    arr = np.empty((2, 4, 4), dtype=object)
    arr[...] = _Payload(marker)
    np.save(path, arr, allow_pickle=True)
    return path


# --------------------------------------------------------------------------------------------------
# built-in datasets
# --------------------------------------------------------------------------------------------------

def test_datasets_name_their_ten_classes():
    assert set(DATASETS) == {"mnist", "fashion-mnist"}
    assert list(DATASETS["fashion-mnist"].classes) == FASHION
    assert list(DATASETS["mnist"].classes) == [str(d) for d in range(10)]


def test_default_data_root_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AELIB_DATA_ROOT", str(tmp_path))
    assert default_data_root() == tmp_path
    monkeypatch.delenv("AELIB_DATA_ROOT")
    assert default_data_root() == Path.home() / ".cache" / "aelib" / "data"


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_load_dataset_reads_real_files_from_root(data_root, name, split):
    ds = load_dataset(name, split, root=data_root, download=False)
    n = REAL_SIZES[name][split == "test"]
    assert ds.source == "local" and ds.note == ""
    assert ds.images.shape == (n, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.images.is_contiguous()
    assert ds.labels.dtype == torch.int64 and ds.labels.shape == (n,)
    assert set(ds.labels.unique().tolist()) == set(range(10))
    assert ds.classes == list(DATASETS[name].classes)
    assert 20 < ds.images.float().mean() < 120  # real digits / clothes, not blank
    tv_class = getattr(torchvision.datasets, DATASETS[name].torchvision_class)
    raw = tv_class(str(data_root), train=split == "train")
    assert torch.equal(ds.images[:, 0], raw.data)  # the pixels torchvision reads, untransformed
    assert torch.equal(ds.labels, raw.targets)


def test_root_from_env_var(monkeypatch, data_root):
    monkeypatch.setenv("AELIB_DATA_ROOT", str(data_root))
    assert load_dataset("mnist", "test", download=False).source == "local"


def test_load_splits_reads_both_splits(data_root):
    train, test = load_splits("fashion-mnist", root=data_root, download=False)
    assert (len(train), len(test)) == REAL_SIZES["fashion-mnist"]
    assert train.extra["split"] == "train" and test.extra["split"] == "test"


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_empty_root_without_download_falls_back_to_bundled_sample(tmp_path, name):
    train, test = load_splits(name, root=tmp_path, download=False)
    for ds, n in ((train, 3000), (test, 1000)):
        assert ds.source == "bundled-sample"
        assert ds.images.shape == (n, 1, 28, 28) and ds.images.dtype == torch.uint8
        assert ds.labels.dtype == torch.int64
        assert torch.bincount(ds.labels).tolist() == [n // 10] * 10  # class-balanced
        assert str(tmp_path) in ds.note and "AELIB_DATA_ROOT" in ds.note and "root=" in ds.note
        assert "turned off" in ds.note
    assert list(tmp_path.iterdir()) == []  # download=False wrote nothing


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_bundled_sample_is_real_data_with_right_labels(data_root, tmp_path, name):
    sample = load_dataset(name, "train", root=tmp_path, download=False)
    real = load_dataset(name, "train", root=data_root, download=False)
    label_of = {hashlib.blake2b(img.numpy().tobytes(), digest_size=16).digest(): int(y)
                for img, y in zip(real.images, real.labels)}
    for img, y in zip(sample.images, sample.labels):
        assert label_of[hashlib.blake2b(img.numpy().tobytes(), digest_size=16).digest()] == int(y)


def test_bundled_samples_are_small():
    assets = Path(D.__file__).parent / "assets"
    sizes = [(assets / spec.sample_file).stat().st_size for spec in DATASETS.values()]
    assert sum(sizes) <= 3_000_000


@pytest.mark.parametrize("exc", [RuntimeError("no route"), OSError("dns"), TimeoutError(), ValueError("x")])
def test_failed_download_falls_back_with_bounded_timeout(monkeypatch, tmp_path, exc):
    seen = []

    def failing_download(self):
        seen.append(socket.getdefaulttimeout())
        raise exc

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", failing_download)
    before = socket.getdefaulttimeout()
    ds = load_dataset("fashion-mnist", "train", root=tmp_path, download=True)
    assert ds.source == "bundled-sample" and ds.images.shape == (3000, 1, 28, 28)
    assert "could not be downloaded" in ds.note and "AELIB_DATA_ROOT" in ds.note
    assert seen == [D.DOWNLOAD_TIMEOUT_S]  # bounded during the attempt...
    assert socket.getdefaulttimeout() == before  # ...and restored after


def test_load_splits_tries_the_download_once(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(torchvision.datasets.MNIST, "download", lambda self: calls.append(1) or 1 / 0)
    train, test = load_splits("mnist", root=tmp_path)
    assert (train.source, test.source) == ("bundled-sample", "bundled-sample")
    assert len(calls) == 1


def test_successful_download_is_reported(monkeypatch, tmp_path, data_root):
    def fake_download(self):  # what a real download leaves behind: the raw files under root
        shutil.copytree(data_root / "MNIST" / "raw", self.raw_folder, dirs_exist_ok=True)

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", fake_download)
    ds = load_dataset("mnist", "test", root=tmp_path, download=True)
    assert ds.source == "download" and ds.images.shape == (2000, 1, 28, 28)
    assert load_dataset("mnist", "test", root=tmp_path, download=False).source == "local"


def test_corrupt_local_files_raise(tmp_path, data_root):
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(data_root / "MNIST" / "raw", raw)
    (raw / "t10k-images-idx3-ubyte").write_bytes((data_root / "MNIST" / "raw" /
                                                 "t10k-images-idx3-ubyte").read_bytes()[:5000])
    with pytest.raises(DataError, match="could not be read"):
        load_dataset("mnist", "test", root=tmp_path, download=False)


@pytest.mark.parametrize("header", [b"\x00\x00\x08\x03" + (2**31 - 1).to_bytes(4, "big") * 3,
                                    b"\x00\x00\x08\x01" + (28).to_bytes(4, "big") * 3,
                                    b"\x00\x00\x0d\x03" + (1).to_bytes(4, "big") * 3, b"\x00\x00"])
def test_idx_files_whose_header_lies_are_refused_without_reading_them(tmp_path, data_root, header):
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(data_root / "MNIST" / "raw", raw)
    (raw / "t10k-images-idx3-ubyte").write_bytes(header + bytes(784))
    with pytest.raises(DataError, match="could not be read"):
        load_dataset("mnist", "test", root=tmp_path, download=False)
    assert load_dataset("mnist", "train", root=tmp_path, download=False).source == "local"


def test_unknown_dataset_and_split_raise(tmp_path):
    with pytest.raises(DataError, match="mnist, fashion-mnist"):
        load_dataset("cifar10", root=tmp_path)
    with pytest.raises(DataError, match="split"):
        load_dataset("mnist", "validation", root=tmp_path)


def test_mnist_small_fixture(mnist_small):
    train, test = mnist_small
    assert train.images.shape == (1000, 1, 28, 28) and test.images.shape == (500, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [100] * 10


# --------------------------------------------------------------------------------------------------
# load_images: accepted inputs
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_layout_and_dtype_round_trips_through_npy(tmp_path, dtype, channels):
    u = rand_u8(5, channels, 7, 9, seed=channels)
    want = expected_from(u, dtype)
    for layout, arr in layouts(u).items():
        arr = as_dtype(arr, dtype)
        path = tmp_path / f"{layout}.npy"
        np.save(path, arr)
        for source in (path, str(path), named(path.read_bytes(), "x.npy"), path.read_bytes(), arr):
            got = load_images(source)
            assert got.dtype == torch.uint8 and got.is_contiguous(), (layout, type(source))
            assert np.array_equal(got.numpy(), want), (layout, type(source))


def test_faces_layout_becomes_channels_first(tmp_path):
    u = rand_u8(6, 3, 64, 64)
    np.save(tmp_path / "faces.npy", u.transpose(0, 2, 3, 1))  # (N, 64, 64, 3), like trainingset.npy
    got = load_images(tmp_path / "faces.npy")
    assert got.shape == (6, 3, 64, 64) and got.is_contiguous()
    assert np.array_equal(got.numpy(), u)


def test_channel_axis_ambiguity_prefers_channels_last_when_valid():
    a = rand_u8(2, 3, 5, 3)  # (N, 3, 5, 3): channels last gives 3 x 5 RGB images
    assert load_images(a).shape == (2, 3, 3, 5)
    b = rand_u8(2, 1, 5, 3)  # channels last would give 1-pixel-high images: channels first instead
    assert np.array_equal(load_images(b).numpy(), b)


def test_float_rounding_noise_is_tolerated():
    a = np.array([[[1.0000001, 0.5], [-1e-8, 0.0]]], np.float64)
    assert load_images(a).numpy().ravel().tolist() == [255, 128, 0, 0]


def test_fortran_order_and_torch_tensor_inputs(tmp_path):
    u = rand_u8(4, 3, 6, 8)
    np.save(tmp_path / "f.npy", np.asfortranarray(u))
    assert np.array_equal(load_images(tmp_path / "f.npy").numpy(), u)
    assert np.array_equal(load_images(named(npy_bytes(np.asfortranarray(u)), "f.npy")).numpy(), u)
    assert np.array_equal(load_images(torch.from_numpy(u).float() / 255).numpy(), u)


def test_big_npy_is_memory_mapped_and_converted_in_chunks(tmp_path, monkeypatch):
    u = rand_u8(300, 3, 16, 16)
    np.save(tmp_path / "big.npy", u.transpose(0, 2, 3, 1))
    np.save(tmp_path / "bigf.npy", u.astype(np.float32) / 255)
    calls = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: calls.append(k) or real_load(*a, **k))
    monkeypatch.setattr(D, "_CHUNK_BYTES", 10_000)  # many chunks, including a ragged last one
    assert np.array_equal(load_images(tmp_path / "big.npy").numpy(), u)
    assert np.array_equal(load_images(tmp_path / "bigf.npy").numpy(), u)
    assert calls and all(k.get("mmap_mode") == "r" and k.get("allow_pickle") is False for k in calls)


def _rss_mb() -> float:
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from Linux's /proc")
def test_converted_memmap_pages_leave_resident_memory(tmp_path):
    arr = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.uint8, shape=(4000, 64, 64, 3))
    arr[:] = 7
    arr.flush()
    del arr
    mm = np.load(tmp_path / "big.npy", mmap_mode="r")
    before = _rss_mb()
    assert int(mm.sum(dtype=np.int64)) == 7 * mm.size  # faults in all 49 MB of the file
    touched = _rss_mb()
    D._mmap_releaser(mm)()
    assert touched - before > 30 and _rss_mb() - before < 10


def test_max_images_keeps_the_first(tmp_path):
    u = rand_u8(10, 1, 4, 4)
    np.save(tmp_path / "a.npy", u)
    assert np.array_equal(load_images(tmp_path / "a.npy", max_images=3).numpy(), u[:3])
    assert load_images(u, max_images=50).shape[0] == 10
    with pytest.raises(DataError, match="max_images"):
        load_images(u, max_images=0)


def test_npz_picks_the_images_array(tmp_path):
    u = rand_u8(3, 1, 5, 5)
    labels = np.arange(3)
    for key in ("images", "x", "arr_0"):
        (tmp_path / f"{key}.npz").write_bytes(npz_bytes(**{key: u, "labels": labels}))
        assert np.array_equal(load_images(tmp_path / f"{key}.npz").numpy(), u)
    (tmp_path / "single.npz").write_bytes(npz_bytes(faces=u))
    assert np.array_equal(load_images(tmp_path / "single.npz").numpy(), u)
    assert np.array_equal(load_images(named(npz_bytes(whatever=u), "up.npz")).numpy(), u)
    assert np.array_equal(load_images(npz_bytes(whatever=u)).numpy(), u)  # sniffed, no name
    two = tmp_path / "two.npz"
    two.write_bytes(npz_bytes(a=u, b=u))
    with pytest.raises(DataError, match="'a', 'b'"):
        load_images(two)
    assert np.array_equal(load_images(two, key="b").numpy(), u)


def write_pngs(folder: Path, images: dict[str, np.ndarray]) -> None:
    for rel, arr in images.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(arr))


def test_folder_of_pngs_sorted_by_path_with_nested_folders(tmp_path):
    u = rand_u8(4, 1, 6, 5)
    write_pngs(tmp_path, {"b/0.png": u[2, 0], "a/z.png": u[1, 0], "a.png": u[0, 0], "c/d/e.PNG": u[3, 0]})
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"junk")
    got = load_images(tmp_path)
    assert got.shape == (4, 1, 6, 5)
    assert np.array_equal(got.numpy(), u)  # a.png < a/z.png < b/0.png < c/d/e.PNG


def test_colour_in_any_image_makes_all_rgb(tmp_path):
    grey = rand_u8(1, 1, 6, 6)[0, 0]
    rgb = rand_u8(1, 3, 6, 6)[0].transpose(1, 2, 0)
    write_pngs(tmp_path, {"1.png": grey, "2.png": rgb})
    got = load_images(tmp_path).numpy()
    assert got.shape == (2, 3, 6, 6)
    assert all(np.array_equal(got[0, c], grey) for c in range(3))
    assert np.array_equal(got[1], rgb.transpose(2, 0, 1))


def test_jpeg_and_single_image_files(tmp_path):
    img = np.full((8, 10, 3), 120, np.uint8)
    (tmp_path / "one.jpg").write_bytes(png_bytes(img, "JPEG"))
    got = load_images(tmp_path / "one.jpg")
    assert got.shape == (1, 3, 8, 10) and abs(int(got.float().mean()) - 120) <= 2
    assert load_images(named(png_bytes(img[..., 0]), "one.png")).shape == (1, 1, 8, 10)


def test_16_bit_png_keeps_the_top_eight_bits(tmp_path):
    deep = np.arange(0, 65536, 1024, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert np.array_equal(load_images(tmp_path / "deep.png").numpy()[0, 0], (deep >> 8).astype(np.uint8))


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, raw in members.items():
            zf.writestr(name, raw)
    return buf.getvalue()


def test_zip_of_pngs_from_path_upload_and_bytes(tmp_path):
    u = rand_u8(3, 3, 5, 7)
    members = {f"imgs/{i}.png": png_bytes(u[i].transpose(1, 2, 0)) for i in range(3)}
    members["__MACOSX/imgs/._0.png"] = b"resource fork, not a png"
    members["readme.txt"] = b"hello"
    raw = zip_bytes(members)
    (tmp_path / "imgs.zip").write_bytes(raw)
    for source in (tmp_path / "imgs.zip", named(raw, "imgs.zip"), raw):
        assert np.array_equal(load_images(source).numpy(), u)
    assert load_images(raw, max_images=2).shape == (2, 3, 5, 7)
    with_array = zip_bytes({**members, "labels.npy": npy_bytes(np.arange(3))})
    assert np.array_equal(load_images(with_array).numpy(), u)  # no name: images win over a stray .npy


# --------------------------------------------------------------------------------------------------
# load_images: rejections
# --------------------------------------------------------------------------------------------------

BAD_ARRAYS = {
    "rank 2": (np.zeros((8, 8), np.uint8), "2-D"),
    "rank 5": (np.zeros((2, 1, 8, 8, 1), np.uint8), "5-D"),
    "rgba": (np.zeros((2, 8, 8, 4), np.uint8), "1 or 3 channels"),
    "two channels": (np.zeros((2, 2, 8, 8), np.uint8), "1 or 3 channels"),
    "zero images": (np.zeros((0, 8, 8), np.uint8), "no images"),
    "nan": (np.array([[[0.5, np.nan], [0, 0]]], np.float32), "NaN"),
    "inf": (np.array([[[0.5, np.inf], [0, 0]]], np.float64), "NaN or infinite"),
    "negative int": (np.array([[[-1, 3], [0, 0]]], np.int16), "negative"),
    "negative float": (np.array([[[-0.1, 0.3], [0, 0]]], np.float32), "negative"),
    "int over 255": (np.array([[[256, 3], [0, 0]]], np.int32), "up to 256"),
    "float over 255": (np.array([[[255.5, 3], [0, 0]]], np.float32), "up to 255.5"),
    "object": (np.array([[[1, 2], [3, 4]]], dtype=object), "never unpickles"),
    "structured": (np.zeros((1, 4, 4), dtype=[("a", "u1"), ("b", "u1")]), "structured"),
    "complex": (np.zeros((1, 4, 4), np.complex64), "dtype complex64"),
    "strings": (np.full((1, 4, 4), "a"), "dtype <U1"),
    "datetime": (np.zeros((1, 4, 4), "datetime64[s]"), "dtype datetime64"),
    "too small": (np.zeros((2, 8, 1), np.uint8), "between 2 and 1024"),
    "too large": (np.zeros((1, 1025, 2), np.uint8), "between 2 and 1024"),
}


@pytest.mark.parametrize("case", list(BAD_ARRAYS))
def test_bad_arrays_are_rejected_as_array_npy_and_npz(tmp_path, case):
    arr, message = BAD_ARRAYS[case]
    sources = [arr]
    if not arr.dtype.hasobject:
        np.save(tmp_path / "bad.npy", arr)
        (tmp_path / "bad.npz").write_bytes(npz_bytes(images=arr))
        sources += [tmp_path / "bad.npy", named(npy_bytes(arr), "bad.npy"), tmp_path / "bad.npz"]
    for source in sources:
        with pytest.raises(DataError, match=message):
            load_images(source)


@pytest.mark.parametrize("how", ["path", "upload", "bytes", "npz"])
def test_pickled_npy_is_refused_without_unpickling(tmp_path, how):
    control = pickled_npy(tmp_path / "control.npy", tmp_path / "control-marker")
    np.load(control, allow_pickle=True)  # the payload works when someone does unpickle it...
    assert (tmp_path / "control-marker").exists()

    marker = tmp_path / "marker"
    path = pickled_npy(tmp_path / "evil.npy", marker)
    if how == "npz":
        with zipfile.ZipFile(tmp_path / "evil.npz", "w") as zf:
            zf.write(path, "images.npy")
    source = {"path": path, "upload": named(path.read_bytes(), "evil.npy"), "bytes": path.read_bytes(),
              "npz": tmp_path / "evil.npz"}[how]
    with pytest.raises(DataError, match="never unpickles"):
        load_images(source)
    assert not marker.exists()  # ...but aelib never did


def test_truncated_and_corrupt_files_are_rejected(tmp_path):
    raw = npy_bytes(rand_u8(4, 1, 8, 8))
    (tmp_path / "cut.npy").write_bytes(raw[:-10])
    for source in (tmp_path / "cut.npy", named(raw[:-10], "cut.npy"), raw[:-10]):
        with pytest.raises(DataError, match="truncated"):
            load_images(source)
    (tmp_path / "junk.npy").write_bytes(b"this is not numpy at all")
    with pytest.raises(DataError, match="not a valid .npy"):
        load_images(tmp_path / "junk.npy")
    npz = npz_bytes(images=rand_u8(4, 1, 8, 8))
    for bad in (npz[: len(npz) // 2], b"PK\x03\x04 garbage"):
        with pytest.raises(DataError):
            load_images(named(bad, "x.npz"))
    zipped = zip_bytes({"a.png": png_bytes(rand_u8(1, 1, 8, 8)[0, 0])})
    with pytest.raises(DataError, match="not a valid zip"):
        load_images(named(zipped[:30], "x.zip"))
    (tmp_path / "broken.png").write_bytes(png_bytes(rand_u8(1, 1, 32, 32)[0, 0])[:60])
    with pytest.raises(DataError, match="broken.png"):
        load_images(tmp_path)


def test_unknown_extensions_and_missing_paths(tmp_path):
    (tmp_path / "x.csv").write_text("1,2,3")
    with pytest.raises(DataError, match="unknown file type '.csv'"):
        load_images(tmp_path / "x.csv")
    with pytest.raises(DataError, match="unknown file type '.txt'"):
        load_images(named(b"hello", "notes.txt"))
    with pytest.raises(DataError, match="Cannot tell"):
        load_images(b"hello")
    with pytest.raises(DataError, match="No file or folder"):
        load_images(tmp_path / "missing.npy")
    with pytest.raises(DataError, match="Cannot read images from a int"):
        load_images(5)


def test_folders_and_zips_without_images(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    with pytest.raises(DataError, match="no PNG or JPEG"):
        load_images(tmp_path / "empty")
    with pytest.raises(DataError, match="no PNG or JPEG"):
        load_images(named(zip_bytes({"a.txt": b"x"}), "x.zip"))


def test_images_of_different_sizes_are_rejected(tmp_path):
    write_pngs(tmp_path / "f", {"a.png": np.zeros((8, 8), np.uint8), "b.png": np.zeros((8, 9), np.uint8)})
    with pytest.raises(DataError, match="same size.*'a.png' is 8 x 8.*'b.png' is 9 x 8"):
        load_images(tmp_path / "f")
    raw = zip_bytes({"a.png": png_bytes(np.zeros((8, 8), np.uint8)),
                     "b.png": png_bytes(np.zeros((4, 4), np.uint8))})
    with pytest.raises(DataError, match="same size"):
        load_images(named(raw, "x.zip"))


def test_oversized_images_in_folders_are_rejected(tmp_path):
    write_pngs(tmp_path, {"a.png": np.zeros((1100, 4), np.uint8)})
    with pytest.raises(DataError, match="between 2 and 1024"):
        load_images(tmp_path)


def test_zip_bombs_are_refused_before_extracting(monkeypatch):
    bomb = zip_bytes({"a.png": b"\0" * 5_000_000})  # 5 MB that compresses to a few KB
    assert len(bomb) < 50_000

    def no_extraction(*args, **kwargs):
        raise AssertionError("a member was decompressed")

    monkeypatch.setattr(zipfile.ZipFile, "open", no_extraction)
    with pytest.raises(DataError, match="would expand to 5.0 MB"):
        load_images(named(bomb, "bomb.zip"), max_bytes=1_000_000)
    monkeypatch.setattr(D, "MAX_IMAGE_FILE_BYTES", 1_000_000)
    with pytest.raises(DataError, match="allowed for one image file"):
        load_images(named(bomb, "bomb.zip"))


def test_npz_bombs_are_refused_before_extracting(monkeypatch):
    bomb = npz_bytes(images=np.zeros((300, 64, 64, 3), np.float64))  # 29.5 MB of zeros
    assert len(bomb) < 200_000
    calls = []
    real_read_array = np.lib.format.read_array
    monkeypatch.setattr(np.lib.format, "read_array",
                        lambda *a, **k: calls.append(1) or real_read_array(*a, **k))
    with pytest.raises(DataError, match="would expand to 29.5 MB"):
        load_images(named(bomb, "bomb.npz"), max_bytes=10_000_000)
    assert calls == []


def test_too_many_bytes(tmp_path):
    u = rand_u8(10, 3, 10, 10)
    np.save(tmp_path / "a.npy", u)
    with pytest.raises(DataError, match="more than the limit"):
        load_images(tmp_path / "a.npy", max_bytes=2999)
    assert load_images(tmp_path / "a.npy", max_bytes=3000).shape == (10, 3, 10, 10)
    assert load_images(tmp_path / "a.npy", max_bytes=2999, max_images=9).shape == (9, 3, 10, 10)
    write_pngs(tmp_path / "f", {f"{i}.png": u[i].transpose(1, 2, 0) for i in range(10)})
    with pytest.raises(DataError, match="more than the limit"):
        load_images(tmp_path / "f", max_bytes=2999)


# --------------------------------------------------------------------------------------------------
# load_images: properties
# --------------------------------------------------------------------------------------------------

@st.composite
def valid_inputs(draw):
    c = draw(st.sampled_from([1, 3]))
    n, h, w = draw(st.integers(1, 4)), draw(st.integers(2, 12)), draw(st.integers(2, 12))
    layout = draw(st.sampled_from(["nchw", "nhwc"] + (["nhw"] if c == 1 else [])))
    if layout == "nchw":
        assume(not (c == 3 and w == 3))  # (N, 3, H, 3) is read as channels-last by design
    dtype = draw(st.sampled_from(DTYPES))
    u = rand_u8(n, c, h, w, seed=draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        u = u // np.uint8(128)  # only 0 / 1 values: the edge of the float-scale rule
    container = draw(st.sampled_from(["array", "npy", "npz", "tensor"]))
    return u, layouts(u)[layout], dtype, container


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(valid_inputs())
def test_property_valid_arrays_round_trip(case):
    u, arr, dtype, container = case
    arr = as_dtype(arr, dtype)
    source = {"array": arr, "npy": named(npy_bytes(arr), "a.npy"), "npz": npz_bytes(images=arr),
              "tensor": torch.from_numpy(arr) if dtype in ("uint8", "int16", "int64", "float32", "bool")
              else arr}[container]
    got = load_images(source)
    assert got.dtype == torch.uint8 and got.is_contiguous()
    assert np.array_equal(got.numpy(), expected_from(u, dtype))


@st.composite
def invalid_arrays(draw):
    n, h, w = draw(st.integers(1, 3)), draw(st.integers(2, 8)), draw(st.integers(2, 8))
    base = np.zeros((n, h, w), np.float32)
    i = draw(st.integers(0, base.size - 1))
    problem = draw(st.sampled_from(["nan", "inf", "-inf", "negative", "over", "channels", "rank", "empty",
                                    "side", "complex", "object"]))
    if problem in ("nan", "inf", "-inf"):
        base.flat[i] = float(problem)
    elif problem == "negative":
        base.flat[i] = -draw(st.floats(1e-3, 1e6))
    elif problem == "over":
        base.flat[i] = draw(st.floats(255.01, 1e30))
        base = base.astype(draw(st.sampled_from(["float32", "float64"])))
    elif problem == "channels":
        c = draw(st.sampled_from([2, 4, 5]))  # channels first or last, and the other axis is 4
        base = np.zeros((n, c, 4, 4) if draw(st.booleans()) else (n, 4, 4, c), np.uint8)
    elif problem == "rank":
        base = np.zeros((h,) * draw(st.sampled_from([1, 2, 5])), np.uint8)
    elif problem == "empty":
        base = np.zeros((0, h, w), np.uint8)
    elif problem == "side":
        base = np.zeros((n, h, 1) if draw(st.booleans()) else (n, 1025, 2), np.uint8)
    elif problem == "complex":
        base = base.astype(np.complex128)
    elif problem == "object":
        base = base.astype(object)
    integer = problem in ("negative", "over") and draw(st.booleans())
    if integer:
        base = np.where(base < 0, -1, np.where(base > 255, 256, base)).astype(np.int32)
    return base, draw(st.sampled_from(["array", "npy"]))


@settings(max_examples=150, deadline=None)
@given(invalid_arrays())
def test_property_invalid_arrays_raise_data_error(case):
    arr, container = case
    if container == "npy" and arr.dtype.hasobject:
        container = "array"
    with pytest.raises(DataError):
        load_images(arr if container == "array" else named(npy_bytes(arr), "bad.npy"))


VALID_FILES = {
    "a.npy": npy_bytes(rand_u8(2, 1, 6, 6)),
    "a.npz": npz_bytes(images=rand_u8(2, 3, 6, 6)),
    "a.zip": zip_bytes({"x/0.png": png_bytes(rand_u8(1, 1, 6, 6)[0, 0]),
                        "x/1.png": png_bytes(rand_u8(1, 1, 6, 6, seed=1)[0, 0])}),
    "a.png": png_bytes(rand_u8(1, 1, 6, 6)[0, 0]),
}


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(VALID_FILES)), cut=st.integers(0, 10_000), pos=st.integers(0, 10_000),
       byte=st.integers(0, 255), mode=st.sampled_from(["truncate", "flip"]))
def test_property_damaged_files_give_data_error_or_images(name, cut, pos, byte, mode):
    raw = VALID_FILES[name]
    if mode == "truncate":
        raw = raw[: cut % len(raw)]
    else:
        raw = bytearray(raw)
        raw[pos % len(raw)] = byte
        raw = bytes(raw)
    try:
        got = load_images(named(raw, name))
    except DataError:
        return
    assert got.dtype == torch.uint8 and got.dim() == 4 and got.shape[0] >= 1


# --------------------------------------------------------------------------------------------------
# one_class_split
# --------------------------------------------------------------------------------------------------

def test_one_class_split_keeps_normal_training_classes_and_labels_test_anomalies(mnist_small):
    train, test = mnist_small
    normal_train, labeled = one_class_split(train, test, [1, 7])
    assert set(normal_train.labels.unique().tolist()) == {1, 7}
    assert len(normal_train) == int(((train.labels == 1) | (train.labels == 7)).sum()) == 200
    assert torch.equal(normal_train.images, train.images[(train.labels == 1) | (train.labels == 7)])
    assert len(labeled) == len(test) and torch.equal(labeled.images, test.images)
    assert torch.equal(labeled.extra["classes"], test.labels)
    assert torch.equal(labeled.labels, (~torch.isin(test.labels, torch.tensor([1, 7]))).long())
    assert labeled.labels.dtype == torch.int64 and int(labeled.labels.sum()) == 400
    assert labeled.classes == ["normal", "anomaly"]
    assert normal_train.extra["normal_classes"] == [1, 7]


def test_one_class_split_accepts_class_names(tmp_path):
    train, test = load_splits("fashion-mnist", root=tmp_path, download=False)
    by_name, labeled = one_class_split(train, test, "Trouser")
    by_id, _ = one_class_split(train, test, 1)
    assert torch.equal(by_name.labels, by_id.labels) and set(by_name.labels.tolist()) == {1}
    assert int(labeled.labels.sum()) == 900


def test_one_class_split_rejects_bad_requests(mnist_small):
    train, test = mnist_small
    with pytest.raises(DataError, match="Unknown class 10"):
        one_class_split(train, test, 10)
    with pytest.raises(DataError, match="Unknown class 'cat'"):
        one_class_split(train, test, ["cat"])
    with pytest.raises(DataError, match="at least one"):
        one_class_split(train, test, [])
    with pytest.raises(DataError, match="no anomalous"):
        one_class_split(train, test, range(10))
    unlabeled = ImageDataset(images=train.images[:5])
    with pytest.raises(DataError, match="no class labels"):
        one_class_split(unlabeled, test, 0)
    with pytest.raises(DataError, match="no class labels"):
        one_class_split(train, unlabeled, 0)


def test_an_image_link_pointing_out_of_the_folder_is_refused(tmp_path):
    from PIL import Image

    inside, outside = tmp_path / "imgs", tmp_path / "elsewhere"
    inside.mkdir()
    outside.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(inside / "a.png")
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(outside / "secret.png")
    (inside / "b.png").symlink_to(inside / "a.png")  # a link within the folder is fine
    assert load_images(inside).shape == (2, 1, 8, 8)
    (inside / "zz.png").symlink_to(outside / "secret.png")
    with pytest.raises(DataError, match="outside the allowed folder"):
        load_images(inside)


def test_holdout_split_holds_out_the_last_tenth_as_views_without_a_copy():
    """One policy for the CLI and the app; contiguous slices, so a memory-mapped set is never copied."""
    from aelib.data import holdout_split

    images = torch.arange(50, dtype=torch.uint8).reshape(50, 1, 1, 1).repeat(1, 1, 2, 2)
    train, test = holdout_split(images, name="x.npy")
    assert train.images.data_ptr() == images.data_ptr()
    assert test.images.untyped_storage().data_ptr() == images.untyped_storage().data_ptr()
    assert len(train) == 45 and test.images[:, 0, 0, 0].tolist() == list(range(45, 50))
    few_train, few_test = holdout_split(images[:5])
    assert len(few_train) == len(few_test) == 5  # too few to hold any out: the same images
