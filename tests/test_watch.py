"""robot-daemon watch: a running daemon's answers, shown live to an operator."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zmq

from robot_daemon import wire
from robot_daemon.watch import Watch, WatchOptions, online_line, progress_line, render

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "models" / "default.npz"
NAMES = ["pedestrian", "cyclist", "dog"]
OPTIONS = WatchOptions(pred="ipc:///tmp/x", labels="ipc:///tmp/y", class_names=NAMES,
                       thresholds=np.array([0.5, 0.5, 0.3]))


def _fed(watch: Watch) -> Watch:
    x = np.zeros(4, np.float32)
    watch.on_message([wire.TOPIC_LABEL, wire.encode_label(7, 1.0, x, np.array([1, 1, 0]))], 2)
    p = np.array([[0.1, 0.1, 0.1], [0.9, 0.2, 0.6]], np.float32)
    pred = wire.encode_pred(3, 2.0, [6, 7], p, "m1", src=[None, "lidar"])
    watch.on_message([wire.TOPIC_PRED, pred], 2)
    watch.on_message([wire.TOPIC_STATUS, wire.encode_status({
        "model_version": "m1", "uptime_s": 12.0, "frames_dropped": 0,
        "frames_rejected": {"wrong_d": 2}, "frames_lost": 1, "latency_ms_p50": 9.5,
        "latency_ms_p99": 19.0, "health": "degraded", "stale_endpoints": ["tcp://127.0.0.1:5556"],
        "labels_received": 5, "labels_accepted": 4, "labels_rejected": {"outlier": 1},
        "online_steps": 7, "online_rejected": {"loss_jump": 2, "rollback": 0},
        "online_last_step": {"accepted": True, "reason": None, "loss": 0.5,
                             "holdout_before": 0.4123, "holdout_after": 0.4011},
        "checkpoints_saved": 2})], 2)
    watch.on_message([wire.TOPIC_PRED, b"\xc1"], 2)  # garbage is counted, not fatal
    return watch


def test_watch_shows_the_newest_answer_against_its_label() -> None:
    watch = _fed(Watch(OPTIONS))
    assert watch.rejected == 1
    lines = render(watch.view(1.0, time.monotonic_ns()), width=80, color=False)
    text = "\n".join(lines)
    assert "model m1" in lines[0]
    assert lines[1] == "health degraded (stale: tcp://127.0.0.1:5556)"
    assert "newest answered frame: seq 7 from lidar" in text
    rows = {line.split()[0]: line for line in lines if line.split()[0] in NAMES}
    assert rows["pedestrian"].endswith("0.90  ✓ present")
    assert rows["cyclist"].endswith("0.20  ✗ present, missed")
    assert rows["dog"].endswith("0.60  ✗ false alarm")
    assert "answered 2" in text
    assert "latency p50 9.5 ms p99 19.0 ms" in text
    assert "daemon: dropped 0 rejected 2 lost 1" in text
    assert ("learning: labels 4 used, 1 rejected, steps 7, refused 2 (loss_jump 2), holdout"
            " loss 0.412 -> 0.401, checkpoints 2") in " ".join(
                line.strip() for line in lines)
    assert all(len(line) <= 80 for line in lines)


def test_watch_without_a_model_numbers_the_classes() -> None:
    watch = _fed(Watch(WatchOptions(pred="ipc:///tmp/x")))
    lines = render(watch.view(1.0, time.monotonic_ns()), width=80)
    assert any(line.startswith("  class 2 ") for line in lines)
    assert not any("labels seen" in line for line in lines)


def test_before_anything_arrives_it_says_what_to_check() -> None:
    lines = render(Watch(OPTIONS).view(0.5, time.monotonic_ns()), width=80)
    assert "none yet (is the daemon running, and fed?)" in "\n".join(lines)
    assert online_line(None) == ""
    assert progress_line(Watch(OPTIONS).view(0.5, 0)).startswith("[   0.5 s] answered 0")


def test_watch_a_real_daemon_from_the_command_line(workdir: Path) -> None:
    frames_ep, pred_ep, labels_ep = (f"ipc://{workdir}/{n}" for n in ("f", "p", "l"))
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "robot_daemon", "run", "--model", str(DEFAULT_MODEL),
         "--frames", frames_ep, "--pred", pred_ep, "--status-interval", "0.2"],
        stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    ctx = zmq.Context()
    try:
        frames, labels = ctx.socket(zmq.PUB), ctx.socket(zmq.PUB)
        frames.bind(frames_ep)
        labels.bind(labels_ep)
        watcher = subprocess.Popen(
            [sys.executable, "-m", "robot_daemon", "watch", "--pred", pred_ep,
             "--labels", labels_ep, "--model", str(DEFAULT_MODEL), "--no-live",
             "--duration", "4"],
            stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        time.sleep(1.5)  # both subscribed
        rng = np.random.default_rng(0)
        for seq in range(100):
            x = rng.normal(size=16).astype(np.float32)
            frames.send_multipart([wire.TOPIC_FRAME, wire.encode_frame(seq, seq * 0.02, x)])
            y = np.zeros(8, np.uint8)
            labels.send_multipart([wire.TOPIC_LABEL, wire.encode_label(seq, seq * 0.02, x, y)])
            time.sleep(0.005)
        out, _ = watcher.communicate(timeout=20)
        assert watcher.returncode == 0
        last = out.strip().splitlines()[-1]
        assert "answered 100" in last, out
        assert "dropped 0 rejected 0 lost 0" in last, out
        assert "health " in last, out  # the daemon's liveness, as status reports it
        frames.close(linger=0)
        labels.close(linger=0)
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
        ctx.term()
