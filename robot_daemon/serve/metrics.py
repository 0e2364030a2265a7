"""Prometheus metrics: what ``status`` holds, on an HTTP endpoint a fleet can scrape.

``robot-daemon run --metrics [ADDRESS:]PORT`` serves them (off by default; a bare port
binds loopback only). The daemon hands every ``status`` map it publishes to
:meth:`MetricsServer.update`; a scrape turns the newest one into metric families
(:class:`StatusCollector`), so the serving loop pays one attribute assignment per status
period and nothing per scrape. The server runs in ``prometheus-client``'s own thread.

Names follow Prometheus conventions: ``_total`` counters, base units (seconds), and
labels for what varies (``result``, ``reason``, ``cause``, ``state``, ``source``). The
tick-processing and latency histograms are the daemon's cumulative ones, so rates over
any span are exact to a bucket edge. ``prometheus-client`` is the optional ``metrics``
extra: nothing imports this module unless ``--metrics`` is given.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

from robot_daemon.errors import ConfigError
from robot_daemon.serve.config import metrics_address

INSTALL_HINT: Final = (
    "--metrics needs the prometheus-client package: pip install 'robot-daemon[metrics]'"
)
HEALTH_STATES: Final = ("ok", "degraded", "blind")
_PREFIX: Final = "robot_daemon"

try:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector
except ModuleNotFoundError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ConfigError(INSTALL_HINT) from exc


class StatusCollector(Collector):
    """Metric families from the newest ``status`` map; nothing before the first."""

    def __init__(self) -> None:
        self.status: Mapping[str, Any] | None = None

    def collect(self) -> Iterator[Metric]:
        status = self.status  # one read: the daemon may swap it while we collect
        if status is None:
            return
        yield from _frames(status)
        yield from _ticks(status)
        yield from _histograms(status)
        yield from _gauges(status)
        yield from _online(status)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{_PREFIX}_{name}", doc, value=value)


def _frames(status: Mapping[str, Any]) -> Iterator[Metric]:
    frames = CounterMetricFamily(f"{_PREFIX}_frames", "Frames received, by what became of them",
                                 labels=["result", "reason"])
    frames.add_metric(["accepted", ""], status.get("frames_accepted", 0))
    for reason, count in sorted(dict(status.get("frames_rejected", {})).items()):
        frames.add_metric(["rejected", str(reason)], count)
    frames.add_metric(["dropped", ""], status.get("frames_dropped", 0))
    frames.add_metric(["lost", ""], status.get("frames_lost", 0))
    yield frames
    yield _counter("frames_received", "Messages on the frame topic", status.get("frames_in", 0))
    yield _counter("publisher_resets", "Sequence jumps taken as a publisher restart",
                   status.get("frames_seq_resets", 0))
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
    labels = CounterMetricFamily(f"{_PREFIX}_labels", "Labelled frames, by what became of them",
                                 labels=["result", "reason"])
    labels.add_metric(["accepted", ""], status.get("labels_accepted", 0))
    for reason, count in sorted(dict(status.get("labels_rejected", {})).items()):
        labels.add_metric(["rejected", str(reason)], count)
    yield labels
    for key, name, doc in (
        ("online_steps", "online_steps", "Online SGD steps taken"),
        ("online_rollbacks", "online_rollbacks", "Online steps rolled back by a guard"),
        ("checkpoints_saved", "checkpoints_saved", "Checkpoints written"),
        ("checkpoint_failures", "checkpoint_failures", "Checkpoint saves that failed"),
    ):
        value = status.get(key)
        if isinstance(value, int | float):
            yield _counter(name, doc, value)


class MetricsServer:
    """The HTTP endpoint: started by :meth:`start`, fed by :meth:`update`, stopped by
    :meth:`close` (a context manager)."""

    def __init__(self, address: str) -> None:
        self.host, self.port = metrics_address(address)
        self.collector = StatusCollector()
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self.collector)
        self._server: Any = None

    def start(self) -> MetricsServer:
        try:
            self._server, _ = start_http_server(self.port, self.host, registry=self._registry)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from None
        self.port = self._server.server_port  # the real one when 0 was asked for
        return self

    def update(self, status: Mapping[str, Any]) -> None:
        """The newest ``status`` map; scrapes from now on report it."""
        self.collector.status = status

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
