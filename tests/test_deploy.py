"""Deployment files: requirements.txt read the same way by pip and uv, and error details kept private.

Community Cloud installs ``requirements.txt`` with uv first and pip as a fallback (README
"Deploying"). The file must parse for both, must not name an extra index (uv's default
``first-index`` strategy would then take every package that index also serves from it alone), and
must resolve from PyPI alone. The resolution test runs uv against PyPI and skips cleanly without
uv or without network.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
REQS = ROOT / "requirements.txt"
PYTHONS = ("3.10", "3.11", "3.12", "3.13")


def _requirement_lines() -> list[str]:
    lines = (line.strip() for line in REQS.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_requirements_name_no_index_and_parse_with_pip():
    lines = _requirement_lines()
    assert not [line for line in lines if line.startswith("-")], "index or other options in requirements.txt"
    req_file = pytest.importorskip("pip._internal.req.req_file")
    from pip._internal.network.session import PipSession

    parsed = [r.requirement for r in req_file.parse_requirements(str(REQS), session=PipSession())]
    assert parsed == lines  # pip reads every line as one requirement, as packaging does below
    for line in parsed:
        Requirement(line)


def _applying(env: dict) -> dict[str, list[Requirement]]:
    out: dict[str, list[Requirement]] = {}
    for line in _requirement_lines():
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            out.setdefault(canonicalize_name(req.name), []).append(req)
    return out


@pytest.mark.parametrize("system,machine", [("Linux", "x86_64"), ("Darwin", "arm64"), ("Windows", "AMD64"),
                                            ("Linux", "aarch64")])
def test_exactly_one_torch_requirement_applies_everywhere(system, machine):
    for py in (*PYTHONS, "3.14"):
        env = dict(default_environment(), platform_system=system, platform_machine=machine, python_version=py,
                   python_full_version=py + ".0")
        reqs = _applying(env)
        assert len(reqs["torch"]) == 1 and len(reqs["torchvision"]) == 1, (system, machine, py)
        cpu_wheel = system == "Linux" and machine == "x86_64" and py in PYTHONS
        for name in ("torch", "torchvision"):
            (req,) = reqs[name]
            if cpu_wheel:  # PyTorch's CPU-only wheel for exactly this Python
                tag = "cp" + py.replace(".", "")
                assert req.url and "/whl/cpu/" in req.url and f"-{tag}-{tag}-" in req.url, req
                assert req.url.endswith("manylinux_2_28_x86_64.whl"), req
            else:
                assert req.url is None, req


def test_requirements_agree_with_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = {canonicalize_name(Requirement(d).name): str(Requirement(d).specifier) for d in project}
    reqs = [Requirement(line) for line in _requirement_lines()]
    assert {canonicalize_name(r.name) for r in reqs} == set(wanted)
    for r in reqs:
        if r.url is None:
            assert str(r.specifier) == wanted[canonicalize_name(r.name)], r
    # The URL wheels of one release: torch and torchvision versions that go together.
    versions = {(r.name, r.url.split("/")[-1].split("-")[1]) for r in reqs if r.url}
    assert {v for n, v in versions if n == "torch"} == {"2.8.0%2Bcpu"}
    assert {v for n, v in versions if n == "torchvision"} == {"0.23.0%2Bcpu"}


def _uv() -> str:
    exe = shutil.which("uv")
    if exe is None:
        try:
            from uv import find_uv_bin
        except ImportError:
            pytest.skip("uv is not installed")
        exe = find_uv_bin()
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
    except OSError:
        pytest.skip("PyPI is not reachable")
    return exe


def _compile(uv: str, path: Path, *args: str) -> str:
    out = subprocess.run([uv, "pip", "compile", str(path), "--no-header", "--no-annotate", *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_uv_resolves_the_whole_file_from_pypi_alone(tmp_path):
    uv = _uv()
    # Off Linux x86_64 the URL lines' markers are false: uv parses them and resolves the rest.
    mac = _compile(uv, REQS, "--python-version", "3.11", "--python-platform", "aarch64-apple-darwin")
    assert "torch==" in mac and "streamlit==" in mac
    # On Cloud's platform the CPU wheels are not reachable from a test, so the same release from
    # PyPI stands in for them: everything else must resolve beside torch 2.8.0 / torchvision 0.23.0.
    text = REQS.read_text()
    for name, version in (("torch", "2.8.0"), ("torchvision", "0.23.0")):
        for py in PYTHONS:
            tag = "cp" + py.replace(".", "")
            line = next(ln for ln in text.splitlines() if ln.startswith(f"{name} @") and f"-{tag}-" in ln)
            text = text.replace(line, f'{name}=={version} ; python_version == "{py}"')
    standin = tmp_path / "requirements.txt"
    standin.write_text(text)
    pins = _compile(uv, standin, "--python-version", "3.12", "--python-platform", "x86_64-manylinux_2_28")
    assert "torch==2.8.0" in pins and "torchvision==0.23.0" in pins and "streamlit==" in pins, pins


def test_a_shared_deployment_shows_no_error_details(monkeypatch):
    """The config hides exception types, messages and tracebacks (server paths) from the page."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    value = config["client"]["showErrorDetails"]
    assert value == "none"
    from streamlit import config as st_config
    from streamlit.testing.v1 import AppTest

    old = st_config.get_option("client.showErrorDetails")
    st_config.set_option("client.showErrorDetails", value)
    try:
        at = AppTest.from_string("open('/srv/secret/server/path.npy')").run()
    finally:
        st_config.set_option("client.showErrorDetails", old)
    (box,) = at.exception
    shown = " ".join([box.message, *box.stack_trace])
    assert "/srv/secret" not in shown and "Traceback" not in shown and "FileNotFoundError" not in shown
