"""The phase lock on a simulated clock: frames of sensors at given phases and rates
arrive, ticks fall on the grid the lock moves, and every frame is answered once."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

from robot_daemon.serve.phase import PhaseLock

T = 20_000_000  # the tick interval, ns
MS = 1_000_000


def _run(lock: PhaseLock, arrivals: dict[str | None, Callable[[int], int]], ticks: int,
         jitter_ns: int = 100_000, seed: int = 0,
         ready: bool = True) -> dict[str | None, list[int]]:
    """Serve ``ticks`` ticks. ``arrivals[src](k)`` is the k-th frame's arrival (ns), plus up
    to ``jitter_ns``. Returns each source's waits in order, every frame once: until its
    tick went out, as soon as :meth:`PhaseLock.ready` said so (as the daemon does), or
    without ``ready`` at the deadline."""
    rng = np.random.default_rng(seed)
    jitter: dict[tuple[str | None, int], int] = {}
    start, tick, last_fire = 0, 1, -T
    nxt = dict.fromkeys(arrivals, 0)
    waits: dict[str | None, list[int]] = {s: [] for s in arrivals}
    for _ in range(ticks):
        deadline = start + tick * T
        due = []  # (arrival, src) of the frames up to the deadline, not taken yet
        for src, at in arrivals.items():
            k = nxt[src]
            while True:
                t = at(k) + jitter.setdefault((src, k), int(rng.integers(0, jitter_ns + 1)))
                if t > deadline:
                    break
                due.append((t, src))
                k += 1
        due.sort(key=lambda frame: frame[0])
        fire = _fire_time(lock, due, deadline, last_fire) if ready else deadline
        assert fire - last_fire >= T // 2  # never two ticks closer than half an interval
        served = [(t, src) for t, src in due if t <= fire]
        for t, src in served:
            waits[src].append(fire - t)
            nxt[src] += 1
        lock.observe(deadline, np.array([t for t, _ in served], dtype=np.int64),
                     [src for _, src in served])
        last_fire = fire
        move = lock.shift()
        assert -T // 2 < move <= T // 2
        start -= move
        tick += 1
    return waits


def _fire_time(lock: PhaseLock, due: list[tuple[int, str | None]], deadline: int,
               last_fire: int) -> int:
    """When the daemon serves the tick due at ``deadline``: the first moment ``ready``."""
    heard: dict[str | None, int] = {}  # each source's latest frame so far

    def heard_since(srcs: Sequence[str | None], since: int) -> bool:
        return all(heard.get(src, -1) >= since for src in srcs)

    for t, src in due:
        heard[src] = t
        now = max(t, deadline - T // 2, last_fire + T // 2)
        if now <= deadline and lock.ready(now, deadline, last_fire, heard_since):
            return now
    return deadline


def _every(period_ns: int, phase_ns: int) -> Callable[[int], int]:
    return lambda k: phase_ns + k * period_ns


@pytest.mark.parametrize("phase_ms", [0.3, 5.0, 12.7, 19.6])
def test_a_50_hz_sensor_is_answered_just_after_it_arrives_at_any_phase(phase_ms: float) -> None:
    lock = PhaseLock(T, enabled=True)
    waits = _run(lock, {"lidar": _every(T, int(phase_ms * MS))}, ticks=500)["lidar"]
    settled = np.array(waits[150:]) / MS
    assert settled.max() == 0  # each answered as it came, from up to 20 ms
    assert lock.moves <= 2
    # The deadlines a margin after the frames: the latest a frame may come.
    deadline_waits = _run(PhaseLock(T, enabled=True), {"lidar": _every(
        T, int(phase_ms * MS))}, ticks=500, ready=False)["lidar"][150:]
    assert np.median(deadline_waits) / MS == pytest.approx(5, abs=0.2)


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
    assert settled.max() == 0  # never past its tick's deadline: none waited a tick more
    assert lock.moves > 3  # followed it


def test_a_restarted_sensor_is_found_again() -> None:
    lock = PhaseLock(T, enabled=True)

    def restarted(k: int) -> int:  # at frame 400 the sensor comes back 7.3 ms later
        return 2 * MS + k * T + (int(7.3 * MS) if k >= 400 else 0)

    waits = np.array(_run(lock, {None: restarted}, ticks=800)[None]) / MS
    assert waits[150:390].max() == 0
    assert waits[550:].max() == 0  # found again within 150 ticks (3 s)


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
    # One answered as it comes, the other waits for it: half a tick.
    assert sorted(np.median(w[150:]) / MS for w in auto.values()) == pytest.approx(
        [0, 10], abs=0.2)


def test_status_says_where_the_grid_is() -> None:
    lock = PhaseLock(T, enabled=True)
    _run(lock, {None: _every(T, 8 * MS)}, ticks=200)
    status = lock.status()
    assert status["tick_moves"] == lock.moves >= 1
    assert 0 <= float(status["tick_offset_ms"]) < 20  # type: ignore[arg-type]


@pytest.mark.parametrize("phase_ms", [0.3, 12.7, 19.6])
def test_with_ready_a_tick_goes_out_as_its_frame_comes(phase_ms: float) -> None:
    lock = PhaseLock(T, enabled=True)
    waits = _run(lock, {"lidar": _every(T, int(phase_ms * MS))}, ticks=500,
                 ready=True)["lidar"]
    settled = np.array(waits[150:]) / MS
    assert np.percentile(settled, 50) == 0  # served the moment it came
    assert settled.max() < 2.0  # a late one waits at most for the deadline
    assert lock.ticks_ready > 300
    assert len(waits) >= 499  # every frame answered once (the last may wait for a tick)


def test_with_ready_two_sensors_go_out_when_both_came() -> None:
    sensors = {"front": _every(T, 4 * MS), "rear": _every(T, 6 * MS)}
    lock = PhaseLock(T, enabled=True)
    waits = _run(lock, sensors, ticks=400, ready=True)
    assert set(lock.expected) == {"front", "rear"}
    assert np.percentile(waits["rear"][150:], 50) == 0
    assert np.percentile(waits["front"][150:], 50) / MS == pytest.approx(2, abs=0.2)


def test_frames_straddling_the_deadline_are_one_phase_and_the_grid_moves_off_them() -> None:
    lock = PhaseLock(T, enabled=True)
    # Half the frames come just before the start's deadlines, half just after: they wait
    # 0.2 ms or almost a whole interval. The lock sees one phase and moves past it.
    waits = _run(lock, {"lidar": _every(T, T - 200_000)}, ticks=400,
                 jitter_ns=400_000)["lidar"]
    settled = np.array(waits[150:]) / MS
    assert lock.moves >= 1
    assert settled.max() == 0  # none misses its tick any more



def test_with_ready_a_frame_that_missed_its_tick_does_not_start_the_next_early() -> None:
    lock = PhaseLock(T, enabled=True)

    def one_late(k: int) -> int:  # frame 300 comes 8 ms late: past its deadline
        return 7 * MS + k * T + (8 * MS if k == 300 else 0)

    waits = np.array(_run(lock, {"lidar": one_late}, ticks=500, ready=True)["lidar"]) / MS
    assert waits[300] > 10  # it waited for the next tick's half interval
    assert np.percentile(waits[302:], 99) == 0  # and the frames after it did not


def test_a_publisher_cycling_through_names_keeps_the_work_bounded() -> None:
    from robot_daemon.serve.phase import MAX_SOURCES

    lock = PhaseLock(T, enabled=True)
    for tick in range(1, 200):
        deadline = tick * T
        names = [f"n{tick}-{i}" for i in range(500)]  # 500 new names every tick
        lock.observe(deadline, np.full(500, deadline - MS, dtype=np.int64), names)
        lock.shift()
        assert len(lock._waits) <= MAX_SOURCES
    assert lock.moves == 0


def test_a_sensor_locks_beside_a_publisher_cycling_through_names() -> None:
    """The attack: 100 new names a tick, from before the sensor starts. A name seen once
    never takes a place, so the sensor is watched and locked, and keeps its place across
    the grid's moves."""
    lock = PhaseLock(T, enabled=True)
    start, tick = 0, 1
    for k in range(400):
        deadline = start + tick * T
        names = [f"n{k}-{i}" for i in range(100)]
        arrival = [deadline - 3 * MS] * 100
        if k >= 20:  # the sensor starts later, at 13 ms into the fixed grid's interval
            names.append("cam")
            arrival.append(deadline - T + 13 * MS + 100_000 * (k % 2))
        lock.observe(deadline, np.array(arrival, dtype=np.int64), names)
        start -= lock.shift()
        tick += 1
    assert "cam" in lock._waits
    assert lock.expected == ("cam",)
    assert lock.moves >= 1
