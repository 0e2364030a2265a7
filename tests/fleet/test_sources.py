"""Sources: files, directories, globs and datasets into one ordered list."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from robot_daemon.errors import ConfigError
from robot_daemon.fleet.sources import Source, check_output, expand


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_directories_and_globs_expand_in_sorted_order_each_file_once(tmp_path: Path) -> None:
    b = _touch(tmp_path / "runs" / "b.mcap")
    a = _touch(tmp_path / "runs" / "sub" / "a.mcap")
    _touch(tmp_path / "runs" / ".hidden.mcap")
    c = _touch(tmp_path / "c.mcap")
    found = expand([str(c), str(tmp_path / "runs"), str(tmp_path / "*.mcap")])
    assert found == [Source(str(c), "bag"), Source(str(b), "bag"), Source(str(a), "bag")]


def test_a_directory_with_a_manifest_is_a_dataset(tmp_path: Path) -> None:
    _touch(tmp_path / "ds" / "dataset.json")
    assert expand([str(tmp_path / "ds")]) == [Source(str(tmp_path / "ds"), "dataset")]


def test_missing_paths_and_empty_globs_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file or directory"):
        expand([str(tmp_path / "nope.mcap")])
    with pytest.raises(ConfigError, match="no file matches"):
        expand([str(tmp_path / "*.mcap")])


def test_a_directory_loop_of_symlinks_lists_each_directory_at_most_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `a -> .` and `b -> .`: glob's `**` once followed both at every level (2**40 paths).
    bag = _touch(tmp_path / "dir" / "run.mcap")
    deep = _touch(tmp_path / "dir" / "sub" / "deep.mcap")
    for name in ("a", "b"):
        (tmp_path / "dir" / name).symlink_to(".")
    (tmp_path / "dir" / "sub" / "up").symlink_to("..")
    listed: Counter[str] = Counter()
    scandir = os.scandir

    def counting(path: str = ".") -> Any:
        listed[os.path.realpath(path)] += 1
        # Once to find the directories under `**`, once for the names that match.
        assert listed[os.path.realpath(path)] <= 2, f"{path} listed again: a loop"
        return scandir(path)

    monkeypatch.setattr(os, "scandir", counting)
    for spec in (f"{tmp_path}/dir/**/*.mcap", f"{tmp_path}/dir", f"{tmp_path}/dir/**"):
        listed.clear()
        assert [Path(s.path).resolve() for s in expand([spec])] == [bag, deep]


def test_the_expansion_is_bounded_in_files_and_in_entries_looked_at(tmp_path: Path) -> None:
    for i in range(6):
        _touch(tmp_path / "runs" / f"{i}.mcap")
    spec = str(tmp_path / "runs" / "*.mcap")
    assert len(expand([spec], max_files=6)) == 6
    with pytest.raises(ConfigError, match=r"more than 5 files \(reached at '.*runs/\*\.mcap'\)"):
        expand([spec], max_files=5)
    with pytest.raises(ConfigError, match="looked at more than 4 directory entries"):
        expand([str(tmp_path / "runs")], max_entries=4)


def test_fifos_are_left_out_of_directories_and_refused_when_named(tmp_path: Path) -> None:
    # Opening a FIFO blocks until a writer comes: a job would hang on it.
    bag = _touch(tmp_path / "runs" / "a.mcap")
    os.mkfifo(tmp_path / "runs" / "pipe.mcap")
    assert expand([str(tmp_path / "runs")]) == [Source(str(bag), "bag")]
    assert expand([str(tmp_path / "runs" / "*.mcap")]) == [Source(str(bag), "bag")]
    with pytest.raises(ConfigError, match="not a regular file"):
        expand([str(tmp_path / "runs" / "pipe.mcap")])


def test_a_dataset_met_in_a_directory_walk_is_a_dataset(tmp_path: Path) -> None:
    bag = _touch(tmp_path / "archive" / "a.mcap")
    _touch(tmp_path / "archive" / "ds" / "dataset.json")
    _touch(tmp_path / "archive" / "ds" / "labels" / "00000-a.parquet")
    assert expand([str(tmp_path / "archive")]) == [
        Source(str(bag), "bag"), Source(str(tmp_path / "archive" / "ds"), "dataset")]


def test_an_output_that_a_directory_or_a_glob_names_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bag = _touch(tmp_path / "runs" / "a.mcap")
    (tmp_path / "link.mcap").symlink_to(bag)
    os.link(bag, tmp_path / "hard.mcap")
    monkeypatch.chdir(tmp_path)
    for spec in ("runs", "runs/", "runs/*.mcap", "runs/**", str(tmp_path / "runs")):
        found = expand([spec])
        for out in ("runs/a.mcap", str(bag), "./runs/../runs/a.mcap", "link.mcap",
                    "hard.mcap"):
            with pytest.raises(ConfigError, match=f"is the input .*named by '{re.escape(spec)}'"):
                check_output(out, found, overwrite=True)
    check_output("runs/b.mcap", expand(["runs"]), overwrite=False)
