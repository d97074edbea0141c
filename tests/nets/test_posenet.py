"""PoseNet and VidLoc: the loss against hand-computed values, quaternion signs, training that beats the mean-pose and
image-retrieval baselines on a held-out traversal, VidLoc's clips, foreign checkpoints, serving, and --map data."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch

from nets.base import ModelError
from nets.models.posenet import PoseNet
from nets.models.vidloc import VidLoc
from nets.pose_regression import (baseline_poses, mean_quaternion, pose_errors, pose_loss, poses_to_xq, single_world,
                                  to_hemisphere, xq_to_poses)
from nets.server import InferenceService, load_models
from nets.train.cli import eval_main, train_main
from nets.train.data import Clip, load_map_clip, split_holdout, synth_clips
from nets.train.loop import TrainSettings, train
from slam.bus.codec import Message
from slam.errors import DataError

TINY_WH = (64, 48)


def _t(*v) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float32)


# ------------------------------------------------------------------ loss and quaternions
def test_beta_loss_equals_hand_computed_value():
    x_hat, x = _t(1.0, 2.0, 2.0), _t(0.0, 0.0, 0.0)  # |x - x_hat| = 3
    q_hat, q = _t(0.0, 0.0, 0.0, 2.0), _t(0.0, 0.6, 0.0, 0.8)  # q_hat/|q_hat| = (0,0,0,1): |q - .| = sqrt(.36+.04)
    loss, figs = pose_loss(x_hat[None], q_hat[None], x[None], q[None], "beta", beta=10.0)
    assert float(loss) == pytest.approx(3.0 + 10.0 * math.sqrt(0.4), rel=1e-6)
    assert figs["pos"] == pytest.approx(3.0) and figs["quat"] == pytest.approx(math.sqrt(0.4), rel=1e-6)


def test_learned_weighting_equals_hand_computed_value_and_trains_its_weights():
    s_x = torch.tensor(0.5, requires_grad=True)
    s_q = torch.tensor(-2.0, requires_grad=True)
    x_hat = torch.stack([_t(3.0, 0.0, 0.0), _t(0.0, 0.0, 1.0)])  # distances 3 and 1: mean 2
    x = torch.zeros(2, 3)
    q_hat = torch.stack([_t(0.0, 0.0, 0.0, 1.0), _t(0.0, 0.0, 0.0, 1.0)])
    q = torch.stack([_t(0.0, 0.0, 0.0, 1.0), _t(1.0, 0.0, 0.0, 0.0)])  # distances 0 and sqrt(2): mean sqrt(2)/2
    loss, _ = pose_loss(x_hat, q_hat, x, q, "learned", s_x=s_x, s_q=s_q)
    want = 2.0 * math.exp(-0.5) + 0.5 + (math.sqrt(2) / 2) * math.exp(2.0) - 2.0
    assert float(loss.detach()) == pytest.approx(want, rel=1e-6)
    loss.backward()  # d/ds_x = 1 - L_x e^{-s_x}: the weights are learned with the network
    assert float(s_x.grad) == pytest.approx(1 - 2.0 * math.exp(-0.5), rel=1e-5)
    assert float(s_q.grad) == pytest.approx(1 - (math.sqrt(2) / 2) * math.exp(2.0), rel=1e-5)
    with pytest.raises(ModelError, match="one of"):
        pose_loss(x_hat, q_hat, x, q, "l2")


def test_quaternion_sign_does_not_change_the_loss_or_the_error():
    q_ref = _t(0.0, 0.0, 0.0, 1.0)
    q_hat = _t(0.1, 0.2, 0.0, 0.9)[None]
    q = _t(0.0, 0.6, 0.0, 0.8)[None]
    x = torch.zeros(1, 3)
    plus, _ = pose_loss(x, q_hat, x, q, "beta", beta=1.0, q_ref=q_ref)
    minus, _ = pose_loss(x, q_hat, x, -q, "beta", beta=1.0, q_ref=q_ref)  # the same rotation, other sign
    assert float(plus) == pytest.approx(float(minus)) and float(plus) < 0.5
    without_ref, _ = pose_loss(x, q_hat, x, -q, "beta", beta=1.0)
    assert float(without_ref) > 1.5  # what the hemisphere prevents: -q is far from q_hat in R^4
    # errors: 2 acos(|<q, q_hat>|), the same for q_hat and -q_hat
    T = xq_to_poses(np.zeros((2, 3)), np.array([[0.0, 0.6, 0.0, 0.8], [0.0, -0.6, 0.0, -0.8]]))
    gt = xq_to_poses(np.array([[0.0, 0.0, 1.0]] * 2), np.array([[0.0, 0.0, 0.0, 1.0]] * 2))
    t, r = pose_errors(T, gt)
    np.testing.assert_allclose(t, 1.0)
    np.testing.assert_allclose(r, np.degrees(2 * math.acos(0.8)), rtol=1e-6)  # 73.74 deg, both signs
    # the hemisphere of the training data: +-20 deg about z, given with mixed signs, average to the identity
    s, c = math.sin(math.radians(10)), math.cos(math.radians(10))
    qs = np.array([[0.0, 0.0, s, c], [0.0, 0.0, -s, -c], [0.0, 0.0, -s, c], [0.0, 0.0, s, -c]])
    m = mean_quaternion(qs)
    np.testing.assert_allclose(m, [0, 0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(to_hemisphere(qs, m)[:, 3], c)  # all in the qw > 0 half


def test_pose_conversions_round_trip():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(5, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    x = rng.normal(size=(5, 3))
    x2, q2 = poses_to_xq(xq_to_poses(x, q))
    np.testing.assert_allclose(x2, x)
    np.testing.assert_allclose(np.abs((q2 * q).sum(1)), 1.0, atol=1e-9)
    assert (q2[:, 3] >= 0).all()


def test_baselines_on_hand_made_frames():
    # three training frames along x with distinct images; a query that looks like frame 2 but stands near frame 1
    ims = np.zeros((3, 24, 32, 3), np.uint8)
    for i in range(3):
        ims[i, :, i * 10:(i + 1) * 10] = 255
    fit_T = xq_to_poses(np.array([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0]]), np.tile([0, 0, 0, 1.0], (3, 1)))
    gt = xq_to_poses(np.array([[1.1, 0, 0]]), np.array([[0, 0, 0, 1.0]]))
    b = baseline_poses(ims, fit_T, ims[2:3], gt)
    np.testing.assert_allclose(b["mean_pose"][0][:3, 3], [1.0, 0, 0])
    np.testing.assert_allclose(b["retrieval"][0][:3, 3], [2.0, 0, 0])
    np.testing.assert_allclose(b["oracle"][0][:3, 3], [1.0, 0, 0])


# ------------------------------------------------------------------ training on a held-out traversal
@pytest.fixture(scope="module")
def room(synth_cache):
    """Room 2's traversal a (training) and b (held out: a smaller, lower loop turned inwards); the plain room
    (variety off: the same lighting in both traversals), on which the margins below were chosen."""
    return split_holdout(synth_clips([2], synth_cache, TINY_WH, variety=False), "traversal:b")


def _settings(**kw) -> TrainSettings:
    return TrainSettings(**{"epochs": 30, "seed": 0, "device": "cpu", "size": "tiny", "progress": False,
                            "conf": {"batches_per_epoch": 10}, **kw})


def test_posenet_beats_mean_pose_and_retrieval_on_the_held_out_traversal(room, tmp_path):
    train_clips, held = room
    assert [c.name for c in held] == ["tiny-s2-b"] and [c.name for c in train_clips] == ["tiny-s2-a"]
    sidecar = train("posenet", train_clips, tmp_path / "pn.pt", _settings(), val_clips=held)
    m = sidecar["metrics"]
    assert m["evaluated_on"] == "held-out clips" and m["frames"] == 40
    mine = m["posenet"]
    for base in ("mean_pose", "retrieval"):
        assert mine["median_t_m"] < 0.85 * m[base]["median_t_m"], m
        assert mine["median_r_deg"] < 0.8 * m[base]["median_r_deg"], m
    assert m["oracle"]["median_t_m"] < m["mean_pose"]["median_t_m"]  # the lower bound of any retrieval
    # the checkpoint predicts in metres through its stored position statistics
    model = PoseNet(sidecar["conf"])
    model.load_weights(tmp_path / "pn.pt")
    assert float(model.net.head.pos_scale) > 0.5
    T = model.infer([{"image": held[0].images[0]}])[0]["T_w_c"]
    assert T.shape == (4, 4) and T.dtype == np.float64
    np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-9)


def test_vidloc_beats_mean_pose_and_retrieval_on_the_held_out_traversal(room, tmp_path):
    train_clips, held = room
    settings = _settings(epochs=20, conf={"batches_per_epoch": 10, "clip_len": 6})
    m = train("vidloc", train_clips, tmp_path / "vl.pt", settings, val_clips=held)["metrics"]
    assert m["frames"] == 40 and m["clip_len"] == 6
    for base in ("mean_pose", "retrieval"):
        assert m["vidloc"]["median_t_m"] < 0.85 * m[base]["median_t_m"], m
        assert m["vidloc"]["median_r_deg"] < 0.8 * m[base]["median_r_deg"], m


def test_a_pose_regressor_is_trained_per_scene(synth_cache):
    two_rooms = synth_clips([0, 1], synth_cache, TINY_WH)
    with pytest.raises(ModelError, match="one scene's world frame.*2 worlds"):
        single_world(two_rooms, "posenet")


# ------------------------------------------------------------------ VidLoc
def test_vidloc_shapes_and_the_lstm_sees_later_frames():
    torch.manual_seed(0)
    model = VidLoc({**VidLoc.sizes["tiny"], "clip_len": 4})
    model.net.eval()
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 255, (2, 5, 48, 64, 3), np.uint8)
    x, q = model.net(torch.from_numpy(clip))
    assert x.shape == (2, 5, 3) and q.shape == (2, 5, 4)
    later = clip.copy()
    later[:, 4] = 255 - later[:, 4]  # change the last frame only
    x2, q2 = model.net(torch.from_numpy(later))
    assert not torch.allclose(x[:, 0], x2[:, 0])  # the first frame's pose depends on the last frame (backward LSTM)
    first, first_later = (model.net.encoder(torch.from_numpy(c[:, 0])) for c in (clip, later))
    assert torch.equal(first, first_later)  # ... and not through the frame's own encoding
    # sliding windows over a sequence longer and shorter than clip_len; served as task pose_clip
    T = model.predict(rng.integers(0, 255, (7, 30, 40, 3), np.uint8))
    assert T.shape == (7, 4, 4)
    np.testing.assert_allclose(np.linalg.det(T[:, :3, :3]), 1.0, atol=1e-9)
    service = InferenceService({"pose_clip": model})
    out = service.handle_batch([Message("infer", "pose_clip", 0, 0.0, {}, {"images": clip[0, :3]})])
    assert isinstance(out[0], Message) and out[0].arrays["T_w_c"].shape == (3, 4, 4)
    bad = service.handle_batch([Message("infer", "pose_clip", 1, 0.0, {}, {"images": clip[0, 0]})])
    assert isinstance(bad[0], Exception) and "TxHxWx3" in str(bad[0])


# ------------------------------------------------------------------ checkpoints and serving
def test_checkpoint_of_another_architecture_is_refused(room, tmp_path):
    out = tmp_path / "tiny.pt"
    train("posenet", room[0], out, _settings(epochs=1, evaluate=False))
    with pytest.raises(ModelError, match="another architecture or input size.*image_width: checkpoint 64 vs model 160"):
        PoseNet().load_weights(out)  # the small size
    with pytest.raises(ModelError, match="a checkpoint of model 'posenet', not 'vidloc'"):
        VidLoc(VidLoc.sizes["tiny"]).load_weights(out)
    with pytest.raises(ModelError, match="loss must be one of"):
        PoseNet({"loss": "l1"})


def test_served_as_task_pose_and_says_untrained(caplog):
    model = PoseNet(PoseNet.sizes["tiny"])
    service = InferenceService(load_models({"models": [{"model": "posenet", "conf": PoseNet.sizes["tiny"]}]}, "cpu"))
    img = np.random.default_rng(1).integers(0, 255, (120, 160, 3), np.uint8)
    with caplog.at_level(logging.WARNING, logger="nets.models.posenet"):
        out = service.handle_batch([Message("infer", "pose", i, 0.0, {}, {"image": img}) for i in range(2)])
    assert all(isinstance(o, Message) for o in out), out
    T = out[0].arrays["T_w_c"]
    assert T.shape == (4, 4) and T.dtype == np.float64 and out[0].meta["model"]["trained"] is False
    assert "untrained weights" in caplog.text
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        model.infer([{"image": np.zeros((4, 4), np.float32)}])


# ------------------------------------------------------------------ --map and --holdout
def _write_map(path, k=12, thumbs=True, **over):
    rng = np.random.default_rng(0)
    T_w_c = xq_to_poses(np.c_[np.linspace(0, 2, k), np.zeros(k), np.zeros(k)], np.tile([0, 0, 0, 1.0], (k, 1)))
    members = {"kf_T_c_w": np.linalg.inv(T_w_c), "kf_timestamp": np.arange(k, dtype=np.float64)[::-1].copy(),
               "kf_frame_index": np.arange(k, dtype=np.int64)[::-1] * 3, "meta": np.array('{"format": "slam-map"}')}
    if thumbs:
        members["kf_thumbnail"] = rng.integers(0, 255, (k, 120, 160, 3), np.uint8)
    members.update(over)
    np.savez_compressed(path, **members)
    return T_w_c, members


def test_map_keyframes_become_a_clip_in_time_order(tmp_path):
    T_w_c, m = _write_map(tmp_path / "map.npz")
    clip = load_map_clip(tmp_path / "map.npz", TINY_WH)
    assert clip.images.shape == (12, 48, 64, 3) and clip.world == str((tmp_path / "map.npz").resolve())
    np.testing.assert_allclose(clip.T_w_c, T_w_c[::-1], atol=1e-12)  # stored newest first: sorted by timestamp
    np.testing.assert_array_equal(clip.frame_index, np.arange(12) * 3)
    import cv2

    np.testing.assert_array_equal(clip.images[0], cv2.resize(m["kf_thumbnail"][-1], TINY_WH,
                                                             interpolation=cv2.INTER_AREA))


@pytest.mark.parametrize("over, match", [
    ({"thumbs": False}, "the map has no keyframe images \\(kf_thumbnail\\): it was saved before"),
    ({"kf_thumbnail": np.zeros((11, 120, 160, 3), np.uint8)},
     "kf_thumbnail is \\(11, 120, 160, 3\\) uint8, expected \\(12"),
    ({"kf_thumbnail": np.zeros((12, 120, 160, 3), np.float32)}, "kf_thumbnail is .* float32"),
    ({"kf_timestamp": np.zeros(3)}, "kf_timestamp has shape \\(3,\\), expected \\(12,\\)"),
    ({"kf_has_thumbnail": np.ones(5, bool)}, "kf_has_thumbnail has shape \\(5,\\)"),
    ({"kf_T_c_w": np.zeros((12, 3, 4))}, "kf_T_c_w has shape"),
])
def test_map_errors_name_the_file(tmp_path, over, match):
    over = dict(over)
    thumbs = over.pop("thumbs", True)
    _write_map(tmp_path / "old.npz", thumbs=thumbs, **over)
    with pytest.raises(DataError, match=f"old.npz: {match}"):
        load_map_clip(tmp_path / "old.npz", TINY_WH)


def test_keyframes_without_thumbnail_are_left_out(tmp_path):
    has = np.ones(12, bool)
    has[[0, 5]] = False  # stored order; timestamps run backwards, so these are the newest and the 7th
    T_w_c, _ = _write_map(tmp_path / "map.npz", kf_has_thumbnail=has)
    clip = load_map_clip(tmp_path / "map.npz", TINY_WH)
    assert len(clip) == 10
    np.testing.assert_allclose(clip.T_w_c, T_w_c[::-1][has[::-1]], atol=1e-12)
    _write_map(tmp_path / "none.npz", kf_has_thumbnail=np.zeros(12, bool))
    with pytest.raises(DataError, match="none.npz: no keyframe of the map has its image"):
        load_map_clip(tmp_path / "none.npz", TINY_WH)


def test_unreadable_map_files(tmp_path):
    with pytest.raises(DataError, match="nowhere.npz: no such map file"):
        load_map_clip(tmp_path / "nowhere.npz", TINY_WH)
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="junk.npz: not a readable map file"):
        load_map_clip(tmp_path / "junk.npz", TINY_WH)
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(DataError, match="other.npz: not a SLAM map: no kf_T_c_w"):
        load_map_clip(tmp_path / "other.npz", TINY_WH)


def test_holdout_specs():
    clip = Clip("seq", "w", np.zeros((10, 2, 2, 3), np.uint8), np.tile(np.eye(4), (10, 1, 1)), np.arange(10))
    tr, ho = split_holdout([clip], "every:5")
    np.testing.assert_array_equal(ho[0].frame_index, [4, 9])
    assert len(tr[0]) == 8 and tr[0].world == ho[0].world == "w"
    tr, ho = split_holdout([clip], "last:25")
    np.testing.assert_array_equal(ho[0].frame_index, [8, 9])
    for bad in ("every:1", "last:100", "middle:3", "traversal:"):
        with pytest.raises(ValueError, match="bad --holdout"):
            split_holdout([clip], bad)
    with pytest.raises(ValueError, match="holds out no frame"):
        split_holdout([clip], "traversal:b")


def test_cli_trains_from_a_map_and_evaluates_held_out_keyframes(tmp_path, capsys):
    _write_map(tmp_path / "map.npz", k=15)
    out = tmp_path / "pn.pt"
    rc = train_main(["posenet", "--map", str(tmp_path / "map.npz"), "--holdout", "every:5", "--out", str(out),
                     "--size", "tiny", "--epochs", "1", "--device", "cpu", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    sidecar = json.loads((tmp_path / "pn.json").read_text())
    assert [d["frames"] for d in sidecar["data"]["train"]] == [12]
    assert [d["frames"] for d in sidecar["data"]["val"]] == [3]
    assert sidecar["metrics"]["frames"] == 3 and "retrieval" in sidecar["metrics"]
    rc = eval_main(["posenet", str(out), "--map", str(tmp_path / "map.npz"), "--holdout", "every:5",
                    "--device", "cpu", "--json", str(tmp_path / "e.json")])
    assert rc == 0
    m = json.loads((tmp_path / "e.json").read_text())["metrics"]
    assert m["frames"] == 3 and m["baselines_fitted_on"] == "training clips"
    assert "median_t_m" in capsys.readouterr().out
    _write_map(tmp_path / "old.npz", thumbs=False)
    rc = train_main(["posenet", "--map", str(tmp_path / "old.npz"), "--out", str(out), "--size", "tiny"])
    assert rc == 2 and "old.npz: the map has no keyframe images" in capsys.readouterr().err
