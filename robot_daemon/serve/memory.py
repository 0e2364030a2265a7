"""The daemon's memory bound: what libzmq holds of a message that is still arriving.

libzmq bounds a message *part* (``MAXMSGSIZE``) and the whole messages queued per
connection (``RCVHWM``), but not the parts of one message: it hands a message over only
once all of it arrived, and holds it meanwhile. One message of 2,000 parts of 1 MB took
the daemon's RSS to 2 GB and held every valid frame behind it for 6.9 s (172 dropped, a
tick of 160 ms). No socket option bounds it, and the daemon cannot see the message until
it is whole. What it can see is its own RSS, and which publisher went silent: frames come
in order on a connection, so the one sending such a message delivers nothing else
meanwhile.

So after every tick :class:`MemoryBound` reads the RSS (``/proc/self/statm``, a few
microseconds). Above the RSS of the daemon serving its model (taken at the start and after
each reload) plus :data:`HELD_MAX_BYTES`, it names the frames endpoints without a valid
frame for :data:`SILENT_NS`, and the daemon drops and makes again their connections:
libzmq frees what it held of a connection at once (measured: RSS 190 -> 18 MB within
50 ms). A silent endpoint loses nothing by it, and a sensor stuck behind the message
delivers again. While a reload loads (up to three models of 128 MiB at once) the bound
is not checked.

The bound the daemon then keeps: its RSS serving the model, plus HELD_MAX_BYTES, plus what
arrives within one tick (a tick is 20 ms; loopback delivered 250 MB/s to 2 GB/s here).
"""

from __future__ import annotations

import contextlib
import os
from typing import Final

#: What libzmq may hold beyond the daemon's RSS serving its model: its queues at the
#: high-water mark with frames of the usual size (100,000 frames of 90 bytes, in libzmq's
#: 8 KiB receive buffers: about 25 MB), with room to spare.
HELD_MAX_BYTES: Final = 64 << 20
#: A frames endpoint without a valid frame for this long may be the one whose message is
#: held: a 50 Hz sensor sends one every 20 ms. What arrives meanwhile is over the bound.
SILENT_NS: Final = 50_000_000


class MemoryBound:
    """The RSS against the bound. :meth:`rebase` when the model changes, :meth:`over` after
    each tick. Without ``/proc`` (not Linux) it never reports anything."""

    def __init__(self, held_max: int = HELD_MAX_BYTES) -> None:
        self.held_max = held_max
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._fd: int | None = None
        with contextlib.suppress(OSError):
            self._fd = os.open("/proc/self/statm", os.O_RDONLY)
        self.base = self.rss() or 0

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

    def over(self) -> int | None:
        """The bytes the RSS is over the bound, or None when within it. A lower RSS than
        the base becomes the base: the bound stays as tight as the daemon ever was."""
        rss = self.rss()
        if rss is None:
            return None
        if rss < self.base:
            self.base = rss
        excess = rss - self.base - self.held_max
        return excess if excess > 0 else None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
