"""The model the daemon serves: loaded at start, and on SIGHUP off the serving path.

:func:`load_model` loads the model at start; on SIGHUP the :class:`Reloader` loads and
validates the file in a thread of its own while the loop keeps ticking, and the loop swaps
the new model in between two ticks. A file that would change ``d`` or ``c``, or whose
forward pass over a full tick would not fit the tick (:func:`too_slow`), is refused and the
old model serves on.

Design: docs/architecture.md, "Reloading the model".
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import numpy as np

from robot_daemon import model as model_file
from robot_daemon.errors import ModelError

log = logging.getLogger("robot_daemon.serve.reload")

#: The most CPU time a model may take for the forward pass of a full tick (``max_batch``
#: frames), as a share of the interval (10 ms at 20 ms ticks): the rest of the interval
#: goes to receiving, decoding and publishing, and to a machine that is busy with more.
TICK_BUDGET_SHARE: Final = 0.5
#: Timed passes at most; the fastest counts (a first pass meets cold caches, any pass a
#: busy core). A model within its budget usually takes one or two.
SPEED_TRIALS: Final = 3


@dataclass(frozen=True, eq=False)
class ServedModel:
    """A loaded model with the version string every ``pred`` carries
    (:func:`robot_daemon.model.identity`)."""

    model: model_file.Model
    version: str
    path: Path
    #: CPU time (ns) of a pass over 1 row and over ``rows`` rows, when the loader timed
    #: it (a shadow's reload: timed in the reload thread, never on the serving one).
    pass_ns: tuple[int, int, int] | None = None


def load_model(path: Path, role: str = "model file") -> ServedModel:
    """Load and validate the model at ``path``, and check that it predicts finite values.

    Raises:
        ModelError: the file is missing, corrupt or fails validation; the message names
            it as ``role`` (``shadow model file``: the operator looks at the right one).
    """
    try:
        loaded = model_file.load(path)
    except ModelError as exc:
        if role == "model file":  # model.load's messages begin "model file PATH"
            raise
        raise ModelError(f"{role.removesuffix('model file')}{exc}") from None
    try:
        model_file.check_predicts_finite(loaded)
    except ModelError as exc:
        raise ModelError(f"{role} {path} {exc}") from None
    return ServedModel(loaded, model_file.identity(loaded, path), path)


def full_tick_ns(model: model_file.Model, rows: int, budget_ns: int | None = None) -> int:
    """The CPU time (ns) of the forward pass over ``rows`` frames: the fastest of
    up to :data:`SPEED_TRIALS` passes, fewer once one is within ``budget_ns`` or one is
    far beyond it.

    CPU time of the calling thread, not wall time: the reload thread may wait for the core
    on a busy machine; what the serving loop would pay is the work. (BLAS runs on the
    calling thread as deployed, ``OPENBLAS_NUM_THREADS=1``.)
    """
    X = np.tile(model.mean.astype(np.float32), (rows, 1))  # (rows, d): the cost is the same
    best = None
    for _ in range(SPEED_TRIALS):
        start = time.thread_time_ns()
        with np.errstate(all="ignore"):  # the cost is the question, not the values
            model.predict_proba(X)
        took = time.thread_time_ns() - start
        best = took if best is None else min(best, took)
        if budget_ns is not None and (best <= budget_ns or best > 4 * budget_ns):
            break
    return int(best or 0)


def too_slow(served: ServedModel, rows: int, interval_ns: int) -> str | None:
    """Why ``served`` cannot answer a full tick of ``rows`` frames at ``interval_ns`` on
    this machine, or None when it can (:func:`full_tick_ns`, :data:`TICK_BUDGET_SHARE`)."""
    budget_ns = round(interval_ns * TICK_BUDGET_SHARE)
    took = full_tick_ns(served.model, rows, budget_ns)
    if took <= budget_ns:
        return None
    return (f"model file {served.path} (h={served.model.h}) takes {took / 1e6:.1f} ms of CPU"
            f" for a full tick of max_batch={rows} frames, over the budget of"
            f" {budget_ns / 1e6:g} ms ({TICK_BUDGET_SHARE:g} of the {interval_ns / 1e6:g} ms"
            " interval) on this machine: use a smaller model, or lower max_batch or raise"
            " interval_ms (a restart)")


class Reloader:
    """Loads ``path`` again in a thread of its own, one load at a time.

    :meth:`request` on SIGHUP, :meth:`done` between ticks (it never blocks), :meth:`close`
    at the end. The model that serves keeps ``d`` and ``c``: a file with others is refused,
    and so is a model whose full tick (``rows`` frames) is over the budget for
    ``interval_ns`` (:func:`too_slow`).
    """

    def __init__(self, path: Path, d: int, c: int, rows: int, interval_ns: int,
                 shadow: bool = False) -> None:
        self.path = path
        #: For a shadow model: not refused for its speed (a slow one skips frames) but
        #: timed, here, for its estimate (``ServedModel.pass_ns``).
        self.shadow = shadow
        self.d = d
        self.c = c
        self.rows = rows
        self.interval_ns = interval_ns
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reload")
        self._load: Future[ServedModel] | None = None
        self._again = False

    def request(self) -> None:
        """Start a load; during one, load once more after it (the file may have changed)."""
        if self._load is None:
            self._load = self._thread.submit(self._read)
        else:
            self._again = True

    def busy(self) -> bool:
        """Whether a load is under way."""
        return self._load is not None

    def done(self) -> ServedModel | ModelError | None:
        """The model of a load that ended since the last call, why it was refused, or None."""
        if self._load is None or not self._load.done():
            return None
        load, self._load = self._load, None
        if self._again:
            self._again = False
            self.request()
        error = load.exception()
        if error is None:
            return load.result()
        # A fresh exception: the load's traceback holds its frames and so the file's bytes
        # (up to MAX_FILE_BYTES), which must not live on with the message.
        if not isinstance(error, ModelError):  # a bug: refuse, keep serving, say it loudly
            log.error("reload of %s failed unexpectedly", self.path, exc_info=error)
        return ModelError(str(error) if isinstance(error, ModelError) else
                          f"model file {self.path}: unexpected {type(error).__name__}: {error}")

    def close(self) -> None:
        """Wait for a load under way (bounded by the file's size limit), stop the thread."""
        self._thread.shutdown(wait=True, cancel_futures=True)

    def _read(self) -> ServedModel:
        """In the thread: load and validate, then refuse another ``d`` or ``c`` and a model
        too slow for the tick."""
        served = (load_model(self.path, "shadow model file") if self.shadow
                  else load_model(self.path))
        d, c = served.model.d, served.model.c
        if self.shadow:
            if (d, c) != (self.d, self.c):
                raise ModelError(f"shadow model file {self.path} has d={d}, c={c} but the"
                                 f" serving model has d={self.d}, c={self.c}")
            rows = max(2, self.rows)
            return replace(served, pass_ns=(full_tick_ns(served.model, 1),
                                            full_tick_ns(served.model, rows), rows))
        if (d, c) != (self.d, self.c):
            raise ModelError(
                f"model file {self.path} has d={d}, c={c} but the daemon serves d={self.d},"
                f" c={self.c}: frames of the other width would all be rejected. Changing d"
                " or c takes a restart (systemctl restart robot-daemon), not a reload"
            )
        slow = too_slow(served, self.rows, self.interval_ns)
        if slow is not None:
            raise ModelError(slow)
        return served
