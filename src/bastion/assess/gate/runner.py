"""Run every check that applies to a model and its data under one policy: :func:`assess`.

    from bastion.assess.gate import assess, Policy
    a = assess("model.pt", data="test.npz", policy=Policy.demo())
    a.verdict, a.exit_code, [o.to_dict() for o in a.outcomes]

What applies is decided from what was given and what the model's adapter offers: the file scan always;
the signature when a key is given (or the policy requires one); accuracy and robustness with test data
(white-box attacks when the model has gradients, black-box otherwise); certification when the policy
asks; the poisoning audit with training data; membership inference with members (``members``, else
``train``) and non-members (``non_members``, else the test ``data``, which the model never trained on);
extraction when the policy asks, from the non-members as the attacker's pool. The model is loaded only
after its file scan passed: loading a file that carries code would run it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bastion.assess.gate.checks import ERROR, FAIL, PASS, SKIP, CheckOutcome, pct, skipped
from bastion.assess.gate.policy import Policy
from bastion.errors import BastionError, InputError

#: progress callback over the whole assessment: (current check, units done, units in total)
Progress = Callable[[str, float, float], None]

#: budget -> (evaluation suite, most examples attacked, masking checks, most examples certified)
BUDGETS: dict[str, tuple[str, int | None, bool, int]] = {
    "fast": ("fast", 100, False, 50),
    "standard": ("standard", 500, True, 200),
    "thorough": ("thorough", None, True, 1000),
}

#: share of the progress bar each check takes (the attacks dominate the wall time)
_WEIGHT = {"scan": 1.0, "signature": 1.0, "load": 1.0, "clean_accuracy": 1.0, "robust_accuracy": 20.0,
           "certified_accuracy": 5.0, "poisoning": 4.0, "backdoor": 3.0, "membership_inference": 0.5,
           "extraction": 0.5}

NOT_IN_VERSION = "not available in this version of Bastion"

#: budget -> (most members and most non-members attacked, shadow models; 0 runs the shadow-free attacks only)
MIA_BUDGETS: dict[str, tuple[int | None, int]] = {"fast": (200, 0), "standard": (500, 0), "thorough": (None, 8)}


@dataclass
class Inputs:
    """Files an assessment reads, and how to load them."""

    model: Path
    data: Path | None = None
    train: Path | None = None
    members: Path | None = None
    non_members: Path | None = None
    pub: Path | None = None
    signature: Path | None = None
    signed_dir: Path | None = None
    factory: str | None = None
    trust_pickle: bool = False
    bounds: tuple[float, float] = (0.0, 1.0)
    label_column: str = "label"
    seed: int = 0
    batch_size: int | None = None
    limit: int | None = None  # use only the first N test examples
    backend: Any = None  # a bastion.scale Backend: scan, attacks and certification sharded over it

    def model_spec(self) -> Any:
        from bastion.scale import ModelSpec

        return ModelSpec.from_path(self.model, factory=self.factory, bounds=self.bounds,
                                   trust_pickle=self.trust_pickle)


@dataclass
class Assessment:
    """Outcome of :func:`assess`: one line per check, what was read, and the evaluation behind the figures."""

    outcomes: list[CheckOutcome]
    policy: Policy
    budget: str
    provenance: dict[str, Any]
    started: str
    seconds: float
    evaluation: Any = None  # bastion.assess.EvaluationResult when robustness ran
    scan_findings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """``fail`` if any check failed, else ``error`` if any could not run, else ``pass``."""
        verdicts = {o.verdict for o in self.outcomes}
        if FAIL in verdicts:
            return FAIL
        return ERROR if ERROR in verdicts else PASS

    @property
    def exit_code(self) -> int:
        return {PASS: 0, FAIL: 1, ERROR: 2}[self.verdict]

    def outcome(self, check_id: str) -> CheckOutcome:
        return next(o for o in self.outcomes if o.id == check_id)

    def to_dict(self) -> dict[str, Any]:
        from bastion import __version__

        counts = {v: sum(o.verdict == v for o in self.outcomes) for v in (PASS, FAIL, SKIP, ERROR)}
        return {"verdict": self.verdict, "exit_code": self.exit_code, "counts": counts, "budget": self.budget,
                "started": self.started, "seconds": round(self.seconds, 3), "bastion": __version__,
                "policy": self.policy.to_dict(), "provenance": self.provenance,
                "checks": [o.to_dict() for o in self.outcomes], "scan_findings": self.scan_findings}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def assess(model: str | Path | Inputs, data: str | Path | None = None, *, policy: Policy | None = None,
           budget: str = "standard", progress: Progress | None = None, **inputs: Any) -> Assessment:
    """Run the checks that apply and score them against ``policy`` (defaults: :meth:`Policy.default`)."""
    if budget not in BUDGETS:
        raise InputError("budget", repr(budget), f"one of {', '.join(BUDGETS)}")
    ins = model if isinstance(model, Inputs) else Inputs(model=Path(model), data=None if data is None else Path(data),
                                                           **inputs)
    return _Run(ins, policy or Policy.default(), budget, progress).run()


class _Run:
    def __init__(self, ins: Inputs, policy: Policy, budget: str, progress: Progress | None) -> None:
        self.ins, self.policy, self.budget, self.progress = ins, policy, budget, progress
        self.outcomes: list[CheckOutcome] = []
        self.provenance: dict[str, Any] = {}
        self.evaluation: Any = None
        self.scan_findings: list[dict[str, Any]] = []
        self.total = sum(_WEIGHT.values())
        self.done = 0.0

    # --- progress ---------------------------------------------------------------------------------
    def tick(self, what: str, fraction: float = 0.0, key: str = "") -> None:
        if self.progress is not None:
            self.progress(what, self.done + fraction * _WEIGHT.get(key, 0.0), self.total)

    def finish(self, key: str) -> None:
        self.done += _WEIGHT[key]

    def record(self, key: str, fn: Callable[[], CheckOutcome]) -> CheckOutcome:
        self.tick(key.replace("_", " "), 0.0, key)
        t0 = time.perf_counter()
        try:
            out = fn()
        except BastionError as exc:
            out = CheckOutcome(key, ERROR, f"could not run: {exc}")
        out.seconds = out.seconds or time.perf_counter() - t0
        self.outcomes.append(out)
        self.finish(key)
        return out

    # --- the assessment ---------------------------------------------------------------------------
    def run(self) -> Assessment:
        started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
        t0 = time.perf_counter()
        ins = self.ins
        self.provenance["model"] = self.describe_file(ins.model)
        if ins.backend is not None:  # where the sharded checks ran (the figures do not depend on it)
            self.provenance["execution"] = ins.backend.describe()
        scan = self.record("scan", self.check_scan)
        self.record("signature", self.check_signature)
        model, why_not = None, ""
        if scan.verdict != PASS:
            why_not = "the file scan did not pass, so the model was not loaded (loading it could run the code found)"
        else:
            self.tick("loading the model", 0.0, "load")
            try:
                model = self.load_model()
            except BastionError as exc:
                why_not = f"the model could not be loaded: {exc}"
        self.finish("load")
        data = self.load_labelled("data", ins.data) if model is not None and ins.data is not None else None
        for key, fn in (("clean_accuracy", self.check_clean), ("robust_accuracy", self.check_robust),
                        ("certified_accuracy", self.check_certified), ("backdoor", self.check_backdoor)):
            if model is None:
                self.skip_or_error(key, why_not)
            else:
                self.record(key, lambda fn=fn: fn(model, data))  # type: ignore[misc]
        for key, mfn in (("poisoning", self.check_poisoning), ("membership_inference", self.check_membership),
                         ("extraction", self.check_extraction)):
            if model is None:
                self.skip_or_error(key, why_not)
            else:
                self.record(key, lambda mfn=mfn: mfn(model))  # type: ignore[misc]
        self.tick("done", 0.0)
        return Assessment(self.outcomes, self.policy, self.budget, self.provenance, started,
                          time.perf_counter() - t0, self.evaluation, self.scan_findings)

    def skip_or_error(self, key: str, why_not: str) -> None:
        # A model that failed its scan is a verdict (skip the rest); one that would not load is an error.
        verdict = ERROR if why_not.startswith("the model could not") else SKIP
        self.outcomes.append(CheckOutcome(key, verdict, why_not))
        self.finish(key)

    # --- loading ----------------------------------------------------------------------------------
    def describe_file(self, path: Path) -> dict[str, Any]:
        out: dict[str, Any] = {"path": str(path)}
        if path.is_file():
            out.update(bytes=path.stat().st_size, sha256=sha256_file(path))
        elif path.is_dir():
            out["kind"] = "folder"
        return out

    def load_model(self) -> Any:
        from bastion.core.loading import load_model

        m = load_model(self.ins.model, factory=self.ins.factory, bounds=self.ins.bounds,
                       trust_pickle=self.ins.trust_pickle)
        self.provenance["model"].update(adapter=m.describe(), capabilities=m.capabilities.describe())
        return m

    def load_labelled(self, key: str, path: Path) -> tuple[torch.Tensor, torch.Tensor] | None:
        from bastion.datasets import load_data

        try:
            x, y = load_data(path, label_column=self.ins.label_column)
        except BastionError as exc:
            self.provenance[key] = {"path": str(path), "error": str(exc)}
            return None
        info = self.describe_file(path)
        if key == "data" and self.ins.limit is not None and x.shape[0] > self.ins.limit:
            info["examples_in_file"] = int(x.shape[0])
            x, y = x[:self.ins.limit], None if y is None else y[:self.ins.limit]
        info.update(examples=int(x.shape[0]), input_shape=list(x.shape[1:]), labelled=y is not None)
        if y is not None:
            info["classes"] = {str(int(c)): int(n) for c, n in zip(*torch.unique(y, return_counts=True), strict=True)}
        self.provenance[key] = info
        return None if y is None else (x, y)

    def data_problem(self, key: str) -> str:
        info = self.provenance.get(key, {})
        if "error" in info:
            return f"could not run: {info['error']}"
        return f"could not run: {self.ins.data}: has no labels (an .npz needs an array 'y')"

    # --- checks -----------------------------------------------------------------------------------
    def check_scan(self) -> CheckOutcome:
        from bastion.scan import scan_path

        if self.ins.backend is not None:
            from bastion.scale import scan_sharded

            report = scan_sharded(self.ins.backend, [self.ins.model])
        else:
            report = scan_path(self.ins.model)
        threshold = f"no finding >= {self.policy.scan_fail_on.name.lower()}"
        self.scan_findings = [f.to_dict() for f in report.findings]
        details = {"files_scanned": report.files_scanned, "counts": report.to_dict()["counts"],
                   "errors": report.errors}
        if report.errors:
            return CheckOutcome("scan", ERROR, f"could not scan: {'; '.join(report.errors)}", threshold=threshold,
                                details=details)
        if report.files_scanned == 0:
            return CheckOutcome("scan", ERROR, f"{self.ins.model} holds no files to scan", threshold=threshold)
        failing = [f for f in report.findings if f.severity >= self.policy.scan_fail_on]
        worst = report.max_severity
        text = f"worst: {worst.name.lower()}" if worst is not None else "no findings"
        if failing:
            first = failing[0]
            return CheckOutcome("scan", FAIL, f"{len(failing)} finding(s) at or above "
                                f"{self.policy.scan_fail_on.name.lower()}, e.g. {first.rule_id}: {first.message}",
                                figure=float(len(failing)), figure_text=text, threshold=threshold,
                                details=details)
        return CheckOutcome("scan", PASS, f"{report.files_scanned} file(s) scanned, "
                            f"{len(report.findings)} finding(s), none at or above the threshold",
                            figure=0.0, figure_text=text, threshold=threshold, details=details)

    def check_signature(self) -> CheckOutcome:
        mode = self.policy.signature
        if mode == "off":
            return skipped("signature", "the policy turns the signature check off (signature: off)")
        folder = self.ins.signed_dir or (self.ins.model if self.ins.model.is_dir() else self.ins.model.parent)
        threshold = f"valid signature ({mode})"
        if not self.ins.model.resolve().is_relative_to(folder.resolve()):
            # A valid signature over a folder that does not hold the model says nothing about the model.
            raise InputError("--signed-dir", str(folder), f"the signed folder holding the model {self.ins.model}")
        if self.ins.pub is None:
            if mode == "required":
                return CheckOutcome("signature", FAIL, "the policy requires a signature but no --pub key was given "
                                    "to check it with", threshold=threshold)
            return skipped("signature", "no --pub key given (the policy makes the signature optional)", threshold)
        from bastion.sign import SIGNATURE_NAME, verify_model

        sig = self.ins.signature or folder / SIGNATURE_NAME
        if not sig.exists():
            verdict = FAIL if mode == "required" else SKIP
            return CheckOutcome("signature", verdict, f"no signature file {sig} (sign with `bastion sign {folder} "
                                "--key KEY`)", threshold=threshold)
        res = verify_model(folder, self.ins.pub, signature=sig)
        self.provenance["signature"] = {"folder": str(folder), "signature": str(sig), "key_id": res.key_id,
                                        "root_digest": res.root_digest, "format": res.format, "ok": res.ok}
        if res.ok:
            return CheckOutcome("signature", PASS, f"signature holds and all {res.files} file(s) match",
                                figure=1.0, figure_text="valid", threshold=threshold, details=res.to_dict())
        return CheckOutcome("signature", FAIL, "; ".join(res.reasons[:3]) or "the signature does not hold",
                            figure=0.0, figure_text="invalid", threshold=threshold, details=res.to_dict())

    def check_clean(self, model: Any, data: tuple[torch.Tensor, torch.Tensor] | None) -> CheckOutcome:
        low = self.policy.clean_accuracy_min
        if low is None:
            return skipped("clean_accuracy", "the policy turns it off (clean_accuracy: null)")
        if self.ins.data is None:
            return skipped("clean_accuracy", "no test data given (--data)", f">= {low:g}")
        if data is None:
            return CheckOutcome("clean_accuracy", ERROR, self.data_problem("data"))
        x, y = data
        bs = self.ins.batch_size or 512
        with torch.no_grad():
            pred = torch.cat([model.predict(x[i:i + bs]).cpu() for i in range(0, x.shape[0], bs)])
        acc = float((pred == y.cpu()).double().mean())
        verdict = PASS if acc >= low else FAIL
        return CheckOutcome("clean_accuracy", verdict, f"{pct(acc)} of {x.shape[0]} test examples classified "
                            f"correctly ({'at or above' if verdict == PASS else 'below'} {pct(low)})",
                            figure=acc, figure_text=pct(acc), threshold=f">= {low:g}",
                            details={"examples": int(x.shape[0])})

    def check_robust(self, model: Any, data: tuple[torch.Tensor, torch.Tensor] | None) -> CheckOutcome:
        rule = self.policy.robust_accuracy
        if rule is None:
            return skipped("robust_accuracy", "the policy turns it off (robust_accuracy: null)")
        threshold = f">= {rule.min:g} at {rule.norm} eps={rule.eps:g}"
        if self.ins.data is None:
            return skipped("robust_accuracy", "no test data given (--data)", threshold)
        if data is None:
            return CheckOutcome("robust_accuracy", ERROR, self.data_problem("data"), threshold=threshold)
        from bastion.assess import evaluate
        from bastion.core.adapters import Capability

        suite, limit, masking, _ = BUDGETS[self.budget]
        x, y = data
        if limit is not None:
            x, y = x[:limit], y[:limit]

        def on_progress(what: str, done: int, total: int) -> None:
            self.tick(f"robust accuracy: {what}", done / max(total, 1), "robust_accuracy")

        if self.ins.backend is not None:
            from bastion.scale import evaluate_sharded

            res = evaluate_sharded(self.ins.backend, self.ins.model_spec(), x, y, norm=rule.norm, epsilons=[rule.eps],
                                   suite=suite, seed=self.ins.seed, batch_size=self.ins.batch_size, checks=masking,
                                   keep_examples=8, progress=on_progress)
        else:
            res = evaluate(model, x, y, norm=rule.norm, epsilons=[rule.eps], suite=suite, seed=self.ins.seed,
                           batch_size=self.ins.batch_size, checks=masking, keep_examples=8, progress=on_progress)
        self.evaluation = res
        acc = res.robust_accuracy[0]
        white = Capability.GRADIENTS in model.capabilities
        # The evaluator flags a figure that only black-box attacks produced; a newer result may say it directly.
        upper = bool(getattr(res, "upper_bound", False) or getattr(res, "is_upper_bound", False)
                     or any(f.check == "blackbox_only" for f in res.findings))
        # The black-box-only finding is the upper-bound rule's business, not a sign of masking.
        high = [f.check for f in res.findings if f.severity == "high" and f.check != "blackbox_only"]
        details = {"suite": suite, "examples": res.n_examples, "clean_accuracy": res.clean_accuracy,
                   "family": "white-box" if white else "black-box", "upper_bound": upper,
                   "masking_checks": masking, "findings": [f.to_dict() for f in res.findings],
                   "sharding": res.settings.get("sharding"),
                   "attacks": [a.name for a in res.attacks]}
        reasons = []
        if acc < rule.min:
            reasons.append(f"{pct(acc)} < {pct(rule.min)}")
        if upper and not rule.allow_upper_bound:
            reasons.append("only black-box attacks could run, so the figure is an upper bound "
                           "(allow_upper_bound: true to accept it)")
        if high and not rule.allow_masking:
            reasons.append(f"gradient masking ({', '.join(high)}) makes the figure untrustworthy")
        what = (f"{pct(acc)} of {res.n_examples} examples survive {', '.join(a.name for a in res.attacks)} "
                f"({suite} suite, {details['family']})")
        text = pct(acc) + (" (upper bound)" if upper else "")
        if reasons:
            return CheckOutcome("robust_accuracy", FAIL, f"{what}: {'; '.join(reasons)}", figure=acc,
                                figure_text=text, threshold=threshold, details=details)
        note = "" if masking else "; fast budget: gradient-masking checks not run"
        return CheckOutcome("robust_accuracy", PASS, what + note, figure=acc, figure_text=text, threshold=threshold,
                            details=details)

    def check_certified(self, model: Any, data: tuple[torch.Tensor, torch.Tensor] | None) -> CheckOutcome:
        rule = self.policy.certified_accuracy
        if rule is None:
            return skipped("certified_accuracy", "not asked for by the policy (certified_accuracy: null)")
        threshold = f">= {rule.min:g} at L2 radius {rule.radius:g} (sigma {rule.sigma:g})"
        if self.ins.data is None:
            return skipped("certified_accuracy", "no test data given (--data)", threshold)
        if data is None:
            return CheckOutcome("certified_accuracy", ERROR, self.data_problem("data"), threshold=threshold)
        from bastion.certify import Smoothed

        x, y = data
        x, y = x[:BUDGETS[self.budget][3]], y[:BUDGETS[self.budget][3]]
        smoothed = Smoothed(model, rule.sigma, seed=self.ins.seed)
        def on_progress(d: int, t: int) -> None:
            self.tick("certified accuracy", d / max(t, 1), "certified_accuracy")

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if self.ins.backend is not None:
                from bastion.scale import certify_sharded

                res = certify_sharded(self.ins.backend, self.ins.model_spec(), x, sigma=rule.sigma, n0=rule.n0,
                                      n=rule.n, alpha=rule.alpha, seed=self.ins.seed, progress=on_progress)
            else:
                res = smoothed.certify(x, n0=rule.n0, n=rule.n, alpha=rule.alpha, progress=on_progress)
        acc = res.certified_accuracy(y, rule.radius)[0]
        notes = [str(w.message) for w in caught]
        verdict = PASS if acc >= rule.min else FAIL
        return CheckOutcome("certified_accuracy", verdict,
                            f"{pct(acc)} of {x.shape[0]} examples certified correct at radius {rule.radius:g} "
                            f"(n={rule.n}, alpha={rule.alpha:g})" + (f"; {notes[0]}" if notes else ""),
                            figure=acc, figure_text=pct(acc), threshold=threshold,
                            details={"examples": int(x.shape[0]), "abstained": int(res.abstained.sum()),
                                     "warnings": notes})

    def check_poisoning(self, model: Any) -> CheckOutcome:
        limit = self.policy.poisoning_max_flagged
        if limit is None:
            return skipped("poisoning", "the policy turns it off (poisoning: null)")
        threshold = f"<= {limit:g} flagged in any class"
        if self.ins.train is None:
            return skipped("poisoning", "no training data given (--train)", threshold)
        try:
            from bastion.detect import Spectre
        except ImportError:
            return skipped("poisoning", NOT_IN_VERSION, threshold)
        data = self.load_labelled("train", self.ins.train)
        if data is None:
            return CheckOutcome("poisoning", ERROR, self.data_problem("train"), threshold=threshold)
        self.tick("poisoning audit (Spectre)", 0.1, "poisoning")
        try:
            # confirmed by the overlay test: Spectre alone flags 10-18 % of a clean class (honest rare
            # records), which would hide a 1 % poison under its false alarms
            det = Spectre(seed=self.ins.seed, confirm=True)
            det.fit(model, data[0], data[1])
        except InputError as exc:
            if exc.argument == "model":
                return skipped("poisoning", f"the detector needs a PyTorch model ({exc})", threshold)
            raise
        # Poison concentrates in the classes it targets: the worst class's flagged share is what moves.
        labels = data[1].cpu().numpy()
        per_class = {int(c): float(det.labels_[labels == c].mean()) for c in np.unique(labels)}
        worst = max(per_class, key=lambda c: per_class[c])
        flagged = per_class[worst]
        # a confirmed Spectre's threshold_ holds one cut per class, infinite where no trigger was confirmed
        cuts = np.atleast_1d(np.asarray(det.threshold_, dtype=float))
        confirmed = [int(c) for c in np.unique(labels) if np.isfinite(cuts[int(c)])]
        verdict = PASS if flagged <= limit else FAIL
        if confirmed:
            text = (f"Spectre confirms a trigger in class{'es' if len(confirmed) > 1 else ''} "
                    f"{', '.join(map(str, confirmed))}: it flags {pct(flagged)} of class {worst}'s training records "
                    f"({int(det.labels_.sum())} of {len(det.labels_)} overall)")
        else:
            text = (f"no class carries a trigger the overlay test confirms ({len(det.labels_)} records; "
                    "unusual but honest records are not counted)")
        return CheckOutcome("poisoning", verdict, text, figure=flagged, figure_text=f"{pct(flagged)} (class {worst})",
                            threshold=threshold,
                            details={"records": len(det.labels_), "flagged": int(det.labels_.sum()),
                                     "flagged_by_class": per_class, "confirmed_classes": confirmed,
                                     "detector": "Spectre (overlay-confirmed)", "max_fpr": det.max_fpr})

    def check_backdoor(self, model: Any, data: tuple[torch.Tensor, torch.Tensor] | None) -> CheckOutcome:
        rule = self.policy.backdoor
        if rule is None:
            return skipped("backdoor", "the policy turns it off (backdoor: null)")
        threshold = f"reach <= {rule.min_reach:g}"
        if self.ins.data is None:
            return skipped("backdoor", "no test data given (--data)", threshold)
        if data is None:
            return CheckOutcome("backdoor", ERROR, self.data_problem("data"), threshold=threshold)
        x = data[0]
        if x.dim() != 4:
            return skipped("backdoor", f"the audit reverses image triggers; the test inputs have shape "
                                       f"{tuple(x.shape[1:])}, not (channels, height, width)", threshold)
        from bastion.detect import NeuralCleanse

        self.tick("backdoor audit (Neural Cleanse)", 0.1, "backdoor")
        try:
            nc = NeuralCleanse(alpha=rule.alpha, min_reach=rule.min_reach, seed=self.ins.seed).fit(model, x)
        except InputError as exc:
            if exc.argument == "model":
                return skipped("backdoor", f"the audit needs a model with gradients and >= 4 classes ({exc})",
                               threshold)
            raise
        top = int(np.argmax(nc.reach_))
        reach = float(nc.reach_[top])
        details = {"target": nc.target_, "reach": [round(float(r), 4) for r in nc.reach_],
                   "windows": [list(w) for w in nc.windows_], "mask_norm_scores": [round(float(v), 3) for v in nc.scores_],
                   "mask_norm_threshold": round(nc.threshold_, 3), "examples": int(x.shape[0]),
                   "detector": "Neural Cleanse with the patch check"}
        if nc.is_backdoored_:
            k = top if nc.target_ is None else nc.target_
            row, col = nc.windows_[k]
            how = (f"a small patch at row {row}, column {col} sends a median {pct(float(nc.reach_[k]))} of other "
                   "classes' inputs there"
                   if nc.reach_[k] > rule.min_reach else
                   f"its reversed trigger is an outlier (mask-norm statistic {nc.scores_[k]:.2f} > {nc.threshold_:.2f})")
            return CheckOutcome("backdoor", FAIL, f"the model carries a backdoor to class {k}: {how}", figure=reach,
                                figure_text=f"{pct(reach)} (class {top})", threshold=threshold, details=details)
        return CheckOutcome("backdoor", PASS, f"no class is reached by a small patch from most others (broadest: class "
                            f"{top}, {pct(reach)}) and no reversed trigger is an outlier", figure=reach,
                            figure_text=f"{pct(reach)} (class {top})", threshold=threshold, details=details)

    # --- privacy: membership inference and extraction (bastion.privacy and its attacks) ------------------
    def members_path(self) -> Path | None:
        return self.ins.members or self.ins.train

    def non_members_path(self) -> Path | None:
        # Test data is by definition never trained on: the natural non-members when none are given.
        return self.ins.non_members or self.ins.data

    def check_membership(self, model: Any) -> CheckOutcome:
        limit = self.policy.mia_auc_max
        if limit is None:
            return skipped("membership_inference", "the policy turns it off (mia_auc: null)")
        threshold = f"AUC <= {limit:g}"
        mpath, npath = self.members_path(), self.non_members_path()
        if mpath is None or npath is None:
            return skipped("membership_inference", "needs training records (--members or --train) and records never "
                           "trained on (--non-members or --data)", threshold)
        members = self.load_labelled("members", mpath)
        if members is None:
            return CheckOutcome("membership_inference", ERROR, self.data_problem("members"), threshold=threshold)
        non_members = self.load_labelled("non_members", npath)
        if non_members is None:
            return CheckOutcome("membership_inference", ERROR, self.data_problem("non_members"), threshold=threshold)
        if members[0].shape[1:] != non_members[0].shape[1:]:
            raise InputError("--non-members" if self.ins.non_members else "--data",
                             f"inputs of shape {tuple(non_members[0].shape[1:])}",
                             f"the members' input shape {tuple(members[0].shape[1:])}")
        cap, shadows = MIA_BUDGETS[self.budget]
        # Equal numbers on both sides keep the AUC's noise symmetric; a seeded draw, not the file's first
        # records, so a file sorted by class is not attacked on one class only.
        n = min(members[0].shape[0], non_members[0].shape[0], *(() if cap is None else (cap,)))
        if n < 2:
            return CheckOutcome("membership_inference", ERROR, f"could not run: {n} record(s) on one side; membership "
                                "inference needs at least 2 members and 2 non-members", threshold=threshold)
        rng = np.random.default_rng(self.ins.seed)
        mi = torch.from_numpy(np.sort(rng.permutation(members[0].shape[0])[:n]))
        ni = torch.from_numpy(np.sort(rng.permutation(non_members[0].shape[0])[:n]))
        mem, non = (members[0][mi], members[1][mi]), (non_members[0][ni], non_members[1][ni])
        self.tick("membership inference", 0.1, "membership_inference")
        results = self._membership_attacks(model, mem, non, shadows)
        worst = max(results, key=lambda r: r["auc"])
        auc = float(worst["auc"])
        # Standard error of the AUC of a score that carries no membership signal (Hanley & McNeil 1982):
        # an AUC within a few of these of 0.5 is noise, not a leak.
        se = float(np.sqrt((2 * n + 1) / (12.0 * n * n)))
        details = {"members": n, "non_members": n, "members_from": str(mpath), "non_members_from": str(npath),
                   "shadow_models": shadows, "null_auc_standard_error": se, "strongest": worst["attack"],
                   "attacks": [{k: r[k] for k in ("attack", "auc", "advantage", "tpr_at_fpr", "queries") if k in r}
                               for r in results],
                   "roc": {r["attack"]: r.get("roc_curve", {}) for r in results}}
        which = ", ".join(r["attack"] for r in results)
        scope = "" if shadows else " (no shadow models at this budget: LiRA runs at --budget thorough)"
        text = f"AUC {auc:.3f}"
        what = (f"strongest attack {worst['attack']}: AUC {auc:.3f} on {n} members vs {n} non-members "
                f"(±{se:.3f} is noise); ran {which}{scope}")
        verdict = PASS if auc <= limit else FAIL
        return CheckOutcome("membership_inference", verdict, what, figure=auc, figure_text=text, threshold=threshold,
                            details=details)

    def _membership_attacks(self, model: Any, members: tuple[torch.Tensor, torch.Tensor],
                            non_members: tuple[torch.Tensor, torch.Tensor], shadows: int) -> list[dict[str, Any]]:
        from bastion.core.adapters import Capability

        if shadows:
            from bastion.privacy import audit

            rep = audit(model, members, non_members, attacks=["mia"], shadows=shadows, seed=self.ins.seed,
                        progress=lambda msg: self.tick(msg, 0.3, "membership_inference"))
            return list(rep.sections["mia"]["results"])
        from bastion.attacks.inference import ConfidenceThreshold, LabelOnlyAttack, LossThreshold

        attacks: list[Any] = [LossThreshold(), ConfidenceThreshold()] \
            if Capability.SCORES in model.capabilities else []
        # the label-only attack costs 1 + draws * 4 queries per record: fewer draws at the fast budget
        attacks.append(LabelOnlyAttack(draws=4 if self.budget == "fast" else 16, seed=self.ins.seed))
        return [a.run(model, members, non_members).to_dict() for a in attacks]

    def check_extraction(self, model: Any) -> CheckOutcome:
        rule = self.policy.extraction
        if rule is None:
            return skipped("extraction", "not asked for by the policy (extraction: null)")
        threshold = f"fidelity <= {rule.max_fidelity:g} after {rule.queries} queries"
        npath = self.non_members_path()
        if npath is None:
            return skipped("extraction", "needs records for the attacker to query with (--non-members or --data)",
                           threshold)
        pool = self.load_labelled("non_members", npath)
        if pool is None:
            return CheckOutcome("extraction", ERROR, self.data_problem("non_members"), threshold=threshold)
        if pool[0].shape[0] < 4:
            return CheckOutcome("extraction", ERROR, f"could not run: {npath} holds {pool[0].shape[0]} records; "
                                "extraction needs at least 4 (half to query, half to measure the copy)",
                                threshold=threshold)
        from bastion.privacy import audit

        self.tick("model extraction", 0.1, "extraction")
        # The audit's members are unused by extraction; the pool stands in to satisfy its input checks.
        rep = audit(model, pool, pool, attacks=["extraction"], budget=rule.queries, seed=self.ins.seed,
                    progress=lambda msg: self.tick(msg, 0.3, "extraction"))
        if "extraction" not in rep.sections:
            return CheckOutcome("extraction", ERROR, f"could not run: {rep.skipped.get('extraction', 'no copy made')}",
                                threshold=threshold)
        fid = rep.max_extraction_fidelity()
        section = rep.sections["extraction"]
        if fid is None:
            return CheckOutcome("extraction", ERROR, "could not run: no copy could be measured", threshold=threshold,
                                details=section)
        best = max(section["results"], key=lambda r: r.get("fidelity") or 0.0)
        transfer = section.get("transfer", {})
        tr = ""
        if "success_on_victim" in transfer:
            tr = (f"; adversarial examples crafted on the copy (linf {transfer['epsilon']:g}) fool the model on "
                  f"{pct(float(transfer['success_on_victim']))}")
        details = {"queries": rule.queries, "pool": str(npath), "attacks": section["results"], "transfer": transfer,
                   "skipped": rep.skipped, "note": section.get("note", "")}
        verdict = PASS if fid <= rule.max_fidelity else FAIL
        return CheckOutcome("extraction", verdict, f"{best.get('attack', 'the best copy')} agrees with the model on "
                            f"{pct(fid)} of held-out records after {rule.queries} queries{tr}", figure=fid,
                            figure_text=f"fidelity {pct(fid)}", threshold=threshold, details=details)
