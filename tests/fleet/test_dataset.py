"""robot-daemon dataset: bags into Parquet that pyarrow (and pandas) read as it is."""

from __future__ import annotations

import json
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
