"""``bag export --json``: a JSON-encoded copy of a bag that Foxglove can plot.

Foxglove cannot display msgpack, so the copy has one ``json`` channel per topic with a
JSON schema (:mod:`.schemas`) naming every field, the same times and metadata; payloads
that do not decode are counted and left out. What another tool wrote (other encodings,
attachments, other metadata) is copied unchanged.

Design: docs/architecture.md, "Exporting bags for Foxglove".
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
from typing import Any, Final

from mcap.records import Channel, Message, Metadata, Schema

from robot_daemon import wire
from robot_daemon.bag import BagMessage, BagMeta, BagReader, BagWriter, schemas
from robot_daemon.bag.format import MESSAGE_ENCODING, META_RECORD
from robot_daemon.bag.reader import AttachmentInfo, human_size, to_bag_message
from robot_daemon.errors import WireError
from robot_daemon.paths import check_output, replaced_on_success
from robot_daemon.printable import printable

log = logging.getLogger(__name__)

#: The largest attachment ``bag export`` copies (it holds one in memory while copying).
MAX_ATTACHMENT_BYTES: Final = 64 << 20

Converter = Callable[[bytes, BagMeta], dict[str, Any]]


@dataclass
class ExportSummary:
    """What ``bag export`` wrote and what it left out.

    ``counts``: messages written as JSON, per topic; ``copied``: messages copied
    unchanged, per (topic, message encoding); ``skipped``: msgpack payloads that do not
    decode, per topic; ``no_schema``: messages left out because their channel's schema is
    missing, per topic; ``attachments`` and ``metadata``: names copied;
    ``attachments_left_out``: (name, size in bytes) of those over ``max_attachment_bytes``.
    """

    src: str
    dst: str
    max_attachment_bytes: int = MAX_ATTACHMENT_BYTES
    counts: Counter[str] = field(default_factory=Counter)
    copied: Counter[tuple[str, str]] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    no_schema: Counter[str] = field(default_factory=Counter)
    attachments: list[str] = field(default_factory=list)
    attachments_left_out: list[tuple[str, int]] = field(default_factory=list)
    metadata: list[str] = field(default_factory=list)
    warning: str | None = None

    def describe(self) -> str:
        total = sum(self.counts.values())
        lines = [f"exported {total} messages from {self.src} to {self.dst} (JSON, Foxglove)"]
        for (topic, encoding), n in sorted(self.copied.items()):
            lines.append(f"copied {n} {topic} messages unchanged (message encoding {encoding!r})")
        for name in self.attachments:
            lines.append(f"copied attachment {name}")
        for name in self.metadata:
            lines.append(f"copied metadata record {name}")
        for topic, n in sorted(self.skipped.items()):
            lines.append(f"left out {n} {topic} payloads that do not decode as protocol v1")
        for topic, n in sorted(self.no_schema.items()):
            lines.append(f"left out {n} {topic} messages: their channel's schema is not in the"
                         " bag, so they cannot be copied as valid MCAP")
        for name, size in self.attachments_left_out:
            lines.append(f"left out attachment {name} ({human_size(size)}): over the limit of"
                         f" {human_size(self.max_attachment_bytes)} per attachment")
        if self.warning:
            lines.append(f"warning: {self.warning}")
        # Each line escaped on its own: an attachment named with a newline forged a line.
        return "\n".join(map(printable, lines))


def export_json(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    max_attachment_bytes: int = MAX_ATTACHMENT_BYTES,
) -> ExportSummary:
    """Write ``dst``, a JSON-encoded copy of the bag ``src`` (complete messages only),
    with its other channels, attachments and metadata records as they are (module doc).

    Raises:
        ConfigError: ``dst`` is ``src`` (also through a link) or cannot be written.
        BagError: ``src`` is not a readable bag.
    """
    summary = ExportSummary(src=str(src), dst=str(dst), max_attachment_bytes=max_attachment_bytes)
    # Before the reader: dst must not be src, and must be writable.
    check_output(dst, [src])
    with BagReader(src) as bag:
        meta = bag.meta
        out_meta = replace(meta, extra={**meta.extra, "exported_from": os.fspath(src)})
        # Written beside and renamed: a stopped or failed export leaves no bag that reads
        # as complete with part of the messages, and an existing ``dst`` as it was.
        with replaced_on_success(dst) as tmp, BagWriter(tmp, meta=out_meta) as out:
            copy = _Copy(bag, out, meta, summary)
            for record in bag.records():
                copy.add(record)
        summary.warning = bag.warning
    return summary


class _Copy:
    """One export: the source's schemas and channels as met, and the output channels of
    those copied unchanged."""

    def __init__(self, bag: BagReader, out: BagWriter, meta: BagMeta, summary: ExportSummary):
        self.bag = bag
        self.out = out
        self.meta = meta
        self.summary = summary
        self.schemas: dict[int, Schema] = {}
        self.channels: dict[int, Channel] = {}
        self.out_schemas: dict[int, int] = {}  # source schema id -> output schema id
        self.out_channels: dict[int, int] = {}  # source channel id -> output channel id

    def add(self, record: object) -> None:
        if isinstance(record, Schema):
            self.schemas.setdefault(record.id, record)
        elif isinstance(record, Channel):
            # The summary section repeats the channels: the first declaration counts.
            if self.channels.setdefault(record.id, record) is record:
                self._declare(record)
        elif isinstance(record, Message):
            self._message(record)
        elif isinstance(record, AttachmentInfo):
            self._attachment(record)
        elif isinstance(record, Metadata) and record.name != META_RECORD:
            self.out.add_metadata(record.name, record.metadata)
            self.summary.metadata.append(record.name)

    def _declare(self, channel: Channel) -> None:
        """Declare a channel of another encoding in the output, as it is."""
        if channel.message_encoding == MESSAGE_ENCODING:
            return  # ours: a JSON channel is declared with its first converted message
        if channel.schema_id != 0:
            schema = self.schemas.get(channel.schema_id)
            if schema is None:
                return  # its messages are counted in no_schema
            if schema.id not in self.out_schemas:
                self.out_schemas[schema.id] = self.out.add_schema(
                    schema.name, schema.encoding, schema.data)
        out_schema = self.out_schemas.get(channel.schema_id, 0)
        self.out_channels[channel.id] = self.out.add_channel(
            channel.topic, channel.message_encoding, out_schema, channel.metadata)

    def _message(self, message: Message) -> None:
        channel = self.channels[message.channel_id]  # BagReader.records() checked it
        if channel.message_encoding == MESSAGE_ENCODING:
            _export_one(to_bag_message(channel, message), self.meta, self.out, self.summary)
            return
        out_channel = self.out_channels.get(channel.id)
        if out_channel is None:
            self.summary.no_schema[channel.topic] += 1
            return
        self.out.write_raw(out_channel, message.data, log_time=message.log_time,
                           publish_time=message.publish_time, sequence=message.sequence)
        self.summary.copied[channel.topic, channel.message_encoding] += 1

    def _attachment(self, attachment: AttachmentInfo) -> None:
        if attachment.size_bytes > self.summary.max_attachment_bytes:
            self.summary.attachments_left_out.append((attachment.name, attachment.size_bytes))
            return
        data = self.bag.read_attachment(attachment, self.summary.max_attachment_bytes)
        self.out.add_attachment(attachment.name, attachment.media_type, data,
                                log_time=attachment.log_time,
                                create_time=attachment.create_time)
        self.summary.attachments.append(attachment.name)


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
    wire.TOPIC_SHADOW.decode(): _pred,
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
