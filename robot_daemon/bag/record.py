"""``bag record``: subscribe to ZeroMQ publishers and write what arrives into a bag.

The recorder is a debugging tool, so it stores every two-part message exactly as
received, malformed payloads included (their sensor time is then unknown). It stamps each
message with the wall clock (``time.time_ns()``: what is recorded is wall time) and the
payload's own ``"t"``, closes an MCAP chunk every ``flush_interval`` so that a crash loses
at most that much, and finishes the file when ``stop`` is set (the CLI sets it on
SIGINT/SIGTERM) or the duration is over.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import zmq

from robot_daemon import wire
from robot_daemon.bag import BagMeta, BagWriter, seconds_to_ns
from robot_daemon.errors import BagError, WireError

log = logging.getLogger(__name__)

DEFAULT_FLUSH_INTERVAL_NS = 250_000_000
# Upper bound of one poll: how long a stop request may wait to be noticed.
_POLL_MAX_NS = 100_000_000
# Messages taken per poll wake-up before the timers are looked at again.
_DRAIN_BATCH = 1000


@dataclass
class RecordSummary:
    """What one recording wrote (printed by ``bag record`` at the end)."""

    path: str
    counts: Counter[str] = field(default_factory=Counter)
    payload_bytes: int = 0
    skipped: int = 0
    duration_ns: int = 0
    meta: BagMeta = field(default_factory=BagMeta)

    def describe(self) -> str:
        total = sum(self.counts.values())
        per_topic = ", ".join(f"{t}: {n}" for t, n in sorted(self.counts.items())) or "none"
        lines = [
            f"recorded {total} messages ({per_topic}), {self.payload_bytes} payload bytes "
            f"in {self.duration_ns / 1e9:.1f} s to {self.path}",
        ]
        if self.skipped:
            lines.append(
                f"skipped {self.skipped} messages that were not [topic, payload] with an "
                "UTF-8 topic (see the log)"
            )
        return "\n".join(lines)


class _MetaLearner:
    """Learns d (from a frame or label) and c (from a label) from the stream.

    Bags carry d and c for their readers; a recorder is not told them, so it reads them
    off the first valid messages and appends a metadata record as soon as it knows more.
    """

    def __init__(self, writer: BagWriter) -> None:
        self.writer = writer

    def observe(self, topic: str, payload: bytes) -> None:
        meta = self.writer.meta
        if meta.d is not None and meta.c is not None:
            return
        d, c = meta.d, meta.c
        try:
            if topic == wire.TOPIC_FRAME.decode() and d is None:
                d = len(wire.decode_frame(payload).x)
            elif topic == wire.TOPIC_LABEL.decode() and (d is None or c is None):
                label = wire.decode_label(payload)
                d, c = len(label.x), len(label.y)
        except WireError:
            return  # a malformed payload teaches nothing; it is still recorded
        if (d, c) != (meta.d, meta.c):
            self.writer.write_meta(replace(meta, d=d, c=c))


def record(
    out: str | os.PathLike[str],
    endpoints: Sequence[str],
    *,
    topics: Sequence[str] | None = None,
    duration_s: float | None = None,
    stop: threading.Event | None = None,
    flush_interval_ns: int = DEFAULT_FLUSH_INTERVAL_NS,
) -> RecordSummary:
    """Record from ``endpoints`` (SUB connects) into the bag ``out`` until stopped.

    Args:
        out: bag path, overwritten (``bag record`` refuses an existing one unless
            ``--overwrite``: see :func:`robot_daemon.paths.check_output`).
        endpoints: ZeroMQ endpoints of publishers, e.g. ``tcp://robot:5556``.
        topics: topics to subscribe to; ``None`` subscribes to everything.
        duration_s: stop after this many seconds; ``None`` runs until ``stop`` is set.
        stop: set it (from a signal handler or another thread) to finish the bag.
        flush_interval_ns: how often the chunk in progress is written out.
    """
    if not endpoints:
        raise BagError("bag record needs at least one --connect ENDPOINT")
    stop = stop if stop is not None else threading.Event()
    start = time.monotonic_ns()
    end = None if duration_s is None else start + round(duration_s * 1e9)
    summary = RecordSummary(path=str(out))
    with contextlib.ExitStack() as stack:
        ctx = stack.enter_context(zmq.Context())
        sub = stack.enter_context(ctx.socket(zmq.SUB))
        _subscribe(sub, endpoints, topics)
        # Opened once every endpoint is good: a typo must not cost an existing bag.
        writer = stack.enter_context(BagWriter(out))
        learner = _MetaLearner(writer)
        next_flush = start + flush_interval_ns
        while not stop.is_set():
            now = time.monotonic_ns()
            if end is not None and now >= end:
                break
            if now >= next_flush:
                writer.flush()
                next_flush = now + flush_interval_ns
            deadline = min(next_flush, end if end is not None else next_flush)
            # Rounded up: a zero timeout would spin until the deadline.
            timeout_ms = -(-max(0, min(deadline - now, _POLL_MAX_NS)) // 1_000_000)
            if sub.poll(timeout_ms, zmq.POLLIN):
                _drain(sub, writer, learner, summary)
        summary.duration_ns = time.monotonic_ns() - start
        summary.meta = writer.meta
    return summary


def _subscribe(
    sub: zmq.Socket[bytes], endpoints: Sequence[str], topics: Sequence[str] | None
) -> None:
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 100_000)  # ride out a slow disk without drops
    for topic in topics if topics else [""]:
        sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
    for endpoint in endpoints:
        _connect(sub, endpoint)


def _connect(sub: zmq.Socket[bytes], endpoint: str) -> None:
    try:
        sub.connect(endpoint)
    except zmq.ZMQError as exc:
        raise BagError(
            f"cannot connect to {endpoint!r}: {exc}; give an endpoint like "
            "tcp://127.0.0.1:5556 or ipc:///tmp/sensors"
        ) from None


def _drain(
    sub: zmq.Socket[bytes], writer: BagWriter, learner: _MetaLearner, summary: RecordSummary
) -> None:
    """Write the messages already queued (at most a batch, so that timers stay on time)."""
    for _ in range(_DRAIN_BATCH):
        try:
            parts = sub.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        recv_ns = time.time_ns()
        if len(parts) != 2:
            summary.skipped += 1
            log.warning("skipped a message of %d parts (expected [topic, payload])", len(parts))
            continue
        try:
            topic = parts[0].decode("utf-8")
        except UnicodeDecodeError:
            summary.skipped += 1
            log.warning("skipped a message whose topic is not UTF-8: %r", parts[0][:40])
            continue
        payload = parts[1]
        writer.write(topic, payload, recv_ns, seconds_to_ns(wire.sensor_time(payload)))
        learner.observe(topic, payload)
        summary.counts[topic] += 1
        summary.payload_bytes += len(payload)
