"""A capture bag is an ordinary bag: ``bag info``, ``bag export``, ``dataset`` and
``train`` read it; the bag being written is hidden from them, and one that a kill -9 left
open is read up to its last chunk."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from robot_daemon import wire
from robot_daemon.bag import BagMeta, BagReader
from robot_daemon.bag.export import export_json
from robot_daemon.capture import Capture, CaptureConfig
from robot_daemon.capture.frames import decode_capture
from robot_daemon.cli import main

from .conftest import C, D, captured

ROOT = Path(__file__).resolve().parents[2]
META = BagMeta(d=D, c=C, feature_names=[f"f{i}" for i in range(D)],
               class_names=[f"k{i}" for i in range(C)])


def _capture(directory: Path, n: int, *, labelled: bool = True, start: int = 0) -> Path:
    """One closed capture bag of ``n`` frames in ``directory``; its path."""
    with Capture(CaptureConfig(dir=directory, max_mb=1, rate_per_s=1e6), META) as capture:
        capture.offer(captured(n, start=start, labelled=labelled,
                               reasons=("uncertain", "disagree")), 0)
    return max(directory.glob("capture-*.mcap"))


def test_a_capture_bag_holds_each_frame_with_its_answers_and_reasons(tmp_path: Path) -> None:
    path = _capture(tmp_path, 20)
    frames = captured(20)
    with BagReader(path) as bag:
        # Marked as a capture's: train knows its frames were chosen, not drawn.
        assert bag.meta == dataclasses.replace(META, extra={"source": "robot_daemon.capture"})
        by_topic: dict[str, list[bytes]] = {}
        for message in bag.messages():
            by_topic.setdefault(message.topic, []).append(message.payload)
            assert message.recv_ns == frames[0].recv_ns + 20_000_000 * (
                len(by_topic[message.topic]) - 1)  # log time: the frame's receive time
    assert {t: len(p) for t, p in by_topic.items()} == dict.fromkeys(
        ("frame", "pred", "shadow", "label", "capture"), 20)
    pred = wire.decode_pred(by_topic["pred"][3])
    shadow = wire.decode_pred(by_topic["shadow"][3])
    assert (pred.model, shadow.model, pred.seq.tolist()) == ("serving-1", "shadow-2", [3])
    np.testing.assert_array_equal(pred.p[0], frames[3].p)
    np.testing.assert_array_equal(shadow.p[0], frames[3].shadow_p)
    assert decode_capture(by_topic["capture"][3]) == {
        "seq": 3, "t": frames[3].t, "src": "lidar", "reasons": ["uncertain", "disagree"]}
    np.testing.assert_array_equal(wire.decode_label(by_topic["label"][3]).y, frames[3].y)


def test_bag_info_and_export_read_a_capture_bag(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = _capture(tmp_path / "c", 20)
    assert main(["bag", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert all(topic in out for topic in ("frame", "pred", "shadow", "label", "capture"))
    summary = export_json(path, tmp_path / "out.mcap")
    assert summary.skipped == {}
    assert dict(summary.counts) == dict.fromkeys(
        ("frame", "pred", "shadow", "label", "capture"), 20)


def test_dataset_and_train_read_capture_bags(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "capture"
    _capture(directory, 300)
    out = tmp_path / "ds"
    assert main(["dataset", str(directory), "--out", str(out)]) == 0
    manifest = json.loads((out / "dataset.json").read_text())
    assert (manifest["tables"]["frames"]["rows"], manifest["tables"]["labels"]["rows"]) == (
        300, 300)
    model = tmp_path / "m.npz"
    assert main(["train", str(directory), "--out", str(model), "--epochs", "1", "--h", "8"]) == 0
    assert model.exists()


def test_unlabelled_captures_are_kept_by_dataset_and_refused_by_train(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "capture"
    _capture(directory, 30, labelled=False)
    out = tmp_path / "ds"
    assert main(["dataset", str(directory), "--out", str(out)]) == 0
    manifest = json.loads((out / "dataset.json").read_text())
    assert (manifest["tables"]["frames"]["rows"], manifest["tables"]["labels"]["rows"]) == (
        30, 0)
    capsys.readouterr()
    assert main(["train", str(directory), "--out", str(tmp_path / "m.npz")]) == 2
    err = capsys.readouterr().err
    assert "no valid labelled frames" in err
    assert err.endswith("robot-daemon train: error: no training examples in any source\n")


_KILLED = textwrap.dedent("""
    import sys, time
    import numpy as np
    from pathlib import Path
    from robot_daemon.bag import BagMeta
    from robot_daemon.capture import Capture, CaptureConfig, CapturedFrame

    config = CaptureConfig(dir=Path(sys.argv[1]), max_mb=1, rate_per_s=1e6, flush_s=0.01)
    capture = Capture(config, BagMeta(d=4, c=2))
    x, p = np.ones(4, np.float32), np.full(2, 0.5, np.float32)
    capture.offer([CapturedFrame(i, i / 50, x, None, 1_765_000_000_000_000_000 + i, p, "m",
                                 None, None, None, ("uncertain",)) for i in range(40)], 0)
    while capture.status()["capture_frames"] < 40:
        time.sleep(0.005)
    time.sleep(0.1)  # flush_s: the chunk is in the file
    print("written", flush=True)
    time.sleep(60)
""")


def test_a_kill_leaves_the_open_bag_hidden_readable_and_kept_at_the_next_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "capture"
    _capture(directory, 10)  # a finished bag of an earlier run
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen([sys.executable, "-c", _KILLED, str(directory)], env=env,
                          stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        assert child.stdout.readline() == "written\n"
        child.send_signal(signal.SIGKILL)
    (partial,) = directory.glob(".capture-*.partial")
    assert main(["bag", "info", str(partial)]) == 0  # the open bag: what it holds so far
    assert "DAMAGED" in capsys.readouterr().out
    out = tmp_path / "ds"  # a dataset of the directory sees the finished bag alone
    assert main(["dataset", str(directory), "--out", str(out)]) == 0
    assert json.loads((out / "dataset.json").read_text())["tables"]["frames"]["rows"] == 10
    with Capture(CaptureConfig(dir=directory, max_mb=1), META) as capture:
        assert capture.status()["capture_bags"] == 2
    kept = directory / partial.name[1:].removesuffix(".partial")
    with BagReader(kept) as bag:
        assert sum(1 for _ in bag.messages(["frame"])) == 40
