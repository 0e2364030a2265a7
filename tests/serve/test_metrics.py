"""Prometheus metrics from the daemon's status: names, labels, histograms, the endpoint."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from robot_daemon.errors import ConfigError
from robot_daemon.serve.metrics import MetricsServer, parse_address

STATUS: dict[str, Any] = {
    "model_version": "default-0b5b", "uptime_s": 12.5,
    "frames_in": 110, "frames_accepted": 100, "frames_rejected": {"wrong_d": 7, "bad_msgpack": 3},
    "frames_dropped": 2, "frames_lost": 5, "frames_seq_resets": 1,
    "ticks": 600, "ticks_late": 4, "ticks_late_os": 3, "ticks_missed": 0, "preds": 90,
    "reloads": 1, "reload_failures": 2,
    "tick_ms_edges": [0.5, 1, 5], "tick_ms_counts": [500, 80, 19, 1], "tick_ms_sum": 250.0,
    "latency_ms_edges": [10, 20], "latency_ms_counts": [40, 55, 5], "latency_ms_sum": 1500.0,
    "health": "degraded", "stale_endpoints": ["tcp://127.0.0.1:5556"],
    "reconnects": {"tcp://127.0.0.1:5556": {"protocol_error": 2}},
    "labels_received": 30, "labels_accepted": 28, "labels_rejected": {"outlier": 2},
    "checkpoints_saved": 4,
}


def _scrape(server: MetricsServer) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
        text = r.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def test_a_scrape_reports_the_newest_status_with_prometheus_names() -> None:
    with MetricsServer("127.0.0.1:0") as server:
        assert _scrape(server) == {}  # nothing before the first status
        server.update(STATUS)
        m = _scrape(server)
    frames = m["robot_daemon_frames_total"]
    assert frames[(("reason", ""), ("result", "accepted"))] == 100
    assert frames[(("reason", "wrong_d"), ("result", "rejected"))] == 7
    assert frames[(("reason", ""), ("result", "lost"))] == 5
    assert m["robot_daemon_ticks_late_total"] == {(("cause", "os"),): 3,
                                                   (("cause", "overrun"),): 1}
    ticks = m["robot_daemon_tick_seconds_bucket"]
    assert ticks[(("le", "0.0005"),)] == 500
    assert ticks[(("le", "0.005"),)] == 599
    assert ticks[(("le", "+Inf"),)] == 600
    assert m["robot_daemon_tick_seconds_sum"][()] == pytest.approx(0.25)
    assert m["robot_daemon_latency_seconds_count"][()] == 100
    assert m["robot_daemon_health"] == {(("state", "ok"),): 0, (("state", "degraded"),): 1,
                                        (("state", "blind"),): 0}
    assert m["robot_daemon_sources_stale"] == {(("kind", "endpoint"),): 1, (("kind", "src"),): 0}
    assert m["robot_daemon_model_info"] == {(("version", "default-0b5b"),): 1}
    assert m["robot_daemon_reconnects_total"][
        (("endpoint", "tcp://127.0.0.1:5556"), ("reason", "protocol_error"))] == 2
    assert m["robot_daemon_labels_total"][(("reason", "outlier"), ("result", "rejected"))] == 2


@pytest.mark.parametrize(("text", "expected"), [
    ("9108", ("127.0.0.1", 9108)),  # a bare port is loopback only
    ("0.0.0.0:9108", ("0.0.0.0", 9108)),
    ("[::1]:9108", ("::1", 9108)),
])
def test_metrics_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["robot:9108", "9108x", "127.0.0.1:70000", ""])
def test_bad_metrics_addresses_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="metrics address"):
        parse_address(text)


def test_a_port_in_use_is_a_clear_error() -> None:
    with MetricsServer("127.0.0.1:0") as first, pytest.raises(ConfigError, match="cannot serve"):
        MetricsServer(f"127.0.0.1:{first.port}").start()
