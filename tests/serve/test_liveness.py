"""The liveness tracker on a hand-driven clock: no sockets, no sleeps."""

from __future__ import annotations

import logging

import numpy as np

from robot_daemon.serve.liveness import (
    LINES_PER_S,
    STATUS_GAP_NS,
    Change,
    ChangeLog,
    Liveness,
    Source,
    StatusPace,
    summary,
)

MS = 1_000_000
A, B = "ipc:///tmp/a", "ipc:///tmp/b"


def _tracker(*endpoints: str, max_srcs: int = 256) -> Liveness:
    """Stale after 200 ms; the daemon started listening at t = 1000 ms."""
    return Liveness(endpoints or (A, B), 200 * MS, 1000 * MS, max_srcs=max_srcs)


def test_no_frame_at_all_is_ok_for_the_timeout_then_blind() -> None:
    live = _tracker()
    assert live.check(1200 * MS) is None  # exactly the timeout: not yet
    assert live.health == "ok"
    change = live.check(1201 * MS)
    assert change is not None
    assert (change.health_was, change.health) == ("ok", "blind")
    assert [s for s, _, _ in change.stale] == [Source("endpoint", A), Source("endpoint", B)]
    assert change.lines() == [
        (logging.WARNING, f"frames endpoint {A!r} stale: no valid frame since the start "
                          "201 ms; health blind"),
        (logging.WARNING, f"frames endpoint {B!r} stale: no valid frame since the start "
                          "201 ms; health blind"),
    ]
    status = live.status(1300 * MS)
    assert status["health"] == "blind"
    assert status["stale_endpoints"] == [A, B]
    assert status["endpoint_silent_ms"] == {A: None, B: None}  # never heard from


def test_a_silent_endpoint_goes_stale_once_and_comes_back_once() -> None:
    live = _tracker()
    for t in range(1000, 1500, 20):  # both at 50 Hz
        live.heard(0, None, t * MS)
        live.heard(1, None, t * MS)
        assert live.check(t * MS) is None
    last_a = 1480
    for t in range(1500, 1900, 20):  # A stops
        live.heard(1, None, t * MS)
        change = live.check(t * MS)
        if t - last_a <= 200:
            assert change is None, t
        elif t - last_a == 220:  # the first check past the timeout
            assert change == Change(((Source("endpoint", A), 220 * MS, True),), (),
                                    "ok", "degraded")
            assert change.lines() == [(logging.WARNING, f"frames endpoint {A!r} stale: "
                                       "no valid frame for 220 ms; health degraded")]
        else:
            assert change is None, t  # one warning, not one per tick
    status = live.status(1880 * MS)
    assert (status["health"], status["stale_endpoints"]) == ("degraded", [A])
    assert status["endpoint_silent_ms"] == {A: 400.0, B: 0.0}

    live.heard(0, None, 1890 * MS)
    change = live.check(1900 * MS)
    assert change == Change((), ((Source("endpoint", A), 410 * MS),), "degraded", "ok")
    assert change.lines() == [(logging.INFO, f"frames endpoint {A!r} live again after "
                               "410 ms without a valid frame; health ok")]
    assert live.status(1900 * MS)["stale_endpoints"] == []


def test_a_src_seen_once_then_gone_is_stale_while_its_endpoint_delivers() -> None:
    live = _tracker(A)
    live.heard(0, "radar", 1010 * MS)
    for t in range(1000, 1400, 20):
        live.heard(0, "lidar", t * MS)
        live.check(t * MS)
    assert live.health == "degraded"
    status = live.status(1380 * MS)
    assert (status["stale_endpoints"], status["stale_srcs"]) == ([], ["radar"])
    assert status["src_silent_ms"] == {"radar": 370.0, "lidar": 0.0}
    assert summary(status) == "health degraded (stale: src 'radar')"


def test_blind_when_every_endpoint_is_silent_and_degraded_when_one_returns() -> None:
    live = _tracker()
    live.heard(0, "lidar", 1000 * MS)
    live.heard(1, "radar", 1000 * MS)
    change = live.check(1300 * MS)
    assert change is not None
    assert change.health == "blind"
    assert len(change.stale) == 4  # both endpoints, both srcs
    live.heard(1, "radar", 1310 * MS)
    change = live.check(1320 * MS)
    assert change is not None
    assert (change.health_was, change.health) == ("blind", "degraded")
    assert {s for s, _ in change.back} == {Source("endpoint", B), Source("src", "radar")}
    status = live.status(1320 * MS)
    assert (status["stale_endpoints"], status["stale_srcs"]) == ([A], ["lidar"])


def test_a_full_src_table_counts_new_srcs_and_keeps_the_silent_one() -> None:
    live = _tracker(A, max_srcs=2)
    live.heard(0, "lidar", 1000 * MS)  # will fall silent
    warnings: list[tuple[int, str]] = []
    for t in range(1000, 1400, 10):
        live.heard(0, "radar", t * MS)
        live.heard(0, f"noise-{t}", t * MS)  # a broken publisher: a new name per frame
        change = live.check(t * MS)
        warnings += [] if change is None else change.lines()
    assert len(warnings) == 2  # the table full, once; lidar stale
    assert warnings[0][1].startswith("2 src values tracked, the most")
    assert warnings[1][1].startswith("src 'lidar' stale")
    status = live.status(1390 * MS)
    assert status["stale_srcs"] == ["lidar"]  # not pushed out by the noise
    assert set(status["src_silent_ms"]) == {"lidar", "radar"}
    assert status["srcs_untracked"] == 40


def test_silence_of_exactly_the_timeout_is_still_live() -> None:
    live = _tracker(A)
    live.heard(0, None, 1100 * MS)
    assert live.check(1300 * MS) is None  # 200 ms silent: the timeout, not past it
    change = live.check(1300 * MS + 1)
    assert change is not None
    assert change.health == "blind"


def test_the_summary_names_three_stale_sources_at_most() -> None:
    status = {"health": "degraded", "stale_endpoints": [A],
              "stale_srcs": ["a", "b", "c", "d"]}
    assert summary(status) == ("health degraded (stale: frames endpoint "
                               f"{A!r}, src 'a', src 'b' and 2 more)")
    assert summary({"health": "ok", "stale_endpoints": [], "stale_srcs": []}) == "health ok"


def test_a_run_heard_at_once_is_each_frame_heard_in_turn() -> None:
    each, many = _tracker(max_srcs=2), _tracker(max_srcs=2)
    runs = [(0, "cam", 3), (1, None, 2), (0, "lidar", 4), (1, "radar", 5), (0, "cam", 1),
            (1, "radar", 2)]  # radar finds the table full: untracked, each frame counted
    now = 1000 * MS
    for endpoint, src, count in runs:
        for _ in range(count):
            now += MS
            each.heard(endpoint, src, now)
        many.heard(endpoint, src, now, count)
    assert (each._endpoint_ns, each._src_ns, each.srcs_untracked) == (
        many._endpoint_ns, many._src_ns, many.srcs_untracked)
    assert many.srcs_untracked == 7


def _flapping(seconds: int, srcs: int = 256) -> list[tuple[int, Change]]:
    """A publisher that cycles through ``srcs`` names, one a millisecond (each heard every
    256 ms: stale after 200, back 56 ms later): the changes a check every 20 ms finds."""
    live = _tracker(A)
    changes = []
    for ms in range(1000, 1000 + 1000 * seconds):
        live.heard(0, f"s{ms % srcs}", ms * MS)
        if ms % 20 == 0 and (change := live.check(ms * MS)) is not None:
            changes.append((ms * MS, change))
    return changes


def test_a_flapping_src_is_logged_at_a_bounded_rate_and_nothing_is_lost_count() -> None:
    """256 names at 4 Hz each made 2,079 lines a second; now at most 10 a second, each
    src at most once per 10 s, and what was held back is counted."""
    changes = _flapping(seconds=20)
    told = sum(len(c.stale) + len(c.back) for _, c in changes)
    assert told > 15_000  # what would have been logged
    log, lines = ChangeLog(), []
    for now, change in changes:
        lines += [(now, line) for _, line in log.lines(change, now)]
    per_second = np.bincount([now // (1000 * MS) for now, _ in lines])
    assert per_second.max() <= LINES_PER_S
    held = [line for _, line in lines if "more liveness change(s) not logged" in line]
    assert held, "what was held back is said"
    first = [line for _, line in lines if line.startswith("src 's7' ")]
    assert len(first) <= 3  # 20 s: at most once per 10 s (the first line was stale)
    assert any("more change(s) of it since its last line" in line for _, line in lines)


def test_an_endpoint_is_told_each_time_whatever_the_srcs_used_of_the_budget() -> None:
    """An endpoint going stale was missing from the log in 1 of 5 trials beside a
    publisher flapping 250 names (attack review): endpoints are not rate-limited."""
    live = _tracker(A)
    live.heard(0, "lidar", 1000 * MS)
    log = ChangeLog(per_s=0)  # no src line at all
    change = live.check(1300 * MS)  # both stale
    assert change is not None
    lines = log.lines(change, 1300 * MS)
    assert [line.split(" stale")[0] for _, line in lines] == [f"frames endpoint {A!r}"]
    live.heard(0, "lidar", 2400 * MS)
    back = live.check(2400 * MS)
    assert back is not None
    lines = log.lines(back, 2400 * MS)
    assert [line.split(" live again")[0] for _, line in lines] == [f"frames endpoint {A!r}"]


def test_the_summary_names_the_src_silent_the_longest_first() -> None:
    status = {"health": "degraded", "stale_endpoints": [],
              "stale_srcs": ["a1", "a2", "a3", "lidar"],
              "src_silent_ms": {"a1": 210.0, "a2": 220.0, "a3": 230.0, "lidar": 9000.0}}
    assert summary(status).startswith("health degraded (stale: src 'lidar', src 'a3'")


def test_changes_go_out_in_a_status_at_a_bounded_rate_and_blind_at_once() -> None:
    pace, sent = StatusPace(), []
    changes = _flapping(seconds=3)
    for now, change in changes:
        if pace.changed(change, now):
            sent.append(now)
    for now in range(1000 * MS, 4000 * MS, 20 * MS):
        if pace.due(now):
            sent.append(now)
    assert len(changes) > 100  # a status at every tick, before
    gaps = np.diff(sorted(sent))
    assert gaps.min() >= STATUS_GAP_NS
    live = _tracker(A)
    blind = live.check(1300 * MS)
    assert blind is not None
    assert blind.health == "blind"
    assert StatusPace().changed(blind, 1300 * MS)
    pace = StatusPace()
    assert pace.changed(blind, 1300 * MS)
    assert pace.changed(blind, 1301 * MS)  # blind again from another health: at once


def test_a_src_told_stale_is_told_back_and_its_flaps_counted_after() -> None:
    live, log = _tracker(A), ChangeLog()
    lines: list[str] = []

    def at(ms: int, heard: bool) -> None:
        live.heard(0, "a", ms * MS)  # the endpoint stays live
        if heard:
            live.heard(0, "lidar", ms * MS)
        change = live.check(ms * MS)
        if change is not None:
            lines.extend(line for _, line in log.lines(change, ms * MS))

    at(1000, True)
    for ms in range(1020, 6000, 20):  # stale 300 ms, live 300 ms: flapping at 1.7 Hz
        at(ms, (ms // 300) % 2 == 0)
    at(11_900, True)  # back: held, as its stale line was
    at(12_150, False)  # stale again, 10 s after its first line: told, with the count
    at(12_170, True)
    assert lines[0].startswith("src 'lidar' stale")
    assert lines[1].startswith("src 'lidar' live again")  # the pair, told
    assert len(lines) == 4  # then nothing until its next stale line, which counts
    assert "more change(s) of it since its last line" in lines[2]
    assert lines[3].startswith("src 'lidar' live again")


def test_a_slow_sensor_is_not_silent_between_its_frames() -> None:
    """The memory bound drops silent endpoints: a 10 Hz sensor, 100 ms between frames, was
    dropped at 50 ms of silence during an attack (its own frames lost)."""
    live = _tracker(A, B)
    for k in range(20):  # A at 10 Hz, B at 50 Hz
        live.heard(0, None, 1000 * MS + 100 * MS * k)
        for j in range(5):
            live.heard(1, None, 1000 * MS + 100 * MS * k + 20 * MS * j)
    last_a, last_b = 2900 * MS, 2980 * MS
    assert live.silent_endpoints(last_b + 90 * MS, 50 * MS) == [1]  # B: 4.5 of its periods
    assert live.silent_endpoints(last_a + 290 * MS, 50 * MS) == [1]  # A: under 3 of its own
    assert live.silent_endpoints(last_a + 310 * MS, 50 * MS) == [0, 1]


def test_heard_since_tells_the_frames_without_a_src_from_the_others() -> None:
    live = _tracker(max_srcs=1)
    live.heard(0, "lidar", 1010 * MS)
    assert live.heard_since(["lidar"], 1010 * MS)
    assert not live.heard_since([None], 1000 * MS)  # a named frame is not a nameless one
    live.heard(1, None, 1020 * MS)
    assert live.heard_since([None, "lidar"], 1010 * MS)
    assert not live.heard_since([None, "lidar"], 1015 * MS)
    live.heard(0, "radar", 1030 * MS)  # past max_srcs: never heard
    assert not live.heard_since(["radar"], 0)
