"""The arrays the network computes on: float32 or float64, nothing else.

Every module of :mod:`robot_daemon.nn` takes and returns :data:`Array`; parameters,
activations and gradients of one network share one of the two :data:`FLOAT_DTYPES`,
which :func:`float_dtype` checks wherever a dtype comes in.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from robot_daemon.errors import ShapeError

Array = npt.NDArray[np.floating[Any]]
DTypeLike = npt.DTypeLike

#: The dtypes the network computes in.
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_dtype(dtype: DTypeLike) -> np.dtype[Any]:
    """``dtype`` as a NumPy dtype; raises ShapeError unless it is float32 or float64."""
    dt = np.dtype(dtype)
    if dt not in FLOAT_DTYPES:
        raise ShapeError(f"dtype must be float32 or float64, got {dt}")
    return dt
