"""Checks of the files a command reads and writes, made before any work starts.

A command that writes must never destroy what it reads: ``bag export run.mcap run.mcap``
once truncated the bag it was about to read, and ``train run.mcap --out run.mcap``
replaced the bag by a model. It should also fail in its first second, not after minutes
of training, when its output cannot be written. And what it reads must be a regular
file: opening a FIFO blocks until some writer appears, and ``/dev/zero`` never ends.

:func:`check_output` and :func:`check_input` raise :class:`~robot_daemon.errors.ConfigError`
with a message that names the path and says what to do; the command line prints it as one
line and exits 2.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from robot_daemon.errors import ConfigError

StrPath = str | os.PathLike[str]


def check_input(path: StrPath, what: str = "input") -> None:
    """Raise :class:`ConfigError` unless ``path`` is a regular file this process can read.

    Opens nothing: a FIFO given as input would block the open itself.
    """
    st = _stat(path, what)
    if st is None:
        raise ConfigError(f"no such {what}: {os.fspath(path)}")
    _require_regular(path, st, what)
    if not os.access(path, os.R_OK):
        raise ConfigError(f"cannot read {what} {os.fspath(path)}: permission denied")


def check_output(
    path: StrPath,
    inputs: Iterable[StrPath] = (),
    *,
    overwrite: bool = True,
    atomic: bool = False,
    what: str = "output",
) -> None:
    """Raise :class:`ConfigError` unless ``path`` can be written without destroying anything.

    Refused: an output that is one of ``inputs`` (the same file by device and inode, so
    also through a symlink or a hard link), an existing file when ``overwrite`` is false,
    a directory, a FIFO or device, a path whose directory is missing, and a file or
    directory this process cannot write. ``atomic`` says the writer creates a temporary
    file beside ``path`` and renames it (model files), so the directory must be writable
    even when ``path`` exists.
    """
    text = os.fspath(path)
    if text.endswith(os.sep):
        raise ConfigError(f"{what} {text} names a directory; give a file path")
    st = _stat(path, what)
    if st is not None:
        _check_existing(Path(path), st, inputs, overwrite=overwrite, what=what)
    if st is None or atomic:
        _check_directory(Path(path), what)


def _check_existing(
    path: Path, st: os.stat_result, inputs: Iterable[StrPath], *, overwrite: bool, what: str
) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(
            f"{what} {path} is a directory; give a file path, such as {path / 'NAME'}"
        )
    _require_regular(path, st, what)
    for source in inputs:
        if same_file(path, source):
            same = "" if os.fspath(source) == os.fspath(path) else f" {os.fspath(source)}"
            raise ConfigError(
                f"{what} {path} is the input{same}: writing it would destroy what is read;"
                " give another output path"
            )
    if not overwrite:
        raise ConfigError(f"{what} {path} exists; pass --overwrite to replace it")
    if not os.access(path, os.W_OK):
        raise ConfigError(f"cannot write {what} {path}: permission denied")


def _check_directory(path: Path, what: str) -> None:
    """The directory that will hold ``path`` exists and takes a new file (tried for real:
    permission bits say nothing of a read-only file system, and root ignores them)."""
    directory = path.parent
    if not directory.is_dir():
        raise ConfigError(
            f"cannot write {what} {path}: there is no directory {directory}; create it first"
        )
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot write {what} {path}: cannot create a file in {directory}"
            f" ({exc.strerror or exc})"
        ) from None


def _stat(path: StrPath, what: str) -> os.stat_result | None:
    """``os.stat`` (symlinks followed); ``None`` when nothing is there."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise ConfigError(
            f"{what} {os.fspath(path)}: a part of the path is a file, not a directory"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{what} {os.fspath(path)}: {exc.strerror or exc}") from None


def _require_regular(path: StrPath, st: os.stat_result, what: str) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{what} {os.fspath(path)} is a directory; give the path of a file")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(
            f"{what} {os.fspath(path)} is not a regular file (a FIFO, socket or device);"
            " give the path of a file"
        )


def same_file(a: StrPath, b: StrPath) -> bool:
    """Whether ``a`` and ``b`` are one file (``st_dev`` and ``st_ino``); False if either is
    missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@contextlib.contextmanager
def replaced_on_success(path: StrPath) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed over ``path`` when the block succeeds.

    A writer that fails half-way (or refuses its input after reading it) then leaves
    neither a broken file nor an empty one, and an existing ``path`` stays as it was.
    """
    target = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _file_mode(target))  # mkstemp makes 0600; others may need to read it
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _file_mode(path: Path) -> int:
    """The permissions a replaced file keeps, or those ``open()`` gives a new one."""
    with contextlib.suppress(FileNotFoundError):
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
