"""The defaults on small training sets, on every seed: before and after the small-set start.

    python bench/small_sets.py [--data-root ../shared/data] [--sizes 1000,500,200] [--seeds 0,1,2,3,4]
                               [--before 1000] [--face-sizes 1000,300] [--face-before 300] [--out DIR]

For each family (fcn, conv, vae) and each size, trains ``default_train_config(family, n)`` (what the
CLI and the Training page start from on n images) on the first n MNIST training images, validates
on the first 2,000 test images, one thread, and prints the final validation MSE against the mean
image's. Likewise ``face_conv`` and ``face_vae`` on the colour set of ``bench/defaults.py``
(Fashion-MNIST upscaled to 64x64 and colourised; 300 validation images). ``--before`` and
``--face-before`` sizes also run the full-set values (``recipes.full_set_start``: the families' 10
epochs at batch 128, the vae 8 at 64; face_conv 10 at 64, face_vae 8 at 32), which is what those
sizes started from before. Ends with one JSON line and writes small-sets.json.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import torch
from defaults import colour_set

from aelib import bench as aebench
from aelib.data import load_splits
from aelib.models import DEFAULTS, build, get_config
from aelib.recipes import default_train_config, full_set_start
from aelib.train import fit

FACE = ("face_conv", "face_vae")


def run(family: str, images: torch.Tensor, val: torch.Tensor, seed: int, before: bool) -> dict:
    start = full_set_start(family) if before else default_train_config(family, len(images))
    cfg = replace(start, seed=seed)
    model = build(get_config(family, tuple(images.shape[1:])), seed=seed)
    res = fit(model, images, val, cfg)
    h = res.history
    return {"family": family, "n": len(images), "seed": seed, "start": "before" if before else "now",
            "epochs": cfg.epochs, "batch_size": cfg.batch_size, "val_mse": round(h.val_mse[-1], 5),
            "mean_image_mse": round(h.baseline, 5), "collapsed": h.collapsed,
            "seconds": round(res.seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--sizes", default="1000,500,200")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--before", default="1000", help="sizes to run with the full-set values too")
    ap.add_argument("--face-sizes", default="1000,300")
    ap.add_argument("--face-before", default="300")
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    train, test = load_splits("mnist", root=args.data_root, download=False)
    val = test.images[:2000]
    seeds = [int(s) for s in args.seeds.split(",")]
    before = {int(n) for n in args.before.split(",") if n}
    face_before = {int(n) for n in args.face_before.split(",") if n}
    plan = [(n, DEFAULTS, n in before, lambda n: (train.images[:n], val))
            for n in [int(n) for n in args.sizes.split(",") if n]]
    plan += [(n, FACE, n in face_before, lambda n: colour_set(args.data_root, n, 300))
             for n in [int(n) for n in args.face_sizes.split(",") if n]]
    rows = []
    for n, archs, with_before, data in plan:
        images, val_images = data(n)
        for flag in ([True] if with_before else []) + [False]:
            for family in archs:
                for seed in seeds:
                    row = run(family, images, val_images, seed, flag)
                    rows.append(row)
                    print(f"{row['start']:6s} {family:9s} n={n:5d} seed {seed}: {row['epochs']} epochs of "
                          f"{row['batch_size']}, val MSE {row['val_mse']:.5f} (mean image "
                          f"{row['mean_image_mse']:.5f}){'  COLLAPSED' if row['collapsed'] else ''}",
                          flush=True)
    summary = {}
    for row in rows:
        key = f"{row['start']}/{row['family']}/{row['n']}"
        s = summary.setdefault(key, {"worst": 0.0, "best": 9.9, "collapsed": 0, "runs": 0,
                                     "mean_image": row["mean_image_mse"]})
        s["worst"], s["best"] = max(s["worst"], row["val_mse"]), min(s["best"], row["val_mse"])
        s["collapsed"] += row["collapsed"]
        s["runs"] += 1
    for key, s in summary.items():
        print(f"{key:23s} worst {s['worst']:.5f}  best {s['best']:.5f}  mean image {s['mean_image']:.5f}  "
              f"collapsed {s['collapsed']}/{s['runs']}")
    result = {"benchmark": "small-sets", "mnist": train.source, "cpu": aebench.cpu_name(),
              "torch": torch.__version__, "summary": summary, "rows": rows}
    path = aebench.write_result(result, args.out)
    print(json.dumps({"summary": summary, "written": str(path)}))


if __name__ == "__main__":
    main()
