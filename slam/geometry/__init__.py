"""Pure geometry on numpy arrays: rotations, rigid/similarity transforms, alignment, cameras, triangulation."""

from slam.geometry.align import umeyama, umeyama_transform
from slam.geometry.camera import PinholeCamera
from slam.geometry.se3 import (
    inv_pose,
    make_pose,
    normalize_pose,
    se3_exp,
    se3_log,
    sim3_exp,
    sim3_inverse,
    sim3_log,
    sim3_scale,
    transform_points,
)
from slam.geometry.so3 import (
    hat,
    left_jacobian,
    project_to_so3,
    quat_to_rot,
    rot_to_quat,
    rotation_angle,
    so3_exp,
    so3_log,
    vee,
)
from slam.geometry.triangulation import (
    depths_in_camera,
    parallax_deg,
    reprojection_error,
    triangulate_dlt,
)

__all__ = [
    "PinholeCamera",
    "depths_in_camera",
    "hat",
    "inv_pose",
    "left_jacobian",
    "make_pose",
    "normalize_pose",
    "parallax_deg",
    "project_to_so3",
    "quat_to_rot",
    "reprojection_error",
    "rot_to_quat",
    "rotation_angle",
    "se3_exp",
    "se3_log",
    "sim3_exp",
    "sim3_inverse",
    "sim3_log",
    "sim3_scale",
    "so3_exp",
    "so3_log",
    "transform_points",
    "triangulate_dlt",
    "umeyama",
    "umeyama_transform",
    "vee",
]
