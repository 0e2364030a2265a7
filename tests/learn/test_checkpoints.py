"""Checkpoints: versioned atomic saves, pruning, and the newest valid one on start."""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest

from robot_daemon.errors import ConfigError
from robot_daemon.learn.checkpoints import CheckpointStore
from robot_daemon.model import Model, from_mlp
from robot_daemon.nn import MLP


def _model(seed: int) -> Model:
    return from_mlp(MLP(4, 8, 2, rng=seed), training={"seed": seed})


def test_saves_keep_the_newest_versions(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ckpt", keep=3)
    for version in range(1, 7):
        store.save(_model(version), version)
    assert [v for v, _ in store.versions()] == [4, 5, 6]
    newest = store.newest()
    assert newest is not None
    assert (newest.version, newest.model.training["seed"]) == (6, 6)
    assert newest.path.name == "model-v00000006.npz"


def test_a_broken_newest_checkpoint_is_skipped(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=5)
    store.save(_model(1), 1)
    store.save(_model(2), 2)
    data = store.path(2).read_bytes()
    store.path(2).write_bytes(data[: len(data) // 2])  # e.g. a disk that lied about fsync
    newest = store.newest()
    assert newest is not None
    assert newest.version == 1
    np.testing.assert_array_equal(newest.model.mlp.linears[0].W, _model(1).mlp.linears[0].W)


def test_empty_directory_has_no_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert CheckpointStore(tmp_path).newest() is None


def test_temporaries_of_interrupted_saves_are_removed(tmp_path: Path) -> None:
    stale = tmp_path / ".model-v00000003.npz.abc123.tmp"
    stale.write_bytes(b"half a save")
    other = tmp_path / ".keep.tmp"
    other.write_bytes(b"not ours")
    CheckpointStore(tmp_path)
    assert not stale.exists()
    assert other.exists()


def test_keep_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="keep must be at least 1"):
        CheckpointStore(tmp_path, keep=0)


def _not_a_model() -> bytes:
    """A model file whose W2 member is not .npy: the loader raised AttributeError."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(_model(3).to_bytes())) as src, \
            zipfile.ZipFile(buffer, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, b"junk" if info.filename == "W2.npy" else src.read(info))
    return buffer.getvalue()


def _diverged(seed: int) -> Model:
    """Finite weights that overflow together: inf - inf in the last layer, a NaN output."""
    model = _model(seed)
    l2, l3 = model.mlp.linears[1:]
    l2.b[:] = 1e200
    l3.W[0, 0], l3.W[1, 0] = 1e300, -1e300
    return model


def test_bad_newest_checkpoints_are_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = CheckpointStore(tmp_path, keep=5)
    store.save(_model(1), 1)
    store.save(_diverged(2), 2)
    store.path(3).write_bytes(_not_a_model())
    with caplog.at_level(logging.WARNING, logger="robot_daemon.learn.checkpoints"):
        newest = store.newest()
    assert newest is not None
    assert newest.version == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "model-v00000003.npz" in warnings[0]
    assert "member 'W2' is not an .npy array" in warnings[0]
    assert "model-v00000002.npz" in warnings[1]
    assert "overflows: its logits near its mean reading are not finite" in warnings[1]
