"""PoseNet as relocalisation's pose prior through the in-process inference client: a saved (untrained) tiny
checkpoint answers a rigid 4x4 pose per key; checkpoints that cannot serve are refused naming the file."""

from __future__ import annotations

import time

import numpy as np
import pytest

from slam.errors import DataError
from slam.inference.pose_prior import PoseNetPrior, check_pose, make_pose_prior

from tests.inference.conftest import textured


@pytest.fixture(scope="module")
def posenet_checkpoint(tmp_path_factory):
    """An untrained tiny PoseNet saved as the harness saves checkpoints (weights + sidecar): plumbing only."""
    import torch

    from nets.models.posenet import PoseNet
    from nets.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = PoseNet(PoseNet.conf_for_size("tiny"))
    path = tmp_path_factory.mktemp("posenet") / "posenet_tiny.pt"
    save_checkpoint(path, model.net.state_dict(), {"model": "posenet", "architecture": model.architecture(),
                                                   "conf": model.conf, "input_size": list(model.input_size)})
    return path


def _answers(prior: PoseNetPrior, keys: set, timeout_s: float = 10.0) -> dict:
    got: dict = {}
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and set(got) < keys:
        for a in prior.poll():
            if a.T_w_c is not None:
                got[a.key] = a
        time.sleep(0.01)
    return got


def test_posenet_prior_in_process_answers_a_pose_per_key(posenet_checkpoint):
    factory = make_pose_prior(posenet_checkpoint, deadline_s=5.0)
    assert factory.describe() == {"prior": "posenet", "inference": "in-process",
                                  "checkpoint": str(posenet_checkpoint)}
    prior = factory()
    try:
        assert prior.input_wh == (64, 48)
        keys = {("frame", 7), ("frame", 8)}
        for i, k in enumerate(sorted(keys)):
            assert prior.submit(k, textured(i))
        assert not prior.submit(("frame", 9), None)  # no thumbnail: not sent
        got = _answers(prior, keys)
        assert set(got) == keys
        for a in got.values():
            T = a.T_w_c
            assert T.shape == (4, 4) and np.allclose(T[3], [0, 0, 0, 1])
            assert np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-6)
        assert prior.available()
    finally:
        prior.close()


def test_bad_pose_prior_checkpoints_are_clear_errors(posenet_checkpoint, tiny_checkpoint, tmp_path):
    with pytest.raises(DataError, match="no such PoseNet or VidLoc checkpoint"):
        make_pose_prior(tmp_path / "missing.pt")
    # a NetVLAD checkpoint: a model of another task
    with pytest.raises(DataError, match=r"netvlad_tiny\.pt.*not of a pose regressor"):
        make_pose_prior(tiny_checkpoint)
    # truncated weights (its sidecar intact): named, not a crash
    bad = tmp_path / "posenet_cut.pt"
    bad.write_bytes(posenet_checkpoint.read_bytes()[:200])
    (tmp_path / "posenet_cut.json").write_text(posenet_checkpoint.with_name("posenet_tiny.json").read_text())
    with pytest.raises(DataError, match="posenet_cut"):
        make_pose_prior(bad)


def test_check_pose_refuses_what_is_not_a_rigid_transform():
    assert check_pose(np.eye(4))[1] is None
    assert "shape" in check_pose(np.eye(3))[1]
    assert "finite" in check_pose(np.full((4, 4), np.nan))[1]
    assert "not a rotation" in check_pose(np.diag([2.0, 1, 1, 1]))[1]
    assert "without" in check_pose(None)[1]


def test_slam_run_pose_prior_flag_hands_the_system_a_posenet_factory(tum_path, tmp_path, posenet_checkpoint,
                                                                     monkeypatch, capsys):
    import json

    import slam.cli.run as run_cli

    seen = []
    real = run_cli.System

    def spy(*args, **kwargs):
        seen.append(kwargs.get("pose_prior"))
        return real(*args, **kwargs)

    monkeypatch.setattr(run_cli, "System", spy)
    out = tmp_path / "out"
    assert run_cli.main([str(tum_path), "--out", str(out), "--no-progress", "--max-frames", "3",
                         "--pose-prior", str(posenet_checkpoint)]) == 0
    assert len(seen) == 1 and seen[0] is not None
    assert json.loads((out / "summary.json").read_text())["pose_prior"] == {
        "prior": "posenet", "inference": "in-process", "checkpoint": str(posenet_checkpoint)}
    # without the flag: no prior, summary says so
    assert run_cli.main([str(tum_path), "--out", str(tmp_path / "plain"), "--no-progress", "--max-frames", "3"]) == 0
    assert seen[1] is None and json.loads((tmp_path / "plain" / "summary.json").read_text())["pose_prior"] is None
    # a bad checkpoint stops the run before it starts, naming the file
    assert run_cli.main([str(tum_path), "--out", str(tmp_path / "bad"), "--no-progress",
                         "--pose-prior", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt" in capsys.readouterr().err and len(seen) == 2
