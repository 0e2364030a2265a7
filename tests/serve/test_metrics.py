"""Prometheus metrics from the daemon's status: names, labels, histograms, the endpoint."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from robot_daemon import wire
from robot_daemon.errors import ConfigError
from robot_daemon.serve.config import metrics_address
from robot_daemon.serve.metrics import MetricsServer

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
    return _scrape_port(server.port)


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
    assert metrics_address(text) == expected


@pytest.mark.parametrize("text", ["robot:9108", "9108x", "127.0.0.1:70000", ""])
def test_bad_metrics_addresses_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="metrics address"):
        metrics_address(text)


def test_a_port_in_use_is_a_clear_error() -> None:
    with MetricsServer("127.0.0.1:0") as first, pytest.raises(ConfigError, match="cannot serve"):
        MetricsServer(f"127.0.0.1:{first.port}").start()


def test_scrape_a_real_daemon_while_frames_flow(workdir: Path) -> None:
    frames_ep, pred_ep = f"ipc://{workdir}/frames", f"ipc://{workdir}/pred"
    log = workdir / "daemon.log"
    root = Path(__file__).resolve().parents[2]
    with log.open("wb") as err:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "robot_daemon", "run", "--model",
             str(root / "models" / "default.npz"), "--frames", frames_ep, "--pred", pred_ep,
             "--status-interval", "0.2", "--metrics", "0"],
            stderr=err, cwd=root)
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    try:
        pub.bind(frames_ep)
        port = _logged_port(log)
        time.sleep(0.5)  # the daemon's SUB has joined
        x = np.zeros(16, np.float32)
        for seq in range(200):
            pub.send_multipart([wire.TOPIC_FRAME, wire.encode_frame(seq, seq * 0.02, x)])
            time.sleep(0.002)
        deadline = time.monotonic() + 10
        while True:
            m = _scrape_port(port)
            accepted = m.get("robot_daemon_frames_total", {}).get(
                (("reason", ""), ("result", "accepted")))
            if accepted == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert accepted == 200
        assert m["robot_daemon_latency_seconds_count"][()] == 200
        assert m["robot_daemon_tick_seconds_count"][()] >= 1
        assert sum(m["robot_daemon_health"].values()) == 1
    finally:
        pub.close(linger=0)
        ctx.term()
        daemon.terminate()
        daemon.wait(timeout=10)


def _logged_port(log: Path) -> int:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = re.search(r"Prometheus metrics on http://127\.0\.0\.1:(\d+)/metrics",
                          log.read_text(errors="replace"))
        if found:
            return int(found.group(1))
        time.sleep(0.05)
    raise AssertionError(f"no metrics endpoint logged:\n{log.read_text(errors='replace')}")


def _scrape_port(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples
