"""``--set SECTION.KEY=VALUE`` with a wrong key lists the valid ones, the closest first."""

from __future__ import annotations

import dataclasses

import pytest

from slam.backbone.config import SlamConfig, TrackingConfig
from slam.errors import DataError


def test_unknown_key_lists_valid_keys_closest_first():
    with pytest.raises(DataError) as e:
        SlamConfig().override(["tracking.kf_max_frame=10"])
    msg = str(e.value)
    assert "unknown setting TrackingConfig.kf_max_frame; did you mean kf_max_frames?" in msg
    valid = msg.split("valid keys: ", 1)[1].split(", ")
    assert valid[0] == "kf_max_frames"
    assert sorted(valid) == sorted(f.name for f in dataclasses.fields(TrackingConfig))


def test_a_key_like_none_still_lists_every_key():
    with pytest.raises(DataError) as e:
        SlamConfig().override(["tracking.no_such_key=1"])
    msg = str(e.value)
    assert "did you mean" not in msg and "valid keys: " in msg and "kf_max_frames" in msg
