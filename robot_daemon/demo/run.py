"""``robot-daemon demo``: the product end to end in one command, on a simulated sidewalk.

:func:`run` simulates a bag (or reuses one), starts the real daemon as a subprocess on
private ipc:// endpoints, plays the bag into it, shows a live view, and ends with a
summary (latency, counters, per-class scores against the bag's labels) and a timeline PNG
when matplotlib is there. Any of SIGINT, SIGTERM and SIGHUP stops everything in order and
prints the partial summary.

Design: docs/architecture.md, "The demo".
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, Final, TextIO

import zmq

from robot_daemon import wire
from robot_daemon.bag import play as bagplay
from robot_daemon.demo.options import DemoOptions
from robot_daemon.demo.recording import prepare_bag, read_bag
from robot_daemon.demo.stream import Stream
from robot_daemon.demo.summary import summary_lines, timeline_or_hint
from robot_daemon.demo.view import LiveView, plain_view, terminal_view
from robot_daemon.errors import ModelError, RobotDaemonError
from robot_daemon.liveview import PlainView, TerminalView
from robot_daemon.model import Model
from robot_daemon.paths import check_input, check_output
from robot_daemon.serve.daemon import SERVING_ENV
from robot_daemon.serve.reload import ServedModel, load_model
from robot_daemon.zmq_io import receive

#: The daemon's first status: interpreter start, imports, model load, then 1 s.
READY_TIMEOUT_S: Final = 20.0


#: From the start of playback to the first frame going out (both subscriptions in).
SUBSCRIBE_TIMEOUT_S: Final = 10.0


#: After the last frame went out, how long its answers may take (100 ticks of 20 ms).
SETTLE_S: Final = 2.0


STOP_TIMEOUT_S: Final = 10.0


REFRESH_S: Final = 0.2


#: How long the player keeps its socket open after the last frame (see bagplay).
PLAYER_DRAIN_S: Final = 0.5




class Interrupted(Exception):
    """A stop signal arrived during work that cannot poll for it (simulating, plotting)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _StopSignals:
    """SIGINT, SIGTERM and SIGHUP as one stop request, for the whole demo.

    By default the handler only records the signal, and the streaming loop polls
    ``requested``: stopping then runs the cleanup in order, never cut in half. Inside
    :meth:`raising` (work with no loop to poll from) it raises :class:`Interrupted`.
    A plain attribute, not a ``threading.Event``: a handler that waited for the event's
    lock could deadlock when a second signal interrupts the first handler.
    """

    HANDLED: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._raising = False
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> _StopSignals:
        self._previous = {s: signal.signal(s, self._handle) for s in self.HANDLED}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:  # the first signal decides the exit code
            self.signum = signum
        if self._raising:
            raise Interrupted(signum)

    @contextlib.contextmanager
    def raising(self, *, after_stop: bool = False) -> Iterator[None]:
        """Turn stop signals into :class:`Interrupted` inside the block.

        A stop requested before the block raises at once, unless ``after_stop``: work
        that runs because of that stop (the timeline of an interrupted run) is cut short
        only by another signal.
        """
        if self.signum is not None and not after_stop:
            raise Interrupted(self.signum)
        self._raising = True
        try:
            yield
        finally:
            self._raising = False


@dataclass(frozen=True)
class Endpoints:
    frames: str
    pred: str


def daemon_command(model: Path, endpoints: Endpoints) -> list[str]:
    """The daemon as the robot runs it, with the demo's endpoints."""
    return [
        sys.executable, "-m", "robot_daemon", "run", "--model", str(model),
        "--frames", endpoints.frames, "--pred", endpoints.pred, "--interval-ms", "20",
        "--status-interval", "1", "--log-level", "INFO",
    ]


class DaemonProcess:
    """The daemon subprocess, stderr to ``log_path``, in a process group of its own."""

    def __init__(self, command: Sequence[str], log_path: Path) -> None:
        self.log_path = log_path
        try:
            with log_path.open("wb") as log:
                self.proc = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                    process_group=0, env={**os.environ, **SERVING_ENV},
                )
        except OSError as exc:
            raise RobotDaemonError(f"cannot start the daemon ({log_path}: {exc})") from None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exited(self) -> int | None:
        return self.proc.poll()

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def log_hint(self) -> str:
        """The last line of the daemon's log, for an error message."""
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        if not lines:
            return f"its log {self.log_path} is empty"
        return f"the last line of its log {self.log_path}: {lines[-1]}"

    def died(self, when: str) -> RobotDaemonError:
        return RobotDaemonError(
            f"the daemon exited with code {self.proc.returncode} {when}; {self.log_hint()}"
        )


class Sockets:
    """The demo's two SUB sockets: the tap on the frames endpoint, and ``pred``/``status``."""

    def __init__(self, endpoints: Endpoints) -> None:
        self.ctx = zmq.Context()
        self.tap = self._sub(endpoints.frames, [wire.TOPIC_FRAME])
        self.pred = self._sub(endpoints.pred, [wire.TOPIC_PRED, wire.TOPIC_STATUS])
        self.poller = zmq.Poller()
        self.poller.register(self.tap, zmq.POLLIN)
        self.poller.register(self.pred, zmq.POLLIN)

    def _sub(self, endpoint: str, topics: Sequence[bytes]) -> zmq.Socket[bytes]:
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 0)  # the bag bounds what can queue: lose nothing
        for topic in topics:
            sub.subscribe(topic)
        sub.connect(endpoint)  # before the peer binds: ZeroMQ connects when it appears
        return sub

    def pump(self, stream: Stream, timeout_ms: int) -> None:
        """Wait up to ``timeout_ms`` for messages, then hand every waiting one to ``stream``."""
        events = dict(self.poller.poll(max(0, timeout_ms)))
        # No deadline: after the daemon stops, its last answers must all be read.
        if self.tap in events:
            receive.drain(self.tap, partial(_dispatch, stream))
        if self.pred in events:
            receive.drain(self.pred, partial(_dispatch, stream))

    def close(self) -> None:
        self.tap.close()
        self.pred.close()
        self.ctx.term()


def _dispatch(stream: Stream, parts: list[receive.Part], count: int) -> None:
    """A two-part message from the tap or the daemon, to ``stream`` by its topic."""
    if count != 2:
        return
    topic, payload = parts
    if topic == wire.TOPIC_FRAME:
        stream.on_frame(payload, time.monotonic_ns())
    elif topic == wire.TOPIC_PRED:
        stream.on_pred(payload, time.monotonic_ns())
    elif topic == wire.TOPIC_STATUS:
        stream.on_status(payload)


class Player:
    """:func:`robot_daemon.bag.play.play` in a thread; afterwards its summary or error."""

    def __init__(self, path: Path, endpoint: str, rate: float, duration_s: float | None) -> None:
        self.stop = threading.Event()  # set by the main thread only, never by a handler
        self.summary: bagplay.PlaySummary | None = None
        self.error: Exception | None = None
        # Two subscriptions: the daemon's and the tap's. Waiting for both means the first
        # frames are not lost to ZeroMQ's slow joiners.
        self._options = bagplay.PlayOptions(rate=rate, duration_s=duration_s,
                                            topics=[wire.TOPIC_FRAME.decode()],
                                            wait_subscribers=2, drain_s=PLAYER_DRAIN_S)
        self._args = (path, endpoint)
        self._thread = threading.Thread(target=self._run, name="demo-player", daemon=True)

    def _run(self) -> None:
        try:
            self.summary = bagplay.play(*self._args, self._options, stop=self.stop)
        except Exception as exc:  # handed to the main thread, which reports it
            self.error = exc

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        self.stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=STOP_TIMEOUT_S)


def run(options: DemoOptions, out: TextIO | None = None) -> int:
    """Run the demo; return the exit code (0, or 128 + the signal that stopped it).

    Raises:
        RobotDaemonError: a missing or bad model or bag, a daemon that dies or never
            answers (one line each, for the command line to print).
    """
    out = sys.stdout if out is None else out
    served = _load_model(options.model)
    try:
        options.workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RobotDaemonError(f"cannot create {options.workdir}: {exc.strerror}") from None
    # Found out now, not after the whole run; the PNG is written beside and renamed.
    inputs = [options.model] if options.bag is None else [options.model, options.bag]
    check_output(options.png_path, inputs, atomic=True, what="--png")
    with _StopSignals() as signals:
        try:
            with signals.raising():
                bag_path = prepare_bag(options, served.model, out)
                contents = read_bag(bag_path, served.model, options.duration_s)
        except Interrupted as exc:
            print(f"\ninterrupted ({exc}) before streaming", file=out, flush=True)
            return 128 + exc.signum
        stream = Stream(contents, served.model.c)
        start = time.monotonic()
        _serve_and_play(options, served, stream, signals, out)
        elapsed = time.monotonic() - start
        for line in summary_lines(stream, served, elapsed, signals.signum):
            print(line, file=out)
        stopped = signals.signum
        try:
            # Also after Ctrl-C: the timeline of what was streamed (a second one skips it).
            with signals.raising(after_stop=True):
                print(timeline_or_hint(stream, served.model, options.png_path,
                                       stopped=stopped is not None), file=out)
        except Interrupted as exc:
            return 128 + (stopped or exc.signum)
    return 0 if stopped is None else 128 + stopped


def _load_model(path: Path) -> ServedModel:
    if not path.exists():
        raise ModelError(f"model file {path} does not exist; run from the repository root"
                         " (scripts/demo does) or pass --model PATH")
    check_input(path, "model file")  # a FIFO would block the load, /dev/zero never end
    return load_model(path)


def _serve_and_play(options: DemoOptions, served: ServedModel, stream: Stream,
                    signals: _StopSignals, out: TextIO) -> None:
    """Start the daemon, play the bag through it, stop both; fills ``stream``.

    Every resource is released in reverse order whatever happens: the player stops, the
    daemon is stopped (SIGTERM, then SIGKILL), the sockets close, the ipc directory goes.
    """
    with contextlib.ExitStack() as stack:
        # ipc:// paths are limited to ~100 bytes: a short directory under /tmp. Its name
        # carries the demo's pid, so that a test can look for a daemon left behind.
        ipc = Path(tempfile.mkdtemp(prefix=f"rd-demo-{os.getpid()}-", dir="/tmp"))
        stack.callback(shutil.rmtree, ipc, ignore_errors=True)
        endpoints = Endpoints(frames=f"ipc://{ipc}/frames", pred=f"ipc://{ipc}/pred")
        sockets = Sockets(endpoints)
        stack.callback(sockets.close)
        daemon = DaemonProcess(daemon_command(served.path.resolve(), endpoints),
                               options.workdir / "daemon.log")
        stack.callback(_stop_daemon, daemon, sockets, stream)
        print(f"daemon: pid {daemon.pid}, model {served.version}, log {daemon.log_path}",
              file=out, flush=True)
        if not _wait_ready(daemon, sockets, stream, signals):
            return
        player = Player(stream.contents.path, endpoints.frames, options.rate, options.duration_s)
        stack.callback(player.close)
        c = stream.contents
        print(f"playing {c.messages} frames ({c.span_s:.1f} s of driving) at x{options.rate:g}"
              f": {c.span_s / options.rate:.1f} s", file=out, flush=True)
        view = terminal_view(out) if options.live and out.isatty() else plain_view(out)
        with view:
            player.start()
            _stream_until_done(player, daemon, sockets, stream, signals, view, served.model,
                               options.rate)


def _wait_ready(daemon: DaemonProcess, sockets: Sockets, stream: Stream,
                signals: _StopSignals) -> bool:
    """Until the daemon's first status (it serves, and our SUB hears it); False if stopped.

    Raises:
        RobotDaemonError: the daemon exited, or sent nothing within READY_TIMEOUT_S.
    """
    deadline = time.monotonic() + READY_TIMEOUT_S
    while stream.status is None:
        if signals.requested:
            return False
        if daemon.exited() is not None:
            raise daemon.died("at startup")
        if time.monotonic() > deadline:
            raise RobotDaemonError(
                f"the daemon sent no status within {READY_TIMEOUT_S:g} s; {daemon.log_hint()}")
        sockets.pump(stream, 100)
    return True


def _stream_until_done(player: Player, daemon: DaemonProcess, sockets: Sockets,
                       stream: Stream, signals: _StopSignals,
                       view: PlainView[LiveView] | TerminalView[LiveView],
                       model: Model, rate: float) -> None:
    """Receive and show until every frame went out and was answered, or a stop request.

    Raises:
        RobotDaemonError: the daemon died, the player failed, or no frame went out.
    """
    start = time.monotonic_ns()
    next_refresh = start
    settle_deadline: int | None = None

    def refresh(now: int, final: bool = False) -> None:
        view.update(stream.view(model, rate, (now - start) / 1e9, now), final=final)

    while not signals.requested:
        now = time.monotonic_ns()
        if daemon.exited() is not None:
            raise daemon.died("during playback")
        if player.error is not None:
            raise RobotDaemonError(f"playback failed: {player.error}")
        if stream.sent == 0 and now - start > SUBSCRIBE_TIMEOUT_S * 1e9:
            raise RobotDaemonError(f"no frame went out within {SUBSCRIBE_TIMEOUT_S:g} s: the"
                                   f" daemon never subscribed; {daemon.log_hint()}")
        if stream.sent >= stream.contents.messages or (stream.sent and not player.alive):
            settle_deadline = settle_deadline or now + round(SETTLE_S * 1e9)
            if stream.answered >= stream.sent_valid or now >= settle_deadline:
                break
        if now >= next_refresh:
            refresh(now)
            next_refresh = now + round(REFRESH_S * 1e9)
        sockets.pump(stream, (next_refresh - time.monotonic_ns()) // 1_000_000 + 1)
    refresh(time.monotonic_ns(), final=True)


def _stop_daemon(daemon: DaemonProcess, sockets: Sockets, stream: Stream) -> None:
    """SIGTERM, keep receiving (its last pred and status) until it exits; SIGKILL late."""
    daemon.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while daemon.exited() is None and time.monotonic() < deadline:
        sockets.pump(stream, 50)
    daemon.kill()  # a no-op once it has exited; reaps it either way
    sockets.pump(stream, 100)  # what it sent while closing is still in flight
