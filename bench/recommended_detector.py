"""The recommended anomaly detector as the Anomaly page runs it, against the benchmark's figures.

    python bench/recommended_detector.py --dataset mnist --classes 1 --seeds 0,1,2
    python bench/recommended_detector.py --dataset fashion-mnist --classes 0 --seeds 0,1,2

The page's flow: train :func:`aelib.anomaly.train_detector` on (up to the recipe's maximum of) the
normal class's training images, score the whole test split (label 1 = any other class), and
report ROC AUC, AUPR and F1-max. Beside it: the benchmark's per-class figures for the same class
from ``bench/results/anomaly-<dataset>.json``. One torch thread. Writes
``bench/results/anomaly-recommended-<dataset>.json`` unless ``--out ''``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from aelib.anomaly import recommended_recipe, train_detector
from aelib.bench_anomaly import int_list
from aelib.data import load_splits, one_class_split
from aelib.scoring import evaluate_scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--classes", default="1")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default=None, help="JSON path ('' for none)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    train, test = load_splits(args.dataset, root=args.data_root, download=False)
    bench_file = Path("bench/results") / f"anomaly-{args.dataset}.json"
    bench = json.loads(bench_file.read_text()) if bench_file.is_file() else None
    rows = []
    for c in int_list(args.classes):
        normal, labelled = one_class_split(train, test, c)
        y = labelled.labels.numpy()
        for seed in int_list(args.seeds):
            t0 = time.perf_counter()
            det = train_detector(normal.images, seed=seed, device="cpu")
            t_train = time.perf_counter() - t0
            t1 = time.perf_counter()
            s = det.anomaly_scores(labelled.images)
            t_score = time.perf_counter() - t1
            m = evaluate_scores(y, s)
            row = {"class": c, "seed": seed, "n_train": min(len(normal), det.recipe_.max_images),
                   "n_test": len(y), **{k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()},
                   "train_and_fit_seconds": round(t_train, 1), "score_seconds": round(t_score, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    bench_per_class = {}
    if bench:
        idx = {c: i for i, c in enumerate(bench["classes"])}
        for c in int_list(args.classes):
            if c in idx:
                bench_per_class[str(c)] = {name: v["per_class"][idx[c]] for name, v in bench["auc"].items()
                                           if name in ("ensemble", bench["headline"]["name"], "fcn/blur_ink",
                                                       "conv/latent", "fcn/blur_ink+seeds",
                                                       "conv/latent+seeds")}
    recipe = recommended_recipe(train.images.shape[1:], len(normal))
    result = {"benchmark": "anomaly-recommended", "dataset": args.dataset,
              "recipe": recipe.to_dict(), "runs": rows, "benchmark_per_class_auc": bench_per_class,
              "benchmark_seeds": bench["seeds"] if bench else None,
              "machine": {"torch": torch.__version__, "threads": 1, "python": platform.python_version(),
                          "note": "2 cores shared with other jobs: times are upper bounds"}}
    out = args.out if args.out is not None else f"bench/results/anomaly-recommended-{args.dataset}.json"
    if out:
        Path(out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
