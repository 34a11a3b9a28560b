"""The Anomaly page's pieces: where the normal and test images come from, the recommended detector
(trained as this session's runs), and the score panels (histograms, ROC, threshold, one image)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from .. import anomaly as recipes
from .. import scoring
from ..checkpoints import DataInfo
from ..data import read_anomaly_labels
from ..errors import AelibError
from ..scoring import SCORES
from ..worker import FAILED, Run
from . import compute, runs, sources, state
from .choices import ModelChoice
from .sources import Images, ImageSet

METRICS = SCORES  # every score the library computes, named once there
DETECTOR = "detector:"  # id prefix of the recommended detector's scores (an ensemble, not one model)


@dataclass(frozen=True)
class Case:
    """What the page scores: test images, their 0/1 labels (None: unknown), the normal training images
    a model may be trained on, and what a checkpoint should record about them."""

    test: Images
    labels: np.ndarray | None
    normal: Images | None
    info: DataInfo
    what: str  # a phrase naming the normal data, for run names and captions

    @property
    def normal_classes(self) -> tuple[int, ...] | None:
        return self.info.normal_classes


def one_class_case(data: ImageSet, normals: tuple[int, ...]) -> Case:
    train, test, labels = sources.one_class(data, normals)
    info = DataInfo(
        name=data.title,
        key=data.builtin or "",
        split=f"train, classes {list(normals)}",
        n_train=len(train),
        classes=tuple(data.classes),
        normal_classes=normals,
    )
    return Case(test, labels, train, info, f"{data.builtin or 'data'}-oneclass-{'-'.join(map(str, normals))}")


def _raw(up) -> bytes:
    return up.getvalue()


def upload_case(data: ImageSet, cols) -> Case | None:
    """Uploaded test set (+ labels, + normal training set); None until a test set is uploaded."""
    up_train = sources.kept_upload(
        "aelib.a_up_train",
        "Normal training set (optional)",
        ["npy", "npz", "zip"],
        sources.read_upload,
        container=cols[0],
        help="Only needed to train a model here.",
    )
    up_test = sources.kept_upload(
        "aelib.a_up_test", "Test set", ["npy", "npz", "zip"], sources.read_upload, container=cols[1]
    )
    up_labels = sources.kept_upload(
        "aelib.a_up_labels",
        "Test labels (optional, 0 = normal, 1 = anomaly)",
        ["npy", "csv", "txt"],
        _raw,
        container=cols[2],
    )
    if up_test is None:
        return None
    images, npz_labels = up_test.value
    test = Images(up_test.key, images)
    labels = None if npz_labels is None else npz_labels.numpy()
    if up_labels is not None:
        labels = read_anomaly_labels(up_labels.value, up_labels.name, len(test))
    normal, name = None, ""
    if up_train is not None:
        normal, name = Images(up_train.key, up_train.value[0]), up_train.name
    elif (
        not data.builtin and data.shape == test.shape
    ):  # the sidebar's own image set serves as the normal set
        normal, name = data.train_images, data.title
        st.caption(
            f"Normal training set: the sidebar's {data.title} ({len(normal):,} images) unless you "
            "upload another."
        )
    if labels is not None and labels.min() == labels.max():
        st.warning("The labels are all the same class, so ROC and threshold metrics cannot be computed.")
        labels = None
    stem = name.rsplit(".", 1)[0] if name else "upload"
    info = DataInfo(
        name=name or "uploaded images",
        split="uploaded normal set",
        n_train=None if normal is None else len(normal),
    )
    return Case(test, labels, normal, info, f"{stem}-normal")


def recipe_for(case: Case) -> recipes.Recipe:
    """The recommended detector's recipe for the case's normal images (their own shape)."""
    return recipes.recommended_recipe(case.normal.shape, len(case.normal))


def _recipe_normal(case: Case) -> Images:
    """The normal images the recipe trains on (its seeded subset) and its ensemble is fitted on."""
    n = recipe_for(case).max_images
    return Images(f"{case.normal.key}|recipe{n}", recipes.normal_subset(case.normal.tensor, n, seed=0))


def _group(case: Case) -> str:
    return f"{case.normal.key}|{case.test.shape}"


def start_recommended(case: Case) -> list[Run]:
    """Queue the recommended detector's members as this session's runs, on the recipe's subset of
    the normal images; their scores are combined once all are done (:func:`detector_runs`)."""
    recipe = recipe_for(case)
    normal = _recipe_normal(case)
    val = (
        case.test.head(runs.VAL_IMAGES)
        if case.labels is None
        else case.test.take(np.flatnonzero(case.labels == 0)[: runs.VAL_IMAGES])
    )
    group = _group(case)
    return [
        runs.start(
            m.model,
            m.train,
            normal,
            val,
            name=f"{case.what}-{recipe.name}-{m.model.family}",
            data=case.info,
            tags={"detector": group, "member": i, "score": m.score},
        )
        for i, m in enumerate(recipe.members)
    ]


def detector_runs(case: Case) -> list[Run]:
    """This session's runs of the recommended detector for this case, in member order (latest group)."""
    group = _group(case)
    found = [r for r in runs.session_runs().values() if r.tags.get("detector") == group]
    n = len(recipe_for(case).members)
    return sorted(found[-n:], key=lambda r: r.tags["member"]) if len(found) >= n else found


def detector_status(members: list[Run]) -> None:
    """The recommended detector's progress and outcome, on this page (a failure is said here)."""
    if not members:
        return
    active = any(r.active for r in members)

    @st.fragment(run_every=1.0 if active else None)
    def panel() -> None:
        failed = [r for r in members if r.status == FAILED]
        if failed:
            st.error(f"Training {failed[0].name} failed: {failed[0].message}")
        elif any(r.active for r in members):
            done = sum(runs.epochs_done(r) for r in members)
            total = sum(r.total_epochs for r in members)
            st.progress(
                done / max(total, 1),
                text=f"Training the recommended detector: {done}/{total} epochs "
                f"over {len(members)} model(s); it joins the scores below when it finishes",
            )
            st.session_state[state.NS + "a_pending_live"] = True
        elif st.session_state.get(state.NS + "a_pending_live"):
            st.session_state[state.NS + "a_pending_live"] = False
            st.rerun(scope="app")
        for r in members:
            if r.message and r.status != FAILED:
                st.warning(f"{r.name}: {r.message}")

    panel()


def detector_scores(
    members: list[Run], by_id: dict[str, ModelChoice], case: Case
) -> tuple[str, np.ndarray] | None:
    """(id, scores of the test images) of the finished recommended detector, or None."""
    chosen = [by_id.get(f"run:{r.id}") for r in members]
    if not members or any(m is None for m in chosen) or any(r.status != "done" for r in members):
        return None
    names = tuple(r.tags["score"] for r in members)
    normal = _recipe_normal(case)
    return DETECTOR + "+".join(m.id for m in chosen), compute.ensemble(
        tuple(chosen), names, normal, case.test
    )


def fits(m: ModelChoice, case: Case, data: ImageSet) -> bool:
    """A one-class model of exactly these normal classes of this dataset."""
    return (
        case.normal_classes is not None
        and m.data.normal_classes == case.normal_classes
        and m.data.key in ("", data.builtin or "")
    )


def tag(m: ModelChoice, case: Case, data: ImageSet) -> str:
    if case.normal_classes is None:
        return m.name
    if fits(m, case, data):
        return f"{m.name} (one-class)"
    seen = "other normal classes" if m.data.normal_classes is not None else "all classes"
    return f"{m.name} (trained on {seen})"


def scores_for(models: list[ModelChoice], case: Case, metric: str) -> dict[str, tuple[str, np.ndarray]]:
    """{model id: (score used, scores)}: ELBO needs a VAE and latent needs normal images, else L2."""
    out = {}
    for m in models:
        use = metric if metric in scoring.available_scores(m.model) else "l2"
        if use == "latent" and case.normal is None:
            use = "l2"
        out[m.id] = (use, compute.scores(m, case.test, use, case.normal if use == "latent" else None))
    return out


def histogram(s: np.ndarray, labels: np.ndarray | None, title: str, metric: str) -> go.Figure:
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
        xaxis_title=metric,
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
    c1, c2 = st.columns([3, 2])
    c1.plotly_chart(fig, key="aelib.a_roc")
    c2.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        column_config={
            k: st.column_config.NumberColumn(format="%.4f", width="small")
            for k in ("ROC AUC", "AUPR", "F1-max")
        },
    )


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
    k = c1.selectbox("Model", list(scores), format_func=names.get, key="aelib.a_thr_model")
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
            0.5,
            round(min(max(share, 0.001), 0.5), 3),
            0.01,
            format="%.3f",
            key="aelib.a_thr_rate",
            help="The share of images to flag.",
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
    st.session_state[threshold_key(k, metric)] = float(thr)
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
    st.dataframe(
        pd.DataFrame(
            {"predicted normal": [res["tn"], res["fn"]], "predicted anomaly": [res["fp"], res["tp"]]},
            index=["normal", "anomalous"],
        )
    )


def _one_picture(up) -> object:
    from ..data import load_images

    return load_images(up, max_images=1, max_bytes=64 * 1024**2)


def score_one_panel(
    models: list[ModelChoice], scores: dict[str, np.ndarray], case: Case, metric: str, gray_r: bool
) -> None:
    """One uploaded (or photographed) image: its reconstruction, error map, score, and where the score
    falls among the normal test images' scores."""
    from .. import explore
    from . import draw, widgets

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
    m = widgets.pick_model("Model", models, "aelib.a_one_model")
    x = explore.fit_images(image[:1], m.in_shape)
    one = Images(f"one:{state.digest(shot) if shot is not None else up.sha}:{m.in_shape}", x)
    use = metric if metric != "elbo" or m.vae else "l2"
    score = float(compute.errors(m, one, (use,))[use][0])
    ref = scores[m.id] if case.labels is None else scores[m.id][case.labels == 0]
    pct = explore.percentile_of(score, ref)
    thr = st.session_state.get(threshold_key(m.id, metric))
    g = compute.gallery(m, one)
    draw.image_rows(
        [
            ("image", g["original"], [name]),
            ("reconstruction", g["reconstruction"], [f"{score:.4g}"]),
            ("|error|", draw.heatmap(g["abs_error"], vmax=0.5), None),
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
        c.metric("Flagged", "—", help="Set a threshold in the Threshold panel (needs labelled test images).")
    else:
        c.metric(
            "Flagged at the threshold", "anomaly" if score >= thr else "normal", help=f"threshold {thr:.5g}"
        )
