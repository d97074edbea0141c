"""Typed payloads: every record survives encode/decode unchanged; ill-typed payloads are refused."""

from __future__ import annotations

import numpy as np
import pytest

from slam.bus import messages as m
from slam.bus.codec import BusMessageError, Message, decode, encode
from slam.geometry.camera import PinholeCamera
from slam.records import Frame, ImuSamples


def over_wire(msg: Message) -> Message:
    return decode([bytes(f) if not isinstance(f, bytes) else f for f in encode(msg)])


def make_frame(h: int = 48, w: int = 64, stereo: bool = True) -> Frame:
    rng = np.random.default_rng(1)
    cam = PinholeCamera(w, h, 50.0, 51.0, w / 2 - 0.5, h / 2 + 0.5, dist=(0.1, -0.02, 0.001, 0.0, 0.003))
    t = np.linspace(0.9, 1.0, 11)
    T = np.eye(4)
    T[:3, 3] = [1.0, -2.0, 0.5]
    return Frame(
        index=42,
        timestamp=1.0,
        image=rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        camera=cam,
        depth=rng.random((h, w), dtype=np.float32) * 5,
        right=rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if stereo else None,
        imu=ImuSamples(t, rng.normal(size=(11, 3)), rng.normal(size=(11, 3))),
        T_w_c_gt=T,
        flags={"depth_missing", "x"},
        source="/data/rgb/1.png",
    )


def assert_frames_equal(a: Frame, b: Frame) -> None:
    assert (a.index, a.timestamp, a.camera, a.flags, a.source) == (b.index, b.timestamp, b.camera, b.flags, b.source)
    for name in ("image", "depth", "right", "T_w_c_gt"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)
    for name in ("t", "gyro", "accel"):
        np.testing.assert_array_equal(getattr(a.imu, name), getattr(b.imu, name))


def test_frame_round_trip():
    f = make_frame()
    back = m.message_to_frame(over_wire(m.frame_message(f, seq=3)))
    assert_frames_equal(f, back)
    assert not back.image.flags.writeable


def test_frame_carries_its_stereo_rig():
    from slam.records import StereoRig

    f = make_frame()
    right = PinholeCamera(64, 48, 50.5, 51.0, 31.0, 24.0)
    T_l_r = np.eye(4)
    T_l_r[:3, 3] = [0.12, 0.0, 0.0]
    msg = over_wire(m.frame_message(f, stereo=StereoRig(right, T_l_r)))
    rig = m.message_stereo_rig(msg)
    assert rig.right == right and rig.baseline == pytest.approx(0.12)
    np.testing.assert_array_equal(rig.T_l_r, T_l_r)
    assert_frames_equal(f, m.message_to_frame(msg))
    assert m.message_stereo_rig(over_wire(m.frame_message(f))) is None


def test_frame_round_trip_minimal_and_fisheye():
    cam = PinholeCamera(32, 24, 20.0, 20.0, 16.0, 12.0, dist=(0.01, 0.0, 0.0, 0.0), model="fisheye")
    f = Frame(0, 0.5, np.zeros((24, 32, 3), np.uint8), cam)
    back = m.message_to_frame(over_wire(m.frame_message(f)))
    assert_frames_equal(f, back)
    assert back.depth is None and back.right is None and len(back.imu) == 0


def test_frame_payload_checks():
    msg = over_wire(m.frame_message(make_frame()))
    bad_image = Message(msg.topic, msg.type, meta=msg.meta, arrays={**msg.arrays, "image": np.zeros((48, 64, 3), np.float32)})
    with pytest.raises(BusMessageError, match="image"):
        m.message_to_frame(bad_image)
    wrong_size = Message(msg.topic, msg.type, meta=msg.meta, arrays={**msg.arrays, "depth": np.zeros((10, 10), np.float32)})
    with pytest.raises(BusMessageError, match="depth"):
        m.message_to_frame(wrong_size)
    with pytest.raises(BusMessageError, match="camera"):
        m.message_to_frame(Message(msg.topic, msg.type, meta={**msg.meta, "camera": {"fx": 1}}, arrays=msg.arrays))
    with pytest.raises(BusMessageError, match="index"):
        m.message_to_frame(Message(msg.topic, msg.type, meta={**msg.meta, "index": "7"}, arrays=msg.arrays))
    with pytest.raises(BusMessageError, match="expected a 'frame'"):
        m.message_to_frame(Message(msg.topic, "pose", meta=msg.meta, arrays=msg.arrays))


def test_small_payloads_round_trip():
    rng = np.random.default_rng(2)
    T = np.eye(4)
    T[:3, 3] = rng.normal(size=3)
    imu = ImuSamples(np.linspace(0, 0.1, 20), rng.normal(size=(20, 3)), rng.normal(size=(20, 3)))
    back = m.message_to_imu(over_wire(m.imu_message(imu)))
    np.testing.assert_array_equal(back.gyro, imu.gyro)
    assert len(back) == 20

    pose = m.message_to_pose(over_wire(m.pose_message(m.PoseEstimate(5, 0.2, T, "lost"))))
    assert (pose.frame_index, pose.stamp, pose.state) == (5, 0.2, "lost")
    np.testing.assert_array_equal(pose.T_w_c, T)

    kf = m.message_to_keyframe(over_wire(m.keyframe_message(m.KeyframeUpdate(3, 9, 0.3, T))))
    assert (kf.keyframe_id, kf.frame_index) == (3, 9)
    np.testing.assert_array_equal(kf.T_w_c, T)

    d = rng.random((6, 8), dtype=np.float32)
    dm = m.message_to_depth(over_wire(m.depth_message(m.DepthMap(4, 0.4, d, "cnn"))))
    assert dm.source == "cnn" and dm.frame_index == 4
    np.testing.assert_array_equal(dm.depth, d)

    v = rng.random(4096, dtype=np.float32)
    desc = m.message_to_descriptor(over_wire(m.descriptor_message(m.Descriptor(8, 0.5, v))))
    np.testing.assert_array_equal(desc.vector, v)

    req = m.message_to_reloc_request(over_wire(m.reloc_request_message(m.RelocRequest(11, 0.6, descriptor=v))))
    assert req.image is None and req.frame_index == 11
    ans = m.message_to_reloc_answer(
        over_wire(m.reloc_answer_message(m.RelocAnswer(11, 0.6, np.array([3, 1]), np.array([0.9, 0.5]), T)))
    )
    np.testing.assert_array_equal(ans.keyframe_ids, [3, 1])
    np.testing.assert_allclose(ans.scores, [0.9, 0.5])
    np.testing.assert_array_equal(ans.T_w_c, T)


def test_pose_with_wrong_shape_is_refused():
    msg = Message("poses", "pose", meta={"frame_index": 1}, arrays={"T_w_c": np.eye(3)})
    with pytest.raises(BusMessageError, match="T_w_c"):
        m.message_to_pose(msg)


def test_frames_with_changing_cameras_keep_their_own():
    a, b = make_frame(), make_frame()
    b.camera = PinholeCamera(64, 48, 70.0, 70.0, 32.0, 24.0)
    for f in (a, b, a, b):
        assert m.message_to_frame(over_wire(m.frame_message(f))).camera == f.camera


def test_frame_credit_round_trip_and_checks():
    c = m.message_to_frame_credit(over_wire(m.frame_credit_message(m.FrameCredit(7, 11, end_taken=True))))
    assert (c.taken, c.granted, c.end_taken) == (7, 11, True)
    assert over_wire(m.frame_credit_message(m.FrameCredit(0, 4))).arrays == {}  # a JSON header only
    with pytest.raises(ValueError):
        m.frame_credit_message(m.FrameCredit(5, 4))
    for meta in ({"taken": 3}, {"taken": 5, "granted": 4}, {"taken": "1", "granted": 4}, {"taken": -1, "granted": 2}):
        with pytest.raises(BusMessageError):
            m.message_to_frame_credit(Message("credit", "frame_credit", meta=meta))
