"""Synthetic sequences: a textured room rendered by ray casting along an analytic loop, with depth, stereo and IMU.

Main entry points: :class:`SynthConfig` (+ :func:`preset`), :class:`SynthSequence` (in memory),
:func:`generate` (to disk, layouts native/tum/euroc/kitti; see docs/synthetic_layout.md).
"""

from slam.synth.config import PRESETS, SynthConfig, preset
from slam.synth.generate import LAYOUTS, generate
from slam.synth.imu import ImuData, ImuNoise, synthesize
from slam.synth.noise import DepthNoise, apply_depth_noise, apply_image_noise
from slam.synth.render import SyntheticScene
from slam.synth.sequence import SynthFrame, SynthSequence
from slam.synth.trajectory import BodyState, LoopTrajectory

__all__ = [
    "LAYOUTS",
    "PRESETS",
    "BodyState",
    "DepthNoise",
    "ImuData",
    "ImuNoise",
    "LoopTrajectory",
    "SynthConfig",
    "SynthFrame",
    "SynthSequence",
    "SyntheticScene",
    "apply_depth_noise",
    "apply_image_noise",
    "generate",
    "preset",
    "synthesize",
]
