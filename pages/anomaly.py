"""Anomaly detection: reconstruction error as an anomaly score, evaluated against labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from aelib import cache, explore, export, scoring
from aelib.errors import AelibError
from aelib.models import get_config
from aelib.train import TrainConfig

cache.routed(__file__)

METRICS = {"l2": "L2 norm of the error (reference score)", "mse": "Mean squared error",
           "mae": "Mean absolute error", "elbo": "Negative ELBO (VAE only)"}
QUICK = dict(epochs=8, images=6000)

cache.remember("aelib.a_", "aelib.gray_r")
fr = cache.current()
data = cache.need_data(fr)
st.title("Anomaly detection")
cache.show_flash()
st.caption("Train on normal images only; whatever reconstructs badly is flagged. Scores are cached: "
           "the threshold slider recomputes nothing.")

one_class_ok = data.labelled and bool(data.classes) and len(data.classes) > 1
modes = (["one-class"] if one_class_ok else []) + ["upload"]
mode = st.radio("Normal vs anomalous", modes, horizontal=True, key="aelib.a_mode",
                format_func={"one-class": f"One-class: normal classes of {data.title}",
                             "upload": "Uploaded normal training set + test set"}.get)

normals: list[int] = []
train_images = labels = None
if mode == "one-class":
    class_ids = list(range(len(data.classes)))
    normals = st.multiselect("Normal classes", class_ids, format_func=lambda i: data.classes[i],
                             default=cache.kept("aelib.a_normals", [0], options=class_ids),
                             key="aelib.a_normals")
    if not normals:
        st.info("Pick at least one normal class.")
        st.stop()
    try:
        train_n, test_l = cache.one_class(data.key, tuple(sorted(normals)), data.train, data.test)
    except AelibError as exc:
        st.error(str(exc))
        st.stop()
    images, labels, test_key = test_l.images, test_l.labels.numpy(), f"{data.key}|test"
    train_images, train_key = train_n.images, f"{data.key}|normal{sorted(normals)}"
    names = ", ".join(data.classes[i] for i in sorted(normals))
    st.caption(f"Normal: **{names}** ({len(train_n):,} training images). Test: {len(images):,} images, "
               f"{int(labels.sum()):,} anomalous ({labels.mean():.0%}).")
else:
    c1, c2, c3 = st.columns(3)
    up_train = c1.file_uploader("Normal training set (optional)", type=["npy", "npz", "zip"],
                                key="aelib.a_up_train", help="Only needed to train a model here.")
    up_test = c2.file_uploader("Test set", type=["npy", "npz", "zip"], key="aelib.a_up_test")
    up_labels = c3.file_uploader("Test labels (optional, 0 = normal, 1 = anomaly)",
                                 type=["npy", "csv", "txt"], key="aelib.a_up_labels")
    if up_test is None:
        st.info("Upload a test set (e.g. the faces `testingset.npy`) to score it. Labels are optional: "
                "without them you get scores and galleries, with them ROC curves and threshold metrics too.")
        st.stop()
    try:
        images, npz_labels, test_key = cache.uploaded_images(up_test, "test")
        labels = cache.read_labels(up_labels, len(images)) if up_labels is not None else (
            None if npz_labels is None else npz_labels.numpy())
        if up_train is not None:
            train_images, _, train_key = cache.uploaded_images(up_train, "train")
        elif not data.builtin:  # the image set picked in the sidebar serves as the normal set
            train_images, train_key = data.train.images, f"{data.key}|train"
            st.caption(f"Normal training set: the sidebar's {data.title} ({len(train_images):,} images) "
                       "unless you upload another.")
    except AelibError as exc:
        st.error(str(exc))
        st.stop()
    if labels is not None and (labels.min() == labels.max()):
        st.warning("The labels are all the same class, so ROC and threshold metrics cannot be computed.")
        labels = None

shape = tuple(images.shape[1:])
candidates = cache.compatible(fr.all_models, shape)


def fits_normals(m: cache.ModelChoice) -> bool:
    same_data = m.dataset_key in ("", data.builtin)
    return same_data and m.normal_classes is not None and sorted(m.normal_classes) == sorted(normals)


def tag(m: cache.ModelChoice) -> str:
    name = m.label.split(" (")[0]
    if mode != "one-class":
        return name
    if fits_normals(m):
        return f"{name} (one-class)"
    return f"{name} (trained on {'other normal classes' if m.normal_classes is not None else 'all classes'})"


# ---- a one-class model for these classes, trained here -------------------------------------------
offer = train_images is not None and (mode != "one-class" or not any(fits_normals(m) for m in candidates))
if offer:
    if mode == "one-class":
        st.warning("No model was trained on these normal classes only. Scores from models trained on "
                   "all classes are still shown (labelled as such), but they have seen the anomalies "
                   "in training.")
    n_quick = min(len(train_images), QUICK["images"])
    if st.button(f"Train a quick model on the normal images ({QUICK['epochs']} epochs, {n_quick:,} images)",
                 key="aelib.a_train", icon=":material/model_training:"):
        cfg = get_config("conv", shape, latent=32)
        label = "-".join(str(c) for c in sorted(normals)) if normals else "upload"
        try:
            run = cache.start_run(cfg, TrainConfig(epochs=QUICK["epochs"], batch_size=128, lr=2e-3), data,
                                  name=f"{data.builtin or 'upload'}-oneclass-{label}",
                                  train_images=train_images[:n_quick], data_key=f"{train_key}[:{n_quick}]",
                                  tags={"normal_classes": sorted(normals)} if normals else {})
        except AelibError as exc:
            st.error(str(exc))
        else:
            st.session_state["aelib.a_pending"] = run.id
            cache.flash("Training in the background (status in the sidebar); the model is added here "
                        "when done.", "info")

if not candidates:
    st.info(f"No model takes {'x'.join(map(str, shape))} images yet: train one (button above, or the "
            "Training page), or upload a checkpoint in the sidebar.")
    st.stop()

# Models to score with: the sidebar's picks, plus one-class models for these classes.
sel_key = "aelib.a_models"
by_key = {m.key: m for m in candidates}
pending = st.session_state.get("aelib.a_pending")
if sel_key not in st.session_state:
    picked = {m.key for m in fr.models}
    st.session_state[sel_key] = [m.key for m in candidates if m.key in picked or fits_normals(m)][:4] or \
        [candidates[0].key]
if pending and f"run:{pending}" in by_key:
    st.session_state[sel_key] = [k for k in st.session_state[sel_key] if k in by_key] + [f"run:{pending}"]
    st.session_state["aelib.a_pending"] = None
st.session_state[sel_key] = [k for k in st.session_state[sel_key] if k in by_key]
chosen = [by_key[k] for k in st.multiselect("Score with", list(by_key), key=sel_key,
                                            format_func=lambda k: tag(by_key[k]))]
metric = st.selectbox("Score", list(METRICS), format_func=METRICS.get, key="aelib.a_metric",
                      index=list(METRICS).index(cache.kept("aelib.a_metric", "l2", options=list(METRICS))))
if not chosen:
    st.info("Pick at least one model to score with.")
    st.stop()

scores: dict[str, np.ndarray] = {}
names: dict[str, str] = {}
with st.spinner("Scoring the test set..."):
    for m in chosen:
        use = metric if (metric != "elbo" or m.vae) else "l2"
        scores[m.key] = cache.errors(m.model, m.key, images, test_key, (use,))[use]
        names[m.key] = tag(m) + ("" if use == metric else " [l2: not a VAE]")

# ---- distributions and ROC -----------------------------------------------------------------------
st.subheader("Score distributions")
cols = st.columns(min(2, len(chosen)))
for i, (k, s) in enumerate(scores.items()):
    fig = go.Figure()
    if labels is not None:
        fig.add_histogram(x=s[labels == 0], name="normal", opacity=0.6, nbinsx=60)
        fig.add_histogram(x=s[labels == 1], name="anomalous", opacity=0.6, nbinsx=60)
    else:
        fig.add_histogram(x=s, name="all test images", nbinsx=60)
    fig.update_layout(barmode="overlay", title=names[k], height=280, margin=dict(l=10, r=10, t=40, b=10),
                      xaxis_title=metric, legend=dict(orientation="h", y=-0.3))
    cols[i % len(cols)].plotly_chart(fig, key=f"aelib.a_hist_{i}")

if labels is None:
    st.info("No labels for this test set: ROC curves and threshold metrics need them.")
else:
    st.subheader("ROC")
    fig = go.Figure()
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="gray"), name="chance")
    rows = []
    labels_key = f"{test_key}|{mode}|{sorted(normals)}"
    for k, s in scores.items():
        r = cache.roc(labels_key, labels, f"{k}|{test_key}|{metric}", s)
        fig.add_scatter(x=r["fpr"], y=r["tpr"], mode="lines", name=f"{names[k]} · AUC {r['auc']:.3f}")
        rows.append({"model": names[k], "ROC AUC": r["auc"], "average precision": r["average_precision"]})
    fig.update_layout(xaxis_title="false positive rate", yaxis_title="true positive rate", height=420,
                      margin=dict(l=10, r=10, t=10, b=10), legend=dict(orientation="h", y=-0.25))
    c1, c2 = st.columns([3, 2])
    c1.plotly_chart(fig, key="aelib.a_roc")
    c2.dataframe(pd.DataFrame(rows), hide_index=True,
                 column_config={"ROC AUC": st.column_config.NumberColumn(format="%.3f", width="small"),
                                "average precision": st.column_config.NumberColumn("AP", format="%.3f",
                                                                                   width="small")})

    @st.fragment
    def threshold_panel(labels: np.ndarray, scores: dict[str, np.ndarray], names: dict[str, str]) -> None:
        """Moving the threshold reruns only this panel, on cached scores."""
        st.subheader("Threshold")
        k = st.selectbox("Model", list(scores), format_func=names.get, key="aelib.a_thr_model")
        s = scores[k]
        lo, hi = float(s.min()), float(s.max())
        start = float(np.quantile(s, 1 - labels.mean()))
        thr = st.slider("Flag as anomaly when score ≥", lo, hi, start, (hi - lo) / 500 or 1e-9, format="%.5f",
                        key=f"aelib.a_thr_{k}_{metric}")
        res = scoring.threshold_metrics(labels, s, thr)
        a, b, c, d = st.columns(4)
        a.metric("Precision", f"{res['precision']:.3f}")
        b.metric("Recall", f"{res['recall']:.3f}")
        c.metric("F1", f"{res['f1']:.3f}")
        d.metric("Accuracy", f"{res['accuracy']:.3f}")
        st.dataframe(pd.DataFrame({"predicted normal": [res["tn"], res["fn"]],
                                   "predicted anomaly": [res["fp"], res["tp"]]},
                                  index=["normal", "anomalous"]))

    threshold_panel(labels, scores, names)

# ---- galleries -----------------------------------------------------------------------------------
st.subheader("Most and least anomalous")
c1, c2, c3 = st.columns([3, 1, 1], vertical_alignment="bottom")
gk = c1.selectbox("Model", list(scores), format_func=names.get, key="aelib.a_gal_model")
k_top = c2.slider("k", 1, 16, 8, key="aelib.a_k")
gray_r = c3.toggle("Reversed grey (gray_r)", cache.kept("aelib.gray_r", True), key="aelib.gray_r")
gm = by_key[gk]
for title, largest in (("Most anomalous", True), ("Least anomalous", False)):
    idx = explore.top_k(scores[gk], k_top, largest=largest)
    g = cache.gallery(gm.model, gm.key, images, test_key, tuple(int(i) for i in idx))
    truth = [("anomaly" if labels[i] else "normal") if labels is not None else "" for i in idx]
    st.markdown(f"**{title}**")
    cache.image_rows([("original", g["original"], [f"#{i} {t}" for i, t in zip(idx, truth)]),
                      ("reconstruction", g["reconstruction"], [f"{scores[gk][i]:.3g}" for i in idx]),
                      ("|error|", cache.heatmap(g["abs_error"], vmax=0.5), None)], gray_r)

# ---- export --------------------------------------------------------------------------------------
st.subheader("Download scores")
c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
dk = c1.selectbox("Model", list(scores), format_func=names.get, key="aelib.a_csv_model")
c2.download_button("scores.csv", lambda: export.scores_csv_bytes(scores[dk]),
                   file_name=f"scores-{metric}.csv", mime="text/csv", key="aelib.a_csv",
                   icon=":material/download:")
st.caption("`id,score` for every test image (id = its index), higher = more anomalous: the leaderboard "
           "format.")
