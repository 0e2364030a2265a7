"""Writing bags: :class:`BagWriter`, crash-safe one chunk at a time."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Self

import mcap
from mcap.writer import CompressionType, Writer

from robot_daemon import __version__
from robot_daemon.bag.format import MAX_TIME_NS, MESSAGE_ENCODING, META_RECORD, BagMeta
from robot_daemon.errors import BagError

#: The MCAP header's ``library``: who wrote the bag, with versions.
LIBRARY = f"robot_daemon {__version__}; mcap {mcap.__version__}"
# 64 KiB holds ~500 frames of d = 16; the recorder also flushes on a timer, so at sensor
# rates the timer, not the size, bounds what a crash can lose.
DEFAULT_CHUNK_SIZE = 64 * 1024


class BagWriter:
    """Write a bag (an MCAP file); a context manager that always finishes the file.

    Example::

        with BagWriter("run.mcap", meta=BagMeta(d=16, c=8)) as bag:
            bag.write("frame", payload, recv_ns=time.time_ns(), sensor_ns=t_ns)

    Channels are created on first use with ``message_encoding`` ``"msgpack"``;
    :meth:`add_topic` declares other encodings and schemas (``bag export`` uses it). Each
    channel numbers its messages 0, 1, 2, ... (MCAP ``sequence``), so that a tool that
    finds drops from per-channel gaps finds none.

    The ``robot_daemon`` metadata record is written once (MCAP tools flag duplicate
    names): before any message when ``meta`` knows both d and c, otherwise as soon as
    :meth:`write_meta` makes it complete, or at :meth:`close` with what is known.
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
        self._sequences: dict[int, int] = {}  # channel id -> its next sequence number
        self._meta_written = False
        try:
            self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise BagWriteError(f"cannot create bag {self.path}: {exc.strerror}") from None
        self._closed = False
        try:
            self._writer = Writer(
                self._file, chunk_size=chunk_size, compression=CompressionType.ZSTD
            )
            self._writer.start(profile="", library=LIBRARY)
            # Metadata goes first when it can, so that a cut bag still knows its d and c.
            if _complete(self.meta):
                self._write_meta_record()
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
        schema_id = self.add_schema(schema_name, schema_encoding, schema) if schema_encoding else 0
        self._channels[topic] = self.add_channel(topic, message_encoding, schema_id)

    # ---- another tool's records, copied as they are (``bag export`` uses these) ----------

    def add_schema(self, name: str, encoding: str, data: bytes) -> int:
        """Declare a schema; returns its id for :meth:`add_channel`."""
        self._check_open()
        return int(self._writer.register_schema(name, encoding, data))

    def add_channel(
        self,
        topic: str,
        message_encoding: str,
        schema_id: int = 0,
        metadata: dict[str, str] | None = None,
    ) -> int:
        """Declare a channel as another tool wrote it; returns its id for
        :meth:`write_raw`. A topic may have several (MCAP allows it); :meth:`write` does
        not use them."""
        self._check_open()
        return int(self._writer.register_channel(topic, message_encoding, schema_id,
                                                 dict(metadata or {})))

    def write_raw(
        self, channel_id: int, data: bytes, *, log_time: int, publish_time: int, sequence: int
    ) -> None:
        """Append one message to a channel of :meth:`add_channel`, times and sequence as
        given (integer nanoseconds, uint64; sequence uint32)."""
        self._check_open()
        _check_time("log_time", log_time)
        _check_time("publish_time", publish_time)
        try:
            self._writer.add_message(channel_id=channel_id, log_time=log_time, data=bytes(data),
                                     publish_time=publish_time, sequence=sequence)
        except OSError as exc:
            raise _write_error(self.path, exc) from None
        self.message_count += 1

    def add_attachment(
        self, name: str, media_type: str, data: bytes, *, log_time: int, create_time: int
    ) -> None:
        """Attach a file (``data`` held whole: the caller bounds its size)."""
        self._check_open()
        try:
            self._writer.add_attachment(create_time=create_time, log_time=log_time, name=name,
                                        media_type=media_type, data=bytes(data))
        except OSError as exc:
            raise _write_error(self.path, exc) from None

    def add_metadata(self, name: str, record: dict[str, str]) -> None:
        """Add another tool's metadata record; the ``robot_daemon`` record is the writer's
        own (:meth:`write_meta`)."""
        self._check_open()
        if name == META_RECORD:
            raise BagError(f"the {META_RECORD!r} metadata record is written from meta;"
                           " use write_meta")
        try:
            self._writer.add_metadata(name, dict(record))
        except OSError as exc:
            raise _write_error(self.path, exc) from None

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
        channel = self._channels[topic]
        sequence = self._sequences.get(channel, 0)
        try:
            self._writer.add_message(
                channel_id=channel,
                log_time=recv_ns,
                data=bytes(payload),
                publish_time=recv_ns if sensor_ns is None else sensor_ns,
                sequence=sequence,
            )
        except OSError as exc:
            raise _write_error(self.path, exc) from None
        self._sequences[channel] = (sequence + 1) & 0xFFFFFFFF  # uint32 per MCAP; wraps
        self.message_count += 1

    def write_meta(self, meta: BagMeta) -> None:
        """Set the bag's metadata (the recorder learns d and c from the stream).

        Written at once when it knows both d and c, else at :meth:`close`; after it has
        been written it cannot change.
        """
        self._check_open()
        if self._meta_written:
            raise BagError(f"the metadata of {self.path} is already written")
        self.meta = meta
        if _complete(meta):
            self._write_meta_record()

    def _write_meta_record(self) -> None:
        try:
            self._writer.add_metadata(META_RECORD, self.meta.to_record())
        except OSError as exc:
            raise _write_error(self.path, exc) from None
        self._meta_written = True

    def _check_open(self) -> None:
        if self._closed:
            raise BagError(f"bag {self.path} is already closed; open a new BagWriter")

    @property
    def size(self) -> int:
        """Bytes of the file so far, those the file object still buffers included; not the
        chunk in progress (until :meth:`flush` closes it) nor the summary :meth:`close`
        writes. A writer that bounds a bag's size adds those two (``robot_daemon.capture``)."""
        return self._file.tell()

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
            if not self._meta_written:
                self._write_meta_record()
            self._writer.finish()  # type: ignore[no-untyped-call]
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise _write_error(self.path, exc) from None
        finally:
            # Closing flushes what is buffered: on a full disk it fails too, and a bare
            # OSError from here replaced the BagError (a traceback, not one line).
            try:
                self._file.close()
            except OSError as exc:
                raise _write_error(self.path, exc) from None


def _complete(meta: BagMeta) -> bool:
    return meta.d is not None and meta.c is not None


class BagWriteError(BagError):
    """The bag could not be written (a full disk, a lost mount). Unlike a bag that cannot
    be read, which a job over many bags skips, this stops the job."""


def _write_error(path: Path, exc: OSError) -> BagWriteError:
    return BagWriteError(
        f"cannot write bag {path}: {exc.strerror or exc}; check free disk space and "
        "permissions (every chunk written before this error is readable)"
    )


def _check_time(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TIME_NS:
        raise BagError(f"{name} must be integer nanoseconds in [0, 2**64), got {value!r}")
