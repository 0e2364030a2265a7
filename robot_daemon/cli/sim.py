"""``robot-daemon sim``: a simulated bag of sidewalk driving."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from robot_daemon.cli import progress
from robot_daemon.cli.args import (
    Subparsers,
    add_overwrite,
    finite_float,
    positive_float,
    seconds,
    seed,
)
from robot_daemon.errors import ConfigError
from robot_daemon.paths import check_output, replaced_on_success


def add(sub: Subparsers) -> None:
    p = sub.add_parser(
        "sim",
        help="simulate sidewalk driving and write a bag of frame and label messages",
        description=(
            "Runs the sidewalk simulator (docs/simulator.md) and writes an MCAP bag with one "
            "'frame' and one 'label' message per reading, with matching seq numbers. "
            "Deterministic: the same seed, duration and rate give the same bag contents."
        ),
    )
    p.add_argument("out", metavar="OUT", help="bag file to write (.mcap)")
    p.add_argument(
        "--duration", type=seconds, required=True, metavar="S", help="seconds to simulate"
    )
    p.add_argument(
        "--rate", type=positive_float, default=50.0, metavar="HZ", help="readings/s (default 50)"
    )
    p.add_argument("--seed", type=seed, default=0, metavar="N", help="random seed >= 0 (default 0)")
    p.add_argument(
        "--calibration-drift",
        type=finite_float,
        default=0.0,
        metavar="K",
        help="systematic sensor miscalibration, 0 = calibrated (default 0)",
    )
    add_overwrite(p, "OUT")
    progress.add_flag(p)
    p.set_defaults(handler=_run_sim)


def _run_sim(args: argparse.Namespace) -> int:
    from robot_daemon import sim

    if args.out == "-":
        # Its report goes to stdout: a bag there would be mixed with text.
        raise ConfigError("sim writes its bag to a file and its report to stdout: give a"
                          " path such as run.mcap, not -")
    check_output(args.out, overwrite=args.overwrite, what="bag")
    with progress.ProgressLine(sys.stderr, enabled=args.progress) as line:
        data = sim.simulate(
            args.duration,
            args.rate,
            args.seed,
            calibration_drift=args.calibration_drift,
            progress=_reporter(line, "simulated", args.rate) if line.enabled else None,
        )
        written = _reporter(line, "written", args.rate) if line.enabled else None
        # A bag stopped half-way (Ctrl-C, a full disk) is no bag: written beside, renamed.
        with replaced_on_success(args.out) as tmp:
            sim.write_bag(tmp, data, progress=written)
    print(f"wrote {args.out}")
    print(sim.describe(data))
    return 0


def _reporter(line: progress.ProgressLine, verb: str, rate_hz: float) -> Callable[[int, int], None]:
    """A ``sim`` progress callback that shows simulated seconds, their total and an ETA.

    A new phase (writing after simulating) shows at once if the line is showing already.
    """
    start_ns = time.monotonic_ns()
    new_phase = line.shown

    def report(done: int, total: int) -> None:
        nonlocal new_phase
        if new_phase or line.due():
            elapsed_s = (time.monotonic_ns() - start_ns) / 1e9
            line.update(describe_progress(verb, done, total, rate_hz, elapsed_s), force=True)
            new_phase = False

    return report


def describe_progress(verb: str, done: int, total: int, rate_hz: float, elapsed_s: float) -> str:
    """``[ 120.0 s / 300.0 s simulated] ETA 4 s``: readings shown as simulated seconds."""
    total_s = f"{total / rate_hz:.1f}"
    return (
        f"[{done / rate_hz:{len(total_s)}.1f} s / {total_s} s {verb}]"
        f" {progress.eta(done, total, elapsed_s)}"
    )
