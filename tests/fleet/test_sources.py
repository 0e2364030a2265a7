"""Sources: files, directories, globs and datasets into one ordered list."""

from __future__ import annotations

from pathlib import Path

import pytest

from robot_daemon.errors import ConfigError
from robot_daemon.fleet.sources import Source, expand


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
