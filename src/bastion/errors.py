"""Errors Bastion raises for user mistakes.

Every message names the argument, what was given and what was expected, so the CLI can print it as is
(exit code 2) and a library user can act on it without reading a traceback.
"""

from __future__ import annotations

from typing import Any


class BastionError(Exception):
    """Base class for every error Bastion raises on purpose."""


class InputError(BastionError, ValueError):
    """An argument has the wrong value, shape, type or range."""

    def __init__(self, argument: str, given: Any, expected: str) -> None:
        self.argument = argument
        self.given = given
        self.expected = expected
        super().__init__(f"{argument}: got {given}, expected {expected}")


class CapabilityError(BastionError, TypeError):
    """A model cannot give what an attack or defence needs (e.g. gradients from a scikit-learn model)."""

    def __init__(self, needed: str, by: str, model: str, offers: str) -> None:
        self.needed = needed
        super().__init__(
            f"{by} needs {needed}, but the model ({model}) offers only {offers}; "
            f"choose an attack that works with {offers}"
        )


class ModelLoadError(BastionError):
    """A model file could not be loaded, or loading it would be unsafe."""


class DataLoadError(BastionError):
    """A data file could not be read into inputs and labels."""
