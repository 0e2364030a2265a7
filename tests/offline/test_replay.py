"""Offline replay: the daemon's batching rules on sensor time, byte-identical outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from robot_daemon import sim, wire
from robot_daemon.bag import BagMeta, BagReader, BagWriter
from robot_daemon.bag.export import export_json
from robot_daemon.cli import main
from robot_daemon.errors import BagError
from robot_daemon.model import from_mlp, identity, load
from robot_daemon.nn import MLP
from robot_daemon.offline.replay import replay, tick_batches


def _frame(seq: int, t: float) -> wire.Frame:
    return wire.Frame(seq=seq, t=t, x=np.zeros(2, dtype=np.float32))


def test_tick_batches_follow_sensor_time() -> None:
    # 10 ms ticks from t0 = 100.000: [0, 10) ms -> tick 0, [20, 30) -> tick 2, ...
    times = [100.000, 100.004, 100.0099, 100.021, 100.015, 100.031]
    batches = list(tick_batches([_frame(i, t) for i, t in enumerate(times)], 10_000_000, 10))
    assert [b.tick for b in batches] == [0, 2, 3]  # tick 1 had no frames: nothing published
    assert [[f.seq for f in b.frames] for b in batches] == [[0, 1, 2], [3, 4], [5]]
    assert [b.late for b in batches] == [0, 1, 0]  # seq 4 (t = 15 ms) arrived after tick 1
    assert batches[0].end_ns == 100_010_000_000


def test_a_full_tick_keeps_the_newest_frames() -> None:
    frames = [_frame(i, 5.0 + i * 1e-4) for i in range(7)]
    (batch,) = tick_batches(frames, 20_000_000, max_batch=3)
    assert [f.seq for f in batch.frames] == [4, 5, 6]
    assert batch.dropped == 4


@pytest.fixture(scope="module")
def sim_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bags") / "sim.mcap"
    sim.write_bag(path, sim.simulate(20.0, seed=5))
    return path


def test_replay_answers_every_frame_once_with_the_model_probabilities(
    sim_bag: Path, tmp_path: Path
) -> None:
    model = from_mlp(MLP(16, 32, 8, rng=0))
    stats = replay(model, sim_bag, tmp_path / "pred.mcap", model_name="m1", interval_ms=20)
    assert (stats.frames_in, stats.accepted, stats.dropped) == (1000, 1000, 0)
    assert not stats.rejected
    with BagReader(sim_bag) as reader:
        frames = {f.seq: f for f in (wire.decode_frame(m.payload)
                                     for m in reader.messages(["frame"]))}
    answered: list[int] = []
    with BagReader(tmp_path / "pred.mcap") as reader:
        assert reader.meta.c == 8
        for message in reader.messages(["pred"]):
            pred = wire.decode_pred(message.payload)
            assert pred.model == "m1"
            X = np.stack([frames[int(s)].x for s in pred.seq])
            np.testing.assert_allclose(pred.p, model.predict_proba(X), rtol=1e-6, atol=1e-7)
            answered += pred.seq.tolist()
    assert sorted(answered) == sorted(frames)
    assert stats.ticks == 1000  # 50 Hz frames, 20 ms ticks: one frame per tick


DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "default.npz"


def _pred_models(path: Path) -> set[str]:
    with BagReader(path) as reader:
        return {wire.decode_pred(m.payload).model for m in reader.messages(["pred"])}


def test_replay_names_the_model_as_the_daemon_does(sim_bag: Path, tmp_path: Path) -> None:
    from robot_daemon.serve.reload import load_model

    served = load_model(DEFAULT_MODEL)  # what the daemon serves and puts in every pred
    loaded = load(DEFAULT_MODEL)
    assert identity(loaded, DEFAULT_MODEL) == served.version
    replay(loaded, sim_bag, tmp_path / "named.mcap", model_name=identity(loaded, DEFAULT_MODEL))
    assert _pred_models(tmp_path / "named.mcap") == {served.version}
    # Without a name, the identity with the stem "model": still the weights' hash.
    replay(loaded, sim_bag, tmp_path / "unnamed.mcap")
    assert _pred_models(tmp_path / "unnamed.mcap") == {"model-" + served.version.split("-")[-1]}


def test_the_replay_command_names_the_model_as_the_daemon_does(
    sim_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from robot_daemon.serve.reload import load_model

    out = tmp_path / "p.mcap"
    assert main(["replay", str(DEFAULT_MODEL), str(sim_bag), "--out", str(out)]) == 0
    capsys.readouterr()
    assert _pred_models(out) == {load_model(DEFAULT_MODEL).version}


def test_two_replays_write_identical_bytes(sim_bag: Path, tmp_path: Path) -> None:
    model = from_mlp(MLP(16, 32, 8, rng=1))
    for name in ("a.mcap", "b.mcap"):
        replay(model, sim_bag, tmp_path / name, interval_ms=100, max_batch=3)
    assert (tmp_path / "a.mcap").read_bytes() == (tmp_path / "b.mcap").read_bytes()


def test_bad_frames_are_counted_by_reason(tmp_path: Path) -> None:
    bag = tmp_path / "mixed.mcap"
    with BagWriter(bag, meta=BagMeta(d=4, c=2)) as w:
        w.write("frame", wire.encode_frame(0, 1.0, np.ones(4)), recv_ns=1)
        w.write("frame", b"\xc1", recv_ns=2)
        w.write("frame", wire.encode_frame(1, 1.0, np.ones(3)), recv_ns=3)
        w.write("frame", wire.encode_frame(2, 1.01, np.ones(4)), recv_ns=4)
    stats = replay(from_mlp(MLP(4, 8, 2, rng=0)), bag, tmp_path / "pred.mcap")
    assert (stats.frames_in, stats.accepted) == (4, 2)
    assert sum(stats.rejected.values()) == 2
    assert "wrong_d" in stats.rejected
    assert "rejected" in stats.describe()


def test_bags_replay_cannot_use_are_refused_and_the_output_left_alone(
    sim_bag: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pred.mcap"
    out.write_bytes(b"an older replay")
    no_frames = tmp_path / "labels.mcap"
    with BagWriter(no_frames, meta=BagMeta(d=4, c=8)) as w:
        w.write("status", b"\x80", recv_ns=1)
    undeclared = tmp_path / "undeclared.mcap"  # a bag of another tool: no d in its metadata
    with BagWriter(undeclared) as w:
        w.write("frame", wire.encode_frame(0, 1.0, np.ones(3)), recv_ns=1)
    export_json(sim_bag, tmp_path / "sim.json.mcap")
    cases = {
        sim_bag: "holds frames of d=16; the model expects d=4",
        no_frames: "has no 'frame' messages",
        undeclared: "none of the 1 'frame' messages",
        tmp_path / "sim.json.mcap": "is a JSON copy written by `bag export`",
    }
    model = from_mlp(MLP(4, 8, 8, rng=0))
    for bag, message in cases.items():
        with pytest.raises(BagError, match=message):
            replay(model, bag, out)
    with pytest.raises(BagError, match="is a JSON copy"):
        replay(from_mlp(MLP(16, 8, 8, rng=0)), tmp_path / "sim.json.mcap", out)
    assert out.read_bytes() == b"an older replay"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "labels.mcap", "pred.mcap", "sim.json.mcap", "undeclared.mcap"]


def test_replay_cli_refuses_a_json_export_with_one_line(
    sim_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export_json(sim_bag, tmp_path / "sim.json.mcap")
    model = str(Path(__file__).resolve().parents[2] / "models/default.npz")
    argv = ["replay", model, str(tmp_path / "sim.json.mcap"), "--out", str(tmp_path / "p.mcap")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("robot-daemon replay: error:")
    assert err.count("\n") == 1
    assert not (tmp_path / "p.mcap").exists()
