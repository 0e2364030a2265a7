"""Capture, the writer the tick thread calls: its settings, the refusals at start, the
rate limit, the queue that never blocks, the checkpoint rule on a failing disk, close."""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from robot_daemon.bag import BagMeta, BagWriter
from robot_daemon.bag.writer import BagWriteError
from robot_daemon.capture import Capture, CaptureConfig, writer
from robot_daemon.errors import ConfigError

from .conftest import C, D, captured, on_disk

META = BagMeta(d=D, c=C)
S = 1_000_000_000


def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


@pytest.fixture
def config(tmp_path: Path) -> CaptureConfig:
    return CaptureConfig(dir=tmp_path / "capture", max_mb=1, rate_per_s=1e6)


@pytest.fixture
def capture(config: CaptureConfig) -> Iterator[Capture]:
    with Capture(config, META) as capture:
        yield capture


@pytest.mark.parametrize(("change", "message"), [
    ({"max_mb": 0.5}, "capture_max_mb must be a number >= 1, got 0.5"),
    ({"max_mb": float("nan")}, "capture_max_mb"),
    ({"rate_per_s": 0}, "capture_rate must be a number > 0"),
    ({"rate_per_s": 0.1, "burst_s": 2.0}, "at least one frame"),
    ({"margin": 0.7}, "capture_margin must be a number >= 0 and <= 0.5"),
    ({"triggers": frozenset({"uncertain", "bored"})}, "capture_triggers must be some of"),
    ({"triggers": frozenset()}, "got none"),
    ({"health_window_s": -1.0}, "capture_health_window_s"),
    ({"queue_frames": 0}, "capture_queue_frames"),
])
def test_settings_are_checked_with_one_line(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CaptureConfig(**{"dir": Path("c"), "max_mb": 10, **change})


def test_an_unusable_directory_is_refused_at_start(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    zero = tmp_path / "zero"
    zero.symlink_to("/dev/zero")
    for where, message in ((a_file, "is not a directory"), (zero, "is not a directory"),
                           (a_file / "sub", "Not a directory")):
        with pytest.raises(ConfigError, match=message):
            Capture(CaptureConfig(dir=where, max_mb=1), META)

    def read_only(*args: Any, **kwargs: Any) -> int:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(writer.os, "open", read_only)  # root writes anywhere: a read-only mount
    with pytest.raises(ConfigError, match=r"cannot write in the capture directory .*: Read-only"):
        Capture(CaptureConfig(dir=tmp_path / "ro", max_mb=1), META)


def test_without_mcap_the_error_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m.startswith("robot_daemon.bag")]:
        monkeypatch.delitem(sys.modules, name)  # put back after the test
    monkeypatch.setitem(sys.modules, "mcap", None)  # import mcap fails
    with pytest.raises(ConfigError, match=r"pip install 'robot-daemon\[bag\]'"):
        Capture(CaptureConfig(dir=tmp_path, max_mb=1), META)


def test_the_rate_limit_lets_a_burst_through_then_the_rate(tmp_path: Path) -> None:
    config = CaptureConfig(dir=tmp_path, max_mb=1, rate_per_s=10, burst_s=2)
    frames = captured(100)
    with Capture(config, META) as capture:
        capture.offer(frames, 0)             # a burst of 2 s x 10/s
        capture.offer(frames, S)             # 1 s later: 10 more
        capture.offer(frames, S)             # nothing left
        capture.offer(frames, S // 2)        # a clock that went back refills nothing
        capture.offer(frames, 100 * S)       # a long quiet spell: the burst, no more
    status = capture.status()
    assert status["capture_dropped"] == {"rate": 500 - 50, "queue": 0, "error": 0}
    assert status["capture_frames"] == 50
    assert status["capture_by_reason"] == {"uncertain": 50, "disagree": 0, "contradict": 0,
                                           "health": 0}


def test_a_slow_writer_never_blocks_offer_and_the_queue_drops_are_counted(
    capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    release, entered = threading.Event(), threading.Event()
    real = capture._store.write

    def slow(*args: Any) -> None:
        entered.set()
        release.wait(10)
        real(*args)

    monkeypatch.setattr(capture._store, "write", slow)
    frames = captured(5000)
    capture.offer(frames[:1], 0)
    entered.wait(10)  # the writer holds one frame and is stuck on the disk
    for start in range(1, 5000, 500):
        capture.offer(frames[start:start + 500], start)  # would hang here if offer blocked
    assert not release.is_set()
    assert capture.status()["capture_dropped"]["queue"] == 4999 - capture.config.queue_frames
    release.set()
    capture.close()
    assert capture.status()["capture_frames"] == 1 + capture.config.queue_frames


def test_a_flood_of_100000_frames_stays_under_the_bound(tmp_path: Path) -> None:
    config = CaptureConfig(dir=tmp_path, max_mb=1, rate_per_s=1e9)
    frames = captured(1000)
    highest = 0
    with Capture(config, META) as capture:
        for k in range(100):  # 100,000 frames, as fast as the tick thread can offer them
            capture.offer(frames, k * 1_000_000)
            time.sleep(0.003)
            highest = max(highest, on_disk(tmp_path))
    status = capture.status()
    dropped = status["capture_dropped"]
    assert status["capture_frames"] + dropped["queue"] == 100_000
    assert status["capture_frames"] > 1000
    assert dropped["rate"] == dropped["error"] == 0
    final = on_disk(tmp_path)
    assert max(highest, final) <= 1_000_000
    assert status["capture_bytes"] == final
    assert status["capture_bags"] == len(list(tmp_path.iterdir()))


def _failing_disk(monkeypatch: pytest.MonkeyPatch, attempts: list[int]) -> None:
    """Every bag write fails as on a full disk (BagWriter turns ENOSPC into this)."""
    real_close = BagWriter.close

    def full(self: BagWriter, *args: Any, **kwargs: Any) -> None:
        attempts.append(1)
        raise BagWriteError(f"cannot write bag {self.path}: No space left on device")

    def close(self: BagWriter) -> None:
        real_close(self)  # the file is closed, as the real one does when finishing fails
        raise BagWriteError(f"cannot write bag {self.path}: No space left on device")

    monkeypatch.setattr(BagWriter, "write", full)
    monkeypatch.setattr(BagWriter, "close", close)


def test_a_full_disk_backs_off_logs_one_error_and_serves_on(
    config: CaptureConfig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(writer, "BACKOFF_FIRST_NS", 20_000_000)  # 20, 40, 80, 80 ... ms
    monkeypatch.setattr(writer, "BACKOFF_MAX_NS", 80_000_000)
    caplog.set_level(logging.INFO, "robot_daemon.capture")
    attempts: list[int] = []
    frames = captured(400)
    with monkeypatch.context() as disk:
        _failing_disk(disk, attempts)
        capture = Capture(config, META)
        for i in range(200):  # 0.4 s of frames: the writer tries again now and then only
            capture.offer(frames[i:i + 1], i)
            time.sleep(0.002)
        _until(lambda: capture.status()["capture_dropped"]["error"] == 200)
    status = capture.status()
    assert 2 <= status["capture_errors"] <= 20  # writes tried: a back-off, not per frame
    assert status["capture_frames"] == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "No space left on device" in errors[0].getMessage()
    time.sleep(0.1)  # past the back-off: the disk has room again
    capture.offer(frames[200:], 1000 * S)
    capture.close()
    assert capture.status()["capture_frames"] == 200
    assert "writing again" in caplog.text
    assert "left open" not in caplog.text  # no trail of empty bags from the retries
    assert len(list(config.dir.iterdir())) == 1


def test_a_disk_that_takes_writes_in_memory_but_not_chunks_is_one_episode(
    config: CaptureConfig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk as a real one fails: a message goes into the chunk in memory, and only
    the chunk's flush to the file fails. A write that reached memory is not the disk
    working again: the attack on a full 2 MB tmpfs logged an ERROR and an INFO every
    1.2 s (11 ERROR lines in 17 s), never backing off past 1 s."""
    monkeypatch.setattr(writer, "BACKOFF_FIRST_NS", 20_000_000)  # 20, 40, 80, 80 ... ms
    monkeypatch.setattr(writer, "BACKOFF_MAX_NS", 80_000_000)
    caplog.set_level(logging.INFO, "robot_daemon.capture")
    flushes: list[int] = []
    frames = captured(400)
    with monkeypatch.context() as disk:
        real_close = BagWriter.close

        def full(self: BagWriter) -> None:
            flushes.append(1)
            raise BagWriteError(f"cannot write bag {self.path}: No space left on device")

        def close(self: BagWriter) -> None:
            real_close(self)
            full(self)

        disk.setattr(BagWriter, "flush", full)
        disk.setattr(BagWriter, "close", close)
        capture = Capture(dataclasses.replace(config, flush_s=0.001), META)
        for i in range(200):  # 0.4 s of frames, each chunk flushed after 1 ms
            capture.offer(frames[i:i + 1], i)
            time.sleep(0.002)
        _until(lambda: sum(capture.status()["capture_dropped"].values()) >= 190)
        time.sleep(0.05)
    assert [r.levelname for r in caplog.records if r.levelno >= logging.INFO] == ["ERROR"]
    full_disk = capture.status()
    assert 2 <= full_disk["capture_errors"] <= 20  # a back-off, not per frame
    # Nothing reached the file: nothing counted as written (the attack's status said
    # 193 frames written on a disk full from the start), everything counted as dropped.
    assert full_disk["capture_frames"] == 0
    assert sum(full_disk["capture_dropped"].values()) == 200
    time.sleep(0.1)  # past the back-off: the disk has room again
    capture.offer(frames[200:], 1000 * S)
    capture.close()
    assert "writing again" in caplog.text
    assert capture.status()["capture_frames"] == 200
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


def _frames_in_files(directory: Path) -> int:
    from robot_daemon.bag import BagReader

    total = 0
    for path in directory.glob("capture-*.mcap"):
        with BagReader(path) as bag:
            total += sum(1 for _ in bag.messages(["capture"]))
    return total


@pytest.mark.parametrize("fails", ["at_close", "next_chunk"])
def test_frames_are_counted_as_their_bag_ends_when_the_disk_fills_after_a_rotation(
    config: CaptureConfig, monkeypatch: pytest.MonkeyPatch, fails: str,
) -> None:
    """The count of frames written is the frames in the files. The last chunk of a bag
    finished by a rotation is in the file: dropped when the next bag's first chunk
    failed (87 of them). A bag that could not be finished at close: its chunk in memory
    was counted as written all the same."""
    monkeypatch.setattr(writer, "BACKOFF_FIRST_NS", 1)
    capture = Capture(dataclasses.replace(config, flush_s=60.0), META)
    frames = captured(2000)
    sent = 0
    while capture.status()["capture_bags"] < 2:  # one at a time, up to the rotation
        capture.offer(frames[sent:sent + 1], sent)
        sent += 1
        _until(lambda: not capture._queue and capture.status()["capture_bags"] > 0)
    with monkeypatch.context() as disk:
        def full(self: BagWriter) -> None:
            raise BagWriteError(f"cannot write bag {self.path}: No space left on device")

        def close(self: BagWriter) -> None:  # the complete chunks stay, nothing more
            self._closed = True
            self._file.close()
            full(self)

        disk.setattr(BagWriter, "flush", full)
        disk.setattr(BagWriter, "close", close)
        if fails == "next_chunk":  # enough for the new bag's first chunk, which fails
            capture.offer(frames[sent:sent + 200], sent)
            sent += 200
            _until(lambda: capture.status()["capture_errors"] > 0 and not capture._queue)
        capture.close()
    status = capture.status()
    assert status["capture_frames"] == _frames_in_files(config.dir)
    assert status["capture_frames"] + status["capture_dropped"]["error"] == sent
    assert status["capture_frames"] >= sent - 200 - 2  # the first bag, every frame of it


def test_a_directory_replaced_by_a_file_is_an_episode_not_a_crash(
    config: CaptureConfig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(writer, "BACKOFF_FIRST_NS", 100_000_000)
    with Capture(config, META) as capture:
        shutil.rmtree(config.dir)
        config.dir.write_text("someone put a file here")
        capture.offer(captured(5), 0)
        _until(lambda: capture.status()["capture_dropped"]["error"] == 5)
        assert capture.status()["capture_errors"] == 1
        config.dir.unlink()  # the directory is made again at the next try
        time.sleep(0.12)
        capture.offer(captured(5, start=5), S)
        _until(lambda: capture.status()["capture_frames"] == 5)
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


def test_close_twice_and_offer_after_close(capture: Capture) -> None:
    capture.offer(captured(10), 0)
    capture.close()
    capture.close()
    capture.offer(captured(3), S)
    status = capture.status()
    assert status["capture_frames"] == 10
    assert status["capture_dropped"]["queue"] == 3
    assert status["capture_bags"] == 1
