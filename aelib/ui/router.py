"""The page list, the navigation, and the one-call preamble every page starts with."""

from __future__ import annotations

import runpy
import threading
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from . import sidebar, state
from .sidebar import Frame


@dataclass(frozen=True)
class PageSpec:
    file: str  # relative to the app's folder
    title: str
    icon: str
    blurb: str  # one line for the Overview
    prefix: str  # widget keys of this page start with it (remembered across page switches)


PAGES = [
    PageSpec(
        "pages/home.py",
        "Overview",
        ":material/home:",
        "What each family is, the data, the models.",
        "aelib.o_",
    ),
    PageSpec(
        "pages/training.py",
        "Training",
        ":material/model_training:",
        "Train in the background, watch the loss, stop, save; latent-size sweeps.",
        "aelib.t_",
    ),
    PageSpec(
        "pages/reconstruction.py",
        "Reconstruction",
        ":material/compare:",
        "Originals vs each model, error maps, per-class error, denoising, prediction.csv.",
        "aelib.r_",
    ),
    PageSpec(
        "pages/latent.py",
        "Latent space",
        ":material/scatter_plot:",
        "Interpolate, sample the prior, traverse one dimension, map the test set.",
        "aelib.l_",
    ),
    PageSpec(
        "pages/anomaly.py",
        "Anomaly detection",
        ":material/troubleshoot:",
        "One-class or uploaded sets: score histograms, ROC/AUC, threshold, galleries.",
        "aelib.a_",
    ),
    PageSpec(
        "pages/compare.py",
        "Compare runs",
        ":material/stacked_line_chart:",
        "Runs side by side: loss curves, what differs, final MSE and time.",
        "aelib.c_",
    ),
]
_BY_FILE = {Path(p.file).name: p for p in PAGES}
_router = threading.local()  # Streamlit runs each session's script in its own thread


def navigation():
    """``st.navigation`` over :data:`PAGES`, drawn by :func:`nav_links` (so the first visitor of a
    fresh server never sees Streamlit's own listing of the ``pages/`` folder)."""
    pages = [
        st.Page(p.file, title=p.title, icon=p.icon, default=i == 0, url_path="overview" if i == 0 else None)
        for i, p in enumerate(PAGES)
    ]
    # The Overview lives at the root URL; /home (its file's name) leads there too.
    home = st.Page(_to_overview, title=PAGES[0].title, url_path="home", visibility="hidden")
    return st.navigation([*pages, home], position="hidden")


def _to_overview() -> None:
    st.switch_page(PAGES[0].file)


def nav_links(container=st) -> None:
    for p in PAGES:
        container.page_link(p.file, label=p.title, icon=p.icon)


def run_page(page) -> None:
    """Run the page ``st.navigation`` picked, marked as routed."""
    _router.inside = True
    try:
        page.run()
    finally:
        _router.inside = False


def _routed(page_file: str) -> None:
    """A top-level ``pages/`` folder makes Streamlit run a page script alone (a fresh server's first
    request for /training, AppTest) until some session calls ``st.navigation``: then run the router,
    which runs this page inside the frame, and end the bare run."""
    if getattr(_router, "inside", False):
        return
    runpy.run_path(str(Path(page_file).resolve().parent.parent / "streamlit_app.py"))
    st.stop()


def page(page_file: str, *, title: bool = True) -> Frame:
    """Every page's first call: route, remember its widgets, title, one-shot message; the frame."""
    _routed(page_file)
    spec = _BY_FILE[Path(page_file).name]
    state.remember(spec.prefix, "aelib.gray_r")
    if title:
        st.title(spec.title)
    state.show_flash(spec.file)
    return sidebar.current()


def no_data_hint() -> str:
    """What the sidebar still needs before a page has images: said after what the user picked."""
    pick = st.session_state.get(state.NS + "dataset")
    if pick == sidebar.UPLOAD:
        return "Upload images in the sidebar first (an image array, or a zip of PNG/JPEG files)."
    if pick == sidebar.LOCAL:
        return "Type a path in the sidebar first."
    return "Pick a dataset in the sidebar first."


def need_data(fr: Frame):
    if fr.data is None:
        st.info(no_data_hint())
        st.stop()
    return fr.data


def need_models(fr: Frame, what: str = "this page") -> list:
    if not fr.models:
        if fr.compatible:
            st.info(f"Pick one or more models in the sidebar for {what}.")
        else:
            st.info(
                "No model fits this dataset yet: train one on the Training page, or upload a checkpoint "
                "in the sidebar."
            )
        st.stop()
    return fr.models
