"""Per-feature moments of rows, merged across parts: what ``train``'s first pass needs for
the input normalisation, ``dataset``'s manifest shows as statistics, and ``run --capture``
records of every frame the robot served (the bags' ``stream`` records)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass
class Moments:
    """Count, mean, sum of squared deviations, min and max of each feature (d,) float64;
    :meth:`empty` has d = 0 and merges as nothing."""

    n: int
    mean: NDArray[np.float64]
    m2: NDArray[np.float64]
    low: NDArray[np.float64]
    high: NDArray[np.float64]

    @classmethod
    def of(cls, X: NDArray[np.float32]) -> Moments:
        """Of the rows of ``X`` (n, d); no rows: :meth:`empty`."""
        if not len(X):
            return cls.empty()
        X64 = np.asarray(X, dtype=np.float64)
        mean = X64.mean(axis=0)
        return cls(len(X64), mean, ((X64 - mean) ** 2).sum(axis=0), X64.min(axis=0),
                   X64.max(axis=0))

    @classmethod
    def empty(cls) -> Moments:
        none = np.zeros(0)
        return cls(0, none, none, none, none)

    def merge(self, other: Moments) -> Moments:
        """Chan et al.'s pairwise update: the moments of both sets of rows."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        return Moments(n, self.mean + delta * (other.n / n),
                       self.m2 + other.m2 + delta**2 * (self.n * other.n / n),
                       np.minimum(self.low, other.low), np.maximum(self.high, other.high))

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.n, "mean": self.mean.tolist(),
                "std": np.sqrt(self.m2 / self.n).tolist(), "min": self.low.tolist(),
                "max": self.high.tolist()}


def normalisation(moments: Moments) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean and scale (:func:`scale_of`) of the rows ``moments`` counted."""
    return moments.mean, scale_of(moments.mean, np.sqrt(moments.m2 / moments.n))


def scale_of(mean: NDArray[np.float64], std: NDArray[np.float64]) -> NDArray[np.float64]:
    """The normalisation's scale (d,): the standard deviation, floored so that a constant
    feature (a sensor stuck during the whole recording) maps to 0 instead of dividing by
    zero; one rule for every way a normalisation is fitted."""
    floor = 1e-6 * max(1.0, float(np.abs(mean).max()))
    return np.where(std > floor, std, 1.0)
