"""The exit codes every command shares (README, "Exit codes"): 0 done, 1 ``compare``'s
hold, 2 an error said in one line, 130 after Ctrl-C, 143 for a job SIGTERM stopped (a
streaming command that SIGTERM stops cleanly exits 0), 141 when stdout's reader went."""

from __future__ import annotations

import signal
from typing import Final

#: SIGINT's, as the shell reports a command that Ctrl-C killed: 128 + 2.
EXIT_INTERRUPTED: Final = 128 + signal.SIGINT
#: A job (sim, train, eval, ...) stopped by SIGTERM before it was done: 128 + 15.
EXIT_TERMINATED: Final = 128 + signal.SIGTERM
#: stdout is a pipe whose reader has gone (``robot-daemon ... | head``): 128 + SIGPIPE,
#: what the shell reports for the Unix tools that SIGPIPE kills.
EXIT_BROKEN_PIPE: Final = 128 + signal.SIGPIPE


def after_clean_stop(signum: int | None, code: int = 0) -> int:
    """A streaming command's exit once a stop signal ended it cleanly (its files finished,
    its last tick served): :data:`EXIT_INTERRUPTED` after SIGINT, as any interrupted
    command; ``code`` after SIGTERM (systemd's stop) or none."""
    return EXIT_INTERRUPTED if signum == signal.SIGINT else code
