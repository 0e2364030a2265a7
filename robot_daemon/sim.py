"""The sidewalk simulator: time-correlated sensor readings and obstacle labels.

A delivery robot drives along a sidewalk; obstacles (:data:`CLASSES`) appear ahead, move
or stand, several at once, and leave when the robot has passed them or they walk away.
Each tick the robot's sensors produce one reading of ``d = 16`` features
(:data:`FEATURES`, with units) and the ground truth is the set of obstacle classes inside
the sensors' field of view. ``docs/simulator.md`` describes the generative model and why
a linear model cannot separate the classes; in short, the sensors report what physics
lets them see (angular sizes, closing speeds, blurred temperatures, received sound
levels), and the class is a property of the object behind them (metric size, own speed,
body temperature, source loudness), which is a product, a difference under an absolute
value or a band of those readings.

Everything is deterministic from the seed: one ``np.random.Generator`` drives the world,
and there is no global state.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import numpy as np
from numpy.typing import NDArray

from robot_daemon import wire
from robot_daemon.errors import ConfigError


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

# Column groups of a reading, one per sensor.
_RANGES: Final = slice(0, 3)
_LIDAR: Final = slice(3, 6)
_RADAR: Final = slice(6, 9)
_THERMAL: Final = slice(9, 11)
_AMBIENT: Final = 11
_SOUND: Final = slice(12, 14)
_VIBRATION: Final = 14
_SPEED: Final = 15
SIM_EPOCH_S: Final = 1_767_225_600.0
"""Sensor time of the first reading: 2026-01-01T00:00:00Z (fixed, for determinism)."""

MAX_RANGE_M: Final = 8.0
"""Range finders report exactly this when they get no return (nothing, or a dropout)."""
HORIZON_M: Final = 6.0
"""Obstacles are labelled within this range; the sensors see them from MAX_RANGE_M."""
_FOV_DEG: Final = 40.0  # an obstacle is labelled while within the sensors' +-40 deg
_THERMAL_PIXEL_DEG: Final = 7.5  # 8x8 array over 60 x 45 deg: blurs small or far objects
_RADAR_FLOOR_DBSM: Final = -25.0  # RCS reported when there is no return
_CRUISE_MPS: Final = 1.6
_BURN_IN_S: Final = 30.0
#: Readings one run may simulate: X alone is 64 bytes a reading and the simulator steps
#: at roughly 15,000 readings/s, so this is about 640 MB and 10 minutes.
MAX_READINGS: Final = 10_000_000
#: Readings between two calls of a ``progress`` callback (a few milliseconds of work).
PROGRESS_EVERY: Final = 256

Progress = Callable[[int, int], None]
"""``progress(done, total)``: readings simulated (or written) so far, of ``total``."""


@dataclass(frozen=True, slots=True)
class _Profile:
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


_PROFILES: Final = (
    # pedestrian: tall, narrow, warm, walking pace, swinging limbs
    _Profile(0.5, 1.7, 1.3, 0.8, 0.55, 32.0, 0.0, -8.0, 0.8, 58.0, 900.0, 1.0, 15.0),
    # cyclist: rider on a metal frame, fast, pedalling
    _Profile(0.6, 1.8, 4.5, 1.0, 0.5, 31.0, 0.0, 3.0, 0.2, 56.0, 350.0, 1.7, 30.0),
    # e_scooter: rider standing still on a smooth, whining deck
    _Profile(0.5, 1.75, 4.0, 1.0, 0.5, 31.0, 0.0, 1.0, 0.05, 60.0, 3200.0, 1.7, 30.0),
    # dog: low, narrow, hottest, quick legs, barks
    _Profile(0.3, 0.55, 1.5, 0.9, 0.5, 35.0, 0.0, -14.0, 1.0, 48.0, 700.0, 1.0, 12.0),
    # stroller: pushed by a pedestrian (spawned together), low, metal frame, rattling
    _Profile(0.6, 1.0, 1.2, 1.0, 0.8, 29.0, 0.0, 0.0, 0.35, 52.0, 1600.0, 0.7, 15.0),
    # trash_can: waist high, static, dark metal that the sun heats
    _Profile(0.6, 1.0, 0.0, 0.0, 0.0, None, 18.0, 6.0, 0.0, 0.0, 0.0, 1.1, 0.0),
    # pole: thin, tall, static, metal
    _Profile(0.15, 3.0, 0.0, 0.0, 0.0, None, 8.0, 4.0, 0.0, 0.0, 0.0, 1.1, 0.0),
    # bench: wide, low, static, wood and metal
    _Profile(1.6, 0.85, 0.0, 0.0, 0.0, None, 10.0, 4.0, 0.0, 0.0, 0.0, 0.9, 0.0),
)
_PEDESTRIAN, _DOG, _STROLLER = 0, 3, 4


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


@dataclass(slots=True)
class _Obstacle:
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


# Sensor groups that drop out together, and how a dropout reads (see docs/simulator.md).
_GROUPS: Final = ("range_left", "range_center", "range_right", "lidar", "radar", "thermal",
                  "mic")
_DROPOUT_PER_S: Final = 0.02  # a group starts a dropout about once every 50 s
_DROPOUT_MEAN_S: Final = 0.6


@dataclass(slots=True)
class _World:
    """The robot, its surroundings and its sensors; advanced one tick at a time."""

    rng: np.random.Generator
    calibration_drift: float
    obstacles: list[_Obstacle] = field(default_factory=list)
    speed: float = _CRUISE_MPS
    ambient: _Ou = field(default_factory=lambda: _Ou(18.0, 9.0, 400.0, 18.0))
    sun: _Ou = field(default_factory=lambda: _Ou(0.5, 0.3, 120.0, 0.5))
    noise_db: _Ou = field(default_factory=lambda: _Ou(58.0, 4.0, 60.0, 58.0))
    roughness: _Ou = field(default_factory=lambda: _Ou(0.15, 0.08, 30.0, 0.15))
    wall_left: _Ou = field(default_factory=lambda: _Ou(5.5, 1.5, 8.0, 5.5))
    wall_right: _Ou = field(default_factory=lambda: _Ou(3.0, 1.0, 8.0, 3.0))
    thermal_bias: float = 0.0
    dropout_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(_GROUPS, 0.0))
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
            if ob.cls == _DOG:  # a burst of barks about every 8 s, lasting about 1 s
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
        weights = np.array([p.spawn_weight for p in _PROFILES])
        cls = int(g.choice(len(_PROFILES), p=weights / weights.sum()))
        prof = _PROFILES[cls]
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
        if cls == _STROLLER:
            self._add_companion(lead, dx=0.9 if v >= 0 else -0.9, dy=float(g.normal(0, 0.2)))
        elif cls == _DOG and g.random() < 0.4:
            side = 1.0 if g.random() < 0.5 else -1.0
            self._add_companion(lead, dx=float(g.uniform(-0.3, 0.6)),
                                dy=side * float(g.uniform(0.6, 1.0)))

    def _add_companion(self, lead: _Obstacle, dx: float, dy: float) -> None:
        owner = self._obstacle(_PEDESTRIAN, lead.x + dx, lead.y + dy, lead.v)
        owner.ttl = lead.ttl
        self.obstacles.append(owner)

    def _obstacle(self, cls: int, x: float, y: float, v: float) -> _Obstacle:
        g = self.rng
        prof = _PROFILES[cls]
        ttl = float(g.exponential(prof.lifetime_s)) + 3.0 if v != 0.0 else math.inf
        return _Obstacle(
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

    # ----------------------------------------------------------------- the sensors

    def sense(self, dt: float) -> NDArray[np.float64]:
        """One reading, shape (16,), float64, finite (noise, dropouts, drift applied)."""
        g = self.rng
        z = g.standard_normal(D)
        seen = sorted((ob for ob in self.obstacles if ob.visible()), key=lambda o: o.r)
        ambient = self.ambient.value
        vib = self.roughness.value * (0.3 + self.speed) ** 1.5
        out = np.empty(D)
        ranges = np.array([self._range(seen, b, wall) for b, wall in
                           ((-25.0, self.wall_left.value), (0.0, MAX_RANGE_M),
                            (25.0, self.wall_right.value))])
        # Range noise grows with distance and with the shaking of a rough surface.
        out[_RANGES] = ranges + (0.02 + 0.01 * ranges + 0.1 * vib) * z[_RANGES]
        out[_LIDAR] = self._lidar(seen) + np.array([0.03, 0.3, 0.3]) * z[_LIDAR]
        out[_RADAR] = self._radar(seen) + np.array([0.05, 2.5, 0.1]) * z[_RADAR]
        out[_THERMAL] = self._thermal(seen, ambient) + np.array([0.4, 0.01]) * z[_THERMAL]
        out[_THERMAL.start] += self.thermal_bias
        out[_AMBIENT] = ambient + 0.2 * z[_AMBIENT]
        level, centroid = self._sound()
        out[_SOUND] = level + 1.0 * z[_SOUND.start], centroid * math.exp(0.05 * z[_SOUND.stop - 1])
        out[_VIBRATION] = vib * (1.0 + 0.1 * z[_VIBRATION])
        out[_SPEED] = self.speed + 0.02 * z[_SPEED]
        self._apply_drift(out)
        self._apply_dropouts(out, dt)
        np.clip(out, _LOW, _HIGH, out=out)
        self.last = out
        return out

    def _range(self, seen: list[_Obstacle], beam_deg: float, background: float) -> float:
        """Nearest return in a 25-degree-wide beam; ``background`` if nothing is in it."""
        for ob in seen:  # nearest first
            half = math.degrees(math.atan2(ob.width / 2, ob.r))
            if abs(ob.bearing - beam_deg) <= 12.5 + half:
                return ob.r
        return min(background, MAX_RANGE_M)

    @staticmethod
    def _lidar(seen: list[_Obstacle]) -> NDArray[np.float64]:
        """Range (m), angular width and height (deg) of the nearest object."""
        if not seen:
            return np.array([MAX_RANGE_M, 0.0, 0.0])  # no cluster
        ob = seen[0]
        # The lidar sits 0.4 m above the ground: it sees from the foot to the top.
        width = math.degrees(2 * math.atan2(ob.width / 2, ob.r))
        height = math.degrees(math.atan2(ob.height - 0.4, ob.r) + math.atan2(0.4, ob.r))
        return np.array([ob.r, width, height])

    def _radar(self, seen: list[_Obstacle]) -> NDArray[np.float64]:
        """Closing speed, RCS and micro-Doppler spread of the strongest return."""
        if not seen:
            return np.array([0.0, _RADAR_FLOOR_DBSM, 0.0])
        # Received power falls with r^4: a near pedestrian outshines a far trash can.
        best = max(seen, key=lambda o: o.rcs - 40 * math.log10(max(o.r, 0.3)))
        closing = self.speed * math.cos(math.radians(best.bearing)) + best.v
        # Limbs and wheels spread the Doppler of the same return in proportion to the
        # object's own speed; a standing person still fidgets.
        spread = _PROFILES[best.cls].micro_doppler * abs(best.v)
        if best.cls == _PEDESTRIAN and best.v == 0.0:
            spread = 0.15
        return np.array([closing, best.rcs, spread])

    def _thermal(self, seen: list[_Obstacle], ambient: float) -> NDArray[np.float64]:
        """Hottest pixel (degC) and warm-pixel fraction of an 8x8 array over 60x45 deg."""
        peak, warm = ambient, 0.0
        for ob in seen:
            if abs(ob.bearing) > 30.0:
                continue
            prof = _PROFILES[ob.cls]
            surface = (prof.body_c + ob.temp_c if prof.body_c is not None
                       else ambient + prof.sun_gain_c * self.sun.value + ob.temp_c)
            w = math.degrees(2 * math.atan2(ob.width / 2, ob.r))
            h = math.degrees(math.atan2(ob.height, ob.r))
            # A pixel averages everything in its 7.5-degree cone: small or far objects
            # are blurred toward ambient, in proportion to the pixel they fill.
            fill = min(1.0, w / _THERMAL_PIXEL_DEG) * min(1.0, h / _THERMAL_PIXEL_DEG)
            pixel = ambient + (surface - ambient) * fill
            peak = max(peak, pixel)
            if pixel - ambient > 3.0:
                warm += min(w, 60.0) * min(h, 45.0) / (60.0 * 45.0)
        return np.array([peak, min(warm, 1.0)])

    def _sound(self) -> tuple[float, float]:
        """Received level (dBA) and spectral centroid (Hz): traffic plus each source."""
        power = [10 ** (self.noise_db.value / 10)]
        log_hz = [math.log(600.0)]
        for ob in self.obstacles:
            prof = _PROFILES[ob.cls]
            level = prof.sound_db if ob.v != 0.0 else prof.sound_db - 10.0
            hz = prof.sound_hz
            if ob.barking:
                level, hz = 88.0, 1100.0
            if level <= 0.0:  # static objects are silent
                continue
            power.append(10 ** ((level - 20 * math.log10(max(ob.r, 0.5))) / 10))
            log_hz.append(math.log(hz))
        total = sum(power)
        centroid = math.exp(sum(p * f for p, f in zip(power, log_hz, strict=True)) / total)
        return 10 * math.log10(total), centroid

    def _apply_drift(self, out: NDArray[np.float64]) -> None:
        """Systematic miscalibration, scaled by ``calibration_drift`` (0: none)."""
        k = self.calibration_drift
        if k == 0.0:
            return
        out[_RANGES] *= 1.0 + 0.06 * k  # range finders read long
        out[_LIDAR] *= (1.0, 1.0 + 0.08 * k, 1.0 + 0.08 * k)  # lidar angular scale
        out[_RADAR.start + 1] -= 3.0 * k  # radar RCS reads low
        out[_THERMAL.start] += 2.5 * k  # thermal offset
        out[_SOUND.start] += 3.0 * k  # microphone gain

    def _apply_dropouts(self, out: NDArray[np.float64], dt: float) -> None:
        """Sensor groups drop out for about half a second, about once a minute each."""
        g = self.rng
        for group in _GROUPS:
            left = self.dropout_s[group]
            if left <= 0.0 and g.random() < _DROPOUT_PER_S * dt:
                left = float(g.exponential(_DROPOUT_MEAN_S))
            if left > 0.0:
                _DROPOUT[group](out, self.last)
                self.dropout_s[group] = left - dt


_DropoutFn = Callable[[NDArray[np.float64], NDArray[np.float64]], None]


def _range_dropout(i: int) -> _DropoutFn:
    def apply(out: NDArray[np.float64], last: NDArray[np.float64]) -> None:
        out[i] = MAX_RANGE_M  # no return: the range finder reports its maximum
    return apply


def _lidar_dropout(out: NDArray[np.float64], last: NDArray[np.float64]) -> None:
    out[_LIDAR] = (MAX_RANGE_M, 0.0, 0.0)  # no cluster


def _radar_dropout(out: NDArray[np.float64], last: NDArray[np.float64]) -> None:
    out[_RADAR] = (0.0, _RADAR_FLOOR_DBSM, 0.0)  # no return: the noise floor


def _stuck(columns: slice) -> _DropoutFn:
    def apply(out: NDArray[np.float64], last: NDArray[np.float64]) -> None:
        out[columns] = last[columns]  # the driver repeats its last frame
    return apply


_DROPOUT: Final[dict[str, _DropoutFn]] = {
    "range_left": _range_dropout(_RANGES.start),
    "range_center": _range_dropout(_RANGES.start + 1),
    "range_right": _range_dropout(_RANGES.start + 2),
    "lidar": _lidar_dropout,
    "radar": _radar_dropout,
    "thermal": _stuck(_THERMAL),
    "mic": _stuck(_SOUND),
}

# Physical bounds every reading is clipped to (also what keeps them finite).
_BOUNDS: Final = {
    "range_left_m": (0.05, MAX_RANGE_M),
    "range_center_m": (0.05, MAX_RANGE_M),
    "range_right_m": (0.05, MAX_RANGE_M),
    "lidar_range_m": (0.05, MAX_RANGE_M),
    "lidar_width_deg": (0.0, 180.0),
    "lidar_height_deg": (0.0, 180.0),
    "radar_closing_mps": (-10.0, 10.0),
    "radar_rcs_dbsm": (-40.0, 40.0),
    "radar_micro_doppler_mps": (0.0, 5.0),
    "thermal_peak_c": (-30.0, 90.0),
    "thermal_warm_frac": (0.0, 1.0),
    "ambient_temp_c": (-30.0, 50.0),
    "sound_level_dba": (20.0, 130.0),
    "sound_centroid_hz": (50.0, 8000.0),
    "vibration_rms_g": (0.0, 10.0),
    "robot_speed_mps": (0.0, 3.0),
}
_LOW: Final = np.array([_BOUNDS[name][0] for name in FEATURE_NAMES])
_HIGH: Final = np.array([_BOUNDS[name][1] for name in FEATURE_NAMES])


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
    world = _World(np.random.default_rng(seed), calibration_drift)
    # Start in the middle of a walk, not on an empty sidewalk: run the world for a while
    # first, in steps that do not depend on the rate (the same seed gives the same scene).
    for _ in range(round(_BURN_IN_S / 0.1)):
        world.advance(0.1)
    X = np.empty((n, D), dtype=np.float32)
    Y = np.empty((n, C), dtype=np.uint8)
    for i in range(n):
        world.advance(dt)
        X[i] = world.sense(dt)
        Y[i] = world.labels()
        if progress is not None and (i + 1) % PROGRESS_EVERY == 0:
            progress(i + 1, n)
    if progress is not None:
        progress(n, n)
    t = SIM_EPOCH_S + np.arange(n, dtype=np.float64) * dt
    return SimData(t=t, X=X, Y=Y, seed=seed, rate_hz=rate_hz)


def write_bag(
    path: str | os.PathLike[str], data: SimData, *, progress: Progress | None = None
) -> int:
    """Write ``data`` as a bag: a ``frame`` and a ``label`` message per reading.

    Both messages of a reading carry the same ``seq`` (its index) and sensor time; the
    receive time is the sensor time (a simulated robot has no transport delay).
    ``progress`` is called as in :func:`simulate`, with readings written.

    Returns:
        The number of messages written (``2 * data.n``).

    Raises:
        BagError: the bag cannot be written.
    """
    from robot_daemon.bag import BagMeta, BagWriter  # the optional "bag" extra

    meta = BagMeta(
        d=D,
        c=C,
        feature_names=list(FEATURE_NAMES),
        class_names=list(CLASSES),
        extra={"source": "robot_daemon.sim", "seed": str(data.seed),
               "rate_hz": repr(data.rate_hz)},
    )
    frame_topic, label_topic = wire.TOPIC_FRAME.decode(), wire.TOPIC_LABEL.decode()
    with BagWriter(path, meta=meta) as bag:
        for seq in range(data.n):
            t = float(data.t[seq])
            t_ns = round(t * 1e9)
            x = data.X[seq]
            bag.write(frame_topic, wire.encode_frame(seq, t, x, src="sim"), t_ns, t_ns)
            bag.write(label_topic, wire.encode_label(seq, t, x, data.Y[seq], src="sim"),
                      t_ns, t_ns)
            if progress is not None and (seq + 1) % PROGRESS_EVERY == 0:
                progress(seq + 1, data.n)
    if progress is not None:
        progress(data.n, data.n)
    return 2 * data.n


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
