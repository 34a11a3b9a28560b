"""The three autoencoder families, built from a small, JSON-friendly config.

* ``fcn``  - fully connected autoencoder (flatten -> MLP -> latent vector -> MLP -> image)
* ``conv`` - convolutional autoencoder (stride-2 4x4 convolutions, mirrored transposed convs)
* ``vae``  - convolutional variational autoencoder on the same trunk

A model is fully described by :class:`ModelConfig`; the config travels inside every checkpoint,
so ``build(config)`` rebuilds the exact module. Presets reproduce the reference layouts exactly
(``../shared/REFERENCE.md``); the defaults are our own, tuned choices.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError

FAMILIES = ("fcn", "conv", "vae")
OUTPUT_RANGES = {"unit": (0.0, 1.0), "symmetric": (-1.0, 1.0)}
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "leaky_relu": nn.LeakyReLU,
               "gelu": nn.GELU, "identity": nn.Identity}


@dataclass(frozen=True)
class ModelConfig:
    """Every size that matters for one model. Saved as JSON beside the weights.

    family:        "fcn", "conv" or "vae".
    in_shape:      (C, H, W) of the images, any H and W >= 1.
    latent:        size of the latent vector. For conv/vae ``None`` keeps the latent as the last
                   feature map (the reference layout, e.g. 48x8x8); an int adds a dense bottleneck.
    output_range:  "unit" ([0, 1], sigmoid output) or "symmetric" ([-1, 1], tanh output).
    hidden:        fcn: widths of the hidden layers, encoder order (the decoder mirrors them).
                   conv/vae: channels of the stride-2 convolutions, encoder order.
    encoder_act:   activation after each encoder layer (fcn: also applied to the latent layer
                   unless ``latent_act`` is given).
    latent_act:    fcn only: activation on the latent layer (default: ``encoder_act``).
    decoder_act:   activation after each hidden decoder layer.
    head_act:      vae only: activation on the mean and log-variance heads. The reference used
                   "relu" (which pins mu >= 0 and logvar >= 0); the default is none.
    init:          "torch" (PyTorch defaults) or "glorot" (Keras defaults: Glorot-uniform
                   weights, zero biases).
    """

    family: str
    in_shape: tuple[int, int, int]
    latent: int | None = 32
    output_range: str = "unit"
    hidden: tuple[int, ...] = (256, 128)
    encoder_act: str = "relu"
    latent_act: str | None = None
    decoder_act: str = "relu"
    head_act: str | None = None
    init: str = "torch"
    preset: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # Normalise JSON lists to tuples so configs compare and hash reliably.
        object.__setattr__(self, "in_shape", tuple(int(v) for v in self.in_shape))
        object.__setattr__(self, "hidden", tuple(int(v) for v in self.hidden))
        self.validate()

    def validate(self) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(f"Unknown model family {self.family!r}; expected one of {FAMILIES}.")
        if len(self.in_shape) != 3 or min(self.in_shape) < 1:
            raise ConfigError(f"in_shape must be (channels, height, width) of positive sizes, "
                              f"got {self.in_shape}.")
        if self.output_range not in OUTPUT_RANGES:
            raise ConfigError(f"output_range must be one of {tuple(OUTPUT_RANGES)}, "
                              f"got {self.output_range!r}.")
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(f"hidden must list at least one positive size, got {self.hidden}.")
        if self.family == "fcn" and self.latent is None:
            raise ConfigError("A fully connected autoencoder needs an integer latent size.")
        if self.latent is not None and self.latent < 1:
            raise ConfigError(f"latent must be a positive integer, got {self.latent}.")
        for name in ("encoder_act", "decoder_act", "latent_act", "head_act"):
            act = getattr(self, name)
            if act is not None and act not in ACTIVATIONS:
                raise ConfigError(f"{name} must be one of {tuple(ACTIVATIONS)}, got {act!r}.")
        if self.init not in ("torch", "glorot"):
            raise ConfigError(f"init must be 'torch' or 'glorot', got {self.init!r}.")

    @property
    def value_range(self) -> tuple[float, float]:
        return OUTPUT_RANGES[self.output_range]

    @property
    def n_pixels(self) -> int:
        c, h, w = self.in_shape
        return c * h * w

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["in_shape"] = list(self.in_shape)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        if not isinstance(d, dict):
            raise ConfigError("A model config must be a JSON object.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"Unknown model config keys: {sorted(unknown)}.")
        missing = {"family", "in_shape"} - set(d)
        if missing:
            raise ConfigError(f"Model config lacks {sorted(missing)}.")
        try:
            return cls(**d)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"Invalid model config: {exc}") from exc

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)


def _act(name: str | None) -> nn.Module:
    return ACTIVATIONS[name or "identity"]()


def _output_act(cfg: ModelConfig) -> nn.Module:
    return nn.Sigmoid() if cfg.output_range == "unit" else nn.Tanh()


# --------------------------------------------------------------------------------------------
# Fully connected


class FCNAutoencoder(nn.Module):
    """Flatten -> Linear/act stack -> latent vector -> mirrored stack -> image."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        widths = [cfg.n_pixels, *cfg.hidden, cfg.latent]
        enc: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            last = i == len(widths) - 2
            enc += [nn.Linear(a, b), _act((cfg.latent_act or cfg.encoder_act) if last else cfg.encoder_act)]
        rev = widths[::-1]
        dec: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(rev[:-1], rev[1:])):
            last = i == len(rev) - 2
            dec += [nn.Linear(a, b), _output_act(cfg) if last else _act(cfg.decoder_act)]
        self.encoder = nn.Sequential(nn.Flatten(), *enc)
        self.decoder = nn.Sequential(*dec, nn.Unflatten(1, cfg.in_shape))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


# --------------------------------------------------------------------------------------------
# Convolutional trunk shared by the conv AE and the VAE


def _padded_size(n: int, depth: int) -> int:
    """Smallest size >= n that halves cleanly ``depth`` times (stride-2, k4, p1 convs)."""
    m = 2**depth
    return max(m, math.ceil(n / m) * m)


class _ConvGeometry(nn.Module):
    """Pads odd-sized inputs so every stride-2 layer halves exactly, and crops the output back.

    Replicate padding keeps the border statistics of the image, so the padded margin does not
    look like an artificial frame to the model. 28x28 -> 32x32 with three layers, 25x25 -> 32x32;
    64x64 (the reference) needs no padding at all.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        depth = len(cfg.hidden)
        _, h, w = cfg.in_shape
        self.h, self.w = h, w
        self.ph, self.pw = _padded_size(h, depth), _padded_size(w, depth)
        self.top, self.left = (self.ph - h) // 2, (self.pw - w) // 2
        self.feat_hw = (self.ph // 2**depth, self.pw // 2**depth)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        if (self.ph, self.pw) == (self.h, self.w):
            return x
        pads = (self.left, self.pw - self.w - self.left, self.top, self.ph - self.h - self.top)
        return F.pad(x, pads, mode="replicate")

    def crop(self, y: torch.Tensor) -> torch.Tensor:
        if (self.ph, self.pw) == (self.h, self.w):
            return y
        return y[..., self.top:self.top + self.h, self.left:self.left + self.w]


def _conv_stack(channels: list[int], act: str) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for a, b in zip(channels[:-1], channels[1:]):
        layers += [nn.Conv2d(a, b, 4, stride=2, padding=1), _act(act)]
    return layers


def _deconv_decoder(cfg: ModelConfig) -> nn.Sequential:
    chans = [*cfg.hidden[::-1], cfg.in_shape[0]]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
        last = i == len(chans) - 2
        layers += [nn.ConvTranspose2d(a, b, 4, stride=2, padding=1),
                   _output_act(cfg) if last else _act(cfg.decoder_act)]
    return nn.Sequential(*layers)


class ConvAutoencoder(nn.Module):
    """Stride-2 convolutions down to a feature map, optional dense bottleneck, transposed convs up."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.geometry = _ConvGeometry(cfg)
        self.encoder = nn.Sequential(*_conv_stack([cfg.in_shape[0], *cfg.hidden], cfg.encoder_act))
        feat = (cfg.hidden[-1], *self.geometry.feat_hw)
        if cfg.latent is None:
            self.to_latent = nn.Identity()
            self.from_latent = nn.Identity()
        else:
            n = feat[0] * feat[1] * feat[2]
            self.to_latent = nn.Sequential(nn.Flatten(), nn.Linear(n, cfg.latent))
            self.from_latent = nn.Sequential(nn.Linear(cfg.latent, n), _act(cfg.decoder_act),
                                             nn.Unflatten(1, feat))
        self.decoder = _deconv_decoder(cfg)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.encoder(self.geometry.pad(x)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.geometry.crop(self.decoder(self.from_latent(z)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class VAE(nn.Module):
    """Convolutional VAE: shared trunk, mean and log-variance heads, conv AE decoder.

    With ``latent=None`` both heads are the last stride-2 convolution (the reference layout,
    mu and logvar are 48x8x8 maps); with an int they are linear layers to a latent vector.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.geometry = _ConvGeometry(cfg)
        chans = [cfg.in_shape[0], *cfg.hidden]
        self.encoder = nn.Sequential(*_conv_stack(chans[:-1], cfg.encoder_act))
        feat = (cfg.hidden[-1], *self.geometry.feat_hw)
        if cfg.latent is None:
            def head() -> nn.Module:
                return nn.Sequential(nn.Conv2d(chans[-2], chans[-1], 4, stride=2, padding=1),
                                     _act(cfg.head_act))
            self.from_latent = nn.Identity()
        else:
            n = feat[0] * feat[1] * feat[2]
            self.encoder.extend(_conv_stack(chans[-2:], cfg.encoder_act))
            self.encoder.append(nn.Flatten())

            def head() -> nn.Module:
                return nn.Sequential(nn.Linear(n, cfg.latent), _act(cfg.head_act))
            self.from_latent = nn.Sequential(nn.Linear(cfg.latent, n), _act(cfg.decoder_act),
                                             nn.Unflatten(1, feat))
        self.mu_head = head()
        self.logvar_head = head()
        self.decoder = _deconv_decoder(cfg)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        if self.config.latent is None:
            return (self.config.hidden[-1], *self.geometry.feat_hw)
        return (self.config.latent,)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(self.geometry.pad(x))
        return self.mu_head(h), self.logvar_head(h)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        return mu + torch.exp(0.5 * logvar) * eps

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.geometry.crop(self.decoder(self.from_latent(z)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (reconstruction, mu, logvar). Samples z in training mode, uses mu in eval."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar) if self.training else mu
        return self.decode(z), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode ``n`` draws from the prior N(0, temperature^2 I).

        Codes are drawn on the CPU (``generator`` is a CPU generator), so a seed gives the same
        images on any device.
        """
        device = next(self.parameters()).device
        z = torch.randn((n, *self.latent_shape), generator=generator) * temperature
        return self.decode(z.to(device))


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per sample, summed over latent dims: shape (N,)."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=tuple(range(1, mu.dim())))


def vae_loss(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference VAE loss: mean squared error + beta * KL, the KL averaged over the batch.

    Returns (total, mse, kl) so callers can log both parts.
    """
    mse = F.mse_loss(recon, x)
    kl = kl_divergence(mu, logvar).mean()
    return mse + beta * kl, mse, kl


def default_beta(cfg: ModelConfig) -> float:
    """KL weight used when none is given: 1 for the reference preset, 1 / n_pixels otherwise.

    The reference adds the KL (a sum over latent dims) to a *per-pixel mean* squared error, so at
    beta = 1 the KL outweighs reconstruction and a vector-latent VAE collapses to the mean image
    (MNIST, 8 epochs: val MSE 0.073 with KL ~0). Dividing the KL by the pixel count is the
    Gaussian-decoder ELBO per pixel (unit-variance noise up to a constant factor): val MSE 0.022
    with an informative latent.
    """
    return 1.0 if cfg.preset == "face_vae" else 1.0 / cfg.n_pixels


def is_vae(model: nn.Module) -> bool:
    return isinstance(model, VAE)


def reconstruct(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Deterministic reconstruction for any family (the VAE decodes its mean)."""
    out = model(x)
    return out[0] if isinstance(out, tuple) else out


def latent_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Deterministic latent code: the VAE's mean, the autoencoders' bottleneck."""
    z = model.encode(x)
    return z[0] if isinstance(z, tuple) else z


# --------------------------------------------------------------------------------------------
# Building and initialisation


_CLASSES = {"fcn": FCNAutoencoder, "conv": ConvAutoencoder, "vae": VAE}


def _glorot_(module: nn.Module) -> None:
    """Keras defaults: Glorot-uniform kernels, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build(config: ModelConfig | str, in_shape: tuple[int, int, int] | None = None,
          latent: int | None = None, seed: int | None = None) -> nn.Module:
    """Build a module from a config or a preset/default name.

    ``build("mnist_keras")``, ``build("vae", (1, 28, 28), latent=16)``, ``build(cfg, seed=0)``.
    """
    if isinstance(config, str):
        config = get_config(config, in_shape=in_shape, latent=latent)
    elif in_shape is not None or latent is not None:
        changes = {k: v for k, v in (("in_shape", in_shape), ("latent", latent)) if v is not None}
        config = config.replace(**changes)
    if seed is not None:
        torch.manual_seed(seed)
    model = _CLASSES[config.family](config)
    if config.init == "glorot":
        _glorot_(model)
    return model


# --------------------------------------------------------------------------------------------
# Presets (reference layouts, exact) and defaults (our choices)

FACE_SHAPE = (3, 64, 64)
MNIST_SHAPE = (1, 28, 28)

PRESETS: dict[str, ModelConfig] = {
    # REFERENCE.md s.1: 12288-1024-256-64, ReLU everywhere in the encoder, Tanh output.
    "face_fcn": ModelConfig("fcn", FACE_SHAPE, latent=64, output_range="symmetric",
                            hidden=(1024, 256), encoder_act="relu", decoder_act="relu",
                            preset="face_fcn"),
    # REFERENCE.md s.1: 3->12->24->48 stride-2 convs, latent is the 48x8x8 feature map.
    "face_conv": ModelConfig("conv", FACE_SHAPE, latent=None, output_range="symmetric",
                             hidden=(12, 24, 48), preset="face_conv"),
    # REFERENCE.md s.1: the assignment's VAE, ReLU on both heads.
    "face_vae": ModelConfig("vae", FACE_SHAPE, latent=None, output_range="symmetric",
                            hidden=(12, 24, 48), head_act="relu", preset="face_vae"),
    # REFERENCE.md s.2: the Keras recipe, 784-144-72-48(tanh), tanh decoder, sigmoid output.
    "mnist_keras": ModelConfig("fcn", MNIST_SHAPE, latent=48, output_range="unit",
                               hidden=(144, 72), encoder_act="relu", latent_act="tanh",
                               decoder_act="tanh", init="glorot", preset="mnist_keras"),
}

# Defaults: what a user gets when picking a family. Vector latents for every family (so the
# latent page can interpolate, sample and map them); the VAE heads carry no activation.
DEFAULTS: dict[str, dict] = {
    # Small on purpose: they train in seconds to a minute on a laptop CPU (the dashboard trains
    # them live) and ship in the repo at well under 1 MB each in float16.
    "fcn": dict(hidden=(256, 128), latent=32, init="glorot"),
    "conv": dict(hidden=(16, 32, 64), latent=32),
    "vae": dict(hidden=(16, 32, 64), latent=16),
}


def get_config(name: str, in_shape: tuple[int, int, int] | None = None,
               latent: int | None = None, output_range: str | None = None) -> ModelConfig:
    """A preset by name, or a family default ("fcn" / "conv" / "vae") for ``in_shape``."""
    if name in PRESETS:
        cfg = PRESETS[name]
        changes = {k: v for k, v in (("in_shape", in_shape), ("latent", latent),
                                     ("output_range", output_range)) if v is not None}
        return cfg.replace(**changes) if changes else cfg
    if name in DEFAULTS:
        if in_shape is None:
            raise ConfigError(f"Family {name!r} needs an input shape (C, H, W).")
        params = dict(DEFAULTS[name])
        if latent is not None:
            params["latent"] = latent
        return ModelConfig(name, tuple(in_shape), output_range=output_range or "unit", **params)
    raise ConfigError(f"Unknown model {name!r}; expected a family {FAMILIES} "
                      f"or a preset {tuple(PRESETS)}.")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
