"""The three autoencoder families, built from a small, JSON-friendly config.

* ``fcn``  - fully connected autoencoder (flatten -> MLP -> latent vector -> MLP -> image)
* ``conv`` - convolutional autoencoder (stride-2 4x4 convolutions, mirrored transposed convs)
* ``vae``  - convolutional variational autoencoder on the same trunk

A model is fully described by :class:`ModelConfig`; the config travels inside every checkpoint,
so ``build(config)`` rebuilds the exact module. Presets reproduce the reference layouts exactly
(the seed's course assignment); the defaults are our own, tuned choices.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError

FAMILIES = ("fcn", "conv", "vae")
INITS = ("torch", "glorot", "he")
OUTPUT_RANGES = {"unit": (0.0, 1.0), "symmetric": (-1.0, 1.0)}
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "leaky_relu": nn.LeakyReLU,
               "gelu": nn.GELU, "identity": nn.Identity}

# What a model may cost, checked from its config before anything is built (README "Limits").
# The largest preset, face_fcn, has 25.7M parameters and needs well under 1 MB of activations and
# 0.1 GFLOP per image; these bounds leave room for bigger models while keeping any one image cheap.
MAX_SIDE = 1024             # pixels a side, as for image data
MAX_CHANNELS = 16
MAX_WIDTH = 65_536          # units in one layer (hidden sizes and latent)
MAX_HIDDEN_LAYERS = 12      # entries in ``hidden``
MAX_PARAMETERS = 64_000_000
MAX_ACTIVATION_BYTES = 32 * 2**20   # float32 activations of one image through encoder and decoder
MAX_FLOPS = 4 * 10**9               # one image, encoder and decoder


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
    init:          "torch" (PyTorch defaults), "glorot" (Keras defaults: Glorot-uniform
                   weights, zero biases) or "he" (variance-preserving: He-normal weights for the
                   layers a ReLU follows, unit gain for the others, zero biases; see :func:`_he_`).
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
        # Normalise JSON lists to tuples so configs compare and hash reliably. Sizes must be true
        # integers: a float, a bool or text is refused rather than rounded or overflowed.
        if not isinstance(self.in_shape, (list, tuple)):
            raise ConfigError("in_shape must be a list of three sizes (channels, height, width).")
        if not isinstance(self.hidden, (list, tuple)):
            raise ConfigError("hidden must be a list of layer sizes.")
        if len(self.hidden) > MAX_HIDDEN_LAYERS:
            raise ConfigError(f"hidden lists {len(self.hidden):,} layers; at most {MAX_HIDDEN_LAYERS} "
                              "are allowed.")
        object.__setattr__(self, "in_shape", tuple(_size(v, "in_shape") for v in self.in_shape))
        object.__setattr__(self, "hidden", tuple(_size(v, "hidden") for v in self.hidden))
        if self.latent is not None:
            object.__setattr__(self, "latent", _size(self.latent, "latent"))
        self.validate()

    def validate(self) -> None:
        for name in ("family", "output_range", "init"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be text, not {type(getattr(self, name)).__name__}.")
        for name in ("encoder_act", "decoder_act", "latent_act", "head_act", "preset"):
            if not isinstance(getattr(self, name), (str, type(None))):
                raise ConfigError(f"{name} must be text, not {type(getattr(self, name)).__name__}.")
        if self.family not in FAMILIES:
            raise ConfigError(f"Unknown model family {self.family!r}; expected one of {FAMILIES}.")
        if len(self.in_shape) != 3 or min(self.in_shape) < 1:
            raise ConfigError(f"in_shape must be (channels, height, width) of positive sizes, "
                              f"got {self.in_shape}.")
        if self.in_shape[0] > MAX_CHANNELS or max(self.in_shape[1:]) > MAX_SIDE:
            raise ConfigError(f"in_shape {_short(self.in_shape)} is too large; images may have at most "
                              f"{MAX_CHANNELS} channels and {MAX_SIDE} pixels a side.")
        if self.output_range not in OUTPUT_RANGES:
            raise ConfigError(f"output_range must be one of {tuple(OUTPUT_RANGES)}, "
                              f"got {self.output_range!r}.")
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(f"hidden must list at least one positive size, got {self.hidden}.")
        if self.family == "fcn" and self.latent is None:
            raise ConfigError("A fully connected autoencoder needs an integer latent size.")
        if self.latent is not None and self.latent < 1:
            raise ConfigError(f"latent must be a positive integer, got {self.latent}.")
        widest = max(*self.hidden, self.latent or 1)
        if widest > MAX_WIDTH:
            raise ConfigError(f"A layer may have at most {MAX_WIDTH:,} units; this config asks for "
                              f"{_short(widest)}.")
        for name in ("encoder_act", "decoder_act", "latent_act", "head_act"):
            act = getattr(self, name)
            if act is not None and act not in ACTIVATIONS:
                raise ConfigError(f"{name} must be one of {tuple(ACTIVATIONS)}, got {act!r}.")
        if self.init not in INITS:
            raise ConfigError(f"init must be one of {INITS}, got {self.init!r}.")
        check_cost(estimate_cost(self))

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


def _size(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise ConfigError(f"{name} takes whole numbers, not {type(v).__name__} ({_short(v)}).")
    return int(v)


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 24 else text[:21] + "..."


@dataclass(frozen=True)
class Cost:
    """What running one image through a model costs, from its config alone (an estimate, no allocation).

    activation_bytes_per_image: float32 bytes of every intermediate tensor of one forward pass
                                (input, padding, each layer's output before and after its activation).
    flops_per_image:            multiply-adds counted twice, encoder and decoder.
    layers:                     weight layers (linear, convolution, transposed convolution).
    params:                     parameters, as ``count_parameters(build(cfg))`` gives.
    """

    activation_bytes_per_image: int
    flops_per_image: int
    layers: int
    params: int


def estimate_cost(cfg: ModelConfig) -> Cost:
    """The :class:`Cost` of ``cfg``: integer arithmetic over its layers, O(layers), nothing built."""
    c, h, w = cfg.in_shape
    elems = flops = params = layers = 0

    def linear(a: int, b: int) -> None:
        nonlocal elems, flops, params, layers
        params += a * b + b
        flops += 2 * a * b
        elems += 2 * b
        layers += 1

    if cfg.family == "fcn":
        widths = [c * h * w, *cfg.hidden, cfg.latent]
        elems += widths[0]
        for a, b in zip(widths[:-1], widths[1:]):
            linear(a, b)
        for a, b in zip(widths[:0:-1], widths[-2::-1]):
            linear(a, b)
        elems += widths[0]  # unflattened output
        return Cost(4 * elems, flops, layers, params)
    depth = len(cfg.hidden)
    ph, pw = _padded_size(h, depth), _padded_size(w, depth)
    elems += c * h * w + c * ph * pw
    chans = [c, *cfg.hidden]
    for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
        out = (ph >> (i + 1)) * (pw >> (i + 1))
        params += 16 * a * b + b
        flops += 2 * 16 * a * b * out
        elems += 2 * b * out
        layers += 1
    feat = cfg.hidden[-1] * (ph >> depth) * (pw >> depth)
    if cfg.family == "vae":  # the second head repeats the last convolution or the latent layer
        if cfg.latent is None:
            a, b = chans[-2], chans[-1]
            out = (ph >> depth) * (pw >> depth)
            params += 16 * a * b + b
            flops += 2 * 16 * a * b * out
            elems += 2 * b * out
            layers += 1
        else:
            linear(feat, cfg.latent)
    if cfg.latent is not None:
        linear(feat, cfg.latent)
        linear(cfg.latent, feat)
    back = [*cfg.hidden[::-1], c]
    for i, (a, b) in enumerate(zip(back[:-1], back[1:])):
        inp = (ph >> (depth - i)) * (pw >> (depth - i))
        params += 16 * a * b + b
        flops += 2 * 16 * a * b * inp
        elems += 2 * b * inp * 4
        layers += 1
    elems += c * h * w  # cropped output
    return Cost(4 * elems, flops, layers, params)


def check_cost(cost: Cost) -> None:
    """Refuse a model that would cost more than the limits to hold or to run on one image."""
    if cost.params > MAX_PARAMETERS:
        raise ConfigError(f"This model would have {cost.params:,} parameters; at most "
                          f"{MAX_PARAMETERS:,} are allowed.")
    if cost.activation_bytes_per_image > MAX_ACTIVATION_BYTES:
        raise ConfigError(f"This model would need {cost.activation_bytes_per_image / 2**20:,.0f} MB of "
                          f"activations per image; at most {MAX_ACTIVATION_BYTES // 2**20} MB are allowed.")
    if cost.flops_per_image > MAX_FLOPS:
        raise ConfigError(f"This model would need {cost.flops_per_image / 1e9:,.1f} GFLOP per image; "
                          f"at most {MAX_FLOPS / 1e9:.0f} are allowed.")


def batch_size_for(cfg: ModelConfig, budget_bytes: int = 256 * 2**20, most: int = 256) -> int:
    """Images per inference batch so one batch's activations stay within ``budget_bytes``."""
    per = max(1, estimate_cost(cfg).activation_bytes_per_image)
    return max(1, min(most, budget_bytes // per))


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
    return max(m, -(-n // m) * m)


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
        """Decode ``n`` draws from the prior N(0, temperature^2 I); drawn on the CPU, so a seeded
        ``generator`` gives the same images on any device."""
        device = next(self.parameters()).device
        z = torch.randn((n, *self.latent_shape), generator=generator) * temperature
        return self.decode(z.to(device))


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per sample, summed over latent dims: shape (N,)."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=tuple(range(1, mu.dim())))


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Mean squared error (``"mse"``) or binary cross-entropy (``"bce"``, outputs in [0, 1])."""
    if kind == "bce":
        return F.binary_cross_entropy(recon, target)
    return F.mse_loss(recon, target)


def vae_loss(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             beta: float = 1.0, kind: str = "mse") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference VAE loss: reconstruction loss + beta * KL, the KL averaged over the batch.

    Returns (total, reconstruction, kl) so callers can log both parts.
    """
    rec = reconstruction_loss(recon, x, kind)
    kl = kl_divergence(mu, logvar).mean()
    return rec + beta * kl, rec, kl


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


_WEIGHTED = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)
_GAINS = {nn.ReLU: math.sqrt(2.0), nn.GELU: math.sqrt(2.0),
          nn.LeakyReLU: nn.init.calculate_gain("leaky_relu", 0.01)}


def _fan_in(m: nn.Module) -> float:
    """Inputs summed into one output value: a stride-s transposed conv sees k*k/s^2 taps per channel."""
    if isinstance(m, nn.Linear):
        return m.in_features
    taps = m.kernel_size[0] * m.kernel_size[1]
    if isinstance(m, nn.ConvTranspose2d):
        return m.in_channels * taps / (m.stride[0] * m.stride[1])
    return m.in_channels * taps


def _he_(module: nn.Module) -> None:
    """Variance-preserving init: weights N(0, gain^2 / fan_in), zero biases.

    The gain is that of the activation the layer feeds (sqrt 2 for ReLU; 1 before tanh, sigmoid,
    a latent or a VAE head). PyTorch's default (Kaiming-uniform with a = sqrt 5) gives each ReLU
    layer a variance gain of 1/6, so through the conv AE's eight layers the input all but vanishes
    from the output at init; Adam then drives the sigmoid output towards black on every pixel and,
    on some seeds, saturates it there for good (blank reconstructions, val MSE = mean(x^2)).
    """
    mods = list(module.modules())
    for i, m in enumerate(mods):
        if not isinstance(m, _WEIGHTED):
            continue
        gain = 1.0
        for nxt in mods[i + 1:]:  # modules() follows call order in these models
            if isinstance(nxt, _WEIGHTED):
                break
            if isinstance(nxt, tuple(ACTIVATIONS.values())):
                gain = _GAINS.get(type(nxt), 1.0)
                break
        nn.init.normal_(m.weight, 0.0, gain / math.sqrt(_fan_in(m)))
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
    elif config.init == "he":
        _he_(model)
    return model


# --------------------------------------------------------------------------------------------
# Presets (reference layouts, exact) and defaults (our choices)

FACE_SHAPE = (3, 64, 64)
MNIST_SHAPE = (1, 28, 28)

PRESETS: dict[str, ModelConfig] = {
    # The seed's fcn_autoencoder: 12288-1024-256-64, ReLU everywhere in the encoder, Tanh output.
    "face_fcn": ModelConfig("fcn", FACE_SHAPE, latent=64, output_range="symmetric",
                            hidden=(1024, 256), encoder_act="relu", decoder_act="relu",
                            preset="face_fcn"),
    # The seed's conv_autoencoder: 3->12->24->48 stride-2 convs, latent is the 48x8x8 feature map.
    "face_conv": ModelConfig("conv", FACE_SHAPE, latent=None, output_range="symmetric",
                             hidden=(12, 24, 48), preset="face_conv"),
    # The seed's VAE, ReLU on both heads (a known weakness, kept for fidelity).
    "face_vae": ModelConfig("vae", FACE_SHAPE, latent=None, output_range="symmetric",
                            hidden=(12, 24, 48), head_act="relu", preset="face_vae"),
    # The seed's Keras recipe, 784-144-72-48(tanh), tanh decoder, sigmoid output.
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
    "conv": dict(hidden=(16, 32, 64), latent=32, init="he"),
    "vae": dict(hidden=(16, 32, 64), latent=16, init="he"),
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
