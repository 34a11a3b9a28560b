"""The default VAE against pythae's VAE on Fashion-MNIST: time to pythae's final test MSE.

    python bench/vae_vs_pythae.py --data-root ../shared/data --pythae-path /tmp/peers/pythae_pkgs

pythae is not a dependency: install it beside the project's torch, e.g.
``pip install --target /tmp/peers/pythae_pkgs --no-deps pythae imageio`` and
``pip install --target /tmp/peers/pythae_pkgs pydantic`` (cloudpickle, scikit-learn, SciPy and
tqdm come with the project).

In one run, one torch thread each, the same 60,000 / 10,000 images:
1. pythae: ``VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=16))`` with its default MLP encoder
   and decoder, ``BaseTrainer`` for ``--pythae-epochs`` (20) at batch 64, Adam 1e-3; its test MSE
   is the per-pixel mean squared error of ``decoder(encoder(x).mu)``, the same measure aelib's
   validation MSE uses; timed from the trainer's start to its end.
2. aelib: the family's default VAE (latent 16) and its starting values from
   ``recipes.default_train_config("vae")`` (8 epochs), then the VAE's fast mode
   (``recipes.with_fast_mode(cfg, "vae")``: one epoch, batch 48, one-cycle to 5e-3), each with
   ``target_val_mse`` = pythae's final test MSE: ``fit`` stops at the end of the first epoch that
   reaches it; its seconds include the validation after each epoch.
3. aelib's default schedule again, with its validation MSE measured every tenth of an epoch on a
   paused clock (``--crossing``, on by default): the training seconds at the first check at or
   below pythae's MSE. Checking only at epoch ends (2.) over-states when a run gets there by up
   to an epoch; this says when it does, to a tenth of one. The training itself is the same run:
   the checks use the mean (no sampling), and those at epoch ends equal the validation MSEs of 2.
Prints all and their ratios, writes ``bench/results/vae-vs-pythae.json``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def pythae_run(train: torch.Tensor, test: torch.Tensor, epochs: int, seed: int) -> dict:
    from pythae.data.datasets import BaseDataset
    from pythae.models import VAE, VAEConfig
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    x_train, x_test = train.float() / 255, test.float() / 255
    torch.manual_seed(seed)
    model = VAE(model_config=VAEConfig(input_dim=(1, 28, 28), latent_dim=16))
    with tempfile.TemporaryDirectory() as out:
        cfg = BaseTrainerConfig(output_dir=out, learning_rate=1e-3, per_device_train_batch_size=64,
                                per_device_eval_batch_size=256, num_epochs=epochs, seed=seed, no_cuda=True)
        data = BaseDataset(x_train, torch.zeros(len(x_train)))  # what pythae's TrainingPipeline passes
        trainer = BaseTrainer(model=model, train_dataset=data, eval_dataset=None, training_config=cfg)
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        sq = 0.0
        for i in range(0, len(x_test), 1000):
            x = x_test[i:i + 1000]
            recon = model.decoder(model.encoder(x).embedding).reconstruction
            sq += float(((recon.reshape(x.shape) - x) ** 2).sum())
    return {"seconds": seconds, "test_mse": sq / x_test.numel(), "epochs": epochs}


def aelib_run(train: torch.Tensor, test: torch.Tensor, target: float, schedule: str, seed: int) -> dict:
    from aelib.models import build
    from aelib.recipes import default_train_config, with_fast_mode
    from aelib.train import fit

    cfg = default_train_config("vae")
    if schedule == "fast":
        cfg = with_fast_mode(cfg, "vae")
    cfg = replace(cfg, seed=seed, threads=1, target_val_mse=target)
    result = fit(build("vae", (1, 28, 28), seed=seed), train, test, cfg)
    h = result.history
    return {"seconds": result.seconds, "val_mse": h.val_mse, "reached": h.val_mse[-1] <= target,
            "epochs_run": len(h.val_mse), "config": cfg.to_dict(), "reason": result.reason}


def aelib_crossing(train: torch.Tensor, test: torch.Tensor, target: float, seed: int,
                   every: float = 0.1) -> dict:
    """The default schedule's training seconds until its validation MSE first reaches ``target``,
    checked every ``every`` of an epoch with the clock stopped during the checks."""
    from aelib.models import build
    from aelib.recipes import default_train_config
    from aelib.train import Callback, evaluate, fit

    cfg = replace(default_train_config("vae"), seed=seed, threads=1)
    model = build("vae", (1, 28, 28), seed=seed)

    class Checks(Callback):
        def __init__(self) -> None:
            self.points: list[tuple[float, float, float]] = []  # (epochs, training s, val MSE)
            self.reached: tuple[float, float, float] | None = None

        def on_train_begin(self, total_epochs: int, steps_per_epoch: int) -> None:
            self.every = max(1, round(steps_per_epoch * every))
            self.paused = 0.0
            self.t0 = time.perf_counter()

        def on_batch_end(self, epoch: int, step: int, steps_per_epoch: int, loss: float) -> None:
            if self.reached is not None or (step % self.every and step != steps_per_epoch):
                return
            t = time.perf_counter()
            with torch.no_grad():
                mse = evaluate(model, test, cfg)["mse"]
            point = (round(epoch - 1 + step / steps_per_epoch, 3), t - self.t0 - self.paused, mse)
            self.points.append(point)
            if mse <= target:
                self.reached = point
            self.paused += time.perf_counter() - t

    checks = Checks()
    # No validation set for fit itself: the checks (one at each epoch's end too) are its validation.
    fit(model, train, None, cfg, callbacks=[checks], stop=lambda: checks.reached is not None)
    return {"reached": checks.reached is not None,
            "epochs": checks.reached[0] if checks.reached else None,
            "seconds": checks.reached[1] if checks.reached else None,
            "epoch_end_val_mse": [m for e, _, m in checks.points if e == int(e)], "checks": checks.points,
            "config": cfg.to_dict()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--pythae-path", default="/tmp/peers/pythae_pkgs")
    p.add_argument("--pythae-epochs", type=int, default=20)
    p.add_argument("--aelib", default="default,fast",
                   help="aelib's schedules to run: 'default' (8 epochs), 'fast' (the VAE's --fast)")
    p.add_argument("--crossing", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the default schedule to pythae's MSE, checked every tenth of an epoch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=str(HERE / "results"))
    args = p.parse_args()
    sys.path.insert(0, args.pythae_path)
    from aelib.data import load_dataset

    torch.set_num_threads(1)
    train = load_dataset("fashion-mnist", "train", root=args.data_root, download=False).images
    test = load_dataset("fashion-mnist", "test", root=args.data_root, download=False).images
    peer = pythae_run(train, test, args.pythae_epochs, args.seed)
    print(f"pythae VAE: {peer['epochs']} epochs in {peer['seconds']:.1f} s, test MSE {peer['test_mse']:.5f}",
          flush=True)
    ours = []
    for schedule in args.aelib.split(","):
        run = aelib_run(train, test, peer["test_mse"], schedule, args.seed)
        run["schedule"] = schedule
        run["ratio"] = run["seconds"] / peer["seconds"] if run["reached"] else None
        ours.append(run)
        print(f"aelib default VAE, {schedule} schedule ({run['config']['epochs']} epochs): "
              f"{'reached' if run['reached'] else 'did NOT reach'} {peer['test_mse']:.5f} after "
              f"{run['epochs_run']} epochs, {run['seconds']:.1f} s (val MSE {run['val_mse'][-1]:.5f}); "
              f"ratio {run['ratio'] if run['ratio'] is None else round(run['ratio'], 3)} (target <= 0.25)",
              flush=True)
    crossing = None
    if args.crossing:
        crossing = aelib_crossing(train, test, peer["test_mse"], args.seed)
        crossing["ratio"] = crossing["seconds"] / peer["seconds"] if crossing["reached"] else None
        if crossing["reached"]:
            print(f"aelib default schedule, checked every tenth of an epoch: reached {peer['test_mse']:.5f} "
                  f"after {crossing['epochs']} epochs, {crossing['seconds']:.1f} s of training; ratio "
                  f"{crossing['ratio']:.3f} (target <= 0.25)", flush=True)
        else:
            print("aelib default schedule, checked every tenth of an epoch: did NOT reach it", flush=True)
    from importlib.metadata import version as _version

    result = {"benchmark": "vae-vs-pythae", "pythae": {**peer, "version": _version("pythae")},
              "aelib": ours, "aelib_crossing": crossing,
              "machine": {"torch": torch.__version__, "threads": 1, "python": platform.python_version(),
                          "cpu": platform.processor() or platform.machine()}}
    from aelib.bench import write_result

    print(f"wrote {write_result(result, args.out_dir)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
