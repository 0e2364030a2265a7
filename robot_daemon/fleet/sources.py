"""What the fleet jobs read: bags given as files, directories or globs, and datasets.

``robot-daemon eval MODEL runs/ 'archive/2026-11-*/*.mcap' fleet-set/`` names its
inputs three ways; :func:`expand` turns them into one ordered list of :class:`Source`.
A directory holding ``dataset.json`` is a Parquet dataset written by ``robot-daemon
dataset``; any other directory stands for every file under it (recursively, hidden files
left out), and a glob for every file it matches, each in sorted order. Whether a file is
really a bag is decided when it is read: a foreign file is reported and skipped there,
never fatal to the job.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from robot_daemon.errors import ConfigError

#: The file that makes a directory a dataset (see :mod:`robot_daemon.fleet.dataset`).
MANIFEST = "dataset.json"
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Source:
    """One input: a bag file, a dataset directory, or one Parquet file of a dataset."""

    path: str
    kind: Literal["bag", "dataset", "parquet"]


def expand(specs: list[str]) -> list[Source]:
    """Files, directories and globs in ``specs`` -> sources, in the order given.

    A file named twice (directly and through a directory, say) is kept once, where it
    first appears.

    Raises:
        ConfigError: a spec that is neither an existing path nor a glob with matches.
    """
    found: list[Source] = []
    seen: set[str] = set()
    for spec in specs:
        for source in _expand_one(spec):
            key = os.path.realpath(source.path)
            if key not in seen:
                seen.add(key)
                found.append(source)
    return found


def _expand_one(spec: str) -> list[Source]:
    path = Path(spec)
    if path.is_dir():
        if (path / MANIFEST).is_file():
            return [Source(spec, "dataset")]
        return [Source(str(p), "bag") for p in _files_under(path)]
    if path.exists():
        return [Source(spec, "bag")]
    if _GLOB_CHARS & set(spec):
        matches = sorted(glob.glob(spec, recursive=True))
        if matches:
            return [s for m in matches for s in _expand_one(m)]
        raise ConfigError(f"no file matches {spec!r}")
    raise ConfigError(f"no such file or directory: {spec}")


def _files_under(directory: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(root) / n for n in sorted(names) if not n.startswith(".")]
    return files


def all_plain_bags(specs: list[str]) -> bool:
    """Whether every spec is an existing regular file (the one-process jobs' input)."""
    return all(Path(s).is_file() for s in specs)


def partitions(sources: list[Source], table: str = "labels") -> list[Source]:
    """Bags as they are, datasets as their Parquet files of ``table`` (kind "parquet")."""
    from robot_daemon.fleet import dataset

    parts: list[Source] = []
    for source in sources:
        if source.kind == "dataset":
            parts += [Source(f, "parquet") for f in dataset.files(source.path, table)]
        else:
            parts.append(source)
    return parts
