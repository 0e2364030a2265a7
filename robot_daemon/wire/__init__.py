"""Wire protocol v1: the msgpack payloads that cross ZeroMQ (see ``docs/protocol.md``).

Every message is a two-part ZeroMQ message ``[topic, payload]``. The topic is one of
:data:`TOPIC_FRAME`, :data:`TOPIC_LABEL`, :data:`TOPIC_PRED`, :data:`TOPIC_STATUS`; the
payload is a msgpack map, built by the ``encode_*`` functions (:mod:`.encode`) and
checked by the ``decode_*`` functions (:mod:`.decode`); :mod:`.messages` holds the
types, limits and reasons, :mod:`.checks` the field checks both directions share.

Decoding is strict because payloads come from other processes and other machines:

- the payload size is checked before msgpack sees it, and msgpack unpacks with explicit
  limits on every string, binary, array and map, and no extension types;
- every key is checked: a missing key, an unknown key on ``frame``/``label`` (a misspelt
  ``"sq"`` must not silently become a frame without ``seq``), a duplicate key, a value of
  the wrong type (``True`` is not an integer), a wrong length, a NaN or infinite reading,
  a label that is not 0/1 and a ``src`` that is not printable (a control character
  would act in every terminal that shows it) are all rejected;
- every rejection raises :class:`~robot_daemon.errors.WireError` whose ``reason`` is a
  short token (:data:`REASONS`) the daemon counts per reason. Nothing else escapes a
  decoder, whatever the bytes (a property-based test holds us to that).

Encoders check their inputs against the same rules, so the daemon never publishes a
message that its own decoder would reject.

Decoded arrays are **read-only** NumPy arrays that do not alias the payload buffer: msgpack
copies every ``bin`` into a fresh ``bytes`` object and the arrays are views of that copy.
A caller that receives zero-copy ZeroMQ frames may therefore release the frame at once;
a caller that wants to write into an array copies it (``frame.x.copy()``).
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
    TOPIC_FRAME,
    TOPIC_LABEL,
    TOPIC_PRED,
    TOPIC_STATUS,
    TOPICS,
    Frame,
    Label,
    Pred,
    RawFrame,
)

__all__ = [
    "MAX_C", "MAX_D", "MAX_FRAME_BYTES", "MAX_PRED_BYTES", "MAX_PRED_ROWS", "MAX_SRC_LEN",
    "MAX_STATUS_BYTES", "PROTOCOL_VERSION", "REASONS", "TOPICS", "TOPIC_FRAME", "TOPIC_LABEL",
    "TOPIC_PRED", "TOPIC_STATUS", "Frame", "Label", "Pred", "PredRows", "RawFrame",
    "decode_frame", "decode_frame_raw", "decode_label", "decode_pred", "decode_status",
    "encode_frame", "encode_label", "encode_pred", "encode_pred_rows", "encode_status",
    "pred_rows", "sensor_time",
]
