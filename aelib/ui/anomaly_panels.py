"""The Anomaly page's score panels: histograms, ROC with AUPR and F1-max, the threshold (best F1,
contamination or by hand), and one uploaded image scored against the normal test images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from .. import checkpoints, explore, export, scoring
from ..data import load_images
from ..errors import AelibError
from . import compute, draw, sources, state, widgets
from .anomaly import Case, scores_of
from .choices import ModelChoice
from .sources import Images


def histogram(s: np.ndarray, labels: np.ndarray | None, title: str, score: str) -> go.Figure:
    fig = go.Figure()
    if labels is not None:
        fig.add_histogram(x=s[labels == 0], name="normal", opacity=0.6, nbinsx=60)
        fig.add_histogram(x=s[labels == 1], name="anomalous", opacity=0.6, nbinsx=60)
    else:
        fig.add_histogram(x=s, name="all test images", nbinsx=60)
    fig.update_layout(
        barmode="overlay",
        title=title,
        height=280,
        margin=dict(l=10, r=10, t=40, b=10),
        xaxis_title=score,
        legend=dict(orientation="h", y=-0.3),
    )
    return fig


def roc_panel(labels: np.ndarray, scores: dict[str, np.ndarray], names: dict[str, str]) -> None:
    fig = go.Figure()
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="gray"), name="chance")
    rows = []
    for k, sc in scores.items():
        r, ev = compute.roc(labels, sc), compute.evaluation(labels, sc)
        fig.add_scatter(x=r["fpr"], y=r["tpr"], mode="lines", name=f"{names[k]} · AUC {r['auc']:.3f}")
        rows.append(
            {"model": names[k], "ROC AUC": ev["auc"], "AUPR": ev["average_precision"], "F1-max": ev["f1_max"]}
        )
    fig.update_layout(
        xaxis_title="false positive rate",
        yaxis_title="true positive rate",
        height=420,
        margin=dict(l=10, r=10, t=10, b=10),
        legend=dict(orientation="h", y=-0.25),
    )
    st.plotly_chart(fig, key="aelib.a_roc")
    # Below the chart, full width: beside it, long model names pushed the figures out of view.
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        column_config={
            k: st.column_config.NumberColumn(format="%.4f", width="small")
            for k in ("ROC AUC", "AUPR", "F1-max")
        },
    )


THRESHOLD_MODEL = "aelib.a_thr_model"  # the Threshold panel's model
CSV_MODEL = "aelib.a_csv_model"  # the scores download's model
THRESHOLDS = {"best_f1": "best F1 on the labels", "contamination": "a contamination rate", "manual": "hand"}


def threshold_key(model_id: str, metric: str) -> str:
    """Where the threshold panel leaves the threshold in force for this model and score."""
    return f"aelib.a_thr_value_{model_id}_{metric}"


@st.fragment
def threshold_panel(
    labels: np.ndarray | None, scores: dict[str, np.ndarray], names: dict[str, str], metric: str
) -> None:
    """A threshold by best F1 (labelled data), by a contamination rate (PyOD's), or by hand; moving it
    reruns only this panel, on cached scores."""
    st.subheader("Threshold")
    c1, c2, c3 = st.columns([2, 3, 2], vertical_alignment="bottom")
    k = widgets.selectbox("Model", list(scores), THRESHOLD_MODEL, container=c1, format_func=names.get)
    ways = ([] if labels is None else ["best_f1"]) + ["contamination", "manual"]
    how = c2.radio("Set by", ways, format_func=THRESHOLDS.get, horizontal=True, key="aelib.a_thr_how")
    s = scores[k]
    if how == "best_f1":
        thr = compute.evaluation(labels, s)["f1_threshold"]
    elif how == "contamination":
        share = float(labels.mean()) if labels is not None else 0.1
        rate = c3.number_input(
            "Contamination",
            0.001,
            0.999,
            round(min(max(share, 0.001), 0.999), 3),
            0.01,
            format="%.3f",
            key="aelib.a_thr_rate",
            help="The share of the test images to flag as anomalies. It starts at the labels' share of "
            "anomalies; in one-class mode most test images are anomalies.",
        )
        thr = scoring.choose_threshold("contamination", s, contamination=float(rate))
    else:
        lo, hi = float(s.min()), float(s.max())
        start = float(np.quantile(s, 1 - (labels.mean() if labels is not None else 0.1)))
        thr = st.slider(
            "Flag as anomaly when score ≥",
            lo,
            hi,
            start,
            (hi - lo) / 500 or 1e-9,
            format="%.5f",
            key=f"aelib.a_thr_{k}_{metric}",
        )
    how_text = THRESHOLDS[how] + (f" ({float(rate):.3f})" if how == "contamination" else "")
    st.session_state[threshold_key(k, metric)] = (float(thr), how_text)
    flagged = int((s >= thr).sum())
    if labels is None:
        st.metric("Flagged as anomalies", f"{flagged:,} of {len(s):,}", help=f"score ≥ {thr:.5g}")
        return
    try:
        res = scoring.threshold_metrics(labels, s, thr)
    except AelibError as exc:
        st.error(str(exc))
        return
    a, b, c, d = st.columns(4)
    a.metric("Precision", f"{res['precision']:.3f}", help=f"threshold {thr:.5g}, {flagged:,} flagged")
    b.metric("Recall", f"{res['recall']:.3f}")
    c.metric("F1", f"{res['f1']:.3f}")
    d.metric("Accuracy", f"{res['accuracy']:.3f}")
    if how == "best_f1" and flagged == len(s):
        # With most test images anomalous (one-class mode), flagging all of them can score the best
        # F1 there is; say so, or the panel reads as "the model cannot tell the classes apart".
        st.caption(
            f":material/info: Best F1 flags every image here: with {labels.mean():.0%} of the test "
            f"images anomalous, calling all of them anomalies already scores F1 {res['f1']:.3f}, and no "
            "lower share beats it. That says little about the scores themselves (their ROC AUC does); "
            "set the threshold by a contamination rate to flag fewer."
        )
    st.dataframe(
        pd.DataFrame(
            {"predicted normal": [res["tn"], res["fn"]], "predicted anomaly": [res["fp"], res["tp"]]},
            index=["normal", "anomalous"],
        )
    )


def _one_picture(up) -> object:
    return load_images(up, max_images=1, max_bytes=64 * 1024**2)


def score_one_panel(
    models: list[ModelChoice], scores: dict[str, np.ndarray], case: Case, metric: str, gray_r: bool,
    names: dict[str, str],
) -> None:
    """One uploaded (or photographed) image: its reconstruction, error map, score, and where the score
    falls among the normal test images' scores."""
    c1, c2 = st.columns(2)
    with c1:
        up = sources.kept_upload(
            "aelib.a_one_up", "An image (PNG / JPEG)", ["png", "jpg", "jpeg"], _one_picture
        )
    shot = (
        c2.camera_input("Or take a picture", key="aelib.a_one_cam")
        if c2.toggle("Use the camera", False, key="aelib.a_one_cam_on")
        else None
    )
    if shot is not None:
        try:
            image, name = _one_picture(shot), "camera picture"
        except AelibError as exc:
            st.error(str(exc))
            return
    elif up is not None:
        image, name = up.value, up.name
    else:
        st.caption("Upload an image to score it with the models above; it is resized to the model's input.")
        return
    m = widgets.pick_model(
        "Model", models, "aelib.a_one_model", names=names,
        prefer=lambda c: c.id == st.session_state.get(THRESHOLD_MODEL),  # the Threshold panel's model
    )
    x = explore.fit_images(image[:1], m.in_shape)
    one = Images(f"one:{state.digest(shot) if shot is not None else up.sha}:{m.in_shape}", x)
    use, one_score = scores_of(m, case, one, metric)  # the table's score, fitted the same way
    score = float(one_score[0])
    ref = scores[m.id] if case.labels is None else scores[m.id][case.labels == 0]
    pct = explore.percentile_of(score, ref)
    thr = st.session_state.get(threshold_key(m.id, metric))
    g = compute.gallery(m, one)
    draw.side_by_side(
        [
            (name, g["original"]),
            (f"reconstruction · {use} {score:.4g}", g["reconstruction"]),  # the score may not be an error
            ("|error|", draw.heatmap(g["abs_error"], vmax=0.5)),
        ],
        gray_r,
    )
    a, b, c = st.columns(3)
    a.metric(f"Score ({use})", f"{score:.4g}")
    b.metric(
        "Percentile among normal test images" if case.labels is not None else "Percentile among test images",
        f"{pct:.1f}%",
    )
    if thr is None:
        c.metric("Flagged", "—", help="Pick this model in the Threshold panel above to set its threshold.")
    else:
        c.metric(
            "Flagged at the threshold",
            "anomaly" if score >= thr[0] else "normal",
            help=f"score ≥ {thr[0]:.5g}: the threshold set for this model in the Threshold panel above, "
            f"by {thr[1]}",
        )


def gallery_panel(
    chosen: list[ModelChoice], scores: dict[str, np.ndarray], case: Case, names: dict[str, str]
) -> bool:
    """The k most and least anomalous test images of one model; returns the reversed-grey choice."""
    st.subheader("Most and least anomalous")
    c1, c2, c3 = st.columns([3, 1, 1], vertical_alignment="bottom")
    gm = widgets.pick_model("Model", chosen, "aelib.a_gal_model", container=c1, names=names)
    k_top = c2.slider("k", 1, 16, 8, key="aelib.a_k")
    with c3:
        gray_r = draw.gray_r_toggle(case.test.shape[0] == 3)
    for title, largest in (("Most anomalous", True), ("Least anomalous", False)):
        idx = explore.top_k(scores[gm.id], k_top, largest=largest)
        g = compute.gallery(gm, case.test.take(idx))
        truth = [("anomaly" if case.labels[i] else "normal") if case.labels is not None else "" for i in idx]
        st.markdown(f"**{title}**")
        draw.image_rows(
            [
                ("original", g["original"], [f"#{i} {t}" for i, t in zip(idx, truth)]),
                ("reconstruction", g["reconstruction"], [f"{scores[gm.id][i]:.3g}" for i in idx]),
                ("|error|", draw.heatmap(g["abs_error"], vmax=0.5), None),
            ],
            gray_r,
        )
    return gray_r


def export_panel(scores: dict[str, np.ndarray], names: dict[str, str], kinds: dict[str, str],
                 models: dict[str, str]) -> None:
    """``id,score`` CSV of any scores shown (a model's or the recommended detector's), named after
    the score it holds and the model (``models``: id -> model name) that gave it."""
    st.subheader("Download scores")
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    dk = widgets.selectbox("Scores of", list(scores), CSV_MODEL, container=c1, format_func=names.get)
    # A model's scores are named after it too; the recommended detector's are the ensemble's.
    fname = f"scores-{kinds[dk]}" + (f"-{checkpoints.file_stem(models[dk])}" if dk in models else "") + ".csv"
    c2.download_button(
        fname,
        lambda: export.scores_csv_bytes(scores[dk]),
        file_name=fname,
        mime="text/csv",
        key="aelib.a_csv",
        on_click="ignore",  # a download changes nothing: no rerun racing the deferred file
        icon=":material/download:",
    )
    st.caption(
        "`id,score` for every test image (id = its index), higher = more anomalous: the leaderboard format."
    )
