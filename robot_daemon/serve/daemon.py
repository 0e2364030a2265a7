"""``robot-daemon run``: fixed-rate streaming inference over ZeroMQ, under systemd.

The :class:`Daemon` runs one thread around one :class:`zmq.Poller`: ticks fall on a
drift-free schedule, the frames are drained and decoded between them, each tick sends one
``pred`` with every pending frame's probabilities and every status interval a ``status``.
Online learning, reloads on SIGHUP and the liveness and memory checks run between ticks,
so a tick always serves one model with one set of weights; SIGTERM and SIGINT finish the
current tick, save a last checkpoint and return 0 or 130.

Design: docs/architecture.md, "The serving loop".
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import zmq

from robot_daemon import wire
from robot_daemon.config import DaemonConfig, describe
from robot_daemon.learn.session import OnlineSession, resume
from robot_daemon.ratelimit import REJECT_LOG_PERIOD_NS, RateLimiter
from robot_daemon.serve import beside, early, liveness, memory, report, signals, sockets, stats
from robot_daemon.serve.batch import Batch, PendingFrames, encode_answers
from robot_daemon.serve.beside import Beside
from robot_daemon.serve.intake import Arrivals, FrameIntake
from robot_daemon.serve.memory import MemoryBound
from robot_daemon.serve.notify import Notifier
from robot_daemon.serve.phase import PhaseLock
from robot_daemon.serve.reload import Reloader, ServedModel, load_model, too_slow
from robot_daemon.serve.report import Counters, Windows
from robot_daemon.serve.sequence import SeqTracker
from robot_daemon.serve.signals import Signals
from robot_daemon.serve.swap import Swaps
from robot_daemon.zmq_io import monitor, receive

if TYPE_CHECKING:
    from robot_daemon.model import Model
    from robot_daemon.serve.exporter_child import ExporterChild

log = logging.getLogger("robot_daemon")

#: The environment to start the daemon in, as deploy/robot-daemon.service sets it: a tick's
#: batch is too small for BLAS threads to pay, and they would compete for the cores the
#: sensor publishers need.
SERVING_ENV: Final = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                      "MKL_NUM_THREADS": "1"}
#: The nice value deploy/robot-daemon.service starts the daemon at (``Nice=``): on a robot's
#: busy cores the OS then wakes it at its deadlines ahead of best-effort work. The
#: benchmarks run it so (docs/deploy.md, "Priority").
SERVING_NICE: Final = -10
#: A tick that starts more than this fraction of the interval after its deadline is late
#: (2 ms at 20 ms ticks): scheduling noise on a busy robot is not lateness.
LATE_FRACTION: Final = 0.1
#: After a drain the frames socket rests for interval / DRAIN_GAP (5 ms at 20 ms ticks):
#: each wake-up costs 0.1-0.2 ms of CPU cold, whatever it drains. Measured at 1,000
#: frames/s, paired: 2.5 ms rests took 129 ms of CPU per 1,000 frames, 5 ms rests 117.
DRAIN_GAP: Final = 4
#: The shadow and capture wait this long after a tick, so its pred leaves first (docs).
BESIDE_AFTER_NS: Final = 1_000_000


class Daemon:
    """The serving loop; :meth:`run` until SIGTERM/SIGINT. See the module docstring."""

    def __init__(self, config: DaemonConfig, notifier: Notifier | None = None) -> None:
        self.config = config
        self.notifier = notifier if notifier is not None else Notifier({})
        self.metrics: ExporterChild | None = None  # the metrics exporter process, if any
        self.served = load_model(config.model)
        shadow = (None if config.shadow is None
                  else load_model(config.shadow, "shadow model file"))
        # After the loads: a bad model file's one line of error comes first and alone.
        log.info("settings: %s", describe(config))
        slow = too_slow(self.served, config.max_batch, config.interval_ns)
        if slow is not None:  # nothing else to serve: a slow model sees, refusing is blind
            log.warning("%s; serving it all the same: there is no other model", slow)
        self.online: OnlineSession | None = None
        if config.labels is not None and config.capture is not None and not config.online:
            # The label channel for the capture only: a captured frame's label is kept.
            self.online = OnlineSession(config, self.served.model, self.served.version, 0,
                                        learn=False)
        if config.online:
            learned, steps = resume(config, self.served.model, self.served.version)
            self.served = ServedModel(learned, self.served.version, self.served.path)
            self.online = OnlineSession(config, learned, self.served.version, steps)
        # After each pred: a candidate model (run --shadow), the capture (run --capture).
        self.beside = (Beside(config, self.served.model, self.served.version, self.online,
                              shadow) if Beside.wanted(config) else None)
        self._labels: zmq.Socket[bytes] | None = None  # the label socket while running
        self._frames: list[FrameIntake] = []  # read the frame sockets, in turn
        self._watches = monitor.Watches()  # connections libzmq may give up on
        self._frame_watches: list[monitor.ConnectionWatch] = []  # one per frames endpoint
        self._memory = MemoryBound()  # what libzmq holds of messages still arriving
        self.counters = Counters()
        self.windows = Windows()
        self.seqs = SeqTracker()
        self._pending = PendingFrames(config.max_batch, self.served.model.d)
        # The passes before each tick (serve.early); none ahead with online learning.
        self.passes = early.Passes(self._pending, self.counters, config.interval_ns,
                                   config.max_batch, self._serving, ahead=not config.online)
        self._early_tick = 0  # the last tick an early pass was considered for
        self._catch_up_tick = 0  # the last tick a catch-up pass was considered for
        self._reject_log = RateLimiter(REJECT_LOG_PERIOD_NS)
        # SIGHUP: the model file loaded off the serving path, swapped in between ticks.
        self._swaps = Swaps(
            Reloader(config.model, self.served.model.d, self.served.model.c,
                     config.max_batch, config.interval_ns),
            self.notifier, self.counters, self._memory, self.beside, self.online)
        self._start_ns = time.monotonic_ns()
        self.liveness = liveness.Liveness(config.frames, config.stale_after_ns, self._start_ns)
        self._change_log = liveness.ChangeLog()  # liveness lines, at a bounded rate
        self._status_pace = liveness.StatusPace()  # and the statuses they send at once
        # Every frames socket's frames on their way into the ring (serve.intake).
        self._arrivals = Arrivals(self._pending, self.counters, self.seqs, self.liveness,
                                  self._reject)
        self._next_drain_ns = 0  # the frames socket is watched again from then on
        self._woke_ns = 0  # when the last poll or sleep returned (monotonic)
        self._ticked_ns = 0  # when the last tick's drain ended: later frames are the next's
        self._woke_cpu_ns = 0  # and this thread's CPU time then
        self._next_summary_ns = 0  # the next status is logged from then on (the first is)
        # Where the tick grid falls against the sensors' frames (tick_phase = "auto").
        self.phase = PhaseLock(config.interval_ns, config.tick_phase == "auto")

    @property
    def version(self) -> str:
        """The version of the weights serving now (``pred``'s and ``status``'s)."""
        return self.online.version if self.online is not None else self.served.version

    def _serving(self) -> tuple[Model, str]:
        """The model serving now and its weights' version (the passes before a tick)."""
        return self.served.model, self.version

    # ---------------------------------------------------------------- the loop

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; return the exit code (0, or 130 after SIGINT).

        Raises:
            RobotDaemonError: an endpoint cannot be bound or connected.
        """
        cfg = self.config
        with (
            zmq.Context() as ctx,
            contextlib.ExitStack() as stack,
        ):
            subs = [stack.enter_context(ctx.socket(zmq.SUB)) for _ in cfg.frames]
            pub = stack.enter_context(ctx.socket(zmq.PUB))
            sigs = stack.enter_context(signals.caught())
            watches = [stack.enter_context(monitor.watch(
                sub, [endpoint], "frames publisher", monitor.FRAMES_RECONNECT_DELAY_NS))
                for sub, endpoint in zip(subs, cfg.frames, strict=True)]
            stack.callback(self._swaps.reloader.close)
            if self.beside is not None:
                stack.callback(self.beside.close)
            stack.callback(self._memory.close)
            self._frame_watches = watches
            sockets.open_sockets(cfg, subs, pub)
            if cfg.metrics is not None:  # not waited for: serving first; its module then only
                from robot_daemon.serve.exporter_child import ExporterChild

                self.metrics = stack.enter_context(
                    ExporterChild(cfg.pred, cfg.metrics, cfg.allow_remote_bind))
            poller = zmq.Poller()
            for sub in subs:
                poller.register(sub, zmq.POLLIN)
            poller.register(sigs.fd, zmq.POLLIN)
            for watch in watches:
                self._watches.add(watch, poller)
            if self.online is not None:
                self._labels = stack.enter_context(self.online.open(ctx))
                poller.register(self._labels, zmq.POLLIN)
                if self.online.links is not None:
                    self._watches.add(self.online.links, poller)
                log.info("labels from %s: %s", cfg.labels, "kept with the captured frames"
                         if not cfg.online else "online learning; checkpoints in "
                         f"{cfg.checkpoint_dir or 'nowhere (learning is lost at exit)'}")
            elif cfg.labels is not None:
                log.warning("labels %s ignored: start with --online to learn from them, or"
                            " --capture to keep them with the captured frames", cfg.labels)
            log.info("serving model %s (d=%d, c=%d) from %s; frames from %s; pred on %s",
                     self.version, self.served.model.d, self.served.model.c,
                     self.served.path, ", ".join(cfg.frames), cfg.pred)
            # Everything allocated so far (modules, the model) lives as long as the process:
            # moved out of the collector's sight, a full collection no longer walks it and
            # stops taking milliseconds in the middle of a tick.
            gc.collect()
            gc.freeze()
            self._memory.rebase()
            self.notifier.ready(f"serving model {self.version}")
            tick = self._loop(subs, pub, poller, sigs)
            # "Finish the current tick": the frames already received are answered, those
            # libzmq holds for the next drain included (the loop rests between drains).
            now = time.monotonic_ns()
            self._drain(subs, now + cfg.interval_ns // 4)
            self._tick(pub, tick, now, now)
            if self.online is not None:
                self.online.checkpoint()  # what was learned since the last save
                self.online.close()
            self._publish_status(pub, final=True)
            self.notifier.stopping()
            log.info("stopped after %d ticks", self.counters.ticks)
            return sigs.exit_code

    def _loop(
        self, subs: list[zmq.Socket[bytes]], pub: zmq.Socket[bytes], poller: zmq.Poller,
        sigs: Signals,
    ) -> int:
        """Tick until a stop signal; return the number of the tick that would be next."""
        interval = self.config.interval_ns
        start = time.monotonic_ns()
        tick = 1  # tick k is due at start + k * interval
        # Half an interval off the tick schedule: a status (about 1 ms of percentiles and
        # logging) never competes with a tick for the same instant.
        next_status = start + self.config.status_interval_ns + interval // 2
        watchdog_period = (self.notifier.watchdog_ns or 0) // 2
        next_watchdog = start + watchdog_period if watchdog_period else None
        while not sigs.stop:
            deadline = start + tick * interval
            early_at = self.passes.early_at(deadline)
            now = time.monotonic_ns()
            on_time = now >= deadline
            if on_time or self.phase.ready(now, deadline, self._ticked_ns,
                                           self.liveness.heard_since):
                held_by_os = on_time and self._count_lateness(deadline, now)
                self._drain(subs, now + interval // 4)  # what arrived since the last drain
                self._ticked_ns = time.monotonic_ns()  # later frames are the next tick's
                # Timed from the deadline where our own work (a catch-up pass) ran past it;
                # from the wake-up where the OS woke the loop after it; from now where the
                # OS took the CPU away after the wake-up (wake_late_ms shows that), or where
                # the tick goes out before its deadline (the locked sources' frames came).
                self._tick(pub, tick, deadline, now if held_by_os or not on_time
                           else max(deadline, self._woke_ns))
                self._check_liveness(pub)
                self._bound_memory()
                # Skip, and count, the deadlines this tick overran: never a burst of
                # catch-up ticks.
                start -= self.phase.shift()  # 0 unless tick_phase = "auto" moves the grid
                following = (time.monotonic_ns() - start) // interval + 1
                self.counters.ticks_missed += max(0, following - tick - 1)
                tick = max(tick + 1, following)
                continue
            if now >= early_at and self._early_tick != tick:
                self._early_tick = tick
                self._drain(subs, self.passes.early_latest(deadline))
                self.passes.run_early(deadline)
                continue
            catch_up_at = deadline - self.passes.catch_up_lead
            catching_up = self.passes.catching_up()
            if catching_up:
                if self._catch_up_tick != tick and now >= catch_up_at:
                    self._catch_up_tick = tick
                    self._drain(subs, deadline - self.passes.catch_up_lead // 2)
                    self.passes.run_catch_up(deadline)
                    continue
                if self._catch_up_tick == tick:
                    _spin_until(deadline)  # at most the catch-up lead: see serve.early
                    self._woke()
                    continue
            beside_at = self._ticked_ns + BESIDE_AFTER_NS  # the shadow, the capture
            if self.beside is not None and self.beside.waiting and now >= beside_at:
                self.beside.run(pub, self.served.model, self.version,
                                self._next_work_ns(deadline))
            self._watches.service(now)  # reconnect what libzmq gave up on, when due
            if self.metrics is not None:
                self.metrics.service(now)  # restart an exporter that ended, when due
            self._reload_between_ticks(sigs)
            if self._labels is not None:
                # Not after the early pass: a step would change the weights it used.
                self._learn(self._labels, early_at)
            if now >= next_status:
                self._publish_status(pub)
                next_status += self.config.status_interval_ns * max(
                    1, (now - next_status) // self.config.status_interval_ns + 1
                )
            if next_watchdog is not None and now >= next_watchdog:
                self.notifier.watchdog()
                next_watchdog = now + watchdog_period
            next_pass = (early_at if self._early_tick != tick
                         else catch_up_at if catching_up else deadline)
            wake = min(next_pass, next_status, next_watchdog or deadline, beside_at
                       if self.beside is not None and self.beside.waiting else deadline)
            self._wait(subs, poller, sigs, wake, deadline, self._early_tick == tick)
        return tick

    def _next_work_ns(self, deadline_ns: int) -> int:
        """When the work for the tick due at ``deadline_ns`` may begin: its early pass, or
        half an interval after the last tick where a locked tick may go out that early."""
        ready_at = self._ticked_ns + self.config.interval_ns // 2
        return min(self.passes.early_at(deadline_ns), ready_at if self.phase.locked
                   else deadline_ns)

    def _wait(
        self, subs: list[zmq.Socket[bytes]], poller: zmq.Poller, sigs: Signals, wake_ns: int,
        deadline_ns: int, early_done: bool,
    ) -> None:
        """Handle input until ``wake_ns`` or the first batch of events, whichever is first.

        Polls whole milliseconds, then sleeps the sub-millisecond rest: a poll timeout is
        rounded to milliseconds by libzmq, so polling alone wakes up to 1 ms late.
        ``early_done``: the tick's early pass was considered; only a signal wakes the loop
        before the deadline (or the catch-up pass).
        """
        now = time.monotonic_ns()
        # Coalesce: after a drain, leave the frames socket alone for DRAIN_GAP of the
        # interval, so that a stream costs a few wake-ups per tick instead of one per frame
        # (measured: at 1,000 frames/s, one per frame took 18-20 % of a core). Frames wait
        # in ZeroMQ's queue meanwhile; the early pass and the tick drain it before serving.
        watch = poller
        if self._labels is not None and self.online is not None:
            # A full batch that waits for room to step leaves the rest queued: not watched,
            # else a readable socket nobody reads would spin the poll until the tick.
            poller.register(self._labels, zmq.POLLIN if self.online.wants_labels() else 0)
        # The last rest ends where the early pass is due; after it, the frames wait for the
        # catch-up pass and the tick: no wake-up for each of them.
        rest_until = (deadline_ns if early_done else min(
            self._next_drain_ns, self.passes.early_at(deadline_ns)))
        if self.phase.locked:
            # Where the locked sensors' frames come, each is read as it comes (no rest
            # after another source's frame): stamped late, it would be answered late
            # and pull the grid later at every decision.
            opens = deadline_ns - self.phase.watch_ns
            rest_until = min(rest_until, opens) if now < opens else now
        if now < rest_until:
            watch, wake_ns = sigs.poller, min(wake_ns, rest_until)
        remaining = wake_ns - now
        timeout_ms = remaining // 1_000_000
        if timeout_ms >= 1:
            events = dict(watch.poll(timeout_ms))
            self._woke()
            self._watches.on_events(events, self._woke_ns)
            sigs.woke(events)
            if any(sub in events for sub in subs):
                self._drain(subs, wake_ns)
                self._next_drain_ns = time.monotonic_ns() + self.config.interval_ns // DRAIN_GAP
                self.passes.run_ahead(deadline_ns)
            if self._labels is not None and self._labels in events and self.online is not None:
                self.online.drain(self._labels, wake_ns)
        elif remaining > 0:
            if watch is poller:  # a short sleep: decode what waits now, not after it
                self._drain(subs, wake_ns)
                remaining = wake_ns - time.monotonic_ns()
            if remaining > 0:
                time.sleep(remaining / 1e9)
                self._woke()

    def _woke(self) -> None:
        self._woke_ns = time.monotonic_ns()
        self._woke_cpu_ns = time.thread_time_ns()

    def _learn(self, labels: zmq.Socket[bytes], deadline_ns: int) -> None:
        """Between ticks: stage the waiting labels, then step or save where it fits."""
        if self.online is None:
            return
        try:
            self.online.drain(labels, deadline_ns)
            self.online.between_ticks(deadline_ns)
        except Exception:  # a learning bug must not stop the robot seeing: count, log, go on
            self.online.counters.errors += 1
            log.exception("online learning failed between ticks")

    # ---------------------------------------------------------------- frames

    def _drain(self, subs: list[zmq.Socket[bytes]], until_ns: int) -> None:
        """Receive every waiting frame message, the sockets in turn
        (:func:`robot_daemon.zmq_io.receive.drain_each`, :mod:`robot_daemon.serve.intake`)."""
        if len(self._frames) != len(subs):  # one per socket, kept for its life
            self._frames = [
                FrameIntake(sub, i, self._arrivals) for i, sub in enumerate(subs)]
        receive.drain_each(self._frames, until_ns)

    def _reject(self, reason: str, message: str, now_ns: int) -> None:
        self.counters.frames_rejected[reason] += 1
        suppressed = self._reject_log.allow(reason, now_ns)
        if suppressed is not None:
            more = f" ({suppressed} more since the last report)" if suppressed else ""
            log.warning("rejected frame: %s%s", message, more)

    # ---------------------------------------------------------------- ticks

    def _check_liveness(self, pub: zmq.Socket[bytes]) -> None:
        """After a tick: log what changed in the sources' liveness and publish it at once,
        both at a bounded rate (:class:`robot_daemon.serve.liveness.ChangeLog`,
        :class:`~robot_daemon.serve.liveness.StatusPace`)."""
        now = time.monotonic_ns()
        change = self.liveness.check(now)
        if change is None:
            if self._status_pace.due(now):  # a change that waited for its gap
                self._publish_status(pub)
            return
        for level, line in self._change_log.lines(change, now):
            log.log(level, "%s", line)
        if self.beside is not None and (change.stale or change.back):
            self.beside.health_changed()  # the seconds before it, into the capture
        if self._status_pace.changed(change, now):
            self._publish_status(pub)

    def _bound_memory(self) -> None:
        """After a tick: above the memory bound, drop the connections of the frames
        endpoints that went silent (:mod:`robot_daemon.serve.memory`)."""
        if self._swaps.reloader.busy():  # a load holds up to three models for a moment
            return
        now = time.monotonic_ns()
        rss = self._memory.over(now)
        if rss is None:
            return
        why = (f"the daemon's memory is {rss / 2**20:.0f} MiB, over its bound of"
               f" {self._memory.bound / 2**20:.0f} MiB, and no valid frame came from here"
               f" for {memory.SILENT_NS / 1e6:.0f} ms: a message of many parts is still"
               " arriving")
        for i in self.liveness.silent_endpoints(now, memory.SILENT_NS):
            self._frame_watches[i].drop(self.config.frames[i], why)
        online = self.online
        if (online is not None and online.links is not None and self.config.labels
                and now - online.last_label_ns > memory.SILENT_NS):
            online.links.drop(self.config.labels, why.replace("valid frame", "label"))
        self._memory.dropped(now)  # if that does not bring it down, it becomes the base

    def _count_lateness(self, deadline_ns: int, start_ns: int) -> bool:
        """Measure how late the tick due at ``deadline_ns`` starts, and who made it late;
        whether the OS did."""
        late = start_ns - deadline_ns
        self.windows.wake_late_ns.add(late)
        threshold = LATE_FRACTION * self.config.interval_ns
        if late <= threshold:
            return False
        self.counters.ticks_late += 1
        if self._woke_ns - deadline_ns > threshold:  # blocked in poll or sleep until then
            self.counters.ticks_late_os += 1
            return True
        # Had our work since the wake-up run without a break, would it have crossed the
        # threshold? If not, the OS took the CPU away in between.
        worked = time.thread_time_ns() - self._woke_cpu_ns
        held = worked <= deadline_ns + threshold - self._woke_ns
        self.counters.ticks_late_os += held
        return held

    def _tick(self, pub: zmq.Socket[bytes], tick: int, deadline_ns: int, start_ns: int) -> None:
        """Serve the pending frames (and the early pass's): one ``pred`` message."""
        self.counters.ticks += 1
        first = self.passes.take()
        if not self._pending and first is None:
            return
        wall = time.time()  # the pred's t: when the tick started serving
        late = self._pending.take()
        drop = early.dropped(first, late, self.config.max_batch)
        self.counters.frames_dropped += drop
        try:
            self._serve(pub, tick, wall, first, late, drop)
        except Exception:  # a bug must not stop the robot seeing: count, log, go on
            self.counters.tick_errors += 1
            log.exception("tick %d failed; its %d frame(s) are not answered", tick,
                          len(late) + (len(first.batch) - drop if first else 0))
        done = time.monotonic_ns()
        self.windows.tick_ns.add(done - start_ns)
        self.windows.tick_ms.add((done - start_ns) / 1e6)
        arrival = (late.arrival_ns if first is None
                   else np.concatenate([first.batch.arrival_ns[drop:], late.arrival_ns]))
        self.windows.batch.add(len(arrival))
        src = late.src if first is None else [*first.batch.src[drop:], *late.src]
        rows = stats.rows_by_source(src)  # once: the phase lock's and the latency's
        self.phase.observe(deadline_ns, arrival, src, rows)
        latency_ns = np.subtract(done, arrival, dtype=np.float64)
        self.windows.latency_ns.extend(latency_ns)
        self.windows.latency_by_src.add(src, latency_ns, rows)
        self.windows.latency_ms.add_many(latency_ns * 1e-6)

    def _serve(
        self, pub: zmq.Socket[bytes], tick: int, wall: float, first: early.Early | None,
        late: Batch, drop: int,
    ) -> None:
        """One ``pred`` for the early frames ``first`` but the ``drop`` oldest, and the
        ``late`` ones: their rows packed ahead if they can be, else the general way
        (:meth:`_encode`)."""
        model, version = self.served.model, self.version
        if first is not None:
            self.counters.ticks_early += 1
            # A pass that raised is computed again too, but counted in tick_errors.
            self.counters.early_recomputed += early.weights_changed(first, model, version)
        payload = early.fast_pred(first, late, drop, model, version, tick, wall)
        frames: Batch | None = None
        if payload is None:
            frames = early.join(first, late, drop)
            P = early.probabilities(first, frames, drop, model, version)
            payload, left_out = encode_answers(tick, wall, frames, P, self.version)
            for _ in range(left_out):
                self._reject("non_finite_output", "the model gave NaN for a frame",
                             time.monotonic_ns())
            if payload is None:
                return
        # Two sends: send_multipart's generic loop took twice as long (3 us against 1.5).
        pub.send(wire.TOPIC_PRED, zmq.SNDMORE)
        pub.send(payload)
        self.counters.preds += 1
        if self.beside is not None:  # after the pred: the planner never waits for this
            self.beside.served(tick, beside.answers(
                first, late, drop, model, version, None if frames is None else (frames, P)))

    # ---------------------------------------------------------------- reload, status

    def _reload_between_ticks(self, sigs: Signals) -> None:
        """Start a reload on SIGHUP; serve what it loaded from the next tick on."""
        requested, sigs.reload = sigs.reload, False
        self.served = self._swaps.between_ticks(requested, self.served, lambda: self.version)

    def status(self) -> dict[str, Any]:
        """The ``status`` message's map; percentiles cover the period since the last one."""
        status: dict[str, Any] = {
            "t": time.time(),
            "uptime_s": (time.monotonic_ns() - self._start_ns) / 1e9,
            "model_version": self.version,
            "pid": os.getpid(),  # the exporter's process_* series, when it is not our child
            **report.counts(self.counters, self.windows),
            "frames_lost": self.seqs.lost,
            "frames_seq_resets": self.seqs.resets,
            "frames_out_of_seq": self.seqs.out_of_seq,
            "sources": len(self.seqs),
            "reconnects": self._watches.status(),
            **self.phase.status(),
        }
        status.update(self.liveness.status(time.monotonic_ns()))
        if self.online is not None:
            status.update(self.online.status())
        if self.beside is not None:
            status.update(self.beside.status())
        return status

    def _publish_status(self, pub: zmq.Socket[bytes], *, final: bool = False) -> None:
        status = self.status()
        self.windows.clear()
        pub.send_multipart([wire.TOPIC_STATUS, wire.encode_status(status)])
        line = report.summary(status)
        now = time.monotonic_ns()
        if final or now >= self._next_summary_ns:
            # A journal's pace, not the socket's: 1,440 lines a day, not 86,400. What
            # changes (a sensor lost, a reload) is logged when it happens, elsewhere.
            log.info("%s", line)
            self._next_summary_ns = now + round(self.config.log_summary_s * 1e9)
        self.notifier.status(line)


def _spin_until(deadline_ns: int) -> None:
    """Wait for ``deadline_ns`` without sleeping: after any sleep the tick's first NumPy
    calls ran 1.5-2 times slower (the CPU's caches and predictors went to other work)."""
    while time.monotonic_ns() < deadline_ns:
        pass


def run(config: DaemonConfig, notifier: Notifier | None = None) -> int:
    """Load the model, serve until SIGTERM/SIGINT, return the exit code."""
    if notifier is not None:
        return Daemon(config, notifier).run()
    with Notifier() as from_environment:
        return Daemon(config, from_environment).run()

