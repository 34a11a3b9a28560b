"""The Latent space page's exploring panels: a map you can click, sliders per dimension, the decoded plane."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from .. import explore, recipes
from ..models import DEFAULTS, get_config
from . import compute, draw, runs, state
from .choices import ModelChoice
from .sources import Images, ImageSet
from .state import kept

MAP_IMAGES = 2000
SLIDERS = 8  # dimensions offered as sliders (the most varied first)


def map_panel(mc: ModelChoice, data: ImageSet, gray_r: bool) -> None:
    """PCA or t-SNE of the test codes, coloured by class; a click shows that image and its neighbours."""
    test = data.test_images.head(MAP_IMAGES)
    n = len(test)
    if n < 2:
        st.info(f"The latent map needs at least 2 test images; this dataset has {n}.")
        return
    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    method = c1.radio(
        "Projection",
        ["pca", "tsne"],
        horizontal=True,
        key="aelib.l_proj",
        format_func={"pca": "PCA", "tsne": "t-SNE"}.get,
        index=["pca", "tsne"].index(kept("aelib.l_proj", "pca", options=["pca", "tsne"])),
    )
    k = int(c2.slider("Neighbours shown for a clicked point", 1, 16, 8, key="aelib.l_knn"))
    with st.spinner("t-SNE of the codes (once per model)..." if method == "tsne" else "Projecting..."):
        coords, explained = compute.projection(mc, test, method)
    labels = data.test.labels[:n].numpy() if data.labelled else np.zeros(n, dtype=int)
    names = [data.classes[i] for i in labels] if data.labelled else ["image"] * n
    axis = "PC" if method == "pca" else "t-SNE"
    fig = px.scatter(
        x=coords[:, 0],
        y=coords[:, 1],
        color=names,
        custom_data=[np.arange(n)],
        hover_name=[f"#{i}" for i in range(n)],
        labels={"x": f"{axis} 1", "y": f"{axis} 2", "color": "class"},
        opacity=0.8,
        height=520,
        category_orders={"color": list(data.classes or [])},
        color_discrete_sequence=draw.CLASS_COLOURS,
        render_mode="svg",  # SVG points can be clicked (and selected) reliably in every browser
    )
    fig.update_traces(marker=dict(size=6))
    fig.update_layout(margin=dict(l=10, r=10, t=10, b=10), clickmode="event+select")
    event = st.plotly_chart(fig, key=f"aelib.l_map_{method}", on_select="rerun", selection_mode="points")
    share = "" if explained is None else f"; the two components explain {explained.sum():.0%} of the variance"
    st.caption(
        f"{'PCA' if method == 'pca' else 't-SNE'} of the latent {'means (mu)' if mc.vae else 'codes'} of "
        f"the first {n:,} test images{share}. Click a point to see it and its nearest neighbours."
    )
    points = event.selection.points if event and event.selection else []
    if not points:
        return
    i = _index_of(points[0])
    if i is None or not 0 <= i < n:
        return
    near = explore.nearest_codes(compute.codes(mc, test), i, k)
    one = test.take([i])
    err = compute.errors(mc, one)["mse"][0]
    g = compute.gallery(mc, test.take(np.concatenate([[i], near])))
    tag = f" ({names[i]})" if data.labelled else ""
    st.markdown(f"**Image #{i}**{tag} · reconstruction MSE {err:.5f}")
    draw.side_by_side(
        [
            (f"image #{i}", g["original"][:1]),
            ("reconstruction", g["reconstruction"][:1]),
            ("|error|", draw.heatmap(g["abs_error"][:1], vmax=0.5)),
        ],
        gray_r,
    )
    st.markdown(f"**Its {len(near)} nearest neighbours in latent space**")
    draw.image_rows(
        [
            (
                "neighbours",
                g["original"][1:],
                [f"#{j}" + (f" {names[j]}" if data.labelled else "") for j in near],
            )
        ],
        gray_r,
    )


def _index_of(point: dict) -> int | None:
    """The test index a clicked point carries (its custom data: a list, or a dict by position)."""
    data = point.get("customdata")
    if isinstance(data, dict):
        data = list(data.values())
    if isinstance(data, (list, tuple)) and data:
        data = data[0]
    try:
        return int(data)
    except (TypeError, ValueError):
        return None


def slider_panel(mc: ModelChoice, data: ImageSet, start: Images, tag: str, gray_r: bool) -> None:
    """One slider per latent dimension (the most varied first), starting from an image's code or the
    prior mean; moving one decodes only that image again."""
    z_test = compute.codes(mc, data.test_images.head(1000))
    dims = explore.dims_by_spread(z_test, SLIDERS)
    origin = st.radio(
        "Start from",
        ["image", "prior mean"] if mc.vae else ["image"],
        horizontal=True,
        key="aelib.l_sl_from",
        format_func={"image": f"image {tag}", "prior mean": "the prior mean (0)"}.get,
    )
    base = np.zeros(z_test.shape[1], np.float32) if origin == "prior mean" else compute.codes(mc, start)[0]
    lo, hi = z_test.min(0), z_test.max(0)

    @st.fragment
    def sliders() -> None:
        z = base.copy()
        cols = st.columns(2)
        for j, d in enumerate(dims):
            span = max(float(hi[d] - lo[d]), 1e-3)
            z[d] = cols[j % 2].slider(
                f"z[{d}]",
                float(lo[d] - span / 2),
                float(hi[d] + span / 2),
                float(base[d]),
                span / 100,
                key=f"aelib.l_sl_{mc.id}_{origin}_{tag}_{d}",
            )
        c1, c2 = st.columns([1, 2])
        c1.image(
            draw.for_display(compute.decoded(mc, z[None])[:1], gray_r, 6)[0],
            caption="decoded",
            width="stretch",
        )
        c2.caption(
            f"The {len(dims)} dimensions whose codes vary most over the test images; every other "
            "dimension keeps its starting value. Only this panel reruns."
        )

    sliders()


def plane_panel(
    mc: ModelChoice, data: ImageSet, gray_r: bool, picked: Sequence[ModelChoice] = (),
    available: Sequence[ModelChoice] = (),
) -> None:
    """For a 2-D latent: the decoded grid over the plane, with the test codes drawn over it.
    Otherwise where to find a 2-D model (``picked``: the page's Model list; ``available``: the
    sidebar's), or a button that trains one."""
    if explore.latent_dim(mc.model) != 2:
        st.info("The decoded plane needs a model with a 2-D latent.")
        two_d = [m for m in available if m.config.latent == 2 and m.made_for(data)]
        if two_d:
            m = next((m for m in two_d if m.config.family == mc.config.family), two_d[0])
            where = ("the Model list above" if any(p.id == m.id for p in picked)
                     else "the sidebar's Models to show, then in the Model list above")
            st.caption(f"**{m.name}** has a 2-D latent: pick it in {where}.")
            return
        _train_2d(mc, data)
        return
    z = compute.codes(mc, data.test_images.head(MAP_IMAGES))
    lo, hi = np.percentile(z, 1, axis=0), np.percentile(z, 99, axis=0)
    n = int(st.slider("Grid size", 6, 20, 12, key="aelib.l_plane_n"))
    images, xs, ys = compute.plane(mc, (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1])), n)
    grid = explore.image_grid([draw.for_display(row, gray_r, 2) for row in images], pad=2)
    c1, c2 = st.columns(2)
    c1.image(
        grid,
        caption=f"{n}x{n} decoded codes, z[0] {xs[0]:.2f} … {xs[-1]:.2f} (left to right), "
        f"z[1] {ys[0]:.2f} … {ys[-1]:.2f} (top to bottom)",
        width="stretch",
    )
    labels = data.test.labels[: len(z)].numpy() if data.labelled else np.zeros(len(z), dtype=int)
    fig = go.Figure()
    for c in np.unique(labels):
        sel = labels == c
        fig.add_scatter(
            x=z[sel, 0],
            y=z[sel, 1],
            mode="markers",
            marker=dict(size=4, color=draw.CLASS_COLOURS[c % 10]),
            name=data.classes[c] if data.labelled else "image",
        )
    fig.update_layout(
        height=420,
        margin=dict(l=10, r=10, t=10, b=10),
        xaxis_title="z[0]",
        yaxis_title="z[1]",
        xaxis_range=[xs[0], xs[-1]],
        yaxis_range=[ys[-1], ys[0]],
    )
    c2.plotly_chart(fig, key="aelib.l_plane_codes")


def _train_2d(mc: ModelChoice, data: ImageSet) -> None:
    """A button that trains this model's family with a 2-D latent on the sidebar's images, at the
    Training page's defaults, in the background; the run joins the Model list when it is done."""
    family = mc.config.family
    if family not in DEFAULTS or tuple(mc.config.in_shape) != tuple(data.shape):
        st.caption("On the Training page, pick a family, set Latent size to 2, and train one.")
        return
    active = runs.active_run()
    if active is not None:
        st.caption(
            f"Training **{active.name}** now: it joins the Model list when it is done."
            if active.model_config.latent == 2
            else f"Training **{active.name}** now; a 2-D model can start when it is done."
        )
        return
    n = min(len(data.train), runs.TRAIN_IMAGES)
    prefix = data.builtin or "data"
    if st.button(
        f"Train a 2-D {family} on {n:,} of these images",
        key="aelib.l_plane_train",
        icon=":material/model_training:",
        help="The Training page's defaults for this family, latent size 2; it trains in the "
        "background (you can switch pages) and appears in the Model list when done.",
    ):
        run = runs.start_on(data, get_config(family, tuple(data.shape), latent=2),
                            recipes.train_config_for(family, n), name=f"{prefix}-{family}-z2", subset=n)
        # A full rerun, so the sidebar shows the run now and refreshes the model lists when it ends.
        state.flash(f"Training **{run.name}** in the background; it joins the Model list when it is done.",
                    "info")
