"""The sidewalk simulator: time-correlated sensor readings and obstacle labels.

A delivery robot drives along a sidewalk among pedestrians, cyclists, dogs, poles and
benches (:data:`CLASSES`); each tick its sensors give one reading of ``d = 16`` features
(:data:`FEATURES`) and the label is the set of classes in its path. Everything is
deterministic from the seed. :mod:`.reading` says what a reading is, :mod:`.world` moves
the robot and the obstacles, :mod:`.sensors` turns the world into a reading, :mod:`.run`
steps both at a rate (:func:`simulate`) and :mod:`.bag` writes a run as a bag. The model
and why a linear one cannot separate the classes: ``docs/simulator.md``; design:
docs/architecture.md, "The simulator".
"""

from __future__ import annotations

from robot_daemon.sim.bag import write_bag
from robot_daemon.sim.reading import (
    CLASSES,
    FEATURE_NAMES,
    FEATURES,
    HORIZON_M,
    MAX_RANGE_M,
    C,
    D,
    Feature,
)
from robot_daemon.sim.run import (
    MAX_READINGS,
    PROGRESS_EVERY,
    SIM_EPOCH_S,
    Progress,
    SimData,
    describe,
    simulate,
)

__all__ = [
    "CLASSES", "FEATURES", "FEATURE_NAMES", "HORIZON_M", "MAX_RANGE_M", "MAX_READINGS",
    "PROGRESS_EVERY", "SIM_EPOCH_S", "C", "D", "Feature", "Progress", "SimData", "describe",
    "simulate", "write_bag",
]
