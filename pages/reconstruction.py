"""Reconstruction: originals against each model, errors per image and per class, denoising, export."""

from __future__ import annotations

import numpy as np
import streamlit as st

from aelib import checkpoints, explore, export
from aelib.errors import AelibError
from aelib.ui import compute, draw, reconstruction, router, widgets
from aelib.ui.state import kept

MODES = {"first": "First N", "random": "Random", "class": "By class", "index": "By index"}

fr = router.page(__file__)
data = router.need_data(fr)
models = router.need_models(fr, "the comparison")
test = data.test_images
st.caption(f"{data.title} test set ({len(test):,} images) · {len(models)} model(s) picked in the sidebar.")

# ---- which images ------------------------------------------------------------------------------------
c1, c2, c3, c4 = st.columns([2, 2, 2, 2], vertical_alignment="bottom")
modes = [m for m in MODES if m != "class" or data.labelled]  # no classes to pick without labels
mode = c1.radio(
    "Images",
    modes,
    format_func=MODES.get,
    horizontal=True,
    index=modes.index(kept("aelib.r_mode", "first", options=modes)),
    key="aelib.r_mode",
)
n = c2.slider("How many", 1, 24, kept("aelib.r_n", 12), key="aelib.r_n", disabled=mode == "index")
seed, cls, indices = 0, None, None
if mode == "random":
    seed = int(c3.number_input("Seed", 0, 10**6, kept("aelib.r_seed", 0), key="aelib.r_seed"))
elif mode == "class":
    cls = widgets.selectbox(
        "Class", range(len(data.classes)), "aelib.r_class", container=c3,
        format_func=lambda i: data.classes[i],
    )
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
                "latent": m.latent_text,
                "MSE (shown)": float(mse.mean()),
                "mean PSNR dB (shown)": compute.psnr_db(mse, vr),
                "MSE (test set)": float(full.mean()),
                "mean PSNR dB (test set)": compute.psnr_db(full, vr),
            }
        )

draw.image_rows(rows, gray_r)
st.caption(
    "Numbers under the images: per-image MSE in the model's pixel range. Error rows: "
    "|reconstruction - original|, dark = small, yellow = large (same scale for every model). Table: "
    "MSE is the mean over images; PSNR the mean of each image's PSNR, which is not the PSNR of that "
    "mean MSE."
)
draw.table(table, five_digits=("MSE (shown)", "MSE (test set)"))

# ---- per class, denoising ---------------------------------------------------------------------
reconstruction.per_class_panel(data, models, full_errors, gray_r)
reconstruction.denoising_panel(fr, models, shown, gray_r)

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
fname = f"prediction-{checkpoints.file_stem(em.name)}.csv"  # which model made it, once it is on disk
c3.download_button(
    fname,
    lambda: "".join(export.iter_prediction_csv(em.model, src.tensor, row_ids=ids)),
    file_name=fname,
    mime="text/csv",
    key="aelib.r_csv",
    on_click="ignore",  # a download changes nothing: no rerun racing the deferred file
    icon=":material/download:",
)
st.caption(
    "One row per image: row_id, then orig_px{i}, recon_px{i} for every pixel, in the model's pixel range."
)
