"""Runners, the progress line, and the scheduler addresses that are not one."""

from __future__ import annotations

import io
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from robot_daemon.cli import main
from robot_daemon.errors import ConfigError
from robot_daemon.fleet import cluster
from robot_daemon.fleet.cluster import InProcess, Progress, open_runner

from .conftest import Bags

#: The peers below hang up after this long: long enough that only a bounded connect
#: reports them as not answering, short enough that an unbounded one fails, not hangs.
HANG_UP_AFTER_S = 5.0
#: What an HTTP server (a Dask dashboard, a metrics endpoint) answers to Dask's bytes.
HTTP_400 = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def _square(x: int, plus: int = 0) -> int:
    return x * x + plus


def test_in_process_runs_in_order() -> None:
    runner = InProcess()
    assert list(runner.map_unordered(_square, [1, 2, 3], plus=1)) == [(0, 2), (1, 5), (2, 10)]
    assert list(runner.map_ordered(_square, [3, 4])) == [9, 16]


def test_a_dask_runner_keeps_the_order_where_asked(scheduler: str) -> None:
    # A builtin: the workers cannot import functions of the test modules.
    with open_runner(scheduler=scheduler) as runner:
        assert runner.workers == 2
        assert list(runner.map_ordered(pow, list(range(7)), exp=2)) == [i * i for i in range(7)]
        assert sorted(runner.map_unordered(pow, [5, 6], exp=2)) == [(0, 25), (1, 36)]


def test_a_task_key_names_its_bag_and_the_dashboard_groups_by_function() -> None:
    from distributed.utils import key_split

    from robot_daemon.fleet.evaluate import eval_partition
    from robot_daemon.fleet.sources import Source

    key = cluster.task_key(eval_partition, 3, Source("runs/run7.mcap", "bag"), "tok")
    assert key == "eval_partition-00003-runs/run7.mcap-tok"
    assert key_split(key) == "eval_partition"
    assert cluster.task_key(len, 0, ("/fleet/bags/robot-12/hour-07.mcap", 0), "t") == \
        "len-00000-/fleet/bags/robot-12/hour-07.mcap-t"
    long = "/x" * 200 + "/last.mcap"
    assert cluster.task_key(len, 1, (long, 1), "t").endswith("/x/x/last.mcap-t")


def test_the_tasks_on_a_scheduler_are_keyed_by_their_bags(scheduler: str) -> None:
    items = [("runs/a.mcap", 0), ("runs/b.mcap", 1), ("runs/c.mcap", 2)]
    with open_runner(scheduler=scheduler) as runner:
        for method in (runner.map_unordered, runner.map_ordered):
            results = method(len, items)  # a builtin the workers know; len of a pair
            next(results)
            keys = sorted(str(k) for k in runner.client.futures)  # type: ignore[attr-defined]
            assert [k.rsplit("-", 1)[0] for k in keys][-2:] == [
                "len-00001-runs/b.mcap", "len-00002-runs/c.mcap"]
            assert list(results)


def test_a_local_cluster_runs_no_dashboard() -> None:
    # Nobody is told its port, and without bokeh it would only say that it needs bokeh.
    import urllib.error
    import urllib.request

    ours = signal.getsignal(signal.SIGINT)
    with open_runner(2) as runner:
        port = runner.client.scheduler_info()["services"]["dashboard"]  # type: ignore[attr-defined]
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10)
        # Ctrl-C reaches the terminal's whole process group: the workers leave it to this
        # process (which stops them and exits 130), instead of a traceback each.
        ignored = runner.client.run(_ignores_sigint)  # type: ignore[attr-defined]
        assert list(ignored.values()) == [True, True]
        assert signal.getsignal(signal.SIGINT) == ours  # this process's handler again


def _ignores_sigint() -> bool:
    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_progress_says_partitions_and_frames_per_second() -> None:
    stream = io.StringIO()
    progress = Progress("eval", 2, stream)
    progress.add(1000)
    progress.add(500)
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("eval: 2/2 partitions, 1,500 frames, ")
    assert lines[-1].endswith(" frames/s")


def test_workers_must_be_positive_and_a_dead_scheduler_is_named() -> None:
    with pytest.raises(ConfigError, match="at least 1"), open_runner(0):
        pass
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler"), \
            open_runner(scheduler="tcp://127.0.0.1:9", connect_timeout_s=0.5):
        pass


def _serve(answer: Callable[[socket.socket, threading.Event], None]) -> Iterator[str]:
    """``tcp://127.0.0.1:PORT`` of a server that calls ``answer`` on each connection."""
    stop = threading.Event()
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)

    def run() -> None:
        with server:
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                with conn:
                    answer(conn, stop)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()


def _say_nothing(conn: socket.socket, stop: threading.Event) -> None:
    stop.wait(HANG_UP_AFTER_S)


def _answer_http(conn: socket.socket, stop: threading.Event) -> None:
    conn.settimeout(HANG_UP_AFTER_S)
    conn.recv(65536)  # Dask's handshake, taken for a request
    conn.sendall(HTTP_400)


@pytest.fixture
def silent() -> Iterator[str]:
    """A port that accepts connections and never says a word."""
    yield from _serve(_say_nothing)


@pytest.fixture
def http_server() -> Iterator[str]:
    """A tiny HTTP server: it answers 400 to whatever it is sent, as a dashboard does."""
    yield from _serve(_answer_http)


@pytest.mark.parametrize(("address", "problem"), [
    ("nonsense", "not a tcp:// address"),
    ("http://127.0.0.1:8786", "not a tcp:// address"),
    ("inproc://x", "not a tcp:// address"),
    ("127.0.0.1:8786", "not a tcp:// address"),
    ("tcp://localhost", "no port"),
    ("tcp://localhost:0", "no port"),
    ("tcp://localhost:65536", "not a number from 1 to 65535"),
    ("tcp://:8786", "no host"),
    ("tcp://localhost:8786/status", "a path after the port"),
])
def test_a_scheduler_address_of_another_form_is_refused_before_any_connection(
    address: str, problem: str
) -> None:
    with pytest.raises(ConfigError, match=f"{problem}; give the address .* tcp://HOST:PORT"), \
            open_runner(scheduler=address):
        pass


def test_a_peer_that_accepts_and_never_answers_is_given_up_on(silent: str) -> None:
    with pytest.raises(ConfigError, match=r"nothing answered within 0\.5 s; check that `dask"
                       r" scheduler` runs there"), \
            open_runner(scheduler=silent, connect_timeout_s=0.5):
        pass


def test_an_http_server_is_not_taken_for_a_scheduler(http_server: str) -> None:
    # Dask alone reads the reply's first bytes as a length: "Unable to allocate 3.07 EiB".
    with pytest.raises(ConfigError, match=r"it answered, but not as a Dask scheduler .*"
                       r"not the dashboard's 8787"), \
            open_runner(scheduler=http_server, connect_timeout_s=0.5):
        pass


@pytest.mark.parametrize("kind", ["nonsense", "http://127.0.0.1:8786", "tcp://localhost",
                                  "inproc://x", "silent", "http_server"])
def test_every_scheduler_mistake_is_one_line_and_exit_2(
    kind: str, request: pytest.FixtureRequest, bags: Bags, model_path: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    address = request.getfixturevalue(kind) if kind in ("silent", "http_server") else kind
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 0.5, raising=False)
    for command in (["eval", str(model_path), str(bags.good[0])],
                    ["dataset", str(bags.good[0]), "--out", str(tmp_path / "ds")]):
        assert main([*command, "--scheduler", address]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert err.startswith(f"robot-daemon {command[0]}: error: ")
    assert list(tmp_path.iterdir()) == []  # the dataset directory made for it, removed


def test_a_scheduler_without_workers_is_reported() -> None:
    from distributed import LocalCluster

    warnings: list[str] = []
    with LocalCluster(n_workers=0, processes=False, protocol="tcp", host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as empty, \
            open_runner(scheduler=empty.scheduler_address, warn=warnings.append) as runner:
        assert runner.workers == 1
    assert len(warnings) == 1
    assert "has no workers yet; the job waits for them (start some with `dask worker" in \
        warnings[0]
