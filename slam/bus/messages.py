"""Typed payloads on the bus and their conversion to and from ``Message``.

Each payload has a ``*_message`` function (record -> Message) and a ``message_to_*``
function (Message -> record) that checks types, dtypes and shapes and raises
``BusMessageError("bad_payload", ...)`` when they do not fit. Arrays of decoded
records are read-only views of the received buffers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from slam.bus import topics
from slam.bus.codec import BusMessageError, Message
from slam.errors import DataError
from slam.geometry.camera import PinholeCamera
from slam.records import Frame, ImuSamples, StereoRig


@dataclass
class PoseEstimate:
    """The tracked pose of one frame: ``T_w_c`` 4x4 float64 (camera -> world); state e.g. "ok", "lost"."""

    frame_index: int
    stamp: float  # seconds
    T_w_c: np.ndarray
    state: str = "ok"


@dataclass
class KeyframeUpdate:
    """A keyframe created or moved (after BA / loop closure): its id, source frame and pose."""

    keyframe_id: int
    frame_index: int
    stamp: float  # seconds
    T_w_c: np.ndarray  # 4x4 float64


@dataclass
class DepthMap:
    """A dense depth map for one frame: H x W float32 metres, 0 = invalid; source e.g. "sensor", "cnn"."""

    frame_index: int
    stamp: float  # seconds
    depth: np.ndarray
    source: str = ""


@dataclass
class Descriptor:
    """A global image descriptor (e.g. NetVLAD), (D,) float32, of a keyframe or frame."""

    keyframe_id: int
    stamp: float  # seconds
    vector: np.ndarray


@dataclass
class RelocRequest:
    """Where am I? An image (H x W x 3 uint8 RGB) and/or its global descriptor."""

    frame_index: int
    stamp: float  # seconds
    image: np.ndarray | None = None
    descriptor: np.ndarray | None = None


@dataclass
class RelocAnswer:
    """Candidate keyframes (ids, scores: higher is better) and, from a pose regressor, a pose guess."""

    frame_index: int
    stamp: float  # seconds
    keyframe_ids: np.ndarray  # (K,) int64
    scores: np.ndarray  # (K,) float32
    T_w_c: np.ndarray | None = None  # 4x4 float64


@dataclass
class TrackedFeatures:
    """The keypoints of one tracked frame and which of them matched a map point (for viewers).

    uv: (N, 2) float32 distorted pixel coordinates of the full-size image; matched: (N,) bool;
    state: the tracker's state after this frame ("tracking", "lost", "initialising").
    """

    frame_index: int
    stamp: float  # seconds
    uv: np.ndarray
    matched: np.ndarray
    state: str = "ok"


@dataclass
class MapSnapshot:
    """The map at one moment (for viewers): world positions of (up to a cap of) its points and its keyframes.

    points_w: (P, 3) float32 metres, world frame; keyframe_ids: (K,) int64; T_w_c: (K, 4, 4) float64
    keyframe poses (camera -> world); n_points: the map's point count (>= P when capped).
    """

    frame_index: int  # the last frame tracked before the snapshot
    stamp: float  # seconds (of that frame)
    points_w: np.ndarray
    keyframe_ids: np.ndarray
    T_w_c: np.ndarray
    n_points: int = 0


@dataclass
class FrameCredit:
    """Flow control of a replay over the bus: the SLAM process tells the source what it has taken.

    Counts are cumulative since the start of the stream, so a lost credit message is made good by
    the next one. taken: frame messages the SLAM process took off the bus; granted: how many the
    source may have sent in all (taken + the frames it has room for); end_taken: it took the
    end-of-stream message (the source may exit: nothing it sent is left on the bus).
    """

    taken: int
    granted: int
    end_taken: bool = False


# ------------------------------------------------------------------ checks
def _bad(detail: str) -> BusMessageError:
    return BusMessageError("bad_payload", detail)


def _expect_type(msg: Message, type_: str) -> None:
    if msg.type != type_:
        raise _bad(f"expected a {type_!r} message, got {msg.type!r}")


def _array(msg: Message, name: str, dtype: str, shape: tuple[int | None, ...], optional: bool = False) -> Any:
    """``msg.arrays[name]`` after checking its dtype and shape (``None`` = any size on that axis)."""
    a = msg.arrays.get(name)
    if a is None:
        if optional:
            return None
        raise _bad(f"{msg.type} message lacks the array {name!r}")
    if a.dtype != dtype or a.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, a.shape)):
        raise _bad(f"{msg.type} array {name!r}: {a.dtype} {a.shape}, expected {np.dtype(dtype)} {shape}")
    return a


def _meta(msg: Message, key: str, kind: type, default: Any = ...) -> Any:
    v = msg.meta.get(key, default)
    if v is ...:
        raise _bad(f"{msg.type} message lacks meta {key!r}")
    if v is default:
        return v
    if not isinstance(v, kind) or (isinstance(v, bool) and kind is not bool):
        raise _bad(f"{msg.type} meta {key!r} has type {type(v).__name__}")
    return v


# A camera rarely changes between frames: the last one each way is kept, so that a frame does not
# pay for building and checking the camera again (half of the per-frame Python work).
_last_camera: tuple[PinholeCamera, dict] | None = None
_last_camera_in: tuple[dict, PinholeCamera] | None = None


def _camera_dict(camera: PinholeCamera) -> dict:
    global _last_camera
    last = _last_camera
    if last is None or last[0] is not camera:
        last = _last_camera = (camera, camera.to_dict())
    return last[1]


def _camera(d: object) -> PinholeCamera:
    global _last_camera_in
    last = _last_camera_in
    if last is not None and last[0] == d:
        return last[1]
    if not isinstance(d, dict):
        raise _bad("frame meta 'camera' is not a mapping")
    try:
        camera = PinholeCamera.from_dict(d)
    except DataError as e:
        raise _bad(f"frame camera: {e.reason}") from None
    _last_camera_in = (d, camera)
    return camera


def _pose(T: np.ndarray) -> np.ndarray:
    return np.asarray(T, dtype=np.float64).reshape(4, 4)


# ------------------------------------------------------------------ frames
def frame_message(frame: Frame, seq: int = 0, topic: str = topics.FRAMES, stereo: StereoRig | None = None) -> Message:
    """A camera frame: image, optional depth / right image / ground truth, IMU since the previous frame.

    ``stereo``: the rig of a stereo pair (right camera, ``T_l_r``), sent with the frame so the SLAM
    process can run stereo (:func:`message_stereo_rig`).
    """
    arrays: dict[str, np.ndarray] = {"image": frame.image}
    if frame.depth is not None:
        arrays["depth"] = frame.depth
    if frame.right is not None:
        arrays["right"] = frame.right
    if len(frame.imu):
        arrays.update(imu_t=frame.imu.t, imu_gyro=frame.imu.gyro, imu_accel=frame.imu.accel)
    if frame.T_w_c_gt is not None:
        arrays["T_w_c_gt"] = _pose(frame.T_w_c_gt)
    meta = {"index": int(frame.index), "camera": _camera_dict(frame.camera), "flags": sorted(frame.flags), "source": frame.source}
    if stereo is not None:
        arrays["T_l_r"] = _pose(stereo.T_l_r)
        meta["right_camera"] = _camera_dict(stereo.right)
    return Message(topic, topics.FRAME, seq, float(frame.timestamp), meta, arrays)


def message_stereo_rig(msg: Message) -> StereoRig | None:
    """The stereo rig a frame message carries, or None."""
    _expect_type(msg, topics.FRAME)
    if "right_camera" not in msg.meta:
        return None
    return StereoRig(_camera(_meta(msg, "right_camera", dict)), np.array(_array(msg, "T_l_r", "<f8", (4, 4))))


def message_to_frame(msg: Message) -> Frame:
    """The ``Frame`` of a frame message; its arrays are read-only views of the message buffers."""
    _expect_type(msg, topics.FRAME)
    camera = _camera(_meta(msg, "camera", dict))
    image = _array(msg, "image", "|u1", (camera.height, camera.width, 3))
    depth = _array(msg, "depth", "<f4", (camera.height, camera.width), optional=True)
    right = _array(msg, "right", "|u1", (camera.height, camera.width, 3), optional=True)
    imu = ImuSamples()
    if "imu_t" in msg.arrays:
        imu = _imu_arrays(msg, "imu_")
    flags = _meta(msg, "flags", list, [])
    if not all(isinstance(f, str) for f in flags):
        raise _bad("frame flags must be strings")
    return Frame(
        index=_meta(msg, "index", int),
        timestamp=msg.stamp,
        image=image,
        camera=camera,
        depth=depth,
        right=right,
        imu=imu,
        T_w_c_gt=_array(msg, "T_w_c_gt", "<f8", (4, 4), optional=True),
        flags=set(flags),
        source=_meta(msg, "source", str, ""),
    )


# ------------------------------------------------------------------ flow control
def frame_credit_message(c: FrameCredit, seq: int = 0, topic: str = topics.CREDIT) -> Message:
    if c.taken < 0 or c.granted < c.taken:
        raise ValueError(f"credit: taken {c.taken} and granted {c.granted} must satisfy 0 <= taken <= granted")
    meta = {"taken": int(c.taken), "granted": int(c.granted), "end_taken": bool(c.end_taken)}
    return Message(topic, topics.FRAME_CREDIT, seq, 0.0, meta)


def message_to_frame_credit(msg: Message) -> FrameCredit:
    _expect_type(msg, topics.FRAME_CREDIT)
    taken, granted = _meta(msg, "taken", int), _meta(msg, "granted", int)
    if taken < 0 or granted < taken:
        raise _bad(f"frame credit: taken {taken}, granted {granted}")
    return FrameCredit(taken, granted, _meta(msg, "end_taken", bool, False))


# ------------------------------------------------------------------ IMU
def imu_message(imu: ImuSamples, seq: int = 0, topic: str = topics.IMU) -> Message:
    """A batch of IMU samples (t seconds, gyro rad/s, accel m/s^2); stamp = the last sample's time."""
    stamp = float(imu.t[-1]) if len(imu) else 0.0
    arrays = {
        "t": np.asarray(imu.t, np.float64),
        "gyro": np.asarray(imu.gyro, np.float64),
        "accel": np.asarray(imu.accel, np.float64),
    }
    return Message(topic, topics.IMU_BATCH, seq, stamp, {}, arrays)


def _imu_arrays(msg: Message, prefix: str = "") -> ImuSamples:
    t = _array(msg, prefix + "t", "<f8", (None,))
    n = t.shape[0]
    return ImuSamples(t, _array(msg, prefix + "gyro", "<f8", (n, 3)), _array(msg, prefix + "accel", "<f8", (n, 3)))


def message_to_imu(msg: Message) -> ImuSamples:
    _expect_type(msg, topics.IMU_BATCH)
    return _imu_arrays(msg)


# ------------------------------------------------------------------ poses, keyframes
def pose_message(pose: PoseEstimate, seq: int = 0, topic: str = topics.POSES) -> Message:
    meta = {"frame_index": int(pose.frame_index), "state": pose.state}
    return Message(topic, topics.POSE, seq, float(pose.stamp), meta, {"T_w_c": _pose(pose.T_w_c)})


def message_to_pose(msg: Message) -> PoseEstimate:
    _expect_type(msg, topics.POSE)
    T = _array(msg, "T_w_c", "<f8", (4, 4))
    return PoseEstimate(_meta(msg, "frame_index", int), msg.stamp, T, _meta(msg, "state", str, "ok"))


def keyframe_message(kf: KeyframeUpdate, seq: int = 0, topic: str = topics.KEYFRAMES) -> Message:
    meta = {"keyframe_id": int(kf.keyframe_id), "frame_index": int(kf.frame_index)}
    return Message(topic, topics.KEYFRAME, seq, float(kf.stamp), meta, {"T_w_c": _pose(kf.T_w_c)})


def message_to_keyframe(msg: Message) -> KeyframeUpdate:
    _expect_type(msg, topics.KEYFRAME)
    T = _array(msg, "T_w_c", "<f8", (4, 4))
    return KeyframeUpdate(_meta(msg, "keyframe_id", int), _meta(msg, "frame_index", int), msg.stamp, T)


# ------------------------------------------------------------------ depth, descriptors
def depth_message(d: DepthMap, seq: int = 0, topic: str = topics.DEPTH) -> Message:
    meta = {"frame_index": int(d.frame_index), "source": d.source}
    return Message(topic, topics.DEPTH_MAP, seq, float(d.stamp), meta, {"depth": np.asarray(d.depth, np.float32)})


def message_to_depth(msg: Message) -> DepthMap:
    _expect_type(msg, topics.DEPTH_MAP)
    depth = _array(msg, "depth", "<f4", (None, None))
    return DepthMap(_meta(msg, "frame_index", int), msg.stamp, depth, _meta(msg, "source", str, ""))


def descriptor_message(d: Descriptor, seq: int = 0, topic: str = topics.DESCRIPTORS) -> Message:
    vec = np.asarray(d.vector, np.float32).reshape(-1)
    return Message(topic, topics.DESCRIPTOR, seq, float(d.stamp), {"keyframe_id": int(d.keyframe_id)}, {"vector": vec})


def message_to_descriptor(msg: Message) -> Descriptor:
    _expect_type(msg, topics.DESCRIPTOR)
    return Descriptor(_meta(msg, "keyframe_id", int), msg.stamp, _array(msg, "vector", "<f4", (None,)))


# ------------------------------------------------------------------ relocalisation
def reloc_request_message(r: RelocRequest, seq: int = 0, topic: str = topics.RELOC) -> Message:
    arrays = {}
    if r.image is not None:
        arrays["image"] = r.image
    if r.descriptor is not None:
        arrays["descriptor"] = np.asarray(r.descriptor, np.float32).reshape(-1)
    if not arrays:
        raise ValueError("a relocalisation request needs an image or a descriptor")
    return Message(topic, topics.RELOC_REQUEST, seq, float(r.stamp), {"frame_index": int(r.frame_index)}, arrays)


def message_to_reloc_request(msg: Message) -> RelocRequest:
    _expect_type(msg, topics.RELOC_REQUEST)
    image = _array(msg, "image", "|u1", (None, None, 3), optional=True)
    descriptor = _array(msg, "descriptor", "<f4", (None,), optional=True)
    if image is None and descriptor is None:
        raise _bad("relocalisation request without image or descriptor")
    return RelocRequest(_meta(msg, "frame_index", int), msg.stamp, image, descriptor)


def reloc_answer_message(a: RelocAnswer, seq: int = 0, topic: str = topics.RELOC) -> Message:
    arrays = {
        "keyframe_ids": np.asarray(a.keyframe_ids, np.int64).reshape(-1),
        "scores": np.asarray(a.scores, np.float32).reshape(-1),
    }
    if a.T_w_c is not None:
        arrays["T_w_c"] = _pose(a.T_w_c)
    return Message(topic, topics.RELOC_ANSWER, seq, float(a.stamp), {"frame_index": int(a.frame_index)}, arrays)


def message_to_reloc_answer(msg: Message) -> RelocAnswer:
    _expect_type(msg, topics.RELOC_ANSWER)
    ids = _array(msg, "keyframe_ids", "<i8", (None,))
    scores = _array(msg, "scores", "<f4", (ids.shape[0],))
    T = _array(msg, "T_w_c", "<f8", (4, 4), optional=True)
    return RelocAnswer(_meta(msg, "frame_index", int), msg.stamp, ids, scores, T)


# ------------------------------------------------------------------ viewer streams
def tracked_features_message(t: TrackedFeatures, seq: int = 0, topic: str = topics.TRACKING) -> Message:
    uv = np.asarray(t.uv, np.float32).reshape(-1, 2)
    matched = np.asarray(t.matched, bool).reshape(-1)
    if matched.shape[0] != uv.shape[0]:
        raise ValueError(f"{uv.shape[0]} keypoints but {matched.shape[0]} matched flags")
    meta = {"frame_index": int(t.frame_index), "state": t.state}
    return Message(topic, topics.TRACKED_FEATURES, seq, float(t.stamp), meta, {"uv": uv, "matched": matched})


def message_to_tracked_features(msg: Message) -> TrackedFeatures:
    _expect_type(msg, topics.TRACKED_FEATURES)
    uv = _array(msg, "uv", "<f4", (None, 2))
    matched = _array(msg, "matched", "|b1", (uv.shape[0],))
    return TrackedFeatures(_meta(msg, "frame_index", int), msg.stamp, uv, matched, _meta(msg, "state", str, "ok"))


def map_snapshot_message(m: MapSnapshot, seq: int = 0, topic: str = topics.MAP) -> Message:
    arrays = {
        "points_w": np.asarray(m.points_w, np.float32).reshape(-1, 3),
        "keyframe_ids": np.asarray(m.keyframe_ids, np.int64).reshape(-1),
        "T_w_c": np.asarray(m.T_w_c, np.float64).reshape(-1, 4, 4),
    }
    if arrays["keyframe_ids"].shape[0] != arrays["T_w_c"].shape[0]:
        raise ValueError("one keyframe id per keyframe pose")
    n_points = max(int(m.n_points), arrays["points_w"].shape[0])
    meta = {"frame_index": int(m.frame_index), "n_points": n_points}
    return Message(topic, topics.MAP_SNAPSHOT, seq, float(m.stamp), meta, arrays)


def message_to_map_snapshot(msg: Message) -> MapSnapshot:
    _expect_type(msg, topics.MAP_SNAPSHOT)
    points = _array(msg, "points_w", "<f4", (None, 3))
    ids = _array(msg, "keyframe_ids", "<i8", (None,))
    T = _array(msg, "T_w_c", "<f8", (ids.shape[0], 4, 4))
    n_points = _meta(msg, "n_points", int, points.shape[0])
    return MapSnapshot(_meta(msg, "frame_index", int), msg.stamp, points, ids, T, n_points)
