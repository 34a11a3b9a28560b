"""Helpers shared by the dashboard tests: AppTest runs, a real `streamlit run` server, Chromium."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from aelib.worker import get_manager

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "streamlit_app.py")
PAGES = ["home", "training", "reconstruction", "latent", "anomaly", "compare"]
TIMEOUT = 60
CHROMIUM = Path("/usr/bin/chromium")
# Only 127.0.0.1 is reachable: the app must not need anything from the internet.
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
APP_ENV_VARS = ("AELIB_READONLY", "AELIB_ALLOW_LOCAL_PATHS", "AELIB_LOCAL_ROOT")


# ------------------------------------------------------------------------------------------------
# AppTest


def set_app_env(monkeypatch: pytest.MonkeyPatch, data_root: Path, checkpoint_dir: Path) -> None:
    """Point the app at these folders, downloads off, every optional setting at its default."""
    monkeypatch.setenv("AELIB_DATA_ROOT", str(data_root))
    monkeypatch.setenv("AELIB_DOWNLOAD", "0")
    monkeypatch.setenv("AELIB_CHECKPOINT_DIR", str(checkpoint_dir))
    for var in APP_ENV_VARS:
        monkeypatch.delenv(var, raising=False)


def stop_all_runs() -> None:
    """End every background training run; fails if a training thread outlives 20 s."""
    for run in get_manager().active_runs():
        get_manager().stop(run)
    assert get_manager().shutdown(20)


def new_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def goto(at: AppTest, page: str, check: bool = True) -> AppTest:
    at.switch_page(f"pages/{page}.py").run()
    if check:
        assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)


# ------------------------------------------------------------------------------------------------
# A real server and a real browser


def need_playwright():
    """``sync_playwright``, or skip (fail under AELIB_REQUIRE_BROWSER=1, as in CI) without a browser."""
    missing = []
    if not CHROMIUM.is_file():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("the playwright package (pip install playwright; no `playwright install` needed)")
        sync_playwright = None
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if os.environ.get("AELIB_REQUIRE_BROWSER", "") == "1":
            pytest.fail(reason + " (AELIB_REQUIRE_BROWSER=1)")
        pytest.skip(reason)
    return sync_playwright


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(data_root: Path, checkpoint_dir: Path, log: Path, *, readonly: bool = True,
                     env: dict[str, str] | None = None) -> Iterator[str]:
    """`streamlit run streamlit_app.py` on a free port; yields its URL once healthy.

    Read-only (``AELIB_READONLY=1``) unless ``readonly=False``; ``env`` adds or overrides variables."""
    env = {**{k: v for k, v in os.environ.items() if readonly or k != "AELIB_READONLY"},
           "AELIB_DATA_ROOT": str(data_root), "AELIB_DOWNLOAD": "0",
           "AELIB_CHECKPOINT_DIR": str(checkpoint_dir), **({"AELIB_READONLY": "1"} if readonly else {}),
           **(env or {})}
    # Test workers run side by side (pytest-xdist): another worker's server may take the port
    # between our probe and Streamlit's bind, so a server that exits at start-up gets a new port.
    for attempt in range(3):
        port = _free_port()
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
                 "--server.address", "127.0.0.1", "--server.headless", "true",
                 "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        healthy = False
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    healthy = r.status == 200
            except OSError:
                pass
            if healthy:
                break
            time.sleep(0.3)
        time.sleep(0.2)
        if healthy and proc.poll() is None:  # healthy, and it is our server that answered
            break
        text = log.read_text(errors="replace")
        in_use = "is not available" in text or "already in use" in text  # Streamlit's two servers
        _stop(proc)
        if not in_use or attempt == 2:
            pytest.fail(f"streamlit did not start:\n{text[-3000:]}")
    try:
        yield url
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
