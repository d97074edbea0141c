"""Live sensors: a camera through OpenCV, an IMU on a serial port, and their clock alignment.

:mod:`~slam.sensors.camera` (``LiveCamera``), :mod:`~slam.sensors.imu_serial` (``SerialImu``,
``parse_imu_spec``, ``find_serial_port``), :mod:`~slam.sensors.imu_protocol` (the IMU line
protocol), :mod:`~slam.sensors.clock` (``ClockAligner``), :mod:`~slam.sensors.live`
(``LiveSource``: frames with their IMU samples).
"""

from slam.sensors.camera import CameraError, LiveCamera, resolve_source
from slam.sensors.clock import ClockAligner
from slam.sensors.imu_protocol import ImuLineError, ImuSample, parse_imu_line
from slam.sensors.imu_serial import (
    DEFAULT_BAUD,
    ImuError,
    ImuSpec,
    SerialImu,
    find_serial_port,
    parse_imu_spec,
)
from slam.sensors.live import LiveSource, open_live_source

__all__ = [
    "DEFAULT_BAUD",
    "CameraError",
    "ClockAligner",
    "ImuError",
    "ImuLineError",
    "ImuSample",
    "ImuSpec",
    "LiveCamera",
    "LiveSource",
    "SerialImu",
    "find_serial_port",
    "open_live_source",
    "parse_imu_line",
    "parse_imu_spec",
    "resolve_source",
]
