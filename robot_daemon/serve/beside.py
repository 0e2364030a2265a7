"""What runs beside serving, after each tick's ``pred`` has gone out: the shadow model
(``run --shadow``, :mod:`robot_daemon.serve.shadow`) and the capture (``run --capture``,
:mod:`robot_daemon.serve.capturing`).

The daemon hands :class:`Beside` each tick's frames and answers once the ``pred`` is
sent, and gives it the time left before the next tick's work; nothing here can delay or
change a ``pred``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy.typing as npt
import zmq

from robot_daemon import wire
from robot_daemon.config import DaemonConfig
from robot_daemon.learn.session import OnlineSession
from robot_daemon.model import Model
from robot_daemon.serve.batch import Batch
from robot_daemon.serve.reload import ServedModel
from robot_daemon.serve.shadow import ShadowSlot

if TYPE_CHECKING:
    from robot_daemon.serve.capturing import Capturer


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
        self._served: tuple[int, Batch, npt.NDArray[Any]] | None = None
        if online is not None:  # each label scores both models, and may be captured
            online.on_label = self._label

    @classmethod
    def wanted(cls, config: DaemonConfig) -> bool:
        return config.shadow is not None or config.capture is not None

    def served(self, tick: int, frames: Batch, P: npt.NDArray[Any]) -> None:
        """The frames (n) a tick answered and the serving model's ``P`` (n, c), after its
        ``pred`` went out."""
        self._served = (tick, frames, P)
        if self.shadows is not None:
            self.shadows.served_frames(tick, frames, P)

    def run(self, pub: zmq.Socket[bytes], serving: Model, version: str,
            until_ns: int) -> None:
        """After a tick: the shadow's pass where it fits before ``until_ns``, then the
        capture's triggers (microseconds)."""
        shadow = None
        if self.shadows is not None and self.shadows.current is not None:
            current = self.shadows.current
            current.run(pub, serving, until_ns)
            if current.last is not None:
                shadow = (current.last, current.served.model.thresholds,
                          current.served.version)
        served, self._served = self._served, None
        if self.capturer is not None and served is not None:
            tick, frames, P = served
            self.capturer.tick(tick, frames, P, serving, version, shadow)

    def _label(self, label: wire.Label) -> None:
        if self.shadows is not None and self.shadows.current is not None:
            self.shadows.current.label(label)
        if self.capturer is not None:
            self.capturer.label(label)

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
