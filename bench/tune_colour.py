"""Candidate models for the 64x64 colour recipe, scored on the colour case's validation split.

    python bench/make_colour_case.py /tmp/colour
    python bench/tune_colour.py /tmp/colour --candidate conv16-z64:e20:b64 --candidate face_conv:e10:b64
    python bench/tune_colour.py /tmp/colour --split test --recommended --preset face_conv:e10:b64

A candidate is ``MODEL:eEPOCHS:bBATCH[:lrLR]`` where MODEL is a reference preset (``face_fcn``,
``face_conv``, ``face_vae``: exact, with their own pixel range) or ``conv<w>-z<latent>`` /
``conv<w>x4-z<latent>`` / ``fcn-z<latent>`` (aelib models, unit range; ``<w>`` the first conv
width, doubling per level). Each trains once per seed on ``train.npy`` (one torch thread,
one-cycle Adam unless the model is a preset trained as the Training page does, constant lr) and
prints every score's ROC AUC on the split, overall and per kind of anomaly. Tune on ``val``; run
``test`` once, for the report. ``--recommended`` runs :func:`aelib.anomaly.train_detector`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from aelib.models import PRESETS, ModelConfig, build, get_config
from aelib.scoring import available_scores, evaluate_scores, model_scores
from aelib.train import TrainConfig, fit

SHAPE = (3, 64, 64)


def _model(name: str) -> ModelConfig:
    if name in PRESETS:
        return get_config(name)
    arch, _, z = name.partition("-z")
    if arch == "fcn":
        return ModelConfig("fcn", SHAPE, latent=int(z), hidden=(256, 128), init="glorot")
    if arch.startswith("conv"):
        w, _, depth = arch[4:].partition("x")
        levels = int(depth or 3)
        return ModelConfig("conv", SHAPE, latent=int(z), hidden=tuple(int(w) * 2**i for i in range(levels)))
    raise SystemExit(f"unknown model {name!r}")


def _parse(spec: str) -> tuple[str, dict]:
    name, *rest = spec.split(":")
    kw = {}
    for part in rest:
        if part.startswith("e"):
            kw["epochs"] = int(part[1:])
        elif part.startswith("b"):
            kw["batch_size"] = int(part[1:])
        elif part.startswith("lr"):
            kw["lr"] = float(part[2:])
    return name, kw


def _per_kind(y, kinds, s) -> dict:
    out = {}
    for k in sorted(set(kinds.tolist()) - {0}):
        keep = (kinds == 0) | (kinds == k)
        out[str(k)] = round(evaluate_scores(y[keep], s[keep])["auc"], 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("case")
    ap.add_argument("--split", default="val", choices=["val", "test"])
    ap.add_argument("--candidate", action="append", default=[])
    ap.add_argument("--preset", action="append", default=[], help="a preset trained the page's way")
    ap.add_argument("--recommended", action="store_true")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    case = Path(args.case)
    train = torch.from_numpy(np.load(case / "train.npy")).permute(0, 3, 1, 2).contiguous()
    images = np.load(case / f"{args.split}.npy")
    y = np.load(case / f"{args.split}_labels.npy")
    kinds = np.load(case / f"{args.split}_kinds.npy")
    results = []
    seeds = [int(s) for s in args.seeds.split(",")]
    for spec, page in [(c, False) for c in args.candidate] + [(p, True) for p in args.preset]:
        name, kw = _parse(spec)
        for seed in seeds:
            cfg = _model(name)
            model = build(cfg, seed=seed)
            t0 = time.perf_counter()
            sched = {} if page else {"schedule": "onecycle"}
            tcfg = TrainConfig(**{"epochs": 10, "batch_size": 64, "lr": 1e-3, **sched, **kw},
                               seed=seed, threads=1, device="cpu")
            fit(model, train, config=tcfg)
            seconds = time.perf_counter() - t0
            names = [s for s in available_scores(model)]
            beta = tcfg.beta if cfg.family == "vae" else None
            sc = model_scores(model, images, names, beta=beta, latent=train)
            row = {"candidate": spec, "seed": seed, "split": args.split, "train_seconds": round(seconds, 1),
                   "auc": {k: round(evaluate_scores(y, v)["auc"], 4) for k, v in sc.items()},
                   "per_kind_auc": {k: _per_kind(y, kinds, v) for k, v in sc.items()}}
            results.append(row)
            print(json.dumps(row), flush=True)
    if args.recommended:
        from aelib.anomaly import train_detector

        for seed in seeds:
            det = train_detector(train, seed=seed, device="cpu")
            s = det.anomaly_scores(images)
            m = evaluate_scores(y, s)
            row = {"candidate": "recommended", "recipe": det.recipe_.to_dict(), "seed": seed,
                   "split": args.split, "train_seconds": round(det.seconds_, 1),
                   "auc": round(m["auc"], 4), "average_precision": round(m["average_precision"], 4),
                   "f1_max": round(m["f1_max"], 4), "per_kind_auc": _per_kind(y, kinds, s)}
            results.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"case": json.loads((case / "info.json").read_text()),
                                              "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
