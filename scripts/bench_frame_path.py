"""Time each stage of the daemon's per-frame path, in process, over pre-built payloads.

    .venv/bin/python scripts/bench_frame_path.py [--n 200000] [--repeat 5] [--batch 1600]

Prints the best of ``--repeat`` passes, in microseconds per frame, of every stage a valid
frame goes through between ticks (``robot-daemon run``'s ``_drain``), each timed alone in
a loop over ``--n`` payloads like ``scripts/bench_daemon.py``'s (d = 16, no ``src``), then
the whole path as the daemon runs it (socket to ring), then a tick's per-frame share at
``--batch`` frames a tick (1,600: 80,000 frames/s at 20 ms ticks). A loop's own cost
(about 0.01 us) is included in each figure. Messages come from an inproc PAIR socket
filled before the timed pass, so the figures leave out the publisher and the kernel:
they say where the daemon's CPU goes, which ``bench_daemon.py`` cannot.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robot_daemon.serve.daemon import SERVING_ENV  # noqa: E402

os.environ.update(SERVING_ENV)  # before NumPy loads BLAS: the daemon's one thread

import msgpack  # noqa: E402
import numpy as np  # noqa: E402
import zmq  # noqa: E402

from robot_daemon import config, wire  # noqa: E402
from robot_daemon.serve import daemon, report  # noqa: E402
from robot_daemon.serve.batch import PendingFrames  # noqa: E402
from robot_daemon.serve.intake import HOLD_MAX, FrameIntake  # noqa: E402
from robot_daemon.serve.liveness import Liveness  # noqa: E402
from robot_daemon.serve.sequence import SeqTracker  # noqa: E402
from robot_daemon.wire.decode import usual_frame  # noqa: E402
from robot_daemon.wire.layout import usual_frames  # noqa: E402
from robot_daemon.zmq_io import receive  # noqa: E402

D = 16
#: Far enough away that no drain stops at it, yet read as the daemon reads its deadline.
NEVER_NS = 10**18

Pass = Callable[[list[bytes]], None]


def payloads(n: int) -> list[bytes]:
    """``n`` frame payloads as bench_daemon's publisher packs them (seq 0..n-1)."""
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(D).astype("<f4").tobytes() for _ in range(256)]
    t0 = time.time()
    return [msgpack.packb({"seq": s, "t": t0 + s * 1e-5, "x": xs[s & 255]}) for s in range(n)]


def best_us(run: Pass, items: list[bytes], repeat: int,
            setup: Callable[[], None] | None = None) -> float:
    """Best of ``repeat`` passes of ``run(items)``, in us per item; ``setup`` is untimed."""
    best = float("inf")
    for _ in range(repeat):
        if setup is not None:
            setup()
        start = time.perf_counter_ns()
        run(items)
        best = min(best, time.perf_counter_ns() - start)
    return best / len(items) / 1e3


def stage_passes(d: daemon.Daemon) -> list[tuple[str, Pass]]:
    """The stages timed alone: (name, a pass over the payloads)."""
    frame = wire.decode_frame_raw(payloads(1)[0], D)
    seqs, live = SeqTracker(), Liveness(["ipc://x"], 10**9, 0)
    ring = PendingFrames(65_536, D)
    counters = report.Counters()
    clock = time.monotonic_ns
    unpackb, decode, usual = msgpack.unpackb, wire.decode_frame_raw, usual_frame

    def loop(items: list[bytes]) -> None:
        for _ in items:
            pass

    def monotonic(items: list[bytes]) -> None:
        for _ in items:
            clock()

    def unpack(items: list[bytes]) -> None:
        for p in items:
            unpackb(p)

    def unpack_limits(items: list[bytes]) -> None:
        for p in items:
            unpackb(p, raw=False, strict_map_key=True, use_list=True, max_str_len=256,
                    max_bin_len=16384, max_array_len=4096, max_map_len=8, max_ext_len=0,
                    ext_hook=_ext)

    def decode_raw(items: list[bytes]) -> None:
        for p in items:
            decode(p, D)

    def decode_usual(items: list[bytes]) -> None:
        for p in items:
            usual(p, D)

    def decode_held(items: list[bytes]) -> None:
        for i in range(0, len(items), HOLD_MAX):  # as the intake flushes them
            usual_frames(items[i:i + HOLD_MAX], D)

    def observe(items: list[bytes]) -> None:
        for seq, _ in enumerate(items):
            seqs.observe(0, None, seq)

    def heard(items: list[bytes]) -> None:
        for seq, _ in enumerate(items):
            live.heard(0, None, seq)

    def add(items: list[bytes]) -> None:
        for seq, _ in enumerate(items):
            ring.add(frame, seq)

    def count(items: list[bytes]) -> None:
        for _ in items:
            counters.frames_in += 1
            counters.frames_accepted += 1
            counters.frames_dropped += False

    def full_path(items: list[bytes]) -> None:
        handle = _full_path(d)
        topic = wire.TOPIC_FRAME
        for p in items:
            handle([topic, p], 2)

    return [("empty loop", loop), ("time.monotonic_ns()", monotonic),
            ("msgpack.unpackb, no limits", unpack),
            ("msgpack.unpackb with the limits", unpack_limits),
            ("wire.decode_frame_raw", decode_raw),
            ("wire.decode.usual_frame (one)", decode_usual),
            (f"wire.layout.usual_frames ({HOLD_MAX} at once)", decode_held),
            ("SeqTracker.observe", observe),
            ("Liveness.heard", heard), ("PendingFrames.add", add),
            ("Counters: 3 increments", count),
            ("FrameIntake.message: the full path", full_path)]


def _full_path(d: daemon.Daemon) -> receive.Handler:
    """The daemon's full path for one message (``FrameIntake.message``) into its ring,
    counters and trackers; no socket: the caller hands it the parts."""
    return FrameIntake(None, 0, d._arrivals).message  # type: ignore[arg-type]


def _ext(code: int, data: bytes) -> None:
    raise ValueError(code)


class Pair:
    """An inproc PAIR connection without high-water marks: ``fill`` queues the payloads."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
        self.rx, self.tx = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        for sock in (self.rx, self.tx):
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.setsockopt(zmq.RCVHWM, 0)
            sock.setsockopt(zmq.LINGER, 0)
        self.rx.bind("inproc://frames")
        self.tx.connect("inproc://frames")
        self.items: list[bytes] = []

    def fill(self) -> None:
        send = self.tx.send_multipart
        for p in self.items:
            send([wire.TOPIC_FRAME, p])

    def close(self) -> None:
        self.rx.close()
        self.tx.close()


def socket_passes(d: daemon.Daemon, pair: Pair) -> list[tuple[str, Pass]]:
    """The stages that read the socket (it must be filled before each)."""
    rx = pair.rx

    def recv_multipart(items: list[bytes]) -> None:
        recv = rx.recv_multipart
        for _ in items:
            recv()

    def receiver(items: list[bytes]) -> None:
        receive.Receiver(rx, _ignore).drain(None)

    def full_path(items: list[bytes]) -> None:
        receive.drain_each([receive.Receiver(rx, _full_path(d))], NEVER_NS)

    def daemon_drain(items: list[bytes]) -> None:
        d._drain([rx], NEVER_NS)

    return [("recv_multipart (bare transport's)", recv_multipart),
            ("receive.Receiver, a no-op handler", receiver),
            ("socket to ring, the full path for all", full_path),
            ("Daemon._drain: socket to ring (intake)", daemon_drain)]


def _ignore(parts: list[bytes], count: int) -> None:
    pass


def tick_share(d: daemon.Daemon, items: list[bytes], batch: int, repeat: int) -> None:
    """A tick's work per frame at ``batch`` frames: take the ring, forward, encode, as
    ``Daemon._tick``/``_serve`` do (the tick itself is timed by bench_daemon)."""
    ring, model = PendingFrames(batch, D), d.served.model
    frames = [wire.decode_frame_raw(p, D) for p in items[:batch]]
    times: dict[str, float] = {"PendingFrames.take": 1e9, "predict_proba": 1e9,
                               "wire.encode_pred": 1e9}
    for _ in range(repeat):
        for i, frame in enumerate(frames):
            ring.add(frame, i)
        t0 = time.perf_counter_ns()
        got = ring.take()
        t1 = time.perf_counter_ns()
        P = model.predict_proba(got.X).astype(np.float32, copy=False)
        t2 = time.perf_counter_ns()
        wire.encode_pred(1, 0.0, got.seq, P, "m", t_frame=got.t, src=got.src)
        t3 = time.perf_counter_ns()
        for name, ns in zip(times, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            times[name] = min(times[name], ns / batch / 1e3)
    for name, us in times.items():
        print(f"  {name:40s} {us:6.3f} us/frame")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="payloads per pass")
    parser.add_argument("--repeat", type=int, default=5, help="passes; the best is printed")
    parser.add_argument("--batch", type=int, default=1600, help="frames per tick")
    args = parser.parse_args()
    items = payloads(args.n)
    with tempfile.TemporaryDirectory(prefix="rd-path-") as workdir, \
            zmq.Context() as ctx:
        d = daemon.Daemon(config.load(None, {
            "model": str(ROOT / "models" / "default.npz"), "frames": [f"ipc://{workdir}/f"],
            "pred": f"ipc://{workdir}/p", "max_batch": 65_536}))
        pair = Pair(ctx)
        pair.items = items
        gc.collect()
        gc.freeze()  # as the daemon does once it has loaded
        print(f"{args.n:,} frame payloads of {len(items[0])} bytes (d = {D}), best of "
              f"{args.repeat} passes, us per frame; python {sys.version.split()[0]}, "
              f"msgpack {'.'.join(map(str, msgpack.version))}, pyzmq {zmq.__version__}")
        print("each stage alone:")
        for name, run in stage_passes(d):
            print(f"  {name:40s} {best_us(run, items, args.repeat):6.3f}")
        print("from the socket (an inproc PAIR filled before each pass):")
        try:
            for name, run in socket_passes(d, pair):
                us = best_us(run, items, args.repeat, pair.fill)
                print(f"  {name:40s} {us:6.3f}")
                d._pending.take()  # as a tick would: the ring keeps at most max_batch
        finally:
            pair.close()
        assert d.counters.frames_rejected == {}, d.counters.frames_rejected
        print(f"a tick's share at {args.batch} frames a tick:")
        tick_share(d, items, args.batch, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
