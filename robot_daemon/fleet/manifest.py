"""A dataset directory's manifest: the format, the tables, where their files are.

``DIR/dataset.json`` makes ``DIR`` a dataset written by ``robot-daemon dataset``
(:mod:`robot_daemon.fleet.dataset` writes it, last); it names the format, d, c, the names
and each bag's files. The jobs that read a dataset (:mod:`robot_daemon.fleet.sources`,
:mod:`robot_daemon.fleet.decode`) find its files here; the columns are listed in
``docs/fleet.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from robot_daemon.errors import ConfigError

#: The file that makes a directory a dataset.
MANIFEST = "dataset.json"
FORMAT_NAME = "robot_daemon.dataset"
#: The format this version writes and reads; any other is refused with one line.
FORMAT_VERSION = 2
FORMAT = f"{FORMAT_NAME}/{FORMAT_VERSION}"
META_KEY = b"robot_daemon"
TABLES = ("frames", "labels")
#: The topic of each table's rows.
TOPICS = {"frames": "frame", "labels": "label"}


def read_manifest(directory: str) -> dict[str, Any]:
    """The manifest of the dataset ``directory``.

    Raises:
        ConfigError: it cannot be read, is not ours, or is of another format version.
    """
    path = Path(directory) / MANIFEST
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{directory} is not a readable dataset ({exc})") from None
    found = doc.get("format") if isinstance(doc, dict) else None
    if found == FORMAT:
        return doc  # type: ignore[no-any-return]
    version = _version(found)
    again = (f"write it again with `robot-daemon dataset SOURCE... --out {directory}"
             " --overwrite`")
    if version is not None and version < FORMAT_VERSION:
        raise ConfigError(f"{directory} is a dataset of the older format {found}; this"
                          f" robot-daemon reads {FORMAT}: {again}")
    if version is not None:
        raise ConfigError(f"{directory} is a dataset of the newer format {found}; this"
                          f" robot-daemon reads {FORMAT}: upgrade robot-daemon, or {again}")
    raise ConfigError(f"{path} is not a {FORMAT} manifest; write datasets with"
                      " `robot-daemon dataset`")


def _version(found: Any) -> int | None:
    """2 of ``robot_daemon.dataset/2``; ``None`` for anything else."""
    prefix = f"{FORMAT_NAME}/"
    if isinstance(found, str) and found.startswith(prefix) and found[len(prefix):].isdigit():
        return int(found[len(prefix):])
    return None


def files(directory: str, table: str) -> list[str]:
    """The Parquet files of ``table`` ("frames" or "labels") of a dataset, in bag order."""
    doc = read_manifest(directory)
    try:
        names = [b["files"][table] for b in doc["bags"] if table in b["files"]]
        ours = all(isinstance(n, str) for n in names)
    except (KeyError, TypeError):  # a list or a string where a map belongs
        ours = False
    if not ours:
        raise ConfigError(f"{Path(directory) / MANIFEST} does not list its files as"
                          " `robot-daemon dataset` writes them; write the dataset again")
    return [str(Path(directory) / n) for n in names]
