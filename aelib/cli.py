"""``python -m aelib``: train, evaluate, export and bench from the command line.

The same functions the dashboard calls, with printing callbacks instead of Streamlit widgets.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
from pathlib import Path

import torch

from . import checkpoints
from .errors import AelibError


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (``error: ...``), like aelib's own, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog.split()[-1]}: {message} (see --help)\n")


def _whole(lo: int, hi: int | None = None):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"{text} is out of range; give {lo} or more"
                                             + (f", at most {hi:,}" if hi is not None else ""))
        return v
    parse.__name__ = "whole number"
    return parse


def _number(lo: float, *, positive: bool = False):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(v) or v < lo or (positive and v <= 0):
            raise argparse.ArgumentTypeError(f"{text} must be a finite number "
                                             + ("above 0" if positive else f"of at least {lo:g}"))
        return v
    parse.__name__ = "number"
    return parse


def _fraction(hi: float):
    """A share in (0, hi], refused by the parser: before anything is loaded or trained."""
    number = _number(0, positive=True)

    def parse(text: str) -> float:
        v = number(text)
        if v > hi:
            raise argparse.ArgumentTypeError(f"{text} must be above 0 and at most {hi:g}")
        return v
    parse.__name__ = "share"
    return parse


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="mnist",
                   help="mnist, fashion-mnist, or a path to a .npy/.npz array, image folder or .zip "
                        "(default: mnist)")
    p.add_argument("--data-root", default=None,
                   help="torchvision dataset root (default: $AELIB_DATA_ROOT or ~/.cache/aelib/data)")
    p.add_argument("--no-download", action="store_true",
                   help="never try to download MNIST / Fashion-MNIST")
    p.add_argument("--test", default=None,
                   help="for a path dataset: a separate test/validation array or folder "
                        "(default: hold out 10%% of --dataset)")
    p.add_argument("--normal-classes", default=None,
                   help="one-class mode: comma-separated class ids treated as normal, e.g. 0 or 1,7; "
                        "training uses only those, evaluation labels the rest as anomalies")


def _parse_classes(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise AelibError(f"--normal-classes takes comma-separated integers, got {text!r}.") from None


def load_data(args: argparse.Namespace, holdout: bool = True):
    """(train, test) ImageDatasets for the CLI's data arguments.

    A path dataset without ``--test`` is split 90/10 for training (``holdout``); for evaluate and
    export the whole array is the test set (e.g. the faces ``testingset.npy``).
    """
    from . import data

    name = args.dataset
    if name in data.DATASETS:
        train, test = data.load_splits(name, root=args.data_root, download=not args.no_download)
        if train.note:
            print(f"note: {train.note}", file=sys.stderr)
    else:
        images = data.load_images(name)
        if args.test or not holdout:
            train = data.ImageDataset(images, name=Path(name).name, source="path")
        if not holdout and not args.test:
            test = train
        elif args.test:
            test = data.ImageDataset(data.load_images(args.test), name=Path(args.test).name,
                                     source="path")
        else:  # the app's policy too: the last 10% held out
            train, test = data.holdout_split(images, name=Path(name).name, source="path")
    classes = _parse_classes(getattr(args, "normal_classes", None))
    if classes is not None:
        train, test = data.one_class_split(train, test, classes)
    return train, test


def _init_distributed(device: str) -> tuple[int, int, str]:
    """Join the process group when started by torchrun (WORLD_SIZE > 1).

    gloo on CPU, nccl on CUDA, one GPU per local rank. Returns (rank, world, device).
    """
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    import torch.distributed as dist

    from .train import resolve_device

    if resolve_device(device).type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), device


def cmd_train(args: argparse.Namespace) -> int:
    rank, world, device = _init_distributed(args.device)
    try:
        return _train(args, rank, world, device)
    finally:
        if world > 1:
            import torch.distributed as dist

            # Every rank waits here for rank 0 to have saved, so that none tears its connections
            # down while a peer still uses them: without it, gloo aborted the process of a rank that
            # finished first (SIGABRT, "terminate called without an active exception") in 1 of 10
            # and 1 of 25 runs of tests/test_distributed.py's command on a busy 2-core machine.
            try:
                if dist.get_backend() == "gloo":  # bounded: a rank that never comes is reported
                    dist.monitored_barrier(timeout=datetime.timedelta(seconds=300))
                else:
                    dist.barrier()
            finally:
                dist.destroy_process_group()


def _checkpoint_out(out: str) -> Path:
    """Where ``checkpoints.save`` will write for ``--out``, checked before any training."""
    from ._io import check_writable

    path = check_writable(out, "--out")  # a folder given as --out is refused, not written beside
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    check_writable(path, "--out")
    check_writable(path.with_suffix(".json"), "--out's sidecar")
    return path


def _train(args: argparse.Namespace, rank: int, world: int, device: str) -> int:
    from .models import build, count_parameters, get_config
    from .recipes import (
        KERAS_IMAGES,
        KERAS_SMALL_DATA,
        SMALL_SET,
        default_train_config,
        keras_small_data,
        small_set_start,
        train_config_for,
    )
    from .train import PrintCallback, collapse_message, fit, resolve_device

    log = print if rank == 0 else (lambda *a, **k: None)
    resolve_device(device)  # an unknown or absent device is refused before anything is loaded
    if args.out and rank == 0:
        _checkpoint_out(args.out)
    train, test = load_data(args)
    output_range = args.output_range or ("symmetric" if args.model.startswith("face_") else "unit")
    cfg = get_config(args.model, in_shape=train.shape, latent=args.latent, output_range=output_range)
    model = build(cfg, seed=args.seed)
    # The model's starting values (aelib.recipes), with what the user gave.
    tcfg = train_config_for(args.model, len(train), epochs=args.epochs, batch_size=args.batch_size,
                            lr=args.lr, schedule=args.schedule, beta=args.beta, seed=args.seed,
                            loss=args.loss, noise=args.noise, noise_level=args.noise_level,
                            threads=args.threads, device=device, amp=args.amp)
    tcfg.validate()
    if keras_small_data(args.model, len(train)) and not args.fast:
        k = KERAS_SMALL_DATA
        log(f"note: fewer than {KERAS_IMAGES:,} training images, so mnist_keras starts from batch "
            f"{k.batch_size}, {k.epochs} epochs, one-cycle {k.lr:g} instead of the Keras recipe (too few "
            "updates to learn here); --epochs 12 --batch-size 300 --lr 1.5e-3 --schedule constant runs "
            "the recipe", flush=True)
    if small_set_start(args.model, len(train)) and not args.fast and (args.epochs is None
                                                                       or args.batch_size is None):
        full = default_train_config(args.model)
        log(f"note: fewer than {SMALL_SET:,} training images, so {args.model} starts from batch "
            f"{tcfg.batch_size} and {tcfg.epochs} epochs, the updates it makes on {SMALL_SET:,} images "
            f"({full.epochs} epochs at batch {full.batch_size} would be too few to learn on every seed)",
            flush=True)
    if args.fast:  # the whole fast-mode schedule; data, seed, loss, noise and device stay the user's
        from .recipes import FAST_ARCHS, with_fast_mode

        tcfg = with_fast_mode(tcfg, args.model)
        if args.model == "vae" and len(train) < KERAS_IMAGES:
            log(f"note: --fast for vae fits its whole schedule into one epoch, tuned on 60,000 images; on "
                f"{len(train):,} that is too few updates to learn on every seed (leave out --fast)",
                flush=True)
        if args.model not in FAST_ARCHS:
            log("note: --fast was tuned for --model mnist_keras (the Keras recipe) and --model vae",
                flush=True)
    where = f" on {world} processes ({tcfg.batch_size // world} images each per step)" if world > 1 else ""
    if world > 1 and tcfg.batch_size % world:
        raise AelibError(f"--batch-size {tcfg.batch_size} must divide evenly over {world} processes.")
    log(f"training {cfg.preset or cfg.family} ({count_parameters(model):,} parameters) on "
        f"{train.name}: {len(train):,} train / {len(test):,} validation images of shape "
        f"{train.shape}{where}", flush=True)
    callbacks = [PrintCallback(progress=not args.quiet)] if rank == 0 else []
    result = fit(model, train.images, test.images, tcfg, callbacks=callbacks)
    if rank != 0:
        return 0  # only rank 0 writes the checkpoint
    if result.history.collapsed:
        steps = len(result.history.epoch) * -(-len(train.images) // tcfg.batch_size)
        print(f"warning: {collapse_message(result.history.val_mse[-1], result.history.baseline, steps)}",
              file=sys.stderr, flush=True)
    from . import scoring

    dtype = torch.float16 if args.half else None
    if dtype is not None:  # record metrics of the weights as stored, not before rounding
        model.load_state_dict({k: v.to(dtype).to(v.dtype) for k, v in model.state_dict().items()})
    model.cpu()
    names = ["mse", "l2"] + (["elbo"] if cfg.family == "vae" else [])
    errs = scoring.reconstruction_errors(model, test.images.cpu(), names, beta=result.config.beta)
    metrics = {f"test_{k}": float(v.mean()) for k, v in errs.items()}
    metrics["n_test"] = len(test)
    if args.normal_classes:
        metrics["test_auc_l2"] = float(scoring.roc(test.labels.numpy(), errs["l2"])["auc"])
    log(", ".join(f"{k} {v:.5g}" for k, v in metrics.items()))
    from . import data

    classes = _parse_classes(args.normal_classes)
    dataset = checkpoints.DataInfo(
        name=train.name, key=args.dataset if args.dataset in data.DATASETS else "",
        split=str(train.extra.get("split", "train")), n_train=len(train), n_val=len(test),
        classes=None if train.classes is None else tuple(train.classes),
        normal_classes=None if classes is None else tuple(sorted(classes))).to_dict()
    dataset["processes"] = world  # how many ranks shared the training data
    stem = checkpoints.file_stem(f"{train.name}-{cfg.preset or cfg.family}-z{cfg.latent}")
    out = args.out or f"runs/{stem}.safetensors"  # "MNIST (normal: 1)" is no file name everywhere
    _checkpoint_out(out)
    path = checkpoints.save(out, model, dtype=dtype, name=args.name or Path(out).stem, dataset=dataset,
                            train_config=result.config.to_dict(), history=result.history.to_dict(),
                            metrics=metrics)
    print(f"saved {path} ({result.reason}, {result.seconds:.1f}s)")
    return 0


def _evaluate(args: argparse.Namespace) -> dict:
    from . import scoring

    ck = checkpoints.load(args.checkpoint)
    _, test = load_data(args, holdout=False)
    model = ck.model
    metric_names = ["mse", "mae", "l2"] + (["elbo"] if model.config.family == "vae" else [])
    beta = checkpoints.trained_beta(ck.meta)  # a VAE's ELBO at the weight it was trained with
    errs = scoring.reconstruction_errors(model, test.images, metric_names, beta=beta)
    report = {"checkpoint": str(args.checkpoint), "dataset": test.name, "n": len(test),
              **{f"mean_{k}": float(v.mean()) for k, v in errs.items()}}
    if args.normal_classes:
        for k, v in errs.items():
            report[f"auc_{k}"] = float(scoring.roc(test.labels.numpy(), v)["auc"])
    elif test.labels is not None:
        table = scoring.per_class_errors(errs["mse"], test.labels.numpy(), test.classes)
        report["per_class_mse"] = table.to_dict(orient="records")
    return report


def cmd_evaluate(args: argparse.Namespace) -> int:
    report = _evaluate(args)
    for k, v in report.items():
        if k == "per_class_mse":
            print("per-class reconstruction MSE:")
            for row in v:
                print(f"  {str(row['class']):>12}  n={row['n']:5d}  mean={row['mean']:.5f}")
        else:
            print(f"{k}: {v}")
    if args.json:
        print(json.dumps(report))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from . import export, scoring
    from ._io import check_writable

    check_writable(args.out, "--out")
    ck = checkpoints.load(args.checkpoint)
    _, test = load_data(args, holdout=False)
    images = test.images[:args.limit] if args.limit else test.images
    if args.what == "predictions":
        n = export.write_prediction_csv(args.out, ck.model, images)
    else:
        latent = None
        if args.score in scoring.LATENT_SCORES:
            if not args.fit_on:
                raise AelibError(f"--score {args.score} needs --fit-on: the normal training images its "
                                 "Gaussian is fitted to.")
            from . import data

            latent = scoring.LatentGaussian(scoring.latent_codes(
                ck.model, data.load_images(args.fit_on), progress=_progress_printer("fitting on")))
        beta = checkpoints.trained_beta(ck.meta)
        scores = scoring.model_scores(ck.model, images, [args.score], beta=beta, latent=latent,
                                      progress=_progress_printer("scoring"))[args.score]
        n = export.write_scores_csv(args.out, scores)
    print(f"wrote {n:,} rows to {args.out}")
    return 0


def _progress_printer(what: str, every_s: float = 5.0):
    """A ``progress(done, total, seconds)`` that prints a line with an estimate every few seconds."""
    last = [0.0]

    def progress(done: int, total: int, seconds: float) -> None:
        if done < total and seconds - last[0] < every_s:
            return
        last[0] = seconds
        left = seconds * (total - done) / done if done else float("nan")
        print(f"{what} {done:,}/{total:,} images, {seconds:.0f}s, about {left:.0f}s left",
              file=sys.stderr, flush=True)
    return progress


def cmd_detect(args: argparse.Namespace) -> int:
    """Train the recommended detector on normal images, score a test set, write ``id,score``."""
    from . import anomaly, data, export, scoring

    normal = data.load_images(args.train) if not str(args.train).endswith(".npy") else None
    if normal is None:  # a .npy: map it and read only the rows the recipe trains on
        import numpy as np

        mapped = np.load(args.train, mmap_mode="r", allow_pickle=False)
        shape = data.load_images(mapped[:1]).shape[1:]
        n_all = len(mapped)
        recipe = anomaly.recommended_recipe(shape, n_all, threads=args.threads)
        idx = anomaly.subset_indices(n_all, recipe.max_images, args.seed)
        normal = data.load_images(mapped if idx is None else mapped[idx.numpy()])
        del mapped
    else:
        n_all = len(normal)
        recipe = anomaly.recommended_recipe(normal.shape[1:], n_all, threads=args.threads)
    print(f"recipe {recipe.name}: {recipe.description}; {min(n_all, recipe.max_images):,} of "
          f"{n_all:,} normal images", flush=True)
    last = [-1.0]

    def progress(p: dict) -> None:
        if p["stage"] == "train" and p["seconds"] - last[0] < 5 and p["fraction"] < 1:
            return
        last[0] = p["seconds"]
        eta = f", about {p['eta_s']:.0f}s left" if p.get("eta_s") is not None else ""
        if p["stage"] == "fit":
            eta = ", scoring the normal images"
        print(f"{p['stage']} model {p['member'] + 1}/{p['members']}: {100 * p['fraction']:.0f}%, "
              f"{p['seconds']:.0f}s{eta}", file=sys.stderr, flush=True)

    det = anomaly.train_detector(normal, recipe, seed=args.seed, progress=progress,
                                 contamination=args.contamination, device=args.device)
    del normal
    test = data.load_images(args.test)
    scores = det.anomaly_scores(test, progress=_progress_printer("scoring"))
    n = export.write_scores_csv(args.out, scores)
    report = {"recipe": recipe.name, "n_test": n, "train_seconds": round(det.seconds_, 1),
              "threshold": det.threshold_, "flagged": int((scores > det.threshold_).sum())}
    if args.test_labels:
        import numpy as np

        report.update(scoring.evaluate_scores(np.load(args.test_labels, allow_pickle=False), scores))
    for m, d in enumerate(det.detectors):
        if args.save:
            out = f"{args.save}-{m}.safetensors"
            checkpoints.save(out, d.model, name=f"{recipe.name} member {m} ({d.score})",
                             train_config=recipe.members[m].train.to_dict(),
                             extra={"score": d.score, "recipe": recipe.name})
            report.setdefault("saved", []).append(out)
    print(f"wrote {n:,} rows to {args.out}")
    print(json.dumps(report))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench
    from .data import default_data_root

    args.data_root = str(args.data_root or default_data_root())

    if args.which == "seed-recipe":
        seeds = tuple(int(s) for s in args.seeds.split(","))
        result = bench.seed_recipe(args.data_root, seeds=seeds, skip_naive=args.skip_naive,
                                   epochs=2 if args.quick else None, threads=args.threads)
    elif args.which == "vae":
        result = bench.vae_quality(args.data_root, quick=args.quick, threads=args.threads or 1,
                                   image_dir=None if args.quick else "docs/vae")
    else:
        from . import bench_anomaly

        result = bench_anomaly.run_from_args(args)
    if args.which == "anomaly":  # one file per dataset: anomaly-<dataset>[-quick].json
        path = None if args.quick else bench_anomaly.write_result(result, args.out_dir)
    else:
        path = bench.write_result(result, None if args.quick else args.out_dir)
    if path:
        print(f"wrote {path}")
    print(json.dumps(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .models import DEFAULTS, MAX_WIDTH, PRESETS
    from .scoring import SCORES
    from .train import MAX_SEED

    parser = _Parser(prog="python -m aelib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a model and write a checkpoint")
    _add_data_args(p)
    p.add_argument("--model", default="conv", choices=[*DEFAULTS, *PRESETS],
                   help="a family default or a reference preset (default: conv)")
    p.add_argument("--latent", type=_whole(1, MAX_WIDTH), default=None,
                   help="latent size (default: the model's)")
    p.add_argument("--output-range", choices=["unit", "symmetric"], default=None,
                   help="pixel range: unit [0,1] or symmetric [-1,1] (default: by model)")
    p.add_argument("--epochs", type=_whole(1, 100_000), default=None,
                   help="default: the model's (aelib.recipes.default_train_config: 10; 8 for vae, "
                        "12 for mnist_keras; on small sets see the note train prints)")
    p.add_argument("--batch-size", type=_whole(1, 1_000_000), default=None,
                   help="default: the model's (128; 64 for vae and face_conv, 32 for face_vae, "
                        "300 for mnist_keras). Below 3,000 training images every model but "
                        "mnist_keras starts from a smaller batch and, if need be, more epochs; below "
                        "50,000 mnist_keras from batch 64, 8 epochs, one-cycle 1e-2")
    p.add_argument("--lr", type=_number(0, positive=True), default=None,
                   help="peak learning rate (default: the model's; 3e-3 for the families, 1e-2 for "
                        "mnist_keras below 50,000 images)")
    p.add_argument("--beta", type=_number(0), default=None,
                   help="KL weight (VAE; default 1/n_pixels; face_vae 0.1/n_pixels, its reference 1)")
    p.add_argument("--loss", choices=["mse", "bce"], default="mse")
    p.add_argument("--schedule", choices=["constant", "onecycle"], default=None,
                   help="default: the model's (one-cycle, half the steps warming up, for the families; "
                        "constant for the presets); a schedule other than the model's takes "
                        "TrainConfig's shape for it")
    p.add_argument("--fast", action="store_true",
                   help="aelib's fast mode for the Keras recipe (--model mnist_keras): batch 80, 3 epochs, "
                        "one-cycle Adam peaking at 1e-2 with half the steps warming up; for --model vae: "
                        "one epoch at batch 48, one-cycle peaking at 5e-3. Replaces --epochs, "
                        "--batch-size, --lr and --schedule (README)")
    p.add_argument("--noise", choices=["gaussian", "mask"], default=None, help="denoising mode")
    p.add_argument("--noise-level", type=_number(0), default=0.0)
    p.add_argument("--seed", type=_whole(0, MAX_SEED), default=0)
    p.add_argument("--threads", type=_whole(1, 1024), default=None,
                   help="torch threads (default: the cores not busy with other work, at most torch's)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast (for GPUs)")
    p.add_argument("--out", default=None, help="checkpoint path (.safetensors)")
    p.add_argument("--name", default=None, help="display name stored in the checkpoint")
    p.add_argument("--half", action="store_true", help="store weights as float16 (half the file size)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, one line per epoch")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="reconstruction errors (and AUC in one-class mode)")
    p.add_argument("checkpoint")
    _add_data_args(p)
    p.add_argument("--json", action="store_true", help="also print one JSON line")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="write prediction.csv or a scores CSV")
    p.add_argument("checkpoint")
    _add_data_args(p)
    p.add_argument("--what", choices=["predictions", "scores"], default="predictions")
    p.add_argument("--score", choices=list(SCORES), default="l2",
                   help="anomaly score for --what scores (default l2; latent and latent_knn need --fit-on)")
    p.add_argument("--fit-on", default=None,
                   help="normal training images (.npy, folder...) for --score latent or latent_knn")
    p.add_argument("--limit", type=_whole(1), default=None, help="only the first N test images")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("detect", help="train the recommended anomaly detector on normal images, "
                       "score a test set and write its id,score CSV")
    p.add_argument("--train", required=True, help="normal images: .npy/.npz, image folder or .zip")
    p.add_argument("--test", required=True, help="images to score")
    p.add_argument("--test-labels", default=None, help=".npy of 0/1 labels (1 = anomaly): print AUC, "
                   "AUPR and F1-max")
    p.add_argument("--out", required=True, help="the id,score CSV")
    p.add_argument("--contamination", type=_fraction(0.5), default=0.1,
                   help="share of the normal images above the threshold, in (0, 0.5] (default 0.1)")
    p.add_argument("--seed", type=_whole(0, MAX_SEED), default=0)
    p.add_argument("--threads", type=_whole(1, 1024), default=None,
                   help="torch threads (default: the cores not busy with other work)")
    p.add_argument("--device", default="auto")
    p.add_argument("--save", default=None, help="also save each trained model as PREFIX-<i>.safetensors")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("bench", help="benchmarks: print figures, end with one JSON line")
    which = p.add_subparsers(dest="which", required=True)
    b = which.add_parser("seed-recipe", help="the Keras recipe on Fashion-MNIST: aelib vs a plain "
                         "DataLoader loop, and aelib's fast mode's time to the recipe's quality")
    b.add_argument("--seeds", default="0,1,2,3,4",
                   help="comma-separated seeds, one training of each contender per seed (default 0,1,2,3,4)")
    b.add_argument("--skip-naive", action="store_true", help="leave out the plain DataLoader loop")
    b = which.add_parser("vae", help="VAE test MSE and negative ELBO at latent sizes 2-128, with "
                         "sample and interpolation images in docs/vae/")
    b = which.add_parser("anomaly", help="one-class anomaly detection: ROC AUC per class and mean, "
                         "per family and scoring option")
    from . import bench_anomaly

    bench_anomaly.add_arguments(b)
    for b in which.choices.values():
        if "--data-root" not in b._option_string_actions:
            b.add_argument("--data-root", default=None,
                           help="torchvision dataset root (default: $AELIB_DATA_ROOT or ~/.cache/aelib/data)")
        if "--quick" not in b._option_string_actions:
            b.add_argument("--quick", action="store_true", help="tiny runs, for smoke tests")
        if "--threads" not in b._option_string_actions:
            b.add_argument("--threads", type=_whole(1, 1024), default=None,
                           help="torch threads for the trainings (default: the cores not busy with "
                                "other work)")
        b.add_argument("--out-dir", default="bench/results", help="where the JSON result goes")
        b.set_defaults(func=cmd_bench)
    return parser


def _skip_dynamo_import() -> None:
    """Spare this process torch._dynamo's import (about 1.5 s, a fifth of a fast-mode run).

    torch's optimisers import torch._dynamo on first use only to mark some of their methods as
    never to be compiled (``torch._disable_dynamo``, which caches the marked function on the
    original as ``__dynamo_disable``). The CLI never compiles anything, so the original is its own
    marked version here; a library user who compiles keeps torch's behaviour, since only the
    command's own process (:func:`run`) calls this, not :func:`main`. Steps through
    ``Optimizer.step`` still import it (``_use_grad_for_differentiable``); fully connected models
    on the CPU step without it.
    """
    if "torch._dynamo" in sys.modules:
        return
    from torch.optim import Optimizer

    for name in ("add_param_group", "zero_grad", "state_dict", "load_state_dict"):
        wrapper = getattr(Optimizer, name, None)
        original = getattr(wrapper, "__wrapped__", None)
        code = getattr(wrapper, "__code__", None)
        if original is None or code is None or not code.co_qualname.startswith("_disable_dynamo"):
            continue  # another torch release: leave it as it is
        if getattr(original, "__dynamo_disable", None) is None:
            setattr(original, "__dynamo_disable", original)


def run() -> int:
    """The ``aelib`` command and ``python -m aelib``: :func:`main` in a process of its own."""
    _skip_dynamo_import()
    return main()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "threads", 0) is None:  # the command takes --threads and none was given
        from .train import default_threads

        args.threads = default_threads()
    old_threads = torch.get_num_threads()
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)  # for loading, evaluation and scoring too
    try:
        return args.func(args)
    except AelibError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the disk or the system refused a write or read the checks could not foresee
        where = f" ({Path(exc.filename).name})" if getattr(exc, "filename", None) else ""
        print(f"error: {exc.strerror or type(exc).__name__}{where}.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        torch.set_num_threads(old_threads)  # a caller in the same process keeps its setting
