"""The daemon's settings: defaults, TOML, flags over the file, strict validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from robot_daemon import config
from robot_daemon.config import DaemonConfig
from robot_daemon.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "daemon.toml"
    path.write_text(text)
    return path


def test_defaults_are_loopback_and_documented_values() -> None:
    cfg = config.load()
    assert cfg == DaemonConfig()
    assert cfg.model == Path("models/default.npz")
    assert cfg.frames == ("tcp://127.0.0.1:5556",)
    assert cfg.pred == "tcp://127.0.0.1:5557"
    assert cfg.labels is None
    assert (cfg.interval_ms, cfg.max_batch, cfg.status_interval_s) == (20.0, 256, 1.0)
    assert cfg.interval_ns == 20_000_000
    assert cfg.status_interval_ns == 1_000_000_000
    assert config.is_local_endpoint(cfg.pred)


def test_toml_file_is_read_and_flags_win(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        'model = "m/model.npz"\n'
        'frames = ["ipc:///tmp/a", "tcp://127.0.0.1:6000"]\n'
        'pred = "ipc:///tmp/pred"\n'
        "interval_ms = 10\n"
        "max_batch = 64\n",
    )
    cfg = config.load(path)
    assert cfg.model == tmp_path / "m" / "model.npz"  # relative to the file
    assert cfg.frames == ("ipc:///tmp/a", "tcp://127.0.0.1:6000")
    assert (cfg.interval_ms, cfg.interval_ns, cfg.max_batch) == (10, 10_000_000, 64)

    flags = {"model": "other.npz", "frames": ["tcp://127.0.0.1:7000"], "max_batch": None,
             "interval_ms": 5.5}
    cfg = config.load(path, flags)
    assert cfg.model == Path("other.npz")
    assert cfg.frames == ("tcp://127.0.0.1:7000",)
    assert cfg.max_batch == 64  # None means "flag not given"
    assert cfg.interval_ns == 5_500_000


def test_a_single_frames_string_is_accepted(tmp_path: Path) -> None:
    cfg = config.load(_write(tmp_path, 'frames = "ipc:///tmp/f"\n'))
    assert cfg.frames == ("ipc:///tmp/f",)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("interval = 20\n", "unknown key 'interval'"),
        ("interval_ms = true\n", "interval_ms must be int or float, got bool"),
        ('max_batch = "256"\n', "max_batch must be int, got str"),
        ("max_batch = 2.0\n", "max_batch must be int, got float"),
        ("max_batch = 0\n", "max_batch must be an integer from 1"),
        ("interval_ms = 0.5\n", "interval_ms must be a number from 1"),
        ("interval_ms = nan\n", "interval_ms must be a number"),
        ("frames = []\n", "at least one publisher"),
        ('frames = ["tcp://127.0.0.1:1", "tcp://127.0.0.1:1"]\n', "endpoint twice"),
        ('frames = ["127.0.0.1:5556"]\n', "not a ZeroMQ endpoint"),
        ("frames = [5556]\n", "not a ZeroMQ endpoint"),
        ('pred = "tcp://127.0.0.1"\n', "needs a host and a port"),
        ('pred = "tcp://*:5557"\n', "allow_remote_bind"),
        ('pred = "tcp://0.0.0.0:5557"\n', "allow_remote_bind"),
        ('pred = "tcp://192.168.1.20:5557"\n', "allow_remote_bind"),
        ('log_level = "LOUD"\n', "log_level must be one of"),
        ("max_batch = \n", "not valid TOML"),
    ],
)
def test_invalid_settings_are_refused_with_the_key_named(
    tmp_path: Path, text: str, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        config.load(_write(tmp_path, text))


def test_remote_bind_needs_the_explicit_setting(tmp_path: Path) -> None:
    path = _write(tmp_path, 'pred = "tcp://*:5557"\nallow_remote_bind = true\n')
    assert config.load(path).pred == "tcp://*:5557"


@pytest.mark.parametrize(
    "endpoint",
    ["tcp://127.0.0.1:5", "tcp://127.8.0.1:5", "tcp://localhost:5", "tcp://[::1]:5",
     "ipc:///run/robot/pred", "inproc://pred"],
)
def test_local_endpoints(endpoint: str) -> None:
    assert config.is_local_endpoint(endpoint)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml")


def test_flags_are_validated_too() -> None:
    with pytest.raises(ConfigError, match="max_batch"):
        config.load(None, {"max_batch": -1})
    with pytest.raises(ConfigError, match="labels"):
        config.load(None, {"labels": "nowhere"})


def test_describe_names_every_setting() -> None:
    line = config.describe(DaemonConfig())
    for name in ("model=", "frames=", "pred=", "interval_ms=", "max_batch=", "rcvhwm="):
        assert name in line
