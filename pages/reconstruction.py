"""Reconstruction: originals against each model, errors per image and per class, denoising, export."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from aelib import explore, export, scoring
from aelib.errors import AelibError
from aelib.ui import compute, draw, router, widgets
from aelib.ui.state import kept

MODES = {"first": "First N", "random": "Random", "class": "By class", "index": "By index"}

fr = router.page(__file__)
data = router.need_data(fr)
models = router.need_models(fr, "the comparison")
test = data.test_images
st.caption(f"{data.title} test set ({len(test):,} images) · {len(models)} model(s) picked in the sidebar.")

# ---- which images ------------------------------------------------------------------------------------
c1, c2, c3, c4 = st.columns([2, 2, 2, 2], vertical_alignment="bottom")
mode = c1.radio(
    "Images",
    list(MODES),
    format_func=MODES.get,
    horizontal=True,
    index=list(MODES).index(kept("aelib.r_mode", "first", options=list(MODES))),
    key="aelib.r_mode",
)
n = c2.slider("How many", 1, 24, kept("aelib.r_n", 12), key="aelib.r_n", disabled=mode == "index")
seed, cls, indices = 0, None, None
if mode == "random":
    seed = int(c3.number_input("Seed", 0, 10**6, kept("aelib.r_seed", 0), key="aelib.r_seed"))
elif mode == "class":
    if data.labelled:
        cls = c3.selectbox(
            "Class", range(len(data.classes)), format_func=lambda i: data.classes[i], key="aelib.r_class"
        )
    else:
        st.warning("This dataset has no labels; showing the first images instead.")
        mode = "first"
elif mode == "index":
    text = c3.text_input(
        "Indices",
        kept("aelib.r_indices", "0, 1, 2, 3, 4, 5"),
        key="aelib.r_indices",
        help="Comma-separated test indices.",
    )
    try:
        indices = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        st.error("Indices must be whole numbers separated by commas, e.g. 3, 17, 42.")
        st.stop()
with c4:
    gray_r = draw.gray_r_toggle(data.colour)
    show_err = st.toggle("Error heatmap rows", kept("aelib.r_err", True), key="aelib.r_err")
try:
    idx = explore.select_images(
        n, data.test.labels, mode, seed=seed, cls=cls, indices=indices, total=len(test)
    )
except AelibError as exc:
    st.error(str(exc))
    st.stop()

shown = test.take(idx)
orig = explore.to_display(shown.tensor)
rows = [("original", orig, [f"#{i}" for i in idx])]
table, full_errors = [], {}
with st.spinner("Reconstructing..."):
    for m in models:
        rec = compute.reconstructions(m, shown)
        mse = compute.errors(m, shown)["mse"]
        rows.append((m.name, rec, [f"{v:.4f}" for v in mse]))
        if show_err:
            rows.append(("|error|", draw.heatmap(np.abs(rec - orig), vmax=0.5), None))
        full = full_errors[m.id] = compute.errors(m, test)["mse"]
        vr = m.config.value_range
        table.append(
            {
                "model": m.name,
                "family": m.config.family,
                "latent": m.config.latent,
                "MSE (shown)": float(mse.mean()),
                "PSNR dB (shown)": compute.psnr_db(mse, vr),
                "MSE (test set)": float(full.mean()),
                "PSNR dB (test set)": compute.psnr_db(full, vr),
            }
        )

draw.image_rows(rows, gray_r)
st.caption(
    "Numbers under the images: per-image MSE in the model's pixel range. Error rows: "
    "|reconstruction - original|, dark = small, yellow = large (same scale for every model)."
)
draw.table(table, five_digits=("MSE (shown)", "MSE (test set)"))

# ---- per-class error --------------------------------------------------------------------------------------
st.subheader("Error per class")
if not data.labelled:
    st.info("This dataset has no labels, so errors cannot be grouped by class.")
else:
    per_class = pd.concat(
        [
            scoring.per_class_errors(full_errors[m.id], data.test.labels, data.classes).assign(model=m.name)
            for m in models
        ],
        ignore_index=True,
    )
    fig = px.bar(
        per_class,
        x="class",
        y="mean",
        color="model",
        barmode="group",
        error_y="std",
        labels={"mean": "mean MSE"},
        height=340,
        color_discrete_sequence=draw.CLASS_COLOURS,
    )
    fig.update_layout(margin=dict(l=10, r=10, t=10, b=10), legend=dict(orientation="h", y=-0.2))
    fig.update_xaxes(type="category")
    event = st.plotly_chart(fig, key="aelib.r_class_chart", on_select="rerun", selection_mode="points")
    clicked = (
        event.selection.points[0].get("x") if event and event.selection and event.selection.points else None
    )
    names = [str(c) for c in data.classes]
    c1, c2 = st.columns([2, 3])
    choice = c1.selectbox("Worst examples of class", names, key="aelib.r_worst_class", help="Or click a bar.")
    chosen = clicked if clicked in names else choice
    wm = widgets.pick_model("Model", models, "aelib.r_worst_model", container=c2)
    in_class = np.flatnonzero(data.test.labels.numpy() == names.index(chosen))
    worst = in_class[explore.top_k(full_errors[wm.id][in_class], 8)]
    g = compute.gallery(wm, test.take(worst))
    st.caption(
        f"The 8 worst-reconstructed **{chosen}** images for {wm.name}"
        + (" (clicked in the chart)." if clicked == chosen else ".")
    )
    draw.image_rows(
        [
            ("original", g["original"], [f"#{i}" for i in worst]),
            ("reconstruction", g["reconstruction"], [f"{full_errors[wm.id][i]:.4f}" for i in worst]),
            ("|error|", draw.heatmap(g["abs_error"], vmax=0.5), None),
        ],
        gray_r,
    )

# ---- denoising -----------------------------------------------------------------------------------
denoisers = [m for m in models if m.noise[0]]
st.subheader("Denoising")
if not denoisers:
    picked = {m.id for m in models}
    others = [m.name for m in fr.compatible if m.noise[0] and m.id not in picked]
    st.caption(
        "None of the picked models was trained in denoising mode"
        + (f"; pick {', '.join(others)} in the sidebar." if others else " (Training page: Denoising option).")
    )
for m in denoisers:
    kind, level = m.noise
    d = compute.denoise(m, shown, kind, level, 0)
    st.markdown(f"**{m.name}** — trained on {kind} noise, level {level:g}")
    a, b = st.columns(2)
    a.metric("PSNR noisy vs clean", f"{np.mean(d['psnr_noisy']):.2f} dB")
    b.metric(
        "PSNR output vs clean",
        f"{np.mean(d['psnr_denoised']):.2f} dB",
        delta=f"{np.mean(d['psnr_denoised']) - np.mean(d['psnr_noisy']):+.2f} dB",
    )
    draw.image_rows(
        [
            ("noisy input", d["noisy"], [f"{v:.1f}" for v in d["psnr_noisy"]]),
            ("output", d["denoised"], [f"{v:.1f}" for v in d["psnr_denoised"]]),
            ("clean", d["clean"], None),
        ],
        gray_r,
    )

# ---- export --------------------------------------------------------------------------------------
st.subheader("Download prediction.csv")
c1, c2, c3 = st.columns([2, 2, 2], vertical_alignment="bottom")
em = widgets.pick_model("Model", models, "aelib.r_csv_model", container=c1)
scope = c2.radio(
    "Images",
    ["shown", "all"],
    key="aelib.r_csv_scope",
    horizontal=True,
    format_func={"shown": f"the {len(idx)} shown", "all": f"all {len(test):,} test images"}.get,
)
ids, src = (idx, shown) if scope == "shown" else (np.arange(len(test)), test)
c3.download_button(
    "prediction.csv",
    lambda: "".join(export.iter_prediction_csv(em.model, src.tensor, row_ids=ids)),
    file_name="prediction.csv",
    mime="text/csv",
    key="aelib.r_csv",
    icon=":material/download:",
)
st.caption(
    "One row per image: row_id, then orig_px{i}, recon_px{i} for every pixel, in the model's pixel range."
)
