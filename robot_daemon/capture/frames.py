"""A captured frame (:class:`CapturedFrame`) and the bag messages it becomes.

A capture bag is an ordinary bag, so that ``bag info``, ``dataset`` and ``train`` read it
as they read a recording: each captured frame is its ``frame`` message, a one-row ``pred``
(the serving model's answer), a one-row ``shadow`` when a shadow model answered it, a
``label`` when its targets are known, and a ``capture`` message saying why it was kept.
Every message of a frame is logged at the frame's receive time.

Design: docs/architecture.md, "Capture".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgpack
import numpy as np
from numpy.typing import NDArray

from robot_daemon import wire

TOPIC_FRAME: Final = wire.TOPIC_FRAME.decode()
TOPIC_PRED: Final = wire.TOPIC_PRED.decode()
TOPIC_SHADOW: Final = wire.TOPIC_SHADOW.decode()
TOPIC_LABEL: Final = wire.TOPIC_LABEL.decode()
TOPIC_CAPTURE: Final = wire.TOPIC_CAPTURE.decode()
TOPICS: Final = (TOPIC_FRAME, TOPIC_PRED, TOPIC_SHADOW, TOPIC_LABEL, TOPIC_CAPTURE)


@dataclass(frozen=True, slots=True, eq=False)
class CapturedFrame:
    """One served frame the triggers picked, with what the models answered.

    seq, t, x (d,) float32, src : the frame as received. recv_ns : its receive time, wall
    clock, integer ns (the bag's log time). p (c,) : the serving model's probabilities;
    model : its identity. shadow_p (c,) and shadow_model : the shadow's, or None.
    y (c,) : the label's targets (0 or 1) when known, else None. reasons : the triggers
    that picked it (``triggers.REASONS``), at least one. tick : the daemon's tick that
    served it (the ``pred``'s ``tick``). label_only : see the field.

    ``eq=False``: the fields hold arrays, whose ``==`` is elementwise.
    """

    seq: int
    t: float
    x: NDArray[np.float32]
    src: str | None
    recv_ns: int
    p: NDArray[np.float32]
    model: str
    shadow_p: NDArray[np.float32] | None
    shadow_model: str | None
    y: NDArray[np.uint8] | None
    reasons: tuple[str, ...]
    tick: int = 0
    #: The label of a frame captured before (its ``y``), which came later: only its
    #: ``label`` message is written (``reasons`` empty: not a capture of its own).
    label_only: bool = False


@dataclass(frozen=True, slots=True)
class Message:
    """One bag message of a captured frame: topic, payload, sensor time (ns or None)."""

    topic: str
    payload: bytes
    sensor_ns: int | None


def messages(frame: CapturedFrame) -> list[Message]:
    """The bag messages of ``frame``, in the order they are written.

    Raises:
        WireError: a field breaks the protocol (the encoders check as the decoders do).
    """
    from robot_daemon.bag.format import seconds_to_ns

    sensor_ns = seconds_to_ns(frame.t)
    if frame.label_only and frame.y is not None:
        return [Message(TOPIC_LABEL, wire.encode_label(frame.seq, frame.t, frame.x, frame.y,
                                                       frame.src), sensor_ns)]
    out = [Message(TOPIC_FRAME, wire.encode_frame(frame.seq, frame.t, frame.x, frame.src),
                   sensor_ns),
           Message(TOPIC_PRED, _one_row(frame, frame.p, frame.model), sensor_ns)]
    if frame.shadow_p is not None:
        out.append(Message(TOPIC_SHADOW,
                           _one_row(frame, frame.shadow_p, frame.shadow_model or "shadow"),
                           sensor_ns))
    if frame.y is not None:
        out.append(Message(TOPIC_LABEL,
                           wire.encode_label(frame.seq, frame.t, frame.x, frame.y, frame.src),
                           sensor_ns))
    out.append(Message(TOPIC_CAPTURE, encode_capture(frame), sensor_ns))
    return out


def _one_row(frame: CapturedFrame, p: NDArray[np.float32], model: str) -> bytes:
    """A ``pred`` of this frame alone, as the daemon's pred answers it: ``t`` the receive
    time in seconds (the tick's own time is not kept), ``t_frame`` and ``src`` per row."""
    return wire.encode_pred(frame.tick, frame.recv_ns / 1e9, [frame.seq],
                            np.asarray(p, dtype=np.float32).reshape(1, -1), model,
                            t_frame=[frame.t], src=[frame.src])


def encode_capture(frame: CapturedFrame) -> bytes:
    """The ``capture`` payload: a msgpack map ``{seq, t, src, reasons}`` (``src`` only
    when the frame had one, as in ``frame``)."""
    obj: dict[str, Any] = {"seq": frame.seq, "t": frame.t, "reasons": list(frame.reasons)}
    if frame.src is not None:
        obj["src"] = frame.src
    payload: bytes = msgpack.packb(obj, use_bin_type=True)
    return payload


def decode_capture(payload: bytes) -> dict[str, Any]:
    """A ``capture`` payload back as a map (its keys as :func:`encode_capture` wrote them).

    Raises:
        WireError: not a map of string keys within the status limits.
    """
    return wire.decode_status(payload)
