"""A corpus of hostile inputs: checkpoints, archives, paths and command lines, built on the spot.

Each case is something a user could hand aelib (an upload, a typed path, a CLI argument) that once
gave a traceback, a hang, a huge allocation or a silently broken file. ``tests/test_hostile.py``
runs every case; ``python tests/hostile.py`` runs them all and prints tried / held per category.

A case holds when aelib refuses it with one :class:`aelib.errors.AelibError` sentence (the CLI:
exit status 2 and one ``error:`` line), quickly, without a large allocation, and without writing
anything except where the case says so.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import socket
import struct
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save as st_save

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aelib import checkpoints, data  # noqa: E402
from aelib.cli import main as cli_main  # noqa: E402
from aelib.errors import AelibError  # noqa: E402

try:
    from aelib.localpath import resolve_local_path
except ImportError:  # aelib before the library had it: lets this corpus measure the old code too
    from aelib.cache import resolve_local_path
from aelib.models import build, get_config  # noqa: E402

SECONDS = 5.0          # per case; the refusals themselves take well under a second
RSS_GROWTH = 512 * 2**20


@dataclass
class Case:
    category: str
    name: str
    run: Callable[[Path], object]   # raises AelibError (library) or returns the CLI's (rc, out, err)
    cli: bool = False


# ------------------------------------------------------------------------------------------------
# Checkpoints


def _tiny():
    return build(get_config("fcn", (1, 8, 8), latent=2), seed=0)


def _meta(**model_changes) -> dict:
    meta = checkpoints.make_metadata(_tiny(), name="hostile")
    meta["model"].update(model_changes)
    return meta


def _with_meta_text(text: str, state: dict | None = None) -> bytes:
    state = state if state is not None else {k: v.contiguous() for k, v in _tiny().state_dict().items()}
    return st_save(state, metadata={"aelib": text})


def _with_model(**changes) -> bytes:
    return _with_meta_text(json.dumps(_meta(**changes)))


def _deep(n: int) -> bytes:
    base = json.dumps(_meta())[:-1]
    return _with_meta_text(base + ', "extra": ' + "[" * n + "]" * n + "}")


def _retyped(dtype: str) -> bytes:
    """A valid checkpoint whose first tensor claims another dtype in the header."""
    raw = checkpoints.to_bytes(_tiny(), _meta())
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    first = next(k for k in header if k != "__metadata__")
    header[first]["dtype"] = dtype
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + raw[8 + n:]


def _header_len(value: int) -> bytes:
    raw = checkpoints.to_bytes(_tiny(), _meta())
    return value.to_bytes(8, "little") + raw[8:]


def _conv12() -> bytes:
    """408 parameters, twelve stride-2 layers: pads 28x28 inputs to 4096x4096."""
    state = {}
    for part in ("encoder", "decoder"):
        for i in range(12):
            state[f"{part}.{2 * i}.weight"] = torch.full((1, 1, 4, 4), 0.01)
            state[f"{part}.{2 * i}.bias"] = torch.zeros(1)
    meta = _meta()
    meta["model"] = dict(meta["model"], family="conv", in_shape=[1, 28, 28], hidden=[1] * 12, latent=None)
    return _with_meta_text(json.dumps(meta), state)


def _scaled(dtype: torch.dtype, value: float, every: bool) -> bytes:
    state = {k: v.to(dtype).contiguous() for k, v in _tiny().state_dict().items()}
    first = next(iter(state))
    if every:
        state = {k: torch.full_like(v, value) for k, v in state.items()}
    else:
        state[first].view(-1)[0] = value
    return _with_meta_text(json.dumps(_meta()), state)


def _checkpoint_cases() -> dict[str, Callable[[], bytes]]:
    return {
        "metadata nested 100,000 deep": lambda: _deep(100_000),
        "metadata nested 200 deep": lambda: _deep(200),
        "latent 4.0": lambda: _with_model(latent=4.0),
        "latent 4.5": lambda: _with_model(latent=4.5),
        "latent true": lambda: _with_model(latent=True),
        "latent 10**30": lambda: _with_model(latent=10**30),
        "latent as text": lambda: _with_model(latent="2"),
        "hidden [Infinity]": lambda: _with_model(hidden=[float("inf")]),
        "hidden [NaN]": lambda: _with_model(hidden=[float("nan")]),
        "in_shape with Infinity": lambda: _with_model(in_shape=[1, float("inf"), 8]),
        "in_shape 10**400": lambda: _with_meta_text(
            json.dumps(_meta()).replace('"in_shape": [1, 8, 8]', '"in_shape": [1, 1' + "0" * 400 + ', 8]')),
        "hidden [1]*10**5": lambda: _with_model(hidden=[1] * 10**5),
        "hidden [1]*10**6": lambda: _with_model(hidden=[1] * 10**6),
        "hidden (65536,) at 28x28": lambda: _with_model(in_shape=[1, 28, 28], hidden=[65536]),
        "408-parameter conv with 12 stride-2 layers": _conv12,
        "activation given as a list": lambda: _with_model(encoder_act=["relu"]),
        "activation given as an object": lambda: _with_model(decoder_act={"a": 1}),
        "family as a number": lambda: _with_model(family=3),
        "preset as a list": lambda: _with_model(preset=[1]),
        "model config as a list": lambda: _with_meta_text(json.dumps(dict(_meta(), model=[1]))),
        "dtype F4": lambda: _retyped("F4"),
        "dtype F6_E2M3": lambda: _retyped("F6_E2M3"),
        "dtype F8_E8M0": lambda: _retyped("F8_E8M0"),
        "dtype F8_E4M3": lambda: _retyped("F8_E4M3"),
        "dtype F8_E5M2": lambda: _retyped("F8_E5M2"),
        "dtype I64": lambda: _retyped("I64"),
        "dtype as a number": lambda: _retyped(7),
        "float64 weight of 1e300": lambda: _scaled(torch.float64, 1e300, every=False),
        "float32 weights all 1e30": lambda: _scaled(torch.float32, 1e30, every=True),
        "a NaN weight": lambda: _scaled(torch.float32, float("nan"), every=False),
        "an infinite float16 weight": lambda: _scaled(torch.float16, float("inf"), every=False),
        "header length 0": lambda: _header_len(0),
        "header length past the end": lambda: _header_len(2**40),
        "header length 2**64-1": lambda: _header_len(2**64 - 1),
        "metadata is not JSON": lambda: _with_meta_text("{not json"),
        "metadata is a list": lambda: _with_meta_text("[1, 2]"),
        "metadata huge number": lambda: _with_meta_text(json.dumps(_meta())[:-1] + ', "x": 1' + "0" * 5000
                                                        + "}"),
        "no aelib metadata": lambda: st_save({"w": torch.zeros(2)}),
        "pickle protocol 2": lambda: b"\x80\x02" + b"\x00" * 64,
        "zip (a torch.save file)": lambda: b"PK\x03\x04" + b"\x00" * 64,
        "empty file": lambda: b"",
        "truncated": lambda: checkpoints.to_bytes(_tiny(), _meta())[:200],
        "tensor data cut short": lambda: checkpoints.to_bytes(_tiny(), _meta())[:-16],
    }


def _load_checkpoint(raw: bytes, tmp: Path) -> None:
    """Everything the app and the CLI do with a checkpoint: load it, list its folder, read its header."""
    folder = tmp / "ckpts"
    folder.mkdir(exist_ok=True)
    good = folder / "good.safetensors"
    if not good.exists():
        checkpoints.save(good, _tiny(), name="good")
    bad = folder / "bad.safetensors"
    bad.write_bytes(raw)
    listed = [p.name for p, _ in checkpoints.list_checkpoints(folder)]  # never raises
    assert "good.safetensors" in listed, listed  # one hostile file never hides the others
    try:
        checkpoints.read_metadata(bad)
    except AelibError:
        pass
    checkpoints.load_bytes(raw, "bad.safetensors")
    raise AssertionError("loaded")


# ------------------------------------------------------------------------------------------------
# Archives and arrays


def _crafted_zip(entries: int) -> bytes:
    """A zip whose central directory lists ``entries`` entries (one tiny stored file repeated)."""
    name = b"a.png"
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0) + name
    cd_one = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0, 0, 0, 0,
                         0, 0) + name
    cd = cd_one * entries
    n16 = min(entries, 0xFFFF)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n16, n16, len(cd), len(local), 0)
    return local + cd + end


def _npy_header_only(shape: tuple) -> bytes:
    header = repr({"descr": "|u1", "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\x00" * 64


def _png(w: int, h: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (w, h)).save(buf, "PNG")
    return buf.getvalue()


def _png_claiming(w: int, h: int) -> bytes:
    """A PNG whose IHDR claims w x h (a decompression bomb's header)."""
    import zlib

    raw = _png(8, 8)
    ihdr = struct.pack(">2I5B", w, h, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return raw[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + raw[33:]


def _zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    return buf.getvalue()


def _archive_cases() -> dict[str, Callable[[], tuple[str, bytes]]]:
    return {
        "zip listing 100,000 entries": lambda: ("many.zip", _crafted_zip(100_000)),
        "zip listing 1,000,000 entries": lambda: ("many.zip", _crafted_zip(1_000_000)),
        "zip bomb (64 MB of zeros in one member)": lambda: ("bomb.zip",
                                                            _zip_of({"a.png": b"\0" * (2**26 + 1)})),
        "zip of a zip": lambda: ("nest.zip", _zip_of({"inner.zip": _zip_of({"a.png": _png(8, 8)})})),
        "npy declaring 10**12 images": lambda: ("lie.npy", _npy_header_only((10**12, 28, 28))),
        "npy declaring a negative size": lambda: ("neg.npy", _npy_header_only((-1, 28, 28))),
        "npy of objects (pickled)": lambda: ("obj.npy", _npy_object()),
        "npy truncated data": lambda: ("cut.npy", _npy_header_only((100, 28, 28))),
        "png claiming 100,000 x 100,000": lambda: ("bomb.png", _png_claiming(100_000, 100_000)),
        "png truncated": lambda: ("cut.png", _png(8, 8)[:40]),
        "npz with a pickled member": lambda: ("obj.npz", _zip_of({"x.npy": _npy_object()})),
        "zip truncated": lambda: ("cut.zip", _zip_of({"a.png": _png(8, 8)})[:-30]),
    }


def _npy_object() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return buf.getvalue()


def _load_upload(item: tuple[str, bytes], tmp: Path) -> None:
    name, raw = item
    f = io.BytesIO(raw)
    f.name = name
    data.load_images(f)
    raise AssertionError("loaded")


# ------------------------------------------------------------------------------------------------
# Local paths


def _path_setup(tmp: Path) -> Path:
    root = tmp / "root"
    if root.exists():
        return root
    root.mkdir()
    np.save(root / "ok.npy", np.zeros((3, 8, 8), np.uint8))
    (root / "loop1").symlink_to(root / "loop2")
    (root / "loop2").symlink_to(root / "loop1")
    os.mkfifo(root / "pipe.npy")
    (root / "devnull.npy").symlink_to("/dev/null")
    with contextlib.suppress(OSError):
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(root / "sock.npy"))
        s.close()
    return root


def _path_cases() -> dict[str, str]:
    return {
        "NUL byte": "ok\x00.npy",
        "256-character name": "a" * 256 + ".npy",
        "6000-character path": "a/" * 3000,
        "symlink loop": "loop1",
        "inside a symlink loop": "loop1/x.npy",
        "named pipe": "pipe.npy",
        "symlink to a device": "devnull.npy",
        "unix socket": "sock.npy",
        "unknown user's home": "~no-such-user-aelib/x.npy",
        "parent escape": "../../etc/passwd",
        "empty": "   ",
    }


def _open_path(text: str, tmp: Path) -> None:
    root = _path_setup(tmp)
    with _deadline(3):
        p = resolve_local_path(text, root)
        data.load_images(p)
    raise AssertionError("loaded")


def _open_cli_path(text: str, tmp: Path) -> None:
    root = _path_setup(tmp)
    target = text if text.startswith(("/", "~")) else str(root / text)
    with _deadline(3):
        data.load_images(target)
    raise AssertionError("loaded")


@contextlib.contextmanager
def _deadline(seconds: int):
    """A read that blocks (a named pipe) fails the case instead of hanging the suite."""
    import signal

    def boom(*_):
        raise TimeoutError("blocked")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------------------------------------
# Command line


def _cli_setup(tmp: Path) -> Path:
    work = tmp / "cli"
    if work.exists():
        return work
    work.mkdir()
    rng = np.random.default_rng(0)
    np.save(work / "d.npy", rng.integers(0, 256, (64, 8, 8), dtype=np.uint8))
    checkpoints.save(work / "W.safetensors", _tiny(), name="W")
    (work / "afile").write_text("x")
    (work / "adir").mkdir()
    os.mkfifo(work / "pipe")
    (work / "deep.safetensors").write_bytes(_deep(100_000))
    (work / "lat.safetensors").write_bytes(_with_model(latent=4.5))
    (work / "f8.safetensors").write_bytes(_retyped("F8_E4M3"))
    return work


def _absent_gpu() -> str:
    return f"cuda:{torch.cuda.device_count() + 7}" if torch.cuda.is_available() else "cuda:7"


def _cli_cases() -> dict[str, list[str]]:
    t = ["train", "--dataset", "d.npy", "--model", "fcn", "--epochs", "1", "--quiet"]
    e = ["export", "W.safetensors", "--dataset", "d.npy"]
    return {
        "--latent 1000000000": [*t, "--latent", "1000000000"],
        "--threads -1": [*t, "--threads", "-1"],
        "--device foo": [*t, "--device", "foo"],
        "--device cuda:N absent": [*t, "--device", _absent_gpu()],
        "--device cuda on a CPU machine": [*t, "--device",
                                           "cuda" if not torch.cuda.is_available() else "mps:3"],
        "--seed 2**70": [*t, "--seed", str(2**70)],
        "--seed -1": [*t, "--seed", "-1"],
        "--beta nan": [*t, "--beta", "nan"],
        "--lr inf": [*t, "--lr", "inf"],
        "--epochs 0": [*t, "--epochs", "0"],
        "--out into /proc": [*t, "--out", "/proc/aelib-x"],
        "--out under a file": [*t, "--out", "afile/m"],
        "--out an existing folder": [*t, "--out", "adir"],
        "--dataset a named pipe": [*t[:1], "--dataset", "pipe", *t[3:]],
        "--dataset with a NUL": [*t[:1], "--dataset", "d\x00.npy", *t[3:]],
        "export --out /proc/x.csv": [*e, "--out", "/proc/x.csv"],
        "export --out a folder": [*e, "--out", "adir"],
        "export --limit -5": [*e, "--limit", "-5", "--out", "o.csv"],
        "export --limit 0": [*e, "--limit", "0", "--out", "o.csv"],
        "evaluate metadata nested 100,000 deep": ["evaluate", "deep.safetensors", "--dataset", "d.npy"],
        "evaluate latent 4.5": ["evaluate", "lat.safetensors", "--dataset", "d.npy"],
        "evaluate dtype F8_E4M3": ["evaluate", "f8.safetensors", "--dataset", "d.npy"],
        "evaluate a missing file": ["evaluate", "nothing.safetensors", "--dataset", "d.npy"],
    }


def _run_cli(argv: list[str], tmp: Path) -> tuple[int, str, str]:
    work = _cli_setup(tmp)
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(work)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _deadline(30):
            try:
                rc = cli_main(argv)
            except SystemExit as exc:
                rc = exc.code
    finally:
        os.chdir(cwd)
    return rc, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------------------------------------
# The corpus


def corpus() -> list[Case]:
    cases = [Case("checkpoints", k, (lambda tmp, f=f: _load_checkpoint(f(), tmp)))
             for k, f in _checkpoint_cases().items()]
    cases += [Case("archives and arrays", k, (lambda tmp, f=f: _load_upload(f(), tmp)))
              for k, f in _archive_cases().items()]
    cases += [Case("local paths (app, inside a root)", k, (lambda tmp, t=t: _open_path(t, tmp)))
              for k, t in _path_cases().items()]
    cases += [Case("local paths (CLI, no root)", k, (lambda tmp, t=t: _open_cli_path(t, tmp)))
              for k, t in _path_cases().items() if k not in ("parent escape", "empty")]
    cases += [Case("CLI arguments", k, (lambda tmp, a=a: _run_cli(a, tmp)), cli=True)
              for k, a in _cli_cases().items()]
    return cases


def _rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def check(case: Case, tmp: Path) -> str | None:
    """None when the case held, else what went wrong."""
    before, t0 = _rss(), time.perf_counter()
    try:
        result = case.run(tmp)
    except AelibError as exc:
        msg = str(exc)
        if case.cli:
            return f"the CLI raised {type(exc).__name__} instead of exiting"
        if "\n" in msg or "Traceback" in msg or len(msg) > 400:
            return f"not one sentence: {msg!r}"
        result = None
    except BaseException as exc:  # noqa: BLE001 - anything else is exactly what this corpus hunts
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    else:
        if not case.cli:
            return "no error was raised"
    seconds = time.perf_counter() - t0
    if seconds > SECONDS:
        return f"took {seconds:.1f} s"
    if _rss() - before > RSS_GROWTH:
        return f"peak memory grew by {(_rss() - before) / 2**20:.0f} MB"
    if case.cli:
        rc, out, err = result
        lines = [line for line in err.splitlines() if line.strip()]
        if rc != 2 or len(lines) != 1 or not lines[0].startswith("error: "):
            return f"rc {rc}, stderr {err[-300:]!r}"
        if "epoch" in out:
            return "it trained before refusing"
    return None


if __name__ == "__main__":
    import tempfile
    from collections import Counter

    # --skip NAME... leaves cases out: on old code a few of them run for minutes (README "Hardening").
    skip = set(sys.argv[sys.argv.index("--skip") + 1:]) if "--skip" in sys.argv else set()
    torch.set_num_threads(1)
    tried, held = Counter(), Counter()
    with tempfile.TemporaryDirectory() as d:
        for case in corpus():
            if case.name in skip:
                print(f"SKIP   {case.category}: {case.name}")
                continue
            problem = check(case, Path(d))
            tried[case.category] += 1
            held[case.category] += problem is None
            if problem:
                print(f"BROKE  {case.category}: {case.name}: {problem}")
    for cat in tried:
        print(f"{cat:36s} tried {tried[cat]:3d}  held {held[cat]:3d}")
    print(f"{'total':36s} tried {sum(tried.values()):3d}  held {sum(held.values()):3d}")
