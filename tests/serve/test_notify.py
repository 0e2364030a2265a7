"""The systemd notify protocol against real AF_UNIX datagram sockets."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from robot_daemon.serve.notify import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound to a path, as systemd's notify socket is."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(2.0)
        yield sock, path


def _recv(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_status_stopping_reach_a_path_socket(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    with Notifier({"NOTIFY_SOCKET": path}) as notifier:
        assert notifier.enabled
        assert notifier.ready("serving model m")
        assert _recv(sock) == ["READY=1", "STATUS=serving model m"]
        assert notifier.status("two\nlines")
        assert _recv(sock) == ["STATUS=two lines"]
        assert notifier.reloading()
        reloading = _recv(sock)
        assert reloading[0] == "RELOADING=1"
        assert reloading[1].startswith("MONOTONIC_USEC=")
        assert notifier.stopping()
        assert _recv(sock) == ["STOPPING=1"]


def test_abstract_namespace_address() -> None:
    name = f"robot-daemon-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        with Notifier({"NOTIFY_SOCKET": "@" + name}) as notifier:
            assert notifier.ready()
        assert _recv(sock) == ["READY=1"]


def test_watchdog_only_when_enabled_for_this_process(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    with Notifier({"NOTIFY_SOCKET": path}) as notifier:
        assert notifier.watchdog_ns is None
        assert not notifier.watchdog()
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}
    with Notifier(env) as notifier:
        assert notifier.watchdog_ns == 3_000_000_000
        assert notifier.watchdog()
        assert _recv(sock) == ["WATCHDOG=1"]
    env["WATCHDOG_PID"] = str(os.getpid() + 1)  # meant for another process
    with Notifier(env) as notifier:
        assert notifier.watchdog_ns is None
    with Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "soon"}) as notifier:
        assert notifier.watchdog_ns is None


def test_no_notify_socket_is_a_no_op() -> None:
    with Notifier({}) as notifier:
        assert not notifier.enabled
        assert not notifier.ready()
        assert not notifier.stopping()
        assert not notifier.watchdog()


def test_a_missing_manager_is_logged_once_and_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}) as notifier:
        assert not notifier.ready()
        assert not notifier.stopping()
    assert sum("systemd notify" in r.message for r in caplog.records) == 1
