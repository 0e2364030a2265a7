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

import json
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_daemon.errors import ConfigError, RobotDaemonError
from robot_daemon.fleet.decode import BagRead, read_bag
from robot_daemon.fleet.sources import MANIFEST
from robot_daemon.wire.batch import FrameBatch, LabelBatch

FORMAT = "robot_daemon.dataset/1"
META_KEY = b"robot_daemon"
TABLES = ("frames", "labels")


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
    if read.frames is not None and read.frames.n:
        written.files["frames"] = _write(Path(out) / "frames" / f"{stem}.parquet",
                                         _frames_table(read.frames, source), metadata)
        written.frames = read.frames.n
    if read.labels is not None and read.labels.n:
        written.files["labels"] = _write(Path(out) / "labels" / f"{stem}.parquet",
                                         _labels_table(read.labels, source), metadata)
        written.labels = read.labels.n
    rejected: Counter[str] = Counter()
    for batch in (read.frames, read.labels):
        if batch is not None:
            rejected.update(batch.rejected)
    written.rejected = dict(rejected)
    return written


def write_indexed(item: tuple[str, int], out: str) -> WrittenBag:
    """:func:`write_bag` of ``(source, index)``: one task of ``robot-daemon dataset``."""
    return write_bag(item[0], item[1], out)


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
    """Write ``table`` to ``path`` through a temporary name; return the name in the dataset."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table.replace_schema_metadata(metadata), tmp)
    os.replace(tmp, path)
    return f"{path.parent.name}/{path.name}"


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
    taken = [p.name for p in (path / MANIFEST, *(path / t for t in TABLES)) if p.exists()]
    if taken:
        raise ConfigError(f"{out} already holds {', '.join(taken)}; give a new --out directory")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{out} is a file; --out must be a directory")


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
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, out / MANIFEST)


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
    return [str(Path(directory) / b["files"][table]) for b in doc["bags"]
            if table in b["files"]]


def read_labels(path: str) -> BagRead:
    """One labels file of a dataset as :class:`BagRead` (the same arrays as the bag gave)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["seq", "t", "src", "x", "y"])
    except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
        return BagRead(path, skipped=f"cannot read {path}: {exc}")
    n = table.num_rows
    x, y = table.column("x").combine_chunks(), table.column("y").combine_chunks()
    d, c = x.type.list_size, y.type.list_size
    labels = LabelBatch(
        seq=table.column("seq").to_numpy(),
        t=table.column("t").to_numpy(),
        X=x.values.to_numpy().reshape(n, d),
        Y=y.values.to_numpy().reshape(n, c),
        src=[],  # not needed by the jobs that read datasets
    )
    return BagRead(path, labels=labels, d=d, c=c)


def file_info(path: str) -> dict[str, Any]:
    """The bag metadata a dataset file carries in its schema metadata (module doc)."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
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
