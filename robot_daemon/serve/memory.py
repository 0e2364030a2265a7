"""The daemon's memory bound: what libzmq holds of a message that is still arriving.

After every tick :class:`MemoryBound` reads the daemon's RSS; above the RSS of the
daemon serving its model plus :data:`HELD_MAX_BYTES`, the daemon drops and makes again the
connections of the frames endpoints that went silent, and libzmq frees what it held of a
message still arriving on them. No socket option bounds that message, and the daemon
cannot see it until it is whole; it can see its own RSS and which publisher went silent.

Design: docs/architecture.md, "The memory bound".
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
from collections.abc import Callable
from typing import Final

log = logging.getLogger("robot_daemon.serve.memory")

#: What libzmq may hold beyond the daemon's RSS serving its model: its queues at the
#: high-water mark with frames of the usual size (100,000 frames of 90 bytes, in libzmq's
#: 8 KiB receive buffers: about 25 MB), with room to spare.
HELD_MAX_BYTES: Final = 64 << 20
#: A frames endpoint without a valid frame for this long may be the one whose message is
#: held: a 50 Hz sensor sends one every 20 ms. What arrives meanwhile is over the bound.
SILENT_NS: Final = 50_000_000
#: After a drop, the time libzmq and the allocator have to give the memory back.
SETTLE_NS: Final = 100_000_000


def _trimmer() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``: free pages of every arena back to the OS; None where
    the C library has none (musl, macOS)."""
    with contextlib.suppress(OSError, AttributeError):
        trim = ctypes.CDLL(None).malloc_trim
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
        return lambda: trim(0)
    return None


class MemoryBound:
    """The RSS against the bound: :meth:`rebase` when the model changes, :meth:`over`
    after each tick, :meth:`dropped` after connections were dropped for it. Without
    ``/proc`` (not Linux) it never reports anything."""

    def __init__(self, held_max: int = HELD_MAX_BYTES) -> None:
        self.held_max = held_max
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._fd: int | None = None
        with contextlib.suppress(OSError):
            self._fd = os.open("/proc/self/statm", os.O_RDONLY)
        self._trim = _trimmer()
        self._settle_until: int | None = None  # after a drop: wait until then
        self.base = self.rss() or 0
        self.rebased = 0  # times the RSS stayed over the bound after a drop

    @property
    def bound(self) -> int:
        """The RSS above which :meth:`over` reports, in bytes."""
        return self.base + self.held_max

    def rss(self) -> int | None:
        """This process's resident memory in bytes, or None where it cannot be read."""
        if self._fd is None:
            return None
        try:
            return int(os.pread(self._fd, 128, 0).split()[1]) * self._page
        except (OSError, ValueError, IndexError):
            return None

    def rebase(self) -> None:
        """The RSS now is what serving takes (after the start, after a model swap)."""
        self.base = self.rss() or self.base

    def over(self, now_ns: int) -> int | None:
        """The RSS in bytes when it is over the bound and a drop is due, else None.

        A lower RSS than the base becomes the base: the bound stays as tight as the daemon
        ever was. Within SETTLE_NS of a drop nothing is reported; past it, an RSS still
        over the bound becomes the base (see the module).
        """
        rss = self.rss()
        if rss is None:
            return None
        if rss < self.base:
            self.base = rss
        if self._settle_until is not None:
            if now_ns < self._settle_until:
                return None
            self._settle_until = None
            if rss > self.bound:
                log.warning("the daemon's memory stayed at %.0f MiB after the connections "
                            "were dropped: not libzmq's; its bound is %.0f MiB from now on",
                            rss / 2**20, (rss + self.held_max) / 2**20)
                self.base, self.rebased = rss, self.rebased + 1
                return None
        return rss if rss > self.bound else None

    def dropped(self, now_ns: int) -> None:
        """Connections were dropped for the bound at ``now_ns``: give memory back to the
        OS, and leave the bound alone for SETTLE_NS."""
        if self._trim is not None:
            self._trim()
        self._settle_until = now_ns + SETTLE_NS

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
