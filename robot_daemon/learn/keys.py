"""CurveZMQ key pairs for the label channel, in ZeroMQ's standard certificate format.

``robot-daemon keys generate DIR NAME`` writes ``DIR/NAME.key`` (the public certificate,
to hand to the other side) and ``DIR/NAME.key_secret`` (public and secret key, mode 0600,
never leaves the machine), the files ``zmq.auth`` reads. The pair is made in a private
temporary directory inside ``DIR`` and moved into place, so the secret key is never
readable by other users, not even for a moment, and an existing pair is never replaced.

The daemon's side: :func:`curve_server` makes a socket a CURVE server with the daemon's
pair, and :func:`authenticator` runs ``zmq.auth``'s ZAP handler that admits only the
public keys found in an allow-list directory. Without a ZAP handler libzmq would accept
*any* CURVE client, so the two always go together.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from robot_daemon.errors import ConfigError

log = logging.getLogger("robot_daemon.learn.keys")

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


def curve_server(sock: zmq.Socket[bytes], secret_file: str | os.PathLike[str]) -> str:
    """Make ``sock`` a CURVE server with the key pair in ``secret_file``; its public key.

    Call before the socket binds or connects: the role applies to new connections.

    Raises:
        ConfigError: the file is missing, unreadable, or holds no secret key.
    """
    path = Path(secret_file)
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the CURVE key pair {path}: {exc}") from None
    if secret is None:
        raise ConfigError(
            f"{path} holds only a public key: give the daemon its NAME.key_secret file"
        )
    if path.stat().st_mode & 0o077:
        log.warning("%s is readable by other users: chmod 600 it (docs/security.md)", path)
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True
    return public.decode("ascii")


@contextlib.contextmanager
def authenticator(ctx: zmq.Context[zmq.Socket[bytes]],
                  allow_dir: str | os.PathLike[str]) -> Iterator[ThreadAuthenticator]:
    """A running ZAP handler on ``ctx`` that admits the CURVE keys in ``allow_dir``.

    The directory is read now (and again by :func:`reload_allowed`); a key added later
    is not admitted until then.

    Raises:
        ConfigError: ``allow_dir`` is not a directory, or another user could write to it
            or to a key file in it (:func:`check_allow_dir`).
    """
    directory = Path(allow_dir)
    if not directory.is_dir():
        raise ConfigError(f"curve_allow {directory} is not a directory of public keys")
    check_allow_dir(directory)
    auth = ThreadAuthenticator(ctx, log=logging.getLogger("robot_daemon.zap"))
    auth.start()
    try:
        reload_allowed(auth, directory)
        yield auth
    finally:
        auth.stop()


def check_allow_dir(allow_dir: Path) -> None:
    """Refuse an allow-list that anyone but us or root could change.

    Whoever can add a ``*.key`` file to ``allow_dir`` (or rewrite one) can publish labels,
    that is retrain the model, so the directory and every key file in it must be owned by
    this process's user or root and writable by no group or other user (symlinks are
    judged by what they point to).

    Raises:
        ConfigError: naming the first file that others can write, and the fix.
    """
    for path in (allow_dir, *sorted(allow_dir.glob("*.key"))):
        try:
            info = path.stat()
        except OSError as exc:
            raise ConfigError(f"curve_allow: cannot read {path}: {exc.strerror}") from None
        if info.st_uid not in (0, os.geteuid()):
            raise ConfigError(
                f"curve_allow: {path} belongs to user {info.st_uid}, who could then let any "
                "publisher retrain the model: make it owned by root or the daemon's user"
            )
        if info.st_mode & 0o022:
            raise ConfigError(
                f"curve_allow: other users can write {path} (mode {info.st_mode & 0o777:o}),"
                f" and so let any publisher retrain the model: chmod go-w {path}"
            )


def reload_allowed(auth: ThreadAuthenticator, allow_dir: Path) -> int:
    """Read the allowed public keys of ``allow_dir`` again; how many there are."""
    count = len(list(allow_dir.glob("*.key")))
    if count == 0:
        log.warning("curve_allow %s holds no *.key file: no label publisher can connect",
                    allow_dir)
    auth.configure_curve(domain="*", location=str(allow_dir))
    return count
