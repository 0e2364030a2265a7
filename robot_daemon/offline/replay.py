"""Offline replay: a bag's frames through a model with the daemon's batching, on sensor time.

``robot-daemon replay MODEL BAG --out PRED_BAG`` is the regression test of a model or of
the serving code: it cuts the frames of a bag into ticks exactly as the daemon does, but
on the frames' sensor time instead of the wall clock, as fast as possible, and writes one
``pred`` message per tick that had frames. Nothing in the output depends on when or how
fast it ran, so two runs write identical bytes.

The batching rules (:func:`tick_batches`), shared with the daemon:

* ticks are ``interval`` long and start at the first frame's time; tick ``k`` covers
  ``[t0 + k * interval, t0 + (k + 1) * interval)`` and is published at its end;
* frames are taken in arrival order (file order); a frame whose time falls in a tick
  that was already published (it arrived late) joins the current tick, as it would in
  the daemon, and is counted as ``late``;
* a tick with more than ``max_batch`` frames keeps the newest ``max_batch`` and counts
  the rest as ``dropped``; a tick without frames publishes nothing.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from robot_daemon import wire
from robot_daemon.errors import BagError, RobotDaemonError, WireError
from robot_daemon.model import Model, identity
from robot_daemon.paths import check_output, replaced_on_success

if TYPE_CHECKING:
    from robot_daemon.bag import BagMessage, BagReader

DEFAULT_INTERVAL_MS = 20.0
DEFAULT_MAX_BATCH = 256


@dataclass(frozen=True, eq=False)
class TickBatch:
    """The frames one tick answers, oldest first, and how many it had to drop."""

    tick: int
    end_ns: int
    frames: Sequence[wire.Frame]
    dropped: int
    late: int


def newest(frames: Sequence[wire.Frame], max_batch: int) -> tuple[Sequence[wire.Frame], int]:
    """At most ``max_batch`` of the newest ``frames`` and the number left out."""
    excess = max(0, len(frames) - max_batch)
    return frames[excess:], excess


def tick_batches(
    frames: Iterable[wire.Frame], interval_ns: int, max_batch: int
) -> Iterator[TickBatch]:
    """Group frames (in arrival order) into ticks on their sensor time; see module doc."""
    if interval_ns <= 0 or max_batch <= 0:
        raise RobotDaemonError("the tick interval and max_batch must be positive")
    t0: int | None = None
    tick = 0
    pending: list[wire.Frame] = []
    late = 0
    for frame in frames:
        t_ns = round(frame.t * 1e9)
        if t0 is None:
            t0 = t_ns
        k = (t_ns - t0) // interval_ns
        if k < tick:
            late += 1  # belongs to a tick already published: the current one answers it
        elif k > tick:
            if pending:
                yield _batch(tick, t0, interval_ns, pending, max_batch, late)
            tick, pending, late = k, [], 0
        pending.append(frame)
    if pending and t0 is not None:
        yield _batch(tick, t0, interval_ns, pending, max_batch, late)


def _batch(
    tick: int, t0: int, interval_ns: int, pending: list[wire.Frame], max_batch: int, late: int
) -> TickBatch:
    kept, dropped = newest(pending, max_batch)
    return TickBatch(tick, t0 + (tick + 1) * interval_ns, kept, dropped, late)


@dataclass
class ReplayStats:
    """What a replay did: frames in, accepted, rejected by reason, dropped, late, ticks."""

    frames_in: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    dropped: int = 0
    late: int = 0
    ticks: int = 0
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> str:
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items())) or "none"
        lines = [
            f"frames in {self.frames_in}, answered {self.accepted - self.dropped},"
            f" dropped {self.dropped} (over max batch), late {self.late}",
            f"rejected: {rejected}",
            f"pred messages (ticks with frames): {self.ticks}",
        ]
        return "\n".join(lines + [f"warning: {w}" for w in self.warnings])


def replay(
    model: Model,
    bag_in: str | os.PathLike[str],
    bag_out: str | os.PathLike[str],
    *,
    model_name: str | None = None,
    interval_ms: float = DEFAULT_INTERVAL_MS,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> ReplayStats:
    """Run every ``frame`` of ``bag_in`` through ``model``; write ``pred`` messages to ``bag_out``.

    Each ``pred`` carries the tick, its end time (sensor seconds), the answered ``seq``
    numbers with their probabilities, ``model_name`` as its ``model`` and, as extra keys,
    each frame's sensor time (``t_frame``) and source (``src``). Its receive and sensor
    times in the bag are the tick's end.

    ``model_name`` should be the model's identity, ``robot_daemon.model.identity(model,
    path)`` for the file it was loaded from: what the daemon's ``pred`` carries for that
    file, so that a replay and a planner's log can be matched. By default it is the
    identity with the stem ``model`` (``model-<12 hex digits>``).

    ``bag_out`` is written beside and renamed at the end, so that a refused or failed
    replay leaves it as it was.

    Raises:
        BagError: ``bag_in`` is not a readable bag, is a JSON copy (``bag export``),
            declares another ``d`` than the model's, or holds no valid frame.
        ConfigError: ``bag_out`` is ``bag_in`` (also through a link) or cannot be written.
    """
    from robot_daemon.bag import BagReader  # optional mcap package

    interval_ns = round(interval_ms * 1e6)
    if interval_ns <= 0:
        raise RobotDaemonError(f"the tick interval must be positive, got {interval_ms} ms")
    check_output(bag_out, [bag_in], atomic=True)
    if model_name is None:
        model_name = identity(model, "model")
    stats = ReplayStats()
    with BagReader(bag_in) as reader, replaced_on_success(bag_out) as tmp:
        _check_usable(reader, model)
        _write_preds(reader, model, tmp, stats, model_name, interval_ns, max_batch)
        if stats.accepted == 0:
            raise BagError(_no_frames(reader.path, model.d, stats))
        if reader.damaged and reader.warning:
            stats.warnings.append(reader.warning)
    return stats


def _check_usable(reader: BagReader, model: Model) -> None:
    """Refuse, before any work, a bag whose metadata says its frames cannot be replayed."""
    meta = reader.meta
    if "exported_from" in meta.extra:
        raise BagError(
            f"{reader.path} is a JSON copy written by `bag export` (of"
            f" {meta.extra['exported_from']}); replay the original bag"
        )
    if meta.d is not None and meta.d != model.d:
        raise BagError(f"{reader.path} holds frames of d={meta.d}; the model expects d={model.d}")


def _no_frames(path: Path, d: int, stats: ReplayStats) -> str:
    if stats.frames_in == 0:
        return f"{path} has no 'frame' messages to replay"
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(stats.rejected.items()))
    return (f"none of the {stats.frames_in} 'frame' messages of {path} is a valid frame"
            f" of d={d} (rejected: {rejected})")


def _write_preds(
    reader: BagReader,
    model: Model,
    out: Path,
    stats: ReplayStats,
    model_name: str,
    interval_ns: int,
    max_batch: int,
) -> None:
    """One ``pred`` message per tick with frames, into the new bag ``out``."""
    from robot_daemon.bag import BagMeta, BagWriter

    meta = BagMeta(d=model.d, c=model.c, feature_names=model.feature_names,
                   class_names=model.class_names, extra={"source": "robot_daemon.offline.replay"})
    with BagWriter(out, meta=meta) as writer:
        frames = _valid_frames(reader.messages([wire.TOPIC_FRAME.decode()]), model.d, stats)
        for batch in tick_batches(frames, interval_ns, max_batch):
            X = np.stack([f.x for f in batch.frames])
            payload = wire.encode_pred(
                batch.tick,
                batch.end_ns / 1e9,
                [f.seq for f in batch.frames],
                model.predict_proba(X).astype(np.float32),
                model_name,
                t_frame=[f.t for f in batch.frames],
                src=[f.src for f in batch.frames],
            )
            writer.write(wire.TOPIC_PRED.decode(), payload, batch.end_ns, batch.end_ns)
            stats.ticks += 1
            stats.dropped += batch.dropped
            stats.late += batch.late


def _valid_frames(
    messages: Iterable[BagMessage], d: int, stats: ReplayStats
) -> Iterator[wire.Frame]:
    """Decoded frames of width ``d``; the others counted in ``stats.rejected`` by reason."""
    for message in messages:
        stats.frames_in += 1
        try:
            frame = wire.decode_frame(message.payload, d=d)
        except WireError as exc:
            stats.rejected[exc.reason] += 1
            continue
        stats.accepted += 1
        yield frame
