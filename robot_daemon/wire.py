"""Wire protocol v1: the msgpack payloads that cross ZeroMQ (see ``docs/protocol.md``).

Every message is a two-part ZeroMQ message ``[topic, payload]``. The topic is one of
:data:`TOPIC_FRAME`, :data:`TOPIC_LABEL`, :data:`TOPIC_PRED`, :data:`TOPIC_STATUS`; the
payload is a msgpack map, built by the ``encode_*`` functions and checked by the
``decode_*`` functions of this module.

Decoding is strict because payloads come from other processes and other machines:

- the payload size is checked before msgpack sees it, and msgpack unpacks with explicit
  limits on every string, binary, array and map, and no extension types;
- every key is checked: a missing key, an unknown key on ``frame``/``label`` (a misspelt
  ``"sq"`` must not silently become a frame without ``seq``), a duplicate key, a value of
  the wrong type (``True`` is not an integer), a wrong length, a NaN or infinite reading
  and a label that is not 0/1 are all rejected;
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

import difflib
import functools
import math
import operator
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, NoReturn

import msgpack
import numpy as np
from numpy.typing import ArrayLike, NDArray

from robot_daemon.errors import WireError

PROTOCOL_VERSION: Final = 1

TOPIC_FRAME: Final = b"frame"
TOPIC_LABEL: Final = b"label"
TOPIC_PRED: Final = b"pred"
TOPIC_STATUS: Final = b"status"
TOPICS: Final = (TOPIC_FRAME, TOPIC_LABEL, TOPIC_PRED, TOPIC_STATUS)

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

_INT64_MAX: Final = 2**63 - 1

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
)
"""Every ``WireError.reason`` this module raises."""

_F32: Final = np.dtype("<f4")
_U8: Final = np.dtype(np.uint8)

_FRAME_REQUIRED: Final = frozenset({"seq", "t", "x"})
_FRAME_KEYS: Final = _FRAME_REQUIRED | {"src"}
_LABEL_REQUIRED: Final = _FRAME_REQUIRED | {"y"}
_LABEL_KEYS: Final = _LABEL_REQUIRED | {"src"}
_PRED_REQUIRED: Final = frozenset({"tick", "t", "seq", "p", "n", "c", "model"})


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
class _Limits:
    """msgpack limits for one message kind; ``payload`` is checked before unpacking."""

    payload: int
    str_len: int
    bin_len: int
    array_len: int
    map_len: int


_FRAME_LIMITS: Final = _Limits(
    payload=MAX_FRAME_BYTES,
    str_len=MAX_SRC_LEN,
    bin_len=4 * MAX_D,
    array_len=MAX_D,
    map_len=8,
)
_PRED_LIMITS: Final = _Limits(
    payload=MAX_PRED_BYTES,
    str_len=64 * 1024,
    bin_len=MAX_PRED_BYTES,
    array_len=MAX_PRED_ROWS,
    map_len=64,
)
_STATUS_LIMITS: Final = _Limits(
    payload=MAX_STATUS_BYTES,
    str_len=64 * 1024,
    bin_len=64 * 1024,
    array_len=4096,
    map_len=4096,
)


def _fail(reason: str, message: str) -> NoReturn:
    raise WireError(reason, message)


def _reject_ext(code: int, data: bytes) -> NoReturn:
    # msgpack lets a zero-length extension through max_ext_len=0; v1 has no extensions.
    raise ValueError(f"extension type {code} is not part of protocol v1")


def _byte_buffer(payload: object, kind: str) -> bytes | bytearray | memoryview:
    """``payload`` as a buffer of single bytes (a memoryview of floats would index floats)."""
    if type(payload) is bytes or type(payload) is bytearray:
        return payload
    if isinstance(payload, memoryview):
        if payload.c_contiguous and payload.format == "B":
            return payload
        return payload.tobytes()  # a rare case: a copy is fine
    if isinstance(payload, bytes | bytearray):  # subclasses
        return bytes(payload)
    _fail("wrong_type", f"{kind} payload must be bytes, got {type(payload).__name__}")


def _unpack(payload: bytes | bytearray | memoryview, limits: _Limits, kind: str) -> Any:
    """Unpack one msgpack value from a byte buffer within ``limits``; raise WireError."""
    size = len(payload)
    if size > limits.payload:
        _fail("oversized", f"{kind} payload of {size} bytes exceeds {limits.payload}")
    try:
        return msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=limits.str_len,
            max_bin_len=limits.bin_len,
            max_array_len=limits.array_len,
            max_map_len=limits.map_len,
            max_ext_len=0,
            ext_hook=_reject_ext,
        )
    # msgpack documents that unpacking may raise exceptions other than its own (ValueError,
    # UnicodeDecodeError, TypeError, ...): every one of them means "not a valid payload".
    except Exception as exc:
        text = str(exc)
        reason = "oversized" if "exceeds max_" in text and "max_ext_len" not in text else ""
        raise WireError(
            reason or "bad_msgpack", f"{kind} payload is not valid msgpack: {text or type(exc)}"
        ) from None


def _map_header_len(payload: bytes | bytearray | memoryview) -> int:
    """The entry count in the header of the msgpack map that starts ``payload``."""
    first = payload[0]
    if first & 0xF0 == 0x80:  # fixmap: every v1 frame, label and pred
        return int(first & 0x0F)
    head = bytes(payload[:5])
    width = 2 if head[0] == 0xDE else 4  # map16 / map32
    return int.from_bytes(head[1 : 1 + width], "big")


def _unpack_map(
    payload: bytes | bytearray | memoryview, limits: _Limits, kind: str
) -> dict[Any, Any]:
    payload = _byte_buffer(payload, kind)
    obj = _unpack(payload, limits, kind)
    if not isinstance(obj, dict):
        _fail("not_a_map", f"{kind} payload must be a msgpack map, got {type(obj).__name__}")
    # msgpack keeps the last of two equal keys; the header still counts both, so a shorter
    # dict means a duplicate, which we refuse rather than guess which one the sender meant.
    if len(obj) != _map_header_len(payload):
        _fail("duplicate_key", f"{kind} map repeats a key")
    return obj


def _check_keys(
    obj: dict[Any, Any], required: frozenset[str], allowed: frozenset[str], kind: str
) -> None:
    keys = obj.keys()
    if not keys <= allowed:
        bad = sorted((k for k in keys if k not in allowed), key=repr)[0]
        hint = difflib.get_close_matches(str(bad), sorted(required), n=1)
        did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
        _fail(
            "unknown_key",
            f"{kind} has key {bad!r}{did_you_mean}; protocol v1 {kind} keys are "
            f"{sorted(allowed)}",
        )
    if not required <= keys:
        missing = sorted(required - keys)
        _fail("missing_key", f"{kind} lacks required key(s) {missing}")


# ----------------------------------------------------------------------- field checks


def _int_field(value: Any, name: str, negative_reason: str) -> int:
    # type() rather than isinstance(): bool is a subclass of int and must be refused.
    if type(value) is not int:
        _fail("wrong_type", f"{name} must be an integer, got {type(value).__name__}")
    if value < 0:
        _fail(negative_reason, f"{name} must be >= 0, got {value}")
    if value > _INT64_MAX:
        _fail("out_of_range", f"{name} must fit in int64, got {value}")
    return value


def _time_field(value: Any, name: str = "t") -> float:
    # An integer time is accepted: some encoders pack 12.0 as the integer 12.
    if type(value) is not float and type(value) is not int:
        _fail("wrong_type", f"{name} must be a float (seconds), got {type(value).__name__}")
    t = float(value)
    if not math.isfinite(t):
        _fail("non_finite", f"{name} must be finite, got {t}")
    return t


def _str_field(value: Any, name: str) -> str:
    if type(value) is not str:
        _fail("wrong_type", f"{name} must be a string, got {type(value).__name__}")
    return value


def _all_finite(a: NDArray[Any]) -> bool:
    # For a frame (d = 16) the Python sum of tolist() is ~4x faster than np.isfinite().all():
    # a sum of finite float32 values cannot overflow a float64, and NaN/inf propagate
    # (inf + -inf is NaN), so the sum is finite exactly when every value is.
    if a.size <= 64:
        return math.isfinite(sum(a.tolist() if a.ndim == 1 else a.ravel().tolist()))
    return bool(np.isfinite(a).all())


def _readonly(a: NDArray[Any]) -> None:
    a.flags.writeable = False


def _x_field(value: Any, d: int | None) -> NDArray[np.float32]:
    """Decode ``x`` (bin of float32 LE, or an array of numbers) to a (d,) float32 array."""
    return np.frombuffer(_x_bytes(value, d), dtype=_F32)  # read-only, msgpack's own copy


def _x_bytes(value: Any, d: int | None) -> bytes:
    """Check ``x`` (bin of float32 LE, or an array of numbers): its d float32 LE bytes."""
    if type(value) is bytes:
        if len(value) % 4:
            _fail("wrong_d", f"x has {len(value)} bytes, not a whole number of float32")
        raw = value
    elif type(value) is list:
        if not all(type(v) is float or type(v) is int for v in value):
            _fail("wrong_type", "x must hold only numbers (no bool, nil or strings)")
        x64 = np.array(value, dtype=np.float64)
        # Range-check in float64 before the cast: a float32 cast would turn 1e300 into inf
        # with an overflow warning instead of a clear rejection.
        if not _all_finite(x64) or (x64.size and np.abs(x64).max() > np.finfo(np.float32).max):
            _fail("non_finite", "x must hold finite float32 values")
        raw = x64.astype(_F32).tobytes()
    else:
        _fail("wrong_type", f"x must be bin or an array, got {type(value).__name__}")
    n = len(raw) // 4
    if d is None:
        if not 1 <= n <= MAX_D:
            _fail("wrong_d", f"x has {n} features, expected 1..{MAX_D}")
    elif n != d:
        _fail("wrong_d", f"x has {n} features, expected d={d}")
    if raw is value and not _f32_bytes_finite(raw, n):  # a list was checked in float64
        _fail("non_finite", "x holds NaN or infinity (a dropout must be sent as a finite value)")
    return raw


@functools.lru_cache(maxsize=64)
def _f32_struct(n: int) -> struct.Struct:
    return struct.Struct(f"<{n}f")


def _f32_bytes_finite(raw: bytes, n: int) -> bool:
    """Whether the ``n`` float32 LE values in ``raw`` are all finite (see _all_finite)."""
    # For a frame, struct's tuple of Python floats is 3x cheaper than a NumPy array and
    # its reduction; from 64 values on, NumPy wins.
    if n <= 64:
        return math.isfinite(sum(_f32_struct(n).unpack(raw)))
    return bool(np.isfinite(np.frombuffer(raw, dtype=_F32)).all())


def _y_field(value: Any, c: int | None) -> NDArray[np.uint8]:
    """Decode ``y`` (bin of uint8, or an array of 0/1 ints) to a (c,) uint8 array."""
    if type(value) is bytes:
        if value and max(value) > 1:  # max() of 8 bytes is faster than NumPy's reduction
            _fail("bad_label_value", "y must hold only 0 or 1")
        y = np.frombuffer(value, dtype=_U8)
    elif type(value) is list:
        if not all(type(v) is int for v in value):
            _fail("wrong_type", "y must hold only integers 0 or 1 (no bool, float or nil)")
        if not all(v == 0 or v == 1 for v in value):
            _fail("bad_label_value", "y must hold only 0 or 1")
        y = np.array(value, dtype=_U8)
        _readonly(y)
    else:
        _fail("wrong_type", f"y must be bin or an array, got {type(value).__name__}")
    n = y.shape[0]
    if c is None:
        if not 1 <= n <= MAX_C:
            _fail("wrong_c", f"y has {n} classes, expected 1..{MAX_C}")
    elif n != c:
        _fail("wrong_c", f"y has {n} classes, expected c={c}")
    return y


def _src_field(obj: dict[Any, Any]) -> str | None:
    src = obj.get("src")
    return None if src is None and "src" not in obj else _str_field(src, "src")


# ------------------------------------------------------------------- frame and label


def _check_d(d: int | None) -> None:
    if d is not None and not 1 <= d <= MAX_D:
        raise ValueError(f"d must be in 1..{MAX_D}, got {d}")


def decode_frame(payload: bytes | bytearray | memoryview, d: int | None = None) -> Frame:
    """Decode and validate a ``frame`` payload.

    Args:
        payload: the second part of the ZeroMQ message.
        d: the feature count the caller's model expects; ``None`` accepts any
            ``1 <= d <= MAX_D``.

    Returns:
        The frame; ``x`` has shape ``(d,)``, dtype float32 and is read-only.

    Raises:
        WireError: the payload is not a valid v1 frame (see ``reason``).
    """
    seq, t, x, src = decode_frame_raw(payload, d)
    return Frame(seq, t, np.frombuffer(x, dtype=_F32), src)


def decode_frame_raw(payload: bytes | bytearray | memoryview, d: int | None = None) -> RawFrame:
    """:func:`decode_frame`, checked alike, with ``x`` left as its float32 LE bytes.

    For a receiver that copies the readings straight into a batch (the daemon): a NumPy
    array per frame would cost more than the rest of the decode.
    """
    _check_d(d)
    obj = _unpack_map(payload, _FRAME_LIMITS, "frame")
    _check_keys(obj, _FRAME_REQUIRED, _FRAME_KEYS, "frame")
    return RawFrame(
        _int_field(obj["seq"], "seq", "negative_seq"),
        _time_field(obj["t"]),
        _x_bytes(obj["x"], d),
        _src_field(obj),
    )


def decode_label(
    payload: bytes | bytearray | memoryview, d: int | None = None, c: int | None = None
) -> Label:
    """Decode and validate a ``label`` payload.

    Args:
        payload: the second part of the ZeroMQ message.
        d: expected feature count, or ``None`` for any ``1 <= d <= MAX_D``.
        c: expected class count, or ``None`` for any ``1 <= c <= MAX_C``.

    Returns:
        The label; ``x`` (d,) float32 and ``y`` (c,) uint8 in {0, 1}, both read-only.

    Raises:
        WireError: the payload is not a valid v1 label (see ``reason``).
    """
    _check_d(d)
    if c is not None and not 1 <= c <= MAX_C:
        raise ValueError(f"c must be in 1..{MAX_C}, got {c}")
    obj = _unpack_map(payload, _FRAME_LIMITS, "label")
    _check_keys(obj, _LABEL_REQUIRED, _LABEL_KEYS, "label")
    return Label(
        seq=_int_field(obj["seq"], "seq", "negative_seq"),
        t=_time_field(obj["t"]),
        x=_x_field(obj["x"], d),
        y=_y_field(obj["y"], c),
        src=_src_field(obj),
    )


def _encode_seq(seq: Any, name: str = "seq") -> int:
    if type(seq) is int:  # the common case, without the generic checks below
        return _int_field(seq, name, "negative_seq")
    if isinstance(seq, bool | np.bool_):
        _fail("wrong_type", f"{name} must be an integer, got bool")
    try:
        value = operator.index(seq)  # int and NumPy integers; never a float
    except TypeError:
        _fail("wrong_type", f"{name} must be an integer, got {type(seq).__name__}")
    return _int_field(value, name, "negative_seq")


def _encode_time(t: Any) -> float:
    if type(t) is float and math.isfinite(t):  # the common case
        return t
    if isinstance(t, bool | np.bool_) or not isinstance(t, int | float | np.integer | np.floating):
        _fail("wrong_type", f"t must be a number of seconds, got {type(t).__name__}")
    value = float(t)
    if not math.isfinite(value):
        _fail("non_finite", f"t must be finite, got {value}")
    return value


def _encode_src(src: Any) -> str:
    if not isinstance(src, str):
        _fail("wrong_type", f"src must be a string, got {type(src).__name__}")
    if len(src.encode()) > MAX_SRC_LEN:
        _fail("oversized", f"src is longer than {MAX_SRC_LEN} bytes")
    return src


def _encode_x(x: ArrayLike) -> bytes:
    arr = x if isinstance(x, np.ndarray) and x.dtype == _F32 else _to_float32(x, "x")
    if arr.ndim != 1 or not 1 <= arr.shape[0] <= MAX_D:
        _fail("wrong_d", f"x must have shape (d,) with 1 <= d <= {MAX_D}, got {arr.shape}")
    if not _all_finite(arr):
        _fail("non_finite", "x holds NaN or infinity (send a dropout as a finite value)")
    return arr.tobytes()


def _to_float32(a: ArrayLike, name: str) -> NDArray[np.float32]:
    if type(a) is np.ndarray and a.dtype == _F32:
        return a  # the daemon's case: no cast, so no error state to set up
    try:
        # A float64 above float32's range becomes inf, which the finiteness check rejects;
        # the overflow warning of the cast would only be noise.
        with np.errstate(over="ignore", invalid="ignore"):
            return np.asarray(a, dtype=_F32)
    except (TypeError, ValueError):
        _fail("wrong_type", f"{name} must be an array of numbers")


def _encode_y(y: ArrayLike) -> bytes:
    arr = np.asarray(y)
    if arr.dtype.kind not in "biu":
        _fail("wrong_type", f"y must hold integers 0 or 1, got dtype {arr.dtype}")
    if arr.ndim != 1 or not 1 <= arr.shape[0] <= MAX_C:
        _fail("wrong_c", f"y must have shape (c,) with 1 <= c <= {MAX_C}, got {arr.shape}")
    if arr.dtype != _U8 and arr.dtype != np.bool_ and ((arr != 0) & (arr != 1)).any():
        _fail("bad_label_value", "y must hold only 0 or 1")
    raw = arr.astype(_U8, copy=False).tobytes()
    if max(raw) > 1:  # a uint8 y, checked on its bytes (cheaper than NumPy for c = 8)
        _fail("bad_label_value", "y must hold only 0 or 1")
    return raw


def _pack(obj: Mapping[str, Any], kind: str) -> bytes:
    try:
        payload: bytes = msgpack.packb(obj, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise WireError("wrong_type", f"{kind} cannot be packed: {exc}") from None
    return payload


def encode_frame(
    seq: int | np.integer[Any], t: float, x: ArrayLike, src: str | None = None
) -> bytes:
    """Encode a ``frame`` payload.

    Args:
        seq: sequence number, ``0 <= seq <= 2**63 - 1`` (int or NumPy integer).
        t: sensor time in seconds (finite).
        x: readings, shape ``(d,)``, cast to float32 and sent as little-endian bin.
        src: optional publisher name (at most MAX_SRC_LEN UTF-8 bytes).

    Raises:
        WireError: an argument breaks the protocol (same reasons as the decoder).
    """
    obj: dict[str, Any] = {"seq": _encode_seq(seq), "t": _encode_time(t), "x": _encode_x(x)}
    if src is not None:
        obj["src"] = _encode_src(src)
    return _pack(obj, "frame")


def encode_label(
    seq: int | np.integer[Any], t: float, x: ArrayLike, y: ArrayLike, src: str | None = None
) -> bytes:
    """Encode a ``label`` payload: a frame plus ``y``, shape ``(c,)``, values 0 or 1.

    ``y`` may be bool, or any integer dtype holding only 0 and 1; it is sent as uint8 bin.

    Raises:
        WireError: an argument breaks the protocol (same reasons as the decoder).
    """
    obj: dict[str, Any] = {
        "seq": _encode_seq(seq),
        "t": _encode_time(t),
        "x": _encode_x(x),
        "y": _encode_y(y),
    }
    if src is not None:
        obj["src"] = _encode_src(src)
    return _pack(obj, "label")


# ------------------------------------------------------------------------------ pred


def encode_pred(
    tick: int | np.integer[Any],
    t: float,
    seq: Sequence[int] | NDArray[np.integer[Any]],
    p: NDArray[np.floating[Any]],
    model: str,
    **extra: Any,
) -> bytes:
    """Encode a ``pred`` payload: the probabilities of every frame served in one tick.

    Args:
        tick: the daemon's tick counter, ``>= 0``.
        t: time the tick was served, seconds.
        seq: the ``seq`` of each answered frame, length ``n >= 1``.
        p: probabilities, shape ``(n, c)``, finite, in ``[0, 1]``; sent as float32 LE
            row-major bin.
        model: the model version.
        **extra: further keys (plain msgpack values: str, int, float, bool, None, bytes,
            lists and str-keyed maps of those), e.g. ``src="robot-7"``.

    Raises:
        WireError: an argument breaks the protocol.
    """
    clash = sorted(_PRED_REQUIRED & extra.keys())
    if clash:
        _fail("reserved_key", f"extra keys {clash} would shadow pred's own keys")
    seq_arr = np.asarray(seq)
    n = seq_arr.shape[0] if seq_arr.ndim == 1 else -1
    if not 1 <= n <= MAX_PRED_ROWS:  # before the dtype: np.asarray([]) is float64
        _fail("wrong_n", f"seq must have shape (n,) with 1 <= n <= {MAX_PRED_ROWS}")
    if seq_arr.dtype.kind not in "iu":
        _fail("wrong_type", f"seq must hold integers, got dtype {seq_arr.dtype}")
    if seq_arr.min() < 0:
        _fail("negative_seq", "seq values must be >= 0")
    probs = _to_float32(p, "p")
    if probs.ndim != 2 or probs.shape[0] != n:
        _fail("wrong_n", f"p must have shape (n={n}, c), got {probs.shape}")
    _check_probs(probs)
    obj: dict[str, Any] = {
        "tick": _encode_seq(tick, "tick"),
        "t": _encode_time(t),
        "seq": seq_arr.tolist(),
        "p": np.ascontiguousarray(probs).tobytes(),
        "n": n,
        "c": probs.shape[1],
        "model": _str_field(model, "model"),
        **extra,
    }
    return _pack(obj, "pred")


def _check_probs(p: NDArray[np.float32]) -> None:
    c = p.shape[1]
    if not 1 <= c <= MAX_C:
        _fail("wrong_c", f"p must have 1..{MAX_C} classes, got {c}")
    # Two reductions where most payloads pass: a NaN makes min() NaN and an infinity lies
    # outside [0, 1], so the finiteness check runs only to name the reason.
    if not (p.min() >= 0.0 and p.max() <= 1.0):
        if not _all_finite(p):
            _fail("non_finite", "p holds NaN or infinity")
        _fail("out_of_range", "p must hold probabilities in [0, 1]")


def decode_pred(payload: bytes | bytearray | memoryview) -> Pred:
    """Decode and validate a ``pred`` payload.

    Returns:
        The prediction: ``seq`` (n,) int64 and ``p`` (n, c) float32, both read-only;
        unknown keys land in ``extra`` (pred is open to extension, unlike frame).

    Raises:
        WireError: the payload is not a valid v1 pred (see ``reason``).
    """
    obj = _unpack_map(payload, _PRED_LIMITS, "pred")
    missing = sorted(_PRED_REQUIRED - obj.keys())
    if missing:
        _fail("missing_key", f"pred lacks required key(s) {missing}")
    extra = {k: v for k, v in obj.items() if k not in _PRED_REQUIRED}
    for key in extra:
        if type(key) is not str:
            _fail("unknown_key", f"pred keys must be strings, got {key!r}")
    n = _int_field(obj["n"], "n", "wrong_n")
    c = _int_field(obj["c"], "c", "wrong_c")
    if not 1 <= n <= MAX_PRED_ROWS:
        _fail("wrong_n", f"n must be in 1..{MAX_PRED_ROWS}, got {n}")
    if not 1 <= c <= MAX_C:
        _fail("wrong_c", f"c must be in 1..{MAX_C}, got {c}")
    return Pred(
        tick=_int_field(obj["tick"], "tick", "negative_seq"),
        t=_time_field(obj["t"]),
        seq=_pred_seq(obj["seq"], n),
        p=_pred_p(obj["p"], n, c),
        model=_str_field(obj["model"], "model"),
        extra=extra,
    )


def _pred_seq(value: Any, n: int) -> NDArray[np.int64]:
    if type(value) is not list:
        _fail("wrong_type", f"seq must be an array, got {type(value).__name__}")
    if len(value) != n:
        _fail("wrong_n", f"seq has {len(value)} entries, n says {n}")
    for s in value:
        _int_field(s, "seq entry", "negative_seq")
    seq = np.array(value, dtype=np.int64)
    _readonly(seq)
    return seq


def _pred_p(value: Any, n: int, c: int) -> NDArray[np.float32]:
    if type(value) is not bytes:
        _fail("wrong_type", f"p must be bin, got {type(value).__name__}")
    if len(value) != 4 * n * c:
        _fail("wrong_n", f"p has {len(value)} bytes, expected 4*n*c = {4 * n * c}")
    p = np.frombuffer(value, dtype=_F32).reshape(n, c)
    _check_probs(p)
    return p


# ---------------------------------------------------------------------------- status


def encode_status(status: Mapping[str, Any]) -> bytes:
    """Encode a ``status`` payload: a map of counters and gauges (``docs/protocol.md``).

    Raises:
        WireError: ``status`` has non-string keys or values msgpack cannot pack.
    """
    if not all(type(k) is str for k in status):
        _fail("wrong_type", "status keys must be strings")
    payload = _pack(status, "status")
    if len(payload) > MAX_STATUS_BYTES:
        _fail("oversized", f"status of {len(payload)} bytes exceeds {MAX_STATUS_BYTES}")
    return payload


def decode_status(payload: bytes | bytearray | memoryview) -> dict[str, Any]:
    """Decode a ``status`` payload to a dict with string keys.

    Only the shape is checked (a map with string keys, within the limits): the counters
    are for people and dashboards, and new ones may appear without a protocol change.

    Raises:
        WireError: the payload is not a msgpack map with string keys.
    """
    obj = _unpack_map(payload, _STATUS_LIMITS, "status")
    for key in obj:
        if type(key) is not str:
            _fail("unknown_key", f"status keys must be strings, got {key!r}")
    return obj


# ----------------------------------------------------------------------------- helpers


def sensor_time(payload: bytes | bytearray | memoryview) -> float | None:
    """The ``t`` of any v1 payload, in seconds, or ``None`` if there is none.

    Best effort, for tools that timestamp payloads they do not otherwise interpret (the
    bag recorder): never raises, whatever the bytes.
    """
    try:
        obj = _unpack(_byte_buffer(payload, "payload"), _PRED_LIMITS, "payload")
    except WireError:
        return None
    if not isinstance(obj, dict):
        return None
    t = obj.get("t")
    if type(t) is not float and type(t) is not int:
        return None
    value = float(t)
    return value if math.isfinite(value) else None
