"""Key generation: standard ZeroMQ certificates, private secret keys, no overwrites."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import zmq.auth

from robot_daemon.errors import ConfigError
from robot_daemon.learn import keys


def test_generates_a_pair_zmq_auth_reads(tmp_path: Path) -> None:
    pair = keys.generate(tmp_path / "keys", "labeller")
    assert pair.public == tmp_path / "keys" / "labeller.key"
    public, secret = zmq.auth.load_certificate(pair.secret)
    assert secret is not None
    assert len(public) == 40  # Z85 of 32 bytes
    assert zmq.auth.load_certificate(pair.public) == (public, None)
    assert pair.secret.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == [
        "labeller.key", "labeller.key_secret"]  # no temporary directory left


def test_an_existing_pair_is_never_replaced(tmp_path: Path) -> None:
    pair = keys.generate(tmp_path, "robot")
    before = pair.secret.read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        keys.generate(tmp_path, "robot")
    assert pair.secret.read_bytes() == before


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden", "x" * 65])
def test_names_that_are_not_file_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="key name"):
        keys.generate(tmp_path, name)


def test_cli_generates_a_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from robot_daemon.cli import main

    assert main(["keys", "generate", str(tmp_path), "labeller"]) == 0
    assert "labeller.key_secret" in capsys.readouterr().out
    assert main(["keys", "generate", str(tmp_path), "labeller"]) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err


def test_a_public_key_is_not_a_server_key_pair(tmp_path: Path) -> None:
    import zmq

    pair = keys.generate(tmp_path, "robot")
    with zmq.Context() as ctx, ctx.socket(zmq.SUB) as sock:
        with pytest.raises(ConfigError, match="only a public key"):
            keys.curve_server(sock, pair.public)
        assert len(keys.curve_server(sock, pair.secret)) == 40
        assert sock.curve_server


@pytest.mark.parametrize("writable", ["dir", "key"])
def test_an_allow_list_other_users_can_write_is_refused(tmp_path: Path, writable: str) -> None:
    allow = tmp_path / "allow"
    allow.mkdir()
    allow.chmod(0o755)
    key = keys.generate(tmp_path / "keys", "labeller").public
    (allow / key.name).write_bytes(key.read_bytes())
    (allow / key.name).chmod(0o644)
    keys.check_allow_dir(allow)  # ours, and only ours to write: accepted
    target = allow if writable == "dir" else allow / key.name
    target.chmod(target.stat().st_mode | 0o020)  # group-writable
    with pytest.raises(ConfigError, match=r"other users can write .*chmod go-w"):
        keys.check_allow_dir(allow)
    target.chmod(target.stat().st_mode & ~0o020 | 0o002)  # world-writable
    with pytest.raises(ConfigError, match="other users can write"):
        keys.check_allow_dir(allow)


def test_an_allow_list_another_user_owns_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    allow = tmp_path / "allow"
    allow.mkdir()
    allow.chmod(0o755)
    key = keys.generate(tmp_path / "keys", "labeller").public
    (allow / key.name).write_bytes(key.read_bytes())
    (allow / key.name).chmod(0o644)
    os.chown(allow / key.name, 12345, 12345)
    with pytest.raises(ConfigError, match="belongs to user 12345"):
        keys.check_allow_dir(allow)
