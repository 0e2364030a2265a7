"""The three layers of the reference network (``docs/spec.md``): Linear, ScaledReLU, Sigmoid.

Each keeps the contract the reference ``single_step_sgd`` relies on: ``forward(X)``
keeps exactly what ``backward`` needs (activation checkpointing: a ``Linear`` its input,
shared and not copied; a ``ScaledReLU`` the mask ``x > 1`` packed into bits, or nothing
when it recomputes; a ``Sigmoid`` its output); ``backward(grad_out)`` returns
``(grad_in, *param_grads)``, a 1-tuple for a layer without parameters, and lets go of what
``forward`` kept; ``update_params_(*param_grads, lr)`` takes exactly those gradients, so
a bare array returned by mistake fails loudly instead of being split into rows.
``predict(X)`` is the same computation keeping nothing. A ``Linear``'s output is a
hand-off (:mod:`robot_daemon.nn.buffers`) that the next layer overwrites in place: a
training step holds little more than the two hidden activations.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from robot_daemon.errors import ShapeError
from robot_daemon.nn.activations import scaled_relu_, sigmoid, sigmoid_slope
from robot_daemon.nn.arrays import Array, DTypeLike, float_dtype
from robot_daemon.nn.buffers import hand_off, take_hand_off
from robot_daemon.nn.counting import matmul

#: A seed or a Generator for the initial weights; None draws from NumPy's global state.
Seed = int | np.random.Generator | None

#: Values per block of rows when a mask is packed, unpacked or recomputed: a few MB each.
RECOMPUTE_BLOCK_ELEMENTS = 1 << 18


def to_generator(rng: Seed) -> np.random.Generator | None:
    """A Generator for a seed or Generator; None (NumPy's global state) for None."""
    return None if rng is None else np.random.default_rng(rng)


def _standard_normal(rng: np.random.Generator | None, shape: tuple[int, int],
                     dtype: np.dtype[Any]) -> Array:
    """N(0, 1) draws of ``shape`` from ``rng``, or from NumPy's global state when None."""
    if rng is None:
        # The legacy global generator has no dtype argument: draw float64, then cast.
        return np.random.standard_normal(shape).astype(dtype, copy=False)  # noqa: NPY002 (np.random.seed reproduces it)
    return rng.standard_normal(shape, dtype=dtype)


class Linear:
    """Fully connected layer ``out = X @ W + b``.

    Wb : ndarray of shape (d_in + 1, d_out), the parameters in one block: ``W`` is its
        first ``d_in`` rows, ``b`` its last row. It is the only copy of them.
    W : ndarray of shape (d_in, d_out), a view into ``Wb``; Kaiming normal, std
        ``sqrt(2 / d_in)``.
    b : ndarray of shape (d_out,), a view into ``Wb``; zeros.

    Why one block: one reading's forward pass multiplies ``[x, 1]`` by ``Wb`` and gets
    ``x @ W + b`` from a single matrix-vector product
    (:func:`~robot_daemon.nn.counting.affine`), the bias included, with no copy of the
    weights to keep in step with them. ``W`` and ``b`` are made afresh from ``Wb`` on
    every access, so every change to them lands in the block:
    ``W -= lr * g``, ``W[...] = A`` and ``np.subtract(W, g, out=W)`` write into it, and
    ``layer.W = A`` copies ``A`` (of W's shape, cast to the layer's dtype) into it; ``A``
    itself is not kept. Nothing else holds the parameters, so nothing can go stale, and
    a pickled or deep-copied layer is its block.

    ``input_grad=False`` makes ``backward`` return ``None`` as its input gradient and skip
    that matmul; only right for a first layer, whose input is data. ``rng=None`` draws
    ``W`` from NumPy's global state (``np.random.seed`` reproduces it).

    Its outputs and input gradients are hand-offs (:mod:`robot_daemon.nn.buffers`): the
    next layer may overwrite them.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        *,
        rng: Seed = None,
        dtype: DTypeLike = np.float64,
        input_grad: bool = True,
    ) -> None:
        dtype = float_dtype(dtype)
        self.Wb: Array = np.zeros((d_in + 1, d_out), dtype=dtype)  # b, the last row: zeros
        W = self.W
        W[...] = _standard_normal(to_generator(rng), (d_in, d_out), dtype)
        W *= dtype.type(math.sqrt(2.0 / d_in))
        self.input_grad = input_grad
        self.X: Array | None = None  # forward's input, kept for dW = X.T @ grad_out

    @classmethod
    def from_params(cls, W: Array, b: Array, *, input_grad: bool = True) -> Linear:
        """A layer whose parameters are copies of ``W`` (d_in, d_out) and ``b`` (d_out,).

        They are copied into the layer's block ``Wb``; nothing is drawn. To load a layer
        without a second copy in memory, read the parameters into a block and use
        :meth:`from_block`.
        """
        if W.ndim != 2 or b.shape != (W.shape[1],) or W.dtype != b.dtype:
            raise ShapeError(f"Linear needs W (d_in, d_out) and b (d_out,) of one dtype, got "
                             f"{W.dtype} {W.shape} and {b.dtype} {b.shape}")
        Wb = np.empty((W.shape[0] + 1, W.shape[1]), dtype=float_dtype(W.dtype))
        Wb[:-1] = W
        Wb[-1] = b
        return cls.from_block(Wb, input_grad=input_grad)

    @classmethod
    def from_block(cls, Wb: Array, *, input_grad: bool = True) -> Linear:
        """A layer around ``Wb`` (d_in + 1, d_out), ``W`` above ``b``, used as it is.

        Nothing is drawn or copied: loading a saved layer costs no second one's memory.
        """
        if Wb.ndim != 2 or Wb.shape[0] < 2:
            raise ShapeError(f"Linear needs a block Wb of shape (d_in + 1, d_out) with"
                             f" d_in >= 1, got {Wb.shape}")
        float_dtype(Wb.dtype)
        layer = cls.__new__(cls)
        layer.Wb, layer.input_grad, layer.X = Wb, input_grad, None
        return layer

    @property
    def W(self) -> Array:
        """(d_in, d_out): the first ``d_in`` rows of ``Wb``, a view."""
        return self.Wb[:-1]

    @W.setter
    def W(self, value: npt.ArrayLike) -> None:
        # `layer.W -= g` comes here with the view itself: NumPy's copy of an array onto
        # its own memory returns at once.
        _assign(self.Wb[:-1], value, "W")

    @property
    def b(self) -> Array:
        """(d_out,): the last row of ``Wb``, a view."""
        b: Array = self.Wb[-1]
        return b

    @b.setter
    def b(self, value: npt.ArrayLike) -> None:
        _assign(self.Wb[-1], value, "b")

    @property
    def shape(self) -> tuple[int, int]:
        """``(d_in, d_out)``."""
        rows, d_out = self.Wb.shape
        return rows - 1, d_out

    def _input(self, X: npt.ArrayLike) -> Array:
        """X as a 2-D array of this layer's dtype (a copy only if the dtype differs)."""
        X = np.asarray(X, dtype=self.Wb.dtype)
        d_in = self.Wb.shape[0] - 1
        if X.ndim != 2 or X.shape[1] != d_in:
            raise ShapeError(f"Linear{self.shape} expects X of shape (n, {d_in}), got {X.shape}")
        return X

    def predict(self, X: npt.ArrayLike) -> Array:
        """X : (n, d_in) -> (n, d_out), a new array (a hand-off); keeps nothing."""
        out = matmul(self._input(X), self.W)
        out += self.b
        return hand_off(out)

    def forward(self, X: npt.ArrayLike) -> Array:
        """X : (n, d_in) -> (n, d_out), a new array (a hand-off); keeps X (shared, not copied)."""
        X = self._input(X)
        self.X = X
        out = matmul(X, self.W)
        out += self.b
        return hand_off(out)

    def backward(self, grad_out: Array) -> tuple[Array | None, Array, Array]:
        """grad_out : (n, d_out) -> (grad_in (n, d_in) or None, dW (d_in, d_out), db (d_out,)).

        Releases the kept input right after ``dW``, before ``grad_in`` is allocated.
        """
        X = self._take_input()
        dW = matmul(X.T, grad_out)
        del X  # the last reference to the activation, in an MLP: free it now
        db = grad_out.sum(axis=0)
        if not self.input_grad:
            return None, dW, db
        return hand_off(matmul(grad_out, self.W.T)), dW, db

    def update_params_(self, dW: Array, db: Array, *, lr: float) -> None:
        """``W -= lr * dW; b -= lr * db`` in place (``lr`` scales the gradient in place)."""
        W, b = self.W, self.b  # views: the updates land in the block
        dW *= lr
        W -= dW
        db *= lr
        b -= db

    def _take_input(self) -> Array:
        X = self.X
        if X is None:
            raise RuntimeError("Linear.backward called without a forward pass before it")
        self.X = None
        return X


class ScaledReLU:
    """``2 x`` where ``x > 1``, ``0`` elsewhere (at ``x = 1`` exactly: 0).

    The derivative is 2 where ``x > 1`` and 0 elsewhere (taken as 0 at the jump ``x = 1``,
    like ReLU's at 0). Backward needs only where ``x > 1``: forward keeps that as a mask
    packed into bits, ``mask`` of shape (n, ceil(h / 8)) uint8, one bit per value (a bool
    (n, h) mask for batches of at most ``RECOMPUTE_BLOCK_ELEMENTS`` values).

    ``inplace`` says when the input is overwritten with the output (and ``grad_out`` with
    ``grad_in``): ``None`` (the default) when it is a hand-off from a ``Linear``
    (:mod:`robot_daemon.nn.buffers`), which is always the case inside an MLP; ``True``
    always; ``False`` never.
    ``recompute_from`` (set by ``MLP(recompute=True)``) is the ``Linear`` whose output this
    layer receives: the mask is then not kept but recomputed in backward from that layer's
    kept input.
    """

    def __init__(
        self, h: int, *, inplace: bool | None = None, recompute_from: Linear | None = None
    ) -> None:
        self.h = h
        self.inplace = inplace
        self.recompute_from = recompute_from
        self.mask: npt.NDArray[np.bool_] | npt.NDArray[np.uint8] | None = None

    def _writable(self, A: Array) -> Array:
        """``A`` itself when this layer may overwrite it, else a copy."""
        in_place = take_hand_off(A) if self.inplace is None else self.inplace
        return A if in_place else A.copy()

    def predict(self, X: Array) -> Array:
        """X : (n, h) -> (n, h); keeps nothing. In place on a hand-off (see ``inplace``)."""
        return scaled_relu_(self._writable(X))

    def forward(self, X: Array) -> Array:
        """X : (n, h) -> (n, h); keeps the mask ``X > 1`` in bits, unless recomputing.

        Works a block of rows at a time, so that no boolean mask of the whole batch is
        ever allocated.
        """
        out = self._writable(X)
        if self.recompute_from is not None:
            for rows in _row_blocks(out):
                scaled_relu_(out[rows])
            return out
        if out.size <= RECOMPUTE_BLOCK_ELEMENTS:
            # A small batch (the online step's): a bool mask of at most 256 KiB, kept as
            # it is, costs less time than packing it and no memory worth saving.
            mask: npt.NDArray[np.bool_] | npt.NDArray[np.uint8] = out > 1
            out *= mask
        else:
            mask = np.empty((out.shape[0], -(-out.shape[1] // 8)), dtype=np.uint8)
            for rows in _row_blocks(out):
                above = out[rows] > 1
                mask[rows] = np.packbits(above, axis=1)
                out[rows] *= above
        out *= 2
        self.mask = mask
        return out

    def backward(self, grad_out: Array) -> tuple[Array]:
        """grad_out : (n, h) -> (grad_in (n, h),) with ``grad_in = 2 * grad_out * (x > 1)``."""
        grad_in = self._writable(grad_out)
        if self.recompute_from is None:
            mask = self.mask
            if mask is None:
                raise RuntimeError("ScaledReLU.backward called without a forward pass before it")
            self.mask = None
            if mask.dtype == np.bool_:
                grad_in *= mask
            else:
                bits = cast(npt.NDArray[np.uint8], mask)
                h = grad_in.shape[1]
                for rows in _row_blocks(grad_in):
                    grad_in[rows] *= np.unpackbits(bits[rows], axis=1, count=h)
        else:
            self._recompute_and_gate(grad_in)
        grad_in *= 2
        return (grad_in,)

    def _recompute_and_gate(self, grad: Array) -> None:
        """Zero ``grad`` (n, h) where the recomputed pre-activation is ``<= 1``, in place."""
        linear = self.recompute_from
        if linear is None or linear.X is None:
            raise RuntimeError("ScaledReLU cannot recompute: the preceding Linear kept no input")
        X, W, b = linear.X, linear.W, linear.b
        for rows in _row_blocks(grad):
            Z = matmul(X[rows], W)
            Z += b
            grad[rows] *= Z > 1

    def update_params_(self, *, lr: float) -> None:
        """No parameters: nothing to update."""


class Sigmoid:
    """Logistic function on the logits, one independent probability per class.

    Keeps its output ``P`` (n, c): the derivative ``P (1 - P)`` needs nothing else.
    ``inplace`` says when the probabilities are written over the logits: ``None`` (the
    default) when the logits are a hand-off from a ``Linear``, ``True`` always, ``False``
    never.
    """

    def __init__(self, c: int, *, inplace: bool | None = None) -> None:
        self.c = c
        self.inplace = inplace
        self.P: Array | None = None

    def predict(self, Z: Array) -> Array:
        """Z : (n, c) logits -> (n, c) probabilities; keeps nothing."""
        in_place = take_hand_off(Z) if self.inplace is None else self.inplace
        return sigmoid(Z, out=Z if in_place else None)

    def forward(self, Z: Array) -> Array:
        """Z : (n, c) logits -> (n, c) probabilities; keeps them."""
        self.P = self.predict(Z)
        return self.P

    def backward(self, grad_out: Array) -> tuple[Array]:
        """grad_out : (n, c) -> (grad_in (n, c),) with ``grad_in = grad_out * P (1 - P)``.

        After :func:`~robot_daemon.nn.loss.get_grad_log_loss` this is ``(P - Y) / n``: the
        slope divided out there is multiplied back here (the same floored value, see
        :func:`~robot_daemon.nn.activations.sigmoid_slope`).
        """
        P = self.P
        if P is None:
            raise RuntimeError("Sigmoid.backward called without a forward pass before it")
        self.P = None
        grad_in = sigmoid_slope(P)
        grad_in *= grad_out
        return (grad_in,)

    def update_params_(self, *, lr: float) -> None:
        """No parameters: nothing to update."""


Layer = Linear | ScaledReLU | Sigmoid


def _assign(part: Array, value: npt.ArrayLike, name: str) -> None:
    """Copy ``value`` into ``part`` of a layer's block: it must have ``part``'s shape."""
    if np.shape(value) != part.shape:
        raise ShapeError(f"Linear.{name} must keep its shape {part.shape}, got"
                         f" {np.shape(value)}: build a new layer to change its size")
    part[...] = value


def _row_blocks(A: Array) -> Iterator[slice]:
    """Slices of consecutive rows of ``A`` (n, h), about ``RECOMPUTE_BLOCK_ELEMENTS`` each."""
    n, h = A.shape
    step = max(1, RECOMPUTE_BLOCK_ELEMENTS // max(h, 1))
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


