"""Prometheus metrics: the daemon's ``status`` map and the exporter's own, as text.

:class:`StatusCollector` turns the newest ``status`` into metric families and
:class:`Exposition` renders them with prometheus-client, beside the exporter's own
(:class:`ExporterCounts`) and the daemon's and the exporter's process families. Nothing
here runs in the serving process: :mod:`robot_daemon.serve.exporter` serves the text.
prometheus-client is the optional ``metrics`` extra; importing this module without it
raises :class:`~robot_daemon.errors.ConfigError` with the command that installs it.

Design: docs/architecture.md, "Prometheus metrics".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from robot_daemon import wire
from robot_daemon.errors import ConfigError, WireError

INSTALL_HINT: Final = (
    "metrics need the prometheus-client package: pip install 'robot-daemon[metrics]'"
)
HEALTH_STATES: Final = ("ok", "degraded", "blind")
#: The reason the daemon counts in ``frames_rejected`` for an accepted frame whose
#: probabilities came out NaN: served here as a drop, not a rejection.
NON_FINITE_OUTPUT: Final = "non_finite_output"
#: Why a received frame is refused: its envelope, or a reason of the frame decoder (the
#: wire's reasons but those only a label, a pred or an encoder can have).
FRAME_REJECT_REASONS: Final = ("bad_envelope", *(
    r for r in wire.REASONS if r not in {"wrong_c", "wrong_n", "bad_label_value", "reserved_key"}))
#: Why a label is refused: its envelope, or a reason of the label decoder.
LABEL_REJECT_REASONS: Final = ("bad_envelope", *(
    r for r in wire.REASONS if r not in {"wrong_n", "reserved_key"}))
_PREFIX: Final = "robot_daemon"

try:
    from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector
except ModuleNotFoundError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ConfigError(INSTALL_HINT) from exc


@dataclass
class ExporterCounts:
    """What the exporter counts about itself; times in monotonic ns."""

    started_ns: int
    received_ns: int | None = None  # when the newest status arrived
    statuses: Counter[str] = field(default_factory=Counter)  # accepted, rejected
    requests: Counter[int] = field(default_factory=Counter)  # by HTTP status code
    dropped: Counter[str] = field(default_factory=Counter)  # limit, timeout, ...

    def age_s(self, now_ns: int) -> float:
        """Seconds since the newest status arrived (since the start, before the first)."""
        since = self.received_ns if self.received_ns is not None else self.started_ns
        return (now_ns - since) / 1e9


class Exposition:
    """The text of a scrape: the newest status's families, rendered once per status
    (scrapes in between share it), then the exporter's own and the two processes',
    rendered per scrape.

    ``daemon_pid``: the daemon's pid when the exporter is its child; otherwise the
    newest status's ``pid``, if it has one, is the process whose ``process_*`` are served.
    """

    def __init__(self, counts: ExporterCounts, daemon_pid: int | None = None) -> None:
        self._collector = StatusCollector()
        self._status_registry = CollectorRegistry(auto_describe=False)
        self._status_registry.register(self._collector)
        self._own = _ExporterCollector(counts)
        self._parent = daemon_pid
        self._daemon = _DaemonProcess(daemon_pid)
        self._own_registry = CollectorRegistry(auto_describe=False)
        self._own_registry.register(self._own)
        self._own_registry.register(self._daemon)
        ProcessCollector(namespace=f"{_PREFIX}_exporter", registry=self._own_registry)
        self._status_text = b""

    def update(self, status: Mapping[str, Any]) -> None:
        """Serve ``status`` from now on.

        Raises:
            WireError: ``bad_status``, its families cannot be built (a value of the wrong
                type); the previous status is served on.
        """
        previous, self._collector.status = self._collector.status, status
        try:
            self._status_text = generate_latest(self._status_registry)
        except Exception as exc:  # whatever a wrong type raises in the families
            self._collector.status = previous
            raise WireError("bad_status", f"{type(exc).__name__}: {exc}") from None
        if self._parent is None:
            self._daemon.pid = _pid(status)

    def render(self, now_ns: int) -> bytes:
        """The text a scrape at ``now_ns`` returns."""
        self._own.now_ns = now_ns
        return self._status_text + generate_latest(self._own_registry)


def _pid(status: Mapping[str, Any]) -> int | None:
    pid = status.get("pid")
    return pid if type(pid) is int and pid > 0 else None


class _DaemonProcess(Collector):
    """prometheus-client's ``process_*`` families of the process ``pid``, read from
    ``/proc`` at each scrape; none while the pid is unknown or the process is gone. The
    open fds need the daemon's user (``/proc/PID/fd``): an exporter of another user
    serves the others only."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self._process = ProcessCollector(pid=lambda: str(self.pid), registry=None)

    def collect(self) -> Iterator[Metric]:
        if self.pid is not None:
            yield from self._process.collect()


class _ExporterCollector(Collector):
    """The exporter's families: the newest status's age, statuses, requests, drops."""

    def __init__(self, counts: ExporterCounts) -> None:
        self.counts = counts
        self.now_ns = counts.started_ns  # the time the age is reported at

    def collect(self) -> Iterator[Metric]:
        c = self.counts
        yield GaugeMetricFamily(
            f"{_PREFIX}_status_age_seconds",
            "Seconds since the newest status arrived (since the exporter started, before "
            "the first): it grows when the daemon stopped publishing",
            value=c.age_s(self.now_ns))
        yield _labelled("exporter_statuses", "status messages, by what became of them",
                        "result", {"accepted": 0, "rejected": 0, **c.statuses})
        yield _labelled("exporter_requests", "HTTP requests answered, by status code",
                        "code", {str(code): n for code, n in sorted(c.requests.items())})
        yield _labelled("exporter_connections_dropped", "HTTP connections closed unanswered:"
                        " over the limit, or past their deadline", "reason",
                        {"limit": 0, "timeout": 0, **c.dropped})


def _labelled(name: str, doc: str, label: str, counts: Mapping[str, int]) -> Metric:
    family = CounterMetricFamily(f"{_PREFIX}_{name}", doc, labels=[label])
    for value, count in counts.items():
        family.add_metric([value], count)
    return family


class StatusCollector(Collector):
    """Metric families from the newest ``status`` map; nothing before the first."""

    def __init__(self) -> None:
        self.status: Mapping[str, Any] | None = None

    def collect(self) -> Iterator[Metric]:
        status = self.status
        if status is None:
            return
        yield from _frames(status)
        yield from _ticks(status)
        yield from _histograms(status)
        yield from _gauges(status)
        yield from _online(status)
        yield from _shadow(status)
        yield from _capture(status)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{_PREFIX}_{name}", doc, value=value)


def _frames(status: Mapping[str, Any]) -> Iterator[Metric]:
    rejected = {str(reason): count
                for reason, count in sorted(dict(status.get("frames_rejected", {})).items())}
    non_finite = rejected.pop(NON_FINITE_OUTPUT, 0)  # accepted first: not a rejection here
    yield _counter("frames_received", "Messages read from the frame topic: the accepted "
                   "frames and the rejected ones", status.get("frames_in", 0))
    yield _counter("frames_accepted", "Received frames that decoded and validated",
                   status.get("frames_accepted", 0))
    yield _labelled("frames_rejected", "Received frames refused, by reason", "reason",
                    {**dict.fromkeys(FRAME_REJECT_REASONS, 0), **rejected})
    yield _labelled("frames_dropped", "Accepted frames left unanswered, by reason: "
                    "batch_full (a tick's batch was full: the oldest go), non_finite_output "
                    "(the model gave NaN)", "reason",
                    {"batch_full": status.get("frames_dropped", 0), NON_FINITE_OUTPUT: non_finite})
    yield _counter("frames_lost", "Frames a sensor sent that never arrived (gaps in each "
                   "stream's seq): not among the received", status.get("frames_lost", 0))
    yield _counter("publisher_resets", "Sequence jumps taken as a publisher restart",
                   status.get("frames_seq_resets", 0))
    yield _counter("frames_out_of_seq", "Frames whose seq fit no numbering of their stream",
                   status.get("frames_out_of_seq", 0))
    reconnects = status.get("reconnects")
    if isinstance(reconnects, Mapping):
        family = CounterMetricFamily(f"{_PREFIX}_reconnects",
                                     "Endpoints reconnected after a transport fault",
                                     labels=["endpoint", "reason"])
        for endpoint, reasons in sorted(reconnects.items()):
            for reason, count in sorted(dict(reasons).items()):
                family.add_metric([str(endpoint), str(reason)], count)
        yield family


def _ticks(status: Mapping[str, Any]) -> Iterator[Metric]:
    yield _counter("ticks", "Ticks run", status.get("ticks", 0))
    late = CounterMetricFamily(f"{_PREFIX}_ticks_late", "Ticks that started after their deadline",
                               labels=["cause"])
    os_late = status.get("ticks_late_os", 0)
    late.add_metric(["os"], os_late)
    late.add_metric(["overrun"], max(0, status.get("ticks_late", 0) - os_late))
    yield late
    yield _counter("ticks_missed", "Tick deadlines skipped after an overrun",
                   status.get("ticks_missed", 0))
    yield _counter("ticks_early", "Ticks whose forward pass began before the deadline",
                   status.get("ticks_early", 0))
    yield _counter("ticks_caught_up", "Of the early ticks: a catch-up pass took the frames "
                   "since, shortly before the deadline", status.get("ticks_caught_up", 0))
    yield _counter("preds", "pred messages published", status.get("preds", 0))
    yield _counter("reloads", "Model reloads that took effect", status.get("reloads", 0))
    yield _counter("reload_failures", "Model reloads refused", status.get("reload_failures", 0))
    yield _counter("tick_errors", "Ticks that failed with an unexpected error (their frames "
                   "unanswered)", status.get("tick_errors", 0))
    yield from _phase(status)
    if "batch_p50" in status:
        # A percentile label, not a summary's quantile: the daemon sends the period's
        # percentiles without the summary's count and sum.
        batch = GaugeMetricFamily(f"{_PREFIX}_tick_batch_frames", "Frames per tick that had "
                                  "frames, percentiles over the last status period",
                                  labels=["percentile"])
        batch.add_metric(["50"], status["batch_p50"])
        batch.add_metric(["99"], status.get("batch_p99", 0))
        yield batch


def _phase(status: Mapping[str, Any]) -> Iterator[Metric]:
    """Where the tick grid is (tick_phase auto), and each source's latency."""
    yield GaugeMetricFamily(f"{_PREFIX}_tick_offset_seconds", "The tick grid against where "
                            "it started, within the interval", value=float(
                                status.get("tick_offset_ms", 0.0)) / 1000)
    yield _counter("tick_moves", "Moves of the tick grid (tick_phase auto)",
                   status.get("tick_moves", 0))
    yield _counter("ticks_before_deadline", "Ticks served before their deadline, every "
                   "locked source's frame in (tick_phase auto)",
                   status.get("ticks_before_deadline", 0))
    by_src = status.get("src_latency_ms")
    if isinstance(by_src, dict) and by_src:
        latency = GaugeMetricFamily(
            f"{_PREFIX}_src_latency_seconds", "Frame arrival to its pred published, per "
            "src (\"(no src)\": frames without one), percentiles over the last status period",
            labels=["src", "percentile"])
        for src, pcts in sorted(by_src.items(), key=lambda item: str(item[0])):
            if (isinstance(pcts, list) and len(pcts) == 2
                    and all(isinstance(v, int | float) for v in pcts)):
                latency.add_metric([str(src), "50"], pcts[0] / 1000)
                latency.add_metric([str(src), "99"], pcts[1] / 1000)
        yield latency


def _histogram(name: str, doc: str, edges_ms: Sequence[float], counts: Sequence[int],
               sum_ms: float) -> HistogramMetricFamily:
    """A Prometheus histogram (seconds) from per-bucket counts; the last is the overflow."""
    buckets, total = [], 0
    for edge, count in zip(edges_ms, counts, strict=False):
        total += int(count)
        buckets.append((_le(edge / 1000), total))
    total += sum(int(c) for c in counts[len(edges_ms):])
    buckets.append(("+Inf", total))
    return HistogramMetricFamily(f"{_PREFIX}_{name}", doc, buckets=buckets,
                                 sum_value=sum_ms / 1000)


def _le(seconds: float) -> str:
    return f"{seconds:.6g}"


def _histograms(status: Mapping[str, Any]) -> Iterator[Metric]:
    for key, name, doc in (
        ("tick_ms", "tick_seconds", "Processing time of a tick (decode to publish)"),
        ("latency_ms", "latency_seconds", "Frame arrival to its pred published"),
    ):
        edges, counts = status.get(f"{key}_edges"), status.get(f"{key}_counts")
        if isinstance(edges, list) and isinstance(counts, list):
            yield _histogram(name, doc, edges, counts, float(status.get(f"{key}_sum", 0.0)))


def _gauges(status: Mapping[str, Any]) -> Iterator[Metric]:
    info = GaugeMetricFamily(f"{_PREFIX}_model_info", "The model serving predictions",
                             labels=["version"])
    info.add_metric([str(status.get("model_version", ""))], 1)
    yield info
    yield GaugeMetricFamily(f"{_PREFIX}_uptime_seconds", "Seconds since the daemon started",
                            value=status.get("uptime_s", 0.0))
    if "health" in status:
        health = GaugeMetricFamily(f"{_PREFIX}_health",
                                   "1 for the daemon's health state, 0 for the others",
                                   labels=["state"])
        for state in HEALTH_STATES:
            health.add_metric([state], 1.0 if status["health"] == state else 0.0)
        yield health
        stale = GaugeMetricFamily(f"{_PREFIX}_sources_stale",
                                  "Sensor sources silent for longer than stale_after_ms",
                                  labels=["kind"])
        stale.add_metric(["endpoint"], len(status.get("stale_endpoints") or []))
        stale.add_metric(["src"], len(status.get("stale_srcs") or []))
        yield stale


def _online(status: Mapping[str, Any]) -> Iterator[Metric]:
    if "labels_received" not in status:
        return
    rejected = {str(reason): count
                for reason, count in sorted(dict(status.get("labels_rejected", {})).items())}
    yield _counter("labels_received", "Messages read from the label topic: the accepted "
                   "labels and the rejected ones", status["labels_received"])
    yield _counter("labels_accepted", "Received labels that decoded and validated",
                   status.get("labels_accepted", 0))
    yield _labelled("labels_rejected", "Received labels refused, by reason", "reason",
                    {**dict.fromkeys(LABEL_REJECT_REASONS, 0), **rejected})
    for key, name, doc in (
        ("online_steps", "online_steps", "Online SGD steps taken"),
        ("online_rollbacks", "online_rollbacks", "Online steps rolled back by a guard"),
        ("checkpoints_saved", "checkpoints_saved", "Checkpoints written"),
        ("checkpoint_failures", "checkpoint_failures", "Checkpoint saves that failed"),
    ):
        value = status.get(key)
        if isinstance(value, int | float):
            yield _counter(name, doc, value)


def _shadow(status: Mapping[str, Any]) -> Iterator[Metric]:
    """``run --shadow``: the candidate against the serving model, per class."""
    shadow = status.get("shadow")
    if not isinstance(shadow, dict):
        return
    info = GaugeMetricFamily(f"{_PREFIX}_shadow_info", "The shadow model", labels=["version"])
    info.add_metric([str(shadow.get("model", ""))], 1)
    yield info
    frames = CounterMetricFamily(f"{_PREFIX}_shadow_frames", "Frames the shadow answered"
                                 " (compared) or had no time for (skipped)",
                                 labels=["outcome"])
    for outcome in ("compared", "skipped"):
        value = shadow.get(f"frames_{outcome}", 0)
        frames.add_metric([outcome], value if isinstance(value, int | float) else 0)
    yield frames
    for key, name, doc in (
        ("disagree", "shadow_disagree_ratio", "Share of frames whose thresholded decisions "
         "differ between the shadow and the serving model"),
        ("mean_abs_diff", "shadow_abs_diff_mean", "Mean |p_shadow - p_serving|"),
    ):
        yield _per_class(f"{_PREFIX}_{name}", doc, shadow.get(key), [])
    f1 = GaugeMetricFamily(f"{_PREFIX}_shadow_f1", "F1 on the labelled frames (online "
                           "learning), per class and macro", labels=["model", "class"])
    for key, which in (("f1_serving", "serving"), ("f1_shadow", "shadow")):
        _add_per_class(f1, shadow.get(key), [which])
    yield f1


def _capture(status: Mapping[str, Any]) -> Iterator[Metric]:
    """``run --capture``: frames written and not, the bags on disk."""
    if "capture_frames" not in status:
        return
    yield _counter("capture_frames", "Captured frames written into capture bags",
                   status.get("capture_frames", 0))
    for key, name, doc, label in (
        ("capture_dropped", "capture_dropped", "Captured frames not written, by cause",
         "cause"),
        ("capture_by_reason", "capture_reasons", "Captured frames written, per trigger that"
         " picked them", "trigger"),
    ):
        counts = status.get(key)
        if isinstance(counts, dict):
            yield _labelled(name, doc, label, {
                str(k): v for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))
                if isinstance(v, int) and not isinstance(v, bool)})
    yield _counter("capture_errors", "Capture writes that failed (a full disk, ...)",
                   status.get("capture_errors", 0))
    yield GaugeMetricFamily(f"{_PREFIX}_capture_bytes", "Bytes of the capture bags on disk",
                            value=status.get("capture_bytes", 0))
    yield GaugeMetricFamily(f"{_PREFIX}_capture_bags", "Capture bags on disk",
                            value=status.get("capture_bags", 0))


def _per_class(name: str, doc: str, values: object, labels: list[str]) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=["class"])
    _add_per_class(family, values, labels)
    return family


def _add_per_class(family: GaugeMetricFamily, values: object, labels: list[str]) -> None:
    """A sample per class of ``values`` ({class: number}, from the network: anything
    else is left out)."""
    if not isinstance(values, dict):
        return
    for name, value in sorted(values.items(), key=lambda item: str(item[0])):
        if isinstance(value, int | float) and not isinstance(value, bool):
            family.add_metric([*labels, str(name)], value)

