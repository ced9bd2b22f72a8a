"""Data: the real data sets scikit-learn ships, and loaders for users' own files."""

from bastion.datasets.bundled import Dataset, breast_cancer, digits, wine
from bastion.datasets.files import load_data

__all__ = ["Dataset", "breast_cancer", "digits", "load_data", "wine"]
