"""The payloads of chosen topics, read fast: for jobs that decode whole bags (the fleet).

:func:`read_payloads` gives what ``[m.payload for m in BagReader(p).messages(topics)]``
gives, with the same tolerance (every message of every complete chunk before the first
damage, nothing after it; CRCs checked) and the same metadata, about ten times faster:
the records inside a chunk are cut with ``struct`` from the decompressed bytes instead of
becoming one ``mcap.records.Message`` and one :class:`~robot_daemon.bag.BagMessage`
each. The receive time (MCAP's log time) of each payload comes too when asked for
(``dataset`` keeps it); the sensor time is in the payload itself.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from mcap.data_stream import ReadDataStream
from mcap.records import Chunk, Metadata
from mcap.stream_reader import get_chunk_data_stream

from robot_daemon.bag.format import MCAP_MAGIC, META_RECORD, BagMeta
from robot_daemon.bag.reader import BagReader

# MCAP opcodes (https://mcap.dev/spec).
_OP_FOOTER, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK = 0x02, 0x04, 0x05, 0x06
_OP_METADATA, _OP_DATA_END = 0x0C, 0x0F
_RECORD_HEAD = struct.Struct("<BQ")  # opcode, length
_CHUNK_HEAD = struct.Struct("<QQQII")  # start, end, uncompressed size, CRC, name length
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_MESSAGE_HEAD = 22  # channel id u16, sequence u32, log time u64, publish time u64
_LOG_TIME = 6  # the log time's offset in a message record's body


@dataclass
class Payloads:
    """The payloads of each wanted topic in file order, the bag's meta, any damage; with
    ``log_times``, each payload's receive time (ns) in ``log_ns``, in the same order."""

    meta: BagMeta
    by_topic: dict[str, list[bytes]] = field(default_factory=dict)
    warning: str | None = None
    log_ns: dict[str, list[int]] | None = None


class _Damage(Exception):
    """A record that cannot be read: the bag ends here for the reader."""


def read_payloads(
    path: str | os.PathLike[str], topics: Iterable[str], *, log_times: bool = False
) -> Payloads:
    """Every payload of ``topics`` in the bag at ``path`` (and its log time, with
    ``log_times``); see the module doc.

    Raises:
        BagError: ``path`` is missing, empty or not an MCAP file (as BagReader does).
    """
    BagReader(path).close()  # the same checks and messages for a file that is no bag
    size = Path(path).stat().st_size
    wanted = list(topics)
    out = Payloads(BagMeta(), {t: [] for t in wanted},
                   log_ns={t: [] for t in wanted} if log_times else None)
    with open(path, "rb") as f:
        scan = _Scan(f, size, out)
        try:
            scan.run()
        except Exception as exc:  # as BagReader: any error here is damage
            out.warning = _warning(path, scan.good_end, size, exc)
    return out


class _Scan:
    """The top-level records of an MCAP file in order, as mcap's StreamReader reads them
    with ``validate_crcs=True`` (the data section CRC too), but index records skipped
    unparsed: they hold a number per message and cost as much as the messages."""

    def __init__(self, f: BinaryIO, size: int, out: Payloads) -> None:
        self.f, self.size, self.out = f, size, out
        self.channels: dict[int, str] = {}
        self.crc = 0
        self.good_end = 0

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) < n:
            raise _Damage(f"the file ends {n - len(data)} bytes into a record (EndOfFile)")
        self.crc = zlib.crc32(data, self.crc)
        return data

    def run(self) -> None:
        if self.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
            raise _Damage("no MCAP magic at the start")
        self.good_end = self.f.tell()
        while True:
            crc_before = self.crc
            opcode, length = _RECORD_HEAD.unpack(self.read(_RECORD_HEAD.size))
            if length > self.size:
                raise _Damage(f"a record of {length} bytes in a file of {self.size}")
            body = self.read(length)
            if opcode == _OP_CHUNK:
                _chunk(_chunk_record(body), self.channels, self.out.by_topic, self.out.log_ns)
            elif opcode == _OP_CHANNEL:
                self.channels[_U16.unpack_from(body)[0]] = _topic(body, 0)
            elif opcode == _OP_MESSAGE:
                _add(self.channels, _U16.unpack_from(body)[0], body[_MESSAGE_HEAD:],
                     _U64.unpack_from(body, _LOG_TIME)[0], self.out.by_topic, self.out.log_ns)
            elif opcode == _OP_METADATA:
                record = Metadata.read(ReadDataStream(io.BytesIO(body)))
                if record.name == META_RECORD:
                    self.out.meta = BagMeta.from_record(record.metadata)
            elif opcode == _OP_DATA_END:
                (expected,) = _U32.unpack_from(body)
                if expected != 0 and expected != crc_before:
                    raise _Damage(f"data section CRC mismatch, expected {expected}")
            self.good_end = self.f.tell()
            if opcode == _OP_FOOTER:
                if self.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
                    raise _Damage("no MCAP magic after the footer")
                return


def _chunk_record(body: bytes) -> Chunk:
    start, end, uncompressed_size, crc, name_len = _CHUNK_HEAD.unpack_from(body)
    pos = _CHUNK_HEAD.size
    compression = body[pos:pos + name_len].decode()
    pos += name_len
    (data_len,) = _U64.unpack_from(body, pos)
    pos += 8
    if pos + data_len > len(body):
        raise _Damage("a chunk's records run past its end")
    return Chunk(compression=compression, data=body[pos:pos + data_len],
                 message_start_time=start, message_end_time=end,
                 uncompressed_crc=crc, uncompressed_size=uncompressed_size)


def _topic(data: bytes, body: int) -> str:
    """The topic of the Channel record whose body starts at ``body``."""
    (topic_len,) = _U32.unpack_from(data, body + 4)
    return data[body + 8:body + 8 + topic_len].decode()


def _chunk(chunk: Chunk, channels: dict[int, str], by_topic: dict[str, list[bytes]],
           log_ns: dict[str, list[int]] | None) -> None:
    """Add the wanted messages of one chunk, checked whole before any is added."""
    # mcap's own decompression and CRC check, as BagReader's breakup_chunk does them.
    stream, size = get_chunk_data_stream(chunk, validate_crc=True)
    data = stream.read(size)
    found: list[tuple[int, int, int]] = []  # channel id, body offset, record end
    pos, end = 0, len(data)
    while pos < end:
        opcode, length = _RECORD_HEAD.unpack_from(data, pos)
        body = pos + 9
        pos = body + length
        if pos > end:
            raise _Damage("a record runs past the end of its chunk")
        if opcode == _OP_MESSAGE:
            if length < _MESSAGE_HEAD:
                raise _Damage("a message record shorter than its header")
            found.append((_U16.unpack_from(data, body)[0], body, pos))
        elif opcode == _OP_CHANNEL:
            channels[_U16.unpack_from(data, body)[0]] = _topic(data, body)
    # The chunk is whole: its messages count up to an undeclared channel, as in BagReader.
    for channel_id, body, record_end in found:
        topic = channels.get(channel_id)
        if topic is None:
            raise _Damage(f"message on undeclared channel {channel_id}")
        wanted = by_topic.get(topic)
        if wanted is not None:
            wanted.append(data[body + _MESSAGE_HEAD:record_end])
            if log_ns is not None:
                log_ns[topic].append(_U64.unpack_from(data, body + _LOG_TIME)[0])


def _add(channels: dict[int, str], channel_id: int, payload: bytes, log_time: int,
         by_topic: dict[str, list[bytes]], log_ns: dict[str, list[int]] | None) -> None:
    topic = channels.get(channel_id)
    if topic is None:
        raise _Damage(f"message on undeclared channel {channel_id}")
    wanted = by_topic.get(topic)
    if wanted is not None:
        wanted.append(payload)
        if log_ns is not None:
            log_ns[topic].append(log_time)


def _warning(path: str | os.PathLike[str], offset: int, size: int, exc: Exception) -> str:
    """BagReader's sentence for damage."""
    text = str(exc)
    why = type(exc).__name__ + (f": {text}" if text else "")
    return (f"bag {path} is damaged at byte {offset} of {size} ({why}): every complete message"
            " before the damage was read, nothing after it (a recorder killed mid-write"
            " leaves this)")
