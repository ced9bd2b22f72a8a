"""Carlini-Wagner L2 (placeholder: its owner replaces this module)."""

from __future__ import annotations

from bastion.attacks.evasion.base import MinimizationAttack


class CarliniWagnerL2(MinimizationAttack):
    name = "CarliniWagnerL2"
