"""The pose prior of relocalisation (slam.backbone.frontend.pose_prior): when place retrieval gives nothing, the
keyframes near a rough prior pose (PoseNet's, here the true pose plus noise) relocalise the frame; a prior at a
place the frame does not show relocalises nothing (the PnP inliers gate it)."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from slam.backbone.config import SlamConfig
from slam.backbone.frontend.pose_prior import ImmediatePosePrior, PoseAnswer, keyframes_near
from slam.backbone.frontend.tracking import State
from slam.backbone.loop.place import OrbVladDescriber, PlaceAnswer
from slam.backbone.system import System
from slam.geometry import inv_pose, make_pose, so3_exp
from tests.backbone.test_relocalization import (BEFORE, BLACK, BOUND_M, _errors_after_loss, _unknown_place,  # noqa: F401
                                                black_seq)

NOISE_M, NOISE_DEG = 0.3, 10.0  # the prior's error: a PoseNet-like guess, not a pose


class _BlindDescriber(OrbVladDescriber):
    """A place describer that never answers with a descriptor: retrieval gives no candidate."""

    def submit(self, key, thumbnail, descriptors) -> bool:
        with self._lock:
            self._answers.append(PlaceAnswer(key, None, "blind"))
        return True


class _Prior(ImmediatePosePrior):
    """A pose prior answering ``T_w_c`` of each frame index from a table (map frame), perturbed by a fixed
    ``NOISE_M`` offset and a ``NOISE_DEG`` rotation in random directions (seeded)."""

    name = "test-prior"

    def __init__(self, poses: dict[int, np.ndarray], seed: int = 0):
        super().__init__()
        self.poses, self.rng = poses, np.random.default_rng(seed)
        self.asked: list[int] = []

    def pose(self, key, thumbnail, earlier) -> np.ndarray:
        assert thumbnail is not None and thumbnail.shape == (120, 160, 3)
        assert len(earlier) <= self.clip_len - 1
        self.asked.append(key[1])
        T = self.poses[key[1]].copy()
        u, w = self.rng.normal(size=3), self.rng.normal(size=3)
        T[:3, 3] += NOISE_M * u / np.linalg.norm(u)
        T[:3, :3] = so3_exp(np.radians(NOISE_DEG) * w / np.linalg.norm(w)) @ T[:3, :3]
        return T


def _map_poses(frames) -> dict[int, np.ndarray]:
    """Ground-truth ``T_w_c`` in the map's frame (an RGB-D map starts at the first camera: identity)."""
    T0_inv = inv_pose(frames[0].T_w_c_gt)
    return {f.index: T0_inv @ f.T_w_c_gt for f in frames}


def _run(camera, frames, prior=None, cfg=None):
    system = System(camera, "rgbd", cfg, threaded=False, pose_prior=(lambda: prior) if prior is not None else None)
    system.tracker.relocalizer.describer = _BlindDescriber()
    results = [system.process(f) for f in frames]
    system.shutdown()
    return system, results


def test_keyframes_near_selects_by_distance_and_viewing_direction(black_seq):
    camera, frames = black_seq
    system, _ = _run(camera, frames[:BEFORE])
    m, T = system.map, _map_poses(frames)[BEFORE - 1]
    near = keyframes_near(m, T)
    assert near and [d for _, d in near] == sorted(d for _, d in near) and all(d <= 2.0 for _, d in near)
    assert keyframes_near(m, make_pose(np.eye(3), T[:3, 3] + [5.0, 0, 0])) == []  # 5 m away: none
    turned = T.copy()
    turned[:3, :3] = T[:3, :3] @ so3_exp(np.array([0.0, np.pi, 0.0]))  # looking the other way: none
    assert keyframes_near(m, turned) == []


def test_prior_relocalises_when_retrieval_fails(black_seq, caplog):
    camera, frames = black_seq
    # without a prior: the blind describer gives no candidate, no relocalisation after the blackout
    cfg = SlamConfig()
    plain, _ = _run(camera, frames, cfg=cfg)
    assert plain.tracker.relocalizations == []
    # with the prior (true pose + 0.3 m, 10 deg): back within 10 frames, in the same map, within 5 cm
    prior = _Prior(_map_poses(frames))
    with caplog.at_level(logging.INFO, logger="slam.backbone.frontend.relocalization"):
        system, results = _run(camera, frames, prior)
    states = [r.state for r in results]
    back = next(i for i in range(BEFORE + BLACK, len(frames)) if states[i] == State.OK)
    assert back - (BEFORE + BLACK) < 10 and all(s == State.OK for s in states[back:])
    reloc = system.tracker.relocalizations[0]
    assert reloc["frame"] == back and reloc["source"] == "prior" and reloc["map"] == 0
    assert "the pose prior (test-prior) gave the relocalisation" in caplog.text
    assert min(prior.asked) >= BEFORE + BLACK  # black frames (no keypoints) are never sent
    err = _errors_after_loss(system, frames)
    print(f"\n  prior +{NOISE_M} m/{NOISE_DEG} deg: relocalised {back - BEFORE - BLACK} frames after texture returned "
          f"({reloc['inliers']} inliers); error max {1e3 * err.max():.1f} mm")
    assert err.max() <= BOUND_M


def test_prior_at_a_place_the_frame_does_not_show_relocalises_nothing(black_seq, caplog):
    """Mirrored frames (an unknown place, as many keypoints) with a prior naming the mapped place: the prior's
    keyframes are tried and refused by the PnP inlier bound; after reloc_max_frames a new map starts."""
    camera, frames = black_seq
    elsewhere = _unknown_place(frames[BEFORE + BLACK:BEFORE + BLACK + 6])
    cfg = SlamConfig()
    cfg.tracking.reloc_max_frames = 4
    prior = _Prior(_map_poses(frames))
    with caplog.at_level(logging.DEBUG, logger="slam.backbone.frontend.relocalization"):
        system, results = _run(camera, frames[:BEFORE + BLACK] + elsewhere, prior, cfg)
    assert system.tracker.relocalizations == []
    assert f"frame {BEFORE + BLACK}: relocalisation failed against 0 place and " in caplog.text
    n_tried = [int(line.split(" and ")[1].split()[0]) for line in caplog.text.splitlines()
               if "prior candidates" in line]
    assert n_tried and min(n_tried) >= 1, n_tried  # the prior did name keyframes; none was accepted
    states = [r.state for r in results]
    assert states[BEFORE + BLACK:BEFORE + BLACK + 4] == [State.LOST] * 4
    assert states[BEFORE + BLACK + 4] == State.OK and system.tracker.map_id == 1


class _DelayedPrior(_Prior):
    """The prior's answers come ``delay`` polls late (one per frame asked): a PoseNet over the bus."""

    def __init__(self, poses, delay: int):
        super().__init__(poses)
        self.delay, self.queue = delay, []

    def poll(self) -> list[PoseAnswer]:
        self.queue.append(super().poll())
        return self.queue.pop(0) if len(self.queue) > self.delay else []


class _StalePrior(_Prior):
    """Answers (with the pose of the frame just asked about) that are for a frame ``age`` frames older: an
    answer of an earlier loss, arriving now."""

    def __init__(self, poses, age: int):
        super().__init__(poses)
        self.age = age

    def poll(self) -> list[PoseAnswer]:
        return [PoseAnswer(("frame", a.key[1] - self.age), a.T_w_c) for a in super().poll()]


def test_late_prior_answers_are_used_only_while_recent(black_seq):
    camera, frames = black_seq
    # one frame late: the first textured frame has no answer yet, the next uses the first's
    system, results = _run(camera, frames, _DelayedPrior(_map_poses(frames), delay=1))
    assert results[BEFORE + BLACK].state == State.LOST
    assert system.tracker.relocalizations[0]["frame"] == BEFORE + BLACK + 1
    assert system.tracker.relocalizations[0]["source"] == "prior"
    # an answer 15 frames old is still used; 16 (older than MAX_ANSWER_AGE_FRAMES) never is
    system, _ = _run(camera, frames, _StalePrior(_map_poses(frames), age=15))
    assert system.tracker.relocalizations[0]["frame"] == BEFORE + BLACK
    system, _ = _run(camera, frames, _StalePrior(_map_poses(frames), age=16))
    assert system.tracker.relocalizations == []


class _ClipPrior(_Prior):
    """A clip prior (``clip_len`` 4) that records, per frame asked, the thumbnails it was given before it."""

    clip_len = 4

    def __init__(self, poses):
        super().__init__(poses)
        self.thumbs: dict[int, np.ndarray] = {}
        self.earlier: dict[int, list[np.ndarray]] = {}

    def pose(self, key, thumbnail, earlier) -> np.ndarray:
        self.thumbs[key[1]], self.earlier[key[1]] = thumbnail, list(earlier)
        return super().pose(key, thumbnail, earlier)


def test_a_clip_prior_gets_the_last_consecutive_lost_frames(black_seq):
    """While lost, each frame goes to a clip prior with the thumbnails of the lost frames just before it (at most
    clip_len - 1, oldest first); frames without keypoints break the clip, which then starts again."""
    camera, frames = black_seq
    start = BEFORE + BLACK
    mirrored = [dataclasses.replace(f, image=np.ascontiguousarray(f.image[:, ::-1]),
                                    depth=np.ascontiguousarray(f.depth[:, ::-1])) for f in frames[start:start + 9]]
    black = frames[BEFORE:BEFORE + 2]
    seq = frames[:start] + mirrored[:5] + black + mirrored[5:]  # lost: 5 frames, 2 black, 4 frames
    seq = [dataclasses.replace(f, index=i) for i, f in enumerate(seq)]
    cfg = SlamConfig()
    cfg.tracking.reloc_max_frames = 50
    prior = _ClipPrior(_map_poses(frames))
    _run(camera, seq, prior, cfg)
    asked = sorted(prior.earlier)
    assert asked == list(range(start, start + 5)) + list(range(start + 7, start + 11))
    lengths = [len(prior.earlier[i]) for i in asked]
    assert lengths == [0, 1, 2, 3, 3] + [0, 1, 2, 3]
    for i in asked:
        for k, th in enumerate(prior.earlier[i]):
            assert np.array_equal(th, prior.thumbs[i - len(prior.earlier[i]) + k])
