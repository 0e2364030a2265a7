"""The messages of protocol v1: topics, size limits, rejection reasons and the decoded
types (:class:`Frame`, :class:`RawFrame`, :class:`Label`, :class:`Pred`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import numpy as np
from numpy.typing import NDArray

PROTOCOL_VERSION: Final = 1

TOPIC_FRAME: Final = b"frame"
TOPIC_LABEL: Final = b"label"
TOPIC_PRED: Final = b"pred"
TOPIC_STATUS: Final = b"status"
#: A shadow model's answers (``run --shadow``): the ``pred`` format, its own identity.
TOPIC_SHADOW: Final = b"shadow"
#: Why a frame was captured (``run --capture``): in capture bags only.
TOPIC_CAPTURE: Final = b"capture"
#: The statistics of every frame served, as a capture saw them: in capture bags only.
TOPIC_STREAM: Final = b"stream"
TOPICS: Final = (TOPIC_FRAME, TOPIC_LABEL, TOPIC_PRED, TOPIC_STATUS, TOPIC_SHADOW,
                 TOPIC_CAPTURE, TOPIC_STREAM)

# Upper bounds that hold whatever the model: a decoder called without d or c still refuses
# a frame of a million features. They are far above any real robot and far below what
# would hurt the daemon's memory.
MAX_D: Final = 4096
"""Most features a ``frame`` or ``label`` may carry."""
MAX_C: Final = 1024
"""Most classes a ``label`` or ``pred`` may carry."""
MAX_PRED_ROWS: Final = 65_536
"""Most frames one ``pred`` message may answer."""
MAX_SRC_LEN: Final = 256
"""Longest ``src`` / ``model`` string, in UTF-8 bytes."""
MAX_FRAME_BYTES: Final = 64 * 1024
"""Largest ``frame`` / ``label`` payload (a MAX_D frame as an array of float64 fits)."""
MAX_PRED_BYTES: Final = 32 * 1024 * 1024
"""Largest ``pred`` payload."""
MAX_STATUS_BYTES: Final = 1024 * 1024
"""Largest ``status`` payload."""

INT64_MAX: Final = 2**63 - 1

REASONS: Final = (
    "bad_msgpack",  # not one complete msgpack value, or an extension type
    "oversized",  # payload, string, binary, array or map over its limit
    "not_a_map",  # the payload is msgpack, but not a map
    "missing_key",  # a required key is absent
    "unknown_key",  # a key that protocol v1 does not define (frame, label), or not a string
    "duplicate_key",  # the same key twice in one map
    "wrong_type",  # a value of the wrong msgpack type (bool is not an int)
    "wrong_d",  # x has the wrong number of features
    "wrong_c",  # y or p has the wrong number of classes
    "wrong_n",  # pred: n, len(seq) and the rows of p disagree
    "non_finite",  # NaN or infinity in t, x or p
    "bad_label_value",  # y holds a value other than 0 or 1
    "negative_seq",  # seq (or tick) below zero
    "out_of_range",  # an integer above int64, or a probability outside [0, 1]
    "reserved_key",  # encode_pred: an extra key that shadows a required key
    "bad_src",  # a src with a character that is not printable (a control, a bidi override)
)
"""Every ``WireError.reason`` this module raises."""

F32: Final = np.dtype("<f4")
U8: Final = np.dtype(np.uint8)

FRAME_REQUIRED: Final = frozenset({"seq", "t", "x"})
FRAME_KEYS: Final = FRAME_REQUIRED | {"src"}
LABEL_REQUIRED: Final = FRAME_REQUIRED | {"y"}
LABEL_KEYS: Final = LABEL_REQUIRED | {"src"}
PRED_REQUIRED: Final = frozenset({"tick", "t", "seq", "p", "n", "c", "model"})


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    """One decoded sensor reading.

    ``eq=False``: equality of NumPy arrays is elementwise, so a generated ``__eq__`` would
    raise; compare the fields instead.

    Attributes:
        seq: the publisher's sequence number, ``0 <= seq <= 2**63 - 1``.
        t: sensor time in seconds (finite).
        x: readings, shape ``(d,)``, dtype float32, finite, read-only.
        src: the publisher's name, if it sent one.
    """

    seq: int
    t: float
    x: NDArray[np.float32]
    src: str | None = None


class RawFrame(NamedTuple):
    """One decoded sensor reading as :func:`decode_frame_raw` returns it.

    Attributes:
        seq, t, src: as in :class:`Frame`.
        x: the readings as ``4 * d`` bytes of little-endian float32, all finite.
    """

    seq: int
    t: float
    x: bytes
    src: str | None


#: A :class:`RawFrame`'s fields as a plain tuple, ``(seq, t, x, src)``: what a decoder of
#: many frames gives (:func:`robot_daemon.wire.layout.usual_frames`), where making a
#: NamedTuple of each would cost more than the rest of its work.
FrameFields = tuple[int, float, bytes, str | None]


@dataclass(frozen=True, slots=True, eq=False)
class Label:
    """One decoded labelled example: a frame plus its ground truth.

    Attributes:
        seq, t, x, src: as in :class:`Frame`.
        y: targets, shape ``(c,)``, dtype uint8, values 0 or 1, read-only.
    """

    seq: int
    t: float
    x: NDArray[np.float32]
    y: NDArray[np.uint8]
    src: str | None = None


@dataclass(frozen=True, slots=True, eq=False)
class Pred:
    """One decoded prediction message: the daemon's answer for one tick.

    Attributes:
        tick: the daemon's tick counter, ``>= 0``.
        t: time the tick was served, in seconds (wall clock of the daemon).
        seq: the ``seq`` of each answered frame, shape ``(n,)``, dtype int64, read-only.
        p: per-class probabilities, shape ``(n, c)``, dtype float32, in ``[0, 1]``,
            read-only; row ``i`` answers frame ``seq[i]``.
        model: the model version that produced ``p``.
        extra: every other key of the message (e.g. ``src``, per-frame times).
    """

    tick: int
    t: float
    seq: NDArray[np.int64]
    p: NDArray[np.float32]
    model: str
    extra: dict[str, Any]


# --------------------------------------------------------------------------- unpacking


@dataclass(frozen=True, slots=True)
class Limits:
    """msgpack limits for one message kind; ``payload`` is checked before unpacking."""

    payload: int
    str_len: int
    bin_len: int
    array_len: int
    map_len: int


FRAME_LIMITS: Final = Limits(
    payload=MAX_FRAME_BYTES,
    str_len=MAX_SRC_LEN,
    bin_len=4 * MAX_D,
    array_len=MAX_D,
    map_len=8,
)
PRED_LIMITS: Final = Limits(
    payload=MAX_PRED_BYTES,
    str_len=64 * 1024,
    bin_len=MAX_PRED_BYTES,
    array_len=MAX_PRED_ROWS,
    map_len=64,
)
STATUS_LIMITS: Final = Limits(
    payload=MAX_STATUS_BYTES,
    str_len=64 * 1024,
    bin_len=64 * 1024,
    array_len=4096,
    map_len=4096,
)
