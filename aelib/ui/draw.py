"""Arrays in, Streamlit elements out: image rows, error heat maps, loss charts, class colours."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from .. import explore


def _lut(hex_colours: Sequence[str]) -> np.ndarray:
    stops = (
        np.array([[int(h[i : i + 2], 16) for i in (1, 3, 5)] for h in hex_colours], dtype=np.float32) / 255
    )
    x = np.linspace(0, 1, len(stops))
    t = np.linspace(0, 1, 256)
    return np.stack([np.interp(t, x, stops[:, c]) for c in range(3)], axis=1).astype(np.float32)


_INFERNO = _lut(
    [
        "#000004",
        "#1b0c41",
        "#4a0c6b",
        "#781c6d",
        "#a52c60",
        "#cf4446",
        "#ed6925",
        "#fb9b06",
        "#f7d13d",
        "#fcffa4",
    ]
)
# Ten class colours that all stand out on a white background (Okabe-Ito and Tableau's darker tones;
# no pale yellow or light grey).
CLASS_COLOURS = [
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#8C564B",
    "#332288",
    "#882255",
    "#117733",
]


def heatmap(err: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """Absolute-error display arrays (N, H, W[, 3]) -> colour-mapped (N, H, W, 3), shared scale."""
    e = err.mean(-1) if err.ndim == 4 else err
    vmax = float(vmax if vmax is not None else max(float(e.max()), 1e-6))
    idx = np.clip(e / vmax * 255, 0, 255).astype(np.uint8)
    return _INFERNO[idx]


def for_display(arr: np.ndarray, gray_r: bool = False, scale: int = 4) -> np.ndarray:
    """Reversed grey on request (grey images only) and a crisp nearest-neighbour upscale."""
    a = 1.0 - arr if gray_r and arr.ndim == 3 else arr
    if scale > 1:
        a = a.repeat(scale, axis=1).repeat(scale, axis=2)
    return np.clip(a, 0, 1)


def _scale_for(shape: tuple[int, ...]) -> int:
    return max(1, 112 // max(shape[-2], shape[-1]))


def gray_r_toggle(colour: bool, container=st) -> bool:
    """The reversed-grey switch for grey images (the Keras recipe's gray_r); colour images have none."""
    from .state import kept

    if colour:
        return False
    return container.toggle("Reversed grey (gray_r)", kept("aelib.gray_r", True), key="aelib.gray_r")


def image_rows(rows: Sequence[tuple[str, np.ndarray, Sequence[str] | None]], gray_r: bool = False) -> None:
    """Rows of images aligned column by column: (row label, display array, captions).

    Each row is one picture (one PNG), its captions in as many equal cells under it. One image
    per tile made a page of rows dozens of media files: on the Reconstruction page (84 tiles) the
    rounds in which the browser fetched them again took ~1.0 s to draw against ~0.5 s."""
    if not rows:
        return
    ncol = max(len(a) for _, a, _ in rows)
    pad = 4
    for label, arr, captions in rows:
        left, right = st.columns([1.4, ncol], gap="small", vertical_alignment="center")
        left.markdown(f"**{label}**")
        scale = _scale_for(arr.shape[1:3] if arr.ndim == 4 else arr.shape[1:])
        tiles = for_display(arr, gray_r, scale)
        if len(tiles) < ncol:  # blank tiles, so every row's tiles have the same width
            tiles = np.concatenate([tiles, np.ones((ncol - len(tiles), *tiles.shape[1:]), tiles.dtype)])
        right.image(explore.image_grid([tiles], pad=pad), width="stretch")
        if captions:  # one line of ncol equal cells, under the tiles (Streamlit columns have a minimum width)
            cells = "".join(f"<div>{html.escape(str(c))}</div>" for c in captions)
            # Pulled up into the gap Streamlit leaves between elements, so the captions sit under their
            # own row; with the whole gap above them they read as the next row's.
            right.markdown(
                f"<div style='display:grid;grid-template-columns:repeat({ncol},minmax(0,1fr));"
                "margin:-1.1rem 0 0.5rem 0;line-height:1.1;"
                f"text-align:center;font-size:0.75rem;opacity:0.65;overflow-wrap:anywhere'>{cells}</div>",
                unsafe_allow_html=True,
            )


def side_by_side(views: Sequence[tuple[str, np.ndarray]], gray_r: bool = False, slots: int = 4) -> None:
    """Views of one image (caption, a (1, H, W[, C]) display array) in one row of ``slots`` equal
    columns, so each is drawn at a column's width, not the page's."""
    cols = st.columns(max(slots, len(views)), gap="small")
    for col, (caption, arr) in zip(cols, views):
        scale = _scale_for(arr.shape[1:3] if arr.ndim == 4 else arr.shape[1:])
        col.image(for_display(arr, gray_r, scale)[0], caption=caption, width="stretch")


def strip(arr: np.ndarray, gray_r: bool = False, captions: Sequence[str] | None = None) -> None:
    """One row of images as a single composite picture (one PNG)."""
    grid = explore.image_grid([for_display(arr, gray_r, _scale_for(arr.shape[1:3]))], pad=4)
    st.image(grid, width="stretch")
    if captions:
        st.caption(" · ".join(captions))


def loss_figure(history, title: str = "Loss per epoch") -> go.Figure:
    fig = go.Figure()
    fig.add_scatter(x=history.epoch, y=history.train_loss, mode="lines+markers", name="train loss")
    if any(not math.isnan(v) for v in history.val_loss):
        fig.add_scatter(x=history.epoch, y=history.val_loss, mode="lines+markers", name="validation loss")
    epoch_axis(fig, len(history.epoch))
    fig.update_yaxes(nticks=8)  # plotly's default for a short chart can be two labels
    fig.update_layout(
        title=title,
        xaxis_title="epoch",
        yaxis_title="loss",
        height=320,
        margin=dict(l=10, r=10, t=40, b=10),
        legend=dict(orientation="h", y=-0.25),
    )
    return fig


def table(rows, five_digits: Sequence[str] = ()) -> None:
    """A data frame (or list of row dicts) without its index; ``five_digits`` columns shown as %.5f."""
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        column_config={k: st.column_config.NumberColumn(format="%.5f") for k in five_digits},
    )


def epoch_axis(fig: go.Figure, epochs: int) -> None:
    """Whole epochs on the x axis, from the first to the last (plotly would tick a two-epoch run at
    1, 1.5 and 2, and a one-epoch run at 0, 1 and 2)."""
    fig.update_xaxes(tickmode="linear", tick0=1, dtick=max(1, epochs // 10), range=[0.5, epochs + 0.5])


def chart_layout(fig: go.Figure, x: str, y: str, height: int, log: str = "") -> go.Figure:
    """The dashboard's plain chart frame: axis titles, tight margins, legend below, optional log axis."""
    fig.update_layout(
        xaxis_title=x,
        yaxis_title=y,
        height=height,
        margin=dict(l=10, r=10, t=20, b=10),
        legend=dict(orientation="h", y=-0.25),
    )
    if log:
        # Ticks written in full: plotly's default labels a short log axis with bare digits
        # ("2, 0.1, 9 8 7"), which read as other numbers.
        values = [v for t in fig.data for v in (getattr(t, log) or ()) if v is not None and v > 0]
        ticks = log_ticks(min(values), max(values)) if values else []
        fig.update_layout(**{f"{log}axis_type": "log", f"{log}axis_tickformat": ".3g",
                             **({f"{log}axis_tickvals": ticks} if ticks else {f"{log}axis_dtick": "D2"})})
    return fig


def log_ticks(lo: float, hi: float) -> list[float]:
    """At least three ticks between ``lo`` and ``hi`` for a log axis: 1, 2, 5 of each decade; where
    the data spans too little of a decade for three of those (a curve from 0.031 to 0.058 had the
    lone tick 0.05), every digit; then evenly spaced round values."""
    if not (0 < lo < hi):
        return []
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    for digits in ((1, 2, 5), range(1, 10)):
        ticks = [float(f"{d}e{e}") for e in decades for d in digits if lo <= d * 10.0**e <= hi]
        if len(ticks) >= 3:
            return ticks
    step = 10.0 ** math.floor(math.log10((hi - lo) / 3))
    for m in (5, 2, 1):  # the widest round step that still gives three ticks
        if math.floor(hi / (m * step)) - math.ceil(lo / (m * step)) >= 2:
            step *= m
            break
    return [float(f"{k * step:.12g}") for k in range(math.ceil(lo / step), math.floor(hi / step) + 1)]
