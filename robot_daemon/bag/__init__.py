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

This is the only module that imports :mod:`mcap` (the optional extra ``bag``): the robot's
runtime needs only numpy, pyzmq and msgpack.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from robot_daemon.errors import BagError

INSTALL_HINT = "the bag tools need the mcap package: pip install 'robot-daemon[bag]'"

try:
    from mcap.records import Channel, Chunk, Message, Metadata
    from mcap.stream_reader import StreamReader, breakup_chunk
    from mcap.writer import CompressionType, Writer
except ModuleNotFoundError as exc:  # pragma: no cover - exercised in a subprocess test
    raise BagError(INSTALL_HINT) from exc

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MESSAGE_ENCODING = "msgpack"
META_RECORD = "robot_daemon"
_EXTRA_PREFIX = "extra."
_MCAP_MAGIC = b"\x89MCAP0\r\n"
_MAX_TIME_NS = 2**64 - 1  # MCAP times are uint64
# 64 KiB holds ~500 frames of d = 16; the recorder also flushes on a timer, so at sensor
# rates the timer, not the size, bounds what a crash can lose.
DEFAULT_CHUNK_SIZE = 64 * 1024


@dataclass(frozen=True)
class BagMeta:
    """What a reader needs to interpret a bag's payloads.

    ``d`` and ``c`` are ``None`` when unknown (plain MCAP files written by other tools);
    ``extra`` holds free-form string pairs (the simulator's seed, the robot's id, ...).
    """

    d: int | None = None
    c: int | None = None
    feature_names: list[str] | None = None
    class_names: list[str] | None = None
    protocol_version: int = PROTOCOL_VERSION
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in (("d", self.d), ("c", self.c)):
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise BagError(f"BagMeta.{name} must be a positive integer or None, got {value!r}")
        _check_names("feature_names", self.feature_names, self.d)
        _check_names("class_names", self.class_names, self.c)

    def to_record(self) -> dict[str, str]:
        """The MCAP metadata record (string to string) that stores this meta."""
        record = {"protocol_version": str(self.protocol_version)}
        if self.d is not None:
            record["d"] = str(self.d)
        if self.c is not None:
            record["c"] = str(self.c)
        if self.feature_names is not None:
            record["feature_names"] = json.dumps(self.feature_names)
        if self.class_names is not None:
            record["class_names"] = json.dumps(self.class_names)
        record.update({_EXTRA_PREFIX + k: v for k, v in self.extra.items()})
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, str]) -> BagMeta:
        """Parse :meth:`to_record`'s output; raise :class:`BagError` on malformed values."""
        try:
            return cls(
                d=_opt_int(record.get("d")),
                c=_opt_int(record.get("c")),
                feature_names=_opt_names(record.get("feature_names")),
                class_names=_opt_names(record.get("class_names")),
                protocol_version=int(record.get("protocol_version", PROTOCOL_VERSION)),
                extra={
                    k.removeprefix(_EXTRA_PREFIX): v
                    for k, v in record.items()
                    if k.startswith(_EXTRA_PREFIX)
                },
            )
        except (ValueError, TypeError) as exc:
            raise BagError(
                f"the bag's {META_RECORD!r} metadata record is malformed ({exc}); "
                "rewrite the bag with a BagWriter or ignore its metadata"
            ) from None


def _check_names(what: str, names: list[str] | None, size: int | None) -> None:
    if names is None:
        return
    if not all(isinstance(n, str) for n in names):
        raise BagError(f"BagMeta.{what} must be a list of strings")
    if size is not None and len(names) != size:
        raise BagError(f"BagMeta.{what} has {len(names)} names for {size} values")


def _opt_int(text: str | None) -> int | None:
    return None if text is None else int(text)


def _opt_names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = json.loads(text)
    if not isinstance(names, list):
        raise ValueError(f"expected a JSON list of names, got {text[:40]!r}")
    return names


@dataclass(frozen=True, slots=True)
class BagMessage:
    """One recorded message: its topic, payload bytes and times (integer nanoseconds).

    ``sensor_ns`` is the payload's own time (``"t"``), ``None`` when it has none (a
    malformed payload recorded for debugging, or a foreign message encoding).
    """

    topic: str
    payload: bytes
    recv_ns: int
    sensor_ns: int | None


def seconds_to_ns(t: float | None) -> int | None:
    """Sensor seconds to MCAP nanoseconds; ``None`` where MCAP's uint64 cannot hold it."""
    if t is None or not math.isfinite(t) or t < 0:
        return None
    ns = round(t * 1e9)
    return ns if ns <= _MAX_TIME_NS else None


class BagWriter:
    """Write a bag (an MCAP file); a context manager that always finishes the file.

    Example::

        with BagWriter("run.mcap", meta=BagMeta(d=16, c=8)) as bag:
            bag.write("frame", payload, recv_ns=time.time_ns(), sensor_ns=t_ns)

    Channels are created on first use with ``message_encoding`` ``"msgpack"``;
    :meth:`add_topic` declares other encodings and schemas (``bag export`` uses it).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        meta: BagMeta | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        if not hasattr(Writer, "flush"):
            # Writer.flush (closing a chunk on demand) bounds what a crash loses.
            raise BagError(
                "writing bags needs mcap >= 1.6 (Writer.flush): pip install -U 'robot-daemon[bag]'"
            )
        self.path = Path(path)
        self.meta = meta if meta is not None else BagMeta()
        self.message_count = 0
        self._channels: dict[str, int] = {}
        try:
            self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise BagError(f"cannot create bag {self.path}: {exc.strerror}") from None
        self._closed = False
        try:
            self._writer = Writer(
                self._file, chunk_size=chunk_size, compression=CompressionType.ZSTD
            )
            self._writer.start(profile="", library="robot_daemon")
            # Metadata goes first so that a cut bag still knows its d and c.
            self._writer.add_metadata(META_RECORD, self.meta.to_record())
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Finish the file even when an exception is unwinding: a bag with an index is
        # worth more than a cut one, and the process may survive the exception.
        self.close()

    def add_topic(
        self,
        topic: str,
        *,
        message_encoding: str = MESSAGE_ENCODING,
        schema_name: str = "",
        schema_encoding: str = "",
        schema: bytes = b"",
    ) -> None:
        """Declare ``topic``'s channel before its first message (to give it a schema)."""
        self._check_open()
        if topic in self._channels:
            raise BagError(f"topic {topic!r} is already declared in {self.path}")
        schema_id = 0
        if schema_encoding:
            schema_id = self._writer.register_schema(schema_name, schema_encoding, schema)
        self._channels[topic] = self._writer.register_channel(topic, message_encoding, schema_id)

    def write(self, topic: str, payload: bytes, recv_ns: int, sensor_ns: int | None = None) -> None:
        """Append one message; ``recv_ns`` becomes MCAP log_time, ``sensor_ns`` publish_time.

        MCAP requires a publish time, so an unknown sensor time is stored as the receive
        time (the MCAP convention); :class:`BagReader` then recovers ``None``.
        """
        self._check_open()
        _check_time("recv_ns", recv_ns)
        if sensor_ns is not None:
            _check_time("sensor_ns", sensor_ns)
        if topic not in self._channels:
            self.add_topic(topic)
        try:
            self._writer.add_message(
                channel_id=self._channels[topic],
                log_time=recv_ns,
                data=bytes(payload),
                publish_time=recv_ns if sensor_ns is None else sensor_ns,
                sequence=self.message_count & 0xFFFFFFFF,  # uint32 per MCAP; wraps
            )
        except OSError as exc:
            raise _write_error(self.path, exc) from None
        self.message_count += 1

    def write_meta(self, meta: BagMeta) -> None:
        """Append a newer metadata record (the recorder learns d and c from the stream)."""
        self._check_open()
        self.meta = meta
        self._writer.add_metadata(META_RECORD, meta.to_record())

    def _check_open(self) -> None:
        if self._closed:
            raise BagError(f"bag {self.path} is already closed; open a new BagWriter")

    def flush(self) -> None:
        """Close the chunk in progress and hand everything to the OS.

        After this, a crash of the process loses nothing written so far (a power cut
        may: the file is fsynced only by :meth:`close`).
        """
        if self._closed:
            return
        try:
            self._writer.flush()  # type: ignore[no-untyped-call]
        except OSError as exc:
            raise _write_error(self.path, exc) from None

    def close(self) -> None:
        """Write the summary and footer, fsync and close; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._writer.finish()  # type: ignore[no-untyped-call]
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise _write_error(self.path, exc) from None
        finally:
            self._file.close()


def _write_error(path: Path, exc: OSError) -> BagError:
    return BagError(
        f"cannot write bag {path}: {exc.strerror or exc}; check free disk space and "
        "permissions (every chunk written before this error is readable)"
    )


def _check_time(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_TIME_NS:
        raise BagError(f"{name} must be integer nanoseconds in [0, 2**64), got {value!r}")


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
    """What ``bag info`` prints: times, per-topic counts and rates, meta, integrity."""

    path: str
    file_size: int
    meta: BagMeta
    topics: dict[str, TopicInfo]
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
            "file_size": self.file_size,
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
            "protocol_version": self.meta.protocol_version,
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
        }

    def describe(self) -> str:
        """A human-readable summary (``bag info``)."""
        lines = [
            f"path:       {self.path} ({self.file_size} bytes)",
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
        lines.append(f"protocol:   v{self.meta.protocol_version}")
        for key, value in sorted(self.meta.extra.items()):
            lines.append(f"extra:      {key} = {value}")
        lines.append("topics:")
        for name, t in sorted(self.topics.items()):
            rate = "-" if t.rate_hz is None else f"{t.rate_hz:.2f} Hz"
            lines.append(f"  {name:<10} {t.count:>9} msgs  {rate:>12}  {t.message_encoding}")
        return "\n".join(lines)


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

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
        """Yield the messages (of ``topics``, default all) in file order.

        Stops at the first damage: every message of every complete chunk before it is
        yielded, nothing after it; ``damaged``/``warning`` are set and a warning is logged.
        """
        wanted = None if topics is None else frozenset(topics)
        channels: dict[int, Channel] = {}
        for record in self._records(full=True):
            if isinstance(record, Channel):
                channels[record.id] = record
            elif isinstance(record, Message):
                channel = channels.get(record.channel_id)
                if channel is None:
                    self._mark_damaged(None, f"message on undeclared channel {record.channel_id}")
                    return
                if wanted is None or channel.topic in wanted:
                    yield _to_bag_message(channel, record)

    def info(self) -> BagInfo:
        """Scan the whole bag: time range, per-topic counts and rates, meta, integrity."""
        tallies: dict[str, _TopicTally] = {}
        channels: dict[int, Channel] = {}
        meta = BagMeta()
        for record in self._records(full=True):
            if isinstance(record, Channel):
                channels[record.id] = record
            elif isinstance(record, Metadata) and record.name == META_RECORD:
                meta = BagMeta.from_record(record.metadata)
            elif isinstance(record, Message):
                channel = channels.get(record.channel_id)
                if channel is None:
                    self._mark_damaged(None, f"message on undeclared channel {record.channel_id}")
                    break
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
            topics=topic_infos,
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
            reader = StreamReader(
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
        log.warning("%s", self.warning)


def _describe(exc: Exception) -> str:
    text = str(exc)
    return type(exc).__name__ + (f": {text}" if text else "")


def _to_bag_message(channel: Channel, message: Message) -> BagMessage:
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
        with open(path, "rb") as f:
            head = f.read(len(_MCAP_MAGIC))
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise BagError(f"no such bag: {path}") from None
    except IsADirectoryError:
        raise BagError(f"{path} is a directory; give the path of an .mcap file") from None
    except OSError as exc:
        raise BagError(f"cannot read bag {path}: {exc.strerror}") from None
    if size == 0:
        raise BagError(f"{path} is empty: no bag was written (was the recorder killed at start?)")
    if head != _MCAP_MAGIC:
        raise BagError(
            f"{path} is not an MCAP bag (its first bytes are {head[:8]!r}); "
            "bags are written by `robot-daemon bag record` or `robot-daemon sim`"
        )
    return size
