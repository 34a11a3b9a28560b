"""Deployment switches: the environment first, then ``.streamlit/secrets.toml`` (Community Cloud)."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from .. import checkpoints
from ..data import default_data_root


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
    """``AELIB_READONLY=1``: nothing is written to or deleted from the checkpoints folder."""
    return _flag("AELIB_READONLY", "readonly")


def checkpoint_dir() -> Path:
    """The shipped checkpoints (read-only to the page) and, below them, what users save."""
    raw = _setting("AELIB_CHECKPOINT_DIR", "checkpoint_dir")
    return Path(raw).expanduser() if raw else checkpoints.default_dir()


def saved_dir() -> Path:
    """Where the page saves runs: a sub-folder, so a save never mixes with the shipped models."""
    return checkpoint_dir() / "saved"


def data_root() -> Path:
    return default_data_root()


def download_allowed() -> bool:
    return _setting("AELIB_DOWNLOAD", "download").lower() not in ("0", "false", "no", "off")


def ui_threads() -> int:
    """Torch threads for the UI's own inference (``AELIB_UI_THREADS``, default 1): on a small server
    that also trains, more OpenMP threads than cores spin against each other."""
    raw = os.environ.get("AELIB_UI_THREADS", "").strip()
    return max(1, int(raw)) if raw.isdigit() else 1
