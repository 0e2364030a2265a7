"""``run --shadow``: a candidate beside the serving model, after each pred, never in its way."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from robot_daemon import model as model_file
from robot_daemon import wire
from robot_daemon.errors import ModelError
from robot_daemon.nn import MLP
from robot_daemon.serve.labelled import Labelled
from robot_daemon.serve.reload import ServedModel
from robot_daemon.serve.shadow import Cost, Shadow, Tally, check_matches

from .test_daemon import DEFAULT_MODEL, ROOT, Harness, _in_process, _readings, _run_for

NAMES = model_file.load(DEFAULT_MODEL).class_names


def _model(seed: int, c: int | None = None, names: list[str] | None = None) -> Any:
    default = model_file.load(DEFAULT_MODEL)
    c = default.c if c is None else c
    mlp = MLP(default.d, 16, c, rng=seed)
    model = model_file.from_mlp(mlp, mean=default.mean, scale=default.scale)
    model.class_names = list(names or (default.class_names if c == default.c
                                        else [f"k{i}" for i in range(c)]))
    return model


def _saved(model: Any, path: Path) -> Path:
    model.save(path)
    return path


# ---- the comparison --------------------------------------------------------------------


def test_the_tally_counts_differing_decisions_the_gap_and_each_models_f1() -> None:
    tally = Tally(2)
    thresholds = np.array([0.5, 0.5])
    P = np.array([[0.9, 0.1], [0.4, 0.6], [np.nan, 0.5]])
    S = np.array([[0.8, 0.6], [0.4, 0.6], [0.5, 0.5]])  # differs on class 1 of frame 0
    tally.compare(P, S, (thresholds, thresholds))
    assert tally.compared == 2  # the NaN row left out
    assert tally.differ.tolist() == [0, 1]
    np.testing.assert_allclose(tally.abs_diff, [0.1, 0.5])
    Y = np.array([[1, 0], [0, 1]])
    tally.score(0, P[:2], Y, thresholds)  # serving: both right
    tally.score(1, S[:2], Y, thresholds)  # shadow: a false positive on class 1
    assert tally.f1(0).tolist() == [1.0, 1.0]
    np.testing.assert_allclose(tally.f1(1), [1.0, 2 / 3])


def test_labelled_frames_score_both_models_when_the_shadows_pass_fits(tmp_path: Path) -> None:
    serving = model_file.load(DEFAULT_MODEL)
    candidate = _model(3)
    served = ServedModel(candidate, "cand-1", _saved(candidate, tmp_path / "c.npz"))
    shadow = Shadow(served, serving, 32)
    X = _readings(40)
    Y = (serving.predict_proba(X) >= serving.thresholds).astype(np.uint8)  # serving right
    labelled = Labelled.of([wire.Label(i, i / 50, X[i], Y[i], "lidar") for i in range(40)],
                           serving)
    shadow.score(labelled, serving, time.monotonic_ns())  # no time left: a sample missed
    assert shadow.status()["labelled"] == 0
    shadow.score(labelled, serving, time.monotonic_ns() + 10**9)
    status = shadow.status()
    assert status["labelled"] == 40
    present = Y.any(axis=0)  # a class no label has scores 0 for both
    assert np.allclose([status["f1_serving"][k] for k in NAMES], present)
    S = candidate.predict_proba(X) >= candidate.thresholds
    tp = (S & (Y == 1)).sum(axis=0)
    f1 = 2 * tp / np.maximum(2 * tp + (S & (Y == 0)).sum(axis=0) + (~S & (Y == 1)).sum(axis=0), 1)
    np.testing.assert_allclose([status["f1_shadow"][k] for k in NAMES], f1)


def test_a_shadow_of_other_classes_is_refused_in_one_line() -> None:
    serving = model_file.load(DEFAULT_MODEL)
    check_matches(_model(1), serving, "ok.npz")
    with pytest.raises(ModelError, match=r"^shadow model file s.npz has d=16, c=3 but"):
        check_matches(_model(1, c=3), serving, "s.npz")
    renamed = list(reversed(NAMES))
    with pytest.raises(ModelError, match="same classes in the same order"):
        check_matches(_model(1, names=renamed), serving, "s.npz")


def test_the_cost_grows_with_rows_and_learns_from_the_passes() -> None:
    cost = Cost(fixed_ns=100_000.0, per_row_ns=10_000.0, ratios=Cost.timed(
        model_file.load(DEFAULT_MODEL), 32).ratios)
    assert cost.expected_ns(10) == pytest.approx(200_000)
    cost.add(10, 600_000)  # the machine is three times slower than at load
    assert cost.expected_ns(10) == pytest.approx(600_000)


# ---- in the daemon ---------------------------------------------------------------------


def _shadow_messages(sub: zmq.Socket[bytes], n: int) -> list[wire.Pred]:
    out: list[wire.Pred] = []
    deadline = time.monotonic() + 10
    while sum(len(p.seq) for p in out) < n:
        assert sub.poll(max(1, round((deadline - time.monotonic()) * 1000)))
        topic, payload = sub.recv_multipart()
        if topic == wire.TOPIC_SHADOW:
            out.append(wire.decode_pred(payload))
    return out


def test_the_shadow_answers_the_same_frames_on_its_own_topic(workdir: Path) -> None:
    shadow_path = _saved(_model(7), workdir / "candidate.npz")
    h = Harness(workdir, DEFAULT_MODEL, args=("--shadow", str(shadow_path),
                                             "--status-interval", "0.2"))
    shadow_sub = h.ctx.socket(zmq.SUB)
    shadow_sub.setsockopt(zmq.LINGER, 0)
    shadow_sub.connect(h.pred_ep)
    shadow_sub.subscribe(wire.TOPIC_SHADOW)
    try:
        h.start()
        X = _readings(30)
        for i in range(30):
            h.send(i, X[i])
        preds = h.preds(30)  # pred's subscribers see nothing new: only pred and status
        shadows = _shadow_messages(shadow_sub, 30)
        candidate = model_file.load(shadow_path)
        assert [int(s) for p in shadows for s in p.seq] == list(range(30))
        assert {p.model for p in shadows} == {model_file.identity(candidate, shadow_path)}
        got = np.concatenate([p.p for p in shadows])
        np.testing.assert_allclose(got, candidate.predict_proba(X), rtol=1e-5, atol=1e-6)
        assert [int(s) for p in preds for s in p.seq] == list(range(30))
        status = h.status(lambda s: s.get("shadow", {}).get("frames_compared") == 30)
        shadow = status["shadow"]
        assert shadow["frames_skipped"] == 0
        assert set(shadow["disagree"]) == set(NAMES)
        serving = model_file.load(DEFAULT_MODEL).predict_proba(X)
        S = candidate.predict_proba(X)
        differ = (np.greater_equal(serving, model_file.load(DEFAULT_MODEL).thresholds)
                  != np.greater_equal(S, candidate.thresholds)).mean(axis=0)
        assert list(shadow["disagree"].values()) == pytest.approx(differ.tolist())
        assert list(shadow["mean_abs_diff"].values()) == pytest.approx(
            np.abs(S - serving).mean(axis=0).tolist(), rel=1e-4)
    finally:
        shadow_sub.close()
        h.close()


def test_a_mismatched_shadow_is_refused_at_start_and_on_reload(workdir: Path) -> None:
    wrong = _saved(_model(1, c=3), workdir / "wrong.npz")
    proc = subprocess.run(
        [sys.executable, "-m", "robot_daemon", "run", "--model", str(DEFAULT_MODEL),
         "--shadow", str(wrong), "--frames", f"ipc://{workdir}/f", "--pred",
         f"ipc://{workdir}/p"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"robot-daemon run: error: shadow model file {wrong} has d=16, c=3 but")

    shadow_path = _saved(_model(2), workdir / "candidate.npz")
    first = model_file.identity(model_file.load(shadow_path), shadow_path)
    h = Harness(workdir, DEFAULT_MODEL, args=("--shadow", str(shadow_path),
                                             "--status-interval", "0.2"))
    try:
        h.start()
        _saved(_model(1, c=3), shadow_path)  # a deploy gone wrong
        assert h.proc is not None
        h.proc.send_signal(signal.SIGHUP)
        status = h.status(lambda s: s["reload_failures"] == 1)
        assert status["shadow"]["model"] == first  # still the one that matched
        _saved(_model(3), shadow_path)
        h.proc.send_signal(signal.SIGHUP)
        status = h.status(lambda s: s["shadow"]["model"] != first)
        assert status["reload_failures"] == 1
        assert "shadow reload refused, still shadowing" in h.log_text()
    finally:
        h.close()


def test_a_shadow_too_slow_for_the_tick_skips_frames_and_never_delays_a_pred(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process, a shadow whose pass takes 40 ms of CPU (two intervals): every tick's
    frames are skipped and counted, and no tick is late by the daemon's own work."""
    from robot_daemon.serve import daemon

    real_load = daemon.load_model

    def slow_load(path: Path, role: str = "model file") -> Any:
        served = real_load(path, role)
        if role == "model file":
            return served
        real = served.model.predict_proba

        def slow(X: np.ndarray) -> np.ndarray:
            end = time.thread_time_ns() + 40_000_000
            while time.thread_time_ns() < end:  # CPU, as a big model takes it
                pass
            return real(X)

        served.model.predict_proba = slow  # type: ignore[method-assign]
        return served

    monkeypatch.setattr(daemon, "load_model", slow_load)
    d = _in_process(workdir, shadow=str(_saved(_model(4), workdir / "slow.npz")))
    stop = threading.Event()

    def feed() -> None:
        with zmq.Context() as ctx, ctx.socket(zmq.PUB) as pub:
            pub.bind(f"ipc://{workdir}/f")
            x = _readings(1)[0]
            seq = 0
            while not stop.wait(0.02):
                pub.send_multipart([wire.TOPIC_FRAME, wire.encode_frame(seq, seq / 50, x)])
                seq += 1

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        _run_for(d, 1.5)
    finally:
        stop.set()
        feeder.join()
    tally = d.beside.shadows.current.tally
    assert d.counters.frames_accepted > 20
    assert tally.skipped > 20
    assert tally.compared == 0
    assert d.counters.ticks_late - d.counters.ticks_late_os == 0  # none late by our work


def test_a_shadow_reload_is_timed_in_the_reload_thread_not_the_serving_one(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload of a big shadow once timed it on the serving thread: 0.57 s without a tick
    (h=4000). The reload thread times it; the serving thread only fits the line."""
    from robot_daemon.serve import reload, shadow

    path = _saved(_model(6), workdir / "candidate.npz")
    loader = reload.Reloader(path, 16, 8, rows=64, interval_ns=20_000_000, shadow=True)
    try:
        loader.request()
        deadline = time.monotonic() + 10
        while (loaded := loader.done()) is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        loader.close()
    assert isinstance(loaded, reload.ServedModel)
    assert loaded.pass_ns is not None
    assert loaded.pass_ns[2] == 64

    def no_timing(*args: object) -> int:
        raise AssertionError("timed on the serving thread")

    monkeypatch.setattr(shadow, "full_tick_ns", no_timing)
    candidate = shadow.Shadow(loaded, model_file.load(DEFAULT_MODEL), rows=64)
    assert candidate.cost.expected_ns(64) > candidate.cost.expected_ns(1) > 0


def test_a_shadow_that_is_not_a_model_file_is_named_as_the_shadow(workdir: Path) -> None:
    from robot_daemon.serve.reload import load_model

    with pytest.raises(ModelError, match=r"^shadow model file .*directory"):
        load_model(workdir, "shadow model file")
