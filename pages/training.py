"""Training: configure a run, start it in the background, watch it, stop it, keep it."""

from __future__ import annotations

import json
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from aelib import cache, checkpoints, explore
from aelib.bench import RECIPE, fast_config, with_fast_mode
from aelib.errors import AelibError
from aelib.models import PRESETS, default_beta, get_config
from aelib.train import TrainConfig

cache.routed(__file__)

FAMILIES = {"fcn": "Fully connected (fcn)", "conv": "Convolutional (conv)", "vae": "Variational (vae)"}
SCHEDULES = {"constant": "Constant (as Keras)", "onecycle": "One-cycle (warm up, then anneal)"}
FAST = fast_config(target=None)
SWEEP_SIZES = [4, 8, 16, 32, 48, 64, 128, 256]

cache.remember("aelib.t_")
fr = cache.current()
data = cache.need_data(fr)
st.title("Training")
cache.show_flash()
st.caption(f"On **{data.title}** ({data.origin}); validation on the first {min(len(data.test), 2000):,} test "
           "images. Runs train in the background: switch pages, move sliders, come back. One run per session "
           "trains at a time; more wait in a queue.")

presets = [name for name, cfg in PRESETS.items() if tuple(cfg.in_shape) == tuple(data.shape)]
choices = [*FAMILIES, *presets]
setup, live_col = st.columns([2, 3], gap="large")

with setup:
    arch = st.selectbox("Model", choices, key="aelib.t_model",
                        index=choices.index(cache.kept("aelib.t_model", choices[0], options=choices)),
                        format_func=lambda k: FAMILIES.get(k, f"Preset {k} (reference layout)"))
    base = get_config(arch, in_shape=data.shape)
    recipe = arch == "mnist_keras"
    fast = recipe and st.toggle(
        "Fast mode", cache.kept("aelib.t_fast", False), key="aelib.t_fast",
        help=f"aelib's fast mode for this recipe: batch {FAST.batch_size}, one-cycle peaking at "
             f"{FAST.lr:g}, {FAST.epochs} epochs. On Fashion-MNIST it reaches the recipe's validation "
             "MSE (0.0137) in about a third of the recipe's time (README, 'Measured results').")
    mode = "_fast" if fast else ""  # fast mode shows its own values, fixed
    c1, c2 = st.columns(2)
    if base.latent is None:
        c1.text_input("Latent size", f"feature map {base.hidden[-1]}x..", disabled=True)
        latent = None
    else:
        k = f"aelib.t_latent_{arch}"
        latent = int(c1.number_input("Latent size", 1, 4096, cache.kept(k, base.latent), key=k))
    k = f"aelib.t_epochs_{arch}{mode}"
    default = FAST if fast else RECIPE if recipe else TrainConfig()  # the fields' starting values
    epochs = int(c2.number_input("Epochs", 1, 500, cache.kept(k, default.epochs), key=k, disabled=fast))
    c1, c2 = st.columns(2)
    k = f"aelib.t_batch_{arch}{mode}"
    batch = int(c1.number_input("Batch size", 1, 4096, cache.kept(k, default.batch_size), key=k,
                                disabled=fast))
    k = f"aelib.t_lr_{arch}{mode}"
    lr = float(c2.number_input("Learning rate", 1e-6, 1.0, format="%.5f", key=k, disabled=fast,
                               value=cache.kept(k, default.lr)))
    k = f"aelib.t_schedule_{arch}{mode}"
    schedule = st.selectbox(
        "Learning-rate schedule", list(SCHEDULES), format_func=SCHEDULES.get, key=k, disabled=fast,
        index=list(SCHEDULES).index(cache.kept(k, default.schedule, options=list(SCHEDULES))),
        help="One-cycle: the rate warms up from lr/25 over the first quarter of the steps, then "
             "anneals to ~0 (Learning rate sets the peak); it usually reaches a given loss in fewer "
             "epochs. Same as the CLI's `--schedule onecycle`.")
    c1, c2 = st.columns(2)
    seed = int(c1.number_input("Seed", 0, 2**31 - 1, cache.kept("aelib.t_seed", 0), key="aelib.t_seed"))
    beta = c2.number_input("Beta (KL weight)", 0.0, 100.0, cache.kept("aelib.t_beta", None), step=0.1,
                           key="aelib.t_beta",
                           format="%.5g",
                           placeholder=f"auto: {default_beta(base):.3g}", disabled=base.family != "vae",
                           help="VAE only. Empty: 1 / pixels (1 for the face_vae reference preset), "
                                "which keeps the KL from swamping a per-pixel MSE.")
    c1, c2 = st.columns(2)
    noises = ["off", "gaussian", "mask"]
    noise = c1.selectbox("Denoising", noises, key="aelib.t_noise",
                         index=noises.index(cache.kept("aelib.t_noise", "off", options=noises)),
                         help="Corrupt the inputs, keep clean targets: a denoising autoencoder.")
    level = float(c2.slider("Noise level", 0.0, 1.0, cache.kept("aelib.t_noise_level", 0.3), 0.05,
                            key="aelib.t_noise_level",
                            disabled=noise == "off",
                            help="Gaussian: sigma in pixel units. Mask: fraction of pixels set to 0 or 1."))
    n_train = len(data.train)
    subset = int(st.number_input("Training images", 1, n_train, step=500,
                                 value=cache.kept("aelib.t_subset", min(n_train, 10_000), lo=1, hi=n_train),
                                 key="aelib.t_subset",
                                 help="The first N training images; fewer train faster."))
    cfg = base.replace(latent=latent)
    prefix = data.builtin or Path(data.title).stem
    default_name = f"{prefix}-{arch}-{'z' + str(latent) if latent else 'map'}" + \
        (f"-{noise}" if noise != "off" else "")
    name = st.text_input("Run name", default_name, key=f"aelib.t_name_{default_name}")
    tc = TrainConfig(epochs=epochs, batch_size=batch, lr=lr, seed=seed,
                     beta=None if beta is None else float(beta),
                     noise=None if noise == "off" else noise, noise_level=level if noise != "off" else 0.0,
                     schedule=schedule)
    if fast:  # the whole fast-mode schedule: its one-cycle shape too (half warm-up, beta2 0.99)
        tc = with_fast_mode(tc)
    busy = cache.active_run() is not None
    if st.button("Queue run" if busy else "Start training", type="primary", key="aelib.t_start",
                 icon=":material/play_arrow:"):
        try:
            run = cache.start_run(cfg, tc, data, name=name, subset=subset)
        except AelibError as exc:
            st.error(str(exc))
        else:
            st.session_state["aelib.t_watch"] = run.id
            if run.status == "done":
                cache.flash(f"This exact run already finished ({run.name}); reusing it instead of "
                            "retraining.")
            cache.flash(f"Started {run.name}." if run.status == "running" else f"Queued {run.name}.", "info")
    if busy:
        st.caption("A run of this session is active; a new one waits for it.")

with live_col:
    @st.fragment(run_every=1.0 if cache.active_run() else None)
    def live() -> None:
        runs = cache.session_runs()
        run = cache.active_run() or runs.get(st.session_state.get("aelib.t_watch", "")) or \
            (list(runs.values())[-1] if runs else None)
        if run is None:
            st.info("No run yet. Set up a model on the left and press **Start training**.")
            return
        watching = st.session_state.get("aelib.t_live")
        if run.active:
            st.session_state["aelib.t_live"] = run.id
        elif watching:  # the run we were polling has finished: refresh the whole app once
            st.session_state["aelib.t_live"] = None
            st.rerun(scope="app")
        st.subheader(run.name)
        if run.status == "queued":
            st.info(f"Queued (position {cache.manager().queue_position(run)}): it starts when a "
                    "training slot is free.")
        else:
            text = f"{run.status} · epoch {max(run.epoch, len(run.epochs))}/{run.total_epochs} · " \
                   f"{run.elapsed:.0f} s"
            st.progress(run.progress, text=text)
        if run.message:
            (st.error if run.status == "failed" else st.caption)(run.message)
        hist = run.history()
        if hist.epoch:
            st.plotly_chart(cache.loss_figure(hist), key="aelib.t_chart")
            if run.final_val_mse is not None:
                st.caption(f"Validation MSE after epoch {hist.epoch[-1]}: {run.final_val_mse:.5f}")
        elif run.active:
            st.caption(f"First epoch in progress (batch {run.step}/{run.steps or '?'})...")
        if run.active:
            cache.stop_button(run, "aelib.t_stop")

    if cache.active_run() is None:
        st.session_state["aelib.t_live"] = None  # a full run draws the final state itself
    live()

# ---- runs of this session: save, download ---------------------------------------------------------
runs = list(cache.session_runs().values())
st.subheader("Runs of this session")
if not runs:
    st.caption("Runs you start appear here, with Save and Download once they finish.")
else:
    @st.fragment(run_every=2.0 if cache.active_run() else None)
    def run_list() -> None:
        st.dataframe(cache.run_table(list(cache.session_runs().values())), hide_index=True)

    run_list()
    finished = [r for r in runs if r.model is not None and r.meta is not None]
    if finished:
        names = {r.id: f"{r.name} ({r.id})" for r in finished}
        pick = st.selectbox("Run", list(names), key="aelib.t_pick", format_func=names.get)
        run = cache.session_runs()[pick]
        c1, c2, c3 = st.columns(3)
        c1.download_button("Download .safetensors", lambda: checkpoints.to_bytes(run.model, run.meta),
                           file_name=f"{run.name}.safetensors", mime="application/octet-stream",
                           key="aelib.t_dl", icon=":material/download:")
        c2.download_button("Download metadata .json", json.dumps(run.meta, indent=1), key="aelib.t_dl_json",
                           file_name=f"{run.name}.json", mime="application/json")
        if cache.read_only():
            c3.caption("Saving is off (read-only deployment).")
        elif c3.button("Save to checkpoints/", key="aelib.t_save", icon=":material/save:"):
            try:
                path = cache.save_run(run)
            except (AelibError, OSError) as exc:
                st.error(f"Could not save: {exc}")
            else:
                st.success(f"Saved {path.name}.")

# ---- saved checkpoints --------------------------------------------------------------------------------
st.subheader("Saved checkpoints")
saved = cache.saved_checkpoints()
if not saved:
    st.caption(f"None in `{cache.checkpoint_dir()}` yet.")
else:
    st.dataframe([{"file": p.name, "model": cache.describe(m),
                   "dataset": (m.get("dataset") or {}).get("name"),
                   "epochs": m.get("epochs"), "test / val MSE": cache.recorded_mse(m),
                   "created": m.get("created")} for p, m, _ in saved], hide_index=True)
    if not cache.read_only():
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        victim = c1.selectbox("Delete a checkpoint", [p.name for p, _, _ in saved], key="aelib.t_del_pick")
        if c2.button("Delete", key="aelib.t_del", icon=":material/delete:"):
            cache.delete_checkpoint(cache.checkpoint_dir() / victim)
            st.rerun()

# ---- latent-size sweep ------------------------------------------------------------------------------
st.subheader("Latent-size sweep")
st.caption("The same model at several latent sizes: compression against detail, made visible.")
if latent is None:
    st.info("This preset keeps a feature-map latent; pick a family (fcn / conv / vae) to sweep latent sizes.")
else:
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    sizes = c1.multiselect("Latent sizes", SWEEP_SIZES,
                           cache.kept("aelib.t_sweep_sizes", [16, 48, 64, 128], options=SWEEP_SIZES),
                           key="aelib.t_sweep_sizes")
    if c2.button("Queue sweep", key="aelib.t_sweep", disabled=not sizes):
        sweep = f"{arch}-{epochs}ep-{subset}"
        try:
            for z in sorted(sizes):
                cache.start_run(cfg.replace(latent=z), tc, data, name=f"{prefix}-{arch}-z{z}",
                                subset=subset, tags={"sweep": sweep})
        except AelibError as exc:
            st.error(str(exc))
        st.session_state["aelib.t_sweep_id"] = sweep
        st.rerun()
    sweep = st.session_state.get("aelib.t_sweep_id")
    members = [r for r in cache.session_runs().values() if sweep and r.tags.get("sweep") == sweep]
    done = sorted((r for r in members if r.status == "done" and r.final_val_mse is not None),
                  key=lambda r: r.model_config.latent)
    if members and not done:
        st.caption(f"Sweep queued: {len(members)} runs; results appear as they finish.")
    if done:
        fig = go.Figure(go.Scatter(x=[r.model_config.latent for r in done], y=[r.final_val_mse for r in done],
                                   mode="lines+markers", name="final val MSE"))
        fig.update_layout(xaxis_title="latent size", yaxis_title="final validation MSE", height=300,
                          xaxis_type="log", margin=dict(l=10, r=10, t=20, b=10))
        st.plotly_chart(fig, key="aelib.t_sweep_chart")
        imgs = data.test.images[:8]
        rows = [("original", explore.to_display(imgs), None)]
        for r in done:
            rec = cache.reconstructions(r.model, f"run:{r.id}", imgs, f"{data.key}|test[:8]")
            rows.append((f"latent {r.model_config.latent}", rec, None))
        cache.image_rows(rows)
