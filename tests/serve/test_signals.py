"""The daemon's signals: flags, and a wake-up the poller sees once and then forgets."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from robot_daemon.serve import signals

DEFAULT = Path(__file__).resolve().parents[2] / "models/default.npz"


def test_a_signal_wakes_the_poller_once_and_is_read_then() -> None:
    with signals.caught() as sigs:
        os.kill(os.getpid(), signal.SIGHUP)
        events = dict(sigs.poller.poll(1000))
        assert sigs.fd in events
        assert sigs.reload
        assert not sigs.stop
        sigs.woke(events)
        # The wake-up byte was read: the next poll waits. Left unread, every poll returned
        # at once and the daemon's loop spun for good after its first SIGHUP.
        assert sigs.poller.poll(50) == []
        os.kill(os.getpid(), signal.SIGTERM)
        sigs.woke(dict(sigs.poller.poll(1000)))
        assert sigs.stop
        assert sigs.poller.poll(0) == []


def test_the_handlers_before_are_restored() -> None:
    before = signal.getsignal(signal.SIGHUP)
    with signals.caught():
        assert signal.getsignal(signal.SIGHUP) is not before
    assert signal.getsignal(signal.SIGHUP) is before


def test_sigusr1_is_harmless_while_the_daemon_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the loop caught them, while the model and the capture loaded, SIGUSR1 and
    SIGUSR2 ended the daemon (exit 138): ``run`` ignores them from its first line."""
    from robot_daemon.cli import main
    from robot_daemon.serve import daemon

    started: list[object] = []

    def loading(config: object, notifier: object = None) -> int:
        started.extend(signal.getsignal(signum) for signum in signals.IGNORED)
        if all(handler is signal.SIG_IGN for handler in started):  # else pytest would die
            for signum in signals.IGNORED:  # as a log rotation tool's kill -USR1 would
                os.kill(os.getpid(), signum)
        return 0

    before = {s: signal.getsignal(s) for s in signals.IGNORED}
    monkeypatch.setattr(daemon, "run", loading)
    try:
        assert main(["run", "--model", str(DEFAULT), "--log-level", "ERROR"]) == 0
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    assert started == [signal.SIG_IGN] * len(signals.IGNORED)
