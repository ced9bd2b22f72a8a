"""DeepFool (placeholder: its owner replaces this module)."""

from __future__ import annotations

from bastion.attacks.evasion.base import MinimizationAttack


class DeepFool(MinimizationAttack):
    name = "DeepFool"
