"""aelib dashboard: ``streamlit run streamlit_app.py``.

The router and the shared frame: the page list lives in :mod:`aelib.ui.router`, the sidebar
(dataset, models, training status) in :mod:`aelib.ui.sidebar`; each page is a short view under
``pages/``. Anything a user can cause ends as a sentence on the page, not a traceback.
"""

from __future__ import annotations

import streamlit as st

from aelib.errors import AelibError
from aelib.ui import router, sidebar

st.set_page_config(page_title="aelib · autoencoders", page_icon="🌀", layout="wide")

page = router.navigation()
with st.sidebar:
    router.nav_links()
    st.divider()
sidebar.frame()
try:
    router.run_page(page)
except AelibError as exc:
    st.error(str(exc))
