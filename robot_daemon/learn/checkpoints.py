"""Checkpoints of a model that learns while it serves: atomic, versioned, pruned.

A :class:`CheckpointStore` keeps the last ``keep`` versions of a model in one directory
as ``model-v<version>.npz``, each written atomically (temporary file, fsync, rename, as
:meth:`Model.save`), so that a crash at any moment leaves every checkpoint either
complete or absent. On start, :meth:`CheckpointStore.newest` returns the newest
checkpoint that loads, validates and predicts finite values, skipping (and reporting)
any that do not.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from robot_daemon import model as model_file
from robot_daemon.errors import ConfigError, ModelError

log = logging.getLogger("robot_daemon.learn.checkpoints")

_NAME: Final = re.compile(r"^model-v(\d{1,18})\.npz$")
#: What Model.save leaves behind when the process dies between creating and renaming.
_STALE_TEMP: Final = re.compile(r"^\.model-v\d{1,18}\.npz\..*\.tmp$")


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint that loaded and validated."""

    model: model_file.Model
    version: int
    path: Path


class CheckpointStore:
    """The checkpoints of one daemon, in ``directory`` (created if missing)."""

    def __init__(self, directory: str | os.PathLike[str], keep: int = 5) -> None:
        if keep < 1:
            raise ConfigError(f"checkpoints: keep must be at least 1, got {keep}")
        self.directory = Path(directory)
        self.keep = keep
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the checkpoint directory {self.directory}: {exc.strerror}"
            ) from None
        self._remove_stale_temporaries()

    def _remove_stale_temporaries(self) -> None:
        """Delete the temporary files of saves that a crash interrupted (one daemon per dir)."""
        for path in self.directory.iterdir():
            if _STALE_TEMP.match(path.name):
                try:
                    path.unlink()
                except OSError as exc:
                    log.warning("could not remove %s: %s", path, exc.strerror)

    def path(self, version: int) -> Path:
        return self.directory / f"model-v{version:08d}.npz"

    def versions(self) -> list[tuple[int, Path]]:
        """(version, path) of every file named like a checkpoint, oldest first."""
        found = []
        for path in self.directory.iterdir():
            match = _NAME.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def save(self, model: model_file.Model, version: int) -> Path:
        """Write ``model`` as ``version`` atomically, then drop all but the newest ``keep``."""
        return self.write(model.to_bytes(), version)

    def write(self, data: bytes, version: int) -> Path:
        """Write a model file's bytes (:meth:`Model.to_bytes`) as ``version``, like :meth:`save`.

        Touches only the directory: safe in a thread of its own while the model learns on.
        """
        path = self.path(version)
        model_file.write_atomically(path, lambda f: f.write(data))
        for _, old in self.versions()[: -self.keep]:
            try:
                old.unlink()
            except OSError as exc:  # pruning is housekeeping: never lose the save over it
                log.warning("could not remove old checkpoint %s: %s", old, exc.strerror)
        return path

    def newest(self) -> Checkpoint | None:
        """The newest checkpoint that loads, validates and predicts finite values; ``None``
        if there is none.

        A bad one (damaged, not a model, a model that diverged) is skipped with a WARNING
        and the next older one is tried: a bad newest file must never stop a start.
        """
        for version, path in reversed(self.versions()):
            try:
                model = model_file.load(path)
                model_file.check_predicts_finite(model)
            except ModelError as exc:
                log.warning("skipping checkpoint %s: %s", path.name, exc)
                continue
            return Checkpoint(model, version, path)
        return None
