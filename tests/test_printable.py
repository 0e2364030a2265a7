"""Text from outside shown on a terminal: escaped, never run (issue 25)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from robot_daemon import wire
from robot_daemon.bag import BagMeta, BagWriter
from robot_daemon.cli import main
from robot_daemon.printable import printable, printable_lines

#: Retitles the terminal that prints it ("PWNED") and clears its screen.
HOSTILE = "\x1b]0;PWNED\x07\x1b[2J"


def test_control_characters_are_shown_as_their_escapes() -> None:
    assert printable(HOSTILE) == "\\x1b]0;PWNED\\x07\\x1b[2J"
    assert printable("a\rb\x08c\x7f\x9b") == "a\\rb\\x08c\\x7f\\x9b"  # C0, DEL, C1
    assert printable("lidar\u202eright\u2028\u00a0") == "lidar\\u202eright\\u2028\\xa0"
    assert printable_lines(f"one\n{HOSTILE}\n") == "one\n\\x1b]0;PWNED\\x07\\x1b[2J\n"


def test_printable_names_are_shown_as_they_are() -> None:
    for name in ("lidar-front", "radar 2", "caméra", "カメラ", "", "a\\x1b"):
        assert printable(name) is name


@given(st.text())
def test_whatever_comes_in_goes_out_printable(text: str) -> None:
    assert printable(text).isprintable()
    assert "\n" not in printable(text)


def test_bag_commands_show_a_bag_s_names_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bag's metadata and topics are whatever wrote it: bag info shows them escaped
    (and as JSON escapes), bag export's summary too."""
    bag = tmp_path / "hostile.mcap"
    meta = BagMeta(d=2, c=1, class_names=[HOSTILE], extra={"robot": HOSTILE})
    with BagWriter(bag, meta=meta) as writer:
        writer.write("frame", wire.encode_frame(0, 1.0, np.zeros(2, np.float32)), 10, 10)
        writer.write(HOSTILE, b"\xc1", 20, 20)  # no payload of ours: left out, by topic
    assert main(["bag", "info", str(bag)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "classes:    \\x1b]0;PWNED\\x07\\x1b[2J" in out
    assert "extra:      robot = \\x1b]0;PWNED\\x07\\x1b[2J" in out
    assert main(["bag", "info", "--json", str(bag)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert json.loads(out)["class_names"] == [HOSTILE]
    assert main(["bag", "export", str(bag), str(tmp_path / "out.mcap"), "--json"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "\\x1b]0;PWNED\\x07\\x1b[2J payloads that do not decode" in out


def test_the_daemons_log_lines_are_escaped() -> None:
    """A log line carrying a string from outside (a file name, a library's message)."""
    import logging

    from robot_daemon.printable import PrintableFormatter

    record = logging.LogRecord("robot_daemon", logging.WARNING, __file__, 1,
                               "reload refused: member %s", ("'\x1b[2JW2'",), None)
    line = PrintableFormatter("%(levelname)s %(message)s").format(record)
    assert line == "WARNING reload refused: member '\\x1b[2JW2'"
    # A newline in a file name forged journal lines: one line, escaped.
    record = logging.LogRecord("robot_daemon", logging.INFO, __file__, 1,
                               "reloaded %s", ("m\nWARNING forged.npz",), None)
    assert PrintableFormatter("%(message)s").format(record) == "reloaded m\\nWARNING forged.npz"
    try:
        raise ValueError("bad\x1b[2J")
    except ValueError:
        record = logging.LogRecord("robot_daemon", logging.ERROR, __file__, 1, "failed", (),
                                   sys.exc_info())
    text = PrintableFormatter("%(message)s").format(record)
    assert "\x1b" not in text
    assert "Traceback (most recent call last):\n" in text


def test_an_unknown_argument_is_shown_escaped() -> None:
    done = subprocess.run([sys.executable, "-m", "robot_daemon", "run", "\x1b]0;PWNED\x07"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert "\x1b" not in done.stderr
    assert "\\x1b]0;PWNED\\x07" in done.stderr
