"""The daemon's tick at 1,000 frames/s, paired against another commit's daemon in one run.

    .venv/bin/python scripts/bench_tick.py [--baseline cf9d77b] [--rounds 3] [--duration 8]
                                           [--json FIGURES.json]

Two real daemons run side by side, each from its own source tree: this checkout's and
the ``--baseline`` commit's (extracted with ``git archive`` into a temporary directory;
by default :data:`BASELINE`, the daemon before its tick was split around the deadline).
They serve the same model; trials of ``--duration`` seconds at 1,000 frames/s (20 frames
per 20 ms tick) alternate between them, the order swapped every round, so that a VM's
drift within the run falls on both alike. Per daemon, over every round:

* **tick p50**: the median of the daemon's per-status-period ``tick_ms_p50`` (the time
  from the tick's deadline, or from its wake-up where the OS woke the loop after the
  deadline, to its ``pred`` sent), and its ratio to the baseline's;
* **tick start after its deadline**, p50 (``wake_late_ms_p50``): a daemon that sleeps
  to the deadline wakes about 0.1 ms after it; one that waits awake, on time;
* the share of ticks over 0.5 ms and over 1 ms (the daemon's tick histogram);
* **tick start to pred received**: what a planner sees, p50 and p99;
* **CPU per 1,000 frames** (``/proc``), everything the daemon did between ticks included:
  work moved out of the tick is still counted here.

Timings swing on a shared VM: the ratios of one run are the figures to quote.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_daemon import Daemon, Trial, pooled_counts, ticks_over  # noqa: E402
from benchlib import Figure, write_json  # noqa: E402

RATE = 1000.0
#: The serving path before serve.early (issue 14): the whole tick after the deadline.
BASELINE = "cf9d77b"


def extract(rev: str, into: Path) -> Path:
    """The source tree of commit ``rev``, written under ``into``."""
    tree = into / "baseline"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def over(trials: list[Trial], edge_ms: float) -> float:
    """Percent of the ticks of ``trials`` above the histogram edge ``edge_ms``."""
    counts = pooled_counts(trials)
    return 100 * ticks_over(trials[0].tick_edges_ms, counts, edge_ms) / float(counts.sum())


def summary(trials: list[Trial]) -> dict[str, float]:
    after = np.concatenate([t.pred_after_tick_ms for t in trials])
    return {
        "tick_p50": float(np.median([t.tick_ms[0] for t in trials])),
        "over_0.5": over(trials, 0.5),
        "over_1": over(trials, 1),
        "pred_p50": float(np.percentile(after, 50)),
        "pred_p99": float(np.percentile(after, 99)),
        "wake_p50": float(np.median([t.wake_ms[0] for t in trials])),
        "cpu": float(np.median([t.cpu_ms_per_1000 for t in trials])),
        "ticks": float(sum(t.ticks for t in trials)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=BASELINE,
                        help=f"the commit to compare with (default {BASELINE})")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per trial")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default.npz")
    parser.add_argument("--json", type=Path, help="also write the headline figures here")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="rd-tick-", dir="/tmp"))
    try:
        base_tree = extract(args.baseline, workdir)
        daemons = {"baseline": Daemon(workdir, args.model, base_tree, "-baseline"),
                   "this": Daemon(workdir, args.model, ROOT, "-this")}
        try:
            for r in range(args.rounds):
                order = list(daemons) if r % 2 == 0 else list(daemons)[::-1]
                for name in order:
                    trial = daemons[name].trial(RATE, args.duration)
                    problems = [f"{k} {v}" for k, v in trial.counters.items() if v]
                    print(f"round {r + 1} {name:<8} tick p50 {trial.tick_ms[0]:.3f} ms, "
                          f"p99 {trial.tick_ms[1]:.3f} ms, CPU/1,000 frames "
                          f"{trial.cpu_ms_per_1000:.1f} ms; problems: "
                          f"{', '.join(problems) or 'none'}", flush=True)
        finally:
            for daemon in daemons.values():
                daemon.close()
        base, this = (summary(d.trials) for d in daemons.values())
        print(f"\n{'':<34}{'baseline ' + args.baseline[:10]:>20}{'this':>12}{'ratio':>8}")
        rows = (("tick p50 (ms)", "tick_p50"), ("ticks over 0.5 ms (%)", "over_0.5"),
                ("ticks over 1 ms (%)", "over_1"),
                ("tick start to pred received p50 (ms)", "pred_p50"),
                ("tick start to pred received p99 (ms)", "pred_p99"),
                ("tick start after its deadline p50 (ms)", "wake_p50"),
                ("CPU per 1,000 frames (ms)", "cpu"), ("ticks", "ticks"))
        for label, key in rows:
            ratio = this[key] / base[key] if base[key] else float("nan")
            print(f"{label:<34}{base[key]:>20.3f}{this[key]:>12.3f}{ratio:>8.2f}")
        if args.json:
            write_json(args.json, "bench_tick", [
                Figure.compare("tick p50 at 1,000 frames/s (the daemon's status)",
                               this["tick_p50"], "ms", f"the daemon at {args.baseline}",
                               base["tick_p50"], "goal: ratio <= 0.5"),
                Figure.compare("ticks over 1 ms at 1,000 frames/s", this["over_1"], "%",
                               f"the daemon at {args.baseline}", base["over_1"]),
                Figure.compare("tick start to pred received p99 at 1,000 frames/s",
                               this["pred_p99"], "ms", f"the daemon at {args.baseline}",
                               base["pred_p99"]),
                Figure.compare("tick start after its deadline p50 at 1,000 frames/s",
                               this["wake_p50"], "ms", f"the daemon at {args.baseline}",
                               base["wake_p50"], "sleeping to the deadline wakes late"),
                Figure.compare("daemon CPU per 1,000 frames at 1,000 frames/s", this["cpu"],
                               "ms", f"the daemon at {args.baseline}", base["cpu"],
                               "everything between ticks included"),
            ])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
