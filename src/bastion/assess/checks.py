"""Gradient-masking checks from Carlini et al. (2019), "On Evaluating Adversarial Robustness".

A robust-accuracy number is only trustworthy when the attacks behind it worked. Each check looks for one
symptom of attacks that failed for the wrong reason (masked, obfuscated or saturated gradients) and
reports a :class:`~bastion.assess.result.Finding` with the numbers behind it:

- ``blackbox_beats_whitebox``: a score-only attack broke examples every gradient attack missed;
- ``unbounded_attack_fails``: with the whole input range as budget, the attack does not reach ~100 %;
- ``success_not_monotone``: an independent PGD run per epsilon succeeds less at a larger epsilon;
- ``random_noise_beats_attack``: random points in the ball break examples the attacks missed;
- ``fgsm_beats_iterative``: one gradient step succeeds more often than many.

The checks run on a small seeded subsample, so they cost a fraction of the evaluation itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bastion.assess.result import AttackStats, Finding
from bastion.core.adapters import Capability, Model
from bastion.core.threat import Norm

#: examples each check looks at (a seeded subsample of the correctly classified ones)
CHECK_SAMPLE = 48
#: random points drawn per example and epsilon for the noise check
NOISE_DRAWS = 16
#: the unbounded attack must break at least this fraction of correctly classified examples
UNBOUNDED_MIN_SUCCESS = 0.98
#: PGD steps for the independent per-epsilon and unbounded runs
CHECK_STEPS = 20
UNBOUNDED_STEPS = 50
#: shares of the white-box survivors a black-box attack breaks above which the finding is high / a warning
HIGH_SHARE = 0.10
LOW_SHARE = 0.05
#: queries for a stand-alone Square run when the suite had no black-box attack
CHECK_SQUARE_QUERIES = 1000


@dataclass
class CheckContext:
    """Everything the checks need from the evaluation that ran before them."""

    model: Model
    adaptive: Model
    norm: Norm
    x: Tensor
    y: Tensor
    correct: Tensor
    broken: Tensor
    broken_eps: Tensor
    broken_by: list[str | None]
    epsilons: list[float]
    blackbox: list[AttackStats]
    whitebox_ran: bool
    seed: int
    batch_size: int | None

    def predict(self, x: Tensor) -> Tensor:
        bs = self.batch_size or max(1, x.shape[0])
        with torch.no_grad():
            return torch.cat([self.model.predict(x[i:i + bs]) for i in range(0, x.shape[0], bs)]).to(self.y.device)

    def sample(self, mask: Tensor, salt: int = 0) -> Tensor:
        """A seeded subsample (at most CHECK_SAMPLE) of the indices where ``mask`` holds."""
        idx = mask.nonzero().flatten()
        if idx.numel() <= CHECK_SAMPLE:
            return idx
        gen = torch.Generator().manual_seed(self.seed + salt)
        perm = torch.randperm(idx.numel(), generator=gen)[:CHECK_SAMPLE].to(idx.device)
        return idx[perm].sort().values

    def project(self, x: Tensor, cand: Tensor, eps: float) -> Tensor:
        lo, hi = self.model.bounds
        e = torch.full((x.shape[0],), eps, device=x.device, dtype=x.dtype)
        return (x + self.norm.project(cand.to(x.dtype) - x, e)).clamp(lo, hi)


def run_checks(ctx: CheckContext) -> list[Finding]:
    """Run every check that applies to the model; return the findings (empty when nothing looks wrong)."""
    findings: list[Finding] = []
    positive = sorted(e for e in ctx.epsilons if e > 0)
    if not positive or not bool(ctx.correct.any()):
        return findings
    has_grad = Capability.GRADIENTS in ctx.model.capabilities and ctx.whitebox_ran
    findings += _blackbox_beats_whitebox(ctx, positive) if has_grad else []
    findings += _random_noise(ctx, positive)
    if has_grad:
        findings += _unbounded(ctx)
        findings += _monotone_and_fgsm(ctx, positive)
    return findings


def _tolerance(n: int) -> float:
    """Allowed sampling noise in a success-rate comparison on ``n`` examples: 2 examples or 5 %."""
    return max(2.0 / max(n, 1), 0.05)


def _blackbox_beats_whitebox(ctx: CheckContext, positive: list[float]) -> list[Finding]:
    if ctx.blackbox:
        # The black-box attacks ran last at each epsilon, on what the white-box ones could not break.
        n_bb = sum(sum(st.broken) for st in ctx.blackbox)
        survivors_after_wb = max(max(st.attempted, default=0) for st in ctx.blackbox)
        labels = [format(e, "g") for e in ctx.epsilons]
        evidence: dict[str, Any] = {
            "broken_by_blackbox_only": n_bb,
            "attacks": {st.name: {"broken": dict(zip(labels, st.broken, strict=True)),
                                  "attempted": dict(zip(labels, st.attempted, strict=True))} for st in ctx.blackbox}}
    else:
        if Capability.SCORES not in ctx.model.capabilities or ctx.norm.name not in ("linf", "l2"):
            return []
        from bastion.attacks.evasion import Square

        eps = positive[-1]
        idx = ctx.sample(ctx.correct & ~ctx.broken, salt=1)
        if idx.numel() == 0:
            return []
        res = Square(norm=ctx.norm.name, queries=CHECK_SQUARE_QUERIES, seed=ctx.seed,
                     batch_size=ctx.batch_size)(ctx.model, ctx.x[idx], ctx.y[idx], epsilons=[eps])
        adv = ctx.project(ctx.x[idx], res.clipped[0], eps)
        n_bb = int((ctx.predict(adv) != ctx.y[idx]).sum())
        survivors_after_wb = int(idx.numel())
        evidence = {"broken_by_blackbox_only": n_bb, "whitebox_survivors_sampled": survivors_after_wb,
                    "epsilon": eps, "attacks": [f"Square({CHECK_SQUARE_QUERIES} queries)"]}
    if n_bb == 0:
        return []
    frac = n_bb / max(survivors_after_wb, 1)
    # One or two stragglers of many can be a white-box attack's bad luck; a share of them is a pattern.
    severity = "high" if frac > HIGH_SHARE else "warning" if (n_bb > 2 or frac > LOW_SHARE) else "info"
    meaning = ("gradients are likely masked or obfuscated, so white-box numbers alone would overstate robustness"
               if severity != "info" else
               "a few stragglers are usually the gradient attacks' bad luck; a growing share would mean masking")
    return [Finding("blackbox_beats_whitebox", severity,
                    f"a score-only attack broke {n_bb} example(s) that every gradient attack missed "
                    f"({frac:.0%} of the {survivors_after_wb} examples it attacked): {meaning}", evidence)]


def _random_noise(ctx: CheckContext, positive: list[float]) -> list[Finding]:
    per_eps: dict[str, int] = {}
    sampled = 0
    devices = [ctx.x.device] if ctx.x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # seeded draws without disturbing the caller's random stream
        torch.manual_seed(ctx.seed + 2)
        sampled = _noise_draws(ctx, positive, per_eps)
    if not per_eps:
        return []
    total = sum(per_eps.values())
    return [Finding("random_noise_beats_attack", "high",
                    f"random points inside the ball broke {total} example(s) the attacks reported robust "
                    f"(per epsilon: {per_eps}); an attack weaker than random noise means its gradients are "
                    "uninformative", {"broken_by_noise": per_eps, "draws": NOISE_DRAWS, "sampled": sampled})]


def _noise_draws(ctx: CheckContext, positive: list[float], per_eps: dict[str, int]) -> int:
    sampled = 0
    for eps in positive:
        # Survivors at this epsilon: correct and not broken at or below it.
        alive = ctx.correct & (ctx.broken_eps > eps)
        idx = ctx.sample(alive, salt=3)
        if idx.numel() == 0:
            continue
        sampled = max(sampled, int(idx.numel()))
        xs = ctx.x[idx]
        hit = torch.zeros(idx.numel(), dtype=torch.bool, device=xs.device)
        e = torch.full((xs.shape[0],), eps, device=xs.device, dtype=xs.dtype)
        for _ in range(NOISE_DRAWS):
            cand = ctx.project(xs, xs + ctx.norm.random_start(xs, e), eps)
            hit |= ctx.predict(cand) != ctx.y[idx]
        if bool(hit.any()):
            per_eps[format(eps, "g")] = int(hit.sum())
    return sampled


def _full_radius(norm: Norm, x: Tensor, bounds: tuple[float, float]) -> float:
    """A radius that covers the whole input box under ``norm``."""
    span = bounds[1] - bounds[0]
    d = x[0].numel()
    if norm.name == "linf":
        return span
    if norm.name == "l2":
        return span * math.sqrt(d)
    return span * d


def _unbounded(ctx: CheckContext) -> list[Finding]:
    from bastion.attacks.evasion import PGD

    idx = ctx.sample(ctx.correct, salt=4)
    if idx.numel() == 0:
        return []
    radius = _full_radius(ctx.norm, ctx.x, ctx.model.bounds)
    hit = torch.zeros(idx.numel(), dtype=torch.bool, device=ctx.x.device)
    # Cross-entropy saturates in fp32 on very confident models (its gradient underflows to zero); a margin
    # loss does not. Either breaking an example shows the attack works on it.
    for loss in ("ce", "margin"):
        todo = (~hit).nonzero().flatten()
        if todo.numel() == 0:
            break
        xs, ys = ctx.x[idx[todo]], ctx.y[idx[todo]]
        res = PGD(norm=ctx.norm.name, steps=UNBOUNDED_STEPS, loss=loss, seed=ctx.seed,
                  batch_size=ctx.batch_size)(ctx.adaptive, xs, ys, epsilons=[radius])
        hit[todo] = ctx.predict(ctx.project(xs, res.clipped[0], radius)) != ys
    rate = float(hit.float().mean())
    if rate >= UNBOUNDED_MIN_SUCCESS:
        return []
    return [Finding("unbounded_attack_fails", "high",
                    f"with the whole input range as budget (ε={radius:.4g}), PGD broke only {rate:.0%} of "
                    f"{idx.numel()} correctly classified examples (cross-entropy, then margin loss) instead of ~100 %: the attack is not "
                    "working on this model, so its robust accuracy is not evidence of robustness",
                    {"success_rate": rate, "epsilon": radius, "steps": UNBOUNDED_STEPS, "losses": ["ce", "margin"],
                     "sampled": int(idx.numel())})]


def _monotone_and_fgsm(ctx: CheckContext, positive: list[float]) -> list[Finding]:
    from bastion.attacks.evasion import FGSM, PGD

    idx = ctx.sample(ctx.correct, salt=5)
    if idx.numel() == 0:
        return []
    xs, ys = ctx.x[idx], ctx.y[idx]
    pgd_rate: list[float] = []
    fgsm_rate: list[float] = []
    for eps in positive:
        # Independent runs per epsilon: the ensemble carries successes forward, which would hide this symptom.
        pgd = PGD(norm=ctx.norm.name, steps=CHECK_STEPS, seed=ctx.seed, batch_size=ctx.batch_size)
        adv = ctx.project(xs, pgd(ctx.adaptive, xs, ys, epsilons=[eps]).clipped[0], eps)
        pgd_rate.append(float((ctx.predict(adv) != ys).float().mean()))
        fgsm = FGSM(norm=ctx.norm.name, seed=ctx.seed, batch_size=ctx.batch_size)
        adv = ctx.project(xs, fgsm(ctx.adaptive, xs, ys, epsilons=[eps]).clipped[0], eps)
        fgsm_rate.append(float((ctx.predict(adv) != ys).float().mean()))
    tol = _tolerance(int(idx.numel()))
    labels = [format(e, "g") for e in positive]
    findings: list[Finding] = []
    drops = [(labels[i], labels[j], pgd_rate[i], pgd_rate[j]) for i in range(len(positive))
             for j in range(i + 1, len(positive)) if pgd_rate[j] < pgd_rate[i] - tol]
    if drops:
        a, b, ra, rb = drops[0]
        findings.append(Finding(
            "success_not_monotone", "high",
            f"PGD succeeded less at ε={b} ({rb:.0%}) than at ε={a} ({ra:.0%}); a larger budget can only help a "
            "working attack, so the optimisation is failing (masked or noisy gradients)",
            {"pgd_success": dict(zip(labels, pgd_rate, strict=True)), "sampled": int(idx.numel()),
             "steps": CHECK_STEPS}))
    stronger = [(lab, f, p) for lab, f, p in zip(labels, fgsm_rate, pgd_rate, strict=True) if f > p + tol]
    if stronger:
        lab, f, p = stronger[0]
        findings.append(Finding(
            "fgsm_beats_iterative", "warning",
            f"one-step FGSM succeeded more often than {CHECK_STEPS}-step PGD at ε={lab} ({f:.0%} vs {p:.0%}); "
            "iterative attacks should dominate single steps unless the loss surface is masked",
            {"fgsm_success": dict(zip(labels, fgsm_rate, strict=True)),
             "pgd_success": dict(zip(labels, pgd_rate, strict=True)), "sampled": int(idx.numel())}))
    return findings
