"""Benchmark ``bag play``: timing error at 50 Hz and throughput at ``--rate 0``.

Usage::

    python scripts/bench_bag.py [--seconds 20] [--n 200000] [--endpoint tcp://127.0.0.1:PORT]
        [--json PATH]

Both measurements run the real player (``python -m robot_daemon bag play``) in a child
process and a SUB socket in this one, over loopback TCP by default.

- Timing: a synthetic 50 Hz bag (frame every 20 ms of recorded receive time) is played at
  ``--rate 1``. For each message, the *schedule error* is its arrival time minus its
  recorded time, less the median of that difference (the fixed latency of the path);
  the *interval error* is each inter-arrival gap minus the recorded 20 ms; the *drift*
  is how much later the last tenth of the bag arrives than the first tenth, relative to
  the recording (it would grow with the bag if deadlines accumulated error). p50/p99 of
  the absolute errors in µs.
- Noise floor: the same percentiles of ``time.sleep(19.7 ms)`` overshoot on this
  machine, measured just before; a player cannot beat its scheduler.
- Throughput: a bag of ``--n`` frames is played at ``--rate 0``; the subscriber counts
  every message (none may be lost) and the rate is taken between the first and last
  arrival. Beside it, the bare transport: a process that sends the same frames, encoded
  beforehand, from a lossless XPUB socket, and nothing else: what no player can beat.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import zmq
from benchlib import Figure, write_json

from robot_daemon import wire
from robot_daemon.bag import BagMeta, BagWriter, seconds_to_ns

T0_NS = 1_764_000_000_000_000_000
D = 16


def _free_tcp_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _frames(n: int, gap_ns: int) -> list[bytes]:
    x = np.random.default_rng(0).normal(size=(n, D)).astype(np.float32)
    return [wire.encode_frame(i, i * gap_ns / 1e9, x[i]) for i in range(n)]


def _write_bag(path: Path, n: int, gap_ns: int) -> None:
    with BagWriter(path, meta=BagMeta(d=D)) as bag:
        for i, payload in enumerate(_frames(n, gap_ns)):
            bag.write("frame", payload, T0_NS + i * gap_ns, seconds_to_ns(i * gap_ns / 1e9))


def _bare_publish(endpoint: str, n: int) -> None:
    """The player's baseline (a child process): the same frames from a lossless XPUB."""
    payloads = _frames(n, 1_000)
    with zmq.Context() as ctx, ctx.socket(zmq.XPUB) as pub:
        pub.setsockopt(zmq.XPUB_NODROP, 1)
        pub.setsockopt(zmq.SNDHWM, 1_000)  # as the player at --rate 0
        pub.bind(endpoint)
        pub.recv()  # the subscription
        for payload in payloads:
            pub.send_multipart([wire.TOPIC_FRAME, payload])


@contextlib.contextmanager
def _player(bag: Path, endpoint: str, rate: str) -> Iterator[subprocess.Popen[bytes]]:
    cmd = [sys.executable, "-m", "robot_daemon", "bag", "play", str(bag), "--bind", endpoint]
    proc = subprocess.Popen(
        [*cmd, "--rate", rate, "--wait-subscribers", "1"], stdout=subprocess.DEVNULL
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def _receive(endpoint: str, n: int) -> np.ndarray:
    """Arrival times (monotonic ns) of ``n`` messages; raises if any is lost."""
    arrivals = np.empty(n, dtype=np.int64)
    with zmq.Context() as ctx, ctx.socket(zmq.SUB) as sub:
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.RCVTIMEO, 30_000)
        sub.connect(endpoint)
        for i in range(n):
            sub.recv_multipart()
            arrivals[i] = time.monotonic_ns()
    return arrivals


def _percentiles_us(errors_ns: np.ndarray) -> tuple[float, float]:
    p50, p99 = np.percentile(np.abs(errors_ns), [50, 99]) / 1e3
    return float(p50), float(p99)


def _p50_p99_us(errors_ns: np.ndarray) -> str:
    p50, p99 = _percentiles_us(errors_ns)
    return f"p50 {p50:7.1f} µs   p99 {p99:7.1f} µs   max {np.abs(errors_ns).max() / 1e3:7.1f} µs"


def bench_timing(tmp: Path, endpoint: str, seconds: float) -> tuple[float, float]:
    """Prints the errors; returns the schedule error's (p50, p99) in µs."""
    gap_ns = 20_000_000
    n = int(seconds * 50)
    bag = tmp / "50hz.mcap"
    _write_bag(bag, n, gap_ns)
    with _player(bag, endpoint, "1"):
        arrivals = _receive(endpoint, n)
    recorded = np.arange(n, dtype=np.int64) * gap_ns
    offset = arrivals - arrivals[0] - recorded
    schedule = offset - np.median(offset)
    interval = np.diff(arrivals) - gap_ns
    tenth = max(1, n // 10)
    # Medians of the first and last tenth: robust to the scheduler's occasional hiccups.
    drift = np.median(offset[-tenth:]) - np.median(offset[:tenth])
    print(f"timing, 50 Hz, {n} messages, {seconds:g} s, --rate 1:")
    print(f"  schedule error  {_p50_p99_us(schedule)}")
    print(f"  interval error  {_p50_p99_us(interval)}")
    print(f"  drift           {drift / 1e3:+.1f} µs from the first to the last tenth of the bag")
    return _percentiles_us(schedule)


def bench_noise_floor(samples: int = 250) -> tuple[float, float]:
    """Prints the overshoot; returns its (p50, p99) in µs."""
    overshoot = np.empty(samples, dtype=np.int64)
    for i in range(samples):
        t = time.monotonic_ns()
        time.sleep(0.0197)
        overshoot[i] = time.monotonic_ns() - t - 19_700_000
    print(f"noise floor, time.sleep(19.7 ms) overshoot: {_p50_p99_us(overshoot)}")
    return _percentiles_us(overshoot)


def _rate(arrivals: np.ndarray) -> float:
    return (len(arrivals) - 1) / ((arrivals[-1] - arrivals[0]) / 1e9)


def bench_throughput(tmp: Path, endpoint: str, n: int) -> float:
    """Prints the player's rate beside the bare transport's; returns the player's."""
    bag = tmp / "burst.mcap"
    _write_bag(bag, n, 1_000)
    with _player(bag, endpoint, "0"):
        played = _rate(_receive(endpoint, n))
    print(f"throughput, --rate 0, {n} frames of d={D}: {played:,.0f} messages/s received")
    print("  (every message arrived: the subscriber counted all of them)")
    return played


def bench_bare_transport(endpoint: str, n: int) -> float:
    """Messages/s from :func:`_bare_publish` in a child process to our subscriber."""
    proc = mp.Process(target=_bare_publish, args=(endpoint, n))
    proc.start()
    try:
        bare = _rate(_receive(endpoint, n))
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    print(f"bare transport, the same {n} frames from a process with nothing else to do:"
          f" {bare:,.0f} messages/s")
    return bare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="50 Hz bag length")
    parser.add_argument("--n", type=int, default=200_000, help="messages for throughput")
    parser.add_argument("--endpoint", help="default: a free loopback TCP port")
    parser.add_argument("--json", type=Path, help="also write the headline figures here")
    args = parser.parse_args()
    floor = bench_noise_floor()
    with tempfile.TemporaryDirectory() as tmp:
        schedule = bench_timing(Path(tmp), args.endpoint or _free_tcp_endpoint(), args.seconds)
        played = bench_throughput(Path(tmp), args.endpoint or _free_tcp_endpoint(), args.n)
    bare = bench_bare_transport(args.endpoint or _free_tcp_endpoint(), args.n)
    if args.json:
        sleep = "time.sleep overshoot on this machine"
        write_json(args.json, "bench_bag", [
            Figure.compare(f"bag play at 50 Hz, schedule error p{p}", schedule[i], "us",
                           f"{sleep}, p{p}", floor[i], f"{args.seconds:g} s bag, --rate 1")
            for i, p in enumerate((50, 99))
        ] + [
            Figure.compare(f"bag play --rate 0 throughput, {args.n:,} frames, none lost", played,
                           "messages/s", "bare ZeroMQ transport of the same frames", bare),
        ])


if __name__ == "__main__":
    main()
