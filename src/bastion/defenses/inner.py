"""The inner maximisation of adversarial training, written once over the Norm geometry.

``maximize`` is projected gradient ascent on a loss of the model's outputs: random (or tiny) start,
``steps`` ascent steps of size ``step_size`` along the norm's steepest direction, projection onto the ball
and the input bounds after each. It is the training-time attack: every step is one forward and one
backward *to the input only* (``torch.autograd.grad`` with respect to the perturbation, so no parameter
gradients are computed or accumulated), nothing is copied to the host, and the loop has no data-dependent
control flow, so its cost is exactly ``steps`` forward+backward passes.

It takes any callable from inputs to scores, so the same loop also serves as a plain PGD for measuring
robust accuracy (``robust_accuracy``) and for probing wrapped defences in the tests.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.attacks.evasion.base import autocast
from bastion.core.threat import Norm, get_norm
from bastion.errors import InputError

Forward = Callable[[Tensor], Tensor]

#: losses the ascent can maximise: cross-entropy, the C&W margin on logits, TRADES' KL to clean outputs
LOSSES = ("ce", "margin", "kl")
#: how the perturbation starts: uniform in the ball (Madry), tiny Gaussian (TRADES), or at the input
STARTS = ("uniform", "small", "zero")
#: Madry et al.'s rule of thumb: the step lets the walk cross the ball 2.5 times over ``steps`` steps
STEP_FACTOR = 2.5
#: TRADES starts 0.001 * N(0, 1) away from x: the KL is minimal (gradient zero) at x itself
TRADES_START_STD = 1e-3
#: fp16 gradients of a summed loss can underflow in half precision; every ascent direction is
#: scale-invariant, so scaling the loss costs nothing and keeps the signal
FP16_LOSS_SCALE = 2.0**12


def default_step_size(eps: float, steps: int) -> float:
    return STEP_FACTOR * eps / max(1, steps)


def ascent_loss(out: Tensor, y: Tensor, loss: str, clean_probs: Tensor | None = None) -> Tensor:
    """Summed (not averaged) loss, so each example's gradient does not shrink with the batch size."""
    z = out.float()
    if loss == "ce":
        return F.cross_entropy(z, y, reduction="sum")
    if loss == "margin":
        # Best other logit minus the true logit: reads logits directly, so a saturated softmax
        # (defensive distillation) cannot hide the gradient.
        true = z.gather(1, y.unsqueeze(1)).squeeze(1)
        other = z.masked_fill(F.one_hot(y, z.shape[1]).bool(), float("-inf")).amax(dim=1)
        return (other - true).sum()
    if loss == "kl":
        if clean_probs is None:
            raise InputError("clean_probs", None, "the clean softmax outputs for the KL loss")
        return F.kl_div(F.log_softmax(z, dim=1), clean_probs, reduction="sum")
    raise InputError("loss", loss, f"one of {LOSSES}")


def maximize(forward: Forward, x: Tensor, y: Tensor, *, norm: str | Norm = "linf", eps: float,
             steps: int, step_size: float | None = None, loss: str = "ce", start: str = "uniform",
             bounds: tuple[float, float] = (0.0, 1.0), precision: str = "fp32",
             clean_probs: Tensor | None = None) -> Tensor:
    """Return ``x + delta`` with ``delta`` in the ``norm`` ball of radius ``eps``, maximising ``loss``.

    The caller chooses the model's mode; adversarial training runs it in eval mode (see training.py).
    """
    geo = get_norm(norm)
    if loss not in LOSSES:
        raise InputError("loss", loss, f"one of {LOSSES}")
    if start not in STARTS:
        raise InputError("start", start, f"one of {STARTS}")
    if steps < 0:
        raise InputError("steps", steps, "an integer >= 0")
    lo, hi = bounds
    x = x.detach()
    alpha = default_step_size(eps, steps) if step_size is None else step_size
    eps_t = torch.full((x.shape[0],), float(eps), device=x.device, dtype=x.dtype)
    if start == "uniform":
        delta = geo.random_start(x, eps_t)
    elif start == "small":
        delta = geo.project(TRADES_START_STD * torch.randn_like(x), eps_t)
    else:
        delta = torch.zeros_like(x)
    delta = (x + delta).clamp(lo, hi) - x
    scale = FP16_LOSS_SCALE if precision == "fp16" else 1.0
    device = x.device
    for _ in range(steps):
        delta.requires_grad_(True)
        with autocast(device, precision):
            out = forward(x + delta)
        obj = ascent_loss(out, y, loss, clean_probs) * scale
        (grad,) = torch.autograd.grad(obj, delta)
        xa = x + delta.detach()
        delta = geo.project_in_box(x, xa + geo.step_in_box(grad, xa, lo, hi, alpha), eps_t, lo, hi) - x
    return (x + delta).detach()


def robust_accuracy(forward: Forward, x: Tensor, y: Tensor, *, norm: str | Norm = "linf", eps: float,
                    steps: int = 10, step_size: float | None = None, loss: str = "ce",
                    bounds: tuple[float, float] = (0.0, 1.0), batch_size: int = 512,
                    seed: int | None = 0, predict: Forward | None = None) -> float:
    """Fraction of ``x`` still classified as ``y`` after a PGD (uniform start) of ``steps`` steps.

    A quick check, used for checkpoint selection; it is not a reliable evaluation (use
    ``bastion.evaluate``). ``predict`` (default ``forward``) scores the final points, so a defence can be
    attacked through one view and judged on another. One host sync, at the end.
    """
    judge = forward if predict is None else predict
    gen_state = torch.random.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if x.device.type == "cuda" else None
    if seed is not None:
        torch.manual_seed(seed)
    try:
        correct = torch.zeros((), device=x.device, dtype=torch.long)
        for i in range(0, x.shape[0], batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            adv = maximize(forward, xb, yb, norm=norm, eps=eps, steps=steps, step_size=step_size, loss=loss,
                           bounds=bounds) if eps > 0 else xb
            with torch.no_grad():
                correct += (judge(adv).argmax(dim=1) == yb).sum()
    finally:
        # A quick evaluation must not move the caller's random stream (training determinism).
        torch.random.set_rng_state(gen_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)
    return int(correct) / max(1, x.shape[0])
