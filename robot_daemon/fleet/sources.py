"""What the fleet jobs read: bags given as files, directories or globs, and datasets.

``robot-daemon eval MODEL runs/ 'archive/2026-11-*/*.mcap' fleet-set/`` names its
inputs three ways; :func:`expand` turns them into one ordered list of :class:`Source`.
A directory holding ``dataset.json`` is a Parquet dataset written by ``robot-daemon
dataset``; any other directory stands for every regular file under it (recursively,
hidden files left out, a dataset directory met on the way taken as a dataset), and a
glob for every file it matches, each in sorted order. ``**`` in a glob matches any
number of directories; ``dir/**`` alone is ``dir``. Whether a file is really a bag is
decided when it is read: a foreign file is reported and skipped there, never fatal to
the job.

The expansion is bounded, so that a mistyped spec fails in seconds instead of walking a
file system for minutes: symlinked directories are followed, but a walk enters each
directory (by device and inode) once, so that ``a -> .`` loops nothing; at most
:data:`MAX_FILES` files and :data:`MAX_ENTRIES` directory entries looked at per command.
FIFOs, sockets and devices under a directory or matched by a glob are left out (opening
a FIFO blocks); named directly, they are refused.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from robot_daemon import paths
from robot_daemon.errors import ConfigError
from robot_daemon.fleet import manifest
from robot_daemon.fleet.manifest import MANIFEST

#: Most files the sources of one command may expand to: twice a fleet-month of hourly
#: bags (200 robots x 8 h x 30 days = 48,000); more is a mistyped glob or a job to split.
MAX_FILES = 100_000
#: Most directory entries one command's walks and globs may look at (a few seconds on a
#: local disk): ``'/**/*.mcap'`` fails here instead of reading the whole file system.
MAX_ENTRIES = 1_000_000
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Source:
    """One input: a bag file, a dataset directory, or one Parquet file of a dataset.

    ``spec`` is the argument that named it (the file itself, a directory or a glob).
    """

    path: str
    kind: Literal["bag", "dataset", "parquet"]
    spec: str = field(default="", compare=False)

    def named_by(self) -> str:
        """`` (named by 'runs/*')`` when a directory or a glob brought this source in,
        for the messages that name it; empty when it was named itself."""
        return "" if self.spec in ("", self.path) else f" (named by {self.spec!r})"


def expand(
    specs: Sequence[str], *, warn: Callable[[str], None] | None = None,
    max_files: int = MAX_FILES, max_entries: int = MAX_ENTRIES,
) -> list[Source]:
    """Files, directories and globs in ``specs`` -> sources, in the order given.

    A file named twice (directly and through a directory, say) is kept once, where it
    first appears. A directory that cannot be listed (no permission) is left out and
    reported to ``warn``.

    Raises:
        ConfigError: a spec that is neither an existing path nor a glob with matches, a
            file named directly that is not a regular file, or more than ``max_files``
            files or ``max_entries`` directory entries in all.
    """
    found: list[Source] = []
    seen: set[str] = set()
    budget = _Budget(max_files, max_entries, warn)
    for spec in specs:
        budget.spec = spec
        for source in _expand_one(spec, budget):
            key = os.path.realpath(source.path)
            if key not in seen:
                seen.add(key)
                found.append(source)
    return found


class _Budget:
    """Counts what the expansion of one command has looked at; raises past the bounds."""

    def __init__(
        self, max_files: int, max_entries: int, warn: Callable[[str], None] | None
    ) -> None:
        self.max_files, self.max_entries = max_files, max_entries
        self.files = self.entries = 0
        self.spec = ""
        self.warn = warn

    def unreadable(self, directory: str, exc: OSError) -> None:
        """A directory that could not be listed: left out, and said so."""
        if self.warn is not None:
            self.warn(f"cannot list {directory} ({exc.strerror or exc}): left out of"
                      f" {self.spec!r}")

    def file(self) -> None:
        """One more file found."""
        self.files += 1
        if self.files > self.max_files:
            raise ConfigError(
                f"the sources name more than {self.max_files:,} files (reached at"
                f" {self.spec!r}); name fewer directories or a narrower glob, or split"
                " the job")

    def entry(self) -> None:
        """One more directory entry looked at."""
        self.entries += 1
        if self.entries > self.max_entries:
            raise ConfigError(
                f"expanding {self.spec!r} looked at more than {self.max_entries:,} directory"
                " entries; name the directories that hold the bags, or a narrower glob")


def _expand_one(spec: str, budget: _Budget) -> list[Source]:
    if os.path.isdir(spec):
        return list(_walk(spec, spec, budget))
    if os.path.lexists(spec):
        paths.check_input(spec, "source")
        budget.file()
        return [Source(spec, "bag", spec)]
    if _GLOB_CHARS & set(spec):
        matches = sorted(_glob(spec, budget))
        if not matches:
            raise ConfigError(f"no file matches {spec!r}")
        return [s for m in matches for s in _matched(m, spec, budget)]
    raise ConfigError(f"no such file or directory: {spec}")


def _matched(path: str, spec: str, budget: _Budget) -> Iterator[Source]:
    """What a glob match stands for: a directory walked, a regular file as a bag."""
    if os.path.isdir(path):
        yield from _walk(path, spec, budget)
    elif os.path.isfile(path):
        budget.file()
        yield Source(path, "bag", spec)


def _walk(top: str, spec: str, budget: _Budget) -> Iterator[Source]:
    """A dataset directory as itself; any other, every regular file under it, each
    directory's files (sorted) before its subdirectories (sorted), each directory once."""
    entered: set[tuple[int, int]] = set()
    stack = [top]
    while stack:
        directory = stack.pop()
        if not _enter(directory, entered):
            continue
        if os.path.isfile(os.path.join(directory, MANIFEST)):
            budget.file()
            yield Source(directory, "dataset", spec)
            continue
        files, subdirs = _listing(directory, budget)
        for name in files:
            budget.file()
            yield Source(os.path.join(directory, name), "bag", spec)
        stack += [os.path.join(directory, d) for d in reversed(subdirs)]


def _enter(directory: str, entered: set[tuple[int, int]]) -> bool:
    """Whether ``directory`` is new to this walk (a symlink loop meets one it knows)."""
    try:
        st = os.stat(directory)
    except OSError:
        return False  # vanished, or a loop the kernel refuses to resolve (ELOOP)
    key = (st.st_dev, st.st_ino)
    if key in entered:
        return False
    entered.add(key)
    return True


def _listing(directory: str, budget: _Budget) -> tuple[list[str], list[str]]:
    """The regular files and the subdirectories of ``directory`` (symlinks followed),
    sorted, hidden names left out; a directory that cannot be listed gives nothing and is
    reported."""
    files: list[str] = []
    subdirs: list[str] = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                budget.entry()
                if entry.name.startswith("."):
                    continue
                kind = _kind(entry)
                if kind == "dir":
                    subdirs.append(entry.name)
                elif kind == "file":
                    files.append(entry.name)
    except OSError as exc:
        budget.unreadable(directory, exc)
        return [], []
    return sorted(files), sorted(subdirs)


def _kind(entry: os.DirEntry[str]) -> Literal["dir", "file", "other"]:
    """A directory, a regular file, or anything else (a FIFO, a device, a dangling link)."""
    try:
        mode = entry.stat().st_mode  # follows a symlink
    except OSError:
        return "other"  # a dangling symlink
    if stat.S_ISDIR(mode):
        return "dir"
    return "file" if stat.S_ISREG(mode) else "other"


def _glob(spec: str, budget: _Budget) -> list[str]:
    """The paths ``spec`` matches, with the rules of ``glob.glob(recursive=True)`` but
    bounded by ``budget`` and with every directory under a ``**`` visited once.

    Paths are built as the spec spells them: "" stands for the working directory of a
    relative spec, so that ``*.mcap`` gives ``a.mcap`` as ``glob`` does.
    """
    parts = spec.split(os.sep)
    absolute = parts[0] == ""
    candidates = [os.sep] if absolute else [""]
    parts = parts[1:] if absolute else parts
    for i, part in enumerate(parts):
        if part == "**":
            directories = [c for c in candidates if os.path.isdir(c or os.curdir)]
            if i == len(parts) - 1:  # ``dir/**`` stands for the directory, walked later
                candidates = [d or os.curdir for d in directories]
            else:  # zero or more directories
                candidates = [s for d in directories for s in _subdirectories(d, budget)]
        elif not _GLOB_CHARS & set(part):
            candidates = [os.path.join(c, part) for c in candidates
                          if os.path.lexists(os.path.join(c, part))]
        else:
            candidates = [os.path.join(c, n) for c in candidates for n in _names(c, part, budget)]
    return [c for c in candidates if c not in ("", os.sep)]


def _names(directory: str, pattern: str, budget: _Budget) -> list[str]:
    """Names in ``directory`` ("": the working directory) that match the glob
    ``pattern``; hidden ones only when the pattern starts with a dot (as ``glob`` does)."""
    where = directory or os.curdir
    if not os.path.isdir(where):
        return []
    names: list[str] = []
    try:
        with os.scandir(where) as entries:
            for entry in entries:
                budget.entry()
                if entry.name.startswith(".") and not pattern.startswith("."):
                    continue
                if fnmatch.fnmatchcase(entry.name, pattern):
                    names.append(entry.name)
    except OSError as exc:
        budget.unreadable(where, exc)
        return []
    return sorted(names)


def _subdirectories(top: str, budget: _Budget) -> list[str]:
    """``top`` ("": the working directory) and every directory under it (hidden ones
    left out), each once."""
    entered: set[tuple[int, int]] = set()
    found: list[str] = []
    stack = [top]
    while stack:
        directory = stack.pop()
        if not _enter(directory or os.curdir, entered):
            continue
        found.append(directory)
        _, subdirs = _listing(directory or os.curdir, budget)
        stack += [os.path.join(directory, d) for d in reversed(subdirs)]
    return found


def files_read(sources: Sequence[Source]) -> Iterator[tuple[str, Source]]:
    """Every file the sources stand for, beside the source it belongs to: each bag, and
    each dataset's manifest and the Parquet files of its two tables."""
    for source in sources:
        if source.kind != "dataset":
            yield source.path, source
            continue
        yield os.path.join(source.path, MANIFEST), source
        for table in manifest.TABLES:
            for name in manifest.files(source.path, table):
                yield name, source


def check_output(
    out: str, sources: Sequence[Source], *, overwrite: bool, atomic: bool = False,
    what: str = "output",
) -> None:
    """:meth:`InputFiles.check`, then :func:`robot_daemon.paths.check_output` of ``out``.

    Raises:
        ConfigError: ``out`` is one of the files read, exists without ``overwrite``, or
            cannot be written.
    """
    InputFiles(sources).check(out, what)
    paths.check_output(out, overwrite=overwrite, atomic=atomic, what=what)


class InputFiles:
    """The files some sources stand for (:func:`files_read`), by device and inode, so
    that an output is found among them also through a symlink, a hard link, ``..`` or
    another spelling: ``train runs --out runs/a.mcap`` cannot replace a bag that the
    directory ``runs`` names. Each file is looked at once, however many outputs."""

    def __init__(self, sources: Sequence[Source]) -> None:
        self._by_id: dict[tuple[int, int], tuple[str, Source]] = {}
        for path, source in files_read(sources):
            key = _file_id(path)
            if key is not None:
                self._by_id.setdefault(key, (path, source))

    def check(self, out: str, what: str = "output") -> None:
        """Refuse an ``out`` that is one of the files; the message names the argument
        that brought it in."""
        key = _file_id(out)
        if key is None or key not in self._by_id:
            return
        path, source = self._by_id[key]
        raise ConfigError(
            f"{what} {out} is the input {path}{source.named_by()}: writing it would"
            " destroy what is read; give another output path")


def _file_id(path: str) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of ``path`` (symlinks followed), ``None`` if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def all_plain_bags(specs: Sequence[str]) -> bool:
    """Whether every spec is an existing regular file (the one-process jobs' input)."""
    return all(os.path.isfile(s) for s in specs)


def partitions(sources: Sequence[Source], table: str = "labels") -> list[Source]:
    """Bags as they are, datasets as their Parquet files of ``table`` (kind "parquet")."""
    parts: list[Source] = []
    for source in sources:
        if source.kind == "dataset":
            parts += [Source(f, "parquet", source.spec)
                      for f in manifest.files(source.path, table)]
        else:
            parts.append(source)
    return parts
