"""The loss (mean binary cross-entropy) and its gradient with respect to the probabilities.

``docs/spec.md`` names both: :func:`log_loss`, the mean negative log-likelihood of the
labels, and :func:`get_grad_log_loss`, which the reference ``single_step_sgd`` calls.
:func:`log_loss_rows` gives each example's loss, for a mean over examples that come and
go (online learning's holdout).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from robot_daemon.errors import ShapeError
from robot_daemon.nn.activations import EPSILON, sigmoid_slope
from robot_daemon.nn.arrays import Array


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
    eps = EPSILON[P.dtype]
    P = np.clip(P, eps, 1 - eps)
    nll: Array = Y * np.log(P)
    nll += (1 - Y) * np.log1p(-P)
    return nll


def get_grad_log_loss(Y: npt.ArrayLike, Y_hat: Array) -> Array:
    """Gradient of :func:`log_loss` with respect to ``Y_hat``.

    ``dL/dP = (P - Y) / (P (1 - P)) / n``, with the slope ``P (1 - P)`` floored as in
    :func:`~robot_daemon.nn.activations.sigmoid_slope`. ``Y`` is cast to ``Y_hat``'s
    dtype, so float32 stays float32.

    Y : array_like of shape (n, c), 0/1 labels (bool, uint8, float, ...).
    Y_hat : ndarray of shape (n, c), the sigmoid outputs.
    Returns a new ndarray of shape (n, c) and ``Y_hat``'s dtype.
    """
    P: Array = np.asarray(Y_hat)
    Y = np.asarray(Y, dtype=P.dtype)
    _check_pair(Y, P)
    grad: Array = P - Y
    slope = sigmoid_slope(P)
    slope *= P.shape[0]
    grad /= slope
    return grad


def _check_pair(Y: Array, P: Array) -> None:
    if P.ndim != 2 or Y.shape != P.shape:
        raise ShapeError(
            f"labels and predictions must both have shape (n, c); got {Y.shape} and {P.shape}"
        )

