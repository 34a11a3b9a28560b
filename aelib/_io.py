"""Atomic file writes, shared by checkpoints and exports."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

STALE_TMP_S = 15 * 60  # far longer than any write takes, so a live writer's file is never taken


def remove_stale_temps(path: str | os.PathLike, max_age_s: float = STALE_TMP_S) -> int:
    """Remove temp files of killed writes of ``path`` (``.NAME.*.tmp``) older than ``max_age_s``.

    Returns how many were removed. A temp file still being written is fresh, so it stays.
    """
    path = Path(path)
    now, n = time.time(), 0
    with contextlib.suppress(OSError):
        for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            with contextlib.suppress(OSError):
                if tmp.is_file() and not tmp.is_symlink() and now - tmp.stat().st_mtime > max_age_s:
                    tmp.unlink()
                    n += 1
    return n


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs) -> Iterator[IO]:
    """Open a temp file beside ``path``; on success fsync it and rename it over ``path``.

    A crash or an exception at any point leaves either the old file or the new one, never a
    half-written file (the temp file is removed on exceptions; a killed process may leave a
    ``.NAME.*.tmp`` beside it, which nothing reads and the next write of ``NAME`` removes once it
    is older than ``STALE_TMP_S``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600; keep an existing file's mode, else the usual 0644.
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_writable(path: str | os.PathLike, what: str = "The output") -> Path:
    """Refuse, before any work, a ``path`` that cannot become a file: an existing folder, a place under
    a file, or a folder that refuses new files. Probes with a temp file that it removes at once."""
    from .errors import OutputError

    p = Path(path)
    shown = str(path) if len(str(path)) <= 120 else str(path)[:117] + "..."
    try:
        if p.is_dir():
            raise OutputError(f"{what} '{shown}' is a folder; give a file name.")
        anc = p.absolute().parent
        while not anc.exists() and anc != anc.parent:
            anc = anc.parent
        if not anc.is_dir():
            raise OutputError(f"{what} '{shown}' would be inside '{anc.name}', which is a file, "
                              "not a folder.")
        fd, tmp = tempfile.mkstemp(dir=anc, prefix=".aelib-write-check.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"{what} '{shown}' cannot be written ({exc.strerror or type(exc).__name__}).") \
            from None
    except ValueError:  # a NUL byte
        raise OutputError(f"{what} path cannot contain a NUL character.") from None
    return p
