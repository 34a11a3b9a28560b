"""``python -m aelib``: train, evaluate, export and bench from the command line.

The same functions the dashboard calls, with printing callbacks instead of Streamlit widgets.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from . import checkpoints
from .errors import AelibError


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


def load_data(args: argparse.Namespace, seed: int = 0, holdout: bool = True):
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
        else:
            g = torch.Generator().manual_seed(seed)
            perm = torch.randperm(len(images), generator=g)
            n_val = max(1, len(images) // 10)
            train = data.ImageDataset(images[perm[n_val:]], name=Path(name).name, source="path")
            test = data.ImageDataset(images[perm[:n_val]], name=Path(name).name + " (10% held out)",
                                     source="path")
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

            dist.destroy_process_group()


def _train(args: argparse.Namespace, rank: int, world: int, device: str) -> int:
    from .models import build, count_parameters, get_config
    from .recipes import train_config_for
    from .train import PrintCallback, collapse_message, fit

    log = print if rank == 0 else (lambda *a, **k: None)
    train, test = load_data(args, seed=args.seed)
    output_range = args.output_range or ("symmetric" if args.model.startswith("face_") else "unit")
    cfg = get_config(args.model, in_shape=train.shape, latent=args.latent, output_range=output_range)
    model = build(cfg, seed=args.seed)
    # The model's starting values (aelib.recipes), with what the user gave.
    tcfg = train_config_for(args.model, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                            schedule=args.schedule, beta=args.beta, seed=args.seed, loss=args.loss,
                            noise=args.noise, noise_level=args.noise_level, threads=args.threads,
                            device=device, amp=args.amp)
    if args.fast:  # the whole fast-mode schedule; data, seed, loss, noise and device stay the user's
        from .recipes import with_fast_mode

        tcfg = with_fast_mode(tcfg)
        if cfg.preset != "mnist_keras":
            log("note: --fast was tuned for --model mnist_keras (the Keras recipe)", flush=True)
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
        print(f"warning: {collapse_message(result.history.val_mse[-1], result.history.baseline)}",
              file=sys.stderr, flush=True)
    from . import scoring

    dtype = torch.float16 if args.half else None
    if dtype is not None:  # record metrics of the weights as stored, not before rounding
        model.load_state_dict({k: v.to(dtype).to(v.dtype) for k, v in model.state_dict().items()})
    model.cpu()
    names = ["mse", "l2"] + (["elbo"] if cfg.family == "vae" else [])
    errs = scoring.reconstruction_errors(model, test.images.cpu(), names)
    metrics = {f"test_{k}": float(v.mean()) for k, v in errs.items()}
    metrics["n_test"] = len(test)
    if args.normal_classes:
        metrics["test_auc_l2"] = float(scoring.roc(test.labels.numpy(), errs["l2"])["auc"])
    log(", ".join(f"{k} {v:.5g}" for k, v in metrics.items()))
    dataset = {"name": train.name, "key": args.dataset if not Path(args.dataset).suffix else None,
               "source": train.source, "n_train": len(train),
               "n_val": len(test), "normal_classes": _parse_classes(args.normal_classes),
               "processes": world}
    out = args.out or f"runs/{train.name}-{cfg.preset or cfg.family}-z{cfg.latent}.safetensors"
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
    errs = scoring.reconstruction_errors(model, test.images, metric_names)
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

    ck = checkpoints.load(args.checkpoint)
    _, test = load_data(args, holdout=False)
    images = test.images[:args.limit] if args.limit else test.images
    if args.what == "predictions":
        n = export.write_prediction_csv(args.out, ck.model, images)
    else:
        scores = scoring.reconstruction_errors(ck.model, images, [args.score])[args.score]
        n = export.write_scores_csv(args.out, scores)
    print(f"wrote {n:,} rows to {args.out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

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
    from .models import DEFAULTS, PRESETS

    parser = argparse.ArgumentParser(prog="python -m aelib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model and write a checkpoint")
    _add_data_args(p)
    p.add_argument("--model", default="conv", choices=[*DEFAULTS, *PRESETS],
                   help="a family default or a reference preset (default: conv)")
    p.add_argument("--latent", type=int, default=None, help="latent size (default: the model's)")
    p.add_argument("--output-range", choices=["unit", "symmetric"], default=None,
                   help="pixel range: unit [0,1] or symmetric [-1,1] (default: by model)")
    p.add_argument("--epochs", type=int, default=None,
                   help="default: the model's (aelib.recipes.default_train_config: 10; 8 for vae, "
                        "12 for mnist_keras)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="default: the model's (128; 64 for vae, 300 for mnist_keras)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default: the model's; 3e-3 for the families)")
    p.add_argument("--beta", type=float, default=None,
                   help="KL weight (VAE; default 1/n_pixels, 1 for the face_vae reference preset)")
    p.add_argument("--loss", choices=["mse", "bce"], default="mse")
    p.add_argument("--schedule", choices=["constant", "onecycle"], default=None,
                   help="default: the model's (one-cycle, half the steps warming up, for the families; "
                        "constant for the presets); a schedule other than the model's takes "
                        "TrainConfig's shape for it")
    p.add_argument("--fast", action="store_true",
                   help="aelib's fast mode for the Keras recipe (--model mnist_keras): batch 80, 3 epochs, "
                        "one-cycle Adam peaking at 1e-2 with half the steps warming up; replaces --epochs, "
                        "--batch-size, --lr and --schedule. It reaches the recipe's validation MSE in about "
                        "a third of its time (README)")
    p.add_argument("--noise", choices=["gaussian", "mask"], default=None, help="denoising mode")
    p.add_argument("--noise-level", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
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
    p.add_argument("--score", choices=["l2", "mse", "mae", "elbo"], default="l2")
    p.add_argument("--limit", type=int, default=None, help="only the first N test images")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="benchmarks: print figures, end with one JSON line")
    which = p.add_subparsers(dest="which", required=True)
    b = which.add_parser("seed-recipe", help="the Keras recipe on Fashion-MNIST: aelib vs a plain "
                         "DataLoader loop, and aelib's fast mode's time to the recipe's quality")
    b.add_argument("--seeds", default="0,1,2,3,4")
    b.add_argument("--skip-naive", action="store_true", help="leave out the plain DataLoader loop")
    b = which.add_parser("vae", help="VAE test MSE and negative ELBO at latent sizes 2-128, with "
                         "sample and interpolation images in docs/vae/")
    b = which.add_parser("anomaly", help="one-class anomaly detection: ROC AUC per class and mean, "
                         "per family and scoring option")
    from . import bench_anomaly

    bench_anomaly.add_arguments(b)
    for b in which.choices.values():
        if "--data-root" not in b._option_string_actions:
            b.add_argument("--data-root", default="../shared/data")
        if "--quick" not in b._option_string_actions:
            b.add_argument("--quick", action="store_true", help="tiny runs, for smoke tests")
        if "--threads" not in b._option_string_actions:
            b.add_argument("--threads", type=int, default=None, help="torch threads for the trainings")
        b.add_argument("--out-dir", default="bench/results", help="where the JSON result goes")
        b.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except AelibError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
