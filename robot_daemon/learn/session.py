"""``robot-daemon run --online``: the label channel, learning between ticks, checkpoints.

The daemon's loop stays in :mod:`robot_daemon.serve.daemon`; :class:`OnlineSession` owns
what online learning adds to it, so that the serving loop reads the same with it or
without it: the label SUB socket (CURVE-protected if configured), one guarded step or one
checkpoint save between ticks where it fits before the next one, the ``<base>+<n>``
version every ``pred`` carries, and checkpoints written by a thread of their own.

Design: docs/architecture.md, "Online learning inside the daemon".
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import zmq

from robot_daemon import wire
from robot_daemon.config import DaemonConfig
from robot_daemon.errors import ModelError, RobotDaemonError, WireError
from robot_daemon.learn import keys
from robot_daemon.learn.checkpoints import CheckpointStore
from robot_daemon.learn.learner import OnlineConfig, OnlineLearner, StepResult
from robot_daemon.model import Model
from robot_daemon.ratelimit import REJECT_LOG_PERIOD_NS, RateLimiter, TokenBucket
from robot_daemon.zmq_io import monitor, receive

log = logging.getLogger("robot_daemon.learn.session")

#: Key of a checkpoint's ``training`` metadata naming the model file it learned from.
BASE_KEY: Final = "online_base"
#: Until a step (or save) has been timed, assume it costs this much.
PRIOR_NS: Final = 2_000_000
#: Durations kept to estimate the next one, and for how long they count.
TIMING_SAMPLES: Final = 9
TIMING_MEMORY_NS: Final = 10_000_000_000
#: Start a step or a save only if it leaves this much slack before the next tick, plus
#: half its expected time again (its duration varies with the cache and the collector).
MARGIN_NS: Final = 1_000_000
#: Steps (taken or refused) summed up by one INFO line: at 100 labels/s, one a minute.
STEPS_PER_LOG_LINE: Final = 60
#: Labels read a second when they only go to the capture (``learn=False``).
CAPTURE_LABELS_PER_S: Final = 1000
#: Labelled frames waiting in ZeroMQ before the publisher's excess is dropped.
LABEL_RCVHWM: Final = 10_000
#: A label is at most a frame plus c bytes: anything near this is not a label.
MAX_LABEL_BYTES: Final = 1 << 20
#: After a failed checkpoint save (a full disk), the next try waits this long, doubling
#: with each further failure up to CHECKPOINT_BACKOFF_MAX_NS: a due save used to be
#: retried at every wake-up, about 450 failed saves and ERROR lines a second.
CHECKPOINT_BACKOFF_FIRST_NS: Final = 1_000_000_000
CHECKPOINT_BACKOFF_MAX_NS: Final = 30_000_000_000
#: After libzmq gave a connection up (a failed handshake, an oversized message), connect
#: again this much later: soon enough for a publisher that restarts with the right key,
#: slow enough that a wrong one costs nothing.
RECONNECT_AFTER_FAILURE_NS: Final = 1_000_000_000


def _holdout_text(result: StepResult) -> str:
    if result.holdout_before is None or result.holdout_after is None:
        return ""
    return f"; holdout loss {result.holdout_before:.4g} -> {result.holdout_after:.4g}"


def resume(config: DaemonConfig, model: Model, base: str) -> tuple[Model, int]:
    """The model to serve and its step number: the newest checkpoint of ``base``, if any.

    Otherwise ``model`` (loaded from ``--model``) serves, numbered after the newest
    checkpoint on disk (0 if none), so that its own saves sort after those of an older
    model file instead of being pruned as the oldest; ``(base, number)`` stays unique.
    """
    if config.checkpoint_dir is None:
        return model, 0
    store = CheckpointStore(config.checkpoint_dir, keep=config.checkpoint_keep)
    on_disk = store.versions()
    last = on_disk[-1][0] if on_disk else 0
    newest = store.newest()
    if newest is None:
        return model, last
    learned_from = newest.model.training.get(BASE_KEY)
    if learned_from != base or (newest.model.d, newest.model.c) != (model.d, model.c):
        log.warning("checkpoint %s was learned from %s, not %s: starting from the model file",
                    newest.path, learned_from, base)
        return model, last
    log.info("resuming checkpoint %s (step %d on %s)", newest.path, newest.version, base)
    return newest.model, newest.version


@dataclass
class LabelCounters:
    """The label channel's and the scheduler's counters, for ``status``."""

    labels_received: int = 0
    labels_accepted: int = 0
    labels_rejected: Counter[str] = field(default_factory=Counter)
    steps_deferred: int = 0
    checkpoints_saved: int = 0
    checkpoints_deferred: int = 0
    checkpoint_failures: int = 0
    errors: int = 0  # unexpected exceptions between ticks (logged with a traceback)


class _Timing:
    """How long something takes: the median of its recent durations (PRIOR_NS if none).

    A median, so that one slow step (a page fault, the collector) does not defer the
    next ones; samples expire after TIMING_MEMORY_NS, so that a burst of load cannot
    stop learning for good (if steps really do not fit, one retry every TIMING_MEMORY_NS
    re-measures them).
    """

    def __init__(self) -> None:
        self._samples: deque[tuple[int, int]] = deque(maxlen=TIMING_SAMPLES)  # (when, ns)

    def expected_ns(self) -> float:
        now = time.monotonic_ns()
        while self._samples and now - self._samples[0][0] > TIMING_MEMORY_NS:
            self._samples.popleft()
        if not self._samples:
            return PRIOR_NS
        return float(np.median([duration for _, duration in self._samples]))

    def fits(self, time_left_ns: int) -> bool:
        return time_left_ns > self.expected_ns() * 1.5 + MARGIN_NS

    def add(self, duration_ns: int) -> None:
        self._samples.append((time.monotonic_ns(), duration_ns))


class OnlineSession:
    """Labels in, guarded steps and checkpoints between ticks (see the module docstring).

    Build it with the served model (``resume``'s), then :meth:`open` the label socket.
    """

    def __init__(self, config: DaemonConfig, model: Model, base: str, steps: int,
                 learn: bool = True) -> None:
        self.config = config
        #: False: the label channel only (``run --capture`` with ``labels`` and without
        #: ``online``): labels are counted and handed on (:attr:`on_label`), never learned.
        self.learn = learn
        self.counters = LabelCounters()
        self.store = (CheckpointStore(config.checkpoint_dir, keep=config.checkpoint_keep)
                      if config.checkpoint_dir is not None else None)
        self._reject_log = RateLimiter(REJECT_LOG_PERIOD_NS)
        self._step_timing = _Timing()
        self._save_timing = _Timing()  # of the part between ticks: copying the weights out
        # Checkpoint files are written and fsynced by one thread of their own: a save took
        # 13-28 ms on a loaded 2-core machine, more than any gap between 20 ms ticks, so
        # saves done between ticks never fitted and learning stopped behind them.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._writing: tuple[Future[Path], int, int] | None = None  # (write, version, start)
        self._save_failures = 0  # in a row: 0 while saving works
        self._retry_ns = 0  # no save is tried before then (monotonic): the backoff
        self._deferred: dict[str, int] = {}  # what -> the tick deadline it was deferred at
        self._since_log: Counter[str] = Counter()  # step outcomes since the last INFO line
        self._receiver: receive.Receiver | None = None  # reads the label socket
        self.links: monitor.ConnectionWatch | None = None  # the label socket's, once open
        self.last_label_ns = 0  # when the last label message came (monotonic), 0: none
        # What the capture alone may read: a second's worth at once, then the rate.
        self._label_budget = TokenBucket(CAPTURE_LABELS_PER_S, CAPTURE_LABELS_PER_S)
        #: Told of each accepted label (the shadow scores both models on it), if set.
        self.on_label: Callable[[wire.Label], None] | None = None
        self.reset(model, base, steps)

    def reset(self, model: Model, base: str, steps: int) -> None:
        """Learn on ``model``, numbered from ``steps`` (start, or a new model file on SIGHUP)."""
        self._finish_write(wait=True)  # a save of the old weights ends under their number
        self.base = base
        self.learner = OnlineLearner(model, OnlineConfig(
            batch_size=self.config.online_batch, lr=self.config.online_lr))
        # Versions continue from the checkpoint: "+n" names the same weights across restarts.
        self.learner.version = steps
        self._saved_version = steps
        self._saved_ns = time.monotonic_ns()

    @property
    def version(self) -> str:
        """What ``pred`` messages carry: ``<base>+<step number>`` (``<base>`` when the
        session does not learn)."""
        return f"{self.base}+{self.learner.version}" if self.learn else self.base

    # ---------------------------------------------------------------- the socket

    @contextlib.contextmanager
    def open(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> Iterator[zmq.Socket[bytes]]:
        """The label SUB socket, connected (CURVE server behind a ZAP handler if set)."""
        cfg = self.config
        with contextlib.ExitStack() as stack:
            if cfg.curve_allow is not None:
                stack.enter_context(keys.authenticator(ctx, cfg.curve_allow))
            sock = stack.enter_context(ctx.socket(zmq.SUB))
            sock.setsockopt(zmq.RCVHWM, LABEL_RCVHWM)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_LABEL_BYTES)
            sock.setsockopt(zmq.LINGER, 0)
            if cfg.curve_secret_key is not None:
                public = keys.curve_server(sock, cfg.curve_secret_key)
                log.info("labels: CURVE server %s, publishers allowed from %s", public,
                         cfg.curve_allow)
            elif cfg.labels is not None and cfg.insecure_labels:
                log.warning("labels from %s WITHOUT CURVE (insecure_labels): anyone who "
                            "reaches it can retrain the model", cfg.labels)
            sock.subscribe(wire.TOPIC_LABEL)
            self.links = stack.enter_context(monitor.watch(
                sock, [str(cfg.labels)], "label publisher", RECONNECT_AFTER_FAILURE_NS))
            try:
                sock.connect(str(cfg.labels))
            except zmq.ZMQError as exc:
                raise RobotDaemonError(f"cannot connect to labels {cfg.labels!r}: {exc}") from None
            yield sock

    def wants_labels(self) -> bool:
        """Whether to read labels now: not while a full batch waits for its step.

        The learner keeps only one batch waiting (it drops the oldest beyond that); the
        rest wait in ZeroMQ's queue (LABEL_RCVHWM), so a burst is trained on, not lost.
        """
        if self.learn:
            return not self.learner.ready()
        # For the capture only: at most CAPTURE_LABELS_PER_S a second are read (a flood of
        # 59,000 a second took 1.6 cores); the rest wait in ZeroMQ's queue, then drop.
        self._label_budget.take(0, time.monotonic_ns())  # refilled to now
        return self._label_budget.tokens >= 1

    def drain(self, sock: zmq.Socket[bytes], until_ns: int) -> None:
        """Receive and stage labels until a batch is ready, the queue is empty or ``until_ns``."""
        if self._receiver is None or self._receiver.sock is not sock:  # one per socket
            self._receiver = receive.Receiver(sock, self._on_label)
        self._receiver.drain(until_ns, keep_going=self.wants_labels)

    def _on_label(self, parts: list[receive.Part], count: int) -> None:
        """One message of ``count`` parts, of which ``parts`` holds the first (at most 2)."""
        self.counters.labels_received += 1
        self.last_label_ns = time.monotonic_ns()
        if not self.learn:
            self._label_budget.take(1, self.last_label_ns)
        if count != 2 or parts[0] != wire.TOPIC_LABEL:
            self._reject("bad_envelope", f"expected [b'label', payload], got {count} part(s)")
            return
        model = self.learner.model
        try:
            label = wire.decode_label(parts[1], d=model.d, c=model.c)
        except WireError as exc:
            self._reject(exc.reason, str(exc))
            return
        self.counters.labels_accepted += 1
        if self.learn:
            self.learner.add(label)
        if self.on_label is not None:  # the shadow scores both models on it
            self.on_label(label)

    def _reject(self, reason: str, message: str) -> None:
        self.counters.labels_rejected[reason] += 1
        suppressed = self._reject_log.allow(reason, time.monotonic_ns())
        if suppressed is not None:
            more = f" ({suppressed} more since the last report)" if suppressed else ""
            log.warning("rejected label: %s%s", message, more)

    # ---------------------------------------------------------------- between ticks

    def between_ticks(self, deadline_ns: int) -> bool:
        """One step and/or one checkpoint save, each only if it fits before ``deadline_ns``.

        Returns whether the weights changed (the served version then did too).
        """
        if not self.learn:
            return False
        stepped = False
        self._finish_write(wait=False)
        # A save that is due comes before any further step: otherwise, on a loaded
        # machine where a save (slower than a step) rarely fits, learning would run on
        # unsaved and a crash would lose more than one checkpoint interval.
        if self.learner.ready() and not self._checkpoint_overdue():
            if self._step_timing.fits(deadline_ns - time.monotonic_ns()):
                stepped = self._step()
            elif self._defer("step", deadline_ns):
                self.counters.steps_deferred += 1
        if self._writing is None and self.store is not None and self._checkpoint_due():
            if self._save_timing.fits(deadline_ns - time.monotonic_ns()):
                self._start_write(self.store)
            elif self._defer("save", deadline_ns):
                self.counters.checkpoints_deferred += 1
        return stepped

    def _defer(self, what: str, deadline_ns: int) -> bool:
        """Whether this is the first deferral of ``what`` before this tick (count it once)."""
        first = self._deferred.get(what) != deadline_ns
        self._deferred[what] = deadline_ns
        return first

    def _step(self) -> bool:
        result = self.learner.step()
        self._step_timing.add(result.duration_ns)
        if not result.accepted:
            log.warning("online step refused (%s): batch loss %.3g%s", result.reason,
                        result.loss, _holdout_text(result))
        self._since_log[result.reason or "taken"] += 1
        if sum(self._since_log.values()) >= STEPS_PER_LOG_LINE:
            self._log_progress()
        return result.accepted

    def _log_progress(self) -> None:
        """One INFO line for the last STEPS_PER_LOG_LINE steps: what learning is doing."""
        steps, self._since_log = self._since_log, Counter()
        taken = steps.pop("taken", 0)
        refused = ", ".join(f"{reason} {n}" for reason, n in sorted(steps.items()))
        rejected = self.counters.labels_rejected
        last = self.learner.last
        log.info("online learning: %d of the last %d steps taken%s; version %s; labels used"
                 " %d, rejected %d%s%s", taken, taken + sum(steps.values()),
                 f" (refused: {refused})" if refused else "", self.version,
                 self.counters.labels_accepted, sum(rejected.values()),
                 f" ({', '.join(f'{r} {n}' for r, n in sorted(rejected.items()))})"
                 if rejected else "", "" if last is None else _holdout_text(last))

    def _checkpoint_overdue(self) -> bool:
        """Whether a step-count checkpoint is due: no step may be taken before it is saved.

        Except while saves fail (a full disk): then holding steps back would only let
        labels be dropped, so learning goes on in memory until a save works again.
        """
        return (self.store is not None and self._save_failures == 0
                and self.learner.version - self._saved_version
                >= self.config.checkpoint_every_steps)

    def _checkpoint_due(self) -> bool:
        if self.store is None or self.learner.version == self._saved_version:
            return False
        if time.monotonic_ns() < self._retry_ns:  # backing off after a failed save
            return False
        if self.learner.version - self._saved_version >= self.config.checkpoint_every_steps:
            return True
        elapsed = time.monotonic_ns() - self._saved_ns
        return elapsed >= round(self.config.checkpoint_every_s * 1e9)

    def checkpoint(self) -> bool:
        """Save the current weights now, waiting for the file; whether a save succeeded.

        For the end of a run: a write in flight is waited for first, then the weights
        learned since are saved if any. Between ticks the daemon saves in the background
        instead (``between_ticks``). A failed save (disk full, permissions) is logged and
        counted; serving goes on, and between ticks saves are retried with a backoff.
        """
        saved = self._finish_write(wait=True)
        if not self.learn:
            return saved
        if self.store is not None and self.learner.version != self._saved_version:
            self._start_write(self.store)  # the last chance: whatever the backoff says
            saved = self._finish_write(wait=True)
            if not saved:
                log.error("the last checkpoint failed: steps %d to %d of %s are lost",
                          self._saved_version + 1, self.learner.version, self.base)
        return saved

    def close(self) -> None:
        """Wait for a write in flight and stop the writer thread."""
        self._finish_write(wait=True)
        self._writer.shutdown()

    def _start_write(self, store: CheckpointStore) -> None:
        """Copy the weights out as a model file's bytes, and hand them to the writer thread."""
        start = time.monotonic_ns()
        model = self.learner.model
        model.training[BASE_KEY] = self.base
        try:
            data = model.to_bytes()
        except ModelError as exc:
            self._save_failed(start, exc)
            return
        self._save_timing.add(time.monotonic_ns() - start)
        write = self._writer.submit(store.write, data, self.learner.version)
        self._writing = (write, self.learner.version, start)

    def _finish_write(self, *, wait: bool) -> bool:
        """Account for the write in flight, if any, if it ended (or once it ends, ``wait``).

        Whether a write ended and succeeded.
        """
        if self._writing is None:
            return False
        write, version, start = self._writing
        if not wait and not write.done():
            return False
        self._writing = None
        try:
            write.result()
        except OSError as exc:
            self._save_failed(start, exc)
            return False
        self._saved_version = version
        self._saved_ns = start
        self.counters.checkpoints_saved += 1
        if self._save_failures:
            log.info("checkpoints are saved again (step %d, after %d failed attempts)",
                     version, self._save_failures)
            self._save_failures, self._retry_ns = 0, 0
        return True

    def _save_failed(self, start: int, exc: Exception) -> None:
        """Count the failure and back off; log only when saving starts failing."""
        self.counters.checkpoint_failures += 1
        self._save_failures += 1
        backoff = min(CHECKPOINT_BACKOFF_FIRST_NS << min(self._save_failures - 1, 16),
                      CHECKPOINT_BACKOFF_MAX_NS)
        self._retry_ns = time.monotonic_ns() + backoff
        if self._save_failures == 1:
            log.error("checkpoint of %s failed: %s. Retrying in %.0f s, then less and less often"
                      " (at most every %.0f s); learning goes on in memory meanwhile",
                      self.version, exc, backoff / 1e9, CHECKPOINT_BACKOFF_MAX_NS / 1e9)
        else:
            log.debug("checkpoint of %s failed again (%d in a row): %s; next try in %.0f s",
                      self.version, self._save_failures, exc, backoff / 1e9)

    # ---------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        """The keys online learning adds to ``status``."""
        c, links = self.counters, self.links
        out: dict[str, Any] = {
            "labels_received": c.labels_received,
            "labels_accepted": c.labels_accepted,
            "labels_rejected": dict(c.labels_rejected),
            "labels_handshakes": links.handshakes if links else 0,
            "labels_handshake_failed": dict(links.handshakes_failed) if links else {},
            "labels_reconnects": (sum(sum(r.values()) for r in links.reconnects.values())
                                  if links else 0),
            "online_steps_deferred": c.steps_deferred,
            "checkpoints_saved": c.checkpoints_saved,
            "checkpoints_deferred": c.checkpoints_deferred,
            "checkpoint_failures": c.checkpoint_failures,
            "checkpoint_failing": self._save_failures,
            "online_errors": c.errors,
            "checkpoint_version": self._saved_version,
            "online_step_ms_expected": self._step_timing.expected_ns() / 1e6,
            "checkpoint_ms_expected": self._save_timing.expected_ns() / 1e6,
        }
        out.update(self.learner.counters())
        return out
