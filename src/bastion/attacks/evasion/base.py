"""The one contract every evasion attack follows (Foolbox-style).

``attack(model, inputs, labels, epsilons=...)`` returns an :class:`AttackResult` that unpacks as
``raw, clipped, success``: the attack's own output, that output projected onto the epsilon ball and the
input bounds, and a per-example success mask measured on ``clipped``. A list of epsilons gives one entry
per epsilon (a robustness curve from one call); a scalar gives tensors directly.

Two families:
- :class:`FixedEpsilonAttack` (FGSM, PGD, APGD, Square, ...) implement ``run(model, x, y, eps, target)``.
  Epsilons are processed in increasing order and an example broken at a smaller epsilon is not attacked
  again at a larger one (its adversarial already lies inside the larger ball).
- :class:`MinimizationAttack` (C&W, DeepFool, FAB, HopSkipJump) implement ``run_min(model, x, y, target)``
  returning the smallest adversarial they found; each epsilon then keeps it if it fits the ball.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from bastion.core.adapters import Capability, Model, wrap
from bastion.core.threat import Norm, check_epsilons, get_norm
from bastion.core.validation import check_inputs, check_labels
from bastion.errors import InputError

PRECISIONS = ("fp32", "bf16", "fp16")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """Mixed-precision context for the model's forward pass; fp32 is a no-op."""
    if precision not in PRECISIONS:
        raise InputError("precision", precision, f"one of {PRECISIONS}")
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def is_adversarial(pred: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    """Untargeted: the prediction differs from the label. Targeted: it equals the target."""
    return pred == target if target is not None else pred != y


@dataclass
class AttackResult:
    """What every attack returns. Unpacks as ``raw, clipped, success``."""

    attack: str
    norm: str
    epsilons: list[float] | None
    raw: list[Tensor]
    clipped: list[Tensor]
    success: Tensor  # (n_epsilons, N) bool
    queries: int = 0
    scalar: bool = False
    extras: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Any]:
        if self.scalar:
            return iter((self.raw[0], self.clipped[0], self.success[0]))
        return iter((self.raw, self.clipped, self.success))

    @property
    def success_rate(self) -> list[float]:
        """Fraction of examples broken, one per epsilon: always a list (one element for a scalar epsilon)."""
        return [float(s.float().mean()) for s in self.success]

    def distances(self, inputs: Tensor) -> list[Tensor]:
        """Per-example norm of each clipped perturbation."""
        n = get_norm(self.norm)
        return [n.measure(c - inputs.to(c.device)) for c in self.clipped]


class Attack:
    """Base class: validation, capability checks, epsilon handling, clipping and success masks."""

    name: str = "attack"
    needs: Capability = Capability.GRADIENTS
    #: "linf", "l2", "l1"; attacks that only support some norms set ``supported_norms``
    supported_norms: tuple[str, ...] = ("linf", "l2", "l1")

    def __init__(self, norm: str | Norm = "linf", *, seed: int | None = 0, batch_size: int | None = None) -> None:
        self.norm = get_norm(norm)
        if self.norm.name not in self.supported_norms:
            raise InputError("norm", self.norm.name, f"one of {self.supported_norms} for {self.name}")
        self.seed = seed
        if batch_size is not None and batch_size < 1:
            raise InputError("batch_size", batch_size, "a positive integer or None")
        self.batch_size = batch_size

    def __repr__(self) -> str:
        params = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in params.items())})"

    # --- the public call -------------------------------------------------------------------------
    def __call__(self, model: Any, inputs: Any, labels: Any = None, *,
                 epsilons: float | Sequence[float] | None = None, target: Any = None) -> AttackResult:
        m = wrap(model)
        m.require(self.needs, self.name)
        x = check_inputs(inputs, m.bounds, argument="inputs", device=m.device)
        # A local differentiable model is probed with one input so a shape it rejects is a clear error;
        # black-box models are not: every query they answer is counted against the attack's budget.
        probe = x.shape[0] > 0 and Capability.GRADIENTS in m.capabilities
        n_classes = m.probe(x, "inputs") if probe else m.num_classes
        q0 = m.queries
        if labels is None:
            raise InputError("labels", None, "the true class of each input (untargeted) or the model's predictions")
        y = check_labels(labels, x.shape[0], n_classes, argument="labels", device=m.device)
        tgt = None
        if target is not None:
            tgt = check_labels(target, x.shape[0], n_classes, argument="target", device=m.device)
            if bool((tgt == y).any()):
                raise InputError("target", "a target equal to the true label", "a different class for every example")
        scalar = isinstance(epsilons, (int, float))
        gen_state = torch.random.get_rng_state()
        cuda_state = torch.cuda.get_rng_state_all() if m.device.type == "cuda" else None
        if self.seed is not None:
            torch.manual_seed(self.seed)
        try:
            raw, clipped, success, eps_list = self._dispatch(m, x, y, tgt, epsilons)
        finally:
            # Attacks are deterministic under their seed without disturbing the caller's random stream.
            torch.random.set_rng_state(gen_state)
            if cuda_state is not None:
                torch.cuda.set_rng_state_all(cuda_state)
        return AttackResult(self.name, self.norm.name, eps_list, raw, clipped, success,
                            queries=m.queries - q0, scalar=scalar)

    # --- helpers shared by every attack ----------------------------------------------------------
    def clip(self, model: Model, x: Tensor, x_adv: Tensor, eps: float | None) -> Tensor:
        """Project ``x_adv`` onto the epsilon ball around ``x`` and the input bounds."""
        lo, hi = model.bounds
        if eps is None:
            return x_adv.clamp(lo, hi)
        e = torch.full((x.shape[0],), eps, device=x.device, dtype=x.dtype)
        delta = self.norm.project(x_adv - x, e)
        return (x + delta).clamp(lo, hi)

    def check_success(self, model: Model, x_adv: Tensor, y: Tensor, tgt: Tensor | None) -> Tensor:
        out = []
        bs = self.batch_size or x_adv.shape[0]
        with torch.no_grad():
            for i in range(0, x_adv.shape[0], bs):
                sl = slice(i, i + bs)
                out.append(is_adversarial(model.predict(x_adv[sl]), y[sl], None if tgt is None else tgt[sl]))
        return torch.cat(out)

    def _dispatch(self, m: Model, x: Tensor, y: Tensor, tgt: Tensor | None,
                  epsilons: float | Sequence[float] | None) -> tuple[list[Tensor], list[Tensor], Tensor, list[float] | None]:
        raise NotImplementedError


class FixedEpsilonAttack(Attack):
    """An attack that searches inside a ball of a given radius."""

    def run(self, model: Model, x: Tensor, y: Tensor, eps: float, target: Tensor | None) -> Tensor:
        """Return adversarial candidates for ``x`` inside the ball of radius ``eps``."""
        raise NotImplementedError

    def _dispatch(self, m: Model, x: Tensor, y: Tensor, tgt: Tensor | None,
                  epsilons: float | Sequence[float] | None) -> tuple[list[Tensor], list[Tensor], Tensor, list[float] | None]:
        eps_list = check_epsilons(epsilons)
        order = sorted(range(len(eps_list)), key=lambda i: eps_list[i])
        raw: list[Tensor | None] = [None] * len(eps_list)
        clipped: list[Tensor | None] = [None] * len(eps_list)
        success = torch.zeros(len(eps_list), x.shape[0], dtype=torch.bool, device=x.device)
        best = x.clone()
        broken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for i in order:
            eps = eps_list[i]
            cur_raw = best.clone()
            todo = (~broken).nonzero().flatten()
            if eps > 0 and todo.numel() > 0:
                bs = self.batch_size or todo.numel()
                for j in range(0, todo.numel(), bs):
                    idx = todo[j:j + bs]
                    cur_raw[idx] = self.run(m, x[idx], y[idx], eps, None if tgt is None else tgt[idx]).detach()
            cur_clip = self.clip(m, x, cur_raw, eps)
            succ = self.check_success(m, cur_clip, y, tgt)
            # Keep earlier successes: their adversarials lie inside this larger ball too.
            succ = succ | broken
            cur_clip = torch.where(broken.reshape((-1,) + (1,) * (x.dim() - 1)), best, cur_clip)
            raw[i], clipped[i], success[i] = cur_raw, cur_clip, succ
            best = torch.where(succ.reshape((-1,) + (1,) * (x.dim() - 1)), cur_clip, best)
            broken = succ
        return [r for r in raw if r is not None], [c for c in clipped if c is not None], success, eps_list


class MinimizationAttack(Attack):
    """An attack that looks for the smallest perturbation that changes the decision."""

    def run_min(self, model: Model, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """Return the smallest adversarial found for each example (``x`` itself where none was found)."""
        raise NotImplementedError

    def _dispatch(self, m: Model, x: Tensor, y: Tensor, tgt: Tensor | None,
                  epsilons: float | Sequence[float] | None) -> tuple[list[Tensor], list[Tensor], Tensor, list[float] | None]:
        bs = self.batch_size or x.shape[0]
        parts = [self.run_min(m, x[i:i + bs], y[i:i + bs], None if tgt is None else tgt[i:i + bs]).detach()
                 for i in range(0, x.shape[0], bs)]
        adv = self.clip(m, x, torch.cat(parts), None)
        found = self.check_success(m, adv, y, tgt)
        if epsilons is None:
            return [adv], [adv], found.unsqueeze(0), None
        eps_list = check_epsilons(epsilons)
        raws, clips, succ = [], [], []
        for eps in eps_list:
            # Projecting the minimal adversarial onto a smaller ball sometimes still fools the model;
            # success is measured on what is returned, never assumed.
            clip = self.clip(m, x, adv, eps)
            raws.append(adv)
            clips.append(clip)
            succ.append(self.check_success(m, clip, y, tgt))
        return raws, clips, torch.stack(succ), eps_list
