"""One-class anomaly-detection benchmark (issue 5, Benchmarks item 2).

For each normal class of MNIST or Fashion-MNIST, every model family is trained on that class's
training images only, the whole test set is scored (anomaly = any other class), and the ROC AUC
of each scoring option is reported per class and as the mean over the classes. The result dict
holds the exact model and training configs, the published anchors and the seconds spent.

Protocol: one set of settings per dataset (``PROTOCOLS``), the same for every class, chosen on a
validation split carved from the *training* set only (held-out normal training images vs training
images of the other classes; what was tried is in ``bench/results/anomaly-validation.json``);
the test set is scored with those settings only.

Scores per model are :func:`aelib.scoring.model_scores`' (``l2``, ``mae``, ``elbo`` for the VAE
with the beta it was trained with, ``blur``, ``blur_ink``, ``latent`` fitted on the normal
training codes; :data:`aelib.scoring.SCORES` says what each is), the same code the CLI and the
app call.

Ensembles average z-scores (:func:`aelib.scoring.ensemble_scores`; the standardisation uses the
scored images' own statistics, no labels): ``<family>/<score>+seeds`` over seeds, and
``ensemble`` over the families' designated scores (the protocol's ``ensemble``) and all seeds.

``python -m aelib.bench_anomaly --dataset fashion-mnist --data-root ../shared/data`` runs it
alone and writes ``bench/results/anomaly-<dataset>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from . import scoring
from .data import ImageDataset, load_splits, one_class_split
from .models import FAMILIES, ModelConfig, build, get_config, is_vae
from .scoring import (  # noqa: F401
    BLUR_SIGMA,
    INK_POWER,
    LATENT_KNN_K,
    LATENT_RIDGE,
    LatentGaussian,
    ensemble_scores,
    roc,
)
from .train import TrainConfig, fit

DATASETS = ("mnist", "fashion-mnist")
ENSEMBLE_METHOD = "zscore"

# The scores each family brings to the cross-family ensemble (chosen on validation, per dataset).
ENSEMBLE_MEMBERS = {"fcn": ("blur_ink",), "conv": ("latent",), "vae": ("blur_ink",)}

MNIST_INK_POWER = 1.0  # chosen on MNIST's validation split (see PROTOCOLS)

# Model sizes are written out in full (not taken from models.DEFAULTS) so the benchmark does not
# move when the app's defaults do. Training: TrainConfig fields; threads=1 is added at run time.
_MODELS = {
    "fcn": dict(hidden=(256, 128), latent=32, init="glorot"),
    "conv": dict(hidden=(16, 32, 64), latent=64, init="torch"),
    "vae": dict(hidden=(16, 32, 64), latent=16, init="torch"),
}


def _protocol(batch_size: int, fcn_epochs: int, epochs: int, ink_power: float = INK_POWER,
              ensemble: dict[str, tuple[str, ...]] | None = None, headline: str = "ensemble") -> dict:
    """One-cycle training at ``batch_size``: the fcn for ``fcn_epochs``, conv and vae for ``epochs``;
    ``blur_ink`` divides by the ink to ``ink_power``; ``ensemble``: each family's member scores;
    ``headline``: the score the dataset is reported by, the one that did best on validation."""
    common = dict(batch_size=batch_size, schedule="onecycle")
    return {"models": _MODELS,
            "train": {"fcn": dict(epochs=fcn_epochs, lr=1e-3, **common),
                      "conv": dict(epochs=epochs, lr=1e-3, **common),
                      "vae": dict(epochs=epochs, lr=3e-3, beta=1e-3, **common)},
            "ink_power": float(ink_power),
            "ensemble": dict(ENSEMBLE_MEMBERS if ensemble is None else ensemble),
            "headline": headline}


PROTOCOLS: dict[str, dict] = {
    # 800 training images per class: small batches, 1,000 steps. A digit's error grows with its
    # ink more steeply than a garment's, so MNIST divides by a higher power of the ink, and then
    # every family's blur_ink does better in the ensemble than the conv's latent score
    # (validation figures in bench/results/anomaly-validation.json).
    "mnist": _protocol(32, 40, 40, ink_power=MNIST_INK_POWER,
                       ensemble={"fcn": ("blur_ink",), "conv": ("blur_ink",), "vae": ("blur_ink",)}),
    # 6,000 per class: the default batch, 470-940 steps. On validation the conv's latent_knn
    # (0.9442) beat every ensemble tried (the best, fcn blur_ink + conv latent, 0.942), so it is
    # the headline, averaged over the seeds as every headline is.
    "fashion-mnist": _protocol(128, 20, 10, headline="conv/latent_knn+seeds"),
}

QUICK = {"classes": 2, "epochs": 1, "train_per_class": 200, "test_images": 500}
VALIDATION_LOG = "bench/results/anomaly-validation.json"  # what was tried on validation, and its figures

# Published one-class results, same protocol (train on one class, all other test classes are
# anomalies, mean ROC AUC over the ten classes).
ANCHORS: dict[str, list[dict]] = {
    "mnist": [
        {"method": "Deep SVDD (one-class)", "mean_auc": 0.948,
         "per_class": [0.980, 0.997, 0.917, 0.919, 0.949, 0.885, 0.983, 0.946, 0.939, 0.965],
         "source": "Ruff et al., Deep One-Class Classification, ICML 2018, Table 1"},
        {"method": "DCAE (deep convolutional autoencoder baseline)", "mean_auc": 0.897,
         "per_class": [0.976, 0.983, 0.854, 0.867, 0.865, 0.782, 0.946, 0.923, 0.865, 0.904],
         "source": "Ruff et al., Deep One-Class Classification, ICML 2018, Table 1"},
    ],
    "fashion-mnist": [
        {"method": "GEOM (geometric-transformation classifier)", "mean_auc": 0.935,
         "source": "Golan & El-Yaniv, Deep Anomaly Detection Using Geometric Transformations, "
                   "NeurIPS 2018, Table 1"},
    ],
}
ANCHOR_NOTE = ("Checked against stored copies where they could be found: every stored copy of the three "
               "papers we found (ar5iv, papers.nips.cc, arxiv-vanity, studylib) gave their opening pages "
               "only, not the tables, so no figure here is verified against the paper itself. Deep SVDD "
               "0.948: its per-class row matches the row a third-party reimplementation's README quotes "
               "from the paper (mean of the ten: 0.948). GEOM's Fashion-MNIST 0.935 matches third-party "
               "listings of the paper. DCAE 0.897 is recalled, unverified. Not quoted, because they could "
               "not be supported: a GEOM figure on MNIST (GEOM's paper reports CIFAR-10, CIFAR-100, "
               "Fashion-MNIST and CatsVsDogs, so an MNIST 0.980 is a later paper's rerun) and a 0.82-0.86 "
               "range for GEOM's autoencoder baselines (a third-party summary gives 0.87-0.93 for its "
               "CAE-OC-SVM, DSEBM, ADGAN and RAW-OC-SVM rows). The papers use the full MNIST (60k/10k); "
               "ours uses an 8,000/2,000 MNIST subset (offline), Fashion-MNIST is complete.")

TARGETS = {"mnist": 0.95, "fashion-mnist": 0.93}
BASELINE = {"mnist": 0.94, "fashion-mnist": 0.90,
            "what": "plain small conv AE, 20 epochs on one class, l2 score (figure quoted by issue 5)"}


# --------------------------------------------------------------------------------------------
# Scores


def _dataset_key(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "fashion": "fashion-mnist"}.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {DATASETS}.")
    return key


def model_scores(model: torch.nn.Module, images: torch.Tensor, train_images: torch.Tensor | None = None,
                 beta: float | None = None, batch_size: int = 1000,
                 ink_power: float = INK_POWER) -> dict[str, np.ndarray]:
    """Every benchmark score of one trained model (:func:`aelib.scoring.model_scores`).

    ``elbo`` (VAE) weighs the KL by ``beta``, the beta the VAE was trained with; the latent scores
    need the normal ``train_images``; ``blur_ink`` divides by the ink to ``ink_power``.
    """
    vae = is_vae(model)
    if vae and beta is None:
        raise ValueError("Give the VAE's training beta for its elbo score.")
    names = ("l2", "mae", "elbo", "blur", "blur_ink") if vae else ("l2", "mae", "blur", "blur_ink")
    if train_images is not None:
        names += ("latent", "latent_knn")
    return scoring.model_scores(model, images, names, batch_size, beta, latent=train_images,
                                ink_power=ink_power)


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(roc(labels, scores)["auc"])


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return float(sum(values) / len(values)) if values else math.nan


def _subset(ds: ImageDataset, idx: torch.Tensor) -> ImageDataset:
    idx = idx.sort().values
    return ImageDataset(images=ds.images[idx], labels=ds.labels[idx], name=ds.name, source=ds.source,
                        classes=ds.classes, note=ds.note, extra=dict(ds.extra))


def _quick_data(train: ImageDataset, test: ImageDataset) -> tuple[ImageDataset, ImageDataset]:
    g = torch.Generator().manual_seed(0)
    per_class = [torch.nonzero(train.labels == c).flatten()[:QUICK["train_per_class"]]
                 for c in train.labels.unique()]
    test_idx = torch.randperm(len(test), generator=g)[:QUICK["test_images"]]
    return _subset(train, torch.cat(per_class)), _subset(test, test_idx)


# --------------------------------------------------------------------------------------------
# The benchmark


def protocol_configs(dataset: str, families: Sequence[str] = FAMILIES, in_shape=(1, 28, 28),
                     epochs: int | None = None, **train_overrides) -> tuple[dict, dict]:
    """(model configs, train configs) per family for ``dataset``, with the overrides applied."""
    protocol = PROTOCOLS[_dataset_key(dataset)]
    models: dict[str, ModelConfig] = {}
    trains: dict[str, TrainConfig] = {}
    for f in families:
        models[f] = get_config(f, tuple(in_shape)).replace(**protocol["models"][f])
        fields = {"threads": 1, **protocol["train"][f], **train_overrides}
        if epochs is not None:
            fields["epochs"] = int(epochs)
        trains[f] = TrainConfig(**fields)
        trains[f].validate()
    return models, trains


def headline_of(protocol: dict, summary: dict[str, float], families: Sequence[str],
                members: dict[str, tuple[str, ...]]) -> str:
    """The protocol's headline score, fixed on validation before the test set was scored (never the
    best of ``summary``); a smaller run (one seed, fewer families) reports the nearest it has."""
    for name in (protocol["headline"], protocol["headline"].removesuffix("+seeds")):
        if name in summary:
            return name
    return "ensemble" if "ensemble" in summary else f"{families[0]}/{members[families[0]][0]}"


def run(dataset: str, root: str | Path | None, families: Sequence[str] = FAMILIES,
        epochs: int | None = None, seeds: Sequence[int] = (0,), classes: Iterable[int] = range(10),
        quick: bool = False, log: Callable[[str], None] = print, **train_overrides) -> dict:
    """Train each family on each normal class, score the whole test set, report ROC AUCs.

    ``epochs`` (and any TrainConfig field in ``train_overrides``, e.g. ``threads=2``) overrides the
    protocol for every family. ``quick``: 2 classes, 1 epoch, 200 training images per class and
    500 test images, for CI smoke runs. Returns a JSON-friendly dict: ``auc[name]`` holds
    ``per_class`` and ``mean`` for every ``"<family>/<score>"``, ``"<family>/<score>+seeds"``
    (with several seeds) and ``"ensemble"`` (with several families or seeds); ``summary`` maps the
    same names to the means.
    """
    t_start = time.perf_counter()
    key = _dataset_key(dataset)
    families = tuple(families)
    bad = [f for f in families if f not in FAMILIES]
    if bad or not families:
        raise ValueError(f"Unknown families {bad or families}; choose from {FAMILIES}.")
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("Give at least one seed.")
    train, test = load_splits(key, root=root, download=False)
    classes = [int(c) for c in classes]
    if quick:
        classes = classes[:QUICK["classes"]]
        epochs = QUICK["epochs"] if epochs is None else epochs
        train, test = _quick_data(train, test)
    if not classes:
        raise ValueError("Give at least one normal class.")
    in_shape = tuple(train.images.shape[1:])
    model_configs, train_configs = protocol_configs(key, families, in_shape, epochs, **train_overrides)
    protocol = PROTOCOLS[key]
    members = {f: protocol["ensemble"][f] for f in families}
    names = train.classes or [str(c) for c in range(int(train.labels.max()) + 1)]

    threads = train_configs[families[0]].threads
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)  # for scoring too; fit() sets it for training
    table: dict[str, list[float]] = {}
    per_seed: dict[str, dict[int, list[float]]] = {}
    runs = []
    try:
        for c in classes:
            train_c, test_c = one_class_split(train, test, c)
            y = test_c.labels.numpy()
            ensemble_arrays: list[np.ndarray] = []
            for f in families:
                t0 = time.perf_counter()
                seed_scores = []
                for seed in seeds:
                    tcfg = TrainConfig(**{**train_configs[f].to_dict(), "seed": seed})
                    model = build(model_configs[f], seed=seed)
                    fit(model, train_c.images, config=tcfg)
                    seed_scores.append(model_scores(model, test_c.images, train_c.images,
                                                    beta=tcfg.beta if f == "vae" else None,
                                                    ink_power=protocol["ink_power"]))
                seconds = time.perf_counter() - t0
                aucs: dict[str, float] = {}
                for score in seed_scores[0]:
                    single = [_auc(y, s[score]) for s in seed_scores]
                    aucs[score] = _mean(single)
                    for seed, a in zip(seeds, single):
                        per_seed.setdefault(f"{f}/{score}", {}).setdefault(seed, []).append(a)
                    if len(seeds) > 1:
                        combined = ensemble_scores([s[score] for s in seed_scores], ENSEMBLE_METHOD)
                        aucs[f"{score}+seeds"] = _auc(y, combined)
                for score, a in aucs.items():
                    table.setdefault(f"{f}/{score}", []).append(a)
                ensemble_arrays += [s[m] for s in seed_scores for m in members[f]]
                runs.append({"class": c, "family": f, "auc": {k: round(v, 4) for k, v in aucs.items()},
                             "seconds": round(seconds, 2)})
                log(f"class {c} ({names[c]}) {f:4s} " + " ".join(f"{k} {v:.4f}" for k, v in aucs.items())
                    + f"  {seconds:.1f}s")
            if len(ensemble_arrays) > 1:
                a = _auc(y, ensemble_scores(ensemble_arrays, ENSEMBLE_METHOD))
                table.setdefault("ensemble", []).append(a)
                log(f"class {c} ({names[c]}) ensemble {a:.4f}")
    finally:
        torch.set_num_threads(old_threads)

    auc = {name: {"mean": round(_mean(v), 4), "per_class": [round(a, 4) for a in v]}
           for name, v in table.items()}
    seconds = round(time.perf_counter() - t_start, 1)
    summary = {name: v["mean"] for name, v in auc.items()}
    headline = headline_of(protocol, summary, families, members)
    log(f"{key}: mean AUC over {len(classes)} classes: "
        + ", ".join(f"{k} {v:.4f}" for k, v in summary.items()) + f"  ({seconds:.0f}s)")
    return {
        "benchmark": "anomaly",
        "dataset": key,
        "quick": bool(quick),
        "data": {"root": str(root), "source": train.source, "train_images": len(train),
                 "test_images": len(test)},
        "classes": classes,
        "class_names": [names[c] for c in classes],
        "families": list(families),
        "seeds": list(seeds),
        "protocol": ("Train on the normal class's training images only; score the whole test set; ROC AUC "
                     "with every other class as anomaly. One set of settings for all classes, chosen on a "
                     "validation split of the training set (see 'validation'), never on the test set."),
        "model_configs": {f: model_configs[f].to_dict() for f in families},
        "train_configs": {f: train_configs[f].to_dict() for f in families},
        "scores": {"blur_sigma": BLUR_SIGMA, "ink_power": protocol["ink_power"], "latent_ridge": LATENT_RIDGE,
                   "latent_knn_k": LATENT_KNN_K},
        "ensemble": {"method": ENSEMBLE_METHOD, "members": {f: list(m) for f, m in members.items()},
                     "over_seeds": len(seeds) > 1},
        "summary": summary,
        "headline": {"name": headline, "mean_auc": summary[headline],
                     "note": "the protocol's pre-chosen score (validation), not the best test figure"},
        "auc": auc,
        "per_seed_mean": {name: {str(s): round(_mean(v), 4) for s, v in by_seed.items()}
                          for name, by_seed in per_seed.items()} if len(seeds) > 1 else None,
        "runs": runs,
        "seconds": seconds,
        "target_mean_auc": TARGETS[key],
        "baseline": {"mean_auc": BASELINE[key], "what": BASELINE["what"]},
        "anchors": ANCHORS[key],
        "anchor_note": ANCHOR_NOTE,
        "validation": VALIDATION_LOG,
        "machine": {"torch": torch.__version__, "threads": threads or old_threads,
                    "python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
    }


# --------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the benchmark's options; any the parser already has (a shared --seeds) are left alone."""
    options = [
        ("--dataset", dict(default="mnist", choices=DATASETS, help="dataset (default: mnist)")),
        ("--data-root", dict(default=None, help="folder holding MNIST/ and FashionMNIST/ "
                                                 "(default: $AELIB_DATA_ROOT)")),
        ("--families", dict(default=",".join(FAMILIES), help="comma-separated families (default: all)")),
        ("--epochs", dict(type=int, default=None, help="epochs for every family (default: the protocol's)")),
        ("--seeds", dict(default="0", help="comma-separated seeds; several add seed ensembles (default 0)")),
        ("--classes", dict(default="0-9", help="normal classes: '0-9', '1' or '0,3,5' (default 0-9)")),
        ("--quick", dict(action="store_true", help="2 classes, 1 epoch, tiny subset (CI smoke)")),
        ("--threads", dict(type=int, default=1, help="torch threads (default 1)")),
    ]
    for flag, kw in options:
        if flag not in parser._option_string_actions:  # argparse has no public lookup
            parser.add_argument(flag, **kw)
    return parser


def int_list(text: str | int | Sequence[int]) -> list[int]:
    """'0-9', '1', '0,3,5' (or a list) -> list of ints."""
    if isinstance(text, int):
        return [text]
    if not isinstance(text, str):
        return [int(v) for v in text]
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "-" in part[1:]:
            cut = part.index("-", 1)
            out += list(range(int(part[:cut]), int(part[cut + 1:]) + 1))
        else:
            out.append(int(part))
    return out


def run_from_args(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict:
    """Call :func:`run` with the options that :func:`add_arguments` defines."""
    families = tuple(f.strip() for f in str(args.families).split(",") if f.strip())
    overrides = {"threads": args.threads} if getattr(args, "threads", None) else {}
    return run(args.dataset, args.data_root, families=families, epochs=args.epochs,
               seeds=int_list(args.seeds), classes=int_list(args.classes), quick=args.quick, log=log,
               **overrides)


def write_result(result: dict, out_dir: str | Path) -> Path:
    """Write ``anomaly-<dataset>.json`` (``anomaly-<dataset>-quick.json`` for quick runs)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"anomaly-{result['dataset']}{'-quick' if result.get('quick') else ''}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aelib.bench_anomaly",
                                     description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--out-dir", default="bench/results", help="where the JSON goes ('' for nowhere)")
    args = parser.parse_args(argv)
    result = run_from_args(args, log=lambda line: print(line, flush=True))
    if args.out_dir:
        print(f"wrote {write_result(result, args.out_dir)}", flush=True)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
