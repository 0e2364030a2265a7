"""``robot-daemon demo``: the product end to end in one command, on a simulated sidewalk.

1. **A bag.** :func:`prepare_bag` simulates one (:mod:`robot_daemon.sim`) or reuses one
   that reads back whole. It is written under a temporary name and renamed, so that a
   Ctrl-C never leaves half a bag for the next run to reuse.
2. **The real daemon** (``python -m robot_daemon run``) as a subprocess on ipc://
   endpoints in a private directory, in its own process group: a terminal's Ctrl-C
   reaches only the demo, which then stops the player and the daemon in that order. The
   daemon is ready once its first ``status`` arrives.
3. **Playback.** :func:`robot_daemon.bag.play.play` in a thread publishes the bag's
   ``frame`` messages with their recorded timing sped up ``rate`` times. It starts once
   two subscriptions arrived: the daemon's, and the demo's *tap*, a SUB on the same
   endpoint that stamps when each frame went out.
4. **Live view** (:mod:`robot_daemon.demo.view`) redrawn five times a second, or one plain
   line every few seconds when stdout is not a terminal or with ``--no-live``.
5. **Summary** (:func:`summary_lines`): frames sent and answered, latency, the daemon's
   drop/reject/loss counters, per-class scores of the streamed probabilities against the
   bag's ``label`` messages (matched by ``seq``; thresholds from the model file, which
   always stores them) and a check against the offline ``Model.predict_proba``.
6. **Timeline PNG** (:func:`robot_daemon.demo.view.write_timeline`) when matplotlib (the
   ``plot`` extra) is there; otherwise how to get it.

Latency is measured in this process, on ``time.monotonic_ns()``: a ``pred``'s arrival
minus its frame's arrival at the tap. That is what a planner subscribed to ``pred``
sees: transport both ways, the wait for the next 20 ms tick and the forward pass.

SIGINT, SIGTERM and SIGHUP stop everything at any point (:class:`_StopSignals`): the
player stops, the daemon gets SIGTERM (SIGKILL if it has not exited within
:data:`STOP_TIMEOUT_S`), the cursor comes back, the partial summary is printed and the
exit code is ``128 + signal`` (130 for Ctrl-C).
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
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, Final, TextIO

import numpy as np
import numpy.typing as npt
import zmq

from robot_daemon import sim, wire
from robot_daemon.bag import BagReader
from robot_daemon.bag import play as bagplay
from robot_daemon.demo.view import LiveView, PlainView, TerminalView, daemon_counts, write_timeline
from robot_daemon.errors import BagError, ModelError, RobotDaemonError, WireError
from robot_daemon.model import Model
from robot_daemon.offline import evaluate
from robot_daemon.serve import receive
from robot_daemon.serve.daemon import SERVING_ENV, ServedModel, load_model

SIM_RATE_HZ: Final = 50.0
#: The daemon's first status: interpreter start, imports, model load, then 1 s.
READY_TIMEOUT_S: Final = 20.0
#: From the start of playback to the first frame going out (both subscriptions in).
SUBSCRIBE_TIMEOUT_S: Final = 10.0
#: After the last frame went out, how long its answers may take (100 ticks of 20 ms).
SETTLE_S: Final = 2.0
STOP_TIMEOUT_S: Final = 10.0
REFRESH_S: Final = 0.2
#: Frames/s is measured over about this window.
RATE_WINDOW_NS: Final = 1_000_000_000
#: Streamed and offline probabilities agree when no entry differs by more than this: a
#: few float32 ulps at 1.0 (BLAS may round a batch of 3 differently from one of 3,000).
AGREE_ATOL: Final = 1e-6
#: How long the player keeps its socket open after the last frame (see bagplay).
PLAYER_DRAIN_S: Final = 0.5
_MS: Final = 1e-6


@dataclass(frozen=True)
class DemoOptions:
    """What ``robot-daemon demo`` was asked to do (see its ``--help``)."""

    model: Path
    workdir: Path
    bag: Path | None = None
    duration_s: float = 60.0
    rate: float = 1.0
    seed: int = 7
    png: Path | None = None
    live: bool = True

    @property
    def default_bag(self) -> Path:
        return self.workdir / f"demo-{self.seed}-{self.duration_s:g}s.mcap"

    @property
    def png_path(self) -> Path:
        return self.png if self.png is not None else self.workdir / "demo.png"


# ---------------------------------------------------------------------------- signals


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
    def raising(self) -> Iterator[None]:
        if self.signum is not None:
            raise Interrupted(self.signum)
        self._raising = True
        try:
            yield
        finally:
            self._raising = False


# -------------------------------------------------------------------------------- bag


@dataclass(frozen=True, eq=False)
class BagContents:
    """The valid frames of a bag in play order, with their labels.

    seq : ndarray (n,) int64, the frames' sequence numbers (unique).
    t : ndarray (n,) float64, sensor times, seconds.
    X : ndarray (n, d) float32, the raw readings.
    Y : ndarray (n, c) uint8, the labels of the same seq (0 where there is none).
    labelled : ndarray (n,) bool, whether the bag holds a label for the frame.
    messages : the bag's ``frame`` messages, invalid ones included (what the player sends).
    span_s : receive time of the last frame minus the first's.
    """

    path: Path
    seq: npt.NDArray[np.int64]
    t: npt.NDArray[np.float64]
    X: npt.NDArray[np.float32]
    Y: npt.NDArray[np.uint8]
    labelled: npt.NDArray[np.bool_]
    messages: int
    span_s: float

    @property
    def n(self) -> int:
        return len(self.seq)

    def rows(self) -> dict[int, int]:
        """seq -> row."""
        return {int(s): i for i, s in enumerate(self.seq)}


def bag_problem(path: Path, model: Model) -> str | None:
    """Why the bag at ``path`` cannot be played to ``model``, or ``None`` if it can."""
    try:
        with BagReader(path) as reader:
            info = reader.info()
    except BagError as exc:
        return str(exc)
    if not info.complete:
        return f"bag {path} is damaged at byte {info.damaged_at}; see robot-daemon bag info"
    frames = info.topics.get(wire.TOPIC_FRAME.decode())
    if frames is None or frames.count == 0:
        return f"bag {path} has no 'frame' messages"
    for name, bag_value, model_value in (("d", info.meta.d, model.d), ("c", info.meta.c, model.c)):
        if bag_value is not None and bag_value != model_value:
            return f"bag {path} has {name}={bag_value}, the model expects {name}={model_value}"
    return None


def prepare_bag(options: DemoOptions, model: Model, out: TextIO) -> Path:
    """The bag to play: ``--bag`` (which must be usable), else the default path, simulated
    unless a usable bag is there already.

    Raises:
        BagError: ``--bag`` names a bag that cannot be played.
    """
    if options.bag is not None:
        problem = bag_problem(options.bag, model)
        if problem is not None:
            raise BagError(problem)
        print(f"bag: {options.bag}", file=out, flush=True)
        return options.bag
    path = options.default_bag
    if path.exists():
        problem = bag_problem(path, model)
        if problem is None:
            print(f"bag: reusing {path}", file=out, flush=True)
            return path
        print(f"bag: {problem}; simulating it again", file=out, flush=True)
    simulate_bag(path, options.duration_s, options.seed, out)
    return path


def simulate_bag(path: Path, duration_s: float, seed: int, out: TextIO) -> None:
    """Simulate ``duration_s`` seconds at 50 Hz into ``path``, atomically (temp + rename)."""
    print(f"bag: simulating {duration_s:g} s of sidewalk driving at {SIM_RATE_HZ:g} Hz"
          f" (seed {seed}) ...", file=out, flush=True)
    start = time.monotonic()
    data = sim.simulate(duration_s, SIM_RATE_HZ, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        sim.write_bag(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    print(f"bag: wrote {path} ({data.n} frames) in {time.monotonic() - start:.1f} s",
          file=out, flush=True)


def read_bag(path: Path, model: Model) -> BagContents:
    """Every valid frame of the bag and the label of the same seq.

    Raises:
        BagError: no valid frame, or two frames with the same seq (predictions could not
            be matched to frames).
    """
    frame_topic = wire.TOPIC_FRAME.decode()
    frames: list[wire.Frame] = []
    labels: dict[int, npt.NDArray[np.uint8]] = {}
    recv_ns: list[int] = []  # of every frame message: the span the player plays
    with BagReader(path) as reader:
        for message in reader.messages([frame_topic, wire.TOPIC_LABEL.decode()]):
            try:
                if message.topic == frame_topic:
                    recv_ns.append(message.recv_ns)
                    frames.append(wire.decode_frame(message.payload, d=model.d))
                else:
                    label = wire.decode_label(message.payload, d=model.d, c=model.c)
                    labels[label.seq] = label.y
            except WireError:
                continue  # the daemon rejects it too, and counts it in its status
    seq = np.array([f.seq for f in frames], dtype=np.int64)
    if not frames:
        raise BagError(f"bag {path} holds no valid frame with d={model.d}")
    if len(np.unique(seq)) != len(seq):
        raise BagError(f"bag {path} has frames with the same seq: the demo matches"
                       " predictions to frames by seq, so it needs them unique")
    no_label = np.zeros(model.c, dtype=np.uint8)
    return BagContents(
        path=path,
        seq=seq,
        t=np.array([f.t for f in frames], dtype=np.float64),
        X=np.stack([f.x for f in frames]),
        Y=np.stack([labels.get(f.seq, no_label) for f in frames]),
        labelled=np.array([f.seq in labels for f in frames], dtype=bool),
        messages=len(recv_ns),
        span_s=(max(recv_ns) - min(recv_ns)) / 1e9,
    )


# ---------------------------------------------------------------------- what came back


class Stream:
    """What went out and what came back, by bag row (one row per valid frame).

    sent_ns : ndarray (n,) int64, when the tap saw the frame (monotonic), -1 before.
    answered_ns : ndarray (n,) int64, when its ``pred`` arrived, -1 before.
    P : ndarray (n, c) float32, its streamed probabilities, NaN before.
    """

    def __init__(self, contents: BagContents, c: int) -> None:
        self.contents = contents
        self._rows = contents.rows()
        self.sent_ns = np.full(contents.n, -1, dtype=np.int64)
        self.answered_ns = np.full(contents.n, -1, dtype=np.int64)
        self.P = np.full((contents.n, c), np.nan, dtype=np.float32)
        self.sent = 0  # frame messages seen by the tap, invalid ones included
        self.sent_valid = 0  # of which frames of the bag (rows)
        self.answered = 0
        self.unknown_answers = 0  # pred rows whose seq is not a frame of the bag
        self.newest_row: int | None = None
        self.status: dict[str, Any] | None = None
        self.model_versions: set[str] = set()
        self._rate_samples: deque[tuple[int, int]] = deque()

    def on_frame(self, payload: bytes, now_ns: int) -> None:
        self.sent += 1
        with contextlib.suppress(WireError):  # invalid frames are only counted
            row = self._rows.get(wire.decode_frame(payload).seq)
            if row is not None and self.sent_ns[row] < 0:
                self.sent_ns[row] = now_ns
                self.sent_valid += 1

    def on_pred(self, payload: bytes, now_ns: int) -> None:
        pred = wire.decode_pred(payload)
        self.model_versions.add(pred.model)
        for seq, p in zip(pred.seq.tolist(), pred.p, strict=True):
            row = self._rows.get(seq)
            if row is None:
                self.unknown_answers += 1
                continue
            if self.answered_ns[row] < 0:
                self.answered += 1
            self.answered_ns[row] = now_ns
            self.P[row] = p
            self.newest_row = row

    def on_status(self, payload: bytes) -> None:
        self.status = wire.decode_status(payload)

    def answered_rows(self) -> npt.NDArray[np.intp]:
        return np.flatnonzero(self.answered_ns >= 0)

    def latencies_ms(self) -> npt.NDArray[np.float64]:
        """Pred arrival minus frame arrival at the tap, ms, for every answered frame."""
        both = (self.answered_ns >= 0) & (self.sent_ns >= 0)
        return (self.answered_ns[both] - self.sent_ns[both]).astype(np.float64) * _MS

    def frames_per_s(self, now_ns: int) -> float:
        """Frames answered per second over about the last :data:`RATE_WINDOW_NS`."""
        samples = self._rate_samples
        samples.append((now_ns, self.answered))
        # Keep the newest sample that is at least a window old, and everything after it.
        while len(samples) > 2 and now_ns - samples[1][0] >= RATE_WINDOW_NS:
            samples.popleft()
        t0, answered0 = samples[0]
        return (self.answered - answered0) * 1e9 / (now_ns - t0) if now_ns > t0 else 0.0

    def view(self, model: Model, rate: float, elapsed_s: float, now_ns: int) -> LiveView:
        latencies = self.latencies_ms()
        p50, p99 = np.percentile(latencies, [50, 99]) if latencies.size else (0.0, 0.0)
        row = self.newest_row
        c = self.contents
        return LiveView(
            class_names=model.class_names,
            thresholds=model.thresholds,
            rate=rate,
            elapsed_s=elapsed_s,
            playback_s=c.span_s / rate,
            total=c.messages,
            sent=self.sent,
            answered=self.answered,
            frames_per_s=self.frames_per_s(now_ns),
            latency_ms=(float(p50), float(p99)) if latencies.size else None,
            newest_seq=None if row is None else int(c.seq[row]),
            probs=None if row is None else self.P[row],
            truth=None if row is None or not c.labelled[row] else c.Y[row],
            status=self.status,
        )


# ------------------------------------------------------------------ processes, sockets


@dataclass(frozen=True)
class Endpoints:
    frames: str
    pred: str


def daemon_command(model: Path, endpoints: Endpoints) -> list[str]:
    """The daemon as the robot runs it, with the demo's endpoints."""
    return [
        sys.executable, "-m", "robot_daemon", "run", "--model", str(model),
        "--frames", endpoints.frames, "--pred", endpoints.pred, "--interval-ms", "20",
        "--status-interval", "1", "--log-level", "WARNING",
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
            receive.drain(self.tap, None, partial(_dispatch, stream))
        if self.pred in events:
            receive.drain(self.pred, None, partial(_dispatch, stream))

    def close(self) -> None:
        self.tap.close()
        self.pred.close()
        self.ctx.term()


def _dispatch(stream: Stream, parts: list[bytes]) -> None:
    """A two-part message from the tap or the daemon, to ``stream`` by its topic."""
    if len(parts) != 2:
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

    def __init__(self, path: Path, endpoint: str, rate: float) -> None:
        self.stop = threading.Event()  # set by the main thread only, never by a handler
        self.summary: bagplay.PlaySummary | None = None
        self.error: Exception | None = None
        # Two subscriptions: the daemon's and the tap's. Waiting for both means the first
        # frames are not lost to ZeroMQ's slow joiners.
        self._options = bagplay.PlayOptions(rate=rate, topics=[wire.TOPIC_FRAME.decode()],
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


# ---------------------------------------------------------------------------- the run


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
    if not options.png_path.parent.is_dir():  # found out now, not after the whole run
        raise RobotDaemonError(f"--png {options.png_path}: no directory"
                               f" {options.png_path.parent} to write it in")
    with _StopSignals() as signals:
        try:
            with signals.raising():
                bag_path = prepare_bag(options, served.model, out)
                contents = read_bag(bag_path, served.model)
        except Interrupted as exc:
            print(f"\ninterrupted ({exc}) before streaming", file=out, flush=True)
            return 128 + exc.signum
        stream = Stream(contents, served.model.c)
        start = time.monotonic()
        _serve_and_play(options, served, stream, signals, out)
        elapsed = time.monotonic() - start
        for line in summary_lines(stream, served, elapsed, signals.signum):
            print(line, file=out)
        if signals.signum is not None:
            return 128 + signals.signum
        try:
            with signals.raising():
                print(timeline_or_hint(stream, served.model, options.png_path), file=out)
        except Interrupted as exc:
            return 128 + exc.signum
    return 0


def _load_model(path: Path) -> ServedModel:
    if not path.exists():
        raise ModelError(f"model file {path} does not exist; run from the repository root"
                         " (scripts/demo does) or pass --model PATH")
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
        player = Player(stream.contents.path, endpoints.frames, options.rate)
        stack.callback(player.close)
        c = stream.contents
        print(f"playing {c.messages} frames ({c.span_s:.1f} s of driving) at x{options.rate:g}"
              f": {c.span_s / options.rate:.1f} s", file=out, flush=True)
        view: PlainView | TerminalView = (
            TerminalView(out) if options.live and out.isatty() else PlainView(out))
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
                       stream: Stream, signals: _StopSignals, view: PlainView | TerminalView,
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


# --------------------------------------------------------------------------- summary


def summary_lines(stream: Stream, served: ServedModel, elapsed_s: float,
                  signum: int | None) -> list[str]:
    """The end-of-run report; partial when ``signum`` stopped the run."""
    c = stream.contents
    title = ("summary" if signum is None else
             f"partial summary (interrupted by {signal.Signals(signum).name})")
    lines = [
        "",
        f"{title}: {elapsed_s:.1f} s, bag {c.path}",
        f"frames sent {stream.sent} of {c.messages}, answered {stream.answered}"
        f" of {stream.sent_valid}" + _unanswered_note(stream),
    ]
    latencies = stream.latencies_ms()
    if latencies.size:
        p50, p99 = np.percentile(latencies, [50, 99])
        lines.append(f"latency, frame sent -> pred received: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    lines.append("daemon (its last status): " + daemon_counts(stream.status))
    rows = stream.answered_rows()
    scored = rows[c.labelled[rows]]
    if not c.labelled.any():
        lines.append("the bag holds no 'label' messages: nothing to score the answers against")
    if scored.size:
        evaluation = evaluate.score("streamed", served.model.class_names, c.Y[scored],
                                    stream.P[scored], served.model.thresholds)
        lines += ["", "streamed predictions against the bag's labels (model thresholds):"]
        lines += evaluate.describe([evaluation]).splitlines()
        lines += _absent_classes_note(evaluation)
    if rows.size:
        lines += ["", offline_check(stream, served, rows)]
    return lines


def _absent_classes_note(evaluation: evaluate.Evaluation) -> list[str]:
    """A short bag misses some classes, whose F1 is then 0 by convention (no true
    positive can exist): the macro F1 over the classes present says more."""
    present = evaluation.support > 0
    if present.all():
        return []
    absent = [name for name, p in zip(evaluation.class_names, present, strict=True) if not p]
    if not present.any():
        return ["no obstacle in these frames: F1 is 0 by convention for every class"]
    n = int(present.sum())
    over = "the 1 class" if n == 1 else f"the {n} classes"
    return [f"not in these frames: {', '.join(absent)} (F1 0 by convention); macro F1 over"
            f" {over} present: {evaluation.f1[present].mean():.4f}"]


def _unanswered_note(stream: Stream) -> str:
    notes = []
    if stream.unknown_answers:
        notes.append(f"{stream.unknown_answers} answers for frames not in the bag")
    missing = stream.sent_valid - stream.answered
    if missing > 0:
        notes.append(f"{missing} sent frames never answered")
    return f" ({'; '.join(notes)})" if notes else ""


def offline_check(stream: Stream, served: ServedModel, rows: npt.NDArray[np.intp]) -> str:
    """Whether the streamed probabilities are the offline ``predict_proba``'s, in float32."""
    offline = served.model.predict_proba(stream.contents.X[rows]).astype(np.float32)
    diff = float(np.abs(offline - stream.P[rows]).max())
    other = stream.model_versions - {served.version}
    if other:
        return (f"offline check: the daemon served model {', '.join(sorted(other))}, not"
                f" {served.version} (was the file replaced?)")
    verdict = "agree" if diff <= AGREE_ATOL else "DISAGREE"
    return (f"offline check: model.predict_proba on the same {rows.size} frames and the"
            f" stream {verdict} (max |difference| {diff:.1e})")


# -------------------------------------------------------------------------- timeline


def timeline_or_hint(stream: Stream, model: Model, path: Path) -> str:
    """Write the timeline PNG and return its line of the report, or say how to get it."""
    try:
        import matplotlib  # noqa: F401  - the optional "plot" extra
    except ImportError:
        return (
            "timeline PNG skipped: matplotlib is not installed. Install it with\n"
            f"    {_pip()} install -e '.[plot]'\n"
            f"then rerun with --bag {stream.contents.path} to reuse the bag."
        )
    c = stream.contents
    versions = ", ".join(sorted(stream.model_versions)) or "none"
    try:
        write_timeline(path, c.t - c.t[0], stream.P, c.Y, c.labelled, model.class_names,
                       model.thresholds, title=f"{c.path.name} through the daemon, model"
                       f" {versions}")
    except OSError as exc:
        raise RobotDaemonError(f"cannot write the timeline {path}: {exc.strerror}") from None
    return f"timeline: {path}"


def _pip() -> str:
    """This environment's pip, as a path relative to the working directory if inside it."""
    pip = Path(sys.executable).parent / "pip"
    if not pip.exists():
        return f"{sys.executable} -m pip"
    with contextlib.suppress(ValueError):
        return str(pip.relative_to(Path.cwd()))
    return str(pip)
