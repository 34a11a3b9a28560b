"""The Training page's panels below the set-up: this session's runs (save, download) and the
checkpoints this session saved (delete, after a confirmation)."""

from __future__ import annotations

import json

import streamlit as st

from .. import checkpoints
from ..errors import AelibError
from . import choices, compute, runs, settings, state, widgets
from .sidebar import Frame

EAGER_BYTES = 16 * 2**20  # checkpoints up to this size are made with the page, so a click downloads at once


def _checkpoint_data(run):
    """The download button's data: the cached file of a small model; a big one is made on the click."""
    if sum(p.numel() * p.element_size() for p in run.model.parameters()) <= EAGER_BYTES:
        return compute.checkpoint_bytes(choices.of_run(run))
    return lambda: checkpoints.checked_bytes(run.model, run.meta)


def session_runs_panel() -> None:
    """The session's runs: a live table, and Save / Download for a finished one."""
    st.subheader("Runs of this session")
    session = list(runs.session_runs().values())
    if not session:
        st.caption("Runs you start appear here, with Save and Download once they finish.")
    else:

        @st.fragment(run_every=2.0 if runs.active_run() else None)
        def run_list() -> None:
            st.dataframe(runs.table(list(runs.session_runs().values())), hide_index=True)

        run_list()
        st.caption(
            ":material/info: Runs live in this browser tab only: reloading or closing it drops the ones "
            "you have not saved or downloaded."
        )
        finished = {r.id: r for r in session if r.model is not None and r.meta is not None}
        if finished:
            # Save and Download start on the run the page shows (the one last started), once it is
            # finished; a run picked here stays picked until another one starts.
            watch = st.session_state.get("aelib.t_watch")
            if watch in finished and st.session_state.get("aelib.t_pick_follows") != watch:
                st.session_state["aelib.t_pick"] = st.session_state["aelib.t_pick_follows"] = watch
            pick = widgets.selectbox(
                "Run", list(finished), "aelib.t_pick", format_func=lambda i: finished[i].name
            )
            run = finished[pick]
            c1, c2, c3, c4 = st.columns(4)
            c1.download_button(
                "Download .safetensors",
                _checkpoint_data(run),
                file_name=f"{checkpoints.file_stem(run.name)}.safetensors",  # as Save names it
                mime="application/octet-stream",
                key="aelib.t_dl",
                icon=":material/download:",
                on_click=runs.mark_kept,
                args=(run,),
            )
            c2.download_button(
                "Download metadata .json",
                json.dumps(run.meta, indent=1),
                key="aelib.t_dl_json",
                file_name=f"{checkpoints.file_stem(run.name)}.json",
                mime="application/json",
                on_click="ignore",
            )
            if settings.read_only():
                c3.caption("Saving is off on this server (read-only): download the checkpoint instead.")
            elif c3.button(
                "Save to checkpoints/",
                key="aelib.t_save",
                icon=":material/save:",
                help="Saved models are listed for every user of this server, never picked by default.",
            ):
                try:
                    saved = runs.save(run)
                except (AelibError, OSError) as exc:
                    st.error(f"Could not save {run.name}: {exc}")
                else:
                    state.flash(f"Saved {run.name} as {saved}.")
            if c4.button(
                "Remove from this session",
                key="aelib.t_forget",
                icon=":material/close:",
                help="Frees its memory; a session holds at most 24 trained models.",
            ):
                runs.remove(run)
                state.flash(f"Removed {run.name} from this session.")


def saved_panel(fr: Frame) -> None:
    """Checkpoints this session saved, deletable after a confirmation (nothing else is)."""
    mine = [m for m in fr.all_models + fr.copies if runs.deletable(m)]
    if mine:
        st.subheader("Checkpoints you saved")
        by_id = {m.id: m for m in mine}
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        victim = by_id[
            widgets.selectbox(
                "Delete a checkpoint",
                list(by_id),
                "aelib.t_del_pick",
                container=c1,
                format_func=lambda i: by_id[i].path.stem,  # the file, as saved
            )
        ]
        if c2.button("Delete", key="aelib.t_del", icon=":material/delete:"):
            st.session_state["aelib.t_del_confirm"] = victim.id
        if st.session_state.get("aelib.t_del_confirm") == victim.id:
            st.warning(f"Delete **{victim.path.stem}** from this server for good?")
            y, n = st.columns(2)
            if y.button("Yes, delete it", key="aelib.t_del_yes", type="primary"):
                st.session_state.pop("aelib.t_del_confirm")
                runs.delete(victim)
                state.flash(f"Deleted {victim.name}.")
            if n.button("Cancel", key="aelib.t_del_no"):
                st.session_state.pop("aelib.t_del_confirm")
                st.rerun()
