"""A simulated run: :func:`simulate` steps the world and reads its sensors at a fixed rate.

Design: docs/architecture.md, "The simulator".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from robot_daemon.errors import ConfigError
from robot_daemon.sim import sensors
from robot_daemon.sim.reading import CLASSES, C, D
from robot_daemon.sim.world import World

SIM_EPOCH_S: Final = 1_767_225_600.0
"""Sensor time of the first reading: 2026-01-01T00:00:00Z (fixed, for determinism)."""

_BURN_IN_S: Final = 30.0
#: Readings one run may simulate: X alone is 64 bytes a reading and the simulator steps
#: at roughly 15,000 readings/s, so this is about 640 MB and 10 minutes.
MAX_READINGS: Final = 10_000_000
#: Readings between two calls of a ``progress`` callback (a few milliseconds of work).
PROGRESS_EVERY: Final = 256

Progress = Callable[[int, int], None]
"""``progress(done, total)``: readings simulated (or written) so far, of ``total``."""


@dataclass(frozen=True, slots=True, eq=False)
class SimData:
    """A simulated run.

    Attributes:
        t: sensor times, shape (n,), float64 seconds from :data:`SIM_EPOCH_S`, spaced
            ``1 / rate_hz``.
        X: readings, shape (n, 16), float32, finite; columns follow :data:`FEATURES`.
        Y: labels, shape (n, 8), uint8 in {0, 1}; columns follow :data:`CLASSES`.
        seed: the seed that produced the run.
        rate_hz: readings per second.
    """

    t: NDArray[np.float64]
    X: NDArray[np.float32]
    Y: NDArray[np.uint8]
    seed: int
    rate_hz: float

    @property
    def n(self) -> int:
        """Number of readings."""
        return int(self.t.shape[0])


def simulate(
    duration_s: float,
    rate_hz: float = 50.0,
    seed: int = 0,
    *,
    calibration_drift: float = 0.0,
    progress: Progress | None = None,
) -> SimData:
    """Simulate ``duration_s`` seconds of sidewalk driving at ``rate_hz`` readings a second.

    Args:
        duration_s: simulated time, > 0.
        rate_hz: readings per second, > 0 (the world advances in steps of 1 / rate_hz).
        seed: seeds the one ``np.random.Generator`` behind everything.
        calibration_drift: systematic sensor miscalibration; 0 is a calibrated robot,
            1 a robot whose range finders read 6 % long, thermal 2.5 degC warm, ...
        progress: called every :data:`PROGRESS_EVERY` readings and at the end with the
            readings done and their total (``sim`` draws its progress line from it).

    Returns:
        ``SimData`` with ``n = round(duration_s * rate_hz)`` readings.

    Raises:
        ValueError: a non-positive duration or rate.
        ConfigError: a negative seed, or more than :data:`MAX_READINGS` readings.
    """
    if not (0 < duration_s < math.inf and 0 < rate_hz < math.inf):
        raise ValueError(f"duration_s and rate_hz must be positive, got {duration_s}, {rate_hz}")
    if not duration_s * rate_hz <= MAX_READINGS:  # also catches an infinite product
        raise ConfigError(
            f"{duration_s:g} s at {rate_hz:g} Hz is {duration_s * rate_hz:.3g} readings;"
            f" a simulated bag holds at most {MAX_READINGS:,} (about"
            f" {MAX_READINGS / 50 / 3600:.0f} h at 50 Hz): shorten --duration or lower --rate"
        )
    if seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed}")
    if not math.isfinite(calibration_drift):
        raise ValueError(f"calibration_drift must be finite, got {calibration_drift}")
    n = max(1, round(duration_s * rate_hz))
    dt = 1.0 / rate_hz
    world = World(np.random.default_rng(seed), calibration_drift)
    # Start in the middle of a walk, not on an empty sidewalk: run the world for a while
    # first, in steps that do not depend on the rate (the same seed gives the same scene).
    for _ in range(round(_BURN_IN_S / 0.1)):
        world.advance(0.1)
    X = np.empty((n, D), dtype=np.float32)
    Y = np.empty((n, C), dtype=np.uint8)
    for i in range(n):
        world.advance(dt)
        X[i] = sensors.sense(world, dt)
        Y[i] = world.labels()
        if progress is not None and (i + 1) % PROGRESS_EVERY == 0:
            progress(i + 1, n)
    if progress is not None:
        progress(n, n)
    t = SIM_EPOCH_S + np.arange(n, dtype=np.float64) * dt
    return SimData(t=t, X=X, Y=Y, seed=seed, rate_hz=rate_hz)


def describe(data: SimData) -> str:
    """A human-readable summary of a run: size, time span and how often each class shows."""
    present = data.Y.mean(axis=0) if data.n else np.zeros(C)
    lines = [
        f"readings:   {data.n} at {data.rate_hz:g} Hz ({data.n / data.rate_hz:.1f} s), "
        f"seed {data.seed}",
        f"d, c:       {D}, {C}",
        f"obstacles:  {np.mean(data.Y.sum(axis=1)):.2f} classes in the path on average, "
        f"{np.mean(data.Y.sum(axis=1) >= 2):.1%} of readings with two or more",
        "present:    " + ", ".join(f"{name} {p:.1%}" for name, p in zip(CLASSES, present,
                                                                         strict=True)),
    ]
    return "\n".join(lines)
