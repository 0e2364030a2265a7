"""A tick's work in two parts (serve.early): the early rows and the late ones make the
pred one pass over the whole batch would make, with one set of weights, the newest
max_batch frames and every check."""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

import numpy as np
import numpy.typing as npt
import pytest

from robot_daemon import model as model_file
from robot_daemon import wire
from robot_daemon.model import Model
from robot_daemon.nn import MLP
from robot_daemon.serve import early
from robot_daemon.serve.batch import Batch, PendingFrames
from robot_daemon.serve.report import Counters

D, C = 16, 8
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model() -> Model:
    return model_file.load(ROOT / "models" / "default.npz")


def _pending(seqs: range, max_batch: int = 64) -> PendingFrames:
    return _add(PendingFrames(max_batch, D), seqs)


def _add(pending: PendingFrames, seqs: range) -> PendingFrames:
    """Frames ``seqs`` into ``pending``; a frame's readings depend on its seq only."""
    for seq in seqs:
        x = np.random.default_rng(seq).standard_normal(D).astype("<f4").tobytes()
        pending.add(wire.RawFrame(seq, seq / 100, x, f"cam{seq % 2}"), 1000 + seq)
    return pending


def _whole(model: Model, batch: Batch, version: str = "v1") -> wire.Pred:
    """The pred of one pass over ``batch``, the way a tick without an early pass makes it."""
    payload = wire.encode_pred(9, 1.5, batch.seq, early.forward(model, batch.X), version,
                               t_frame=batch.t, src=batch.src)
    return wire.decode_pred(payload)


def _same(a: wire.Pred, b: wire.Pred) -> None:
    assert a.seq.tolist() == b.seq.tolist()
    assert a.extra == b.extra
    assert a.model == b.model
    # Two passes over parts of a batch against one over all of it: BLAS may round the rows
    # differently, by an ulp of float64, which float32 almost always hides.
    np.testing.assert_allclose(a.p, b.p, rtol=0, atol=1e-6)


def test_early_and_late_rows_make_the_pred_of_one_pass(model: Model) -> None:
    whole = _pending(range(23)).take()
    pending = _pending(range(20))
    first = early.start(model, "v1", pending.take())
    late = _add(pending, range(20, 23)).take()
    payload = early.fast_pred(first, late, 0, model, "v1", 9, 1.5)
    assert payload is not None
    _same(wire.decode_pred(payload), _whole(model, whole))


def test_early_catch_up_and_late_rows_make_the_pred_of_one_pass(model: Model) -> None:
    """Three parts (the early pass, the catch-up, the tick's) make one pass's pred."""
    whole = _pending(range(24)).take()
    pending = _pending(range(20))
    first = early.start(model, "v1", pending.take())
    caught_up = early.catch_up(first, model, "v1", _add(pending, range(20, 22)).take())
    assert caught_up.batch.seq == list(range(22))
    assert caught_up.rows is not None
    assert len(caught_up.rows) == 2
    late = _add(pending, range(22, 24)).take()
    payload = early.fast_pred(caught_up, late, 0, model, "v1", 9, 1.5)
    assert payload is not None
    _same(wire.decode_pred(payload), _whole(model, whole))
    nothing_late = early.fast_pred(caught_up, _pending(range(0)).take(), 0, model, "v1", 9, 1.5)
    assert nothing_late is not None
    _same(wire.decode_pred(nothing_late), _whole(model, _pending(range(22)).take()))


def test_a_catch_up_after_other_weights_or_a_failed_pass_leaves_all_to_the_tick(
    model: Model,
) -> None:
    """Other weights since the early pass (an online step), or an early pass that raised:
    the catch-up computes nothing and keeps every frame; the tick computes them all with
    the weights serving then."""
    for first_version, first_failed in [("v1", False), ("v1", True)]:
        pending = _pending(range(5))
        batch = pending.take()
        first = (early.failed(model, first_version, batch) if first_failed
                 else early.start(model, first_version, batch))
        now_version = "v1" if first_failed else "v1+1"
        caught_up = early.catch_up(first, model, now_version, _add(pending, range(5, 7)).take())
        assert caught_up.P is None
        assert caught_up.rows is None
        assert caught_up.batch.seq == list(range(7))
        frames = early.join(caught_up, _pending(range(0)).take(), 0)
        P = early.probabilities(caught_up, frames, 0, model, now_version)
        np.testing.assert_array_equal(P, early.forward(model, frames.X))


def test_a_nan_row_in_the_catch_up_sends_the_tick_the_general_way(
    model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    pending = _pending(range(4))
    first = early.start(model, "v1", pending.take())
    real = model.predict_proba

    def nan_row(X: np.ndarray) -> np.ndarray:
        P = real(X)
        P[0, 1] = np.nan
        return P

    monkeypatch.setattr(model, "predict_proba", nan_row)
    caught_up = early.catch_up(first, model, "v1", _add(pending, range(4, 6)).take())
    assert caught_up.P is not None
    assert caught_up.rows is None
    assert early.fast_pred(caught_up, _pending(range(0)).take(), 0, model, "v1", 9, 1.5) is None


def test_the_early_readings_outlive_the_ring_filling_again(model: Model) -> None:
    """The ring's slots take the next frames: the early part keeps its readings."""
    pending = _pending(range(5))
    batch = pending.take()
    first = early.start(model, "v1", batch)
    X = first.batch.X.copy()
    for seq in range(5, 10):  # fill the same rows again
        pending.add(wire.RawFrame(seq, 0.0, np.full(D, 9, "<f4").tobytes(), None), 0)
    np.testing.assert_array_equal(first.batch.X, X)


def test_weights_changed_since_the_early_pass_are_the_ones_served(model: Model) -> None:
    """An online step (a new version) or a reload (another model) between the early pass
    and the tick: the early rows are computed again, with the weights serving now."""
    other = Model(MLP.from_params(*[p * 1.5 for p in model.mlp.copy_params()]), model.mean,
                  model.scale, model.feature_names, model.class_names, model.thresholds)
    for now_model, now_version in [(model, "v1+1"), (other, "v1")]:
        pending = _pending(range(10))
        first = early.start(model, "v1", pending.take())
        late = _add(pending, range(10, 12)).take()
        assert not early.reused(first, now_model, now_version)
        assert early.fast_pred(first, late, 0, now_model, now_version, 9, 1.5) is None
        frames = early.join(first, late, 0)
        P = early.probabilities(first, frames, 0, now_model, now_version)
        np.testing.assert_array_equal(P, early.forward(now_model, frames.X))


def test_the_batch_cap_keeps_the_newest_over_both_parts(model: Model) -> None:
    """max_batch 8: 6 early frames and 5 late ones serve the newest 8 (3 early dropped)."""
    pending = _pending(range(6), max_batch=8)
    first = early.start(model, "v1", pending.take())
    late = _add(pending, range(6, 11)).take()
    assert early.dropped(first, late, 8) == 3
    assert early.fast_pred(first, late, 3, model, "v1", 9, 1.5) is None  # the general way
    frames = early.join(first, late, 3)
    assert frames.seq == list(range(3, 11))
    np.testing.assert_array_equal(frames.arrival_ns, np.arange(1003, 1011))
    P = early.probabilities(first, frames, 3, model, "v1")
    np.testing.assert_allclose(P, early.forward(model, frames.X), rtol=0, atol=1e-6)


def test_a_nan_row_sends_the_tick_the_general_way(
    model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NaN out of the model (a float32 model can overflow): the early rows are not
    packed, and the tick takes the general way, which leaves that frame out."""
    def nan_for_row_2(X: np.ndarray) -> np.ndarray:
        P = np.full((len(X), C), 0.5)
        P[2, 1] = np.nan
        return P

    monkeypatch.setattr(model, "predict_proba", nan_for_row_2)
    first = early.start(model, "v1", _pending(range(4)).take())
    assert first.P is not None
    assert first.rows is None
    assert early.fast_pred(first, _pending(range(0)).take(), 0, model, "v1", 9, 1.5) is None


def test_a_failed_early_pass_keeps_its_frames_for_the_tick(model: Model) -> None:
    pending = _pending(range(3))
    first = early.failed(model, "v1", pending.take())
    frames = early.join(first, _pending(range(3, 5)).take(), 0)
    assert frames.seq == [0, 1, 2, 3, 4]
    P = early.probabilities(first, frames, 0, model, "v1")
    np.testing.assert_array_equal(P, early.forward(model, frames.X))


def test_the_row_budget_follows_how_passes_end_and_recovers_from_a_slow_spell() -> None:
    budget, ms = early.RowBudget(), 1_000_000
    assert budget.admit(early.INITIAL_ROWS) == early.INITIAL_ROWS
    assert budget.admit(early.INITIAL_ROWS * 4) == early.INITIAL_ROWS  # the oldest
    budget.ended(40, 0, 2 * ms, 10 * ms)  # done with most of its time to spare
    assert budget.admit(100) == 80
    budget.ended(80, 0, 9 * ms, 10 * ms)  # in the second half: the budget halves
    assert (budget.admit(30), budget.admit(41)) == (30, 40)
    budget.ended(40, 0, 12 * ms, 10 * ms)  # past the deadline
    assert budget.rows == 20
    passes = 0
    while budget.admit(40) < 40:  # a slow spell ends: passes that end in time grow it back
        budget.ended(budget.admit(40), 0, 2 * ms, 10 * ms)
        passes += 1
    assert passes == 1


def test_a_budget_with_less_to_spare_grows_on_passes_that_end_later() -> None:
    """The catch-up's budget (a quarter to spare) grows on a pass ending 70 % of the way to
    the deadline, which halves the early pass's (half to spare)."""
    ms = 1_000_000
    catch_up, first = early.RowBudget(spare=0.25), early.RowBudget()
    for budget in (catch_up, first):
        budget.ended(20, 0, 7 * ms, 10 * ms)
    assert (catch_up.rows, first.rows) == (40, 10)
    catch_up.ended(40, 0, 7 * ms, 10 * ms)
    assert catch_up.rows == 80


class _Broken:
    """A model whose forward pass raises, as a bug in it would: from its ``calls``-th call
    on (the ones before go to ``model``)."""

    def __init__(self, model: Model | None = None, calls: int = 0) -> None:
        self.model, self.calls = model, calls

    def predict_proba(self, X: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        self.calls -= 1
        if self.calls >= 0 and self.model is not None:
            return self.model.predict_proba(X)
        raise RuntimeError("a bug in the forward pass")


def _passes(
    pending: PendingFrames, model: object, ahead: bool = True, max_batch: int = 64
) -> tuple[early.Passes, Counters]:
    counters = Counters()
    return early.Passes(pending, counters, 20_000_000, max_batch,
                        lambda: (cast("Model", model), "v1"), ahead=ahead), counters


def test_a_pass_that_raises_is_counted_and_keeps_its_frames_for_the_tick(
    model: Model, caplog: pytest.LogCaptureFixture,
) -> None:
    """A pass before the tick whose forward pass raises: counted in tick_errors and
    logged, its frames kept without probabilities (the tick computes them again), and a
    catch-up after it computes nothing but keeps its frames too."""
    pending = _pending(range(5))
    passes, counters = _passes(pending, _Broken())
    far = time.monotonic_ns() + 10**9
    passes.run_early(far)
    assert counters.tick_errors == 1
    assert "the forward pass of 5 frame(s) in the early pass failed" in caplog.text
    _add(pending, range(5, 7))
    passes.run_catch_up(far)
    first = passes.take()
    assert first is not None
    assert first.P is None
    assert first.rows is None
    assert first.batch.seq == list(range(7))
    assert (len(pending), passes.early, counters.ticks_caught_up) == (0, None, 0)
    P = early.probabilities(first, first.batch, 0, model, "v1")  # what the tick does
    np.testing.assert_array_equal(P, early.forward(model, first.batch.X))


def test_a_pass_ahead_runs_over_enough_rows_before_the_early_pass_within_the_cap(
    model: Model,
) -> None:
    """A pass ahead takes the pending frames only where they are AHEAD_ROWS or more, the
    early pass is not due yet, the frames kept stay within max_batch, and passes ahead
    are on (they are off with online learning)."""
    ahead = early.AHEAD_ROWS
    far = time.monotonic_ns() + 10**9
    pending = _pending(range(ahead - 1), max_batch=4 * ahead)
    passes, _ = _passes(pending, model, max_batch=4 * ahead)
    passes.run_ahead(far)
    assert passes.early is None  # too few
    _add(pending, range(ahead - 1, ahead))
    passes.run_ahead(time.monotonic_ns() + 1_000_000)  # the early pass is due: its rows
    assert passes.early is None
    passes.run_ahead(far)
    assert passes.early is not None
    assert len(passes.early.batch) == ahead
    _add(pending, range(ahead, 4 * ahead))
    passes.run_ahead(far)  # 3 ahead more would keep 4 ahead: at the cap, not past it
    assert (len(passes.early.batch), len(pending)) == (4 * ahead, 0)
    _add(pending, range(4 * ahead, 5 * ahead))
    passes.run_ahead(far)  # past the cap
    assert (len(passes.early.batch), len(pending)) == (4 * ahead, ahead)
    off, _ = _passes(_pending(range(ahead), max_batch=4 * ahead), model, ahead=False)
    off.run_ahead(far)
    assert off.early is None


def test_a_catch_up_that_raises_keeps_the_early_part_and_its_own_frames(
    model: Model, caplog: pytest.LogCaptureFixture,
) -> None:
    """The early pass succeeds and the catch-up's forward pass raises: counted and logged,
    not counted as caught up, and the tick gets every frame, early ones included, to
    compute again."""
    pending = _pending(range(5))
    passes, counters = _passes(pending, _Broken(model, calls=1))
    far = time.monotonic_ns() + 10**9
    passes.run_early(far)
    _add(pending, range(5, 7))
    passes.run_catch_up(far)
    assert counters.tick_errors == 1
    assert "the forward pass of 2 frame(s) in the catch-up pass failed" in caplog.text
    first = passes.take()
    assert first is not None
    assert first.P is None
    assert first.batch.seq == list(range(7))
    assert counters.ticks_caught_up == 0


def test_an_early_pass_woken_with_under_half_its_lead_left_leaves_all_to_the_tick(
    model: Model,
) -> None:
    """Woken late (a status or a step ran long), the early pass does not start: less than
    half of its lead (1.25 ms at 20 ms ticks) is too little to end before the deadline.
    With the whole lead left it starts. A catch-up with no early part does nothing; after
    one, it takes the rows its own budget admits."""
    pending = _pending(range(5))
    passes, counters = _passes(pending, model)
    lead = 20_000_000 // early.EARLY_LEAD
    passes.run_catch_up(time.monotonic_ns() + lead)
    assert (passes.early, len(pending)) == (None, 5)
    passes.run_early(time.monotonic_ns() + lead // 2 - 50_000)
    assert (passes.early, len(pending)) == (None, 5)
    passes.run_early(time.monotonic_ns() + lead)
    assert passes.early is not None
    assert len(passes.early.batch) == 5
    # The catch-up takes what its own budget admits, and learns from its own passes.
    passes.catch_up_rows.rows = 1
    _add(pending, range(5, 7))
    passes.run_catch_up(time.monotonic_ns() + 10**9)
    assert (len(passes.early.batch), len(pending)) == (6, 1)
    assert (passes.catch_up_rows.rows, counters.ticks_caught_up) == (2, 1)
