"""The simulated sidewalk: the robot, the obstacles around it, and how they move.

Design: docs/architecture.md, "The simulator".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import numpy as np
from numpy.typing import NDArray

from robot_daemon.sim.reading import GROUPS, HORIZON_M, MAX_RANGE_M, C, D

_FOV_DEG: Final = 40.0  # an obstacle is labelled while within the sensors' +-40 deg
_CRUISE_MPS: Final = 1.6


@dataclass(frozen=True, slots=True)
class Profile:
    """How one obstacle class looks to the sensors (means; individuals vary)."""

    width_m: float
    height_m: float
    speed_mps: float  # own speed when moving
    p_moving: float  # probability an individual moves at all
    p_oncoming: float  # of movers: walks toward the robot (else away / overtakes)
    body_c: float | None  # surface temperature of living things; None: ambient + sun
    sun_gain_c: float  # how much full sun heats a passive object's surface
    rcs_dbsm: float
    micro_doppler: float  # limb / wheel Doppler spread per m/s of own speed
    sound_db: float  # source level at 1 m while moving (0: silent)
    sound_hz: float
    spawn_weight: float
    lifetime_s: float  # mean time before a mover turns off the sidewalk


PROFILES: Final = (
    # pedestrian: tall, narrow, warm, walking pace, swinging limbs
    Profile(0.5, 1.7, 1.3, 0.8, 0.55, 32.0, 0.0, -8.0, 0.8, 58.0, 900.0, 1.0, 15.0),
    # cyclist: rider on a metal frame, fast, pedalling
    Profile(0.6, 1.8, 4.5, 1.0, 0.5, 31.0, 0.0, 3.0, 0.2, 56.0, 350.0, 1.7, 30.0),
    # e_scooter: rider standing still on a smooth, whining deck
    Profile(0.5, 1.75, 4.0, 1.0, 0.5, 31.0, 0.0, 1.0, 0.05, 60.0, 3200.0, 1.7, 30.0),
    # dog: low, narrow, hottest, quick legs, barks
    Profile(0.3, 0.55, 1.5, 0.9, 0.5, 35.0, 0.0, -14.0, 1.0, 48.0, 700.0, 1.0, 12.0),
    # stroller: pushed by a pedestrian (spawned together), low, metal frame, rattling
    Profile(0.6, 1.0, 1.2, 1.0, 0.8, 29.0, 0.0, 0.0, 0.35, 52.0, 1600.0, 0.7, 15.0),
    # trash_can: waist high, static, dark metal that the sun heats
    Profile(0.6, 1.0, 0.0, 0.0, 0.0, None, 18.0, 6.0, 0.0, 0.0, 0.0, 1.1, 0.0),
    # pole: thin, tall, static, metal
    Profile(0.15, 3.0, 0.0, 0.0, 0.0, None, 8.0, 4.0, 0.0, 0.0, 0.0, 1.1, 0.0),
    # bench: wide, low, static, wood and metal
    Profile(1.6, 0.85, 0.0, 0.0, 0.0, None, 10.0, 4.0, 0.0, 0.0, 0.0, 0.9, 0.0),
)
PEDESTRIAN, DOG, STROLLER = 0, 3, 4


@dataclass(slots=True)
class Obstacle:
    """One obstacle in the robot's frame: x metres ahead, y metres to the right."""

    cls: int
    x: float
    y: float
    v: float  # own speed toward the robot, m/s (negative: walking away / overtaking)
    width: float
    height: float
    temp_c: float  # offset on the class temperature (individual variation)
    rcs: float
    ttl: float  # seconds until a mover turns off the sidewalk
    barking: bool = False

    @property
    def r(self) -> float:
        return math.hypot(self.x, self.y)

    @property
    def bearing(self) -> float:
        return math.degrees(math.atan2(self.y, self.x))

    def visible(self) -> bool:
        """Within the sensors' reach: what the readings can show."""
        return self.x > 0.2 and self.r <= MAX_RANGE_M and abs(self.bearing) <= _FOV_DEG

    def in_path(self) -> bool:
        """Within the labelling horizon: what the robot must know about now."""
        return self.x > 0.2 and self.r <= HORIZON_M and abs(self.bearing) <= _FOV_DEG


@dataclass(slots=True)
class _Ou:
    """An Ornstein-Uhlenbeck process: mean ``mu``, stationary std ``sigma``, time ``tau``."""

    mu: float
    sigma: float
    tau: float
    value: float

    def step(self, dt: float, z: float) -> float:
        a = math.exp(-dt / self.tau)
        self.value = self.mu + a * (self.value - self.mu) + self.sigma * math.sqrt(1 - a * a) * z
        return self.value


@dataclass(slots=True)
class World:
    """The robot, its surroundings and its sensors' state (drift, dropouts, the last
    reading); advanced one tick at a time, read by :func:`robot_daemon.sim.sensors.sense`."""

    rng: np.random.Generator
    calibration_drift: float
    obstacles: list[Obstacle] = field(default_factory=list)
    speed: float = _CRUISE_MPS
    ambient: _Ou = field(default_factory=lambda: _Ou(18.0, 9.0, 400.0, 18.0))
    sun: _Ou = field(default_factory=lambda: _Ou(0.5, 0.3, 120.0, 0.5))
    noise_db: _Ou = field(default_factory=lambda: _Ou(58.0, 4.0, 60.0, 58.0))
    roughness: _Ou = field(default_factory=lambda: _Ou(0.15, 0.08, 30.0, 0.15))
    wall_left: _Ou = field(default_factory=lambda: _Ou(5.5, 1.5, 8.0, 5.5))
    wall_right: _Ou = field(default_factory=lambda: _Ou(3.0, 1.0, 8.0, 3.0))
    thermal_bias: float = 0.0
    dropout_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(GROUPS, 0.0))
    last: NDArray[np.float64] = field(default_factory=lambda: np.zeros(D))

    def __post_init__(self) -> None:
        g = self.rng
        # Each run starts on a different day and street.
        self.ambient.mu = self.ambient.value = float(g.uniform(2.0, 30.0))
        self.noise_db.value = float(g.normal(58.0, 4.0))

    # ------------------------------------------------------------------- the world

    def advance(self, dt: float) -> None:
        """Move the robot and obstacles by ``dt`` seconds; spawn and retire obstacles."""
        g = self.rng
        for process in (self.ambient, self.sun, self.noise_db, self.roughness,
                        self.wall_left, self.wall_right):
            process.step(dt, float(g.standard_normal()))
        self.sun.value = min(max(self.sun.value, 0.0), 1.0)
        self.roughness.value = max(self.roughness.value, 0.02)
        self.thermal_bias += 0.05 * math.sqrt(dt) * float(g.standard_normal())  # slow drift
        self.thermal_bias *= math.exp(-dt / 1800.0)
        self._drive(dt)
        for ob in self.obstacles:
            ob.x -= (self.speed + ob.v) * dt
            ob.ttl -= dt
            if ob.cls == DOG:  # a burst of barks about every 8 s, lasting about 1 s
                ob.barking = g.random() > dt if ob.barking else g.random() < dt / 8.0
        self.obstacles = [ob for ob in self.obstacles if -0.5 < ob.x < 9.5 and ob.ttl > 0]
        if g.random() < 0.3 * dt:
            self._spawn()

    def _drive(self, dt: float) -> None:
        """The robot's controller: cruise, brake for what is close ahead, swerve around."""
        ahead = [ob for ob in self.obstacles if 0.2 < ob.x < 3.5 and abs(ob.y) < 0.8]
        target = _CRUISE_MPS
        for ob in ahead:
            target = min(target, max(0.0, 0.9 * (ob.x - 0.6)))
            # Steer away from the obstacle: in the robot's frame it slides sideways.
            ob.y += (0.5 if ob.y >= 0 else -0.5) * dt
        target = max(target, 0.3) if ahead else target  # creep past rather than stop
        self.speed += (target - self.speed) * min(1.0, dt / 0.7)

    def _spawn(self) -> None:
        g = self.rng
        weights = np.array([p.spawn_weight for p in PROFILES])
        cls = int(g.choice(len(PROFILES), p=weights / weights.sum()))
        prof = PROFILES[cls]
        y = float(g.uniform(-2.0, 2.0))
        if prof.speed_mps == 0.0 or g.random() > prof.p_moving:
            v, x = 0.0, float(g.uniform(6.0, 8.5))
        elif g.random() < prof.p_oncoming:
            v, x = prof.speed_mps * float(g.uniform(0.7, 1.3)), float(g.uniform(7.0, 9.0))
        else:  # walking away ahead of the robot, or overtaking it from behind
            v = -prof.speed_mps * float(g.uniform(0.7, 1.3))
            x = 0.3 if -v > _CRUISE_MPS else float(g.uniform(3.0, 7.0))
        lead = self._obstacle(cls, x, y, v)
        self.obstacles.append(lead)
        # Strollers are pushed (the pusher walks behind the stroller, which can hide it
        # from the robot when both walk away); dogs are walked on a leash beside their
        # owner. Either way a pedestrian comes along at the same pace.
        if cls == STROLLER:
            self._add_companion(lead, dx=0.9 if v >= 0 else -0.9, dy=float(g.normal(0, 0.2)))
        elif cls == DOG and g.random() < 0.4:
            side = 1.0 if g.random() < 0.5 else -1.0
            self._add_companion(lead, dx=float(g.uniform(-0.3, 0.6)),
                                dy=side * float(g.uniform(0.6, 1.0)))

    def _add_companion(self, lead: Obstacle, dx: float, dy: float) -> None:
        owner = self._obstacle(PEDESTRIAN, lead.x + dx, lead.y + dy, lead.v)
        owner.ttl = lead.ttl
        self.obstacles.append(owner)

    def _obstacle(self, cls: int, x: float, y: float, v: float) -> Obstacle:
        g = self.rng
        prof = PROFILES[cls]
        ttl = float(g.exponential(prof.lifetime_s)) + 3.0 if v != 0.0 else math.inf
        return Obstacle(
            cls=cls,
            x=x,
            y=y,
            v=v,
            width=prof.width_m * float(g.uniform(0.8, 1.2)),
            height=prof.height_m * float(g.uniform(0.85, 1.15)),
            temp_c=float(g.normal(0.0, 1.0)),
            rcs=prof.rcs_dbsm + float(g.normal(0.0, 3.0)),  # aspect, material
            ttl=ttl,
        )

    def labels(self) -> NDArray[np.uint8]:
        """Classes present in the field of view now, shape (8,), uint8."""
        y = np.zeros(C, dtype=np.uint8)
        for ob in self.obstacles:
            if ob.in_path():
                y[ob.cls] = 1
        return y
