"""aelib dashboard: ``streamlit run streamlit_app.py``.

The router and the shared frame. Each page is a short script under ``views/``; the sidebar
(dataset, models, training status) is built once per run by :func:`aelib.cache.frame`.
"""

from __future__ import annotations

import streamlit as st

from aelib import cache
from aelib.errors import AelibError

st.set_page_config(page_title="aelib · autoencoders", page_icon="🌀", layout="wide")

PAGES = [
    st.Page("views/home.py", title="Overview", icon=":material/home:", default=True),
    st.Page("views/training.py", title="Training", icon=":material/model_training:"),
    st.Page("views/reconstruction.py", title="Reconstruction", icon=":material/compare:"),
    st.Page("views/latent.py", title="Latent space", icon=":material/scatter_plot:"),
    st.Page("views/anomaly.py", title="Anomaly detection", icon=":material/troubleshoot:"),
]

page = st.navigation(PAGES)
cache.frame()
try:
    page.run()
except AelibError as exc:  # anything a user can cause ends as a sentence, not a traceback
    st.error(str(exc))
