"""What the robot served, in numbers: the ``stream`` records of a capture bag.

The triggers keep a few frames in a hundred, chosen for being hard: their readings are
not distributed as the robot's are. A drifted sensor shifts every reading, though, and
the normalisation that undoes the shift needs the statistics of all of them. So the
capture also counts every frame a tick served into per-feature moments
(:class:`~robot_daemon.moments.Moments`: count, mean, squared deviations, min, max) and
writes them every :data:`PERIOD_NS` as one small ``stream`` record (about 700 bytes at
d = 16): the statistics of the frames served since the record before. The records of the
bags a directory keeps add up to the stream those bags cover; ``train --init
--renormalise`` fits the normalisation on them (docs/loop.md).

Design: docs/architecture.md, "Capture".
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgpack
import numpy as np
import numpy.typing as npt

from robot_daemon import wire
from robot_daemon.errors import BagError, WireError
from robot_daemon.moments import Moments

TOPIC: Final = wire.TOPIC_STREAM.decode()
#: A capture bag's ``source`` (its metadata's extra), as a simulator's is "robot_daemon.sim".
CAPTURE_SOURCE: Final = "robot_daemon.capture"
#: A record at most this often: 360 a hour, a few hundred kB a day at d = 16.
PERIOD_NS: Final = 10_000_000_000
_FIELDS: Final = ("mean", "m2", "min", "max")
#: Frames carry float32 readings: no honest stream's mean, min or max is beyond this.
READING_MAX: Final = float(np.finfo(np.float32).max)
#: More frames than a robot serves in a century at 1,000 a second.
MAX_N: Final = 10**13


@dataclass(frozen=True, eq=False)
class StreamRecord:
    """The moments of the frames served between ``t0`` and ``t1`` (wall clock, s) by
    model ``model``."""

    moments: Moments
    t0: float
    t1: float
    model: str


def encode(record: StreamRecord) -> bytes:
    """The ``stream`` payload: a msgpack map ``{n, mean, m2, min, max, t0, t1, model}``."""
    m = record.moments
    obj: dict[str, Any] = {"n": m.n, "mean": m.mean.tolist(), "m2": m.m2.tolist(),
                           "min": m.low.tolist(), "max": m.high.tolist(), "t0": record.t0,
                           "t1": record.t1, "model": record.model}
    payload: bytes = msgpack.packb(obj, use_bin_type=True)
    return payload


def decode(payload: bytes, d: int | None = None) -> Moments:
    """The moments a ``stream`` payload holds.

    Raises:
        WireError: not such a map, another ``d``, or values no stream could have (a count
            out of range, a non-finite number, a mean outside min-max, a spread beyond
            what min and max allow).
    """
    obj = wire.decode_status(payload)
    n = obj.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise WireError("bad_stream", f"a stream record's n must be an integer from 1 to"
                        f" {MAX_N:,}, got {n!r}")
    mean, m2, low, high = (_numbers(obj, name, d) for name in _FIELDS)
    if len({len(mean), len(m2), len(low), len(high)}) != 1:
        raise WireError("bad_stream", "a stream record's lists differ in length")
    if any((np.abs(a) > READING_MAX).any() for a in (mean, low, high)):
        raise WireError("bad_stream", "a stream record's readings are beyond float32's range,"
                        " which frames carry")
    # What n readings between min and max can have: min <= mean <= max, and a variance
    # of at most (max - min)^2 / 4 (Popoviciu); a little slack for rounding.
    span = high - low
    slack = 1e-6 * np.maximum(np.maximum(np.abs(low), np.abs(high)), 1.0)
    if ((span < 0).any() or (mean < low - slack).any() or (mean > high + slack).any()
            or (m2 < 0).any() or (m2 / n > (span + slack) ** 2 / 4 * (1 + 1e-6)).any()):
        raise WireError("bad_stream", "a stream record's moments are not those of any"
                        " readings (a mean outside min-max, or a spread beyond it)")
    return Moments(n, mean, m2, low, high)


def _numbers(obj: dict[str, Any], name: str, d: int | None) -> npt.NDArray[np.float64]:
    """The list ``obj[name]`` of d finite ints or floats (no bools, no strings), as float64."""
    values = obj.get(name)
    if not isinstance(values, list) or not values or (d is not None and len(values) != d):
        raise WireError("bad_stream", f"a stream record's {name} must be a list of d numbers")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise WireError("bad_stream", f"a stream record's {name} holds something else than"
                        " numbers")
    array = np.asarray(values, dtype=np.float64)
    if not np.isfinite(array).all():
        raise WireError("bad_stream", f"a stream record's {name} must be finite numbers")
    return array


def served(X: npt.NDArray[Any]) -> Moments:
    """The moments of the finite rows of a tick's readings ``X`` (n, d)."""
    finite = np.isfinite(X).all(axis=1)
    return Moments.of(X if finite.all() else X[finite])


def total(payloads: Iterable[bytes], d: int | None = None) -> tuple[Moments, int]:
    """The moments of every record in ``payloads`` merged, and how many were refused."""
    moments, refused = Moments.empty(), 0
    for payload in payloads:
        try:
            record = decode(payload, d)
        except WireError:
            refused += 1
            continue
        d = len(record.mean)  # the first record's d holds for the rest
        with np.errstate(over="ignore", invalid="ignore"):
            merged = moments.merge(record)
        if not all(np.isfinite(a).all() for a in (merged.mean, merged.m2)):
            refused += 1  # each finite, their sum not (squared deviations near 1e308)
            continue
        moments = merged
    return moments, refused


@dataclass(frozen=True, eq=False)
class Served:
    """What training sources say of the stream the robot served: the moments of their
    capture bags' ``stream`` records, how many of the sources are capture bags, how many
    are not, and how many records were refused."""

    moments: Moments
    captures: int
    others: int
    refused: int = 0

    @property
    def captures_only(self) -> bool:
        """Every source is a capture bag: its frames were chosen, not drawn as served."""
        return self.captures > 0 and self.others == 0


def of_bags(paths: Sequence[str | os.PathLike[str]], d: int | None = None) -> Served:
    """The stream records of the capture bags among ``paths`` (bag files; the others
    count as ``others``; a capture bag without records is a capture all the same, whose
    frames were chosen). A bag that cannot be read counts as another: ``train`` reads it
    next and says what is wrong with it (a directory's damaged bag is skipped, with a
    warning, as before)."""
    from robot_daemon.bag import BagReader  # needs the optional mcap package

    moments, captures, others, refused = Moments.empty(), 0, 0, 0
    for path in paths:
        try:
            # A cut bag's damage is train's to say, once, when it reads the labels.
            with BagReader(path) as reader, _quiet(logging.getLogger(BagReader.__module__)):
                # The capture writes its metadata first: an archive's big bags are not
                # read through to find out they are not captures.
                meta = reader.leading_meta()
                if meta is None or meta.extra.get("source") != CAPTURE_SOURCE:
                    others += 1
                    continue
                got, bad = total((m.payload for m in reader.messages([TOPIC])), d)
        except BagError:
            others += 1
            continue
        captures += 1
        moments, refused = moments.merge(got), refused + bad
    return Served(moments, captures, others, refused)


@contextlib.contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """``logger``'s warnings left out for the block (restored after it)."""
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
