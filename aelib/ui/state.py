"""This user's session: namespaced ``st.session_state`` keys, remembered widget values, messages.

Everything a user changes lives here under ``"aelib."`` keys and nowhere else, so nothing one user
does reaches another user's session.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import streamlit as st

from ..worker import TrainingManager, get_manager

NS = "aelib."
_KEEP = NS + "keep."


def get(name: str, default_factory: Callable):
    """The session value ``aelib.<name>``, created by ``default_factory`` on first use."""
    key = NS + name
    if key not in st.session_state:
        st.session_state[key] = default_factory()
    return st.session_state[key]


def session_id() -> str:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "no-session"


def alive_probe(sid: str) -> Callable[[], bool] | None:
    """Streamlit's registry of connected sessions, so the worker can stop a closed tab's runs."""
    from streamlit import runtime

    if not runtime.exists():
        return None
    rt = runtime.get_instance()
    return lambda: rt.is_active_session(sid)


def manager() -> TrainingManager:
    return get_manager()


def heartbeat() -> None:
    sid = session_id()
    manager().heartbeat(sid, alive_probe(sid))


def remember(*prefixes: str) -> None:
    """Copy this page's widget values (keys starting with ``prefixes``) to shadow keys.

    Streamlit forgets a widget's value once a run does not draw it (another page); widgets given
    :func:`kept` values come back as the user left them.
    """
    for key in list(st.session_state.keys()):
        if isinstance(key, str) and key.startswith(prefixes) and not key.startswith(_KEEP):
            st.session_state[_KEEP + key] = st.session_state[key]


def keep(key: str, value) -> None:
    """Remember ``value`` for widget ``key`` now: a value the script put into Session State after
    :func:`remember` ran, which a page switch would otherwise forget."""
    st.session_state[_KEEP + key] = value


def remembered(key: str):
    """What :func:`remember` last kept of widget ``key`` (None if nothing)."""
    return st.session_state.get(_KEEP + key)


def kept(
    key: str, default, *, options: Sequence | None = None, lo: float | None = None, hi: float | None = None
):
    """The remembered value of widget ``key`` (else ``default``), to pass as its value / index.

    A value that no longer fits (not in ``options``, outside ``lo``..``hi``) falls back to
    ``default`` and is dropped from the live state too.
    """

    def fits(v) -> bool:
        if options is not None and not all(i in options for i in (v if isinstance(v, list) else [v])):
            return False
        return v is None or not ((lo is not None and v < lo) or (hi is not None and v > hi))

    if key in st.session_state and not fits(st.session_state[key]):
        del st.session_state[key]
    value = st.session_state.get(_KEEP + key, default)
    return value if fits(value) else default


def flash(message: str, kind: str = "success") -> None:
    """Show ``message`` once, after a full rerun, on the page asking (never on another page)."""
    st.session_state[NS + "flash"] = (kind, message, st.session_state.get(NS + "page"))
    st.rerun()


def show_flash(page: str) -> None:
    st.session_state[NS + "page"] = page
    # Always one element here, empty or not: a message that appeared as a new element would move
    # everything below it one place down, and Streamlit redraws moved elements afresh (tabs went
    # back to their first tab when a button in another one said what it started).
    slot = st.container()
    item = st.session_state.pop(NS + "flash", None)  # shown once, and never on another page
    if item and item[2] in (None, page):
        getattr(slot, item[0])(item[1])


def digest(uploaded) -> str:
    """sha256 of an uploaded file, computed once per upload (Streamlit gives each a ``file_id``)."""
    memo = get("digests", dict)
    fid = getattr(uploaded, "file_id", None)
    if fid is None or fid not in memo:
        if len(memo) > 64:
            memo.clear()
        h = hashlib.sha256(uploaded.getvalue()).hexdigest()
        if fid is None:
            return h
        memo[fid] = h
    return memo[fid]
