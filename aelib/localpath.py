"""Server-side paths typed by a user, checked before anything opens them.

Only regular files and folders are ever read: a named pipe would block the reader forever, a
device or socket is no data set. Paths with a NUL byte, over-long names or symlink loops are
refused with one sentence instead of an operating-system error. :func:`resolve_local_path`
also keeps a path inside an allowed root (symlinks resolved first); :func:`check_source` does
the same checks without a root, for the command line.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import DataError

MAX_PATH_CHARS = 1024
MAX_NAME_BYTES = 255  # one path component, as Linux and macOS file systems allow


def _shown(text: str, limit: int = 80) -> str:
    """The user's text for a message: control characters escaped, long text cut."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_text(text: str) -> str:
    if not isinstance(text, str):
        raise DataError("A path must be text.")
    text = text.strip()
    if not text:
        raise DataError("Type the path of a .npy/.npz file, a .zip or a folder of images.")
    if "\x00" in text:
        raise DataError("A path cannot contain a NUL character.")
    if len(text) > MAX_PATH_CHARS:
        raise DataError(f"That path is {len(text):,} characters long; at most {MAX_PATH_CHARS:,} "
                        "are allowed.")
    if any(len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES for part in text.split("/")):
        raise DataError(f"'{_shown(text)}' has a file or folder name longer than {MAX_NAME_BYTES} bytes.")
    return text


def _checked_kind(p: Path, shown: str) -> Path:
    """``p`` if it is an existing regular file or folder (symlinks followed), else one sentence."""
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"No file or folder at '{shown}'.") from None
    except (OSError, ValueError, RuntimeError):
        raise DataError(f"'{shown}' cannot be opened (a symlink loop, or a path the system "
                        "refuses).") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise DataError(f"'{shown}' is not a regular file or folder (a pipe, socket or device), "
                        "so it is not read.")
    if not os.access(p, os.R_OK):
        raise DataError(f"'{shown}' cannot be read (permission denied).")
    return p


def resolve_local_path(text: str, root: str | os.PathLike) -> Path:
    """A user-typed server path, resolved (symlinks too) and refused unless it is a regular file or
    folder inside ``root``. Raises :class:`~aelib.errors.DataError` with one sentence."""
    text = _check_text(text)
    shown = _shown(text)
    try:
        base = Path(root).resolve()
        p = Path(text).expanduser()
        p = (p if p.is_absolute() else base / p).resolve()
    except (OSError, ValueError, RuntimeError):
        raise DataError(f"'{shown}' cannot be followed (a symlink loop, or a path the system refuses).") \
            from None
    if not p.is_relative_to(base):
        raise DataError(f"'{shown}' is outside the allowed folder; only paths inside it can be read.")
    return _checked_kind(p, shown)


def check_source(path: str | os.PathLike) -> Path:
    """The same checks as :func:`resolve_local_path` without a root (the command line's paths)."""
    text = _check_text(os.fspath(path))
    shown = _shown(text)
    try:
        p = Path(text).expanduser()
    except RuntimeError:  # "~user" of an unknown user
        raise DataError(f"No file or folder at '{shown}'.") from None
    return _checked_kind(p, shown)
