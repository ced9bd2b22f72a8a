"""Model-file scanning (placeholder: its owner replaces this module)."""
