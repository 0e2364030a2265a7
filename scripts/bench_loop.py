"""What one turn of the fleet learning loop buys (issue 30), on the simulator.

    .venv/bin/python scripts/bench_loop.py [--minutes 10] [--drift 8] [--seeds 3] [--json F]

A drifted robot (``sim --calibration-drift 8``, 10 Hz) drives ``--minutes``; its bag is
played ``--rate`` times faster through three daemons in turn, each serving the default
model: one capturing (``uncertain`` frames, at most 10 % of the frames: ``capture_rate``
is a tenth of the played rate) with the labels kept, one learning online from every
label. Then, all scored on 15 held-out drifted minutes (``train`` runs with ``--seeds``
seeds: the mean, and the range):

- the default model, and the same with its normalisation fitted on every reading of the
  drive (what the capture's ``stream`` records give, without a label);
- one turn of the loop: ``train --init --renormalise`` on the captures (the stream
  records' normalisation, the model's thresholds kept);
- the same on a uniform sample of the drive as large as the captures, written as a
  capture bag with the same stream record (which frames the triggers chose, against
  frames taken blindly: nothing else differs);
- ``train --init`` on every frame of the drive, with and without ``--renormalise``;
- online learning on the same stream (its last checkpoint).

And the capture's precision: the share of captured frames the serving model got wrong
(any class's decision against the label) against its error rate on every frame; the
same per class (class k's decision wrong), averaged over the classes; and per class for
the frames class k's own trigger picked (uncertain in class k, wrong in class k). Goals: the loop
reaches what training on every frame reaches, from captures of at most 10 % of the
frames; precision at least 3 x the error rate.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from robot_daemon.bag import BagMessage, BagMeta, BagReader, BagWriter  # noqa: E402
from robot_daemon.capture import stream  # noqa: E402
from robot_daemon.moments import Moments, normalisation  # noqa: E402

MODEL = ROOT / "models" / "default.npz"
MARGIN = 0.05  # the capture's default capture_margin
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


def captured_errors(directory: Path) -> tuple[int, np.ndarray, np.ndarray]:
    """Captured frames with a label; per frame and class (n, c) whether the served
    decision was wrong, and whether the served probability was within the margin of the
    threshold (what made the ``uncertain`` trigger pick it, class by class)."""
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
                    preds[key] = pred.p[0]
                elif m.topic == "label":
                    label = wire.decode_label(m.payload)
                    labels[label.src, label.seq] = label.y.astype(bool)
    both = [k for k in labels if k in preds]
    probs = np.array([preds[k] for k in both]).reshape(len(both), len(thresholds))
    truth = np.array([labels[k] for k in both], dtype=bool).reshape(probs.shape)
    return len(both), (probs >= thresholds) != truth, np.abs(probs - thresholds) <= MARGIN


@dataclasses.dataclass
class Drive:
    """A drive's labelled frames, read once: its metadata, the ``label`` messages and
    their readings X (n, d) and targets Y (n, c) bool."""

    meta: BagMeta
    messages: list[BagMessage]
    X: np.ndarray
    Y: np.ndarray

    @classmethod
    def read(cls, path: Path) -> Drive:
        with BagReader(path) as reader:
            meta, messages = reader.meta, list(reader.messages([wire.TOPIC_LABEL.decode()]))
        labels = [wire.decode_label(m.payload) for m in messages]
        return cls(meta, messages, np.stack([label.x for label in labels]),
                   np.stack([label.y for label in labels]).astype(bool))


def drive_errors(drive: Drive) -> np.ndarray:
    """Per labelled frame of ``drive`` and class (n, c): the default model decided wrong."""
    served = model_file.load(MODEL)
    wrong: np.ndarray = np.asarray(served.predict_proba(drive.X) >= served.thresholds) != drive.Y
    return wrong


def stream_normalised(drive: Drive, work: Path) -> Path:
    """The default model with its normalisation fitted on every reading of ``drive`` and
    nothing else changed: what the capture's stream records alone give, without a label."""
    mean, scale = normalisation(Moments.of(drive.X))
    out = work / "stream_only.npz"
    dataclasses.replace(model_file.load(MODEL), mean=mean, scale=scale).save(out)
    return out


def uniform_sample(drive: Drive, out: Path, n: int) -> None:
    """``n`` labelled frames of ``drive`` evenly spread over it, into the bag ``out``: a
    capture bag with the stream record of every frame, as if a trigger had drawn them
    blindly (so that only the frames differ from the loop's)."""
    meta = dataclasses.replace(drive.meta, extra={"source": stream.CAPTURE_SOURCE})
    keep = np.linspace(0, len(drive.messages) - 1, n).round().astype(int)
    with BagWriter(out, meta=meta) as writer:
        for i in keep:
            m = drive.messages[i]
            writer.write(m.topic, m.payload, m.recv_ns, m.sensor_ns)
        record = stream.StreamRecord(Moments.of(drive.X), 0.0, 0.0, "default")
        writer.write(stream.TOPIC, stream.encode(record), drive.messages[-1].recv_ns)


def trained_f1(out: str, sources: list[str], seeds: int, work: Path,
               *extra: str) -> list[float]:
    """Held-out macro F1 of ``train --init`` on ``sources``, one per seed."""
    scores = []
    for seed in range(seeds):
        rd("train", *sources, "--init", str(MODEL), "--seed", str(seed), "--out", out,
           "--overwrite", *extra, cwd=work)
        scores.append(macro_f1(work / out, "heldout.mcap", work))
    return scores


def spread(scores: list[float]) -> str:
    """The mean of ``scores`` and their range."""
    return f"{np.mean(scores):.3f} ({min(scores):.3f}-{max(scores):.3f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=20.0, help="playback speed-up")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per figure")
    parser.add_argument("--drift", type=float, default=8.0,
                        help="sim --calibration-drift of the robot (default 8)")
    parser.add_argument("--triggers", default="uncertain",
                        help="the capture's triggers (capture_triggers)")
    parser.add_argument("--json", type=Path, help="also write the headline figures here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rd-loop-", dir="/tmp"))
    try:
        seconds = str(int(args.minutes * 60))
        rd("sim", "drifted.mcap", "--duration", seconds, "--rate", "10", "--seed", "61",
           "--calibration-drift", str(args.drift), "--no-progress", cwd=work)
        rd("sim", "heldout.mcap", "--duration", "900", "--rate", "10", "--seed", "62",
           "--calibration-drift", str(args.drift), "--no-progress", cwd=work)
        frames = int(args.minutes * 60 * 10)
        (work / "captures").mkdir()
        played = 10 * args.rate  # frames a second through the daemon
        print(f"serving {frames:,} drifted frames at {played:.0f} frames/s with capture"
              f" ({args.triggers})", flush=True)
        serve(work, "drifted.mcap", args.rate, "--capture", "captures",
              "--capture-max-mb", "100", "--capture-rate", str(played / 10),
              "--capture-triggers", args.triggers)
        (work / "checkpoints").mkdir()
        print("the same stream, learning online", flush=True)
        serve(work, "drifted.mcap", args.rate, "--online", "--checkpoint-dir", "checkpoints")
        online = max((work / "checkpoints").glob("*.npz"), key=lambda p: p.stat().st_mtime)
        n, wrong, near = captured_errors(work / "captures")
        drive = Drive.read(work / "drifted.mcap")
        uniform_sample(drive, work / "sample.mcap", n)
        print(f"training on the {n:,} captures, on as many frames sampled uniformly and on"
              f" every frame, {args.seeds} seed(s) each", flush=True)
        renormalise = ("--renormalise",)
        f1 = {name: trained_f1(f"{name}.npz", sources, args.seeds, work, *extra)
              for name, sources, extra in (
                  ("loop", ["captures"], renormalise),
                  ("sample", ["sample.mcap"], renormalise),
                  ("every", ["drifted.mcap"], ()),
                  ("every_renormalised", ["drifted.mcap"], renormalise))}
        f1["default"] = [macro_f1(MODEL, "heldout.mcap", work)]
        f1["stream_only"] = [macro_f1(stream_normalised(drive, work), "heldout.mcap",
                                      work)]
        f1["online"] = [macro_f1(online, "heldout.mcap", work)]
        errors = drive_errors(drive)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    share = n / frames
    precision, error_rate = wrong.any(axis=1).mean(), errors.any(axis=1).mean()
    per_class = float(np.mean(wrong.mean(axis=0) / errors.mean(axis=0)))
    # Class k's trigger: the frames picked for class k's uncertainty, wrong in class k.
    by_trigger = np.array([wrong[near[:, k], k].mean() if near[:, k].any() else np.nan
                           for k in range(wrong.shape[1])]) / errors.mean(axis=0)
    loop = float(np.mean(f1["loop"]))
    every = max(float(np.mean(f1["every"])), float(np.mean(f1["every_renormalised"])))
    print(f"captured {n:,} labelled frames of {frames:,} ({share:.1%})")
    print(f"held-out macro F1: default {f1['default'][0]:.3f}; normalised on the stream"
          f" only (no label) {f1['stream_only'][0]:.3f}")
    print(f"  train --init --renormalise on the captures (one turn of the loop)"
          f" {spread(f1['loop'])}")
    print(f"  the same on as many frames sampled uniformly {spread(f1['sample'])}")
    print(f"  train --init on every frame {spread(f1['every'])}, with --renormalise"
          f" {spread(f1['every_renormalised'])}")
    print(f"  online learning on the same stream {f1['online'][0]:.3f}")
    print(f"capture precision: {precision:.1%} of captured frames wrong, against"
          f" {error_rate:.1%} of all frames ({precision / error_rate:.1f} x, at most"
          f" {1 / error_rate:.1f} x); per class {per_class:.1f} x on average")
    print("  each class's own trigger (frames uncertain in class k, wrong in class k, against"
          " class k's error rate): " + ", ".join(f"{r:.1f} x" for r in by_trigger)
          + f"; {np.nanmean(by_trigger):.1f} x on average, {int((by_trigger >= 3).sum())} of"
          f" {len(by_trigger)} classes at 3 x or more")
    if args.json:
        write_json(args.json, "bench_loop", [
            Figure.compare("held-out macro F1 after one turn of the loop (train --init"
                           f" --renormalise on the captures, {share:.1%} of the frames; mean of"
                           f" {args.seeds} seeds)", loop, "F1",
                           "train --init on every frame (the better of with and without"
                           " --renormalise)", every,
                           "goal: ratio >= 1 from at most 10 % of the frames"),
            Figure.compare("held-out macro F1, train --init on a uniform sample as large as"
                           " the captures", float(np.mean(f1["sample"])), "F1",
                           "on the captures", loop),
            Figure.compare("held-out macro F1, the default model renormalised on the capture's"
                           " stream records, no label", f1["stream_only"][0], "F1",
                           "the default model", f1["default"][0]),
            Figure.compare("held-out macro F1, online learning on the same stream",
                           f1["online"][0], "F1", "the default model", f1["default"][0]),
            Figure.compare("capture precision: captured frames the serving model got wrong",
                           float(precision), "share", "its error rate on every frame",
                           float(error_rate), f"goal: ratio >= 3; at most {1 / error_rate:.1f}"
                           f" here; per class {per_class:.1f} x; by each class's own"
                           f" trigger {np.nanmean(by_trigger):.1f} x"),
        ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
