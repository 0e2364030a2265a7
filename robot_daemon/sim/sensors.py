"""The simulated robot's sensors: one reading of the world, with noise, drift and dropouts.

Design: docs/architecture.md, "The simulator".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

import numpy as np
from numpy.typing import NDArray

from robot_daemon.sim.reading import FEATURE_NAMES, GROUPS, MAX_RANGE_M, D
from robot_daemon.sim.world import PEDESTRIAN, PROFILES, Obstacle, World

# Column groups of a reading, one per sensor.
_RANGES: Final = slice(0, 3)
_LIDAR: Final = slice(3, 6)
_RADAR: Final = slice(6, 9)
_THERMAL: Final = slice(9, 11)
_AMBIENT: Final = 11
_SOUND: Final = slice(12, 14)
_VIBRATION: Final = 14
_SPEED: Final = 15
_THERMAL_PIXEL_DEG: Final = 7.5  # 8x8 array over 60 x 45 deg: blurs small or far objects
_RADAR_FLOOR_DBSM: Final = -25.0  # RCS reported when there is no return
_DROPOUT_PER_S: Final = 0.02  # a group starts a dropout about once every 50 s
_DROPOUT_MEAN_S: Final = 0.6


def sense(world: World, dt: float) -> NDArray[np.float64]:
    """One reading of ``world``, shape (16,), float64, finite (noise, dropouts, drift
    applied); draws from ``world.rng`` and keeps the reading as ``world.last``."""
    g = world.rng
    z = g.standard_normal(D)
    seen = sorted((ob for ob in world.obstacles if ob.visible()), key=lambda o: o.r)
    ambient = world.ambient.value
    vib = world.roughness.value * (0.3 + world.speed) ** 1.5
    out = np.empty(D)
    ranges = np.array([_range(seen, b, wall) for b, wall in
                       ((-25.0, world.wall_left.value), (0.0, MAX_RANGE_M),
                        (25.0, world.wall_right.value))])
    # Range noise grows with distance and with the shaking of a rough surface.
    out[_RANGES] = ranges + (0.02 + 0.01 * ranges + 0.1 * vib) * z[_RANGES]
    out[_LIDAR] = _lidar(seen) + np.array([0.03, 0.3, 0.3]) * z[_LIDAR]
    out[_RADAR] = _radar(world, seen) + np.array([0.05, 2.5, 0.1]) * z[_RADAR]
    out[_THERMAL] = _thermal(world, seen, ambient) + np.array([0.4, 0.01]) * z[_THERMAL]
    out[_THERMAL.start] += world.thermal_bias
    out[_AMBIENT] = ambient + 0.2 * z[_AMBIENT]
    level, centroid = _sound(world)
    out[_SOUND] = level + 1.0 * z[_SOUND.start], centroid * math.exp(0.05 * z[_SOUND.stop - 1])
    out[_VIBRATION] = vib * (1.0 + 0.1 * z[_VIBRATION])
    out[_SPEED] = world.speed + 0.02 * z[_SPEED]
    _apply_drift(world, out)
    _apply_dropouts(world, out, dt)
    np.clip(out, _LOW, _HIGH, out=out)
    world.last = out
    return out


def _range(seen: list[Obstacle], beam_deg: float, background: float) -> float:
    """Nearest return in a 25-degree-wide beam; ``background`` if nothing is in it."""
    for ob in seen:  # nearest first
        half = math.degrees(math.atan2(ob.width / 2, ob.r))
        if abs(ob.bearing - beam_deg) <= 12.5 + half:
            return ob.r
    return min(background, MAX_RANGE_M)


def _lidar(seen: list[Obstacle]) -> NDArray[np.float64]:
    """Range (m), angular width and height (deg) of the nearest object."""
    if not seen:
        return np.array([MAX_RANGE_M, 0.0, 0.0])  # no cluster
    ob = seen[0]
    # The lidar sits 0.4 m above the ground: it sees from the foot to the top.
    width = math.degrees(2 * math.atan2(ob.width / 2, ob.r))
    height = math.degrees(math.atan2(ob.height - 0.4, ob.r) + math.atan2(0.4, ob.r))
    return np.array([ob.r, width, height])


def _radar(world: World, seen: list[Obstacle]) -> NDArray[np.float64]:
    """Closing speed, RCS and micro-Doppler spread of the strongest return."""
    if not seen:
        return np.array([0.0, _RADAR_FLOOR_DBSM, 0.0])
    # Received power falls with r^4: a near pedestrian outshines a far trash can.
    best = max(seen, key=lambda o: o.rcs - 40 * math.log10(max(o.r, 0.3)))
    closing = world.speed * math.cos(math.radians(best.bearing)) + best.v
    # Limbs and wheels spread the Doppler of the same return in proportion to the
    # object's own speed; a standing person still fidgets.
    spread = PROFILES[best.cls].micro_doppler * abs(best.v)
    if best.cls == PEDESTRIAN and best.v == 0.0:
        spread = 0.15
    return np.array([closing, best.rcs, spread])


def _thermal(world: World, seen: list[Obstacle], ambient: float) -> NDArray[np.float64]:
    """Hottest pixel (degC) and warm-pixel fraction of an 8x8 array over 60x45 deg."""
    peak, warm = ambient, 0.0
    for ob in seen:
        if abs(ob.bearing) > 30.0:
            continue
        prof = PROFILES[ob.cls]
        surface = (prof.body_c + ob.temp_c if prof.body_c is not None
                   else ambient + prof.sun_gain_c * world.sun.value + ob.temp_c)
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


def _sound(world: World) -> tuple[float, float]:
    """Received level (dBA) and spectral centroid (Hz): traffic plus each source."""
    power = [10 ** (world.noise_db.value / 10)]
    log_hz = [math.log(600.0)]
    for ob in world.obstacles:
        prof = PROFILES[ob.cls]
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


def _apply_drift(world: World, out: NDArray[np.float64]) -> None:
    """Systematic miscalibration, scaled by ``calibration_drift`` (0: none)."""
    k = world.calibration_drift
    if k == 0.0:
        return
    out[_RANGES] *= 1.0 + 0.06 * k  # range finders read long
    out[_LIDAR] *= (1.0, 1.0 + 0.08 * k, 1.0 + 0.08 * k)  # lidar angular scale
    out[_RADAR.start + 1] -= 3.0 * k  # radar RCS reads low
    out[_THERMAL.start] += 2.5 * k  # thermal offset
    out[_SOUND.start] += 3.0 * k  # microphone gain


def _apply_dropouts(world: World, out: NDArray[np.float64], dt: float) -> None:
    """Sensor groups drop out for about half a second, about once a minute each."""
    g = world.rng
    for group in GROUPS:
        left = world.dropout_s[group]
        if left <= 0.0 and g.random() < _DROPOUT_PER_S * dt:
            left = float(g.exponential(_DROPOUT_MEAN_S))
        if left > 0.0:
            _DROPOUT[group](out, world.last)
            world.dropout_s[group] = left - dt


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
