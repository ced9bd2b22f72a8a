"""Hardening (placeholder: its owner replaces this module)."""
