"""``bag export --json``: a JSON-encoded copy of a bag that Foxglove can plot.

msgpack is a registered MCAP message encoding, but Foxglove cannot display it. The copy
has one channel per topic with ``message_encoding`` ``"json"`` and a JSON schema
(``jsonschema``), the same log and publish times, and the same metadata. Payloads are
decoded with :mod:`robot_daemon.wire`: binary arrays become JSON arrays of numbers, and
when the bag knows feature or class names the values also appear by name
(``frame.features.range_center_m`` plots better than ``frame.x[1]``); the JSON schemas
(:mod:`.schemas`) name every field, so Foxglove offers them. Payloads that do not decode
are counted and left out: the copy is for looking at, the bag stays the record.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from robot_daemon import wire
from robot_daemon.bag import BagMessage, BagMeta, BagReader, BagWriter, schemas
from robot_daemon.errors import WireError
from robot_daemon.paths import check_output

log = logging.getLogger(__name__)

Converter = Callable[[bytes, BagMeta], dict[str, Any]]


@dataclass
class ExportSummary:
    """What ``bag export`` wrote and what it left out."""

    src: str
    dst: str
    counts: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    warning: str | None = None

    def describe(self) -> str:
        total = sum(self.counts.values())
        lines = [f"exported {total} messages from {self.src} to {self.dst} (JSON, Foxglove)"]
        for topic, n in sorted(self.skipped.items()):
            lines.append(f"left out {n} {topic} payloads that do not decode as protocol v1")
        if self.warning:
            lines.append(f"warning: {self.warning}")
        return "\n".join(lines)


def export_json(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> ExportSummary:
    """Write ``dst``, a JSON-encoded copy of the bag ``src`` (complete messages only).

    Raises:
        ConfigError: ``dst`` is ``src`` (also through a link) or cannot be written.
        BagError: ``src`` is not a readable bag.
    """
    summary = ExportSummary(src=str(src), dst=str(dst))
    # Before the reader: opening the writer truncates dst, which must not be src.
    check_output(dst, [src])
    with BagReader(src) as bag:
        meta = bag.meta
        out_meta = replace(meta, extra={**meta.extra, "exported_from": os.fspath(src)})
        with BagWriter(dst, meta=out_meta) as out:
            for message in bag.messages():
                _export_one(message, meta, out, summary)
        summary.warning = bag.warning
    return summary


def _export_one(message: BagMessage, meta: BagMeta, out: BagWriter, summary: ExportSummary) -> None:
    convert = _CONVERTERS.get(message.topic, _generic)
    try:
        obj = convert(message.payload, meta)
    except WireError as exc:
        summary.skipped[message.topic] += 1
        log.debug("left out a %s payload: %s", message.topic, exc)
        return
    if summary.counts[message.topic] == 0 and summary.skipped[message.topic] == 0:
        schema = schemas.schema(message.topic, meta)
        out.add_topic(
            message.topic,
            message_encoding="json",
            schema_name=str(schema["title"]),
            schema_encoding="jsonschema",
            schema=json.dumps(schema).encode(),
        )
    data = json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()
    out.write(message.topic, data, message.recv_ns, message.sensor_ns)
    summary.counts[message.topic] += 1


def _frame(payload: bytes, meta: BagMeta) -> dict[str, Any]:
    frame = wire.decode_frame(payload, meta.d)
    return _reading(frame.seq, frame.t, frame.x.tolist(), frame.src, meta)


def _label(payload: bytes, meta: BagMeta) -> dict[str, Any]:
    label = wire.decode_label(payload, meta.d, meta.c)
    obj = _reading(label.seq, label.t, label.x.tolist(), label.src, meta)
    obj["y"] = label.y.tolist()
    if meta.class_names is not None and len(meta.class_names) == len(obj["y"]):
        obj["classes"] = dict(zip(meta.class_names, obj["y"], strict=True))
    return obj


def _reading(seq: int, t: float, x: list[float], src: str | None, meta: BagMeta) -> dict[str, Any]:
    """The JSON of a frame (and of a label's frame part)."""
    obj: dict[str, Any] = {"seq": seq, "t": t, "x": x}
    if src is not None:
        obj["src"] = src
    if meta.feature_names is not None and len(meta.feature_names) == len(x):
        obj["features"] = dict(zip(meta.feature_names, x, strict=True))
    return obj


def _pred(payload: bytes, meta: BagMeta) -> dict[str, Any]:
    pred = wire.decode_pred(payload)
    n, c = pred.p.shape
    obj: dict[str, Any] = {
        **{k: _jsonable(v) for k, v in pred.extra.items()},
        "tick": pred.tick,
        "t": pred.t,
        "seq": pred.seq.tolist(),
        "p": pred.p.tolist(),
        "n": n,
        "c": c,
        "model": pred.model,
    }
    if meta.class_names is not None and len(meta.class_names) == c:
        obj["classes"] = [dict(zip(meta.class_names, row, strict=True)) for row in obj["p"]]
    return obj


def _generic(payload: bytes, meta: BagMeta) -> dict[str, Any]:
    # decode_status checks only the shape (a map with string keys, within limits).
    return {k: _jsonable(v) for k, v in wire.decode_status(payload).items()}


_CONVERTERS: dict[str, Converter] = {
    wire.TOPIC_FRAME.decode(): _frame,
    wire.TOPIC_LABEL.decode(): _label,
    wire.TOPIC_PRED.decode(): _pred,
}


def _jsonable(value: Any) -> Any:
    """msgpack values to JSON: bytes as base64, NaN/inf as null, map keys as strings."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
