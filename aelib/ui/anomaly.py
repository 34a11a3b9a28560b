"""The Anomaly page's data: where the normal and test images come from, which models fit them, the
scores asked for, and the recommended detector (trained as this session's runs)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import streamlit as st

from .. import anomaly as recipes
from .. import scoring
from ..checkpoints import DataInfo
from ..data import read_anomaly_labels
from ..errors import DataError
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
        if normal.shape != test.shape:
            raise DataError(
                f"The normal training set '{name}' holds {sources.shape_text(normal.shape)} images and "
                f"the test set {sources.shape_text(test.shape)}: a model trained on one cannot score the "
                "other, so upload both at the same size and number of channels."
            )
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
    """The model's name and what it was trained on."""
    if case.normal_classes is None:  # uploaded images: name the data the model saw, if known
        return f"{m.name} (trained on {m.data.name})" if m.data.name else m.name
    if fits(m, case, data):
        return f"{m.name} (one-class)"
    if not m.made_for(data):
        return f"{m.name} (trained on {m.data.name or 'other images'})"
    seen = "other normal classes" if m.data.normal_classes is not None else "all classes"
    return f"{m.name} (trained on {seen})"


PICKS = state.NS + "a_models"  # the "Score with" widget


def keep_picks_per_case(case: Case, default: Callable[[], list[str]]) -> None:
    """Give the "Score with" widget this case's picks (``default()`` the first time): the models
    picked for one dataset's or upload's images are not the ones scored on another's."""
    key = f"{case.test.key}|{case.normal.key if case.normal is not None else ''}"
    by_case = state.get("a_models_by_case", dict)
    drawn_for = st.session_state.get(state.NS + "a_models_case")
    if drawn_for is not None and PICKS in st.session_state:
        by_case[drawn_for] = list(st.session_state[PICKS])
    st.session_state[PICKS] = by_case[key] if key in by_case else default()
    st.session_state[state.NS + "a_models_case"] = key


def score_used(m: ModelChoice, case: Case, metric: str) -> str:
    """The score ``m`` gets for ``metric``: ELBO needs a VAE and the latent scores need normal
    images, else L2."""
    use = metric if metric in scoring.available_scores(m.model) else "l2"
    return "l2" if use in scoring.LATENT_SCORES and case.normal is None else use


def scores_of(m: ModelChoice, case: Case, images: Images, metric: str) -> tuple[str, np.ndarray]:
    """(score used, scores of ``images``), a latent score fitted to the case's normal images."""
    use = score_used(m, case, metric)
    return use, compute.scores(m, images, use, case.normal if use in scoring.LATENT_SCORES else None)


def scores_for(models: list[ModelChoice], case: Case, metric: str) -> dict[str, tuple[str, np.ndarray]]:
    """{model id: (score used, scores of the test images)}."""
    return {m.id: scores_of(m, case, case.test, metric) for m in models}
