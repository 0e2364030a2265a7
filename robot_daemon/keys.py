"""CurveZMQ key pairs for the label channel, in ZeroMQ's standard certificate format.

``robot-daemon keys generate DIR NAME`` writes ``DIR/NAME.key`` (the public certificate,
to hand to the other side) and ``DIR/NAME.key_secret`` (public and secret key, mode 0600,
never leaves the machine), the files ``zmq.auth`` reads. The pair is made in a private
temporary directory inside ``DIR`` and moved into place, so the secret key is never
readable by other users, not even for a moment, and an existing pair is never replaced.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import zmq.auth

from robot_daemon.errors import ConfigError

_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class KeyPair:
    """The two files of one certificate."""

    public: Path
    secret: Path


def generate(directory: str | os.PathLike[str], name: str) -> KeyPair:
    """Create ``directory/name.key`` and ``directory/name.key_secret``; refuse to overwrite."""
    if not _NAME.match(name):
        raise ConfigError(
            f"key name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a"
            " letter or digit"
        )
    directory = Path(directory)
    target = KeyPair(directory / f"{name}.key", directory / f"{name}.key_secret")
    for path in (target.public, target.secret):
        if path.exists():
            raise ConfigError(
                f"{path} already exists: remove it first or pick another name (to rotate a"
                " key, see docs/security.md)"
            )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=directory, prefix=".keys-") as private:  # 0700
            public, secret = zmq.auth.create_certificates(private, name)
            os.chmod(secret, 0o600)
            os.chmod(public, 0o644)
            os.rename(secret, target.secret)
            os.rename(public, target.public)
    except OSError as exc:
        raise ConfigError(f"cannot write keys into {directory}: {exc.strerror}") from None
    return target
