"""Reading ``.npz`` archives that may be hostile: bounded, and checked before inflating.

``np.load`` trusts its file more than a daemon on a robot can; here every size is
checked before it costs anything: :func:`read_archive` opens only a regular file of
bounded size, without blocking, and reads it once; :class:`Archive` checks the zip's end
record and members before :mod:`zipfile` parses them; :meth:`Archive.read` checks a
member's ``.npy`` header before allocating and inflates exactly its bytes. Whatever goes
wrong raises :class:`~robot_daemon.errors.ModelError` naming the member.

Design: docs/architecture.md, "Reading hostile archives".
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import stat
import struct
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final

import numpy as np
import numpy.typing as npt

from robot_daemon.errors import ModelError

#: Longest ``.npy`` header read, in bytes (numpy writes about 128; its own limit is 10,000).
MAX_HEADER_BYTES: Final = 4096
#: Largest zip directory read, in bytes: a dozen members take about 1 KiB.
MAX_DIRECTORY_BYTES: Final = 64 * 1024
#: A member is inflated and copied into its array this much at a time.
CHUNK_BYTES: Final = 1 << 20

#: The zip end-of-central-directory record (as :mod:`zipfile` reads it).
_END: Final = struct.Struct("<4s4H2LH")
_END_SIGNATURE: Final = b"PK\x05\x06"
_MAX_COMMENT: Final = 0xFFFF
_ZIP64_LOCATOR: Final = b"PK\x06\x07"
_ZIP64_LOCATOR_BYTES: Final = 20
_COMPRESSIONS: Final = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_ENCRYPTED: Final = 0x1
#: ``.npy`` format version -> bytes of its header-length field.
_LENGTH_BYTES: Final = {(1, 0): 2, (2, 0): 4}
_NOT_REGULAR: Final = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)

#: A caller's verdict on a member's dtype and shape: raise ModelError to refuse it.
Check = Callable[[np.dtype[Any], tuple[int, ...]], None]


def read_archive(path: Path, max_bytes: int, *, max_members: int) -> bytes:
    """The whole content of the regular file ``path``: at most ``max_bytes``, and a zip.

    The zip's end record is checked (:class:`Archive`'s check) on the file's last 64 KiB
    before the rest is read, so that a file that is not a zip at all (a bag deployed by
    mistake) costs a 64 KiB read, not its size in memory.

    Raises:
        ModelError: phrased to follow the file's name ("does not exist", "is a FIFO, not a
            regular file", ...).
    """
    with _opened(path) as fd:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ModelError(f"is {_kind(info.st_mode)}, not a regular file: refused")
        if info.st_size > max_bytes:
            raise ModelError(
                f"has {info.st_size:,} bytes, over the limit of {max_bytes:,}: refused"
            )
        tail = min(info.st_size, _END.size + _MAX_COMMENT)
        _check_end_record(os.pread(fd, tail, info.st_size - tail), max_members)
        data = _read_up_to(fd, info.st_size + 1)
    if len(data) > info.st_size:
        raise ModelError("grew while it was read: write it beside and rename it into place")
    return data


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[int]:
    """A read-only descriptor of ``path``; opening never blocks (a FIFO without a writer)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ModelError("does not exist") from None
    except OSError as exc:
        raise ModelError(f"cannot be opened: {exc.strerror}") from None
    try:
        yield fd
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    return next((name for test, name in _NOT_REGULAR if test(mode)), "not a regular file")


def _read_up_to(fd: int, size: int) -> bytes:
    """At most ``size`` bytes of ``fd``, fewer at its end (one read, for a regular file)."""
    parts = []
    while size > 0 and (part := os.read(fd, size)):
        parts.append(part)
        size -= len(part)
    return b"".join(parts)  # one part: no copy


class Archive:
    """The ``.npy`` members of an ``.npz`` archive held in memory; a context manager.

    ``members`` maps each member's name (without ``.npy``) to its zip entry; the entry's
    ``file_size`` is the size the archive declares, which :meth:`read` never exceeds.
    """

    def __init__(self, data: bytes, *, max_members: int) -> None:
        _check_end_record(data, max_members)
        self._zip = zipfile.ZipFile(io.BytesIO(data))
        try:
            self.members = _members(self._zip)
        except BaseException:
            self._zip.close()
            raise

    def __enter__(self) -> Archive:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._zip.close()

    def declared_bytes(self) -> int:
        """What the members would inflate to, as the directory declares it."""
        return sum(info.file_size for info in self.members.values())

    def read(
        self, name: str, check: Check, out: npt.NDArray[Any] | None = None
    ) -> npt.NDArray[Any]:
        """The member ``name`` as an array, once ``check`` accepted its dtype and shape.

        With ``out`` (C-contiguous, of the dtype and shape ``check`` accepts), the member
        is read into it and ``out`` is returned: no array of its own is allocated.
        """
        with self._zip.open(self.members[name]) as f:
            dtype, shape, fortran = _header(f, name)
            if dtype.hasobject:
                raise ModelError(f"member {name!r} is an object array, which needs pickle:"
                                 " refused")
            check(dtype, shape)
            if out is not None and (out.dtype != dtype or out.shape != shape
                                    or not out.flags.c_contiguous):
                raise ValueError(f"cannot read member {name!r} ({dtype} {shape}) into an"
                                 f" array of {out.dtype} {out.shape}")
            array = _data(f, name, dtype, shape, fortran, out)
            if f.read(1):
                raise ModelError(f"member {name!r} has bytes after its array")
        return array


def _check_end_record(data: bytes, max_members: int) -> None:
    """Refuse an archive whose directory is too large before zipfile builds it."""
    at = _end_record_offset(data)
    if at is None:
        raise ModelError("is not an .npz archive (truncated, or not a model file)")
    total, size = _END.unpack_from(data, at)[4:6]
    if at >= _ZIP64_LOCATOR_BYTES and data.startswith(_ZIP64_LOCATOR,
                                                      at - _ZIP64_LOCATOR_BYTES):
        raise ModelError("is a zip64 archive: no model file needs one (refused)")
    if total > max_members or size > MAX_DIRECTORY_BYTES:
        raise ModelError(f"declares {total:,} members in a directory of {size:,} bytes"
                         f" (at most {max_members} members and {MAX_DIRECTORY_BYTES:,} bytes"
                         " accepted): refused")


def _end_record_offset(data: bytes) -> int | None:
    """Where the end record is, found as :mod:`zipfile` finds it (so both read the same one).

    The last bytes if they are a record without a comment; else the last signature in
    the stretch a comment could fill.
    """
    last = len(data) - _END.size
    if last >= 0 and data.startswith(_END_SIGNATURE, last) and data.endswith(b"\0\0"):
        return last
    at = data.rfind(_END_SIGNATURE, max(0, last - _MAX_COMMENT))
    return at if 0 <= at <= last else None


def _members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        name = info.filename.removesuffix(".npy")
        if name in members:
            raise ModelError(f"has duplicate members ({name!r}): refused")
        if info.compress_type not in _COMPRESSIONS or info.flag_bits & _ENCRYPTED:
            raise ModelError(f"member {name!r} is encrypted or compressed with method"
                             f" {info.compress_type} (only stored and deflate are read)")
        members[name] = info
    return members


def _header(f: IO[bytes], name: str) -> tuple[np.dtype[Any], tuple[int, ...], bool]:
    """Parse an ``.npy`` header of at most MAX_HEADER_BYTES: (dtype, shape, fortran order)."""
    try:
        version = np.lib.format.read_magic(f)
    except ValueError:
        raise ModelError(f"member {name!r} is not an .npy array") from None
    length_bytes = _LENGTH_BYTES.get(version)
    if length_bytes is None:
        raise ModelError(f"member {name!r} is .npy format {version}, not 1.0 or 2.0")
    raw_length = _read_exact(f, length_bytes, name)
    length = int.from_bytes(raw_length, "little")
    if length > MAX_HEADER_BYTES:
        raise ModelError(f"member {name!r} has an .npy header of {length:,} bytes, over the"
                         f" limit of {MAX_HEADER_BYTES:,}")
    header = io.BytesIO(raw_length + _read_exact(f, length, name))
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    try:
        shape, fortran, dtype = read(header, max_header_size=MAX_HEADER_BYTES)
    except ValueError as exc:
        raise ModelError(f"member {name!r} has a malformed .npy header ({exc})") from None
    return dtype, tuple(shape), bool(fortran)


def _data(
    f: IO[bytes], name: str, dtype: np.dtype[Any], shape: tuple[int, ...], fortran: bool,
    out: npt.NDArray[Any] | None = None,
) -> npt.NDArray[Any]:
    """Read the array the header announced, a chunk at a time, into its own memory or
    into ``out`` (C-contiguous, of that dtype and shape)."""
    if dtype.itemsize == 0:
        raise ModelError(f"member {name!r} has items of 0 bytes")
    if out is None or fortran:
        flat = np.empty(math.prod(shape) * dtype.itemsize, dtype=np.uint8)
    else:
        flat = out.reshape(-1).view(np.uint8)  # out's own bytes (a view: it is contiguous)
    buffer = flat.data  # a memoryview of the array's bytes
    done = 0
    while done < len(buffer):
        chunk = f.read(min(CHUNK_BYTES, len(buffer) - done))
        if not chunk:
            raise ModelError(f"member {name!r} is truncated")
        buffer[done:done + len(chunk)] = chunk
        done += len(chunk)
    array = flat.view(dtype)
    if fortran:  # column-major on disk: transposing the reversed shape reads it right
        if out is None:
            return np.ascontiguousarray(array.reshape(shape[::-1]).T)
        out[...] = array.reshape(shape[::-1]).T
        return out
    return array.reshape(shape) if out is None else out


def _read_exact(f: IO[bytes], size: int, name: str) -> bytes:
    data = f.read(size)
    if len(data) != size:
        raise ModelError(f"member {name!r} is truncated")
    return data


__all__ = ["MAX_DIRECTORY_BYTES", "MAX_HEADER_BYTES", "Archive", "Check", "read_archive"]
