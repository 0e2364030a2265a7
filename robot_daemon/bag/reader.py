"""Reading bags tolerantly: :class:`BagReader` and :class:`BagInfo` (what ``bag info``
prints).

A bag is untrusted input. Every record is checked against the file's size before it is
read, and an attachment's data (a map or a calibration another tool attached, possibly
gigabytes) is never held: a scan reads it in pieces of :data:`ATTACHMENT_PIECE_BYTES` for
the CRCs and keeps an :class:`AttachmentInfo`; :meth:`BagReader.read_attachment` reads
one whole, up to a limit its caller states.
"""

from __future__ import annotations

import logging
import os
import stat
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from mcap.data_stream import ReadDataStream
from mcap.opcode import Opcode
from mcap.records import Channel, Chunk, Message, Metadata
from mcap.stream_reader import StreamReader, breakup_chunk

from robot_daemon.bag.format import (
    MCAP_MAGIC,
    MESSAGE_ENCODING,
    META_RECORD,
    BagMessage,
    BagMeta,
    seconds_to_ns,
)
from robot_daemon.errors import BagError
from robot_daemon.printable import printable

log = logging.getLogger(__name__)

#: A scan reads an attachment's data in pieces of this size (for the CRCs), keeping none.
ATTACHMENT_PIECE_BYTES: Final = 1 << 20
#: ``bag info`` shows this many keys of a metadata record (``--json`` lists them all).
SHOWN_KEYS: Final = 8


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    """An attachment of a bag, without its data (read it with
    :meth:`BagReader.read_attachment`). Times are integer nanoseconds, as MCAP stores
    them; ``offset`` is the byte offset of the data in the file."""

    name: str
    media_type: str
    size_bytes: int
    log_time: int
    create_time: int
    offset: int


@dataclass(frozen=True, slots=True)
class MetadataInfo:
    """A metadata record of a bag: its name and its keys, in file order."""

    name: str
    keys: tuple[str, ...]


@dataclass(frozen=True)
class TopicInfo:
    """Per-topic statistics of a bag (receive times, integer nanoseconds)."""

    count: int
    first_ns: int
    last_ns: int
    size_bytes: int
    message_encoding: str

    @property
    def rate_hz(self) -> float | None:
        """Mean message rate over the topic's own time span; ``None`` below 2 messages."""
        span = self.last_ns - self.first_ns
        return (self.count - 1) * 1e9 / span if self.count > 1 and span > 0 else None


class _TopicTally:
    """Accumulates one topic's :class:`TopicInfo` during a scan."""

    def __init__(self, message_encoding: str) -> None:
        self.message_encoding = message_encoding
        self.count = self.size_bytes = 0
        self.first_ns = self.last_ns = -1

    def add(self, log_time: int, size: int) -> None:
        if self.count == 0:
            self.first_ns = self.last_ns = log_time
        self.first_ns = min(self.first_ns, log_time)
        self.last_ns = max(self.last_ns, log_time)
        self.count += 1
        self.size_bytes += size

    def info(self) -> TopicInfo:
        return TopicInfo(
            self.count, self.first_ns, self.last_ns, self.size_bytes, self.message_encoding
        )


@dataclass(frozen=True)
class BagInfo:
    """What ``bag info`` prints: times, per-topic counts and rates, meta, attachments,
    metadata records, integrity.

    ``meta_recorded`` is ``False`` when the file has no ``robot_daemon`` metadata record
    (another tool wrote it, or a recording was cut before it knew d and c): ``meta`` is
    then the defaults and the protocol version is unknown.
    """

    path: str
    file_size: int
    meta: BagMeta
    meta_recorded: bool
    topics: dict[str, TopicInfo]
    attachments: list[AttachmentInfo]
    metadata: list[MetadataInfo]
    start_ns: int | None
    end_ns: int | None
    complete: bool
    damaged_at: int | None
    warning: str | None

    @property
    def message_count(self) -> int:
        return sum(t.count for t in self.topics.values())

    @property
    def duration_ns(self) -> int:
        if self.start_ns is None or self.end_ns is None:
            return 0
        return self.end_ns - self.start_ns

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (``bag info --json``)."""
        return {
            "path": self.path,
            "size_bytes": self.file_size,
            "file_size": self.file_size,  # the same; the name of older versions
            "integrity": "complete" if self.complete else "damaged",
            "damaged_at": self.damaged_at,
            "warning": self.warning,
            "message_count": self.message_count,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "duration_s": self.duration_ns / 1e9,
            "d": self.meta.d,
            "c": self.meta.c,
            "feature_names": self.meta.feature_names,
            "class_names": self.meta.class_names,
            # null, not a guess, when the file has no robot_daemon record
            "protocol_version": self.meta.protocol_version if self.meta_recorded else None,
            "extra": self.meta.extra,
            "topics": {
                name: {
                    "count": t.count,
                    "rate_hz": t.rate_hz,
                    "first_ns": t.first_ns,
                    "last_ns": t.last_ns,
                    "size_bytes": t.size_bytes,
                    "message_encoding": t.message_encoding,
                }
                for name, t in self.topics.items()
            },
            "attachments": [
                {"name": a.name, "media_type": a.media_type, "size_bytes": a.size_bytes}
                for a in self.attachments
            ],
            "metadata": [{"name": m.name, "keys": list(m.keys)} for m in self.metadata],
        }

    def describe(self) -> str:
        """A human-readable summary (``bag info``)."""
        lines = [
            f"path:       {self.path}",
            f"size:       {human_size(self.file_size)}",
            "integrity:  complete"
            if self.complete
            else f"integrity:  DAMAGED at byte {self.damaged_at} (messages before it are readable)",
            f"messages:   {self.message_count}",
            f"duration:   {self.duration_ns / 1e9:.3f} s",
        ]
        if self.start_ns is not None and self.end_ns is not None:
            lines.append(f"start/end:  {_iso(self.start_ns)}  {_iso(self.end_ns)}")
        lines.append(f"d, c:       {_or_unknown(self.meta.d)}, {_or_unknown(self.meta.c)}")
        if self.meta.feature_names:
            lines.append(f"features:   {', '.join(self.meta.feature_names)}")
        if self.meta.class_names:
            lines.append(f"classes:    {', '.join(self.meta.class_names)}")
        if self.meta_recorded:
            lines.append(f"protocol:   v{self.meta.protocol_version}")
        else:
            lines.append(
                f"protocol:   unknown (no {META_RECORD!r} metadata record: written by another"
                " tool, or a recording cut before it knew d and c)"
            )
        for key, value in sorted(self.meta.extra.items()):
            lines.append(f"extra:      {key} = {value}")
        lines.append("topics:")
        for name, t in sorted(self.topics.items()):
            rate = "-" if t.rate_hz is None else f"{t.rate_hz:.2f} Hz"
            lines.append(f"  {name:<10} {t.count:>9} msgs  {rate:>12}  {t.message_encoding}")
        lines.append("attachments:" + ("" if self.attachments else " none"))
        for a in self.attachments:
            media_type = a.media_type or "(no media type)"
            lines.append(f"  {a.name}  {media_type}  {human_size(a.size_bytes)}")
        lines.append("metadata:" + ("" if self.metadata else "   none"))
        for m in self.metadata:
            lines.append(f"  {m.name}  keys: {_keys_text(m.keys)}")
        # Each line escaped on its own: a name with a newline in it (an attachment's, a
        # topic's) forged a line of the report when only the whole text was escaped.
        return "\n".join(map(printable, lines))


def human_size(n_bytes: int) -> str:
    """``12.3 MiB (12,897,345 bytes)``; below 1 KiB only the bytes (``512 bytes``)."""
    exact = f"{n_bytes:,} bytes"
    if n_bytes < 1024:
        return exact
    value = n_bytes / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit} ({exact})"
        value /= 1024
    return f"{value:.1f} TiB ({exact})"


def _keys_text(keys: tuple[str, ...]) -> str:
    """The first :data:`SHOWN_KEYS` keys, and how many more there are."""
    if not keys:
        return "none"
    text = ", ".join(keys[:SHOWN_KEYS])
    more = len(keys) - SHOWN_KEYS
    return text + (f", ... ({more} more)" if more > 0 else "")


def _or_unknown(value: int | None) -> str:
    return "unknown" if value is None else str(value)


def _iso(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rest // 1000:06d}Z"


class BagReader:
    """Read a bag, complete or cut, in file order; a context manager.

    ``meta`` is the last ``robot_daemon`` metadata record in the file (defaults when there
    is none). After :meth:`messages` has met damage, ``damaged`` is ``True``,
    ``damaged_at`` is the byte offset of the first unreadable record and ``warning``
    says what happened.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.damaged = False
        self.damaged_at: int | None = None
        self.warning: str | None = None
        self._meta: BagMeta | None = None
        self._closed = False
        self._logged: str | None = None  # the damage already logged: each scan finds it
        self.file_size = _check_mcap_file(self.path)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the reader; every scan opens and closes its own file handle."""
        self._closed = True

    @property
    def meta(self) -> BagMeta:
        """The bag's :class:`BagMeta` (read once, on first use)."""
        if self._meta is None:
            meta = BagMeta()
            for record in self._records(full=False):
                if isinstance(record, Metadata) and record.name == META_RECORD:
                    meta = BagMeta.from_record(record.metadata)
            self._meta = meta
        return self._meta

    def leading_meta(self) -> BagMeta | None:
        """The ``robot_daemon`` metadata record if it comes before the first chunk, as a
        writer that knew d and c from the start puts it (a capture's always does); else
        None. Reads no further than the first chunk, where :attr:`meta` reads the whole
        file: a cheap look at what a bag is."""
        for record in self._records(full=False):
            if isinstance(record, Metadata) and record.name == META_RECORD:
                return BagMeta.from_record(record.metadata)
            if isinstance(record, Chunk):
                return None
        return None

    def records(self) -> Iterator[Any]:
        """Every record of the bag in file order, as :mod:`mcap.records` types (chunks
        opened and CRC-checked: ``Header``, ``Schema``, ``Channel``, ``Message``,
        ``Metadata``, the summary's records ...), except attachments, which come as
        :class:`AttachmentInfo` (their data stays in the file).

        Stops at the first damage, as :meth:`messages` does; a message on a channel not
        declared before it is damage too.
        """
        declared: set[int] = set()
        for record in self._records(full=True):
            if isinstance(record, Channel):
                declared.add(record.id)
            elif isinstance(record, Message) and record.channel_id not in declared:
                self._mark_damaged(None, f"message on undeclared channel {record.channel_id}")
                return
            yield record

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
        """Yield the messages (of ``topics``, default all) in file order.

        Stops at the first damage: every message of every complete chunk before it is
        yielded, nothing after it; ``damaged``/``warning`` are set and a warning is logged.
        """
        wanted = None if topics is None else frozenset(topics)
        channels: dict[int, Channel] = {}
        for record in self.records():
            if isinstance(record, Channel):
                channels[record.id] = record
            elif isinstance(record, Message):
                channel = channels[record.channel_id]  # records() checked it is declared
                if wanted is None or channel.topic in wanted:
                    yield to_bag_message(channel, record)

    def read_attachment(self, attachment: AttachmentInfo, max_bytes: int) -> bytes:
        """The data of ``attachment`` (found by a scan of this bag), if it holds at most
        ``max_bytes``: the size is checked before anything is allocated.

        Raises:
            BagError: the attachment is larger than ``max_bytes``, or the file no longer
                holds it.
        """
        if attachment.size_bytes > max_bytes:
            raise BagError(
                f"attachment {attachment.name!r} of {self.path} holds"
                f" {human_size(attachment.size_bytes)}, over the limit of {human_size(max_bytes)}"
            )
        try:
            with open(self.path, "rb") as f:
                f.seek(attachment.offset)
                data = f.read(attachment.size_bytes)
        except OSError as exc:
            raise BagError(f"cannot read bag {self.path}: {exc.strerror}") from None
        if len(data) != attachment.size_bytes:
            raise BagError(
                f"{self.path} ends inside attachment {attachment.name!r}: the file changed"
                " since it was scanned"
            )
        return data

    def info(self) -> BagInfo:
        """Scan the whole bag: time range, per-topic counts and rates, meta, attachments,
        metadata records, integrity."""
        tallies: dict[str, _TopicTally] = {}
        channels: dict[int, Channel] = {}
        attachments: list[AttachmentInfo] = []
        metadata: list[MetadataInfo] = []
        meta, recorded = BagMeta(), False
        for record in self.records():
            if isinstance(record, Channel):
                channels[record.id] = record
            elif isinstance(record, AttachmentInfo):
                attachments.append(record)
            elif isinstance(record, Metadata):
                metadata.append(MetadataInfo(record.name, tuple(record.metadata)))
                if record.name == META_RECORD:
                    meta, recorded = BagMeta.from_record(record.metadata), True
            elif isinstance(record, Message):
                channel = channels[record.channel_id]
                tally = tallies.get(channel.topic)
                if tally is None:
                    tally = tallies[channel.topic] = _TopicTally(channel.message_encoding)
                tally.add(record.log_time, len(record.data))
        self._meta = meta
        topic_infos = {name: tally.info() for name, tally in tallies.items()}
        return BagInfo(
            path=str(self.path),
            file_size=self.file_size,
            meta=meta,
            meta_recorded=recorded,
            topics=topic_infos,
            attachments=attachments,
            metadata=metadata,
            start_ns=min((t.first_ns for t in topic_infos.values()), default=None),
            end_ns=max((t.last_ns for t in topic_infos.values()), default=None),
            complete=not self.damaged,
            damaged_at=self.damaged_at,
            warning=self.warning,
        )

    def _records(self, *, full: bool) -> Iterator[Any]:
        """Every record in file order; stop at the first damage.

        ``full`` opens chunks (checking their CRCs, so that a chunk with flipped bytes is
        damage rather than garbage) and records damage in ``damaged``/``damaged_at``/
        ``warning``; without it, chunks are skipped unopened (enough to find metadata).
        Damage is reported at the offset where the first unreadable record starts.
        """
        if self._closed:
            raise BagError(f"bag {self.path} is closed; open a new BagReader")
        if full:
            self.damaged, self.damaged_at, self.warning = False, None, None
        with open(self.path, "rb") as f:
            # A record longer than the file is damage; the limit also keeps a corrupt
            # length from allocating gigabytes.
            reader = _StreamReader(
                f, emit_chunks=True, validate_crcs=full, record_size_limit=self.file_size
            )
            records = reader.records
            good_end = 0
            while True:
                try:
                    # The generator ends only after the footer and the closing magic.
                    record = next(records, None)
                    if record is None:
                        return
                    opened = (
                        breakup_chunk(record, validate_crc=True)
                        if full and isinstance(record, Chunk)
                        else [record]
                    )
                except Exception as exc:  # every error here means a damaged file, not only mcap's
                    if full:
                        self._mark_damaged(good_end, _describe(exc))
                    return
                good_end = f.tell()
                yield from opened

    def _mark_damaged(self, offset: int | None, why: str) -> None:
        self.damaged = True
        self.damaged_at = offset
        where = "" if offset is None else f" at byte {offset} of {self.file_size}"
        self.warning = (
            f"bag {self.path} is damaged{where} ({why}): every complete message before the "
            "damage was read, nothing after it (a recorder killed mid-write leaves this)"
        )
        if self.warning != self._logged:
            self._logged = self.warning
            log.warning("%s", self.warning)


def _describe(exc: Exception) -> str:
    text = str(exc)
    return type(exc).__name__ + (f": {text}" if text else "")


class _StreamReader(StreamReader):
    """mcap's :class:`StreamReader`, except that an attachment becomes an
    :class:`AttachmentInfo`: its data is read in pieces and dropped, never held whole.

    mcap 1.6 reads every record through ``_read_record``; overriding it is the one way
    to keep an attachment of gigabytes out of memory (the bag tests hold it to that).
    """

    def __init__(self, stream: Any, **kwargs: Any) -> None:
        super().__init__(stream, **kwargs)
        self._check_crcs = bool(kwargs.get("validate_crcs"))

    def _read_record(self, opcode: int, length: int) -> Any:
        if opcode == Opcode.ATTACHMENT:
            return _scan_attachment(self._stream, length, check_crc=self._check_crcs)
        return super()._read_record(opcode, length)


def _scan_attachment(stream: ReadDataStream, length: int, *, check_crc: bool) -> AttachmentInfo:
    """Read an attachment record of ``length`` bytes (after its opcode and length) from
    ``stream``, keeping its fields but not its data; check its CRC when ``check_crc``.

    Every length field is checked against what is left of the record before it is read,
    so that a corrupt one is damage rather than an allocation of gigabytes.
    """
    left = length
    crc = 0

    def take(n: int) -> bytes:
        nonlocal left, crc
        if n > left:
            raise ValueError(f"an attachment's field of {n} bytes runs past its record")
        left -= n
        data = stream.read(n)
        crc = zlib.crc32(data, crc)
        return data

    log_time, create_time = struct.unpack("<QQ", take(16))
    name = take(struct.unpack("<I", take(4))[0]).decode()
    media_type = take(struct.unpack("<I", take(4))[0]).decode()
    (size,) = struct.unpack("<Q", take(8))
    offset = stream.count  # the stream has read the file from its first byte
    if size + 4 > left:
        raise ValueError(f"attachment {name!r} declares {size} bytes, more than its record holds")
    remaining = size
    while remaining:
        piece = take(min(remaining, ATTACHMENT_PIECE_BYTES))
        remaining -= len(piece)
    computed = crc
    (stated,) = struct.unpack("<I", take(4))
    if check_crc and stated != 0 and stated != computed:
        raise ValueError(f"attachment {name!r} fails its CRC")
    return AttachmentInfo(name, media_type, size, log_time, create_time, offset)


def to_bag_message(channel: Channel, message: Message) -> BagMessage:
    """The :class:`BagMessage` of an MCAP message on ``channel``."""
    sensor_ns: int | None = message.publish_time
    if message.publish_time == message.log_time:
        # BagWriter stores an unknown sensor time as the receive time (MCAP's rule), so
        # equal times are ambiguous: the payload's own "t" decides.
        sensor_ns = _payload_sensor_ns(channel, message.data)
    return BagMessage(channel.topic, message.data, message.log_time, sensor_ns)


def _payload_sensor_ns(channel: Channel, payload: bytes) -> int | None:
    if channel.message_encoding != MESSAGE_ENCODING:
        return None
    from robot_daemon import wire

    return seconds_to_ns(wire.sensor_time(payload))


def _check_mcap_file(path: Path) -> int:
    """Raise :class:`BagError` unless ``path`` is a readable file that starts like MCAP."""
    try:
        # O_NONBLOCK: opening a FIFO would otherwise wait for a writer, forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise BagError(f"no such bag: {path}") from None
    except OSError as exc:
        raise BagError(f"cannot read bag {path}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise BagError(f"{path} is a directory; give the path of an .mcap file")
        if not stat.S_ISREG(mode):
            raise BagError(
                f"{path} is not a regular file (a FIFO, socket or device); "
                "give the path of an .mcap file"
            )
        head = os.read(fd, len(MCAP_MAGIC))
        size = os.fstat(fd).st_size
    except OSError as exc:
        raise BagError(f"cannot read bag {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if size == 0:
        raise BagError(f"{path} is empty: no bag was written (was the recorder killed at start?)")
    if head != MCAP_MAGIC:
        raise BagError(
            f"{path} is not an MCAP bag (its first bytes are {head[:8]!r}); "
            "bags are written by `robot-daemon bag record` or `robot-daemon sim`"
        )
    return size
