"""Inference attacks on a model's training data: membership, inversion and attribute inference."""
