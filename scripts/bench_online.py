"""Benchmark online learning: the guarded step, a checkpoint save, and late ticks under load.

    .venv/bin/python scripts/bench_online.py [--duration 10] [--frame-rate 1000]
        [--label-rate 100] [--online-batch 100] [--steps 300] [--labels 50000] [--json PATH]

Prints, on this machine and in this run:

1. **in process**, on the default model (h = 64) with simulated labels: the time of one
   guarded :meth:`OnlineLearner.step` (screen, replay draw, SGD, holdout check) beside a
   bare ``single_step_sgd`` on the same batch size, each bare step right after a guarded
   one (paired), and of one checkpoint save (fsync);
   and the label channel's throughput over loopback TCP, plain and with CURVE;
2. **the real daemon** (20 ms ticks), fed ``--frame-rate`` frames/s and ``--label-rate``
   labels/s by a publisher process, once without ``--online`` and once with it (and
   checkpoints every 2 s): ticks, late and missed ticks, the worst tick p99 and wake-up
   lateness over the run, and the steps taken and deferred.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq
from benchlib import Figure, write_json
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robot_daemon import model as model_file  # noqa: E402
from robot_daemon import sim, wire  # noqa: E402
from robot_daemon.learn.checkpoints import CheckpointStore  # noqa: E402
from robot_daemon.learn.learner import OnlineConfig, OnlineLearner  # noqa: E402

DEFAULT_MODEL = ROOT / "models" / "default.npz"


def _ms(ns: list[int]) -> str:
    a = np.asarray(ns) / 1e6
    return f"p50 {np.percentile(a, 50):.3f} ms, p99 {np.percentile(a, 99):.3f} ms"


def _p50_ms(ns: list[int]) -> float:
    return float(np.percentile(ns, 50)) / 1e6


def in_process(data: sim.SimData, batch: int, steps: int) -> dict[str, float]:
    """Prints the guarded and the bare step's timings, paired; returns their p50s in ms
    (``guarded``, ``bare``)."""
    learner = OnlineLearner(model_file.load(DEFAULT_MODEL), OnlineConfig(batch_size=batch))
    mlp = model_file.load(DEFAULT_MODEL).mlp  # the bare step's own copy of the weights
    X = learner.model.normalize(data.X[:batch])
    Y = data.Y[:batch].astype(mlp.dtype)
    durations, bare, reasons = [], [], []
    i = 0
    while len(durations) < steps and i < data.n:
        learner.add(wire.Label(i, float(data.t[i]), data.X[i], data.Y[i]))
        i += 1
        if learner.ready():
            result = learner.step()
            durations.append(result.duration_ns)
            reasons.append(result.reason)
            # Paired: each guarded step, then a bare one, so that the machine's drift
            # within the run falls on both alike.
            start = time.monotonic_ns()
            mlp.single_step_sgd(X, Y, lr=0.1)
            bare.append(time.monotonic_ns() - start)
    accepted = sum(r is None for r in reasons)
    print(f"guarded step (batch {batch}, h=64, holdout on): {_ms(durations)}"
          f" over {len(durations)} steps ({accepted} accepted)")
    print(f"bare single_step_sgd (batch {batch}), each right after a guarded one: {_ms(bare)}")
    return {"guarded": _p50_ms(durations), "bare": _p50_ms(bare)}


def checkpoint_saves() -> float:
    """Prints the time of one checkpoint save of the default model; returns its p50 in ms."""
    model = model_file.load(DEFAULT_MODEL)
    with tempfile.TemporaryDirectory() as tmp:
        store = CheckpointStore(tmp, keep=5)
        saves = []
        for version in range(1, 51):
            start = time.monotonic_ns()
            store.save(model, version)
            saves.append(time.monotonic_ns() - start)
    print(f"checkpoint save (atomic, fsync):              {_ms(saves)}")
    return _p50_ms(saves)


def label_throughput(n: int, curve: bool) -> float:
    """Labels/s through one PUB -> SUB pair over loopback TCP, decoded, with or without CURVE."""
    import zmq.auth

    from robot_daemon.learn import keys

    data = sim.simulate(n / 20.0, 20.0, seed=1)
    payloads = [wire.encode_label(i, float(data.t[i]), data.X[i], data.Y[i]) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp, zmq.Context() as ctx, \
            ctx.socket(zmq.XPUB) as pub, ctx.socket(zmq.SUB) as sub:
        pub.setsockopt(zmq.XPUB_NODROP, 1)
        pub.setsockopt(zmq.SNDHWM, 0)
        if curve:
            server, client = keys.generate(tmp, "server"), keys.generate(tmp, "client")
            keys.curve_server(sub, server.secret)
            pub.curve_publickey, pub.curve_secretkey = zmq.auth.load_certificate(client.secret)
            pub.curve_serverkey = zmq.auth.load_certificate(server.public)[0]
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        sub.subscribe(wire.TOPIC_LABEL)
        sub.connect(f"tcp://127.0.0.1:{port}")
        pub.recv()  # the subscription: connected (and handshake done)
        start = time.monotonic_ns()
        for payload in payloads:
            pub.send_multipart([wire.TOPIC_LABEL, payload])
            if sub.poll(0):
                while sub.poll(0):
                    wire.decode_label(sub.recv_multipart()[1])
                    n -= 1
        while n:
            wire.decode_label(sub.recv_multipart()[1])
            n -= 1
        return len(payloads) / ((time.monotonic_ns() - start) / 1e9)


def publish(frames_ep: str, labels_ep: str, frame_rate: float, label_rate: float,
            duration: float, ready: Any) -> None:
    """Publisher process: frames and labels on a drift-free schedule for ``duration`` s."""
    data = sim.simulate(duration + 5, 20.0, seed=3, calibration_drift=1.0)
    with zmq.Context() as ctx, ctx.socket(zmq.PUB) as fpub, ctx.socket(zmq.PUB) as lpub:
        for sock, ep in ((fpub, frames_ep), (lpub, labels_ep)):
            sock.setsockopt(zmq.SNDHWM, 100_000)
            sock.bind(ep)
        ready.set()
        time.sleep(1.0)  # the daemon connects
        every = max(1, round(frame_rate / label_rate))
        period_ns = round(1e9 / frame_rate)
        start = time.monotonic_ns()
        n = round(duration * frame_rate)
        for k in range(n):
            wait = start + k * period_ns - time.monotonic_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
            j = k % data.n
            x = data.X[j]
            fpub.send_multipart([wire.TOPIC_FRAME, wire.encode_frame(k, time.time(), x)])
            if k % every == 0:
                lpub.send_multipart([wire.TOPIC_LABEL,
                                     wire.encode_label(k, time.time(), x, data.Y[j])])


def daemon_run(workdir: Path, args: argparse.Namespace, online: bool) -> dict[str, Any]:
    frames_ep, labels_ep = f"ipc://{workdir}/frames", f"ipc://{workdir}/labels"
    pred_ep = f"ipc://{workdir}/pred"
    cmd = [sys.executable, "-m", "robot_daemon", "run", "--model", str(DEFAULT_MODEL),
           "--frames", frames_ep, "--labels", labels_ep, "--pred", pred_ep,
           "--status-interval", "1", "--log-level", "WARNING"]
    if online:
        cmd += ["--online", "--online-batch", str(args.online_batch),
                "--checkpoint-dir", str(workdir / "ckpt"), "--checkpoint-every-s", "2"]
    ready = mp.Event()
    pub = mp.Process(target=publish, args=(frames_ep, labels_ep, args.frame_rate,
                                           args.label_rate, args.duration, ready))
    pub.start()
    ready.wait()
    proc = subprocess.Popen(cmd, cwd=ROOT)
    worst: dict[str, float] = {"tick_ms_p99": 0.0, "wake_late_ms_max": 0.0}
    last: dict[str, Any] = {}
    try:
        with zmq.Context() as ctx, ctx.socket(zmq.SUB) as sub:
            sub.connect(pred_ep)
            sub.subscribe(wire.TOPIC_STATUS)
            deadline = time.monotonic() + args.duration + 2.5
            while time.monotonic() < deadline:
                if sub.poll(200):
                    status = wire.decode_status(sub.recv_multipart()[1])
                    for key in worst:
                        worst[key] = max(worst[key], status[key])
                    last = status
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        pub.join(timeout=10)
        if pub.is_alive():
            pub.kill()
    return {**last, **{f"worst_{k}": v for k, v in worst.items()}}


def describe(name: str, s: dict[str, Any]) -> str:
    line = (f"{name}: frames {s['frames_accepted']}, ticks {s['ticks']}, late {s['ticks_late']},"
            f" missed {s['ticks_missed']}; worst tick p99 {s['worst_tick_ms_p99']:.2f} ms,"
            f" worst wake-up lateness {s['worst_wake_late_ms_max']:.2f} ms")
    if "online_steps" in s:
        line += (f"; labels {s['labels_accepted']}, steps {s['online_steps']} (rejected"
                 f" {sum(s['online_rejected'].values())}), deferred"
                 f" {s['online_steps_deferred']}, checkpoints {s['checkpoints_saved']},"
                 f" step avg {s['online_step_ms_avg']:.2f} ms")
    return line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--frame-rate", type=float, default=1000.0)
    parser.add_argument("--label-rate", type=float, default=100.0)
    parser.add_argument("--online-batch", type=int, default=100)
    parser.add_argument("--steps", type=int, default=300, help="guarded steps timed")
    parser.add_argument("--labels", type=int, default=50_000, help="labels sent per channel")
    parser.add_argument("--json", type=Path, help="also write the headline figures here")
    args = parser.parse_args()
    steps, batch = args.steps, args.online_batch
    data = sim.simulate(steps * batch * 1.2 / 20.0, 20.0, seed=7, calibration_drift=1.0)
    with threadpool_limits(1):  # the headline, as the daemon runs (SERVING_ENV)
        print("BLAS on 1 thread:")
        p50 = in_process(data, batch, steps)
    with threadpool_limits(2):
        print("BLAS on 2 threads:")
        p50_2 = in_process(data, batch, steps)
    save_ms = checkpoint_saves()
    plain, secured = label_throughput(args.labels, False), label_throughput(args.labels, True)
    print(f"label channel, one process, loopback TCP: plain {plain:,.0f}/s, CURVE"
          f" {secured:,.0f}/s (CURVE / plain = {secured / plain:.2f})")
    workdir = Path(tempfile.mkdtemp(prefix="rdb-", dir="/tmp"))
    try:
        runs = {}
        for online in (False, True):
            runs[online] = daemon_run(workdir, args, online)
            print(describe("online " if online else "serving", runs[online]))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        serving, learning = runs[False], runs[True]
        load = f"{args.frame_rate:,.0f} frames/s, {args.label_rate:,.0f} labels/s"
        write_json(args.json, "bench_online", [
            Figure.compare(f"guarded online step, batch {args.online_batch}, h=64, p50, BLAS "
                           "1 thread", p50["guarded"], "ms",
                           "bare single_step_sgd on the same batch, paired", p50["bare"],
                           "screening, replay draw, holdout check; goal: ratio <= 3.5"),
            Figure.compare(f"guarded online step, batch {args.online_batch}, h=64, p50, BLAS "
                           "2 threads", p50_2["guarded"], "ms",
                           "bare single_step_sgd on the same batch, paired", p50_2["bare"],
                           "two-thread timings swing widely on a 2-core VM"),
            Figure.compare("checkpoint save (atomic, fsync), p50", save_ms, "ms",
                           "the daemon's 20 ms tick", 20.0),
            Figure.compare("label channel throughput with CURVE", secured, "labels/s",
                           "the same channel in plain TCP", plain),
            Figure.compare(
                f"daemon with --online at {load}: worst tick p99", learning["worst_tick_ms_p99"],
                "ms", "the same daemon serving only", serving["worst_tick_ms_p99"],
                f"late ticks {learning['ticks_late']} (serving only {serving['ticks_late']}),"
                f" {learning['online_steps']} steps, {learning['online_steps_deferred']} deferred"),
        ])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
