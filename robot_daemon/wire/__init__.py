"""Wire protocol v1: the msgpack payloads that cross ZeroMQ (see ``docs/protocol.md``).

Every message is a two-part ZeroMQ message ``[topic, payload]``, the payload a msgpack
map built by the ``encode_*`` functions (:mod:`.encode`) and checked by the ``decode_*``
functions (:mod:`.decode`); :mod:`.messages` holds the types, limits and reasons,
:mod:`.checks` the field checks both share. Decoding is strict, because payloads come from
other processes and machines: every rejection is a :class:`~robot_daemon.errors.WireError`
with a short ``reason``, and decoded arrays are read-only copies.

Design: docs/architecture.md, "The wire protocol".
"""

from __future__ import annotations

from robot_daemon.wire.decode import (
    decode_frame,
    decode_frame_raw,
    decode_label,
    decode_pred,
    decode_status,
    sensor_time,
)
from robot_daemon.wire.encode import (
    PredRows,
    encode_frame,
    encode_label,
    encode_pred,
    encode_pred_rows,
    encode_status,
    pred_rows,
)
from robot_daemon.wire.messages import (
    MAX_C,
    MAX_D,
    MAX_FRAME_BYTES,
    MAX_PRED_BYTES,
    MAX_PRED_ROWS,
    MAX_SRC_LEN,
    MAX_STATUS_BYTES,
    PROTOCOL_VERSION,
    REASONS,
    TOPIC_CAPTURE,
    TOPIC_FRAME,
    TOPIC_LABEL,
    TOPIC_PRED,
    TOPIC_SHADOW,
    TOPIC_STATUS,
    TOPIC_STREAM,
    TOPICS,
    Frame,
    Label,
    Pred,
    RawFrame,
)

__all__ = [
    "MAX_C", "MAX_D", "MAX_FRAME_BYTES", "MAX_PRED_BYTES", "MAX_PRED_ROWS", "MAX_SRC_LEN",
    "MAX_STATUS_BYTES", "PROTOCOL_VERSION", "REASONS", "TOPICS", "TOPIC_CAPTURE", "TOPIC_FRAME",
    "TOPIC_LABEL", "TOPIC_PRED", "TOPIC_SHADOW", "TOPIC_STATUS", "TOPIC_STREAM", "Frame",
    "Label", "Pred", "PredRows", "RawFrame",
    "decode_frame", "decode_frame_raw", "decode_label", "decode_pred", "decode_status",
    "encode_frame", "encode_label", "encode_pred", "encode_pred_rows", "encode_status",
    "pred_rows", "sensor_time",
]
