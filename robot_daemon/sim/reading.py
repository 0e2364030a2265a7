"""What one simulated reading is: the d = 16 features with their units, the c = 8 classes.

Design: docs/architecture.md, "The simulator".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Feature:
    """One sensor feature: its name, unit and what it measures."""

    name: str
    unit: str
    description: str


FEATURES: Final = (
    Feature("range_left_m", "m", "time-of-flight range finder at -25 deg (left)"),
    Feature("range_center_m", "m", "time-of-flight range finder straight ahead"),
    Feature("range_right_m", "m", "time-of-flight range finder at +25 deg (right)"),
    Feature("lidar_range_m", "m", "range of the nearest lidar cluster"),
    Feature("lidar_width_deg", "deg", "angular width of the nearest lidar cluster"),
    Feature("lidar_height_deg", "deg", "angular height of the nearest lidar cluster"),
    Feature("radar_closing_mps", "m/s", "closing speed of the strongest radar return"),
    Feature("radar_rcs_dbsm", "dBsm", "radar cross-section of the strongest return"),
    Feature("radar_micro_doppler_mps", "m/s", "micro-Doppler spread (limbs, wheels)"),
    Feature("thermal_peak_c", "degC", "hottest pixel of the 8x8 thermopile array"),
    Feature("thermal_warm_frac", "1", "fraction of thermal pixels 3 degC above ambient"),
    Feature("ambient_temp_c", "degC", "air temperature"),
    Feature("sound_level_dba", "dBA", "microphone sound level"),
    Feature("sound_centroid_hz", "Hz", "spectral centroid of the sound"),
    Feature("vibration_rms_g", "g", "IMU vibration RMS (surface texture x speed)"),
    Feature("robot_speed_mps", "m/s", "the robot's own speed (wheel odometry)"),
)
"""The d = 16 features of a reading, in column order."""

CLASSES: Final = (
    "pedestrian",
    "cyclist",
    "e_scooter",
    "dog",
    "stroller",
    "trash_can",
    "pole",
    "bench",
)
"""The c = 8 obstacle classes, in label column order."""

FEATURE_NAMES: Final = tuple(f.name for f in FEATURES)
D: Final = len(FEATURES)
C: Final = len(CLASSES)

MAX_RANGE_M: Final = 8.0
"""Range finders report exactly this when they get no return (nothing, or a dropout)."""
HORIZON_M: Final = 6.0
"""Obstacles are labelled within this range; the sensors see them from MAX_RANGE_M."""
#: Sensor groups that drop out together (how a dropout reads: robot_daemon.sim.sensors;
#: see docs/simulator.md).
GROUPS: Final = ("range_left", "range_center", "range_right", "lidar", "radar", "thermal",
                 "mic")
