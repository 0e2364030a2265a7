"""robot-daemon dataset: bags into Parquet that pyarrow (and pandas) read as it is, and its
one output rule (--overwrite)."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from robot_daemon.cli import main
from robot_daemon.errors import ConfigError
from robot_daemon.fleet import dataset, decode, manifest
from robot_daemon.offline.train import read_labelled

from .conftest import Bags, label_count


@pytest.fixture(scope="module")
def made(bags: Bags, scheduler: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fleet-dataset") / "ds"
    assert main(["dataset", str(bags.root), "--out", str(out), "--scheduler", scheduler]) == 0
    return out


def test_row_counts_equal_the_bags_message_counts(bags: Bags, made: Path) -> None:
    for table, topic in (("frames", "frame"), ("labels", "label")):
        rows = pads.dataset(made / table).count_rows()
        assert rows == sum(label_count(b, topic) for b in bags.readable)
    manifest = json.loads((made / "dataset.json").read_text())
    assert [Path(b["source"]).name for b in manifest["bags"]] == [
        "cut.mcap", "run0.mcap", "run1.mcap", "run2.mcap"]
    # the number of each bag among the sources: notes.txt, skipped, was the second
    assert [b["episode_index"] for b in manifest["bags"]] == [0, 2, 3, 4]
    assert manifest["format"] == "robot_daemon.dataset/2"
    assert manifest["tables"]["labels"] == {
        "glob": "labels/*.parquet", "topic": "label",
        "rows": sum(label_count(b) for b in bags.readable)}
    assert manifest["rate_hz"] == 50.0
    assert manifest["bags"][0]["warning"] is not None  # the cut bag is reported
    assert [Path(s["source"]).name for s in manifest["skipped"]] == ["notes.txt"]
    assert manifest["d"] == 16
    assert manifest["c"] == 8


def test_columns_are_typed_and_the_bag_metadata_rides_in_the_schema(made: Path) -> None:
    labels = pads.dataset(made / "labels").to_table()
    schema = labels.schema
    assert schema.field("episode_index").type == pa.int32()
    assert schema.field("frame_index").type == pa.int64()
    assert schema.field("timestamp").type == pa.timestamp("ns")
    assert schema.field("receive_time").type == pa.timestamp("ns", tz="UTC")
    assert schema.field("seq").type == pa.int64()
    assert schema.field("t").type == pa.float64()
    assert schema.field("src").type == pa.string()
    assert schema.field("x").type == pa.list_(pa.float32(), 16)
    assert schema.field("y").type == pa.list_(pa.uint8(), 8)
    first = sorted((made / "labels").iterdir())[0]
    assert first.name == "labels-00000-cut.parquet"
    info = json.loads(pq.read_schema(first).metadata[b"robot_daemon"])
    assert info["d"] == 16
    assert info["class_names"][0] == "pedestrian"
    assert info["protocol_version"] == 1
    assert (info["format"], info["table"], info["episode_index"]) == (manifest.FORMAT, "labels", 0)
    assert "damaged" in info["warning"]


def test_every_file_has_one_schema_so_any_glob_reads_and_says_what_a_row_is(
    bags: Bags, made: Path
) -> None:
    # What DuckDB's 'DIR/**/*.parquet' and polars' scan_parquet of it need: one schema.
    files = sorted(made.rglob("*.parquet"))
    schemas = {pq.read_schema(f).remove_metadata() for f in files}
    assert len(schemas) == 1
    every = pads.dataset(files).to_table(columns=["topic", "y"])
    topics = every.column("topic").to_pylist()
    labelled = [t for t, y in zip(topics, every.column("y").to_pylist(), strict=True)
                if y is not None]
    got = {t: (topics.count(t), labelled.count(t)) for t in set(topics)}
    frames, labels = (sum(label_count(b, topic) for b in bags.readable)
                      for topic in ("frame", "label"))
    assert got == {"frame": (frames, 0), "label": (labels, labels)}


def test_the_times_are_the_bags_sensor_and_receive_times(bags: Bags, made: Path) -> None:
    from robot_daemon.bag import BagReader

    with BagReader(bags.good[2]) as reader:
        messages = list(reader.messages(["frame"]))
    frames = pq.read_table(made / "frames" / "frames-00004-run2.parquet")
    assert frames.column("episode_index").to_pylist() == [4] * len(messages)
    assert frames.column("frame_index").to_pylist() == list(range(len(messages)))
    assert frames.column("timestamp").cast(pa.int64()).to_pylist() == [
        m.sensor_ns for m in messages]
    assert frames.column("receive_time").cast(pa.int64()).to_pylist() == [
        m.recv_ns for m in messages]
    assert frames.column("y").null_count == len(messages)


def test_the_labels_read_back_equal_the_bags_decoded_one_by_one(bags: Bags, made: Path) -> None:
    expected = read_labelled(bags.readable)
    files = manifest.files(str(made), "labels")
    reads = [decode.read_labels(f).labels for f in files]
    X = np.concatenate([r.X for r in reads if r is not None])
    Y = np.concatenate([r.Y for r in reads if r is not None])
    np.testing.assert_array_equal(X, expected.X)
    np.testing.assert_array_equal(Y, expected.Y)


def test_pandas_reads_the_dataset(made: Path) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.read_parquet(made / "frames")
    assert list(frame.columns[:3]) == ["episode_index", "frame_index", "topic"]
    assert len(frame["x"].iloc[0]) == 16


def test_an_existing_dataset_is_refused_in_one_line_without_overwrite(
    made: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(p.name for p in made.rglob("*"))
    assert main(["dataset", "nowhere.mcap", "--out", str(made)]) == 2
    assert capsys.readouterr().err == (f"robot-daemon dataset: error: --out {made} exists;"
                                       " pass --overwrite to replace it\n")
    assert sorted(p.name for p in made.rglob("*")) == before


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_overwrite_replaces_a_dataset_and_leaves_nothing_of_the_old_one(
    bags: Bags, tmp_path: Path
) -> None:
    out = tmp_path / "ds"
    assert main(["dataset", str(bags.good[1]), str(bags.good[2]), "--out", str(out)]) == 0
    assert main(["dataset", str(bags.good[0]), "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "dataset.json", "frames", "frames/frames-00000-run0.parquet", "labels",
        "labels/labels-00000-run0.parquet"]
    manifest = json.loads((out / "dataset.json").read_text())
    assert [b["source"] for b in manifest["bags"]] == [str(bags.good[0])]


def test_a_failed_overwrite_keeps_the_old_dataset_as_it_was(
    bags: Bags, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "ds"
    assert main(["dataset", str(bags.good[2]), "--out", str(out)]) == 0
    old = _snapshot(out)
    _no_space(monkeypatch, after=1)
    capsys.readouterr()
    assert main(["dataset", *map(str, bags.good), "--out", str(out), "--overwrite"]) == 2
    assert capsys.readouterr().err.endswith(
        f": No space left on device (the partial dataset was removed; {out} holds the old"
        " one as it was)\n")
    assert _snapshot(out) == old
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "frames", "labels"]


def test_a_manifest_that_fails_to_write_puts_the_old_dataset_back(
    bags: Bags, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "ds"
    assert main(["dataset", str(bags.good[2]), "--out", str(out)]) == 0
    old = _snapshot(out)

    def full(self: Path, text: str) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    assert main(["dataset", str(bags.good[1]), "--out", str(out), "--overwrite"]) == 2
    assert _snapshot(out) == old
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "frames", "labels"]


def test_a_signal_while_the_dataset_is_put_in_place_puts_the_old_one_back(
    bags: Bags, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGTERM (or Ctrl-C) between the renames: once, the old dataset stayed hidden in
    a .replaced- directory, and --out held the new tables without a manifest."""
    from robot_daemon.cli.args import Terminated

    out = tmp_path / "ds"
    assert main(["dataset", str(bags.good[2]), "--out", str(out)]) == 0
    old = _snapshot(out)

    def stopped(out: Path, summary: dataset.DatasetSummary) -> None:
        raise Terminated

    monkeypatch.setattr(dataset, "_write_manifest", stopped)
    assert main(["dataset", str(bags.good[1]), "--out", str(out), "--overwrite"]) == 143
    assert _snapshot(out) == old
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "frames", "labels"]


def test_overwrite_does_not_take_an_output_that_holds_an_input(
    bags: Bags, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ds"
    assert main(["dataset", str(bags.good[2]), "--out", str(out)]) == 0
    inside = out / "labels" / "run1.mcap"  # a bag put into the old dataset's table
    shutil.copyfile(bags.good[1], inside)
    capsys.readouterr()
    assert main(["dataset", str(inside), "--out", str(out), "--overwrite"]) == 2
    assert f"--out {out} holds the source {inside}" in capsys.readouterr().err
    assert inside.exists()


def test_bags_of_another_size_are_reported_and_left_out(tmp_path: Path) -> None:
    from robot_daemon.fleet.dataset import WrittenBag

    with dataset.creating(str(tmp_path / "ds")) as build:
        (build.staging / "frames" / "frames-00001-b.parquet").write_bytes(b"x")
        first = WrittenBag("a.mcap", 0, frames=1,
                           files={"frames": "frames/frames-00000-a.parquet"}, d=16, c=8)
        other = WrittenBag("b.mcap", 1, frames=1,
                           files={"frames": "frames/frames-00001-b.parquet"}, d=4, c=8)
        summary = dataset.finish(build, [other, first])
    assert [b.source for b in summary.bags] == ["a.mcap"]
    assert summary.skipped[0]["source"] == "b.mcap"
    assert "d=4" in summary.skipped[0]["reason"]
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == [
        "dataset.json", "frames", "labels"]
    assert list((tmp_path / "ds" / "frames").iterdir()) == []


def _no_space(monkeypatch: pytest.MonkeyPatch, after: int) -> None:
    """Parquet writes fail as on a full disk after ``after`` files, leaving half a file."""
    write_table = pq.write_table
    calls = []

    def write(table: pa.Table, where: str | Path, **kwargs: object) -> None:
        calls.append(where)
        if len(calls) > after:
            Path(where).write_bytes(b"PAR1 half a file")
            raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28]"
                          " No space left on device")
        write_table(table, where, **kwargs)

    monkeypatch.setattr(pq, "write_table", write)


@pytest.mark.parametrize("existing", [False, True])
def test_a_full_disk_stops_the_job_in_one_line_and_removes_what_it_wrote(
    bags: Bags, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], existing: bool,
) -> None:
    out = tmp_path / "ds"
    if existing:
        out.mkdir()
        (out / "notes.txt").write_text("mine\n")
    _no_space(monkeypatch, after=3)  # the first bag's two tables, and one more
    assert main(["dataset", *map(str, bags.good), "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("robot-daemon dataset: error: cannot write ")
    assert err.endswith(f": No space left on device (the partial dataset {out} was removed)")
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert left == (["ds", "ds/notes.txt"] if existing else [])


def test_a_manifest_that_fails_to_write_takes_the_tables_with_it(
    bags: Bags, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def full(self: Path, text: str) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    assert main(["dataset", str(bags.good[2]), "--out", str(tmp_path / "ds")]) == 2
    assert capsys.readouterr().err.endswith("dataset.json: No space left on device (the"
                                            f" partial dataset {tmp_path / 'ds'} was removed)\n")
    assert list(tmp_path.iterdir()) == []


def _labels_file(path: Path, **columns: pa.Array) -> Path:
    """A labels file of two rows, with ``columns`` in place of ours."""
    table = {
        "seq": pa.array([0, 1], pa.int64()),
        "t": pa.array([0.0, 0.02], pa.float64()),
        "x": pa.array([[0.5] * 16, [1.5] * 16], pa.list_(pa.float32(), 16)),
        "y": pa.array([[0] * 8, [1] * 8], pa.list_(pa.uint8(), 8)),
        **columns,
    }
    pq.write_table(pa.table(table), path)
    return path


@pytest.mark.parametrize(("columns", "reason"), [
    ({"x": pa.array([[0.5] * 16, [1.5] * 15], pa.list_(pa.float32()))},
     "column x is list<element: float>, not a fixed-size list of float"),
    ({"x": pa.array([[0.5] * 16] * 2, pa.list_(pa.float64(), 16))},
     "column x is fixed_size_list<element: double>[16], not a fixed-size list of float"),
    ({"y": pa.array([[0] * 8, [1] * 8], pa.list_(pa.uint8()))}, "column y is list"),
    ({"t": pa.array(["0", "1"])}, "column t is string, not double"),
    ({"seq": pa.array([0.0, 1.0])}, "column seq is double, not int64"),
    ({"y": None}, "no column y"),
    ({"x": pa.array([[0.5] * 16, None], pa.list_(pa.float32(), 16))}, "missing values in x"),
    ({"x": pa.array([[0.5] * 16, [None] * 16], pa.list_(pa.float32(), 16))},
     "missing values in x values"),
])
def test_a_labels_file_of_another_schema_is_skipped_with_its_reason(
    tmp_path: Path, columns: dict[str, pa.Array | None], reason: str
) -> None:
    kept = {k: v for k, v in columns.items() if v is not None}
    path = _labels_file(tmp_path / "labels.parquet", **kept)
    if any(v is None for v in columns.values()):
        table = pq.read_table(path)
        pq.write_table(table.drop_columns([k for k, v in columns.items() if v is None]), path)
    read = decode.read_labels(str(path))
    assert read.labels is None
    assert read.skipped is not None
    assert reason in read.skipped


def test_rows_the_wire_decoder_would_refuse_are_counted_not_read(tmp_path: Path) -> None:
    path = _labels_file(
        tmp_path / "labels.parquet",
        seq=pa.array([0, 1, -2, 3], pa.int64()),
        t=pa.array([0.0, 0.02, 0.04, float("nan")], pa.float64()),
        x=pa.array([[0.5] * 16, [float("inf")] * 16, [1.0] * 16, [1.0] * 16],
                   pa.list_(pa.float32(), 16)),
        y=pa.array([[0] * 8, [1] * 8, [1] * 8, [2] * 8], pa.list_(pa.uint8(), 8)),
    )
    read = decode.read_labels(str(path))
    assert read.labels is not None
    assert read.labels.seq.tolist() == [0]
    assert dict(read.labels.rejected) == {"non_finite": 2, "negative_seq": 1}


def test_eval_and_train_skip_a_dataset_file_whose_x_has_no_fixed_size(
    bags: Bags, model_path: Path, scheduler: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ds = tmp_path / "ds"
    assert main(["dataset", *map(str, bags.good[1:]), "--out", str(ds)]) == 0
    second = sorted((ds / "labels").iterdir())[1]
    table = pq.read_table(second)
    ragged = pa.array(table.column("x").to_pylist(), pa.list_(pa.float32()))
    pq.write_table(table.set_column(table.schema.get_field_index("x"), "x", ragged), second)
    capsys.readouterr()
    for command in (["eval", str(model_path), str(ds)],
                    ["eval", str(model_path), str(ds), "--scheduler", scheduler],
                    ["train", str(ds), "--out", str(tmp_path / "m.npz"), "--epochs", "1"]):
        assert main(command) == 0
        err = capsys.readouterr().err
        assert f"warning: skipped {second}: not a labels file of a robot-daemon dataset" \
            " (column x is list<element: float>" in err


def test_a_manifest_of_another_form_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text(json.dumps({"format": manifest.FORMAT,
                                                       "bags": [{"source": "a.mcap"}]}))
    with pytest.raises(ConfigError, match="does not list its files as `robot-daemon dataset`"):
        manifest.files(str(tmp_path), "labels")


@pytest.mark.parametrize(("found", "said"), [
    ("robot_daemon.dataset/1", "is a dataset of the older format robot_daemon.dataset/1;"
     " this robot-daemon reads robot_daemon.dataset/2: write it again with `robot-daemon"
     " dataset SOURCE... --out {ds} --overwrite`"),
    ("robot_daemon.dataset/3", "is a dataset of the newer format robot_daemon.dataset/3;"
     " this robot-daemon reads robot_daemon.dataset/2: upgrade robot-daemon, or write it"),
])
def test_a_dataset_of_another_format_version_is_refused_in_one_line(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], found: str,
    said: str,
) -> None:
    ds = tmp_path / "ds"
    (ds / "labels").mkdir(parents=True)
    (ds / "dataset.json").write_text(json.dumps({"format": found, "bags": []}))
    for command in (["eval", str(model_path), str(ds)],
                    ["train", str(ds), "--out", str(tmp_path / "m.npz")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1
        assert f"{ds} {said.format(ds=ds)}" in err


def test_a_dataset_into_a_directory_of_its_bags_is_refused(
    bags: Bags, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # Its manifest would make the directory a dataset, hiding the bags from every walk.
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copyfile(bags.good[2], runs / "run2.mcap")
    for spec in (str(runs), str(runs / "*.mcap"), str(runs / "run2.mcap")):
        assert main(["dataset", spec, "--out", str(runs)]) == 2
        assert f"--out {runs} holds the source {runs / 'run2.mcap'}" in capsys.readouterr().err
    assert sorted(p.name for p in runs.iterdir()) == ["run2.mcap"]


def test_what_a_killed_dataset_left_is_named_not_piled_up_or_written_over(
    tmp_path: Path,
) -> None:
    check_out = dataset.check_out
    out = tmp_path / "ds"
    out.mkdir()
    check_out(str(out), overwrite=True)  # nothing left: fine
    (out / ".building-abc").mkdir()  # a SIGKILL mid-build
    with pytest.raises(ConfigError, match=r"\.building-abc: the partial build of a `dataset`"):
        check_out(str(out), overwrite=True)
    (out / ".building-abc").rmdir()
    (out / ".replaced-xyz").mkdir()  # a SIGKILL while the new one was put in place
    with pytest.raises(ConfigError, match=r"\.replaced-xyz: the dataset a `dataset --overwrite`"):
        check_out(str(out), overwrite=True)
