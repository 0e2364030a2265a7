"""Sensor bags: MCAP files of wire payloads, written crash-safe and read tolerantly.

A bag stores the ZeroMQ payloads byte for byte, one MCAP channel per topic
(``message_encoding`` ``"msgpack"``, no schema), with two times per message in integer
nanoseconds: the receive time as MCAP ``log_time`` and the sensor time (the payload's
``"t"``) as MCAP ``publish_time``. A metadata record named ``robot_daemon`` carries
:class:`BagMeta` (d, c, feature and class names, protocol version). ``docs/bags.md``
describes the format in full.

Crash behaviour: MCAP chunks are written whole, so a writer killed mid-write leaves every
finished chunk on disk and loses only the chunk in progress. :class:`BagWriter` keeps
chunks small and :meth:`BagWriter.flush` closes one whenever the caller asks (the
recorder does it every few hundred milliseconds). :class:`BagReader` reads records in
file order rather than seeking through the summary at the end of the file (which a cut
file does not have), checks every chunk's CRC, and stops cleanly at the first damage.

The modules: :mod:`.format` (constants, :class:`BagMeta`, :class:`BagMessage`),
:mod:`.writer`, :mod:`.reader`, :mod:`.decoder` (our payloads in other MCAP tools), and
the jobs built on them: :mod:`.record` (ZeroMQ into
a bag), :mod:`.play` (bags onto ZeroMQ), :mod:`.export` (a JSON copy for Foxglove, with
the JSON schemas of :mod:`.schemas`).

This package is the only one that imports :mod:`mcap` (the optional extra ``bag``): the
robot's runtime needs only numpy, pyzmq and msgpack. Importing it without mcap raises
:class:`~robot_daemon.errors.BagError` with the command that installs it.
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
