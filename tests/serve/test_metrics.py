"""Prometheus metrics: the families from ``status``, the exporter process and its bounded
HTTP server, and ``run --metrics`` starting, restarting and stopping it as a child."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import yaml
import zmq
from prometheus_client.parser import text_string_to_metric_families

from robot_daemon import config, wire
from robot_daemon.config import metrics_address
from robot_daemon.errors import ConfigError
from robot_daemon.serve.exporter import Exporter, Limits, ScrapeServer
from robot_daemon.serve.exporter_child import CHECK_PERIOD_NS, ExporterChild, status_endpoint
from robot_daemon.serve.metrics import FRAME_REJECT_REASONS, LABEL_REJECT_REASONS

from .test_daemon import DEFAULT_MODEL, ROOT, Harness

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]

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
    "checkpoints_saved": 4, "batch_p50": 3, "batch_p99": 9, "tick_errors": 0,
    "tick_offset_ms": 7.5, "tick_moves": 2, "ticks_before_deadline": 550,
    "src_latency_ms": {"lidar": [0.5, 1.5], "(no src)": [10.0, 19.0], "bad": "no pair"},
    "shadow": {"model": "candidate-12ab", "frames_compared": 90, "frames_skipped": 10,
               "disagree": {"pedestrian": 0.1, "dog": 0.0}, "mean_abs_diff": {"dog": 0.02},
               "labelled": 5, "f1_serving": {"dog": 0.5, "macro": 0.5},
               "f1_shadow": {"dog": 1.0, "macro": "not a number"}},
    "capture_frames": 12, "capture_dropped": {"rate": 3, "queue": 0, "error": 1},
    "capture_bytes": 4096, "capture_bags": 2, "capture_errors": 1,
    "capture_by_reason": {"uncertain": 10, "health": 2, "odd": "x"},
}
S = 1_000_000_000  # one second in ns
RULES = ROOT / "deploy" / "robot-daemon.rules.yml"
RULE_TESTS = Path(__file__).parent / "promtool"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool (Prometheus's) is not on the PATH: apt install prometheus")


def _status(status: dict[str, Any]) -> list[bytes]:
    return [wire.TOPIC_STATUS, wire.encode_status(status)]


def _parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


# ---- the families ---------------------------------------------------------------------------


def test_a_scrape_reports_the_newest_status_with_prometheus_names() -> None:
    exporter = Exporter(0)
    assert "robot_daemon_frames_received_total" not in _parse(exporter.render(0).decode())
    exporter.update(_status({**STATUS, "ticks": 1}), 1)
    exporter.update(_status(STATUS), 2)
    m = _parse(exporter.render(3).decode())
    assert m["robot_daemon_frames_received_total"][()] == 110
    assert m["robot_daemon_frames_accepted_total"][()] == 100
    assert m["robot_daemon_frames_rejected_total"][(("reason", "wrong_d"),)] == 7
    assert m["robot_daemon_frames_dropped_total"][(("reason", "batch_full"),)] == 2
    assert m["robot_daemon_frames_lost_total"][()] == 5
    assert m["robot_daemon_ticks_total"][()] == 600  # the newest
    assert m["robot_daemon_ticks_late_total"] == {(("cause", "os"),): 3,
                                                   (("cause", "overrun"),): 1}
    ticks = m["robot_daemon_tick_seconds_bucket"]
    assert ticks[(("le", "0.0005"),)] == 500
    assert ticks[(("le", "0.005"),)] == 599
    assert ticks[(("le", "+Inf"),)] == 600
    assert m["robot_daemon_tick_seconds_sum"][()] == pytest.approx(0.25)
    assert m["robot_daemon_latency_seconds_count"][()] == 100
    assert m["robot_daemon_tick_batch_frames"] == {(("percentile", "50"),): 3,
                                                   (("percentile", "99"),): 9}
    assert m["robot_daemon_tick_offset_seconds"][()] == pytest.approx(0.0075)
    assert m["robot_daemon_tick_moves_total"][()] == 2
    assert m["robot_daemon_ticks_before_deadline_total"][()] == 550
    assert m["robot_daemon_shadow_info"] == {(("version", "candidate-12ab"),): 1}
    assert m["robot_daemon_shadow_frames_total"] == {(("outcome", "compared"),): 90,
                                                      (("outcome", "skipped"),): 10}
    assert m["robot_daemon_shadow_disagree_ratio"] == {(("class", "dog"),): 0.0,
                                                        (("class", "pedestrian"),): 0.1}
    assert m["robot_daemon_shadow_abs_diff_mean"] == {(("class", "dog"),): 0.02}
    assert m["robot_daemon_shadow_f1"] == {  # what is not a number is left out
        (("class", "dog"), ("model", "serving")): 0.5,
        (("class", "macro"), ("model", "serving")): 0.5,
        (("class", "dog"), ("model", "shadow")): 1.0}
    assert m["robot_daemon_capture_frames_total"][()] == 12
    assert m["robot_daemon_capture_dropped_total"] == {
        (("cause", "error"),): 1, (("cause", "queue"),): 0, (("cause", "rate"),): 3}
    assert m["robot_daemon_capture_reasons_total"] == {(("trigger", "health"),): 2,
                                                        (("trigger", "uncertain"),): 10}
    assert (m["robot_daemon_capture_bytes"][()], m["robot_daemon_capture_bags"][()]) == (
        4096, 2)
    assert m["robot_daemon_capture_errors_total"][()] == 1
    assert m["robot_daemon_src_latency_seconds"] == pytest.approx({  # "bad" left out
        (("percentile", "50"), ("src", "lidar")): 0.0005,
        (("percentile", "99"), ("src", "lidar")): 0.0015,
        (("percentile", "50"), ("src", "(no src)")): 0.010,
        (("percentile", "99"), ("src", "(no src)")): 0.019})
    assert m["robot_daemon_health"] == {(("state", "ok"),): 0, (("state", "degraded"),): 1,
                                        (("state", "blind"),): 0}
    assert m["robot_daemon_sources_stale"] == {(("kind", "endpoint"),): 1, (("kind", "src"),): 0}
    assert m["robot_daemon_model_info"] == {(("version", "default-0b5b"),): 1}
    assert m["robot_daemon_reconnects_total"][
        (("endpoint", "tcp://127.0.0.1:5556"), ("reason", "protocol_error"))] == 2
    assert m["robot_daemon_labels_received_total"][()] == 30
    assert m["robot_daemon_labels_accepted_total"][()] == 28
    assert m["robot_daemon_labels_rejected_total"][(("reason", "outlier"),)] == 2
    assert m["robot_daemon_exporter_statuses_total"][(("result", "accepted"),)] == 2
    assert "robot_daemon_exporter_process_open_fds" in m  # the exporter's own process


def test_each_frame_series_counts_one_thing_and_every_known_reason_is_there_from_the_start(
) -> None:
    exporter = Exporter(0)
    exporter.update(_status({**STATUS, "frames_rejected": {}, "labels_rejected": {}}), 1)
    m = _parse(exporter.render(1).decode())
    rejected = m["robot_daemon_frames_rejected_total"]
    assert {dict(labels)["reason"] for labels in rejected} == {
        "bad_envelope", "bad_msgpack", "oversized", "not_a_map", "missing_key", "unknown_key",
        "duplicate_key", "wrong_type", "wrong_d", "non_finite", "negative_seq",
        "out_of_range", "bad_src"}  # what the frame decoder and the intake can refuse
    assert set(rejected.values()) == {0}
    assert set(FRAME_REJECT_REASONS) <= set(LABEL_REJECT_REASONS)  # a label also has y
    assert {dict(labels)["reason"] for labels in m["robot_daemon_labels_rejected_total"]} == {
        *FRAME_REJECT_REASONS, "wrong_c", "bad_label_value"}
    assert m["robot_daemon_frames_dropped_total"] == {(("reason", "batch_full"),): 2,
                                                      (("reason", "non_finite_output"),): 0}
    for name, series in m.items():
        assert all(value for labels in series for _, value in labels), name  # no reason=""

    # A frame the model answered with NaN was accepted first: a drop, not a rejection.
    exporter.update(_status({**STATUS, "frames_rejected": {"wrong_d": 10,
                                                           "non_finite_output": 4}}), 2)
    m = _parse(exporter.render(2).decode())
    rejected = m["robot_daemon_frames_rejected_total"]
    assert (m["robot_daemon_frames_accepted_total"][()] + sum(rejected.values())
            == m["robot_daemon_frames_received_total"][()] == 110)
    assert m["robot_daemon_frames_dropped_total"] == {(("reason", "batch_full"),): 2,
                                                      (("reason", "non_finite_output"),): 4}


def test_the_daemons_process_series_are_its_pids() -> None:
    """``process_*`` describe the daemon: the exporter's parent, else the pid its status
    names; the exporter's own are ``robot_daemon_exporter_process_*``."""
    me = os.getpid()  # the daemon, in the first case; the exporter, in every case
    as_child = _parse(Exporter(0, daemon_pid=me).render(0).decode())
    assert as_child["process_start_time_seconds"][()] == pytest.approx(_started(me), abs=0.02)
    assert as_child["robot_daemon_exporter_process_start_time_seconds"][()] == pytest.approx(
        _started(me), abs=0.02)

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    service = Exporter(0)  # a service of its own: the pid comes with the status
    served = []
    for status in ({}, STATUS, {**STATUS, "pid": me}, {**STATUS, "pid": True},
                   {**STATUS, "pid": gone.pid}):
        if status:
            service.update(_status(status), 1)
        served.append(_parse(service.render(1).decode()).get("process_start_time_seconds"))
    assert served[0] is None  # no status yet
    assert served[1] is None  # a status without a pid
    assert served[2] is not None
    assert served[2][()] == pytest.approx(_started(me), abs=0.02)
    assert served[3:] == [None, None]  # not a pid; a process that is gone
def test_status_age_grows_while_the_daemon_is_silent_and_bad_statuses_do_not_reset_it() -> None:
    exporter = Exporter(10 * S)

    def age(now_ns: int) -> float:
        return _parse(exporter.render(now_ns).decode())["robot_daemon_status_age_seconds"][()]

    assert age(13 * S) == pytest.approx(3.0)  # none yet: since the exporter started
    exporter.update(_status(STATUS), 20 * S)
    assert age(20 * S + S // 2) == pytest.approx(0.5)
    for bad in ([wire.TOPIC_STATUS, b"\xc1"],  # not msgpack
                [wire.TOPIC_STATUS, msgpack.packb([1, 2])],  # not a map
                [wire.TOPIC_STATUS, wire.encode_status({**STATUS, "frames_rejected": [1]})],
                [wire.TOPIC_STATUS],  # one part
                [wire.TOPIC_STATUS, b"x", b"y"]):
        exporter.update(bad, 21 * S)
    m = _parse(exporter.render(26 * S).decode())
    assert m["robot_daemon_status_age_seconds"][()] == pytest.approx(6.0)
    assert m["robot_daemon_exporter_statuses_total"] == {(("result", "accepted"),): 1,
                                                         (("result", "rejected"),): 5}
    assert m["robot_daemon_ticks_total"][()] == 600  # the last good status, served on


# ---- the rules in deploy/ ------------------------------------------------------------------


def _full_scrape() -> Samples:
    exporter = Exporter(0, daemon_pid=os.getpid())
    exporter.update(_status(STATUS), 1)
    return _parse(exporter.render(1).decode())


@needs_promtool
def test_the_shipped_rules_pass_their_promtool_tests() -> None:
    """Synthetic series through the rules (tests/serve/promtool/): each alert fires on
    what it is about, and not before its ``for``, nor on a robot within bounds."""
    assert PROMTOOL is not None
    cases = sorted(str(path) for path in RULE_TESTS.glob("*.yml"))
    assert cases
    for args in (["check", "rules", str(RULES)], ["test", "rules", *cases]):
        done = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120,
                              check=False)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"


@needs_promtool
def test_a_scrape_passes_promtool_check_metrics() -> None:
    assert PROMTOOL is not None
    exporter = Exporter(0, daemon_pid=os.getpid())
    exporter.update(_status(STATUS), 1)
    done = subprocess.run([PROMTOOL, "check", "metrics"], input=exporter.render(1),
                          capture_output=True, timeout=60, check=False)
    assert (done.returncode, (done.stdout + done.stderr).decode()) == (0, "")


def test_the_rules_select_series_the_exporter_serves() -> None:
    """Where promtool is absent: every robot_daemon_* selector of the rules names a series
    of a scrape, with label values it has (``le="0.001"`` is a bucket edge), and every
    recorded series an alert reads is recorded."""
    m = _full_scrape()
    rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"]
             for rule in group["rules"]]
    recorded = {rule["record"] for rule in rules if "record" in rule}
    selectors = [found for rule in rules for found in re.findall(
        r"(?<![\w:])(robot_daemon_\w+)(?:\{([^}]*)\})?", rule["expr"])]
    assert len(selectors) >= 6
    for name, matchers in selectors:
        assert name in m, name
        for label in re.findall(r'(\w+)="([^"]*)"', matchers):
            assert any(label in labels for labels in m[name]), f"{name}{{{matchers}}}"
    read = {name for rule in rules for name in re.findall(r"\w+:[\w:]+", rule["expr"])}
    assert read
    assert read <= recorded


def test_the_docs_show_the_shipped_rules() -> None:
    """docs/deploy.md shows deploy/robot-daemon.rules.yml as it is, not a copy that drifts."""
    docs = (ROOT / "docs" / "deploy.md").read_text()
    assert RULES.read_text() in re.findall(r"```yaml\n(.*?)```", docs, re.DOTALL)


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


@pytest.mark.parametrize(("pred", "endpoint"), [
    ("tcp://*:5557", "tcp://127.0.0.1:5557"),
    ("tcp://0.0.0.0:5557", "tcp://127.0.0.1:5557"),
    ("tcp://[::]:5557", "tcp://[::1]:5557"),
    ("tcp://127.0.0.1:5557", "tcp://127.0.0.1:5557"),
    ("ipc:///run/robot-daemon/pred", "ipc:///run/robot-daemon/pred"),
])
def test_the_exporter_reaches_a_wildcard_pred_on_loopback(pred: str, endpoint: str) -> None:
    assert status_endpoint(pred) == endpoint


def test_metrics_with_an_inproc_pred_is_refused() -> None:
    with pytest.raises(ConfigError, match="pred endpoint another process can reach"):
        config.load(None, {"metrics": "9108", "pred": "inproc://pred"})


@pytest.mark.parametrize(("pred", "why"), [
    ("ipc://*", "not 'ipc://\\*'"),
    ("tcp://lo:5557", "an interface or a host name"),
])
def test_metrics_with_a_pred_the_exporter_cannot_reach_is_refused(pred: str, why: str) -> None:
    """The exporter connected to the literal string and never got a status: its age
    alert fired while the daemon was fine (attack review)."""
    with pytest.raises(ConfigError, match=why):
        config.load(None, {"metrics": "9108", "pred": pred, "allow_remote_bind": True})


# ---- the HTTP server, in this process --------------------------------------------------------


async def _read_all(reader: asyncio.StreamReader, timeout_s: float = 5.0) -> bytes:
    with contextlib.suppress(ConnectionResetError):
        return await asyncio.wait_for(reader.read(), timeout_s)
    return b""


async def _served(limits: Limits) -> tuple[ScrapeServer, Exporter]:
    exporter = Exporter(time.monotonic_ns())
    server = ScrapeServer(exporter, limits)
    await server.start("127.0.0.1", 0)
    return server, exporter


def test_connections_over_the_limit_are_closed_at_once_and_counted() -> None:
    async def scenario() -> tuple[bytes, bytes, dict[str, int]]:
        server, exporter = await _served(Limits(connections=2))
        held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
        await asyncio.sleep(0.1)  # both accepted and waiting for their request
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /metrics HTTP/1.1\r\n\r\n")
        refused = await _read_all(reader)
        writer.close()
        held[0][1].write(b"GET /metrics HTTP/1.1\r\n\r\n")  # a held one is served
        answered = await _read_all(held[0][0])
        for _, w in held:
            w.close()
        await server.close()
        return refused, answered, dict(exporter.counts.dropped)

    refused, answered, dropped = asyncio.run(scenario())
    assert refused == b""  # closed unanswered
    assert answered.startswith(b"HTTP/1.1 200 OK\r\n")
    assert dropped == {"limit": 1}


def test_connections_over_the_rate_wait_to_be_accepted() -> None:
    async def scenario() -> tuple[list[bytes], bytes | None]:
        server, _ = await _served(Limits(accept_rate=0.01, accept_burst=2))
        answers = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /metrics HTTP/1.1\r\n\r\n")
            answers.append(await _read_all(reader))
            writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /metrics HTTP/1.1\r\n\r\n")
        third: bytes | None = None
        with contextlib.suppress(TimeoutError):
            third = await asyncio.wait_for(reader.read(), 1.0)
        writer.close()
        await server.close()
        return answers, third

    answers, third = asyncio.run(scenario())
    assert [a[:15] for a in answers] == [b"HTTP/1.1 200 OK"] * 2
    assert third is None  # neither answered nor refused: in the backlog, waiting its turn


def test_a_half_open_connection_is_closed_at_its_deadline() -> None:
    async def scenario() -> tuple[bytes, dict[str, int], bytes]:
        server, exporter = await _served(Limits(request_timeout_s=0.2))
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /metr")  # and never the rest
        cut = await _read_all(reader)
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /metrics HTTP/1.1\r\n\r\n")
        after = await _read_all(reader)
        writer.close()
        await server.close()
        return cut, dict(exporter.counts.dropped), after

    cut, dropped, after = asyncio.run(scenario())
    assert cut == b""
    assert dropped == {"timeout": 1}
    assert after.startswith(b"HTTP/1.1 200 OK\r\n")  # the slot was given back


# ---- the exporter process ----------------------------------------------------------------------


class ExporterProcess:
    """``robot-daemon metrics`` on a free port, fed by the test's own status publisher."""

    def __init__(self, workdir: Path) -> None:
        self.log = workdir / "exporter.log"
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        endpoint = f"ipc://{workdir}/pred"
        self.pub.bind(endpoint)
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "robot_daemon", "metrics", "--pred", endpoint,
                 "--listen", "0"], stderr=err, cwd=ROOT)
        self.port = _logged_port(self.log)

    def publish_until_served(self, status: dict[str, Any]) -> Samples:
        """Publish ``status`` until a scrape shows it (the SUB joins a little late)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            self.pub.send_multipart(_status(status))
            m = _scrape(self.port)
            if m.get("robot_daemon_ticks_total", {}).get(()) == status["ticks"]:
                return m
            time.sleep(0.05)
        raise AssertionError(f"status never served; log:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def close(self) -> int:
        """SIGTERM; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.pub.close()
            self.ctx.term()


@pytest.fixture
def exporter_process(workdir: Path) -> Iterator[ExporterProcess]:
    process = ExporterProcess(workdir)
    try:
        yield process
    finally:
        if not process.pub.closed:
            process.close()


def _request(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(raw)
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


def test_the_exporter_refuses_what_is_not_a_scrape_without_a_traceback(
    exporter_process: ExporterProcess,
) -> None:
    port = exporter_process.port
    exporter_process.publish_until_served(STATUS)
    long_line = b"GET /metrics HTTP/1.1\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n"
    many = b"GET /metrics HTTP/1.1\r\n" + b"X-Header: 1\r\n" * 101 + b"\r\n"
    assert _request(port, long_line).startswith(b"HTTP/1.1 431 ")
    assert _request(port, many).startswith(b"HTTP/1.1 431 ")
    for raw in (long_line, many):  # and clients that leave without reading the answer
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(raw)
    assert _request(port, b"GET /nothing HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    assert _request(port, b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405 ")
    assert _request(port, b"\x1b[2J\x00 nonsense\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    head = _request(port, b"HEAD /metrics HTTP/1.0\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert head.endswith(b"\r\n\r\n")  # no body
    m = _scrape_until(port, lambda m: m["robot_daemon_exporter_requests_total"].get(
        (("code", "431"),)) == 4)
    assert m["robot_daemon_exporter_requests_total"][(("code", "400"),)] == 1
    assert exporter_process.close() == 0  # SIGTERM
    log = exporter_process.log_text()
    assert "Traceback" not in log
    assert "answered 431" in log
    assert "\x1b" not in log  # what the client sent, control characters escaped


def test_the_exporter_holds_no_more_than_its_connection_limit(
    exporter_process: ExporterProcess,
) -> None:
    port = exporter_process.port
    limit = Limits().connections
    held = _connections(port, limit)
    try:
        assert len(held) == limit  # none over the limit yet: all held
        time.sleep(0.3)  # all accepted
        # Closed at once, not answered: reset before or after the request is sent,
        # or even before connect() returned on a busy machine.
        with (contextlib.suppress(ConnectionResetError, BrokenPipeError),
              socket.create_connection(("127.0.0.1", port), timeout=5) as extra):
            extra.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            assert extra.recv(100) == b""
    finally:
        for s in held:
            s.close()
    m = _scrape_until(port, lambda m: True)  # once a slot is free again
    assert m["robot_daemon_exporter_connections_dropped_total"][(("reason", "limit"),)] >= 1
    assert "Traceback" not in exporter_process.log_text()


def test_the_exporter_says_why_it_cannot_listen(workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _metrics_command("--pred", f"ipc://{workdir}/pred", "--listen", str(port))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"robot-daemon metrics: error: cannot serve metrics on 127.0.0.1:{port}: "
        "Address already in use"]
    done = _metrics_command("--listen", "0.0.0.0:9108")
    assert done.returncode == 2
    assert "would serve on the network" in done.stderr
    done = _metrics_command("--pred", "inproc://pred", "--listen", "0")
    assert (done.returncode, done.stderr.count("\n")) == (2, 1)


def _metrics_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "robot_daemon", "metrics", *args],
                          capture_output=True, text=True, timeout=30, cwd=ROOT, check=False)


# ---- run --metrics: the exporter as the daemon's child -----------------------------------------


def _child(workdir: Path, code: str) -> ExporterChild:
    """An ExporterChild whose child runs ``code`` instead of the exporter."""
    child = ExporterChild(f"ipc://{workdir}/pred", "0")
    child.command = [sys.executable, "-c", code]
    return child


def test_a_child_that_keeps_ending_is_restarted_ever_later(
    workdir: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    child = _child(workdir, "raise SystemExit(3)")
    now = 0
    child.start(now)
    delays = []
    for _ in range(7):
        assert child.proc is not None
        child.proc.wait()
        now += CHECK_PERIOD_NS
        child.service(now)  # it ended: reaped, a start scheduled
        assert child.proc is None
        ended = now
        while child.proc is None:  # the loop's passes until the next start
            now += S // 4
            child.service(now)
        delays.append(now - ended)
    child.close()
    assert delays == [S, 2 * S, 4 * S, 8 * S, 16 * S, 30 * S, 30 * S]
    assert child.restarts == 7
    ended = [r.getMessage() for r in caplog.records if "exited with status 3" in r.getMessage()]
    assert ended[0].startswith("the metrics exporter (pid ")
    assert "restart 1 in 1 s" in ended[0]
    assert len(ended) < 7  # at most one line per 10 s


def test_metrics_without_prometheus_client_is_a_clear_error_at_start(
    workdir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    child = _child(workdir, "pass")
    with pytest.raises(ConfigError, match=r"pip install 'robot-daemon\[metrics\]'"):
        child.start(0)
    assert child.proc is None  # nothing started


def test_closing_kills_a_child_that_ignores_sigterm(workdir: Path) -> None:
    ready = workdir / "ready"
    child = _child(workdir, "import pathlib, signal, sys, time\n"
                   "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                   f"pathlib.Path({str(ready)!r}).touch()\ntime.sleep(60)")
    child.start(0)
    proc = child.proc
    assert proc is not None
    while not ready.exists():
        time.sleep(0.01)
    child.close()
    assert proc.returncode == -signal.SIGKILL  # reaped: no zombie left


@pytest.fixture
def daemon(workdir: Path) -> Iterator[Harness]:
    h = Harness(workdir, DEFAULT_MODEL, args=("--metrics", "0"))
    try:
        h.start()
        yield h
        if h.proc is not None and h.proc.poll() is None:
            h.stop()  # SIGTERM: the daemon stops its exporter
    finally:
        h.close()


def test_scrape_a_real_daemon_while_frames_flow(daemon: Harness) -> None:
    port = _logged_port(daemon.log)
    x = np.zeros(16, np.float32)
    for seq in range(200):
        daemon.send(seq, x)
        time.sleep(0.002)
    # The 200th frame is accepted a tick before it is answered: a status between them
    # has the one and not yet the other.
    m = _scrape_until(port, lambda m: m.get("robot_daemon_frames_accepted_total", {}).get(
        ()) == 200 and m.get("robot_daemon_latency_seconds_count", {}).get(()) == 200)
    assert m["robot_daemon_frames_received_total"][()] == 200
    assert set(m["robot_daemon_frames_rejected_total"].values()) == {0}
    assert m["robot_daemon_latency_seconds_count"][()] == 200
    assert daemon.proc is not None  # process_* are the daemon's, not its exporter's
    assert m["process_start_time_seconds"][()] == pytest.approx(
        _started(daemon.proc.pid), abs=0.02)
    assert m["robot_daemon_exporter_process_start_time_seconds"][()] == pytest.approx(
        _started(_child_of(daemon.proc.pid)), abs=0.02)
    assert m["process_open_fds"][()] >= 1
    assert m["robot_daemon_tick_seconds_count"][()] >= 1
    assert sum(m["robot_daemon_health"].values()) == 1
    assert m["robot_daemon_status_age_seconds"][()] < 5


def test_a_killed_exporter_is_restarted_and_none_outlives_the_daemon(daemon: Harness) -> None:
    assert daemon.proc is not None
    first = _logged_port(daemon.log)
    child = _child_of(daemon.proc.pid)
    assert _stat(child)[16] == "19"  # its nice value: the daemon first
    os.kill(child, signal.SIGKILL)
    second = _logged_port(daemon.log, after=first)
    _scrape_until(second, lambda m: "robot_daemon_ticks_total" in m)
    restarted = _child_of(daemon.proc.pid)
    assert restarted != child
    assert "was killed by SIGKILL; restart 1" in daemon.log_text()
    code, _ = daemon.stop()
    assert code == 0
    assert not Path(f"/proc/{restarted}").exists()  # stopped and reaped, not a zombie
    assert "Traceback" not in daemon.log_text()


def test_a_flood_of_http_clients_takes_no_file_descriptor_of_the_daemon(
    daemon: Harness,
) -> None:
    assert daemon.proc is not None
    port = _logged_port(daemon.log)
    _scrape_until(port, lambda m: "robot_daemon_ticks_total" in m)
    exporter = _child_of(daemon.proc.pid)
    fds_before = len(os.listdir(f"/proc/{daemon.proc.pid}/fd"))
    exporter_fds_before = len(os.listdir(f"/proc/{exporter}/fd"))
    flood = _connections(port, 300)
    try:
        time.sleep(0.5)  # the exporter accepted (or refused) what it takes
        fds_during = len(os.listdir(f"/proc/{daemon.proc.pid}/fd"))
        threads = len(os.listdir(f"/proc/{daemon.proc.pid}/task"))
        exporter_fds_during = len(os.listdir(f"/proc/{exporter}/fd"))
        x = np.zeros(16, np.float32)
        for seq in range(100):
            daemon.send(seq, x)
        assert sorted(s for p in daemon.preds(100) for s in p.seq.tolist()) == list(range(100))
    finally:
        for s in flood:
            s.close()
    assert fds_during == fds_before
    assert threads < 20  # no thread per connection (the old server's 300 and more)
    # The connections served, and the one being reset at that moment (accepted first).
    assert exporter_fds_during <= exporter_fds_before + Limits().connections + 1
    m = _scrape_until(port, lambda m: True)
    assert m["robot_daemon_exporter_connections_dropped_total"][(("reason", "limit"),)] >= 1


def test_the_exporter_of_a_killed_daemon_stops(daemon: Harness) -> None:
    assert daemon.proc is not None
    child = _child_of(daemon.proc.pid)
    daemon.proc.kill()
    daemon.proc.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and _state(child) != "Z":
        assert time.monotonic() < deadline, "the exporter outlived its daemon"
        time.sleep(0.1)
    assert "the daemon (pid" in daemon.log_text()


def test_a_port_in_use_does_not_stop_the_daemon_from_serving(workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        h = Harness(workdir, DEFAULT_MODEL, args=("--metrics", str(port)))
        try:
            h.start()  # serving: a status came
            x = np.zeros(16, np.float32)
            h.send(0, x)
            assert h.preds(1)[0].seq.tolist() == [0]
            _wait_logged(h.log, "Address already in use")
            taken.close()
            m = _scrape_until(port, lambda m: "robot_daemon_ticks_total" in m)
            assert m["robot_daemon_frames_accepted_total"][()] == 1
        finally:
            h.close()
    log = h.log_text()
    assert log.count("Address already in use") == 1  # said once, then retried quietly
    assert "serving after" in log
    assert "Traceback" not in log


# ---- helpers ---------------------------------------------------------------------------------


def _connections(port: int, n: int) -> list[socket.socket]:
    """Open ``n`` connections to ``port`` and keep those the exporter did not reset.

    One over the exporter's limit is reset as soon as it is accepted, which on a busy
    machine can be before ``connect()`` has returned: that is a refusal, not a failure.
    """
    opened: list[socket.socket] = []
    try:
        for _ in range(n):
            with contextlib.suppress(ConnectionResetError):
                opened.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    except BaseException:
        for s in opened:
            s.close()
        raise
    return opened


def _logged_port(log: Path, after: int | None = None) -> int:
    """The port of the newest "Prometheus metrics on" line (one other than ``after``)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        ports = [int(p) for p in re.findall(
            r"Prometheus metrics on http://127\.0\.0\.1:(\d+)/metrics",
            log.read_text(errors="replace"))]
        if ports and ports[-1] != after:
            return ports[-1]
        time.sleep(0.05)
    raise AssertionError(f"no metrics endpoint logged:\n{log.read_text(errors='replace')}")


def _wait_logged(log: Path, text: str) -> None:
    deadline = time.monotonic() + 15
    while text not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"never logged: {text}"
        time.sleep(0.05)


def _scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return _parse(r.read().decode())


def _scrape_until(port: int, done: Any, timeout_s: float = 15.0) -> Samples:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            m = _scrape(port)
            if done(m):
                return m
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not listening yet, or a slot not free yet on a loaded machine
        if time.monotonic() > deadline:
            raise AssertionError("the scrape never showed what was expected")
        time.sleep(0.1)


def _child_of(pid: int) -> int:
    """The one child process of ``pid`` (Linux: /proc's children list)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if len(children) == 1:
            return int(children[0])
        time.sleep(0.05)
    raise AssertionError(f"process {pid} has no single child")


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state first, nice 17th)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _started(pid: int) -> float:
    """When process ``pid`` started, in Unix seconds: /proc's boot time plus its start
    in clock ticks (proc(5))."""
    boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime "))
    return boot + int(_stat(pid)[19]) / os.sysconf("SC_CLK_TCK")


def _state(pid: int) -> str:
    try:
        return _stat(pid)[0]
    except OSError:
        return "gone"
