"""One partition into arrays: a bag decoded, or a dataset's labels file read.

:func:`read_bag` runs on a worker; it never raises for a bad bag. A file that is not a
bag (or cannot be read) comes back as a :class:`BagRead` with ``skipped`` set, a cut or
damaged bag with the messages of its complete chunks and ``warning`` set, so that one bad
file of a fleet's archive is reported, not fatal to the job.

Bags are read fast (:func:`~robot_daemon.bag.payloads.read_payloads`); ``dataset`` also
keeps each row's receive time (the MCAP message's ``log_time``), which that reader gives
when asked. A dataset's labels file (:func:`read_labels`) gives the same arrays as the
bag it was written from.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from robot_daemon import wire
from robot_daemon.errors import BagError, WireError
from robot_daemon.fleet.manifest import META_KEY
from robot_daemon.fleet.sources import Source
from robot_daemon.wire.batch import FrameBatch, LabelBatch, decode_frames, decode_labels

FRAME, LABEL = wire.TOPIC_FRAME.decode(), wire.TOPIC_LABEL.decode()


@dataclass(eq=False)
class BagRead:
    """What one bag gave; ``skipped`` says why it gave nothing (not a bag, unreadable).

    ``meta`` is the bag's metadata as a :class:`~robot_daemon.bag.BagMeta` record dict
    (``None`` when skipped), ``d``/``c`` the sizes in force after decoding.
    ``label_recv_ns`` and ``frame_recv_ns``, (n,) int64, are the receive times of the
    decoded rows (integer ns since the Unix epoch), when they were asked for.
    """

    path: str
    labels: LabelBatch | None = None
    frames: FrameBatch | None = None
    meta: dict[str, str] | None = None
    d: int | None = None
    c: int | None = None
    warning: str | None = None
    skipped: str | None = None
    label_recv_ns: NDArray[np.int64] | None = None
    frame_recv_ns: NDArray[np.int64] | None = None

    @property
    def rows(self) -> int:
        """Rows decoded (labelled frames, or frames when only frames were read)."""
        if self.labels is not None:
            return self.labels.n
        return 0 if self.frames is None else self.frames.n


def read_bag(
    path: str, *, labels: bool = True, frames: bool = False,
    d: int | None = None, c: int | None = None, receive_times: bool = False,
) -> BagRead:
    """Decode the ``label`` (and ``frame``) messages of the bag at ``path``.

    ``d`` and ``c``: the sizes the caller expects (a model's); ``None`` takes the bag's
    metadata, or else the first valid message (as ``read_labelled`` does).
    ``receive_times``: also give each decoded row's receive time (slower, module doc).
    """
    topics = [t for t, wanted in ((FRAME, frames), (LABEL, labels)) if wanted]
    from robot_daemon.bag.payloads import read_payloads  # the optional mcap package

    try:
        payloads = read_payloads(path, topics, log_times=receive_times)
    except BagError as exc:
        return BagRead(path, skipped=str(exc))
    by_topic, recv, meta = payloads.by_topic, payloads.log_ns, payloads.meta
    d = d if d is not None else meta.d
    c = c if c is not None else meta.c
    label_payloads = by_topic.get(LABEL, [])
    frame_payloads = by_topic.get(FRAME, [])
    read = BagRead(path, meta=meta.to_record(), warning=payloads.warning)
    if labels:
        read.labels, d, c = decode_labels(label_payloads, d, c)
    if frames:
        read.frames, d = decode_frames(frame_payloads, d)
    read.d, read.c = d, c
    if recv is not None:
        if read.labels is not None:
            read.label_recv_ns = _kept(recv[LABEL], label_payloads, read.labels.n,
                                       lambda p: wire.decode_label(p, d=d, c=c))
        if read.frames is not None:
            read.frame_recv_ns = _kept(recv[FRAME], frame_payloads, read.frames.n,
                                       lambda p: wire.decode_frame(p, d=d))
    return read


def _kept(
    recv_ns: list[int], payloads: list[bytes], n: int, decode: Callable[[bytes], object]
) -> NDArray[np.int64]:
    """The receive times of the ``n`` payloads the batch decoder kept, in order.

    Usually every payload was kept; otherwise each is decoded again on its own with the
    d and c in force at the end, which accepts exactly the payloads the batch accepted
    (the first valid one fixed them, and an earlier one was invalid with any d and c).
    """
    times = np.asarray(recv_ns, dtype=np.int64)
    if n == len(payloads):
        return times
    keep = np.zeros(len(payloads), dtype=bool)
    for i, payload in enumerate(payloads):
        try:
            decode(payload)
        except WireError:
            continue
        keep[i] = True
    return times[keep]


def load_labels(part: Source, d: int | None = None, c: int | None = None) -> BagRead:
    """A partition's labelled frames: a bag decoded, or a dataset's Parquet file read."""
    if part.kind == "parquet":
        return read_labels(part.path)
    return read_bag(part.path, labels=True, d=d, c=c)


def names_of(
    parts: Sequence[Source], d: int | None, c: int | None
) -> tuple[list[str], list[str]]:
    """Feature and class names of the first partition that has them (a bag's metadata or
    a dataset file's), else ``feature_0 ...`` and ``class_0 ...`` as ``read_labelled``
    names them."""
    from robot_daemon.bag import BagMeta, BagReader

    for part in parts:
        try:
            if part.kind == "parquet":
                info = file_info(part.path)
                meta = BagMeta(feature_names=info.get("feature_names"),
                               class_names=info.get("class_names"))
            else:
                with BagReader(part.path) as reader:
                    meta = reader.meta
        except (BagError, OSError, ValueError, TypeError, KeyError):
            continue
        if meta.feature_names or meta.class_names:
            return (_names(meta.feature_names, d, "feature"), _names(meta.class_names, c, "class"))
    return _names(None, d, "feature"), _names(None, c, "class")


def _names(names: list[str] | None, count: int | None, kind: str) -> list[str]:
    if names is not None and len(names) == count:
        return list(names)
    return [f"{kind}_{i}" for i in range(count or 0)]


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
