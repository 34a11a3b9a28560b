"""CSV exports: the reference ``prediction.csv`` (reconstructions) and ``id,score`` score files.

Both stream: rows are produced and formatted a block at a time, so memory does not grow with the
number of images. Written to a path, a file appears atomically (a temporary file in the same
folder, then ``os.replace``): a failed export leaves any existing file untouched.

``prediction.csv`` (the format of the Keras recipe it replaces) has one row per image::

    row_id,orig_px0,recon_px0,orig_px1,recon_px1,...,orig_px{P-1},recon_px{P-1}

with pixels flattened in (C, H, W) order and values in the model's pixel range.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Sequence
from typing import IO

import numpy as np
import torch
from torch import nn

from ._io import atomic_open
from .data import to_float
from .errors import DataError
from .scoring import ImagesLike, as_image_tensor, reconstruct_batches

# Upper bound on values formatted at once: bounds the temporary Python floats and the string
# of one block whatever the image size.
_BLOCK_VALUES = 1 << 18
_SCORE_BLOCK_ROWS = 1 << 16

Dest = str | os.PathLike | IO


# --------------------------------------------------------------------------------------------
# Destinations


def _is_binary(f) -> bool:
    if isinstance(f, io.TextIOBase):
        return False
    if isinstance(f, (io.BufferedIOBase, io.RawIOBase)):
        return True
    return "b" in getattr(f, "mode", "")


@contextlib.contextmanager
def _text_writer(dest: Dest):
    """Yields a ``write(str)`` callable. Paths are written atomically via a temporary file."""
    if hasattr(dest, "write"):
        if _is_binary(dest):
            yield lambda s: dest.write(s.encode("utf-8"))
        else:
            yield dest.write
        return
    with atomic_open(dest, "w", encoding="utf-8", newline="") as fh:
        yield fh.write


def _csv_field(value) -> str:
    s = str(value)
    if any(c in s for c in ',"\n\r'):
        s = '"' + s.replace('"', '""') + '"'
    return s


def _id_strings(ids, n: int, what: str) -> list[str] | None:
    """Formatted ids, or None for the default 0..n-1 (formatted lazily per block)."""
    if ids is None:
        return None
    if isinstance(ids, torch.Tensor):
        ids = ids.cpu().numpy()
    ids = list(np.asarray(ids).tolist()) if isinstance(ids, np.ndarray) else list(ids)
    if len(ids) != n:
        raise DataError(f"{what} has {len(ids)} entries for {n} rows.")
    return [_csv_field(v) for v in ids]


def _check_float_format(float_format: str) -> None:
    try:
        float_format % 0.5
    except (TypeError, ValueError) as exc:
        raise DataError(f"float_format must format one number, like '%.6g'; got {float_format!r}.") from exc


# --------------------------------------------------------------------------------------------
# prediction.csv


def prediction_header(n_pixels: int) -> str:
    """``row_id,orig_px0,recon_px0,...`` for ``n_pixels`` pixels (no newline)."""
    return "row_id," + ",".join(f"orig_px{i},recon_px{i}" for i in range(n_pixels))


def _prediction_blocks(model: nn.Module, images: ImagesLike, batch_size: int, row_ids,
                       float_format: str) -> Iterator[tuple[str, int]]:
    """Yields (text, n_rows): the header line first (0 rows), then blocks of formatted rows."""
    _check_float_format(float_format)
    data = as_image_tensor(images, model.config.in_shape)
    n = len(data)
    ids = _id_strings(row_ids, n, "row_ids")
    p = model.config.n_pixels
    # An original pixel takes one of 256 values: format each once (exactly as to_float scales
    # it for the model) and look them up, which saves a third of the formatting time.
    levels = to_float(torch.arange(256, dtype=torch.uint8), model.config.output_range).tolist()
    orig_text = np.array([float_format % v for v in levels], dtype=object)
    row_fmt = ",".join(["%s", float_format] * p)
    block_rows = max(1, _BLOCK_VALUES // (2 * p))
    yield prediction_header(p) + "\n", 0
    done = 0
    for _, recon in reconstruct_batches(model, data, batch_size):
        rec = recon.flatten(1).cpu().numpy()
        for b in range(0, len(rec), block_rows):
            start = done + b
            r = rec[b:b + block_rows]
            o = data[start:start + len(r)].reshape(len(r), p).cpu().numpy()
            inter = np.empty((len(r), 2 * p), dtype=object)
            inter[:, 0::2] = orig_text[o]
            inter[:, 1::2] = r.astype(np.float64)
            names = ids[start:start + len(r)] if ids is not None else range(start, start + len(r))
            text = "".join(f"{name},{row_fmt % tuple(row)}\n" for name, row in zip(names, inter.tolist()))
            yield text, len(r)
        done += len(rec)


def iter_prediction_csv(model: nn.Module, images: ImagesLike, batch_size: int = 256,
                        row_ids: Sequence | None = None, float_format: str = "%.6g") -> Iterator[str]:
    """The ``prediction.csv`` text as a stream of string chunks (header first).

    For a download of a large set, e.g. ``st.download_button(data=iter_prediction_csv(...))``
    or ``"".join(...)`` for a small one. Same arguments as :func:`write_prediction_csv`.
    """
    for text, _ in _prediction_blocks(model, images, batch_size, row_ids, float_format):
        yield text


def write_prediction_csv(dest: Dest, model: nn.Module, images_uint8: ImagesLike, batch_size: int = 256,
                         row_ids: Sequence | None = None, float_format: str = "%.6g") -> int:
    """Write the reference ``prediction.csv`` for ``images_uint8``; returns the number of rows.

    ``dest`` is a path (written atomically) or an open file (text or binary). ``row_ids``
    defaults to 0..N-1. Values are the model's input and its reconstruction in the model's pixel
    range, formatted with ``float_format``. Memory stays bounded by one batch whatever N.
    """
    rows = 0
    with _text_writer(dest) as write:
        for text, n in _prediction_blocks(model, images_uint8, batch_size, row_ids, float_format):
            write(text)
            rows += n
    return rows


# --------------------------------------------------------------------------------------------
# id,score


def _score_blocks(scores, ids, float_format: str) -> Iterator[tuple[str, int]]:
    _check_float_format(float_format)
    s = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    if s.ndim > 1 and s.size == max(s.shape):  # a column or row vector
        s = s.ravel()
    if s.ndim != 1:
        raise DataError(f"scores must be one number per image, got shape {s.shape}.")
    try:
        s = s.astype(np.float64, copy=False)
    except (TypeError, ValueError) as exc:
        raise DataError("scores must be numbers.") from exc
    if not np.isfinite(s).all():
        raise DataError("Scores contain NaN or infinite values; a leaderboard cannot rank them.")
    n = len(s)
    names = _id_strings(ids, n, "ids")
    yield "id,score\n", 0
    for b in range(0, n, _SCORE_BLOCK_ROWS):
        block = s[b:b + _SCORE_BLOCK_ROWS].tolist()
        keys = names[b:b + len(block)] if names is not None else range(b, b + len(block))
        yield "".join(f"{k},{float_format % v}\n" for k, v in zip(keys, block)), len(block)


def write_scores_csv(dest: Dest, scores, ids: Sequence | None = None, float_format: str = "%.10g") -> int:
    """Write ``id,score`` rows (ids default 0..N-1); returns the number of rows.

    The leaderboard format of the reference. ``dest`` is a path (written atomically) or an open
    file. Ten significant digits keep float32 scores exact, so the ranking is preserved.
    """
    rows = 0
    with _text_writer(dest) as write:
        for text, n in _score_blocks(scores, ids, float_format):
            write(text)
            rows += n
    return rows


def scores_csv_bytes(scores, ids: Sequence | None = None, float_format: str = "%.10g") -> bytes:
    """The ``id,score`` CSV as UTF-8 bytes, for ``st.download_button``."""
    buf = io.StringIO()
    write_scores_csv(buf, scores, ids, float_format)
    return buf.getvalue().encode("utf-8")
