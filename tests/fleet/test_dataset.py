"""robot-daemon dataset: bags into Parquet that pyarrow (and pandas) read as it is."""

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
from robot_daemon.fleet import dataset
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
    assert manifest["bags"][0]["warning"] is not None  # the cut bag is reported
    assert [Path(s["source"]).name for s in manifest["skipped"]] == ["notes.txt"]
    assert manifest["d"] == 16
    assert manifest["c"] == 8


def test_columns_are_typed_and_the_bag_metadata_rides_in_the_schema(made: Path) -> None:
    labels = pads.dataset(made / "labels").to_table()
    schema = labels.schema
    assert schema.field("seq").type == pa.int64()
    assert schema.field("t").type == pa.float64()
    assert schema.field("src").type == pa.string()
    assert schema.field("x").type == pa.list_(pa.float32(), 16)
    assert schema.field("y").type == pa.list_(pa.uint8(), 8)
    first = sorted((made / "labels").iterdir())[0]
    info = json.loads(pq.read_schema(first).metadata[b"robot_daemon"])
    assert info["d"] == 16
    assert info["class_names"][0] == "pedestrian"
    assert info["protocol_version"] == 1
    assert "damaged" in info["warning"]


def test_the_labels_read_back_equal_the_bags_decoded_one_by_one(bags: Bags, made: Path) -> None:
    expected = read_labelled(bags.readable)
    files = dataset.files(str(made), "labels")
    reads = [dataset.read_labels(f).labels for f in files]
    X = np.concatenate([r.X for r in reads if r is not None])
    Y = np.concatenate([r.Y for r in reads if r is not None])
    np.testing.assert_array_equal(X, expected.X)
    np.testing.assert_array_equal(Y, expected.Y)


def test_pandas_reads_the_dataset(made: Path) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.read_parquet(made / "frames")
    assert list(frame.columns[:3]) == ["seq", "t", "src"]
    assert len(frame["x"].iloc[0]) == 16


def test_an_existing_dataset_is_not_overwritten(made: Path) -> None:
    with pytest.raises(ConfigError, match=r"already holds dataset\.json"):
        dataset.check_out(str(made))


def test_bags_of_another_size_are_reported_and_left_out(tmp_path: Path) -> None:
    from robot_daemon.fleet.dataset import WrittenBag

    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "00001-b.parquet").write_bytes(b"x")
    first = WrittenBag("a.mcap", 0, frames=1, files={"frames": "frames/00000-a.parquet"},
                       d=16, c=8)
    other = WrittenBag("b.mcap", 1, frames=1, files={"frames": "frames/00001-b.parquet"},
                       d=4, c=8)
    summary = dataset.finish(str(tmp_path), [other, first])
    assert [b.source for b in summary.bags] == ["a.mcap"]
    assert summary.skipped[0]["source"] == "b.mcap"
    assert "d=4" in summary.skipped[0]["reason"]
    assert not (tmp_path / "frames" / "00001-b.parquet").exists()


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
    read = dataset.read_labels(str(path))
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
    read = dataset.read_labels(str(path))
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
    (tmp_path / "dataset.json").write_text(json.dumps({"format": dataset.FORMAT,
                                                       "bags": [{"source": "a.mcap"}]}))
    with pytest.raises(ConfigError, match="does not list its files as `robot-daemon dataset`"):
        dataset.files(str(tmp_path), "labels")


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
