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
    assert (cfg.stale_after_ms, cfg.stale_after_ns) == (200.0, 200_000_000)
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
    assert config.load(path, {"stale_after_ms": 250}).stale_after_ns == 250_000_000


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
        ("stale_after_ms = 5\n", "stale_after_ms must be a number from 10 to 600000"),
        ('stale_after_ms = "200"\n', "stale_after_ms must be int or float, got str"),
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


def test_online_settings_from_toml_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        'labels = "tcp://10.0.0.7:5558"\n'
        "online = true\n"
        'checkpoint_dir = "ckpt"\n'
        "checkpoint_every_steps = 20\n"
        'curve_secret_key = "keys/robot.key_secret"\n'
        'curve_allow = "allow"\n',
    )
    cfg = config.load(path)
    assert cfg.online
    assert cfg.checkpoint_dir == tmp_path / "ckpt"
    assert cfg.curve_secret_key == tmp_path / "keys" / "robot.key_secret"
    assert cfg.curve_allow == tmp_path / "allow"
    assert (cfg.checkpoint_every_steps, cfg.checkpoint_every_s, cfg.checkpoint_keep) == (
        20, 60.0, 5)


def test_online_learning_needs_a_labels_endpoint() -> None:
    with pytest.raises(ConfigError, match="needs a labels endpoint"):
        config.load(overrides={"online": True})


@pytest.mark.parametrize("labels", ["tcp://10.0.0.7:5558", "tcp://labeller.local:5558",
                                    "tcp://*:5558"])
def test_remote_labels_need_curve_or_the_explicit_setting(labels: str) -> None:
    with pytest.raises(ConfigError, match="anyone who can reach it could retrain"):
        config.load(overrides={"online": True, "labels": labels})
    assert config.load(overrides={"online": True, "labels": labels, "insecure_labels": True})
    assert config.load(overrides={"online": True, "labels": labels,
                                  "curve_secret_key": "k.key_secret", "curve_allow": "allow"})


@pytest.mark.parametrize("labels", ["tcp://127.0.0.1:5558", "ipc:///run/labels"])
def test_local_labels_need_no_curve(labels: str) -> None:
    assert config.load(overrides={"online": True, "labels": labels}).online


def test_curve_settings_go_together() -> None:
    with pytest.raises(ConfigError, match="go together"):
        config.load(overrides={"curve_secret_key": "k.key_secret"})


@pytest.mark.parametrize(("key", "value"), [
    ("online_batch", 0), ("online_lr", 0.0), ("checkpoint_every_steps", 0),
    ("checkpoint_every_s", 0.0), ("checkpoint_keep", 0), ("online", 1),
])
def test_online_numbers_out_of_range_are_refused(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        config.load(overrides={key: value})


def test_metrics_on_the_network_needs_allow_remote_bind() -> None:
    from robot_daemon import config

    assert config.load(None, {"metrics": "9108"}).metrics == "9108"
    with pytest.raises(ConfigError, match="would serve on the network"):
        config.load(None, {"metrics": "0.0.0.0:9108"})
    loaded = config.load(None, {"metrics": "0.0.0.0:9108", "allow_remote_bind": True})
    assert loaded.metrics == "0.0.0.0:9108"
    with pytest.raises(ConfigError, match="metrics address"):
        config.load(None, {"metrics": "robot:9108"})
