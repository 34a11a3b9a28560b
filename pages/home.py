"""Overview: what the dashboard does and what is ready to use."""

from __future__ import annotations

import streamlit as st

from aelib import cache

cache.routed(__file__)

fr = cache.current()
st.title("aelib · autoencoders you can look inside")
st.markdown(
    "Train fully connected, convolutional and variational autoencoders, compare their "
    "reconstructions, walk through a VAE's latent space and use reconstruction error to flag anomalies. "
    "Pick a dataset and models in the sidebar; every page uses them.")

cols = st.columns(4)
cols[0].page_link("pages/training.py", label="Training", icon=":material/model_training:")
cols[0].caption("Train in the background, watch the loss, stop, save; latent-size sweeps.")
cols[1].page_link("pages/reconstruction.py", label="Reconstruction", icon=":material/compare:")
cols[1].caption("Originals vs each model, error maps, per-class error, denoising, prediction.csv.")
cols[2].page_link("pages/latent.py", label="Latent space", icon=":material/scatter_plot:")
cols[2].caption("Interpolate, sample the prior, traverse one dimension, map the test set.")
cols[3].page_link("pages/anomaly.py", label="Anomaly detection", icon=":material/troubleshoot:")
cols[3].caption("One-class or uploaded sets: score histograms, ROC/AUC, threshold, galleries.")

st.subheader("Ready to use")
if fr.data is None:
    st.info("Pick a dataset in the sidebar.")
else:
    c, h, w = fr.data.shape
    a, b, d = st.columns(3)
    a.metric("Dataset", fr.data.title, help=fr.data.origin)
    b.metric("Images (train / test)", f"{len(fr.data.train):,} / {len(fr.data.test):,}")
    d.metric(f"Models for {c}x{h}x{w}", len(fr.compatible))
    st.caption(f"Data: {fr.data.origin}.")

mgr = cache.manager()
st.caption(f"Training on this server: {mgr.running_count()} of {mgr.max_runs} slot(s) in use, "
           f"{mgr.queued_count()} run(s) queued.")

saved = cache.saved_checkpoints()
folder = cache.checkpoint_dir()
if not saved:
    st.info(f"No checkpoints in `{folder}` yet. Train a model on the **Training** page (and save it there), "
            "upload a `.safetensors` checkpoint in the sidebar, or create some from the command line, e.g. "
            "`python -m aelib train --help`.")
else:
    st.dataframe([{"checkpoint": p.stem, "model": cache.describe(m),
                   "input": "x".join(str(v) for v in m["model"]["in_shape"]),
                   "dataset": (m.get("dataset") or {}).get("name", ""),
                   "test / val MSE": cache.recorded_mse(m)} for p, m, _ in saved],
                 hide_index=True)
