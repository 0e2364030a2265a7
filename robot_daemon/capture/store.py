"""The capture directory: bags named by time, rotated, the oldest deleted first, and a
total size that never passes its bound, the index and footer of the open bag included.

:class:`CaptureStore` is the synchronous part of the capture writer: no thread, no
clock of its own but the wall time in a new bag's name, every failure raised
(``OSError``, :class:`~robot_daemon.errors.BagError`) for the writer thread to count and
back off from. One daemon per directory.

**The bound.** The bags are ``capture-<UTC time>-<n>.mcap``; the one being written is
``.capture-<...>.mcap.partial`` beside them, hidden, so that ``dataset`` and ``train``
walking the directory never read a bag half-way (``bag info`` on it works: the reader
stops at the end of the last complete chunk). Each bag stays under ``bag_bytes``, its
summary and footer included: MCAP writes a chunk only when it is closed and the index
only at the end, so before each frame the store adds to the bytes in the file a bound on
the chunk in progress (uncompressed size plus zstd's worst case) and a reserve for the
index (a fixed part and one entry per chunk), and closes the bag when the frame would
not fit. A new bag is opened only once the closed bags leave room for a whole one: the
oldest are deleted first. So the total on disk is at most the closed bags plus one bag,
at most ``max_bytes``, at every moment.

Design: docs/architecture.md, "Capture".
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from robot_daemon.capture.frames import Message
from robot_daemon.errors import BagError

if TYPE_CHECKING:
    from robot_daemon.bag import BagMeta, BagWriter

log = logging.getLogger("robot_daemon.capture")

#: A bag is a quarter of the bound (deleting the oldest frees a quarter of it), within
#: these: a bag small enough to be worth a file, large enough for one rotation a minute at
#: the default rate, never so large that a fleet job's partition is unwieldy.
MIN_BAG_BYTES: Final = 256 * 1024
MAX_BAG_BYTES: Final = 64 * 1024 * 1024
#: A chunk is closed when the messages in it reach this, uncompressed (the size that
#: ``BagWriter`` chunks at), or when the oldest has waited ``flush_s``.
CHUNK_BYTES: Final = 64 * 1024

# What MCAP adds to the payloads (its records, mcap/records.py), for the size bound:
#: a Message record's header: opcode 1, length 8, channel 2, sequence 4, two times 8 + 8.
MESSAGE_OVERHEAD: Final = 31
#: a message index entry (log time 8, offset 8), written after its chunk, uncompressed.
INDEX_ENTRY: Final = 16
#: a Channel record in the chunk where its topic first appears (a short topic, msgpack).
CHANNEL_RECORD: Final = 64
#: per chunk: the Chunk record's header (53), its message index headers (15 per channel)
#: and its ChunkIndex in the summary (87 + 10 per channel): 265 for the five topics.
PER_CHUNK: Final = 512
#: the rest of the summary: DataEnd, the channels repeated, Statistics, the metadata
#: index, the summary offsets, Footer and magic: about 560 bytes for the five topics.
SUMMARY_FIXED: Final = 2048

_NAME: Final = re.compile(r"^capture-(\d{8}T\d{6}Z)-(\d{4,9})\.mcap$")
_PARTIAL: Final = re.compile(r"^\.(capture-\d{8}T\d{6}Z-\d{4,9}\.mcap)\.partial$")


def bag_bytes_for(max_bytes: int) -> int:
    """The size a bag rotates at for a bound of ``max_bytes``: a quarter, within limits."""
    return min(max(max_bytes // 4, MIN_BAG_BYTES), MAX_BAG_BYTES, max_bytes)


def zstd_bound(n: int) -> int:
    """The most bytes zstd makes of ``n`` (ZSTD_compressBound: n + n/256 + 64 below
    128 KiB), with room for the frame header."""
    return n + (n >> 8) + 128


def sort_key(path: Path) -> tuple[int, str]:
    """A capture bag's number and time: the order the bags were opened in. The number
    first: it only grows (each run numbers on from the bags it finds), while the wall
    clock may be set back, and the newest bags must not be deleted as the oldest."""
    match = _NAME.match(path.name)
    return (int(match.group(2)), match.group(1)) if match else (0, "")


@dataclass
class _OpenBag:
    """The bag being written and what its file does not hold yet (for the bound).

    raw : the chunk in progress, uncompressed (message records, channel records).
    index : its message index entries. chunks : chunks closed so far.
    pending_ns : when the oldest message of the chunk in progress was written (monotonic).
    """

    writer: BagWriter
    partial: Path
    final: Path
    raw: int = 0
    index: int = 0
    chunks: int = 0
    pending_ns: int | None = None
    topics: set[str] = field(default_factory=set)

    def estimate(self, raw: int = 0, index: int = 0) -> int:
        """The most bytes the file can hold once closed, with ``raw`` and ``index`` more."""
        pending = self.raw + raw
        chunks = self.chunks + (1 if pending else 0)
        return (self.writer.size + zstd_bound(pending) + self.index + index
                + PER_CHUNK * chunks + SUMMARY_FIXED)


class CaptureStore:
    """The capture bags of one directory, bounded to ``max_bytes`` in all.

    Call :meth:`scan` first (it reads what earlier runs left), then :meth:`write` each
    captured frame's messages; :meth:`flush_due` closes a chunk that has waited long
    enough, :meth:`close` finishes the open bag, :meth:`abandon` lets go of it after a
    failure. Methods raise ``OSError`` or ``BagError`` on a disk that fails.

    Each write's ``token`` moves to :attr:`landed` once its chunk is in the file (a flush,
    the bag finished, also when a rotation finishes it), or to :attr:`lost` when the bag
    it waited in could not be finished; the caller takes them from there.
    """

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        meta: BagMeta,
        *,
        bag_bytes: int | None = None,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.bag_bytes = bag_bytes_for(max_bytes) if bag_bytes is None else bag_bytes
        if not SUMMARY_FIXED + PER_CHUNK < self.bag_bytes <= max_bytes:
            raise ValueError(f"bag_bytes {self.bag_bytes} must be within (2.5 KiB, max_bytes]")
        self.chunk_bytes = chunk_bytes
        self.meta = meta
        self.bags: list[Path] = []  # closed bags, oldest first
        self._sizes: dict[Path, int] = {}
        self._open: _OpenBag | None = None
        self._next = 1
        self.largest_bag = 0  # the largest closed bag this run, for the tests and bench
        self.landed: list[Any] = []  # tokens of writes now in the file
        self.lost: list[Any] = []  # tokens of writes that only reached memory, lost
        self._waiting: list[Any] = []  # tokens of writes in the chunk in memory

    # ------------------------------------------------------------------ the directory

    def scan(self) -> None:
        """Read the directory: the bags of earlier runs counted, the ``.partial`` of a run
        that was killed renamed into place (a cut bag, read up to its last chunk), and the
        oldest bags deleted until a new bag fits under the bound."""
        # Deleted under us: made again, but not its parents: a DIR on a mount that went
        # away must not quietly move to the root file system.
        self.directory.mkdir(exist_ok=True)
        for name in _files(self.directory):
            match = _PARTIAL.match(name)
            if match and (self._open is None or name != self._open.partial.name):
                self._recover(self.directory / name, self.directory / match.group(1))
        bags = [self.directory / n for n in _files(self.directory) if _NAME.match(n)]
        self.bags = sorted(bags, key=sort_key)
        self._sizes = {path: _size(path) for path in self.bags}
        if self.bags:
            self._next = max(self._next, sort_key(self.bags[-1])[0] + 1)
        self._make_room()

    def _recover(self, partial: Path, final: Path) -> None:
        """A bag a killed run left open: kept as a cut bag, or deleted if it holds nothing."""
        if _size(partial) == 0 or final.exists():
            partial.unlink(missing_ok=True)
        else:
            os.rename(partial, final)
            log.warning("capture: %s was left open by a run that stopped; kept as a cut bag",
                        final.name)

    def _make_room(self) -> None:
        """Delete the oldest bags until they and one more bag fit under the bound."""
        while self.bags and self.closed_bytes + self.bag_bytes > self.max_bytes:
            oldest = self.bags.pop(0)
            oldest.unlink(missing_ok=True)  # an operator may have removed it first
            del self._sizes[oldest]

    @property
    def closed_bytes(self) -> int:
        """Bytes of the closed bags."""
        return sum(self._sizes.values())

    @property
    def bytes_on_disk(self) -> int:
        """Bytes of every capture bag, the open one as far as it is written."""
        open_bytes = self._open.writer.size if self._open is not None else 0
        return self.closed_bytes + open_bytes

    @property
    def bag_count(self) -> int:
        """Capture bags in the directory, the open one included."""
        return len(self.bags) + (self._open is not None)

    # ------------------------------------------------------------------ writing

    def write(self, messages: Sequence[Message], recv_ns: int, now_ns: int,
              token: Any = None) -> None:
        """Append one captured frame's messages (log time ``recv_ns``, wall ns), rotating
        first if they would not fit in the open bag. ``now_ns``: monotonic, for
        :meth:`flush_due`; ``token`` ends in :attr:`landed` or :attr:`lost`, once (lost at
        once if the messages did not reach the chunk in memory)."""
        try:
            bag = self._append(messages, recv_ns, now_ns)
        except BaseException:
            self.lost.append(token)
            raise
        self._waiting.append(token)
        if bag.raw >= self.chunk_bytes:
            self.flush()

    def _append(self, messages: Sequence[Message], recv_ns: int, now_ns: int) -> _OpenBag:
        raw = sum(MESSAGE_OVERHEAD + len(m.payload) for m in messages)
        index = INDEX_ENTRY * len(messages)
        bag = self._open
        if bag is not None:
            new_topics = {m.topic for m in messages} - bag.topics
            if bag.estimate(raw + CHANNEL_RECORD * len(new_topics), index) > self.bag_bytes:
                self.close()
                bag = None
        if bag is None:
            bag = self._open_bag()
            if bag.estimate(raw + CHANNEL_RECORD * len(messages), index) > self.bag_bytes:
                raise BagError(f"a captured frame of {raw} bytes does not fit in a bag of"
                               f" {self.bag_bytes}")
        for message in messages:
            if message.topic not in bag.topics:
                bag.topics.add(message.topic)
                bag.raw += CHANNEL_RECORD
            bag.writer.write(message.topic, message.payload, recv_ns, message.sensor_ns)
        bag.raw += raw
        bag.index += index
        if bag.pending_ns is None:
            bag.pending_ns = now_ns
        return bag

    def _open_bag(self) -> _OpenBag:
        from robot_daemon.bag import BagWriter

        self.scan()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        final = self.directory / f"capture-{stamp}-{self._next:04d}.mcap"
        self._next += 1
        partial = final.with_name(f".{final.name}.partial")
        # The store closes the chunks itself (flush), so the writer's own chunking never
        # does, and the bytes of the chunk in progress are the store's to count.
        writer = BagWriter(partial, meta=self.meta, chunk_size=self.bag_bytes)
        self._open = _OpenBag(writer, partial, final)
        return self._open

    def flush(self) -> None:
        """Close the chunk in progress: what is written survives a kill from now on."""
        bag = self._open
        if bag is None or bag.pending_ns is None:
            return
        bag.writer.flush()
        self._landed()
        bag.chunks += 1
        bag.raw = bag.index = 0
        bag.pending_ns = None

    def flush_due(self, now_ns: int, age_ns: int) -> int | None:
        """Flush if the oldest message waiting has waited ``age_ns``; the ns until the next
        flush is due (None: nothing waits)."""
        bag = self._open
        if bag is None or bag.pending_ns is None:
            return None
        left = bag.pending_ns + age_ns - now_ns
        if left > 0:
            return left
        self.flush()
        return None

    def close(self) -> None:
        """Finish the open bag (summary, footer, fsync) and rename it into place."""
        bag, self._open = self._open, None
        if bag is None:
            return
        try:
            bag.writer.close()  # on a failure the .partial stays, for the next scan
        except BaseException:
            # Its complete chunks are kept (a cut bag); what waited in memory is gone.
            self.lost += self._waiting
            self._waiting = []
            raise
        self._landed()
        size = _size(bag.partial)
        try:
            os.rename(bag.partial, bag.final)
        except FileNotFoundError:
            if not self.directory.is_dir():
                raise  # the directory went away: the checkpoint rule
            # Another process deleted the bag being written: its frames are gone, the
            # disk works. Not a failing disk (an ERROR and a second of frames dropped).
            log.warning("capture: %s was deleted while it was written; its frames are lost",
                        bag.partial.name)
            return
        self.bags.append(bag.final)
        self._sizes[bag.final] = size
        self.largest_bag = max(self.largest_bag, size)
        if size > self.bag_bytes:  # the reserve was too small: a bug, but keep the bound
            log.warning("capture: %s is %d bytes, over its %d; deleting old bags to keep"
                        " the bound", bag.final.name, size, self.bag_bytes)
            self._make_room()

    def _landed(self) -> None:
        self.landed += self._waiting
        self._waiting = []

    def abandon(self) -> None:
        """Let go of the open bag after a failure, never raising: finished if the disk
        lets it, else kept as a cut bag (its complete chunks), or deleted if it has none:
        retries on a full disk must not leave a trail of empty bags. What waited in
        memory goes to :attr:`landed` or :attr:`lost` as it went."""
        bag = self._open
        if bag is None:
            return
        try:
            self.close()
            return
        except (OSError, BagError) as exc:
            log.debug("capture: could not finish %s: %s", bag.final.name, exc)
        try:
            if bag.chunks == 0:
                bag.partial.unlink(missing_ok=True)
            else:
                size = _size(bag.partial)
                os.rename(bag.partial, bag.final)  # a rename needs no free space
                self.bags.append(bag.final)
                self._sizes[bag.final] = size
        except OSError as exc:  # the next scan finds it
            log.debug("capture: could not put %s away: %s", bag.partial.name, exc)


def _files(directory: Path) -> list[str]:
    """The names of the regular files in ``directory``: a directory or a symlink named like
    a bag is someone else's, neither counted nor deleted (unlinking a directory failed
    every rotation: the capture stopped for good)."""
    with os.scandir(directory) as entries:
        return [entry.name for entry in entries if entry.is_file(follow_symlinks=False)]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
