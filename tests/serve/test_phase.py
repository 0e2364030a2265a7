"""The phase lock on a simulated clock: frames of sensors at given phases and rates
arrive, ticks fall on the grid the lock moves, and every frame is answered once."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from robot_daemon.serve.phase import PhaseLock

T = 20_000_000  # the tick interval, ns
MS = 1_000_000


def _run(lock: PhaseLock, arrivals: dict[str | None, Callable[[int], int]], ticks: int,
         jitter_ns: int = 100_000, seed: int = 0) -> dict[str | None, list[int]]:
    """Serve ``ticks`` ticks. ``arrivals[src](k)`` is the k-th frame's arrival (ns).
    Returns each source's waits (deadline minus arrival) in order, every frame once."""
    rng = np.random.default_rng(seed)
    start, tick = 0, 1
    nxt = dict.fromkeys(arrivals, 0)
    waits: dict[str | None, list[int]] = {s: [] for s in arrivals}
    for _ in range(ticks):
        deadline = start + tick * T
        times, srcs = [], []
        for src, at in arrivals.items():
            while True:
                t = at(nxt[src]) + int(rng.integers(0, jitter_ns + 1))
                if t > deadline:
                    break
                times.append(t)
                srcs.append(src)
                nxt[src] += 1
        arrival = np.array(times, dtype=np.int64)
        for t, s in zip(times, srcs, strict=True):
            waits[s].append(deadline - t)
        lock.observe(deadline, arrival, srcs)
        move = lock.shift()
        assert -T // 2 < move <= T // 2
        if move > 0:  # never two ticks closer than half an interval
            assert T - move >= T // 2
        start -= move
        tick += 1
    return waits


def _every(period_ns: int, phase_ns: int) -> Callable[[int], int]:
    return lambda k: phase_ns + k * period_ns


@pytest.mark.parametrize("phase_ms", [0.3, 5.0, 12.7, 19.6])
def test_a_50_hz_sensor_is_answered_just_after_it_arrives_at_any_phase(phase_ms: float) -> None:
    lock = PhaseLock(T, enabled=True)
    waits = _run(lock, {"lidar": _every(T, int(phase_ms * MS))}, ticks=500)["lidar"]
    settled = np.array(waits[150:]) / MS
    assert np.percentile(settled, 50) < 1.5  # from up to 20 ms
    assert settled.max() < 2.0
    assert settled.min() > 0  # never after its deadline: every frame in its tick
    assert lock.moves <= 2


def test_fixed_never_moves() -> None:
    lock = PhaseLock(T, enabled=False)
    waits = _run(lock, {None: _every(T, 5 * MS)}, ticks=200)[None]
    assert lock.moves == 0
    assert np.median(waits) / MS == pytest.approx(15, abs=0.2)


@pytest.mark.parametrize("ppm", [200, -200])
def test_a_drifting_sensor_clock_is_followed_and_never_misses_its_tick(ppm: int) -> None:
    lock = PhaseLock(T, enabled=True)
    period = round(T * (1 - ppm * 1e-6))  # 200 ppm fast: 4 us a frame, 24 ms in 2 min
    waits = np.array(_run(lock, {"radar": _every(period, 3 * MS)}, ticks=6000)["radar"])
    settled = waits[150:] / MS
    assert settled.min() > 0  # never past its deadline: no frame waits a whole tick more
    assert np.percentile(settled, 50) < 2.0
    assert np.percentile(settled, 99) < 3.0
    assert lock.moves > 3  # followed it


def test_a_restarted_sensor_is_found_again() -> None:
    lock = PhaseLock(T, enabled=True)

    def restarted(k: int) -> int:  # at frame 400 the sensor comes back 7.3 ms later
        return 2 * MS + k * T + (int(7.3 * MS) if k >= 400 else 0)

    waits = np.array(_run(lock, {None: restarted}, ticks=800)[None]) / MS
    assert np.percentile(waits[150:390], 99) < 2.0
    assert np.percentile(waits[550:], 99) < 2.0  # found again within 150 ticks (3 s)


def test_bursts_and_high_rates_leave_the_grid_alone() -> None:
    lock = PhaseLock(T, enabled=True)
    _run(lock, {"imu": _every(T // 20, 0)}, ticks=300)  # 1,000 frames/s
    assert lock.moves == 0
    lock = PhaseLock(T, enabled=True)
    rng = np.random.default_rng(3)
    jumpy = rng.integers(0, T, size=10_000)
    _run(lock, {"cam": lambda k: k * T + int(jumpy[k])}, ticks=300)  # no stable phase
    assert lock.moves == 0


def test_two_sensors_10_ms_apart_each_wait_no_longer_than_on_the_fixed_grid() -> None:
    sensors = {"front": _every(T, 4 * MS), "rear": _every(T, 14 * MS)}
    fixed = _run(PhaseLock(T, enabled=False), sensors, ticks=400)
    lock = PhaseLock(T, enabled=True)
    auto = _run(lock, sensors, ticks=400)
    worst_fixed = max(np.percentile(w[150:], 99) for w in fixed.values())
    worst_auto = max(np.percentile(w[150:], 99) for w in auto.values())
    assert worst_auto <= worst_fixed
    assert all(min(w[150:]) > 0 for w in auto.values())
    assert worst_auto / MS < 12  # one just after its frames, the other half a tick on


def test_status_says_where_the_grid_is() -> None:
    lock = PhaseLock(T, enabled=True)
    _run(lock, {None: _every(T, 8 * MS)}, ticks=200)
    status = lock.status()
    assert status["tick_moves"] == lock.moves >= 1
    assert 0 <= float(status["tick_offset_ms"]) < 20  # type: ignore[arg-type]
