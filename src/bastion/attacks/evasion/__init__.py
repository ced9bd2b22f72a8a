"""Evasion attacks (MITRE ATLAS AML.T0043, craft adversarial data)."""

from bastion.attacks.evasion.base import (
    Attack,
    AttackResult,
    FixedEpsilonAttack,
    MinimizationAttack,
    autocast,
    is_adversarial,
)

__all__ = ["Attack", "AttackResult", "FixedEpsilonAttack", "MinimizationAttack", "autocast", "is_adversarial"]
