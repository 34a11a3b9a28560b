"""Training: configure a run, start it in the background, watch it, stop it, keep it."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from aelib import explore
from aelib.errors import AelibError
from aelib.ui import compute, draw, router, runs, sidebar, state, training, widgets

SWEEP_SIZES = [4, 8, 16, 32, 48, 64, 128, 256]

fr = router.page(__file__)
data = router.need_data(fr)
st.caption(
    f"On **{data.title}** ({data.origin}); validation on the first {min(len(data.test), runs.VAL_IMAGES):,} "
    "test images. Runs train in the background: switch pages, move sliders, come back. One run per "
    "session trains at a time; more wait in a queue."
)

setup, live_col = st.columns([2, 3], gap="large")
with setup:
    plan = widgets.training_form(data)
    busy = runs.active_run() is not None
    if st.button(
        "Queue run" if busy else "Start training",
        type="primary",
        key="aelib.t_start",
        icon=":material/play_arrow:",
    ):
        known = set(runs.session_runs())
        try:
            run = runs.start_on(
                data, plan.model, plan.train, name=plan.name, subset=plan.subset, named=plan.named
            )
        except AelibError as exc:
            st.error(str(exc))
        else:
            st.session_state["aelib.t_watch"] = run.id
            if run.status == "done" and run.id in known:
                state.flash(
                    f"This session already trained these exact settings as {run.name} (the same seed "
                    "gives the same model), so it is shown again. Change the seed or any setting to "
                    "train another, or type a new run name to list it under that name too."
                )
            elif run.status == "done":
                state.flash(
                    f"{run.name} is ready at once: a model with exactly these settings, images and seed "
                    "was trained on this server before (by this session or another), and the same seed "
                    f"gives the same model, so {run.name} reuses its weights instead of training again."
                )
            else:
                started = run.status == "running"
                state.flash(f"Started {run.name}." if started else f"Queued {run.name}.", "info")
    if busy:
        st.caption("A run of this session is active; a new one waits for it.")

with live_col:

    @st.fragment(run_every=1.0 if runs.active_run() else None)
    def live() -> None:
        session = runs.session_runs()
        run = (
            runs.active_run()
            or session.get(st.session_state.get("aelib.t_watch", ""))
            or (list(session.values())[-1] if session else None)
        )
        if run is None:
            st.info("No run yet. Set up a model on the left and press **Start training**.")
            return
        if run.active:
            st.session_state["aelib.t_live"] = run.id
        elif st.session_state.get("aelib.t_live"):  # the run we polled has finished: refresh the app once
            st.session_state["aelib.t_live"] = None
            st.rerun(scope="app")
        st.subheader(run.name)
        if run.dataset.get("name"):  # the sidebar may show another dataset now
            st.caption(f"Trained on {run.dataset['name']}.")
        if run.status == "queued":
            st.info(
                f"Queued (position {state.manager().queue_position(run)}): it starts when a training slot "
                "is free."
            )
        else:
            st.progress(
                run.progress,
                text=f"{run.status} · {runs.epoch_text(run)} · {runs.time_text(run)}",
            )
        if run.message:
            (st.error if run.status == "failed" else st.warning)(run.message)
        hist = run.history()
        if hist.epoch:
            st.plotly_chart(draw.loss_figure(hist), key="aelib.t_chart")
            if run.final_val_mse is not None:
                st.caption(f"Validation MSE after epoch {hist.epoch[-1]}: {run.final_val_mse:.5f}")
        elif run.status != "queued" and run.active:
            st.caption(f"First epoch in progress (batch {run.step}/{run.steps or '?'})...")
        if run.active:
            sidebar.stop_button(run, "aelib.t_stop")

    if runs.active_run() is None:
        st.session_state["aelib.t_live"] = None  # a full run draws the final state itself
    live()

# ---- this session's runs and saves ------------------------------------------------------------
training.session_runs_panel()
training.saved_panel(fr)

# ---- latent-size sweep -------------------------------------------------------------------------------
st.subheader("Latent-size sweep")
st.caption("The same model at several latent sizes: compression against detail, made visible.")
if plan.model.latent is None:
    st.info("This preset keeps a feature-map latent; pick a family (fcn / conv / vae) to sweep latent sizes.")
else:
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    sizes = c1.multiselect(
        "Latent sizes",
        SWEEP_SIZES,
        state.kept("aelib.t_sweep_sizes", [16, 48, 64, 128], options=SWEEP_SIZES),
        key="aelib.t_sweep_sizes",
    )
    if c2.button("Queue sweep", key="aelib.t_sweep", disabled=not sizes):
        sweep = f"{plan.arch}-{plan.train.epochs}ep-{plan.subset}-{data.key}"
        try:
            for z in sorted(sizes):
                runs.start_on(
                    data,
                    plan.model.replace(latent=z),
                    plan.train,
                    name=f"{plan.name}-sweep-z{z}",
                    subset=plan.subset,
                    tags={"sweep": sweep},
                )
        except AelibError as exc:
            st.error(str(exc))
        st.session_state["aelib.t_sweep_id"] = sweep
        st.rerun()
    sweep = st.session_state.get("aelib.t_sweep_id")
    members = [r for r in runs.session_runs().values() if sweep and r.tags.get("sweep") == sweep]
    done = sorted(
        (r for r in members if r.status == "done" and r.final_val_mse is not None),
        key=lambda r: r.model_config.latent,
    )
    if members and not done:
        st.caption(f"Sweep queued: {len(members)} runs; results appear as they finish.")
    if done:
        fig = go.Figure(
            go.Scatter(
                x=[r.model_config.latent for r in done],
                y=[r.final_val_mse for r in done],
                mode="lines+markers",
                name="final val MSE",
            )
        )
        st.plotly_chart(
            draw.chart_layout(fig, "latent size", "final validation MSE", 300, log="x"),
            key="aelib.t_sweep_chart",
        )
        few = data.test_images.head(8)
        rows = [("original", explore.to_display(few.tensor), None)]
        by_run = {m.id: m for m in fr.all_models}
        rows += [
            (f"latent {r.model_config.latent}", compute.reconstructions(by_run[f"run:{r.id}"], few), None)
            for r in done
            if f"run:{r.id}" in by_run
        ]
        draw.image_rows(rows)
