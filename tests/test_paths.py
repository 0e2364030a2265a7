"""The checks of what a command reads and writes: never an input, never a directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from robot_daemon.errors import ConfigError
from robot_daemon.paths import check_input, check_output, replaced_on_success


@pytest.fixture
def bag(tmp_path: Path) -> Path:
    path = tmp_path / "run.mcap"
    path.write_bytes(b"recorded")
    return path


def test_an_output_that_is_an_input_is_refused_by_name_symlink_and_hard_link(
    bag: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sym.mcap").symlink_to(bag)
    os.link(bag, tmp_path / "hard.mcap")
    monkeypatch.chdir(tmp_path)
    for out in (bag, Path("run.mcap"), Path("./sub/../run.mcap"), tmp_path / "sym.mcap",
                tmp_path / "hard.mcap"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(ConfigError, match="would destroy what is read"):
            check_output(out, [tmp_path / "other.mcap", bag])
    assert bag.read_bytes() == b"recorded"


def test_an_existing_output_is_replaced_only_when_allowed(bag: Path) -> None:
    check_output(bag, [])
    with pytest.raises(ConfigError, match="exists; pass --overwrite"):
        check_output(bag, [], overwrite=False)


def test_outputs_that_cannot_be_written_are_refused_before_any_work(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "file").write_bytes(b"")
    cases = {
        tmp_path: "is a directory",
        f"{tmp_path}/new/": "names a directory",
        tmp_path / "fifo": "not a regular file",
        tmp_path / "missing" / "m.npz": "there is no directory",
        tmp_path / "file" / "m.npz": "is a file, not a directory",
        Path("/proc/version"): "cannot",
    }
    for path, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            check_output(path, [], atomic=True)
    check_output(tmp_path / "new.mcap")


def test_inputs_must_be_readable_regular_files(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    cases = {
        tmp_path / "missing.npz": "no such model file",
        tmp_path: "is a directory",
        tmp_path / "fifo": "not a regular file",
        Path("/dev/zero"): "not a regular file",
    }
    for path, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            check_input(path, "model file")


def test_replaced_on_success_leaves_the_old_file_when_the_block_fails(bag: Path) -> None:
    def refuse_half_way() -> None:
        with replaced_on_success(bag) as tmp:
            tmp.write_bytes(b"half")
            raise ConfigError("refused after reading")

    with pytest.raises(ConfigError):
        refuse_half_way()
    assert bag.read_bytes() == b"recorded"
    with replaced_on_success(bag) as tmp:
        tmp.write_bytes(b"new")
    assert bag.read_bytes() == b"new"
    assert sorted(p.name for p in bag.parent.iterdir()) == ["run.mcap"]
