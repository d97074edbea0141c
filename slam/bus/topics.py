"""Topic (stream) and service names on the bus, and the message types they carry.

A subscriber filters on the topic frame by prefix, so no topic name here is a prefix
of another; ``Subscriber`` also checks the exact name.
"""

from __future__ import annotations

# streams (PUB/SUB)
FRAMES = "frames"  # camera frames: image, optional depth / right image, IMU since the previous frame
IMU = "imu"  # IMU batches between frames
POSES = "poses"  # tracked camera poses T_w_c, one per frame
KEYFRAMES = "keyframes"  # new or updated keyframes (id, pose)
DEPTH = "depth"  # dense depth maps (learned or sensor), per frame index
DESCRIPTORS = "descriptors"  # global image descriptors (NetVLAD), per keyframe
RELOC = "reloc"  # relocalisation requests and answers
TRACKING = "tracking"  # per frame: the keypoints and which of them matched map points (for viewers)
MAP = "map"  # snapshots of the map: point positions and keyframe poses (for viewers)
CREDIT = "credit"  # SLAM process -> replay source: frames taken, how many more it may send (flow control)

STREAMS = (FRAMES, IMU, POSES, KEYFRAMES, DEPTH, DESCRIPTORS, RELOC, TRACKING, MAP, CREDIT)

# message types (the header's ``type``)
FRAME = "frame"
IMU_BATCH = "imu"
POSE = "pose"
KEYFRAME = "keyframe"
DEPTH_MAP = "depth"
DESCRIPTOR = "descriptor"
RELOC_REQUEST = "reloc_request"
RELOC_ANSWER = "reloc_answer"
TRACKED_FEATURES = "tracked_features"
MAP_SNAPSHOT = "map_snapshot"
FRAME_CREDIT = "frame_credit"
HEARTBEAT = "heartbeat"  # RPC: asks an inference server for its name, version and models
ERROR = "error"  # RPC: an answer saying why a request failed (``meta["error"]``)
