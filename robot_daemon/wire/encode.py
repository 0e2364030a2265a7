"""Encoders: they check their inputs against the decoders' rules, so that nothing we
publish is rejected by our own decoder.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
from numpy.typing import ArrayLike, NDArray

from robot_daemon.errors import WireError
from robot_daemon.wire.checks import (
    all_finite,
    check_probs,
    fail,
    int_field,
    pred_src_field,
    printable_src,
    str_field,
)
from robot_daemon.wire.messages import (
    F32,
    MAX_C,
    MAX_D,
    MAX_PRED_ROWS,
    MAX_SRC_LEN,
    MAX_STATUS_BYTES,
    PRED_REQUIRED,
    U8,
)


def _encode_seq(seq: Any, name: str = "seq") -> int:
    if type(seq) is int:  # the common case, without the generic checks below
        return int_field(seq, name, "negative_seq")
    if isinstance(seq, bool | np.bool_):
        fail("wrong_type", f"{name} must be an integer, got bool")
    try:
        value = operator.index(seq)  # int and NumPy integers; never a float
    except TypeError:
        fail("wrong_type", f"{name} must be an integer, got {type(seq).__name__}")
    return int_field(value, name, "negative_seq")


def _encode_time(t: Any) -> float:
    if type(t) is float and math.isfinite(t):  # the common case
        return t
    if isinstance(t, bool | np.bool_) or not isinstance(t, int | float | np.integer | np.floating):
        fail("wrong_type", f"t must be a number of seconds, got {type(t).__name__}")
    value = float(t)
    if not math.isfinite(value):
        fail("non_finite", f"t must be finite, got {value}")
    return value


def _encode_src(src: Any) -> str:
    if not isinstance(src, str):
        fail("wrong_type", f"src must be a string, got {type(src).__name__}")
    if len(src.encode()) > MAX_SRC_LEN:
        fail("oversized", f"src is longer than {MAX_SRC_LEN} bytes")
    return printable_src(src)


def _encode_x(x: ArrayLike) -> bytes:
    arr = x if isinstance(x, np.ndarray) and x.dtype == F32 else _to_float32(x, "x")
    if arr.ndim != 1 or not 1 <= arr.shape[0] <= MAX_D:
        fail("wrong_d", f"x must have shape (d,) with 1 <= d <= {MAX_D}, got {arr.shape}")
    if not all_finite(arr):
        fail("non_finite", "x holds NaN or infinity (send a dropout as a finite value)")
    return arr.tobytes()


def _to_float32(a: ArrayLike, name: str) -> NDArray[np.float32]:
    if type(a) is np.ndarray and a.dtype == F32:
        return a  # the daemon's case: no cast, so no error state to set up
    try:
        # A float64 above float32's range becomes inf, which the finiteness check rejects;
        # the overflow warning of the cast would only be noise.
        with np.errstate(over="ignore", invalid="ignore"):
            return np.asarray(a, dtype=F32)
    except (TypeError, ValueError):
        fail("wrong_type", f"{name} must be an array of numbers")


def _encode_y(y: ArrayLike) -> bytes:
    arr = np.asarray(y)
    if arr.dtype.kind not in "biu":
        fail("wrong_type", f"y must hold integers 0 or 1, got dtype {arr.dtype}")
    if arr.ndim != 1 or not 1 <= arr.shape[0] <= MAX_C:
        fail("wrong_c", f"y must have shape (c,) with 1 <= c <= {MAX_C}, got {arr.shape}")
    if arr.dtype != U8 and arr.dtype != np.bool_ and ((arr != 0) & (arr != 1)).any():
        fail("bad_label_value", "y must hold only 0 or 1")
    raw = arr.astype(U8, copy=False).tobytes()
    if max(raw) > 1:  # a uint8 y, checked on its bytes (cheaper than NumPy for c = 8)
        fail("bad_label_value", "y must hold only 0 or 1")
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
        src: optional publisher name (at most MAX_SRC_LEN UTF-8 bytes, printable).

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
    clash = sorted(PRED_REQUIRED & extra.keys())
    if clash:
        fail("reserved_key", f"extra keys {clash} would shadow pred's own keys")
    if "src" in extra:
        pred_src_field(extra["src"])
    seq_arr = np.asarray(seq)
    n = seq_arr.shape[0] if seq_arr.ndim == 1 else -1
    if not 1 <= n <= MAX_PRED_ROWS:  # before the dtype: np.asarray([]) is float64
        fail("wrong_n", f"seq must have shape (n,) with 1 <= n <= {MAX_PRED_ROWS}")
    if seq_arr.dtype.kind not in "iu":
        fail("wrong_type", f"seq must hold integers, got dtype {seq_arr.dtype}")
    if seq_arr.min() < 0:
        fail("negative_seq", "seq values must be >= 0")
    probs = _to_float32(p, "p")
    if probs.ndim != 2 or probs.shape[0] != n:
        fail("wrong_n", f"p must have shape (n={n}, c), got {probs.shape}")
    check_probs(probs)
    obj: dict[str, Any] = {
        "tick": _encode_seq(tick, "tick"),
        "t": _encode_time(t),
        "seq": seq_arr.tolist(),
        "p": np.ascontiguousarray(probs).tobytes(),
        "n": n,
        "c": probs.shape[1],
        "model": str_field(model, "model"),
        **extra,
    }
    return _pack(obj, "pred")


@dataclass(frozen=True)
class PredRows:
    """Some rows of the daemon's ``pred``, packed ahead (:func:`pred_rows`).

    The daemon's pred is :func:`encode_pred` with the extras ``t_frame`` and ``src``;
    packing its rows as they become known, and only the message around them at the
    tick (:func:`encode_pred_rows`), leaves the tick little to do.

    n, c : rows and classes. seq, t_frame, src : the msgpack items of those lists, with
    no array header. p : the rows' probabilities, float32 little-endian row-major bytes.
    """

    n: int
    c: int
    seq: bytes
    t_frame: bytes
    src: bytes
    p: bytes


_KEYS = {key: msgpack.packb(key) for key in ("tick", "t", "seq", "p", "n", "c", "model",
                                               "t_frame", "src")}


def _packer() -> msgpack.Packer:
    # One per call, as msgpack.packb makes one: a Packer holds a buffer, so a shared one
    # would mix the bytes of two threads.
    return msgpack.Packer(use_bin_type=True)


def _items(packer: msgpack.Packer, values: list[Any]) -> bytes:
    """The msgpack items of ``values``: the packed list without its array header."""
    packed: bytes = packer.pack(values)
    return packed[len(packer.pack_array_header(len(values))):]


def pred_rows(
    seq: list[int], p: NDArray[np.float32], t_frame: list[float], src: list[str | None]
) -> PredRows:
    """Pack rows of a ``pred`` (n >= 1, checked as :func:`encode_pred` checks them).

    seq : n ints >= 0. p : (n, c) float32, finite, in [0, 1]. t_frame : n sensor times.
    src : n sources (a str of printable characters, or None).

    Raises:
        WireError: as :func:`encode_pred` for the same rows (``wrong_n``, ``wrong_type``,
            ``negative_seq``, ``wrong_c``, ``non_finite``, ``out_of_range``, ``bad_src``).
    """
    n = len(seq)
    if not 1 <= n <= MAX_PRED_ROWS or len(t_frame) != n or len(src) != n:
        fail("wrong_n", f"pred rows need 1 <= n <= {MAX_PRED_ROWS} of each list")
    if not all(type(value) is int for value in seq):
        fail("wrong_type", "seq must hold integers")
    if min(seq) < 0:
        fail("negative_seq", "seq values must be >= 0")
    if type(p) is not np.ndarray or p.dtype != F32 or p.ndim != 2 or p.shape[0] != n:
        fail("wrong_n", f"p must be float32 of shape (n={n}, c)")
    check_probs(p)
    pred_src_field(src)
    packer = _packer()
    return PredRows(n, p.shape[1], _items(packer, seq), _items(packer, t_frame),
                    _items(packer, src), np.ascontiguousarray(p).tobytes())


def encode_pred_rows(tick: int, t: float, model: str, parts: Sequence[PredRows]) -> bytes:
    """The ``pred`` of ``parts``' rows in order: byte for byte
    ``encode_pred(tick, t, seq, p, model, t_frame=t_frame, src=src)`` of the same rows.

    Raises:
        WireError: no rows, too many, the parts' ``c`` differ, or as :func:`encode_pred`
            for ``tick``, ``t`` and ``model``.
    """
    n = sum(part.n for part in parts)
    if not 1 <= n <= MAX_PRED_ROWS:
        fail("wrong_n", f"a pred has 1..{MAX_PRED_ROWS} rows, got {n}")
    c = parts[0].c
    if any(part.c != c for part in parts):
        fail("wrong_c", "the parts of a pred have different numbers of classes")
    packer = _packer()
    header, pack = packer.pack_array_header(n), packer.pack
    return b"".join([
        packer.pack_map_header(9),
        _KEYS["tick"], pack(_encode_seq(tick, "tick")),
        _KEYS["t"], pack(_encode_time(t)),
        _KEYS["seq"], header, *[part.seq for part in parts],
        _KEYS["p"], pack(b"".join([part.p for part in parts])),
        _KEYS["n"], pack(n), _KEYS["c"], pack(c),
        _KEYS["model"], pack(str_field(model, "model")),
        _KEYS["t_frame"], header, *[part.t_frame for part in parts],
        _KEYS["src"], header, *[part.src for part in parts],
    ])


def encode_status(status: Mapping[str, Any]) -> bytes:
    """Encode a ``status`` payload: a map of counters and gauges (``docs/protocol.md``).

    Raises:
        WireError: ``status`` has non-string keys or values msgpack cannot pack.
    """
    if not all(type(k) is str for k in status):
        fail("wrong_type", "status keys must be strings")
    payload = _pack(status, "status")
    if len(payload) > MAX_STATUS_BYTES:
        fail("oversized", f"status of {len(payload)} bytes exceeds {MAX_STATUS_BYTES}")
    return payload
