"""SlamConfig: YAML and command-line overrides, with clear errors for unknown or ill-typed settings."""

from __future__ import annotations

import pytest

from slam.backbone.config import SlamConfig
from slam.errors import DataError


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("features: {n_features: 1500}\nmapping: {local_ba_backend: g2o, local_ba_iterations: [3, 4]}\n")
    cfg = SlamConfig.from_yaml(path).override(["tracking.kf_max_frames=10", "mapping.local_ba_backend=native"])
    assert cfg.features.n_features == 1500
    assert cfg.tracking.kf_max_frames == 10
    assert cfg.mapping.local_ba_iterations == (3, 4)
    assert cfg.mapping.local_ba_backend == "native"


@pytest.mark.parametrize(
    "text, message",
    [
        ("mapping: {local_ba_backend: ceres}", "local_ba_backend must be one of native, g2o"),
        ("tracking: {kf_max_frame: 3}", "unknown setting TrackingConfig.kf_max_frame"),
        ("tracking: {kf_max_frames: often}", "must be a number"),
        ("loops: {}", "unknown config section"),
    ],
)
def test_bad_settings_name_the_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text + "\n")
    with pytest.raises(DataError, match=message) as e:
        SlamConfig.from_yaml(path)
    assert "bad.yaml" in str(e.value)
