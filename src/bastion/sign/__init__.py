"""Signing and integrity (placeholder: its owner replaces this module)."""
