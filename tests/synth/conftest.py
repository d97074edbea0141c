"""Shared fixtures: one textured scene for the `tiny` preset (building textures takes ~2 s)."""

from __future__ import annotations

import dataclasses

import pytest

from slam.synth import SynthConfig, SyntheticScene, SynthSequence, preset


def tiny(**overrides) -> SynthConfig:
    """The `tiny` preset with overrides."""
    return dataclasses.replace(preset("tiny"), **overrides)


@pytest.fixture(scope="session")
def tiny_scene() -> SyntheticScene:
    c = preset("tiny")
    return SyntheticScene(c.seed, c.texels_per_m, c.shape_density)


@pytest.fixture(scope="session")
def clean_seq(tiny_scene) -> SynthSequence:
    """The tiny sequence without any noise (exact depth, clean images, perfect IMU)."""
    return SynthSequence(tiny(noise=False), scene=tiny_scene)


@pytest.fixture(scope="session")
def noisy_seq(tiny_scene) -> SynthSequence:
    return SynthSequence(tiny(), scene=tiny_scene)
