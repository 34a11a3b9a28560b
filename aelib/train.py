"""``fit()``: one training loop for every family, batches drawn from resident uint8 tensors.

Why not a DataLoader: MNIST-size images fit in memory many times over, and a DataLoader of
per-sample transforms spends most of its time in Python (PIL -> tensor per image). Here each
epoch is one ``randperm``; each batch is one ``index_select`` plus one scale to float.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from . import conv_step, mlp_step
from .data import to_float
from .errors import ConfigError, TrainingDiverged
from .forward import AUTO_BATCH_FLOATS, auto_batch_size, eval_batches
from .models import default_beta, is_vae, reconstruction_loss, vae_loss


def default_threads() -> int:
    """Torch threads for a run whose caller named none: the cores this process may use that other
    work is not already using (1-minute load average), at most torch's own default, at least 1.

    More OpenMP threads than free cores spin against each other: on a 2-core machine with one other
    busy process, two threads trained the Keras recipe several times slower than one (README
    "Threads"). On an idle machine this is torch's default.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        busy = 0.0
    return max(1, min(torch.get_num_threads(), cores - int(round(busy))))


@dataclass
class TrainConfig:
    """Every knob of a training run. Saved in the checkpoint metadata.

    schedule:   "constant" (the Keras recipe) or "onecycle" (warm-up then cosine decay to ~0,
                which reaches a given loss in fewer epochs).
    loss:       reconstruction loss, "mse" or "bce" (BCE needs output_range "unit").
    beta:       weight of the KL term (VAE only); None picks :func:`aelib.models.default_beta`.
    noise:      denoising mode: None, "gaussian" (sigma = noise_level, in [0, 1] pixel units)
                or "mask" (salt-and-pepper, a fraction noise_level of pixels set to 0 or 1).
                Inputs are corrupted, targets stay clean.
    threads:    torch intra-op threads during the run (None leaves the setting alone).
    target_val_mse: stop as soon as an epoch ends with validation MSE at or below this.
    engine:     "auto" runs fully connected models on the CPU through :mod:`aelib.mlp_step` (the
                same gradients without autograd's per-op overhead) where it applies, and
                convolutional ones on colour images in channels-last memory layout (the same
                layers, faster kernels; float32 rounding differs), and a decoder's last
                transposed convolution and tanh through :mod:`aelib.conv_step` in training steps
                (the same layers in faster forms; rounding differs likewise); "autograd" always
                uses plain autograd on contiguous tensors.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    loss: str = "mse"
    beta: float | None = None       # None: models.default_beta (1 for the reference preset)
    seed: int = 0
    schedule: str = "constant"
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8               # Adam's epsilon (torch's default; Keras uses 1e-7)
    warmup: float = 0.25            # onecycle: fraction of steps spent warming up
    div_factor: float = 25.0        # onecycle: initial lr = lr / div_factor
    final_div_factor: float = 1e4   # onecycle: final lr = initial lr / final_div_factor
    noise: str | None = None
    noise_level: float = 0.0
    threads: int | None = None
    val_batch_size: int | None = None  # None: forward.auto_batch_size (a few MB of floats a batch)
    target_val_mse: float | None = None
    device: str = "auto"            # "auto" (CUDA when available), "cpu", "cuda", "cuda:1"
    amp: bool = False               # bfloat16 autocast of the forward pass (GPU; CPU allowed)
    engine: str = "auto"            # "auto" | "autograd"

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}.")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}.")
        if self.loss not in ("mse", "bce"):
            raise ConfigError(f"loss must be 'mse' or 'bce', got {self.loss!r}.")
        if self.schedule not in ("constant", "onecycle"):
            raise ConfigError(f"schedule must be 'constant' or 'onecycle', got {self.schedule!r}.")
        if self.beta is not None and not (isinstance(self.beta, (int, float)) and math.isfinite(self.beta)
                                          and self.beta >= 0):
            raise ConfigError(f"beta must be a finite number >= 0, got {self.beta}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed must be a whole number from 0 to {MAX_SEED:,}.")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or not 1 <= self.threads <= 1024):
            raise ConfigError(f"threads must be a whole number from 1 to 1024, got {self.threads}.")
        if not math.isfinite(self.noise_level):
            raise ConfigError("noise_level must be a finite number.")
        if self.noise not in (None, "gaussian", "mask"):
            raise ConfigError(f"noise must be None, 'gaussian' or 'mask', got {self.noise!r}.")
        if self.noise == "mask" and not 0 <= self.noise_level <= 1:
            raise ConfigError("noise_level for 'mask' is a fraction of pixels in [0, 1].")
        if self.noise_level < 0:
            raise ConfigError("noise_level must be >= 0.")
        if self.engine not in ("auto", "autograd"):
            raise ConfigError(f"engine must be 'auto' or 'autograd', got {self.engine!r}.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class History:
    """Per-epoch records. ``val_mse`` is plain reconstruction MSE, comparable across families."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_mse: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # wall time since fit() began
    lr: list[float] = field(default_factory=list)       # the rate of the epoch's last step
    # Validation MSE of predicting the training set's mean image for every input: the level a
    # model that learned nothing image-specific plateaus at. One value per run, repeated per
    # epoch like every field here (NaN without validation images; absent in older checkpoints).
    mean_image_mse: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> History:
        return cls(**{k: list(v) for k, v in d.items() if k in cls.__dataclass_fields__})

    @property
    def baseline(self) -> float | None:
        """The run's mean-image MSE, or None where it was not measured."""
        if not self.mean_image_mse or not math.isfinite(self.mean_image_mse[-1]):
            return None
        return self.mean_image_mse[-1]

    @property
    def collapsed(self) -> bool:
        """Whether the run ended no clearly better than the mean image (see :func:`collapsed`)."""
        if not self.val_mse or self.baseline is None:
            return False
        return collapsed(self.val_mse[-1], self.baseline)

    def time_to(self, val_mse: float) -> float | None:
        """Wall seconds until validation MSE first reached ``val_mse`` (None if never)."""
        for v, s in zip(self.val_mse, self.seconds):
            if v <= val_mse:
                return s
        return None


# A run "plateaued at the mean image" when its validation MSE is not below this fraction of the
# mean-image MSE. A dead network (a constant output: blank, or the mean image) sits at 1x or above;
# one that learned the images sits well below, so 0.8 flags the first with room for a weak run.
COLLAPSE_RATIO = 0.8


def collapsed(val_mse: float, mean_image_mse: float) -> bool:
    """True when ``val_mse`` is not clearly below ``mean_image_mse`` (above COLLAPSE_RATIO of it)."""
    return not val_mse < COLLAPSE_RATIO * mean_image_mse


def collapse_message(val_mse: float, mean_image_mse: float, steps: int | None = None) -> str:
    """One plain sentence for a run that plateaued at the mean image; ``steps`` (optimiser steps
    taken, when known) is said, since too few of them is the usual cause with small settings."""
    after = f" after {steps:,} training step{'' if steps == 1 else 's'}" if steps else ""
    return (f"This run learned nothing image-specific{after}: its validation MSE {val_mse:.5f} is not "
            f"clearly below that of predicting the mean training image ({mean_image_mse:.5f}; less than "
            f"{1 - COLLAPSE_RATIO:.0%} below it), so its reconstructions are blank or near the average "
            f"image; train for more epochs or on more images, or try another seed or a lower learning "
            f"rate.")


@torch.no_grad()
def mean_image_mse(train_images: torch.Tensor, val_images: torch.Tensor, output_range: str = "unit",
                   chunk: int | None = None) -> float:
    """Validation MSE of the constant prediction "the training set's mean image", in the model's
    pixel range (so it compares with ``val_mse``). Sums in float64, in chunks of ``chunk`` images
    (default: about :data:`~aelib.forward.AUTO_BATCH_FLOATS` pixels, so the float copies stay a few
    MB whatever the image size; 4,096 colour 64x64 images were 0.6 GB)."""
    chunk = chunk or max(1, AUTO_BATCH_FLOATS // max(train_images[:1].numel(), 1))
    total = torch.zeros(train_images.shape[1:], dtype=torch.float64, device=train_images.device)
    for i in range(0, len(train_images), chunk):
        total += to_float(train_images[i:i + chunk], output_range).sum(0, dtype=torch.float64)
    mean = (total / max(len(train_images), 1)).to(val_images.device)
    sq = 0.0
    for i in range(0, len(val_images), chunk):
        x = to_float(val_images[i:i + chunk], output_range).double()
        sq += float(((x - mean) ** 2).sum())
    return sq / max(val_images[:1].numel() * len(val_images), 1)


@dataclass
class FitResult:
    model: nn.Module
    history: History
    config: TrainConfig
    reason: str = "completed"   # "completed" | "stopped" | "target reached"
    seconds: float = 0.0


class Callback:
    """Override what you need. ``fit`` calls these from the training thread."""

    def on_train_begin(self, total_epochs: int, steps_per_epoch: int) -> None: ...
    def on_batch_end(self, epoch: int, step: int, steps_per_epoch: int, loss: float) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict) -> None: ...
    def on_train_end(self, result: FitResult) -> None: ...


StopFlag = threading.Event | Callable[[], bool] | None


def _should_stop(stop: StopFlag) -> bool:
    if stop is None:
        return False
    if isinstance(stop, threading.Event):
        return stop.is_set()
    return bool(stop())


def corrupt(x: torch.Tensor, kind: str | None, level: float, value_range: tuple[float, float],
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Denoising corruption of a float batch in the model's range (targets stay clean)."""
    if kind is None or level <= 0:
        return x
    lo, hi = value_range
    if kind == "gaussian":
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        noise *= level * (hi - lo)
        return (x + noise).clamp_(lo, hi)
    if kind == "mask":
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        out = x.clone()
        out[u < level / 2] = lo
        out[(u >= level / 2) & (u < level)] = hi
        return out
    raise ConfigError(f"Unknown noise kind {kind!r}.")


def _loss(model: nn.Module, x: torch.Tensor, target: torch.Tensor, cfg: TrainConfig,
          vae: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (loss to minimise, plain reconstruction MSE) for one batch.

    ``vae`` says whether ``model`` (possibly a DDP wrapper) returns (recon, mu, logvar).
    """
    out = model(x)
    if is_vae(model) if vae is None else vae:
        recon, mu, logvar = out
        loss, rec, _ = vae_loss(recon, target, mu, logvar, cfg.beta, cfg.loss)
    else:
        recon = out
        loss = rec = reconstruction_loss(recon, target, cfg.loss)
    mse = rec if cfg.loss == "mse" else F.mse_loss(recon.detach(), target)
    return loss, mse


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, cfg: TrainConfig | None = None) -> dict:
    """Mean loss and mean reconstruction MSE over ``images`` (uint8), model in eval mode."""
    cfg = cfg or TrainConfig()
    if cfg.beta is None:
        cfg = replace(cfg, beta=default_beta(model.config))
    total_loss = total_mse = 0.0
    n = len(images)
    for x, (loss, mse) in eval_batches(model, images, cfg.val_batch_size, lambda m, x: _loss(m, x, x, cfg)):
        total_loss += loss.item() * len(x)
        total_mse += mse.item() * len(x)
    return {"loss": total_loss / max(n, 1), "mse": total_mse / max(n, 1)}


def _check_images(images: torch.Tensor, model: nn.Module, what: str) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        raise ConfigError(f"{what} must be a uint8 tensor of shape (N, C, H, W).")
    if tuple(images.shape[1:]) != tuple(model.config.in_shape):
        raise ConfigError(f"{what} have shape {tuple(images.shape[1:])} but the model expects "
                          f"{tuple(model.config.in_shape)}.")
    if len(images) == 0:
        raise ConfigError(f"{what} are empty.")


def _adam(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam with the fused kernel where torch has one for every parameter's device.

    The fused step is one kernel for all parameters instead of a dozen foreach kernels, which
    matters for models whose step is only a few milliseconds.
    """
    params = list(model.parameters())
    kw = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    try:
        return torch.optim.Adam(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, foreach=True, **kw)


class _Dist:
    """What fit needs to know about torch.distributed (a no-op in a single process).

    Under ``torchrun`` every rank walks the same seeded permutation; step ``k`` takes the global
    batch ``perm[k*B:(k+1)*B]`` and rank ``r`` trains on its slice ``[r::world]``. DDP averages
    gradients, so with equal slices a step equals a single-process step at global batch ``B``.
    """

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.on = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.on else 0
        self.world = dist.get_world_size() if self.on else 1

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        return idx[self.rank::self.world] if self.on else idx

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Sum floats over ranks (one small all-reduce)."""
        if not self.on:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        self.dist.all_reduce(t)
        return t.tolist()


MAX_SEED = 2**62  # torch takes 64-bit seeds; the noise generator adds to this one


def resolve_device(name: str = "auto") -> torch.device:
    """``name`` as a torch device this machine has; :class:`ConfigError` for any other."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"Unknown device {name!r}; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"Device {name!r} asks for CUDA, but this machine has no usable GPU; use cpu.")
        n = torch.cuda.device_count()
        if device.index is not None and device.index >= n:
            raise ConfigError(f"Device {name!r} does not exist; this machine has {n} GPU(s), "
                              f"cuda:0 to cuda:{n - 1}.")
    elif device.type == "mps" and torch.backends.mps.is_available():
        pass
    elif device.type != "cpu":
        raise ConfigError(f"Device {name!r} is not supported; use auto, cpu, cuda or cuda:N.")
    return device


@torch.no_grad()
def _evaluate_dist(model: nn.Module, images: torch.Tensor, cfg: TrainConfig,
                   dist: _Dist, device: torch.device) -> dict:
    """Validation over all ranks: each rank scores its shard, sums are all-reduced."""
    if not dist.on:
        return evaluate(model, images, cfg)
    model.eval()
    shard = images[dist.rank::dist.world]
    tot_loss = tot_mse = 0.0
    bs = auto_batch_size(model, cfg.val_batch_size)
    for i in range(0, len(shard), bs):
        x = to_float(shard[i:i + bs].to(device, non_blocking=True),
                     model.config.output_range)
        loss, mse = _loss(model, x, x, cfg)
        tot_loss += loss.item() * len(x)
        tot_mse += mse.item() * len(x)
    model.train()
    tot_loss, tot_mse, n = dist.sum([tot_loss, tot_mse, float(len(shard))], device)
    return {"loss": tot_loss / max(n, 1), "mse": tot_mse / max(n, 1)}


def fit(model: nn.Module, train_images: torch.Tensor, val_images: torch.Tensor | None = None,
        config: TrainConfig | None = None, callbacks: Iterable[Callback] = (),
        stop: StopFlag = None) -> FitResult:
    """Train ``model`` in place on uint8 images (N, C, H, W); returns the history.

    Adam on MSE (or BCE) reconstruction, plus beta * KL for a VAE. Deterministic for a given
    seed on CPU. A NaN or infinite loss restores the weights of the last completed epoch and
    raises :class:`TrainingDiverged` (its ``history`` attribute holds what was done).
    ``stop`` (an Event or a callable) is checked every batch; the model keeps its weights.

    Under ``torchrun`` (torch.distributed initialised) the model is wrapped in
    DistributedDataParallel and each rank trains on its shard of every global batch; losses are
    all-reduced so every rank returns the same history. On CUDA the images are held on the GPU
    and ``amp`` runs the forward pass in bfloat16.
    """
    cfg = config or TrainConfig()
    cfg.validate()
    if cfg.beta is None:  # resolve, so the history and checkpoint record the weight really used
        cfg = replace(cfg, beta=default_beta(model.config))
    _check_images(train_images, model, "Training images")
    if val_images is not None:
        _check_images(val_images, model, "Validation images")
    if cfg.loss == "bce" and model.config.output_range != "unit":
        raise ConfigError("BCE loss needs a model with output_range 'unit' ([0, 1]).")
    callbacks = list(callbacks)
    old_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    dist = _Dist()
    device = resolve_device(cfg.device)
    model.to(device)
    train_images = train_images.to(device)  # resident: uint8 on the GPU costs 1/4 of float32
    if val_images is not None:
        val_images = val_images.to(device)
    net: nn.Module = model
    if dist.on:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp)
    vae = is_vae(model)

    torch.manual_seed(cfg.seed)  # VAE sampling noise, and anything else drawing from the global RNG
    gen = torch.Generator().manual_seed(cfg.seed)
    noise_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1000 * dist.rank)
    out_range = model.config.output_range
    value_range = model.config.value_range
    n = len(train_images)
    bs = min(cfg.batch_size, n)
    steps = math.ceil(n / bs)
    opt = _adam(model, cfg)
    sched = None
    total = cfg.epochs * steps
    # One-cycle needs at least one step in each phase; with fewer steps than that (a tiny run)
    # there is nothing to warm up or anneal, so the rate stays at its peak.
    if cfg.schedule == "onecycle" and min(cfg.warmup, 1 - cfg.warmup) * total >= 2:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total,
                                                    pct_start=cfg.warmup, cycle_momentum=False,
                                                    div_factor=cfg.div_factor,
                                                    final_div_factor=cfg.final_div_factor)
    # Convolutions on colour images run faster on the CPU with channels-last (NHWC) weights and
    # activations (bench/conv_throughput.py); on one-channel images they do not, so those stay
    # contiguous. Only the memory layout changes, not the layers or their maths; the model goes
    # back to contiguous below.
    channels_last = (cfg.engine == "auto" and device.type == "cpu" and not dist.on
                     and model.config.in_shape[0] > 1
                     and any(p.dim() == 4 for p in model.parameters()))
    if channels_last:
        model.to(memory_format=torch.channels_last)
    mlp = None
    if cfg.engine == "auto" and mlp_step.supports(model, cfg.loss, device, dist.on, cfg.amp):
        mlp = mlp_step.MLPStep(model)
    # The decoders' last transposed convolution and tanh in faster forms for training steps
    # (aelib.conv_step): same layers and gradients, float32 sums in another order.
    fast_layers = cfg.engine == "auto" and device.type == "cpu" and not dist.on and not cfg.amp
    layers = contextlib.ExitStack()
    opt_step = mlp_step.AdamStep(opt) if mlp is not None else opt.step
    history = History()
    baseline = math.nan if val_images is None else mean_image_mse(train_images, val_images, out_range)
    result = FitResult(model, history, cfg)
    good_state = copy.deepcopy(model.state_dict())

    def diverged(message: str) -> TrainingDiverged:
        model.load_state_dict(good_state)
        err = TrainingDiverged(message)
        err.history = history
        return err

    for cb in callbacks:
        cb.on_train_begin(cfg.epochs, steps)
    t0 = time.perf_counter()
    model.train()
    # Adam's second moments of small gradients fall into float32's denormal range, where x86
    # arithmetic is ~4x slower: flushing them to zero makes the MNIST recipe's optimiser step 4x
    # faster and changes no result we measure (same val MSE to 5 digits). Per thread; undone below.
    flush = device.type == "cpu" and torch.set_flush_denormal(True)
    try:
        if fast_layers:
            layers.enter_context(conv_step.training_layers(model))
        for epoch in range(1, cfg.epochs + 1):
            perm = torch.randperm(n, generator=gen).to(device)
            sum_loss = 0.0
            for step in range(steps):
                if _should_stop(stop):
                    result.reason = "stopped"
                    break
                idx = dist.shard(perm[step * bs:(step + 1) * bs])
                target = to_float(train_images.index_select(0, idx), out_range)
                x = corrupt(target, cfg.noise, cfg.noise_level, value_range, noise_gen)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                if mlp is not None:
                    loss = mlp(x, target)  # gradients already in .grad
                else:
                    with amp:
                        loss, _ = _loss(net, x, target, cfg, vae)
                loss_value = loss.item()
                if dist.on:  # every rank must agree on divergence, or one would wait forever
                    loss_value, = dist.sum([loss_value], device)
                    loss_value /= dist.world
                if not math.isfinite(loss_value):
                    raise diverged(
                        f"Training diverged at epoch {epoch}, batch {step + 1}: the loss became "
                        f"{loss_value}. Try a smaller learning rate (now {cfg.lr:g}). The model "
                        f"keeps the weights of epoch {epoch - 1}.")
                if mlp is None:
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                lr_used = opt.param_groups[0]["lr"]
                opt_step()
                if sched is not None:
                    sched.step()
                sum_loss += loss_value * len(idx) * dist.world
                for cb in callbacks:
                    cb.on_batch_end(epoch, step + 1, steps, loss_value)
            if result.reason == "stopped":
                break
            train_loss = sum_loss / n
            logs = {"epoch": epoch, "train_loss": train_loss, "lr": lr_used}
            if val_images is not None:
                ev = _evaluate_dist(model, val_images, cfg, dist, device)
                logs["val_loss"], logs["val_mse"] = ev["loss"], ev["mse"]
                logs["mean_image_mse"] = baseline
            logs["seconds"] = time.perf_counter() - t0
            if not all(math.isfinite(v) for v in (logs["train_loss"], logs.get("val_loss", 0.0))):
                raise diverged(f"Training diverged in epoch {epoch} (validation loss "
                               f"{logs.get('val_loss')}). The model keeps the weights of epoch "
                               f"{epoch - 1}.")
            history.epoch.append(epoch)
            history.train_loss.append(train_loss)
            history.val_loss.append(logs.get("val_loss", math.nan))
            history.val_mse.append(logs.get("val_mse", math.nan))
            history.seconds.append(logs["seconds"])
            history.lr.append(logs["lr"])
            history.mean_image_mse.append(baseline)
            good_state = copy.deepcopy(model.state_dict())
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            if cfg.target_val_mse is not None and logs.get("val_mse", math.inf) <= cfg.target_val_mse:
                result.reason = "target reached"
                break
    finally:
        layers.close()
        model.eval()
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
        if flush:
            torch.set_flush_denormal(False)  # torch's default
        if cfg.threads:
            torch.set_num_threads(old_threads)
    result.seconds = time.perf_counter() - t0
    for cb in callbacks:
        cb.on_train_end(result)
    return result


class PrintCallback(Callback):
    """One line per epoch, and a tqdm bar over the batches when ``progress`` is true."""

    def __init__(self, progress: bool = True, file=None):
        self.progress = progress
        self.file = file
        self._bar = None

    def on_train_begin(self, total_epochs: int, steps_per_epoch: int) -> None:
        self.total_epochs = total_epochs

    def on_batch_end(self, epoch: int, step: int, steps_per_epoch: int, loss: float) -> None:
        if not self.progress:
            return
        if self._bar is None:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{self.total_epochs}",
                             leave=False, file=self.file, mininterval=0.5)
        self._bar.update(1)
        if step % 20 == 0:
            self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        parts = [f"epoch {epoch:3d}/{self.total_epochs}", f"train_loss {logs['train_loss']:.5f}"]
        if "val_loss" in logs:
            parts += [f"val_loss {logs['val_loss']:.5f}", f"val_mse {logs['val_mse']:.5f}"]
        parts.append(f"{logs['seconds']:.1f}s")
        print("  ".join(parts), file=self.file, flush=True)

    def on_train_end(self, result: FitResult) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
