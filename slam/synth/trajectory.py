"""A smooth analytic loop trajectory of the body (IMU) frame with closed-form derivatives.

World frame: z up, gravity ``(0, 0, -g)``. Body frame: x forward, y left, z up.
Position: an ellipse around the room centre travelled once per loop period
(with a smooth along-track speed modulation) plus a vertical sinusoid and a
small fast wobble (so the accelerometer sees more than gravity).
Orientation: ``R_w_b = Rz(yaw) Ry(pitch) Rx(roll)``, yaw following the ellipse
angle (the camera looks outward while moving sideways) plus oscillations.
Every function is a sum of harmonics of ``u = 2 pi t / T``, so the pose at
``t = T`` equals the pose at ``t = 0`` (the loop closes) and all derivatives
are exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slam.geometry.se3 import make_pose
from slam.geometry.so3 import so3_exp
from slam.synth.config import SynthConfig

# Camera axes (x right, y down, z forward) expressed in the body frame (x forward, y left, z up).
R_BODY_CAM_NOMINAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass
class BodyState:
    """Body state at time ``t`` [s]: pose, world-frame velocity/acceleration, body angular velocity."""

    t: float
    R_w_b: np.ndarray  # (3, 3) body -> world
    p_w: np.ndarray  # (3,) body origin in world [m]
    v_w: np.ndarray  # (3,) velocity in world [m/s]
    a_w: np.ndarray  # (3,) acceleration in world [m/s^2] (kinematic, gravity not included)
    omega_b: np.ndarray  # (3,) angular velocity in the body frame [rad/s], = vee(R^T dR/dt)

    @property
    def T_w_b(self) -> np.ndarray:
        return make_pose(self.R_w_b, self.p_w)


def _harmonic(
    amp: float, k: float, phase: float, w0: float, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``f = amp sin(k w0 t + phase)`` and its first two time derivatives."""
    arg = k * w0 * t + phase
    s, c = np.sin(arg), np.cos(arg)
    kw = k * w0
    return amp * s, amp * kw * c, -amp * kw * kw * s


def _rx(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def _ry(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _rz(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


class LoopTrajectory:
    """Closed-form body trajectory; times ``t`` are seconds since the sequence start."""

    def __init__(self, cfg: SynthConfig, center_w: tuple[float, float] = (0.0, 0.0)):
        self.cfg = cfg
        self.period = cfg.loop_period
        self.w0 = 2.0 * np.pi / self.period  # loop angular rate [rad/s]
        self.center_w = np.asarray(center_w, dtype=np.float64)
        self.T_b_c = make_pose(
            R_BODY_CAM_NOMINAL @ so3_exp(np.deg2rad(np.asarray(cfg.T_b_c_rotation_deg))),
            np.asarray(cfg.T_b_c_translation, dtype=np.float64),
        )

    # ----------------------------------------------------------- scalar parts
    def _phi(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ellipse angle: ``phi = u + eps sin(u)``, ``u = w0 t`` (speed varies smoothly, loop still closes)."""
        e, e1, e2 = _harmonic(self.cfg.speed_mod, 1.0, 0.0, self.w0, t)
        return self.w0 * t + e, self.w0 + e1, e2

    def _angles(self, t: np.ndarray, phi: tuple) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(yaw, pitch, roll), each with first and second derivatives [rad, rad/s, rad/s^2]."""
        c, w0 = self.cfg, self.w0
        y = _harmonic(c.yaw_amp, 3.0, 0.4, w0, t)
        yaw = (phi[0] + c.yaw_offset + y[0], phi[1] + y[1], phi[2] + y[2])
        p = _harmonic(c.pitch_amp, 2.0, 1.1, w0, t)
        pitch = (c.pitch_mean + p[0], p[1], p[2])
        roll = _harmonic(c.roll_amp, 5.0, 0.3, w0, t)
        return [yaw, pitch, roll]

    # ------------------------------------------------------------ full state
    def states(self, t: np.ndarray) -> dict[str, np.ndarray]:
        """Vectorised state at times ``t`` (N,): R_w_b (N,3,3), p_w, v_w, a_w, omega_b (N,3)."""
        t = np.asarray(t, dtype=np.float64).reshape(-1)
        c = self.cfg
        phi, dphi, ddphi = self._phi(t)
        s, co = np.sin(phi), np.cos(phi)
        ax, by = c.radius_x, c.radius_y
        z, dz, ddz = _harmonic(c.height_amp, 2.0, 0.7, self.w0, t)
        p = np.stack([self.center_w[0] + ax * co, self.center_w[1] + by * s, c.height_m + z], -1)
        v = np.stack([-ax * s * dphi, by * co * dphi, dz], -1)
        a = np.stack(
            [-ax * co * dphi**2 - ax * s * ddphi, -by * s * dphi**2 + by * co * ddphi, ddz], -1
        )
        # fast small wobble (harmonics 7, 8, 9 of the loop): accelerations for IMU excitation
        for axis, (k, amp, phase) in enumerate(((7.0, 1.0, 0.3), (8.0, 1.0, 1.9), (9.0, 0.5, 4.0))):
            w, dw, ddw = _harmonic(c.wobble_amp * amp, k, phase, self.w0, t)
            p[:, axis] += w
            v[:, axis] += dw
            a[:, axis] += ddw
        (yaw, dyaw, _), (pitch, dpitch, _), (roll, droll, _) = self._angles(t, (phi, dphi, ddphi))
        Rz, Ry, Rx = _rz(yaw), _ry(pitch), _rx(roll)
        R = Rz @ Ry @ Rx
        # omega_b = vee(R^T Rdot) = Rx^T Ry^T (dyaw e_z) + Rx^T (dpitch e_y) + droll e_x
        zeros = np.zeros_like(t)
        RxT = np.swapaxes(Rx, -1, -2)
        RyT = np.swapaxes(Ry, -1, -2)
        w_yaw = np.einsum("nij,njk,nk->ni", RxT, RyT, np.stack([zeros, zeros, dyaw], -1))
        w_pitch = np.einsum("nij,nj->ni", RxT, np.stack([zeros, dpitch, zeros], -1))
        omega = w_yaw + w_pitch + np.stack([droll, zeros, zeros], -1)
        return {"t": t, "R_w_b": R, "p_w": p, "v_w": v, "a_w": a, "omega_b": omega}

    def state(self, t: float) -> BodyState:
        """Body state at one time ``t`` [s since start]."""
        s = self.states(np.array([t]))
        return BodyState(float(t), s["R_w_b"][0], s["p_w"][0], s["v_w"][0], s["a_w"][0], s["omega_b"][0])

    def poses_w_b(self, t: np.ndarray) -> np.ndarray:
        """(N, 4, 4) body poses ``T_w_b`` at times ``t``."""
        s = self.states(t)
        T = np.tile(np.eye(4), (len(s["t"]), 1, 1))
        T[:, :3, :3] = s["R_w_b"]
        T[:, :3, 3] = s["p_w"]
        return T

    def poses_w_c(self, t: np.ndarray) -> np.ndarray:
        """(N, 4, 4) camera poses ``T_w_c = T_w_b T_b_c``."""
        return self.poses_w_b(t) @ self.T_b_c
