"""Memory the network writes over instead of allocating, and what makes that safe.

Hand-offs: the reference ``MLP`` builds its layers as ``ScaledReLU(h)``, with no
options, so working in place must be the default, yet a layer used on its own must never
overwrite an array its caller still reads. So ``Linear.forward``/``predict``/``backward``
register each new array they return (:func:`hand_off`, weakly: the registry keeps nothing
alive), and a ``ScaledReLU`` or ``Sigmoid`` overwrites an array only if it is one
(:func:`take_hand_off`); a caller that reads a ``Linear``'s output after passing it on
copies it first. Scratch: each thread's buffers for ``MLP.predict_proba``
(:class:`Scratch`), so that serving a reading or a tick's batch allocates only its answer.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Final

import numpy as np

from robot_daemon.nn.arrays import Array

# Arrays that a Linear returned and nobody else has been given: id -> array, held weakly so
# that an entry goes when its array does (the registry never grows with a long run).
_HANDOFFS: weakref.WeakValueDictionary[int, np.ndarray[Any, Any]] = (
    weakref.WeakValueDictionary()
)


def hand_off(a: Array) -> Array:
    """Register ``a``, a fresh array the caller passes down the network, as a hand-off."""
    _HANDOFFS[id(a)] = a
    return a


def take_hand_off(a: Array) -> bool:
    """Whether ``a`` is a hand-off (then no longer one: it may be overwritten once)."""
    if _HANDOFFS.get(id(a)) is a:
        del _HANDOFFS[id(a)]
        return True
    return False


_Vectors = tuple[Array, Array, Array, Array, Array, Array]


#: ``MLP.predict_proba`` keeps a batch's two hidden activations in this thread's
#: buffers where each takes at most this many bytes (2,048 readings at h = 64 in float64:
#: a 20 ms tick at 100,000 frames/s); a larger batch (an offline job's) allocates them, as
#: before, and keeps nothing.
SCRATCH_MAX_BYTES: Final = 1 << 20


class Scratch(threading.local):
    """Each thread's augmented vectors for one reading (``MLP._logits_one``, :meth:`vectors`),
    and its buffers for a batch's hidden activations (:meth:`hidden`).

    ``[x, 1]`` (d + 1,), ``[a1, 1]`` (h + 1,) and ``[a2, 1]`` (h + 1,) for the network
    size last used in this thread, each with a view of all but its last entry, which is
    set to 1 once. Allocating and filling them on every call would cost what the fused
    bias saves. Per thread, so that threads predicting at once on one model (Dask
    workers) never share a buffer; one set per thread, replaced when the size changes,
    so they never grow with a long run, and a thread's set goes when the thread does.
    They hold activations of the last call, never parameters, and are only valid during
    a call: nothing a call runs can start another in the same thread.

    The batch buffers: at 1,600 readings (h = 64) allocating the two activations took as
    long as the arithmetic (2.1 ms against 1.0 with buffers, results identical): glibc
    gave the pages back after each call and faulted them in again on the next.
    """

    def __init__(self) -> None:
        # One attribute, read once per call: an attribute of a threading.local costs
        # about 75 ns to read.
        self.sized: tuple[tuple[np.dtype[Any], int, int], _Vectors] | None = None
        self.batch: tuple[tuple[np.dtype[Any], int], Array, Array] | None = None

    def hidden(self, dtype: np.dtype[Any], n: int, h: int) -> tuple[Array, Array] | None:
        """Two (n, h) buffers of ``dtype`` for this thread; None above
        :data:`SCRATCH_MAX_BYTES` each. They are as large as the largest batch seen
        (a new largest batch is rare after the first ticks) and replaced when ``dtype`` or
        ``h`` change; the old ones go first, so that a call never holds both."""
        if n * h * dtype.itemsize > SCRATCH_MAX_BYTES:
            return None
        held = self.batch
        if held is None or held[0] != (dtype, h) or len(held[1]) < n:
            held = self.batch = None  # the old buffers freed before the new are made
            held = self.batch = ((dtype, h), np.empty((n, h), dtype), np.empty((n, h), dtype))
        return held[1][:n], held[2][:n]

    def vectors(self, dtype: np.dtype[Any], d: int, h: int) -> _Vectors:
        """``(x1, x1[:d], a1, a1[:h], a2, a2[:h])`` for this thread, of ``dtype``."""
        sized = self.sized
        if sized is None or sized[0] != (dtype, d, h):
            sized = self.sized = (
                (dtype, d, h),
                (*_augmented(d, dtype), *_augmented(h, dtype), *_augmented(h, dtype)),
            )
        return sized[1]


def _augmented(n: int, dtype: np.dtype[Any]) -> tuple[Array, Array]:
    """A vector (n + 1,) whose last entry is 1, and the view of its first ``n``."""
    v = np.ones(n + 1, dtype=dtype)
    return v, v[:n]


#: This process's scratch: one set of buffers per thread.
SCRATCH = Scratch()

