"""aelib.mlp_step: the autograd-free step for fully connected models computes what autograd does."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from aelib import mlp_step
from aelib.models import build, get_config
from aelib.train import Callback, TrainConfig, fit

CPU = torch.device("cpu")


def _grads_by_autograd(model, x):
    model.zero_grad(set_to_none=True)
    loss = F.mse_loss(model(x), x)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("name,in_shape,batch", [
    ("mnist_keras", None, 48),                   # relu encoder, tanh latent/decoder, sigmoid out
    ("fcn", (3, 7, 9), 5),                       # odd size, default relu stack
    ("fcn_symmetric", (1, 28, 28), 1),           # tanh output in [-1, 1], a batch of one
])
def test_gradients_equal_autograd_bitwise(name, in_shape, batch):
    if name == "fcn_symmetric":
        cfg = get_config("fcn", in_shape=in_shape, output_range="symmetric")
    else:
        cfg = get_config(name, in_shape=in_shape)
    a, b = build(cfg, seed=3), build(cfg, seed=3)
    lo, hi = cfg.value_range
    x = torch.rand((batch, *cfg.in_shape), generator=torch.Generator().manual_seed(0)) * (hi - lo) + lo
    ref_loss, ref_grads = _grads_by_autograd(a, x)
    loss = mlp_step.MLPStep(b)(x, x)
    assert torch.equal(loss, ref_loss)
    for (pname, p), g in zip(b.named_parameters(), ref_grads):
        assert torch.equal(p.grad, g), f"{pname}: max diff {(p.grad - g).abs().max()}"


def test_identity_activations_and_denoising_target():
    cfg = get_config("fcn", in_shape=(1, 6, 6)).replace(encoder_act="identity", decoder_act="identity")
    a, b = build(cfg, seed=0), build(cfg, seed=0)
    target = torch.rand(8, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    noisy = (target + 0.2).clamp(0, 1)
    loss_ref = F.mse_loss(a(noisy), target)
    loss_ref.backward()
    loss = mlp_step.MLPStep(b)(noisy, target)
    assert torch.equal(loss, loss_ref.detach())
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(a.parameters(), b.parameters()))


def test_supports_only_what_it_computes_exactly():
    keras = build("mnist_keras")
    assert mlp_step.supports(keras, "mse", CPU, distributed=False, amp=False)
    assert not mlp_step.supports(keras, "bce", CPU, distributed=False, amp=False)
    assert not mlp_step.supports(keras, "mse", CPU, distributed=True, amp=False)
    assert not mlp_step.supports(keras, "mse", CPU, distributed=False, amp=True)
    assert not mlp_step.supports(keras, "mse", torch.device("cuda"), distributed=False, amp=False)
    for family in ("conv", "vae"):
        assert not mlp_step.supports(build(family, (1, 28, 28)), "mse", CPU, False, False)
    gelu = build(get_config("fcn", in_shape=(1, 8, 8)).replace(decoder_act="gelu"))
    assert not mlp_step.supports(gelu, "mse", CPU, False, False)
    frozen = build("mnist_keras")
    frozen.encoder[1].weight.requires_grad_(False)
    assert not mlp_step.supports(frozen, "mse", CPU, False, False)
    with pytest.raises(ValueError, match="fully connected"):
        mlp_step.MLPStep(build("conv", (1, 28, 28)))


def test_adam_step_equals_torch_adam_with_a_schedule():
    runs = []
    for direct in (False, True):
        model = build("mnist_keras", seed=0)
        step = mlp_step.MLPStep(model)
        opt = torch.optim.Adam(model.parameters(), lr=5e-3, betas=(0.9, 0.99), weight_decay=1e-4,
                               fused=True)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-3, total_steps=30,
                                                    cycle_momentum=False)
        do_step = mlp_step.AdamStep(opt) if direct else opt.step
        gen = torch.Generator().manual_seed(0)
        for _ in range(30):
            x = torch.rand(16, 1, 28, 28, generator=gen)
            step(x, x)
            do_step()
            sched.step()
        runs.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(p, q) for p, q in zip(*runs))


def test_fit_engines_give_identical_runs(mnist_small):
    """``engine="auto"`` (the MLP step) and ``"autograd"``: same history, same weights, bitwise.

    The logged train loss too: both engines reduce it with the same ATen op, where a BLAS dot
    summed in a CPU-dependent order and missed by 6e-6 on AMD. Holds under every
    ATEN_CPU_CAPABILITY (default, avx2, avx512), each engine pair using the same kernels."""
    train, test = mnist_small
    out = {}
    for engine in ("autograd", "auto"):
        model = build("mnist_keras", seed=0)
        cfg = TrainConfig(epochs=2, batch_size=64, lr=5e-3, schedule="onecycle", seed=4,
                          noise="gaussian", noise_level=0.1, engine=engine)
        res = fit(model, train.images, test.images, cfg)
        out[engine] = (res.history, [p.detach().clone() for p in model.parameters()])
    (h1, w1), (h2, w2) = out["autograd"], out["auto"]
    assert h1.val_mse == h2.val_mse and h1.val_loss == h2.val_loss
    assert h1.train_loss == h2.train_loss
    assert all(torch.equal(p, q) for p, q in zip(w1, w2))
    assert h2.val_mse[-1] < h2.val_mse[0]


def test_fit_leaves_denormals_working(mnist_small):
    train, _ = mnist_small
    fit(build("mnist_keras", seed=0), train.images[:64], config=TrainConfig(epochs=1, batch_size=32))
    assert (torch.tensor([1e-38]) * 0.01).item() != 0.0  # flush-to-zero was switched back off


def test_engine_is_validated():
    with pytest.raises(ValueError, match="engine"):
        TrainConfig(engine="turbo").validate()


class _LayoutSeen(Callback):
    def __init__(self, model):
        self.model, self.layouts, self.folded = model, set(), set()

    def on_batch_end(self, epoch, step, steps_per_epoch, loss):
        w = next(p for p in self.model.parameters() if p.dim() == 4 and p.shape[1] > 1)
        self.layouts.add("channels_last" if w.is_contiguous(memory_format=torch.channels_last)
                         and not w.is_contiguous() else "contiguous")
        self.folded.add(sum("forward" in vars(m) for m in self.model.modules()))


@pytest.mark.parametrize("name", ["face_conv", "face_vae", "conv", "vae"])
def test_auto_engine_conv_training_matches_autograd_within_float32_tolerance(name):
    """``engine="auto"`` trains convolutional models on colour images in channels-last layout, and
    a one-channel decoder's last transposed convolution through aelib.conv_step (other kernels,
    other rounding either way); ``"autograd"`` runs the plain layers on contiguous tensors: same
    runs within float32 tolerance (measured on the colour presets: weights within 1e-7 to 7e-7
    after 8 Adam steps, where each step moves a weight by up to 1e-3), and the model handed back
    is contiguous again, with its layers' own forward."""
    g = torch.Generator().manual_seed(0)
    shape = (3, 64, 64) if name.startswith("face") else (1, 28, 28)
    images = torch.randint(0, 256, (160, *shape), dtype=torch.uint8, generator=g)
    out = {}
    for engine in ("autograd", "auto"):
        model = build(name, None if name.startswith("face") else shape, seed=0)
        seen = _LayoutSeen(model)
        res = fit(model, images[:128], images[128:],
                  TrainConfig(epochs=2, batch_size=32, lr=1e-3, engine=engine), callbacks=[seen])
        assert all(p.is_contiguous() for p in model.parameters())
        assert not any("forward" in vars(m) for m in model.modules())
        out[engine] = (res.history, [p.detach().clone() for p in model.parameters()], seen)
    (h1, w1, s1), (h2, w2, s2) = out["autograd"], out["auto"]
    assert s1.layouts == {"contiguous"} and s1.folded == {0}
    if shape[0] == 1:  # channels-last is slower on one-channel images; the last layer is folded
        assert s2.layouts == {"contiguous"} and s2.folded == {1}
    else:
        assert s2.layouts == {"channels_last"} and s2.folded == {2}  # last layer and tanh
    assert h2.val_mse == pytest.approx(h1.val_mse, rel=1e-4)
    assert h2.train_loss == pytest.approx(h1.train_loss, rel=1e-4)
    assert max((p - q).abs().max().item() for p, q in zip(w1, w2)) < 1e-4
    assert h2.val_mse[-1] < h2.val_mse[0]
