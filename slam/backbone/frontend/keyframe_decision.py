"""Whether a tracked frame becomes a keyframe: ORB-SLAM's NeedNewKeyFrame as a pure function.

The tracker gathers the numbers (:class:`KeyframeEvidence`) and asks
:func:`decide_keyframe` *before* it creates anything in the map, so a
keyframe that local mapping cannot take is never made (ORB-SLAM consults
``AcceptKeyFrames`` the same way). The conditions, with ORB-SLAM's names:

* c1a: ``kf_max_frames`` frames have passed since the last keyframe;
* c1b: at least ``kf_min_frames`` have passed and local mapping is idle;
* c1c: stereo/RGB-D only: tracking is weak (under a quarter of the reference
  keyframe's points) or needs close points (few close points tracked, many untracked);
* c2: fewer points than ``ratio`` x the reference keyframe's are tracked (or close
  points are needed), and more than ``kf_min_tracked`` (a frame tracking so few is not worth keeping).

A keyframe is needed when ``(c1a or c1b or c1c) and c2`` and local mapping accepts keyframes.
"""

from __future__ import annotations

from dataclasses import dataclass

from slam.backbone.config import TrackingConfig



@dataclass(frozen=True)
class KeyframeEvidence:
    """What the keyframe decision looks at, for one tracked frame."""

    frames_since_kf: int  # frame index minus the last keyframe's frame index
    n_tracked: int  # map points tracked (inliers) in the frame
    ref_tracked: int  # points of the reference keyframe seen by enough keyframes (``kf_ref_min_obs``)
    n_close_tracked: int = 0  # stereo/RGB-D: keypoints with close depth that have a map point
    n_close_untracked: int = 0  # ... and those that have none
    mapper_accepts: bool = True  # local mapping would queue a keyframe now (its queue is not full)
    mapper_idle: bool = True  # local mapping has nothing queued or in work
    mono: bool = False


@dataclass(frozen=True)
class KeyframeDecision:
    """The conditions (for logs and tests) and the verdict."""

    c1a: bool
    c1b: bool
    c1c: bool
    c2: bool
    accepts: bool

    @property
    def wanted(self) -> bool:
        """The frame would make a good keyframe (whether or not local mapping can take it now)."""
        return (self.c1a or self.c1b or self.c1c) and self.c2

    @property
    def insert(self) -> bool:
        """Create the keyframe now."""
        return self.wanted and self.accepts


def decide_keyframe(ev: KeyframeEvidence, tc: TrackingConfig) -> KeyframeDecision:
    """ORB-SLAM's NeedNewKeyFrame on ``ev`` with the thresholds of ``tc``; see the module docstring."""
    # ORB-SLAM's thresholds on close points (stereo/RGB-D): "tracked < 100 and untracked > 70"
    need_close = ((not ev.mono) and ev.n_close_tracked < tc.kf_close_tracked_max
                  and ev.n_close_untracked > tc.kf_close_untracked_min)
    ratio = tc.kf_tracked_ratio_mono if ev.mono else tc.kf_tracked_ratio
    c1a = ev.frames_since_kf >= tc.kf_max_frames
    c1b = ev.frames_since_kf >= tc.kf_min_frames and ev.mapper_idle
    c1c = (not ev.mono) and (ev.n_tracked < tc.kf_weak_tracking_ratio * ev.ref_tracked or need_close)
    c2 = (ev.n_tracked < ratio * ev.ref_tracked or need_close) and ev.n_tracked > tc.kf_min_tracked
    return KeyframeDecision(c1a, c1b, c1c, c2, ev.mapper_accepts)


def need_new_keyframe(ev: KeyframeEvidence, tc: TrackingConfig) -> bool:
    """Whether to create a keyframe from the frame now (:attr:`KeyframeDecision.insert`)."""
    return decide_keyframe(ev, tc).insert
