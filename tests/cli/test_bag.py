"""Tests of bag record / play / info / export over real ZeroMQ sockets and processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq
from mcap.reader import make_reader

from robot_daemon import config as serve_config
from robot_daemon import wire
from robot_daemon.bag import BagMessage, BagMeta, BagReader, BagWriter, seconds_to_ns
from robot_daemon.bag import play as bagplay
from robot_daemon.bag import record as bagrecord
from robot_daemon.bag.export import export_json
from robot_daemon.bag.play import PlayOptions, play
from robot_daemon.cli import build_parser, main
from robot_daemon.errors import BagError, ConfigError

T0_NS = 1_764_000_000_000_000_000
TIMEOUT_S = 20


@contextlib.contextmanager
def _spawn(*args: str) -> Iterator[subprocess.Popen[str]]:
    """``python -m robot_daemon bag ARGS``, killed and reaped whatever the test does."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "robot_daemon", "bag", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT_S)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


@contextlib.contextmanager
def _socket(kind: int, endpoint: str, *, bind: bool) -> Iterator[zmq.Socket[bytes]]:
    with zmq.Context() as ctx, ctx.socket(kind) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        if kind == zmq.SUB:
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        if bind:
            sock.bind(endpoint)
        else:
            sock.connect(endpoint)
        yield sock


def _count(path: Path) -> int:
    """Messages readable now from a bag that may still be being written."""
    if not path.exists() or path.stat().st_size < 8:
        return 0
    with BagReader(path) as bag:
        return sum(1 for _ in bag.messages())


def _frame(seq: int) -> bytes:
    return wire.encode_frame(seq, 100.0 + seq / 1000, np.full(4, seq, np.float32))


def _publish_until_recorded(pub: zmq.Socket[bytes], bag: Path, at_least: int) -> list[bytes]:
    """Publish frames until the recorder's bag holds ``at_least`` messages."""
    sent: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT_S
    while _count(bag) < at_least:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the recorder wrote fewer than {at_least} messages")
        for _ in range(20):
            payload = _frame(len(sent))
            pub.send_multipart([b"frame", payload])
            sent.append(payload)
            time.sleep(0.001)
    return sent


def _assert_contiguous_run(recorded: list[BagMessage], sent: list[bytes]) -> None:
    """What a late-joining recorder got is one unbroken run of what was published."""
    assert recorded
    first = sent.index(recorded[0].payload)
    assert [m.payload for m in recorded] == sent[first : first + len(recorded)]
    assert all(m.topic == "frame" for m in recorded)
    assert all(m.sensor_ns is not None for m in recorded)


def test_sigterm_finishes_the_bag_and_exits_0(tmp_path: Path) -> None:
    endpoint, out = f"ipc://{tmp_path}/s.ipc", tmp_path / "rec.mcap"
    with _socket(zmq.PUB, endpoint, bind=True) as pub, _spawn(
        "record", str(out), "--connect", endpoint, "--flush-interval", "0.05"
    ) as rec:
        sent = _publish_until_recorded(pub, out, at_least=20)
        time.sleep(0.2)  # let the last published frames reach the bag
        rec.send_signal(signal.SIGTERM)
        stdout, stderr = rec.communicate(timeout=TIMEOUT_S)
    assert rec.returncode == 0, stderr
    assert "recorded" in stdout
    with BagReader(out) as bag:
        recorded = list(bag.messages())
        assert not bag.damaged
        assert bag.meta.d == 4  # learned from the first frame
    _assert_contiguous_run(recorded, sent)
    assert recorded[-1].payload == sent[-1]


def test_sigkill_leaves_a_bag_that_still_reads(tmp_path: Path) -> None:
    endpoint, out = f"ipc://{tmp_path}/s.ipc", tmp_path / "rec.mcap"
    with _socket(zmq.PUB, endpoint, bind=True) as pub, _spawn(
        "record", str(out), "--connect", endpoint, "--flush-interval", "0.05"
    ) as rec:
        sent = _publish_until_recorded(pub, out, at_least=20)
        seen = _count(out)
        rec.kill()
        rec.wait(TIMEOUT_S)
    with BagReader(out) as bag:
        recorded = list(bag.messages())
        assert bag.damaged
        assert bag.warning is not None
    assert len(recorded) >= seen
    _assert_contiguous_run(recorded, sent)


def _source_bag(path: Path, n: int = 60, gap_ns: int = 20_000_000) -> list[BagMessage]:
    """Frames, labels, a status and a malformed payload: every kind a bag may hold."""
    messages = []
    for i in range(n):
        recv = T0_NS + i * gap_ns
        if i % 3 == 1:
            y = np.array([i % 2, 1, 0], np.uint8)
            payload = wire.encode_label(i, 100.0 + i / 50, np.full(4, i, np.float32), y)
            messages.append(BagMessage("label", payload, recv, seconds_to_ns(100.0 + i / 50)))
        else:
            messages.append(BagMessage("frame", _frame(i), recv, seconds_to_ns(100.0 + i / 1000)))
    end = T0_NS + n * gap_ns
    messages.append(BagMessage("status", wire.encode_status({"ticks": 3}), end, None))
    messages.append(BagMessage("frame", b"\x92 not a v1 payload", end + gap_ns, None))
    with BagWriter(path, meta=BagMeta(d=4, c=3, class_names=["dog", "pole", "bike"])) as bag:
        for m in messages:
            bag.write(m.topic, m.payload, m.recv_ns, m.sensor_ns)
    return messages


def test_record_play_record_gives_identical_payloads(tmp_path: Path) -> None:
    source = tmp_path / "a.mcap"
    messages = _source_bag(source)
    endpoint, out = f"ipc://{tmp_path}/p.ipc", tmp_path / "b.mcap"
    with _spawn("record", str(out), "--connect", endpoint) as rec:
        with _spawn(
            "play", str(source), "--bind", endpoint, "--rate", "0", "--wait-subscribers", "1"
        ) as player:
            stdout, stderr = player.communicate(timeout=TIMEOUT_S)
            assert player.returncode == 0, stderr
            assert f"published {len(messages)} messages" in stdout
        time.sleep(0.3)
        rec.send_signal(signal.SIGTERM)
        _, stderr = rec.communicate(timeout=TIMEOUT_S)
        assert rec.returncode == 0, stderr
    with BagReader(out) as bag:
        again = list(bag.messages())
    assert [(m.topic, m.payload) for m in again] == [(m.topic, m.payload) for m in messages]
    assert [m.sensor_ns for m in again] == [m.sensor_ns for m in messages]


def _receive(
    endpoint: str, count: int, *, delay_s: float = 0.0, rcvhwm: int = 1000, slow: bool = False
) -> tuple[list[tuple[bytes, bytes]], list[int]]:
    """Connect a SUB, stall ``delay_s``, then take ``count`` messages and their arrival times.

    ``slow`` makes it a subscriber that keeps pausing. Stops early when nothing arrives
    for TIMEOUT_S.
    """
    got: list[tuple[bytes, bytes]] = []
    times: list[int] = []
    with zmq.Context() as ctx, ctx.socket(zmq.SUB) as sub:
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, rcvhwm)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.RCVTIMEO, TIMEOUT_S * 1000)
        sub.connect(endpoint)
        time.sleep(delay_s)
        with contextlib.suppress(zmq.Again):  # a timeout: the caller's asserts say more
            while len(got) < count:
                topic, payload = sub.recv_multipart()
                times.append(time.monotonic_ns())
                got.append((topic, payload))
                if slow and len(got) % 250 == 0:
                    time.sleep(0.01)  # behind the player all along, and at the end
    return got, times


def test_play_honours_rate(tmp_path: Path) -> None:
    source = tmp_path / "a.mcap"
    gap_ns, n = 40_000_000, 25
    messages = _source_bag(source, n=n, gap_ns=gap_ns)[:n]
    endpoint = f"ipc://{tmp_path}/p.ipc"
    with _spawn(
        "play", str(source), "--bind", endpoint, "--rate", "2", "--wait-subscribers", "1"
    ) as player:
        got, times = _receive(endpoint, n)
        player.communicate(timeout=TIMEOUT_S)
    assert [p for _, p in got] == [m.payload for m in messages]
    error_ms = (np.array(times) - times[0]) / 1e6 - np.arange(n) * gap_ns / 2 / 1e6
    # Robust to a loaded machine, which may delay any one message by tens of ms: never
    # early, typically on time, and the whole bag in half its recorded time.
    assert error_ms.min() > -5.0, error_ms
    assert np.median(np.abs(error_ms)) < 5.0, error_ms
    assert abs(error_ms[-1]) < 100.0, error_ms


def _play_in_thread(
    path: Path, endpoint: str, options: PlayOptions, stop: threading.Event | None = None
) -> tuple[threading.Thread, list[bagplay.PlaySummary]]:
    result: list[bagplay.PlaySummary] = []
    thread = threading.Thread(
        target=lambda: result.append(play(path, endpoint, options, stop=stop)), daemon=True
    )
    thread.start()
    return thread, result


def test_rate_0_loses_nothing_to_a_slow_subscriber(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small queues on both sides, so that a dropping publisher would certainly drop.
    monkeypatch.setattr(bagplay, "SNDHWM_NODROP", 50)
    source = tmp_path / "a.mcap"
    n = 5000
    with BagWriter(source) as bag:
        for i in range(n):
            bag.write("frame", _frame(i), T0_NS + i)
    endpoint = f"ipc://{tmp_path}/p.ipc"
    thread, result = _play_in_thread(source, endpoint, PlayOptions(rate=0, wait_subscribers=1))
    got, _ = _receive(endpoint, n, delay_s=0.5, rcvhwm=50, slow=True)
    thread.join(TIMEOUT_S)
    assert result, "the player did not finish"
    assert result[0].counts["frame"] == n
    seqs = [wire.decode_frame(p).seq for _, p in got]
    missing = sorted(set(range(n)) - set(seqs))
    assert not missing, f"received {len(got)} of {n}; missing {missing[:3]}..{missing[-3:]}"
    assert [p for _, p in got] == [_frame(i) for i in range(n)]


def test_loop_and_start_offset(tmp_path: Path) -> None:
    source = tmp_path / "a.mcap"
    messages = _source_bag(source, n=30)  # 20 ms apart, then a status and a bad frame
    endpoint = f"ipc://{tmp_path}/p.ipc"
    stop = threading.Event()
    options = PlayOptions(
        rate=0, loop=True, start_offset_s=0.5, topics=["frame", "label"], wait_subscribers=1
    )
    thread, result = _play_in_thread(source, endpoint, options, stop)
    try:
        got, _ = _receive(endpoint, 12)
    finally:
        stop.set()
        thread.join(TIMEOUT_S)
    played = [m.payload for m in messages[25:] if m.topic != "status"]  # from 0.5 s on
    assert len(played) == 6
    assert [p for _, p in got] == (played * 2)
    assert result[0].loops >= 2


def test_play_warns_on_a_damaged_bag_and_plays_what_is_complete(tmp_path: Path) -> None:
    full, cut = tmp_path / "a.mcap", tmp_path / "cut.mcap"
    with BagWriter(full) as bag:
        for i in range(40):
            bag.write("frame", _frame(i), T0_NS + i)
            if i % 10 == 9:
                bag.flush()
    cut.write_bytes(full.read_bytes()[:-200])  # into the summary: every chunk survives
    endpoint = f"ipc://{tmp_path}/p.ipc"
    thread, result = _play_in_thread(cut, endpoint, PlayOptions(rate=0, wait_subscribers=1))
    got, _ = _receive(endpoint, 40)
    thread.join(TIMEOUT_S)
    assert [p for _, p in got] == [_frame(i) for i in range(40)]
    assert result[0].warning is not None
    assert "damaged" in result[0].warning


def test_info_json_and_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "a.mcap"
    _source_bag(source)
    assert main(["bag", "info", str(source), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["integrity"] == "complete"
    assert (info["d"], info["c"]) == (4, 3)
    assert info["topics"]["frame"]["count"] == 41
    assert info["topics"]["label"]["rate_hz"] == pytest.approx(50 / 3)
    size = source.stat().st_size
    assert info["size_bytes"] == info["file_size"] == size
    assert main(["bag", "info", str(source)]) == 0
    text = capsys.readouterr().out
    assert "integrity:  complete" in text
    assert f"\nsize:       {size / 1024:.1f} KiB ({size:,} bytes)\n" in text


def test_cli_reports_bag_errors_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "x.mcap").write_text("hello")
    assert main(["bag", "info", str(tmp_path / "x.mcap")]) == 2
    assert "is not an MCAP bag" in capsys.readouterr().err


def test_export_writes_json_that_mcap_tools_decode(tmp_path: Path) -> None:
    source, out = tmp_path / "a.mcap", tmp_path / "a.json.mcap"
    messages = _source_bag(source)
    summary = export_json(source, out)
    assert summary.skipped["frame"] == 1  # the malformed payload
    with open(out, "rb") as f:
        records = list(make_reader(f).iter_messages())
    assert len(records) == len(messages) - 1
    schema, channel, message = records[1]
    assert schema is not None
    assert channel.message_encoding == "json"
    assert schema.encoding == "jsonschema"
    assert json.loads(schema.data)["title"] == "robot_daemon.label"
    obj = json.loads(message.data)
    assert obj["y"] == [1, 1, 0]
    assert obj["classes"] == {"dog": 1, "pole": 1, "bike": 0}
    assert obj["x"] == [1.0] * 4
    assert message.log_time == messages[1].recv_ns


def test_cli_says_how_to_install_mcap_when_missing(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['mcap'] = None; "
        "from robot_daemon.cli import main; sys.exit(main(['bag', 'info', 'x.mcap']))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert proc.returncode == 2
    assert "pip install 'robot-daemon[bag]'" in proc.stderr


def test_play_options_are_checked() -> None:
    with pytest.raises(BagError, match="--rate must be a finite number >= 0"):
        PlayOptions(rate=-1)
    with pytest.raises(BagError, match="--start-offset must be >= 0"):
        PlayOptions(start_offset_s=float("nan"))


def test_record_skips_what_mcap_cannot_hold_and_learns_d_and_c(tmp_path: Path) -> None:
    endpoint, out = f"ipc://{tmp_path}/s.ipc", tmp_path / "rec.mcap"
    stop = threading.Event()
    result: list[bagrecord.RecordSummary] = []
    label = wire.encode_label(0, 1.0, np.zeros(4, np.float32), np.array([0, 1, 1], np.uint8))
    with _socket(zmq.PUB, endpoint, bind=True) as pub:
        thread = threading.Thread(
            target=lambda: result.append(
                bagrecord.record(out, [endpoint], stop=stop, flush_interval_ns=10_000_000)
            ),
            daemon=True,
        )
        thread.start()
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while _count(out) < 5 and time.monotonic() < deadline:
                pub.send_multipart([b"frame", b"1", b"2"])  # three parts
                pub.send_multipart([b"\xff\xfe", b"payload"])  # topic not UTF-8
                pub.send_multipart([b"label", label])
                time.sleep(0.005)
        finally:
            stop.set()
            thread.join(TIMEOUT_S)
    summary = result[0]
    assert summary.skipped >= 2
    assert set(summary.counts) == {"label"}
    assert "skipped" in summary.describe()
    with BagReader(out) as bag:
        assert bag.meta == BagMeta(d=4, c=3)
        assert {m.topic for m in bag.messages()} == {"label"}


def test_record_refuses_an_existing_bag_unless_overwrite(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = workdir / "run.mcap"
    _source_bag(out)
    before = out.read_bytes()
    endpoint = f"ipc://{workdir}/none"
    assert main(["bag", "record", str(out), "--connect", endpoint, "--duration", "0.1"]) == 2
    assert "run.mcap exists; pass --overwrite to replace it" in capsys.readouterr().err
    # A bad endpoint is found before the bag is opened: --overwrite costs nothing yet.
    assert main(["bag", "record", str(out), "--connect", "nowhere", "--overwrite"]) == 2
    assert out.read_bytes() == before
    argv = ["bag", "record", str(out), "--connect", endpoint, "--duration", "0.1", "--overwrite"]
    assert main(argv) == 0
    assert _count(out) == 0


def test_export_onto_its_input_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "a.mcap"
    _source_bag(source)
    before = source.read_bytes()
    with pytest.raises(ConfigError, match="would destroy what is read"):
        export_json(source, source)
    assert source.read_bytes() == before


def test_bags_that_would_hang_or_never_end_are_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    for path in (tmp_path / "fifo", Path("/dev/zero")):
        with pytest.raises(BagError, match="is not a regular file"):
            BagReader(path)
    with pytest.raises(BagError, match="is a directory"):
        BagReader(tmp_path)


def test_play_refuses_options_that_select_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, empty = tmp_path / "a.mcap", tmp_path / "empty.mcap"
    _source_bag(source)  # 1.22 s of frame, label, status
    BagWriter(empty).close()
    endpoint = f"ipc://{tmp_path}/p.ipc"
    cases = {
        ("--start-offset", "5"): "--start-offset 5 s is past the end of",
        ("--topics", "frame", "pred"): "has no 'pred' messages (its topics: frame, label, status)",
        ("--topics", "status", "--start-offset", "0.1"): "past the end",
    }
    for extra, message in cases.items():
        assert main(["bag", "play", str(source), "--bind", endpoint, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("robot-daemon bag play: error:"), err
        assert message in err
        assert err.count("\n") == 1
    assert main(["bag", "play", str(empty), "--bind", endpoint]) == 2
    assert "holds no messages: nothing to play" in capsys.readouterr().err


def test_play_duration_plays_the_first_seconds(tmp_path: Path) -> None:
    source = tmp_path / "a.mcap"
    messages = _source_bag(source)  # 20 ms apart from T0
    endpoint = f"ipc://{tmp_path}/p.ipc"
    options = PlayOptions(rate=0, duration_s=0.2, topics=["frame"], wait_subscribers=1,
                          drain_s=0.2)
    thread, result = _play_in_thread(source, endpoint, options)
    expected = [m.payload for m in messages[:10] if m.topic == "frame"]
    got, _ = _receive(endpoint, len(expected))
    thread.join(TIMEOUT_S)
    assert [p for _, p in got] == expected
    assert result[0].counts == {"frame": len(expected)}


def test_play_takes_ros2_bag_play_flags() -> None:
    parser = build_parser()
    args = parser.parse_args(["bag", "play", "a.mcap", "--bind", "ipc://x", "-r", "2", "-l",
                              "-d", "1.5", "--exclude-topics", "status", "pred"])
    assert (args.rate, args.loop, args.delay) == (2.0, True, 1.5)
    assert args.exclude_topics == ["status", "pred"]
    for flag in ("--playback-duration", "--duration"):  # --duration: the older name
        args = parser.parse_args(["bag", "play", "a.mcap", "b.mcap", "--bind", "ipc://x",
                                  flag, "3"])
        assert (args.bag_in, args.duration) == (["a.mcap", "b.mcap"], 3.0)
    args = parser.parse_args(["bag", "play", "-i", "a.mcap", "-i", "b.mcap", "--bind", "ipc://x"])
    assert (args.bag_in, args.input) == ([], ["a.mcap", "b.mcap"])


def test_play_takes_bags_as_arguments_or_as_inputs_not_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "a.mcap"
    _source_bag(source)
    endpoint = f"ipc://{tmp_path}/p.ipc"
    assert main(["bag", "play", "-i", str(source), "--bind", endpoint, "-r", "0",
                 "--drain", "0"]) == 0
    assert "published 62 messages" in capsys.readouterr().out
    assert main(["bag", "play", str(source), "-i", str(source), "--bind", endpoint]) == 2
    assert "either as IN ... or as -i IN -i IN ..., not both" in capsys.readouterr().err
    assert main(["bag", "play", "--bind", endpoint]) == 2
    assert "none given" in capsys.readouterr().err


def _bag_of(path: Path, topic: str, times_ms: list[int]) -> list[BagMessage]:
    messages = [BagMessage(topic, _frame(t), T0_NS + t * 1_000_000, None) for t in times_ms]
    with BagWriter(path) as bag:
        for m in messages:
            bag.write(m.topic, m.payload, m.recv_ns)
    return messages


def test_several_bags_play_as_one_merged_by_receive_time(tmp_path: Path) -> None:
    # Two recorders side by side: frames in one bag, labels in the other.
    a = _bag_of(tmp_path / "a.mcap", "frame", [0, 20, 40, 60, 60])
    b = _bag_of(tmp_path / "b.mcap", "label", [10, 20, 50, 70])
    endpoint = f"ipc://{tmp_path}/p.ipc"
    options = PlayOptions(rate=0, wait_subscribers=1, drain_s=0.2)
    result: list[bagplay.PlaySummary] = []
    thread = threading.Thread(
        target=lambda: result.append(play([tmp_path / "a.mcap", tmp_path / "b.mcap"], endpoint,
                                          options)),
        daemon=True,
    )
    thread.start()
    got, _ = _receive(endpoint, 9)
    thread.join(TIMEOUT_S)
    # By receive time; at equal times the bags' order (a's frame at 20 ms before b's label).
    expected = sorted(a + b, key=lambda m: m.recv_ns)
    assert [(t.decode(), p) for t, p in got] == [(m.topic, m.payload) for m in expected]
    assert [t.decode() for t, _ in got][:4] == ["frame", "label", "frame", "label"]
    assert result[0].counts == {"frame": 5, "label": 4}
    assert "from " + f"{tmp_path / 'a.mcap'}, {tmp_path / 'b.mcap'}" in result[0].describe()


def test_several_bags_keep_the_recorded_gap_between_them(tmp_path: Path) -> None:
    _bag_of(tmp_path / "a.mcap", "frame", [0, 10])
    _bag_of(tmp_path / "b.mcap", "frame", [400, 410])  # recorded 0.4 s after a
    endpoint = f"ipc://{tmp_path}/p.ipc"
    thread = threading.Thread(
        target=lambda: play([tmp_path / "b.mcap", tmp_path / "a.mcap"], endpoint,
                            PlayOptions(wait_subscribers=1, drain_s=0.2)),
        daemon=True,
    )
    thread.start()
    got, times = _receive(endpoint, 4)
    thread.join(TIMEOUT_S)
    assert [wire.decode_frame(p).seq for _, p in got] == [0, 10, 400, 410]
    assert (times[2] - times[0]) / 1e6 > 300  # not back to back


def test_one_bag_given_twice_is_refused(tmp_path: Path) -> None:
    _source_bag(tmp_path / "a.mcap")
    (tmp_path / "link.mcap").symlink_to(tmp_path / "a.mcap")
    with pytest.raises(ConfigError, match=r"link\.mcap is the same bag as .*a\.mcap"):
        play([tmp_path / "a.mcap", tmp_path / "link.mcap"], f"ipc://{tmp_path}/p.ipc")


def test_exclude_topics_plays_everything_else(tmp_path: Path) -> None:
    source = tmp_path / "a.mcap"
    messages = _source_bag(source)
    endpoint = f"ipc://{tmp_path}/p.ipc"
    options = PlayOptions(rate=0, exclude_topics=["label", "status"], wait_subscribers=1,
                          drain_s=0.2)
    thread, result = _play_in_thread(source, endpoint, options)
    expected = [m.payload for m in messages if m.topic == "frame"]
    got, _ = _receive(endpoint, len(expected))
    thread.join(TIMEOUT_S)
    assert [p for _, p in got] == expected
    assert set(result[0].counts) == {"frame"}


def test_exclude_topics_that_select_nothing_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "a.mcap"
    _source_bag(source)
    endpoint = f"ipc://{tmp_path}/p.ipc"
    cases = {
        ("--exclude-topics", "stauts"): "has no 'stauts' messages (its topics: frame, label, "
        "status); pick --exclude-topics among them",
        ("--topics", "frame", "--exclude-topics", "frame"): "--exclude-topics leaves no topic",
    }
    for extra, message in cases.items():
        assert main(["bag", "play", str(source), "--bind", endpoint, *extra]) == 2
        assert message in capsys.readouterr().err


def test_delay_waits_before_each_pass(tmp_path: Path) -> None:
    source = tmp_path / "a.mcap"
    _bag_of(source, "frame", [0, 1, 2])
    endpoint = f"ipc://{tmp_path}/p.ipc"
    stop = threading.Event()
    options = PlayOptions(rate=0, loop=True, delay_s=0.6, wait_subscribers=1)
    thread, _ = _play_in_thread(source, endpoint, options, stop)
    connected = time.monotonic_ns()
    try:
        got, times = _receive(endpoint, 6)
    finally:
        stop.set()
        thread.join(TIMEOUT_S)
    assert len(got) == 6
    # Arrival times: a message that arrives late shortens the next gap, hence the margins.
    gaps_ms = np.diff([connected, *times]) / 1e6
    assert gaps_ms[0] >= 600  # before the first pass
    assert gaps_ms[3] >= 500  # and before the second
    assert max(gaps_ms[[1, 2, 4, 5]]) < 300  # none within a pass (rate 0)


@pytest.mark.parametrize(
    "endpoint", ["tcp://0.0.0.0:5999", "tcp://*:5999", "tcp://192.168.1.5:5999", "tcp://[::]:5999"]
)
def test_play_binds_only_this_machine_unless_allowed(
    tmp_path: Path, endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "a.mcap"
    _source_bag(source)
    assert main(["bag", "play", str(source), "--bind", endpoint]) == 2
    err = capsys.readouterr().err
    assert f"--bind {endpoint!r} would publish the bag on the network" in err
    assert "or pass --allow-remote-bind" in err
    # The daemon's rule for --pred, word for word the same decision.
    with pytest.raises(ConfigError, match="would publish on the network"):
        serve_config.load(None, {"pred": endpoint})


@pytest.mark.parametrize(
    "endpoint", ["tcp://127.0.0.1:5999", "tcp://localhost:5999", "tcp://[::1]:5999", "ipc://x"]
)
def test_local_endpoints_need_no_flag(endpoint: str) -> None:
    bagplay.check_bind(endpoint, allow_remote_bind=False)
    serve_config.load(None, {"pred": endpoint})


def test_allow_remote_bind_binds_all_interfaces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "a.mcap"
    _source_bag(source)
    argv = ["bag", "play", str(source), "--bind", "tcp://0.0.0.0:*", "--allow-remote-bind",
            "-r", "0", "--drain", "0"]
    assert main(argv) == 0
    assert "published 62 messages" in capsys.readouterr().out


def test_play_reports_progress_and_open_subscriptions(tmp_path: Path) -> None:
    source = tmp_path / "a.mcap"
    _source_bag(source, n=30)  # 20 ms apart, then a status and a bad frame
    endpoint = f"ipc://{tmp_path}/p.ipc"
    reports: list[bagplay.PlayProgress] = []
    stop = threading.Event()
    options = PlayOptions(rate=0, loop=True, topics=["frame", "label"], wait_subscribers=1)
    thread = threading.Thread(
        target=lambda: play(source, endpoint, options, stop=stop, on_progress=reports.append),
        daemon=True,
    )
    thread.start()
    try:
        got, _ = _receive(endpoint, 100)  # then this subscriber goes away
        deadline = time.monotonic() + TIMEOUT_S
        while not (reports and reports[-1].subscriptions == 0) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(TIMEOUT_S)
    assert len(got) == 100
    assert any(r.subscriptions == 1 for r in reports)
    assert reports[-1].subscriptions == 0  # an unsubscription counts too
    assert reports[-1].passes >= 4  # 31 messages a pass
    assert {r.total_ns for r in reports} == {620_000_000}  # to the malformed frame at 0.62 s
    assert all(0 <= r.position_ns <= r.total_ns for r in reports)
    assert all(r.rate == 0 for r in reports)


def test_progress_line_text() -> None:
    where = bagplay.PlayProgress(12_345_000_000, 60_000_000_000, 615, 1.0, 0, 1)
    assert where.describe() == "[12.3 s / 60.0 s] 615 msgs, x1, 1 subscription"
    where = bagplay.PlayProgress(2_000_000_000, 120_000_000_000, 9, 0.5, 2, 0)
    assert where.describe() == "[  2.0 s / 120.0 s] 9 msgs, x0.5, 0 subscriptions, pass 3"
    where = bagplay.PlayProgress(0, 1_000_000_000, 0, 0, 0, 2)
    assert where.describe() == "[0.0 s / 1.0 s] 0 msgs, as fast as possible, 2 subscriptions"


def test_play_progress_goes_to_stderr_only_on_a_terminal_or_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "a.mcap"
    _source_bag(source)
    argv = ["bag", "play", str(source), "--bind", f"ipc://{tmp_path}/p.ipc", "-r", "0",
            "--drain", "0"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"playing {source} on ipc://{tmp_path}/p.ipc"]
    assert main([*argv, "--progress"]) == 0
    captured = capsys.readouterr()
    progress_lines = captured.err.splitlines()[1:]
    assert progress_lines
    assert all(" msgs, as fast as possible, 0 subscriptions" in line for line in progress_lines)
    assert captured.out.startswith("published 62 messages")
