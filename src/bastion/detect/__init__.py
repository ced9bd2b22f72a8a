"""Detectors: inputs, clients and data sets that look like an attack."""
