"""``bag play``: publish a bag's payloads on ZeroMQ with the recorded timing.

:func:`play` publishes the payloads of one or more bags (merged by receive time) on an
XPUB socket with the recorded timing, every deadline computed from one start on
``time.monotonic_ns()``; it can wait for subscribers, and at ``rate == 0`` it blocks
instead of dropping. Like the daemon's ``pred``, it binds only this machine unless
``allow_remote_bind`` is set (:func:`robot_daemon.config.is_local_endpoint`).

Design: docs/architecture.md, "Playing bags".
"""

from __future__ import annotations

import contextlib
import heapq
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain

import zmq

from robot_daemon.bag import BagInfo, BagMessage, BagReader
from robot_daemon.config import check_endpoint, is_local_endpoint
from robot_daemon.errors import BagError, ConfigError

StrPath = str | os.PathLike[str]

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
#: How often play hands its progress to the caller's callback (which may show less often).
PROGRESS_INTERVAL_NS = 100_000_000


@dataclass
class PlaySummary:
    """What one play published (printed by ``bag play`` at the end)."""

    paths: list[str]
    counts: Counter[str] = field(default_factory=Counter)
    loops: int = 0
    elapsed_ns: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def warning(self) -> str | None:
        """The damage met in the bags (one line per bag), ``None`` when there was none."""
        return "\n".join(self.warnings) if self.warnings else None

    def describe(self) -> str:
        total = sum(self.counts.values())
        per_topic = ", ".join(f"{t}: {n}" for t, n in sorted(self.counts.items())) or "none"
        lines = [
            f"published {total} messages ({per_topic}) from {', '.join(self.paths)} in "
            f"{self.elapsed_ns / 1e9:.3f} s, {self.loops} pass(es)"
        ]
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)


@dataclass(frozen=True)
class PlayProgress:
    """Where a play is, for a progress line (times in integer nanoseconds of bag time).

    ``position_ns`` is the last sent message's receive time after the first one a pass
    plays, ``total_ns`` the span one pass plays; ``subscriptions`` counts the
    subscriptions to the played topics that are open now.
    """

    position_ns: int
    total_ns: int
    messages: int
    rate: float
    passes: int
    subscriptions: int

    def describe(self) -> str:
        """``[ 12.3 s / 120.0 s] 615 msgs, x1, 1 subscription``: the position padded to
        the width of the total, so that the line does not jump."""
        width = len(f"{self.total_ns / 1e9:.1f}")
        speed = "as fast as possible" if self.rate == 0 else f"x{self.rate:g}"
        subs = f"{self.subscriptions} subscription" + "s" * (self.subscriptions != 1)
        text = (
            f"[{self.position_ns / 1e9:{width}.1f} s / {self.total_ns / 1e9:.1f} s]"
            f" {self.messages} msgs, {speed}, {subs}"
        )
        return text + (f", pass {self.passes + 1}" if self.passes else "")


@dataclass(frozen=True)
class PlayOptions:
    """How to play: see ``robot-daemon bag play --help``."""

    rate: float = 1.0
    loop: bool = False
    start_offset_s: float = 0.0
    duration_s: float | None = None
    topics: Sequence[str] | None = None
    exclude_topics: Sequence[str] = ()
    wait_subscribers: int = 0
    delay_s: float = 0.0
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
            raise BagError(
                f"--playback-duration must be positive seconds, got {self.duration_s}"
            )
        if not 0 <= self.delay_s < float("inf"):
            raise BagError(f"--delay must be >= 0 seconds, got {self.delay_s}")
        if not self.drain_s >= 0:
            raise BagError(f"--drain must be >= 0 seconds, got {self.drain_s}")
        if self.wait_subscribers < 0:
            raise BagError(f"--wait-subscribers must be >= 0, got {self.wait_subscribers}")


def play(
    paths: StrPath | Sequence[StrPath],
    bind: str,
    options: PlayOptions | None = None,
    *,
    stop: threading.Event | None = None,
    on_ready: Callable[[], None] | None = None,
    on_progress: Callable[[PlayProgress], None] | None = None,
) -> PlaySummary:
    """Publish the bags at ``paths`` on the endpoint ``bind`` (XPUB binds) until done or stopped.

    ``paths`` is one bag or several, merged by receive time (see the module's docstring).
    ``on_ready`` is called once the bags are checked and the socket bound, before waiting
    for subscribers (the command line says "playing ..." then, not before an error).
    ``on_progress`` is called while messages go out, at most every
    :data:`PROGRESS_INTERVAL_NS`, and once at the end.

    Raises:
        ConfigError: ``bind`` is not on this machine and ``options.allow_remote_bind`` is
            not set, or one bag is given twice.
        BagError: a bag cannot be read, or the options select nothing in the bags (a topic
            they lack, a start offset past their end): found before binding, so that a
            player never "succeeds" with 0 messages.
    """
    options = options if options is not None else PlayOptions()
    stop = stop if stop is not None else threading.Event()
    bag_paths = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if not bag_paths:
        raise BagError("no bag to play: give at least one")
    check_bind(bind, options.allow_remote_bind)
    summary = PlaySummary(paths=[os.fspath(p) for p in bag_paths])
    with contextlib.ExitStack() as resources:
        bags = [resources.enter_context(BagReader(p)) for p in bag_paths]
        _check_distinct(bags)
        selection = check_selection([bag.info() for bag in bags], options)
        ctx = resources.enter_context(zmq.Context())
        pub = resources.enter_context(ctx.socket(zmq.XPUB))
        track = options.wait_subscribers > 0 or on_progress is not None
        _configure(pub, options, track_subscriptions=track)
        _bind(pub, bind)
        if on_ready is not None:
            on_ready()
        subscriptions = _Subscriptions(pub, selection.topics)
        if options.wait_subscribers:
            subscriptions.wait_for(options.wait_subscribers, stop)
        progress = (
            None
            if on_progress is None
            else _Progress(on_progress, subscriptions, selection, options.rate, summary)
        )
        _Player(pub, options, stop, summary, progress).run(bags, selection)
        if not stop.is_set():
            _drain(options.drain_s, stop)
    return summary


def check_bind(endpoint: str, allow_remote_bind: bool) -> None:
    """Refuse to bind ``endpoint`` off this machine unless ``allow_remote_bind``.

    The daemon's rule for ``pred`` (:func:`robot_daemon.config.is_local_endpoint`):
    a player bound to ``tcp://0.0.0.0:...`` or ``tcp://*:...`` publishes the recorded
    sensor stream to every network the machine is on. Not an endpoint at all
    (``localhost:5590``): the daemon's message, which says what one looks like.
    """
    check_endpoint(endpoint, "--bind", bind=True)
    if not allow_remote_bind and not is_local_endpoint(endpoint):
        raise ConfigError(
            f"--bind {endpoint!r} would publish the bag on the network; bind a loopback "
            "address (tcp://127.0.0.1:PORT) or ipc://, or pass --allow-remote-bind"
        )


def _check_distinct(bags: Sequence[BagReader]) -> None:
    """Refuse one bag given twice (also through a link): each message would play twice."""
    seen: dict[tuple[int, int], BagReader] = {}
    for bag in bags:
        st = os.stat(bag.path)
        other = seen.setdefault((st.st_dev, st.st_ino), bag)
        if other is not bag:
            raise ConfigError(f"{bag.path} is the same bag as {other.path}: give each bag once")


@dataclass(frozen=True)
class Selection:
    """What one pass plays: its topics and its window of receive times (integer ns).

    ``start_ns`` is the first receive time played (the first selected message plus
    ``--start-offset``), ``end_ns`` the end of the ``--playback-duration`` window
    (exclusive; ``None``: to the end) and ``span_ns`` the bag time a pass covers.
    """

    topics: frozenset[str]
    start_ns: int
    end_ns: int | None
    span_ns: int


def check_selection(infos: Sequence[BagInfo], options: PlayOptions) -> Selection:
    """The :class:`Selection` that ``options`` make in the bags of ``infos``.

    Every topic of ``--topics`` and ``--exclude-topics`` must be in one of the bags, and
    ``--start-offset`` must not pass the last selected message (offsets count from the
    first selected one, as in play).

    Raises:
        BagError: the options select no message (said before anything is bound).
    """
    present = frozenset(t for info in infos for t in info.topics)
    names = ", ".join(sorted(present)) or "none"
    single = len(infos) == 1
    name = infos[0].path if single else "the bags"
    lacks = f"{name} has no" if single else "none of the bags has"
    holds = f"{'its' if single else 'their'} topics: {names}"
    chosen = {"--topics": options.topics or (), "--exclude-topics": options.exclude_topics}
    for flag, named in chosen.items():
        missing = [t for t in named if t not in present]
        if missing:
            raise BagError(
                f"{lacks} {', '.join(repr(t) for t in missing)} messages ({holds});"
                f" pick {flag} among them"
            )
    if not present:
        raise BagError(f"{name} {'holds' if single else 'hold'} no messages: nothing to play")
    topics = frozenset(options.topics or present) - frozenset(options.exclude_topics)
    if not topics:
        raise BagError(f"--exclude-topics leaves no topic of {names} to play")
    selected = [info.topics[t] for info in infos for t in topics if t in info.topics]
    first_ns = min(t.first_ns for t in selected)
    last_ns = max(t.last_ns for t in selected)
    start_ns = first_ns + round(options.start_offset_s * 1e9)
    if start_ns > last_ns:
        raise BagError(
            f"--start-offset {options.start_offset_s:g} s is past the end of {name}:"
            f" the messages played span {(last_ns - first_ns) / 1e9:.3f} s"
        )
    end_ns = None if options.duration_s is None else start_ns + round(options.duration_s * 1e9)
    span_ns = last_ns - start_ns if end_ns is None else min(last_ns, end_ns) - start_ns
    return Selection(topics, start_ns, end_ns, span_ns)


def _configure(
    pub: zmq.Socket[bytes], options: PlayOptions, *, track_subscriptions: bool
) -> None:
    pub.setsockopt(zmq.SNDHWM, SNDHWM_NODROP if options.rate == 0 else SNDHWM)
    pub.setsockopt(zmq.LINGER, LINGER_MS)
    pub.setsockopt(zmq.SNDTIMEO, _STOP_POLL_MS)
    if track_subscriptions:
        # Report every subscription and every unsubscription (also of a subscriber that
        # goes away), not only the first and last one per topic, so that each counts.
        pub.setsockopt(zmq.XPUB_VERBOSER, 1)
    if options.rate == 0:
        pub.setsockopt(zmq.XPUB_NODROP, 1)


def _bind(pub: zmq.Socket[bytes], endpoint: str) -> None:
    try:
        pub.bind(endpoint)
    except zmq.ZMQError as exc:
        raise BagError(
            f"cannot bind --bind {endpoint!r}: {exc}; is another player or daemon bound"
            f" there? Give another endpoint, such as {_another(endpoint)}"
        ) from None


def _another(endpoint: str) -> str:
    """An endpoint like ``endpoint`` on the next port (never the one that failed)."""
    host, _, port = endpoint.rpartition(":")
    if endpoint.startswith("tcp://") and port.isdigit() and int(port) < 65_535:
        return f"{host}:{int(port) + 1}"
    return "tcp://127.0.0.1:5590"


class _Subscriptions:
    """The open subscriptions to the played topics, as the XPUB socket reports them.

    With ``XPUB_VERBOSER`` the socket delivers each subscription as ``b"\\x01" + prefix``
    and each unsubscription as ``b"\\x00" + prefix``. A subscription counts when its
    prefix matches a played topic (the empty prefix matches all): a subscriber to
    everything counts once, one to ``frame`` and ``label`` separately twice.
    """

    def __init__(self, pub: zmq.Socket[bytes], topics: frozenset[str]) -> None:
        self._pub = pub
        self._topics = [t.encode() for t in topics]
        self.count = 0

    def poll(self, timeout_ms: int = 0) -> None:
        """Take in what the socket has heard, waiting up to ``timeout_ms`` for the first."""
        while self._pub.poll(timeout_ms, zmq.POLLIN):
            timeout_ms = 0
            message = self._pub.recv()
            if message[:1] in (b"\x00", b"\x01") and self._matches(message[1:]):
                self.count += 1 if message[:1] == b"\x01" else -1

    def wait_for(self, n: int, stop: threading.Event) -> None:
        """Block until ``n`` subscriptions are open (or ``stop`` is set)."""
        while self.count < n and not stop.is_set():
            self.poll(_STOP_POLL_MS)

    def _matches(self, prefix: bytes) -> bool:
        return any(t.startswith(prefix) for t in self._topics)


class _Progress:
    """Hands :class:`PlayProgress` to a callback, at most every PROGRESS_INTERVAL_NS."""

    def __init__(
        self,
        callback: Callable[[PlayProgress], None],
        subscriptions: _Subscriptions,
        selection: Selection,
        rate: float,
        summary: PlaySummary,
    ) -> None:
        self._callback = callback
        self._subscriptions = subscriptions
        self._selection = selection
        self._rate = rate
        self._summary = summary
        self._position_ns = 0
        self._next_ns = 0

    def sent(self, recv_ns: int) -> None:
        """A message received at ``recv_ns`` (bag time) went out."""
        self._position_ns = recv_ns - self._selection.start_ns
        if time.monotonic_ns() >= self._next_ns:
            self.report()

    def report(self) -> None:
        self._next_ns = time.monotonic_ns() + PROGRESS_INTERVAL_NS
        self._subscriptions.poll()
        self._callback(
            PlayProgress(
                position_ns=self._position_ns,
                total_ns=self._selection.span_ns,
                messages=sum(self._summary.counts.values()),
                rate=self._rate,
                passes=self._summary.loops,
                subscriptions=self._subscriptions.count,
            )
        )


class _Player:
    """The passes of one play over a bound socket, on one drift-free clock."""

    def __init__(
        self,
        pub: zmq.Socket[bytes],
        options: PlayOptions,
        stop: threading.Event,
        summary: PlaySummary,
        progress: _Progress | None,
    ) -> None:
        self.pub = pub
        self.options = options
        self.stop = stop
        self.summary = summary
        self.progress = progress

    def run(self, bags: Sequence[BagReader], selection: Selection) -> None:
        """Play the passes: one, or with ``--loop`` until stopped.

        ``--delay`` is waited before each pass, as ``ros2 bag play`` does. At real rates a
        pass's deadlines count from the first pass's start (plus the passes and delays
        before it), so that lateness never accumulates across passes either.
        """
        delay_ns = round(self.options.delay_s * 1e9)
        start: int | None = None
        period_ns = 0  # one pass, scaled; known once the first pass is over
        while not self.stop.is_set():
            if delay_ns and (start is None or self.options.rate == 0):
                _sleep_until(time.monotonic_ns() + delay_ns, self.stop)
                if self.stop.is_set():
                    break
            messages = _selected(bags, selection)
            # The clock starts once the first message is in hand: opening the bag and
            # its first chunk must not make every later message look early.
            first = next(messages, None)
            if first is None:
                break
            if start is None:
                start = time.monotonic_ns()
            base = start + self.summary.loops * (period_ns + delay_ns)
            played = self._pass(chain([first], messages), base)
            self.summary.loops += 1
            _collect_warnings(bags, self.summary)
            if not self.options.loop or played is None:
                break
            period_ns = played
        _collect_warnings(bags, self.summary)
        self.summary.elapsed_ns = 0 if start is None else time.monotonic_ns() - start
        if self.progress is not None and not self.stop.is_set():
            self.progress.report()

    def _pass(self, messages: Iterator[BagMessage], base_ns: int) -> int | None:
        """Publish one pass; return the scaled period of a pass for ``--loop``.

        Returns ``None`` when stopped or when nothing was played.
        """
        rate = self.options.rate
        first = last = None
        sent = 0
        for message in messages:
            if self.stop.is_set():
                return None
            if first is None:
                first = message.recv_ns
            last = message.recv_ns
            if rate > 0:
                _sleep_until(base_ns + round((message.recv_ns - first) / rate), self.stop)
            if not _send(self.pub, message, self.stop):
                return None
            self.summary.counts[message.topic] += 1
            sent += 1
            if self.progress is not None:
                self.progress.sent(message.recv_ns)
        if first is None or last is None:
            return None
        # The next pass starts one mean interval after this one's last message.
        span = last - first
        gap = span / (sent - 1) if sent > 1 else 1e9
        return 0 if rate == 0 else round((span + gap) / rate)


def _collect_warnings(bags: Sequence[BagReader], summary: PlaySummary) -> None:
    for bag in bags:
        if bag.warning is not None and bag.warning not in summary.warnings:
            summary.warnings.append(bag.warning)


def _selected(bags: Sequence[BagReader], selection: Selection) -> Iterator[BagMessage]:
    """The messages of one pass: the chosen topics, inside the selection's window.

    Several bags are merged by receive time (ties keep the bags' order); the window is
    half-open, so ``--playback-duration 30`` of a 50 Hz bag plays 1,500 messages a topic.
    """
    streams = [bag.messages(selection.topics) for bag in bags]
    merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=_recv_ns)
    end = selection.end_ns
    for message in merged:
        if message.recv_ns >= selection.start_ns and (end is None or message.recv_ns < end):
            yield message


def _recv_ns(message: BagMessage) -> int:
    return message.recv_ns


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
