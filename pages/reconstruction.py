"""Reconstruction: originals against each model, errors per image and per class, denoising, export."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st
import torch

from aelib import cache, explore, export, scoring
from aelib.errors import AelibError

cache.routed(__file__)

MODES = {"first": "First N", "random": "Random", "class": "By class", "index": "By index"}

cache.remember("aelib.r_", "aelib.gray_r")
fr = cache.current()
data = cache.need_data(fr)
models = cache.need_models(fr, "the comparison")
test = data.test
st.title("Reconstruction")
st.caption(f"{data.title} test set ({len(test):,} images) · {len(models)} model(s) picked in the sidebar.")

# ---- which images ------------------------------------------------------------------------------------
c1, c2, c3, c4 = st.columns([2, 2, 2, 2], vertical_alignment="bottom")
mode = c1.radio("Images", list(MODES), format_func=MODES.get, horizontal=True,
                index=list(MODES).index(cache.kept("aelib.r_mode", "first", options=list(MODES))),
                key="aelib.r_mode")
n = c2.slider("How many", 1, 24, cache.kept("aelib.r_n", 12), key="aelib.r_n", disabled=mode == "index")
seed, cls, indices = 0, None, None
if mode == "random":
    seed = int(c3.number_input("Seed", 0, 10**6, cache.kept("aelib.r_seed", 0), key="aelib.r_seed"))
elif mode == "class":
    if data.classes and data.labelled:
        cls = c3.selectbox("Class", range(len(data.classes)), format_func=lambda i: data.classes[i],
                           key="aelib.r_class")
    else:
        st.warning("This dataset has no labels; showing the first images instead.")
        mode = "first"
elif mode == "index":
    text = c3.text_input("Indices", cache.kept("aelib.r_indices", "0, 1, 2, 3, 4, 5"), key="aelib.r_indices",
                         help="Comma-separated test indices.")
    try:
        indices = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        st.error("Indices must be whole numbers separated by commas, e.g. 3, 17, 42.")
        st.stop()
gray_r = c4.toggle("Reversed grey (gray_r)", cache.kept("aelib.gray_r", True), key="aelib.gray_r")
show_err = c4.toggle("Error heatmap rows", cache.kept("aelib.r_err", True), key="aelib.r_err")
try:
    idx = explore.select_images(n, test.labels, mode, seed=seed, cls=cls, indices=indices, total=len(test))
except AelibError as exc:
    st.error(str(exc))
    st.stop()

imgs = test.images[torch.from_numpy(idx)]
sel_key = f"{data.key}|test|{hashlib.sha1(idx.tobytes()).hexdigest()[:12]}"
test_key = f"{data.key}|test"
orig = explore.to_display(imgs)


def short(m: cache.ModelChoice) -> str:
    return m.label.split(" (")[0]


def psnr_db(mse: np.ndarray, cfg) -> float:
    lo, hi = cfg.value_range
    with np.errstate(divide="ignore"):
        return float(np.mean(10 * np.log10((hi - lo) ** 2 / np.maximum(mse, 1e-12))))


rows = [("original", orig, [f"#{i}" for i in idx])]
table, full_errors = [], {}
with st.spinner("Reconstructing..."):
    for m in models:
        model, cfg = m.model, m.config
        rec = cache.reconstructions(model, m.key, imgs, sel_key)
        mse = cache.errors(model, m.key, imgs, sel_key)["mse"]
        rows.append((short(m), rec, [f"{v:.4f}" for v in mse]))
        if show_err:
            rows.append(("|error|", cache.heatmap(np.abs(rec - orig), vmax=0.5), None))
        full = cache.errors(model, m.key, test.images, test_key)["mse"]
        full_errors[m.key] = full
        table.append({"model": short(m), "family": cfg.family, "latent": cfg.latent,
                      "MSE (shown)": float(mse.mean()), "PSNR dB (shown)": psnr_db(mse, cfg),
                      "MSE (test set)": float(full.mean()), "PSNR dB (test set)": psnr_db(full, cfg)})

cache.image_rows(rows, gray_r)
st.caption("Numbers under the images: per-image MSE in the model's pixel range. Error rows: "
           "|reconstruction - original|, dark = small, yellow = large (same scale for every model).")
st.dataframe(pd.DataFrame(table), hide_index=True)

# ---- per-class error --------------------------------------------------------------------------------------
st.subheader("Error per class")
if not data.labelled:
    st.info("This dataset has no labels, so errors cannot be grouped by class.")
else:
    frames = []
    for m in models:
        pc = scoring.per_class_errors(full_errors[m.key], test.labels, data.classes)
        pc["model"] = short(m)
        frames.append(pc)
    per_class = pd.concat(frames, ignore_index=True)
    fig = px.bar(per_class, x="class", y="mean", color="model", barmode="group", error_y="std",
                 labels={"mean": "mean MSE"}, height=340)
    fig.update_layout(margin=dict(l=10, r=10, t=10, b=10), legend=dict(orientation="h", y=-0.2))
    fig.update_xaxes(type="category")
    event = st.plotly_chart(fig, key="aelib.r_class_chart", on_select="rerun", selection_mode="points")
    clicked = None
    if event and event.selection and event.selection.points:
        clicked = event.selection.points[0].get("x")
    names = [str(c) for c in data.classes] if data.classes else sorted({str(v) for v in per_class["class"]})
    c1, c2 = st.columns([2, 3])
    choice = c1.selectbox("Worst examples of class", names, key="aelib.r_worst_class",
                          help="Or click a bar in the chart.")
    chosen = clicked if clicked in names else choice
    which = c2.selectbox("Model", [m.key for m in models], format_func={m.key: short(m) for m in models}.get,
                         key="aelib.r_worst_model")
    wm = next(m for m in models if m.key == which)
    in_class = np.flatnonzero(test.labels.numpy() == names.index(chosen))
    worst = in_class[explore.top_k(full_errors[wm.key][in_class], 8)]
    g = cache.gallery(wm.model, wm.key, test.images, test_key, tuple(int(i) for i in worst))
    st.caption(f"The 8 worst-reconstructed **{chosen}** images for {short(wm)}"
               + (" (clicked in the chart)." if clicked == chosen else "."))
    cache.image_rows([("original", g["original"], [f"#{i}" for i in worst]),
                      ("reconstruction", g["reconstruction"],
                       [f"{full_errors[wm.key][i]:.4f}" for i in worst]),
                      ("|error|", cache.heatmap(g["abs_error"], vmax=0.5), None)], gray_r)

# ---- denoising -----------------------------------------------------------------------------------
denoisers = [m for m in models if m.noise[0]]
st.subheader("Denoising")
if not denoisers:
    picked = {m.key for m in models}
    others = [m.label.split(" (")[0] for m in fr.compatible if m.noise[0] and m.key not in picked]
    st.caption("None of the picked models was trained in denoising mode"
               + (f"; pick {', '.join(others)} in the sidebar." if others else
                  " (Training page: Denoising option)."))
for m in denoisers:
    kind, level = m.noise
    d = cache.denoise(m.model, m.key, imgs, sel_key, kind, level, 0)
    st.markdown(f"**{short(m)}** — trained on {kind} noise, level {level:g}")
    a, b, c = st.columns(3)
    a.metric("PSNR noisy vs clean", f"{np.mean(d['psnr_noisy']):.2f} dB")
    b.metric("PSNR output vs clean", f"{np.mean(d['psnr_denoised']):.2f} dB",
             delta=f"{np.mean(d['psnr_denoised']) - np.mean(d['psnr_noisy']):+.2f} dB")
    cache.image_rows([("noisy input", d["noisy"], [f"{v:.1f}" for v in d["psnr_noisy"]]),
                      ("output", d["denoised"], [f"{v:.1f}" for v in d["psnr_denoised"]]),
                      ("clean", d["clean"], None)], gray_r)

# ---- export --------------------------------------------------------------------------------------
st.subheader("Download prediction.csv")
c1, c2, c3 = st.columns([2, 2, 2], vertical_alignment="bottom")
which = c1.selectbox("Model", [m.key for m in models], format_func={m.key: short(m) for m in models}.get,
                     key="aelib.r_csv_model")
scope = c2.radio("Images", ["shown", "all"], key="aelib.r_csv_scope", horizontal=True,
                 format_func={"shown": f"the {len(idx)} shown", "all": f"all {len(test):,} test images"}.get)
em = next(m for m in models if m.key == which)
ids = idx if scope == "shown" else np.arange(len(test))
src = imgs if scope == "shown" else test.images
c3.download_button("prediction.csv", lambda: "".join(export.iter_prediction_csv(em.model, src, row_ids=ids)),
                   file_name="prediction.csv", mime="text/csv", key="aelib.r_csv", icon=":material/download:")
st.caption("One row per image: row_id, then orig_px{i}, recon_px{i} for every pixel, in the model's "
           "pixel range.")
