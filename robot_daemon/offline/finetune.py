"""Fine-tuning: the starting point ``train --init MODEL`` takes from a model file.

A fine-tune starts from MODEL's weights instead of a Kaiming draw and keeps MODEL's
input normalisation, so that a reading means to the new network what it meant to the
old one (``renormalise`` fits it on the new data instead). The layer sizes and dtype are
MODEL's; data of another d, c or class names is refused, since the new model would
answer other questions than the one it starts from. The new model's training metadata
says where it came from (``init``: MODEL's :func:`~robot_daemon.model.identity`, the
name the daemon, ``replay`` and ``eval --json`` give it), so that lineage can be traced.
One-process and streamed (fleet) training both start here.

Design: docs/architecture.md, "Fine-tuning from a model".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from robot_daemon import model as model_file
from robot_daemon.errors import ConfigError
from robot_daemon.model import Model
from robot_daemon.moments import Moments, normalisation
from robot_daemon.nn import MLP
from robot_daemon.paths import check_input

if TYPE_CHECKING:
    from robot_daemon.capture.stream import Served


@dataclass(frozen=True, eq=False)
class Init:
    """A model to start training from; its arrays are copied, never changed.

    model : the starting model (d, h, c, dtype, mean (d,), scale (d,), thresholds (c,)).
    name : its identity, ``<file stem>-<12 hex digits>``: what ``init`` records.
    path : the file it was read from, as given.
    renormalise : fit the normalisation on the new data instead of keeping the model's.
    served : what the sources' capture bags say of the stream the robot served
    (:func:`robot_daemon.capture.stream.of_bags`), or None. From capture bags only, with
    ``renormalise`` the normalisation is fitted on their stream records (every frame
    served, not only the captured ones), and the model's thresholds are kept
    (:meth:`keeps_thresholds`).
    """

    model: Model
    name: str
    path: str
    renormalise: bool = False
    served: Served | None = None

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, renormalise: bool = False) -> Init:
        """Read and validate the model file ``path`` (ConfigError or ModelError if unfit)."""
        check_input(path, "--init model file")
        loaded = model_file.load(path)
        return cls(loaded, model_file.identity(loaded, path), os.fspath(path), renormalise)

    def check_architecture(self, h: int | None, dtype: str | None) -> None:
        """Refuse a hidden width or dtype other than the model's (None: not asked for)."""
        m = self.model
        for flag, asked, has in (("--h", h, m.h), ("--dtype", dtype, m.mlp.dtype.name)):
            if asked is not None and asked != has:
                raise ConfigError(
                    f"{flag} {asked} conflicts with --init {self.path} ({flag[2:]} = {has}):"
                    f" a fine-tune keeps the model's layer sizes and dtype; leave {flag} out")

    def check_data(self, d: int, c: int, class_names: Sequence[str]) -> None:
        """Refuse data of another width (d), number of classes (c) or class names."""
        m = self.model
        if (d, c) != (m.d, m.c):
            raise ConfigError(f"--init {self.path} takes d = {m.d} and predicts c = {m.c}"
                              f" classes; the data has d = {d}, c = {c}: fine-tune it on"
                              " readings and labels of its own kind")
        if list(class_names) != m.class_names:
            raise ConfigError(f"--init {self.path} predicts {', '.join(m.class_names)}; the"
                              f" data labels {', '.join(class_names)}: the classes must be"
                              " the same, in the same order")

    def normalisation(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
        """The mean (d,) and scale (d,) to train with, float64: copies of the model's; with
        ``renormalise`` those of the served stream where the capture bags recorded it,
        else None (fit them on the training rows)."""
        if not self.renormalise:
            return self.model.mean.copy(), self.model.scale.copy()
        stream = self._stream()
        return None if stream is None else normalisation(stream)

    def _stream(self) -> Moments | None:
        """The stream records' moments where they stand for every source: all of them are
        capture bags (with other bags, their rows would be left out of the statistics)."""
        served = self.served
        if served is None or not served.captures_only or served.moments.n == 0:
            return None
        return served.moments

    @property
    def keeps_thresholds(self) -> bool:
        """Every source is a capture bag: the validation split holds frames the triggers
        chose, not frames as served, and thresholds tuned on it would be off (measured:
        0.737 -> 0.709 held-out macro F1, docs/loop.md). The model's are kept."""
        return self.served is not None and self.served.captures_only

    def network(self, seed: int) -> MLP:
        """A new MLP holding copies of the model's weights; ``seed`` drives its shuffling."""
        params = [a for lin in self.model.mlp.linears for a in (lin.W, lin.b)]
        return MLP.from_params(*params, rng=seed)

    def kept_thresholds(self) -> npt.NDArray[np.float64] | None:
        """The thresholds (c,) a fine-tune keeps and judges its epochs at
        (:attr:`keeps_thresholds`); None where it tunes its own."""
        return self.thresholds() if self.keeps_thresholds else None

    def thresholds(self) -> npt.NDArray[np.float64]:
        """The model's thresholds (c,): kept where no validation split can tune new ones."""
        return self.model.thresholds.copy()

    def metadata(self) -> dict[str, Any]:
        """What the fine-tuned model's ``training["init"]`` records."""
        return {"model": self.name, "path": self.path,
                "normalisation": self.describe_normalisation(),
                "thresholds": "kept" if self.keeps_thresholds else "tuned"}

    def describe_normalisation(self) -> str:
        """Where the normalisation comes from, in words."""
        if not self.renormalise:
            return "kept"
        stream = self._stream()
        if stream is not None:
            return (f"refitted on the {stream.n:,} frames the robot served"
                    " (the capture bags' stream records)")
        return "refitted on the data"
