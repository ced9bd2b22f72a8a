"""Which attacks an evaluation runs, in which order, with which budgets.

The ensemble follows standard AutoAttack (Croce & Hein, ICML 2020): APGD with cross-entropy, targeted
APGD with the DLR loss, a targeted minimum-norm attack (FAB-T), then the score-based Square attack. Cheap,
strong attacks run first so that the expensive ones only see the few examples still standing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bastion.attacks.evasion.base import Attack
from bastion.core.adapters import Capability
from bastion.errors import InputError

#: AutoAttack's targeted attacks use the 9 most likely wrong classes (or C-1 when there are fewer)
AUTOATTACK_TARGETS = 9


@dataclass(frozen=True)
class AttackSpec:
    """One attack of a suite: its report name, family, and how to build it for a norm and seed."""

    name: str
    family: str  # "white-box" or "black-box"
    needs: Capability
    build: Callable[[str, int, int | None, int], Attack]  # (norm, seed, batch_size, num_classes) -> attack
    norms: tuple[str, ...] = ("linf", "l2", "l1")


def _targets(num_classes: int, wanted: int = AUTOATTACK_TARGETS) -> int:
    return max(1, min(wanted, num_classes - 1))


def _apgd(loss: str, steps: int, targets: int = 0, restarts: int = 1) -> Callable[[str, int, int | None, int], Attack]:
    def build(norm: str, seed: int, batch_size: int | None, num_classes: int) -> Attack:
        from bastion.attacks.evasion import APGD

        k = _targets(num_classes, targets) if targets else 0
        return APGD(norm=norm, loss=loss, steps=steps, restarts=restarts, n_target_classes=k, seed=seed,
                    batch_size=batch_size)

    return build


def _fab(steps: int, targets: int) -> Callable[[str, int, int | None, int], Attack]:
    def build(norm: str, seed: int, batch_size: int | None, num_classes: int) -> Attack:
        from bastion.attacks.evasion import FAB

        # The minimum-norm search, not FABAtEpsilon: the evaluator keeps its result for every larger epsilon,
        # so FAB-T runs once per example however many epsilons are asked. Stopping at the radius saves little
        # here (what reaches FAB-T has withstood APGD-T, so few examples stop early), while every further
        # epsilon would cost a whole new search.
        kw: dict[str, Any] = {"steps": steps, "restarts": 1, "n_target_classes": _targets(num_classes, targets)}
        return FAB(norm=norm, seed=seed, batch_size=batch_size, **kw)

    return build


def _square(queries: int) -> Callable[[str, int, int | None, int], Attack]:
    def build(norm: str, seed: int, batch_size: int | None, num_classes: int) -> Attack:
        from bastion.attacks.evasion import Square

        return Square(norm=norm, queries=queries, seed=seed, batch_size=batch_size)

    return build


_WB = Capability.GRADIENTS
_SC = Capability.SCORES

#: Budgets. ``autoattack`` is standard AutoAttack's composition at its published budgets (100 APGD steps,
#: FAB-T, Square with 5000 queries), for numbers comparable with papers. ``standard``, the default, keeps its
#: structure (APGD-CE, then APGD-T on the 9 most likely wrong classes, then a black-box check) at budgets that
#: lost no strength where we measured: PGD-AT digits CNN, all 450 test digits, L-inf 0.1 to 0.3, ``standard``
#: at or below torchattacks' standard AutoAttack at every epsilon (e.g. 18.9 % vs 19.3 % at 0.2, 4.7 % vs
#: 5.6 % at 0.25) in 1/5 to 1/7 of its CPU time (bench/evaluate.py). Early exit of broken examples is what
#: makes fewer steps enough: each example keeps being attacked only while it stands. FAB-T broke nothing
#: APGD-T had not; Square's 5000 queries on the survivors are most of AutoAttack's time. ``fast`` is for
#: screening (CI smoke checks, hyper-parameter sweeps), not for claims.
SUITES: dict[str, tuple[AttackSpec, ...]] = {
    "fast": (
        AttackSpec("APGD-CE", "white-box", _WB, _apgd("ce", 10)),
        AttackSpec("APGD-T", "white-box", _WB, _apgd("dlr", 10, targets=3)),
        AttackSpec("Square", "black-box", _SC, _square(200), ("linf", "l2")),
    ),
    "standard": (
        AttackSpec("APGD-CE", "white-box", _WB, _apgd("ce", 20)),
        AttackSpec("APGD-T", "white-box", _WB, _apgd("dlr", 20, targets=AUTOATTACK_TARGETS)),
        AttackSpec("Square", "black-box", _SC, _square(500), ("linf", "l2")),
    ),
    "autoattack": (
        AttackSpec("APGD-CE", "white-box", _WB, _apgd("ce", 100)),
        AttackSpec("APGD-T", "white-box", _WB, _apgd("dlr", 100, targets=AUTOATTACK_TARGETS)),
        AttackSpec("FAB-T", "white-box", _WB, _fab(100, AUTOATTACK_TARGETS)),
        AttackSpec("Square", "black-box", _SC, _square(5000), ("linf", "l2")),
    ),
    "thorough": (
        AttackSpec("APGD-CE", "white-box", _WB, _apgd("ce", 100, restarts=3)),
        AttackSpec("APGD-DLR", "white-box", _WB, _apgd("dlr", 100, restarts=3)),
        AttackSpec("APGD-T", "white-box", _WB, _apgd("dlr", 100, targets=AUTOATTACK_TARGETS)),
        AttackSpec("FAB-T", "white-box", _WB, _fab(100, AUTOATTACK_TARGETS)),
        AttackSpec("Square", "black-box", _SC, _square(10000), ("linf", "l2")),
    ),
}

#: names accepted by ``bastion attack --attack`` and in a suite given as a list of strings
ATTACK_NAMES = ("fgsm", "pgd", "apgd", "apgd-t", "fab", "cw", "deepfool", "square", "hsj")

#: how each short name appears in reports
DISPLAY_NAMES = {"fgsm": "FGSM", "pgd": "PGD", "apgd": "APGD-CE", "apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR",
                 "apgd-t": "APGD-T", "fab": "FAB", "fab-t": "FAB-T", "cw": "CW-L2", "deepfool": "DeepFool",
                 "square": "Square", "hsj": "HopSkipJump", "hopskipjump": "HopSkipJump"}


def build_attack(name: str, norm: str, *, steps: int | None = None, seed: int = 0, batch_size: int | None = None,
                 num_classes: int = 10, queries: int | None = None) -> Attack:
    """Build one attack by its short name (``pgd``, ``apgd-t``, ``square``, ...) with sensible budgets."""
    from bastion.attacks import evasion as ev

    key = name.strip().lower().replace("_", "-")
    kw: dict[str, Any] = {"seed": seed, "batch_size": batch_size}
    if key == "fgsm":
        return ev.FGSM(norm=norm, **kw)
    if key == "pgd":
        return ev.PGD(norm=norm, steps=steps or 20, **kw)
    if key in ("apgd", "apgd-ce"):
        return ev.APGD(norm=norm, loss="ce", steps=steps or 100, **kw)
    if key == "apgd-dlr":
        return ev.APGD(norm=norm, loss="dlr", steps=steps or 100, **kw)
    if key == "apgd-t":
        return ev.APGD(norm=norm, loss="dlr", steps=steps or 100, n_target_classes=_targets(num_classes), **kw)
    # Minimum-norm attacks: their budgets are passed by keyword so each keeps its own defaults.
    if steps:
        kw["steps"] = steps
    if key in ("fab", "fab-t"):
        kw["n_target_classes"] = _targets(num_classes) if key == "fab-t" else 0
        return ev.FAB(norm=norm, **kw)
    if key == "cw":
        if norm != "l2":
            raise InputError("norm", norm, "'l2' for the Carlini-Wagner L2 attack")
        return ev.CarliniWagnerL2(**kw)
    if key == "deepfool":
        return ev.DeepFool(norm=norm, **kw)
    kw.pop("steps", None)
    if key == "square":
        return ev.Square(norm=norm, queries=queries or steps or 5000, **kw)
    if key in ("hsj", "hopskipjump"):
        return ev.HopSkipJump(norm=norm, queries=queries or steps or 5000, **kw)
    raise InputError("attack", repr(name), f"one of {', '.join(ATTACK_NAMES)}")


def resolve_suite(suite: str | Sequence[Attack | str], norm: str) -> list[AttackSpec]:
    """Turn a suite name or a list of attacks/attack names into the specs the evaluator runs."""
    if isinstance(suite, str):
        key = suite.strip().lower()
        if key not in SUITES:
            raise InputError("suite", repr(suite), f"one of {', '.join(SUITES)} or a list of attacks")
        return list(SUITES[key])
    specs: list[AttackSpec] = []
    if not suite:
        raise InputError("suite", "an empty list", "at least one attack")
    for item in suite:
        if isinstance(item, Attack):
            specs.append(_instance_spec(item))
        elif isinstance(item, str):
            specs.append(_named_spec(item))
        else:
            raise InputError("suite", type(item).__name__, "attack instances or attack names")
    return specs


def _instance_spec(attack: Attack) -> AttackSpec:
    family = "white-box" if Capability.GRADIENTS in attack.needs else "black-box"
    return AttackSpec(attack.name, family, attack.needs, lambda norm, seed, bs, nc: attack,
                      tuple(attack.supported_norms))


def _named_spec(name: str) -> AttackSpec:
    key = name.strip().lower().replace("_", "-")
    if key not in (*ATTACK_NAMES, "apgd-ce", "apgd-dlr", "fab-t", "hopskipjump"):
        raise InputError("suite", repr(name), f"attack names among {', '.join(ATTACK_NAMES)}")
    needs = {"square": _SC, "hsj": Capability.LABELS, "hopskipjump": Capability.LABELS}.get(key, _WB)
    family = "white-box" if needs == _WB else "black-box"

    def build(norm: str, seed: int, batch_size: int | None, num_classes: int) -> Attack:
        return build_attack(key, norm, seed=seed, batch_size=batch_size, num_classes=num_classes)

    return AttackSpec(DISPLAY_NAMES.get(key, name), family, needs, build)
