"""Latent space: interpolation, prior samples, traversal of one dimension, a 2-D map of the test set."""

from __future__ import annotations

import numpy as np
import streamlit as st

from aelib import explore
from aelib.errors import AelibError
from aelib.ui import compute, draw, latent, router, sources, widgets
from aelib.ui.sources import Images
from aelib.ui.state import kept

fr = router.page(__file__)
data = router.need_data(fr)
models = router.need_models(fr, "the latent space")
test = data.test_images

c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
mc = widgets.pick_model("Model", models, "aelib.l_model", prefer=lambda m: m.vae, container=c1)
with c2:
    gray_r = draw.gray_r_toggle(data.colour)
dim = explore.latent_dim(mc.model)
if mc.vae:
    st.caption(f"Variational autoencoder, latent of {dim} dims: codes are the encoder's means (mu).")
else:
    st.info(
        "**Plain autoencoder**: it has a latent space too (interpolation, traversal and the map work on "
        "its codes), but no prior: nothing makes the space between codes meaningful. Compare with a VAE "
        "to see the difference; prior samples need a VAE."
    )


def image_picker(label: str, default: int, key: str) -> tuple[Images, str]:
    """One image and a short tag: a test image by index, the first of a class, or an upload."""
    ways = ["index"] + (["class"] if data.labelled else []) + ["upload"]
    how = st.radio(label, ways, horizontal=True, key=f"{key}_how")
    if how == "class":
        c = widgets.selectbox(
            "Class",
            range(len(data.classes)),
            f"{key}_cls",
            index=default % len(data.classes),
            format_func=lambda i: data.classes[i],
        )
        found = np.flatnonzero(data.test.labels.numpy() == c)
        i = int(found[0]) if len(found) else 0
        return test.take([i]), f"#{i}"
    if how == "upload":
        try:
            up = sources.kept_upload(
                f"{key}_up", "PNG, JPEG or .npy", ["png", "jpg", "jpeg", "npy"], sources.read_upload
            )
        except AelibError as exc:
            st.error(str(exc))
            up = None
        if up is not None:
            images = up.value[0]
            if tuple(images.shape[1:]) == mc.in_shape:
                return Images(up.key, images[:1]), up.name
            st.error(
                f"This model takes {sources.shape_text(mc.in_shape)} images; {up.name} holds "
                f"{sources.shape_text(images.shape[1:])}."
            )
        st.caption("Until an image is uploaded, test image 0 stands in.")
        return test.take([0]), "#0"
    i = int(st.number_input("Test index", 0, len(test) - 1, min(default, len(test) - 1), key=f"{key}_idx"))
    return test.take([i]), f"#{i}"


tab_i, tab_p, tab_t, tab_m, tab_s, tab_g = st.tabs(
    ["Interpolation", "Prior samples", "Traversal", "Latent map", "Sliders", "Decoded plane"]
)

with tab_i:
    c1, c2, c3 = st.columns([2, 2, 3])
    # Default end point: the first test image of another class than image 0 (a 6 -> 6 path shows little).
    other = np.flatnonzero(data.test.labels.numpy() != int(data.test.labels[0])) if data.labelled else []
    with c1:
        a, ta = image_picker("Start image", 0, "aelib.l_a")
    with c2:
        b, tb = image_picker("End image", int(other[0]) if len(other) else 1, "aelib.l_b")
    with c3:
        steps = st.slider("Steps (k)", 3, 16, kept("aelib.l_steps", 10), key="aelib.l_steps")
        method = st.radio(
            "Path",
            ["linear", "spherical"],
            horizontal=True,
            key="aelib.l_method",
            index=["linear", "spherical"].index(
                kept("aelib.l_method", "linear", options=["linear", "spherical"])
            ),
            help="Linear: straight line between the codes. Spherical (slerp): along the great "
            "circle, keeping the norm, which suits a Gaussian prior.",
        )
    st.markdown(
        f"**{method.capitalize()} interpolation** in the {'VAE' if mc.vae else 'plain autoencoder'} "
        f"latent, image {ta} → {tb}"
    )
    draw.strip(compute.interpolation(mc, a, b, steps, method), gray_r)
    fine = compute.interpolation(mc, a, b, 65, method)

    @st.fragment
    def scrub(fine: np.ndarray) -> None:
        """Scrubbing redraws only this fragment, from frames decoded once (no model call)."""
        t = st.slider("Position along the path", 0.0, 1.0, 0.5, 1 / 64, key="aelib.l_scrub")
        frame = fine[int(round(t * (len(fine) - 1)))]
        c1, c2 = st.columns([1, 3])
        c1.image(draw.for_display(frame[None], gray_r, 8)[0], caption=f"t = {t:.3f}", width="stretch")
        c2.caption("The slider moves through 65 precomputed frames along the path; only this panel reruns.")

    scrub(fine)

with tab_p:
    if not mc.vae:
        st.info(
            "Sampling from the prior needs a VAE: a plain autoencoder has no distribution to sample from."
        )
    else:
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        temp = c1.slider(
            "Temperature",
            0.0,
            2.0,
            kept("aelib.l_temp", 1.0),
            0.05,
            key="aelib.l_temp",
            help="Scale of z ~ N(0, T² I): lower is blander and more typical, higher more varied.",
        )
        st.session_state.setdefault("aelib.l_seed", 0)
        if c2.button("Reseed", key="aelib.l_reseed", icon=":material/casino:"):
            st.session_state["aelib.l_seed"] += 1
        seed = int(st.session_state["aelib.l_seed"])
        samples = compute.prior_samples(mc, 32, float(temp), seed)
        grid = explore.image_grid(
            [draw.for_display(samples[i : i + 8], gray_r, 3) for i in range(0, 32, 8)], pad=6
        )
        st.image(grid, width="stretch", caption=f"32 samples, temperature {temp:g}, seed {seed}")

with tab_t:
    c1, c2 = st.columns([2, 3])
    with c1:
        img, tag = image_picker("Image", 2, "aelib.l_t")
    with c2:
        d = st.slider("Latent dimension", 0, max(dim - 1, 1), 0, key="aelib.l_dim", disabled=dim == 1)
        d = min(d, dim - 1)
        n_steps = st.slider("Steps from -3 to 3", 3, 15, 9, 2, key="aelib.l_tsteps")
    scale = 1.0
    if not mc.vae:  # no prior: move in units of that dimension's spread over the test images
        scale = float(compute.codes(mc, test.head(1000))[:, d].std()) or 1.0
    trav = compute.traversal(mc, img, int(d), n_steps, scale)
    what = "z[{d}] set to -3 … 3 (prior units)" if mc.vae else "z[{d}] moved by -3 … 3 standard deviations"
    st.markdown(f"**Traversal** of image {tag}: " + what.format(d=d) + ", every other dimension fixed.")
    draw.strip(trav, gray_r, captions=[f"{v:+.1f}" for v in np.linspace(-3, 3, n_steps)])

with tab_m:
    latent.map_panel(mc, data, gray_r)

with tab_s:
    c1, c2 = st.columns([2, 3])
    with c1:
        start, tag = image_picker("Start image", 0, "aelib.l_s")
    with c2:
        latent.slider_panel(mc, data, start, tag, gray_r)

with tab_g:
    latent.plane_panel(mc, data, gray_r, models, fr.compatible)
