"""Sensor bags: MCAP files of wire payloads, written crash-safe and read tolerantly.

A bag stores the ZeroMQ payloads byte for byte, one MCAP channel per topic, with the
receive time and the sensor time of each message in integer nanoseconds and our metadata
(:class:`BagMeta`); it is written crash-safe (:class:`BagWriter`) and read tolerantly
(:class:`BagReader`, stopping cleanly at the first damage). ``docs/bags.md`` describes the
format. This is the only package that imports :mod:`mcap` (the optional extra ``bag``);
importing it without mcap raises :class:`~robot_daemon.errors.BagError` with the command
that installs it.

Design: docs/architecture.md, "Bags".
"""

from __future__ import annotations

from robot_daemon.bag.format import INSTALL_HINT
from robot_daemon.errors import BagError

# Checked here, before any module of the package imports mcap, so that every bag command
# fails with one clear line instead of a ModuleNotFoundError.
try:
    import mcap  # noqa: F401
except ModuleNotFoundError as exc:  # pragma: no cover - exercised in a subprocess test
    raise BagError(INSTALL_HINT) from exc

from robot_daemon.bag.decoder import MsgpackDecoderFactory
from robot_daemon.bag.format import BagMessage, BagMeta, seconds_to_ns
from robot_daemon.bag.reader import BagInfo, BagReader, TopicInfo
from robot_daemon.bag.writer import BagWriter

__all__ = ["BagInfo", "BagMessage", "BagMeta", "BagReader", "BagWriter",
           "MsgpackDecoderFactory", "TopicInfo", "seconds_to_ns"]
