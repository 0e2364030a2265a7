"""Bags into a Parquet dataset (``robot-daemon dataset``), and its partitions back into arrays.

The dataset directory::

    DIR/dataset.json                      the manifest: d, c, names, every bag and file
    DIR/frames/00000-run1.parquet         the frames of the first bag
    DIR/labels/00000-run1.parquet         its labelled frames
    DIR/frames/00001-run2.parquet ...

One file per bag and table, numbered in the order of the sources. Columns: ``seq``
int64, ``t`` float64 (sensor seconds), ``src`` string, ``x`` the d readings
(fixed-size list of float32), ``y`` (labels only) the c labels (fixed-size list of
uint8), ``bag`` string (the bag the row came from, as given). Each file's Parquet schema
metadata holds, under the key ``robot_daemon``, the JSON of its bag's metadata (d, c,
feature and class names, protocol version, extra) and the bag's damage warning, if any.
pyarrow (``pyarrow.dataset.dataset("DIR/labels")``), pandas, polars and DuckDB read the
two tables as they are.

A cut bag contributes the messages of its complete chunks and is reported; a file that
is not a bag, or whose d or c differ from the dataset's (the first bag's), is reported
and skipped. The manifest is written last, atomically: a directory without it is not a
finished dataset.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_daemon.errors import ConfigError, RobotDaemonError
from robot_daemon.fleet.cluster import Progress, Runner
from robot_daemon.fleet.decode import BagRead, read_bag
from robot_daemon.fleet.sources import MANIFEST, Source
from robot_daemon.paths import same_file
from robot_daemon.wire.batch import FrameBatch, LabelBatch

FORMAT = "robot_daemon.dataset/1"
META_KEY = b"robot_daemon"
TABLES = ("frames", "labels")
#: Attempts, and the pause between them, to remove a failed job's files (:func:`_discard`).
DISCARD_TRIES = 5
DISCARD_PAUSE_S = 0.2


@dataclass
class WrittenBag:
    """What one bag became: its files and row counts, or why it was skipped."""

    source: str
    index: int
    frames: int = 0
    labels: int = 0
    files: dict[str, str] = field(default_factory=dict)
    d: int | None = None
    c: int | None = None
    meta: dict[str, str] | None = None
    rejected: dict[str, int] = field(default_factory=dict)
    warning: str | None = None
    skipped: str | None = None
    failed: str | None = None
    """Why its files could not be written (a full disk): that stops the job."""


def file_stem(index: int, source: str) -> str:
    """``00003-run7``: the file name (without .parquet) of the bag ``source``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source).stem)[:80] or "bag"
    return f"{index:05d}-{stem}"


def write_bag(source: str, index: int, out: str) -> WrittenBag:
    """Decode the bag ``source`` and write its two tables under ``out`` (on a worker)."""
    read = read_bag(source, labels=True, frames=True)
    written = WrittenBag(source, index, d=read.d, c=read.c, meta=read.meta,
                         warning=read.warning, skipped=read.skipped)
    if read.skipped is not None:
        return written
    metadata = _file_metadata(read)
    stem = file_stem(index, source)
    try:
        if read.frames is not None and read.frames.n:
            written.files["frames"] = _write(Path(out) / "frames" / f"{stem}.parquet",
                                             _frames_table(read.frames, source), metadata)
            written.frames = read.frames.n
        if read.labels is not None and read.labels.n:
            written.files["labels"] = _write(Path(out) / "labels" / f"{stem}.parquet",
                                             _labels_table(read.labels, source), metadata)
            written.labels = read.labels.n
    except RobotDaemonError as exc:
        # Returned, not raised: a task that raises has Dask log its traceback.
        written.failed = str(exc)
        return written
    rejected: Counter[str] = Counter()
    for batch in (read.frames, read.labels):
        if batch is not None:
            rejected.update(batch.rejected)
    written.rejected = dict(rejected)
    return written


def write_indexed(item: tuple[str, int], out: str) -> WrittenBag:
    """:func:`write_bag` of ``(source, index)``: one task of ``robot-daemon dataset``."""
    return write_bag(item[0], item[1], out)


def write_all(
    runner: Runner, sources: Sequence[str], out: str, progress: Progress | None = None
) -> list[WrittenBag]:
    """Every bag of ``sources`` written under ``out`` by the runner's tasks, in the order
    they finish. Run it inside :func:`creating`, which removes the files on a failure.

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


def _file_metadata(read: BagRead) -> dict[bytes, bytes]:
    from robot_daemon.bag import BagMeta

    meta = BagMeta.from_record(read.meta or {})
    info = {"d": read.d, "c": read.c, "feature_names": meta.feature_names,
            "class_names": meta.class_names, "protocol_version": meta.protocol_version,
            "extra": meta.extra, "bag": read.path, "warning": read.warning}
    return {META_KEY: json.dumps(info).encode()}


def _columns(seq: Any, t: Any, src: list[str | None], X: Any, source: str) -> dict[str, Any]:
    import pyarrow as pa

    n, d = X.shape
    return {
        "seq": pa.array(seq, type=pa.int64()),
        "t": pa.array(t, type=pa.float64()),
        "src": pa.array(src, type=pa.string()),
        "x": pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1), pa.float32()), d),
        "bag": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)),
                                              pa.array([source])),
    }


def _frames_table(frames: FrameBatch, source: str) -> Any:
    import pyarrow as pa

    return pa.table(_columns(frames.seq, frames.t, frames.src, frames.X, source))


def _labels_table(labels: LabelBatch, source: str) -> Any:
    import pyarrow as pa

    columns = _columns(labels.seq, labels.t, labels.src, labels.X, source)
    c = labels.Y.shape[1]
    columns["y"] = pa.FixedSizeListArray.from_arrays(
        pa.array(labels.Y.reshape(-1), pa.uint8()), c)
    order = ["seq", "t", "src", "x", "y", "bag"]
    return pa.table({k: columns[k] for k in order})


def _write(path: Path, table: Any, metadata: dict[bytes, bytes]) -> str:
    """Write ``table`` to ``path`` through a temporary name; return the name in the dataset.

    The table directory is made inside the dataset directory, never the dataset directory
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


def check_out(out: str) -> None:
    """Refuse an ``--out`` that already holds a dataset or its tables."""
    path = Path(out)
    taken = [p.name for p in (path / MANIFEST, *(path / t for t in TABLES))
             if os.path.lexists(p)]
    if taken:
        raise ConfigError(f"{out} already holds {', '.join(taken)}; give a new --out directory")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{out} is a file; --out must be a directory")


def check_not_among_sources(out: str, sources: Sequence[Source]) -> None:
    """Refuse an ``--out`` that holds a source bag: its manifest would make it a dataset,
    and every later walk of it would read the dataset instead of its bags."""
    seen: set[str] = set()
    for source in sources:
        directory = os.path.dirname(source.path) or os.curdir
        if directory not in seen and same_file(directory, out):
            raise ConfigError(f"--out {out} holds the source {source.path}{source.named_by()}:"
                              " it would become a dataset that hides its bags; give another"
                              " --out directory")
        seen.add(directory)


@contextlib.contextmanager
def creating(out: str) -> Iterator[Path]:
    """The dataset directory ``out`` made ready for the tasks; on any failure (a full
    disk, Ctrl-C), everything made here removed: the table directories with what is in
    them, the manifest's temporary file, and ``out`` itself if it was made here.

    Raises:
        ConfigError: ``out`` holds a dataset already, or cannot be made.
        RobotDaemonError: what failed inside the block, saying the files were removed.
    """
    check_out(out)
    path = Path(out)
    made = not os.path.lexists(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        for table in TABLES:
            (path / table).mkdir()
    except OSError as exc:
        _discard(path, made)
        raise ConfigError(f"cannot make the dataset directory {out}: {_reason(exc)}") from None
    try:
        yield path
    except RobotDaemonError as exc:
        _discard(path, made)
        raise RobotDaemonError(f"{exc} (the partial dataset {out} was removed)") from None
    except BaseException:
        _discard(path, made)
        raise


def _discard(path: Path, made: bool) -> None:
    """Remove what :func:`creating` made. A task cancelled while it wrote may add a file
    as the table directory is emptied: the removal is tried again a few times."""
    doomed = [path] if made else [path / t for t in TABLES]
    (path / f".{MANIFEST}.tmp").unlink(missing_ok=True)
    for _ in range(DISCARD_TRIES):
        for directory in doomed:
            shutil.rmtree(directory, ignore_errors=True)
        if not any(os.path.lexists(d) for d in doomed):
            return
        time.sleep(DISCARD_PAUSE_S)


def finish(out: str, written: list[WrittenBag]) -> DatasetSummary:
    """Check the bags agree on d and c, drop those that do not, write the manifest."""
    from robot_daemon.bag import BagMeta

    ordered = sorted(written, key=lambda w: w.index)
    kept: list[WrittenBag] = []
    skipped: list[dict[str, str]] = []
    first: WrittenBag | None = None
    for bag in ordered:
        if bag.skipped is not None:
            skipped.append({"source": bag.source, "reason": bag.skipped})
        elif not bag.files:
            skipped.append({"source": bag.source, "reason": "no valid frame or label messages"})
        elif first is not None and (bag.d, bag.c) != (first.d, first.c):
            _remove(out, bag)
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
    _write_manifest(Path(out), summary)
    return summary


def _remove(out: str, bag: WrittenBag) -> None:
    for name in bag.files.values():
        (Path(out) / name).unlink(missing_ok=True)


def _write_manifest(out: Path, summary: DatasetSummary) -> None:
    doc = {"format": FORMAT, **asdict(summary)}
    tmp = out / f".{MANIFEST}.tmp"
    try:
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        os.replace(tmp, out / MANIFEST)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RobotDaemonError(f"cannot write {out / MANIFEST}: {_reason(exc)}") from None


def read_manifest(directory: str) -> dict[str, Any]:
    """The manifest of the dataset ``directory``; ConfigError if it is not one of ours."""
    path = Path(directory) / MANIFEST
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{directory} is not a readable dataset ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a {FORMAT} manifest; write datasets with"
                          " `robot-daemon dataset`")
    return doc


def files(directory: str, table: str) -> list[str]:
    """The Parquet files of ``table`` ("frames" or "labels") of a dataset, in bag order."""
    doc = read_manifest(directory)
    try:
        names = [b["files"][table] for b in doc["bags"] if table in b["files"]]
        ours = all(isinstance(n, str) for n in names)
    except (KeyError, TypeError):  # a list or a string where a map belongs
        ours = False
    if not ours:
        raise ConfigError(f"{Path(directory) / MANIFEST} does not list its files as"
                          " `robot-daemon dataset` writes them; write the dataset again")
    return [str(Path(directory) / n) for n in names]


def read_labels(path: str) -> BagRead:
    """One labels file of a dataset as :class:`BagRead` (the same arrays as the bag gave).

    A file of another schema (the module doc's), or with missing values, comes back
    skipped; rows the wire decoder would refuse (a reading that is not finite, a label
    other than 0 or 1, a negative ``seq``) are left out and counted in ``rejected``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        problem = _schema_problem(pq.read_schema(path))
        if problem is not None:
            return BagRead(path, skipped=f"not a labels file of a robot-daemon dataset"
                           f" ({problem})")
        table = pq.read_table(path, columns=["seq", "t", "x", "y"])
    except (OSError, ValueError, pa.ArrowException) as exc:  # pyarrow's errors
        return BagRead(path, skipped=f"cannot read {path}: {exc}")
    x = table.column("x").combine_chunks()
    y = table.column("y").combine_chunks()
    X_flat, Y_flat = x.flatten(), y.flatten()
    columns = {name: table.column(name) for name in table.column_names}
    columns.update({"x values": X_flat, "y values": Y_flat})
    empty = [name for name, column in columns.items() if column.null_count]
    if empty:
        return BagRead(path, skipped=f"missing values in {', '.join(empty)}")
    n, d, c = table.num_rows, x.type.list_size, y.type.list_size
    labels = LabelBatch(
        seq=table.column("seq").to_numpy(),
        t=table.column("t").to_numpy(),
        X=X_flat.to_numpy(zero_copy_only=False).reshape(n, d),
        Y=Y_flat.to_numpy(zero_copy_only=False).reshape(n, c),
        src=[],  # not needed by the jobs that read datasets
    )
    return BagRead(path, labels=_valid_rows(labels), d=d, c=c)


def _schema_problem(schema: Any) -> str | None:
    """What keeps ``schema`` from being that of a labels file (module doc), or ``None``."""
    import pyarrow as pa

    columns = {"seq": pa.int64(), "t": pa.float64(), "x": pa.float32(), "y": pa.uint8()}
    for name, wanted in columns.items():
        if schema.get_field_index(name) < 0:  # -1 also for a name given twice
            return f"no column {name}, or more than one"
        got = schema.field(name).type
        if name in ("x", "y"):
            if not (pa.types.is_fixed_size_list(got) and got.value_type == wanted
                    and got.list_size > 0):
                return f"column {name} is {got}, not a fixed-size list of {wanted}"
        elif got != wanted:
            return f"column {name} is {got}, not {wanted}"
    return None


def _valid_rows(labels: LabelBatch) -> LabelBatch:
    """The rows ``decode_label`` would accept; the others counted by its reasons."""
    reasons = {
        "negative_seq": labels.seq < 0,
        "non_finite": ~np.isfinite(labels.t) | ~np.isfinite(labels.X).all(axis=1),
        "bad_label_value": (labels.Y > 1).any(axis=1),
    }
    bad = np.zeros(len(labels.seq), dtype=bool)
    for reason, rows in reasons.items():
        new = rows & ~bad  # each row counted once, under its first reason
        if new.any():
            labels.rejected[reason] += int(new.sum())
        bad |= new
    if not bad.any():
        return labels
    keep = ~bad
    return LabelBatch(seq=labels.seq[keep], t=labels.t[keep], X=labels.X[keep],
                      Y=labels.Y[keep], src=[], rejected=labels.rejected)


def file_info(path: str) -> dict[str, Any]:
    """The bag metadata a dataset file carries in its schema metadata (module doc).

    Raises:
        ValueError: the file cannot be read, or carries no such metadata.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
    except pa.ArrowException as exc:  # pyarrow's errors that are not OSError/ValueError
        raise ValueError(f"{path}: {exc}") from None
    info = json.loads(metadata[META_KEY])
    if not isinstance(info, dict):
        raise ValueError(f"{path}: its {META_KEY!r} schema metadata is not a JSON object")
    return info


def dataset_meta(directory: str) -> dict[str, Any]:
    """d, c and the names a dataset's manifest records."""
    doc = read_manifest(directory)
    if doc.get("d") is None:
        raise RobotDaemonError(f"the dataset {directory} holds no bag")
    return {k: doc.get(k) for k in ("d", "c", "feature_names", "class_names")}
