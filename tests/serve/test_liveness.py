"""The liveness tracker on a hand-driven clock: no sockets, no sleeps."""

from __future__ import annotations

import logging

from robot_daemon.serve.liveness import Change, Liveness, Source, summary

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
