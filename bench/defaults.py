"""Do the defaults learn on every seed? Final val MSE, mean-image MSE and time per seed.

Trains every family (fcn, conv, vae) and the 28x28 preset (mnist_keras) at the Training page's
starting values (``aelib.recipes.default_train_config``) the way the page does (the first
min(N, 10,000) training images, validation on the first 2,000 test images), and the Anomaly
page's quick one-class model (``aelib.recipes.quick_oneclass``; MNIST class 1, Fashion-MNIST
class 0, validated on that class's test images, AUC class-vs-rest on the first 2,000 test images),
on MNIST and Fashion-MNIST, seeds 0-9. The face presets train on a 64x64 colour set made here
(Fashion-MNIST upscaled and colourised, deterministic). ``--old-seeds`` also runs the defaults
before this change (torch init for conv/vae, constant lr 1e-3, batch 128, 10 epochs; the quick
model's 8 epochs at lr 2e-3 on 6,000 images; the Keras recipe for mnist_keras on any number of
images) for the collapse and time comparison.

Target per (model, dataset): every seed within 1.5x of the best seed's val MSE, and the worst
seed 3x or more below the mean-image MSE.

    nice -n 10 python bench/defaults.py --part mnist --datasets mnist
    nice -n 10 python bench/defaults.py --timing       # old vs new time, interleaved in one process
    nice -n 10 python bench/defaults.py --merge        # partial files -> bench/results/defaults.json

Each finished run is written at once, so an interrupted grid keeps what it did; ``--skip-done``
resumes it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aelib import scoring  # noqa: E402
from aelib.data import load_splits  # noqa: E402
from aelib.models import build, get_config  # noqa: E402
from aelib.recipes import RECIPE, default_train_config, quick_oneclass  # noqa: E402
from aelib.train import TrainConfig, fit  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ARCHS_28 = ("conv", "vae", "fcn", "quick", "mnist_keras")
FACE_ARCHS = ("face_conv", "face_vae", "face_fcn")
QUICK_CLASS = {"mnist": 1, "fashion-mnist": 0}
MAX_RATIO, MIN_FACTOR = 1.5, 3.0


def colour_set(root: str, n_train: int, n_val: int) -> tuple[torch.Tensor, torch.Tensor]:
    """64x64x3 uint8 images: Fashion-MNIST upscaled (bilinear), a random foreground and background
    colour per image (fixed generator), so the set is the same on every machine."""
    train, test = load_splits("fashion-mnist", root=root, download=False)
    g = torch.Generator().manual_seed(0)

    def make(images: torch.Tensor) -> torch.Tensor:
        a = F.interpolate(images.float() / 255, size=(64, 64), mode="bilinear", align_corners=False)
        a = a.clamp(0, 1)
        fg = torch.rand(len(images), 3, 1, 1, generator=g)
        bg = torch.rand(len(images), 3, 1, 1, generator=g) * 0.5
        return ((bg * (1 - a) + fg * a) * 255).round().to(torch.uint8)

    return make(train.images[:n_train]), make(test.images[:n_val])


def old_setup(arch: str, shape) -> tuple:
    """The model and training config of each default before this change."""
    if arch == "quick":
        return get_config("conv", shape, latent=32).replace(init="torch"), \
            TrainConfig(epochs=8, batch_size=128, lr=2e-3), 6000
    cfg = get_config(arch, in_shape=None if arch.startswith("face_") else shape)
    if arch == "mnist_keras":  # the Keras recipe on any number of images
        return cfg, replace(RECIPE), None
    if arch in ("conv", "vae"):
        cfg = cfg.replace(init="torch")
    return cfg, TrainConfig(), None


def new_setup(arch: str, shape, n_available: int | None) -> tuple:
    if arch == "quick":
        return quick_oneclass(shape, n_available)
    cfg = get_config(arch, in_shape=None if arch.startswith("face_") else shape)
    return cfg, default_train_config(arch, n_available), None


def one_run(arch, which, seed, train, val, shape, auc_set=None) -> dict:
    mcfg, tcfg, n_max = (new_setup(arch, shape, len(train)) if which == "new" else old_setup(arch, shape))
    images = train[:n_max] if n_max else train
    tcfg = TrainConfig(**{**tcfg.to_dict(), "seed": seed, "threads": 1})
    model = build(mcfg, seed=seed)
    res = fit(model, images, val, tcfg)
    h = res.history
    row = {"arch": arch, "defaults": which, "seed": seed, "val_mse": h.val_mse[-1],
           "mean_image_mse": h.baseline, "collapsed": h.collapsed, "seconds": res.seconds,
           "val_curve": h.val_mse, "n_train": len(images), "n_val": len(val), "init": mcfg.init,
           "train_config": {k: tcfg.to_dict()[k] for k in ("epochs", "batch_size", "lr", "schedule")}}
    if auc_set is not None:
        imgs, labels = auc_set
        errs = scoring.reconstruction_errors(model, imgs, ["l2"])["l2"]
        row["auc_l2"] = float(scoring.roc(labels, errs)["auc"])
    return row


def datasets_for(name: str, root: str, face_n: int):
    """(arch list, {arch: (train, val, auc_set)}) for one dataset name."""
    if name == "colour64":
        tr, va = colour_set(root, face_n, max(200, face_n // 6))
        return FACE_ARCHS, {a: (tr, va, None) for a in FACE_ARCHS}, (3, 64, 64)
    train, test = load_splits(name, root=root, download=False)
    if train.source != "local":
        raise SystemExit(f"{name} not found under {root}: the benchmark needs the real data.")
    c = QUICK_CLASS[name]
    page = (train.images[:10_000], test.images[:2000], None)
    quick = (train.images[train.labels == c], test.images[test.labels == c],
             (test.images[:2000], (test.labels[:2000] != c).numpy().astype(int)))
    return ARCHS_28, {a: quick if a == "quick" else page for a in ARCHS_28}, train.shape


def summarize(rows: list[dict]) -> list[dict]:
    out = []
    keys = sorted({(r["dataset"], r["arch"], r["defaults"]) for r in rows})
    for ds, arch, which in keys:
        rs = [r for r in rows if (r["dataset"], r["arch"], r["defaults"]) == (ds, arch, which)]
        v = [r["val_mse"] for r in rs]
        mim = statistics.median(r["mean_image_mse"] for r in rs)
        worst, best = max(v), min(v)
        s = {"dataset": ds, "arch": arch, "defaults": which, "seeds": sorted(r["seed"] for r in rs),
             "worst": worst, "median": statistics.median(v), "best": best, "mean_image_mse": mim,
             "worst_over_best": worst / best, "mean_image_over_worst": mim / worst,
             "collapsed_seeds": sorted(r["seed"] for r in rs if r["collapsed"]),
             "mean_seconds": statistics.mean(r["seconds"] for r in rs)}
        s["pass"] = s["worst_over_best"] <= MAX_RATIO and s["mean_image_over_worst"] >= MIN_FACTOR
        if "auc_l2" in rs[0]:
            s["auc_l2_worst"] = min(r["auc_l2"] for r in rs)
            s["auc_l2_median"] = statistics.median(r["auc_l2"] for r in rs)
        out.append(s)
    # time: new vs old on the seeds both ran, run for run
    for s in out:
        if s["defaults"] != "new":
            continue
        pairs = [(n["seconds"], o["seconds"]) for n in rows for o in rows
                 if (n["dataset"], n["arch"], n["seed"]) == (o["dataset"], o["arch"], o["seed"])
                 and n["defaults"] == "new" and o["defaults"] == "old"
                 and n["dataset"] == s["dataset"] and n["arch"] == s["arch"]]
        if pairs:
            s["time_new_over_old"] = sum(p[0] for p in pairs) / sum(p[1] for p in pairs)
            s["time_pairs"] = len(pairs)
    return out


def print_summary(summary: list[dict]) -> None:
    print(f"{'dataset':14s} {'model':12s} {'defaults':8s} {'seeds':>5s} {'worst':>8s} {'median':>8s} "
          f"{'best':>8s} {'mean img':>8s} {'w/b':>5s} {'mi/w':>5s} {'s/run':>6s} {'t new/old':>9s}  result")
    for s in summary:
        t = f"{s['time_new_over_old']:.2f}" if "time_new_over_old" in s else ""
        verdict = "pass" if s["pass"] else "FAIL"
        if s["collapsed_seeds"]:
            verdict += f" (collapsed: seeds {s['collapsed_seeds']})"
        print(f"{s['dataset']:14s} {s['arch']:12s} {s['defaults']:8s} {len(s['seeds']):5d} {s['worst']:8.5f} "
              f"{s['median']:8.5f} {s['best']:8.5f} {s['mean_image_mse']:8.5f} {s['worst_over_best']:5.2f} "
              f"{s['mean_image_over_worst']:5.1f} {s['mean_seconds']:6.1f} {t:>9s}  {verdict}")


def timing(root: str, reps: int = 4, n: int = 4000, log=print) -> list[dict]:
    """Old vs new defaults' training time, interleaved in one process (ABAB...), per family.

    One epoch on ``n`` MNIST images per timing, scaled by each config's epoch count: the same
    work as a full run on ``n`` images, measured side by side so machine load hits both alike.
    """
    train, _ = load_splits("mnist", root=root, download=False)
    images = train.images[:n]
    out = []
    for arch in ("fcn", "conv", "vae"):
        secs = {"old": [], "new": []}
        setups = {"old": old_setup(arch, train.shape), "new": new_setup(arch, train.shape, None)}
        warm = TrainConfig(epochs=1, batch_size=128, threads=1)
        fit(build(setups["old"][0], seed=0), images[:512], None, warm)  # first-call costs, untimed
        for _ in range(reps):
            for which in ("old", "new"):
                mcfg, tcfg, _n = setups[which]
                one = TrainConfig(**{**tcfg.to_dict(), "epochs": 1, "threads": 1})
                res = fit(build(mcfg, seed=0), images, None, one)
                secs[which].append(res.seconds * tcfg.epochs)
        row = {"arch": arch, "n_images": n, "old_seconds": secs["old"], "new_seconds": secs["new"],
               "old_epochs": setups["old"][1].epochs, "new_epochs": setups["new"][1].epochs,
               "new_over_old": sum(secs["new"]) / sum(secs["old"])}
        out.append(row)
        log(f"timing {arch:5s}: old {[round(v, 1) for v in secs['old']]} s, new "
            f"{[round(v, 1) for v in secs['new']]} s (full run on {n} images), new/old "
            f"{row['new_over_old']:.2f}", flush=True)
    return out


def write(path: Path, rows: list[dict], meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**meta, "summary": summarize(rows), "runs": rows}, indent=1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--datasets", default="mnist,fashion-mnist,colour64")
    p.add_argument("--archs", default=None, help="comma-separated subset (default: all for each dataset)")
    p.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9")
    p.add_argument("--old-seeds", default="0,1,2",
                   help="seeds on which the old defaults run too (empty: none)")
    p.add_argument("--face-images", type=int, default=3000, help="training images of the colour set")
    p.add_argument("--part", default=None, help="write bench/results/defaults-PART.json")
    p.add_argument("--skip-done", action="store_true", help="keep the runs already in the output file")
    p.add_argument("--timing", action="store_true",
                   help="old vs new training time per family, interleaved in one process")
    p.add_argument("--merge", action="store_true",
                   help="merge bench/results/defaults-*.json into defaults.json and print the table")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    meta = {"benchmark": "defaults", "torch": torch.__version__, "threads": 1,
            "target": {"worst_over_best_max": MAX_RATIO, "mean_image_over_worst_min": MIN_FACTOR}}
    if args.timing:
        tim = timing(args.data_root)
        (RESULTS / "defaults-timing.json").write_text(json.dumps({**meta, "timing": tim}, indent=1))
        return 0
    if args.merge:
        rows, tim = [], None
        for f in sorted(RESULTS.glob("defaults-*.json")):
            part = json.loads(f.read_text())
            rows += part.get("runs", [])
            tim = part.get("timing", tim)
        write(RESULTS / "defaults.json", rows, {**meta, "timing": tim})
        print_summary(summarize(rows))
        for t in tim or []:
            print(f"timing {t['arch']:5s}: new/old {t['new_over_old']:.2f} (interleaved, "
                  f"{len(t['old_seconds'])} each, {t['old_epochs']} vs {t['new_epochs']} epochs on "
                  f"{t['n_images']} images)")
        return 0
    out = RESULTS / (f"defaults-{args.part}.json" if args.part else "defaults.json")
    rows = json.loads(out.read_text())["runs"] if args.skip_done and out.exists() else []
    done = {(r["dataset"], r["arch"], r["defaults"], r["seed"]) for r in rows}
    seeds = [int(s) for s in args.seeds.split(",") if s]
    old_seeds = {int(s) for s in args.old_seeds.split(",") if s}
    wanted = set(args.archs.split(",")) if args.archs else None
    for ds in args.datasets.split(","):
        archs, sets, shape = datasets_for(ds, args.data_root, args.face_images)
        archs = [a for a in archs if wanted is None or a in wanted]
        for seed in seeds:  # seed-major, so a cut-short grid still covers every model
            for arch in archs:
                for which in ("new", "old") if seed in old_seeds else ("new",):
                    if (ds, arch, which, seed) in done:
                        continue
                    train, val, auc_set = sets[arch]
                    t = time.perf_counter()
                    row = {"dataset": ds, **one_run(arch, which, seed, train, val, shape, auc_set)}
                    rows.append(row)
                    write(out, rows, meta)
                    extra = f" auc {row['auc_l2']:.3f}" if "auc_l2" in row else ""
                    dead = ", COLLAPSED" if row["collapsed"] else ""
                    print(f"{ds:13s} {arch:11s} {which} seed {seed}: val MSE {row['val_mse']:.5f} "
                          f"(mean image {row['mean_image_mse']:.5f}{dead}){extra}  {row['seconds']:.1f}s "
                          f"[{time.perf_counter() - t:.0f}s]", flush=True)
    print_summary(summarize(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
