"""The ``robot-daemon`` command line.

Subcommands are thin: each parses its arguments and calls into the module that owns the
work, where tests can reach it. Every subcommand registers itself through one
``_add_<name>`` function below and returns a process exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from robot_daemon import __version__
from robot_daemon.errors import RobotDaemonError

Handler = Callable[[argparse.Namespace], int]


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _add_flops(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "flops",
        help="count the matmul FLOPs of training vs inference (the user's question)",
        description=(
            "Runs inference on N examples and the user's MLP.sgd (10 epochs, batch 100) on "
            "the same N examples with every matrix multiplication instrumented, and prints "
            "both FLOP counts, their ratio and the rounded answer."
        ),
    )
    p.add_argument("--n", type=_positive_int, default=10_000, help="examples (default 10000)")
    p.add_argument("--d", type=_positive_int, default=16, help="input features (default 16)")
    p.add_argument("--h", type=_positive_int, default=64, help="hidden width (default 64)")
    p.add_argument("--c", type=_positive_int, default=8, help="classes (default 8)")
    p.add_argument(
        "--skip-input-grad",
        action="store_true",
        help="the first Linear skips its input gradient (nobody uses it)",
    )
    p.add_argument(
        "--recompute",
        action="store_true",
        help="recompute checkpointing: masks recomputed in backward instead of stored",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_run_flops)


def _run_flops(args: argparse.Namespace) -> int:
    from robot_daemon import flops

    report = flops.measure(
        n=args.n,
        d=args.d,
        h=args.h,
        c=args.c,
        skip_input_grad=args.skip_input_grad,
        recompute=args.recompute,
    )
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.describe())
    return 0


def _add_bag(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bag",
        help="record, play, inspect and export sensor bags (MCAP files)",
        description=(
            "Sensor bags are MCAP files of wire payloads, one channel per topic "
            "(docs/bags.md). Needs the bag extra: pip install 'robot-daemon[bag]'."
        ),
    )
    bag = p.add_subparsers(dest="bag_command", metavar="BAG_COMMAND")
    bag.required = True

    rec = bag.add_parser(
        "record",
        help="subscribe to publishers and write what arrives into a bag",
        description=(
            "Connects a SUB socket to every --connect endpoint and writes each message "
            "byte for byte with its receive time (wall clock) and sensor time (the "
            "payload's t). Flushes a chunk every --flush-interval; Ctrl-C or SIGTERM "
            "finishes the file (exit 0); a crash loses at most the last interval."
        ),
    )
    rec.add_argument("out", metavar="OUT", help="bag to write (overwritten)")
    rec.add_argument(
        "--connect",
        action="append",
        required=True,
        metavar="ENDPOINT",
        help="publisher endpoint, e.g. tcp://127.0.0.1:5556 (repeatable)",
    )
    rec.add_argument("--topics", nargs="+", metavar="TOPIC", help="topics (default: all)")
    rec.add_argument("--duration", type=_positive_float, metavar="S", help="stop after S seconds")
    rec.add_argument(
        "--flush-interval",
        type=_positive_float,
        default=0.25,
        metavar="S",
        help="write the chunk in progress every S seconds (default 0.25)",
    )
    rec.set_defaults(handler=_run_bag_record)

    play = bag.add_parser(
        "play",
        help="publish a bag's payloads with the recorded timing",
        description=(
            "Binds a publisher and sends the bag's payloads byte-identical, with the "
            "recorded receive-time gaps divided by --rate. Subscribers connect to it."
        ),
    )
    play.add_argument("bag_in", metavar="IN", help="bag to play")
    play.add_argument(
        "--bind", required=True, metavar="ENDPOINT", help="e.g. tcp://127.0.0.1:5556"
    )
    play.add_argument(
        "--rate",
        type=_non_negative_float,
        default=1.0,
        metavar="R",
        help="speed factor (default 1; 2 = twice as fast; 0 = as fast as possible, lossless)",
    )
    play.add_argument("--loop", action="store_true", help="play again from the start, forever")
    play.add_argument(
        "--start-offset",
        type=_non_negative_float,
        default=0.0,
        metavar="S",
        help="skip the first S seconds of the bag",
    )
    play.add_argument("--topics", nargs="+", metavar="TOPIC", help="topics (default: all)")
    play.add_argument(
        "--wait-subscribers",
        type=_positive_int,
        default=0,
        metavar="N",
        help="start once N subscriptions to the played topics arrived (avoids losing the "
        "first messages to a subscriber that is still connecting)",
    )
    play.add_argument(
        "--drain",
        type=_non_negative_float,
        default=1.0,
        metavar="S",
        help="keep the socket open S seconds after the last message, so that "
        "subscribers that are behind get the tail (default 1)",
    )
    play.set_defaults(handler=_run_bag_play)

    info = bag.add_parser("info", help="duration, topics, rates, d and c, integrity")
    info.add_argument("bag_in", metavar="IN", help="bag to inspect")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(handler=_run_bag_info)

    export = bag.add_parser(
        "export",
        help="write a JSON-encoded copy that Foxglove can plot",
        description="Decodes every payload and writes an MCAP copy with JSON messages and "
        "JSON schemas; payloads that do not decode are counted and left out.",
    )
    export.add_argument("bag_in", metavar="IN", help="bag to export")
    export.add_argument("out", metavar="OUT", help="MCAP file to write (overwritten)")
    export.add_argument(
        "--json", action="store_true", required=True, help="JSON encoding (the only format)"
    )
    export.set_defaults(handler=_run_bag_export)


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event that SIGINT and SIGTERM set, so that loops finish their files cleanly."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _run_bag_record(args: argparse.Namespace) -> int:
    from robot_daemon.bag import record as bagrecord

    where = ", ".join(args.connect)
    print(f"recording {where} to {args.out} (Ctrl-C to stop)", file=sys.stderr)
    with _stop_on_signals() as stop:
        summary = bagrecord.record(
            args.out,
            args.connect,
            topics=args.topics,
            duration_s=args.duration,
            stop=stop,
            flush_interval_ns=round(args.flush_interval * 1e9),
        )
    print(summary.describe())
    return 0


def _run_bag_play(args: argparse.Namespace) -> int:
    from robot_daemon.bag import play as bagplay

    options = bagplay.PlayOptions(
        rate=args.rate,
        loop=args.loop,
        start_offset_s=args.start_offset,
        topics=args.topics,
        wait_subscribers=args.wait_subscribers,
        drain_s=args.drain,
    )
    waiting = f", waiting for {args.wait_subscribers} subscription(s)" * (args.wait_subscribers > 0)
    print(f"playing {args.bag_in} on {args.bind}{waiting}", file=sys.stderr)
    with _stop_on_signals() as stop:
        summary = bagplay.play(args.bag_in, args.bind, options, stop=stop)
    print(summary.describe())
    return 0


def _run_bag_info(args: argparse.Namespace) -> int:
    from robot_daemon.bag import BagReader

    with BagReader(args.bag_in) as bag:
        report = bag.info()
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.describe())
    return 0


def _run_bag_export(args: argparse.Namespace) -> int:
    from robot_daemon.bag import export as bagexport

    print(bagexport.export_json(args.bag_in, args.out).describe())
    return 0


def _add_sim(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        "--duration", type=_positive_float, required=True, metavar="S", help="seconds to simulate"
    )
    p.add_argument(
        "--rate", type=_positive_float, default=50.0, metavar="HZ", help="readings/s (default 50)"
    )
    p.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")
    p.add_argument(
        "--calibration-drift",
        type=_finite_float,
        default=0.0,
        metavar="K",
        help="systematic sensor miscalibration, 0 = calibrated (default 0)",
    )
    p.set_defaults(handler=_run_sim)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _run_sim(args: argparse.Namespace) -> int:
    from robot_daemon import sim

    data = sim.simulate(
        args.duration, args.rate, args.seed, calibration_drift=args.calibration_drift
    )
    sim.write_bag(args.out, data)
    print(f"wrote {args.out}")
    print(sim.describe(data))
    return 0


def _add_train(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "train",
        help="train a model file from the labelled frames of bags",
        description=(
            "Reads every 'label' message of the bags, keeps the last --val-fraction of each "
            "bag for validation, fits the input normalisation, trains the MLP with the "
            "user's SGD (defaults: 10 epochs, batch 100, lr 0.1), tunes one threshold per "
            "class on the validation split and writes the model atomically. The same "
            "command and seed write the same bytes."
        ),
    )
    p.add_argument("bags", nargs="+", metavar="BAG", help="MCAP bags with 'label' messages")
    p.add_argument("--out", required=True, metavar="MODEL", help="model file to write (.npz)")
    p.add_argument("--h", type=_positive_int, default=64, help="hidden width (default 64)")
    p.add_argument("--epochs", type=_positive_int, default=10, help="passes (default 10)")
    p.add_argument("--batch-size", type=_positive_int, default=100, help="default 100")
    p.add_argument("--lr", type=_positive_float, default=0.1, help="learning rate (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="initialisation and shuffling seed")
    p.add_argument("--val-fraction", type=_fraction, default=0.2,
                   help="tail of each bag kept for validation (default 0.2)")
    p.add_argument("--shuffle", action="store_true", help="new example order every epoch")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.set_defaults(handler=_run_train)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _run_train(args: argparse.Namespace) -> int:
    from robot_daemon.offline import train

    data = train.read_labelled(args.bags)
    print(f"{data.n} labelled frames from {len(args.bags)} bag(s), d={data.X.shape[1]},"
          f" c={data.Y.shape[1]}; {data.rejected} rejected", flush=True)
    for warning in data.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    config = train.TrainConfig(
        h=args.h, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        val_fraction=args.val_fraction, shuffle=args.shuffle, dtype=args.dtype,
    )
    model = train.train(data, config, lambda report: print(report.describe(), flush=True))
    model.save(args.out)
    validation = model.training["validation"]
    if validation["n"]:
        print(f"validation ({validation['n']} frames, tuned thresholds): macro-F1"
              f" {validation['macro_f1']:.3f}")
        for name, f1 in validation["f1"].items():
            print(f"  {name:<16} F1 {f1:.3f}")
    print(f"wrote {args.out}")
    return 0


def _add_eval(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "eval",
        help="score a model on labelled bags, beside logistic regression",
        description=(
            "Per-class precision, recall, F1, average precision and support; micro and macro "
            "F1, hamming loss and subset accuracy of the model's thresholded predictions on "
            "the labelled frames of the bags, beside a logistic regression trained on the "
            "model's training bags (or --baseline-train)."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="model file (.npz)")
    p.add_argument("bags", nargs="+", metavar="BAG", help="MCAP bags with 'label' messages")
    p.add_argument("--baseline-train", nargs="+", metavar="BAG",
                   help="bags to train the baseline on (default: the model's training bags)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from robot_daemon import model
    from robot_daemon.offline import evaluate, train

    loaded = model.load(args.model)
    data = train.read_labelled(args.bags)
    if data.X.shape[1] != loaded.d or data.Y.shape[1] != loaded.c:
        raise RobotDaemonError(
            f"the bags hold d={data.X.shape[1]}, c={data.Y.shape[1]}; the model expects"
            f" d={loaded.d}, c={loaded.c}"
        )
    results = [evaluate.evaluate_model(loaded, data)]
    sources = evaluate.baseline_sources(loaded, args.baseline_train)
    note = None
    if isinstance(sources, str):
        note = f"baseline skipped: {sources}"
    else:
        baseline = evaluate.fit_baseline(train.read_labelled(sources))
        results.append(baseline.evaluate(data))
    if args.json:
        out: dict[str, Any] = {r.name: r.as_dict() for r in results}
        out["baseline_note"] = note
        print(json.dumps(out, indent=2))
    else:
        print(evaluate.describe(results))
        if note:
            print(note)
    return 0


def _add_replay(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay",
        help="run a bag's frames through a model offline, writing pred messages",
        description=(
            "Cuts the bag's frames into ticks on their sensor time with the daemon's "
            "batching rules, runs the model on every tick as fast as possible and writes "
            "one 'pred' message per tick to a new bag. Two runs write identical bytes."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="model file (.npz)")
    p.add_argument("bag", metavar="BAG", help="MCAP bag with 'frame' messages")
    p.add_argument("--out", required=True, metavar="PRED_BAG", help="bag to write")
    p.add_argument("--interval-ms", type=_positive_float, default=20.0,
                   help="tick interval (default 20 ms)")
    p.add_argument("--max-batch", type=_positive_int, default=256,
                   help="frames answered per tick; older ones are dropped (default 256)")
    p.set_defaults(handler=_run_replay)


def _run_replay(args: argparse.Namespace) -> int:
    from pathlib import Path

    from robot_daemon import model
    from robot_daemon.offline import replay

    stats = replay.replay(
        model.load(args.model), args.bag, args.out, model_name=Path(args.model).name,
        interval_ms=args.interval_ms, max_batch=args.max_batch,
    )
    print(stats.describe())
    print(f"wrote {args.out}")
    return 0


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="the on-robot daemon: serve predictions for live ZeroMQ frames",
        description=(
            "Connects to the sensor publishers, answers every frame with the model's "
            "per-class probabilities in one 'pred' message per tick, publishes 'status' "
            "every second, reloads the model on SIGHUP and exits 0 on SIGTERM. Settings "
            "come from --config (TOML, see docs/deploy.md), then from these flags."
        ),
    )
    p.add_argument("--config", metavar="FILE.toml", help="settings file (flags override it)")
    p.add_argument("--model", metavar="PATH", help="model file (default models/default.npz)")
    p.add_argument("--frames", action="append", metavar="ENDPOINT",
                   help="sensor publisher to connect to, repeatable "
                   "(default tcp://127.0.0.1:5556)")
    p.add_argument("--labels", metavar="ENDPOINT",
                   help="labelled-frame publisher to connect to (used with --online)")
    p.add_argument("--pred", metavar="ENDPOINT",
                   help="endpoint to bind for pred and status (default tcp://127.0.0.1:5557)")
    p.add_argument("--interval-ms", type=_positive_float, metavar="N",
                   help="tick interval (default 20)")
    p.add_argument("--max-batch", type=_positive_int, metavar="N",
                   help="frames answered per tick; older ones are dropped (default 256)")
    p.add_argument("--status-interval", type=_positive_float, metavar="S",
                   help="seconds between status messages (default 1)")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    _add_online_flags(p)
    p.set_defaults(handler=_run_daemon)


def _add_online_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("online learning (docs/deploy.md, docs/security.md)")
    g.add_argument("--online", action="store_true", default=None,
                   help="fine-tune the model from --labels between ticks")
    g.add_argument("--online-batch", type=_positive_int, metavar="N",
                   help="labelled frames per SGD step (default 100)")
    g.add_argument("--online-lr", type=_positive_float, metavar="LR",
                   help="SGD learning rate (default 0.1)")
    g.add_argument("--checkpoint-dir", metavar="DIR",
                   help="save checkpoints here and resume the newest on start")
    g.add_argument("--checkpoint-every-steps", type=_positive_int, metavar="N",
                   help="save after N accepted steps (default 100)")
    g.add_argument("--checkpoint-every-s", type=_positive_float, metavar="S",
                   help="save S seconds after the last save if the model changed (default 60)")
    g.add_argument("--checkpoint-keep", type=_positive_int, metavar="K",
                   help="checkpoints kept (default 5)")
    g.add_argument("--curve-secret-key", metavar="FILE",
                   help="the daemon's CURVE key pair (NAME.key_secret): labels need CURVE")
    g.add_argument("--curve-allow", metavar="DIR",
                   help="directory of the allowed label publishers' public keys (*.key)")
    g.add_argument("--insecure-labels", action="store_true", default=None,
                   help="learn from a non-loopback labels endpoint without CURVE")


def _run_daemon(args: argparse.Namespace) -> int:
    import logging
    import os

    from robot_daemon.serve import config, daemon

    cfg = config.load(args.config, {
        "model": args.model, "frames": args.frames, "labels": args.labels,
        "pred": args.pred, "interval_ms": args.interval_ms, "max_batch": args.max_batch,
        "status_interval_s": args.status_interval, "log_level": args.log_level,
        "online": args.online, "online_batch": args.online_batch, "online_lr": args.online_lr,
        "checkpoint_dir": args.checkpoint_dir,
        "checkpoint_every_steps": args.checkpoint_every_steps,
        "checkpoint_every_s": args.checkpoint_every_s, "checkpoint_keep": args.checkpoint_keep,
        "curve_secret_key": args.curve_secret_key, "curve_allow": args.curve_allow,
        "insecure_labels": args.insecure_labels,
    })
    # journald stamps every line itself (JOURNAL_STREAM is set when stderr goes there).
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    logging.basicConfig(stream=sys.stderr, level=cfg.log_level,
                        format=stamp + "%(levelname)s %(message)s")
    logging.getLogger("robot_daemon").info("settings: %s", config.describe(cfg))
    return daemon.run(cfg)


def _add_keys(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("keys", help="CurveZMQ key pairs for the label channel",
                       description="See docs/security.md for installing and rotating keys.")
    keys = p.add_subparsers(dest="keys_command", metavar="KEYS_COMMAND")
    keys.required = True
    gen = keys.add_parser(
        "generate",
        help="write DIR/NAME.key (public) and DIR/NAME.key_secret (mode 0600)",
        description="Creates a CURVE key pair in ZeroMQ's certificate format. Refuses to "
        "overwrite an existing pair.",
    )
    gen.add_argument("directory", metavar="DIR", help="where to write the pair")
    gen.add_argument("name", metavar="NAME", help="the pair's name, e.g. robot-17 or labeller")
    gen.set_defaults(handler=_run_keys_generate)


def _run_keys_generate(args: argparse.Namespace) -> int:
    from robot_daemon.learn import keys

    pair = keys.generate(args.directory, args.name)
    print(f"public key (give to the other side): {pair.public}")
    print(f"secret key (keep on this machine):  {pair.secret}")
    return 0


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="see it work: a simulated bag streamed through the real daemon, live",
        description=(
            "Simulates a sidewalk bag (or reuses one), starts the real daemon, plays the "
            "bag's frames through it in real time x --rate with a live view, then prints "
            "frames answered, latency, the daemon's counters and per-class scores against "
            "the bag's labels, and writes a timeline PNG (needs the plot extra). Needs the "
            "demo extra (mcap). Ctrl-C stops everything cleanly (exit 130)."
        ),
    )
    p.add_argument("--bag", metavar="PATH",
                   help="play this bag instead of the simulated one")
    p.add_argument("--duration", type=_positive_float, default=60.0, metavar="S",
                   help="seconds of driving to simulate (default 60; not with --bag)")
    p.add_argument("--rate", type=_positive_float, default=1.0, metavar="R",
                   help="playback speed: 2 = twice real time (default 1)")
    p.add_argument("--model", default="models/default.npz", metavar="PATH",
                   help="model file (default models/default.npz)")
    p.add_argument("--seed", type=int, default=7, metavar="N",
                   help="simulator seed (default 7; not with --bag)")
    p.add_argument("--png", metavar="PATH", help="timeline to write (default WORKDIR/demo.png)")
    p.add_argument("--workdir", default="demo-out", metavar="DIR",
                   help="for the simulated bag, the daemon's log and the PNG"
                   " (default ./demo-out)")
    p.add_argument("--no-live", action="store_true",
                   help="a plain progress line every few seconds instead of the live view")
    p.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from robot_daemon.demo import run as demo

    options = demo.DemoOptions(
        model=Path(args.model), workdir=Path(args.workdir),
        bag=None if args.bag is None else Path(args.bag), duration_s=args.duration,
        rate=args.rate, seed=args.seed, png=None if args.png is None else Path(args.png),
        live=not args.no_live,
    )
    return demo.run(options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robot-daemon",
        description="On-robot obstacle classifier: NumPy MLP, ZeroMQ daemon, sensor bags.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_flops(sub)
    _add_bag(sub)
    _add_sim(sub)
    _add_train(sub)
    _add_eval(sub)
    _add_replay(sub)
    _add_run(sub)
    _add_keys(sub)
    _add_demo(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the subcommand, return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except RobotDaemonError as exc:
        print(f"robot-daemon {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
