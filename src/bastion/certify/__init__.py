"""Certification (placeholder: its owner replaces this module)."""
