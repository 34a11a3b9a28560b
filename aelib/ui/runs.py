"""This session's training runs: start (with a name no other model of the session has), save,
delete what this session saved."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import checkpoints
from ..checkpoints import DataInfo
from ..errors import DataError
from ..models import ModelConfig
from ..train import TrainConfig
from ..worker import ACTIVE, Run
from . import choices, settings, state
from .sources import Images, ImageSet

VAL_IMAGES = 2000  # validation: the first test images
TRAIN_IMAGES = 10_000  # training: the first N images, unless the user sets another N


def session_runs() -> dict[str, Run]:
    """This session's runs, oldest first. The session holds them: they are its until it ends."""
    return state.get("runs", dict)


def active_run() -> Run | None:
    runs = [r for r in session_runs().values() if r.status in ACTIVE]
    running = [r for r in runs if r.status == "running"]
    return (running or runs or [None])[0]


def free_name(wanted: str) -> str:
    """``wanted``, or ``wanted-2``, ``wanted-3``... so no two models the session sees share a name."""
    taken = {r.name for r in session_runs().values()}
    taken |= {p.stem for p, _, _ in choices.shipped() + choices.saved()}
    name, n = wanted, 2
    while name in taken:
        name, n = f"{wanted}-{n}", n + 1
    return name


def start(
    model_config: ModelConfig,
    train_config: TrainConfig,
    images: Images,
    val: Images | None,
    *,
    name: str,
    data: DataInfo,
    tags: dict | None = None,
    named: bool = False,
) -> Run:
    """Submit a run for this session through the worker and keep it in the session.

    ``data`` is what the checkpoint will say about the training data (normal classes included).
    ``named``: the user chose ``name`` (a run of the same settings is then also listed under it).
    """
    sid = state.session_id()
    run = state.manager().submit(
        sid,
        model_config,
        images.tensor,
        None if val is None else val.tensor,
        train_config,
        data_key=images.key,
        name=free_name(name),
        dataset=data.to_dict(),
        tags=tags,
        alive=state.alive_probe(sid),
        named=named,
    )
    session_runs()[run.id] = run
    return run


def start_on(
    data: ImageSet,
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    name: str,
    subset: int | None = None,
    tags: dict | None = None,
    named: bool = False,
) -> Run:
    """A run on the sidebar's image set: its first ``subset`` training images, validated on the
    first test images."""
    images = data.train_images.head(subset or len(data.train))
    val = data.test_images.head(VAL_IMAGES)
    info = DataInfo(
        name=data.title,
        key=data.builtin or "",
        split=f"train[:{len(images)}]",
        n_train=len(images),
        n_val=len(val),
        classes=None if data.classes is None else tuple(data.classes),
    )
    return start(model_config, train_config, images, val, name=name, data=info, tags=tags, named=named)


def save(run: Run) -> str:
    """Write a finished run to the server's saved-models folder; returns the file's name."""
    if settings.read_only():
        raise DataError("This dashboard is read-only: download the checkpoint instead.")
    if run.model is None or run.meta is None:
        raise DataError(f"Run {run.name} has no model to save.")
    folder = settings.saved_dir()
    done = [f for f, i in saved_from().items() if i == run.id and (folder / f).is_file()]
    if done:  # a second click would write a second copy of the same weights
        raise DataError(f"it is already saved as {done[0]}.")
    folder.mkdir(parents=True, exist_ok=True)
    stem = checkpoints.file_stem(run.name)
    path, n = folder / f"{stem}.safetensors", 2
    while path.exists() or (settings.checkpoint_dir() / path.name).exists():
        path, n = folder / f"{stem}-{n}.safetensors", n + 1
    checkpoints.save(path, run.model, {**run.meta, "name": path.stem})
    saved_from()[path.name] = run.id
    mark_kept(run)
    return path.name


def saved_from() -> dict[str, str]:
    """This session's saves (the only files it may delete): file name -> the id of the run it was
    saved from."""
    return state.get("saved_runs", dict)


def copy_of_a_run(model: choices.ModelChoice) -> bool:
    """A checkpoint this session saved from a run it still holds: the same model as that run, so
    the pickers list the run alone (the Checkpoints-you-saved panel still offers the file)."""
    return (model.origin == "saved" and model.path is not None
            and saved_from().get(model.path.name) in session_runs())


def mark_kept(run: Run) -> None:
    """The user saved or downloaded this run: a reload no longer loses it."""
    state.get("kept_runs", set).add(run.id)


def deletable(model: choices.ModelChoice) -> bool:
    """Only what this session saved: shipped models and other users' saves are not for deleting."""
    return (
        not settings.read_only()
        and model.origin == "saved"
        and model.path is not None
        and model.path.name in saved_from()
    )


def delete(model: choices.ModelChoice) -> None:
    if not deletable(model):
        raise DataError(
            f"{model.name} is not yours to delete: only checkpoints saved from this session "
            "can be deleted here."
        )
    path = Path(model.path)
    if path.resolve().parent != settings.saved_dir().resolve():
        raise DataError(f"{model.name} is not in the saved-models folder.")
    checkpoints.delete(path)
    saved_from().pop(path.name, None)


def epochs_done(run: Run) -> int:
    """Epochs finished: what the table, the chart and the progress text all count."""
    return len(run.epochs)


def epoch_text(run: Run) -> str:
    """ "3/5 epochs": finished epochs of all, as the sidebar, the progress bar and the table count
    them (the sidebar once counted the epoch in progress, one more than the page beside it)."""
    return f"{epochs_done(run)}/{run.total_epochs} epochs"


def seconds(run: Run) -> float:
    """Training seconds: fit's own clock at the last finished epoch (what Compare runs shows from the
    checkpoint's history), or the time so far while the run is active or before its first epoch."""
    return run.epochs[-1]["seconds"] if run.epochs and not run.active else run.elapsed


def time_text(run: Run) -> str:
    """The progress bar's time: the wall clock while the run is active; once it has ended, fit's
    training seconds (as the run table and Compare runs show them) beside the wall clock in all, so
    the figure never seems to run backwards when the start-up and the last validation drop out."""
    if run.active or not run.epochs:
        return f"{run.elapsed:.1f} s"
    return f"{seconds(run):.1f} s training, {run.elapsed:.1f} s in all"


def table(runs: list[Run]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "run": r.name,
                "data": r.dataset.get("name", ""),  # the sidebar may show another dataset now
                "status": r.status,
                "epochs": f"{epochs_done(r)}/{r.total_epochs}",
                # Text, so that a run before its first epoch's end reads "—": the grid shows a
                # missing number (None or NaN) as the word "None".
                "val MSE": "—" if r.final_val_mse is None else f"{r.final_val_mse:.5f}",
                "seconds": round(seconds(r), 1),
                "note": "; ".join([*(f"saved as {f}" for f, i in saved_from().items() if i == r.id),
                                   *([r.message] if r.message else [])]),
            }
            for r in runs
        ]
    )


def remove(run: Run) -> None:
    """The session lets go of a finished run (its model is freed)."""
    state.manager().forget(run)
    session_runs().pop(run.id, None)
