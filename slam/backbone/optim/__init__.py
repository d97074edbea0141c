"""Optimisation: motion-only pose optimisation and local bundle adjustment (compiled kernels; g2o as reference)."""
