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
import difflib
import errno
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from robot_daemon import __version__, exits
from robot_daemon.cli import args as arguments
from robot_daemon.cli import bag, demo, fleet, flops, offline, serve, sim, watch
from robot_daemon.errors import RobotDaemonError
from robot_daemon.printable import printable_lines

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse's parser made strict and helpful; subcommands' parsers are of this class.

    No abbreviations: ``run --frame X`` ran as ``--frames X``, so a typo in a unit file
    meant something else. A mistyped flag or command is answered with the closest real
    one. The error line is escaped: it quotes what was typed (``run $'\\e[2J'``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]  # typeshed's overloads
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and self._subparsers is None:
            # A command's own parser knows its flags: the top one would only say
            # "unrecognized arguments" without a suggestion.
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        """One line, as every error of every command: the usage is what --help is for."""
        line = printable_lines(message + self._suggestion(message)).replace("\n", " ")
        self.exit(2, f"{self.prog}: error: {line} (see {self.prog} --help)\n")

    def _suggestion(self, message: str) -> str:
        """``; did you mean --model?`` for the closest flag or command, if one is close."""
        if message.startswith("unrecognized arguments: "):
            typed = message.split(": ", 1)[1].split()[0].split("=", 1)[0]
            known = list(self._option_string_actions)
        else:
            choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
            if choice is None:
                return ""
            typed, known = choice[1], re.findall(r"'([^']*)'", choice[2])
        close = difflib.get_close_matches(typed, known, n=1, cutoff=0.6)
        return f"; did you mean {close[0]}?" if close else ""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="robot-daemon",
        description="On-robot obstacle classifier: NumPy MLP, ZeroMQ daemon, sensor bags.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.set_defaults(handler=arguments.help_handler(parser))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in (flops, bag, sim, offline, fleet, serve, watch, demo):
        group.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the subcommand, return its exit code.

    Exit codes: the handler's (0 on success), 2 for a :class:`RobotDaemonError` (one line
    on stderr), 130 for Ctrl-C, 143 for a job that SIGTERM stopped (a command that
    finishes cleanly on SIGTERM, such as ``run``, exits 0), 141
    without a word when the reader of stdout has gone
    (:mod:`robot_daemon.exits`).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        with arguments.terminate_raises():
            code = arguments.exit_code(handler(args))
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        return code
    except BrokenPipeError:
        _discard_stdout()
        return exits.EXIT_BROKEN_PIPE
    except RobotDaemonError as exc:
        # Messages name paths and members from outside (a file named with ESC in it).
        print(f"robot-daemon {_command_name(args)}: error: {printable_lines(str(exc))}",
              file=sys.stderr)
        return 2
    except OSError as exc:
        # A full disk or quota where a module writes without a message of its own (a
        # model file, a plot): one line, not a traceback. Other OSErrors are bugs.
        if exc.errno not in _DISK_FULL:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        print(f"robot-daemon {_command_name(args)}: error: cannot write{where}:"
              f" {printable_lines(exc.strerror or str(exc))}; free some space and run again",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return exits.EXIT_INTERRUPTED
    except arguments.Terminated:
        return exits.EXIT_TERMINATED


#: The errnos of a file system that takes no more data.
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def _command_name(args: argparse.Namespace) -> str:
    """``bag play``, ``keys generate``, ``run``: the command as typed, for its errors."""
    words = (args.command, getattr(args, "bag_command", None), getattr(args, "keys_command", None))
    return " ".join(w for w in words if w)


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
