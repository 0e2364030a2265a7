"""A logistic-regression baseline: one ``Linear(d, c)`` and a ``Sigmoid``, trained by SGD.

The multi-label model that an MLP has to beat to earn its keep: each class gets an
independent linear score of the standardised readings. It reuses the numerical core
(:mod:`robot_daemon.nn`) so that the comparison with the MLP differs only in depth.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from robot_daemon import nn
from robot_daemon.errors import ShapeError


class LogisticRegression:
    """Multi-label logistic regression on standardised inputs.

    Args:
        d: input features.
        c: classes (independent sigmoid outputs).
        rng: seed or generator for the initial weights and the minibatch order.
        epochs, bs, lr: minibatch SGD settings.
    """

    def __init__(
        self,
        d: int,
        c: int,
        *,
        rng: int | np.random.Generator | None = None,
        epochs: int = 20,
        bs: int = 100,
        lr: float = 0.1,
    ) -> None:
        self.rng = np.random.default_rng(rng)
        self.d, self.c = d, c
        self.epochs, self.bs, self.lr = epochs, bs, lr
        self.linear = nn.Linear(d, c, rng=self.rng)
        self.sigmoid = nn.Sigmoid(c)
        self.mean: NDArray[np.float64] = np.zeros(d)
        self.scale: NDArray[np.float64] = np.ones(d)

    def _standardize(self, X: ArrayLike) -> NDArray[np.float64]:
        Xf = np.asarray(X, dtype=np.float64)
        if Xf.ndim != 2 or Xf.shape[1] != self.d:
            raise ShapeError(f"X must have shape (n, {self.d}), got {Xf.shape}")
        return (Xf - self.mean) / self.scale

    def fit(self, X: ArrayLike, Y: ArrayLike) -> LogisticRegression:
        """Standardise with X's statistics, then run ``epochs`` of shuffled minibatch SGD.

        X : (n, d) readings; Y : (n, c) labels in {0, 1}. Returns ``self``.
        """
        Xf = np.asarray(X, dtype=np.float64)
        Yf = np.asarray(Y, dtype=np.float64)
        if Yf.shape != (Xf.shape[0], self.c):
            raise ShapeError(f"Y must have shape ({Xf.shape[0]}, {self.c}), got {Yf.shape}")
        self.mean = Xf.mean(axis=0)
        std = Xf.std(axis=0)
        self.scale = np.where(std > 0, std, 1.0)  # a constant feature stays at zero
        Xs = self._standardize(Xf)
        n = Xs.shape[0]
        for _ in range(self.epochs):
            order = self.rng.permutation(n)
            for start in range(0, n, self.bs):
                rows = order[start : start + self.bs]
                self._step(Xs[rows], Yf[rows])
        return self

    def _step(self, X: NDArray[np.float64], Y: NDArray[np.float64]) -> None:
        P = self.sigmoid.forward(self.linear.forward(X))
        (grad,) = self.sigmoid.backward(nn.get_grad_log_loss(Y, P))
        _, dW, db = self.linear.backward(grad)
        self.linear.update_params_(dW, db, lr=self.lr)

    def predict_proba(self, X: ArrayLike) -> NDArray[np.float64]:
        """Probabilities, shape (n, c), float64, for readings X of shape (n, d)."""
        Z = self.linear.predict(self._standardize(X))
        return np.asarray(self.sigmoid.predict(Z), dtype=np.float64)  # a no-op cast
