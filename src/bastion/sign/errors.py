"""Errors the signing package raises when it cannot do its job (the CLI turns them into exit code 2).

A model that fails verification is not an error: :func:`bastion.sign.verify_model` returns a
:class:`~bastion.sign.VerifyResult` with ``ok=False``. These errors are for inputs that stop the check
from running at all: a missing folder, an unreadable key, a signature file that is not one.
"""

from __future__ import annotations

from bastion.errors import BastionError


class SigningError(BastionError):
    """Base class for the signing package's errors."""


class KeyFileError(SigningError):
    """A key file is missing, unreadable, of the wrong kind, or locked with a password we do not have."""


class SignatureFormatError(SigningError):
    """A signature file is not a DSSE envelope (or Sigstore bundle) that Bastion can read."""


class ManifestError(SigningError):
    """A model folder cannot be turned into a manifest (symlink escaping it, special file, bad option)."""
