"""Strict decoders: every payload is checked before anything trusts it.

Every rejection raises :class:`~robot_daemon.errors.WireError` with a ``reason`` from
:data:`~robot_daemon.wire.messages.REASONS`; nothing else escapes a decoder.
"""

from __future__ import annotations

import difflib
import functools
import math
from typing import Any, Final, NoReturn

import msgpack
import numpy as np
from numpy.typing import NDArray

from robot_daemon.errors import WireError
from robot_daemon.wire.checks import (
    all_finite,
    check_probs,
    fail,
    int_field,
    pred_src_field,
    src_field,
    str_field,
)
from robot_daemon.wire.messages import (
    F32,
    FRAME_KEYS,
    FRAME_LIMITS,
    FRAME_REQUIRED,
    INT64_MAX,
    LABEL_KEYS,
    LABEL_REQUIRED,
    MAX_C,
    MAX_D,
    MAX_PRED_ROWS,
    PRED_LIMITS,
    PRED_REQUIRED,
    STATUS_LIMITS,
    U8,
    Frame,
    Label,
    Limits,
    Pred,
    RawFrame,
)


def _reject_ext(code: int, data: bytes) -> NoReturn:
    # msgpack lets a zero-length extension through max_ext_len=0; v1 has no extensions.
    raise ValueError(f"extension type {code} is not part of protocol v1")


def _byte_buffer(payload: object, kind: str) -> bytes | bytearray | memoryview:
    """``payload`` as a buffer of single bytes (a memoryview of floats would index floats,
    one of rows would index rows)."""
    if type(payload) is bytes or type(payload) is bytearray:
        return payload
    if isinstance(payload, memoryview):
        if payload.c_contiguous and payload.format == "B" and payload.ndim == 1:
            return payload
        return payload.tobytes()  # a rare case: a copy is fine
    if isinstance(payload, bytes | bytearray):  # subclasses
        return bytes(payload)
    fail("wrong_type", f"{kind} payload must be bytes, got {type(payload).__name__}")


def _unpack(payload: bytes | bytearray | memoryview, limits: Limits, kind: str) -> Any:
    """Unpack one msgpack value from a byte buffer within ``limits``; raise WireError."""
    size = len(payload)
    if size > limits.payload:
        fail("oversized", f"{kind} payload of {size} bytes exceeds {limits.payload}")
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
    payload: bytes | bytearray | memoryview, limits: Limits, kind: str
) -> dict[Any, Any]:
    payload = _byte_buffer(payload, kind)
    return _as_map(_unpack(payload, limits, kind), payload, kind)


def _as_map(obj: Any, payload: bytes | bytearray | memoryview, kind: str) -> dict[Any, Any]:
    """``obj``, unpacked from ``payload``, if it is a map without a repeated key."""
    if not isinstance(obj, dict):
        fail("not_a_map", f"{kind} payload must be a msgpack map, got {type(obj).__name__}")
    # msgpack keeps the last of two equal keys; the header still counts both, so a shorter
    # dict means a duplicate, which we refuse rather than guess which one the sender meant.
    if len(obj) != _map_header_len(payload):
        fail("duplicate_key", f"{kind} map repeats a key")
    return obj


def _check_keys(
    obj: dict[Any, Any], required: frozenset[str], allowed: frozenset[str], kind: str
) -> None:
    keys = obj.keys()
    if not keys <= allowed:
        bad = sorted((k for k in keys if k not in allowed), key=repr)[0]
        hint = difflib.get_close_matches(str(bad), sorted(required), n=1)
        did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
        fail(
            "unknown_key",
            f"{kind} has key {bad!r}{did_you_mean}; protocol v1 {kind} keys are "
            f"{sorted(allowed)}",
        )
    if not required <= keys:
        missing = sorted(required - keys)
        fail("missing_key", f"{kind} lacks required key(s) {missing}")


def _time_field(value: Any, name: str = "t") -> float:
    # An integer time is accepted: some encoders pack 12.0 as the integer 12.
    if type(value) is not float and type(value) is not int:
        fail("wrong_type", f"{name} must be a float (seconds), got {type(value).__name__}")
    t = float(value)
    if not math.isfinite(t):
        fail("non_finite", f"{name} must be finite, got {t}")
    return t


def _readonly(a: NDArray[Any]) -> None:
    a.flags.writeable = False


def _x_field(value: Any, d: int | None) -> NDArray[np.float32]:
    """Decode ``x`` (bin of float32 LE, or an array of numbers) to a (d,) float32 array."""
    return np.frombuffer(_x_bytes(value, d), dtype=F32)  # read-only, msgpack's own copy


def _x_bytes(value: Any, d: int | None) -> bytes:
    """Check ``x`` (bin of float32 LE, or an array of numbers): its d float32 LE bytes."""
    if type(value) is bytes:
        if len(value) % 4:
            fail("wrong_d", f"x has {len(value)} bytes, not a whole number of float32")
        raw = value
    elif type(value) is list:
        if not all(type(v) is float or type(v) is int for v in value):
            fail("wrong_type", "x must hold only numbers (no bool, nil or strings)")
        x64 = np.array(value, dtype=np.float64)
        # Range-check in float64 before the cast: a float32 cast would turn 1e300 into inf
        # with an overflow warning instead of a clear rejection.
        if not all_finite(x64) or (x64.size and np.abs(x64).max() > np.finfo(np.float32).max):
            fail("non_finite", "x must hold finite float32 values")
        raw = x64.astype(F32).tobytes()
    else:
        fail("wrong_type", f"x must be bin or an array, got {type(value).__name__}")
    n = len(raw) // 4
    if d is None:
        if not 1 <= n <= MAX_D:
            fail("wrong_d", f"x has {n} features, expected 1..{MAX_D}")
    elif n != d:
        fail("wrong_d", f"x has {n} features, expected d={d}")
    if raw is value and not _f32_bytes_finite(raw, n):  # a list was checked in float64
        fail("non_finite", "x holds NaN or infinity (a dropout must be sent as a finite value)")
    return raw


def _f32_masks(n: int) -> tuple[int, int, int]:
    """Masks over ``n`` float32 LE values read as one integer (value ``i`` in bits 32i to
    32i+31): each value's exponent bits, the lowest of them, and its top (sign) bit."""
    return (int.from_bytes(b"\x00\x00\x80\x7f" * n, "little"),
            int.from_bytes(b"\x00\x00\x80\x00" * n, "little"),
            int.from_bytes(b"\x00\x00\x00\x80" * n, "little"))


#: :func:`_f32_masks` of every width up to 64, the widths checked as one integer.
#: The widest frame of the usual form (:func:`_plain_frame`, :func:`usual_frame`): wider
#: ones are checked in full.
USUAL_MAX_D: Final = 64
_F32_MASKS: Final = {n: _f32_masks(n) for n in range(1, USUAL_MAX_D + 1)}


def _f32_bytes_finite(raw: bytes, n: int) -> bool:
    """Whether the ``n`` float32 LE values in ``raw`` are all finite (see all_finite)."""
    # A float32 is NaN or infinite exactly when its 8 exponent bits are all set. With the
    # other bits masked off, adding 1 at the exponent's lowest bit carries into the top bit
    # exactly then, and never into the next value: a masked value is at most 0x7F800000.
    # Three integer operations check a frame (d = 16) in half the time of struct's tuple
    # of Python floats and its sum, a tenth of NumPy's; from 64 values on, NumPy wins.
    masks = _F32_MASKS.get(n)
    if masks is None:
        return bool(np.isfinite(np.frombuffer(raw, dtype=F32)).all())
    exponents, lowest, top = masks
    return not ((int.from_bytes(raw, "little") & exponents) + lowest) & top


def _y_field(value: Any, c: int | None) -> NDArray[np.uint8]:
    """Decode ``y`` (bin of uint8, or an array of 0/1 ints) to a (c,) uint8 array."""
    if type(value) is bytes:
        if value and max(value) > 1:  # max() of 8 bytes is faster than NumPy's reduction
            fail("bad_label_value", "y must hold only 0 or 1")
        y = np.frombuffer(value, dtype=U8)
    elif type(value) is list:
        if not all(type(v) is int for v in value):
            fail("wrong_type", "y must hold only integers 0 or 1 (no bool, float or nil)")
        if not all(v == 0 or v == 1 for v in value):
            fail("bad_label_value", "y must hold only 0 or 1")
        y = np.array(value, dtype=U8)
        _readonly(y)
    else:
        fail("wrong_type", f"y must be bin or an array, got {type(value).__name__}")
    n = y.shape[0]
    if c is None:
        if not 1 <= n <= MAX_C:
            fail("wrong_c", f"y has {n} classes, expected 1..{MAX_C}")
    elif n != c:
        fail("wrong_c", f"y has {n} classes, expected c={c}")
    return y


def _src_field(obj: dict[Any, Any]) -> str | None:
    src = obj.get("src")
    return None if src is None and "src" not in obj else src_field(src)


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
    return Frame(seq, t, np.frombuffer(x, dtype=F32), src)


def decode_frame_raw(payload: bytes | bytearray | memoryview, d: int | None = None) -> RawFrame:
    """:func:`decode_frame`, checked alike, with ``x`` left as its float32 LE bytes.

    For a receiver that copies the readings straight into a batch (the daemon): a NumPy
    array per frame would cost more than the rest of the decode.
    """
    _check_d(d)
    payload = _byte_buffer(payload, "frame")
    obj = _unpack(payload, FRAME_LIMITS, "frame")
    # payload[0] exists: msgpack refuses an empty payload.
    frame = _plain_frame(obj, payload[0], d)
    return frame if frame is not None else _checked_frame(obj, payload, d)


# FRAME_LIMITS' fields, read once for usual_frame.
_FRAME_PAYLOAD, _FRAME_STR, _FRAME_BIN, _FRAME_ARRAY, _FRAME_MAP = (
    FRAME_LIMITS.payload, FRAME_LIMITS.str_len, FRAME_LIMITS.bin_len, FRAME_LIMITS.array_len,
    FRAME_LIMITS.map_len)


def usual_frame(payload: bytes, d: int) -> RawFrame | None:
    """The frame in ``payload`` if it has the usual form, else ``None``.

    The usual form is the one our encoders give (:func:`_plain_frame`), within
    ``FRAME_LIMITS``, ``d`` at most :data:`USUAL_MAX_D`. A frame returned is the one
    :func:`decode_frame_raw` returns; for ``None`` call :func:`decode_frame_raw`, which
    checks the payload in full and raises the reason it is refused. The daemon calls this
    for every frame: one call, the limits' fields read once, no exception raised on the
    usual path.
    """
    if len(payload) > _FRAME_PAYLOAD:
        return None
    try:
        # _unpack's arguments (a ** of a dict of them would cost 0.2 us more).
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True,
                              max_str_len=_FRAME_STR, max_bin_len=_FRAME_BIN,
                              max_array_len=_FRAME_ARRAY, max_map_len=_FRAME_MAP,
                              max_ext_len=0, ext_hook=_reject_ext)
    except Exception:  # every error is decode_frame_raw's to report
        return None
    return _plain_frame(obj, payload[0], d)


def _plain_frame(obj: Any, head: int, d: int | None) -> RawFrame | None:
    """``obj`` as a frame if it has the form our encoders give one, else ``None``.

    The form: a fixmap (first byte ``head``) of seq, t, x and maybe src, no key twice;
    seq an int in 0..2**63-1, t a finite float, x a bin of ``4 d`` bytes of finite
    float32 (``d`` given, at most 64), src a str of printable characters (unpacked
    within its limit). Such an ``obj`` passes every check of :func:`_checked_frame`,
    which would return this same frame, so ``None`` only means "check it in full": every
    payload is refused for the same reason either way, and the common one is checked in
    half the time. (Many frames at once check their ``src`` only once per byte layout:
    :mod:`robot_daemon.wire.layout`.)
    """
    if type(obj) is not dict or head != 0x80 | len(obj) or d is None:
        return None  # not a map, not a fixmap of distinct keys, or no d to check x by
    seq, t, x, src = obj.get("seq"), obj.get("t"), obj.get("x"), obj.get("src")
    if len(obj) != (3 if src is None else 4):
        return None  # a key beyond the four, or a nil src
    masks = _F32_MASKS.get(d)
    if masks is None or not (type(seq) is int and 0 <= seq <= INT64_MAX
                             and type(t) is float and math.isfinite(t)
                             and type(x) is bytes and len(x) == 4 * d
                             and (src is None or (type(src) is str and src.isprintable()))):
        return None
    exponents, lowest, top = masks  # _f32_bytes_finite inline: this runs for every frame
    if ((int.from_bytes(x, "little") & exponents) + lowest) & top:
        return None  # a NaN or an infinity
    return _raw_frame((seq, t, x, src))


#: A RawFrame from a tuple, without the Python-level ``__new__`` of a NamedTuple.
_raw_frame: Final = functools.partial(tuple.__new__, RawFrame)


def _checked_frame(obj: Any, payload: bytes | bytearray | memoryview, d: int | None) -> RawFrame:
    """Every check of a frame, in order, on ``obj`` unpacked from ``payload``."""
    obj = _as_map(obj, payload, "frame")
    _check_keys(obj, FRAME_REQUIRED, FRAME_KEYS, "frame")
    return RawFrame(
        int_field(obj["seq"], "seq", "negative_seq"),
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
    obj = _unpack_map(payload, FRAME_LIMITS, "label")
    _check_keys(obj, LABEL_REQUIRED, LABEL_KEYS, "label")
    return Label(
        seq=int_field(obj["seq"], "seq", "negative_seq"),
        t=_time_field(obj["t"]),
        x=_x_field(obj["x"], d),
        y=_y_field(obj["y"], c),
        src=_src_field(obj),
    )


def decode_pred(payload: bytes | bytearray | memoryview) -> Pred:
    """Decode and validate a ``pred`` payload.

    Returns:
        The prediction: ``seq`` (n,) int64 and ``p`` (n, c) float32, both read-only;
        unknown keys land in ``extra`` (pred is open to extension, unlike frame).

    Raises:
        WireError: the payload is not a valid v1 pred (see ``reason``).
    """
    obj = _unpack_map(payload, PRED_LIMITS, "pred")
    missing = sorted(PRED_REQUIRED - obj.keys())
    if missing:
        fail("missing_key", f"pred lacks required key(s) {missing}")
    extra = {k: v for k, v in obj.items() if k not in PRED_REQUIRED}
    for key in extra:
        if type(key) is not str:
            fail("unknown_key", f"pred keys must be strings, got {key!r}")
    if "src" in extra:  # the frames' names, which reach terminals and logs from here
        pred_src_field(extra["src"])
    n = int_field(obj["n"], "n", "wrong_n")
    c = int_field(obj["c"], "c", "wrong_c")
    if not 1 <= n <= MAX_PRED_ROWS:
        fail("wrong_n", f"n must be in 1..{MAX_PRED_ROWS}, got {n}")
    if not 1 <= c <= MAX_C:
        fail("wrong_c", f"c must be in 1..{MAX_C}, got {c}")
    return Pred(
        tick=int_field(obj["tick"], "tick", "negative_seq"),
        t=_time_field(obj["t"]),
        seq=_pred_seq(obj["seq"], n),
        p=_pred_p(obj["p"], n, c),
        model=str_field(obj["model"], "model"),
        extra=extra,
    )


def _pred_seq(value: Any, n: int) -> NDArray[np.int64]:
    if type(value) is not list:
        fail("wrong_type", f"seq must be an array, got {type(value).__name__}")
    if len(value) != n:
        fail("wrong_n", f"seq has {len(value)} entries, n says {n}")
    for s in value:
        int_field(s, "seq entry", "negative_seq")
    seq = np.array(value, dtype=np.int64)
    _readonly(seq)
    return seq


def _pred_p(value: Any, n: int, c: int) -> NDArray[np.float32]:
    if type(value) is not bytes:
        fail("wrong_type", f"p must be bin, got {type(value).__name__}")
    if len(value) != 4 * n * c:
        fail("wrong_n", f"p has {len(value)} bytes, expected 4*n*c = {4 * n * c}")
    p = np.frombuffer(value, dtype=F32).reshape(n, c)
    check_probs(p)
    return p


def decode_status(payload: bytes | bytearray | memoryview) -> dict[str, Any]:
    """Decode a ``status`` payload to a dict with string keys.

    Only the shape is checked (a map with string keys, within the limits): the counters
    are for people and dashboards, and new ones may appear without a protocol change.

    Raises:
        WireError: the payload is not a msgpack map with string keys.
    """
    obj = _unpack_map(payload, STATUS_LIMITS, "status")
    for key in obj:
        if type(key) is not str:
            fail("unknown_key", f"status keys must be strings, got {key!r}")
    return obj


def sensor_time(payload: bytes | bytearray | memoryview) -> float | None:
    """The ``t`` of any v1 payload, in seconds, or ``None`` if there is none.

    Best effort, for tools that timestamp payloads they do not otherwise interpret (the
    bag recorder): never raises, whatever the bytes.
    """
    try:
        obj = _unpack(_byte_buffer(payload, "payload"), PRED_LIMITS, "payload")
    except WireError:
        return None
    if not isinstance(obj, dict):
        return None
    t = obj.get("t")
    if type(t) is not float and type(t) is not int:
        return None
    value = float(t)
    return value if math.isfinite(value) else None
