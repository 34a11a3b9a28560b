"""Property tests: valid checkpoints and image files, mutated at random, are loaded or refused cleanly.

Whatever hypothesis does to the bytes (flipped bytes, truncation, edited JSON header fields, dtypes,
shapes and offsets, lying ``.npy`` headers), loading gives either a usable result or one
:class:`~aelib.errors.AelibError`: never another exception, never more than a couple of seconds,
never a large allocation (the address space is capped while the test runs, so one would fail
loudly), and never a file written (the test runs in an empty folder and checks it stays empty).
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from aelib import checkpoints, data
from aelib.errors import AelibError
from aelib.models import build, get_config, reconstruct

CASES = 1000  # per test; the file runs in about 15 s on one core
SETTINGS = settings(max_examples=CASES, deadline=2000, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    pytest.skip("no /proc/self/status")


@pytest.fixture
def bounded(tmp_path, monkeypatch):
    """An empty working folder that must stay empty, and an address-space ceiling 2 GB above now."""
    monkeypatch.chdir(tmp_path)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    ceiling = _vm_size() + 2 * 2**30
    resource.setrlimit(resource.RLIMIT_AS, (ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling),
                                            hard))
    try:
        yield tmp_path
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert list(tmp_path.iterdir()) == [], "loading wrote a file"


# ------------------------------------------------------------------------------------------------
# Checkpoints


def _seeds() -> list[bytes]:
    out = []
    for family, latent in (("fcn", 3), ("conv", 4), ("vae", None)):
        model = build(get_config(family, (1, 8, 8), latent=latent) if latent else
                      get_config(family, (1, 8, 8)).replace(latent=None, hidden=(4, 8)), seed=0)
        out.append(checkpoints.to_bytes(model, checkpoints.make_metadata(model, name=family),
                                        dtype=torch.float16 if family == "conv" else None))
    return out


CKPT_SEEDS = _seeds()

sizes = st.sampled_from([0, 1, 2, 4, 8, 2**16, 2**31, 2**63, 10**30, -1, 4.0, 4.5, 1e300, float("inf"),
                          float("nan"), True, False, "4"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=8)
    | sizes,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=12)
dtypes = st.sampled_from(["F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F4",
                          "I64", "U8", "BOOL", "C64", "", "f32"]) | st.text(max_size=6)
model_fields = st.sampled_from(["family", "in_shape", "latent", "hidden", "output_range", "encoder_act",
                                "latent_act", "decoder_act", "head_act", "init", "preset", "bogus"])
meta_fields = st.sampled_from(["format", "model", "dataset", "train", "history", "metrics", "name",
                               "normalisation", "extra", "versions"])


def _split(raw: bytes) -> tuple[dict, bytes]:
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _join(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + body


@st.composite
def mutated_checkpoints(draw) -> bytes:
    """One layer of the file attacked per case, so each mutation reaches the code that reads it: the
    model config or other metadata, the tensor table, the weight values, or the raw bytes."""
    raw = draw(st.sampled_from(CKPT_SEEDS))
    header, body = _split(raw)
    meta = json.loads(header["__metadata__"]["aelib"])
    names = sorted(k for k in header if k != "__metadata__")
    layer = draw(st.sampled_from(["config", "config", "config", "metadata", "table", "values", "bytes"]))
    for _ in range(draw(st.integers(1, 3))):
        if layer == "config":
            field = draw(model_fields)
            meta["model"][field] = draw(st.lists(sizes, min_size=1, max_size=13) | json_values
                                        if field in ("in_shape", "hidden") else sizes | json_values)
        elif layer == "metadata":
            meta[draw(meta_fields)] = draw(json_values)
        elif layer == "table":
            entry = header[draw(st.sampled_from(names))]
            what = draw(st.sampled_from(["dtype", "shape", "data_offsets", "drop"]))
            if what == "dtype":
                entry["dtype"] = draw(dtypes)
            elif what == "shape":
                entry["shape"] = draw(st.lists(st.integers(-2, 2**40), max_size=5))
            elif what == "data_offsets":
                entry["data_offsets"] = draw(st.lists(st.integers(-2, 2**33), min_size=2, max_size=2))
            else:
                entry.clear()
        elif layer == "values":  # every byte of one tensor set to one value: NaN, inf, huge or plain
            a, b = header[draw(st.sampled_from(names))]["data_offsets"]
            body = body[:a] + bytes([draw(st.integers(0, 255))]) * (b - a) + body[b:]
    header["__metadata__"] = {"aelib": json.dumps(meta)}
    out = bytearray(_join(header, body))
    if layer == "bytes":
        for _ in range(draw(st.integers(1, 6))):
            i = draw(st.integers(0, len(out) - 1))
            out[i] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            out = out[:draw(st.integers(0, len(out)))]
    return bytes(out)


@SETTINGS
@given(raw=mutated_checkpoints())
def test_mutated_checkpoints_load_or_give_one_sentence(bounded, raw):
    try:
        ck = checkpoints.load_bytes(raw, "fuzz.safetensors")
    except AelibError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 600, str(exc)
        return
    cfg = ck.model.config
    x = torch.rand(2, *cfg.in_shape) * (cfg.value_range[1] - cfg.value_range[0]) + cfg.value_range[0]
    with torch.no_grad():
        assert torch.isfinite(reconstruct(ck.model, x)).all()  # what loads is usable


# ------------------------------------------------------------------------------------------------
# Image files


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _zip(members: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    return buf.getvalue()


_rng = np.random.default_rng(0)
_imgs = _rng.integers(0, 256, (6, 8, 8), dtype=np.uint8)
IMAGE_SEEDS = {
    "x.npy": _npy(_imgs),
    "rgb.npy": _npy(_rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)),
    "f.npy": _npy(_imgs.astype(np.float32) / 255),
    "x.npz": _zip({"x.npy": _npy(_imgs), "y.npy": _npy(np.arange(6))}),
    "imgs.zip": _zip({f"d/{i}.png": _png(a) for i, a in enumerate(_imgs[:3])}),
    "stored.zip": _zip({f"{i}.png": _png(a) for i, a in enumerate(_imgs[:2])}, zipfile.ZIP_STORED),
    "one.png": _png(_imgs[0]),
}
npy_shapes = st.lists(st.integers(-3, 2**45), max_size=5).map(tuple)
npy_descrs = st.sampled_from(["|u1", "<f4", "<f8", "|b1", "<i8", "|O", "<U3", "V8", "<c8", ">f4"])


@st.composite
def mutated_images(draw) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(IMAGE_SEEDS)))
    raw = bytearray(IMAGE_SEEDS[name])
    if name.endswith(".npy") and draw(st.booleans()):  # a header that lies about shape or type
        header = repr({"descr": draw(npy_descrs), "fortran_order": draw(st.booleans()),
                       "shape": draw(npy_shapes)}).encode()
        header += b" " * (-(len(header) + 11) % 64) + b"\n"
        body_start = 10 + int.from_bytes(raw[8:10], "little")
        raw = bytearray(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + raw[body_start:])
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(raw) - 1))
        raw[i] = draw(st.integers(0, 255))
    if draw(st.booleans()) and draw(st.booleans()):
        raw = raw[:draw(st.integers(0, len(raw)))]
    if draw(st.booleans()) and draw(st.booleans()):
        name = draw(st.sampled_from(["noext", "x.png", "x.zip", "x.npy", "x.npz", "x.jpg"]))
    return name, bytes(raw)


@SETTINGS
@given(item=mutated_images())
def test_mutated_image_files_load_or_give_one_sentence(bounded, item):
    name, raw = item
    f = io.BytesIO(raw)
    f.name = name
    try:
        x = data.load_images(f)
    except AelibError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 600, str(exc)
        return
    assert x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] in (1, 3)


def test_the_bounds_are_real(bounded):
    """The fixture's ceiling does refuse a large allocation, so the tests above would notice one."""
    with contextlib.suppress(MemoryError, RuntimeError):
        torch.empty(4 * 2**30, dtype=torch.uint8).fill_(1)
        raise AssertionError("a 4 GB allocation succeeded under the ceiling")
