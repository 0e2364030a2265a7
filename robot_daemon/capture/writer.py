"""The capture writer the daemon's tick thread hands frames to: :class:`Capture`.

The tick thread must never wait on a disk. :meth:`Capture.offer` costs it a token-bucket
check and a deque append per frame, and never blocks: frames past the rate limit or a
full queue are dropped from the capture (counted), never from serving. A thread of its
own writes the queue into bags (:class:`~robot_daemon.capture.store.CaptureStore`, which
keeps the directory under its hard bound). A disk that fails (full, read-only, the
directory gone) follows the checkpoint rule: one ERROR when writing starts failing, a
retry after 1 s, then 2, 4, ... up to 30 s, frames dropped and counted meanwhile, and
nothing ever raised into the tick thread.

Design: docs/architecture.md, "Capture".
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

from robot_daemon.capture import stream, triggers
from robot_daemon.capture.frames import CapturedFrame, Message, messages
from robot_daemon.capture.store import CaptureStore
from robot_daemon.errors import BagError, ConfigError, WireError
from robot_daemon.ratelimit import RateLimiter, TokenBucket

if TYPE_CHECKING:
    from robot_daemon.bag import BagMeta

log = logging.getLogger("robot_daemon.capture")

#: ``max_mb`` counts MB of 1,000,000 bytes (``du --si``; the bound is below ``du -m``'s).
MB: Final = 1_000_000
#: The checkpoint rule's back-off: the first retry after a failure, doubling up to the last.
BACKOFF_FIRST_NS: Final = 1_000_000_000
BACKOFF_MAX_NS: Final = 30_000_000_000
#: What close() allows the writer beyond its timeout to finish the open bag (an fsync).
CLOSE_GRACE_S: Final = 5.0
#: A frame the encoders refuse (a bug of the caller) is logged at most this often.
BAD_FRAME_LOG_NS: Final = 10_000_000_000
INSTALL_HINT: Final = ("--capture writes bags, which need the mcap package:"
                       " pip install 'robot-daemon[bag]'")


@dataclass(frozen=True)
class CaptureConfig:
    """The settings of ``run --capture`` (config keys ``capture``, ``capture_max_mb``,
    ``capture_rate``, ``capture_margin``, ``capture_triggers``).

    dir : where the bags go. max_mb : the hard bound on all capture bags in ``dir``, in MB
    of 10**6 bytes, at least 1. rate_per_s : frames captured a second on average;
    burst_s : seconds of that rate that may be captured at once. margin : the
    ``uncertain`` trigger's distance to a threshold, in probability. triggers : which
    triggers are on (``triggers.REASONS``). health_window_s : seconds kept before and
    captured after a health change. flush_s : the longest a written frame waits in memory
    before it reaches the file (what a kill -9 can lose). queue_frames : the queue's bound.
    """

    dir: Path
    max_mb: float
    rate_per_s: float = 10.0
    burst_s: float = 2.0
    margin: float = 0.05
    triggers: frozenset[str] = field(default_factory=lambda: frozenset(triggers.REASONS))
    health_window_s: float = 2.0
    flush_s: float = 1.0
    queue_frames: int = 1000

    def __post_init__(self) -> None:
        _check(self.max_mb, "capture_max_mb", low=1.0)
        _check(self.rate_per_s, "capture_rate", above=0.0)
        _check(self.burst_s, "capture_burst_s", above=0.0)
        if self.rate_per_s * self.burst_s < 1:
            raise ConfigError(f"capture_rate x capture_burst_s must be at least one frame,"
                              f" got {self.rate_per_s * self.burst_s:g}")
        _check(self.margin, "capture_margin", low=0.0, high=0.5)
        _check(self.health_window_s, "capture_health_window_s", above=0.0, high=60.0)
        _check(self.flush_s, "capture_flush_s", above=0.0, high=60.0)
        if isinstance(self.queue_frames, bool) or not (
                isinstance(self.queue_frames, int) and self.queue_frames >= 1):
            raise ConfigError(f"capture_queue_frames must be an integer >= 1,"
                              f" got {self.queue_frames!r}")
        unknown = sorted(set(self.triggers) - set(triggers.REASONS))
        if unknown or not self.triggers:
            raise ConfigError(f"capture_triggers must be some of {', '.join(triggers.REASONS)}"
                              f", got {sorted(self.triggers) or 'none'}")

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * MB)


def _check(value: float, name: str, *, low: float | None = None, above: float | None = None,
           high: float | None = None) -> None:
    """One-line ConfigError unless ``value`` is a finite number within the limits."""
    ok = (isinstance(value, int | float) and not isinstance(value, bool)
          and math.isfinite(value) and (low is None or value >= low)
          and (above is None or value > above) and (high is None or value <= high))
    if not ok:
        limits = " and ".join(
            text for text in (None if low is None else f">= {low:g}",
                              None if above is None else f"> {above:g}",
                              None if high is None else f"<= {high:g}") if text)
        raise ConfigError(f"{name} must be a number {limits}, got {value!r}")


class Capture:
    """Captured frames into bounded bags, off the tick thread.

    Example (the daemon's use)::

        capture = Capture(config, meta)          # ConfigError: the daemon refuses to start
        capture.offer(frames, time.monotonic_ns())   # on the tick thread, each tick
        status.update(capture.status())
        capture.close(timeout_s=2.0)             # at the end

    ``meta`` is the bags' metadata (d, c, class names, feature names when known).

    Raises:
        ConfigError: ``config.dir`` is not a directory that can be written (a file, a
            symlink to a device, read-only), or mcap (the ``bag`` extra) is missing.
    """

    def __init__(self, config: CaptureConfig, meta: BagMeta) -> None:
        try:
            import robot_daemon.bag  # noqa: F401 - mcap is optional: say how to get it
        except BagError:
            raise ConfigError(INSTALL_HINT) from None
        self.config = config
        # Marked as a capture's: train then knows its frames were chosen, not drawn.
        meta = dataclasses.replace(meta, extra={**meta.extra, "source": stream.CAPTURE_SOURCE})
        self._store = CaptureStore(Path(config.dir), config.max_bytes, meta)
        _check_directory(self._store.directory)
        try:
            self._store.scan()
        except OSError as exc:
            raise ConfigError(f"cannot use the capture directory {config.dir}:"
                              f" {exc.strerror or exc}") from None
        self._bucket = TokenBucket(config.rate_per_s, config.rate_per_s * config.burst_s)
        self._queue: deque[CapturedFrame | stream.StreamRecord] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._stop_deadline_ns: int | None = None
        self._closed = False
        # Counters: the tick thread writes dropped_rate and dropped_queue, the writer
        # thread the others; status() reads them (an int is read whole).
        self.frames = 0
        self.labels = 0  # labels of frames captured before, written as they came
        self.stream_records = 0  # the served stream's statistics (capture.stream)
        self.dropped_rate = 0
        self.dropped_queue = 0
        self.dropped_error = 0
        self.dropped_closing = 0  # the writer's own: what close() had no time for
        self.errors = 0
        self.by_reason = dict.fromkeys(triggers.REASONS, 0)
        # A frame written into the chunk in memory is counted once the store says it is in
        # the file (store.landed), or dropped if it says it was lost (store.lost): a full
        # disk takes writes into memory without a word, and loses them at the flush.
        self._bytes = self._store.bytes_on_disk
        self._bags = self._store.bag_count
        self._failures = 0  # writes failed in a row: an episode while > 0
        self._retry_ns = 0
        self._bad_frames = RateLimiter(BAD_FRAME_LOG_NS)
        self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
        self._thread.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------ the tick thread

    def offer(self, frames: Sequence[CapturedFrame], now_ns: int, *,
              rate_limited: bool = True) -> int:
        """Queue ``frames`` for writing; never blocks, never raises. Returns how many of
        the first were queued.

        Past the rate limit (``now_ns``: monotonic) or the queue's bound, the frames left
        over are dropped and counted (``capture_dropped``), the first ones kept. The
        labels of frames captured before are not held to the rate (``rate_limited``).
        """
        n = len(frames)
        if n == 0:
            return 0
        if self._stopping:
            self.dropped_queue += n
            return 0
        allowed = self._bucket.take(n, now_ns) if rate_limited else n
        self.dropped_rate += n - allowed
        # One producer (this thread): the queue cannot grow between the check and extend.
        queued = min(allowed, self.config.queue_frames - len(self._queue))
        self.dropped_queue += allowed - queued
        if queued > 0:
            self._queue.extend(islice(frames, queued))
            self._wake.set()
        return max(0, queued)

    def offer_stream(self, record: stream.StreamRecord) -> bool:
        """Queue the statistics of the frames served lately; never blocks. False when the
        queue has no room (or the capture is closing): the caller keeps them for later."""
        if self._stopping and self._stop_deadline_ns is not None:
            return False
        if len(self._queue) >= self.config.queue_frames:
            return False
        self._queue.append(record)
        self._wake.set()
        return True

    def status(self) -> dict[str, Any]:
        """The ``capture_*`` keys of the daemon's ``status``."""
        return {
            "capture_frames": self.frames,
            "capture_labels": self.labels,
            "capture_dropped": {"rate": self.dropped_rate,
                                "queue": self.dropped_queue + self.dropped_closing,
                                "error": self.dropped_error},
            "capture_bytes": self._bytes,
            "capture_bags": self._bags,
            "capture_errors": self.errors,
            "capture_by_reason": dict(self.by_reason),
        }

    def close(self, timeout_s: float = 2.0) -> None:
        """Write what is queued (for at most ``timeout_s``; the rest is dropped and
        counted), finish the open bag and stop the writer thread. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stop_deadline_ns = time.monotonic_ns() + round(timeout_s * 1e9)
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout_s + CLOSE_GRACE_S)
        if self._thread.is_alive():
            log.error("capture: the writer did not finish within %.0f s (a disk that hangs?);"
                      " the open bag is left as it is", timeout_s + CLOSE_GRACE_S)

    # ------------------------------------------------------------ the writer thread

    def _run(self) -> None:
        while True:
            timeout_ns = self._flush_due()
            if not self._queue and not self._stopping:
                self._wake.wait(None if timeout_ns is None else timeout_ns / 1e9)
            self._wake.clear()
            self._drain()
            if self._stopping and not self._queue:
                break
        self._finish()

    def _flush_due(self) -> int | None:
        """Close a chunk that waited ``flush_s``; the ns until the next is due, if any."""
        now_ns = time.monotonic_ns()
        try:
            left = self._store.flush_due(now_ns, round(self.config.flush_s * 1e9))
        except (OSError, BagError) as exc:
            self._failed(exc, now_ns)
            return None
        self._published()
        return left

    def _drain(self) -> None:
        while self._queue:
            if (self._stop_deadline_ns is not None
                    and time.monotonic_ns() > self._stop_deadline_ns):
                left = len(self._queue)
                self._queue.clear()
                self.dropped_closing += left  # close() ran out of time
                return
            self._write(self._queue.popleft())

    def _write(self, frame: CapturedFrame | stream.StreamRecord) -> None:
        """Write one frame (or the stream's statistics), or count why not; never raises."""
        now_ns = time.monotonic_ns()
        if now_ns < self._retry_ns:  # backing off after a failure
            if isinstance(frame, CapturedFrame):
                self.dropped_error += 1
            return
        if isinstance(frame, stream.StreamRecord):
            records = [Message(stream.TOPIC, stream.encode(frame), None)]
            recv_ns = round(frame.t1 * 1e9)
        else:
            try:
                records, recv_ns = messages(frame), frame.recv_ns
            except WireError as exc:  # the caller's bug: not the disk's
                self.dropped_error += 1
                self.errors += 1
                if self._bad_frames.allow("bad", now_ns) is not None:
                    log.warning("capture: a frame cannot be encoded (%s); dropped", exc)
                return
        try:
            self._store.write(records, recv_ns, now_ns, frame)
            if self._failures:
                # A write lands in the chunk in memory, which a full disk takes without a
                # word: only a chunk in the file says that writing works again.
                self._store.flush()
        except (OSError, BagError) as exc:  # the frame is counted as the store lost it
            self._failed(exc, now_ns)
            return
        except Exception:  # a bug, not the disk: told with its traceback; serving goes on
            self.errors += 1
            self._abandon()
            if self._bad_frames.allow("bug", now_ns) is not None:
                log.exception("capture: writing a frame failed unexpectedly; dropped")
            return
        self._published()
        if not isinstance(frame, CapturedFrame) or frame.label_only:
            return  # only a captured frame written says the episode is over
        if self._failures:
            log.info("capture: writing again into %s (after %d failed attempts)",
                     self._store.directory, self._failures)
            self._failures, self._retry_ns = 0, 0

    def _failed(self, exc: Exception, now_ns: int) -> None:
        """Count a failure and back off; one ERROR when writing starts failing."""
        self._abandon()
        self.errors += 1
        self._failures += 1
        backoff = min(BACKOFF_FIRST_NS << min(self._failures - 1, 16), BACKOFF_MAX_NS)
        self._retry_ns = now_ns + backoff
        reason = getattr(exc, "strerror", None) or exc
        if self._failures == 1:
            log.error("capture: cannot write into %s: %s. Frames are dropped (counted) and"
                      " writing retried in %.0f s, then less often (at most every %.0f s);"
                      " serving goes on", self._store.directory, reason, backoff / 1e9,
                      BACKOFF_MAX_NS / 1e9)
        else:
            log.debug("capture: failed again (%d in a row): %s; next try in %.0f s",
                      self._failures, reason, backoff / 1e9)

    def _finish(self) -> None:
        try:
            self._store.close()
        except (OSError, BagError) as exc:
            self.errors += 1
            self._abandon()
            # One ERROR per episode: a disk already failing has had its line.
            (log.debug if self._failures else log.error)(
                "capture: the last bag could not be finished: %s (its complete chunks are"
                " kept as a cut bag)", exc)
        self._published()

    def _abandon(self) -> None:
        """Let go of the open bag after a failure; what only reached memory is dropped."""
        self._store.abandon()
        self._published()

    def _published(self) -> None:
        """What status() reports of the directory, updated from this thread: the frames
        and labels counted once their chunk is in the file, dropped once it is lost."""
        store = self._store
        for written in store.landed:
            if isinstance(written, stream.StreamRecord):
                self.stream_records += 1
            elif written.label_only:
                self.labels += 1
            else:
                self.frames += 1
                for reason in written.reasons:
                    self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        self.dropped_error += sum(isinstance(lost, CapturedFrame) and not lost.label_only
                                  for lost in store.lost)
        store.landed.clear()
        store.lost.clear()
        self._bytes = self._store.bytes_on_disk
        self._bags = self._store.bag_count


def _check_directory(directory: Path) -> None:
    """The start's check: ``directory`` is (or can be made) a directory we can write in.

    Raises:
        ConfigError: a file or a device where the directory belongs, or a directory in
            which a file cannot be created (read-only, permissions).
    """
    where = f"the capture directory {directory}"
    try:
        mode = directory.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise ConfigError(f"cannot use {where}: {exc.strerror}") from None
    if mode is not None and not stat.S_ISDIR(mode):
        raise ConfigError(f"{where} is not a directory; give --capture a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".capture-probe-{os.getpid()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write in {where}: {exc.strerror or exc}") from None
