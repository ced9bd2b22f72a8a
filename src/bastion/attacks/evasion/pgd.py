"""Projected gradient descent (placeholder: its owner replaces this module)."""

from __future__ import annotations

from bastion.attacks.evasion.base import FixedEpsilonAttack


class PGD(FixedEpsilonAttack):
    name = "PGD"
