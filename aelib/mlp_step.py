"""A training step for fully connected autoencoders without autograd's per-op bookkeeping.

For a small MLP on the CPU, autograd's graph building and the allocation of every intermediate are
a large part of each step.
:class:`MLPStep` runs the same forward pass into preallocated buffers, then the backward pass of
MSE through the Linear/activation stack with the same ATen kernels autograd calls
(``threshold_backward``, ``tanh_backward``, ``sigmoid_backward``, ``mm``), writing the gradients
straight into each parameter's ``.grad``. The gradients are bitwise equal to autograd's
(tests/test_mlp_step.py checks it); ``python bench/step_overhead.py`` measures the gain (README).

``fit`` uses it when :func:`supports` says the model and the run allow it (CPU, MSE loss, a
single process, no autocast, only ReLU/Tanh/Sigmoid/Identity activations); every other case takes
the autograd path. ``TrainConfig(engine="autograd")`` forces autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_ACTS = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.Identity: "identity"}
_SKIP = (nn.Sequential, nn.Flatten, nn.Unflatten)


def _layers(model: nn.Module) -> list[tuple[nn.Linear, str]] | None:
    """The (Linear, activation) pairs of ``model`` in call order, or None if it is not such a stack."""
    from .models import FCNAutoencoder

    if type(model) is not FCNAutoencoder:
        return None
    mods = [m for m in model.modules() if m is not model and not isinstance(m, _SKIP)]
    if len(mods) % 2:
        return None
    out = []
    for lin, act in zip(mods[0::2], mods[1::2]):
        if type(lin) is not nn.Linear or lin.bias is None or type(act) not in _ACTS:
            return None
        out.append((lin, _ACTS[type(act)]))
    return out


def supports(model: nn.Module, loss: str, device: torch.device, distributed: bool, amp: bool) -> bool:
    """Whether :class:`MLPStep` computes exactly what the autograd path would for this run."""
    if loss != "mse" or distributed or amp or device.type != "cpu":
        return False
    layers = _layers(model)
    if not layers:
        return False
    params = list(model.parameters())
    return all(p.requires_grad and p.dtype == torch.float32 and p.is_contiguous() for p in params)


class MLPStep:
    """``step(x, target)`` -> mean-squared-error loss (0-dim tensor); gradients land in ``.grad``.

    Buffers for the activations and gradients are allocated once per batch size (an epoch has at
    most two: the batch size and the last, shorter batch).
    """

    def __init__(self, model: nn.Module):
        layers = _layers(model)
        if not layers:
            raise ValueError("MLPStep needs a fully connected autoencoder (Linear/activation pairs).")
        self.layers = [(lin.weight, lin.bias, act) for lin, act in layers]
        for w, b, _ in self.layers:
            w.grad = torch.zeros_like(w, memory_format=torch.contiguous_format)
            b.grad = torch.zeros_like(b)
        self._buffers: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}

    def _buffers_for(self, n: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if n not in self._buffers:
            if len(self._buffers) >= 2:  # a caller with varying batch sizes: keep memory bounded
                self._buffers.clear()
            acts = [w.new_empty(n, w.shape[0]) for w, _, _ in self.layers]
            # grads[j]: gradient w.r.t. layer j's output (grads[-1] also holds output - target)
            grads = [w.new_empty(n, w.shape[0]) for w, _, _ in self.layers]
            self._buffers[n] = (acts, grads)
        return self._buffers[n]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        acts, grads = self._buffers_for(n)
        h = [x.reshape(n, -1)]
        for (w, b, act), out in zip(self.layers, acts):
            z = torch.addmm(b, h[-1], w.t(), out=out)
            if act == "relu":
                z.relu_()
            elif act == "tanh":
                z.tanh_()
            elif act == "sigmoid":
                z.sigmoid_()
            h.append(z)
        # The loss through the very op autograd's path calls (same kernel, same inputs), so the
        # logged loss is bitwise equal to it: a BLAS dot of the difference sums in another order,
        # and which order depends on the CPU (MKL picks its code path by vendor).
        loss = F.mse_loss(h[-1].view(target.shape), target)
        diff = torch.sub(h[-1], target.reshape(n, -1), out=grads[-1])
        g = diff.mul_(2.0 / diff.numel())  # d(mean squared error) / d(output)
        aten = torch.ops.aten
        for j in range(len(self.layers) - 1, -1, -1):
            w, b, act = self.layers[j]
            out = h[j + 1]
            # through the activation, in place (elementwise kernels allow out == input)
            if act == "relu":
                aten.threshold_backward.grad_input(g, out, 0, grad_input=g)
            elif act == "tanh":
                aten.tanh_backward.grad_input(g, out, grad_input=g)
            elif act == "sigmoid":
                aten.sigmoid_backward.grad_input(g, out, grad_input=g)
            torch.mm(g.t(), h[j], out=w.grad)
            torch.sum(g, 0, out=b.grad)
            if j:
                g = torch.mm(g, w, out=grads[j - 1])
        return loss


class AdamStep:
    """``opt.step()`` for a fused torch Adam whose gradients stay in the same tensors every step.

    ``torch.optim.Adam.step`` spends about as long in Python per call (hooks, grouping tensors by
    device, scalar conversions) as in the fused kernel it launches, for a model this small. Every
    call launches that kernel, ``torch._fused_adam_``, with lists gathered once and the group's
    current lr (so lr schedulers keep working). The first call makes Adam's state as
    ``Adam._init_group`` does for a fused group (a float32 step count on the parameter's device,
    zero moments; state already there is kept), so ``opt.step()`` is never called: its first
    call imports torch._dynamo (over a second) only to mark the step as not compilable. Results
    are bitwise equal to ``opt.step()`` (tests/test_mlp_step.py). Only for gradients written in place, as by
    :class:`MLPStep`; anything it cannot handle falls back to ``opt.step()``.
    """

    def __init__(self, opt: torch.optim.Optimizer):
        self.opt = opt
        self._lists = None
        group = opt.param_groups[0] if len(opt.param_groups) == 1 else {}
        self._direct = (isinstance(opt, torch.optim.Adam) and hasattr(torch, "_fused_adam_")
                        and bool(group.get("fused")) and not group.get("amsgrad")
                        and not group.get("maximize") and not group.get("decoupled_weight_decay")
                        and not group.get("capturable") and not group.get("differentiable"))

    def _start(self) -> bool:
        params = list(self.opt.param_groups[0]["params"])
        if any(p.grad is None or p.dtype != torch.float32 for p in params):
            return False
        for p in params:
            state = self.opt.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state = [self.opt.state[p] for p in params]
        self._lists = (params, [p.grad for p in params], [s["exp_avg"] for s in state],
                       [s["exp_avg_sq"] for s in state], [], [s["step"] for s in state])
        # What the lr scheduler's wrapper of opt.step() records, so it does not warn that the
        # optimiser never stepped.
        self.opt._opt_called = True
        return True

    def __call__(self) -> None:
        if self._lists is None and not (self._direct and self._start()):
            self._direct = False
            self.opt.step()
            return
        group = self.opt.param_groups[0]
        steps = self._lists[5]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(*self._lists, lr=float(group["lr"]), beta1=group["betas"][0],
                           beta2=group["betas"][1], weight_decay=group["weight_decay"],
                           eps=group["eps"], amsgrad=False, maximize=False)
