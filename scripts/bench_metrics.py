"""The metrics endpoint under HTTP floods, against a real daemon at 1,000 frames/s (issue 25).

    .venv/bin/python scripts/bench_metrics.py [--quick] [--before REV] [--json FIGURES.json]

Starts ``robot-daemon run --metrics 0`` as the unit would run it (20 ms ticks, BLAS on one
thread: ``SERVING_ENV``; nice -10 where this process may; the soft ``RLIMIT_NOFILE`` of
systemd's default ``LimitNOFILE``, 1,024) with one sensor publishing valid frames at
1,000 frames/s from a process of its own; every frame is checked off in the ``pred``
messages by its ``src`` and ``seq``. Then, each attack beside a baseline of the same
length with no attack just before it (the same daemon, the same sensor):

* **half-open, then at once**: 1,063 connections that send part of a request and hold it
  for 3 s, then all complete it at once;
* **near the fd limit**: 1,010 half-open connections held 8 s (the daemon's limit is
  1,024), during which the sensor's publisher restarts (a new ``src``) and the daemon
  gets a SIGHUP (a reload of the same model file);
* **4 scrapers**: 4 clients scraping back to back for 12 s;
* **oversized heads**: 20 requests with a 70 kB header line and 20 with 101 headers, half
  of them from clients that leave without reading the answer;
* **1,000 concurrent scrapes**: 1,000 connections at once, each a whole request, 40 s for
  the answers.

Per phase it prints the ticks late and missed (the daemon's ``status`` counters), the
longest gap between two ``pred`` messages in ticks, valid frames unanswered (a restarted
sensor's frames count from its first answered one: the time before that is its ``blind``
time), frames dropped, the CPU of the daemon and of its exporter (% of one core), the
daemon's open fds and threads (at most, sampled every 50 ms, against before), scrapes
answered and refused, and traceback lines in the daemon's log (the exporter's stderr is
the daemon's). ``--before REV`` runs the same attacks against the daemon of commit ``REV``
(extracted with ``git archive``; e.g. the one that served ``/metrics`` from
prometheus-client's threaded server in the daemon) after this checkout's.

For ``scripts/bench_faults.py``: :func:`attacks` runs all of it against a tree and
returns the :class:`Result` of each attack (``report()`` prints it); figures go to the
list it is given.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import resource
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_daemon import usable_nice  # noqa: E402
from bench_faults import Answers  # noqa: E402
from benchlib import Figure, terminate, write_json  # noqa: E402

from robot_daemon import wire  # noqa: E402
from robot_daemon.serve.daemon import SERVING_ENV, SERVING_NICE  # noqa: E402

RATE = 1000.0  # frames/s
INTERVAL_MS = 20
#: systemd's default soft LimitNOFILE: what the daemon gets unless its unit says otherwise.
NOFILE = 1024
HALF_OPEN = 1063
NEAR_LIMIT = 1010
SCRAPERS = 4
CONCURRENT = 1000
OVERSIZED = 20
#: The attacking clients' nice value: in the field they are on other machines; here they
#: share the daemon's cores, and at nice 19 they stand for a remote client rather than a
#: local CPU hog (which could starve the robot without any HTTP).
CLIENT_NICE = 19
#: A half-open flood connects one client every PACE_S: a server with a short backlog (5)
#: then accepts each, as an attacker who wants its connections held would arrange.
PACE_S = 0.0005
#: A request cut before its end, and its end: a half-open connection's two halves.
PARTIAL = b"GET /metrics HTTP/1.1\r\nHost: robot\r\n"
REST = b"\r\n"
LONG_LINE = b"GET /metrics HTTP/1.1\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n"
MANY_HEADERS = b"GET /metrics HTTP/1.1\r\n" + b"X-Header: 1\r\n" * 101 + b"\r\n"
#: Launches the daemon with the soft fd limit and nice value given, then execs it.
_LAUNCH = (
    "import os, resource, sys\n"
    "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
    "resource.setrlimit(resource.RLIMIT_NOFILE, (min(int(sys.argv[1]), hard), hard))\n"
    "os.nice(int(sys.argv[2]))\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[3:]])\n"
)
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- the sensor ----------------------------------------------------------------------------


def publish(endpoint: str, src: str, t0: Any, sent: Any, stop: Any) -> None:
    """A sensor process: frame ``seq`` is due at ``t0 + seq / RATE`` (monotonic s);
    ``sent``: how many have left."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 100_000)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(endpoint)
    x = np.zeros(16, np.float32)
    start = time.monotonic()
    t0.value = start
    seq = 0
    while not stop.is_set():
        due = int((time.monotonic() - start) * RATE) + 1
        for k in range(seq, due):
            pub.send_multipart([wire.TOPIC_FRAME, wire.encode_frame(k, time.time(), x, src)])
        seq = sent.value = due
        time.sleep(0.002)
    pub.close()
    ctx.term()


class Sensor:
    """One publisher process of valid frames at :data:`RATE`, as ``src``."""

    def __init__(self, endpoint: str, src: str) -> None:
        spawn = mp.get_context("spawn")  # no copy of this process's ZeroMQ state
        self.src = src
        self.t0 = spawn.Value("d", 0.0)
        self.sent = spawn.Value("q", 0)
        self._stop = spawn.Event()
        self.proc = spawn.Process(target=publish,
                                  args=(endpoint, src, self.t0, self.sent, self._stop),
                                  daemon=True)
        self.proc.start()
        while self.t0.value == 0.0:
            time.sleep(0.01)

    def due(self, start: float, end: float) -> range:
        """The seqs due in [start, end] (monotonic s) and sent."""
        first = max(0, int((start - self.t0.value) * RATE))
        last = min(int((end - self.t0.value) * RATE), self.sent.value)
        return range(first, max(first, last))

    def stop(self) -> None:
        self._stop.set()
        self.proc.join(5)


# ---- the daemon ----------------------------------------------------------------------------


class Daemon:
    """``robot-daemon run --metrics 0`` from ``tree``, as the unit runs it (see the module
    docstring); its log in ``workdir``."""

    def __init__(self, workdir: Path, tree: Path, frames: str, pred: str) -> None:
        self.log_path = workdir / "daemon.log"
        self.nice = usable_nice(SERVING_NICE)
        cmd = [sys.executable, "-c", _LAUNCH, str(NOFILE), str(self.nice),
               "-m", "robot_daemon", "run", "--model", str(ROOT / "models" / "default.npz"),
               "--frames", frames, "--pred", pred, "--interval-ms", str(INTERVAL_MS),
               "--status-interval", "0.5", "--metrics", "0"]
        env = {**os.environ, **SERVING_ENV, "PYTHONPATH": str(tree)}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stderr=log, cwd=tree, env=env)
        self.port = self._logged_port()

    def _logged_port(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = re.search(r"Prometheus metrics on http://127\.0\.0\.1:(\d+)/metrics",
                              self.log())
            if found:
                return int(found.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"no metrics endpoint logged:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def exporter(self) -> int | None:
        """The pid of the daemon's child (its exporter), if it has one."""
        pid = self.proc.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def close(self) -> tuple[int | None, bool]:
        """SIGTERM; the exit status (None: killed after 10 s) and whether a child of it
        was left running."""
        child = self.exporter()
        code = terminate(self.proc)
        left = child is not None and _alive(child)
        if left and child is not None:
            os.kill(child, signal.SIGKILL)
        return code, left


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) process ``pid`` has used; 0 if it is gone."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def count(path: str) -> int:
    try:
        return len(os.listdir(path))
    except OSError:
        return 0


class Peaks(threading.Thread):
    """The most open fds and threads of the daemon, and fds of its exporter (``child``),
    sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.child: int | None = None
        self.fds = self.threads = self.child_fds = 0
        self.stop = threading.Event()

    def reset(self, child: int | None) -> tuple[int, int, int]:
        """Start again from now; the fds, threads and the child's fds now."""
        self.child = child
        self.fds = count(f"/proc/{self.pid}/fd")
        self.threads = count(f"/proc/{self.pid}/task")
        self.child_fds = count(f"/proc/{child}/fd") if child else 0
        return self.fds, self.threads, self.child_fds

    def run(self) -> None:
        while not self.stop.wait(0.05):
            self.fds = max(self.fds, count(f"/proc/{self.pid}/fd"))
            self.threads = max(self.threads, count(f"/proc/{self.pid}/task"))
            if self.child:
                self.child_fds = max(self.child_fds, count(f"/proc/{self.child}/fd"))


# ---- HTTP clients --------------------------------------------------------------------------


def classify(response: bytes) -> str:
    """``200``, ``431``, ... from a response's status line; ``closed`` for nothing."""
    if not response:
        return "closed"
    parts = response.split(b"\r\n", 1)[0].split()
    return parts[1].decode("ascii", "replace") if len(parts) > 1 else "garbled"


def flood(port: int, n: int, first: bytes, rest: bytes, hold_s: float,
          answer_s: float, pace_s: float = 0.0) -> Counter[str]:
    """``n`` connections, one every ``pace_s`` (0: at once), each sending ``first``; after
    ``hold_s``, ``rest``; then their answers for at most ``answer_s``. By outcome: a
    status code, ``closed`` (closed unanswered), ``reset``, ``unconnected`` (not connected
    within 10 s), ``no answer`` (still open at the end). A paced flood lets a server
    with a short listen backlog accept each connection (as an attacker would)."""
    outcome: Counter[str] = Counter()
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
        sel.register(s, selectors.EVENT_WRITE)
        if pace_s:
            time.sleep(pace_s)
    connected: list[socket.socket] = []
    deadline = time.monotonic() + 10
    while len(sel.get_map()) and time.monotonic() < deadline:
        for key, _ in sel.select(0.1):
            s = key.fileobj
            sel.unregister(s)
            assert isinstance(s, socket.socket)
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 and _send(s, first):
                connected.append(s)
            else:
                outcome["reset"] += 1
    outcome["unconnected"] += len(sel.get_map())
    for key in list(sel.get_map().values()):
        sel.unregister(key.fileobj)
    time.sleep(hold_s)
    got: dict[socket.socket, bytes] = {}
    for s in connected:
        if rest and not _send(s, rest):
            outcome["reset"] += 1
            continue
        got[s] = b""
        sel.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + answer_s
    while len(sel.get_map()) and time.monotonic() < deadline:
        for key, _ in sel.select(0.1):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, BlockingIOError) as exc:
                if isinstance(exc, BlockingIOError):
                    continue
                sel.unregister(s)
                outcome["reset" if not got[s] else classify(got[s])] += 1
                continue
            if chunk:
                got[s] += chunk[:64] if len(got[s]) < 64 else b""
                continue
            sel.unregister(s)
            outcome[classify(got[s])] += 1
    outcome["no answer"] += len(sel.get_map())
    sel.close()
    for s in socks:
        s.close()
    return outcome


def as_client(work: Callable[[], Counter[str]]) -> Counter[str]:
    """``work()`` in a thread of its own at :data:`CLIENT_NICE`."""
    done: list[Counter[str]] = []
    thread = threading.Thread(target=lambda: (_renice_thread(), done.append(work())))
    thread.start()
    thread.join()
    return done[0]


def _renice_thread() -> None:
    """This thread at :data:`CLIENT_NICE` (Linux: a nice value is a thread's)."""
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), CLIENT_NICE)


def _send(s: socket.socket, data: bytes) -> bool:
    try:
        s.send(data)
    except OSError:
        return False
    return True


def request(port: int, raw: bytes, timeout_s: float = 10.0, read: bool = True) -> str:
    """One request on a connection of its own; the outcome as :func:`flood` names it
    (``sent`` where the answer was not read)."""
    head = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
            s.sendall(raw)
            if not read:
                return "sent"
            while chunk := s.recv(65536):
                head += chunk[:64] if len(head) < 64 else b""
    except ConnectionResetError:
        return "reset" if not head else classify(head)
    except OSError:
        return "no answer"
    return classify(head)


def scrapers(port: int, k: int, seconds: float) -> Counter[str]:
    """``k`` clients scraping back to back for ``seconds``; the outcomes."""
    outcome: Counter[str] = Counter()
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def client() -> None:
        _renice_thread()
        while time.monotonic() < end:
            result = request(port, b"GET /metrics HTTP/1.1\r\nHost: robot\r\n\r\n", 5.0)
            with lock:
                outcome[result] += 1

    threads = [threading.Thread(target=client) for _ in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcome


# ---- phases and attacks ------------------------------------------------------------------


@dataclass
class Phase:
    """What one stretch of time (an attack or its baseline) did to the daemon."""

    name: str
    seconds: float
    late: int = 0
    late_os: int = 0  # of late: the OS kept the CPU from the loop
    missed: int = 0
    dropped: int = 0
    unanswered: int = 0
    gap_ticks: int = 0
    cpu: float = 0.0  # % of a core
    exporter_cpu: float = 0.0
    clients_cpu: float = 0.0  # this process: the attacking clients (and our subscriber)
    fds: tuple[int, int] = (0, 0)  # before, most
    threads: tuple[int, int] = (0, 0)
    exporter_fds: tuple[int, int] = (0, 0)
    tracebacks: int = 0
    http: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def row(self) -> str:
        http = ", ".join(f"{k} {v}" for k, v in sorted(self.http.items())) or "-"
        return (f"  {self.name:<9} {self.seconds:5.1f} s  ticks late {self.late} (os "
                f"{self.late_os}), missed {self.missed}; longest pred gap {self.gap_ticks} "
                f"ticks; valid frames unanswered {self.unanswered}, dropped {self.dropped}\n"
                f"            CPU: daemon {self.cpu:.1f} %, exporter {self.exporter_cpu:.1f} %,"
                f" clients {self.clients_cpu:.1f} %; daemon fds {self.fds[0]} -> "
                f"{self.fds[1]}, threads {self.threads[0]} -> {self.threads[1]}; exporter fds "
                f"{self.exporter_fds[0]} -> {self.exporter_fds[1]}; tracebacks "
                f"{self.tracebacks}\n            HTTP: {http}")


@dataclass
class Result:
    """One attack (``key``: its short name) beside its baseline."""

    key: str
    attack: str
    baseline: Phase
    under: Phase

    def report(self) -> None:
        print(f"\n{self.attack}")
        print(self.baseline.row())
        print(self.under.row())
        for note in self.under.notes:
            print(f"  {note}")


class Bench:
    """A daemon from ``tree``, its sensor and our subscriber; one method per attack."""

    def __init__(self, workdir: Path, tree: Path, quick: bool) -> None:
        self.workdir, self.quick = workdir, quick
        self.frames = f"ipc://{workdir}/sensor"
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sensors = [Sensor(self.frames, "sensor-a")]
        self.answers = Answers(self.ctx, f"ipc://{workdir}/pred")
        self.answers.start()
        self.daemon = Daemon(workdir, tree, self.frames, f"ipc://{workdir}/pred")
        self.peaks = Peaks(self.daemon.proc.pid)
        self.peaks.start()
        self.answers.status_after(time.monotonic())
        time.sleep(1.0)  # the sensor joined, the exporter subscribed

    def scale(self, seconds: float) -> float:
        return seconds / 3 if self.quick else seconds

    def phase(self, name: str, seconds: float,
              action: Callable[[Phase], None] | None = None) -> Phase:
        """Measure ``action`` and what follows it up to ``seconds`` after its start (no
        action: ``seconds`` of nothing, a baseline)."""
        phase = Phase(name, seconds)
        before = self.answers.status_after(time.monotonic())
        exporter = self.daemon.exporter()
        cpu0, ecpu0, log0 = (cpu_s(self.daemon.proc.pid), cpu_s(exporter),
                             len(self.daemon.log()))
        own0 = _own_cpu_s()
        fds0, threads0, exporter_fds0 = self.peaks.reset(exporter)
        start = time.monotonic()
        if action is not None:
            action(phase)
        # At least ``seconds``: an attack and its baseline are compared over one length.
        time.sleep(max(0.0, start + seconds - time.monotonic()))
        end = time.monotonic()
        phase.seconds = end - start
        phase.cpu = 100 * (cpu_s(self.daemon.proc.pid) - cpu0) / phase.seconds
        phase.exporter_cpu = 100 * (cpu_s(exporter) - ecpu0) / phase.seconds
        phase.clients_cpu = 100 * (_own_cpu_s() - own0) / phase.seconds
        phase.fds, phase.threads = (fds0, self.peaks.fds), (threads0, self.peaks.threads)
        phase.exporter_fds = (exporter_fds0, self.peaks.child_fds)
        time.sleep(1.0)  # the last frames answered, a status after the end
        after = self.answers.status_after(end + 0.1)
        phase.late = after["ticks_late"] - before["ticks_late"]
        phase.late_os = after["ticks_late_os"] - before["ticks_late_os"]
        phase.missed = after["ticks_missed"] - before["ticks_missed"]
        phase.dropped = after["frames_dropped"] - before["frames_dropped"]
        phase.gap_ticks = self.answers.gap_ticks(start, end + 0.5)
        phase.unanswered = self.unanswered(start, end)
        phase.tracebacks = self.daemon.log()[log0:].count("Traceback")
        return phase

    def unanswered(self, start: float, end: float) -> int:
        """Valid frames due in [start, end] never answered; a sensor's count from its first
        answered frame (before it, the daemon had not heard it yet: see ``blind``)."""
        missing = 0
        for sensor in self.sensors:
            answered = self.answers.answered.get(sensor.src, {})
            first = min(answered, default=0)  # never answered: all of it
            missing += sum(1 for seq in sensor.due(start, end)
                           if seq >= first and seq not in answered)
        return missing

    def paired(self, key: str, attack: str, seconds: float,
               action: Callable[[Phase], None]) -> Result:
        baseline = self.phase("baseline", seconds)
        return Result(key, attack, baseline, self.phase("attack", seconds, action))

    # ---- the attacks -------------------------------------------------------------------

    def half_open(self) -> Result:
        hold = self.scale(3.0)

        def attack(phase: Phase) -> None:
            phase.http = as_client(lambda: flood(self.daemon.port, HALF_OPEN, PARTIAL, REST,
                                                 hold, 40.0, PACE_S))

        return self.paired("half-open", f"{HALF_OPEN:,} connections half-open for {hold:g} s, then "
                           "completed at once", hold + 2, attack)

    def near_limit(self) -> Result:
        hold = self.scale(8.0)

        def restart_and_reload(phase: Phase, clients: int) -> None:
            """The sensor restarts and a SIGHUP comes during ``hold``, with ``clients``
            half-open connections held meanwhile (the baseline: none)."""
            done: list[Counter[str]] = []
            held = threading.Thread(target=lambda: done.append(as_client(lambda: flood(
                self.daemon.port, clients, PARTIAL, b"", hold, 1.0, PACE_S))))
            held.start()
            time.sleep(min(2.0, hold / 4))
            self.sensors[-1].stop()
            restarted = Sensor(self.frames, f"sensor-{len(self.sensors)}")
            self.sensors.append(restarted)
            log0 = len(self.daemon.log())
            self.daemon.proc.send_signal(signal.SIGHUP)
            held.join()
            phase.http = done[0] - Counter()  # without the zero counts of no clients
            phase.notes.append(f"blind after the sensor restarted: {self.blind(restarted)}"
                               " (the pred gap includes the restart's own)")
            reload = re.findall(r"(reloaded [^\n]*|reload refused[^\n]*|[^\n]*Too many "
                                r"open files[^\n]*)", self.daemon.log()[log0:])
            said = reload[0][:100] if reload else "no reload logged"
            phase.notes.append(f"SIGHUP during the hold: {said}")

        baseline = self.phase("baseline", hold, lambda phase: restart_and_reload(phase, 0))
        return Result("near the fd limit",
                      f"{NEAR_LIMIT:,} half-open connections held {hold:g} s (the daemon's "
                      f"soft fd limit {NOFILE:,}) while the sensor restarts and a SIGHUP "
                      "comes; the baseline: the same restart and SIGHUP, no connections",
                      baseline, self.phase("attack", hold, lambda phase: restart_and_reload(
                          phase, NEAR_LIMIT)))

    def blind(self, sensor: Sensor, timeout_s: float = 20.0) -> str:
        """From the sensor's first frame to the first pred answering one of it."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            answered = self.answers.answered.get(sensor.src)
            if answered:
                return f"{min(answered.values()) - sensor.t0.value:.2f} s"
            time.sleep(0.05)
        return f"over {timeout_s:g} s (never answered while measured)"

    def scrapers(self) -> Result:
        seconds = self.scale(12.0)

        def attack(phase: Phase) -> None:
            phase.http = scrapers(self.daemon.port, SCRAPERS, seconds)  # at CLIENT_NICE
            total = sum(phase.http.values())
            phase.notes.append(f"{total / seconds:.0f} scrapes/s, {phase.http['200']} answered")

        return self.paired("4 scrapers",
                           f"{SCRAPERS} clients scraping back to back for {seconds:g} s",
                           seconds, attack)

    def oversized(self) -> Result:
        def attack(phase: Phase) -> None:
            def send_all() -> Counter[str]:
                # Half of them leave without reading the answer (the old server's
                # tracebacks: its error response met a reset).
                return Counter(request(self.daemon.port, raw, read=k % 2 == 0)
                               for raw in (LONG_LINE, MANY_HEADERS) for k in range(OVERSIZED))

            phase.http = as_client(send_all)

        return self.paired("oversized heads", f"{OVERSIZED} requests with a 70 kB header "
                           f"line, {OVERSIZED} with 101 headers", 2.0, attack)

    def concurrent(self) -> Result:
        def attack(phase: Phase) -> None:
            start = time.monotonic()
            phase.http = as_client(lambda: flood(
                self.daemon.port, CONCURRENT, b"GET /metrics HTTP/1.1\r\nHost: robot\r\n\r\n",
                b"", 0.0, 40.0))
            phase.notes.append(f"{phase.http['200']} of {CONCURRENT:,} answered in "
                               f"{time.monotonic() - start:.1f} s")

        return self.paired("1,000 concurrent scrapes", f"{CONCURRENT:,} concurrent scrapes,"
                           " 40 s for the answers", 5.0, attack)

    def close(self) -> tuple[int | None, bool]:
        code = self.daemon.close()
        self.peaks.stop.set()
        self.answers.stop.set()
        for sensor in self.sensors:
            sensor.stop()
        self.answers.join(5)
        self.ctx.destroy(linger=0)
        return code


def attacks(workdir: Path, quick: bool, figures: list[Figure], tree: Path = ROOT,
            label: str = "") -> list[Result]:
    """Every attack against the daemon of ``tree``; figures (named with ``label``) appended
    to ``figures``. Prints each result as it comes."""
    _raise_fd_limit()
    bench = Bench(workdir, tree, quick)
    results: list[Result] = []
    try:
        print(f"\n== the daemon of {label or 'this checkout'} (pid {bench.daemon.proc.pid}, "
              f"nice {bench.daemon.nice:+d}, soft fd limit {NOFILE}, exporter pid "
              f"{bench.daemon.exporter() or 'none: in the daemon'})")
        for attack in (bench.half_open, bench.near_limit, bench.scrapers, bench.oversized,
                       bench.concurrent):
            results.append(attack())
            results[-1].report()
            if bench.daemon.proc.poll() is not None:
                print("  the daemon died")
                break
    finally:
        code, left = bench.close()
    print(f"\nexit status {code} on SIGTERM; exporter left running: {'yes' if left else 'no'}")
    for result in results:
        figures.extend(_figures(result, label))
    return results


def _figures(result: Result, label: str) -> list[Figure]:
    """Ticks late + missed a minute and valid frames unanswered under ``result``'s attack,
    against its baseline; the daemon's open fds at most, against before."""
    suffix = f" ({label})" if label else ""
    base, under = result.baseline, result.under
    return [
        Figure.compare(f"metrics flood, {result.key}: ticks late + missed a minute at 1,000 "
                       f"frames/s{suffix}", 60 * (under.late + under.missed) / under.seconds,
                       "ticks/min", "no attack, just before",
                       60 * (base.late + base.missed) / base.seconds,
                       f"attack {under.seconds:.1f} s, baseline {base.seconds:.1f} s"),
        Figure.compare(f"metrics flood, {result.key}: valid frames unanswered{suffix}",
                       under.unanswered, "frames", "no attack, just before", base.unanswered),
        Figure.compare(f"metrics flood, {result.key}: the daemon's open fds at most{suffix}",
                       under.fds[1], "fds", "before the attack", under.fds[0]),
    ]


def _raise_fd_limit() -> None:
    """Our own clients need more than 1,024 sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard or hard == resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))


def extract(rev: str, into: Path) -> Path:
    """The source tree of commit ``rev``, written under ``into``."""
    tree = into / f"tree-{rev}"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a third of the durations")
    parser.add_argument("--before", metavar="REV",
                        help="also run the attacks against the daemon of commit REV")
    parser.add_argument("--json", type=Path, help="also write the headline figures here")
    args = parser.parse_args(argv)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="rd-metrics-", dir="/tmp") as tmp:
        now = Path(tmp) / "now"
        now.mkdir()
        attacks(now, args.quick, figures)
        if args.before:
            before = Path(tmp) / "before"
            before.mkdir()
            rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.before],
                                 check=True, capture_output=True, text=True).stdout.strip()
            attacks(before, args.quick, figures, extract(rev, Path(tmp)), f"commit {rev}")
    if args.json:
        write_json(args.json, "bench_metrics", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
