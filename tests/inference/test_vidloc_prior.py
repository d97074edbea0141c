"""VidLoc as relocalisation's clip-level pose prior through the real in-process inference path: a tiny VidLoc
trained here (seconds) on a camera sliding along a textured wall answers, for the clip of the last frames, the
pose of the newest one, far better than the mean pose; the clip reaches the network whole; ``make_pose_prior``
tells PoseNet from VidLoc by the sidecar and refuses other checkpoints naming the file."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from slam.errors import DataError
from slam.inference.pose_prior import VidLocPrior, make_pose_prior

PX_PER_M, STEP_M, LENGTH_M, CLIP = 40, 0.2, 6.0, 4  # wall pixels per metre, frame spacing, wall length, frames
WH = (64, 48)  # tiny VidLoc's input


def _wall(seed: int = 0) -> np.ndarray:
    """A 48-pixel-high strip of smooth random colour blocks, long enough for LENGTH_M of camera travel."""
    blocks = np.random.default_rng(seed).integers(0, 256, (8, (WH[0] + int(LENGTH_M * PX_PER_M)) // 6 + 2, 3),
                                                  dtype=np.uint8)
    return cv2.resize(blocks, (blocks.shape[1] * 6, WH[1]), interpolation=cv2.INTER_LINEAR)


def _frames(wall: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 48, 64, 3) of a camera at positions ``xs`` (m, along world x; identity rotation) and T_w_c."""
    offs = np.round(xs * PX_PER_M).astype(int)
    ims = np.stack([np.ascontiguousarray(wall[:, o:o + WH[0]]) for o in offs])
    T = np.tile(np.eye(4), (len(xs), 1, 1))
    T[:, 0, 3] = xs
    return ims, T


@pytest.fixture(scope="module")
def vidloc_checkpoint(tmp_path_factory) -> Path:
    """A tiny VidLoc (clips of CLIP frames) trained by the harness on two passes along the wall (~5 s)."""
    import torch

    from nets.train.data import Clip
    from nets.train.loop import TrainSettings, train

    xs = np.arange(0.0, LENGTH_M + 1e-9, STEP_M)
    ims, T = _frames(_wall(), xs)
    clips = [Clip("forward", "wall", ims, T, np.arange(len(xs))),
             Clip("back", "wall", ims[::-1].copy(), T[::-1].copy(), np.arange(len(xs)))]
    path = tmp_path_factory.mktemp("vidloc") / "vidloc_wall.pt"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train("vidloc", clips, path, TrainSettings(epochs=20, seed=0, device="cpu", size="tiny", progress=False,
                                                   evaluate=False, conf={"batches_per_epoch": 10, "clip_len": CLIP},
                                                   command="tests/inference/test_vidloc_prior.py"))
    finally:
        torch.set_num_threads(threads)
    return path


def _answers(prior, keys: set, timeout_s: float = 20.0) -> dict:
    got: dict = {}
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and set(got) < keys:
        for a in prior.poll():
            assert a.T_w_c is not None, a.error
            got[a.key] = a.T_w_c
        time.sleep(0.01)
    return got


def test_vidloc_prior_regresses_the_newest_frame_of_the_clip(vidloc_checkpoint, monkeypatch):
    from nets.models.vidloc import VidLoc

    seen: list[tuple[int, ...]] = []  # the shape of every clip the served network got
    real = VidLoc.infer
    monkeypatch.setattr(VidLoc, "infer", lambda self, batch: (seen.extend(r["images"].shape for r in batch),
                                                              real(self, batch))[1])
    factory = make_pose_prior(vidloc_checkpoint, deadline_s=10.0)
    assert factory.describe() == {"prior": "vidloc", "inference": "in-process", "checkpoint": str(vidloc_checkpoint),
                                  "clip_len": CLIP}
    prior = factory()
    assert isinstance(prior, VidLocPrior) and prior.clip_len == CLIP and prior.input_wh == WH
    # held-out positions: half-way between the training frames, thumbnails at the tracker's 160x120
    xs = np.arange(STEP_M / 2, LENGTH_M - STEP_M, STEP_M)
    ims, _ = _frames(_wall(), xs)
    thumbs = [cv2.resize(im, (160, 120), interpolation=cv2.INTER_LINEAR) for im in ims]
    seen.clear()
    try:
        keys = set()
        for i in range(len(xs)):  # as the relocaliser asks: each lost frame with those before it
            assert prior.submit(("frame", i), thumbs[i], thumbs[max(0, i - 10):i])
            keys.add(("frame", i))
        got = _answers(prior, keys)
    finally:
        prior.close()
    assert set(got) == keys
    # the clip reaches the network whole, capped at its clip length: 1, 2, 3, then CLIP frames
    assert [s[0] for s in seen] == [min(i + 1, CLIP) for i in range(len(xs))]
    assert all(s[1:] == (WH[1], WH[0], 3) for s in seen)
    full = [i for i in range(len(xs)) if i >= CLIP - 1]
    x_hat = np.array([got[("frame", i)][0, 3] for i in full])
    err_newest = np.abs(x_hat - xs[full])
    err_oldest = np.abs(x_hat - xs[np.array(full) - CLIP + 1])  # 0.6 m behind the newest
    err_mean_pose = np.abs(xs.mean() - xs[full])  # the trivial answer: the mean training position (3 m)
    print(f"\n  vidloc prior: median error {np.median(err_newest):.3f} m at the newest frame, "
          f"{np.median(err_oldest):.3f} m against the oldest, mean pose {np.median(err_mean_pose):.3f} m")
    assert np.median(err_newest) < 0.5 * np.median(err_mean_pose)
    assert np.median(err_newest) < 0.6 * np.median(err_oldest)


def test_pose_prior_kind_comes_from_the_sidecar(vidloc_checkpoint, tiny_checkpoint, tmp_path):
    # a NetVLAD checkpoint: refused naming the file and saying what it is
    with pytest.raises(DataError, match=r"netvlad_tiny\.pt.*'netvlad'.*not of a pose regressor \(posenet or vidloc\)"):
        make_pose_prior(tiny_checkpoint)
    # a VidLoc sidecar that does not record its clip length
    import json

    bad = tmp_path / "vidloc_noclip.pt"
    bad.write_bytes(vidloc_checkpoint.read_bytes())
    side = json.loads(vidloc_checkpoint.with_suffix(".json").read_text())
    del side["conf"]["clip_len"]
    bad.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(DataError, match=r"vidloc_noclip\.pt.*clip_len"):
        make_pose_prior(bad)
    # no sidecar: named
    lone = tmp_path / "lone.pt"
    lone.write_bytes(vidloc_checkpoint.read_bytes())
    with pytest.raises(DataError, match=r"lone\.json.*sidecar"):
        make_pose_prior(lone)
    # at a server: the kind and clip length still come from the sidecar, nothing is loaded here
    factory = make_pose_prior(vidloc_checkpoint, infer="ipc:///tmp/slam-test-nowhere/infer")
    assert factory.describe() == {"prior": "vidloc", "inference": "ipc:///tmp/slam-test-nowhere/infer",
                                  "checkpoint": str(vidloc_checkpoint), "clip_len": CLIP}


# ------------------------------------------------------------------ launch files
def test_launch_file_pose_prior_keys(vidloc_checkpoint, tiny_checkpoint, tmp_path):
    from slam.nodes.launch import load_launch
    from slam.nodes.tracker import pose_prior
    from tests.inference.test_wiring import _launch

    run = tmp_path / "run"
    assert pose_prior(_launch(tmp_path, "{mode: rgbd}", "{enabled: false}"), run) is None  # none by default
    # in the SLAM process (the default)
    spec = _launch(tmp_path, f"{{mode: rgbd, pose_prior: {vidloc_checkpoint}}}", "{enabled: false, deadline_s: 2.0}")
    assert (spec.slam.pose_prior, spec.slam.pose_prior_inference) == (str(vidloc_checkpoint), "in-process")
    factory = pose_prior(spec, run)
    assert factory.describe() == {"prior": "vidloc", "inference": "in-process", "checkpoint": str(vidloc_checkpoint),
                                  "clip_len": CLIP}
    prior = factory()
    assert prior.deadline_s == 2.0 and prior.clip_len == CLIP
    prior.close()
    # asked of the launch file's inference server, which serves it
    served = f"models:\n  - model: vidloc\n    checkpoint: {vidloc_checkpoint}\n"
    spec = _launch(tmp_path, f"{{pose_prior: {vidloc_checkpoint}, pose_prior_inference: server}}",
                   f"{{enabled: true, config: {tmp_path / 'models.yaml'}}}", served)
    assert pose_prior(spec, run).describe()["inference"] == f"ipc://{run}/infer"
    # ... a local server whose config does not serve a VidLoc: refused naming the launch file
    spec = _launch(tmp_path, f"{{pose_prior: {vidloc_checkpoint}, pose_prior_inference: server}}",
                   f"{{enabled: true, config: {tmp_path / 'models.yaml'}}}",
                   f"models:\n  - model: netvlad\n    checkpoint: {tiny_checkpoint}\n")
    with pytest.raises(DataError, match=r"graph\.yaml.*serves no vidloc"):
        pose_prior(spec, run)
    # a NetVLAD checkpoint as the pose prior: refused naming it
    spec = _launch(tmp_path, f"{{pose_prior: {tiny_checkpoint}}}", "{enabled: false}")
    with pytest.raises(DataError, match=r"netvlad_tiny\.pt.*not of a pose regressor"):
        pose_prior(spec, run)
    # bad values: named
    bad = tmp_path / "bad.yaml"
    bad.write_text("endpoints: {frames: ipc://a, poses: ipc://b}\nprocesses: {slam: {pose_prior_inference: gpu}}\n")
    with pytest.raises(DataError, match=r"bad\.yaml.*pose_prior_inference must be one of"):
        load_launch(bad)
    bad.write_text("endpoints: {frames: ipc://a, poses: ipc://b}\nprocesses: {slam: {pose_prior_inference: server}}\n")
    with pytest.raises(DataError, match=r"bad\.yaml.*endpoints\.inference is missing"):
        load_launch(bad)


def test_slam_run_launch_takes_the_pose_prior(tum_path, vidloc_checkpoint, tiny_checkpoint, tmp_path, capsys):
    """``slam-run --launch FILE --pose-prior CKPT``: the SLAM process runs with the VidLoc prior (summary.json says
    so); a NetVLAD checkpoint is refused before any process starts (exit 2, the file named)."""
    import json

    from slam.cli.run import main

    out = tmp_path / "graph"
    assert main(["--launch", "launch/tum_replay.yaml", str(tum_path), "--out", str(out), "--no-progress",
                 "--pose-prior", str(vidloc_checkpoint)]) == 0
    assert json.loads((out / "summary.json").read_text())["pose_prior"] == {
        "prior": "vidloc", "inference": "in-process", "checkpoint": str(vidloc_checkpoint), "clip_len": CLIP}
    capsys.readouterr()
    assert main(["--launch", "launch/tum_replay.yaml", str(tum_path), "--out", str(tmp_path / "bad"), "--no-progress",
                 "--pose-prior", str(tiny_checkpoint)]) == 2
    assert "netvlad_tiny.pt" in capsys.readouterr().err and not (tmp_path / "bad" / "logs").exists()
