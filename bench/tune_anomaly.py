"""Scores of the one-class benchmark's models, on its validation split only.

    python bench/tune_anomaly.py --dataset fashion-mnist --families conv --latents 64,128
    python bench/tune_anomaly.py --dataset mnist --families fcn,conv,vae --ink-powers 0.5,1

The validation split is carved from the *training* set, as ``bench/results/anomaly-validation.json``
describes it (MNIST: 160 held-out normal images + 100 of each other digit; Fashion-MNIST: 600 +
300; the rest of the normal class trains; the test set is never read). Each family trains once per
class with the benchmark's protocol (``aelib.bench_anomaly.protocol_configs``, seed 0, one torch
thread) and is scored with ``l2``, ``blur_ink``, ``latent`` (squared Mahalanobis distance to the
normal codes' mean), the Mahalanobis k-nearest-neighbour distance for several k and ridges, and,
with all three families, the benchmark's z-score ensemble with either latent score for the conv
member; ``--ink-powers`` adds ``blur_ink`` with other powers of the ink (``blur_ink@P``) and the
ensembles made with them. Prints one line per class and the means; writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from aelib import bench_anomaly, scoring
from aelib.data import load_splits
from aelib.models import build
from aelib.train import fit

HELD_OUT = {"mnist": (160, 100), "fashion-mnist": (600, 300)}  # normal, per other class
KS, RIDGES = (2, 5, 10), (1e-9, 1e-6)


def validation_split(labels: torch.Tensor, c: int, n_normal: int, n_other: int, g: torch.Generator):
    """(training indices, validation indices, validation labels 1 = anomaly) for normal class c."""
    idx = torch.nonzero(labels == c).flatten()
    perm = idx[torch.randperm(len(idx), generator=g)]
    others = []
    for o in labels.unique().tolist():
        if o != c:
            oi = torch.nonzero(labels == o).flatten()
            others.append(oi[torch.randperm(len(oi), generator=g)[:n_other]])
    val = torch.cat([perm[:n_normal], *others])
    y = np.r_[np.zeros(n_normal), np.ones(len(val) - n_normal)]
    return perm[n_normal:], val, y


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="fashion-mnist", choices=bench_anomaly.DATASETS)
    ap.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--families", default="conv")
    ap.add_argument("--latents", default="64", help="conv latent sizes to try (default: the protocol's 64)")
    ap.add_argument("--ink-powers", default="", help="other ink powers for blur_ink, e.g. 0.75,1")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    families = args.families.split(",")
    latents = [int(v) for v in args.latents.split(",")]
    powers = [float(v) for v in args.ink_powers.split(",") if v]
    train, _ = load_splits(args.dataset, root=args.data_root, download=False)
    models, trains = bench_anomaly.protocol_configs(args.dataset, families)
    g = torch.Generator().manual_seed(123)
    per_class: dict[int, dict[str, float]] = {}
    for c in range(10):
        t0 = time.perf_counter()
        tr, val, y = validation_split(train.labels, c, *HELD_OUT[args.dataset], g)
        xtr, xval = train.images[tr], train.images[val]
        aucs: dict[str, float] = {}
        arrays: dict[str, np.ndarray] = {}

        def note(name: str, s: np.ndarray, y=y, aucs=aucs, arrays=arrays) -> None:
            aucs[name], arrays[name] = float(scoring.roc(y, s)["auc"]), s

        for fam in families:
            for z in latents if fam == "conv" else [None]:
                cfg = models[fam] if z is None else models[fam].replace(latent=z)
                tag = fam if z in (None, 64) else f"{fam}{z}"
                model = build(cfg, seed=0)
                fit(model, xtr, None, trains[fam])
                beta = trains[fam].beta if fam == "vae" else None
                got = scoring.model_scores(model, xval, ("l2", "blur", "blur_ink", "latent"), beta=beta,
                                           latent=xtr)
                for k, s in got.items():
                    note(f"{tag}/{k}", s)
                ink = xval.flatten(1).double().sum(1).numpy() / 255  # as model_scores measures it
                for p in powers:  # blur is the L2 norm of the same blurred error blur_ink divides
                    note(f"{tag}/blur_ink@{p:g}", got["blur"] ** 2 / (ink + scoring.INK_EPS) ** p)
                if fam != "conv":
                    continue
                z_fit, z_val = scoring.latent_codes(model, xtr), scoring.latent_codes(model, xval)
                for ridge in RIDGES:
                    gauss = scoring.LatentGaussian(z_fit, ridge)
                    for k in KS:
                        note(f"{tag}/knn{k}_ridge{ridge:g}", gauss.neighbours(z_val, k))
        if {"fcn", "conv", "vae"} <= set(families):
            for conv_score in ("latent", f"knn5_ridge{scoring.LATENT_RIDGE:g}"):
                members = ["fcn/blur_ink", f"conv/{conv_score}", "vae/blur_ink"]
                note(f"ensemble[conv {conv_score}]",
                     scoring.ensemble_scores([arrays[m] for m in members], "zscore"))
            for p in powers:
                ink_p = f"blur_ink@{p:g}"
                trios = {f"ensemble[{ink_p}]": [f"fcn/{ink_p}", "conv/latent", f"vae/{ink_p}"],
                         f"ensemble[all {ink_p}]": [f"{f}/{ink_p}" for f in ("fcn", "conv", "vae")]}
                for name, members in trios.items():
                    note(name, scoring.ensemble_scores([arrays[m] for m in members], "zscore"))
        per_class[c] = aucs
        print(f"class {c} {time.perf_counter() - t0:.0f}s "
              + " ".join(f"{k} {v:.4f}" for k, v in aucs.items()), flush=True)
    mean = {k: round(float(np.mean([per_class[c][k] for c in per_class])), 4) for k in per_class[0]}
    print("mean over classes:")
    for k, v in mean.items():
        print(f"  {k:32s} {v:.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"settings": vars(args), "mean": mean, "per_class": per_class},
                                             indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
