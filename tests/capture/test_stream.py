"""The capture's ``stream`` records: every served frame's statistics, for the normalisation
``train --init --renormalise`` fits on captures."""

from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np
import pytest

from robot_daemon.capture import stream
from robot_daemon.errors import WireError
from robot_daemon.moments import Moments

D = 16


def _rows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (5.0 + 2.0 * rng.standard_normal((n, D))).astype(np.float32)


def test_records_of_parts_add_up_to_the_moments_of_every_row() -> None:
    X = _rows(300)
    parts = [stream.served(X[a:b]) for a, b in ((0, 7), (7, 150), (150, 300))]
    payloads = [stream.encode(stream.StreamRecord(m, 0.0, 1.0, "m")) for m in parts]
    merged, refused = stream.total(payloads, D)
    whole = Moments.of(X)
    assert (merged.n, refused) == (300, 0)
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(merged.m2, whole.m2, rtol=1e-9)
    np.testing.assert_array_equal(merged.low, whole.low)


def test_a_tick_with_a_non_finite_reading_counts_only_its_finite_rows() -> None:
    X = _rows(5)
    X[2, 3] = np.nan
    assert stream.served(X).n == 4


def _payload(**changes: object) -> bytes:
    obj: dict[str, object] = {"n": 3, "mean": [0.0] * D, "m2": [1.0] * D, "min": [-1.0] * D,
                              "max": [1.0] * D, "t0": 0.0, "t1": 1.0, "model": "m"}
    obj.update(changes)
    return msgpack.packb(obj, use_bin_type=True)


@pytest.mark.parametrize("changes", [
    {"n": 0}, {"n": True}, {"n": "3"}, {"n": 2**64 - 1}, {"mean": [0.0] * (D - 1)},
    {"m2": [-1.0] * D}, {"max": [float("inf")] * D}, {"min": ["x"] * D}, {"mean": []},
    {"m2": None}, {"mean": [True] * D}, {"mean": ["1"] * D},
    {"mean": [2.0] * D},  # outside min-max
    {"min": [1.0] * D, "max": [-1.0] * D},  # min above max
    {"m2": [1e300] * D},  # a spread of 1e150 between -1 and 1: a model of all-zero inputs
])
def test_a_record_no_stream_could_have_is_refused(changes: dict[str, object]) -> None:
    with pytest.raises(WireError, match="stream record"):
        stream.decode(_payload(**changes), D)
    merged, refused = stream.total([_payload(), _payload(**changes), b"\xc1"], D)
    assert (merged.n, refused) == (3, 2)  # the good one counted, the others refused


def test_records_beyond_what_frames_carry_are_refused_and_the_widest_merge_finitely() -> None:
    beyond = _payload(mean=[1e300] * D, min=[-1e300] * D, max=[1e300] * D)  # frames: float32
    wide = [-3e38] * D, [3e38] * D  # as wide as float32 goes: squared deviations near 1e77
    huge = _payload(n=10**13, mean=[0.0] * D, m2=[2e89] * D, min=wide[0], max=wide[1])
    far = _payload(n=10**13, mean=[3e38] * D, m2=[0.0] * D, min=wide[1], max=wide[1])
    merged, refused = stream.total([beyond, huge, far, _payload()], D)
    assert refused == 1  # beyond float32; the extreme but possible ones merge finitely
    assert merged.n == 2 * 10**13 + 3
    assert np.isfinite(merged.mean).all()
    assert np.isfinite(merged.m2).all()


def test_the_capture_records_every_frame_served_not_only_the_captured(tmp_path: Path) -> None:
    from robot_daemon.bag import BagReader

    from ..serve.test_capturing import SERVING, _batch, _capturer
    from ..serve.test_daemon import _readings

    capturer = _capturer(tmp_path, margin=0.0, triggers=frozenset({"uncertain"}))
    X = _readings(60)
    for tick in range(3):
        rows = X[20 * tick: 20 * (tick + 1)]
        capturer.tick(tick, _batch(rows), SERVING.predict_proba(rows), SERVING, "m-1", None)
    capturer.close()  # the statistics since the last record, written at the end
    assert capturer.status()["capture_frames"] == 0  # no trigger fired at a margin of 0
    (bag,) = tmp_path.glob("capture-*.mcap")
    with BagReader(bag) as reader:
        assert reader.meta.extra["source"] == stream.CAPTURE_SOURCE
        merged, _ = stream.total(m.payload for m in reader.messages([stream.TOPIC]))
    assert merged.n == 60
    np.testing.assert_allclose(merged.mean, X.astype(np.float64).mean(axis=0), rtol=1e-9)


def test_a_bag_that_cannot_be_read_is_left_to_train_to_report(tmp_path: Path) -> None:
    broken = tmp_path / "capture-20261208T000000Z-0001.mcap"
    broken.write_bytes(b"\x89MCAP0\r\n" + b"\0" * 100)  # cut right after the magic
    served = stream.of_bags([broken, tmp_path / "gone.mcap"], D)
    assert (served.captures, served.others, served.moments.n) == (0, 2, 0)


def test_a_cut_capture_bag_is_read_without_its_damage_said_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    from robot_daemon.bag import BagMeta, BagWriter

    whole = tmp_path / "whole.mcap"
    with BagWriter(whole, meta=BagMeta(d=D, c=2, extra={"source": stream.CAPTURE_SOURCE}),
                   chunk_size=256) as bag:
        for i in range(20):
            record = stream.StreamRecord(stream.served(_rows(10, seed=i)), 0.0, 1.0, "m")
            bag.write(stream.TOPIC, stream.encode(record), 1_000 + i)
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # as a kill -9 leaves
    served = stream.of_bags([cut], D)
    assert served.captures == 1
    assert 0 < served.moments.n < 200
    assert "damaged" not in caplog.text  # train says it, when it reads the labels
