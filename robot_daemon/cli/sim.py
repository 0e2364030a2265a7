"""``robot-daemon sim``: a simulated bag of sidewalk driving."""

from __future__ import annotations

import argparse

from robot_daemon.cli.args import Subparsers, finite_float, positive_float, seconds, seed
from robot_daemon.paths import check_output


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
    p.set_defaults(handler=_run_sim)


def _run_sim(args: argparse.Namespace) -> int:
    from robot_daemon import sim

    check_output(args.out)
    data = sim.simulate(
        args.duration, args.rate, args.seed, calibration_drift=args.calibration_drift
    )
    sim.write_bag(args.out, data)
    print(f"wrote {args.out}")
    print(sim.describe(data))
    return 0
