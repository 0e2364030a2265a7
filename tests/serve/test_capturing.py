"""``run --capture``: the daemon's triggers over each tick, into bounded capture bags."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from robot_daemon import model as model_file
from robot_daemon import wire
from robot_daemon.bag import BagMeta, BagReader
from robot_daemon.capture.frames import decode_capture
from robot_daemon.capture.writer import CaptureConfig
from robot_daemon.serve.batch import Batch
from robot_daemon.serve.capturing import Capturer
from robot_daemon.serve.labelled import Labelled

from .test_daemon import DEFAULT_MODEL, ROOT, Harness, _readings
from .test_shadow import _model, _saved

SERVING = model_file.load(DEFAULT_MODEL)


def _messages(directory: Path) -> dict[str, list[bytes]]:
    """Every message of the capture bags in ``directory``, by topic."""
    by_topic: dict[str, list[bytes]] = {}
    for path in sorted(directory.glob("capture-*.mcap")):
        with BagReader(path) as bag:
            for message in bag.messages():
                by_topic.setdefault(message.topic, []).append(message.payload)
    return by_topic


def test_the_daemon_captures_uncertain_and_disagreeing_frames_with_both_answers(
    workdir: Path,
) -> None:
    captures = workdir / "captures"
    captures.mkdir()
    shadow = _saved(_model(5), workdir / "candidate.npz")
    # A margin of 0.5 makes every frame uncertain: each one is captured.
    h = Harness(workdir, DEFAULT_MODEL, args=(
        "--shadow", str(shadow), "--capture", str(captures), "--capture-max-mb", "1",
        "--capture-margin", "0.5", "--capture-rate", "1000", "--status-interval", "0.2"))
    try:
        h.start()
        X = _readings(40)
        for i in range(40):
            h.send(i, X[i], src="lidar")
            time.sleep(0.002)
        h.preds(40)
        status = h.status(lambda s: s["capture_frames"] == 40)
        assert status["capture_by_reason"]["uncertain"] == 40
        assert status["capture_dropped"] == {"rate": 0, "queue": 0, "error": 0}
        assert h.stop()[0] == 0  # closes the open bag: renamed into place
    finally:
        h.close()
    got = _messages(captures)
    assert [wire.decode_frame(p).seq for p in got["frame"]] == list(range(40))
    reasons = [decode_capture(p)["reasons"] for p in got["capture"]]
    assert all("uncertain" in r for r in reasons)
    candidate = model_file.load(shadow)
    P, S = SERVING.predict_proba(X), candidate.predict_proba(X)
    differ = (np.greater_equal(P, SERVING.thresholds)
              != np.greater_equal(S, candidate.thresholds)).any(axis=1)
    assert ["disagree" in r for r in reasons] == differ.tolist()
    preds = [wire.decode_pred(p) for p in got["pred"]]
    np.testing.assert_allclose(np.concatenate([p.p for p in preds]), P, rtol=1e-5, atol=1e-6)
    assert {wire.decode_pred(p).model for p in got["shadow"]} == {
        model_file.identity(candidate, shadow)}


def test_an_unusable_capture_directory_is_refused_at_start(workdir: Path) -> None:
    not_a_dir = workdir / "file"
    not_a_dir.write_text("x")
    proc = subprocess.run(
        [sys.executable, "-m", "robot_daemon", "run", "--model", str(DEFAULT_MODEL),
         "--capture", str(not_a_dir), "--frames", f"ipc://{workdir}/f", "--pred",
         f"ipc://{workdir}/p"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("robot-daemon run: error: ")
    assert str(not_a_dir) in last


def _batch(X: np.ndarray, src: str = "lidar") -> Batch:
    n = len(X)
    return Batch(X.astype(np.float32), list(range(n)), [i / 50 for i in range(n)],
                 [src] * n, np.full(n, time.monotonic_ns(), dtype=np.int64))


def _capturer(directory: Path, **settings: Any) -> Capturer:
    config = CaptureConfig(dir=directory, max_mb=1, rate_per_s=1000, **settings)
    return Capturer(config, BagMeta(d=SERVING.d, c=SERVING.c,
                                    class_names=list(SERVING.class_names)))


def test_a_health_change_captures_the_seconds_around_it(tmp_path: Path) -> None:
    capturer = _capturer(tmp_path, triggers=frozenset({"health"}), health_window_s=0.3)
    X = _readings(30)
    P = SERVING.predict_proba(X)
    capturer.tick(1, _batch(X[:10]), P[:10], SERVING, "m", None)  # kept for a change
    assert capturer.status()["capture_frames"] == 0
    capturer.health_changed()  # a sensor went stale: the 10 before it
    capturer.tick(2, _batch(X[10:20]), P[10:20], SERVING, "m", None)  # within 0.3 s after
    time.sleep(0.35)
    capturer.tick(3, _batch(X[20:]), P[20:], SERVING, "m", None)  # after the window
    capturer.close()
    got = _messages(tmp_path)
    assert len(got["frame"]) == 20
    assert {tuple(decode_capture(p)["reasons"]) for p in got["capture"]} == {("health",)}


def test_a_label_that_contradicts_the_served_decision_is_captured_with_it(
    tmp_path: Path,
) -> None:
    capturer = _capturer(tmp_path, triggers=frozenset({"contradict"}))
    X = _readings(20)
    decided = SERVING.predict_proba(X) >= SERVING.thresholds
    Y = decided.astype(np.uint8)
    Y[[3, 7], 0] ^= 1  # two labels say otherwise
    _labels(capturer, [wire.Label(i, i / 50, X[i], Y[i], "lidar") for i in range(20)])
    capturer.close()
    got = _messages(tmp_path)
    assert [wire.decode_label(p).seq for p in got["label"]] == [3, 7]
    assert [decode_capture(p)["reasons"] for p in got["capture"]] == [["contradict"]] * 2


def test_a_captured_frame_whose_label_contradicts_it_is_not_captured_again(
    tmp_path: Path,
) -> None:
    capturer = _capturer(tmp_path, margin=0.5, triggers=frozenset({"uncertain", "contradict"}))
    X = _readings(2)
    P = SERVING.predict_proba(X)
    capturer.tick(1, _batch(X), P, SERVING, "m", None)  # both captured as uncertain
    Y = 1 - np.greater_equal(P, SERVING.thresholds).astype(np.uint8)  # both decided wrong
    _labels(capturer, [wire.Label(i, i / 50, X[i], Y[i], "lidar") for i in range(2)])
    capturer.close()
    status = capturer.status()
    assert (status["capture_frames"], status["capture_labels"]) == (2, 2)
    assert status["capture_by_reason"]["contradict"] == 0


def _labels(capturer: Capturer, labels: list[wire.Label]) -> None:
    """The label channel's ``labels``, as the daemon hands them over between ticks."""
    capturer.labels(Labelled.of(labels, SERVING), "m", SERVING.thresholds)


@pytest.mark.parametrize("margin", [0.0, 0.05])
def test_nothing_is_captured_when_no_trigger_fires(tmp_path: Path, margin: float) -> None:
    capturer = _capturer(tmp_path, margin=margin, triggers=frozenset({"uncertain"}))
    X = _readings(50)
    P = SERVING.predict_proba(X)
    capturer.tick(1, _batch(X), P, SERVING, "m", None)
    capturer.close()
    expected = int((np.abs(P - SERVING.thresholds) <= margin).any(axis=1).sum())
    assert capturer.status()["capture_frames"] == expected


def test_a_label_that_comes_for_a_captured_frame_is_kept_with_it(tmp_path: Path) -> None:
    capturer = _capturer(tmp_path, margin=0.5, triggers=frozenset({"uncertain"}))
    X = _readings(10)
    P = SERVING.predict_proba(X)
    capturer.tick(1, _batch(X[:5]), P[:5], SERVING, "m", None)  # frames 0-4 captured
    Y = np.greater_equal(P, SERVING.thresholds).astype(np.uint8)
    # The labeller answers later; frame 7 was never captured.
    _labels(capturer, [wire.Label(i, i / 50, X[i], Y[i], "lidar") for i in (2, 4, 7)])
    capturer.close()
    status = capturer.status()
    assert (status["capture_frames"], status["capture_labels"]) == (5, 2)
    got = _messages(tmp_path)
    assert [wire.decode_label(p).seq for p in got["label"]] == [2, 4]
    assert len(got["frame"]) == len(got["capture"]) == 5


def test_labels_without_online_learning_open_the_label_channel_for_the_capture_only(
    workdir: Path,
) -> None:
    from robot_daemon import config

    remote = {"capture": str(workdir), "labels": "tcp://10.0.0.9:5558"}
    with pytest.raises(Exception, match="is not on this machine"):
        config.load(None, remote)
    config.load(None, {"labels": "tcp://10.0.0.9:5558"})  # no capture, no online: unused


def test_the_daemon_keeps_the_labels_of_captured_frames_without_learning(
    workdir: Path,
) -> None:
    import zmq

    captures = workdir / "captures"
    captures.mkdir()
    labels_ep = f"ipc://{workdir}/labels"
    h = Harness(workdir, DEFAULT_MODEL, args=(
        "--labels", labels_ep, "--capture", str(captures), "--capture-margin", "0.5",
        "--capture-rate", "1000", "--capture-triggers", "uncertain",
        "--status-interval", "0.2"))
    labeller = h.ctx.socket(zmq.XPUB)
    labeller.setsockopt(zmq.LINGER, 0)
    labeller.bind(labels_ep)
    try:
        h.start()
        assert labeller.poll(10_000)  # the daemon's label SUB subscribed
        labeller.recv()
        X = _readings(10)
        for i in range(10):
            h.send(i, X[i], src="lidar")
        h.preds(10)
        Y = np.greater_equal(SERVING.predict_proba(X), SERVING.thresholds).astype(np.uint8)
        for i in range(10):
            labeller.send_multipart([wire.TOPIC_LABEL,
                                     wire.encode_label(i, i / 100, X[i], Y[i], "lidar")])
        status = h.status(lambda s: s["capture_labels"] == 10)
        assert status["model_version"] == model_file.identity(SERVING, DEFAULT_MODEL)
        assert status["capture_frames"] == 10
        assert h.stop()[0] == 0
    finally:
        labeller.close()
        h.close()
    got = _messages(captures)
    assert [wire.decode_label(p).seq for p in got["label"]] == list(range(10))


def test_a_label_that_comes_before_its_frame_is_captured_waits_for_it(
    tmp_path: Path,
) -> None:
    capturer = _capturer(tmp_path, margin=0.5, triggers=frozenset({"uncertain"}))
    X = _readings(3)
    P = SERVING.predict_proba(X)
    Y = np.greater_equal(P, SERVING.thresholds).astype(np.uint8)
    # The labeller's answers, ahead of the tick that serves the frames: nothing captured yet.
    _labels(capturer, [wire.Label(i, i / 50, X[i], Y[i], "lidar") for i in range(3)])
    capturer.tick(1, _batch(X), P, SERVING, "m", None)
    capturer.close()
    assert capturer.status()["capture_labels"] == 3


def test_a_flood_of_labels_for_a_captured_frame_writes_its_label_once(
    tmp_path: Path,
) -> None:
    capturer = _capturer(tmp_path, margin=0.5, triggers=frozenset({"uncertain"}))
    X = _readings(2)
    P = SERVING.predict_proba(X)
    capturer.tick(1, _batch(X), P, SERVING, "m", None)
    Y = np.greater_equal(P, SERVING.thresholds).astype(np.uint8)
    _labels(capturer, [wire.Label(1, 1 / 50, X[1], Y[1], "lidar")] * 100)
    capturer.close()
    assert capturer.status()["capture_labels"] == 1


def test_the_label_channel_for_the_capture_reads_at_most_a_thousand_labels_a_second(
) -> None:
    from robot_daemon import config
    from robot_daemon.learn.session import CAPTURE_LABELS_PER_S, OnlineSession

    cfg = config.load(None, {"model": str(DEFAULT_MODEL), "capture": "/tmp",
                             "labels": "ipc:///tmp/labels"})
    session = OnlineSession(cfg, SERVING, "m", 0, learn=False)
    assert session.wants_labels()
    session._label_budget.take(CAPTURE_LABELS_PER_S, time.monotonic_ns())
    assert not session.wants_labels()
    assert session.version == "m"
