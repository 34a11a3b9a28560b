"""Overview: what the dashboard does and what is ready to use."""

from __future__ import annotations

import streamlit as st

from aelib import checkpoints
from aelib.ui import choices, draw, router, state

fr = router.page(__file__, title=False)
st.title("aelib · autoencoders you can look inside")
st.markdown(
    "Train fully connected, convolutional and variational autoencoders, compare their "
    "reconstructions, walk through a VAE's latent space and use reconstruction error to flag anomalies. "
    "Pick a dataset and models in the sidebar; every page uses them."
)

links = router.PAGES[1:]
for col, spec in zip(st.columns(len(links)), links):
    col.page_link(spec.file, label=spec.title, icon=spec.icon)
    col.caption(spec.blurb)

st.subheader("Ready to use")
if fr.data is None:
    st.info(router.no_data_hint())
else:
    c, h, w = fr.data.shape
    a, b, d = st.columns(3)
    a.metric("Dataset", fr.data.title)
    b.metric("Images (train / test)", f"{len(fr.data.train):,} / {len(fr.data.test):,}")
    own = sum(m.made_for(fr.data) for m in fr.compatible)
    others = len(fr.compatible) - own
    d.metric(  # a 28x28 model of Fashion-MNIST also takes MNIST: counted apart, not as MNIST's
        f"Models for {fr.data.title}",
        own,
        help=f"Shipped, saved and uploaded checkpoints and this session's runs trained on {fr.data.title} "
        "(the table below lists the checkpoint files only)."
        + (f" {others} more take {c}x{h}x{w} images but were trained on other data." if others else ""),
    )
    if others:
        d.caption(f"and {others} trained on other {c}x{h}x{w} data")  # a leading "+" is a Markdown list
    st.caption(f"Data: {fr.data.origin}.")

mgr = state.manager()
st.caption(
    f"Training on this server: {mgr.running_count()} of {mgr.max_runs} slot(s) in use, "
    f"{mgr.queued_count()} run(s) queued."
)

files = [m for m in fr.all_models + fr.copies if m.origin in ("shipped", "saved")]
if not files:
    st.info(
        "No checkpoints on this server yet. Train a model on the **Training** page (and save it there), "
        "or upload a `.safetensors` checkpoint in the sidebar."
    )
else:
    draw.table(  # every MSE to the same five decimals (0.016 beside 0.0158 read as less precise)
        [
            {
                "model": m.name,
                "kind": choices.ORIGINS[m.origin],
                "about": checkpoints.describe(m.meta),
                "input": "x".join(str(v) for v in m.in_shape),
                "dataset": m.data.name,
                "test / val MSE": checkpoints.recorded_mse(m.meta),
            }
            for m in files
        ],
        five_digits=("test / val MSE",),
    )
