"""``robot-daemon bag record | play | info | export``: sensor bags."""

from __future__ import annotations

import argparse
import json
import sys

from robot_daemon.cli import progress
from robot_daemon.cli.args import (
    Subparsers,
    add_overwrite,
    help_handler,
    non_negative_float,
    non_negative_seconds,
    positive_int,
    seconds,
    stop_on_signals,
)
from robot_daemon.errors import ConfigError
from robot_daemon.paths import check_output
from robot_daemon.printable import printable_lines


def add(sub: Subparsers) -> None:
    p = sub.add_parser(
        "bag",
        help="record, play, inspect and export sensor bags (MCAP files)",
        description=(
            "Sensor bags are MCAP files of wire payloads, one channel per topic "
            "(docs/bags.md). Needs the bag extra: pip install 'robot-daemon[bag]'."
        ),
    )
    p.set_defaults(handler=help_handler(p))
    bag = p.add_subparsers(dest="bag_command", metavar="BAG_COMMAND")

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
    rec.add_argument("out", metavar="OUT", help="bag to write")
    add_overwrite(rec, "OUT")
    rec.add_argument(
        "--connect",
        action="append",
        required=True,
        metavar="ENDPOINT",
        help="publisher endpoint, e.g. tcp://127.0.0.1:5556 (repeatable)",
    )
    rec.add_argument("--topics", nargs="+", metavar="TOPIC", help="topics (default: all)")
    rec.add_argument("--duration", type=seconds, metavar="S", help="stop after S seconds")
    rec.add_argument(
        "--flush-interval",
        type=seconds,
        default=0.25,
        metavar="S",
        help="write the chunk in progress every S seconds (default 0.25)",
    )
    rec.set_defaults(handler=_run_bag_record)

    play = bag.add_parser(
        "play",
        help="publish one or more bags' payloads with the recorded timing",
        description=(
            "Binds a publisher and sends the bags' payloads byte-identical, with the "
            "recorded receive-time gaps divided by --rate. Several bags play as one, "
            "merged by receive time (as ros2 bag play -i A -i B does). Subscribers "
            "connect to it. The flags follow ros2 bag play's where they mean the same."
        ),
    )
    play.add_argument("bag_in", nargs="*", metavar="IN", help="bag(s) to play")
    play.add_argument(
        "-i",
        "--input",
        action="append",
        default=[],
        metavar="IN",
        help="a bag to play, repeatable (ros2 bag play's way; instead of IN ...)",
    )
    play.add_argument(
        "--bind", required=True, metavar="ENDPOINT", help="e.g. tcp://127.0.0.1:5556"
    )
    play.add_argument(
        "--allow-remote-bind",
        action="store_true",
        help="allow a --bind that is not on this machine (tcp://0.0.0.0:..., a LAN "
        "address): the daemon's allow_remote_bind",
    )
    play.add_argument(
        "-r",
        "--rate",
        type=non_negative_float,
        default=1.0,
        metavar="R",
        help="speed factor (default 1; 2 = twice as fast; 0 = as fast as possible, lossless)",
    )
    play.add_argument(
        "-l", "--loop", action="store_true", help="play again from the start, forever"
    )
    play.add_argument(
        "--start-offset",
        type=non_negative_seconds,
        default=0.0,
        metavar="S",
        help="skip the first S seconds of the bag",
    )
    play.add_argument(
        "--playback-duration",
        "--duration",
        dest="duration",
        type=seconds,
        metavar="S",
        help="play only S seconds of the bag (from --start-offset; default: to the end)",
    )
    play.add_argument(
        "-d",
        "--delay",
        type=non_negative_seconds,
        default=0.0,
        metavar="S",
        help="wait S seconds before playing (before each pass with --loop)",
    )
    play.add_argument("--topics", nargs="+", metavar="TOPIC", help="topics (default: all)")
    play.add_argument(
        "--exclude-topics", nargs="+", default=(), metavar="TOPIC", help="topics not to play"
    )
    play.add_argument(
        "--wait-subscribers",
        type=positive_int,
        default=0,
        metavar="N",
        help="start once N subscriptions to the played topics arrived (avoids losing the "
        "first messages to a subscriber that is still connecting)",
    )
    play.add_argument(
        "--drain",
        type=non_negative_seconds,
        default=1.0,
        metavar="S",
        help="keep the socket open S seconds after the last message, so that "
        "subscribers that are behind get the tail (default 1)",
    )
    progress.add_flag(play)
    play.set_defaults(handler=_run_bag_play)

    info = bag.add_parser("info", help="size, duration, topics, rates, d and c, attachments,"
                          " metadata, integrity")
    info.add_argument("bag_in", metavar="IN", help="bag to inspect")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(handler=_run_bag_info)

    export = bag.add_parser(
        "export",
        help="write a JSON-encoded copy that Foxglove can plot",
        description="Decodes every msgpack payload into an MCAP copy with JSON messages and "
        "JSON schemas; channels of other encodings, attachments (up to 64 MiB each) and "
        "other tools' metadata records are copied unchanged; what is left out is named in "
        "the summary.",
    )
    export.add_argument("bag_in", metavar="IN", help="bag to export")
    export.add_argument("out", metavar="OUT", help="MCAP file to write (never IN)")
    add_overwrite(export, "OUT")
    export.add_argument(
        "--json", action="store_true", required=True, help="JSON encoding (the only format)"
    )
    export.set_defaults(handler=_run_bag_export)


def _run_bag_record(args: argparse.Namespace) -> int:
    from robot_daemon.bag import record as bagrecord

    check_output(args.out, overwrite=args.overwrite, what="bag")
    where = ", ".join(args.connect)
    with stop_on_signals() as stop:  # said once the handlers are set: a signal is safe
        print(f"recording {where} to {args.out} (Ctrl-C to stop)", file=sys.stderr)
        summary = bagrecord.record(
            args.out,
            args.connect,
            topics=args.topics,
            duration_s=args.duration,
            stop=stop,
            flush_interval_ns=round(args.flush_interval * 1e9),
        )
    print(printable_lines(summary.describe()))  # topic names as publishers sent them
    return 0


def _run_bag_play(args: argparse.Namespace) -> int:
    from robot_daemon.bag import play as bagplay

    if bool(args.bag_in) == bool(args.input):
        raise ConfigError(
            "give the bags to play either as IN ... or as -i IN -i IN ..., "
            + ("not both" if args.bag_in else "none given")
        )
    bags = args.bag_in or args.input
    options = bagplay.PlayOptions(
        rate=args.rate,
        loop=args.loop,
        start_offset_s=args.start_offset,
        duration_s=args.duration,
        topics=args.topics,
        exclude_topics=args.exclude_topics,
        wait_subscribers=args.wait_subscribers,
        delay_s=args.delay,
        drain_s=args.drain,
        allow_remote_bind=args.allow_remote_bind,
    )
    waiting = f", waiting for {args.wait_subscribers} subscription(s)" * (args.wait_subscribers > 0)

    def ready() -> None:
        print(f"playing {', '.join(bags)} on {args.bind}{waiting}", file=sys.stderr)

    with progress.ProgressLine(sys.stderr, enabled=args.progress) as line:

        def show(where: bagplay.PlayProgress) -> None:
            if line.due():
                line.update(where.describe())

        with stop_on_signals() as stop:
            summary = bagplay.play(
                bags,
                args.bind,
                options,
                stop=stop,
                on_ready=ready,
                on_progress=show if line.enabled else None,
            )
    print(printable_lines(summary.describe()))  # topic names as the bags hold them
    return 0


def _run_bag_info(args: argparse.Namespace) -> int:
    from robot_daemon.bag import BagReader

    with BagReader(args.bag_in) as bag:
        report = bag.info()
    # Names, topics and metadata as the bag holds them: escaped (JSON escapes its own).
    print(json.dumps(report.as_dict(), indent=2) if args.json
          else printable_lines(report.describe()))
    return 0


def _run_bag_export(args: argparse.Namespace) -> int:
    from robot_daemon.bag import export as bagexport

    check_output(args.out, [args.bag_in], overwrite=args.overwrite, what="bag")
    print(printable_lines(bagexport.export_json(args.bag_in, args.out).describe()))
    return 0
