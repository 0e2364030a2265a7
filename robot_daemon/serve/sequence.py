"""Frames lost between the publishers and the daemon, from the gaps in each stream's ``seq``.

:class:`SeqTracker` follows each publisher's numbering (a frames endpoint and a ``src``,
or one counter across its ``src`` names) and counts the frames lost in its gaps, the
publisher restarts (``frames_seq_resets``) and the stray frames that fit no numbering
(``frames_out_of_seq``). Losses are bounded by what an endpoint delivered in order and the
streams tracked by ``max_streams``, so a broken or hostile publisher can neither inflate
``frames_lost`` nor grow memory.

Design: docs/architecture.md, "Frames lost, from the gaps in seq".
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Final

#: Lost frames an endpoint's streams may report before they delivered as many: a burst lost
#: while the daemon started, a reconnect soon after (a second of a 1,000 frames/s sensor).
CREDIT_START: Final = 1000
#: Lost frames each frame that goes on forward in its numbering allows: at most half of an
#: endpoint's frames reported lost.
CREDIT_PER_FRAME: Final = 1
#: The most credit an endpoint holds, so the largest gap counted as loss: 100,000 frames
#: (33 minutes of a 50 Hz sensor, 1 s at 100,000 frames/s); a larger jump is a new
#: numbering.
CREDIT_MAX: Final = 100_000
#: Streams tracked at most.
MAX_STREAMS: Final = 1024


class _Credit:
    """The lost frames an endpoint's streams may still report (shared by its streams, so
    that a publisher inventing a ``src`` per frame gets no credit of its own for each)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = CREDIT_START

    def earn(self, frames: int) -> None:
        self.value = min(CREDIT_MAX, self.value + CREDIT_PER_FRAME * frames)


class _Tally:
    """What one way of numbering an endpoint's frames found (see :class:`SeqTracker`)."""

    __slots__ = ("lost", "next", "out_of_seq", "resets")

    def __init__(self) -> None:
        self.lost = 0
        self.resets = 0
        self.out_of_seq = 0
        self.next = 0  # frames exactly one after the last: how well this way fits


class _Stream:
    """One stream's numbering: the last ``seq`` it went on from, its endpoint's credit, the
    gap held open until the next frame goes on forward, and the misfit that may start a
    new numbering."""

    __slots__ = ("credit", "last", "misfit", "pending", "tally")

    def __init__(self, seq: int, credit: _Credit, tally: _Tally) -> None:
        self.last = seq
        self.credit = credit
        self.tally = tally
        self.pending = 0
        self.misfit: int | None = None


class SeqTracker:
    """Lost, reset and out-of-sequence frames of every stream (see the module).

    Each endpoint's frames are followed per ``src`` and as one stream; each figure is the
    sum over the endpoints of the way that fits each best.
    """

    def __init__(self, max_streams: int = MAX_STREAMS) -> None:
        self._by_src = _Numbering(max_streams)
        self._as_one = _Numbering(max_streams)

    def __len__(self) -> int:
        return len(self._by_src)

    def observe(self, endpoint: Hashable, src: str | None, seq: int) -> None:
        """Account for frame ``seq`` of the stream of ``endpoint`` and ``src``."""
        self._by_src.observe(endpoint, src, seq)
        self._as_one.observe(endpoint, _ONE, seq)

    def observe_run(self, endpoint: Hashable, src: str | None, seqs: Sequence[int]) -> None:
        """:meth:`observe` of frames ``seqs`` (at least one) of one stream in turn."""
        # The usual run, each ``seq`` the one after the last: checked once for both ways.
        k = len(seqs)
        consecutive = k > 1 and seqs[-1] - seqs[0] == k - 1 and list(seqs) == list(
            range(seqs[0], seqs[0] + k))
        self._by_src.observe_run(endpoint, src, seqs, consecutive)
        self._as_one.observe_run(endpoint, _ONE, seqs, consecutive)

    def _fitting(self) -> list[_Tally]:
        """Per endpoint, the tally of the way of numbering that fits its frames."""
        one = self._as_one.tallies
        return [one[e] if one[e].next > t.next else t for e, t in self._by_src.tallies.items()]

    @property
    def lost(self) -> int:
        return sum(t.lost for t in self._fitting())

    @property
    def resets(self) -> int:
        return sum(t.resets for t in self._fitting())

    @property
    def out_of_seq(self) -> int:
        return sum(t.out_of_seq for t in self._fitting())


class _Numbering:
    """One way of following the frames: the streams of some keys (endpoint, src), each
    endpoint's credit shared by its streams, and each endpoint's :class:`_Tally`."""

    def __init__(self, max_streams: int) -> None:
        self._streams: dict[tuple[Hashable, object], _Stream] = {}  # dict order: recency
        self._credits: dict[Hashable, _Credit] = {}  # per endpoint
        self.tallies: dict[Hashable, _Tally] = {}  # per endpoint
        self._newest: object = _NO_STREAM  # the last key seen: streams[key] is current
        self._newest_stream: _Stream | None = None  # and its stream
        self._max_streams = max_streams

    def __len__(self) -> int:
        return len(self._streams)

    def observe(self, endpoint: Hashable, src: object, seq: int) -> None:
        """Account for frame ``seq`` of the stream of ``endpoint`` and ``src``."""
        stream = self._newest_stream
        if stream is None or (endpoint, src) != self._newest:
            stream = self._stream((endpoint, src), seq)
            if stream is None:
                return
        self._follow(stream, seq)

    def observe_run(self, endpoint: Hashable, src: object, seqs: Sequence[int],
                    consecutive: bool) -> None:
        """:meth:`observe` of frames ``seqs`` (at least one) of one stream in turn; a
        ``consecutive`` run (each ``seq`` the one after the last) at once."""
        self.observe(endpoint, src, seqs[0])
        if consecutive:
            stream = self._streams[endpoint, src]
            if stream.last != seqs[0]:  # the first was a misfit: the next one decides
                self._follow(stream, seqs[1])
                seqs = seqs[1:]
                if len(seqs) == 1:
                    return
            # Each further frame is the one after the last: what _follow does, at once.
            stream.tally.lost += stream.pending
            stream.tally.next += len(seqs) - 1
            stream.pending, stream.misfit, stream.last = 0, None, seqs[-1]
            stream.credit.earn(len(seqs) - 1)
            return
        for seq in seqs[1:]:
            self.observe(endpoint, src, seq)

    def _stream(self, key: tuple[Hashable, object], seq: int) -> _Stream | None:
        """The stream of ``key``, most recent from now on; None for its first frame."""
        if key == self._newest:  # the usual case: the same stream as the frame before
            return self._streams[key]
        stream = self._streams.pop(key, None)  # re-inserted below: dict order = recency
        self._newest = key
        if stream is None:
            if len(self._streams) >= self._max_streams:
                del self._streams[next(iter(self._streams))]  # heard from least recently
            endpoint = key[0]
            credit = self._credits.get(endpoint)
            if credit is None:
                credit = self._credits[endpoint] = _Credit()
                self.tallies[endpoint] = _Tally()
            stream = self._streams[key] = _Stream(seq, credit, self.tallies[endpoint])
            self._newest_stream = stream
            return None
        self._streams[key] = self._newest_stream = stream
        return stream

    def _follow(self, stream: _Stream, seq: int) -> None:
        """Frame ``seq`` of ``stream``: the next, a gap, or a misfit (see the module)."""
        credit = stream.credit
        tally = stream.tally
        gap = seq - stream.last - 1
        if 0 <= gap <= credit.value:  # goes on forward: what was held open was lost
            tally.lost += stream.pending
            tally.next += gap == 0
            # Only a frame that goes on forward earns (a stray frame, a new src, a jump
            # beyond the credit earns nothing), without earn()'s call: it runs per frame.
            credit.value = min(CREDIT_MAX, credit.value - gap + CREDIT_PER_FRAME)
            stream.pending, stream.misfit, stream.last = gap, None, seq
            return
        if stream.misfit is not None and seq == stream.misfit + 1:
            # The misfit began a new numbering: the publisher restarted.
            tally.resets += 1
            tally.out_of_seq -= 1  # the misfit was its first frame, not a stray one
            stream.pending, stream.misfit, stream.last = 0, None, seq
            return
        tally.out_of_seq += 1
        stream.misfit = seq


#: The "src" of every frame when an endpoint's frames are followed as one stream.
_ONE: Final = object()
#: No stream's key (keys are tuples): the newest stream before any frame.
_NO_STREAM: Final = object()
