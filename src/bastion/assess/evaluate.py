"""Reliable robustness evaluation: an AutoAttack-grade ensemble with per-example worst case.

For each epsilon in increasing order, every attack of the suite runs only on the examples the real model
still classifies correctly; an example broken at a smaller epsilon stays broken (its adversarial lies in
every larger ball). White-box attacks differentiate through ``model.adaptive()`` (the BPDA/EOT view of a
defence); every candidate is projected onto the ball and the bounds and re-checked on the real model.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from bastion.assess.checks import CheckContext, run_checks
from bastion.assess.probing import (
    REPORT_DRAWS,
    Expected,
    ScoresOnly,
    accuracy_draws,
    gradient_findings,
    is_randomised,
    probe_gradients,
)
from bastion.assess.result import AttackStats, EvaluationResult, Finding, KeptExample
from bastion.assess.suites import AttackSpec, resolve_suite
from bastion.attacks.evasion.base import Attack, MinimizationAttack
from bastion.core.adapters import Capability, Model, wrap
from bastion.core.threat import Norm, ThreatModel, check_epsilons, get_norm
from bastion.core.validation import check_inputs, check_labels
from bastion.errors import InputError

#: progress callback: (what is running, steps done, steps in total)
Progress = Callable[[str, int, int], None]


def evaluate(model: Any, x: Any, y: Any, threat: ThreatModel | None = None, *, norm: str | Norm = "linf",
             epsilons: float | Sequence[float] | None = None, suite: str | Sequence[Attack | str] = "standard",
             seed: int = 0, batch_size: int | None = None, keep_examples: int = 16, checks: bool = True,
             progress: Progress | None = None, epsilon_labels: Sequence[str] | None = None,
             allow_blackbox_only: bool = False, replica: bool = True) -> EvaluationResult:
    """Measure robust accuracy against an ensemble of attacks, with gradient-masking checks.

    Example::

        import bastion as bn
        res = bn.evaluate(torch_model, x_test, y_test, norm="linf", epsilons=[0.05, 0.1])
        print(res.robust_accuracy, [f.message for f in res.findings])
        res.save("report/")  # report.html, report.md, result.json

    ``suite``: ``"standard"`` (default: APGD-CE, APGD-T on 9 target classes, Square; measured at or below
    standard AutoAttack's robust accuracy in a fifth of its time), ``"autoattack"`` (AutoAttack's own
    composition and budgets, for comparison with papers), ``"thorough"``, ``"fast"`` (screening only),
    or a list of attacks (instances or names such as ``"apgd-t"``).
    A model without gradients (scikit-learn, ONNX, endpoints, detached logits) is opened with an exact
    torch replica where one exists (``replica=True``: linear models, linear SVMs, MLPs, after scalers and
    PCA; success is always counted on the real model). Otherwise only score- or decision-based attacks
    run, their figure is an upper bound, and a HIGH ``blackbox_only`` finding says so (it fails a gate
    unless ``allow_blackbox_only=True``, which lowers it to a warning).
    ``checks`` runs the masking checks of Carlini et al. (2019) on a subsample; their results are in
    ``result.findings``. ``epsilon_labels`` names each epsilon in reports (e.g. ``"8/255"``).
    """
    t_start = time.perf_counter()
    if threat is not None:
        if epsilons is not None:
            raise InputError("epsilons", epsilons, "either threat= or epsilons=, not both")
        geometry, eps_list = threat.geometry, list(threat.epsilons)
        m = wrap(model, threat.bounds) if threat.bounds is not None else wrap(model)
        if threat.bounds is not None and tuple(m.bounds) != tuple(threat.bounds):
            raise InputError("threat.bounds", threat.bounds, f"the wrapped model's bounds {m.bounds}")
    else:
        geometry = get_norm(norm)
        eps_list = check_epsilons(epsilons if epsilons is not None else ThreatModel().epsilons)
        m = wrap(model)
    labels = _labels(eps_list, epsilon_labels)
    if keep_examples < 0:
        raise InputError("keep_examples", keep_examples, "an integer >= 0")
    if batch_size is not None and batch_size < 1:
        raise InputError("batch_size", batch_size, "a positive integer or None")
    specs = resolve_suite(suite, geometry.name)

    xt = check_inputs(x, m.bounds, argument="x", device=m.device)
    if y is None:
        raise InputError("y", None, "the true class of each input")
    probed = m.probe(xt, "x")
    num_classes = probed if probed is not None else m.infer_num_classes(xt)
    yt = check_labels(y, xt.shape[0], num_classes, argument="y", device=m.device)

    # A random forward pass is judged in expectation: attacks see averaged scores (EOT gradients).
    real = m
    randomised = is_randomised(m, xt)
    if randomised:
        m = Expected(m)

    # Ask the model for gradients before trusting its type: a module may return detached or flat logits.
    probe_found: list[Finding] = []
    if Capability.GRADIENTS in m.capabilities:
        probe = probe_gradients(m.adaptive(), xt, yt)
        probe_found = gradient_findings(probe)
        if not probe.has_graph:
            m = ScoresOnly(m)
    opened_note = ""
    if replica and Capability.GRADIENTS not in m.capabilities:
        from bastion.core.replica import open_model

        opened, opened_note = open_model(m, xt, batch_size)
        if opened is not None:
            m = opened
    if Capability.GRADIENTS not in m.capabilities and isinstance(suite, str):
        specs += _structure_specs(m, xt, seed)

    runner = _Ensemble(m, geometry, xt, yt, seed, batch_size, num_classes)
    notes: list[str] = []
    attacks = runner.build(specs, notes)
    n_steps = len([e for e in eps_list if e > 0]) * len(attacks) + (1 if checks else 0)
    done = 0

    order = sorted(range(len(eps_list)), key=lambda i: eps_list[i])
    robust = [0.0] * len(eps_list)
    stats = {spec.name: AttackStats(spec.name, spec.family, repr(att), [0] * len(eps_list), [0] * len(eps_list))
             for spec, att in attacks}
    for i in order:
        eps = eps_list[i]
        for spec, att in attacks:
            if eps > 0:
                if progress is not None:
                    progress(f"{spec.name} at ε={labels[i]}", done, n_steps)
                runner.step(spec, att, eps, i, stats[spec.name])
                done += 1
        robust[i] = int((~runner.broken).sum()) / int(xt.shape[0])
    t_attacks = time.perf_counter() - t_start

    findings: list[Finding] = [Finding("attack_unavailable", "warning", note, {}) for note in notes
                               if note.startswith("unavailable")]
    findings += probe_found
    bounded_by = [] if any(s.family == "white-box" for s, _ in attacks) else [s.name for s, _ in attacks]
    if bounded_by:
        findings.append(_blackbox_finding(bounded_by, notes, opened_note, allow_blackbox_only))
    elif opened_note and not opened_note.startswith("no exact replica"):
        findings.append(Finding("opened_by_replica", "info", opened_note, {"replica": True}))
    t_checks = 0.0
    if checks:
        if progress is not None:
            progress("gradient-masking checks", done, n_steps)
        t0 = time.perf_counter()
        ctx = CheckContext(model=m, adaptive=runner.adaptive, norm=geometry, x=xt, y=yt, correct=runner.correct,
                           broken=runner.broken, broken_eps=runner.broken_eps, broken_by=runner.broken_by,
                           epsilons=eps_list, blackbox=[st for st in stats.values() if st.family == "black-box"],
                           whitebox_ran=any(s.family == "white-box" for s, _ in attacks),
                           seed=seed, batch_size=batch_size)
        findings += run_checks(ctx)
        t_checks = time.perf_counter() - t0
        done += 1
    if progress is not None:
        progress("done", done, n_steps)

    clean_acc = int(runner.correct.sum()) / int(xt.shape[0])
    random_info: dict[str, Any] | None = None
    if randomised:
        clean_acc, robust, random_info = _in_expectation(real, runner, eps_list, batch_size)
        findings.append(Finding("randomised_model", "info",
                                f"two forward passes on the same inputs differed: accuracies are expectations over "
                                f"{random_info['draws']} draws (clean {clean_acc:.1%} ± {random_info['clean_spread']:.1%} "
                                "between draws) and white-box attacks used EOT gradients", random_info))

    timings = {"total": time.perf_counter() - t_start, "attacks": t_attacks, "checks": t_checks}
    timings.update({f"attack:{name}": st.seconds for name, st in stats.items()})
    settings = {
        "suite": suite if isinstance(suite, str) else "custom",
        "attacks": [repr(att) for _, att in attacks],
        "skipped": notes,
        "norm": geometry.name,
        "bounds": list(m.bounds),
        "seed": seed,
        "batch_size": batch_size,
        "checks": checks,
        "num_classes": num_classes,
        "input_shape": list(xt.shape[1:]),
        "model": m.describe(),
        "adaptive_notes": list(getattr(m, "adaptive_notes", ())),
        "adaptive_view": runner.adaptive is not m,
        "torch": torch.__version__,
        "replica": opened_note or None,
        "allow_blackbox_only": allow_blackbox_only,
        "randomised": random_info,
    }
    return EvaluationResult(
        norm=geometry.name, epsilons=list(eps_list), epsilon_labels=labels, n_examples=int(xt.shape[0]),
        clean_accuracy=clean_acc, robust_accuracy=robust,
        correct=runner.correct.cpu(), broken_eps=runner.broken_eps.cpu(), broken_by=runner.broken_by,
        x_adv=runner.x_adv.cpu(), adv_pred=runner.adv_pred.cpu(), distance=runner.distance.cpu(),
        attacks=list(stats.values()), findings=findings, examples=runner.kept(keep_examples),
        settings=settings, timings=timings, upper_bound=bool(bounded_by), bounded_by=bounded_by)


def _in_expectation(real: Model, runner: _Ensemble, eps_list: list[float],
                    batch_size: int | None) -> tuple[float, list[float], dict[str, Any]]:
    """Clean and robust accuracy of a randomised model as means over independent draws of the real model.

    At each epsilon an example is scored on the adversarial found within it (the input itself otherwise).
    """
    clean = accuracy_draws(real, runner.x, runner.y, REPORT_DRAWS, batch_size)
    robust, spread = [], []
    for eps in eps_list:
        hit = (runner.broken_eps <= eps) & runner.correct
        at = torch.where(hit.reshape((-1,) + (1,) * (runner.x.dim() - 1)), runner.x_adv, runner.x)
        acc = accuracy_draws(real, at, runner.y, REPORT_DRAWS, batch_size)
        robust.append(float(acc.mean()))
        spread.append(float(acc.std()))
    info = {"draws": REPORT_DRAWS, "clean_spread": float(clean.std()), "robust_spread": spread,
            "eot_draws": getattr(runner.model, "draws", None) or getattr(runner.adaptive, "draws", None)}
    return float(clean.mean()), robust, info


def _structure_specs(m: Model, x: Tensor, seed: int) -> list[AttackSpec]:
    """Attacks that exploit a closed model's structure: split search and a surrogate for tree ensembles."""
    from bastion.attacks.evasion.trees import TreeSplitSearch, is_tree_model, surrogate_transfer

    if not is_tree_model(m):
        return []
    found: dict[str, Attack] = {}

    def transfer(norm: str, s: int, bs: int | None, nc: int) -> Attack:
        if norm not in found:  # trained once, on the model's own labels around the data
            found[norm] = surrogate_transfer(m, x, norm, seed=s)
        return found[norm]

    return [AttackSpec("TreeSplitSearch", "black-box", Capability.SCORES,
                       lambda norm, s, bs, nc: TreeSplitSearch(norm, seed=s, batch_size=bs)),
            AttackSpec("Transfer (surrogate)", "black-box", Capability.LABELS, transfer, ("linf", "l2"))]


def _blackbox_finding(bounded_by: list[str], notes: list[str], opened_note: str, allowed: bool) -> Finding:
    """Robust accuracy from score/decision-based attacks alone: an upper bound, HIGH unless accepted."""
    why = f" ({opened_note})" if opened_note else ""
    accepted = "; accepted with allow_blackbox_only / --allow-blackbox-only" if allowed else \
        "; a gate fails on it unless --allow-blackbox-only"
    return Finding("blackbox_only", "warning" if allowed else "high",
                   f"no gradient attack could run on this model{why}, so robust accuracy is an UPPER BOUND set by "
                   f"{', '.join(bounded_by)} alone: the true figure can be far lower. Evaluate a differentiable copy "
                   f"(PyTorch, or a replicable scikit-learn model) for a tighter one{accepted}",
                   {"upper_bound": True, "bounded_by": bounded_by, "skipped": notes, "replica": opened_note or None})


def _labels(eps_list: list[float], given: Sequence[str] | None) -> list[str]:
    if given is None:
        return [format(e, "g") for e in eps_list]
    out = [str(g) for g in given]
    if len(out) != len(eps_list):
        raise InputError("epsilon_labels", f"{len(out)} labels", f"{len(eps_list)}, one per epsilon")
    return out


class _Ensemble:
    """Per-example worst case across the attacks of a suite, on the real model."""

    def __init__(self, model: Model, norm: Norm, x: Tensor, y: Tensor, seed: int, batch_size: int | None,
                 num_classes: int) -> None:
        self.model, self.norm, self.x, self.y = model, norm, x, y
        self.seed, self.batch_size, self.num_classes = seed, batch_size, num_classes
        # White-box attacks differentiate through the adaptive view; only models with gradients have one.
        self.adaptive = model.adaptive() if Capability.GRADIENTS in model.capabilities else model
        n = x.shape[0]
        pred = self.predict(x)
        self.correct = pred == y
        self.broken = ~self.correct
        self.broken_eps = torch.where(self.correct, torch.full((n,), math.inf, device=x.device),
                                      torch.zeros(n, device=x.device))
        self.broken_by: list[str | None] = [None if c else "clean" for c in self.correct.tolist()]
        self.x_adv = x.clone()
        self.adv_pred = pred.clone()
        self.distance = torch.zeros(n, device=x.device)
        # Minimum-norm attacks find one adversarial per example for all epsilons: cache it.
        self._min_cache: dict[str, tuple[Tensor, Tensor]] = {}

    def predict(self, x: Tensor) -> Tensor:
        bs = self.batch_size or max(1, x.shape[0])
        with torch.no_grad():
            return torch.cat([self.model.predict(x[i:i + bs]) for i in range(0, x.shape[0], bs)]).to(self.y.device)

    def build(self, specs: list[AttackSpec], notes: list[str]) -> list[tuple[AttackSpec, Attack]]:
        out: list[tuple[AttackSpec, Attack]] = []
        for spec in specs:
            if spec.needs not in self.model.capabilities:
                notes.append(f"{spec.name}: skipped, the model offers {self.model.capabilities.describe()}")
                continue
            if self.norm.name not in spec.norms:
                notes.append(f"{spec.name}: skipped, it does not support the {self.norm.name} norm")
                continue
            try:
                att = spec.build(self.norm.name, self.seed, self.batch_size, self.num_classes)
            except InputError as exc:
                if exc.argument != "norm":
                    raise
                notes.append(f"{spec.name}: skipped, it does not support the {self.norm.name} norm")
                continue
            except (NotImplementedError, TypeError) as exc:
                notes.append(f"unavailable: {spec.name} could not be built ({exc}); the evaluation is weaker")
                continue
            if any(s.name == spec.name for s, _ in out):
                # Two attacks of one class (e.g. APGD with CE and with DLR) need distinct rows in the report.
                taken = {s.name for s, _ in out}
                k = 2
                while f"{spec.name} ({k})" in taken:
                    k += 1
                spec = dataclasses.replace(spec, name=f"{spec.name} ({k})")
            out.append((spec, att))
        if not out and Capability.SCORES not in self.model.capabilities and self.norm.name in ("l2", "linf"):
            # A labels-only model (an endpoint returning classes) still meets a decision-based attack.
            from bastion.attacks.evasion import HopSkipJump

            spec = AttackSpec("HopSkipJump", "black-box", Capability.LABELS, lambda *_: HopSkipJump(self.norm.name))
            notes.append("HopSkipJump: added, the model returns labels only")
            out.append((spec, HopSkipJump(norm=self.norm.name, seed=self.seed, batch_size=self.batch_size)))
        if not out:
            raise InputError("suite", [s.name for s in specs],
                             f"at least one attack usable on a model offering {self.model.capabilities.describe()} "
                             f"under the {self.norm.name} norm")
        return out

    def step(self, spec: AttackSpec, attack: Attack, eps: float, eps_index: int, stats: AttackStats) -> None:
        active = (~self.broken).nonzero().flatten()
        if active.numel() == 0:
            return
        target = self.adaptive if spec.family == "white-box" else self.model
        t0 = time.perf_counter()
        try:
            cand, queries = self._candidates(spec.name, attack, target, active, eps)
        except NotImplementedError:
            stats.description += " (not implemented: skipped)"
            return
        cand = self._project(self.x[active], cand, eps)
        pred = self.predict(cand)
        hit = pred != self.y[active]
        stats.seconds += time.perf_counter() - t0
        stats.queries += queries
        stats.runs += 1
        stats.attempted[eps_index] += int(active.numel())
        idx = active[hit]
        if idx.numel() == 0:
            return
        self.broken[idx] = True
        self.broken_eps[idx] = eps
        for j in idx.tolist():
            self.broken_by[j] = spec.name
        self.x_adv[idx] = cand[hit]
        self.adv_pred[idx] = pred[hit]
        self.distance[idx] = self.norm.measure(cand[hit] - self.x[idx]).to(self.distance.dtype)
        stats.broken[eps_index] += int(idx.numel())

    def _candidates(self, name: str, attack: Attack, target: Model, active: Tensor,
                    eps: float) -> tuple[Tensor, int]:
        """Adversarial candidates for the active examples, and the queries the attack spent."""
        if not isinstance(attack, MinimizationAttack):
            res = attack(target, self.x[active], self.y[active], epsilons=[eps])
            return res.clipped[0].detach().to(self.x.device), res.queries
        done, adv = self._min_cache.get(name, (torch.zeros_like(self.broken), self.x.clone()))
        todo = active[~done[active]]
        queries = 0
        if todo.numel() > 0:
            res = attack(target, self.x[todo], self.y[todo], epsilons=None)
            adv[todo] = res.clipped[0].detach().to(self.x.device)
            done[todo] = True
            self._min_cache[name] = (done, adv)
            queries = res.queries
        return adv[active], queries

    def _project(self, x: Tensor, cand: Tensor, eps: float) -> Tensor:
        """Candidates onto the ball and the bounds: every kept adversarial is valid by construction."""
        lo, hi = self.model.bounds
        e = torch.full((x.shape[0],), eps, device=x.device, dtype=x.dtype)
        return (x + self.norm.project(cand.to(x.dtype) - x, e)).clamp(lo, hi)

    def kept(self, k: int) -> list[KeptExample]:
        adv_idx = (self.correct & self.broken).nonzero().flatten()[:k].tolist()
        clean_pred = self.y  # correct examples: clean prediction equals the label
        return [KeptExample(index=j, x=self.x[j].cpu(), x_adv=self.x_adv[j].cpu(), label=int(self.y[j]),
                            clean_pred=int(clean_pred[j]), adv_pred=int(self.adv_pred[j]),
                            epsilon=float(self.broken_eps[j]), attack=str(self.broken_by[j]),
                            distance=float(self.distance[j])) for j in adv_idx]
