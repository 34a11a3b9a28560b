"""Anomaly detection: reconstruction error as an anomaly score, evaluated against labels."""

from __future__ import annotations

import numpy as np
import streamlit as st

from aelib.errors import AelibError
from aelib.ui import anomaly, anomaly_panels, choices, router, sources, state
from aelib.ui.state import kept

fr = router.page(__file__)
data = router.need_data(fr)
st.caption(
    "Train on normal images only; whatever reconstructs badly is flagged. Scores are cached: "
    "the threshold slider recomputes nothing."
)

modes = (["one-class"] if data.labelled and len(data.classes) > 1 else []) + ["upload"]
mode = st.radio(
    "Normal vs anomalous",
    modes,
    index=modes.index(kept("aelib.a_mode", modes[0], options=modes)),
    horizontal=True,
    key="aelib.a_mode",
    # Labels that do not change with the dataset: a radio whose labels change under it was seen
    # drawn with neither option selected after a dataset switch.
    format_func={
        "one-class": "One-class: some classes of the sidebar's dataset are normal",
        "upload": "Uploaded normal training set + test set",
    }.get,
)
try:
    if mode == "one-class":
        ids = list(range(len(data.classes)))
        normals = st.multiselect(
            "Normal classes",
            ids,
            format_func=lambda i: data.classes[i],
            default=kept("aelib.a_normals", [0], options=ids),
            key="aelib.a_normals",
        )
        if not normals:
            st.info("Pick at least one normal class.")
            st.stop()
        case = anomaly.one_class_case(data, tuple(sorted(normals)))
        st.caption(
            f"Normal: **{', '.join(data.classes[i] for i in case.normal_classes)}** "
            f"({len(case.normal):,} training images). Test: {len(case.test):,} images, "
            f"{int(case.labels.sum()):,} anomalous ({case.labels.mean():.0%})."
        )
    else:
        case = anomaly.upload_case(data, st.columns(3))
        if case is None:
            st.info(
                "Upload a test set (e.g. the faces `testingset.npy`) to score it. Labels are optional: "
                "without them you get scores and galleries, with them ROC curves and threshold metrics too."
            )
            st.stop()
except AelibError as exc:
    st.error(str(exc))
    st.stop()

candidates = choices.compatible(fr.all_models, case.test.shape)
# ---- the recommended detector for these normal images, trained here ---------------------------------
members = anomaly.detector_runs(case) if case.normal is not None else []
if case.normal is not None and not any(anomaly.fits(m, case, data) for m in candidates):
    if case.normal_classes is not None:
        st.warning(
            "No model was trained on these normal classes only. Scores from models trained on all "
            "classes are still shown (labelled as such), but they have seen the anomalies in training."
        )
    recipe = anomaly.recipe_for(case)
    n_used = min(len(case.normal), recipe.max_images)
    if st.button(
        f"Train the recommended detector on {n_used:,} of the normal images"
        + ("" if n_used == len(case.normal) else f" (a seeded sample of the {len(case.normal):,})"),
        key="aelib.a_train",
        icon=":material/model_training:",
        help=recipe.description,
    ):
        try:
            members = anomaly.start_recommended(case)
        except AelibError as exc:
            st.error(str(exc))
        else:
            # The progress bar below says what is happening; a one-time banner stayed on the page
            # (outside the progress fragment) after the detector had finished.
            st.rerun()  # the sidebar shows the run
anomaly.detector_status(members)

if not candidates:
    size = sources.shape_text(case.test.shape)
    if case.normal is not None:
        how = "train one (button above, or the Training page)"
    else:  # no images of this size to train on, so no button either
        how = (f"upload a normal training set of {size} images above to train one here, train one on "
               "the Training page")
    st.info(f"No model takes {size} images yet: {how}, or upload a checkpoint in the sidebar.")
    st.stop()

# Models to score with, picked per case: the sidebar's picks and one-class models of these classes.
by_id = {m.id: m for m in candidates}
sel = anomaly.PICKS
picked = {m.id for m in fr.models}
anomaly.keep_picks_per_case(
    case,
    lambda: [m.id for m in candidates if m.id in picked or anomaly.fits(m, case, data)][:4]
    or [candidates[0].id],
)
for r in members:  # the detector's models join the picks once, when they have finished
    rid = f"run:{r.id}"
    if rid in by_id and rid not in st.session_state.get("aelib.a_added", ()):
        st.session_state[sel] = [*st.session_state[sel], rid]
        st.session_state["aelib.a_added"] = (*st.session_state.get("aelib.a_added", ()), rid)
st.session_state[sel] = list(dict.fromkeys(k for k in st.session_state[sel] if k in by_id))
chosen = [
    by_id[k]
    for k in st.multiselect(
        "Score with", list(by_id), key=sel, format_func=lambda k: anomaly.tag(by_id[k], case, data)
    )
]
metric = st.selectbox(
    "Score",
    list(anomaly.METRICS),
    format_func=anomaly.METRICS.get,
    key="aelib.a_metric",
    index=list(anomaly.METRICS).index(kept("aelib.a_metric", "l2", options=list(anomaly.METRICS))),
)
if not chosen:
    st.info("Pick at least one model to score with.")
    st.stop()

with st.spinner("Scoring the test set..."):
    used = anomaly.scores_for(chosen, case, metric)
    det = anomaly.detector_scores(members, by_id, case)
# The recommended detector first (the one a user came for), then the picked models; each with the
# score it really got (a VAE-only or latent score falls back to l2 where it does not apply).
scores: dict[str, np.ndarray] = {}
names: dict[str, str] = {}
kinds: dict[str, str] = {}
if det is not None:
    scores[det[0]], kinds[det[0]] = det[1], "ensemble"
    seen = state.get("a_detectors_shown", set)
    if det[0] not in seen:  # a new detector is what the user waited for: the panels below show it
        seen.add(det[0])
        st.session_state[anomaly_panels.THRESHOLD_MODEL] = st.session_state[anomaly_panels.CSV_MODEL] = det[0]
    names[det[0]] = (
        "recommended detector ("
        + " + ".join(f"{r.model_config.family} {r.tags['score']}" for r in members)
        + ")"
    )
for m in chosen:
    kinds[m.id], scores[m.id] = used[m.id]
    names[m.id] = anomaly.tag(m, case, data) + ("" if kinds[m.id] == metric else f" [{kinds[m.id]}]")

st.subheader("Score distributions")
cols = st.columns(min(2, len(scores)))
for i, (k, s) in enumerate(scores.items()):
    cols[i % len(cols)].plotly_chart(
        anomaly_panels.histogram(s, case.labels, names[k], kinds[k]), key=f"aelib.a_hist_{i}"
    )
if case.labels is None:
    st.info(
        "No labels for this test set: ROC curves and precision / recall need them; the threshold can "
        "still be set by a contamination rate or by hand."
    )
else:
    st.subheader("ROC")
    anomaly_panels.roc_panel(case.labels, scores, names)
anomaly_panels.threshold_panel(case.labels, scores, names, metric)

# ---- galleries, one image, export ----------------------------------------------------------------
gray_r = anomaly_panels.gallery_panel(chosen, scores, case, names)  # the labels used above
st.subheader("Score one image")
anomaly_panels.score_one_panel(chosen, scores, case, metric, gray_r, names)
anomaly_panels.export_panel(scores, names, kinds, {m.id: m.name for m in chosen})
