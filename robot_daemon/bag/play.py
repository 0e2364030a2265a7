"""``bag play``: publish a bag's payloads on ZeroMQ with the recorded timing.

Timing: message ``i`` is due at ``start + (recv_i - recv_0) / rate`` on
``time.monotonic_ns()``, every deadline computed from the same start, so that lateness
never accumulates (a late message does not delay the next one). The player sleeps to just
before a deadline and spins the last :data:`SPIN_NS`, since ``time.sleep`` overshoots by
tens of microseconds.

Delivery: the socket is an XPUB (a PUB that also hears subscriptions). With
``--wait-subscribers N`` play starts once N subscriptions arrived, so the first messages
are not lost to ZeroMQ's slow-joiner effect. At ``rate == 0`` (as fast as possible) the
socket is set to ``XPUB_NODROP``: a full queue blocks the player instead of dropping, so a
connected subscriber receives every message. At real rates a subscriber that falls more
than :data:`SNDHWM` messages behind loses messages, as it would on the robot. After the
last message the socket stays open ``drain_s`` seconds so that subscribers that are
behind receive the tail (see :data:`DEFAULT_DRAIN_S`).

Binding: like the daemon's ``pred`` endpoint, the player binds only this machine
(loopback ``tcp://``, ``ipc://``, ``inproc://``) unless ``allow_remote_bind`` is set
(:func:`robot_daemon.serve.config.is_local_endpoint` is the one rule for both).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain

import zmq

from robot_daemon.bag import BagInfo, BagMessage, BagReader
from robot_daemon.errors import BagError, ConfigError
from robot_daemon.serve.config import is_local_endpoint

SPIN_NS = 300_000
SNDHWM = 100_000
# At --rate 0 the queue is lossless (XPUB_NODROP), so it only needs to keep the pipe full;
# a short one also means little is still queued when the bag ends.
SNDHWM_NODROP = 1_000
# Bounds how long closing the socket may block; it does not make closing lossless (below).
LINGER_MS = 10_000
# Seconds the socket stays open after the last message. Closing a publishing socket drops
# what is still queued for a subscriber that is behind, whatever ZMQ_LINGER says
# (measured with pyzmq 27 / libzmq 4.3: a slow subscriber lost the last 300-800 of 5,000
# messages, even with LINGER -1); waiting lets subscribers catch up first.
DEFAULT_DRAIN_S = 1.0
_STOP_POLL_MS = 100
_STOP_POLL_NS = _STOP_POLL_MS * 1_000_000


@dataclass
class PlaySummary:
    """What one play published (printed by ``bag play`` at the end)."""

    path: str
    counts: Counter[str] = field(default_factory=Counter)
    loops: int = 0
    elapsed_ns: int = 0
    warning: str | None = None

    def describe(self) -> str:
        total = sum(self.counts.values())
        per_topic = ", ".join(f"{t}: {n}" for t, n in sorted(self.counts.items())) or "none"
        text = (
            f"published {total} messages ({per_topic}) from {self.path} in "
            f"{self.elapsed_ns / 1e9:.3f} s, {self.loops} pass(es)"
        )
        return text if self.warning is None else f"{text}\nwarning: {self.warning}"


@dataclass(frozen=True)
class PlayOptions:
    """How to play: see ``robot-daemon bag play --help``."""

    rate: float = 1.0
    loop: bool = False
    start_offset_s: float = 0.0
    duration_s: float | None = None
    topics: Sequence[str] | None = None
    wait_subscribers: int = 0
    drain_s: float = DEFAULT_DRAIN_S
    allow_remote_bind: bool = False

    def __post_init__(self) -> None:
        if not self.rate >= 0 or self.rate == float("inf"):
            raise BagError(
                f"--rate must be a finite number >= 0 (0: as fast as possible), got {self.rate}"
            )
        if not self.start_offset_s >= 0:
            raise BagError(f"--start-offset must be >= 0 seconds, got {self.start_offset_s}")
        if self.duration_s is not None and not 0 < self.duration_s < float("inf"):
            raise BagError(f"--duration must be positive seconds, got {self.duration_s}")
        if not self.drain_s >= 0:
            raise BagError(f"--drain must be >= 0 seconds, got {self.drain_s}")
        if self.wait_subscribers < 0:
            raise BagError(f"--wait-subscribers must be >= 0, got {self.wait_subscribers}")


def play(
    path: str | os.PathLike[str],
    bind: str,
    options: PlayOptions | None = None,
    *,
    stop: threading.Event | None = None,
    on_ready: Callable[[], None] | None = None,
) -> PlaySummary:
    """Publish the bag at ``path`` on the endpoint ``bind`` (XPUB binds) until done or stopped.

    ``on_ready`` is called once the bag is checked and the socket bound, before waiting
    for subscribers (the command line says "playing ..." then, not before an error).

    Raises:
        ConfigError: ``bind`` is not on this machine and ``options.allow_remote_bind`` is
            not set.
        BagError: the bag cannot be read, or the options select nothing in it (a topic it
            lacks, a start offset past its end): found before binding, so that a player
            never "succeeds" with 0 messages.
    """
    options = options if options is not None else PlayOptions()
    check_bind(bind, options.allow_remote_bind)
    stop = stop if stop is not None else threading.Event()
    summary = PlaySummary(path=str(path))
    with BagReader(path) as bag, zmq.Context() as ctx, ctx.socket(zmq.XPUB) as pub:
        check_selection(bag.info(), options)
        _configure(pub, options)
        _bind(pub, bind)
        if on_ready is not None:
            on_ready()
        if options.wait_subscribers:
            _wait_for_subscribers(pub, options, stop)
        start: int | None = None
        period_ns = 0  # one pass, scaled; known once the first pass is over
        while not stop.is_set():
            messages = _selected(bag, options)
            # The clock starts once the first message is in hand: opening the bag and
            # its first chunk must not make every later message look early.
            first = next(messages, None)
            if first is None:
                break
            if start is None:
                start = time.monotonic_ns()
            base = start + summary.loops * period_ns
            played = _play_pass(chain([first], messages), pub, options, stop, base, summary)
            summary.loops += 1
            if bag.warning is not None:
                summary.warning = bag.warning
            if not options.loop or played is None:
                break
            period_ns = played
        if bag.warning is not None:
            summary.warning = bag.warning
        summary.elapsed_ns = 0 if start is None else time.monotonic_ns() - start
        if not stop.is_set():
            _drain(options.drain_s, stop)
    return summary


def check_bind(endpoint: str, allow_remote_bind: bool) -> None:
    """Refuse to bind ``endpoint`` off this machine unless ``allow_remote_bind``.

    The daemon's rule for ``pred`` (:func:`robot_daemon.serve.config.is_local_endpoint`):
    a player bound to ``tcp://0.0.0.0:...`` or ``tcp://*:...`` publishes the recorded
    sensor stream to every network the machine is on.
    """
    if not allow_remote_bind and not is_local_endpoint(endpoint):
        raise ConfigError(
            f"--bind {endpoint!r} would publish the bag on the network; bind a loopback "
            "address (tcp://127.0.0.1:PORT) or ipc://, or pass --allow-remote-bind"
        )


def check_selection(info: BagInfo, options: PlayOptions) -> None:
    """Raise :class:`BagError` unless ``options`` select at least one message of the bag.

    Every topic of ``--topics`` must be in the bag, and ``--start-offset`` must not pass
    the last selected message (offsets count from the first selected one, as in play).
    """
    present = ", ".join(sorted(info.topics)) or "none"
    missing = [t for t in options.topics or () if t not in info.topics]
    if missing:
        raise BagError(
            f"{info.path} has no {', '.join(repr(t) for t in missing)} messages"
            f" (its topics: {present}); pick --topics among them"
        )
    selected = [info.topics[t] for t in options.topics or info.topics]
    if not selected:
        raise BagError(f"{info.path} holds no messages: nothing to play")
    span_ns = max(t.last_ns for t in selected) - min(t.first_ns for t in selected)
    if round(options.start_offset_s * 1e9) > span_ns:
        raise BagError(
            f"--start-offset {options.start_offset_s:g} s is past the end of {info.path}:"
            f" the messages played span {span_ns / 1e9:.3f} s"
        )


def _configure(pub: zmq.Socket[bytes], options: PlayOptions) -> None:
    pub.setsockopt(zmq.SNDHWM, SNDHWM_NODROP if options.rate == 0 else SNDHWM)
    pub.setsockopt(zmq.LINGER, LINGER_MS)
    pub.setsockopt(zmq.SNDTIMEO, _STOP_POLL_MS)
    if options.wait_subscribers:
        # Report every subscription, not only the first one per topic, so that each
        # subscriber counts.
        pub.setsockopt(zmq.XPUB_VERBOSE, 1)
    if options.rate == 0:
        pub.setsockopt(zmq.XPUB_NODROP, 1)


def _bind(pub: zmq.Socket[bytes], endpoint: str) -> None:
    try:
        pub.bind(endpoint)
    except zmq.ZMQError as exc:
        raise BagError(
            f"cannot bind {endpoint!r}: {exc}; is another player or daemon bound there? "
            "Give a free endpoint like tcp://127.0.0.1:5556"
        ) from None


def _wait_for_subscribers(
    pub: zmq.Socket[bytes], options: PlayOptions, stop: threading.Event
) -> None:
    """Block until ``options.wait_subscribers`` subscriptions to played topics arrived.

    XPUB delivers each subscription as ``b"\\x01" + prefix``. A subscription counts when
    its prefix matches a played topic (the empty prefix matches all).
    """
    count = 0
    while count < options.wait_subscribers and not stop.is_set():
        if not pub.poll(_STOP_POLL_MS, zmq.POLLIN):
            continue
        message = pub.recv()
        if message[:1] == b"\x01" and _matches(message[1:], options.topics):
            count += 1


def _matches(prefix: bytes, topics: Sequence[str] | None) -> bool:
    if topics is None:
        return True
    return any(t.encode().startswith(prefix) for t in topics)


def _play_pass(
    messages: Iterator[BagMessage],
    pub: zmq.Socket[bytes],
    options: PlayOptions,
    stop: threading.Event,
    base_ns: int,
    summary: PlaySummary,
) -> int | None:
    """Publish one pass of the bag; return the scaled period of a pass for ``--loop``.

    Returns ``None`` when stopped or when nothing was played.
    """
    first = last = None
    sent = 0
    for message in messages:
        if stop.is_set():
            return None
        if first is None:
            first = message.recv_ns
        last = message.recv_ns
        if options.rate > 0:
            _sleep_until(base_ns + round((message.recv_ns - first) / options.rate), stop)
        if not _send(pub, message, stop):
            return None
        summary.counts[message.topic] += 1
        sent += 1
    if first is None or last is None:
        return None
    # The next pass starts one mean interval after this one's last message.
    span = last - first
    gap = span / (sent - 1) if sent > 1 else 1e9
    return 0 if options.rate == 0 else round((span + gap) / options.rate)


def _selected(bag: BagReader, options: PlayOptions) -> Iterator[BagMessage]:
    """The messages of the chosen topics from ``--start-offset`` on, for ``--duration``.

    Both count from the first selected message's receive time; the window is half-open,
    so ``--duration 30`` of a 50 Hz bag plays 1,500 messages a topic.
    """
    skip_before = end = None
    for message in bag.messages(options.topics):
        if skip_before is None:
            skip_before = message.recv_ns + round(options.start_offset_s * 1e9)
            if options.duration_s is not None:
                end = skip_before + round(options.duration_s * 1e9)
        if message.recv_ns >= skip_before and (end is None or message.recv_ns < end):
            yield message


def _send(pub: zmq.Socket[bytes], message: BagMessage, stop: threading.Event) -> bool:
    """Publish ``[topic, payload]``; with XPUB_NODROP, wait while queues are full.

    The send times out every SNDTIMEO so that a stop request is noticed even when a
    subscriber has stopped reading. Returns ``False`` when stopped before sending.
    """
    while True:
        try:
            # HWM is checked on the first part only, so the payload never blocks.
            pub.send(message.topic.encode(), zmq.SNDMORE)
            break
        except zmq.Again:
            if stop.is_set():
                return False
    pub.send(message.payload)
    return True


def _drain(seconds: float, stop: threading.Event) -> None:
    """Keep the socket open ``seconds`` more (see DEFAULT_DRAIN_S); a stop cuts it short."""
    _sleep_until(time.monotonic_ns() + round(seconds * 1e9), stop)


def _sleep_until(deadline_ns: int, stop: threading.Event) -> None:
    """Wait for ``deadline_ns`` (monotonic): sleep most of it, spin the last SPIN_NS.

    Sleeps in slices so that a stop request is seen during long gaps; it polls the flag
    rather than blocking in ``stop.wait`` because the CLI sets the flag from a signal
    handler, which must never wait for a lock the interrupted code holds.
    """
    while (remaining := deadline_ns - time.monotonic_ns()) > SPIN_NS:
        if stop.is_set():
            return
        time.sleep(min(remaining - SPIN_NS, _STOP_POLL_NS) / 1e9)
    while time.monotonic_ns() < deadline_ns:
        pass
