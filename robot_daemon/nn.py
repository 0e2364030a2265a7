"""The user's multi-label MLP, forward and backward written by hand in NumPy.

Architecture (``docs/spec.md``), for a batch of ``n`` readings::

    X (n, d) -> Linear -> ScaledReLU -> (n, h) -> Linear -> ScaledReLU -> (n, h)
             -> Linear -> logits (n, c) -> Sigmoid -> Y_hat (n, c)

Every layer follows the contract that the user's ``MLP.single_step_sgd`` relies on:

* ``forward(X) -> out`` keeps exactly what ``backward`` needs, nothing more;
* ``backward(grad_out) -> (grad_in, *param_grads)``, always a tuple (a 1-tuple for a layer
  without parameters), and lets go of what ``forward`` kept;
* ``update_params_(*param_grads, lr)`` takes exactly the gradients ``backward`` returned,
  so a bare array returned by mistake fails loudly instead of being split into rows.

Each layer also has ``predict(X)``: the same computation keeping nothing, for serving.

Parameters. A ``Linear`` keeps ``W`` and ``b`` in one block ``Wb`` (``W`` above ``b``),
and ``W`` and ``b`` are views into it: whatever changes them changes the block. One
reading goes through the network as a vector ``[x, 1]`` times each block
(``MLP.predict_proba``), the bias inside the matrix-vector product: at one reading per
call the NumPy calls, not the arithmetic, take the time, and this saves one per layer
without a copy of the weights that could go stale.

Activation checkpointing: what a training step keeps, and for how long.

* A ``Linear`` keeps a reference to its input (shared with the previous layer's output,
  never copied): ``dW = X.T @ grad_out`` needs it. It drops it as soon as ``dW`` is made,
  before allocating ``grad_in``, so an activation and its gradient never coexist.
* A ``ScaledReLU`` works in place on the pre-activation when that is a *hand-off*: an
  array a ``Linear`` has just returned and handed down the network (see below). It keeps
  only the mask ``x > 1`` packed into bits, one bit per value where a float mask would
  take 64. It does not keep its output: that would keep the activation alive while the
  next ``Linear`` allocates the gradient of the same size.
* A ``Sigmoid`` keeps its output ``p``: its derivative is ``p (1 - p)``.
* With ``recompute=True`` the ``ScaledReLU`` keeps no mask at all: its backward recomputes
  the pre-activation from the preceding ``Linear``'s kept input, a block of rows at a
  time. Peak memory drops to the two hidden activations; each training step pays one extra
  forward matmul through the first two ``Linear`` layers.

Hand-offs. The user's ``MLP`` builds its layers as ``ScaledReLU(h)``, with no options, so
the lean behaviour must be the default, yet a layer used on its own must never overwrite
an array its caller still reads. The contract: ``Linear.forward``/``predict`` return a new
array and register it as a hand-off (weakly: the registry keeps nothing alive), and so
does ``Linear.backward`` for its input gradient. A ``ScaledReLU`` or ``Sigmoid`` given a
hand-off may overwrite it; any other array it is given is left as it was. A caller that
keeps a ``Linear``'s output to read after passing it on copies it first.

Randomness: a layer or ``MLP`` given ``rng`` (a seed or ``np.random.Generator``) draws
from it; given none, as in the user's ``MLP(d, h, c)``, it draws from NumPy's global
state, so that ``np.random.seed(s)`` reproduces the initial weights.

Every matrix multiplication goes through :func:`matmul` (or :func:`affine`, for one
reading), which counts FLOPs while a :func:`count_flops` block is active: the FLOP figures
in ``docs/flops.md`` are measured on the very code that trains.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, cast

import numpy as np
import numpy.typing as npt

from robot_daemon.errors import ShapeError

Array = npt.NDArray[np.floating[Any]]
Seed = int | np.random.Generator | None
DTypeLike = npt.DTypeLike

#: Values per block of rows when a mask is packed, unpacked or recomputed: a few MB each.
RECOMPUTE_BLOCK_ELEMENTS = 1 << 18

# Arrays that a Linear returned and nobody else has been given: id -> array, held weakly so
# that an entry goes when its array does (the registry never grows with a long run).
_HANDOFFS: weakref.WeakValueDictionary[int, np.ndarray[Any, Any]] = (
    weakref.WeakValueDictionary()
)


def _hand_off(a: Array) -> Array:
    """Register ``a``, a fresh array the caller passes down the network, as a hand-off."""
    _HANDOFFS[id(a)] = a
    return a


def _take_hand_off(a: Array) -> bool:
    """Whether ``a`` is a hand-off (then no longer one: it may be overwritten once)."""
    if _HANDOFFS.get(id(a)) is a:
        del _HANDOFFS[id(a)]
        return True
    return False


def _standard_normal(rng: np.random.Generator | None, shape: tuple[int, int],
                     dtype: np.dtype[Any]) -> Array:
    """N(0, 1) draws of ``shape`` from ``rng``, or from NumPy's global state when None."""
    if rng is None:
        # The legacy global generator has no dtype argument: draw float64, then cast.
        return np.random.standard_normal(shape).astype(dtype, copy=False)  # noqa: NPY002 (the user's seed)
    return rng.standard_normal(shape, dtype=dtype)


def _generator(rng: Seed) -> np.random.Generator | None:
    """A Generator for a seed or Generator; None (NumPy's global state) for None."""
    return None if rng is None else np.random.default_rng(rng)


# --------------------------------------------------------------------------------------
# Instrumented matrix multiplication
# --------------------------------------------------------------------------------------


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
    Wb : ndarray of shape (d_in + 1, d_out), ``W`` above ``b`` (a :class:`Linear`'s block).
    Returns an ndarray of shape (d_out,) (``out`` when given). Counted as the product
    ``x @ W`` of a (1, d_in) and a (d_in, d_out) matrix: the last row only adds ``b``,
    and the count covers matrix multiplications, as the batch path's does.
    """
    if _counter is not None:
        _counter.flops += 2 * (Wb.shape[0] - 1) * Wb.shape[1]
        _counter.matmuls += 1
    product: Array = x1.dot(Wb, out=out)  # BLAS's gemv; the method, as in matmul
    return product


# --------------------------------------------------------------------------------------
# Plain functions: activations and loss
# --------------------------------------------------------------------------------------


def _exp_limit(dtype: np.dtype[Any]) -> float:
    """Largest whole ``z`` with ``exp(z)`` finite and ``exp(-z)`` normal in ``dtype``."""
    return float(math.floor(math.log(float(np.finfo(dtype).max)))) - 1.0


def _constant(value: float, dtype: np.dtype[Any]) -> Array:
    """``value`` as a read-only 0-d array of ``dtype``, an operand for the ufuncs below.

    A ufunc given a Python or NumPy scalar resolves its type on each call (NEP 50's weak
    scalars): on 64 values it takes about 0.9 us where it takes 0.45 us with a 0-d array
    of the array's own dtype, and a single reading's forward pass makes seven such calls.
    """
    a = np.array(value, dtype=dtype)
    a.flags.writeable = False
    return a


# Per-dtype constants, looked up on every call of the hot path (np.finfo is slow).
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_ONE = {t: _constant(1.0, t) for t in _FLOATS}
# sigmoid's (-L, L, 1), looked up once per call
_SIGMOID_CONSTANTS = {
    t: (_constant(-_exp_limit(t), t), _constant(_exp_limit(t), t), _ONE[t]) for t in _FLOATS
}
_EPS = {t: float(np.finfo(t).eps) for t in _FLOATS}


def sigmoid(Z: Array, out: Array | None = None) -> Array:
    """Logistic function ``exp(z) / (1 + exp(z))``, elementwise, with no overflow or
    underflow; a row of logits with one that is not finite gives a row of NaN.

    ``Z`` is clipped to ``[-L, L]`` (``L = 708`` in float64, ``87`` in float32:
    :func:`logit_limit`) so that ``exp`` neither overflows nor underflows; beyond it the
    true sigmoid is 1, or below the smallest normal number, to working precision. For
    negative ``Z`` the result is ``exp(z)`` to full relative accuracy, which keeps
    ``log(p)`` meaningful.

    A logit that is infinite or NaN means the network overflowed, and how it shows
    depends on the CPU: where BLAS fuses multiply-adds (AVX2, AVX-512, ARM) ``inf - inf``
    in a sum can come out ``+inf``, elsewhere NaN, and one reading (a matrix-vector
    product) and a batch sum in different orders. Clipped, ``+inf`` was a confident 1 made
    of overflow. So the whole row (one frame's answer) is NaN for either, on every CPU:
    the daemon counts it as ``non_finite_output``. Finite logits beyond ``±L`` are clipped
    as before (an extreme reading); a model whose logits leave that range on ordinary
    readings is refused where it is checked (:func:`logits_within`).

    Z : ndarray of shape (n, c) or (c,), float32 or float64. ``out`` may be ``Z`` itself.
    Returns an ndarray of the same shape and dtype.
    """
    low, high, one = _SIGMOID_CONSTANTS[Z.dtype]
    # Whether every logit is finite: a sum is finite when every term is (and no term is near
    # the float's maximum, where np.isfinite decides). For one reading's few logits the
    # Python sum of a list (0.23 us; a BLAS dot 0.37, np.isfinite(Z).all() 1.4), for a
    # batch the sum of squares in one BLAS call.
    if Z.ndim == 1 and Z.size <= 64:
        quick = sum(Z.tolist())
    else:
        flat = Z.reshape(-1)  # a view of the contiguous logits made here
        quick = flat.dot(flat)
    overflowed = (None if math.isfinite(quick) or np.isfinite(Z).all()
                  else ~np.isfinite(Z).all(axis=-1))
    E: Array = np.minimum(Z, high, out=out)  # two ufuncs: np.clip costs 3x more per call
    np.maximum(E, low, out=E)
    np.exp(E, out=E)
    E /= E + one
    if overflowed is not None:
        E[overflowed] = np.nan  # for (c,): a 0-d mask, the whole vector
    return E


def logit_limit(dtype: DTypeLike) -> float:
    """``L``: the largest logit magnitude :func:`sigmoid` takes as it is (708 in float64,
    87 in float32); beyond it the probability is exactly 0 or 1 to working precision."""
    return _exp_limit(np.dtype(dtype))


def logits_within(Z: Array) -> bool:
    """Whether every logit of ``Z`` (n, c) is finite and within ``±L`` (:func:`logit_limit`).

    A trained network's logits stay within about ±40; beyond ``L`` they come only from
    weights that blew up together (a model that diverged while it learned), whatever the
    CPU makes of them. The model checks and online learning's guards refuse such weights.
    """
    return bool(np.abs(Z).max() <= logit_limit(Z.dtype))  # NaN compares False


def scaled_relu_(Z: Array) -> Array:
    """ScaledReLU in place, keeping nothing: ``Z = 2 Z`` where ``Z > 1``, else 0.

    Z : ndarray of shape (n, h) or (h,), overwritten and returned.
    """
    # Multiplying by the boolean mask beats np.where 6x on random masks.
    Z *= np.greater(Z, _ONE[Z.dtype])
    Z += Z  # 2 Z exactly, with no constant to look up
    return Z


def _sigmoid_slope(P: Array) -> Array:
    """``P (1 - P)``, the sigmoid's derivative from its output, floored at machine epsilon.

    Where the sigmoid has saturated (``P`` rounded to 0 or 1) the slope is 0 and the loss
    gradient ``(P - Y) / (P (1 - P))`` is infinite. Both :func:`get_grad_log_loss` and
    :meth:`Sigmoid.backward` use this same floored slope, so their product stays exactly
    ``(P - Y) / n``: a unit saturated on the wrong side still gets its full gradient.
    The floor only acts where ``P (1 - P) < eps``, far outside ``[1e-6, 1 - 1e-6]``.

    P : ndarray of shape (n, c). Returns a new ndarray of the same shape and dtype.
    """
    slope = 1 - P
    slope *= P
    return np.maximum(slope, _EPS[P.dtype], out=slope)


def log_loss(Y: npt.ArrayLike, Y_hat: Array) -> float:
    """Mean negative log-likelihood: binary cross-entropy summed over classes, mean over n.

    ``L = -(1/n) sum_i sum_j [Y_ij log P_ij + (1 - Y_ij) log(1 - P_ij)]``, with ``P``
    clipped to ``[eps, 1 - eps]`` so that a saturated prediction costs a large finite
    amount rather than infinity. Its gradient is :func:`get_grad_log_loss`.

    Y : array_like of shape (n, c), 0/1 labels (any numeric dtype).
    Y_hat : ndarray of shape (n, c), probabilities.
    Returns a Python float.
    """
    nll = _nll(Y, Y_hat)
    return float(-nll.sum(dtype=np.float64) / nll.shape[0])


def log_loss_rows(Y: npt.ArrayLike, Y_hat: Array) -> npt.NDArray[np.float64]:
    """Each example's negative log-likelihood, summed over classes: (n,) float64.

    :func:`log_loss` is their mean (up to rounding: it sums all terms at once). A running
    mean over examples that come and go (online learning's holdout) keeps these.
    """
    rows: npt.NDArray[np.float64] = -_nll(Y, Y_hat).sum(axis=1, dtype=np.float64)
    return rows


def _nll(Y: npt.ArrayLike, Y_hat: Array) -> Array:
    """``Y log P + (1 - Y) log(1 - P)`` (n, c), with ``P`` clipped to ``[eps, 1 - eps]``."""
    P = np.asarray(Y_hat)
    Y = np.asarray(Y, dtype=P.dtype)
    _check_pair(Y, P)
    eps = _EPS[P.dtype]
    P = np.clip(P, eps, 1 - eps)
    nll: Array = Y * np.log(P)
    nll += (1 - Y) * np.log1p(-P)
    return nll


def get_grad_log_loss(Y: npt.ArrayLike, Y_hat: Array) -> Array:
    """Gradient of :func:`log_loss` with respect to ``Y_hat``.

    ``dL/dP = (P - Y) / (P (1 - P)) / n``, with the slope ``P (1 - P)`` floored as in
    :func:`_sigmoid_slope`. ``Y`` is cast to ``Y_hat``'s dtype, so float32 stays float32.

    Y : array_like of shape (n, c), 0/1 labels (bool, uint8, float, ...).
    Y_hat : ndarray of shape (n, c), the sigmoid outputs.
    Returns a new ndarray of shape (n, c) and ``Y_hat``'s dtype.
    """
    P: Array = np.asarray(Y_hat)
    Y = np.asarray(Y, dtype=P.dtype)
    _check_pair(Y, P)
    grad: Array = P - Y
    slope = _sigmoid_slope(P)
    slope *= P.shape[0]
    grad /= slope
    return grad


def _check_pair(Y: Array, P: Array) -> None:
    if P.ndim != 2 or Y.shape != P.shape:
        raise ShapeError(
            f"labels and predictions must both have shape (n, c); got {Y.shape} and {P.shape}"
        )


# --------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------


class Linear:
    """Fully connected layer ``out = X @ W + b``.

    Wb : ndarray of shape (d_in + 1, d_out), the parameters in one block: ``W`` is its
        first ``d_in`` rows, ``b`` its last row. It is the only copy of them.
    W : ndarray of shape (d_in, d_out), a view into ``Wb``; Kaiming normal, std
        ``sqrt(2 / d_in)``.
    b : ndarray of shape (d_out,), a view into ``Wb``; zeros.

    Why one block: one reading's forward pass multiplies ``[x, 1]`` by ``Wb`` and gets
    ``x @ W + b`` from a single matrix-vector product (:func:`affine`), the bias included,
    with no copy of the weights to keep in step with them. ``W`` and ``b`` are made
    afresh from ``Wb`` on every access, so every change to them lands in the block:
    ``W -= lr * g``, ``W[...] = A`` and ``np.subtract(W, g, out=W)`` write into it, and
    ``layer.W = A`` copies ``A`` (of W's shape, cast to the layer's dtype) into it; ``A``
    itself is not kept. Nothing else holds the parameters, so nothing can go stale, and
    a pickled or deep-copied layer is its block.

    ``input_grad=False`` makes ``backward`` return ``None`` as its input gradient and skip
    that matmul; only right for a first layer, whose input is data. ``rng=None`` draws
    ``W`` from NumPy's global state (``np.random.seed`` reproduces it).

    Its outputs and input gradients are hand-offs (module docstring): the next layer may
    overwrite them.
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
        dtype = _float_dtype(dtype)
        self.Wb: Array = np.zeros((d_in + 1, d_out), dtype=dtype)  # b, the last row: zeros
        W = self.W
        W[...] = _standard_normal(_generator(rng), (d_in, d_out), dtype)
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
        Wb = np.empty((W.shape[0] + 1, W.shape[1]), dtype=_float_dtype(W.dtype))
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
        _float_dtype(Wb.dtype)
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
        return _hand_off(out)

    def forward(self, X: npt.ArrayLike) -> Array:
        """X : (n, d_in) -> (n, d_out), a new array (a hand-off); keeps X (shared, not copied)."""
        X = self._input(X)
        self.X = X
        out = matmul(X, self.W)
        out += self.b
        return _hand_off(out)

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
        return _hand_off(matmul(grad_out, self.W.T)), dW, db

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
    ``grad_in``): ``None`` (the default) when it is a hand-off from a ``Linear`` (module
    docstring), which is always the case inside an MLP; ``True`` always; ``False`` never.
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
        in_place = _take_hand_off(A) if self.inplace is None else self.inplace
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
        in_place = _take_hand_off(Z) if self.inplace is None else self.inplace
        return sigmoid(Z, out=Z if in_place else None)

    def forward(self, Z: Array) -> Array:
        """Z : (n, c) logits -> (n, c) probabilities; keeps them."""
        self.P = self.predict(Z)
        return self.P

    def backward(self, grad_out: Array) -> tuple[Array]:
        """grad_out : (n, c) -> (grad_in (n, c),) with ``grad_in = grad_out * P (1 - P)``.

        After :func:`get_grad_log_loss` this is ``(P - Y) / n``: the slope divided out
        there is multiplied back here (the same floored value, see ``_sigmoid_slope``).
        """
        P = self.P
        if P is None:
            raise RuntimeError("Sigmoid.backward called without a forward pass before it")
        self.P = None
        grad_in = _sigmoid_slope(P)
        grad_in *= grad_out
        return (grad_in,)

    def update_params_(self, *, lr: float) -> None:
        """No parameters: nothing to update."""


Layer = Linear | ScaledReLU | Sigmoid


def _float_dtype(dtype: DTypeLike) -> np.dtype[Any]:
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ShapeError(f"dtype must be float32 or float64, got {dt}")
    return dt


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


_Vectors = tuple[Array, Array, Array, Array, Array, Array]


#: :meth:`MLP.predict_proba` keeps a batch's two hidden activations in this thread's
#: buffers where each takes at most this many bytes (2,048 readings at h = 64 in float64:
#: a 20 ms tick at 100,000 frames/s); a larger batch (an offline job's) allocates them, as
#: before, and keeps nothing.
SCRATCH_MAX_BYTES: Final = 1 << 20


class _Scratch(threading.local):
    """Each thread's augmented vectors for :meth:`MLP._logits_one`, and its buffers for
    a batch's hidden activations (:meth:`hidden`).

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


_SCRATCH = _Scratch()


# --------------------------------------------------------------------------------------
# The user's MLP
# --------------------------------------------------------------------------------------


class MLP:
    """The user's network (``docs/spec.md``), with optional seed, dtype and memory modes.

    ``MLP(d, h, c)`` behaves exactly as the user's class; the keyword-only additions are:

    rng : int seed or ``np.random.Generator`` for the Kaiming initialisation (and the
        shuffling of :meth:`sgd`); ``None`` draws from NumPy's global state, so that
        ``np.random.seed(s)`` before ``MLP(d, h, c)`` reproduces a run.
    dtype : float64 (default) or float32, used for parameters, activations and gradients.
    recompute : keep no ScaledReLU masks; recompute them in backward (lower peak memory,
        one more forward matmul per hidden layer and step).
    input_grad : ``False`` lets the first layer skip the gradient of its input, which the
        user's loop computes and throws away (``True``, the default, is the user's text).
    """

    def __init__(
        self,
        d: int,
        h: int,
        c: int,
        *,
        rng: Seed = None,
        dtype: DTypeLike = np.float64,
        recompute: bool = False,
        input_grad: bool = True,
    ) -> None:
        generator = _generator(rng)
        self.rng = generator
        self.dtype = _float_dtype(dtype)
        self.d, self.h, self.c = d, h, c
        l1 = Linear(d, h, rng=generator, dtype=dtype, input_grad=input_grad)
        l2 = Linear(h, h, rng=generator, dtype=dtype)
        l3 = Linear(h, c, rng=generator, dtype=dtype)
        self._stack(l1, l2, l3, recompute=recompute)

    @classmethod
    def from_params(
        cls, W1: Array, b1: Array, W2: Array, b2: Array, W3: Array, b3: Array, *,
        rng: Seed = None,
    ) -> MLP:
        """An MLP with copies of saved parameters (nothing drawn).

        W1 (d, h), b1 (h,), W2 (h, h), b2 (h,), W3 (h, c), b3 (c,), all float32 or all
        float64, each pair copied into its layer's block (:class:`Linear`).
        ``MLP(d, h, c)`` followed by assignments would first draw a random network of the
        same size: twice the time of the load itself. ``rng`` as for ``MLP(d, h, c)`` (it
        shuffles in :meth:`sgd`). Raises ShapeError if the shapes do not chain or the
        dtypes differ.
        """
        return cls._around(Linear.from_params(W1, b1), Linear.from_params(W2, b2),
                           Linear.from_params(W3, b3), rng=rng)

    @classmethod
    def from_blocks(cls, Wb1: Array, Wb2: Array, Wb3: Array, *, rng: Seed = None) -> MLP:
        """An MLP around parameter blocks, used as they are (nothing drawn, nothing copied).

        Wb1 (d + 1, h), Wb2 (h + 1, h), Wb3 (h + 1, c): each layer's W above its b (see
        :class:`Linear`), all float32 or all float64. A model file read straight into
        blocks loads with no second copy of its parameters in memory. ``rng`` and errors
        as for :meth:`from_params`.
        """
        return cls._around(Linear.from_block(Wb1), Linear.from_block(Wb2),
                           Linear.from_block(Wb3), rng=rng)

    @classmethod
    def _around(cls, l1: Linear, l2: Linear, l3: Linear, *, rng: Seed) -> MLP:
        """An MLP of these three layers, once their shapes chain and their dtypes agree."""
        (d, h), c = l1.shape, l3.shape[1]
        if (l2.shape != (h, h) or l3.shape[0] != h
                or len({lin.Wb.dtype for lin in (l1, l2, l3)}) != 1):
            raise ShapeError("MLP parameters do not chain: " + ", ".join(
                f"W{i} {lin.Wb.dtype} {lin.shape}" for i, lin in enumerate((l1, l2, l3), 1)))
        mlp = cls.__new__(cls)
        mlp.rng = _generator(rng)
        mlp.dtype = _float_dtype(l1.Wb.dtype)
        mlp.d, mlp.h, mlp.c = d, h, c
        mlp._stack(l1, l2, l3, recompute=False)
        return mlp

    def _stack(self, l1: Linear, l2: Linear, l3: Linear, *, recompute: bool) -> None:
        """The six layers around the three Linear ones (recompute: see the class)."""
        h, c = l2.shape[0], l3.shape[1]
        r1, r2 = (l1, l2) if recompute else (None, None)
        self.layers: list[Layer] = [
            l1, ScaledReLU(h, inplace=True, recompute_from=r1),  # input_layer
            l2, ScaledReLU(h, inplace=True, recompute_from=r2),  # hidden_layer
            l3, Sigmoid(c, inplace=True),  # output_layer
        ]  # fmt: skip

    @property
    def linears(self) -> tuple[Linear, Linear, Linear]:
        """The three ``Linear`` layers, input to output."""
        l1, _, l2, _, l3, _ = self.layers
        if not (isinstance(l1, Linear) and isinstance(l2, Linear) and isinstance(l3, Linear)):
            raise TypeError("MLP.layers no longer has Linear layers at positions 0, 2 and 4")
        return l1, l2, l3

    def copy_params(self) -> list[Array]:
        """Copies of W1, b1, W2, b2, W3, b3, to put back later with :meth:`set_params`."""
        return [a.copy() for lin in self.linears for a in (lin.W, lin.b)]

    def set_params(self, params: Sequence[Array]) -> None:
        """Write ``params`` (as :meth:`copy_params` gives them) into the weights, in place."""
        values = iter(params)
        for lin in self.linears:
            lin.W[...] = next(values)
            lin.b[...] = next(values)

    def clear_caches(self) -> None:
        """Drop what a forward pass kept, e.g. after a training step abandoned half-way."""
        for layer in self.layers:
            if isinstance(layer, Linear):
                layer.X = None
            elif isinstance(layer, ScaledReLU):
                layer.mask = None
            else:
                layer.P = None

    def forward(self, X: Array) -> Array:
        """Predict classes for a batch of n examples"""
        out = X  # in R^{n x d}
        for layer in self.layers:
            out = layer.forward(out)
        return out

    def logits(self, X: npt.ArrayLike) -> Array:
        """The logits (n, c) for readings X (n, d): :meth:`predict_proba` before its
        sigmoid, on the same path (one reading, or a batch). For the model checks."""
        readings = self._readings(X)
        l1, l2, l3 = self.linears
        if readings.shape[0] == 1:
            return self._logits_one(readings, l1, l2, l3)[None]
        return self._logits(readings, l1, l2, l3)

    def predict_proba(self, X: npt.ArrayLike) -> Array:
        """Probabilities (n, c) for readings X (n, d); keeps no activation anywhere.

        This is the serving path: nothing is cached, so the daemon can call it many
        times a second without holding training memory (each thread reuses two buffers of
        at most :data:`SCRATCH_MAX_BYTES` for the hidden activations of a batch; the array
        returned is new). The parameters are read from the layers on every call: a change
        to them shows in the very next prediction.
        """
        # The layers' predict() in a row, flattened: at one reading per call, the per-layer
        # dispatch and input checks cost as much as the arithmetic (so _readings' lines, not
        # a call of it).
        readings = np.asarray(X, dtype=self.dtype)
        if readings.ndim != 2 or readings.shape[1] != self.d:
            raise ShapeError(f"MLP expects readings of shape (n, {self.d}), got"
                             f" {readings.shape}")
        l1, l2, l3 = self.linears
        if readings.shape[0] == 1:
            z = self._logits_one(readings, l1, l2, l3)
            return sigmoid(z, out=z)[None]
        Z = self._logits(readings, l1, l2, l3)
        return sigmoid(Z, out=Z)

    def _readings(self, X: npt.ArrayLike) -> Array:
        """``X`` as (n, d) readings of the network's dtype (a copy only to convert)."""
        readings = np.asarray(X, dtype=self.dtype)
        if readings.ndim != 2 or readings.shape[1] != self.d:
            raise ShapeError(f"MLP expects readings of shape (n, {self.d}), got"
                             f" {readings.shape}")
        return readings

    def _logits(self, readings: Array, l1: Linear, l2: Linear, l3: Linear) -> Array:
        """The batch path: readings (n, d) -> logits (n, c), a new array."""
        A1, A2 = _SCRATCH.hidden(self.dtype, readings.shape[0], self.h) or (None, None)
        Z = matmul(readings, l1.W, out=A1)
        Z += l1.b
        Z = matmul(scaled_relu_(Z), l2.W, out=A2)
        Z += l2.b
        Z = matmul(scaled_relu_(Z), l3.W)  # a new array: the only one returned
        Z += l3.b
        return Z

    def _logits_one(self, x: Array, l1: Linear, l2: Linear, l3: Linear) -> Array:
        """x (1, d) -> logits (c,), a new array: the batch path's on a vector.

        At one reading the time goes to NumPy calls, not arithmetic, so this path makes
        the fewest: the reading and each hidden activation go into this thread's
        augmented vectors ``[v, 1]`` (:class:`_Scratch`), whose product with a layer's
        block ``Wb`` is ``v @ W + b`` in one matrix-vector product, and 1-D ufuncs skip
        the 2-D bookkeeping. The products and sums are the batch path's, but BLAS may add
        the bias inside its sum rather than after it: a logit can then differ in its last
        bit or two (at (16, 64, 8) the probabilities are identical here).
        """
        x1, x_part, a1, a1_part, a2, a2_part = _SCRATCH.vectors(self.dtype, self.d, self.h)
        x_part[...] = x  # (1, d) into (d,): indexing x[0] first would cost a call more
        scaled_relu_(affine(x1, l1.Wb, out=a1_part))
        scaled_relu_(affine(a1, l2.Wb, out=a2_part))
        return affine(a2, l3.Wb)  # a new array: the only one this function returns

    def loss(self, X: npt.ArrayLike, Y: npt.ArrayLike) -> float:
        """Mean negative log-likelihood of labels Y (n, c) given readings X (n, d)."""
        return log_loss(Y, self.predict_proba(X))

    def sgd(
        self,
        X_train: Array,
        Y_train: npt.NDArray[Any],
        *,
        epochs: int = 10,
        bs: int = 100,
        lr: float = 0.1,
        shuffle: bool = False,
    ) -> None:
        # Train each layer of the MLP with SGD
        """Train with minibatch SGD: ``epochs`` passes over the data in batches of ``bs``.

        The defaults are the user's (10 epochs, batch 100, lr 0.1, data in order).
        ``shuffle=True`` visits the examples in a new order each epoch, drawn from
        ``self.rng`` (NumPy's global state when it is None). X_train : (n, d);
        Y_train : (n, c).
        """
        n_train = len(X_train)
        for _ in range(epochs):
            order = self._permutation(n_train) if shuffle else None
            for b_idx in range(0, n_train, bs):
                if order is None:
                    X_batch = X_train[b_idx:b_idx + bs]
                    Y_batch = Y_train[b_idx:b_idx + bs]
                else:
                    rows = order[b_idx:b_idx + bs]
                    X_batch, Y_batch = X_train[rows], Y_train[rows]
                # update all parameters
                self.single_step_sgd(X_batch, Y_batch, lr=lr)

    def _permutation(self, n: int) -> npt.NDArray[np.intp]:
        return np.random.permutation(n) if self.rng is None else self.rng.permutation(n)  # noqa: NPY002

    def single_step_sgd(self, X: Array, Y: npt.ArrayLike, *, lr: float = 0.1) -> None:
        # X in R^{n x d}, Y in R^{n x c}
        """Train the MLP with a single step of batched SGD."""
        loss_nabla_O: Any  # an (n, .) array; None below a first layer with input_grad=False
        Y_hat = self.forward(X)  # in R^{n x c}
        loss_nabla_O = get_grad_log_loss(Y, Y_hat)
        for layer in self.layers[::-1]:  # backward pass reverses layers
            loss_nabla_O, *param_grads = layer.backward(loss_nabla_O)
            layer.update_params_(*param_grads, lr=lr)
