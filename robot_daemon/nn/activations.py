"""The activations, elementwise and in place where they can be: ScaledReLU and Sigmoid.

Plain functions on arrays, as in scikit-learn's ``_base.py``; the layers of
:mod:`robot_daemon.nn.layers` call them. :func:`sigmoid` never overflows and turns a row
of logits that overflowed into NaN on every CPU; :func:`sigmoid_slope` is its derivative
computed from its output, shared with the loss gradient so that the two cancel exactly.
Their constants are built once per dtype, as 0-d arrays: the one-reading path calls
these functions on a few dozen values, where making a constant or resolving a scalar's
type on every call would cost as much as the arithmetic.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from robot_daemon.nn.arrays import FLOAT_DTYPES, Array, DTypeLike


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
_ONE = {t: _constant(1.0, t) for t in FLOAT_DTYPES}
# sigmoid's (-L, L, 1), looked up once per call
_SIGMOID_CONSTANTS = {
    t: (_constant(-_exp_limit(t), t), _constant(_exp_limit(t), t), _ONE[t])
    for t in FLOAT_DTYPES
}
#: Machine epsilon of each float dtype: the floor of :func:`sigmoid_slope`, and how far
#: the loss keeps probabilities from 0 and 1.
EPSILON = {t: float(np.finfo(t).eps) for t in FLOAT_DTYPES}


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


def sigmoid_slope(P: Array) -> Array:
    """``P (1 - P)``, the sigmoid's derivative from its output, floored at machine epsilon.

    Where the sigmoid has saturated (``P`` rounded to 0 or 1) the slope is 0 and the loss
    gradient ``(P - Y) / (P (1 - P))`` is infinite. Both
    :func:`~robot_daemon.nn.loss.get_grad_log_loss` and ``Sigmoid.backward``
    (:mod:`robot_daemon.nn.layers`) use this same floored slope, so their product stays
    exactly ``(P - Y) / n``: a unit saturated on the wrong side still gets its full
    gradient. The floor only acts where ``P (1 - P) < eps``, far outside
    ``[1e-6, 1 - 1e-6]``.

    P : ndarray of shape (n, c). Returns a new ndarray of the same shape and dtype.
    """
    slope = 1 - P
    slope *= P
    return np.maximum(slope, EPSILON[P.dtype], out=slope)

