"""The ``robot-daemon`` command line.

Subcommands are thin: each parses its arguments and calls into the module that owns the
work, where tests can reach it. One module per command group registers its parsers with
``add(sub)`` and holds their handlers, each of which returns a process exit code:
:mod:`.flops`, :mod:`.bag`, :mod:`.sim`, :mod:`.offline` (train, eval, replay),
:mod:`.fleet` (dataset; train, eval and replay on many bags), :mod:`.serve` (run,
metrics, keys), :mod:`.watch` and :mod:`.demo`. A new command goes into the module of its
group (or a new one), and into :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from robot_daemon import __version__
from robot_daemon.cli import bag, demo, fleet, flops, offline, serve, sim, watch
from robot_daemon.errors import RobotDaemonError
from robot_daemon.printable import printable_lines

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse's parser, its error line escaped: it quotes what was typed (``run $'\\e[2J'``
    printed ESC raw). Subcommands' parsers are of the same class."""

    def error(self, message: str) -> NoReturn:
        super().error(printable_lines(message))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="robot-daemon",
        description="On-robot obstacle classifier: NumPy MLP, ZeroMQ daemon, sensor bags.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for group in (flops, bag, sim, offline, fleet, serve, watch, demo):
        group.add(sub)
    return parser


#: Exit code when stdout is a pipe whose reader has gone (``robot-daemon ... | head``):
#: 128 + SIGPIPE, what the shell reports for the Unix tools that SIGPIPE kills.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the subcommand, return its exit code.

    Exit codes: the handler's (0 on success), 2 for a :class:`RobotDaemonError` (one line
    on stderr), 130 for Ctrl-C, :data:`EXIT_BROKEN_PIPE` without a word when the reader
    of stdout has gone.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        code = handler(args)
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        return code
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except RobotDaemonError as exc:
        # Messages name paths and members from outside (a file named with ESC in it).
        print(f"robot-daemon {args.command}: error: {printable_lines(str(exc))}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush of what is still
    buffered does not fail again and print a traceback (the Python docs' recipe for
    SIGPIPE)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (a test's capture): nothing is flushed at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
