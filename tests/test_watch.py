"""robot-daemon watch: a running daemon's answers, shown live to an operator."""

from __future__ import annotations

import dataclasses
import io
import math
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from robot_daemon import wire
from robot_daemon.liveview import MIN_WIDTH, PlainView, TerminalView
from robot_daemon.watch import (
    Watch,
    WatchOptions,
    WatchView,
    capture_line,
    online_line,
    progress_line,
    render,
    run,
    shadow_line,
    tick_line,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "models" / "default.npz"
NAMES = ["pedestrian", "cyclist", "dog"]
OPTIONS = WatchOptions(pred="ipc:///tmp/x", labels="ipc:///tmp/y", class_names=NAMES,
                       thresholds=np.array([0.5, 0.5, 0.3]))


def _fed(watch: Watch) -> Watch:
    x = np.zeros(4, np.float32)
    watch.on_message([wire.TOPIC_LABEL, wire.encode_label(7, 1.0, x, np.array([1, 1, 0]))], 2)
    p = np.array([[0.1, 0.1, 0.1], [0.9, 0.2, 0.6]], np.float32)
    pred = wire.encode_pred(3, 2.0, [6, 7], p, "m1", src=[None, "lidar"])
    watch.on_message([wire.TOPIC_PRED, pred], 2)
    watch.on_message([wire.TOPIC_STATUS, wire.encode_status({
        "model_version": "m1", "uptime_s": 12.0, "frames_dropped": 0,
        "frames_rejected": {"wrong_d": 2}, "frames_lost": 1, "latency_ms_p50": 9.5,
        "latency_ms_p99": 19.0, "health": "degraded", "stale_endpoints": ["tcp://127.0.0.1:5556"],
        "labels_received": 5, "labels_accepted": 4, "labels_rejected": {"outlier": 1},
        "online_steps": 7, "online_rejected": {"loss_jump": 2, "rollback": 0},
        "online_last_step": {"accepted": True, "reason": None, "loss": 0.5,
                             "holdout_before": 0.4123, "holdout_after": 0.4011},
        "checkpoints_saved": 2})], 2)
    watch.on_message([wire.TOPIC_PRED, b"\xc1"], 2)  # garbage is counted, not fatal
    return watch


def test_watch_shows_the_newest_answer_against_its_label() -> None:
    watch = _fed(Watch(OPTIONS))
    assert watch.rejected == 1
    lines = render(watch.view(1.0, time.monotonic_ns()), width=80, color=False)
    text = "\n".join(lines)
    assert "model m1" in lines[0]
    assert lines[1] == "health degraded (stale: tcp://127.0.0.1:5556)"
    assert "newest answered frame: seq 7 from lidar" in text
    rows = {line.split()[0]: line for line in lines if line.split()[0] in NAMES}
    assert rows["pedestrian"].endswith("0.90  ✓ present")
    assert rows["cyclist"].endswith("0.20  ✗ present, missed")
    assert rows["dog"].endswith("0.60  ✗ false alarm")
    assert "answered 2" in text
    assert "latency p50 9.5 ms p99 19.0 ms" in text
    assert "daemon: dropped 0 rejected 2 lost 1" in text
    assert ("learning: labels 4 used, 1 rejected, steps 7, refused 2 (loss_jump 2), holdout"
            " loss 0.412 -> 0.401, checkpoints 2") in " ".join(
                line.strip() for line in lines)
    assert all(len(line) <= 80 for line in lines)


def test_watch_without_a_model_numbers_the_classes() -> None:
    watch = _fed(Watch(WatchOptions(pred="ipc:///tmp/x")))
    lines = render(watch.view(1.0, time.monotonic_ns()), width=80)
    assert any(line.startswith("  class 2 ") for line in lines)
    assert not any("labels seen" in line for line in lines)


def test_before_anything_arrives_it_says_what_to_check() -> None:
    lines = render(Watch(OPTIONS).view(0.5, time.monotonic_ns()), width=80)
    assert "none yet (is the daemon running, and fed?)" in "\n".join(lines)
    assert online_line(None) == ""
    plain = progress_line(Watch(OPTIONS).view(0.5, 0))  # --no-live: the same hint
    assert plain.startswith("[   0.5 s] answered 0")
    assert plain.endswith("(is the daemon running, and fed?)")


def test_watch_a_real_daemon_from_the_command_line(workdir: Path) -> None:
    frames_ep, pred_ep, labels_ep = (f"ipc://{workdir}/{n}" for n in ("f", "p", "l"))
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "robot_daemon", "run", "--model", str(DEFAULT_MODEL),
         "--frames", frames_ep, "--pred", pred_ep, "--status-interval", "0.2"],
        stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    ctx = zmq.Context()
    try:
        # XPUB: each sees the subscription of the process that connects to it, so the
        # frames start once the daemon and watch listen, not after a guess.
        frames, labels = ctx.socket(zmq.XPUB), ctx.socket(zmq.XPUB)
        frames.bind(frames_ep)
        labels.bind(labels_ep)
        watcher = subprocess.Popen(
            [sys.executable, "-m", "robot_daemon", "watch", "--pred", pred_ep,
             "--labels", labels_ep, "--model", str(DEFAULT_MODEL), "--no-live",
             "--duration", "5"],
            stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        for sock in (frames, labels):  # the daemon's frames SUB, watch's labels SUB
            assert sock.poll(30_000), "never subscribed"
            sock.recv()
        # watch connects its pred SUB just before its labels SUB: a moment for it to
        # reach the daemon, which has been serving since it subscribed to the frames.
        time.sleep(0.3)
        rng = np.random.default_rng(0)
        for seq in range(100):
            x = rng.normal(size=16).astype(np.float32)
            frames.send_multipart([wire.TOPIC_FRAME, wire.encode_frame(seq, seq * 0.02, x)])
            y = np.zeros(8, np.uint8)
            labels.send_multipart([wire.TOPIC_LABEL, wire.encode_label(seq, seq * 0.02, x, y)])
            time.sleep(0.005)
        out, _ = watcher.communicate(timeout=20)
        assert watcher.returncode == 0
        last = out.strip().splitlines()[-1]
        assert "answered 100" in last, out
        assert "dropped 0 rejected 0 lost 0" in last, out
        assert "health " in last, out  # the daemon's liveness, as status reports it
        frames.close(linger=0)
        labels.close(linger=0)
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
        ctx.term()


# ------------------------------------------------------------ what the network may send

#: Issue 25's src: retitles the terminal that prints it ("PWNED") and clears its screen.
HOSTILE = "\x1b]0;PWNED\x07\x1b[2J"
#: Our colours, the only escape codes the views write into a line.
OUR_COLOURS = re.compile(r"\x1b\[(?:31|32|33|0)m")


def _shown_lines(status: dict[str, Any], width: int, color: bool,
                 unicode: bool = True) -> list[str]:
    """Both views of a watch fed ``_fed``'s messages, then ``status`` as a payload."""
    watch = _fed(Watch(OPTIONS))
    payload = msgpack.packb(status, use_bin_type=True)
    watch.on_message([wire.TOPIC_STATUS, payload], 2)
    wire.decode_status(payload)  # raises unless decode_status accepts it
    assert watch.status is not None
    assert msgpack.packb(watch.status, use_bin_type=True) == payload  # this one, not _fed's
    view = watch.view(2.0, time.monotonic_ns())
    return [*render(view, width, color, unicode), progress_line(view), online_line(view.status)]


def _assert_safe(lines: list[str], width: int) -> None:
    """No line wider than the view, none holding a control character but our colours."""
    for line in lines[:-2]:  # the live view's
        assert len(OUR_COLOURS.sub("", line)) <= max(width, MIN_WIDTH), line
    for line in lines:
        assert OUR_COLOURS.sub("", line).isprintable(), repr(line)


def test_strings_from_the_network_are_shown_escaped_never_run() -> None:
    status = {"model_version": HOSTILE, "health": "degraded\r", "stale_srcs": [HOSTILE],
              "stale_endpoints": ["tcp://x\u202e:5556"], "frames_rejected": {HOSTILE: 1},
              "labels_received": 1, "online_rejected": {HOSTILE: 2}}
    lines = _shown_lines(status, 80, color=True)
    _assert_safe(lines, 80)
    text = " ".join(lines)
    assert "model \\x1b]0;PWNED\\x07\\x1b[2J" in text
    assert "health degraded\\r (stale: tcp://x\\u202e:5556, \\x1b]0;PWNED" in text
    assert "refused 2 (\\x1b]0;PWNED\\x07\\x1b[2J 2)" in text


def test_a_pred_whose_src_is_not_printable_is_refused_and_counted() -> None:
    """A daemon of an older version passed such a src on: the pred is refused (bad_src)."""
    watch = Watch(OPTIONS)
    p = np.full((1, 3), 0.5, np.float32).tobytes()
    pred = msgpack.packb({"tick": 1, "t": 1.0, "seq": [4], "p": p, "n": 1, "c": 3,
                          "model": "m", "t_frame": [1.0], "src": [HOSTILE]})
    watch.on_message([wire.TOPIC_PRED, pred], 2)
    assert (watch.rejected, watch.newest) == (1, None)
    view = watch.view(1.0, time.monotonic_ns())
    assert "answered 0    0.0 frames/s  latency -  (messages refused: 1)" in render(view)


def test_a_status_of_wrong_types_shows_what_it_can_and_marks_the_rest() -> None:
    """Issue 25's 7 of 7: each crashed watch with a traceback."""
    status = {"frames_rejected": ["wrong_d"], "frames_dropped": "3", "frames_lost": {"n": 1},
              "uptime_s": 1e300, "latency_ms_p50": math.nan, "latency_ms_p99": [],
              "model_version": 7, "health": ["ok"], "stale_srcs": "lidar",
              "stale_endpoints": [None, "tcp://a:1"], "labels_received": 1,
              "labels_accepted": True, "labels_rejected": {"outlier": "1"},
              "online_steps": 2**64 - 1, "online_rejected": [1],
              "online_last_step": {"holdout_after": "x"}}
    lines = _shown_lines(status, 80, color=False)
    _assert_safe(lines, 80)
    text = " ".join(line.strip() for line in lines)
    assert "model ?  up 1e+300 s" in text
    assert "health ? (stale: ?, tcp://a:1, lidar)" in text  # a name for a list: shown
    assert "latency p50 nan ms p99 ? ms" in text
    assert "daemon: dropped ? rejected ? lost ?" in text
    assert ("learning: labels ? used, ? rejected, steps 1.84e+19, refused ?, holdout loss ?"
            " -> ?, checkpoints -") in text


def test_a_status_without_the_keys_shows_dashes() -> None:
    lines = _shown_lines({}, 80, color=False)
    assert "daemon: dropped - rejected - lost -" in lines
    assert "latency p50 - ms p99 - ms" in " ".join(lines)


def test_a_label_of_another_class_count_is_not_matched_to_the_answer() -> None:
    watch = _fed(Watch(OPTIONS))
    x = np.zeros(4, np.float32)
    watch.on_message([wire.TOPIC_LABEL, wire.encode_label(7, 1.0, x, np.array([1, 0]))], 2)
    view = watch.view(1.0, time.monotonic_ns())
    assert view.truth is None
    assert "✓" not in "".join(render(view))


_ODD_TEXTS = st.sampled_from([HOSTILE, "ok", "degraded", "blind", "\u202e", "a\u2028b",
                              "\x9b2J", "é" * 3000, "x" * 70, "word " * 40])
_SCALARS = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
            | st.text(max_size=8) | st.binary(max_size=8) | _ODD_TEXTS)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=12) | st.dictionaries(
        st.text(max_size=5) | st.binary(max_size=3) | _ODD_TEXTS, inner, max_size=5),
    max_leaves=24,
)
#: The keys watch reads, and others.
_KEYS = st.sampled_from([
    "model_version", "uptime_s", "health", "stale_endpoints", "stale_srcs", "frames_rejected",
    "frames_dropped", "frames_lost", "latency_ms_p50", "latency_ms_p99", "labels_received",
    "labels_accepted", "labels_rejected", "online_steps", "online_rejected",
    "online_last_step", "checkpoints_saved"]) | st.text(max_size=6)


@st.composite
def _statuses(draw: st.DrawFn) -> dict[str, Any]:
    """A map decode_status accepts: the daemon's keys (and others) with any values, nested
    where the daemon nests (online_last_step's holdout losses)."""
    status = draw(st.dictionaries(_KEYS, _VALUES, max_size=14))
    if draw(st.booleans()):
        status["online_last_step"] = draw(st.dictionaries(
            st.sampled_from(["holdout_before", "holdout_after"]), _SCALARS))
    return status


@given(status=_statuses(), width=st.integers(0, 300), color=st.booleans(),
       unicode=st.booleans())
@example(status={"frames_rejected": [1], "frames_dropped": "3", "frames_lost": {},
                 "uptime_s": "12", "latency_ms_p50": {}, "health": 1, "stale_srcs": {},
                 "model_version": None, "labels_received": 0, "online_rejected": {"a": "b"}},
         width=80, color=True, unicode=True)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_status_renders_in_both_views_at_any_width(
    status: dict[str, Any], width: int, color: bool, unicode: bool,
) -> None:
    _assert_safe(_shown_lines(status, width, color, unicode), width)


@pytest.mark.parametrize("live", [True, False], ids=["live", "no-live"])
def test_a_name_the_terminal_cannot_encode_is_shown_escaped(live: bool) -> None:
    """A src in another script is valid; on an ASCII terminal (LANG=C without UTF-8,
    PYTHONIOENCODING=ascii) it ended watch with a UnicodeEncodeError."""
    watch = _fed(Watch(OPTIONS))
    watch.on_message([wire.TOPIC_STATUS, wire.encode_status({
        "health": "degraded", "stale_srcs": ["caméra"]})], 2)
    view = watch.view(1.0, time.monotonic_ns())
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii", write_through=True)
    shown: TerminalView[WatchView] | PlainView[WatchView] = (
        TerminalView(out, render) if live else PlainView(out, progress_line, lambda v: 1.0))
    with shown:
        shown.update(view, final=True)
    assert "stale: cam\\xe9ra" in raw.getvalue().decode("ascii")


class _Terminal(io.StringIO):
    """What a terminal receives; it says it is one, so watch draws its live view."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("live", [True, False], ids=["live", "no-live"])
def test_watch_never_writes_what_a_hostile_publisher_sends(workdir: Path, live: bool) -> None:
    """A publisher on the pred endpoint (an impostor, or a daemon of another version) sends
    a hostile status and a pred with the hostile src: both views write neither raw."""
    endpoint = f"ipc://{workdir}/p"
    out = _Terminal() if live else io.StringIO()
    stop = threading.Event()
    options = WatchOptions(pred=endpoint, class_names=NAMES,
                           thresholds=np.full(3, 0.5), live=live)
    status = wire.encode_status({"model_version": HOSTILE, "health": "degraded",
                                 "stale_srcs": [HOSTILE], "frames_dropped": "many"})
    p = np.full((1, 3), 0.5, np.float32).tobytes()
    pred = msgpack.packb({"tick": 1, "t": 1.0, "seq": [4], "p": p, "n": 1, "c": 3,
                          "model": HOSTILE, "src": [HOSTILE]})
    with zmq.Context() as ctx, ctx.socket(zmq.PUB) as pub:
        pub.setsockopt(zmq.LINGER, 0)
        pub.bind(endpoint)
        watcher = threading.Thread(target=run, args=(options, out, stop))
        watcher.start()
        try:
            deadline = time.monotonic() + 20
            while "PWNED" not in out.getvalue() and time.monotonic() < deadline:
                pub.send_multipart([wire.TOPIC_PRED, pred])
                pub.send_multipart([wire.TOPIC_STATUS, status])
                time.sleep(0.05)
        finally:
            stop.set()
            watcher.join(timeout=10)
    text = OUR_COLOURS.sub("", out.getvalue())
    escaped = "\\x1b]0;PWNED\\x07\\x1b[2J"
    assert f"stale: {escaped}" in text
    if live:  # the model's name too (the plain line has none)
        assert re.search(rf"model\s+{re.escape(escaped)}", text.replace("\x1b[K\n", " "))
    assert "dropped ?" in text
    # Only the live view's own codes: cursor hidden and shown, up, clear line and below.
    own = re.compile(r"\x1b\[(?:\?25[lh]|\d+F|K|J)")
    assert "\x1b" not in own.sub("", text)
    assert "\x07" not in text


def test_the_tick_line_shows_each_source_and_where_the_grid_moved() -> None:
    assert tick_line(None) == tick_line({"tick_moves": 0}) == ""
    line = tick_line({"src_latency_ms": {"lidar": [0.61, 1.4], "(no src)": [10.0, 19.5]},
                      "tick_moves": 2, "tick_offset_ms": 7.25})
    assert line == ("latency by src: lidar 0.6/1.4 ms, (no src) 10.0/19.5 ms;"
                    " grid moved 2x, offset 7.2 ms")
    hostile = tick_line({"src_latency_ms": {"\x1b[2J": "x", "ok": [1, "\x1b"]}})
    assert "\x1b" not in hostile


def test_the_shadow_line_compares_the_candidate_with_the_serving_model() -> None:
    assert shadow_line(None) == shadow_line({"ticks": 3}) == ""
    status = {"shadow": {"model": "cand-1", "frames_compared": 90, "frames_skipped": 2,
                         "disagree": {"dog": 0.031, "pedestrian": 0.2},
                         "f1_serving": {"macro": 0.61}, "f1_shadow": {"macro": 0.66},
                         "labelled": 40}}
    assert shadow_line(status) == (
        "shadow cand-1: compared 90, skipped 2; decisions differ pedestrian 20.0%,"
        " dog 3.1%; macro F1 serving 0.610 shadow 0.660 (40 labels)")
    # --no-live: on the one line of a report.
    plain = progress_line(dataclasses.replace(Watch(OPTIONS).view(0.5, 0), status=status))
    assert plain.endswith(" | " + shadow_line(status))
    hostile = shadow_line({"shadow": {"model": "\x1b[31m", "disagree": {"\x07": True}}})
    assert "\x1b" not in hostile
    assert "\x07" not in hostile


def test_the_capture_line_says_what_was_kept_and_dropped() -> None:
    assert capture_line(None) == capture_line({"ticks": 1}) == ""
    status = {"capture_frames": 12, "capture_by_reason": {"uncertain": 10, "disagree": 0,
                                                          "health": 2},
              "capture_dropped": {"rate": 3, "queue": 0, "error": 1}, "capture_errors": 1,
              "capture_bags": 2, "capture_bytes": 4096}
    assert capture_line(status) == ("capture: 12 frames (uncertain 10, health 2), dropped 4,"
                                     " errors 1; 2 bags, 4096 bytes")
    assert "\x1b" not in capture_line({"capture_frames": 1,
                                       "capture_by_reason": {"\x1b[2J": 1}})
