"""Hardening (issue 6) through the real app: hostile uploads, unsafe checkpoints, server paths, sessions.

Everything runs in ``streamlit.testing.v1.AppTest`` against ``streamlit_app.py``. Each bad input must
give exactly one clear sentence in the page (``at.error``), never an exception element
(``at.exception``), write nothing, and leave the app usable (another page still renders).

Uploads. ``AppTest``'s ``file_uploader(...).upload()`` hands bytes straight to the app, without the
browser's size check or the server's HTTP limit, so the upload limit itself is checked on the
widgets' declared limit and, in a real browser against ``streamlit run``, by
``test_a_file_over_the_upload_limit_is_refused_in_the_browser`` (skipped without Chromium).

Tests marked ``xfail(strict=True)`` pin bugs found in the app (not in this file): each says what
is wrong; once fixed, the test passes, strict xfail turns that into a failure, and the marker goes.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import pickle
import re
import resource
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save as st_save
from streamlit.testing.v1 import AppTest

from aelib import checkpoints
from aelib.models import build, get_config
from aelib.ui import choices, compute, sidebar, sources
from aelib.worker import get_manager

from _apptools import (
    PAGES,
    goto,
    launch_chromium,
    need_playwright,
    new_app,
    set_app_env,
    stop_all_runs,
    streamlit_server,
    texts,
)

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20


# ------------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """An empty data root (the bundled MNIST sample) and a checkpoints folder with one tiny model."""
    ckpt = tmp_path_factory.mktemp("checkpoints")
    model = build(get_config("fcn", (1, 28, 28), latent=4), seed=0)  # untrained: pages only need one
    checkpoints.save(ckpt / "tiny-fcn.safetensors", model, name="tiny-fcn", dataset={"name": "MNIST"})
    return {"data": tmp_path_factory.mktemp("no-data"), "ckpt": ckpt}


@pytest.fixture
def env(monkeypatch, folders):
    set_app_env(monkeypatch, folders["data"], folders["ckpt"])
    before = _listing(folders["ckpt"]), _listing(folders["data"])
    yield monkeypatch
    stop_all_runs()
    after = _listing(folders["ckpt"]), _listing(folders["data"])
    assert after == before, "a test wrote into the app's folders"


def _listing(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*"))


def _goto(at: AppTest, page: str) -> AppTest:
    return goto(at, page, check=False)  # these tests look at the errors themselves


def _one_clear_error(at: AppTest, *names: str) -> str:
    """Exactly one error element, a sentence (no traceback) naming the file, and no exception element."""
    assert not at.exception, [e.value for e in at.exception]
    errors = [str(e.value) for e in at.error]
    assert len(errors) == 1, errors
    msg = errors[0]
    assert "Traceback" not in msg and 'File "' not in msg and len(msg) < 600, msg
    assert not re.search(r"<[\w.]+ object at 0x|\b_io\.", msg), msg  # no Python object in the sentence
    for name in names:
        assert name in msg, (name, msg)
    return msg


def _still_works(at: AppTest, message: str | None = None) -> None:
    """Other pages render (with the built-in data); ``message``, a refused file's sentence that stays
    beside the file while it is in its uploader, is the only error allowed."""
    _goto(at, "home")
    assert not at.exception and at.title, [e.value for e in at.exception]
    at.sidebar.selectbox(key="aelib.dataset").set_value("MNIST").run()
    _goto(at, "training")
    assert not at.exception, [e.value for e in at.exception]
    assert [str(e.value) for e in at.error] in ([], [message]), texts(at.error)
    assert [t.value for t in at.title] == ["Training"]


def _upload_data(at: AppTest, name: str, raw: bytes) -> AppTest:
    at.sidebar.selectbox(key="aelib.dataset").set_value("Upload images").run()
    at.sidebar.file_uploader(key="aelib.data_upload").upload(name, raw).run()
    return at


def _npy(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, **kw)
    return buf.getvalue()


def _npy_header_only(shape: tuple[int, ...], dtype=np.uint8) -> bytes:
    """A .npy header promising ``shape`` with no data after it (what a huge or truncated file starts with)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue()


def _png(shape: tuple[int, ...], value: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _zip_bomb(member: str = "bomb.png", mib: int = 80) -> bytes:
    """One highly compressible member (``mib`` MiB of zeros, ~0.1% of that compressed)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf, \
            zf.open(zipfile.ZipInfo(member), "w", force_zip64=True) as fh:
        block = bytes(MiB)
        for _ in range(mib):
            fh.write(block)
    return buf.getvalue()


def _lying_npz(declared: int = 600 * MiB) -> bytes:
    """A .npz whose 'images.npy' member declares ``declared`` bytes (a header promising that many
    pixels) while holding a few: the size check must come before any decompression."""
    header = _npy_header_only((declared // (28 * 28), 28, 28))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("images.npy", header + bytes(4096))
        zf.filelist[-1].file_size = len(header) + declared  # the central directory now lies
    return buf.getvalue()


class _Mkdir:
    """Unpickling this calls ``os.mkdir(path)``: the marker proves that something was unpickled."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _pickled_npy(marker: Path) -> bytes:
    """A .npy of dtype object: reading it needs pickle, and unpickling it creates ``marker``."""
    return _npy(np.array([_Mkdir(marker)], dtype=object), allow_pickle=True)


def _assert_payload_is_live(raw_loader, marker: Path) -> None:
    """The payload really does create the marker when unpickled (so 'no marker' above meant something)."""
    assert not marker.exists()
    raw_loader()
    assert marker.exists(), "the malicious payload is inert; the test proves nothing"
    marker.rmdir()


@pytest.fixture
def never_torch_load(monkeypatch):
    """torch.load unpickles; the app must never call it."""
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", refuse)


# ------------------------------------------------------------------------------------------------
# Uploaded image data: every bad file gets one sentence, nothing is written, the app keeps working


def _rng_u8(shape):
    return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)


BAD_DATA = {
    # id: (file name, bytes factory, words the message must contain)
    "rank-2": ("flat.npy", lambda: _npy(_rng_u8((30, 784))), "2-D"),
    "rank-5": ("deep.npy", lambda: _npy(_rng_u8((2, 3, 3, 8, 8))), "5-D"),
    "rgba-channels": ("rgba.npy", lambda: _npy(_rng_u8((4, 16, 16, 4))), "channels"),
    "two-channels": ("two.npy", lambda: _npy(_rng_u8((4, 2, 16, 16))), "channels"),
    "zero-images": ("empty.npy", lambda: _npy(np.zeros((0, 28, 28), np.uint8)), "no images"),
    "1x1-images": ("dots.npy", lambda: _npy(_rng_u8((30, 1, 1))), "between"),
    "1x1-png": ("dot.png", lambda: _png((1, 1)), "between"),
    "huge-dimensions": ("huge.npy", lambda: _npy_header_only((1, 5000, 5000)), "between"),
    "huge-png": ("huge.png", lambda: _png((1100, 1100)), "between"),
    "nan": ("nan.npy", lambda: _npy(np.where(np.eye(8)[None] > 0, np.nan, 0.5).astype(np.float32)
                                    .repeat(3, 0)), "NaN"),
    "inf": ("inf.npy", lambda: _npy(np.full((3, 8, 8), np.inf, np.float64)), "infinite"),
    "negative": ("neg.npy", lambda: _npy(np.full((3, 8, 8), -1, np.int16)), "negative"),
    "over-255": ("big.npy", lambda: _npy(np.full((3, 8, 8), 256, np.int16)), "255"),
    "float-over-255": ("bigf.npy", lambda: _npy(np.full((3, 8, 8), 300.0, np.float32)), "255"),
    "object-npz": ("obj.npz", lambda: _npz_of(np.array([[1, 2]], dtype=object)), "objects"),
    "strings": ("str.npy", lambda: _npy(np.full((3, 8, 8), "x")), "dtype"),
    "truncated-npy": ("cut.npy", lambda: _npy(_rng_u8((40, 28, 28)))[:20_000], "truncated"),
    "garbage-npy": ("junk.npy", lambda: b"\x93NUMPY\x01\x00garbage", "not a valid .npy"),
    "zip-of-non-images": ("docs.zip", lambda: _zip({"readme.txt": b"hi", "a/b.csv": b"1,2"}), "no PNG"),
    "zip-bad-png": ("badpng.zip", lambda: _zip({"a.png": b"\x89PNG not really"}),
                    "'a.png' is not a readable"),
    "zip-mixed-sizes": ("mixed.zip", lambda: _zip({"a.png": _png((8, 8)), "b.png": _png((9, 9))}),
                        "same size"),
    "zip-bomb": ("bomb.zip", _zip_bomb, "would expand"),
    "npz-bomb": ("bomb.npz", _lying_npz, "would expand"),
    "not-a-zip": ("fake.zip", lambda: b"PK\x03\x04 broken", "not a valid zip"),
    "exe-as-png": ("photo.png", lambda: b"MZ\x90\x00" + bytes(64), "not a readable PNG"),
}


def _npz_of(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, images=arr)
    return buf.getvalue()


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_image_upload_gives_one_sentence_and_the_app_keeps_working(env, case):
    name, make, words = BAD_DATA[case]
    at = _upload_data(new_app(), name, make())
    msg = _one_clear_error(at, *([] if case == "zip-bad-png" else [name]))  # that one names the member
    assert words.lower() in msg.lower(), msg
    assert "upload" not in texts(at.sidebar.caption)  # nothing was accepted
    _still_works(at)


def test_pickled_npy_is_refused_without_unpickling(env, tmp_path, never_torch_load):
    marker = tmp_path / "pwned"
    raw = _pickled_npy(marker)
    at = _upload_data(new_app(), "evil.npy", raw)
    _one_clear_error(at, "evil.npy")
    assert not marker.exists(), "the upload was unpickled"
    _still_works(at)
    _assert_payload_is_live(lambda: np.load(io.BytesIO(raw), allow_pickle=True), marker)


def test_nested_zip_and_edge_images_are_accepted(env):
    """The other side of the limits: nested folders in a zip, 2x2 images, bools, floats in [0, 1]."""
    nested = _zip({"a/b/c/0.png": _png((6, 5)), "a/1.png": _png((6, 5, 3)), "z.png": _png((6, 5)),
                   "__MACOSX/a/._0.png": b"junk", ".hidden.png": b"junk"})
    for name, raw, shape in (("nested.zip", nested, "3x6x5"),
                             ("tiny.npy", _npy(np.zeros((1, 2, 2), np.uint8)), "1x2x2"),
                             ("bool.npy", _npy(np.ones((25, 9, 9), bool)), "1x9x9"),
                             ("unit.npy", _npy(np.random.default_rng(0).random((25, 3, 8, 8))), "3x8x8")):
        at = _upload_data(new_app(), name, raw)
        assert not at.exception and not at.error, (name, texts(at.error))
        assert shape in texts(at.sidebar.caption), (name, texts(at.sidebar.caption))
        for page in PAGES:
            _goto(at, page)
            assert not at.exception, (name, page, [e.value for e in at.exception])


def test_page_uploaders_refuse_bad_files_too(env, tmp_path):
    """The anomaly page's three uploaders and the latent page's image uploader use the same checks."""
    marker = tmp_path / "pwned"
    at = _goto(new_app(), "anomaly")
    at.radio(key="aelib.a_mode").set_value("upload").run()
    at.file_uploader(key="aelib.a_up_test").upload("test.npy", _pickled_npy(marker)).run()
    _one_clear_error(at, "test.npy")
    at.file_uploader(key="aelib.a_up_test").clear().upload("test.zip", _zip_bomb("x/bomb.jpg")).run()
    _one_clear_error(at, "test.zip")
    good = _npy(_rng_u8((30, 28, 28)))
    at.file_uploader(key="aelib.a_up_test").clear().upload("test.npy", good).run()
    assert not at.exception and not at.error, texts(at.error)
    at.file_uploader(key="aelib.a_up_labels").upload("labels.npy", _pickled_npy(marker)).run()
    _one_clear_error(at, "labels.npy")
    at.file_uploader(key="aelib.a_up_labels").clear().upload("labels.csv", b"label\n0\n1\n").run()
    msg = _one_clear_error(at)
    assert "2 values" in msg and "30 images" in msg, msg
    at.file_uploader(key="aelib.a_up_labels").clear().run()
    at.file_uploader(key="aelib.a_up_train").upload("train.npz", _lying_npz()).run()
    _one_clear_error(at, "train.npz")
    _goto(at, "latent")
    at.radio(key="aelib.l_b_how").set_value("upload").run()
    at.file_uploader(key="aelib.l_b_up").upload("end.npy", _pickled_npy(marker)).run()
    _one_clear_error(at, "end.npy")
    assert not marker.exists(), "an upload was unpickled"
    _still_works(at)


def test_npz_with_a_huge_labels_member_is_refused_before_decoding(env):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("images.npy", _npy(_rng_u8((30, 28, 28))))
        zf.writestr("labels.npy", _npy_header_only((2**40,), np.int64) + bytes(64))  # declares 8 TiB
    at = new_app()
    with _address_space_ceiling():
        _upload_data(at, "labelled.npz", buf.getvalue())
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.error) <= 1  # refused with a sentence, or the images kept without the labels
    _still_works(at)


def test_labels_npy_declaring_a_huge_array_is_refused_before_decoding(env):
    at = _goto(new_app(), "anomaly")
    at.radio(key="aelib.a_mode").set_value("upload").run()
    at.file_uploader(key="aelib.a_up_test").upload("test.npy", _npy(_rng_u8((30, 28, 28)))).run()
    with _address_space_ceiling():
        at.file_uploader(key="aelib.a_up_labels").upload("labels.npy", _npy_header_only((2**40,))).run()
    _still_works(at, _one_clear_error(at, "labels.npy"))


# ------------------------------------------------------------------------------------------------
# The upload limit


def _configured_upload_limit_mb() -> int:
    """``[server] maxUploadSize`` of .streamlit/config.toml (no TOML parser before Python 3.11)."""
    section = ""
    for line in (ROOT / ".streamlit" / "config.toml").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("["):
            section = line.strip("[]").strip()
        elif section == "server" and line.replace(" ", "").startswith("maxUploadSize="):
            return int(line.split("=", 1)[1])
    raise AssertionError("no [server] maxUploadSize in .streamlit/config.toml: set the limit deliberately")


def test_upload_limit_is_deliberate_and_every_uploader_announces_it(env):
    limit_mb = _configured_upload_limit_mb()
    assert limit_mb == 200
    assert checkpoints.MAX_CHECKPOINT_BYTES == limit_mb * MiB  # a checkpoint that fits the upload loads
    seen = {}
    at = new_app()
    at.sidebar.selectbox(key="aelib.dataset").set_value("Upload images").run()
    seen.update({u.key: u.proto.max_upload_size_mb for u in at.get("file_uploader")})
    at.sidebar.selectbox(key="aelib.dataset").set_value("MNIST").run()
    _goto(at, "anomaly")
    at.radio(key="aelib.a_mode").set_value("upload").run()
    seen.update({u.key: u.proto.max_upload_size_mb for u in at.get("file_uploader")})
    _goto(at, "latent")
    for how in ("aelib.l_a_how", "aelib.l_b_how"):
        at.radio(key=how).set_value("upload").run()
    seen.update({u.key: u.proto.max_upload_size_mb for u in at.get("file_uploader")})
    expected = {"aelib.data_upload", "aelib.ckpt_upload", "aelib.a_up_train", "aelib.a_up_test",
                "aelib.a_up_labels", "aelib.l_a_up", "aelib.l_b_up"}
    assert expected <= set(seen), expected - set(seen)
    assert set(seen.values()) == {limit_mb}, seen  # no widget raises (or drops) the server's limit


def test_uploaders_take_only_their_file_types(env, tmp_path, never_torch_load):
    """The browser's file dialog offers only these suffixes; a client that sends another anyway is
    stopped by Streamlit's own check before the app sees the file (AppTest shows that refusal as an
    exception element: it is Streamlit's, raised before any aelib code runs). The checkpoint
    uploader also takes PyTorch's pickle suffixes, to say in a sentence why they are refused (the
    browser's own refusal only said "files are not allowed"), without reading them."""
    at = new_app()
    at.sidebar.selectbox(key="aelib.dataset").set_value("Upload images").run()
    types = {u.key: sorted(u.proto.type) for u in at.get("file_uploader")}
    assert types == {"aelib.data_upload": [".jpeg", ".jpg", ".npy", ".npz", ".png", ".zip"],
                     "aelib.ckpt_upload": [".bin", ".ckpt", ".pkl", ".pt", ".pth", ".safetensors"]}, types
    marker = tmp_path / "pwned"
    for name in ("evil.pt", "evil.pth", "evil.pkl", "random.ckpt"):
        raw = os.urandom(256) if name == "random.ckpt" else _torch_pickle(marker)
        at = _upload_ckpt(new_app(), name, raw)
        msg = _one_clear_error(at, name)
        assert ".safetensors" in msg and "run code" in msg and msg.count(name) == 1, msg
        _no_upload_offered(at)
        _still_works(at, msg)
    at = _upload_data(new_app(), "evil.pkl", _pickled_npy(marker))
    assert "Invalid file extension" in texts(at.exception)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------
# Uploaded checkpoints: safetensors + aelib metadata only, never unpickled


def _fcn(latent: int = 4):
    return build(get_config("fcn", (1, 28, 28), latent=latent), seed=0)


def _ckpt(**meta_changes) -> bytes:
    """fcn latent-4 weights with their metadata, changed by ``meta_changes``."""
    model = _fcn()
    meta = checkpoints.make_metadata(model, name="up")
    meta.update(meta_changes)
    return checkpoints.to_bytes(model, meta)


def _with_model(**changes) -> dict:
    return {**_fcn().config.to_dict(), **changes}


def _torch_pickle(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save({"encoder.0.weight": torch.zeros(2), "payload": _Mkdir(marker)}, buf)
    return buf.getvalue()


def _upload_ckpt(at: AppTest, name: str, raw: bytes) -> AppTest:
    at.sidebar.file_uploader(key="aelib.ckpt_upload").upload(name, raw).run()
    return at


def _no_upload_offered(at: AppTest) -> None:
    assert not any("upload" in o for o in at.sidebar.multiselect(key="aelib.models").options)


@pytest.mark.parametrize("kind", ["torch.save", "pickle-5", "pickle-2", "pickle-0"])
def test_pickled_checkpoint_is_refused_without_unpickling(env, tmp_path, never_torch_load, kind):
    """A .pt / .pth renamed to .safetensors (the uploader takes no other suffix; see the next test)."""
    marker = tmp_path / "pwned"
    raw = _torch_pickle(marker) if kind == "torch.save" else pickle.dumps(_Mkdir(marker),
                                                                          protocol=int(kind[-1]))
    at = _upload_ckpt(new_app(), "evil.safetensors", raw)
    msg = _one_clear_error(at, "evil.safetensors")
    assert "safetensors" in msg
    assert not marker.exists(), "the checkpoint was unpickled"
    _no_upload_offered(at)
    _still_works(at, msg)
    if kind != "torch.save":  # torch.load is patched away here; the zip's data.pkl is the same kind of pickle
        _assert_payload_is_live(lambda: pickle.loads(raw), marker)


BAD_CHECKPOINTS = {  # id: words the message must contain
    "family-mismatch": "do not match", "shape-mismatch": "shape", "unknown-family": "family",
    "unknown-key": "unknown", "model-not-object": "config", "not-aelib-format": "aelib metadata",
    "no-metadata": "aelib metadata", "truncated": "not a valid safetensors",
    "huge-header-length": "not a valid safetensors", "nan-weights": "NaN",
}


def _nan_ckpt() -> bytes:
    model = _fcn()
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    return checkpoints.to_bytes(model, checkpoints.make_metadata(model))


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_checkpoint_with_mismatched_metadata_gives_one_sentence(env, never_torch_load, case):
    words = BAD_CHECKPOINTS[case]
    at = _upload_ckpt(new_app(), f"{case}.safetensors", _bad_ckpt_bytes(case))
    msg = _one_clear_error(at, f"{case}.safetensors")
    assert words.lower() in msg.lower(), msg
    _no_upload_offered(at)
    _still_works(at, msg)


def _bad_ckpt_bytes(case: str) -> bytes:
    """Bytes of a BAD_CHECKPOINTS case: fcn latent-4 weights with the case's metadata."""
    overrides = {
        "family-mismatch": {"model": _with_model(family="conv", hidden=[16, 32])},
        "shape-mismatch": {"model": _with_model(latent=8)},
        "unknown-family": {"model": _with_model(family="transformer")},
        "unknown-key": {"model": _with_model(exec="print(1)")},
        "model-not-object": {"model": "fcn"},
        "not-aelib-format": {"format": "something-else"},
    }
    if case in overrides:
        return _ckpt(**overrides[case])
    if case == "no-metadata":
        return st_save({k: v.contiguous() for k, v in _fcn().state_dict().items()})
    if case == "truncated":
        return _ckpt()[:3000]
    if case == "huge-header-length":
        return (2**62).to_bytes(8, "little") + b"{}"
    if case == "nan-weights":
        return _nan_ckpt()
    raise KeyError(case)


WRONG_TYPES = {"dataset-string": {"dataset": "MNIST"}, "train-list": {"train": [1]},
               "extra-list": {"extra": [1, 2]}, "normal-classes-text": {"dataset": {"normal_classes": "ab"}}}


@pytest.mark.parametrize("case", list(WRONG_TYPES))
def test_checkpoint_metadata_of_the_wrong_type_gives_one_sentence(env, case):
    at = _upload_ckpt(new_app(), "odd.safetensors", _ckpt(**WRONG_TYPES[case]))
    _still_works(at, _one_clear_error(at, "odd.safetensors"))


@pytest.mark.parametrize("sections", [*WRONG_TYPES.values(), {"extra": {"normal_classes": [1.5, "x"]}},
                                      {"train": {"noise": ["a"], "noise_level": "high"}},
                                      {"metrics": [1]}, {"dataset": {"key": 7}}])
def test_metadata_accessors_treat_malformed_sections_as_missing(sections):
    """Whatever gets past checkpoint loading, the sidebar's accessors never raise on odd sections."""
    meta = {**checkpoints.make_metadata(_fcn()), **sections}
    m = choices.ModelChoice("sha256:x", "x", "upload", meta, lambda: None)
    assert m.data.key in ("", "mnist")
    assert m.data.normal_classes is None
    kind, level = m.noise
    assert kind is None and level == 0.0
    assert checkpoints.describe(meta).startswith("fcn")
    assert checkpoints.recorded_mse(meta) is None


def test_checkpoint_declaring_a_giant_model_is_refused_before_allocating(env):
    raw = _ckpt(model=_with_model(in_shape=[3, 1024, 1024], hidden=[100_000]))
    at = new_app()
    with _address_space_ceiling():
        _upload_ckpt(at, "giant.safetensors", raw)
    _still_works(at, _one_clear_error(at, "giant.safetensors"))


def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    pytest.skip("no /proc/self/status")


@contextlib.contextmanager
def _address_space_ceiling(extra: int = 4 * 2**30):
    """Cap this process's address space at ``extra`` bytes above what it maps now, so a huge allocation
    fails at once, whatever the machine's overcommit policy, instead of touching memory."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    ceiling = _vm_size() + extra
    resource.setrlimit(resource.RLIMIT_AS, (ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling),
                                            hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# ------------------------------------------------------------------------------------------------
# Server-side paths


def test_no_page_offers_a_server_path_by_default(env):
    for setting in (None, "0"):
        if setting is not None:
            env.setenv("AELIB_ALLOW_LOCAL_PATHS", setting)
        at = new_app()
        assert sidebar.LOCAL not in at.sidebar.selectbox(key="aelib.dataset").options
        at.sidebar.selectbox(key="aelib.dataset").set_value("Upload images").run()
        for page in PAGES:
            _goto(at, page)
            for box in at.text_input:
                assert box.key != "aelib.local_path", page
                assert "path" not in str(box.label).lower(), (page, box.label)


@pytest.fixture
def local_root(env, tmp_path) -> dict[str, Path]:
    root = tmp_path / "root"
    (root / "imgs").mkdir(parents=True)
    np.save(root / "faces.npy", np.zeros((30, 8, 8, 3), dtype=np.uint8))
    outside = tmp_path / "outside"
    outside.mkdir()
    np.save(outside / "secret.npy", np.zeros((30, 8, 8), dtype=np.uint8))
    (outside / "secret.png").write_bytes(_png((8, 8)))
    (root / "link.npy").symlink_to(outside / "secret.npy")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    (root / "imgs" / "own.png").write_bytes(_png((8, 8)))
    env.setenv("AELIB_ALLOW_LOCAL_PATHS", "1")
    env.setenv("AELIB_LOCAL_ROOT", str(root))
    return {"root": root, "outside": outside}


def _type_path(at: AppTest, text: str) -> AppTest:
    at.sidebar.text_input(key="aelib.local_path").set_value(text).run()
    return at


def test_local_paths_outside_the_root_are_refused(local_root):
    at = new_app()
    at.sidebar.selectbox(key="aelib.dataset").set_value(sidebar.LOCAL).run()
    outside = local_root["outside"]
    for bad in ("../../etc/passwd", "/etc/passwd", str(outside / "secret.npy"), "../outside/secret.npy",
                "link.npy", "linkdir/secret.npy", "linkdir", "imgs/../../outside", "~"):
        msg = _one_clear_error(_type_path(at, bad))
        assert "outside the allowed folder" in msg, (bad, msg)
        assert "local path" not in texts(at.sidebar.caption), bad
    msg = _one_clear_error(_type_path(at, "missing.npy"))
    assert "No file or folder" in msg
    _type_path(at, "faces.npy")
    assert not at.exception and not at.error, texts(at.error)
    assert "3x8x8" in texts(at.sidebar.caption)
    _type_path(at, "imgs")
    assert not at.error and "1x8x8" in texts(at.sidebar.caption)
    _still_works(at)


def test_an_image_symlink_inside_an_allowed_folder_cannot_reach_out(local_root):
    (local_root["root"] / "imgs" / "zz-link.png").symlink_to(local_root["outside"] / "secret.png")
    at = new_app()
    at.sidebar.selectbox(key="aelib.dataset").set_value(sidebar.LOCAL).run()
    msg = _one_clear_error(_type_path(at, "imgs"))
    assert "outside the allowed folder" in msg


# ------------------------------------------------------------------------------------------------
# Sessions and shared caches


def test_one_sessions_uploads_and_models_are_invisible_to_another(env):
    a, b = new_app(), new_app()
    model = _fcn(latent=3)
    _upload_ckpt(a, "mine.safetensors", checkpoints.to_bytes(model, checkpoints.make_metadata(model)))
    assert any("mine.safetensors" in o for o in a.sidebar.multiselect(key="aelib.models").options)
    _goto(a, "training")
    a.number_input(key="aelib.t_subset_mnist").set_value(300)
    a.number_input(key="aelib.t_epochs_fcn").set_value(1)
    a.button(key="aelib.t_start").click().run()
    run = list(a.session_state["aelib.runs"].values())[-1]
    assert get_manager().wait(run, 60) and run.status == "done"
    a.run()
    assert f"run:{run.id}" in a.sidebar.multiselect(key="aelib.models").value
    _upload_data(a, "private.npy", _npy(_rng_u8((25, 28, 28))))
    assert "private.npy" in texts(a.sidebar.caption)

    for page in PAGES:
        _goto(b, page)
        assert not b.exception
        options = b.sidebar.multiselect(key="aelib.models").options  # labels
        assert not any("mine.safetensors" in o or "upload" in o or "trained here" in o for o in options), \
            options
        assert f"run:{run.id}" not in b.sidebar.multiselect(key="aelib.models").value
        assert b.sidebar.selectbox(key="aelib.dataset").value == "MNIST"
        assert "private.npy" not in texts(b.sidebar.caption)
    for key in ("aelib.runs", "aelib.uploads", "aelib.model_uploads", "aelib.upload_test"):
        assert key not in b.session_state or not b.session_state[key], key
    _goto(b, "training")
    assert "Runs you start appear here" in texts(b.caption)


def _cached_functions(path: Path) -> dict[str, dict]:
    """{function name: decorator keywords} for every st.cache_data / st.cache_resource in ``path``."""
    found = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for dec in node.decorator_list:
            target = dec.func if isinstance(dec, ast.Call) else dec
            if isinstance(target, ast.Attribute) and target.attr in ("cache_data", "cache_resource"):
                kw = {k.arg: ast.literal_eval(k.value) for k in getattr(dec, "keywords", [])
                      if isinstance(k.value, ast.Constant)}
                found[f"{path.name}:{node.name}"] = {"kind": target.attr, "args": node.args, **kw}
    return found


def test_every_shared_cache_is_bounded_and_content_keyed():
    files = [ROOT / "streamlit_app.py", *sorted((ROOT / "pages").glob("*.py")),
             *sorted((ROOT / "aelib").rglob("*.py"))]
    caches = {}
    for path in files:
        caches.update(_cached_functions(path))
    assert len([k for k in caches if k.startswith("compute.py:")]) >= 10, caches.keys()
    for name, info in caches.items():
        bound = info.get("max_entries")
        assert isinstance(bound, int) and 1 <= bound <= 256, f"{name}: shared cache without max_entries"
        # An argument Streamlit does not hash (leading _) must come with one it does that names its content.
        params = [a.arg for a in info["args"].args]
        unhashed = [p for p in params if p.startswith("_")]
        keys = [p for p in params if not p.startswith("_") and (p.endswith("key") or p in ("sha", "path"))]
        assert len(keys) >= min(1, len(unhashed)), f"{name}: unhashed {unhashed} without a content key"
        module = {"compute.py": compute, "sources.py": sources, "choices.py": choices}.get(name.split(":")[0])
        if module is not None:  # the decorated objects carry the same bound at run time
            fn = getattr(module, name.split(":", 1)[1])
            assert fn._info.max_entries == bound, name


# ------------------------------------------------------------------------------------------------
# Training stopped with its session


def _train_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("aelib-train-") and t.is_alive()]


def test_a_cancelled_sessions_run_leaves_nothing_half_done(env, folders):
    before = _listing(folders["ckpt"])
    at = _goto(new_app(), "training")
    at.number_input(key="aelib.t_subset_mnist").set_value(500)
    at.number_input(key="aelib.t_epochs_fcn").set_value(400)
    at.button(key="aelib.t_start").click().run()
    run = list(at.session_state["aelib.runs"].values())[-1]
    deadline = time.monotonic() + 30
    while not run.epochs:
        assert time.monotonic() < deadline, run.status
        time.sleep(0.05)
    assert run.status == "running"
    mgr = get_manager()
    assert mgr.cancel_session(run.session_id) >= 1  # what the worker does when the tab is gone
    assert mgr.wait(run, 20), run.status
    assert run.status == "stopped" and not run.active and run.message == "session ended"
    deadline = time.monotonic() + 10
    while _train_threads():
        assert time.monotonic() < deadline, _train_threads()
        time.sleep(0.05)
    assert mgr.running_count() == 0 and run not in mgr.runs()  # dropped, not stuck
    assert run.model is None and run.train_images is None  # its memory is freed
    assert _listing(folders["ckpt"]) == before  # no checkpoint, no temp file
    at.run()
    assert not at.exception
    keys = {b.key for b in at.sidebar.button} | {b.key for b in at.button}
    assert "aelib.sidebar_stop" not in keys and "aelib.t_stop" not in keys
    assert [b.label for b in at.button if b.key == "aelib.t_start"] == ["Start training"]  # not "Queue run"
    assert not any("trained here" in o for o in at.sidebar.multiselect(key="aelib.models").options)
    # The next run starts and finishes cleanly.
    at.number_input(key="aelib.t_epochs_fcn").set_value(1).run()
    at.button(key="aelib.t_start").click().run()
    nxt = list(at.session_state["aelib.runs"].values())[-1]
    assert nxt is not run and mgr.wait(nxt, 60) and nxt.status == "done", (nxt.status, nxt.message)
    at.run()
    assert f"run:{nxt.id}" in at.sidebar.multiselect(key="aelib.models").value


# ------------------------------------------------------------------------------------------------
# The upload limit in a real browser (the only place it is enforced: the browser and the server)


@pytest.mark.browser
def test_a_file_over_the_upload_limit_is_refused_in_the_browser(tmp_path, folders):
    sync_playwright = need_playwright()
    limit_mb = _configured_upload_limit_mb()
    big = tmp_path / "big.npy"
    with open(big, "wb") as fh:  # sparse: costs no disk
        fh.write(_npy_header_only((limit_mb * MiB // 784 + 10, 28, 28)))
        fh.truncate(limit_mb * MiB + MiB)
    with streamlit_server(folders["data"], folders["ckpt"], tmp_path / "streamlit.log") as url:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            try:
                page = browser.new_page()
                page.goto(url)
                page.wait_for_selector('[data-testid="stMain"] h1', timeout=60_000)
                sidebar = page.locator('[data-testid="stSidebar"]')
                sidebar.locator('[data-testid="stSelectbox"]').first.click()
                page.get_by_role("option", name="Upload images").click()
                # The image uploader (not the checkpoint one, also in the sidebar): labelled "Images (...".
                uploader = sidebar.locator('[data-testid="stFileUploader"]').filter(has_text="Images (")
                uploader.locator('input[type="file"]').wait_for(state="attached", timeout=30_000)
                uploader.locator('input[type="file"]').set_input_files(str(big))
                refusal = f"File must be {limit_mb:.1f}MB or smaller"
                alert = uploader.get_by_role("alert").filter(has_text=refusal)
                alert.first.wait_for(state="attached", timeout=30_000)  # the widget's own message
                assert page.locator('[data-testid="stException"]').count() == 0
                page.goto(f"{url}/training")
                page.wait_for_selector('[data-testid="stMain"] h1', timeout=60_000)
                assert page.locator('[data-testid="stException"]').count() == 0
            finally:
                browser.close()


def test_json_sidecar_is_not_needed_for_uploads(env):
    """Only the .safetensors file is uploaded; its header carries the metadata (no .json, no code)."""
    model = _fcn(latent=5)
    raw = checkpoints.to_bytes(model, checkpoints.make_metadata(model, name="solo"))
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    assert json.loads(header["__metadata__"][checkpoints.META_KEY])["format"] == checkpoints.FORMAT
    at = _upload_ckpt(new_app(), "solo.safetensors", raw)
    assert not at.exception and not at.error
    assert any("solo.safetensors" in o for o in at.sidebar.multiselect(key="aelib.models").options)


# ------------------------------------------------------------------------------------------------
# Model picks and tiny datasets


def test_model_picks_survive_a_dataset_without_compatible_models(env):
    at = new_app()
    model = _fcn(latent=3)
    _upload_ckpt(at, "mine.safetensors", checkpoints.to_bytes(model, checkpoints.make_metadata(model)))
    box = at.sidebar.multiselect(key="aelib.models")
    box.set_value([next(o for o in box.options if "mine.safetensors" in o)]).run()
    picked = list(at.sidebar.multiselect(key="aelib.models").value)
    assert len(picked) == 1
    _upload_data(at, "tiny.npy", _npy(np.zeros((3, 5, 5), np.uint8)))  # no model takes 1x5x5
    assert not at.exception and "No model for 1x5x5" in texts(at.sidebar.info)
    at.sidebar.selectbox(key="aelib.dataset").set_value("MNIST").run()
    assert list(at.sidebar.multiselect(key="aelib.models").value) == picked


def test_latent_map_of_a_one_image_dataset_is_an_info_not_an_error(env):
    at = _upload_data(new_app(), "one.npy", _npy(np.full((1, 8, 8), 7, np.uint8)))
    model = build(get_config("fcn", (1, 8, 8), latent=2), seed=0)
    _upload_ckpt(at, "small.safetensors", checkpoints.to_bytes(model, checkpoints.make_metadata(model)))
    _goto(at, "latent")
    assert not at.exception and not at.error, texts(at.error)
    assert "at least 2 test images" in texts(at.info), texts(at.info)


def test_a_refused_upload_leaves_the_other_uploaders_and_says_only_its_own_sentence(env):
    """Anomaly page, uploaded sets: a bad normal set hid the test and label uploaders (the page
    stopped at its error), and a bad test file's sentence outlived the file."""
    at = _goto(new_app(), "anomaly")
    at.radio(key="aelib.a_mode").set_value("upload").run()
    at.file_uploader(key="aelib.a_up_test").upload("text.npy", b"just some text\n").run()
    at.file_uploader(key="aelib.a_up_train").upload("flat.npy", _npy(_rng_u8((5, 7)))).run()
    assert not at.exception
    errors = texts(at.error)
    assert len(at.error) == 2 and "'text.npy'" in errors and "'flat.npy'" in errors, errors
    keys = {u.key for u in at.get("file_uploader")}
    assert {"aelib.a_up_train", "aelib.a_up_test", "aelib.a_up_labels"} <= keys, keys
    at.file_uploader(key="aelib.a_up_train").clear().run()
    assert len(at.error) == 1 and "'text.npy'" in texts(at.error), texts(at.error)
    at.file_uploader(key="aelib.a_up_test").clear().run()
    assert not at.error and not at.exception, texts(at.error)
    at.file_uploader(key="aelib.a_up_test").upload("test.npy", _npy(_rng_u8((30, 28, 28)))).run()
    assert not at.error and not at.exception, texts(at.error)


def test_a_page_without_data_says_what_the_sidebar_needs(env):
    at = new_app()
    at.sidebar.selectbox(key="aelib.dataset").set_value("Upload images").run()
    assert "Upload images in the sidebar first" in texts(at.info), texts(at.info)  # the Overview
    _goto(at, "training")
    assert "Upload images in the sidebar first" in texts(at.info), texts(at.info)
    _upload_data(at, "junk.npy", b"\x93NUMPY\x01\x00garbage")
    _one_clear_error(at, "junk.npy")
    assert "Upload images in the sidebar first" in texts(at.info), texts(at.info)
    assert "Pick a dataset" not in texts(at.info)
