"""The label channel's frames beside serving: answered once by the serving model, for
both the shadow's scores and the capture's ``contradict`` trigger."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from robot_daemon import wire
from robot_daemon.model import Model


@dataclass(frozen=True, eq=False)
class Labelled:
    """Labelled frames (n) and, where asked for, the serving model's answers to them.

    X : (n, d) float32 readings. Y : (n, c) uint8 targets. P : (n, c) float32 or None
    (nobody needed them); a row with a NaN is a reading the model cannot answer.
    """

    labels: list[wire.Label]
    X: npt.NDArray[np.float32]
    Y: npt.NDArray[np.uint8]
    P: npt.NDArray[np.float32] | None

    @classmethod
    def of(cls, labels: list[wire.Label], serving: Model | None) -> Labelled:
        """``labels`` (at least one), answered by ``serving`` unless it is None."""
        X = np.stack([label.x for label in labels]).astype(np.float32)
        Y = np.stack([label.y for label in labels]).astype(np.uint8)
        P: npt.NDArray[Any] | None = None
        if serving is not None:
            with np.errstate(all="ignore"):  # a NaN row is left out by each user
                P = serving.predict_proba(X).astype(np.float32)
        return cls(labels, X, Y, P)
