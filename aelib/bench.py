"""Benchmarks that print figures and end with one JSON line (``python -m aelib bench ...``)."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .models import build, get_config
from .recipes import RECIPE, RECIPE_TARGET_MSE, fast_config
from .train import TrainConfig, fit


def cpu_name() -> str:
    """The CPU's model name and its widest vector unit (speed ratios differ between CPUs)."""
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = next((ln for ln in info.splitlines() if ln.startswith("flags")), "")
    simd = "avx512f" if " avx512f" in flags else "avx2" if " avx2" in flags else "sse"
    return f"{name} ({simd})"


def _machine() -> dict:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "cpu": platform.processor() or platform.machine()}


def naive_recipe(root: str, epochs: int = 12, seed: int = 0, log=print) -> dict:
    """The plain PyTorch loop users start from: DataLoader of per-sample ToTensor, default init.

    Same model layout as the recipe (784-144-72-48, same activations), Adam 1.5e-3, batch 300,
    validation on the test set every epoch.
    """
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    torch.manual_seed(seed)
    tf = transforms.ToTensor()
    train = datasets.FashionMNIST(root, train=True, download=False, transform=tf)
    test = datasets.FashionMNIST(root, train=False, download=False, transform=tf)
    train_dl = DataLoader(train, batch_size=300, shuffle=True)
    test_dl = DataLoader(test, batch_size=300)
    model = build(get_config("mnist_keras").replace(init="torch"))
    opt = torch.optim.Adam(model.parameters(), lr=1.5e-3)
    val_mse = []
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        for x, _ in train_dl:
            loss = F.mse_loss(model(x), x)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        total, n = 0.0, 0
        with torch.no_grad():
            for x, _ in test_dl:
                total += F.mse_loss(model(x), x, reduction="sum").item() / x[0].numel()
                n += len(x)
        val_mse.append(total / n)
        log(f"naive  epoch {epoch:2d}/{epochs}  val_mse {val_mse[-1]:.5f}  "
            f"{time.perf_counter() - t0:.1f}s")
    return {"seconds": time.perf_counter() - t0, "val_mse": val_mse}


def _run_seeds(label: str, cfg: TrainConfig, seeds, train, test, log) -> list[dict]:
    """Train the recipe model once per seed with ``cfg``; per-run time, curve, time to target."""
    out = []
    for seed in seeds:
        model = build("mnist_keras", seed=seed)
        res = fit(model, train.images, test.images, TrainConfig(**{**cfg.to_dict(), "seed": seed}))
        h = res.history
        out.append({"seed": seed, "seconds": res.seconds, "val_mse": h.val_mse,
                    "time_to_target": h.time_to(RECIPE_TARGET_MSE)})
        log(f"aelib {label} seed {seed}: val_mse {h.val_mse[-1]:.5f} after {len(h.val_mse)} epochs, "
            f"{res.seconds:.1f}s, time to {RECIPE_TARGET_MSE}: {out[-1]['time_to_target']}")
    return out


def seed_recipe(root: str, seeds: tuple[int, ...] = (0, 1, 2, 3, 4), skip_naive: bool = False,
                epochs: int | None = None, threads: int | None = None, log=print) -> dict:
    """The Keras recipe on Fashion-MNIST through aelib vs the naive loop, plus the fast mode."""
    from .data import load_dataset

    train = load_dataset("fashion-mnist", "train", root=root, download=False)
    test = load_dataset("fashion-mnist", "test", root=root, download=False)
    if train.source != "local":
        raise SystemExit(f"Fashion-MNIST not found under {root}: the benchmark needs the real data.")
    recipe = TrainConfig(**{**RECIPE.to_dict(), "threads": threads,
                            "epochs": epochs or RECIPE.epochs})
    fast = TrainConfig(**{**fast_config().to_dict(), "threads": threads})
    if threads:
        torch.set_num_threads(threads)  # the naive loop too
    runs = _run_seeds("recipe", recipe, seeds, train, test, log)
    fast_runs = _run_seeds("fast  ", fast, seeds, train, test, log)
    naive = None
    if not skip_naive:
        naive = naive_recipe(root, epochs=recipe.epochs, log=log)

    def mean(v):  # None when any run missed (a miss must not vanish from an average)
        return None if not v or any(x is None for x in v) else sum(v) / len(v)

    aelib_seconds = mean([r["seconds"] for r in runs])
    out = {
        "benchmark": "seed-recipe",
        "dataset": "fashion-mnist",
        "recipe": recipe.to_dict(),
        "seeds": list(seeds),
        "aelib_seconds": aelib_seconds,
        "aelib_val_mse": mean([r["val_mse"][-1] for r in runs]),
        "aelib_val_mse_per_seed": [r["val_mse"][-1] for r in runs],
        "aelib_time_to_target": mean([r["time_to_target"] for r in runs]),
        "fast_config": fast.to_dict(),
        "fast_time_to_target": mean([r["time_to_target"] for r in fast_runs]),
        "fast_time_to_target_per_seed": [r["time_to_target"] for r in fast_runs],
        "fast_seeds_reaching_target": sum(r["time_to_target"] is not None for r in fast_runs),
        "fast_val_mse_per_seed": [r["val_mse"][-1] for r in fast_runs],
        "target_val_mse": RECIPE_TARGET_MSE,
        "naive_seconds": naive["seconds"] if naive else None,
        "naive_val_mse": naive["val_mse"][-1] if naive else None,
        "speedup": (naive["seconds"] / aelib_seconds) if naive else None,
        "machine": _machine(),
    }
    if out["fast_time_to_target"] and out["aelib_seconds"]:
        out["fast_vs_recipe"] = out["fast_time_to_target"] / out["aelib_seconds"]
    return out


def write_result(result: dict, out_dir: str | Path | None) -> Path | None:
    if out_dir is None:
        return None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{result['benchmark']}.json"
    path.write_text(json.dumps(result, indent=1))
    return path


def vae_quality(root: str, datasets=("mnist", "fashion-mnist"), latents=(2, 16, 48, 64, 128),
                epochs: dict | None = None, threads: int | None = 1, image_dir: str | Path | None = None,
                quick: bool = False, log=print) -> dict:
    """Test reconstruction MSE and negative ELBO of the default VAE at several latent sizes.

    ``neg_elbo`` is per image, in the units of the training objective scaled to a whole image:
    sum of squared pixel errors + KL (the default weight is 1 / n_pixels, so this is n_pixels
    times the per-pixel training loss). Saves prior samples and an interpolation strip per run
    as PNGs in ``image_dir``.
    """
    import numpy as np
    from PIL import Image

    from . import explore, scoring
    from .data import load_splits

    epochs = epochs or {"mnist": 30, "fashion-mnist": 8}
    out: dict = {"benchmark": "vae-quality", "runs": [], "machine": _machine()}
    if image_dir is not None:
        image_dir = Path(image_dir)
        image_dir.mkdir(parents=True, exist_ok=True)

    def png(arr: np.ndarray, path: Path) -> None:
        Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8)).resize(
            (arr.shape[1] * 2, arr.shape[0] * 2), Image.NEAREST).save(path)

    for ds in datasets:
        train, test = load_splits(ds, root=root, download=False)
        if quick:
            train.images, test.images = train.images[:512], test.images[:256]
        for z in latents:
            model = build("vae", train.shape, latent=z, seed=0)
            cfg = TrainConfig(epochs=1 if quick else epochs[ds], batch_size=64, lr=2e-3,
                              schedule="onecycle", threads=threads)
            res = fit(model, train.images, test.images, cfg)
            errs = scoring.reconstruction_errors(model, test.images, ["mse", "elbo"], beta=res.config.beta)
            n_pix = model.config.n_pixels
            row = {"dataset": ds, "latent": z, "epochs": cfg.epochs, "seconds": res.seconds,
                   "test_mse": float(errs["mse"].mean()),
                   "neg_elbo": float(errs["elbo"].mean() * n_pix)}
            out["runs"].append(row)
            log(f"{ds:13s} z={z:3d}: test MSE {row['test_mse']:.5f}  neg ELBO/image "
                f"{row['neg_elbo']:.2f}  ({res.seconds:.0f}s)")
            if image_dir is not None:
                samples = explore.prior_samples(model, 16, seed=0)
                a, b = test.images[0], test.images[1]
                strip = explore.interpolate(model, a, b, steps=10, method="spherical")
                png(explore.image_grid([samples[:8], samples[8:]]), image_dir / f"{ds}-z{z}-samples.png")
                png(explore.image_grid([strip]), image_dir / f"{ds}-z{z}-interpolation.png")
    return out
