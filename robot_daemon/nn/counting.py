"""Matrix products that count their FLOPs: every matmul of the network goes through here.

:func:`matmul` (a batch) and :func:`affine` (one reading) add what they cost to a
:class:`FlopCounter` while a :func:`count_flops` block is active, and cost one ``None``
check otherwise. So the FLOP figures of ``docs/flops.md`` (:mod:`robot_daemon.flops`) are
measured on the very code that trains and serves, not on a model of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from robot_daemon.nn.arrays import Array


class FlopCounter:
    """Running total of the FLOPs of the matrix multiplications executed in a block.

    A product of an ``(m, k)`` and a ``(k, p)`` matrix costs ``2*m*k*p`` FLOPs (one
    multiply and one add per term), the usual convention.
    """

    def __init__(self) -> None:
        self.flops = 0
        self.matmuls = 0


_counter: FlopCounter | None = None


@contextmanager
def count_flops() -> Iterator[FlopCounter]:
    """Count the FLOPs of every :func:`matmul` executed inside the ``with`` block."""
    global _counter
    outer, _counter = _counter, FlopCounter()
    try:
        yield _counter
    finally:
        _counter = outer


def matmul(a: Array, b: Array, out: Array | None = None) -> Array:
    """``a @ b`` for ``a`` of shape ``(m, k)`` and ``b`` of shape ``(k, p)``, counted.

    Returns an array of shape ``(m, p)`` (``out`` when given).
    """
    if _counter is not None:
        _counter.flops += 2 * a.shape[0] * a.shape[1] * b.shape[1]
        _counter.matmuls += 1
    # ndarray.dot, np.dot and np.matmul call the same BLAS gemm on 2-D arrays. The method
    # has the smallest per-call overhead (np.dot's dispatch through __array_function__
    # costs 0.3 us more, np.matmul 0.8 us), which matters for small batches.
    product: Array = a.dot(b, out=out)
    return product


def affine(x1: Array, Wb: Array, out: Array | None = None) -> Array:
    """``x @ W + b`` for one reading, as the product ``[x, 1] @ Wb``, counted.

    x1 : ndarray of shape (d_in + 1,), the vector ``x`` with a last entry 1.
    Wb : ndarray of shape (d_in + 1, d_out), ``W`` above ``b`` (a
        :class:`~robot_daemon.nn.layers.Linear`'s block).
    Returns an ndarray of shape (d_out,) (``out`` when given). Counted as the product
    ``x @ W`` of a (1, d_in) and a (d_in, d_out) matrix: the last row only adds ``b``,
    and the count covers matrix multiplications, as the batch path's does.
    """
    if _counter is not None:
        _counter.flops += 2 * (Wb.shape[0] - 1) * Wb.shape[1]
        _counter.matmuls += 1
    product: Array = x1.dot(Wb, out=out)  # BLAS's gemv; the method, as in matmul
    return product
