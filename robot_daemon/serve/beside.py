"""What runs beside serving, after each tick's ``pred`` has gone out: the shadow model
(``run --shadow``, :mod:`robot_daemon.serve.shadow`) and the capture (``run --capture``,
:mod:`robot_daemon.serve.capturing`).

The daemon hands :class:`Beside` each tick's frames and answers once the ``pred`` is
sent, and gives it the time left before the next tick's work; nothing here can delay or
change a ``pred``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import numpy.typing as npt
import zmq

from robot_daemon import wire
from robot_daemon.config import DaemonConfig
from robot_daemon.learn.session import OnlineSession
from robot_daemon.model import Model
from robot_daemon.serve import early
from robot_daemon.serve.batch import Batch
from robot_daemon.serve.labelled import Labelled
from robot_daemon.serve.reload import ServedModel
from robot_daemon.serve.shadow import ShadowSlot

if TYPE_CHECKING:
    from robot_daemon.serve.capturing import Capturer

#: Labels waiting for the shadow's scores and the capture; the oldest go first.
MAX_LABELS: Final = 256
#: A tick's frames (n), the serving model's probabilities (n, c), the model and its
#: weights' version: computed after the pred, when the shadow or the capture runs.
Answers = Callable[[], tuple[Batch, npt.NDArray[Any], Model, str]]


class Beside:
    """The shadow (``shadow``, loaded from ``config.shadow``) and the capture of
    ``config`` (either may be off), for ``serving``.

    Raises:
        ModelError: the shadow model cannot be loaded or does not match ``serving``.
        ConfigError: the capture directory cannot be used.
    """

    def __init__(self, config: DaemonConfig, serving: Model, meta_model: str,
                 online: OnlineSession | None, shadow: ServedModel | None) -> None:
        self.shadows = None if shadow is None else ShadowSlot(shadow, config, serving)
        self.capturer = None if config.capture is None else _capturer(config, serving,
                                                                       meta_model)
        self._served: tuple[int, Answers] | None = None
        self._labels: deque[wire.Label] = deque(maxlen=MAX_LABELS)
        if online is not None:  # each label scores both models, and may be captured
            online.on_label = self._labels.append

    @classmethod
    def wanted(cls, config: DaemonConfig) -> bool:
        return config.shadow is not None or config.capture is not None

    def served(self, tick: int, answers: Answers) -> None:
        """Tick ``tick``'s ``pred`` went out; ``answers()`` gives its frames (n) and the
        serving model's probabilities (n, c), computed only when wanted. A tick still
        waiting from before is captured now, without the shadow (its frames skipped)."""
        if self._served is not None:
            waiting, self._served = self._served, None
            self._after(waiting, None)
        self._served = (tick, answers)

    @property
    def waiting(self) -> bool:
        """A tick's frames, or labels, wait for :meth:`run`."""
        return self._served is not None or bool(self._labels)

    def run(self, pub: zmq.Socket[bytes], serving: Model, version: str,
            until_ns: int) -> None:
        """The waiting tick: the shadow's pass where it fits before ``until_ns``, then the
        capture's triggers (microseconds); then the waiting labels, answered once by
        ``serving`` (at ``version``) for the shadow's scores and the capture."""
        if self._served is not None:
            waiting, self._served = self._served, None
            self._after(waiting, (pub, until_ns))
        if self._labels:
            self._check_labels(serving, version, until_ns)

    def _check_labels(self, serving: Model, version: str, until_ns: int) -> None:
        labels = list(self._labels)
        self._labels.clear()
        shadow = None if self.shadows is None else self.shadows.current
        wanted = shadow is not None or (self.capturer is not None
                                        and self.capturer.wants_answers)
        labelled = Labelled.of(labels, serving if wanted else None)
        if shadow is not None:
            shadow.score(labelled, serving, until_ns)
        if self.capturer is not None:
            self.capturer.labels(labelled, version, serving.thresholds)

    def _after(self, waiting: tuple[int, Answers], shadow_slot: tuple[zmq.Socket[bytes], int]
               | None) -> None:
        tick, answers = waiting
        frames, P, serving, version = answers()
        shadow = None
        current = None if self.shadows is None else self.shadows.current
        if current is not None:
            if shadow_slot is None:
                current.tally.skipped += len(frames)
            else:
                S = current.run(shadow_slot[0], serving, shadow_slot[1], tick, frames, P)
                if S is not None:
                    shadow = (S, current.served.model.thresholds, current.served.version)
        if self.capturer is not None:
            self.capturer.tick(tick, frames, P, serving, version, shadow)

    def health_changed(self) -> None:
        if self.capturer is not None:
            self.capturer.health_changed()

    def request_reload(self) -> None:
        if self.shadows is not None:
            self.shadows.request()

    def reloaded(self, serving: Model) -> bool | None:
        """:meth:`ShadowSlot.reloaded` (None without a shadow)."""
        return None if self.shadows is None else self.shadows.reloaded(serving)

    def serving_changed(self, serving: Model) -> None:
        if self.shadows is not None:
            self.shadows.serving_changed(serving)

    def status(self) -> dict[str, Any]:
        """The ``shadow`` map and the ``capture_*`` keys of ``status``."""
        out: dict[str, Any] = {}
        if self.shadows is not None and self.shadows.current is not None:
            out["shadow"] = self.shadows.current.status()
        if self.capturer is not None:
            out.update(self.capturer.status())
        return out

    def close(self) -> None:
        if self.shadows is not None:
            self.shadows.close()
        if self.capturer is not None:
            self.capturer.close()


def _capturer(config: DaemonConfig, serving: Model, model: str) -> Capturer:
    """The capture of ``config``; its modules (and mcap, the ``bag`` extra) only when
    asked for."""
    from robot_daemon.capture.writer import CaptureConfig
    from robot_daemon.errors import BagError, ConfigError
    from robot_daemon.serve.capturing import Capturer

    if config.capture is None:
        raise ConfigError("no capture directory")
    try:
        from robot_daemon.bag.format import BagMeta
    except BagError as exc:
        raise ConfigError(f"--capture needs the bag extra: {exc}") from None
    capture = CaptureConfig(
        dir=config.capture, max_mb=config.capture_max_mb, rate_per_s=config.capture_rate,
        margin=config.capture_margin, triggers=frozenset(config.capture_triggers))
    meta = BagMeta(d=serving.d, c=serving.c, feature_names=list(serving.feature_names),
                   class_names=list(serving.class_names), extra={"model": model})
    return Capturer(capture, meta)


def answers(first: early.Early | None, late: Batch, drop: int, model: Model, version: str,
            done: tuple[Batch, npt.NDArray[Any]] | None) -> Answers:
    """A tick's :data:`Answers`: ``done`` where the tick joined its frames and computed
    their probabilities, else joined (``serve.early``) when asked, after the pred."""
    def later() -> tuple[Batch, npt.NDArray[Any], Model, str]:
        if done is not None:
            return (*done, model, version)
        joined = early.join(first, late, drop)  # the fast way packed rows, never joined
        return (joined, early.probabilities(first, joined, drop, model, version), model,
                version)
    return later

