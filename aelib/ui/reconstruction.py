"""The Reconstruction page's panels: error per class (with the worst examples) and denoising."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from .. import explore, scoring
from . import compute, draw, widgets
from .choices import ModelChoice
from .sidebar import Frame
from .sources import Images, ImageSet


def per_class_panel(
    data: ImageSet, models: list[ModelChoice], full_errors: dict[str, np.ndarray], gray_r: bool
) -> None:
    """Mean error per class for each model (one legend entry per model id), and the worst examples of a
    class, picked in a list or by clicking a bar."""
    test = data.test_images
    st.subheader("Error per class")
    if not data.labelled:
        st.info("This dataset has no labels, so errors cannot be grouped by class.")
    else:
        per_class = pd.concat(
            [
                scoring.per_class_errors(full_errors[m.id], data.test.labels, data.classes).assign(
                    model=m.name
                )
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
            event.selection.points[0].get("x")
            if event and event.selection and event.selection.points
            else None
        )
        names = [str(c) for c in data.classes]
        c1, c2 = st.columns([2, 3])
        choice = widgets.selectbox(
            "Worst examples of class", names, "aelib.r_worst_class", container=c1, help="Or click a bar."
        )
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


def denoising_panel(fr: Frame, models: list[ModelChoice], shown: Images, gray_r: bool) -> None:
    """Noisy input, output and clean image for each picked model trained in denoising mode."""
    denoisers = [m for m in models if m.noise[0]]
    st.subheader("Denoising")
    if not denoisers:
        picked = {m.id for m in models}
        others = [m.name for m in fr.compatible  # this data's denoisers (another dataset's also fit)
                  if m.noise[0] and m.id not in picked and (fr.data is None or m.made_for(fr.data))]
        st.caption(
            "None of the picked models was trained in denoising mode"
            + (
                f"; pick {', '.join(others)} in the sidebar."
                if others
                else " (Training page: Denoising option)."
            )
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
