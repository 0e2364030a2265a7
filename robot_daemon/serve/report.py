"""What the daemon reports about itself: its counters, the samples of a status period,
their share of the ``status`` map (:func:`counts`) and the one-line summary of it.

The map's other keys come from the parts that own them (sequence tracking, liveness,
reconnects, online learning): :meth:`robot_daemon.serve.daemon.Daemon.status` joins them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from robot_daemon.serve import liveness
from robot_daemon.serve.stats import Histogram, PerSource, Window

#: Samples kept per status period for each percentile.
WINDOW: Final = 65_536
#: Sources whose latency ``status`` reports on its own (``src_latency_ms``), and the
#: samples kept of each in a period (a 50 Hz sensor sends 50 a second): 256 KiB at most.
SRC_WINDOWS: Final = 16
SRC_WINDOW: Final = 2048
#: Bucket edges, in ms, of the status's tick processing histogram (``tick_ms_counts``).
TICK_MS_EDGES: Final = (0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 7, 10, 15, 20, 30, 50, 100)
#: Bucket edges, in ms, of the frame-to-pred latency histogram (``latency_ms_counts``): a
#: frame waits up to one 20 ms tick, so the buckets are finest there.
LATENCY_MS_EDGES: Final = (1, 2, 5, 10, 15, 20, 25, 30, 40, 50, 75, 100, 250, 500, 1000)


@dataclass
class Counters:
    """Cumulative counters since start (the ``status`` message's integers)."""

    frames_in: int = 0
    frames_accepted: int = 0
    frames_rejected: Counter[str] = field(default_factory=Counter)
    frames_dropped: int = 0
    ticks: int = 0
    ticks_late: int = 0
    ticks_late_os: int = 0  # of ticks_late: the OS, not our work, held the loop up
    ticks_missed: int = 0
    ticks_early: int = 0  # ticks whose forward pass began before the deadline (serve.early)
    ticks_caught_up: int = 0  # of those: a catch-up pass took the frames since
    early_recomputed: int = 0  # of those: the weights changed in between, computed again
    preds: int = 0
    reloads: int = 0
    reload_failures: int = 0
    tick_errors: int = 0


@dataclass
class Windows:
    """Samples of the current status period, for its percentiles (all in ns but batch)."""

    batch: Window = field(default_factory=lambda: Window(WINDOW))
    latency_ns: Window = field(default_factory=lambda: Window(WINDOW))
    tick_ns: Window = field(default_factory=lambda: Window(WINDOW))
    wake_late_ns: Window = field(default_factory=lambda: Window(WINDOW))
    #: Per source (at most SRC_WINDOWS of them): frame-to-pred latency of the period.
    latency_by_src: PerSource = field(
        default_factory=lambda: PerSource(SRC_WINDOW, SRC_WINDOWS))
    #: Tick processing and frame-to-pred latency in ms since the start: never cleared.
    tick_ms: Histogram = field(default_factory=lambda: Histogram(TICK_MS_EDGES))
    latency_ms: Histogram = field(default_factory=lambda: Histogram(LATENCY_MS_EDGES))

    def clear(self) -> None:
        for window in (self.batch, self.latency_ns, self.tick_ns, self.wake_late_ns):
            window.clear()
        self.latency_by_src.clear()


def counts(c: Counters, w: Windows) -> dict[str, Any]:
    """The counters' and the period's keys of the ``status`` map (ms from ns)."""
    ms = 1e-6
    return {
        "frames_in": c.frames_in,
        "frames_accepted": c.frames_accepted,
        "frames_rejected": dict(c.frames_rejected),
        "frames_dropped": c.frames_dropped,
        "ticks": c.ticks,
        "ticks_late": c.ticks_late,
        "ticks_late_os": c.ticks_late_os,
        "ticks_missed": c.ticks_missed,
        "ticks_early": c.ticks_early,
        "ticks_caught_up": c.ticks_caught_up,
        "early_recomputed": c.early_recomputed,
        "preds": c.preds,
        "batch_p50": round(w.batch.percentile(50)),
        "batch_p99": round(w.batch.percentile(99)),
        "latency_ms_p50": w.latency_ns.percentile(50) * ms,
        "latency_ms_p99": w.latency_ns.percentile(99) * ms,
        "src_latency_ms": w.latency_by_src.percentiles((50, 99), ms),
        "tick_ms_p50": w.tick_ns.percentile(50) * ms,
        "tick_ms_p99": w.tick_ns.percentile(99) * ms,
        "tick_ms_max": w.tick_ns.max() * ms,
        "tick_ms_edges": list(TICK_MS_EDGES),
        "tick_ms_counts": list(w.tick_ms.counts),
        "tick_ms_sum": w.tick_ms.sum,
        "latency_ms_edges": list(LATENCY_MS_EDGES),
        "latency_ms_counts": list(w.latency_ms.counts),
        "latency_ms_sum": w.latency_ms.sum,
        "wake_late_ms_p50": w.wake_late_ns.percentile(50) * ms,
        "wake_late_ms_p99": w.wake_late_ns.percentile(99) * ms,
        "wake_late_ms_max": w.wake_late_ns.max() * ms,
        "reloads": c.reloads,
        "reload_failures": c.reload_failures,
        "tick_errors": c.tick_errors,
    }


def summary(status: dict[str, Any]) -> str:
    """The one-line log summary of a ``status`` map; the health first, so that
    ``systemctl status`` shows it however narrow the terminal."""
    rejected = sum(status["frames_rejected"].values())
    return (
        f"{liveness.summary(status)};"
        f" frames in {status['frames_in']} ok {status['frames_accepted']} rejected {rejected}"
        f" dropped {status['frames_dropped']} lost {status['frames_lost']};"
        f" ticks {status['ticks']} late {status['ticks_late']}"
        f" (os {status['ticks_late_os']}) missed {status['ticks_missed']};"
        f" batch p50 {status['batch_p50']} p99 {status['batch_p99']};"
        f" tick p99 {status['tick_ms_p99']:.2f} ms;"
        f" latency p50 {status['latency_ms_p50']:.1f} p99 {status['latency_ms_p99']:.1f} ms;"
        f" model {status['model_version']}"
    )
