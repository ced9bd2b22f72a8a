"""Adversarial patch (placeholder: its owner replaces this module)."""

from __future__ import annotations


class AdversarialPatch:
    name = "AdversarialPatch"
