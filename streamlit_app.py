"""aelib dashboard: ``streamlit run streamlit_app.py``.

The router and the shared frame. Each page is a short script under ``pages/``; the sidebar
(dataset, models, training status) is built once per run by :func:`aelib.cache.frame`. A page's
first line, ``cache.routed(__file__)``, sends it through this router even when Streamlit's legacy
``pages/`` handling starts it directly (a fresh server's first request for /training, AppTest).
"""

from __future__ import annotations

import streamlit as st

from aelib import cache
from aelib.errors import AelibError

st.set_page_config(page_title="aelib · autoencoders", page_icon="🌀", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Overview", icon=":material/home:", default=True),
    st.Page("pages/training.py", title="Training", icon=":material/model_training:"),
    st.Page("pages/reconstruction.py", title="Reconstruction", icon=":material/compare:"),
    st.Page("pages/latent.py", title="Latent space", icon=":material/scatter_plot:"),
    st.Page("pages/anomaly.py", title="Anomaly detection", icon=":material/troubleshoot:"),
]

page = st.navigation(PAGES)
cache.frame()
try:
    cache.run_page(page)
except AelibError as exc:  # anything a user can cause ends as a sentence, not a traceback
    st.error(str(exc))
