"""Wire protocol v1: round trips, every rejection reason, and a fuzzer at every decoder."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from robot_daemon import wire
from robot_daemon.errors import RobotDaemonError, WireError

D, C = 16, 8
X = np.linspace(-2.0, 3.0, D, dtype=np.float32)
Y = np.array([1, 0, 0, 1, 0, 0, 0, 1], dtype=np.uint8)
#: The src of issue 25: retitles the terminal that shows it and clears its screen.
HOSTILE_SRC = "\x1b]0;PWNED\x07\x1b[2J"
#: Names a publisher may send: printable characters (str.isprintable), space included.
NAMES = st.text(st.characters(codec="utf-8", exclude_categories=(
    "Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")) | st.just(" "), max_size=20)


def pack(obj: Any) -> bytes:
    """Pack exactly what a hand-written publisher would send."""
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def frame_map(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"seq": 7, "t": 12.5, "x": X.tobytes()}
    obj.update(changes)
    return {k: v for k, v in obj.items() if v is not DROP}


def label_map(**changes: Any) -> dict[str, Any]:
    obj = frame_map(y=Y.tobytes())
    obj.update(changes)
    return {k: v for k, v in obj.items() if v is not DROP}


def pred_map(**changes: Any) -> dict[str, Any]:
    p = np.full((2, C), 0.25, dtype=np.float32)
    obj: dict[str, Any] = {
        "tick": 3,
        "t": 100.0,
        "seq": [10, 11],
        "p": p.tobytes(),
        "n": 2,
        "c": C,
        "model": "m-1",
    }
    obj.update(changes)
    return {k: v for k, v in obj.items() if v is not DROP}


DROP = object()  # marks a key to delete in the *_map helpers


# ------------------------------------------------------------------------ round trips


def test_frame_round_trip() -> None:
    payload = wire.encode_frame(7, 12.5, X, src="robot-7")
    frame = wire.decode_frame(payload, d=D)
    assert (frame.seq, frame.t, frame.src) == (7, 12.5, "robot-7")
    assert frame.x.dtype == np.float32
    np.testing.assert_array_equal(frame.x, X)


def test_frame_without_src_and_from_float64_list() -> None:
    payload = wire.encode_frame(np.int64(0), np.float64(0.25), [1.0, 2.0, 3.0])
    frame = wire.decode_frame(payload)
    assert frame.src is None
    assert frame.seq == 0
    np.testing.assert_array_equal(frame.x, np.array([1, 2, 3], dtype=np.float32))


def test_frame_x_as_msgpack_array_of_numbers() -> None:
    frame = wire.decode_frame(pack(frame_map(x=[1, 2.5, -3])), d=3)
    np.testing.assert_array_equal(frame.x, np.array([1.0, 2.5, -3.0], dtype=np.float32))


@pytest.mark.parametrize("x", [X.tobytes(), X.tolist()], ids=["bin", "array"])
def test_raw_frame_carries_the_readings_as_float32_le_bytes(x: object) -> None:
    payload = pack(frame_map(x=x))
    raw, frame = wire.decode_frame_raw(payload, d=D), wire.decode_frame(payload, d=D)
    assert (raw.seq, raw.t, raw.src) == (frame.seq, frame.t, frame.src)
    assert raw.x == frame.x.astype("<f4").tobytes() == X.astype("<f4").tobytes()


@pytest.mark.parametrize("d", [3, 64, 65, 300])  # both sides of the struct/NumPy switch
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_reading_anywhere_is_refused(d: int, bad: float) -> None:
    x = np.ones(d, dtype="<f4")
    assert wire.decode_frame_raw(pack(frame_map(x=x.tobytes())), d=d).x == x.tobytes()
    for i in (0, d - 1):
        x_bad = x.copy()
        x_bad[i] = bad
        with pytest.raises(WireError) as info:
            wire.decode_frame_raw(pack(frame_map(x=x_bad.tobytes())), d=d)
        assert info.value.reason == "non_finite"


def test_integer_time_is_accepted_as_seconds() -> None:
    assert wire.decode_frame(pack(frame_map(t=12))).t == 12.0


def test_frame_is_little_endian_float32_bin() -> None:
    """The byte-level example of docs/protocol.md, checked byte for byte."""
    payload = wire.encode_frame(1, 0.5, [1.0, -2.0])
    expected = bytes.fromhex(
        "83"  # map of 3
        "a3736571" "01"  # "seq": 1
        "a174" "cb3fe0000000000000"  # "t": 0.5 as float64
        "a178" "c408" "0000803f" "000000c0"  # "x": bin 8, 1.0f and -2.0f little-endian
    )
    assert payload == expected


def test_decoded_arrays_are_read_only_and_independent_of_the_payload() -> None:
    buffer = bytearray(wire.encode_label(1, 2.0, X, Y))
    label = wire.decode_label(memoryview(buffer), d=D, c=C)
    buffer[:] = bytes(len(buffer))  # the receiver reuses its buffer
    np.testing.assert_array_equal(label.x, X)
    np.testing.assert_array_equal(label.y, Y)
    for array in (label.x, label.y):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 1


@pytest.mark.parametrize(
    "wrap",
    [bytes, bytearray, memoryview, lambda b: memoryview(b"\x00" + b)[1:],
     lambda b: memoryview(b).cast("c")],
    ids=["bytes", "bytearray", "memoryview", "sliced-view", "char-view"],
)
def test_decoders_take_any_byte_buffer(wrap: Callable[[bytes], Any]) -> None:
    payload = wire.encode_frame(5, 1.0, X)
    assert wire.decode_frame(wrap(payload)).seq == 5
    assert wire.sensor_time(wrap(payload)) == 1.0


def test_a_memoryview_of_floats_is_read_as_its_bytes() -> None:
    padded = wire.encode_frame(5, 1.0, X) + b"\x00" * 3  # 88 bytes: a whole number of floats
    view = memoryview(padded).cast("f")
    with pytest.raises(WireError, match="not valid msgpack") as info:
        wire.decode_frame(view)  # trailing bytes, read as bytes rather than floats
    assert info.value.reason == "bad_msgpack"


def test_label_round_trip_accepts_bool_y() -> None:
    payload = wire.encode_label(9, 1.0, X, Y.astype(bool), src="labeller")
    label = wire.decode_label(payload, d=D, c=C)
    assert (label.seq, label.t, label.src) == (9, 1.0, "labeller")
    assert label.y.dtype == np.uint8
    np.testing.assert_array_equal(label.y, Y)


def test_label_y_as_array_of_ints() -> None:
    label = wire.decode_label(pack(label_map(y=[0, 1, 1])), c=3)
    np.testing.assert_array_equal(label.y, [0, 1, 1])


def test_pred_round_trip_with_extra_keys() -> None:
    p = np.array([[0.0, 0.5, 1.0], [0.25, 0.75, 0.125]], dtype=np.float32)
    payload = wire.encode_pred(5, 99.5, np.array([3, 4]), p, "v2", src="r7", t_frames=[1.0, 2.0])
    pred = wire.decode_pred(payload)
    assert (pred.tick, pred.t, pred.model) == (5, 99.5, "v2")
    assert pred.extra == {"src": "r7", "t_frames": [1.0, 2.0]}
    assert pred.seq.dtype == np.int64
    assert pred.p.dtype == np.float32
    np.testing.assert_array_equal(pred.seq, [3, 4])
    np.testing.assert_array_equal(pred.p, p)


def test_status_round_trip() -> None:
    status = {"frames_in": 10, "frames_rejected": {"wrong_d": 2}, "latency_ms_p99": 1.5}
    assert wire.decode_status(wire.encode_status(status)) == status


def test_sensor_time_of_every_kind() -> None:
    assert wire.sensor_time(wire.encode_frame(1, 3.5, X)) == 3.5
    assert wire.sensor_time(wire.encode_label(1, 4.5, X, Y)) == 4.5
    assert wire.sensor_time(wire.encode_pred(1, 5.5, [1], np.zeros((1, 2)), "m")) == 5.5
    assert wire.sensor_time(wire.encode_status({"t": 6.5})) == 6.5


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xc1", pack([1.0]), pack({"t": "soon"}), pack({"t": True}), pack({"seq": 1}),
     pack({"t": math.nan}), "not bytes"],
)
def test_sensor_time_is_none_without_a_usable_t(payload: Any) -> None:
    assert wire.sensor_time(payload) is None


@given(
    seq=st.integers(0, 2**63 - 1),
    t=st.floats(allow_nan=False, allow_infinity=False),
    x=hnp.arrays(
        np.float32,
        st.integers(1, 64),
        elements=st.floats(allow_nan=False, allow_infinity=False, width=32),
    ),
    y=hnp.arrays(np.uint8, st.integers(1, 32), elements=st.integers(0, 1)),
    src=st.none() | NAMES,
)
@settings(max_examples=200, deadline=None)
def test_label_round_trip_property(
    seq: int, t: float, x: np.ndarray, y: np.ndarray, src: str | None
) -> None:
    label = wire.decode_label(wire.encode_label(seq, t, x, y, src=src))
    assert (label.seq, label.t, label.src) == (seq, t, src)
    np.testing.assert_array_equal(label.x, x)
    np.testing.assert_array_equal(label.y, y)


# ------------------------------------------------------------------------- rejections

Decoder = Callable[[bytes], object]

REJECTIONS: list[tuple[str, Decoder, bytes, str]] = [
    # (reason, decoder, payload, message pattern)
    ("bad_msgpack", wire.decode_frame, b"\xc1", "not valid msgpack"),
    ("bad_msgpack", wire.decode_frame, pack(frame_map())[:-3], "not valid msgpack"),
    ("bad_msgpack", wire.decode_frame, pack(frame_map()) + b"\x00", "not valid msgpack"),
    ("bad_msgpack", wire.decode_status, b"\x81\xa1a\xd4\x05\x00", "not valid msgpack"),
    ("bad_msgpack", wire.decode_status, b"\x81\xa1a\xc7\x00\x05", "extension type 5"),
    ("bad_msgpack", wire.decode_frame, b"\x81\xa2\xff\xfe\x01", "utf-8"),
    ("bad_msgpack", wire.decode_frame, b"\x81\x01\x02", "map key"),
    ("oversized", wire.decode_frame, b"\x80" * (wire.MAX_FRAME_BYTES + 1), "exceeds 65536"),
    ("oversized", wire.decode_frame, pack(frame_map(src="r" * 300)), "max_str_len"),
    ("oversized", wire.decode_frame, pack(frame_map(x=[0.0] * 5000)), "max_array_len"),
    ("oversized", wire.decode_frame, pack(frame_map(x=bytes(4 * 4097))), "max_bin_len"),
    ("not_a_map", wire.decode_frame, pack([7, 12.5]), "must be a msgpack map, got list"),
    ("not_a_map", wire.decode_status, pack(3), "got int"),
    ("missing_key", wire.decode_frame, pack(frame_map(seq=DROP)), r"lacks .*\['seq'\]"),
    ("missing_key", wire.decode_label, pack(frame_map()), r"lacks .*\['y'\]"),
    ("missing_key", wire.decode_pred, pack(pred_map(model=DROP)), r"\['model'\]"),
    ("unknown_key", wire.decode_frame, pack(frame_map(sq=1)), "did you mean 'seq'"),
    ("unknown_key", wire.decode_frame, pack(label_map()), "has key 'y'"),
    ("unknown_key", wire.decode_frame, pack({**frame_map(), b"x": b""}), "has key b'x'"),
    ("unknown_key", wire.decode_pred, pack({**pred_map(), b"k": 1}), "must be strings"),
    ("unknown_key", wire.decode_status, pack({b"k": 1}), "must be strings"),
    ("duplicate_key", wire.decode_frame, b"\x84" + pack(frame_map())[1:] + b"\xa1t\x01",
     "repeats a key"),
    ("wrong_type", wire.decode_frame, pack(frame_map(seq=True)), "seq must be an integer"),
    ("wrong_type", wire.decode_frame, pack(frame_map(seq=7.0)), "seq must be an integer"),
    ("wrong_type", wire.decode_frame, pack(frame_map(t="12.5")), "t must be a float"),
    ("wrong_type", wire.decode_frame, pack(frame_map(t=False)), "t must be a float"),
    ("wrong_type", wire.decode_frame, pack(frame_map(x="1,2")), "x must be bin or an array"),
    ("wrong_type", wire.decode_frame, pack(frame_map(x=[1.0, True])), "only numbers"),
    ("wrong_type", wire.decode_frame, pack(frame_map(x=[1.0, None])), "only numbers"),
    ("wrong_type", wire.decode_frame, pack(frame_map(src=5)), "src must be a string"),
    ("wrong_type", wire.decode_label, pack(label_map(y=[1, 0.0])), "y must hold only int"),
    ("wrong_type", wire.decode_label, pack(label_map(y=[True])), "y must hold only int"),
    ("wrong_type", wire.decode_pred, pack(pred_map(p=[0.5] * 16)), "p must be bin"),
    ("wrong_type", wire.decode_pred, pack(pred_map(seq=(10, 11.0))), "must be an integer"),
    ("wrong_type", wire.decode_pred, pack(pred_map(model=1)), "model must be a string"),
    ("wrong_d", wire.decode_frame, pack(frame_map(x=X.tobytes()[:-1])), "not a whole"),
    ("wrong_d", wire.decode_frame, pack(frame_map(x=b"")), r"expected 1\.\.4096"),
    ("wrong_d", wire.decode_frame, pack(frame_map(x=[])), "0 features"),
    ("wrong_c", wire.decode_label, pack(label_map(y=b"")), "0 classes"),
    ("wrong_c", wire.decode_pred, pack(pred_map(c=0)), r"c must be in 1\.\.1024"),
    ("wrong_n", wire.decode_pred, pack(pred_map(n=3)), "seq has 2 entries, n says 3"),
    ("wrong_n", wire.decode_pred, pack(pred_map(n=0)), r"n must be in 1\.\."),
    ("wrong_n", wire.decode_pred, pack(pred_map(p=bytes(4))), "expected 4\\*n\\*c = 64"),
    ("non_finite", wire.decode_frame, pack(frame_map(t=math.inf)), "t must be finite"),
    ("non_finite", wire.decode_frame,
     pack(frame_map(x=np.array([1, np.nan], np.float32).tobytes())), "NaN or infinity"),
    ("non_finite", wire.decode_frame, pack(frame_map(x=[1.0, -math.inf])), "finite"),
    ("non_finite", wire.decode_frame, pack(frame_map(x=[1e300])), "finite float32"),
    ("non_finite", wire.decode_pred,
     pack(pred_map(n=1, seq=[1], c=1, p=np.array([np.nan], np.float32).tobytes())), "NaN"),
    ("bad_label_value", wire.decode_label, pack(label_map(y=b"\x00\x02")), "only 0 or 1"),
    ("bad_label_value", wire.decode_label, pack(label_map(y=[0, -1])), "only 0 or 1"),
    ("negative_seq", wire.decode_frame, pack(frame_map(seq=-1)), "seq must be >= 0"),
    ("negative_seq", wire.decode_pred, pack(pred_map(seq=[1, -2])), "seq entry must be >= 0"),
    ("negative_seq", wire.decode_pred, pack(pred_map(tick=-1)), "tick must be >= 0"),
    ("out_of_range", wire.decode_frame, pack(frame_map(seq=2**64 - 1)), "fit in int64"),
    ("out_of_range", wire.decode_pred,
     pack(pred_map(n=1, seq=[1], c=1, p=np.array([1.5], np.float32).tobytes())), r"in \[0, 1\]"),
    ("bad_src", wire.decode_frame, pack(frame_map(src=HOSTILE_SRC)),
     r"src '\\x1b\]0;PWNED\\x07\\x1b\[2J' holds a character that is not printable"),
    ("bad_src", wire.decode_label, pack(label_map(src="lidar\u202efront")), r"\\u202e"),
    ("bad_src", wire.decode_pred, pack(pred_map(src=[None, "a\u2028b"])), r"\\u2028"),
    ("bad_src", wire.decode_pred, pack(pred_map(src="radar\r")), r"\\r"),
]


@pytest.mark.parametrize(
    ("reason", "decode", "payload", "match"),
    REJECTIONS,
    ids=[f"{r[0]}-{i}" for i, r in enumerate(REJECTIONS)],
)
def test_decoder_rejects_with_reason(
    reason: str, decode: Decoder, payload: bytes, match: str
) -> None:
    with pytest.raises(WireError, match=match) as info:
        decode(payload)
    assert info.value.reason == reason
    assert str(info.value).startswith(f"{reason}: ")


def test_every_reason_is_exercised() -> None:
    exercised = {r[0] for r in REJECTIONS} | {"reserved_key"}  # reserved_key: encoder only
    assert exercised == set(wire.REASONS)


def test_expected_shapes_are_enforced() -> None:
    with pytest.raises(WireError, match="expected d=8") as info:
        wire.decode_frame(wire.encode_frame(1, 0.0, X), d=8)
    assert info.value.reason == "wrong_d"
    with pytest.raises(WireError, match="expected c=4") as info:
        wire.decode_label(wire.encode_label(1, 0.0, X, Y), c=4)
    assert info.value.reason == "wrong_c"


def test_wire_error_is_a_robot_daemon_error() -> None:
    with pytest.raises(RobotDaemonError):
        wire.decode_frame(b"")


@pytest.mark.parametrize(
    ("reason", "encode", "match"),
    [
        ("wrong_type", lambda: wire.encode_frame(True, 0.0, X), "got bool"),
        ("wrong_type", lambda: wire.encode_frame(1.0, 0.0, X), "got float"),  # type: ignore[arg-type]
        ("wrong_type", lambda: wire.encode_frame(1, "now", X), "t must be"),  # type: ignore[arg-type]
        ("wrong_type", lambda: wire.encode_frame(1, 0.0, X, src=3), "src"),  # type: ignore[arg-type]
        ("negative_seq", lambda: wire.encode_frame(-1, 0.0, X), ">= 0"),
        ("out_of_range", lambda: wire.encode_frame(2**63, 0.0, X), "int64"),
        ("non_finite", lambda: wire.encode_frame(1, math.nan, X), "t must be finite"),
        ("non_finite", lambda: wire.encode_frame(1, 0.0, [1.0, math.inf]), "NaN or inf"),
        ("non_finite", lambda: wire.encode_frame(1, 0.0, [1e300]), "NaN or inf"),
        ("wrong_d", lambda: wire.encode_frame(1, 0.0, np.zeros((2, 2))), "shape"),
        ("wrong_d", lambda: wire.encode_frame(1, 0.0, []), "shape"),
        ("oversized", lambda: wire.encode_frame(1, 0.0, X, src="s" * 300), "longer"),
        ("bad_src", lambda: wire.encode_frame(1, 0.0, X, src=HOSTILE_SRC), "not printable"),
        ("bad_src", lambda: wire.encode_label(1, 0.0, X, Y, src="a\tb"), "not printable"),
        ("bad_src", lambda: wire.encode_pred(1, 0.0, [1], np.zeros((1, 2)), "m",
                                             src=[HOSTILE_SRC]), "not printable"),
        ("bad_src", lambda: wire.pred_rows([1], np.zeros((1, 2), np.float32), [0.0],
                                           ["\x9b2J"]), "not printable"),
        ("bad_label_value", lambda: wire.encode_label(1, 0.0, X, [0, 2]), "0 or 1"),
        ("wrong_type", lambda: wire.encode_label(1, 0.0, X, [0.0, 1.0]), "integers"),
        ("wrong_c", lambda: wire.encode_label(1, 0.0, X, [[0, 1]]), "shape"),
        ("wrong_n", lambda: wire.encode_pred(1, 0.0, [], np.zeros((0, 2)), "m"), "1 <= n"),
        ("wrong_n", lambda: wire.encode_pred(1, 0.0, [1, 2], np.zeros((1, 2)), "m"), "shape"),
        ("negative_seq", lambda: wire.encode_pred(1, 0.0, [-1], np.zeros((1, 2)), "m"), ">="),
        ("out_of_range", lambda: wire.encode_pred(1, 0.0, [1], np.ones((1, 2)) * 2, "m"), r"\["),
        ("reserved_key", lambda: wire.encode_pred(1, 0.0, [1], np.zeros((1, 2)), "m", n=1),
         "shadow"),
        ("wrong_type", lambda: wire.encode_pred(1, 0.0, [1], np.zeros((1, 2)), "m", o=object()),
         "cannot be packed"),
        ("wrong_type", lambda: wire.encode_status({1: 2}), "keys must be strings"),  # type: ignore[dict-item]
    ],
)
def test_encoder_refuses_what_the_decoder_would_reject(
    reason: str, encode: Callable[[], bytes], match: str
) -> None:
    with pytest.raises(WireError, match=match) as info:
        encode()
    assert info.value.reason == reason


# ---------------------------------------------------------------- fuzzing the decoders


def _decode_everything(payload: bytes) -> None:
    """Every decoder either returns or raises WireError with a known reason."""
    decoders: list[Callable[[bytes], object]] = [
        wire.decode_frame,
        lambda b: wire.decode_frame(b, d=D),
        wire.decode_label,
        lambda b: wire.decode_label(b, d=D, c=C),
        wire.decode_pred,
        wire.decode_status,
    ]
    reasons = []
    for decode in decoders:
        try:
            decode(payload)
        except WireError as exc:
            reasons.append(exc.reason)
    assert set(reasons) <= set(wire.REASONS)
    t = wire.sensor_time(payload)
    assert t is None or math.isfinite(t)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=80),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=5) | st.binary(max_size=3), inner, max_size=5),
    max_leaves=10,
)


def _valid_maps() -> st.SearchStrategy[dict[Any, Any]]:
    return st.sampled_from(
        [
            frame_map(),
            frame_map(src="robot"),
            frame_map(x=X.tolist()),
            label_map(),
            label_map(y=Y.tolist(), src="l"),
            pred_map(),
            pred_map(src="r", t_frames=[1.0, 2.0]),
            {"t": 1.0, "frames_in": 3, "frames_rejected": {"wrong_d": 1}},
        ]
    )


@st.composite
def mutated_maps(draw: st.DrawFn) -> bytes:
    """A valid message with keys deleted, renamed, added or values swapped for others."""
    obj = dict(draw(_valid_maps()))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["delete", "rename", "swap", "add", "perturb"]))
        keys = list(obj)
        if action == "add" or not keys:
            obj[draw(st.text(max_size=5) | st.binary(max_size=2))] = draw(msgpack_values)
            continue
        key = draw(st.sampled_from(keys))
        if action == "delete":
            del obj[key]
        elif action == "rename":
            obj[draw(st.text(max_size=5))] = obj.pop(key)
        elif action == "swap":
            obj[key] = draw(msgpack_values)
        else:  # same type, hostile value: NaN/inf, negative, wrong length, bad label
            obj[key] = draw(_perturbed(obj[key]))
    return pack(obj)


def _perturbed(value: Any) -> st.SearchStrategy[Any]:
    if type(value) is int:
        return st.integers(-(2**63), 2**64 - 1)
    if type(value) is float:
        return st.floats()
    if type(value) is bytes:
        return st.binary(max_size=2 * len(value) + 4)
    if type(value) is list:
        return st.lists(st.integers(-2, 3) | st.floats(), max_size=2 * len(value) + 2)
    return msgpack_values


@st.composite
def corrupted_bytes(draw: st.DrawFn) -> bytes:
    """A valid payload with bits flipped, bytes inserted or cut off."""
    data = bytearray(pack(draw(_valid_maps())))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "truncate", "insert", "set"]))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif action == "truncate":
            del data[i:]
        elif action == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif data:
            data[i] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xC0, 0xC1, 0xC2, 0xCB, 0xDD,
                                           0xDE, 0xDF, 0xFF]))
    return bytes(data)


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(payload=st.binary(max_size=200))
def test_random_bytes_raise_only_wire_error(payload: bytes) -> None:
    _decode_everything(payload)


@FUZZ
@given(payload=corrupted_bytes())
def test_corrupted_messages_raise_only_wire_error(payload: bytes) -> None:
    _decode_everything(payload)


@FUZZ
@given(payload=mutated_maps())
def test_mutated_messages_raise_only_wire_error(payload: bytes) -> None:
    _decode_everything(payload)


@FUZZ
@given(value=msgpack_values)
def test_any_msgpack_value_raises_only_wire_error(value: Any) -> None:
    _decode_everything(pack(value))
