"""Bags into a Parquet dataset: ``robot-daemon dataset``.

:func:`write_bag` decodes one bag on a worker and writes its ``frames`` and ``labels``
tables, one Parquet file each with the columns ``docs/fleet.md`` lists; :func:`creating`
and :func:`finish` build the directory in a hidden staging directory and put it in place
with the manifest last (:mod:`robot_daemon.fleet.manifest`), so that ``--overwrite``
replaces an old dataset only once the new one is whole. Reading a dataset back is
:mod:`robot_daemon.fleet.decode`'s.

Design: docs/architecture.md, "The Parquet dataset".
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from robot_daemon.errors import ConfigError, RobotDaemonError
from robot_daemon.fleet.cluster import Progress, Runner
from robot_daemon.fleet.decode import BagRead, read_bag
from robot_daemon.fleet.manifest import FORMAT, MANIFEST, META_KEY, TABLES, TOPICS
from robot_daemon.fleet.sources import Source
from robot_daemon.moments import Moments
from robot_daemon.paths import same_file
from robot_daemon.wire.batch import FrameBatch, LabelBatch

#: Attempts, and the pause between them, to remove a failed job's files (:func:`_discard`).
DISCARD_TRIES = 5
DISCARD_PAUSE_S = 0.2
#: Sensor times beyond this many ns (year 2262) do not fit a timestamp[ns]: null there.
_MAX_NS = 2**63 - 2**10


@dataclass
class WrittenBag:
    """What one bag became: its files and row counts, or why it was skipped."""

    source: str
    episode_index: int
    frames: int = 0
    labels: int = 0
    files: dict[str, str] = field(default_factory=dict)
    d: int | None = None
    c: int | None = None
    rate_hz: float | None = None
    """Frames per second of sensor time: (frames - 1) / (last t - first t)."""
    meta: dict[str, str] | None = None
    rejected: dict[str, int] = field(default_factory=dict)
    warning: str | None = None
    skipped: str | None = None
    failed: str | None = None
    """Why its files could not be written (a full disk): that stops the job."""
    x_moments: Moments | None = None
    """Of the frames' readings (the manifest's statistics; not in the manifest itself)."""
    positives: list[int] | None = None
    """Labels of each class set to 1 (c,)."""

    def manifest_entry(self) -> dict[str, Any]:
        """The bag in the manifest's ``bags``."""
        return {"source": self.source, "episode_index": self.episode_index,
                "frames": self.frames, "labels": self.labels, "files": self.files,
                "d": self.d, "c": self.c, "rate_hz": self.rate_hz, "meta": self.meta,
                "rejected": self.rejected, "warning": self.warning}


def file_stem(index: int, source: str) -> str:
    """``00003-run7``: the bag's part of its files' names (``frames-00003-run7.parquet``)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source).stem)[:80] or "bag"
    return f"{index:05d}-{stem}"


def write_bag(source: str, index: int, out: str) -> WrittenBag:
    """Decode the bag ``source`` and write its two tables under ``out`` (on a worker)."""
    read = read_bag(source, labels=True, frames=True, receive_times=True)
    written = WrittenBag(source, index, d=read.d, c=read.c, meta=read.meta,
                         warning=read.warning, skipped=read.skipped)
    if read.skipped is not None:
        return written
    stem = file_stem(index, source)
    tables: list[tuple[str, FrameBatch | LabelBatch, Any]] = []
    if read.frames is not None and read.frames.n:
        tables.append(("frames", read.frames, read.frame_recv_ns))
        written.frames = read.frames.n
        written.x_moments = Moments.of(read.frames.X)
        written.rate_hz = _rate_hz(read.frames.t)
    if read.labels is not None and read.labels.n:
        tables.append(("labels", read.labels, read.label_recv_ns))
        written.labels = read.labels.n
        written.positives = read.labels.Y.sum(axis=0, dtype=np.int64).tolist()
    try:
        for table, batch, recv_ns in tables:
            columns = _columns(table, batch, recv_ns, index, source, read.c or 0)
            written.files[table] = _write(Path(out) / table / f"{table}-{stem}.parquet",
                                          columns, _file_metadata(read, table, index))
    except RobotDaemonError as exc:
        # Returned, not raised: a task that raises has Dask log its traceback.
        written.failed = str(exc)
        return written
    rejected: Counter[str] = Counter()
    for decoded in (read.frames, read.labels):
        if decoded is not None:
            rejected.update(decoded.rejected)
    written.rejected = dict(rejected)
    return written


def _rate_hz(t: NDArray[np.float64]) -> float | None:
    span = float(t[-1] - t[0]) if len(t) > 1 else 0.0
    return round((len(t) - 1) / span, 6) if span > 0 else None


def write_indexed(item: tuple[str, int], out: str) -> WrittenBag:
    """:func:`write_bag` of ``(source, index)``: one task of ``robot-daemon dataset``."""
    return write_bag(item[0], item[1], out)


def write_all(
    runner: Runner, sources: Sequence[str], out: str, progress: Progress | None = None
) -> list[WrittenBag]:
    """Every bag of ``sources`` written under ``out`` (a :class:`Build`'s ``staging``) by
    the runner's tasks, in the order they finish. Run it inside :func:`creating`, which
    removes the files on a failure.

    Raises:
        RobotDaemonError: the first bag whose files could not be written (the tasks not
            yet finished are cancelled).
    """
    written: list[WrittenBag] = []
    items = [(source, i) for i, source in enumerate(sources)]
    for _, bag in runner.map_unordered(write_indexed, items, out=out):
        if bag.failed is not None:
            raise RobotDaemonError(bag.failed)
        written.append(bag)
        if progress is not None:
            progress.add(bag.frames)
    return written


def _file_metadata(read: BagRead, table: str, index: int) -> dict[bytes, bytes]:
    from robot_daemon.bag import BagMeta

    meta = BagMeta.from_record(read.meta or {})
    info = {"format": FORMAT, "table": table, "episode_index": index,
            "d": read.d, "c": read.c, "feature_names": meta.feature_names,
            "class_names": meta.class_names, "protocol_version": meta.protocol_version,
            "extra": meta.extra, "bag": read.path, "warning": read.warning}
    return {META_KEY: json.dumps(info).encode()}


def _columns(
    table: str, batch: FrameBatch | LabelBatch, recv_ns: NDArray[np.int64] | None,
    index: int, source: str, c: int,
) -> Any:
    """The Arrow table of one bag's rows of ``table`` (the module doc's columns)."""
    import pyarrow as pa

    n, d = batch.X.shape
    ns = np.rint(batch.t * 1e9)
    fits = np.abs(ns) <= _MAX_NS
    recv = np.zeros(n, np.int64) if recv_ns is None else recv_ns
    if isinstance(batch, LabelBatch):
        y = pa.FixedSizeListArray.from_arrays(pa.array(batch.Y.reshape(-1), pa.uint8()), c)
    else:
        y = pa.nulls(n, pa.list_(pa.uint8(), c))
    return pa.table({
        "episode_index": pa.array(np.full(n, index, np.int32)),
        "frame_index": pa.array(np.arange(n, dtype=np.int64)),
        "topic": _constant(TOPICS[table], n),
        "timestamp": pa.array(np.where(fits, ns, 0).astype(np.int64), pa.timestamp("ns"),
                              mask=~fits),
        "receive_time": pa.array(recv, pa.timestamp("ns", tz="UTC"),
                                 mask=np.ones(n, bool) if recv_ns is None else None),
        "seq": pa.array(batch.seq, type=pa.int64()),
        "t": pa.array(batch.t, type=pa.float64()),
        "src": pa.array(batch.src, type=pa.string()),
        "x": pa.FixedSizeListArray.from_arrays(pa.array(batch.X.reshape(-1), pa.float32()), d),
        "y": y,
        "bag": _constant(source, n),
    })


def _constant(value: str, n: int) -> Any:
    """A dictionary-encoded string column of ``n`` times ``value``."""
    import pyarrow as pa

    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)),
                                          pa.array([value]))


def _write(path: Path, table: Any, metadata: dict[bytes, bytes]) -> str:
    """Write ``table`` to ``path`` through a temporary name; return the name in the dataset.

    The table directory is made inside the build's directory, never that directory
    itself: once a failed job has removed it (:func:`creating`), a task still running on
    a worker cannot bring it back. On a failure (a full disk) the temporary file goes too.
    """
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(exist_ok=True)
        pq.write_table(table.replace_schema_metadata(metadata), tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RobotDaemonError(f"cannot write {path}: {_reason(exc)}") from None
    return f"{path.parent.name}/{path.name}"


def _reason(exc: OSError) -> str:
    """``No space left on device``: pyarrow's errors carry the errno in a longer text."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


@dataclass
class DatasetSummary:
    """What ``robot-daemon dataset`` made: the manifest's content."""

    d: int | None
    c: int | None
    feature_names: list[str] | None
    class_names: list[str] | None
    protocol_version: int
    bags: list[WrittenBag]
    skipped: list[dict[str, str]]

    @property
    def frames(self) -> int:
        return sum(b.frames for b in self.bags)

    @property
    def labels(self) -> int:
        return sum(b.labels for b in self.bags)

    def describe(self) -> str:
        lines = [f"{len(self.bags)} bag(s): {self.frames:,} frames, {self.labels:,} labelled"
                 f" frames; d={self.d}, c={self.c}"]
        lines += [f"warning: cut or damaged, complete chunks kept: {b.warning}"
                  for b in self.bags if b.warning]
        lines += [f"skipped {s['source']}: {s['reason']}" for s in self.skipped]
        return "\n".join(lines)

    def manifest(self) -> dict[str, Any]:
        """The manifest's JSON document."""
        rates = [b.rate_hz for b in self.bags if b.rate_hz is not None]
        return {
            "format": FORMAT, "d": self.d, "c": self.c, "feature_names": self.feature_names,
            "class_names": self.class_names, "protocol_version": self.protocol_version,
            "rate_hz": float(np.median(rates)) if rates else None,
            "tables": {table: {"glob": f"{table}/*.parquet", "topic": TOPICS[table],
                               "rows": self.frames if table == "frames" else self.labels}
                       for table in TABLES},
            "stats": self._stats(),
            "bags": [b.manifest_entry() for b in self.bags],
            "skipped": self.skipped,
        }

    def _stats(self) -> dict[str, Any]:
        """``x`` over the frames (count, mean, std, min, max per feature), ``y`` over the
        labels (count, positives and their share per class)."""
        x = Moments.empty()
        for bag in self.bags:
            if bag.x_moments is not None:
                x = x.merge(bag.x_moments)
        positives = [b.positives for b in self.bags if b.positives is not None]
        y: dict[str, Any] | None = None
        if positives and self.labels:
            total = np.sum(positives, axis=0, dtype=np.int64)
            y = {"count": self.labels, "positives": total.tolist(),
                 "mean": (total / self.labels).tolist()}
        return {"x": x.as_dict() if x.n else None, "y": y}


def _dataset_parts(path: Path) -> list[Path]:
    """The manifest and table directories of a dataset at ``path`` that exist."""
    return [p for p in (path / MANIFEST, *(path / t for t in TABLES)) if os.path.lexists(p)]


def check_out(out: str, overwrite: bool = False) -> None:
    """Refuse an ``--out`` that is a file, or holds a dataset (unless ``overwrite``)."""
    path = Path(out)
    if os.path.lexists(path) and not path.is_dir():
        raise ConfigError(f"--out {out} is a file; --out must be a directory")
    if _dataset_parts(path) and not overwrite:
        raise ConfigError(f"--out {out} exists; pass --overwrite to replace it")
    _check_leftovers(path)


def _check_leftovers(path: Path) -> None:
    """Refuse a DIR that holds what a killed ``dataset`` left (SIGKILL leaves no time to
    clean up): said by name, so that nothing piles up unseen, and the old dataset a
    killed ``--overwrite`` moved aside is found again, not written over."""
    if not path.is_dir():
        return
    for entry in sorted(path.iterdir()):
        if entry.name.startswith(".replaced-"):
            raise ConfigError(
                f"--out {path} holds {entry}: the dataset a `dataset --overwrite` moved aside"
                f" before it was killed. If {path / MANIFEST} is missing, move the contents"
                " of that directory back into --out; else delete it. Then run again")
        if entry.name.startswith(".building-"):
            raise ConfigError(
                f"--out {path} holds {entry}: the partial build of a `dataset` that was"
                " killed, or that runs now. Delete it once no `dataset` writes to --out,"
                " then run again")


def check_not_among_sources(out: str, sources: Sequence[Source]) -> None:
    """Refuse an ``--out`` that holds a source bag, at any depth: its manifest would make
    it a dataset, and every later walk of it would read the dataset instead of its bags
    (and ``--overwrite`` would move the bags of its table directories away)."""
    if not os.path.isdir(out):
        return
    checked: set[str] = set()
    for source in sources:
        directory = os.path.dirname(os.path.abspath(source.path))
        while directory not in checked:
            checked.add(directory)
            if same_file(directory, out):
                raise ConfigError(
                    f"--out {out} holds the source {source.path}{source.named_by()}: it would"
                    " become a dataset that hides its bags; give another --out directory")
            parent = os.path.dirname(directory)
            if parent == directory:
                break
            directory = parent


@dataclass
class Build:
    """A dataset being written: the tasks write the tables into ``staging``, a hidden
    directory inside ``out``; :func:`finish` moves them into place."""

    out: Path
    staging: Path
    made: bool
    """``out`` was made by this job (and is removed if it fails)."""
    replacing: bool
    """``out`` held a dataset (``--overwrite``): it is kept if the job fails."""

    def failed_note(self) -> str:
        if self.replacing:
            return f"the partial dataset was removed; {self.out} holds the old one as it was"
        return f"the partial dataset {self.out} was removed"


@contextlib.contextmanager
def creating(out: str, *, overwrite: bool = False) -> Iterator[Build]:
    """The build of the dataset ``out``, ready for the tasks; on any failure (a full
    disk, Ctrl-C), everything made here removed: the build's directory with what is in
    it, the manifest's temporary file, and ``out`` itself if it was made here. An old
    dataset at ``out`` (``overwrite``) is left as it was until :func:`finish` replaces it.

    Raises:
        ConfigError: ``out`` holds a dataset already and not ``overwrite``, or cannot be
            made.
        RobotDaemonError: what failed inside the block, saying the files were removed.
    """
    check_out(out, overwrite)
    path = Path(out)
    made = not os.path.lexists(path)
    replacing = bool(_dataset_parts(path))
    try:
        path.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".building-", dir=path))
    except OSError as exc:
        if made:
            shutil.rmtree(path, ignore_errors=True)
        raise ConfigError(f"cannot make the dataset directory {out}: {_reason(exc)}") from None
    build = Build(path, staging, made, replacing)
    try:
        for table in TABLES:
            (staging / table).mkdir()
        yield build
    except OSError as exc:
        _discard(build)
        raise ConfigError(f"cannot make the dataset directory {out}: {_reason(exc)}") from None
    except RobotDaemonError as exc:
        _discard(build)
        raise RobotDaemonError(f"{exc} ({build.failed_note()})") from None
    except BaseException:
        _discard(build)
        raise
    shutil.rmtree(staging, ignore_errors=True)


def _discard(build: Build) -> None:
    """Remove what :func:`creating` made. A task cancelled while it wrote may add a file
    as the build's directory is emptied: the removal is tried again a few times."""
    doomed = [build.out] if build.made else [build.staging]
    (build.out / f".{MANIFEST}.tmp").unlink(missing_ok=True)
    for _ in range(DISCARD_TRIES):
        for directory in doomed:
            shutil.rmtree(directory, ignore_errors=True)
        if not any(os.path.lexists(d) for d in doomed):
            return
        time.sleep(DISCARD_PAUSE_S)


def summarize(written: list[WrittenBag]) -> tuple[DatasetSummary, list[WrittenBag]]:
    """The bags that agree on d and c with the first (in source order), and those that do
    not (to be removed)."""
    from robot_daemon.bag import BagMeta

    kept: list[WrittenBag] = []
    dropped: list[WrittenBag] = []
    skipped: list[dict[str, str]] = []
    first: WrittenBag | None = None
    for bag in sorted(written, key=lambda w: w.episode_index):
        if bag.skipped is not None:
            skipped.append({"source": bag.source, "reason": bag.skipped})
        elif not bag.files:
            skipped.append({"source": bag.source, "reason": "no valid frame or label messages"})
        elif first is not None and (bag.d, bag.c) != (first.d, first.c):
            dropped.append(bag)
            skipped.append({"source": bag.source, "reason": f"d={bag.d}, c={bag.c}, the dataset"
                            f" has d={first.d}, c={first.c} (from {first.source})"})
        else:
            first = first or bag
            kept.append(bag)
    meta = BagMeta.from_record(first.meta or {}) if first is not None else BagMeta()
    summary = DatasetSummary(
        d=first.d if first else None, c=first.c if first else None,
        feature_names=meta.feature_names, class_names=meta.class_names,
        protocol_version=meta.protocol_version, bags=kept, skipped=skipped)
    return summary, dropped


def finish(build: Build | str, written: list[WrittenBag]) -> DatasetSummary:
    """Drop the bags whose d or c differ from the first's, then put the tables in place
    and write the manifest (:func:`_commit`). Given a directory instead of a build, the
    tables were written there in place (``write_all`` into it): only the manifest is
    written."""
    if isinstance(build, str):
        build = Build(Path(build), Path(build), made=False, replacing=False)
    summary, dropped = summarize(written)
    for bag in dropped:
        for name in bag.files.values():
            (build.staging / name).unlink(missing_ok=True)
    _commit(build, summary)
    return summary


def _commit(build: Build, summary: DatasetSummary) -> None:
    """Set an old dataset at ``out`` aside (its manifest first: from then on ``out`` is
    no dataset), move the new tables in and write the manifest, then delete the old one.
    A failure on the way puts the old dataset back (its manifest last) before it raises.
    """
    out = build.out
    if build.staging == out:  # written in place
        _write_manifest(out, summary)
        return
    old = _dataset_parts(out)
    # A hidden directory inside ``out``: on its file system, whatever mounts are around.
    aside = Path(tempfile.mkdtemp(prefix=".replaced-", dir=out)) if old else out
    moved_old: list[Path] = []
    moved_new: list[str] = []
    try:
        for part in old:  # the manifest comes first in _dataset_parts
            os.replace(part, aside / part.name)
            moved_old.append(part)
        for table in TABLES:
            os.replace(build.staging / table, out / table)
            moved_new.append(table)
        _write_manifest(out, summary)
    except BaseException as exc:
        # Also Ctrl-C or SIGTERM (Terminated) between two renames: the old dataset was
        # left hidden in ``aside`` and ``out`` held new tables without a manifest.
        for table in moved_new:
            shutil.rmtree(out / table, ignore_errors=True)
        for part in reversed(moved_old):
            os.replace(aside / part.name, part)
        if old:
            shutil.rmtree(aside, ignore_errors=True)
        if not isinstance(exc, OSError):
            raise
        raise RobotDaemonError(f"cannot put the dataset in place in {out}:"
                               f" {_reason(exc)}") from None
    if old:
        shutil.rmtree(aside, ignore_errors=True)


def _write_manifest(out: Path, summary: DatasetSummary) -> None:
    tmp = out / f".{MANIFEST}.tmp"
    try:
        tmp.write_text(json.dumps(summary.manifest(), indent=1) + "\n")
        os.replace(tmp, out / MANIFEST)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RobotDaemonError(f"cannot write {out / MANIFEST}: {_reason(exc)}") from None
