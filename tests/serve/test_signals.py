"""The daemon's signals: flags, and a wake-up the poller sees once and then forgets."""

from __future__ import annotations

import os
import signal

from robot_daemon.serve import signals


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
