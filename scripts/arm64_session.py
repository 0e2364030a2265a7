"""A short daemon session on emulated ARM (aarch64) beside the same session on x86.

    .venv/bin/python scripts/arm64_session.py --arm-python PYTHON [--frames 3000]

Run by ``scripts/arm64_check``, which makes PYTHON: a wrapper that runs Debian's arm64
Python under ``qemu-aarch64-static``. It starts two ``robot-daemon run`` processes on the
same model (default ``models/default.npz``), this Python's (x86) and PYTHON's (ARM), both
connected to one publisher of this script, and sends both the same frames: a simulated
run (``--seed``) or the frames of a bag (``--bag``, needs the ``bag`` extra). Each daemon
computes the probabilities of a tick's frames as one batch in the model's dtype and
publishes them as float32; the script compares the two answers to every frame.

Then the same readings go through ``Model.predict_proba`` on each side, in the model's
dtype (float64 for the default model), as one batch and one reading at a time. It prints
the largest difference between x86 and ARM, and between a batch and single readings on
each side, absolute and relative (in machine epsilons of the dtype compared), and the
number of decisions (``p >= threshold``, the model's per-class thresholds) that differ.

Exit status 0 when both daemons answered every frame, no decision differs and every
relative difference is within ``--max-eps`` (500: docs/spec.md, "Numbers on other CPUs");
1 otherwise, with one line saying what differed; 2 when the session could not run (the
ARM Python does not start, a daemon exits).

``proba MODEL X.npy OUT.npz`` is the half that runs on each side (so on ARM too): the
probabilities of the readings ``X.npy``, as a batch and one at a time, and the
OpenBLAS kernel that computed them.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robot_daemon import model as model_file  # noqa: E402
from robot_daemon.errors import RobotDaemonError  # noqa: E402

DEFAULT_MODEL = ROOT / "models" / "default.npz"
SRC = "arm64-check"
#: Seconds a daemon may take to start and subscribe (under emulation: importing NumPy).
START_TIMEOUT_S = 120.0


class SessionError(Exception):
    """The session could not run; the message says why and what to do."""


# ------------------------------------------------------------------ the per-side half


def openblas_core() -> str:
    """The OpenBLAS kernel NumPy's wheel chose on this CPU (``"unknown"`` if not found)."""
    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    names = ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename",
             "openblas_get_corename64_", "openblas_get_corename")
    for lib in sorted(libs.glob("lib*openblas*.so*")):
        try:
            handle = ctypes.CDLL(str(lib))
        except OSError:
            continue
        for name in names:
            function = getattr(handle, name, None)
            if function is not None:
                function.restype = ctypes.c_char_p
                return str(function().decode())
    return "unknown"


def proba(model_path: Path, readings: Path, out: Path) -> None:
    """Write the probabilities of ``readings`` to ``out`` (an .npz): ``batch`` (one call on
    all rows) and ``single`` (one call per row), both (n, c) in the model's dtype."""
    model = model_file.load(model_path)
    X = np.load(readings)
    batch = model.predict_proba(X)
    single = np.concatenate([model.predict_proba(X[i:i + 1]) for i in range(len(X))])
    info = {"machine": platform.machine(), "numpy": np.__version__, "openblas": openblas_core(),
            "qemu_cpu": os.environ.get("QEMU_CPU", "")}
    np.savez(out, batch=batch, single=single, info=np.array(json.dumps(info)))


# ------------------------------------------------------------------ the two daemons


@dataclass
class Side:
    """One daemon: its process, its pred endpoint and what it answered (seq -> row)."""

    name: str
    python: str
    pred_ep: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    rows: dict[int, npt.NDArray[np.float32]] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)


def _readings(args: argparse.Namespace) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float32]]:
    """Sensor times (n,) and readings (n, d) float32: from the bag or simulated."""
    if args.bag is None:
        from robot_daemon import sim

        data = sim.simulate(args.frames / 50.0, seed=args.seed)
        return data.t[:args.frames], data.X[:args.frames]
    from robot_daemon import wire
    from robot_daemon.bag.payloads import read_payloads  # needs the bag extra (mcap)

    payloads = read_payloads(args.bag, ["frame"])
    frames = [wire.decode_frame(p) for p in payloads.by_topic.get("frame", [])[:args.frames]]
    if not frames:
        raise SessionError(f"{args.bag} holds no frame: give a bag with frames")
    t = np.array([f.t for f in frames], dtype=np.float64)
    return t, np.stack([f.x for f in frames])


def _start(side: Side, model: Path, frames_ep: str) -> None:
    cmd = [side.python, "-m", "robot_daemon", "run", "--model", str(model),
           "--frames", frames_ep, "--pred", side.pred_ep, "--status-interval", "1"]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    with side.log.open("wb") as log:
        side.proc = subprocess.Popen(cmd, stderr=log, stdout=log, env=env, cwd=ROOT)


def _check_alive(sides: list[Side]) -> None:
    for side in sides:
        if side.proc is not None and side.proc.poll() is not None:
            tail = side.log.read_text(errors="replace").strip().splitlines()[-1:]
            raise SessionError(f"the {side.name} daemon exited ({side.proc.returncode}):"
                               f" {tail[0] if tail else 'no output'}")


def _stop(side: Side) -> None:
    if side.proc is None or side.proc.poll() is not None:
        return
    side.proc.send_signal(signal.SIGTERM)
    try:
        side.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        side.proc.kill()
        side.proc.wait()


def serve_both(args: argparse.Namespace, work: Path, t: npt.NDArray[np.float64],
               X: npt.NDArray[np.float32]) -> list[Side]:
    """Both daemons answer the same frames; returns the two sides with their rows."""
    import zmq

    from robot_daemon import wire

    sides = [Side("x86", sys.executable, f"ipc://{work}/pred-x86", work / "x86.log"),
             Side("ARM", args.arm_python, f"ipc://{work}/pred-arm", work / "arm.log")]
    frames_ep = f"ipc://{work}/frames"
    with zmq.Context() as ctx:
        pub = ctx.socket(zmq.XPUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.setsockopt(zmq.SNDHWM, 0)
        pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        pub.bind(frames_ep)
        subs = {}
        for side in sides:
            sub = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.subscribe(b"")
            sub.connect(side.pred_ep)
            subs[side.name] = sub
        poller = zmq.Poller()
        for sub in subs.values():
            poller.register(sub, zmq.POLLIN)
        try:
            for side in sides:
                _start(side, args.model, frames_ep)
            started = time.monotonic()
            # Ready: subscribed to our frames (none lost to joining) and a status received
            # (our SUB is connected to its pred socket).
            subscribed = 0
            heard: set[str] = set()
            while subscribed < len(sides) or len(heard) < len(sides):
                _check_alive(sides)
                if time.monotonic() - started > START_TIMEOUT_S:
                    raise SessionError(f"the daemons did not start in {START_TIMEOUT_S:.0f} s"
                                       f" (logs in {work})")
                if pub.poll(100) and pub.recv() == b"\x01" + wire.TOPIC_FRAME:
                    subscribed += 1
                for sub_name, sub in subs.items():
                    while sub.poll(0):
                        if sub.recv_multipart()[0] == wire.TOPIC_STATUS:
                            heard.add(sub_name)
            print(f"  both daemons serving after {time.monotonic() - started:.1f} s;"
                  f" sending {len(X)} frames at {args.rate:g} frames/s", flush=True)
            period = 1.0 / args.rate
            send_start = time.monotonic()
            for i, x in enumerate(X):
                delay = send_start + i * period - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pub.send_multipart([wire.TOPIC_FRAME,
                                    wire.encode_frame(i, float(t[i]), x, src=SRC)])
                _collect(poller, subs, sides, 0)
            deadline = time.monotonic() + max(30.0, len(X) / args.rate)
            while any(len(s.rows) < len(X) for s in sides) and time.monotonic() < deadline:
                _check_alive(sides)
                _collect(poller, subs, sides, 100)
            # One more status from each: what it counted (dropped, rejected, late ticks).
            for side in sides:
                side.status = {}
            while any(not s.status for s in sides) and time.monotonic() < deadline + 5:
                _collect(poller, subs, sides, 100)
        finally:
            for side in sides:
                _stop(side)
            for sub in subs.values():
                sub.close()
            pub.close()
    return sides


def _collect(poller: Any, subs: dict[str, Any], sides: list[Side], timeout_ms: int) -> None:
    from robot_daemon import wire

    by_name = {s.name: s for s in sides}
    events = dict(poller.poll(timeout_ms))
    for name, sub in subs.items():
        if sub not in events:
            continue
        while sub.poll(0):
            topic, payload = sub.recv_multipart()
            if topic == wire.TOPIC_PRED:
                pred = wire.decode_pred(payload)
                for seq, row in zip(pred.seq.tolist(), pred.p, strict=True):
                    by_name[name].rows[seq] = row.copy()
            elif topic == wire.TOPIC_STATUS:
                by_name[name].status = wire.decode_status(payload)


# ------------------------------------------------------------------ the comparison


def _differ(a: npt.NDArray[Any], b: npt.NDArray[Any], thresholds: npt.NDArray[np.float64],
            ) -> tuple[float, float, int]:
    """Largest absolute difference, largest relative one in machine epsilons of the arrays'
    dtype (``|a - b| / max(|a|, |b|)``; 0 where both are 0) and the number of decisions
    that differ."""
    if not a.size:
        return 0.0, 0.0, 0
    eps = float(np.finfo(np.result_type(a, b)).eps)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    diff = np.abs(a64 - b64)
    scale = np.maximum(np.abs(a64), np.abs(b64))
    rel = np.divide(diff, scale, out=np.zeros_like(diff), where=scale > 0)
    decisions = int(np.count_nonzero((a >= thresholds) != (b >= thresholds)))
    return float(diff.max()), float(rel.max()) / eps, decisions


def _run_proba(python: str, model: Path, readings: Path, out: Path, name: str) -> Any:
    cmd = [python, str(Path(__file__).resolve()), "proba", str(model), str(readings), str(out)]
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SessionError(f"predict_proba on {name} failed: {last}")
    result = np.load(out)
    info = json.loads(str(result["info"]))
    print(f"  {name}: predict_proba in {time.monotonic() - started:.1f} s"
          f" ({info['machine']}, NumPy {info['numpy']}, OpenBLAS kernel {info['openblas']})",
          flush=True)
    return result


def compare(args: argparse.Namespace) -> int:
    model = model_file.load(args.model)
    thresholds = model.thresholds
    t, X = _readings(args)
    what = f"{args.bag}" if args.bag else f"simulated, seed {args.seed}"
    print(f"frames: {len(X)} ({what}); model {args.model.name} ({model.mlp.dtype},"
          f" d={model.d}, h={model.h}, c={model.c});"
          f" QEMU_CPU={os.environ.get('QEMU_CPU') or 'unset (max, qemu-aarch64 default)'}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="rd-arm64-", dir="/tmp") as tmp:
        work = Path(tmp)
        started = time.monotonic()
        sides = serve_both(args, work, t, X)
        print(f"  session in {time.monotonic() - started:.1f} s", flush=True)
        np.save(work / "X.npy", X)
        x86 = _run_proba(sys.executable, args.model, work / "X.npy", work / "x86.npz", "x86")
        arm = _run_proba(args.arm_python, args.model, work / "X.npy", work / "arm.npz", "ARM")

    failures = []
    for side in sides:
        s = side.status
        print(f"  {side.name} daemon: answered {len(side.rows)} of {len(X)} frames;"
              f" rejected {sum(s.get('frames_rejected', {}).values())},"
              f" dropped {s.get('frames_dropped', '?')}, ticks {s.get('ticks', '?')},"
              f" late {s.get('ticks_late', '?')}", flush=True)
        if len(side.rows) < len(X):
            failures.append(f"the {side.name} daemon answered {len(side.rows)} of {len(X)} frames")
    both = sorted(set(sides[0].rows) & set(sides[1].rows))
    a = np.array([sides[0].rows[i] for i in both]).reshape(len(both), model.c)
    b = np.array([sides[1].rows[i] for i in both]).reshape(len(both), model.c)
    equal = int(np.count_nonzero(np.all(a == b, axis=1)))
    dtype = model.mlp.dtype.name  # predict_proba's: the model's
    rows = [
        ("daemon pred float32, x86 vs ARM", a, b),
        (f"predict_proba {dtype} batch, x86 vs ARM", x86["batch"], arm["batch"]),
        (f"predict_proba {dtype} one reading at a time, x86 vs ARM", x86["single"], arm["single"]),
        (f"predict_proba {dtype} batch vs one at a time, x86", x86["batch"], x86["single"]),
        (f"predict_proba {dtype} batch vs one at a time, ARM", arm["batch"], arm["single"]),
    ]
    print(f"\n  daemon: {equal} of {len(both)} frames answered with equal float32 rows")
    print(f"  {'compared':<58} {'max |diff|':>10} {'in eps':>7} {'decisions differ':>17}")
    for label, p, q in rows:
        diff, rel, decisions = _differ(p, q, thresholds)
        print(f"  {label:<58} {diff:>10.3g} {rel:>7.0f} {decisions:>9} of {p.size}")
        if decisions or not rel <= args.max_eps:
            failures.append(f"{label}: max |diff| {diff:.3g} ({rel:.0f} epsilons relative),"
                            f" {decisions} decisions differ")
    if failures:
        print(f"arm64_session: {failures[0]}" + (f" (and {len(failures) - 1} more)"
                                                 if len(failures) > 1 else ""), file=sys.stderr)
        return 1
    return 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "proba":
        if len(sys.argv) != 5:
            print("usage: arm64_session.py proba MODEL X.npy OUT.npz", file=sys.stderr)
            return 2
        proba(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arm-python", required=True,
                        help="the ARM Python (scripts/arm64_check makes it)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--frames", type=int, default=3000, help="frames to send (3000)")
    parser.add_argument("--rate", type=float, default=250.0, help="frames per second (250)")
    parser.add_argument("--seed", type=int, default=13, help="simulated run's seed (13)")
    parser.add_argument("--bag", type=Path, help="send this bag's frames instead")
    parser.add_argument("--max-eps", type=float, default=500.0,
                        help="largest relative difference accepted, in machine epsilons of"
                             " the dtype compared (500: docs/spec.md)")
    args = parser.parse_args()
    if args.frames < 1 or not args.rate > 0:
        parser.error("--frames and --rate must be positive")
    try:
        return compare(args)
    except (SessionError, RobotDaemonError) as exc:
        print(f"arm64_session: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
