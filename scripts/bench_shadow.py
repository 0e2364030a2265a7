"""What ``run --shadow`` and ``run --capture`` cost the robot (issue 30), paired in one run.

    .venv/bin/python scripts/bench_shadow.py [--rounds 3] [--duration 5] [--json F.json]

1. **cost**: three daemons side by side: serving only, with a shadow (a candidate of the
   default model's size), and with the shadow and a capture that keeps every frame
   (``--capture-margin 0.5``, rate unlimited: the worst case for the writer thread). At
   50 and 1,000 frames/s (``bench_daemon``'s publisher), rounds alternating the order:
   tick p50, ticks over 1 ms, tick start to ``pred`` received p99, CPU per 1,000 frames,
   and the shadow's frames compared and skipped.
2. **bound**: a daemon capturing every frame at 1,000 frames/s into a 1 MB bound for
   ``--duration`` x 2 seconds, the directory's total sampled every 20 ms: its largest
   value against the bound.

Goals (issue 30): the tick figures unchanged within the run's noise (the planner's path
must not see the shadow), CPU at most 2x; the bound never passed.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_daemon import Daemon  # noqa: E402
from bench_tick import summary  # noqa: E402
from benchlib import Figure, write_json  # noqa: E402

from robot_daemon import model as model_file  # noqa: E402

MODEL = ROOT / "models" / "default.npz"
RATES = (50, 1000)


def candidate(path: Path) -> Path:
    """The default model with its weights nudged: a candidate of the same size."""
    model = model_file.load(MODEL)
    rng = np.random.default_rng(0)
    for linear in model.mlp.linears:
        linear.W += 0.05 * rng.standard_normal(linear.W.shape)
    model.save(path)
    return path


def cost(workdir: Path, rounds: int, duration: float) -> dict[tuple[str, int], dict[str, float]]:
    shadow = str(candidate(workdir / "candidate.npz"))
    (workdir / "captures").mkdir()
    modes = {
        "serving": (),
        "shadow": ("--shadow", shadow),
        "shadow+capture": ("--shadow", shadow, "--capture", str(workdir / "captures"),
                           "--capture-max-mb", "50", "--capture-margin", "0.5",
                           "--capture-rate", "1000000"),
    }
    daemons = {name: Daemon(workdir, MODEL, name=f"-{i}", args=args)
               for i, (name, args) in enumerate(modes.items())}
    out: dict[tuple[str, int], dict[str, float]] = {}
    try:
        for rate in RATES:
            for r in range(rounds):
                order = list(daemons)[r % 3:] + list(daemons)[:r % 3]
                for name in order:
                    trial = daemons[name].trial(rate, duration)
                    print(f"  {rate:>5} frames/s round {r + 1} {name:<15} tick p99 "
                          f"{trial.tick_ms[1]:.3f} ms, CPU/1,000 frames "
                          f"{trial.cpu_ms_per_1000:.1f} ms, answered {trial.answered}/"
                          f"{trial.sent}", flush=True)
            for name, daemon in daemons.items():
                trials = [t for t in daemon.trials if t.rate == rate]
                status = daemon.status()
                shadow_status = status.get("shadow", {})
                out[name, rate] = {**summary(trials),
                                   "compared": shadow_status.get("frames_compared", 0),
                                   "skipped": shadow_status.get("frames_skipped", 0),
                                   "captured": status.get("capture_frames", 0)}
    finally:
        for daemon in daemons.values():
            daemon.close()
    return out


def bound(workdir: Path, seconds: float) -> tuple[int, int, int]:
    """The largest total of the capture bags sampled, the bound, and frames captured."""
    directory = workdir / "bound"
    directory.mkdir()
    daemon = Daemon(workdir, MODEL, name="-bound", args=(
        "--capture", str(directory), "--capture-max-mb", "1", "--capture-margin", "0.5",
        "--capture-rate", "1000000"))
    largest = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal largest
        while not stop.wait(0.02):
            total = 0
            for path in directory.iterdir():
                with contextlib.suppress(FileNotFoundError):  # rotated meanwhile
                    total += path.stat().st_size
            largest = max(largest, total)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        daemon.trial(1000, seconds)
        captured = int(daemon.status().get("capture_frames", 0))
    finally:
        stop.set()
        sampler.join()
        daemon.close()
    return largest, 1_000_000, captured


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per trial")
    parser.add_argument("--json", type=Path, help="also write the headline figures here")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="rd-shadow-", dir="/tmp"))
    figures = []
    try:
        print("the daemon alone, with a shadow, and with a shadow and a capture of every"
              " frame: paired", flush=True)
        c = cost(workdir, args.rounds, args.duration)
        for rate in RATES:
            base = c["serving", rate]
            for name in ("shadow", "shadow+capture"):
                m = c[name, rate]
                print(f"  {rate:>5} frames/s {name:<15} tick p50 {m['tick_p50']:.3f} ms"
                      f" (alone {base['tick_p50']:.3f}), ticks over 1 ms {m['over_1']:.2f} %"
                      f" ({base['over_1']:.2f}), pred p99 {m['pred_p99']:.3f} ms"
                      f" ({base['pred_p99']:.3f}), CPU/1,000 frames {m['cpu']:.1f} ms"
                      f" ({base['cpu']:.1f}); shadow compared {m['compared']:.0f} skipped"
                      f" {m['skipped']:.0f}, captured {m['captured']:.0f}", flush=True)
                alone = f"the daemon alone, paired, {args.rounds} runs"
                figures += [
                    Figure.compare(f"{name} at {rate:,} frames/s: tick start to pred received"
                                   " p99", m["pred_p99"], "ms", alone, base["pred_p99"],
                                   "goal: unchanged within the noise"),
                    Figure.compare(f"{name} at {rate:,} frames/s: ticks over 1 ms",
                                   m["over_1"], "%", alone, base["over_1"]),
                    Figure.compare(f"{name} at {rate:,} frames/s: daemon CPU per 1,000 "
                                   "frames", m["cpu"], "ms", alone, base["cpu"],
                                   "goal: ratio <= 2"),
                ]
        print(f"a capture of every frame at 1,000 frames/s into a 1 MB bound, "
              f"{2 * args.duration:.0f} s", flush=True)
        largest, limit, captured = bound(workdir, 2 * args.duration)
        print(f"  largest total of the capture bags sampled: {largest:,} bytes of"
              f" {limit:,}; frames captured {captured:,}", flush=True)
        figures.append(Figure.compare(
            "capture of every frame at 1,000 frames/s: the bags' largest total, sampled every"
            " 20 ms", largest, "bytes", "the bound (--capture-max-mb 1)", limit,
            "goal: ratio <= 1"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        write_json(args.json, "bench_shadow", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
