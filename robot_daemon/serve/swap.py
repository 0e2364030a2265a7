"""SIGHUP in the serving loop: start a reload, and swap in what it loaded between ticks.

The file is loaded and checked off the serving path (:class:`~robot_daemon.serve.reload.
Reloader`, and the shadow's in :class:`~robot_daemon.serve.beside.Beside`); the loop asks
:meth:`Swaps.between_ticks` for the model to serve next, so that a tick always serves one
model from start to end.

Design: docs/architecture.md, "Reloading the model".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from robot_daemon.errors import ModelError
from robot_daemon.learn.session import OnlineSession
from robot_daemon.ratelimit import REJECT_LOG_PERIOD_NS, RateLimiter
from robot_daemon.serve.beside import Beside
from robot_daemon.serve.memory import MemoryBound
from robot_daemon.serve.notify import Notifier
from robot_daemon.serve.reload import Reloader, ServedModel
from robot_daemon.serve.report import Counters

log = logging.getLogger("robot_daemon")


class Swaps:
    """The daemon's reloads: what a SIGHUP starts, and what the loop serves after it."""

    def __init__(self, reloader: Reloader, notifier: Notifier, counters: Counters,
                 memory: MemoryBound, beside: Beside | None,
                 online: OnlineSession | None) -> None:
        self.reloader = reloader
        self._notifier = notifier
        self._counters = counters
        self._memory = memory
        self._beside = beside
        self._online = online
        self._unchanged_log = RateLimiter(REJECT_LOG_PERIOD_NS)

    def between_ticks(self, requested: bool, served: ServedModel,
                      version: Callable[[], str]) -> ServedModel:
        """The model to serve from the next tick on: ``served``, or what a reload loaded.

        ``requested``: a SIGHUP came since the last call (the model file, and the shadow's,
        are loaded again). ``version``: the weights' version serving now (online learning
        has its own).
        """
        if requested:
            self._notifier.reloading()
            self.reloader.request()
            if self._beside is not None:
                self._beside.request_reload()
        if self._beside is not None and self._beside.reloaded(served.model) is False:
            self._counters.reload_failures += 1
        outcome = self.reloader.done()
        if outcome is None:
            return served
        if isinstance(outcome, ModelError):
            self._counters.reload_failures += 1
            log.error("reload refused, still serving %s: %s", version(), outcome)
            self._notifier.ready(f"reload refused; serving model {version()}")
        else:
            served = self._swap(served, outcome, version)
        # What serving takes now: the new model, or what the load left in the allocator.
        self._memory.rebase()
        return served

    def _swap(self, old: ServedModel, candidate: ServedModel,
              version: Callable[[], str]) -> ServedModel:
        """``candidate`` (loaded and checked: same d and c), unless it is ``old`` again."""
        if candidate.version == old.version:
            # The same file: nothing to swap (online: going back to its weights would throw
            # away what was learned). Told at most once per 10 s: a SIGHUP storm made a line
            # each (1,851 in 8 s).
            if self._unchanged_log.allow("unchanged model", time.monotonic_ns()) is not None:
                log.info("reload: %s is unchanged; serving %s on", candidate.path, version())
            self._notifier.ready(f"serving model {version()}")
            return old
        if self._beside is not None:
            self._beside.serving_changed(candidate.model)
        if self._online is not None:  # a new model file: learning starts again from it
            self._online.reset(candidate.model, candidate.version,
                               self._online.learner.version)
        self._counters.reloads += 1
        log.info("reloaded %s: serving %s (was %s)", candidate.path, candidate.version,
                 old.version)
        self._notifier.ready(f"serving model {version()}")
        return candidate
