"""Frame -> ``pred`` latency with the tick grid fixed and with ``--tick-phase auto``
(issue 29), measured from a subscriber: how long after its send each frame's answer came.

    .venv/bin/python scripts/bench_phase.py [--runs 10] [--fixed-runs 5] [--frames 500]
        [--two-runs 3] [--drift-s 600] [--cost-rounds 3] [--cost-duration 3]
        [--only single two drift cost] [--json FIGURES.json]

1. **single**: a 50 Hz sensor; each run starts a daemon (20 ms ticks) and the sensor at a
   random phase. Per run: p50/p99 of the frames sent 2 s or more after the first
   (``--frames`` of them), how long after the first frame the answers settled (from
   there on, every 25 frames in a row: p50 within 2 ms, none over 5 ms), then the
   sensor restarts at another phase
   after 0.5 s of silence, and how long after that they settled again.
2. **two**: two sensors at 50 Hz, 10 ms apart in phase: each one's p50/p99.
3. **drift**: a sensor whose clock runs 200 ppm fast for ``--drift-s`` seconds
   (``auto`` only): p50/p99 after the first 2 s, frames answered twice, unanswered.
4. **cost**: the daemon at 1,000 and 96,000 frames/s (``bench_daemon``'s publisher:
   no ``src``, no stable phase), ``fixed`` and ``auto`` alternately in the same run:
   ticks over 1 ms, every frame answered, CPU per 1,000 frames.

The sensors are this process's main thread, sending on a drift-free schedule (sleeping
to 0.5 ms before a frame is due, then spinning); a second thread receives. Goals
(issue 29): with auto, p50 <= 2 ms and p99 <= 5 ms in every single run; with two
sensors, each one's p99 no worse than on the fixed grid; the drift run within the same
goals, nothing answered twice or lost; the cost unchanged within the run's noise.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_daemon import Daemon  # noqa: E402
from bench_tick import summary  # noqa: E402
from benchlib import Figure, terminate, write_json  # noqa: E402

from robot_daemon import wire  # noqa: E402

MODEL = ROOT / "models" / "default.npz"
PERIOD_NS = 20_000_000
#: Answers count from this long after the first frame (the goal: settled within 2 s).
SETTLE_NS = 2_000_000_000
#: Settled: every SETTLED_RUN frames in a row from then on have a p50 within SETTLED_MS
#: and none over MAX_MS (the goals' p50 and p99).
SETTLED_RUN = 25
SETTLED_MS = 2.0
MAX_MS = 5.0
#: A second sensor's frames are numbered from here: its seq never meets the first's.
SEQ_BLOCK = 1 << 40


@dataclass
class Sensor:
    """A 50 Hz sensor: frame k is due at ``first_ns + k * period_ns``; ``src`` its name
    (the phase lock tells sources apart by it)."""

    first_ns: int
    period_ns: int = PERIOD_NS
    seq0: int = 0
    src: str | None = None


@dataclass
class Answers:
    """What one run sent and got back."""

    sent: dict[int, int]  # seq -> send time (ns)
    got: dict[int, int]  # seq -> first pred received (ns)
    answered: Counter[int]  # seq -> preds that carried it
    status: dict[str, object]

    def latency_ms(self, seqs: Sequence[int]) -> np.ndarray:
        """The answered ones of ``seqs``: ms from send to answer, in order."""
        return np.array([(self.got[s] - self.sent[s]) / 1e6 for s in seqs if s in self.got])


class Run:
    """One daemon (``--tick-phase mode``) with our sensors' publisher and a subscriber."""

    def __init__(self, workdir: Path, mode: str) -> None:
        self.ctx = zmq.Context()
        frames_ep, pred_ep = f"ipc://{workdir}/f-{mode}", f"ipc://{workdir}/p-{mode}"
        self.pub = self.ctx.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(frames_ep)
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.connect(pred_ep)
        self.sub.subscribe(wire.TOPIC_PRED)
        self.sub.subscribe(wire.TOPIC_STATUS)
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "robot_daemon", "run", "--model", str(MODEL),
             "--frames", frames_ep, "--pred", pred_ep, "--tick-phase", mode,
             "--log-level", "WARNING"], stderr=subprocess.DEVNULL, cwd=ROOT)
        if not self.pub.poll(15_000):
            raise RuntimeError("the daemon did not subscribe")
        self.pub.recv()  # its subscription: no frame is lost to joining
        self.answers = Answers({}, {}, Counter(), {})
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        answers = self.answers
        while not self._done.is_set():
            if not self.sub.poll(50):
                continue
            topic, payload = self.sub.recv_multipart()
            now = time.monotonic_ns()
            if topic == wire.TOPIC_PRED:
                for seq in wire.decode_pred(payload).seq.tolist():
                    answers.got.setdefault(seq, now)
                    answers.answered[seq] += 1
            else:
                answers.status = wire.decode_status(payload)

    def send(self, sensors: Sequence[Sensor], frames: int, gap_ns: int = 0) -> int:
        """``frames`` frames of each sensor, after ``gap_ns`` of silence; frame numbers
        go on from the last call. Returns the first send's time."""
        x = np.zeros(16, np.float32)
        base = [len([s for s in self.answers.sent if s // SEQ_BLOCK == i])
                for i in range(len(sensors))]
        due = sorted((s.first_ns + gap_ns + (base[i] + k) * s.period_ns, s.seq0 + base[i] + k,
                      s.src) for i, s in enumerate(sensors) for k in range(frames))
        first = 0
        for at, seq, src in due:
            if (wait := at - time.monotonic_ns()) > 500_000:
                time.sleep((wait - 500_000) / 1e9)
            while time.monotonic_ns() < at:
                pass
            now = time.monotonic_ns()
            first = first or now
            self.answers.sent[seq] = now
            self.pub.send_multipart([wire.TOPIC_FRAME, wire.encode_frame(seq, seq / 50, x, src)])
        return first

    def close(self) -> Answers:
        time.sleep(0.5)  # the last answers
        self._done.set()
        self._thread.join()
        terminate(self.daemon)
        self.pub.close()
        self.sub.close()
        self.ctx.term()
        return self.answers


def settled_after(answers: Answers, seqs: Sequence[int], first_ns: int) -> float:
    """Seconds from ``first_ns`` to the first frame of ``seqs`` from which on every run of
    SETTLED_RUN frames meets the goals: p50 within SETTLED_MS, none over MAX_MS (inf:
    never)."""
    lat = np.array([(answers.got[s] - answers.sent[s]) / 1e6 if s in answers.got
                    else np.inf for s in seqs])
    good = [bool(np.median(lat[i:i + SETTLED_RUN]) <= SETTLED_MS
                 and lat[i:i + SETTLED_RUN].max() <= MAX_MS)
            for i in range(len(lat) - SETTLED_RUN + 1)]
    for i in range(len(good)):
        if all(good[i:]):
            return (answers.sent[seqs[i]] - first_ns) / 1e9
    return float("inf")


def single(workdir: Path, mode: str, frames: int, rng: random.Random) -> dict[str, float]:
    """One run of the single sensor; its figures."""
    run = Run(workdir, mode)
    try:
        start = time.monotonic_ns() + 200_000_000 + rng.randrange(PERIOD_NS)
        warm = SETTLE_NS // PERIOD_NS
        sensor = Sensor(start)
        first = run.send([sensor], warm + frames)
        restart_gap = 500_000_000 + rng.randrange(PERIOD_NS)  # silent, then another phase
        again = run.send([sensor], 200, restart_gap)
    finally:
        answers = run.close()
    lat = answers.latency_ms(range(warm, warm + frames))
    p50, p99 = np.percentile(lat, [50, 99])
    return {"p50": p50, "p99": p99, "answered": len(lat) / frames,
            "settle": settled_after(answers, range(warm + frames), first),
            "resettle": settled_after(answers, range(warm + frames, warm + frames + 200),
                                      again),
            "moves": float(answers.status.get("tick_moves", 0)),  # type: ignore[arg-type]
            "twice": float(sum(n > 1 for n in answers.answered.values()))}


def two(workdir: Path, mode: str, frames: int, rng: random.Random) -> list[tuple[float, float]]:
    """One run of two sensors 10 ms apart: each one's (p50, p99)."""
    run = Run(workdir, mode)
    try:
        start = time.monotonic_ns() + 200_000_000 + rng.randrange(PERIOD_NS)
        warm = SETTLE_NS // PERIOD_NS
        run.send([Sensor(start, src="front"),
                  Sensor(start + PERIOD_NS // 2, seq0=SEQ_BLOCK, src="rear")], warm + frames)
    finally:
        answers = run.close()
    out = []
    for seq0 in (0, SEQ_BLOCK):
        lat = answers.latency_ms(range(seq0 + warm, seq0 + warm + frames))
        p50, p99 = np.percentile(lat, [50, 99])
        out.append((float(p50), float(p99)))
    return out


def drift(workdir: Path, seconds: float, rng: random.Random) -> dict[str, float]:
    """A sensor 200 ppm fast for ``seconds`` (tick_phase auto)."""
    run = Run(workdir, "auto")
    n = int(seconds * 50)
    try:
        start = time.monotonic_ns() + 200_000_000 + rng.randrange(PERIOD_NS)
        run.send([Sensor(start, round(PERIOD_NS / (1 + 200e-6)))], n)
    finally:
        answers = run.close()
    warm = SETTLE_NS // PERIOD_NS
    lat = answers.latency_ms(range(warm, n))
    p50, p99 = np.percentile(lat, [50, 99])
    return {"p50": p50, "p99": p99, "max": float(lat.max()),
            "twice": float(sum(k > 1 for k in answers.answered.values())),
            "unanswered": float(n - len(answers.got)),
            "moves": float(answers.status.get("tick_moves", 0))}  # type: ignore[arg-type]


def cost(workdir: Path, rounds: int, duration: float) -> dict[tuple[str, int], dict[str, float]]:
    """fixed and auto alternately at 1,000 and 96,000 frames/s: bench_tick's summary per
    (mode, rate), plus whether every trial answered every frame with no problem."""
    daemons = {mode: Daemon(workdir, MODEL, name=f"-{mode}", args=("--tick-phase", mode))
               for mode in ("fixed", "auto")}
    out: dict[tuple[str, int], dict[str, float]] = {}
    try:
        for rate in (1000, 96_000):
            for r in range(rounds):
                for mode in (("fixed", "auto") if r % 2 == 0 else ("auto", "fixed")):
                    trial = daemons[mode].trial(rate, duration)
                    problems = [f"{k} {v}" for k, v in trial.counters.items() if v]
                    print(f"  {rate:>6,} frames/s round {r + 1} {mode:5}: tick p99 "
                          f"{trial.tick_ms[1]:.3f} ms, CPU/1,000 frames "
                          f"{trial.cpu_ms_per_1000:.1f} ms, answered {trial.answered}/"
                          f"{trial.sent}, problems: {', '.join(problems) or 'none'}",
                          flush=True)
            for mode, daemon in daemons.items():
                trials = [t for t in daemon.trials if t.rate == rate]
                out[mode, rate] = {**summary(trials), "clean": float(all(
                    t.clean for t in trials))}
    finally:
        for daemon in daemons.values():
            daemon.close()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="single-sensor runs with auto")
    parser.add_argument("--fixed-runs", type=int, default=5)
    parser.add_argument("--frames", type=int, default=500, help="frames measured per run")
    parser.add_argument("--two-runs", type=int, default=3)
    parser.add_argument("--drift-s", type=float, default=600.0)
    parser.add_argument("--cost-rounds", type=int, default=3)
    parser.add_argument("--cost-duration", type=float, default=3.0)
    parser.add_argument("--only", nargs="+", default=["single", "two", "drift", "cost"],
                        choices=["single", "two", "drift", "cost"])
    parser.add_argument("--json", type=Path, help="also write the headline figures here")
    args = parser.parse_args(argv)
    rng = random.Random()
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="rd-phase-") as tmp:
        workdir = Path(tmp)
        if "single" in args.only:
            figures += _single(workdir, args, rng)
        if "two" in args.only:
            figures += _two(workdir, args, rng)
        if "drift" in args.only:
            figures += _drift(workdir, args, rng)
        if "cost" in args.only:
            figures += _cost(workdir, args)
    if args.json:
        write_json(args.json, "bench_phase", figures)
    return 0


def _single(workdir: Path, args: argparse.Namespace, rng: random.Random) -> list[Figure]:
    print(f"one 50 Hz sensor, 20 ms ticks, each run at a random phase: {args.frames} frames "
          "from 2 s after the first, then the sensor restarts at another phase", flush=True)
    runs: dict[str, list[dict[str, float]]] = {}
    for mode, n in (("fixed", args.fixed_runs), ("auto", args.runs)):
        runs[mode] = []
        for i in range(n):
            r = single(workdir, mode, args.frames, rng)
            runs[mode].append(r)
            print(f"  {mode:5} run {i + 1:2}: p50 {r['p50']:5.2f} ms, p99 {r['p99']:5.2f} ms,"
                  f" answered {r['answered']:.1%}, settled {r['settle']:.2f} s after the"
                  f" first frame, {r['resettle']:.2f} s after a restart; grid moves"
                  f" {r['moves']:.0f}, frames answered twice {r['twice']:.0f}", flush=True)
    worst = {m: {k: max(r[k] for r in rs) for k in ("p50", "p99", "settle", "resettle",
                                                      "twice")}
             for m, rs in runs.items()}
    for mode, w in worst.items():
        print(f"  {mode:5} worst run: p50 {w['p50']:.2f} ms, p99 {w['p99']:.2f} ms, settled"
              f" {w['settle']:.2f} s, after a restart {w['resettle']:.2f} s", flush=True)
    if not runs["auto"] or not runs["fixed"]:
        return []
    a, f = worst["auto"], worst["fixed"]
    never = {k: sum(r[k] == np.inf for r in runs["auto"]) for k in ("settle", "resettle")}
    settled = {k: max([r[k] for r in runs["auto"] if r[k] != np.inf] or [0.0])
               for k in never}
    base = f"tick_phase fixed, worst of {len(runs['fixed'])} runs"
    return [
        Figure.compare(f"50 Hz sensor, frame -> pred p50, worst of {len(runs['auto'])} runs "
                       "at random phases, tick_phase auto", a["p50"], "ms", base, f["p50"],
                       "goal: <= 2 ms in every run"),
        Figure.compare(f"50 Hz sensor, frame -> pred p99, worst of {len(runs['auto'])} runs, "
                       "tick_phase auto", a["p99"], "ms", base, f["p99"],
                       "goal: <= 5 ms in every run"),
        Figure.compare("tick_phase auto: settled after the first frame (from then on every 25 "
                       "frames: p50 <= 2 ms, none over 5 ms), worst run that settled",
                       settled["settle"], "s", None, None,
                       f"goal: within 2 s; runs that never settled: {never['settle']}"),
        Figure.compare("tick_phase auto: settled again after a sensor restart at another "
                       "phase, worst run that settled", settled["resettle"], "s", None, None,
                       f"runs that never settled: {never['resettle']}"),
        Figure.compare("tick_phase auto: frames answered twice, all runs",
                       sum(r["twice"] for r in runs["auto"]), "frames"),
    ]


def _two(workdir: Path, args: argparse.Namespace, rng: random.Random) -> list[Figure]:
    print("two 50 Hz sensors, 10 ms apart in phase: each one's p50/p99", flush=True)
    worst = {"fixed": 0.0, "auto": 0.0}  # the worse sensor's p99, worst run
    for mode in worst:
        for i in range(args.two_runs):
            both = two(workdir, mode, args.frames, rng)
            print(f"  {mode:5} run {i + 1}: " + ", ".join(
                f"sensor {k + 1} p50 {p50:5.2f} ms p99 {p99:5.2f} ms"
                for k, (p50, p99) in enumerate(both)), flush=True)
            worst[mode] = max(worst[mode], *(p99 for _, p99 in both))
    a, f = worst["auto"], worst["fixed"]
    print(f"  worst sensor's p99: auto {a:.2f} ms, fixed {f:.2f} ms", flush=True)
    return [Figure.compare(f"two 50 Hz sensors 10 ms apart: the worse one's p99, worst of "
                           f"{args.two_runs} runs, tick_phase auto", a, "ms",
                           f"tick_phase fixed, {args.two_runs} runs", f,
                           "goal: ratio <= 1; one answered at once, the other 10 ms later")]


def _drift(workdir: Path, args: argparse.Namespace, rng: random.Random) -> list[Figure]:
    print(f"a sensor 200 ppm fast for {args.drift_s:.0f} s, tick_phase auto", flush=True)
    d = drift(workdir, args.drift_s, rng)
    print(f"  p50 {d['p50']:.2f} ms, p99 {d['p99']:.2f} ms, max {d['max']:.2f} ms; grid "
          f"moves {d['moves']:.0f}; answered twice {d['twice']:.0f}, unanswered "
          f"{d['unanswered']:.0f}", flush=True)
    what = f"sensor 200 ppm fast for {args.drift_s:.0f} s, tick_phase auto"
    return [Figure.compare(f"{what}: frame -> pred p50", d["p50"], "ms", None, None,
                           "goal: <= 2 ms"),
            Figure.compare(f"{what}: frame -> pred p99", d["p99"], "ms", None, None,
                           "goal: <= 5 ms"),
            Figure.compare(f"{what}: frames answered twice or never", d["twice"]
                           + d["unanswered"], "frames", None, None, "goal: 0")]


def _cost(workdir: Path, args: argparse.Namespace) -> list[Figure]:
    print(f"the cost at high rates (no stable phase), fixed and auto alternately, "
          f"{args.cost_rounds} rounds of {args.cost_duration:.0f} s", flush=True)
    c = cost(workdir, args.cost_rounds, args.cost_duration)
    figures = []
    for rate in (1000, 96_000):
        f, a = c["fixed", rate], c["auto", rate]
        print(f"  {rate:>6,} frames/s: ticks over 1 ms fixed {f['over_1']:.2f} % auto "
              f"{a['over_1']:.2f} %; CPU per 1,000 frames fixed {f['cpu']:.1f} ms auto "
              f"{a['cpu']:.1f} ms; every trial clean: fixed {bool(f['clean'])} auto "
              f"{bool(a['clean'])}", flush=True)
        base = f"tick_phase fixed, paired, {args.cost_rounds} runs"
        figures += [
            Figure.compare(f"daemon CPU per 1,000 frames at {rate:,} frames/s, tick_phase "
                           "auto", a["cpu"], "ms", base, f["cpu"], "goal: ratio ~1"),
            Figure.compare(f"ticks over 1 ms at {rate:,} frames/s, tick_phase auto",
                           a["over_1"], "%", base, f["over_1"],
                           "every trial clean (every frame answered; no drop, missed tick"
                           f" or overrun): {bool(a['clean'])} (fixed: {bool(f['clean'])})"),
        ]
    return figures


if __name__ == "__main__":
    sys.exit(main())
