"""``robot-daemon run`` (the daemon, with online learning), ``robot-daemon metrics`` (its
Prometheus exporter) and ``robot-daemon keys``."""

from __future__ import annotations

import argparse
import sys

from robot_daemon.cli.args import Subparsers, help_handler, positive_float, positive_int

LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


def add(sub: Subparsers) -> None:
    """Register run, metrics and keys."""
    _add_run(sub)
    _add_metrics(sub)
    _add_keys(sub)


def _add_run(sub: Subparsers) -> None:
    p = sub.add_parser(
        "run",
        help="the on-robot daemon: serve predictions for live ZeroMQ frames",
        description=(
            "Connects to the sensor publishers, answers every frame with the model's "
            "per-class probabilities in one 'pred' message per tick, publishes 'status' "
            "every second, reloads the model on SIGHUP, exits 0 on SIGTERM and 130 on SIGINT. "
            "Settings "
            "come from --config (TOML, see docs/daemon-reference.md), then from these flags."
        ),
    )
    p.add_argument("--config", metavar="FILE.toml", help="settings file (flags override it)")
    p.add_argument("--model", metavar="PATH", help="model file (default models/default.npz)")
    p.add_argument("--shadow", metavar="PATH",
                   help="a candidate model run on the same frames after each pred, answering"
                   " on the 'shadow' topic and compared in status; never delays a pred")
    p.add_argument("--capture", metavar="DIR",
                   help="capture the frames worth a label or a training step (see"
                   " --capture-triggers) into bags in DIR, within --capture-max-mb")
    p.add_argument("--capture-max-mb", type=positive_float, metavar="N",
                   help="hard bound on the capture bags in DIR; the oldest go first"
                   " (default 1000)")
    p.add_argument("--capture-margin", type=float, metavar="P",
                   help="capture a frame whose probability is this close to a class's"
                   " threshold (default 0.05)")
    p.add_argument("--capture-rate", type=positive_float, metavar="N",
                   help="frames captured a second at most, on average (default 10)")
    p.add_argument("--capture-triggers", type=_triggers, metavar="LIST",
                   help="comma-separated: uncertain, disagree (with --shadow), contradict"
                   " (with --online), health (default all)")
    p.add_argument("--frames", action="append", metavar="ENDPOINT",
                   help="sensor publisher to connect to, repeatable "
                   "(default tcp://127.0.0.1:5556)")
    p.add_argument("--labels", metavar="ENDPOINT",
                   help="labelled-frame publisher to connect to: learned from with"
                   " --online, kept with the captured frames with --capture")
    p.add_argument("--pred", metavar="ENDPOINT",
                   help="endpoint to bind for pred and status (default tcp://127.0.0.1:5557)")
    p.add_argument("--interval-ms", type=positive_float, metavar="N",
                   help="tick interval (default 20)")
    p.add_argument("--max-batch", type=positive_int, metavar="N",
                   help="frames answered per tick; older ones are dropped (default 256)")
    p.add_argument("--status-interval", type=positive_float, metavar="S",
                   help="seconds between status messages (default 1)")
    p.add_argument("--tick-phase", choices=["fixed", "auto"],
                   help="auto: the tick grid moves to fall just after the sensors' frames,"
                   " and a tick goes out as soon as they came; fixed: it stays where it"
                   " started, for ticks at known times (default auto)")
    p.add_argument("--log-summary-s", type=positive_float, metavar="S",
                   help="seconds between summary lines in the log; state changes are logged"
                   " when they happen (default 60)")
    p.add_argument("--stale-after-ms", type=positive_float, metavar="N",
                   help="a frames endpoint or src silent this long is stale; status "
                   "health turns degraded or blind (default 200)")
    p.add_argument("--metrics", metavar="[ADDRESS:]PORT",
                   help="serve Prometheus metrics here, from an exporter process the daemon"
                   " starts (a bare port: loopback only; needs the metrics extra)")
    p.add_argument("--log-level", choices=LOG_LEVELS)
    _add_online_flags(p)
    p.set_defaults(handler=_run_daemon)


def _add_online_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("online learning (docs/deploy.md, docs/security.md)")
    g.add_argument("--online", action="store_true", default=None,
                   help="fine-tune the model from --labels between ticks")
    g.add_argument("--online-batch", type=positive_int, metavar="N",
                   help="labelled frames per SGD step (default 100)")
    g.add_argument("--online-lr", type=positive_float, metavar="LR",
                   help="SGD learning rate (default 0.1)")
    g.add_argument("--checkpoint-dir", metavar="DIR",
                   help="save checkpoints here and resume the newest on start")
    g.add_argument("--checkpoint-every-steps", type=positive_int, metavar="N",
                   help="save after N accepted steps (default 100)")
    g.add_argument("--checkpoint-every-s", type=positive_float, metavar="S",
                   help="save S seconds after the last save if the model changed (default 60)")
    g.add_argument("--checkpoint-keep", type=positive_int, metavar="K",
                   help="checkpoints kept (default 5)")
    g.add_argument("--curve-secret-key", metavar="FILE",
                   help="the daemon's CURVE key pair (NAME.key_secret): labels need CURVE")
    g.add_argument("--curve-allow", metavar="DIR",
                   help="directory of the allowed label publishers' public keys (*.key)")
    g.add_argument("--insecure-labels", action="store_true", default=None,
                   help="learn from a non-loopback labels endpoint without CURVE")


def _triggers(text: str) -> list[str]:
    """``uncertain,health``: the capture triggers (checked with the config)."""
    return [name.strip() for name in text.split(",") if name.strip()]


def _run_daemon(args: argparse.Namespace) -> int:
    import signal

    # SIGUSR1 and SIGUSR2 ignored from the start (serve.signals says why), not only once
    # the loop catches them: the imports, the model and the capture take half a second in
    # which a log rotation tool's SIGUSR1 ended the daemon (exit 138).
    for signum in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_IGN)
    from robot_daemon import config
    from robot_daemon.serve import daemon

    cfg = config.load(args.config, {
        "model": args.model, "shadow": args.shadow, "frames": args.frames,
        "labels": args.labels, "capture": args.capture, "capture_max_mb": args.capture_max_mb,
        "capture_margin": args.capture_margin, "capture_rate": args.capture_rate,
        "capture_triggers": args.capture_triggers,
        "pred": args.pred, "interval_ms": args.interval_ms, "max_batch": args.max_batch,
        "status_interval_s": args.status_interval, "stale_after_ms": args.stale_after_ms,
        "log_summary_s": args.log_summary_s, "tick_phase": args.tick_phase,
        "log_level": args.log_level, "metrics": args.metrics,
        "online": args.online, "online_batch": args.online_batch, "online_lr": args.online_lr,
        "checkpoint_dir": args.checkpoint_dir,
        "checkpoint_every_steps": args.checkpoint_every_steps,
        "checkpoint_every_s": args.checkpoint_every_s, "checkpoint_keep": args.checkpoint_keep,
        "curve_secret_key": args.curve_secret_key, "curve_allow": args.curve_allow,
        "insecure_labels": args.insecure_labels,
    })
    _log_to_stderr(cfg.log_level)
    return daemon.run(cfg)


def _log_to_stderr(level: str, prefix: str = "") -> None:
    import logging
    import os

    from robot_daemon.printable import PrintableFormatter

    # journald stamps every line itself (JOURNAL_STREAM is set when stderr goes there).
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PrintableFormatter(f"{stamp}%(levelname)s {prefix}%(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


def _add_metrics(sub: Subparsers) -> None:
    p = sub.add_parser(
        "metrics",
        help="the Prometheus exporter: a daemon's status on http://ADDRESS:PORT/metrics",
        description=(
            "Subscribes to a daemon's status (on its pred endpoint) and serves it as "
            "Prometheus metrics, in a process of its own at nice 19, with bounded HTTP "
            "(docs/deploy.md, 'Metrics'). 'run --metrics' starts one itself; this command "
            "runs one on its own (a unit of its own, a test). Exits 0 on SIGTERM."
        ),
    )
    p.add_argument("--pred", metavar="ENDPOINT", default="tcp://127.0.0.1:5557",
                   help="the daemon's pred endpoint to connect to (default "
                   "tcp://127.0.0.1:5557)")
    p.add_argument("--listen", metavar="[ADDRESS:]PORT", default="9108",
                   help="where to serve /metrics (default 9108, loopback only; 0: a free "
                   "port, logged)")
    p.add_argument("--allow-remote-bind", action="store_true",
                   help="permit a --listen address that is not loopback")
    p.add_argument("--log-level", choices=LOG_LEVELS, default="INFO")
    # Set by the daemon that starts it: exit once that process is gone, and retry a port
    # in use instead of exiting (robot_daemon.serve.exporter_child).
    p.add_argument("--child-of", type=positive_int, metavar="PID", help=argparse.SUPPRESS)
    p.set_defaults(handler=_run_metrics)


def _run_metrics(args: argparse.Namespace) -> int:
    from robot_daemon import config

    host, port = config.check_metrics_address(args.listen, args.allow_remote_bind)
    _log_to_stderr(args.log_level, prefix="metrics: ")
    from robot_daemon.serve import exporter  # needs prometheus-client: a clear error if not

    return exporter.run(exporter.Options(args.pred, host, port, parent=args.child_of))


def _add_keys(sub: Subparsers) -> None:
    p = sub.add_parser("keys", help="CurveZMQ key pairs for the label channel",
                       description="See docs/security.md for installing and rotating keys.")
    p.set_defaults(handler=help_handler(p))
    keys = p.add_subparsers(dest="keys_command", metavar="KEYS_COMMAND")
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
