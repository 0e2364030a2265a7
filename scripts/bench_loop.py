"""What one turn of the fleet learning loop buys (issue 30), on the simulator.

    .venv/bin/python scripts/bench_loop.py [--minutes 10] [--rate 20] [--json F.json]

A drifted robot (``sim --calibration-drift 8``, 10 Hz) drives ``--minutes``; its bag is
played ``--rate`` times faster through three daemons in turn, each serving the default
model: one capturing (``uncertain`` frames, at most 10 % of the frames: ``capture_rate``
is a tenth of the played rate) with the labels kept, one learning online from every
label, one doing neither. Then, all scored on 15 held-out drifted minutes:

- the default model;
- one turn of the loop: ``train --init`` on the captures (plus 5 calibrated minutes);
- the same on every frame of the drive instead of the captures;
- online learning on the same stream (its last checkpoint).

And the capture's precision: the share of captured frames the serving model got wrong
(any class's decision against the label) against its error rate on every frame. Goals:
the loop reaches what training on every frame reaches, from captures of at most 10 % of
the frames; precision at least 3 x the error rate.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import Figure, write_json  # noqa: E402

from robot_daemon import model as model_file  # noqa: E402
from robot_daemon import wire  # noqa: E402
from robot_daemon.bag import BagReader  # noqa: E402

MODEL = ROOT / "models" / "default.npz"
CLI = [sys.executable, "-m", "robot_daemon"]


def rd(*args: str, cwd: Path) -> str:
    """``robot-daemon ARGS`` in ``cwd``; its stdout."""
    return subprocess.run([*CLI, *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def serve(work: Path, bag: str, rate: float, *extra: str) -> None:
    """The default model serving ``bag`` played ``rate`` x, with ``extra`` options."""
    daemon = subprocess.Popen(
        [*CLI, "run", "--model", str(MODEL), "--frames", "ipc://f", "--pred", "ipc://p",
         "--labels", "ipc://f", "--log-level", "ERROR", *extra], cwd=work)
    try:
        rd("bag", "play", bag, "--bind", "ipc://f", "--rate", str(rate),
           "--wait-subscribers", "2", "--no-progress", cwd=work)
    finally:
        daemon.terminate()
        daemon.wait(30)


def macro_f1(model: Path, bag: str, work: Path) -> float:
    return float(json.loads(rd("eval", str(model), bag, "--json", cwd=work))["mlp"]["macro_f1"])


def captured_wrong(directory: Path) -> tuple[int, int]:
    """Captured frames with a label, and how many of them the served answer got wrong."""
    preds: dict[tuple[str | None, int], np.ndarray] = {}
    labels: dict[tuple[str | None, int], np.ndarray] = {}
    thresholds = model_file.load(MODEL).thresholds
    for path in sorted(directory.glob("capture-*.mcap")):
        with BagReader(path) as bag:
            for m in bag.messages():
                if m.topic == "pred":
                    pred = wire.decode_pred(m.payload)
                    src = pred.extra.get("src")
                    key = (src[0] if isinstance(src, list) else src, int(pred.seq[0]))
                    preds[key] = pred.p[0] >= thresholds
                elif m.topic == "label":
                    label = wire.decode_label(m.payload)
                    labels[label.src, label.seq] = label.y.astype(bool)
    both = [k for k in labels if k in preds]
    return len(both), sum(bool((preds[k] != labels[k]).any()) for k in both)


def error_rate(bag: str, work: Path) -> float:
    """The default model's share of frames with any class decided wrongly."""
    out = json.loads(rd("eval", str(MODEL), bag, "--json", cwd=work))
    return 1.0 - float(out["mlp"]["subset_accuracy"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=20.0, help="playback speed-up")
    parser.add_argument("--json", type=Path, help="also write the headline figures here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rd-loop-", dir="/tmp"))
    try:
        seconds = str(int(args.minutes * 60))
        rd("sim", "drifted.mcap", "--duration", seconds, "--rate", "10", "--seed", "61",
           "--calibration-drift", "8", "--no-progress", cwd=work)
        rd("sim", "heldout.mcap", "--duration", "900", "--rate", "10", "--seed", "62",
           "--calibration-drift", "8", "--no-progress", cwd=work)
        rd("sim", "calibrated.mcap", "--duration", "300", "--rate", "10", "--seed", "63",
           "--no-progress", cwd=work)
        frames = int(args.minutes * 60 * 10)
        (work / "captures").mkdir()
        played = 10 * args.rate  # frames a second through the daemon
        print(f"serving {frames:,} drifted frames at {played:.0f} frames/s with capture",
              flush=True)
        serve(work, "drifted.mcap", args.rate, "--capture", "captures",
              "--capture-max-mb", "100", "--capture-rate", str(played / 10),
              "--capture-triggers", "uncertain")
        (work / "checkpoints").mkdir()
        print("the same stream, learning online", flush=True)
        serve(work, "drifted.mcap", args.rate, "--online", "--checkpoint-dir", "checkpoints")
        online = max((work / "checkpoints").glob("*.npz"), key=lambda p: p.stat().st_mtime)
        rd("train", "captures", "calibrated.mcap", "--init", str(MODEL), "--out",
           "loop.npz", cwd=work)
        rd("train", "drifted.mcap", "calibrated.mcap", "--init", str(MODEL), "--out",
           "every.npz", cwd=work)
        n, wrong = captured_wrong(work / "captures")
        f1 = {name: macro_f1(path, "heldout.mcap", work) for name, path in (
            ("default", MODEL), ("loop", work / "loop.npz"), ("every", work / "every.npz"),
            ("online", online))}
        errors = error_rate("drifted.mcap", work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    share = n / frames
    precision = wrong / n if n else 0.0
    print(f"captured {n:,} labelled frames of {frames:,} ({share:.1%})")
    print(f"held-out macro F1: default {f1['default']:.3f}, one turn of the loop"
          f" {f1['loop']:.3f}, training on every frame {f1['every']:.3f}, online learning"
          f" {f1['online']:.3f}")
    print(f"capture precision: {precision:.1%} of captured frames wrong, against"
          f" {errors:.1%} of all frames ({precision / errors:.1f} x)")
    if args.json:
        write_json(args.json, "bench_loop", [
            Figure.compare("held-out macro F1 after one turn of the loop (train --init on the"
                           f" captures, {share:.1%} of the frames)", f1["loop"], "F1",
                           "training on every frame the same way", f1["every"],
                           "goal: ratio >= 1 from at most 10 % of the frames"),
            Figure.compare("held-out macro F1, online learning on the same stream",
                           f1["online"], "F1", "the default model", f1["default"]),
            Figure.compare("capture precision: captured frames the serving model got wrong",
                           precision, "share", "its error rate on every frame", errors,
                           "goal: ratio >= 3"),
        ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
