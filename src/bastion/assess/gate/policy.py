"""The assessment policy: which checks gate a release, and at which thresholds (a small YAML file).

    policy = Policy.from_file("policy.yaml")   # or Policy.default(), Policy.demo()
    policy.robust_accuracy.min                 # 0.5

Every key is optional; a missing section keeps its default, ``null`` turns an optional check off. Unknown
keys and wrong types are errors (a typo in a gate must not silently loosen it).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bastion.errors import InputError
from bastion.scan import Severity

NORMS = ("linf", "l2", "l1")
SIGNATURE_MODES = ("required", "optional", "off")

#: what ``bastion assess --init-policy`` writes: every key, its default and what it means
TEMPLATE = """\
# Bastion assessment policy: `bastion assess --model M --data D --policy this-file`.
# Exit codes: 0 every check that ran passed, 1 a check failed, 2 a check could not run.
# Delete a section to keep its default; set an optional check to null to turn it off.
version: 1

# Static scan of the model file (never loads it). Fails on a finding at least this severe:
# info | low | medium | high | critical. A failed scan also stops the model from being loaded.
scan:
  fail_on: high

# Signed manifest of the model's folder (`bastion sign`), checked with --pub KEY.
# required: fail without a valid signature | optional: check when --pub is given | off
signature: optional

# Accuracy on the clean test data (--data), as a fraction.
clean_accuracy:
  min: 0.9

# Robust accuracy under an ensemble of attacks (white-box when the model has gradients,
# black-box otherwise) at one budget eps of the norm linf | l2 | l1, in input units.
# A black-box-only figure is an upper bound: it passes only with allow_upper_bound: true.
# A HIGH gradient-masking finding makes the figure untrustworthy: it fails unless allow_masking: true.
robust_accuracy:
  norm: linf
  eps: 0.1
  min: 0.5
  allow_upper_bound: false
  allow_masking: false

# Certified accuracy by randomized smoothing (L2 radius, Cohen et al. 2019). Off unless given, e.g.
# certified_accuracy: {sigma: 0.25, radius: 0.25, min: 0.3, n: 1000, alpha: 0.001}
certified_accuracy: null

# Poisoning audit of the training data (--train): largest fraction of any one class's records that
# Spectre flags as poison, counted only in classes an overlay test confirms carry a trigger (a patch keeps
# its label when overlaid on other records; an honest rare digit does not). Measured on digits: clean
# training sets 0 % in every class; BadNets at 1 % poison 8.9 % of the target class, at 5 % 34 %.
# Triggers an overlay destroys (blended, clean-label) are not confirmed and pass.
poisoning:
  max_flagged: 0.02

# Backdoor audit of the model itself, from the test data (--data, images) with no training data: Neural
# Cleanse reverses a trigger per class, and a patch check asks whether a small window (a quarter of the
# image side) sends more than `min_reach` of the inputs of most other classes to one class (median over
# source classes). Measured on digits CNNs: BadNets 1 % targets 0.58-1.00, clean models' classes <= 0.40.
# `alpha` is the false-alarm rate of the mask-norm test. Off unless given, e.g.
# backdoor: {min_reach: 0.5, alpha: 0.001}
backdoor: null

# Membership inference: AUC of the strongest attack telling training records (--members, or --train)
# from records never trained on (--non-members, or --data), 0.5 = no leak. The fast and standard budgets
# run the loss, confidence and label-only attacks; LiRA and Shokri's shadow models run at --budget thorough.
mia_auc:
  max: 0.6

# Model extraction through the prediction API: agreement (fidelity) of a copy trained from `queries`
# answers with the model on held-out records (the attacker's pool is --non-members, or --data).
# Off unless given (any model that returns scores can be copied well enough with enough queries), e.g.
# extraction: {max_fidelity: 0.9, queries: 500}
extraction: null
"""

#: the README's demo policy: the plain demo CNN fails its robustness gate, an adversarially trained one passes
DEMO = """\
# Demo policy: the digits CNN of `bastion demo` fails the robustness gate; `bastion harden` makes one that passes.
version: 1
scan: {fail_on: high}
signature: optional
clean_accuracy: {min: 0.85}
robust_accuracy: {norm: linf, eps: 0.1, min: 0.7}
"""


@dataclass(frozen=True)
class RobustRule:
    norm: str = "linf"
    eps: float = 0.1
    min: float = 0.5
    allow_upper_bound: bool = False
    allow_masking: bool = False


@dataclass(frozen=True)
class CertifyRule:
    sigma: float = 0.25
    radius: float = 0.25
    min: float = 0.3
    n: int = 1000
    n0: int = 100
    alpha: float = 0.001


@dataclass(frozen=True)
class BackdoorRule:
    min_reach: float = 0.5
    alpha: float = 0.001


@dataclass(frozen=True)
class ExtractionRule:
    max_fidelity: float = 0.9
    queries: int = 500


@dataclass(frozen=True)
class Policy:
    """Thresholds of every check; ``None`` turns an optional check off."""

    scan_fail_on: Severity = Severity.HIGH
    signature: str = "optional"
    clean_accuracy_min: float | None = 0.9
    robust_accuracy: RobustRule | None = field(default_factory=RobustRule)
    certified_accuracy: CertifyRule | None = None
    poisoning_max_flagged: float | None = 0.02
    backdoor: BackdoorRule | None = None
    mia_auc_max: float | None = 0.6
    extraction: ExtractionRule | None = None
    source: str = "built-in defaults"
    sha256: str = ""

    @classmethod
    def default(cls) -> Policy:
        return cls.from_text(TEMPLATE, "built-in defaults")

    @classmethod
    def demo(cls) -> Policy:
        return cls.from_text(DEMO, "built-in demo policy")

    @classmethod
    def from_file(cls, path: str | Path) -> Policy:
        p = Path(path)
        if p.is_dir():
            raise InputError("--policy", f"{p}, a folder", "a YAML policy file (bastion assess --init-policy FILE)")
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError("--policy", f"{p}, which does not exist",
                             "a YAML policy file (write one with bastion assess --init-policy FILE)") from None
        except UnicodeDecodeError:
            raise InputError("--policy", f"{p}, not UTF-8 text", "a YAML policy file") from None
        return cls.from_text(text, str(p))

    @classmethod
    def from_text(cls, text: str, source: str = "<text>") -> Policy:
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise InputError("--policy", f"{source}: invalid YAML{where}", "a YAML mapping of checks") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise InputError("--policy", f"{source}: a YAML {type(raw).__name__}", "a mapping such as 'scan: ...'")
        return _parse(raw, source, hashlib.sha256(text.encode()).hexdigest())

    def to_dict(self) -> dict[str, Any]:
        rob = self.robust_accuracy
        cert = self.certified_accuracy
        return {
            "source": self.source, "sha256": self.sha256,
            "scan": {"fail_on": self.scan_fail_on.name.lower()},
            "signature": self.signature,
            "clean_accuracy": None if self.clean_accuracy_min is None else {"min": self.clean_accuracy_min},
            "robust_accuracy": None if rob is None else dict(rob.__dict__),
            "certified_accuracy": None if cert is None else dict(cert.__dict__),
            "poisoning": None if self.poisoning_max_flagged is None else {"max_flagged": self.poisoning_max_flagged},
            "backdoor": None if self.backdoor is None else dict(self.backdoor.__dict__),
            "mia_auc": None if self.mia_auc_max is None else {"max": self.mia_auc_max},
            "extraction": None if self.extraction is None else dict(self.extraction.__dict__),
        }


_TOP = ("version", "scan", "signature", "clean_accuracy", "robust_accuracy", "certified_accuracy", "poisoning",
        "backdoor", "mia_auc", "extraction")


def _parse(raw: dict[Any, Any], source: str, digest: str) -> Policy:
    def where(key: str) -> str:
        return f"{source}: {key}"

    unknown = [str(k) for k in raw if k not in _TOP]
    if unknown:
        raise InputError("--policy", f"{source}: unknown key(s) {', '.join(unknown)}", f"keys among {', '.join(_TOP)}")
    if raw.get("version", 1) != 1:
        raise InputError("--policy", f"{where('version')} = {raw.get('version')!r}", "1")
    d = Policy()
    scan = _section(raw, "scan", source, ("fail_on",))
    fail_on = d.scan_fail_on if scan is None else Severity.parse(scan.get("fail_on", "high"), where("scan.fail_on"))
    signature = raw.get("signature", d.signature)
    if signature is None:
        signature = "off"
    if signature not in SIGNATURE_MODES:
        raise InputError("--policy", f"{where('signature')} = {signature!r}", f"one of {', '.join(SIGNATURE_MODES)}")
    clean = _section(raw, "clean_accuracy", source, ("min",), d.clean_accuracy_min is not None)
    rob = _section(raw, "robust_accuracy", source, tuple(RobustRule.__dataclass_fields__), True)
    cert = _section(raw, "certified_accuracy", source, tuple(CertifyRule.__dataclass_fields__), False)
    poison = _section(raw, "poisoning", source, ("max_flagged",), True)
    back = _section(raw, "backdoor", source, tuple(BackdoorRule.__dataclass_fields__), False)
    mia = _section(raw, "mia_auc", source, ("max",), True)
    ext = _section(raw, "extraction", source, tuple(ExtractionRule.__dataclass_fields__), False)

    robust: RobustRule | None = None
    if rob is not None:
        norm = rob.get("norm", "linf")
        if norm not in NORMS:
            raise InputError("--policy", f"{where('robust_accuracy.norm')} = {norm!r}", f"one of {', '.join(NORMS)}")
        robust = RobustRule(norm=norm, eps=_number(rob, "eps", 0.1, source, "robust_accuracy", positive=True),
                            min=_fraction(rob, "min", 0.5, source, "robust_accuracy"),
                            allow_upper_bound=_flag(rob, "allow_upper_bound", source, "robust_accuracy"),
                            allow_masking=_flag(rob, "allow_masking", source, "robust_accuracy"))
    certify: CertifyRule | None = None
    if cert is not None:
        c = CertifyRule()
        certify = CertifyRule(sigma=_number(cert, "sigma", c.sigma, source, "certified_accuracy", positive=True),
                              radius=_number(cert, "radius", c.radius, source, "certified_accuracy"),
                              min=_fraction(cert, "min", c.min, source, "certified_accuracy"),
                              n=_count(cert, "n", c.n, source), n0=_count(cert, "n0", c.n0, source),
                              alpha=_fraction(cert, "alpha", c.alpha, source, "certified_accuracy"))
    backdoor: BackdoorRule | None = None
    if back is not None:
        b = BackdoorRule()
        backdoor = BackdoorRule(min_reach=_fraction(back, "min_reach", b.min_reach, source, "backdoor", positive=True),
                                alpha=_fraction(back, "alpha", b.alpha, source, "backdoor", positive=True))
        if backdoor.alpha == 1.0:  # a false-alarm rate of 1 flags every model
            raise InputError("--policy", f"{source}: backdoor.alpha = {backdoor.alpha!r}", "a false-alarm rate below 1")
    extraction: ExtractionRule | None = None
    if ext is not None:
        e = ExtractionRule()
        queries = _count(ext, "queries", e.queries, source, "extraction")
        if queries < 10:
            # fewer answers than this leave the copy nothing to learn from (the audit refuses them too)
            raise InputError("--policy", f"{source}: extraction.queries = {queries}", "a whole number >= 10")
        extraction = ExtractionRule(max_fidelity=_fraction(ext, "max_fidelity", e.max_fidelity, source, "extraction"),
                                    queries=queries)
    return Policy(
        scan_fail_on=fail_on, signature=signature,
        clean_accuracy_min=None if clean is None else _fraction(clean, "min", 0.9, source, "clean_accuracy"),
        robust_accuracy=robust, certified_accuracy=certify,
        poisoning_max_flagged=None if poison is None else _fraction(poison, "max_flagged", 0.02, source, "poisoning"),
        backdoor=backdoor,
        mia_auc_max=None if mia is None else _fraction(mia, "max", 0.6, source, "mia_auc"),
        extraction=extraction,
        source=source, sha256=digest)


def _section(raw: dict[Any, Any], key: str, source: str, allowed: tuple[str, ...],
             default_on: bool = True) -> dict[str, Any] | None:
    """The mapping under ``key``: {} when absent and on by default, None when set to null or absent and off."""
    if key not in raw:
        return {} if default_on else None
    value = raw[key]
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InputError("--policy", f"{source}: {key} = {value!r}", f"a mapping with keys among {', '.join(allowed)}")
    extra = [str(k) for k in value if k not in allowed]
    if extra:
        raise InputError("--policy", f"{source}: unknown key(s) {', '.join(extra)} in {key}",
                         f"keys among {', '.join(allowed)}")
    return value


def _number(sec: dict[str, Any], key: str, default: float, source: str, name: str, positive: bool = False) -> float:
    value = sec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 \
            or (positive and value == 0):
        raise InputError("--policy", f"{source}: {name}.{key} = {value!r}",
                         "a positive number" if positive else "a number >= 0")
    return float(value)


def _fraction(sec: dict[str, Any], key: str, default: float, source: str, name: str, positive: bool = False) -> float:
    value = _number(sec, key, default, source, name, positive)
    if value > 1:
        raise InputError("--policy", f"{source}: {name}.{key} = {value!r}", "a fraction in [0, 1], e.g. 0.5")
    return value


def _count(sec: dict[str, Any], key: str, default: int, source: str, name: str = "certified_accuracy") -> int:
    value = sec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError("--policy", f"{source}: {name}.{key} = {value!r}", "a positive whole number")
    return value


def _flag(sec: dict[str, Any], key: str, source: str, name: str) -> bool:
    value = sec.get(key, False)
    if not isinstance(value, bool):
        raise InputError("--policy", f"{source}: {name}.{key} = {value!r}", "true or false")
    return value
