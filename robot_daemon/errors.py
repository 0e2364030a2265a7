"""The project's exception hierarchy: one base class, one subclass per concern.

Messages say what was wrong and what to do about it. Callers that only care whether
something in robot_daemon failed catch :class:`RobotDaemonError`.
"""

from __future__ import annotations


class RobotDaemonError(Exception):
    """Base class of every error robot_daemon raises on purpose."""


class ShapeError(RobotDaemonError, ValueError):
    """An array handed to the numerical core has the wrong shape or dtype."""


class WireError(RobotDaemonError):
    """A ZeroMQ message could not be decoded or failed validation.

    ``reason`` is a short machine-readable token (``"bad_msgpack"``, ``"wrong_d"``, ...)
    used as the key of the daemon's rejection counters.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class BagError(RobotDaemonError):
    """A bag file is missing, unreadable, damaged beyond recovery or not ours."""


class ModelError(RobotDaemonError):
    """A model file is missing, corrupt, of the wrong version or fails validation."""


class ConfigError(RobotDaemonError):
    """A configuration file or command-line combination is invalid."""
