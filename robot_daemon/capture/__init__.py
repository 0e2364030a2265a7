"""Capture: the served frames worth a label or a training step, kept in bounded bags
(``run --capture DIR --capture-max-mb N``).

The triggers (:mod:`~robot_daemon.capture.triggers`) pick frames on the tick thread;
:class:`~robot_daemon.capture.writer.Capture` takes them without blocking and writes
them from a thread of its own into ordinary bags (:mod:`~robot_daemon.capture.frames`:
what a captured frame becomes) in a directory whose total size never passes its bound
(:mod:`~robot_daemon.capture.store`). Importing this package does not import mcap: the
optional ``bag`` extra is needed only once a :class:`Capture` is made.

Design: docs/architecture.md, "Capture".
"""

from __future__ import annotations

from robot_daemon.capture.frames import CapturedFrame
from robot_daemon.capture.triggers import (
    REASONS,
    Recent,
    contradicts,
    decisions,
    disagree,
    uncertain,
)
from robot_daemon.capture.writer import Capture, CaptureConfig

__all__ = ["REASONS", "Capture", "CaptureConfig", "CapturedFrame", "Recent", "contradicts",
           "decisions", "disagree", "uncertain"]
