"""The shared frame every page gets: dataset picker, model picker, training status."""

from __future__ import annotations

from dataclasses import dataclass, field

import streamlit as st
import torch

from ..errors import AelibError
from . import choices, runs, settings, sources, state
from .choices import ModelChoice
from .sources import ImageSet

UPLOAD, LOCAL = "Upload images", "Local path"
_FRAME = state.NS + "frame"


@dataclass
class Frame:
    data: ImageSet | None
    models: list[ModelChoice] = field(default_factory=list)  # picked, fitting the data
    compatible: list[ModelChoice] = field(default_factory=list)  # every model fitting the data
    all_models: list[ModelChoice] = field(default_factory=list)  # every model, for the pickers
    # Checkpoints this session saved from runs it still holds: listed with the files (Overview,
    # Checkpoints you saved), not in the pickers, where the run itself stands for them.
    copies: list[ModelChoice] = field(default_factory=list)


def _dataset_picker() -> ImageSet | None:
    options = [*sources.BUILTIN, UPLOAD] + ([LOCAL] if settings.local_paths_allowed() else [])
    pick = st.selectbox("Dataset", options, key=state.NS + "dataset")
    try:
        if pick in sources.BUILTIN:
            data = sources.builtin(pick)
        elif pick == UPLOAD:
            up = sources.kept_upload(
                state.NS + "data_upload",
                "Images (.npy, .npz, .zip of PNG/JPEG)",
                ["npy", "npz", "zip", "png", "jpg", "jpeg"],
                sources.read_upload,
            )
            if up is None:
                st.info(
                    "Upload an image array or a zip of images to use it here. A .npz may hold "
                    "integer class labels under the key `labels`."
                )
                return None
            data = sources.uploaded_set(up)
        else:
            text = st.text_input(
                "Path on this machine (inside the allowed folder)", key=state.NS + "local_path"
            )
            if not text:
                st.info("Type the path of a .npy/.npz file, a .zip or a folder of PNG/JPEG images.")
                return None
            data = sources.local_set(text)
    except AelibError as exc:
        st.error(str(exc))
        return None
    c, h, w = data.shape
    st.caption(
        f"**{data.title}** · {data.origin} · {c}x{h}x{w}"
        + (f" · {len(data.classes)} classes" if data.classes else " · no labels")
    )
    if data.train.note:
        with st.expander("About this data"):
            st.caption(data.train.note)
    return data


def _default_picks(data: ImageSet, comp: list[ModelChoice]) -> list[str]:
    """One plain shipped model per family, made for this dataset: nothing a user saved or uploaded,
    so no user's action changes another user's defaults."""
    firsts: dict[str, str] = {}
    for m in comp:
        if (
            m.origin == "shipped"
            and m.noise[0] is None
            and m.data.normal_classes is None
            and m.made_for(data)
        ):
            firsts.setdefault(m.config.family, m.id)
    return [firsts[f] for f in ("fcn", "conv", "vae") if f in firsts]


def _model_picker(data: ImageSet | None) -> Frame:
    with st.expander("Upload checkpoints (.safetensors)"):
        files = st.file_uploader(
            "aelib checkpoints",
            # PyTorch's pickle suffixes too, only to say why they are refused (unread): the
            # browser's own refusal of another suffix says no more than "files are not allowed".
            type=["safetensors", *choices.PICKLE_SUFFIXES],
            accept_multiple_files=True,
            key=state.NS + "ckpt_upload",
            label_visibility="collapsed",
        )
        models, refused = choices.everything(list(runs.session_runs().values()), files)
        for sentence in refused:
            st.error(sentence)
    copies = [m for m in models if runs.copy_of_a_run(m)]
    models = [m for m in models if m not in copies]
    if data is None:
        return Frame(None, all_models=models, copies=copies)
    comp = choices.compatible(models, data.shape)
    # This dataset's models first (MNIST and Fashion-MNIST models take the same shape).
    comp.sort(key=lambda m: (not m.made_for(data), m.origin != "session"))
    by_id = {m.id: m for m in comp}
    sel = state.NS + "models"
    # Picks are kept per dataset: models picked for MNIST are not picked on Fashion-MNIST.
    by_data = state.get("picks_by_data", dict)
    drawn_for = st.session_state.get(state.NS + "models_data")
    if drawn_for is not None and sel in st.session_state:
        by_data[drawn_for] = list(st.session_state[sel])
    current = [i for i in by_data.get(data.key, _default_picks(data, comp)) if i in by_id]
    # Pick this session's fresh runs and uploads once, on the data they were trained on: a run of
    # MNIST takes Fashion-MNIST's shape but is not a Fashion-MNIST model.
    seen = state.get("seen_models", set)
    for m in comp:
        if m.origin in ("session", "upload") and m.made_for(data) and (data.key, m.id) not in seen:
            seen.add((data.key, m.id))
            if m.id not in current:
                current.append(m.id)
    by_data[data.key] = current
    if not comp:
        st.session_state.pop(state.NS + "models_data", None)
        c, h, w = data.shape
        st.info(
            f"No model for {c}x{h}x{w} images yet. Train one on the Training page, or upload a "
            ".safetensors checkpoint above."
        )
        return Frame(data, [], [], models, copies)
    st.session_state[sel] = current
    st.session_state[state.NS + "models_data"] = data.key
    picked = st.multiselect("Models to show", list(by_id), key=sel, format_func=lambda i: by_id[i].label)
    return Frame(data, [by_id[i] for i in picked if i in by_id], comp, models, copies)


def stop_button(run, key: str) -> None:
    if st.button(
        "Stop",
        key=key,
        icon=":material/stop_circle:",
        help="Stop after the current batch; the model keeps the weights it has.",
    ):
        state.manager().stop(run)
        st.rerun(scope="app")


def _run_status() -> None:
    if runs.active_run() is None:
        return

    @st.fragment(run_every=1.5)
    def status() -> None:
        state.heartbeat()
        r = runs.active_run()
        if r is None:
            st.rerun(scope="app")  # a run just finished: refresh the model pickers everywhere
            return
        with st.container(border=True):
            if r.status == "queued":
                pos = state.manager().queue_position(r)
                st.caption(f"Training **{r.name}**: queued" + (f" (#{pos})" if pos else ""))
            else:
                st.caption(f"Training **{r.name}**: {runs.epoch_text(r)}")
                st.progress(r.progress)
            stop_button(r, state.NS + "sidebar_stop")

    status()


def _unsaved_notice() -> None:
    kept = state.get("kept_runs", set)
    unsaved = [r for r in runs.session_runs().values() if r.model is not None and r.id not in kept]
    if unsaved:
        st.caption(
            f":material/warning: {len(unsaved)} unsaved run(s): they live in this browser tab only. "
            "Reloading or closing it drops them; save or download them on the Training page first."
        )


def frame() -> Frame:
    """Heartbeat, UI torch threads and the sidebar; called once per script run before the page."""
    state.heartbeat()
    # 1 training thread + more UI threads than the spare cores oversubscribe a small server.
    torch.set_num_threads(1 if state.manager().running_count() else settings.ui_threads())
    with st.sidebar:
        data = _dataset_picker()
        fr = _model_picker(data)
        _run_status()
        _unsaved_notice()
    st.session_state[_FRAME] = fr
    return fr


def current() -> Frame:
    """The frame (sidebar picks) of this run."""
    fr = st.session_state.get(_FRAME)
    return fr if fr is not None else Frame(None)
