"""Models for the server tests only (loaded by the server as ``tests.nets.toy_models:Class``)."""

from __future__ import annotations

import numpy as np

from nets.base import BaseModel


class BrightnessDepth(BaseModel):
    """'Depth' = mean brightness / 255 per pixel: a fixed function, so answers can be checked exactly."""

    name = "brightness_depth"
    task = "depth"
    version = "test-1"
    default_conf = {"scale": 1.0}
    required_inputs = ("image",)

    def infer(self, batch):
        return [{"depth": (self.conf["scale"] * r["image"].mean(axis=2) / 255.0).astype(np.float32)} for r in batch]


class Broken(BaseModel):
    name = "broken"
    task = "descriptor"
    required_inputs = ("image",)

    def infer(self, batch):
        raise RuntimeError("out of GPU memory")
