"""robot_daemon: an on-robot multi-label obstacle classifier.

A hand-written NumPy MLP (:mod:`robot_daemon.nn`) served by a fixed-rate ZeroMQ daemon.
"""

from __future__ import annotations

__version__ = "0.1.0"
