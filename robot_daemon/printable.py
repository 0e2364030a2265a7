"""Text from outside the program, made safe to show on a terminal.

A terminal runs the control characters it is sent: ESC starts sequences that retitle the
window, clear the screen, move the cursor or make some terminals type an answer back; a
carriage return or a backspace overwrites what is shown; a bidi override reorders what
follows. So every string that came from the network (a frame's ``src``, a ``status``), a
bag or a file name goes through :func:`printable` before it is shown: whatever a
publisher sends, the operator reads it, and the terminal runs none of it.
"""

from __future__ import annotations

import logging
from typing import Any


def printable(text: str) -> str:
    """``text`` with each character that is not printable written as its Python escape.

    Not printable (``str.isprintable``): the C0 and C1 controls, DEL, bidi overrides and
    other format characters, line and paragraph separators, every space but ``" "``,
    surrogates and unassigned code points. They become ``\\x1b``, ``\\u202e``, ``\\n`` ...,
    as ``repr`` writes them, so that a person can tell what was sent. A printable string
    (every one a well-behaved publisher sends) is returned as it is, at the cost of one
    ``isprintable`` call.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def printable_lines(text: str) -> str:
    """:func:`printable` of each line of ``text``: its line breaks kept, nothing else."""
    return "\n".join(map(printable, text.split("\n")))


class PrintableFormatter(logging.Formatter):
    """A log formatter that escapes what a message carries from outside (a ``src``, a file
    or member name, a library's exception text) before it reaches the journal, and the
    terminal that shows it: the message's line breaks too (a model file named with a
    newline forged journal lines), a traceback's lines each."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return printable_lines(super().formatException(ei))
