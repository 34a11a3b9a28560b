"""Composite widgets: the training form, the model picker of a page, kept image pickers."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from ..models import PRESETS, ModelConfig, default_beta, get_config
from ..recipes import (
    KERAS_IMAGES,
    MAX_EPOCHS,
    RECIPE,
    SMALL_SET,
    default_train_config,
    fast_config,
    keras_small_data,
    small_set_start,
    train_config_for,
    with_fast_mode,
)
from ..train import TrainConfig
from . import state
from .choices import ModelChoice
from .runs import TRAIN_IMAGES
from .sources import ImageSet
from .state import kept

FAMILIES = {"fcn": "Fully connected (fcn)", "conv": "Convolutional (conv)", "vae": "Variational (vae)"}
SCHEDULES = {"constant": "Constant (as Keras)", "onecycle": "One-cycle (warm up, then anneal)"}
NOISES = ["off", "gaussian", "mask"]


@dataclass(frozen=True)
class TrainingPlan:
    arch: str
    model: ModelConfig
    train: TrainConfig
    name: str
    subset: int
    named: bool = False  # the user typed the name (not the suggested one)


def _starting(arch: str, fast: bool, n_images: int) -> TrainConfig:
    return fast_config(target=None) if fast else default_train_config(arch, n_images)


def training_form(data: ImageSet) -> TrainingPlan:
    """The Training page's set-up column: every field starts at the library's defaults for the model."""
    presets = [name for name, cfg in PRESETS.items() if tuple(cfg.in_shape) == tuple(data.shape)]
    archs = [*FAMILIES, *presets]
    arch = st.selectbox(
        "Model",
        archs,
        key="aelib.t_model",
        index=archs.index(kept("aelib.t_model", archs[0], options=archs)),
        format_func=lambda k: FAMILIES.get(k, f"Preset {k} (reference layout)"),
    )
    base = get_config(arch, in_shape=data.shape)
    fast = arch == "mnist_keras" and st.toggle(
        "Fast mode",
        kept("aelib.t_fast", False),
        key="aelib.t_fast",
        help="aelib's fast mode for this recipe: a shorter one-cycle schedule with smaller batches that "
        "reaches the recipe's validation MSE in about a third of its time (README, 'Measured results').",
    )
    # How many images comes first: the Keras preset's starting values depend on it.
    n_train = len(data.train)
    # One field per dataset: a count chosen for one set of images never carries over to another.
    subset_key = "aelib.t_subset_" + (data.builtin or hashlib.sha1(data.key.encode()).hexdigest()[:8])
    subset = int(
        st.number_input(
            "Training images",
            1,
            n_train,
            step=500,
            value=kept(subset_key, min(n_train, TRAIN_IMAGES), lo=1, hi=n_train),
            key=subset_key,
            help="The first N training images; fewer train faster.",
        )
    )
    small = not fast and keras_small_data(arch, subset)
    start = _starting(arch, fast, subset)
    # fast mode shows its own values, fixed; the preset's small-data values are their own fields;
    # on fewer than SMALL_SET images the epochs and batch follow the count (number_field)
    few = not fast and small_set_start(arch, subset)
    mode = "_fast" if fast else "_small" if small else ""
    if few:
        full = default_train_config(arch)
        updates = full.epochs * -(-subset // full.batch_size)
        st.caption(
            f"Fewer than {SMALL_SET:,} training images: {full.epochs} epochs at batch {full.batch_size} "
            f"would be {updates:,} updates here, too few to learn on every seed, so this model starts "
            f"from batch {start.batch_size} and {start.epochs} epochs: the updates it makes on "
            f"{SMALL_SET:,} images."
        )
    if small:
        st.caption(
            f"Fewer than {KERAS_IMAGES:,} training images: the Keras recipe's {RECIPE.epochs} epochs at "
            f"batch {RECIPE.batch_size} make too few updates to learn here, so this preset starts from "
            f"batch {start.batch_size}, {start.epochs} epochs, one-cycle {start.lr:g}. Set the recipe's "
            "values below to run it exactly."
        )
    elif fast and keras_small_data(arch, subset):
        st.caption(
            f"Fast mode was tuned on 60,000 images; on fewer than {KERAS_IMAGES:,} it learns less than "
            "the preset's own small-data values (turn it off)."
        )
    c1, c2 = st.columns(2)
    if base.latent is None:
        c1.text_input("Latent size", f"feature map {base.hidden[-1]}x..", disabled=True)
        latent = None
    else:
        k = f"aelib.t_latent_{arch}"
        latent = int(c1.number_input("Latent size", 1, 4096, kept(k, base.latent), key=k))
    k = f"aelib.t_epochs_{arch}{mode}"
    epochs = int(number_field(c2, "Epochs", 1, MAX_EPOCHS, k, start.epochs, disabled=fast))
    c1, c2 = st.columns(2)
    k = f"aelib.t_batch_{arch}{mode}"
    batch = int(number_field(c1, "Batch size", 1, 4096, k, start.batch_size, disabled=fast))
    k = f"aelib.t_lr_{arch}{mode}"
    lr = float(
        c2.number_input(
            "Learning rate",
            1e-6,
            1.0,
            step=1e-4,  # the +/- buttons; Streamlit's 0.01 jumps from 0.003 to 0.013
            format="%.5f",
            key=k,
            disabled=fast,
            value=kept(k, start.lr),
        )
    )
    k = f"aelib.t_schedule_{arch}{mode}"
    schedule = st.selectbox(
        "Learning-rate schedule",
        list(SCHEDULES),
        format_func=SCHEDULES.get,
        key=k,
        disabled=fast,
        index=list(SCHEDULES).index(kept(k, start.schedule, options=list(SCHEDULES))),
        help="One-cycle: the rate warms up from a tenth of Learning rate over half the steps, then "
        "anneals to ~0; it reaches a given loss in fewer epochs. Same as the CLI's `--schedule onecycle`.",
    )
    c1, c2 = st.columns(2)
    seed = int(c1.number_input("Seed", 0, 2**31 - 1, kept("aelib.t_seed", 0), key="aelib.t_seed"))
    beta = c2.number_input(
        "Beta (KL weight)",
        0.0,
        100.0,
        kept("aelib.t_beta", None),
        step=0.1,
        key="aelib.t_beta",
        format="%.5g",
        placeholder=f"auto: {default_beta(base) if start.beta is None else start.beta:.3g}",
        disabled=base.family != "vae",
        help="VAE only. Empty: 1 / pixels (face_vae: 0.1 / pixels, its KL sums over a 48x8x8 map), "
        "which keeps the KL from swamping a per-pixel MSE. The face_vae reference used 1; with its "
        "ReLU variance head that stays at the mean image.",
    )
    c1, c2 = st.columns(2)
    noise = c1.selectbox(
        "Denoising",
        NOISES,
        key="aelib.t_noise",
        index=NOISES.index(kept("aelib.t_noise", "off", options=NOISES)),
        help="Corrupt the inputs, keep clean targets: a denoising autoencoder.",
    )
    level = float(
        c2.slider(
            "Noise level",
            0.0,
            1.0,
            kept("aelib.t_noise_level", 0.3),
            0.05,
            key="aelib.t_noise_level",
            disabled=noise == "off",
            help="Gaussian: sigma in pixel units. Mask: fraction of pixels set to 0 or 1.",
        )
    )
    cfg = base.replace(latent=latent)
    prefix = data.builtin or Path(data.title).stem
    default_name = f"{prefix}-{arch}-{'z' + str(latent) if latent else 'map'}" + (
        f"-{noise}" if noise != "off" else ""
    )
    name = st.text_input(
        "Run name",
        default_name,
        key=f"aelib.t_name_{default_name}",
        help="A number is added if the session already has a model of this name.",
    )
    tc = train_config_for(
        arch,
        subset,
        epochs=epochs,
        batch_size=batch,
        lr=lr,
        schedule=schedule,
        seed=seed,
        # the field keeps its VAE value while disabled; other families have no KL term to weigh
        beta=None if beta is None or base.family != "vae" else float(beta),
        noise=None if noise == "off" else noise,
        noise_level=level if noise != "off" else 0.0,
    )
    if fast:  # the whole fast-mode schedule: its one-cycle shape too
        tc = with_fast_mode(tc)
    name = name.strip()
    return TrainingPlan(arch, cfg, tc, name or default_name, subset, named=name not in ("", default_name))


def pick_model(
    label: str, models: Sequence[ModelChoice], key: str, *, prefer=None, container=st,
    names: dict[str, str] | None = None,
) -> ModelChoice:
    """One of ``models`` by id (labels are for display only: ``names[id]``, else the model's label)."""
    by_id = {m.id: m for m in models}
    ids = list(by_id)
    first = next((i for i, m in enumerate(models) if prefer is not None and prefer(m)), 0)
    names = names or {}
    pick = selectbox(label, ids, key, index=first, container=container,
                     format_func=lambda i: names.get(i, by_id[i].label))
    return by_id[pick]


def number_field(container, label: str, lo: int, hi: int, key: str, default: int, **kwargs):
    """``st.number_input`` of whole numbers that keeps the user's value across pages and, until the
    user changes it, follows ``default`` as that changes (a model's epochs and batch size depend on
    how many training images are picked). A value equal to the previous default counts as not
    changed. Like :func:`selectbox`, the value goes into Session State and the widget gets none."""
    follows = state.NS + "follows." + key
    before = st.session_state.get(follows)
    value = st.session_state.get(key, state.remembered(key))
    if value is None or value == before or not lo <= value <= hi:
        value = default
    st.session_state[key] = value
    state.keep(key, value)
    st.session_state[follows] = default
    return container.number_input(label, lo, hi, key=key, **kwargs)


def selectbox(label: str, options: Sequence, key: str, *, index: int = 0, container=st, **kwargs):
    """``st.selectbox`` whose browser widget always shows what the script reads, and that keeps the
    user's pick across pages.

    Without a valid value in Session State (first draw, back from another page, or the value is no
    longer an option: the sidebar unpicked that model, the dataset has other classes), the value
    the page last remembered is put there if it is still an option, else ``options[index]``; the
    widget gets no index of its own. Dropping a stale value instead makes the script read the
    default while the browser goes on showing the old option (streamlit/streamlit#3716): a page
    that drew one model under a picker naming another."""
    options = list(options)
    if options and (key not in st.session_state or st.session_state[key] not in options):
        before = state.remembered(key)
        st.session_state[key] = before if before in options else options[index]
    return container.selectbox(label, options, key=key, **kwargs)
