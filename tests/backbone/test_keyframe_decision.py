"""The keyframe decision (ORB-SLAM's NeedNewKeyFrame), one condition at a time."""

from __future__ import annotations

import dataclasses

import pytest

from slam.backbone.config import TrackingConfig
from slam.backbone.frontend.keyframe_decision import KeyframeEvidence, decide_keyframe, need_new_keyframe

TC = TrackingConfig(kf_max_frames=30, kf_min_frames=2, kf_tracked_ratio=0.5, kf_tracked_ratio_mono=0.9)

# Stereo/RGB-D frame 10 frames after the last keyframe, tracking 40% of the reference keyframe's
# 500 points (c2 holds at ratio 0.5), local mapping busy (no c1b), no close-point shortage.
BASE = KeyframeEvidence(frames_since_kf=10, n_tracked=200, ref_tracked=500, n_close_tracked=300,
                        n_close_untracked=10, mapper_accepts=True, mapper_idle=False, mono=False)


def ev(**changes) -> KeyframeEvidence:
    return dataclasses.replace(BASE, **changes)


def test_base_case_needs_a_trigger():
    d = decide_keyframe(BASE, TC)
    assert (d.c1a, d.c1b, d.c1c, d.c2) == (False, False, False, True)
    assert not d.wanted and not d.insert


def test_c1a_max_frames_since_the_last_keyframe():
    assert decide_keyframe(ev(frames_since_kf=29), TC).c1a is False
    d = decide_keyframe(ev(frames_since_kf=30), TC)
    assert d.c1a and d.insert


def test_c1b_min_frames_and_idle_mapper():
    assert decide_keyframe(ev(mapper_idle=True), TC).insert
    assert not decide_keyframe(ev(mapper_idle=True, frames_since_kf=1), TC).c1b  # too soon
    assert not decide_keyframe(ev(mapper_idle=False), TC).c1b


def test_c1c_weak_tracking_or_close_points_needed_stereo_only():
    weak = ev(n_tracked=100)  # 100 < 0.25 * 500
    assert decide_keyframe(weak, TC).c1c and need_new_keyframe(weak, TC)
    assert not decide_keyframe(ev(n_tracked=125), TC).c1c  # exactly a quarter: not weak
    close = ev(n_close_tracked=99, n_close_untracked=71)
    d = decide_keyframe(close, TC)
    assert d.c1c and d.c2 and d.insert
    assert not decide_keyframe(ev(n_close_tracked=100, n_close_untracked=71), TC).c1c
    assert not decide_keyframe(ev(n_close_tracked=99, n_close_untracked=70), TC).c1c
    # monocular: neither weak tracking nor close points trigger a keyframe
    assert not decide_keyframe(dataclasses.replace(weak, mono=True), TC).c1c
    assert not decide_keyframe(dataclasses.replace(close, mono=True, n_tracked=480), TC).c1c


def test_c2_tracked_share_and_minimum():
    assert not decide_keyframe(ev(frames_since_kf=30, n_tracked=250), TC).insert  # half: not below
    assert decide_keyframe(ev(frames_since_kf=30, n_tracked=249), TC).insert
    # close points needed make c2 true whatever the share ...
    assert decide_keyframe(ev(frames_since_kf=30, n_tracked=400, n_close_tracked=50, n_close_untracked=80), TC).c2
    # ... but a frame tracking 15 points or fewer never becomes a keyframe
    assert not decide_keyframe(ev(frames_since_kf=30, n_tracked=15, n_close_tracked=0, n_close_untracked=80), TC).c2
    assert decide_keyframe(ev(frames_since_kf=30, n_tracked=16, ref_tracked=500), TC).c2


def test_monocular_uses_its_own_ratio():
    mono = ev(mono=True, frames_since_kf=30, n_tracked=440)  # 0.88 of 500: below 0.9, above 0.5
    assert decide_keyframe(mono, TC).insert
    assert not decide_keyframe(dataclasses.replace(mono, n_tracked=450), TC).insert
    assert not decide_keyframe(dataclasses.replace(mono, mono=False), TC).insert


@pytest.mark.parametrize("trigger", [dict(frames_since_kf=30), dict(mapper_idle=True), dict(n_tracked=100)])
def test_a_mapper_that_does_not_accept_gets_no_keyframe(trigger):
    """Decided before creating: a keyframe local mapping would refuse is never made."""
    d = decide_keyframe(ev(mapper_accepts=False, **trigger), TC)
    assert d.wanted and not d.insert
    assert not need_new_keyframe(ev(mapper_accepts=False, **trigger), TC)


def test_thresholds_come_from_the_config():
    """The close-point, weak-tracking and minimum-tracked thresholds are TrackingConfig settings, not constants."""
    weak = ev(n_tracked=100)  # 20 % of the reference keyframe's points: c1c at the default 0.25
    assert decide_keyframe(weak, TC).c1c
    assert not decide_keyframe(weak, dataclasses.replace(TC, kf_weak_tracking_ratio=0.1)).c1c
    few = ev(n_tracked=20, mapper_idle=True)
    assert decide_keyframe(few, TC).insert  # more than the default 15 tracked
    assert not decide_keyframe(few, dataclasses.replace(TC, kf_min_tracked=25)).c2
    short = ev(n_close_tracked=90, n_close_untracked=80)  # ORB-SLAM's "< 100 tracked and > 70 untracked"
    assert decide_keyframe(short, TC).c1c
    assert not decide_keyframe(short, dataclasses.replace(TC, kf_close_untracked_min=85)).c1c
